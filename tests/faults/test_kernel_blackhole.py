"""A kernel-level blackhole (iptables DROP) for both flavours, inside ``unshare --net``.

A userspace proxy that stops forwarding still has its kernel ACK every byte, so only a
firewall shows what a dead network does to TCP: nothing comes back at all, and only
deadlines (connect timeout, bounded ping, ``tcp_user_timeout``, keepalives) end a wait.
The scenario runs in a subprocess inside a private network namespace with its own server
(see ``netns_blackhole.py``). It needs root, ``unshare`` (util-linux) and iptables or nft
(Debian: ``apt-get install iptables``); without them it skips, saying which is missing, and
in CI it fails (``support.requirements``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from faults.netns_blackhole import CLOSE_TIMEOUT, POOL_OPTIONS, TIMEOUT
from support.requirements import require_tool, unavailable
from support.timing import deadline_bound

HELPER = Path(__file__).resolve().parent / "netns_blackhole.py"
UNSHARE = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
#: Once the rules are gone the pool heals by itself: at worst a connect attempt that was
#: under way times out, one back-off later the next one succeeds.
HEAL_DEADLINE = POOL_OPTIONS["connect_timeout"] + POOL_OPTIONS["reconnect_max_delay"]
#: The helper's whole run (two flavours, about 15 s) must end within this.
HELPER_LIMIT = 110.0


def require_namespace() -> None:
    """Skip (fail in CI) unless firewall rules can be set inside ``unshare --net`` here."""
    if os.geteuid() != 0:
        unavailable("needs root: firewall rules inside `unshare --net`")
    require_tool("unshare", package="util-linux")
    require_tool("iptables", "nft", package="iptables")
    try:
        probe = subprocess.run(
            [*UNSHARE, "true"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        unavailable(f"`unshare --net` does not work here: {exc}")
    if probe.returncode != 0:
        unavailable(f"`unshare --net` is not permitted here: {probe.stderr.strip()}")


@pytest.fixture(scope="module")
def blackhole_report(pg_bin: Path) -> dict[str, Any]:
    """The helper's measurements (it finds the same server binaries as `pg_bin`)."""
    require_namespace()
    path = [str(HELPER.parent.parent), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    try:
        proc = subprocess.run(
            [*UNSHARE, sys.executable, str(HELPER)],
            capture_output=True,
            text=True,
            timeout=HELPER_LIMIT,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        # Captured output of a timed-out run is bytes, even with text=True.
        stderr = (exc.stderr or b"").decode(errors="replace")
        pytest.fail(f"the namespace scenario did not end within {HELPER_LIMIT} s: {stderr}")
    assert proc.returncode == 0, f"exit status {proc.returncode}\n{proc.stderr[-4000:]}"
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_kernel_blackhole(blackhole_report: dict[str, Any], flavour: str) -> None:
    report = blackhole_report[flavour]
    # DROP both ways: each checkout keeps its deadline and says PoolTimeout.
    for probe in report["drop"]:
        assert probe["error"] in ("PoolTimeout", "DatabaseUnavailable"), report
        assert probe["seconds"] < deadline_bound(TIMEOUT), report
    # The rules are gone: the pool heals by itself and lends max_size working connections.
    assert report["drop_heal"]["whole"] == 4, report
    assert report["drop_heal"]["seconds"] < deadline_bound(HEAL_DEADLINE), report
    # A reset (REJECT with tcp-reset): the checkouts fail within their deadline, then the
    # pool heals again.
    for probe in report["reset"]:
        assert probe["error"] in ("PoolTimeout", "DatabaseUnavailable"), report
        assert probe["seconds"] < deadline_bound(TIMEOUT), report
    assert report["reset_heal"]["whole"] == 4, report
    # close() is bounded too, whatever connects or checks are still in flight.
    assert report["close_seconds"] < deadline_bound(CLOSE_TIMEOUT), report
