"""The action ledger: every production-changing action, with its target, before and after,
resourceVersions, field manager, decision, and everything that touched the same object later:
the agent's own later actions, afterfix rollbacks, and (read live, when a cluster is given) other
writers such as a person's `kubectl edit`, from the object's managedFields.

    entries = action_ledger(store, incident="inc-42", cluster=None)   # list of dicts, oldest first
"""

from __future__ import annotations

import json
from typing import Any

from afterfix.analysis.diffs import parse_state
from afterfix.undo.kube import ClusterError, UnknownKind

__all__ = ["action_ledger", "LEDGER_COLUMNS"]

LEDGER_COLUMNS = ["action_id", "time", "agent", "verb", "status", "decision_id", "incident_id", "target_uid",
                  "target_kind", "target_namespace", "target_name", "before", "after", "resource_version_before",
                  "resource_version_after", "field_manager", "later"]
# Managers that are Kubernetes' own controllers, not people or agents.
CONTROLLERS = {"kube-controller-manager", "afterfix-sim", "deployment-controller", "replicaset-controller",
               "horizontal-pod-autoscaler", "kubelet", "kube-scheduler"}


def _when(value: Any) -> str | None:
    return None if value is None else (value.isoformat() if hasattr(value, "isoformat") else str(value))


def action_ledger(store, *, incident: str | None = None, cluster=None) -> list[dict]:
    where, params = ["mutating"], []
    if incident:
        where.append("incident_id = ?")
        params.append(incident)
    rows = store.arrow(f"SELECT * FROM actions WHERE {' AND '.join(where)} ORDER BY start_time, span_id", params)
    everything = store.arrow("SELECT action_id, start_time, agent_name, verb, status, field_manager, target_uid, "
                             "target_kind, target_namespace, target_name FROM actions WHERE mutating "
                             "ORDER BY start_time").to_pylist()
    try:
        rollbacks = store.arrow("SELECT action_id, time, who, outcome, automatic, rollback_id FROM rollbacks "
                                "WHERE outcome = 'rolled_back' ORDER BY time").to_pylist()
    except Exception:  # a store from before the ledgers
        rollbacks = []
    live_cache: dict[tuple, dict | None] = {}
    out = []
    for r in rows.to_pylist():
        key = (r["target_kind"], r["target_namespace"], r["target_name"])
        later = []
        for o in everything:
            if o["start_time"] <= r["start_time"] or o["action_id"] == r["action_id"]:
                continue
            same = (o["target_uid"] and o["target_uid"] == r["target_uid"]) or \
                (o["target_kind"], o["target_namespace"], o["target_name"]) == key
            if same:
                later.append({"kind": "rollback" if o["field_manager"] == "afterfix" else "agent",
                              "id": o["action_id"], "time": _when(o["start_time"]), "who": o["agent_name"],
                              "verb": o["verb"], "status": o["status"]})
        for rb in rollbacks:
            if rb["action_id"] == r["action_id"]:
                later.append({"kind": "rollback", "id": rb["rollback_id"], "time": _when(rb["time"]), "who": rb["who"],
                              "verb": "rollback (automatic)" if rb["automatic"] else "rollback", "status": rb["outcome"]})
        if cluster is not None:
            later += _live_writers(cluster, r, live_cache)
        later.sort(key=lambda x: x["time"] or "")
        out.append({
            "action_id": r["action_id"], "time": _when(r["start_time"]), "agent": r["agent_name"], "verb": r["verb"],
            "status": r["status"], "decision_id": r["decision_id"], "incident_id": r["incident_id"],
            "target_uid": r["target_uid"], "target_kind": r["target_kind"], "target_namespace": r["target_namespace"],
            "target_name": r["target_name"], "before": parse_state(r["before"])[0], "after": parse_state(r["after"])[0],
            "resource_version_before": r["resource_version_before"], "resource_version_after": r["resource_version_after"],
            "field_manager": r["field_manager"], "later": later})
    return out


def _live_writers(cluster, r: dict, cache: dict) -> list[dict]:
    key = (r["target_api_version"], r["target_kind"], r["target_namespace"], r["target_name"])
    if key not in cache:
        try:
            cache[key] = cluster.get(*key)
        except (ClusterError, UnknownKind):
            cache[key] = None
    obj = cache[key]
    if obj is None or (r["target_uid"] and obj["metadata"].get("uid") != r["target_uid"]):
        return []
    since = _when(r["start_time"]) or ""
    out = []
    for entry in obj["metadata"].get("managedFields") or []:
        manager = str(entry.get("manager") or "unknown")
        when = str(entry.get("time") or "")
        if manager in CONTROLLERS or manager in (r["field_manager"], "afterfix") or entry.get("subresource") == "status":
            continue
        if when.replace("Z", "") > since:
            out.append({"kind": "person", "id": None, "time": when, "who": manager,
                        "verb": (entry.get("operation") or "Update").lower(), "status": "live",
                        "fields": json.dumps(entry.get("fieldsV1") or {})[:300]})
    return out
