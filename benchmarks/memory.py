"""Benchmark (d): peak memory of a capture process while it takes in a long stream of spans.

    .venv/bin/python benchmarks/memory.py [--spans 10000000] [--senders 2]

`afterfix serve` runs in its own process on a temporary store; a sender process posts
pre-encoded OTLP protobuf requests (500 spans each) over OTLP/HTTP as fast as the receiver
accepts them, waiting out 503/429 Retry-After. The RSS of the serve process and its children is
sampled every 0.2 s until it has stored everything and stopped; the sender's memory is not
counted. Target: peak RSS <= 400 MB. Exits non-zero if the store does not hold every span sent.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
import otlp_http  # noqa: E402

TARGET_MB = 400
PATH = "/v1/traces"


def send(host: str, port: int, n_requests: int, spans_per_request: int, threads: int, sent, retried, ready, go) -> None:
    """Sender process: `threads` connections post requests 0..n_requests-1 as fast as they are accepted."""
    pool = otlp_http.RequestPool(spans_per_request, pool_spans=min(n_requests * spans_per_request, 20_000))
    lock = threading.Lock()
    state = {"next": 0}
    ready.set()
    go.wait()

    def worker() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=120)
        while True:
            with lock:  # the pool restamps messages in place: one body at a time
                k = state["next"]
                if k >= n_requests:
                    break
                state["next"] += 1
                body = pool.body(k)
            tries = otlp_http.post(conn, PATH, body)
            with sent.get_lock():
                sent.value += pool.spans_per_request
            if tries:
                with retried.get_lock():
                    retried.value += tries
        conn.close()

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class Sampler(threading.Thread):
    """Samples the RSS of a process and its children every `every` s until it ends or `stop()`."""

    def __init__(self, proc: psutil.Process, every: float = 0.2):
        super().__init__(daemon=True)
        self.proc, self.every = proc, every
        self.peak = self.current = rss(proc)
        self.started = time.monotonic()
        self.peak_at = 0.0  # seconds after the start when the peak was sampled
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.every):
            try:
                if not self.proc.is_running():
                    return
                self.current = rss(self.proc)
            except psutil.NoSuchProcess:
                return
            if self.current > self.peak:
                self.peak, self.peak_at = self.current, time.monotonic() - self.started

    def stop(self) -> None:
        self._done.set()
        self.join()


def count(store) -> int:
    return int(store.query("SELECT count(*) AS n FROM spans")["n"][0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", type=int, default=10_000_000)
    ap.add_argument("--senders", type=int, default=2, help="concurrent connections of the sender process")
    ap.add_argument("--batch", type=int, default=500, help="spans per request (a multiple of 50)")
    ap.add_argument("--progress", type=float, default=10.0, help="seconds between progress lines")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    batch = max(50, min(args.batch, args.spans) // 50 * 50)
    n_requests = -(-args.spans // batch)
    expected = n_requests * batch

    work = Path(tempfile.mkdtemp(prefix="afterfix-bench-d-"))
    serve = None
    ctx = mp.get_context("spawn")
    try:
        serve = otlp_http.Serve(work / "store")
        proc = psutil.Process(serve.pid)
        base = rss(proc)
        sent, retried = ctx.Value("q", 0), ctx.Value("q", 0)
        ready, go = ctx.Event(), ctx.Event()
        sender = ctx.Process(target=send, args=(serve.host, serve.port, n_requests, batch, args.senders, sent, retried, ready, go))
        sender.start()
        ready.wait(300)
        print(otlp_http.machine(), flush=True)
        print(f"sending {expected:,} spans in {n_requests:,} requests of {batch} over {args.senders} connection(s) "
              f"to afterfix serve (pid {serve.pid}, RSS at start {base / 1e6:.0f} MB)", flush=True)

        from afterfix import Store

        reader = Store(work / "store")
        count(reader)  # attached before the clock starts
        sampler = Sampler(proc)
        t0 = time.monotonic()
        go.set()
        sampler.start()
        last_print = t0
        n_stored, last_change = 0, t0
        sender_done = False
        while True:
            time.sleep(0.5)
            now = time.monotonic()
            if not sender_done and not sender.is_alive():
                sender_done = True
                if sender.exitcode != 0:
                    raise RuntimeError(f"the sender failed (exit {sender.exitcode})")
            if not sender_done and now - last_print < args.progress:
                continue
            n = count(reader)
            if n != n_stored:
                n_stored, last_change = n, now
            if now - last_print >= args.progress:
                last_print = now
                print(f"  {now - t0:6.0f} s: sent {sent.value:>11,}  stored {n_stored:>11,}  "
                      f"RSS {sampler.current / 1e6:5.0f} MB (peak {sampler.peak / 1e6:.0f} MB)", flush=True)
            if sender_done and n_stored >= expected:
                break
            if sender_done and now - last_change > 120:
                break  # nothing new stored for two minutes: report what is missing
        took = time.monotonic() - t0
        reader.close()
        serve.stop()  # flushes what it holds; the sampler follows it to the end
        sampler.stop()
        peak = sampler.peak
        final = Store(work / "store")
        n_final = count(final)
        final.close()

        print(f"spans sent       : {sent.value:>12,} ({retried.value:,} retries after 503/429)")
        print(f"spans stored     : {n_final:>12,} in {took:.1f} s ({n_final / took:,.0f} spans/s)")
        when = "while stopping" if sampler.peak_at > took else "while streaming"
        print(f"peak RSS         : {peak / 1e6:>12,.0f} MB   (target <= {TARGET_MB} MB; at start {base / 1e6:.0f} MB; "
              f"{when}, {sampler.peak_at:.0f} s after the first span)")
        if n_final != expected or sent.value != expected:
            print(f"LOST: {expected - n_final:,} of {expected:,} spans are not in the store", file=sys.stderr)
            print(serve.log.read_text(errors="replace")[-3000:], file=sys.stderr)
            return 1
        return 0
    finally:
        if serve is not None:
            serve.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
