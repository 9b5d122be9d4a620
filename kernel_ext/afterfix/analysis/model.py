"""The shapes analysis hands to its faces: a decision tree of nodes, a timeline of steps, a field diff.

They are plain dataclasses with `to_dict()`, so the CLI prints them as JSON, figures draw them,
templates tabulate them and tests compare them, all from the same data. Every text in them comes
from a trace and is untrusted: faces escape it where they show it.

A tree node has one of these kinds, with these `details` keys (absent values are None):

    run           run_id, agent_name, incident_id, trace_ids, status, spans
    incident      incident_id, title, severity, service, status
    detection     signal, value, threshold, summary
    decision      decision_id, question, selected_option, reason, policy
    option        option_id, description, action, evidence (list), score, verdict, reason
    action        action_id, decision_id, verb, mutating, status, trust_level, target
                  ({kind, namespace, name, uid, api_version}), field_manager,
                  resource_version_before, resource_version_after, dry_run_checked,
                  diff (list of FieldChange dicts)
    verification  action_id, outcome, signal, before, after
    approval      action_id, status, approver, reason
    tool          tool_name, call_id, arguments, result, error
    llm           model, provider, input_tokens, output_tokens
    step          operation (any other span: agent steps, chains, retrievers, ...)

The shape: run → its spans in start order, each under its parent span. Under a decision come its
options; under the selected option come the actions that served the decision (by
`afterfix.action.decision_id`); under an action come its verifications (by
`afterfix.verification.action_id`) and approvals. A decision recorded inside another decision or
action stays nested there. An incident worked by several runs is several trees, one per run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

NodeKind = Literal["run", "incident", "detection", "decision", "option", "action", "verification",
                   "approval", "tool", "llm", "step"]
Status = Literal["ok", "error", "unset"]


def _plain(value: Any) -> Any:
    """JSON-ready: datetimes as ISO text, dataclasses and containers recursively."""
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass
class FieldChange:
    """One field an action changed: a dotted path (list items as `[i]`, or `[name=x]` where items
    carry a name), its value before and after, and whether it was added, removed or changed."""

    path: str
    before: Any
    after: Any
    change: Literal["added", "removed", "changed"]

    def to_dict(self) -> dict:
        return _plain(self)


@dataclass
class Node:
    """One node of a decision tree. `label` is the short text a figure or an indented listing shows;
    `details` holds the kind's fields listed in the module docstring."""

    id: str  # unique within its tree: the span id, or "<span id>/<option id>" for an option
    kind: NodeKind
    label: str
    status: Status = "unset"
    span_id: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    selected: bool | None = None  # options: chosen or not; the path to them is `on_path`
    on_path: bool = False  # on the path detection → decision → selected option → action → verification
    details: dict[str, Any] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)

    def walk(self):
        """This node and every node below it, depth first, in order."""
        yield self
        for child in self.children:
            yield from child.walk()

    def to_dict(self) -> dict:
        return _plain(self)


@dataclass
class DecisionTree:
    run_id: str
    agent_name: str | None
    incident_id: str | None
    root: Node  # kind "run"

    def nodes(self, kind: str | None = None) -> list[Node]:
        return [n for n in self.root.walk() if kind is None or n.kind == kind]

    def to_dict(self) -> dict:
        return _plain(self)


@dataclass
class Step:
    """One span as a step on a timeline."""

    span_id: str
    parent_span_id: str | None
    trace_id: str
    run_id: str | None
    incident_id: str | None
    agent_name: str | None
    name: str
    kind: NodeKind  # the same kinds as tree nodes
    tool: str | None
    status: Status
    status_message: str | None
    start: datetime
    end: datetime
    duration_ms: float
    depth: int  # 0 for a run's root span

    def to_dict(self) -> dict:
        return _plain(self)


@dataclass
class Timeline:
    """Every span of an incident (or of one run) as steps, grouped by run, in start order."""

    incident_id: str | None
    run_ids: list[str]  # in order of their first step
    steps: list[Step]
    start: datetime | None
    end: datetime | None

    def to_dict(self) -> dict:
        return _plain(self)

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([dataclasses.asdict(s) for s in self.steps],
                            columns=[f.name for f in dataclasses.fields(Step)])


FindingKind = Literal["masked_issue", "bundled_rollback", "first_bad_step", "duplicate_investigation",
                      "unverified_action", "side_effect"]
# The built-in kinds. A package above analysis/ adds its own with analysis.findings.register
# (trust/compliance.py: "trust_violation"); analysis.findings.finding_kinds() lists them all.
FINDING_KINDS: tuple[str, ...] = ("masked_issue", "bundled_rollback", "first_bad_step",
                                  "duplicate_investigation", "unverified_action", "side_effect")
Severity = Literal["critical", "high", "medium", "low", "info"]
SEVERITIES: tuple[str, ...] = ("critical", "high", "medium", "low", "info")


@dataclass
class Evidence:
    """One row a finding rests on: a span (by id) or a metric point (series, time, value)."""

    kind: Literal["span", "metric", "action"]
    text: str  # what this row shows, in a few words
    time: datetime | None = None
    span_id: str | None = None
    trace_id: str | None = None
    run_id: str | None = None
    metric: str | None = None
    series_id: str | None = None
    value: float | None = None

    def to_dict(self) -> dict:
        return _plain(self)


@dataclass
class Finding:
    kind: FindingKind | str  # a built-in kind, or one registered with analysis.findings.register
    severity: Severity
    title: str  # one line
    explanation: str  # what happened and what to do, in plain words
    time: datetime | None  # when it began
    incident_id: str | None = None
    run_ids: list[str] = field(default_factory=list)
    target: str | None = None  # "namespace/name" of the workload concerned
    evidence: list[Evidence] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # kind-specific: taint path, fields, ...

    def to_dict(self) -> dict:
        return _plain(self)
