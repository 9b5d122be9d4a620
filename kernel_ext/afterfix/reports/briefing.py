"""The morning briefing as data: a five-line shift handoff, then the night in nine sections.

    build_briefing(store, since=None, until=None, namespace=None) -> Briefing

The sections come in the order a reviewer asks: what broke; what the agent tried (the options it
turned down included); what worked; what was rolled back; side effects to watch; will it happen
again; findings; open approvals; actions by trust level. Beside them, `Briefing.verdicts` (also
`section("verdicts")`) lists what people said of the window's decisions and actions
(`review.verdicts`); a step someone marked wrong is a reason to worry in the handoff's first line. Each is a `Section`: a title, a sentence
that answers its question, a table of plain text (never HTML: `reports.html` escapes it when it is
shown) and the figures that belong to it. The template, the CLI and a test all read the same
object, so whatever the HTML says can be checked without a browser.

The window defaults to the 24 hours up to now. An empty window is a briefing too: its handoff says
nothing was recorded and names the newest data the store does hold, so a wrong `--since` is
noticed at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from afterfix.analysis.diffs import state_diff
from afterfix.analysis.findings import find
from afterfix.analysis.findings import _common as c
from afterfix.analysis.diffs import field_label as label
from afterfix.analysis.findings.scope import Scope, naive_utc
from afterfix.analysis.model import SEVERITIES, Finding
from afterfix.analysis.window import utc_now

__all__ = ["Briefing", "Section", "build_briefing", "SECTION_KEYS", "VERDICTS_KEY", "LADDER_KEY", "VIOLATIONS_KEY",
           "TRUST_LEVELS"]

SECTION_KEYS = ("what_broke", "what_tried", "what_worked", "rolled_back", "side_effects", "again",
                "findings", "approvals", "trust")
VERDICTS_KEY = "verdicts"  # the reviewers' verdicts: `Briefing.verdicts`, shown after what the agent tried
LADDER_KEY = "trust_ladder"  # the trust ladder (trust.ladder): `Briefing.ladder`, shown after actions by trust level
VIOLATIONS_KEY = "trust_violations"  # actions beyond their trust level (trust.compliance): `Briefing.violations`
VERDICT_ORDER = {"wrong": 0, "unsure": 1, "correct": 2}
TRUST_LEVELS = {1: "1 alert & recommend", 2: "2 fix with approval", 3: "3 fix & inform", 4: "4 fix & report"}
ROLLBACK_VERBS = ("rollback", "undo", "revert")
WORRY_SEVERITIES = ("critical", "high")
MAX_CHANGES = 4  # field changes spelled out per action; the rest are counted


@dataclass
class Section:
    key: str
    title: str
    summary: str  # the answer to the section's question, in a sentence or two
    table: pd.DataFrame | None = None  # plain text cells, shown escaped
    figures: list = field(default_factory=list)  # plotly figures
    notes: list[str] = field(default_factory=list)  # findings' explanations and the like, one paragraph each


@dataclass
class Briefing:
    since: datetime
    until: datetime
    namespace: str | None
    store: str
    worry: bool  # does anything need a person this morning?
    handoff: list[str]  # five lines
    sections: list[Section]
    findings: list[Finding]
    counts: dict[str, int]
    verdicts: Section | None = None  # what reviewers said of the window's decisions and actions
    ladder: Section | None = None  # the trust ladder: each rule's level, cap, record and suggestion
    violations: Section | None = None  # the window's actions that went beyond their trust level

    def section(self, key: str) -> Section:
        for s in [*self.sections, self.verdicts, self.ladder, self.violations]:
            if s is not None and s.key == key:
                return s
        raise KeyError(f"no briefing section {key!r}: the sections are {', '.join(SECTION_KEYS)}, {VERDICTS_KEY}, "
                       f"{LADDER_KEY}, {VIOLATIONS_KEY}")

    @property
    def window(self) -> str:
        where = f" in namespace {self.namespace}" if self.namespace else ""
        return f"{c.when(self.since)} to {c.when(self.until)}{where}"


def build_briefing(store, since: datetime | None = None, until: datetime | None = None,
                   namespace: str | None = None, *, figures: bool = True, policy=None) -> Briefing:
    """The briefing of one window of `store` (default: the 24 hours up to now).

    `figures=False` leaves the plotly figures out (the CLI's text handoff and tests of the data).
    `policy` is the trust policy (`trust.policy.TrustPolicy`; None: the file `policy_path()` names)
    that the trust ladder and the violations are read against; the findings' trust_violation
    detector is registered with it and the ladder's levels."""
    until = naive_utc(until) or utc_now()
    since = naive_utc(since) or until - timedelta(hours=24)
    if since >= until:
        raise ValueError(f"the window is empty: since {c.when(since)} is not before until {c.when(until)}")
    scope = Scope(store, since=since, until=until, namespace=namespace)
    trust = _Trust(store, scope, policy, figures)
    night = _Night(scope, find(store, scope=scope))
    sections = [night.what_broke(figures), night.what_tried(figures), night.what_worked(), night.rolled_back(),
                night.side_effects(), night.again(), night.findings_section(), night.approvals(), night.trust()]
    return Briefing(since=since, until=until, namespace=namespace, store=str(getattr(store, "where", store)),
                    worry=night.worry(), handoff=night.handoff(), sections=sections, findings=night.found,
                    counts=night.counts(), verdicts=night.verdicts_section(), ladder=trust.ladder_section(),
                    violations=trust.violations_section())


class _Trust:
    """The trust ladder and the window's violations, read against one trust policy."""

    def __init__(self, store, scope: Scope, policy, figures: bool):
        self.store, self.scope, self.figures = store, scope, figures
        self.error = None
        self.policy = policy
        try:
            from afterfix.trust import compliance
            from afterfix.trust.ladder import levels_at
            from afterfix.trust.policy import load_policy

            self.policy = policy if policy is not None else load_policy()
            self.levels = levels_at(store, self.policy)
            compliance.register(self.policy, levels=self.levels)
        except Exception as e:  # a policy file that cannot be read is said in the briefing, not raised
            self.error = str(e)

    def ladder_section(self) -> Section:
        from afterfix.trust.ladder import PROMOTE_AFTER, ladder

        title = "Trust ladder"
        if self.error:
            return Section(LADDER_KEY, title, f"No trust ladder: the trust policy cannot be used ({self.error}).")
        rungs = ladder(self.store, self.policy, promote_after=PROMOTE_AFTER)
        if not rungs:
            return Section(LADDER_KEY, title, f"The trust policy {self.policy.source} has no rules.")
        suggested = [r for r in rungs if r.suggestion]
        moved = sum(r.level != r.policy_level for r in rungs)
        summary = (f"{_count(len(rungs), 'rule')} in {self.policy.source}; {moved} moved from the policy's level; "
                   + (f"{_count(len(suggested), 'suggestion')} waiting for a person: accept with "
                      "`afterfix trust promote|demote RULE --reason TEXT`, or `afterfix trust refuse`."
                      if suggested else "nothing is suggested."))
        table = None
        if suggested:
            table = pd.DataFrame([{"rule": r.rule_id, "suggestion": f"{r.suggestion.kind} {r.suggestion.from_level} → "
                                   f"{r.suggestion.to_level}", "why": r.suggestion.why, "track record": r.record.text(),
                                   "cap": r.cap if r.cap is not None else "none"} for r in suggested])
        figs = []
        if self.figures:
            from afterfix.figures.trust import trust_ladder

            figs.append(trust_ladder(rungs, promote_after=PROMOTE_AFTER))
        return Section(LADDER_KEY, title, summary, table, figs)

    def violations_section(self) -> Section:
        title = "Trust violations"
        if self.error:
            return Section(VIOLATIONS_KEY, title, f"Not checked: the trust policy cannot be used ({self.error}).")
        from afterfix.trust.compliance import check

        s = self.scope
        found = [v for v in check(self.store, self.policy, levels=self.levels)
                 if v.time is not None and s.since <= v.time < s.until
                 and (s.namespace is None or (v.target or "").split("/")[0] == s.namespace)]
        if not found:
            return Section(VIOLATIONS_KEY, title, "Every action kept to the level its trust rule allowed.")
        rows = [{"time": c.hhmm(v.time), "incident": v.incident_id or "", "agent": v.agent_name or "",
                 "action": f"{v.verb} {v.target_kind} {v.target}", "rule": v.rule_id or "(default level)",
                 "allowed": TRUST_LEVELS.get(v.allowed_level, str(v.allowed_level)),
                 "what happened": v.what_happened} for v in found]
        summary = (f"{_count(len(found), 'action')} went beyond the level the trust policy allowed: "
                   "each is also a trust_violation finding.")
        return Section(VIOLATIONS_KEY, title, summary, pd.DataFrame(rows), notes=[v.message for v in found])


class _Night:
    """The window's frames and findings, and the sentences made of them."""

    def __init__(self, scope: Scope, found: list[Finding]):
        self.scope = scope
        self.found = found
        self.incidents = scope.incidents
        self.actions = _latest_per_action(scope.actions)
        self.decisions = scope.decisions
        self.verifications = scope.verifications
        mutating = self.actions["mutating"].fillna(False).astype(bool) if not self.actions.empty else pd.Series([], dtype=bool)
        applied = self.actions[mutating & (self.actions["status"] == "applied")] if not self.actions.empty else self.actions
        # afterfix's own rollbacks are shown where rollbacks are, not counted as the agent's changes
        ours = applied["field_manager"].fillna("") == "afterfix" if not applied.empty else pd.Series([], dtype=bool)
        self.all_changes = applied
        self.changes = applied[~ours] if not applied.empty else applied
        self.outcomes = self._outcomes()
        self.verdicts = self._verdicts()

    # --- shared reading -------------------------------------------------------------

    def _outcomes(self) -> dict[str, pd.Series]:
        """The last verification of each action, by action id."""
        v = self.verifications
        if v.empty:
            return {}
        last = v.dropna(subset=["action_id"]).sort_values("start_time").groupby("action_id").tail(1)
        return {row["action_id"]: row for _, row in last.iterrows()}

    def _verdicts(self) -> list:
        """Each person's current verdict on one of the window's decisions or actions, given at any time
        (reviews come the morning after), in the order they were given."""
        from afterfix.review.verdicts import verdicts

        ids = set(self.decisions["decision_id"].dropna()) if not self.decisions.empty else set()
        ids |= set(self.actions["action_id"].dropna()) if not self.actions.empty else set()
        if not ids:
            return []
        try:
            found = verdicts(self.scope.store)
        except Exception:  # a store from before the ledgers
            return []
        return [v for v in found if v.target_id in ids]

    def wrong(self) -> list:
        """The decisions and actions someone currently calls wrong, one verdict each (the first given)."""
        seen: dict[str, Any] = {}
        for v in self.verdicts:
            if v.verdict == "wrong":
                seen.setdefault(v.target_id, v)
        return list(seen.values())

    def of_kind(self, *kinds: str) -> list[Finding]:
        return [f for f in self.found if f.kind in kinds]

    def worrying(self) -> list[Finding]:
        return [f for f in self.found if f.severity in WORRY_SEVERITIES]

    def awaiting(self) -> pd.DataFrame:
        a = self.actions
        return a[a["status"] == "awaiting_approval"] if not a.empty else a

    def unresolved(self) -> pd.DataFrame:
        i = self.incidents
        return i[~i["status"].isin(["resolved", "mitigated"])] if not i.empty else i

    def alerts(self) -> pd.DataFrame:
        """The guard's alerts in the window (a failed analysis rolled back, an inconclusive one
        waiting for a person, a capped rollback), newest first."""
        store = self.scope.store
        try:
            return store.query("""SELECT time, source, severity, action_id, title, message, delivery FROM alerts
                                  WHERE time >= ?::TIMESTAMP AND time < ?::TIMESTAMP ORDER BY time DESC""",
                               [self.scope.since, self.scope.until])
        except Exception:  # a store from before the ledgers
            return pd.DataFrame(columns=["time", "source", "severity", "action_id", "title", "message", "delivery"])

    def worry(self) -> bool:
        return bool(self.worrying() or not self.awaiting().empty or not self.unresolved().empty
                    or not self.alerts().empty or bool(self.wrong())
                    or any(self._outcome(a) in ("failure", "inconclusive") for _, a in self.changes.iterrows()))

    def _outcome(self, action) -> str | None:
        row = self.outcomes.get(action["action_id"])
        return None if row is None else (row["outcome"] or "not recorded")

    def counts(self) -> dict[str, int]:
        verified = sum(self._outcome(a) == "success" for _, a in self.changes.iterrows())
        return {"incidents": len(self.incidents), "changes": len(self.changes), "verified": int(verified),
                "awaiting_approval": len(self.awaiting()), "unresolved": len(self.unresolved()),
                "findings": len(self.found), "worrying": len(self.worrying()), "decisions": len(self.decisions),
                "verdicts": len(self.verdicts), "marked_wrong": len(self.wrong())}

    # --- the handoff ------------------------------------------------------------------

    def handoff(self) -> list[str]:
        """Five lines: should I worry; what broke; what the agent did; what to watch; tonight."""
        if self.incidents.empty and self.actions.empty:
            newest = _newest(self.scope.store)
            where = f"; the store's newest span is from {c.when(newest)}" if newest is not None else "; the store is empty"
            return ["Nothing to worry about in this window: no incident and no agent action was recorded.",
                    f"No incidents between {c.when(self.scope.since)} and {c.when(self.scope.until)}{where}.",
                    "The agent changed nothing in production.",
                    "Nothing to watch.",
                    "Nothing recurs."]
        return [self._verdict_line(), self._broke_line(), self._did_line(), self._watch_line(), self._tonight_line()]

    def _verdict_line(self) -> str:
        needs = []
        worrying = self.worrying()
        if worrying:
            needs.append(_count(len(worrying), "high-severity finding"))
        if not self.awaiting().empty:
            needs.append(_count(len(self.awaiting()), "change") + " awaiting approval")
        failed = [a for _, a in self.changes.iterrows() if self._outcome(a) in ("failure", "inconclusive")]
        if failed:
            needs.append(_count(len(failed), "change") + " that did not verify")
        unresolved = self.unresolved()
        if not unresolved.empty:
            needs.append(_count(len(unresolved), "incident") + " still open or escalated")
        alerts = self.alerts()
        if not alerts.empty:
            needs.append(_count(len(alerts), "guard alert"))
        wrong = self.wrong()
        if wrong:
            kinds = [_count(n, kind) for kind in ("decision", "action")
                     if (n := sum(v.target_type == kind for v in wrong))]
            needs.append(f"{_join(kinds)} a reviewer marked wrong")
        if not needs:
            return "Nothing needs you: every incident was resolved and every change the agent made verified."
        return "Yes, worry: " + _join(needs) + "."

    def _broke_line(self) -> str:
        i = self.incidents
        if i.empty:
            return "No incidents; the agent still acted (see below)."
        services = i["service"].dropna().nunique()
        crit = i[i["severity"] == "critical"]
        line = (f"{_count(len(i), 'incident')} on {_count(services, 'service')} between "
                f"{c.hhmm(i['start_time'].min())} and {c.hhmm(i['start_time'].max())}")
        if not crit.empty:
            line += f"; critical: {_join(sorted(crit['service'].dropna().unique()), limit=4)}"
        return line + "."

    def _did_line(self) -> str:
        n = len(self.changes)
        if not n and self.awaiting().empty:
            return "The agent changed nothing in production."
        outcomes = [self._outcome(a) for _, a in self.changes.iterrows()]
        parts = [f"{outcomes.count('success')} verified"]
        bad = sum(o in ("failure", "inconclusive") for o in outcomes)
        if bad:
            parts.append(f"{bad} failed verification")
        if outcomes.count(None):
            parts.append(f"{outcomes.count(None)} never verified")
        line = f"The agent applied {_count(n, 'change')} ({', '.join(parts)})"
        if not self.awaiting().empty:
            line += f" and asked approval for {len(self.awaiting())} more"
        escalated = (self.incidents["status"] == "escalated").sum() if not self.incidents.empty else 0
        if escalated:
            line += f"; it escalated {_count(int(escalated), 'incident')} to people"
        return line + "."

    def _watch_line(self) -> str:
        effects = self.of_kind("side_effect")
        bundled = {f.details.get("action_id"): f for f in self.of_kind("bundled_rollback")}
        if not effects and not bundled:
            return "Nothing to watch: no metric left its normal band after a change."
        if not effects:
            return f"Watch: {next(iter(bundled.values())).title}."
        first = effects[0]
        d = first.details
        line = f"Watch {d.get('workload') or first.target}: {first.title}"
        if d.get("threshold") is not None and d.get("peak") is not None and d["peak"] > d["threshold"]:
            line += f", to {d['peak']:.4g} (alert at {d['threshold']:.4g})"
        if not d.get("recovered", True):
            line += ", still high"
        also = bundled.get(d.get("action_id"))
        if also is not None:
            undone = [f"{label(x['path'])} {x['before']} → {x['after']}" for x in also.details.get("fields", []) if not x.get("intended")]
            if undone:
                line += f"; that {also.details.get('verb', 'rollback')} also set {_join(undone, limit=2)}"
        more = len(effects) - 1
        return line + (f" (+{more} more below)." if more else ".")

    def _tonight_line(self) -> str:
        masked = self.of_kind("masked_issue")
        if not masked:
            return "Tonight: nothing in this window was fixed the same way twice."
        first = masked[0]
        d = first.details
        verb, target = d.get("verb", "fix"), first.target or "it"
        more = f" (+{len(masked) - 1} more below)" if len(masked) > 1 else ""
        if d.get("will_recur") == "yes" and d.get("next_expected"):
            return (f"Tonight: yes, expect the agent to {verb} {target} again around {c.hhmm(d['next_expected'])}; "
                    f"it did so {d.get('repeats', 'several')} times and the cause is still there{more}.")
        if d.get("will_recur") == "maybe":
            return f"Tonight: perhaps; {first.title}, but something else changed since{more}."
        return f"Tonight: {first.title}{more}."

    # --- sections -----------------------------------------------------------------

    def what_broke(self, figures: bool) -> Section:
        i = self.incidents
        title = "What broke"
        if i.empty:
            return Section("what_broke", title, "No incident was recorded in this window.")
        table = pd.DataFrame({
            "time": i["start_time"].map(c.hhmm), "incident": i["incident_id"], "service": i["service"],
            "what": i["title"], "severity": i["severity"], "status": i["status"],
            "agents": i["agents"], "changes": i["changes"]})
        table = _by_severity(table)
        by_sev = i["severity"].fillna("unknown").value_counts()
        summary = (f"{_count(len(i), 'incident')}: "
                   + ", ".join(f"{by_sev[s]} {s}" for s in list(SEVERITIES) + ["unknown"] if s in by_sev) + ".")
        figs = []
        if figures:
            from afterfix.figures.overview import incident_scenarios, night_overview

            inc = i.merge(incident_scenarios(self.scope.store), on="incident_id", how="left")
            figs.append(night_overview(inc, self.scope.actions))
            worst = self._worst_incident()
            if worst is not None:
                figs.append(_timeline_figure(self.scope.store, worst))
        return Section("what_broke", title, summary, table, figs)

    def _worst_incident(self) -> str | None:
        """The incident a reviewer opens first: the one of the most severe finding, else the most severe incident."""
        for f in self.found:
            if f.incident_id and f.incident_id in set(self.incidents["incident_id"]):
                return f.incident_id
        if self.incidents.empty:
            return None
        return _by_severity(self.incidents.rename(columns={"incident_id": "incident"}))["incident"].iloc[0]

    def what_tried(self, figures: bool) -> Section:
        d = self.decisions
        title = "What the agent tried"
        if d.empty:
            return Section("what_tried", title, "The agent recorded no decisions in this window.")
        options = _options(self.scope.store, list(d["decision_id"]))
        said = _said(v for v in self.verdicts if v.target_type == "decision")
        rows = []
        for _, dec in d.iterrows():
            mine = options[options["decision_id"] == dec["decision_id"]] if not options.empty else options
            turned = [f"{o['option_id']}: {o['reason'] or 'no reason recorded'}"
                      for _, o in mine.iterrows() if o["verdict"] == "rejected"]
            rows.append({"time": c.hhmm(dec["start_time"]), "incident": dec["incident_id"], "agent": dec["agent_name"],
                         "question": dec["question"], "chose": dec["selected_option"], "because": dec["reason"],
                         "turned down": "\n".join(turned) if turned else "—"})
            if said:
                rows[-1]["reviewers"] = said.get(dec["decision_id"], "—")
        table = pd.DataFrame(rows)
        rejected = int((options["verdict"] == "rejected").sum()) if not options.empty else 0
        summary = (f"{_count(len(d), 'decision')} over {_count(d['incident_id'].nunique(), 'incident')}; "
                   f"the agent turned down {_count(rejected, 'option')}, each with its reason below.")
        figs = []
        if figures:
            worst = self._worst_incident()
            run = self._main_run(worst) if worst else None
            if run is not None:
                from afterfix.analysis.tree import run_tree
                from afterfix.figures.tree import decision_tree

                figs.append(decision_tree(run_tree(self.scope.store, run)))
        return Section("what_tried", title, summary, table, figs)

    def _main_run(self, incident_id: str) -> str | None:
        """The run of `incident_id` that changed the most (else decided the most)."""
        runs = self.scope.runs
        mine = runs[runs["incident_id"] == incident_id] if not runs.empty else runs
        if mine.empty:
            return None
        return mine.sort_values(["changes", "decisions", "start_time"], ascending=[False, False, True])["run_id"].iloc[0]

    def verdicts_section(self) -> Section:
        title = "Reviewers' verdicts"
        found = self.verdicts
        if not found:
            return Section(VERDICTS_KEY, title, "Nobody has given a verdict on this window's decisions or actions "
                           "yet; `afterfix verdict ID correct|wrong|unsure --note TEXT` records one.")
        labels = self._labels()
        ordered = sorted(found, key=lambda v: (VERDICT_ORDER.get(v.verdict, 3), v.time))
        rows = [{"verdict": v.verdict, "who": v.who, "on": labels.get(v.target_id, v.target_id),
                 "incident": v.incident_id, "should have": v.should_have or "", "note": v.note or "",
                 "time": c.when(v.time)} for v in ordered]
        by = pd.Series([v.verdict for v in found]).value_counts()
        summary = (f"{_count(len(found), 'verdict')} on the window's decisions and actions: "
                   + ", ".join(f"{by[k]} {k}" for k in VERDICT_ORDER if k in by) + ".")
        notes = []
        for v in self.wrong():
            what = self._what(v)
            note = f"Wrong, says {v.who}: {what}"
            note += f"; it should have taken {v.should_have}." if v.should_have else "."
            notes.append(note + (f" “{v.note}”" if v.note else ""))
        return Section(VERDICTS_KEY, title, summary, pd.DataFrame(rows), notes=notes)

    def _what(self, v) -> str:
        """One wrong step in a sentence: what was asked and what the agent chose, or what it did."""
        where = f" on {v.incident_id}" if v.incident_id else ""
        if v.target_type == "decision" and not self.decisions.empty:
            d = self.decisions[self.decisions["decision_id"] == v.target_id]
            if not d.empty:
                d = d.iloc[0]
                return (f"decision {v.target_id}{where} (“{d['question'] or 'no question recorded'}”) "
                        f"chose {d['selected_option'] or 'nothing'}")
        if v.target_type == "action" and not self.actions.empty:
            a = self.actions[self.actions["action_id"] == v.target_id]
            if not a.empty:
                return f"action {v.target_id}{where}, {_action_text(a.iloc[0])}"
        return f"{v.target_type} {v.target_id}{where}"

    def _labels(self) -> dict[str, str]:
        """What a verdict is about, as a reviewer reads it: the decision's question, or the action."""
        out = {}
        if not self.decisions.empty:
            for _, d in self.decisions.iterrows():
                out[d["decision_id"]] = f"{d['decision_id']}: {d['question'] or 'no question recorded'} (chose {d['selected_option'] or 'nothing'})"
        if not self.actions.empty:
            for _, a in self.actions.iterrows():
                if a["action_id"]:
                    out[a["action_id"]] = f"{a['action_id']}: {_action_text(a)}"
        return out

    def what_worked(self) -> Section:
        title = "What worked"
        rows = []
        for _, a in self.changes.iterrows():
            check = self.outcomes.get(a["action_id"])
            if check is None or check["outcome"] != "success":
                continue
            rows.append({"time": c.hhmm(a["start_time"]), "incident": a["incident_id"],
                         "change": _action_text(a), "fields": _changes_text(a),
                         "verified": _verification_text(check)})
        if not rows:
            none = "No change was verified as working." if len(self.changes) else "The agent applied no change."
            return Section("what_worked", title, none)
        failed = [f for f in self.of_kind("unverified_action")]
        summary = f"{_count(len(rows), 'change')} did what {'they were' if len(rows) > 1 else 'it was'} for and verified."
        if failed:
            summary += f" {_count(len(failed), 'other change')} did not verify: see the findings."
        return Section("what_worked", title, summary, pd.DataFrame(rows))

    def rolled_back(self) -> Section:
        title = "What was rolled back"
        a = self.all_changes
        backs = a[a["verb"].fillna("").str.lower().str.contains("|".join(ROLLBACK_VERBS))] if not a.empty else a
        bundled = {f.details.get("action_id"): f for f in self.of_kind("bundled_rollback")}
        alerts = [f"{c.hhmm(r['time'])} {r['source']} ({r['severity']}): {r['title']}. {r['message'] or ''}".strip()
                  for _, r in self.alerts().iterrows()]
        if backs.empty:
            return Section("rolled_back", title, "Nothing was rolled back in this window."
                           + (f" {_count(len(alerts), 'guard alert')}: see below." if alerts else ""), notes=alerts)
        rows = []
        for _, r in backs.iterrows():
            also = bundled.get(r["action_id"])
            rows.append({"time": c.hhmm(r["start_time"]), "incident": r["incident_id"], "by": r["agent_name"],
                         "rollback": _action_text(r), "fields": _changes_text(r),
                         "also undid": also.title if also else "nothing else",
                         "verified": _verification_text(self.outcomes.get(r["action_id"]))})
        summary = f"{_count(len(backs), 'rollback')}."
        if bundled:
            summary += (f" {_count(len(bundled), 'rollback')} also undid changes nobody asked to undo: "
                        "check the side effects below.")
        if alerts:
            summary += f" {_count(len(alerts), 'guard alert')}: see below."
        notes = [f.explanation for f in bundled.values()] + alerts
        return Section("rolled_back", title, summary, pd.DataFrame(rows), notes=notes)

    def side_effects(self) -> Section:
        title = "Side effects to watch"
        effects = self.of_kind("side_effect")
        if not effects:
            return Section("side_effects", title, "No metric left its normal band after one of the agent's changes.")
        table = _findings_table(effects)
        summary = f"{_count(len(effects), 'side effect')} after the agent's changes; the most severe first."
        bundled = {f.details.get("action_id"): f for f in self.of_kind("bundled_rollback")}
        notes = []
        for f in effects:
            if f.severity not in WORRY_SEVERITIES:
                continue
            note = f.explanation
            also = bundled.get(f.details.get("action_id"))
            if also is not None:
                note += f" The same change also undid more than it was for: {also.explanation}"
            notes.append(note)
        return Section("side_effects", title, summary, table, notes=notes)

    def again(self) -> Section:
        title = "Will it happen again?"
        masked = self.of_kind("masked_issue")
        escalated = self.incidents[self.incidents["status"] == "escalated"] if not self.incidents.empty else self.incidents
        if not masked:
            text = "Nothing in this window was fixed the same way twice."
            if not escalated.empty:
                text += f" {_count(len(escalated), 'incident')} went to people instead: see what broke."
            return Section("again", title, text)
        summary = f"Yes: {_count(len(masked), 'workload')} kept being fixed the same way, so the cause is still there."
        return Section("again", title, summary, _findings_table(masked), notes=[f.explanation for f in masked])

    def findings_section(self) -> Section:
        title = "Findings"
        if not self.found:
            return Section("findings", title, "No findings: none of the failure modes afterfix looks for showed up.")
        by = pd.Series([f.severity for f in self.found]).value_counts()
        summary = (f"{_count(len(self.found), 'finding')}: "
                   + ", ".join(f"{by[s]} {s}" for s in SEVERITIES if s in by) + ". Most severe first.")
        return Section("findings", title, summary, _findings_table(self.found, evidence=True),
                       notes=[f"{f.title}: {f.explanation}" for f in self.found if f.severity in WORRY_SEVERITIES])

    def approvals(self) -> Section:
        title = "Open approvals"
        waiting = self.awaiting()
        if waiting.empty:
            return Section("approvals", title, "No change is waiting for a person's approval.")
        reasons = self.decisions.set_index("decision_id")["reason"].to_dict() if not self.decisions.empty else {}
        rows = [{"since": c.hhmm(a["start_time"]), "incident": a["incident_id"], "agent": a["agent_name"],
                 "change": _action_text(a), "trust level": TRUST_LEVELS.get(_int(a["trust_level"]), "not recorded"),
                 "why the agent wants it": reasons.get(a["decision_id"], "")} for _, a in waiting.iterrows()]
        summary = (f"{_count(len(waiting), 'change')} waiting for approval; nothing happens until someone "
                   f"approves or denies {'them' if len(waiting) > 1 else 'it'}.")
        return Section("approvals", title, summary, pd.DataFrame(rows))

    def trust(self) -> Section:
        title = "Actions by trust level"
        a = self.actions
        if a.empty:
            return Section("trust", title, "The agent recorded no actions.")
        mutating = a["mutating"].fillna(False).astype(bool)
        level = a["trust_level"].map(lambda v: TRUST_LEVELS.get(_int(v), "not recorded"))
        level = level.where(mutating, "read-only")
        table = (pd.crosstab(level, a["status"].fillna("not recorded")).reset_index()
                 .rename(columns={"trust_level": "trust level", "row_0": "trust level"}))
        table.columns = ["trust level", *table.columns[1:]]
        table.columns.name = None
        unlevelled = int(((level == "not recorded") & mutating).sum())
        summary = f"{_count(int(mutating.sum()), 'change')} to production by trust level, and what became of each."
        if unlevelled:
            summary += f" {_count(unlevelled, 'change')} recorded no trust level."
        return Section("trust", title, summary, table)


# --- small pieces -------------------------------------------------------------------------

def _latest_per_action(actions: pd.DataFrame) -> pd.DataFrame:
    """One row per action id, its latest record (an approval request later applied is 'approved')."""
    if actions.empty or "action_id" not in actions:
        return actions
    keyed = actions.assign(_key=actions["action_id"].fillna(actions["span_id"]))
    return keyed.sort_values("start_time").groupby("_key").tail(1).drop(columns="_key").sort_values("start_time")


def _options(store, decision_ids: list[str]) -> pd.DataFrame:
    if not decision_ids:
        return pd.DataFrame(columns=["decision_id", "option_id", "verdict", "reason", "score"])
    marks = ", ".join("?" for _ in decision_ids)
    return store.query(f"SELECT decision_id, option_id, verdict, reason, score FROM options "
                       f"WHERE decision_id IN ({marks}) ORDER BY decision_id, seq", decision_ids)


def _said(found) -> dict[str, str]:
    """Current verdicts by target id, one line per person: "alice: wrong, should have restart"."""
    out: dict[str, list[str]] = {}
    for v in found:
        out.setdefault(v.target_id, []).append(
            f"{v.who}: {v.verdict}" + (f", should have {v.should_have}" if v.should_have else ""))
    return {k: "\n".join(lines) for k, lines in out.items()}


def _newest(store) -> datetime | None:
    row = store.query("SELECT max(start_time) AS t FROM spans")
    t = row["t"].iloc[0]
    return None if pd.isna(t) else pd.Timestamp(t).to_pydatetime()


def _action_text(a) -> str:
    kind = a["target_kind"] or "object"
    return f"{a['verb']} {kind} {c.target(a)}"


def _changes_text(a) -> str:
    changes = [ch for ch in state_diff(a["before"], a["after"]) if not ch.path.startswith("metadata.")]
    if not changes:
        return "no field change recorded"
    shown = [f"{label(ch.path)}: {_value(ch.before)} → {_value(ch.after)}" for ch in changes[:MAX_CHANGES]]
    if len(changes) > MAX_CHANGES:
        shown.append(f"and {len(changes) - MAX_CHANGES} more")
    return "; ".join(shown)


def _value(v: Any) -> str:
    if v is None:
        return "unset"
    text = v if isinstance(v, str) else repr(v)
    return text if len(text) <= 60 else text[:59] + "…"


def _verification_text(check) -> str:
    if check is None:
        return "never verified"
    outcome = check["outcome"] or "not recorded"
    if isinstance(check["signal"], str) and pd.notna(check["before"]) and pd.notna(check["after"]):
        return f"{outcome}: {check['signal']} {check['before']:.4g} → {check['after']:.4g}"
    return outcome


def _findings_table(found: list[Finding], evidence: bool = False) -> pd.DataFrame:
    rows = []
    for f in found:
        row = {"severity": f.severity, "kind": f.kind.replace("_", " "), "time": c.hhmm(f.time) if f.time else "",
               "incident": f.incident_id or "", "target": f.target or "", "finding": f.title}
        if evidence:
            row["evidence"] = _count(len(f.evidence), "row")
        rows.append(row)
    return pd.DataFrame(rows)


def _timeline_figure(store, incident_id: str):
    """The incident's timeline over its signal's metric history (as `afterfix timeline` draws it)."""
    from afterfix.analysis.signals import incident_signal, signal_history
    from afterfix.analysis.timeline import incident_timeline as timeline_of
    from afterfix.analysis.tree import incident_trees
    from afterfix.figures.timeline import incident_timeline

    timeline = timeline_of(store, incident_id)
    trees = incident_trees(store, incident_id)
    signal = incident_signal(trees)
    metrics = None
    if signal is not None and timeline.start and timeline.end:
        metrics = signal_history(store, signal, timeline.start, timeline.end)
    return incident_timeline(timeline, metrics, signal=signal.name if signal else None, trees=trees)


def _by_severity(frame: pd.DataFrame) -> pd.DataFrame:
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    order = frame["severity"].map(lambda s: rank.get(s, len(rank)))
    return frame.assign(_r=order).sort_values(["_r"], kind="stable").drop(columns="_r").reset_index(drop=True)


def _int(v) -> int | None:
    try:
        return None if v is None or pd.isna(v) else int(v)
    except (TypeError, ValueError):
        return None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _join(items, limit: int = 6) -> str:
    items = [str(i) for i in items]
    if len(items) > limit:
        items = items[:limit] + [f"{len(items) - limit} more"]
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
