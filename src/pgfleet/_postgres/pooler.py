"""Transaction poolers (PgBouncer, pgcat, PgDog, Supavisor, Odyssey) in front of the server.

In transaction mode a pooler lends a server session to a client for one transaction at a
time, so whatever outlives a transaction breaks: psycopg's automatic prepared statements,
``SET``, ``LISTEN``, session advisory locks, ``WITH HOLD`` cursors, temporary tables, and
any query a pool runs to "reset" a returned connection (it lands on whichever server
session serves the next transaction). Two things live here:

- what ``transaction_pooler=True`` changes in the connect arguments (`pooler_kwargs`) and
  what it refuses (`refuse_reset`);
- how a pool that is *not* in that mode notices a pooler (`PoolerWatch`).

How a pooler is recognised, measured with PgBouncer 1.18 in both modes, once per new
connection and only until the answer is known:

- A pooler makes up the process id it announces (BackendKeyData, psycopg's
  ``conn.info.backend_pid``): it owns the cancel keys. ``SELECT pg_backend_pid()`` then
  names another process, the server's. Straight to the server, the two are equal.
- Two connections of one pool, both open, served by one server process: the server session
  is shared between clients, which only a pooler in transaction (or statement) mode does.
  In session mode a server session belongs to one client until it disconnects.

What tells nothing: ``server_version`` (PgBouncer forwards the server's), the
``application_name`` it reports (it tracks and reports back what the client set), ``SHOW
VERSION`` (answered only on the pooler's admin console, database ``pgbouncer``).

Limits: a pooler that forwarded the server's own process id would go unnoticed (none of
the five does). The transaction mode is seen only when two connections of one pool are
open at once and the second is served by the session the first just used: PgBouncer reuses
its most recently released session first, so a pool that opens two connections at start-up
sees it at once; a pooler that picks sessions otherwise, or one that is busy, may need
more connections, or never show it. The watch stops after `MAX_LOOKS` connections.
"""

from __future__ import annotations

import enum
import logging
import re
import threading
from collections.abc import Mapping
from typing import Any

from psycopg import pq

from pgfleet.errors import TransactionPoolerError

__all__ = [
    "PROBE_QUERY",
    "Finding",
    "PoolerWatch",
    "logger",
    "pooler_kwargs",
    "refuse_reset",
    "refuse_session_feature",
    "session_feature",
    "tracks_prepared_statements",
]

logger = logging.getLogger("pgfleet.pooler")

#: What the server process serving this transaction is (one round trip, no transaction left).
PROBE_QUERY = b"SELECT pg_backend_pid()"
#: The libpq that sends the protocol's Close message for a prepared statement (PQclosePrepared),
#: which a pooler needs to follow psycopg's deallocations.
CLOSE_PREPARED_LIBPQ = 170000
#: Where the documentation explains it all.
DOCS = "docs/pgbouncer.md"


class Finding(enum.Enum):
    """What a pool's connections have shown about what answers them."""

    #: Nothing yet.
    UNKNOWN = "unknown"
    #: The server itself: its process id is the one it announced.
    SERVER = "server"
    #: A pooler (the announced process id is not the server's); its mode is not known.
    POOLER = "pooler"
    #: A pooler that shares server sessions between open connections (transaction mode).
    TRANSACTION_POOLER = "transaction pooler"
    #: The probe could not run (not PostgreSQL?), or `PoolerWatch.MAX_LOOKS` was reached.
    GAVE_UP = "gave up"


def tracks_prepared_statements(libpq_version: int | None = None) -> bool:
    """True when psycopg's libpq can close prepared statements at the protocol level
    (libpq >= 17), which a pooler that tracks them (PgBouncer >= 1.21 with
    ``max_prepared_statements``) needs."""
    version = pq.version() if libpq_version is None else libpq_version
    return version >= CLOSE_PREPARED_LIBPQ


def pooler_kwargs(connect_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The psycopg connect arguments of a pool with ``transaction_pooler=True``.

    Automatic prepared statements off (``prepare_threshold=None``), unless the caller set
    a threshold: that is honoured with libpq >= 17 (for a pooler that tracks prepared
    statements), and refused below it, where it cannot work.

    Raises:
        ValueError: a ``prepare_threshold`` that cannot work through a transaction pooler.
    """
    threshold = connect_kwargs.get("prepare_threshold")
    if threshold is None:
        return {**connect_kwargs, "prepare_threshold": None}
    if not tracks_prepared_statements():
        raise ValueError(
            f"prepare_threshold={threshold!r} cannot work with transaction_pooler=True: a"
            " transaction pooler follows prepared statements only when it tracks them"
            " (PgBouncer >= 1.21 with max_prepared_statements > 0) and libpq closes them"
            f" with the protocol's Close message (libpq >= 17; psycopg uses libpq"
            f" {_version(pq.version())}); leave prepare_threshold out (pgfleet sets None)"
        )
    return dict(connect_kwargs)


def refuse_reset() -> ValueError:
    """The error for a ``reset`` callback on a pool with ``transaction_pooler=True``."""
    return ValueError(
        "reset cannot work with transaction_pooler=True: it runs after the connection came"
        " back, when the pooler has already given the server session to another client, so"
        " its queries land on whichever session serves the next transaction; leave session"
        " state alone (each transaction must set what it needs, e.g. SET LOCAL), or use the"
        f" pooler's session mode and its server_reset_query (see {DOCS})"
    )


#: Leading blanks and SQL comments before a statement's first word.
_LEAD = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_WORDS = re.compile(r"[A-Za-z_]+")
#: Session advisory locks (the ``_xact_`` ones end with the transaction and are fine).
_ADVISORY = re.compile(r"\bpg_(?:try_)?advisory_lock(?:_shared)?\s*\(", re.IGNORECASE)
#: ``set_config(name, value, false)``: a session setting by function call.
_SET_CONFIG = re.compile(r"\bset_config\s*\([^)]*,\s*false\s*\)", re.IGNORECASE)
#: What follows ``SET`` in the statements that end with the transaction.
_TRANSACTION_SET = frozenset({"LOCAL", "TRANSACTION", "CONSTRAINTS"})


def session_feature(statement: str) -> str | None:
    """What in `statement` outlives its transaction (and so cannot work through a
    transaction pooler), or None.

    A look at the words, not a parser: it knows the first statement's first words
    (``SET`` without ``LOCAL``, ``LISTEN``, ``PREPARE``, ``DECLARE ... WITH HOLD``,
    ``CREATE TEMP`` without ``ON COMMIT DROP``, ``LOAD``) and the session advisory lock
    and ``set_config(..., false)`` calls anywhere. It catches the usual mistakes; it is
    not a sandbox (a ``DO`` block or a second statement can still do anything).
    """
    lead = _LEAD.match(statement)
    head = statement[lead.end() :] if lead is not None else statement
    words = [word.upper() for word in _WORDS.findall(head[:200], 0)[:4]]
    first = words[0] if words else ""
    upper = statement.upper()
    found: str | None = None
    if first == "SET" and (len(words) < 2 or words[1] not in _TRANSACTION_SET):
        found = "SET without LOCAL (a session setting; SET LOCAL ends with the transaction)"
    elif first == "LISTEN":
        found = "LISTEN (notifications reach the server session, which other clients get next)"
    elif first == "PREPARE":
        found = "PREPARE (a prepared statement lives in one server session)"
    elif first == "DECLARE" and "WITH HOLD" in " ".join(upper.split()):
        found = "DECLARE ... WITH HOLD (the cursor outlives the transaction)"
    elif first == "CREATE" and ({"TEMP", "TEMPORARY"} & set(words[1:3])):
        if "ON COMMIT DROP" not in " ".join(upper.split()):
            found = "CREATE TEMPORARY without ON COMMIT DROP (the table outlives the transaction)"
    elif first == "LOAD":
        found = "LOAD (a library loaded into one server session)"
    if found is None and _ADVISORY.search(statement):
        found = "a session advisory lock (use pg_advisory_xact_lock, released at COMMIT)"
    if found is None and _SET_CONFIG.search(statement):
        found = "set_config(..., false) (a session setting; pass true for the transaction)"
    return found


def refuse_session_feature(statement: str, feature: str, where: str) -> TransactionPoolerError:
    """The error for `feature`, found in `statement` run by `where`."""
    shown = " ".join(statement.split())
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return TransactionPoolerError(
        f"{where} runs {shown!r} on a pool with transaction_pooler=True: {feature}; through"
        " a transaction pooler it would land on whichever server session serves this"
        " transaction, and stay there for other clients. Nothing was sent. Set what each"
        f" transaction needs inside it (SET LOCAL), or the server role's defaults (ALTER"
        f" ROLE ... SET); see {DOCS}"
    )


class PoolerWatch:
    """What one pool's new connections tell about a pooler in front of the server.

    The manager asks `watching` before it probes a new connection (`PROBE_QUERY`), tells
    `saw` what the probe found, and `forget` when it closes a connection. `saw` returns
    the one message to log (at most one INFO: a pooler, and one WARNING: a transaction
    pooler), else None. Thread-safe: connections are made and closed concurrently.
    """

    __slots__ = ("_finding", "_lock", "_looks", "_served_by", "_where")

    #: Connections looked at behind a pooler before giving up on seeing its mode.
    MAX_LOOKS = 64

    def __init__(self, where: str) -> None:
        self._where = where
        self._lock = threading.Lock()
        self._finding = Finding.UNKNOWN
        self._looks = 0
        #: The server process each open connection was served by, by connection key.
        self._served_by: dict[int, int] = {}

    @property
    def finding(self) -> Finding:
        """What is known so far."""
        return self._finding

    @property
    def watching(self) -> bool:
        """True while a new connection may still tell something."""
        return self._finding in (Finding.UNKNOWN, Finding.POOLER)

    def saw(self, key: int, announced_pid: int, server_pid: int) -> tuple[int, str] | None:
        """Record that connection `key` announced `announced_pid` and was served by
        `server_pid`; return ``(level, message)`` to log, or None."""
        with self._lock:
            if not self.watching:
                return None
            if announced_pid == server_pid:
                if self._finding is Finding.UNKNOWN:
                    self._settle(Finding.SERVER)
                return None
            self._looks += 1
            sharing = [other for other, pid in self._served_by.items() if pid == server_pid]
            self._served_by[key] = server_pid
            if sharing:
                self._settle(Finding.TRANSACTION_POOLER)
                return logging.WARNING, (
                    f"{self._where} is a transaction pooler: two open connections of this"
                    f" pool were served by one server session (process {server_pid}), so"
                    " session state does not survive a transaction there, and psycopg's"
                    ' automatic prepared statements fail ("prepared statement ... does not'
                    ' exist" / "already exists"): pass transaction_pooler=True (or set'
                    f" PGFLEET_TRANSACTION_POOLER=1); see {DOCS}"
                )
            first = self._finding is Finding.UNKNOWN
            self._finding = Finding.POOLER
            if self._looks >= self.MAX_LOOKS:
                self._settle(Finding.GAVE_UP)
            if first:
                return logging.INFO, (
                    f"{self._where} answers through a connection pooler (it announced"
                    f" process {announced_pid}, the server process is {server_pid}); if it"
                    " pools by transaction (PgBouncer pool_mode=transaction, Supavisor's"
                    " transaction port...), pass transaction_pooler=True"
                )
            return None

    def forget(self, key: int) -> None:
        """Connection `key` is being closed."""
        if self._served_by:  # empty once settled: no lock on the common path
            with self._lock:
                self._served_by.pop(key, None)

    def give_up(self) -> None:
        """The probe cannot run here: stop watching."""
        with self._lock:
            if self.watching:
                self._settle(Finding.GAVE_UP)

    def _settle(self, finding: Finding) -> None:
        self._finding = finding
        self._served_by.clear()


def _version(number: int) -> str:
    return f"{number // 10000}.{number % 100}"
