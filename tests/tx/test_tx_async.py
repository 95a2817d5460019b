"""Transactions with retry on `AsyncPool`, against a real server.

This file is the source of ``tests/tx/test_tx_sync.py`` (``python tools/gen_sync.py``):
there the pool is a `Pool`, the crowds are threads and the events are threading events.
Every test works in tables of its own, in the database of ``tx_dsn`` (tests/tx/conftest.py).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from pgfleet import AsyncPool, CommitOutcomeUnknown
from pgfleet._acompat import AsyncEvent
from pgfleet.tx import RETRY_SQLSTATES
from support.cluster import PgCluster
from support.crowd import AsyncCrowd
from support.proxy import COMMIT_MESSAGE, FaultProxy

#: How long a test waits for the other transaction to reach a step.
STEP = 5.0


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def tx_pool(dsn: str, **options: Any) -> AsyncPool[psycopg.AsyncConnection[Any]]:
    kwargs = {"application_name": unique("pgfleet-tx"), **options.pop("kwargs", {})}
    options.setdefault("min_size", 1)
    options.setdefault("max_size", 4)
    options.setdefault("timeout", 10.0)
    return AsyncPool(dsn, kwargs=kwargs, **options)


async def create_table(pool: AsyncPool[Any], ddl: str, *rows: tuple[Any, ...]) -> sql.Identifier:
    """A new table ``CREATE TABLE <unique name> (<ddl>)`` holding `rows`."""
    table = sql.Identifier(unique("t"))
    async with pool.connection() as conn:
        await conn.execute(sql.SQL("CREATE TABLE {} ({})").format(table, sql.SQL(ddl)))
        for row in rows:
            placeholders = sql.SQL(", ").join([sql.Placeholder()] * len(row))
            await conn.execute(
                sql.SQL("INSERT INTO {} VALUES ({})").format(table, placeholders), row
            )
    return table


async def scalar(pool: AsyncPool[Any], query: sql.Composable) -> Any:
    async with pool.connection() as conn:
        cursor = await conn.execute(query)
        row = await cursor.fetchone()
        assert row is not None
        return row[0]


def sqlstate_error(code: str) -> sql.Composed:
    """A statement that fails with SQLSTATE `code`."""
    return sql.SQL(
        "DO $$ BEGIN RAISE EXCEPTION 'raised by the test' USING ERRCODE = {}; END $$"
    ).format(sql.Literal(code))


# -- the basics ----------------------------------------------------------------------------


async def test_commits_and_returns_the_result(tx_dsn: str) -> None:
    async with tx_pool(tx_dsn) as pool:
        table = await create_table(pool, "id int primary key, note text")

        async def insert(conn: psycopg.AsyncConnection[Any], id: int, note: str) -> str:
            await conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(table), (id, note))
            return note.upper()

        assert await pool.run_transaction(insert, 1, "one") == "ONE"
        assert (
            await scalar(pool, sql.SQL("SELECT note FROM {} WHERE id = 1").format(table)) == "one"
        )
        stats = pool.stats()
        assert stats.transaction_retries == 0
        assert stats.in_use == 0


@pytest.mark.parametrize("autocommit", [False, True])
async def test_transaction_modes_apply_to_the_attempt_only(tx_dsn: str, autocommit: bool) -> None:
    async with tx_pool(tx_dsn, max_size=1, kwargs={"autocommit": autocommit}) as pool:

        async def modes(conn: psycopg.AsyncConnection[Any]) -> tuple[str, ...]:
            cursor = await conn.execute(
                "SELECT current_setting('transaction_isolation'),"
                " current_setting('transaction_read_only'),"
                " current_setting('transaction_deferrable')"
            )
            row = await cursor.fetchone()
            assert row is not None
            return tuple(row)

        assert await pool.run_transaction(
            modes, isolation_level="serializable", read_only=True, deferrable=True
        ) == ("serializable", "on", "on")
        assert await pool.run_transaction(
            modes, isolation_level=psycopg.IsolationLevel.REPEATABLE_READ, read_only=False
        ) == ("repeatable read", "off", "off")
        # Nothing leaks to the next user of the (only) connection.
        assert await pool.run_transaction(modes) == ("read committed", "off", "off")
        async with pool.connection() as conn:
            assert conn.isolation_level is None
            assert conn.read_only is None


async def test_bad_options_fail_before_any_attempt(tx_dsn: str) -> None:
    async with tx_pool(tx_dsn) as pool:
        calls = 0

        async def body(conn: psycopg.AsyncConnection[Any]) -> None:
            nonlocal calls
            calls += 1

        with pytest.raises(ValueError, match="isolation_level"):
            await pool.run_transaction(body, isolation_level="snapshot")
        with pytest.raises(ValueError, match="max_attempts"):
            await pool.run_transaction(body, max_attempts=0)
        with pytest.raises(TypeError, match="retry_on"):
            await pool.run_transaction(body, retry_on="40001")
        assert calls == 0


# -- what is retried -----------------------------------------------------------------------


async def test_conflicting_serializable_transactions_one_is_retried(tx_dsn: str) -> None:
    async with tx_pool(tx_dsn) as pool:
        table = await create_table(pool, "id int primary key, n int", (1, 0))
        read = {"a": AsyncEvent(), "b": AsyncEvent()}
        attempts = {"a": 0, "b": 0}

        async def increment(conn: psycopg.AsyncConnection[Any], me: str, other: str) -> None:
            attempts[me] += 1
            cursor = await conn.execute(sql.SQL("SELECT n FROM {} WHERE id = 1").format(table))
            row = await cursor.fetchone()
            assert row is not None
            # Both read the same snapshot before either writes: they must conflict.
            read[me].set()
            assert await read[other].wait(STEP)
            await conn.execute(
                sql.SQL("UPDATE {} SET n = %s WHERE id = 1").format(table), [row[0] + 1]
            )

        async def run(i: int) -> None:
            me, other = ("a", "b") if i == 0 else ("b", "a")
            await pool.run_transaction(increment, me, other, isolation_level="serializable")

        await AsyncCrowd.run(run, 2, timeout=20.0)
        assert await scalar(pool, sql.SQL("SELECT n FROM {}").format(table)) == 2
        assert sorted(attempts.values()) == [1, 2]
        assert pool.stats().transaction_retries == 1


async def test_a_serialization_failure_at_commit_is_retried(tx_dsn: str) -> None:
    # Write skew: each transaction reads what the other writes. The other one commits
    # first, so ours fails with 40001 when it sends COMMIT: the server rolled it back.
    async with tx_pool(tx_dsn) as pool:
        table = await create_table(pool, "id int primary key, on_call bool", (1, True), (2, True))
        count = sql.SQL("SELECT count(*) FROM {} WHERE on_call").format(table)
        off = sql.SQL("UPDATE {} SET on_call = false WHERE id = %s").format(table)
        async with await psycopg.AsyncConnection.connect(tx_dsn) as other:
            await other.set_isolation_level(psycopg.IsolationLevel.SERIALIZABLE)
            seen = []
            async for attempt in pool.transactions(isolation_level="serializable"):
                async with attempt as conn:
                    seen.append(attempt.number)
                    await conn.execute(count)
                    if attempt.number == 1:
                        await other.execute(count)
                        await other.execute(off, [2])
                        await other.commit()
                    await conn.execute(off, [1])
        assert seen == [1, 2]
        assert attempt.committed
        assert pool.stats().transaction_retries == 1


async def test_a_deadlock_is_retried_and_both_commit(tx_dsn: str) -> None:
    async with tx_pool(tx_dsn) as pool:
        table = await create_table(pool, "id int primary key, n int", (1, 0), (2, 0))
        locked = [AsyncEvent(), AsyncEvent()]
        calls = [0, 0]
        lock = sql.SQL("UPDATE {} SET n = n + 1 WHERE id = %s").format(table)

        async def opposite_order(conn: psycopg.AsyncConnection[Any], me: int) -> None:
            calls[me] += 1
            first, second = (1, 2) if me == 0 else (2, 1)
            await conn.execute(lock, [first])
            if calls[me] == 1:
                locked[me].set()
                assert await locked[1 - me].wait(STEP)
            await conn.execute(lock, [second])

        async def run(me: int) -> None:
            await pool.run_transaction(opposite_order, me)

        await AsyncCrowd.run(run, 2, timeout=20.0)
        assert await scalar(pool, sql.SQL("SELECT sum(n) FROM {}").format(table)) == 4
        assert sorted(calls) == [1, 2]
        assert pool.stats().transaction_retries == 1


async def test_concurrent_serializable_increments_lose_nothing(tx_dsn: str) -> None:
    workers, increments = 20, 50
    async with tx_pool(tx_dsn, min_size=workers, max_size=workers) as pool:
        counter = await create_table(pool, "id int primary key, n int not null", (1, 0))
        applied = await create_table(pool, "worker int, step int, primary key (worker, step)")

        async def increment(conn: psycopg.AsyncConnection[Any], worker: int, step: int) -> None:
            cursor = await conn.execute(sql.SQL("SELECT n FROM {} WHERE id = 1").format(counter))
            row = await cursor.fetchone()
            assert row is not None
            await conn.execute(
                sql.SQL("UPDATE {} SET n = %s WHERE id = 1").format(counter), [row[0] + 1]
            )
            # Applied twice would be a unique violation here (never retried: the test fails).
            await conn.execute(
                sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(applied), [worker, step]
            )

        async def work(worker: int) -> None:
            for step in range(increments):
                await pool.run_transaction(
                    increment, worker, step, isolation_level="serializable", max_attempts=200
                )

        await AsyncCrowd.run(work, workers, timeout=50.0)
        assert await scalar(pool, sql.SQL("SELECT n FROM {}").format(counter)) == 1000
        assert await scalar(pool, sql.SQL("SELECT count(*) FROM {}").format(applied)) == 1000
        assert pool.stats().transaction_retries > 0


@pytest.mark.parametrize("noticed", ["by the next statement", "before COMMIT"])
async def test_a_backend_terminated_before_commit_is_retried_once(
    pg: PgCluster, tx_dsn: str, noticed: str
) -> None:
    app = unique("pgfleet-tx")
    async with tx_pool(tx_dsn, kwargs={"application_name": app}) as pool:
        table = await create_table(pool, "id int primary key")
        calls = 0

        async def insert(conn: psycopg.AsyncConnection[Any]) -> None:
            nonlocal calls
            calls += 1
            await conn.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(table))
            if calls == 1:
                assert pg.terminate_backends(application_name=app) >= 1
                if noticed == "by the next statement":
                    await conn.execute("SELECT 1")

        await pool.run_transaction(insert)
        assert calls == 2
        assert await scalar(pool, sql.SQL("SELECT count(*) FROM {}").format(table)) == 1
        assert pool.stats().transaction_retries == 1


async def test_a_commit_in_flight_is_in_doubt_and_never_replayed(
    pg: PgCluster, tx_dsn: str
) -> None:
    with FaultProxy(("127.0.0.1", pg.port)) as proxy:
        dsn = psycopg.conninfo.make_conninfo(tx_dsn, port=proxy.port)
        async with tx_pool(dsn) as pool:
            table = await create_table(pool, "id int primary key")
            calls = 0

            async def insert(conn: psycopg.AsyncConnection[Any]) -> None:
                nonlocal calls
                calls += 1
                await conn.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(table))

            proxy.hold_reply_after(COMMIT_MESSAGE)
            with pytest.raises(CommitOutcomeUnknown) as caught:
                await pool.run_transaction(insert)
            assert proxy.wait_triggered(STEP)
            assert isinstance(caught.value.__cause__, psycopg.OperationalError)
            assert calls == 1
            assert pool.stats().transaction_retries == 0
            # The server had committed: the row is there, once.
            assert await scalar(pool, sql.SQL("SELECT count(*) FROM {}").format(table)) == 1


# -- what is not retried -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "error"),
    [
        ("INSERT INTO {} VALUES (1)", errors.UniqueViolation),
        ("INSRT INTO {} VALUES (2)", errors.SyntaxError),
    ],
)
async def test_non_retryable_errors_are_raised_at_once(
    tx_dsn: str, statement: str, error: type[Exception]
) -> None:
    async with tx_pool(tx_dsn) as pool:
        table = await create_table(pool, "id int primary key", (1,))
        calls = 0

        async def fail(conn: psycopg.AsyncConnection[Any]) -> None:
            nonlocal calls
            calls += 1
            await conn.execute(sql.SQL(statement).format(table))

        with pytest.raises(error) as caught:
            await pool.run_transaction(fail, isolation_level="serializable")
        assert calls == 1
        assert not getattr(caught.value, "__notes__", None)
        assert pool.stats().transaction_retries == 0
        assert pool.stats().in_use == 0


async def test_the_callers_own_exceptions_pass_through(tx_dsn: str) -> None:
    async with tx_pool(tx_dsn) as pool:
        table = await create_table(pool, "id int")

        async def oops(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(table))
            raise KeyError("mine")

        with pytest.raises(KeyError, match="mine"):
            await pool.run_transaction(oops)
        assert await scalar(pool, sql.SQL("SELECT count(*) FROM {}").format(table)) == 0
        assert pool.stats().transaction_retries == 0


async def test_an_error_swallowed_inside_the_transaction_is_not_committed(tx_dsn: str) -> None:
    async with tx_pool(tx_dsn) as pool:
        table = await create_table(pool, "id int primary key")

        async def swallow(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(table))
            try:
                await conn.execute("SELECT 1/0")
            except errors.DivisionByZero:
                pass

        with pytest.raises(errors.InFailedSqlTransaction):
            await pool.run_transaction(swallow)
        assert await scalar(pool, sql.SQL("SELECT count(*) FROM {}").format(table)) == 0


async def test_gives_up_after_max_attempts_with_a_note(
    tx_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pgfleet.tx")
    async with tx_pool(tx_dsn) as pool:
        calls = 0

        async def always_conflicts(conn: psycopg.AsyncConnection[Any]) -> None:
            nonlocal calls
            calls += 1
            await conn.execute(sqlstate_error("40001"))

        with pytest.raises(errors.SerializationFailure) as caught:
            await pool.run_transaction(always_conflicts, max_attempts=3, retry_delay=0.001)
        assert calls == 3
        assert any("attempted 3 times" in note for note in caught.value.__notes__)
        assert pool.stats().transaction_retries == 2
        retries = [r for r in caplog.records if "retrying" in r.getMessage()]
        assert [r.levelno for r in retries] == [logging.DEBUG] * 2
        assert "SQLSTATE 40001" in retries[0].getMessage()


async def test_retry_on_is_configurable(tx_dsn: str) -> None:
    async with tx_pool(tx_dsn) as pool:
        calls = 0

        async def lock_not_available_once(conn: psycopg.AsyncConnection[Any]) -> int:
            nonlocal calls
            calls += 1
            if calls == 1:
                await conn.execute(sqlstate_error("55P03"))
            return calls

        retry_on = RETRY_SQLSTATES | {"55P03"}
        assert await pool.run_transaction(lock_not_available_once, retry_on=retry_on) == 2
        calls = 0
        with pytest.raises(errors.LockNotAvailable):
            await pool.run_transaction(lock_not_available_once)  # not in the default set
        with pytest.raises(errors.SerializationFailure):
            await pool.run_transaction(
                lambda conn: conn.execute(sqlstate_error("40001")), retry_on=()
            )


# -- the three forms -----------------------------------------------------------------------


async def test_the_decorator_and_the_attempt_loop(tx_dsn: str) -> None:
    async with tx_pool(tx_dsn) as pool:
        table = await create_table(pool, "id int primary key, n int", (1, 0))
        calls = 0

        @pool.transactional(isolation_level="serializable")
        async def add(conn: psycopg.AsyncConnection[Any], amount: int) -> int:
            """Add `amount`."""
            nonlocal calls
            calls += 1
            if calls == 1:
                await conn.execute(sqlstate_error("40P01"))
            cursor = await conn.execute(
                sql.SQL("UPDATE {} SET n = n + %s RETURNING n").format(table), [amount]
            )
            row = await cursor.fetchone()
            assert row is not None
            return int(row[0])

        assert add.__name__ == "add"
        assert add.__doc__ == "Add `amount`."
        assert await add(5) == 5
        assert calls == 2

        numbers = []
        async for attempt in pool.transactions(read_only=True):
            async with attempt as conn:
                numbers.append(attempt.number)
                if attempt.number == 1:
                    await conn.execute(sqlstate_error("40001"))
                cursor = await conn.execute(sql.SQL("SELECT n FROM {}").format(table))
                total = await cursor.fetchone()
        assert numbers == [1, 2]
        assert total == (5,)
        assert pool.stats().transaction_retries == 2


async def test_a_connection_lost_at_begin_is_retried_on_another(pg: PgCluster, tx_dsn: str) -> None:
    with FaultProxy(("127.0.0.1", pg.port)) as proxy:
        dsn = psycopg.conninfo.make_conninfo(tx_dsn, port=proxy.port)
        async with tx_pool(dsn) as pool:
            numbers = []
            # The server answers BEGIN; the client never hears it: nothing ran yet.
            proxy.hold_reply_after(b"BEGIN ISOLATION LEVEL SERIALIZABLE")
            async for attempt in pool.transactions(isolation_level="serializable"):
                async with attempt as conn:
                    numbers.append(attempt.number)
                    await conn.execute("SELECT 1")
            assert proxy.wait_triggered(STEP)
            assert numbers == [2]
            assert pool.stats().transaction_retries == 1


async def test_leaving_the_loop_with_a_retry_due_warns(tx_dsn: str) -> None:
    async with tx_pool(tx_dsn) as pool:
        attempts = pool.transactions()
        async for attempt in attempts:
            async with attempt as conn:
                await conn.execute(sqlstate_error("40001"))
            break  # wrong: the failed attempt is never retried
        del attempt
        with pytest.warns(RuntimeWarning, match="left before the retry"):
            del attempts

        loop = pool.transactions().__aiter__()
        await anext(loop)  # attempt 1, never used
        with pytest.raises(RuntimeError, match="context manager"):
            await anext(loop)
