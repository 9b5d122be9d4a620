"""Side effects to watch: after a change, the changed workload or one that depends on it left its
normal band, once things had looked fine.

The normal band of a signal is what it did before the incident: the median of the baseline
(the hours before the alert, up to the alert) plus or minus a spread (four median absolute
deviations, and never narrower than a quarter of the median or the signal's floor below). After
the change, the series must first be inside the band (the change looked successful), then stay
outside it for `SUSTAIN` points in a row: that first point is when the side effect started.
It reads the store's metric history (`afterfix.workload.<signal>` points, one series per workload).

Only what the change can explain counts. The excursion must begin after the change looked
successful (its last successful verification, if it had one). A workload that depends on the
changed one counts only while the changed workload is itself outside its band: trouble reaches
callers from the dependency, so a caller's own trouble with a healthy dependency is another
story. Severity is high when the signal crossed the alert threshold that detections recorded for
it (`afterfix.detection.threshold`), or never came back; medium when it left its band by more than
twice; low otherwise.
"""

from __future__ import annotations

import bisect

import numpy as np
import pandas as pd

from afterfix.analysis.findings import _common as c
from afterfix.analysis.model import Evidence, Finding

SIGNALS = {  # signal: (what a person calls it, the smallest spread that is not noise, bad direction)
    "latency_p95_ms": ("p95 latency", 25.0, "up"),
    "error_rate": ("error rate", 0.01, "up"),
}
BASELINE = pd.Timedelta(hours=2)
SETTLE = pd.Timedelta(minutes=5)  # a rollout's own churn right after the write is not a side effect
SUSTAIN = 5  # points (minutes) outside the band in a row
MIN_BASELINE_POINTS = 10


def _history(scope, workloads: set[str], start, end) -> pd.DataFrame:
    if not workloads or not c.has_metrics(scope.store):
        return pd.DataFrame(columns=["w", "signal", "time", "value"])
    names = [c.SIGNAL_METRIC.format(signal=s) for s in SIGNALS]
    return scope.store.query(f"""
        SELECT namespace || '/' || workload AS w, replace(name, ?, '') AS signal, time, value
        FROM metrics
        WHERE name IN ({', '.join('?' * len(names))}) AND time >= ? AND time <= ? AND value IS NOT NULL
          AND namespace || '/' || workload IN ({', '.join('?' * len(workloads))})
        ORDER BY w, signal, time""",
        [c.SIGNAL_METRIC.format(signal=""), *names, start, end, *sorted(workloads)])


class _Series:
    """One workload's signal, oldest first, as arrays: windows are found by bisection, not by masks."""

    def __init__(self, time: np.ndarray, value: np.ndarray):
        self.time, self.value = time, value

    def between(self, start, end) -> "_Series":
        """The points at `start` or later and before `end`."""
        i, j = np.searchsorted(self.time, [_t64(start), _t64(end)], side="left")
        return _Series(self.time[i:j], self.value[i:j])

    def point(self, i: int) -> dict:
        return {"time": pd.Timestamp(self.time[i]), "value": float(self.value[i])}


def _t64(t) -> np.datetime64:
    return pd.Timestamp(t).to_datetime64().astype("datetime64[ns]")


def band(baseline: np.ndarray, floor: float) -> tuple[float, float] | None:
    if len(baseline) < MIN_BASELINE_POINTS:
        return None
    median = float(np.median(baseline))
    spread = max(4 * float(np.median(np.abs(baseline - median))), abs(median) * 0.25, floor)
    low = median - spread
    if (baseline >= 0).all():  # latencies and rates do not go below zero, and neither does their band
        low = max(low, 0.0)
    return low, median + spread


def excursion(series: _Series, low: float, high: float, direction: str):
    """The first sustained run outside the band after the series was inside it:
    (start point, peak point, recovered, when it came back)."""
    values = series.value
    outside = values > high if direction == "up" else values < low
    inside = np.flatnonzero(~outside)
    if not len(inside):
        return None
    after = outside[inside[0]:].astype(np.int64)
    if len(after) < SUSTAIN:
        return None
    runs = np.convolve(after, np.ones(SUSTAIN, dtype=np.int64), mode="valid")  # outside points per window
    full = np.flatnonzero(runs == SUSTAIN)
    if not len(full):
        return None
    begin = int(inside[0] + full[0])
    back = (values[begin:] <= high) if direction == "up" else (values[begin:] >= low)
    stop = begin + (int(back.argmax()) if back.any() else len(back))
    episode = values[begin:stop]
    peak = begin + int(np.nanargmax(episode) if direction == "up" else np.nanargmin(episode))
    recovered = stop < len(values)
    return series.point(begin), series.point(peak), recovered, series.point(stop)["time"] if recovered else None


def detect(scope) -> list[Finding]:
    actions = scope.actions
    if actions.empty or not c.has_metrics(scope.store):
        return []
    changes = actions[actions["mutating"] & (actions["status"] == "applied")].sort_values("start_time", kind="stable")
    if changes.empty:
        return []
    changes = changes.to_dict("records")
    deps = c.dependencies(scope.store)
    dependents: dict[str, set[str]] = {}
    for w, needs in deps.items():
        for n in needs:
            dependents.setdefault(n, set()).add(w)
    detected = scope.store.query("""SELECT incident_id, min(start_time) AS t FROM spans
                                    WHERE afterfix_kind = 'detection' GROUP BY incident_id""")
    alert_at = dict(zip(detected["incident_id"], detected["t"]))
    thresholds = _thresholds(scope.store)
    looked_fine = _verified_at(scope)
    targets = [c.target(a) for a in changes]
    changed_at: dict[str, list] = {}  # target: its changes' times, oldest first
    for a, tgt in zip(changes, targets):
        changed_at.setdefault(tgt, []).append(a["start_time"])
    watch = set(targets)
    watch |= {d for w in list(watch) for d in dependents.get(w, ())}
    first, last = changes[0]["start_time"], max(a["start_time"] for a in changes)
    end = scope.until or last + pd.Timedelta(days=1)
    history = _history(scope, watch, first - BASELINE - pd.Timedelta(hours=1), end)
    times = history["time"].to_numpy(dtype="datetime64[ns]")
    values = history["value"].to_numpy(dtype="float64")
    series_of = {key: _Series(times[rows], values[rows])
                 for key, rows in history.groupby(["w", "signal"], sort=False).indices.items()} if len(history) else {}
    found, claimed = [], set()
    # newest change first: an excursion belongs to the latest change before it
    for act, tgt in zip(reversed(changes), reversed(targets)):
        later = changed_at[tgt][bisect.bisect_right(changed_at[tgt], act["start_time"]):]
        until = later[0] if later else end
        alert = alert_at.get(act["incident_id"], act["start_time"])
        begin = max(act["start_time"] + SETTLE, looked_fine.get(act["action_id"], act["start_time"]))
        own: list[tuple] = []  # the changed workload's own excursions: when its callers may feel it
        for w in [tgt, *sorted(dependents.get(tgt, ()))]:
            for signal, (label, floor, direction) in SIGNALS.items():
                s = series_of.get((w, signal))
                if s is None or (w, signal) in claimed:
                    continue
                limits = band(s.between(alert - BASELINE, alert).value, floor)
                if limits is None:
                    continue
                hit = excursion(s.between(begin, until), *limits, direction)
                if hit is None:
                    continue
                start, peak, recovered, stop = hit
                if w == tgt:
                    own.append((start["time"], stop))
                elif not any(t0 <= start["time"] <= (t1 or start["time"]) for t0, t1 in own):
                    continue  # the dependency was fine then: not this change's doing
                claimed.add((w, signal))
                found.append(_finding(act, w, tgt, signal, label, limits, start, peak, recovered,
                                      thresholds.get((w, signal))))
    return found


def _thresholds(store) -> dict[tuple[str, str], float]:
    """{(workload, signal): the alert threshold detections recorded for it}."""
    rows = store.query("""
        SELECT i.service AS w, json_extract_string(d.attributes, '$."afterfix.detection.signal"') AS signal,
               min(TRY_CAST(json_extract_string(d.attributes, '$."afterfix.detection.threshold"') AS DOUBLE)) AS t
        FROM spans d JOIN incidents i USING (incident_id)
        WHERE d.afterfix_kind = 'detection' AND i.service IS NOT NULL GROUP BY ALL""")
    return {(w, sig): float(t) for w, sig, t in rows.itertuples(index=False) if isinstance(sig, str) and pd.notna(t)}


def _verified_at(scope) -> dict[str, pd.Timestamp]:
    """{action id: when its last successful verification ended}."""
    v = scope.verifications
    if v.empty:
        return {}
    ok = v[(v["outcome"] == "success") & v["action_id"].notna()]
    return ok.groupby("action_id")["end_time"].max().to_dict()


def _finding(act, w, tgt, signal, label, limits, start, peak, recovered, threshold: float | None) -> Finding:
    low, high = limits
    lag = (start["time"] - act["start_time"]).total_seconds()
    who = "the changed workload" if w == tgt else f"which depends on {tgt}"
    state = "It came back inside its band later." if recovered else "It was still outside its band at the end of the data."
    metric = c.SIGNAL_METRIC.format(signal=signal)
    evidence = [
        Evidence("action", f"{act['verb']} {act['target_kind']} {tgt} at {c.when(act['start_time'])}",
                 time=c.py_time(act["start_time"]), span_id=act["span_id"], trace_id=act["trace_id"], run_id=act["run_id"]),
        Evidence("metric", f"{w} {label} left its band ({low:.4g}–{high:.4g}) at {c.when(start['time'])}: {start['value']:.4g}",
                 time=c.py_time(start["time"]), metric=metric, value=float(start["value"])),
        Evidence("metric", f"{w} {label} peaked at {peak['value']:.4g} at {c.when(peak['time'])}",
                 time=c.py_time(peak["time"]), metric=metric, value=float(peak["value"])),
    ]
    crossed = threshold is not None and peak["value"] > threshold
    severity = "high" if crossed or not recovered else "medium" if peak["value"] > 2 * high else "low"
    return Finding(
        kind="side_effect", severity=severity,
        title=f"{w} {label} rose {c.duration(lag)} after {act['verb']} of {tgt}",
        explanation=(f"{c.duration(lag)} after the agent's {act['verb']} of {tgt} (at {c.hhmm(act['start_time'])}), "
                     f"{w} ({who}) {label} left its normal band of {low:.4g}–{high:.4g} at {c.hhmm(start['time'])} "
                     f"and reached {peak['value']:.4g}"
                     f"{f', over its alert threshold of {threshold:.4g}' if crossed else ''}. {state} Check whether the change caused it (compare "
                     f"what the change removed), before the next traffic peak."),
        time=c.py_time(start["time"]), incident_id=act["incident_id"], run_ids=[act["run_id"]], target=w,
        evidence=evidence,
        details={"action_id": act["action_id"], "changed": tgt, "workload": w, "signal": signal,
                 "band": [low, high], "started": c.py_time(start["time"]), "peak": float(peak["value"]),
                 "peak_at": c.py_time(peak["time"]), "recovered": bool(recovered), "lag_s": lag,
                 "threshold": threshold})
