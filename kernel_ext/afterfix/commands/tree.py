"""`afterfix tree` and `afterfix timeline`: one run's decision tree, one incident's timeline.

    afterfix tree RUN_ID [--format text|json] [-o FILE.html]
    afterfix timeline INCIDENT_ID|RUN_ID [--format text|json] [-o FILE.html]

Text is an indented listing with every trace text escaped (`afterfix.cli.safe`); json is the
DecisionTree or Timeline data (`to_dict()`); `-o` writes the plotly figure as one self-contained
HTML file (plotly.js inside it, nothing fetched from a CDN) and prints its path. The timeline's
figure has the incident's trees (for the actions' and verifications' outcomes) and its signal's
metric history (`afterfix.analysis.signals.incident_history`). An id the store does not hold is
an `afterfix.NotFound`: `afterfix`'s main prints its one line, which says how to list the ids,
and exits 2.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from afterfix.analysis.model import DecisionTree, FieldChange, Node, Timeline

VALUE_MAX = 120  # characters of one before/after value in text output; json keeps everything
LIST_RUNS = 'afterfix query "SELECT run_id FROM runs"'
LIST_INCIDENTS = 'afterfix query "SELECT incident_id FROM incidents"'


def register(subparsers) -> None:
    from afterfix.cli import _store_option

    p = subparsers.add_parser(
        "tree", help="one run's decision tree: options weighed, the one chosen, what it changed",
        description="Show one agent run as a tree: what it detected, each decision's options with their "
                    "evidence, score, verdict and reason, the action taken under the selected option with "
                    "its field diff and resourceVersions, and the verification. Lines on the path taken "
                    "are marked '*'. Runs without afterfix decisions show their tool and LLM calls.")
    _store_option(p)
    p.add_argument("run_id", metavar="RUN_ID", help=f"the run (list them: {LIST_RUNS})")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.add_argument("-o", "--output", metavar="FILE.html", default=None,
                   help="write the tree as a self-contained HTML figure instead of printing it")
    p.set_defaults(func=cmd_tree)

    p = subparsers.add_parser(
        "timeline", help="an incident's steps in time, run by run (or one run's)",
        description="Show every span of an incident as a step in time (start, duration, kind, status), "
                    "grouped by the runs that worked on it. A RUN_ID is accepted too when no incident "
                    "has that id: the timeline of that one run.")
    _store_option(p)
    p.add_argument("id", metavar="INCIDENT_ID", help=f"the incident, or a run id (list them: {LIST_INCIDENTS})")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.add_argument("-o", "--output", metavar="FILE.html", default=None,
                   help="write the timeline as a self-contained HTML figure instead of printing it")
    p.set_defaults(func=cmd_timeline)


# -- commands ----------------------------------------------------------------------------------


def _write_json(data: dict) -> None:
    # ensure_ascii: every control and bidi character in trace text reaches the terminal escaped
    json.dump(data, sys.stdout, ensure_ascii=True, default=str)
    sys.stdout.write("\n")


def _write_figure(fig, path: str) -> None:
    # plotly.js goes into the file: a review must open offline, and load nothing from elsewhere
    fig.write_html(path, include_plotlyjs=True, full_html=True)
    print(path)


def cmd_tree(args) -> int:
    from afterfix.analysis.tree import run_tree
    from afterfix.cli import EXIT_OK, _store

    tree = run_tree(_store(args), args.run_id)  # NotFound: main says how to list the run ids
    if args.output:
        from afterfix.figures.tree import decision_tree

        _write_figure(decision_tree(tree), args.output)
    elif args.format == "json":
        _write_json(tree.to_dict())
    else:
        sys.stdout.write(format_tree(tree))
    return EXIT_OK


def cmd_timeline(args) -> int:
    from afterfix._exceptions import NotFound
    from afterfix.analysis.timeline import incident_timeline, run_timeline
    from afterfix.cli import EXIT_OK, _store

    store = _store(args)
    try:
        timeline = incident_timeline(store, args.id)
    except NotFound:
        try:
            timeline = run_timeline(store, args.id)
        except NotFound:
            raise NotFound(f"no incident or run {args.id!r} in {store.where}: list the incident ids with "
                           f"{LIST_INCIDENTS}, the run ids with {LIST_RUNS}") from None
    if args.output:
        _write_figure(timeline_figure(store, timeline), args.output)
    elif args.format == "json":
        _write_json(timeline.to_dict())
    else:
        sys.stdout.write(format_timeline(timeline))
    return EXIT_OK


def timeline_figure(store, timeline: Timeline):
    """The timeline's figure with its runs' trees and, for an incident, its signal's metric history."""
    from afterfix.analysis.signals import incident_history
    from afterfix.analysis.tree import incident_trees, run_tree
    from afterfix.figures.timeline import incident_timeline as figure

    if timeline.incident_id:
        trees = incident_trees(store, timeline.incident_id)
        signal, metrics = incident_history(store, timeline.incident_id, trees)
    else:
        trees, signal, metrics = [run_tree(store, r) for r in timeline.run_ids], None, None
    return figure(timeline, metrics, signal=signal, trees=trees)


# -- text ----------------------------------------------------------------------------------------


def _s(text: Any) -> str:
    from afterfix.cli import safe

    return safe("" if text is None else text, newlines=False)


def _value(value: Any, absent: bool = False) -> str:
    if absent:
        return "(absent)"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = _s(text)
    return text if len(text) <= VALUE_MAX else text[: VALUE_MAX - 1] + "…"


def format_change(ch: FieldChange | dict) -> str:
    """`spec.maxReplicas: 2 → 6`, with (absent) for a field added or removed."""
    d = ch.to_dict() if isinstance(ch, FieldChange) else ch
    return (f"{_s(d['path'])}: {_value(d['before'], d['change'] == 'added')} → "
            f"{_value(d['after'], d['change'] == 'removed')}")


def _number(value: Any) -> str:
    return "?" if value is None else f"{value:g}"


def _head(node: Node) -> str:
    """The node's own line, without indentation or path mark."""
    d = node.details
    if node.kind == "run":
        parts = [f"run {_s(d['run_id'])}", f"agent {_s(d['agent_name'] or '?')}"]
        if d.get("incident_id"):
            parts.append(f"incident {_s(d['incident_id'])}")
        return " · ".join(parts + [f"{d['spans']} spans", d["status"]])
    if node.kind == "incident":
        extra = ", ".join(_s(d[k]) for k in ("severity", "service", "status") if d.get(k))
        return f"incident {_s(d['incident_id'] or '')}: {_s(node.label)}" + (f" [{extra}]" if extra else "")
    if node.kind == "detection":
        return (f"detection {_s(d['signal'] or '?')} {_number(d['value'])} (threshold "
                f"{_number(d['threshold'])}): {_s(node.label)}")
    if node.kind == "decision":
        return f"decision {_s(d['decision_id'] or '')}: {_s(node.label)}"
    if node.kind == "option":
        mark = "✓ selected" if node.selected else f"✗ {_s(d['verdict'])}" if d["verdict"] == "rejected" else \
            f"· {_s(d['verdict'])}"
        score = f" (score {_number(d['score'])})" if d["score"] is not None else ""
        return f"option {_s(d['option_id'])}{score}: {_s(d['description'] or '')} — {mark}"
    if node.kind == "action":
        flags = [_s(d["status"] or "no status"), f"trust {d['trust_level']}" if d["trust_level"] else None,
                 "dry-run ok" if d["dry_run_checked"] else None, None if d["mutating"] else "read-only"]
        return f"action {_s(node.label)} [{', '.join(f for f in flags if f)}]"
    if node.kind == "verification":
        return (f"verification {_s(d['signal'] or '?')}: {_s(d['outcome'] or 'no outcome')} "
                f"({_number(d['before'])} → {_number(d['after'])})")
    if node.kind == "approval":
        return f"approval {_s(d['status'] or '?')}" + (f" by {_s(d['approver'])}" if d["approver"] else "")
    if node.kind == "llm":
        tokens = f" ({d['input_tokens']} in / {d['output_tokens']} out tokens)" if d["input_tokens"] is not None else ""
        return f"llm {_s(node.label)}{tokens}"
    if node.kind == "tool" and d.get("tool_name"):
        name = d["tool_name"]
        extra = "" if node.label in (name, f"execute_tool {name}") else f" ({_s(node.label)})"
        return f"tool {_s(name)}{extra}"
    return f"{node.kind} {_s(node.label)}"


def _lines(node: Node) -> list[str]:
    """The lines under the node's own line: reasons, evidence, target, diff, errors."""
    d = node.details
    out = []
    if node.kind == "decision":
        if d.get("selected_option"):
            out.append(f"chose {_s(d['selected_option'])}: {_s(d['reason'])}")
        else:
            out.append(f"chose nothing: {_s(d['reason'])}" if d.get("reason") else "chose nothing")
        if d.get("policy"):
            out.append(f"policy {_s(d['policy'])}")
    elif node.kind == "option":
        if d.get("reason"):
            out.append(f"{'why' if node.selected else 'why not'}: {_s(d['reason'])}")
        out += [f"evidence: {_s(e)}" for e in d.get("evidence") or []]
    elif node.kind == "action":
        t = d["target"]
        where = f"{t['namespace']}/{t['name']}" if t.get("namespace") else (t.get("name") or "?")
        out.append(f"target {_s(t.get('api_version') or '')} {_s(t.get('kind') or '?')} {_s(where)}"
                   + (f" (uid {_s(t['uid'])})" if t.get("uid") else ""))
        if d["resource_version_before"] or d["resource_version_after"]:
            out.append(f"resourceVersion {_s(d['resource_version_before'] or '?')} → "
                       f"{_s(d['resource_version_after'] or '?')}")
        out += [format_change(ch) for ch in d["diff"]] or ["no field change recorded"]
    elif node.kind == "approval" and d.get("reason"):
        out.append(f"reason: {_s(d['reason'])}")
    elif node.kind == "tool" and d.get("error"):
        out.append(f"error: {_s(d['error'])}")
    if node.status == "error" and node.kind != "tool":
        out.append("failed (span status ERROR)")
    return out


def format_tree(tree: DecisionTree) -> str:
    """The tree as indented text: '*' marks the path taken; every trace text is escaped."""
    out: list[str] = []

    def walk(node: Node, depth: int) -> None:
        pad = "  " * depth
        out.append(f"{'*' if node.on_path else ' '} {pad}{_head(node)}")
        out.extend(f"  {pad}    {line}" for line in _lines(node))
        for child in node.children:
            walk(child, depth + 1)

    walk(tree.root, 0)
    if any(n.on_path for n in tree.root.walk()):
        out.append("(* marks the path taken: detection → decision → selected option → action → verification)")
    return "\n".join(out) + "\n"


def _duration(ms: float) -> str:
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def format_timeline(timeline: Timeline) -> str:
    """Steps run by run: start, offset from the first step, duration, kind, status, name by depth."""
    if not timeline.steps:
        return "no steps\n"
    t0 = timeline.start
    runs = len(timeline.run_ids)
    head = f"incident {_s(timeline.incident_id)}" if timeline.incident_id else f"run {_s(timeline.run_ids[0])}"
    out = [f"{head} · {runs} run{'s' if runs != 1 else ''} · {len(timeline.steps)} steps · "
           f"{t0:%Y-%m-%d %H:%M:%S} → {timeline.end:%Y-%m-%d %H:%M:%S} UTC"]
    for run_id in timeline.run_ids:
        steps = [s for s in timeline.steps if s.run_id == run_id]
        agent = next((s.agent_name for s in steps if s.agent_name), None)
        out.append(f"\nrun {_s(run_id)}" + (f" ({_s(agent)})" if agent else ""))
        for s in steps:
            offset = f"+{(s.start - t0).total_seconds():.1f} s"
            status = {"error": "ERROR", "ok": "ok"}.get(s.status, "")
            prefix = (f"  {s.start:%H:%M:%S}.{s.start.microsecond // 1000:03d}  {offset:>10}  "
                      f"{_duration(s.duration_ms):>9}  {s.kind:<12} {status:<5}  {'  ' * s.depth}")
            out.append(prefix + _s(s.name))
            if s.status == "error" and s.status_message:
                out.append(" " * len(prefix) + f"error: {_s(s.status_message)}")
    return "\n".join(out) + "\n"
