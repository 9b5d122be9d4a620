"""Trace documents that trace backends' query APIs answer, read as the OTLP/JSON they carry.

* Grafana Tempo, `GET /api/traces/<id>`: `{"batches": [ResourceSpans, ...]}`; `GET
  /api/v2/traces/<id>` wraps a trace as `{"trace": {"batches" or "resourceSpans": [...]}, ...}`.
* Jaeger api_v3, `GET /api/v3/traces/<id>` and `GET /api/v3/traces?query...`:
  `{"result": {"resourceSpans": [...]}}`, one such object per line when the answer streams; an
  error is `{"error": {"httpCode": ..., "message": ...}}`.

Both are OTLP inside, written as proto3 JSON rather than OTLP/JSON: ids may be base64 (Tempo, and
Jaeger's gateway before it used the OTLP/JSON marshaller) instead of hex, enums names
("SPAN_KIND_SERVER", "STATUS_CODE_ERROR", which the OTLP/JSON decoder reads already) instead of
integers, and older Tempo writes `instrumentationLibrarySpans`. Each span is made OTLP/JSON here
(hex ids) and then read by the OTLP/JSON decoder's own span reader, so limits, redaction,
quarantine and stored-once are those of any OTLP/JSON line. A span whose id cannot be read is
refused alone, named by its JSON path in the document (`batches[0].scopeSpans[1].spans[3]`).

An id of n bytes (16 for a trace id, 8 for a span id) is hex when it is 2n hex characters (either
case); otherwise it must be base64 (standard or URL-safe, padding optional) of exactly n bytes.
The two cannot be confused: base64 of 16 bytes is 24 characters, of 8 bytes 12. A 64-bit trace
id (16 hex characters, or base64 of 8 bytes, as older Jaeger clients made) is padded with zeros
on the left to 128 bits, as Jaeger and Tempo themselves do.

Files: `sniff()` tells a file that is one JSON document over many lines (pretty-printed, as these
answers are usually saved) from JSON lines, by content; `decode_document()` reads such a file;
`decode_json_lines()` reads JSON lines of which some are these answers, written compactly (a
file whose first line is one).
"""

from __future__ import annotations

import binascii
from base64 import b64decode
from datetime import datetime

import orjson

from . import otlp, otlp_json
from .redact import DEFAULT, Redactor
from .rows import _HEX, RECORD_MAX, Bad, Decoded, Limits, Rows, _kind, _show, paused_gc

__all__ = ["DOCUMENT_MAX", "sniff", "walk", "decode_document", "decode_json_lines", "decode_answer", "hex_id"]

# The largest file read as one document: parsed whole, it takes several times its size in memory.
DOCUMENT_MAX = 256 * 1024 * 1024
# What compact answers start with (Go writes an object's fields in order, the trace first). In
# compact OTLP/JSON these never occur: its objects start with other keys, and quotes inside
# string values are escaped. Searching a chunk for them costs about a fifth of decoding it, so
# only files whose first line is an answer are searched (see `sniff`).
_MARKS = (b'{"batches"', b'{"result"', b'{"trace"', b'{"error"')
_BOM = b"\xef\xbb\xbf"
_SHAPES = ('OTLP/JSON {"resourceSpans": [...]}, Tempo {"batches": [...]} or {"trace": {...}}, '
           'or Jaeger api_v3 {"result": {"resourceSpans": [...]}}')  # fmt: skip


# -- ids ------------------------------------------------------------------------------------------


def _b64(text: str) -> bytes | None:
    body = text.rstrip("=")
    if len(text) - len(body) > 2:
        return None
    alt = b"-_" if ("-" in body or "_" in body) else None
    try:
        return b64decode(body + "=" * (-len(body) % 4), altchars=alt, validate=True)
    except (binascii.Error, ValueError):
        return None


def hex_id(value, size: int, where: str):
    """An id of `size` bytes as OTLP/JSON's lowercase hex (see the module docstring); a value that
    is not a non-empty string is returned as it is, for the OTLP/JSON reader to name."""
    if value.__class__ is not str or not value:
        return value
    low = value.lower()
    if not low.strip(_HEX):
        if len(low) == 2 * size:
            return low
        if size == 16 and len(low) == 16:  # a 64-bit trace id
            return "0" * 16 + low
    raw = _b64(value)
    if raw is not None:
        if len(raw) == size:
            return raw.hex()
        if size == 16 and len(raw) == 8:
            return "0" * 16 + raw.hex()
    raise Bad(f"{where} {_show(value)} is neither {2 * size} hex characters nor base64 of {size} bytes "
              f"(a {'trace' if size == 16 else 'span'} id is {size} bytes)")  # fmt: skip


def _as_otlp(sp):
    """One span with its ids (and its links' ids) as OTLP/JSON hex; anything else unchanged."""
    if sp.__class__ is not dict:
        return sp  # the span reader refuses it, saying what it is
    out = dict(sp)
    out["traceId"] = hex_id(sp.get("traceId"), 16, "traceId")
    out["spanId"] = hex_id(sp.get("spanId"), 8, "spanId")
    if sp.get("parentSpanId"):
        out["parentSpanId"] = hex_id(sp["parentSpanId"], 8, "parentSpanId")
    links = sp.get("links")
    if links.__class__ is list:
        out["links"] = [
            dict(ln, traceId=hex_id(ln.get("traceId"), 16, f"links[{i}].traceId"),
                 spanId=hex_id(ln.get("spanId"), 8, f"links[{i}].spanId")) if ln.__class__ is dict else ln
            for i, ln in enumerate(links)
        ]  # fmt: skip
    return out


# -- documents ------------------------------------------------------------------------------------


def _unwrap(obj) -> tuple[str, str, object] | None:
    """(whose, JSON path, resource spans) of a trace document; None when it is none of them."""
    if obj.__class__ is not dict:
        return None
    if "resourceSpans" in obj:
        return "OTLP/JSON", "resourceSpans", obj["resourceSpans"]
    if "batches" in obj:
        return "Tempo", "batches", obj["batches"]
    inner = obj.get("trace")
    if inner.__class__ is dict:
        for key in ("batches", "resourceSpans"):
            if key in inner:
                return "Tempo", f"trace.{key}", inner[key]
        if not inner:  # a trace without spans
            return "Tempo", "trace", []
    inner = obj.get("result")
    if inner.__class__ is dict and ("resourceSpans" in inner or not inner):
        return "Jaeger", "result.resourceSpans", inner.get("resourceSpans") or []
    return None


def _not_a_trace(obj) -> str:
    """Why `obj` is not a trace document, and what to fetch instead."""
    if obj.__class__ is not dict:
        return f"the document is {_kind(obj)}, not a trace document ({_SHAPES})"
    err = obj.get("error")
    if err.__class__ is dict:
        code = err.get("httpCode") or err.get("grpcCode")
        msg = err.get("message")
        said = ": ".join(str(x) for x in (f"HTTP {code}" if code else None, msg) if x)
        return f"the document is an error answer ({_show(said, 120)}), not a trace: fetch the trace again"
    traces = obj.get("traces")
    if traces.__class__ is list and all(t.__class__ is dict and "traceID" in t for t in traces):
        return ("the document is a Tempo search answer (trace ids, no spans): fetch its traces with "
                "`afterfix pull --tempo URL --trace-id ID ...`, or search and fetch at once with --service")  # fmt: skip
    data = obj.get("data")
    if data.__class__ is list and data and data[0].__class__ is dict and "processes" in data[0]:
        return ("the document is Jaeger's UI answer (/api/traces, Jaeger's own span model), not OTLP: "
                "fetch the trace from Jaeger's api_v3 instead (/api/v3/traces/<trace id>)")  # fmt: skip
    if "resourceMetrics" in obj or "resourceLogs" in obj:
        return "the document holds metrics or logs, not traces; OTLP/JSON metrics are read one object per line"
    keys = ", ".join(_show(k, 30) for k in list(obj)[:5]) or "none"
    return f"the document is not a trace document (keys: {keys}); expected {_SHAPES}"


def walk(obj, rows: Rows, at: str = "") -> str:
    """Every span of one trace document (`_unwrap`'s shapes) into `rows`; returns whose it is.

    Raises Bad when `obj` is no trace document at all. A bad resource, scope or span is refused
    alone, at `at` + its JSON path, as `otlp_json.walk` refuses them in OTLP/JSON lines.
    """
    found = _unwrap(obj)
    if found is None:
        raise Bad(_not_a_trace(obj))
    whose, path, rss = found
    otlp_json.walk_resource_spans(rss, rows, at, path, span=_as_otlp)
    return whose


def _walk_each(obj, rows: Rows, at: str) -> None:
    """`walk` for one document, or for each document of a list of them (as `jq -s` saves them)."""
    if obj.__class__ is list and obj and all(x.__class__ is dict for x in obj):
        for i, doc in enumerate(obj):
            mark = rows.mark()
            try:
                walk(doc, rows, f"{at}[{i}].")
            except Bad as e:
                rows.rollback(mark)
                rows.refuse(f"{at}[{i}]" if at else f"[{i}]", e.args[0], doc)
        return
    walk(obj, rows, at)


# -- files ----------------------------------------------------------------------------------------


def _first_line(data) -> bytes:
    """The first non-blank line of `data` (bytes or a memory map), stripped."""
    pos, size = 0, len(data)
    if data[:3] == _BOM:
        pos = 3
    while pos < size:
        end = data.find(b"\n", pos)
        end = size if end < 0 else end
        line = bytes(data[pos : min(end, pos + (1 << 20) + 2)]).strip()  # only its start matters when longer
        if line:
            return line
        pos = end + 1
    return b""


def sniff(data) -> str:
    """How a JSON file's content reads, from its first non-blank line:

    * "lines": JSON lines, the OTLP/JSON file exporter's format (or not JSON at all);
    * "answers": JSON lines of which the first is a compact Tempo or Jaeger answer (or a Jaeger
      error object): read with `decode_json_lines`, which looks for more of them;
    * "pretty": the line only opens an object or a list: one pretty-printed document;
    * "document": the line opens one but is not a whole JSON value: a document over several
      lines, or a broken first line of JSON lines.

    Only the first line is looked at, so OTLP/JSON lines cost nothing more to read than before.
    """
    line = _first_line(data)
    if line[:1] not in (b"{", b"["):
        return "lines"
    if line in (b"{", b"["):
        return "pretty"
    if line[-1:] not in (b"}", b"]"):
        return "document"
    if len(line) > 1 << 20:  # a long first line that ends like a value: JSON lines
        return "answers" if line.startswith(_MARKS) else "lines"
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return "document"
    if obj.__class__ is dict and "resourceSpans" not in obj and "resourceMetrics" not in obj and (
            _unwrap(obj) is not None or obj.get("error").__class__ is dict):
        return "answers"
    return "lines"


def decode_document(
    data: bytes,
    *,
    source: str,
    limits: Limits = Limits(),
    redactor: Redactor | None = DEFAULT,
    ingested_at: datetime | None = None,
) -> Decoded:
    """A file that `sniff` found to be a document: one trace document, or a list of them.

    Refusals are located by JSON path (`batches[0].scopeSpans[0].spans[2]`), or as "document"
    for the whole file. A file that is not one JSON value after all is read as JSON lines (a
    broken first line of OTLP/JSON lines reads as it always did), unless it is plainly
    pretty-printed: then it is refused whole, with the place the JSON breaks.
    """
    from .otlp_metrics import decode_lines

    data = bytes(data)
    if data.startswith(_BOM):
        data = data[3:]
    rows = Rows(source, limits, redactor, ingested_at)
    if len(data) > DOCUMENT_MAX:
        rows.refuse("document", too_large(len(data)), data[:RECORD_MAX])
        return rows.finish()
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        if sniff(data) != "pretty":
            return decode_lines(data, source=source, limits=limits, redactor=redactor, ingested_at=ingested_at,
                                traces=decode_json_lines)  # fmt: skip
        rows.refuse("document", f"{otlp._json_error(data, e, 'file')}; a saved Tempo or Jaeger answer must be one "
                    "whole JSON document: was the download cut off? Fetch it again", data[:RECORD_MAX])  # fmt: skip
        return rows.finish()
    with paused_gc():
        try:
            _walk_each(obj, rows, "")
        except Bad as e:
            rows.refuse("document", e.args[0], data[:RECORD_MAX])
    return rows.finish()


def too_large(size: int) -> str:
    return (f"the document is {size} bytes, over the limit of {DOCUMENT_MAX} for one JSON document; "
            "save one trace per file, or export OTLP/JSON lines")  # fmt: skip


def decode_json_lines(
    data: bytes,
    *,
    source: str,
    first_line: int = 1,
    limits: Limits = Limits(),
    redactor: Redactor | None = DEFAULT,
    ingested_at: datetime | None = None,
) -> Decoded:
    """`otlp.decode_json_lines`, except that a line holding a compact Tempo or Jaeger answer (or a
    Jaeger error object) is read here; every other line goes to the OTLP/JSON decoder unchanged,
    with its line number kept."""
    kw = {"source": source, "limits": limits, "redactor": redactor, "ingested_at": ingested_at}
    data = bytes(data) if not isinstance(data, str) else data.encode()
    if not any(m in data for m in _MARKS):
        return otlp.decode_json_lines(data, first_line=first_line, **kw)
    if first_line == 1 and data.startswith(_BOM):
        data = data[3:]
    lines = data.split(b"\n")
    rows = Rows(source, limits, redactor, ingested_at)
    taken = False
    with paused_gc():
        for i, line in enumerate(lines):
            if len(line) > limits.max_body_bytes or not any(m in line for m in _MARKS):
                continue  # the OTLP/JSON decoder's (it refuses an over-long line, naming the limit)
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # the OTLP/JSON decoder says what is wrong with it
            if obj.__class__ is not dict or "resourceSpans" in obj or "resourceMetrics" in obj:
                continue
            where = f"line {first_line + i}"
            mark = rows.mark()
            try:
                walk(obj, rows, where + ", ")
            except Bad as e:
                rows.rollback(mark)
                rows.refuse(where, e.args[0], line)
            lines[i] = b""  # the OTLP/JSON decoder skips it, and the line numbers after it stay right
            taken = True
    rest = otlp.decode_json_lines(b"\n".join(lines) if taken else data, first_line=first_line, **kw)
    return Decoded.concat([rows.finish(), rest])


def decode_answer(
    body: bytes,
    *,
    source: str,
    limits: Limits = Limits(),
    redactor: Redactor | None = DEFAULT,
    ingested_at: datetime | None = None,
) -> Decoded:
    """One HTTP answer of a trace API: one JSON document, or (Jaeger streaming) one per line.

    Raises Bad when the answer is not JSON or holds no trace document at all (an error object,
    say); a bad span inside is refused alone.
    """
    body = bytes(body)
    if body.startswith(_BOM):
        body = body[3:]
    rows = Rows(source, limits, redactor, ingested_at)
    with paused_gc():
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            lines = [ln for ln in body.split(b"\n") if ln.strip()]
            if len(lines) < 2:
                raise Bad(otlp._json_error(body, e, "answer")) from None
            for n, line in enumerate(body.split(b"\n"), 1):
                if not line.strip():
                    continue
                try:
                    doc = orjson.loads(line)
                except orjson.JSONDecodeError as e2:
                    raise Bad(f"line {n}: {otlp._json_error(line, e2, 'line')}") from None
                walk(doc, rows, f"line {n}, ")
        else:
            walk(obj, rows, "")
    return rows.finish()
