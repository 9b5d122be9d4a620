"""Metric sources: the store's metric history and Prometheus, behind one small interface.

    from afterfix.metrics import StoreMetrics, PrometheusMetrics
    labels = {"k8s.namespace.name": "shop", "k8s.deployment.name": "payments"}
    StoreMetrics(store).range("afterfix.workload.latency_p95_ms", labels, start, end, step=60)
    PrometheusMetrics("http://127.0.0.1:9090").range("afterfix.workload.latency_p95_ms", labels, start, end, step=60)

Both take the store's names and give the same frame (`time`, `value`, `series`, label columns);
`source.py` says how a range is evaluated and which errors mean what, docs/metrics.md how names
map to Prometheus'.
"""

from afterfix.metrics.prometheus import LABELS, NAMES, PrometheusMetrics, prometheus_label, prometheus_name, promql_string
from afterfix.metrics.source import (LOOKBACK, MAX_POINTS, MetricQueryError, MetricSource, MetricSourceError,
                                     MetricSourceUnavailable)
from afterfix.metrics.store import WORKLOAD_METRIC, StoreMetrics

__all__ = [
    "LABELS",
    "LOOKBACK",
    "MAX_POINTS",
    "MetricQueryError",
    "MetricSource",
    "MetricSourceError",
    "MetricSourceUnavailable",
    "NAMES",
    "PrometheusMetrics",
    "StoreMetrics",
    "WORKLOAD_METRIC",
    "prometheus_label",
    "prometheus_name",
    "promql_string",
]
