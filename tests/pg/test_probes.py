"""The idle-connection probe (`pgfleet._postgres.wire.SocketProbes`) against a real server."""

from __future__ import annotations

import os
import select
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import pq

from pgfleet._postgres.wire import SocketProbes
from support.cluster import ClusterFactory, PgCluster
from support.proxy import FaultProxy


def _app() -> str:
    return f"probe-{uuid.uuid4().hex[:12]}"


def _connect(conninfo: str, app: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(conninfo, application_name=app, autocommit=True)


def test_a_healthy_idle_connection_is_fine(pg_dsn: str) -> None:
    probes = SocketProbes()
    with _connect(pg_dsn, _app()) as conn:
        for _ in range(3):
            assert not probes.says_broken(conn.pgconn)
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the probe left it usable


def test_a_terminated_backend_is_seen(pg: PgCluster, pg_dsn: str) -> None:
    probes = SocketProbes()
    app = _app()
    with _connect(pg_dsn, app) as conn:
        assert not probes.says_broken(conn.pgconn)
        assert pg.terminate_backends(application_name=app) == 1
        assert probes.says_broken(conn.pgconn)
        assert probes.says_broken(conn.pgconn)  # and stays seen


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_server_shutdown_is_seen(make_cluster: ClusterFactory, mode: str) -> None:
    """An immediate shutdown says goodbye with a WARNING (57P01), not a FATAL."""
    cluster = make_cluster()
    probes = SocketProbes()
    with _connect(cluster.conninfo(), _app()) as conn:
        assert not probes.says_broken(conn.pgconn)
        cluster.stop(mode)  # type: ignore[arg-type]
        assert probes.says_broken(conn.pgconn)


def test_a_probe_loses_no_notification(pg_dsn: str) -> None:
    """The probe has libpq parse what arrived; a notification stays with libpq and
    reaches psycopg's handlers with the connection's next command."""
    probes = SocketProbes()
    channel = f"ch_{uuid.uuid4().hex[:12]}"
    received: list[str] = []
    with _connect(pg_dsn, _app()) as listener, _connect(pg_dsn, _app()) as sender:
        listener.add_notify_handler(lambda n: received.append(n.payload))
        listener.execute(f"LISTEN {channel}")
        sender.execute("SELECT pg_notify(%s, 'hello')", (channel,))
        readable, _, _ = select.select([listener.pgconn.socket], [], [], 5)
        assert readable, "the notification never reached the listener"
        assert not probes.says_broken(listener.pgconn)
        listener.execute("SELECT 1")
        assert received == ["hello"]


def test_a_replaced_notice_handler_is_watched_again(pg: PgCluster, pg_dsn: str) -> None:
    """Code that sets its own notice handler (a reset callback, say) must not blind the probe."""
    probes = SocketProbes()
    app = _app()
    seen: list[bytes | None] = []
    with _connect(pg_dsn, app) as conn:
        assert not probes.says_broken(conn.pgconn)
        conn.pgconn.notice_handler = lambda result: seen.append(
            result.error_field(pq.DiagnosticField.SEVERITY_NONLOCALIZED)
        )
        assert pg.terminate_backends(application_name=app) == 1
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 5)
        assert readable
        assert probes.says_broken(conn.pgconn)
        assert seen == [b"FATAL"]  # the replacement handler still got the notice


def test_data_then_end_of_file_is_seen_at_once(pg: PgCluster, pg_dsn: str) -> None:
    """A notification followed by a link closed without a FATAL (a proxy, a reset): one
    read returns the data, only the next one the end of file."""
    probes = SocketProbes()
    channel = f"ch_{uuid.uuid4().hex[:12]}"
    with FaultProxy(("127.0.0.1", pg.port)) as proxy:
        listener = psycopg.connect(pg.conninfo(host="127.0.0.1", port=proxy.port), autocommit=True)
        with listener, _connect(pg_dsn, _app()) as sender:
            listener.execute(f"LISTEN {channel}")
            assert not probes.says_broken(listener.pgconn)
            sender.execute("SELECT pg_notify(%s, 'x')", (channel,))
            readable, _, _ = select.select([listener.pgconn.socket], [], [], 5)
            assert readable, "the notification never came through the proxy"
            proxy.close()  # FIN on the client side, no FATAL from the server
            assert _fin_arrived(listener.pgconn.socket, timeout=5)
            assert probes.says_broken(listener.pgconn)


def _fin_arrived(fd: int, timeout: float) -> bool:
    """Wait until the peer's FIN reached `fd` (TCP state CLOSE_WAIT): nothing else tells,
    the socket being readable already for the data in front of it."""
    tcp_close_wait = 8  # from the kernel's tcp_states.h
    with socket.socket(fileno=os.dup(fd)) as sock:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == tcp_close_wait:
                return True
            time.sleep(0.005)
    return False


@pytest.fixture
def gil_switch_interval() -> Iterator[None]:
    old = sys.getswitchinterval()
    # Long enough that no forced GIL switch falls inside the probes below, short
    # enough that a probe releasing the GIL costs the test at most a second or two.
    sys.setswitchinterval(0.2)
    yield
    sys.setswitchinterval(old)


@pytest.mark.usefixtures("gil_switch_interval")
def test_a_probe_keeps_the_gil(pg_dsn: str) -> None:
    """Under load a probe that released the GIL became a thread hand-off each time."""
    probes = SocketProbes()
    with _connect(pg_dsn, _app()) as conn:
        assert conn.pgconn.transaction_status == pq.TransactionStatus.IDLE
        spins = 0
        running = threading.Event()
        stop = False

        def spin() -> None:
            nonlocal spins
            running.set()
            while not stop:
                spins += 1

        spinner = threading.Thread(target=spin, daemon=True)
        spinner.start()
        try:
            running.wait()  # returns once the spinner has been made to give up the GIL
            before = spins
            for _ in range(10):
                assert not probes.says_broken(conn.pgconn)
            after = spins
        finally:
            stop = True
            spinner.join()
        assert after == before, "the spinner ran: a probe released the GIL"
