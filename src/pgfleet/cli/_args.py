"""What the ``pgfleet`` subcommands share: a parser that never echoes a secret, `BadInput`,
and the parsers of bounded numbers."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from typing import NoReturn

from pgfleet._postgres.conninfo import redact

__all__ = ["EXIT_USAGE", "ArgumentParser", "BadInput", "bounded_int", "safe", "seconds"]

#: The exit code for bad input (argparse's, for a usage error).
EXIT_USAGE = 2


class BadInput(ValueError):
    """The command line or the connection settings cannot work (exit 2).

    The message says what is wrong and what to do, without secrets.
    """


def safe(message: str) -> str:
    """`message` with every password it shows redacted (`pgfleet._postgres.conninfo.redact`), and
    ``PGPASSWORD``'s value if it appears."""
    password = os.environ.get("PGPASSWORD")
    return redact(message, (password,) if password else ())


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose every message goes through `safe`.

    An unknown option, an unknown command or a bad value may be a misplaced connection
    string, and argparse quotes them (``unrecognized arguments: --dsn=postgresql://...``).
    Subparsers are of this class too (argparse makes them of the parent's class).
    """

    def error(self, message: str) -> NoReturn:
        """Print the usage and `message` (redacted) on stderr, exit 2."""
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        """Exit with `status`, printing `message` (redacted) on stderr first."""
        if message:
            self._print_message(safe(message), sys.stderr)
        sys.exit(status)


#: A value echoed in an error message: short, and nothing a connection string is made of.
_ECHOED = re.compile(r"[\w.+-]{1,20}")


def _shown(text: str) -> str:
    """``: 'text'`` for a value safe to echo, else nothing (it may hold a password)."""
    return f": {text!r}" if _ECHOED.fullmatch(text) else ""


def seconds(maximum: float) -> Callable[[str], float]:
    """An argparse type: a number of seconds, > 0 and <= `maximum`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a number of seconds{_shown(text)}"
            ) from None
        if not 0 < value <= maximum:  # also rejects nan
            raise argparse.ArgumentTypeError(f"must be > 0 and <= {maximum:g}, got {text}")
        return value

    return parse


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from `low` to `high`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer{_shown(text)}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse
