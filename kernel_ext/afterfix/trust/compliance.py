"""Compliance: every action in the store against the level the trust policy allows it.

    check(store, policy, *, levels=None) -> list[Violation]
    detect(scope) -> list[Finding]          # kind "trust_violation", registered with analysis.findings
    register(policy=None, *, levels=None)   # which policy the registered detector checks against

For each mutating action (the `actions` view) the policy gives a level from its verb, target
kind, namespace and labels (the run's `afterfix.scenario` as "scenario", and the action span's
`afterfix.labels.*`). What happened is its status, and whether a person approved it before it
ended: an `approved` row for its action id in the `approvals` ledger, or an approval span with
status approved. Two things are violations:

    Level 1, status applied                  acting at all where only a recommendation was allowed (critical)
    Level 2, status applied, not approved    acting without the approval Level 2 requires (high)

Levels 3 and 4 allow acting. `levels` gives a rule a level other than the policy's (the trust
ladder's promotions and demotions): a mapping {rule id: level}, or a function (rule id, time of
the action) -> level or None, so an action is judged by the level in force when it happened.
Either is capped by the rule's cap.

Importing this module registers the detector, so `afterfix findings` and the briefing show the
violations next to the other findings. It checks against `register(policy)`'s policy, else the
file `policy.policy_path()` names at the time ($AFTERFIX_TRUST, else templates/trust.yaml).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

import pandas as pd

from afterfix import convention
from afterfix.analysis import findings as _findings
from afterfix.analysis.model import Evidence, Finding
from afterfix.trust.policy import LEVELS, TrustPolicy, load_policy

__all__ = ["KIND", "Violation", "check", "detect", "register", "violations_frame"]

KIND = "trust_violation"
Levels = Mapping[str, int] | Callable[[str, datetime | None], int | None] | None


@dataclass
class Violation:
    """One action that went further than its level allowed. `what_happened` is a few words
    ("applied without approval", "applied"); `message` the whole story, for people."""

    action_id: str
    rule_id: str | None  # None: no rule matched, the policy's default level applied
    allowed_level: int
    what_happened: str
    message: str
    severity: str = "high"  # critical (acted under Level 1) or high (acted without a Level 2 approval)
    rule_line: int | None = None
    policy_source: str | None = None
    recorded_level: int | None = None  # the level the agent recorded on its action span
    verb: str | None = None
    target_kind: str | None = None
    target: str | None = None  # namespace/name
    agent_name: str | None = None
    run_id: str | None = None
    incident_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    time: datetime | None = None
    labels: dict | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["time"] = self.time.isoformat() if self.time else None
        return d


def check(store, policy: TrustPolicy, *, levels: Levels = None) -> list[Violation]:
    """Every action in `store` that broke `policy`, oldest first."""
    return _violations(store, store.query("SELECT * FROM actions ORDER BY start_time"), policy, levels)


def violations_frame(violations: list[Violation]) -> pd.DataFrame:
    """Violations as rows (for notebooks and `afterfix query`-style output)."""
    columns = list(Violation.__dataclass_fields__)
    return pd.DataFrame([asdict(v) for v in violations], columns=columns)


# ---- the findings detector ------------------------------------------------------------------------

_registered: dict[str, Any] = {"policy": None, "levels": None}


def register(policy: TrustPolicy | None = None, *, levels: Levels = None) -> None:
    """Check findings against `policy` (None: the file `policy_path()` names when findings are
    computed) with the ladder's `levels`; registers the detector with analysis.findings."""
    _registered.update(policy=policy, levels=levels)
    _findings.register(KIND, detect)


def detect(scope) -> list[Finding]:
    """The violations among the actions of `scope` (its window, incident and namespace), as findings."""
    policy = _registered["policy"] or load_policy()
    return [_finding(v) for v in _violations(scope.store, scope.actions, policy, _registered["levels"])]


def _finding(v: Violation) -> Finding:
    what = f"{v.verb} {v.target_kind} {v.target}"
    title = (f"{what}: applied under Level 1, where the agent may only recommend" if v.allowed_level == 1 else
             f"{what}: applied without the approval Level 2 requires")
    return Finding(
        kind=KIND, severity=v.severity, title=title, explanation=v.message, time=v.time, incident_id=v.incident_id,
        run_ids=[v.run_id] if v.run_id else [], target=v.target,
        evidence=[Evidence("action", f"{what} {v.what_happened} at {_hhmm(v.time)}", time=v.time, span_id=v.span_id,
                           trace_id=v.trace_id, run_id=v.run_id)],
        details={"action_id": v.action_id, "rule_id": v.rule_id, "rule_line": v.rule_line,
                 "policy": v.policy_source, "allowed_level": v.allowed_level, "recorded_level": v.recorded_level,
                 "what_happened": v.what_happened, "labels": v.labels})


# ---- the check ---------------------------------------------------------------------------------------


def _violations(store, actions: pd.DataFrame, policy: TrustPolicy, levels: Levels) -> list[Violation]:
    if actions.empty:
        return []
    acted = actions[actions["mutating"].fillna(False).astype(bool) & (actions["status"] == "applied")]
    if acted.empty:
        return []
    scenarios = _scenarios(store)
    labels_of = _span_labels(store)
    approved = _approvals(store)
    out = []
    for row in acted.to_dict("records"):
        labels = dict(labels_of.get((row["trace_id"], row["span_id"]), {}))
        scenario = scenarios.get(row["run_id"])
        if scenario is not None:
            labels["scenario"] = scenario
        start = _py(row["start_time"])
        level, rule = _level(policy, row, labels, levels, start)
        if level >= 3:
            continue
        end = start + timedelta(milliseconds=float(row.get("duration_ms") or 0)) if start else None
        times = approved.get(row["action_id"], [])
        before_end = [t for t in times if end is None or t is None or t <= end]
        if level == 2 and before_end:
            continue
        out.append(_violation(policy, row, labels, level, rule, start, late=bool(times) and not before_end))
    return out


def _level(policy: TrustPolicy, row: dict, labels: dict, levels: Levels, when: datetime | None):
    level, rule = policy.level_for(row["verb"] or "", row["target_kind"] or "", row["target_namespace"], labels)
    if rule is not None and levels is not None:
        override = levels(rule.id, when) if callable(levels) else levels.get(rule.id)
        if override is not None:
            level = rule.capped(int(override))
    return level, rule


def _violation(policy: TrustPolicy, row: dict, labels: dict, level: int, rule, start, *, late: bool) -> Violation:
    target = f"{row['target_namespace']}/{row['target_name']}" if row["target_namespace"] else row["target_name"]
    what = f"{row['verb']} {row['target_kind']} {target}"
    recorded = None if pd.isna(row.get("trust_level")) else int(row["trust_level"])
    whence = (f"rule {rule.id} ({policy.source} line {rule.line})" if rule is not None
              else f"the default level of {policy.source} (no rule matched)")
    agent = row.get("agent_name") or "the agent"
    at = f"{agent} applied it at {_hhmm(start)}" + (f", recording trust level {recorded}" if recorded else "")
    if level == 1:
        happened = "applied"
        story = (f"{whence} puts {what} at Level 1 ({LEVELS[1]}): the agent may recommend it, not do it. {at}. "
                 f"It should have recorded a recommendation (status recommended) and left the change to a person.")
        severity = "critical"
    else:
        happened = "applied after a late approval" if late else "applied without approval"
        asked = ("A person approved it only after it was applied." if late else
                 "No approval for it is in the approvals ledger or in its trace.")
        story = (f"{whence} puts {what} at Level 2 ({LEVELS[2]}). {at}. {asked} It should have asked through the "
                 f"approval queue (afterfix approvals) and waited for a person's decision before acting.")
        severity = "high"
    story += (f" Check the change (afterfix rollback {row['action_id']} undoes it) and the agent's trust "
              f"configuration: it must read the same policy.")
    return Violation(row["action_id"], rule.id if rule else None, level, happened, story, severity,
                     rule.line if rule else None, policy.source, recorded, row["verb"], row["target_kind"], target,
                     row.get("agent_name"), row.get("run_id"), row.get("incident_id"), row["trace_id"], row["span_id"],
                     start, labels or None)


def _scenarios(store) -> dict[str, str]:
    """run id -> the scenario its spans name (afterfix.scenario)."""
    frame = store.query(f"""
        SELECT run_id, any_value(json_extract_string(attributes, '$."{convention.SCENARIO}"')) AS scenario
        FROM spans WHERE run_id IS NOT NULL
          AND json_extract_string(attributes, '$."{convention.SCENARIO}"') IS NOT NULL
        GROUP BY run_id""")
    return dict(zip(frame["run_id"], frame["scenario"]))


def _span_labels(store) -> dict[tuple[str, str], dict[str, str]]:
    """(trace id, span id) of an action span -> its afterfix.labels.* attributes, by label name."""
    frame = store.query(f"""
        SELECT trace_id, span_id, attributes FROM spans
        WHERE afterfix_kind = 'action' AND contains(attributes, '"{convention.LABELS_PREFIX}')""")
    out = {}
    for trace_id, span_id, attributes in frame.itertuples(index=False):
        try:
            attrs = json.loads(attributes)
        except (TypeError, ValueError):
            continue
        labels = {k[len(convention.LABELS_PREFIX):]: str(v) for k, v in attrs.items()
                  if k.startswith(convention.LABELS_PREFIX) and v is not None}
        if labels:
            out[(trace_id, span_id)] = labels
    return out


def _approvals(store) -> dict[str, list[datetime | None]]:
    """action id -> when it was approved: the approvals ledger's `approved` rows and approval spans."""
    out: dict[str, list] = {}
    spans = store.query(f"""
        SELECT json_extract_string(attributes, '$."{convention.APPROVAL_ACTION_ID}"') AS action_id, start_time AS time
        FROM spans WHERE afterfix_kind = 'approval'
          AND json_extract_string(attributes, '$."{convention.APPROVAL_STATUS}"') = 'approved'""")
    frames = [spans]
    if _has_table(store, "approvals"):
        frames.append(store.query("SELECT action_id, time FROM approvals WHERE event = 'approved' AND action_id IS NOT NULL"))
    for frame in frames:
        for action_id, t in frame.itertuples(index=False):
            if action_id:
                out.setdefault(action_id, []).append(_py(t))
    return out


def _has_table(store, name: str) -> bool:
    found = store.query("SELECT count(*) AS n FROM information_schema.tables WHERE table_name = ?", [name])
    return bool(found["n"].iloc[0])


def _py(t) -> datetime | None:
    return None if t is None or pd.isna(t) else pd.Timestamp(t).to_pydatetime()


def _hhmm(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M UTC") if t else "an unknown time"


register()
