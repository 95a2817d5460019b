"""A Django database backend on pgfleet's pool (``pip install 'pgfleet[django]'``).

Set ``"ENGINE": "pgfleet.integrations.django"`` in ``DATABASES`` and keep everything else of
Django's PostgreSQL backend; ``OPTIONS["pool"]`` takes the options Django passes to
psycopg_pool plus pgfleet's (see ``docs/django.md`` and `pgfleet.integrations.django.base`).
"""
