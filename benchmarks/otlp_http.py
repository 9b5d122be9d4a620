"""OTLP/HTTP for the benchmarks: pre-encoded requests, a poster that retries, an `afterfix serve`.

`RequestPool` converts a small pool of `synth` traces to `ExportTraceServiceRequest`s once (the
protobuf JSON parser is slow), then hands out request `k` as bytes: pooled request `k % pool`
with fresh trace ids and times shifted one pool-length per cycle, so a sender can post millions of
distinct spans with little CPU of its own. Spans of a request are one or more whole agent runs.
"""

from __future__ import annotations

import base64
import os
import platform
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import orjson
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

import synth

PROTOBUF = "application/x-protobuf"


def machine() -> str:
    import duckdb

    return (f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"duckdb {duckdb.__version__}, load average {os.getloadavg()[0]:.1f}")


def _b64(hex_id: str) -> str:
    # OTLP/JSON writes ids in hex; protobuf's own JSON mapping reads bytes fields as base64.
    return base64.b64encode(bytes.fromhex(hex_id)).decode() if hex_id else ""


def _to_request(line: bytes) -> ExportTraceServiceRequest:
    data = orjson.loads(line)
    for rs in data["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    span[key] = _b64(span.get(key, ""))
    return json_format.ParseDict(data, ExportTraceServiceRequest())


class RequestPool:
    """Request `k` (k = 0, 1, ...) as serialized protobuf, every span distinct from every other request's."""

    def __init__(self, spans_per_request: int = 512, pool_spans: int = 5_000, *, seed: int = 11):
        spans_per_request = max(50, spans_per_request - spans_per_request % 50)  # whole runs of 50 spans
        pool_spans = max(pool_spans - pool_spans % spans_per_request, spans_per_request)
        self.spans_per_request = spans_per_request
        self.requests = [_to_request(line) for line in synth.otlp_lines(pool_spans, seed=seed, spans_per_line=spans_per_request)]
        self._spans = [[s for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans] for r in self.requests]
        # What each span held when pooled: trace id, start, end, and its events' times.
        self._orig = [[(bytes(s.trace_id), s.start_time_unix_nano, s.end_time_unix_nano, [e.time_unix_nano for e in s.events])
                       for s in spans] for spans in self._spans]
        starts = [o[1] for req in self._orig for o in req]
        ends = [o[2] for req in self._orig for o in req]
        self.cycle_ns = max(ends) - min(starts) + 1_000_000_000

    def __len__(self) -> int:
        return len(self.requests)

    def request(self, k: int) -> ExportTraceServiceRequest:
        """Request `k` as a message (restamped in place: valid until the next call for the same pool slot)."""
        j, cycle = k % len(self.requests), k // len(self.requests)
        shift = cycle * self.cycle_ns
        prefix = struct.pack(">Q", cycle + 1)
        for span, (tid, start, end, event_times) in zip(self._spans[j], self._orig[j]):
            span.trace_id = prefix + tid[8:]
            span.start_time_unix_nano = start + shift
            span.end_time_unix_nano = end + shift
            for event, t in zip(span.events, event_times):
                event.time_unix_nano = t + shift
        return self.requests[j]

    def body(self, k: int) -> bytes:
        return self.request(k).SerializeToString()

    def first_trace_id(self, k: int) -> str:
        """Hex trace id of the first span of request `k` (as stored in `spans.trace_id`)."""
        j, cycle = k % len(self.requests), k // len(self.requests)
        return (struct.pack(">Q", cycle + 1) + self._orig[j][0][0][8:]).hex()

    def start_ns(self, k: int) -> int:
        """Earliest span start of request `k`."""
        j, cycle = k % len(self.requests), k // len(self.requests)
        return min(o[1] for o in self._orig[j]) + cycle * self.cycle_ns


def post(conn, path: str, body: bytes, *, give_up_s: float = 120) -> int:
    """POST `body` until it is accepted, honouring 503/429 Retry-After; returns how many retries it took."""
    import http.client

    retries = 0
    deadline = time.monotonic() + give_up_s
    while True:
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": PROTOBUF})
            resp = conn.getresponse()
            resp.read()
        except (ConnectionError, http.client.HTTPException):
            conn.close()  # reconnects on the next request
            status, wait = None, 0.2
        else:
            status = resp.status
            if status == 200:
                return retries
            if status not in (429, 503):
                raise RuntimeError(f"POST {path}: HTTP {status} {resp.reason}")
            wait = float(resp.getheader("Retry-After") or 1)
        retries += 1
        if time.monotonic() + wait > deadline:
            raise RuntimeError(f"POST {path}: still refused after {retries} tries (last HTTP {status})")
        time.sleep(wait)


class Serve:
    """`afterfix serve` on a free port in its own process (so its memory is its own), no inbox."""

    def __init__(self, store: Path):
        # stderr to a file: a pipe nobody reads would block the server once it filled up
        self.log = store.parent / "serve.log"
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "afterfix", "serve", "--store", str(store), "--port", "0", "--no-inbox"],
                stdout=subprocess.PIPE, stderr=err, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"listening on (http://[^ ,]+)", line)
        if not m:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"afterfix serve did not start: {line!r} {self.log.read_text()[-2000:]}")
        self.url = m.group(1)
        self.host, port_path = self.url.removeprefix("http://").split(":", 1)
        self.port = int(port_path.split("/")[0])
        self.pid = self.proc.pid

    def stop(self, timeout: float = 120) -> str:
        """SIGTERM (serve flushes to the store first); returns its stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        return self.log.read_text(errors="replace")
