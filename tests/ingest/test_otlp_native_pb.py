"""afterfix.ingest._otlpjson.walk_protobuf, the compiled reader of OTLP protobuf requests: for every
request opentelemetry-proto (upb) parses, it either stores exactly the rows `otlp_proto.walk`
stores walking upb's message, or declines (returns False) and leaves the request to that walk.

Hypothesis writes the requests on the wire, by hand (`Wire`), so that field order, fields given
twice, unknown fields, wrong wire types, every AnyValue member and the checks of `_pb_span` are
all under its control; upb parses each one first and is the judge of what is valid, as in the
receiver. Two oracles compare, as for OTLP/JSON (test_otlp_native.py):

* end to end: `decode_protobuf` with the extension and without it (`otlp._native = None`)
  gives the same tables, refusals and redactions, under several redactors and limits;
* request by request, stronger: whenever `walk_protobuf(body, rows)` returns True, the walk
  over upb's message gives identical row tuples (types included), no refusal, and the same
  redaction count.

Real requests follow: every frame of the example protobuf file and every line of the example
OTLP/JSON files (as protobuf) must be read by the extension, alike; then the same, randomly
broken (seeded). The extension is compiled by `pip install -e .`; these tests fail without it.
"""

from __future__ import annotations

import base64
import math
import random
import struct
from collections import Counter

import orjson
import pytest
from google.protobuf import json_format
from google.protobuf.message import DecodeError as PbDecodeError
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from siblings import load_sibling

from afterfix.ingest import otlp, otlp_proto
from afterfix.ingest.otlp import DecodeError, Limits
from afterfix.ingest.redact import Redactor

_json = load_sibling(__file__, "test_otlp_native")
quick_shrinking = _json.quick_shrinking  # the fixture, used here too
native, exact, fresh_rows, python_rows = _json.native, _json.exact, _json.fresh_rows, _json.python_rows
AT, FUZZ, SMALL = _json.AT, _json.FUZZ, _json.SMALL
EXAMPLES = _json.ROOT / "traces" / "examples"
T0 = _json.T0

# --- the wire, written by hand ------------------------------------------------------------------

VARINT, I64, LEN, I32 = 0, 1, 2, 5


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 values take ten bytes, as protobuf writes them
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num: int, wt: int, value) -> bytes:
    """One field: `value` is an int (VARINT, I64, I32) or bytes/str (LEN)."""
    head = varint(num << 3 | wt)
    if wt == VARINT:
        return head + varint(value)
    if wt == I64:
        return head + struct.pack("<Q", value & ((1 << 64) - 1))
    if wt == I32:
        return head + struct.pack("<I", value & 0xFFFFFFFF)
    data = value.encode() if isinstance(value, str) else bytes(value)
    return head + varint(len(data)) + data


def double(num: int, x: float) -> bytes:
    return varint(num << 3 | I64) + struct.pack("<d", x)


# --- what is compared ---------------------------------------------------------------------------


def parsed(body: bytes) -> ExportTraceServiceRequest | None:
    """upb's reading of `body`, or None when upb refuses it (the receiver answers 400 then)."""
    try:
        return otlp._parse_request(body)
    except PbDecodeError:
        return None


def same_rows(body: bytes, limits: Limits = Limits(), redactor=otlp.DEFAULT) -> bool:
    """Oracle B on one request upb parses: if the extension takes it, the walk over upb's message
    gives identical rows. Returns whether the extension took it."""
    req = parsed(body)
    assert req is not None, "upb refuses this request: the extension never sees it"
    got = fresh_rows(limits, redactor)
    taken = native().walk_protobuf(body, got)
    assert taken is True or taken is False, f"walk_protobuf returned {taken!r}, not a bool"
    if taken:
        want = python_rows(limits, redactor)
        otlp_proto.walk(req, want, "")
        assert want.refused == [], f"the extension took a request the walk refuses parts of: {want.refused}"
        assert exact(got.spans) == exact(want.spans), "span rows differ"
        assert exact(got.events) == exact(want.events), "event rows differ"
        assert got.redactions == want.redactions, "redactions differ"
    return taken


def decode(body: bytes, *, with_native: bool, framed: bool = False, **kw):
    kw.setdefault("ingested_at", AT)
    with pytest.MonkeyPatch.context() as m:
        if with_native:
            native()
        else:
            m.setattr(otlp, "_native", None, raising=False)
        try:
            if framed:
                return otlp.decode_protobuf_file(body, source="t.pb", **kw)[0]
            return otlp.decode_protobuf(body, request=1, **kw)
        except DecodeError as e:
            return f"DecodeError: {e}"


def same_decoded(body: bytes, *, framed: bool = False, **kw) -> None:
    """Oracle A: the request (or framed file) decodes alike with the extension and without it."""
    got, want = decode(body, with_native=True, framed=framed, **kw), decode(body, with_native=False, framed=framed, **kw)
    if isinstance(want, str) or isinstance(got, str):
        assert got == want
        return
    assert got.spans.equals(want.spans), (got.spans.to_pylist(), want.spans.to_pylist())
    assert got.events.equals(want.events), (got.events.to_pylist(), want.events.to_pylist())
    assert got.refused == want.refused
    assert got.redactions == want.redactions


def frames(*bodies: bytes) -> bytes:
    """An OTLP protobuf file: each request behind its 4-byte big-endian length."""
    return b"".join(len(b).to_bytes(4, "big") + b for b in bodies)


# --- requests written by Hypothesis -------------------------------------------------------------

TEXT = st.text(st.sampled_from(_json.CHAR_LIST), max_size=12)
KEYS = st.one_of(st.sampled_from(_json.SPAN_KEYS), TEXT, st.uuids().map(str))
STRINGS = st.one_of(
    TEXT, st.sampled_from(_json.CREDENTIALS),
    st.sampled_from(["TOOL", "tool", "Llm", "chaın", "unknown", "", " 12 ", "12", "-3", "1.5", "１２"]),
    st.integers(60, 80).map(lambda n: "x" * n),  # around SMALL's 64 bytes
)  # fmt: skip
INTS = st.sampled_from([0, 1, 7, 12, -5, -7, 2**62, 2**63 - 1, -(2**63), 123456789])
DOUBLES = st.one_of(st.sampled_from([0.5, 12.0, 12.5, -0.0, 0.0, 1e300, 5e-324, 1e16, 0.1]), st.floats(),
                    st.sampled_from([math.nan, math.inf, -math.inf]))
# Ids: never all zeros here (Hypothesis likes zero bytes), an_id makes those on purpose.
IDS = {n: st.binary(min_size=n, max_size=n).map(lambda b: b if any(b) else b"\x01" + b[1:]) for n in (16, 8)}


def rarely(draw, n: int) -> bool:
    """True about once in `n` draws (a middle value: Hypothesis favours the ends of a range, and
    shrinks towards 0, the plain case)."""
    return draw(st.integers(0, n - 1)) == n // 2


@st.composite
def odd(draw, fields: list[bytes], singular: dict[int, int]) -> bytes:
    """A message's fields, now and then with the wire's liberties: any order, a singular field
    given twice, a field of the wrong wire type, unknown fields of every wire type."""
    fields = list(fields)
    if rarely(draw, 40) and fields:  # a field again (upb keeps the last, or merges messages)
        fields.append(draw(st.sampled_from(fields)))
    if rarely(draw, 40) and singular:
        num, wt = draw(st.sampled_from(sorted(singular.items())))
        fields.append(field(num, LEN, b"\x01") if wt != LEN else field(num, VARINT, 1))
    for _ in range(draw(st.integers(1, 2)) if rarely(draw, 5) else 0):
        num = draw(st.sampled_from([3, 10, 12, 14, 16, 20, 99, 1000, 536870911]))
        wt = draw(st.sampled_from([VARINT, I64, LEN, I32]))
        fields.insert(draw(st.integers(0, len(fields))), field(num, wt, b"\x00\xff" if wt == LEN else 2**40 + 3))
    if rarely(draw, 5):
        fields = draw(st.permutations(fields))
    return b"".join(fields)


@st.composite
def any_value(draw, depth: int = 0) -> bytes:
    kind = draw(st.sampled_from(["string", "string", "bool", "int", "double", "bytes", "array", "kvlist", "empty"]))
    if rarely(draw, 40):
        kind = "two"
    if kind in ("array", "kvlist") and depth >= 4:
        kind = "string"
    if kind == "string":
        fields = [field(1, LEN, draw(STRINGS))]
    elif kind == "bool":
        fields = [field(2, VARINT, draw(st.sampled_from([0, 1, 2, 2**63])))]
    elif kind == "int":
        fields = [field(3, VARINT, draw(INTS))]
    elif kind == "double":
        fields = [double(4, draw(DOUBLES))]
    elif kind == "bytes":
        fields = [field(7, LEN, draw(st.binary(max_size=50)))]
    elif kind == "array":
        fields = [field(5, LEN, b"".join(field(1, LEN, draw(any_value(depth + 1))) for _ in range(draw(st.integers(0, 3)))))]
    elif kind == "kvlist":
        fields = [field(6, LEN, b"".join(field(1, LEN, draw(key_value(depth + 1))) for _ in range(draw(st.integers(0, 4)))))]
    elif kind == "empty":
        fields = []
    else:  # two members of the oneof: upb keeps the last
        fields = [field(1, LEN, "first"), field(3, VARINT, 5)]
    return draw(odd(fields, {}))


@st.composite
def key_value(draw, depth: int = 0, keys=KEYS) -> bytes:
    fields = []
    if not rarely(draw, 20):
        fields.append(field(1, LEN, draw(keys)))
    for _ in range(0 if rarely(draw, 20) else 2 if rarely(draw, 40) else 1):  # a second value: merged
        fields.append(field(2, LEN, draw(any_value(depth))))
    return draw(odd(fields, {1: LEN, 2: LEN}))


def attributes(num: int, keys=KEYS, most: int = 5):
    return st.lists(key_value(keys=keys), max_size=most).map(lambda kvs: [field(num, LEN, kv) for kv in kvs])


@st.composite
def an_id(draw, size: int) -> bytes:
    choice = draw(st.integers(0, 79))
    if choice == 40:
        return bytes(size)
    if choice == 41:
        return draw(st.binary(max_size=size + 2).filter(lambda b: len(b) != size))
    return draw(IDS[size])


@st.composite
def span(draw) -> bytes:
    start = T0 + draw(st.integers(0, 10**9))
    fields = [field(1, LEN, draw(an_id(16))), field(2, LEN, draw(an_id(8)))]
    if draw(st.booleans()):
        fields.append(field(4, LEN, draw(an_id(8))))
    if not rarely(draw, 60):
        fields.append(field(5, LEN, draw(st.one_of(TEXT.filter(bool), st.just("execute_tool k8s.patch")))))
    kind = draw(st.sampled_from([6, 2**32 + 1, -1]) if rarely(draw, 30) else st.integers(0, 5))
    if kind:
        fields.append(field(6, VARINT, kind))
    odd_time = draw(st.integers(0, 39))  # 21-25: missing, zero or before the start
    if odd_time != 21:
        fields.append(field(7, I64, 0 if odd_time == 22 else start))
    if odd_time != 23:
        fields.append(field(8, I64, start - 1 if odd_time == 24 else 2**64 - 1 if odd_time == 25 else start + draw(st.integers(0, 10**9))))
    fields += draw(attributes(9))
    for _ in range(draw(st.integers(0, 2))):
        ev = [field(1, I64, 0 if rarely(draw, 20) else start + 5), field(2, LEN, draw(TEXT))]
        ev += draw(attributes(3, most=3))
        fields.append(field(11, LEN, draw(odd(ev, {1: I64, 2: LEN}))))
    for _ in range(draw(st.integers(1, 2)) if rarely(draw, 4) else 0):
        ln = [field(1, LEN, draw(an_id(16))), field(2, LEN, draw(an_id(8)))] + draw(attributes(4, most=2))
        fields.append(field(13, LEN, draw(odd(ln, {1: LEN, 2: LEN}))))
    if draw(st.booleans()):
        status = []
        code = 3 if rarely(draw, 20) else draw(st.integers(0, 2))
        if code:
            status.append(field(3, VARINT, code))
        if draw(st.booleans()):
            status.append(field(2, LEN, draw(st.one_of(TEXT, st.sampled_from(_json.CREDENTIALS)))))
        fields.append(field(15, LEN, draw(odd(status, {2: LEN, 3: VARINT}))))
    if rarely(draw, 5):
        fields += [field(3, LEN, "rojo=00f067aa0ba902b7"), field(10, VARINT, 2), field(16, I32, 0x301)]
    return draw(odd(fields, {1: LEN, 2: LEN, 4: LEN, 5: LEN, 6: VARINT, 7: I64, 8: I64, 15: LEN}))


@st.composite
def scope_spans(draw) -> bytes:
    fields = []
    # the scope; now and then a second one, which upb merges into the first
    for _ in range(0 if rarely(draw, 6) else 2 if rarely(draw, 20) else 1):
        scope = [] if rarely(draw, 6) else [field(1, LEN, draw(st.one_of(st.just("afterfix.agent"), TEXT)))]
        fields.append(field(1, LEN, draw(odd(scope + [field(2, LEN, "1.0")], {1: LEN}))))
    fields += [field(2, LEN, draw(span())) for _ in range(draw(st.integers(0, 3)))]
    return draw(odd(fields, {1: LEN}))


@st.composite
def resource_spans(draw) -> bytes:
    fields = []
    # the resource; now and then a second one, which upb merges into the first
    for _ in range(0 if rarely(draw, 6) else 2 if rarely(draw, 20) else 1):
        keys = st.one_of(st.sampled_from(_json.RESOURCE_KEYS), KEYS)
        fields.append(field(1, LEN, draw(odd(draw(attributes(1, keys=keys, most=4)), {}))))
    fields += [field(2, LEN, draw(scope_spans())) for _ in range(draw(st.integers(0, 2)))]
    return draw(odd(fields, {1: LEN}))


@st.composite
def requests(draw) -> bytes:
    """A request upb parses (what upb refuses never reaches the extension)."""
    body = draw(odd([field(1, LEN, draw(resource_spans())) for _ in range(draw(st.integers(1, 2)))], {}))
    assume(parsed(body) is not None)
    return body


REDACTORS = [otlp.DEFAULT, None, Redactor(patterns=[("agent", "agent"), ("digits", r"\d{3,}")])]


@pytest.mark.usefixtures("quick_shrinking")
def test_requests_decode_alike_with_and_without_the_extension():
    @settings(FUZZ, max_examples=250)
    @given(body=requests(), limits=st.sampled_from([Limits(), SMALL]), redactor=st.sampled_from(REDACTORS))
    def check(body, limits, redactor):
        same_decoded(body, limits=limits, redactor=redactor)

    check()


@pytest.mark.usefixtures("quick_shrinking")
def test_every_request_the_extension_takes_gives_the_walks_rows():
    taken = Counter()

    @settings(FUZZ, max_examples=400)
    @given(body=requests(), limits=st.sampled_from([Limits(), SMALL]), redactor=st.sampled_from(REDACTORS))
    def check(body, limits, redactor):
        taken[same_rows(body, limits, redactor)] += 1

    check()
    # Most generated requests hold something the walk refuses or an oddity; still, a fair share
    # must be taken, or the oracle compares nothing.
    assert taken[True] >= 80, taken


# --- real requests ------------------------------------------------------------------------------


def example_frames() -> list[bytes]:
    data, out, pos = (EXAMPLES / "hpa-night.pb").read_bytes(), [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        out.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return out


def _hex_to_base64(obj) -> None:
    """OTLP/JSON's hex ids as the base64 protobuf's JSON mapping reads, in place."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str):
                obj[k] = base64.b64encode(bytes.fromhex(v)).decode()
            else:
                _hex_to_base64(v)
    elif isinstance(obj, list):
        for v in obj:
            _hex_to_base64(v)


def example_line_requests() -> list[bytes]:
    """Every line of the example OTLP/JSON files, as the protobuf request an exporter would send."""
    out = []
    for path in sorted(EXAMPLES.glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            if line.strip():
                obj = orjson.loads(line)
                _hex_to_base64(obj)
                out.append(json_format.ParseDict(obj, ExportTraceServiceRequest()).SerializeToString())
    return out


def test_the_extension_takes_every_example_request_alike():
    bodies = example_frames() + example_line_requests()
    assert len(bodies) > 10
    spans = 0
    for body in bodies:
        assert same_rows(body), f"the extension left an example request to Python: {parsed(body)}"
        same_decoded(body)
        spans += len(otlp.decode_protobuf(body).spans)
    assert spans > len(bodies)


def test_sdk_requests_with_every_attribute_type_are_taken():
    """What the OpenTelemetry SDK's exporter sends for attributes of every type it allows."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": "sre-agent", "afterfix.run.id": "r-1"}))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("afterfix.test", "1.0")
    attrs = {"s": "text ☃ \"quoted\"\n", "b": True, "i": -7, "f": 0.25, "ss": ["a", "b"], "bs": [True, False],
             "is": [1, 2**62], "fs": [1.5, -0.0], "gen_ai.tool.name": "kubectl", "gen_ai.usage.input_tokens": 12}  # fmt: skip
    with tracer.start_as_current_span("invoke_agent sre", attributes=attrs) as root:
        root.add_event("afterfix.option", {"afterfix.option.id": "o1", "score": 0.8})
        with tracer.start_as_current_span("execute_tool kubectl", links=[trace_link(root)]) as child:
            child.set_status(2, "password=hunter2 failed")
    body = encode_spans(memory.get_finished_spans()).SerializeToString()
    assert same_rows(body)
    same_decoded(body)


def trace_link(span):
    from opentelemetry.trace import Link

    return Link(span.get_span_context(), {"why": "retry of"})


def test_a_declined_request_leaves_no_rows_behind():
    """A bad second span makes the extension decline after it appended the first one's row:
    decode_protobuf rolls that back, and the walk stores the first and refuses the second."""
    good = field(2, LEN, span_bytes(b"\x01" * 16, b"\x02" * 8))
    bad = field(2, LEN, span_bytes(b"\x01" * 16, bytes(8)))
    body = field(1, LEN, field(2, LEN, good + bad))
    assert native().walk_protobuf(body, fresh_rows()) is False
    got = decode(body, with_native=True)
    assert len(got.spans) == 1 and len(got.refused) == 1
    assert "span_id" in got.refused[0].reason
    same_decoded(body)


def span_bytes(tid: bytes, sid: bytes, *extra: bytes) -> bytes:
    return (field(1, LEN, tid) + field(2, LEN, sid) + field(5, LEN, "s") + field(7, I64, T0) + field(8, I64, T0 + 5)
            + b"".join(extra))  # fmt: skip


def request_of(*span_fields: bytes, resource: bytes = b"") -> bytes:
    return field(1, LEN, resource + field(2, LEN, field(1, LEN, field(1, LEN, "scope")) + field(2, LEN, span_bytes(
        b"\x01" * 16, b"\x02" * 8, *span_fields))))  # fmt: skip


def kv(key: str, value: bytes) -> bytes:
    return field(9, LEN, field(1, LEN, key) + field(2, LEN, value))


def nested(depth: int) -> bytes:
    """An AnyValue of `depth` arrays, one inside the other, around a string."""
    value = field(1, LEN, "bottom")
    for _ in range(depth):
        value = field(5, LEN, field(1, LEN, value))
    return value


ONE_SPAN = field(2, LEN, span_bytes(b"\x01" * 16, b"\x02" * 8))
MAP_ENTRY = field(1, LEN, "k") + field(2, LEN, field(4, I64, 0))  # "k": 0.0
SERVICE = field(1, LEN, "service.name") + field(2, LEN, field(1, LEN, "late"))
# Whole requests the extension reads: the wire's liberties, and values at their edges.
TAKEN = {
    "unknown fields everywhere": request_of(field(99, VARINT, 1) + field(16, I32, 1) + field(3, LEN, "state")
                                            + kv("k", field(8, LEN, b"x") + field(1, LEN, "v"))),
    "attributes around the events": request_of(kv("a", field(1, LEN, "1")) + field(11, LEN, field(1, I64, T0 + 1))
                                               + kv("b", field(3, VARINT, 2))),
    "an empty string value": request_of(kv("e", field(1, LEN, ""))),
    "an AnyValue with no member": request_of(kv("none", b"")),
    "a KeyValue with no value": request_of(field(9, LEN, field(1, LEN, "nv"))),
    "a KeyValue with no key": request_of(field(9, LEN, field(2, LEN, field(1, LEN, "v")))),
    "bytes of every length": request_of(kv("b0", field(7, LEN, b"")) + kv("b1", field(7, LEN, b"\x00"))
                                        + kv("b2", field(7, LEN, b"\xff\xfe")) + kv("b3", field(7, LEN, b"abc"))),
    "a negative int": request_of(kv("n", field(3, VARINT, -(2**63)))),
    "a bool from a large varint": request_of(kv("t", field(2, VARINT, 2**40))),
    "nested lists and maps": request_of(kv("l", field(5, LEN, field(1, LEN, field(6, LEN, field(1, LEN, MAP_ENTRY)))))),
    "the value before the key": request_of(field(9, LEN, field(2, LEN, field(1, LEN, "v")) + field(1, LEN, "k"))),
    "the scope after the spans": field(1, LEN, field(2, LEN, ONE_SPAN + field(1, LEN, field(1, LEN, "late")))),
    "the resource after its scopes": field(1, LEN, field(2, LEN, ONE_SPAN) + field(1, LEN, field(1, LEN, SERVICE))),
}

# Span fields that make the extension leave the request to the walk (the test wraps them in one).
DECLINED = {
    "a name given twice": field(5, LEN, "again"),
    "a repeated attribute key": kv("k", field(1, LEN, "1")) + kv("k", field(1, LEN, "2")),
    "two members of a oneof": kv("two", field(1, LEN, "s") + field(3, VARINT, 1)),
    "a known field of the wrong wire type": field(6, LEN, b"\x01"),
    "a NaN double": kv("nan", double(4, math.nan)),
    "the status given twice": field(15, LEN, field(3, VARINT, 1)) + field(15, LEN, field(2, LEN, "m")),
    "a kind out of range": field(6, VARINT, 9),
    "a zero event time": field(11, LEN, field(2, LEN, "e")),
    "a link to a zero trace id": field(13, LEN, field(1, LEN, bytes(16)) + field(2, LEN, b"\x01" * 8)),
    "nesting deeper than Limits.max_depth": kv("deep", nested(9)),
}


def spans_of(scope_fields: bytes, resource_fields: bytes = b"") -> bytes:
    """A request of one resource (`resource_fields` before its scopes) and one scope of one span."""
    return field(1, LEN, resource_fields + field(2, LEN, scope_fields + field(2, LEN, span_bytes(b"\x01" * 16, b"\x02" * 8))))


# Messages given twice, which upb merges: left to the walk, which reads the merged message.
MERGED = {
    "the scope twice, the second without a name": spans_of(field(1, LEN, field(1, LEN, "first")) + field(1, LEN, field(2, LEN, "2.0"))),
    "the scope twice, both named": spans_of(field(1, LEN, field(1, LEN, "first")) + field(1, LEN, field(1, LEN, "second"))),
    "the resource twice": spans_of(b"", field(1, LEN, field(1, LEN, field(1, LEN, "service.name") + field(2, LEN, field(1, LEN, "a"))))
                                   + field(1, LEN, field(1, LEN, field(1, LEN, "host") + field(2, LEN, field(1, LEN, "h"))))),
    "an attribute's value twice": request_of(field(9, LEN, field(1, LEN, "k") + field(2, LEN, field(1, LEN, "a")) + field(2, LEN, field(3, VARINT, 1)))),
}


@pytest.mark.parametrize("name", sorted(MERGED), ids=str)
def test_messages_given_twice_are_left_to_the_walk(name):
    body = MERGED[name]
    assert parsed(body) is not None
    assert native().walk_protobuf(body, fresh_rows()) is False, f"{name}: taken"
    same_decoded(body)


@pytest.mark.parametrize("name", sorted(TAKEN), ids=str)
def test_wire_liberties_the_extension_reads(name):
    body = TAKEN[name]
    assert same_rows(body), f"{name}: declined"
    same_decoded(body)


@pytest.mark.parametrize("name", sorted(DECLINED), ids=str)
def test_what_the_extension_leaves_to_the_walk(name):
    body = request_of(DECLINED[name])
    assert parsed(body) is not None, f"{name}: upb refuses it, so the case tests nothing"
    assert native().walk_protobuf(body, fresh_rows()) is False, f"{name}: taken"
    same_decoded(body)
    same_decoded(body, limits=SMALL)


def test_mutated_example_requests_decode_alike():
    """Real requests, randomly broken (seeded, by the OTLP/JSON test's edits: bytes changed, runs
    deleted, copied or cut off, JSON-ish bytes spliced in): whatever upb still parses decodes alike
    with the extension and without it, alone and as frames of a file, under both limits."""
    bodies = [b for b in example_frames() + example_line_requests() if len(b) < 20000]
    rnd = random.Random(20261127)
    parsed_ok = 0
    for _ in range(10000):
        body = _json.mutated(rnd, rnd.choice(bodies))
        if parsed(body) is None:
            continue
        parsed_ok += 1
        same_rows(body)
        same_decoded(body)
        same_decoded(body, limits=SMALL)
        same_decoded(frames(body, rnd.choice(bodies)), framed=True)
    assert parsed_ok > 300, parsed_ok

