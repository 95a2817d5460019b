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
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
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

    __slots__ = ("_clock", "_future")

    def __init__(self, clock: AsyncQueueClock) -> None:
        self.enqueued_at = 0.0
        self.outcome = None
        self._clock = clock
        self._future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def wake(self) -> bool:
        """Wake the caller (its outcome is already set); False if its loop has closed."""
        future = self._future
        if not future.done():
            if future.get_loop().is_closed():
                return False
            future.set_result(True)
        return True

    async def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds; True when woken.

        A cancellation reaches the future itself and propagates; the caller then
        withdraws from the queue, or gives back the entry it was served meanwhile.
        """
        future = self._future
        if timeout <= 0 or future.done():  # (served as it queued)
            return future.done()
        self._clock.add(self, future.get_loop().time() + timeout)
        return await future

    def time_out(self) -> None:
        """The deadline passed: wake the caller, unwoken so far, with False."""
        if not self._future.done():
            self._future.set_result(False)

    def done(self) -> bool:
        return self._future.done()


class AsyncQueueClock:
    """The deadlines of one pool's queued callers, on one timer per event loop.

    A timer per caller (``asyncio.timeout``, or ``call_later``) cost about 3 % of the
    throughput with 64 tasks on 8 connections: each is a heap entry compared in Python,
    then cancelled. A pool is normally used from one loop; one used from several (one
    ``asyncio.run`` after another) keeps a clock for each, and forgets those of loops
    that have closed.
    """

    __slots__ = ("_clocks",)

    def __init__(self) -> None:
        self._clocks: dict[asyncio.AbstractEventLoop, _LoopClock] = {}

    def add(self, waiter: AsyncWaiter, deadline: float) -> None:
        """Time `waiter` out at `deadline` (the running loop's time) unless woken before."""
        loop = _running_loop()
        clock = self._clocks.get(loop)
        if clock is None:
            for closed in [other for other in self._clocks if other.is_closed()]:
                del self._clocks[closed]
            clock = self._clocks[loop] = _LoopClock(loop)
        clock.add(waiter, deadline)


class _LoopClock:
    """The queued callers of one pool on one event loop, and its one timer.

    The callers are kept in arrival order, which is the order they are served in,
    so the served ones are dropped from the front as new ones come; the whole list
    is swept when it doubles (callers that gave up behind one still waiting). The
    timer is set for the earliest deadline; when it fires, the callers past theirs
    are timed out and it is set again for the earliest one left.
    """

    __slots__ = ("_at", "_loop", "_queue", "_sweep_at", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: deque[tuple[float, AsyncWaiter]] = deque()
        self._sweep_at = _SWEEP_MIN
        self._timer: asyncio.TimerHandle | None = None
        self._at = math.inf

    def add(self, waiter: AsyncWaiter, deadline: float) -> None:
        queue = self._queue
        while queue and queue[0][1].done():
            queue.popleft()
        queue.append((deadline, waiter))
        if len(queue) >= self._sweep_at:
            self._queue = queue = deque(item for item in queue if not item[1].done())
            self._sweep_at = max(_SWEEP_MIN, 2 * len(queue))
        if deadline < self._at:
            self._arm(deadline)

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(at, self._fire)
        self._at = at

    def _fire(self) -> None:
        self._timer = None
        self._at = math.inf
        now = self._loop.time()
        left: deque[tuple[float, AsyncWaiter]] = deque()
        earliest = math.inf
        for deadline, waiter in self._queue:
            if waiter.done():
                continue
            if deadline <= now:
                waiter.time_out()  # its future is this loop's: set_result cannot fail
            else:
                left.append((deadline, waiter))
                earliest = min(earliest, deadline)
        self._queue = left
        self._sweep_at = max(_SWEEP_MIN, 2 * len(left))
        if left:
            self._arm(earliest)


#: A clock's list of callers is first swept when it reaches this length.
_SWEEP_MIN = 64


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
