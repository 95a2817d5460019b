"""The cluster pool's decisions (`pgfleet._core.cluster`): plain calls, a fake clock."""

from __future__ import annotations

import pytest

from pgfleet._core.cluster import (
    PROBE_DELAY_GRACE_MAX,
    ClusterState,
    ConnFacts,
    LagTracker,
    format_lsn,
    parse_lsn,
    timeline_of_walfile,
)

A, B, C = 0, 1, 2


def cluster(hosts: int = 2, grace: float = 5.0, max_lag: float | None = None) -> ClusterState:
    return ClusterState.of([f"h{i}:5432" for i in range(hosts)], grace, max_lag)


def writable(state: ClusterState, host: int, timeline: int, now: float = 0.0) -> bool:
    """A probe of `host` found it writable on `timeline`."""
    assert state.start_probe(host)
    return state.probed(host, now, standby=False, timeline=timeline)


def primary_of(state: ClusterState) -> int | None:
    """The primary (a call: mypy does not keep an earlier narrowing of the attribute)."""
    return state.primary


def test_parsers() -> None:
    assert timeline_of_walfile("000000020000000000000003") == 2
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"


def test_a_connection_on_an_older_timeline_is_fenced() -> None:
    state = cluster()
    assert state.judge_write(ConnFacts(B, 0.0, False, 2), 1.0) == "ok"
    assert (state.primary, state.newest_timeline) == (B, 2)
    assert state.judge_write(ConnFacts(A, 0.0, False, 1), 2.0) == "stale"
    assert state.hosts[A].role == "stale"
    assert (state.hosts[A].fenced, state.fenced) == (1, 1)
    assert state.primary == B  # the refusal does not touch the real primary
    # Logged once per episode.
    assert state.is_news_of_staleness(A)
    assert not state.is_news_of_staleness(A)


def test_a_connection_to_a_lost_primary_does_not_elect_it_again() -> None:
    state = cluster()
    assert state.judge_write(ConnFacts(A, 0.0, False, 1), 0.0) == "ok"
    assert state.lost(A, 1.0)
    # A connection the loss has not reached yet: refused, the host is not re-elected.
    assert state.judge_write(ConnFacts(A, 0.0, False, 1), 1.1) == "moved"
    assert state.primary is None
    assert state.failovers == 0
    # A newer timeline is news enough on its own.
    assert state.judge_write(ConnFacts(B, 1.2, False, 2), 1.2) == "ok"
    assert (primary_of(state), state.failovers) == (B, 1)


def test_the_same_primary_found_again_is_not_a_failover() -> None:
    state = cluster()
    assert writable(state, A, 1, 0.0)
    assert state.lost(A, 1.0, demoted=True)  # a read-only answer, say: then found again
    assert writable(state, A, 1, 1.1)
    assert (primary_of(state), state.failovers) == (A, 0)
    assert state.lost(A, 2.0)
    assert writable(state, B, 2, 2.1)
    assert (primary_of(state), state.failovers) == (B, 1)


def test_a_connection_made_on_a_standby_needs_its_timeline() -> None:
    state = cluster()
    assert state.judge_write(ConnFacts(B, 0.0, True, None), 1.0) == "standby"
    assert state.primary is None


def test_a_newer_timeline_makes_the_old_primary_stale() -> None:
    state = cluster()
    assert state.judge_write(ConnFacts(A, 0.0, False, 1), 0.0) == "ok"
    assert state.judge_write(ConnFacts(B, 0.0, False, 2), 1.0) == "ok"
    assert state.primary == B
    assert state.hosts[A].role == "stale"
    assert state.failovers == 1
    # The old primary's connections, made before, are refused from now on.
    assert state.judge_write(ConnFacts(A, -5.0, False, 1), 2.0) == "stale"


def test_first_discovery_waits_for_every_host_before_electing() -> None:
    # The stale server answers first: it must not win before the newer one answered.
    state = cluster(3)
    for host in (A, B, C):
        assert state.start_probe(host)
    assert not state.probed(A, 0.01, standby=False, timeline=1)
    assert state.primary is None
    assert not state.probed(C, 0.02, standby=None, timeline=None)
    assert state.probed(B, 0.03, standby=False, timeline=2)
    assert (primary_of(state), state.newest_timeline) == (B, 2)
    assert state.hosts[A].role == "stale"
    assert state.hosts[C].role == "down"


def test_first_discovery_elects_when_the_last_answer_is_a_standby() -> None:
    state = cluster()
    for host in (A, B):
        assert state.start_probe(host)
    assert not state.probed(A, 0.0, standby=False, timeline=3)
    assert state.probed(B, 0.0, standby=True, timeline=None)
    assert state.primary == A
    assert state.hosts[B].role == "standby"


def test_later_discoveries_take_the_first_writable_server_not_older() -> None:
    state = cluster()
    writable(state, A, 1)
    assert state.lost(A, 10.0)
    assert state.start_probe(A)
    assert state.start_probe(B)
    assert not state.probed(A, 10.01, standby=None, timeline=None)
    assert not state.probed(B, 10.02, standby=True, timeline=None)  # not promoted yet
    assert state.primary is None
    assert writable(state, B, 2, 10.05)
    assert (primary_of(state), state.failovers) == (B, 1)
    assert state.lost_at is None


def test_a_probe_never_elects_an_older_timeline() -> None:
    state = cluster()
    writable(state, B, 2)
    state.lost(B, 1.0)
    assert not writable(state, A, 1, 1.1)
    assert state.primary is None
    assert state.hosts[A].role == "stale"


def test_probing_is_single_flight_per_host() -> None:
    state = cluster()
    assert state.start_probe(A)
    assert not state.start_probe(A)
    state.probed(A, 0.0, standby=None, timeline=None)
    assert state.start_probe(A)


def test_writers_wait_within_the_grace_then_fail_fast() -> None:
    state = cluster(grace=2.0)
    assert state.write_wait_until(0.0) == 2.0  # never found one: the opening's wait
    writable(state, A, 1)
    assert state.write_wait_until(1.0) is not None  # meaningless while known, never None
    assert state.lost(A, 10.0)
    assert not state.lost(A, 10.5)  # already lost: the loss time stays the first one
    assert state.write_wait_until(11.0) == 12.0
    assert state.write_wait_until(12.0) is None
    writable(state, B, 2, 20.0)
    assert state.lost_at is None


def test_probe_delay_stays_short_within_the_grace() -> None:
    state = cluster(grace=2.0)
    writable(state, A, 1)
    state.lost(A, 10.0)
    delays = [state.probe_delay(10.5) for _ in range(20)]
    assert delays[0] < delays[-1] <= PROBE_DELAY_GRACE_MAX
    assert delays == sorted(delays)
    after = [state.probe_delay(13.0) for _ in range(5)]
    assert after[-1] > PROBE_DELAY_GRACE_MAX  # a real outage: gentler
    assert after[-1] <= 1.0


def test_demotion_is_counted_and_loses_the_primary() -> None:
    state = cluster()
    writable(state, A, 1)
    assert state.lost(A, 1.0, demoted=True)
    assert state.hosts[A].demoted == 1
    assert state.hosts[A].role == "unknown"
    assert not state.lost(B, 1.0)  # not the primary


def test_lag_is_the_age_of_the_first_position_not_replayed() -> None:
    lag = LagTracker()
    assert lag.lag(0, 5.0) == 0.0  # nothing known: nothing to lag behind
    lag.primary_at(100, 1.0)
    lag.primary_at(200, 2.0)
    lag.primary_at(200, 2.5)  # no news
    lag.primary_at(300, 3.0)
    assert lag.newest == 300
    assert lag.lag(300, 3.5) == 0.0
    assert lag.lag(250, 3.5) == pytest.approx(0.5)
    assert lag.lag(150, 3.5) == pytest.approx(1.5)
    assert lag.lag(50, 3.5) == pytest.approx(2.5)
    lag.reset()
    assert lag.newest is None


def test_lag_samples_are_bounded() -> None:
    lag = LagTracker(keep=10.0)
    for second in range(100):
        lag.primary_at(second + 1, float(second))
    assert len(lag._times) <= 12


def test_readers_spread_and_skip_the_unfit() -> None:
    state = cluster(4, max_lag=1.0)
    writable(state, A, 1)
    for host in (B, C, 3):
        state.standby_at(host, 100, 0.0)
    state.hosts[3].role = "stale"
    assert sorted(state.readers(0.0)) == [B, C]
    state.hosts[B].reads = 5
    assert state.readers(0.0) == [C, B]  # least used first
    # C falls behind by more than the bound: excluded.
    state.lag.primary_at(150, 1.0)
    state.lag.primary_at(400, 2.0)
    state.standby_at(B, 400, 3.0)
    state.standby_at(C, 120, 3.0)
    assert state.readers(3.0) == [B]
    # Nothing fit: the caller falls back to the primary.
    state.standby_at(B, 120, 3.0)
    assert state.readers(3.0) == []


def test_readers_after_a_token_prefer_those_known_past_it() -> None:
    state = cluster(3)
    writable(state, A, 1)
    state.standby_at(B, 100, 0.0)
    state.standby_at(C, 300, 0.0)
    assert state.readers(0.0, min_lsn=200) == [C, B]
    assert state.replayed_past(C, 200)
    assert not state.replayed_past(B, 200)


def test_a_standby_out_of_recovery_is_no_longer_a_reader() -> None:
    state = cluster()
    writable(state, A, 1)
    state.standby_at(B, 100, 0.0)
    assert state.readers(0.0) == [B]
    state.standby_at(B, None, 1.0)
    assert state.readers(1.0) == []
    assert state.hosts[B].role == "unknown"


def test_a_stale_primary_rebuilt_as_a_standby_reads_again() -> None:
    state = cluster()
    writable(state, B, 2)
    assert state.judge_write(ConnFacts(A, 0.0, False, 1), 1.0) == "stale"
    assert state.readers(1.0) == []
    state.standby_at(A, 500, 2.0)
    assert state.hosts[A].role == "standby"
    assert state.readers(2.0) == [A]
