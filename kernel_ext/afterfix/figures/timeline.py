"""An incident's timeline as a plotly figure: each run's steps as bars in time, over the signal's metric.

    incident_timeline(timeline, metrics=None, *, signal=None, trees=None, width=1100) -> Figure

One lane per run (labelled with its agent name and run id, cut to fit), in the timeline's run
order; inside a lane, one row per span depth, so a run's agent span, the incident span under it
and the tool calls under that sit on separate rows instead of on top of each other. Bars are
coloured by step kind (the legend names them). Spans too short to see at the window's scale (tool
calls of a few milliseconds in a window of minutes) are drawn at a minimum width; their hover
gives the real duration. Failed steps get a red outline and a red ✕ at their end. Actions are
diamonds and verifications circles at their start, coloured by outcome; a dotted line marks each
change to production across the whole figure, metric included.

A Timeline holds spans, not what they decided, so the outcomes come from `trees`, the same
incident's decision trees (`afterfix.analysis.tree.incident_trees`): with them an action's hover
has its status, trust level and field diff and a verification's its outcome and before → after,
and `signal` defaults to the signal the first detection names, whose threshold is drawn as a
dashed line. Without them a marker shows only the span's status.

`metrics` is the affected signal's history, a DataFrame with columns `time` and `value` (one line;
with a `series_id` column, one line per series, named by `workload` when present). It is drawn in
a second panel under the lanes on the same time axis, which covers the steps and every metric
point given: pass the points of the window to be seen. With no metrics (None or no rows) there is
no second panel and the figure says "no metric history". A timeline with no steps draws a figure
that says "nothing in this window". All trace text goes through `afterfix.figures._text`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from afterfix.analysis.model import DecisionTree, Node, Step, Timeline
from afterfix.figures import _style as st
from afterfix.figures._text import cut, esc, hover, short

ROW_PX = 24
METRIC_PX = 210
GAP_PX = 48
LANE_LABEL = 28  # characters of agent name, and of run id, on a lane's two label lines
MIN_BAR = 0.004  # of the window: the narrowest bar drawn
HOVER_WIDTH = 80
_TOP_PX, _BOTTOM_PX, _LEFT_PX, _RIGHT_PX = 120, 56, 200, 24

KIND_ORDER = ["run", "incident", "detection", "decision", "action", "verification", "approval", "tool", "llm",
              "step", "option"]
_ACTION_COLORS = {"applied": st.KIND_COLORS["action"], "failed": st.ERROR, "denied": st.ERROR,
                  "recommended": "#999999", "dry_run": "#999999", "awaiting_approval": "#b59f00",
                  "approved": st.KIND_COLORS["action"]}


def incident_timeline(timeline: Timeline, metrics=None, *, signal: str | None = None,
                      trees: list[DecisionTree] | None = None, width: int = 1100) -> go.Figure:
    """The incident's steps as bars, one lane per run, over the signal's metric history."""
    title = "Incident timeline" + (" · " + short(timeline.incident_id, 60) if timeline.incident_id else "")
    if not timeline.steps:
        return st.nothing(title, width=width)
    nodes = {n.span_id: n for t in trees or [] for n in t.root.walk() if n.span_id and n.kind != "option"}
    if signal is None:
        signal = next((n.details.get("signal") for n in nodes.values()
                       if n.kind == "detection" and n.details.get("signal")), None)
    points = _metric_frame(metrics)
    lanes, rows = _lanes(timeline)
    n_rows = max(r for r in rows.values()) + 1
    lanes_px = n_rows * ROW_PX
    has_metric = points is not None
    height = _TOP_PX + lanes_px + _BOTTOM_PX + (GAP_PX + METRIC_PX if has_metric else 0)

    if has_metric:
        fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=GAP_PX / (height - _TOP_PX - _BOTTOM_PX),
                            row_heights=[lanes_px, METRIC_PX])
    else:
        fig = make_subplots(rows=1, cols=1)
    start, end = timeline.start or timeline.steps[0].start, timeline.end or timeline.steps[-1].end
    window_ms = max((end - start).total_seconds() * 1000, 1.0)

    for kind in sorted({s.kind for s in timeline.steps}, key=lambda k: KIND_ORDER.index(k) if k in KIND_ORDER else 99):
        steps = [s for s in timeline.steps if s.kind == kind]
        fig.add_trace(go.Bar(
            orientation="h", name=_KIND_NAMES.get(kind, kind), legendgroup=kind,
            base=[s.start for s in steps], x=[max(s.duration_ms, window_ms * MIN_BAR) for s in steps],
            y=[rows[s.span_id] for s in steps], width=0.72,
            marker=dict(color=st.KIND_COLORS.get(kind, "#bbbbbb"),
                        line=dict(color=[st.ERROR if s.status == "error" else "rgba(0,0,0,0.25)" for s in steps],
                                  width=[2 if s.status == "error" else 0.5 for s in steps])),
            hovertext=[_step_hover(s) for s in steps], hoverinfo="text",
        ), row=1, col=1)

    _markers(fig, timeline, rows, nodes)
    failed = [s for s in timeline.steps if s.status == "error"]
    if failed:
        fig.add_trace(go.Scatter(
            x=[s.end for s in failed], y=[rows[s.span_id] for s in failed], mode="markers", name="failed",
            marker=dict(symbol="x", size=11, color=st.ERROR, line=dict(width=1, color="white")),
            hovertext=[_step_hover(s) for s in failed], hoverinfo="text",
        ), row=1, col=1)

    # Shapes are collected and set once: `add_shape` re-validates every earlier shape on each call,
    # which made a run with 500 changes take 80 s to draw (measured).
    shapes = [dict(type="line", x0=step.start, x1=step.start, xref="x", yref="paper", y0=0, y1=1,
                   line=dict(color=st.KIND_COLORS["action"], width=1, dash="dot"), layer="below")
              for step in timeline.steps
              if step.kind == "action" and ((node := nodes.get(step.span_id)) is None
                                            or node.details.get("mutating") is not False)]

    ticks = [(first + last) / 2 for first, last, _ in lanes]
    fig.update_yaxes(range=[n_rows - 0.5, -0.5], tickvals=ticks, ticktext=[label for _, _, label in lanes],
                     showgrid=False, zeroline=False, fixedrange=True, row=1, col=1)
    shapes += [dict(type="rect", xref="x domain", yref="y", x0=0, x1=1, y0=first - 0.5, y1=last + 0.5,
                    fillcolor="rgba(0,0,0,0.035)", line=dict(width=0), layer="below")
               for i, (first, last, _) in enumerate(lanes) if i % 2 == 1]
    fig.update_layout(shapes=list(fig.layout.shapes) + shapes)
    fig.update_xaxes(type="date", showgrid=True, gridcolor="#eeeeee")
    fig.update_xaxes(title_text="time (UTC)", row=2 if has_metric else 1, col=1)

    if has_metric:
        _metric_panel(fig, points, signal, nodes)
    runs = len(timeline.run_ids)
    subtitle = (f"{len(timeline.steps)} steps in {runs} run{'s' * (runs != 1)}, "
                f"{esc(start.isoformat(sep=' ', timespec='seconds'))} → {esc(end.isoformat(sep=' ', timespec='seconds'))} UTC"
                + ("" if trees else "; pass trees= for action and verification outcomes"))
    fig.update_layout(**st.base_layout(
        title, subtitle, width=width, height=height, barmode="overlay", bargap=0,
        margin=dict(l=_LEFT_PX, r=_RIGHT_PX, t=_TOP_PX, b=_BOTTOM_PX),
        legend=dict(orientation="h", x=0, xanchor="left", y=1, yanchor="bottom"),
        hovermode="closest",
    ))
    if not has_metric:
        fig.add_annotation(text=esc(f"no metric history{' for ' + signal if signal else ''}"),
                           xref="paper", yref="paper", x=1, y=0, xanchor="right", yanchor="bottom", yshift=-44,
                           showarrow=False, font=dict(color=st.MUTED))
    return fig


_KIND_NAMES = {"llm": "model call", "tool": "tool call", "step": "other step"}


# -- lanes ---------------------------------------------------------------------------------------

def _lanes(timeline: Timeline) -> tuple[list[tuple[int, int, str]], dict[str, int]]:
    """[(first row, last row, label)] per run, and each step's row (its lane's first row + depth)."""
    order = list(timeline.run_ids)
    for s in timeline.steps:
        if s.run_id not in order:
            order.append(s.run_id)
    lanes: list[tuple[int, int, str]] = []
    rows: dict[str, int] = {}
    first = 0
    for run_id in order:
        steps = [s for s in timeline.steps if s.run_id == run_id]
        if not steps:
            continue
        depth = max(s.depth for s in steps)
        for s in steps:
            rows[s.span_id] = first + s.depth
        last = first + max(depth, 1)  # two rows at least: the label has two lines
        agent = next((s.agent_name for s in steps if s.agent_name), None)
        label = short(agent or "(no agent name)", LANE_LABEL) + "<br>" + short(run_id or "(no run id)", LANE_LABEL)
        lanes.append((first, last, label))
        first = last + 1
    return lanes, rows


# -- markers: actions and verifications ------------------------------------------------------------

def _markers(fig: go.Figure, timeline: Timeline, rows: dict[str, int], nodes: dict[str, Node]) -> None:
    for kind, symbol, name in (("action", "diamond", "action"), ("verification", "circle", "verification")):
        steps = [s for s in timeline.steps if s.kind == kind]
        if not steps:
            continue
        colors = [_marker_color(s, nodes.get(s.span_id)) for s in steps]
        fig.add_trace(go.Scatter(
            x=[s.start for s in steps], y=[rows[s.span_id] for s in steps], mode="markers", name=f"{name} (outcome)",
            marker=dict(symbol=symbol, size=13, color=colors, line=dict(width=1.5, color="white")),
            hovertext=[_marker_hover(s, nodes.get(s.span_id)) for s in steps], hoverinfo="text",
        ), row=1, col=1)


def _marker_color(step: Step, node: Node | None) -> str:
    if step.status == "error":
        return st.ERROR
    if node is None:
        return st.KIND_COLORS[step.kind]
    if step.kind == "verification":
        return st.OUTCOME_COLORS.get(node.details.get("outcome"), "#999999")
    return _ACTION_COLORS.get(node.details.get("status"), st.KIND_COLORS["action"])


def _marker_hover(step: Step, node: Node | None) -> str:
    if node is None:
        return _step_hover(step, extra=[("outcome", "not in the timeline: pass trees= to show it")])
    d = node.details
    if step.kind == "verification":
        change = (f"{_num(d.get('before'))} → {_num(d.get('after'))}"
                  if d.get("before") is not None or d.get("after") is not None else None)
        extra = [("outcome", d.get("outcome")), ("signal", d.get("signal")), ("before → after", change),
                 ("action", d.get("action_id"))]
    else:
        target = d.get("target") or {}
        diff = [_change(c) for c in d.get("diff") or []]
        extra = [("outcome", d.get("status")),
                 ("target", " ".join(str(x) for x in (target.get("kind"), "/".join(
                     str(x) for x in (target.get("namespace"), target.get("name")) if x)) if x) or None),
                 ("trust level", st.TRUST_LEVELS.get(d.get("trust_level"), d.get("trust_level"))),
                 ("changed", diff[:12] + ([f"… and {len(diff) - 12} more"] if len(diff) > 12 else [])),
                 ("verified", ", ".join(str(c.details.get("outcome")) for c in node.children
                                        if c.kind == "verification") or "no verification")]
    return _step_hover(step, extra=extra)


def _step_hover(step: Step, extra: list | None = None) -> str:
    return hover(
        cut(step.name, 200), *(extra or []),
        ("kind", step.kind), ("tool", step.tool),
        ("status", step.status if step.status != "unset" else None), ("error", step.status_message),
        ("start", step.start.isoformat(sep=" ", timespec="milliseconds")),
        ("duration", _duration(step.duration_ms)), ("agent", step.agent_name), ("run", step.run_id),
        ("span", step.span_id), width=HOVER_WIDTH)


def _change(c: dict) -> str:
    if c.get("change") == "added":
        return f"{c.get('path')} + {cut(c.get('after'), 40)}"
    if c.get("change") == "removed":
        return f"{c.get('path')} − {cut(c.get('before'), 40)}"
    return f"{c.get('path')} {cut(c.get('before'), 40)} → {cut(c.get('after'), 40)}"


def _num(v) -> str:
    return "?" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def _duration(ms: float) -> str:
    if ms < 1000:
        return f"{ms:.3g} ms"
    return f"{ms / 1000:.3g} s" if ms < 120_000 else str(timedelta(milliseconds=round(ms)))


# -- the metric panel ------------------------------------------------------------------------------

def _metric_frame(metrics):
    """The metric rows to draw, sorted by time; None when there are none."""
    if metrics is None:
        return None
    missing = [c for c in ("time", "value") if c not in getattr(metrics, "columns", ())]
    if missing:
        have = ", ".join(map(str, getattr(metrics, "columns", []))) or "none"
        raise ValueError(f"incident_timeline(metrics=...): the DataFrame needs columns time and value "
                         f"(missing {', '.join(missing)}; it has {have}); select them from the metrics table, "
                         "e.g. SELECT time, value FROM metrics WHERE name = ...")
    points = metrics.dropna(subset=["time", "value"]).sort_values("time", kind="stable")
    return points if len(points) else None


def _metric_panel(fig: go.Figure, points, signal: str | None, nodes: dict[str, Node]) -> None:
    series = [(None, points)]
    if "series_id" in points.columns and points["series_id"].nunique() > 1:
        series = list(points.groupby("series_id", sort=True))
    for key, frame in series:
        name = signal or "metric"
        if key is not None:
            workload = frame["workload"].dropna().iloc[0] if "workload" in frame.columns and frame["workload"].notna().any() else key
            name = f"{name} · {workload}"
        fig.add_trace(go.Scatter(
            x=frame["time"], y=frame["value"], mode="lines+markers", name=short(name, 40),
            line=dict(color=st.INK if key is None else None, width=2), marker=dict(size=4),
            hovertext=[hover(cut(name, 60), ("time", _iso(t)), ("value", _num(float(v))), width=HOVER_WIDTH)
                       for t, v in zip(frame["time"], frame["value"])],
            hoverinfo="text",
        ), row=2, col=1)
    threshold = next((n.details.get("threshold") for n in nodes.values() if n.kind == "detection"
                      and n.details.get("threshold") is not None
                      and (signal is None or n.details.get("signal") == signal)), None)
    if threshold is not None:
        fig.add_hline(y=float(threshold), line=dict(color=st.ERROR, dash="dash", width=1), row=2, col=1,
                      annotation_text=esc(f"threshold {_num(float(threshold))}"), annotation_position="top left",
                      annotation_font=dict(color=st.ERROR, size=st.FONT_SIZE))
    fig.update_yaxes(title_text=short(signal or "metric", 30), row=2, col=1, fixedrange=True)


def _iso(t) -> str:
    return t.isoformat(sep=" ", timespec="seconds") if isinstance(t, datetime) else str(t)
