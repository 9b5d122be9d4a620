"""The scripted model speaks the OpenAI chat protocol over real HTTP, and its replies depend only on
(seed, messages): the same request gets the same answer from any instance, an edited tool result
can change it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from afterfix.nightshift.model import MODEL, PHRASINGS, ScriptedModel, script

OBS = {"service": "shop/checkout", "metrics": {"error_rate": 0.3, "latency_p95_ms": 120.0},
       "configmap": {"name": "checkout-flags", "key": "feature.new_checkout", "value": "false", "wanted": "false",
                     "changed_min_ago": 8.0},
       "pods_started_before_change": 3, "pods_total": 3, "template_age_h": 30.0}


def messages(error_rate: float = 0.3, obs: dict = OBS) -> list[dict]:
    return [
        {"role": "system", "content": "Answer with JSON only."},
        {"role": "user", "content": "Runbook: feature_flag\nQuestion: why no effect?\n\n" + json.dumps(obs)},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call-1", "type": "function",
             "function": {"name": "prometheus_query", "arguments": json.dumps({"query": "afterfix_sim_error_ratio"})}}]},
        {"role": "tool", "tool_call_id": "call-1", "content": json.dumps({"unit": "error_rate", "value": error_rate})},
    ]


@pytest.fixture(scope="module")
def model():
    with ScriptedModel(seed=3) as m:
        yield m


def post(url: str, body, *, raw: bytes | None = None):
    req = urllib.request.Request(url + "/chat/completions", data=raw if raw is not None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_models_lists_the_one_model(model):
    with urllib.request.urlopen(model.url + "/models", timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["object"] == "list" and [m["id"] for m in body["data"]] == [MODEL]


def test_a_completion_has_the_openai_shape(model):
    status, body = post(model.url, {"model": MODEL, "messages": messages(), "seed": 3, "temperature": 0})
    assert status == 200
    assert body["object"] == "chat.completion" and body["model"] == MODEL and body["id"].startswith("chatcmpl-")
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop" and choice["message"]["role"] == "assistant"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    reply = json.loads(choice["message"]["content"])
    assert reply["selected"] == "rolling_restart"
    assert {o["id"]: o["verdict"] for o in reply["options"]} == {
        "rolling_restart": "selected", "patch_configmap": "rejected", "rollback_revision": "rejected", "no_action": "rejected"}


def test_same_seed_and_messages_same_reply_from_any_instance(model):
    with ScriptedModel(seed=3) as other:
        a = post(model.url, {"model": MODEL, "messages": messages(), "seed": 3})[1]
        b = post(other.url, {"model": MODEL, "messages": messages(), "seed": 3})[1]
    assert a == b


def test_a_request_without_seed_uses_the_servers(model):
    a = post(model.url, {"model": MODEL, "messages": messages()})[1]
    b = post(model.url, {"model": MODEL, "messages": messages(), "seed": 3})[1]
    assert a["choices"] == b["choices"]


def test_the_seed_picks_the_phrasing_not_the_choice():
    replies = [json.loads(script(seed, messages())) for seed in range(40)]
    assert {r["selected"] for r in replies} == {"rolling_restart"}
    assert len({r["reason"] for r in replies}) == len(PHRASINGS)  # every phrasing is reached by some seed


def test_a_tool_result_outweighs_the_summary():
    # The observations say 30 % errors; the error-rate tool result says 1 %: the model waits.
    assert json.loads(script(0, messages(error_rate=0.01)))["selected"] == "no_action"
    assert json.loads(script(0, messages(error_rate=0.3)))["selected"] == "rolling_restart"


def test_call_ids_do_not_change_the_reply():
    renamed = json.loads(json.dumps(messages()).replace("call-1", "call-99"))
    assert script(5, renamed) == script(5, messages())


def test_messages_that_name_no_runbook_get_a_refusal_not_a_guess():
    reply = json.loads(script(0, [{"role": "user", "content": "what now?"}]))
    assert reply["selected"] is None and "Runbook" in reply["reason"]


@pytest.mark.parametrize("body,status,param", [
    ({"messages": messages()}, 400, "model"),
    ({"model": MODEL}, 400, "messages"),
    ({"model": MODEL, "messages": []}, 400, "messages"),
    ({"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages[0].role"),
    ({"model": MODEL, "messages": [{"role": "tool", "content": "{}"}]}, 400, "messages[0].tool_call_id"),
    ({"model": MODEL, "messages": messages(), "seed": "7"}, 400, "seed"),
    ({"model": "gpt-nonexistent", "messages": messages()}, 404, "model"),
])
def test_a_bad_request_gets_an_openai_error(model, body, status, param):
    got, answer = post(model.url, body)
    assert got == status
    error = answer["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]


def test_a_body_that_is_not_json_is_a_400(model):
    status, answer = post(model.url, None, raw=b"{not json")
    assert status == 400 and "not JSON" in answer["error"]["message"]


def test_unknown_routes_are_404(model):
    req = urllib.request.Request(model.url + "/completions", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 404 and "chat/completions" in json.loads(e.value.read())["error"]["message"]


def test_stop_frees_the_port():
    m = ScriptedModel()
    url = m.start()
    m.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/models", timeout=5)
    with pytest.raises(RuntimeError, match="start"):
        m.url
