"""afterfix.ingest._otlpjson, the compiled reader of OTLP/JSON lines: for every line it either
stores exactly the rows the Python fast path (msgspec + `otlp_json.walk_fast`) stores, or
declines the line (returns False) and leaves it to Python.

Hypothesis writes the lines as bytes, by hand (`Writer`), so that key order, duplicate keys,
escapes, number spellings and broken syntax are all under its control. Two oracles compare:

* end to end: `decode_json_lines` with the extension and without it (`otlp._native = None`)
  gives the same tables, refusals and redactions, under several redactors and limits;
* line by line, stronger: whenever `_otlpjson.walk(line, rows)` returns True, the Python fast
  path takes the line too, with identical row tuples (types included) and redaction count; and
  `walk_lines` takes exactly such lines, stopping at the first it leaves, with nothing of it kept.

Besides Hypothesis's lines, every single odd or bad variation the Writer knows is tried alone in
an otherwise plain line (seeded, so none is left to chance), explicit cases follow, and last,
real lines of the example files randomly broken (seeded too).
The extension is compiled by `pip install -e .`; the tests that need it fail when it is missing.
"""

from __future__ import annotations

import base64
import functools
import importlib
import itertools
import json
import random
import types
from collections import Counter
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.internal.conjecture import engine as hypothesis_engine

from afterfix import schema
from afterfix.ingest import otlp
from afterfix.ingest.otlp import Limits
from afterfix.ingest.redact import Redactor
from afterfix.ingest.rows import Rows, TupleColumns

ROOT = Path(__file__).parents[2]
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
T0 = 1_795_747_620_000_000_000
AT = datetime(2026, 11, 27, 6, 0, 0)
SMALL = Limits(max_attribute_bytes=64, max_depth=2, max_attributes=3)
BUILD = "build it with `.venv/bin/pip install -e .`, which compiles kernel_ext/afterfix/ingest/_otlpjson.c"

# Fixed examples (derandomize), no example database written into the repository, one failure
# reported (and shrunk) at a time.
FUZZ = settings(
    deadline=None, derandomize=True, database=None, print_blob=False, report_multiple_bugs=False,
    phases=[p for p in Phase if p is not Phase.explain],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)  # fmt: skip


@pytest.fixture
def quick_shrinking(monkeypatch):
    """Shrinking a failure stops after a minute (Hypothesis's default is 5), well within
    pytest-timeout's limit per test; the example found so far is reported."""
    monkeypatch.setattr(hypothesis_engine, "MAX_SHRINKING_SECONDS", 60, raising=False)


def native():
    """The extension module otlp reads with; fails (never skips) the test when it was not built."""
    mod = getattr(otlp, "_native", None)
    if mod is None:
        why = "is None" if hasattr(otlp, "_native") else "does not exist"
        pytest.fail(f"the C extension afterfix.ingest._otlpjson was not built (otlp._native {why}); {BUILD}", pytrace=False)
    return mod


# --- what is compared -------------------------------------------------------------------------


def exact(rows) -> list[tuple]:
    """Rows (tuples, or the compiled `Columns`, which indexes as tuples) with each value's type
    spelled out: 1, 1.0 and True differ, and NaN equals NaN."""
    return [tuple(f"{type(x).__name__}: {x!r}" for x in r) for r in rows]


def fresh_rows(limits: Limits = Limits(), redactor=otlp.DEFAULT) -> Rows:
    return Rows("t.jsonl", limits, redactor, AT)


def python_rows(limits: Limits = Limits(), redactor=otlp.DEFAULT) -> Rows:
    rows = fresh_rows(limits, redactor)
    rows.spans, rows.events = TupleColumns(), TupleColumns()  # the tuples the Python path appends
    return rows


def python_fast(line: bytes, rows: Rows) -> bool:
    """What otlp._walk_fast does without the extension (msgspec, then otlp_json.walk_fast)."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(otlp, "_native", None, raising=False)
        return otlp._walk_fast(line, rows)


def same_rows(line: bytes, limits: Limits = Limits(), redactor=otlp.DEFAULT) -> bool:
    """Oracle B on one line: if the extension takes it, the Python fast path takes it too, with
    identical rows. Returns whether the extension took it."""
    got = fresh_rows(limits, redactor)
    taken = native().walk(line, got)
    assert taken is True or taken is False, f"walk returned {taken!r}, not a bool"
    if taken:
        want = python_rows(limits, redactor)
        assert python_fast(line, want), "the extension took a line the Python fast path declines"
        assert exact(got.spans) == exact(want.spans), "span rows differ"
        assert exact(got.events) == exact(want.events), "event rows differ"
        assert got.redactions == want.redactions, "redactions differ"
        assert got.refused == want.refused == [], "something was refused"
    return taken


def same_rows_by_walk_lines(data: bytes, limits: Limits = Limits()) -> None:
    """Oracle B over a file, as decode_json_lines drives `walk_lines`: the lines it takes are
    lines the Python fast path takes, with identical rows; it stops at the start of a line that
    `walk` leaves too, and is called again after it."""
    walk_lines = native().walk_lines
    got, want = fresh_rows(limits), python_rows(limits)
    lines = data.split(b"\n")
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    pos = index = 0
    while pos < len(data):
        stop, stop_index = walk_lines(data, pos, index, got)
        for line in lines[index:stop_index]:
            if line and not line.isspace():
                assert python_fast(line, want), f"walk_lines took a line the Python fast path declines: {line!r}"
        where = f"walk_lines stopped at line {stop_index}"
        assert exact(got.spans) == exact(want.spans), f"{where}: span rows differ (one of a line it left?)"
        assert exact(got.events) == exact(want.events), f"{where}: event rows differ"
        assert got.redactions == want.redactions, f"{where}: redactions differ (counted for a line it left?)"
        assert got.refused == [], f"{where}: it refused something"
        if stop >= len(data):
            break
        assert stop == starts[stop_index], f"walk_lines stopped at byte {stop}, inside line {stop_index}"
        left = lines[stop_index]
        assert len(left) > limits.max_body_bytes or not native().walk(left, fresh_rows(limits)), (
            f"walk_lines left a line walk takes: {left!r}"
        )
        pos, index = starts[stop_index + 1], stop_index + 1


def decode(data: bytes, *, with_native: bool, **kw):
    kw.setdefault("ingested_at", AT)
    if with_native:
        native()
        return otlp.decode_json_lines(data, source="t.jsonl", **kw)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(otlp, "_native", None, raising=False)
        return otlp.decode_json_lines(data, source="t.jsonl", **kw)


def same_decoded(data: bytes, **kw) -> None:
    """Oracle A: the whole file decodes alike with the extension and without it."""
    got, want = decode(data, with_native=True, **kw), decode(data, with_native=False, **kw)
    assert got.spans.equals(want.spans), (got.spans.to_pylist(), want.spans.to_pylist())
    assert got.events.equals(want.events), (got.events.to_pylist(), want.events.to_pylist())
    assert got.refused == want.refused
    assert got.redactions == want.redactions


# --- OTLP/JSON lines written by hand ----------------------------------------------------------

# Printable ASCII, characters JSON must escape, and non-ASCII of 2, 3 and 4 UTF-8 bytes.
CHAR_LIST = list("abcXYZ019 _.-=:") + ['"', "\\", "/", "\b", "\f", "\n", "\r", "\t", "\x00", "\x1f", "\x7f",
                                         "é", "ß", "€", "☃", "\u2028", "\ufeff", "😀", "\U0010ffff"]  # fmt: skip
CHARS = st.sampled_from(CHAR_LIST)
CREDENTIALS = [
    "password=hunter2", "Bearer abcdefghijkl", "AKIAABCDEFGHIJKLMNOP", "token: s3cr3tvalue",
    "https://bob:pa55word@db.example/x", "sk-abcdefghijklmnopqrstuvwx", '{"api_key": "k3y"}',
]  # fmt: skip
# Every key mapping.hot_columns reads, in all three dialects.
HOT_KEYS = [
    "gen_ai.operation.name", "openinference.span.kind", "afterfix.span.kind", "afterfix.run.id",
    "gen_ai.conversation.id", "session.id", "afterfix.incident.id", "gen_ai.agent.name", "agent.name",
    "gen_ai.tool.name", "tool.name", "gen_ai.tool.call.id", "tool_call.id", "afterfix.decision.id",
    "afterfix.action.decision_id", "afterfix.action.id", "gen_ai.request.model", "gen_ai.response.model",
    "llm.model_name", "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt",
    "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion", "error.type",
]  # fmt: skip
SPAN_KEYS = HOT_KEYS + ["http.method", "k", "", "ключ", 'a"b']
# The resource: its service name, and the keys hot columns also read on the resource.
RESOURCE_KEYS = ["service.name", "afterfix.run.id", "afterfix.incident.id", "session.id", "gen_ai.conversation.id", "host"]
# Values the hot columns treat specially: OpenInference kinds in several cases (and "chaın" with
# a dotless i, which str.upper() turns into CHAIN), token counts of every type, empty values.
HOT_VALUES = [
    b'{"stringValue":"TOOL"}', b'{"stringValue":"tool"}', b'{"stringValue":"Llm"}', '{"stringValue":"chaın"}'.encode(),
    b'{"stringValue":"unknown"}', b'{"stringValue":""}', b'{"stringValue":" 12 "}', b'{"stringValue":"12"}',
    b'{"stringValue":"-3"}', b'{"stringValue":"1.5"}', '{"stringValue":"１２"}'.encode(), b'{"intValue":"12"}',
    b'{"intValue":12}', b'{"intValue":"-7"}', b'{"intValue":"9223372036854775807"}', b'{"doubleValue":12.0}',
    b'{"doubleValue":12.5}', b'{"doubleValue":1e300}', b'{"doubleValue":-0.0}', b'{"doubleValue":"NaN"}',
    b'{"boolValue":true}', b'{"boolValue":false}', b'{"arrayValue":{"values":[]}}',
    b'{"arrayValue":{"values":[{"stringValue":"x"}]}}', b'{"kvlistValue":{"values":[]}}', b"{}", b'{"bytesValue":"AAE="}',
]  # fmt: skip
INT_VALUES = [0, 7, -5, 2**62, 2**63 - 1, -(2**63), 123456789]
INT_ODD = [
    b'"007"', b'"-0"', b"-0", b'"+1"', b'"1.0"', b'""', b'" 12"', b'"9223372036854775808"', b"9223372036854775808",
    b"-9223372036854775809", b'"-9223372036854775809"', b"1" + b"0" * 30, b'"1' + b"0" * 30 + b'"', b"1.0", b"1e3",
    '"１２"'.encode(), '"²"'.encode(), b"null", b"true", b'"12abc"',
]  # fmt: skip
# doubleValue as exporters write it (and edge cases of parsing and of orjson's writing) ...
DOUBLE_SPELLINGS = [
    b"0.5", b"1", b"-0.0", b"-0", b"0", b"1E+2", b"1e-7", b"1e16", b"1e15", b"123456789012345678", b"5e-324",
    b"1.7976931348623157e308", b"2.2250738585072011e-308", b"0.1000000000000000055511151231257827021181583404541015625",
    b"9007199254740993", b"12345678.9", b"1.5e300", b"-2.5E-3", b"1e-400",
]  # fmt: skip
# ... spellings the Python fast path takes but the extension may leave to it ...
DOUBLE_RARE = [b"18446744073709551616", b"1" + b"0" * 30, b'"NaN"', b'"Infinity"', b'"-Infinity"']
# ... and spellings the Python fast path declines.
DOUBLE_ODD = [b"1e400", b"-1e400", b'"nan"', b'"inf"', b'"1.5"', b"null", b"true", b"NaN", b"Infinity",
              b"1" + b"0" * 400, b".5", b"1.", b"01"]  # fmt: skip
NANOS_ODD = [0, 1, 2**63, 2**64 - 1, 2**64, 10**19, 10**25]
UNKNOWN_KEYS = ["traceState", "flags", "droppedAttributesCount", "schemaUrl", "x", "", "Name", "spanid", "resource_spans",
                "instrumentationLibrary", "values", "key"]  # fmt: skip
BROKEN_JSON = [b"[1,]", b'{"a":1,}', b"[1 2]", b"{'a':1}", b"tru", b"01", b"NaN", b"-", b'"open', b"[", b"{}}",
               b'{"a"}', b"/* c */1", b"[,]", b'{"a":1 "b":2}']  # fmt: skip
# Put inside a string: raw control characters, invalid UTF-8 (a lone byte, a truncated or overlong
# sequence, an encoded surrogate, beyond U+10FFFF), lone surrogates, bad escapes.
CORRUPTIONS = [
    b"\x01", b"\x1f", b"\x00", b"\xff", b"\xc3", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\\ud800",
    b"\\udc00", b"\\ud83d\\u0041", b"\\x", b"\\u12", b"\\U0041", b"\\'",
]  # fmt: skip
SHORT_ESCAPES = {"\b": b"\\b", "\f": b"\\f", "\n": b"\\n", "\r": b"\\r", "\t": b"\\t"}
# Where odd() and bad() variations go (see Writer).
ODD_PLACES = [
    "id", "parent", "name", "kind", "start", "end", "no-start", "no-end", "nanos", "status", "null-field", "attributes",
    "key-value", "string-value", "bool-value", "int-value", "double-value", "list-value", "event-time", "event-name",
    "scope", "resource", "line", "deep",
]  # fmt: skip
BAD_PLACES = ["line", "string", "json", "comma", "ws"]


class Absent:
    """A variation that leaves a field out."""

    def __repr__(self) -> str:
        return "absent"


ABSENT = Absent()

# Strategies are made once: Hypothesis validates each new strategy object, which costs more
# than the draw itself. `SeededDraw` knows them by identity.
TEXTS = st.text(CHARS, max_size=8)
HEX = "0123456789abcdef"
HEX_IDS = {n: st.text(HEX, min_size=n, max_size=n).filter(lambda h: h.strip("0")) for n in (16, 32)}
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
BLOBS = st.binary(max_size=20)
COIN = st.booleans()
_BOUNDS: dict[int, tuple[int, int]] = {}
_ORDERS: dict[int, int] = {}


@functools.cache
def integers(lo: int, hi: int):
    s = st.integers(lo, hi)
    _BOUNDS[id(s)] = (lo, hi)
    return s


@functools.cache
def orders(n: int):
    s = st.permutations(range(n))
    _ORDERS[id(s)] = n
    return s


class SeededDraw:
    """A `draw` for Writer without Hypothesis: the same strategies, drawn from random.Random(seed)."""

    def __init__(self, seed: int):
        self.rnd = random.Random(seed)

    def __call__(self, s):
        r = self.rnd
        if s is COIN:
            return r.random() < 0.5
        if s is TEXTS:
            return "".join(r.choice(CHAR_LIST) for _ in range(r.randint(0, 8)))
        if s is FLOATS:
            return r.choice([0.0, -0.0, 0.1, 1e16, 1e-7, 5e-324, 1.7976931348623157e308, r.uniform(-1e6, 1e6)])
        if s is BLOBS:
            return r.randbytes(r.randint(0, 20))
        for n, ids in HEX_IDS.items():
            if s is ids:
                return "".join(r.choice(HEX) for _ in range(n - 1)) + r.choice(HEX[1:])
        if id(s) in _ORDERS:
            return r.sample(range(_ORDERS[id(s)]), _ORDERS[id(s)])
        return r.randint(*_BOUNDS[id(s)])


class NoSuchVariation(Exception):
    """A scripted variation's index is past the last option of its place."""


class Writer:
    """Writes one OTLP/JSON line as bytes, every choice drawn from Hypothesis (or `SeededDraw`).

    Variations come in three kinds: well formed ones the Python fast path takes (key order,
    duplicate keys, unknown fields, escapes, spacing: each switched on per line), `odd()` ones it
    declines though the line is valid OTLP/JSON (number times, uppercase ids, nulls...), and
    `bad()` ones that get the line or a span refused, or are not JSON at all. A line has none of
    the odd (bad) ones, exactly one (at one of the first places of a kind drawn from ODD_PLACES /
    BAD_PLACES), or many. Everything shrinks towards a plain, canonical line.

    `script=(kind, place, i)` makes the line have exactly one variation, option `i` of `kind`
    ("odd" or "bad") at the first `place` the line has (see `applied`).
    """

    def __init__(self, draw, script: tuple[str, str | None, int] | None = None):
        self.draw = draw
        self.script, self.applied = script, None
        self.places = Counter()
        if script:
            self.odd_mode = self.bad_mode = "script"
            self.odd_where = self.bad_where = None
            self.odd_at = self.bad_at = 0
        else:
            self.odd_mode = self.pick(["none", "none", "none", "none", "one", "many"])
            self.odd_where, self.odd_at = (self.pick(ODD_PLACES), self.between(0, 2)) if self.odd_mode == "one" else (None, 0)
            self.bad_mode = self.pick(["none", "none", "none", "none", "one", "many"])
            self.bad_where, self.bad_at = (self.pick(BAD_PLACES), self.between(0, 2)) if self.bad_mode == "one" else (None, 0)
        # per line, switched on or off: each then applies at random places
        self.escapes, self.shuffle, self.extras, self.dups = (self.coin() for _ in range(4))
        self.spacing = self.pick(["compact", "spaced", "random"])

    # choices

    def between(self, lo: int, hi: int) -> int:
        return self.draw(integers(lo, hi))

    def upto(self, n: int) -> int:
        return self.between(0, n)

    def coin(self) -> bool:
        return self.draw(COIN)

    def chance(self, percent: int) -> bool:
        return self.between(0, 99) >= 100 - percent

    def pick(self, options: list):
        return options[self.between(0, len(options) - 1)]

    def odd(self, where: str, options: list):
        """One of `options` when an odd variation goes here, else None."""
        return self.vary("odd", where, options, self.odd_mode, self.odd_where, self.odd_at, 15)

    def bad(self, where: str, options: list):
        """One of `options` when a bad variation goes here, else None."""
        return self.vary("bad", where, options, self.bad_mode, self.bad_where, self.bad_at, 5)

    def vary(self, kind, where, options, mode, chosen, at, percent):
        if mode == "script":
            if self.applied is not None or self.script[:2] != (kind, where):
                return None
            i = self.script[2]
            if i >= len(options):
                raise NoSuchVariation
            self.applied = options[i]
            return options[i]
        if mode == "one":
            if where != chosen:
                return None
            self.places[where] += 1
            return self.pick(options) if self.places[where] == at + 1 else None
        return self.pick(options) if mode == "many" and self.chance(percent) else None

    # JSON syntax

    def ws(self) -> bytes:
        w = self.bad("ws", [b"\n", b"\x0c", b"\x0b", b"\xc2\xa0"])  # \n splits the line; the rest is not JSON whitespace
        if w is not None:
            return w
        if self.spacing == "compact":
            return b""
        if self.spacing == "spaced":
            return b" "
        return self.pick([b"", b" ", b"\t", b"\r", b"  \t "])

    def seq(self, open_: bytes, items: list[bytes], close: bytes) -> bytes:
        out = open_ + self.ws()
        for i, item in enumerate(items):
            if i:
                out += self.ws() + b"," + self.ws()
            out += item
        return out + (self.bad("comma", [b",", b",,"]) or b"") + self.ws() + close

    def array(self, items: list[bytes]) -> bytes:
        return self.seq(b"[", items, b"]")

    def obj(self, fields: list[tuple[str, object]]) -> bytes:
        """An object of (key, value) fields, a value being bytes or a function writing them (called
        again for a duplicate). Fields may be duplicated, joined by unknown ones and reordered."""
        members = [(k, v() if callable(v) else v) for k, v in fields]
        if fields and self.dups and self.chance(15):  # a known key twice: the last one counts
            k, v = self.pick(fields)
            members.insert(self.upto(len(members)), (k, v() if callable(v) else v))
        while self.extras and self.chance(20):  # unknown fields are skipped, whatever their (valid) value
            members.insert(self.upto(len(members)), (self.pick(UNKNOWN_KEYS), self.json_value()))
        if len(members) > 1 and self.shuffle and self.chance(40):
            members = [members[i] for i in self.draw(orders(len(members)))]
        return self.seq(b"{", [self.key(k) + self.ws() + b":" + self.ws() + v for k, v in members], b"}")

    def key(self, k: str) -> bytes:
        if self.escapes and self.chance(10):  # escapes in a key: "n\u0061me" is "name"
            return b'"' + b"".join(self.char(c) for c in k) + b'"'
        return json.dumps(k, ensure_ascii=False).encode()

    def char(self, c: str) -> bytes:
        """One character inside a JSON string, raw or escaped in one of the ways JSON allows."""
        o = ord(c)
        if c == '"':
            forms = [b'\\"', b"\\u0022"]
        elif c == "\\":
            forms = [b"\\\\", b"\\u005c", b"\\u005C"]
        elif o < 0x20:
            forms = [SHORT_ESCAPES.get(c, b"\\u%04x" % o), b"\\u%04x" % o, b"\\u%04X" % o]
        elif c == "/":
            forms = [b"/", b"\\/"]
        elif o > 0xFFFF:  # raw, or as a surrogate pair
            hi, lo = 0xD800 + ((o - 0x10000) >> 10), 0xDC00 + ((o - 0x10000) & 0x3FF)
            forms = [c.encode(), b"\\u%04x\\u%04x" % (hi, lo), b"\\u%04X\\u%04X" % (hi, lo)]
        else:
            forms = [c.encode(), b"\\u%04x" % o, b"\\u%04X" % o]
        return self.pick(forms)

    def text(self) -> str:
        """The content of a string: words, escape-worthy characters, credentials, long runs."""
        k = self.pick(["word", "chars", "credential", "long", "empty"])
        if k == "word":
            return self.pick(["a", "kubectl", "agent", "x.y", "ok", "tool", "Llm", "naïve"])
        if k == "chars":
            return self.draw(TEXTS)
        if k == "credential":
            return self.pick(["", "login ", "x: ", "\n"]) + self.pick(CREDENTIALS) + self.pick(["", " ok", "é"])
        if k == "long":  # around SMALL.max_attribute_bytes >> 2 in characters, and beyond
            return self.pick(["abcdefghij", "é", "😀", '\\"', "ab", "\x00"]) * self.between(3, 40)
        return ""

    def string(self, s: str | None = None) -> bytes:
        """A JSON string: as orjson writes it, as json.dumps does (all ASCII), or escaped at random."""
        if s is None:
            s = self.text()
        style = self.pick(["orjson", "ascii", "mixed"]) if self.escapes else "orjson"
        if style == "orjson":
            out = orjson.dumps(s)
        elif style == "ascii":
            out = json.dumps(s).encode()
        else:
            out = b'"' + b"".join(self.char(c) for c in s) + b'"'
        bad = self.bad("string", CORRUPTIONS)
        if bad is not None:
            at = self.between(1, len(out) - 1)
            out = out[:at] + bad + out[at:]
        return out

    def json_value(self, depth: int = 0) -> bytes:
        """Any JSON value, for unknown fields: scalars, containers, deep nesting, broken JSON."""
        bad = self.bad("json", BROKEN_JSON)
        if bad is not None:
            return bad
        n = self.odd("deep", [3, 300, 1100, 5000])  # deeper than orjson reads (1024)
        if n is not None:
            return b"[" * n + b"]" * n if self.coin() else b'{"a":' * n + b"1" + b"}" * n
        k = self.pick(["null", "true", "number", "string", "array", "object"])
        if depth >= 3 and k in ("array", "object"):
            k = "number"
        if k == "null":
            return b"null"
        if k == "true":
            return self.pick([b"true", b"false"])
        if k == "number":
            return self.pick([b"0", b"-1", b"1.5e3", b"1" + b"0" * 40, b"-0.0", b"1e400"])
        if k == "string":
            return self.string()
        if k == "array":
            return self.array([self.json_value(depth + 1) for _ in range(self.upto(2))])
        return self.seq(b"{", [self.string() + b":" + self.json_value(depth + 1) for _ in range(self.upto(2))], b"}")

    # OTLP/JSON

    def id(self, size: int) -> bytes:
        hexes = self.draw(HEX_IDS[size])
        odd = self.odd("id", ["upper", "short", "long", "zeros", "not hex", "empty", "null", "number", "escaped"])
        return {
            None: b'"%s"' % hexes.encode(),
            "upper": b'"%s"' % hexes.upper().encode(), "short": b'"%s"' % hexes[1:].encode(),
            "long": b'"%sa"' % hexes.encode(), "zeros": b'"%s"' % (b"0" * size), "not hex": b'"%s"' % (b"g" * size),
            "empty": b'""', "null": b"null", "number": b"12",
            "escaped": b'"' + b"".join(b"\\u%04x" % ord(c) for c in hexes) + b'"',
        }[odd]  # fmt: skip

    def nanos(self, n: int) -> bytes:
        odd = self.odd("nanos", [b"%d" % n, b'"00%d"' % n, b'" %d"' % n, b'"+%d"' % n, b'"%d.0"' % n, b"%d.0" % n,
                                 b"%de0" % n, b'""', b"null", b"true", b"-%d" % n])  # fmt: skip
        return b'"%d"' % n if odd is None else odd

    def times(self) -> tuple[int, int]:
        start = T0 + self.between(0, 10**9)
        end = start + self.between(0, 10**10)
        odd = self.odd("start", NANOS_ODD)  # 0, 20 digits, beyond 64 bits...
        start = start if odd is None else odd
        odd = self.odd("end", NANOS_ODD + [start - 1])  # ... and before the start
        return start, end if odd is None else odd

    def any_value(self, depth: int = 0) -> bytes:
        """One AnyValue of any kind; arrays and kvlists nest down to depth 10."""
        if depth == 0 and self.chance(5):  # a chain of single-item arrays and kvlists, 0 to 10 deep
            out = self.any_value(10)
            for _ in range(self.upto(10)):
                out = (self.obj([("arrayValue", self.obj([("values", self.array([out]))]))]) if self.coin()
                       else self.obj([("kvlistValue", self.obj([("values", self.array([self.obj([("key", b'"k"'), ("value", out)])]))]))]))  # fmt: skip
            return out
        kinds = ["string", "int", "double", "bool", "bytes", "array", "kvlist", "empty"]
        kind = self.pick(kinds[:5] if depth >= 10 else kinds)
        fields = [self.value_field(kind, depth)]
        if self.dups and self.chance(10):  # two fields in one AnyValue: stringValue is read first, then bool, int...
            fields.append(self.value_field(self.pick(kinds[:7]), depth))
        return self.obj([f for f in fields if f is not None])

    def value_field(self, kind: str, depth: int) -> tuple[str, bytes] | None:
        if kind == "string":
            return "stringValue", self.odd("string-value", [b"null", b"5", b"{}"]) or self.string()
        if kind == "bool":
            return "boolValue", self.odd("bool-value", [b"null", b'"true"', b"1"]) or self.pick([b"true", b"false"])
        if kind == "int":
            odd = self.odd("int-value", INT_ODD)
            if odd is not None:
                return "intValue", odd
            n = self.pick(INT_VALUES) if self.coin() else self.between(-(2**63), 2**63 - 1)
            return "intValue", (b"%d" % n if self.chance(20) else b'"%d"' % n)
        if kind == "double":
            odd = self.odd("double-value", DOUBLE_ODD + DOUBLE_RARE)
            if odd is not None:
                return "doubleValue", odd
            if self.coin():
                return "doubleValue", self.pick(DOUBLE_SPELLINGS)
            x = self.draw(FLOATS)
            spell = self.pick(["repr", "%.17g", "%e", "%.3E", "%.20f"])
            return "doubleValue", (repr(x) if spell == "repr" else spell % x).encode()
        if kind == "bytes":
            return "bytesValue", self.string(base64.b64encode(self.draw(BLOBS)).decode())
        if kind in ("array", "kvlist"):
            n = self.pick([0, 1, 2, 4])
            if kind == "array":
                items = self.array([self.any_value(depth + 1) for _ in range(n)])
            else:
                items = self.array([self.key_value(self.pick(["k", "j", "", "é"]), depth + 1) for _ in range(n)])
            # values null, missing, a bare list, the whole value null
            odd = self.odd("list-value", [b'{"values":null}', b"{}", items, b"null"])
            return kind + "Value", odd or self.obj([("values", items)])
        return None  # the empty AnyValue {}

    def key_value(self, key: str, depth: int = 0) -> bytes:
        odd = self.odd("key-value", ["no value", "null value", "no key", "null key"])
        if odd is None:
            return self.obj([("key", self.string(key)), ("value", lambda: self.any_value(depth))])
        return self.obj({"no value": [("key", self.string(key))], "null value": [("key", self.string(key)), ("value", b"null")],
                         "no key": [("value", b'{"stringValue":"v"}')], "null key": [("key", b"null"), ("value", b"{}")]}[odd])  # fmt: skip

    def attributes(self, keys: list[str]) -> bytes:
        odd = self.odd("attributes", [b"null", b"[]", b"{}", b'"a"'])
        if odd is not None:
            return odd
        out = []
        for _ in range(self.pick([0, 1, 2, 3, 5])):
            k = self.pick(keys) if self.coin() else self.text()
            if k in HOT_KEYS and self.coin():
                out.append(self.obj([("key", self.string(k)), ("value", self.pick(HOT_VALUES))]))
            else:
                out.append(self.key_value(k))
        if out and self.dups and self.chance(30):  # the same key twice: the first place, the last value
            out.insert(self.upto(len(out)), out[self.upto(len(out) - 1)])
        return self.array(out)

    def status(self) -> bytes:
        odd = self.odd("status", [b"null", b"{}", b'{"code":"STATUS_CODE_ERROR"}', b'{"code":"2"}', b'{"code":3}', b'{"code":-1}',
                                  b'{"code":null}', b'{"code":1.0}', b'{"code":"ERROR"}', b'{"code":2,"message":null}',
                                  b'{"code":1,"message":""}', b'{"code":2,"message":5}', b"[]"])  # fmt: skip
        if odd is not None:
            return odd
        fields = [("code", self.pick([b"0", b"1", b"2", b'"STATUS_CODE_OK"']))]
        if self.coin():
            fields.append(("message", self.string()))
        return self.obj(fields)

    def event(self) -> bytes:
        fields: list[tuple[str, object]] = [("timeUnixNano", self.nanos(T0 + self.upto(10**6)))]
        odd = self.odd("event-time", [[], [("timeUnixNano", b'"0"')], [("timeUnixNano", b"0")], [("timeUnixNano", b"null")]])
        if odd is not None:  # no time, or 0
            fields = list(odd)
        odd = self.odd("event-name", [b"null", b"5", b'""'])
        if odd is not None:
            fields.append(("name", odd))
        elif self.chance(80):
            fields.append(("name", self.string()))
        if self.coin():
            fields.append(("attributes", self.attributes(SPAN_KEYS)))
        return self.obj(fields)

    def link(self) -> bytes:
        fields = [("traceId", self.id(32)), ("spanId", self.id(16))]
        if self.coin():
            fields.append(("attributes", self.attributes(SPAN_KEYS)))
        return self.obj(fields)

    def span(self) -> bytes:
        start, end = self.times()
        fields: list[tuple[str, object]] = [("traceId", lambda: self.id(32)), ("spanId", lambda: self.id(16))]
        odd = self.odd("parent", [b'""', b"null", b'"ABCDEF0123456789"', b'"0000000000000000"', b"1"])
        if odd is not None:
            fields.append(("parentSpanId", odd))
        elif self.coin():
            fields.append(("parentSpanId", lambda: self.id(16)))
        odd = self.odd("name", [ABSENT, b'""', b"null", b"5"])  # no name, or not a non-empty string
        if odd is None:
            fields.append(("name", lambda: self.string(self.pick(["", "run kubectl "]) + self.text() or "x")))
        elif odd is not ABSENT:
            fields.append(("name", odd))
        odd = self.odd("kind", [b"6", b"-1", b'"SPAN_KIND_SERVER"', b'"1"', b"1.0", b"true", b"null"])
        if odd is not None:
            fields.append(("kind", odd))
        elif self.coin():
            fields.append(("kind", self.pick([b"0", b"1", b"2", b"3", b"4", b"5"])))
        if self.odd("no-start", [ABSENT]) is None:
            fields.append(("startTimeUnixNano", lambda: self.nanos(start)))
        if self.odd("no-end", [ABSENT]) is None:
            fields.append(("endTimeUnixNano", lambda: self.nanos(end)))
        for name, write in (("attributes", lambda: self.attributes(SPAN_KEYS)), ("status", self.status),
                            ("events", lambda: self.array([self.event() for _ in range(self.upto(2))])),
                            ("links", lambda: self.array([self.link() for _ in range(self.upto(2))]))):  # fmt: skip
            if self.coin():
                fields.append((name, self.odd("null-field", [b"null", b"{}", b"[]"]) or write))
        if self.extras and self.chance(30):  # as SDKs write them
            fields += [("traceState", b'""'), ("flags", b"257"), ("droppedAttributesCount", b"0")]
        return self.obj(fields)

    def scope_spans(self) -> bytes:
        spans = lambda: self.array([self.span() for _ in range(self.pick([1, 2, 0, 3]))])  # noqa: E731
        scope = self.obj([("name", self.string(self.pick(["agent", "", "Bearer abcdefghijkl", "é/\u2028"])))])
        # the name before OTLP 0.15, a null or missing scope or name, spans null
        odd = self.odd("scope", [[("instrumentationLibrary", scope), ("spans", spans)], [("scope", b"null"), ("spans", spans)],
                                 [("spans", spans)], [("scope", b'{"name":null}'), ("spans", spans)], [("scope", b"{}")],
                                 [("scope", b'{"name":5}'), ("spans", spans)], [("scope", scope), ("spans", b"null")]])  # fmt: skip
        return self.obj(odd or [("scope", scope), ("spans", spans)])

    def resource_spans(self) -> bytes:
        resource = self.obj([("attributes", self.attributes(RESOURCE_KEYS + HOT_KEYS[:8]))])
        scopes = lambda: self.array([self.scope_spans() for _ in range(self.pick([1, 2, 0]))])  # noqa: E731
        # the name before OTLP 0.15, no or a null resource, no or null scopeSpans
        odd = self.odd("resource", [[("resource", resource), ("instrumentationLibrarySpans", scopes)], [("scopeSpans", scopes)],
                                    [("resource", b"null"), ("scopeSpans", scopes)], [("resource", resource)],
                                    [("resource", resource), ("scopeSpans", b"null")], [("resource", b"{}"), ("scopeSpans", scopes)]])  # fmt: skip
        return self.obj(odd or [("resource", resource), ("scopeSpans", scopes)])

    def line(self) -> bytes:
        out = self.obj([("resourceSpans", lambda: self.array([self.resource_spans() for _ in range(self.pick([1, 2, 0]))]))])
        out = self.odd("line", [b"{}", b'{"resourceSpans":null}', b'{"resourceLogs":[]}', b'{"resourceSpans":{}}']) or out
        # top-level non-objects, trailing garbage, a truncated line
        out = self.bad("line", [b"[]", b"1", b'"x"', b"null", b"true", out + b" x", out + b"}", out + b",", out + out,
                                out[: len(out) // 2]]) or out  # fmt: skip
        if self.spacing == "random":
            out = self.pick([b"", b" ", b"\t", b"\r"]) + out + self.pick([b"", b" ", b"\r", b"\t"])
        return out


@st.composite
def otlp_lines(draw) -> bytes:
    """One OTLP/JSON line (a TracesData object, or something that almost is)."""
    return Writer(draw).line()


@st.composite
def otlp_files(draw) -> bytes:
    """Lines joined by newlines: a line may repeat (resources and scopes are cached), blank
    lines and a byte order mark may appear."""
    lines = draw(st.lists(otlp_lines() | st.sampled_from([b"", b"  ", b"\r", b"\t\x0b\x0c"]), min_size=1, max_size=4))
    if draw(COIN):
        lines.append(lines[0])
    bom = b"\xef\xbb\xbf" if draw(integers(0, 7)) == 7 else b""
    return bom + b"\n".join(lines) + draw(st.sampled_from([b"", b"\n"]))


def single_variations() -> list[tuple[str, bytes, bytes]]:
    """(name, line, base) for every odd and bad variation the Writer knows: `line` is a seeded
    random `base` line (which the Python fast path takes) with that one variation."""
    out = []
    for kind, places in (("odd", ODD_PLACES), ("bad", BAD_PLACES)):
        for where in places:
            for i in itertools.count():
                try:
                    for seed in range(len(out), len(out) + 100):  # a different base line for each
                        w = Writer(SeededDraw(seed), script=(kind, where, i))
                        line = w.line()
                        base = Writer(SeededDraw(seed), script=("none", None, 0)).line()
                        if w.applied is not None and python_fast(base, fresh_rows()):
                            out.append((f"{kind} {where} {w.applied!r}"[:80], line, base))
                            break
                    else:
                        raise AssertionError(f"no seeded line has a place for {kind} {where}")
                except NoSuchVariation:
                    break
    return out


# --- the oracles ------------------------------------------------------------------------------

DECODE_CONFIGS = {
    "default redactor": {},
    "no redaction patterns": {"redactor": Redactor(patterns=[])},
    "small limits": {"limits": SMALL},
}


@pytest.mark.usefixtures("quick_shrinking")
def test_files_decode_alike_with_and_without_the_extension():
    """Oracle A: generated files give the same tables, refusals and redactions, with the
    default redactor, with no redaction patterns, and with small limits."""
    native()

    @settings(FUZZ, max_examples=200)
    @given(data=otlp_files())
    def check(data):
        for name, config in DECODE_CONFIGS.items():
            try:
                same_decoded(data, **config)
            except AssertionError as e:
                raise AssertionError(f"with {name}: {e}") from None

    check()


@pytest.mark.usefixtures("quick_shrinking")
def test_every_line_the_extension_takes_gives_the_python_fast_paths_rows():
    """Oracle B: per line (`walk`) and per file (`walk_lines`), under the default and small
    limits, what the extension takes the Python fast path takes, with identical row tuples
    (types included) and redactions. Also checks the lines exercise both outcomes."""
    native()
    seen = Counter()

    @settings(FUZZ, max_examples=400)
    @given(data=otlp_files())
    def check(data):
        for limits in (Limits(), SMALL):
            for line in data.split(b"\n"):
                if line and not line.isspace():
                    seen[limits is SMALL, same_rows(line, limits), python_fast(line, fresh_rows(limits))] += 1
            same_rows_by_walk_lines(data, limits)

    check()
    for small in (False, True):
        assert seen[small, True, True] >= 50, f"too few lines taken by the extension to compare rows: {dict(seen)}"
        assert seen[small, False, False] >= 50, f"too few lines declined: {dict(seen)}"


def test_every_single_variation_of_a_line_is_read_alike():
    """Each odd and bad variation the Writer knows, alone in an otherwise plain line (seeded,
    not drawn by Hypothesis, so that every one is tried): both oracles, on the line alone and
    between two plain lines. All failures are listed."""
    native()
    failures = []
    for name, line, base in single_variations():
        between = base + b"\n" + line + b"\n" + base
        for oracle, check in (("walk", lambda: same_rows(line)), ("decode", lambda: same_decoded(line)),
                              ("walk_lines between plain lines", lambda: same_rows_by_walk_lines(between)),
                              ("decode between plain lines", lambda: same_decoded(between))):  # fmt: skip
            try:
                check()
            except AssertionError as e:
                failures.append(f"{name}, {oracle}: {str(e).splitlines()[0][:150]}\n    line: {line[:300]!r}")
                break
    assert not failures, f"{len(failures)} variations read differently:\n" + "\n".join(failures)


def test_rows_a_declining_walk_appended_are_rolled_back(monkeypatch):
    """`otlp._walk_fast` rolls back the rows, refusals and redactions a `walk` appended before
    returning False: every body then decodes as it does without the extension."""
    calls = []

    def walk(text, rows):
        calls.append(text)
        rows.spans.append(tuple(f"junk{i}" if f.type == "string" else None for i, f in enumerate(list(schema.SPAN_SCHEMA)[:-2])))
        rows.refuse("nowhere", "junk", None)
        rows.redactions += 7
        return False

    bodies = [
        line_of(span()),  # taken by the Python fast path
        line_of(span(traceId=TRACE.upper())),  # stored by the careful path
        line_of(span(), span(name="")),  # one span refused
    ]
    for body in bodies:
        with monkeypatch.context() as m:
            m.setattr(otlp, "_native", None, raising=False)
            want = otlp.decode_json_body(body, ingested_at=AT)
        with monkeypatch.context() as m:
            m.setattr(otlp, "_native", types.SimpleNamespace(walk=walk), raising=False)
            rows = fresh_rows()
            assert otlp._walk_fast(body, rows) == python_fast(body, fresh_rows())
            assert rows.redactions == 0 and rows.refused == []
            got = otlp.decode_json_body(body, ingested_at=AT)
        assert got.spans.equals(want.spans) and got.events.equals(want.events)
        assert got.refused == want.refused and got.redactions == want.redactions
    assert calls, "otlp._walk_fast never called otlp._native.walk"


def test_the_extension_is_built():
    """The C extension is compiled in this environment, and otlp reads with it."""
    mod = native()
    assert mod is importlib.import_module("afterfix.ingest._otlpjson"), f"otlp._native is {mod!r}; {BUILD}"
    assert callable(mod.walk)


EXAMPLE_FILES = sorted((ROOT / "traces" / "examples").glob("*.jsonl")) + [ROOT / "tests/ingest/data/collector_file_exporter.jsonl"]


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_the_extension_takes_every_line_of_the_example_files(path):
    """Canonical OTLP/JSON, as SDKs and the Collector write it, is read natively, not declined."""
    data = path.read_bytes()
    for n, line in enumerate(data.splitlines(), 1):
        assert same_rows(line), f"{path.name} line {n} was declined by the extension"
    assert native().walk_lines(data, 0, 0, fresh_rows())[0] == len(data)
    same_rows_by_walk_lines(data)
    same_decoded(data)


# --- explicit cases, most likely to go wrong --------------------------------------------------


def kv(key: str, value) -> dict:
    return {"key": key, "value": value}


def span(**over) -> dict:
    sp = {"traceId": TRACE, "spanId": SPAN, "name": "execute_tool kubectl", "kind": 3,
          "startTimeUnixNano": str(T0), "endTimeUnixNano": str(T0 + 2_000_000), "attributes": []}  # fmt: skip
    sp.update(over)
    return sp


def line_of(*spans: dict, resource: list | None = None, scope: str = "agent") -> bytes:
    return orjson.dumps({"resourceSpans": [{"resource": {"attributes": resource or []},
                                            "scopeSpans": [{"scope": {"name": scope}, "spans": list(spans)}]}]})  # fmt: skip


def alike(text: bytes, limits: Limits = Limits(), *, taken: bool = True) -> None:
    """Both oracles on one line; `taken`: the extension must read it (the Python fast path does)."""
    assert python_fast(text, fresh_rows(limits)), "the case is meant for the fast path"
    assert same_rows(text, limits) or not taken, f"the extension declined {text!r}"
    same_decoded(text, limits=limits)


def test_key_order_does_not_matter():
    """scopeSpans before resource, spans before scope, value before key, a span's fields backwards."""
    sp = (b'{"attributes":[{"value":{"stringValue":"kubectl"},"key":"tool.name"}],"endTimeUnixNano":"%d",'
          b'"startTimeUnixNano":"%d","name":"n","spanId":"%s","traceId":"%s"}' % (T0 + 5, T0, SPAN.encode(), TRACE.encode()))
    alike(b'{"resourceSpans":[{"scopeSpans":[{"spans":[%s],"scope":{"name":"s"}}],'
          b'"resource":{"attributes":[{"value":{"stringValue":"r1"},"key":"session.id"}]}}]}' % sp)


def test_string_escapes_are_rewritten_as_orjson_writes_them():
    """Escaped input (\\u00e9, \\/, surrogate pairs, \\u0000...) is stored as orjson writes the
    decoded text in JSON columns, and as plain text in names, in every place a string goes."""
    s = rb'"\u00e9\/\b\f\n\r\t\u0000\u001F\ud83d\ude00\u2028\u007f\"\\ \u00E9 raw:' + "é☃😀\u2028".encode() + b'"'
    sp = (b'{"traceId":"%s","spanId":"%s","name":%s,"startTimeUnixNano":"%d","endTimeUnixNano":"%d",'
          b'"status":{"code":2,"message":%s},"attributes":[{"key":%s,"value":{"stringValue":%s}}],'
          b'"events":[{"timeUnixNano":"%d","name":%s,"attributes":[{"key":"k","value":{"stringValue":%s}}]}],'
          b'"links":[{"traceId":"%s","spanId":"%s","attributes":[{"key":%s,"value":{"stringValue":%s}}]}]}'
          % (TRACE.encode(), SPAN.encode(), s, T0, T0 + 1, s, s, s, T0, s, s, TRACE.encode(), SPAN.encode(), s, s))  # fmt: skip
    alike(b'{"resourceSpans":[{"resource":{"attributes":[{"key":%s,"value":{"stringValue":%s}}]},'
          b'"scopeSpans":[{"scope":{"name":%s},"spans":[%s]}]}]}' % (s, s, s, sp))


def with_double(spelling: bytes) -> bytes:
    value = b'{"doubleValue":%s}' % spelling
    return line_of(span(attributes=[kv("a", {})])).replace(
        b'"attributes":[{"key":"a","value":{}}]',
        b'"attributes":[{"key":"d","value":%s},{"key":"a","value":{"arrayValue":{"values":[%s]}}}]' % (value, value),
    )


@pytest.mark.parametrize("spelling", DOUBLE_SPELLINGS + DOUBLE_RARE, ids=lambda b: b.decode()[:24])
def test_doubles_are_written_as_orjson_writes_them(spelling):
    """A doubleValue, however spelled (exponents, -0, integers, 20 digits, "NaN"), is stored as
    orjson writes that float (1e+16, -0.0, 1e-7, null for NaN...)."""
    alike(with_double(spelling), taken=spelling not in DOUBLE_RARE)


def test_a_duplicate_attribute_key_keeps_its_first_place_and_last_value():
    """As a dict does: {"a": 3, "b": 2}, in attributes, kvlists, events and the resource."""
    dup = [kv("a", {"intValue": "1"}), kv("b", {"intValue": "2"}), kv("a", {"intValue": "3"})]
    nested = kv("n", {"kvlistValue": {"values": dup}})
    text = line_of(span(attributes=dup + [nested], events=[{"timeUnixNano": str(T0), "attributes": dup}]), resource=dup)
    alike(text, taken=False)  # the extension may leave repeated keys to Python


def test_a_duplicate_known_field_counts_last():
    """Two "name" keys and two "attributes" keys in one span: the last of each is read."""
    sp = (b'{"traceId":"%s","spanId":"%s","name":"first","attributes":[{"key":"tool.name","value":{"stringValue":"x"}}],'
          b'"startTimeUnixNano":"%d","endTimeUnixNano":"%d","name":"second",'
          b'"attributes":[{"key":"tool.name","value":{"stringValue":"y"}}],"name":"third"}' % (TRACE.encode(), SPAN.encode(), T0, T0))
    alike(b'{"resourceSpans":[{"scopeSpans":[{"spans":[%s]}]}]}' % sp, taken=False)  # it may leave these to Python


def test_hot_columns_read_the_resource():
    """afterfix.run.id and afterfix.incident.id on the resource fill the columns; a resource's
    afterfix.run.id wins over the span's session.id; numbers become text."""
    res = [kv("service.name", {"intValue": "7"}), kv("afterfix.run.id", {"intValue": "42"}),
           kv("afterfix.incident.id", {"stringValue": "INC-1"})]  # fmt: skip
    alike(line_of(span(attributes=[kv("session.id", {"stringValue": "s-1"})]), span(spanId="00f067aa0ba902b8"), resource=res))


@pytest.mark.parametrize("kind", ["TOOL", "tool", "Llm", "chaın", "AGENT", "unknown", ""])
def test_openinference_kinds_map_to_operations(kind):
    """openinference.span.kind fills `operation` as str.upper() reads it (chaın is CHAIN)."""
    alike(line_of(span(attributes=[kv("openinference.span.kind", {"stringValue": kind})])))


@pytest.mark.parametrize("value", [{"intValue": "12"}, {"intValue": 12}, {"doubleValue": 12.0}, {"doubleValue": 12.5},
                                   {"stringValue": " 12 "}, {"stringValue": "-3"}, {"boolValue": True}, {}],
                         ids=lambda v: orjson.dumps(v).decode())  # fmt: skip
def test_token_counts_of_every_type(value):
    """Token counts accept integers, integral floats and integer strings; others leave null."""
    alike(line_of(span(attributes=[kv("gen_ai.usage.input_tokens", value), kv("llm.token_count.completion", value)])))


def test_credentials_in_the_resource_and_scope_are_counted():
    """The resource's and the scope's redactions are counted as they are read, once per use."""
    res = [kv("db", {"stringValue": "password=hunter2"})]
    text = line_of(span(), span(spanId="00f067aa0ba902b8"), resource=res, scope="Bearer abcdefghijkl")
    alike(text)
    same_decoded(text + b"\n" + text)


def test_top_level_arrays_are_measured_as_orjson_writes_them():
    """Limits.max_attribute_bytes applies to an array's orjson text, escapes included (\\u0000
    is 6 bytes): arrays just under and just over 64 bytes go different ways."""
    for s in ["a" * 14, "\x00" * 2, "é" * 7, '"' * 7]:
        for n in range(1, 6):
            text = line_of(span(attributes=[kv("a", {"arrayValue": {"values": [{"stringValue": s}] * n}})]))
            same_rows(text, SMALL)
            same_decoded(text, limits=SMALL)


def unknown(value: bytes) -> bytes:
    """A canonical line with an unknown span field holding `value` (any bytes)."""
    return line_of(span(traceState="@")).replace(b'"traceState":"@"', b'"traceState":' + value)


# Lines the Python fast path declines (the careful path then stores or refuses them): the
# extension must decline them too, or it would store what the fast path never does.
DECLINED = {
    "uppercase-trace-id": line_of(span(traceId=TRACE.upper())),
    "uppercase-link-id": line_of(span(links=[{"traceId": TRACE.upper(), "spanId": SPAN}])),
    "zero-span-id": line_of(span(spanId="0" * 16)),
    "escaped-zero-span-id": line_of(span(spanId="@")).replace(b'"@"', b'"' + b"\\u0030" * 16 + b'"'),
    "time-of-20-digits": line_of(span(endTimeUnixNano="0" + str(T0 + 5))),
    "time-beyond-64-bits": line_of(span(endTimeUnixNano=0)).replace(b'"endTimeUnixNano":0', b'"endTimeUnixNano":%d' % 2**64),
    "end-before-start": line_of(span(endTimeUnixNano=str(T0 - 1))),
    "kind-as-string": line_of(span(kind="1")),
    "kind-6": line_of(span(kind=6)),
    "status-code-3": line_of(span(status={"code": 3})),
    "null-scope": line_of(span()).replace(b'"scope":{"name":"agent"}', b'"scope":null'),
    "instrumentation-library": line_of(span()).replace(b'"scope":', b'"instrumentationLibrary":'),
    "instrumentation-library-spans": line_of(span()).replace(b'"scopeSpans":', b'"instrumentationLibrarySpans":'),
    "int-value-plus": line_of(span(attributes=[kv("a", {"intValue": "+1"})])),
    "int-value-64-bits": line_of(span(attributes=[kv("a", {"intValue": str(2**63)})])),
    "int-value-fullwidth-digits": line_of(span(attributes=[kv("a", {"intValue": "１２"})])),
    "double-value-word": line_of(span(attributes=[kv("a", {"doubleValue": "nan"})])),
    "double-value-beyond-float": line_of(span(attributes=[kv("a", {"doubleValue": "@"})])).replace(b'"@"', b"1e400"),
    "string-value-null": line_of(span(attributes=[kv("a", {"stringValue": None})])),
    "duplicate-key-first-invalid": line_of(span()).replace(b'"name":"execute_tool kubectl"', b'"name":5,"name":"x"'),
    "trailing-garbage": line_of(span()) + b" x",
    "trailing-comma": line_of(span()).replace(b"]}]}", b"],}]}"),
    "truncated": line_of(span())[:-3],
    "top-level-array": b"[" + line_of(span()) + b"]",
    "no-resourceSpans": b'{"resourceLogs":[]}',
    "byte-order-mark": b"\xef\xbb\xbf" + line_of(span()),
    "raw-control-character": line_of(span(name="a\tb")).replace(b"a\\tb", b"a\tb"),
    "lone-surrogate-in-name": line_of(span(name="@")).replace(b'"@"', b'"\\ud800"'),
    "invalid-utf8-in-unknown-field": unknown(b'"\xff"'),
    "encoded-surrogate-in-unknown-field": unknown(b'"\xed\xa0\x80"'),
    "trailing-comma-in-unknown-field": unknown(b"[1,]"),
    "single-quotes-in-unknown-field": unknown(b"{'a':1}"),
    "deep-unknown-field": unknown(b"[" * 5000 + b"]" * 5000),
}
DECLINED_SMALL = {  # under SMALL limits
    "string-over-limit": line_of(span(attributes=[kv("a", {"stringValue": "x" * 17})])),
    "array-over-limit": line_of(span(attributes=[kv("a", {"arrayValue": {"values": [{"stringValue": "0123456789"}] * 6}})])),
    "too-deep": line_of(span(attributes=[kv("a", {"arrayValue": {"values": [{"arrayValue": {"values": [{"arrayValue": {}}]}}]}})])),
    "too-many": line_of(span(attributes=[kv(f"k{i}", {}) for i in range(4)])),
    "too-many-in-kvlist": line_of(span(attributes=[kv("a", {"kvlistValue": {"values": [kv(f"k{i}", {}) for i in range(4)]}})])),
}


@pytest.mark.parametrize(("text", "limits"), [(t, Limits()) for t in DECLINED.values()] + [(t, SMALL) for t in DECLINED_SMALL.values()],
                         ids=[*DECLINED, *DECLINED_SMALL])  # fmt: skip
def test_lines_the_python_fast_path_declines_are_declined(text, limits):
    """Lines that differ from canonical OTLP/JSON in one way the fast path does not take (or that
    are not OTLP/JSON): the extension leaves them to Python too."""
    assert not python_fast(text, fresh_rows(limits)), "the case is meant to be declined by the Python fast path"
    assert not native().walk(text, fresh_rows(limits)), f"the extension took {text!r}"
    same_decoded(text, limits=limits)
    same_decoded(line_of(span()) + b"\n" + text + b"\n" + line_of(span(spanId="00f067aa0ba902b8")), limits=limits)


# Byte strings that corrupt JSON in telling ways when dropped into a real line.
SPLICES = [b'"', b"\\", b"{", b"}", b"[", b"]", b",", b":", b"null", b"1e999", b"-0", b"\\u0000", b"\\ud800", b"\xff",
           b"\xc3", b'"x"', b"0", b"18446744073709551616", b'{"stringValue":"a"}', b'{"arrayValue":{"values":[]}}']  # fmt: skip


def mutated(rnd: random.Random, line: bytes) -> bytes:
    """`line` with 1-4 random edits: a byte changed, a splice inserted, a run deleted or
    copied elsewhere, or the rest cut off."""
    b = bytearray(line)
    for _ in range(rnd.randint(1, 4)):
        op, i = rnd.random(), rnd.randrange(len(b) + 1)
        if op < 0.3 and b:
            b[min(i, len(b) - 1)] = rnd.randrange(256)
        elif op < 0.5:
            b[i:i] = rnd.choice(SPLICES)
        elif op < 0.7:
            del b[i : i + rnd.randint(1, 20)]
        elif op < 0.8:
            del b[i:]
        else:
            j = rnd.randrange(len(b) + 1)
            b[i:i] = b[j : j + rnd.randint(1, 60)]
    return bytes(b)


def test_mutated_lines_of_the_example_files_decode_alike():
    """Real lines, randomly broken (seeded): whatever the edits make of them, files of three
    decode alike with the extension and without it, under both limits."""
    lines = [ln for path in EXAMPLE_FILES for ln in path.read_bytes().split(b"\n") if ln.strip() and len(ln) < 20000]
    rnd = random.Random(20261127)
    for _ in range(1000):
        data = b"\n".join(mutated(rnd, rnd.choice(lines)) for _ in range(3))
        same_decoded(data)
        same_decoded(data, limits=SMALL)
