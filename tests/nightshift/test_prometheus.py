"""The simulator's /metrics is valid Prometheus exposition: parsed by prometheus_client's parser,
and scraped by a real Prometheus whose HTTP API then returns the series."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from afterfix.nightshift.apiserver import ApiServer
from afterfix.nightshift.clock import SimClock
from afterfix.nightshift.cluster import Cluster

FAMILIES = {
    "afterfix_sim_latency_p95_seconds": "gauge",
    "afterfix_sim_error_ratio": "gauge",
    "afterfix_sim_cpu_utilization_ratio": "gauge",
    "afterfix_sim_memory_bytes": "gauge",
    "afterfix_sim_restarts": "counter",
    "afterfix_sim_replicas": "gauge",
    "afterfix_sim_ready_replicas": "gauge",
    "afterfix_sim_requests_per_second": "gauge",
}


def deployment(name, replicas):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": f"shop/{name}:1"}]}}}}


@pytest.fixture
def served():
    cluster = Cluster(SimClock(), seed=5)
    cluster.create(deployment("checkout", 3))
    cluster.create(deployment("cart", 1))
    cluster.workloads.configure("default", "checkout", leak_mb_per_hour=400)
    cluster.tick(3 * 3600)
    server = ApiServer(cluster).start()
    yield cluster, server
    server.stop()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


def test_metrics_parse_as_prometheus_text(served):
    from prometheus_client import parser  # a test dependency (pyproject.toml [test])

    cluster, server = served
    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    assert {name: families[name].type for name in FAMILIES} == FAMILIES
    for name in FAMILIES:
        labels = {(s.labels["namespace"], s.labels["deployment"]) for s in families[name].samples}
        assert labels == {("default", "checkout"), ("default", "cart")}
    values = {(f.name, s.labels.get("deployment")): s.value for f in families.values() for s in f.samples}
    python = cluster.workloads.metrics("default", "checkout")
    assert values[("afterfix_sim_replicas", "checkout")] == 3
    assert values[("afterfix_sim_restarts", "checkout")] == python["restarts"] > 0
    assert values[("afterfix_sim_memory_bytes", "checkout")] == pytest.approx(python["memory_mb"] * 2 ** 20)
    assert values[("afterfix_sim_latency_p95_seconds", "cart")] == pytest.approx(
        cluster.workloads.metrics("default", "cart")["latency_p95_ms"] / 1000)
    assert values[("afterfix_sim_clock_seconds", None)] == cluster.clock.now()


def _query(prom: str, expr: str) -> list:
    body = json.loads(_get(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
    assert body["status"] == "success", body
    return body["data"]["result"]


def _wait_for(prom: str, expr: str, want: str, deadline_s: float = 90.0) -> list:
    end = time.monotonic() + deadline_s
    result: list = []
    while time.monotonic() < end:
        try:
            result = _query(prom, expr)
        except OSError:
            result = []
        if result and result[0]["value"][1] == want:
            return result
        time.sleep(0.25)
    raise AssertionError(f"Prometheus never returned {expr} == {want} (last answer {result})")


def test_real_prometheus_scrapes_the_simulator(served, tmp_path, free_port):
    binary = shutil.which("prometheus")
    assert binary is not None, "prometheus is not on PATH: `make test` installs it (apt-get install prometheus)"
    cluster, server = served
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: afterfix-sim\n    metrics_path: /metrics\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{server.port}']\n")
    prom = f"http://127.0.0.1:{free_port}"
    log = open(tmp_path / "prometheus.log", "w")
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{free_port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for(prom, 'afterfix_sim_replicas{namespace="default",deployment="checkout"}', "3")
        restarts = cluster.workloads.metrics("default", "checkout")["restarts"]
        _wait_for(prom, 'afterfix_sim_restarts_total{deployment="checkout"}', str(restarts))
        # A change in the cluster shows up in the next scrapes.
        with cluster.lock:
            cluster.patch("apps/v1", "Deployment", "default", "checkout", {"spec": {"replicas": 5}})
        result = _wait_for(prom, 'afterfix_sim_replicas{deployment="checkout"}', "5")
        assert result[0]["metric"]["job"] == "afterfix-sim"
        targets = json.loads(_get(f"{prom}/api/v1/targets"))["data"]["activeTargets"]
        assert [t["health"] for t in targets] == ["up"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
