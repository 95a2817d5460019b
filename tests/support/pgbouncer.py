"""A throwaway PgBouncer in front of a throwaway cluster (``tests/support/cluster.py``).

The Debian package's own service is blocked from starting here: each `PgBouncer` is a
private instance in its own temporary directory (its ini file, auth file, log and pidfile),
run as the ``postgres`` OS user when the tests run as root (PgBouncer refuses root), on
``127.0.0.1`` and a free port, without a Unix socket, stopped by its pidfile::

    with PgBouncer(cluster, pool_mode="transaction", default_pool_size=3) as bouncer:
        psycopg.connect(bouncer.conninfo())

It logs in to the server as the ``app`` role with the password of its auth file (plain text,
matching the server's SCRAM secret), and asks clients for that password with SCRAM.
``server_reset_query`` is empty: in transaction mode PgBouncer runs none anyway, and in
session mode the tests want to see what a client leaves behind.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from psycopg.conninfo import make_conninfo

from .cluster import (
    APP_DBNAME,
    APP_PASSWORD,
    APP_USER,
    HOST,
    SERVER_OS_USER,
    PgCluster,
    default_base_dir,
)

__all__ = ["PgBouncer", "PgBouncerError", "find_pgbouncer"]

PoolMode = Literal["session", "transaction", "statement"]
#: Where Debian puts the binary (``/usr/sbin`` is not on every PATH).
_CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")


class PgBouncerError(RuntimeError):
    """PgBouncer did not start or stop as asked; the message ends with its log."""


def find_pgbouncer() -> Path | None:
    """The pgbouncer binary: ``$PGBOUNCER``, else PATH, else Debian's place; None if absent."""
    env = os.environ.get("PGBOUNCER")
    if env:
        return Path(env) if os.access(env, os.X_OK) else None
    found = shutil.which("pgbouncer")
    if found:
        return Path(found)
    for candidate in _CANDIDATES:
        if os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _server_ids() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(SERVER_OS_USER)
    return entry.pw_uid, entry.pw_gid


def _ini_value(value: object) -> str:
    text = str(value)
    if "\n" in text or "\r" in text:
        raise ValueError(f"invalid pgbouncer.ini value: {text!r}")
    return text


def _quoted(text: str) -> str:
    """A value in PgBouncer's auth file: double quotes, doubled inside."""
    return '"' + text.replace('"', '""') + '"'


class PgBouncer:
    """One private PgBouncer in front of `cluster`'s ``app`` database. See the module."""

    def __init__(
        self,
        cluster: PgCluster,
        *,
        pool_mode: PoolMode = "transaction",
        default_pool_size: int = 3,
        max_client_conn: int = 200,
        port: int | None = None,
        settings: Mapping[str, object] | None = None,
        binary: Path | None = None,
    ) -> None:
        found = binary or find_pgbouncer()
        if found is None:
            raise PgBouncerError("pgbouncer is not installed (apt-get install pgbouncer)")
        self.binary = found
        self.cluster = cluster
        self.pool_mode = pool_mode
        self.port = port or _free_port()
        self._auto_port = port is None
        self.settings: dict[str, object] = {
            "pool_mode": pool_mode,
            "default_pool_size": default_pool_size,
            "max_client_conn": max_client_conn,
            **(settings or {}),
        }
        self._dir: Path | None = None

    # -- paths -------------------------------------------------------------------------------

    @property
    def base_dir(self) -> Path:
        if self._dir is None:
            raise PgBouncerError("not started: call start()")
        return self._dir

    @property
    def ini_path(self) -> Path:
        return self.base_dir / "pgbouncer.ini"

    @property
    def pidfile(self) -> Path:
        return self.base_dir / "pgbouncer.pid"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "pgbouncer.log"

    # -- life --------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Start PgBouncer (a daemon) and wait until it accepts connections."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="pgbouncer-", dir=default_base_dir()))
            ids = _server_ids()
            if ids is not None:
                os.chown(self._dir, *ids)
        for attempt in range(3):
            self._write_files()
            offset = self._log_size()
            argv = [str(self.binary), "-d", "-q", str(self.ini_path)]
            if _server_ids() is not None:
                argv = ["runuser", "-u", SERVER_OS_USER, "--", *argv]
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=self.base_dir,
                check=False,
            )
            if result.returncode == 0 and self._wait_listening(timeout):
                return
            log = self._log_text(offset)
            if self._auto_port and "Address already in use" in log and attempt < 2:
                self.port = _free_port()
                continue
            raise PgBouncerError(
                f"pgbouncer did not start (exit status {result.returncode}):"
                f" {result.stdout}{result.stderr}\n--- log ---\n{log}"
            )

    def stop(self, timeout: float = 10.0) -> None:
        """Immediate shutdown (SIGTERM: every client and server connection closes at once);
        returns when the process is gone. No-op when it is not running."""
        pid = self.pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.01)
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()

    def restart(self, timeout: float = 10.0) -> None:
        """Stop, then start again on the same port."""
        self.stop(timeout)
        self.start(timeout)

    def pid(self) -> int | None:
        """The running daemon's process id, from its pidfile; None when it is not running."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError, PgBouncerError):
            return None
        return pid if _alive(pid) else None

    def destroy(self) -> None:
        """Stop and remove the directory."""
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Self:
        try:
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
        return f"<PgBouncer {self.pool_mode} {HOST}:{self.port} -> {self.cluster!r}>"

    # -- connection strings ------------------------------------------------------------------

    def conninfo(self, **overrides: Any) -> str:
        """libpq conninfo for the ``app`` user through PgBouncer."""
        params: dict[str, Any] = {
            "host": HOST,
            "port": self.port,
            "dbname": APP_DBNAME,
            "user": APP_USER,
            "password": APP_PASSWORD,
        }
        params.update(overrides)
        return make_conninfo("", **params)

    def admin_conninfo(self) -> str:
        """The admin console (database ``pgbouncer``; ``app`` is an admin user)."""
        return self.conninfo(dbname="pgbouncer")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self._log_text().splitlines()[-lines:])

    # -- internals ---------------------------------------------------------------------------

    def _write_files(self) -> None:
        ids = _server_ids()
        database = make_conninfo(
            "", host=HOST, port=self.cluster.port, dbname=APP_DBNAME, user=APP_USER
        )
        settings: dict[str, object] = {
            "listen_addr": HOST,
            "listen_port": self.port,
            "unix_socket_dir": "",
            "auth_type": "scram-sha-256",
            "auth_file": self.base_dir / "userlist.txt",
            "pidfile": self.pidfile,
            "logfile": self.log_path,
            "admin_users": APP_USER,
            "server_reset_query": "",
            # Faults are the point of some tests: retry the server soon after a failure.
            "server_login_retry": 1,
            **self.settings,
        }
        lines = ["[databases]", f"{APP_DBNAME} = {database}", "", "[pgbouncer]"]
        lines += [f"{name} = {_ini_value(value)}" for name, value in settings.items()]
        for path, text in (
            (self.ini_path, "\n".join(lines) + "\n"),
            (self.base_dir / "userlist.txt", f"{_quoted(APP_USER)} {_quoted(APP_PASSWORD)}\n"),
        ):
            path.write_text(text)
            os.chmod(path, 0o600)
            if ids is not None:
                os.chown(path, *ids)

    def _wait_listening(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.settimeout(0.5)
                if sock.connect_ex((HOST, self.port)) == 0 and self.pid() is not None:
                    return True
            time.sleep(0.01)
        return False

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def _log_text(self, offset: int = 0) -> str:
        try:
            with self.log_path.open(errors="replace") as log:
                log.seek(offset)
                return log.read()
        except OSError:
            return ""


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")
