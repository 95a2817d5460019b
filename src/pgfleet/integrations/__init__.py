"""Integrations of pgfleet with web frameworks (optional extras).

- `pgfleet.integrations.starlette`: Starlette and FastAPI (``pip install 'pgfleet[starlette]'``).
- `pgfleet.integrations.django`: a Django database backend (``pip install 'pgfleet[django]'``).
"""
