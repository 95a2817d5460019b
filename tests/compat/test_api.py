"""The names psycopg_pool exports, and its exception hierarchy (issue #16)."""

from __future__ import annotations

import inspect

import psycopg
import pytest

from compat.helpers import NAMES, Impl

POOLS = ("ConnectionPool", "AsyncConnectionPool", "NullConnectionPool", "AsyncNullConnectionPool")
ERRORS = ("PoolTimeout", "PoolClosed", "TooManyRequests")


@pytest.mark.parametrize("name", NAMES)
def test_name_is_exported(impl: Impl, name: str) -> None:
    module = __import__(impl.name)
    assert hasattr(module, name), f"{impl.name}.{name} does not exist"
    assert name in getattr(module, "__all__", ()), f"{name} is not in {impl.name}.__all__"


@pytest.mark.parametrize("name", ERRORS)
def test_errors_are_operational_errors(impl: Impl, name: str) -> None:
    error = getattr(impl, name)
    assert issubclass(error, psycopg.OperationalError)
    # Code catching one of them must not catch the others.
    for other in ERRORS:
        if other != name:
            assert not issubclass(error, getattr(impl, other))


def test_null_pools_are_pools(impl: Impl) -> None:
    assert issubclass(impl.NullConnectionPool, impl.ConnectionPool)
    assert issubclass(impl.AsyncNullConnectionPool, impl.AsyncConnectionPool)


@pytest.mark.parametrize("name", POOLS)
def test_check_connection_is_a_static_method(impl: Impl, name: str) -> None:
    cls = getattr(impl, name)
    assert isinstance(inspect.getattr_static(cls, "check_connection"), staticmethod)
    assert inspect.iscoroutinefunction(cls.check_connection) == name.startswith("Async")


@pytest.mark.parametrize("name", POOLS)
def test_methods(impl: Impl, name: str) -> None:
    cls = getattr(impl, name)
    asynchronous = name.startswith("Async")
    coroutines = ("open", "close", "wait", "getconn", "putconn", "resize", "check", "drain")
    for method in coroutines:
        assert inspect.iscoroutinefunction(getattr(cls, method)) == asynchronous, method
    for method in ("get_stats", "pop_stats"):
        assert callable(getattr(cls, method)), method
        assert not inspect.iscoroutinefunction(getattr(cls, method)), method
    assert callable(cls.connection)
