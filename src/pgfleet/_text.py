"""An exception as one line of text, for logs, status lines and error messages.

A libpq error runs to several lines (the error, then ``DETAIL``/``HINT`` lines or a line
per host tried); a message that quotes one keeps the first. Standard library only: the
sans-IO core may use it too.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["describe", "first_line", "hints"]


def first_line(exc: BaseException) -> str:
    """The first line of ``str(exc)``, stripped; the exception's type name if it is empty."""
    return _message(exc) or type(exc).__name__


def _message(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else ""


def hints(exc: BaseException) -> list[str]:
    """The ``hint: ...`` notes on `exc` (the PostgreSQL manager adds them), without the
    prefix, in order."""
    return [
        note.removeprefix("hint: ")
        for note in getattr(exc, "__notes__", ())
        if isinstance(note, str) and note.startswith("hint: ")
    ]


def describe(
    exc: BaseException,
    *,
    redact: Callable[[str], str] | None = None,
    with_type: bool = False,
    with_hints: bool = False,
) -> str:
    """`exc` in one line: its first line, prefixed with its type name (`with_type`),
    followed by ``; hint: ...`` for each of its hints (`with_hints`), passed through
    `redact` (for example `pgfleet._postgres.conninfo.redact` or a manager's ``redact``).
    """
    message, name = _message(exc), type(exc).__name__
    text = message or name
    if with_type and message:
        text = f"{name}: {message}"
    if with_hints:
        text = "; ".join([text, *(f"hint: {hint}" for hint in hints(exc))])
    return redact(text) if redact is not None else text
