"""``pgfleet check [CONNINFO]``: wait for the database, then say how the pool connects to it.

For container start-up and health checks. Waits (with back-off, up to ``--timeout``) until
a connection succeeds, showing a live status line on stderr (the attempt, its error with
secrets redacted, the next retry); then prints the server version, the authentication
method, the TLS report of `pgfleet.tls_info`, whether a connection pooler answers (and
whether it shares server sessions: transaction mode), the connection budget (the server's
``max_connections``, the reserved slots, the connections in use by ``application_name``,
and with ``--replicas N --max-size M`` whether N replicas fit), the time to open a
connection and the time of a query on a pooled one. ``--json`` prints one JSON object on
stdout instead.

Exit codes: 0 reachable; 1 not reachable within the timeout (or an error waiting cannot
heal, such as a wrong password or a certificate that does not verify); 2 bad input, an
invalid connection string included (the reason is printed, at once); 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import psycopg
from psycopg.conninfo import make_conninfo

from pgfleet import tls
from pgfleet._async.pool import AsyncPool
from pgfleet._async.postgres import AsyncPostgresManager
from pgfleet._core import Backoff
from pgfleet._postgres.connect_errors import is_invalid_settings_error
from pgfleet._text import describe, hints
from pgfleet.cli._args import EXIT_USAGE, BadInput, bounded_int, safe, seconds

__all__ = ["EXIT_OK", "EXIT_UNREACHABLE", "EXIT_USAGE", "add_parser", "run"]

EXIT_OK = 0
EXIT_UNREACHABLE = 1
EXIT_INTERRUPTED = 130

DEFAULT_TIMEOUT = 30.0
MAX_TIMEOUT = 24 * 3600.0
#: The most one connection attempt may take (the deadline cuts it shorter).
ATTEMPT_TIMEOUT = 10.0
BACKOFF = Backoff(0.1, 2.0)
#: Seconds kept for a last attempt before the deadline (a refused connection takes ~1 ms).
LAST_ATTEMPT = 0.05
#: Pooled queries timed; the median is reported.
POOLED_QUERIES = 20
#: How often the live status line is redrawn while waiting (on a terminal).
REFRESH = 0.2
#: libpq's answer to ``require_auth=none`` names what the server asked for.
_AUTH_REQUESTS = {
    "SASL authentication": "scram-sha-256",
    "a hashed password": "md5",
    "a cleartext password": "password (cleartext: password, ldap, radius, pam or bsd)",
    "GSSAPI authentication": "gss",
    "SSPI authentication": "sspi",
}
#: Files libpq reads when they are named; a typo makes it skip them silently.
_FILE_SETTINGS = ("sslrootcert", "sslcert", "sslkey", "sslcrl", "sslcrldir")
#: The sizing rule the budget report suggests, and where it comes from.
SIZING_SOURCE = (
    "HikariCP, 'About Pool Sizing':"
    " https://github.com/brettwooldridge/HikariCP/wiki/About-Pool-Sizing"
)
#: The server's connection slots (``reserved_connections`` is PostgreSQL 16+).
_SLOTS_QUERY = (
    "SELECT current_setting('max_connections')::int,"
    " current_setting('superuser_reserved_connections')::int,"
    " coalesce(current_setting('reserved_connections', true), '0')::int"
)
#: Client connections by application_name. Without pg_read_all_stats, another role's
#: backend_type is hidden (NULL): counted as a client when it is connected to a database
#: (the server's own processes are not, autovacuum workers aside).
_IN_USE_QUERY = (
    "SELECT coalesce(application_name, ''), count(*), count(*) FILTER (WHERE backend_type"
    " IS NULL) FROM pg_stat_activity WHERE datname IS NOT NULL"
    " AND coalesce(backend_type, 'client backend') = 'client backend'"
    " GROUP BY 1 ORDER BY 2 DESC, 1"
)


def add_parser(subparsers: Any) -> None:
    """Register the ``check`` subcommand on an argparse subparsers object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "check",
        usage=(
            "pgfleet check [-h] [--timeout S] [--json] [-q] [--retry-all-errors]"
            " [--replicas N --max-size M] [--server-cores C] [CONNINFO]"
        ),
        help="wait for the database, then report its version, authentication, TLS, pooler,"
        " connection budget and timings",
        description=(
            "Wait (with back-off) until the database accepts a connection, then print the"
            " server version, the authentication method, what the connection's TLS"
            " guarantees, whether a connection pooler answers, the connection budget"
            " (max_connections, reserved slots, connections in use by application_name;"
            " with --replicas and --max-size, whether that many pools fit), the time to"
            " connect and the time of a pooled query. Exit 0 when reachable, 1 when not"
            " within --timeout (or on an error waiting cannot heal), 2 for bad input (an"
            " invalid connection string included)."
        ),
    )
    parser.add_argument(
        "conninfo",
        nargs="*",  # more than one is reported without echoing them (they may hold passwords)
        metavar="CONNINFO",
        help="postgresql:// URL or key=value conninfo (default: DATABASE_URL, else libpq's"
        " PG* variables)",
    )
    parser.add_argument(
        "--timeout",
        type=seconds(MAX_TIMEOUT),
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"seconds to wait for the database (default: {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("-q", "--quiet", action="store_true", help="no status line on stderr")
    parser.add_argument(
        "--retry-all-errors",
        action="store_true",
        help="keep waiting on errors that usually need a fix (wrong password, unknown"
        " database, TLS verification), e.g. while the database is being provisioned",
    )
    parser.add_argument(
        "--replicas",
        type=bounded_int(1, 100_000),
        metavar="N",
        help="how many copies of the application will run, each with one pool (with"
        " --max-size): do they fit in the server's free connection slots?",
    )
    parser.add_argument(
        "--max-size",
        type=bounded_int(1, 100_000),
        metavar="M",
        help="the max_size of each replica's pool (with --replicas)",
    )
    parser.add_argument(
        "--server-cores",
        type=bounded_int(1, 65_536),
        metavar="C",
        help="the database server's CPU cores, for the sizing suggestion (default: this"
        " machine's when the server is local, else the formula only)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``pgfleet check`` with parsed arguments; return the exit code."""
    report = Report(json_output=args.json, quiet=args.quiet)
    try:
        if len(args.conninfo) > 1:
            raise BadInput(
                f"expected at most one CONNINFO, got {len(args.conninfo)} arguments (not shown:"
                " they may hold passwords); quote a key=value conninfo as one argument"
            )
        if (args.replicas is None) != (args.max_size is None):
            raise BadInput("--replicas and --max-size go together: N replicas of a pool of M")
        conninfo = args.conninfo[0] if args.conninfo else None
        try:
            # transaction_pooler=True: the check may be talking to one, and it probes for
            # a pooler itself (`Checker._pooler`).
            manager = AsyncPostgresManager(conninfo, warn_unverified=False, transaction_pooler=True)
        except (ValueError, TypeError) as exc:
            raise BadInput(str(exc)) from None
        checker = Checker(
            manager,
            args.timeout,
            args.retry_all_errors,
            report,
            sizing=Sizing(args.replicas, args.max_size, args.server_cores),
        )
        return asyncio.run(checker.run())
    except BadInput as exc:
        report.bad_input(safe(str(exc)))
        return EXIT_USAGE
    except KeyboardInterrupt:
        report.status_clear()
        return EXIT_INTERRUPTED


@dataclass
class Report:
    """Where the results go: human lines (stdout), status lines (stderr) or JSON."""

    json_output: bool
    quiet: bool
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    _status_shown: bool = False

    @property
    def live(self) -> bool:
        """A terminal: redraw one status line in place."""
        return not self.quiet and self.err.isatty()

    def status(self, line: str, *, final: bool) -> None:
        """Show a status line: redrawn in place on a terminal, one line per attempt else."""
        if self.quiet:
            return
        if self.live:
            self.err.write(f"\r\x1b[K{line}")
            self._status_shown = True
        elif final:
            self.err.write(f"{line}\n")
        self.err.flush()

    def status_clear(self) -> None:
        if self._status_shown:
            self.err.write("\r\x1b[K")
            self.err.flush()
            self._status_shown = False

    def bad_input(self, reason: str) -> None:
        self.status_clear()
        print(f"pgfleet check: error: {reason}", file=self.err)
        if self.json_output:
            self.emit({"ok": False, "exit_code": EXIT_USAGE, "error": reason})

    def emit(self, document: dict[str, Any]) -> None:
        print(json.dumps(document, indent=2, sort_keys=False), file=self.out)


@dataclass(frozen=True)
class Sizing:
    """What the budget is checked against: ``--replicas``, ``--max-size``, ``--server-cores``."""

    replicas: int | None = None
    max_size: int | None = None
    server_cores: int | None = None


class Checker:
    """One ``pgfleet check`` run: wait, then inspect."""

    def __init__(
        self,
        manager: AsyncPostgresManager,
        timeout: float,
        retry_all: bool,
        report: Report,
        sizing: Sizing | None = None,
    ) -> None:
        self.manager = manager
        self.sizing = sizing or Sizing()
        self.target = manager.target
        self.where = manager.target.describe()
        self.timeout = timeout
        self.retry_all = retry_all
        self.report = report
        self.notes: list[str] = self._file_warnings()

    def _file_warnings(self) -> list[str]:
        """Named TLS files that do not exist: libpq would skip them without a word."""
        settings = tls.effective_settings(self.target.params)
        notes = []
        for key in _FILE_SETTINGS:
            value = settings.get(key)
            if value and value != "system" and not os.path.exists(value):
                notes.append(f"{key}={value!r} does not exist: libpq will not use it")
        return notes

    async def run(self) -> int:
        started = time.monotonic()
        deadline = started + self.timeout
        rng = random.Random()
        attempt = 0
        last_error = ""
        # The last error that was not a silence, and its hint: when the deadline leaves a
        # last attempt too little time for an answer, they say more than the silence.
        last_failure = ""
        hint: str | None = None
        for note in self.notes:
            print(f"pgfleet check: warning: {note}", file=self.report.err)
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            self.report.status(
                f"pgfleet check: {self.where}: attempt {attempt}"
                + (f" (last error: {last_error})" if last_error else "")
                + " ...",
                final=False,
            )
            attempt_started = time.monotonic()
            try:
                conn = await self.manager.connect(min(remaining, ATTEMPT_TIMEOUT))
            except (psycopg.Error, OSError) as exc:  # OSError: TimeoutError included
                if isinstance(exc, TimeoutError):
                    last_error = f"no answer within {min(remaining, ATTEMPT_TIMEOUT):.3g} s"
                    if last_failure:
                        last_error += f" (earlier: {last_failure})"
                else:
                    last_error = last_failure = describe(exc, redact=self.manager.redact)
                    hint = next(iter(hints(exc)), None)
                if is_invalid_settings_error(exc):  # before any traffic: not an outage
                    raise BadInput(
                        f"libpq refused the connection settings: {last_error}; correct the"
                        " conninfo (or the PG* environment variable the setting comes from)"
                    ) from None
                if not self.retry_all and self.manager.is_permanent(exc):
                    return self._unreachable(
                        attempt, started, last_error, hint, "waiting will not help"
                    )
                left = deadline - time.monotonic()
                if left <= LAST_ATTEMPT:
                    return self._unreachable(
                        attempt,
                        started,
                        last_error,
                        hint,
                        f"not reachable within {self.timeout:g} s",
                    )
                # Back off, but keep time for one last attempt before the deadline.
                delay = min(BACKOFF.delay(attempt, rng), left - LAST_ATTEMPT)
                await self._wait_showing(attempt, last_error, time.monotonic() + delay, deadline)
                continue
            connect_time = time.monotonic() - attempt_started
            try:
                return await self._inspect(conn, attempt, started, connect_time)
            finally:
                await self.manager.close(conn)

    async def _wait_showing(self, attempt: int, error: str, until: float, deadline: float) -> None:
        """Sleep until `until`, redrawing the status line with the countdown."""
        self.report.status(
            f"pgfleet check: {self.where}: attempt {attempt} failed: {error};"
            f" next try in {until - time.monotonic():.1f} s"
            f" ({max(deadline - time.monotonic(), 0):.1f} s left)",
            final=True,
        )
        while (left := until - time.monotonic()) > 0:
            await asyncio.sleep(min(left, REFRESH))
            if self.report.live:
                self.report.status(
                    f"pgfleet check: {self.where}: attempt {attempt} failed: {error};"
                    f" next try in {max(until - time.monotonic(), 0):.1f} s"
                    f" ({max(deadline - time.monotonic(), 0):.1f} s left)",
                    final=False,
                )

    def _unreachable(
        self, attempts: int, started: float, error: str, hint: str | None, why: str
    ) -> int:
        waited = time.monotonic() - started
        self.report.status_clear()
        err = self.report.err
        print(
            f"pgfleet check: {self.where}: {why} ({attempts} attempt(s) in {waited:.2f} s)",
            file=err,
        )
        print(f"  last error: {error}", file=err)
        if hint:
            print(f"  hint: {self.manager.redact(hint)}", file=err)
        if self.report.json_output:
            self.report.emit(
                {
                    "ok": False,
                    "exit_code": EXIT_UNREACHABLE,
                    "target": self.where,
                    "attempts": attempts,
                    "waited_s": round(waited, 3),
                    "error": error,
                    "hint": self.manager.redact(hint) if hint else None,
                }
            )
        return EXIT_UNREACHABLE

    async def _inspect(
        self, conn: psycopg.AsyncConnection[Any], attempts: int, started: float, connect: float
    ) -> int:
        waited = time.monotonic() - started
        self.report.status_clear()
        info = tls.tls_info(conn)
        warning = tls.unverified_warning(conn, self.where)
        method, source = await self._auth_method(conn, info)
        version = conn.info.parameter_status("server_version") or "unknown"
        pooler = await self._pooler(conn)
        budget = await self._budget(conn, info, behind_pooler=pooler["detected"] is True)
        pooled = await self._pooled_query_time()
        document: dict[str, Any] = {
            "ok": True,
            "exit_code": EXIT_OK,
            "target": self.where,
            "attempts": attempts,
            "waited_s": round(waited, 3),
            "server_version": version,
            "server_version_num": conn.info.server_version,
            "auth_method": method,
            "auth_method_source": source,
            "tls": info.as_dict(),
            "pooler": pooler,
            "budget": budget,
            "connect_ms": round(connect * 1000, 3),
            "pooled_query_ms": None if pooled is None else round(pooled * 1000, 3),
            "warnings": [
                *self.notes,
                *([warning] if warning else []),
                *([budget["warning"]] if budget.get("warning") else []),
            ],
        }
        if self.report.json_output:
            self.report.emit(document)
            return EXIT_OK
        out = self.report.out
        print(
            f"pgfleet check: {self.where} is reachable (attempt {attempts}, after {waited:.2f} s)",
            file=out,
        )
        rows = [
            ("server", f"PostgreSQL {version}"),
            ("auth", f"{method} (from {source})"),
            ("tls", str(info)),
            ("pooler", pooler["summary"]),
            *budget_rows(budget),
            ("connect", f"{connect * 1000:.1f} ms (new connection: network, TLS, authentication)"),
            (
                "pooled query",
                "unavailable"
                if pooled is None
                else f"{pooled * 1000:.2f} ms (SELECT 1 on a pooled connection,"
                f" median of {POOLED_QUERIES})",
            ),
        ]
        for label, value in rows:
            print(f"  {label:<13} {value}", file=out)
        for note in document["warnings"]:
            print(f"  warning: {note}", file=out)
        return EXIT_OK

    async def _auth_method(
        self, conn: psycopg.AsyncConnection[Any], info: tls.TLSInfo
    ) -> tuple[str, str]:
        """The authentication method and how it was found, or ``("unknown", why)``."""
        if conn.info.server_version >= 160000:
            try:
                cursor = await conn.execute("SELECT system_user")
                row = await cursor.fetchone()
                await conn.rollback()
            except psycopg.Error:
                row = None
                await conn.rollback()
            if row is not None and row[0]:
                return str(row[0]).split(":", 1)[0], "system_user"
        if psycopg.pq.version() >= 160000:
            found = await self._probe_auth_request(conn, info)
            if found is not None:
                return found, "libpq require_auth probe"
        if conn.pgconn.used_password:
            return "password-based (scram-sha-256, md5 or password)", "libpq used_password"
        return "unknown", "not visible to this client"

    async def _probe_auth_request(
        self, conn: psycopg.AsyncConnection[Any], info: tls.TLSInfo
    ) -> str | None:
        """Connect again with ``require_auth=none``: libpq stops at the server's first
        authentication request (before sending any credential) and names it."""
        probe = make_conninfo(self.target.conninfo, require_auth="none", channel_binding="disable")
        try:
            extra = await asyncio.wait_for(
                psycopg.AsyncConnection.connect(probe, connect_timeout=5), 6
            )
        except psycopg.OperationalError as exc:
            text = str(exc)
            for request, method in _AUTH_REQUESTS.items():
                if f"server requested {request}" in text:
                    return method
            return None
        except (TimeoutError, OSError):
            return None
        async with extra:
            client_dn = None
            if info.encrypted:
                cursor = await extra.execute(
                    "SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                )
                row = await cursor.fetchone()
                client_dn = row[0] if row else None
        if client_dn:
            return "cert (or trust): no password asked, a client certificate was presented"
        if info.local and info.host.startswith("/"):
            return "peer or trust: no password asked"
        return "trust: no password asked"

    async def _server_pid(self, conn: psycopg.AsyncConnection[Any]) -> int | None:
        """The process id of the server session that answers `conn` now, or None."""
        try:
            cursor = await conn.execute("SELECT pg_backend_pid()")
            row = await cursor.fetchone()
            await conn.rollback()
        except psycopg.Error:
            await _quiet_rollback(conn)
            return None
        return int(row[0]) if row is not None else None

    async def _pooler(self, conn: psycopg.AsyncConnection[Any]) -> dict[str, Any]:
        """Whether a pooler answers, and whether it shares server sessions between open
        connections (transaction mode); see `pgfleet._postgres.pooler` for the method."""
        announced = conn.info.backend_pid
        served_by = await self._server_pid(conn)
        found: dict[str, Any] = {
            "detected": None,
            "transaction_pooling": None,
            "announced_pid": announced,
            "server_pid": served_by,
        }
        if served_by is None:
            return {**found, "summary": "unknown (pg_backend_pid() did not answer)"}
        if served_by == announced:
            return {
                **found,
                "detected": False,
                "transaction_pooling": False,
                "summary": "none: the server answers itself (pg_backend_pid() is the process"
                " it announced)",
            }
        found["detected"] = True
        # A second connection while the first stays open: a transaction pooler hands it the
        # server session the first one just released; in session mode that one is taken.
        try:
            other = await self.manager.connect(ATTEMPT_TIMEOUT)
        except (psycopg.Error, OSError):
            other_pid = None
        else:
            try:
                other_pid = await self._server_pid(other)
            finally:
                await self.manager.close(other)
        prefix = (
            f"a connection pooler answers (it announced process {announced}, the server"
            f" process is {served_by})"
        )
        if other_pid == served_by:
            found["transaction_pooling"] = True
            summary = (
                f"{prefix}; it pools by transaction: a second open connection was served by"
                " the same server session. Use transaction_pooler=True"
                " (PGFLEET_TRANSACTION_POOLER=1)"
            )
        else:
            summary = (
                f"{prefix}; transaction pooling not seen: a second open connection got"
                " another server session (session mode, or a busy pooler). In transaction"
                " mode, use transaction_pooler=True (PGFLEET_TRANSACTION_POOLER=1)"
            )
        return {**found, "summary": summary}

    async def _budget(
        self, conn: psycopg.AsyncConnection[Any], info: tls.TLSInfo, *, behind_pooler: bool
    ) -> dict[str, Any]:
        """The server's connection slots, who uses them, and whether the sizing fits."""
        try:
            cursor = await conn.execute(_SLOTS_QUERY)
            slots = await cursor.fetchone()
            cursor = await conn.execute(_IN_USE_QUERY)
            rows = await cursor.fetchall()
            await conn.rollback()
        except psycopg.Error as exc:
            await _quiet_rollback(conn)
            return {"available": False, "error": describe(exc, redact=self.manager.redact)}
        assert slots is not None
        max_connections, superuser_reserved, reserved = (int(value) for value in slots)
        usable = max(max_connections - superuser_reserved - reserved, 0)
        by_application = {str(name): int(count) for name, count, _ in rows}
        in_use = sum(by_application.values())
        budget: dict[str, Any] = {
            "available": True,
            "max_connections": max_connections,
            "superuser_reserved_connections": superuser_reserved,
            "reserved_connections": reserved,
            "usable": usable,
            "in_use": in_use,
            "in_use_by_application": by_application,
            "in_use_hidden_type": sum(int(hidden) for _, _, hidden in rows),
            "free": max(usable - in_use, 0),
            "behind_pooler": behind_pooler,
        }
        sizing = self.sizing
        if sizing.replicas is not None and sizing.max_size is not None:
            needed = sizing.replicas * sizing.max_size
            budget.update(replicas=sizing.replicas, max_size=sizing.max_size, needed=needed)
            if behind_pooler:
                # The pools' connections go to the pooler; the server sees its server pools.
                budget.update(fits_now=None, fits_when_idle=None)
            else:
                budget.update(fits_now=needed <= budget["free"], fits_when_idle=needed <= usable)
                if not budget["fits_now"]:
                    budget["warning"] = (
                        f"{sizing.replicas} replicas x max_size {sizing.max_size} = {needed}"
                        f" connections do not fit in the {budget['free']} free slots now"
                        f" ({usable} usable of max_connections {max_connections})"
                    )
        cores = sizing.server_cores
        cores_source = "--server-cores"
        if cores is None and info.local:
            cores, cores_source = os.cpu_count(), "this machine's, the server being local"
        budget["suggestion"] = _sizing_suggestion(
            cores, cores_source, sizing.replicas, behind_pooler=behind_pooler
        )
        return budget

    async def _pooled_query_time(self) -> float | None:
        """The median time of ``SELECT 1`` through a warm pool of one connection."""
        pool: AsyncPool[Any] = AsyncPool(
            self.target.conninfo,
            kwargs=dict(self.target.connect_kwargs),
            min_size=1,
            max_size=1,
            timeout=ATTEMPT_TIMEOUT,
            warn_unverified=False,  # the TLS report says it already
            transaction_pooler=True,  # it may be talking to one: no prepared statements
            name="pgfleet-check",
        )
        try:
            async with pool:
                times = []
                for _ in range(POOLED_QUERIES):
                    began = time.perf_counter()
                    async with pool.connection() as conn:
                        await conn.execute("SELECT 1")
                    times.append(time.perf_counter() - began)
        except psycopg.Error:
            return None
        return statistics.median(times)


async def _quiet_rollback(conn: psycopg.AsyncConnection[Any]) -> None:
    """Roll back after a failed query; a connection that broke is left to the caller."""
    try:
        await conn.rollback()
    except psycopg.Error:
        pass


def _sizing_suggestion(
    cores: int | None, source: str, replicas: int | None, *, behind_pooler: bool
) -> dict[str, Any]:
    """HikariCP's rule of thumb, as a suggestion with its source."""
    rule = "connections = (core_count x 2) + effective_spindle_count"
    suggestion: dict[str, Any] = {"rule": rule, "source": SIZING_SOURCE, "cores": cores}
    if cores is None:
        suggestion["text"] = (
            f"suggestion: {rule}, busy connections server-wide, shared by all replicas"
            f" (pass --server-cores C for a number; {SIZING_SOURCE})"
        )
        return suggestion
    total = cores * 2 + 1  # one effective spindle: 0 when the data set is fully cached
    suggestion["connections"] = total
    text = (
        f"suggestion: about {total} busy connections server-wide = ({cores} cores x 2) + 1"
        f" spindle ({source}; {SIZING_SOURCE})"
    )
    if behind_pooler:
        text += (
            "; through a pooler, that sizes its server pool (PgBouncer's default_pool_size),"
            " and the client pools may be larger"
        )
    elif replicas is not None:
        per_replica = math.ceil(total / replicas)
        suggestion["max_size_per_replica"] = per_replica
        text += f"; over {replicas} replicas, max_size about {per_replica} each"
    suggestion["text"] = text
    return suggestion


def budget_rows(budget: dict[str, Any]) -> list[tuple[str, str]]:
    """The budget report as (label, text) rows of the human report."""
    if not budget.get("available"):
        return [("budget", f"unavailable ({budget.get('error', 'unknown error')})")]
    reserved = budget["superuser_reserved_connections"] + budget["reserved_connections"]
    rows = [
        (
            "budget",
            f"max_connections {budget['max_connections']}, {reserved} reserved"
            f" (superuser_reserved_connections {budget['superuser_reserved_connections']},"
            f" reserved_connections {budget['reserved_connections']}):"
            f" {budget['usable']} usable, {budget['free']} free now",
        )
    ]
    names = ", ".join(
        f"{name or '(no application_name)'} {count}"
        for name, count in budget["in_use_by_application"].items()
    )
    in_use = f"{budget['in_use']} connection(s): {names} (this check's own included)"
    if budget["in_use_hidden_type"]:
        in_use += (
            f"; {budget['in_use_hidden_type']} of another role, counted as clients (their"
            " type is hidden without pg_read_all_stats)"
        )
    rows.append(("in use", in_use))
    if "needed" in budget:
        what = (
            f"{budget['replicas']} x max_size {budget['max_size']} = {budget['needed']} connections"
        )
        if budget["behind_pooler"]:
            verdict = (
                "they go to the pooler, not the server: the pooler's max_client_conn must"
                " admit them; the server sees the pooler's server pools (default_pool_size"
                " per database and user)"
            )
        elif budget["fits_now"]:
            verdict = f"fit ({budget['free'] - budget['needed']} to spare of {budget['free']} free)"
        elif budget["fits_when_idle"]:
            verdict = (
                f"do NOT fit in the {budget['free']} free now (they would in the"
                f" {budget['usable']} usable of an idle server)"
            )
        else:
            verdict = f"do NOT fit: {budget['usable']} usable in all"
        rows.append(("replicas", f"{what}: {verdict}"))
    rows.append(("sizing", budget["suggestion"]["text"]))
    return rows
