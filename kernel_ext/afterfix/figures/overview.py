"""A night at a glance: its incidents over time and by kind, and its actions by trust level.

    night_overview(incidents, actions, *, width=1100) -> plotly.graph_objects.Figure
    incident_scenarios(store) -> DataFrame[incident_id, scenario]     for the incidents' `scenario` column

`incidents` and `actions` are rows of the views of those names (`SELECT * FROM incidents`, `SELECT
* FROM actions`, filtered to the window). Three panels:

- top, the night itself: one marker per incident at its start, on the row of its kind, coloured
  by severity and shaped by status; hover gives its id, title, service and counts;
- bottom left, incidents by kind: bars stacked by status, so "six memory leaks, five escalated"
  reads at once;
- bottom right, actions by trust level (`afterfix.trust.level`, named as the convention names
  them: "1 alert & recommend" ... "4 fix & report"), stacked by status; read-only actions
  (`mutating` false) are their own "read-only" part, so the rest counts changes to production.

An incident's kind is its `kind` column when the frame has one, else its `scenario` (the
`afterfix.scenario` span attribute, which the incidents view does not carry: merge in
`incident_scenarios(store)`), else the signal its title names ("shop/cart: memory_mb 408 over 384"
is `memory_mb`), else its title cut short. No incidents and no actions draw a figure saying
"nothing in this window"; one empty panel says so in its place. Trace text goes through
`afterfix.figures._text`.
"""

from __future__ import annotations

import math
import re

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from afterfix.figures import _style as st
from afterfix.figures._text import cut, esc, hover, short

KIND_CHARS = 28
ROW_PX = 26
_TITLE_SIGNAL = re.compile(r"^[^:]{1,120}:\s*([A-Za-z_][\w.]*)\s+\S+\s+over\s")
_SEVERITIES = list(st.SEVERITY_COLORS)
_STATUS_SYMBOLS = {"resolved": "circle", "mitigated": "square", "open": "circle-open", "escalated": "triangle-up"}
_INCIDENT_STATUS_COLORS = {"resolved": "#009E73", "mitigated": "#56B4E9", "open": "#E69F00", "escalated": "#c0392b"}
_ACTION_STATUS_COLORS = {"applied": "#CC79A7", "approved": "#a35a87", "awaiting_approval": "#E69F00",
                         "recommended": "#56B4E9", "dry_run": "#bbbbbb", "denied": "#8b0000", "failed": "#c0392b",
                         "read-only": "#dddddd"}
_UNKNOWN_LEVEL = "no trust level"
_TOP_PX, _BOTTOM_PX, _GAP_PX = 110, 60, 100


def incident_scenarios(store) -> pd.DataFrame:
    """Each incident's `afterfix.scenario` (the first one its spans name), for `night_overview`'s kinds:
    `incidents.merge(incident_scenarios(store), on="incident_id", how="left")`."""
    return store.query(
        """SELECT incident_id, min(json_extract_string(attributes, '$."afterfix.scenario"')) AS scenario
           FROM spans WHERE incident_id IS NOT NULL
             AND json_extract_string(attributes, '$."afterfix.scenario"') IS NOT NULL
           GROUP BY incident_id ORDER BY incident_id""")


def night_overview(incidents: pd.DataFrame, actions: pd.DataFrame, *, width: int = 1100) -> go.Figure:
    """The night's incidents over time and by kind, and its actions by trust level."""
    _need(incidents, "incidents", ("incident_id", "start_time"))
    _need(actions, "actions", ("trust_level", "status"))
    title = "Night overview"
    if incidents.empty and actions.empty:
        return st.nothing(title, width=width)
    incidents = incidents.sort_values(["start_time", "incident_id"], kind="stable").reset_index(drop=True)
    kinds = incidents.apply(incident_kind, axis=1) if len(incidents) else pd.Series([], dtype=object)
    order = list(kinds.value_counts(sort=False).sort_index().sort_values(ascending=False, kind="stable").index)
    kind_px = max(len(order), 3) * ROW_PX
    height = _TOP_PX + _BOTTOM_PX + _GAP_PX + kind_px * 2
    fig = make_subplots(
        rows=2, cols=2, specs=[[{"colspan": 2}, None], [{}, {}]], row_heights=[0.5, 0.5],
        column_widths=[0.5, 0.5], vertical_spacing=_GAP_PX / (height - _TOP_PX - _BOTTOM_PX), horizontal_spacing=0.16,
        subplot_titles=("incidents over time, by kind", "incidents by kind and status", "actions by trust level"))
    fig.update_annotations(font=dict(size=13, color=st.INK))  # the panel titles
    labels = [short(k, KIND_CHARS) for k in order]
    label_of = dict(zip(order, labels))

    if len(incidents):
        _timeline_panel(fig, incidents, kinds, label_of)
        _kind_panel(fig, incidents, kinds, order, label_of)
        for row, col in ((1, 1), (2, 1)):
            fig.update_yaxes(type="category", categoryorder="array", categoryarray=labels[::-1],
                             range=[-0.5, max(len(order), 3) - 0.5], row=row, col=col)
    else:
        for row, col in ((1, 1), (2, 1)):
            _empty_panel(fig, "no incidents in this window", row, col)
    if len(actions):
        _trust_panel(fig, actions)
    else:
        _empty_panel(fig, "no actions in this window", 2, 2)

    changes = int(actions["mutating"].fillna(False).astype(bool).sum()) if "mutating" in actions else len(actions)
    span = ""
    if len(incidents):
        first, last = incidents["start_time"].min(), incidents["start_time"].max()
        span = f" · {esc(_time(first))} → {esc(_time(last))} UTC"
    subtitle = (f"{len(incidents)} incident{'s' * (len(incidents) != 1)}, {len(actions)} "
                f"action{'s' * (len(actions) != 1)} ({changes} change{'s' * (changes != 1)} to production)")
    fig.update_layout(**st.base_layout(
        title + span, subtitle, width=width, height=height, barmode="stack", hovermode="closest",
        margin=dict(l=20, r=20, t=_TOP_PX, b=_BOTTOM_PX),
        legend=dict(orientation="v", x=1.01, xanchor="left", y=1, yanchor="top", tracegroupgap=14,
                    traceorder="grouped",
                    font=dict(size=st.FONT_SIZE)),
    ))
    fig.update_xaxes(title_text="time (UTC)", type="date", row=1, col=1)
    if len(incidents):
        # A margin either side, so the first and last markers and hour ticks are not cut at the edges.
        first, last = incidents["start_time"].min(), incidents["start_time"].max()
        pad = max((last - first) * 0.04, pd.Timedelta(minutes=5))
        fig.update_xaxes(range=[first - pad, last + pad], row=1, col=1)
    fig.update_xaxes(title_text="incidents", rangemode="tozero", row=2, col=1)
    fig.update_yaxes(title_text="actions", rangemode="tozero", row=2, col=2)
    return fig


def incident_kind(row) -> str:
    """The incident's kind (raw text): `kind`, else `scenario`, else the title's signal, else its title."""
    for column in ("kind", "scenario"):
        value = row.get(column)
        if isinstance(value, str) and value.strip():
            return value.strip()
    title = row.get("title")
    if not isinstance(title, str) or not title.strip():
        return "(untitled)"
    match = _TITLE_SIGNAL.match(title)
    return match.group(1) if match else cut(title, KIND_CHARS)


# -- panels ----------------------------------------------------------------------------------------

def _timeline_panel(fig, incidents: pd.DataFrame, kinds: pd.Series, label_of: dict) -> None:
    severity = incidents.get("severity", pd.Series([None] * len(incidents))).fillna("").astype(str)
    groups = [s for s in _SEVERITIES if (severity == s).any()] + sorted(set(severity) - set(_SEVERITIES))
    for sev in groups:
        rows = incidents[severity == sev]
        status = rows.get("status", pd.Series(["open"] * len(rows), index=rows.index)).fillna("open")
        color = st.SEVERITY_COLORS.get(sev, "#999999")
        fig.add_trace(go.Scatter(
            x=rows["start_time"], y=[label_of[kinds[i]] for i in rows.index], mode="markers",
            name=short(sev or "no severity", 20), showlegend=False,
            marker=dict(size=13, color=color, opacity=0.9, line=dict(width=1.5, color=color),
                        symbol=[_STATUS_SYMBOLS.get(s, "circle") for s in status]),
            hovertext=[_incident_hover(r, kinds[i]) for i, r in rows.iterrows()], hoverinfo="text",
        ), row=1, col=1)
        # The legend explains colour and shape apart (a trace's legend icon would show its first shape).
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=short(sev or "no severity", 20),
                                 legendgroup="severity", legendgrouptitle_text="severity (colour)",
                                 marker=dict(size=11, symbol="circle", color=color)), row=1, col=1)
    # The status shapes explained once, as legend entries without points.
    present = set(incidents.get("status", pd.Series(dtype=object)).fillna("open"))
    for status, symbol in _STATUS_SYMBOLS.items():
        if status in present:
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=status, legendgroup="shape",
                                     legendgrouptitle_text="status (shape)",
                                     marker=dict(size=11, symbol=symbol, color=st.MUTED)), row=1, col=1)


def _kind_panel(fig, incidents: pd.DataFrame, kinds: pd.Series, order: list, label_of: dict) -> None:
    status = incidents.get("status", pd.Series(["open"] * len(incidents))).fillna("open").astype(str)
    statuses = [s for s in _INCIDENT_STATUS_COLORS if (status == s).any()] + sorted(set(status) - set(_INCIDENT_STATUS_COLORS))
    for s in statuses:
        counts = [int(((kinds == k) & (status == s)).sum()) for k in order]
        fig.add_trace(go.Bar(
            orientation="h", x=counts, y=[label_of[k] for k in order], name=short(s, 20),
            legendgroup="incident status", legendgrouptitle_text="incident status",
            marker=dict(color=_INCIDENT_STATUS_COLORS.get(s, "#999999")),
            hovertext=[esc(f"{n} {cut(k, 60)} incident{'s' * (n != 1)} {s}") for k, n in zip(order, counts)],
            hoverinfo="text",
        ), row=2, col=1)


def _trust_panel(fig, actions: pd.DataFrame) -> None:
    levels = actions["trust_level"].map(_level_label)
    mutating = actions["mutating"].fillna(False).astype(bool) if "mutating" in actions else pd.Series(True, index=actions.index)
    status = actions["status"].fillna("no status").astype(str).where(mutating, "read-only")
    axis = list(st.TRUST_LEVELS.values()) + ([_UNKNOWN_LEVEL] if (levels == _UNKNOWN_LEVEL).any() else [])
    statuses = [s for s in _ACTION_STATUS_COLORS if (status == s).any()] + sorted(set(status) - set(_ACTION_STATUS_COLORS))
    for s in statuses:
        counts = [int(((levels == level) & (status == s)).sum()) for level in axis]
        fig.add_trace(go.Bar(
            x=axis, y=counts, name=short(s.replace("_", " "), 24), legendgroup="action status",
            legendgrouptitle_text="action status", marker=dict(color=_ACTION_STATUS_COLORS.get(s, "#999999")),
            hovertext=[esc(f"{n} action{'s' * (n != 1)} {s.replace('_', ' ')} at trust level {level}")
                       for level, n in zip(axis, counts)], hoverinfo="text",
        ), row=2, col=2)
    totals = [int((levels == level).sum()) for level in axis]
    fig.add_trace(go.Scatter(x=axis, y=totals, mode="text", text=[str(t) if t else "" for t in totals],
                             textposition="top center", showlegend=False, hoverinfo="skip"), row=2, col=2)
    fig.update_yaxes(range=[0, max(totals) * 1.2 + 0.5], row=2, col=2)
    # Two-line tick labels ("3 fix &" / "inform"), so four levels fit side by side.
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=axis, tickangle=0, tickvals=axis,
                     ticktext=[_two_lines(a) for a in axis], row=2, col=2)


def _empty_panel(fig, message: str, row: int, col: int) -> None:
    fig.add_trace(go.Scatter(x=[None], y=[None], showlegend=False, hoverinfo="skip"), row=row, col=col)
    fig.update_xaxes(visible=False, row=row, col=col)
    fig.update_yaxes(visible=False, row=row, col=col)
    axis = fig.get_subplot(row, col)
    fig.add_annotation(text=esc(message), xref=f"{axis.xaxis.plotly_name.replace('axis', '')} domain",
                       yref=f"{axis.yaxis.plotly_name.replace('axis', '')} domain", x=0.5, y=0.5,
                       showarrow=False, font=dict(size=13, color=st.MUTED))


# -- small things ----------------------------------------------------------------------------------

def _need(frame, name: str, columns: tuple[str, ...]) -> None:
    have = list(getattr(frame, "columns", []))
    missing = [c for c in columns if c not in have]
    if missing:
        raise ValueError(f"night_overview({name}=...): needs columns {', '.join(columns)} (missing "
                         f"{', '.join(missing)}); pass the rows of the {name} view: "
                         f"store.query(\"SELECT * FROM {name}\")")


def _level_label(level) -> str:
    if level is None or (isinstance(level, float) and math.isnan(level)) or level is pd.NA:
        return _UNKNOWN_LEVEL
    try:
        return st.TRUST_LEVELS.get(int(level), f"level {int(level)}")
    except (TypeError, ValueError):
        return _UNKNOWN_LEVEL


def _two_lines(label: str) -> str:
    """"3 fix & inform" as "3 fix" over "& inform" (escaped): a break after the second word."""
    words = label.split(" ")
    return esc(" ".join(words[:2])) + ("<br>" + esc(" ".join(words[2:])) if len(words) > 2 else "")


def _time(t) -> str:
    return pd.Timestamp(t).isoformat(sep=" ", timespec="minutes")


def _incident_hover(row, kind: str) -> str:
    def count(column):
        value = row.get(column)
        return None if value is None or pd.isna(value) else int(value)

    end = row.get("end_time")
    return hover(
        f"{cut(row.get('incident_id'), 60)}: {cut(row.get('title') or '', 200)}",
        ("kind", kind), ("severity", row.get("severity")), ("status", row.get("status")),
        ("service", row.get("service")),
        ("when", f"{_time(row['start_time'])} → {_time(end)} UTC" if end is not None and not pd.isna(end)
         else _time(row["start_time"])),
        ("runs", count("runs")), ("decisions", count("decisions")), ("changes", count("changes")),
        ("errors", count("errors")), width=80)
