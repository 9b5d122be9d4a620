"""RunComparison: two runs side by side, as `afterfix compare` shows them.

    RunComparison(store, run_a, run_b, only_differences=False)

The aligned steps in one table (run A's step, run B's step, what differs), each row coloured by
whether it is the same, changed or on one side only; then the decisions that chose or weighed
differently (with people's verdicts on each side) and the actions whose verb, target or patch
differ. Everything comes from `review.compare.compare_runs`; every piece of trace text is escaped.
A checkbox hides the steps that are the same; Refresh re-reads the store.
"""

from __future__ import annotations

import ipywidgets as w

from afterfix.review.compare import compare_runs
from afterfix.widgets._common import STYLE, text

__all__ = ["RunComparison"]

CSS = """<style>
.afterfix-cmp tr.same td { color: #444; }
.afterfix-cmp tr.changed td { background: #fff8c5; }
.afterfix-cmp tr.only_a td.a, .afterfix-cmp tr.only_a td.st { background: #ffebe9; }
.afterfix-cmp tr.only_b td.b, .afterfix-cmp tr.only_b td.st { background: #dafbe1; }
.afterfix-cmp td.diff { color: #9a6700; font-weight: 600; }
.afterfix-cmp td.st { white-space: nowrap; }
.afterfix-cmp td code { font-size: 11px; }
</style>"""
STATUS = {"same": "same", "changed": "changed", "only_a": "only in A", "only_b": "only in B"}


class RunComparison(w.VBox):
    def __init__(self, store, run_a: str, run_b: str, *, only_differences: bool = False):
        self.store, self.run_a, self.run_b = store, run_a, run_b
        self.comparison = None
        self.header = w.HTML()
        self.only = w.Checkbox(value=only_differences, description="only differences", indent=False)
        self.reload = w.Button(description="Refresh", icon="refresh")
        self.steps = w.HTML()
        self.decisions = w.HTML()
        self.actions = w.HTML()
        self.only.observe(lambda _: self._show(), names="value")
        self.reload.on_click(lambda _: self.refresh())
        super().__init__([w.HTML(STYLE + CSS), self.header, w.HBox([self.only, self.reload]), self.steps,
                          self.decisions, self.actions])
        self.refresh()

    def refresh(self) -> None:
        try:
            self.comparison = compare_runs(self.store, self.run_a, self.run_b)
        except Exception as e:  # an unknown run: said in the widget
            self.comparison = None
            self.header.value = f"<span class='afterfix-bad'>{text(e)}</span>"
            self.steps.value = self.decisions.value = self.actions.value = ""
            return
        self._show()

    def _show(self) -> None:
        c = self.comparison
        if c is None:
            return
        runs = "".join(
            f"<div><b>{side}</b> <code>{text(r['run_id'])}</code> {text(r['agent_name'])} · incident "
            f"<code>{text(r['incident_id'] or '-')}</code> · {text((r['start_time'] or '')[:19])} · {r['steps']} steps</div>"
            for side, r in (("A", c.run_a), ("B", c.run_b)))
        n = c.counts()
        if c.same:
            verdict = "<div class='afterfix-ok'>The runs did the same steps the same way.</div>"
        else:
            verdict = (f"<div><b>{n['same']}</b> same · <span class='afterfix-warn'><b>{n['changed']}</b> changed</span> · "
                       f"<b>{n['only_a']}</b> only in A · <b>{n['only_b']}</b> only in B · "
                       f"<span class='afterfix-bad'>{_count(len(c.decisions), 'decision')} and {_count(len(c.actions), 'action')} "
                       f"differ</span></div>")
        self.header.value = runs + verdict
        self.steps.value = _steps_html(c, self.only.value)
        self.decisions.value = _decisions_html(c.decisions)
        self.actions.value = _actions_html(c.actions)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _cell(step: dict | None) -> str:
    if step is None:
        return ""
    d = step["detail"]
    bits = [f"<span class='afterfix-muted'>{text(step['kind'])}</span> {text(step['label'], 160)}"]
    if step["kind"] == "decision" and d.get("selected"):
        bits.append(f"chose <code>{text(d['selected'])}</code>")
    elif step["kind"] == "action":
        bits.append(f"<code>{text(d.get('patch'), 160)}</code> {text(d.get('status'))}")
    elif step["kind"] == "tool" and d.get("failed"):
        bits.append(f"<span class='afterfix-bad'>failed: {text(d.get('error'), 120)}</span>")
    return "<br>".join(bits)


def _steps_html(c, only: bool) -> str:
    rows = []
    for i, s in enumerate(c.steps, 1):
        if only and s.status == "same":
            continue
        rows.append(f"<tr class='{s.status}'><td>{i}</td><td class='st'>{STATUS[s.status]}</td>"
                    f"<td class='a'>{_cell(s.a)}</td><td class='b'>{_cell(s.b)}</td>"
                    f"<td class='diff'>{text('; '.join(s.differences), 300)}</td></tr>")
    if not rows:
        return "<div class='afterfix-muted'>No step differs.</div>"
    return ("<h4>Aligned steps</h4><table class='afterfix-table afterfix-cmp'><thead><tr><th>#</th><th>status</th>"
            "<th>run A</th><th>run B</th><th>what differs</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _decisions_html(decisions: list[dict]) -> str:
    if not decisions:
        return "<h4>Decisions</h4><div class='afterfix-ok'>Every decision chose the same and weighed its options alike.</div>"
    rows = []
    for d in decisions:
        options = "<br>".join(f"<code>{text(o['id'])}</code>: {text(o['verdict_a'] or '-')} → {text(o['verdict_b'] or '-')}"
                              + (f" <span class='afterfix-muted'>({text(o['reason_b'] or o['reason_a'], 160)})</span>"
                                 if (o['reason_b'] or o['reason_a']) else "") for o in d["options"])
        rows.append(f"<tr class='{text(d['status'])}'><td>{text(d['question'], 200)}</td><td class='st'>{STATUS.get(d['status'], '')}</td>"
                    f"<td class='a'><code>{text(d['selected_a'] or '-')}</code></td><td class='b'><code>{text(d['selected_b'] or '-')}</code></td>"
                    f"<td>{options}</td><td>{text('; '.join(d['verdicts_a']))}</td><td>{text('; '.join(d['verdicts_b']))}</td></tr>")
    return ("<h4>Decisions that differ</h4><table class='afterfix-table afterfix-cmp'><thead><tr><th>question</th>"
            "<th>status</th><th>A chose</th><th>B chose</th><th>options weighed differently</th><th>verdicts on A</th>"
            "<th>verdicts on B</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _actions_html(actions: list[dict]) -> str:
    if not actions:
        return "<h4>Actions</h4><div class='afterfix-ok'>Every action did the same thing to the same object.</div>"
    rows = []
    for x in actions:
        rows.append(f"<tr class='{text(x['status'])}'><td class='st'>{STATUS.get(x['status'], '')}</td>"
                    f"<td class='a'>{text(x['verb_a'])} {text(x['target_a'])}<br><code>{text(x['patch_a'], 200)}</code></td>"
                    f"<td class='b'>{text(x['verb_b'])} {text(x['target_b'])}<br><code>{text(x['patch_b'], 200)}</code></td>"
                    f"<td class='diff'>{text('; '.join(x['differences']), 300)}</td></tr>")
    return ("<h4>Actions that differ</h4><table class='afterfix-table afterfix-cmp'><thead><tr><th>status</th>"
            "<th>run A</th><th>run B</th><th>what differs</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
