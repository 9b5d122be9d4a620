"""The night shift's LLM agent on the demo night: it handles the feature_flag incident as the
reference agent did, its chat span records the GenAI messages, and its decision replays against
the scripted model (and diverges when a what-if edits the error-rate tool result)."""

from __future__ import annotations

import json

import jsonschema
import pytest

from afterfix import sdk
from afterfix.nightshift.model import MODEL, ScriptedModel
from afterfix.nightshift.night import LLM_SCENARIOS
from afterfix.review.endpoint import EndpointDecider
from afterfix.review.recorded import load_decision
from afterfix.review.replay import replay_decision, what_if

# The GenAI conventions' message shapes (gen-ai-input-messages.json, gen-ai-output-messages.json,
# gen-ai-system-instructions.json), the parts afterfix writes.
PART = {"oneOf": [
    {"type": "object", "required": ["type", "content"],
     "properties": {"type": {"const": "text"}, "content": {"type": "string"}}},
    {"type": "object", "required": ["type", "name", "id"],
     "properties": {"type": {"const": "tool_call"}, "id": {"type": "string"}, "name": {"type": "string"}}},
    {"type": "object", "required": ["type", "id", "response"],
     "properties": {"type": {"const": "tool_call_response"}, "id": {"type": "string"}}},
]}
MESSAGE = {"type": "object", "required": ["role", "parts"],
           "properties": {"role": {"enum": ["system", "user", "assistant", "tool"]},
                          "parts": {"type": "array", "items": PART}}}
INPUT = {"type": "array", "minItems": 1, "items": MESSAGE}
OUTPUT = {"type": "array", "minItems": 1, "items": {**MESSAGE, "required": ["role", "parts", "finish_reason"],
                                                    "properties": {**MESSAGE["properties"], "finish_reason": {
                                                        "enum": ["stop", "length", "content_filter", "tool_call", "error"]}}}}
SYSTEM = {"type": "array", "minItems": 1, "items": PART}


def one(store, sql, params=()):
    rows = store.arrow(sql, list(params)).to_pylist() if params else store.arrow(sql).to_pylist()
    assert len(rows) == 1, rows
    return rows[0]


@pytest.fixture(scope="module")
def llm(demo_store):
    """The LLM agent's decision and its chat span on the demo night."""
    d = one(demo_store, "SELECT decision_id, run_id, incident_id, policy, selected_option FROM decisions "
                        "WHERE agent_name = 'llm-agent'")
    chat = one(demo_store, "SELECT span_id, start_time, attributes FROM spans WHERE operation = 'chat' AND run_id = ?",
               [d["run_id"]])
    return d, chat, json.loads(chat["attributes"])


def test_feature_flag_goes_to_the_llm_agent_with_todays_outcome(demo_store, llm):
    d, _, _ = llm
    assert LLM_SCENARIOS == ("feature_flag",)
    scenario = one(demo_store, "SELECT DISTINCT json_extract_string(attributes, '$.\"afterfix.scenario\"') AS s "
                               "FROM spans WHERE run_id = ?", [d["run_id"]])["s"]
    assert scenario == "feature_flag"
    assert d["policy"] is None and d["selected_option"] == "rolling_restart"
    decider = one(demo_store, "SELECT json_extract_string(attributes, '$.\"afterfix.decision.decider\"') AS x FROM spans "
                              "WHERE decision_id = ? AND afterfix_kind = 'decision'", [d["decision_id"]])["x"]
    assert decider == f"llm:{MODEL}"
    act = one(demo_store, "SELECT verb, status FROM actions WHERE decision_id = ?", [d["decision_id"]])
    assert (act["verb"], act["status"]) == ("restart", "applied")
    status = one(demo_store, "SELECT json_extract_string(attributes, '$.\"afterfix.incident.status\"') AS s FROM spans "
                             "WHERE incident_id = ? AND afterfix_kind = 'incident'", [d["incident_id"]])["s"]
    assert status == "resolved"


def test_the_chat_span_records_genai_messages(demo_store, llm):
    d, chat, a = llm
    system, messages, output = (json.loads(a[k]) for k in
                                ("gen_ai.system_instructions", "gen_ai.input.messages", "gen_ai.output.messages"))
    jsonschema.validate(system, SYSTEM)
    jsonschema.validate(messages, INPUT)
    jsonschema.validate(output, OUTPUT)
    assert "JSON" in system[0]["content"] and messages[0]["role"] == "user"
    assert "Runbook: feature_flag" in messages[0]["parts"][0]["content"]
    assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == MODEL
    assert a["gen_ai.request.seed"] == 0 and a["gen_ai.request.temperature"] == 0  # the demo night's seed
    assert a["gen_ai.response.finish_reasons"] == ["stop"] and a["gen_ai.usage.input_tokens"] > 100
    reply = json.loads(output[0]["parts"][0]["content"])
    assert reply["selected"] == d["selected_option"]


def test_each_tool_message_is_a_recorded_tool_call_by_id(demo_store, llm):
    d, _, a = llm
    messages = json.loads(a["gen_ai.input.messages"])
    calls = {r["call_id"]: r for r in demo_store.arrow(
        f"SELECT call_id, tool_name, result FROM tool_calls WHERE run_id = '{d['run_id']}'").to_pylist()}
    asked = [p for m in messages if m["role"] == "assistant" for p in m["parts"]]
    answered = [p for m in messages if m["role"] == "tool" for p in m["parts"]]
    assert [p["id"] for p in asked] == [p["id"] for p in answered] and len(answered) >= 8
    for ask, answer in zip(asked, answered):
        assert calls[ask["id"]]["tool_name"] == ask["name"]
        assert answer["response"] == json.loads(calls[answer["id"]]["result"])


def test_the_chat_precedes_its_decision_and_no_synthetic_call_is_recorded(demo_store, llm):
    d, chat, _ = llm
    decision = one(demo_store, "SELECT start_time FROM spans WHERE decision_id = ? AND afterfix_kind = 'decision'",
                   [d["decision_id"]])
    assert chat["start_time"] <= decision["start_time"]
    models = demo_store.arrow(f"SELECT DISTINCT model FROM spans WHERE operation = 'chat' AND run_id = '{d['run_id']}'"
                              ).to_pylist()
    assert models == [{"model": MODEL}]


def test_replay_against_the_scripted_model_gives_the_recorded_choice(demo_store, llm):
    d, _, _ = llm
    result = replay_decision(demo_store, d["decision_id"], endpoint="scripted")
    [r] = result.decisions
    assert r.error is None and r.same and r.replayed_selected == "rolling_restart"
    assert r.decider.startswith("endpoint:http://127.0.0.1:") and r.missing == []
    recorded = load_decision(demo_store, d["decision_id"])
    with ScriptedModel(seed=recorded.chat["seed"]) as model:
        got = EndpointDecider(model.url).decide(recorded, recorded.inputs,
                                                {t.call_id: t.result for t in recorded.tool_calls})
    assert (got.selected, got.reason) == (recorded.selected, recorded.reason)
    assert {o["id"]: o["verdict"] for o in got.options} == {o["id"]: o["verdict"] for o in recorded.options}


def test_editing_the_error_rate_tool_result_changes_the_answer(demo_store, llm):
    d, _, _ = llm
    recorded = load_decision(demo_store, d["decision_id"])
    errors = [t for t in recorded.tool_calls if isinstance(t.result, dict) and t.result.get("unit") == "error_rate"][-1]
    result = what_if(demo_store, d["decision_id"], {f"tool:{errors.call_id}.value": 0.01}, endpoint="scripted")
    [r] = result.decisions
    assert r.error is None and not r.same and r.replayed_selected == "no_action" and result.diverged
    assert {c["id"] for c in r.changed} == {"rolling_restart", "no_action"}


# -- LlmCallHandle checks the messages it records ---------------------------------------------------


@pytest.fixture
def handle():
    from opentelemetry.sdk.trace import TracerProvider

    rec = sdk.Recorder(TracerProvider(), agent_name="t")
    with rec.llm_call(MODEL) as llm:
        yield llm


@pytest.mark.parametrize("messages,says", [
    ("hello", "must be a list"),
    ([{"parts": []}], "input_messages[0]: a message is an object with a 'role'"),
    ([{"role": "user"}], "input_messages[0].parts: parts must be a list"),
    ([{"role": "user", "parts": [{"content": "x"}]}], "input_messages[0].parts[0]: a part is an object with a 'type'"),
    ([{"role": "user", "parts": [{"type": "text"}]}], "needs 'content'"),
    ([{"role": "assistant", "parts": [{"type": "tool_call", "id": "c1"}]}], "needs 'name'"),
    ([{"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1"}]}], "needs 'response'"),
    ([{"role": "tool", "parts": [{"type": "tool_call_response", "id": 7, "response": 1}]}], "'id' is the call id"),
])
def test_malformed_input_messages_are_refused_with_the_place(handle, messages, says):
    with pytest.raises(ValueError) as e:
        handle.input_messages(messages)
    assert says in str(e.value)


def test_output_messages_need_a_finish_reason(handle):
    with pytest.raises(ValueError, match=r"output_messages\[0\]: an output message needs 'finish_reason'"):
        handle.output_messages([{"role": "assistant", "parts": [{"type": "text", "content": "hi"}]}])
    with pytest.raises(ValueError, match="seed"):
        handle.request(seed="7")
    handle.system_instructions("be brief")  # a text becomes one text part
    assert json.loads(handle.span.attributes["gen_ai.system_instructions"]) == [{"type": "text", "content": "be brief"}]
