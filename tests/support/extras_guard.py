"""Run code as if only ``pip install 'pgfleet[<extras>]'`` had been installed.

The test environment has every extra installed, so a README example that needs more than
the extra it names would still run. `allowed_modules` (run in the test process) lists the
top-level modules of the distributions such an install brings: pgfleet's requirements and
the chosen extras', recursively, from the installed metadata. `guarded_command` starts a
Python whose first act is to put a `Guard` on ``sys.meta_path``: importing any other
top-level module (outside the standard library) fails with ``ModuleNotFoundError``, as it
would in that install, so optional imports (``try: import x``) fall back as they would.

The child only needs this module and the standard library: the list travels in the
environment variable `ALLOWED_ENV`.
"""

from __future__ import annotations

import importlib.abc
import json
import sys
from collections.abc import Iterable, Sequence
from importlib import machinery, metadata
from pathlib import Path
from types import ModuleType

__all__ = ["ALLOWED_ENV", "Guard", "allowed_modules", "distributions", "guarded_command"]

ALLOWED_ENV = "PGFLEET_TEST_ALLOWED_MODULES"
TESTS_DIR = Path(__file__).resolve().parents[1]


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def distributions(extras: Iterable[str]) -> set[str]:
    """Canonical names of the distributions ``pip install 'pgfleet[extras]'`` installs."""
    from packaging.requirements import Requirement

    seen: dict[str, frozenset[str]] = {}
    todo: list[tuple[str, frozenset[str]]] = [("pgfleet", frozenset(extras))]
    while todo:
        name, wanted = todo.pop()
        key = _canonical(name)
        if key in seen and wanted <= seen[key]:
            continue
        seen[key] = seen.get(key, frozenset()) | wanted
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue  # required only on another platform or Python: not installed here
        for text in requires:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in ("", *wanted)):
                todo.append((requirement.name, frozenset(requirement.extras)))
    return set(seen)


def allowed_modules(extras: Iterable[str]) -> list[str]:
    """Top-level module names of those distributions (pgfleet's own included)."""
    allowed = distributions(extras)
    modules = {"pgfleet"}  # an editable install maps no module to its distribution
    for module, owners in metadata.packages_distributions().items():
        if any(_canonical(owner) in allowed for owner in owners):
            modules.add(module)
    return sorted(modules)


class Guard(importlib.abc.MetaPathFinder):
    """Refuses top-level imports of installed packages other than `allowed`.

    What lies outside site-packages (the standard library, the program's own directory)
    is always found.
    """

    def __init__(self, allowed: Iterable[str], label: str) -> None:
        self.allowed = frozenset(allowed)
        self.label = label

    @staticmethod
    def _outside_site_packages() -> list[str]:
        return [
            entry
            for entry in sys.path
            if "site-packages" not in entry and "dist-packages" not in entry
        ]

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> machinery.ModuleSpec | None:
        top = fullname.partition(".")[0]
        if (
            top in self.allowed
            or top in sys.stdlib_module_names
            or top in sys.builtin_module_names
            or machinery.PathFinder.find_spec(top, self._outside_site_packages()) is not None
        ):
            return None  # the usual finders take it from here
        raise ModuleNotFoundError(f"No module named {top!r} (not in {self.label})", name=top)


def guarded_command(
    extras: Sequence[str], code: str, *, warnings_are_errors: bool = True
) -> tuple[list[str], dict[str, str]]:
    """A command running `code` under a `Guard` for pgfleet[`extras`], and the environment
    entries it needs (add them to the child's environment)."""
    label = f"pgfleet[{','.join(extras)}]" if extras else "pgfleet"
    boot = (
        "import json, os, sys\n"
        f"sys.path.insert(0, {str(TESTS_DIR)!r})\n"
        "from support.extras_guard import ALLOWED_ENV, Guard\n"
        f"sys.meta_path.insert(0, Guard(json.loads(os.environ[ALLOWED_ENV]), {label!r}))\n"
        "del json, os, sys, ALLOWED_ENV, Guard\n"
    )
    env = {ALLOWED_ENV: json.dumps(allowed_modules(extras))}
    flags = ["-W", "error"] if warnings_are_errors else []
    return [sys.executable, *flags, "-c", boot + code], env
