"""Bounded protocol exchanges on a psycopg connection's libpq handle.

psycopg's own ``execute`` has no deadline: on a blackholed network it waits for
the kernel to give up, and its async cancellation first tries a server-side
cancel (measured here: ``wait_for(query, 2)`` returned after 12 s). The pool's
ping and rollback must honour the caller's deadline, so they speak to libpq
directly through these generators: each yields the readiness it waits for
(`WAIT_R`/`WAIT_W`) and is driven by a loop that owns the clock (see
``drive`` in the managers). A timeout leaves the connection mid-exchange, and
the pool then discards it.
"""

from __future__ import annotations

import select
from collections.abc import Generator

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
    pgconn.send_query(query)
    while pgconn.flush() != 0:
        ready = yield WAIT_RW
        if ready & WAIT_R:
            pgconn.consume_input()
    status = pq.ExecStatus.EMPTY_QUERY
    error: pq.abc.PGresult | None = None
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
    if error is not None:
        message = error.error_message.decode("utf-8", "replace").strip()
        raise psycopg.DatabaseError(message or "the server reported an error")
    if pgconn.status != pq.ConnStatus.OK:
        raise psycopg.OperationalError("the connection was lost")
    return status


class SocketProbes:
    """Zero-timeout looks at idle connections' sockets: has the server gone?

    An idle connection has nothing to read unless the server closed it (a
    terminated backend, a restart) or sent something unsolicited (a notification,
    a parameter change), so when there is input it is consumed and the connection
    is judged by what libpq then says. One ``poll`` object per connection is kept
    because ``poll(0)`` costs half a ``select``: this runs on every checkout.
    A FATAL seen once is remembered: consuming it leaves libpq's status OK until
    the socket's end is read, and a second look must not call the connection fine.
    """

    __slots__ = ("_dead", "_polls")

    def __init__(self) -> None:
        self._polls: dict[int, select.poll] = {}
        self._dead: set[int] = set()

    def says_broken(self, pgconn: pq.abc.PGconn) -> bool:
        """True when the connection's socket shows the server has gone. No round trip."""
        if self._dead and id(pgconn) in self._dead:
            return True
        try:
            probe = self._polls.get(id(pgconn))
            if probe is None:
                probe = self._polls[id(pgconn)] = select.poll()
                probe.register(pgconn.socket, select.POLLIN)
            for _ in range(3):
                if not probe.poll(0):
                    return False
                if _consume_input_seeing_fatal(pgconn):
                    self._dead.add(id(pgconn))
                    return True
                if pgconn.status != pq.ConnStatus.OK:
                    return True
        except (psycopg.OperationalError, OSError, ValueError):
            return True
        return False

    def forget(self, pgconn: pq.abc.PGconn) -> None:
        """Drop the probe of a connection being closed (its fd number will be reused)."""
        self._polls.pop(id(pgconn), None)
        self._dead.discard(id(pgconn))


_FATAL_SEVERITIES = (b"FATAL", b"PANIC")


def _consume_input_seeing_fatal(pgconn: pq.abc.PGconn) -> bool:
    """Consume and parse the input waiting on an idle connection; True if it was a FATAL.

    A terminated backend sends its FATAL error, then closes the socket a moment
    later. libpq hands an error that arrives on an idle connection to the notice
    processor and leaves the status OK, so without this look a probe falling
    between the two would swallow the error and call the connection healthy.
    """
    seen_fatal = False
    handler = pgconn.notice_handler

    def watch(result: pq.abc.PGresult) -> None:
        nonlocal seen_fatal
        severity = result.error_field(pq.DiagnosticField.SEVERITY_NONLOCALIZED)
        if severity in _FATAL_SEVERITIES:
            seen_fatal = True
        if handler is not None:
            handler(result)  # psycopg's own handler: the user's notice handlers still run

    pgconn.notice_handler = watch
    try:
        pgconn.consume_input()
        pgconn.is_busy()  # let libpq parse what arrived
    finally:
        pgconn.notice_handler = handler
    return seen_fatal
