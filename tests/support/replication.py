"""Streaming-replication clusters for the test suite: a primary and streaming standbys.

Built from the throwaway clusters of :mod:`support.cluster`. A session-wide *replication
template* (:func:`build_replication_template`: one copy of the ordinary template, one start)
adds what replication needs: a ``replicator`` role with ``REPLICATION``, a ``replication``
line in ``pg_hba.conf`` for ``127.0.0.1`` and the settings of :data:`REPLICATION_CONF`, kept
in ``postgresql.auto.conf`` so that every copy and every base backup carries them.

A :class:`Replication` owns its nodes (:class:`PgNode`, a :class:`PgCluster` that can also be
a standby). The first node is copied from the template and started as the primary; each
standby is a ``pg_basebackup -R -X stream`` of the current primary into its own directory,
with its own port and socket written over the copied harness settings::

    with Replication(repl_template, standbys=1) as rs:
        primary, standby = rs.primary, rs.standbys[0]
        rs.wait_replayed(standby)                   # all the primary wrote is visible there
        rs.crash(primary)
        rs.promote(standby)                         # returns once a write succeeds there
        rs.start_old_primary_as_writable(primary)   # split-brain: it is on timeline 1 again
        rs.restart_as_standby(primary, standby)     # fresh base backup of the new primary

Every operation waits for the event it promises (a write succeeds, a position is replayed, a
walreceiver streams from the right server) by polling the server every few milliseconds,
never by sleeping a guessed time. Costs and server behaviour measured on this machine kind
(PostgreSQL 15) are in docs/clusters-facts.md: a primary and one standby start in about
1 s, a promotion takes 0.1-0.3 s.

Durability: the nodes inherit the harness's ``synchronous_commit=off``, so a crash may lose
the last commits. A scenario that must find its acknowledged writes after a failover writes
with ``synchronous_commit=on`` (the write ledger in :mod:`support.ledger` does) *and* names a
synchronous standby (:meth:`Replication.set_synchronous`): otherwise a commit waits for the
primary's disk only, and an asynchronous standby may lack the last acknowledged commits of a
crashed primary -- the loss a failover test must be able to see.

Re-targeting: a standby follows a new primary only if it has not replayed past the fork
point. One that kept streaming from an old primary restarted as writable has diverged
("new timeline N forked off current database system timeline N-1 before current recovery
point") and needs :meth:`Replication.restart_as_standby`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from support.cluster import (
    APP_DBNAME,
    APP_PASSWORD,
    APP_USER,
    HOST,
    ClusterError,
    PgCluster,
    _free_port,
)

__all__ = [
    "PATIENCE",
    "REPLICATION_CONF",
    "REPLICATOR",
    "Endpoint",
    "HasPort",
    "PgNode",
    "Replication",
    "build_replication_template",
    "format_lsn",
    "multi_host_conninfo",
    "parse_lsn",
    "timeline_of_walfile",
]

T = TypeVar("T")

REPLICATOR = "replicator"
REPLICATOR_PASSWORD = "harness-replicator-pw"
#: Server settings of every node. ``wal_level=replica``, ``max_wal_senders=10`` and
#: ``hot_standby=on`` are PostgreSQL's defaults, set anyway so a new default cannot break
#: the fixture silently.
REPLICATION_CONF: Mapping[str, object] = {
    "wal_level": "replica",
    "max_wal_senders": 10,
    "hot_standby": True,
    # A standby that was stopped for a moment catches up from the primary's pg_wal.
    "wal_keep_size": "64MB",
    # Standby feedback every 100 ms (default 10 s): pg_stat_replication stays fresh.
    "wal_receiver_status_interval": "100ms",
    # A standby whose primary went away retries every 100 ms (default 5 s): one repointed
    # at a new primary follows it at once.
    "wal_retrieve_retry_interval": "100ms",
    # The harness commits asynchronously: the WAL writer flushes, so the walsender can send,
    # every 10 ms instead of 200 ms (measured: a row reaches the standby in ~10 ms, not ~200).
    "wal_writer_delay": "10ms",
}
#: How long an operation waits for its event before it fails (generous: shared machine).
PATIENCE = 20.0
#: Poll interval of the waits (the awaited events typically arrive within milliseconds).
_POLL = 0.005
_WALFILE = re.compile(r"[0-9A-F]{24}")


def timeline_of_walfile(walfile: str) -> int:
    """The timeline of a WAL file name (``pg_walfile_name``): its first 8 hex digits."""
    if not _WALFILE.fullmatch(walfile):
        raise ValueError(f"not a WAL file name: {walfile!r}")
    return int(walfile[:8], 16)


def parse_lsn(lsn: str) -> int:
    """``'16/B374D848'`` -> an int that orders like the server's ``pg_lsn``."""
    hi, lo = lsn.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def format_lsn(value: int) -> str:
    """The inverse of :func:`parse_lsn`."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def wait_for(what: str, probe: Callable[[], T | None], node: PgCluster, timeout: float) -> T:
    """Call ``probe`` every few ms until it returns something other than None; raise a
    :class:`ClusterError` with ``node``'s log tail when ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise node._error(f"{what}: not within {timeout}s", None, "")
        time.sleep(_POLL)


def _replication_conninfo(source: PgCluster, standby_port: int) -> str:
    return make_conninfo(
        "",
        host=HOST,
        port=source.port,
        user=REPLICATOR,
        password=REPLICATOR_PASSWORD,
        # The walsender's name on the primary (pg_stat_replication, synchronous_standby_names).
        application_name=f"node{standby_port}",
        connect_timeout=10,
    )


def build_replication_template(template: PgCluster) -> PgNode:
    """A stopped copy of ``template`` ready to be a primary (role, pg_hba line, settings).

    About 0.5-1 s, once per session; each :class:`Replication` then copies it.
    """
    node = PgNode.from_template(template)
    try:
        node.start()
        node.execute(
            sql.SQL("CREATE ROLE {} LOGIN REPLICATION PASSWORD {}").format(
                sql.Identifier(REPLICATOR), sql.Literal(REPLICATOR_PASSWORD)
            )
        )
        node.set_config(**REPLICATION_CONF)
        node.write_hba(
            [
                "local all all scram-sha-256",
                f"host all all {HOST}/32 scram-sha-256",
                f"host replication {REPLICATOR} {HOST}/32 scram-sha-256",
            ]
        )
        node.stop()
        # As in PgCluster.build_template: a copy must not reuse the template's postmaster.opts.
        (node.data_dir / "postmaster.opts").unlink(missing_ok=True)
    except BaseException:
        node.destroy()
        raise
    return node


class HasPort(Protocol):
    """Anything with a ``port`` on 127.0.0.1 (a :class:`PgCluster`, a proxy...)."""

    @property
    def port(self) -> int: ...


@dataclass(frozen=True)
class Endpoint:
    """A bare port on 127.0.0.1, for a conninfo host that is not a cluster."""

    port: int

    @classmethod
    def unused(cls) -> Endpoint:
        """A port nothing listens on (just freed by the OS): connections are refused."""
        return cls(_free_port())


def multi_host_conninfo(nodes: Sequence[HasPort], **params: Any) -> str:
    """One libpq conninfo listing ``nodes`` in order (``host=127.0.0.1,127.0.0.1
    port=P1,P2``) for the ``app`` user unless ``params`` say otherwise (``None`` drops a
    default). Built with ``make_conninfo``, never by concatenation."""
    if not nodes:
        raise ValueError("multi_host_conninfo needs at least one node")
    base: dict[str, Any] = {
        "host": ",".join(HOST for _ in nodes),
        "port": ",".join(str(node.port) for node in nodes),
        "dbname": APP_DBNAME,
        "user": APP_USER,
        "password": APP_PASSWORD,
    }
    base.update(params)
    return make_conninfo("", **{k: v for k, v in base.items() if v is not None})


class PgNode(PgCluster):
    """A :class:`PgCluster` that can be a primary or a streaming standby."""

    @classmethod
    def from_basebackup(cls, source: PgCluster) -> PgNode:
        """A new, stopped standby of the running ``source`` (``pg_basebackup -R -X stream``,
        0.3-0.4 s for a small cluster)."""
        node = cls(
            source.bin_dir,
            password=source.password,
            max_connections=source.max_connections,
        )
        node._make_dir()
        try:
            node._basebackup_from(source)
        except BaseException:
            node.destroy()
            raise
        node._bootstrapped = True
        return node

    def _basebackup_from(self, source: PgCluster) -> None:
        """Fill the (absent) data directory with a base backup of ``source``, as a standby."""
        self._run(
            [
                str(self.bin_dir / "pg_basebackup"),
                "-D",
                str(self.data_dir),
                "-d",
                _replication_conninfo(source, self.port),
                "-R",  # standby.signal + primary_conninfo in postgresql.auto.conf
                "-X",
                "stream",
                "-c",
                "fast",  # an immediate checkpoint: a spread one takes minutes
                "--no-sync",
            ],
            timeout=60,
            what="pg_basebackup",
        )
        # The copy carries the source's harness settings: its port and socket directory.
        self._write_harness_conf()

    # ---- state -----------------------------------------------------------------------------

    def connect_superuser(self, dbname: str = "postgres") -> psycopg.Connection[tuple[Any, ...]]:
        """A new autocommit superuser connection over the node's Unix socket."""
        return self._connect(dbname)

    def in_recovery(self) -> bool:
        """``pg_is_in_recovery()``: True on a standby."""
        [(value,)] = self.execute("SELECT pg_is_in_recovery()")
        return bool(value)

    def is_standby_configured(self) -> bool:
        """Whether the data directory says "start as a standby" (``standby.signal``)."""
        return (self.data_dir / "standby.signal").exists()

    def timeline(self) -> int:
        """The node's timeline now.

        A primary: ``pg_walfile_name(pg_current_wal_lsn())`` (exact, right after a
        promotion too). A standby: its walreceiver's ``received_tli``; with no walreceiver,
        the last restartpoint's timeline (``pg_control_checkpoint()``, which may lag).
        """
        row = self.execute(
            "SELECT CASE WHEN NOT pg_is_in_recovery()"
            " THEN pg_walfile_name(pg_current_wal_lsn()) END,"
            " (SELECT received_tli FROM pg_stat_wal_receiver),"
            " (pg_control_checkpoint()).timeline_id"
        )[0]
        walfile, received_tli, checkpoint_tli = row
        if walfile is not None:
            return timeline_of_walfile(walfile)
        return int(received_tli if received_tli is not None else checkpoint_tli)

    def lsn(self) -> int:
        """The WAL position: everything inserted (primary) or replayed (standby).

        On a primary this is ``pg_current_wal_insert_lsn()``, not ``pg_current_wal_lsn()``
        (the *write* position, behind commits made with ``synchronous_commit=off``), and it
        first makes sure that position gets flushed: the WAL writer flushes full pages and
        asynchronous commits only, so other records in a partial page (a running-xacts
        record) could wait ~15 s to reach a standby (measured).
        """
        with self.connect_superuser() as conn:
            row = conn.execute(
                "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery()"
                " THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_insert_lsn() END::text"
            ).fetchone()
            assert row is not None
            in_recovery, lsn = row
            if not in_recovery:
                # A local synchronous commit flushes all WAL up to its commit record;
                # `local` so that it never waits for a synchronous standby.
                conn.execute("SET synchronous_commit = local")
                with conn.transaction():
                    conn.execute("SELECT pg_current_xact_id()")
        return parse_lsn(lsn)

    def timeline_history(self) -> list[tuple[int, int]]:
        """``(ancestor timeline, LSN where it was left)`` for each ancestor of the current
        timeline, oldest first, from the ``NNNNNNNN.history`` file (empty on timeline 1)."""
        tli = self.timeline()
        if tli == 1:
            return []
        [(text,)] = self.execute("SELECT pg_read_file(%s)", f"pg_wal/{tli:08X}.history")
        history = []
        for line in str(text).splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0].isdigit():
                history.append((int(fields[0]), parse_lsn(fields[1])))
        return history

    def crash(self) -> None:
        """Immediate shutdown, like ``pg_ctl stop -m immediate`` (the same SIGQUIT), but
        returns as soon as the postmaster is gone instead of on pg_ctl's 100 ms ticks."""
        if not self._quit_postmaster():
            super().crash()

    def destroy(self) -> None:
        """Immediate shutdown (the data is thrown away anyway), then remove. Idempotent."""
        if self._dir is not None:
            self._quit_postmaster()
        super().destroy()

    def _quit_postmaster(self, timeout: float = PATIENCE) -> bool:
        """SIGQUIT our postmaster and wait until it removed ``postmaster.pid`` (its last
        act). False when there is no such postmaster or it outlived ``timeout``."""
        if not self.data_dir.exists():
            return False
        pid = self.postmaster_pid()
        if pid is None or not self._is_our_postmaster(pid):
            return False
        self._resume_if_paused()  # a stopped process cannot act on SIGQUIT
        try:
            os.kill(pid, signal.SIGQUIT)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while self.postmaster_pid() == pid and time.monotonic() < deadline:
            time.sleep(_POLL)
        return self.postmaster_pid() != pid

    def _is_our_postmaster(self, pid: int) -> bool:
        # Our binary *and* running in our data directory: a pid left in a stale
        # postmaster.pid may since belong to another test's server.
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            return False
        return self._is_our_postgres(pid) and Path(cwd) == self.data_dir


def _writable(node: PgNode) -> bool | None:
    """True once ``node`` is out of recovery and can assign a transaction id (a write)."""
    try:
        with node.connect_superuser() as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            if row is None or row[0]:
                return None
            conn.execute("SELECT pg_current_xact_id()")  # 25006 during recovery
            return True
    except psycopg.Error:
        return None


class Replication:
    """A primary and its streaming standbys; owns and destroys every node it made."""

    def __init__(self, template: PgCluster, *, standbys: int = 1) -> None:
        """Start a primary copied from ``template`` (see :func:`build_replication_template`)
        and ``standbys`` streaming standbys of it, each caught up when this returns."""
        self.template = template
        #: Every node made, in creation order (the first was the first primary).
        self.nodes: list[PgNode] = []
        self._primary: PgNode | None = None
        try:
            primary = PgNode.from_template(template)
            self.nodes.append(primary)
            primary.start()
            self._primary = primary
            self.add_standbys(standbys)
        except BaseException:
            self.destroy()
            raise

    def __repr__(self) -> str:
        roles = ", ".join(
            f"{'primary' if n is self._primary else 'node'}:{n.port}" for n in self.nodes
        )
        return f"<Replication {roles}>"

    # ---- topology --------------------------------------------------------------------------

    @property
    def primary(self) -> PgNode:
        """The node the fixture last made primary (after :meth:`promote`, the promoted one)."""
        if self._primary is None:
            raise ClusterError("the replication set has no primary")
        return self._primary

    @property
    def standbys(self) -> list[PgNode]:
        """Every node but :attr:`primary`, in creation order (running or not)."""
        return [node for node in self.nodes if node is not self._primary]

    def add_standby(self, source: PgNode | None = None) -> PgNode:
        """A new started standby streaming from ``source`` (default: the primary), caught
        up with it."""
        [node] = self.add_standbys(1, source)
        return node

    def add_standbys(self, count: int, source: PgNode | None = None) -> list[PgNode]:
        """``count`` new standbys of ``source`` (default: the primary), made in parallel
        (base backup, start), each streaming and caught up when this returns."""
        source = source if source is not None else self.primary
        if count <= 0:
            return []

        def make() -> PgNode:
            node = PgNode.from_basebackup(source)
            try:
                node.start()
            except BaseException:
                node.destroy()
                raise
            return node

        with ThreadPoolExecutor(count) as pool:
            futures = [pool.submit(make) for _ in range(count)]
        failures: list[BaseException] = []
        made: list[PgNode] = []
        for future in futures:
            exc = future.exception()
            if exc is None:
                made.append(future.result())
            else:
                failures.append(exc)
        self.nodes.extend(made)  # destroyed with the set even if a sibling failed
        if failures:
            raise failures[0]
        for node in made:
            self.wait_streaming(node, source)
        return made

    # ---- operations ------------------------------------------------------------------------

    def promote(self, standby: PgNode, timeout: float = PATIENCE) -> float:
        """``pg_ctl promote``, then wait until ``pg_is_in_recovery()`` is false and a write
        succeeds there; it becomes :attr:`primary`. Returns how many seconds that took."""
        start = time.monotonic()
        # -W: the wait is ours, on the event that matters (a write succeeds).
        standby._pg_ctl("promote", "-W", timeout=timeout)
        wait_for("the promoted node accepts writes", lambda: _writable(standby), standby, timeout)
        self._primary = standby
        return time.monotonic() - start

    def crash(self, node: PgNode) -> None:
        """``pg_ctl stop -m immediate``: no shutdown checkpoint, the next start recovers."""
        node.crash()

    def stop(self, node: PgNode) -> None:
        """A clean (fast) shutdown."""
        node.stop("fast")

    def start(self, node: PgNode) -> None:
        """Start ``node`` as its data directory says (primary, or standby if it has
        ``standby.signal``) and wait until it accepts connections."""
        node.start()

    def start_old_primary_as_writable(self, node: PgNode, timeout: float = PATIENCE) -> None:
        """Start a stopped former primary as it was: writable, on its old timeline, while
        another node is primary. Split-brain on purpose; :attr:`primary` does not change."""
        if node.is_standby_configured():
            raise ClusterError(f"{node!r} is configured as a standby, not an old primary")
        node.start()
        wait_for("the old primary accepts writes", lambda: _writable(node), node, timeout)

    def restart_as_standby(self, node: PgNode, new_primary: PgNode) -> None:
        """Make ``node`` (typically the old primary) a started standby of ``new_primary`` on
        the same port: a fresh ``pg_basebackup`` into its data directory, so whatever it had
        that the new primary lacks is gone. Waits until it streams and has caught up.

        (``pg_rewind`` would take 0.1 s instead of 0.3-0.4 s, but needs
        ``full_page_writes=on`` on the source and ``wal_log_hints`` or checksums on the
        target, and copies the source's configuration files: not worth it here.)
        """
        node.crash()  # no-op when stopped; its data is about to go anyway
        shutil.rmtree(node.data_dir)
        node._basebackup_from(new_primary)
        node.start()
        self.wait_streaming(node, new_primary)

    def follow(self, standby: PgNode, new_primary: PgNode, timeout: float = PATIENCE) -> None:
        """Repoint a running standby at ``new_primary`` (``primary_conninfo`` + reload);
        ``recovery_target_timeline=latest`` makes it follow the timeline switch. Waits until
        it streams from ``new_primary`` on its timeline and has caught up."""
        standby.set_config(primary_conninfo=_replication_conninfo(new_primary, standby.port))
        self.wait_streaming(standby, new_primary, timeout)

    def set_synchronous(self, standbys: Sequence[PgNode], timeout: float = PATIENCE) -> None:
        """Make the primary's commits (with ``synchronous_commit`` on) wait for the first
        running one of ``standbys`` (``synchronous_standby_names = 'FIRST 1 (...)'``); an
        empty list makes replication asynchronous again. Waits until the primary reports a
        synchronous standby. Only the primary's own setting changes: a standby promoted
        later does not inherit it."""
        primary = self.primary
        if not standbys:
            primary.set_config(synchronous_standby_names=None)
            return
        names = ", ".join(f'"node{node.port}"' for node in standbys)
        primary.set_config(synchronous_standby_names=f"FIRST 1 ({names})")

        def has_sync() -> bool | None:
            rows = primary.execute("SELECT 1 FROM pg_stat_replication WHERE sync_state = 'sync'")
            return True if rows else None

        wait_for("a synchronous standby", has_sync, primary, timeout)

    def set_apply_delay(self, standby: PgNode, ms: int) -> None:
        """Set ``recovery_min_apply_delay`` (ALTER SYSTEM + reload; 0 removes it): from then
        on ``standby`` replays a commit ``ms`` after the primary's commit time. WAL is still
        received at once (``pg_last_wal_receive_lsn`` advances, the replay LSN waits)."""
        standby.set_config(recovery_min_apply_delay=f"{int(ms)}ms" if ms else None)

    def wait_replayed(
        self, standby: PgNode, lsn: int | None = None, timeout: float = PATIENCE
    ) -> int:
        """Wait until ``standby`` has replayed ``lsn`` (default: all the primary has
        inserted so far, see :meth:`PgNode.lsn`); return its replay LSN."""
        target = self.primary.lsn() if lsn is None else lsn

        def replayed(conn: psycopg.Connection[Any]) -> int | None:
            row = conn.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()
            if row is None or row[0] is None:
                return None
            got = parse_lsn(row[0])
            return got if got >= target else None

        with standby.connect_superuser() as conn:
            what = f"the standby replays {format_lsn(target)}"
            return wait_for(what, lambda: replayed(conn), standby, timeout)

    def wait_streaming(self, standby: PgNode, source: PgNode, timeout: float = PATIENCE) -> None:
        """Wait until ``standby``'s walreceiver streams from ``source`` on ``source``'s
        timeline, then until it has replayed ``source``'s current position."""
        tli = source.timeline()

        def streaming(conn: psycopg.Connection[Any]) -> bool | None:
            row = conn.execute(
                "SELECT status, received_tli, sender_port FROM pg_stat_wal_receiver"
            ).fetchone()
            ok = row is not None and row == ("streaming", tli, source.port)
            return True if ok else None

        with standby.connect_superuser() as conn:
            what = f"streaming from port {source.port}"
            wait_for(what, lambda: streaming(conn), standby, timeout)
        if not source.in_recovery():
            self.wait_replayed(standby, source.lsn(), timeout)

    # ---- connection strings ----------------------------------------------------------------

    def conninfo(self, nodes: Sequence[HasPort] | None = None, **params: Any) -> str:
        """:func:`multi_host_conninfo` of ``nodes`` (default: every node, creation order)."""
        return multi_host_conninfo(self.nodes if nodes is None else nodes, **params)

    # ---- lifetime --------------------------------------------------------------------------

    def destroy(self) -> None:
        """Stop and remove every node. Idempotent."""
        errors: list[Exception] = []
        for node in reversed(self.nodes):
            try:
                node.destroy()
            except Exception as exc:
                errors.append(exc)
        self.nodes.clear()
        self._primary = None
        if errors:
            raise errors[0]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()
