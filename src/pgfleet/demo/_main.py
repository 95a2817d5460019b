"""The demo's main program: where to connect, signals, output, the comparison, serving.

Against ``--dsn`` (or ``DATABASE_URL``), or else a throwaway embedded PostgreSQL that is
removed on exit, Ctrl-C and SIGTERM included. Exit codes: 0 success, 1 runtime failure,
2 bad input (130/143 when interrupted by SIGINT/SIGTERM). The command line is
`pgfleet.cli.demo`'s.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any, TextIO

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgfleet import Pool, PoolStats
from pgfleet._postgres.connect_errors import is_invalid_settings_error
from pgfleet._postgres.conninfo import (
    check_params,
    describe_params,
    known_secrets,
    redact,
    secrets_in,
)
from pgfleet._text import describe
from pgfleet.cli._args import EXIT_USAGE, BadInput
from pgfleet.cli.demo import DEMO_EXTRA
from pgfleet.demo import _embedded, _workload
from pgfleet.demo._live import configured_hosts
from pgfleet.demo._workload import Progress, RunResult

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "Interrupted", "run"]

EXIT_OK = 0
EXIT_FAILURE = 1

#: Seconds one connection attempt may take (unless the DSN says otherwise).
CONNECT_TIMEOUT = 10
#: Seconds a pool checkout may wait.
CHECKOUT_TIMEOUT = 10.0
APPLICATION_NAME = "pgfleet-demo"

MODE_CONNECT = "new connection"
MODE_POOL = "pgfleet.Pool"


# -- signals ---------------------------------------------------------------------------


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: unwind (cleaning up) and exit with 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _SignalGate:
    """Turns SIGINT and SIGTERM into `Interrupted`, or holds them during critical sections."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._holding = 0
        self._previous: dict[int, Any] = {}

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Handle the signals for the block (only possible in the main thread)."""
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        try:
            yield
        finally:
            for number, previous in self._previous.items():
                signal.signal(number, previous)
            self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        if not self._holding:
            raise Interrupted(signum)

    @contextmanager
    def holding(self, *, then_raise: bool) -> Iterator[None]:
        """Hold the signals back in the block; with `then_raise`, raise one held after it."""
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
        if then_raise and self.received is not None and not self._holding:
            raise Interrupted(self.received)


# -- where to connect ------------------------------------------------------------------


class Failure(RuntimeError):
    """The demo failed at run time (exit 1)."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where the demo connects: the conninfo, a safe description, and secrets to redact."""

    conninfo: str
    description: str
    secrets: tuple[str, ...]
    #: The demo's own throwaway server: nothing to clean up in it, it goes entirely.
    embedded: bool = False

    @classmethod
    def from_dsn(cls, dsn: str, source: str, *, embedded: bool = False) -> Target:
        """Validate a user's DSN; raise `BadInput` (with the secrets redacted) if it is bad."""
        try:
            params = conninfo_to_dict(dsn)
            check_params(params, os.environ)  # what libpq would refuse at every attempt
            extra: dict[str, Any] = {}
            if "connect_timeout" not in params:
                extra["connect_timeout"] = CONNECT_TIMEOUT
            if "application_name" not in params:
                extra["application_name"] = APPLICATION_NAME
            if "target_session_attrs" not in params and len(configured_hosts(dsn, {})) > 1:
                # Several hosts: the demo's own connections (schema, table, the comparison)
                # go to the primary; the web service's cluster pool chooses per checkout.
                extra["target_session_attrs"] = "read-write"
            conninfo = make_conninfo(dsn, **extra)
        except (psycopg.ProgrammingError, ValueError) as exc:
            secrets = (*known_secrets({}, os.environ), *secrets_in(dsn))
            raise BadInput(f"invalid {source}: {redact(str(exc), secrets)}") from None
        return cls(conninfo, describe_params(params), known_secrets(params, os.environ), embedded)

    def redact(self, text: str) -> str:
        """`text` without this target's secrets."""
        return redact(text, self.secrets)


# -- output ----------------------------------------------------------------------------


class _Console:
    """Status lines and the live progress line on stderr, results on stdout."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err
        self.live = err.isatty()
        self._width = 0

    def say(self, message: str) -> None:
        """One status line on stderr (prefixed ``demo:``)."""
        self.clear()
        print(f"demo: {message}", file=self.err, flush=True)

    def progress(self, p: Progress) -> None:
        """Redraw the progress line (only on a terminal)."""
        if not self.live:
            return
        rate = p.requests / p.elapsed if p.elapsed > 0 else 0.0
        line = (
            f"  {p.mode:<15} {p.elapsed:5.1f}/{p.seconds:g} s  {p.requests:>8} requests"
            f"  {rate:>9.1f} req/s  {p.errors} errors"
        )
        self.err.write("\r" + line.ljust(self._width))
        self.err.flush()
        self._width = len(line)

    def clear(self) -> None:
        """Erase the progress line, if one is shown."""
        if self._width:
            self.err.write("\r" + " " * self._width + "\r")
            self.err.flush()
            self._width = 0


def _table(results: list[RunResult]) -> str:
    lines = [f"{'mode':<16}{'requests/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}"]
    for r in results:
        p50 = r.latency.quantile(0.50) * 1000
        p99 = r.latency.quantile(0.99) * 1000
        lines.append(f"{r.mode:<16}{r.rate:>12.1f}{p50:>10.2f}{p99:>10.2f}{r.errors:>8}")
    return "\n".join(lines)


def _report(console: _Console, connect: RunResult, pooled: RunResult, stats: PoolStats) -> None:
    out = console.out
    print(_table([connect, pooled]), file=out)
    print(file=out)
    if connect.rate > 0:
        ratio = pooled.rate / connect.rate
        print(f"speed-up: {ratio:.1f}x the requests/s of a new connection per request", file=out)
    else:
        print("speed-up: n/a (no request succeeded with a new connection per request)", file=out)
    print(
        f"pool stats: size={stats.size} checkouts={stats.checkouts}"
        f" waited={stats.checkouts_waited} max wait={stats.wait_time.maximum * 1000:.2f} ms"
        f" connections created={stats.connections_created}",
        file=out,
        flush=True,
    )


# -- the demo --------------------------------------------------------------------------


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the demo with parsed arguments; return the exit code."""
    console = _Console(out or sys.stdout, err or sys.stderr)
    gate = _SignalGate()
    code = EXIT_FAILURE
    try:
        with gate.installed():
            code = _run(args, console, gate)
    except Interrupted:
        pass
    except BadInput as exc:
        console.say(f"error: {exc}")
        code = EXIT_USAGE
    except Failure as exc:
        console.say(f"error: {exc}")
        code = EXIT_FAILURE
    if gate.received is not None:
        console.say(f"interrupted by {signal.Signals(gate.received).name}")
        return 128 + gate.received
    return code


def _run(args: argparse.Namespace, console: _Console, gate: _SignalGate) -> int:
    stack = ExitStack()  # the embedded server's removal, when there is one
    try:
        serving = getattr(args, "serve", False) or getattr(args, "serve_only", False)
        listener = _listen(args, stack) if serving else None  # a taken port fails first
        target = _target(args, console, gate, stack)
        table = _claim_schema(args, console, gate, target, stack)
        code = (
            EXIT_OK
            if getattr(args, "serve_only", False)
            else _compare(args, console, gate, target, table)
        )
        if listener is not None and code == EXIT_OK:
            code = _serve_people(args, console, gate, target, table, listener)
        return code
    finally:
        stack.close()


def _listen(args: argparse.Namespace, stack: ExitStack) -> socket.socket:
    """Bind the web service's port now, so that a taken port is reported at once."""
    try:
        from pgfleet.demo import _serve
    except ImportError as exc:
        raise BadInput(f"--serve needs {exc.name or 'starlette'}: {DEMO_EXTRA}") from None
    try:
        sock = _serve.listen(args.host, args.port)
    except OSError as exc:
        reason = (
            "the port is taken (is another server running? choose one with --port)"
            if exc.errno == errno.EADDRINUSE
            else exc.strerror or str(exc)
        )
        raise BadInput(f"cannot listen on {args.host}:{args.port}: {reason}") from None
    stack.callback(sock.close)
    return sock


def _serve_people(
    args: argparse.Namespace,
    console: _Console,
    gate: _SignalGate,
    target: Target,
    table: _workload.PeopleTable,
    sock: socket.socket,
) -> int:
    """Run the people web service on `sock` until SIGINT/SIGTERM."""
    from pgfleet.demo import _serve

    _prepare(target, table)
    # uvicorn takes SIGINT/SIGTERM while it serves and raises them again when it stops:
    # the gate holds them, then `Interrupted` unwinds (removing the embedded server).
    with gate.holding(then_raise=True):
        try:
            _serve.serve(
                target.conninfo,
                sock,
                pool_size=args.pool_size,
                table=table,
                announce=lambda url: console.say(f"serving on {url}"),
                redact=target.redact,
                open_timeout=CHECKOUT_TIMEOUT,
            )
        except _serve.ServeError as exc:
            raise Failure(target.redact(str(exc))) from None
    return EXIT_OK


def _target(
    args: argparse.Namespace, console: _Console, gate: _SignalGate, stack: ExitStack
) -> Target:
    """``--dsn``, else ``DATABASE_URL``, else a new embedded server (removed by `stack`)."""
    if args.dsn is not None:
        dsn, source = args.dsn, "--dsn"
    elif os.environ.get("DATABASE_URL"):
        dsn, source = os.environ["DATABASE_URL"], "DATABASE_URL"
    else:
        return _start_embedded(console, gate, stack)
    target = Target.from_dsn(dsn, source)
    console.say(f"using {source} ({target.description})")
    return target


def _compare(
    args: argparse.Namespace,
    console: _Console,
    gate: _SignalGate,
    target: Target,
    table: _workload.PeopleTable,
) -> int:
    """Run both modes against `target` and print the report."""
    workload = _prepare(target, table)
    connect = _run_mode(console, MODE_CONNECT, _connector(target.conninfo), workload, args)
    pool: Pool[psycopg.Connection[Any]] = Pool(
        target.conninfo,
        min_size=args.pool_size,
        max_size=args.pool_size,
        timeout=CHECKOUT_TIMEOUT,
        name="pgfleet-demo",
    )
    try:
        try:
            pool.open(wait=True, timeout=CHECKOUT_TIMEOUT)
        except psycopg.OperationalError as exc:  # PoolTimeout: the pool cannot fill
            raise Failure(f"the pool could not open: {target.redact(str(exc))}") from None
        pooled = _run_mode(console, MODE_POOL, pool.connection, workload, args)
        stats = pool.stats()
    finally:
        with gate.holding(then_raise=False):
            pool.close()
    console.clear()
    for result in (connect, pooled):
        if result.first_error is not None:
            console.say(f"{result.mode}: first error: {target.redact(result.first_error)}")
        if result.abandoned:
            console.say(f"{result.mode}: {result.abandoned} client(s) did not finish in time")
    _report(console, connect, pooled, stats)
    if not connect.requests or not pooled.requests:
        raise Failure("no request succeeded in at least one mode (see the errors above)")
    return EXIT_OK


def _start_embedded(console: _Console, gate: _SignalGate, stack: ExitStack) -> Target:
    """Start the embedded server, registering its removal on `stack`."""
    try:
        module = _embedded.load_module()
    except _embedded.EmbeddedMissing as exc:
        raise BadInput(str(exc)) from None
    server = _embedded.EmbeddedServer(module)

    def remove(
        exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        with gate.holding(then_raise=False):
            directory = server.directory
            try:
                server.close()
            except OSError as error:
                message = f"could not remove the embedded server: {error}"
                if exc is None:
                    raise Failure(message) from None
                console.say(f"error: {message}")  # and let the first error through
                return False
            console.say(f"stopped the embedded server and removed {directory}")
        return False

    stack.push(remove)
    with gate.holding(then_raise=True):
        directory = server.make_directory()
        console.say(f"embedded PostgreSQL directory: {directory}")
        console.say("starting the embedded PostgreSQL server ...")
        try:
            conninfo = server.start()
        except _embedded.EmbeddedError as exc:
            if gate.received is not None:
                raise Interrupted(gate.received) from None
            raise Failure(f"cannot start the embedded PostgreSQL server: {exc}") from None
    target = Target.from_dsn(conninfo, "embedded conninfo", embedded=True)
    console.say(f"embedded server ready ({target.description})")
    return target


def _connect(target: Target) -> psycopg.Connection[Any]:
    """A connection to `target`; `BadInput` or `Failure` (redacted) when there is none."""
    try:
        return psycopg.connect(target.conninfo)
    except psycopg.Error as exc:
        if is_invalid_settings_error(exc):  # refused before any traffic: not an outage
            raise BadInput(
                f"libpq refused the connection settings of {target.description}:"
                f" {describe(exc, redact=target.redact)}"
            ) from None
        raise Failure(
            f"cannot connect to {target.description}: {target.redact(str(exc).strip())}"
        ) from None


def _claim_schema(
    args: argparse.Namespace,
    console: _Console,
    gate: _SignalGate,
    target: Target,
    stack: ExitStack,
) -> _workload.PeopleTable:
    """Create the demo's schema and register its removal at exit on `stack` (unless
    ``--keep``, or the server is the embedded one, which goes entirely)."""
    schema: str = getattr(args, "schema", _workload.SCHEMA)
    keep: bool = getattr(args, "keep", False)
    table = _workload.PeopleTable.in_schema(schema)

    def drop(
        exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if keep:
            console.say(
                f"kept schema {schema!r} and its table {table.qualified_name!r}"
                f" (remove them with: DROP SCHEMA {_quoted(schema)} CASCADE)"
            )
            return False
        with gate.holding(then_raise=False):
            try:
                with psycopg.connect(target.conninfo) as conn:
                    dropped = _workload.drop_schema(conn, schema)
            except psycopg.Error as error:
                message = (
                    f"could not drop the schema {schema!r}: {target.redact(str(error).strip())}"
                )
                if exc is None:
                    raise Failure(message) from None
                console.say(f"error: {message}")  # and let the first error through
                return False
            if dropped:
                console.say(f"dropped schema {schema!r}")
        return False

    conn = _connect(target)
    try:
        # Created and its removal registered in one step: a signal in between would
        # leave the schema behind.
        with gate.holding(then_raise=True):
            with conn:
                _workload.create_schema(conn, schema)
            if not target.embedded:  # the embedded server goes entirely, schema and all
                stack.push(drop)
    except _workload.SchemaNotOurs as exc:
        raise BadInput(str(exc)) from None
    except psycopg.Error as exc:
        raise Failure(
            f"cannot create the schema {schema!r} on {target.description}:"
            f" {target.redact(str(exc).strip())}"
        ) from None
    if not target.embedded:
        what = "kept at exit: --keep" if keep else "dropped at exit; --keep keeps it"
        console.say(f"working in schema {schema!r} ({what})")
    elif keep:
        console.say("--keep keeps nothing here: the embedded server is removed at exit")
    return table


def _quoted(name: str) -> str:
    """`name` as a double-quoted SQL identifier, for a message to copy."""
    return '"' + name.replace('"', '""') + '"'


def _prepare(target: Target, table: _workload.PeopleTable) -> _workload.Workload:
    """Check the target answers, then create and seed the table (in its schema)."""
    conn = _connect(target)
    try:
        with conn:
            return _workload.prepare(conn, table)
    except (psycopg.Error, RuntimeError) as exc:
        raise Failure(
            f"cannot prepare the table {table.qualified_name!r} on {target.description}:"
            f" {target.redact(str(exc).strip())}"
        ) from None


def _connector(conninfo: str) -> _workload.ConnectionSource:
    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(conninfo)

    return connect


def _run_mode(
    console: _Console,
    mode: str,
    source: _workload.ConnectionSource,
    workload: _workload.Workload,
    args: argparse.Namespace,
) -> RunResult:
    console.say(f"running {mode!r}: {args.clients} clients for {args.seconds:g} s ...")
    return _workload.run_clients(
        mode,
        source,
        workload,
        clients=args.clients,
        seconds=args.seconds,
        report=console.progress,
    )
