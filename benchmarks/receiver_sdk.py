"""Benchmark (b): the OTLP/HTTP receiver fed by the real OpenTelemetry SDK exporter.

    .venv/bin/python benchmarks/receiver_sdk.py [--spans 200000] [--senders 2]
        [--created-first | --created-meanwhile] [--null-sink]

`afterfix serve` runs in its own process on a temporary store. Each sender process uses the
OpenTelemetry SDK as an agent would (TracerProvider, OTLPSpanExporter over HTTP/protobuf, batches
of 512) with agent-like spans (synth's runs: tool calls, LLM calls, decisions with option events,
actions; ~300 bytes of attributes per span). Measured: from the first span sent (or created) to
every span counted by a query from a fresh store connection.

Two runs, each on a new store:
- spans created first: each sender creates its spans with the SDK before the clock starts, then
  exports them with OTLPSpanExporter, one export at a time as BatchSpanProcessor does. This is
  the receiver fed by the exporter, what the target (>= 20,000 spans/s) is about.
- spans created meanwhile: the senders create the spans while the clock runs (BatchSpanProcessor).
  On a machine of few cores the agents' own span creation (~40 us of CPU a span here) then takes
  the CPU the receiver shares with them; `--null-sink` shows what the senders alone reach.
Exits non-zero if the store does not hold every span.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
import otlp_http  # noqa: E402
import synth  # noqa: E402

TARGET = 20_000
SPANS_PER_RUN = 50


def _value(v: dict):
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "boolValue" in v:
        return v["boolValue"]
    return v["doubleValue"]


def _attrs(items: list[dict]) -> dict:
    return {a["key"]: _value(a["value"]) for a in items}


def run_templates(seed: int, runs: int = 20) -> list[list[tuple[str, dict, list[tuple[str, dict]]]]]:
    """Agent runs as (span name, attributes, [(event name, attributes)]): the root first."""
    rng = random.Random(seed)
    out = []
    for run in range(runs):
        spans = synth.spans_of_run(rng, run, SPANS_PER_RUN)
        out.append([(s["name"], _attrs(s["attributes"]), [(e["name"], _attrs(e["attributes"])) for e in s.get("events", ())])
                    for s in spans])
    return out


def create_spans(tracer, templates, n_spans: int) -> None:
    """`n_spans` spans as an agent makes them: runs of a root and its children, with events."""
    from opentelemetry import trace

    made = run = 0
    while made < n_spans:
        spans = templates[run % len(templates)][: n_spans - made]
        run += 1
        (name, attrs, _), children = spans[0], spans[1:]
        root = tracer.start_span(name, attributes=attrs)
        ctx = trace.set_span_in_context(root)
        for name, attrs, events in children:
            span = tracer.start_span(name, context=ctx, attributes=attrs)
            for event_name, event_attrs in events:
                span.add_event(event_name, event_attrs)
            span.end()
        root.end()
        made += len(spans)


def sender(url: str, n_spans: int, index: int, created_first: bool, ready, go, results) -> None:
    """One agent process: creates `n_spans` spans with the SDK and exports them to `url`.

    With `created_first`, the spans are created (and kept in memory) before the clock starts and
    exported during it in batches of 512 by the same OTLPSpanExporter, one export at a time as
    BatchSpanProcessor does: what the SDK costs to create spans is then left out.
    """
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    templates = run_templates(seed=100 + index)
    provider = TracerProvider(resource=Resource.create({"service.name": "sre-agent", "afterfix.scenario": "bench"}))
    exporter = OTLPSpanExporter(endpoint=url, timeout=60)
    tracer = provider.get_tracer("afterfix.bench")
    if created_first:
        memory = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(memory))
        create_spans(tracer, templates, n_spans)
        finished = memory.get_finished_spans()
        ready.set()
        go.wait()
        t0 = created = time.time()
        ok = all(exporter.export(finished[i:i + 512]) == SpanExportResult.SUCCESS for i in range(0, len(finished), 512))
        exported = time.time()
    else:
        # A queue that holds every span: the SDK drops spans when its queue is full, and what is
        # measured here is how fast the receiver takes them, not how the SDK sheds load.
        provider.add_span_processor(BatchSpanProcessor(
            exporter, max_queue_size=n_spans + 1, max_export_batch_size=512, schedule_delay_millis=100))
        ready.set()
        go.wait()
        t0 = time.time()
        create_spans(tracer, templates, n_spans)
        created = time.time()
        ok = provider.force_flush(timeout_millis=600_000)
        exported = time.time()
    provider.shutdown()
    results.put({"index": index, "spans": n_spans, "t0": t0, "created": created, "exported": exported, "flushed": ok})


def cpu_seconds(proc: "psutil.Process") -> float:
    """User + system CPU seconds of `proc` and its children so far."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def stored(store) -> int:
    return int(store.query("SELECT count(*) AS n FROM spans")["n"][0])


def stored_fresh(path: Path) -> int:
    """The count seen by a new connection, as another process would see it."""
    from afterfix import Store

    s = Store(path)
    try:
        return stored(s)
    finally:
        s.close()


def null_sink(ports) -> None:
    """A receiver that stores nothing: reads each body and answers 200 at once (for `--null-sink`)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    answer = ExportTraceServiceResponse().SerializeToString()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", otlp_http.PROTOBUF)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ports.put(server.server_address[1])
    server.serve_forever()


def run_senders(ctx, url: str, shares: list[int], created_first: bool, before_go) -> list[dict]:
    """Start one sender per share, call `before_go()` once all are ready, start the clock, and
    return their reports."""
    results, go = ctx.Queue(), ctx.Event()
    readies = [ctx.Event() for _ in shares]
    procs = [ctx.Process(target=sender, args=(url, n, i, created_first, readies[i], go, results)) for i, n in enumerate(shares)]
    try:
        for p in procs:
            p.start()
        for r in readies:
            if not r.wait(300):
                raise RuntimeError("a sender process did not start")
        before_go()
        go.set()
        reports = []
        while len(reports) < len(procs):
            try:
                reports.append(results.get(timeout=1))
            except queue.Empty:
                dead = [i for i, p in enumerate(procs) if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"sender process(es) {dead} failed: see their traceback above") from None
        for p in procs:
            p.join(60)
        return sorted(reports, key=lambda r: r["index"])
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)


def print_senders(reports: list[dict], created_first: bool) -> None:
    for r in reports:
        made = (f"{r['spans']:,} spans created before the clock" if created_first else
                f"created {r['spans']:,} spans at {r['spans'] / max(r['created'] - r['t0'], 1e-9):,.0f} spans/s")
        print(f"  sender {r['index']}: {made}, all exported after {r['exported'] - r['t0']:.1f} s"
              f"{'' if r['flushed'] else ' (export failed or timed out)'}")


def through_serve(ctx, args, shares: list[int], created_first: bool, print_header) -> tuple[float, bool]:
    """One run against `afterfix serve` on a new store; prints its figures and returns
    (first span -> all queryable in spans/s, whether every span was stored)."""
    work = Path(tempfile.mkdtemp(prefix="afterfix-bench-b-"))
    serve = None
    try:
        serve = otlp_http.Serve(work / "store")
        from afterfix import Store

        reader = Store(work / "store")
        receiver = psutil.Process(serve.pid)
        cpu0 = 0.0

        def announce() -> None:
            nonlocal cpu0
            stored(reader)  # attached before the clock starts
            print_header("afterfix serve", created_first)
            cpu0 = cpu_seconds(receiver)

        reports = run_senders(ctx, serve.url, shares, created_first, announce)
        t_first = min(r["t0"] for r in reports)
        t_acked = max(r["exported"] for r in reports)
        # Everything is acknowledged (spooled); now wait for the commit that makes it queryable.
        n, last_change, last_n = 0, time.monotonic(), -1
        while n < args.spans and time.monotonic() - last_change < 60:
            n = stored(reader)
            if n != last_n:
                last_n, last_change = n, time.monotonic()
            elif n < args.spans:
                time.sleep(0.05)
        t_done = time.time()
        took = t_done - t_first
        cpu = cpu_seconds(receiver) - cpu0
        reader.close()
        n = stored_fresh(work / "store")

        print_senders(reports, created_first)
        print(f"acknowledged by the receiver : {args.spans / (t_acked - t_first):>10,.0f} spans/s ({t_acked - t_first:.1f} s)")
        print(f"first span -> all queryable  : {n / took:>10,.0f} spans/s ({took:.1f} s, {n:,} spans)"
              + (f"   (target >= {TARGET:,} spans/s)" if created_first else ""))
        print(f"receiver CPU                 : {cpu / max(n, 1) * 1e6:>10,.1f} us/span, i.e. {n / max(cpu, 1e-9):,.0f} spans/s "
              f"per core ({cpu:.1f} CPU s in {took:.1f} s on {os.cpu_count()} cores shared with the senders)", flush=True)
        if n != args.spans:
            print(f"LOST: {args.spans - n:,} of {args.spans:,} spans are not in the store", file=sys.stderr)
            print(serve.log.read_text(errors="replace")[-3000:], file=sys.stderr)
            return n / took, False
        return n / took, True
    finally:
        if serve is not None:
            serve.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", type=int, default=200_000)
    ap.add_argument("--senders", type=int, default=2, help="sender processes, each with its own SDK exporter")
    only = ap.add_mutually_exclusive_group()
    only.add_argument("--created-first", action="store_true",
                      help="only the run where the spans are created before the clock (what the target is about)")
    only.add_argument("--created-meanwhile", action="store_true",
                      help="only the run where the senders create the spans while the clock runs")
    ap.add_argument("--null-sink", action="store_true",
                    help="send to a receiver that stores nothing: what the senders alone reach on this machine")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    shares = [args.spans // args.senders + (i < args.spans % args.senders) for i in range(args.senders)]
    runs = [True] if args.created_first else [False] if args.created_meanwhile else [True, False]
    ctx = mp.get_context("spawn")
    print(otlp_http.machine(), flush=True)

    def print_header(to: str, created_first: bool) -> None:
        how = ("created before the clock, then exported by OTLPSpanExporter" if created_first
               else "created meanwhile: OpenTelemetry SDK BatchSpanProcessor + OTLPSpanExporter")
        print(f"{args.spans:,} spans from {args.senders} sender process(es) ({how}, HTTP/protobuf, batches of 512) "
              f"to {to}", flush=True)

    if args.null_sink:
        for created_first in runs:
            ports = ctx.Queue()
            sink = ctx.Process(target=null_sink, args=(ports,), daemon=True)
            sink.start()
            try:
                url = f"http://127.0.0.1:{ports.get(timeout=60)}/v1/traces"
                reports = run_senders(ctx, url, shares, created_first,
                                      lambda: print_header("a null sink that stores nothing", created_first))  # noqa: B023
            finally:
                sink.terminate()
                sink.join(5)
            print_senders(reports, created_first)
            took = max(r["exported"] for r in reports) - min(r["t0"] for r in reports)
            print(f"acknowledged by the null sink: {args.spans / took:>10,.0f} spans/s ({took:.1f} s): the senders' ceiling here")
        return 0

    results = {created_first: through_serve(ctx, args, shares, created_first, print_header) for created_first in runs}
    if len(results) == 2:
        print(f"(b) fed by the SDK's exporter (spans created first): {results[True][0]:>10,.0f} spans/s   "
              f"(target >= {TARGET:,} spans/s)")
        print(f"    with the senders creating the spans meanwhile : {results[False][0]:>10,.0f} spans/s   "
              f"(on the same {os.cpu_count()} cores; --null-sink: what the senders alone reach)")
    return 0 if all(ok for _, ok in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
