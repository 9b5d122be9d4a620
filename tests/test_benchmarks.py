"""The benchmark scripts still run: each at a tiny size, as a subprocess, printing its figure lines.

Timings are never checked here (they depend on the machine); what is checked is that every script
finishes, stores every span it sent (it exits non-zero otherwise), and prints the figures and
targets benchmarks/README.md quotes.

The scripts that work on the demo night share one, played by the first of them (`--night`,
benchmarks/demo_night.py), and findings.py and briefing.py share one big night built from it
(`--keep`), as a person running them one after the other would; each script still runs from its
command line to its last figure.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))
import teamstore  # noqa: E402  (the team store's services: are they missing, and may their tests be skipped?)

NUM = r"[\d,.]+"


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict[str, str]:
    """Folders the scripts share: the demo night ({night}) and the big night made from it ({big})."""
    root = tmp_path_factory.mktemp("bench")
    return {"night": str(root / "demo-night"), "big": str(root / "big-night")}


@pytest.mark.parametrize(
    ("script", "args", "figures"),
    [
        ("file_ingest.py", ["--spans", "2000"], [
            rf"^input: 2,000 spans",
            rf"^afterfix ingest -> queryable : +{NUM} spans/s",
            r"target >= 150,000 spans/s",
            rf"^afterfix CPU +: +{NUM} us/span \(main process {NUM}, worker processes {NUM}\)",
        ]),
        ("file_ingest.py", ["--spans", "2000", "--no-native"], [
            r"^decoding path +: pure Python",
            rf"^afterfix ingest -> queryable : +{NUM} spans/s",
        ]),
        pytest.param("team_store.py", ["--quick"], [
            r"^services: PostgreSQL on 127\.0\.0\.1:\d+, moto S3 on 127\.0\.0\.1:\d+",
            r"^  4 ingester\(s\): 8,000 spans in .*; stored exactly once: yes$",
            r"^  1 ingester on a local store \(the same file\): .*; stored exactly once: yes$",
            rf"^  N=1: +{NUM} spans/s total, +{NUM} per process",
            rf"^  N=2: +{NUM} spans/s total, +{NUM} per process",
            rf"^  N=4: +{NUM} spans/s total, +{NUM} per process",
            rf"^  SQLite \+ files , 2 writers: append p50 +{NUM} ms, p95 +{NUM}, max +{NUM} .*decision p50 {NUM} ms",
            rf"^  PostgreSQL \+ S3, 2 writers: append p50 +{NUM} ms, p95 +{NUM}, max +{NUM} .*decision p50 {NUM} ms",
        ], marks=pytest.mark.skipif(teamstore.skip_reason() is not None, reason=str(teamstore.skip_reason()))),
        ("receiver_sdk.py", ["--spans", "2000", "--senders", "2"], [
            r"^2,000 spans from 2 sender process\(es\) \(created before the clock, then exported by OTLPSpanExporter",
            rf"^  sender 0: 1,000 spans created before the clock, all exported after {NUM} s",
            rf"^first span -> all queryable  : +{NUM} spans/s \({NUM} s, 2,000 spans\) +\(target >= 20,000 spans/s\)",
            r"^2,000 spans from 2 sender process\(es\) \(created meanwhile: OpenTelemetry SDK BatchSpanProcessor",
            rf"^  sender 0: created 1,000 spans at {NUM} spans/s",
            rf"^  sender 1: created 1,000 spans at {NUM} spans/s",
            rf"^acknowledged by the receiver : +{NUM} spans/s",
            rf"^first span -> all queryable  : +{NUM} spans/s \({NUM} s, 2,000 spans\)$",
            rf"^receiver CPU +: +{NUM} us/span, i.e. {NUM} spans/s per core",
            rf"^\(b\) fed by the SDK's exporter \(spans created first\): +{NUM} spans/s +\(target >= 20,000 spans/s\)",
            rf"^    with the senders creating the spans meanwhile : +{NUM} spans/s",
        ]),
        ("receiver_sdk.py", ["--spans", "2000", "--null-sink", "--created-first"], [
            r"^2,000 spans from 2 sender process\(es\) \(created before the clock.* to a null sink that stores nothing",
            rf"^  sender 1: 1,000 spans created before the clock, all exported after {NUM} s",
            rf"^acknowledged by the null sink: +{NUM} spans/s \({NUM} s\): the senders' ceiling here",
        ]),
        ("streaming.py", ["--rate", "1000", "--seconds", "1", "--baseline", "0.5"], [
            r"^kernel with %load_ext afterfix \(receiver on port \d+\); streaming 1,000 spans",
            rf"^sent +: 1,000 spans in {NUM} s",
            rf"^write->queryable : p50 {NUM} s, p95 {NUM} s, p99 {NUM} s over 10 requests .*\(target p95 <= 1 s\)",
            rf"^trivial cell +: before p50 {NUM} ms, p95 {NUM} ms \(\d+ cells\); during p50 {NUM} ms",
            r"^extra cell delay : p50 [+-][\d.]+ ms, p95 [+-][\d.]+ ms +\(target <= 20 ms\)",
        ]),
        ("memory.py", ["--spans", "2000", "--progress", "1"], [
            r"^sending 2,000 spans in 4 requests of 500",
            r"^spans sent +: +2,000 \(",
            rf"^spans stored +: +2,000 in {NUM} s",
            rf"^peak RSS +: +{NUM} MB +\(target <= 400 MB",
        ]),
        ("tree.py", ["--spans", "2000", "--batch", "1000", "--repeat", "1"], [
            r"^store: 2,303 spans, 800 events, 2 span files$",
            r"^target run: 303 spans, 50 decisions, 503 tree nodes$",
            rf"^run_tree cold \(new Store\) : median {NUM} ms of {NUM} \(target ≤ 200 ms: (met|MISSED)\)$",
            rf"^run_tree new process +: median {NUM} ms of {NUM} \(target ≤ 200 ms: (met|MISSED)\)$",
            rf"^run_tree warm \(same Store\): median {NUM} ms of {NUM} \(target ≤ 200 ms: (met|MISSED)\)$",
            rf"^\(tree\) decision tree from a 2,303-span store: {NUM} ms cold, {NUM} ms in a new process, {NUM} ms warm",
        ]),
        ("replay.py", ["--quick", "--night", "{night}"], [
            r"^replay: slowest median [\d.]+ ms over 3 decisions \(target ≤ 50 ms\): (met|MISSED)$",
        ]),
        ("gen_tests.py", ["--quick", "--night", "{night}"], [
            r"^suite: 3 incidents, 7 files; pytest: \d+ passed",
            rf"^gen-tests: {NUM} s for 3 incidents \(target ≤ 10 s\): (met|MISSED)$",
            rf"^suite run: {NUM} s under pytest \(target ≤ 60 s\): (met|MISSED)$",
        ]),
        ("run_view.py", ["--sizes", "200", "--repeat", "1"], [
            rf"^run view, 200-step run \(200 steps, 20 decisions\): first open {NUM} s, median {NUM} s of 1$",
        ]),
        ("plan.py", ["--repeat", "1", "--night", "{night}"], [
            rf"^plan: slowest median {NUM} ms over \d+ actions, first plan of the process {NUM} ms \(target ≤ 1000 ms\): (met|MISSED)$",
        ]),
        # a 2 s interval: the window crosses three intervals in 6 s of wall time
        ("guard.py", ["--analyses", "20", "--interval", "2", "--minutes", "0.1", "--warmup", "5"], [
            r"^store: 20 applied actions with their analyses \(2 s interval, count 1000\)",
            rf"^measurements: {NUM} in the window, \d+% of one per analysis per 2 s .*; 0 not Successful, 0 analyses ended",
            rf"^\(guard\) 20 active analyses at a 2 s interval: {NUM} % of one core .*\(target <= 5 %\)",
            r"^SIGTERM: exit 0, stop recorded on 20 analyses in progress",
        ]),
        ("findings.py", ["--spans", "15000", "--copies", "2", "--repeat", "1", "--keep", "{big}", "--night", "{night}"], [
            r"^night: [\d,]+ spans, \d+ incidents, [\d,]+ metric points; window 2026-11-26 21:00 to ",
            r"^demo night's findings  : bundled_rollback \d+, duplicate_investigation \d+, first_bad_step \d+, masked_issue \d+, "
            r"side_effect \d+, unverified_action \d+ \(",
            r"^every kind the demo night yields: present, 2 times as often each$",
            rf"^one run, kind by kind .*: masked_issue {NUM}, bundled_rollback {NUM}, first_bad_step {NUM}, ",
            rf"^find\(\): median {NUM} s of {NUM} \(target ≤ 5 s: (met|MISSED)\)$",
        ]),
        ("briefing.py", ["--spans", "15000", "--copies", "2", "--repeat", "1", "--keep", "{big}", "--night", "{night}"], [
            r"^night: [\d,]+ spans, \d+ incidents, [\d,]+ metric points; window 2026-11-26 21:00 to ",
            rf"^briefing: {NUM} MB of HTML; handoff: \S",
            rf"^time split \(medians\), s: papermill {NUM} \(kernel start and papermill's own {NUM}, cells {NUM}, "
            rf"of which open_briefing {NUM}\), nbconvert {NUM}, the rest {NUM}$",
            rf"^brief\(\): median {NUM} s of {NUM} \(target ≤ 20 s: (met|MISSED)\)$",
        ]),
    ],
)
def test_benchmark_runs(script, args, figures, shared):
    args = [a.format(**shared) for a in args]
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert re.search(r"^machine: \S+, \d+ cores, Python [\d.]+, duckdb [\d.]+", proc.stdout, re.M), proc.stdout
    for figure in figures:
        assert re.search(figure, proc.stdout, re.M), f"{script}: no line matching {figure!r} in:\n{proc.stdout}"


def test_request_pool_spans_are_distinct_across_cycles():
    """Reused pool slots get fresh trace ids and later times, so a long run stores every span."""
    import otlp_http

    from afterfix.ingest import otlp

    pool = otlp_http.RequestPool(100, pool_spans=200)
    assert len(pool) == 2
    decoded = [otlp.decode_protobuf(pool.body(k), source="bench") for k in range(5)]
    assert [d.spans.num_rows for d in decoded] == [100] * 5
    assert all(not d.refused for d in decoded)
    keys = {(t, s) for d in decoded for t, s in zip(d.spans.column("trace_id").to_pylist(), d.spans.column("span_id").to_pylist())}
    assert len(keys) == 500
    firsts = [min(d.spans.column("start_time").to_pylist()) for d in decoded]
    assert firsts == sorted(firsts) and len(set(firsts)) == 5
    assert [d.spans.column("trace_id")[0].as_py() for d in decoded] == [pool.first_trace_id(k) for k in range(5)]
