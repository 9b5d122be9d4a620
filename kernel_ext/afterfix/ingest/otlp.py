"""OpenTelemetry traces in (OTLP/JSON and OTLP protobuf), afterfix's rows out.

Decoders return a `Decoded`: Arrow tables with `schema.SPAN_SCHEMA` and `schema.EVENT_SCHEMA`,
plus a `Refusal` for every record that cannot be stored (with its place and what to fix). A bad
span refuses that span only, a bad line that line; nothing partial is ever stored. Every string
that reaches a row passes the redactor first. A span whose parent has not arrived is stored.

Accepted inputs:

* OTLP/JSON lines (`.jsonl`, `.json`, `.ndjson`), as the OpenTelemetry Collector's file exporter
  writes them: each non-empty line is one `TracesData` object. Ids are hex (32 characters for
  trace ids, 16 for span ids), 64-bit integers are decimal strings or numbers, enums integers.
* An OTLP/HTTP body: one `ExportTraceServiceRequest`, as OTLP/JSON or binary protobuf.
* OTLP protobuf files (`.pb`, `.binpb`, `.proto`), framed as the Collector's file exporter writes
  them with `format: proto`: each `ExportTraceServiceRequest` (wire-identical to `TracesData`) is
  preceded by its length as a 4-byte big-endian unsigned integer. A frame not yet complete at
  the end of the data is left for later (`decode_protobuf_file` returns where it stopped). A file
  whose first byte is not 0 and whose first 4 bytes announce no frame that fits in it is read as
  exactly one unframed message. Compressed files (the exporter's `compression: zstd`) are not read.

The formats' details live in `otlp_json` and `otlp_proto`; `rows` holds the result types and
builds the tables. OTLP/JSON lines go first through a compiled walker (`_otlpjson.c`), which
stores exactly what `otlp_json`'s fast path stores and leaves every line it does not read the
same way to it; `otlp_json` stays the reference the walker is tested against. Protobuf is
parsed by opentelemetry-proto (upb), which decides what is a valid request; a compiled reader
(`_otlppb.c`) then reads the rows from the same bytes, and leaves every request it does not
read exactly as `otlp_proto.walk` would to that walk over upb's message, its reference.
"""

from __future__ import annotations

import functools
from datetime import datetime
from pathlib import Path

import msgspec
import orjson
from google.protobuf.message import DecodeError as _PbDecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from .. import convention
from .._exceptions import DecodeError
from . import mapping, otlp_json, otlp_proto
from .redact import DEFAULT, Redactor
from .rows import _KINDS, _STATUS, NATIVE_MISSING, RECORD_MAX, Bad, Decoded, Limits, Refusal, Rows, _native, paused_gc

__all__ = ["Limits", "Refusal", "Decoded", "decode_json_lines", "decode_json_body", "decode_protobuf",
           "decode_protobuf_file", "decode_path", "JSON_SUFFIXES", "PROTOBUF_SUFFIXES"]  # fmt: skip

# _native: the compiled fast paths (setup.py; rows loads them unless $AFTERFIX_NO_NATIVE is set);
# without them the same rows come from otlp_json / otlp_proto, slower
if _native is not None:
    _native.setup(mapping.HOT_KEYS, convention.OI_SPAN_KIND, convention.OI_KIND_TO_OPERATION, mapping.as_text,
                  mapping._count, orjson.dumps, tuple(_KINDS.values()), tuple(f"SPAN_KIND_{v}" for v in _KINDS.values()),
                  tuple(_STATUS.values()), tuple(f"STATUS_CODE_{v}" for v in _STATUS.values()))  # fmt: skip


def decoding_path() -> str:
    """Which OTLP decoding this process uses, in one line (for `afterfix status`)."""
    if _native is not None:
        return "compiled (afterfix.ingest._otlpjson)"
    return f"pure Python, slower: the compiled module is not used ({NATIVE_MISSING or 'turned off'})"


JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
PROTOBUF_SUFFIXES = (".pb", ".binpb", ".proto")


def _gc_paused(fn):
    @functools.wraps(fn)
    def decode(*args, **kw):
        with paused_gc():
            return fn(*args, **kw)

    return decode


def _json_error(text: bytes, err: Exception, what: str) -> str:
    try:
        bytes(text).decode("utf-8")
    except UnicodeDecodeError as u:
        return f"invalid UTF-8 at byte {u.start} of the {what}; OTLP/JSON must be UTF-8"
    return f"the {what} is not valid JSON ({err})"


@_gc_paused
def decode_json_lines(
    data: bytes,
    *,
    source: str,
    first_line: int = 1,
    limits: Limits = Limits(),
    redactor: Redactor | None = DEFAULT,
    ingested_at: datetime | None = None,
) -> Decoded:
    """An OTLP/JSON file (Collector file exporter): each non-empty line is one TracesData.

    `first_line` numbers the first line of `data`, for callers that read a file in pieces.
    """
    if isinstance(data, str):
        data = data.encode()
    data = bytes(data)
    if first_line == 1 and data.startswith(b"\xef\xbb\xbf"):  # a byte order mark some editors write
        data = data[3:]
    rows = Rows(source, limits, redactor, ingested_at)
    mx = limits.max_body_bytes
    pos, i, size = 0, 0, len(data)
    while pos < size:
        if _native is not None:  # every line it can read, up to the first it leaves to us
            pos, i = _native.walk_lines(data, pos, i, rows)
            if pos >= size:
                break
        end = data.find(b"\n", pos)
        end = size if end < 0 else end
        line = data[pos:end]
        where = f"line {first_line + i}"
        pos, i = end + 1, i + 1
        if not line or line.isspace():
            continue
        if len(line) > mx:
            rows.refuse(where, f"the line is {len(line)} bytes, over the limit of {mx} (Limits.max_body_bytes); "
                        "export smaller batches or raise the limit", line[:RECORD_MAX])  # fmt: skip
            continue
        if _walk_fast(line, rows, native=False):
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            rows.refuse(where, _json_error(line, e, "line") + "; each line must be one OTLP/JSON TracesData", line)
            continue
        try:
            otlp_json.walk(obj, rows, where + ", ")
        except Bad as e:
            rows.refuse(where, e.args[0], line)
    return rows.finish()


def _walk_fast(text: bytes, rows: Rows, native: bool = True) -> bool:
    """Stores every span of one TracesData/ExportTraceServiceRequest the fast way, or nothing.

    False (with nothing stored) when the text is anything but well formed: the careful path then
    reads it and says what is wrong, if anything. The compiled walker goes first; what it leaves
    (anything unusual) goes through msgspec and `otlp_json.walk_fast`, which it is tested against.
    msgspec skips unknown fields without checking their UTF-8, which orjson (and so the careful
    path) refuses: non-ASCII text is checked here. `native=False` skips the compiled walker
    (for a line it already left).
    """
    if native and _native is not None and _native_took(_native.walk, text, rows):
        return True
    if not text.isascii():
        try:
            text.decode()
        except UnicodeDecodeError:
            return False
    try:
        obj = otlp_json.DECODER.decode(text)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):  # ValidationError is a DecodeError
        return False
    mark = rows.mark()
    try:
        otlp_json.walk_fast(obj, rows)
    except (otlp_json.Unusual, TypeError, ValueError, OverflowError):  # e.g. a string orjson cannot write
        rows.rollback(mark)
        return False
    return True


def _request_at(request: int | None) -> tuple[str, str]:
    return ("request", "") if request is None else (f"request {request}", f"request {request}, ")


def _check_body_size(body: bytes, name: str, limits: Limits) -> None:
    if len(body) > limits.max_body_bytes:
        raise DecodeError(f"{name}: body is {len(body)} bytes, over the limit of {limits.max_body_bytes}; "
                          "send smaller batches", status=413)  # fmt: skip


@_gc_paused
def decode_json_body(
    body: bytes,
    *,
    source: str = "otlp-http",
    request: int | None = None,
    limits: Limits = Limits(),
    redactor: Redactor | None = DEFAULT,
    ingested_at: datetime | None = None,
) -> Decoded:
    """One ExportTraceServiceRequest as OTLP/JSON (an HTTP body). A body that is not OTLP/JSON at
    all raises `DecodeError` (HTTP 400, or 413 when over `max_body_bytes`); bad spans are refused."""
    name, at = _request_at(request)
    _check_body_size(body, name, limits)
    rows = Rows(source, limits, redactor, ingested_at)
    if _walk_fast(bytes(body), rows):
        return rows.finish()
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise DecodeError(f"{name}: {_json_error(body, e, 'body')}; send OTLP/JSON or application/x-protobuf") from None
    try:
        otlp_json.walk(obj, rows, at)
    except Bad as e:
        raise DecodeError(f"{name}: {e.args[0]}") from None
    return rows.finish()


def _parse_request(body) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    return req


def _walk_request(body, req: ExportTraceServiceRequest, rows: Rows, at: str) -> None:
    """Every span of `req`, which upb parsed from `body`: the compiled reader reads the body
    again when it can (no Python object per field), else `otlp_proto.walk` walks `req`, which
    it is tested against. What it leaves (anything unusual) is read by the walk from scratch."""
    if _native is None or not _native_took(_native.walk_protobuf, body, rows):
        otlp_proto.walk(req, rows, at)


def _native_took(walk, data, rows: Rows) -> bool:
    """Whether the compiled `walk` read `data` into `rows`; when it did not, what it appended
    before leaving the data to Python is rolled back."""
    mark = rows.mark()
    if walk(data, rows):
        return True
    rows.rollback(mark)
    return False


@_gc_paused
def decode_protobuf(
    body: bytes,
    *,
    source: str = "otlp-http",
    request: int | None = None,
    limits: Limits = Limits(),
    redactor: Redactor | None = DEFAULT,
    ingested_at: datetime | None = None,
) -> Decoded:
    """One ExportTraceServiceRequest in binary protobuf (an HTTP body). Garbage or a truncated body
    raises `DecodeError` (HTTP 400, or 413 when over `max_body_bytes`); bad spans are refused."""
    name, at = _request_at(request)
    _check_body_size(body, name, limits)
    try:
        req = _parse_request(body)
    except _PbDecodeError as e:
        raise DecodeError(f"{name}: not an OTLP ExportTraceServiceRequest in protobuf ({e}); "
                          "check the Content-Type (application/x-protobuf or application/json)") from None  # fmt: skip
    rows = Rows(source, limits, redactor, ingested_at)
    _walk_request(body, req, rows, at)
    return rows.finish()


@_gc_paused
def decode_protobuf_file(
    data: bytes,
    *,
    source: str,
    first_byte: int = 0,
    limits: Limits = Limits(),
    redactor: Redactor | None = DEFAULT,
    ingested_at: datetime | None = None,
) -> tuple[Decoded, int]:
    """An OTLP protobuf file (framing in the module docstring): (decoded, bytes consumed).

    Decoding stops before a frame that is not complete yet, so a tailer can resume at the
    returned offset. `first_byte` is the file offset of `data[0]`, for locations.
    """
    rows = Rows(source, limits, redactor, ingested_at)
    data = bytes(data)
    n, mx = len(data), limits.max_body_bytes
    if not n:
        return rows.finish(), 0
    size = int.from_bytes(data[:4], "big") if n >= 4 else n
    if data[0] != 0 and 4 + size > n:  # no frame fits: one unframed message
        if n > mx:
            rows.refuse(f"byte {first_byte}", f"the message is {n} bytes, over the limit of {mx} (Limits.max_body_bytes)", None)
            return rows.finish(), n
        try:
            req = _parse_request(data)
        except _PbDecodeError as e:
            rows.refuse(f"byte {first_byte}", f"neither length-prefixed frames nor one OTLP protobuf message ({e})", None)
            return rows.finish(), n
        _walk_request(data, req, rows, "")
        return rows.finish(), n
    pos = frame = 0
    while pos + 4 <= n:
        size = int.from_bytes(data[pos : pos + 4], "big")
        where = f"frame {frame + 1} (byte {first_byte + pos})"
        if size > mx:
            rows.refuse(where, f"the frame announces {size} bytes, over the limit of {mx} (Limits.max_body_bytes); "
                        "the rest of the file is unreadable (not length-prefixed OTLP protobuf?)", None)  # fmt: skip
            return rows.finish(), n
        if pos + 4 + size > n:
            break  # not written completely yet
        frame += 1
        body = data[pos + 4 : pos + 4 + size]
        try:
            req = _parse_request(body)
        except _PbDecodeError as e:
            rows.refuse(where, f"the frame is not an OTLP ExportTraceServiceRequest ({e}); frame skipped", None)
        else:
            _walk_request(body, req, rows, where + ", ")
        pos += 4 + size
    return rows.finish(), pos


def decode_path(path: str | Path, **kw) -> Decoded:
    """A whole trace file, by suffix: .jsonl/.json/.ndjson as OTLP/JSON lines, .pb/.binpb/.proto
    as an OTLP protobuf file. `kw` goes to the decoder (`source` defaults to the path)."""
    p = Path(path)
    kw.setdefault("source", str(p))
    suffix = p.suffix.lower()
    if suffix not in JSON_SUFFIXES + PROTOBUF_SUFFIXES:
        raise DecodeError(f"{p}: cannot tell the format from the suffix {suffix!r}; "
                          f"name OTLP/JSON files {'/'.join(JSON_SUFFIXES)} and protobuf files {'/'.join(PROTOBUF_SUFFIXES)}")  # fmt: skip
    data = p.read_bytes()
    if suffix in JSON_SUFFIXES:
        return decode_json_lines(data, **kw)
    decoded, used = decode_protobuf_file(data, **kw)
    if used < len(data):
        decoded.refused.append(Refusal(kw["source"], f"byte {used}", f"the file ends inside a frame ({len(data) - used} "
                                       "bytes after the last complete one); was the writer cut off?", None))  # fmt: skip
    return decoded
