# WARNING: this file is generated from tests/_async/test_manager.py by tools/gen_sync.py.
# Do not edit it: edit the source and run `python tools/gen_sync.py`.

"""The Manager contract: a subclass of `Manager` and a duck-typed manager both pool.

A manager written as a plain class (the six required methods, no base class) and the
same methods in a subclass of `Manager` get the same defaults for the optional
hooks; a duck-typed manager's own hooks are used; a manager without a required method
is refused when it is built (subclass) or given to the pool (plain class).

The async file is the source, the threaded one is generated (``python tools/gen_sync.py``).
"""

from __future__ import annotations

from typing import Any

import pytest

from pgfleet import Manager, Pool, PoolError, PoolTimeout, PostgresManager
from pgfleet._sync.manager import ManagerHooks
from support.flavours import FakeError

#: A short wait; whatever waits for it must be over well within `PROMPT`.
SHORT = 0.2
PROMPT = 1.5


class Door:
    """The pooled resource: a number and whether it was closed."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.closed = False


class DuckManager:
    """The six required methods and nothing else: no base class, no optional hook."""

    def __init__(self) -> None:
        #: Raised by every connect while set.
        self.connect_error: Exception | None = None
        self.opened = 0
        self.probes = 0
        self.commits = 0
        self.resets = 0
        self.closes = 0

    def connect(self, timeout: float) -> Door:
        if self.connect_error is not None:
            raise self.connect_error
        self.opened += 1
        return Door(self.opened)

    def check(self, conn: Door, timeout: float) -> None:
        if conn.closed:
            raise FakeError("closed")

    def is_broken(self, conn: Door) -> bool:
        self.probes += 1
        return conn.closed

    def commit(self, conn: Door) -> None:
        self.commits += 1

    def reset(self, conn: Door, timeout: float) -> None:
        self.resets += 1

    def close(self, conn: Door) -> None:
        conn.closed = True
        self.closes += 1


class MinimalManager(DuckManager, Manager[Door]):
    """The same six methods in a subclass of `Manager`: every hook is its default."""


class HookedDuckManager(DuckManager):
    """A plain class with all four optional hooks of its own."""

    probe_after_idle = 60.0

    def is_clean(self, conn: Door) -> bool:
        return True

    def is_permanent(self, error: BaseException) -> bool:
        return isinstance(error, FakeError)

    def redact(self, text: str) -> str:
        return text.replace("sesame", "***")


def pool_of(manager: DuckManager) -> Pool[Door]:
    return Pool(
        manager=manager,
        min_size=1,
        check_after_idle=None,
        reconnect_delay=0.02,
        reconnect_max_delay=0.05,
    )


MANAGERS = [
    pytest.param(MinimalManager, id="subclass"),
    pytest.param(DuckManager, id="duck-typed"),
]


def test_the_duck_typed_manager_has_no_hook_of_its_own() -> None:
    """What the tests below rely on: the plain class really lacks the hooks."""
    manager = DuckManager()
    for name in ("probe_after_idle", "is_clean", "is_permanent", "redact"):
        assert not hasattr(manager, name)


@pytest.mark.parametrize("manager_class", MANAGERS)
def test_both_ways_get_the_base_class_defaults(manager_class: type[DuckManager]) -> None:
    hooks = ManagerHooks.of(manager_class())
    assert hooks.probe_after_idle == 0.0
    assert hooks.is_clean(Door(1)) is False
    assert hooks.is_permanent(FakeError("bad password")) is False
    assert hooks.redact("password=sesame") == "password=sesame"


@pytest.mark.parametrize("manager_class", MANAGERS)
def test_with_the_defaults_every_lend_is_probed_every_return_committed_and_reset(
    manager_class: type[DuckManager],
) -> None:
    manager = manager_class()
    with pool_of(manager) as pool:
        with pool.connection() as conn:
            assert isinstance(conn, Door)
        # is_clean is False: the block's work is committed, then the connection reset.
        assert (manager.commits, manager.resets) == (1, 1)
        # probe_after_idle is 0: is_broken is asked before every lend.
        probes = manager.probes
        assert probes >= 1
        door = pool.getconn()
        assert manager.probes == probes + 1
        pool.putconn(door)  # getconn/putconn: reset, never committed
        assert (manager.commits, manager.resets) == (1, 2)
        assert pool.stats().connections_created == 1
    assert manager.closes == 1


@pytest.mark.parametrize("manager_class", MANAGERS)
def test_with_the_defaults_a_connect_error_is_waited_out_and_told_as_is(
    manager_class: type[DuckManager],
) -> None:
    manager = manager_class()
    manager.connect_error = FakeError("the door said no to sesame")
    pool = pool_of(manager)
    try:
        # is_permanent is False: open() waits its whole timeout (PoolTimeout, not the
        # fail-at-once PoolError), and redact leaves the error's text as it is.
        with pytest.raises(PoolTimeout) as caught:
            pool.open(wait=True, timeout=SHORT)
        assert "the door said no to sesame" in str(caught.value)
        assert caught.value.__cause__ is manager.connect_error
    finally:
        pool.close()


def test_a_duck_typed_managers_own_hooks_are_used() -> None:
    manager = HookedDuckManager()
    with pool_of(manager) as pool:
        with pool.connection():
            pass
        # is_clean: nothing to commit or reset; probe_after_idle (60 s): no probe of a
        # connection made a moment ago and returned at once.
        assert (manager.commits, manager.resets, manager.probes) == (0, 0, 0)
    manager.connect_error = FakeError("the door said no to sesame")
    pool = pool_of(manager)
    try:
        with pytest.raises(PoolError) as caught:
            pool.open(wait=True, timeout=PROMPT)
        # is_permanent: open() gave up at once, and redact hid the secret.
        assert not isinstance(caught.value, PoolTimeout)
        assert "the door said no to ***" in str(caught.value)
        assert "sesame" not in str(caught.value)
    finally:
        pool.close()


class IncompleteManager:
    """Lacks commit and reset."""

    def connect(self, timeout: float) -> Door:
        return Door(1)

    def check(self, conn: Door, timeout: float) -> None:
        pass

    def is_broken(self, conn: Door) -> bool:
        return False

    def close(self, conn: Door) -> None:
        pass


def test_a_duck_typed_manager_without_a_required_method_is_refused() -> None:
    manager: Any = IncompleteManager()
    with pytest.raises(
        TypeError, match=r"IncompleteManager is not a manager: it lacks commit, reset"
    ):
        Pool(manager=manager)


def test_a_subclass_without_a_required_method_cannot_be_built() -> None:
    class HalfManager(Manager[Door]):
        def connect(self, timeout: float) -> Door:
            return Door(1)

        def is_broken(self, conn: Door) -> bool:
            return False

    with pytest.raises(TypeError) as caught:
        HalfManager()  # type: ignore[abstract]
    for name in ("check", "close", "commit", "reset"):
        assert name in str(caught.value)
    assert "connect" not in str(caught.value)


def test_the_postgres_manager_is_a_manager_with_hooks_of_its_own() -> None:
    manager = PostgresManager("host=db.test password=sesame")
    assert isinstance(manager, Manager)
    hooks = ManagerHooks.of(manager)
    assert hooks.probe_after_idle > 0.0  # its probe sees only what already arrived
    assert hooks.redact("password sesame") == "password ***"
