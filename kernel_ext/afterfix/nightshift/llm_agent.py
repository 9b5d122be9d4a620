"""The night shift's LLM-driven agent: the reference agent's tools and runbooks, but every choice is
made by a chat model over the OpenAI protocol.

At each decision the runbook still says what the options are (its policy's option list: ids,
descriptions, actions and evidence; a runbook is the menu), and the model picks among them. The
chat it is sent: system instructions (who it is, the reply format), a user message naming the
runbook, the question and the options with the observations as one JSON line, then every tool
call of the run so far as an assistant `tool_call` and a `tool` message with its result, under
the call's recorded id, so a replay can serve each result by call id and a what-if can change one.

The `chat` span records gen_ai.system_instructions, gen_ai.input.messages, gen_ai.output.messages,
the seed, temperature, tokens and the response model; the decision span after it records no
policy (the model decided) and `afterfix.decision.decider = "llm:<model>"`, so a replay goes to
an endpoint (`review.endpoint.EndpointDecider`) rather than to `policy.POLICIES`.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from kubernetes.client.exceptions import ApiException

from afterfix import sdk
from afterfix.nightshift import model as scripted
from afterfix.nightshift import policy as policies
from afterfix.nightshift.agent import Agent, _Feed, _summary
from afterfix.review import endpoint

__all__ = ["LlmAgent", "AGENT_NAME", "SYSTEM_INSTRUCTIONS", "PROVIDER"]

AGENT_NAME = "llm-agent"
PROVIDER = "openai"  # the protocol spoken (gen_ai.provider.name); the model is the scripted stand-in
SYSTEM_INSTRUCTIONS = (
    "You are llm-agent, an SRE agent on the night shift. An alert fired; the runbook named in the "
    "user message lists the options you may take, and the tool results are the evidence: read them "
    "over the summary when they disagree. Choose exactly one option, or none when none is admissible, "
    "and say for every option why it was selected or rejected. Answer with JSON only, in this format: "
    + endpoint.REPLY_FORMAT)


class LlmAgent(Agent):
    """An `Agent` that decides through `POST {model_url}/chat/completions` (`model`, `seed`)."""

    def __init__(self, *, model_url: str, model: str = scripted.MODEL, seed: int = 0, api_key: str | None = None,
                 timeout: float = 30, agent_name: str = AGENT_NAME, **kwargs):
        super().__init__(agent_name=agent_name, **kwargs)
        self.model_url = model_url
        self.model = model
        self.seed = int(seed)
        self.api_key = api_key
        self.timeout = timeout
        self._transcript: list[dict] = []  # this run's tool calls: id, name, arguments, result

    def _start(self) -> None:
        super()._start()
        self._transcript = []

    def tool(self, name: str, arguments: dict, fn: Callable[[], Any], summarize: Callable[[Any], Any] = _summary) -> Any:
        """As `Agent.tool`, keeping the call (its id and recorded result) for the next chat."""
        probe = _Feed([])  # a feed that learns the call's id, as a decision's sources do
        self._feeds.append(probe)
        kept: dict = {}

        def keep(result: Any) -> Any:
            kept["result"] = summarize(result)
            return kept["result"]
        try:
            return super().tool(name, arguments, fn, keep)
        except ApiException as e:
            kept["result"] = {"error": f"{e.status} {e.reason}"}
            raise
        finally:
            self._feeds.remove(probe)
            if probe.calls:
                self._transcript.append({"id": probe.calls[0], "name": name, "arguments": dict(arguments),
                                         "result": json.loads(sdk.dumps(kept.get("result")))})

    def messages(self, policy: str, menu: policies.Choice, observations: dict) -> list[dict]:
        """The chat for one decision, as GenAI input messages."""
        lines = [f"Runbook: {policy}", f"Question: {menu.question}", "Options:"]
        lines += [f"- {o.id}: {o.description}" for o in menu.options]
        lines.append("Observations (JSON, next part):")
        out = [{"role": "user", "parts": [{"type": "text", "content": "\n".join(lines)},
                                          {"type": "text", "content": sdk.dumps(observations)}]}]
        for call in self._transcript:
            out.append({"role": "assistant", "parts": [{"type": "tool_call", "id": call["id"], "name": call["name"],
                                                         "arguments": call["arguments"]}]})
            out.append({"role": "tool", "parts": [{"type": "tool_call_response", "id": call["id"],
                                                    "response": call["result"]}]})
        return out

    def decide(self, policy: str, observations: dict) -> tuple[policies.Choice, str]:
        inputs = json.loads(sdk.dumps(observations))
        menu = policies.POLICIES[policy](inputs)  # the runbook's options; the model chooses among them
        messages = self.messages(policy, menu, inputs)
        with self.rec.llm_call(self.model, provider=PROVIDER) as llm:
            llm.system_instructions(SYSTEM_INSTRUCTIONS)
            llm.input_messages(messages)
            llm.request(seed=self.seed, temperature=0)
            body = {"model": self.model, "messages": endpoint.to_openai(SYSTEM_INSTRUCTIONS, messages),
                    "temperature": 0, "seed": self.seed}
            response = endpoint.chat(self.model_url, body, api_key=self.api_key, timeout=self.timeout)
            llm.output_messages(endpoint.to_genai_output(response))
            usage = response.get("usage") or {}
            llm.tokens(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
            llm.response_model(str(response.get("model") or self.model))
            content = (response["choices"][0].get("message") or {}).get("content")
            reply = endpoint.parse_reply(content, [o.id for o in menu.options],
                                         f"{self.model_url}/chat/completions ({self.model})")
        choice = _choice(menu, reply)
        options = [sdk.Option(o.id, o.description, action=o.action, evidence=list(o.evidence), score=o.score,
                              verdict=o.verdict, reason=o.reason) for o in choice.options]
        sources = {key: calls for key, calls in sorted(self._sources.items()) if key in inputs and calls}
        self._sources = {}
        decision_id = self.rec.decision(choice.question, options=options, selected=choice.selected, reason=choice.reason,
                                        policy=None, inputs=inputs, sources=sources or None,
                                        decider=f"llm:{self.model}")
        return choice, decision_id


def _choice(menu: policies.Choice, reply) -> policies.Choice:
    """The runbook's options with the model's verdicts, scores and reasons (the runbook's reason
    where the model gave none, so a rejected option always says why)."""
    said = {o["id"]: o for o in reply.options}
    options = []
    for o in menu.options:
        r = said.get(o.id) or {}
        verdict = "selected" if o.id == reply.selected else ("considered" if r.get("verdict") == "considered" else "rejected")
        score = r.get("score") if r.get("score") is not None else o.score
        reason = r.get("reason") or (reply.reason if verdict == "selected" else o.reason) or "not chosen by the model"
        options.append(policies.Option(o.id, o.description, o.action, o.evidence, score, verdict, reason))
    return policies.Choice(menu.question, tuple(options), reply.selected, reply.reason or "the model gave no reason")
