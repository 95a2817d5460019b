"""Measure the numbers in docs/clusters-facts.md on this machine (not a test: takes ~1 min).

    PYTHONPATH=tests .venv/bin/python tests/cluster/measure_facts.py [--rounds N]

Prints one line per measurement: the median (min-max) of N rounds, and what the servers
reported. The facts that are not timings are pinned by tests/cluster/test_facts.py and
test_replication_fixture.py.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from support.cluster import SERVER_OS_USER, PgCluster, _server_ids, find_pg_bin
from support.replication import (
    REPLICATOR,
    Endpoint,
    PgNode,
    Replication,
    build_replication_template,
    multi_host_conninfo,
    parse_lsn,
)


def stats(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"{statistics.median(ms):.0f} ms ({min(ms):.0f}-{max(ms):.0f}, n={len(ms)})"


@contextmanager
def timed(results: dict[str, list[float]], name: str) -> Iterator[None]:
    start = time.monotonic()
    yield
    results.setdefault(name, []).append(time.monotonic() - start)


def app(node: PgCluster, **params: Any) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(node.conninfo(connect_timeout=5, **params), autocommit=True)


def pg_ctl(node: PgNode, *args: str) -> None:
    argv = [str(node.bin_dir / "pg_ctl"), "-D", str(node.data_dir), *args]
    if _server_ids() is not None:
        argv = ["runuser", "-u", SERVER_OS_USER, "--", *argv]
    subprocess.run(argv, check=True, capture_output=True)


def build_costs(rt: PgNode, rounds: int) -> None:
    results: dict[str, list[float]] = {}
    for _ in range(rounds):
        for standbys in (1, 2):
            with timed(results, f"primary + {standbys} standby(s): build"):
                rs = Replication(rt, standbys=standbys)
            with timed(results, f"primary + {standbys} standby(s): destroy"):
                rs.destroy()
        with (
            timed(
                results,
                "failover scenario (build, crash, promote, old back writable, "
                "old back as standby, destroy)",
            ),
            Replication(rt, standbys=1) as rs,
        ):
            old, new = rs.primary, rs.standbys[0]
            rs.crash(old)
            with timed(results, "  crash + promote (until a write succeeds)"):
                rs.promote(new)
            with timed(results, "  start_old_primary_as_writable"):
                rs.start_old_primary_as_writable(old)
            with timed(results, "  restart_as_standby (pg_basebackup)"):
                rs.restart_as_standby(old, new)
    for name, values in results.items():
        print(f"{name}: {stats(values)}")


def promotion(rt: PgNode, rounds: int) -> None:
    """From `pg_ctl promote -W` to the first write; what a new connection reports at once;
    when pg_control_checkpoint() catches up."""
    to_write: list[float] = []
    ckpt_lag: list[float] = []
    first_seen: list[tuple[Any, ...]] = []
    for i in range(rounds):
        with Replication(rt, standbys=1) as rs:
            old, new = rs.primary, rs.standbys[0]
            with app(old) as conn:
                conn.execute("CREATE TABLE w (x int)")
            rs.wait_replayed(new)
            if i % 2:
                rs.crash(old)
            start = time.monotonic()
            pg_ctl(new, "promote", "-W")
            wrote = None
            first: tuple[Any, ...] | None = None
            while time.monotonic() - start < 30:
                with app(new) as conn:
                    row = conn.execute(
                        "SELECT pg_is_in_recovery(), CASE WHEN NOT pg_is_in_recovery()"
                        " THEN pg_walfile_name(pg_current_wal_lsn()) END,"
                        " (pg_control_checkpoint()).timeline_id"
                    ).fetchone()
                    assert row is not None
                    if first is None:
                        hot = conn.info.parameter_status("in_hot_standby")
                        first = (round((time.monotonic() - start) * 1000), hot, *row)
                    if wrote is None:
                        try:
                            conn.execute("INSERT INTO w VALUES (1)")
                            wrote = time.monotonic() - start
                        except psycopg.errors.ReadOnlySqlTransaction:
                            pass
                    if wrote is not None and row[2] == 2:
                        ckpt_lag.append(time.monotonic() - start)
                        break
            assert wrote is not None
            assert first is not None
            to_write.append(wrote)
            first_seen.append(first)
    print(f"pg_ctl promote -W -> first write succeeds: {stats(to_write)}")
    print(f"pg_ctl promote -W -> pg_control_checkpoint().timeline_id is 2: {stats(ckpt_lag)}")
    print(
        "first new connection after pg_ctl returned "
        "(ms, in_hot_standby, in_recovery, walfile, checkpoint tli):"
    )
    for seen in first_seen:
        print(f"  {seen}")


def replay_visibility(rt: PgNode) -> None:
    """How fast a commit reaches a standby, by synchronous_commit and wal_writer_delay; and
    whether waiting for pg_current_wal_insert_lsn() can stall."""
    with Replication(rt, standbys=1) as rs:
        primary, standby = rs.primary, rs.standbys[0]
        with app(primary) as conn:
            conn.execute("CREATE TABLE r (x int)")
        rs.wait_replayed(standby)
        for delay in ("200ms", "10ms"):
            primary.set_config(wal_writer_delay=delay)
            for commit in ("off", "on"):
                times = []
                for k in range(5):
                    with app(primary) as conn, app(standby) as sconn:
                        conn.execute(
                            sql.SQL("SET synchronous_commit = {}").format(sql.Literal(commit))
                        )
                        conn.execute("INSERT INTO r VALUES (%s)", [k])
                        start = time.monotonic()
                        probe = "SELECT count(*) FROM r WHERE x = %s"
                        while sconn.execute(probe, [k]).fetchone() != (1,):
                            time.sleep(0.001)
                        times.append(time.monotonic() - start)
                        conn.execute("DELETE FROM r")
                print(
                    f"wal_writer_delay={delay} synchronous_commit={commit}: "
                    f"row visible on the standby after {stats(times)}"
                )
        # Idle primary: is all of pg_current_wal_insert_lsn() ever flushed and sent?
        primary.set_config(wal_writer_delay="10ms")
        with app(primary) as conn:
            conn.execute("INSERT INTO r VALUES (1)")  # async commit
            write_lsn, insert_lsn = conn.execute(
                "SELECT pg_current_wal_lsn()::text, pg_current_wal_insert_lsn()::text"
            ).fetchone() or ("", "")
        start = time.monotonic()
        with app(standby) as sconn:
            while time.monotonic() - start < 40:
                row = sconn.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()
                if row and parse_lsn(row[0]) >= parse_lsn(insert_lsn):
                    break
                time.sleep(0.01)
        print(
            f"idle primary, async commit: write lsn {write_lsn}, insert lsn {insert_lsn}; "
            f"standby replayed the insert lsn after {time.monotonic() - start:.2f} s"
        )


def apply_delay(rt: PgNode) -> None:
    with Replication(rt, standbys=1) as rs:
        primary, standby = rs.primary, rs.standbys[0]
        with app(primary) as conn:
            conn.execute("CREATE TABLE d (x int)")
        rs.wait_replayed(standby)
        rs.set_apply_delay(standby, 500)
        with app(primary) as conn:
            conn.execute("SET synchronous_commit = on")
            conn.execute("INSERT INTO d VALUES (1)")
            (token,) = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone() or ("",)
        start = time.monotonic()
        last = None
        with app(standby) as sconn:
            print(
                f"recovery_min_apply_delay as seen by app: "
                f"{sconn.execute('SHOW recovery_min_apply_delay').fetchone()}"
            )
            while time.monotonic() - start < 5:
                row = sconn.execute(
                    "SELECT pg_last_wal_receive_lsn() >= %s::pg_lsn,"
                    " pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn()),"
                    " now() - pg_last_xact_replay_timestamp(),"
                    " (SELECT count(*) FROM d)",
                    [token, token],
                ).fetchone()
                assert row is not None
                state = (row[0], row[1] <= 0, row[3])
                if state != last:
                    print(
                        f"  t={time.monotonic() - start:.3f} s: received {row[0]}, "
                        f"bytes to replay {row[1]}, last replayed xact age {row[2]}, "
                        f"rows {row[3]}"
                    )
                    last = state
                if row[3]:
                    break
                time.sleep(0.005)
        with primary.connect_superuser() as conn:
            print(
                "  pg_stat_replication (superuser):",
                conn.execute(
                    "SELECT state, write_lag, flush_lag, replay_lag FROM pg_stat_replication"
                ).fetchall(),
            )


def connect_attempts(rt: PgNode) -> None:
    """target_session_attrs on two-host conninfos whose first host is down or hung."""
    with Replication(rt, standbys=1) as rs:
        primary, standby = rs.primary, rs.standbys[0]
        stopped = PgNode.from_template(rt)
        try:
            stopped.start()
            stopped.stop()
            hung = PgNode.from_template(rt)
            try:
                hung.start()
                names = {primary.port: "primary", standby.port: "standby"}

                def attempt(first: Any, second: Any, attrs: str) -> str:
                    info = multi_host_conninfo(
                        [first, second], target_session_attrs=attrs, connect_timeout=2
                    )
                    start = time.monotonic()
                    try:
                        with psycopg.connect(info) as conn:
                            got = names.get(conn.info.port, str(conn.info.port))
                    except psycopg.OperationalError:
                        got = "fail"
                    return f"{got} in {(time.monotonic() - start) * 1000:.0f} ms"

                for label, first in (
                    ("unused port", Endpoint.unused()),
                    ("stopped postmaster", stopped),
                ):
                    for second_name, second in (("primary", primary), ("standby", standby)):
                        for attrs in ("any", "read-write", "primary", "prefer-standby", "standby"):
                            print(
                                f"{label}, {second_name}; {attrs}: {attempt(first, second, attrs)}"
                            )
                with hung.paused():
                    for attrs in ("any", "read-write", "prefer-standby"):
                        print(
                            f"SIGSTOPped postmaster, primary; {attrs}: "
                            f"{attempt(hung, primary, attrs)}"
                        )
            finally:
                hung.destroy()
        finally:
            stopped.destroy()


def sync_old_primary(rt: PgNode) -> None:
    """An old primary that named a synchronous standby, restarted as it was: its commits
    wait for a standby that never comes; statement_timeout does not end the wait (the
    server disables it before committing); a cancel request does."""
    with Replication(rt, standbys=1) as rs:
        old, new = rs.primary, rs.standbys[0]
        with app(old) as conn:
            conn.execute("CREATE TABLE s (x int)")
        rs.set_synchronous([new])
        rs.crash(old)
        rs.promote(new)
        rs.start_old_primary_as_writable(old)
        notices: list[str] = []
        outcome: list[str] = []
        with app(old, options="-c statement_timeout=500") as conn:
            conn.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
            conn.execute("SET synchronous_commit = on")

            def insert() -> None:
                try:
                    conn.execute("INSERT INTO s VALUES (1)")
                    outcome.append("returned")
                except psycopg.Error as exc:
                    outcome.append(f"raised {exc.sqlstate}: {exc}")

            writer = threading.Thread(target=insert)
            start = time.monotonic()
            writer.start()
            writer.join(2.0)
            blocked = writer.is_alive()
            with app(old) as other:
                seen = other.execute("SELECT count(*) FROM s").fetchone()
            conn.cancel_safe()
            writer.join(10)
            took = time.monotonic() - start
        with app(old) as conn:
            rows = conn.execute("SELECT count(*) FROM s").fetchone()
        print(
            "old primary with synchronous_standby_names, INSERT with statement_timeout=500:"
            f" still blocked after 2 s: {blocked}; row visible to another session meanwhile:"
            f" {seen}; after a cancel request: {outcome} ({took:.2f} s), notices {notices};"
            f" rows now {rows}"
        )


def rewind_vs_basebackup(rt: PgNode) -> None:
    """pg_rewind needs full_page_writes=on and wal_log_hints (or checksums)."""
    with Replication(rt, standbys=1) as rs:
        old, new = rs.primary, rs.standbys[0]
        rs.stop(old)
        rs.promote(new)
        src = make_conninfo(
            "",
            host="127.0.0.1",
            port=new.port,
            user="postgres",
            password=new.password,
            dbname="postgres",
        )
        out = old._run(
            [
                str(old.bin_dir / "pg_rewind"),
                "-D",
                str(old.data_dir),
                "--source-server",
                src,
                "--no-sync",
            ],
            timeout=60,
            what="pg_rewind",
            check=False,
        )
        print(
            f"pg_rewind with the harness settings: exit {out.returncode}: "
            f"{str(out.stdout).strip().splitlines()[-1]}"
        )
    template = PgNode.from_template(rt)
    try:
        template.start()
        template.set_config(full_page_writes=True, wal_log_hints=True)
        template.stop()
        (template.data_dir / "postmaster.opts").unlink(missing_ok=True)
        times = []
        for _ in range(3):
            with Replication(template, standbys=1) as rs:
                old, new = rs.primary, rs.standbys[0]
                with app(old) as conn:
                    conn.execute("CREATE TABLE a AS SELECT generate_series(1, 1000) AS i")
                rs.wait_replayed(new)
                rs.stop(old)
                rs.promote(new)
                start = time.monotonic()
                src = make_conninfo(
                    "",
                    host="127.0.0.1",
                    port=new.port,
                    user="postgres",
                    password=new.password,
                    dbname="postgres",
                )
                old._run(
                    [
                        str(old.bin_dir / "pg_rewind"),
                        "-D",
                        str(old.data_dir),
                        "--source-server",
                        src,
                        "--no-sync",
                    ],
                    timeout=60,
                    what="pg_rewind",
                )
                times.append(time.monotonic() - start)
        print(
            f"pg_rewind (full_page_writes=on, wal_log_hints=on), clean stop: {stats(times)}"
            f" (then rewrite primary_conninfo for {REPLICATOR}, standby.signal, harness conf)"
        )
    finally:
        template.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", help="comma-separated step names (default: all)")
    args = parser.parse_args()
    bin_dir = find_pg_bin()
    assert bin_dir is not None, "no PostgreSQL binaries"
    template = PgCluster.build_template(bin_dir)
    try:
        start = time.monotonic()
        rt = build_replication_template(template)
        print(f"replication template: {stats([time.monotonic() - start])}")
        try:
            steps: dict[str, Callable[[], None]] = {
                "build": lambda: build_costs(rt, args.rounds),
                "promotion": lambda: promotion(rt, args.rounds),
                "replay": lambda: replay_visibility(rt),
                "delay": lambda: apply_delay(rt),
                "connect": lambda: connect_attempts(rt),
                "sync": lambda: sync_old_primary(rt),
                "rewind": lambda: rewind_vs_basebackup(rt),
            }
            only = args.only.split(",") if args.only else list(steps)
            for name in only:
                steps[name]()
                print()
        finally:
            rt.destroy()
    finally:
        template.destroy()
    with open("/proc/loadavg") as f:
        print(f"load average at the end: {f.read().split()[:3]}")


if __name__ == "__main__":
    main()
