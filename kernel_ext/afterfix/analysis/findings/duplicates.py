"""Duplicate investigations: several agents (or teams) working one root cause at the same time.

Three teams' agents each get paged for what turns out to be the shared session cache: three
investigations, three pages, one fix. Runs are the same investigation when their time spans
overlap, their agents differ, and they work on one incident, on one workload, or on workloads one
of which depends on the other (dependencies as the metric history declares them, under the
resource attribute `afterfix.depends_on`). The finding counts what the duplicates cost: agent time,
tokens and the people paged.
"""

from __future__ import annotations

import pandas as pd

from afterfix import convention as k
from afterfix.analysis.findings import _common as c
from afterfix.analysis.model import Evidence, Finding

SLACK = pd.Timedelta(minutes=5)  # alerts a few minutes apart about one cause still count as concurrent


def _of(kind: str, key: str) -> str:
    # The JSON of only the spans of that kind is read: a FILTER alone still reads every span's.
    return f"CASE WHEN s.afterfix_kind = '{kind}' THEN json_extract_string(s.attributes, '$.\"{key}\"') END"


def _runs(scope) -> pd.DataFrame:
    where, params = scope._where("s.start_time", "s.incident_id")
    return scope.store.query(f"""
        SELECT s.run_id, any_value(s.incident_id) FILTER (WHERE s.incident_id IS NOT NULL) AS incident_id,
               coalesce(any_value(s.agent_name) FILTER (WHERE s.agent_name IS NOT NULL), any_value(s.service_name)) AS agent_name,
               arg_max({_of('incident', k.INCIDENT_SERVICE)}, s.end_time) FILTER (WHERE s.afterfix_kind = 'incident') AS service,
               list({_of('incident', k.INCIDENT_PAGED)}) FILTER (WHERE s.afterfix_kind = 'incident') AS paged,
               min(s.start_time) AS start_time, max(s.end_time) AS end_time,
               coalesce(sum(s.input_tokens), 0) + coalesce(sum(s.output_tokens), 0) AS tokens,
               any_value(s.span_id) FILTER (WHERE s.parent_span_id IS NULL) AS root_span_id,
               any_value(s.trace_id) AS trace_id,
               count(*) FILTER (WHERE TRY_CAST({_of('action', k.ACTION_MUTATING)} AS BOOLEAN)) AS changes
        FROM spans s WHERE s.run_id IN (SELECT run_id FROM spans WHERE incident_id IS NOT NULL) AND {where}
        GROUP BY s.run_id ORDER BY start_time""", params)


def _related(a, b, deps) -> bool:
    if a["incident_id"] == b["incident_id"]:
        return True
    sa, sb = a["service"], b["service"]
    if not isinstance(sa, str) or not isinstance(sb, str):
        return False
    return sa == sb or sb in deps.get(sa, ()) or sa in deps.get(sb, ())


def _paged(values) -> list[str]:
    people = []
    for text in ([] if values is None else list(values)):
        parsed = c.loads(text)
        people += [str(p) for p in parsed] if isinstance(parsed, list) else ([str(parsed)] if parsed else [])
    return people


def detect(scope) -> list[Finding]:
    runs = _runs(scope)
    if scope.namespace is not None:
        runs = runs[runs["service"].fillna("").str.split("/").str[0] == scope.namespace]
    if len(runs) < 2:
        return []
    deps = c.dependencies(scope.store)
    runs = runs.reset_index(drop=True)
    # union-find over runs that overlap in time, differ in agent and share a cause
    parent = list(range(len(runs)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    rows = runs[["incident_id", "agent_name", "service", "start_time", "end_time"]].to_dict("records")
    for i, a in enumerate(rows):
        for j in range(i + 1, len(rows)):
            b = rows[j]
            if b["start_time"] > a["end_time"] + SLACK:
                break
            if a["agent_name"] != b["agent_name"] and _related(a, b, deps):
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(runs)):
        groups.setdefault(root(i), []).append(i)
    return [_finding(runs.iloc[idx], deps) for idx in groups.values() if len(idx) > 1]


def _finding(group: pd.DataFrame, deps) -> Finding:
    agents = list(dict.fromkeys(group["agent_name"]))
    services = list(dict.fromkeys(group["service"].dropna()))
    incidents = list(dict.fromkeys(group["incident_id"].dropna()))
    seconds = float(sum((e - s).total_seconds() for s, e in zip(group["start_time"], group["end_time"])))
    paged = list(dict.fromkeys(p for v in group["paged"] for p in _paged(v)))
    actors = group[group["changes"] > 0]
    # the workload every other one depends on is the likely shared cause
    cause = next((s for s in services if all(s == o or s in deps.get(o, ()) for o in services)), services[0] if services else None)
    acted = (f"{', '.join(actors['agent_name'])} changed something" if not actors.empty
             else "none of them changed anything")
    evidence = [Evidence("span", f"{r['agent_name']} investigated {r['service'] or r['incident_id']} "
                                 f"{c.hhmm(r['start_time'])}–{c.hhmm(r['end_time'])}",
                         time=c.py_time(r["start_time"]), span_id=r["root_span_id"], trace_id=r["trace_id"],
                         run_id=r["run_id"]) for _, r in group.iterrows()]
    cost = f"{c.duration(seconds)} of agent time, {int(group['tokens'].sum())} tokens"
    cost += f", {len(paged)} paged ({', '.join(paged)})" if paged else ", nobody paged"
    return Finding(
        kind="duplicate_investigation", severity="medium" if len(paged) < 2 else "high",
        title=f"{len(group)} agents investigated {cause or 'one cause'} at once",
        explanation=(f"{', '.join(agents)} worked the same problem at the same time "
                     f"({', '.join(services) or ', '.join(incidents)}); {acted}. It cost {cost}. Route alerts "
                     f"for {cause or 'this cause'} to one owner, or let agents see each other's open incidents "
                     f"before they start."),
        time=c.py_time(group["start_time"].min()), incident_id=incidents[0] if incidents else None,
        run_ids=list(group["run_id"]), target=cause, evidence=evidence,
        details={"agents": agents, "incidents": incidents, "services": services, "agent_seconds": seconds,
                 "tokens": int(group["tokens"].sum()), "paged": paged,
                 "acted": list(actors["agent_name"]), "depends_on": {s: sorted(deps.get(s, ())) for s in services}})
