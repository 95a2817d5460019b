"""Export pool statistics to monitoring systems (optional extras).

- `pgfleet.metrics.prometheus`: `PoolCollector`, a ``prometheus_client`` collector that reads
  each pool's `stats()` at scrape time. Install ``pgfleet[prometheus]``.
- `pgfleet.metrics.otel`: `instrument()` / `PoolInstruments`, observable instruments through
  the OpenTelemetry metrics API, named after the semantic conventions for database client
  connection pools where they exist. Install ``pgfleet[otel]`` (plus an SDK and an exporter
  of your choice).

Both work for `pgfleet.Pool` and `pgfleet.AsyncPool` (anything with a ``name`` and a
synchronous ``stats()`` returning `pgfleet.PoolStats`) and for `pgfleet.ClusterPool` and
`pgfleet.AsyncClusterPool` (each host pool as its own series, with its server, plus the
cluster's failovers, fencing and roles), hold the pools weakly, and report nothing for a
pool once it has been garbage collected. Importing this package imports
neither library.
"""
