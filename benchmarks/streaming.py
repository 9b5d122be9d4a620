"""Benchmark (c): spans streaming into a notebook kernel: write-to-queryable latency, and cells meanwhile.

    .venv/bin/python benchmarks/streaming.py [--rate 5000] [--seconds 30]

A real kernel (jupyter_client) runs `%load_ext afterfix` on a temporary store with its receiver
on a free port (receiver, decoding and commits run in the kernel's capture process, `afterfix
serve --stdio`, a child of the kernel). A sender process posts pre-encoded OTLP protobuf
requests of 100 spans on a fixed schedule (`--rate` spans/s) and records when it sent each; a
poller process with its own store connection looks every 20 ms for which requests are
queryable. Meanwhile a trivial cell (`1+1`) is executed in the kernel again and again, and its
round trip is compared with the same cell before streaming started. Targets: write-to-queryable
p95 <= 1 s; extra latency of a trivial cell <= 20 ms. Exits non-zero if a request that was
acknowledged never becomes queryable.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import multiprocessing as mp
import queue
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
import kernels  # noqa: E402  (the tests' real-kernel driver)
import otlp_http  # noqa: E402

TARGET_P95_S = 1.0
TARGET_EXTRA_MS = 20.0
POLL_S = 0.02
PATH = "/v1/traces"


def send(port: int, rate: float, n_requests: int, batch: int, ready, go, finished, results) -> None:
    """Sender process: request k is posted at t0 + k * batch / rate; records (k, sent, acknowledged)."""
    pool = otlp_http.RequestPool(batch, pool_spans=min(n_requests * batch, 5_000))
    bodies = [pool.body(k) for k in range(n_requests)]  # encoded before the clock starts
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    ready.set()
    go.wait()
    t0 = time.time()
    log = []
    retries = 0
    for k, body in enumerate(bodies):
        delay = t0 + k * batch / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        sent = time.time()
        retries += otlp_http.post(conn, PATH, body)
        log.append((k, sent, time.time()))
    conn.close()
    finished.set()  # before the put: a process does not end until what it put is read
    results.put({"log": log, "retries": retries, "first_trace_ids": [pool.first_trace_id(k) for k in range(n_requests)]})


def poll(store_path: str, ready, expect, results, give_up_s: float = 30) -> None:
    """Poller process: the wall-clock time each trace id was first seen by a query of its own connection.

    Polls until the trace ids put on `expect` (once the sender is done) are all seen, or
    `give_up_s` after that.
    """
    from afterfix import Store

    store = Store(store_path)
    sql = "SELECT trace_id, min(start_time) AS t FROM spans WHERE start_time >= $lo GROUP BY trace_id"
    lo = dt.datetime(1970, 1, 1)
    seen: dict[str, float] = {}
    polls = 0
    wanted, deadline = None, None
    store.query(sql, {"lo": lo})  # attached before the clock starts
    ready.set()
    while True:
        t = time.time()
        rows = store.connection().execute(sql, {"lo": lo}).fetchall()
        now = time.time()
        polls += 1
        for trace_id, start in rows:
            if trace_id not in seen:
                seen[trace_id] = now
                # Requests are sent and committed in order: only the newest minutes of span time
                # can still hold unseen traces (each request covers a few seconds of span time).
                lo = max(lo, start - dt.timedelta(minutes=2))
        if wanted is None:
            try:
                wanted, deadline = set(expect.get_nowait()), now + give_up_s
            except queue.Empty:
                pass
        if wanted is not None and (wanted <= seen.keys() or now > deadline):
            break
        time.sleep(max(0.0, POLL_S - (time.time() - t)))
    store.close()
    results.put({"seen": seen, "polls": polls})


class Kernel(kernels.Kernel):
    """The tests' real-kernel driver, timing trivial cells."""

    def __init__(self, env: dict, cwd: Path):
        super().__init__(env, cwd, ready_timeout=120)

    def run(self, code: str, timeout: float = 120) -> str:
        return super().run(code, timeout, store_history=False)

    def round_trips(self, until, pause: float = 0.05) -> list[float]:
        """Execute `1+1` until `until()` is true; each cell's seconds from execute to idle."""
        times = []
        while not until():
            t = time.perf_counter()
            self.run("1+1")
            times.append(time.perf_counter() - t)
            time.sleep(pause)
        return times


def pct(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if q < 100 else max(values)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=5000, help="spans per second")
    ap.add_argument("--seconds", type=float, default=30, help="how long to stream")
    ap.add_argument("--batch", type=int, default=100, help="spans per request (a multiple of 50)")
    ap.add_argument("--baseline", type=float, default=None, help="seconds of trivial cells before streaming "
                    "(default: a third of --seconds, at least 3)")
    ap.add_argument("--interval", type=float, default=None,
                    help="Afterfix.interval, seconds between commits (default: the option's default)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    batch = max(50, args.batch // 50 * 50)
    n_requests = max(1, round(args.rate * args.seconds / batch))
    baseline_s = args.baseline if args.baseline is not None else max(3.0, args.seconds / 3)

    work = Path(tempfile.mkdtemp(prefix="afterfix-bench-c-"))
    ctx = mp.get_context("spawn")
    kernel = None
    procs = []
    try:
        store = work / "traces" / "store"
        store.parent.mkdir(parents=True)
        kernel = Kernel({"AFTERFIX_STORE": str(store), "AFTERFIX_PORT": "0",
                         "AFTERFIX_INBOX": str(work / "traces" / "inbox")}, work)
        if args.interval is not None:
            kernel.run(f"get_ipython().config.Afterfix.interval = {float(args.interval)!r}")
        kernel.run("%load_ext afterfix")
        port, interval = kernel.run("from afterfix.extension import session_for\n"
                                    "s = session_for(get_ipython())\n"
                                    "print(s.capture.status()['port'], s.config.interval)").split()
        port = int(port)

        sends, expect, seen_q = ctx.Queue(), ctx.Queue(), ctx.Queue()
        s_ready, p_ready, go, finished = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event()
        sender = ctx.Process(target=send, args=(port, args.rate, n_requests, batch, s_ready, go, finished, sends))
        poller = ctx.Process(target=poll, args=(str(store), p_ready, expect, seen_q))
        procs = [sender, poller]
        for p in procs:
            p.start()
        if not (s_ready.wait(300) and p_ready.wait(300)):
            raise RuntimeError("the sender or the poller did not start")

        print(otlp_http.machine(), flush=True)
        print(f"kernel with %load_ext afterfix (receiver on port {port}); "
              f"streaming {n_requests * batch:,} spans at {args.rate:,.0f} spans/s for {args.seconds:g} s "
              f"in requests of {batch}; commits every {interval} s; poller every {POLL_S * 1000:.0f} ms",
              flush=True)
        end = time.monotonic() + baseline_s
        before = kernel.round_trips(lambda: time.monotonic() > end)
        go.set()
        during = kernel.round_trips(lambda: finished.is_set() or not sender.is_alive())
        sent = sends.get(timeout=60)
        sender.join(10)

        # Every request is acknowledged; the poller goes on until it has seen them all.
        expect.put(sent["first_trace_ids"])
        polled = seen_q.get(timeout=120)
        poller.join(10)
        seen = polled["seen"]
        missing = [k for k, tid in enumerate(sent["first_trace_ids"]) if tid not in seen]
        latencies = [seen[sent["first_trace_ids"][k]] - s for k, s, _ in sent["log"] if sent["first_trace_ids"][k] in seen]
        acks = [a - s for _, s, a in sent["log"]]

        from afterfix import Store

        final = Store(store)
        n_stored = int(final.query("SELECT count(*) AS n FROM spans")["n"][0])
        final.close()

        took = sent["log"][-1][1] - sent["log"][0][1] if len(sent["log"]) > 1 else 0
        print(f"sent             : {len(sent['log']) * batch:,} spans in {took:.1f} s "
              f"({(len(sent['log']) - 1) * batch / max(took, 1e-9):,.0f} spans/s), {sent['retries']} retries; "
              f"acknowledged p50 {pct(acks, 50) * 1000:.0f} ms, p95 {pct(acks, 95) * 1000:.0f} ms")
        if latencies:
            print(f"write->queryable : p50 {pct(latencies, 50):.3f} s, p95 {pct(latencies, 95):.3f} s, "
                  f"p99 {pct(latencies, 99):.3f} s over {len(latencies)} requests ({polled['polls']} polls)   "
                  f"(target p95 <= {TARGET_P95_S:g} s)")
        b50, b95 = pct(before, 50) * 1000, pct(before, 95) * 1000
        d50, d95 = pct(during, 50) * 1000, pct(during, 95) * 1000
        print(f"trivial cell     : before p50 {b50:.1f} ms, p95 {b95:.1f} ms ({len(before)} cells); "
              f"during p50 {d50:.1f} ms, p95 {d95:.1f} ms ({len(during)} cells)")
        print(f"extra cell delay : p50 {d50 - b50:+.1f} ms, p95 {d95 - b95:+.1f} ms   (target <= {TARGET_EXTRA_MS:g} ms)")
        expected = n_requests * batch
        if missing or n_stored != expected:
            print(f"LOST: {len(missing)} of {n_requests} acknowledged requests never became queryable; "
                  f"the store holds {n_stored:,} of {expected:,} spans", file=sys.stderr)
            return 1
        return 0
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
        if kernel is not None:
            kernel.shutdown()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
