"""The object store behind the Kubernetes API simulator, with the semantics the product relies on.

This is a simulator, not Kubernetes: no real API server can run on the machines afterfix is built
and tested on, so this keeps the parts of the API contract that the product and its rollback engine
depend on: `metadata.uid`, a resourceVersion that changes on every write, 409 Conflict on a stale
resourceVersion, `Status` errors, merge/strategic/JSON patches, `dryRun=All`, `managedFields` per
field manager, Deployment revisions through ReplicaSets, pods that follow them, an HPA, and Jobs
(batch/v1: a generated selector, an immutable pod template, a pod that runs to completion).
Controllers live in `controllers.py`, the workload metrics in `workloads.py`, HTTP in `apiserver.py`.
"""

from __future__ import annotations

import collections
import json
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from afterfix._exceptions import AfterfixError
from afterfix.nightshift import controllers, validation
from afterfix.nightshift import fields
from afterfix.nightshift.fields import update_managed_fields
from afterfix.nightshift.selector import parse_field_selector, parse_label_selector
from afterfix.nightshift.clock import SimClock, rfc3339
from afterfix.nightshift.patches import PatchError, clone, json_patch, merge_patch, strategic_merge_patch

__all__ = ["Cluster", "ApiError", "Kind", "KINDS", "kind_for", "parse_label_selector", "parse_field_selector"]

STATE_VERSION = 1
WATCH_WINDOW = 4096  # changes a watch can resume from; older resourceVersions get 410 Gone
SIM_PREFIX = "sim.afterfix.dev/"


class ApiError(AfterfixError):
    """A refused API request: `status` (also `code`) is the HTTP status, as on the client's
    `ApiException`; the HTTP layer answers with `to_status()`, a Kubernetes `Status` object."""

    def __init__(self, status: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.status = self.code = status
        self.reason, self.message, self.details = reason, message, details or {}

    def to_status(self) -> dict:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "details": self.details, "code": self.code}


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True
    has_status: bool = True   # status is a subresource: ordinary writes leave it alone
    has_generation: bool = True

    @property
    def group(self) -> str:
        return self.api_version.split("/")[0] if "/" in self.api_version else ""

    @property
    def qualified(self) -> str:
        """`deployments.apps`, as Kubernetes names a resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


KINDS: dict[str, Kind] = {k.kind: k for k in [
    Kind("v1", "Namespace", "namespaces", namespaced=False, has_generation=False),
    Kind("v1", "Pod", "pods", has_generation=False),
    Kind("v1", "ConfigMap", "configmaps", has_status=False, has_generation=False),
    Kind("v1", "Secret", "secrets", has_status=False, has_generation=False),
    Kind("v1", "Event", "events", has_status=False, has_generation=False),
    Kind("apps/v1", "Deployment", "deployments"),
    Kind("apps/v1", "ReplicaSet", "replicasets"),
    Kind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    Kind("batch/v1", "Job", "jobs"),
]}
JOB_RESTART_POLICIES = ("Never", "OnFailure")
JOB_UID_LABEL, JOB_NAME_LABEL = "batch.kubernetes.io/controller-uid", "batch.kubernetes.io/job-name"


def kind_for(api_version: str | None, kind: str | None) -> Kind:
    spec = KINDS.get(kind or "")
    if spec is None or (api_version and api_version != spec.api_version):
        raise ApiError(404, "NotFound", f"the server could not find the requested resource "
                       f"(apiVersion {api_version!r}, kind {kind!r}); this simulator serves "
                       + ", ".join(f"{k.api_version} {k.kind}" for k in KINDS.values()))
    return spec


class Cluster:
    """Kubernetes objects with API semantics, controllers and a workload model, on a `SimClock`.

    Every public method takes `self.lock`, so one Cluster can serve a threaded HTTP server.
    With `state_file`, the state is loaded from it if present (objects, counters, RNG, the
    clock's time, controller memory) and saved to it atomically after writes (at most once per
    `autosave_interval` seconds) and on `save()`. The same `seed` gives the same uids and names.
    """

    def __init__(self, clock: SimClock | None = None, *, state_file: Path | str | None = None, seed: int = 0,
                 autosave_interval: float = 1.0):
        from afterfix.nightshift.workloads import WorkloadModel

        self.clock = clock or SimClock()
        self.state_file = Path(state_file) if state_file else None
        self.seed = seed
        self.lock = threading.RLock()
        self.rng = random.Random(seed)
        self._rv = 0
        self._objects: dict[str, dict[tuple[str, str], dict]] = {k: {} for k in KINDS}  # kind -> (ns, name) -> obj
        self.sim: dict[str, Any] = {}  # controller and workload memory that is not an API field
        self._dirty = False
        self.ownership_version = 0  # counts pods and ReplicaSets coming, going or changing owners
        self.autosave_interval = autosave_interval
        self._saved_at = float("-inf")
        # Recent changes for watchers, as the API server's watch cache keeps them (not persisted).
        self.changes: collections.deque[tuple[int, str, dict]] = collections.deque(maxlen=WATCH_WINDOW)
        self.changed = threading.Condition(self.lock)
        self.workloads = WorkloadModel(self)
        if self.state_file and self.state_file.exists():
            self.load()
        else:
            for ns in ("default", "kube-system"):
                self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
                            field_manager="afterfix-sim")

    # ---- reading ----------------------------------------------------------------------------
    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict:
        with self.lock:
            spec = kind_for(api_version, kind)
            return clone(self._require(spec, namespace, name))

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None, field_selector: str | None = None) -> list[dict]:
        with self.lock:
            spec = kind_for(api_version, kind)
            match_labels = parse_label_selector(label_selector)
            match_fields = parse_field_selector(field_selector)
            out = []
            for (ns, _), obj in sorted(self._objects[spec.kind].items()):
                if namespace and spec.namespaced and ns != namespace:
                    continue
                if match_labels(obj.get("metadata", {}).get("labels") or {}) and match_fields(obj):
                    out.append(clone(obj))
            return out

    def changes_since(self, resource_version: int, kind: str, namespace: str | None = None,
                      label_selector: str | None = None, field_selector: str | None = None) -> list[tuple[str, dict]]:
        """Watch events (type, object) of one kind after `resource_version`; 410 Gone when the
        window no longer reaches back that far. Call under `self.lock`."""
        # The oldest version a watch can resume from: just before the first remembered change
        # (after a restart, nothing before the current version is remembered).
        oldest = self.changes[0][0] - 1 if self.changes else self._rv
        if resource_version < oldest:
            raise ApiError(410, "Expired", f"too old resource version: {resource_version} ({oldest})")
        match_labels, match_fields = parse_label_selector(label_selector), parse_field_selector(field_selector)
        return [(type_, clone(obj)) for rv, type_, obj in self.changes
                if rv > resource_version and obj["kind"] == kind
                and (namespace is None or obj["metadata"].get("namespace") == namespace)
                and match_labels(obj["metadata"].get("labels") or {}) and match_fields(obj)]

    def _find(self, spec: Kind, namespace: str | None, name: str) -> dict | None:
        return self._objects[spec.kind].get(((namespace or "") if spec.namespaced else "", name))

    def _require(self, spec: Kind, namespace: str | None, name: str) -> dict:
        obj = self._find(spec, namespace, name)
        if obj is None:
            raise ApiError(404, "NotFound", f'{spec.qualified} "{name}" not found',
                           {"name": name, "group": spec.group, "kind": spec.plural})
        return obj

    # ---- writing ----------------------------------------------------------------------------
    def create(self, obj: dict, *, dry_run: bool = False, field_manager: str | None = None,
               _operation: str = "Update") -> dict:
        with self.lock:
            spec = kind_for(obj.get("apiVersion"), obj.get("kind"))
            new = clone(obj)
            new["apiVersion"], new["kind"] = spec.api_version, spec.kind
            meta = new.setdefault("metadata", {})
            if not isinstance(meta, dict):
                raise ApiError(400, "BadRequest", "metadata must be an object")
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + self.random_suffix()
            name = meta.get("name")
            if not name:
                raise ApiError(422, "Invalid", f"{spec.kind} is invalid: metadata.name: Required value: "
                               "name or generateName is required",
                               _details(spec, "", [("FieldValueRequired", "metadata.name", "Required value")]))
            if spec.namespaced:
                meta["namespace"] = meta.get("namespace") or "default"
                if self._find(KINDS["Namespace"], None, meta["namespace"]) is None:
                    raise ApiError(404, "NotFound", f'namespaces "{meta["namespace"]}" not found',
                                   {"name": meta["namespace"], "kind": "namespaces"})
            else:
                meta.pop("namespace", None)
            if self._find(spec, meta.get("namespace"), name) is not None:
                raise ApiError(409, "AlreadyExists", f'{spec.qualified} "{name}" already exists',
                               {"name": name, "group": spec.group, "kind": spec.plural})
            for key in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation",
                        "deletionTimestamp", "selfLink"):
                meta.pop(key, None)
            validation.default(new)
            validation.validate(new, None)
            if spec.kind == "Job":
                _validate_job(new, None)
            meta["uid"] = self.new_uid()
            meta["creationTimestamp"] = rfc3339(self.clock.now())
            if spec.kind == "Job":
                _default_job(new)
            if spec.has_generation:
                meta["generation"] = 1
            if spec.has_status:
                new["status"] = validation.initial_status(new)
            update_managed_fields(new, None, field_manager or "unknown", _operation, self.clock.now())
            if dry_run:
                return new
            return self._store(new)

    def replace(self, obj: dict, *, dry_run: bool = False, field_manager: str | None = None,
                subresource: str | None = None) -> dict:
        with self.lock:
            spec = kind_for(obj.get("apiVersion"), obj.get("kind"))
            meta = obj.get("metadata") or {}
            current = self._require(spec, meta.get("namespace") or ("default" if spec.namespaced else None),
                                    meta.get("name", ""))
            return self._update(spec, current, clone(obj), dry_run, field_manager, subresource, "Update")

    def patch(self, api_version: str, kind: str, namespace: str | None, name: str, patch: Any, *,
              patch_type: str = "merge", dry_run: bool = False, field_manager: str | None = None,
              subresource: str | None = None) -> dict:
        with self.lock:
            spec = kind_for(api_version, kind)
            current = self._require(spec, namespace, name)
            try:
                if patch_type == "merge":
                    if not isinstance(patch, dict):
                        raise PatchError("a JSON merge patch for an object must be a JSON object")
                    new = merge_patch(current, patch)
                elif patch_type == "strategic":
                    if not isinstance(patch, dict):
                        raise PatchError("a strategic merge patch must be a JSON object")
                    new = strategic_merge_patch(current, patch)
                elif patch_type == "json":
                    new = json_patch(current, patch)
                else:
                    raise ApiError(415, "UnsupportedMediaType", f"patch type {patch_type!r} is not supported; "
                                   "use merge, strategic or json")
            except PatchError as e:
                raise ApiError(422 if patch_type == "json" else 400, "Invalid" if patch_type == "json" else "BadRequest",
                               f"{spec.qualified} \"{name}\": cannot apply {patch_type} patch: {e}") from None
            if not isinstance(new, dict):
                raise ApiError(400, "BadRequest", f"{spec.qualified} \"{name}\": the patch replaced the whole object")
            return self._update(spec, current, new, dry_run, field_manager, subresource, "Update")

    def apply(self, obj: dict, *, field_manager: str, force: bool = False, dry_run: bool = False) -> dict:
        """Server-side apply: create `obj` or merge it in, owned by `field_manager` (operation Apply);
        409 Conflict when it would change fields another manager owns, unless `force`."""
        with self.lock:
            if not field_manager:
                raise ApiError(400, "BadRequest", "PatchOptions.meta.k8s.io is invalid: fieldManager: Required value: "
                               "is required for apply patch")
            spec = kind_for(obj.get("apiVersion"), obj.get("kind"))
            meta = obj.get("metadata") or {}
            if not meta.get("name"):
                raise ApiError(400, "BadRequest", f"{spec.kind}: metadata.name is required for apply")
            namespace = (meta.get("namespace") or "default") if spec.namespaced else None
            current = self._find(spec, namespace, meta["name"])
            if current is None:
                return self.create(obj, dry_run=dry_run, field_manager=field_manager, _operation="Apply")
            applied = clone(obj)
            applied.setdefault("metadata", {}).pop("managedFields", None)
            merged, managed = fields.apply(current, applied, field_manager, force=force, now=self.clock.now())
            return self._update(spec, current, merged, dry_run, field_manager, None, "Apply", managed_fields=managed)

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str, *, dry_run: bool = False,
               preconditions: dict | None = None) -> dict:
        with self.lock:
            spec = kind_for(api_version, kind)
            current = self._require(spec, namespace, name)
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != current["metadata"]["uid"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {spec.qualified} "{name}": '
                               f'Precondition failed: UID in precondition: {pre["uid"]}, UID in object meta: '
                               f'{current["metadata"]["uid"]}', _conflict(spec, name))
            if pre.get("resourceVersion") and pre["resourceVersion"] != current["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {spec.qualified} "{name}": '
                               f'Precondition failed: ResourceVersion in precondition: {pre["resourceVersion"]}, '
                               f'ResourceVersion in object meta: {current["metadata"]["resourceVersion"]}',
                               _conflict(spec, name))
            gone = clone(current)
            if not dry_run:
                outer, self._reconciling = getattr(self, "_reconciling", False), True  # reconcile once, below
                try:
                    self._remove(spec, current)
                    if spec.kind == "Pod":
                        for c in current["spec"].get("containers") or []:
                            self._record_event(current, "Normal", "Killing", f"Stopping container {c['name']}",
                                               "kubelet")
                finally:
                    self._reconciling = outer
                self._reconcile()
            if spec.kind == "Pod":
                return gone
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {"name": name, "group": spec.group, "kind": spec.plural,
                                "uid": current["metadata"]["uid"]}}

    # ---- the write path ---------------------------------------------------------------------
    def _update(self, spec: Kind, current: dict, new: dict, dry_run: bool, field_manager: str | None,
                subresource: str | None, operation: str, copy_result: bool = True,
                managed_fields: list | None = None) -> dict:
        name = current["metadata"]["name"]
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", f'{spec.qualified} "{name}": metadata must be an object')
        if new.get("kind", spec.kind) != spec.kind or new.get("apiVersion", spec.api_version) != spec.api_version:
            raise ApiError(400, "BadRequest", f'{spec.qualified} "{name}": kind/apiVersion cannot change '
                           f'(got {new.get("apiVersion")} {new.get("kind")})')
        new["apiVersion"], new["kind"] = spec.api_version, spec.kind
        rv = meta.get("resourceVersion")
        if rv and rv != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {spec.qualified} "{name}": the object '
                           "has been modified; please apply your changes to the latest version and try again",
                           _conflict(spec, name))
        if meta.get("uid") and meta["uid"] != current["metadata"]["uid"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {spec.qualified} "{name}": '
                           f'Precondition failed: UID in precondition: {meta["uid"]}, UID in object meta: '
                           f'{current["metadata"]["uid"]}', _conflict(spec, name))
        if meta.get("name", name) != name or (spec.namespaced and meta.get("namespace", current["metadata"]["namespace"])
                                               != current["metadata"]["namespace"]):
            raise ApiError(400, "BadRequest", f'{spec.qualified} "{name}": metadata.name and metadata.namespace '
                           "must match the object addressed")
        # System-owned metadata always comes from the stored object.
        for key in ("uid", "creationTimestamp", "generation", "namespace", "name", "managedFields"):
            if key in current["metadata"]:
                meta[key] = current["metadata"][key]
            else:
                meta.pop(key, None)
        meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        if spec.has_status:
            if subresource == "status":
                # Only status may change through the status subresource.
                status = new.get("status")
                new = clone(current)
                new["status"] = status
                meta = new["metadata"]
            else:
                new["status"] = clone(current.get("status", {}))
        validation.default(new)
        validation.validate(new, current)
        if spec.kind == "Job":
            _default_job(new)
            _validate_job(new, current)
        if _sans_managed(new) == _sans_managed(current):
            return clone(current) if copy_result else current  # a no-op write does not bump resourceVersion, as in Kubernetes
        if spec.has_generation and _body(new) != _body(current):
            meta["generation"] = current["metadata"].get("generation", 1) + 1
        if managed_fields is not None:
            meta["managedFields"] = managed_fields
        else:
            update_managed_fields(new, current, field_manager or "unknown", operation, self.clock.now(), subresource)
        if dry_run:
            return new
        return self._store(new, copy_result)

    def _store(self, obj: dict, copy_result: bool = True) -> dict:
        spec = KINDS[obj["kind"]]
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        before = self._objects[spec.kind].get(key)
        if spec.kind in ("Pod", "ReplicaSet") and (
                before is None or before["metadata"].get("ownerReferences") != obj["metadata"].get("ownerReferences")):
            self.ownership_version += 1
        self.changes.append((self._rv, "MODIFIED" if before is not None else "ADDED", obj))
        self._objects[spec.kind][key] = obj
        self._dirty = True
        self.changed.notify_all()
        self._reconcile()
        return clone(self._objects[spec.kind][key]) if copy_result else self._objects[spec.kind][key]

    def _reconcile(self) -> None:
        """Run the controllers after a write from outside; their own writes do not recurse."""
        if getattr(self, "_reconciling", False):
            return
        self._reconciling = True
        try:
            controllers.reconcile(self)
        finally:
            self._reconciling = False
        self.autosave()

    def _remove(self, spec: Kind, obj: dict) -> None:
        meta = obj["metadata"]
        self._objects[spec.kind].pop((meta.get("namespace", ""), meta["name"]), None)
        self.ownership_version += spec.kind in ("Pod", "ReplicaSet")
        self._rv += 1
        self._dirty = True
        self.changes.append((self._rv, "DELETED", {**obj, "metadata": {**meta, "resourceVersion": str(self._rv)}}))
        self.changed.notify_all()
        # Garbage collection: dependents go with their owner (background propagation).
        uid = meta["uid"]
        for kind, objects in self._objects.items():
            for key, other in list(objects.items()):
                owners = other["metadata"].get("ownerReferences") or []
                in_namespace = spec.kind == "Namespace" and other["metadata"].get("namespace") == meta["name"]
                if (in_namespace or any(o.get("uid") == uid for o in owners)) and key in objects:
                    self._remove(KINDS[kind], other)

    # Controllers write through these, with their own field manager, never through dry-run.
    def controller_write(self, obj: dict, manager: str, *, subresource: str | None = None) -> dict:
        """Write `obj` (the caller's own copy, which it hands over) and return the stored object."""
        with self.lock:
            return self._controller_write(obj, manager, subresource=subresource)

    def _controller_write(self, obj: dict, manager: str, *, subresource: str | None = None) -> dict:
        spec = KINDS[obj["kind"]]
        current = self._find(spec, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if current is None:
            return self.create(obj, field_manager=manager)
        obj["metadata"].pop("resourceVersion", None)
        return self._update(spec, current, obj, False, manager, subresource, "Update", copy_result=False)

    def controller_delete(self, obj: dict) -> None:
        with self.lock:
            self._controller_delete(obj)

    def _controller_delete(self, obj: dict) -> None:
        spec = KINDS[obj["kind"]]
        current = self._find(spec, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if current is not None:
            self._remove(spec, current)

    def objects(self, kind: str, namespace: str | None = None) -> list[dict]:
        """Live (not copied) objects of one kind, for controllers inside the lock."""
        objects = self._objects[kind]
        return [objects[key] for key in sorted(objects) if namespace is None or key[0] == namespace]

    # ---- identities -------------------------------------------------------------------------
    def new_uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def random_suffix(self, n: int = 5) -> str:
        # Kubernetes' alphabet for generated names: no vowels, no look-alike digits.
        return "".join(self.rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(n))

    # ---- time -------------------------------------------------------------------------------
    def tick(self, seconds: float, *, step: float = 15.0) -> None:
        """Advance simulated time by `seconds`, running controllers and the workload model every
        `step` simulated seconds (HPA reconcile, container restarts, metrics)."""
        with self.lock:
            remaining = float(seconds)
            while remaining > 1e-9:
                dt = min(step, remaining)
                self.clock.advance(dt)
                remaining -= dt
                self._reconciling = True
                try:
                    controllers.tick(self, dt)
                finally:
                    self._reconciling = False
            self.autosave()

    # ---- persistence ------------------------------------------------------------------------
    def autosave(self) -> None:
        """Save after writes, at most once per `autosave_interval` wall seconds (a burst of writes
        costs one save; `save()` and `ApiServer.stop()` always write)."""
        if self.state_file and self._dirty and time.monotonic() - self._saved_at >= self.autosave_interval:
            self.save()

    def save(self) -> Path | None:
        """Write the whole state to `state_file` atomically (temp file, fsync, rename)."""
        with self.lock:
            if not self.state_file:
                return None
            version, internal, gauss = self.rng.getstate()
            state = {"version": STATE_VERSION, "clock": self.clock.now(), "resourceVersion": self._rv,
                     "seed": self.seed, "rng": [version, list(internal), gauss], "sim": self.sim,
                     "objects": [objs[k] for objs in self._objects.values() for k in sorted(objs)]}
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_name(self.state_file.name + ".tmp")
            with open(tmp, "w") as f:
                json.dump(state, f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.state_file)
            self._dirty = False
            self._saved_at = time.monotonic()
            return self.state_file

    def load(self) -> None:
        with self.lock:
            try:
                state = json.loads(self.state_file.read_text())
            except (OSError, ValueError) as e:
                raise AfterfixError(f"{self.state_file}: cannot read the simulator state ({e}); "
                                    "delete the file to start from an empty cluster") from None
            if state.get("version") != STATE_VERSION:
                raise AfterfixError(f"{self.state_file}: state version {state.get('version')} is not "
                                    f"{STATE_VERSION}; delete the file to start from an empty cluster")
            self.clock.set(state["clock"])
            self._rv = int(state["resourceVersion"])
            self.seed = state.get("seed", self.seed)
            version, internal, gauss = state["rng"]
            self.rng.setstate((version, tuple(internal), gauss))
            self.sim = state.get("sim", {})
            self._objects = {k: {} for k in KINDS}
            self.ownership_version += 1
            for obj in state["objects"]:
                meta = obj["metadata"]
                self._objects[obj["kind"]][(meta.get("namespace", ""), meta["name"])] = obj
            self._dirty = False

    # ---- events -----------------------------------------------------------------------------
    def record_event(self, obj: dict, type_: str, reason: str, message: str, component: str) -> None:
        """Record a core/v1 Event about `obj`; a repeat of the same reason and message counts up."""
        with self.lock:
            self._record_event(obj, type_, reason, message, component)

    def _record_event(self, obj: dict, type_: str, reason: str, message: str, component: str) -> None:
        meta = obj["metadata"]
        ns = meta.get("namespace") or "default"
        now = rfc3339(self.clock.now())
        for ev in self.objects("Event", ns):
            io = ev.get("involvedObject", {})
            if io.get("uid") == meta["uid"] and ev.get("reason") == reason and ev.get("message") == message:
                ev = clone(ev)
                ev["count"] = ev.get("count", 1) + 1
                ev["lastTimestamp"] = now
                self.controller_write(ev, component)
                return
        self.controller_write({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{self.rng.getrandbits(64):016x}", "namespace": ns},
            "involvedObject": {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"],
                               "namespace": ns, "uid": meta["uid"], "resourceVersion": meta.get("resourceVersion")},
            "reason": reason, "message": message, "type": type_, "count": 1,
            "firstTimestamp": now, "lastTimestamp": now,
            "source": {"component": component}, "reportingComponent": component, "reportingInstance": "",
        }, component)
        events = self.objects("Event", ns)
        if len(events) > 500:  # events expire in Kubernetes; keep the newest so the state stays small
            for ev in sorted(events, key=lambda e: int(e["metadata"]["resourceVersion"]))[: len(events) - 500]:
                self.controller_delete(ev)


def _default_job(job: dict) -> None:
    """What the API server fills in on a Job: counts, and a selector on labels it adds to the pod
    template that name this Job's uid (so its pods are told from any other Job's)."""
    spec = job.get("spec")
    if not isinstance(spec, dict):
        return
    for key, value in (("parallelism", 1), ("completions", 1), ("backoffLimit", 6), ("completionMode", "NonIndexed"),
                       ("suspend", False), ("manualSelector", False), ("podReplacementPolicy", "TerminatingOrFailed")):
        spec.setdefault(key, value)
    uid, name = job["metadata"]["uid"], job["metadata"]["name"]
    spec.setdefault("selector", {"matchLabels": {JOB_UID_LABEL: uid}})
    template = spec.get("template")
    if isinstance(template, dict):
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        for key, value in ((JOB_UID_LABEL, uid), (JOB_NAME_LABEL, name), ("controller-uid", uid), ("job-name", name)):
            labels.setdefault(key, value)


def _validate_job(job: dict, old: dict | None) -> None:
    """A Job's pod template must not restart its pods forever, and cannot change once created."""
    name = job["metadata"].get("name", "")
    spec = job.get("spec")
    causes = []
    template = spec.get("template") if isinstance(spec, dict) else None
    pod = template.get("spec") if isinstance(template, dict) else None
    if not isinstance(pod, dict):
        causes.append(("FieldValueRequired", "spec.template.spec", "Required value"))
    else:
        if not isinstance(pod.get("containers"), list) or not pod["containers"]:
            causes.append(("FieldValueRequired", "spec.template.spec.containers", "Required value"))
        else:
            for i, c in enumerate(pod["containers"]):
                if not isinstance(c, dict) or not c.get("name") or not c.get("image"):
                    causes.append(("FieldValueRequired", f"spec.template.spec.containers[{i}]",
                                   "Required value: name and image"))
        if pod.get("restartPolicy") not in JOB_RESTART_POLICIES:
            causes.append(("FieldValueNotSupported", "spec.template.spec.restartPolicy",
                           f'Unsupported value: {pod.get("restartPolicy")!r}: supported values: "OnFailure", "Never"'))
    if old is not None and isinstance(spec, dict):
        for field in ("template", "selector", "completions", "completionMode"):
            if spec.get(field) != (old.get("spec") or {}).get(field):
                causes.append(("FieldValueInvalid", f"spec.{field}", "Invalid value: field is immutable"))
    if causes:
        kind = KINDS["Job"]
        raise ApiError(422, "Invalid", f'Job.batch "{name}" is invalid: '
                       + ", ".join(f"{f}: {m}" for _, f, m in causes), _details(kind, name, causes))


def _body(obj: dict) -> dict:
    """Everything but metadata and status: what `generation` counts changes of."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _sans_managed(obj: dict) -> dict:
    meta = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
    return {**obj, "metadata": meta}


def _conflict(spec: Kind, name: str) -> dict:
    return {"name": name, "group": spec.group, "kind": spec.plural}


def _details(spec: Kind, name: str, causes: list[tuple[str, str, str]]) -> dict:
    return {"name": name, "group": spec.group, "kind": spec.kind,
            "causes": [{"reason": r, "field": f, "message": m} for r, f, m in causes]}
