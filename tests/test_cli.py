"""The `afterfix` console script, run as a real subprocess on a temporary store."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "afterfix"


def otlp_line(trace: int, spans: int = 3, *, run: str = "run-1", incident: str = "inc-1", bad_span_id: bool = False,
              note: str | None = None) -> bytes:
    """One OTLP/JSON TracesData line with `spans` spans of one trace."""
    trace_id = f"{trace:032x}"
    out = []
    for i in range(spans):
        start = 1_795_747_620_000_000_000 + trace * 1_000_000_000 + i * 1_000_000
        out.append({
            "traceId": trace_id,
            "spanId": "xyz" if bad_span_id and i == 0 else f"{trace * 100 + i + 1:016x}",
            "parentSpanId": "" if i == 0 else f"{trace * 100 + 1:016x}",
            "name": f"execute_tool kubectl_get {i}",
            "kind": 1,
            "startTimeUnixNano": str(start),
            "endTimeUnixNano": str(start + 5_000_000),
            "attributes": [
                {"key": "afterfix.run.id", "value": {"stringValue": run}},
                {"key": "afterfix.incident.id", "value": {"stringValue": incident}},
                {"key": "gen_ai.operation.name", "value": {"stringValue": "execute_tool"}},
                {"key": "gen_ai.tool.name", "value": {"stringValue": "kubectl_get"}},
            ] + ([{"key": "note", "value": {"stringValue": note}}] if note else []),
            "status": {"code": 1},
        })
    return orjson.dumps({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "sre-agent"}}]},
        "scopeSpans": [{"scope": {"name": "test"}, "spans": out}],
    }]})


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def afterfix(*args: str, store: Path | None = None, env: dict | None = None, input: str | None = None,
             module: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "afterfix"] if module else [str(SCRIPT)]
    full_env = {k: v for k, v in os.environ.items() if k not in ("AFTERFIX_STORE", "AFTERFIX_TOKEN")}
    full_env.update(env or {})
    if store is not None:
        args = (*args, "--store", str(store))
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=full_env, input=input, timeout=120)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> Path:
    """A store holding 2 runs (12 spans) from one good file."""
    d = tmp_path_factory.mktemp("loaded")
    f = write_lines(d / "good.jsonl", [otlp_line(1, 6, run="run-a"), otlp_line(2, 6, run="run-b")])
    r = afterfix("ingest", str(f), store=d / "store")
    assert r.returncode == 0, r.stderr
    return d / "store"


def count(store: Path, sql: str = "SELECT count(*) AS n FROM spans") -> int:
    r = afterfix("query", "--format", "json", sql, store=store)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]["n"]


# -- exit codes ---------------------------------------------------------------------------

EXIT_CASES = [
    # (name, args (PATHS: "{good}", "{mixed}", "{missing}", "{store}"), exit code, text expected on stderr)
    ("ingest good file", ["ingest", "{good}"], 0, ""),
    ("ingest folder with bad records", ["ingest", "{mixed}"], 1, "a.jsonl line 2, resourceSpans[0]"),
    ("ingest missing file", ["ingest", "{missing}"], 2, "nope.jsonl: no such file or folder"),
    ("ingest missing among good", ["ingest", "{good}", "{missing}"], 2, "nope.jsonl"),
    ("ingest without paths", ["ingest"], 2, "the following arguments are required: PATH"),
    ("unknown command", ["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    ("unknown option", ["query", "--colour", "SELECT 1"], 2, "unrecognized arguments: --colour"),
    ("bad format", ["query", "--format", "xml", "SELECT 1"], 2, "invalid choice: 'xml'"),
    ("bad batch size", ["ingest", "--batch-spans", "0", "{good}"], 2, "must be at least 1"),
    ("syntax error", ["query", "SELEC 1"], 2, 'syntax error at or near "SELEC"'),
    ("unknown table", ["query", "SELECT * FROM spanz"], 2, "spanz does not exist"),
    ("write without --write", ["query", "DELETE FROM spans"], 2, "--write"),
    ("empty SQL", ["query", " "], 2, "no SQL given"),
    ("query fine", ["query", "SELECT 1 AS one"], 0, ""),
    ("status fine", ["status"], 0, ""),
    ("no store there", ["status", "--store", "{missing_store}"], 2, "no store at"),
    ("serve with nothing to do", ["serve", "--no-listen", "--no-inbox"], 2, "would receive nothing"),
    ("serve bad interval", ["serve", "--interval", "0"], 2, "must be more than 0"),
    ("serve bad body limit", ["serve", "--max-body-bytes", "0"], 2, "must be at least 1"),
    ("serve bad redaction pattern", ["serve", "--port", "0", "--redact", "("], 2, "not a valid regular expression"),
    ("bad redaction pattern", ["ingest", "--redact", "(", "{good}"], 2, "not a valid regular expression"),
    ("redact and no-redact", ["ingest", "--redact", "x", "--no-redact", "{good}"], 2, "contradict"),
]


@pytest.mark.parametrize("name,args,code,message", EXIT_CASES, ids=[c[0] for c in EXIT_CASES])
def test_exit_codes(tmp_path, loaded, name, args, code, message):
    good = write_lines(tmp_path / "good.jsonl", [otlp_line(1)])
    mixed = tmp_path / "mixed"
    write_lines(mixed / "a.jsonl", [otlp_line(2), otlp_line(3, bad_span_id=True)])
    paths = {"good": str(good), "mixed": str(mixed), "missing": str(tmp_path / "nope.jsonl"),
             "missing_store": str(tmp_path / "no-store-here")}
    argv = [a.format(**paths) for a in args]
    store = None if "--store" in argv else loaded if argv[0] in ("query", "status") else tmp_path / "store"
    r = afterfix(*argv, store=store)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert message in r.stderr
    if code == 2 and argv[0] != "serve":
        assert "Traceback" not in r.stderr


# -- query --------------------------------------------------------------------------------

SQL = "SELECT run_id, count(*) AS spans, min(start_time) AS first FROM spans GROUP BY run_id ORDER BY run_id"


def test_query_table(loaded):
    r = afterfix("query", SQL, store=loaded)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["run_id", "spans", "first"]
    assert set(lines[1]) == {"-", " "}
    assert lines[2].split()[:2] == ["run-a", "6"] and lines[3].split()[:2] == ["run-b", "6"]
    assert lines[-1] == "(2 rows)"


def test_query_csv(loaded):
    r = afterfix("query", "--format", "csv", SQL, store=loaded)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [(row["run_id"], row["spans"]) for row in rows] == [("run-a", "6"), ("run-b", "6")]
    assert rows[0]["first"].startswith("2026-11-27 02:47:01")


def test_query_json(loaded):
    r = afterfix("query", "--format", "json", SQL, store=loaded)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [(row["run_id"], row["spans"]) for row in rows] == [("run-a", 6), ("run-b", 6)]
    assert rows[0]["first"].startswith("2026-11-27T02:47:01")


def test_query_reads_sql_from_stdin(loaded):
    r = afterfix("query", "--format", "json", "-", store=loaded, input="SELECT count(*) AS n FROM runs")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [{"n": 2}]


def test_table_escapes_control_characters(loaded):
    r = afterfix("query", "SELECT 'red' || chr(27) || '[31m' AS name", store=loaded)
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "red\\x1b[31m" in r.stdout


def test_write_needs_write_flag(tmp_path):
    store = tmp_path / "store"
    f = write_lines(tmp_path / "t.jsonl", [otlp_line(1, 4)])
    assert afterfix("ingest", str(f), store=store).returncode == 0
    delete = "DELETE FROM spans WHERE name LIKE '%0'"
    refused = afterfix("query", delete, store=store)
    assert refused.returncode == 2 and "--write" in refused.stderr
    assert count(store) == 4
    done = afterfix("query", "--write", delete, store=store)
    assert done.returncode == 0, done.stderr
    assert count(store) == 3


# -- ingest -------------------------------------------------------------------------------


def test_store_from_environment(tmp_path):
    store = tmp_path / "env-store"
    f = write_lines(tmp_path / "t.jsonl", [otlp_line(7, 5)])
    r = afterfix("ingest", str(f), env={"AFTERFIX_STORE": str(store)})
    assert r.returncode == 0, r.stderr
    assert (store / "catalog.sqlite").exists()
    assert count(store) == 5
    r = afterfix("status", "--format", "json", env={"AFTERFIX_STORE": str(store)})
    assert json.loads(r.stdout)["spans"] == 5


def test_same_file_twice_is_stored_once(tmp_path):
    store = tmp_path / "store"
    f = write_lines(tmp_path / "t.jsonl", [otlp_line(1, 4), otlp_line(2, 4)])
    first = afterfix("ingest", str(f), store=store)
    assert first.returncode == 0, first.stderr
    assert "8 spans stored" in first.stdout
    second = afterfix("ingest", str(f), store=store)
    assert second.returncode == 0, second.stderr
    assert "0 spans stored" in second.stdout and "unchanged" in second.stdout
    # a copy has another path and no offset: read again, every span recognised as a duplicate
    copy = write_lines(tmp_path / "copy" / "t.jsonl", [otlp_line(1, 4), otlp_line(2, 4)])
    third = afterfix("ingest", str(copy), store=store)
    assert third.returncode == 0, third.stderr
    assert "0 spans stored, 8 duplicates skipped" in third.stdout
    assert count(store) == 8


def test_folder_with_good_and_bad_files(tmp_path):
    store, folder = tmp_path / "store", tmp_path / "night"
    write_lines(folder / "good.jsonl", [otlp_line(1, 3), otlp_line(2, 3)])
    write_lines(folder / "sub" / "bad.ndjson", [otlp_line(3, 3), b'{"resourceSpans": [', otlp_line(4, 3), otlp_line(5, 3, bad_span_id=True)])
    write_lines(folder / "notes.txt", [b"not a trace file, not read"])
    r = afterfix("ingest", str(folder), store=store)
    assert r.returncode == 1, (r.stdout, r.stderr)
    bad = (folder / "sub" / "bad.ndjson").resolve()
    reported = [line for line in r.stderr.splitlines() if line.startswith(str(bad))]
    assert len(reported) == 2, r.stderr
    assert reported[0].startswith(f"{bad} line 2: ") and "not valid JSON" in reported[0]
    assert reported[1].startswith(f"{bad} line 4, resourceSpans[0].scopeSpans[0].spans[0]: ") and "spanId" in reported[1]
    assert r.stdout.startswith("2 files:")  # notes.txt is not a trace file
    # everything else is stored, including the good spans beside the bad one on line 4
    assert count(store) == 3 + 3 + 3 + 3 + 2
    q = afterfix("query", "--format", "json",
                 "SELECT source, location FROM quarantine ORDER BY location", store=store)
    assert [(row["source"], row["location"].split(",")[0]) for row in json.loads(q.stdout)] == [
        (str(bad), "line 2"), (str(bad), "line 4")]


NOTE = "token=ghp_0123456789abcdefghijABCDEFGHIJ012345 for cust-12345678"
REDACT_CASES = [
    # (flags, text expected in the stored note, text that must not be there)
    ([], "[REDACTED:", "ghp_0123"),
    (["--redact", r"cust-[0-9]{8}"], "[REDACTED:custom-1]", "cust-1234"),  # named as serve and the extension name it
    (["--no-redact"], NOTE, "[REDACTED"),
]


@pytest.mark.parametrize("flags,present,absent", REDACT_CASES)
def test_redaction_flags(tmp_path, flags, present, absent):
    store = tmp_path / "store"
    f = write_lines(tmp_path / "t.jsonl", [otlp_line(1, 1, note=NOTE)])
    r = afterfix("ingest", *flags, str(f), store=store)
    assert r.returncode == 0, r.stderr
    q = afterfix("query", "--format", "json", "SELECT json_extract_string(attributes, '$.note') AS note FROM spans",
                 store=store)
    note = json.loads(q.stdout)[0]["note"]
    assert present in note and absent not in note
    assert ("0 redactions" in r.stdout) == (flags == ["--no-redact"])


def test_summary_names_every_count(tmp_path):
    f = write_lines(tmp_path / "t.jsonl", [otlp_line(1, 2)])
    r = afterfix("ingest", str(f), store=tmp_path / "store", module=True)
    assert r.returncode == 0, r.stderr
    for part in ("1 file:", "2 spans stored", "0 duplicates skipped", "0 records refused", "redactions", "spans/s"):
        assert part in r.stdout


def test_progress_bar_only_when_asked_off_a_terminal(tmp_path):
    f = write_lines(tmp_path / "t.jsonl", [otlp_line(i, 2) for i in range(1, 50)])
    quiet = afterfix("ingest", str(f), store=tmp_path / "s1")
    assert quiet.returncode == 0 and quiet.stderr == ""
    shown = afterfix("ingest", "--progress", str(f), store=tmp_path / "s2")
    assert shown.returncode == 0, shown.stderr
    assert "ingest:" in shown.stderr and "100%" in shown.stderr


def test_status(loaded):
    r = afterfix("status", store=loaded)
    assert r.returncode == 0, r.stderr
    fields = dict(line.split(":", 1) for line in r.stdout.splitlines())
    assert fields["spans"].strip() == "12" and fields["runs"].strip() == "2"
    assert fields["incidents"].strip() == "1" and fields["quarantined"].strip() == "0"
    assert fields["last ingest"].strip().startswith("20")


# -- serve --------------------------------------------------------------------------------


def test_serve_receives_from_the_otel_sdk_and_stops_on_sigterm(tmp_path):
    from afterfix.store import Store

    store, inbox = tmp_path / "store", tmp_path / "inbox"
    write_lines(inbox / "dropped.jsonl", [otlp_line(9, 3, run="run-inbox")])
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFTERFIX_")}
    # port, inbox and token from the environment, as the kernel's capture reads them
    env.update(AFTERFIX_TOKEN="s3cret", AFTERFIX_PORT="0", AFTERFIX_INBOX=str(inbox))
    proc = subprocess.Popen([str(SCRIPT), "serve", "--store", str(store)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    reader = Store(store)
    try:
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line and f"tailing {inbox}" in line, (
            line, proc.stderr.read() if proc.poll() is not None else "")
        url = line.split("listening on ", 1)[1].split(",", 1)[0].strip()

        deadline = time.monotonic() + 60
        while not (reader.exists() and reader.query("SELECT count(*) AS n FROM spans").n[0] == 3):
            assert time.monotonic() < deadline, "the inbox file was not tailed into the store"
            time.sleep(0.2)

        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": "cli-test-agent"}))
        exporter = OTLPSpanExporter(endpoint=url, headers={"Authorization": "Bearer s3cret"}, timeout=10)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with provider.get_tracer("cli-test").start_as_current_span("decide: scale checkout") as span:
            span.set_attribute("afterfix.run.id", "run-serve")
        provider.shutdown()

        # right after the acknowledgement, before the next periodic commit: stopping must flush
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        reader.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped" in err
    rows = json.loads(afterfix("query", "--format", "json",
                               "SELECT name, service_name, run_id FROM spans WHERE run_id = 'run-serve'", store=store).stdout)
    assert rows == [{"name": "decide: scale checkout", "service_name": "cli-test-agent", "run_id": "run-serve"}]
    assert count(store) == 4


def _stdio_serve(store: Path, *args: str, token: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFTERFIX_")}
    if token:
        env["AFTERFIX_TOKEN"] = token
    return subprocess.Popen([sys.executable, "-m", "afterfix", "serve", "--stdio", "--store", str(store), *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _ask(proc: subprocess.Popen, request: dict) -> dict:
    proc.stdin.write(json.dumps(request).encode() + b"\n")
    proc.stdin.flush()
    while True:
        line = proc.stdout.readline()
        assert line, proc.stderr.read().decode()
        message = json.loads(line)
        if message.get("id") == request["id"]:
            return message


def test_serve_stdio_says_ready_answers_status_and_flush_and_stops_on_eof(tmp_path):
    import requests

    store = tmp_path / "store"
    proc = _stdio_serve(store, "--port", "0", "--no-inbox", "--interval", "60", "--max-body-bytes", "4096",
                        "--redact", r"cust-\d{6}", token="s3cret")
    try:
        ready = json.loads(proc.stdout.readline() or b"{}")
        assert ready.get("event") == "ready", proc.stderr.read().decode() if proc.poll() is not None else ready
        port = ready["status"]["port"]
        assert port > 0 and ready["pid"] == proc.pid and ready["status"]["inbox"] is None
        url, auth = f"http://127.0.0.1:{port}/v1/traces", {"Authorization": "Bearer s3cret"}
        headers = {"Content-Type": "application/json", **auth}

        body = otlp_line(1, 3, run="run-stdio", note="refund for cust-123456")
        assert requests.post(url, data=body, headers=headers, timeout=10).status_code == 200
        assert requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=10).status_code == 401
        big = otlp_line(2, 3, note="x" * 5000)
        assert requests.post(url, data=big, headers=headers, timeout=10).status_code == 413  # --max-body-bytes

        status = _ask(proc, {"id": 1, "command": "status"})["status"]
        assert (status["pending"], status["spans_stored"]) == (3, 0)  # --interval 60: not committed yet
        flushed = _ask(proc, {"id": 2, "command": "flush", "timeout": 30})
        assert flushed["flushed"] is True and flushed["status"]["spans_stored"] == 3
        assert "unknown command" in _ask(proc, {"id": 3, "command": "explode"})["error"]

        # acknowledged after the last flush: closing stdin must still commit it
        assert requests.post(url, data=otlp_line(3, 2, run="run-stdio"), headers=headers, timeout=10).status_code == 200
        proc.stdin.close()
        proc.wait(60)
        out, err = proc.stdout.read(), proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    last = json.loads(out.splitlines()[-1])
    assert last["event"] == "stopped" and last["status"]["spans_stored"] == 5
    assert count(store, "SELECT count(*) AS n FROM spans WHERE run_id = 'run-stdio'") == 5
    attributes = afterfix("query", "--format", "csv", "SELECT attributes FROM spans", store=store).stdout
    assert "cust-123456" not in attributes and "[REDACTED:custom-1]" in attributes
    assert not any((store / "spool").iterdir())  # everything committed: no spool left to replay


def test_serve_stdio_reports_a_port_in_use_as_one_json_line(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _stdio_serve(tmp_path / "store", "--port", str(port), "--no-inbox")
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    error = json.loads(out.splitlines()[0])
    assert error["event"] == "error" and error["kind"] == "ConfigError"
    assert f"127.0.0.1:{port}" in error["error"] and "Address already in use" in error["error"]
    assert "port 0" in error["error"] and "Traceback" not in err.decode()


@pytest.mark.parametrize("text, shown", [
    ("red\x1b[31m", "red\\x1b[31m"),
    ("admin\u202e)gnp.exe", "admin\\u202e)gnp.exe"),  # a right-to-left override would reorder what follows
    ("a\u2066b\u2069", "a\\u2066b\\u2069"),
    ("tab\tand\nnewline", "tab\tand\nnewline"),
])
def test_safe_shows_control_and_bidi_characters_as_escapes(text, shown):
    from afterfix.cli import safe

    assert safe(text) == shown
