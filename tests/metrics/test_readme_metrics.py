"""The README's "Metrics" section names exactly the metrics the exporters emit."""

from __future__ import annotations

import re
from pathlib import Path

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from pgfleet import Pool
from pgfleet.metrics.otel import instrument
from pgfleet.metrics.prometheus import PoolCollector
from support.flavours import FakeManager

README = Path(__file__).resolve().parents[2] / "README.md"


def section() -> str:
    return README.read_text().split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]


def test_prometheus_names_in_the_readme() -> None:
    documented = set(re.findall(r"`(pgfleet_[a-z_]+)`", section()))
    emitted = set()
    for family in PoolCollector().describe():
        suffix = "_total" if family.type == "counter" else ""
        emitted.add(family.name + suffix)
    assert documented == emitted


def test_otel_names_in_the_readme() -> None:
    text = section().split("**OpenTelemetry**", 1)[1]
    names = set(re.findall(r"`(db\.client\.connection\.[a-z_]+)`", text))
    names |= {f"pgfleet.pool.{n}" for n in re.findall(r"`([a-z_]+(?:\.[a-z_]+)?)`", text)}
    names |= {
        f"pgfleet.pool.{kind}_time.{part}"
        for kind in ("wait", "use", "create")
        for part in ("sum", "count")
    }
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    try:
        with Pool(manager=FakeManager(), name="readme", min_size=1, check_after_idle=None) as pool:
            instrument(pool, meter_provider=provider)
            with pool.connection():  # so that the wait and use histograms have one
                pass
            pool.drain()  # so that connections_closed and create_time have a data point
            data = reader.get_metrics_data()
    finally:
        provider.shutdown()
    assert data is not None
    emitted = {
        metric.name
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert emitted <= names
    assert len(emitted) == 29  # every instrument reported
    histograms = {f"db.client.connection.{kind}_time" for kind in ("wait", "use", "create")}
    assert histograms <= emitted
