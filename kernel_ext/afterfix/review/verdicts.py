"""Verdicts: a person's judgement of one decision or one action, appended to the `verdicts` ledger.

    record_verdict(store, target_id, verdict, who, *, note=None, should_have=None) -> Verdict
    verdicts(store, *, incident_id=None, run_id=None, target_id=None, history=False) -> list[Verdict]
    find_target(store, target_id) -> Target        # what a verdict would be about, and its options

A verdict is "correct", "wrong" or "unsure", with a note. A wrong decision also names the option
that should have been taken, one of the options the agent recorded (a wrong action may name one
of its decision's options). The target is looked up in the store, so every row carries the run,
the incident and the decision it belongs to, and an id the store does not hold is refused.

Rows are never changed: a person who changes their mind appends a new row. The newest row per
(who, target) is that person's current verdict; `history=True` returns every row.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Callable

from afterfix._exceptions import AfterfixError, NotFound

__all__ = ["VERDICTS", "Verdict", "Target", "VerdictError", "record_verdict", "verdicts", "find_target"]

VERDICTS = ("correct", "wrong", "unsure")
LIST_TARGETS = ("afterfix query \"SELECT decision_id, question FROM decisions\" "
                "(or SELECT action_id, verb, target_name FROM actions)")
NOTE_MAX = 4000  # characters: a note is a paragraph, not a log file


class VerdictError(AfterfixError, ValueError):
    """A verdict that cannot be recorded as given (unknown verdict, missing or unknown option)."""


@dataclass
class Verdict:
    verdict_id: str
    time: datetime
    who: str
    target_type: str  # decision, action
    target_id: str
    decision_id: str | None
    run_id: str | None
    incident_id: str | None
    verdict: str  # correct, wrong, unsure
    note: str | None
    should_have: str | None  # wrong: the option id that should have been taken

    def to_dict(self) -> dict:
        d = asdict(self)
        d["time"] = self.time.isoformat() if self.time is not None else None
        return d


@dataclass
class Target:
    """What a verdict is about: a decision (its question and options) or an action (its verb and
    object, and the options of the decision it served)."""

    target_type: str
    target_id: str
    decision_id: str | None
    run_id: str | None
    incident_id: str | None
    label: str  # "decide: <question>" or "<verb> <Kind> <ns>/<name>"; trace text, show escaped
    selected: str | None = None  # the option the agent took (decisions)
    options: list[dict] = field(default_factory=list)  # {id, description, verdict} of the decision

    @property
    def option_ids(self) -> list[str]:
        return [o["id"] for o in self.options]


def find_target(store, target_id: str) -> Target:
    """The decision or action `target_id` names; NotFound (naming the id and how to list ids) if none."""
    tid = (target_id or "").strip()
    if not tid:
        raise NotFound(f"no target id given: pass a decision or action id; list them with {LIST_TARGETS}")
    dec = store.query("SELECT decision_id, run_id, incident_id, question, selected_option FROM decisions "
                      "WHERE decision_id = ? ORDER BY start_time DESC LIMIT 1", [tid])
    if not dec.empty:
        d = dec.iloc[0]
        return Target("decision", tid, tid, _str(d["run_id"]), _str(d["incident_id"]),
                      f"decide: {_str(d['question']) or '(no question recorded)'}",
                      selected=_str(d["selected_option"]), options=_options(store, tid))
    act = store.query("SELECT action_id, run_id, incident_id, decision_id, verb, target_kind, target_namespace, "
                      "target_name FROM actions WHERE action_id = ? ORDER BY start_time DESC LIMIT 1", [tid])
    if not act.empty:
        a = act.iloc[0]
        where = "/".join(x for x in (_str(a["target_namespace"]), _str(a["target_name"])) if x)
        decision = _str(a["decision_id"])
        return Target("action", tid, decision, _str(a["run_id"]), _str(a["incident_id"]),
                      f"{_str(a['verb']) or 'act'} {_str(a['target_kind']) or 'object'} {where}".strip(),
                      options=_options(store, decision) if decision else [])
    raise NotFound(f"no decision or action {tid!r} in {getattr(store, 'where', store)}: "
                   f"list the ids with {LIST_TARGETS}")


def record_verdict(store, target_id: str, verdict: str, who: str, *, note: str | None = None,
                   should_have: str | None = None, now: Callable[[], datetime] | None = None) -> Verdict:
    """Append one verdict on a decision or an action and return it.

    `should_have` is required for a wrong decision with recorded options, and must be one of its
    option ids; it is refused with any other verdict. `now` (naive UTC) is for tests."""
    verdict = (verdict or "").strip().lower()
    if verdict not in VERDICTS:
        raise VerdictError(f"verdict {verdict!r} is not one of {', '.join(VERDICTS)}: pass one of them")
    who = (who or "").strip()
    if not who:
        raise VerdictError("who: a verdict needs the name of the person giving it (--who NAME)")
    note = (note or "").strip() or None
    if note is not None and len(note) > NOTE_MAX:
        raise VerdictError(f"note: {len(note)} characters, at most {NOTE_MAX}; shorten it")
    should_have = (should_have or "").strip() or None
    target = find_target(store, target_id)
    _check_should_have(target, verdict, should_have)
    from afterfix.analysis.window import utc_now

    row = Verdict(verdict_id=f"vrd-{uuid.uuid4().hex[:16]}", time=(now or utc_now)(), who=who,
                  target_type=target.target_type, target_id=target.target_id, decision_id=target.decision_id,
                  run_id=target.run_id, incident_id=target.incident_id, verdict=verdict, note=note,
                  should_have=should_have)
    store.append_ledger("verdicts", [asdict(row)])
    return row


def _check_should_have(target: Target, verdict: str, should_have: str | None) -> None:
    ids = target.option_ids
    listed = ", ".join(ids) if ids else "none recorded"
    if should_have is None:
        if verdict == "wrong" and target.target_type == "decision" and ids:
            raise VerdictError(f"should_have: a wrong decision names the option that should have been taken "
                               f"(--should OPTION); {target.target_id}'s options are {listed}")
        return
    if verdict != "wrong":
        raise VerdictError(f"should_have: only a wrong verdict names the option that should have been taken; "
                           f"drop --should or give the verdict wrong")
    if not ids:
        what = "decision" if target.target_type == "decision" else f"decision of action {target.target_id}"
        raise VerdictError(f"should_have {should_have!r}: the {what} recorded no options to choose from; drop --should")
    if should_have not in ids:
        raise VerdictError(f"should_have {should_have!r} is not an option of decision {target.decision_id}: "
                           f"its options are {listed}")


def verdicts(store, *, incident_id: str | None = None, run_id: str | None = None, target_id: str | None = None,
             who: str | None = None, history: bool = False) -> list[Verdict]:
    """Verdicts in the order they were given: each person's current one per target, or with
    `history=True` every row. Filters combine (and)."""
    where, params = [], []
    for column, value in (("incident_id", incident_id), ("run_id", run_id), ("target_id", target_id), ("who", who)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    sql = "SELECT * FROM verdicts" + (f" WHERE {' AND '.join(where)}" if where else "")
    if not history:
        sql = (f"SELECT * FROM ({sql}) QUALIFY row_number() OVER "
               "(PARTITION BY who, target_id ORDER BY time DESC, verdict_id DESC) = 1")
    frame = store.query(f"SELECT * FROM ({sql}) ORDER BY time, verdict_id", params)
    return [Verdict(**{k: _value(v) for k, v in row.items()}) for row in frame.to_dict("records")]


def _options(store, decision_id: str) -> list[dict]:
    frame = store.query("SELECT option_id, description, verdict FROM options WHERE decision_id = ? ORDER BY seq",
                        [decision_id])
    seen, out = set(), []
    for row in frame.to_dict("records"):
        if row["option_id"] and row["option_id"] not in seen:
            seen.add(row["option_id"])
            out.append({"id": row["option_id"], "description": _str(row["description"]), "verdict": _str(row["verdict"])})
    return out


def _str(v) -> str | None:
    return None if v is None or (isinstance(v, float) and v != v) else str(v)


def _value(v):
    import pandas as pd

    if isinstance(v, pd.Timestamp):
        return v.to_pydatetime()
    return None if v is None or (isinstance(v, float) and v != v) or v is pd.NaT else v
