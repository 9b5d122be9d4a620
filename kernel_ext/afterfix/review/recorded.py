"""What an agent had at one decision, read back from the store: the recorded inputs, the run's tool
calls before it (arguments and results), the options with their evidence and reasons, the model
call that made it (its messages, when recorded) and the actions that served it.

A run is read once (`analysis._load`: its spans and the option events of its decision spans), and
every decision of it is built from that read, so `run_decisions` costs what `load_decision` does.
Everything here is trace text: parsed where it is JSON, never evaluated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import orjson

from afterfix import convention as c
from afterfix._exceptions import NotFound
from afterfix.analysis import _load

__all__ = ["ToolCall", "RecordedDecision", "load_decision", "run_decisions", "load_run", "loads",
           "run_steps", "SOURCES", "LIST_DECISIONS"]

SOURCES = c.DECISION_INPUT_SOURCES  # the key inside inputs that names the tool calls they came from
LIST_DECISIONS = 'afterfix query "SELECT decision_id, question FROM decisions"'
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
REQUEST_SEED = "gen_ai.request.seed"


def loads(text: Any) -> Any:
    """A recorded JSON value parsed; text that is not JSON stays the text it is."""
    if not isinstance(text, (str, bytes)):
        return text
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


@dataclass
class ToolCall:
    call_id: str | None
    name: str | None
    arguments: Any  # parsed JSON, or the recorded text
    result: Any  # parsed JSON, the recorded text, or None: no recording
    failed: bool
    error: str | None
    span_id: str
    start: datetime | None

    @property
    def recorded(self) -> bool:
        """Whether a replay can serve this call: it has a result, or it failed (its error is the answer)."""
        return self.result is not None or self.failed

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RecordedDecision:
    decision_id: str
    run_id: str | None
    incident_id: str | None
    agent_name: str | None
    question: str | None
    policy: str | None
    inputs: dict | None
    options: list[dict]  # id, description, action, evidence, score, verdict, reason
    selected: str | None
    reason: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)  # the run's calls before this decision
    chat: dict | None = None  # model, span_id, system_instructions, input_messages, output_messages, seed, inside
    actions: list[dict] = field(default_factory=list)  # action_id, verb, target, mutating, status, patch
    start: datetime | None = None
    span_id: str | None = None

    def sources(self) -> dict[str, list[str]]:
        """Input key -> the call ids it came from (a plain list of ids applies to every key)."""
        raw = (self.inputs or {}).get(SOURCES)
        if isinstance(raw, list):
            ids = [str(v) for v in raw]
            return {k: ids for k in (self.inputs or {}) if k != SOURCES}
        if isinstance(raw, dict):
            return {str(k): [str(x) for x in (v if isinstance(v, list) else [v])] for k, v in raw.items()}
        return {}

    def observations(self) -> dict:
        """The inputs as the policy saw them: without the `sources` provenance."""
        return {k: v for k, v in (self.inputs or {}).items() if k != SOURCES}

    def tool_call(self, call_id: str) -> ToolCall | None:
        return next((t for t in self.tool_calls if t.call_id == call_id), None)

    def option(self, option_id: str | None) -> dict | None:
        return next((o for o in self.options if o["id"] == option_id), None)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["tool_calls"] = [t.to_dict() for t in self.tool_calls]
        return out


def load_run(store, run_id: str):
    """One run's spans (`analysis._load.RunSpans`). Raises NotFound."""
    return _load.load_runs(store, [run_id])[0]


def load_decision(store, decision_id: str) -> RecordedDecision:
    """The decision `decision_id` with everything its agent had at that moment. Raises NotFound."""
    rows = store.arrow(
        f"SELECT run_id, trace_id FROM spans WHERE decision_id = {_load._literal(decision_id)} "
        "AND afterfix_kind = 'decision' LIMIT 1").to_pylist() if _load._storable(decision_id) else []
    if not rows:
        raise NotFound(f"no decision {decision_id!r} in {store.where}: list the decision ids with {LIST_DECISIONS}")
    run = _run_of(store, rows[0]["run_id"], rows[0]["trace_id"])
    for decision in _decisions(run):
        if decision.decision_id == decision_id:
            return decision
    raise NotFound(f"decision {decision_id!r} is in the store but not in its run {rows[0]['run_id']!r}")  # pragma: no cover


def run_decisions(store, run_id: str) -> list[RecordedDecision]:
    """Every decision of run `run_id`, in the order they were made. Raises NotFound for an unknown run."""
    return _decisions(load_run(store, run_id))


def _run_of(store, run_id: str | None, trace_id: str):
    if run_id is not None:
        return load_run(store, run_id)
    # A decision recorded outside any run: its trace is what it had.
    rows = store.arrow(f"SELECT {', '.join(_load.SPAN_COLUMNS)} FROM spans WHERE trace_id = {_load._literal(trace_id)}"
                       ).to_pylist()
    for row in rows:
        row["attrs"] = _load.json_attrs(row.pop("attributes"))
    _load._attach_options(store, [s for s in rows if s["afterfix_kind"] == "decision"])
    return _load._prepare(None, rows)


def _decisions(run) -> list[RecordedDecision]:
    spans = run.spans
    children: dict[tuple[str, str], list[dict]] = {}
    for s in spans:
        parent = run.parent(s)
        if parent is not None:
            children.setdefault((parent["trace_id"], parent["span_id"]), []).append(s)
    out = []
    for i, span in enumerate(spans):
        if span["afterfix_kind"] != "decision":
            continue
        under = _descendants(children, span)
        # What it had: every span that started before it, and what ran inside it (a model call, its tools).
        before = spans[:i] + [s for s in spans[i + 1:] if (s["trace_id"], s["span_id"]) in under]
        out.append(_decision(run, span, before, under))
    return out


def _descendants(children: dict, span: dict) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    todo = list(children.get((span["trace_id"], span["span_id"]), []))
    while todo:
        s = todo.pop()
        key = (s["trace_id"], s["span_id"])
        if key not in found:  # a cycle of parents in bad input ends here
            found.add(key)
            todo += children.get(key, [])
    return found


def _decision(run, span, before: list[dict], under: set) -> RecordedDecision:
    a = span["attrs"]
    inputs = loads(a.get(c.DECISION_INPUTS))
    decision_id = span["decision_id"] or a.get(c.DECISION_ID)
    tools = [_tool(s) for s in before if _load.span_kind(s) == "tool"]
    chats = [s for s in before if _load.span_kind(s) == "llm"]
    # The model call that made it: one inside the decision span, or one the decision was recorded within.
    inner = [s for s in chats if (s["trace_id"], s["span_id"]) in under] or _llm_ancestors(run, span)
    chat = (inner or chats[-1:] or [None])[-1]
    actions = [_action(s) for s in run.spans if s["afterfix_kind"] == "action" and s["decision_id"] == decision_id]
    return RecordedDecision(
        decision_id=decision_id, run_id=span["run_id"], incident_id=span["incident_id"] or run.incident_id,
        agent_name=span["agent_name"], question=a.get(c.DECISION_QUESTION), policy=a.get(c.DECISION_POLICY) or None,
        inputs=inputs if isinstance(inputs, dict) else None, options=[_option(o["attrs"]) for o in span.get("options", [])],
        selected=a.get(c.DECISION_SELECTED) or None, reason=a.get(c.DECISION_REASON), tool_calls=tools,
        chat=dict(_chat(chat), inside=bool(inner)) if chat is not None else None, actions=actions, start=span["start_time"], span_id=span["span_id"])


def _llm_ancestors(run, span) -> list[dict]:
    out, seen, node = [], set(), run.parent(span)
    while node is not None and node["span_id"] not in seen:
        seen.add(node["span_id"])
        if _load.span_kind(node) == "llm":
            out.insert(0, node)
        node = run.parent(node)
    return out[-1:]


def _option(a: dict) -> dict:
    evidence = loads(a.get(c.OPTION_EVIDENCE))
    action = loads(a.get(c.OPTION_ACTION))
    score = a.get(c.OPTION_SCORE)
    return {"id": a.get(c.OPTION_ID), "description": a.get(c.OPTION_DESCRIPTION),
            "action": action if action is not None else {},
            "evidence": [str(e) for e in evidence] if isinstance(evidence, list) else ([] if evidence is None else [str(evidence)]),
            "score": float(score) if isinstance(score, (int, float)) else None,
            "verdict": a.get(c.OPTION_VERDICT) or "considered", "reason": a.get(c.OPTION_REASON)}


def _tool(s: dict) -> ToolCall:
    a = s["attrs"]
    args = a.get(c.GENAI_TOOL_ARGUMENTS, a.get(c.OI_TOOL_CALL_ARGUMENTS, a.get(c.OI_TOOL_PARAMETERS)))
    result = a.get(c.GENAI_TOOL_RESULT, a.get("output.value"))
    failed = s["status_code"] == "ERROR" or s["error_type"] is not None
    error = s["error_type"] or (s["status_message"] if s["status_code"] == "ERROR" else None)
    return ToolCall(call_id=s["tool_call_id"], name=s["tool_name"], arguments=loads(args), result=loads(result),
                    failed=failed, error=error, span_id=s["span_id"], start=s["start_time"])


def _chat(s: dict) -> dict:
    a = s["attrs"]
    messages_in, messages_out = loads(a.get(c.GENAI_INPUT_MESSAGES)), loads(a.get(c.GENAI_OUTPUT_MESSAGES))
    system = loads(a.get(SYSTEM_INSTRUCTIONS))
    seed = a.get(REQUEST_SEED)
    return {"model": s["model"] or a.get(c.GENAI_REQUEST_MODEL), "span_id": s["span_id"],
            "system_instructions": system,
            "input_messages": messages_in if isinstance(messages_in, list) else None,
            "output_messages": messages_out if isinstance(messages_out, list) else None,
            "seed": int(seed) if isinstance(seed, (int, float)) or (isinstance(seed, str) and seed.isdigit()) else None}


def _action(s: dict) -> dict:
    a = s["attrs"]
    target = " ".join(x for x in (a.get(c.TARGET_KIND), "/".join(
        y for y in (a.get(c.TARGET_NAMESPACE), a.get(c.TARGET_NAME)) if y)) if x)
    mutating = a.get(c.ACTION_MUTATING)
    return {"action_id": s["action_id"], "verb": a.get(c.ACTION_VERB), "target": target,
            "kind": a.get(c.TARGET_KIND), "namespace": a.get(c.TARGET_NAMESPACE), "name": a.get(c.TARGET_NAME),
            "mutating": mutating is True or mutating == "true", "status": a.get(c.ACTION_STATUS),
            "patch": loads(a.get(c.ACTION_PATCH))}


def run_steps(store, run_id: str) -> list[dict]:
    """Each step of run `run_id` in order (every span but the run's own), with what the agent had
    at it: `tool_calls` made so far (arguments and results, this step's included), `observations`
    (the inputs of the latest decision so far, `sources` left out) and, on a decision step,
    `decision` (its RecordedDecision as a dict: options with evidence and reasons, chat, actions)."""
    run = load_run(store, run_id)
    decisions = {d.span_id: d for d in _decisions(run)}
    steps, calls, observations = [], [], None
    for span in run.spans:
        if span["operation"] == "invoke_agent" and span["depth"] == 0:
            continue
        kind = _load.span_kind(span)
        step = {"index": len(steps), "kind": kind, "name": span["name"], "span_id": span["span_id"],
                "start": span["start_time"], "duration_ms": span["duration_ms"], "status": _load.status(span),
                "agent_name": span["agent_name"]}
        if kind == "tool":
            call = _tool(span)
            calls = [*calls, call]
            step["tool_call"] = call.to_dict()
        elif kind == "decision" and span["span_id"] in decisions:
            d = decisions[span["span_id"]]
            observations = d.observations() if d.inputs is not None else observations
            step["decision"] = d.to_dict()
        elif kind == "llm":
            step["chat"] = _chat(span)
        elif kind == "action":
            step["action"] = _action(span)
        step["tool_calls"] = [t.to_dict() for t in calls]
        step["observations"] = observations
        steps.append(step)
    return steps
