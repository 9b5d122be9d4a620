"""Replay and what-if: re-make recorded decisions from what the agent had, and show where they part.

`replay_decision` re-runs one decision from its recorded inputs through a decider (`deciders.py`);
`what_if` first edits recorded observations or tool results (`whatif.py`), then re-runs that
decision and every later decision of the same run. Nothing here calls a tool or touches a
cluster: recorded tool results are served, a call with no recording is listed as missing, and the
changes the replayed choice implies are listed as "would do", never made. Results are saved to,
listed from and reopened from the `replays` ledger (`replays.py`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from afterfix.review.deciders import Decider, NotReplayable, Replayed, decider_for, endpoint_for
from afterfix.review.recorded import RecordedDecision, load_decision, run_decisions
from afterfix.review.whatif import Edit, EditError, apply_edits, parse_edit

__all__ = ["DecisionReplay", "ReplayResult", "replay_decision", "what_if", "replay_window", "replay_recorded"]

WOULD_DO = "would do (not executed)"
AFTER_DIVERGENCE = ("an earlier decision of this run chose differently in this replay; the tool results it is served "
                    "are the recording's, from the branch the agent actually took")


@dataclass
class DecisionReplay:
    decision_id: str
    question: str | None
    decider: str | None
    recorded_selected: str | None
    replayed_selected: str | None
    same: bool
    changed: list[dict] = field(default_factory=list)  # options whose verdict changed: id, recorded/replayed verdict, reason
    would_do: list[dict] = field(default_factory=list)  # changes the replayed choice implies: shown, never made
    missing: list[str] = field(default_factory=list)  # tool calls it had no recording of
    error: str | None = None  # why it could not be re-made (then `same` is False and it did not diverge)
    error_kind: str | None = None  # not_replayable | decider_failed
    recorded_reason: str | None = None
    replayed_reason: str | None = None
    options: list[dict] = field(default_factory=list)  # every option side by side
    edits: list[dict] = field(default_factory=list)  # the edits that reached this decision
    note: str | None = None

    @property
    def diverged(self) -> bool:
        return self.error is None and not self.same


@dataclass
class ReplayResult:
    replay_id: str | None
    kind: str  # replay | what_if
    edits: list[dict]
    decisions: list[DecisionReplay]
    diverged: bool
    decision_id: str | None = None
    run_id: str | None = None
    incident_id: str | None = None
    decider: str | None = None
    time: datetime | None = None
    who: str | None = None
    note: str | None = None

    @property
    def first(self) -> DecisionReplay:
        return self.decisions[0]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["time"] = self.time.isoformat() if self.time else None
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "ReplayResult":
        data = dict(data)
        data["decisions"] = [DecisionReplay(**{k: v for k, v in d.items() if k in DecisionReplay.__dataclass_fields__})
                             for d in data.get("decisions", [])]
        if isinstance(data.get("time"), str):
            data["time"] = datetime.fromisoformat(data["time"])
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


# -- comparing -------------------------------------------------------------------------------------


def _side_by_side(decision: RecordedDecision, replayed: Replayed) -> list[dict]:
    mine = {o["id"]: o for o in replayed.options}
    ids = [o["id"] for o in decision.options] + [i for i in mine if decision.option(i) is None]
    rows = []
    for oid in ids:
        rec, rep = decision.option(oid) or {}, mine.get(oid) or {}
        rows.append({"id": oid, "description": rec.get("description") or rep.get("description"),
                     "recorded_verdict": rec.get("verdict"), "replayed_verdict": rep.get("verdict"),
                     "recorded_reason": rec.get("reason"), "replayed_reason": rep.get("reason"),
                     "recorded_score": rec.get("score"), "replayed_score": rep.get("score")})
    return rows


def _verb(action: dict) -> str:
    for flag, verb in (("restart", "restart"), ("rollback", "rollback"), ("sql", "create"), ("notify", "notify")):
        if action.get(flag):
            return verb
    return action.get("verb") or ("patch" if action.get("patch") else "change")


def _would_do(decision: RecordedDecision, replayed: Replayed) -> list[dict]:
    """The changes the replayed choice implies: the recorded actions when it chose what the agent
    chose (and would change the same), else what the replayed option's action says."""
    chosen = next((o for o in replayed.options if o["id"] == replayed.selected), None)
    if chosen is None:
        return []
    recorded = decision.option(replayed.selected)
    if replayed.selected == decision.selected and recorded and (recorded.get("action") or {}) == (chosen.get("action") or {}):
        acts = [{**{k: a[k] for k in ("verb", "target", "patch", "action_id")}, "recorded_status": a["status"],
                 "status": WOULD_DO, "source": "recorded action"} for a in decision.actions if a["mutating"]]
        if acts:
            return acts
    action = chosen.get("action") or {}
    if not action:
        return []
    kind, name = action.get("kind"), action.get("name")
    namespace = next((a["namespace"] for a in decision.actions if a["kind"] == kind and a["name"] == name), None)
    service = decision.observations().get("service")
    if namespace is None and isinstance(service, str) and "/" in service:
        namespace = service.split("/")[0]
    target = " ".join(x for x in (kind, "/".join(y for y in (namespace, name) if y)) if x) or str(action.get("notify") or "")
    return [{"verb": _verb(action), "target": target, "patch": action.get("patch"), "action_id": None,
             "recorded_status": None, "status": WOULD_DO, "source": "replayed option", "action": action}]


def _missing(decision: RecordedDecision, results: dict) -> list[str]:
    """Tool calls the decision had, or names as its sources, that no recording can serve."""
    known = {t.call_id: t for t in decision.tool_calls if t.call_id}
    out = [t.call_id for t in decision.tool_calls if t.call_id and not t.recorded and t.call_id not in results]
    for ids in decision.sources().values():
        out += [i for i in ids if i not in known and i not in results]
    for message in (decision.chat or {}).get("input_messages") or []:
        for cid in _tool_message_ids(message):
            if cid not in known and cid not in results:
                out.append(cid)
    return list(dict.fromkeys(out))


def _tool_message_ids(message: Any) -> list[str]:
    if not isinstance(message, dict) or message.get("role") != "tool":
        return []
    ids = [message["tool_call_id"]] if isinstance(message.get("tool_call_id"), str) else []
    for part in message.get("parts") or []:
        if isinstance(part, dict) and part.get("type") == "tool_call_response" and isinstance(part.get("id"), str):
            ids.append(part["id"])
    return ids


# -- re-running ------------------------------------------------------------------------------------


def _rerun(decision: RecordedDecision, inputs: dict, results: dict, applied: list[dict], *, decider: Decider | None,
           endpoint: str | None, model: str | None) -> DecisionReplay:
    out = DecisionReplay(decision.decision_id, decision.question, decider.name if decider else None,
                         decision.selected, None, False, missing=_missing(decision, results), edits=applied,
                         recorded_reason=decision.reason)
    try:
        with endpoint_for(decision, endpoint) as url:
            chosen = decider or decider_for(decision, endpoint=url, model=model)
            out.decider = chosen.name
            try:
                replayed = chosen.decide(decision, inputs, results)
            except NotReplayable:
                raise
            except Exception as e:  # the decider's own failure (an endpoint, a user's function): shown, not raised
                out.error, out.error_kind = f"{chosen.name}: {type(e).__name__}: {e}", "decider_failed"
                return out
    except NotReplayable as e:
        out.error, out.error_kind = str(e), "not_replayable"
        return out
    out.replayed_selected, out.replayed_reason = replayed.selected, replayed.reason
    out.same = (replayed.selected or None) == (decision.selected or None)
    out.options = _side_by_side(decision, replayed)
    out.changed = [o for o in out.options if o["recorded_verdict"] != o["replayed_verdict"]]
    out.would_do = _would_do(decision, replayed)
    return out


def replay_recorded(decisions: list[RecordedDecision], edits: list[Edit] | None = None, *, decider: Decider | None = None,
                    endpoint: str | None = None, model: str | None = None) -> list[DecisionReplay]:
    """Re-run `decisions` (the first, then the later ones of its run) with `edits` written for the first."""
    edits = edits or []
    first, out = decisions[0], []
    for decision in decisions:
        inputs, results, applied = apply_edits(decision, edits, first=first)
        one = _rerun(decision, inputs, results, applied, decider=decider, endpoint=endpoint, model=model)
        if any(d.diverged for d in out):
            one.note = AFTER_DIVERGENCE
        out.append(one)
    return out


def _result(kind: str, decision: RecordedDecision, decisions: list[DecisionReplay]) -> ReplayResult:
    edits = decisions[0].edits if kind == "what_if" else []
    return ReplayResult(None, kind, edits, decisions, any(d.diverged for d in decisions), decision.decision_id,
                        decision.run_id, decision.incident_id, decisions[0].decider)


def replay_decision(store, decision_id: str, *, decider: Decider | None = None, endpoint: str | None = None,
                    model: str | None = None) -> ReplayResult:
    """Re-run one decision from its recorded inputs. Raises NotFound for an unknown id; a decision
    that cannot be re-made comes back with `error` set on it."""
    decision = load_decision(store, decision_id)
    return _result("replay", decision, replay_recorded([decision], decider=decider, endpoint=endpoint, model=model))


def what_if(store, decision_id: str, edits: dict[str, Any], *, decider: Decider | None = None, endpoint: str | None = None,
            model: str | None = None, downstream: bool = True) -> ReplayResult:
    """Edit `decision_id`'s recorded inputs or tool results ({path: new value}, paths as in
    `whatif.py`), then re-run it and, with `downstream`, every later decision of its run.
    Raises EditError for a path that names nothing (the message lists what is there)."""
    if not edits:
        raise EditError("a what-if needs at least one edit: {PATH: VALUE}, e.g. {'inputs.metrics.latency_p95_ms': 120}")
    parsed = [parse_edit(path, value) for path, value in edits.items()]
    decision = load_decision(store, decision_id)
    chain = [decision]
    if downstream and decision.run_id is not None:
        run = run_decisions(store, decision.run_id)
        at = next(i for i, d in enumerate(run) if d.decision_id == decision_id)
        chain += run[at + 1:]
    return _result("what_if", decision, replay_recorded(chain, parsed, decider=decider, endpoint=endpoint, model=model))


def replay_window(store, *, since: datetime | None = None, until: datetime | None = None, incident_id: str | None = None,
                  endpoint: str | None = None, model: str | None = None, decider: Decider | None = None) -> list[ReplayResult]:
    """Replay every decision that started in [since, until) (or of one incident), each on its own,
    in time order. Each run is read once."""
    from afterfix.analysis import _load

    where = ["afterfix_kind = 'decision'"]
    if since is not None:
        where.append(f"start_time >= CAST({_load._literal(since.isoformat(sep=' '))} AS TIMESTAMP)")
    if until is not None:
        where.append(f"start_time < CAST({_load._literal(until.isoformat(sep=' '))} AS TIMESTAMP)")
    if incident_id is not None:
        _load.incident_run_ids(store, incident_id)  # NotFound names how to list them
        where.append(f"incident_id = {_load._literal(incident_id)}")
    rows = store.arrow(f"SELECT decision_id, run_id FROM spans WHERE {' AND '.join(where)} ORDER BY start_time, span_id"
                       ).to_pylist()
    by_run: dict[str | None, dict[str, RecordedDecision]] = {}
    out = []
    for row in rows:
        if row["run_id"] is None:
            decision = load_decision(store, row["decision_id"])
        else:
            if row["run_id"] not in by_run:
                by_run[row["run_id"]] = {d.decision_id: d for d in run_decisions(store, row["run_id"])}
            decision = by_run[row["run_id"]][row["decision_id"]]
        out.append(_result("replay", decision, replay_recorded([decision], decider=decider, endpoint=endpoint, model=model)))
    return out
