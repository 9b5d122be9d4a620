"""ReplayPanel: step through one run as its agent lived it, replay a decision, try a what-if.

Thin over `afterfix.review`: the steps come from `recorded.run_steps`, every replay from
`replay.replay_decision` / `replay.what_if`, the saved ones from `replays`. Every trace text is
escaped with `_common.text` / `table` before it becomes HTML.

What a person reads is numbered from 1: the slider's value is the step's number (`index + 1`),
the same number as the heading's "step N of M". The pickers are as wide as the panel and their
labels lead with what they are about (the question, the replay's outcome), ids last, since a
browser cuts a long option at the right.
"""

from __future__ import annotations

import json
from typing import Any

import ipywidgets as w

from afterfix.review import recorded, replays, whatif
from afterfix.review import replay as rp
from afterfix.widgets._common import STYLE, table, text

__all__ = ["ReplayPanel"]


def _j(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


WIDE = w.Layout(width="100%")
LABEL_MAX = 130  # what a 1000-pixel notebook shows of an option
# A span's OTel status: UNSET (nothing said) is the usual case and means nothing to a reviewer.
STATUS = {"ok": "<span class='afterfix-ok'>ok</span>", "error": "<span class='afterfix-bad'>error</span>"}


def _label(lead: Any, *rest: Any) -> str:
    """A picker label: `lead` then the `rest` that are there, joined with " · ", control characters
    dropped; `lead` is cut at a word so the label stays within LABEL_MAX characters and the rest
    (outcome, id) stays whole. The browser shows option labels as text."""
    def clean(value: Any) -> str:
        return "".join(ch if ch >= " " else " " for ch in str(value))

    tail = "".join(f" · {clean(p)}" for p in rest if p not in (None, ""))
    head, room = clean(lead), max(LABEL_MAX - len(tail), 40)
    if len(head) > room:
        cut = head[:room - 1]
        head = (cut.rsplit(" ", 1)[0] if " " in cut[room // 2:] else cut) + "…"
    return head + tail


def _edited(edits: list[dict]) -> list[str]:
    """The paths a person edited (not the places the edits reached, which carry `via`)."""
    return [str(e.get("path")) for e in edits if not e.get("via")] or [str(e.get("path")) for e in edits]


# ipywidgets' HTML sets a 28 px line height (a widget row's): wrapped prose would read double-spaced.
PROSE = "<div style='line-height:1.45'>"


def _heading(label: str) -> str:
    return f"<div style='margin-top:8px'><b>{label}</b></div>"


def _pre(value: Any) -> str:
    return f'<pre class="afterfix-pre">{text(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=1, default=str), 4000)}</pre>'


def recorded_value(decision: recorded.RecordedDecision, path: str) -> Any:
    """The recorded value at what-if `path` (as `whatif` reads it); raises `whatif.EditError`."""
    edit = whatif.parse_edit(path, None)
    if edit.call_id is None:
        return whatif.get(decision.observations(), edit.keys, "inputs")
    call = decision.tool_call(edit.call_id)
    if call is None:
        raise whatif.EditError(f"{path!r}: no tool call {edit.call_id!r} before this decision")
    return whatif.get(call.result, edit.keys, f"tool:{edit.call_id}")


def editable_paths(decision: recorded.RecordedDecision) -> list[str]:
    """Leaf paths of the inputs and of each recorded tool result, as `what_if` takes them."""
    out: list[str] = []

    def walk(value, prefix):
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(v, f"{prefix}.{k}")
        elif isinstance(value, list) and value and len(value) <= 20:
            for i, v in enumerate(value):
                walk(v, f"{prefix}.{i}")
        else:
            out.append(prefix)

    for k, v in decision.observations().items():
        walk(v, f"inputs.{k}")
    for t in decision.tool_calls:
        if t.call_id:
            walk(t.result, f"tool:{t.call_id}")
    return out[:2000]


class ReplayPanel(w.VBox):
    """A run (or the run of a decision) step by step, with Replay and a what-if editor."""

    def __init__(self, store, run_id: str | None = None, *, decision_id: str | None = None, who: str | None = None,
                 endpoint: str | None = None, save: bool = True):
        if (run_id is None) == (decision_id is None):
            raise ValueError("ReplayPanel needs a run_id or a decision_id")
        self.store, self.endpoint, self.who = store, endpoint, who or replays.default_who()
        focus = recorded.load_decision(store, decision_id) if decision_id else None
        self.run_id = run_id or focus.run_id
        self.steps = recorded.run_steps(store, self.run_id)
        self.decisions = {d.decision_id: d for d in recorded.run_decisions(store, self.run_id)}
        self.result: rp.ReplayResult | None = None

        self.title = w.HTML(STYLE + f"<b>Replay of run {text(self.run_id)}</b> "
                                    f"<span class='afterfix-muted'>{len(self.steps)} steps, {len(self.decisions)} decisions</span>")
        self.prev_button = w.Button(description="◀ previous", layout=w.Layout(width="110px"))
        self.next_button = w.Button(description="next ▶", layout=w.Layout(width="110px"))
        # 1-based, as the heading counts: the slider shows the step's number, not its index.
        self.slider = w.IntSlider(value=1, min=1, max=max(len(self.steps), 1), description="step",
                                  continuous_update=False, layout=w.Layout(width="60%"))
        self.of_label = w.Label(f"of {len(self.steps)}")
        self.step_html = w.HTML()
        self.decision_choice = w.Dropdown(options=[(_label(d.question or "(no question recorded)", f"chose {d.selected or '-'}",
                                                           d.decision_id), d.decision_id) for d in self.decisions.values()],
                                          description="decision", layout=WIDE)
        self.replay_button = w.Button(description="Replay", button_style="primary")
        self.save_box = w.Checkbox(value=save, description="save to the replays ledger", indent=False)
        self.path_choice = w.Dropdown(description="edit", options=[], layout=WIDE)
        self.recorded_html = w.HTML(layout=w.Layout(margin="0 0 0 90px"))
        self.value_box = w.Text(description="new value", placeholder='JSON (120, 0.5, null, "text") or plain text',
                                layout=w.Layout(width="480px"))
        self.whatif_button = w.Button(description="Run what-if", button_style="warning")
        self.result_html = w.HTML()
        self.saved_choice = w.Dropdown(description="saved", options=[], layout=w.Layout(flex="1 1 auto", width="auto"))
        self.open_button = w.Button(description="Reopen")

        self.prev_button.on_click(lambda _: self._move(-1))
        self.next_button.on_click(lambda _: self._move(+1))
        self.slider.observe(lambda ch: self._show_step(), names="value")
        self.decision_choice.observe(lambda ch: self._paths(), names="value")
        self.path_choice.observe(lambda ch: self._recorded(), names="value")
        self.replay_button.on_click(lambda _: self.replay())
        self.whatif_button.on_click(lambda _: self.run_what_if())
        self.open_button.on_click(lambda _: self.reopen())

        super().__init__([
            self.title, w.HBox([self.prev_button, self.slider, self.of_label, self.next_button]), self.step_html,
            w.HTML(_heading("Replay and what-if")), self.decision_choice, w.HBox([self.replay_button, self.save_box]),
            self.path_choice, self.recorded_html, w.HBox([self.value_box, self.whatif_button]), self.result_html,
            w.HBox([self.saved_choice, self.open_button], layout=WIDE),
        ])
        if focus is not None:
            self.decision_choice.value = focus.decision_id
            self.slider.value = next((s["index"] + 1 for s in self.steps if (s.get("decision") or {}).get("decision_id")
                                      == focus.decision_id), 1)
        self._paths()
        self._show_step()
        self._saved()

    # -- stepping --------------------------------------------------------------------------------

    @property
    def step(self) -> dict | None:
        """The step shown (the slider's number is its index + 1)."""
        return self.steps[self.slider.value - 1] if self.steps else None

    def _move(self, by: int) -> None:
        self.slider.value = min(max(self.slider.value + by, self.slider.min), self.slider.max)

    def _show_step(self) -> None:
        if not self.steps:
            self.step_html.value = "<i>this run has no steps</i>"
            return
        s = self.step
        status = STATUS.get(s["status"], "")
        parts = [f"<b>step {s['index'] + 1} of {len(self.steps)}: {text(s['kind'])}</b> {text(s['name'])} "
                 f"<span class='afterfix-muted'>{text(str(s['start'])[:23])}</span>" + (f" · {status}" if status else "")]
        if "tool_call" in s:
            t = s["tool_call"]
            parts.append(f"<div>call {text(t['call_id'])} {text(t['name'])}" + (f" <span class='afterfix-bad'>failed: "
                         f"{text(t['error'])}</span>" if t["failed"] else "") + "</div><div>arguments</div>" + _pre(t["arguments"])
                         + "<div>result" + ("</div>" + _pre(t["result"]) if t["result"] is not None else " <i>not recorded</i></div>"))
        if "decision" in s:
            d = s["decision"]
            parts.append(f"<div>decision {text(d['decision_id'])}: {text(d['question'])}<br>policy {text(d['policy'] or '-')} · "
                         f"selected <b>{text(d['selected'] or '-')}</b>: {text(d['reason'])}</div>")
            parts.append(table([{**o, "evidence": "; ".join(o["evidence"])} for o in d["options"]],
                               [("id", "option"), ("verdict", "verdict"), ("score", "score"), ("evidence", "evidence"),
                                ("reason", "reason")]))
            if d.get("chat") and d["chat"].get("input_messages"):
                parts.append(f"<div>model {text(d['chat']['model'])}: messages</div>" + _pre(d["chat"]["input_messages"]))
        if "chat" in s:
            c = s["chat"]
            parts.append(f"<div>model {text(c['model'])}</div>" + (("<div>messages in</div>" + _pre(c["input_messages"])) if c["input_messages"] else "")
                         + (("<div>answer</div>" + _pre(c["output_messages"])) if c["output_messages"] else ""))
        if "action" in s:
            a = s["action"]
            parts.append(f"<div>{text(a['verb'])} {text(a['target'])} · {text(a['status'])}</div>" + _pre(a["patch"]))
        parts.append(_heading("what the agent had"))
        if s["observations"] is not None:
            parts.append("<div>observations <span class='afterfix-muted'>(the latest decision's inputs)</span></div>"
                         + _pre(s["observations"]))
        if s["tool_calls"]:
            parts.append("<div>tool calls so far</div>")
        parts.append("<div style='max-height:360px; overflow:auto'>" + table([{"call_id": t["call_id"], "name": t["name"], "arguments": _j(t["arguments"]),
                             "result": "not recorded" if t["result"] is None and not t["failed"] else
                             (f"failed: {t['error']}" if t["failed"] else _j(t["result"]))} for t in s["tool_calls"]],
                           [("call_id", "call"), ("name", "tool"), ("arguments", "arguments"), ("result", "result")], limit=300)
                     + "</div>" if s["tool_calls"] else "<div class='afterfix-muted'>no tool calls yet</div>")
        self.step_html.value = STYLE + PROSE + "".join(parts) + "</div>"

    # -- replay and what-if ----------------------------------------------------------------------

    def _paths(self) -> None:
        d = self.decisions.get(self.decision_choice.value)
        paths = editable_paths(d) if d else []
        prompt = (f"— pick the recorded value to change ({len(paths)} in this decision's inputs and tool results) —"
                  if paths else "— this decision recorded no inputs or tool results to change —")
        self.path_choice.options = [(prompt, None), *((p, p) for p in paths)]
        self.path_choice.index = 0  # value None alone would select nothing: the browser would show a blank
        self._recorded()

    def _recorded(self) -> None:
        d = self.decisions.get(self.decision_choice.value)
        if d is None or not self.path_choice.value:
            self.recorded_html.value = ""
            return
        try:
            value = recorded_value(d, self.path_choice.value)
        except whatif.EditError as e:
            self.recorded_html.value = f"<span class='afterfix-bad'>{text(e)}</span>"
            return
        self.recorded_html.value = (f"<span class='afterfix-muted'>recorded:</span> <code>{text(_j(value), 300)}</code>"
                                    " <span class='afterfix-muted'>— type what it might have been below</span>")

    def _done(self, result: rp.ReplayResult) -> None:
        if self.save_box.value and not result.first.error:
            replays.save_replay(self.store, result, self.who)
        self.result = result
        self.result_html.value = STYLE + PROSE + render(result) + "</div>"
        self._saved()

    def replay(self) -> rp.ReplayResult | None:
        if not self.decision_choice.value:
            return None
        self._done(rp.replay_decision(self.store, self.decision_choice.value, endpoint=self.endpoint))
        return self.result

    def run_what_if(self) -> rp.ReplayResult | None:
        from afterfix._exceptions import AfterfixError
        from afterfix.review.whatif import parse_value

        if not (self.decision_choice.value and self.path_choice.value):
            self.result_html.value = "<span class='afterfix-bad'>choose a decision and a path to edit</span>"
            return None
        try:
            result = rp.what_if(self.store, self.decision_choice.value,
                                {self.path_choice.value: parse_value(self.value_box.value)}, endpoint=self.endpoint)
        except AfterfixError as e:
            self.result_html.value = f"<span class='afterfix-bad'>{text(e)}</span>"
            return None
        self._done(result)
        return result

    def _saved(self) -> None:
        rows = replays.list_replays(self.store, run_id=self.run_id, limit=20)
        keep = self.saved_choice.value
        prompt = f"— pick one of {len(rows)} saved replays of this run to reopen —" if rows else "— no saved replays of this run yet —"
        self.saved_choice.options = [(prompt, None), *((_label(
            r["kind"].replace("_", "-") + (" (" + ", ".join(_edited(r["edits"])) + ")" if r["edits"] else ""),
            "DIVERGED" if r["diverged"] else "same choice", f"by {r['who']} at {str(r['time'])[:19]}", r["decision_id"]),
            r["replay_id"]) for r in rows)]
        if keep in {r["replay_id"] for r in rows}:
            self.saved_choice.value = keep
        else:
            self.saved_choice.index = 0  # the prompt, shown (value None alone selects nothing)

    def reopen(self) -> rp.ReplayResult | None:
        if not self.saved_choice.value:
            return None
        self.result = replays.open_replay(self.store, self.saved_choice.value)
        self.result_html.value = STYLE + PROSE + render(self.result) + "</div>"
        return self.result


def render(r: rp.ReplayResult) -> str:
    """A replay as HTML: the edits, then each re-run decision, recorded and replayed side by side."""
    head = f"<b>{text(r.kind.replace('_', '-'))} of {text(r.decision_id)}</b> by {text(r.decider)}"
    if r.replay_id:
        head += f" <span class='afterfix-muted'>saved {text(r.replay_id)} by {text(r.who)} at {text(str(r.time)[:19])}</span>"
    parts = [head]
    if r.edits:
        parts.append(table([{**e, "old": _j(e["old"]), "new": _j(e["new"])} for e in r.edits],
                           [("path", "edited"), ("old", "recorded"), ("new", "what-if"), ("via", "via")]))
    for d in r.decisions:
        parts.append(f"<h4>{text(d.decision_id)}: {text(d.question)}</h4>")
        if d.error:
            parts.append(f"<span class='afterfix-bad'>cannot replay: {text(d.error)}</span>")
            continue
        verdict = "<span class='afterfix-ok'>same choice</span>" if d.same else "<span class='afterfix-bad'>DIVERGED</span>"
        parts.append(f"<table class='afterfix-table'><tr><th></th><th>recorded</th><th>replayed</th></tr>"
                     f"<tr><td>choice</td><td>{text(d.recorded_selected)}</td><td>{text(d.replayed_selected)}</td></tr>"
                     f"<tr><td>reason</td><td>{text(d.recorded_reason)}</td><td>{text(d.replayed_reason)}</td></tr></table>"
                     f"{verdict}")
        if d.note:
            parts.append(f"<div class='afterfix-warn'>{text(d.note)}</div>")
        parts.append(table([{**o, "changed": "changed" if o["recorded_verdict"] != o["replayed_verdict"] else ""} for o in d.options],
                           [("id", "option"), ("changed", ""), ("recorded_verdict", "recorded"), ("recorded_reason", "recorded reason"),
                            ("replayed_verdict", "replayed"), ("replayed_reason", "replayed reason")]))
        if d.would_do:
            parts.append("<b>would do (not executed)</b>" + table(
                [{**x, "patch": _j(x.get("patch"))} for x in d.would_do],
                [("verb", "verb"), ("target", "target"), ("patch", "patch"), ("source", "from"), ("recorded_status", "recorded")]))
        if d.missing:
            parts.append(f"<div class='afterfix-warn'>missing recordings: {text(', '.join(d.missing))}</div>")
    return "".join(parts)
