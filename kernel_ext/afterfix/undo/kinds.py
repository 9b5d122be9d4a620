"""Kind rules: what undoing a change means for each kind of object, beyond its fields.

- Under an HorizontalPodAutoscaler, a Deployment's `spec.replicas` belongs to the HPA: reverting
  it is undone by the HPA within seconds; revert the HPA's min/max instead.
- A ConfigMap or Secret change takes effect only once the pods that read it restart.
- A paused Deployment does not roll out a restored template until it is resumed.
- A Deployment revision kept as a ReplicaSet may be gone from history (revisionHistoryLimit);
  a revision revert (`kubectl rollout undo`) restores a whole template, bundled changes included.
- A created object is undone by deleting it, and only when nothing else refers to it.
(A restart has no inverse: plan.py says so before any of these run.)

Each rule reads the live cluster through the same `Cluster` and returns `Check`s. A rule that
cannot read what it needs (403, no answer) raises: a check that could not run has not passed.
"""

from __future__ import annotations

import json
from typing import Any

from afterfix.analysis.diffs import flatten
from afterfix.undo import paths
from afterfix.undo.kube import KindInfo, NotFound, Rejected

__all__ = ["checks", "references", "hpas_for", "consumers", "revisions"]

REVISION = "deployment.kubernetes.io/revision"
_BOOKKEEPING = ("pod-template-hash",)


def checks(cluster, store, act: dict, info: KindInfo, live: dict, fplans: list) -> list:
    from afterfix.undo.plan import Check

    out: list[Check] = []
    ns = live["metadata"].get("namespace")
    restoring = [f for f in fplans if f.restore]
    if info.kind in ("Deployment", "StatefulSet", "ReplicaSet") and any(f.path in ("spec.replicas",) for f in restoring):
        hpas = hpas_for(cluster, ns, info.kind, live["metadata"]["name"])
        if hpas:
            h = hpas[0]
            hint = _hpa_actions(store, ns, h["metadata"]["name"])
            out.append(Check("kind rule: HPA", "block",
                             f"HorizontalPodAutoscaler {ns}/{h['metadata']['name']} controls spec.replicas "
                             f"(min {h['spec'].get('minReplicas', 1)}, max {h['spec'].get('maxReplicas')}): a restored "
                             "replica count would be overwritten by it within seconds. Revert the HPA's "
                             "minReplicas/maxReplicas instead" + (f" ({hint})" if hint else ""),
                             {"hpa": h["metadata"]["name"], "minReplicas": h["spec"].get("minReplicas"),
                              "maxReplicas": h["spec"].get("maxReplicas")}))
        else:
            out.append(Check("kind rule: HPA", "pass", "no HorizontalPodAutoscaler controls this workload's replicas"))
    if info.kind == "HorizontalPodAutoscaler":
        ref = live["spec"].get("scaleTargetRef") or {}
        out.append(Check("kind rule: HPA", "info",
                         f"restoring the HPA's bounds lets it rescale {ref.get('kind', 'its target')} "
                         f"{ns}/{ref.get('name', '?')} within them on its next sync (about 15 s); replicas are not "
                         "written directly"))
    if info.kind in ("ConfigMap", "Secret"):
        users = consumers(cluster, ns, info.kind, live["metadata"]["name"])
        if users:
            out.append(Check("kind rule: consumers restart", "warn",
                             f"a {info.kind} change takes effect only once the pods that read it restart: "
                             f"{', '.join(users)} read it. After the rollback, restart them "
                             f"(kubectl rollout restart {' '.join(users)} -n {ns})", {"consumers": users}))
        else:
            out.append(Check("kind rule: consumers restart", "info",
                             f"no Deployment in {ns} reads this {info.kind}; nothing needs a restart"))
    if info.kind == "Deployment":
        template_change = any(f.path.startswith("spec.template.") for f in restoring)
        if live["spec"].get("paused") and template_change:
            out.append(Check("kind rule: paused", "warn",
                             "the Deployment is paused: the restored template is written but does not roll out until "
                             f"`kubectl rollout resume deployment/{live['metadata']['name']} -n {ns}`"))
        if template_change or (act.get("verb") or "").lower() in ("rollback", "undo", "rollout_undo"):
            out.append(_bundled(cluster, act, live, fplans))
    return out


def _hpa_actions(store, ns: str, name: str) -> str:
    try:
        rows = store.query("""SELECT action_id FROM actions WHERE mutating AND status = 'applied'
                              AND target_kind = 'HorizontalPodAutoscaler' AND target_namespace = ? AND target_name = ?
                              ORDER BY start_time DESC LIMIT 3""", [ns, name])
    except Exception:
        return ""
    ids = list(rows["action_id"]) if not rows.empty else []
    return ("the agent changed that HPA in " + ", ".join(f"`afterfix rollback {i} --plan`" for i in ids)) if ids else ""


def hpas_for(cluster, ns: str, kind: str, name: str) -> list[dict]:
    try:
        items = cluster.list(None, "HorizontalPodAutoscaler", ns)
    except (NotFound, Rejected):  # a kind this cluster does not serve; a 403 or no answer propagates
        return []
    return [h for h in items if (h.get("spec", {}).get("scaleTargetRef") or {}).get("name") == name
            and (h["spec"]["scaleTargetRef"].get("kind") in (None, kind))]


def _refs_in_pod_spec(spec: dict, kind: str, name: str) -> bool:
    key = "configMap" if kind == "ConfigMap" else "secret"
    ref_key = "configMapRef" if kind == "ConfigMap" else "secretRef"
    key_ref = "configMapKeyRef" if kind == "ConfigMap" else "secretKeyRef"
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if any((src.get(ref_key) or {}).get("name") == name for src in c.get("envFrom") or []):
            return True
        if any(((e.get("valueFrom") or {}).get(key_ref) or {}).get("name") == name for e in c.get("env") or []):
            return True
    for v in spec.get("volumes") or []:
        vol = v.get(key) or {}
        if vol.get("name") == name or vol.get("secretName") == name:
            return True
        for src in (v.get("projected") or {}).get("sources") or []:
            if (src.get(key) or {}).get("name") == name:
                return True
    return False


def consumers(cluster, ns: str, kind: str, name: str) -> list[str]:
    """The workloads in `ns` whose pod template reads ConfigMap/Secret `name`, as `deployment/x`."""
    out = []
    for workload in ("Deployment", "StatefulSet", "DaemonSet"):
        try:
            items = cluster.list(None, workload, ns)
        except (NotFound, Rejected):  # a kind this cluster does not serve; a 403 or no answer propagates
            continue
        for obj in items:
            if _refs_in_pod_spec(((obj.get("spec") or {}).get("template") or {}).get("spec") or {}, kind, name):
                out.append(f"{workload.lower()}/{obj['metadata']['name']}")
    return out


def references(cluster, info: KindInfo, live: dict) -> list[str]:
    """What refers to `live` (so deleting it would break it): owner references to its uid, and
    for ConfigMaps and Secrets the workloads that read them."""
    uid = live["metadata"].get("uid")
    ns = live["metadata"].get("namespace")
    out = []
    for kind in ("Deployment", "ReplicaSet", "Pod", "Job", "ConfigMap", "Secret"):
        try:
            items = cluster.list(None, kind, ns)
        except (NotFound, Rejected):  # a kind this cluster does not serve; a 403 or no answer propagates
            continue
        for obj in items:
            owners = obj["metadata"].get("ownerReferences") or []
            if any(o.get("uid") == uid for o in owners) and not (info.kind == "Job" and kind == "Pod"):
                out.append(f"{kind.lower()}/{obj['metadata']['name']}")
    if info.kind in ("ConfigMap", "Secret"):
        out += consumers(cluster, ns, info.kind, live["metadata"]["name"])
    return out


def revisions(cluster, deploy: dict) -> list[tuple[int, dict]]:
    """The Deployment's ReplicaSets as (revision, replicaset), oldest first."""
    uid = deploy["metadata"].get("uid")
    try:
        items = cluster.list(None, "ReplicaSet", deploy["metadata"].get("namespace"))
    except (NotFound, Rejected):  # a kind this cluster does not serve; a 403 or no answer propagates
        return []
    out = []
    for rs in items:
        if any(o.get("uid") == uid for o in rs["metadata"].get("ownerReferences") or []):
            try:
                out.append((int((rs["metadata"].get("annotations") or {}).get(REVISION, "0")), rs))
            except ValueError:
                continue
    return sorted(out, key=lambda pair: pair[0])


def _template(obj: dict) -> dict:
    template = json.loads(json.dumps(obj.get("spec", {}).get("template") or {}))
    for key in _BOOKKEEPING:
        ((template.get("metadata") or {}).get("labels") or {}).pop(key, None)
    return template


def _bundled(cluster, act: dict, live: dict, fplans: list):
    """What a revision revert would also undo, and what this action itself carried beyond one field."""
    from afterfix.undo.plan import Check

    restoring = {f.path for f in fplans if f.restore}
    own = [f for f in fplans if f.state != "server-managed"]
    current_rev = int((live["metadata"].get("annotations") or {}).get(REVISION, "0") or 0)
    revs = revisions(cluster, live)
    older = [(r, rs) for r, rs in revs if r < current_rev]
    limit = live["spec"].get("revisionHistoryLimit", 10)
    details: dict[str, Any] = {"current_revision": current_rev, "history": [r for r, _ in revs],
                               "revisionHistoryLimit": limit, "this_action": [f.label for f in own]}
    notes = []
    if len(own) > 1:
        notes.append(f"this action changed {len(own)} fields at once ({', '.join(f.label for f in own)}); "
                     "restore only some with --fields, e.g. --fields "
                     + paths.tokens(next((f for f in own if paths.tokens(f.path)[-1:] != ["image"]), own[0]).path)[-1])
    if older:
        prev_rev, prev = older[-1]
        now = flatten(_template(live), "spec.template")
        then = flatten(_template(prev), "spec.template")
        extra = sorted(p for p in set(now) | set(then) if now.get(p, paths.MISSING) != then.get(p, paths.MISSING)
                       and p not in restoring)
        details["revision_revert_also_changes"] = [paths.label(p) for p in extra]
        if extra:
            notes.append(f"a revision revert (kubectl rollout undo to revision {prev_rev}) would restore the whole "
                         f"template and also change {', '.join(paths.label(p) for p in extra[:6])}"
                         + (f" and {len(extra) - 6} more" if len(extra) > 6 else "")
                         + "; this plan patches only the fields listed above")
    else:
        notes.append(f"no earlier revision is left in history (revisionHistoryLimit {limit}): a revision revert is "
                     "not possible; this plan restores the recorded fields directly")
    status = "warn" if (len(own) > 1 or details.get("revision_revert_also_changes")) else "info"
    return Check("bundled changes", status, "; ".join(notes), details)
