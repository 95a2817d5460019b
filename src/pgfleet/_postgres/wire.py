"""Bounded protocol exchanges on a psycopg connection's libpq handle.

psycopg's own ``execute`` has no deadline: on a blackholed network it waits for
the kernel to give up, and its async cancellation first tries a server-side
cancel (measured here: ``wait_for(query, 2)`` returned after 12 s). The pool's
ping and rollback must honour the caller's deadline, so they speak to libpq
directly through these generators: each yields the readiness it waits for
(`WAIT_R`/`WAIT_W`) and is driven by a loop that owns the clock (``_drive``
in ``pgfleet._async.postgres``, ``_begin`` in ``pgfleet._async.tx``). A timeout
leaves the connection mid-exchange, and the pool then discards it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import psycopg
from psycopg import pq

from pgfleet._acompat import WAIT_R, WAIT_RW

#: A wire exchange: yields what it waits for, receives what is ready, returns the status.
Exchange = Generator[int, int, pq.ExecStatus]


def exchange(pgconn: pq.abc.PGconn, query: bytes) -> Exchange:
    """Send `query` (simple protocol) and collect its results; return the last status.

    Raises `psycopg.OperationalError` when the connection is lost and
    `psycopg.DatabaseError` when the server answers with an error.
    """
    status, _ = yield from _run(pgconn, query)
    return status


def first_value(pgconn: pq.abc.PGconn, query: bytes) -> Generator[int, int, bytes | None]:
    """Like `exchange`, returning the first column of the first row (text), or None."""
    _, value = yield from _run(pgconn, query)
    return value


def _run(
    pgconn: pq.abc.PGconn, query: bytes
) -> Generator[int, int, tuple[pq.ExecStatus, bytes | None]]:
    pgconn.send_query(query)
    while pgconn.flush() != 0:
        ready = yield WAIT_RW
        if ready & WAIT_R:
            pgconn.consume_input()
    status = pq.ExecStatus.EMPTY_QUERY
    error: pq.abc.PGresult | None = None
    value: bytes | None = None
    first = True
    while True:
        while pgconn.is_busy():
            yield WAIT_R
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            break
        status = pq.ExecStatus(result.status)
        if status == pq.ExecStatus.FATAL_ERROR and error is None:
            error = result
        elif first and status == pq.ExecStatus.TUPLES_OK:
            first = False
            if result.ntuples and result.nfields:
                value = result.get_value(0, 0)
    if error is not None:
        message = error.error_message.decode("utf-8", "replace").strip()
        raise psycopg.DatabaseError(message or "the server reported an error")
    if pgconn.status != pq.ConnStatus.OK:
        raise psycopg.OperationalError("the connection was lost")
    return status, value


class SocketProbes:
    """Looks at idle connections for news from the server, without a round trip.

    An idle connection receives nothing unless the server is going away (a
    terminated backend, a shutdown, a crash) or sent something unsolicited (a
    notification, a parameter change). A probe reads what has arrived, twice
    (``PQconsumeInput``: a non-blocking read; one read never returns both data and
    the end of file behind it), and has libpq parse it (``PQgetResult`` returns at
    once on a connection with no query running); the connection is then judged by
    libpq's status. These calls keep the GIL. The probe used to ask ``poll``, which
    releases it: under load every probe then became a GIL hand-off between threads
    (measured: 6 % of a threaded pool's throughput at 64 threads on 8 connections).

    A server going away says so before it closes the socket: a FATAL, or on an
    immediate shutdown or a crash a WARNING with SQLSTATE 57P01/57P02. libpq hands
    these to the notice processor and leaves the status OK until it reads the
    socket's end, so the probe wraps each connection's notice handler (again if
    somebody replaced it) with a watcher that marks the connection dead for good.
    """

    __slots__ = ("_dead", "_watchers")

    def __init__(self) -> None:
        self._watchers: dict[int, Callable[[pq.abc.PGresult], None]] = {}
        self._dead: set[int] = set()

    def says_broken(self, pgconn: pq.abc.PGconn) -> bool:
        """True when the server has closed the connection or said it is going away.

        No round trip. Call it only on a connection with no query running.
        """
        key = id(pgconn)
        if pgconn.notice_handler is not self._watchers.get(key):
            self._watch(pgconn, key)
        if key in self._dead:
            return True
        try:
            for _ in range(2):
                pgconn.consume_input()
                pgconn.get_result()  # parses what arrived; None at once when idle
        except (psycopg.OperationalError, OSError, ValueError):
            return True
        return pgconn.status != _OK or key in self._dead

    def forget(self, pgconn: pq.abc.PGconn) -> None:
        """Drop what is known of a connection being closed (its id will be reused)."""
        self._watchers.pop(id(pgconn), None)
        self._dead.discard(id(pgconn))

    def _watch(self, pgconn: pq.abc.PGconn, key: int) -> None:
        if key not in self._watchers:
            self._dead.discard(key)  # a connection gone without `forget` had this id
        handler = pgconn.notice_handler
        dead = self._dead

        def watch_for_farewell(result: pq.abc.PGresult) -> None:
            if (
                result.error_field(_SEVERITY) in _FATAL_SEVERITIES
                or result.error_field(_SQLSTATE) in _GOING_AWAY
            ):
                dead.add(key)
            if handler is not None:
                handler(result)  # psycopg's own handler: the user's notice handlers still run

        pgconn.notice_handler = watch_for_farewell
        self._watchers[key] = watch_for_farewell


_OK = pq.ConnStatus.OK
_SEVERITY = pq.DiagnosticField.SEVERITY_NONLOCALIZED
_SQLSTATE = pq.DiagnosticField.SQLSTATE
_FATAL_SEVERITIES = (b"FATAL", b"PANIC")
#: admin_shutdown, crash_shutdown: sent as a WARNING by a backend told to quit at once.
_GOING_AWAY = (b"57P01", b"57P02")
