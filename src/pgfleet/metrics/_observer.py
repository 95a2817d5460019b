"""`PoolObserver`: what a pool tells an exporter synchronously, when one asks to be told.

A pool's ``_observer`` is None unless an exporter sets it (`pgfleet.metrics.otel` does, for
its histograms). The pool then calls it outside its lock, in the caller's thread or task
(so that a span current there can be linked as an exemplar), with durations in seconds it
reads from its own clock. With no observer, each call site costs one attribute test.
"""

from __future__ import annotations

from typing import Protocol


class PoolObserver(Protocol):
    """Told of each successful checkout, return and connection attempt, as it happens."""

    def checked_out(self, waited: float) -> None:
        """A caller got a connection `waited` seconds after asking for it."""

    def returned(self, used: float) -> None:
        """A connection came back `used` seconds after it was lent (reset included)."""

    def created(self, took: float) -> None:
        """A new connection was opened in `took` seconds."""
