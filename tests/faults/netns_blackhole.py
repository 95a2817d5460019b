"""Kernel-level blackhole, run inside a private network namespace (root only).

Not a test module: ``test_kernel_blackhole.py`` runs it as::

    unshare --net --pid --fork --kill-child --mount-proc -- python netns_blackhole.py

Inside the namespace there is a private loopback and nothing else, so firewall rules touch
nobody but us, and they vanish with the namespace. The script starts its own throwaway
cluster there, then for each flavour (`Pool`, then `AsyncPool`):

1. opens a pool that pings every connection before lending it (``check_after_idle=0``);
2. DROPs every packet to and from the server's port (iptables, else nft): a checkout with
   ``timeout=2`` must keep its deadline and say `PoolTimeout`; twice;
3. removes the rules: the pool must heal by itself (how long it takes is reported) and
   lend ``max_size`` working connections at once;
4. REJECTs with a TCP reset: a checkout fails fast; rules removed, the pool heals again;
5. closes the pool (how long that takes is reported).

It prints one JSON object (the measurements per flavour) on stdout. Everything is bounded;
a watchdog ends the process (and with it the namespace and the server) after
`WATCHDOG` seconds whatever happens.
"""

from __future__ import annotations

import asyncio
import faulthandler
import fcntl
import json
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the tests directory: `support`

import psycopg  # noqa: E402

import pgfleet  # noqa: E402
from support.cluster import PgCluster, find_pg_bin  # noqa: E402

WATCHDOG = 100.0
#: The checkouts' timeout.
TIMEOUT = 2.0
#: The timeout of the pool's close at the end.
CLOSE_TIMEOUT = 2.0
#: How long the pool may take to heal before the script gives up on it.
HEAL_LIMIT = 15.0
POOL_OPTIONS: dict[str, Any] = {
    "min_size": 4,
    "max_size": 4,
    "timeout": TIMEOUT,
    "check_after_idle": 0,
    "connect_timeout": 2.0,
    "reconnect_max_delay": 0.5,
}


#: ``nft add rule inet pgfleet input`` (and, with "chain" for "rule", the chain's creation).
NFT_CHAIN = ["nft", "add", "rule", "inet", "pgfleet", "input"]
NFT_HOOK = "{ type filter hook input priority 0 ; }"


class Firewall:
    """DROP or REJECT the server's port with iptables (or nft, when there is no iptables)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.tool = "iptables" if shutil.which("iptables") else "nft"
        self.rules: list[list[str]] = []
        if self.tool == "nft":
            self._run(["nft", "add", "table", "inet", "pgfleet"])
            self._run([*NFT_CHAIN[:2], "chain", *NFT_CHAIN[3:], NFT_HOOK])

    def drop(self) -> None:
        """A blackhole: nothing in either direction (a --sport rule too, else ACKs leak)."""
        if self.tool == "iptables":
            for flag in ("--dport", "--sport"):
                self._add(["INPUT", "-p", "tcp", flag, str(self.port), "-j", "DROP"])
        else:
            for key in ("dport", "sport"):
                self._run([*NFT_CHAIN, "tcp", key, str(self.port), "drop"])

    def reset(self) -> None:
        """A TCP reset for whatever is sent to the server (--dport only: see testing notes)."""
        if self.tool == "iptables":
            rule = ["INPUT", "-p", "tcp", "--dport", str(self.port)]
            self._add([*rule, "-j", "REJECT", "--reject-with", "tcp-reset"])
        else:
            reject = ["reject", "with", "tcp", "reset"]
            self._run([*NFT_CHAIN, "tcp", "dport", str(self.port), *reject])

    def clear(self) -> None:
        if self.tool == "iptables":
            while self.rules:
                self._run(["iptables", "-w", "-D", *self.rules.pop()])
        else:
            self._run(["nft", "flush", "chain", "inet", "pgfleet", "input"])

    def _add(self, rule: list[str]) -> None:
        self._run(["iptables", "-w", "-A", *rule])
        self.rules.append(rule)

    @staticmethod
    def _run(argv: list[str]) -> None:
        subprocess.run(argv, check=True, timeout=10, capture_output=True, stdin=subprocess.DEVNULL)


def loopback_up() -> None:
    """``ip link set lo up`` without iproute2: set IFF_UP with an ioctl."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)  # struct ifreq: name, flags, padding
        _, flags = struct.unpack("16sH22x", fcntl.ioctl(sock, siocgifflags, request))
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH22x", b"lo", flags | iff_up))


def outcome(started: float, result: object) -> dict[str, Any]:
    return {
        "seconds": round(time.monotonic() - started, 3),
        "error": None
        if isinstance(result, psycopg.Connection | psycopg.AsyncConnection)
        else type(result).__name__,
    }


# -- threads --------------------------------------------------------------------------------


def probe_sync(pool: pgfleet.Pool[Any]) -> dict[str, Any]:
    started = time.monotonic()
    try:
        result: object = pool.getconn(timeout=TIMEOUT)
    except Exception as exc:
        result = exc
    else:
        assert isinstance(result, psycopg.Connection)
        pool.putconn(result)
    return outcome(started, result)


def heal_sync(pool: pgfleet.Pool[Any]) -> dict[str, Any]:
    """Checkouts until one succeeds: how long that took and what failed meanwhile."""
    started = time.monotonic()
    errors: list[str] = []
    while time.monotonic() - started < HEAL_LIMIT:
        try:
            with pool.connection(timeout=TIMEOUT) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError as exc:
            errors.append(type(exc).__name__)
            time.sleep(0.01)
            continue
        break
    healed = time.monotonic() - started
    conns = [pool.getconn(timeout=TIMEOUT) for _ in range(pool.settings.min_size)]
    for conn in conns:
        conn.execute("SELECT 1")
        pool.putconn(conn)
    return {"seconds": round(healed, 3), "errors": errors, "whole": len(conns)}


def run_sync(cluster: PgCluster, firewall: Firewall) -> dict[str, Any]:
    report: dict[str, Any] = {}
    pool = pgfleet.Pool(cluster.conninfo(), **POOL_OPTIONS)
    pool.open(wait=True, timeout=10)
    try:
        firewall.drop()
        report["drop"] = [probe_sync(pool) for _ in range(2)]
        firewall.clear()
        report["drop_heal"] = heal_sync(pool)
        firewall.reset()
        report["reset"] = [probe_sync(pool) for _ in range(2)]
        firewall.clear()
        report["reset_heal"] = heal_sync(pool)
    finally:
        firewall.clear()
        started = time.monotonic()
        pool.close(timeout=CLOSE_TIMEOUT)
        report["close_seconds"] = round(time.monotonic() - started, 3)
    return report


# -- asyncio --------------------------------------------------------------------------------


async def probe_async(pool: pgfleet.AsyncPool[Any]) -> dict[str, Any]:
    started = time.monotonic()
    try:
        result: object = await pool.getconn(timeout=TIMEOUT)
    except Exception as exc:
        result = exc
    else:
        assert isinstance(result, psycopg.AsyncConnection)
        await pool.putconn(result)
    return outcome(started, result)


async def heal_async(pool: pgfleet.AsyncPool[Any]) -> dict[str, Any]:
    started = time.monotonic()
    errors: list[str] = []
    while time.monotonic() - started < HEAL_LIMIT:
        try:
            async with pool.connection(timeout=TIMEOUT) as conn:
                await conn.execute("SELECT 1")
        except psycopg.OperationalError as exc:
            errors.append(type(exc).__name__)
            await asyncio.sleep(0.01)
            continue
        break
    healed = time.monotonic() - started
    conns = [await pool.getconn(timeout=TIMEOUT) for _ in range(pool.settings.min_size)]
    for conn in conns:
        await conn.execute("SELECT 1")
        await pool.putconn(conn)
    return {"seconds": round(healed, 3), "errors": errors, "whole": len(conns)}


async def run_async(cluster: PgCluster, firewall: Firewall) -> dict[str, Any]:
    report: dict[str, Any] = {}
    pool = pgfleet.AsyncPool(cluster.conninfo(), **POOL_OPTIONS)
    await pool.open(wait=True, timeout=10)
    try:
        firewall.drop()
        report["drop"] = [await probe_async(pool) for _ in range(2)]
        firewall.clear()
        report["drop_heal"] = await heal_async(pool)
        firewall.reset()
        report["reset"] = [await probe_async(pool) for _ in range(2)]
        firewall.clear()
        report["reset_heal"] = await heal_async(pool)
    finally:
        firewall.clear()
        started = time.monotonic()
        await pool.close(timeout=CLOSE_TIMEOUT)
        report["close_seconds"] = round(time.monotonic() - started, 3)
    return report


def main() -> int:
    faulthandler.dump_traceback_later(WATCHDOG, exit=True)
    loopback_up()
    bin_dir = find_pg_bin()
    if bin_dir is None:
        print("no PostgreSQL server binaries", file=sys.stderr)
        return 2
    results: dict[str, Any] = {}
    with PgCluster(bin_dir) as cluster:
        firewall = Firewall(cluster.port)
        results["firewall"] = firewall.tool
        results["sync"] = run_sync(cluster, firewall)
        results["async"] = asyncio.run(run_async(cluster, firewall))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
