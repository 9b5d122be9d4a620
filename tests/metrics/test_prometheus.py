"""PrometheusMetrics against a real Prometheus (Debian's 2.42) scraping the simulator's /metrics:
the store's names and labels find the scraped series, label values are text and never PromQL,
and Prometheus' own refusals come back with its reason."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

import pandas as pd
import pytest

from afterfix.metrics import (MetricQueryError, MetricSourceUnavailable, PrometheusMetrics, StoreMetrics,
                              prometheus_name, promql_string)
from afterfix.metrics.prometheus import selector
from afterfix.nightshift.metrics_export import METRIC_NAME
from afterfix.nightshift.workloads import HISTORY_FIELDS

PAYMENTS = {"k8s.namespace.name": "shop", "k8s.deployment.name": "payments"}
LATENCY = "afterfix.workload.latency_p95_ms"


def now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC").tz_localize(None)


def test_range_returns_the_scraped_series_under_the_store_names(sim, prometheus):
    cluster, _ = sim
    prom = PrometheusMetrics(prometheus)
    assert prom.query(LATENCY, PAYMENTS) == 'afterfix_workload_latency_p95_ms{namespace="shop",deployment="payments"}'
    frame = prom.range(LATENCY, PAYMENTS, now() - pd.Timedelta(seconds=30), now(), step=1)
    assert len(frame) >= 1 and list(frame.columns[:3]) == ["time", "value", "series"]
    assert frame["series"].nunique() == 1
    assert set(frame["k8s.namespace.name"]) == {"shop"} and set(frame["k8s.deployment.name"]) == {"payments"}
    assert set(frame["job"]) == {"afterfix-sim"}  # labels the scrape added keep their own names
    assert "namespace" not in frame.columns and "__name__" not in frame.columns
    assert frame["value"].tolist() == pytest.approx([cluster.workloads.metrics("shop", "payments")["latency_p95_ms"]]
                                                    * len(frame))
    assert frame["time"].dtype == "datetime64[ns]" and frame["time"].is_monotonic_increasing
    assert (frame["time"] >= now() - pd.Timedelta(minutes=1)).all()

    both = prom.range(LATENCY, {"k8s.namespace.name": "shop"}, now() - pd.Timedelta(seconds=10), now(), step=5)
    assert set(both["k8s.deployment.name"]) == {"payments", "checkout"} and both["series"].nunique() == 2


@pytest.mark.parametrize("field", HISTORY_FIELDS)
def test_every_history_field_is_served_and_found(sim, prometheus, field):
    cluster, _ = sim
    [value] = PrometheusMetrics(prometheus).latest(METRIC_NAME.format(field=field), PAYMENTS)["value"]
    assert value == pytest.approx(cluster.workloads.metrics("shop", "payments")[field])


def test_store_and_prometheus_give_the_same_answer(sim, sim_store, prometheus):
    cluster, _ = sim
    store, prom = StoreMetrics(sim_store), PrometheusMetrics(prometheus)
    at = cluster.clock.datetime().replace(tzinfo=None)  # the simulated now: the history's newest sample
    for field in ("latency_p95_ms", "error_rate", "memory_mb", "restarts"):
        name = METRIC_NAME.format(field=field)
        for deployment in ("payments", "checkout"):
            labels = {"k8s.namespace.name": "shop", "k8s.deployment.name": deployment}
            [from_store] = store.latest(name, labels, at=at)["value"]
            [from_prometheus] = prom.latest(name, labels)["value"]
            assert from_store == pytest.approx(from_prometheus), (field, deployment)


def test_label_values_are_matched_as_text_never_run_as_promql(prometheus):
    prom = PrometheusMetrics(prometheus)
    hostile = 'payments"} or afterfix_sim_clock_seconds or {job="afterfix-sim'
    start, end = now() - pd.Timedelta(seconds=10), now()
    assert prom.range(LATENCY, {"k8s.deployment.name": hostile}, start, end, step=5).empty
    for odd in ("pay\\ments", "pay\nments", "paý\x01ments", "'", "`"):
        assert prom.range(LATENCY, {"k8s.deployment.name": odd}, start, end, step=5).empty
    # The same text pasted in unescaped is a different query that answers: escaping is what stops it.
    pasted = f'afterfix_workload_latency_p95_ms{{deployment="{hostile}"}}'
    assert not prom.range_query(pasted, start, end, step=5).empty
    assert promql_string('a"b\\c\n') == '"a\\"b\\\\c\\n"'


def test_a_bad_query_says_what_prometheus_said(prometheus):
    prom = PrometheusMetrics(prometheus)
    start, end = now() - pd.Timedelta(seconds=10), now()
    with pytest.raises(MetricQueryError) as e:
        prom.range_query("rate(afterfix_workload_rps[5m]", start, end, step=5)
    message = str(e.value)
    assert message.startswith(f"Prometheus {prometheus} refused rate(afterfix_workload_rps[5m] (HTTP 400 bad_data): ")
    assert "parse error" in message and "unclosed left parenthesis" in message
    # Two series on each side of a one-to-one match: the query parses, and fails when executed.
    with pytest.raises(MetricQueryError, match=r"\(HTTP 422 execution\): .*many-to-many matching not allowed"):
        prom.range_query("afterfix_workload_rps + on() afterfix_workload_replicas", start, end, step=5)


def test_names_the_source_does_not_have_give_no_series(prometheus):
    prom = PrometheusMetrics(prometheus, names={LATENCY: "no_such_metric"})
    assert prom.range(LATENCY, PAYMENTS, now() - pd.Timedelta(seconds=10), now(), step=5).empty
    assert PrometheusMetrics(prometheus).range("afterfix.workload.nothing", PAYMENTS, 0, 3600, step=60).empty


def test_the_mapping():
    assert prometheus_name("afterfix.workload.latency_p95_ms") == "afterfix_workload_latency_p95_ms"
    assert prometheus_name("afterfix.workload.restarts") == "afterfix_workload_restarts_total"
    assert prometheus_name("http.server.duration", {"http.server.duration": "http_server_duration_seconds"}) == \
        "http_server_duration_seconds"
    prom = PrometheusMetrics("http://127.0.0.1:9090/", labels={"service.name": "job"})
    assert prom.query("k8s.pod.cpu", {"k8s.pod.name": "p-1", "service.name": "cart"}) == \
        'k8s_pod_cpu{k8s_pod_name="p-1",job="cart"}'
    with pytest.raises(MetricQueryError, match="label 'a\"b' is not an attribute name"):
        prom.query(LATENCY, {'a"b': "x"})
    with pytest.raises(MetricQueryError, match="'bad name' is not a Prometheus metric name .*map it with names="):
        PrometheusMetrics("http://h:1", names={LATENCY: "bad name"}).query(LATENCY)
    with pytest.raises(MetricQueryError, match="'__name__' is not a Prometheus label name"):
        selector("up", {"__name__": "x"})


@pytest.mark.parametrize("args, message", [
    ((LATENCY, None, None, None), "range\\(\\) needs start and end"),
    ((LATENCY, None, 100, 0), "end .* is before start .*; swap them"),
    ((LATENCY, None, 0, 86400, 1), "a step of 1 s gives 86,401 points per series, .*at least 8 s"),
    ((LATENCY, None, 0, 10, 0), "step=0 is not a positive duration"),
    ((LATENCY, None, "yesterday-ish", 10), "start='yesterday-ish' is not a time"),
    ((LATENCY, {"k8s.deployment.name": 3}, 0, 10), "label k8s.deployment.name=3 must be a string"),
])
def test_arguments_are_checked_before_anything_is_sent(args, message):
    with pytest.raises(MetricQueryError, match=f"^Prometheus http://127.0.0.1:1: {message}"):
        PrometheusMetrics("http://127.0.0.1:1").range(*args)


def test_an_unreachable_or_wrong_server_is_unavailable(sim, free_port):
    _, server = sim
    with pytest.raises(MetricSourceUnavailable, match=rf"Prometheus http://127.0.0.1:{free_port}: cannot reach it .*"
                                                      r"is Prometheus running there\?"):
        PrometheusMetrics(f"http://127.0.0.1:{free_port}").range(LATENCY, PAYMENTS, 0, 60)
    # The Kubernetes API simulator is a server, but not a Prometheus.
    with pytest.raises(MetricSourceUnavailable, match=r"answered HTTP 404 without a Prometheus API response"):
        PrometheusMetrics(server.url).range(LATENCY, PAYMENTS, 0, 60)
    with pytest.raises(MetricQueryError, match="give the server's http\\(s\\) URL"):
        PrometheusMetrics("127.0.0.1:9090")


def test_the_simulator_serves_both_namings(sim):
    _, server = sim
    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    for field in HISTORY_FIELDS:
        assert f'\n{prometheus_name(METRIC_NAME.format(field=field))}{{namespace="shop",deployment="payments"}} ' in text
    assert "\nafterfix_sim_latency_p95_seconds{" in text  # what the reference agent reads stays


def test_prometheus_itself_lists_the_simulator_as_up(prometheus):
    with urllib.request.urlopen(f"{prometheus}/api/v1/targets", timeout=5) as r:
        targets = json.loads(r.read())["data"]["activeTargets"]
    assert [(t["labels"]["job"], t["health"]) for t in targets] == [("afterfix-sim", "up")]
    query = urllib.parse.urlencode({"query": "afterfix_workload_restarts_total"})
    with urllib.request.urlopen(f"{prometheus}/api/v1/metadata?metric=afterfix_workload_restarts_total&{query}",
                                timeout=5) as r:
        [meta] = json.loads(r.read())["data"]["afterfix_workload_restarts_total"]
    assert meta["type"] == "counter"
