"""`tools/gen_sync.py` on throwaway trees: what it generates, and what it refuses.

Each refusal leaves the tree as it was: in write mode nothing is written either.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

import gen_sync

SOURCE = '''\
"""A module for asyncio programs."""

from pkg._acompat import asleep


class AsyncThing:
    """Sleeps, then answers."""

    async def answer(self) -> int:
        await asleep(0)
        return 42
'''

TEST_SOURCE = '''\
"""Tests of `AsyncThing`."""

from pkg._async.mod import AsyncThing


async def test_answer() -> None:
    assert await AsyncThing().answer() == 42
'''

SPEC = gen_sync.Spec(
    search_roots=("src", "tests"),
    pairs=(("tests/x/test_x_async.py", "tests/x/test_x_sync.py"),),
    excluded={},
    names={"asleep": "sleep", "_async": "_sync"},
    rules=(
        (re.compile(r"\basync def\b"), "def"),
        (re.compile(r"\bawait\s+"), ""),
        (re.compile(r"\bAsync([A-Z]\w*)"), r"\1"),
        (re.compile(r"\basyncio programs\b"), "threaded programs"),
    ),
)


def write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*.py")}


def run(root: Path, *args: str, spec: gen_sync.Spec = SPEC) -> int:
    return gen_sync.main(list(args), root=root, spec=spec)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A clean tree: sources, and their twins generated."""
    write(tmp_path, "src/pkg/_async/__init__.py", "")
    write(tmp_path, "src/pkg/_async/mod.py", SOURCE)
    write(tmp_path, "tests/x/test_x_async.py", TEST_SOURCE)
    assert run(tmp_path) == 0
    return tmp_path


def assert_refused(root: Path, capsys: pytest.CaptureFixture[str], *expected: str) -> str:
    """Both modes fail, print each `expected` text, and write nothing."""
    before = snapshot(root)
    assert run(root, "--check") == 1
    assert run(root) == 1
    assert snapshot(root) == before
    err = capsys.readouterr().err
    for text in expected:
        assert text in err
    assert "nothing written" in err
    return err


def test_a_clean_tree_is_generated_and_passes(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    generated = (tree / "src/pkg/_sync/mod.py").read_text()
    assert generated.startswith(
        "# WARNING: this file is generated from src/pkg/_async/mod.py by tools/gen_sync.py."
    )
    assert "class Thing:" in generated
    assert "def answer(self) -> int:" in generated
    assert "sleep(0)" in generated
    assert "await" not in generated
    assert "A module for threaded programs." in generated
    assert (tree / "src/pkg/_sync/__init__.py").is_file()
    assert "from pkg._sync.mod import Thing" in (tree / "tests/x/test_x_sync.py").read_text()
    capsys.readouterr()
    assert run(tree, "--check") == 0
    assert capsys.readouterr().err == ""


def test_a_stale_twin_fails_the_check_and_is_rewritten(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tree, "src/pkg/_async/mod.py", SOURCE.replace("42", "43"))
    assert run(tree, "--check") == 1
    assert "out of date: src/pkg/_sync/mod.py" in capsys.readouterr().err
    assert "return 42" in (tree / "src/pkg/_sync/mod.py").read_text()
    assert run(tree) == 0
    assert "return 43" in (tree / "src/pkg/_sync/mod.py").read_text()
    assert run(tree, "--check") == 0


def test_a_hand_written_file_under_sync_is_refused(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tree, "src/pkg/_sync/helpers.py", "def helper() -> None:\n    pass\n")
    assert_refused(tree, capsys, "src/pkg/_sync/helpers.py: under a _sync/ folder")


def test_a_twin_without_the_generated_header_is_refused(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Hand-edited (header removed): the generator would silently overwrite the edit.
    path = tree / "src/pkg/_sync/mod.py"
    path.write_text(path.read_text().split("\n", 2)[2])
    assert_refused(tree, capsys, "src/pkg/_sync/mod.py: hand-written (no generated header)")


def test_a_deleted_async_source_in_a_folder_is_refused(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tree / "src/pkg/_async/mod.py").unlink()
    assert_refused(tree, capsys, "src/pkg/_sync/mod.py: under a _sync/ folder but generated")


def test_a_deleted_listed_async_source_is_refused(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tree / "tests/x/test_x_async.py").unlink()
    assert_refused(tree, capsys, "tests/x/test_x_async.py: listed async source is missing")


def test_an_unlisted_pair_is_refused(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tree, "tests/y/test_y_async.py", TEST_SOURCE)
    write(tree, "tests/y/test_y_sync.py", "def test_answer() -> None:\n    pass\n")
    assert_refused(tree, capsys, "tests/y/test_y_sync.py: twin of tests/y/test_y_async.py")


def test_an_excluded_file_has_no_twin_and_a_stale_exclusion_is_refused(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tree, "src/pkg/_async/loop_only.py", '"""Only for asyncio."""\n')
    spec = gen_sync.Spec(
        search_roots=SPEC.search_roots,
        pairs=SPEC.pairs,
        excluded={"src/pkg/_async/loop_only.py": "no threaded counterpart"},
        names=SPEC.names,
        rules=SPEC.rules,
    )
    assert run(tree, "--check", spec=spec) == 0
    assert not (tree / "src/pkg/_sync/loop_only.py").exists()
    (tree / "src/pkg/_async/loop_only.py").unlink()
    assert run(tree, "--check", spec=spec) == 1
    assert "src/pkg/_async/loop_only.py: excluded, but no such file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("names", "rules", "unused"),
    [
        ({"aclosing": "closing"}, (), "NAMES entry 'aclosing'"),
        ({}, ((re.compile(r"\basync for\b"), "for"),), "RULES pattern '\\\\basync for\\\\b'"),
    ],
)
def test_a_rule_that_matches_nothing_is_refused(
    tree: Path,
    capsys: pytest.CaptureFixture[str],
    names: dict[str, str],
    rules: tuple[tuple[re.Pattern[str], str], ...],
    unused: str,
) -> None:
    spec = gen_sync.Spec(
        search_roots=SPEC.search_roots,
        pairs=SPEC.pairs,
        excluded={},
        names={**SPEC.names, **names},
        rules=(*SPEC.rules, *rules),
    )
    before = snapshot(tree)
    assert run(tree, "--check", spec=spec) == 1
    assert run(tree, spec=spec) == 1
    assert snapshot(tree) == before
    err = capsys.readouterr().err
    assert f"{unused} matched nothing in any source" in err
    # Only the dead rule is reported: the others are used.
    assert err.count("matched nothing") == 2  # once per mode


def test_a_forbidden_phrase_is_refused_with_its_line(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = SOURCE.replace(
        '"""Sleeps, then answers."""', '"""Sleeps, then answers (needs a running loop)."""'
    )
    write(tree, "src/pkg/_async/mod.py", source)
    wanted = gen_sync.convert(source, "src/pkg/_async/mod.py")
    line = next(
        number for number, text in enumerate(wanted.splitlines(), start=1) if "running loop" in text
    )
    assert_refused(tree, capsys, f"src/pkg/_sync/mod.py:{line}: 'running loop'")


@pytest.mark.parametrize(
    "phrase", ["an event loop", "the asyncio way", "a coroutine", "it awaits", "Awaitable[int]"]
)
def test_each_forbidden_word_is_caught(phrase: str) -> None:
    text = f"# WARNING: header\n# second header line\n\nx = 1  # {phrase}\n"
    found = gen_sync.forbidden_lines(text, "out.py", SPEC)
    assert len(found) == 1
    assert found[0].startswith("out.py:4: ")


def test_an_async_only_line_may_say_it(tree: Path) -> None:
    source = SOURCE.replace(
        "        await asleep(0)\n",
        "        # Yields to the event loop once.  # async-only\n        await asleep(0)\n",
    )
    write(tree, "src/pkg/_async/mod.py", source)
    assert run(tree) == 0
    assert "event loop" not in (tree / "src/pkg/_sync/mod.py").read_text()
    assert run(tree, "--check") == 0


def test_the_twin_of_a_nested_async_folder() -> None:
    assert gen_sync.twin("tests/faults/_async/common.py") == "tests/faults/_sync/common.py"
    assert gen_sync.twin("src/pkg/_async/sub/_async/m.py") == "src/pkg/_async/sub/_sync/m.py"


def test_a_sync_only_comment_is_code_in_the_sync_output_only() -> None:
    source = (
        "def f(lock, core):\n"
        "    # sync-only: lock.acquire()\n"
        "    # sync-only: try:\n"
        "    # sync-only:     value = core.step()\n"
        "    # sync-only: finally:\n"
        "    # sync-only:     lock.release()\n"
        "    value = core.step()  # async-only\n"
        "    return value\n"
    )
    out = gen_sync.convert(source, "src/pkg/_async/mod.py")
    body = out.split("\n\n", 1)[1]
    assert body == (
        "def f(lock, core):\n"
        "    lock.acquire()\n"
        "    try:\n"
        "        value = core.step()\n"
        "    finally:\n"
        "        lock.release()\n"
        "    return value\n"
    )
