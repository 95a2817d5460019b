"""The few primitives that differ between the asyncio and the threaded shell.

The asyncio source under ``_async/`` uses the ``Async*`` names and the ``a*``
functions; ``tools/gen_sync.py`` renames them to the plain names below when it
writes the threaded twin under ``_sync/``. Nothing else differs.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import select
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

from pgfleet._core import state

T = TypeVar("T")

#: What a wire generator waits for, and what is ready (bit flags).
WAIT_R = 1
WAIT_W = 2
WAIT_RW = WAIT_R | WAIT_W

monotonic = time.monotonic


# -- the engine's lock ------------------------------------------------------------------


class AsyncCoreLock:
    """No lock: an asyncio shell calls the engine from one thread and never awaits inside.

    The hot paths call `acquire`/`release` rather than ``with``: a ``with`` costs
    twice the two calls, on a C lock as on this one. The guard's fast paths do not
    call this one at all (``# sync-only:`` lines, see ``tools/gen_sync.py``): a
    checkout + return made four calls to it, 1.7k of an `AsyncPool` cycle's 17.7k
    instructions (callgrind), for nothing.
    """

    __slots__ = ()

    def acquire(self) -> bool:
        return True

    def release(self) -> None:
        return None

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


CoreLock = threading.Lock


# -- a queued caller --------------------------------------------------------------------


class AsyncWaiter(state.Waiter):
    """A queued caller of an asyncio pool, woken through a future."""

    __slots__ = ("_clock", "_future", "deadline", "loop")

    def __init__(self, clock: AsyncQueueClock) -> None:
        self.enqueued_at = 0.0
        self.outcome = None
        self._clock = clock
        self.loop = loop = _running_loop()
        self._future: asyncio.Future[bool] = loop.create_future()
        #: When it times out (`monotonic`), set by `wait`; read by the clock.
        self.deadline = math.inf

    def wake(self) -> bool:
        """Wake the caller (its outcome is already set); False if its loop has closed."""
        future = self._future
        if not future.done():
            try:
                future.set_result(True)
            except RuntimeError:  # "Event loop is closed": scheduling its wake-up failed
                if self.loop.is_closed():
                    return False
                raise
        return True

    def wait(self, timeout: float) -> asyncio.Future[bool]:
        """What to await to wait up to `timeout` seconds: True when woken, False if not.

        A future, not a coroutine: one frame fewer per queued checkout. A cancellation
        reaches the future itself and propagates; the caller then withdraws from the
        queue, or gives back the entry it was served meanwhile.
        """
        future = self._future
        if not future.done():  # (else served as it queued)
            if timeout > 0:
                self._clock.add(self, monotonic() + timeout)
            else:
                future.set_result(False)
        return future

    def time_out(self) -> None:
        """The deadline passed: wake the caller, unwoken so far, with False."""
        if not self._future.done():
            self._future.set_result(False)

    def done(self) -> bool:
        return self._future.done()


class AsyncQueueClock:
    """Times out one pool's queued callers: per event loop, one timer, for the earliest deadline.

    The callers are the engine's own queue (`queued`, read when a timer fires), and a
    caller's deadline is a field of its waiter: queueing costs a store and a comparison.
    (A timer per caller, ``asyncio.timeout`` or ``call_later``, cost about 3 % of the
    throughput with 64 tasks on 8 connections; a list of callers per clock, ~70 bytecodes
    a queued checkout.) A pool is normally used from one loop; one used from several
    keeps a timer for each, and forgets those of loops that have closed.
    """

    __slots__ = ("_queued", "_timers")

    def __init__(self, queued: Iterable[state.Waiter]) -> None:
        self._queued = queued
        #: Per loop: the deadline its timer is set for, and the timer.
        self._timers: dict[asyncio.AbstractEventLoop, tuple[float, asyncio.TimerHandle]] = {}

    def add(self, waiter: AsyncWaiter, deadline: float) -> None:
        """Time `waiter` out at `deadline` (`monotonic`) unless woken before."""
        waiter.deadline = deadline
        timer = self._timers.get(waiter.loop)
        if timer is None or deadline < timer[0]:
            self._arm(waiter.loop, deadline)

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        timers = self._timers
        timer = timers.get(loop)
        if timer is not None:
            timer[1].cancel()
        else:
            for closed in [other for other in timers if other.is_closed()]:
                del timers[closed]
        handle = loop.call_later(max(at - monotonic(), 0.0), self._fire, loop)
        timers[loop] = (at, handle)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        """Time out this loop's callers past their deadline; set the timer for the next."""
        self._timers.pop(loop, None)
        now = monotonic()
        earliest = math.inf
        for waiter in list(self._queued):  # a copy: another loop's thread may queue
            if not isinstance(waiter, AsyncWaiter) or waiter.loop is not loop or waiter.done():
                continue
            if waiter.deadline <= now:
                waiter.time_out()  # its future is this loop's: set_result cannot fail
            elif waiter.deadline < earliest:
                earliest = waiter.deadline
        if earliest < math.inf:
            self._arm(loop, earliest)


_running_loop = asyncio.get_running_loop


class Waiter(state.Waiter):
    """A queued caller of a threaded pool, parked on a lock of its own."""

    __slots__ = ("_lock",)

    def __init__(self, clock: QueueClock) -> None:
        self.enqueued_at = 0.0  # `state.Waiter.__init__`, inlined: one call per queued caller
        self.outcome = None
        # A plain lock held from birth: wake() releases it. The cheapest way to park
        # one thread in CPython (an Event is a Condition around a lock like this).
        self._lock = threading.Lock()
        self._lock.acquire()

    def wake(self) -> bool:
        """Wake the caller (its outcome is already set)."""
        try:
            self._lock.release()
        except RuntimeError:  # woken twice
            pass
        return True

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds; True when woken."""
        return self._lock.acquire(timeout=max(timeout, 0.0))


class QueueClock:
    """Nothing to keep: a queued thread waits on its own lock with a timeout."""

    __slots__ = ()

    def __init__(self, queued: Iterable[state.Waiter]) -> None:
        pass


# -- an event ---------------------------------------------------------------------------


class AsyncEvent:
    """An asyncio event with a timed wait."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds (forever when None); True when set."""
        if timeout is None:
            await self._event.wait()
            return True
        try:
            async with asyncio.timeout(max(timeout, 0.0)):  # not wait_for: see AsyncWaiter
                await self._event.wait()
        except TimeoutError:
            return self._event.is_set()
        return True


class Event:
    """A threading event with the same interface as `AsyncEvent`."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds (forever when None); True when set."""
        return self._event.wait(None if timeout is None else max(timeout, 0.0))


# -- background work --------------------------------------------------------------------


class AsyncWorkers:
    """Background tasks of one pool, tracked so that close() leaves none behind."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Run ``fn(*args)`` in the background."""
        task = asyncio.get_running_loop().create_task(fn(*args), name=f"{self._name}-{fn.__name__}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def join(self, timeout: float) -> bool:
        """Wait for the running work; cancel what is left after `timeout`. True if all ended."""
        pending = {t for t in self._tasks if t is not asyncio.current_task()}
        if not pending:
            return True
        _, pending = await asyncio.wait(pending, timeout=max(timeout, 0.0))
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        return not pending


class Workers:
    """Background threads of one pool, tracked so that close() leaves none behind."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` in a daemon thread."""

        def run() -> None:
            try:
                fn(*args)
            finally:
                with self._lock:
                    self._threads.discard(thread)

        thread = threading.Thread(target=run, name=f"{self._name}-{fn.__name__}", daemon=True)
        # Registered and started under one lock round: `join` never sees a thread that
        # is registered but not started yet (joining one raises RuntimeError). `start`
        # only waits for the thread to begin; `run` takes this lock after `fn` is done.
        with self._lock:
            self._threads.add(thread)
            thread.start()

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` for the running threads. True if all ended."""
        deadline = monotonic() + max(timeout, 0.0)
        with self._lock:
            threads = [t for t in self._threads if t is not threading.current_thread()]
        for thread in threads:
            thread.join(max(deadline - monotonic(), 0.0))
        return not any(t.is_alive() for t in threads)


# -- waiting, sleeping, bounding -------------------------------------------------------


async def await_fd(fd: int, want: int, timeout: float) -> int:
    """Wait until `fd` is ready for `want` (WAIT_R/WAIT_W) or `timeout`; the ready flags."""
    if timeout <= 0:
        return _poll_fd(fd, want, 0.0)
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()

    def ready(flag: int) -> None:
        if not future.done():
            future.set_result(flag)

    if want & WAIT_R:
        loop.add_reader(fd, ready, WAIT_R)
    if want & WAIT_W:
        loop.add_writer(fd, ready, WAIT_W)
    try:
        async with asyncio.timeout(timeout):  # not wait_for: see AsyncWaiter.wait
            return await future
    except TimeoutError:
        return 0
    finally:
        if want & WAIT_R:
            loop.remove_reader(fd)
        if want & WAIT_W:
            loop.remove_writer(fd)


def wait_fd(fd: int, want: int, timeout: float) -> int:
    """Wait until `fd` is ready for `want` (WAIT_R/WAIT_W) or `timeout`; the ready flags."""
    return _poll_fd(fd, want, max(timeout, 0.0))


def _poll_fd(fd: int, want: int, timeout: float) -> int:
    # poll(), not select(): select() refuses descriptors numbered 1024 and above, which a
    # busy process (many sockets and files) hands out to new connections.
    poller = select.poll()
    poller.register(fd, (_POLL_R if want & WAIT_R else 0) | (_POLL_W if want & WAIT_W else 0))
    ready = 0
    for _, events in poller.poll(timeout * 1000.0):
        if events & (_POLL_R | _POLL_FAILED):  # an error or hang-up reads as ready: the
            ready |= WAIT_R & want  # read that follows reports it
        if events & (_POLL_W | _POLL_FAILED):
            ready |= WAIT_W & want
    return ready


if hasattr(select, "poll"):
    _POLL_R = select.POLLIN | select.POLLPRI
    _POLL_W = select.POLLOUT
    _POLL_FAILED = select.POLLERR | select.POLLHUP | select.POLLNVAL
else:  # pragma: no cover - Windows has no poll(), and its select() has no 1024 limit

    def _poll_fd(fd: int, want: int, timeout: float) -> int:
        rlist = [fd] if want & WAIT_R else []
        wlist = [fd] if want & WAIT_W else []
        readable, writable, _ = select.select(rlist, wlist, [], timeout)
        return (WAIT_R if readable else 0) | (WAIT_W if writable else 0)


async def asleep(seconds: float) -> None:
    """Sleep (asyncio)."""
    await asyncio.sleep(seconds)


sleep = time.sleep


async def abounded(awaitable: Awaitable[T], timeout: float) -> T:
    """Await under a deadline: TimeoutError after `timeout` seconds."""
    async with asyncio.timeout(max(timeout, 0.0)):  # not wait_for: see AsyncWaiter.wait
        return await awaitable


def bounded(value: T, timeout: float) -> T:
    """The threaded twin of `abounded`: blocking calls bound themselves (connect_timeout)."""
    return value


async def aresolve(value: T | Awaitable[T]) -> T:
    """A user callback's result: awaited when a coroutine function (or any awaitable)
    returned it, as is otherwise (psycopg_pool accepts both in its asyncio pools)."""
    if inspect.isawaitable(value):
        return await value
    return value


def resolve(value: T) -> T:
    """The threaded twin of `aresolve`: threaded callbacks return plain values."""
    return value


#: The warning psycopg_pool gives for a pool opened by default, without ``open=``: in
#: asyncio, opening in the constructor is deprecated (RuntimeWarning); in threads, the
#: default of ``open`` will change (DeprecationWarning).
AsyncOpenDefaultWarning: type[Warning] = RuntimeWarning
OpenDefaultWarning: type[Warning] = DeprecationWarning
