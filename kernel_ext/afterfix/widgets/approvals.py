"""ApprovalQueue: the requests agents at trust level 2 wait on, approved or denied with a comment.

    ApprovalQueue(store, who=None, *, incident_id=None, live=True, interval=2.0)

Shows the pending requests (a picker as wide as the notebook, each label leading with what would
happen, then the time left and the request id), and for the one picked: who asked, the incident and the decision it serves, the one-line summary, the exact
change as JSON, when the agent stops waiting. Then a comment, who decides, Approve and Deny,
the result, and the history of decided requests. Approve and Deny stay disabled until a request
is picked and a comment is written: the comment is required (the library refuses a decision
without one), and a disabled button says so before the click rather than after.

Deciding calls `review.approvals.decide`, the function `afterfix approvals approve|deny` calls;
when someone decided first (or the request expired), the result says who and when, and that
this decision was not recorded. A request stays picked once decided (by this person or anyone
else), shown as decided with who, when and why, until the person picks another: the picker
never moves under the result line. With `live=True` a Poller re-reads the queue every `interval`
seconds (trait values only), so new requests and others' decisions appear without re-running.
All trace text is escaped.
"""

from __future__ import annotations

import getpass
import json
import os

import ipywidgets as w

from afterfix.review.approvals import decide, requests
from afterfix.widgets._common import STYLE, Poller, table, text

__all__ = ["ApprovalQueue"]

ENV_USER = "AFTERFIX_USER"
NO_REQUEST = "(no pending requests)"
HISTORY = [("requested", "requested (UTC)"), ("agent_name", "agent"), ("incident_id", "incident"),
           ("summary", "what"), ("status", "decision"), ("decided_by", "by"), ("decided", "when (UTC)"),
           ("comment", "comment")]
HISTORY_MAX = 50


class ApprovalQueue(w.VBox):
    def __init__(self, store, who: str | None = None, *, incident_id: str | None = None, live: bool = True,
                 interval: float = 2.0):
        self.store, self.incident_id = store, incident_id
        self.pending: dict[str, object] = {}
        self.held = None  # the picked request once it is decided: kept picked until another is picked
        self.header = w.HTML()
        self.pick = w.Dropdown(options=[(NO_REQUEST, None)], value=None, description="request",
                               layout=w.Layout(width="100%"))
        self.detail = w.HTML()
        self.comment = w.Textarea(placeholder="why you approve or deny (required; recorded with your decision)",
                                  layout=w.Layout(width="100%", height="64px"))
        self.who = w.Text(value=who if who is not None else (os.environ.get(ENV_USER) or _login()),
                          description="who", layout=w.Layout(width="260px"))
        self.approve = w.Button(description="Approve", button_style="success", icon="check", disabled=True)
        self.deny = w.Button(description="Deny", button_style="danger", icon="times", disabled=True)
        self.result = w.HTML()
        self.history = w.HTML()
        self.pick.observe(self._picked, names="value")
        self.comment.observe(lambda _: self._enable(), names="value")
        self.who.observe(lambda _: self._enable(), names="value")
        self.approve.on_click(lambda _: self._decide("approved"))
        self.deny.on_click(lambda _: self._decide("denied"))
        super().__init__([w.HTML(STYLE), self.header, self.pick, self.detail, self.comment,
                          w.HBox([self.who, self.approve, self.deny]), self.result,
                          w.HTML("<b>History</b>"), self.history])
        self.refresh()
        self.poller = Poller(self.refresh, interval, on_error=self._poll_error).start() if live else None

    # ---- reading ------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-read the queue (safe from the Poller's thread: sets trait values only)."""
        found = requests(self.store, incident_id=self.incident_id)
        pending = [r for r in found if r.pending]
        self.pending = {r.request_id: r for r in pending}
        picked = self.pick.value
        self.held = next((r for r in found if r.request_id == picked and not r.pending), None) if picked else None
        options = [(_label(r), r.request_id) for r in pending]
        if self.held is not None:
            options.insert(0, (_label(self.held), self.held.request_id))
        options = options or [(NO_REQUEST, None)]
        keep = picked if picked in self.pending or self.held is not None else (pending[0].request_id if pending else None)
        if list(self.pick.options) != options:
            self.pick.options = options
        if keep is not None and self.pick.value != keep:
            self.pick.value = keep  # the observer shows it
        else:
            if keep is None:
                self.pick.index = 0  # "no pending requests" shown, not a blank (value None alone selects nothing)
            self._show()
        scope = f" for incident <code>{text(self.incident_id)}</code>" if self.incident_id else ""
        self.header.value = (f"<b>Approval queue</b>{scope}: {len(pending)} pending, "
                             f"{len(found) - len(pending)} decided")
        decided = [r for r in reversed(found) if not r.pending][:HISTORY_MAX]
        rows = [{**r.to_dict(), "requested": _when(r.requested_at), "decided": _when(r.decided_at)} for r in decided]
        self.history.value = table(rows, HISTORY) if rows else "<span class='afterfix-muted'>Nothing decided yet.</span>"

    def _picked(self, change) -> None:
        if self.held is not None and change["old"] == self.held.request_id:
            self.refresh()  # the decided request leaves the picker once another is picked
        else:
            self._show()

    def _show(self) -> None:
        held = self.held if self.held is not None and self.pick.value == self.held.request_id else None
        req = self.pending.get(self.pick.value) or held
        if req is None:
            self.detail.value = "<span class='afterfix-muted'>No agent is waiting for a decision.</span>"
            self._enable()
            return
        facts = [("request", req.request_id), ("asked by", req.agent_name), ("incident", req.incident_id),
                 ("decision", req.decision_id), ("action", req.action_id), ("run", req.run_id), ("target", req.target),
                 ("requested", f"{_when(req.requested_at)} UTC"),
                 ("agent stops waiting", f"{_when(req.expires_at)} UTC ({_left(req)})" if req.pending and req.expires_at else None)]
        rows = "".join(f"<tr><th>{text(k)}</th><td>{text(v)}</td></tr>" for k, v in facts if v)
        change = req.change if isinstance(req.change, str) else json.dumps(req.change, indent=2, sort_keys=True)
        if held is not None:
            by = f" by {text(held.decided_by)}" if held.decided_by else ""
            why = f": “{text(held.comment)}”" if held.comment else ""
            others = len(self.pending)
            head = (f"<div><b>Decided: {text(held.status)}</b>{by} at {text(_when(held.decided_at))} UTC{why}. "
                    f"<span class='afterfix-muted'>No longer waiting; "
                    + (f"{others} other request{'s' if others != 1 else ''} waiting: pick one above." if others else
                       "nothing else is waiting.") + "</span></div>"
                    f"<div><b>It asked for:</b> {text(req.summary)}</div>")
        else:
            head = f"<div><b>If approved:</b> {text(req.summary)}</div>"
        # ipywidgets' HTML sets a 28 px line height (a widget row's): wrapped prose would read double-spaced.
        self.detail.value = ("<div style='line-height:1.45'>" + head +
                             f"<table class='afterfix-table'>{rows}</table>"
                             f"<div><b>The exact change</b> ({text(req.verb)} {text(req.target)}):</div>"
                             f"<pre class='afterfix-pre'>{text(change)}</pre></div>")
        self._enable()

    def _enable(self) -> None:
        ready = self.pick.value in self.pending and bool(self.comment.value.strip()) and bool(self.who.value.strip())
        self.approve.disabled = self.deny.disabled = not ready
        hint = "" if ready else ("already decided: pick a pending request" if self.held is not None and
                                 self.pick.value == self.held.request_id else
                                 "pick a request" if self.pick.value not in self.pending else
                                 "write a comment first" if not self.comment.value.strip() else "say who decides")
        self.approve.tooltip = self.deny.tooltip = hint

    # ---- deciding -----------------------------------------------------------------------------
    def _decide(self, decision: str) -> None:
        request_id = self.pick.value
        if request_id not in self.pending:
            return
        try:
            done = decide(self.store, request_id, decision, self.who.value, self.comment.value)
        except Exception as e:  # the library's message names the field and the fix; the input is kept
            self._say(f"<span class='afterfix-bad'>Not recorded: {text(e)}</span>")
            return
        if done.stood:
            self._say(f"<span class='afterfix-ok'>{text(request_id)}: {text(done.message)}</span>")
            self.comment.value = ""
        else:
            self._say(f"<span class='afterfix-bad'>Someone decided first.</span> {text(request_id)}: {text(done.message)}")
        self.refresh()

    def _poll_error(self, message: str) -> None:
        self._say(f"<span class='afterfix-warn'>refresh failed: {text(message)}</span>")

    def _say(self, html: str) -> None:
        self.result.value = f"<div style='line-height:1.45'>{html}</div>"

    def close(self) -> None:
        if self.poller is not None:
            self.poller.stop()
        super().close()


LABEL_MAX = 130  # what a 1000-pixel notebook shows of an option


def _label(req) -> str:
    """A dropdown label leading with what would happen (the browser cuts an option at the right),
    then the time left, then the id; a decided request leads with its decision ("approved by ana:
    ..."). The browser shows it as text: only drop control characters and cut the summary, at a
    word, so the label stays within LABEL_MAX characters."""
    what = req.summary or " ".join(x for x in (req.verb, req.target) if x) or "(no summary)"
    if req.pending:
        s = req.seconds_left()
        # Whole minutes: the options are re-set only when a label changes, not on every refresh.
        left = "no deadline" if s is None else ("time is up" if s <= 0 else f"{-(-int(s) // 60)} min left")
        head, tail = "", f" · {left} · {req.request_id}"
    else:
        head = req.status + (f" by {req.decided_by}" if req.decided_by else "") + ": "
        tail = f" · {req.request_id}"
    head, what, tail = ("".join(ch if ch >= " " else " " for ch in part) for part in (head, what, tail))
    room = max(LABEL_MAX - len(head) - len(tail), 40)
    if len(what) > room:
        cut = what[:room - 1]
        what = (cut.rsplit(" ", 1)[0] if " " in cut[room // 2:] else cut) + "…"
    return head + what + tail


def _left(req) -> str:
    s = req.seconds_left()
    if s is None:
        return "no deadline"
    if s <= 0:
        return "time is up: the agent has stopped waiting"
    return f"{int(s // 60)} min {int(s % 60):02d} s left"


def _when(dt) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S") if dt is not None else ""


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return ""
