"""Bad input is refused with its place and a reason that names the field and the fix; everything
around it still decodes, and nothing partial is ever stored."""

from __future__ import annotations

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2

from afterfix.ingest import otlp
from afterfix.ingest.otlp import Limits

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
T0 = 1_795_747_620_000_000_000
SPAN = "line 2, resourceSpans[0].scopeSpans[0].spans[0]"


def span(n: int) -> dict:
    return {
        "traceId": TRACE, "spanId": f"{n:016x}", "parentSpanId": f"{1:016x}" if n > 1 else "", "name": f"span {n}", "kind": 1,
        "startTimeUnixNano": str(T0 + n), "endTimeUnixNano": str(T0 + n + 500_000_000),
        "attributes": [{"key": "afterfix.run.id", "value": {"stringValue": "run-1"}}],
        "events": [{"timeUnixNano": str(T0 + n + 1000), "name": f"event of {n}"}],
        "status": {"code": 0},
    }  # fmt: skip


def line(*spans: dict, rs: dict | None = None) -> bytes:
    rs = rs if rs is not None else {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "agent"}}]},
                                     "scopeSpans": [{"scope": {"name": "s"}, "spans": list(spans)}]}  # fmt: skip
    return orjson.dumps({"resourceSpans": [rs]})


def kv(key: str, value: dict) -> dict:
    return {"key": key, "value": value}


def nest(levels: int) -> dict:
    v: dict = {"stringValue": "leaf"}
    for _ in range(levels):
        v = {"arrayValue": {"values": [v]}}
    return v


def with_(field: str, value):
    """A mutation of span 2: set `field` (dotted for nested, None deletes it)."""

    def mutate(sp: dict) -> None:
        *path, last = field.split(".")
        obj = sp
        for p in path:
            obj = obj[int(p)] if p.isdigit() else obj[p]
        if value is None:
            del obj[last]
        else:
            obj[last] = value

    return mutate


SMALL = Limits(max_attribute_bytes=64, max_depth=2, max_attributes=3)

# (mutation of span 2, limits, reason substring); span 3 in the same line must still be stored
SPAN_CASES = {
    "traceId-short": (with_("traceId", "abc"), None, 'traceId "abc" is not 32 hex characters'),
    "traceId-base64": (with_("traceId", "S/kvNXezTaajzpKdDg5HNg=="), None, "(OTLP/JSON ids are hex, not base64)"),
    "traceId-not-hex": (with_("traceId", "g" * 32), None, "is not 32 hex characters"),
    "traceId-zeros": (with_("traceId", "0" * 32), None, "traceId is all zeros"),
    "traceId-missing": (with_("traceId", None), None, "traceId is missing; it must be 32 hex characters"),
    "traceId-number": (with_("traceId", 5), None, "traceId 5 is not 32 hex characters"),
    "spanId-xyz": (with_("spanId", "xyz"), None, 'spanId "xyz" is not 16 hex characters'),
    "spanId-zeros": (with_("spanId", "0" * 16), None, "spanId is all zeros"),
    "spanId-missing": (with_("spanId", None), None, "spanId is missing"),
    "parentSpanId-short": (with_("parentSpanId", "12"), None, 'parentSpanId "12" is not 16 hex characters'),
    "parentSpanId-zeros": (with_("parentSpanId", "0" * 16), None, "parentSpanId is all zeros"),
    "name-missing": (with_("name", None), None, "name is missing; every span needs a non-empty string name"),
    "name-number": (with_("name", 7), None, "name is 7"),
    "name-empty": (with_("name", ""), None, 'name is ""'),
    "kind-9": (with_("kind", 9), None, "kind is 9, not a SpanKind (an integer 0..5)"),
    "kind-word": (with_("kind", "SERVER"), None, 'kind is "SERVER", not a SpanKind'),
    "start-missing": (with_("startTimeUnixNano", None), None, "startTimeUnixNano is missing or 0"),
    "start-not-integer": (with_("startTimeUnixNano", "12a"), None, 'startTimeUnixNano is "12a", not an unsigned 64-bit integer'),
    "start-float": (with_("startTimeUnixNano", 1.7e18), None, "startTimeUnixNano is 1.7e+18, not an unsigned 64-bit integer"),
    "start-negative": (with_("startTimeUnixNano", "-5"), None, "not an unsigned 64-bit integer"),
    "start-over-64-bits": (with_("startTimeUnixNano", "9" * 21), None, "not an unsigned 64-bit integer"),
    "end-missing": (with_("endTimeUnixNano", None), None, "endTimeUnixNano is missing or 0; only ended spans"),
    "end-before-start": (with_("endTimeUnixNano", str(T0 - 1)), None, f"endTimeUnixNano {T0 - 1} is before startTimeUnixNano"),
    "status-not-object": (with_("status", "ERROR"), None, "status is a string, not an object"),
    "status-code-7": (with_("status.code", 7), None, "status.code is 7, not a StatusCode"),
    "status-message-number": (with_("status.message", 3), None, "status.message is a number, not a string"),
    "attributes-not-list": (with_("attributes", {"a": 1}), None, "attributes is an object, not a list"),
    "attribute-without-key": (with_("attributes", [kv("a", {"stringValue": "x"}), {"value": {"stringValue": "x"}}]), None,
                              'attributes[1] is {"value":{"stringValue":"x"}}; each attribute must be {"key": string'),
    "attribute-key-number": (with_("attributes", [{"key": 1, "value": {}}]), None, "attributes[0] is"),
    "stringValue-number": (with_("attributes", [kv("x", {"stringValue": 5})]), None, 'attributes["x"].stringValue is a number, not a string'),
    "intValue-word": (with_("attributes", [kv("x", {"intValue": "abc"})]), None, 'attributes["x"].intValue is "abc", not a 64-bit integer'),
    "intValue-over-64-bits": (with_("attributes", [kv("x", {"intValue": str(2**63)})]), None, "not a 64-bit integer"),
    "boolValue-text": (with_("attributes", [kv("x", {"boolValue": "true"})]), None, 'attributes["x"].boolValue is "true", not true or false'),
    "doubleValue-text": (with_("attributes", [kv("x", {"doubleValue": "x"})]), None, 'attributes["x"].doubleValue is "x", not a number'),
    "anyvalue-not-object": (with_("attributes", [kv("x", "plain")]), None, 'attributes["x"] is "plain", not an AnyValue object'),
    "arrayValue-not-values": (with_("attributes", [kv("x", {"arrayValue": 5})]), None, 'attributes["x"].arrayValue is 5, not {"values": [...]}'),
    "kvlist-entry-without-key": (with_("attributes", [kv("x", {"kvlistValue": {"values": [{"value": {}}]}})]), None,
                                 'attributes["x"].kvlistValue.values[0] is {"value":{}}, not {"key": string'),
    "value-over-limit": (with_("attributes", [kv("x", {"stringValue": "y" * 65})]), SMALL,
                         'attributes["x"] is 65 bytes, over the limit of 64 (Limits.max_attribute_bytes)'),
    "value-over-limit-in-utf8": (with_("attributes", [kv("x", {"stringValue": "€" * 30})]), SMALL, 'attributes["x"] is 90 bytes'),
    "array-over-limit": (with_("attributes", [kv("x", {"arrayValue": {"values": [{"stringValue": "0123456789"}] * 8}})]), SMALL,
                         'attributes["x"] is 105 bytes, over the limit of 64'),
    "nested-too-deep": (with_("attributes", [kv("x", nest(3))]), SMALL,
                        'attributes["x"][0][0] nests arrayValue/kvlistValue more than 2 levels deep (Limits.max_depth)'),
    "too-many-attributes": (with_("attributes", [kv(f"k{i}", {"boolValue": True}) for i in range(4)]), SMALL,
                            "attributes has 4 entries, over the limit of 3 (Limits.max_attributes)"),
    "events-not-list": (with_("events", {"a": 1}), None, "events is an object, not a list"),
    "event-not-object": (with_("events", ["boom"]), None, "events[0] is a string, not an object"),
    "event-time-missing": (with_("events.0.timeUnixNano", None), None, "events[0].timeUnixNano is missing or 0"),
    "event-name-number": (with_("events.0.name", 4), None, "events[0].name is a number, not a string"),
    "event-too-many-attributes": (with_("events.0.attributes", [kv(f"k{i}", {}) for i in range(4)]), SMALL,
                                  "events[0].attributes has 4 entries, over the limit of 3"),
    "links-not-list": (with_("links", "x"), None, "links is a string, not a list"),
    "link-traceId": (with_("links", [{"traceId": "zz", "spanId": "1" * 16}]), None, 'links[0].traceId "zz" is not 32 hex characters'),
    "link-attributes": (with_("links", [{"traceId": TRACE, "spanId": "1" * 16, "attributes": 3}]), None,
                        "links[0].attributes is a number, not a list"),
}


def decode(data: bytes, limits: Limits | None):
    return otlp.decode_json_lines(data, source="inbox/run-42.jsonl", limits=limits or Limits())


def stored(d) -> tuple[list[str], list[str]]:
    return sorted(d.spans.column("name").to_pylist()), sorted(d.events.column("name").to_pylist())


@pytest.mark.parametrize(("mutate", "limits", "reason"), SPAN_CASES.values(), ids=SPAN_CASES.keys())
def test_bad_span_is_refused_alone(mutate, limits, reason):
    bad = span(2)
    mutate(bad)
    data = b"\n".join([line(span(1)), line(bad, span(3)), line(span(4))]) + b"\n"
    d = decode(data, limits)
    assert [(r.source, r.location) for r in d.refused] == [("inbox/run-42.jsonl", SPAN)]
    assert reason in d.refused[0].reason, d.refused[0].reason
    assert orjson.loads(d.refused[0].record) == bad  # the refused span itself, for the quarantine
    # the others are stored whole; of span 2 nothing, not even its event
    assert stored(d) == (["span 1", "span 3", "span 4"], ["event of 1", "event of 3", "event of 4"])


def resource(**over) -> dict:
    rs = orjson.loads(line(span(2), span(3)))["resourceSpans"][0]
    rs.update(over)
    return rs


# (line 2, limits, location, reason substring); nothing of line 2 may be stored
LINE_CASES = {
    "malformed-json": (b'{"resourceSpans": [', None, "line 2", "the line is not valid JSON"),
    "invalid-utf8": (line(span(2)).replace(b"span 2", b"span \xff2"), None, "line 2", "invalid UTF-8 at byte"),
    "json-array": (b"[1, 2]", None, "line 2", 'the record is a list, not an OTLP/JSON object {"resourceSpans": [...]}'),
    "json-string": (b'"hello"', None, "line 2", "the record is a string"),
    "resourceSpans-not-list": (b'{"resourceSpans": {"a": 1}}', None, "line 2", "resourceSpans is an object, not a list"),
    "metrics-line": (b'{"resourceMetrics": []}', None, "line 2", "has resourceMetrics, not resourceSpans (only traces are read)"),
    "snake-case": (b'{"resource_spans": []}', None, "line 2", "keys are lowerCamelCase in OTLP/JSON"),
    "no-resourceSpans": (b'{"foo": 1}', None, "line 2", "the record has no resourceSpans (keys: foo)"),
    "line-over-limit": (line(span(2)) + b" " * 3000, Limits(max_body_bytes=2500), "line 2",
                        "over the limit of 2500 (Limits.max_body_bytes)"),
    "resourceSpans-entry-not-object": (orjson.dumps({"resourceSpans": [5]}), None, "line 2, resourceSpans[0]",
                                       "resourceSpans[0] is a number, not an object"),
    "resource-not-object": (line(rs=resource(resource=[1])), None, "line 2, resourceSpans[0]", "resource is a list, not an object"),
    "resource-attribute-bad": (line(rs=resource(resource={"attributes": [kv("a", {"intValue": "x"})]})), None,
                               "line 2, resourceSpans[0]", 'resource.attributes["a"].intValue is "x", not a 64-bit integer'),
    "scopeSpans-not-list": (line(rs=resource(scopeSpans="x")), None, "line 2, resourceSpans[0]", "scopeSpans is a string, not a list"),
    "spans-not-list": (line(rs=resource(scopeSpans=[{"spans": {"a": 1}}])), None, "line 2, resourceSpans[0].scopeSpans[0]",
                       "spans is an object, not a list"),
    "scope-not-object": (line(rs=resource(scopeSpans=[{"scope": "lib", "spans": [span(2)]}])), None,
                         "line 2, resourceSpans[0].scopeSpans[0]", "scope is a string, not an object"),
    "scope-name-number": (line(rs=resource(scopeSpans=[{"scope": {"name": 5}, "spans": [span(2)]}])), None,
                          "line 2, resourceSpans[0].scopeSpans[0]", "scope.name is a number, not a string"),
}


@pytest.mark.parametrize(("bad_line", "limits", "location", "reason"), LINE_CASES.values(), ids=LINE_CASES.keys())
def test_bad_line_or_resource_is_refused_whole(bad_line, limits, location, reason):
    data = b"\n".join([line(span(1)), bad_line, line(span(4))])
    d = decode(data, limits)
    assert [r.location for r in d.refused] == [location]
    assert reason in d.refused[0].reason, d.refused[0].reason
    assert d.refused[0].record
    assert stored(d) == (["span 1", "span 4"], ["event of 1", "event of 4"])


def test_line_numbers_count_from_first_line():
    d = otlp.decode_json_lines(b"\n\n{bad\n", source="f", first_line=17)
    assert [r.location for r in d.refused] == ["line 19"]


def test_refused_record_is_truncated_to_64_kib():
    huge = b'{"resourceSpans": [' + b'"x",' * 100_000
    d = otlp.decode_json_lines(huge, source="f")
    rec = d.refused[0].record
    assert len(rec.encode()) <= 64 * 1024 and rec.endswith(f"[truncated from {len(huge)} bytes]")


def test_orphan_spans_are_kept():
    """A parent that has not arrived (yet) is no reason to refuse: the store lists orphans."""
    orphan = span(5)
    orphan["parentSpanId"] = "feedfacefeedface"
    d = otlp.decode_json_lines(line(orphan), source="f")
    assert d.refused == [] and d.spans.column("parent_span_id").to_pylist() == ["feedfacefeedface"]


def test_span_level_refusals_in_a_json_body():
    bad = span(2)
    bad["spanId"] = "xyz"
    d = otlp.decode_json_body(line(bad, span(3)), request=12)
    assert [(r.source, r.location) for r in d.refused] == [("otlp-http", "request 12, resourceSpans[0].scopeSpans[0].spans[0]")]
    assert stored(d)[0] == ["span 3"]


# --- protobuf: the same checks, protobuf field names --------------------------------------------


def pb_span(n: int) -> trace_pb2.Span:
    return trace_pb2.Span(
        trace_id=bytes.fromhex(TRACE), span_id=n.to_bytes(8, "big"), name=f"span {n}", kind=1,
        start_time_unix_nano=T0 + n, end_time_unix_nano=T0 + n + 500, attributes=[KeyValue(key="a", value=AnyValue(int_value=1))],
        events=[trace_pb2.Span.Event(time_unix_nano=T0 + n + 1, name=f"event of {n}")],
    )  # fmt: skip


def pb_set(**fields):
    def mutate(sp: trace_pb2.Span) -> None:
        for k, v in fields.items():
            if k == "attributes":
                del sp.attributes[:]
                sp.attributes.extend(v)
            elif k == "event_time":
                sp.events[0].time_unix_nano = v
            elif k == "links":
                sp.links.extend(v)
            elif k == "status_code":
                sp.status.code = v
            else:
                setattr(sp, k, v)

    return mutate


def deep_pb(levels: int) -> AnyValue:
    v = AnyValue(string_value="leaf")
    for _ in range(levels):
        v = AnyValue(array_value=ArrayValue(values=[v]))
    return v


PB_CASES = {
    "trace_id-12-bytes": (pb_set(trace_id=b"\x01" * 12), "trace_id is 12 bytes, not 16"),
    "trace_id-zeros": (pb_set(trace_id=bytes(16)), "trace_id is all zeros"),
    "trace_id-missing": (pb_set(trace_id=b""), "trace_id is missing (empty)"),
    "span_id-4-bytes": (pb_set(span_id=b"\x01" * 4), "span_id is 4 bytes, not 8"),
    "parent_span_id-zeros": (pb_set(parent_span_id=bytes(8)), "parent_span_id is all zeros"),
    "name-empty": (pb_set(name=""), "name is empty"),
    "kind-9": (pb_set(kind=9), "kind is 9, not a SpanKind"),
    "start-0": (pb_set(start_time_unix_nano=0), "start_time_unix_nano is 0"),
    "end-0": (pb_set(end_time_unix_nano=0), "end_time_unix_nano is 0"),
    "end-before-start": (pb_set(end_time_unix_nano=T0 - 1), "is before start_time_unix_nano"),
    "status-code-5": (pb_set(status_code=5), "status.code is 5, not a StatusCode"),
    "value-over-limit": (pb_set(attributes=[KeyValue(key="x", value=AnyValue(string_value="y" * 65))]),
                         'attributes["x"] is 65 bytes, over the limit of 64'),
    "bytes-over-limit": (pb_set(attributes=[KeyValue(key="x", value=AnyValue(bytes_value=b"y" * 60))]), 'attributes["x"] is 80 bytes'),
    "nested-too-deep": (pb_set(attributes=[KeyValue(key="x", value=deep_pb(3))]), "more than 2 levels deep"),
    "too-many-attributes": (pb_set(attributes=[KeyValue(key=f"k{i}") for i in range(4)]), "attributes has 4 entries"),
    "event-time-0": (pb_set(event_time=0), "events[0].time_unix_nano is 0"),
    "link-span_id": (pb_set(links=[trace_pb2.Span.Link(trace_id=bytes.fromhex(TRACE), span_id=b"\x01")]),
                     "links[0].span_id is 1 bytes, not 8"),
}


@pytest.mark.parametrize(("mutate", "reason"), PB_CASES.values(), ids=PB_CASES.keys())
def test_bad_protobuf_span_is_refused_alone(mutate, reason):
    bad = pb_span(2)
    mutate(bad)
    req = ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=[bad, pb_span(3)])])])
    d = otlp.decode_protobuf(req.SerializeToString(), request=7, limits=SMALL)
    assert [(r.source, r.location) for r in d.refused] == [("otlp-http", "request 7, resource_spans[0].scope_spans[0].spans[0]")]
    assert reason in d.refused[0].reason, d.refused[0].reason
    assert 'name: "event of 2"' in d.refused[0].record  # the refused span, as protobuf text
    assert stored(d) == (["span 3"], ["event of 3"])


def test_bad_protobuf_resource_refuses_its_spans():
    req = ExportTraceServiceRequest(resource_spans=[
        trace_pb2.ResourceSpans(resource={"attributes": [KeyValue(key=f"k{i}") for i in range(4)]},
                                scope_spans=[trace_pb2.ScopeSpans(spans=[pb_span(2)])]),
        trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=[pb_span(3)])]),
    ])  # fmt: skip
    d = otlp.decode_protobuf(req.SerializeToString(), limits=SMALL)
    assert [r.location for r in d.refused] == ["resource_spans[0]"]
    assert "resource.attributes has 4 entries" in d.refused[0].reason and stored(d)[0] == ["span 3"]

