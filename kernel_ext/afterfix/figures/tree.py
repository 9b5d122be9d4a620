"""The decision tree of one run as a plotly figure: what the agent looked at, weighed, chose and did.

    decision_tree(tree, *, max_nodes=600, width=1100) -> plotly.graph_objects.Figure

Layout: an indented outline, one row per node, read top to bottom like the run itself. Each node
is a marker at x = its depth and y = its row, with its label to the right; elbow lines join it
to its parent. The rows are a fixed 22 px apart and the text a fixed 12 px, so the figure grows
taller with the tree instead of shrinking its text: a run with 60 decisions (some 500 rows) stays
as readable as one with a single decision, and scrolls. Two alternatives were tried on paper and
set aside: a top-down node-link drawing gives each level one row, so the options of 60 decisions
share one line and their labels collide; go.Treemap / go.Icicle fit every node into a fixed box,
so deep or crowded branches get boxes too small for any text, and a rejected option's reason (the
point of the figure) would be cut to nothing.

What is shown:
- the path detection → decision → selected option → action → verification (`Node.on_path`):
  thick dark connectors, larger outlined markers and bold labels;
- every option with its verdict, score and reason in the label ("✗ rejected: ... (0.1): reason"),
  rejected ones in red-brown; the full description, reason and evidence on hover;
- actions with their field diff (`spec.maxReplicas 2 → 6`), status, trust level and the outcome
  of their verification, and on hover the target, resourceVersions, dry-run and every changed field;
- failed spans in red, with their error.

Keeping long runs readable: three or more consecutive tool or model calls off the path, without
errors and without children, become one summary row ("8 tool calls: prometheus_query ×5, ...")
whose hover lists each call; failed calls always keep their own row. A tree with more than
`max_nodes` rows draws the first `max_nodes - 1` and ends with a row saying how many were left out.

Labels are cut to what fits the figure's width at their depth (with "…"); hover text is the full
text, wrapped. All of it is trace text and goes through `afterfix.figures._text`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go

from afterfix.analysis.model import DecisionTree, Node
from afterfix.figures import _style as st
from afterfix.figures._text import cut, esc, hover, short, wrap

ROW_PX = 22
INDENT_PX = 22
CHAR_PX = 6.4  # a bold 12 px Arial/Liberation character, on average, measured in Chromium plus a margin
COLLAPSE_AT = 3
HOVER_WIDTH = 90
_TOP_PX, _BOTTOM_PX, _SIDE_PX = 140, 24, 16

PATH_COLOR = st.INK
EDGE_COLOR = "#c4c4c4"
REJECTED_COLOR = "#a0441a"
_COLLAPSIBLE = {"tool", "llm"}
_SYMBOLS = {
    "run": "square", "incident": "hexagon", "detection": "triangle-up", "decision": "diamond",
    "option": "circle", "action": "star", "verification": "circle", "approval": "pentagon",
    "tool": "circle-open", "llm": "circle-open", "step": "circle-open", "summary": "circle-open",
    "more": "circle-open",
}
_VERDICT_MARK = {"selected": "✔", "rejected": "✗", "considered": "○"}
_OUTCOME_MARK = {"success": "✔ verified", "failure": "✗ verification failed",
                 "inconclusive": "? verification inconclusive"}


@dataclass
class _Row:
    kind: str  # a node kind, or "summary" (collapsed calls) or "more" (rows left out)
    depth: int
    parent: int | None
    node: Node | None = None
    members: list[Node] = field(default_factory=list)
    on_path: bool = False


def decision_tree(tree: DecisionTree, *, max_nodes: int = 600, width: int = 1100) -> go.Figure:
    """The run's decision tree as an outline: one 22 px row per node, selected path highlighted."""
    if max_nodes < 2:
        raise ValueError(f"decision_tree(max_nodes={max_nodes}): draw at least 2 rows (the run and one more)")
    rows = _rows(tree.root)
    total = len(rows)
    if total > max_nodes:
        rows = rows[: max_nodes - 1]
        rows.append(_Row("more", 0, None, members=[]))
    n = len(rows)
    plot_px = width - 2 * _SIDE_PX
    x_max = plot_px / INDENT_PX  # x in indent units, so one unit is INDENT_PX pixels

    fig = go.Figure()
    fig.add_trace(_edges(rows, on_path=False))
    fig.add_trace(_edges(rows, on_path=True))
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(_legend_group(row), []).append(i)
    for group in sorted(groups, key=_GROUP_ORDER.index):
        idx = groups[group]
        fig.add_trace(go.Scatter(
            x=[rows[i].depth for i in idx], y=[i for i in idx], mode="markers+text", name=_GROUP_NAMES[group],
            text=[_label(rows[i], _fits(rows[i].depth, plot_px), total, max_nodes) for i in idx],
            textposition="middle right", cliponaxis=False,
            textfont=dict(size=st.FONT_SIZE, color=[_text_color(rows[i]) for i in idx]),
            hovertext=[_hover(rows[i], total, max_nodes) for i in idx], hoverinfo="text",
            marker=dict(symbol=_SYMBOLS.get(group.split(":")[0], "circle"),
                        size=[13 if rows[i].on_path else 9 for i in idx],
                        color=_GROUP_COLORS[group],
                        line=dict(width=[2 if rows[i].on_path else 1 for i in idx],
                                  color=[st.ERROR if _failed(rows[i]) else (PATH_COLOR if rows[i].on_path
                                         else _GROUP_COLORS[group]) for i in idx])),
        ))

    decisions = tree.nodes("decision")
    options = tree.nodes("option")
    rejected = sum(1 for o in options if (o.details.get("verdict") or "") == "rejected")
    actions = tree.nodes("action")
    title = "Decision tree · run " + short(tree.run_id, 60)
    if tree.agent_name:
        title += " · " + short(tree.agent_name, 40)
    if tree.incident_id:
        title += " · incident " + short(tree.incident_id, 40)
    subtitle = (f"{len(decisions)} decision{'s' * (len(decisions) != 1)}, {len(options)} options "
                f"({rejected} rejected), {len(actions)} action{'s' * (len(actions) != 1)}; "
                "the dark bold path is what was chosen and done. Hover a row for its full text.")
    fig.update_layout(**st.base_layout(
        title, subtitle, width=width, height=_TOP_PX + _BOTTOM_PX + n * ROW_PX,
        margin=dict(l=_SIDE_PX, r=_SIDE_PX, t=_TOP_PX, b=_BOTTOM_PX),
        legend=dict(orientation="h", x=0, xanchor="left", y=1, yanchor="bottom", font=dict(size=st.FONT_SIZE)),
        showlegend=True, dragmode=False, hovermode="closest",
    ))
    fig.update_xaxes(range=[-0.5, x_max - 0.5], visible=False, fixedrange=True)
    # Reversed, one unit per row: row i sits i * ROW_PX below the top whatever the tree's size.
    fig.update_yaxes(range=[n - 0.5, -0.5], visible=False, fixedrange=True)
    return fig


# -- rows ------------------------------------------------------------------------------------------

def _rows(root: Node) -> list[_Row]:
    rows: list[_Row] = []

    def visit(node: Node, depth: int, parent: int | None) -> None:
        me = len(rows)
        rows.append(_Row(node.kind, depth, parent, node=node, on_path=node.on_path))
        pending: list[Node] = []

        def flush() -> None:
            if len(pending) >= COLLAPSE_AT:
                rows.append(_Row("summary", depth + 1, me, members=list(pending)))
            else:
                for p in pending:
                    visit(p, depth + 1, me)
            pending.clear()

        for child in node.children:
            if _collapsible(child):
                pending.append(child)
            else:
                flush()
                visit(child, depth + 1, me)
        flush()

    visit(root, 0, None)
    return rows


def _collapsible(node: Node) -> bool:
    return node.kind in _COLLAPSIBLE and not node.on_path and not node.children and node.status != "error"


def _fits(depth: int, plot_px: float) -> int:
    """How many characters of label fit right of a marker at `depth`."""
    return max(int((plot_px - depth * INDENT_PX - 2 * INDENT_PX) / CHAR_PX), 24)


# -- legend groups: one trace per kind (options split by verdict) so the legend explains colours --

_GROUP_ORDER = ["run", "incident", "detection", "decision", "option:selected", "option:rejected",
                "option:considered", "action", "verification", "approval", "tool", "llm", "step", "summary", "more"]
_GROUP_NAMES = {"option:selected": "option (selected)", "option:rejected": "option (rejected)",
                "option:considered": "option (considered)", "summary": "tool/model calls (grouped)",
                "more": "rows left out", "llm": "model call", "tool": "tool call"}
_GROUP_NAMES.update({g: g for g in _GROUP_ORDER if g not in _GROUP_NAMES})
_GROUP_COLORS = {**st.KIND_COLORS, "option:selected": "#009E73", "option:rejected": "#D55E00",
                 "option:considered": "#999999", "summary": "#999999", "more": "#999999"}


def _legend_group(row: _Row) -> str:
    if row.kind == "option":
        verdict = (row.node.details.get("verdict") if row.node else None) or "considered"
        return f"option:{verdict if verdict in _VERDICT_MARK else 'considered'}"
    return row.kind if row.kind in _GROUP_ORDER else "step"


def _failed(row: _Row) -> bool:
    """A span that failed, or a verification that found the action did not work."""
    node = row.node
    if node is None:
        return False
    return node.status == "error" or (node.kind == "verification" and node.details.get("outcome") == "failure")


def _text_color(row: _Row) -> str:
    if _failed(row):
        return st.ERROR
    if row.on_path:
        return st.INK
    if row.kind == "option" and _legend_group(row) == "option:rejected":
        return REJECTED_COLOR
    if row.kind in ("tool", "llm", "step", "summary", "more"):
        return st.MUTED
    return "#333333"


def _edges(rows: list[_Row], *, on_path: bool) -> go.Scatter:
    """Elbow connectors parent → child as one line trace (None breaks the line between them)."""
    xs: list[Any] = []
    ys: list[Any] = []
    for i, row in enumerate(rows):
        if row.parent is None:
            continue
        path = row.on_path and rows[row.parent].on_path
        if path != on_path:
            continue
        parent = rows[row.parent]
        xs += [parent.depth, parent.depth, row.depth, None]
        ys += [row.parent, i, i, None]
    return go.Scatter(
        x=xs, y=ys, mode="lines", hoverinfo="skip", name="chosen path" if on_path else "tree",
        showlegend=on_path, line=dict(color=PATH_COLOR if on_path else EDGE_COLOR, width=3.5 if on_path else 1),
    )


# -- labels: one short line ------------------------------------------------------------------------

def _label(row: _Row, n: int, total: int, max_nodes: int) -> str:
    if row.kind == "more":
        return esc(f"… {total - max_nodes + 1} more rows not drawn (of {total}): "
                   f"decision_tree(tree, max_nodes={total}) draws them all")
    if row.kind == "summary":
        return short(_summary_text(row.members), n)
    node = row.node
    text = _line(node)
    if node.status == "error":
        err = node.details.get("error") or ""
        text = "✗ " + text + (f" · error: {err}" if err and err not in text else " · failed")
    label = short(text, n)
    return f"<b>{label}</b>" if row.on_path else label


def _line(node: Node) -> str:
    """The node's one-line description, raw (the caller cuts and escapes it)."""
    d = node.details
    kind = node.kind
    if kind == "run":
        bits = [f"run {d.get('run_id') or node.label}", d.get("agent_name"),
                f"{d['spans']} spans" if d.get("spans") is not None else None, d.get("status")]
        return " · ".join(str(b) for b in bits if b)
    if kind == "incident":
        extra = ", ".join(str(x) for x in (d.get("severity"), d.get("status")) if x)
        return (f"incident {d.get('incident_id') or ''}: {d.get('title') or node.label}"
                + (f" ({extra})" if extra else ""))
    if kind == "detection":
        head = f"detected {d.get('signal') or node.label}"
        if d.get("value") is not None:
            head += f" = {_num(d['value'])}"
        if d.get("threshold") is not None:
            head += f" over {_num(d['threshold'])}"
        return head + (f": {d['summary']}" if d.get("summary") else "")
    if kind == "decision":
        return f"decide: {d.get('question') or node.label}"
    if kind == "option":
        verdict = d.get("verdict") or "considered"
        what = d.get("description") or d.get("option_id") or node.label
        score = f" ({_num(d['score'])})" if d.get("score") is not None else ""
        reason = f": {d['reason']}" if d.get("reason") else ""
        return f"{_VERDICT_MARK.get(verdict, '○')} {verdict}: {what}{score}{reason}"
    if kind == "action":
        return _action_line(node)
    if kind == "verification":
        out = d.get("outcome") or "?"
        change = ""
        if d.get("before") is not None or d.get("after") is not None:
            change = f" ({_num(d.get('before'))} → {_num(d.get('after'))})"
        return f"verify {d.get('signal') or ''}: {out}{change}"
    if kind == "approval":
        who = f" by {d['approver']}" if d.get("approver") else ""
        return f"approval {d.get('status') or ''}{who}" + (f": {d['reason']}" if d.get("reason") else "")
    if kind == "tool":
        args = d.get("arguments")
        return f"tool {d.get('tool_name') or node.label}" + (f" {_compact(args)}" if args else "")
    if kind == "llm":
        tokens = ""
        if d.get("input_tokens") is not None or d.get("output_tokens") is not None:
            tokens = f" · {d.get('input_tokens') or 0} → {d.get('output_tokens') or 0} tokens"
        return f"model call {d.get('model') or node.label}{tokens}"
    return node.label


def _action_line(node: Node) -> str:
    d = node.details
    target = d.get("target") or {}
    ref = "/".join(str(x) for x in (target.get("namespace"), target.get("name")) if x)
    head = " ".join(str(x) for x in (d.get("verb"), target.get("kind"), ref) if x) or node.label
    bits = [head]
    if d.get("status"):
        bits.append(str(d["status"]))
    if d.get("trust_level") is not None:
        bits.append(f"L{d['trust_level']}")
    diff = d.get("diff") or []
    if diff:
        shown = "; ".join(_change(c) for c in diff[:2])
        bits.append(shown + (f" (+{len(diff) - 2} more)" if len(diff) > 2 else ""))
    outcome = _verification_of(node)
    if outcome:
        bits.append(outcome)
    elif d.get("mutating") and d.get("status") == "applied":
        bits.append("unverified")
    return " · ".join(bits)


def _verification_of(node: Node) -> str | None:
    outcomes = [c.details.get("outcome") for c in node.children if c.kind == "verification"]
    if not outcomes:
        return None
    last = outcomes[-1]
    return _OUTCOME_MARK.get(last, f"verification {last}")


def _change(c: dict) -> str:
    path = c.get("path", "?")
    if c.get("change") == "added":
        return f"{path} + {_value(c.get('after'))}"
    if c.get("change") == "removed":
        return f"{path} − {_value(c.get('before'))}"
    return f"{path} {_value(c.get('before'))} → {_value(c.get('after'))}"


def _value(v: Any, n: int = 40) -> str:
    if v is None:
        return "null"
    if isinstance(v, (dict, list)):
        return cut(json.dumps(v, sort_keys=True, separators=(",", ":")), n)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return _num(v)
    return cut(v, n)


def _num(v: Any) -> str:
    if v is None:
        return "?"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _compact(v: Any) -> str:
    """Arguments as one line: JSON text is re-dumped without spaces, anything else as it is."""
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError:
            return v
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, separators=(",", ":"))
    return str(v)


def _summary_text(members: list[Node]) -> str:
    counts = Counter((m.details.get("tool_name") if m.kind == "tool" else m.details.get("model")) or m.label
                     for m in members)
    tools = sum(1 for m in members if m.kind == "tool")
    llms = len(members) - tools
    what = " and ".join(x for x in (f"{tools} tool call{'s' * (tools != 1)}" if tools else "",
                                    f"{llms} model call{'s' * (llms != 1)}" if llms else "") if x)
    names = ", ".join(f"{name} ×{k}" if k > 1 else str(name) for name, k in counts.most_common())
    return f"{what}: {names}"


# -- hover: the full text, wrapped -----------------------------------------------------------------

def _hover(row: _Row, total: int, max_nodes: int) -> str:
    if row.kind == "more":
        return esc(f"{total - max_nodes + 1} rows not drawn; pass max_nodes={total} to draw them all")
    if row.kind == "summary":
        lines = [f"<b>{esc(_summary_text(row.members))}</b>"]
        for m in row.members[:40]:
            d = m.details
            if m.kind == "tool":
                lines.append(wrap(f"• {d.get('tool_name') or m.label} {_compact(d.get('arguments') or '')}"
                                  f" → {cut(d.get('result') or '', 120)}", HOVER_WIDTH))
            else:
                lines.append(wrap(f"• {_line(m)}", HOVER_WIDTH))
        if len(row.members) > 40:
            lines.append(esc(f"… and {len(row.members) - 40} more"))
        return "<br>".join(lines)
    node = row.node
    d = node.details
    kind = node.kind
    common = [("status", node.status if node.status != "unset" else None),
              ("start", node.start.isoformat(sep=" ", timespec="milliseconds") if node.start else None),
              ("span", node.span_id)]
    if kind == "option":
        rows = [f"option {d.get('option_id') or ''}: {d.get('verdict') or 'considered'}",
                ("description", d.get("description")), ("score", _num(d["score"]) if d.get("score") is not None else None),
                ("reason", d.get("reason")), ("evidence", [str(e) for e in d.get("evidence") or []]),
                ("would do", _compact(d["action"]) if d.get("action") else None)]
        return hover(*rows, width=HOVER_WIDTH)
    if kind == "decision":
        rows = ["decision " + str(d.get("decision_id") or ""), ("question", d.get("question")),
                ("selected", d.get("selected_option") or "none"), ("because", d.get("reason")),
                ("policy", d.get("policy"))]
        return hover(*rows, *common, width=HOVER_WIDTH)
    if kind == "action":
        target = d.get("target") or {}
        rows = [_action_line(node),
                ("target", " ".join(str(x) for x in (target.get("api_version"), target.get("kind"),
                 "/".join(str(x) for x in (target.get("namespace"), target.get("name")) if x)) if x) or None),
                ("uid", target.get("uid")), ("action", d.get("action_id")), ("decision", d.get("decision_id")),
                ("status", d.get("status")),
                ("trust level", st.TRUST_LEVELS.get(d.get("trust_level"), d.get("trust_level"))),
                ("resourceVersion", f"{d.get('resource_version_before') or '?'} → {d.get('resource_version_after') or '?'}"
                 if d.get("resource_version_before") or d.get("resource_version_after") else None),
                ("server-side dry-run first", {True: "yes", False: "no"}.get(d.get("dry_run_checked"))),
                ("field manager", d.get("field_manager")),
                ("changed", [_change(c) for c in d.get("diff") or []]),
                ("verification", _verification_of(node))]
        return hover(*rows, ("start", common[1][1]), ("span", node.span_id), width=HOVER_WIDTH)
    if kind == "tool":
        rows = ["tool " + str(d.get("tool_name") or node.label), ("call", d.get("call_id")),
                ("arguments", _compact(d["arguments"]) if d.get("arguments") else None),
                ("result", d.get("result")), ("error", d.get("error"))]
        return hover(*rows, *common, width=HOVER_WIDTH)
    fields = [(key.replace("_", " "), value) for key, value in d.items()
              if value is not None and not isinstance(value, (dict, list))]
    return hover(_line(node), *fields, *common, width=HOVER_WIDTH)

