"""A local OpenAI-compatible chat model with seeded, scripted replies, for the night shift's LLM agent.

No model can run on the build machines, so this stand-in keeps the protocol a real one speaks:
`POST /v1/chat/completions` answers with a `chat.completion` object (choices, finish_reason,
usage), `GET /v1/models` lists its one model, and a bad request gets a 400 with an OpenAI-style
`{"error": {"message", "type", "param", "code"}}` body. The replies are a script, not a model:

- the user message names the runbook (`Runbook: <name>`) and carries the agent's observations
  as a JSON object on a line of its own;
- the tool messages carry the tool results; the script reads them over the observations
  (a `prometheus_query` result sets that metric, a `pods` list the pod count, a ConfigMap its
  flag's value), as a model reads the evidence rather than the summary;
- the reference policy of that runbook (`nightshift.policy.POLICIES`) makes the choice, and the
  reason is phrased from a small set picked by the seed and the facts.

So the reply depends only on (seed, messages): a replay of the recorded messages gets the
recorded answer, and a what-if that edits a tool result can change it. Call ids do not enter
the choice of phrasing, so two plays of one night (same seed, new ids) read the same.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from afterfix.nightshift import policy as policies

__all__ = ["ScriptedModel", "MODEL", "script", "PHRASINGS"]

MODEL = "afterfix-scripted-1"
PHRASINGS = (
    "{reason}",
    "{reason}; so: {selected}",
    "Choosing {selected}: {reason}",
    "{selected}, because {reason}",
)
_RUNBOOK = re.compile(r"^Runbook:\s*(\S+)\s*$", re.M)
_MAX_BODY = 4 * 2 ** 20


class BadRequest(ValueError):
    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.param, self.status, self.code = param, status, code


def _content(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):  # OpenAI content parts
        return "\n\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content if isinstance(content, str) else ""


def _observations(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def _tool_facts(messages: list[dict]) -> list[tuple[str, dict, Any]]:
    """(tool name, arguments, result) for every tool message, in order."""
    asked: dict[str, tuple[str, dict]] = {}
    out = []
    for m in messages:
        for call in m.get("tool_calls") or []:
            fn = call.get("function") or {}
            try:
                args = json.loads(fn.get("arguments") or "{}")
            except ValueError:
                args = {}
            asked[call.get("id")] = (fn.get("name") or "", args if isinstance(args, dict) else {})
        if m.get("role") == "tool":
            name, args = asked.get(m.get("tool_call_id"), ("", {}))
            try:
                result = json.loads(_content(m))
            except ValueError:
                result = _content(m)
            out.append((name, args, result))
    return out


def _read_tools(obs: dict, facts: list[tuple[str, dict, Any]]) -> dict:
    """The observations with what the tool results say instead, where a result says it."""
    obs = json.loads(json.dumps(obs))
    metrics = obs.get("metrics") if isinstance(obs.get("metrics"), dict) else None
    cm = obs.get("configmap") if isinstance(obs.get("configmap"), dict) else None
    for name, args, result in facts:
        if not isinstance(result, dict):
            continue
        if name == "prometheus_query" and metrics is not None and result.get("unit") in metrics:
            metrics[result["unit"]] = result.get("value")
        elif name == "kubectl_get" and args.get("resource") == "pods" and "name" not in args \
                and isinstance(result.get("items"), list) and "pods_total" in obs:
            obs["pods_total"] = len(result["items"])
        elif name == "kubectl_get" and args.get("resource") == "configmaps" and cm is not None \
                and result.get("name") == cm.get("name") and isinstance(result.get("data"), dict):
            cm["value"] = result["data"].get(cm.get("key"))
    return obs


def script(seed: int, messages: list[dict]) -> str:
    """The reply content for `messages` (OpenAI chat messages) under `seed`: a decision in the
    LLM agent's reply format, or a one-line refusal when the messages do not say what to decide."""
    user = "\n\n".join(_content(m) for m in messages if m.get("role") == "user")
    runbook = _RUNBOOK.search(user)
    obs = _observations(user)
    if not runbook or obs is None:
        return json.dumps({"selected": None, "reason": "the request names no runbook (a 'Runbook: NAME' line) "
                           "or carries no observations (a JSON object line)", "options": []})
    fn = policies.POLICIES.get(runbook.group(1))
    if fn is None:
        return json.dumps({"selected": None, "reason": f"no script for runbook {runbook.group(1)!r}", "options": []})
    obs = _read_tools(obs, _tool_facts(messages))
    try:
        choice = fn(obs)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        return json.dumps({"selected": None, "reason": f"the observations do not fit runbook {runbook.group(1)}: "
                           f"{type(e).__name__}: {e}", "options": []})
    key = json.dumps([seed, runbook.group(1), obs, choice.selected], sort_keys=True).encode()
    phrasing = PHRASINGS[int.from_bytes(hashlib.sha256(key).digest()[:4], "big") % len(PHRASINGS)]
    reason = phrasing.format(reason=choice.reason, selected=choice.selected)
    options = [{"id": o.id, "verdict": o.verdict, "score": o.score,
                "reason": reason if o.id == choice.selected else o.reason} for o in choice.options]
    return json.dumps({"selected": choice.selected, "reason": reason, "options": options})


def _check(body: Any) -> tuple[str, list[dict]]:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", "model")
    if model != MODEL:
        raise BadRequest(f"The model `{model}` does not exist; this server has {MODEL}", "model", 404, "model_not_found")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array", "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant", "tool"):
            raise BadRequest(f"messages[{i}]: 'role' must be one of system, developer, user, assistant, tool",
                             f"messages[{i}].role")
        if m["role"] == "tool" and not isinstance(m.get("tool_call_id"), str):
            raise BadRequest(f"messages[{i}]: a tool message needs 'tool_call_id'", f"messages[{i}].tool_call_id")
    if "seed" in body and body["seed"] is not None and type(body["seed"]) is not int:
        raise BadRequest("'seed' must be an integer", "seed")
    return model, messages


class ScriptedModel:
    """The scripted model on 127.0.0.1 (a free port): `start()` gives its base URL (".../v1")."""

    def __init__(self, seed: int = 0, host: str = "127.0.0.1", port: int = 0):
        self.seed = int(seed)
        self.host, self.port = host, port
        self.requests = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("ScriptedModel is not started: call start() or use it as a context manager")
        return f"http://{self.host}:{self._server.server_address[1]}/v1"

    def start(self) -> str:
        if self._server is None:
            self._server = ThreadingHTTPServer((self.host, self.port), self._handler())
            self._server.daemon_threads = True
            self._thread = threading.Thread(target=self._server.serve_forever, name="scripted-model", daemon=True)
            self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = self._thread = None

    def __enter__(self) -> "ScriptedModel":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def complete(self, body: Any) -> dict:
        """The chat completion for a request body (what the server answers). Raises BadRequest."""
        model, messages = _check(body)
        seed = body.get("seed") if body.get("seed") is not None else self.seed
        content = script(seed, messages)
        digest = hashlib.sha256(json.dumps([seed, messages], sort_keys=True).encode()).hexdigest()
        prompt = sum(len(_content(m)) for m in messages) // 4
        completion = len(content) // 4
        return {"id": f"chatcmpl-{digest[:24]}", "object": "chat.completion", "created": 0, "model": model,
                "system_fingerprint": f"fp_scripted_{seed}",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": None,
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}}

    def _handler(self):
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet: the night's progress is elsewhere
                pass

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
                kind = "invalid_request_error" if status < 500 else "server_error"
                self._send(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0,
                                                                 "owned_by": "afterfix"}]})
                else:
                    self._error(404, f"no route GET {self.path}; try GET /v1/models", code="not_found")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > _MAX_BODY:
                    self._error(413, f"the request body is over {_MAX_BODY} bytes")
                    return
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._error(404, f"no route POST {self.path}; try POST /v1/chat/completions", code="not_found")
                    return
                try:
                    body = json.loads(raw)
                except ValueError as e:
                    self._error(400, f"the request body is not JSON: {e}")
                    return
                try:
                    reply = model.complete(body)
                except BadRequest as e:
                    self._error(e.status, str(e), e.param, e.code)
                    return
                model.requests += 1
                self._send(200, reply)

        return Handler
