"""The frozen fixture of one incident: everything its agent saw, written once as JSON.

    freeze(store, incident_id) -> dict      # the fixture (JSON-ready); `regression.Frozen` reads it back

What goes in, all read from the store (never from a cluster):

    incident        id, title, severity, service, status, scenario, night, seed
    decisions       each decision as `review.recorded` reads it: recorded inputs (observations), options
                    with evidence and reasons, the tool calls before it with their arguments and results,
                    the model call that made it (an LLM agent's messages)
    actions         what the agent did: target, patch, status, before and after state, the analysis
                    (Argo metric specs) that should watch it, its verification
    objects_before  the cluster objects as they were before: each action's before-state, and each
                    object a kubectl_* tool call read
    metrics         the `metrics` table around the incident, for its workloads: (name, time, value)
    prior_changes   the same night's earlier applied changes (a re-simulation replays them first)
    verdicts        people's current verdicts on its decisions and actions
    tainted         the first_bad_step finding's path: the bad call and every step that used it

Everything in it is trace text: the generated tests parse it as JSON and compare it, never evaluate it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from afterfix import convention as c
from afterfix._exceptions import NotFound
from afterfix.analysis import _load
from afterfix.review.recorded import _decisions, loads  # one read of every run, then its decisions

__all__ = ["freeze", "freeze_many", "FORMAT", "METRICS_MARGIN"]

FORMAT = 1
METRICS_MARGIN = timedelta(minutes=30)  # metric snapshots this long before the incident and after its end
LIST_INCIDENTS = 'afterfix query "SELECT incident_id, title, status FROM incidents"'


def _iso(t: Any) -> str | None:
    if t is None:
        return None
    if hasattr(t, "to_pydatetime"):
        t = t.to_pydatetime()
    if isinstance(t, datetime):
        return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).isoformat()
    return str(t)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime) or hasattr(value, "to_pydatetime"):
        return _iso(value)
    if isinstance(value, float) and value != value:  # NaN from a frame
        return None
    return value


def _rows(store, sql: str, params: list | None = None) -> list[dict]:
    return store.query(sql, params or []).to_dict("records")


def freeze(store, incident_id: str) -> dict:
    """The fixture of `incident_id`. Raises NotFound (naming how to list incidents) for an unknown id."""
    return freeze_many(store, [incident_id])[incident_id]


def freeze_many(store, incident_ids: list[str]) -> dict[str, dict]:
    """The fixtures of `incident_ids`, reading the store once for all of them (one query per table,
    every run's spans in one read). Raises NotFound for the first unknown id."""
    ids = list(dict.fromkeys(incident_ids))
    marks = ", ".join("?" for _ in ids)
    incidents = {r["incident_id"]: r for r in _rows(store, f"SELECT * FROM incidents WHERE incident_id IN ({marks})", ids)}
    for iid in ids:
        if iid not in incidents:
            raise NotFound(f"no incident {iid!r} in {store.where}: list them with {LIST_INCIDENTS}")
    meta = _rows(store, f"""
        SELECT incident_id, run_id, min(start_time) AS t,
               any_value(json_extract_string(attributes, '$."{c.SCENARIO}"'))
                   FILTER (WHERE json_extract_string(attributes, '$."{c.SCENARIO}"') IS NOT NULL) AS scenario,
               any_value(json_extract_string(resource_attributes, '$."afterfix.night"')) AS night,
               any_value(json_extract_string(resource_attributes, '$."afterfix.seed"')) AS seed
        FROM spans WHERE incident_id IN ({marks}) AND run_id IS NOT NULL GROUP BY incident_id, run_id
        ORDER BY t, run_id""", ids)
    runs_of: dict[str, list[dict]] = {iid: [] for iid in ids}
    for m in meta:
        runs_of[m["incident_id"]].append(m)
    loaded = {r.run_id: r for r in _load.load_runs(store, [m["run_id"] for m in meta])}
    actions = _actions(store, ids)
    tainted = _tainted(store, ids)
    verdicts = _verdicts(store, ids)
    applied = _applied(store)
    out = {}
    for iid in ids:
        inc, runs = incidents[iid], runs_of[iid]
        decisions = [d for m in runs for d in _decisions(loaded[m["run_id"]]) if d.incident_id in (iid, None)]
        decisions.sort(key=lambda d: (d.start or datetime.min, d.decision_id))
        scenario = next((m["scenario"] for m in runs if m["scenario"]), None)
        night = next((m["night"] for m in runs if m["night"]), None)
        seed = next((m["seed"] for m in runs if m["seed"] is not None), None)
        start, end = inc["start_time"], inc["end_time"]
        mine = actions.get(iid, [])
        out[iid] = _jsonable({
            "format": FORMAT,
            "incident": {"incident_id": iid, "title": inc["title"], "severity": inc["severity"],
                         "service": inc["service"], "status": inc["status"], "start": start, "end": end,
                         "scenario": scenario, "night": night, "seed": int(seed) if str(seed or "").isdigit() else 0,
                         "runs": [m["run_id"] for m in runs]},
            "decisions": [d.to_dict() for d in decisions],
            "actions": mine,
            "objects_before": _objects_before(decisions, mine),
            "metrics": _metrics(store, inc, mine, start, end),
            "prior_changes": [a for a in applied if night and a["night"] == night and a["start_time"] < start],
            "verdicts": verdicts.get(iid, []),
            "tainted": tainted.get(iid, {"findings": [], "span_ids": [], "decision_ids": []}),
        })
    return out


def _actions(store, ids: list[str]) -> dict[str, list[dict]]:
    marks = ", ".join("?" for _ in ids)
    rows = _rows(store, f"""SELECT incident_id, action_id, decision_id, verb, mutating, status, trust_level, target_uid,
                                  target_kind, target_api_version, target_namespace, target_name, patch, before, after,
                                  field_manager, analysis, start_time
                           FROM actions WHERE incident_id IN ({marks}) ORDER BY start_time, action_id""", ids)
    checks = {r["action_id"]: r for r in _rows(store, f"""
        SELECT json_extract_string(attributes, '$."{c.VERIFY_ACTION_ID}"') AS action_id,
               json_extract_string(attributes, '$."{c.VERIFY_OUTCOME}"') AS outcome,
               json_extract_string(attributes, '$."{c.VERIFY_SIGNAL}"') AS signal,
               TRY_CAST(json_extract_string(attributes, '$."{c.VERIFY_BEFORE}"') AS DOUBLE) AS before,
               TRY_CAST(json_extract_string(attributes, '$."{c.VERIFY_AFTER}"') AS DOUBLE) AS after,
               start_time AS time
        FROM spans WHERE afterfix_kind = 'verification' AND incident_id IN ({marks})""", ids)}
    out: dict[str, list[dict]] = {}
    for r in rows:
        for key in ("patch", "before", "after", "analysis"):
            r[key] = loads(r[key])
        r["mutating"] = bool(r["mutating"])
        r["trust_level"] = None if r["trust_level"] is None or r["trust_level"] != r["trust_level"] else int(r["trust_level"])
        v = checks.get(r["action_id"])
        r["verification"] = {k: v[k] for k in ("outcome", "signal", "before", "after", "time")} if v else None
        out.setdefault(r.pop("incident_id"), []).append(r)
    return out


def _objects_before(decisions, actions: list[dict]) -> list[dict]:
    out = [{"source": "before-state of " + a["action_id"], "kind": a["target_kind"], "namespace": a["target_namespace"],
            "name": a["target_name"], "resource_version": None, "object": a["before"]} for a in actions]
    seen = set()
    for d in decisions:
        for t in d.tool_calls:
            if not (t.name or "").startswith("kubectl") or t.call_id in seen:
                continue
            seen.add(t.call_id)
            args = t.arguments if isinstance(t.arguments, dict) else {}
            out.append({"source": f"tool call {t.call_id} ({t.name})", "kind": args.get("resource"),
                        "namespace": args.get("namespace"), "name": args.get("name"), "object": t.result})
    return out


def _metrics(store, inc: dict, actions: list[dict], start, end) -> list[dict]:
    workloads = set()
    if isinstance(inc["service"], str) and "/" in inc["service"]:
        workloads.add(tuple(inc["service"].split("/", 1)))
    for a in actions:
        if a["target_kind"] == "Deployment":
            workloads.add((a["target_namespace"], a["target_name"]))
        for spec in _specs(a["analysis"]):
            labels = ((spec.get("provider") or {}).get("afterfix") or {}).get("labels") or {}
            name = labels.get("k8s.deployment.name")
            if isinstance(name, str) and "{{" not in name:
                workloads.add((a["target_namespace"], name))
    if not workloads or start is None:
        return []
    pairs = " OR ".join("(namespace = ? AND workload = ?)" for _ in workloads)
    params = [x for w in sorted(workloads) for x in w]
    since, until = start - METRICS_MARGIN, (end or start) + METRICS_MARGIN
    return _rows(store, f"""SELECT name, namespace, workload, time, value FROM metrics
                            WHERE ({pairs}) AND time >= ? AND time <= ? ORDER BY name, namespace, workload, time""",
                 params + [since, until])


def _specs(analysis: Any) -> list[dict]:
    if isinstance(analysis, dict):
        return [analysis]
    return [s for s in analysis if isinstance(s, dict)] if isinstance(analysis, list) else []


def _applied(store) -> list[dict]:
    """Every applied change in the store with its night, oldest first (a re-simulation replays the
    night's earlier ones before the incident's own)."""
    rows = _rows(store, """
        SELECT a.action_id, a.incident_id, a.verb, a.target_kind, a.target_api_version, a.target_namespace, a.target_name,
               a.patch, a.start_time, json_extract_string(s.resource_attributes, '$."afterfix.night"') AS night
        FROM actions a JOIN spans s USING (trace_id, span_id)
        WHERE a.mutating AND a.status = 'applied' ORDER BY a.start_time, a.action_id""")
    for r in rows:
        r["patch"] = loads(r["patch"])
    return rows


def _verdicts(store, ids: list[str]) -> dict[str, list[dict]]:
    from afterfix.review.verdicts import verdicts

    wanted, out = set(ids), {}
    try:
        found = verdicts(store)
    except Exception as e:  # a store from before the verdicts ledger: nobody judged anything
        if "verdicts" in str(e).lower():
            return {}
        raise
    for v in found:
        if v.incident_id in wanted:
            out.setdefault(v.incident_id, []).append(v.to_dict())
    return out


def _tainted(store, ids: list[str]) -> dict[str, dict]:
    from afterfix.analysis.findings import find

    wanted, out = set(ids), {}
    for f in find(store, kinds=["first_bad_step"]):
        if f.incident_id not in wanted:
            continue
        t = out.setdefault(f.incident_id, {"findings": [], "span_ids": [], "decision_ids": []})
        t["findings"].append(f.title)
        t["span_ids"] += [p["span_id"] for p in (f.details or {}).get("path", [])[1:]]
        t["decision_ids"] += list((f.details or {}).get("decisions") or [])
    return out
