"""The physical tables of the store, as Arrow schemas and DuckDB DDL from one definition.

Decoders produce Arrow tables with exactly these schemas; the store creates tables with
exactly these columns. Hot fields (trace, run, incident, operation, tool) are real columns so
that filters on them never parse JSON; everything else stays in the `attributes` JSON text.
`traces/SCHEMA.md` describes every column; a test keeps the two in step.
"""

from __future__ import annotations

import pyarrow as pa

_TS = pa.timestamp("us")  # UTC, naive: DuckDB shows TIMESTAMP without a session time zone

# (name, arrow type, duckdb type, nullable)
SPAN_COLUMNS: list[tuple[str, pa.DataType, str, bool]] = [
    ("trace_id", pa.string(), "VARCHAR", False),
    ("span_id", pa.string(), "VARCHAR", False),
    ("parent_span_id", pa.string(), "VARCHAR", True),
    ("name", pa.string(), "VARCHAR", False),
    ("kind", pa.string(), "VARCHAR", True),
    ("start_time", _TS, "TIMESTAMP", False),
    ("end_time", _TS, "TIMESTAMP", False),
    ("duration_ms", pa.float64(), "DOUBLE", False),
    ("status_code", pa.string(), "VARCHAR", True),
    ("status_message", pa.string(), "VARCHAR", True),
    ("service_name", pa.string(), "VARCHAR", True),
    ("scope_name", pa.string(), "VARCHAR", True),
    ("operation", pa.string(), "VARCHAR", True),
    ("afterfix_kind", pa.string(), "VARCHAR", True),
    ("run_id", pa.string(), "VARCHAR", True),
    ("incident_id", pa.string(), "VARCHAR", True),
    ("agent_name", pa.string(), "VARCHAR", True),
    ("tool_name", pa.string(), "VARCHAR", True),
    ("tool_call_id", pa.string(), "VARCHAR", True),
    ("decision_id", pa.string(), "VARCHAR", True),
    ("action_id", pa.string(), "VARCHAR", True),
    ("model", pa.string(), "VARCHAR", True),
    ("input_tokens", pa.int64(), "BIGINT", True),
    ("output_tokens", pa.int64(), "BIGINT", True),
    ("error_type", pa.string(), "VARCHAR", True),
    ("attributes", pa.string(), "VARCHAR", False),  # JSON object, dotted keys kept as-is
    ("resource_attributes", pa.string(), "VARCHAR", False),  # JSON object
    ("links", pa.string(), "VARCHAR", True),  # JSON list of {trace_id, span_id, attributes}
    ("source", pa.string(), "VARCHAR", False),  # file path, or "otlp-http"
    ("ingested_at", _TS, "TIMESTAMP", False),
]

EVENT_COLUMNS: list[tuple[str, pa.DataType, str, bool]] = [
    ("trace_id", pa.string(), "VARCHAR", False),
    ("span_id", pa.string(), "VARCHAR", False),
    ("seq", pa.int32(), "INTEGER", False),  # position among the span's events
    ("name", pa.string(), "VARCHAR", False),
    ("time", _TS, "TIMESTAMP", False),
    ("attributes", pa.string(), "VARCHAR", False),  # JSON object
]

QUARANTINE_COLUMNS: list[tuple[str, pa.DataType, str, bool]] = [
    ("received_at", _TS, "TIMESTAMP", False),
    ("source", pa.string(), "VARCHAR", False),  # file path, or "otlp-http"
    ("location", pa.string(), "VARCHAR", False),  # "line 17", "span 3 of request 12", ...
    ("reason", pa.string(), "VARCHAR", False),  # what is wrong and how to fix it
    ("record", pa.string(), "VARCHAR", True),  # the refused text, redacted, truncated
]

# Where each input has been read up to. Appended, never updated: the newest row per source wins.
OFFSET_COLUMNS: list[tuple[str, pa.DataType, str, bool]] = [
    ("source", pa.string(), "VARCHAR", False),
    ("fingerprint", pa.string(), "VARCHAR", False),  # identifies the file's content (inode, head hash)
    ("position", pa.int64(), "BIGINT", False),  # byte offset fully committed
    ("committed_at", _TS, "TIMESTAMP", False),
]

# One row per metric data point. Gauges and sums fill `value`; histograms fill `count`, `sum` and
# the quantiles people read (estimated from the buckets); summaries fill the same from their
# quantile values. A point is stored once per (series_id, time).
METRIC_COLUMNS: list[tuple[str, pa.DataType, str, bool]] = [
    ("name", pa.string(), "VARCHAR", False),
    ("kind", pa.string(), "VARCHAR", False),  # gauge, sum, histogram, exponential_histogram, summary
    ("unit", pa.string(), "VARCHAR", True),
    ("time", _TS, "TIMESTAMP", False),  # the point's timeUnixNano
    ("start_time", _TS, "TIMESTAMP", True),  # startTimeUnixNano of a cumulative or delta point
    ("value", pa.float64(), "DOUBLE", True),  # gauge or sum value
    ("count", pa.int64(), "BIGINT", True),  # histogram / summary
    ("sum", pa.float64(), "DOUBLE", True),
    ("p50", pa.float64(), "DOUBLE", True),
    ("p90", pa.float64(), "DOUBLE", True),
    ("p95", pa.float64(), "DOUBLE", True),
    ("p99", pa.float64(), "DOUBLE", True),
    ("service_name", pa.string(), "VARCHAR", True),  # resource service.name
    ("namespace", pa.string(), "VARCHAR", True),  # k8s.namespace.name (point, else resource)
    ("workload", pa.string(), "VARCHAR", True),  # k8s.deployment.name / statefulset / daemonset / job
    ("series_id", pa.string(), "VARCHAR", False),  # hash of name, resource and point attributes
    ("attributes", pa.string(), "VARCHAR", False),  # JSON object: the point's attributes
    ("resource_attributes", pa.string(), "VARCHAR", False),  # JSON object
    ("scope_name", pa.string(), "VARCHAR", True),
    ("source", pa.string(), "VARCHAR", False),  # file path, or "otlp-http"
    ("ingested_at", _TS, "TIMESTAMP", False),
]

# Where in time each run's spans and events are (run_index.py): one row per run per append, so a
# query for one run filters on start_time, which the time-ordered files' statistics prune on. A row
# with a null run_id marks the index complete (every span stored is indexed).
RUN_INDEX_COLUMNS: list[tuple[str, pa.DataType, str, bool]] = [
    ("run_id", pa.string(), "VARCHAR", True),  # null: the row marking the index complete
    ("first_start", _TS, "TIMESTAMP", True),  # the earliest start_time of the run's spans in the batch
    ("last_start", _TS, "TIMESTAMP", True),  # the latest
    ("first_event", _TS, "TIMESTAMP", True),  # the earliest time of their events (null: none)
    ("last_event", _TS, "TIMESTAMP", True),
    ("spans", pa.int64(), "BIGINT", False),  # spans indexed by the row (the marker: all spans then stored)
    ("indexed_at", _TS, "TIMESTAMP", False),
]

# Ledgers: what people and afterfix itself did about the agent's actions. Rows are appended,
# never updated: the newest row about a thing is its state, the older ones its history.

# One row per step of one rollback: "started" before anything is written to the cluster, then
# exactly one of the outcomes (rolled_back, already_rolled_back, refused, failed, dry_run).
ROLLBACK_COLUMNS: list[tuple[str, pa.DataType, str, bool]] = [
    ("rollback_id", pa.string(), "VARCHAR", False),
    ("action_id", pa.string(), "VARCHAR", False),  # the agent action being undone
    ("decision_id", pa.string(), "VARCHAR", True),  # the decision that action served
    ("time", _TS, "TIMESTAMP", False),
    ("who", pa.string(), "VARCHAR", False),  # the person (or "afterfix-guard") who asked
    ("reason", pa.string(), "VARCHAR", True),
    ("automatic", pa.bool_(), "BOOLEAN", False),  # asked for by the guard, not a person
    ("outcome", pa.string(), "VARCHAR", False),
    ("message", pa.string(), "VARCHAR", True),  # the outcome explained in one sentence
    ("fields", pa.string(), "VARCHAR", True),  # JSON list: the paths restored (all the action changed when null)
    ("override_reason", pa.string(), "VARCHAR", True),  # given with --override-drift
    ("target_uid", pa.string(), "VARCHAR", True),
    ("target_kind", pa.string(), "VARCHAR", True),
    ("target_namespace", pa.string(), "VARCHAR", True),
    ("target_name", pa.string(), "VARCHAR", True),
    ("resource_version_before", pa.string(), "VARCHAR", True),  # the object's, read before the write
    ("resource_version_after", pa.string(), "VARCHAR", True),  # the one the write returned
    ("plan", pa.string(), "VARCHAR", True),  # JSON: the plan as shown, every check included
    ("result", pa.string(), "VARCHAR", True),  # JSON: dry-run comparison, write, verification
    ("trace_id", pa.string(), "VARCHAR", True),  # the rollback's own decision and action trace
]

# One row per event of one analysis the guard keeps on an agent action (Argo Rollouts' terms).
ANALYSIS_COLUMNS: list[tuple[str, pa.DataType, str, bool]] = [
    ("analysis_id", pa.string(), "VARCHAR", False),
    ("action_id", pa.string(), "VARCHAR", False),
    ("time", _TS, "TIMESTAMP", False),
    ("event", pa.string(), "VARCHAR", False),  # started, measurement, outcome, rollback, resumed
    ("phase", pa.string(), "VARCHAR", True),  # Running, Successful, Failed, Inconclusive, Error
    ("value", pa.float64(), "DOUBLE", True),  # the measured value
    ("message", pa.string(), "VARCHAR", True),
    ("detail", pa.string(), "VARCHAR", True),  # JSON: the spec (started), the conditions' results
    ("guard", pa.string(), "VARCHAR", True),  # which guard process wrote it (host:pid)
]

# One row per alert afterfix raised for people, and whether its webhook was delivered.
ALERT_COLUMNS: list[tuple[str, pa.DataType, str, bool]] = [
    ("alert_id", pa.string(), "VARCHAR", False),
    ("time", _TS, "TIMESTAMP", False),
    ("source", pa.string(), "VARCHAR", False),  # guard, rollback
    ("severity", pa.string(), "VARCHAR", False),  # critical, warning, info
    ("action_id", pa.string(), "VARCHAR", True),
    ("analysis_id", pa.string(), "VARCHAR", True),
    ("title", pa.string(), "VARCHAR", False),
    ("message", pa.string(), "VARCHAR", True),
    ("detail", pa.string(), "VARCHAR", True),  # JSON: the webhook body
    ("delivery", pa.string(), "VARCHAR", True),  # "HTTP 200 from URL", "failed: reason", "no webhook"
]

# One row per event of one approval request (trust level 2): `requested` by the agent, then exactly
# one decision (`approved`, `denied`, or `expired` when the agent stopped waiting). A request is
# decided once: the decision rows are appended under the store's write lock, after checking that
# none exists, so a second person deciding at the same moment is told who decided first.
APPROVAL_COLUMNS: list[tuple[str, pa.DataType, str, bool]] = [
    ("request_id", pa.string(), "VARCHAR", False),
    ("time", _TS, "TIMESTAMP", False),
    ("event", pa.string(), "VARCHAR", False),  # requested, approved, denied, expired
    ("who", pa.string(), "VARCHAR", False),  # the agent (requested) or the person who decided
    ("comment", pa.string(), "VARCHAR", True),
    ("action_id", pa.string(), "VARCHAR", True),  # the agent action waiting for it
    ("decision_id", pa.string(), "VARCHAR", True),
    ("run_id", pa.string(), "VARCHAR", True),
    ("incident_id", pa.string(), "VARCHAR", True),
    ("agent_name", pa.string(), "VARCHAR", True),
    ("verb", pa.string(), "VARCHAR", True),
    ("target", pa.string(), "VARCHAR", True),  # Kind/namespace/name
    ("summary", pa.string(), "VARCHAR", True),  # one line: what will happen if approved
    ("request", pa.string(), "VARCHAR", True),  # JSON: the exact change asked for (manifest or patch)
    ("expires_at", _TS, "TIMESTAMP", True),  # when the agent stops waiting (requested rows)
]

# One row per verdict a person gave on a decision or an action. Appended: the newest row by one
# person on one target is that person's verdict, the older ones its history.
VERDICT_COLUMNS: list[tuple[str, pa.DataType, str, bool]] = [
    ("verdict_id", pa.string(), "VARCHAR", False),
    ("time", _TS, "TIMESTAMP", False),
    ("who", pa.string(), "VARCHAR", False),
    ("target_type", pa.string(), "VARCHAR", False),  # decision, action
    ("target_id", pa.string(), "VARCHAR", False),  # the decision id or action id
    ("decision_id", pa.string(), "VARCHAR", True),  # the decision (an action's own decision)
    ("run_id", pa.string(), "VARCHAR", True),
    ("incident_id", pa.string(), "VARCHAR", True),
    ("verdict", pa.string(), "VARCHAR", False),  # correct, wrong, unsure
    ("note", pa.string(), "VARCHAR", True),
    ("should_have", pa.string(), "VARCHAR", True),  # wrong: the option id that should have been taken
]

# One row per replay or what-if a person ran: what was re-run, on which inputs, and what came out.
REPLAY_COLUMNS: list[tuple[str, pa.DataType, str, bool]] = [
    ("replay_id", pa.string(), "VARCHAR", False),
    ("time", _TS, "TIMESTAMP", False),
    ("who", pa.string(), "VARCHAR", False),
    ("kind", pa.string(), "VARCHAR", False),  # replay, what_if
    ("decision_id", pa.string(), "VARCHAR", False),  # the decision re-run first
    ("run_id", pa.string(), "VARCHAR", True),
    ("incident_id", pa.string(), "VARCHAR", True),
    ("decider", pa.string(), "VARCHAR", False),  # "policy:hpa_capacity", "endpoint:http://...#model", ...
    ("edits", pa.string(), "VARCHAR", True),  # JSON list of {path, old, new} (what-if)
    ("diverged", pa.bool_(), "BOOLEAN", False),  # any re-run decision chose differently
    ("result", pa.string(), "VARCHAR", False),  # JSON: every re-run decision, recorded vs replayed
    ("note", pa.string(), "VARCHAR", True),
]

# One row per change of a trust rule's level that a person accepted, or a suggestion they refused
# (trust.ladder). The current level of a rule is its policy level plus the accepted changes, capped.
TRUST_COLUMNS: list[tuple[str, pa.DataType, str, bool]] = [
    ("change_id", pa.string(), "VARCHAR", False),
    ("time", _TS, "TIMESTAMP", False),
    ("who", pa.string(), "VARCHAR", False),
    ("rule_id", pa.string(), "VARCHAR", False),  # the trust policy rule's id
    ("kind", pa.string(), "VARCHAR", False),  # promote, demote
    ("outcome", pa.string(), "VARCHAR", False),  # accepted (the level changed), refused (a suggestion turned down)
    ("from_level", pa.int32(), "INTEGER", False),  # the rule's level before
    ("to_level", pa.int32(), "INTEGER", False),  # the level asked for (accepted) or suggested (refused)
    ("reason", pa.string(), "VARCHAR", False),
    ("suggested", pa.bool_(), "BOOLEAN", False),  # afterfix suggested this change from the track record
    ("track_record", pa.string(), "VARCHAR", False),  # JSON: the rule's track record when it was decided
    ("policy", pa.string(), "VARCHAR", True),  # the policy file the rule came from
]

TABLES: dict[str, list[tuple[str, pa.DataType, str, bool]]] = {
    "spans": SPAN_COLUMNS,
    "metrics": METRIC_COLUMNS,
    "events": EVENT_COLUMNS,
    "quarantine": QUARANTINE_COLUMNS,
    "ingest_offsets": OFFSET_COLUMNS,
    "run_index": RUN_INDEX_COLUMNS,
    "rollbacks": ROLLBACK_COLUMNS,
    "analyses": ANALYSIS_COLUMNS,
    "alerts": ALERT_COLUMNS,
    "approvals": APPROVAL_COLUMNS,
    "verdicts": VERDICT_COLUMNS,
    "replays": REPLAY_COLUMNS,
    "trust": TRUST_COLUMNS,
}
LEDGERS = ("rollbacks", "analyses", "alerts", "approvals", "verdicts", "replays", "trust")


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema a batch for `table` must have."""
    return pa.schema([pa.field(n, t, nullable=null) for n, t, _, null in TABLES[table]])


SPAN_SCHEMA = arrow_schema("spans")
EVENT_SCHEMA = arrow_schema("events")
QUARANTINE_SCHEMA = arrow_schema("quarantine")
OFFSET_SCHEMA = arrow_schema("ingest_offsets")
METRIC_SCHEMA = arrow_schema("metrics")


def create_table_sql(table: str, prefix: str = "") -> str:
    cols = ",\n  ".join(f"{n} {d}{'' if null else ' NOT NULL'}" for n, _, d, null in TABLES[table])
    return f"CREATE TABLE IF NOT EXISTS {prefix}{table} (\n  {cols}\n)"


def empty(table: str) -> pa.Table:
    return arrow_schema(table).empty_table()
