"""Normalized rows: what decoders hand on (`Decoded`), what they refuse (`Refusal`), the sizes
they accept (`Limits`), and the builder that redacts every string and assembles Arrow tables
with `schema.SPAN_SCHEMA` and `schema.EVENT_SCHEMA`.

Decoders append plain tuples (one per span, in `SPAN_COLUMNS` order without `source` and
`ingested_at`) and raise `Bad` for a record that cannot be stored; `Rows.finish()` redacts whole
columns in one pass, recomputes the hot columns of the few spans whose attributes changed, and
builds the tables once. The rows are kept in a `Columns` of the compiled module: Arrow buffers
that the compiled OTLP/JSON walker fills without a Python object per value, and into which
tuples are converted as they are appended. Without the compiled module, `TupleColumns` keeps
the tuples and converts them at the end.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
from dataclasses import dataclass
from datetime import datetime, timezone

import orjson
import pyarrow as pa

from .. import schema
from . import mapping
from .redact import Redactor

# The compiled module (setup.py builds it when a C compiler works): the column builder here, the
# OTLP walkers in `otlp`. Without it, or with $AFTERFIX_NO_NATIVE set to anything but 0 (the name
# setup.py reads to skip building it), the same rows come from the Python code, slower.
ENV_NO_NATIVE = "AFTERFIX_NO_NATIVE"
if os.environ.get(ENV_NO_NATIVE, "") not in ("", "0"):
    _native, NATIVE_MISSING = None, f"${ENV_NO_NATIVE} is set"
else:
    try:
        _native = importlib.import_module(f"{__package__}._otlpjson")
    except ImportError as e:  # depends on the build
        _native = None
        NATIVE_MISSING = ("it was not built when afterfix was installed" if e.name == f"{__package__}._otlpjson"
                          else f"it cannot be loaded: {e}")
    else:
        NATIVE_MISSING = None
_Columns = None if _native is None else _native.Columns

RECORD_MAX = 64 * 1024  # bytes of a refused record kept in quarantine


@dataclass(frozen=True)
class Limits:
    """Sizes beyond which input is refused rather than stored."""

    max_body_bytes: int = 16 * 1024 * 1024  # one HTTP body / one JSON line / one protobuf frame
    max_attribute_bytes: int = 256 * 1024  # one attribute value, serialized
    max_depth: int = 8  # nesting of arrayValue/kvlistValue
    max_attributes: int = 1024  # per span (and per event, link, resource)


@dataclass
class Refusal:
    """One record that was not stored: where it was, why, and its (redacted, truncated) text."""

    source: str
    location: str
    reason: str
    record: str | None


@dataclass
class Decoded:
    """What one input decoded to: span and event rows, refusals, and how many values were redacted."""

    spans: pa.Table
    events: pa.Table
    refused: list[Refusal]
    redactions: int

    def quarantine_table(self, received_at: datetime | None = None) -> pa.Table:
        """The refusals as rows of `schema.QUARANTINE_SCHEMA`."""
        at = _naive_utc(received_at)
        r = self.refused
        return pa.table(
            {
                "received_at": pa.array([at] * len(r), pa.timestamp("us")),
                "source": [x.source for x in r],
                "location": [x.location for x in r],
                "reason": [x.reason for x in r],
                "record": [x.record for x in r],
            },
            schema=schema.QUARANTINE_SCHEMA,
        )

    @staticmethod
    def concat(parts: list["Decoded"]) -> "Decoded":
        """One `Decoded` holding every part's rows and refusals, in order."""
        parts = list(parts)
        spans = [p.spans for p in parts] or [schema.SPAN_SCHEMA.empty_table()]
        events = [p.events for p in parts] or [schema.EVENT_SCHEMA.empty_table()]
        return Decoded(
            spans=pa.concat_tables(spans),
            events=pa.concat_tables(events),
            refused=[r for p in parts for r in p.refused],
            redactions=sum(p.redactions for p in parts),
        )


@contextlib.contextmanager
def paused_gc():
    """Pauses the cyclic garbage collector while decoding.

    Decoding allocates millions of small dicts and tuples and creates no reference cycles, yet
    each allocation burst triggers collections that rescan every live row: measured here, that
    is a third of OTLP/JSON decoding time. Only the state found on entry is restored.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _naive_utc(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(timezone.utc).replace(tzinfo=None)
    if at.tzinfo is not None:
        at = at.astimezone(timezone.utc).replace(tzinfo=None)
    return at


class Bad(Exception):
    """A record cannot be stored; `args[0]` says why (and what to do about it)."""


_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}
# OTLP/JSON requires integers, but proto3 JSON parsers also accept enum names: so do we.
_JSON_KINDS = {**_KINDS, **{f"SPAN_KIND_{v}": v for v in _KINDS.values()}}
_JSON_STATUS = {**_STATUS, **{f"STATUS_CODE_{v}": v for v in _STATUS.values()}}
_HEX = "0123456789abcdef"
_Z32, _Z16 = "0" * 32, "0" * 16
_ZB16, _ZB8 = bytes(16), bytes(8)
_U64 = 1 << 64
_I64 = 1 << 63
_FLOAT_WORDS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _kind(v) -> str:
    """How a JSON value's type reads in a message."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(v), type(v).__name__)  # fmt: skip


def _show(v, n: int = 40) -> str:
    """A value as it reads in JSON, cut to `n` characters, for messages."""
    try:
        s = orjson.dumps(v).decode() if not isinstance(v, str) else '"' + v + '"'
    except TypeError:  # e.g. an integer beyond 64 bits
        s = repr(v)
    return s if len(s) <= n else s[: n - 4] + '..."'


class Rows:
    """Rows and refusals of one decode call; `finish()` redacts and builds the tables."""

    def __init__(self, source: str, limits: Limits, redactor: Redactor | None, ingested_at: datetime | None):
        self.source = source
        self.limits = limits
        self.redactor = redactor
        self.ingested_at = _naive_utc(ingested_at)
        self.spans = new_columns(_SPAN_FIELDS)
        self.events = new_columns(_EVENT_FIELDS)
        self.refused: list[Refusal] = []
        self.redactions = 0
        self._resources: dict[str, tuple[str, dict, str | None, int]] = {}  # by JSON text
        self._scopes: dict[str, tuple[str, int]] = {}

    def mark(self) -> tuple[int, int, int, int]:
        """Where the rows stand now, for `rollback`."""
        return len(self.spans), len(self.events), len(self.refused), self.redactions

    def rollback(self, mark: tuple[int, int, int, int]) -> None:
        """Forgets every row, refusal and redaction noted since `mark`."""
        self.spans.truncate(mark[0])
        self.events.truncate(mark[1])
        del self.refused[mark[2] :]
        self.redactions = mark[3]

    def refuse(self, location: str, reason: str, record) -> None:
        """Notes a refused record; its text is kept redacted and cut to RECORD_MAX bytes."""
        size = None
        if record is not None and not isinstance(record, str):
            if isinstance(record, (bytes, bytearray, memoryview)):
                size = len(record)
                record = bytes(record[: 4 * RECORD_MAX]).decode("utf-8", "replace")
            else:
                try:
                    record = orjson.dumps(record).decode()
                except TypeError:
                    record = repr(record)
        if record is not None:
            if size is None:
                size = len(record.encode("utf-8", "replace"))
            record = record[: 4 * RECORD_MAX]  # redacting megabytes to keep 64 KiB would be waste
            if self.redactor is not None:
                record, n = self.redactor.redact(record)
                self.redactions += n
            raw = record.encode("utf-8", "replace")
            if size > RECORD_MAX or len(raw) > RECORD_MAX:
                record = raw[: RECORD_MAX - 64].decode("utf-8", "ignore") + f" ...[truncated from {size} bytes]"
        self.refused.append(Refusal(self.source, location, reason, record))

    def resource(self, attrs: dict) -> tuple[str, dict, str | None]:
        """(redacted JSON, redacted dict, service name) of a resource, cached by content."""
        return self.resource_json(orjson.dumps(attrs).decode(), attrs)

    def resource_json(self, text: str, attrs: dict | None = None) -> tuple[str, dict, str | None]:
        """`resource()` of the attributes whose `orjson.dumps` is `text` (parsed when not given)."""
        hit = self._resources.get(text)
        if hit is None:
            if attrs is None:
                attrs = orjson.loads(text)
            n = 0
            if self.redactor is not None:
                red, n = self.redactor.redact(text)
                if n:
                    box = [red]
                    attrs = _reparse(box, 0, text, self.redactor)
                    red = box[0]
            else:
                red = text
            svc = attrs.get("service.name")
            svc = svc if svc.__class__ is str and svc else mapping.as_text(svc) if svc is not None else None
            hit = self._resources[text] = (red, attrs, svc, n)
        self.redactions += hit[3]
        return hit[0], hit[1], hit[2]

    def scope(self, name) -> str | None:
        if not name:
            return None
        if name not in self._scopes:
            n = 0
            red = name
            if self.redactor is not None:
                red, n = self.redactor.redact(name)
            self._scopes[name] = (red, n)
        red, n = self._scopes[name]
        self.redactions += n
        return red

    def finish(self) -> Decoded:
        """The tables, refusals and redactions. The rows are handed over: call it once."""
        return Decoded(self._span_table(), self._event_table(), self.refused, self.redactions)

    def _redact(self, col: list) -> list[int]:
        n, changed = self.redactor.redact_many(col)
        self.redactions += n
        return changed

    def _redact_json(self, col: list) -> list[tuple[int, object]]:
        """Redacts a column of JSON texts in place; (index, parsed value) of those changed."""
        orig = col[:]
        return [(i, _reparse(col, i, orig[i], self.redactor)) for i in self._redact(col)]

    def _span_table(self) -> pa.Table:
        rows = self.spans
        n = len(rows)
        if not n:
            return schema.SPAN_SCHEMA.empty_table()
        replaced = self._redact_spans(rows) if self.redactor is not None else {}
        arrays = to_arrays(rows, _SPAN_FIELDS)
        for i, values in replaced.items():
            arrays[i] = pa.array(values, _SPAN_FIELDS[i].type)
        arrays.append(pa.repeat(pa.scalar(self.source, pa.string()), n))
        arrays.append(pa.repeat(pa.scalar(self.ingested_at, pa.timestamp("us")), n))
        return pa.Table.from_arrays(arrays, schema=schema.SPAN_SCHEMA)

    def _redact_spans(self, rows) -> dict[int, list]:
        """The span columns that redaction changed, by index: name, status_message, links and
        attributes; and the hot columns, recomputed from the redacted values of the spans whose
        attributes changed."""
        names, msgs = rows.column(3), rows.column(9)
        links, attrs = rows.column(27), rows.column(25)
        touched = set(self._redact(names))
        touched.update(self._redact(msgs))
        touched.update(i for i, _ in self._redact_json(links))
        changed = self._redact_json(attrs)
        touched.update(i for i, _ in changed)
        if not touched:
            return {}
        out = {3: names, 9: msgs, 25: attrs, 27: links}
        if changed:
            hot = [rows.column(i) for i in range(12, 25)]
            resources, trace_ids = rows.column(26), rows.column(0)
            for i, parsed in changed:
                # hot columns come from attributes: recompute them from the redacted values
                for k, v in enumerate(mapping.hot_columns(parsed, orjson.loads(resources[i]), trace_ids[i])):
                    hot[k][i] = v
            out.update((12 + k, col) for k, col in enumerate(hot))
        return out

    def _event_table(self) -> pa.Table:
        rows = self.events
        if not len(rows):
            return schema.EVENT_SCHEMA.empty_table()
        replaced = {}
        if self.redactor is not None:
            names, attrs = rows.column(3), rows.column(5)
            if self._redact(names):
                replaced[3] = names
            if self._redact_json(attrs):
                replaced[5] = attrs
        arrays = to_arrays(rows, _EVENT_FIELDS)
        for i, values in replaced.items():
            arrays[i] = pa.array(values, pa.string())
        return pa.Table.from_arrays(arrays, schema=schema.EVENT_SCHEMA)


_SPAN_FIELDS = list(schema.SPAN_SCHEMA)[:-2]  # without source, ingested_at
_EVENT_FIELDS = list(schema.EVENT_SCHEMA)
_KIND = {pa.string(): "s", pa.timestamp("us"): "l", pa.int64(): "l", pa.int32(): "i", pa.float64(): "d"}
_STRING_MAX = 2**31 - 1  # bytes an Arrow string array holds (int32 offsets): what _narrow cuts to


class TupleColumns(list):
    """Rows as tuples, converted to Arrow at the end: `Columns` in Python, for a build without
    the compiled module."""

    def truncate(self, n: int) -> None:
        del self[n:]

    def column(self, i: int) -> list:
        return [r[i] for r in self]


def new_columns(fields: list[pa.Field]):
    """An empty builder for rows of `fields`: the compiled `Columns`, or `TupleColumns`."""
    if _Columns is None:
        return TupleColumns()
    return _Columns("".join(_KIND[f.type] for f in fields))


def to_arrays(rows, fields: list[pa.Field]) -> list:
    """One Arrow array per field from a builder of `new_columns`. The compiled one hands over
    its buffers as they are (and is empty afterwards); a column of more text than one string
    array holds comes with int64 offsets and is cut into chunks here."""
    if isinstance(rows, TupleColumns):
        # one conversion of all rows beats one per column (and the transposition it needs);
        # every field nullable, as the compiled builder's are
        return pa.array(rows, pa.struct([pa.field(f.name, f.type) for f in fields])).flatten()
    n, out = len(rows), []
    for f, (valid, offsets, data, wide) in zip(fields, rows.buffers(_STRING_MAX)):
        if offsets is None:
            out.append(pa.Array.from_buffers(f.type, n, [pa.py_buffer(valid), pa.py_buffer(data)]))
        elif not wide:
            out.append(pa.Array.from_buffers(f.type, n, [pa.py_buffer(valid), pa.py_buffer(offsets), pa.py_buffer(data)]))
        else:
            out.append(_narrow(pa.Array.from_buffers(pa.large_string(), n, [pa.py_buffer(valid), pa.py_buffer(offsets), pa.py_buffer(data)])))
    return out


def _narrow(big: pa.Array) -> pa.ChunkedArray:
    """A large-string array of more than 2 GiB of text as string chunks under that size each."""
    import pyarrow.compute as pc

    chunks, start, size, n = [], 0, 0, len(big)
    lengths = pc.binary_length(big).fill_null(0).to_pylist()
    for i, k in enumerate(lengths):
        if size + k > _STRING_MAX and i > start:
            chunks.append(big.slice(start, i - start).cast(pa.string()))
            start, size = i, 0
        size += k
    chunks.append(big.slice(start, n - start).cast(pa.string()))
    return pa.chunked_array(chunks, pa.string())


def _reparse(col, i, original: str, redactor: Redactor):
    """The value of JSON text `col[i]` after redaction. Should a custom pattern have broken the
    JSON, the original is redacted value by value instead (and `col[i]` replaced)."""
    try:
        return orjson.loads(col[i])
    except orjson.JSONDecodeError:
        obj = _redact_values(orjson.loads(original), redactor)
        col[i] = orjson.dumps(obj).decode()
        return obj


def _redact_values(v, redactor: Redactor):
    if isinstance(v, str):
        return redactor.redact(v)[0]
    if isinstance(v, dict):
        return {redactor.redact(k)[0]: _redact_values(x, redactor) for k, x in v.items()}
    if isinstance(v, list):
        return [_redact_values(x, redactor) for x in v]
    return v
def _too_big(where: str, size: int, lim: Limits) -> Bad:
    return Bad(
        f"{where} is {size} bytes, over the limit of {lim.max_attribute_bytes} "
        "(Limits.max_attribute_bytes); shorten the value or raise the limit"
    )


def _too_deep(where: str, lim: Limits) -> Bad:
    return Bad(f"{where} nests arrayValue/kvlistValue more than {lim.max_depth} levels deep (Limits.max_depth)")


def _too_many(where: str, n: int, lim: Limits) -> Bad:
    return Bad(f"{where} has {n} entries, over the limit of {lim.max_attributes} (Limits.max_attributes)")


def _sized(x: str, where: str, lim: Limits) -> str:
    if len(x) > lim.max_attribute_bytes >> 2:
        n = len(x.encode("utf-8", "surrogatepass"))
        if n > lim.max_attribute_bytes:
            raise _too_big(where, n, lim)
    return x


