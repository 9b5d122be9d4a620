"""What a metric source answers, whichever one it is: the store's metric history or a Prometheus.

    MetricSource.range(name, labels, start, end, step) -> DataFrame
    MetricSource.latest(name, labels, at=None)          -> DataFrame, one row per series

Names and labels are the store's: OpenTelemetry metric names (`afterfix.workload.latency_p95_ms`)
and attribute names (`{"k8s.namespace.name": "shop", "k8s.deployment.name": "payments"}`); a
source that names things otherwise (Prometheus) translates both ways, so the same call works on
either. Label values match exactly.

A range is evaluated the way Prometheus evaluates one: at `start`, `start + step`, ... up to
`end`, each series takes its newest point at or before that instant and no older than the
lookback (5 minutes); instants without one are left out. The frame has one row per series and
instant: `time` (naive UTC, as the store's tables), `value` (float), `series` (an id that is the
same for every row of one series) and one column per label of the series. No series: an empty
frame with those first three columns.

Errors (all `MetricSourceError`, an `AfterfixError`) name the source and what to do:

    MetricSourceError            the source answered something that is not a result
    ├── MetricQueryError         the query cannot be answered as asked (bad label, range, PromQL)
    └── MetricSourceUnavailable  the source cannot be reached, or gave up (timeout, overload)
"""

from __future__ import annotations

import abc
import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

import pandas as pd

from afterfix._exceptions import AfterfixError

__all__ = ["MetricSource", "MetricSourceError", "MetricQueryError", "MetricSourceUnavailable", "LOOKBACK",
           "MAX_POINTS", "COLUMNS"]

LOOKBACK = timedelta(minutes=5)  # Prometheus' default --query.lookback-delta
MAX_POINTS = 11_000  # instants per series in one range; Prometheus refuses more
COLUMNS = ["time", "value", "series"]
# Attribute names the store can match on (OpenTelemetry's are dotted words); the key is put in a
# JSON path, so anything else is refused rather than quoted.
_LABEL_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.:/-]*")

Time = datetime | pd.Timestamp | float | int | str
Step = float | int | timedelta | pd.Timedelta | str


class MetricSourceError(AfterfixError):
    """A metric source answered something that is not a result; the message names the source."""


class MetricQueryError(MetricSourceError):
    """The query cannot be answered as asked: a bad label, time range or step, or a query the
    source refused (Prometheus' 400 and 422, with its errorType and error)."""


class MetricSourceUnavailable(MetricSourceError):
    """The source cannot be reached, or it gave up on the query (a timeout, an overload)."""


class MetricSource(abc.ABC):
    """Reads metric series by name and labels over a time range (see the module docstring)."""

    #: how the source is named in errors ("Prometheus http://127.0.0.1:9090", "store /path")
    where: str = "metric source"

    @abc.abstractmethod
    def range(self, name: str, labels: Mapping[str, str] | None = None, start: Time | None = None,
              end: Time | None = None, step: Step = 60) -> pd.DataFrame:
        """The series named `name` whose labels include `labels`, evaluated every `step` from
        `start` to `end` (required; times as datetimes (naive = UTC), epoch seconds or ISO 8601;
        step as seconds, a timedelta or "1min")."""

    def latest(self, name: str, labels: Mapping[str, str] | None = None, at: Time | None = None) -> pd.DataFrame:
        """Each matching series' value at `at` (default: now): its newest point no older than the lookback."""
        at = pd.Timestamp.now(tz="UTC").tz_localize(None) if at is None else at
        return self.range(name, labels, at, at, step=1)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.where}>"

    # ---- argument checks shared by the sources ------------------------------------------------------
    def _window(self, start: Time | None, end: Time | None, step: Step) -> tuple[pd.Timestamp, pd.Timestamp, pd.Timedelta]:
        if start is None or end is None:
            raise MetricQueryError(f"{self.where}: range() needs start and end (datetimes, epoch seconds or ISO 8601)")
        t0, t1, dt = timestamp(start, self.where, "start"), timestamp(end, self.where, "end"), seconds(step, self.where)
        if t1 < t0:
            raise MetricQueryError(f"{self.where}: end {t1} is before start {t0}; swap them")
        points = math.floor((t1 - t0) / dt) + 1
        if points > MAX_POINTS:
            least = (t1 - t0) / (MAX_POINTS - 1)
            raise MetricQueryError(f"{self.where}: a step of {dt.total_seconds():g} s gives {points:,} points per series, over the "
                                   f"{MAX_POINTS:,} a range may have (Prometheus' limit); use a step of at least "
                                   f"{math.ceil(least.total_seconds())} s or a shorter range")
        return t0, t1, dt

    def _labels(self, labels: Mapping[str, str] | None) -> dict[str, str]:
        out = {}
        for key, value in (labels or {}).items():
            if not isinstance(key, str) or not _LABEL_KEY.fullmatch(key):
                raise MetricQueryError(f"{self.where}: label {key!r} is not an attribute name (letters, digits, "
                                       "'_', '.', ':', '/', '-', e.g. 'k8s.namespace.name')")
            if not isinstance(value, str):
                raise MetricQueryError(f"{self.where}: label {key}={value!r} must be a string (labels match text exactly)")
            out[key] = value
        return out


def timestamp(value: Any, where: str = "metric source", what: str = "time") -> pd.Timestamp:
    """A naive UTC Timestamp from a datetime (naive = UTC), epoch seconds or an ISO 8601 string."""
    try:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, (int, float)):
            if not math.isfinite(value):
                raise ValueError
            t = pd.Timestamp(value, unit="s", tz="UTC")
        elif isinstance(value, (str, datetime, pd.Timestamp)):
            t = pd.Timestamp(value)
            t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
        else:
            raise TypeError
    except (TypeError, ValueError, OverflowError):
        raise MetricQueryError(f"{where}: {what}={value!r} is not a time: give a datetime (naive means UTC), "
                               "epoch seconds or an ISO 8601 string like 2026-11-27T05:30:00Z") from None
    if t is pd.NaT:
        raise MetricQueryError(f"{where}: {what} is NaT; give a time")
    return t.tz_localize(None)


def seconds(step: Any, where: str = "metric source") -> pd.Timedelta:
    """A positive step from seconds, a timedelta or a pandas duration string ("30s", "1min")."""
    try:
        if isinstance(step, bool):
            raise TypeError
        dt = pd.Timedelta(seconds=step) if isinstance(step, (int, float)) else pd.Timedelta(step)
    except (TypeError, ValueError, OverflowError):
        dt = None
    if dt is None or dt is pd.NaT or dt <= pd.Timedelta(0):
        raise MetricQueryError(f"{where}: step={step!r} is not a positive duration: give seconds (60), "
                               "a timedelta or a string like '1min'")
    return dt


def empty() -> pd.DataFrame:
    """A range with no series."""
    return pd.DataFrame({"time": pd.Series(dtype="datetime64[ns]"), "value": pd.Series(dtype="float64"),
                         "series": pd.Series(dtype="object")})


def utc_seconds(t: pd.Timestamp) -> float:
    """Epoch seconds of a naive UTC Timestamp."""
    return t.replace(tzinfo=timezone.utc).timestamp()
