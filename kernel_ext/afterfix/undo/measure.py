"""Metric values for many due measurements at once: what the guard measures with.

    reader = MetricReader(StoreMetrics(store))     # or PrometheusMetrics(url)
    values = reader.read(specs, now)               # one answer per spec, in order

Contract: each answer is the spec's vector at `now` (a list of floats, NaN for a point without a
value) or the MetricSourceError that says why there is none; a reader never raises for a source's
failure. On the store's metric history all specs are answered by one query (per series, its newest
point within StoreMetrics' lookback, matched on labels as StoreMetrics matches them), and a
histogram, exponential histogram or summary is an error: an analysis reads gauges and sums. Any
other source is asked once per distinct query among the specs. When a metric is due is the
guard's business (its interval floor), not the reader's.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Sequence

from afterfix._exceptions import StoreError
from afterfix.metrics import MetricSource, MetricSourceError, MetricSourceUnavailable, StoreMetrics
from afterfix.metrics.store import attribute_labels
from afterfix.undo.analysis import AnalysisSpec

__all__ = ["MetricReader", "utc"]

_BUCKETED = {"histogram", "exponential_histogram", "summary"}


def utc(epoch: float) -> datetime:
    """Naive UTC, as the store keeps times."""
    return datetime.fromtimestamp(epoch, timezone.utc).replace(tzinfo=None)


class MetricReader:
    """Reads the vectors of many analysis specs from one `source` (see the module docstring);
    keeps the labels of the store's series it has seen, which do not change."""

    def __init__(self, source: MetricSource):
        self.source = source
        self._series: dict[str, dict[str, str]] = {}  # store series_id -> labels

    def read(self, specs: Sequence[AnalysisSpec], now: float) -> list[list[float] | Exception]:
        """Each spec's vector at `now`, or why there is none; in the order of `specs`."""
        if not specs:
            return []
        if isinstance(self.source, StoreMetrics):
            return self.store_values(specs, now)
        cache: dict[tuple, Any] = {}
        values = []
        for spec in specs:
            key = (spec.provider, spec.query, spec.metric, tuple(sorted(spec.labels.items())))
            if key not in cache:
                cache[key] = self.source_values(spec, now)
            values.append(cache[key])
        return values

    def source_values(self, spec: AnalysisSpec, now: float) -> list[float] | Exception:
        """One spec's vector from the source's own query."""
        try:
            if spec.provider == "prometheus":
                frame = self.source.instant_query(spec.query, at=utc(now))
            else:
                frame = self.source.latest(spec.metric, spec.labels, at=utc(now))
        except MetricSourceError as e:
            return e
        return [float(v) for v in frame["value"]]

    def store_values(self, specs: Sequence[AnalysisSpec], now: float) -> list[list[float] | Exception]:
        """Each spec's vector at `now` from the store's metric history, in one query: per series,
        its newest point within the lookback (StoreMetrics' rule), matched on labels as
        StoreMetrics matches them (the point's attributes, else its resource's)."""
        at = utc(now)
        names = sorted({s.metric for s in specs})
        where, params = ["name IN (SELECT unnest(?))", "time > ?", "time <= ?"], [names, at - self.source.lookback, at]
        namespaces = {s.labels.get("k8s.namespace.name") for s in specs}
        if None not in namespaces:
            where.append("namespace IN (SELECT unnest(?))")
            params.append(sorted(namespaces))
        try:
            rows = self.source.store.query(f"""
                SELECT name, series_id, any_value(kind) AS kind, arg_max(value, time) AS value,
                       any_value(attributes) AS attributes, any_value(resource_attributes) AS resource_attributes
                FROM metrics WHERE {' AND '.join(where)} GROUP BY name, series_id""", params)
        except StoreError as e:
            return [MetricSourceUnavailable(f"{self.source.where}: {e}")] * len(specs)
        by_name: dict[str, list[tuple[dict, float, str]]] = {}
        for name, series, kind, value, attrs, resource in (rows.itertuples(index=False) if not rows.empty else ()):
            labels = self._series.get(series)
            if labels is None:
                labels = self._series[series] = {**attribute_labels(resource), **attribute_labels(attrs)}
            by_name.setdefault(name, []).append((labels, value, kind))
        index: dict[tuple, dict[tuple, list]] = {}
        out: list[list[float] | Exception] = []
        for spec in specs:
            keys = tuple(sorted(spec.labels))
            table = index.get((spec.metric, keys))
            if table is None:
                table = index[(spec.metric, keys)] = {}
                for labels, value, kind in by_name.get(spec.metric, ()):
                    if all(k in labels for k in keys):
                        table.setdefault(tuple(labels[k] for k in keys), []).append((value, kind))
            found = table.get(tuple(spec.labels[k] for k in keys), [])
            bucketed = {kind for _, kind in found} & _BUCKETED
            if bucketed:
                out.append(MetricSourceError(f"{self.source.where}: {spec.metric} is a {sorted(bucketed)[0]}; an "
                                             "analysis reads gauges and sums"))
            else:
                out.append([float("nan") if v is None else float(v) for v, _ in found])
        return out
