"""Server-side printing for the simulated kinds: the `meta.k8s.io/v1` Table that `kubectl get`
asks for (`Accept: application/json;as=Table;...`), with the columns the real API server prints.
Ages are counted on the simulated clock, so they read like the night they describe."""

from __future__ import annotations

from datetime import datetime, timezone

__all__ = ["table", "human_duration", "wants_table"]


def wants_table(accept: str | None) -> bool:
    return bool(accept) and any("as=Table" in part and "g=meta.k8s.io" in part and "v=v1;" in part + ";"
                                for part in accept.split(","))


def human_duration(seconds: float) -> str:
    """Kubernetes' HumanDuration: 45s, 3m20s, 25m, 4h10m, 30h, 3d4h, 12d, 2y."""
    s = int(max(0, seconds))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if h < 24 * 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    return f"{d // 365}y"


def _age(obj: dict, now: float, field: str | None = None) -> str:
    stamp = obj.get(field) if field else obj["metadata"].get("creationTimestamp")
    if not stamp:
        return "<unknown>"
    then = datetime.fromisoformat(stamp.replace("Z", "+00:00")).replace(tzinfo=timezone.utc).timestamp()
    return human_duration(now - then)


def _pod_status(pod: dict) -> str:
    for cs in pod.get("status", {}).get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            return waiting.get("reason", "Waiting")
    return pod.get("status", {}).get("phase", "Unknown")


def _hpa_targets(hpa: dict) -> str:
    current = {m["resource"]["name"]: m["resource"]["current"].get("averageUtilization")
               for m in hpa.get("status", {}).get("currentMetrics") or [] if m.get("type") == "Resource"}
    parts = []
    default = [{"type": "Resource", "resource": {"name": "cpu", "target": {"averageUtilization": 80}}}]
    for m in hpa["spec"].get("metrics") or default:
        if m.get("type") != "Resource":
            continue
        name = m["resource"]["name"]
        now = current.get(name)
        parts.append(f"{name}: {'<unknown>' if now is None else f'{now}%'}/{m['resource']['target'].get('averageUtilization')}%")
    return ", ".join(parts) or "<none>"


def _containers(workload: dict, field: str) -> str:
    return ",".join(c[field] for c in workload["spec"]["template"]["spec"]["containers"])


# kind -> [(column name, type, priority, cell(obj, now))]; priority 1 columns show with -o wide.
COLUMNS = {
    "Namespace": [("Status", "string", 0, lambda o, n: o.get("status", {}).get("phase", "")),
                  ("Age", "string", 0, _age)],
    "Pod": [("Ready", "string", 0, lambda o, n: "%d/%d" % (
                sum(1 for c in o.get("status", {}).get("containerStatuses") or [] if c.get("ready")),
                len(o["spec"].get("containers") or []))),
            ("Status", "string", 0, lambda o, n: _pod_status(o)),
            ("Restarts", "integer", 0, lambda o, n: sum(c.get("restartCount", 0)
                                                        for c in o.get("status", {}).get("containerStatuses") or [])),
            ("Age", "string", 0, _age),
            ("IP", "string", 1, lambda o, n: o.get("status", {}).get("podIP", "<none>")),
            ("Node", "string", 1, lambda o, n: o["spec"].get("nodeName", "<none>"))],
    "ConfigMap": [("Data", "integer", 0, lambda o, n: len(o.get("data") or {}) + len(o.get("binaryData") or {})),
                  ("Age", "string", 0, _age)],
    "Secret": [("Type", "string", 0, lambda o, n: o.get("type", "")),
               ("Data", "integer", 0, lambda o, n: len(o.get("data") or {})),
               ("Age", "string", 0, _age)],
    "Event": [("Last Seen", "string", 0, lambda o, n: _age(o, n, "lastTimestamp")),
              ("Type", "string", 0, lambda o, n: o.get("type", "")),
              ("Reason", "string", 0, lambda o, n: o.get("reason", "")),
              ("Object", "string", 0, lambda o, n: f"{o['involvedObject'].get('kind', '').lower()}/"
                                                   f"{o['involvedObject'].get('name', '')}"),
              ("Message", "string", 0, lambda o, n: o.get("message", ""))],
    "Deployment": [("Ready", "string", 0, lambda o, n: f"{o.get('status', {}).get('readyReplicas', 0)}/{o['spec']['replicas']}"),
                   ("Up-to-date", "integer", 0, lambda o, n: o.get("status", {}).get("updatedReplicas", 0)),
                   ("Available", "integer", 0, lambda o, n: o.get("status", {}).get("availableReplicas", 0)),
                   ("Age", "string", 0, _age),
                   ("Containers", "string", 1, lambda o, n: _containers(o, "name")),
                   ("Images", "string", 1, lambda o, n: _containers(o, "image"))],
    "ReplicaSet": [("Desired", "integer", 0, lambda o, n: o["spec"].get("replicas", 0)),
                   ("Current", "integer", 0, lambda o, n: o.get("status", {}).get("replicas", 0)),
                   ("Ready", "integer", 0, lambda o, n: o.get("status", {}).get("readyReplicas", 0)),
                   ("Age", "string", 0, _age),
                   ("Images", "string", 1, lambda o, n: _containers(o, "image"))],
    "HorizontalPodAutoscaler": [
        ("Reference", "string", 0, lambda o, n: f"{o['spec']['scaleTargetRef']['kind']}/{o['spec']['scaleTargetRef']['name']}"),
        ("Targets", "string", 0, lambda o, n: _hpa_targets(o)),
        ("MinPods", "integer", 0, lambda o, n: o["spec"].get("minReplicas", 1)),
        ("MaxPods", "integer", 0, lambda o, n: o["spec"]["maxReplicas"]),
        ("Replicas", "integer", 0, lambda o, n: o.get("status", {}).get("currentReplicas", 0)),
        ("Age", "string", 0, _age)],
}


def table(kind: str, objects: list[dict], now: float, resource_version: str) -> dict:
    """A meta.k8s.io/v1 Table of `objects` (rows carry the whole object, as includeObject=Object)."""
    columns = ([] if kind == "Event" else [("Name", "string", 0, lambda o, n: o["metadata"]["name"])]) + COLUMNS[kind]
    return {
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [{"name": name, "type": type_, "format": "name" if name == "Name" else "",
                               "description": "", "priority": priority} for name, type_, priority, _ in columns],
        "rows": [{"cells": [cell(o, now) for _, _, _, cell in columns], "object": o} for o in objects],
    }
