"""How the simulated workloads behave over a night, and the metrics they expose.

Each Deployment gets request traffic from a deterministic curve (seeded noise, optional one-off
spike, optional daily batch); CPU utilization is demand over what its ready pods were given;
latency p95 climbs steeply above ~80 % utilization; memory grows with a leak until the container
limit, when the container is OOM-killed and restarts; pods running an image in the "bad" set
answer with errors; a feature flag read from a ConfigMap only affects pods started after the
ConfigMap changed (pods remember the configuration they started with).

Two effects reach beyond one knob. A pod whose env sets DB_POOL_SIZE holds that many database
connections, and each request holds one for `db_hold_ms`: when the traffic needs more than ~80 %
of the connections its ready pods hold, requests wait for one (latency), and past all of them
some time out (errors). A Deployment that declares the workloads it calls (`depends_on`) feels
part of their trouble: `dependency_share` of its requests wait on each dependency, so what a
dependency answers beyond `dependency_budget_ms` (up to the caller's `dependency_timeout_ms`)
and its errors above its own base rate reach the caller in that share.

Scenario knobs live in Deployment annotations `sim.afterfix.dev/<knob>` so a restarted simulator
keeps them and any client can read them (`configure()` sets them; `KNOBS` lists them with their
defaults; `dependencies()` reads every Deployment's `depends_on`).

Read the model with `metrics(namespace, name)` (now), `history(namespace, name)` (one sample per
simulated minute), `pod_metrics()` (metrics.k8s.io PodMetrics) or `prometheus_text()` (the
Prometheus text exposition format 0.0.4 served on `/metrics`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from afterfix._exceptions import ConfigError
from afterfix.nightshift.clock import rfc3339
from afterfix.nightshift.patches import clone

if TYPE_CHECKING:
    from afterfix.nightshift.cluster import Cluster

__all__ = ["WorkloadModel", "KNOBS", "HISTORY_FIELDS", "parse_cpu", "parse_memory_mb", "ANNOTATION_PREFIX",
           "DEPENDS_ON_ANNOTATION"]

ANNOTATION_PREFIX = "sim.afterfix.dev/"
CONFIG_AT_START = ANNOTATION_PREFIX + "config-at-start"

# knob -> default. Annotation names use dashes: leak_mb_per_hour -> sim.afterfix.dev/leak-mb-per-hour.
KNOBS: dict[str, Any] = {
    "base_rps": 50.0,             # mean requests per second
    "diurnal_amplitude": 0.3,     # traffic swing over the day (peak 20:00 UTC)
    "noise": 0.05,                # seeded per-minute jitter, as a fraction of traffic
    "spike_start": "",            # RFC 3339 time or epoch seconds; empty: no spike
    "spike_minutes": 0.0,
    "spike_factor": 1.0,
    "cpu_per_request": 5.0,       # millicores per request/s
    "base_latency_ms": 80.0,
    "base_error_rate": 0.002,
    "base_memory_mb": 180.0,
    "leak_mb_per_hour": 0.0,
    "bad_images": "",             # comma-separated images that answer with errors
    "bad_image_error_rate": 0.3,
    "flag_configmap": "",         # ConfigMap holding the flag (also counted as read by the pods)
    "flag_key": "",               # e.g. feature.new_checkout; the flag is on when its value is "true"
    "flag_error_rate": 0.0,       # added to the error rate of pods that started with the flag on
    "flag_latency_ms": 0.0,
    "flag_cpu_factor": 1.0,
    "batch_at": "",               # HH:MM UTC when a daily batch begins (e.g. "05:30"); empty: no batch
    "batch_minutes": 60.0,        # how long it lasts, ramps included
    "batch_factor": 1.0,          # traffic multiplier while it runs (15-minute ramps up and down)
    "db_hold_ms": 30.0,           # how long a request holds a pooled DB connection (pods with DB_POOL_SIZE)
    "db_pool_timeout_ms": 2000.0,  # how long a request waits for a connection before it fails
    "depends_on": "",             # comma-separated namespace/name of the workloads this one calls
    "dependency_share": 0.1,      # share of this workload's requests that wait on each dependency
    "dependency_budget_ms": 300.0,  # a dependency answering within this is not felt by callers
    "dependency_timeout_ms": 1000.0,  # callers give up on a dependency after this
}
DEPENDS_ON_ANNOTATION = ANNOTATION_PREFIX + "depends-on"
BATCH_RAMP_S = 15 * 60.0
POOL_ENV = "DB_POOL_SIZE"
POOL_KNEE = 0.8                # share of the pool's connections in use above which requests queue
# Past the pool's capacity, the excess queues until the pool timeout; clients that retry with
# back-off (the renewal batch does) absorb most of it, so only this share of it ends in an error.
POOL_TIMEOUT_SHARE = 0.15
HISTORY_STEP = 60.0            # seconds between recorded samples
HISTORY_SPAN = 36 * 3600.0     # how much history the state keeps
HISTORY_FIELDS = ("latency_p95_ms", "error_rate", "cpu_utilization", "memory_mb", "restarts", "replicas",
                  "ready_replicas", "rps")
DEFAULT_CPU_REQUEST_M = 250.0
DEFAULT_MEMORY_LIMIT_MB = 512.0
TIMEOUT_MS = 10_000.0


def _annotation(knob: str) -> str:
    return ANNOTATION_PREFIX + knob.replace("_", "-")


def parse_cpu(q: str | int | float | None, default: float) -> float:
    """A Kubernetes CPU quantity in millicores ("250m" -> 250, "1" -> 1000)."""
    if q is None or q == "":
        return default
    text = str(q)
    return float(text[:-1]) if text.endswith("m") else float(text) * 1000


def parse_memory_mb(q: str | int | float | None, default: float) -> float:
    """A Kubernetes memory quantity in MiB ("512Mi" -> 512, "1Gi" -> 1024, bytes otherwise)."""
    if q is None or q == "":
        return default
    text = str(q)
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 ** 2, "k": 1e3 / 2 ** 20, "M": 1e6 / 2 ** 20,
             "G": 1e9 / 2 ** 20}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text) / 2 ** 20


def _epoch(value: Any) -> float | None:
    if value in ("", None):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return _parse_time(str(value))


_KEY = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?")
_HHMM = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")


def _check(namespace: str, name: str, knob: str, value: Any) -> None:
    """Refuse a knob value that the model could only ignore, saying what it wants instead."""
    where = f"WorkloadModel.configure({namespace}/{name})"
    if value in (None, ""):
        return
    if knob == "batch_at" and not _HHMM.fullmatch(str(value)):
        raise ConfigError(f"{where}: batch_at={value!r} is not a time of day like 05:30 (UTC)")
    if knob == "depends_on":
        bad = [d for d in str(value).split(",") if not _KEY.fullmatch(d.strip())]
        if bad:
            raise ConfigError(f"{where}: depends_on entries {bad} are not namespace/name "
                              f"(e.g. depends_on='shop/payments,shop/cart')")


@functools.lru_cache(maxsize=64)
def _minute_of_day(text: str) -> int | None:
    m = _HHMM.fullmatch(text.strip())
    return int(m.group(1)) * 60 + int(m.group(2)) if m else None


@functools.lru_cache(maxsize=4096)
def _parse_time(text: str) -> float:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        raise ConfigError(f"{text!r} is neither epoch seconds nor an RFC 3339 time (2026-11-27T03:00:00Z)") from None


class WorkloadModel:
    """Behaviour knobs and metrics for every Deployment of one `Cluster` (call under its lock)."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self._owners_seen = -1
        self._pods_by_owner: dict[str, list[tuple[str, str]]] = {}
        self._knobs: dict[str, tuple[str, dict]] = {}  # deployment uid -> (resourceVersion, knobs)

    # ---- knobs ------------------------------------------------------------------------------
    def configure(self, namespace: str, name: str, **knobs: Any) -> dict:
        """Set behaviour knobs for one Deployment; they are stored as its annotations."""
        unknown = sorted(set(knobs) - set(KNOBS))
        if unknown:
            raise ConfigError(f"WorkloadModel.configure({namespace}/{name}): unknown knob(s) {unknown}; "
                              f"known: {sorted(KNOBS)}")
        annotations = {}
        for knob, value in knobs.items():
            if knob in ("bad_images", "depends_on") and isinstance(value, (list, tuple, set)):
                value = ",".join(sorted(value))
            _check(namespace, name, knob, value)
            annotations[_annotation(knob)] = None if value is None else str(value)
        with self.cluster.lock:
            return self.cluster.patch("apps/v1", "Deployment", namespace, name,
                                      {"metadata": {"annotations": annotations}}, field_manager="afterfix-sim")

    def knobs(self, deploy: dict) -> dict:
        """The Deployment's knobs (its annotations over the defaults)."""
        meta = deploy["metadata"]
        cached = self._knobs.get(meta.get("uid", ""))
        if cached and cached[0] == meta.get("resourceVersion"):
            return cached[1]
        out = self._parse_knobs(meta.get("annotations") or {})
        if meta.get("uid"):
            self._knobs[meta["uid"]] = (meta.get("resourceVersion"), out)
        return out

    def _parse_knobs(self, ann: dict) -> dict:
        out = {}
        for knob, default in KNOBS.items():
            raw = ann.get(_annotation(knob))
            if raw is None:
                out[knob] = default
            elif isinstance(default, float):
                try:
                    out[knob] = float(raw)
                except ValueError:
                    out[knob] = default
            else:
                out[knob] = raw
        out["bad_images"] = {i.strip() for i in str(out["bad_images"]).split(",") if i.strip()}
        out["depends_on"] = [d for d in (i.strip() for i in str(out["depends_on"]).split(",")) if _KEY.fullmatch(d)]
        return out

    def dependencies(self) -> dict[str, list[str]]:
        """{"namespace/name": the workloads it declares it calls} for every Deployment that declares any."""
        with self.cluster.lock:
            out = {}
            for deploy in self.cluster.objects("Deployment"):
                deps = self.knobs(deploy)["depends_on"]
                if deps:
                    out[f"{deploy['metadata']['namespace']}/{deploy['metadata']['name']}"] = list(deps)
            return out

    # ---- pods -------------------------------------------------------------------------------
    def pod_start_annotations(self, namespace: str, template: dict) -> dict:
        """What a new pod remembers: the data of the ConfigMaps it reads, as they are now."""
        names = set()
        spec = template.get("spec") or {}
        for c in spec.get("containers") or []:
            for src in c.get("envFrom") or []:
                if (src.get("configMapRef") or {}).get("name"):
                    names.add(src["configMapRef"]["name"])
            for env in c.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("configMapKeyRef") or {}
                if ref.get("name"):
                    names.add(ref["name"])
        for vol in spec.get("volumes") or []:
            if (vol.get("configMap") or {}).get("name"):
                names.add(vol["configMap"]["name"])
        deploy = self._deployment_for_template(namespace, template)
        if deploy is not None and self.knobs(deploy)["flag_configmap"]:
            names.add(self.knobs(deploy)["flag_configmap"])
        seen = {}
        for cm_name in sorted(names):
            cm = self.cluster._find(_kind("ConfigMap"), namespace, cm_name)
            seen[cm_name] = dict((cm or {}).get("data") or {})
        return {CONFIG_AT_START: json.dumps(seen, sort_keys=True)} if seen else {}

    def _deployment_for_template(self, namespace: str, template: dict) -> dict | None:
        labels = (template.get("metadata") or {}).get("labels") or {}
        for deploy in self.cluster.objects("Deployment", namespace):
            selector = (deploy["spec"].get("selector") or {}).get("matchLabels") or {}
            if selector and all(labels.get(k) == v for k, v in selector.items()):
                return deploy
        return None

    def pods(self, deploy: dict) -> list[dict]:
        """The live pods of a Deployment's ReplicaSets."""
        from afterfix.nightshift.controllers import controller_uid

        # Which pods belong to which Deployment changes only when pods or ReplicaSets come, go
        # or change owners; the cluster counts those changes, so the grouping is redone only then.
        if self._owners_seen != self.cluster.ownership_version:
            rs_owner = {rs["metadata"]["uid"]: controller_uid(rs) for rs in self.cluster.objects("ReplicaSet")}
            grouped: dict[str, list[tuple[str, str]]] = {}
            for (ns, name), pod in sorted(self.cluster._objects["Pod"].items()):
                owner = rs_owner.get(controller_uid(pod) or "")
                if owner:
                    grouped.setdefault(owner, []).append((ns, name))
            self._pods_by_owner, self._owners_seen = grouped, self.cluster.ownership_version
        live = self.cluster._objects["Pod"]
        return [live[k] for k in self._pods_by_owner.get(deploy["metadata"]["uid"], ()) if k in live]

    def _flag_on(self, pod: dict, knobs: dict) -> bool:
        if not knobs["flag_key"]:
            return False
        seen = json.loads((pod["metadata"].get("annotations") or {}).get(CONFIG_AT_START, "{}"))
        maps = [seen.get(knobs["flag_configmap"], {})] if knobs["flag_configmap"] else list(seen.values())
        return any(str(m.get(knobs["flag_key"], "")).lower() == "true" for m in maps)

    def _memory_mb(self, pod: dict, knobs: dict, now: float) -> float:
        status = (pod.get("status", {}).get("containerStatuses") or [{}])[0]
        started = _epoch((status.get("state", {}).get("running") or {}).get("startedAt"))
        if started is None:
            return knobs["base_memory_mb"]
        return knobs["base_memory_mb"] + knobs["leak_mb_per_hour"] * max(0.0, now - started) / 3600

    # ---- time -------------------------------------------------------------------------------
    def step(self, dt: float) -> None:
        """Containers live for `dt` more seconds: leaks hit their limit (OOM restart), and
        containers in back-off come back."""
        from afterfix.nightshift.controllers import pod_ready

        now = self.cluster.clock.now()
        waiting = self.cluster.sim.get("ready_at", {})
        if waiting:  # forget pods that are gone, so the saved state does not grow all night
            alive = {p["metadata"]["uid"] for p in self.cluster.objects("Pod")}
            for uid in [u for u in waiting if u not in alive]:
                del waiting[uid]
        for deploy in self.cluster.objects("Deployment"):
            knobs = self.knobs(deploy)
            for pod in self.pods(deploy):
                if not pod_ready(pod):
                    self._maybe_recover(pod, now)
                elif knobs["leak_mb_per_hour"] > 0:
                    self._maybe_oom(deploy, pod, knobs, now)

    def _maybe_oom(self, deploy: dict, pod: dict, knobs: dict, now: float) -> None:
        container = pod["spec"]["containers"][0]
        limit = parse_memory_mb(((container.get("resources") or {}).get("limits") or {}).get("memory"),
                                DEFAULT_MEMORY_LIMIT_MB)
        if self._memory_mb(pod, knobs, now) < limit:
            return
        status = clone(pod["status"])
        cs = status["containerStatuses"][0]
        started = _epoch(cs["state"]["running"]["startedAt"])
        killed = started + max(0.0, limit - knobs["base_memory_mb"]) / knobs["leak_mb_per_hour"] * 3600
        cs["restartCount"] = cs.get("restartCount", 0) + 1
        backoff = min(300.0, 10.0 * 2 ** (cs["restartCount"] - 1))
        cs["lastState"] = {"terminated": {"exitCode": 137, "reason": "OOMKilled", "startedAt": rfc3339(started),
                                          "finishedAt": rfc3339(killed)}}
        cs["ready"] = False
        cs["state"] = {"waiting": {"reason": "CrashLoopBackOff",
                                   "message": f"back-off {int(backoff)}s restarting failed container="
                                              f"{cs['name']} pod={pod['metadata']['name']}"}}
        for c in status["conditions"]:
            if c["type"] in ("Ready", "ContainersReady"):
                c["status"], c["lastTransitionTime"] = "False", rfc3339(now)
        status.setdefault("conditions", [])
        self.cluster.sim.setdefault("ready_at", {})[pod["metadata"]["uid"]] = killed + backoff
        key = f"{deploy['metadata']['namespace']}/{deploy['metadata']['name']}"
        restarts = self.cluster.sim.setdefault("restarts", {})
        restarts[key] = restarts.get(key, 0) + 1
        new = clone(pod)
        new["status"] = status
        self.cluster.controller_write(new, "kubelet", subresource="status")
        self.cluster.record_event(pod, "Warning", "OOMKilling",
                                  f"Memory cgroup out of memory: Killed process in container {cs['name']} "
                                  f"(limit {int(limit)}Mi)", "kubelet")
        if cs["restartCount"] > 1:
            self.cluster.record_event(pod, "Warning", "BackOff", "Back-off restarting failed container "
                                      f"{cs['name']} in pod {pod['metadata']['name']}", "kubelet")
        self._maybe_recover(self.cluster._find(_kind("Pod"), pod["metadata"]["namespace"], pod["metadata"]["name"]), now)

    def _maybe_recover(self, pod: dict, now: float) -> None:
        ready_at = self.cluster.sim.get("ready_at", {}).get(pod["metadata"]["uid"])
        if ready_at is None or now < ready_at:
            return
        status = clone(pod["status"])
        cs = status["containerStatuses"][0]
        cs["ready"], cs["state"] = True, {"running": {"startedAt": rfc3339(ready_at)}}
        for c in status["conditions"]:
            if c["type"] in ("Ready", "ContainersReady"):
                c["status"], c["lastTransitionTime"] = "True", rfc3339(now)
        del self.cluster.sim["ready_at"][pod["metadata"]["uid"]]
        new = clone(pod)
        new["status"] = status
        self.cluster.controller_write(new, "kubelet", subresource="status")

    # ---- metrics ----------------------------------------------------------------------------
    def traffic(self, namespace: str, name: str, knobs: dict, now: float) -> float:
        """Requests per second at `now`: daily curve, seeded jitter, optional spike."""
        hour = (now % 86400) / 3600
        shape = 1 + knobs["diurnal_amplitude"] * math.cos(2 * math.pi * (hour - 20) / 24)
        seed = f"{self.cluster.seed}/{namespace}/{name}/{int(now // 60)}".encode()
        jitter = int.from_bytes(hashlib.sha256(seed).digest()[:8], "big") / 2 ** 64 * 2 - 1
        rps = knobs["base_rps"] * shape * (1 + knobs["noise"] * jitter)
        start = _epoch(knobs["spike_start"])
        if start is not None and start <= now < start + knobs["spike_minutes"] * 60:
            rps *= knobs["spike_factor"]
        return max(0.0, rps * self._batch(knobs, now))

    @staticmethod
    def _batch(knobs: dict, now: float) -> float:
        """The daily batch's traffic multiplier at `now`: ramps up, holds, ramps down."""
        begins = _minute_of_day(str(knobs["batch_at"])) if knobs["batch_at"] else None
        length = knobs["batch_minutes"] * 60
        if begins is None or knobs["batch_factor"] == 1.0 or length <= 0:
            return 1.0
        into = (now - begins * 60) % 86400
        if into >= length:
            return 1.0
        ramp = min(BATCH_RAMP_S, length / 2)
        return 1 + (knobs["batch_factor"] - 1) * min(1.0, into / ramp, (length - into) / ramp)

    def metrics(self, namespace: str, name: str) -> dict:
        """The current metrics of one Deployment, computed from the cluster's state now."""
        with self.cluster.lock:
            return self._metrics(self.cluster._require(_kind("Deployment"), namespace, name), ())

    def _metrics(self, deploy: dict, callers: tuple[str, ...]) -> dict:
        """Its own metrics, then what its dependencies pass on (`callers`: who asked, so that a
        declared cycle ends instead of recursing)."""
        out = self._own_metrics(deploy)
        knobs = self.knobs(deploy)
        if not knobs["depends_on"] or not out["ready_replicas"]:
            return out
        me = f"{deploy['metadata']['namespace']}/{deploy['metadata']['name']}"
        share, budget, timeout = knobs["dependency_share"], knobs["dependency_budget_ms"], knobs["dependency_timeout_ms"]
        for key in knobs["depends_on"]:
            dep = self.cluster._find(_kind("Deployment"), *key.split("/", 1))
            if dep is None or key in callers or key == me:
                continue  # declared but not simulated (a database outside the cluster), or a cycle
            m = self._metrics(dep, (*callers, me))
            waited = max(0.0, min(m["latency_p95_ms"], timeout) - budget)
            failed = max(0.0, m["error_rate"] - self.knobs(dep)["base_error_rate"])
            out["latency_p95_ms"] = min(TIMEOUT_MS, out["latency_p95_ms"] + share * waited)
            out["error_rate"] = min(1.0, out["error_rate"] + share * failed)
        return out

    def _own_metrics(self, deploy: dict) -> dict:
        from afterfix.nightshift.controllers import pod_ready

        namespace, name = deploy["metadata"]["namespace"], deploy["metadata"]["name"]
        knobs = self.knobs(deploy)
        now = self.cluster.clock.now()
        pods = [p for p in self.pods(deploy) if p.get("status", {}).get("phase") == "Running"]
        ready = [p for p in pods if pod_ready(p)]
        rps = self.traffic(namespace, name, knobs, now)
        restarts = self.cluster.sim.get("restarts", {}).get(f"{namespace}/{name}", 0)
        memory = (sum(self._memory_mb(p, knobs, now) if pod_ready(p) else knobs["base_memory_mb"] for p in pods)
                  / len(pods)) if pods else 0.0
        out = {"rps": rps, "replicas": len(pods), "ready_replicas": len(ready), "restarts": restarts,
               "memory_mb": memory}
        if not ready:
            return dict(out, cpu_utilization=0.0, latency_p95_ms=TIMEOUT_MS, error_rate=1.0 if rps else 0.0)
        container = deploy["spec"]["template"]["spec"]["containers"][0]
        resources = container.get("resources") or {}
        request = parse_cpu((resources.get("requests") or {}).get("cpu"), DEFAULT_CPU_REQUEST_M)
        limit = parse_cpu((resources.get("limits") or {}).get("cpu"), request)
        flags = [self._flag_on(p, knobs) for p in ready]
        flag_share = sum(flags) / len(ready)
        cpu_factor = 1 + (knobs["flag_cpu_factor"] - 1) * flag_share
        load = rps * knobs["cpu_per_request"] * cpu_factor / (len(ready) * request)
        cpu = min(load, limit / request)
        # Queueing: latency is flat until ~80 % busy, then climbs steeply; past saturation,
        # requests that cannot be served time out and count as errors.
        factor = 1 + 0.4 * load if load <= 0.8 else min(50.0, 1.32 + 30 * (load - 0.8) ** 2)
        latency = knobs["base_latency_ms"] * factor + knobs["flag_latency_ms"] * flag_share
        per_pod = [knobs["base_error_rate"]
                   + (knobs["bad_image_error_rate"] if _image(p) in knobs["bad_images"] else 0.0)
                   + (knobs["flag_error_rate"] if on else 0.0) for p, on in zip(ready, flags, strict=True)]
        errors = sum(per_pod) / len(per_pod)
        if load > 1:
            errors += 0.5 * (1 - 1 / load)
        waited, failed = self._pool(ready, rps, knobs)
        return dict(out, cpu_utilization=cpu, latency_p95_ms=min(latency + waited, TIMEOUT_MS),
                    error_rate=min(1.0, errors + failed))

    @staticmethod
    def _pool(ready: list[dict], rps: float, knobs: dict) -> tuple[float, float]:
        """(ms a request waits for a database connection, share of requests that time out).

        Only pods whose env sets DB_POOL_SIZE hold a pool; each ready pod holds its own, sized
        from the env it started with. No such pod: no pool, no effect."""
        sizes = [s for s in (_pool_size(p) for p in ready) if s is not None]
        if not sizes:
            return 0.0, 0.0
        connections = sum(sizes)
        if connections <= 0:
            return knobs["db_pool_timeout_ms"], 1.0
        busy = rps * knobs["db_hold_ms"] / 1000 / connections
        if busy <= POOL_KNEE:
            return 0.0, 0.0
        wait = min(knobs["db_pool_timeout_ms"], knobs["db_hold_ms"] * 200 * (busy - POOL_KNEE) ** 2)
        return wait, (POOL_TIMEOUT_SHARE * (1 - 1 / busy) if busy > 1 else 0.0)

    def pod_metrics(self, namespace: str | None = None) -> list[dict]:
        """metrics.k8s.io/v1beta1 PodMetrics for the pods of every Deployment (what `kubectl top
        pod` reads): the Deployment's CPU demand shared by its ready pods, each pod's memory."""
        from afterfix.nightshift.controllers import pod_ready

        with self.cluster.lock:
            now = self.cluster.clock.now()
            out = []
            for deploy in self.cluster.objects("Deployment", namespace):
                knobs = self.knobs(deploy)
                m = self.metrics(deploy["metadata"]["namespace"], deploy["metadata"]["name"])
                resources = deploy["spec"]["template"]["spec"]["containers"][0].get("resources") or {}
                request = parse_cpu((resources.get("requests") or {}).get("cpu"), DEFAULT_CPU_REQUEST_M)
                for pod in self.pods(deploy):
                    ready = pod_ready(pod)
                    cpu = m["cpu_utilization"] * request if ready else 0.0
                    memory = self._memory_mb(pod, knobs, now) if ready else knobs["base_memory_mb"]
                    containers = pod["spec"]["containers"]
                    out.append({
                        "kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
                        "metadata": {"name": pod["metadata"]["name"], "namespace": pod["metadata"]["namespace"],
                                     "creationTimestamp": rfc3339(now), "labels": pod["metadata"].get("labels") or {}},
                        "timestamp": rfc3339(now), "window": "30s",
                        # The first container does the work; sidecars idle.
                        "containers": [{"name": c["name"], "usage": {
                            "cpu": f"{round(cpu) if i == 0 else 1}m",
                            "memory": f"{round((memory if i == 0 else 8) * 1024)}Ki"}} for i, c in enumerate(containers)],
                    })
            return out

    def record(self) -> None:
        """Keep one sample per Deployment per simulated minute (the last 36 hours), so the night
        can be plotted afterwards without a Prometheus; called by `Cluster.tick`."""
        now = self.cluster.clock.now()
        minute = int(now // HISTORY_STEP)
        if self.cluster.sim.get("history_minute") == minute:
            return
        self.cluster.sim["history_minute"] = minute
        series = self.cluster.sim.setdefault("history", {})
        for deploy in self.cluster.objects("Deployment"):
            key = f"{deploy['metadata']['namespace']}/{deploy['metadata']['name']}"
            m = self.metrics(deploy["metadata"]["namespace"], deploy["metadata"]["name"])
            rows = series.setdefault(key, [])
            rows.append([round(now, 3)] + [round(float(m[f]), 6) for f in HISTORY_FIELDS])
            if rows[0][0] < now - HISTORY_SPAN:
                rows[:] = [r for r in rows if r[0] >= now - HISTORY_SPAN]

    def history(self, namespace: str, name: str, since: float | None = None) -> list[dict]:
        """Recorded samples of one Deployment, oldest first: dicts with `time` (epoch seconds)
        and the fields of `metrics()`."""
        with self.cluster.lock:
            rows = self.cluster.sim.get("history", {}).get(f"{namespace}/{name}", [])
            return [dict(zip(("time", *HISTORY_FIELDS), row, strict=True)) for row in rows
                    if since is None or row[0] >= since]

    def snapshot(self) -> list[dict]:
        """Metrics of every Deployment, each with its namespace and name."""
        with self.cluster.lock:
            return [dict(self.metrics(d["metadata"]["namespace"], d["metadata"]["name"]),
                         namespace=d["metadata"]["namespace"], deployment=d["metadata"]["name"])
                    for d in self.cluster.objects("Deployment")]

    def prometheus_text(self) -> str:
        """All metrics in the Prometheus text exposition format (version 0.0.4), no timestamps
        (a scrape is stamped with the scraper's wall time; simulated time is its own gauge).

        Each metric comes twice: `afterfix_sim_*` in Prometheus' base units (what the reference
        agent queries), and the metric history's own names and units under the mapping
        `afterfix.metrics.PrometheusMetrics` asks for (`afterfix.workload.latency_p95_ms` ->
        `afterfix_workload_latency_p95_ms`, restarts -> `afterfix_workload_restarts_total`), so a
        range read from the store and one read from a Prometheus scraping this give the same values."""
        from afterfix.metrics.prometheus import prometheus_name
        from afterfix.nightshift.metrics_export import CUMULATIVE, DESCRIPTIONS, METRIC_NAME

        rows = self.snapshot()
        families = [
            ("afterfix_sim_latency_p95_seconds", "gauge", "95th percentile request latency.",
             lambda m: m["latency_p95_ms"] / 1000),
            ("afterfix_sim_error_ratio", "gauge", "Share of requests answered with an error.", lambda m: m["error_rate"]),
            ("afterfix_sim_cpu_utilization_ratio", "gauge", "CPU used over CPU requested, averaged over ready pods.",
             lambda m: m["cpu_utilization"]),
            ("afterfix_sim_memory_bytes", "gauge", "Average container memory working set.",
             lambda m: m["memory_mb"] * 2 ** 20),
            ("afterfix_sim_restarts_total", "counter", "Container restarts since the simulation began.",
             lambda m: m["restarts"]),
            ("afterfix_sim_replicas", "gauge", "Running pods.", lambda m: m["replicas"]),
            ("afterfix_sim_ready_replicas", "gauge", "Ready pods.", lambda m: m["ready_replicas"]),
            ("afterfix_sim_requests_per_second", "gauge", "Incoming request rate.", lambda m: m["rps"]),
        ]
        families += [(prometheus_name(METRIC_NAME.format(field=f)), "counter" if f in CUMULATIVE else "gauge",
                      DESCRIPTIONS[f], lambda m, f=f: m[f]) for f in HISTORY_FIELDS]
        lines = []
        for name, type_, help_, value in families:
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} {type_}"]
            for m in rows:
                labels = f'namespace="{_escape(m["namespace"])}",deployment="{_escape(m["deployment"])}"'
                lines.append(f"{name}{{{labels}}} {_number(value(m))}")
        lines += ["# HELP afterfix_sim_clock_seconds Simulated time, as Unix epoch seconds.",
                  "# TYPE afterfix_sim_clock_seconds gauge", f"afterfix_sim_clock_seconds {_number(self.cluster.clock.now())}"]
        return "\n".join(lines) + "\n"


def _image(pod: dict) -> str:
    return pod["spec"]["containers"][0].get("image", "")


def _pool_size(pod: dict) -> int | None:
    """The pod's DB_POOL_SIZE: its first container's env value, or the ConfigMap key it names as
    the pod saw it at start; None when the pod sets none. A value that is not a whole number
    gives no connections (the application could not open its pool)."""
    for env in pod["spec"]["containers"][0].get("env") or []:
        if env.get("name") != POOL_ENV:
            continue
        value = env.get("value")
        ref = (env.get("valueFrom") or {}).get("configMapKeyRef") or {}
        if value is None and ref.get("name"):
            seen = json.loads((pod["metadata"].get("annotations") or {}).get(CONFIG_AT_START, "{}"))
            value = (seen.get(ref["name"]) or {}).get(ref.get("key", ""))
        try:
            return max(0, int(str(value).strip()))
        except ValueError:
            return 0
    return None


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _kind(kind: str):
    from afterfix.nightshift.cluster import KINDS

    return KINDS[kind]
