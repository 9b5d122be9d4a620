"""What the detectors look at: a window of the store (or one incident), loaded once and shared.

Each frame is read on first use and kept, so six detectors cost one query per view, not six.
Times are naive UTC, as the store keeps them.
"""

from __future__ import annotations

from datetime import datetime, timezone
from functools import cached_property

import pandas as pd


def naive_utc(t: datetime | None) -> datetime | None:
    if t is None or t.tzinfo is None:
        return t
    return t.astimezone(timezone.utc).replace(tzinfo=None)


class Scope:
    def __init__(self, store, *, since: datetime | None = None, until: datetime | None = None,
                 incident: str | None = None, namespace: str | None = None):
        self.store = store
        self.since = naive_utc(since)
        self.until = naive_utc(until)
        self.incident = incident
        self.namespace = namespace

    def _where(self, time_col: str = "start_time", incident_col: str = "incident_id") -> tuple[str, list]:
        clauses, params = [], []
        if self.since is not None:
            clauses.append(f"{time_col} >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append(f"{time_col} < ?")
            params.append(self.until)
        if self.incident is not None:
            clauses.append(f"{incident_col} = ?")
            params.append(self.incident)
        return (" AND ".join(clauses) or "TRUE"), params

    def view(self, name: str, time_col: str = "start_time") -> pd.DataFrame:
        where, params = self._where(time_col)
        return self.store.query(f"SELECT * FROM {name} WHERE {where} ORDER BY {time_col}", params)

    @cached_property
    def incidents(self) -> pd.DataFrame:
        frame = self.view("incidents")
        if self.namespace is not None:
            frame = frame[frame["service"].fillna("").str.split("/").str[0] == self.namespace]
        return frame.reset_index(drop=True)

    def in_namespace(self, frame: pd.DataFrame, column: str = "target_namespace") -> pd.DataFrame:
        """Rows of `frame` that belong to the namespace filter (by their own column, else by incident)."""
        if self.namespace is None or frame.empty:
            return frame
        own = frame[column] == self.namespace if column in frame else False
        by_incident = frame["incident_id"].isin(set(self.incidents["incident_id"])) if "incident_id" in frame else False
        return frame[own | by_incident].reset_index(drop=True)

    @cached_property
    def runs(self) -> pd.DataFrame:
        return self.in_namespace(self.view("runs"), "none")

    @cached_property
    def actions(self) -> pd.DataFrame:
        return self.in_namespace(self.view("actions"))

    @cached_property
    def decisions(self) -> pd.DataFrame:
        return self.in_namespace(self.view("decisions"), "none")

    @cached_property
    def tool_calls(self) -> pd.DataFrame:
        return self.in_namespace(self.view("tool_calls"), "none")

    @cached_property
    def verifications(self) -> pd.DataFrame:
        where, params = self._where()
        return self.in_namespace(self.store.query(f"""
            SELECT trace_id, span_id, run_id, incident_id, agent_name, start_time, end_time,
                   json_extract_string(attributes, '$."afterfix.verification.action_id"') AS action_id,
                   json_extract_string(attributes, '$."afterfix.verification.outcome"') AS outcome,
                   json_extract_string(attributes, '$."afterfix.verification.signal"') AS signal,
                   TRY_CAST(json_extract_string(attributes, '$."afterfix.verification.before"') AS DOUBLE) AS before,
                   TRY_CAST(json_extract_string(attributes, '$."afterfix.verification.after"') AS DOUBLE) AS after,
                   status_code
            FROM spans WHERE afterfix_kind = 'verification' AND {where} ORDER BY start_time""", params), "none")
