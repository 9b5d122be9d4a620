"""Field diffs: which fields an action changed, from the before and after state it recorded.

    field_diff(before, after) -> list[FieldChange]
    parse_state(text) -> (value, parsed)
    action_diffs(store, incident_id=None, run_id=None) -> pandas.DataFrame, one row per changed field
    field_label(path) -> how a reviewer reads a path ("payments env DB_POOL_SIZE")

Agents record state in two shapes and both mean the same thing: nested objects
(`{"spec": {"maxReplicas": 2}}`) and flat dotted paths (`{"spec.maxReplicas": 2}`). Both flatten
to the same paths, so a nested before and a flat after still diff field by field. List items are
`[i]`, or `[name=x]` when every item is an object with a distinct `name` (container and env lists),
so inserting one env var does not read as every later one changing.

State comes from traces and is untrusted: text that is not JSON is compared as raw text (one
change at the path `.`), never evaluated, and never an exception.
"""

from __future__ import annotations

import json
import re
from typing import Any

from afterfix.analysis.model import FieldChange

ROOT = "."  # the path of a whole value that is not an object or a list (raw text, a scalar)

_MISSING = object()


def field_label(path: str) -> str:
    """A field as a reviewer reads it: 'payments env DB_POOL_SIZE' for
    'spec.template.spec.containers[name=payments].env[name=DB_POOL_SIZE].value', 'payments image'
    for its image; any other path as it is."""
    m = re.fullmatch(r"spec\.template\.spec\.containers\[name=([^\]]*)\]\.(.+)", path)
    if not m:
        return path
    rest = re.sub(r"^env\[name=([^\]]*)\]\.value$", r"env \1", m.group(2))
    return f"{m.group(1)} {rest}"


def parse_state(value: Any) -> tuple[Any, bool]:
    """A recorded state as data: JSON text parsed, None and non-text values as they are.

    Returns (value, True) when it is data, and (the raw text, False) when it is text that is not
    JSON: callers then compare the raw text rather than guess.
    """
    if value is None or not isinstance(value, (str, bytes)):
        return value, True
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    try:
        return json.loads(text), True
    except ValueError:
        return text, False


def _named_items(items: list) -> bool:
    names = [item.get("name") for item in items if isinstance(item, dict)]
    return (bool(items) and len(names) == len(items) and all(isinstance(n, (str, int)) and not isinstance(n, bool)
                                                               for n in names) and len(set(names)) == len(names))


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf paths of `value` and their values, in the order they appear.

    Dict keys join with dots (a key that holds dots, as in a flat dotted-path dict, is kept as
    it is, so both shapes give the same paths); an empty object or list is a leaf of its own.
    """
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        if not value and prefix:
            out[prefix] = {}
        for key, sub in value.items():
            out.update(flatten(sub, _join(prefix, str(key))))
    elif isinstance(value, (list, tuple)):
        if not value and prefix:
            out[prefix] = []
        named = _named_items(list(value))
        for i, sub in enumerate(value):
            if not named:
                out.update(flatten(sub, f"{prefix}[{i}]"))
                continue
            # The name is in the path already; an item that is only a name is a leaf of its own.
            path, rest = f"{prefix}[name={sub['name']}]", {k: v for k, v in sub.items() if k != "name"}
            if rest:
                out.update(flatten(rest, path))
            else:
                out[path] = sub
    else:
        out[prefix or ROOT] = value
    return out


def _flatten_pair(before: Any, after: Any, prefix: str, old: dict, new: dict) -> None:
    """flatten() of both sides at once, so that a list is keyed by name only where both sides'
    items carry distinct names (else an item would have a different path on each side)."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key in list(before) + [k for k in after if k not in before]:
            _flatten_pair(before.get(key, _MISSING), after.get(key, _MISSING), _join(prefix, str(key)), old, new)
        _empty_leaves(before, after, prefix, old, new, {})
        return
    if isinstance(before, (list, tuple)) and isinstance(after, (list, tuple)) and not (
            _named_items(list(before)) and _named_items(list(after))):
        for i in range(max(len(before), len(after))):
            _flatten_pair(before[i] if i < len(before) else _MISSING, after[i] if i < len(after) else _MISSING,
                          f"{prefix}[{i}]", old, new)
        _empty_leaves(before, after, prefix, old, new, [])
        return
    if before is not _MISSING:
        old.update(flatten(before, prefix))
    if after is not _MISSING:
        new.update(flatten(after, prefix))


def _empty_leaves(before, after, prefix: str, old: dict, new: dict, empty) -> None:
    # An empty object or list is a leaf of its own, as in flatten() (not at the top).
    if prefix and not before:
        old[prefix] = empty
    if prefix and not after:
        new[prefix] = type(empty)()


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values: 2 and 2.0 are the same number, but true is not 1 and "2" is not 2."""
    number = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, number) and isinstance(b, number):
        return a == b
    return type(a) is type(b) and a == b


def field_diff(before: Any, after: Any) -> list[FieldChange]:
    """Every leaf field that differs between `before` and `after`.

    Paths in before's order, then those only after has, in after's order. None on one side means
    no state was recorded there: every field of the other side is added (or removed). A side
    that is not an object or a list (raw text that was not JSON, a scalar) is compared whole, at
    the path `.`.
    """
    if before is None and after is None:
        return []
    containers = (dict, list, tuple)
    whole = (before is not None and not isinstance(before, containers)) or (
        after is not None and not isinstance(after, containers))
    if whole:
        if _same(before, after):
            return []
        change = "added" if before is None else "removed" if after is None else "changed"
        return [FieldChange(ROOT, before, after, change)]
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    _flatten_pair(before if before is not None else _MISSING, after if after is not None else _MISSING, "", old, new)
    changes = []
    for path, value in old.items():
        other = new.get(path, _MISSING)
        if other is _MISSING:
            changes.append(FieldChange(path, value, None, "removed"))
        elif not _same(value, other):
            changes.append(FieldChange(path, value, other, "changed"))
    for path, value in new.items():
        if path not in old:
            changes.append(FieldChange(path, None, value, "added"))
    return changes


def state_diff(before_text: Any, after_text: Any) -> list[FieldChange]:
    """field_diff of two recorded states as stored (JSON text). When either is text that does not
    parse, the change is the raw text of both, at the path `.`."""
    before, ok_before = parse_state(before_text)
    after, ok_after = parse_state(after_text)
    if not (ok_before and ok_after):
        if before_text == after_text:
            return []
        return [FieldChange(ROOT, before_text, after_text,
                            "added" if before_text is None else "removed" if after_text is None else "changed")]
    return field_diff(before, after)


_ACTION_COLUMNS = ["incident_id", "run_id", "action_id", "decision_id", "start_time", "agent_name", "verb", "status",
                   "mutating", "target_kind", "target_namespace", "target_name", "target_uid",
                   "resource_version_before", "resource_version_after"]
DIFF_COLUMNS = _ACTION_COLUMNS + ["path", "before", "after", "change"]


def action_diffs(store, incident_id: str | None = None, run_id: str | None = None):
    """One row per field changed by each recorded action (of one incident, one run, or all), in
    the order the actions started. Actions that recorded no change (no before and after, or the
    same) have no rows. `before` and `after` hold the values as data (numbers stay numbers)."""
    import pandas as pd

    clauses, params = [], []
    if incident_id is not None:
        clauses.append("incident_id = ?")
        params.append(incident_id)
    if run_id is not None:
        clauses.append("run_id = ?")
        params.append(run_id)
    where = " AND ".join(clauses) or "TRUE"
    actions = store.arrow(f"SELECT * FROM actions WHERE {where} ORDER BY start_time, span_id", params).to_pylist()
    rows = []
    for act in actions:
        for ch in state_diff(act["before"], act["after"]):
            rows.append({**{k: act.get(k) for k in _ACTION_COLUMNS},
                         "path": ch.path, "before": ch.before, "after": ch.after, "change": ch.change})
    return pd.DataFrame(rows, columns=DIFF_COLUMNS)
