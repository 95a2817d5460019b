"""Views of the ``shop`` app: what a request does with the pooled connection."""

from __future__ import annotations

from django.db import connection, transaction
from django.db.models import F
from django.http import HttpRequest, JsonResponse

from integrations.django_project.shop.models import Item

#: This session's pid and the open sessions of the project on this database; sleeps a
#: little so that concurrent requests overlap.
SESSIONS = """
    SELECT pg_backend_pid(),
           (SELECT count(*) FROM pg_stat_activity
             WHERE application_name = current_setting('application_name')
               AND datname = current_database()),
           pg_sleep(0.01)
"""


def work(request: HttpRequest) -> JsonResponse:
    """A little ORM work in a transaction, and what the server sees meanwhile."""
    with transaction.atomic():
        item, _ = Item.objects.get_or_create(name="counter")
        # Computed by the server: no lost updates under concurrency.
        Item.objects.filter(pk=item.pk).update(quantity=F("quantity") + 1)
        with connection.cursor() as cursor:
            cursor.execute(SESSIONS)
            pid, sessions, _ = cursor.fetchone()
    return JsonResponse({"pid": pid, "sessions": sessions})


def item(request: HttpRequest, name: str) -> JsonResponse:
    """One item by name (404 when absent), with the pid of the session that read it."""
    found = Item.objects.filter(name=name).first()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    if found is None:
        return JsonResponse({"pid": pid}, status=404)
    return JsonResponse({"pid": pid, "name": found.name, "quantity": found.quantity})
