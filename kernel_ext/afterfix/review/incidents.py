"""The incident list a reviewer starts from: one row per incident, with what was done and found.

    incidents(store, since=None, until=None, namespace=None, finding=None, trust_level=None,
              status=None) -> pandas.DataFrame          one row per incident, most serious first
    most_serious(store, night=None) -> incident_id | None    the latest night's most serious incident
    store_token(store) -> tuple                                changes whenever spans or ledgers do

Each row: the incident's id, title, severity, service, namespace(s), status, start and end, its
runs and agents, decisions and changes, the trust levels of its mutating actions, its findings
(`afterfix.analysis.findings`: how many and of which kinds), whether one of its actions was rolled
back (the `rollbacks` ledger), how many of its decisions and actions carry a verdict, and the
night it belongs to (the spans' `afterfix.night` resource attribute, when the night shift set it).

"Most serious" orders by severity (critical > high > medium > low > info > none), then by findings,
then by changes, then by the latest start. Everything here is read from the store; nothing is
written. The text in the rows is trace text: faces escape it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd

__all__ = ["incidents", "most_serious", "store_token", "COLUMNS", "SEVERITY_ORDER"]

SEVERITY_ORDER = ("critical", "high", "medium", "low", "info")
NIGHT_ATTRIBUTE = "afterfix.night"  # as nightshift.night writes it (not imported: review never imports the simulator)

COLUMNS = ["incident_id", "title", "severity", "service", "namespace", "status", "start_time", "end_time",
           "runs", "run_ids", "agents", "decisions", "changes", "errors", "trust_levels", "findings",
           "finding_kinds", "rolled_back", "verdicts", "night"]

# The incidents view plus what it does not hold, in one query. Namespaces come from the service
# ("ns/name") and from the targets of the incident's actions.
_SQL = f"""
WITH runs_of AS (
    SELECT incident_id, string_agg(DISTINCT agent_name, ', ' ORDER BY agent_name) AS agents,
           string_agg(run_id, ',' ORDER BY start_time, run_id) AS run_ids
    FROM runs WHERE incident_id IS NOT NULL GROUP BY incident_id
), acts AS (
    SELECT incident_id,
           string_agg(DISTINCT CAST(trust_level AS VARCHAR), ',' ORDER BY CAST(trust_level AS VARCHAR))
               FILTER (WHERE mutating AND trust_level IS NOT NULL) AS trust_levels,
           string_agg(DISTINCT target_namespace, ',' ORDER BY target_namespace)
               FILTER (WHERE target_namespace IS NOT NULL) AS target_namespaces
    FROM actions WHERE incident_id IS NOT NULL GROUP BY incident_id
), undone AS (
    SELECT a.incident_id, count(DISTINCT r.action_id) AS rolled_back
    FROM rollbacks r JOIN (SELECT DISTINCT action_id, incident_id FROM actions) a USING (action_id)
    WHERE r.outcome = 'rolled_back' AND a.incident_id IS NOT NULL GROUP BY a.incident_id
), judged AS (
    SELECT incident_id, count(DISTINCT target_id) AS verdicts
    FROM verdicts WHERE incident_id IS NOT NULL GROUP BY incident_id
), nights AS (
    SELECT incident_id, max(json_extract_string(resource_attributes, '$."{NIGHT_ATTRIBUTE}"')) AS night
    FROM spans WHERE incident_id IS NOT NULL GROUP BY incident_id
)
SELECT i.incident_id, i.title, i.severity, i.service, i.status, i.start_time, i.end_time, i.runs,
       r.run_ids, r.agents, i.decisions, i.changes, i.errors, a.trust_levels, a.target_namespaces,
       coalesce(u.rolled_back, 0) AS rolled_back, coalesce(j.verdicts, 0) AS verdicts, n.night
FROM incidents i
LEFT JOIN runs_of r USING (incident_id) LEFT JOIN acts a USING (incident_id)
LEFT JOIN undone u USING (incident_id) LEFT JOIN judged j USING (incident_id) LEFT JOIN nights n USING (incident_id)
"""


def _severity_rank(value: Any) -> int:
    return SEVERITY_ORDER.index(value) if value in SEVERITY_ORDER else len(SEVERITY_ORDER)


def _namespaces(service: Any, targets: Any) -> str:
    found = []
    if isinstance(service, str) and "/" in service:
        found.append(service.split("/", 1)[0])
    if isinstance(targets, str):
        found += [t for t in targets.split(",") if t]
    return ",".join(dict.fromkeys(found))


def _parse_level(trust_level) -> int | None:
    if trust_level is None or trust_level == "":
        return None
    try:
        return int(trust_level)
    except (TypeError, ValueError):
        raise ValueError(f"trust_level={trust_level!r}: give a whole number such as 2 or 3") from None


def incidents(store, *, since: datetime | None = None, until: datetime | None = None, namespace: str | None = None,
              finding: str | None = None, trust_level: int | str | None = None, status: str | None = None,
              found: list | None = None) -> pd.DataFrame:
    """One row per incident (COLUMNS), most serious first. `since`/`until` bound the incident's
    start (naive UTC, as the store keeps times); `namespace` matches any of its namespaces;
    `finding` a finding kind it has; `trust_level` a level one of its changes ran at; `status`
    its status. `found` passes findings already computed for the window (the browser caches them:
    finding them is the slow part)."""
    from afterfix.analysis.findings import find
    from afterfix.analysis.findings import finding_kinds
    from afterfix.trust import compliance  # noqa: F401  (registers trust_violation)

    level = _parse_level(trust_level)
    if finding and finding not in finding_kinds():
        raise ValueError(f"finding={finding!r}: choose one of {', '.join(finding_kinds())}")
    frame = store.query(_SQL)
    if since is not None:
        frame = frame[frame["start_time"] >= pd.Timestamp(since)]
    if until is not None:
        frame = frame[frame["start_time"] < pd.Timestamp(until)]
    frame = frame.copy()
    frame["namespace"] = [_namespaces(s, t) for s, t in zip(frame["service"], frame["target_namespaces"])]
    if found is None:
        found = find(store, since=since, until=until) if len(frame) else []
    kinds: dict[str, list[str]] = {}
    for f in found:
        if f.incident_id:
            kinds.setdefault(f.incident_id, []).append(f.kind)
    frame["findings"] = [len(kinds.get(i, ())) for i in frame["incident_id"]]
    frame["finding_kinds"] = [",".join(sorted(set(kinds.get(i, ())))) for i in frame["incident_id"]]
    frame["rolled_back"] = frame["rolled_back"] > 0
    frame["trust_levels"] = frame["trust_levels"].fillna("")
    if namespace:
        frame = frame[[namespace in ns.split(",") for ns in frame["namespace"]]]
    if finding:
        frame = frame[[finding in k.split(",") for k in frame["finding_kinds"]]]
    if level is not None:
        frame = frame[[str(level) in t.split(",") for t in frame["trust_levels"]]]
    if status:
        frame = frame[frame["status"] == status]
    frame = frame.assign(_sev=frame["severity"].map(_severity_rank))
    frame = frame.sort_values(["_sev", "findings", "changes", "start_time"], ascending=[True, False, False, False],
                              kind="stable")
    return frame[COLUMNS].reset_index(drop=True)


def latest_night(store) -> str | None:
    """The night (resource attribute `afterfix.night`) of the latest span that names one."""
    rows = store.query(f"""SELECT json_extract_string(resource_attributes, '$."{NIGHT_ATTRIBUTE}"') AS night
                           FROM spans WHERE json_extract_string(resource_attributes, '$."{NIGHT_ATTRIBUTE}"') IS NOT NULL
                           ORDER BY start_time DESC LIMIT 1""")
    return None if rows.empty else rows["night"].iloc[0]


def most_serious(store, night: str | None = None, *, found: list | None = None) -> str | None:
    """The most serious incident of `night` (default: the latest night; when no span names a
    night, the incidents of the latest day that has any). None when the store holds no incident."""
    frame = incidents(store, found=found)
    if frame.empty:
        return None
    night = night or latest_night(store)
    if night is not None:
        frame = frame[frame["night"] == night]
        if frame.empty:
            return None
    else:
        last = frame["start_time"].max()
        frame = frame[frame["start_time"] > last - pd.Timedelta(hours=24)]
    return str(frame["incident_id"].iloc[0])  # incidents() sorts most serious first


def store_token(store) -> tuple:
    """A cheap fingerprint of what the store holds: changes when spans or review ledgers gain rows.
    Counts come from DuckLake's file statistics; max(ingested_at) from Parquet min/max."""
    row = store.arrow("""SELECT (SELECT count(*) FROM spans) AS spans, (SELECT max(ingested_at) FROM spans) AS last,
                                (SELECT count(*) FROM rollbacks) AS rollbacks, (SELECT count(*) FROM verdicts) AS verdicts
                      """).to_pylist()[0]
    return (row["spans"], row["last"], row["rollbacks"], row["verdicts"])
