"""The retry decision (pgfleet._retry): plain function calls, no server."""

from __future__ import annotations

import random

import psycopg
import pytest

from pgfleet._retry import RETRY_SQLSTATES, TxSettings, Verdict, transaction_modes

SETTINGS = TxSettings.build(max_attempts=3)


def decide(
    *,
    attempt: int = 1,
    database_error: bool = True,
    sqlstate: str | None = None,
    lost: bool = False,
    commit_sent: bool = False,
) -> Verdict:
    return SETTINGS.decide(
        attempt=attempt,
        database_error=database_error,
        sqlstate=sqlstate,
        lost=lost,
        commit_sent=commit_sent,
    )


@pytest.mark.parametrize("sqlstate", sorted(RETRY_SQLSTATES))
@pytest.mark.parametrize("commit_sent", [False, True])
@pytest.mark.parametrize("lost", [False, True])
def test_the_server_said_it_rolled_back(sqlstate: str, commit_sent: bool, lost: bool) -> None:
    assert decide(sqlstate=sqlstate, commit_sent=commit_sent, lost=lost) is Verdict.RETRY
    assert decide(sqlstate=sqlstate, attempt=3) is Verdict.GIVE_UP


def test_a_connection_lost_before_commit_is_retried() -> None:
    assert decide(sqlstate="57P01", lost=True) is Verdict.RETRY
    assert decide(sqlstate=None, lost=True) is Verdict.RETRY
    assert decide(lost=True, attempt=3) is Verdict.GIVE_UP


def test_a_connection_lost_while_commit_was_in_flight_is_in_doubt() -> None:
    assert decide(lost=True, commit_sent=True) is Verdict.IN_DOUBT
    assert decide(sqlstate="57P01", lost=True, commit_sent=True, attempt=3) is Verdict.IN_DOUBT


@pytest.mark.parametrize("commit_sent", [False, True])
def test_other_errors_are_raised(commit_sent: bool) -> None:
    for sqlstate in ("23505", "42601", "25P02", None):
        assert decide(sqlstate=sqlstate, commit_sent=commit_sent) is Verdict.RAISE
    # The caller's own exception, whatever the connection's state.
    assert decide(database_error=False, lost=True, sqlstate="40001") is Verdict.RAISE


def test_transaction_modes() -> None:
    assert transaction_modes() == ""
    assert transaction_modes("serializable", True, True) == (
        "ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE"
    )
    assert transaction_modes(psycopg.IsolationLevel.REPEATABLE_READ, False, False) == (
        "ISOLATION LEVEL REPEATABLE READ, READ WRITE, NOT DEFERRABLE"
    )
    for spelling in ("read committed", "READ_COMMITTED", "Read-Committed", " read  committed "):
        assert transaction_modes(spelling) == "ISOLATION LEVEL READ COMMITTED"
    with pytest.raises(ValueError, match="isolation_level"):
        transaction_modes("serializable; DROP TABLE people")
    with pytest.raises(TypeError, match="isolation_level"):
        transaction_modes(4)
    with pytest.raises(TypeError, match="read_only"):
        transaction_modes(None, "yes")  # type: ignore[arg-type]


def test_settings_validation() -> None:
    assert TxSettings.build().retry_on == RETRY_SQLSTATES
    assert TxSettings.build(retry_on=["55P03"]).retry_on == frozenset({"55P03"})
    with pytest.raises(ValueError, match="max_attempts"):
        TxSettings.build(max_attempts=0)
    with pytest.raises(TypeError, match="max_attempts"):
        TxSettings.build(max_attempts=True)
    with pytest.raises(TypeError, match="retry_on"):
        TxSettings.build(retry_on="40001")
    with pytest.raises(ValueError, match="SQLSTATE"):
        TxSettings.build(retry_on=["4000"])
    with pytest.raises(ValueError, match="retry_delay"):
        TxSettings.build(retry_delay=2.0, retry_max_delay=1.0)
    with pytest.raises(ValueError, match="timeout"):
        TxSettings.build(timeout=0)


def test_back_off_is_exponential_with_full_jitter() -> None:
    backoff = TxSettings.build(retry_delay=0.01, retry_max_delay=0.05).backoff
    rng = random.Random(7)
    for failures, ceiling in [(1, 0.01), (2, 0.02), (3, 0.04), (4, 0.05), (30, 0.05)]:
        delays = [backoff.delay(failures, rng) for _ in range(200)]
        assert all(0 <= delay <= ceiling for delay in delays)
        assert max(delays) > ceiling * 0.8  # spread over the whole window
