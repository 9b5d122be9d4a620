"""VerdictPanel: a person's verdict on one decision or action, and everyone's current verdicts on it.

    VerdictPanel(store, target_id, who=None, live=False)

Shows what the target is, each person's current verdict (newest per person, with the option they
say should have been taken and their note), then a correct / wrong / unsure choice, a note, the
option that should have been taken (enabled for a wrong verdict on a decision, or on an action
whose decision recorded options), Save, and the result. Saving calls
`review.verdicts.record_verdict`, the function `afterfix verdict` calls; a refused verdict shows
the library's message and keeps what was typed. With `live=True` a Poller refreshes the current
verdicts as others give theirs (trait values only).
"""

from __future__ import annotations

import getpass
import os

import ipywidgets as w

from afterfix.review.verdicts import VERDICTS, find_target, record_verdict, verdicts
from afterfix.widgets._common import STYLE, Poller, table, text

__all__ = ["VerdictPanel"]

ENV_USER = "AFTERFIX_USER"
NO_OPTION = "(choose the option that should have been taken)"
COLUMNS = [("time", "when (UTC)"), ("who", "who"), ("verdict", "verdict"), ("should_have", "should have"),
           ("note", "note")]


class VerdictPanel(w.VBox):
    def __init__(self, store, target_id: str, who: str | None = None, *, live: bool = False, interval: float = 5.0):
        self.store, self.target_id = store, target_id
        self.target = None
        self.header = w.HTML()
        self.current = w.HTML()
        self.choice = w.ToggleButtons(options=[(v, v) for v in VERDICTS], value=None,
                                      tooltips=["the agent did the right thing", "it should have done otherwise",
                                                "cannot tell yet"])
        self.note = w.Textarea(placeholder="why (recorded with the verdict)", layout=w.Layout(width="520px", height="64px"))
        self.should = w.Dropdown(options=[(NO_OPTION, None)], value=None, disabled=True, description="should have",
                                 layout=w.Layout(width="520px"))
        default_who = who if who is not None else (os.environ.get(ENV_USER) or _login())
        self.who = w.Text(value=default_who, description="who", layout=w.Layout(width="260px"))
        self.save = w.Button(description="Save verdict", button_style="primary", icon="check")
        self.result = w.HTML()
        self.choice.observe(lambda _: self._enable(), names="value")
        self.save.on_click(lambda _: self._save())
        super().__init__([w.HTML(STYLE), self.header, self.current, self.choice, self.should, self.note,
                          w.HBox([self.who, self.save]), self.result])
        self._load()
        self.poller = Poller(self.refresh, interval).start() if live and self.target is not None else None

    def _load(self) -> None:
        try:
            self.target = find_target(self.store, self.target_id)
        except Exception as e:  # an unknown id: said in the panel, nothing to save
            self.header.value = f"<b>Verdict</b> on <code>{text(self.target_id)}</code>"
            self.result.value = f"<span class='afterfix-bad'>{text(e)}</span>"
            self.save.disabled = self.choice.disabled = self.note.disabled = True
            return
        t = self.target
        took = f" · the agent chose <code>{text(t.selected)}</code>" if t.selected else ""
        where = " · ".join(f"{k} <code>{text(v)}</code>" for k, v in (("run", t.run_id), ("incident", t.incident_id)) if v)
        self.header.value = (f"<b>Verdict on {text(t.target_type)} <code>{text(t.target_id)}</code></b>: "
                             f"{text(t.label, 200)}{took}<br><span class='afterfix-muted'>{where}</span>")
        self.should.options = [(NO_OPTION, None)] + [
            (_plain(f"{o['id']} — {o['description'] or ''} ({o['verdict'] or 'considered'})"), o["id"]) for o in t.options]
        self.refresh()
        self._enable()

    def _enable(self) -> None:
        t = self.target
        self.should.disabled = not (t is not None and self.choice.value == "wrong" and t.options)
        if self.should.disabled:
            self.should.value = None

    def refresh(self) -> None:
        """Re-read the current verdicts (safe from the Poller's thread: sets a trait value only)."""
        rows = [dict(v.to_dict(), time=v.time.strftime("%Y-%m-%d %H:%M")) for v in verdicts(self.store, target_id=self.target_id)]
        if not rows:
            self.current.value = "<span class='afterfix-muted'>No verdict yet.</span>"
            return
        body = table(rows, COLUMNS)
        wrong = sum(r["verdict"] == "wrong" for r in rows)
        lead = f"<span class='afterfix-bad'>{wrong} of {len(rows)} say wrong</span>" if wrong else f"{len(rows)} verdict{'s' if len(rows) != 1 else ''}, none wrong"
        self.current.value = f"<div>{lead}</div>{body}"

    def _save(self) -> None:
        if self.target is None:
            return
        if self.choice.value is None:
            self.result.value = "<span class='afterfix-bad'>Choose correct, wrong or unsure first.</span>"
            return
        try:
            v = record_verdict(self.store, self.target_id, self.choice.value, self.who.value, note=self.note.value,
                               should_have=self.should.value if not self.should.disabled else None)
        except Exception as e:  # the library's message names the field and the fix; the input is kept
            self.result.value = f"<span class='afterfix-bad'>Not saved: {text(e)}</span>"
            return
        extra = f", should have: <code>{text(v.should_have)}</code>" if v.should_have else ""
        self.result.value = (f"<span class='afterfix-ok'>saved</span>: {text(v.who)} marked {text(v.target_type)} "
                             f"<code>{text(v.target_id)}</code> <b>{text(v.verdict)}</b>{extra} "
                             f"<span class='afterfix-muted'>({text(v.verdict_id)}, "
                             f"{text(v.time.strftime('%Y-%m-%d %H:%M:%S'))} UTC)</span>")
        self.note.value = ""
        self.refresh()

    def close(self) -> None:
        if self.poller is not None:
            self.poller.stop()
        super().close()


def _plain(value: str, limit: int = 120) -> str:
    """A dropdown label: the browser shows it as text; only cut it and drop control characters."""
    value = "".join(ch for ch in value if ch >= " " or ch == "\t")
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return ""
