"""OTLP/JSON metrics files (one MetricsData per line, beside trace lines) through `afterfix ingest`,
`ingest_paths` and the inbox tailer; metric points in the spool; two writers storing a point once."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pyarrow as pa
import pytest

from afterfix import Store
from afterfix.ingest import otlp_metrics, spool
from afterfix.ingest.files import ingest_paths
from afterfix.ingest.ingester import Batch, Ingester
from afterfix.ingest.tail import InboxTailer

from .test_files import otlp_line, write_lines
from .test_metrics import T_NS, gauge_json, kv

HISTOGRAM = {"name": "http.server.duration", "unit": "ms", "histogram": {"aggregationTemporality": 2, "dataPoints": [
    {"startTimeUnixNano": str(T_NS - 60 * 10**9), "timeUnixNano": str(T_NS), "count": "10", "sum": 230.5,
     "bucketCounts": ["2", "3", "4", "1"], "explicitBounds": [10, 20, 40],
     "attributes": [kv("http.route", "/pay"), kv("k8s.namespace.name", "payments")]}]}}  # fmt: skip


def metrics_line(minute: int, value: float = 0.5, **kw) -> bytes:
    return orjson.dumps(gauge_json([(minute * 60, value)], **kw))


def rows(store: Store, sql: str) -> list[dict]:
    return store.arrow(sql).to_pylist()


def afterfix(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "afterfix", *args], capture_output=True, text=True, timeout=120)


def test_a_mixed_file_through_afterfix_ingest(store, tmp_path):
    f = write_lines(tmp_path / "collector" / "night.jsonl", [
        otlp_line(1, 2),                                         # line 1: traces
        metrics_line(0, 0.25, extra_metrics=[HISTOGRAM]),         # line 2: a gauge and a histogram
        b"",                                                      # line 3: blank
        b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "m", "gauge": {"dataPoints": '
        b'[{"timeUnixNano": "1", "asDouble": 1}, {"timeUnixNano": "2", "asInt": "x"}]}}]}]}]}',  # line 4: one bad point
        b'{"resourceMetrics": [{"truncated',                     # line 5: not JSON
        metrics_line(1, 0.5),                                    # line 6
        b'{"resourceMetrics": {"not": "a list"}}',               # line 7
        otlp_line(2, 1, bad_span_id=True),                       # line 8: a bad span
    ])  # fmt: skip
    store.close()
    r = afterfix("ingest", "--store", str(store.root), "--no-progress", str(f))
    assert r.returncode == 1, r.stderr  # refused records
    assert "1 file: 2 spans stored, 0 duplicates skipped, 4 metric points stored (0 duplicates skipped), 4 records refused" \
        in r.stdout
    got = {(x["name"], x["time"].isoformat()): x for x in rows(store, "SELECT * FROM metrics")}
    assert set(got) == {("afterfix.workload.cpu_utilization", "2026-11-18T11:06:40"),
                        ("afterfix.workload.cpu_utilization", "2026-11-18T11:07:40"),
                        ("http.server.duration", "2026-11-18T11:06:40"), ("m", "1970-01-01T00:00:00")}  # fmt: skip
    h = got["http.server.duration", "2026-11-18T11:06:40"]
    # buckets (-inf,10]:2 (10,20]:3 (20,40]:4 (40,+inf):1; the first starts at 0, no min or max sent.
    # p50: rank 5 ends (10,20] -> 20; p90: rank 9 ends (20,40] -> 40; p95, p99: in +Inf -> 40.
    assert (h["count"], h["sum"], h["p50"], h["p90"], h["p95"], h["p99"]) == (10, 230.5, 20.0, 40.0, 40.0, 40.0)
    assert h["start_time"].isoformat() == "2026-11-18T11:05:40"
    assert (h["namespace"], h["workload"], h["service_name"]) == ("payments", "checkout", "checkout")  # the point's namespace first
    assert h["source"] == str(f.resolve())
    q = {x["location"]: x["reason"] for x in rows(store, "SELECT * FROM quarantine")}
    assert set(q) == {'line 4, resourceMetrics[0].scopeMetrics[0].metrics[0] "m", gauge.dataPoints[1]', "line 5",
                      "line 7", "line 8, resourceSpans[0].scopeSpans[0].spans[0]"}  # fmt: skip
    assert q["line 5"].startswith("the line is not valid JSON") and "MetricsData" in q["line 5"]
    assert q["line 7"] == "resourceMetrics is an object, not a list"
    assert "asInt" in q['line 4, resourceMetrics[0].scopeMetrics[0].metrics[0] "m", gauge.dataPoints[1]']
    assert f"{f.resolve()} line 5: the line is not valid JSON" in r.stderr

    again = afterfix("ingest", "--store", str(store.root), "--no-progress", str(f))
    assert again.returncode == 0 and "1 unchanged" in again.stdout
    status = afterfix("status", "--store", str(store.root), "--format", "json")
    assert orjson.loads(status.stdout)["metric_points"] == 4


@pytest.mark.parametrize("workers", [0, 2])
def test_points_delivered_again_in_another_file_are_stored_once(store, tmp_path, workers):
    first = write_lines(tmp_path / "a.jsonl", [metrics_line(m) for m in range(3)])
    s = ingest_paths(store, [first], workers=workers)
    assert (s.points_stored, s.point_duplicates, s.refused) == (3, 0, [])
    # the same points (and one more) from another exporter's file: same series, same times
    second = write_lines(tmp_path / "b.jsonl", [metrics_line(m) for m in range(4)])
    s = ingest_paths(store, [second], workers=workers)
    assert (s.points_stored, s.point_duplicates) == (1, 3)
    assert rows(store, "SELECT count(*) AS n, count(DISTINCT series_id) AS s FROM metrics") == [{"n": 4, "s": 1}]


def test_a_secret_looking_attribute_in_a_metrics_file_is_redacted(store, tmp_path):
    line = gauge_json([(0, 1.0)], resource={"service.name": "db", "db.url": "postgres://app:hunter2@db:5432/x"})
    line["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"][0]["attributes"] = [
        kv("password", "password=hunter2")]
    s = ingest_paths(store, [write_lines(tmp_path / "m.jsonl", [orjson.dumps(line)])])
    assert s.points_stored == 1 and s.redactions == 2
    (row,) = rows(store, "SELECT attributes, resource_attributes, series_id FROM metrics")
    assert "hunter2" not in row["attributes"] + row["resource_attributes"]
    assert "[REDACTED:" in row["attributes"] and "[REDACTED:" in row["resource_attributes"]


def test_the_inbox_tailer_takes_metrics_lines_and_afterfix_ingest_then_adds_nothing(store, tmp_path):
    inbox = tmp_path / "inbox"
    f = write_lines(inbox / "metrics.jsonl", [metrics_line(m) for m in range(5)] + [otlp_line(7, 2)])
    ingester = Ingester(store, interval=0.05)
    ingester.start()
    tailer = InboxTailer(inbox, ingester, store, poll_interval=0.05)
    try:
        assert tailer.poll() == f.stat().st_size
        assert ingester.flush(30)
        assert (tailer.stats().points, tailer.stats().spans) == (5, 2)
    finally:
        tailer.stop()
        ingester.stop()
    assert ingester.stats().points_stored == 5
    s = ingest_paths(store, [inbox])
    assert (s.unchanged, s.points_stored, s.bytes_read) == (1, 0, 0)


def test_spool_records_carry_metric_points_and_older_records_still_read(tmp_path):
    decoded = otlp_metrics.decode_json_body(orjson.dumps(gauge_json([(0, 1.0), (60, 2.0)])))
    batch = Batch.of(decoded)
    path = tmp_path / "seg"
    old = Batch(batch.spans, batch.events, batch.quarantine)  # no points: written as three parts
    path.write_bytes(spool.encode_record(batch) + spool.encode_record(old))
    (_, got), (_, got_old) = spool.read_records(path)
    assert got.metrics.equals(batch.metrics) and got.num_points == 2
    assert got_old.num_points == 0 and got_old.metrics.schema.equals(batch.metrics.schema)


_WRITER = """
import sys
import pyarrow as pa
from afterfix import Store
table = pa.ipc.open_file(sys.argv[2]).read_all()
r = Store(sys.argv[1]).append(metrics=table)
print(r.metrics_new)
"""


def test_processes_writing_the_same_points_store_them_once(tmp_path):
    store = Store(tmp_path / "store")
    store.create()
    table = otlp_metrics.decode_json_body(orjson.dumps(gauge_json([(m * 60, m) for m in range(50)]))).metrics
    path = tmp_path / "points.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(store.root), str(path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]  # fmt: skip
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    assert sorted(int(o) for o, _ in outs) == [0, 0, 50]
    assert rows(store, "SELECT count(*) AS n FROM metrics") == [{"n": 50}]
    store.close()


def test_a_store_made_before_metrics_gets_the_table(tmp_path):
    store = Store(tmp_path / "old")
    store.create()
    store.query("DROP TABLE metrics", write=True)
    store.close()
    fresh = Store(tmp_path / "old")
    fresh.create()
    assert fresh.append(metrics=otlp_metrics.decode_json_body(orjson.dumps(gauge_json([(0, 1.0)]))).metrics).metrics_new == 1
    fresh.close()
