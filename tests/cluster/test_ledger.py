"""Tests of the write ledger (tests/support/ledger.py) on real failovers."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from typing import Any

import psycopg
from psycopg import sql

from support.ledger import Ledger
from support.replication import PATIENCE, PgNode, Replication


def _table() -> str:
    return f"ledger_{uuid.uuid4().hex[:10]}"


def _connector(info: str) -> Callable[[], AbstractContextManager[psycopg.Connection[Any]]]:
    return lambda: psycopg.connect(info, autocommit=True)


def _wait_acks(ledger: Ledger, count: int, port: int | None = None) -> None:
    """Wait (on the ledger, polled) until ``count`` writes were acked (by ``port``)."""
    deadline = time.monotonic() + PATIENCE
    while sum(1 for a in ledger.acks() if port is None or a.port == port) < count:
        assert time.monotonic() < deadline, f"fewer than {count} acks within {PATIENCE}s"
        time.sleep(0.005)


def _assert_cancel_acknowledges_a_waiting_commit(old: PgNode, table: str) -> None:
    """A primary whose synchronous standby is gone holds each commit; statement_timeout does
    not end the wait (the server disables it before committing); a cancel request does, and
    the statement then *succeeds* with a WARNING: the row stays committed locally."""
    info = old.conninfo(options="-c statement_timeout=100")
    with psycopg.connect(info, autocommit=True) as conn:
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
        conn.execute("SET synchronous_commit = on")
        outcome: list[object] = []
        query = sql.SQL("INSERT INTO {} (id, writer) VALUES (-1, -1)").format(sql.Identifier(table))

        def insert() -> None:
            try:
                conn.execute(query)
                outcome.append("returned")
            except BaseException as exc:
                outcome.append(exc)

        writer = threading.Thread(target=insert)
        writer.start()
        writer.join(0.5)  # five statement timeouts
        assert writer.is_alive(), outcome
        conn.cancel_safe()
        writer.join(PATIENCE)
        assert outcome == ["returned"]
        assert notices == ["canceling wait for synchronous replication due to user request"]
    with psycopg.connect(old.conninfo(), autocommit=True) as conn:
        select = sql.SQL("SELECT count(*) FROM {} WHERE id = -1").format(sql.Identifier(table))
        assert conn.execute(select).fetchone() == (1,)
        conn.execute(sql.SQL("DELETE FROM {} WHERE id = -1").format(sql.Identifier(table)))


def test_ledger_counts_sync_and_async_writes(shared_replication: Replication) -> None:
    rs = shared_replication
    ledger = Ledger(_table())
    ledger.create(rs.primary)
    info = rs.conninfo([rs.primary])
    ledger.run(_connector(info), writers=3, max_writes=30)

    @contextlib.asynccontextmanager
    async def aconnect() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with await psycopg.AsyncConnection.connect(info) as conn:  # not autocommit
            yield conn

    asyncio.run(ledger.arun(aconnect, writers=3, max_writes=20))
    report = ledger.check(rs.primary)
    report.assert_ok()
    assert (report.attempts, report.acked) == (50, 50)
    assert report.acked_by_server == {(rs.primary.port, 1): 50}
    # Writes sent to the standby are refused, recorded, and not acknowledged.
    refused = Ledger(ledger.table)
    refused.run(_connector(rs.conninfo([rs.standbys[0]])), writers=1, max_writes=3)
    assert refused.acks() == []
    assert refused.check(rs.primary).failed_by_sqlstate == {"25006": 3}


def test_ledger_across_failover_then_stale_primary(replication: Replication) -> None:
    """With a synchronous standby no acknowledged write is lost across a crash and a
    promotion; writes taken by the old primary restarted writable are reported."""
    rs = replication
    old, new = rs.primary, rs.standbys[0]
    ledger = Ledger(_table())
    ledger.create(old)
    rs.set_synchronous([new])
    info = rs.conninfo([old, new], target_session_attrs="read-write", connect_timeout=2)
    stop = threading.Event()
    load = threading.Thread(
        target=ledger.run,
        args=(_connector(info),),
        kwargs={"writers": 4, "stop": stop, "duration": PATIENCE},
    )
    load.start()
    try:
        _wait_acks(ledger, 40, old.port)
        rs.crash(old)
        rs.promote(new)
        _wait_acks(ledger, 40, new.port)
    finally:
        stop.set()
        load.join()
    report = ledger.check(new)
    report.assert_ok()
    assert report.final_timeline == 2
    assert report.acked_by_server[(old.port, 1)] >= 40
    assert report.acked_by_server[(new.port, 2)] >= 40
    assert report.acked == sum(report.acked_by_server.values())

    # Split-brain: the old primary is back, writable, listed first. As it was, it still
    # names `new` its synchronous standby: its commits wait, and a cancel "acknowledges" one.
    rs.start_old_primary_as_writable(old)
    _assert_cancel_acknowledges_a_waiting_commit(old, ledger.table)
    # An old primary without synchronous replication acknowledges every write.
    old.set_config(synchronous_standby_names=None)
    before = len(ledger.acks())
    ledger.run(_connector(info), writers=2, max_writes=10)
    stale = ledger.acks()[before:]
    assert len(stale) == 10
    assert {(a.port, a.timeline) for a in stale} == {(old.port, 1)}
    report = ledger.check(new)
    assert not report.ok
    assert report.lost == stale
    assert report.off_history == stale
    assert "LOST 10" in str(report)
