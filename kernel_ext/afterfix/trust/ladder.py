"""Graduation: each trust rule's track record, the promotions and demotions it earns, and the
changes people accepted or refused, appended to the `trust` ledger.

    track_record(store, policy) -> dict[rule_id, Record]
    current_levels(store, policy) -> dict[rule_id, int]
    suggestions(store, policy, *, promote_after=PROMOTE_AFTER) -> list[Suggestion]
    change_level(store, policy, rule_id, kind, who, reason) -> TrustChange      accepted: the level moves
    refuse(store, policy, rule_id, who, reason) -> TrustChange                  the suggestion is turned down
    history(store, rule_id=None) -> list[TrustChange]
    levels_at(store, policy) -> (rule_id, time) -> level                        for compliance.check(levels=)
    ladder(store, policy, *, promote_after=PROMOTE_AFTER) -> list[Rung]         all of it, rule by rule

An agent action belongs to the first policy rule that matches it (the policy's own `match`), the
same rule compliance checks it against. Its outcome is one of:

- clean: applied (or approved and applied), its latest verification a success, never rolled back,
  and nobody's current verdict on it or on its decision is "wrong";
- rolled back: a `rollback` ledger row for it with outcome rolled_back, by a person or by the
  guard (`automatic`);
- wrong: a current "wrong" verdict on it or on the decision it served;
- masked: verified, but the same fix of the same target was needed again (a masked_issue finding:
  the symptom cleared and the cause stayed), so it proves nothing about the rule; it breaks a
  clean streak without being a negative outcome;
- failed: its write failed, or its latest verification failed or was inconclusive;
- open: not applied (recommended, waiting for approval, denied, dry run), or never verified.

A rollback or a wrong verdict is a negative outcome: once one arrives after the rule's level was
last decided, demotion by one level is suggested. A clean streak of `promote_after` actions (5 by
default) after the last non-clean one, and after the level was last decided, suggests promotion by
one level, never above the rule's cap (nor 4). Open outcomes neither count nor break a streak.

A person accepts a suggestion (or moves a rule without one) with `change_level`, or refuses it with
`refuse`; either appends a row with who, why and the track record it was decided on, and resets the
count: the same suggestion comes back only on new evidence. "Since the level was last decided" is
measured in the trace's own clock (the latest action's start time recorded with the decision) and
in counts of negative outcomes, so a simulated night and a wall-clock morning never mix. The current
level of a rule is its policy level plus the accepted changes, capped.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Callable

import pandas as pd

from afterfix._exceptions import AfterfixError, NotFound

__all__ = ["PROMOTE_AFTER", "KINDS", "Outcome", "Record", "Suggestion", "TrustChange", "Rung", "TrustError",
           "track_record", "current_levels", "levels_at", "suggestions", "change_level", "refuse", "history", "ladder",
           "action_labels"]

PROMOTE_AFTER = 5  # clean outcomes in a row before a promotion is suggested
KINDS = ("promote", "demote")
TOP = 4
APPLIED = ("applied", "approved")
NEGATIVE = ("rolled_back", "wrong")
REASON_MAX = 2000
LABEL_PREFIX = "afterfix.labels."


class TrustError(AfterfixError, ValueError):
    """A level change refused: above the rule's cap or outside 1-4, no reason, nothing to refuse."""


@dataclass
class Outcome:
    action_id: str
    time: datetime  # the action's start, in the trace's clock
    result: str  # clean, rolled_back, wrong, failed, open
    detail: str  # one line: what made it so


@dataclass
class Record:
    rule_id: str
    successes: int = 0  # clean outcomes: verified, not rolled back, not marked wrong
    rollbacks_by_people: int = 0
    rollbacks_by_guard: int = 0
    wrong_verdicts: int = 0  # current "wrong" verdicts on the rule's actions or their decisions
    last_outcome_at: datetime | None = None  # the latest matched action's start (trace clock)
    failed_verifications: int = 0
    masked: int = 0  # verified, but the same fix of the same target was needed again (masked_issue)
    actions: int = 0  # agent actions the rule matched
    clean_streak: int = 0  # clean outcomes after the last non-clean one and after the level was last decided
    negatives_since_change: int = 0  # rollbacks and wrong verdicts since the level was last decided
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def negatives(self) -> int:
        return self.rollbacks_by_people + self.rollbacks_by_guard + self.wrong_verdicts

    def summary(self) -> dict:
        """The counts, as the `trust` ledger keeps them (JSON-ready)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("outcomes", "rule_id", "negatives_since_change")}
        d["last_outcome_at"] = self.last_outcome_at.isoformat() if self.last_outcome_at else None
        return d

    def text(self) -> str:
        """One line a person reads: "4 verified, 1 rolled back by the guard, 0 wrong verdicts"."""
        parts = [f"{self.successes} verified"]
        if self.rollbacks_by_people:
            parts.append(f"{self.rollbacks_by_people} rolled back by people")
        if self.rollbacks_by_guard:
            parts.append(f"{self.rollbacks_by_guard} rolled back by the guard")
        if self.wrong_verdicts:
            parts.append(f"{self.wrong_verdicts} marked wrong")
        if self.failed_verifications:
            parts.append(f"{self.failed_verifications} failed verification")
        if self.masked:
            parts.append(f"{self.masked} verified but needed again (masked)")
        return f"{', '.join(parts)} (of {_count(self.actions, 'action')})"


@dataclass
class Suggestion:
    rule_id: str
    from_level: int
    to_level: int
    kind: str  # promote, demote
    why: str


@dataclass
class TrustChange:
    change_id: str
    time: datetime
    who: str
    rule_id: str
    kind: str  # promote, demote
    outcome: str  # accepted, refused
    from_level: int
    to_level: int
    reason: str
    suggested: bool
    track_record: dict
    policy: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["time"] = self.time.isoformat() if self.time is not None else None
        return d

    def text(self) -> str:
        verb = {"accepted": {"promote": "promoted", "demote": "demoted"},
                "refused": {"promote": "refused promotion", "demote": "refused demotion"}}[self.outcome][self.kind]
        return f"{verb} {self.from_level} → {self.to_level}"


@dataclass
class Rung:
    """One rule on the ladder: where it started, where it is, how far it may go and why it might move."""

    rule_id: str
    description: str
    policy_level: int
    level: int
    cap: int | None
    line: int | None
    record: Record
    suggestion: Suggestion | None
    changes: list[TrustChange]

    @property
    def top(self) -> int:
        return _top(self.cap)


# --- reading the store -------------------------------------------------------------------------

def action_labels(attributes: dict, scenario: str | None) -> dict[str, str]:
    """The labels a rule's `scenarios` match: {"scenario": the run's afterfix.scenario} plus every
    afterfix.labels.<name> on the action span, as {name: value}."""
    labels = {k[len(LABEL_PREFIX):]: str(v) for k, v in (attributes or {}).items()
              if isinstance(k, str) and k.startswith(LABEL_PREFIX) and v is not None}
    scenario = (attributes or {}).get("afterfix.scenario") or scenario
    if scenario:
        labels["scenario"] = str(scenario)
    return labels


def _actions(store) -> pd.DataFrame:
    """The agent's production-changing actions, one row each (its latest record), with labels."""
    frame = store.query("""
        SELECT a.action_id, a.decision_id, a.run_id, a.verb, a.target_kind, a.target_namespace, a.status,
               a.failed, a.start_time, a.field_manager, s.attributes
        FROM actions a JOIN spans s ON s.trace_id = a.trace_id AND s.span_id = a.span_id
        WHERE a.mutating AND a.action_id IS NOT NULL""")
    if frame.empty:
        return frame
    # afterfix's own rollbacks are not the agent's to be trusted with
    frame = frame[frame["field_manager"].fillna("") != "afterfix"]
    frame = frame.sort_values("start_time").groupby("action_id").tail(1)
    scenarios = store.query("""
        SELECT run_id, any_value(json_extract_string(attributes, '$."afterfix.scenario"')) AS scenario
        FROM spans WHERE run_id IS NOT NULL AND json_extract_string(attributes, '$."afterfix.scenario"') IS NOT NULL
        GROUP BY run_id""")
    by_run = dict(zip(scenarios["run_id"], scenarios["scenario"]))
    frame = frame.assign(labels=[action_labels(_json(a), by_run.get(r))
                                 for a, r in zip(frame["attributes"], frame["run_id"])])
    return frame.sort_values("start_time").reset_index(drop=True)


def _verifications(store) -> dict[str, str]:
    frame = store.query("""
        SELECT json_extract_string(attributes, '$."afterfix.verification.action_id"') AS action_id,
               json_extract_string(attributes, '$."afterfix.verification.outcome"') AS outcome, start_time
        FROM spans WHERE afterfix_kind = 'verification' ORDER BY start_time""")
    return {a: o for a, o in zip(frame["action_id"], frame["outcome"]) if a}  # the latest wins


def _masked(store) -> set[str]:
    """Actions the masked_issue finding names: the same fix of one target, again and again."""
    from afterfix.analysis.findings import find

    return {a for f in find(store, kinds=["masked_issue"]) for a in f.details.get("action_ids", [])}


def _rollbacks(store) -> pd.DataFrame:
    try:
        return store.query("SELECT rollback_id, action_id, who, automatic, time FROM rollbacks "
                           "WHERE outcome = 'rolled_back' ORDER BY time")
    except Exception:  # a store from before the ledgers
        return pd.DataFrame(columns=["rollback_id", "action_id", "who", "automatic", "time"])


def _wrong(store) -> list:
    from afterfix.review.verdicts import verdicts

    try:
        return [v for v in verdicts(store) if v.verdict == "wrong"]
    except Exception:  # a store from before the ledgers
        return []


def history(store, rule_id: str | None = None) -> list[TrustChange]:
    """Every accepted change and refused suggestion, oldest first (of one rule, if given)."""
    sql, params = "SELECT * FROM trust", []
    if rule_id is not None:
        sql, params = sql + " WHERE rule_id = ?", [rule_id]
    try:
        frame = store.query(sql + " ORDER BY time, change_id", params)
    except Exception as e:  # a store from before the trust ledger has no table yet
        if "trust" in str(e) and ("does not exist" in str(e) or "not exist" in str(e)):
            return []
        raise
    out = []
    for row in frame.to_dict("records"):
        row = {k: _value(v) for k, v in row.items()}
        row["track_record"] = _json(row["track_record"])
        row["from_level"], row["to_level"] = int(row["from_level"]), int(row["to_level"])
        row["suggested"] = bool(row["suggested"])
        out.append(TrustChange(**row))
    return out


# --- the track record ---------------------------------------------------------------------------

def track_record(store, policy, *, changes: list[TrustChange] | None = None) -> dict[str, Record]:
    """Every rule's track record, from the actions it matched, their verifications, the `rollbacks`
    and `verdicts` ledgers, and (for the streak) the rule's last decided change."""
    records = {r.id: Record(r.id) for r in policy.rules}
    actions = _actions(store)
    if actions.empty:
        return records
    checks = _verifications(store)
    masked = _masked(store)
    backs = _rollbacks(store)
    backs_of: dict[str, list] = {}
    for row in backs.to_dict("records"):
        backs_of.setdefault(row["action_id"], []).append(row)
    wrong_of: dict[str, list] = {}
    for v in _wrong(store):
        wrong_of.setdefault(v.target_id, []).append(v)
    changes = history(store) if changes is None else changes
    last = {c.rule_id: c for c in changes}  # oldest first: the last one per rule stays

    for a in actions.to_dict("records"):
        rule = policy.match(a["verb"], a["target_kind"], a["target_namespace"], a["labels"])
        if rule is None or rule.id not in records:
            continue
        rec = records[rule.id]
        rec.actions += 1
        time = _value(a["start_time"])
        rec.last_outcome_at = time if rec.last_outcome_at is None else max(rec.last_outcome_at, time)
        mine = backs_of.get(a["action_id"], [])
        wrong = wrong_of.get(a["action_id"], []) + (wrong_of.get(a["decision_id"], []) if a["decision_id"] else [])
        guard = sum(bool(b["automatic"]) for b in mine)
        rec.rollbacks_by_guard += guard
        rec.rollbacks_by_people += len(mine) - guard
        rec.wrong_verdicts += len({v.verdict_id for v in wrong})
        check = checks.get(a["action_id"])
        if mine:
            who = ", ".join(sorted({"the guard" if b["automatic"] else str(b["who"]) for b in mine}))
            out = Outcome(a["action_id"], time, "rolled_back", f"rolled back by {who}")
        elif wrong:
            out = Outcome(a["action_id"], time, "wrong", "marked wrong by " + ", ".join(sorted({v.who for v in wrong})))
        elif a["status"] not in APPLIED:
            failed = a["status"] == "failed" or bool(a["failed"])
            out = Outcome(a["action_id"], time, "failed" if failed else "open", f"status {a['status']}")
        elif check == "success" and a["action_id"] in masked:
            out = Outcome(a["action_id"], time, "masked", "verified, but the same fix was needed again (masked_issue)")
        elif check == "success":
            out = Outcome(a["action_id"], time, "clean", "verified")
        elif check in ("failure", "inconclusive"):
            out = Outcome(a["action_id"], time, "failed", f"verification {check}")
        else:
            out = Outcome(a["action_id"], time, "open", "never verified")
        rec.successes += out.result == "clean"
        rec.masked += out.result == "masked"
        rec.failed_verifications += out.result == "failed" and check in ("failure", "inconclusive")
        rec.outcomes.append(out)

    for rec in records.values():
        decided = last.get(rec.rule_id)
        then = decided.track_record if decided else {}
        since = _time(then.get("last_outcome_at"))
        before = sum(int(then.get(k) or 0) for k in ("rollbacks_by_people", "rollbacks_by_guard", "wrong_verdicts"))
        rec.negatives_since_change = max(rec.negatives - before, 0) if decided else rec.negatives
        streak = 0
        for o in rec.outcomes:
            if since is not None and o.time <= since:
                continue
            if o.result == "clean":
                streak += 1
            elif o.result != "open":
                streak = 0
        rec.clean_streak = streak
    return records


# --- levels and suggestions ---------------------------------------------------------------------

def current_levels(store, policy, *, changes: list[TrustChange] | None = None) -> dict[str, int]:
    """Each rule's level now: its policy level, moved by every accepted change, never above its cap."""
    changes = history(store) if changes is None else changes
    levels = {r.id: r.level for r in policy.rules}
    for c in changes:
        if c.outcome == "accepted" and c.rule_id in levels:
            levels[c.rule_id] = min(max(levels[c.rule_id] + (c.to_level - c.from_level), 1), TOP)
    caps = {r.id: _top(r.cap) for r in policy.rules}
    return {rid: min(level, caps[rid]) for rid, level in levels.items()}


def levels_at(store, policy, *, changes: list[TrustChange] | None = None) -> Callable[[str, datetime | None], int | None]:
    """The level each rule had at a time (the accepted changes made by then), as `compliance.check`'s
    `levels` takes it: an action is judged by the level in force when it happened. A time of None
    is now."""
    changes = [c for c in (history(store) if changes is None else changes) if c.outcome == "accepted"]
    base = {r.id: (r.level, _top(r.cap)) for r in policy.rules}

    def level(rule_id: str, when: datetime | None) -> int | None:
        if rule_id not in base:
            return None
        lvl, top = base[rule_id]
        for c in changes:
            if c.rule_id == rule_id and (when is None or c.time <= when):
                lvl = min(max(lvl + (c.to_level - c.from_level), 1), TOP)
        return min(lvl, top)

    return level


def suggestions(store, policy, *, promote_after: int = PROMOTE_AFTER) -> list[Suggestion]:
    """The promotions and demotions the track records call for, in the policy's rule order."""
    return [r.suggestion for r in ladder(store, policy, promote_after=promote_after) if r.suggestion]


def _suggest(rule, level: int, rec: Record, promote_after: int) -> Suggestion | None:
    if rec.negatives_since_change and level > 1:
        bad = [(rec.rollbacks_by_people, "rolled back by people"), (rec.rollbacks_by_guard, "rolled back by the guard"),
               (rec.wrong_verdicts, "marked wrong")]
        what = ", ".join(f"{n} {t}" for n, t in bad if n)
        return Suggestion(rule.id, level, level - 1, "demote",
                          f"{_count(rec.negatives_since_change, 'rollback or wrong verdict')} since its level was "
                          f"last decided; its record: {what}")
    top = _top(rule.cap)
    if rec.clean_streak >= promote_after and level < top:
        return Suggestion(rule.id, level, level + 1, "promote",
                          f"{rec.clean_streak} clean outcomes in a row (verified, not rolled back, not marked wrong)")
    return None


def ladder(store, policy, *, promote_after: int = PROMOTE_AFTER) -> list[Rung]:
    """Every rule of `policy` in its order, with its level now, cap, track record, suggestion and history."""
    promote_after = _promote_after(promote_after)
    changes = history(store)
    records = track_record(store, policy, changes=changes)
    levels = current_levels(store, policy, changes=changes)
    rungs = []
    for rule in policy.rules:
        rec, level = records[rule.id], levels[rule.id]
        rungs.append(Rung(rule.id, getattr(rule, "description", "") or "", rule.level, level, rule.cap,
                          getattr(rule, "line", None), rec, _suggest(rule, level, rec, promote_after),
                          [c for c in changes if c.rule_id == rule.id]))
    return rungs


# --- people deciding ----------------------------------------------------------------------------

def change_level(store, policy, rule_id: str, kind: str, who: str, reason: str, *,
                 promote_after: int = PROMOTE_AFTER, now: Callable[[], datetime] | None = None) -> TrustChange:
    """Move one rule up or down one level (accepting a suggestion, or on a person's own judgement).

    Refused (TrustError) above the rule's cap, naming the cap and the policy line that sets it,
    and outside 1-4. `now` (naive UTC) is for tests."""
    kind = (kind or "").strip().lower()
    if kind not in KINDS:
        raise TrustError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    rung = _rung(store, policy, rule_id, promote_after)
    to = rung.level + (1 if kind == "promote" else -1)
    if kind == "promote" and rung.cap is not None and to > rung.cap:
        raise TrustError(f"rule {rule_id}: capped at level {rung.cap} by {_where(policy, rung)}; it is at "
                         f"{rung.level} and cannot be promoted to {to}. Raise the rule's cap in the policy "
                         "file if it should go higher")
    if to > TOP:
        raise TrustError(f"rule {rule_id} is at level {TOP} (fix and report), the top of the ladder: nothing to promote")
    if to < 1:
        raise TrustError(f"rule {rule_id} is at level 1 (alert and recommend), the bottom of the ladder: "
                         "nothing to demote")
    suggested = rung.suggestion is not None and rung.suggestion.kind == kind
    return _append(store, policy, rung, kind, "accepted", to, who, reason, suggested, now)


def refuse(store, policy, rule_id: str, who: str, reason: str, *, promote_after: int = PROMOTE_AFTER,
           now: Callable[[], datetime] | None = None) -> TrustChange:
    """Turn down the rule's current suggestion: the level stays, the refusal is recorded with why,
    and the same suggestion returns only on new outcomes. TrustError when nothing is suggested."""
    rung = _rung(store, policy, rule_id, promote_after)
    s = rung.suggestion
    if s is None:
        raise TrustError(f"rule {rule_id}: nothing is suggested for it now ({rung.record.text()}; clean streak "
                         f"{rung.record.clean_streak} of {_promote_after(promote_after)}), so there is nothing to "
                         "refuse; see `afterfix trust`")
    return _append(store, policy, rung, s.kind, "refused", s.to_level, who, reason, True, now)


def _append(store, policy, rung: Rung, kind: str, outcome: str, to: int, who: str, reason: str, suggested: bool,
            now) -> TrustChange:
    who = (who or "").strip()
    if not who:
        raise TrustError("who: a trust change needs the name of the person deciding (--who NAME)")
    reason = (reason or "").strip()
    if not reason:
        raise TrustError(f"reason: say why rule {rung.rule_id} should {'not ' if outcome == 'refused' else ''}"
                         f"{kind} (--reason TEXT); it is kept with the change")
    if len(reason) > REASON_MAX:
        raise TrustError(f"reason: {len(reason)} characters, at most {REASON_MAX}; shorten it")
    from afterfix.analysis.window import utc_now

    summary = rung.record.summary()
    change = TrustChange(change_id=f"tru-{uuid.uuid4().hex[:16]}", time=(now or utc_now)(), who=who,
                         rule_id=rung.rule_id, kind=kind, outcome=outcome, from_level=rung.level, to_level=to,
                         reason=reason, suggested=suggested, track_record=summary,
                         policy=str(getattr(policy, "source", "") or "") or None)
    row = asdict(change)
    row["track_record"] = json.dumps(summary, sort_keys=True)
    store.append_ledger("trust", [row])
    return change


def _rung(store, policy, rule_id: str, promote_after: int) -> Rung:
    rid = (rule_id or "").strip()
    for rung in ladder(store, policy, promote_after=promote_after):
        if rung.rule_id == rid:
            return rung
    ids = ", ".join(r.id for r in policy.rules) or "none"
    raise NotFound(f"no rule {rid!r} in the trust policy {getattr(policy, 'source', '')}: its rules are {ids}")


def _where(policy, rung: Rung) -> str:
    source = getattr(policy, "source", None) or "the trust policy"
    return f"{source} line {rung.line}" if rung.line else str(source)


# --- small pieces -------------------------------------------------------------------------------

def _promote_after(n) -> int:
    try:
        n = int(n)
    except (TypeError, ValueError):
        raise TrustError(f"promote_after {n!r}: give a whole number of clean outcomes, 1 or more") from None
    if n < 1:
        raise TrustError(f"promote_after {n}: give a whole number of clean outcomes, 1 or more")
    return n


def _top(cap) -> int:
    return TOP if cap is None else max(1, min(int(cap), TOP))


def _json(text) -> dict:
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(text) if text else {}
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _time(text) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text))
    except ValueError:
        return None


def _value(v):
    if isinstance(v, pd.Timestamp):
        return v.to_pydatetime()
    return None if v is None or v is pd.NaT or (isinstance(v, float) and v != v) else v


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
