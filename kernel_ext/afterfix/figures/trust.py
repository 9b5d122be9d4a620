"""The trust ladder as one figure: a row per rule, a column per level (1 alert & recommend ...
4 fix & report).

    trust_ladder(rungs, *, promote_after=None) -> go.Figure      rungs: trust.ladder.ladder(store, policy)

Each row shows where the rule stands now (a filled circle), where the policy put it (a ring), the
levels above its cap (shaded: the ladder never goes there), its history (a small triangle at each
level a person moved it to, pointing the way it moved; a cross where a suggestion was refused) and
what afterfix suggests (an arrow from the level now to the suggested one: green up, vermillion
down). Its track record is written at the row's end. Rows keep one height (ROW px), so twenty
rules make a taller figure, not smaller text. Every rule id, description and reason goes through
`_text` (they come from a policy file and from people).
"""

from __future__ import annotations

import plotly.graph_objects as go

from afterfix.figures._style import FONT_SIZE, GRID, INK, MUTED, TRUST_LEVELS, base_layout, nothing
from afterfix.figures._text import esc, hover, short

__all__ = ["trust_ladder", "ROW"]

ROW = 34  # px per rule
NOW = "#0072B2"
POLICY = "#555555"
PROMOTE = "#009E73"
DEMOTE = "#D55E00"
CAPPED = "#e3e3e3"
ID_CHARS = 28
RECORD_X = 4.62  # where the track record column starts, in level units


def trust_ladder(rungs, *, promote_after: int | None = None, title: str = "Trust ladder") -> go.Figure:
    """The ladder of `rungs` (`trust.ladder.Rung`, in policy order: the first rule on top)."""
    subtitle = ("filled: level now · ring: the policy's level · shaded: above the cap · arrow: suggested · "
                "▲▼ changes people made · ✕ refused" + (f" · {promote_after} clean outcomes in a row earn a promotion"
                                                       if promote_after else ""))
    if not rungs:
        return nothing(esc(title), "the trust policy has no rules")
    n = len(rungs)
    ys = list(range(n))
    fig = go.Figure()
    # shaded cells above each rule's cap, with white gaps as the grid
    z = [[1 if level > r.top else 0 for level in (1, 2, 3, 4)] for r in rungs]
    fig.add_trace(go.Heatmap(
        x=[1, 2, 3, 4], y=ys, z=z, zmin=0, zmax=1, colorscale=[[0, "#f7f9fb"], [1, CAPPED]], showscale=False,
        xgap=3, ygap=3, hoverinfo="skip", name="cap"))
    fig.add_trace(go.Scatter(
        x=[r.policy_level for r in rungs], y=ys, mode="markers", name="the policy's level",
        marker=dict(symbol="circle-open", size=20, color=POLICY, line=dict(width=2)),
        hovertext=[hover(r.rule_id, ("in the policy", TRUST_LEVELS.get(r.policy_level)),
                         ("line", r.line)) for r in rungs], hoverinfo="text"))
    fig.add_trace(go.Scatter(
        x=[r.level for r in rungs], y=ys, mode="markers", name="level now",
        marker=dict(symbol="circle", size=13, color=NOW, line=dict(width=1, color="white")),
        hovertext=[_now_hover(r) for r in rungs], hoverinfo="text"))
    _history(fig, rungs)
    for y, r in zip(ys, rungs):
        s = r.suggestion
        if s is None:
            continue
        color = PROMOTE if s.kind == "promote" else DEMOTE
        fig.add_annotation(x=s.to_level, y=y, ax=s.from_level, ay=y, xref="x", yref="y", axref="x", ayref="y",
                           showarrow=True, arrowhead=3, arrowsize=1.1, arrowwidth=2.5, arrowcolor=color,
                           standoff=9, startstandoff=8, text="")
    fig.add_trace(go.Scatter(  # the arrows' legend entries and hover
        x=[(r.suggestion.from_level + r.suggestion.to_level) / 2 for r in rungs if r.suggestion],
        y=[y for y, r in zip(ys, rungs) if r.suggestion], mode="markers", name="suggested",
        marker=dict(symbol="line-ew", size=16, line=dict(width=3, color=[
            PROMOTE if r.suggestion.kind == "promote" else DEMOTE for r in rungs if r.suggestion])),
        hovertext=[hover(f"{r.rule_id}: {r.suggestion.kind} {r.suggestion.from_level} → {r.suggestion.to_level}",
                         ("why", r.suggestion.why)) for r in rungs if r.suggestion],
        hoverinfo="text", showlegend=any(r.suggestion for r in rungs)))
    fig.add_trace(go.Scatter(
        x=[RECORD_X] * n, y=ys, mode="text", textposition="middle right", showlegend=False,
        text=[_record(r) for r in rungs], textfont=dict(size=FONT_SIZE, color=INK),
        hovertext=[_now_hover(r) for r in rungs], hoverinfo="text"))
    fig.update_layout(**base_layout(
        esc(title), esc(subtitle), width=1100, height=150 + ROW * n,
        margin=dict(l=10, r=20, t=78, b=40), hovermode="closest",
        legend=dict(orientation="h", yanchor="top", y=-0.02 if n > 6 else -0.08, x=0, xanchor="left",
                    font=dict(size=FONT_SIZE)),
        showlegend=True))
    fig.update_xaxes(range=[0.5, 7.5], tickvals=[1, 2, 3, 4], ticktext=[esc(TRUST_LEVELS[k]) for k in (1, 2, 3, 4)],
                     side="top", showgrid=False, zeroline=False, tickfont=dict(size=FONT_SIZE, color=INK),
                     fixedrange=True)
    fig.update_yaxes(range=[n - 0.5, -0.5], tickvals=ys, ticktext=[_label(r) for r in rungs], showgrid=False,
                     zeroline=False, tickfont=dict(size=FONT_SIZE, color=INK), fixedrange=True, automargin=True)
    fig.add_annotation(x=RECORD_X, y=-0.5, xref="x", yref="y", yanchor="bottom", xanchor="left", showarrow=False,
                       text="<b>track record</b>", font=dict(size=FONT_SIZE, color=MUTED))
    fig.add_vline(x=4.5, line=dict(color=GRID, width=1))
    return fig


def _history(fig, rungs) -> None:
    """One marker per change a person made: ▲/▼ at the level it moved to, ✕ at a refused one."""
    kinds = {("accepted", "promote"): ("triangle-up", PROMOTE, "promoted by a person"),
             ("accepted", "demote"): ("triangle-down", DEMOTE, "demoted by a person"),
             ("refused", "promote"): ("x-thin-open", PROMOTE, "promotion refused"),
             ("refused", "demote"): ("x-thin-open", DEMOTE, "demotion refused")}
    for key, (symbol, color, name) in kinds.items():
        xs, ys, texts = [], [], []
        for y, r in enumerate(rungs):
            mine = [c for c in r.changes if (c.outcome, c.kind) == key]
            for i, c in enumerate(mine):
                xs.append(c.to_level + 0.16 + 0.07 * min(i, 3))
                ys.append(y + 0.22)
                texts.append(hover(f"{r.rule_id}: {c.text()}", ("when", c.time.isoformat(sep=" ", timespec="minutes")),
                                   ("who", c.who), ("why", c.reason),
                                   ("suggested by afterfix", "yes" if c.suggested else "no")))
        if xs:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=name, hovertext=texts, hoverinfo="text",
                                     marker=dict(symbol=symbol, size=9, color=color,
                                                 line=dict(width=1.5, color=color))))


def _label(r) -> str:
    return short(r.rule_id, ID_CHARS)


def _record(r) -> str:
    rec = r.record
    bad = rec.rollbacks_by_people + rec.rollbacks_by_guard
    parts = [f"{rec.successes} verified", f"{bad} rolled back" + (f" ({rec.rollbacks_by_guard} by guard)"
                                                                    if rec.rollbacks_by_guard else ""),
             f"{rec.wrong_verdicts} wrong"]
    if rec.clean_streak:
        parts.append(f"streak {rec.clean_streak}")
    return esc(" · ".join(parts))


def _now_hover(r) -> str:
    rec = r.record
    s = r.suggestion
    return hover(r.rule_id,
                 ("rule", r.description),
                 ("level now", TRUST_LEVELS.get(r.level)),
                 ("in the policy", TRUST_LEVELS.get(r.policy_level)),
                 ("cap", TRUST_LEVELS.get(r.cap) if r.cap else "none (up to 4)"),
                 ("track record", rec.text()),
                 ("clean streak", rec.clean_streak),
                 ("suggested", f"{s.kind} to {s.to_level}: {s.why}" if s else "nothing"),
                 ("changes", [f"{c.time.isoformat(sep=' ', timespec='minutes')} {c.who}: {c.text()} ({c.reason})"
                              for c in r.changes] or None))
