"""A TCP fault proxy for tests: forwards to a server, and misbehaves on demand.

::

    with FaultProxy(("127.0.0.1", pg.port)) as proxy:      # listens on 127.0.0.1:<free port>
        pool = Pool(pg.conninfo(port=proxy.port), ...)
        proxy.delay(50)          # every chunk waits 50 ms, both ways
        proxy.blackhole()        # accept and keep connections, forward nothing
        proxy.passthrough()      # back to normal (blackholed data flows again)
        proxy.hold_reply_after(b"Q\\0\\0\\0\\x0bCOMMIT\\0")  # the in-doubt COMMIT
        ...
        assert proxy.wait_triggered(5.0)

The proxy runs its own asyncio loop in a daemon thread, so threaded and asyncio
tests use the same plain methods. Each mode method returns once the mode is in
force, and applies both to the links open now and to new connections:

=====================================  =============================================================
``passthrough()``                      forward both ways
``delay(ms)``                          hold every chunk ``ms`` milliseconds before forwarding it
``refuse()``                           stop listening: new connections get ECONNREFUSED; open links
                                       keep working (any other mode listens again, same port)
``reset()``                            reset (RST, ``SO_LINGER`` 0) every link now; new ones at once
``close()``                            close (FIN) every link now; new ones at once
``blackhole()``                        accept and keep connections, forward nothing (the data waits
                                       in the kernel buffers): a server that hangs, TCP still up
``cut_after(n, direction)``            forward ``n`` more bytes per link (counting ``"up"``, client
                                       to server, ``"down"`` or ``"both"``), then close the link
                                       (FIN: the bytes before the cut are delivered)
``hold_reply_after(pattern)``          once a client chunk containing ``pattern`` went upstream,
                                       wait for the server's reply, drop it and reset the link on
                                       both sides: the server did the work, the client never hears.
                                       One link only (``once=True``), then back to passthrough;
                                       `wait_triggered` tells when it happened
=====================================  =============================================================

``pattern`` is raw bytes on the wire. For PostgreSQL, psycopg's ``conn.commit()`` sends
the simple-query message ``b"Q\\0\\0\\0\\x0bCOMMIT\\0"`` (`COMMIT_MESSAGE`).

Everything is bounded: chunks of 64 KiB, at most ``max_links`` links (more are reset),
connects upstream and control calls under ``timeout``, and `stop` (or leaving the
``with`` block) resets every link and joins the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

__all__ = ["COMMIT_MESSAGE", "FaultProxy"]

#: The bytes psycopg sends for ``conn.commit()``: a simple Query message "COMMIT".
COMMIT_MESSAGE = b"Q\x00\x00\x00\x0bCOMMIT\x00"

CHUNK = 64 * 1024
Direction = Literal["up", "down", "both"]


@dataclass(frozen=True, slots=True)
class _Mode:
    name: str = "passthrough"
    delay: float = 0.0
    budget: int | None = None
    direction: Direction = "both"
    pattern: bytes | None = None
    once: bool = True


_PASSTHROUGH = _Mode()


@dataclass(eq=False)
class _Link:
    """One client connection and its upstream connection."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    #: Bytes left before a cut (None: no cut armed).
    budget: int | None = None
    #: What the client sent last (for patterns split across chunks).
    tail: bytes = b""
    #: The pattern went upstream: the next reply is dropped with the link.
    holding: bool = False
    dropped: bool = False

    def gone(self) -> bool:
        """Dropped (a call, so that type checkers re-read it after each await)."""
        return self.dropped


class FaultProxy:
    """A TCP proxy to `upstream` with switchable faults (see the module docstring).

    Args:
        upstream: ``(host, port)`` of the server.
        host: the address to listen on.
        port: the port to listen on (0: a free one, see `port`).
        max_links: the most links at once; beyond, new connections are reset.
        timeout: seconds an upstream connect or a control call may take.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_links: int = 256,
        timeout: float = 5.0,
    ) -> None:
        self.upstream = upstream
        self.host = host
        self.port = port
        self.max_links = max_links
        self.timeout = timeout
        #: Connections accepted so far.
        self.accepted = 0
        self._mode = _PASSTHROUGH
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._triggered = threading.Event()
        self._flowing: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<FaultProxy {self.host}:{self.port} -> {self.upstream} {self._mode.name}>"

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Start listening (in a background thread); returns when ready."""
        if self._thread is not None:
            raise RuntimeError("the proxy was already started")
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.timeout):
            raise RuntimeError(f"the proxy did not start within {self.timeout} s")
        if self._start_error is not None:
            self._thread.join(self.timeout)
            raise RuntimeError("the proxy failed to start") from self._start_error
        return self

    def stop(self) -> None:
        """Reset every link, stop listening and join the thread. Idempotent."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None or loop is None or stopping is None or not thread.is_alive():
            return
        loop.call_soon_threadsafe(stopping.set)
        thread.join(self.timeout + 1.0)
        if thread.is_alive():
            raise RuntimeError(f"the proxy thread did not stop within {self.timeout + 1.0} s")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- modes ------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """The name of the mode in force."""
        return self._mode.name

    @property
    def links(self) -> int:
        """Links open now."""
        return len(self._links)

    def passthrough(self) -> None:
        """Forward both ways (and let blackholed data flow again)."""
        self._set(_PASSTHROUGH)

    def delay(self, ms: float) -> None:
        """Hold every chunk `ms` milliseconds before forwarding it, both ways."""
        if not 0 <= ms <= 60_000:
            raise ValueError(f"delay must be within [0, 60000] ms, got {ms}")
        self._set(_Mode("delay", delay=ms / 1000))

    def refuse(self) -> None:
        """Stop listening: new connections are refused; open links keep working."""
        self._set(_Mode("refuse"))

    def reset(self) -> None:
        """Reset every link now and every new connection at once (RST)."""
        self._set(_Mode("reset"))

    def close(self) -> None:
        """Close every link now and every new connection at once (FIN)."""
        self._set(_Mode("close"))

    def blackhole(self) -> None:
        """Accept and keep connections, forward nothing."""
        self._set(_Mode("blackhole"))

    def cut_after(self, n: int, direction: Direction = "both") -> None:
        """Forward `n` more bytes per link (in `direction`), then close the link."""
        if n < 0 or direction not in ("up", "down", "both"):
            raise ValueError(f"bad cut: n={n}, direction={direction!r}")
        self._set(_Mode("cut", budget=n, direction=direction))

    def hold_reply_after(self, pattern: bytes, *, once: bool = True) -> None:
        """After a client chunk with `pattern` went upstream, drop the reply and the link."""
        if not pattern:
            raise ValueError("the pattern must not be empty")
        self._triggered.clear()
        self._set(_Mode("hold", pattern=bytes(pattern), once=once))

    def wait_triggered(self, timeout: float) -> bool:
        """Wait up to `timeout` for a `hold_reply_after` link to be dropped; True if it was."""
        return self._triggered.wait(timeout)

    def _set(self, mode: _Mode) -> None:
        self._call(self._apply(mode))

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        loop = self._loop
        if loop is None or self._thread is None or not self._thread.is_alive():
            coro.close()
            raise RuntimeError("the proxy is not running")
        asyncio.run_coroutine_threadsafe(coro, loop).result(self.timeout)

    # -- the loop thread --------------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:
            self._start_error = exc
        finally:
            self._ready.set()
            loop.close()

    async def _main(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._stopping = asyncio.Event()
        await self._listen()
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            self._stop_listening()
            for link in list(self._links):
                self._drop(link, reset=True)
            handlers = set(self._handlers)
            if handlers:
                _, pending = await asyncio.wait(handlers, timeout=self.timeout)
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending, timeout=1.0)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._on_client, self.host, self.port, reuse_address=True, limit=CHUNK
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def _stop_listening(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()

    async def _apply(self, mode: _Mode) -> None:
        assert self._flowing is not None
        if mode.name == "refuse":
            self._stop_listening()
        elif self._server is None:
            await self._listen()
        self._mode = mode
        if mode.name == "blackhole":
            self._flowing.clear()
        else:
            self._flowing.set()
        for link in list(self._links):
            link.tail = b""
            link.budget = mode.budget
            if mode.name in ("reset", "close"):
                self._drop(link, reset=mode.name == "reset")

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.accepted += 1
        link = _Link(writer, budget=self._mode.budget)
        self._links.add(link)
        try:
            mode = self._mode
            # (Under "refuse", a connection accepted just before the listener closed is served.)
            if mode.name in ("reset", "close") or len(self._links) > self.max_links:
                self._drop(link, reset=mode.name != "close")
                return
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(*self.upstream, limit=CHUNK), self.timeout
                )
            except (OSError, TimeoutError):
                self._drop(link, reset=True)
                return
            link.upstream = up_writer
            if link.gone():  # reset or closed while connecting
                self._drop(link, reset=True)
                return
            link.tasks = [
                asyncio.create_task(self._pump(link, "up", reader, up_writer)),
                asyncio.create_task(self._pump(link, "down", up_reader, writer)),
            ]
            await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
            self._drop(link, reset=False)
            await asyncio.wait(link.tasks)
        finally:
            self._links.discard(link)
            for stream in (link.client, link.upstream):
                if stream is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(stream.wait_closed(), 1.0)
            self._handlers.discard(task)

    async def _pump(
        self,
        link: _Link,
        direction: Literal["up", "down"],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        assert self._flowing is not None
        try:
            while not link.gone():
                await self._flowing.wait()
                data = await reader.read(CHUNK)
                if not data:
                    return
                await self._flowing.wait()  # blackholed meanwhile: hold the chunk
                mode = self._mode
                if mode.delay:
                    await asyncio.sleep(mode.delay)
                if link.gone():
                    return
                if direction == "down" and link.holding:
                    # The server answered the held message: nobody will hear it.
                    self._drop(link, reset=True)
                    self._triggered.set()
                    return
                if link.budget is not None and mode.direction in (direction, "both"):
                    if len(data) >= link.budget:
                        writer.write(data[: link.budget])
                        with contextlib.suppress(OSError):
                            await writer.drain()
                        # FIN, not RST: a reset would discard the bytes still in flight.
                        self._drop(link, reset=False)
                        return
                    link.budget -= len(data)
                if direction == "up" and mode.pattern is not None:
                    seen = link.tail + data
                    if mode.pattern in seen:
                        link.holding = True  # before the write: the reply may come at once
                        if mode.once:
                            self._mode = _PASSTHROUGH
                    link.tail = seen[-(len(mode.pattern) - 1) :] if len(mode.pattern) > 1 else b""
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            return

    def _drop(self, link: _Link, *, reset: bool) -> None:
        """End a link: RST (SO_LINGER 0) or FIN on both sides, and stop its pumps."""
        link.dropped = True
        for stream in (link.client, link.upstream):
            if stream is None or stream.is_closing():
                continue
            if reset:
                sock = stream.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                stream.transport.abort()
            else:
                stream.close()
        current = asyncio.current_task()
        for task in link.tasks:
            if task is not current:
                task.cancel()
