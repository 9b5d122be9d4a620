"""Unverified action: a change to production that nobody checked, or whose check failed.

An applied, mutating action should be followed by a verification span naming it
(`afterfix.verification.action_id`). None at all means the agent moved on without looking; a
failed or inconclusive one means it looked and the change did not do what it was for, which is
the worse of the two: the change is still in place.
"""

from __future__ import annotations

import pandas as pd

from afterfix.analysis.findings import _common as c
from afterfix.analysis.model import Evidence, Finding


def detect(scope) -> list[Finding]:
    actions = scope.actions
    if actions.empty:
        return []
    changes = actions[actions["mutating"] & (actions["status"] == "applied")]
    checks = scope.verifications
    found = []
    for _, act in changes.iterrows():
        mine = checks[(checks["action_id"] == act["action_id"]) & (checks["start_time"] >= act["start_time"])]
        target = c.target(act)
        what = f"{act['verb']} {act['target_kind']} {target}"
        evidence = [Evidence("action", f"{what} at {c.when(act['start_time'])}", time=c.py_time(act["start_time"]),
                             span_id=act["span_id"], trace_id=act["trace_id"], run_id=act["run_id"])]
        if mine.empty:
            found.append(Finding(
                kind="unverified_action", severity="medium", title=f"{what}: never verified",
                explanation=(f"The agent applied {what} and recorded no verification of it. Nobody knows whether "
                             f"it helped. Check {target}'s signals since {c.hhmm(act['start_time'])}, and make "
                             f"the agent verify every change it applies."),
                time=c.py_time(act["start_time"]), incident_id=act["incident_id"], run_ids=[act["run_id"]],
                target=target, evidence=evidence,
                details={"action_id": act["action_id"], "outcome": None}))
            continue
        last = mine.iloc[-1]
        if last["outcome"] == "success":
            continue
        moved = (f"{last['signal']} went from {last['before']:.4g} to {last['after']:.4g}"
                 if isinstance(last["signal"], str) and pd.notna(last["before"]) and pd.notna(last["after"])
                 else "its signal did not recover")
        evidence.append(Evidence("span", f"verification {last['outcome']}: {moved}", time=c.py_time(last["start_time"]),
                                 span_id=last["span_id"], trace_id=last["trace_id"], run_id=last["run_id"],
                                 metric=last["signal"] if isinstance(last["signal"], str) else None,
                                 value=float(last["after"]) if pd.notna(last["after"]) else None))
        outcome = last["outcome"] or "not recorded"
        found.append(Finding(
            kind="unverified_action", severity="high" if outcome == "failure" else "medium",
            title=f"{what}: verification {outcome}",
            explanation=(f"The agent applied {what}, then checked it: {outcome} ({moved}). The change is still in "
                         f"place and did not do what it was for. Decide whether to keep it or roll it back, and "
                         f"look for the real cause."),
            time=c.py_time(act["start_time"]), incident_id=act["incident_id"], run_ids=[act["run_id"]],
            target=target, evidence=evidence,
            details={"action_id": act["action_id"], "outcome": outcome, "signal": last["signal"],
                     "before": last["before"], "after": last["after"]}))
    return found
