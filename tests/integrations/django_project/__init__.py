"""A small Django project on pgfleet's backend, for tests/integrations/test_django.py.

Importable as ``integrations.django_project`` (the tests directory is on ``sys.path``, as
pytest puts it); the test runner's subprocess gets the same path through ``PYTHONPATH``.
"""
