"""The ``pgfleet`` command line (``pgfleet`` or ``python -m pgfleet``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from pgfleet._version import __version__
from pgfleet.cli._args import EXIT_USAGE, ArgumentParser, safe

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one subparser per subcommand."""
    from pgfleet.cli import check, demo

    parser = ArgumentParser(
        prog="pgfleet", description="Tools for pgfleet, the PostgreSQL connection pool."
    )
    parser.add_argument("--version", action="version", version=f"pgfleet {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    demo.add_parser(subparsers)
    check.add_parser(subparsers)
    return parser


def _exit_code(code: object) -> int:
    """argparse's `SystemExit` code as an int (a message means usage error)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(safe(str(code)), file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: ``sys.argv[1:]``), run the subcommand, return its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return _exit_code(exc.code)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_usage(sys.stderr)
        print("pgfleet: error: a command is required (try: pgfleet demo --help)", file=sys.stderr)
        return EXIT_USAGE
    return handler(args)
