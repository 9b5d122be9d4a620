"""Timelines: every span of an incident (or of one run) as a step in time, grouped by run.

    incident_timeline(store, incident_id) -> Timeline    the runs that worked on it, in order of start
    run_timeline(store, run_id) -> Timeline

A step is one span as it happened: start, end, kind (the tree's node kinds; a top agent span is
`run`), tool, status and its depth under the run's top spans (by parent span, not by the tree's
regrouping of actions under options). Steps come run after run, each run's in start order. A span without an agent name or
incident id takes its run's (OpenTelemetry agent frameworks name the agent only on the agent
span, and an incident often becomes known partway through a run).
"""

from __future__ import annotations

from afterfix.analysis import _load
from afterfix.analysis.model import Step, Timeline

__all__ = ["incident_timeline", "run_timeline", "build_timeline"]


def run_timeline(store, run_id: str) -> Timeline:
    """The steps of one run (its incident, if any, as the timeline's). Raises afterfix.NotFound
    for a run id the store does not hold."""
    runs = _load.load_runs(store, [run_id], options=False)
    return build_timeline(runs, incident_id=runs[0].incident_id)


def incident_timeline(store, incident_id: str) -> Timeline:
    """The steps of every run that worked on `incident_id`. Raises afterfix.NotFound for an
    incident id the store does not hold."""
    runs = _load.load_runs(store, _load.incident_run_ids(store, incident_id), options=False)
    return build_timeline(sorted(runs, key=lambda r: r.start), incident_id=incident_id)


def build_timeline(runs: list[_load.RunSpans], incident_id: str | None = None) -> Timeline:
    """The timeline of runs already loaded, in the order given."""
    steps: list[Step] = []
    for run in runs:
        for span in run.spans:
            depth = span["depth"]
            kind = _load.span_kind(span)
            if kind == "step" and depth == 0 and span["operation"] == "invoke_agent":
                kind = "run"  # the run's agent span, as the tree's root
            steps.append(Step(
                span_id=span["span_id"], parent_span_id=span["parent_span_id"], trace_id=span["trace_id"],
                run_id=run.run_id, incident_id=span["incident_id"] or incident_id or run.incident_id,
                agent_name=span["agent_name"] or run.agent_name, name=span["name"], kind=kind,
                tool=span["tool_name"], status=_load.status(span),
                status_message=span["status_message"], start=span["start_time"], end=span["end_time"],
                duration_ms=span["duration_ms"], depth=depth,
            ))
    starts = [s.start for s in steps]
    return Timeline(incident_id=incident_id, run_ids=[r.run_id for r in runs], steps=steps,
                    start=min(starts) if starts else None, end=max((s.end for s in steps), default=None))
