"""A Prometheus server as a `MetricSource`, through its HTTP API (`GET /api/v1/query_range`, and
`GET /api/v1/query` for a PromQL expression at one instant).

The store's names become Prometheus names by one rule, the one the simulator's `/metrics`
follows (docs/metrics.md):

- metric: every character outside `[a-zA-Z0-9_:]` becomes `_`
  (`afterfix.workload.latency_p95_ms` -> `afterfix_workload_latency_p95_ms`); counters end in
  `_total` (`afterfix.workload.restarts` -> `afterfix_workload_restarts_total`). `names=`
  maps other store names to the names a Prometheus really has.
- labels: `k8s.namespace.name` -> `namespace`, `k8s.deployment.name` -> `deployment`, any other
  attribute likewise with `_` for what a label name cannot hold (`k8s.pod.name` ->
  `k8s_pod_name`); `labels=` adds or overrides. Result labels come back under the names asked
  for; labels the scrape added (`job`, `instance`) keep their own.

A selector is built from those names with each label value escaped as a PromQL string: values
are text to match, never PromQL. Prometheus' refusals (400 bad_data, 422 execution) come back as
`MetricQueryError` with its errorType and error; 503 (timeout, abort) and an unreachable server
as `MetricSourceUnavailable`.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Mapping

import pandas as pd

from afterfix.metrics.source import (COLUMNS, MetricQueryError, MetricSource, MetricSourceError, MetricSourceUnavailable, Step,
                                     Time, empty, timestamp, utc_seconds)

__all__ = ["PrometheusMetrics", "NAMES", "LABELS", "prometheus_name", "prometheus_label", "promql_string",
           "selector"]

# Store names whose Prometheus name is not the plain rule's: the cumulative sums (counters).
NAMES: dict[str, str] = {"afterfix.workload.restarts": "afterfix_workload_restarts_total"}
# Attribute -> label, as kube-state-metrics and the simulator name them.
LABELS: dict[str, str] = {"k8s.namespace.name": "namespace", "k8s.deployment.name": "deployment"}
_NOT_NAME = re.compile(r"[^a-zA-Z0-9_:]")
_NOT_LABEL = re.compile(r"[^a-zA-Z0-9_]")
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def prometheus_name(name: str, names: Mapping[str, str] | None = None) -> str:
    """The Prometheus metric name for a store metric name (see the module docstring)."""
    mapped = {**NAMES, **(names or {})}.get(name)
    if mapped is None:
        mapped = _NOT_NAME.sub("_", name)
        if mapped[:1].isdigit():
            mapped = "_" + mapped
    return mapped


def prometheus_label(key: str, labels: Mapping[str, str] | None = None) -> str:
    """The Prometheus label name for an attribute name (see the module docstring)."""
    mapped = {**LABELS, **(labels or {})}.get(key)
    if mapped is None:
        mapped = _NOT_LABEL.sub("_", key)
        if mapped[:1].isdigit():
            mapped = "_" + mapped
    return mapped


def promql_string(value: str) -> str:
    """`value` as a double-quoted PromQL string literal that means exactly `value`."""
    out = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def selector(metric: str, labels: Mapping[str, str]) -> str:
    """`metric{label="value",...}`: names checked, values escaped."""
    if not _NAME.fullmatch(metric):
        raise MetricQueryError(f"{metric!r} is not a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)")
    parts = []
    for label, value in labels.items():
        if not _LABEL.fullmatch(label) or label.startswith("__"):
            raise MetricQueryError(f"{label!r} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, "
                                   "not starting with __)")
        parts.append(f"{label}={promql_string(value)}")
    return metric + ("{" + ",".join(parts) + "}" if parts else "")


class PrometheusMetrics(MetricSource):
    """Metric series from the Prometheus at `url` (e.g. http://127.0.0.1:9090)."""

    def __init__(self, url: str, *, names: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None,
                 headers: Mapping[str, str] | None = None, timeout_s: float = 30.0):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise MetricQueryError(f"PrometheusMetrics({url!r}): give the server's http(s) URL, e.g. http://127.0.0.1:9090")
        self.url = url.rstrip("/")
        self.names, self.label_names = dict(names or {}), dict(labels or {})
        self.headers = {"Accept": "application/json", **dict(headers or {})}
        self.timeout_s = timeout_s
        self.where = f"Prometheus {self.url}"

    def query(self, name: str, labels: Mapping[str, str] | None = None) -> str:
        """The PromQL selector `range()` sends for `name` and `labels`."""
        if not isinstance(name, str) or not name:
            raise MetricQueryError(f"{self.where}: name={name!r}: give a metric name like 'afterfix.workload.latency_p95_ms'")
        labels = self._labels(labels)
        try:
            return selector(prometheus_name(name, self.names),
                            {prometheus_label(k, self.label_names): v for k, v in labels.items()})
        except MetricQueryError as e:
            raise MetricQueryError(f"{self.where}: {e} (from {name!r}); map it with names= or labels=") from None

    def range(self, name: str, labels: Mapping[str, str] | None = None, start: Time | None = None,
              end: Time | None = None, step: Step = 60) -> pd.DataFrame:
        expr = self.query(name, labels)
        back = {prometheus_label(k, self.label_names): k for k in (labels or {})}
        return self.range_query(expr, start, end, step, _back=back)

    def range_query(self, expr: str, start: Time | None = None, end: Time | None = None, step: Step = 60,
                    *, _back: Mapping[str, str] | None = None) -> pd.DataFrame:
        """A PromQL expression you wrote (`rate(...)`, `histogram_quantile(...)`), evaluated like
        `range()`. Build any part that comes from data with `selector()` or `promql_string()`."""
        t0, t1, dt = self._window(start, end, step)
        data = self._get("/api/v1/query_range", {"query": expr, "start": _number(utc_seconds(t0)),
                                                 "end": _number(utc_seconds(t1)), "step": _number(dt.total_seconds())})
        if data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
            raise MetricSourceError(f"{self.where}: query_range for {expr} answered resultType "
                                    f"{data.get('resultType')!r}, not a matrix")
        return self._frame(data["result"], expr, data, _back or {})

    def _frame(self, result: list, expr: str, data: dict, _back: Mapping[str, str]) -> pd.DataFrame:
        """Series of [time, "number"] pairs as the frame `range()` returns."""
        back = {v: k for k, v in {**LABELS, **self.label_names}.items()}
        back.update(_back)
        frames = []
        for item in result:
            metric, values = item.get("metric") or {}, item.get("values") or []
            if not values:
                continue
            series_labels = {back.get(k, k): str(v) for k, v in metric.items() if k != "__name__"}
            series_labels = {k: v for k, v in series_labels.items() if k not in COLUMNS}
            series = ",".join(f"{k}={v}" for k, v in sorted(metric.items()))
            try:
                times = pd.to_datetime([float(t) for t, _ in values], unit="s").astype("datetime64[ns]").round("ms")
                numbers = [float(v) for _, v in values]
            except (TypeError, ValueError) as e:
                raise MetricSourceError(f"{self.where}: the query for {expr} answered values that are not "
                                        f"[time, \"number\"] pairs ({e})") from None
            frames.append(pd.DataFrame({"time": times, "value": numbers, "series": series, **series_labels}))
        if not frames:
            return empty()
        out = pd.concat(frames, ignore_index=True)
        out = out[[*COLUMNS, *sorted(c for c in out.columns if c not in COLUMNS)]]
        out.attrs["warnings"] = list(data.get("_warnings") or [])
        return out

    def instant_query(self, expr: str, at: Time | None = None) -> pd.DataFrame:
        """A PromQL expression you wrote, evaluated at one instant (`at`, default: Prometheus'
        now) by `GET /api/v1/query`: one row per series of the vector, the columns of `range()`
        (a scalar is one row whose `series` is ""). Build any part that comes from data with
        `selector()` or `promql_string()`."""
        params = {"query": expr}
        if at is not None:
            params["time"] = _number(utc_seconds(timestamp(at, self.where, "at")))
        data = self._get("/api/v1/query", params)
        kind, result = data.get("resultType"), data.get("result")
        if kind == "scalar" and isinstance(result, list) and len(result) == 2:
            result = [{"metric": {}, "value": result}]
        elif kind != "vector" or not isinstance(result, list):
            raise MetricSourceError(f"{self.where}: query for {expr} answered resultType {kind!r}, not a vector "
                                    "or a scalar; an instant query of a range selector ([5m]) needs a function "
                                    "around it, e.g. max_over_time(...[5m])")
        return self._frame([{"metric": item.get("metric") or {}, "values": [item["value"]]} for item in result
                            if isinstance(item, dict) and item.get("value")], expr, data, {})

    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        query = params.get("query", "")
        request = urllib.request.Request(url, headers=self.headers, method="GET")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise MetricSourceUnavailable(f"{self.where}: cannot reach it ({reason}); is Prometheus running "
                                          f"there? ({self.url}/-/ready answers when it is)") from None
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or answer.get("status") not in ("success", "error"):
            snippet = body[:200].decode("utf-8", "replace").strip()
            raise MetricSourceUnavailable(f"{self.where}: GET {path} answered HTTP {status} without a Prometheus "
                                          f"API response ({snippet!r}); is {self.url} the Prometheus server's "
                                          "URL (no /api/v1 on the end)?")
        if answer["status"] == "error" or status >= 400:
            kind, error = answer.get("errorType") or "error", answer.get("error") or f"HTTP {status}"
            what = f"{self.where} refused {query} (HTTP {status} {kind}): {error}"
            if status == 503 or kind in ("timeout", "canceled", "unavailable"):
                raise MetricSourceUnavailable(what + "; try a shorter range or a larger step")
            raise MetricQueryError(what)
        data = answer.get("data")
        if not isinstance(data, dict):
            raise MetricSourceError(f"{self.where}: GET {path} answered success without data")
        return {**data, "_warnings": answer.get("warnings") or []}


def _number(x: float) -> str:
    return repr(round(x, 3))
