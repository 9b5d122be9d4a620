"""Benchmark: `afterfix guard` keeping 1,000 active analyses at a 10 s interval, target ≤ 5 % of one core.

A new store holds `--analyses` applied agent actions (Deployments `w0000`, `w0001`, ... in
namespace bench, recorded through afterfix.sdk and ingested), started within the last minute at
random offsets, each with its own analysis: latency p95 under 300 ms, every 10 s, count 1000 (so
none ends during the run), read from the store's metric history. `afterfix guard --metrics store
--interval-floor 10` runs in its own process, as in production, on the real clock (no simulated
time). The benchmark's process plays the receiver: every 10 s it appends one fresh latency point
per workload to the store (that CPU is the receiver's, not counted). After `--warmup` seconds
(every analysis started and measured once; longer if the guard has not started every analysis by
then), the guard's own CPU time (user + system, from /proc/PID/stat) is read at the start and the
end of `--minutes` of wall time: the figure is that CPU time over the wall time. The measurements the guard wrote in that window are counted against
the one per analysis per 10 s it should have taken. SIGTERM then stops it; it must exit 0.

    .venv/bin/python benchmarks/guard.py [--analyses 1000] [--minutes 3] [--warmup 40] [--interval 10] [--keep DIR]

`--interval` (default 10 s, the guard's own floor) sets the analyses' interval and the guard's
`--interval-floor` together: a smoke run uses a shorter one to cross several intervals in seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from otlp_http import machine  # noqa: E402

TARGET_PCT = 5.0
INTERVAL_S = 10
WARMUP_GRACE_S = 120  # how much longer than --warmup the window waits for every analysis to start
METRIC = "afterfix.workload.latency_p95_ms"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def naive(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc).replace(tzinfo=None)


def analysis(interval_s: int = INTERVAL_S) -> dict:
    return {"name": "latency-p95", "interval": f"{interval_s}s", "count": 1000, "successCondition": "result < 300",
            "failureCondition": "result >= 300", "failureLimit": 3,
            "provider": {"afterfix": {"metric": METRIC, "labels": {"k8s.namespace.name": "{{namespace}}",
                                                                  "k8s.deployment.name": "{{name}}"}}}}


def record_actions(store, folder: Path, n: int, interval_s: int = INTERVAL_S) -> float:
    """`n` applied scale actions spread over the last minute, each with its analysis; seconds taken."""
    from afterfix import sdk
    from afterfix.ingest.files import ingest_paths

    t0 = time.perf_counter()
    path = folder / "actions.jsonl"
    provider = sdk.setup("sre-agent", file=path, batch_file=True)
    now = time.time()
    rng = random.Random(7)
    at = iter(sorted(now - 60 + 60 * rng.random() for _ in range(2 * n + 2)))
    rec = sdk.Recorder(provider, agent_name="sre-agent", clock=lambda: next(at))
    with rec.run(incident_id="inc-bench"):
        for i in range(n):
            name = f"w{i:04d}"
            target = sdk.Target(f"uid-{name}", "Deployment", "apps/v1", "bench", name)
            with rec.action("scale", target, patch={"spec": {"replicas": 3}}, analysis=analysis(interval_s)) as act:
                act.before({"spec.replicas": 2}, "1")
                act.after({"spec.replicas": 3}, "2")
    provider.shutdown()
    summary = ingest_paths(store, [path])
    if summary.refused:
        raise SystemExit(f"refused while recording the actions: {summary.refused[:3]}")
    return time.perf_counter() - t0


def feed(store, n: int, at: float) -> None:
    """One latency point per workload at `at`, as the receiver would store them."""
    import pyarrow as pa

    from afterfix import schema

    rows = []
    for i in range(n):
        name = f"w{i:04d}"
        resource = {"k8s.namespace.name": "bench", "k8s.deployment.name": name, "service.name": name}
        series = hashlib.blake2b(json.dumps([METRIC, resource], sort_keys=True).encode(), digest_size=16).hexdigest()
        rows.append({"name": METRIC, "kind": "gauge", "unit": "ms", "time": naive(at), "value": 120.0 + i % 50,
                     "service_name": name, "namespace": "bench", "workload": name, "series_id": series,
                     "attributes": "{}", "resource_attributes": json.dumps(resource), "source": "otlp-http",
                     "ingested_at": naive(at)})
    store.append(metrics=pa.Table.from_pylist(rows, schema=schema.METRIC_SCHEMA))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15 of stat)


def count(store, sql: str, params=None) -> int:
    return int(store.query(sql, params).iloc[0, 0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--analyses", type=int, default=1000)
    ap.add_argument("--minutes", type=float, default=3.0, help="wall time the guard's CPU is measured over")
    ap.add_argument("--warmup", type=float, default=40.0,
                    help="seconds before the window starts (at least: it waits for every analysis to start)")
    ap.add_argument("--interval", type=int, default=INTERVAL_S,
                    help="seconds between an analysis's measurements, also the guard's --interval-floor")
    ap.add_argument("--keep", type=Path, default=None, help="keep the store in this folder")
    args = ap.parse_args()
    interval = args.interval

    from afterfix.nightshift.apiserver import write_kubeconfig
    from afterfix.store import Store

    folder = args.keep or Path(tempfile.mkdtemp(prefix="afterfix-bench-guard-"))
    folder.mkdir(parents=True, exist_ok=True)
    store = Store(folder / "store")
    store.create()
    print(machine())
    took = record_actions(store, folder, args.analyses, interval)
    print(f"store: {args.analyses:,} applied actions with their analyses ({interval} s interval, count 1000), "
          f"recorded and ingested in {took:.1f} s")
    # No rollback happens here: the kubeconfig only has to load (nothing listens there).
    kubeconfig = write_kubeconfig(folder / "kubeconfig", "http://127.0.0.1:9")
    log = open(folder / "guard.log", "w")
    feed(store, args.analyses, time.time())
    proc = subprocess.Popen([sys.executable, "-m", "afterfix", "guard", "--store", str(store.root), "--metrics", "store",
                             "--kubeconfig", str(kubeconfig), "--interval-floor", str(interval)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        fed_at = time.time()
        start = time.monotonic()
        window, checked = None, 0.0
        end_at = float("inf")  # until the window opens
        while time.monotonic() < end_at and proc.poll() is None:
            if time.time() - fed_at >= interval:
                fed_at = time.time()
                feed(store, args.analyses, fed_at)
            waited = time.monotonic() - start
            if window is None and waited >= args.warmup and time.monotonic() - checked >= 1.0:
                # The window opens once every analysis has started: on a busy machine the guard's
                # own start can take longer than the warm-up asked for.
                checked = time.monotonic()
                started = count(store, "SELECT count(*) FROM analyses WHERE event = 'started'")
                if started >= args.analyses:
                    window = (time.monotonic(), cpu_seconds(proc.pid), naive(time.time()))
                    end_at = window[0] + 60 * args.minutes
                elif waited >= args.warmup + WARMUP_GRACE_S:
                    raise SystemExit(f"after {waited:.0f} s the guard has started {started:,} of "
                                     f"{args.analyses:,} analyses; raise --warmup (log: {folder / 'guard.log'})")
            time.sleep(0.2)
        if proc.poll() is not None:
            raise SystemExit(f"the guard exited with {proc.returncode}: {(folder / 'guard.log').read_text()[-2000:]}")
        wall = time.monotonic() - window[0]
        cpu = cpu_seconds(proc.pid) - window[1]
        window_end = naive(time.time())
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    taken = count(store, "SELECT count(*) FROM analyses WHERE event = 'measurement' AND time > ? AND time <= ?",
                  [window[2], window_end])
    errors = count(store, "SELECT count(*) FROM analyses WHERE event = 'measurement' AND phase <> 'Successful'")
    ended = count(store, "SELECT count(*) FROM analyses WHERE event = 'outcome'")
    stopped = count(store, "SELECT count(*) FROM analyses WHERE event = 'stopped'")
    expected = args.analyses * wall / interval
    pct = 100.0 * cpu / wall
    print(f"window: {wall:.0f} s of wall time after {window[0] - start:.0f} s of warm-up, real clock")
    print(f"measurements: {taken:,} in the window, {taken / expected:.0%} of one per analysis per {interval} s "
          f"({expected:,.0f}); {errors:,} not Successful, {ended:,} analyses ended")
    print(f"(guard) {args.analyses:,} active analyses at a {interval} s interval: {pct:.2f} % of one core "
          f"({cpu:.2f} s CPU over {wall:.0f} s)  (target <= {TARGET_PCT:g} %)")
    print(f"SIGTERM: exit {code}, stop recorded on {stopped:,} analyses in progress")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    if code != 0 or errors or ended:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
