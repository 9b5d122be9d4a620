"""One simulated cluster served over HTTP, its metric history in a store, and one real Prometheus
scraping its /metrics every second: shared by the whole session (Prometheus takes seconds to start)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from afterfix.ingest.capture import Capture
from afterfix.nightshift import scenarios as sc
from afterfix.nightshift.apiserver import ApiServer
from afterfix.nightshift.cluster import Cluster
from afterfix.nightshift.metrics_export import MetricHistoryExporter
from afterfix.store import Store

PROMETHEUS = "/usr/bin/prometheus"  # Debian's package, which `make test` installs


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def sim():
    """(cluster, server): payments and checkout (which calls payments) after two simulated hours.
    Tests only read it: its metrics stay what they were when the fixture was made."""
    cluster = Cluster(seed=7)
    sc.deployment(cluster, "shop", "payments", replicas=3, env={"DB_POOL_SIZE": "5"}, **sc.PAYMENTS_KNOBS)
    sc.deployment(cluster, "shop", "checkout", replicas=2, leak_mb_per_hour=40)
    cluster.tick(2 * 3600, step=60.0)
    server = ApiServer(cluster).start()
    yield cluster, server
    server.stop()


@pytest.fixture(scope="session")
def sim_store(sim, tmp_path_factory):
    """A store holding the simulated cluster's metric history, sent as the night shift sends it."""
    cluster, _ = sim
    store = Store(tmp_path_factory.mktemp("sim-store") / "store")
    capture = Capture(store, inbox=False, listen=True, host="127.0.0.1", port=0, interval=0.25)
    capture.start()
    try:
        exporter = MetricHistoryExporter(cluster, capture.receiver.url, start=cluster.clock.now() - 2 * 3600)
        assert exporter.export() > 0
        assert capture.flush(30)
    finally:
        capture.stop()
    yield store
    store.close()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="session")
def prometheus(sim, tmp_path_factory):
    """The URL of a real Prometheus that has scraped the simulator at least once."""
    binary = PROMETHEUS if os.path.exists(PROMETHEUS) else shutil.which("prometheus")
    if binary is None:
        pytest.fail(f"{PROMETHEUS} is missing: `make test` installs it (Debian package prometheus; "
                    "or run: sudo apt-get install -y prometheus)")
    _, server = sim
    folder = tmp_path_factory.mktemp("prometheus")
    config = folder / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: afterfix-sim\n    metrics_path: /metrics\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{server.port}']\n")
    port = _port()
    url = f"http://127.0.0.1:{port}"
    log_path = folder / "prometheus.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120  # a busy 2-core machine: Prometheus can take a while
        ready = scraped = False
        while time.monotonic() < deadline and proc.poll() is None and not scraped:
            try:
                if not ready:
                    ready = _get(f"{url}/-/ready")[0] == 200
                else:
                    status, body = _get(f"{url}/api/v1/query?query=count(afterfix_workload_replicas)")
                    scraped = status == 200 and b'"2"' in body
            except OSError:
                pass
            time.sleep(0.25)
        if not scraped:
            raise AssertionError(f"Prometheus at {url} {'never scraped the simulator' if ready else 'never became ready'}"
                                 f" (exit code {proc.poll()}); its log:\n{log_path.read_text()[-3000:]}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
