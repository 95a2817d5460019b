#!/usr/bin/env python3
"""Write the threaded twin of the asyncio sources: rename-only, no hand edits.

    python tools/gen_sync.py           # regenerate
    python tools/gen_sync.py --check   # exit 1 when a generated file is out of date

The asyncio code is the source of truth. Each rule below is a rename; the few
primitives that really differ live in ``pgfleet/_acompat.py`` as name pairs
(``AsyncEvent``/``Event``, ``await_fd``/``wait_fd``...). A line ending with
``# async-only`` is dropped from the sync output; a comment line starting with
``# sync-only: `` is code in the sync output only (the marker removed, the
indentation kept): for what costs asyncio for nothing on a hot path.

What is generated is found, not listed: every ``.py`` file under an ``_async/``
folder has its twin at the same place under the sibling ``_sync/`` folder. The
few twins outside such folders (``test_tx_async.py`` -> ``test_tx_sync.py``) are
listed in `PAIRS`. Both modes refuse (exit 1, nothing written) when the tree or
the rules are wrong:

- a file under ``_sync/`` that nothing generates, or without the "generated"
  header (hand-written code would be overwritten or silently kept);
- a listed async source that is missing, an unlisted ``*_async.py``/``*_sync.py``
  pair, an exclusion that names no file;
- a rename (`NAMES`, `RULES`) that matched nothing: dead weight, or a typo;
- sync text that says something false for threads (`FORBIDDEN`): reword the
  source so that the renamed text is true, or end the line with ``# async-only``.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent

#: Folders searched for ``_async/`` and ``_sync/`` folders and ``*_sync.py`` files.
SEARCH_ROOTS: tuple[str, ...] = ("src", "tests", "bench", "examples")

#: (async source, sync output) pairs outside the ``_async/``/``_sync/`` folders.
PAIRS: tuple[tuple[str, str], ...] = (
    ("tests/tx/test_tx_async.py", "tests/tx/test_tx_sync.py"),
    ("tests/bulk/test_bulk_async.py", "tests/bulk/test_bulk_sync.py"),
)

#: Files under an ``_async/`` folder that have no sync twin, each with the reason.
EXCLUDED: Mapping[str, str] = {}

#: Whole-word renames applied before the generic ``AsyncX`` -> ``X`` rule.
NAMES: Mapping[str, str] = {
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "__aiter__": "__iter__",
    "__anext__": "__next__",
    "StopAsyncIteration": "StopIteration",
    "asleep": "sleep",
    "abounded": "bounded",
    "aresolve": "resolve",
    "await_fd": "wait_fd",
    "anext": "next",
    "awrite": "write",
    "_async": "_sync",
}

#: Pattern rewrites, applied in order after the names.
RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\basync def\b"), "def"),
    (re.compile(r"\basync with\b"), "with"),
    (re.compile(r"\basync for\b"), "for"),
    (re.compile(r"\bawait\s+"), ""),
    (re.compile(r"\bAsync([A-Z]\w*)"), r"\1"),
    # A callback's result type: awaited in asyncio, returned as is in threads.
    (re.compile(r"\bAwaitable\[None\]"), "None"),
    (re.compile(r"\basyncio programs\b"), "threaded programs"),
    (re.compile(r"``async fn\(conn\)``"), "``fn(conn)``"),
)

#: Words that are false in threaded code, docstrings and comments (case-insensitive).
FORBIDDEN: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bevent[ -]?loops?\b", re.IGNORECASE), "threads have no event loop"),
    (re.compile(r"\brunning loop\b", re.IGNORECASE), "threads need no running loop"),
    (re.compile(r"\basyncio\b", re.IGNORECASE), "this is the threaded flavour"),
    (re.compile(r"\bcoroutines?\b", re.IGNORECASE), "threads run no coroutines"),
    (re.compile(r"\bawait\w*", re.IGNORECASE), "nothing is awaited in threads"),
)

HEADER = (
    "# WARNING: this file is generated from {source} by tools/gen_sync.py.\n"
    "# Do not edit it: edit the source and run `python tools/gen_sync.py`.\n"
)
HEADER_START = HEADER.split("{source}", 1)[0]
ASYNC_ONLY = "# async-only"
SYNC_ONLY = "# sync-only: "


@dataclass(frozen=True)
class Spec:
    """What to generate, how to rename, and what the output must not say."""

    search_roots: Sequence[str] = SEARCH_ROOTS
    pairs: Sequence[tuple[str, str]] = PAIRS
    excluded: Mapping[str, str] = field(default_factory=lambda: dict(EXCLUDED))
    names: Mapping[str, str] = field(default_factory=lambda: dict(NAMES))
    rules: Sequence[tuple[re.Pattern[str], str]] = RULES
    forbidden: Sequence[tuple[re.Pattern[str], str]] = FORBIDDEN


@dataclass
class Converter:
    """Renames async text to sync text, counting how often each rule fired."""

    spec: Spec
    #: Uses per rule: ``NAMES`` keys and ``RULES`` patterns.
    uses: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        names = sorted(self.spec.names, key=len, reverse=True)  # longest first
        self._name_pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")

    def convert(self, text: str, source: str) -> str:
        """The sync twin of an async module's text (before formatting)."""
        lines = []
        for line in text.splitlines():
            if line.rstrip().endswith(ASYNC_ONLY):
                continue
            code = line.lstrip()
            if code.startswith(SYNC_ONLY):
                line = line[: len(line) - len(code)] + code[len(SYNC_ONLY) :]
            lines.append(line)
        text = "\n".join(lines) + "\n"
        if self.spec.names:
            text = self._name_pattern.sub(self._rename, text)
        for pattern, replacement in self.spec.rules:
            text, count = pattern.subn(replacement, text)
            self.uses[pattern.pattern] += count
        return HEADER.format(source=source) + "\n" + text

    def _rename(self, match: re.Match[str]) -> str:
        self.uses[match.group(1)] += 1
        return self.spec.names[match.group(1)]

    def unused(self) -> list[str]:
        """The rules that matched nothing in any source so far."""
        found = [f"NAMES entry {name!r}" for name in self.spec.names if not self.uses[name]]
        found += [
            f"RULES pattern {pattern.pattern!r}"
            for pattern, _ in self.spec.rules
            if not self.uses[pattern.pattern]
        ]
        return found


def convert(text: str, source: str) -> str:
    """The sync twin of an async module's text, with the default rules (unformatted)."""
    return Converter(Spec()).convert(text, source)


def is_generated(text: str) -> bool:
    """Whether a file's text starts with the "generated" header."""
    return text.startswith(HEADER_START)


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _python_files(folder: Path) -> Iterator[Path]:
    """The ``.py`` files under `folder`, skipping caches and hidden folders."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__pycache__")))
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield Path(dirpath) / name


def _flavour_folders(root: Path, spec: Spec, name: str) -> list[Path]:
    """Every folder called `name` under the search roots."""
    found: list[Path] = []
    for top in spec.search_roots:
        for dirpath, dirnames, _ in os.walk(root / top):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__pycache__")))
            if Path(dirpath).name == name:
                found.append(Path(dirpath))
    return found


def twin(source: str) -> str:
    """The sync path of a file under an ``_async/`` folder (the innermost one)."""
    parts = list(PurePosixPath(source).parts)
    index = len(parts) - 1 - parts[::-1].index("_async")
    parts[index] = "_sync"
    return PurePosixPath(*parts).as_posix()


def discover(root: Path, spec: Spec) -> tuple[list[tuple[str, str]], list[str]]:
    """The (source, target) pairs to generate, and what is wrong with the tree."""
    problems: list[str] = []
    pairs: list[tuple[str, str]] = []
    excluded_seen: set[str] = set()
    for folder in _flavour_folders(root, spec, "_async"):
        for path in _python_files(folder):
            source = _rel(path, root)
            if source in spec.excluded:
                excluded_seen.add(source)
            else:
                pairs.append((source, twin(source)))
    for source, target in spec.pairs:
        if (root / source).is_file():
            pairs.append((source, target))
        else:
            problems.append(f"{source}: listed async source is missing (sync twin: {target})")
    for source in spec.excluded:
        if source not in excluded_seen:
            problems.append(f"{source}: excluded, but no such file under an _async/ folder")

    targets = {target for _, target in pairs} | {target for _, target in spec.pairs}
    for folder in _flavour_folders(root, spec, "_sync"):
        for path in _python_files(folder):
            target = _rel(path, root)
            if target not in targets:
                problems.append(
                    f"{target}: under a _sync/ folder but generated from nothing"
                    " (its async source was deleted, or it is hand-written): remove it"
                )
            elif not is_generated(path.read_text()):
                problems.append(
                    f"{target}: hand-written (no generated header) where a generated twin"
                    " belongs: move the code into the async source, then delete this file"
                )
    # Twins outside the folders must be listed, else they drift apart unnoticed.
    for top in spec.search_roots:
        for path in _python_files(root / top):
            target = _rel(path, root)
            if not path.name.endswith("_sync.py") or target in targets or "_sync" in path.parts:
                continue
            source = target.removesuffix("_sync.py") + "_async.py"
            if is_generated(path.read_text()):
                problems.append(f"{target}: generated, but no listed source: remove it")
            elif (root / source).is_file():
                problems.append(f"{target}: twin of {source}, not listed in PAIRS")
    # A generated file whose (listed) target lacks the header would be overwritten.
    for _, target in spec.pairs:
        path = root / target
        if path.is_file() and not is_generated(path.read_text()):
            problems.append(f"{target}: hand-written (no generated header): it is a generated twin")
    return list(dict.fromkeys(pairs)), problems  # nested _async/ folders are walked twice


def forbidden_lines(text: str, target: str, spec: Spec) -> list[str]:
    """``file:line`` of each forbidden phrase in generated text."""
    found: list[str] = []
    header_lines = HEADER.count("\n")
    for number, line in enumerate(text.splitlines(), start=1):
        if number <= header_lines:
            continue
        for pattern, why in spec.forbidden:
            for match in pattern.finditer(line):
                found.append(f"{target}:{number}: {match.group(0)!r} ({why}): {line.strip()}")
    return found


def ruff_format(text: str, path: Path, root: Path = ROOT) -> str:
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
        cwd=root,
    )
    if result.returncode != 0:
        raise SystemExit(f"ruff format failed on {path}:\n{result.stderr}")
    fixed = subprocess.run(
        [ruff, "check", "--fix-only", "--quiet", "--stdin-filename", str(path), "-"],
        input=result.stdout,
        capture_output=True,
        text=True,
        check=False,
        cwd=root,
    )
    return fixed.stdout if fixed.returncode == 0 and fixed.stdout else result.stdout


def main(argv: list[str] | None = None, *, root: Path = ROOT, spec: Spec | None = None) -> int:
    """Regenerate (or with ``--check`` compare) every sync twin under `root`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only report out-of-date files")
    args = parser.parse_args(argv)
    spec = spec or Spec()
    pairs, problems = discover(root, spec)
    converter = Converter(spec)
    stale: list[tuple[str, str, str]] = []  # (target, current, wanted)
    for source, target in pairs:
        target_path = root / target
        text = converter.convert((root / source).read_text(), source)
        wanted = ruff_format(text, target_path, root)
        false_words = forbidden_lines(wanted, target, spec)
        if false_words:
            problems += false_words
            problems.append(
                f"{target}: reword {source} so that the renamed text is true for threads,"
                f" or end the line with `{ASYNC_ONLY}` (dropped from the twin)"
            )
        current = target_path.read_text() if target_path.exists() else ""
        if wanted != current:
            stale.append((target, current, wanted))
    problems += [f"{rule} matched nothing in any source: remove it" for rule in converter.unused()]

    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"gen_sync: {len(problems)} problem(s); nothing written", file=sys.stderr)
        return 1
    for target, current, wanted in stale:
        if args.check:
            diff = difflib.unified_diff(
                current.splitlines(), wanted.splitlines(), target, f"{target} (wanted)", lineterm=""
            )
            print("\n".join(list(diff)[:40]))
        else:
            (root / target).parent.mkdir(parents=True, exist_ok=True)
            (root / target).write_text(wanted)
            print(f"wrote {target}")
    if args.check and stale:
        names = ", ".join(target for target, _, _ in stale)
        print(f"out of date: {names}; run `python tools/gen_sync.py`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
