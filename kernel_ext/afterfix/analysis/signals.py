"""The metric history of the signal an incident was about, for its timeline.

    incident_history(store, incident_id) -> (signal, DataFrame | None)
    incident_signal(trees) -> Signal | None            what the first detection watched, and where
    signal_history(store, signal, start, end) -> DataFrame | None     its points around the window

A detection names a signal (`afterfix.detection.signal`, e.g. `latency_p95_ms`); the metric history
of a workload's signal is the metric `afterfix.workload.<signal>` (the night shift's exporter names
them so; `findings._common.SIGNAL_METRIC`), or a metric named exactly like the signal, with the
workload's namespace and name as its `namespace` and `workload` columns. The workload is the
incident's service (`afterfix.incident.service`, "namespace/name"), else the target of the first
action. The history covers the incident's window and as long again on each side (at least 15
minutes), so a timeline shows the signal before the alert and after the fix. The frame has the
columns `figures.timeline.incident_timeline` draws: time, value, series_id, workload.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from afterfix.analysis.findings import _common
from afterfix.analysis.model import DecisionTree

__all__ = ["Signal", "incident_history", "incident_signal", "signal_history"]

MIN_PAD = timedelta(minutes=15)


@dataclass(frozen=True)
class Signal:
    name: str  # the detection's signal
    namespace: str | None = None  # the workload it was seen on, when known
    workload: str | None = None

    @property
    def metrics(self) -> list[str]:
        """The metric names its history may be stored under, in order of preference."""
        return list(dict.fromkeys([_common.SIGNAL_METRIC.format(signal=self.name), self.name]))


def incident_history(store, incident_id: str, trees: list[DecisionTree] | None = None):
    """(the incident's signal, its metric history) for `figures.timeline.incident_timeline`;
    (None, None) without a detection, (signal, None) without points. `trees` are the incident's
    (`analysis.tree.incident_trees`), read when not given. Raises afterfix.NotFound for an
    incident id the store does not hold."""
    from afterfix.analysis.tree import incident_trees

    trees = incident_trees(store, incident_id) if trees is None else trees
    signal = incident_signal(trees)
    if signal is None:
        return None, None
    starts = [n.start for t in trees for n in t.root.walk() if n.start is not None]
    ends = [n.end for t in trees for n in t.root.walk() if n.end is not None]
    if not starts:
        return signal.name, None
    return signal.name, signal_history(store, signal, min(starts), max(ends or starts))


def incident_signal(trees: list[DecisionTree]) -> Signal | None:
    """The signal of the first detection in `trees` (in their order), on the incident's workload."""
    detection = next((n for t in trees for n in t.nodes("detection")
                      if isinstance(n.details.get("signal"), str) and n.details["signal"]), None)
    if detection is None:
        return None
    services = [n.details.get("service") for t in trees for n in t.nodes("incident")]
    service = next((s for s in services if isinstance(s, str) and s.count("/") == 1), None)
    if service:
        namespace, workload = service.split("/")
        return Signal(detection.details["signal"], namespace or None, workload or None)
    target = next((n.details["target"] for t in trees for n in t.nodes("action") if n.details["target"].get("name")),
                  None)
    if target:
        return Signal(detection.details["signal"], target.get("namespace"), target["name"])
    return Signal(detection.details["signal"])


def signal_history(store, signal: Signal, start: datetime, end: datetime):
    """The signal's points (columns time, value, series_id, workload) from `start` to `end`,
    padded on both sides; None when the store holds none."""
    if not _common.has_metrics(store):
        return None
    pad = max(MIN_PAD, end - start)
    where, params = ["time BETWEEN ? AND ?", "value IS NOT NULL"], [start - pad, end + pad]
    if signal.workload:
        where.append("workload = ?")
        params.append(signal.workload)
    if signal.namespace:
        where.append("namespace = ?")
        params.append(signal.namespace)
    for name in signal.metrics:  # the first name that has points in the window
        points = store.query(f"SELECT time, value, series_id, workload FROM metrics WHERE name = ? AND "
                             f"{' AND '.join(where)} ORDER BY time", [name, *params])
        if len(points):
            return points
    return None
