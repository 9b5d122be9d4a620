"""A rollback plan for one agent action: the minimal inverse and every check, as data.

    plan = make_plan(store, cluster, "act-fe83e391bdd8", fields=["DB_POOL_SIZE"])
    plan.outcome        "ready", "nothing_to_do" or "refused"
    plan.patch          the strategic merge patch that restores only the chosen fields
    plan.fields         per field: before, the agent's after, now (live), who owns it now, restored or kept
    plan.checks         same object, drift (three-way), bundled changes, later actions, kind rules

The plan reads the action from the store and the object live through the API; it writes nothing.
`rollback.py` executes it. Refusals that come from the record itself (unknown action, no
before-state, a kind afterfix cannot undo) raise `PlanError`; what the live cluster says becomes
checks, so a person sees every reason at once.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from afterfix._exceptions import AfterfixError
from afterfix.analysis.diffs import _same, parse_state, state_diff
from afterfix.undo import kinds, paths
from afterfix.undo.kube import Cluster, NotFound, kind_info

__all__ = ["Check", "FieldPlan", "Plan", "PlanError", "UnknownAction", "CannotPlan", "FieldSelectionError",
           "make_plan", "load_action", "SERVER_MANAGED"]

# Fields the API server sets itself: recorded as context, never written back.
SERVER_MANAGED = re.compile(r"^metadata\.(generation|resourceVersion|uid|creationTimestamp|managedFields)"
                            r"|^metadata\.annotations\.deployment\.kubernetes\.io/|^status(\.|\[|$)")
NO_INVERSE_VERBS = {"restart", "rollout_restart", "delete_pod", "evict"}
CREATE_VERBS = {"create", "apply_new"}
DELETE_VERBS = {"delete"}
OBJECT_SECTIONS = {"metadata", "spec", "data", "stringData", "binaryData", "type", "immutable", "status"}
STATES = ("as the agent left it", "already restored", "drifted", "server-managed")


class PlanError(AfterfixError):
    """The record cannot be planned from; `exit_code` is what the CLI returns."""
    exit_code = 3


class UnknownAction(PlanError):
    pass


class CannotPlan(PlanError):
    pass


class FieldSelectionError(PlanError):
    exit_code = 2


@dataclass
class Check:
    name: str
    status: str  # pass, info, warn, block
    summary: str
    details: dict = field(default_factory=dict)
    overridable: bool = False  # a block that --override-drift lifts


@dataclass
class FieldPlan:
    path: str
    label: str
    before: Any
    agent_after: Any
    now: Any
    state: str  # one of STATES
    restore: bool
    owner: str | None = None  # the field manager that set it last, live
    owner_time: str | None = None


@dataclass
class Plan:
    action: dict
    target: dict
    live: dict | None
    method: str  # patch, delete, none
    patch: dict | None
    fields: list[FieldPlan]
    checks: list[Check]
    outcome: str  # ready, nothing_to_do, refused
    summary: str
    selected: list[str] | None = None
    override_drift: bool = False

    @property
    def blocks(self) -> list[Check]:
        return [c for c in self.checks if c.status == "block" and not (c.overridable and self.override_drift)]

    @property
    def restored(self) -> list[FieldPlan]:
        return [f for f in self.fields if f.restore]

    @property
    def kept(self) -> list[FieldPlan]:
        return [f for f in self.fields if not f.restore]

    def to_dict(self) -> dict:
        out = asdict(self)
        for f in out["fields"]:
            for key in ("before", "agent_after", "now"):
                if f[key] is paths.MISSING:
                    f[key] = None
        return json.loads(json.dumps(out, default=lambda v: None if v is paths.MISSING else str(v)))


def load_action(store, action_id: str) -> dict:
    """The action's row from the `actions` view (the applied one when it was recorded twice)."""
    rows = store.query("SELECT * FROM actions WHERE action_id = ? ORDER BY start_time", [action_id])
    if rows.empty:
        raise UnknownAction(f"no action {action_id!r} in the store {store.where}: `afterfix actions` lists the "
                            "actions it holds (check the id, or --store)")
    records = rows.to_dict("records")
    applied = [r for r in records if r.get("status") == "applied"]
    return _clean(applied[-1] if applied else records[-1])


def _clean(row: dict) -> dict:
    import pandas as pd

    out = {}
    for k, v in row.items():
        if v is None or (not isinstance(v, (list, dict, str)) and pd.isna(v)):
            out[k] = None
        elif isinstance(v, pd.Timestamp):
            out[k] = v.isoformat()
        else:
            out[k] = v
    return out


def _absent(value: Any) -> bool:
    return value is None or value is paths.MISSING


def _equal(a: Any, b: Any) -> bool:
    if _absent(a) or _absent(b):
        return _absent(a) and _absent(b)
    return _same(a, b) or (isinstance(a, (int, float, str)) and isinstance(b, (int, float, str))
                           and not isinstance(a, bool) and not isinstance(b, bool) and str(a) == str(b))


def make_plan(store, cluster: Cluster, action_id: str, *, fields: list[str] | None = None,
              override_drift: bool = False, action: dict | None = None) -> Plan:
    """Plan the undo of `action_id` (only `fields` of it, when given) against the live cluster."""
    act = action or load_action(store, action_id)
    target = {"kind": act.get("target_kind"), "api_version": act.get("target_api_version"),
              "namespace": act.get("target_namespace"), "name": act.get("target_name"), "uid": act.get("target_uid")}
    if not act.get("mutating"):
        raise CannotPlan(f"{action_id} is a read ({act.get('verb')}), not a change: there is nothing to undo")
    if not target["kind"] or not target["name"]:
        raise CannotPlan(f"{action_id} recorded no target (afterfix.target.kind and .name): afterfix cannot tell "
                         "which object to restore")
    try:
        info = kind_info(target["kind"], target["api_version"])
    except AfterfixError as e:
        raise CannotPlan(f"{action_id}: {e}") from None
    verb = (act.get("verb") or "").lower()
    summary_act = {k: act.get(k) for k in ("action_id", "decision_id", "incident_id", "run_id", "agent_name", "verb",
                                           "status", "start_time", "field_manager", "resource_version_before",
                                           "resource_version_after")}
    if act.get("status") != "applied":
        return Plan(summary_act, target, None, "none", None, [], [Check(
            "applied", "info", f"the action was never applied (status {act.get('status')}): the cluster was not "
                               "changed by it")], "nothing_to_do",
            f"nothing to undo: {action_id} was {act.get('status') or 'not applied'}, not applied", fields, override_drift)

    before, ok_before = parse_state(act.get("before"))
    after, ok_after = parse_state(act.get("after"))
    if verb not in CREATE_VERBS and (not ok_before or before in (None, {}, [])):
        raise CannotPlan(f"{action_id} recorded no before-state (afterfix.action.before), so afterfix cannot know "
                         "what to restore. Restore the object from your own records (kubectl edit), and have the "
                         "agent record the touched fields with ActionHandle.before()")
    if verb in DELETE_VERBS:
        raise CannotPlan(f"{action_id} deleted {target['kind']} {target['namespace']}/{target['name']}: a deletion is "
                         "undone by re-creating the object from its full manifest, which the trace does not hold; "
                         "re-create it from source control")

    try:
        live = cluster.get(info.api_version, info.kind, target["namespace"], target["name"])
    except NotFound:
        live = None
    checks: list[Check] = []
    live_meta = (live or {}).get("metadata") or {}
    live_summary = {"uid": live_meta.get("uid"), "resourceVersion": live_meta.get("resourceVersion"),
                    "generation": live_meta.get("generation")} if live else None
    checks.append(_same_object(target, live, act))

    if verb in CREATE_VERBS:
        return _create_plan(summary_act, target, live, live_summary, checks, cluster, info, act, fields, override_drift)
    if verb in NO_INVERSE_VERBS:
        checks.append(Check("kind rule: restart", "block",
                            "a restart has no inverse: the old pods are gone, and removing or changing the restartedAt "
                            "annotation would only restart the pods again. If the restart hid a problem, "
                            "`afterfix findings --kind masked_issue` shows it"))
        fplans = _field_plans(before, after, live) if live else []
        return _finish(summary_act, target, live, live_summary, "none", None, fplans, checks, fields, override_drift,
                       "refused", f"refused: {action_id} restarted pods, and a restart cannot be undone")

    if live is None:
        return _finish(summary_act, target, None, None, "none", None, [], checks, fields, override_drift, "refused",
                       f"refused: {target['kind']} {target['namespace']}/{target['name']} no longer exists")
    fplans = _field_plans(before, after, live)
    foreign = [f.path for f in fplans if f.path.split(".")[0].split("[")[0] not in OBJECT_SECTIONS
               and f.path.split(".")[0] not in live]
    if foreign:
        raise CannotPlan(f"{action_id} recorded its state as {', '.join(foreign[:4])}, which are not fields of a "
                         f"{target['kind']} (they would start with spec., metadata., data., ...): afterfix cannot tell "
                         "which fields to restore. Restore by hand, and have the agent record the touched fields as "
                         "object paths (traces/SCHEMA.md, afterfix.action.before)")
    if not [f for f in fplans if f.state != "server-managed"]:
        raise CannotPlan(f"{action_id}: its before and after state differ in no field afterfix can write back "
                         f"({', '.join(f.path for f in fplans) or 'no fields'}); nothing to restore")
    _select(fplans, fields, action_id)
    checks.append(_drift(fplans, act, live))
    checks.extend(kinds.checks(cluster, store, act, info, live, fplans))
    checks.append(_later(store, act))

    restore = [f for f in fplans if f.restore]
    blocking = [c for c in checks if c.status == "block" and not (c.overridable and override_drift)]
    if blocking:
        for f in fplans:
            f.restore = False
        return _finish(summary_act, target, live, live_summary, "none", None, fplans, checks, fields, override_drift,
                       "refused", "refused: " + "; ".join(c.summary for c in blocking))
    if all(f.state == "already restored" for f in restore):
        for f in restore:
            f.restore = False
        done = _previous_rollbacks(store, act["action_id"])
        by = f" ({done})" if done else ""
        return _finish(summary_act, target, live, live_summary, "none", None, fplans, checks, fields, override_drift,
                       "nothing_to_do", f"already rolled back{by}: every chosen field holds its before value; "
                                        "nothing changes")
    # Past the blocks above, a drifted field is one --override-drift asked to restore anyway.
    for f in restore:
        if f.state == "already restored":
            f.restore = False
    try:
        patch = paths.strategic_patch([(paths.parse(f.path, live), paths.MISSING if _absent(f.before) else f.before)
                                       for f in fplans if f.restore])
    except ValueError as e:
        checks.append(Check("inverse", "block", f"{e}: restore it by hand"))
        patch = None
    if patch is not None:
        patch.setdefault("metadata", {}).update({"uid": live_meta.get("uid"),
                                                  "resourceVersion": live_meta.get("resourceVersion")})
    plan = _finish(summary_act, target, live, live_summary, "patch", patch, fplans, checks, fields, override_drift,
                   "ready", "")
    if plan.blocks:
        plan.outcome = "refused"
        plan.summary = "refused: " + "; ".join(c.summary for c in plan.blocks)
        return plan
    kept = [f.label for f in plan.fields if not f.restore and f.state != "server-managed"]
    plan.summary = (f"ready: restore {', '.join(f.label for f in plan.restored)} on {target['kind']} "
                    f"{target['namespace']}/{target['name']}" + (f"; keep {', '.join(kept)}" if kept else ""))
    return plan


def _finish(act, target, live, live_summary, method, patch, fplans, checks, fields, override, outcome, summary) -> Plan:
    return Plan(act, target, live_summary, method, patch, fplans, checks, outcome, summary, fields, override)


def _same_object(target: dict, live: dict | None, act: dict) -> Check:
    name = f"{target['kind']} {target['namespace']}/{target['name']}"
    if live is None:
        return Check("same object", "block", f"{name} no longer exists: there is nothing to restore")
    uid = live["metadata"].get("uid")
    if not target.get("uid"):
        return Check("same object", "warn", f"the trace recorded no uid for {name}; the live object ({uid}) is "
                                             "assumed to be the one the agent changed", {"live_uid": uid})
    if uid != target["uid"]:
        return Check("same object", "block",
                     f"{name} was deleted and re-created since the agent's change (uid {target['uid']} then, {uid} now): "
                     "the change belongs to an object that no longer exists; nothing is restored",
                     {"recorded_uid": target["uid"], "live_uid": uid})
    return Check("same object", "pass", f"{name} is the object the agent changed (uid {uid})", {"uid": uid})


def _field_plans(before: Any, after: Any, live: dict | None) -> list[FieldPlan]:
    out = []
    for ch in state_diff(json.dumps(before), json.dumps(after)):
        segs = paths.parse(ch.path, live)
        now = paths.get(live, segs) if live is not None else paths.MISSING
        if SERVER_MANAGED.search(ch.path):
            state = "server-managed"
        elif _equal(now, ch.after):
            state = "as the agent left it"
        elif _equal(now, ch.before):
            state = "already restored"
        else:
            state = "drifted"
        owner, when = _owner(live, segs) if live is not None else (None, None)
        out.append(FieldPlan(ch.path, paths.label(ch.path), ch.before, ch.after, now, state,
                             state != "server-managed", owner, when))
    return out


def _select(fplans: list[FieldPlan], wanted: list[str] | None, action_id: str) -> None:
    if not wanted:
        return
    writable = [f for f in fplans if f.state != "server-managed"]
    chosen = set()
    for w in wanted:
        hit = [f.path for f in writable if paths.matches(w, f.path)]
        if not hit:
            raise FieldSelectionError(f"--fields {w!r} names none of the fields {action_id} changed; choose from: "
                                      + ", ".join(f"{f.label} ({f.path})" for f in writable))
        chosen.update(hit)
    for f in fplans:
        f.restore = f.path in chosen


def _owner(live: dict, segs: list) -> tuple[str | None, str | None]:
    """The field manager whose managedFields hold this field, latest first."""
    best = (None, None)
    for entry in (live.get("metadata") or {}).get("managedFields") or []:
        node = entry.get("fieldsV1") or {}
        for seg in segs:
            if isinstance(seg, paths.Key):
                node = node.get(f"f:{seg.name}") if isinstance(node, dict) else None
            elif isinstance(seg, paths.Item):
                node = node.get("k:" + json.dumps({"name": seg.name}, separators=(",", ":"))) if isinstance(node, dict) else None
            else:
                node = None
            if node is None:
                break
        if node is not None:
            when = str(entry.get("time") or "")
            if best[0] is None or when > (best[1] or ""):
                best = (str(entry.get("manager") or "unknown"), when or None)
    return best


def _drift(fplans: list[FieldPlan], act: dict, live: dict) -> Check:
    rv_now = live["metadata"].get("resourceVersion")
    rv_agent = act.get("resource_version_after")
    chosen = [f for f in fplans if f.restore]
    drifted = [f for f in chosen if f.state == "drifted"]
    table = [{"field": f.label, "path": f.path, "before": _show(f.before), "agent": _show(f.agent_after),
              "now": _show(f.now), "state": f.state, "owner": f.owner, "since": f.owner_time} for f in fplans]
    details = {"resource_version_agent": rv_agent, "resource_version_now": rv_now, "three_way": table}
    if drifted:
        who = ", ".join(f"{f.label} now {_text(f.now)} (set by {f.owner or 'an unknown writer'}"
                        f"{' at ' + f.owner_time if f.owner_time else ''})" for f in drifted)
        return Check("drift", "block", f"changed since the agent's write: {who}; restoring would overwrite that. "
                                       "Refused unless --override-drift --override-reason TEXT", details, overridable=True)
    if rv_agent and rv_now == rv_agent:
        return Check("drift", "pass", f"nobody wrote the object since the agent (resourceVersion {rv_now})", details)
    others = sorted({f.owner for f in fplans if f.owner} - {act.get("field_manager")})
    back = [f for f in chosen if f.state == "already restored"]
    held = "every field to restore still holds the agent's value" if not back else (
        f"{', '.join(f.label for f in back)} already hold{'s' if len(back) == 1 else ''} the before value, the rest the agent's")
    return Check("drift", "pass", f"the object was written since the agent (resourceVersion {rv_agent} then, {rv_now} "
                                  f"now), but {held}; the inverse touches only the agent's fields, so later edits stay"
                 + (f" (other managers on the object: {', '.join(others)})" if others else ""), details)


def _show(value: Any) -> Any:
    return None if value is paths.MISSING else value


def _text(value: Any) -> str:
    """A value as a person reads it in a sentence: absent, or its JSON."""
    if _absent(value):
        return "absent"
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value


def _later(store, act: dict) -> Check:
    """Later actions on the same object, and later changes in the same incident that came after this one."""
    same = store.query(
        """SELECT action_id, agent_name, verb, status, target_kind, target_namespace, target_name, start_time,
                  before, after, field_manager
           FROM actions WHERE mutating AND start_time > ?::TIMESTAMP AND action_id <> ?
             AND ((target_uid IS NOT NULL AND target_uid = ?) OR (target_kind = ? AND target_namespace IS NOT DISTINCT FROM ?
                  AND target_name = ?) OR (incident_id IS NOT NULL AND incident_id = ?))
           ORDER BY start_time""",
        [act["start_time"], act["action_id"], act.get("target_uid"), act.get("target_kind"),
         act.get("target_namespace"), act.get("target_name"), act.get("incident_id")])
    mine = {p.path for p in state_diff(act.get("before"), act.get("after"))}
    rows = []
    for r in same.to_dict("records"):
        on_same = (r["target_kind"], r["target_namespace"], r["target_name"]) == (
            act.get("target_kind"), act.get("target_namespace"), act.get("target_name"))
        theirs = {p.path for p in state_diff(r["before"], r["after"])} if on_same else set()
        rows.append({"action_id": r["action_id"], "agent": r["agent_name"], "verb": r["verb"], "status": r["status"],
                     "target": f"{r['target_kind']} {r['target_namespace']}/{r['target_name']}",
                     "time": str(r["start_time"]), "same_object": on_same,
                     "shared_fields": sorted(mine & theirs), "rollback": r["field_manager"] == "afterfix"})
    if not rows:
        return Check("later actions", "pass", "no later action touched this object or came after it in its incident")
    overlap = [r for r in rows if r["shared_fields"]]
    if overlap:
        return Check("later actions", "warn",
                     "later actions changed the same fields: " + ", ".join(
                         f"{r['action_id']} ({r['verb']} by {r['agent']}: {', '.join(r['shared_fields'])})" for r in overlap)
                     + "; the drift check above compares with the live values", {"actions": rows})
    return Check("later actions", "info",
                 "later actions that came after this one, and may have relied on it: " + ", ".join(
                     f"{r['action_id']} ({r['verb']} {r['target']})" for r in rows[:6])
                 + (f" and {len(rows) - 6} more" if len(rows) > 6 else ""), {"actions": rows})


def _previous_rollbacks(store, action_id: str) -> str | None:
    try:
        rows = store.query("""SELECT who, time FROM rollbacks WHERE action_id = ? AND outcome = 'rolled_back'
                              ORDER BY time DESC LIMIT 1""", [action_id])
    except Exception:  # a store from before the ledgers existed
        return None
    if rows.empty:
        return None
    r = rows.iloc[0]
    return f"by {r['who']} at {r['time']:%Y-%m-%d %H:%M:%S} UTC"


def _create_plan(act, target, live, live_summary, checks, cluster, info, record, fields, override) -> Plan:
    if live is None:
        return _finish(act, target, None, None, "none", None, [], checks, fields, override, "nothing_to_do",
                       f"already undone: {target['kind']} {target['namespace']}/{target['name']} no longer exists")
    refs = kinds.references(cluster, info, live)
    if refs:
        checks.append(Check("kind rule: created object", "block",
                            f"{target['kind']} {target['namespace']}/{target['name']} was created by the agent, but "
                            f"{', '.join(refs)} refer to it: deleting it would break them", {"referenced_by": refs}))
    else:
        checks.append(Check("kind rule: created object", "pass",
                            "the agent created this object and nothing else refers to it: it is undone by deleting it"))
    meta = live["metadata"]
    patch = {"preconditions": {"uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")}}
    plan = _finish(act, target, live, live_summary, "delete", patch, [], checks, fields, override, "ready",
                   f"ready: delete {target['kind']} {target['namespace']}/{target['name']}, which the agent created")
    if plan.blocks:
        plan.outcome, plan.summary = "refused", "refused: " + "; ".join(c.summary for c in plan.blocks)
    return plan
