"""The test fault proxy (tests/support/proxy.py), mode by mode, in front of an echo server."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from support.proxy import COMMIT_MESSAGE, FaultProxy

#: How long a test waits for something that must happen, or watches for what must not.
PATIENCE = 5.0
QUIET = 0.2


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: EchoServer = self.server  # type: ignore[assignment]
        try:
            while data := self.request.recv(65536):
                with server.lock:
                    server.received += data
                self.request.sendall(data)
        except ConnectionResetError:  # the proxy resets links on purpose
            pass


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), EchoHandler)
        self.lock = threading.Lock()
        self.received = b""


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(PATIENCE)


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy(echo.server_address[:2], timeout=PATIENCE) as proxy:  # type: ignore[arg-type]
        yield proxy


def connect(proxy: FaultProxy) -> socket.socket:
    return socket.create_connection((proxy.host, proxy.port), timeout=PATIENCE)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def assert_gone(sock: socket.socket, *, reset: bool) -> None:
    """The link was reset (ECONNRESET) or closed (EOF)."""
    if reset:
        with pytest.raises(ConnectionResetError):
            drain(sock)
    else:
        assert sock.recv(65536) == b""


def drain(sock: socket.socket) -> None:
    """Read until EOF (or an error)."""
    while sock.recv(65536):
        pass


def wait_for(predicate: object, what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not seen within {PATIENCE} s: {what}"
        time.sleep(0.001)


def test_passthrough(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"ping")
        assert recv_exactly(sock, 4) == b"ping"
        assert proxy.links == 1
    wait_for(lambda: proxy.links == 0, "the link ends with the client")
    assert proxy.accepted == 1


def test_delay(proxy: FaultProxy) -> None:
    proxy.delay(100)
    with connect(proxy) as sock:
        started = time.monotonic()
        sock.sendall(b"ping")
        assert recv_exactly(sock, 4) == b"ping"
        assert time.monotonic() - started >= 0.2  # held once each way


def test_refuse_then_listen_again_on_the_same_port(proxy: FaultProxy) -> None:
    with connect(proxy) as open_link:
        open_link.sendall(b"ping")
        assert recv_exactly(open_link, 4) == b"ping"
        port = proxy.port
        proxy.refuse()
        with pytest.raises(ConnectionRefusedError):
            connect(proxy)
        open_link.sendall(b"still")
        assert recv_exactly(open_link, 5) == b"still"
        proxy.passthrough()
        assert proxy.port == port
        with connect(proxy) as sock:
            sock.sendall(b"back")
            assert recv_exactly(sock, 4) == b"back"


@pytest.mark.parametrize("mode", ["reset", "close"])
def test_reset_and_close_end_open_and_new_links(proxy: FaultProxy, mode: str) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"ping")
        assert recv_exactly(sock, 4) == b"ping"
        getattr(proxy, mode)()
        assert_gone(sock, reset=mode == "reset")
    if mode == "reset":
        # The RST may beat the end of connect() itself.
        try:
            sock = connect(proxy)
        except ConnectionResetError:
            pass
        else:
            with sock, pytest.raises(ConnectionResetError):
                drain(sock)
    else:
        with connect(proxy) as sock:
            assert_gone(sock, reset=False)
    wait_for(lambda: proxy.links == 0, "no link left")


def test_blackhole_holds_the_data_until_passthrough(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        proxy.blackhole()
        sock.sendall(b"held")
        sock.settimeout(QUIET)
        with pytest.raises(TimeoutError):
            sock.recv(4)  # nothing comes back while blackholed
        with connect(proxy) as new_link:  # new connections are accepted, then ignored
            new_link.settimeout(QUIET)
            new_link.sendall(b"x")
            with pytest.raises(TimeoutError):
                new_link.recv(1)
        sock.settimeout(PATIENCE)
        proxy.passthrough()
        assert recv_exactly(sock, 4) == b"held"


@pytest.mark.parametrize("direction", ["up", "down"])
def test_cut_after_n_bytes(proxy: FaultProxy, echo: EchoServer, direction: str) -> None:
    with connect(proxy) as sock:
        proxy.cut_after(6, direction)  # type: ignore[arg-type]
        sock.sendall(b"0123456789")
        if direction == "down":
            assert recv_exactly(sock, 6) == b"012345"
        assert_gone(sock, reset=False)
    wait_for(lambda: proxy.links == 0, "the link was cut")
    upstream = b"0123456789" if direction == "down" else b"012345"
    wait_for(lambda: echo.received == upstream, f"the server got {upstream!r}")


def test_hold_reply_after_a_pattern(proxy: FaultProxy, echo: EchoServer) -> None:
    with connect(proxy) as bystander, connect(proxy) as sock:
        proxy.hold_reply_after(b"COMMIT")
        sock.sendall(b"BEGIN;")
        assert recv_exactly(sock, 6) == b"BEGIN;"
        sock.sendall(b"COM")  # the pattern split across chunks is still seen
        wait_for(lambda: echo.received.endswith(b"COM"), "the first half upstream")
        sock.sendall(b"MIT;")
        assert proxy.wait_triggered(PATIENCE)
        assert_gone(sock, reset=True)
        assert echo.received.endswith(b"COMMIT;")  # the server got it; the client heard nothing
        # One link only: the proxy is back to passthrough for the others.
        assert proxy.mode == "passthrough"
        bystander.sendall(b"COMMIT")
        assert recv_exactly(bystander, 6) == b"COMMIT"


def test_commit_message_is_what_psycopg_sends() -> None:
    # 'Q', int32 length (itself + "COMMIT\0"), "COMMIT\0".
    assert b"Q" + (4 + 7).to_bytes(4, "big") + b"COMMIT\x00" == COMMIT_MESSAGE


def test_stop_ends_every_link_and_the_thread(echo: EchoServer) -> None:
    proxy = FaultProxy(echo.server_address[:2]).start()  # type: ignore[arg-type]
    sock = connect(proxy)
    try:
        proxy.blackhole()
        proxy.stop()
        assert_gone(sock, reset=True)
    finally:
        sock.close()
    with pytest.raises(ConnectionRefusedError):
        connect(proxy)
    with pytest.raises(RuntimeError, match="not running"):
        proxy.passthrough()
    proxy.stop()  # idempotent
