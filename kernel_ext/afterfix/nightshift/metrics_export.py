"""The night shift's metric history, sent over OTLP/HTTP as it is made.

Every simulated minute each Deployment's metrics are sampled (`WorkloadModel.record`);
`MetricHistoryExporter.export()` sends the samples not sent yet as one
ExportMetricsServiceRequest (protobuf) to `POST {endpoint}/v1/metrics`: one resource per workload
(`service.name`, `k8s.namespace.name`, `k8s.deployment.name`, and `afterfix.depends_on` with the
workloads it declares it calls, comma-separated), one metric per field of `HISTORY_FIELDS`, named
`afterfix.workload.<field>`, one point per sample stamped with simulated time. Restarts are a
cumulative monotonic sum counted from `start`; the others are gauges.

A receiver that is busy (429, 503) is asked again after its Retry-After; any other refusal raises
`MetricExportError` naming the URL and what the receiver said, and the samples stay unsent, so
the next `export()` sends them again.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import urlsplit

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from afterfix._exceptions import AfterfixError
from afterfix.nightshift.workloads import HISTORY_FIELDS

if TYPE_CHECKING:
    from afterfix.nightshift.cluster import Cluster

__all__ = ["MetricHistoryExporter", "MetricExportError", "METRIC_NAME", "UNITS", "DEPENDS_ON", "metrics_url"]

METRIC_NAME = "afterfix.workload.{field}"
DEPENDS_ON = "afterfix.depends_on"  # resource attribute: "ns/name,ns/name" this workload calls
SCOPE = "afterfix.nightshift"
# UCUM units, as OpenTelemetry's semantic conventions write them.
UNITS = {"latency_p95_ms": "ms", "error_rate": "1", "cpu_utilization": "1", "memory_mb": "MiBy",
         "restarts": "{restart}", "replicas": "{pod}", "ready_replicas": "{pod}", "rps": "{request}/s"}
DESCRIPTIONS = {
    "latency_p95_ms": "95th percentile request latency.",
    "error_rate": "Share of requests answered with an error.",
    "cpu_utilization": "CPU used over CPU requested, averaged over ready pods.",
    "memory_mb": "Average container memory working set.",
    "restarts": "Container restarts since the simulation began.",
    "replicas": "Running pods.",
    "ready_replicas": "Ready pods.",
    "rps": "Incoming request rate.",
}
CUMULATIVE = {"restarts"}
RETRYABLE = (429, 502, 503, 504)


class MetricExportError(AfterfixError):
    """The receiver refused the metric history, or could not be reached."""


def metrics_url(endpoint: str) -> str:
    """`POST` target for metrics next to an OTLP/HTTP endpoint: http://h:p[/v1/traces] -> http://h:p/v1/metrics."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise MetricExportError(f"{endpoint!r} is not an http(s) URL of an OTLP/HTTP receiver "
                                "(e.g. http://127.0.0.1:4318)")
    return f"{parts.scheme}://{parts.netloc}/v1/metrics"


class MetricHistoryExporter:
    """Sends a cluster's recorded metric history, the samples not sent yet, to an OTLP/HTTP receiver."""

    def __init__(self, cluster: Cluster, endpoint: str, *, start: float, resource: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None, timeout_s: float = 10.0, retries: int = 5):
        self.cluster, self.url = cluster, metrics_url(endpoint)
        self.start_ns = int(start * 1e9)
        self.resource = dict(resource or {})
        self.headers = {"Content-Type": "application/x-protobuf", **dict(headers or {})}
        self.timeout_s, self.retries = timeout_s, retries
        self.sent: dict[str, float] = {}  # workload -> time of the newest sample sent
        self.points = 0  # data points accepted so far
        self.requests = 0
        self.exported_at: float | None = None  # simulated time of the last export
        self._lock = threading.Lock()  # agents' threads move the clock too; one export at a time

    def export(self, *, every_s: float = 0.0) -> int:
        """Send every sample newer than what was sent; the number of data points sent.

        With `every_s`, only once that many simulated seconds have passed since the last export
        (so a clock moved in small steps still sends batches of that span)."""
        with self._lock:
            now = self.cluster.clock.now()
            if every_s and self.exported_at is not None and now - self.exported_at < every_s:
                return 0
            self.exported_at = now
            request, newest = self._request()
            if not newest:
                return 0
            self._post(request.SerializeToString())
            self.sent.update(newest)
            count = sum(len(m.gauge.data_points) + len(m.sum.data_points)
                        for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics)
            self.points += count
            self.requests += 1
            return count

    def _request(self) -> tuple[metrics_service_pb2.ExportMetricsServiceRequest, dict[str, float]]:
        model = self.cluster.workloads
        with self.cluster.lock:
            keys = sorted(self.cluster.sim.get("history", {}))
            declared = model.dependencies()
        request = metrics_service_pb2.ExportMetricsServiceRequest()
        newest: dict[str, float] = {}
        for key in keys:
            ns, name = key.split("/", 1)
            since = self.sent.get(key)
            samples = [s for s in model.history(ns, name, since) if since is None or s["time"] > since]
            if not samples:
                continue
            newest[key] = samples[-1]["time"]
            attrs = {"service.name": name, "k8s.namespace.name": ns, "k8s.deployment.name": name, **self.resource}
            if declared.get(key):
                attrs[DEPENDS_ON] = ",".join(declared[key])
            rm = request.resource_metrics.add(resource=resource_pb2.Resource(attributes=_attributes(attrs)))
            scope = rm.scope_metrics.add()
            scope.scope.name = SCOPE
            for field in HISTORY_FIELDS:
                metric = scope.metrics.add(name=METRIC_NAME.format(field=field), unit=UNITS[field],
                                           description=DESCRIPTIONS[field])
                if field in CUMULATIVE:
                    metric.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
                    metric.sum.is_monotonic = True
                    points = metric.sum.data_points
                else:
                    points = metric.gauge.data_points
                for s in samples:
                    p = points.add(time_unix_nano=int(round(s["time"] * 1e9)), as_double=float(s[field]))
                    if field in CUMULATIVE:
                        p.start_time_unix_nano = self.start_ns
        return request, newest

    def _post(self, body: bytes) -> None:
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                    r.read()
                    return
            except urllib.error.HTTPError as e:
                said = e.read()[:500].decode("utf-8", "replace").strip()
                if e.code not in RETRYABLE or attempt == self.retries:
                    hint = (" (this receiver has no /v1/metrics: is it an afterfix older than metric history?)"
                            if e.code == 404 else "")
                    raise MetricExportError(f"POST {self.url} answered HTTP {e.code}{hint}: {said or e.reason}") from None
                time.sleep(_retry_after(e.headers.get("Retry-After"), attempt))
            except (urllib.error.URLError, OSError) as e:
                if attempt == self.retries:
                    reason = getattr(e, "reason", e)
                    raise MetricExportError(f"POST {self.url} failed after {self.retries + 1} tries: {reason}; "
                                            "is the receiver running?") from None
                time.sleep(_retry_after(None, attempt))


def _retry_after(header: str | None, attempt: int) -> float:
    try:
        return min(5.0, max(0.0, float(header))) if header else min(2.0, 0.1 * 2 ** attempt)
    except ValueError:
        return min(2.0, 0.1 * 2 ** attempt)


def _attributes(attrs: Mapping[str, Any]) -> list[common_pb2.KeyValue]:
    out = []
    for k, v in attrs.items():
        if isinstance(v, bool):
            value = common_pb2.AnyValue(bool_value=v)
        elif isinstance(v, int):
            value = common_pb2.AnyValue(int_value=v)
        elif isinstance(v, float):
            value = common_pb2.AnyValue(double_value=v)
        else:
            value = common_pb2.AnyValue(string_value=str(v))
        out.append(common_pb2.KeyValue(key=k, value=value))
    return out
