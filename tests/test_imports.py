"""Import cost (issue #15): names are imported on first use, and every name still resolves."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pgfleet
import pgfleet._async
import pgfleet._sync

#: Modules that a program using one pool class never needs at import time.
_DEFERRED = (
    "pgfleet._async.cluster",
    "pgfleet._async.compat",
    "pgfleet._async.tx",
    "pgfleet._sync.cluster",
    "pgfleet._sync.compat",
    "pgfleet._sync.tx",
    "pgfleet._retry",
    "pgfleet._postgres.tls",
)


def imported_by(statement: str) -> set[str]:
    """The pgfleet modules a fresh interpreter has imported after `statement`."""
    code = f"{statement}\nimport sys\nprint(' '.join(m for m in sys.modules if 'pgfleet' in m))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


@pytest.mark.parametrize(
    ("statement", "other_shell"),
    [("from pgfleet import Pool", "pgfleet._async"), ("from pgfleet import AsyncPool", None)],
)
def test_a_pool_class_imports_neither_cluster_compat_nor_transactions(
    statement: str, other_shell: str | None
) -> None:
    modules = imported_by(statement)
    assert "pgfleet._sync.pool" in modules or "pgfleet._async.pool" in modules
    assert modules.isdisjoint(_DEFERRED)
    if other_shell is not None:
        assert other_shell not in modules


@pytest.mark.parametrize("module", [pgfleet, pgfleet._async, pgfleet._sync])
def test_every_public_name_resolves(module: object) -> None:
    for name in module.__all__:  # type: ignore[attr-defined]
        assert getattr(module, name) is not None, name
    with pytest.raises(AttributeError):
        _ = module.no_such_name  # type: ignore[attr-defined]


def test_transactions_import_on_first_use() -> None:
    code = (
        "from pgfleet import Pool\n"
        "pool = Pool('host=127.0.0.1 port=1', min_size=0, max_size=1)\n"
        "pool.transactional()\n"
        "import sys\n"
        "assert 'pgfleet._sync.tx' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
