"""Fixtures of the pooler tests: a real PgBouncer (``tests/support/pgbouncer.py``) in front
of a throwaway cluster.

PgBouncer comes from the Debian package (``apt-get install pgbouncer``; ``.ci/run`` installs
it). Without it these tests are skipped, and in CI (``CI`` set) they fail instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.cluster import PgCluster
from support.pgbouncer import PgBouncer, find_pgbouncer
from support.requirements import unavailable

#: Server sessions per database and user: small, so that clients share them.
POOL_SIZE = 3

BouncerFactory = Callable[..., PgBouncer]


@pytest.fixture(scope="session")
def pgbouncer_bin() -> Path:
    """The pgbouncer binary; skips without it (fails in CI, where .ci/run installs it)."""
    found = find_pgbouncer()
    if found is None:
        unavailable("needs pgbouncer: apt-get install pgbouncer")
    return Path(found)


@pytest.fixture(scope="module")
def bouncer_cluster(pg_template: PgCluster) -> Iterator[PgCluster]:
    """The module's cluster behind PgBouncer. Do not restart it: use ``make_cluster``."""
    cluster = PgCluster.from_template(pg_template)
    with cluster:
        yield cluster


@pytest.fixture(scope="module")
def bouncer(pgbouncer_bin: Path, bouncer_cluster: PgCluster) -> Iterator[PgBouncer]:
    """The module's PgBouncer in transaction mode with `POOL_SIZE` server sessions.
    Do not restart it: use ``make_bouncer``."""
    with PgBouncer(
        bouncer_cluster, pool_mode="transaction", default_pool_size=POOL_SIZE, binary=pgbouncer_bin
    ) as running:
        yield running


@pytest.fixture
def make_bouncer(pgbouncer_bin: Path) -> Iterator[BouncerFactory]:
    """Factory of started PgBouncers (``PgBouncer(cluster, **options)``), destroyed after the
    test."""
    made: list[PgBouncer] = []

    def factory(cluster: PgCluster, **options: Any) -> PgBouncer:
        options.setdefault("default_pool_size", POOL_SIZE)
        running = PgBouncer(cluster, binary=pgbouncer_bin, **options)
        made.append(running)
        running.start()
        return running

    yield factory
    for running in reversed(made):
        running.destroy()
