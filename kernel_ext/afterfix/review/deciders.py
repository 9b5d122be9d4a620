"""Deciders: what re-makes one recorded decision from its (possibly edited) inputs.

A decider never acts: it answers which option it would pick, with every option's verdict and
reason. `PolicyDecider` runs the reference agent's pure policy functions (`nightshift.policy`)
by the recorded policy name; `CallableDecider` runs any Python function of the inputs; a decision
an LLM made goes to `review.endpoint.EndpointDecider`, which sends the recorded messages, with
the recorded (or edited) tool results, to an OpenAI-compatible server. `decider_for` picks one.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

from afterfix._exceptions import AfterfixError
from afterfix.review.recorded import RecordedDecision

__all__ = ["Replayed", "Decider", "PolicyDecider", "CallableDecider", "decider_for", "endpoint_for",
           "NotReplayable", "SCRIPTED"]

SCRIPTED = "scripted"  # endpoint=SCRIPTED: the built-in scripted model, started in-process


class NotReplayable(AfterfixError):
    """A decision no decider can re-make as given: no known policy, or a model and no endpoint."""


@dataclass
class Replayed:
    selected: str | None
    reason: str
    options: list[dict] = field(default_factory=list)  # id, verdict, reason, score (+ action, description)


class Decider(Protocol):
    name: str

    def decide(self, decision: RecordedDecision, inputs: dict, tool_results: dict[str, Any]) -> Replayed: ...


def _replayed(choice: Any, where: str) -> Replayed:
    """A policy's answer (`nightshift.policy.Choice` or a dict shaped like `Choice.to_dict()`)."""
    data = choice.to_dict() if hasattr(choice, "to_dict") else choice
    if not isinstance(data, dict) or not isinstance(data.get("options", []), list):
        raise NotReplayable(f"{where} returned {type(choice).__name__}, not a Choice or a dict like "
                            "Choice.to_dict() ({'selected', 'reason', 'options': [{'id', 'verdict', 'reason'}]})")
    options = [{"id": o.get("id"), "description": o.get("description"), "action": o.get("action") or {},
                "verdict": o.get("verdict") or ("selected" if o.get("id") == data.get("selected") else "rejected"),
                "reason": o.get("reason"), "score": o.get("score")} for o in data.get("options", []) if isinstance(o, dict)]
    return Replayed(data.get("selected") or None, str(data.get("reason") or ""), options)


class PolicyDecider:
    """The recorded policy, looked up by name in `policies` (default `nightshift.policy.POLICIES`)."""

    def __init__(self, policies: dict[str, Callable[[dict], Any]] | None = None, policy: str | None = None):
        if policies is None:
            from afterfix.nightshift.policy import POLICIES as policies
        self.policies = policies
        self.policy = policy
        self.name = f"policy:{policy}" if policy else "policy"

    def decide(self, decision: RecordedDecision, inputs: dict, tool_results: dict[str, Any]) -> Replayed:
        name = self.policy or decision.policy
        fn = self.policies.get(name) if name else None
        if fn is None:
            raise NotReplayable(f"decision {decision.decision_id} records policy {name!r}, which is not one of "
                                f"{', '.join(sorted(self.policies))}: pass a decider (CallableDecider(fn)) that knows it")
        # A copy: the policy must not be able to change what the next replay reads.
        return _replayed(fn(copy.deepcopy(inputs)), f"policy {name!r}")


class CallableDecider:
    """Any Python function of the inputs: `fn(inputs) -> Choice | dict`."""

    def __init__(self, fn: Callable[[dict], Any], name: str | None = None):
        self.fn = fn
        self.name = f"callable:{name or getattr(fn, '__qualname__', None) or type(fn).__name__}"

    def decide(self, decision: RecordedDecision, inputs: dict, tool_results: dict[str, Any]) -> Replayed:
        return _replayed(self.fn(copy.deepcopy(inputs)), self.name)


def _policies():
    from afterfix.nightshift.policy import POLICIES

    return POLICIES


def made_by_model(decision: RecordedDecision) -> bool:
    """A decision an LLM made: its model call's messages are recorded and no policy is, or the policy
    named is unknown and the model call ran inside the decision span."""
    if not (decision.chat and decision.chat.get("input_messages")) or decision.policy in _policies():
        return False
    return decision.policy is None or bool(decision.chat.get("inside"))


def decider_for(decision: RecordedDecision, *, endpoint: str | None = None, model: str | None = None,
                api_key: str | None = None) -> Decider:
    """The decider that re-makes `decision`: its policy when one is recorded and known, else the
    endpoint for a model's decision. Raises NotReplayable saying what to pass instead."""
    if decision.policy in _policies():
        return PolicyDecider(policy=decision.policy)
    if made_by_model(decision):
        recorded = decision.chat.get("model")
        if not endpoint:
            raise NotReplayable(
                f"decision {decision.decision_id} was made by model {recorded}; pass --endpoint URL of an "
                f"OpenAI-compatible server (endpoint=URL in Python), or --endpoint {SCRIPTED} for the built-in scripted model")
        try:
            from afterfix.review.endpoint import EndpointDecider
        except ImportError as e:
            raise NotReplayable(f"decision {decision.decision_id} was made by model {recorded}, and this afterfix has "
                                f"no endpoint decider (afterfix.review.endpoint: {e})") from None
        return EndpointDecider(endpoint, model or recorded, api_key=api_key)
    if decision.policy:
        raise NotReplayable(f"decision {decision.decision_id} records policy {decision.policy!r}, which is not one of "
                            f"{', '.join(sorted(_policies()))}, and no model messages: pass a decider "
                            "(CallableDecider(fn)) that knows it")
    raise NotReplayable(f"decision {decision.decision_id} records neither a policy (afterfix.decision.policy) nor the "
                        "model's messages (gen_ai.input.messages): there is nothing to re-run it from")


@contextlib.contextmanager
def endpoint_for(decision: RecordedDecision, endpoint: str | None) -> Iterator[str | None]:
    """`endpoint` as a URL: `scripted` starts `nightshift.model.ScriptedModel` with the decision's
    recorded seed for the duration of the block (and stops it after); anything else is as given."""
    if endpoint != SCRIPTED or not made_by_model(decision):
        yield endpoint
        return
    try:
        from afterfix.nightshift.model import ScriptedModel
    except ImportError as e:
        raise NotReplayable(f"--endpoint {SCRIPTED} needs afterfix.nightshift.model.ScriptedModel, which this afterfix "
                            f"does not have ({e}): pass --endpoint URL of an OpenAI-compatible server") from None
    seed = (decision.chat or {}).get("seed")
    model = ScriptedModel(seed if seed is not None else 0)
    url = model.start()
    try:
        yield url
    finally:
        model.stop()
