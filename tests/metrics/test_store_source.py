"""StoreMetrics: the store's metric history (points that came in over OTLP/HTTP) read as a
MetricSource: labels match point and resource attributes, a range is evaluated at each step with
Prometheus' 5-minute lookback, and what it cannot answer says why."""

from __future__ import annotations

import pandas as pd
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from afterfix.analysis.findings import _common
from afterfix.ingest.capture import Capture
from afterfix.metrics import MetricQueryError, MetricSource, MetricSourceUnavailable, StoreMetrics
from afterfix.store import Store

T0 = pd.Timestamp("2026-11-27T05:00:00")
LATENCY = "afterfix.workload.latency_p95_ms"
PAYMENTS = {"k8s.namespace.name": "shop", "k8s.deployment.name": "payments"}
# payments on night n1: minutes 0-9 and 30-39 (a gap between); night n2 and checkout: minutes 0-39
N1_MINUTES = [*range(10), *range(30, 40)]


def ns(minute: float) -> int:
    return int((T0 + pd.Timedelta(minutes=minute)).tz_localize("UTC").value)


def attrs(d: dict) -> list[common_pb2.KeyValue]:
    out = []
    for k, v in d.items():
        value = common_pb2.AnyValue(int_value=v) if isinstance(v, int) else common_pb2.AnyValue(string_value=v)
        out.append(common_pb2.KeyValue(key=k, value=value))
    return out


def resource(request, name: str, **extra):
    return request.resource_metrics.add(resource=resource_pb2.Resource(attributes=attrs(
        {"service.name": name, "k8s.namespace.name": "shop", "k8s.deployment.name": name, **extra}))).scope_metrics.add()


def gauge(scope, name: str, points: list[tuple[float, float]], **point_attrs):
    metric = scope.metrics.add(name=name, unit="ms")
    for minute, value in points:
        metric.gauge.data_points.add(time_unix_nano=ns(minute), as_double=value, attributes=attrs(point_attrs))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    request = metrics_service_pb2.ExportMetricsServiceRequest()
    n1 = resource(request, "payments", **{"afterfix.night": "n1", "afterfix.seed": 3, "afterfix.depends_on": "shop/orders-db"})
    gauge(n1, LATENCY, [(m, 100.0 + m) for m in N1_MINUTES])
    gauge(n1, "http.server.requests", [(m, 10.0 * m) for m in range(5)], **{"http.route": "/pay"})
    gauge(n1, "http.server.requests", [(m, 1.0) for m in range(5)], **{"http.route": "/refund"})
    hist = n1.metrics.add(name="http.server.duration", unit="ms")
    hist.histogram.data_points.add(time_unix_nano=ns(1), start_time_unix_nano=ns(0), count=4, sum=400.0,
                                   explicit_bounds=[100.0], bucket_counts=[2, 2])
    n2 = resource(request, "payments", **{"afterfix.night": "n2", "afterfix.seed": 4})
    gauge(n2, LATENCY, [(m, 500.0 + m) for m in range(40)])
    checkout = resource(request, "checkout", **{"afterfix.night": "n1"})
    gauge(checkout, LATENCY, [(m, 90.0) for m in range(40)])

    s = Store(tmp_path_factory.mktemp("store-source") / "store")
    capture = Capture(s, inbox=False, listen=True, host="127.0.0.1", port=0, interval=0.25)
    capture.start()
    try:
        import urllib.request

        body = request.SerializeToString()
        post = urllib.request.Request(capture.receiver.metrics_url, data=body, method="POST",
                                      headers={"Content-Type": "application/x-protobuf"})
        with urllib.request.urlopen(post, timeout=10) as r:
            assert r.status == 200
        assert capture.flush(30)
    finally:
        capture.stop()
    yield s
    s.close()


def at(minute: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(minutes=minute)


def test_a_range_is_one_row_per_series_and_step(store):
    frame = StoreMetrics(store).range(LATENCY, {**PAYMENTS, "afterfix.night": "n2"}, at(0), at(39), step=60)
    assert list(frame.columns[:3]) == ["time", "value", "series"]
    assert frame["time"].tolist() == [at(m) for m in range(40)]
    assert frame["value"].tolist() == [500.0 + m for m in range(40)]
    assert frame["series"].nunique() == 1 and frame["time"].dtype == "datetime64[ns]"
    # label columns: the series' resource attributes, as text
    row = frame.iloc[0]
    assert (row["service.name"], row["k8s.namespace.name"], row["k8s.deployment.name"]) == ("payments", "shop", "payments")
    assert row["afterfix.night"] == "n2" and row["afterfix.seed"] == "4"
    assert "afterfix.depends_on" not in frame.columns  # n2's resource has none


def test_the_same_workload_on_two_nights_is_two_series(store):
    frame = StoreMetrics(store).range(LATENCY, PAYMENTS, at(0), at(5), step="1min")
    assert frame.groupby("afterfix.night")["value"].apply(list).to_dict() == {
        "n1": [100.0 + m for m in range(6)], "n2": [500.0 + m for m in range(6)]}
    assert frame["series"].nunique() == 2
    assert set(frame.loc[frame["afterfix.night"] == "n1", "afterfix.depends_on"]) == {"shop/orders-db"}
    everyone = StoreMetrics(store).range(LATENCY, {"k8s.namespace.name": "shop"}, at(0), at(0), step=60)
    assert sorted(everyone["k8s.deployment.name"]) == ["checkout", "payments", "payments"]


def test_each_step_takes_the_newest_point_within_five_minutes(store):
    frame = StoreMetrics(store).range(LATENCY, {**PAYMENTS, "afterfix.night": "n1"}, at(0), at(39), step=60)
    # minute 9 is the last point before the gap: steps 10-13 still see it, 14 (5 minutes on) does not
    assert frame["time"].tolist() == [at(m) for m in [*range(14), *range(30, 40)]]
    assert frame["value"].tolist() == [100.0 + min(m, 9) if m < 14 else 100.0 + m for m in [*range(14), *range(30, 40)]]
    coarse = StoreMetrics(store).range(LATENCY, {**PAYMENTS, "afterfix.night": "n1"}, at(0.5), at(39), step=600)
    assert coarse["time"].tolist() == [at(0.5), at(10.5), at(30.5)] and coarse["value"].tolist() == [100.0, 109.0, 130.0]
    wider = StoreMetrics(store, lookback="30min").range(LATENCY, {**PAYMENTS, "afterfix.night": "n1"}, at(20), at(20))
    assert wider["value"].tolist() == [109.0]


def test_labels_match_point_attributes_too(store):
    source = StoreMetrics(store)
    pay = source.range("http.server.requests", {"http.route": "/pay"}, at(0), at(4), step=60)
    assert pay["value"].tolist() == [0.0, 10.0, 20.0, 30.0, 40.0] and set(pay["http.route"]) == {"/pay"}
    assert set(pay["k8s.deployment.name"]) == {"payments"}  # and the resource's, in the same row
    both = source.range("http.server.requests", PAYMENTS, at(0), at(0), step=60)
    assert sorted(both["http.route"]) == ["/pay", "/refund"]
    assert source.range("http.server.requests", {"http.route": "/pay'; DROP TABLE metrics; --"}, at(0), at(4)).empty


def test_latest_is_the_value_at_a_time(store):
    source = StoreMetrics(store)
    [value] = source.latest(LATENCY, {**PAYMENTS, "afterfix.night": "n1"}, at=at(12))["value"]
    assert value == 109.0
    assert source.latest(LATENCY, {**PAYMENTS, "afterfix.night": "n1"}, at=at(20)).empty  # nothing in 5 minutes
    assert source.latest(LATENCY, PAYMENTS).empty  # now: long after this history
    assert isinstance(source, MetricSource)


def test_times_are_read_as_utc_whatever_their_form(store):
    source, labels = StoreMetrics(store), {**PAYMENTS, "afterfix.night": "n2"}
    forms = [at(3), at(3).to_pydatetime(), "2026-11-27T05:03:00Z", "2026-11-27T06:03:00+01:00",
             at(3).tz_localize("UTC").timestamp()]
    for form in forms:
        assert source.latest(LATENCY, labels, at=form)["value"].tolist() == [503.0], form


def test_unknown_names_give_no_series_and_histograms_say_where_their_columns_are(store):
    source = StoreMetrics(store)
    assert source.range("afterfix.workload.nothing", PAYMENTS, at(0), at(10)).empty
    assert source.range(LATENCY, {"k8s.deployment.name": "nobody"}, at(0), at(10)).empty
    with pytest.raises(MetricQueryError, match=r"http.server.duration is a histogram; range\(\) reads gauges and sums.*"
                                               r"p50/p90/p95/p99 are columns of the metrics table"):
        source.range("http.server.duration", PAYMENTS, at(0), at(10))


def test_series_is_the_raw_history_the_findings_read(store):
    source = _common.metric_source(store)
    assert isinstance(source, StoreMetrics)
    raw = source.series("latency_p95_ms", "shop", "payments", at(8), at(31))
    # both nights' points, oldest first, at their own times (no steps, no lookback)
    assert raw["time"].tolist() == sorted([at(m) for m in (8, 9, 30, 31)] + [at(m) for m in range(8, 32)])
    assert set(raw.columns) == {"time", "value"} and raw["time"].is_monotonic_increasing
    assert source.series("latency_p95_ms", "shop", "nobody").empty


@pytest.mark.parametrize("labels, start, end, step, message", [
    ({"k8s.namespace.name": 1}, 0, 1, 60, "label k8s.namespace.name=1 must be a string"),
    ({"a'b": "x"}, 0, 1, 60, "label \"a'b\" is not an attribute name"),
    ({}, None, 1, 60, r"range\(\) needs start and end"),
    ({}, 10, 0, 60, "is before start"),
    ({}, 0, 1, -5, "step=-5 is not a positive duration"),
    ({}, 0, 30 * 86400, 60, "43,201 points per series, over the 11,000"),
    ({}, float("nan"), 1, 60, "start=nan is not a time"),
])
def test_bad_arguments_name_the_store_and_the_fix(store, labels, start, end, step, message):
    with pytest.raises(MetricQueryError, match=f"^store {store.root}: .*{message}"):
        StoreMetrics(store).range(LATENCY, labels, start, end, step)


def test_a_store_without_history_has_no_series_and_a_missing_one_is_unavailable(tmp_path):
    empty = Store(tmp_path / "empty")
    empty.create()
    assert StoreMetrics(empty).range(LATENCY, PAYMENTS, at(0), at(10)).empty
    missing = tmp_path / "nowhere"
    with pytest.raises(MetricSourceUnavailable, match=f"^store {missing}: no store at {missing}: ingest something first"):
        StoreMetrics(missing).range(LATENCY, PAYMENTS, at(0), at(10))
