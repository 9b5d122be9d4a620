"""EndpointDecider: a recorded LLM decision re-sent to an OpenAI-compatible server (the scripted model
in-process, and a tiny server with fixed replies for the failures); every error names the endpoint."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from afterfix._exceptions import AfterfixError
from afterfix.nightshift.model import MODEL, ScriptedModel
from afterfix.review import endpoint
from afterfix.review.endpoint import EndpointDecider, EndpointError
from afterfix.review.recorded import RecordedDecision

OBS = {"service": "shop/checkout", "metrics": {"error_rate": 0.3, "latency_p95_ms": 120.0},
       "configmap": {"name": "checkout-flags", "key": "feature.new_checkout", "value": "false", "wanted": "false",
                     "changed_min_ago": 8.0},
       "pods_started_before_change": 3, "pods_total": 3, "template_age_h": 30.0}
IDS = ["rolling_restart", "patch_configmap", "rollback_revision", "no_action"]
SYSTEM = [{"type": "text", "content": "You are llm-agent. Answer with JSON only: " + endpoint.REPLY_FORMAT}]
INPUT = [
    {"role": "user", "parts": [{"type": "text", "content": "Runbook: feature_flag\nQuestion: why no effect?"},
                               {"type": "text", "content": json.dumps(OBS)}]},
    {"role": "assistant", "parts": [{"type": "tool_call", "id": "call-err", "name": "prometheus_query",
                                     "arguments": {"query": "afterfix_sim_error_ratio"}}]},
    {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call-err",
                                "response": {"unit": "error_rate", "value": 0.3}}]},
]


def decision(**chat) -> RecordedDecision:
    return RecordedDecision(
        "dec-1", "run-1", "INC-1", "llm-agent", "why no effect?", None, {**OBS, "sources": {"metrics": ["call-err"]}},
        [{"id": i, "verdict": "selected" if i == "rolling_restart" else "rejected"} for i in IDS],
        "rolling_restart", "recorded reason",
        chat={"model": MODEL, "span_id": "s1", "system_instructions": SYSTEM, "input_messages": INPUT,
              "output_messages": [], "seed": 4, "inside": False, **chat})


@pytest.fixture(scope="module")
def model():
    with ScriptedModel(seed=0) as m:
        yield m


def test_the_request_is_the_recorded_chat_with_temperature_zero_and_the_seed():
    body = EndpointDecider("http://127.0.0.1:9/v1").request(decision(), OBS, {})
    assert body["model"] == MODEL and body["temperature"] == 0 and body["seed"] == 4
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "assistant", "tool"]
    assert body["messages"][2]["tool_calls"][0]["id"] == body["messages"][3]["tool_call_id"] == "call-err"
    assert json.loads(body["messages"][3]["content"]) == {"unit": "error_rate", "value": 0.3}


def test_replaying_the_recorded_chat_gives_the_recorded_answer(model):
    # "Recording": what the model answered to the chat when the agent asked.
    sent = EndpointDecider(model.url).request(decision(), OBS, {})
    recorded = json.loads(endpoint.chat(model.url, sent)["choices"][0]["message"]["content"])
    again = EndpointDecider(model.url).decide(decision(), OBS, {"call-err": {"unit": "error_rate", "value": 0.3}})
    assert (again.selected, again.reason) == (recorded["selected"], recorded["reason"]) == ("rolling_restart", again.reason)
    assert [o["verdict"] for o in again.options] == ["selected", "rejected", "rejected", "rejected"]


def test_an_edited_tool_result_changes_the_answer(model):
    got = EndpointDecider(model.url).decide(decision(), OBS, {"call-err": {"unit": "error_rate", "value": 0.01}})
    assert got.selected == "no_action"


def test_edited_inputs_replace_the_recorded_observations(model):
    stale = {**OBS, "pods_started_before_change": 0}
    body = EndpointDecider(model.url).request(decision(), stale, {})
    assert json.loads(body["messages"][1]["content"].split("\n\n")[-1])["pods_started_before_change"] == 0
    got = EndpointDecider(model.url).decide(decision(), stale, {})
    assert got.selected == "no_action"  # no pod predates the change: a restart has nothing to fix


def test_name_says_endpoint_and_model():
    assert EndpointDecider("http://h:1/v1/", "m").name == "endpoint:http://h:1/v1#m"


# -- failures ----------------------------------------------------------------------------------------------


class Fixed(BaseHTTPRequestHandler):
    """Answers every POST with the status and body the test put on the server."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, body = self.server.reply
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def fixed():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Fixed)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def completion(content: str) -> dict:
    return {"id": "x", "object": "chat.completion", "created": 0, "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}


@pytest.mark.parametrize("status,body,says", [
    (500, {"error": {"message": "the GPU caught fire", "type": "server_error"}}, "HTTP 500"),
    (401, {"error": {"message": "bad key"}}, "--api-key"),
    (404, {"error": {"message": "The model `x` does not exist", "code": "model_not_found"}}, "--model"),
    (200, b"<html>gateway</html>", "not JSON"),
    (200, {"object": "chat.completion", "choices": []}, "no choices"),
    (200, completion("I think you should restart it."), "reply is not JSON"),
    (200, completion('["rolling_restart"]'), "not an object"),
    (200, completion(json.dumps({"selected": "delete_namespace", "reason": "yolo"})), "delete_namespace"),
    (200, completion(json.dumps({"selected": "no_action", "options": [{"id": "reboot_cluster"}]})), "options[0]"),
    (200, completion(json.dumps({"selected": "no_action", "options": [{"id": "no_action", "verdict": "maybe"}]})),
     "verdict 'maybe'"),
])
def test_failures_name_the_endpoint(fixed, status, body, says):
    server, url = fixed
    server.reply = (status, body)
    with pytest.raises(EndpointError) as e:
        EndpointDecider(url).decide(decision(), OBS, {})
    assert url in str(e.value) and says in str(e.value)
    assert isinstance(e.value, AfterfixError)


def test_a_fenced_json_reply_is_read(fixed):
    server, url = fixed
    server.reply = (200, completion("```json\n" + json.dumps({"selected": "no_action", "reason": "calm"}) + "\n```"))
    got = EndpointDecider(url).decide(decision(), OBS, {})
    assert got.selected == "no_action" and got.reason == "calm"
    assert {o["id"]: o["verdict"] for o in got.options}["rolling_restart"] == "considered"


def test_an_unreachable_endpoint_says_how_to_get_one(free_port):
    url = f"http://127.0.0.1:{free_port}/v1"
    with pytest.raises(EndpointError, match="cannot reach") as e:
        EndpointDecider(url).decide(decision(), OBS, {})
    assert url in str(e.value) and "--endpoint scripted" in str(e.value)


def test_not_a_url_and_nothing_to_send_are_refused():
    with pytest.raises(EndpointError, match="not an http"):
        EndpointDecider("127.0.0.1:8000")
    with pytest.raises(EndpointError, match="no gen_ai.input.messages"):
        EndpointDecider("http://127.0.0.1:9/v1").request(decision(input_messages=None), OBS, {})
