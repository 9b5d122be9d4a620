"""Team store benchmark: concurrent ingesters on PostgreSQL + S3, and commit latency beside a local store.

    .venv/bin/python benchmarks/team_store.py [--spans 200000] [--repeat 60] [--batch 200] [--json PATH] [--quick]

Starts its own services (tests/teamstore.py: Debian's PostgreSQL on loopback, moto's S3 server),
then measures, in one run:

1. Ingest throughput with 1, 2 and 4 `afterfix ingest --store CONF FILE` processes at once, each
   on its own OTLP/JSON file of `--spans` agent spans (synth.py's runs) and its own working folder
   (`AFTERFIX_STORE_LOCAL`), as ingesters on different hosts sharing one team store. Each N gets a
   fresh team store; at the end it must hold exactly the spans of its files, each once (exit 1
   otherwise); one more ingester puts the first file into a local store, for comparison.
   `afterfix ingest` rather than `afterfix serve`: files put the store's concurrent
   commits (the PostgreSQL write lock, Parquet uploads to S3) in the path and nothing else, where
   the receiver's HTTP decoding would take most of the two cores first. Each ingester decodes in
   its own process (`--workers 0`): N = 1 and 2 fit this machine's 2 cores, N = 4 shares them.
2. Commit latency of `Store.append` with `--batch`-span batches (as a streaming receiver commits)
   on the team store and on a local store (SQLite catalog, local files), the same batches, with one
   writer process and with two at once, each holding the catalog open as the receiver does; then `append_ledger` of one approval row, as an agent's
   request (plain append) and as a person's decision (conditional on none yet, under the lock).

Exit status: 0 (figures printed), 1 when a store lost or doubled a span, 2 when PostgreSQL or
moto is not installed here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "tests"))
import synth  # noqa: E402
from otlp_http import machine  # noqa: E402

AFTERFIX = [str(Path(sys.executable).with_name("afterfix"))]
SUMMARY = re.compile(r"([\d,]+) spans stored, ([\d,]+) duplicates skipped.* ([\d,.]+) spans/s \(([\d.]+) s\)")


# -- 1. concurrent ingesters -----------------------------------------------------------------------

def write_host_file(path: Path, n_spans: int, host: int) -> list[tuple[str, str]]:
    """One host's OTLP/JSON file of synth agent runs (its own seed and run numbers); the (trace_id, span_id) keys."""
    rng = random.Random(1000 + host)
    resource = {"attributes": [synth._attr("service.name", "sre-agent"), synth._attr("host.name", f"host-{host}")]}
    keys: list[tuple[str, str]] = []
    made, run = 0, host * 1_000_000
    with open(path, "wb") as f:
        while made < n_spans:
            spans = synth.spans_of_run(rng, run, min(50, n_spans - made))
            run += 1
            made += len(spans)
            keys += [(s["traceId"], s["spanId"]) for s in spans]
            f.write(orjson.dumps({"resourceSpans": [{"resource": resource, "scopeSpans": [
                {"scope": {"name": "afterfix.bench"}, "spans": spans}]}]}) + b"\n")
    return keys


def run_ingesters(conf: Path, files: list[Path], work: Path, batch_spans: int) -> dict:
    """Start one `afterfix ingest` per file at once; wall time, CPU and the ingest's own figures per process."""
    procs, done = [], {}

    def reap(i: int, proc: subprocess.Popen) -> None:
        _, status, usage = os.wait4(proc.pid, 0)
        done[i] = (time.perf_counter(), os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime)

    t0 = time.perf_counter()
    for i, path in enumerate(files):
        host = work / f"host-{i}"
        host.mkdir(parents=True)
        env = {**os.environ, "AFTERFIX_STORE_LOCAL": str(host)}
        out = open(host / "out.txt", "w")
        procs.append(subprocess.Popen([*AFTERFIX, "ingest", "--store", str(conf), "--workers", "0",
                                       "--batch-spans", str(batch_spans), "--no-progress", str(path)],
                                      stdout=out, stderr=subprocess.STDOUT, env=env, cwd=host))
        out.close()
    reapers = [threading.Thread(target=reap, args=(i, p)) for i, p in enumerate(procs)]
    for t in reapers:
        t.start()
    for t in reapers:
        t.join()
    per = []
    for i in range(len(files)):
        end, code, cpu = done[i]
        text = (work / f"host-{i}" / "out.txt").read_text()
        m = SUMMARY.search(text)
        if code != 0 or m is None:
            raise SystemExit(f"afterfix ingest of {files[i].name} exited {code}:\n{text[-2000:]}")
        stored = int(m.group(1).replace(",", ""))
        per.append({"spans": stored, "seconds": end - t0, "ingest_seconds": float(m.group(4)), "cpu_seconds": cpu})
    wall = max(p["seconds"] for p in per)
    total = sum(p["spans"] for p in per)
    return {"processes": len(files), "spans": total, "seconds": wall, "spans_per_s": total / wall,
            "per_process": per}


def check_exactly(store, keys: list[tuple[str, str]]) -> str | None:
    """None when the store holds each of `keys` once and nothing else; else what is wrong."""
    import pyarrow as pa

    expected = pa.table({"trace_id": [k[0] for k in keys], "span_id": [k[1] for k in keys]})
    con = store.connection(read_only=True)
    con.register("bench_expected", expected)
    try:
        rows, distinct = con.execute("SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans").fetchone()
        missing = con.execute("SELECT count(*) FROM bench_expected e ANTI JOIN spans s USING (trace_id, span_id)").fetchone()[0]
        extra = con.execute("SELECT count(*) FROM spans s ANTI JOIN bench_expected e USING (trace_id, span_id)").fetchone()[0]
    finally:
        con.unregister("bench_expected")
    if rows == distinct == len(keys) and not missing and not extra:
        return None
    return (f"{store.where}: {rows:,} span rows, {distinct:,} distinct, {len(keys):,} sent: "
            f"{missing:,} missing, {extra:,} not sent, {rows - distinct:,} doubled")


# -- 2. commit latency -----------------------------------------------------------------------------

def _writer(spec: str, w: int, commits: int, batch: int, barrier, out) -> None:
    """One writer process: a warm-up append, then `commits` timed appends, then timed approval rows."""
    try:
        import otlp_http

        from afterfix import Store
        from afterfix.ingest import otlp
        from afterfix.review.approvals import _DECIDED

        pool = otlp_http.RequestPool(batch, pool_spans=batch * 5)
        first = 1_000_000 + w * (commits + 1)  # the same requests, so the same spans, on every store
        batches = [otlp.decode_protobuf(pool.body(k), source=f"bench-writer-{w}") for k in range(first, first + commits + 1)]
        store = Store(spec)
        hold = store.hold_catalog()  # as a streaming receiver does (CatalogHold; nothing on a team store)
        t = time.perf_counter()
        store.append(spans=batches[0].spans, events=batches[0].events)  # opens the connection: timed apart
        first_ms = (time.perf_counter() - t) * 1000
        barrier.wait(300)
        appends = []
        for b in batches[1:]:
            t = time.perf_counter()
            store.append(spans=b.spans, events=b.events)
            appends.append((time.perf_counter() - t) * 1000)
        barrier.wait(300)
        requested, decided = [], []
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        for i in range(commits):
            rid = f"apr-bench-{w}-{i}"
            row = {"request_id": rid, "time": now, "event": "requested", "who": "sre-agent", "agent_name": "sre-agent",
                   "action_id": f"a-{w}-{i}", "verb": "patch", "target": "HorizontalPodAutoscaler/shop/checkout",
                   "summary": "raise maxReplicas 3 -> 8", "request": '{"spec":{"maxReplicas":8}}',
                   "expires_at": now + dt.timedelta(minutes=15)}
            t = time.perf_counter()
            store.append_ledger("approvals", [row])
            requested.append((time.perf_counter() - t) * 1000)
            row = {**row, "event": "approved", "who": "oncall", "comment": "load, not a bad release",
                   "time": now + dt.timedelta(seconds=1), "request": None, "expires_at": None}
            t = time.perf_counter()
            if store.append_ledger("approvals", [row], unless=_DECIDED, params=[rid]) != 1:
                raise RuntimeError(f"{rid}: decision not written")
            decided.append((time.perf_counter() - t) * 1000)
        hold.release()
        store.close()
        out.put({"writer": w, "first_ms": first_ms, "append_ms": appends, "requested_ms": requested,
                 "decided_ms": decided, "spans": sum(b.spans.num_rows for b in batches)})
    except BaseException as e:
        barrier.abort()
        out.put({"writer": w, "error": f"{type(e).__name__}: {e}"})
        raise


def run_writers(spec: str, writers: int, commits: int, batch: int) -> dict:
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(writers), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(spec, w, commits, batch, barrier, out)) for w in range(writers)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    results = [out.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join(60)
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise SystemExit(f"writer failed on {spec}: {'; '.join(errors)}")
    return {"writers": writers, "seconds": time.perf_counter() - t0,
            "first_ms": [r["first_ms"] for r in results],
            "append_ms": [x for r in results for x in r["append_ms"]],
            "requested_ms": [x for r in results for x in r["requested_ms"]],
            "decided_ms": [x for r in results for x in r["decided_ms"]],
            "spans": sum(r["spans"] for r in results)}


def pct(values: list[float]) -> dict:
    import numpy as np

    a = np.asarray(values)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)), "max": float(a.max()), "n": len(a)}


# -- the run ---------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", type=int, default=None, help="spans per ingesting process (default: 200000)")
    ap.add_argument("--batch-spans", type=int, default=None,
                    help="the ingesters' spans per commit (afterfix ingest --batch-spans; default: 50000)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="timed appends, and approval requests and decisions, per writer (default: 60)")
    ap.add_argument("--batch", type=int, default=200, help="spans per timed append (default: 200)")
    ap.add_argument("--processes", default="1,2,4", help="ingesting processes at once, one run each (default: 1,2,4)")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (every path still runs): for the smoke test")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (the services are stopped)")
    args = ap.parse_args()
    sizes = (2_000, 1_000, 5) if args.quick else (200_000, 50_000, 60)  # what is not given on the command line
    args.spans, args.batch_spans, args.repeat = (given if given is not None else size for given, size in
                                                 zip((args.spans, args.batch_spans, args.repeat), sizes))
    counts = [int(n) for n in args.processes.split(",")]

    import teamstore

    why = teamstore.missing()
    if why:
        print(f"team store benchmark not run: {why}")
        return 2
    from afterfix import Store

    print(machine())
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"uptime: {uptime}")
    started = dt.datetime.now(dt.timezone.utc)
    # PostgreSQL runs as its own user, which must reach its data folder: not under a private parent.
    folder = Path(tempfile.mkdtemp(prefix="afterfix-bench-team-", dir="/tmp"))
    work = folder / "bench"
    services = teamstore.TeamServices(folder)
    failures: list[str] = []
    report: dict = {"machine": machine(), "uptime": uptime, "started": f"{started:%Y-%m-%d %H:%M} UTC",
                    "spans_per_process": args.spans, "ingest_batch_spans": args.batch_spans,
                    "append_batch_spans": args.batch, "repeat": args.repeat}
    try:
        t = time.perf_counter()
        services.start()
        os.environ.update(services.env())
        print(f"services: PostgreSQL on 127.0.0.1:{services.pg_port}, moto S3 on 127.0.0.1:{services.s3_port} "
              f"(started in {time.perf_counter() - t:.1f} s)")

        # 1. ingest curve
        work.mkdir(parents=True)
        t = time.perf_counter()
        files, keys = [], []
        for i in range(max(counts)):
            files.append(work / f"host-{i}.jsonl")
            keys.append(write_host_file(files[-1], args.spans, i))
        size_mb = sum(f.stat().st_size for f in files) / len(files) / 1e6
        print(f"inputs: {len(files)} OTLP/JSON files of {args.spans:,} spans ({size_mb:,.1f} MB each), "
              f"written in {time.perf_counter() - t:.1f} s")
        curve = []
        for n in counts:
            conf = services.new_store(f"ingest-{n}")
            store = Store(conf)
            store.create()  # made once, before the race: creating is not what is measured
            r = run_ingesters(conf, files[:n], work / f"ingest-{n}", args.batch_spans)
            wrong = check_exactly(store, [k for ks in keys[:n] for k in ks])
            store.close()
            r["stored_exactly"] = wrong is None
            if wrong:
                failures.append(wrong)
            curve.append(r)
            per = r["per_process"]
            print(f"  {n} ingester(s): {r['spans']:,} spans in {r['seconds']:.1f} s; per process "
                  + ", ".join(f"{p['spans'] / p['seconds']:,.0f} spans/s ({p['seconds']:.1f} s, ingest's own "
                              f"{p['ingest_seconds']:.1f} s, CPU {p['cpu_seconds'] / p['spans'] * 1e6:.1f} us/span)"
                              for p in per)
                  + f"; stored exactly once: {'yes' if wrong is None else 'NO: ' + wrong}")
        report["ingest"] = curve
        # The same first file into a local store (SQLite catalog, local files), for the cost of the team's.
        local = work / "ingest-local"
        store = Store(local / "store")
        store.create()
        r = run_ingesters(local / "store", files[:1], local, args.batch_spans)
        wrong = check_exactly(store, keys[0])
        store.close()
        if wrong:
            failures.append(wrong)
        p = r["per_process"][0]
        report["ingest_local"] = {**r, "stored_exactly": wrong is None}
        print(f"  1 ingester on a local store (the same file): {r['spans_per_s']:,.0f} spans/s ({p['seconds']:.1f} s, "
              f"ingest's own {p['ingest_seconds']:.1f} s, CPU {p['cpu_seconds'] / p['spans'] * 1e6:.1f} us/span); "
              f"stored exactly once: {'yes' if wrong is None else 'NO: ' + wrong}")
        top = max(r["spans_per_s"] for r in curve)
        print(f"ingest curve, team store (N afterfix ingest processes at once, {args.spans:,} spans each):")
        for r in curve:
            mean = sum(p["spans"] / p["seconds"] for p in r["per_process"]) / r["processes"]
            bar = "#" * max(1, round(40 * r["spans_per_s"] / top))
            print(f"  N={r['processes']}: {r['spans_per_s']:>9,.0f} spans/s total, {mean:>9,.0f} per process  {bar}")

        # 2. commit latency
        commits = {}
        print(f"commit latency: Store.append of {args.batch}-span batches, {args.repeat} per writer "
              f"(the first append of each writer, which opens the store, timed apart), then "
              f"{args.repeat} approval requests and decisions per writer:")
        for writers in (1, 2):
            for kind in ("local", "team"):
                spec = str(work / f"local-{writers}") if kind == "local" else str(services.new_store(f"commit-{writers}"))
                Store(spec).create()
                r = run_writers(spec, writers, args.repeat, args.batch)
                store = Store(spec)
                n = store.query("SELECT count(*) AS n, count(DISTINCT (trace_id, span_id)) AS d FROM spans")
                a = store.query("SELECT count(*) AS n FROM approvals")["n"][0]
                store.close()
                if not (n["n"][0] == n["d"][0] == r["spans"]) or a != 2 * writers * args.repeat:
                    failures.append(f"{kind} store, {writers} writer(s): {n['n'][0]:,} span rows "
                                    f"({n['d'][0]:,} distinct) of {r['spans']:,} appended, {a} approval rows "
                                    f"of {2 * writers * args.repeat}")
                stats = {"append": pct(r["append_ms"]), "requested": pct(r["requested_ms"]),
                         "decided": pct(r["decided_ms"]), "first_ms": r["first_ms"],
                         "appends_per_s": len(r["append_ms"]) / sum(r["append_ms"]) * 1000 * writers}
                commits[f"{kind}/{writers}"] = stats
                label = ("PostgreSQL + S3" if kind == "team" else "SQLite + files ") + f", {writers} writer{'s' if writers > 1 else ' '}"
                ap_, rq, dc = stats["append"], stats["requested"], stats["decided"]
                print(f"  {label}: append p50 {ap_['p50']:6.1f} ms, p95 {ap_['p95']:6.1f}, max {ap_['max']:6.1f} "
                      f"(first {', '.join(f'{x:.0f}' for x in r['first_ms'])} ms); approval request p50 "
                      f"{rq['p50']:.1f} ms, p95 {rq['p95']:.1f}; decision p50 {dc['p50']:.1f} ms, p95 {dc['p95']:.1f}")
        report["commit"] = commits
        uptime_end = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        report["uptime_end"] = uptime_end
        print(f"uptime at the end: {uptime_end}")
        t1, tl = commits["team/1"]["append"], commits["local/1"]["append"]
        points = ", ".join(f"N={r['processes']} {r['spans_per_s']:,.0f}" for r in curve)
        print(f"(team) ingest {points} spans/s; "
              f"append of {args.batch} spans p95 {t1['p95']:.1f} ms on PostgreSQL + S3 against {tl['p95']:.1f} ms local")
    finally:
        services.stop()
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        if args.keep:
            print(f"kept: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    if failures:
        for f in failures:
            print(f"LOST OR DOUBLED SPANS: {f}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
