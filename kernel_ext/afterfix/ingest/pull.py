"""Traces fetched from a trace backend's query API (Grafana Tempo, Jaeger api_v3) into the store.

`pull()` fetches traces by id, or searches a window for a service's traces and fetches them, and
stores them the way `afterfix ingest` does: each answer is read by `foreign.decode_answer` (the
OTLP/JSON span reader, the redactor, refusals kept in quarantine) and appended with
`Store.append`, which stores each span once, so pulling the same traces twice stores nothing new.

The requests, as each backend documents them:

* Tempo: `GET /api/traces/<id>` (JSON asked for with `Accept: application/json`); a search is
  `GET /api/search?q={ resource.service.name = "NAME" }&start=S&end=E&limit=N` (TraceQL; start
  and end in Unix seconds), whose answer lists trace ids that are then fetched one by one.
* Jaeger api_v3: `GET /api/v3/traces/<id>`; a search is `GET /api/v3/traces?query.serviceName=
  NAME&query.startTimeMin=T&query.startTimeMax=T&query.searchDepth=N` (RFC 3339 times), whose
  answer holds the traces themselves. The snake_case names of those parameters are sent too:
  Jaeger before 2.x's camelCase names reads only them, and later versions read the camelCase ones.

Credentials come as headers (`Authorization: Bearer ...`), or from `user:password@` in the URL
(sent as Basic auth); messages name URLs without them, and a redirect to another host is not
followed (it would carry the credentials there). A request that fails raises `PullError` with one
line: the URL, and the status and reason or what went wrong.
"""

from __future__ import annotations

import base64
import gzip
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone

import orjson
import pyarrow.compute as pc

from .._exceptions import AfterfixError
from .foreign import DOCUMENT_MAX, decode_answer
from .otlp import Decoded, Limits, Refusal
from .redact import Redactor
from .rows import Bad

__all__ = ["BACKENDS", "PullError", "PullFailure", "PullSummary", "Backend", "pull"]

BACKENDS = ("tempo", "jaeger")
NAMES = {"tempo": "Tempo", "jaeger": "Jaeger"}
DEFAULT_TIMEOUT = 30.0
DEFAULT_LIMIT = 100
COMMIT_SPANS = 50_000  # spans decoded before they are committed (and at the end)
REASON_MAX = 200  # characters of a server's error text kept in a message


class PullError(AfterfixError):
    """A request to the trace backend failed: `url` (without credentials), `status` (an HTTP
    status, or None when no answer came) and `reason` in one line."""

    def __init__(self, url: str, reason: str, status: int | None = None, *, api_error: bool = False):
        self.url, self.reason, self.status = url, reason, status
        self.api_error = api_error  # the answer was the API's own error object, not a proxy's or a router's page
        super().__init__(f"GET {url}: {reason}")


@dataclass
class PullFailure:
    """One trace that could not be fetched or read."""

    trace_id: str
    url: str
    reason: str


@dataclass
class PullSummary:
    """What one `pull()` did."""

    backend: str
    url: str  # the backend's base URL, without credentials
    traces: int = 0  # traces fetched and read
    spans_stored: int = 0
    duplicates: int = 0  # spans already in the store, skipped
    refused: list[Refusal] = field(default_factory=list)
    redactions: int = 0
    failures: list[PullFailure] = field(default_factory=list)
    searched: bool = False  # the traces came from a search
    matched: int = 0  # traces the search named
    seconds: float = 0.0


# -- HTTP ------------------------------------------------------------------------------------------


def _display(url: str) -> str:
    """`url` without the user and password it may carry."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class _SameOrigin(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to the same scheme, host and port: the request's headers (its
    credentials) would go along to any other."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        old, new = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(urllib.parse.urljoin(req.full_url, newurl))
        if (old.scheme, old.hostname, old.port) != (new.scheme, new.hostname, new.port):
            raise PullError(_display(req.full_url), f"HTTP {code} {msg}: redirected to another host "
                            f"({_display(new.geturl())}), which is not followed with credentials; "
                            "pull from that URL directly", code)  # fmt: skip
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _said(body: bytes, secrets: list[str]) -> tuple[str, bool]:
    """What an error answer says, in one short line (Jaeger's `error.message`, else its first
    line), and whether it was an API error object."""
    text = ""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        obj = None
    api_error = obj.__class__ is dict and obj.get("error").__class__ is dict
    if api_error:
        text = str(obj["error"].get("message") or "")
    elif obj.__class__ is dict and obj.get("message").__class__ is str:
        text = obj["message"]
    else:
        text = body.decode("utf-8", "replace").strip().splitlines()[0] if body.strip() else ""
    for s in secrets:  # an answer that echoes the request's credentials does not print them
        if s:
            text = text.replace(s, "[REDACTED]")
    text = " ".join(text.split())
    return (text if len(text) <= REASON_MAX else text[: REASON_MAX - 1] + "…"), api_error


class Backend:
    """One trace backend's HTTP API: its base URL, the headers every request carries, a timeout."""

    def __init__(self, kind: str, url: str, *, headers: dict[str, str] | None = None, timeout: float = DEFAULT_TIMEOUT):
        if kind not in BACKENDS:
            raise ValueError(f"backend {kind!r} is not one of {', '.join(BACKENDS)}")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{_display(url)!r} is not an http:// or https:// URL (e.g. http://tempo:3200)")
        self.kind, self.timeout = kind, timeout
        self.headers = {"Accept": "application/json", "Accept-Encoding": "gzip", "User-Agent": "afterfix-pull"}
        self.headers.update(headers or {})
        secrets = [v for k, v in (headers or {}).items()]
        if parts.username is not None and not any(k.lower() == "authorization" for k in self.headers):
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
            secrets += [self.headers["Authorization"], password]
        # the base without credentials: they travel in the Authorization header only
        self.base = _display(url).rstrip("/")
        # header values (and a scheme's credentials after "Bearer "/"Basic ") never reach a message
        self._secrets = sorted({x for v in secrets if v for x in (v, v.split(" ", 1)[-1]) if len(x) >= 4},
                               key=len, reverse=True)
        self._opener = urllib.request.build_opener(_SameOrigin)

    @property
    def name(self) -> str:
        return NAMES[self.kind]

    def url(self, path: str, params: dict | list | None = None) -> str:
        query = "?" + urllib.parse.urlencode(params, quote_via=urllib.parse.quote) if params else ""
        return f"{self.base}{path}{query}"

    def get(self, path: str, params: dict | list | None = None) -> bytes:
        """The body of a successful GET; raises PullError naming the URL and what went wrong."""
        url = self.url(path, params)
        req = urllib.request.Request(url, headers=self.headers, method="GET")
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                body = resp.read(DOCUMENT_MAX + 1)
                encoding = (resp.headers.get("Content-Encoding") or "").lower()
        except urllib.error.HTTPError as e:
            try:
                body = e.read(64 * 1024)
            except Exception:  # noqa: BLE001 - the status says enough
                body = b""
            said, api_error = _said(body, self._secrets)
            raise PullError(url, f"HTTP {e.code} {e.reason}" + (f": {said}" if said else ""), e.code,
                            api_error=api_error) from None
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                raise PullError(url, f"no answer within {self.timeout:g} s (--timeout)") from None
            raise PullError(url, f"cannot connect ({getattr(reason, 'strerror', None) or reason})") from None
        except TimeoutError:
            raise PullError(url, f"no answer within {self.timeout:g} s (--timeout)") from None
        except OSError as e:  # a connection reset while reading, say
            raise PullError(url, f"the connection failed ({e.strerror or e})") from None
        if encoding == "gzip":
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError) as e:
                raise PullError(url, f"the gzip answer cannot be read ({e})") from None
        if len(body) > DOCUMENT_MAX:
            raise PullError(url, f"the answer is over {DOCUMENT_MAX} bytes; fetch fewer traces at a time")
        return body


# -- what to fetch -------------------------------------------------------------------------------


def _utc(t: datetime) -> datetime:
    """A time read as UTC when it has no zone (as analysis.window gives them)."""
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def _rfc3339(t: datetime) -> str:
    return _utc(t).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def traceql_service(service: str) -> str:
    """The TraceQL that selects a service's spans: `{ resource.service.name = "NAME" }`."""
    quoted = service.replace("\\", "\\\\").replace('"', '\\"')
    return '{ resource.service.name = "' + quoted + '" }'


def trace_path(backend: Backend, trace_id: str) -> str:
    if backend.kind == "tempo":
        return f"/api/traces/{trace_id}"
    return f"/api/v3/traces/{trace_id}"


def tempo_search(backend: Backend, query: str, start: datetime, end: datetime, limit: int) -> list[str]:
    """The trace ids a Tempo TraceQL search finds between `start` and `end`, in its order."""
    params = {"q": query, "start": int(_utc(start).timestamp()), "end": int(_utc(end).timestamp()) + 1,
              "limit": limit}  # fmt: skip
    url = backend.url("/api/search", params)
    body = backend.get("/api/search", params)
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise PullError(url, f"the answer is not JSON ({e}); is this Tempo's HTTP API (port 3200)?") from None
    traces = obj.get("traces") if obj.__class__ is dict else None
    if obj.__class__ is not dict or (traces is not None and traces.__class__ is not list):
        raise PullError(url, 'the answer is not a Tempo search answer {"traces": [...]}')
    ids = []
    for i, t in enumerate(traces or []):
        tid = t.get("traceID") if t.__class__ is dict else None
        if not _is_hex_id(tid):
            raise PullError(url, f"traces[{i}].traceID is not a hex trace id")
        if tid not in ids:
            ids.append(tid)
    return ids


def jaeger_search_params(service: str, start: datetime, end: datetime, limit: int) -> list[tuple[str, str]]:
    """api_v3 FindTraces parameters, in both spellings (see the module docstring)."""
    out = []
    for camel, snake, value in (("serviceName", "service_name", service),
                                ("startTimeMin", "start_time_min", _rfc3339(start)),
                                ("startTimeMax", "start_time_max", _rfc3339(end)),
                                ("searchDepth", "search_depth", str(limit))):  # fmt: skip
        out += [(f"query.{camel}", value), (f"query.{snake}", value)]
    return out


def _is_hex_id(tid) -> bool:
    return tid.__class__ is str and 0 < len(tid) <= 32 and not tid.lower().strip("0123456789abcdef")


# -- pulling ---------------------------------------------------------------------------------------


def _trace_count(decoded: Decoded) -> int:
    if not decoded.spans.num_rows:
        return 0
    return len(pc.unique(decoded.spans.column("trace_id")))


def pull(
    store,
    backend: Backend,
    *,
    trace_ids: list[str] | tuple[str, ...] = (),
    service: str | None = None,
    traceql: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = DEFAULT_LIMIT,
    limits: Limits = Limits(),
    redactor: Redactor | None = None,
) -> PullSummary:
    """Fetch traces from `backend` and store them; returns what was done.

    Either `trace_ids` (hex), or a search: `service` (Tempo and Jaeger) or `traceql` (Tempo) between
    `start` and `end` (naive times are UTC), at most `limit` traces. A search that fails raises
    PullError and stores nothing; a trace that cannot be fetched or read is listed in
    `summary.failures`, and the traces fetched before and after it are stored.
    `redactor=None` applies the default credential patterns, as `afterfix ingest` does.
    """
    t0 = time.perf_counter()
    summary = PullSummary(backend.name, backend.base)
    kw = {"limits": limits, "ingested_at": datetime.now(timezone.utc).replace(tzinfo=None)}
    if redactor is not None:
        kw["redactor"] = redactor
    for tid in trace_ids:
        if not _is_hex_id(tid):
            raise ValueError(f"trace id {tid!r} is not hex (up to 32 hex characters)")
    answers: list[tuple[str, str]] = []  # (trace id or "", path) to fetch
    pending: list[Decoded] = []
    pending_spans = 0

    def commit() -> None:
        nonlocal pending, pending_spans
        if not pending:
            return
        batch = Decoded.concat(pending)
        pending, pending_spans = [], 0
        result = store.append(spans=batch.spans, events=batch.events,
                              quarantine=batch.quarantine_table() if batch.refused else None)  # fmt: skip
        summary.spans_stored += result.spans_new
        summary.duplicates += result.spans_duplicate

    def take(decoded: Decoded) -> None:
        nonlocal pending_spans
        summary.traces += _trace_count(decoded)
        summary.refused.extend(decoded.refused)
        summary.redactions += decoded.redactions
        pending.append(decoded)
        pending_spans += decoded.spans.num_rows
        if pending_spans >= COMMIT_SPANS:
            commit()

    if not trace_ids:
        if service is None and traceql is None:
            raise ValueError("give trace ids, a service or (Tempo) a TraceQL query")
        if start is None or end is None:
            raise ValueError("a search needs its window: start and end")
        summary.searched = True
        if backend.kind == "tempo":
            query = traceql if traceql is not None else traceql_service(service)
            found = tempo_search(backend, query, start, end, limit)
            summary.matched = len(found)
            answers = [(tid, trace_path(backend, tid)) for tid in found]
        else:
            if traceql is not None:
                raise ValueError("TraceQL is Tempo's; search Jaeger by service")
            params = jaeger_search_params(service, start, end, limit)
            url = backend.url("/api/v3/traces", params)
            try:
                body = backend.get("/api/v3/traces", params)
            except PullError as e:
                if e.status == 404 and e.api_error:  # api_v3 answers 404 "No traces found" when nothing matched
                    summary.seconds = time.perf_counter() - t0
                    return summary
                raise
            try:
                decoded = decode_answer(body, source=url, **kw)
            except Bad as e:
                raise PullError(url, e.args[0]) from None
            summary.matched = _trace_count(decoded)
            take(decoded)
    else:
        answers = [(tid, trace_path(backend, tid)) for tid in dict.fromkeys(trace_ids)]

    try:
        for tid, path in answers:
            url = backend.url(path)
            try:
                body = backend.get(path)
                decoded = decode_answer(body, source=url, **kw)
            except PullError as e:
                summary.failures.append(PullFailure(tid, e.url, e.reason))
                continue
            except Bad as e:
                summary.failures.append(PullFailure(tid, url, e.args[0]))
                continue
            if not decoded.spans.num_rows and not decoded.refused:
                summary.failures.append(PullFailure(tid, url, "the answer holds no spans"))
                continue
            take(decoded)
    finally:
        commit()  # what was fetched is stored, whatever stopped the rest
    summary.seconds = time.perf_counter() - t0
    return summary

