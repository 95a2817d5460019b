"""When a transaction may be tried again: a pure decision over what an attempt saw.

Theory of operation
-------------------
A transaction attempt ends in one of four ways, and only the first two may be
replayed, because only then is it certain that nothing was applied:

* the server said it rolled the transaction back -- serialization_failure
  (40001) or deadlock_detected (40P01) by default, whenever it was said, even
  in answer to COMMIT;
* the connection broke *before* COMMIT was sent: a transaction that was never
  committed dies with its session;
* the connection broke *while* COMMIT was in flight: the server may have
  committed and lost only the reply, so the outcome is unknown and the caller
  must decide (`CommitOutcomeUnknown`);
* anything else (a unique violation, a syntax error, an exception of the
  caller's own): raised at once.

"Broke" is read from the connection's state by the shell, never from the class
of the exception. Retries wait ``uniform(0, min(cap, initial * 2**(n - 1)))``
seconds (`Backoff`, full jitter) so that the transactions that just collided
do not collide again. This module reads no clock and imports no psycopg.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

from pgfleet._core.backoff import Backoff

if TYPE_CHECKING:
    from psycopg import IsolationLevel

__all__ = [
    "RETRY_SQLSTATES",
    "TransactionOptions",
    "TxSettings",
    "Verdict",
    "transaction_modes",
]

#: The SQLSTATEs that mean "the server rolled your transaction back, try again":
#: serialization_failure and deadlock_detected.
RETRY_SQLSTATES: frozenset[str] = frozenset({"40001", "40P01"})

_DEFAULT_BACKOFF = Backoff(0.01, 1.0)
_ISOLATION_LEVELS = ("READ UNCOMMITTED", "READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE")


class TransactionOptions(TypedDict, total=False):
    """The options of ``run_transaction``, ``transactional`` and ``transactions``.

    Keys:
        isolation_level: a `psycopg.IsolationLevel` or its name in any case, with
            spaces or underscores (``"serializable"``, ``"repeatable read"``);
            None keeps the server's default.
        read_only: True for ``READ ONLY``, False for ``READ WRITE``, None: default.
        deferrable: ``DEFERRABLE`` (serializable read-only transactions then wait
            for a safe snapshot and are never rolled back); None: default.
        max_attempts: attempts in all, the first included (default 10).
        retry_on: the SQLSTATEs that mean the server rolled the transaction back
            (default `RETRY_SQLSTATES`).
        retry_delay: ceiling of the first back-off, in seconds (default 0.01).
        retry_max_delay: ceiling of every back-off, in seconds (default 1.0).
        timeout: seconds each attempt may wait for a connection (default: the
            pool's timeout).
    """

    isolation_level: IsolationLevel | str | None
    read_only: bool | None
    deferrable: bool | None
    max_attempts: int
    retry_on: Iterable[str]
    retry_delay: float
    retry_max_delay: float
    timeout: float | None


class Verdict(enum.Enum):
    """What to do after an attempt failed."""

    #: Nothing was applied: try again after a back-off.
    RETRY = "retry"
    #: Nothing was applied, but the attempts are used up: raise the error (with a note).
    GIVE_UP = "give up"
    #: COMMIT may or may not have been applied: raise `CommitOutcomeUnknown`.
    IN_DOUBT = "in doubt"
    #: Not ours to retry: raise the error as it is.
    RAISE = "raise"


def transaction_modes(
    isolation_level: object = None, read_only: bool | None = None, deferrable: bool | None = None
) -> str:
    """The ``transaction_mode`` list of ``BEGIN``/``SET TRANSACTION`` ("" for none).

    Built from a fixed vocabulary, never from the caller's text: safe to send.

    Raises:
        ValueError: an unknown isolation level name.
        TypeError: an isolation level that is neither a name nor an enum member.
    """
    modes = []
    if isolation_level is not None:
        if isinstance(isolation_level, enum.Enum):  # psycopg.IsolationLevel
            name = isolation_level.name
        elif isinstance(isolation_level, str):
            name = isolation_level
        else:
            raise TypeError(
                f"isolation_level must be a psycopg.IsolationLevel or a str,"
                f" got {isolation_level!r}"
            )
        level = " ".join(name.replace("_", " ").replace("-", " ").upper().split())
        if level not in _ISOLATION_LEVELS:
            raise ValueError(
                f"isolation_level must be one of {', '.join(map(repr, _ISOLATION_LEVELS))},"
                f" got {isolation_level!r}"
            )
        modes.append(f"ISOLATION LEVEL {level}")
    if read_only is not None:
        modes.append("READ ONLY" if _flag("read_only", read_only) else "READ WRITE")
    if deferrable is not None:
        modes.append("DEFERRABLE" if _flag("deferrable", deferrable) else "NOT DEFERRABLE")
    return ", ".join(modes)


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool or None, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class TxSettings:
    """The validated options of one transaction (see `TransactionOptions`)."""

    modes: str = ""
    max_attempts: int = 10
    retry_on: frozenset[str] = RETRY_SQLSTATES
    backoff: Backoff = _DEFAULT_BACKOFF
    timeout: float | None = None

    @classmethod
    def build(
        cls,
        *,
        isolation_level: IsolationLevel | str | None = None,
        read_only: bool | None = None,
        deferrable: bool | None = None,
        max_attempts: int = 10,
        retry_on: Iterable[str] = RETRY_SQLSTATES,
        retry_delay: float = 0.01,
        retry_max_delay: float = 1.0,
        timeout: float | None = None,
    ) -> TxSettings:
        """Validate the options; ValueError or TypeError names the bad one."""
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
            raise TypeError(f"max_attempts must be an int, got {max_attempts!r}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if isinstance(retry_on, str | bytes):
            # "40001" is an iterable of five one-character codes: surely a mistake.
            raise TypeError(f"retry_on must be a collection of SQLSTATEs, got {retry_on!r}")
        codes = frozenset(retry_on)
        for code in codes:
            if not (isinstance(code, str) and len(code) == 5 and code.isalnum()):
                raise ValueError(f"retry_on: {code!r} is not a SQLSTATE (five characters)")
        try:
            backoff = Backoff(retry_delay, retry_max_delay)
        except ValueError:
            raise ValueError(
                f"need 0 < retry_delay <= retry_max_delay,"
                f" got retry_delay={retry_delay}, retry_max_delay={retry_max_delay}"
            ) from None
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        return cls(
            modes=transaction_modes(isolation_level, read_only, deferrable),
            max_attempts=max_attempts,
            retry_on=codes,
            backoff=backoff,
            timeout=timeout,
        )

    def decide(
        self,
        *,
        attempt: int,
        database_error: bool,
        sqlstate: str | None,
        lost: bool,
        commit_sent: bool,
    ) -> Verdict:
        """The verdict on a failed attempt.

        Args:
            attempt: the attempt's number, from 1.
            database_error: the failure is a database error (``psycopg.Error``);
                anything else is the caller's and is raised as it is.
            sqlstate: the error's SQLSTATE, when the server sent one.
            lost: the connection is broken, by its own state.
            commit_sent: COMMIT had been sent when the failure happened.
        """
        if not database_error:
            return Verdict.RAISE
        if sqlstate in self.retry_on:
            retry = True  # the server said it rolled back, even in answer to COMMIT
        elif commit_sent:
            return Verdict.IN_DOUBT if lost else Verdict.RAISE
        else:
            retry = lost
        if not retry:
            return Verdict.RAISE
        return Verdict.RETRY if attempt < self.max_attempts else Verdict.GIVE_UP
