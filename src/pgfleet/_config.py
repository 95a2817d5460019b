"""Validated pool settings, from arguments or from ``PGFLEET_*`` environment variables."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from pgfleet._core import Backoff, CoreSettings
from pgfleet._core.defaults import (
    CHECK_AFTER_IDLE,
    FAIL_FAST,
    LEAK_TIMEOUT,
    MAX_CONNECTING,
    MAX_IDLE,
    MAX_LIFETIME,
    MAX_WAITING,
    MIN_SIZE,
    RECONNECT_DELAY,
    RECONNECT_MAX_DELAY,
)

# The shell's own defaults; the engine's live in `pgfleet._core.defaults`, re-exported here
# so that the pool constructors read every default from this module.
TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0
RESET_TIMEOUT = 5.0
#: psycopg_pool's: seconds of failing background connects before ``reconnect_failed``.
RECONNECT_TIMEOUT = 300.0

__all__ = [
    "CHECK_AFTER_IDLE",
    "CONNECT_TIMEOUT",
    "FAIL_FAST",
    "LEAK_TIMEOUT",
    "MAX_CONNECTING",
    "MAX_IDLE",
    "MAX_LIFETIME",
    "MAX_WAITING",
    "MIN_SIZE",
    "RECONNECT_DELAY",
    "RECONNECT_MAX_DELAY",
    "RECONNECT_TIMEOUT",
    "RESET_TIMEOUT",
    "TIMEOUT",
    "PoolSettings",
    "cluster_env_overrides",
]


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Everything that shapes a pool's behaviour, checked once at construction."""

    min_size: int = MIN_SIZE
    max_size: int | None = None
    timeout: float = TIMEOUT
    max_waiting: int = MAX_WAITING
    max_lifetime: float | None = MAX_LIFETIME
    max_idle: float | None = MAX_IDLE
    check_after_idle: float | None = CHECK_AFTER_IDLE
    leak_timeout: float | None = LEAK_TIMEOUT
    connect_timeout: float = CONNECT_TIMEOUT
    reset_timeout: float = RESET_TIMEOUT
    max_connecting: int = MAX_CONNECTING
    fail_fast: bool = FAIL_FAST
    reconnect_delay: float = RECONNECT_DELAY
    reconnect_max_delay: float = RECONNECT_MAX_DELAY
    #: Behind a pooler in transaction mode (see `pgfleet._postgres.pooler`).
    transaction_pooler: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            _CHECKS[f.name](f.name, getattr(self, f.name))
        if self.max_size is None:
            object.__setattr__(self, "max_size", max(self.min_size, 1))
        assert self.max_size is not None
        if self.max_size < self.min_size:
            raise ValueError(
                f"max_size must be >= min_size, got max_size={self.max_size},"
                f" min_size={self.min_size}"
            )
        if self.reconnect_max_delay < self.reconnect_delay:
            raise ValueError("reconnect_max_delay must be >= reconnect_delay")

    def core(self) -> CoreSettings:
        """The engine's view of these settings."""
        assert self.max_size is not None
        return CoreSettings(
            min_size=self.min_size,
            max_size=self.max_size,
            max_waiting=self.max_waiting,
            max_lifetime=self.max_lifetime,
            max_idle=self.max_idle,
            check_after_idle=self.check_after_idle,
            max_connecting=self.max_connecting,
            leak_timeout=self.leak_timeout,
            fail_fast=self.fail_fast,
            backoff=Backoff(self.reconnect_delay, self.reconnect_max_delay),
        )

    @classmethod
    def env_overrides(
        cls,
        prefix: str = "PGFLEET_",
        environ: Mapping[str, str] | None = None,
        explicit: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Settings found in ``{prefix}{NAME}`` variables (``PGFLEET_MAX_SIZE=20``).

        ``none`` (any case) means None for the settings that accept it. A bad value
        raises ValueError naming the variable, the value and what was expected. With
        `explicit` (the settings passed as arguments, which win over the environment),
        the combination is checked too, and an error names the variables involved.
        """
        env = os.environ if environ is None else environ
        found: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for f in fields(cls):
            variable = f"{prefix}{f.name.upper()}"
            raw = env.get(variable)
            if raw is None:
                continue
            kind = str(f.type)
            text = raw.strip()
            expected = kind.replace(" | None", " or 'none'")
            try:
                if "None" in kind and text.lower() == "none":
                    value: Any = None
                elif kind.startswith("bool"):
                    value = _parse_bool(text)
                elif kind.startswith("int"):
                    value = int(text)
                else:
                    value = float(text)
            except ValueError:
                raise ValueError(f"{variable}={raw!r} is not valid: expected {expected}") from None
            try:
                _CHECKS[f.name](f.name, value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{variable}={raw!r} is not valid: {exc}") from None
            found[f.name] = value
            sources[f.name] = f"{variable}={raw!r}"
        if explicit is not None and found:
            names = {f.name for f in fields(cls)}
            merged = {**found, **{k: v for k, v in explicit.items() if k in names}}
            try:
                cls(**merged)
            except (TypeError, ValueError) as exc:
                used = [sources[name] for name in found if name not in explicit]
                if not used:
                    raise
                raise ValueError(f"{exc} (from the environment: {', '.join(used)})") from None
        return found


#: A cluster pool's own settings, read by ``ClusterPool.from_env``: name -> accepts None.
CLUSTER_SETTINGS: dict[str, bool] = {
    "failover_grace": False,
    "max_replica_lag": True,
    "lag_interval": False,
    "read_your_writes_wait": False,
}


def cluster_env_overrides(
    prefix: str = "PGFLEET_", environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A cluster pool's own settings found in ``{prefix}{NAME}`` variables, in seconds
    (``PGFLEET_FAILOVER_GRACE=10``, ``PGFLEET_MAX_REPLICA_LAG=none``). A bad value raises
    ValueError naming the variable, the value and what was expected."""
    env = os.environ if environ is None else environ
    found: dict[str, Any] = {}
    for name, optional in CLUSTER_SETTINGS.items():
        variable = f"{prefix}{name.upper()}"
        raw = env.get(variable)
        if raw is None:
            continue
        text = raw.strip()
        if optional and text.lower() == "none":
            found[name] = None
            continue
        try:
            value = float(text)
        except ValueError:
            expected = "a number of seconds" + (" or 'none'" if optional else "")
            raise ValueError(f"{variable}={raw!r} is not valid: expected {expected}") from None
        # lag_interval paces a loop: 0 would spin it.
        if not (math.isfinite(value) and (value > 0 if name == "lag_interval" else value >= 0)):
            bound = "> 0" if name == "lag_interval" else ">= 0"
            raise ValueError(
                f"{variable}={raw!r} is not valid: {name} must be a finite number {bound}"
                " of seconds"
            )
        found[name] = value
    return found


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(text)


def _bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")


def _int(name: str, value: object, minimum: int, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _seconds(name: str, value: object, *, optional: bool = False, zero: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        allowed = "a number of seconds" + (" or None" if optional else "")
        raise TypeError(f"{name} must be {allowed}, got {value!r}")
    if math.isnan(value) or value < 0 or (value == 0 and not zero):
        bound = ">= 0" if zero else "> 0"
        raise ValueError(f"{name} must be {bound} seconds, got {value}")


#: How each setting is checked on its own (cross-setting checks are in __post_init__).
_CHECKS: dict[str, Callable[[str, object], None]] = {
    "min_size": lambda name, value: _int(name, value, 0),
    "max_size": lambda name, value: _int(name, value, 1, optional=True),
    "timeout": _seconds,
    "max_waiting": lambda name, value: _int(name, value, 0),
    "max_lifetime": lambda name, value: _seconds(name, value, optional=True),
    "max_idle": lambda name, value: _seconds(name, value, optional=True),
    "check_after_idle": lambda name, value: _seconds(name, value, optional=True, zero=True),
    "leak_timeout": lambda name, value: _seconds(name, value, optional=True),
    "connect_timeout": _seconds,
    "reset_timeout": _seconds,
    "max_connecting": lambda name, value: _int(name, value, 1),
    "fail_fast": _bool,
    "reconnect_delay": _seconds,
    "reconnect_max_delay": _seconds,
    "transaction_pooler": _bool,
}
