"""Fixtures of the configuration tests: every test runs with libpq's environment emptied."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.libpq_env import isolate_libpq_environment


@pytest.fixture(autouse=True)
def isolated_libpq_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No PG* variables, no DATABASE_URL; HOME is an empty directory."""
    return isolate_libpq_environment(monkeypatch, tmp_path)
