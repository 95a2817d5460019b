#!/usr/bin/env python3
"""Write the threaded twin of the asyncio sources: rename-only, no hand edits.

    python tools/gen_sync.py           # regenerate
    python tools/gen_sync.py --check   # exit 1 when a generated file is out of date

The asyncio code is the source of truth. Each rule below is a rename; the few
primitives that really differ live in ``pgfleet/_acompat.py`` as name pairs
(``AsyncEvent``/``Event``, ``await_fd``/``wait_fd``...). A line ending with
``# async-only`` is dropped from the sync output.
"""

from __future__ import annotations

import argparse
import difflib
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: (async source, sync output) pairs.
FILES: list[tuple[str, str]] = [
    ("src/pgfleet/_async/manager.py", "src/pgfleet/_sync/manager.py"),
    ("src/pgfleet/_async/pool.py", "src/pgfleet/_sync/pool.py"),
    ("src/pgfleet/_async/__init__.py", "src/pgfleet/_sync/__init__.py"),
    ("tests/_async/test_pool.py", "tests/_sync/test_pool.py"),
    ("tests/_async/test_pool_pg.py", "tests/_sync/test_pool_pg.py"),
    ("tests/faults/_async/__init__.py", "tests/faults/_sync/__init__.py"),
    ("tests/faults/_async/common.py", "tests/faults/_sync/common.py"),
    ("tests/faults/_async/test_outages.py", "tests/faults/_sync/test_outages.py"),
    ("tests/faults/_async/test_startup.py", "tests/faults/_sync/test_startup.py"),
    ("tests/faults/_async/test_lifecycle.py", "tests/faults/_sync/test_lifecycle.py"),
    ("tests/faults/_async/test_proxy.py", "tests/faults/_sync/test_proxy.py"),
    ("src/pgfleet/_async/tx.py", "src/pgfleet/_sync/tx.py"),
    ("src/pgfleet/_async/bulk.py", "src/pgfleet/_sync/bulk.py"),
    ("tests/tx/test_tx_async.py", "tests/tx/test_tx_sync.py"),
    ("tests/bulk/test_bulk_async.py", "tests/bulk/test_bulk_sync.py"),
    ("tests/compat/_async/__init__.py", "tests/compat/_sync/__init__.py"),
    ("tests/compat/_async/test_pool.py", "tests/compat/_sync/test_pool.py"),
]

#: Whole-word renames applied before the generic ``AsyncX`` -> ``X`` rule.
NAMES: dict[str, str] = {
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "__aiter__": "__iter__",
    "__anext__": "__next__",
    "StopAsyncIteration": "StopIteration",
    "asynccontextmanager": "contextmanager",
    "aclosing": "closing",
    "asleep": "sleep",
    "abounded": "bounded",
    "await_fd": "wait_fd",
    "aiter": "iter",
    "anext": "next",
    "_async": "_sync",
    "ais_async": "is_async",
}

NAME_PATTERN = re.compile(r"\b(" + "|".join(map(re.escape, NAMES)) + r")\b")

#: Pattern rewrites, applied in order after the names.
RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\basync def\b"), "def"),
    (re.compile(r"\basync with\b"), "with"),
    (re.compile(r"\basync for\b"), "for"),
    (re.compile(r"\bawait\s+"), ""),
    (re.compile(r"\bAsync([A-Z]\w*)"), r"\1"),
    # A callback's result type: awaited in asyncio, returned as is in threads.
    (re.compile(r"\bAwaitable\[None\]"), "None"),
    (re.compile(r"\basyncio pool"), "threaded pool"),
    (re.compile(r"\basyncio programs\b"), "threaded programs"),
    (re.compile(r"``async with``"), "``with``"),
    (re.compile(r"``async fn\(conn\)``"), "``fn(conn)``"),
]

HEADER = (
    "# WARNING: this file is generated from {source} by tools/gen_sync.py.\n"
    "# Do not edit it: edit the source and run `python tools/gen_sync.py`.\n"
)


def convert(text: str, source: str) -> str:
    """The sync twin of an async module's text."""
    lines = [line for line in text.splitlines() if not line.rstrip().endswith("# async-only")]
    text = "\n".join(lines) + "\n"
    text = NAME_PATTERN.sub(lambda match: NAMES[match.group(1)], text)
    for pattern, replacement in RULES:
        text = pattern.sub(replacement, text)
    return HEADER.format(source=source) + "\n" + text


def ruff_format(text: str, path: Path) -> str:
    """Format like the rest of the tree (renames shorten lines)."""
    # The ruff installed beside this interpreter first: its version is the pinned one.
    sibling = Path(sys.executable).parent / "ruff"
    ruff = str(sibling) if sibling.exists() else shutil.which("ruff") or "ruff"
    result = subprocess.run(
        [ruff, "format", "--stdin-filename", str(path), "-"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if result.returncode != 0:
        raise SystemExit(f"ruff format failed on {path}:\n{result.stderr}")
    fixed = subprocess.run(
        [ruff, "check", "--fix-only", "--quiet", "--stdin-filename", str(path), "-"],
        input=result.stdout,
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    return fixed.stdout if fixed.returncode == 0 and fixed.stdout else result.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only report out-of-date files")
    args = parser.parse_args(argv)
    stale: list[str] = []
    for source, target in FILES:
        source_path, target_path = ROOT / source, ROOT / target
        if not source_path.exists():
            continue
        wanted = ruff_format(convert(source_path.read_text(), source), target_path)
        current = target_path.read_text() if target_path.exists() else ""
        if wanted == current:
            continue
        if args.check:
            stale.append(target)
            diff = difflib.unified_diff(
                current.splitlines(), wanted.splitlines(), target, f"{target} (wanted)", lineterm=""
            )
            print("\n".join(list(diff)[:40]))
        else:
            target_path.parent.mkdir(parents=True, exist_ok=True)
            target_path.write_text(wanted)
            print(f"wrote {target}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run `python tools/gen_sync.py`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
