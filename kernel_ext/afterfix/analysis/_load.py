"""Reading one run's (or one incident's) spans and option events, for trees and timelines.

Only the rows of the runs asked for are read: `WHERE run_id IN (...)` on `spans`, which DuckLake
and the Parquet reader push down to every file and row group, and the option events of those runs'
decision spans only, found by their trace ids (filtering on their span ids and the event name too
took DuckDB's scan of 3M events from 48 to 100 ms, measured; those are matched here instead). Run
ids are random-looking, so their file statistics exclude almost nothing: when the store's run index
(run_index.py) is complete, both queries also get the runs' time range, which the time-ordered
files' start_time / time statistics prune on, so only the files of that time are opened. The
physical tables are read rather than the views, so no JSON is extracted for rows that are not wanted.

The ids go into the SQL as literals, not as bound parameters: binding a Python value makes
DuckDB import pandas (~0.25 s, measured) in a process that has not, such as `afterfix tree`.
Each literal is the id's base64 text decoded in SQL (`_literal`), which cannot end its quotes
whatever the id holds, and which DuckDB folds into a constant before pushing the filter down.

Each span comes back as a dict of its columns plus `attrs` (its attributes parsed), `depth` (0 for
a span whose parent is not in the run) and, for decision spans, `options` (its option events as
{seq, time, attrs}, in the order they were weighed).
Spans that lack an agent name inherit the nearest ancestor's, else the run's agent span's
(OpenTelemetry agent frameworks name the agent only on the invoke_agent / AGENT span).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from afterfix import convention as c
from afterfix import run_index
from afterfix._exceptions import NotFound

SPAN_COLUMNS = ("trace_id", "span_id", "parent_span_id", "name", "kind", "start_time", "end_time", "duration_ms",
                "status_code", "status_message", "service_name", "operation", "afterfix_kind", "run_id",
                "incident_id", "agent_name", "tool_name", "tool_call_id", "decision_id", "action_id", "model",
                "input_tokens", "output_tokens", "error_type", "attributes")  # fmt: skip

LIST_RUNS = 'afterfix query "SELECT run_id FROM runs"'
LIST_INCIDENTS = 'afterfix query "SELECT incident_id FROM incidents"'
LLM_OPERATIONS = ("chat", "text_completion", "generate_content")


@dataclass
class RunSpans:
    """One run's spans in start order (parents before children that start with them)."""

    run_id: str
    spans: list[dict[str, Any]]
    by_id: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (trace_id, span_id) -> span
    agent_name: str | None = None
    incident_id: str | None = None

    @property
    def start(self) -> datetime | None:
        return self.spans[0]["start_time"] if self.spans else None

    @property
    def end(self) -> datetime | None:
        return max(s["end_time"] for s in self.spans) if self.spans else None

    def parent(self, span: dict) -> dict | None:
        """The span's parent when it belongs to this run (a parent elsewhere, or missing, is none)."""
        return self.by_id.get((span["trace_id"], span["parent_span_id"])) if span["parent_span_id"] else None


def json_attrs(text: Any) -> dict[str, Any]:
    """A JSON object column as a dict; anything else (malformed, not an object) as {}."""
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _literal(text: str) -> str:
    """`text` as a SQL string expression: its base64 (letters, digits, +, / and =) decoded in SQL."""
    return f"decode(from_base64('{base64.b64encode(text.encode()).decode('ascii')}'))"


def _in_list(values) -> str:
    return ", ".join(_literal(v) for v in values)


def _storable(text: str) -> bool:
    """Whether `text` could be in the store at all (stored text is UTF-8; a lone surrogate is not)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def load_runs(store, run_ids: list[str], *, options: bool = True) -> list[RunSpans]:
    """The spans of `run_ids` (in that order), each run kept apart. Raises NotFound for a run id
    the store holds no span of."""
    run_ids = list(dict.fromkeys(run_ids))
    if not run_ids:
        return []
    wanted = [r for r in run_ids if _storable(r)]
    index = run_index.ranges(store, _in_list(wanted)) if wanted else None
    indexed = [r for r in wanted if index is not None and r in index["runs"]]
    rows = []
    if indexed:
        lo, hi = index["spans"]
        rows += _spans(store, f"run_id IN ({_in_list(indexed)}) AND start_time BETWEEN {_ts(lo)} AND {_ts(hi)}")
    rest = [r for r in wanted if r not in indexed]
    if rest:  # no complete index, or runs it does not know (not stored, or written by a writer without it)
        rows += _spans(store, f"run_id IN ({_in_list(rest)})")
    grouped: dict[str, list[dict]] = {r: [] for r in run_ids}
    for row in rows:
        row["attrs"] = json_attrs(row.pop("attributes"))
        grouped[row["run_id"]].append(row)
    missing = [r for r, spans in grouped.items() if not spans]
    if missing:
        raise NotFound(f"no run {missing[0]!r} in {store.where}: list the run ids with {LIST_RUNS}")
    if options:
        decisions = [s for spans in grouped.values() for s in spans if s["afterfix_kind"] == "decision"]
        # The index places the events of the batches that held these runs' spans: () when they had none.
        window = (index["events"] or ()) if indexed and not rest else None
        _attach_options(store, decisions, window)
    return [_prepare(run_id, spans) for run_id, spans in grouped.items()]


def _spans(store, where: str) -> list[dict]:
    return store.arrow(f"SELECT {', '.join(SPAN_COLUMNS)} FROM spans WHERE {where}").to_pylist()


def _ts(value: datetime) -> str:
    return f"TIMESTAMP '{value.isoformat(sep=' ')}'"


def _attach_options(store, decisions: list[dict], window: tuple | None = None) -> None:
    """Each decision span's option events. `window`: the (first, last) time they can have, from the
    run index (an empty tuple: they have none); None reads them by trace id alone."""
    for span in decisions:
        span["options"] = []
    if not decisions or window == ():
        return
    keys = {(s["trace_id"], s["span_id"]): s for s in decisions}
    traces = sorted({t for t, _ in keys})
    when = f" AND time BETWEEN {_ts(window[0])} AND {_ts(window[1])}" if window else ""
    # The name is matched here too: a second filter in the scan cost more than the few other
    # events of these traces (exceptions, logs) cost to skip.
    events = store.arrow(
        f"SELECT trace_id, span_id, seq, name, time, attributes FROM events WHERE trace_id IN ({_in_list(traces)}){when} "
        "ORDER BY seq",
    ).to_pylist()
    for ev in events:
        span = keys.get((ev["trace_id"], ev["span_id"])) if ev["name"] == c.OPTION_EVENT else None
        if span is not None:
            span["options"].append({"seq": ev["seq"], "time": ev["time"], "attrs": json_attrs(ev["attributes"])})


def _prepare(run_id: str, spans: list[dict]) -> RunSpans:
    run = RunSpans(run_id, spans, {(s["trace_id"], s["span_id"]): s for s in spans})
    for key, depth in _depths(run).items():
        run.by_id[key]["depth"] = depth
    # Ties in start time (instant spans, a parent and the child it starts with) put parents first;
    # the span id makes the order stable.
    spans.sort(key=lambda s: (s["start_time"], s["depth"], s["span_id"]))
    agents = [s for s in spans if s["operation"] == "invoke_agent" and s["agent_name"]]
    named = agents[0]["agent_name"] if agents else next((s["agent_name"] for s in spans if s["agent_name"]), None)
    run.agent_name = named or next((s["service_name"] for s in spans if s["service_name"]), None)
    run.incident_id = next((s["incident_id"] for s in spans if s["incident_id"]), None)
    for span in spans:
        if not span["agent_name"]:
            span["agent_name"] = _inherited_agent(run, span) or named
    return run


def _depths(run: RunSpans) -> dict[tuple[str, str], int]:
    """Each span's depth under the run's top spans (0: no parent in the run)."""
    depths: dict[tuple[str, str], int] = {}
    for span in run.spans:
        chain, seen, node = [], set(), span
        while node is not None and (node["trace_id"], node["span_id"]) not in depths:
            key = (node["trace_id"], node["span_id"])
            if key in seen:  # a cycle of parents (bad input): where it closes counts as a top span
                break
            chain.append(key)
            seen.add(key)
            node = run.parent(node)
        base = depths[(node["trace_id"], node["span_id"])] + 1 if node is not None and (
            node["trace_id"], node["span_id"]) in depths else 0
        for i, key in enumerate(reversed(chain)):
            depths[key] = base + i
    return depths


def _inherited_agent(run: RunSpans, span: dict) -> str | None:
    seen = {span["span_id"]}
    parent = run.parent(span)
    while parent is not None and parent["span_id"] not in seen:  # a cycle of parents in bad input ends here
        if parent["agent_name"]:
            return parent["agent_name"]
        seen.add(parent["span_id"])
        parent = run.parent(parent)
    return None


def incident_run_ids(store, incident_id: str) -> list[str]:
    """The runs that worked on `incident_id`, in order of their first span. Raises NotFound."""
    rows = store.arrow(
        f"SELECT run_id, min(start_time) AS t FROM spans WHERE incident_id = {_literal(incident_id)} "
        "GROUP BY run_id ORDER BY t, run_id",
    ).to_pylist() if _storable(incident_id) else []
    if not rows:
        raise NotFound(f"no incident {incident_id!r} in {store.where}: list the incident ids with {LIST_INCIDENTS}")
    return [r["run_id"] for r in rows]


def span_kind(span: dict) -> str:
    """The node kind of a span (model.py): its afterfix.span.kind, else tool, llm or step."""
    kind = span["afterfix_kind"]
    if kind in c.SPAN_KINDS:
        return kind
    if span["operation"] == "execute_tool" or span["tool_name"]:
        return "tool"
    if span["operation"] in LLM_OPERATIONS or span["model"]:
        return "llm"
    return "step"


def status(span: dict) -> str:
    return {"OK": "ok", "ERROR": "error"}.get(span["status_code"] or "", "unset")
