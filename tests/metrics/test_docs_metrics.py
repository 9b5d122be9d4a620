"""docs/metrics.md names every metric of the history, its Prometheus name, and every public name
of afterfix.metrics; afterfix.metrics exports exactly what its __all__ says."""

from __future__ import annotations

from pathlib import Path

import afterfix.metrics
from afterfix.metrics import prometheus_name
from afterfix.nightshift.metrics_export import METRIC_NAME, UNITS
from afterfix.nightshift.workloads import HISTORY_FIELDS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
PUBLIC = {"LABELS", "LOOKBACK", "MAX_POINTS", "MetricQueryError", "MetricSource", "MetricSourceError",
          "MetricSourceUnavailable", "NAMES", "PrometheusMetrics", "StoreMetrics", "WORKLOAD_METRIC",
          "prometheus_label", "prometheus_name", "promql_string"}


def test_all_names_the_public_api():
    assert set(afterfix.metrics.__all__) == PUBLIC
    for name in PUBLIC:
        assert hasattr(afterfix.metrics, name), name
    for error in ("MetricQueryError", "MetricSourceUnavailable", "MetricSourceError"):
        assert issubclass(getattr(afterfix.metrics, error), afterfix.AfterfixError)


def test_every_history_metric_is_documented_with_its_unit():
    for field in HISTORY_FIELDS:
        name = METRIC_NAME.format(field=field)
        row = next((line for line in DOC.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row is not None, f"docs/metrics.md: no table row for {name}"
        assert f"`{UNITS[field]}`" in row, f"docs/metrics.md: {name} row does not give its unit {UNITS[field]}"


def test_the_documented_mapping_is_the_one_used():
    for store_name in ("afterfix.workload.latency_p95_ms", "afterfix.workload.restarts"):
        assert f"| metric `{store_name}`" in DOC and f"`{prometheus_name(store_name)}`" in DOC
    for name in ("StoreMetrics", "PrometheusMetrics", "MetricQueryError", "MetricSourceUnavailable", "range_query",
                 "promql_string", "names=", "labels="):
        assert f"`{name}" in DOC, name
