"""A kernel-level blackhole (iptables DROP) for both flavours, inside ``unshare --net``.

A userspace proxy that stops forwarding still has its kernel ACK every byte, so only a
firewall shows what a dead network does to TCP: nothing comes back at all, and only
deadlines (connect timeout, bounded ping, ``tcp_user_timeout``, keepalives) end a wait.
The scenario runs in a subprocess inside a private network namespace with its own server
(see ``netns_blackhole.py``); it needs root and ``unshare``, and is skipped without them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from support.cluster import find_pg_bin

HELPER = Path(__file__).resolve().parent / "netns_blackhole.py"
UNSHARE = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
#: A checkout with timeout=2 must return within this.
BOUND = 2.5
#: The helper's whole run (two flavours, about 15 s) must end within this.
HELPER_LIMIT = 110.0


@cache
def namespace_unavailable() -> str | None:
    """Why the scenario cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root: firewall rules inside `unshare --net`"
    if shutil.which("unshare") is None:
        return "needs unshare (util-linux)"
    try:
        probe = subprocess.run(
            [*UNSHARE, "true"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare --net does not work here: {exc}"
    if probe.returncode != 0:
        return f"unshare --net is not permitted here: {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def blackhole_report() -> dict[str, Any]:
    reason = namespace_unavailable()
    if reason is not None:
        pytest.skip(reason)
    if shutil.which("iptables") is None and shutil.which("nft") is None:
        pytest.fail(
            "root and unshare are here but neither iptables nor nft: install one"
            " (apt-get install iptables)",
            pytrace=False,
        )
    if find_pg_bin() is None:
        pytest.skip("no PostgreSQL server binaries")
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
        assert probe["seconds"] < BOUND, report
    # The rules are gone: the pool heals by itself and lends max_size working connections.
    assert report["drop_heal"]["whole"] == 4, report
    assert report["drop_heal"]["seconds"] < BOUND, report
    # A reset (REJECT with tcp-reset): the checkouts fail fast, then the pool heals again.
    for probe in report["reset"]:
        assert probe["error"] in ("PoolTimeout", "DatabaseUnavailable"), report
        assert probe["seconds"] < BOUND, report
    assert report["reset_heal"]["whole"] == 4, report
    # close() is bounded too, whatever connects or checks are still in flight.
    assert report["close_seconds"] < 2 + 1.5, report
