"""afterfix.ingest.mapping: GenAI (current and older), OpenInference and afterfix.* attributes
onto the hot columns of `spans`."""

from __future__ import annotations

import orjson
import pytest

from afterfix import convention as c
from afterfix import schema
from afterfix.ingest import mapping, otlp

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_hot_columns_are_the_schema_columns_in_order():
    names = [col[0] for col in schema.SPAN_COLUMNS]
    start = names.index(mapping.HOT_COLUMNS[0])
    assert tuple(names[start : start + len(mapping.HOT_COLUMNS)]) == mapping.HOT_COLUMNS


CASES = [
    pytest.param(
        {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "kubectl_get", "gen_ai.tool.call.id": "call_1",
         "gen_ai.conversation.id": "conv-9", "gen_ai.agent.name": "sre", "gen_ai.provider.name": "openai",
         "gen_ai.tool.call.arguments": '{"ns": "payments"}'},
        {},
        {"operation": "execute_tool", "tool_name": "kubectl_get", "tool_call_id": "call_1", "run_id": "conv-9", "agent_name": "sre"},
        id="genai-current-tool"),
    pytest.param(
        {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4.1", "gen_ai.response.model": "gpt-4.1-2025-04-14",
         "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 80, "error.type": "timeout"},
        {},
        {"operation": "chat", "model": "gpt-4.1", "input_tokens": 1200, "output_tokens": 80, "error_type": "timeout",
         "run_id": TRACE},
        id="genai-current-chat"),
    pytest.param(
        {"gen_ai.system": "openai", "gen_ai.operation.name": "chat", "gen_ai.response.model": "gpt-4-0613",
         "gen_ai.usage.prompt_tokens": 50, "gen_ai.usage.completion_tokens": 7},
        {},
        {"operation": "chat", "model": "gpt-4-0613", "input_tokens": 50, "output_tokens": 7, "run_id": TRACE},
        id="genai-old-gen_ai.system"),
    pytest.param(
        {"openinference.span.kind": "TOOL", "tool.name": "get_pods", "tool_call.id": "tc-3", "session.id": "sess-1",
         "tool.parameters": '{"type": "object"}', "input.value": "{}"},
        {},
        {"operation": "execute_tool", "tool_name": "get_pods", "tool_call_id": "tc-3", "run_id": "sess-1"},
        id="openinference-tool"),
    pytest.param(
        {"openinference.span.kind": "LLM", "llm.model_name": "claude-x", "llm.token_count.prompt": 300,
         "llm.token_count.completion": 21, "llm.provider": "anthropic"},
        {"session.id": "sess-from-resource"},
        {"operation": "chat", "model": "claude-x", "input_tokens": 300, "output_tokens": 21, "run_id": "sess-from-resource"},
        id="openinference-llm"),
    pytest.param(
        {"openinference.span.kind": "AGENT", "agent.name": "triage"},
        {}, {"operation": "invoke_agent", "agent_name": "triage", "run_id": TRACE}, id="openinference-agent"),
    pytest.param({"openinference.span.kind": "chain"}, {}, {"operation": "invoke_workflow", "run_id": TRACE},
                 id="openinference-lowercase-kind"),
    pytest.param({"openinference.span.kind": "SOMETHING_NEW"}, {}, {"run_id": TRACE}, id="openinference-unknown-kind"),
    pytest.param(
        {c.SPAN_KIND: "decision", c.DECISION_ID: "dec-1", c.RUN_ID: "run-7", c.INCIDENT_ID: "inc-3",
         c.DECISION_SELECTED: "scale", "gen_ai.operation.name": "plan"},
        {},
        {"afterfix_kind": "decision", "decision_id": "dec-1", "run_id": "run-7", "incident_id": "inc-3", "operation": "plan"},
        id="afterfix-decision"),
    pytest.param(
        {c.SPAN_KIND: "action", c.ACTION_ID: "act-2", c.ACTION_DECISION_ID: "dec-1", c.ACTION_VERB: "scale",
         "error.type": "Conflict"},
        {c.RUN_ID: "run-7", c.INCIDENT_ID: "inc-3"},
        {"afterfix_kind": "action", "action_id": "act-2", "decision_id": "dec-1", "run_id": "run-7", "incident_id": "inc-3",
         "error_type": "Conflict"},
        id="afterfix-action-ids-from-resource"),
    pytest.param(
        {c.RUN_ID: "run-span", c.INCIDENT_ID: "inc-span"}, {c.RUN_ID: "run-res", c.INCIDENT_ID: "inc-res"},
        {"run_id": "run-span", "incident_id": "inc-span"}, id="span-wins-over-resource"),
    pytest.param(
        {"gen_ai.conversation.id": "conv-1"}, {c.RUN_ID: "run-res"},
        {"run_id": "run-res"}, id="resource-afterfix-run-wins-over-span-conversation"),
    pytest.param(
        {c.RUN_ID: 42, c.DECISION_ID: 7, "gen_ai.tool.name": True, "gen_ai.usage.input_tokens": "12",
         "gen_ai.usage.output_tokens": "lots", "gen_ai.agent.name": "", "gen_ai.request.model": ["a", "b"]},
        {},
        {"run_id": "42", "decision_id": "7", "tool_name": "true", "input_tokens": 12},
        id="odd-types"),
    pytest.param(
        {"gen_ai.usage.input_tokens": 2**70, "gen_ai.usage.output_tokens": True, "llm.token_count.prompt": 5,
         "gen_ai.operation.name": 3},
        {}, {"operation": "3", "run_id": TRACE}, id="tokens-out-of-range-or-bool"),
    pytest.param({}, {}, {"run_id": TRACE}, id="nothing-known"),
]


@pytest.mark.parametrize(("attrs", "resource", "expected"), CASES)
def test_hot_columns(attrs, resource, expected):
    got = dict(zip(mapping.HOT_COLUMNS, mapping.hot_columns(attrs, resource, TRACE)))
    assert got == {col: expected.get(col) for col in mapping.HOT_COLUMNS}


def _anyvalue(v) -> dict:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, list):
        return {"arrayValue": {"values": [_anyvalue(x) for x in v]}}
    return {"stringValue": v}


# 2**70 cannot be an OTLP intValue, so that case stays with the function alone
@pytest.mark.parametrize(("attrs", "resource", "expected"), [p for p in CASES if p.id != "tokens-out-of-range-or-bool"])
def test_hot_columns_through_the_decoder(attrs, resource, expected):
    """The same table, through OTLP/JSON: the decoder feeds the mapping the values it stores."""
    kv = lambda d: [{"key": k, "value": _anyvalue(v)} for k, v in d.items()]  # noqa: E731
    line = {"resourceSpans": [{"resource": {"attributes": kv(resource)}, "scopeSpans": [{"spans": [{
        "traceId": TRACE, "spanId": "00f067aa0ba902b7", "name": "s", "startTimeUnixNano": "1", "endTimeUnixNano": "2",
        "attributes": kv(attrs)}]}]}]}  # fmt: skip
    d = otlp.decode_json_lines(orjson.dumps(line), source="t", redactor=None)
    assert d.refused == []
    (row,) = d.spans.to_pylist()
    assert {col: row[col] for col in mapping.HOT_COLUMNS} == {col: expected.get(col) for col in mapping.HOT_COLUMNS}


class _Reads(dict):
    """A dict that notes every key looked up in it."""

    def __init__(self, *a, seen: list):
        super().__init__(*a)
        self.seen = seen

    def get(self, key, default=None):
        self.seen.append(key)
        return super().get(key, default)


def test_hot_keys_are_the_keys_hot_columns_reads_in_its_order():
    # HOT_KEYS is what the compiled decoder is set up with: it must name the same keys in the
    # same order of precedence as hot_columns, column by column.
    seen: list[str] = []
    mapping.hot_columns(_Reads(seen=seen), _Reads(seen=seen), "t")
    assert set(seen) == {k for keys in mapping.HOT_KEYS for k in keys} | {c.OI_SPAN_KIND}
    assert len(mapping.HOT_KEYS) == len(mapping.HOT_COLUMNS)
    for column, keys in zip(mapping.HOT_COLUMNS, mapping.HOT_KEYS):
        at = mapping.HOT_COLUMNS.index(column)
        counts = column in ("input_tokens", "output_tokens")
        for rank, key in enumerate(keys):
            attrs = {k: (7 if counts else f"v{i}") for i, k in enumerate(keys[rank:], start=rank)}
            got = mapping.hot_columns(attrs, {}, "t")[at]
            assert got == (7 if counts else f"v{rank}"), (column, key)
