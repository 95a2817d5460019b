"""The threaded pool's background workers: `close()` joins them without a race.

`Workers.spawn` used to register a thread, release its lock, then start the thread: a
`close()` joining in between raised ``RuntimeError: cannot join thread before it is
started`` (7 times in 300 open/drain/close cycles). These tests put the join exactly there.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from pgfleet._acompat import Workers

RealThread = threading.Thread


def test_join_while_a_worker_is_being_started_waits_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    workers = Workers("test")
    errors: list[BaseException] = []
    joined = threading.Event()
    finish = threading.Event()

    def join() -> None:
        try:
            workers.join(5.0)
        except BaseException as exc:
            errors.append(exc)
        joined.set()

    class JoinedWhileStarting(RealThread):
        def start(self) -> None:
            # The worst moment: registered, not started, and a close() joins now.
            joiner = RealThread(target=join)
            joiner.start()
            joiner.join(0.5)  # long enough to fail at once if the join may run here
            super().start()

    monkeypatch.setattr(threading, "Thread", JoinedWhileStarting)  # as _acompat sees it
    workers.spawn(finish.wait, 5.0)
    monkeypatch.undo()
    finish.set()
    assert joined.wait(10.0)
    assert errors == []
    assert workers.join(5.0)


def test_pool_open_drain_close_cycles_never_raise() -> None:
    # The reported reproduction, on a fake manager so that it runs in milliseconds.
    from pgfleet import Pool
    from support.flavours import FakeManager

    for _ in range(100):
        manager: Any = FakeManager()
        with Pool(manager=manager, min_size=3, max_size=3, timeout=5) as pool:
            pool.drain()
            with pool.connection():
                pass
        assert pool.closed
    alive = [t for t in threading.enumerate() if t.name.startswith("pool-")]
    assert all(not t.is_alive() or t.daemon for t in alive)
