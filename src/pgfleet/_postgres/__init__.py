"""The PostgreSQL door: what the PostgreSQL managers know about libpq and psycopg.

The pool and its engine know nothing of PostgreSQL; `AsyncPostgresManager` /
`PostgresManager` (``pgfleet._async.postgres``, ``pgfleet._sync.postgres``) do, through
these modules:

- `conninfo`: where to connect: conninfo resolution, safe composition, redaction.
- `connect_errors`: which connection errors waiting cannot heal.
- `wire`: bounded protocol exchanges on libpq (ping, rollback, BEGIN, the pooler probe)
  and the idle-connection socket probe.
- `tls`: what a connection's TLS guarantees, the unverified-remote warning and the hints
  for failed connections (public as `pgfleet.tls`).
- `pooler`: transaction poolers (PgBouncer...): what ``transaction_pooler=True`` changes
  and refuses, and how a pool notices one.
"""
