"""What the figures share: fonts, the colours of node kinds, and the figure that says there is nothing.

One font size for all trace text (FONT_SIZE, 12 px), whatever the number of rows: a figure with
more rows grows taller instead of shrinking its text. Colours follow Okabe and Ito's palette, which
stays distinguishable with the common colour-vision deficiencies.
"""

from __future__ import annotations

import plotly.graph_objects as go

from afterfix.figures._text import esc

FONT_FAMILY = "Arial, 'Liberation Sans', 'DejaVu Sans', sans-serif"
FONT_SIZE = 12
TEMPLATE = "plotly_white"
NOTHING = "nothing in this window"

INK = "#222222"
MUTED = "#666666"
ERROR = "#c0392b"
GRID = "#d0d0d0"

KIND_COLORS = {
    "run": "#4d4d4d",
    "incident": "#8c564b",
    "detection": "#E69F00",
    "decision": "#0072B2",
    "option": "#009E73",
    "action": "#CC79A7",
    "verification": "#56B4E9",
    "approval": "#b59f00",
    "tool": "#999999",
    "llm": "#7f7f7f",
    "step": "#bbbbbb",
}

OUTCOME_COLORS = {"success": "#009E73", "failure": ERROR, "inconclusive": "#999999"}

# afterfix.trust.level, as the convention names the levels.
TRUST_LEVELS = {1: "1 alert & recommend", 2: "2 fix with approval", 3: "3 fix & inform", 4: "4 fix & report"}

SEVERITY_COLORS = {"critical": "#8b0000", "high": "#D55E00", "medium": "#E69F00", "low": "#56B4E9",
                   "info": "#999999"}


def base_layout(title: str, subtitle: str | None = None, **more) -> dict:
    """Layout keys every figure sets. `title` and `subtitle` must already be escaped."""
    layout = dict(
        template=TEMPLATE,
        font=dict(family=FONT_FAMILY, size=FONT_SIZE, color=INK),
        # Pinned to the top of the figure in pixels, so a tall figure's title does not drift.
        title=dict(text=title, x=0.01, xanchor="left", yref="container", y=1, yanchor="top",
                   pad=dict(t=14), font=dict(size=16),
                   subtitle=dict(text=subtitle or "", font=dict(size=12, color=MUTED))),
        # Dark text on white: left to plotly, hover text takes a colour contrasting with the trace's, which
        # on a white label is pale grey.
        hoverlabel=dict(align="left", font=dict(family=FONT_FAMILY, size=FONT_SIZE, color=INK), bgcolor="white",
                        bordercolor=GRID),
    )
    layout.update(more)
    return layout


def nothing(title: str, message: str = NOTHING, *, width: int = 900, height: int = 260) -> go.Figure:
    """A figure with no data that says `message` in its middle: what an empty window draws."""
    fig = go.Figure(layout=base_layout(title, width=width, height=height))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.add_annotation(text=esc(message), x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=14, color=MUTED))
    return fig
