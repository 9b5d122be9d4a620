"""`afterfix pull` against a local HTTP server that answers as Tempo's and Jaeger's query APIs do.

No Tempo or Jaeger can run here. The stand-in keeps their documented protocol: the paths
(`/api/traces/<id>`, `/api/search`, `/api/v3/traces/<id>`, `/api/v3/traces?query...`), the
parameters each reads (TraceQL `q`, Unix-second `start`/`end`, `limit`; api_v3's
`query.startTimeMin`/`Max` in RFC 3339, required), the answers recorded in tests/data/ (base64
ids from Tempo, hex from Jaeger), Tempo's plain-text 404 and Jaeger's JSON error objects.
"""

from __future__ import annotations

import base64
import threading
import urllib.parse
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from afterfix import cli

DATA = Path(__file__).resolve().parents[1] / "data"
T1, T2 = "5b8efff798038103d269b633813fc60c", "00a1c27e0f9d4b3e8c5a6d7e8f901234"
BROKEN = "deadbeefdeadbeefdeadbeefdeadbeef"  # the backend fails on this one (HTTP 500)
HOSTILE_NAME = "execute_tool <script>alert(1)</script>\x1b[2J'; DROP TABLE spans;--"
TOKEN = "tok-3f9a8b7c6d5e4f30"
WINDOW = ["--since", "2026-11-27T00:00", "--until", "2026-11-27T06:00"]


def _tempo_v1(name: str) -> bytes:
    doc = orjson.loads((DATA / name).read_bytes())
    if "trace" in doc:  # the v2 fixture, answered at the v1 path as v1 does
        doc = {"batches": doc["trace"]["resourceSpans"]}
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2)


class Backend(ThreadingHTTPServer):
    """Tempo's or Jaeger's query API on 127.0.0.1, answering from the fixtures; it records every
    request (path, query, headers) and can require a bearer token or hold answers back."""

    daemon_threads = True

    def __init__(self, kind: str, token: str | None = None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.kind, self.token = kind, token
        self.requests: list[tuple[str, dict, dict]] = []
        self.hold = threading.Event()  # set: answer; clear: hold every answer (timeouts)
        self.hold.set()
        self.redirect_to: str | None = None
        if kind == "tempo":
            self.traces = {T1: _tempo_v1("tempo_trace.json"), T2.lstrip("0"): _tempo_v1("tempo_v2_trace.json")}
        else:
            self.traces = {T1: (DATA / "jaeger_trace.json").read_bytes()}
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.hold.set()
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: Backend

    def log_message(self, *args) -> None:
        pass

    def send(self, status: int, body: bytes, ctype: str = "application/json", headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        srv = self.server
        parts = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(parts.query)
        srv.requests.append((parts.path, query, dict(self.headers)))
        srv.hold.wait(30)
        if srv.token and self.headers.get("Authorization") != f"Bearer {srv.token}":
            # some gateways echo what they got: the client must not print it
            return self.send(401, f"unauthorized: {self.headers.get('Authorization')}".encode(), "text/plain")
        if srv.redirect_to and parts.path.startswith("/api/traces/"):
            return self.send(302, b"", headers={"Location": srv.redirect_to + parts.path})
        if srv.kind == "tempo":
            self.tempo(parts.path, query)
        else:
            self.jaeger(parts.path, query)

    def trace(self, tid: str, not_found) -> None:
        if tid == BROKEN:
            return self.send(500, b"internal error: block read failed", "text/plain")
        body = self.server.traces.get(tid.lower())
        if body is None:
            return not_found()
        self.send(200, body)

    def tempo(self, path: str, query: dict) -> None:
        if path.startswith("/api/traces/"):
            return self.trace(path.rsplit("/", 1)[1], lambda: self.send(404, b"trace not found", "text/plain"))
        if path == "/api/search":
            if not query.get("q", [""])[0].strip() or not query.get("start") or not query.get("end"):
                return self.send(400, b"invalid TraceQL query: empty", "text/plain")
            if "!" in query["q"][0]:
                return self.send(400, b"invalid TraceQL query: parse error at line 1, col 3: syntax error", "text/plain")
            if "sre-agent" not in query["q"][0]:
                return self.send(200, b'{"traces": [], "metrics": {"inspectedBytes": "0"}}')
            return self.send(200, (DATA / "tempo_search.json").read_bytes())
        self.send(404, b"404 page not found", "text/plain")

    def jaeger(self, path: str, query: dict) -> None:
        def error(code: int, message: str) -> None:
            self.send(code, orjson.dumps({"error": {"httpCode": code, "message": message}}), "text/plain; charset=utf-8")

        if path.startswith("/api/v3/traces/"):
            return self.trace(path.rsplit("/", 1)[1], lambda: error(404, "trace not found"))
        if path == "/api/v3/traces":
            if "query.startTimeMin" not in query or "query.startTimeMax" not in query:
                return error(400, "query.startTimeMin and query.startTimeMax are required")
            for name in ("query.startTimeMin", "query.startTimeMax"):
                datetime.fromisoformat(query[name][0].replace("Z", "+00:00"))
            if query.get("query.serviceName") != ["sre-agent"]:
                return error(404, "No traces found")
            return self.send(200, (DATA / "jaeger_search.json").read_bytes())
        self.send(404, b"404 page not found", "text/plain")  # Go's ServeMux, for a path it has no route for


@pytest.fixture
def tempo():
    srv = Backend("tempo")
    yield srv
    srv.close()


@pytest.fixture
def jaeger():
    srv = Backend("jaeger")
    yield srv
    srv.close()


def run(capsys, *args) -> tuple[int, str, str]:
    code = cli.main(["pull", *args])
    out, err = capsys.readouterr()
    return code, out, err


def spans(store_path: Path) -> set[tuple]:
    from afterfix.store import Store

    s = Store(store_path)
    try:
        df = s.query("SELECT trace_id, span_id, kind, status_code FROM spans")
    finally:
        s.close()
    return set(df.itertuples(index=False, name=None))


T1_ROWS = {(T1, "eee19b7ec3c1b173", "INTERNAL", "UNSET"), (T1, "1a2b3c4d5e6f7081", "CLIENT", "OK"),
           (T1, "9c8d7e6f5a4b3c2d", "INTERNAL", "ERROR"), (T1, "0f1e2d3c4b5a6978", "INTERNAL", "UNSET"),
           (T1, "aa00bb11cc22dd33", "SERVER", "ERROR")}
T2_ROWS = {(T2, "3141592653589793", "INTERNAL", "UNSET"), (T2, "2718281828459045", "CLIENT", "OK")}


@pytest.mark.parametrize("kind", ["tempo", "jaeger"])
def test_one_trace_by_id_is_stored_with_the_ids_its_source_had(kind, request, tmp_path, capsys):
    srv = request.getfixturevalue(kind)
    store = tmp_path / "store"
    code, out, err = run(capsys, f"--{kind}", srv.url, "--trace-id", T1.upper(), "--store", str(store))
    assert (code, err) == (cli.EXIT_OK, "")
    assert out.startswith(f"{'Tempo' if kind == 'tempo' else 'Jaeger'} {srv.url}: 1 trace fetched: "
                          "5 spans new, 0 spans already stored, 0 records refused")
    assert spans(store) == T1_ROWS
    path, _, headers = srv.requests[0]
    assert path == (f"/api/traces/{T1.upper()}" if kind == "tempo" else f"/api/v3/traces/{T1.upper()}")
    assert headers["Accept"] == "application/json"


@pytest.mark.parametrize("kind", ["tempo", "jaeger"])
def test_pulling_twice_stores_each_span_once(kind, request, tmp_path, capsys):
    srv = request.getfixturevalue(kind)
    store = tmp_path / "store"
    assert run(capsys, f"--{kind}", srv.url, "--service", "sre-agent", *WINDOW, "--store", str(store))[0] == 0
    code, out, _ = run(capsys, f"--{kind}", srv.url, "--service", "sre-agent", *WINDOW, "--store", str(store))
    assert code == cli.EXIT_OK
    assert "2 traces fetched (of 2 found): 0 spans new, 7 spans already stored" in out
    assert spans(store) == T1_ROWS | T2_ROWS


def test_tempo_search_sends_traceql_and_the_window_in_unix_seconds(tempo, tmp_path, capsys):
    store = tmp_path / "store"
    code, out, _ = run(capsys, "--tempo", tempo.url, "--service", 'sre-agent', *WINDOW, "--limit", "20",
                       "--store", str(store))
    assert code == cli.EXIT_OK
    assert "2 traces fetched (of 2 found): 7 spans new" in out
    path, q, _ = tempo.requests[0]
    assert path == "/api/search"
    assert q["q"] == ['{ resource.service.name = "sre-agent" }']
    assert q["start"] == [str(int(datetime(2026, 11, 27, tzinfo=timezone.utc).timestamp()))]
    assert q["end"] == [str(int(datetime(2026, 11, 27, 6, tzinfo=timezone.utc).timestamp()) + 1)]
    assert q["limit"] == ["20"]
    # the search names T2 without its leading zeros, as Tempo does; it is fetched so, stored whole
    assert [r[0] for r in tempo.requests[1:]] == [f"/api/traces/{T1}", f"/api/traces/{T2.lstrip('0')}"]
    assert spans(store) == T1_ROWS | T2_ROWS


def test_a_service_name_is_quoted_in_traceql(tempo, tmp_path, capsys):
    code, out, _ = run(capsys, "--tempo", tempo.url, "--service", 'a"b\\c', "--store", str(tmp_path / "s"))
    assert code == cli.EXIT_OK and "no traces of service" in out
    assert tempo.requests[0][1]["q"] == ['{ resource.service.name = "a\\"b\\\\c" }']


def test_jaeger_search_sends_both_spellings_of_its_parameters(jaeger, tmp_path, capsys):
    code, out, _ = run(capsys, "--jaeger", jaeger.url, "--service", "sre-agent", *WINDOW, "--store", str(tmp_path / "s"))
    assert code == cli.EXIT_OK
    assert "2 traces fetched (of 2 found): 7 spans new" in out
    path, q, _ = jaeger.requests[0]
    assert path == "/api/v3/traces"
    for camel, snake, value in (("serviceName", "service_name", "sre-agent"),
                                ("startTimeMin", "start_time_min", "2026-11-27T00:00:00.000000Z"),
                                ("startTimeMax", "start_time_max", "2026-11-27T06:00:00.000000Z"),
                                ("searchDepth", "search_depth", "100")):
        assert q[f"query.{camel}"] == q[f"query.{snake}"] == [value]
    assert len(jaeger.requests) == 1  # the search answer holds the traces


@pytest.mark.parametrize("kind, said", [
    ("tempo", "HTTP 404 Not Found: trace not found"),
    ("jaeger", "HTTP 404 Not Found: trace not found"),
])
def test_a_trace_not_found_is_one_line_naming_the_url_exit_2(kind, said, request, tmp_path, capsys):
    srv = request.getfixturevalue(kind)
    missing = "0123456789abcdef0123456789abcdef"
    code, out, err = run(capsys, f"--{kind}", srv.url, "--trace-id", missing, "--store", str(tmp_path / "s"))
    assert code == cli.EXIT_USAGE
    path = f"/api/traces/{missing}" if kind == "tempo" else f"/api/v3/traces/{missing}"
    assert err == f"afterfix pull: error: GET {srv.url}{path}: {said}\n"
    assert out == ""


def test_some_traces_failing_stores_the_others_lists_the_failures_exit_1(tempo, tmp_path, capsys):
    store = tmp_path / "store"
    code, out, err = run(capsys, "--tempo", tempo.url, "--trace-id", BROKEN, T1, "--store", str(store))
    assert code == cli.EXIT_REFUSED
    assert err == (f"afterfix pull: trace {BROKEN} not stored: GET {tempo.url}/api/traces/{BROKEN}: "
                   "HTTP 500 Internal Server Error: internal error: block read failed\n")
    assert "1 trace fetched, 1 failed: 5 spans new" in out
    assert spans(store) == T1_ROWS


def test_a_search_at_a_wrong_url_stores_nothing_exit_2(jaeger, tmp_path, capsys):
    store = tmp_path / "store"
    code, out, err = run(capsys, "--jaeger", jaeger.url + "/nowhere", "--service", "sre-agent", "--store", str(store))
    assert code == cli.EXIT_USAGE and out == ""
    assert err.startswith(f"afterfix pull: error: GET {jaeger.url}/nowhere/api/v3/traces?query.serviceName=sre-agent")
    # a router's 404 page is an error, not "nothing matched" (which api_v3 says with its own error object)
    assert err.endswith("HTTP 404 Not Found: 404 page not found\n") and err.count("\n") == 1


def test_a_jaeger_search_that_matches_nothing_exit_0(jaeger, tmp_path, capsys):
    code, out, err = run(capsys, "--jaeger", jaeger.url, "--service", "nobody", *WINDOW, "--store", str(tmp_path / "s"))
    assert (code, err) == (cli.EXIT_OK, "")
    assert out == (f"Jaeger {jaeger.url}: no traces of service 'nobody' between 2026-11-27 00:00 and "
                   "2026-11-27 06:00 UTC\n")


def test_tempo_search_error_exit_2(tempo, tmp_path, capsys):
    code, _, err = run(capsys, "--tempo", tempo.url, "--traceql", "{ !!", "--store", str(tmp_path / "s"))
    assert code == cli.EXIT_USAGE
    assert err.startswith(f"afterfix pull: error: GET {tempo.url}/api/search?q=%7B%20%21%21&start=")
    assert err.endswith("HTTP 400 Bad Request: invalid TraceQL query: parse error at line 1, col 3: syntax error\n")


def test_credentials_are_sent_and_never_printed(tmp_path, capsys, monkeypatch):
    srv = Backend("tempo", token=TOKEN)
    try:
        monkeypatch.setenv("AFTERFIX_PULL_TOKEN", TOKEN)
        code, out, err = run(capsys, "--tempo", srv.url, "--trace-id", T1, "--store", str(tmp_path / "s"))
        assert code == cli.EXIT_OK
        assert srv.requests[-1][2]["Authorization"] == f"Bearer {TOKEN}"
        # a wrong token: the server echoes what it got, and the message does not show it
        code, out, err = run(capsys, "--tempo", srv.url, "--trace-id", T1, "--header", "Authorization: Bearer wrong-secret-9",
                             "--store", str(tmp_path / "s"))
        assert code == cli.EXIT_USAGE
        assert "HTTP 401 Unauthorized: unauthorized: [REDACTED]" in err
        assert "wrong-secret-9" not in out + err and TOKEN not in out + err
        # user:password in the URL goes as Basic auth (the env token is not added), shown without it
        srv.token = None
        url = srv.url.replace("http://", "http://ana:pa55word-xyz@")
        code, out, err = run(capsys, "--tempo", url, "--trace-id", T1, "--store", str(tmp_path / "s"))
        assert srv.requests[-1][2]["Authorization"] == "Basic " + base64.b64encode(b"ana:pa55word-xyz").decode()
        assert code == cli.EXIT_OK
    finally:
        srv.close()
    assert "pa55word" not in out + err and "ana:" not in out + err
    assert out.startswith(f"Tempo {srv.url}: 1 trace fetched")


def test_a_redirect_to_another_host_is_not_followed(tempo, tmp_path, capsys):
    tempo.redirect_to = "http://127.0.0.2:9"
    code, _, err = run(capsys, "--tempo", tempo.url, "--trace-id", T1, "--header", f"Authorization: Bearer {TOKEN}",
                       "--store", str(tmp_path / "s"))
    assert code == cli.EXIT_USAGE
    assert "redirected to another host (http://127.0.0.2:9/api/traces/" in err
    assert TOKEN not in err
    assert len(tempo.requests) == 1


def test_no_answer_within_the_timeout_exit_2(tempo, tmp_path, capsys):
    tempo.hold.clear()  # the server holds its answer until the test is done
    code, _, err = run(capsys, "--tempo", tempo.url, "--trace-id", T1, "--timeout", "0.3", "--store", str(tmp_path / "s"))
    tempo.hold.set()
    assert code == cli.EXIT_USAGE
    assert err == f"afterfix pull: error: GET {tempo.url}/api/traces/{T1}: no answer within 0.3 s (--timeout)\n"


def test_nothing_listening_exit_2(free_port, tmp_path, capsys):
    code, _, err = run(capsys, "--jaeger", f"http://127.0.0.1:{free_port}", "--trace-id", T1, "--store", str(tmp_path / "s"))
    assert code == cli.EXIT_USAGE
    assert err.startswith(f"afterfix pull: error: GET http://127.0.0.1:{free_port}/api/v3/traces/{T1}: cannot connect (")


def test_hostile_text_is_stored_verbatim_and_not_evaluated(jaeger, tmp_path, capsys):
    from afterfix.store import Store

    store = tmp_path / "store"
    assert run(capsys, "--jaeger", jaeger.url, "--trace-id", T1, "--store", str(store))[0] == cli.EXIT_OK
    s = Store(store)
    try:
        names = set(s.query("SELECT name FROM spans")["name"])
        args = s.query("SELECT attributes FROM spans WHERE span_id = '0f1e2d3c4b5a6978'").iloc[0, 0]
    finally:
        s.close()
    assert HOSTILE_NAME in names and len(names) == 5
    assert orjson.loads(args)["gen_ai.tool.call.arguments"].startswith('{"cmd": "$(rm -rf ~)", "q": "{{7*7}}"')


def test_a_bad_span_in_an_answer_is_quarantined_exit_1(tempo, tmp_path, capsys):
    doc = orjson.loads(tempo.traces[T1])
    doc["batches"][0]["scopeSpans"][0]["spans"][0]["traceId"] = "not base64!"
    tempo.traces[T1] = orjson.dumps(doc)
    code, out, err = run(capsys, "--tempo", tempo.url, "--trace-id", T1, "--store", str(tmp_path / "s"))
    assert code == cli.EXIT_REFUSED
    assert err.splitlines()[0] == (f'{tempo.url}/api/traces/{T1} batches[0].scopeSpans[0].spans[0]: traceId "not base64!" '
                                   "is neither 32 hex characters nor base64 of 16 bytes (a trace id is 16 bytes)")
    assert "4 spans new" in out and "1 records refused" in out


@pytest.mark.parametrize("args, message", [
    (["--trace-id", T1, "--service", "x"], "give --trace-id, or a search (--service / --traceql), not both"),
    ([], "say what to pull: --trace-id HEX, or --service NAME"),
    (["--trace-id", "xyz"], "--trace-id 'xyz' is not a hex trace id"),
    (["--trace-id", T1, "--since", "2h"], "--since and --until choose a search window"),
    (["--traceql", " "], "--traceql is empty"),
    (["--service", "x", "--since", "2026-11-27T06:00", "--until", "2026-11-27T05:00"], "is not before --until"),
    (["--trace-id", T1, "--header", "Authorization Bearer s3cret-value"], "--header 'the header' is not 'Name: value'"),
    (["--trace-id", T1, "--header", "X-Token: a\nb"], "the value holds a line break"),
])
def test_usage_mistakes_exit_2(args, message, tempo, tmp_path, capsys):
    code, _, err = run(capsys, "--tempo", tempo.url, *args, "--store", str(tmp_path / "s"))
    assert code == cli.EXIT_USAGE
    assert message in err and "s3cret" not in err
    assert tempo.requests == []


def test_traceql_is_tempo_only(jaeger, tmp_path, capsys):
    code, _, err = run(capsys, "--jaeger", jaeger.url, "--traceql", "{ }", "--store", str(tmp_path / "s"))
    assert code == cli.EXIT_USAGE and "--traceql is Tempo's query language" in err


def test_a_url_that_is_not_http_exit_2(tmp_path, capsys):
    code, _, err = run(capsys, "--tempo", "tempo:3200", "--trace-id", T1, "--store", str(tmp_path / "s"))
    assert code == cli.EXIT_USAGE and "is not an http:// or https:// URL" in err
