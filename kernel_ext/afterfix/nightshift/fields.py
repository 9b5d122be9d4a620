"""Field management: which field manager owns which fields (`metadata.managedFields`, FieldsV1),
updated on every write as the API server does, and server-side apply on top of it (apply
patches, ownership conflicts, `force`, removal of fields a manager stopped applying).

A path is a tuple of FieldsV1 keys: `("f:spec", "f:template", "f:spec", "f:containers",
'k:{"name":"app"}', "f:image")`. Lists with a merge key are addressed by key, others whole.
"""

from __future__ import annotations

import json
from typing import Any

from afterfix.nightshift.clock import rfc3339
from afterfix.nightshift.patches import MERGE_KEYS, clone

__all__ = ["update_managed_fields", "field_paths", "fields_to_paths", "paths_to_fields", "apply", "dotted"]

_SKIP_META = {"uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink", "name",
              "namespace", "generateName"}


def field_paths(old: Any, new: Any, prefix: tuple = ()) -> set[tuple]:
    """Leaf paths (in fieldsV1 notation) whose value differs between `old` and `new`."""
    if isinstance(new, dict):
        paths: set[tuple] = set()
        old_d = old if isinstance(old, dict) else {}
        for key, value in new.items():
            if (not prefix and key in ("apiVersion", "kind", "status")) or (prefix == ("f:metadata",) and key in _SKIP_META):
                continue
            paths |= field_paths(old_d.get(key), value, prefix + (f"f:{key}",))
        return paths
    if isinstance(new, list) and prefix and MERGE_KEYS.get(prefix[-1][2:]) and all(isinstance(i, dict) for i in new):
        key = MERGE_KEYS[prefix[-1][2:]]
        old_items = {json.dumps(i.get(key)): i for i in old if isinstance(i, dict)} if isinstance(old, list) else {}
        paths = set()
        for item in new:
            k = json.dumps(item.get(key))
            paths |= field_paths(old_items.get(k), item, prefix + (f"k:{{\"{key}\":{k}}}",))
        return paths
    return {prefix} if old != new and prefix else set()


def paths_to_fields(paths: set[tuple]) -> dict:
    root: dict = {}
    for path in sorted(paths):
        node = root
        for part in path:
            node = node.setdefault(part, {})
    return root


def fields_to_paths(fields: dict, prefix: tuple = ()) -> set[tuple]:
    paths: set[tuple] = set()
    for key, value in fields.items():
        if key == ".":
            continue
        if value:
            paths |= fields_to_paths(value, prefix + (key,))
        else:
            paths.add(prefix + (key,))
    return paths


def update_managed_fields(new: dict, old: dict | None, manager: str, operation: str, now: float,
                          subresource: str | None = None) -> None:
    """Give `manager` ownership of the fields this write changed and take them from the others,
    as server-side field management does for Update operations."""
    if subresource == "status":
        old_s, new_s = {"status": (old or {}).get("status")}, {"status": new.get("status")}
        changed = {("f:status",) + p[1:] for p in field_paths({"x": old_s["status"]}, {"x": new_s["status"]})}
    else:
        changed = field_paths(old, new)
    entries = clone((old or new)["metadata"].get("managedFields") or [])
    api_version = new["apiVersion"]
    kept = []
    for entry in entries:
        paths = fields_to_paths(entry.get("fieldsV1") or {})
        same = entry.get("manager") == manager and entry.get("operation") == operation \
            and entry.get("subresource") == subresource
        if not same:
            paths = {p for p in paths if not any(p[: len(c)] == c or c[: len(p)] == p for c in changed)}
            if paths:
                entry["fieldsV1"] = paths_to_fields(paths)
                kept.append(entry)
    mine = next((e for e in entries if e.get("manager") == manager and e.get("operation") == operation
                 and e.get("subresource") == subresource), None)
    owned = fields_to_paths(mine.get("fieldsV1") or {}) if mine else set()
    owned |= changed
    if owned:
        entry = {"manager": manager, "operation": operation, "apiVersion": api_version,
                 "time": rfc3339(now), "fieldsType": "FieldsV1", "fieldsV1": paths_to_fields(owned)}
        if subresource:
            entry["subresource"] = subresource
        kept.append(entry)
    new["metadata"]["managedFields"] = kept


# ---- server-side apply ------------------------------------------------------------------------------
_MISSING = object()


def _key_of(part: str) -> dict:
    return json.loads(part[2:])


def value_at(obj: Any, path: tuple) -> Any:
    """The value at a FieldsV1 path, or a sentinel when it is absent."""
    for part in path:
        if part.startswith("f:") and isinstance(obj, dict) and part[2:] in obj:
            obj = obj[part[2:]]
        elif part.startswith("k:") and isinstance(obj, list):
            key = _key_of(part)
            obj = next((i for i in obj if isinstance(i, dict) and all(i.get(k) == v for k, v in key.items())), _MISSING)
            if obj is _MISSING:
                return _MISSING
        else:
            return _MISSING
    return obj


def _delete_at(obj: Any, path: tuple) -> None:
    parent = value_at(obj, path[:-1])
    last = path[-1]
    if last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)
    elif last.startswith("k:") and isinstance(parent, list):
        key = _key_of(last)
        parent[:] = [i for i in parent if not (isinstance(i, dict) and all(i.get(k) == v for k, v in key.items()))]


def dotted(path: tuple) -> str:
    """`.spec.template.spec.containers[name="app"].image`, as conflict messages spell a path."""
    out = ""
    for part in path:
        if part.startswith("f:"):
            out += "." + part[2:]
        else:
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in _key_of(part).items()) + "]"
    return out


def _overlaps(path: tuple, owned: set[tuple]) -> bool:
    return any(p[: len(path)] == path or path[: len(p)] == p for p in owned)


def apply(current: dict, applied: dict, manager: str, *, force: bool, now: float) -> tuple[dict, list[dict]]:
    """Server-side apply of `applied` by `manager` onto `current`: returns the merged object and
    its new managedFields, or raises a 409 Conflict listing the fields other managers own with
    different values (unless `force`, which takes them over)."""
    from afterfix.nightshift.cluster import ApiError
    from afterfix.nightshift.patches import strategic_merge_patch

    applied_paths = field_paths(None, applied)
    entries = clone(current["metadata"].get("managedFields") or [])
    mine = next((e for e in entries if e.get("manager") == manager and e.get("operation") == "Apply"
                 and not e.get("subresource")), None)
    others = [e for e in entries if e is not mine]
    conflicts: dict[tuple, list[dict]] = {}
    for path in sorted(applied_paths):
        if value_at(current, path) == value_at(applied, path):
            continue  # same value: ownership is shared, no conflict
        owners = [e for e in others if _overlaps(path, fields_to_paths(e.get("fieldsV1") or {}))]
        if owners:
            conflicts[path] = owners
    if conflicts and not force:
        causes = [{"reason": "FieldManagerConflict", "field": dotted(p),
                   "message": f'conflict with "{e["manager"]}"' + (f' using {e["apiVersion"]}' if e.get("apiVersion") else "")}
                  for p, owners in conflicts.items() for e in owners]
        listing = "\n".join(f"- {c['message']}: {c['field']}" for c in causes)
        raise ApiError(409, "Conflict", f"Apply failed with {len(causes)} conflict{'s' if len(causes) > 1 else ''}: "
                       f"{listing}\n(re-apply with force to take these fields over, or leave them out of the "
                       "applied configuration)",
                       {"name": current["metadata"]["name"], "kind": current["kind"], "causes": causes})
    merged = strategic_merge_patch(current, applied)
    # Fields this manager applied before and no longer applies are removed, unless someone else owns them.
    dropped = fields_to_paths(mine.get("fieldsV1") or {}) - applied_paths if mine else set()
    for path in sorted(dropped, key=len, reverse=True):
        if not any(_overlaps(path, fields_to_paths(e.get("fieldsV1") or {})) for e in others) \
                and not _overlaps(path, applied_paths):
            _delete_at(merged, path)
    kept = []
    for entry in others:
        paths = fields_to_paths(entry.get("fieldsV1") or {})
        paths = {p for p in paths if not any(p[: len(c)] == c or c[: len(p)] == p for c in conflicts)}
        if paths:
            entry["fieldsV1"] = paths_to_fields(paths)
            kept.append(entry)
    if applied_paths:
        kept.append({"manager": manager, "operation": "Apply", "apiVersion": applied.get("apiVersion", current["apiVersion"]),
                     "time": rfc3339(now), "fieldsType": "FieldsV1", "fieldsV1": paths_to_fields(applied_paths)})
    return merged, kept
