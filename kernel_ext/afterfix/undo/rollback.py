"""Executing a rollback plan: dry-run first, a preconditioned write, verification, and a record.

    result = rollback_action(store, cluster, "act-fe83e391bdd8", who="ana", reason="pool fix lost",
                             fields=["DB_POOL_SIZE"])
    result.outcome   rolled_back | already_rolled_back | nothing_to_do | refused | failed | dry_run
    result.exit_code the CLI's exit code (EXIT_CODES)

The order never changes: plan (checks against the live object) → server-side dry-run
(`dryRun=All`), whose answer must hold exactly the intended inverse → `started` row in the
`rollbacks` ledger → the write, preconditioned on the uid and resourceVersion the plan read → on
409, re-read and re-plan (never a blind retry) → verify the fields by reading the object back →
the outcome row, and the rollback as its own decision and action trace. Refusals are results,
not exceptions, so the guard and `--decision` can report them and go on deciding.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from afterfix.undo import paths
from afterfix.undo.kube import ClusterError, ClusterUnreachable, Conflict, Forbidden, Rejected
from afterfix.undo.plan import SERVER_MANAGED, Plan, PlanError, UnknownAction, _equal, _text, load_action, make_plan
from afterfix.undo.trace import emit_rollback

__all__ = ["RollbackResult", "DecisionRollback", "rollback_action", "rollback_decision", "EXIT_CODES"]

# The CLI's exit codes (docs/undo.md): scripts can tell "nothing to do" from "refused" from "broken".
EXIT_CODES = {"ok": 0, "refused": 1, "usage": 2, "record": 3, "cluster": 4, "partial": 5}
MAX_REPLANS = 3


@dataclass
class RollbackResult:
    action_id: str
    outcome: str
    message: str
    exit_code: int
    plan: Plan | None = None
    rollback_id: str | None = None
    result: dict = field(default_factory=dict)
    trace_id: str | None = None

    @property
    def changed(self) -> bool:
        return self.outcome == "rolled_back"

    def to_dict(self) -> dict:
        return {"action_id": self.action_id, "outcome": self.outcome, "message": self.message,
                "exit_code": self.exit_code, "rollback_id": self.rollback_id, "trace_id": self.trace_id,
                "result": self.result, "plan": self.plan.to_dict() if self.plan else None}


@dataclass
class DecisionRollback:
    decision_id: str
    results: list[RollbackResult]
    not_attempted: list[str]
    exit_code: int
    message: str

    def to_dict(self) -> dict:
        return {"decision_id": self.decision_id, "message": self.message, "exit_code": self.exit_code,
                "results": [r.to_dict() for r in self.results], "not_attempted": self.not_attempted}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def rollback_action(store, cluster, action_id: str, *, who: str, reason: str | None, fields: list[str] | None = None,
                    dry_run: bool = False, override_drift_reason: str | None = None, automatic: bool = False,
                    before_write: Callable[[], Any] | None = None) -> RollbackResult:
    """Undo one action (only `fields` of it, when given). `before_write` runs between the dry-run
    and the write (tests put a competing writer there)."""
    rollback_id = f"rb-{uuid.uuid4().hex[:12]}"
    base = {"rollback_id": rollback_id, "action_id": action_id, "who": who, "reason": reason,
            "automatic": automatic, "fields": json.dumps(fields) if fields else None,
            "override_reason": override_drift_reason}
    try:
        act = load_action(store, action_id)
    except UnknownAction as e:
        return RollbackResult(action_id, "refused", str(e), EXIT_CODES["record"])
    base["decision_id"] = act.get("decision_id")
    result: dict[str, Any] = {"attempts": []}
    plan: Plan | None = None
    try:
        for attempt in range(MAX_REPLANS + 1):
            plan = make_plan(store, cluster, action_id, fields=fields, override_drift=bool(override_drift_reason),
                             action=act)
            if attempt:
                result["attempts"].append({"replanned": plan.outcome, "summary": plan.summary})
            if plan.outcome == "nothing_to_do":
                outcome = "already_rolled_back" if plan.fields else "nothing_to_do"
                if attempt:
                    plan.summary = f"re-planned after a conflict: {plan.summary}"
                return _record(store, base, plan, outcome, plan.summary, 0, result)
            if plan.outcome == "refused":
                msg = plan.summary if not attempt else f"re-planned after a conflict, and now {plan.summary}"
                return _record(store, base, plan, "refused", msg, EXIT_CODES["refused"], result)
            dry = _dry_run(cluster, plan, act)
            result["dry_run"] = dry
            if not dry["matches"]:
                return _record(store, base, plan, "failed", dry["message"], EXIT_CODES["refused"], result)
            if dry_run:
                return _record(store, base, plan, "dry_run", "dry-run passed: " + dry["message"], 0, result)
            if attempt == 0:
                _append(store, base, plan, "started", "about to write the inverse", result)
            if before_write is not None:
                before_write()
            try:
                written = _write(cluster, plan, act)
            except Conflict as e:
                result["attempts"].append({"conflict": str(e)})
                continue
            result["write"] = {"resourceVersion": (written.get("metadata") or {}).get("resourceVersion")}
            verify = _verify(cluster, plan, act)
            result["verification"] = verify
            if not verify["ok"]:
                return _record(store, base, plan, "failed", verify["message"], EXIT_CODES["refused"], result,
                               rv_after=result["write"]["resourceVersion"])
            out = _record(store, base, plan, "rolled_back", plan.summary.replace("ready: restore ", "rolled back: restored ", 1)
                          + f"; verified ({verify['message']})", 0, result, rv_after=result["write"]["resourceVersion"])
            out.trace_id = emit_rollback(store, act, plan, out, who=who, reason=reason, automatic=automatic)
            return out
        return _record(store, base, plan, "failed", f"the object kept changing under afterfix ({MAX_REPLANS + 1} "
                       "conflicts in a row): nothing was written; try again when its other writer is done",
                       EXIT_CODES["refused"], result)
    except PlanError as e:
        return _record(store, base, plan, "refused", str(e), e.exit_code, result)
    except Forbidden as e:
        return _record(store, base, plan, "failed", str(e), EXIT_CODES["cluster"], result)
    except ClusterUnreachable as e:
        return _record(store, base, plan, "failed", str(e), EXIT_CODES["cluster"], result)


def _target_args(plan: Plan) -> tuple:
    t = plan.target
    return t["api_version"], t["kind"], t["namespace"], t["name"]


def _dry_run(cluster, plan: Plan, act: dict) -> dict:
    """The server's answer to the inverse with dryRun=All, compared field by field with the plan."""
    try:
        if plan.method == "delete":
            cluster.delete(*_target_args(plan), dry_run=True, **_preconditions(plan))
            return {"matches": True, "message": "the server would delete the object"}
        answer = cluster.patch(*_target_args(plan), plan.patch, dry_run=True)
    except Rejected as e:
        return {"matches": False, "message": f"the server-side dry-run rejected the inverse, nothing was written: {e}",
                "status": e.status}
    except Conflict as e:
        return {"matches": False, "message": f"the dry-run met a conflict, nothing was written: {e}", "status": 409}
    wrong = []
    for f in plan.fields:
        if not f.restore:
            continue
        got = paths.get(answer, paths.parse(f.path, answer))
        if not _equal(got, f.before):
            wrong.append(f"{f.label}: wanted {_text(f.before)}, the server would set {_text(got)}")
    live = cluster.get(*_target_args(plan))
    from afterfix.analysis.diffs import flatten

    restored = {f.path for f in plan.fields if f.restore}
    then, now = flatten(_body(live)), flatten(_body(answer))
    extra = sorted(p for p in set(then) | set(now) if p not in restored and not SERVER_MANAGED.search(p)
                   and not any(_same_field(p, r) for r in restored) and not _equal(then.get(p, paths.MISSING), now.get(p, paths.MISSING)))
    if extra:
        wrong.append("the server would also change " + ", ".join(paths.label(p) for p in extra[:6]))
    if wrong:
        return {"matches": False, "message": "the dry-run result differs from the intended inverse, nothing was "
                                             "written: " + "; ".join(wrong), "differences": wrong}
    return {"matches": True, "message": f"the server would set exactly {', '.join(f.label for f in plan.fields if f.restore)}"}


def _same_field(flat: str, path: str) -> bool:
    return paths.tokens(flat) == paths.tokens(path)


def _body(obj: dict) -> dict:
    meta = obj.get("metadata") or {}
    return {"metadata": {"labels": meta.get("labels") or {}, "annotations": meta.get("annotations") or {}},
            **{k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}}


def _preconditions(plan: Plan) -> dict:
    pre = (plan.patch or {}).get("preconditions") or {}
    return {"uid": pre.get("uid"), "resource_version": pre.get("resourceVersion")}


def _write(cluster, plan: Plan, act: dict) -> dict:
    if plan.method == "delete":
        cluster.delete(*_target_args(plan), **_preconditions(plan))
        return {"metadata": {}}
    return cluster.patch(*_target_args(plan), plan.patch)


def _verify(cluster, plan: Plan, act: dict) -> dict:
    from afterfix.undo.kube import NotFound

    if plan.method == "delete":
        try:
            cluster.get(*_target_args(plan))
        except NotFound:
            return {"ok": True, "message": "the object is gone"}
        return {"ok": False, "message": "the object still exists after the delete"}
    obj = cluster.get(*_target_args(plan))
    wrong = []
    for f in plan.fields:
        if f.restore:
            got = paths.get(obj, paths.parse(f.path, obj))
            if not _equal(got, f.before):
                wrong.append(f"{f.label} is {_text(got)}, not {_text(f.before)}")
    if wrong:
        return {"ok": False, "message": "written, but read back " + "; ".join(wrong)}
    status = obj.get("status") or {}
    rollout = ""
    if plan.target["kind"] == "Deployment" and any(f.restore and f.path.startswith("spec.template.") for f in plan.fields):
        rollout = (f"; rollout: generation {obj['metadata'].get('generation')}, observed "
                   f"{status.get('observedGeneration')}, {status.get('updatedReplicas', 0)} of "
                   f"{obj['spec'].get('replicas')} pods updated")
    return {"ok": True, "message": "read back: every restored field holds its before value" + rollout,
            "resourceVersion": obj["metadata"].get("resourceVersion")}


def _append(store, base: dict, plan: Plan | None, outcome: str, message: str, result: dict,
            rv_after: str | None = None) -> None:
    t = plan.target if plan else {}
    live = (plan.live or {}) if plan else {}
    store.append_ledger("rollbacks", [{
        **base, "time": _now(), "outcome": outcome, "message": message,
        "target_uid": live.get("uid") or t.get("uid"), "target_kind": t.get("kind"),
        "target_namespace": t.get("namespace"), "target_name": t.get("name"),
        "resource_version_before": live.get("resourceVersion"), "resource_version_after": rv_after,
        "plan": json.dumps(plan.to_dict()) if plan else None, "result": json.dumps(result, default=str)}])


def _record(store, base, plan, outcome, message, code, result, rv_after=None) -> RollbackResult:
    _append(store, base, plan, outcome, message, result, rv_after)
    return RollbackResult(base["action_id"], outcome, message, code, plan, base["rollback_id"], result)


def rollback_decision(store, cluster, decision_id: str, **kw) -> DecisionRollback:
    """Undo every applied action of one decision, newest first; stop at the first that does not
    roll back, and say what was done and what was not attempted."""
    rows = store.query("""SELECT action_id FROM actions WHERE decision_id = ? AND mutating AND status = 'applied'
                          ORDER BY start_time DESC, span_id DESC""", [decision_id])
    ids = list(dict.fromkeys(rows["action_id"])) if not rows.empty else []
    if not ids:
        return DecisionRollback(decision_id, [], [], EXIT_CODES["record"],
                                f"decision {decision_id!r} has no applied actions in the store {store.where}: "
                                "`afterfix actions` lists actions with their decisions")
    results: list[RollbackResult] = []
    for i, action_id in enumerate(ids):
        res = rollback_action(store, cluster, action_id, **kw)
        results.append(res)
        if res.outcome not in ("rolled_back", "already_rolled_back", "nothing_to_do", "dry_run"):
            done = [r.action_id for r in results if r.changed]
            rest = ids[i + 1:]
            partial = bool(done)
            msg = (f"stopped at {action_id} ({res.outcome}: {res.message}). "
                   + (f"Already rolled back by this run: {', '.join(done)}. " if done else "Nothing was changed. ")
                   + (f"Not attempted: {', '.join(rest)}." if rest else ""))
            return DecisionRollback(decision_id, results, rest,
                                    EXIT_CODES["partial"] if partial else res.exit_code, msg)
    changed = [r.action_id for r in results if r.changed]
    return DecisionRollback(decision_id, results, [], 0,
                            f"{len(ids)} action(s) of {decision_id}: " + (f"rolled back {', '.join(changed)}"
                                                                         if changed else "nothing needed changing"))
