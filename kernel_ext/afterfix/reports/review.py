"""One incident, or one run, as a page of sections: what the incident_review and decision_tree
templates show.

    incident_review(store, incident_id) -> Page   what happened, findings, timeline, decisions, changes
    run_review(store, run_id) -> Page             the run's decision tree, and every option it weighed

An id the store does not hold is a page too: its header says so and lists a few ids it does
hold, so a template run with a wrong parameter explains itself instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from afterfix._exceptions import NotFound
from afterfix.analysis.diffs import action_diffs
from afterfix.analysis.findings import _common as c
from afterfix.analysis.findings import find
from afterfix.reports.briefing import Section, _findings_table, _options, _timeline_figure, _value

__all__ = ["Header", "Page", "incident_review", "run_review"]


@dataclass
class Header:
    title: str
    subtitle: str
    lines: list[str]
    worry: bool = False


@dataclass
class Page:
    header: Header
    sections: list[Section] = field(default_factory=list)

    def section(self, key: str) -> Section:
        for s in self.sections:
            if s.key == key:
                return s
        return Section(key, key.replace("_", " ").capitalize(), "Nothing to show: see the note at the top.")


def _unknown(store, what: str, ident: str, sql: str, column: str) -> Page:
    known = store.query(sql)
    examples = ", ".join(str(v) for v in known[column].head(5))
    hint = f"It holds {len(known)}, the latest: {examples}." if len(known) else f"It holds no {what}s yet."
    return Page(Header(f"No {what} {ident!r}", f"store {getattr(store, 'where', store)}",
                       [f"The store holds no {what} with the id {ident!r}.", hint,
                        f"Run the template again with one of those ids (papermill -p {column} ID)."], worry=True))


def incident_review(store, incident_id: str, *, figures: bool = True) -> Page:
    inc = store.query("SELECT * FROM incidents WHERE incident_id = ?", [incident_id]) if incident_id else pd.DataFrame()
    if inc.empty:
        return _unknown(store, "incident", incident_id,
                        "SELECT incident_id FROM incidents ORDER BY start_time DESC", "incident_id")
    row = inc.iloc[0]
    found = find(store, incident=incident_id)
    runs = store.query("SELECT run_id, agent_name, start_time, duration_s, decisions, changes, errors, status "
                       "FROM runs WHERE incident_id = ? ORDER BY start_time", [incident_id])
    lines = [f"{row['title'] or incident_id}: severity {row['severity'] or 'not recorded'}, now {row['status']}.",
             f"From {c.when(row['start_time'])} for {c.duration((row['end_time'] - row['start_time']).total_seconds())}: "
             f"{len(runs)} run(s) by {row['agents']} agent(s), {row['decisions']} decision(s), {row['changes']} change(s).",
             (f"{len(found)} finding(s), the first: {found[0].title}." if found else "No findings.")]
    header = Header(f"Incident review · {incident_id}", f"store {getattr(store, 'where', store)}", lines,
                    worry=any(f.severity in ("critical", "high") for f in found) or row["status"] not in ("resolved", "mitigated"))

    table = pd.DataFrame({"run": runs["run_id"], "agent": runs["agent_name"], "started": runs["start_time"].map(c.when),
                          "took": runs["duration_s"].map(lambda s: c.duration(s) if pd.notna(s) else ""),
                          "decisions": runs["decisions"], "changes": runs["changes"], "errors": runs["errors"],
                          "status": runs["status"]})
    happened = Section("what_happened", "What happened", f"{len(runs)} run(s) worked on this incident.", table)
    findings = Section("findings", "Findings", f"{len(found)} finding(s)." if found else "No findings for this incident.",
                       _findings_table(found, evidence=True) if found else None,
                       notes=[f"{f.title}: {f.explanation}" for f in found])
    timeline = Section("timeline", "Timeline", "Every step of every run, and the signal's metric history.",
                       figures=[_timeline_figure(store, incident_id)] if figures else [])
    decisions = _decisions_section(store, runs["run_id"].tolist(), figures)
    diffs = action_diffs(store, incident_id=incident_id)
    changes = Section("changes", "Changes", f"{diffs['action_id'].nunique()} action(s) changed {len(diffs)} field(s)."
                      if len(diffs) else "No action recorded a field change.",
                      _diff_table(diffs) if len(diffs) else None)
    return Page(header, [happened, findings, timeline, decisions, changes])


def run_review(store, run_id: str, *, figures: bool = True) -> Page:
    from afterfix.analysis.tree import run_tree

    try:
        tree = run_tree(store, run_id) if run_id else None
    except NotFound:
        tree = None
    if tree is None:
        return _unknown(store, "run", run_id, "SELECT run_id FROM runs ORDER BY start_time DESC", "run_id")
    runs = store.query("SELECT * FROM runs WHERE run_id = ?", [run_id])
    r = runs.iloc[0]
    lines = [f"Run {run_id} by {r['agent_name'] or 'an unnamed agent'}"
             + (f" on incident {r['incident_id']}" if isinstance(r["incident_id"], str) else "") + ".",
             f"{r['spans']} spans from {c.when(r['start_time'])}: {r['tool_calls']} tool calls, {r['llm_calls']} model calls, "
             f"{r['decisions']} decisions, {r['changes']} changes, {r['errors']} errors."]
    header = Header(f"Decision tree · {run_id}", f"store {getattr(store, 'where', store)}", lines, worry=bool(r["errors"]))
    tree_section = Section("tree", "The decision tree", "The chosen path is in bold; rejected options carry their reasons.",
                           figures=[_tree_figure(tree)] if figures else [])
    return Page(header, [tree_section, _options_section(store, run_id)])


def _tree_figure(tree):
    from afterfix.figures.tree import decision_tree

    return decision_tree(tree)


def _decisions_section(store, run_ids: list[str], figures: bool) -> Section:
    from afterfix.analysis.tree import run_tree

    figs = [_tree_figure(run_tree(store, r)) for r in run_ids] if figures else []
    return Section("decisions", "Decisions", f"The decision tree of each of the {len(run_ids)} run(s).", figures=figs)


def _options_section(store, run_id: str) -> Section:
    d = store.query("SELECT decision_id, question, selected_option FROM decisions WHERE run_id = ? ORDER BY start_time", [run_id])
    opts = _options(store, list(d["decision_id"]))
    if opts.empty:
        return Section("options", "Options", "This run recorded no decision options (a run of tool and model calls only).")
    table = opts.merge(d, on="decision_id", how="left")[["question", "option_id", "verdict", "score", "reason"]]
    return Section("options", "Options", f"{len(opts)} option(s) over {len(d)} decision(s).", table)


def _diff_table(diffs: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"time": diffs["start_time"].map(c.hhmm), "action": diffs["verb"] + " " + diffs["target_kind"].fillna("")
                         + " " + diffs["target_namespace"].fillna("") + "/" + diffs["target_name"].fillna(""),
                         "field": diffs["path"], "before": diffs["before"].map(_value), "after": diffs["after"].map(_value),
                         "resourceVersion": diffs["resource_version_before"].fillna("?") + " → "
                         + diffs["resource_version_after"].fillna("?")})
