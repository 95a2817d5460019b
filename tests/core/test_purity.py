"""The engine stays pure: importing it pulls in no I/O, no clock, no locks, no psycopg."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pgfleet

#: What the engine must never import, directly or through another module.
FORBIDDEN = (
    "psycopg",
    "asyncio",
    "threading",
    "socket",
    "ssl",
    "select",
    "logging",
    "time",
    "pgfleet.errors",
)

# Runs in a fresh interpreter. The package's __init__ imports the shells (and so all of
# the above): a bare package module stands in for it, so that only `pgfleet._core` and
# what it imports run. The interpreter's start-up imports `time` itself: forgotten
# first, so that a later import shows.
PROBE = """
import importlib.util, json, sys, types
forbidden = json.loads(sys.argv[1])
spec = importlib.util.find_spec("pgfleet")
package = types.ModuleType("pgfleet")
package.__path__ = list(spec.submodule_search_locations)
sys.modules["pgfleet"] = package
for name in forbidden:
    sys.modules.pop(name, None)
import pgfleet._core
import pgfleet._core.state
import pgfleet._core.cluster
print(json.dumps(sorted(sys.modules)))
"""


def test_importing_the_engine_imports_nothing_impure() -> None:
    source = Path(pgfleet.__file__).parent.parent
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(FORBIDDEN)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(source)},  # the pgfleet under test, whatever is installed
        check=False,
    )
    assert result.returncode == 0, result.stderr
    modules = set(json.loads(result.stdout))
    assert "pgfleet._core.state" in modules  # the probe did import the engine
    assert "pgfleet._async" not in modules  # and not the package's __init__
    imported = sorted(
        name for name in modules if any(name == f or name.startswith(f"{f}.") for f in FORBIDDEN)
    )
    assert imported == []
