"""Decision trees: what one agent run noticed, weighed, chose, did and checked, as nodes.

    run_tree(store, run_id) -> DecisionTree
    incident_trees(store, incident_id) -> list[DecisionTree]    one per run, in order of their start
    build_tree(run: RunSpans) -> DecisionTree                      from spans already loaded

The shape is model.py's: the run, then its spans in start order, each under its parent span. A
decision's options (its `afterfix.option` events) come first under it, each with its evidence,
score, verdict and reason. An action moves under the option it served (the selected option of
the decision its `afterfix.action.decision_id` names; under the decision itself when nothing was
selected), and its verifications and approvals move under it (by their action id), wherever
their spans sat. `on_path` marks the path that was taken: each decision with a selected option,
that option, the actions under it and their verifications and approvals, the detection the
decision answered (the latest one before it), and every ancestor of these up to the run.

Traces without the afterfix convention (any OTel GenAI or OpenInference agent) get the same tree
of their tool calls, LLM calls and other steps by parent and child, with nothing on a path.
Every text in a tree is trace text: faces escape it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from afterfix import convention as c
from afterfix.analysis import _load
from afterfix.analysis.diffs import state_diff
from afterfix.analysis.model import DecisionTree, Node

__all__ = ["run_tree", "incident_trees", "build_tree"]


def run_tree(store, run_id: str) -> DecisionTree:
    """The tree of one run. Raises afterfix.NotFound for a run id the store does not hold."""
    (run,) = _load.load_runs(store, [run_id])
    return build_tree(run)


def incident_trees(store, incident_id: str) -> list[DecisionTree]:
    """One tree per run that worked on `incident_id` (runs are never merged), in order of their
    first span. Raises afterfix.NotFound for an incident id the store does not hold."""
    runs = _load.load_runs(store, _load.incident_run_ids(store, incident_id))
    return [build_tree(run, incident_id=incident_id) for run in sorted(runs, key=lambda r: r.start)]


# -- attribute values (untrusted: any JSON type may turn up where text or a number belongs) --------


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode() if isinstance(value, (dict, list)) else str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN is no score


def _int(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number.is_integer() else None


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() == "true"


def _json(value: Any) -> Any:
    """A JSON attribute (text) as data; text that is not JSON stays text."""
    if not isinstance(value, str):
        return value
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value


def _evidence(value: Any) -> list[str]:
    value = _json(value)
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [item if isinstance(item, str) else _text(item) for item in items]


def _first(attrs: dict, *keys: str) -> Any:
    return next((attrs[k] for k in keys if attrs.get(k) is not None), None)


# -- nodes ---------------------------------------------------------------------------------------


def _details(kind: str, span: dict) -> tuple[str, dict]:
    """(label, details) of a span's node, by kind (the keys model.py lists)."""
    a = span["attrs"]
    name = span["name"]
    if kind == "incident":
        d = {"incident_id": span["incident_id"], "title": _text(a.get(c.INCIDENT_TITLE)),
             "severity": _text(a.get(c.INCIDENT_SEVERITY)), "service": _text(a.get(c.INCIDENT_SERVICE)),
             "status": _text(a.get(c.INCIDENT_STATUS))}
        return d["title"] or name, d
    if kind == "detection":
        d = {"signal": _text(a.get(c.DETECTION_SIGNAL)), "value": _number(a.get(c.DETECTION_VALUE)),
             "threshold": _number(a.get(c.DETECTION_THRESHOLD)), "summary": _text(a.get(c.DETECTION_SUMMARY))}
        return d["summary"] or name, d
    if kind == "decision":
        d = {"decision_id": _text(a.get(c.DECISION_ID)) or span["decision_id"],
             "question": _text(a.get(c.DECISION_QUESTION)), "selected_option": _text(a.get(c.DECISION_SELECTED)),
             "reason": _text(a.get(c.DECISION_REASON)), "policy": _text(a.get(c.DECISION_POLICY))}
        return d["question"] or name, d
    if kind == "action":
        d = {"action_id": span["action_id"], "decision_id": _text(a.get(c.ACTION_DECISION_ID)),
             "verb": _text(a.get(c.ACTION_VERB)), "mutating": _bool(a.get(c.ACTION_MUTATING)),
             "status": _text(a.get(c.ACTION_STATUS)), "trust_level": _int(a.get(c.TRUST_LEVEL)),
             "target": {"kind": _text(a.get(c.TARGET_KIND)), "namespace": _text(a.get(c.TARGET_NAMESPACE)),
                        "name": _text(a.get(c.TARGET_NAME)), "uid": _text(a.get(c.TARGET_UID)),
                        "api_version": _text(a.get(c.TARGET_API_VERSION))},
             "field_manager": _text(a.get(c.ACTION_FIELD_MANAGER)),
             "resource_version_before": _text(a.get(c.ACTION_RV_BEFORE)),
             "resource_version_after": _text(a.get(c.ACTION_RV_AFTER)),
             "dry_run_checked": _bool(a.get(c.ACTION_DRY_RUN)),
             "diff": [ch.to_dict() for ch in state_diff(_state_text(a.get(c.ACTION_BEFORE)),
                                                        _state_text(a.get(c.ACTION_AFTER)))]}
        return name, d
    if kind == "verification":
        d = {"action_id": _text(a.get(c.VERIFY_ACTION_ID)), "outcome": _text(a.get(c.VERIFY_OUTCOME)),
             "signal": _text(a.get(c.VERIFY_SIGNAL)), "before": _number(a.get(c.VERIFY_BEFORE)),
             "after": _number(a.get(c.VERIFY_AFTER))}
        return f"verify {d['signal'] or '?'}: {d['outcome'] or 'no outcome'}", d
    if kind == "approval":
        d = {"action_id": _text(a.get(c.APPROVAL_ACTION_ID)), "status": _text(a.get(c.APPROVAL_STATUS)),
             "approver": _text(a.get(c.APPROVAL_APPROVER)), "reason": _text(a.get(c.APPROVAL_REASON))}
        return f"approval {d['status'] or '?'}" + (f" by {d['approver']}" if d["approver"] else ""), d
    if kind == "tool":
        error = span["error_type"] or (span["status_message"] if span["status_code"] == "ERROR" else None)
        d = {"tool_name": span["tool_name"], "call_id": span["tool_call_id"],
             "arguments": _text(_first(a, c.GENAI_TOOL_ARGUMENTS, c.OI_TOOL_CALL_ARGUMENTS, c.OI_TOOL_PARAMETERS)),
             "result": _text(_first(a, c.GENAI_TOOL_RESULT, c.OI_OUTPUT_VALUE)), "error": error}
        return name, d
    if kind == "llm":
        d = {"model": span["model"], "provider": _text(_first(a, c.GENAI_PROVIDER, c.GENAI_SYSTEM_OLD, c.OI_PROVIDER)),
             "input_tokens": span["input_tokens"], "output_tokens": span["output_tokens"]}
        return name, d
    return name, {"operation": span["operation"]}


def _state_text(value: Any) -> Any:
    # before/after are JSON text by the convention; an emitter that sent a kvlist gave an object
    return value if value is None or isinstance(value, str) else orjson.dumps(value).decode()


def _span_node(span: dict, node_id: str) -> Node:
    kind = _load.span_kind(span)
    label, details = _details(kind, span)
    return Node(id=node_id, kind=kind, label=label, status=_load.status(span), span_id=span["span_id"],
                start=span["start_time"], end=span["end_time"], details=details)


def _option_nodes(decision: Node, span: dict) -> list[Node]:
    selected_id = decision.details["selected_option"] or None
    nodes = []
    for n, event in enumerate(span.get("options", [])):
        a = event["attrs"]
        option_id = _text(a.get(c.OPTION_ID)) or f"option-{n + 1}"
        verdict = _text(a.get(c.OPTION_VERDICT)) or "considered"
        details = {"option_id": option_id, "description": _text(a.get(c.OPTION_DESCRIPTION)),
                   "action": _json(a.get(c.OPTION_ACTION)), "evidence": _evidence(a.get(c.OPTION_EVIDENCE)),
                   "score": _number(a.get(c.OPTION_SCORE)), "verdict": verdict, "reason": _text(a.get(c.OPTION_REASON))}
        selected = option_id == selected_id if selected_id else verdict == "selected"
        node_id = f"{decision.id}/{option_id}"
        if any(o.id == node_id for o in nodes):  # the same option id twice: keep both, apart
            node_id = f"{node_id}#{n}"
        nodes.append(Node(id=node_id, kind="option", label=details["description"] or option_id, span_id=span["span_id"],
                          start=event["time"], end=event["time"], selected=selected, details=details))
    return nodes


# -- the tree ----------------------------------------------------------------------------------


def _start_key(node: Node) -> tuple:
    return (node.start or datetime.max,)


def build_tree(run: _load.RunSpans, incident_id: str | None = None) -> DecisionTree:
    """The decision tree of one run's spans (see the module docstring for its shape)."""
    nodes: dict[tuple[str, str], Node] = {}
    taken: set[str] = set()
    for span in run.spans:
        node_id = span["span_id"] if span["span_id"] not in taken else f"{span['trace_id']}/{span['span_id']}"
        taken.add(node_id)
        nodes[(span["trace_id"], span["span_id"])] = _span_node(span, node_id)

    # Parent links inside the run; a cycle of parents (bad input) is cut where it is found.
    parent_key: dict[tuple, tuple] = {}
    for span in run.spans:
        key, parent = (span["trace_id"], span["span_id"]), run.parent(span)
        if parent is None:
            continue
        pkey = (parent["trace_id"], parent["span_id"])
        up, seen = pkey, {key}
        while up is not None and up not in seen:
            seen.add(up)
            up = parent_key.get(up)
        if up is None:
            parent_key[key] = pkey
    tops = [nodes[(s["trace_id"], s["span_id"])] for s in run.spans if (s["trace_id"], s["span_id"]) not in parent_key]
    for span in run.spans:  # run.spans is in start order, so children are too
        key = (span["trace_id"], span["span_id"])
        if key in parent_key:
            nodes[parent_key[key]].children.append(nodes[key])

    for span in run.spans:
        node = nodes[(span["trace_id"], span["span_id"])]
        if node.kind == "decision":
            node.children[:0] = _option_nodes(node, span)

    root = _run_node(run, tops)
    _move_under_choices(root)
    _mark_path(root)
    return DecisionTree(run_id=run.run_id, agent_name=run.agent_name, incident_id=incident_id or run.incident_id,
                        root=root)


def _run_node(run: _load.RunSpans, tops: list[Node]) -> Node:
    """The run's own agent span as the root when it is the run's one top span, else a node above
    the top spans (a run over several traces, or without an agent span)."""
    errors = sum(1 for s in run.spans if s["status_code"] == "ERROR")
    details = {"run_id": run.run_id, "agent_name": run.agent_name, "incident_id": run.incident_id,
               "trace_ids": list(dict.fromkeys(s["trace_id"] for s in run.spans)),
               "status": "error" if errors else "ok", "spans": len(run.spans)}
    label = f"{run.run_id} ({run.agent_name})" if run.agent_name else run.run_id
    top = tops[0] if len(tops) == 1 else None
    if top is not None and top.kind == "step" and top.details.get("operation") == "invoke_agent":
        top.kind, top.label, top.details = "run", label, details
        top.status = "error" if errors else top.status if top.status != "unset" else "ok"
        return top
    return Node(id=f"run:{run.run_id}", kind="run", label=label, status="error" if errors else "ok",
                start=run.start, end=run.end, details=details, children=tops)


def _move_under_choices(root: Node) -> None:
    """Actions under the option they served, verifications and approvals under their action."""
    parents = {child.id: node for node in root.walk() for child in node.children}
    decisions: dict[str, list[Node]] = {}
    actions: dict[str, list[Node]] = {}
    for node in root.walk():
        if node.kind == "decision" and node.details["decision_id"]:
            decisions.setdefault(node.details["decision_id"], []).append(node)
        elif node.kind == "action" and node.details["action_id"]:
            actions.setdefault(node.details["action_id"], []).append(node)

    def move(node: Node, under: Node) -> None:
        if parents.get(node.id) is under or any(n is under for n in node.walk()):
            return  # already there, or `under` sits inside `node`: moving would make a cycle
        old = parents.get(node.id)
        if old is not None:  # by identity: list.remove compares nodes field by field, children and all
            old.children = [n for n in old.children if n is not node]
        under.children.append(node)
        parents[node.id] = under
        fixed = [n for n in under.children if n.kind == "option"]  # options stay first, in the order weighed
        under.children = fixed + sorted((n for n in under.children if n.kind != "option"), key=_start_key)

    for group in actions.values():
        for action in group:
            decision = _latest_before(decisions.get(action.details["decision_id"] or "", []), action)
            if decision is not None:
                chosen = next((o for o in decision.children if o.kind == "option" and o.selected), None)
                move(action, chosen or decision)
    for node in list(root.walk()):
        if node.kind in ("verification", "approval") and node.details["action_id"]:
            action = _latest_before(actions.get(node.details["action_id"], []), node)
            if action is not None:
                move(node, action)


def _latest_before(candidates: list[Node], node: Node) -> Node | None:
    """Of nodes sharing an id, the last that started no later than `node`, else the first."""
    if not candidates:
        return None
    before = [n for n in candidates if n.start is not None and node.start is not None and n.start <= node.start]
    return before[-1] if before else candidates[0]


def _mark_path(root: Node) -> None:
    parents = {child.id: node for node in root.walk() for child in node.children}
    detections = sorted((n for n in root.walk() if n.kind == "detection"), key=_start_key)

    def mark_up(node: Node) -> None:
        while node is not None and not node.on_path:
            node.on_path = True
            node = parents.get(node.id)

    for decision in [n for n in root.walk() if n.kind == "decision"]:
        chosen = [o for o in decision.children if o.kind == "option" and o.selected]
        if not chosen:
            continue
        for option in chosen:
            mark_up(option)
            for action in (n for n in option.children if n.kind == "action"):
                action.on_path = True
                for check in action.children:
                    if check.kind in ("verification", "approval"):
                        check.on_path = True
        answered = [d for d in detections if d.start is not None and decision.start is not None
                    and d.start <= decision.start]
        if answered:
            mark_up(answered[-1])
