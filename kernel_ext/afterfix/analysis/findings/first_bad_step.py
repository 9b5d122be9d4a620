"""First bad step: the first tool call of a run that went wrong, and every later step that used it.

A call is bad when it failed (span status ERROR, or `error.type`), broke its tool's declared schema,
or was marked `afterfix.tool.invalid`. The schema is the nearest `gen_ai.tool.definitions` recorded
in the call's run: those of the latest agent span (`invoke_agent`) or model call (`chat`, ...) that
started before the call; a tool not among them breaks it too. Whatever used
the bad call's output is tainted, and whatever used that, in turn:

    below it            a span under a tainted tool call (parent/child)
    names its call id   a later span whose attributes carry its `gen_ai.tool.call.id`: a decision
                        whose inputs list it under `sources`, a model call reading a tool message
                        for it, any attribute naming an id of 8 characters or more
    holds its result    a later span whose inputs contain its result verbatim (results of 16
                        characters or more, so that "[]" or "ok" match nothing by chance)
    asked for by        a tool call that a tainted model call asked for (by id, in its output)
    chosen by           an action whose `afterfix.action.decision_id` is a tainted decision
    verifies            a verification of a tainted action

One finding per run, for its first bad call; high when a mutating, applied action is tainted (the
decision that chose it always is), else medium. The path in `details` lists the bad call and each
tainted step in order, with why it is tainted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pandas as pd

from afterfix import convention as k
from afterfix.analysis.findings import _common as c
from afterfix.analysis.findings.tool_schemas import Definitions, parse
from afterfix.analysis.model import Evidence, Finding

MIN_RESULT = 16  # a shorter result ("[]", "ok", "0") would be found everywhere
MIN_ID_MENTION = 8  # a call id this long is not named by accident; shorter ones only in known places
PATH_IN_TEXT = 6  # tainted steps the explanation names before "and N more"

OUTPUT_KEYS = {k.GENAI_TOOL_RESULT, k.OI_OUTPUT_VALUE, k.GENAI_OUTPUT_MESSAGES}
OUTPUT_PREFIXES = ("llm.output_messages.",)
ID_KEYS = {k.GENAI_TOOL_CALL_ID, k.OI_TOOL_CALL_ID}
LLM_OPERATIONS = {"chat", "text_completion", "generate_content"}
WHY_WORDS = {"failed": "failed", "schema": "broke its schema", "invalid": "was marked invalid"}


def _a(key: str) -> str:
    return f"json_extract_string(attributes, '$.\"{key}\"')"


# Where definitions are read: agent spans and model calls (the hot column first, so the text of
# every other span is never searched). In a WHERE clause; in a SELECT list DuckDB searches every
# row's text anyway (0.45 s over 1M tool calls), so there only the operation is tested.
_DEFINING = f"operation IN ('invoke_agent', 'create_agent', {', '.join(repr(o) for o in sorted(LLM_OPERATIONS))})"
_DEFINED = f"{_DEFINING} AND contains(attributes, '\"{k.GENAI_TOOL_DEFINITIONS}\"')"


def _calls_sql(where: str) -> str:
    """Every tool call in the window with the definitions recorded latest before it in its run."""
    sep = "chr(31)"
    return f"""
        WITH calls AS (
            SELECT run_id, trace_id, span_id, incident_id, agent_name, start_time, tool_name, tool_call_id,
                   status_code = 'ERROR' OR error_type IS NOT NULL AS failed, error_type, status_message,
                   nullif({_a(k.TOOL_INVALID)}, '') AS invalid,
                   coalesce({_a(k.GENAI_TOOL_ARGUMENTS)}, {_a(k.OI_TOOL_CALL_ARGUMENTS)}) AS arguments,
                   {_a(k.OI_INPUT_VALUE)} AS input_value
            FROM spans WHERE (operation = 'execute_tool' OR tool_name IS NOT NULL) AND {where}
        ), defs AS (
            SELECT run_id, start_time AS defs_time, span_id AS defs_span_id, md5(d) AS defs_hash
            FROM (SELECT run_id, start_time, span_id, {_a(k.GENAI_TOOL_DEFINITIONS)} AS d FROM spans
                  WHERE {_DEFINED} AND run_id IN (SELECT run_id FROM calls))
            WHERE d IS NOT NULL
        )
        SELECT c.*, d.defs_span_id, d.defs_hash,
               md5(coalesce(d.defs_hash, '') || {sep} || coalesce(c.tool_name, '') || {sep}
                   || CASE WHEN c.arguments IS NULL THEN 'i' || coalesce(c.input_value, '') ELSE 'a' || c.arguments END) AS combo
        FROM calls c ASOF LEFT JOIN defs d ON c.run_id = d.run_id AND c.start_time >= d.defs_time"""


_FIRST = "min(struct_pack(t := start_time, s := span_id, tr := trace_id))"  # a run's first call, by time then span id
_COMBO_COLUMNS = "defs_hash, tool_name, arguments, input_value"


def _combos_sql(where: str) -> str:
    """Each distinct (definitions, tool, arguments) of the window's tool calls, with the first call of
    it in each run and the first failed or invalid one. `where` is used twice (its parameters twice).

    One scan reads the calls and the definitions. Repeated calls (a night repeats the same reads many
    times) are grouped per run before the definitions are matched to them, at their first call; a run
    whose definitions change between two calls of one group is matched call by call instead."""
    paths = ", ".join(f"'$.\"{key}\"'" for key in (k.TOOL_INVALID, k.GENAI_TOOL_ARGUMENTS, k.OI_TOOL_CALL_ARGUMENTS,
                                                   k.OI_INPUT_VALUE, k.GENAI_TOOL_DEFINITIONS))
    is_call = "(operation = 'execute_tool' OR tool_name IS NOT NULL)"
    by_call = f"{_FIRST}, {_FIRST} FILTER (WHERE bad)"
    return f"""
        WITH base AS MATERIALIZED (
            SELECT run_id, trace_id, span_id, start_time, tool_name, is_call,
                   status_code = 'ERROR' OR error_type IS NOT NULL OR nullif(j[1], '') IS NOT NULL AS bad,
                   coalesce(j[2], j[3]) AS arguments, CASE WHEN coalesce(j[2], j[3]) IS NULL THEN j[4] END AS input_value,
                   CASE WHEN defined THEN j[5] END AS d
            FROM (SELECT run_id, trace_id, span_id, start_time, tool_name, status_code, error_type,
                         {is_call} AND {where} AS is_call, {_DEFINING} AS defined,
                         json_extract_string(attributes, [{paths}]) AS j
                  FROM spans WHERE ({is_call} AND {where}) OR {_DEFINED})
        ), defs AS (
            SELECT run_id, start_time AS defs_time, md5(d) AS defs_hash, d FROM base WHERE d IS NOT NULL
        ), grouped AS MATERIALIZED (
            SELECT run_id, tool_name, arguments, input_value, min(start_time) AS t0, max(start_time) AS t1,
                   {_FIRST} AS first_call, {_FIRST} FILTER (WHERE bad) AS first_bad
            FROM base WHERE is_call GROUP BY ALL
        ), at_first AS MATERIALIZED (
            SELECT g.*, d.defs_hash FROM grouped g ASOF LEFT JOIN defs d ON g.run_id = d.run_id AND g.t0 >= d.defs_time
        ), mixed AS (
            SELECT DISTINCT g.run_id FROM at_first g
            JOIN defs d ON g.run_id = d.run_id AND d.defs_time > g.t0 AND d.defs_time <= g.t1
            WHERE d.defs_hash IS DISTINCT FROM g.defs_hash
        ), runs AS (
            SELECT g.run_id, {_COMBO_COLUMNS}, first_call, first_bad FROM at_first g
            LEFT JOIN mixed m ON g.run_id = m.run_id WHERE m.run_id IS NULL
            UNION ALL
            SELECT c.run_id, d.defs_hash, c.tool_name, c.arguments, c.input_value, {by_call}
            FROM (SELECT * FROM base WHERE is_call AND run_id IN (SELECT run_id FROM mixed)) c
            ASOF LEFT JOIN defs d ON c.run_id = d.run_id AND c.start_time >= d.defs_time
            GROUP BY ALL
        )
        SELECT {_COMBO_COLUMNS},
               md5(coalesce(defs_hash, '') || chr(31) || coalesce(tool_name, '') || chr(31)
                   || CASE WHEN arguments IS NULL THEN 'i' || coalesce(input_value, '') ELSE 'a' || arguments END) AS combo,
               any_value(t.d) AS definitions,
               list(struct_pack(run_id := run_id, first := first_call)) AS firsts,
               list(struct_pack(run_id := run_id, first := first_bad)) FILTER (WHERE first_bad IS NOT NULL) AS bads
        FROM runs LEFT JOIN (SELECT defs_hash AS h, any_value(d) AS d FROM defs GROUP BY 1) t ON runs.defs_hash = t.h
        GROUP BY {_COMBO_COLUMNS}"""


def _schema_breaks(scope, where: str, params: list) -> tuple[dict[str, str], dict[str, Definitions], dict]:
    """{combo: why the arguments break the definitions}, for each distinct (definitions, tool, arguments);
    the parsed definitions; and {run: (start, span id, trace id) of its first bad call}."""
    combos = scope.store.query(_combos_sql(where), [*params, *params])
    parsed: dict[str, Definitions] = {}
    breaks: dict[str, str] = {}
    first: dict = {}

    def consider(items) -> None:
        for item in items:
            run, call = item["run_id"], item["first"]
            key = (call["t"], call["s"], call["tr"])
            if run not in first or key < first[run]:
                first[run] = key

    for defs_hash, tool, arguments, input_value, combo, text, firsts, bads in combos.itertuples(index=False):
        if isinstance(defs_hash, str):
            if defs_hash not in parsed:
                parsed[defs_hash] = parse(text)
            args = arguments if isinstance(arguments, str) else _input_arguments(input_value)
            why = parsed[defs_hash].check(tool if isinstance(tool, str) else None, args)
            if why is not None:
                breaks[combo] = why
                consider(firsts)
        if not pd.api.types.is_scalar(bads):  # no failed or invalid call: NULL
            consider(bads)
    return breaks, parsed, first


def _input_arguments(text: Any) -> str | None:
    """OpenInference's input.value as arguments, when it is a JSON object (it may be any text)."""
    if not isinstance(text, str) or not text.lstrip().startswith("{"):
        return None
    try:
        return text if isinstance(json.loads(text), dict) else None
    except (ValueError, RecursionError):
        return None


def _first_bad_calls(scope) -> tuple[pd.DataFrame, dict[str, str], dict[str, Definitions]]:
    where, params = scope._where()
    breaks, parsed, first = _schema_breaks(scope, where, params)
    if not first:
        return pd.DataFrame(), breaks, parsed
    keys = sorted(f"{trace_id}/{span_id}" for _, span_id, trace_id in first.values())
    # the chosen calls again, each with all its columns (a few rows: only these calls' JSON is read)
    frame = scope.store.query(f"""
        SELECT * FROM ({_calls_sql(where + " AND list_contains(?::VARCHAR[], span_id)")}) x
        WHERE list_contains(?::VARCHAR[], trace_id || '/' || span_id)
        QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY start_time, span_id) = 1
        ORDER BY start_time, run_id""", [*params, sorted({s for _, s, _ in first.values()}), keys])
    return frame, breaks, parsed


# -- a run's spans, and what consumed what ------------------------------------------------------------


@dataclass(eq=False)
class _Span:
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str  # decision, action, verification, ... (afterfix), tool, llm, agent or step
    start: pd.Timestamp
    attrs: dict
    tool_name: str | None = None
    call_id: str | None = None
    decision_id: str | None = None
    action_id: str | None = None
    children: list = field(default_factory=list)
    _inputs: list | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.trace_id, self.span_id)

    def inputs(self) -> list[tuple[str, str]]:
        """(attribute key, text) of what this span read: its attributes but its outputs and own id,
        each as the recorded text and as the strings inside it when it is JSON."""
        if self._inputs is None:
            out = []
            for key, value in self.attrs.items():
                if key in OUTPUT_KEYS or key in ID_KEYS or key.startswith(OUTPUT_PREFIXES):
                    continue
                for text in _texts(value):
                    out.append((key, text))
            self._inputs = out
        return self._inputs


def _texts(value: Any, depth: int = 0) -> list[str]:
    """A value's text and, when it is JSON, every string inside it."""
    if isinstance(value, str):
        out = [value]
        if value[:1] in ("{", "[") and depth == 0:
            parsed = c.loads(value)
            if not isinstance(parsed, str):
                out += _texts(parsed, depth + 1)
        return out
    if isinstance(value, dict):
        return [t for v in value.values() for t in _texts(v, depth + 1)] if depth < 20 else []
    if isinstance(value, list):
        return [t for v in value for t in _texts(v, depth + 1)] if depth < 20 else []
    return []


def _kind(row) -> str:
    if isinstance(row["afterfix_kind"], str):
        return row["afterfix_kind"]
    if row["operation"] == "execute_tool" or isinstance(row["tool_name"], str):
        return "tool"
    if row["operation"] in LLM_OPERATIONS:
        return "llm"
    return "agent" if row["operation"] == "invoke_agent" else "step"


def _load(scope, run_ids: list[str]) -> dict[str, list[_Span]]:
    frame = scope.store.query("""
        SELECT trace_id, span_id, parent_span_id, name, operation, afterfix_kind, run_id, tool_name, tool_call_id,
               decision_id, action_id, start_time, end_time, attributes
        FROM spans WHERE list_contains(?::VARCHAR[], run_id) ORDER BY start_time, end_time DESC""", [run_ids])
    frame = frame.drop_duplicates(["trace_id", "span_id"])
    runs: dict[str, list[_Span]] = {}
    for row in frame.to_dict("records"):
        attrs = c.loads(row["attributes"])
        s = _Span(row["trace_id"], row["span_id"], row["parent_span_id"], str(row["name"]), _kind(row),
                  row["start_time"], attrs if isinstance(attrs, dict) else {},
                  tool_name=_text(row["tool_name"]), call_id=_text(row["tool_call_id"]),
                  decision_id=_text(row["decision_id"]), action_id=_text(row["action_id"]))
        runs.setdefault(row["run_id"], []).append(s)
    for spans in runs.values():
        by_key = {s.key: s for s in spans}
        for s in spans:
            parent = by_key.get((s.trace_id, s.parent_span_id))
            if parent is not None:
                parent.children.append(s)
    return runs


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@lru_cache(maxsize=4096)
def _id_pattern(call_id: str) -> re.Pattern:
    return re.compile(r"(?<![\w-])" + re.escape(call_id) + r"(?![\w-])")


def _sources_naming(inputs: Any, call_id: str) -> str | None:
    """How a decision's inputs name `call_id` among their sources, or None."""
    sources = inputs.get(k.DECISION_INPUT_SOURCES) if isinstance(inputs, dict) else None
    if isinstance(sources, list):
        return "its inputs name it as a source" if call_id in sources else None
    if isinstance(sources, dict):
        keys = [str(key) for key, ids in sources.items()
                if ids == call_id or (isinstance(ids, list) and call_id in ids)]
        if keys:
            return f"its input{'s' if len(keys) > 1 else ''} {', '.join(keys)} came from it"
    return None


def _answers(messages: Any, call_id: str) -> bool:
    """Whether model input messages carry the result of `call_id` (GenAI parts, or OpenAI's tool_call_id)."""
    for m in messages if isinstance(messages, list) else ():
        if not isinstance(m, dict):
            continue
        if m.get("tool_call_id") == call_id:
            return True
        parts = m.get("parts")
        if isinstance(parts, list) and any(isinstance(p, dict) and p.get("type") == "tool_call_response"
                                           and p.get("id") == call_id for p in parts):
            return True
    return False


def _requested(span: _Span) -> set[str]:
    """The tool call ids a model call asked for in its output."""
    ids = set()
    messages = c.loads(span.attrs.get(k.GENAI_OUTPUT_MESSAGES))
    for m in messages if isinstance(messages, list) else ():
        if not isinstance(m, dict):
            continue
        for p in m.get("parts") if isinstance(m.get("parts"), list) else ():
            if isinstance(p, dict) and p.get("type") == "tool_call" and isinstance(p.get("id"), str):
                ids.add(p["id"])
        for call in m.get("tool_calls") if isinstance(m.get("tool_calls"), list) else ():
            if isinstance(call, dict) and isinstance(call.get("id"), str):
                ids.add(call["id"])
    for key, value in span.attrs.items():
        if key.startswith("llm.output_messages.") and key.endswith("tool_call.id") and isinstance(value, str):
            ids.add(value)
    return ids


def _names_call(s: _Span, call_id: str) -> str | None:
    if s.kind == "decision":
        why = _sources_naming(c.loads(s.attrs.get(k.DECISION_INPUTS)), call_id)
        if why:
            return why
    if _answers(c.loads(s.attrs.get(k.GENAI_INPUT_MESSAGES)), call_id) or any(
            key.startswith("llm.input_messages.") and key.endswith("tool_call_id") and value == call_id
            for key, value in s.attrs.items()):
        return "it read its result (a tool message for its call id)"
    if len(call_id) >= MIN_ID_MENTION:
        pattern = _id_pattern(call_id)
        for key, text in s.inputs():
            if call_id in text and pattern.search(text):
                return f"its {key} names its call id"
    return None


def _holds_result(s: _Span, result: str) -> str | None:
    for key, text in s.inputs():
        if result in text:
            return f"its {key} holds its result verbatim"
    return None


def _result(s: _Span) -> str | None:
    value = s.attrs.get(k.GENAI_TOOL_RESULT, s.attrs.get(k.OI_OUTPUT_VALUE))
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
    return text if len(text) >= MIN_RESULT else None


def _descendants(s: _Span):
    for child in s.children:
        yield child
        yield from _descendants(child)


def taint(spans: list[_Span], bad: _Span) -> list[tuple[_Span, str, _Span]]:
    """Every span that used `bad`'s output, directly or through other tainted spans, with why and
    through which span: (span, why, via), in start order."""
    ancestors, by_key = set(), {s.key: s for s in spans}
    parent = by_key.get((bad.trace_id, bad.parent_span_id))
    while parent is not None and parent.key not in ancestors:
        ancestors.add(parent.key)
        parent = by_key.get((parent.trace_id, parent.parent_span_id))
    seen = {bad.key}
    found: list[tuple[_Span, str, _Span]] = []
    queue = [bad]

    def add(s: _Span, why: str, via: _Span) -> None:
        if s.key not in seen and s.key not in ancestors:
            seen.add(s.key)
            found.append((s, why, via))
            queue.append(s)

    while queue:
        t = queue.pop(0)
        later = [s for s in spans if s.start >= t.start and s is not t]
        if t.kind == "tool":
            for d in _descendants(t):
                add(d, f"it ran inside {t.name}", t)
            result = _result(t)
            for s in later:
                why = (_names_call(s, t.call_id) if t.call_id else None) or (_holds_result(s, result) if result else None)
                if why:
                    add(s, why, t)
        elif t.kind == "llm":
            asked = _requested(t)
            for s in later:
                if s.kind == "tool" and s.call_id in asked:
                    add(s, f"{t.name} asked for it", t)
        elif t.kind == "decision" and t.decision_id:
            for s in later:
                if s.kind == "action" and s.decision_id == t.decision_id:
                    add(s, "the tainted decision chose it", t)
        elif t.kind == "action" and t.action_id:
            for s in later:
                if s.kind == "verification" and s.attrs.get(k.VERIFY_ACTION_ID) == t.action_id:
                    add(s, "it verifies a tainted action", t)
    order = {s.key: i for i, s in enumerate(spans)}
    return sorted(found, key=lambda f: order[f[0].key])


# -- the finding ------------------------------------------------------------------------------------


def _changed(s: _Span) -> bool:
    """A mutating action that was applied: a change to production resting on the bad call."""
    mutating = s.attrs.get(k.ACTION_MUTATING)
    return s.kind == "action" and (mutating is True or str(mutating).lower() == "true") \
        and s.attrs.get(k.ACTION_STATUS) == "applied"


def _label(s: _Span) -> str:
    a = s.attrs
    if s.kind == "decision":
        chose = a.get(k.DECISION_SELECTED)
        return f"decision “{_short(a.get(k.DECISION_QUESTION) or s.name)}”" + (f" (chose {_short(chose, 40)})" if chose else "")
    if s.kind == "action":
        return f"{_short(s.name)} ({a.get(k.ACTION_STATUS) or 'no status'})"
    if s.kind == "verification":
        return f"verification {a.get(k.VERIFY_OUTCOME) or 'with no outcome'}"
    if s.kind == "tool":
        return f"{_short(s.tool_name or s.name, 40)} call"
    return _short(s.name)


def _short(text: Any, limit: int = 80) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _target(tainted, incident_id, scope) -> str | None:
    for s, _, _ in tainted:
        ns, name = s.attrs.get(k.TARGET_NAMESPACE), s.attrs.get(k.TARGET_NAME)
        if s.kind == "action" and name:
            return f"{ns}/{name}" if ns else str(name)
    incidents = scope.incidents
    match = incidents[incidents["incident_id"] == incident_id] if incident_id is not None else incidents.iloc[:0]
    service = match["service"].iloc[0] if not match.empty else None
    return service if isinstance(service, str) else None


def _reasons(call, breaks: dict[str, str]) -> list[tuple[str, str]]:
    """(why, reason) of a bad call, the most telling first: a schema break explains a failure."""
    out = []
    if call["combo"] in breaks:
        out.append(("schema", breaks[call["combo"]]))
    if isinstance(call["invalid"], str):
        out.append(("invalid", _short(call["invalid"], 200)))
    if call["failed"]:
        error = " ".join(str(x) for x in (call["error_type"], call["status_message"]) if isinstance(x, str) and x)
        out.append(("failed", _short(error or "status ERROR", 200)))
    return out


def detect(scope) -> list[Finding]:
    first, breaks, parsed = _first_bad_calls(scope)
    if first.empty:
        return []
    runs = _load(scope, sorted(set(first["run_id"])))
    namespaced = set(scope.incidents["incident_id"]) if scope.namespace is not None else None
    found = []
    for call in first.to_dict("records"):
        spans = runs.get(call["run_id"], [])
        bad = next((s for s in spans if s.span_id == call["span_id"] and s.trace_id == call["trace_id"]), None)
        if bad is None:
            continue
        f = _finding(scope, call, bad, taint(spans, bad), _reasons(call, breaks), parsed.get(call["defs_hash"]))
        if namespaced is None or f.incident_id in namespaced or (f.target or "").split("/")[0] == scope.namespace:
            found.append(f)
    return found


def _finding(scope, call, bad: _Span, tainted, reasons, defs: Definitions | None) -> Finding:
    why, reason = reasons[0]
    tool = bad.tool_name or bad.name
    arguments = call["arguments"] if isinstance(call["arguments"], str) else _input_arguments(call["input_value"])
    shown_args = _short(arguments, 120) if arguments else "no arguments recorded"
    changes = [s for s, _, _ in tainted if _changed(s)]
    decisions = [s for s, _, _ in tainted if s.kind == "decision"]
    agent = call["agent_name"] if isinstance(call["agent_name"], str) else "the agent"
    what = {"failed": f"failed ({reason})",
            "schema": f"broke the tool's declared schema ({reason})",
            "invalid": f"was marked invalid ({reason})"}[why]
    text = f"At {c.hhmm(bad.start)}, {agent}'s {tool} call ({shown_args}) {what}."
    if tainted:
        steps = "; ".join(f"{_label(s)}: {w}" for s, w, _ in tainted[:PATH_IN_TEXT])
        more = f"; and {len(tainted) - PATH_IN_TEXT} more" if len(tainted) > PATH_IN_TEXT else ""
        text += f" Later steps used its output: {steps}{more}."
        if changes:
            many = len(changes) > 1
            text += (f" {'These changes rest' if many else 'This change rests'} on it: "
                     f"{', '.join(_short(s.name) for s in changes)}. Check {'each' if many else 'it'} against a "
                     f"correct read and roll back what is wrong.")
        if decisions:
            text += " Decide again on correct inputs to see whether the choice would have been different."
    else:
        text += (" Nothing later used its output (no step below it, naming its call id or holding its result): "
                 "check that the run did not go on as if the call had succeeded.")
    text += {"failed": f" Find out why {tool} failed, and make the agent stop or retry rather than carry on.",
             "schema": f" Fix how the agent builds {tool}'s arguments (or the schema, if it is the schema that is wrong).",
             "invalid": f" See why the call was marked invalid, and why the agent went on with it."}[why]
    path = [{"span_id": bad.span_id, "trace_id": bad.trace_id, "name": bad.name, "kind": bad.kind,
             "why": f"first bad call: {WHY_WORDS[why]} ({reason})", "via": None}]
    path += [{"span_id": s.span_id, "trace_id": s.trace_id, "name": s.name, "kind": s.kind, "why": w,
              "via": v.span_id} for s, w, v in tainted]
    run_id = call["run_id"]
    evidence = [Evidence("span", f"{_short(tool, 40)} ({_short(shown_args, 60)}): {WHY_WORDS[why]}, {_short(reason, 100)}",
                         time=c.py_time(bad.start), span_id=bad.span_id, trace_id=bad.trace_id, run_id=run_id)]
    evidence += [Evidence("action" if s.kind == "action" else "span", f"{_label(s)}: {w}", time=c.py_time(s.start),
                          span_id=s.span_id, trace_id=s.trace_id, run_id=run_id) for s, w, _ in tainted]
    incident_id = call["incident_id"] if isinstance(call["incident_id"], str) else next(
        (s.attrs.get(k.INCIDENT_ID) for s, _, _ in tainted if isinstance(s.attrs.get(k.INCIDENT_ID), str)), None)
    used = f"{len(tainted)} later step{'s' if len(tainted) != 1 else ''} used it" if tainted else "nothing used it"
    return Finding(
        kind="first_bad_step", severity="high" if changes else "medium",
        title=f"{_short(tool, 40)} call {WHY_WORDS[why]} ({_short(reason, 60)}); {used}",
        explanation=text, time=c.py_time(bad.start), incident_id=incident_id, run_ids=[run_id],
        target=_target(tainted, incident_id, scope), evidence=evidence,
        details={"call_id": bad.call_id, "span_id": bad.span_id, "tool_name": tool, "why": why, "reason": reason,
                 "reasons": [{"why": w, "reason": r} for w, r in reasons], "arguments": c.loads(arguments),
                 "definitions": None if call["defs_span_id"] is None or pd.isna(call["defs_span_id"]) else {
                     "span_id": call["defs_span_id"], "tools": sorted(defs.tools) if defs else [],
                     "problems": defs.problems if defs else []},
                 "path": path, "tainted": len(tainted),
                 "changes": [s.attrs.get(k.ACTION_ID) for s in changes],
                 "decisions": [s.decision_id for s in decisions]})
