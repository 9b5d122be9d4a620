"""The controllers of the simulated cluster: Deployment → ReplicaSet → Pods, the
HorizontalPodAutoscaler, and Job → Pod (the pod runs for the Job's simulated duration, then succeeds). They run synchronously after every API write (`reconcile`) and on every
simulated time step (`tick`), writing through the same path as API clients, so every change they
make bumps resourceVersion and leaves a managedFields entry and an Event, as in Kubernetes."""

from __future__ import annotations

import hashlib
import json
import math
from typing import TYPE_CHECKING

from afterfix.nightshift.clock import rfc3339
from afterfix.nightshift.patches import clone

if TYPE_CHECKING:
    from afterfix.nightshift.cluster import Cluster

__all__ = ["reconcile", "tick", "template_hash", "owned_by", "REVISION", "HASH_LABEL", "JOB_DURATION",
           "JOB_DURATION_S"]

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
HASH_LABEL = "pod-template-hash"
# Controllers write as one field manager, as kube-controller-manager does; events name the controller.
CONTROLLER_MANAGER = "kube-controller-manager"
DEPLOYMENT_CONTROLLER = "deployment-controller"
REPLICASET_CONTROLLER = "replicaset-controller"
HPA_CONTROLLER = "horizontal-pod-autoscaler"
HPA_PERIOD = 15.0            # seconds between HPA evaluations (kube-controller-manager default)
HPA_TOLERANCE = 0.1          # no rescale while usage/target is within 10 %
HPA_DOWNSCALE_WINDOW = 300.0  # scale-down stabilization window
JOB_CONTROLLER = "job-controller"
# How long a Job's pod runs before it succeeds: a simulator knob (an annotation on the Job), as
# the simulated containers run no commands.
JOB_DURATION = "sim.afterfix.dev/duration-seconds"
JOB_DURATION_S = 120.0


def template_hash(template: dict) -> str:
    """A stable 10-character name suffix for a pod template, in Kubernetes' safe alphabet."""
    clean = clone(template)
    (clean.get("metadata") or {}).get("labels", {}).pop(HASH_LABEL, None)
    digest = int(hashlib.sha256(json.dumps(clean, sort_keys=True).encode()).hexdigest(), 16)
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    out = ""
    for _ in range(10):
        digest, r = divmod(digest, len(alphabet))
        out += alphabet[r]
    return out


def owned_by(obj: dict, owner: dict) -> bool:
    return controller_uid(obj) == owner["metadata"]["uid"]


def controller_uid(obj: dict) -> str | None:
    """The uid of the object's controlling owner, if any."""
    for ref in obj["metadata"].get("ownerReferences") or ():
        if ref.get("controller"):
            return ref.get("uid")
    return None


def _children(cluster: Cluster, kind: str) -> dict[str, list[dict]]:
    """Objects of `kind` grouped by the uid of their controlling owner."""
    out: dict[str, list[dict]] = {}
    for obj in cluster.objects(kind):
        uid = controller_uid(obj)
        if uid:
            out.setdefault(uid, []).append(obj)
    return out


def _owner_ref(owner: dict) -> dict:
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def _strip_hash(template: dict) -> dict:
    clean = clone(template)
    labels = (clean.get("metadata") or {}).get("labels")
    if labels is not None:
        labels.pop(HASH_LABEL, None)
    return clean


def _revision(obj: dict) -> int:
    try:
        return int((obj["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def reconcile(cluster: Cluster) -> None:
    """Bring ReplicaSets and Pods in line with Deployments, and Pods with Jobs; then refresh status."""
    for job in cluster.objects("Job"):
        _start_job(cluster, job)
    for deploy in cluster.objects("Deployment"):
        _sync_deployment(cluster, deploy)
    pods = _children(cluster, "Pod")
    for rs in cluster.objects("ReplicaSet"):
        if _sync_replicaset(cluster, rs, pods.get(rs["metadata"]["uid"], [])):
            pods = _children(cluster, "Pod")
    for pod in cluster.objects("Pod"):
        if pod.get("status", {}).get("phase") == "Pending":  # the one simulated node starts every pod
            running = clone(pod)
            running["status"] = pod_running_status(cluster, running)
            cluster.controller_write(running, "kubelet", subresource="status")
    for rs in cluster.objects("ReplicaSet"):
        _replicaset_status(cluster, rs, pods.get(rs["metadata"]["uid"], []))
    sets = _children(cluster, "ReplicaSet")
    for deploy in cluster.objects("Deployment"):
        _deployment_status(cluster, deploy, sets.get(deploy["metadata"]["uid"], []))
    if cluster.objects("Job"):
        pods = _children(cluster, "Pod")
        for job in cluster.objects("Job"):
            _job_status(cluster, job, pods.get(job["metadata"]["uid"], []))


def tick(cluster: Cluster, dt: float) -> None:
    """One simulated time step: containers live (leaks, OOM restarts), the HPA evaluates."""
    cluster.workloads.step(dt)
    elapsed = cluster.sim.get("hpa_elapsed", 0.0) + dt
    if elapsed >= HPA_PERIOD:
        # One evaluation per step even when a step is longer than the period: the HPA acts on
        # current metrics, so evaluating the same instant twice would only repeat itself.
        elapsed %= HPA_PERIOD
        for hpa in cluster.objects("HorizontalPodAutoscaler"):
            _sync_hpa(cluster, hpa)
    cluster.sim["hpa_elapsed"] = elapsed
    _run_job_pods(cluster)
    reconcile(cluster)
    cluster.workloads.record()


# ---- Deployment ----------------------------------------------------------------------------------
def _sync_deployment(cluster: Cluster, deploy: dict) -> None:
    ns, name = deploy["metadata"]["namespace"], deploy["metadata"]["name"]
    spec = deploy["spec"]
    template = spec["template"]
    owned = [rs for rs in cluster.objects("ReplicaSet", ns) if owned_by(rs, deploy)]
    current = next((rs for rs in owned if _strip_hash(rs["spec"]["template"]) == _strip_hash(template)), None)
    top = max((_revision(rs) for rs in owned), default=0)
    if spec.get("paused"):
        # A paused Deployment does not roll out, but scaling still reaches the ReplicaSet that
        # serves: the one for its template, else the newest revision.
        serving = current or max(owned, key=_revision, default=None)
        if serving is not None and serving["spec"]["replicas"] != spec["replicas"]:
            _scale_rs(cluster, deploy, serving, spec["replicas"])
        return
    if current is None:
        h = template_hash(template)
        rs_template = clone(template)
        rs_template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = h
        selector = clone(spec["selector"])
        selector.setdefault("matchLabels", {})[HASH_LABEL] = h
        labels = dict(rs_template["metadata"]["labels"])
        current = cluster.controller_write({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": f"{name}-{h}", "namespace": ns, "labels": labels,
                         "annotations": {REVISION: str(top + 1),
                                         "deployment.kubernetes.io/desired-replicas": str(spec["replicas"]),
                                         "deployment.kubernetes.io/max-replicas": str(spec["replicas"] + 1)},
                         "ownerReferences": [_owner_ref(deploy)]},
            "spec": {"replicas": 0, "selector": selector, "template": rs_template},
        }, CONTROLLER_MANAGER)
        current = cluster._find(cluster_kind("ReplicaSet"), ns, current["metadata"]["name"])
    elif _revision(current) != top:
        # An old template came back (a rollback): its ReplicaSet gets the newest revision number.
        updated = clone(current)
        ann = updated["metadata"].setdefault("annotations", {})
        history = [h for h in ann.get(REVISION_HISTORY, "").split(",") if h] + [str(_revision(current))]
        ann[REVISION_HISTORY] = ",".join(history)
        ann[REVISION] = str(top + 1)
        cluster.controller_write(updated, CONTROLLER_MANAGER)
        current = cluster._find(cluster_kind("ReplicaSet"), ns, current["metadata"]["name"])
    revision = current["metadata"]["annotations"][REVISION]
    if (deploy["metadata"].get("annotations") or {}).get(REVISION) != revision:
        updated = clone(deploy)
        updated["metadata"].setdefault("annotations", {})[REVISION] = revision
        cluster.controller_write(updated, CONTROLLER_MANAGER)
        deploy = cluster._find(cluster_kind("Deployment"), ns, name)
    # Rollouts complete within one step: the simulator models outcomes, not surge arithmetic.
    if current["spec"]["replicas"] != spec["replicas"]:
        _scale_rs(cluster, deploy, current, spec["replicas"])
    for rs in owned:
        if rs["metadata"]["uid"] != current["metadata"]["uid"] and rs["spec"]["replicas"] != 0:
            _scale_rs(cluster, deploy, rs, 0)
    owned = [rs for rs in cluster.objects("ReplicaSet", ns) if owned_by(rs, deploy)]
    old = sorted((rs for rs in owned if rs["metadata"]["uid"] != current["metadata"]["uid"]
                  and rs["spec"]["replicas"] == 0), key=_revision)
    for rs in old[: max(0, len(old) - spec.get("revisionHistoryLimit", 10))]:
        cluster.controller_delete(rs)


def cluster_kind(kind: str):
    from afterfix.nightshift.cluster import KINDS

    return KINDS[kind]


def _scale_rs(cluster: Cluster, deploy: dict, rs: dict, replicas: int) -> None:
    before = rs["spec"]["replicas"]
    updated = clone(rs)
    updated["spec"]["replicas"] = replicas
    ann = updated["metadata"].setdefault("annotations", {})
    ann["deployment.kubernetes.io/desired-replicas"] = str(deploy["spec"]["replicas"])
    ann["deployment.kubernetes.io/max-replicas"] = str(deploy["spec"]["replicas"] + 1)
    cluster.controller_write(updated, CONTROLLER_MANAGER)
    verb = "up" if replicas > before else "down"
    cluster.record_event(deploy, "Normal", "ScalingReplicaSet",
                         f"Scaled {verb} replica set {rs['metadata']['name']} from {before} to {replicas}",
                         DEPLOYMENT_CONTROLLER)


def _deployment_status(cluster: Cluster, deploy: dict, owned: list[dict]) -> None:
    newest = next((rs for rs in owned if _strip_hash(rs["spec"]["template"]) == _strip_hash(deploy["spec"]["template"])),
                  None)
    replicas = sum(rs.get("status", {}).get("replicas", 0) for rs in owned)
    ready = sum(rs.get("status", {}).get("readyReplicas", 0) for rs in owned)
    updated = newest.get("status", {}).get("replicas", 0) if newest else 0
    desired = deploy["spec"]["replicas"]
    old = deploy.get("status") or {}
    conditions = {c["type"]: c for c in old.get("conditions") or []}
    now = rfc3339(cluster.clock.now())

    def condition(type_, status, reason, message):
        prev = conditions.get(type_)
        if prev and (prev["status"], prev["reason"], prev["message"]) == (status, reason, message):
            return prev
        return {"type": type_, "status": status, "reason": reason, "message": message,
                "lastUpdateTime": now, "lastTransitionTime": now if not prev or prev["status"] != status
                else prev.get("lastTransitionTime", now)}

    status = {"observedGeneration": deploy["metadata"].get("generation", 1), "replicas": replicas,
              "updatedReplicas": updated, "readyReplicas": ready, "availableReplicas": ready}
    if replicas - ready:
        status["unavailableReplicas"] = replicas - ready
    available = ready >= desired - max(0, int(desired * 0.25))
    status["conditions"] = [
        condition("Available", "True" if available else "False",
                  "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                  "Deployment has minimum availability." if available
                  else "Deployment does not have minimum availability."),
        condition("Progressing", "Unknown" if deploy["spec"].get("paused") else "True",
                  "DeploymentPaused" if deploy["spec"].get("paused") else "NewReplicaSetAvailable",
                  "Deployment is paused" if deploy["spec"].get("paused") else
                  f'ReplicaSet "{newest["metadata"]["name"] if newest else ""}" has successfully progressed.'),
    ]
    for key in ("readyReplicas", "availableReplicas", "updatedReplicas", "replicas"):
        if not status[key]:
            del status[key]  # Kubernetes omits zero counts
    if status != old:
        new = clone(deploy)
        new["status"] = status
        cluster.controller_write(new, CONTROLLER_MANAGER, subresource="status")


# ---- ReplicaSet → Pods ----------------------------------------------------------------------------
def _sync_replicaset(cluster: Cluster, rs: dict, pods: list[dict]) -> bool:
    """Create or delete pods until `rs` has as many as it wants; True if anything changed."""
    ns = rs["metadata"]["namespace"]
    want = rs["spec"]["replicas"]
    for _ in range(want - len(pods)):
        template = rs["spec"]["template"]
        meta = clone(template.get("metadata") or {})
        name = f"{rs['metadata']['name']}-{cluster.random_suffix()}"
        annotations = meta.get("annotations") or {}
        annotations.update(cluster.workloads.pod_start_annotations(ns, template))
        pod = cluster.controller_write({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": meta.get("labels") or {},
                         "annotations": annotations, "ownerReferences": [_owner_ref(rs)]},
            "spec": dict(clone(template["spec"]), nodeName="sim-node-1"),
        }, CONTROLLER_MANAGER)
        running = clone(cluster._find(cluster_kind("Pod"), ns, pod["metadata"]["name"]))
        running["status"] = pod_running_status(cluster, running)
        cluster.controller_write(running, "kubelet", subresource="status")
        cluster.record_event(rs, "Normal", "SuccessfulCreate", f"Created pod: {name}", REPLICASET_CONTROLLER)
    if len(pods) > want:
        # Newest pods go first, as the ReplicaSet controller prefers to keep older, settled pods.
        victims = sorted(pods, key=lambda p: int(p["metadata"]["resourceVersion"]))[want:]
        for pod in victims:
            cluster.controller_delete(pod)
            for c in pod["spec"]["containers"]:
                cluster.record_event(pod, "Normal", "Killing", f"Stopping container {c['name']}", "kubelet")
            cluster.record_event(rs, "Normal", "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}",
                                 REPLICASET_CONTROLLER)
    return len(pods) != want


def pod_running_status(cluster: Cluster, pod: dict) -> dict:
    now = rfc3339(cluster.clock.now())
    return {
        "phase": "Running", "hostIP": "10.0.0.1", "podIP": f"10.244.0.{cluster.rng.randint(2, 254)}",
        "startTime": now, "qosClass": "Burstable",
        "conditions": [{"type": t, "status": "True", "lastTransitionTime": now}
                       for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")],
        "containerStatuses": [{"name": c["name"], "image": c["image"], "imageID": "", "ready": True,
                               "restartCount": 0, "started": True, "state": {"running": {"startedAt": now}}}
                              for c in pod["spec"]["containers"]],
    }


def _replicaset_status(cluster: Cluster, rs: dict, pods: list[dict]) -> None:
    ready = sum(1 for p in pods if pod_ready(p))
    status = {"replicas": len(pods), "fullyLabeledReplicas": len(pods), "readyReplicas": ready,
              "availableReplicas": ready, "observedGeneration": rs["metadata"].get("generation", 1)}
    for key in ("fullyLabeledReplicas", "readyReplicas", "availableReplicas"):
        if not status[key]:
            del status[key]
    if status != rs.get("status"):
        new = clone(rs)
        new["status"] = status
        cluster.controller_write(new, CONTROLLER_MANAGER, subresource="status")


def pod_ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions") or [])


# ---- HorizontalPodAutoscaler ---------------------------------------------------------------------
def _target_utilization(hpa: dict) -> int:
    for m in hpa["spec"].get("metrics") or []:
        if m.get("type") == "Resource" and (m.get("resource") or {}).get("name") == "cpu":
            target = m["resource"].get("target") or {}
            if target.get("averageUtilization"):
                return int(target["averageUtilization"])
    return 80  # the default target when no metric is given


def _sync_hpa(cluster: Cluster, hpa: dict) -> None:
    ns = hpa["metadata"]["namespace"]
    spec = hpa["spec"]
    ref = spec["scaleTargetRef"]
    deploy = cluster._find(cluster_kind("Deployment"), ns, ref["name"]) if ref.get("kind") == "Deployment" else None
    now = cluster.clock.now()
    old = hpa.get("status") or {}
    conditions = {c["type"]: c for c in old.get("conditions") or []}

    def condition(type_, status, reason, message):
        prev = conditions.get(type_)
        if prev and (prev["status"], prev["reason"], prev["message"]) == (status, reason, message):
            return prev
        return {"type": type_, "status": status, "reason": reason, "message": message,
                "lastTransitionTime": rfc3339(now) if not prev or prev["status"] != status
                else prev.get("lastTransitionTime", rfc3339(now))}

    if deploy is None:
        status = dict(old, conditions=[condition("AbleToScale", "False", "FailedGetScale",
                                                 f'the HPA controller was unable to get the target\'s current scale: '
                                                 f'{ref.get("kind", "").lower()}s.apps "{ref.get("name")}" not found')])
        _write_hpa_status(cluster, hpa, status)
        return
    current = deploy["spec"]["replicas"]
    target = _target_utilization(hpa)
    usage = round(cluster.workloads.metrics(ns, ref["name"])["cpu_utilization"] * 100)
    raw = current
    if current > 0 and abs(usage / target - 1.0) > HPA_TOLERANCE:
        raw = math.ceil(current * usage / target)
    memory = cluster.sim.setdefault("hpa", {}).setdefault(hpa["metadata"]["uid"], [])
    memory.append([now, raw])
    memory[:] = [r for r in memory if r[0] >= now - HPA_DOWNSCALE_WINDOW]
    recommended = max(r[1] for r in memory) if raw < current else raw
    lo, hi = spec.get("minReplicas", 1), spec["maxReplicas"]
    desired = min(max(recommended, lo), hi)
    if recommended > hi:
        limited = condition("ScalingLimited", "True", "TooManyReplicas",
                            "the desired replica count is more than the maximum replica count")
    elif recommended < lo:
        limited = condition("ScalingLimited", "True", "TooFewReplicas",
                            "the desired replica count is less than the minimum replica count")
    else:
        limited = condition("ScalingLimited", "False", "DesiredWithinRange",
                            "the desired count is within the acceptable range")
    status = {"currentReplicas": current, "desiredReplicas": desired,
              "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu",
                                                                   "current": {"averageUtilization": usage}}}]}
    if old.get("lastScaleTime"):
        status["lastScaleTime"] = old["lastScaleTime"]
    if desired != current and current > 0:
        scaled = clone(deploy)
        scaled["spec"]["replicas"] = desired
        cluster.controller_write(scaled, CONTROLLER_MANAGER, subresource="scale")
        direction = "above" if desired > current else "below"
        cluster.record_event(hpa, "Normal", "SuccessfulRescale",
                             f"New size: {desired}; reason: cpu resource utilization (percentage of request) "
                             f"{direction} target", HPA_CONTROLLER)
        status["lastScaleTime"] = rfc3339(now)
        able = condition("AbleToScale", "True", "SucceededRescale",
                         "the HPA controller was able to update the target scale to %d" % desired)
    else:
        able = condition("AbleToScale", "True", "ReadyForNewScale", "recommended size matches current size")
    status["conditions"] = [able, condition("ScalingActive", "True", "ValidMetricFound",
                                            "the HPA was able to successfully calculate a replica count from cpu "
                                            "resource utilization (percentage of request)"), limited]
    _write_hpa_status(cluster, hpa, status)


def _write_hpa_status(cluster: Cluster, hpa: dict, status: dict) -> None:
    if status != hpa.get("status"):
        new = clone(hpa)
        new["status"] = status
        cluster.controller_write(new, CONTROLLER_MANAGER, subresource="status")


# ---- Job -----------------------------------------------------------------------------------------
def _job_done(job: dict) -> bool:
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


def _start_job(cluster: Cluster, job: dict) -> None:
    """A Job that is neither suspended nor done, with no pod yet, gets its one pod."""
    spec = job["spec"]
    if spec.get("suspend") or _job_done(job) or (job.get("status") or {}).get("succeeded"):
        return
    if any(owned_by(p, job) for p in cluster.objects("Pod", job["metadata"]["namespace"])):
        return
    template = clone(spec["template"])
    meta = template.get("metadata") or {}
    name = f"{job['metadata']['name']}-{cluster.random_suffix()}"
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": job["metadata"]["namespace"], "labels": meta.get("labels") or {},
                        **({"annotations": meta["annotations"]} if meta.get("annotations") else {}),
                        "ownerReferences": [_owner_ref(job)]},
           "spec": template["spec"]}
    cluster.controller_write(pod, CONTROLLER_MANAGER)
    cluster.record_event(job, "Normal", "SuccessfulCreate", f"Created pod: {name}", JOB_CONTROLLER)


def _duration(job: dict) -> float:
    try:
        return max(0.0, float((job["metadata"].get("annotations") or {}).get(JOB_DURATION, JOB_DURATION_S)))
    except ValueError:
        return JOB_DURATION_S


def _run_job_pods(cluster: Cluster) -> None:
    """Running pods of Jobs whose simulated duration has passed exit 0 (phase Succeeded)."""
    jobs = {j["metadata"]["uid"]: j for j in cluster.objects("Job")}
    if not jobs:
        return
    now = cluster.clock.now()
    for pod in cluster.objects("Pod"):
        job = jobs.get(controller_uid(pod) or "")
        status = pod.get("status") or {}
        if job is None or status.get("phase") != "Running":
            continue
        started = _epoch(status.get("startTime"))
        if started is None or now - started < _duration(job):
            continue
        done = clone(pod)
        finished = rfc3339(now)
        done["status"] = {
            **status, "phase": "Succeeded",
            "conditions": [{**c, "status": "False", "reason": "PodCompleted", "lastTransitionTime": finished}
                           if c["type"] in ("Ready", "ContainersReady") else c for c in status.get("conditions") or []],
            "containerStatuses": [{**c, "ready": False, "started": False, "state": {"terminated": {
                "exitCode": 0, "reason": "Completed", "startedAt": status.get("startTime"), "finishedAt": finished}}}
                for c in status.get("containerStatuses") or []]}
        cluster.controller_write(done, "kubelet", subresource="status")


def _job_status(cluster: Cluster, job: dict, pods: list[dict]) -> None:
    """active/ready/succeeded from the Job's pods; Complete (with SuccessCriteriaMet, as 1.31+
    reports it) and completionTime once `completions` pods succeeded."""
    old = job.get("status") or {}
    if _job_done(job):
        return
    now = rfc3339(cluster.clock.now())
    phases = [(p.get("status") or {}).get("phase") for p in pods]
    active = sum(1 for ph in phases if ph not in ("Succeeded", "Failed"))
    succeeded = max(int(old.get("succeeded") or 0), phases.count("Succeeded"))
    status = {"ready": sum(1 for p in pods if pod_ready(p)), "terminating": 0, "uncountedTerminatedPods": {}}
    if active:
        status["active"] = active
    if pods or old.get("startTime"):
        status["startTime"] = old.get("startTime") or min(
            (p.get("status") or {}).get("startTime") or now for p in pods)
    if succeeded:
        status["succeeded"] = succeeded
    completed = succeeded >= int(job["spec"].get("completions") or 1)
    if completed:
        status["completionTime"] = now
        status["conditions"] = [
            {"type": t, "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods",
             "lastProbeTime": now, "lastTransitionTime": now} for t in ("SuccessCriteriaMet", "Complete")]
    if status != old:
        new = clone(job)
        new["status"] = status
        cluster.controller_write(new, CONTROLLER_MANAGER, subresource="status")
        if completed:
            cluster.record_event(job, "Normal", "Completed", "Job completed", JOB_CONTROLLER)


def _epoch(text: str | None) -> float | None:
    from datetime import datetime

    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
