"""OTLP/JSON encoding of OpenTelemetry SDK spans, as the OpenTelemetry Collector's file exporter
writes it, and the exporter that appends it to a file.

One export is one line holding one `TracesData` object: resourceSpans → scopeSpans → spans, with
lowerCamelCase field names, trace and span ids as lowercase hex (not base64), 64-bit integers
(timestamps, intValue) as decimal strings, enums (span kind, status code) as integers, and fields
at their default value left out. The spans are first encoded to protobuf by the same encoder the
OTLP/HTTP exporter uses, so a file and an HTTP export carry the same content.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Sequence

import orjson
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = ["OTLPJsonFileExporter", "encode_json_line", "traces_data", "message_to_otlp_json"]


def traces_data(spans: Sequence[ReadableSpan]) -> trace_pb2.TracesData:
    """The spans as one protobuf `TracesData` (grouped by resource, then instrumentation scope)."""
    request = encode_spans(spans)
    # ExportTraceServiceRequest and TracesData share field 1 (resource_spans): same bytes.
    return trace_pb2.TracesData(resource_spans=request.resource_spans)


def message_to_otlp_json(message: trace_pb2.TracesData) -> dict:
    """A `TracesData` message as an OTLP/JSON object (hex ids, int64 as strings, enums as ints)."""
    data = json_format.MessageToDict(message, use_integers_for_enums=True)
    # protobuf's JSON mapping writes bytes as base64; OTLP/JSON wants trace and span ids in hex.
    for rs_json, rs in zip(data.get("resourceSpans", ()), message.resource_spans):
        for ss_json, ss in zip(rs_json.get("scopeSpans", ()), rs.scope_spans):
            for span_json, span in zip(ss_json.get("spans", ()), ss.spans):
                _hex_ids(span_json, span)
                for link_json, link in zip(span_json.get("links", ()), span.links):
                    _hex_ids(link_json, link)
    return data


def _hex_ids(obj: dict, message) -> None:
    obj["traceId"] = message.trace_id.hex()
    obj["spanId"] = message.span_id.hex()
    if getattr(message, "parent_span_id", b""):
        obj["parentSpanId"] = message.parent_span_id.hex()


def encode_json_line(spans: Sequence[ReadableSpan]) -> bytes:
    """One OTLP/JSON line (with its trailing newline) for `spans`."""
    return orjson.dumps(message_to_otlp_json(traces_data(spans))) + b"\n"


class OTLPJsonFileExporter(SpanExporter):
    """Appends each export to `path` as one OTLP/JSON line, and flushes it before returning.

    The line is written with a single write call, so a reader tailing the file sees whole lines
    (or nothing) as long as exports come from this one exporter. The folder is created if missing.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file = None
        self._closed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed:
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        line = encode_json_line(spans)
        with self._lock:
            try:
                if self._file is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._file = open(self.path, "ab")
                self._file.write(line)
                self._file.flush()
            except OSError:
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # every export is already flushed

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            if self._file is not None:
                self._file.close()
                self._file = None
