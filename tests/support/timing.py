"""Wall-clock bounds for tests that run on a small, shared, sometimes overloaded machine.

Tests do not measure speed (the benchmarks in ``bench/`` do); they catch hangs and waits
that should not happen. Two kinds of bound, both generous enough not to flake under load and
tight enough that a hang, or a wait for the wrong timeout, still fails:

- a call given a deadline ``D`` returns within `deadline_bound` (``max(1.5 D, D + 1)``);
- something that should be quick ("fails fast", "heals at once", "refused at once") happens
  `well_under` the timeout the caller gave: within half of it, so that waiting out that
  timeout still fails.
"""

from __future__ import annotations


def deadline_bound(deadline: float) -> float:
    """How long a call given `deadline` seconds may take before it counts as hung."""
    return max(1.5 * deadline, deadline + 1.0)


def well_under(timeout: float) -> float:
    """The bound for a quick outcome when the caller allowed `timeout` seconds: half of it."""
    return timeout / 2
