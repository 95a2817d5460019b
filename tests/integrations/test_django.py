"""pgfleet.integrations.django on a real server: a Django project (tests/integrations/
django_project) whose ``ENGINE`` is pgfleet's backend. Migrations, the ORM, atomic blocks,
a view under concurrent requests through Django's WSGI handler, CONN_MAX_AGE and option
errors, the test runner's database creation, and a session killed by the server.

Django is configured once per process (``settings.configure``): this module owns a cluster
of its own and a database ``djangoapp`` in it, so that nothing here touches the shared one.
"""

from __future__ import annotations

import functools
import importlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

django = pytest.importorskip("django")

import psycopg  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, connections, transaction  # noqa: E402
from django.db.utils import OperationalError  # noqa: E402

from integrations.django_project.config import (  # noqa: E402
    APPLICATION_NAME,
    CONNINFO_ENV,
    database,
    project_settings,
)
from pgfleet import DatabaseUnavailable, Pool  # noqa: E402
from pgfleet.integrations.django.base import DjangoPool, pool_arguments  # noqa: E402
from support.cluster import APP_PASSWORD, PgCluster  # noqa: E402
from support.extras_guard import guarded_command  # noqa: E402
from support.timing import deadline_bound, well_under  # noqa: E402

TESTS_DIR = Path(__file__).resolve().parents[1]
DBNAME = "djangoapp"


@pytest.fixture(scope="module")
def cluster(pg_template: PgCluster) -> Iterator[PgCluster]:
    """A cluster of this module's own; ``app`` may create databases (the test runner does)."""
    with PgCluster.from_template(pg_template) as cluster:
        cluster.execute("ALTER ROLE app CREATEDB")
        # Sessions start far from TIME_ZONE ("UTC"): Django's set-up of each new connection
        # (run by the pool's configure) is visible.
        cluster.execute("ALTER ROLE app SET timezone = 'Pacific/Auckland'")
        cluster.execute("CREATE DATABASE djangoapp OWNER app")
        yield cluster


@pytest.fixture(scope="module")
def project(cluster: PgCluster) -> Iterator[PgCluster]:
    """Django configured for the project on `cluster`, migrated; pools closed at the end."""
    if settings.configured:
        pytest.fail("Django is already configured in this process", pytrace=False)
    conninfo = cluster.conninfo(dbname=DBNAME)
    down_port = _unused_port()  # nothing listens there
    # The other aliases' sessions are not counted with the default alias's.
    other = functools.partial(database, application_name=f"{APPLICATION_NAME}-other")
    settings.configure(
        **project_settings(
            conninfo,
            extra_databases={
                # max_size 1: the connection a request gets is the one the last gave back.
                "single": other(conninfo, pool={"min_size": 1, "max_size": 1}),
                "persistent": other(conninfo, pool=True, CONN_MAX_AGE=60),
                "typo": other(conninfo, pool={"max_sise": 4}),
                "checked": other(conninfo, pool=True, CONN_HEALTH_CHECKS=True),
                "down": other(
                    cluster.conninfo(dbname=DBNAME, port=down_port),
                    pool={"min_size": 1, "timeout": 2.0, "fail_fast": False},
                ),
                "configured": other(
                    conninfo,
                    pool={"min_size": 1, "max_size": 1, "configure": _mark_session},
                    options={"connect_timeout": "7"},
                ),
                "down_fast": other(
                    cluster.conninfo(dbname=DBNAME, port=down_port),
                    pool={"min_size": 1, "timeout": 10.0},
                ),
            },
        )
    )
    django.setup()
    call_command("migrate", verbosity=0)
    try:
        yield cluster
    finally:
        connections.close_all()
        for alias in connections:
            connections[alias].close_pool()


@pytest.fixture
def default_pool(project: PgCluster) -> DjangoPool:
    """The ``default`` alias's pool, with the test thread's connection given back to it."""
    connection.close()
    pool = connection.pool
    assert isinstance(pool, DjangoPool)
    return pool


def _mark_session(conn: psycopg.Connection[Any]) -> None:
    """A user's ``configure``: leaves a mark on the session."""
    conn.execute("SELECT set_config('pgfleet.mark', 'configured', false)")


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _request(handler: WSGIHandler, path: str) -> tuple[str, dict[str, Any]]:
    """One request through Django's WSGI handler, as a WSGI server makes it: the response is
    closed at the end, which sends ``request_finished`` (Django closes its connections)."""
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    environ["wsgi.input"] = io.BytesIO()
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        statuses.append(status)
        return lambda data: None

    response = handler(environ, start_response)
    try:
        body = b"".join(response)
    finally:
        response.close()
    return statuses[0], json.loads(body)


def _backend_pid(alias: str = "default") -> int:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    return int(pid)


def test_migrations_created_the_tables(project: PgCluster) -> None:
    from integrations.django_project.shop.models import Item

    assert Item._meta.db_table in connection.introspection.table_names()
    rows = project.execute("SELECT name FROM django_migrations WHERE app = 'shop'", dbname=DBNAME)
    assert rows == [("0001_initial",)]


def test_the_pool_is_pgfleets(default_pool: DjangoPool) -> None:
    assert isinstance(default_pool, Pool)
    assert default_pool.name == "django-default"
    assert (default_pool.settings.min_size, default_pool.settings.max_size) == (1, 4)
    # The same object for every thread and every connection of the alias.
    assert connection.pool is default_pool


def test_models_crud(default_pool: DjangoPool) -> None:
    from integrations.django_project.shop.models import Item

    item = Item.objects.create(name="crud", quantity=1)
    assert Item.objects.get(pk=item.pk).quantity == 1
    Item.objects.filter(pk=item.pk).update(quantity=5)
    item.refresh_from_db()
    assert item.quantity == 5
    item.delete()
    assert not Item.objects.filter(name="crud").exists()
    connection.close()
    assert default_pool.stats().in_use == 0


def test_atomic_commits_and_rolls_back(default_pool: DjangoPool) -> None:
    from integrations.django_project.shop.models import Item

    def create_then_fail() -> None:
        with transaction.atomic():
            Item.objects.create(name="rolled-back")
            raise ZeroDivisionError

    with transaction.atomic():
        Item.objects.create(name="kept")
    with pytest.raises(ZeroDivisionError):
        create_then_fail()
    assert Item.objects.filter(name="kept").exists()
    assert not Item.objects.filter(name="rolled-back").exists()
    Item.objects.filter(name="kept").delete()


def test_a_connection_given_back_mid_transaction_comes_back_clean(project: PgCluster) -> None:
    from integrations.django_project.shop.models import Item

    single = connections["single"]
    single.close()
    with transaction.atomic(using="single"):
        Item.objects.using("single").create(name="limbo")
        pid = _backend_pid("single")
        # The request ends (or the thread gives up) inside the transaction: the pool
        # gets a connection with a transaction open.
        single.close()
    pool = single.pool
    assert isinstance(pool, DjangoPool)
    assert pool.stats().in_use == 0
    # max_size 1: the same server session, rolled back, in autocommit, idle.
    assert _backend_pid("single") == pid
    raw = single.connection
    assert raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert single.get_autocommit()
    assert not Item.objects.using("single").filter(name="limbo").exists()
    assert pool.stats().resets >= 1
    single.close()


def test_concurrent_requests_share_four_connections(
    project: PgCluster, default_pool: DjangoPool
) -> None:
    handler = WSGIHandler()
    before = default_pool.stats()
    workers = 32
    start = threading.Barrier(workers)
    results: list[tuple[str, dict[str, Any]]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client() -> None:
        try:
            start.wait(timeout=30)
            outcome = _request(handler, "/work/")
        except BaseException as exc:
            with lock:
                errors.append(exc)
        else:
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=client) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert [status for status, _ in results] == ["200 OK"] * workers
    # Never more than max_size sessions on the server, seen from inside the requests...
    assert max(body["sessions"] for _, body in results) <= 4
    assert len({body["pid"] for _, body in results}) <= 4
    # ...and every connection went back: the pool's books balance.
    after = default_pool.stats()
    assert after.in_use == 0
    assert after.waiting == 0
    assert after.size <= 4
    assert after.checkouts - before.checkouts == workers
    assert after.usage_time.count - before.usage_time.count == workers
    assert after.timeouts == before.timeouts
    sessions = project.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND datname = %s",
        APPLICATION_NAME,
        DBNAME,
    )
    assert sessions[0][0] <= 4
    from integrations.django_project.shop.models import Item

    assert Item.objects.get(name="counter").quantity >= workers


def test_a_session_killed_by_the_server_is_replaced(
    project: PgCluster, default_pool: DjangoPool
) -> None:
    handler = WSGIHandler()
    status, body = _request(handler, "/items/nothing/")
    assert status.startswith("404")
    killed = project.terminate_backends(application_name=APPLICATION_NAME, dbname=DBNAME)
    assert killed >= 1
    status, after = _request(handler, "/items/nothing/")
    assert status.startswith("404")  # answered: the view ran on a working session
    assert after["pid"] != body["pid"]
    assert default_pool.stats().in_use == 0


def test_pooling_refuses_persistent_connections(project: PgCluster) -> None:
    # Django's own rule and words.
    with pytest.raises(ImproperlyConfigured, match="Pooling doesn't support persistent"):
        connections["persistent"].pool  # noqa: B018
    with pytest.raises(ImproperlyConfigured, match="persistent"):
        connections["persistent"].ensure_connection()


def test_a_wrong_pool_option_is_named(project: PgCluster) -> None:
    with pytest.raises(ImproperlyConfigured) as raised:
        connections["typo"].ensure_connection()
    message = str(raised.value)
    assert "'max_sise'" in message
    assert "max_size" in message.split("accepted:")[1]
    assert "DATABASES['typo']" in message


def test_pool_options_take_psycopg_pool_names() -> None:
    # Django passes OPTIONS["pool"] to psycopg_pool's ConnectionPool: its names work as they are.
    options = {
        "min_size": 2,
        "max_size": 8,
        "num_workers": 3,
        "reconnect_timeout": 60,
        "max_lifetime": 600,
        "max_idle": 60,
        "timeout": 5,
    }
    assert pool_arguments(options) == options
    assert pool_arguments(True) == {}
    with pytest.raises(ImproperlyConfigured, match="'kwargs' is set by the backend"):
        pool_arguments({"kwargs": {}})
    with pytest.raises(ImproperlyConfigured, match="must be True or a dict"):
        pool_arguments(["min_size"])  # type: ignore[arg-type]


def test_the_django_extra_is_enough_and_psycopg_pool_is_not_needed() -> None:
    code = textwrap.dedent(
        """
        import sys
        import django
        from django.conf import settings
        settings.configure(DATABASES={"default": {
            "ENGINE": "pgfleet.integrations.django", "NAME": "db",
            "OPTIONS": {"pool": {"min_size": 1, "max_size": 2}},
        }})
        django.setup()
        from django.db import connection
        pool = connection.pool
        print(type(pool).__name__, "psycopg_pool" in sys.modules)
        pool.close()
        """
    )
    command, env = guarded_command(["django"], code)
    result = subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["DjangoPool", "False"]


def test_the_readme_setting_names_this_backend_and_valid_options() -> None:
    readme = (TESTS_DIR.parent / "README.md").read_text()
    section = readme.split("## Django\n", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    namespace: dict[str, Any] = {}
    exec(block, namespace)
    default = namespace["DATABASES"]["default"]
    assert default["ENGINE"] == "pgfleet.integrations.django"
    assert importlib.import_module(default["ENGINE"] + ".base").DatabaseWrapper
    assert pool_arguments(default["OPTIONS"]["pool"])["max_size"] == 10


def test_an_invalid_pool_value_is_improperly_configured(project: PgCluster) -> None:
    settings_dict = dict(connections["single"].settings_dict)
    settings_dict["OPTIONS"] = {**settings_dict["OPTIONS"], "pool": {"min_size": -1}}
    wrapper = type(connections["single"])(settings_dict, alias="invalid")
    with pytest.raises(ImproperlyConfigured, match="min_size"):
        wrapper.pool  # noqa: B018


def test_health_checks_ping_every_checkout(project: PgCluster) -> None:
    pool = connections["checked"].pool
    assert isinstance(pool, DjangoPool)
    assert pool.settings.check_after_idle == 0
    assert connections["default"].pool is not None
    assert connections["default"].pool.settings.check_after_idle != 0


def test_a_users_configure_runs_after_djangos(project: PgCluster) -> None:
    configured = connections["configured"]
    pool = configured.pool
    assert isinstance(pool, DjangoPool)
    # OPTIONS["connect_timeout"] (libpq's, a string in settings) bounds the pool's attempts.
    assert pool.settings.connect_timeout == 7.0
    with configured.cursor() as cursor:
        cursor.execute("SELECT current_setting('pgfleet.mark'), current_setting('TimeZone')")
        mark, zone = cursor.fetchone()
    assert mark == "configured"
    assert zone == "UTC"  # Django's set-up ran too (TIME_ZONE; the role's is Auckland)
    configured.close()


def test_open_is_cheap_and_a_down_database_fails_within_the_timeout(project: PgCluster) -> None:
    down = connections["down"]
    pool = down.pool
    assert isinstance(pool, DjangoPool)
    for _ in range(2):  # Django opens the pool before every new connection
        started = time.monotonic()
        with pytest.raises(OperationalError) as raised:
            down.ensure_connection()
        assert time.monotonic() - started < deadline_bound(2.0)
        assert isinstance(raised.value.__cause__, psycopg.OperationalError)
    assert down.pool is pool
    started = time.monotonic()
    pool.open()  # idempotent, and does not wait for the database
    assert time.monotonic() - started < 0.5


def test_requests_fail_fast_while_the_database_is_down(project: PgCluster) -> None:
    # pgfleet's default, unlike psycopg_pool: no request waits out the 10 s timeout.
    down = connections["down_fast"]
    for _ in range(2):
        started = time.monotonic()
        with pytest.raises(OperationalError) as raised:
            down.ensure_connection()
        assert time.monotonic() - started < well_under(10.0)
        assert isinstance(raised.value.__cause__, DatabaseUnavailable)


@pytest.mark.slow
def test_the_test_runner_creates_and_destroys_its_database(project: PgCluster) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])),
        "DJANGO_SETTINGS_MODULE": "integrations.django_project.settings",
        CONNINFO_ENV: project.conninfo(dbname=DBNAME),
    }
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "django", "test", "integrations.django_project.shop", "-v", "2"],
        env=env,
        cwd=TESTS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Creating test database for alias 'default'" in output
    assert "Ran 3 tests" in output
    assert "Destroying test database for alias 'default'" in output
    assert APP_PASSWORD not in output
    databases = project.execute("SELECT datname FROM pg_database WHERE datname LIKE 'test_%'")
    assert databases == []
