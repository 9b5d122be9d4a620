"""Small pieces the detectors share: reading JSON attributes, naming targets and times, metric history."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pandas as pd


def loads(text: Any) -> Any:
    """A JSON attribute as data; text that is not JSON stays text, and missing stays None."""
    if text is None or (isinstance(text, float) and pd.isna(text)):
        return None
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def target(row) -> str:
    return f"{row['target_namespace']}/{row['target_name']}"


def hhmm(t: datetime | pd.Timestamp | None) -> str:
    """A time as a reviewer reads it in a briefing: '01:33 UTC', with the date when it is not obvious."""
    if t is None or pd.isna(t):
        return "an unknown time"
    return pd.Timestamp(t).strftime("%H:%M UTC")


def when(t) -> str:
    return "an unknown time" if t is None or pd.isna(t) else pd.Timestamp(t).strftime("%Y-%m-%d %H:%M UTC")


def duration(seconds: float) -> str:
    seconds = abs(float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min" if minutes else f"{hours} h"


def py_time(t) -> datetime | None:
    return None if t is None or pd.isna(t) else pd.Timestamp(t).to_pydatetime()


def has_metrics(store) -> bool:
    # A store last written before metrics existed has no such table until its next write.
    exists = store.query("SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 'metrics'")
    if not exists["n"].iloc[0]:
        return False
    return bool(store.query("SELECT count(*) AS n FROM (SELECT 1 FROM metrics LIMIT 1)")["n"].iloc[0])


def metric_source(store):
    """The store's own metric history, or None when it holds none."""
    if not has_metrics(store):
        return None
    from afterfix.metrics.store import StoreMetrics

    return StoreMetrics(store)


# The night shift (and any exporter following it) names each workload signal like this.
SIGNAL_METRIC = "afterfix.workload.{signal}"
DEPENDS_ON = "afterfix.depends_on"  # resource attribute: the workloads ("ns/name") this one depends on


def dependencies(store) -> dict[str, set[str]]:
    """{workload: the workloads it depends on}, from the metric history's resource attributes."""
    if not has_metrics(store):
        return {}
    rows = store.query(f"""
        SELECT DISTINCT namespace || '/' || workload AS w,
               json_extract_string(resource_attributes, '$."{DEPENDS_ON}"') AS d
        FROM metrics WHERE workload IS NOT NULL
          AND json_extract_string(resource_attributes, '$."{DEPENDS_ON}"') IS NOT NULL""")
    deps: dict[str, set[str]] = {}
    for w, d in rows.itertuples(index=False):
        parsed = loads(d)
        items = parsed if isinstance(parsed, list) else str(d).split(",")
        deps.setdefault(w, set()).update(i.strip() for i in items if isinstance(i, str) and i.strip())
    return deps
