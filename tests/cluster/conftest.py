"""Fixtures of the cluster tests: a primary with streaming standbys (support/replication.py).

``repl_template`` is built once per session (about 1 s); each ``make_replication`` call
copies it into a new primary and base-backs-up the standbys (a primary and one standby in
about 1 s, two standbys about 1.4 s; more on a loaded machine). Tests that only read and
write rows use the session's ``shared_replication`` instead. Every test runs with libpq's
environment emptied, so a developer's PGTARGETSESSIONATTRS or ~/.pgpass cannot steer it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from support.cluster import PgCluster
from support.libpq_env import isolate_libpq_environment
from support.replication import PgNode, Replication, build_replication_template


class ReplicationFactory(Protocol):
    """Type of the ``make_replication`` fixture."""

    def __call__(self, *, standbys: int = 1) -> Replication: ...


@pytest.fixture(autouse=True)
def isolated_libpq_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No PG* variables; HOME is an empty directory (no ~/.pgpass, no service file)."""
    return isolate_libpq_environment(monkeypatch, tmp_path)


@pytest.fixture(scope="session")
def repl_template(pg_template: PgCluster) -> Iterator[PgNode]:
    """A stopped primary-to-be: replication role, pg_hba line and settings (one start)."""
    template = build_replication_template(pg_template)
    yield template
    template.destroy()


@pytest.fixture
def make_replication(repl_template: PgNode) -> Iterator[ReplicationFactory]:
    """Factory of fresh replication sets (a started primary and ``standbys`` caught-up
    streaming standbys), destroyed after the test."""
    made: list[Replication] = []

    def factory(*, standbys: int = 1) -> Replication:
        rs = Replication(repl_template, standbys=standbys)
        made.append(rs)
        return rs

    yield factory
    errors: list[Exception] = []
    for rs in reversed(made):
        try:
            rs.destroy()
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def replication(make_replication: ReplicationFactory) -> Replication:
    """A primary and one streaming standby, fresh for the test."""
    return make_replication(standbys=1)


@pytest.fixture(scope="session")
def shared_replication(repl_template: PgNode) -> Iterator[Replication]:
    """The session's shared primary and standby. Do not promote, crash, stop or repoint
    them; undo any setting you change; use your own table and role names."""
    with Replication(repl_template, standbys=1) as rs:
        yield rs
