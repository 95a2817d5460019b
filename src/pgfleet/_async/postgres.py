"""`AsyncPostgresManager`: the PostgreSQL door of `AsyncPool`, on psycopg.

The pool's default manager (see `pgfleet._async.manager` for the contract it fulfils).
What it knows of PostgreSQL lives in ``pgfleet._postgres``: where to connect
(``conninfo``), which connect errors are permanent (``connect_errors``), bounded wire
exchanges and the idle probe (``wire``), TLS reports and hints (``tls``), transaction
poolers in front of the server (``pooler``).
"""

from __future__ import annotations

import inspect
import math
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Mapping
from typing import Any, TypeVar

import psycopg
from psycopg import pq, sql

from pgfleet._acompat import abounded, await_fd, monotonic
from pgfleet._async.manager import AsyncManager
from pgfleet._postgres import pooler, wire
from pgfleet._postgres.connect_errors import is_permanent_error
from pgfleet._postgres.conninfo import (
    AsyncConninfoResult,
    AsyncKwargsResult,
    ConnTarget,
    redact,
)
from pgfleet._text import describe, hints
from pgfleet.errors import TransactionPoolerError

ConnectionCallback = Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]
R = TypeVar("R")


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
            ``DATABASE_URL``, else libpq's own ``PG*`` environment. Or a function
            returning one, called at each connection attempt (as psycopg_pool 3.3
            does: rotating credentials, such as cloud IAM tokens).
        kwargs: more `psycopg.AsyncConnection.connect` arguments (``autocommit``,
            ``row_factory``, connection parameters such as ``sslmode``), or a function
            returning them, called at each connection attempt like `conninfo`.
            What a function returns is checked, and its secrets redacted, as a value
            given directly would be; when it raises (or returns something invalid),
            that attempt fails with an `OperationalError` saying so.
        connection_class: the class whose ``connect`` opens connections.
        configure: ``async fn(conn)`` run once on each new connection.
        reset: ``async fn(conn)`` run on each returned connection, after the rollback.
        check: ``async fn(conn)`` replacing the built-in ping.
        connect_timeout: seconds one connection attempt may take.
        warn_unverified: log one WARNING (logger ``pgfleet.tls``) the first time a
            connection reaches a host that is neither loopback nor a Unix socket with
            an sslmode that does not verify the server (not ``verify-ca`` or
            ``verify-full``). False silences it.
        transaction_pooler: the server is reached through a pooler in transaction mode
            (PgBouncer ``pool_mode=transaction``, pgcat, PgDog, Supavisor, Odyssey): no
            automatic prepared statements (``prepare_threshold=None``; an explicit
            threshold is honoured only with libpq >= 17, for a pooler that tracks them),
            and no `reset` callback (ValueError: its queries would land on another
            client's server session); `configure` may not run statements whose effect
            outlives the transaction (``SET`` without ``LOCAL``, ``LISTEN``, session
            advisory locks...): `TransactionPoolerError`, raised before they are sent
            (see `pgfleet._postgres.pooler.session_feature`). Off, the first
            connections are probed once for a pooler (one ``SELECT pg_backend_pid()``
            each, until the answer is known):
            logger ``pgfleet.pooler`` says INFO on meeting one, and WARNING, once, when
            two open connections share a server session (a transaction pooler). See
            ``docs/pgbouncer.md``.

    A failed connection attempt raises libpq's error with its secrets redacted and,
    when pgfleet knows which setting to look at, a ``hint:`` note (PEP 678).
    """

    def __init__(
        self,
        conninfo: str | Callable[[], AsyncConninfoResult] | None = None,
        *,
        kwargs: Mapping[str, Any] | Callable[[], AsyncKwargsResult] | None = None,
        connection_class: type[psycopg.AsyncConnection[Any]] = psycopg.AsyncConnection,
        configure: ConnectionCallback | None = None,
        reset: ConnectionCallback | None = None,
        check: ConnectionCallback | None = None,
        connect_timeout: float = 10.0,
        warn_unverified: bool = True,
        transaction_pooler: bool = False,
    ) -> None:
        #: As given: a function is called at each connection attempt.
        self.conninfo = conninfo
        self.kwargs = kwargs
        #: Computed once, unless `conninfo` or `kwargs` is a function.
        self._static = not callable(conninfo) and not callable(kwargs)
        if not self._static:
            _check_source("conninfo", conninfo, str)
            _check_source("kwargs", kwargs, Mapping)
        #: Where the latest attempt connected (before the first, for a function, the
        #: parts given as values): what `describe`, hints and warnings speak of.
        self.target = ConnTarget.resolve(
            "" if callable(conninfo) else conninfo, None if callable(kwargs) else kwargs
        )
        #: Secrets of the targets a function produced: a rotating password stays
        #: redacted in messages written after the next rotation.
        self._past_secrets: deque[str] = deque(maxlen=16)
        if not isinstance(transaction_pooler, bool):
            raise TypeError(f"transaction_pooler must be a bool, got {transaction_pooler!r}")
        self.transaction_pooler = transaction_pooler
        #: What `connect` passes to psycopg besides the conninfo.
        self._connect_kwargs = self._kwargs_for(self.target)
        #: Watches new connections for a pooler (None: transaction_pooler=True, nothing to learn).
        self.pooler_watch: pooler.PoolerWatch | None = None
        if transaction_pooler:
            if reset is not None:
                raise pooler.refuse_reset()
        else:
            self.pooler_watch = pooler.PoolerWatch(self.target.describe())
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
        if self._static:
            return f"<{type(self).__name__} {self.target}>"
        return f"<{type(self).__name__} {self.target} from {_name_of(self.conninfo, self.kwargs)}>"

    def redact(self, text: str) -> str:
        """`text` with this target's secrets (and a function's past ones) replaced by ``***``."""
        if self._past_secrets:
            return redact(text, (*self.target.secrets, *self._past_secrets))
        return self.target.redact(text)

    def _kwargs_for(self, target: ConnTarget) -> Mapping[str, Any]:
        """What `connect` passes to psycopg besides `target`'s conninfo."""
        if self.transaction_pooler:
            return pooler.pooler_kwargs(target.connect_kwargs)
        return target.connect_kwargs

    async def _resolve(self, timeout: float) -> ConnTarget:
        """Call the `conninfo`/`kwargs` functions for one attempt; check what they return."""
        conninfo: Any = self.conninfo
        kwargs: Any = self.kwargs
        for what in ("conninfo", "kwargs"):
            source = conninfo if what == "conninfo" else kwargs
            if not callable(source):
                continue
            failure: psycopg.OperationalError | None = None
            try:
                value = source()
                # An async function's result, as psycopg_pool's async pools take it.  # async-only
                if inspect.isawaitable(value):  # async-only
                    value = await abounded(value, timeout)  # async-only
            except Exception as exc:
                # Neither chained nor raised here (its context): its text may hold a
                # secret that only a pattern finds (`redact`). Its frames stay.
                failure = psycopg.OperationalError(
                    f"the {what} function {_name_of(source)} failed:"
                    f" {describe(exc, redact=self.redact, with_type=True)}"
                ).with_traceback(exc.__traceback__)
            if failure is not None:
                raise failure
            if what == "conninfo":
                conninfo = value
            else:
                kwargs = value
        try:
            if not isinstance(conninfo, str):
                raise TypeError(f"conninfo must be a str, got {type(conninfo).__name__}")
            if kwargs is not None and not isinstance(kwargs, Mapping):
                raise TypeError(f"kwargs must be a mapping, got {type(kwargs).__name__}")
            target = ConnTarget.resolve(conninfo, kwargs)
        except (TypeError, ValueError) as exc:
            text = redact(str(exc), self._past_secrets)
            raise psycopg.OperationalError(
                f"bad connection settings from {_name_of(self.conninfo, self.kwargs)}: {text}"
            ) from None
        self._past_secrets.extend(s for s in target.secrets if s not in self._past_secrets)
        self.target = target
        return target

    def is_permanent(self, error: BaseException) -> bool:
        """True when retrying the connection cannot help (`pgfleet._postgres.connect_errors`),
        or when `configure` asked for a session feature of a transaction pooler."""
        return isinstance(error, TransactionPoolerError) or is_permanent_error(error)

    async def connect(self, timeout: float) -> psycopg.AsyncConnection[Any]:
        """Open, configure and return a new connection within `timeout` seconds."""
        timeout = min(timeout, self.connect_timeout)
        deadline = monotonic() + timeout
        if self._static:
            target, connect_kwargs = self.target, self._connect_kwargs
        else:
            target = await self._resolve(timeout)
            connect_kwargs = self._kwargs_for(target)
            timeout = max(deadline - monotonic(), 0.001)
        # libpq counts connect_timeout in whole seconds, at least 2; our own bound is exact.
        libpq_timeout = max(2, math.ceil(timeout))
        try:
            conn = await abounded(
                self.connection_class.connect(
                    target.conninfo,
                    connect_timeout=libpq_timeout,
                    **connect_kwargs,
                ),
                timeout,
            )
        except psycopg.Error as exc:
            explained = self._explain(exc, target)
            if explained is exc:
                raise
            raise explained from None
        watch = self.pooler_watch
        if watch is not None and watch.watching:
            await self._look_for_pooler(conn, watch, deadline)
        if self.warn_unverified and not self._unverified_warning.locked():
            self._warn_if_unverified(conn)
        if self._configure is not None:
            try:
                if self.transaction_pooler:
                    await self._configure_guarded(conn, self._configure)
                else:
                    await self._configure(conn)
                if conn.info.transaction_status in _IN_TRANSACTION:
                    await conn.rollback()
            except BaseException:
                await self.close(conn)
                raise
        return conn

    async def _configure_guarded(
        self, conn: psycopg.AsyncConnection[Any], configure: ConnectionCallback
    ) -> None:
        """Run `configure` with cursors that refuse, before sending, what would outlive
        the transaction through a transaction pooler."""
        factory = conn.cursor_factory
        conn.cursor_factory = _session_guard(factory)
        try:
            await configure(conn)
        finally:
            conn.cursor_factory = factory

    def _explain(self, error: psycopg.Error, target: ConnTarget) -> psycopg.Error:
        """`error` (from an attempt at `target`) without secrets, with a note naming the
        setting to look at."""
        text = str(error)
        safe = redact(text, (*target.secrets, *self._past_secrets))
        if safe != text:  # libpq never echoes a password; this is the belt to its braces
            error = type(error)(safe).with_traceback(error.__traceback__)
        from pgfleet._postgres import tls  # on first use (import time, issue #15)

        hint = tls.connect_error_hint(error, target.params)
        if hint is not None and not hints(error):
            error.add_note(f"hint: {redact(hint, (*target.secrets, *self._past_secrets))}")
        return error

    async def _look_for_pooler(
        self, conn: psycopg.AsyncConnection[Any], watch: pooler.PoolerWatch, deadline: float
    ) -> None:
        """Ask which server process serves `conn` (see `pgfleet._postgres.pooler`); log
        what that tells, once. Closes `conn` and raises when it cannot answer in time."""
        remaining = deadline - monotonic()
        if remaining <= 0:
            return  # no time left to learn: this connection is good all the same
        try:
            value = await self._drive(
                conn, wire.first_value(conn.pgconn, pooler.PROBE_QUERY), remaining
            )
        except psycopg.OperationalError:
            await self.close(conn)
            raise
        except psycopg.DatabaseError:  # no pg_backend_pid(): not PostgreSQL itself
            watch.give_up()
            return
        except BaseException:
            await self.close(conn)
            raise
        try:
            server_pid = int(value or b"")
        except ValueError:
            watch.give_up()
            return
        said = watch.saw(id(conn.pgconn), conn.info.backend_pid, server_pid)
        if said is not None:
            pooler.logger.log(said[0], "%s", said[1])

    def _warn_if_unverified(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Log, once, that this pool reaches a remote server it does not verify."""
        from pgfleet._postgres import tls  # on first use (import time, issue #15)

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
        await self._drive(conn, wire.exchange(conn.pgconn, b""), timeout)

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
        """COMMIT the transaction a ``connection()`` block left open (as psycopg_pool does).

        Nothing for a connection its user closed (``conn.close()`` in the block): the
        pool then discards it quietly, as psycopg_pool does. A connection that broke
        (not closed by its user) still raises: its transaction was not committed.
        """
        if conn.pgconn.transaction_status != _IDLE and not _closed_by_user(conn):
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
            await self._drive(conn, wire.exchange(pgconn, b"ROLLBACK"), timeout)
        elif _closed_by_user(conn):
            raise psycopg.OperationalError("the connection came back closed by its user")
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
        # Lent by `getconn` with close_returns on (the pool closing): close it for real.
        if getattr(conn, "_pool", None) is not None:
            conn._pool = None
        self._probes.forget(conn.pgconn)
        if self.pooler_watch is not None:
            self.pooler_watch.forget(id(conn.pgconn))
        try:
            await conn.close()
        except Exception:
            pass

    async def _drive(
        self,
        conn: psycopg.AsyncConnection[Any],
        exchange: Generator[int, int, R],
        timeout: float,
    ) -> R:
        """Run one bounded wire exchange on `conn` (see `pgfleet._postgres.wire`) and
        return what it returns."""
        deadline = monotonic() + timeout
        pgconn = conn.pgconn
        try:
            want = next(exchange)
            while True:
                remaining = deadline - monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no answer from the server within {timeout:.3g} s")
                ready = await await_fd(pgconn.socket, want, remaining)
                if ready:
                    want = exchange.send(ready)
        except StopIteration as done:
            result: R = done.value
            return result


def _check_source(what: str, source: object, kind: type) -> None:
    """A `conninfo`/`kwargs` given with the other as a function: a value, None or a function."""
    if source is not None and not callable(source) and not isinstance(source, kind):
        raise TypeError(
            f"{what} must be a {kind.__name__}, a function or None, got {type(source).__name__}"
        )


def _name_of(*sources: object) -> str:
    """The name of the first function among `sources`, for messages (never its value)."""
    for source in sources:
        if callable(source):
            name = getattr(source, "__qualname__", None) or type(source).__qualname__
            return f"{name}()"
    return "the connection settings"


def _closed_by_user(conn: psycopg.AsyncConnection[Any]) -> bool:
    """True for a connection closed by ``close()``, not broken (psycopg tells them apart)."""
    return conn.closed and not conn.broken


#: The guard subclass of each cursor class (made once; a race makes two, harmlessly).
_SESSION_GUARDS: dict[type[Any], type[Any]] = {}


def _session_guard(
    base: type[psycopg.AsyncCursor[Any]],
) -> type[psycopg.AsyncCursor[Any]]:
    """A subclass of `base` whose ``execute``/``executemany`` raise `TransactionPoolerError`,
    before sending, for a statement that outlives its transaction (one class per base)."""
    known = _SESSION_GUARDS.get(base)
    if known is not None:
        return known

    class SessionGuardCursor(base):  # type: ignore[valid-type,misc]
        async def execute(
            self,
            query: Any,
            params: Any = None,
            *,
            prepare: bool | None = None,
            binary: bool | None = None,
        ) -> Any:
            _refuse_session_feature(self.connection, query, prepare=prepare)
            return await super().execute(query, params, prepare=prepare, binary=binary)

        async def executemany(
            self, query: Any, params_seq: Any, *, returning: bool = False
        ) -> None:
            _refuse_session_feature(self.connection, query, prepare=None)
            await super().executemany(query, params_seq, returning=returning)

    SessionGuardCursor.__name__ = SessionGuardCursor.__qualname__ = f"SessionGuard{base.__name__}"
    _SESSION_GUARDS[base] = SessionGuardCursor
    return SessionGuardCursor


def _refuse_session_feature(
    conn: psycopg.AsyncConnection[Any], query: Any, *, prepare: bool | None
) -> None:
    if isinstance(query, bytes):
        text = query.decode("utf-8", "replace")
    elif isinstance(query, str):
        text = query
    elif isinstance(query, sql.Composable):
        text = query.as_string(conn)
    else:  # a template string (Python 3.14): not looked at
        return
    feature = pooler.session_feature(text)
    if feature is None and prepare:
        feature = "prepare=True (a prepared statement lives in one server session)"
    if feature is not None:
        raise pooler.refuse_session_feature(text, feature, "configure")
