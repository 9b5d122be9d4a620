"""Masked issue: the same workload "fixed" the same way again and again.

A restart that clears a leak for two hours, a scale-up that is undone by the next deploy: each
fix looks successful, and the cause stays. The finding groups a workload's applied changes by
verb, within the window and in the store's whole history before it (other nights count too), shows
the signal that came back before each fix (and, where the store keeps metric history, how fast it
grew back after each one), and answers "will it do this again tonight?" from the interval between
the fixes.
"""

from __future__ import annotations

import statistics

import pandas as pd

from afterfix.analysis.findings import _common as c
from afterfix.analysis.model import Evidence, Finding

PAST = {"restart": "restarted", "scale": "scaled", "patch": "patched", "rollback": "rolled back",
        "delete": "deleted", "create": "created"}
MIN_REPEATS = 2  # the second identical fix is the first sign that the first one masked something


def _history(scope) -> pd.DataFrame:
    """Applied changes up to the end of the window, with the alert that led to each."""
    until = "AND a.start_time < ?" if scope.until is not None else ""
    params = [scope.until] if scope.until is not None else []
    return scope.store.query(f"""
        SELECT a.action_id, a.span_id, a.trace_id, a.run_id, a.incident_id, a.agent_name, a.verb, a.target_kind,
               a.target_namespace, a.target_name, a.start_time, i.status AS incident_status,
               json_extract_string(d.attributes, '$."afterfix.detection.signal"') AS signal,
               TRY_CAST(json_extract_string(d.attributes, '$."afterfix.detection.value"') AS DOUBLE) AS value,
               TRY_CAST(json_extract_string(d.attributes, '$."afterfix.detection.threshold"') AS DOUBLE) AS threshold
        FROM actions a
        LEFT JOIN incidents i USING (incident_id)
        LEFT JOIN (SELECT * FROM spans WHERE afterfix_kind = 'detection') d
               ON d.run_id = a.run_id AND d.incident_id IS NOT DISTINCT FROM a.incident_id
        WHERE a.mutating AND a.status = 'applied' AND a.target_name IS NOT NULL {until}
        ORDER BY a.start_time""", params).drop_duplicates("action_id")


class _Points:
    """The metric source, read once per signal over all of a workload's fixes; each pair of fixes
    takes its part (one query per signal, not one per pair)."""

    def __init__(self, source, fixes: pd.DataFrame):
        self.source, self.start, self.end = source, fixes["start_time"].min(), fixes["start_time"].max()
        self.read: dict[tuple, pd.DataFrame] = {}

    def series(self, signal: str, namespace: str, workload: str, start, end) -> pd.DataFrame:
        key = (signal, namespace, workload)
        if key not in self.read:
            self.read[key] = self.source.series(signal, namespace, workload, self.start, self.end)
        points = self.read[key]
        return points[(points["time"] >= start) & (points["time"] <= end)].reset_index(drop=True)


def _regrowth(source, row, start, end) -> float | None:
    """How fast the alert's signal grew back between two fixes, per hour (None without history)."""
    if source is None or not isinstance(row["signal"], str):
        return None
    series = source.series(row["signal"], row["target_namespace"], row["target_name"], start, end)
    if len(series) < 3:
        return None
    low = series.loc[series["value"].idxmin()]
    after = series[series["time"] > low["time"]]
    if after.empty:
        return None
    high = after.loc[after["value"].idxmax()]
    hours = (high["time"] - low["time"]).total_seconds() / 3600
    return (high["value"] - low["value"]) / hours if hours > 0 else None


def detect(scope) -> list[Finding]:
    history = _history(scope)
    if history.empty:
        return []
    in_window = set(scope.in_namespace(history)["action_id"])
    if scope.since is not None:
        in_window &= set(history.loc[history["start_time"] >= scope.since, "action_id"])
    if scope.incident is not None:
        in_window &= set(history.loc[history["incident_id"] == scope.incident, "action_id"])
    source = c.metric_source(scope.store)
    found = []
    for (ns, name, verb), fixes in history.groupby(["target_namespace", "target_name", "verb"], sort=False):
        fixes = fixes.sort_values("start_time").reset_index(drop=True)
        if len(fixes) < MIN_REPEATS or not in_window & set(fixes["action_id"]):
            continue
        same_target = history[(history["target_namespace"] == ns) & (history["target_name"] == name)]
        later = same_target[(same_target["verb"] != verb) & (same_target["start_time"] > fixes["start_time"].max())]
        found.append(_finding(f"{ns}/{name}", verb, fixes, later, source))
    return found


def _finding(target: str, verb: str, fixes: pd.DataFrame, later: pd.DataFrame, source) -> Finding:
    times = list(fixes["start_time"])
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
    typical = statistics.median(gaps)
    last = fixes.iloc[-1]
    # a night runs from noon to noon, so 23:00 and 01:00 are the same night
    nights = (fixes["start_time"] - pd.Timedelta(hours=12)).dt.normalize().nunique()
    evidence, rates = [], []
    points = _Points(source, fixes) if source is not None else None
    for i, row in fixes.iterrows():
        came_back = (f"{row['signal']} {row['value']:.4g} over {row['threshold']:.4g}"
                     if isinstance(row["signal"], str) and pd.notna(row["value"]) else "no alert recorded")
        evidence.append(Evidence("action", f"{verb} #{i + 1} at {c.when(row['start_time'])}: {came_back}",
                                 time=c.py_time(row["start_time"]), span_id=row["span_id"],
                                 trace_id=row["trace_id"], run_id=row["run_id"],
                                 value=float(row["value"]) if pd.notna(row["value"]) else None))
        if i + 1 < len(fixes):
            rate = _regrowth(points, row, row["start_time"], fixes.iloc[i + 1]["start_time"])
            if rate is not None:
                rates.append(rate)
    signal = last["signal"] if isinstance(last["signal"], str) else None
    pattern = f"{signal} came back {len(fixes) - 1} times, about every {c.duration(typical)}" if signal \
        else f"the same fix was needed again about every {c.duration(typical)}"
    if rates:
        pattern += f"; after each {verb} it grew again by about {statistics.median(rates):.3g} per hour"
    next_at = last["start_time"] + pd.Timedelta(seconds=typical)
    if later.empty:
        will_recur = "yes"
        answer = (f"Yes. Nothing in the store changes the cause, so expect {signal or 'the alert'} to cross again next "
                  f"around {c.hhmm(next_at)} and the agent to {verb} {target} again, "
                  f"about {max(1, round(8 * 3600 / max(typical, 60.0)))} times in an 8-hour shift.")
    else:
        other = later.iloc[0]
        will_recur = "maybe"
        answer = (f"Perhaps not: after the last {verb}, a different change was made to {target} "
                  f"({other['verb']} at {c.when(other['start_time'])}). Watch {signal or 'the alert'} around "
                  f"{c.hhmm(next_at)}, when it came back before.")
    where = f"over {nights} nights" if nights > 1 else "in one night"
    severity = "high" if len(fixes) >= 3 or (fixes["incident_status"] == "escalated").any() else "medium"
    return Finding(
        kind="masked_issue", severity=severity,
        title=f"{target}: {verb} {len(fixes)} times {where}; the fix does not hold",
        explanation=(f"The agent {PAST.get(verb, 'ran ' + verb + ' on')} {target} {len(fixes)} times {where} ({pattern}). Each {verb} "
                     f"clears the symptom and the cause stays. Will it do this again tonight? {answer} "
                     f"Find the cause (for a memory alert: a leak; compare heap profiles across restarts) and "
                     f"take {verb} out of the agent's runbook for {target} until it is fixed."),
        time=c.py_time(fixes.iloc[0]["start_time"]), incident_id=last["incident_id"],
        run_ids=list(dict.fromkeys(fixes["run_id"])), target=target, evidence=evidence,
        details={"verb": verb, "repeats": len(fixes), "nights": int(nights), "signal": signal,
                 "typical_interval_s": typical, "regrowth_per_hour": statistics.median(rates) if rates else None,
                 "incidents": list(dict.fromkeys(fixes["incident_id"].dropna())),
                 "action_ids": list(fixes["action_id"]),
                 "will_recur": will_recur, "next_expected": c.py_time(next_at), "will_recur_answer": answer})
