"""ApprovalQueue: the requests agents at trust level 2 wait on, approved or denied with a comment.

    ApprovalQueue(store, who=None, *, incident_id=None, live=True, interval=2.0)

Shows the pending requests (a picker: request, what it would do, time left), and for the one
picked: who asked, the incident and the decision it serves, the one-line summary, the exact
change as JSON, when the agent stops waiting. Then a comment, who decides, Approve and Deny,
the result, and the history of decided requests. Approve and Deny stay disabled until a request
is picked and a comment is written: the comment is required (the library refuses a decision
without one), and a disabled button says so before the click rather than after.

Deciding calls `review.approvals.decide`, the function `afterfix approvals approve|deny` calls;
when someone decided first (or the request expired), the result says who and when, and that
this decision was not recorded. With `live=True` a Poller re-reads the queue every `interval`
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
        self.header = w.HTML()
        self.pick = w.Dropdown(options=[(NO_REQUEST, None)], value=None, description="request",
                               layout=w.Layout(width="720px"))
        self.detail = w.HTML()
        self.comment = w.Textarea(placeholder="why you approve or deny (required; recorded with your decision)",
                                  layout=w.Layout(width="720px", height="64px"))
        self.who = w.Text(value=who if who is not None else (os.environ.get(ENV_USER) or _login()),
                          description="who", layout=w.Layout(width="260px"))
        self.approve = w.Button(description="Approve", button_style="success", icon="check", disabled=True)
        self.deny = w.Button(description="Deny", button_style="danger", icon="times", disabled=True)
        self.result = w.HTML()
        self.history = w.HTML()
        self.pick.observe(lambda _: self._show(), names="value")
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
        options = [(_label(r), r.request_id) for r in pending] or [(NO_REQUEST, None)]
        keep = self.pick.value if self.pick.value in self.pending else (pending[0].request_id if pending else None)
        if list(self.pick.options) != options:
            self.pick.options = options
        if self.pick.value != keep:
            self.pick.value = keep
        else:
            self._show()
        scope = f" for incident <code>{text(self.incident_id)}</code>" if self.incident_id else ""
        self.header.value = (f"<b>Approval queue</b>{scope}: {len(pending)} pending, "
                             f"{len(found) - len(pending)} decided")
        decided = [r for r in reversed(found) if not r.pending][:HISTORY_MAX]
        rows = [{**r.to_dict(), "requested": _when(r.requested_at), "decided": _when(r.decided_at)} for r in decided]
        self.history.value = table(rows, HISTORY) if rows else "<span class='afterfix-muted'>Nothing decided yet.</span>"

    def _show(self) -> None:
        req = self.pending.get(self.pick.value)
        if req is None:
            self.detail.value = "<span class='afterfix-muted'>No agent is waiting for a decision.</span>"
            self._enable()
            return
        facts = [("asked by", req.agent_name), ("incident", req.incident_id), ("decision", req.decision_id),
                 ("action", req.action_id), ("run", req.run_id), ("target", req.target),
                 ("requested", f"{_when(req.requested_at)} UTC"),
                 ("agent stops waiting", f"{_when(req.expires_at)} UTC ({_left(req)})")]
        rows = "".join(f"<tr><th>{text(k)}</th><td>{text(v)}</td></tr>" for k, v in facts if v)
        change = req.change if isinstance(req.change, str) else json.dumps(req.change, indent=2, sort_keys=True)
        self.detail.value = (f"<div><b>If approved:</b> {text(req.summary)}</div>"
                             f"<table class='afterfix-table'>{rows}</table>"
                             f"<div><b>The exact change</b> ({text(req.verb)} {text(req.target)}):</div>"
                             f"<pre class='afterfix-pre'>{text(change)}</pre>")
        self._enable()

    def _enable(self) -> None:
        ready = self.pick.value in self.pending and bool(self.comment.value.strip()) and bool(self.who.value.strip())
        self.approve.disabled = self.deny.disabled = not ready
        hint = "" if ready else ("pick a request" if self.pick.value not in self.pending else
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
            self.result.value = f"<span class='afterfix-bad'>Not recorded: {text(e)}</span>"
            return
        if done.stood:
            self.result.value = f"<span class='afterfix-ok'>{text(request_id)}: {text(done.message)}</span>"
            self.comment.value = ""
        else:
            self.result.value = (f"<span class='afterfix-bad'>Someone decided first.</span> "
                                 f"{text(request_id)}: {text(done.message)}")
        self.refresh()

    def _poll_error(self, message: str) -> None:
        self.result.value = f"<span class='afterfix-warn'>refresh failed: {text(message)}</span>"

    def close(self) -> None:
        if self.poller is not None:
            self.poller.stop()
        super().close()


def _label(req) -> str:
    """A dropdown label: the browser shows it as text; only cut it and drop control characters."""
    s = req.seconds_left()
    # Whole minutes: the options are re-set only when a label changes, not on every refresh.
    left = "no deadline" if s is None else ("time is up" if s <= 0 else f"{-(-int(s) // 60)} min left")
    value = f"{req.request_id} · {req.summary or req.verb} · {left}"
    value = "".join(ch for ch in value if ch >= " ")
    return value if len(value) <= 140 else value[:139] + "…"


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
