"""Bundled rollback: a revert that also undid changes nobody asked it to undo.

A Deployment rollback restores a whole pod template: the bad image goes, and so does every other
field the same rollout carried, such as a connection-pool fix. The finding names each field the
rollback changed beyond the one it was for, with who set that field and when: from the
`managedFields` in the tool results the agent read before acting (what `kubectl get
--show-managed-fields` shows), else from earlier recorded actions on the same object.
"""

from __future__ import annotations

import json
import re

import pandas as pd

from afterfix.analysis.diffs import field_diff, field_label as label
from afterfix.analysis.findings import _common as c
from afterfix.analysis.model import Evidence, Finding

REVERT_VERBS = {"rollback", "undo", "revert", "rollout_undo"}
# Fields a revision change always moves, which say nothing about what the rollout carried.
BOOKKEEPING = re.compile(r"(^|\.)(revision|generation|resourceVersion|pod-template-hash|observedGeneration)$"
                         r"|deployment\.kubernetes\.io/|^metadata\.")


def _tokens(path: str) -> list[str]:
    """'spec.template.spec.containers[name=app].env[name=DB_POOL_SIZE].value' -> the names along it."""
    out = []
    for part in re.findall(r"\[name=([^\]]*)\]|\[(\d+)\]|([^.\[\]]+)", path):
        name, index, plain = part
        out.append(name or index or plain)
    if len(out) >= 2 and out[-1] == "value":
        out.pop()  # env[name=X].value and env.X name the same field
    return out


def _manager_paths(fields_v1: dict, prefix: tuple = ()) -> list[tuple[str, ...]]:
    """Leaf paths of a FieldsV1 tree as plain names: f:spec -> spec, k:{"name":"x"} -> x."""
    leaves = []
    for key, sub in (fields_v1 or {}).items():
        if key == ".":
            continue
        if key.startswith("f:"):
            name = key[2:]
        elif key.startswith("k:"):
            try:
                spec = json.loads(key[2:])
                name = str(spec.get("name", next(iter(spec.values()), key)))
            except (ValueError, StopIteration, AttributeError):
                name = key
        else:
            name = key
        path = prefix + (name,)
        if isinstance(sub, dict) and any(k != "." for k in sub):
            leaves += _manager_paths(sub, path)
        else:
            leaves.append(path)
    return [p[:-1] if len(p) >= 2 and p[-1] == "value" else p for p in leaves]


def _find_managed_fields(value, name: str):
    """The managedFields of the object called `name` anywhere in a recorded tool result."""
    if isinstance(value, dict):
        if value.get("managedFields") and value.get("name", (value.get("metadata") or {}).get("name")) == name:
            return value["managedFields"]
        for sub in value.values():
            found = _find_managed_fields(sub, name)
            if found:
                return found
    elif isinstance(value, list):
        for sub in value:
            found = _find_managed_fields(sub, name)
            if found:
                return found
    return None


def _owner(path: str, managed: list[dict] | None, earlier: pd.DataFrame) -> dict:
    """Who last set `path` before the rollback, and when."""
    want = _tokens(path)
    best = None
    for entry in managed or []:
        for leaf in _manager_paths(entry.get("fieldsV1") or {}):
            if len(leaf) >= len(want) and list(leaf[-len(want):]) == want:
                if best is None or str(entry.get("time") or "") > str(best.get("time") or ""):
                    best = entry
    if best is not None:
        return {"who": str(best.get("manager") or "unknown"), "when": best.get("time"), "how": "managedFields"}
    for _, act in earlier.iloc[::-1].iterrows():
        if any(ch.path == path or _tokens(ch.path)[-len(want):] == want for ch in field_diff(c.loads(act["before"]), c.loads(act["after"]))):
            return {"who": act["agent_name"] or act["field_manager"] or "unknown", "when": c.when(act["start_time"]),
                    "how": f"recorded action {act['action_id']}"}
    return {"who": None, "when": None, "how": "not recorded"}


def _intended(changes, decision_text: str):
    """The field the rollback was for: the one whose bad value the decision names (as a whole
    word; the longest such value wins, so a version string beats a stray "20"), else the image."""
    named = []
    for ch in changes:
        value = str(ch.before) if isinstance(ch.before, (str, int, float)) else ""
        if value and re.search(rf"(?<![\w.:/-]){re.escape(value)}(?![\w.:/-])", decision_text):
            named.append((len(value), ch))
    if named:
        return max(named, key=lambda pair: pair[0])[1]
    return next((ch for ch in changes if _tokens(ch.path)[-1:] == ["image"]), None)


def detect(scope) -> list[Finding]:
    actions = scope.actions
    if actions.empty:
        return []
    reverts = actions[actions["mutating"] & actions["verb"].isin(REVERT_VERBS) & (actions["status"] == "applied")]
    bundled = []
    for act in reverts.to_dict("records"):
        changes = [ch for ch in field_diff(c.loads(act["before"]), c.loads(act["after"])) if not BOOKKEEPING.search(ch.path)]
        if len(changes) >= 2:
            bundled.append((act, changes))
    if not bundled:
        return []
    context = _Context(scope.store, [act for act, _ in bundled])
    return [_finding(context, act, changes) for act, changes in bundled]


class _Context:
    """What the findings read beyond the actions, for every bundled rollback at once: the tool
    results of their runs, earlier changes to their objects, and their decisions."""

    def __init__(self, store, acts: list[dict]):
        self.results = store.query("""SELECT run_id, start_time, result FROM tool_calls
                                      WHERE list_contains(?::VARCHAR[], run_id) AND result IS NOT NULL
                                      ORDER BY start_time DESC""", [sorted({a["run_id"] for a in acts})])
        self.actions = store.query("""SELECT * FROM actions WHERE list_contains(?::VARCHAR[], target_name) AND mutating
                                      ORDER BY start_time""", [sorted({a["target_name"] for a in acts if isinstance(a["target_name"], str)})])
        self.decisions = store.query("""SELECT decision_id, question, reason, inputs FROM decisions
                                        WHERE list_contains(?::VARCHAR[], decision_id)""",
                                     [sorted({a["decision_id"] for a in acts if isinstance(a["decision_id"], str)})])

    def reads(self, act) -> list:
        """What the rollback's run read up to it, newest first."""
        r = self.results
        return list(r.loc[(r["run_id"] == act["run_id"]) & (r["start_time"] <= act["start_time"]), "result"])

    def earlier(self, act) -> pd.DataFrame:
        """Earlier changes to the same object, oldest first."""
        a = self.actions
        return a[(a["target_namespace"] == act["target_namespace"]) & (a["target_name"] == act["target_name"])
                 & (a["start_time"] < act["start_time"])].reset_index(drop=True)

    def decision_text(self, act) -> str:
        d = self.decisions[self.decisions["decision_id"] == act["decision_id"]]
        return " ".join(str(v) for v in d.iloc[0, 1:].tolist()) if not d.empty else ""


def _finding(context: _Context, act, changes) -> Finding:
    managed = None
    for text in context.reads(act):
        managed = _find_managed_fields(c.loads(text), act["target_name"])
        if managed:
            break
    earlier = context.earlier(act)
    intended = _intended(changes, context.decision_text(act))
    target = c.target(act)
    fields, lines = [], []
    for ch in changes:
        owner = _owner(ch.path, managed, earlier)
        meant = ch is intended
        fields.append({"path": ch.path, "label": label(ch.path), "before": ch.before, "after": ch.after,
                       "intended": meant, **owner})
        if not meant:
            who = f"set by {owner['who']} at {owner['when']}" if owner["who"] else "who set it is not recorded"
            lines.append(f"{label(ch.path)} {ch.before!r} → {ch.after!r} ({who})")
    evidence = [Evidence("action", f"{act['verb']} {act['target_kind']} {target} at {c.when(act['start_time'])}",
                         time=c.py_time(act["start_time"]), span_id=act["span_id"], trace_id=act["trace_id"],
                         run_id=act["run_id"])]
    evidence += [Evidence("action", f"{f['label']}: {f['before']!r} → {f['after']!r}"
                                    + ("" if f["intended"] else " (also undone)"),
                          time=c.py_time(act["start_time"]), span_id=act["span_id"], trace_id=act["trace_id"],
                          run_id=act["run_id"]) for f in fields]
    aim = f"meant to undo {label(intended.path)} {intended.before!r}" if intended is not None else "meant to undo a bad rollout"
    return Finding(
        kind="bundled_rollback", severity="high",
        title=(f"{act['verb']} of {target} also undid "
               + ", ".join(f"{f['label']} {_short(f['before'])} → {_short(f['after'])}" for f in fields if not f["intended"])),
        explanation=(f"The agent's {act['verb']} of {target} at {c.hhmm(act['start_time'])} was {aim}, and it also "
                     f"reverted: {'; '.join(lines)}. If those were fixes, they are gone now: restore them alone "
                     f"(only those fields: `afterfix rollback {act['action_id']} --fields "
                     + ",".join(_last_name(f["path"]) for f in fields if not f["intended"])
                     + f"` shows the plan), and watch {target} and its dependents until then."),
        time=c.py_time(act["start_time"]), incident_id=act["incident_id"], run_ids=[act["run_id"]], target=target,
        evidence=evidence,
        details={"action_id": act["action_id"], "fields": fields,
                 "also_undone": [f["path"] for f in fields if not f["intended"]]})


def _last_name(path: str) -> str:
    """The name `afterfix rollback --fields` takes for a path: DB_POOL_SIZE, image."""
    return _tokens(path)[-1] if _tokens(path) else path


def _short(value, n: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= n else text[: n - 1] + "…"
