"""Two runs side by side: the same scenario on two nights, or the agent before and after a policy change.

    compare_runs(store, run_a, run_b) -> Comparison

Each run becomes its steps in order: tool calls, decisions and actions. A step's signature is what
it is, not what came of it: a tool call's tool name, a decision's question, an action's verb and
target kind and name. The two sequences of signatures are aligned with `difflib.SequenceMatcher`,
so one extra tool call early in a run shifts nothing after it. An aligned pair is "same" or
"changed" (a decision that selected another option or gave an option another verdict; an action
with another patch or status; a tool call with other arguments or that failed on one side only:
tool results are not compared, two nights never read the same numbers); a step on one side only
is "only_a" or "only_b". Where the runs part (a replaced stretch), actions are paired in order all
the same, so an action that changed its verb or its target shows as changed, not as two strangers.

`decisions` lists the decisions that differ (or exist on one side only), with the options whose
verdict differs and the people's current verdicts on each side; `actions` lists the actions that
differ in verb, target or patch (or exist on one side only).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from afterfix._exceptions import NotFound

__all__ = ["Comparison", "AlignedStep", "compare_runs", "step_sequence"]

LIST_RUNS = "afterfix query \"SELECT run_id, incident_id, agent_name, start_time FROM runs ORDER BY start_time\""


@dataclass
class AlignedStep:
    a: dict | None  # the step of run A (kind, signature, label, id, time, detail), None if only in B
    b: dict | None
    status: str  # same, changed, only_a, only_b
    differences: list[str] = field(default_factory=list)  # what differs, one short phrase each


@dataclass
class Comparison:
    run_a: dict  # run_id, incident_id, agent_name, start_time, steps
    run_b: dict
    steps: list[AlignedStep]
    decisions: list[dict]  # question, decision_a/b, selected_a/b, status, options: [{id, verdict_a, verdict_b, ...}]
    actions: list[dict]  # action_a/b, verb_a/b, target_a/b, patch_a/b, status, differences

    @property
    def same(self) -> bool:
        return all(s.status == "same" for s in self.steps)

    def counts(self) -> dict[str, int]:
        out = {k: 0 for k in ("same", "changed", "only_a", "only_b")}
        for s in self.steps:
            out[s.status] += 1
        return out

    def to_dict(self) -> dict:
        return json.loads(json.dumps({"run_a": self.run_a, "run_b": self.run_b, "same": self.same,
                                      "counts": self.counts(), "steps": [asdict(s) for s in self.steps],
                                      "decisions": self.decisions, "actions": self.actions}, default=_json))


def compare_runs(store, run_a: str, run_b: str) -> Comparison:
    """Align the steps of two runs and say what differs; NotFound names a run the store does not hold."""
    info = {r: _run(store, r) for r in (run_a, run_b)}
    a, b = step_sequence(store, run_a), step_sequence(store, run_b)
    people = {r: _people(store, r) for r in (run_a, run_b)}
    steps = _align(a, b)
    decisions, actions = [], []
    for s in steps:
        kind = (s.a or s.b)["kind"]
        if kind == "decision" and s.status != "same":
            decisions.append(_decision_diff(s, people[run_a], people[run_b]))
        elif kind == "action" and s.status != "same":
            actions.append(_action_diff(s))
    info[run_a]["steps"], info[run_b]["steps"] = len(a), len(b)
    return Comparison(info[run_a], info[run_b], steps, decisions, actions)


def step_sequence(store, run_id: str) -> list[dict]:
    """A run's tool calls, decisions and actions in the order they started, each with its signature."""
    tools = store.query("SELECT span_id, call_id, tool_name, arguments, result, failed, error, start_time "
                        "FROM tool_calls WHERE run_id = ?", [run_id])
    decisions = store.query("SELECT decision_id, question, selected_option, reason, policy, start_time "
                            "FROM decisions WHERE run_id = ?", [run_id])
    options = store.query("SELECT decision_id, option_id, verdict, reason, score FROM options WHERE run_id = ? "
                          "ORDER BY seq", [run_id])
    actions = store.query("SELECT action_id, span_id, decision_id, verb, status, target_kind, target_namespace, "
                          "target_name, patch, mutating, start_time FROM actions WHERE run_id = ?", [run_id])
    steps: list[dict] = []
    for t in tools.to_dict("records"):
        steps.append(_step("tool", f"tool {t['tool_name']}", f"call {t['tool_name']}", t["call_id"] or t["span_id"],
                           t["start_time"], {"arguments": _json_text(t["arguments"]), "result": _json_text(t["result"]),
                                             "failed": bool(t["failed"]), "error": _s(t["error"])}))
    by_decision: dict[str, list[dict]] = {}
    for o in options.to_dict("records"):
        by_decision.setdefault(o["decision_id"], []).append(
            {"id": o["option_id"], "verdict": o["verdict"], "reason": _s(o["reason"]), "score": _n(o["score"])})
    for d in decisions.to_dict("records"):
        steps.append(_step("decision", f"decision {d['question']}", f"decide: {d['question']}", d["decision_id"],
                           d["start_time"], {"question": _s(d["question"]), "selected": _s(d["selected_option"]) or None,
                                             "reason": _s(d["reason"]), "policy": _s(d["policy"]),
                                             "options": by_decision.get(d["decision_id"], [])}))
    # an action recorded more than once (asked for approval, then applied) is one step: its latest record
    if not actions.empty:
        actions = actions.assign(_k=actions["action_id"].fillna(actions["span_id"]))
        first = actions.groupby("_k")["start_time"].min()
        actions = actions.sort_values("start_time").groupby("_k").tail(1)
        actions = actions.assign(start_time=actions["_k"].map(first))
    for x in actions.to_dict("records"):
        target = " ".join(p for p in (_s(x["target_kind"]), "/".join(q for q in (_s(x["target_namespace"]), _s(x["target_name"])) if q)) if p)
        steps.append(_step("action", f"action {x['verb']} {x['target_kind']} {x['target_name']}", f"{x['verb']} {target}",
                           x["action_id"] or x["span_id"], x["start_time"],
                           {"verb": _s(x["verb"]), "target": target, "patch": _json_text(x["patch"]),
                            "status": _s(x["status"]), "decision_id": _s(x["decision_id"]),
                            "mutating": bool(x["mutating"]) if x["mutating"] is not None else None}))
    order = {"tool": 0, "decision": 1, "action": 2}
    steps.sort(key=lambda s: (s["time"], order[s["kind"]]))
    for i, s in enumerate(steps):
        s["index"] = i
    return steps


# -- alignment -------------------------------------------------------------------------------------


def _align(a: list[dict], b: list[dict]) -> list[AlignedStep]:
    matcher = difflib.SequenceMatcher(None, [s["signature"] for s in a], [s["signature"] for s in b], autojunk=False)
    out: list[AlignedStep] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            out += [_pair(x, y) for x, y in zip(a[i1:i2], b[j1:j2])]
            continue
        left, right = a[i1:i2], b[j1:j2]
        # actions pair in order even when their verb or target changed: "it restarted instead of scaling"
        la = [i for i, s in enumerate(left) if s["kind"] == "action"]
        ra = [j for j, s in enumerate(right) if s["kind"] == "action"]
        li = ri = 0
        for i, j in zip(la, ra):
            out += [AlignedStep(x, None, "only_a") for x in left[li:i]]
            out += [AlignedStep(None, y, "only_b") for y in right[ri:j]]
            out.append(_pair(left[i], right[j]))
            li, ri = i + 1, j + 1
        out += [AlignedStep(x, None, "only_a") for x in left[li:]]
        out += [AlignedStep(None, y, "only_b") for y in right[ri:]]
    return out


def _pair(x: dict, y: dict) -> AlignedStep:
    diffs = _differences(x, y)
    return AlignedStep(x, y, "changed" if diffs else "same", diffs)


def _differences(x: dict, y: dict) -> list[str]:
    da, db = x["detail"], y["detail"]
    out = []
    if x["kind"] == "tool":
        if da["arguments"] != db["arguments"]:
            out.append("arguments")
        if da["failed"] != db["failed"]:
            out.append("failed in A" if da["failed"] else "failed in B")
    elif x["kind"] == "decision":
        if da["selected"] != db["selected"]:
            out.append(f"selected {da['selected'] or 'nothing'} vs {db['selected'] or 'nothing'}")
        changed = [o["id"] for o in _option_diffs(da["options"], db["options"])]
        if changed:
            out.append("option verdicts: " + ", ".join(changed))
    else:
        for key in ("verb", "target", "patch", "status"):
            if da[key] != db[key]:
                out.append(key if key == "patch" else f"{key} {da[key]} vs {db[key]}")
    return out


def _option_diffs(oa: list[dict], ob: list[dict]) -> list[dict]:
    """Options whose verdict differs, or that one side did not consider at all."""
    a, b = {o["id"]: o for o in oa}, {o["id"]: o for o in ob}
    out = []
    for oid in list(a) + [k for k in b if k not in a]:
        x, y = a.get(oid), b.get(oid)
        if x is None or y is None or x["verdict"] != y["verdict"]:
            out.append({"id": oid, "verdict_a": x and x["verdict"], "verdict_b": y and y["verdict"],
                        "reason_a": x and x["reason"], "reason_b": y and y["reason"],
                        "score_a": x and x["score"], "score_b": y and y["score"]})
    return out


def _decision_diff(s: AlignedStep, people_a: dict, people_b: dict) -> dict:
    da, db = (s.a or {}).get("detail", {}), (s.b or {}).get("detail", {})
    return {"question": da.get("question") or db.get("question"), "status": s.status,
            "decision_a": s.a and s.a["id"], "decision_b": s.b and s.b["id"],
            "selected_a": da.get("selected"), "selected_b": db.get("selected"),
            "reason_a": da.get("reason"), "reason_b": db.get("reason"),
            "options": _option_diffs(da.get("options", []), db.get("options", [])) if s.a and s.b else [],
            "verdicts_a": people_a.get(s.a and s.a["id"], []), "verdicts_b": people_b.get(s.b and s.b["id"], [])}


def _action_diff(s: AlignedStep) -> dict:
    da, db = (s.a or {}).get("detail", {}), (s.b or {}).get("detail", {})
    return {"status": s.status, "action_a": s.a and s.a["id"], "action_b": s.b and s.b["id"],
            **{f"{k}_{side}": d.get(k) for k in ("verb", "target", "patch") for side, d in (("a", da), ("b", db))},
            "result_a": da.get("status"), "result_b": db.get("status"), "differences": s.differences}


# -- reading ---------------------------------------------------------------------------------------


def _run(store, run_id: str) -> dict:
    row = store.query("SELECT run_id, incident_id, agent_name, start_time FROM runs WHERE run_id = ?", [run_id])
    if row.empty:
        raise NotFound(f"no run {run_id!r} in {getattr(store, 'where', store)}: list the run ids with {LIST_RUNS}")
    r = row.iloc[0]
    return {"run_id": run_id, "incident_id": _s(r["incident_id"]), "agent_name": _s(r["agent_name"]),
            "start_time": _json(r["start_time"])}


def _people(store, run_id: str) -> dict[str, list[str]]:
    """Current verdicts on a run's decisions, by decision id: ["alice: wrong (should have: restart)", ...]."""
    from afterfix.review.verdicts import verdicts

    try:
        found = verdicts(store, run_id=run_id)
    except Exception:  # a store from before the verdicts ledger
        return {}
    out: dict[str, list[str]] = {}
    for v in found:
        if v.target_type == "decision":
            out.setdefault(v.target_id, []).append(
                f"{v.who}: {v.verdict}" + (f" (should have: {v.should_have})" if v.should_have else ""))
    return out


def _step(kind: str, signature: str, label: str, step_id: Any, time: Any, detail: dict) -> dict:
    return {"kind": kind, "signature": signature, "label": label, "id": _s(step_id), "time": time, "detail": detail}


def _json_text(value: Any) -> str | None:
    """Recorded JSON, re-serialized with sorted keys so equal objects compare equal; other text as is."""
    value = _s(value)
    if value is None:
        return None
    try:
        return json.dumps(json.loads(value), sort_keys=True, ensure_ascii=False)
    except ValueError:
        return value


def _s(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and v != v) or v is pd.NaT:
        return None
    return str(v)


def _n(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and v != v) else float(v)


def _json(v: Any) -> Any:
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if v is pd.NaT:
        return None
    return str(v)
