"""OTLP/JSON's two paths (afterfix.ingest.otlp_json): the fast typed one stores exactly what the
careful one stores, takes every well-formed line, and leaves everything unusual to the careful
one, whose refusals stay as they were."""

from __future__ import annotations

import re
from datetime import datetime
import sys
from pathlib import Path

import orjson
import pytest

from afterfix.ingest import otlp, otlp_json
from afterfix.ingest.otlp import Limits

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import synth  # noqa: E402

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
T0 = 1_795_747_620_000_000_000
AT = datetime(2026, 11, 27, 6, 0, 0)
FILES = sorted((ROOT / "traces" / "examples").glob("*.jsonl")) + [Path(__file__).parent / "data" / "collector_file_exporter.jsonl"]


def careful_only(monkeypatch) -> None:
    monkeypatch.setattr(otlp, "_native", None)  # the compiled walker is a fast path too
    monkeypatch.setattr(otlp, "_walk_fast", lambda text, rows, native=True: False)


def no_careful(monkeypatch) -> None:
    def refuse(*a, **kw):
        raise AssertionError("the careful path was used")

    monkeypatch.setattr(otlp_json, "walk", refuse)


def same(a, b) -> None:
    assert a.spans.equals(b.spans) and a.events.equals(b.events)
    assert a.refused == b.refused and a.redactions == b.redactions


def both(data: bytes, monkeypatch, **kw):
    kw["ingested_at"] = AT
    fast = otlp.decode_json_lines(data, source="t.jsonl", **kw)
    with monkeypatch.context() as m:
        careful_only(m)
        careful = otlp.decode_json_lines(data, source="t.jsonl", **kw)
    same(fast, careful)
    return fast


def span(**over) -> dict:
    sp = {
        "traceId": TRACE, "spanId": "00f067aa0ba902b7", "parentSpanId": "00f067aa0ba902b8", "name": "execute_tool kubectl",
        "kind": 3, "startTimeUnixNano": str(T0), "endTimeUnixNano": str(T0 + 2_000_000), "status": {"code": 2, "message": "timeout"},
        "attributes": [{"key": "gen_ai.tool.name", "value": {"stringValue": "kubectl"}},
                       {"key": "retries", "value": {"intValue": "2"}}, {"key": "ok", "value": {"boolValue": True}},
                       {"key": "score", "value": {"doubleValue": 0.5}}, {"key": "raw", "value": {"bytesValue": "AP8="}},
                       {"key": "ns", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "-1"}]}}},
                       {"key": "kv", "value": {"kvlistValue": {"values": [{"key": "x", "value": {"doubleValue": "Infinity"}},
                                                                          {"key": "e", "value": {}}]}}}],
        "events": [{"timeUnixNano": str(T0 + 1000), "name": "afterfix.option",
                    "attributes": [{"key": "afterfix.option.id", "value": {"stringValue": "scale"}}]}],
        "links": [{"traceId": TRACE, "spanId": "00f067aa0ba902b9", "attributes": [{"key": "why", "value": {"stringValue": "retry"}}]}],
        "traceState": "", "flags": 1, "droppedAttributesCount": 0,
    }  # fmt: skip
    sp.update(over)
    return {k: v for k, v in sp.items() if v is not ...}


def line(*spans: dict, **rs_over) -> bytes:
    rs = {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "agent"}}]},
          "scopeSpans": [{"scope": {"name": "s", "version": "1"}, "spans": list(spans)}], "schemaUrl": ""}  # fmt: skip
    rs.update(rs_over)
    text = orjson.dumps({"resourceSpans": [{k: v for k, v in rs.items() if v is not ...}]})
    return re.sub(rb'"BIG(\d+)"', rb"\1", text)  # numbers beyond what orjson writes


def big(n: int) -> str:
    return f"BIG{n}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_example_files_take_the_fast_path_with_the_same_rows(path, monkeypatch):
    data = path.read_bytes()
    with monkeypatch.context() as m:
        no_careful(m)
        fast = otlp.decode_json_lines(data, source=str(path), ingested_at=AT)
    with monkeypatch.context() as m:
        careful_only(m)
        careful = otlp.decode_json_lines(data, source=str(path), ingested_at=AT)
    assert fast.spans.num_rows > 0
    same(fast, careful)


def test_benchmark_spans_and_every_value_kind_take_the_fast_path(monkeypatch):
    data = b"\n".join([*synth.otlp_lines(120, spans_per_line=40), line(span())])
    with monkeypatch.context() as m:
        no_careful(m)
        fast = otlp.decode_json_lines(data, source="t.jsonl", ingested_at=AT)
    assert fast.refused == [] and fast.spans.num_rows == 121
    assert both(data, monkeypatch).spans.equals(fast.spans)


def test_secrets_are_redacted_alike():
    data = line(span(name="login password=hunter2", attributes=[{"key": "auth", "value": {"stringValue": "Bearer abcdefgh12345678"}}]),
                resource={"attributes": [{"key": "token", "value": {"stringValue": "token=s3cr3tvalue"}}]})  # fmt: skip
    d = otlp.decode_json_lines(data, source="t")
    assert d.redactions == 3 and "hunter2" not in d.spans.column("name")[0].as_py()
    assert "s3cr3tvalue" not in d.spans.column("resource_attributes")[0].as_py()


# Lines the fast path hands to the careful one, which stores them (each differs from canonical
# OTLP/JSON in one way); the rows must be those of the careful path.
UNUSUAL = {
    "uppercase-ids": line(span(traceId=TRACE.upper(), spanId="00F067AA0BA902B7")),
    "uppercase-link-id": line(span(links=[{"traceId": TRACE.upper(), "spanId": "00f067aa0ba902b9"}])),
    "number-times": line(span(startTimeUnixNano=T0, endTimeUnixNano=T0 + 5)),
    "long-time-strings": line(span(startTimeUnixNano="00" + str(T0))),
    "null-parent": line(span(parentSpanId=None)),
    "null-status": line(span(status=None)),
    "null-status-message": line(span(status={"code": 1, "message": None})),
    "enum-names": line(span(kind="SPAN_KIND_SERVER", status={"code": "STATUS_CODE_OK"})),
    "null-value": line(span(attributes=[{"key": "a", "value": None}, {"key": "b"}])),
    "int-value-number": line(span(attributes=[{"key": "a", "value": {"intValue": 7}}])),
    "int-value-big": line(span(attributes=[{"key": "a", "value": {"intValue": str(2**62)}}])),
    "array-as-list": line(span(attributes=[{"key": "a", "value": {"arrayValue": [{"stringValue": "x"}]}}])),
    "array-null-values": line(span(attributes=[{"key": "a", "value": {"arrayValue": {"values": None}}}])),
    "no-scope": line(span(), scopeSpans=[{"spans": [span()]}]),
    "null-scope": line(span(), scopeSpans=[{"scope": None, "spans": [span()]}]),
    "null-resource": line(span(), resource=None),
    "no-scopeSpans": line(scopeSpans=...),
    "instrumentation-library": line(scopeSpans=..., instrumentationLibrarySpans=[
        {"instrumentationLibrary": {"name": "old"}, "spans": [span()]}]),
    "unicode": line(span(name="naïve ☃ \"q\" \\ 😀", attributes=[{"key": "ключ", "value": {"stringValue": "значение"}}])),
    "empty-record": b"{}",
    "crlf": line(span()) + b"\r",
}


@pytest.mark.parametrize("data", UNUSUAL.values(), ids=UNUSUAL.keys())
def test_unusual_lines_store_what_the_careful_path_stores(data, monkeypatch):
    d = both(data + b"\n" + line(span(spanId="00f067aa0ba902c0")), monkeypatch)
    assert d.refused == []


# Lines the careful path refuses (in part or whole): the fast path must not store them.
BAD = {
    "zero-trace-id": line(span(traceId="0" * 32), span(spanId="00f067aa0ba902c0")),
    "zero-link-id": line(span(links=[{"traceId": TRACE, "spanId": "0" * 16}])),
    "null-trace-id": line(span(traceId=None)),
    "null-name": line(span(name=None)),
    "null-kind": line(span(kind=None)),
    "bool-kind": line(span(kind=True)),
    "float-kind": line(span(kind=1.0)),
    "kind-6": line(span(kind=6)),
    "time-float": line(span(startTimeUnixNano=1.7e18)),
    "time-over-64-bits": line(span(endTimeUnixNano=big(2**64))),
    "time-huge-number": line(span(endTimeUnixNano=big(10**30))),
    "end-before-start": line(span(endTimeUnixNano=str(T0 - 1))),
    "event-time-0": line(span(events=[{"timeUnixNano": "0"}])),
    "event-name-null": line(span(events=[{"timeUnixNano": str(T0), "name": None}])),
    "string-value-null": line(span(attributes=[{"key": "a", "value": {"stringValue": None}}])),
    "int-value-over-64-bits": line(span(attributes=[{"key": "a", "value": {"intValue": big(2**63)}}])),
    "int-value-huge-number": line(span(attributes=[{"key": "a", "value": {"intValue": big(10**30)}}])),
    "int-value-float": line(span(attributes=[{"key": "a", "value": {"intValue": 1.5}}])),
    "double-value-word": line(span(attributes=[{"key": "a", "value": {"doubleValue": "inf"}}])),
    "key-null": line(span(attributes=[{"key": None, "value": {"stringValue": "x"}}])),
    "status-code-3": line(span(status={"code": 3})),
    "scope-name-number": line(scopeSpans=[{"scope": {"name": 5}, "spans": [span()]}]),
    "invalid-utf8-in-unknown-field": line(span(traceState="x")).replace(b'"traceState":"x"', b'"traceState":"\xff"'),
    "lone-surrogate": line(span(name="\\ud800")).replace(b"\\\\ud800", b"\\ud800"),
    "deep-nesting": line(span(traceState=[])).replace(b'"traceState":[]', b'"traceState":' + b"[" * 5000 + b"]" * 5000),
    "resource-logs": b'{"resourceLogs": []}',
    "trailing-garbage": line(span()) + b" x",
}
SMALL = Limits(max_attribute_bytes=64, max_depth=1, max_attributes=3)
BAD_SMALL = {
    "string-over-limit": line(span(attributes=[{"key": "a", "value": {"stringValue": "€" * 30}}])),
    "array-over-limit": line(span(attributes=[{"key": "a", "value": {"arrayValue": {"values": [{"stringValue": "0123456789"}] * 8}}}])),
    "too-deep": line(span(attributes=[{"key": "a", "value": {"arrayValue": {"values": [{"arrayValue": {}}]}}}])),
    "too-many": line(span(attributes=[{"key": f"k{i}", "value": {}} for i in range(4)])),
    "too-many-in-event": line(span(events=[{"timeUnixNano": str(T0), "attributes": [{"key": f"k{i}"} for i in range(4)]}])),
}


@pytest.mark.parametrize(("data", "limits"), [(d, None) for d in BAD.values()] + [(d, SMALL) for d in BAD_SMALL.values()],
                         ids=[*BAD, *BAD_SMALL])  # fmt: skip
def test_bad_lines_are_refused_as_the_careful_path_refuses_them(data, limits, monkeypatch):
    good = line(span(spanId="00f067aa0ba902c1", attributes=[], events=[], links=[]))
    d = both(good + b"\n" + data + b"\n" + good, monkeypatch, limits=limits or Limits())
    assert len(d.refused) == 1 and d.refused[0].location.startswith("line 2")


def test_a_body_takes_the_fast_path_too(monkeypatch):
    no_careful(monkeypatch)
    d = otlp.decode_json_body(line(span(), span(spanId="00f067aa0ba902c0")))
    assert d.spans.num_rows == 2 and d.events.num_rows == 2


def test_nesting_deeper_than_the_compiled_walker_reads_is_left_to_python(monkeypatch):
    # Limits.max_depth may allow more than the compiled walker nests itself (64 levels, to keep
    # its C stack bounded): such a line goes the Python way, and is stored the same.
    value = {"stringValue": "x"}
    for _ in range(70):  # 3 JSON levels each: orjson writes at most 255
        value = {"arrayValue": {"values": [value]}}
    data = line(span(attributes=[{"key": "deep", "value": value}]))
    limits = Limits(max_depth=1000, max_attribute_bytes=10**6)
    rows = otlp.Rows("t", limits, None, None)
    assert otlp._native.walk(data, rows) is False
    stored = both(data, monkeypatch, limits=limits)
    assert stored.spans.num_rows == 1 and stored.refused == []


def test_attribute_lists_longer_than_the_compiled_walker_reads_are_left_to_python(monkeypatch):
    # The compiled walker finds a repeated key by comparing with every earlier one, so it reads
    # lists of up to 256 entries itself and leaves longer ones (allowed up to max_attributes).
    attrs = [{"key": f"k{i}", "value": {"intValue": str(i)}} for i in range(300)]
    data = line(span(attributes=attrs))
    assert otlp._native.walk(data, otlp.Rows("t", Limits(), None, None)) is False
    assert otlp._native.walk(line(span(attributes=attrs[:256])), otlp.Rows("t", Limits(), None, None)) is True
    stored = both(data, monkeypatch)
    assert stored.spans.num_rows == 1 and len(orjson.loads(stored.spans.column("attributes")[0].as_py())) == 300
