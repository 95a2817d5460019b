"""The pool's default settings: the one place they are written.

The engine's `CoreSettings` and `Backoff`, the shell's `PoolSettings`
(``pgfleet._config``) and the pool constructors' keyword defaults all read them.
"""

from __future__ import annotations

MIN_SIZE = 4
MAX_WAITING = 0
MAX_LIFETIME: float | None = 3600.0
LIFETIME_JITTER = 0.1
MAX_IDLE: float | None = 600.0
CHECK_AFTER_IDLE: float | None = 1.0
MAX_CONNECTING = 2
LEAK_TIMEOUT: float | None = None
FAIL_FAST = True
RECONNECT_DELAY = 0.1
RECONNECT_MAX_DELAY = 2.0
