"""afterfix.ingest.otlp: OTLP/JSON and protobuf decode to the same rows; framing; bodies; files."""

from __future__ import annotations

import base64
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PbResource
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from afterfix import DecodeError, schema
from afterfix.ingest import otlp

DATA = Path(__file__).parent / "data"
AT = datetime(2026, 11, 27, 6, 0, 0)
EPOCH = datetime(1970, 1, 1)


# --- OTLP/JSON written from protobuf by the OTLP/JSON rules (hex ids, int64 as strings) -----


def any_json(v: AnyValue) -> dict:
    w = v.WhichOneof("value")
    if w is None:
        return {}
    if w == "string_value":
        return {"stringValue": v.string_value}
    if w == "bool_value":
        return {"boolValue": v.bool_value}
    if w == "int_value":
        return {"intValue": str(v.int_value)}
    if w == "double_value":
        d = v.double_value
        return {"doubleValue": d if math.isfinite(d) else {math.inf: "Infinity", -math.inf: "-Infinity"}.get(d, "NaN")}
    if w == "bytes_value":
        return {"bytesValue": base64.b64encode(v.bytes_value).decode()}
    if w == "array_value":
        return {"arrayValue": {"values": [any_json(x) for x in v.array_value.values]}}
    return {"kvlistValue": {"values": [kv_json(x) for x in v.kvlist_value.values]}}


def kv_json(kv: KeyValue) -> dict:
    return {"key": kv.key, "value": any_json(kv.value)}


def span_json(sp: trace_pb2.Span) -> dict:
    return {
        "traceId": sp.trace_id.hex(),
        "spanId": sp.span_id.hex(),
        "traceState": sp.trace_state,
        "parentSpanId": sp.parent_span_id.hex(),
        "flags": sp.flags,
        "name": sp.name,
        "kind": sp.kind,
        "startTimeUnixNano": str(sp.start_time_unix_nano),
        "endTimeUnixNano": str(sp.end_time_unix_nano),
        "attributes": [kv_json(a) for a in sp.attributes],
        "droppedAttributesCount": sp.dropped_attributes_count,
        "events": [
            {"timeUnixNano": str(e.time_unix_nano), "name": e.name, "attributes": [kv_json(a) for a in e.attributes]}
            for e in sp.events
        ],
        "links": [
            {"traceId": ln.trace_id.hex(), "spanId": ln.span_id.hex(), "attributes": [kv_json(a) for a in ln.attributes]}
            for ln in sp.links
        ],
        "status": {"code": sp.status.code, "message": sp.status.message},
    }


def request_json(req: ExportTraceServiceRequest) -> dict:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [kv_json(a) for a in rs.resource.attributes]},
                "scopeSpans": [
                    {"scope": {"name": ss.scope.name, "version": ss.scope.version}, "spans": [span_json(s) for s in ss.spans],
                     "schemaUrl": ss.schema_url}
                    for ss in rs.scope_spans
                ],
                "schemaUrl": rs.schema_url,
            }
            for rs in req.resource_spans
        ]
    }


# --- spans from the real OpenTelemetry SDK ---------------------------------------------------


def sdk_request() -> tuple[ExportTraceServiceRequest, list]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "sre-agent", "afterfix.incident.id": "inc-7"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("afterfix.test", "1.0")
    with tracer.start_as_current_span("invoke_agent sre", kind=SpanKind.INTERNAL,
                                      attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "sre",
                                                  "afterfix.run.id": "run-42"}) as root:  # fmt: skip
        with tracer.start_as_current_span("execute_tool kubectl", kind=SpanKind.CLIENT,
                                          attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "kubectl",
                                                      "gen_ai.tool.call.id": "call-1", "retries": 2, "ok": True,
                                                      "score": 0.75, "ns": ["payments", "checkout"]}) as tool:  # fmt: skip
            tool.add_event("afterfix.option", {"afterfix.option.id": "scale", "afterfix.option.score": 0.9})
            tool.add_event("afterfix.option", {"afterfix.option.id": "restart", "afterfix.option.verdict": "rejected"})
            tool.set_status(Status(StatusCode.ERROR, "kubectl timed out"))
        with tracer.start_as_current_span("chat", kind=SpanKind.CLIENT, links=[Link(tool.get_span_context(), {"why": "retry"})],
                                          attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "m-1",
                                                      "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 30}):  # fmt: skip
            pass
        root.set_status(Status(StatusCode.OK))
    provider.shutdown()
    spans = exporter.get_finished_spans()
    return encode_spans(spans), spans


def proto_request() -> ExportTraceServiceRequest:
    """Every AnyValue variant, nested, which the SDK's attribute API cannot express."""
    nested = AnyValue(kvlist_value=KeyValueList(values=[
        KeyValue(key="list", value=AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=-5), AnyValue(string_value="x"),
                                                                            AnyValue(array_value=ArrayValue(values=[AnyValue(bool_value=False)]))]))),
        KeyValue(key="raw", value=AnyValue(bytes_value=b"\x00\xffhello")),
        KeyValue(key="empty", value=AnyValue()),
    ]))  # fmt: skip
    span = trace_pb2.Span(
        trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9)), parent_span_id=bytes(range(9, 17)), name="decide",
        kind=trace_pb2.Span.SPAN_KIND_SERVER, start_time_unix_nano=1_795_747_620_123_456_789,
        end_time_unix_nano=1_795_747_620_223_456_789,
        attributes=[KeyValue(key="n", value=nested), KeyValue(key="big", value=AnyValue(int_value=-(2**63))),
                    KeyValue(key="inf", value=AnyValue(double_value=math.inf)), KeyValue(key="afterfix.span.kind", value=AnyValue(string_value="decision")),
                    KeyValue(key="unicode", value=AnyValue(string_value="naïve \u2603 \"quoted\" \\ back\nline"))],
        status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_UNSET),
    )  # fmt: skip
    return ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=PbResource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="planner"))]),
        scope_spans=[trace_pb2.ScopeSpans(scope=InstrumentationScope(name="hand"), spans=[span])])])  # fmt: skip


@pytest.mark.parametrize("make", [lambda: sdk_request()[0], proto_request], ids=["otel-sdk", "every-anyvalue"])
def test_protobuf_and_json_give_identical_rows(make):
    req = make()
    kw = {"source": "t", "ingested_at": AT}
    from_pb = otlp.decode_protobuf(req.SerializeToString(), **kw)
    from_json = otlp.decode_json_body(orjson.dumps(request_json(req)), **kw)
    line = otlp.decode_json_lines(orjson.dumps(request_json(req)) + b"\n", **kw)
    assert from_pb.refused == from_json.refused == line.refused == []
    assert from_pb.spans.schema == schema.SPAN_SCHEMA and from_pb.events.schema == schema.EVENT_SCHEMA
    assert from_pb.spans.num_rows == sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
    assert from_pb.spans.equals(from_json.spans) and from_pb.spans.equals(line.spans)
    assert from_pb.events.equals(from_json.events) and from_pb.events.equals(line.events)


def test_sdk_spans_become_the_expected_rows():
    req, sdk_spans = sdk_request()
    d = otlp.decode_protobuf(req.SerializeToString(), source="otlp-http", ingested_at=AT)
    rows = {r["name"]: r for r in d.spans.to_pylist()}
    by_name = {s.name: s for s in sdk_spans}
    for name, s in by_name.items():
        r = rows[name]
        assert r["trace_id"] == format(s.context.trace_id, "032x")
        assert r["span_id"] == format(s.context.span_id, "016x")
        assert r["parent_span_id"] == (format(s.parent.span_id, "016x") if s.parent else None)
        assert r["start_time"] == EPOCH + timedelta(microseconds=s.start_time // 1000)
        assert r["duration_ms"] == pytest.approx((s.end_time - s.start_time) / 1e6)
        assert r["service_name"] == "sre-agent" and r["scope_name"] == "afterfix.test"
        assert r["incident_id"] == "inc-7"  # from the resource
        assert r["source"] == "otlp-http" and r["ingested_at"] == AT
        assert orjson.loads(r["attributes"]) == {k: list(v) if isinstance(v, tuple) else v for k, v in s.attributes.items()}
    tool = rows["execute_tool kubectl"]
    assert (tool["kind"], tool["status_code"], tool["status_message"]) == ("CLIENT", "ERROR", "kubectl timed out")
    assert (tool["operation"], tool["tool_name"], tool["tool_call_id"]) == ("execute_tool", "kubectl", "call-1")
    assert orjson.loads(tool["attributes"])["ns"] == ["payments", "checkout"]
    chat = rows["chat"]
    assert (chat["model"], chat["input_tokens"], chat["output_tokens"]) == ("m-1", 120, 30)
    assert orjson.loads(chat["links"]) == [{"trace_id": tool["trace_id"], "span_id": tool["span_id"], "attributes": {"why": "retry"}}]
    assert rows["invoke_agent sre"]["status_code"] == "OK" and rows["invoke_agent sre"]["agent_name"] == "sre"
    # a span without any run key belongs to the run named by its trace id
    assert rows["invoke_agent sre"]["run_id"] == "run-42" and chat["run_id"] == chat["trace_id"]
    events = d.events.to_pylist()
    assert [(e["span_id"], e["seq"], e["name"]) for e in events] == [(tool["span_id"], 0, "afterfix.option"),
                                                                     (tool["span_id"], 1, "afterfix.option")]
    assert orjson.loads(events[1]["attributes"]) == {"afterfix.option.id": "restart", "afterfix.option.verdict": "rejected"}


def test_every_anyvalue_variant_maps_to_json():
    d = otlp.decode_protobuf(proto_request().SerializeToString())
    (row,) = d.spans.to_pylist()
    attrs = orjson.loads(row["attributes"])
    assert attrs["n"] == {"list": [-5, "x", [False]], "raw": base64.b64encode(b"\x00\xffhello").decode(), "empty": None}
    assert attrs["big"] == -(2**63) and attrs["inf"] is None  # JSON has no infinity
    assert attrs["unicode"] == "naïve \u2603 \"quoted\" \\ back\nline"
    assert row["start_time"] == datetime(2026, 11, 27, 2, 47, 0, 123456)  # truncated to microseconds
    assert row["kind"] == "SERVER" and row["status_code"] == "UNSET" and row["status_message"] is None
    assert row["afterfix_kind"] == "decision" and row["service_name"] == "planner"


def test_collector_file_exporter_sample():
    d = otlp.decode_path(DATA / "collector_file_exporter.jsonl", ingested_at=AT)
    assert d.refused == []
    assert d.spans.num_rows == 4 and d.events.num_rows == 1
    rows = {r["name"]: r for r in d.spans.to_pylist()}
    assert rows["GET /healthz"]["source"] == str(DATA / "collector_file_exporter.jsonl")
    assert rows["GET /healthz"]["kind"] == "SERVER" and rows["GET /healthz"]["service_name"] == "frontend"
    assert rows["execute_tool kubectl_scale"]["tool_name"] == "kubectl_scale"
    assert rows["execute_tool kubectl_scale"]["parent_span_id"] == rows["invoke_agent sre-agent"]["span_id"]


def frame(msg: bytes) -> bytes:
    return len(msg).to_bytes(4, "big") + msg


def test_protobuf_file_framing(tmp_path):
    req1, req2 = sdk_request()[0].SerializeToString(), proto_request().SerializeToString()
    framed = frame(req1) + frame(b"\xff\xff garbage") + frame(req2)
    d, used = otlp.decode_protobuf_file(framed, source="f.pb", first_byte=100)
    assert used == len(framed)
    assert d.spans.num_rows == 4
    (bad,) = d.refused
    assert bad.location == f"frame 2 (byte {100 + 4 + len(req1)})" and "not an OTLP ExportTraceServiceRequest" in bad.reason

    # a frame still being written: stop before it, so a tailer resumes there
    partial = frame(req1) + frame(req2)[:-3]
    d, used = otlp.decode_protobuf_file(partial, source="f.pb")
    assert (d.spans.num_rows, used, d.refused) == (3, 4 + len(req1), [])
    d, used = otlp.decode_protobuf_file(frame(req1)[:10], source="f.pb")
    assert (d.spans.num_rows, used) == (0, 0)

    # decode_path reports the cut-off tail of a finished file
    p = tmp_path / "cut.binpb"
    p.write_bytes(partial)
    d = otlp.decode_path(p)
    assert d.spans.num_rows == 3 and d.refused[-1].location == f"byte {4 + len(req1)}" and "ends inside a frame" in d.refused[-1].reason


def test_protobuf_file_with_one_unframed_message(tmp_path):
    p = tmp_path / "one.pb"
    p.write_bytes(sdk_request()[0].SerializeToString())
    d = otlp.decode_path(p)
    assert d.spans.num_rows == 3 and d.refused == []
    d, used = otlp.decode_protobuf_file(b"\x0a\x05garbage-not-protobuf", source="g.pb")
    assert used == 22 and d.spans.num_rows == 0 and "neither length-prefixed frames nor one OTLP protobuf message" in d.refused[0].reason


def test_oversized_frame_stops_reading():
    d, used = otlp.decode_protobuf_file(frame(b"x" * 50) + frame(b"y"), source="f.pb", limits=otlp.Limits(max_body_bytes=40))
    assert used == 59 and "over the limit of 40" in d.refused[0].reason and d.refused[0].location == "frame 1 (byte 0)"


@pytest.mark.parametrize(
    ("decode", "body", "status", "message"),
    [
        (otlp.decode_protobuf, b"\xff\xff\xff\xff", 400, "request 3: not an OTLP ExportTraceServiceRequest"),
        (otlp.decode_protobuf, proto_request().SerializeToString()[:-7], 400, "request 3: not an OTLP"),
        (otlp.decode_protobuf, b"\x0a" * 2000, 413, "over the limit of 1000"),
        (otlp.decode_json_body, b"{not json", 400, "request 3: the body is not valid JSON"),
        (otlp.decode_json_body, b"\xff{}", 400, "invalid UTF-8 at byte 0"),
        (otlp.decode_json_body, b"[1, 2]", 400, "not an OTLP/JSON object"),
        (otlp.decode_json_body, b'{"resourceSpans": 5}', 400, "resourceSpans is a number, not a list"),
        (otlp.decode_json_body, b'{"resourceLogs": []}', 400, "only traces are read"),
        (otlp.decode_json_body, b" " * 2000, 413, "over the limit of 1000"),
    ],
)
def test_bodies_that_cannot_be_read_raise(decode, body, status, message):
    with pytest.raises(DecodeError) as err:
        decode(body, request=3, limits=otlp.Limits(max_body_bytes=1000))
    assert err.value.status == status and message in str(err.value)


def test_empty_inputs():
    for d in (otlp.decode_json_lines(b"\n \n\r\n", source="e"), otlp.decode_json_body(b"{}"),
              otlp.decode_protobuf(b""), otlp.decode_protobuf_file(b"", source="e")[0]):  # fmt: skip
        assert d.spans.num_rows == d.events.num_rows == 0 and d.refused == [] and d.spans.schema == schema.SPAN_SCHEMA


def test_decode_path_refuses_unknown_suffix(tmp_path):
    p = tmp_path / "trace.txt"
    p.write_text("{}")
    with pytest.raises(DecodeError, match=r"trace\.txt.*\.jsonl"):
        otlp.decode_path(p)


def test_concat_and_quarantine_table():
    a = otlp.decode_json_lines(b'{"resourceSpans": 1}\n', source="a.jsonl", first_line=41)
    b = otlp.decode_protobuf(sdk_request()[0].SerializeToString())
    both = otlp.Decoded.concat([a, b])
    assert both.spans.num_rows == 3 and [r.location for r in both.refused] == ["line 41"]
    q = both.quarantine_table(received_at=datetime(2026, 11, 27, 7, 0, tzinfo=timezone.utc))
    assert q.schema == schema.QUARANTINE_SCHEMA
    assert q.to_pylist() == [{"received_at": datetime(2026, 11, 27, 7, 0), "source": "a.jsonl", "location": "line 41",
                              "reason": "resourceSpans is a number, not a list", "record": '{"resourceSpans": 1}'}]  # fmt: skip
    empty = otlp.Decoded.concat([])
    assert empty.spans.num_rows == 0 and empty.quarantine_table().num_rows == 0


def test_decoded_rows_go_into_the_store(store):
    d = otlp.decode_protobuf(sdk_request()[0].SerializeToString())
    bad = otlp.decode_json_lines(b"oops\n", source="x.jsonl")
    store.append(spans=d.spans, events=d.events, quarantine=bad.quarantine_table())
    assert store.arrow("SELECT count(*) AS n FROM spans")["n"].to_pylist() == [3]
    assert store.arrow("SELECT count(*) AS n FROM events")["n"].to_pylist() == [2]
    assert store.arrow("SELECT location FROM quarantine")["location"].to_pylist() == ["line 1"]


def one_span_line(**over) -> bytes:
    sp = {"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7", "name": "s",
          "startTimeUnixNano": "1795747620000000000", "endTimeUnixNano": "1795747620000001000"}  # fmt: skip
    sp.update(over)
    return orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [sp]}]}]})


@pytest.mark.parametrize(
    ("over", "column", "expected"),
    [
        ({"traceId": "4BF92F3577B34DA6A3CE929D0E0E4736"}, "trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ({"parentSpanId": "00F067AA0BA902B8"}, "parent_span_id", "00f067aa0ba902b8"),
        ({"startTimeUnixNano": 1795747620000000000}, "start_time", datetime(2026, 11, 27, 2, 47)),
        ({"endTimeUnixNano": 1795747620002000000}, "duration_ms", 2.0),
        ({"kind": "SPAN_KIND_PRODUCER"}, "kind", "PRODUCER"),
        ({"kind": 5}, "kind", "CONSUMER"),
        ({"status": {"code": "STATUS_CODE_ERROR", "message": ""}}, "status_code", "ERROR"),
        ({"attributes": [{"key": "n", "value": {"intValue": 7}}, {"key": "d", "value": {"doubleValue": 2}},
                         {"key": "nan", "value": {"doubleValue": "NaN"}}, {"key": "neg", "value": {"intValue": "-3"}},
                         {"key": "none"}]},
         "attributes", '{"n":7,"d":2.0,"nan":null,"neg":-3,"none":null}'),
    ],
)
def test_lenient_but_lossless_json(over, column, expected):
    """What proto3 JSON parsers accept besides the canonical OTLP/JSON form decodes to the same rows."""
    d = otlp.decode_json_lines(one_span_line(**over), source="t")
    assert d.refused == []
    assert d.spans.column(column).to_pylist() == [expected]


def test_pre_1_0_instrumentation_library_spans():
    line = orjson.loads(one_span_line())
    rs = line["resourceSpans"][0]
    rs["instrumentationLibrarySpans"] = [{"instrumentationLibrary": {"name": "old-lib"}, "spans": rs.pop("scopeSpans")[0]["spans"]}]
    d = otlp.decode_json_lines(orjson.dumps(line), source="t")
    assert d.spans.column("scope_name").to_pylist() == ["old-lib"]


def test_byte_order_mark_at_file_start_is_ignored():
    d = otlp.decode_json_lines(b"\xef\xbb\xbf" + one_span_line() + b"\r\n" + one_span_line(spanId="00f067aa0ba902b8"), source="t")
    assert d.refused == [] and d.spans.num_rows == 2
