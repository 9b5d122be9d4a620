"""Re-make an LLM's recorded decision against any OpenAI-compatible chat endpoint.

`EndpointDecider` sends what the model read, as its chat span recorded it (gen_ai.system_instructions
and gen_ai.input.messages), to `POST {base_url}/chat/completions` with temperature 0 and the recorded
seed. Each tool result in those messages is served from `tool_results` by its call id (recorded, or
edited by a what-if), and a text part that is the recorded observations (a JSON object) is replaced
by the inputs given, so both kinds of what-if edit reach the model. The reply is read in the
decision format the night shift's LLM agent asks for (`REPLY_FORMAT`).

The protocol pieces (GenAI messages to OpenAI messages and back, one chat request, the reply
format) live here and are what `nightshift.llm_agent` uses too, so the agent and its replay
cannot drift apart. Plain `urllib`: one JSON POST does not need an SDK. Every error names the
endpoint and what to do.
"""

from __future__ import annotations

import copy
import json
import re
import urllib.error
import urllib.request
from typing import Any, Mapping, Sequence

from afterfix._exceptions import AfterfixError
from afterfix.review.deciders import Replayed
from afterfix.review.recorded import RecordedDecision, SOURCES

__all__ = ["EndpointDecider", "EndpointError", "REPLY_FORMAT", "to_openai", "to_genai_output", "chat",
           "parse_reply", "VERDICTS"]

VERDICTS = ("selected", "rejected", "considered")
REPLY_FORMAT = ('{"selected": "<option id>", "reason": "<why it wins>", "options": '
                '[{"id": "<option id>", "verdict": "selected|rejected", "reason": "<why>", "score": <0..1>}]}')
_FINISH = {"tool_calls": "tool_call", "function_call": "tool_call"}  # OpenAI -> GenAI finish reasons


class EndpointError(AfterfixError):
    """An OpenAI-compatible endpoint could not be reached, refused the request, or answered with
    something that is not a decision in the reply format."""


def _text(parts: Any) -> str:
    return "\n\n".join(p.get("content", "") for p in parts or [] if isinstance(p, dict) and p.get("type") == "text")


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def to_openai(system_instructions: Any, messages: Sequence[Mapping[str, Any]],
              tool_results: Mapping[str, Any] | None = None) -> list[dict]:
    """GenAI messages (role + parts) as OpenAI chat messages. A `tool_call_response` part becomes a
    `tool` message whose content is `tool_results[id]` when given, else the recorded response."""
    results = tool_results or {}
    out: list[dict] = []
    if isinstance(system_instructions, str):
        system_instructions = [{"type": "text", "content": system_instructions}]
    if system_instructions:
        out.append({"role": "system", "content": _text(system_instructions)})
    for message in messages:
        role, parts = message.get("role"), message.get("parts") or []
        calls = [p for p in parts if isinstance(p, dict) and p.get("type") == "tool_call"]
        answers = [p for p in parts if isinstance(p, dict) and p.get("type") == "tool_call_response"]
        if answers:
            for p in answers:
                response = results[p["id"]] if p.get("id") in results else p.get("response")
                out.append({"role": "tool", "tool_call_id": p.get("id"), "content": _json_text(response)})
            continue
        entry: dict = {"role": role, "content": _text(parts) or (None if calls else "")}
        if calls:
            entry["tool_calls"] = [{"id": p.get("id"), "type": "function",
                                    "function": {"name": p["name"], "arguments": _json_text(p.get("arguments") or {})}}
                                   for p in calls]
        out.append(entry)
    return out


def to_genai_output(response: Mapping[str, Any]) -> list[dict]:
    """An OpenAI chat completion's choices as GenAI output messages (parts, finish_reason)."""
    out = []
    for choice in response.get("choices") or []:
        message = choice.get("message") or {}
        parts: list[dict] = []
        if message.get("content"):
            parts.append({"type": "text", "content": message["content"]})
        for call in message.get("tool_calls") or []:
            fn = call.get("function") or {}
            try:
                arguments = json.loads(fn.get("arguments") or "{}")
            except ValueError:
                arguments = fn.get("arguments")
            parts.append({"type": "tool_call", "id": call.get("id"), "name": fn.get("name") or "?", "arguments": arguments})
        reason = choice.get("finish_reason") or "stop"
        out.append({"role": message.get("role") or "assistant", "parts": parts, "finish_reason": _FINISH.get(reason, reason)})
    return out


def chat(base_url: str, body: Mapping[str, Any], *, api_key: str | None = None, timeout: float = 30) -> dict:
    """One `POST {base_url}/chat/completions`; the parsed completion. Raises EndpointError."""
    url = base_url.rstrip("/") + "/chat/completions"
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as e:
        detail = _error_message(e.read())
        hint = ("check --api-key" if e.code in (401, 403) else
                "check the model name (--model) and the base URL, which ends before /chat/completions"
                if e.code in (400, 404, 422) else "the server failed; try again or use another endpoint")
        raise EndpointError(f"{url}: HTTP {e.code} {e.reason}: {detail}; {hint}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise EndpointError(f"{url}: cannot reach the endpoint ({reason}); start the server, or pass --endpoint "
                            "scripted for the built-in scripted model") from None
    try:
        response = json.loads(raw)
    except ValueError:
        raise EndpointError(f"{url}: the answer is not JSON ({raw[:80]!r}); is this an OpenAI-compatible "
                            "chat completions endpoint?") from None
    if not isinstance(response, dict) or not isinstance(response.get("choices"), list) or not response["choices"]:
        raise EndpointError(f"{url}: the answer has no choices; an OpenAI chat completion has "
                            "{\"choices\": [{\"message\": {...}}]}")
    return response


def _error_message(raw: bytes) -> str:
    try:
        error = json.loads(raw).get("error")
        return str(error.get("message") if isinstance(error, dict) else error)[:300]
    except (ValueError, AttributeError):
        return raw[:200].decode("utf-8", "replace")


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


def parse_reply(content: Any, option_ids: Sequence[str], where: str) -> Replayed:
    """A model's answer in the reply format, checked against the decision's option ids (`where`
    names the endpoint in errors). Options the reply leaves out are `considered`, without a reason."""
    text = content.strip() if isinstance(content, str) else ""
    fenced = _FENCE.match(text)
    text = fenced.group(1) if fenced else text
    try:
        data = json.loads(text)
    except ValueError:
        raise EndpointError(f"{where}: the model's reply is not JSON ({str(content)[:80]!r}); the system instructions "
                            f"ask for {REPLY_FORMAT}: use a model that follows them") from None
    if not isinstance(data, dict):
        raise EndpointError(f"{where}: the model's reply is {type(data).__name__}, not an object like {REPLY_FORMAT}")
    known = ", ".join(option_ids) or "(none)"
    selected = data.get("selected") or None
    if selected is not None and selected not in option_ids:
        raise EndpointError(f"{where}: the model selected {selected!r}, which is not one of the options {known}")
    given = data.get("options") if isinstance(data.get("options"), list) else []
    by_id: dict[str, dict] = {}
    for i, option in enumerate(given):
        if not isinstance(option, dict) or option.get("id") not in option_ids:
            oid = option.get("id") if isinstance(option, dict) else option
            raise EndpointError(f"{where}: options[{i}] of the model's reply names {oid!r}, not one of {known}")
        verdict = option.get("verdict") or ("selected" if option["id"] == selected else "rejected")
        if verdict not in VERDICTS:
            raise EndpointError(f"{where}: options[{i}] ({option['id']}) has verdict {verdict!r}; use one of "
                                f"{', '.join(VERDICTS)}")
        score = option.get("score")
        by_id[option["id"]] = {"id": option["id"], "verdict": verdict, "reason": str(option.get("reason") or ""),
                               "score": float(score) if isinstance(score, (int, float)) else None}
    options = [by_id.get(oid) or {"id": oid, "verdict": "selected" if oid == selected else "considered",
                                  "reason": "", "score": None} for oid in option_ids]
    return Replayed(selected, str(data.get("reason") or ""), options)


class EndpointDecider:
    """Replays a model's decision against `base_url` (".../v1"), with `model` (default: the recorded one)."""

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None, timeout: float = 30):
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise EndpointError(f"endpoint {base_url!r} is not an http(s) URL; pass the base URL of an OpenAI-compatible "
                                "server, such as http://127.0.0.1:8000/v1")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.name = f"endpoint:{self.base_url}#{model or 'recorded'}"

    def request(self, decision: RecordedDecision, inputs: Mapping[str, Any] | None,
                tool_results: Mapping[str, Any]) -> dict:
        """The chat request a replay sends (shown by `--dry-run`-like callers, sent by `decide`)."""
        chat_span = decision.chat or {}
        messages = chat_span.get("input_messages")
        if not messages:
            raise EndpointError(f"decision {decision.decision_id}: its chat span records no gen_ai.input.messages, so "
                                f"there is nothing to send to {self.base_url}; replay it with its policy instead")
        messages = _with_inputs(messages, decision.observations(), inputs)
        model = self.model or chat_span.get("model")
        if not model:
            raise EndpointError(f"decision {decision.decision_id}: no model is recorded; pass model= (--model NAME)")
        body = {"model": model, "messages": to_openai(chat_span.get("system_instructions"), messages, tool_results),
                "temperature": 0}
        if chat_span.get("seed") is not None:
            body["seed"] = chat_span["seed"]
        return body

    def decide(self, decision: RecordedDecision, inputs: dict, tool_results: dict[str, Any]) -> Replayed:
        body = self.request(decision, inputs, tool_results)
        response = chat(self.base_url, body, api_key=self.api_key, timeout=self.timeout)
        message = (response["choices"][0] or {}).get("message") or {}
        ids = [o["id"] for o in decision.options]
        return parse_reply(message.get("content"), ids, f"{self.base_url}/chat/completions ({body['model']})")


def _with_inputs(messages: list, recorded: dict, inputs: Mapping[str, Any] | None) -> list:
    """The messages with any text part that is the recorded observations (as JSON) replaced by `inputs`."""
    if inputs is None:
        return messages
    wanted = {k: v for k, v in inputs.items() if k != SOURCES}
    if wanted == recorded:
        return messages
    out = copy.deepcopy(messages)
    for message in out:
        for part in message.get("parts") or []:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("content"), str):
                try:
                    value = json.loads(part["content"])
                except ValueError:
                    continue
                if value == recorded:
                    part["content"] = json.dumps(wanted, sort_keys=True)
    return out
