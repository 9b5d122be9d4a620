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

A package above analysis/ adds a kind of its own without analysis importing it (one direction):

    register(kind, detect)          # detect(scope) -> list[Finding]; registering a kind again replaces it
    finding_kinds() -> tuple[str]   # the built-in FINDING_KINDS, then the registered ones

afterfix.trust.compliance registers `trust_violation` when it is imported; the faces that show
findings to people (`afterfix findings`, the briefing) import it.
"""

from __future__ import annotations

import importlib
import json
from datetime import datetime
from typing import Callable

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

_REGISTERED: dict[str, Callable] = {}

COLUMNS = ["severity", "kind", "time", "incident_id", "target", "title", "explanation", "run_ids",
           "evidence", "details"]


def register(kind: str, detect: Callable) -> None:
    """Add a kind of finding found by `detect(scope) -> list[Finding]` (a built-in kind cannot be replaced)."""
    if not isinstance(kind, str) or not kind.isidentifier():
        raise ValueError(f"finding kind {kind!r}: use a name such as trust_violation")
    if kind in _MODULES:
        raise ValueError(f"finding kind {kind!r} is built in; register the detector under a name of its own")
    if not callable(detect):
        raise TypeError(f"finding kind {kind!r}: detect must be a function of a Scope, not {type(detect).__name__}")
    _REGISTERED[kind] = detect


def finding_kinds() -> tuple[str, ...]:
    """Every kind `find` looks for: the built-in ones, then the registered ones in order."""
    return FINDING_KINDS + tuple(k for k in _REGISTERED if k not in FINDING_KINDS)


def find(store, since: datetime | None = None, until: datetime | None = None, incident: str | None = None,
         namespace: str | None = None, kinds: list[str] | None = None, scope: Scope | None = None) -> list[Finding]:
    """Every finding in the window (or in one incident), most severe first, then oldest first.

    A caller that already holds a `Scope` of the same window (the briefing) passes it, so the
    frames are read once."""
    if scope is None:
        scope = Scope(store, since=since, until=until, incident=incident, namespace=namespace)
    found: list[Finding] = []
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    for kind in kinds or finding_kinds():
        if kind in _REGISTERED:
            more = list(_REGISTERED[kind](scope))
            wrong = [f for f in more if f.kind != kind or f.severity not in rank]
            if wrong:
                raise ValueError(f"the {kind} detector returned a finding of kind {wrong[0].kind!r}, severity "
                                 f"{wrong[0].severity!r}: it must give kind {kind!r} and one of {', '.join(SEVERITIES)}")
            found.extend(more)
            continue
        if kind not in _MODULES:
            raise ValueError(f"unknown finding kind {kind!r}: choose from {', '.join(finding_kinds())}")
        module = importlib.import_module(f"{__name__}.{_MODULES[kind]}")
        found.extend(module.detect(scope))
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
