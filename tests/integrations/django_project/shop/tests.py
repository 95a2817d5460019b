"""Django's own tests of the project, run by ``python -m django test`` in a subprocess
(tests/integrations/test_django.py): they run in the test database the runner created,
through pgfleet's pool."""

# Django's runner runs unittest test cases: their assert methods are the idiom here.
# ruff: noqa: PT009, PT027

from __future__ import annotations

from django.db import connection, transaction
from django.test import TestCase, TransactionTestCase

from integrations.django_project.shop.models import Item
from pgfleet import Pool


class RunnerDatabaseTests(TestCase):
    def test_runs_in_the_test_database_through_pgfleet(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_database()")
            (name,) = cursor.fetchone()
        self.assertEqual(name, connection.settings_dict["NAME"])
        self.assertTrue(name.startswith("test_"), name)
        self.assertIsInstance(connection.pool, Pool)

    def test_migrated_models_work(self) -> None:
        Item.objects.create(name="runner", quantity=3)
        self.assertEqual(Item.objects.get(name="runner").quantity, 3)


class RunnerTransactionTests(TransactionTestCase):
    def test_atomic_rolls_back(self) -> None:
        with self.assertRaises(ZeroDivisionError), transaction.atomic():
            Item.objects.create(name="gone")
            1 / 0  # noqa: B018
        self.assertFalse(Item.objects.filter(name="gone").exists())
