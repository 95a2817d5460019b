# WARNING: this file is generated from src/pgfleet/_async/manager.py by tools/gen_sync.py.
# Do not edit it: edit the source and run `python tools/gen_sync.py`.

"""The Manager contract: what `Pool` asks of the door to the resources it pools.

A manager is the pool's only door to the resource: the pool decides *when*, the
manager knows *how*. Two ways to write one:

- subclass `Manager`: implement its six abstract methods (``connect``, ``check``,
  ``is_broken``, ``commit``, ``reset``, ``close``) and override any of the four
  optional hooks (``probe_after_idle``, ``is_clean``, ``is_permanent``, ``redact``)
  whose default does not fit;
- or pass any object with the six methods (its type is `ManagerProtocol`): the
  pool takes the hooks it lacks from `Manager`, so it behaves exactly as a
  subclass that overrides nothing.

The pool reads the hooks once, in `ManagerHooks.of`, which also refuses (TypeError) an
object that lacks a required method. The contract in one table: ``docs/managers.md``.
`PostgresManager` (``pgfleet._sync.postgres``) is the PostgreSQL manager.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from types import MethodType
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")

#: What every manager must have (the abstract methods of `Manager`).
REQUIRED_METHODS = ("connect", "check", "is_broken", "commit", "reset", "close")


class Manager(ABC, Generic[T]):
    """How `Pool` makes, tests, resets and closes one resource of type `T`.

    Subclass it and implement the six abstract methods; the four optional hooks
    (`probe_after_idle`, `is_clean`, `is_permanent`, `redact`) have defaults that are
    right for any resource. Instantiating a subclass that misses a required method
    raises TypeError naming it.

    How the pool calls a manager:

    - Never under the pool's lock, and never twice at once for one resource: a
      resource belongs to one party at a time (idle, being checked, lent, being reset,
      being closed). Calls for different resources do overlap, so a manager must be
      safe to call concurrently: from many threads in the threaded flavour (the
      callers' threads and the pool's background threads); from many tasks in the
      async flavour, where the plain (non-async) methods must not block.
    - A call may be cut short (its caller cancelled or interrupted, the pool
      closing): it must leave nothing open behind it. The pool closes a resource
      whose check or reset was cut short.
    - Raising: see each method. `Exception` is the pool's business as described there;
      anything else (a cancellation, `KeyboardInterrupt`) passes through.
    """

    __slots__ = ()

    #: Seconds: the pool calls `is_broken` before lending a resource unseen for longer
    #: than this (idle that long, or back from a longer lend); not on one seen more
    #: recently (just handed over, or back from a shorter block). 0: ask every time.
    probe_after_idle: float = 0.0

    # -- required -----------------------------------------------------------------

    @abstractmethod
    def connect(self, timeout: float) -> T:
        """Open a new resource within `timeout` seconds, or raise.

        Called by the pool's background workers whenever the engine wants one more
        (filling ``min_size``, growing under demand, replacing a closed one), never on
        a caller's path. `timeout` is the pool's ``connect_timeout``: honour it, the
        pool does not cut the call short. An exception is a failed attempt: counted,
        logged (through `redact`), retried after a jittered back-off, and kept as the
        ``__cause__`` of a later `PoolTimeout`; `is_permanent` says whether waiting
        can heal it.
        """

    @abstractmethod
    def check(self, conn: T, timeout: float) -> None:
        """Raise unless `conn` works; may do I/O (a ping), bounded by `timeout`.

        Called before lending a resource that sat idle longer than
        ``check_after_idle`` or is suspect (older than a failure the pool saw), by
        `Pool.check`, and only after `is_broken` said False. `timeout` is what is
        left of the caller's checkout deadline (``connect_timeout`` in the
        background). An exception means `conn` failed: the pool closes it and the
        checkout goes on with another resource.
        """

    @abstractmethod
    def is_broken(self, conn: T) -> bool:
        """True when `conn` is certainly unusable; judged without waiting.

        Called before lending a resource unless it was seen working within
        `probe_after_idle` (a lend longer than that does not count), before `check`, and
        by the transaction helpers after an error. No round trip, no blocking: a look at the
        resource's own state, at most a non-blocking read. True: the pool closes it and
        uses another. Must not raise.
        """

    @abstractmethod
    def commit(self, conn: T) -> None:
        """Make durable the work of a ``connection()`` block that ended without an error.

        Called when such a block ends, unless `is_clean` says there is nothing to
        commit (never for `getconn`/`putconn`). No deadline of the pool's, as for the
        caller's own commit. An exception propagates to the caller unchanged; the
        resource is then reset (or closed) as after a block that raised. A manager of
        resources without transactions does nothing here; there is no default because
        doing nothing would silently lose the work of one that has them.
        """

    @abstractmethod
    def reset(self, conn: T, timeout: float) -> None:
        """Make a returned `conn` fit to lend again, or raise to have it closed.

        Called on every return (`putconn`, the end of a ``connection()`` block, after
        `commit`) unless `is_clean` says there is nothing to undo. `timeout` is the
        pool's ``reset_timeout``: honour it. Must raise for a resource that came back
        closed or in the middle of an operation: the pool relies on this, not on
        `is_broken`, to judge what comes back.
        """

    @abstractmethod
    def close(self, conn: T) -> None:
        """Close `conn`; never raises and never waits for the other end.

        Called for every resource the pool drops: broken, failed its check or reset,
        past ``max_lifetime``, idle above ``min_size`` past ``max_idle``, drained,
        resized away, or at `Pool.close`.
        """

    # -- optional hooks (defaults) ------------------------------------------------

    def is_clean(self, conn: T) -> bool:
        """True when a returned `conn` needs neither `commit` nor `reset`.

        The pool then skips both: the cheapest return. No I/O; must not raise. Default:
        False, so every return is committed (``connection()`` blocks) and reset.
        """
        return False

    def is_permanent(self, error: BaseException) -> bool:
        """True when waiting cannot heal this `connect` error (a bad password, an unknown
        database, a certificate that does not verify).

        `Pool.open` (``wait=True``) and `Pool.wait` then raise `PoolError` at
        once instead of waiting out their timeout (unless ``retry_all_errors=True``);
        the pool still retries in the background. Must not raise. Default: False,
        every error is worth waiting for.
        """
        return False

    def redact(self, text: str) -> str:
        """`text` with this manager's secrets (passwords...) hidden.

        The pool passes every message it writes about this manager's errors through
        it: logs, `PoolTimeout` and `PoolError` messages. It does not alter the
        exceptions themselves (they become ``__cause__``): keep secrets out of those
        too. Must not raise. Default: `text` unchanged.
        """
        return text


class ManagerProtocol(Protocol[T]):
    """Any object with the six required methods of `Manager`: what
    ``Pool(manager=...)`` accepts. A plain class need not subclass `Manager`;
    the pool takes the optional hooks it lacks from `Manager`'s defaults."""

    def connect(self, timeout: float) -> T:
        """See `Manager.connect`."""
        ...

    def check(self, conn: T, timeout: float) -> None:
        """See `Manager.check`."""
        ...

    def is_broken(self, conn: T) -> bool:
        """See `Manager.is_broken`."""
        ...

    def commit(self, conn: T) -> None:
        """See `Manager.commit`."""
        ...

    def reset(self, conn: T, timeout: float) -> None:
        """See `Manager.reset`."""
        ...

    def close(self, conn: T) -> None:
        """See `Manager.close`."""
        ...


@dataclass(frozen=True, slots=True)
class ManagerHooks(Generic[T]):
    """A manager's optional hooks, as the pool uses them (see `Manager`)."""

    probe_after_idle: float
    is_clean: Callable[[T], bool]
    is_permanent: Callable[[BaseException], bool]
    redact: Callable[[str], str]

    @classmethod
    def of(cls, manager: ManagerProtocol[T]) -> ManagerHooks[T]:
        """Read `manager`'s hooks: its own, else `Manager`'s defaults.

        Raises TypeError, naming them, when `manager` lacks a required method.
        """
        missing = [name for name in REQUIRED_METHODS if not callable(getattr(manager, name, None))]
        if missing:
            raise TypeError(
                f"{type(manager).__name__} is not a manager: it lacks {', '.join(missing)}"
                f" (a manager has {', '.join(REQUIRED_METHODS)}; see pgfleet.Manager)"
            )
        return cls(
            probe_after_idle=float(_own_or_default(manager, "probe_after_idle")),
            is_clean=_own_or_default(manager, "is_clean"),
            is_permanent=_own_or_default(manager, "is_permanent"),
            redact=_own_or_default(manager, "redact"),
        )


def _own_or_default(manager: object, name: str) -> Any:
    """`manager`'s own hook `name`, else `Manager`'s default (bound to `manager`):
    the very default a subclass inherits, so both ways of writing a manager agree."""
    try:
        return getattr(manager, name)
    except AttributeError:
        default = getattr(Manager, name)
        return MethodType(default, manager) if callable(default) else default
