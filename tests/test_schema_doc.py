"""traces/SCHEMA.md cannot rot: every table column, view column and convention key is documented
(and nothing documented is gone), and the worked examples are the spans in the example trace."""

from __future__ import annotations

import json
import re
from pathlib import Path

import orjson
import pytest

from afterfix import convention, schema, views
from afterfix.store import Store

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "traces" / "SCHEMA.md").read_text()
EXAMPLE = ROOT / "traces" / "examples" / "hpa-night.jsonl"


def documented_columns() -> dict[str, dict[str, str]]:
    """{table or view: {column: type cell}} from the tables under each "### `name`" heading."""
    found: dict[str, dict[str, str]] = {}
    current = None
    for line in DOC.splitlines():
        heading = re.match(r"^### `(\w+)`\s*$", line)
        if heading:
            current = found.setdefault(heading.group(1), {})
        elif line.startswith("#"):
            current = None
        elif current is not None:
            row = re.match(r"^\| `(\w+)` \| ([^|]*) \|", line)
            if row:
                current[row.group(1)] = row.group(2).strip()
    return found


def convention_keys() -> dict[str, str]:
    return {name: value for name, value in vars(convention).items()
            if name.isupper() and isinstance(value, str)}


def convention_value_sets() -> dict[str, tuple]:
    return {name: value for name, value in vars(convention).items()
            if name.isupper() and isinstance(value, tuple)}


@pytest.mark.parametrize("table", sorted(schema.TABLES))
def test_every_table_column_is_documented_with_its_type(table):
    doc = documented_columns().get(table)
    assert doc is not None, f"traces/SCHEMA.md has no '### `{table}`' section"
    actual = {name: (duck, null) for name, _, duck, null in schema.TABLES[table]}
    assert sorted(set(actual) - set(doc)) == [], f"columns of {table} missing from SCHEMA.md"
    assert sorted(set(doc) - set(actual)) == [], f"SCHEMA.md lists columns {table} does not have"
    for name, (duck, nullable) in actual.items():
        assert doc[name].startswith(duck), f"{table}.{name} is {duck}, SCHEMA.md says {doc[name]!r}"
        assert ("not null" in doc[name]) == (not nullable), f"{table}.{name} nullability differs from SCHEMA.md"


@pytest.fixture(scope="module")
def view_columns(tmp_path_factory) -> dict[str, dict[str, str]]:
    store = Store(tmp_path_factory.mktemp("schema") / "store")
    store.create()
    try:
        return {view: dict(store.query(f"DESCRIBE {view}")[["column_name", "column_type"]].itertuples(index=False))
                for view in views.VIEWS}
    finally:
        store.close()


@pytest.mark.parametrize("view", sorted(views.VIEWS))
def test_every_view_column_is_documented_with_its_type(view, view_columns):
    doc = documented_columns().get(view)
    assert doc is not None, f"traces/SCHEMA.md has no '### `{view}`' section"
    actual = view_columns[view]
    assert sorted(set(actual) - set(doc)) == [], f"columns of view {view} missing from SCHEMA.md"
    assert sorted(set(doc) - set(actual)) == [], f"SCHEMA.md lists columns view {view} does not have"
    for name, duck in actual.items():
        assert doc[name] == duck, f"view {view}.{name} is {duck}, SCHEMA.md says {doc[name]!r}"


@pytest.mark.parametrize("name,key", sorted(convention_keys().items()))
def test_every_convention_key_is_documented(name, key):
    # In a table row as the first cell: documented with a type or a meaning, not merely mentioned.
    assert re.search(rf"^\| `{re.escape(key)}` \|", DOC, re.M) or f"named `{key}`" in DOC, \
        f"convention.{name} = {key!r} is not documented in traces/SCHEMA.md"


@pytest.mark.parametrize("name,values", sorted(convention_value_sets().items()))
def test_every_allowed_value_is_documented(name, values):
    missing = [v for v in values if f"`{v}`" not in DOC]
    assert missing == [], f"convention.{name} values missing from traces/SCHEMA.md: {missing}"


def test_openinference_kinds_mapping_is_documented():
    for kind, operation in convention.OI_KIND_TO_OPERATION.items():
        assert f"| `{kind}` | `{operation}` |" in DOC


def test_documented_keys_all_exist_in_the_convention():
    keys = set(convention_keys().values())
    documented = set(re.findall(r"^\| `((?:afterfix|gen_ai|llm|tool|tool_call|openinference|session|agent|input|output|error)\.[\w.]+)` \|",
                                DOC, re.M))
    assert sorted(documented - keys) == [], "SCHEMA.md documents keys convention.py does not define"


def _example_spans() -> dict[str, dict]:
    spans = {}
    for line in EXAMPLE.read_bytes().splitlines():
        for rs in orjson.loads(line)["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for span in ss["spans"]:
                    spans[span["spanId"]] = span
    return spans


def test_worked_examples_are_the_example_trace_spans():
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)\n```", DOC, re.S)]
    shown = [b for b in blocks if "spanId" in b]
    kinds = []
    spans = _example_spans()
    for block in shown:
        assert block == spans.get(block["spanId"]), (
            f"the worked example for span {block['spanId']} differs from {EXAMPLE.name}: "
            "regenerate the examples and paste the span into traces/SCHEMA.md")
        kinds += [a["value"]["stringValue"] for a in block["attributes"] if a["key"] == convention.SPAN_KIND]
    assert sorted(kinds) == ["action", "decision"]


def test_the_sdk_snippet_runs_and_writes_what_it_shows(tmp_path, monkeypatch):
    (snippet,) = re.findall(r"```python\n(.*?)\n```", DOC, re.S)
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "traces/SCHEMA.md", "exec"), {})  # our own documentation, not trace content
    lines = (tmp_path / "traces" / "inbox" / "sre-agent.jsonl").read_bytes().splitlines()
    names = [span["name"] for line in lines for rs in orjson.loads(line)["resourceSpans"]
             for ss in rs["scopeSpans"] for span in ss["spans"]]
    assert names == ["execute_tool get_hpa", "decide: checkout p95 latency over SLO: what should change?",
                     "patch HorizontalPodAutoscaler shop/checkout", "verify latency_p95", "invoke_agent sre-agent"]
