"""The OTLP/HTTP receiver: `POST /v1/traces` and `POST /v1/metrics` in protobuf or JSON, optionally gzipped.

A request is answered 200 only once its decoded (and redacted) rows are fsynced in the spool;
the ingester commits them afterwards. Refused spans and metric data points go to the quarantine
table and are reported in `partial_success` (`rejected_spans`, `rejected_data_points`). Everything else gets the status OTLP/HTTP clients expect:
400 undecodable (the reason in a google.rpc.Status, or its JSON), 401 bad token, 404 other
paths, 413 too large (gzip bombs included), 415 other content types, 503 with Retry-After
while the ingester is behind, so that memory stays bounded and clients retry later.

Two control routes serve whoever runs the capture (the notebook extension's capture process,
monitoring): `GET /afterfix/status` answers the capture's status as JSON, `POST /afterfix/flush`
commits what was received and answers `{"flushed": true|false, "status": {...}}`. They follow the
same bearer token rule as `/v1/traces`. Both signals share everything but their decoder
(`otlp` for traces, `otlp_metrics` for metrics) and their response message.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import logging
import socket
import threading
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from .._exceptions import ConfigError, DecodeError
from . import otlp, otlp_metrics

if TYPE_CHECKING:
    from .ingester import Ingester
    from .spool import Spool

log = logging.getLogger(__name__)

PATH = "/v1/traces"
METRICS_PATH = "/v1/metrics"
SIGNALS = {PATH: "traces", METRICS_PATH: "metrics"}
STATUS_PATH = "/afterfix/status"
FLUSH_PATH = "/afterfix/flush"
FLUSH_TIMEOUT_S = 10.0
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
RETRY_AFTER_S = 1
# How long a request whose body was read waits for the ingester to commit before it is told to
# retry: a commit takes well under this, and waiting costs the client far less than a retry.
ROOM_WAIT_S = 2.0
MAX_CONCURRENT_BODIES = 4  # bodies held in memory at once; the rest wait, then get 503
_DRAIN_FACTOR = 4  # read and discard bodies up to this many times the limit, so the client sees the answer

# The google.rpc.Code sent with each HTTP error status.
_RPC_CODE = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    404: code_pb2.NOT_FOUND,
    405: code_pb2.UNIMPLEMENTED,
    411: code_pb2.INVALID_ARGUMENT,
    413: code_pb2.RESOURCE_EXHAUSTED,
    415: code_pb2.INVALID_ARGUMENT,
    429: code_pb2.RESOURCE_EXHAUSTED,
    500: code_pb2.INTERNAL,
    503: code_pb2.UNAVAILABLE,
}


class _Refuse(Exception):
    """Answer the request with this status and message."""

    def __init__(self, status: int, message: str, *, retry_after: int | None = None, close: bool = False):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.close = close


@dataclass
class ReceiverStats:
    requests: int = 0
    accepted: int = 0  # requests answered 200
    spans: int = 0  # spans accepted (spooled)
    refused_spans: int = 0
    points: int = 0  # metric data points accepted (spooled)
    refused_points: int = 0
    rejected_requests: int = 0  # answered with an error status
    busy: int = 0  # answered 503 because the ingester was behind
    last_error: str | None = None


class Control(Protocol):
    """What the control routes report on and flush: the capture the receiver belongs to."""

    def status(self) -> dict[str, Any]: ...

    def flush(self, timeout: float = 10) -> bool: ...


def status_json(status: dict[str, Any]) -> dict[str, Any]:
    """`status` with its times as ISO 8601 strings (naive UTC, as the store keeps them): JSON-ready."""
    return {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in status.items()}


class Receiver:
    """OTLP/HTTP trace and metrics receiver on a background thread (ThreadingHTTPServer).

    `control` (set by the capture that owns the receiver) answers the status and flush routes;
    without it they answer 404.
    """

    def __init__(self, ingester: "Ingester", spool: "Spool", *, host: str = "127.0.0.1", port: int = 4318,
                 token: str | None = None, limits: otlp.Limits | None = None, redactor: Any = None):
        self.ingester = ingester
        self.spool = spool
        self.host = host
        self._port = port
        self.token = token
        self.limits = limits or otlp.Limits()
        self.redactor = redactor
        self._stats = ReceiverStats()
        self._stats_lock = threading.Lock()
        self._bodies = threading.BoundedSemaphore(MAX_CONCURRENT_BODIES)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._request_no = 0
        self.control: Control | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{PATH}"

    @property
    def metrics_url(self) -> str:
        """Where OTLP/HTTP metric exporters post: `url` with `/v1/metrics` instead of `/v1/traces`."""
        return self.url[: -len(PATH)] + METRICS_PATH

    @property
    def stats(self) -> ReceiverStats:
        with self._stats_lock:
            return ReceiverStats(**self._stats.__dict__)

    def start(self) -> None:
        if self._server is not None:
            return
        handler = type("OTLPHandler", (_Handler,), {"receiver": self})
        server_class = _Server6 if ":" in self.host else _Server
        if self.token is None and self.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("afterfix receiver: listening on %s without a token: anyone who can reach it can write "
                        "traces; pass token=... (afterfix serve --token)", self.host)
        try:
            server = server_class((self.host, self._port), handler)
        except OSError as e:
            raise ConfigError(f"cannot listen on {self.host}:{self._port} ({e.strerror}): "
                              "another receiver may be running there; pass another port, or port 0 for any free one") from e
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"afterfix-receiver-{self.port}", daemon=True)
        self._thread.start()
        threading.Thread(target=self._warm_up, name="afterfix-receiver-warm-up", daemon=True).start()

    def _warm_up(self) -> None:
        """Decode one made-up span and drop it: the decoder's first use imports pandas (through
        pyarrow) and more, 0.5-1.9 s measured here, which the first client would otherwise wait for."""
        req = trace_service_pb2.ExportTraceServiceRequest()
        span = req.resource_spans.add().scope_spans.add().spans.add()
        span.trace_id, span.span_id, span.name = b"\x01" * 16, b"\x01" * 8, "afterfix warm-up"
        span.start_time_unix_nano = span.end_time_unix_nano = 1
        try:
            self._decode("protobuf", req.SerializeToString(), 0)
        except Exception:  # only a head start: a real request meets the same error and reports it
            log.debug("afterfix receiver: warm-up decode failed", exc_info=True)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._port = server.server_address[1]
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    # -- one request ---------------------------------------------------------------------

    def _count(self, **changes: Any) -> None:
        with self._stats_lock:
            for k, v in changes.items():
                if k == "last_error":
                    self._stats.last_error = v
                else:
                    setattr(self._stats, k, getattr(self._stats, k) + v)

    def _next_request_no(self) -> int:
        with self._stats_lock:
            self._request_no += 1
            self._stats.requests += 1
            return self._request_no

    def handle(self, h: "_Handler") -> None:
        """Answer one POST; every outcome is a response, never an exception."""
        number = self._next_request_no()
        kind = _kind(h.headers.get("Content-Type"))
        signal = SIGNALS.get(urlsplit(h.path).path)
        body_read = False
        try:
            self._check(h, kind)
            if not self._bodies.acquire(timeout=RETRY_AFTER_S):
                self._count(busy=1)
                raise _Refuse(503, "too many requests at once: retry later", retry_after=RETRY_AFTER_S)
            try:
                body = _read_body(h, self.limits.max_body_bytes)
                body_read = True
                if not self.ingester.wait_for_room(ROOM_WAIT_S):
                    self._count(busy=1)
                    raise _Refuse(503, "the store is behind: retry later", retry_after=RETRY_AFTER_S)
                body = _decompress(h.headers.get("Content-Encoding"), body, self.limits.max_body_bytes)
                decoded = self._decode(kind, body, number, signal)
                del body
                if decoded.spans.num_rows or decoded.refused or (signal == "metrics" and decoded.metrics.num_rows):
                    try:
                        self.spool.submit(decoded, self.ingester)
                    except OSError as e:  # the spool cannot persist it: do not acknowledge
                        raise _Refuse(503, f"cannot write the spool ({e}): retry later", retry_after=RETRY_AFTER_S) from e
            finally:
                self._bodies.release()
        except _Refuse as r:
            self._count(rejected_requests=1, last_error=f"HTTP {r.status}: {r}")
            # An unread body would be taken for the next request on this connection: read and
            # drop it when it is of a sane size, else close the connection after answering.
            close = r.close or (not body_read and not _discard_body(h, self.limits.max_body_bytes * _DRAIN_FACTOR))
            h.answer(r.status, *_status_body(kind, r.status, str(r)), retry_after=r.retry_after, close=close)
            return
        except (ConnectionError, TimeoutError) as e:  # the client went away mid-body: nobody to answer
            self._count(rejected_requests=1, last_error=f"request {number}: connection lost while reading: {e}")
            h.close_connection = True
            return
        except Exception as e:  # a bug must not kill the server thread or hang the client
            log.exception("afterfix receiver: request %d failed", number)
            self._count(rejected_requests=1, last_error=f"HTTP 500: {type(e).__name__}: {e}")
            h.answer(500, *_status_body(kind, 500, f"internal error: {type(e).__name__}: {e}"))
            return
        if signal == "metrics":
            refused = decoded.rejected_points
            self._count(accepted=1, points=decoded.metrics.num_rows, refused_points=refused)
            h.answer(200, *_success_body(kind, refused, _refusal_message(decoded.refused, "data point", refused), signal))
            return
        refused = len(decoded.refused)
        self._count(accepted=1, spans=decoded.spans.num_rows, refused_spans=refused)
        h.answer(200, *_success_body(kind, refused, _refusal_message(decoded.refused)))

    def _check(self, h: "_Handler", kind: str | None) -> None:
        if urlsplit(h.path).path not in SIGNALS:
            raise _Refuse(404, f"no such path {urlsplit(h.path).path!r}: {_WHERE}")
        self._check_token(h)
        if kind is None:
            raise _Refuse(415, f"Content-Type {h.headers.get('Content-Type')!r} is not supported: "
                               f"send {PROTOBUF} or {JSON}")
        encoding = (h.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            raise _Refuse(415, f"Content-Encoding {encoding!r} is not supported: send gzip or none")

    def _check_token(self, h: "_Handler") -> None:
        if self.token is not None:
            auth = h.headers.get("Authorization", "")
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
                raise _Refuse(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>' "
                                   "(OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20<token>)")

    def handle_control(self, h: "_Handler", route: str) -> None:
        """Answer `GET /afterfix/status` or `POST /afterfix/flush` with JSON; never an exception."""
        try:
            self._check_token(h)
            if self.control is None:
                raise _Refuse(404, f"no capture answers {route} here")
            if route == FLUSH_PATH:
                flushed = self.control.flush(FLUSH_TIMEOUT_S)
                body: dict[str, Any] = {"flushed": flushed, "status": status_json(self.control.status())}
            else:
                body = status_json(self.control.status())
        except _Refuse as r:
            close = not _discard_body(h, self.limits.max_body_bytes)
            h.answer(r.status, *_status_body("json", r.status, str(r)), close=close)
            return
        except Exception as e:  # a broken status must not kill the server thread
            log.exception("afterfix receiver: %s failed", route)
            h.answer(500, *_status_body("json", 500, f"internal error: {type(e).__name__}: {e}"))
            return
        close = not _discard_body(h, self.limits.max_body_bytes)
        h.answer(200, JSON, json.dumps(body, default=str).encode(), close=close)

    def _decode(self, kind: str, body: bytes, number: int, signal: str = "traces"):
        kwargs: dict[str, Any] = {"source": "otlp-http", "request": number, "limits": self.limits}
        if self.redactor is not None:
            kwargs["redactor"] = self.redactor
        decoder = otlp_metrics if signal == "metrics" else otlp
        try:
            if kind == "protobuf":
                return decoder.decode_protobuf(body, **kwargs)
            return decoder.decode_json_body(body, **kwargs)
        except DecodeError as e:
            where = f"request {number}"  # the decoders name it already; older messages may not
            raise _Refuse(e.status, str(e) if str(e).startswith(where) else f"{where}: {e}") from e


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def handle_error(self, request, client_address) -> None:
        # A client that hangs up before reading its answer is routine, not a traceback on stderr.
        log.debug("afterfix receiver: connection from %s ended with an error", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    receiver: Receiver
    protocol_version = "HTTP/1.1"  # keep-alive: exporters reuse their connection
    server_version = "afterfix"
    timeout = 30

    def do_POST(self) -> None:  # noqa: N802 - the http.server naming
        path = urlsplit(self.path).path
        if path == FLUSH_PATH:
            self.receiver.handle_control(self, FLUSH_PATH)
        elif path == STATUS_PATH:
            self._wrong_method("GET")
        else:
            self.receiver.handle(self)

    def do_GET(self) -> None:  # noqa: N802
        if urlsplit(self.path).path == STATUS_PATH:
            self.receiver.handle_control(self, STATUS_PATH)
        else:
            self._not_post()

    def _wrong_method(self, method: str) -> None:
        path = urlsplit(self.path).path
        close = not _discard_body(self, self.receiver.limits.max_body_bytes)
        self.answer(405, *_status_body("json", 405, f"{self.command} is not supported here: use {method} {path}"), close=close)

    def _not_post(self) -> None:
        path = urlsplit(self.path).path
        if path == FLUSH_PATH:
            return self._wrong_method("POST")
        if path == STATUS_PATH:
            return self._wrong_method("GET")
        status, msg = (405, f"{self.command} is not supported: POST to {path}") if path in SIGNALS else \
            (404, f"no such path {path!r}: {_WHERE}")
        self.receiver._next_request_no()
        self.receiver._count(rejected_requests=1, last_error=f"HTTP {status}: {msg}")
        close = not _discard_body(self, self.receiver.limits.max_body_bytes)
        self.answer(status, *_status_body(_kind(self.headers.get("Content-Type")), status, msg), close=close)

    do_PUT = do_DELETE = do_PATCH = do_HEAD = _not_post  # noqa: N815

    def answer(self, status: int, content_type: str, body: bytes, *, retry_after: int | None = None, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="afterfix"')
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server signature
        log.debug("afterfix receiver: %s " + format, self.address_string(), *args)


_WHERE = f"traces are received at POST {PATH}, metrics at POST {METRICS_PATH}"


# -- bodies ----------------------------------------------------------------------------------


def _kind(content_type: str | None) -> str | None:
    media = (content_type or "").split(";")[0].strip().lower()
    return {PROTOBUF: "protobuf", JSON: "json"}.get(media)


def _read_body(h: _Handler, limit: int) -> bytes:
    if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
        return _read_chunked(h, limit)
    length = h.headers.get("Content-Length")
    if length is None:
        raise _Refuse(411, "Content-Length is required (or Transfer-Encoding: chunked)", close=True)
    try:
        n = int(length)
        if n < 0:
            raise ValueError
    except ValueError:
        raise _Refuse(400, f"Content-Length {length!r} is not a byte count", close=True) from None
    if n > limit:
        raise _Refuse(413, f"body of {n} bytes is over the limit of {limit} bytes: send smaller batches "
                           "(BatchSpanProcessor max_export_batch_size)")
    body = h.rfile.read(n)
    if len(body) < n:
        raise ConnectionError(f"body ended after {len(body)} of {n} bytes")
    return body


def _discard_body(h: _Handler, cap: int) -> bool:
    """Read and drop a declared body of at most `cap` bytes; False when the connection must close."""
    if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
        return False
    try:
        n = int(h.headers.get("Content-Length") or 0)
    except ValueError:
        return False
    if n > cap:
        return False
    while n > 0:
        chunk = h.rfile.read(min(n, 1 << 20))
        if not chunk:
            return False
        n -= len(chunk)
    return True


def _read_chunked(h: _Handler, limit: int) -> bytes:
    parts, total = [], 0
    while True:
        line = h.rfile.readline(1024)
        try:
            size = int(line.split(b";")[0].strip(), 16)
        except ValueError:
            raise _Refuse(400, "malformed chunked body", close=True) from None
        if size == 0:
            while h.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(parts)
        total += size
        if total > limit:
            raise _Refuse(413, f"chunked body is over the limit of {limit} bytes: send smaller batches", close=True)
        parts.append(h.rfile.read(size))
        h.rfile.readline(8)  # the CRLF after each chunk


def _decompress(encoding: str | None, body: bytes, limit: int) -> bytes:
    if (encoding or "identity").strip().lower() != "gzip":
        return body
    # Inflate at most limit + 1 bytes: a small gzip bomb never expands past the cap in memory.
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(body, limit + 1)
        if len(out) > limit:
            raise _Refuse(413, f"gzip body inflates to over the limit of {limit} bytes: send smaller batches")
        if not d.eof:
            raise _Refuse(400, "gzip body is truncated")
    except zlib.error as e:
        raise _Refuse(400, f"Content-Encoding is gzip but the body is not valid gzip ({e})") from None
    return out


# -- response bodies --------------------------------------------------------------------------


def _status_body(kind: str | None, status: int, message: str) -> tuple[str, bytes]:
    """A google.rpc.Status in the request's encoding (JSON when it had none we know)."""
    msg = status_pb2.Status(code=_RPC_CODE.get(status, code_pb2.UNKNOWN), message=message)
    if kind == "protobuf":
        return PROTOBUF, msg.SerializeToString()
    return JSON, json_format.MessageToJson(msg, indent=None).encode()


def _success_body(kind: str, rejected: int, message: str, signal: str = "traces") -> tuple[str, bytes]:
    if signal == "metrics":
        resp = metrics_service_pb2.ExportMetricsServiceResponse()
        if rejected or message:  # a refused line of no points still says why
            resp.partial_success.rejected_data_points = rejected
            resp.partial_success.error_message = message
    else:
        resp = trace_service_pb2.ExportTraceServiceResponse()
        if rejected:
            resp.partial_success.rejected_spans = rejected
            resp.partial_success.error_message = message
    if kind == "protobuf":
        return PROTOBUF, resp.SerializeToString()
    return JSON, json_format.MessageToJson(resp, indent=None).encode()


def _refusal_message(refused: list, what: str = "span", count: int | None = None) -> str:
    """What was refused, for partial_success: how many `what`s (`count`, else one per refusal) and the first three places."""
    if not refused:
        return ""
    shown = "; ".join(f"{r.location}: {r.reason}" for r in refused[:3])
    more = f" (and {len(refused) - 3} more)" if len(refused) > 3 else ""
    n = len(refused) if count is None else count
    return f"{n} {what}(s) refused and kept in the quarantine table: {shown}{more}"
