"""The store's metric history as a `MetricSource`: points of the `metrics` table.

Labels match the point's attributes, else its resource's (`{"k8s.namespace.name": "shop",
"k8s.deployment.name": "payments"}`); a series is one `series_id` (name, resource and point
attributes), so the same workload on two nights is two series, told apart by `afterfix.night`.
The label columns of the result are the series' resource and point attributes, as text (an
attribute named like a fixed column, `time`, `value` or `series`, is left out).
Gauges and sums are read; a histogram or summary is refused with where its columns are.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

import duckdb
import pandas as pd

from afterfix._exceptions import StoreError
from afterfix.metrics.source import (COLUMNS, LOOKBACK, MetricQueryError, MetricSource, MetricSourceUnavailable, Step, Time,
                                     empty, timestamp)
from afterfix.store import Store

__all__ = ["StoreMetrics", "WORKLOAD_METRIC"]

# How the night shift (and any exporter following it) names a workload's signal.
WORKLOAD_METRIC = "afterfix.workload.{signal}"
# Labels with a column of their own (filled from the point's attributes, else the resource's):
# matched there first, so the JSON is only read for the rows of one workload.
_COLUMN = {"k8s.namespace.name": "namespace", "k8s.deployment.name": "workload", "service.name": "service_name"}
_BUCKETED = {"histogram", "exponential_histogram", "summary"}


class StoreMetrics(MetricSource):
    """Metric series from a store's `metrics` table (a `Store`, or the path of one)."""

    def __init__(self, store: Store | str | os.PathLike, *, lookback: pd.Timedelta | str = LOOKBACK):
        self.store = store if isinstance(store, Store) else Store(store)
        self.lookback = pd.Timedelta(lookback)
        self.where = f"store {self.store.where}"

    def range(self, name: str, labels: Mapping[str, str] | None = None, start: Time | None = None,
              end: Time | None = None, step: Step = 60) -> pd.DataFrame:
        t0, t1, dt = self._window(start, end, step)
        labels = self._labels(labels)
        if not isinstance(name, str) or not name:
            raise MetricQueryError(f"{self.where}: name={name!r}: give a metric name like 'afterfix.workload.latency_p95_ms'")
        where, params = ["name = ?", "time > ?", "time <= ?"], [name, t0 - self.lookback, t1]
        for key, value in labels.items():
            if key in _COLUMN:
                where.append(f"{_COLUMN[key]} = ?")
                params.append(value)
            path = f'$."{key}"'  # keys are checked attribute names: no quote can be in one
            where.append("coalesce(json_extract_string(attributes, ?), json_extract_string(resource_attributes, ?)) = ?")
            params += [path, path, value]
        rows = self._query(f"""
            SELECT series_id, kind, time, value, attributes, resource_attributes FROM metrics
            WHERE {' AND '.join(where)} ORDER BY series_id, time""", params)
        if rows.empty:
            return empty()
        bucketed = sorted(set(rows["kind"]) & _BUCKETED)
        if bucketed:
            raise MetricQueryError(
                f"{self.where}: {name} is a {bucketed[0]}; range() reads gauges and sums. Its count, sum and "
                f"p50/p90/p95/p99 are columns of the metrics table: afterfix query "
                f"\"SELECT time, p95 FROM metrics WHERE name = '{name}'\"")
        instants = pd.DataFrame({"time": pd.date_range(t0, t1, freq=dt).astype("datetime64[ns]")})
        frames = []
        for series_id, points in rows.groupby("series_id", sort=True):
            points = points.assign(time=points["time"].astype("datetime64[ns]"), at=points["time"])
            # Each instant takes the newest point in (instant - lookback, instant], as Prometheus does.
            picked = pd.merge_asof(instants, points[["time", "value", "at"]], on="time", direction="backward",
                                   tolerance=self.lookback - pd.Timedelta(1, "ns"))
            picked = picked[picked["at"].notna()].drop(columns="at")
            if picked.empty:
                continue
            first = points.iloc[0]
            series_labels = {k: v for k, v in {**attribute_labels(first["resource_attributes"]),
                                               **attribute_labels(first["attributes"])}.items() if k not in COLUMNS}
            frames.append(picked.assign(series=series_id, **series_labels))
        if not frames:
            return empty()
        out = pd.concat(frames, ignore_index=True)
        out["value"] = out["value"].astype("float64")
        return out[["time", "value", "series", *sorted(c for c in out.columns if c not in ("time", "value", "series"))]]

    def series(self, signal: str, namespace: str, workload: str, start: Time | None = None,
               end: Time | None = None) -> pd.DataFrame:
        """The raw points (`time`, `value`, oldest first) of one workload's signal
        (`afterfix.workload.<signal>`) between `start` and `end`, both included, every night's."""
        where, params = ["name = ?", "namespace = ?", "workload = ?", "value IS NOT NULL"], \
            [WORKLOAD_METRIC.format(signal=signal), namespace, workload]
        if start is not None:
            where.append("time >= ?")
            params.append(timestamp(start, self.where, "start"))
        if end is not None:
            where.append("time <= ?")
            params.append(timestamp(end, self.where, "end"))
        rows = self._query(f"SELECT time, value FROM metrics WHERE {' AND '.join(where)} ORDER BY time", params)
        if rows.empty:
            return empty()[["time", "value"]]
        return rows.assign(time=rows["time"].astype("datetime64[ns]"), value=rows["value"].astype("float64"))

    def _query(self, sql: str, params: list) -> pd.DataFrame:
        try:
            return self.store.query(sql, params)
        except StoreError as e:
            raise MetricSourceUnavailable(f"{self.where}: {e}") from None
        except duckdb.CatalogException:
            # A store last written before metrics existed has no table yet: no series.
            if not self._has_table():
                return pd.DataFrame()
            raise

    def _has_table(self) -> bool:
        found = self.store.query("SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 'metrics'")
        return bool(found["n"].iloc[0])


def attribute_labels(text: str | None) -> dict[str, str]:
    """A JSON object of attributes as text labels (numbers and booleans as JSON writes them)."""
    try:
        parsed = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in parsed.items()}
