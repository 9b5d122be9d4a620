"""Approvals (Level 2): an agent asks a person before a change, and waits for the answer.

    open_request(store, *, action_id, verb, target, change, summary, agent, ...) -> Request  # appends `requested`
    wait(store, request_id, *, poll_s, sleep, now) -> Request      # until decided or expired
    request(store, ..., recorder=None) -> Request                  # both: the SDK call (afterfix.approvals)
    decide(store, request_id, "approved"|"denied", who, comment) -> Decided
    requests(store, *, status=None, incident_id=None) -> list[Request] ; get(store, request_id) -> Request

Everything is a row of the `approvals` ledger (schema.APPROVAL_COLUMNS): one `requested` row,
then at most one decision row, `approved`, `denied` or `expired`. A request is decided once:
every decision row is appended with `Store.append_ledger(unless=...)`, whose check for an
earlier decision runs in the same transaction under the store's write lock, so when two people
(or a person and the agent's timeout) decide at the same moment exactly one row is written and
the other is told who decided first. The store is the only thing the agent and the people share,
so any process that reaches the store can ask, wait, approve or deny.

Times are naive UTC in the ledger. `now` and `sleep` are injectable so that an agent on a
simulated clock (the night shift) waits in its own time, not the wall clock's.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from afterfix._exceptions import AfterfixError, NotFound

__all__ = ["STATUSES", "DECISIONS", "Request", "Decided", "ApprovalError", "open_request", "wait", "request",
           "decide", "requests", "get"]

STATUSES = ("pending", "approved", "denied", "expired")
DECISIONS = ("approved", "denied")
COMMENT_MAX = 4000  # characters
LIST_HINT = "afterfix approvals list --status all"
_NOUN = {"approved": "approval", "denied": "denial"}
# The first decision row of one request, inside append_ledger's transaction (so over lake.approvals).
_DECIDED = ("SELECT event, who, time, comment FROM lake.approvals WHERE request_id = ? AND event <> 'requested' "
            "ORDER BY time LIMIT 1")


class ApprovalError(AfterfixError, ValueError):
    """A request or decision that cannot be recorded as given (no comment, unknown decision, ...)."""


@dataclass
class Request:
    request_id: str
    action_id: str | None
    decision_id: str | None
    run_id: str | None
    incident_id: str | None
    agent_name: str | None
    verb: str | None
    target: str | None  # Kind/namespace/name
    summary: str | None  # one line: what will happen if approved (trace text: show escaped)
    change: Any  # the exact change asked for (manifest or patch), parsed JSON
    requested_at: datetime
    expires_at: datetime | None
    status: str  # pending, approved, denied, expired
    decided_by: str | None = None
    decided_at: datetime | None = None
    comment: str | None = None

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    def seconds_left(self, now: float | None = None) -> float | None:
        """Seconds until the agent stops waiting (negative once past); None when decided or unbounded."""
        if not self.pending or self.expires_at is None:
            return None
        return _epoch(self.expires_at) - (time.time() if now is None else now)

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("requested_at", "expires_at", "decided_at"):
            d[key] = d[key].isoformat() if d[key] is not None else None
        return d


@dataclass
class Decided:
    """The answer to one person's decision: `stood` False when someone (or the timeout) decided
    first; `message` says what happened in a sentence, for the CLI and the widget."""

    request: Request
    stood: bool
    message: str


# ---- the agent's side ---------------------------------------------------------------------------


def open_request(store, *, action_id: str, verb: str, target: str, change: Any, summary: str, agent: str,
                 decision_id: str | None = None, run_id: str | None = None, incident_id: str | None = None,
                 timeout_s: float = 900, now: Callable[[], float] = time.time,
                 request_id: str | None = None) -> Request:
    """Append a `requested` row and return the pending request (it expires `timeout_s` from now)."""
    if not (agent or "").strip():
        raise ApprovalError("agent: a request names the agent asking (agent='reference-agent')")
    if not (summary or "").strip():
        raise ApprovalError("summary: say in one line what will happen if the request is approved")
    try:
        timeout_s = float(timeout_s)
    except (TypeError, ValueError):
        raise ApprovalError(f"timeout_s={timeout_s!r}: give the seconds to wait for a person, e.g. 900") from None
    if not timeout_s > 0:
        raise ApprovalError(f"timeout_s={timeout_s!r}: must be more than 0 seconds")
    try:
        change_json = json.dumps(change, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise ApprovalError(f"change: the change asked for must be JSON (a manifest or a patch): {e}") from None
    t = now()
    req = Request(request_id or f"apr-{uuid.uuid4().hex[:16]}", action_id, decision_id, run_id, incident_id,
                  agent.strip(), verb, target, summary.strip(), json.loads(change_json), _dt(t), _dt(t + timeout_s),
                  "pending")
    store.create()
    store.append_ledger("approvals", [{
        "request_id": req.request_id, "time": req.requested_at, "event": "requested", "who": req.agent_name,
        "action_id": action_id, "decision_id": decision_id, "run_id": run_id, "incident_id": incident_id,
        "agent_name": req.agent_name, "verb": verb, "target": target, "summary": req.summary,
        "request": change_json, "expires_at": req.expires_at}])
    return req


def wait(store, request_id: str, *, poll_s: float = 1.0, sleep: Callable[[float], None] = time.sleep,
         now: Callable[[], float] = time.time) -> Request:
    """Poll the ledger until the request is decided or its time is up; then append `expired`
    (decided once: if a person decided in the same moment, theirs stands) and return it decided."""
    if not poll_s > 0:
        raise ApprovalError(f"poll_s={poll_s!r}: must be more than 0 seconds")
    req = get(store, request_id)
    while req.pending:
        t = now()
        left = req.seconds_left(t)
        if left is not None and left <= 0:
            waited = _epoch(req.expires_at) - _epoch(req.requested_at)
            _append_decision(store, req, "expired", req.agent_name or "agent", _dt(t),
                             f"nobody decided within {_duration(waited)}; the agent stopped waiting")
            return get(store, request_id)
        sleep(poll_s if left is None else min(poll_s, left))
        req = get(store, request_id)
    return req


def request(store, *, action_id: str, verb: str, target: str, change: Any, summary: str, agent: str,
            decision_id: str | None = None, run_id: str | None = None, incident_id: str | None = None,
            timeout_s: float = 900, poll_s: float = 1.0, sleep: Callable[[float], None] = time.sleep,
            now: Callable[[], float] = time.time, recorder: Any = None) -> Request:
    """Ask a person and wait for the answer (or the timeout): `open_request` then `wait`.

    With an `afterfix.sdk.Recorder`, the agent's trace gets the approval spans too: `requested`,
    then `approved`/`denied` (approver and comment) or `expired`, so the decision tree shows who
    approved. Call it inside the action span the request is about."""
    req = open_request(store, action_id=action_id, verb=verb, target=target, change=change, summary=summary,
                       agent=agent, decision_id=decision_id, run_id=run_id, incident_id=incident_id,
                       timeout_s=timeout_s, now=now)
    if recorder is not None:
        recorder.approval(action_id, status="requested", reason=req.summary)
    done = wait(store, req.request_id, poll_s=poll_s, sleep=sleep, now=now)
    if recorder is not None:
        recorder.approval(action_id, status=done.status,
                          approver=done.decided_by if done.status in DECISIONS else None, reason=done.comment)
    return done


# ---- the people's side --------------------------------------------------------------------------


def decide(store, request_id: str, decision: str, who: str, comment: str | None = None, *,
           now: Callable[[], float] = time.time) -> Decided:
    """Approve or deny a pending request, with a comment; decided once.

    When the request was already decided (by someone else, or it expired), nothing is written
    and `stood` is False, with a message naming who decided and when. A request whose time is
    up but whose agent has not yet noticed is expired here, so nobody approves a change that no
    agent is waiting to make."""
    decision = (decision or "").strip().lower()
    if decision not in DECISIONS:
        raise ApprovalError(f"decision {decision!r} is not one of {', '.join(DECISIONS)}")
    who = (who or "").strip()
    if not who:
        raise ApprovalError("who: a decision needs the name of the person making it (--who NAME)")
    comment = (comment or "").strip()
    if not comment:
        raise ApprovalError(f"comment: say why you {'approve' if decision == 'approved' else 'deny'} "
                            f"{request_id} (--comment TEXT); the agent and the morning review read it")
    if len(comment) > COMMENT_MAX:
        raise ApprovalError(f"comment: {len(comment)} characters, at most {COMMENT_MAX}; shorten it")
    req = get(store, request_id)
    t = now()
    if req.pending and (req.seconds_left(t) or 0) <= 0 and req.expires_at is not None:
        _append_decision(store, req, "expired", "afterfix", _dt(t),
                         f"its time ran out at {_clock(req.expires_at)} before anyone decided")
    elif req.pending:
        first = _append_decision(store, req, decision, who, _dt(t), comment)
        if first is None:
            done = get(store, request_id)
            return Decided(done, True, f"{decision} by {who} at {_clock(done.decided_at)}: {_what(done)}")
    done = get(store, request_id)
    return Decided(done, False, f"{_already(done)}; your {_NOUN[decision]} was not recorded")


def _append_decision(store, req: Request, event: str, who: str, at: datetime, comment: str) -> tuple | None:
    """Append one decision row unless the request has one; None if written, else the first one."""
    found = store.append_ledger("approvals", [{
        "request_id": req.request_id, "time": at, "event": event, "who": who, "comment": comment,
        "action_id": req.action_id, "decision_id": req.decision_id, "run_id": req.run_id,
        "incident_id": req.incident_id, "agent_name": req.agent_name, "verb": req.verb, "target": req.target}],
        unless=_DECIDED, params=[req.request_id])
    return found if isinstance(found, tuple) else None


def _already(req: Request) -> str:
    if req.status == "expired":
        return f"already expired at {_clock(req.decided_at)} ({req.comment or 'the agent stopped waiting'})"
    return f"already {req.status} by {req.decided_by} at {_clock(req.decided_at)}"


def _what(req: Request) -> str:
    if req.status == "approved":
        return f"{req.agent_name or 'the agent'} may now {req.summary or req.verb}"
    return f"{req.agent_name or 'the agent'} will not {req.verb} {req.target}"


# ---- reading ------------------------------------------------------------------------------------

_SELECT = """
SELECT r.request_id, r.time AS requested_at, r.action_id, r.decision_id, r.run_id, r.incident_id, r.agent_name,
       r.verb, r.target, r.summary, r.request, r.expires_at,
       d.event AS decided, d.who AS decided_by, d.time AS decided_at, d.comment
FROM (SELECT * FROM approvals WHERE event = 'requested'
      QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY time) = 1) r
LEFT JOIN (SELECT * FROM approvals WHERE event <> 'requested'
           QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY time) = 1) d
  ON d.request_id = r.request_id
"""


def get(store, request_id: str) -> Request:
    """One request with its decision; NotFound naming the id (and how to list them) if unknown."""
    rid = (request_id or "").strip()
    found = _read(store, " WHERE r.request_id = ?", [rid]) if rid else []
    if not found:
        raise NotFound(f"no approval request {rid!r} in {getattr(store, 'where', store)}: list them with {LIST_HINT}")
    return found[0]


def requests(store, *, status: str | None = None, incident_id: str | None = None) -> list[Request]:
    """Requests in the order they were made; `status` one of STATUSES (None or "all": every one)."""
    if status in (None, "all"):
        status = None
    elif status not in STATUSES:
        raise ApprovalError(f"status {status!r} is not one of {', '.join(STATUSES)} or all")
    if not store.exists():
        return []
    where, params = [], []
    if incident_id is not None:
        where.append("r.incident_id = ?")
        params.append(incident_id)
    if status == "pending":
        where.append("d.event IS NULL")
    elif status is not None:
        where.append("d.event = ?")
        params.append(status)
    return _read(store, (" WHERE " + " AND ".join(where)) if where else "", params)


def _read(store, where: str, params: list) -> list[Request]:
    frame = store.query(_SELECT + where + " ORDER BY r.time, r.request_id", params)
    out = []
    for row in frame.to_dict("records"):
        row = {k: _value(v) for k, v in row.items()}
        try:
            change = json.loads(row["request"]) if row["request"] else None
        except ValueError:  # written by another tool: show it as the text it is
            change = row["request"]
        out.append(Request(row["request_id"], row["action_id"], row["decision_id"], row["run_id"], row["incident_id"],
                           row["agent_name"], row["verb"], row["target"], row["summary"], change,
                           row["requested_at"], row["expires_at"], row["decided"] or "pending", row["decided_by"],
                           row["decided_at"], row["comment"]))
    return out


# ---- time ---------------------------------------------------------------------------------------


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc).replace(tzinfo=None)


def _epoch(dt: datetime) -> float:
    return dt.replace(tzinfo=timezone.utc).timestamp()


def _clock(dt: datetime | None) -> str:
    return dt.strftime("%H:%M:%S") if dt is not None else "?"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds % 3600 == 0 and seconds >= 3600:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0 and seconds >= 60:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _value(v):
    import pandas as pd

    if v is None or v is pd.NaT or (isinstance(v, float) and v != v):
        return None
    if isinstance(v, pd.Timestamp):
        return v.to_pydatetime()
    return v
