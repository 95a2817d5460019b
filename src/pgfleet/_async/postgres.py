"""`AsyncPostgresManager`: the PostgreSQL door of `AsyncPool`, on psycopg.

The pool's default manager (see `pgfleet._async.manager` for the contract it fulfils).
What it knows of PostgreSQL lives in ``pgfleet._postgres``: where to connect
(``conninfo``), which connect errors are permanent (``connect_errors``), bounded wire
exchanges and the idle probe (``wire``), TLS reports and hints (``tls``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import psycopg
from psycopg import pq

from pgfleet._acompat import abounded, await_fd, monotonic
from pgfleet._async.manager import AsyncManager
from pgfleet._postgres import tls, wire
from pgfleet._postgres.connect_errors import is_permanent_error
from pgfleet._postgres.conninfo import ConnTarget

ConnectionCallback = Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]


_OK = pq.ConnStatus.OK
_IDLE = pq.TransactionStatus.IDLE
_UNUSABLE = (pq.TransactionStatus.ACTIVE, pq.TransactionStatus.UNKNOWN)
_IN_TRANSACTION = (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR)


class AsyncPostgresManager(AsyncManager[psycopg.AsyncConnection[Any]]):
    """Connections made by psycopg's `AsyncConnection` (or a subclass).

    Connects with a connect timeout and TCP keepalives on by default; judges a
    returned connection by its own state, never by the exception that escaped;
    pings and rolls back under a deadline, whatever the network does.

    Args:
        conninfo: a ``postgresql://`` URL or a ``key=value`` string; None reads
            ``DATABASE_URL``, else libpq's own ``PG*`` environment.
        kwargs: more `psycopg.AsyncConnection.connect` arguments (``autocommit``,
            ``row_factory``, connection parameters such as ``sslmode``).
        connection_class: the class whose ``connect`` opens connections.
        configure: ``async fn(conn)`` run once on each new connection.
        reset: ``async fn(conn)`` run on each returned connection, after the rollback.
        check: ``async fn(conn)`` replacing the built-in ping.
        connect_timeout: seconds one connection attempt may take.
        warn_unverified: log one WARNING (logger ``pgfleet.tls``) the first time a
            connection reaches a host that is neither loopback nor a Unix socket with
            an sslmode that does not verify the server (not ``verify-ca`` or
            ``verify-full``). False silences it.

    A failed connection attempt raises libpq's error with its secrets redacted and,
    when pgfleet knows which setting to look at, a ``hint:`` note (PEP 678).
    """

    def __init__(
        self,
        conninfo: str | None = None,
        *,
        kwargs: Mapping[str, Any] | None = None,
        connection_class: type[psycopg.AsyncConnection[Any]] = psycopg.AsyncConnection,
        configure: ConnectionCallback | None = None,
        reset: ConnectionCallback | None = None,
        check: ConnectionCallback | None = None,
        connect_timeout: float = 10.0,
        warn_unverified: bool = True,
    ) -> None:
        self.target = ConnTarget.resolve(conninfo, kwargs)
        self.warn_unverified = warn_unverified
        #: Taken (never released) by the one connect that logs the warning.
        self._unverified_warning = threading.Lock()
        self.connection_class = connection_class
        self._configure = configure
        self._reset = reset
        self._check = check
        self.connect_timeout = connect_timeout
        self._probes = wire.SocketProbes()

    #: `is_broken` costs a non-blocking read of the socket, which sees only what has
    #: already arrived: news of a server gone within the last millisecond is still on
    #: its way (and the connection's own state cannot change while it sits idle), so
    #: the pool does not ask about connections known good more recently than this.
    probe_after_idle = 0.001

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.target}>"

    def redact(self, text: str) -> str:
        """`text` with this target's secrets replaced by ``***``."""
        return self.target.redact(text)

    def is_permanent(self, error: BaseException) -> bool:
        """True when retrying the connection cannot help (`pgfleet._postgres.connect_errors`)."""
        return is_permanent_error(error)

    async def connect(self, timeout: float) -> psycopg.AsyncConnection[Any]:
        """Open, configure and return a new connection within `timeout` seconds."""
        timeout = min(timeout, self.connect_timeout)
        # libpq counts connect_timeout in whole seconds, at least 2; our own bound is exact.
        libpq_timeout = max(2, math.ceil(timeout))
        try:
            conn = await abounded(
                self.connection_class.connect(
                    self.target.conninfo,
                    connect_timeout=libpq_timeout,
                    **self.target.connect_kwargs,
                ),
                timeout,
            )
        except psycopg.Error as exc:
            explained = self._explain(exc)
            if explained is exc:
                raise
            raise explained from None
        if self.warn_unverified and not self._unverified_warning.locked():
            self._warn_if_unverified(conn)
        if self._configure is not None:
            try:
                await self._configure(conn)
                if conn.info.transaction_status in _IN_TRANSACTION:
                    await conn.rollback()
            except BaseException:
                await self.close(conn)
                raise
        return conn

    def _explain(self, error: psycopg.Error) -> psycopg.Error:
        """`error` without secrets, with a note naming the setting to look at."""
        text = str(error)
        safe = self.target.redact(text)
        if safe != text:  # libpq never echoes a password; this is the belt to its braces
            error = type(error)(safe).with_traceback(error.__traceback__)
        hint = tls.connect_error_hint(error, self.target.params)
        if hint is not None and not any(
            note.startswith("hint: ") for note in getattr(error, "__notes__", ())
        ):
            error.add_note(f"hint: {self.target.redact(hint)}")
        return error

    def _warn_if_unverified(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Log, once, that this pool reaches a remote server it does not verify."""
        try:
            message = tls.unverified_warning(conn, self.target.describe())
        except psycopg.Error:  # closed already: the next connection will tell
            return
        if message is not None and self._unverified_warning.acquire(blocking=False):
            tls.logger.warning("%s", message)

    async def check(self, conn: psycopg.AsyncConnection[Any], timeout: float) -> None:
        """Ping the server (an empty query) within `timeout`, or raise."""
        if self._check is not None:
            await abounded(self._check(conn), timeout)
            return
        await self._drive(conn, b"", timeout)

    def is_broken(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """Judge from the connection's own state: closed, bad status, mid-query, lost socket."""
        pgconn = conn.pgconn
        if pgconn.status != _OK or pgconn.transaction_status in _UNUSABLE:
            return True
        return self._probes.says_broken(pgconn)

    def is_clean(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """True when `conn` came back with no transaction open and no reset callback to run.

        (libpq reports a broken connection's transaction status as UNKNOWN, not IDLE.)
        """
        return self._reset is None and conn.pgconn.transaction_status == _IDLE

    async def commit(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """COMMIT the transaction a ``connection()`` block left open (as psycopg_pool does)."""
        if conn.pgconn.transaction_status != _IDLE:
            await conn.commit()

    async def reset(self, conn: psycopg.AsyncConnection[Any], timeout: float) -> None:
        """Roll back a transaction left open, then run the user's reset callback.

        Raises (so the pool discards the connection) when it came back closed or in
        the middle of a query or a COPY: its state is unknown.
        """
        pgconn = conn.pgconn
        # libpq reports UNKNOWN for a connection that is not OK: one call tells all.
        status = pgconn.transaction_status
        if status == _IDLE:
            if self._reset is None:
                return  # the common case: nothing to undo
        elif status in _IN_TRANSACTION:
            await self._drive(conn, b"ROLLBACK", timeout)
        else:
            raise psycopg.OperationalError(
                f"the connection came back unusable (status {pq.ConnStatus(pgconn.status).name},"
                f" transaction {pq.TransactionStatus(status).name})"
            )
        if self._reset is not None:
            await abounded(self._reset(conn), timeout)
            if conn.pgconn.transaction_status != _IDLE:
                raise psycopg.ProgrammingError(
                    "the reset callback left the connection inside a transaction"
                )

    async def close(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Close the connection (sends Terminate; never waits for the server)."""
        self._probes.forget(conn.pgconn)
        try:
            await conn.close()
        except Exception:
            pass

    async def _drive(
        self, conn: psycopg.AsyncConnection[Any], query: bytes, timeout: float
    ) -> None:
        """Run one bounded wire exchange on `conn` (see `pgfleet._postgres.wire`)."""
        deadline = monotonic() + timeout
        pgconn = conn.pgconn
        exchange = wire.exchange(pgconn, query)
        try:
            want = next(exchange)
            while True:
                remaining = deadline - monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no answer from the server within {timeout:.3g} s")
                ready = await await_fd(pgconn.socket, want, remaining)
                if ready:
                    want = exchange.send(ready)
        except StopIteration:
            return
