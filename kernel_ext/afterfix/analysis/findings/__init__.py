"""Findings: the failure modes a reviewer looks for the morning after, found in the store.

    find(store, since=None, until=None, incident=None, namespace=None) -> list[Finding]
    findings_frame(...) -> pandas.DataFrame, one row per finding (the `findings` view's rows)

Each kind is one module with `detect(scope) -> list[Finding]`:

    masked_issue             masked.py          the same workload "fixed" the same way again and again
    bundled_rollback         bundled.py         a revert that also undid other changes
    first_bad_step           first_bad_step.py  the first bad tool call, and every step that used it
    duplicate_investigation  duplicates.py      concurrent runs by different agents on one root cause
    unverified_action        unverified.py      a change with no verification, or a failed one
    side_effect              side_effects.py    metrics that left their normal band after a change

A detector reads the store through its `Scope` (the window and filters, and the frames the
detectors share, loaded once) and never writes. Findings come back most severe first.
"""

from __future__ import annotations

import importlib
import json
from datetime import datetime

import pandas as pd

from afterfix.analysis.model import FINDING_KINDS, SEVERITIES, Finding
from afterfix.analysis.findings.scope import Scope

_MODULES = {
    "masked_issue": "masked",
    "bundled_rollback": "bundled",
    "first_bad_step": "first_bad_step",
    "duplicate_investigation": "duplicates",
    "unverified_action": "unverified",
    "side_effect": "side_effects",
}

COLUMNS = ["severity", "kind", "time", "incident_id", "target", "title", "explanation", "run_ids",
           "evidence", "details"]


def find(store, since: datetime | None = None, until: datetime | None = None, incident: str | None = None,
         namespace: str | None = None, kinds: list[str] | None = None, scope: Scope | None = None) -> list[Finding]:
    """Every finding in the window (or in one incident), most severe first, then oldest first.

    A caller that already holds a `Scope` of the same window (the briefing) passes it, so the
    frames are read once."""
    if scope is None:
        scope = Scope(store, since=since, until=until, incident=incident, namespace=namespace)
    found: list[Finding] = []
    for kind in kinds or FINDING_KINDS:
        if kind not in _MODULES:
            raise ValueError(f"unknown finding kind {kind!r}: choose from {', '.join(FINDING_KINDS)}")
        module = importlib.import_module(f"{__name__}.{_MODULES[kind]}")
        found.extend(module.detect(scope))
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(found, key=lambda f: (rank[f.severity], f.time or datetime.max, f.kind, f.title))


def findings_frame(store=None, findings: list[Finding] | None = None, **filters) -> pd.DataFrame:
    """Findings as rows; evidence and details as JSON text, so SQL can read them."""
    if findings is None:
        findings = find(store, **filters)
    rows = []
    for f in findings:
        d = f.to_dict()
        rows.append({**{k: d[k] for k in COLUMNS if k not in ("evidence", "details", "run_ids")},
                     "time": f.time,
                     "run_ids": ",".join(f.run_ids),
                     "evidence": json.dumps(d["evidence"], ensure_ascii=False),
                     "details": json.dumps(d["details"], ensure_ascii=False, default=str)})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["time"] = pd.to_datetime(frame["time"])
    return frame


def _view(store) -> pd.DataFrame:
    return findings_frame(store)


# `SELECT * FROM findings` works in every query of a store once analysis is imported (the CLI's
# `query`, `%%sql`, templates): the store computes the view when a query names it.
from afterfix.store import Store  # noqa: E402

Store.computed_views["findings"] = _view
