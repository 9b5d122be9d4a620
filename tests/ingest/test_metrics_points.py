"""How each kind of OTLP data point becomes a `metrics` row: quantiles against hand-computed
values, series ids, namespace and workload, flags; in both encodings."""

from __future__ import annotations

import hashlib
import math

import orjson
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2

from afterfix.ingest import otlp_metrics as om
from afterfix.ingest import quantiles as qt

from .test_metrics import T_NS, gauge_json, kv

INF = math.inf

# (case, buckets, min, max, expected p50, p90, p95, p99), each worked out by hand
HISTOGRAMS = [
    # counts 2,3,4,1 over bounds 1,2,4 (10 in all). p50: rank 5 ends (1,2] -> 2. p90: rank 9 ends
    # (2,4] -> 4. p95, p99: in (4,+Inf), which answers its lower bound 4, as Prometheus does.
    ("Prometheus rules", qt.explicit_buckets([1, 2, 4], [2, 3, 4, 1]), None, None, (2.0, 4.0, 4.0, 4.0)),
    # with max 6 the +Inf bucket is (4,6]: p95 rank 9.5 -> 4 + 2 * 0.5; p99 rank 9.9 -> 4 + 2 * 0.9
    ("max bounds the +Inf bucket", qt.explicit_buckets([1, 2, 4], [2, 3, 4, 1]), 0.5, 6.0, (2.0, 4.0, 5.0, 5.8)),
    # 4 in (-inf,10] with min 2: [2,10]; p50 rank 2 -> 2 + 8 * 0.5 = 6; p90 9.2 is past max 9
    ("min starts the first bucket", qt.explicit_buckets([10], [4, 0]), 2.0, 9.0, (6.0, 9.0, 9.0, 9.0)),
    # (-inf,-5]:3 (-5,0]:1: p50 rank 2 in the first bucket, upper bound <= 0: answers -5 (Prometheus);
    # p90 rank 3.6 -> -5 + 5 * 0.6; p95 -> -5 + 5 * 0.8; p99 -> -5 + 5 * 0.96
    ("negative first bucket", qt.explicit_buckets([-5, 0], [3, 1, 0]), None, None, (-5.0, -2.0, -1.0, -0.2)),
    # a first bucket with a positive bound starts at 0: (-inf,4]:4 -> [0,4], p50 = 2
    ("first bucket from 0", qt.explicit_buckets([4], [4, 0]), None, None, (2.0, 3.6, 3.8, 3.96)),
    ("empty", qt.explicit_buckets([1], [0, 0]), None, None, (None, None, None, None)),
    # scale 0 (base 2), positive offset 0: (1,2]:1 (2,4]:2 (4,8]:1. p50 rank 2 -> 2 + 2 * 0.5;
    # p90 rank 3.6 -> 4 + 4 * 0.6; p95 -> 4 + 4 * 0.8; p99 -> 4 + 4 * 0.96
    ("exponential", qt.exponential_buckets(0, 0, 0.0, (0, [1, 2, 1]), (0, [])), None, None, (3.0, 6.4, 7.2, 7.84)),
    # [-2,-1):2, zero bucket [0,0]:2, (2,4]:4. p50 rank 4 ends the zero bucket -> 0; p90 rank 7.2
    # -> 2 + 2 * 3.2/4; p95 -> 2 + 2 * 0.9; p99 -> 2 + 2 * 0.98
    ("exponential with negatives and zeros", qt.exponential_buckets(0, 2, 0.0, (1, [4]), (0, [2])), None, None,
     (0.0, 3.6, 3.8, 3.96)),
    # scale 1 (base sqrt 2), offset 2: (2, 2.828]:1 (2.828, 4]:1. p50 rank 1 -> 2^1.5; p90 rank 1.8
    # -> 2^1.5 + (4 - 2^1.5) * 0.8
    ("exponential scale 1", qt.exponential_buckets(1, 0, 0.0, (2, [1, 1]), (0, [])), None, None,
     (2**1.5, 2**1.5 + (4 - 2**1.5) * 0.8, 2**1.5 + (4 - 2**1.5) * 0.9, 2**1.5 + (4 - 2**1.5) * 0.98)),
]  # fmt: skip


@pytest.mark.parametrize("case, buckets, lo, hi, expected", HISTOGRAMS, ids=[c[0] for c in HISTOGRAMS])
def test_histogram_quantiles(case, buckets, lo, hi, expected):
    got = tuple(qt.bucket_quantile(q, buckets, lo, hi) for q in qt.QUANTILES)
    assert got == pytest.approx(expected)


@pytest.mark.parametrize("pairs, expected", [
    ([(0.5, 3.0), (0.9, 7.0), (0.99, 12.0)], (3.0, 7.0, 7 + 5 * 0.05 / 0.09, 12.0)),  # p95 between 0.9 and 0.99
    ([(0.25, 1.0), (0.75, 5.0)], (3.0, None, None, None)),  # nothing sent above 0.75
    ([], (None, None, None, None)),
])  # fmt: skip
def test_summary_quantiles(pairs, expected):
    assert tuple(qt.summary_quantile(q, pairs) for q in qt.QUANTILES) == pytest.approx(expected)


def one(kind: str, point: dict) -> dict:
    """The row of a request holding one metric of `kind` with one point."""
    body = gauge_json([])
    body["resourceMetrics"][0]["scopeMetrics"][0]["metrics"] = [{"name": "m", kind: {"dataPoints": [point]}}]
    d = om.decode_json_body(orjson.dumps(body))
    assert d.refused == [], d.refused
    (row,) = d.metrics.to_pylist()
    return row


def test_exponential_histogram_and_summary_points_in_json():
    e = one("exponentialHistogram", {"timeUnixNano": str(T_NS), "count": "4", "sum": 14, "scale": 0,
                                     "positive": {"offset": 0, "bucketCounts": ["1", "2", "1"]}})  # fmt: skip
    assert (e["kind"], e["count"], e["sum"], e["p50"], e["p99"]) == ("exponential_histogram", 4, 14.0, 3.0, 7.84)
    s = one("summary", {"timeUnixNano": str(T_NS), "count": "100", "sum": "NaN",
                        "quantileValues": [{"quantile": 0.5, "value": 3}, {"quantile": 0.99, "value": 12}]})  # fmt: skip
    assert (s["kind"], s["count"], s["p50"], s["p99"]) == ("summary", 100, 3.0, 12.0) and math.isnan(s["sum"])
    assert s["p90"] == pytest.approx(3 + 9 * 0.4 / 0.49)


def test_a_point_without_a_recorded_value_is_stored_as_null():
    row = one("gauge", {"timeUnixNano": str(T_NS), "flags": 1})
    assert row["value"] is None
    h = one("histogram", {"timeUnixNano": str(T_NS), "flags": 1, "count": "0"})
    assert (h["count"], h["p50"]) == (0, None)


def test_protobuf_summary_and_exponential_histogram_match_json():
    pb = metrics_service_pb2.ExportMetricsServiceRequest()
    sm = pb.resource_metrics.add().scope_metrics.add()
    m = sm.metrics.add(name="rpc.duration", unit="s")
    m.summary.data_points.add(time_unix_nano=T_NS, count=100, sum=50.0, quantile_values=[
        metrics_pb2.SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=3.0),
        metrics_pb2.SummaryDataPoint.ValueAtQuantile(quantile=0.99, value=12.0)])
    x = sm.metrics.add(name="exp")
    p = x.exponential_histogram.data_points.add(time_unix_nano=T_NS, count=4, scale=0, max=5.0)
    p.positive.offset, p.positive.bucket_counts[:] = 0, [1, 2, 1]
    p.attributes.append(common_pb2.KeyValue(key="k8s.job.name", value=common_pb2.AnyValue(string_value="nightly")))
    d = om.decode_protobuf(pb.SerializeToString())
    s, e = d.metrics.to_pylist()
    assert (s["kind"], s["unit"], s["count"], s["sum"], s["p50"], s["p99"]) == ("summary", "s", 100, 50.0, 3.0, 12.0)
    # max 5 bounds the estimates: p90 6.4 and above become 5; sum was not sent, so it is null
    assert (e["kind"], e["sum"], e["p50"], e["p90"], e["p99"], e["workload"]) == \
        ("exponential_histogram", None, 3.0, 5.0, 5.0, "nightly")


def test_series_id_is_the_documented_hash_and_ignores_attribute_order():
    res = {"service.name": "api", "k8s.namespace.name": "shop", "k8s.statefulset.name": "db"}
    a = gauge_json([(0, 1.0)], resource=res)
    b = gauge_json([(60, 2.0)], resource=dict(reversed(list(res.items()))))
    c = gauge_json([(0, 1.0)], resource={**res, "host.name": "n2"})
    for body in (a, b):
        body["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"][0]["attributes"] = [
            kv("state", "idle"), kv("cpu", 0)]
    b["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"][0]["attributes"].reverse()
    ra, rb, rc = (om.decode_json_body(orjson.dumps(x)).metrics.to_pylist()[0] for x in (a, b, c))
    canonical = orjson.dumps({"attributes": {"cpu": 0, "state": "idle"}, "name": "afterfix.workload.cpu_utilization",
                              "resource": res}, option=orjson.OPT_SORT_KEYS)  # fmt: skip
    assert ra["series_id"] == rb["series_id"] == hashlib.blake2b(canonical, digest_size=16).hexdigest()
    assert rc["series_id"] != ra["series_id"]  # another resource, another series
    assert (ra["namespace"], ra["workload"], ra["service_name"]) == ("shop", "db", "api")


@pytest.mark.parametrize("point, reason", [
    ({"timeUnixNano": str(T_NS), "count": "3", "bucketCounts": ["1", "2", "0"], "explicitBounds": [5]},
     "3 bucket counts for 1 explicit bounds"),
    ({"timeUnixNano": str(T_NS), "count": "3", "bucketCounts": ["1", "1", "1"], "explicitBounds": [5, 5]},
     "explicit bounds must be finite and increasing"),
    ({"timeUnixNano": "-1", "count": "0"}, "timeUnixNano is \"-1\", not an unsigned 64-bit integer"),
    ({"timeUnixNano": str(T_NS), "count": "x"}, 'count is "x", not an unsigned 64-bit integer'),
])  # fmt: skip
def test_bad_histogram_points_say_what_is_wrong(point, reason):
    body = gauge_json([])
    body["resourceMetrics"][0]["scopeMetrics"][0]["metrics"] = [{"name": "h", "histogram": {"dataPoints": [point]}}]
    d = om.decode_json_body(orjson.dumps(body), request=7)
    (r,) = d.refused
    assert d.metrics.num_rows == 0 and d.rejected_points == 1
    assert r.location == 'request 7, resourceMetrics[0].scopeMetrics[0].metrics[0] "h", histogram.dataPoints[0]'
    assert r.reason.startswith(reason)
