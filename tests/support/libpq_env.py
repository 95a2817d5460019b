"""Keep the developer's libpq configuration out of the tests."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

#: libpq's own variables (PGHOST, PGSSLMODE, PGPASSWORD...): no underscore after PG.
_LIBPQ_VARIABLE = re.compile(r"PG[A-Z]+")


def isolate_libpq_environment(monkeypatch: pytest.MonkeyPatch, home: Path) -> Path:
    """Remove libpq's PG* variables and DATABASE_URL; point HOME at `home`/home, so that
    ~/.postgresql (root.crt, postgresql.crt, root.crl) and ~/.pgpass cannot play a part.

    Returns the new HOME directory (created, empty).
    """
    for name in list(os.environ):
        if _LIBPQ_VARIABLE.fullmatch(name) or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    new_home = home / "home"
    new_home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(new_home))
    return new_home
