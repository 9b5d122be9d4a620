"""The OTLP/HTTP receiver, driven by the real OpenTelemetry SDK exporter and by plain HTTP."""

from __future__ import annotations

import gzip
import json
import threading
import time

import pytest
import requests
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.http.trace_exporter import Compression, OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

from afterfix import Store
from afterfix.ingest.ingester import Ingester
from afterfix.ingest.otlp import Limits
from afterfix.ingest.receiver import Receiver
from afterfix.ingest.spool import Spool

PB = {"Content-Type": "application/x-protobuf"}
JS = {"Content-Type": "application/json"}
T_NS = 1_795_000_000_000_000_000  # 2026-11-18, nanoseconds


def count(store: Store, table: str = "spans") -> int:
    return int(store.query(f"SELECT count(*) AS n FROM {table}")["n"][0])


def request_pb(n: int, *, start: int = 0, trace: int = 1, bad: int = 0) -> trace_service_pb2.ExportTraceServiceRequest:
    """An export request with `n` spans of one trace, plus `bad` spans whose span id is 3 bytes."""
    spans = [trace_pb2.Span(trace_id=trace.to_bytes(16, "big"), span_id=(start + i + 1).to_bytes(8, "big"),
                            name=f"execute_tool kubectl_get #{start + i}", kind=trace_pb2.Span.SPAN_KIND_INTERNAL,
                            start_time_unix_nano=T_NS + (start + i) * 1000, end_time_unix_nano=T_NS + (start + i) * 1000 + 500)
             for i in range(n)]
    spans += [trace_pb2.Span(trace_id=trace.to_bytes(16, "big"), span_id=b"\x01\x02\x03", name="bad span id",
                             start_time_unix_nano=T_NS, end_time_unix_nano=T_NS + 1) for _ in range(bad)]
    return trace_service_pb2.ExportTraceServiceRequest(resource_spans=[
        trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=spans)])])


def request_json(n: int, *, start: int = 0, bad: int = 0) -> bytes:
    """The same request in OTLP/JSON: hex ids, nanosecond times as decimal strings."""
    spans = [{"traceId": f"{1:032x}", "spanId": f"{start + i + 1:016x}", "name": f"json span {start + i}", "kind": 1,
              "startTimeUnixNano": str(T_NS + (start + i) * 1000), "endTimeUnixNano": str(T_NS + (start + i) * 1000 + 500)}
             for i in range(n)]
    spans += [{"traceId": f"{1:032x}", "spanId": "xyz", "name": "bad span id", "startTimeUnixNano": str(T_NS),
               "endTimeUnixNano": str(T_NS + 1)} for _ in range(bad)]
    return json.dumps({"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": spans}]}]}).encode()


@pytest.fixture
def parts(store):
    """An ingester, a spool and a receiver on a free port; stopped afterwards."""
    made = {}

    def make(**kwargs):
        ing = Ingester(store, interval=kwargs.pop("interval", 0.05), max_pending_spans=kwargs.pop("max_pending_spans", 200_000))
        if kwargs.pop("start_ingester", True):
            ing.start()
        spool = Spool(store)
        rec = Receiver(ing, spool, port=0, **kwargs)
        rec.start()
        made.update(ing=ing, spool=spool, rec=rec)
        return rec

    yield make
    if made:
        made["rec"].stop()
        made["ing"].stop(timeout=2)
        made["spool"].close()


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_the_sdk_exporter_delivers_spans_to_the_store(store, parts, compression):
    rec = parts()
    provider = TracerProvider(resource=Resource.create({"service.name": "sre-agent"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=rec.url, compression=compression),
                                                   max_export_batch_size=64))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("invoke_agent night-shift") as root:
        root.set_attribute("gen_ai.operation.name", "invoke_agent")
        for i in range(150):
            with tracer.start_as_current_span(f"execute_tool kubectl_get #{i}") as span:
                span.set_attribute("gen_ai.tool.name", "kubectl_get")
    provider.shutdown()  # exports everything and waits for the 200s
    assert rec.ingester.flush()
    assert count(store) == 151
    df = store.query("SELECT count(DISTINCT trace_id) AS traces, any_value(service_name) AS svc, "
                     "count(*) FILTER (WHERE parent_span_id IS NULL) AS roots FROM spans")
    assert (int(df.traces[0]), df.svc[0], int(df.roots[0])) == (1, "sre-agent", 1)
    assert rec.stats.accepted >= 3 and rec.stats.rejected_requests == 0


@pytest.mark.parametrize("gzipped", [False, True])
def test_a_json_body_is_stored_and_answered_in_json(store, parts, gzipped):
    rec = parts()
    body, headers = request_json(5), dict(JS)
    if gzipped:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    r = requests.post(rec.url, data=body, headers=headers, timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert r.json() == {}  # no partial_success: everything was accepted
    assert rec.ingester.flush() and count(store) == 5


@pytest.mark.parametrize("kind", ["protobuf", "json"])
def test_partial_success_names_the_refused_span_and_quarantines_it(store, parts, kind):
    rec = parts()
    if kind == "protobuf":
        r = requests.post(rec.url, data=request_pb(4, bad=1).SerializeToString(), headers=PB, timeout=10)
        resp = trace_service_pb2.ExportTraceServiceResponse.FromString(r.content)
        rejected, message = resp.partial_success.rejected_spans, resp.partial_success.error_message
    else:
        r = requests.post(rec.url, data=request_json(4, bad=1), headers=JS, timeout=10)
        ps = r.json()["partialSuccess"]
        rejected, message = int(ps["rejectedSpans"]), ps["errorMessage"]
    assert r.status_code == 200
    assert rejected == 1 and "quarantine" in message and "span" in message.lower()
    assert rec.ingester.flush()
    assert count(store) == 4
    q = store.query("SELECT source, location, reason FROM quarantine")
    assert len(q) == 1 and q.source[0] == "otlp-http" and q.reason[0]
    assert rec.stats.refused_spans == 1


def _bomb(limit: int) -> bytes:
    return gzip.compress(b"\0" * (limit * 4))  # inflates to 4x the limit from a few KiB


# (description, receiver options, request kwargs, expected status, text expected in the message)
ERRORS = [
    ("other path", {}, dict(path="/v1/logs", data=request_pb(1).SerializeToString(), headers=PB), 404, "/v1/traces"),
    ("root path", {}, dict(path="/", data=b"{}", headers=JS), 404, "/v1/traces"),
    ("GET", {}, dict(method="GET", headers=JS), 405, "POST"),
    ("text/plain", {}, dict(data=b"hello", headers={"Content-Type": "text/plain"}), 415, "application/x-protobuf"),
    ("no content type", {}, dict(data=b"hello", headers={}), 415, "Content-Type"),
    ("brotli", {}, dict(data=b"x", headers={**PB, "Content-Encoding": "br"}), 415, "gzip"),
    ("over the limit", {"limits": Limits(max_body_bytes=1000)}, dict(data=b"\0" * 5000, headers=PB), 413, "limit"),
    ("gzip bomb", {"limits": Limits(max_body_bytes=100_000)},
     dict(data=_bomb(100_000), headers={**PB, "Content-Encoding": "gzip"}), 413, "inflates"),
    ("not gzip", {}, dict(data=b"plain bytes", headers={**PB, "Content-Encoding": "gzip"}), 400, "gzip"),
    ("garbage protobuf", {}, dict(data=b"\xff\xff\xff\xff garbage", headers=PB), 400, "request"),
    ("garbage json", {}, dict(data=b"{not json", headers=JS), 400, "request"),
    ("missing token", {"token": "s3cret"}, dict(data=request_pb(1).SerializeToString(), headers=PB), 401, "Bearer"),
    ("wrong token", {"token": "s3cret"},
     dict(data=request_pb(1).SerializeToString(), headers={**PB, "Authorization": "Bearer nope"}), 401, "Bearer"),
    ("json 401", {"token": "s3cret"}, dict(data=request_json(1), headers=JS), 401, "Bearer"),
]


def _shared_parts(tmp_path_factory, name: str):
    store = Store(tmp_path_factory.mktemp(name) / "store")
    store.create()
    ing = Ingester(store, interval=0.05)
    ing.start()
    spool = Spool(store)
    yield store, ing, spool
    ing.stop()
    spool.close()
    store.close()


@pytest.fixture(scope="module")
def refusing(tmp_path_factory):
    """One store, ingester and spool for every error case (nothing may reach them)."""
    yield from _shared_parts(tmp_path_factory, "refusals")


@pytest.fixture(scope="module")
def accepting(tmp_path_factory):
    """One store, ingester and spool for tests that each send their own trace (count_trace)."""
    yield from _shared_parts(tmp_path_factory, "accepted")


def count_trace(store: Store, trace: int) -> int:
    return int(store.query(f"SELECT count(*) AS n FROM spans WHERE trace_id = '{trace:032x}'")["n"][0])


@pytest.mark.parametrize("what, options, req, status, text", ERRORS, ids=[e[0] for e in ERRORS])
def test_error_statuses(refusing, what, options, req, status, text):
    store, ing, spool = refusing
    rec = Receiver(ing, spool, port=0, **options)
    rec.start()
    try:
        _check_refusal(rec, req, status, text)
    finally:
        rec.stop()
    assert ing.flush() and count(store) == 0 and count(store, "quarantine") == 0
    assert rec.stats.rejected_requests == 1 and rec.stats.last_error.startswith(f"HTTP {status}")


def _check_refusal(rec: Receiver, req: dict, status: int, text: str) -> None:
    req = dict(req)
    method, path = req.pop("method", "POST"), req.pop("path", "/v1/traces")
    r = requests.request(method, rec.url.replace("/v1/traces", path), timeout=10, **req)
    assert r.status_code == status, r.content
    if r.headers["Content-Type"] == "application/x-protobuf":
        assert req["headers"].get("Content-Type") == "application/x-protobuf"  # answered in the request's encoding
        message = status_pb2.Status.FromString(r.content).message
    else:
        body = r.json()
        assert set(body) == {"code", "message"} and body["code"] > 0
        message = body["message"]
    assert text.lower() in message.lower()


@pytest.fixture
def receiver(accepting):
    """A receiver (options given by calling it) on the shared accepting store."""
    store, ing, spool = accepting
    made = []

    def make(**options) -> Receiver:
        rec = Receiver(ing, spool, **{"port": 0, **options})
        rec.start()
        made.append(rec)
        return rec

    yield make
    for rec in made:
        rec.stop()


def test_the_right_token_is_accepted(accepting, receiver):
    rec = receiver(token="s3cret")
    body = request_pb(2, trace=101).SerializeToString()
    r = requests.post(rec.url, data=body, headers={**PB, "Authorization": "Bearer s3cret"}, timeout=10)
    assert r.status_code == 200
    assert rec.ingester.flush() and count_trace(accepting[0], 101) == 2


def test_a_connection_stays_usable_after_an_error(accepting, receiver):
    rec = receiver()
    with requests.Session() as s:
        assert s.post(rec.url, data=b"nope", headers={"Content-Type": "text/plain"}, timeout=10).status_code == 415
        assert s.post(rec.url.replace("traces", "logs"), data=b"{}", headers=JS, timeout=10).status_code == 404
        assert s.post(rec.url, data=request_pb(3, trace=102).SerializeToString(), headers=PB, timeout=10).status_code == 200
    assert rec.ingester.flush() and count_trace(accepting[0], 102) == 3


def test_overloaded_answers_503_with_retry_after_and_memory_stays_bounded(store, parts):
    rec = parts(start_ingester=False, max_pending_spans=100)  # nothing commits: the ingester falls behind
    statuses = []
    for i in range(12):
        r = requests.post(rec.url, data=request_pb(40, start=40 * i).SerializeToString(), headers=PB, timeout=10)
        statuses.append(r.status_code)
        if r.status_code == 503:
            assert int(r.headers["Retry-After"]) >= 1
            assert "retry" in status_pb2.Status.FromString(r.content).message
    assert statuses[:3] == [200, 200, 200] and set(statuses[3:]) == {503}
    assert rec.ingester.stats().pending == 120  # bounded: the limit plus at most one batch
    rec.ingester.start()
    assert rec.ingester.flush()
    r = requests.post(rec.url, data=request_pb(40, start=1000).SerializeToString(), headers=PB, timeout=10)
    assert r.status_code == 200  # accepted again once the store caught up
    assert rec.ingester.flush() and count(store) == 160


def test_a_request_arriving_while_a_commit_makes_room_waits_for_it_instead_of_503(store, parts):
    rec = parts(interval=3600, max_pending_spans=10)  # rounds an hour apart: only the limit commits
    statuses = [requests.post(rec.url, data=request_pb(11, start=11 * i).SerializeToString(), headers=PB, timeout=30).status_code
                for i in range(4)]
    assert statuses == [200] * 4 and rec.stats.busy == 0
    assert rec.ingester.flush() and count(store) == 44


def test_the_sdk_exporter_honours_retry_after_and_delivers_once_the_store_caught_up(store, parts):
    from opentelemetry.sdk.trace.export import SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    rec = parts(start_ingester=False, max_pending_spans=10)
    assert requests.post(rec.url, data=request_pb(11).SerializeToString(), headers=PB, timeout=10).status_code == 200
    assert rec.ingester.overloaded
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    for i in range(5):
        with provider.get_tracer("t").start_as_current_span(f"retried #{i}"):
            pass
    exporter = OTLPSpanExporter(endpoint=rec.url, timeout=60)
    result = []
    sender = threading.Thread(target=lambda: result.append(exporter.export(memory.get_finished_spans())))
    sender.start()
    deadline = time.monotonic() + 30
    while rec.stats.busy == 0:  # the exporter was told to come back later
        assert time.monotonic() < deadline and sender.is_alive()
        time.sleep(0.02)
    rec.ingester.start()
    sender.join(60)
    assert result == [SpanExportResult.SUCCESS]
    assert rec.ingester.flush() and count(store) == 16


def test_a_client_that_hangs_up_mid_body_leaves_the_receiver_working(accepting, receiver):
    import socket

    rec = receiver()
    with socket.create_connection(("127.0.0.1", rec.port)) as sock:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     b"Content-Length: 1000\r\n\r\n" + b"\0" * 10)
    deadline = time.monotonic() + 30
    while "connection lost" not in (rec.stats.last_error or ""):
        assert time.monotonic() < deadline, rec.stats
        time.sleep(0.02)
    assert requests.post(rec.url, data=request_pb(2, trace=103).SerializeToString(), headers=PB, timeout=10).status_code == 200
    assert rec.ingester.flush() and count_trace(accepting[0], 103) == 2


def test_concurrent_exporters_lose_nothing(store, parts):
    rec = parts()
    def send(k: int) -> None:
        for j in range(5):
            body = request_pb(20, start=(k * 5 + j) * 20, trace=k + 1).SerializeToString()
            assert requests.post(rec.url, data=body, headers=PB, timeout=30).status_code == 200

    threads = [threading.Thread(target=send, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert rec.ingester.flush() and count(store) == 600


def test_the_spool_holds_decoded_rows_not_the_raw_request(store, parts):
    rec = parts(start_ingester=False)  # keep it spooled
    body = request_pb(2).SerializeToString()
    assert requests.post(rec.url, data=body, headers=PB, timeout=10).status_code == 200
    spooled = b"".join(p.read_bytes() for p in rec.spool.dir.glob("seg-*"))
    assert b"ARROW1" in spooled or b"trace_id" in spooled  # Arrow IPC rows
    assert body not in spooled


def test_a_secret_in_a_span_reaches_neither_the_spool_nor_the_store(store, parts):
    rec = parts(start_ingester=False)
    secret = "sk-proj-" + "Ab1Cd2Ef3" * 4
    req = request_pb(1)
    req.resource_spans[0].scope_spans[0].spans[0].attributes.add(key="gen_ai.input.messages").value.string_value = \
        f"use the key {secret} to page the on-call"
    assert requests.post(rec.url, data=req.SerializeToString(), headers=PB, timeout=10).status_code == 200
    spooled = b"".join(p.read_bytes() for p in rec.spool.dir.glob("seg-*"))
    assert spooled and secret.encode() not in spooled
    rec.ingester.start()
    assert rec.ingester.flush()
    attrs = store.query("SELECT attributes FROM spans").attributes[0]
    assert secret not in attrs and "REDACTED" in attrs
    assert rec.ingester.stats().redacted >= 1


def test_binds_loopback_by_default(receiver):
    rec = receiver()
    assert rec.host == "127.0.0.1" and rec._server.server_address[0] == "127.0.0.1"
    assert rec.url == f"http://127.0.0.1:{rec.port}/v1/traces" and rec.port > 0


def test_a_port_in_use_names_the_fix(receiver):
    from afterfix import ConfigError

    first = receiver()
    with pytest.raises(ConfigError, match="port 0"):
        receiver(port=first.port)


def _has_ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_listens_on_ipv6_loopback_when_asked(accepting, receiver):
    rec = receiver(host="::1")
    assert rec.url == f"http://[::1]:{rec.port}/v1/traces"
    assert requests.post(rec.url, data=request_pb(2, trace=104).SerializeToString(), headers=PB, timeout=10).status_code == 200
    assert rec.ingester.flush() and count_trace(accepting[0], 104) == 2


# -- the control routes ------------------------------------------------------------------------


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/afterfix/status", 404),  # no capture behind this receiver
    ("POST", "/afterfix/flush", 404),
    ("POST", "/afterfix/status", 405),
    ("GET", "/afterfix/flush", 405),
    ("DELETE", "/afterfix/status", 405),
])
def test_control_routes_without_a_capture_or_with_the_wrong_method(receiver, method, path, status):
    rec = receiver()
    r = requests.request(method, rec.url.replace("/v1/traces", path), timeout=10)
    assert r.status_code == status, r.content
    body = r.json()
    assert body["code"] > 0 and (path in body["message"] or "no capture" in body["message"])
    assert rec.stats.requests == 0  # control calls are not OTLP requests


class _Control:
    """Stands in for the capture the receiver belongs to (tests/ingest/test_capture.py uses a real one)."""

    def __init__(self):
        self.flushes = []

    def status(self):
        import datetime as dt

        return {"spans_stored": 7, "last_commit_at": dt.datetime(2026, 11, 27, 3, 4, 5), "last_error": None}

    def flush(self, timeout=10):
        self.flushes.append(timeout)
        return True


@pytest.mark.parametrize("headers, status", [
    ({}, 401),
    ({"Authorization": "Bearer nope"}, 401),
    ({"Authorization": "Basic s3cret"}, 401),
    ({"Authorization": "Bearer s3cret"}, 200),
])
def test_control_routes_follow_the_token_rule(receiver, headers, status):
    rec = receiver(token="s3cret")
    control = rec.control = _Control()
    base = rec.url.replace("/v1/traces", "")
    got = requests.get(base + "/afterfix/status", headers=headers, timeout=10)
    flushed = requests.post(base + "/afterfix/flush", headers=headers, timeout=10)
    assert (got.status_code, flushed.status_code) == (status, status)
    if status == 401:
        assert "Bearer" in got.json()["message"] and got.headers["WWW-Authenticate"].startswith("Bearer")
        assert control.flushes == []  # refused before anything was done
    else:
        assert got.json() == {"spans_stored": 7, "last_commit_at": "2026-11-27T03:04:05", "last_error": None}
        assert flushed.json()["flushed"] is True and flushed.json()["status"]["spans_stored"] == 7
        assert len(control.flushes) == 1


def test_the_decoder_is_warmed_at_start_and_nothing_is_counted_or_stored(store, parts, monkeypatch):
    # The decoder's first use imports pandas and more (0.5-1.9 s measured): done at start,
    # not while the first client waits, and the made-up span goes nowhere.
    from afterfix.ingest import otlp

    decoded = []
    real = otlp.decode_protobuf
    monkeypatch.setattr(otlp, "decode_protobuf", lambda body, **kw: decoded.append(real(body, **kw)) or decoded[-1])
    rec = parts()
    warm = [t for t in threading.enumerate() if t.name == "afterfix-receiver-warm-up"]
    for t in warm:
        t.join(30)
    assert len(decoded) == 1 and decoded[0].spans.num_rows == 1
    assert rec.stats.requests == 0 and rec.stats.spans == 0
    assert rec.spool.appended == 0
    assert rec.ingester.flush() and count(store) == 0
