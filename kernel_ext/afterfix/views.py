"""Derived views over the physical tables: runs, tool_calls, llm_calls, decisions, options,
actions, incidents, orphan_spans.

They are created as temporary views on every connection, so they always match the code that
reads them, and the store never holds a view definition an older afterfix wrote.
"""

from __future__ import annotations

import duckdb


def _a(key: str, col: str = "attributes") -> str:
    """SQL for one attribute's text value; OTel's dotted keys need the quoted JSON path."""
    return f"json_extract_string({col}, '$.\"{key}\"')"


def _num(key: str, col: str = "attributes") -> str:
    return f"TRY_CAST({_a(key, col)} AS DOUBLE)"


def _bool(key: str, col: str = "attributes") -> str:
    return f"TRY_CAST({_a(key, col)} AS BOOLEAN)"


VIEWS: dict[str, str] = {
    "runs": f"""
        SELECT run_id,
               any_value(incident_id) FILTER (WHERE incident_id IS NOT NULL) AS incident_id,
               coalesce(any_value(agent_name) FILTER (WHERE agent_name IS NOT NULL),
                        any_value(service_name)) AS agent_name,
               any_value(service_name) AS service_name,
               min(trace_id) AS trace_id,
               count(DISTINCT trace_id) AS traces,
               min(start_time) AS start_time,
               max(end_time) AS end_time,
               date_diff('millisecond', min(start_time), max(end_time)) / 1000.0 AS duration_s,
               count(*) AS spans,
               count(*) FILTER (WHERE operation = 'execute_tool') AS tool_calls,
               count(*) FILTER (WHERE operation IN ('chat', 'text_completion', 'generate_content')) AS llm_calls,
               count(*) FILTER (WHERE afterfix_kind = 'decision') AS decisions,
               count(*) FILTER (WHERE afterfix_kind = 'action' AND {_bool('afterfix.action.mutating')}) AS changes,
               coalesce(sum(input_tokens), 0) AS input_tokens,
               coalesce(sum(output_tokens), 0) AS output_tokens,
               count(*) FILTER (WHERE status_code = 'ERROR') AS errors,
               CASE WHEN count(*) FILTER (WHERE status_code = 'ERROR') > 0 THEN 'error' ELSE 'ok' END AS status
        FROM spans WHERE run_id IS NOT NULL GROUP BY run_id
    """,
    "tool_calls": f"""
        SELECT trace_id, span_id, parent_span_id, run_id, incident_id, agent_name, tool_name,
               tool_call_id AS call_id,
               coalesce({_a('gen_ai.tool.call.arguments')}, {_a('tool_call.function.arguments')},
                        {_a('tool.parameters')}) AS arguments,
               coalesce({_a('gen_ai.tool.call.result')}, {_a('output.value')}) AS result,
               status_code = 'ERROR' OR error_type IS NOT NULL AS failed,
               coalesce(error_type, CASE WHEN status_code = 'ERROR' THEN status_message END) AS error,
               start_time, end_time, duration_ms
        FROM spans WHERE operation = 'execute_tool' OR tool_name IS NOT NULL
    """,
    "llm_calls": f"""
        SELECT trace_id, span_id, parent_span_id, run_id, incident_id, agent_name, model,
               coalesce({_a('gen_ai.provider.name')}, {_a('gen_ai.system')}, {_a('llm.provider')}) AS provider,
               input_tokens, output_tokens, status_code = 'ERROR' AS failed, start_time, duration_ms
        FROM spans WHERE operation IN ('chat', 'text_completion', 'generate_content') OR model IS NOT NULL
    """,
    "decisions": f"""
        SELECT decision_id, trace_id, span_id, run_id, incident_id, agent_name,
               {_a('afterfix.decision.question')} AS question,
               {_a('afterfix.decision.selected')} AS selected_option,
               {_a('afterfix.decision.reason')} AS reason,
               {_a('afterfix.decision.policy')} AS policy,
               {_a('afterfix.decision.inputs')} AS inputs,
               start_time, duration_ms
        FROM spans WHERE afterfix_kind = 'decision'
    """,
    "options": f"""
        SELECT s.decision_id, e.trace_id, e.span_id, s.run_id, s.incident_id, e.seq,
               {_a('afterfix.option.id', 'e.attributes')} AS option_id,
               {_a('afterfix.option.description', 'e.attributes')} AS description,
               {_a('afterfix.option.action', 'e.attributes')} AS action,
               {_a('afterfix.option.evidence', 'e.attributes')} AS evidence,
               {_num('afterfix.option.score', 'e.attributes')} AS score,
               coalesce({_a('afterfix.option.verdict', 'e.attributes')}, 'considered') AS verdict,
               {_a('afterfix.option.reason', 'e.attributes')} AS reason,
               e.time
        FROM events e JOIN spans s USING (trace_id, span_id)
        WHERE e.name = 'afterfix.option'
    """,
    "actions": f"""
        SELECT action_id, trace_id, span_id, run_id, incident_id, agent_name, decision_id,
               {_a('afterfix.action.verb')} AS verb,
               coalesce({_bool('afterfix.action.mutating')}, false) AS mutating,
               {_a('afterfix.action.status')} AS status,
               TRY_CAST({_a('afterfix.trust.level')} AS INTEGER) AS trust_level,
               {_a('afterfix.target.uid')} AS target_uid,
               {_a('afterfix.target.kind')} AS target_kind,
               {_a('afterfix.target.api_version')} AS target_api_version,
               {_a('afterfix.target.namespace')} AS target_namespace,
               {_a('afterfix.target.name')} AS target_name,
               {_a('afterfix.action.patch')} AS patch,
               {_a('afterfix.action.before')} AS before,
               {_a('afterfix.action.after')} AS after,
               {_a('afterfix.action.resource_version.before')} AS resource_version_before,
               {_a('afterfix.action.resource_version.after')} AS resource_version_after,
               coalesce({_bool('afterfix.action.dry_run')}, false) AS dry_run_checked,
               {_a('afterfix.action.field_manager')} AS field_manager,
               {_a('afterfix.action.analysis')} AS analysis,
               status_code = 'ERROR' AS failed, start_time, duration_ms
        FROM spans WHERE afterfix_kind = 'action'
    """,
    "incidents": f"""
        WITH declared AS (
            SELECT incident_id,
                   arg_max({_a('afterfix.incident.title')}, end_time) AS title,
                   arg_max({_a('afterfix.incident.severity')}, end_time) AS severity,
                   arg_max({_a('afterfix.incident.service')}, end_time) AS service,
                   arg_max({_a('afterfix.incident.status')}, end_time) AS status
            FROM spans WHERE afterfix_kind = 'incident' AND incident_id IS NOT NULL GROUP BY incident_id
        ), work AS (
            SELECT incident_id, min(start_time) AS start_time, max(end_time) AS end_time,
                   count(DISTINCT run_id) AS runs, count(DISTINCT agent_name) AS agents, count(*) AS spans,
                   count(*) FILTER (WHERE afterfix_kind = 'decision') AS decisions,
                   count(*) FILTER (WHERE afterfix_kind = 'action' AND {_bool('afterfix.action.mutating')}) AS changes,
                   count(*) FILTER (WHERE status_code = 'ERROR') AS errors
            FROM spans WHERE incident_id IS NOT NULL GROUP BY incident_id
        )
        SELECT w.incident_id, d.title, d.severity, d.service, coalesce(d.status, 'open') AS status,
               w.start_time, w.end_time, w.runs, w.agents, w.spans, w.decisions, w.changes, w.errors
        FROM work w LEFT JOIN declared d USING (incident_id)
    """,
    "orphan_spans": """
        SELECT s.trace_id, s.span_id, s.parent_span_id, s.name, s.source, s.ingested_at
        FROM spans s
        WHERE s.parent_span_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM spans p WHERE p.trace_id = s.trace_id AND p.span_id = s.parent_span_id)
    """,
}


def create(con: duckdb.DuckDBPyConnection) -> None:
    """Create every view as a temporary view on `con` (whose default catalog is the lake)."""
    for name, sql in VIEWS.items():
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {sql}")
