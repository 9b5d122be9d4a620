"""Defaulting and validation for the simulated kinds: the subset of Kubernetes' rules that the
product's writes can break. A refused object raises `ApiError(422, "Invalid")` whose `causes`
name each field, as the real API server does."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

__all__ = ["default", "validate", "initial_status"]

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def default(obj: dict) -> None:
    """Fill the defaults the API server would (outside pod templates, whose hash must not move)."""
    kind, spec = obj["kind"], obj.get("spec")
    if kind == "Namespace":
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    if kind == "Secret":
        obj.setdefault("type", "Opaque")
        # stringData is write-only: merged into data (base64) and never stored, as the API server does.
        plain = obj.pop("stringData", None)
        if isinstance(plain, dict):
            data = obj.get("data") if isinstance(obj.get("data"), dict) else {}
            for key, value in plain.items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            obj["data"] = data
    if not isinstance(spec, dict):
        return
    if kind == "Deployment":
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        spec.setdefault("strategy", {"type": "RollingUpdate",
                                     "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    elif kind == "ReplicaSet":
        spec.setdefault("replicas", 1)
    elif kind == "HorizontalPodAutoscaler":
        spec.setdefault("minReplicas", 1)
    elif kind == "Pod":
        spec.setdefault("restartPolicy", "Always")


def initial_status(obj: dict) -> dict:
    return {"Namespace": {"phase": "Active"}, "Pod": {"phase": "Pending"},
            "HorizontalPodAutoscaler": {"currentReplicas": 0, "desiredReplicas": 0}}.get(obj["kind"], {})


def validate(obj: dict, old: dict | None) -> None:
    causes: list[tuple[str, str, str]] = []
    meta = obj["metadata"]
    name = meta.get("name", "")
    if not isinstance(name, str) or len(name) > 253 or not _NAME.match(name):
        causes.append(("FieldValueInvalid", "metadata.name",
                       f"Invalid value: {name!r}: a lowercase RFC 1123 subdomain must consist of lower case "
                       "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"))
    for field in ("labels", "annotations"):
        values = meta.get(field)
        if values is None:
            continue
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            causes.append(("FieldValueInvalid", f"metadata.{field}", "Invalid value: must be a map of string to string"))
        elif field == "labels":
            for k, v in values.items():
                if len(v) > 63 or not _LABEL_VALUE.match(v):
                    causes.append(("FieldValueInvalid", f"metadata.labels.{k}", f"Invalid value: {v!r}: a valid label value"
                                   " must be 63 characters or less and begin and end with an alphanumeric character"))
    check = _CHECKS.get(obj["kind"])
    if check:
        check(obj, old, causes)
    if causes:
        from afterfix.nightshift.cluster import KINDS, ApiError

        spec = KINDS[obj["kind"]]
        text = "; ".join(f"{f}: {m}" for _, f, m in causes)
        raise ApiError(422, "Invalid", f'{spec.kind} "{name}" is invalid: {text}',
                       {"name": name, "group": spec.group, "kind": spec.kind,
                        "causes": [{"reason": r, "field": f, "message": m} for r, f, m in causes]})


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _pod_spec(spec: Any, where: str, causes: list) -> None:
    containers = spec.get("containers") if isinstance(spec, dict) else None
    if not isinstance(containers, list) or not containers:
        causes.append(("FieldValueRequired", f"{where}.containers", "Required value"))
        return
    seen = set()
    for i, c in enumerate(containers):
        if not isinstance(c, dict) or not c.get("name"):
            causes.append(("FieldValueRequired", f"{where}.containers[{i}].name", "Required value"))
            continue
        if c["name"] in seen:
            causes.append(("FieldValueDuplicate", f"{where}.containers[{i}].name", f"Duplicate value: {c['name']!r}"))
        seen.add(c["name"])
        if not c.get("image"):
            causes.append(("FieldValueRequired", f"{where}.containers[{i}].image", "Required value"))


def _replicas(spec: dict, causes: list) -> None:
    replicas = spec.get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        causes.append(("FieldValueInvalid", "spec.replicas",
                       f"Invalid value: {replicas!r}: must be greater than or equal to 0"))


def _workload(obj: dict, old: dict | None, causes: list) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        causes.append(("FieldValueRequired", "spec", "Required value"))
        return
    _replicas(spec, causes)
    selector = _get(spec, "selector.matchLabels")
    if not isinstance(selector, dict) or not selector:
        causes.append(("FieldValueRequired", "spec.selector", "Required value"))
    else:
        labels = _get(spec, "template.metadata.labels") or {}
        if not isinstance(labels, dict) or any(labels.get(k) != v for k, v in selector.items()):
            causes.append(("FieldValueInvalid", "spec.template.metadata.labels",
                           "Invalid value: `selector` does not match template `labels`"))
    if old is not None and obj["kind"] == "Deployment" and _get(old, "spec.selector") != spec.get("selector"):
        causes.append(("FieldValueInvalid", "spec.selector", "Invalid value: field is immutable"))
    _pod_spec(_get(spec, "template.spec"), "spec.template.spec", causes)
    limit = spec.get("revisionHistoryLimit")
    if obj["kind"] == "Deployment" and (not isinstance(limit, int) or limit < 0):
        causes.append(("FieldValueInvalid", "spec.revisionHistoryLimit",
                       f"Invalid value: {limit!r}: must be greater than or equal to 0"))


def _hpa(obj: dict, old: dict | None, causes: list) -> None:
    spec = obj.get("spec") or {}
    ref = spec.get("scaleTargetRef") or {}
    if not ref.get("kind") or not ref.get("name"):
        causes.append(("FieldValueRequired", "spec.scaleTargetRef", "Required value: kind and name"))
    lo, hi = spec.get("minReplicas"), spec.get("maxReplicas")
    if not isinstance(hi, int) or hi < 1:
        causes.append(("FieldValueInvalid", "spec.maxReplicas", f"Invalid value: {hi!r}: must be greater than or equal to 1"))
    if not isinstance(lo, int) or lo < 1:
        causes.append(("FieldValueInvalid", "spec.minReplicas", f"Invalid value: {lo!r}: must be greater than or equal to 1"))
    elif isinstance(hi, int) and lo > hi:
        causes.append(("FieldValueInvalid", "spec.maxReplicas",
                       f"Invalid value: {hi}: must be greater than or equal to `minReplicas`"))
    for i, m in enumerate(spec.get("metrics") or []):
        if not isinstance(m, dict) or m.get("type") not in ("Resource", "Pods", "Object", "External", "ContainerResource"):
            causes.append(("FieldValueInvalid", f"spec.metrics[{i}].type", "Unsupported value"))


def _configmap(obj: dict, old: dict | None, causes: list) -> None:
    data = obj.get("data")
    if data is not None and (not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values())):
        causes.append(("FieldValueInvalid", "data", "Invalid value: must be a map of string to string"))


def _secret(obj: dict, old: dict | None, causes: list) -> None:
    data = obj.get("data")
    if data is None:
        return
    if not isinstance(data, dict):
        causes.append(("FieldValueInvalid", "data", "Invalid value: must be a map of string to base64 string"))
        return
    for key, value in data.items():
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError, ValueError):
            causes.append(("FieldValueInvalid", f"data[{key}]", "Invalid value: not base64 (use stringData for plain text)"))


def _pod(obj: dict, old: dict | None, causes: list) -> None:
    _pod_spec(obj.get("spec"), "spec", causes)


_CHECKS = {"Deployment": _workload, "ReplicaSet": _workload, "HorizontalPodAutoscaler": _hpa,
           "ConfigMap": _configmap, "Secret": _secret, "Pod": _pod}
