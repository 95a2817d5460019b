"""SQLAlchemy on a pgfleet pool (extra ``sqlalchemy``).

psycopg's recipe, wired in one call: SQLAlchemy's ``NullPool`` takes a connection from the
pool (``creator=pool.getconn``) for each checkout and closes it when it is done, and the
pool's ``close_returns`` turns that close into a return. Forget ``close_returns`` and every
close is real: each checkout opens a new connection and the pool's slots leak. Forget
``NullPool`` and SQLAlchemy keeps a second pool of its own on top. These helpers set both,
and turn ``close_returns`` on::

    from pgfleet import Pool
    from pgfleet.integrations.sqlalchemy import create_engine

    pool = Pool(min_size=2, max_size=10)
    engine = create_engine(pool)           # sqlalchemy.create_engine, any other keywords
    with pool, engine.begin() as conn:
        conn.execute(...)

`create_async_engine` does the same for an `AsyncPool` (``async_creator``). The pool
decides everything a pool decides (size, timeouts, health checks); SQLAlchemy sees one
fresh DBAPI connection per checkout. See ``docs/sqlalchemy.md``.
"""

from __future__ import annotations

from typing import Any

try:
    import sqlalchemy
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
    from sqlalchemy.pool import NullPool
except ImportError as exc:  # pragma: no cover (the test extra installs SQLAlchemy)
    raise ImportError(
        "pgfleet.integrations.sqlalchemy needs SQLAlchemy: pip install 'pgfleet[sqlalchemy]'"
    ) from exc

from pgfleet._async.pool import AsyncPool
from pgfleet._base import BasePool
from pgfleet._sync.pool import Pool

__all__ = ["URL", "create_async_engine", "create_engine"]

#: The URL the engines are made with: the psycopg (3) dialect; where to connect is the
#: pool's business.
URL = "postgresql+psycopg://"

#: What the helpers set themselves.
_WIRED = ("creator", "async_creator", "poolclass")


def create_engine(pool: Pool[Any], **kwargs: Any) -> sqlalchemy.Engine:
    """A SQLAlchemy `Engine` whose connections come from (and go back to) `pool`.

    Turns ``pool.close_returns`` on. `kwargs` go to `sqlalchemy.create_engine` (``echo``,
    ``isolation_level``...), but for ``creator``, ``async_creator`` and ``poolclass``,
    which the helper sets (TypeError).
    """
    if not isinstance(pool, Pool):
        raise TypeError(
            f"create_engine needs a pgfleet Pool, got {type(pool).__name__}"
            + (" (use create_async_engine)" if isinstance(pool, AsyncPool) else "")
        )
    _wire(pool, kwargs)
    return sqlalchemy.create_engine(URL, creator=pool.getconn, poolclass=NullPool, **kwargs)


def create_async_engine(pool: AsyncPool[Any], **kwargs: Any) -> AsyncEngine:
    """A SQLAlchemy `AsyncEngine` whose connections come from (and go back to) `pool`.

    As `create_engine`, for an `AsyncPool` (SQLAlchemy's asyncio extension, which needs
    ``greenlet``).
    """
    if not isinstance(pool, AsyncPool):
        raise TypeError(
            f"create_async_engine needs a pgfleet AsyncPool, got {type(pool).__name__}"
            + (" (use create_engine)" if isinstance(pool, Pool) else "")
        )
    _wire(pool, kwargs)
    return _create_async_engine(URL, async_creator=pool.getconn, poolclass=NullPool, **kwargs)


def _wire(pool: BasePool[Any], kwargs: dict[str, Any]) -> None:
    """Refuse what the helper sets; make a close a return."""
    taken = [name for name in _WIRED if name in kwargs]
    if taken:
        raise TypeError(f"the helper sets {', '.join(taken)} itself: leave it out")
    try:
        pool.close_returns = True
    except AttributeError:  # a read-only close_returns: looked at below
        pass
    if not getattr(pool, "close_returns", False):
        # A pool class that keeps close_returns off (psycopg_pool's null pools do).
        raise ValueError(
            f"{type(pool).__name__} does not return a connection on close (close_returns"
            " stays False): SQLAlchemy's closes would leak its connections"
        )
