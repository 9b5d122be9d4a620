"""OTLP metrics through the receiver (`POST /v1/metrics`), driven by the real OpenTelemetry SDK
exporter and by plain HTTP, into the `metrics` table."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys

import pytest
import requests
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from afterfix import Store
from afterfix.ingest.ingester import Ingester
from afterfix.ingest.receiver import Receiver
from afterfix.ingest.spool import Spool

PB = {"Content-Type": "application/x-protobuf"}
JS = {"Content-Type": "application/json"}
T_NS = 1_795_000_000_000_000_000  # 2026-11-18, nanoseconds
RESOURCE = {"service.name": "checkout", "k8s.namespace.name": "shop", "k8s.deployment.name": "checkout"}


def rows(store: Store, sql: str = "SELECT * FROM metrics ORDER BY name, time") -> list[dict]:
    return store.arrow(sql).to_pylist()  # nulls stay None


def count(store: Store, table: str = "metrics") -> int:
    return int(store.query(f"SELECT count(*) AS n FROM {table}")["n"][0])


def kv(key: str, value) -> dict:
    v = {"stringValue": value} if isinstance(value, str) else {"intValue": str(value)}
    return {"key": key, "value": v}


def gauge_json(points: list[tuple[int, float]], *, name: str = "afterfix.workload.cpu_utilization",
               resource: dict | None = None, extra_metrics: list | None = None) -> dict:  # fmt: skip
    """An ExportMetricsServiceRequest in OTLP/JSON: one gauge with (seconds after T_NS, value) points."""
    res = RESOURCE if resource is None else resource
    metric = {"name": name, "unit": "1", "gauge": {"dataPoints": [
        {"timeUnixNano": str(T_NS + s * 10**9), "asDouble": v} for s, v in points]}}
    return {"resourceMetrics": [{"resource": {"attributes": [kv(k, v) for k, v in res.items()]},
                                 "scopeMetrics": [{"scope": {"name": "afterfix.test"},
                                                   "metrics": [metric, *(extra_metrics or [])]}]}]}  # fmt: skip


def gauge_pb(points: list[tuple[int, float]], *, name: str = "afterfix.workload.replicas") -> bytes:
    """The same as protobuf, with integer values (asInt)."""
    res = resource_pb2.Resource(attributes=[common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(string_value=v))
                                            for k, v in RESOURCE.items()])  # fmt: skip
    metric = metrics_pb2.Metric(name=name, unit="{pod}", gauge=metrics_pb2.Gauge(data_points=[
        metrics_pb2.NumberDataPoint(time_unix_nano=T_NS + s * 10**9, as_int=int(v)) for s, v in points]))
    req = metrics_service_pb2.ExportMetricsServiceRequest(resource_metrics=[metrics_pb2.ResourceMetrics(
        resource=res, scope_metrics=[metrics_pb2.ScopeMetrics(metrics=[metric])])])
    return req.SerializeToString()


@pytest.fixture
def rec(store):
    """A receiver on a free port with its ingester and spool; stopped afterwards."""
    ing = Ingester(store, interval=0.05)
    ing.start()
    spool = Spool(store)
    r = Receiver(ing, spool, port=0)
    r.start()
    yield r
    r.stop()
    ing.stop(timeout=2)
    spool.close()


def post(rec: Receiver, body: bytes, headers: dict) -> requests.Response:
    return requests.post(rec.metrics_url, data=body, headers=headers, timeout=10)


def test_the_sdk_exporter_delivers_gauges_counters_and_histograms(store, rec):
    exporter = OTLPMetricExporter(endpoint=rec.metrics_url, compression=Compression.Gzip)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)  # exports on flush only
    provider = MeterProvider(resource=Resource.create(RESOURCE), metric_readers=[reader])
    meter = provider.get_meter("checkout.instrumentation")
    meter.create_counter("http.server.requests").add(7, {"http.route": "/pay"})
    meter.create_gauge("process.cpu.utilization", unit="1").set(0.42)
    latency = meter.create_histogram("http.server.duration", unit="ms")
    for v in (1, 3, 7, 12, 30, 80, 200):  # the SDK's default bounds 0, 5, 10, 25, 50, 75, 100, 250, ...
        latency.record(v)
    provider.shutdown()  # one export, and waits for its answer
    assert rec.ingester.flush()
    got = {r["name"]: r for r in rows(store)}
    assert set(got) == {"http.server.requests", "process.cpu.utilization", "http.server.duration"}
    assert (got["http.server.requests"]["kind"], got["http.server.requests"]["value"]) == ("sum", 7.0)
    assert json.loads(got["http.server.requests"]["attributes"]) == {"http.route": "/pay"}
    assert (got["process.cpu.utilization"]["kind"], got["process.cpu.utilization"]["value"]) == ("gauge", 0.42)
    h = got["http.server.duration"]
    assert (h["kind"], h["unit"], h["count"], h["sum"]) == ("histogram", "ms", 7, 333.0)
    # buckets (0,5]:2 (5,10]:1 (10,25]:1 (25,50]:1 (75,100]:1 (100,250]:1, min 1, max 200:
    # p50 rank 3.5 falls in (10,25] after 3: 10 + 15 * 0.5; p90 rank 6.3 in (100,250] after 6:
    # 100 + 150 * 0.3; p95 100 + 150 * 0.65 = 197.5; p99 239.5 is past the max, so 200.
    assert (h["p50"], h["p90"], h["p95"], h["p99"]) == pytest.approx((17.5, 145.0, 197.5, 200.0))
    for r in got.values():
        assert (r["service_name"], r["namespace"], r["workload"], r["scope_name"], r["source"]) == \
            ("checkout", "shop", "checkout", "checkout.instrumentation", "otlp-http")
        assert json.loads(r["resource_attributes"])["k8s.deployment.name"] == "checkout"
    assert rec.stats.points == 3 and rec.stats.rejected_requests == 0


@pytest.mark.parametrize("gzipped", [False, True])
def test_a_json_body_is_stored_and_answered_in_json(store, rec, gzipped):
    body, headers = json.dumps(gauge_json([(0, 0.5), (60, 0.75)])).encode(), dict(JS)
    if gzipped:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    r = post(rec, body, headers)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert r.json() == {}  # no partialSuccess: every point was accepted
    assert rec.ingester.flush()
    got = rows(store)
    assert [(str(x["time"]), x["value"]) for x in got] == [("2026-11-18 11:06:40", 0.5), ("2026-11-18 11:07:40", 0.75)]
    assert got[0]["series_id"] == got[1]["series_id"]  # one series


def test_a_protobuf_body_is_answered_in_protobuf(store, rec):
    r = post(rec, gauge_pb([(0, 3), (60, 4)]), PB)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/x-protobuf"
    resp = metrics_service_pb2.ExportMetricsServiceResponse.FromString(r.content)
    assert not resp.HasField("partial_success")
    assert rec.ingester.flush()
    assert [(x["value"], x["unit"], x["kind"]) for x in rows(store)] == [(3.0, "{pod}", "gauge"), (4.0, "{pod}", "gauge")]


def test_the_same_points_delivered_twice_are_stored_once(store, rec):
    body = gauge_pb([(0, 3), (60, 4)])
    assert post(rec, body, PB).status_code == 200
    assert rec.ingester.flush()
    # again, in the other encoding and with one new point: only that one is new
    again = json.dumps(gauge_json([(0, 3), (60, 4), (120, 5)], name="afterfix.workload.replicas")).encode()
    assert post(rec, again, JS).status_code == 200
    assert rec.ingester.flush()
    # the JSON resource's service.name etc. are the same attributes, so the same series
    assert [x["value"] for x in rows(store)] == [3.0, 4.0, 5.0]
    assert rec.ingester.stats().point_duplicates == 2


def test_bad_points_are_quarantined_with_place_and_reason_and_good_ones_stored(store, rec):
    req = gauge_json([(0, 0.5), (60, 0.6)], extra_metrics=[
        {"name": "latency", "histogram": {"dataPoints": [
            {"timeUnixNano": str(T_NS), "count": "3", "bucketCounts": ["1", "2"], "explicitBounds": [10]},
            {"timeUnixNano": str(T_NS), "count": "4", "bucketCounts": ["1", "2"], "explicitBounds": [10]},
            {"count": "1", "bucketCounts": ["1"]},
        ]}},
        {"name": "no data at all"},
    ])
    req["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"][1]["asDouble"] = "lots"
    r = post(rec, json.dumps(req).encode(), JS)
    assert r.status_code == 200
    partial = r.json()["partialSuccess"]
    assert int(partial["rejectedDataPoints"]) == 3
    assert "quarantine" in partial["errorMessage"]
    assert rec.ingester.flush()
    assert [(x["name"], x["value"], x["count"]) for x in rows(store)] == [
        ("afterfix.workload.cpu_utilization", 0.5, None), ("latency", None, 3)]
    q = {x["location"]: x["reason"] for x in rows(store, "SELECT * FROM quarantine")}
    request = "request 1, resourceMetrics[0].scopeMetrics[0]"
    assert q == {
        f'{request}.metrics[0] "afterfix.workload.cpu_utilization", gauge.dataPoints[1]':
            'asDouble is "lots", not a number (or "NaN", "Infinity", "-Infinity")',
        f'{request}.metrics[1] "latency", histogram.dataPoints[1]':
            "the bucket counts add up to 3, not to the point's count 4",
        f'{request}.metrics[1] "latency", histogram.dataPoints[2]':
            "timeUnixNano is missing or 0; every data point needs its time",
        f'{request}.metrics[2] "no data at all"':
            "the metric has none of gauge, sum, histogram, exponentialHistogram, summary; "
            "none of this metric's points were stored",
    }


def test_partial_success_in_protobuf_counts_the_refused_points(store, rec):
    req = metrics_service_pb2.ExportMetricsServiceRequest.FromString(gauge_pb([(0, 1), (60, 2)]))
    req.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points[1].ClearField("time_unix_nano")
    r = post(rec, req.SerializeToString(), PB)
    resp = metrics_service_pb2.ExportMetricsServiceResponse.FromString(r.content)
    assert r.status_code == 200 and resp.partial_success.rejected_data_points == 1
    assert "gauge.data_points[1]" in resp.partial_success.error_message
    assert rec.ingester.flush() and count(store) == 1 and count(store, "quarantine") == 1


@pytest.mark.parametrize("body, headers, text", [
    (b"{not json", JS, "not valid JSON"),
    (b'{"resourceSpans": []}', JS, "send traces to /v1/traces"),
    (b'["resourceMetrics"]', JS, "not an OTLP/JSON object"),
    (b"\xff\xff\xff\xff garbage", PB, "not an OTLP ExportMetricsServiceRequest"),
    (b"plain text", {**JS, "Content-Encoding": "gzip"}, "not valid gzip"),
])  # fmt: skip
def test_a_body_that_is_not_otlp_metrics_gets_400_with_the_reason(store, rec, body, headers, text):
    r = post(rec, body, headers)
    assert r.status_code == 400
    message = r.json()["message"] if r.headers["Content-Type"] == "application/json" else r.content.decode("latin-1")
    assert text in message
    assert rec.ingester.flush() and count(store) == 0 and count(store, "quarantine") == 0


def test_a_secret_in_a_metric_attribute_is_redacted_before_the_spool_and_the_store(store, rec):
    req = gauge_json([(0, 1.0)], resource={**RESOURCE, "db.connection": "postgres://app:hunter2@db:5432/shop"})
    req["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"][0]["attributes"] = [
        kv("api_key", "api_key=sk-proj-abcdefghijklmnopqrstuvwx")]
    assert post(rec, json.dumps(req).encode(), JS).status_code == 200
    assert rec.ingester.flush()
    (row,) = rows(store)
    assert "hunter2" not in row["resource_attributes"] and "sk-proj" not in row["attributes"]
    assert "[REDACTED:" in row["resource_attributes"] and "[REDACTED:" in row["attributes"]
    assert not any(b"hunter2" in p.read_bytes() for p in store.root.rglob("*") if p.is_file())


def test_other_methods_and_the_traces_endpoint_are_unchanged(store, rec):
    assert requests.get(rec.metrics_url, timeout=10).status_code == 405
    r = requests.post(rec.url, data=json.dumps(gauge_json([(0, 1.0)])).encode(), headers=JS, timeout=10)
    assert r.status_code == 400 and "only traces are read" in r.json()["message"]  # metrics sent to /v1/traces
    assert rec.metrics_url.endswith("/v1/metrics") and rec.url.endswith("/v1/traces")


_ACKNOWLEDGE_AND_DIE = """
import sys, requests
from afterfix import Store
from afterfix.ingest.ingester import Ingester
from afterfix.ingest.receiver import Receiver
from afterfix.ingest.spool import Spool
store = Store(sys.argv[1])
ing = Ingester(store, interval=3600)  # never commits on its own
ing.start()
rec = Receiver(ing, Spool(store), port=0)
rec.start()
r = requests.post(rec.metrics_url, data=open(sys.argv[2], "rb").read(), headers={"Content-Type": "application/json"})
print(r.status_code, flush=True)
sys.stdin.read()
"""


def test_points_acknowledged_by_a_process_that_died_are_replayed_from_its_spool(store, tmp_path):
    body = tmp_path / "body.json"
    body.write_bytes(json.dumps(gauge_json([(0, 1.0), (60, 2.0), (120, 3.0)])).encode())
    proc = subprocess.Popen([sys.executable, "-c", _ACKNOWLEDGE_AND_DIE, str(store.root), str(body)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "200", proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert count(store) == 0  # acknowledged, never committed
    spool, ing = Spool(store), Ingester(store, interval=0.05)
    ing.start()
    try:
        assert spool.recover(ing) == 1 and ing.flush()
    finally:
        ing.stop()
        spool.close()
    assert [x["value"] for x in rows(store)] == [1.0, 2.0, 3.0]
