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


def band(baseline: pd.Series, floor: float) -> tuple[float, float] | None:
    if len(baseline) < MIN_BASELINE_POINTS:
        return None
    median = float(baseline.median())
    spread = max(4 * float((baseline - median).abs().median()), abs(median) * 0.25, floor)
    low = median - spread
    if (baseline >= 0).all():  # latencies and rates do not go below zero, and neither does their band
        low = max(low, 0.0)
    return low, median + spread


def excursion(series: pd.DataFrame, low: float, high: float, direction: str):
    """The first sustained run outside the band after the series was inside it: (start row, peak row)."""
    outside = series["value"] > high if direction == "up" else series["value"] < low
    seen_inside = False
    run = 0
    for i, out in enumerate(outside):
        if not out:
            seen_inside, run = True, 0
            continue
        if not seen_inside:
            continue
        run += 1
        if run == SUSTAIN:
            begin = i - SUSTAIN + 1
            rest = series.iloc[begin:]
            back = (rest["value"] <= high) if direction == "up" else (rest["value"] >= low)
            stop = begin + (int(back.to_numpy().argmax()) if back.any() else len(rest))
            episode = series.iloc[begin:stop]
            peak = episode["value"].idxmax() if direction == "up" else episode["value"].idxmin()
            recovered = stop < len(series)
            return series.iloc[begin], series.loc[peak], recovered, series.iloc[stop]["time"] if recovered else None
    return None


def detect(scope) -> list[Finding]:
    actions = scope.actions
    if actions.empty or not c.has_metrics(scope.store):
        return []
    changes = actions[actions["mutating"] & (actions["status"] == "applied")].sort_values("start_time")
    if changes.empty:
        return []
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
    watch = {c.target(a) for _, a in changes.iterrows()}
    watch |= {d for w in list(watch) for d in dependents.get(w, ())}
    end = scope.until or changes["start_time"].max() + pd.Timedelta(days=1)
    history = _history(scope, watch, changes["start_time"].min() - BASELINE - pd.Timedelta(hours=1), end)
    series_of = {key: g.reset_index(drop=True) for key, g in history.groupby(["w", "signal"])}
    found, claimed = [], set()
    # newest change first: an excursion belongs to the latest change before it
    for _, act in changes.iloc[::-1].iterrows():
        tgt = c.target(act)
        nxt = changes[(changes["start_time"] > act["start_time"]) & changes.apply(c.target, axis=1).eq(tgt)]
        until = nxt["start_time"].min() if not nxt.empty else end
        alert = alert_at.get(act["incident_id"], act["start_time"])
        begin = max(act["start_time"] + SETTLE, looked_fine.get(act["action_id"], act["start_time"]))
        own: list[tuple] = []  # the changed workload's own excursions: when its callers may feel it
        for w in [tgt, *sorted(dependents.get(tgt, ()))]:
            for signal, (label, floor, direction) in SIGNALS.items():
                s = series_of.get((w, signal))
                if s is None or (w, signal) in claimed:
                    continue
                limits = band(s[(s["time"] >= alert - BASELINE) & (s["time"] < alert)]["value"], floor)
                if limits is None:
                    continue
                after = s[(s["time"] >= begin) & (s["time"] < until)].reset_index(drop=True)
                hit = excursion(after, *limits, direction)
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
