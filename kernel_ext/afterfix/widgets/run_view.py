"""RunView: one run (or every run of one incident) as a reviewer reads it.

    RunView(store, run_id)                  one run
    RunView(store, incident_id="INC-7")     every run that worked on the incident

From the top: a header (agent, incident, counts); the decision tree (`afterfix.figures.tree`, one
run at a time, chosen with a selector when the incident has several) and the timeline
(`afterfix.figures.timeline`, every run); the steps, a table paged `page_size` at a time and
filterable by kind, with a step selector that shows the chosen step in full: a tool call's
arguments and result, a decision's options with their evidence, scores and reasons, an action's
target, field diff, before, after and patch; and the verdicts people left on the decisions and
actions (`afterfix.review.verdicts`, when that module is installed).

Opening a big run stays quick: the spans are read once for the tree, the timeline and the steps;
the tree figure draws at most `tree_rows` rows (it says how many were left out) and the step
table only the page shown. With `live=True` a Poller re-reads the run when its span count or its
verdicts change, and updates the widget by setting trait values only. All trace text is escaped.
"""

from __future__ import annotations

import json
import math
from typing import Any

import ipywidgets as W

from afterfix.widgets._common import STYLE, Poller, figure_outputs, open_store, table, text

__all__ = ["RunView", "step_rows", "FILTERS"]

PAGE_SIZE = 50
TREE_ROWS = 400
FILTERS = {"all steps": None, "decisions": {"decision"}, "actions": {"action", "verification", "approval"},
           "tool calls": {"tool"}, "model calls": {"llm"}, "failed": "error"}
_STEP_COLUMNS = [("n", "#"), ("at", "at"), ("agent", "agent"), ("kind", "kind"), ("name", "step"),
                 ("status", "status"), ("took", "took"), ("summary", "what")]


def _short(value: Any, n: int = 90) -> str:
    if value is None:
        return ""
    s = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def _pretty(value: Any) -> str:
    """JSON text indented when it parses (never evaluated), else the text itself."""
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _took(ms: float | None) -> str:
    if ms is None:
        return ""
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def _summary(kind: str, d: dict) -> str:
    if kind == "tool":
        s = f"{d.get('tool_name') or ''}({_short(d.get('arguments'), 50)})"
        return s + (f" ✗ {_short(d.get('error'), 40)}" if d.get("error") else f" → {_short(d.get('result'), 50)}")
    if kind == "decision":
        return f"{_short(d.get('question'), 60)} → {d.get('selected_option') or 'nothing selected'}"
    if kind == "action":
        t = d.get("target") or {}
        diff = "; ".join(f"{c['path']} {_short(c['before'], 12)}→{_short(c['after'], 12)}" for c in d.get("diff") or [])
        where = "/".join(x for x in (t.get("namespace"), t.get("name")) if x)
        head = " ".join(x for x in (d.get("verb"), t.get("kind"), where) if x)
        return f"{head}{' [' + d['status'] + ']' if d.get('status') else ''} {_short(diff, 60)}"
    if kind == "verification":
        return f"{d.get('signal')}: {d.get('outcome')} ({d.get('before')} → {d.get('after')})"
    if kind == "detection":
        return _short(d.get("summary"), 100)
    if kind == "llm":
        return f"{d.get('model') or ''} in {d.get('input_tokens') or 0} / out {d.get('output_tokens') or 0} tokens"
    if kind == "approval":
        return f"{d.get('status')} by {d.get('approver') or '?'}"
    if kind == "incident":
        return f"{d.get('severity') or ''} {d.get('title') or ''}"
    return ""


def step_rows(timeline, trees) -> list[dict]:
    """One dict per timeline step, in order: what the step table shows, plus `node` (the tree node
    of its span, for the details) and `span_id`."""
    nodes = {n.span_id: n for t in trees for n in t.root.walk() if n.span_id and n.kind != "option"}
    t0 = timeline.start
    rows = []
    for i, s in enumerate(timeline.steps):
        node = nodes.get(s.span_id)
        details = node.details if node is not None else {}
        rows.append({"n": i + 1, "at": f"+{(s.start - t0).total_seconds():.1f} s" if t0 else "",
                     "agent": s.agent_name, "kind": s.kind, "name": s.name, "status": s.status, "took": _took(s.duration_ms),
                     "summary": _summary(s.kind, details), "span_id": s.span_id, "trace_id": s.trace_id,
                     "run_id": s.run_id, "node": node, "status_message": s.status_message, "start": s.start})
    return rows


class RunView(W.VBox):
    """A run's (or an incident's) tree, timeline, steps and verdicts. See the module docstring."""

    def __init__(self, store=None, run_id: str | None = None, *, incident_id: str | None = None,
                 page_size: int = PAGE_SIZE, tree_rows: int = TREE_ROWS, live: bool = False, interval: float = 3.0,
                 width: int = 1000):
        if bool(run_id) == bool(incident_id):
            raise ValueError("RunView needs a run_id or an incident_id (one of them): "
                             "`afterfix query \"SELECT run_id, incident_id FROM runs\"` lists both")
        super().__init__()
        self.store = open_store(store)
        self.run_id, self.incident_id = run_id, incident_id
        self.page_size, self.tree_rows, self.width = page_size, tree_rows, width
        self.header = W.HTML()
        self.tree_run = W.Dropdown(description="run", layout=W.Layout(width="auto", min_width="420px"))
        self.tree_out = W.Output(layout=W.Layout(max_height="720px", overflow="auto"))
        self.timeline_out = W.Output()
        self.filter = W.Dropdown(options=list(FILTERS), value="all steps", description="show",
                                 layout=W.Layout(width="220px"))
        self.prev_page = W.Button(description="◀ previous", layout=W.Layout(width="110px"))
        self.next_page = W.Button(description="next ▶", layout=W.Layout(width="110px"))
        self.page = W.BoundedIntText(value=1, min=1, max=1, description="page", layout=W.Layout(width="150px"))
        self.pages = W.HTML()
        self.steps_html = W.HTML(layout=W.Layout(max_height="560px", overflow="auto"))
        self.step = W.Dropdown(description="step", layout=W.Layout(width="auto", min_width="640px"))
        self.detail = W.HTML()
        self.verdicts_html = W.HTML()
        self.status = W.HTML()
        self._verdicts: dict[str, list] = {}
        self._rows: list[dict] = []
        self._shown: list[dict] = []

        self._loading = False
        self.tree_run.observe(lambda ch: self._loading or self._draw_tree(), names="value")
        self.filter.observe(lambda ch: self._refilter(), names="value")
        self.page.observe(lambda ch: self._draw_page(), names="value")
        self.prev_page.on_click(lambda b: self._turn(-1))
        self.next_page.on_click(lambda b: self._turn(+1))
        self.step.observe(lambda ch: self._draw_detail(), names="value")

        self.children = [
            W.HTML(STYLE), self.header,
            W.HTML("<h4>Decision tree</h4>"), self.tree_run, self.tree_out,
            W.HTML("<h4>Timeline</h4>"), self.timeline_out,
            W.HTML("<h4>Steps</h4>"), W.HBox([self.filter, self.prev_page, self.page, self.pages, self.next_page]),
            self.steps_html, self.step, self.detail,
            W.HTML("<h4>Verdicts</h4>"), self.verdicts_html, self.status,
        ]
        self.load()
        self.poller = Poller(self.poll, interval, on_error=self._poll_error).start() if live else None

    # -- data ---------------------------------------------------------------------------------

    def _token(self) -> tuple:
        """What changes when the run gains spans or verdicts: a count and the latest ingest time
        of its spans (read from file statistics, not the spans), and its verdict rows."""
        from afterfix.analysis._load import _in_list, _literal

        where = (f"incident_id = {_literal(self.incident_id)}" if self.incident_id
                 else f"run_id = {_literal(self.run_id)}")
        row = self.store.arrow(
            f"SELECT (SELECT count(*) FROM spans WHERE {where}) AS n, (SELECT max(ingested_at) FROM spans WHERE {where}) AS t, "
            f"(SELECT count(*) FROM verdicts WHERE run_id IN ({_in_list(self.run_ids)})) AS v").to_pylist()[0]
        return row["n"], row["t"], row["v"]

    def _read_verdicts(self) -> dict[str, list]:
        import importlib

        try:
            vmod = importlib.import_module("afterfix.review.verdicts")
        except ImportError:  # written by another part of the review; without it there is nothing to show
            return {}
        found: dict[str, list] = {}
        every = (vmod.verdicts(self.store, incident_id=self.incident_id) if self.incident_id
                 else vmod.verdicts(self.store, run_id=self.run_id))
        for v in every:
            found.setdefault(v.target_id, []).append(v)
        return found

    def load(self) -> None:
        """Read the run(s) and redraw everything (the page and step shown stay where they were)."""
        from afterfix.analysis import _load
        from afterfix.analysis.timeline import build_timeline
        from afterfix.analysis.tree import build_tree

        ids = _load.incident_run_ids(self.store, self.incident_id) if self.incident_id else [self.run_id]
        runs = sorted(_load.load_runs(self.store, ids), key=lambda r: r.start)
        self.run_ids = [r.run_id for r in runs]
        self.spans = {(s["trace_id"], s["span_id"]): s for r in runs for s in r.spans}
        self.trees = [build_tree(r, incident_id=self.incident_id) for r in runs]
        self.timeline = build_timeline(runs, incident_id=self.incident_id or runs[0].incident_id)
        self._rows = step_rows(self.timeline, self.trees)
        self._verdicts = self._read_verdicts()
        self._token_seen = self._token()
        self._draw_header()
        labels = [(f"{t.run_id} · {t.agent_name or 'agent?'} · {len(t.nodes('decision'))} decisions", t.run_id)
                  for t in self.trees]
        keep = self.tree_run.value
        self._loading = True
        self.tree_run.options = labels
        self.tree_run.layout.display = "" if len(labels) > 1 else "none"
        self.tree_run.value = keep if keep in self.run_ids else (self.run_ids[0] if self.run_ids else None)
        self._loading = False
        self._draw_tree()
        self._draw_timeline()
        self._refilter(keep_page=True)
        self._draw_verdicts()

    def poll(self) -> bool:
        """Re-read when the run's spans or verdicts changed; True when it did. The Poller calls
        this off the main thread: everything it changes is a trait value."""
        if self._token() == self._token_seen:
            return False
        self.load()
        self.status.value = ""
        return True

    def _poll_error(self, message: str) -> None:
        self.status.value = f"<span class='afterfix-bad'>live refresh failed: {text(message)}</span>"

    def close(self) -> None:
        if getattr(self, "poller", None) is not None:
            self.poller.stop()
        super().close()

    # -- drawing ------------------------------------------------------------------------------

    def _draw_header(self) -> None:
        steps = self.timeline.steps
        n_dec = sum(len(t.nodes("decision")) for t in self.trees)
        n_act = sum(1 for t in self.trees for n in t.nodes("action") if n.details.get("mutating"))
        failed = sum(1 for s in steps if s.status == "error")
        agents = sorted({t.agent_name for t in self.trees if t.agent_name})
        what = f"Incident {self.incident_id}" if self.incident_id else f"Run {self.run_id}"
        inc = self.trees[0].incident_id if self.trees and not self.incident_id else None
        when = (f"{self.timeline.start:%Y-%m-%d %H:%M:%S} → {self.timeline.end:%H:%M:%S} UTC"
                if self.timeline.start else "")
        self.header.value = (
            f"<h3 style='margin:4px 0'>{text(what)}</h3><div>"
            + (f"incident {text(inc)} · " if inc else "")
            + f"{len(self.run_ids)} run(s) by {text(', '.join(agents) or 'an unnamed agent')} · {text(when)}<br>"
            f"{len(steps)} steps, {n_dec} decisions, {n_act} changes to production, "
            + (f"<span class='afterfix-bad'>{failed} failed</span>" if failed else "0 failed") + "</div>")

    def _draw_tree(self) -> None:
        from afterfix.figures.tree import decision_tree

        tree = next((t for t in self.trees if t.run_id == self.tree_run.value), self.trees[0] if self.trees else None)
        if tree is None:
            self.tree_out.outputs = ()
            return
        self.tree_out.outputs = figure_outputs(decision_tree(tree, max_nodes=self.tree_rows, width=self.width))

    def _draw_timeline(self) -> None:
        from afterfix.figures.timeline import incident_timeline

        metrics, signal = None, None
        try:
            from afterfix.analysis.signals import incident_signal, signal_history

            sig = incident_signal(self.trees)
            if sig is not None and self.timeline.start and self.timeline.end:
                metrics, signal = signal_history(self.store, sig, self.timeline.start, self.timeline.end), sig.name
        except Exception as e:  # a metric that cannot be read leaves the timeline without its panel
            self.status.value = f"<span class='afterfix-warn'>no metric panel: {text(e)}</span>"
        self.timeline_out.outputs = figure_outputs(self.timeline_figure(metrics, signal))

    def timeline_figure(self, metrics=None, signal: str | None = None):
        """The timeline figure of this run or incident (figures.timeline), at the panel's width."""
        from afterfix.figures.timeline import incident_timeline

        return incident_timeline(self.timeline, metrics, signal=signal, trees=self.trees, width=self.width)

    def _refilter(self, keep_page: bool = False) -> None:
        want = FILTERS[self.filter.value]
        if want is None:
            self._shown = self._rows
        elif want == "error":
            self._shown = [r for r in self._rows if r["status"] == "error"]
        else:
            self._shown = [r for r in self._rows if r["kind"] in want]
        n_pages = max(1, math.ceil(len(self._shown) / self.page_size))
        page = min(self.page.value, n_pages) if keep_page else 1
        self.page.max = n_pages
        if self.page.value != page:
            self.page.value = page  # observed: draws the page
        else:
            self._draw_page()

    def _turn(self, by: int) -> None:
        self.page.value = min(max(self.page.value + by, 1), self.page.max)

    def page_rows(self) -> list[dict]:
        lo = (self.page.value - 1) * self.page_size
        return self._shown[lo: lo + self.page_size]

    def _draw_page(self) -> None:
        rows = self.page_rows()
        self.pages.value = (f"<span style='padding:0 8px'>of {self.page.max} · {len(self._shown)} of "
                            f"{len(self._rows)} steps</span>")
        self.prev_page.disabled = self.page.value <= 1
        self.next_page.disabled = self.page.value >= self.page.max
        marked = [{**r, "kind": r["kind"] + (" ✓" if self._verdicts_of(r) else "")} for r in rows]
        self.steps_html.value = table(marked, _STEP_COLUMNS, limit=160, short=("n", "at", "agent", "kind", "status", "took"),
                                      wide=("summary",)) if rows else \
            "<i class='afterfix-muted'>no steps of this kind</i>"
        keep = self.step.value
        options = [(_short(f"#{r['n']} {r['kind']} · {r['name']} · {r['summary']}", 110), r["n"]) for r in rows]
        self.step.options = options
        values = [v for _, v in options]
        self.step.value = keep if keep in values else (values[0] if values else None)
        self._draw_detail()

    def _verdicts_of(self, row: dict) -> list:
        d = row["node"].details if row["node"] is not None else {}
        return [v for key in (d.get("decision_id"), d.get("action_id")) if key for v in self._verdicts.get(key, [])]

    def _draw_detail(self) -> None:
        row = next((r for r in self._rows if r["n"] == self.step.value), None)
        self.detail.value = "" if row is None else self.detail_html(row)

    def select(self, n: int) -> None:
        """Show step `n` (1-based, in the run's order): turns to its page, with every filter off."""
        if self.filter.value != "all steps":
            self.filter.value = "all steps"
        self.page.value = (n - 1) // self.page_size + 1
        self.step.value = n

    def detail_html(self, row: dict) -> str:
        """One step in full, escaped: what the step table cuts short."""
        node = row["node"]
        d = node.details if node is not None else {}
        span = self.spans.get((row["trace_id"], row["span_id"]), {})
        attrs = span.get("attrs", {})
        parts = [f"<div style='border-left:3px solid #888;padding:2px 10px;margin:4px 0'>"
                 f"<b>#{row['n']} {text(row['kind'])}: {text(row['name'])}</b> "
                 f"<span class='afterfix-muted'>{text(row['start'])} UTC · {text(row['took'])} · span {text(row['span_id'])}"
                 f" · run {text(row['run_id'])}</span>"]
        if row["status"] == "error":
            parts.append(f"<div class='afterfix-bad'>failed: {text(row['status_message'] or d.get('error') or '')}</div>")
        kind = row["kind"]
        if kind == "tool":
            parts.append(f"<div>tool <b>{text(d.get('tool_name'))}</b> call {text(d.get('call_id'))}</div>"
                         f"<div>arguments</div><pre class='afterfix-pre'>{text(_pretty(d.get('arguments')))}</pre>"
                         f"<div>result</div><pre class='afterfix-pre'>{text(_pretty(d.get('result')))}</pre>")
            if d.get("error"):
                parts.append(f"<div class='afterfix-bad'>error: {text(d['error'])}</div>")
        elif kind == "decision":
            parts.append(f"<div>question: <b>{text(d.get('question'))}</b></div>"
                         f"<div>selected: <b>{text(d.get('selected_option') or 'nothing')}</b> · policy "
                         f"{text(d.get('policy') or '-')} · decision {text(d.get('decision_id'))}</div>"
                         f"<div>reason: {text(d.get('reason'))}</div>")
            opts = [{**o.details, "evidence": "; ".join(map(str, o.details.get("evidence") or [])),
                     "score": f"{o.details['score']:.4g}" if isinstance(o.details.get("score"), float) else o.details.get("score")}
                    for o in node.children if o.kind == "option"] if node is not None else []
            parts.append(table(opts, [("option_id", "option"), ("verdict", "verdict"), ("score", "score"),
                                      ("description", "description"), ("evidence", "evidence"), ("reason", "reason")],
                               limit=600) if opts else "<i>no options recorded</i>")
            inputs = attrs.get("afterfix.decision.inputs")
            if inputs:
                parts.append(f"<div>inputs</div><pre class='afterfix-pre'>{text(_pretty(inputs))}</pre>")
        elif kind == "action":
            t = d.get("target") or {}
            parts.append(f"<div><b>{text(d.get('verb'))}</b> {text(t.get('kind'))} {text(t.get('namespace'))}/"
                         f"{text(t.get('name'))} (uid {text(t.get('uid'))}) · status <b>{text(d.get('status'))}</b> · trust "
                         f"level {text(d.get('trust_level'))} · resourceVersion {text(d.get('resource_version_before'))} → "
                         f"{text(d.get('resource_version_after'))} · field manager {text(d.get('field_manager'))} · "
                         f"action {text(d.get('action_id'))}, decision {text(d.get('decision_id'))}</div>")
            if d.get("diff"):
                parts.append(table(d["diff"], [("path", "field"), ("before", "before"), ("after", "after"),
                                               ("change", "change")], limit=300))
            for key, label in (("afterfix.action.before", "before"), ("afterfix.action.after", "after"),
                               ("afterfix.action.patch", "patch")):
                if attrs.get(key) is not None:
                    parts.append(f"<div>{label}</div><pre class='afterfix-pre'>{text(_pretty(attrs[key]))}</pre>")
        elif d:
            parts.append(table([{"field": k, "value": v} for k, v in d.items()], [("field", "field"), ("value", "value")],
                               limit=600))
        mine = self._verdicts_of(row)
        if mine:
            parts.append("<div><b>verdicts</b></div>" + _verdict_table(mine))
        parts.append("</div>")
        return "".join(parts)

    def _draw_verdicts(self) -> None:
        every = [v for vs in self._verdicts.values() for v in vs]
        self.verdicts_html.value = _verdict_table(every) if every else \
            "<i class='afterfix-muted'>no verdicts on this run's decisions or actions yet</i>"


def _verdict_table(vs: list) -> str:
    rows = [{"time": getattr(v, "time", None), "who": v.who, "target": f"{v.target_type} {v.target_id}",
             "verdict": v.verdict, "should_have": getattr(v, "should_have", None), "note": v.note} for v in vs]
    return table(rows, [("time", "when"), ("who", "who"), ("target", "on"), ("verdict", "verdict"),
                        ("should_have", "should have"), ("note", "note")])
