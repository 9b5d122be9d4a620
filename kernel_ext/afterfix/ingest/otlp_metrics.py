"""OpenTelemetry metrics in (OTLP/JSON and OTLP protobuf), rows of the `metrics` table out.

Decoders return a `MetricsDecoded`: a `Decoded` (no spans) whose `metrics` table has
`schema.METRIC_SCHEMA`, one row per data point, plus a `Refusal` for every point that cannot be
stored and `rejected_points`, the number of points refused (what OTLP's partial success counts).
A bad point refuses that point only; a bad metric, scope or resource refuses its points.

How each point becomes a row:

* gauge and sum: `value` (asDouble, or asInt as a double); `start_time` from startTimeUnixNano.
* histogram (explicit buckets) and exponential histogram: `count`, `sum`, and p50/p90/p95/p99
  estimated from the buckets as Prometheus' `histogram_quantile` does (see `quantiles`).
* summary: `count`, `sum`, and each pN from its quantile values (see `quantiles`).
* A point flagged NO_RECORDED_VALUE is stored with null value and quantiles (a staleness marker).

`namespace` and `workload` read `k8s.namespace.name` and `k8s.deployment.name` (else statefulset,
daemonset, job name): for each key in turn, the point's attributes first, then the resource's, as
`mapping` does for spans. `series_id` is the first 128 bits of the BLAKE2b hash of the canonical
JSON (sorted keys) `{"attributes": ..., "name": ..., "resource": ...}` of the redacted values,
so one series keeps one id across deliveries and processes. Names, units, attributes and
resources pass the redactor before anything is derived from them.

OTLP/JSON follows the OTLP/JSON rules (lowerCamelCase names, 64-bit integers as decimal strings
or numbers, doubles as numbers or "NaN"/"Infinity"/"-Infinity", unknown fields ignored); the
walk is plain Python over orjson's objects. Protobuf is parsed by opentelemetry-proto (upb).
`decode_lines` reads OTLP/JSON files whose lines mix trace and metric records, told apart by
their top-level key (`resourceSpans` or `resourceMetrics`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

import orjson
import pyarrow as pa
from google.protobuf.message import DecodeError as _PbDecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from .. import schema
from .._exceptions import DecodeError
from . import mapping, otlp
from .otlp_json import _json_attrs
from .otlp_proto import _pb_attrs
from .quantiles import QUANTILES, exponential, histogram, summary
from .redact import DEFAULT, Redactor
from .rows import RECORD_MAX, Bad, Decoded, Limits, Rows, _FLOAT_WORDS, _U64, _I64, _kind, _reparse, _show, paused_gc

__all__ = ["MetricsDecoded", "decode_json_body", "decode_protobuf", "decode_lines"]

NO_RECORDED_VALUE = 1  # DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
_WORKLOAD_KEYS = ("k8s.deployment.name", "k8s.statefulset.name", "k8s.daemonset.name", "k8s.job.name")
_NAMESPACE = "k8s.namespace.name"
_KINDS = {"gauge": "gauge", "sum": "sum", "histogram": "histogram", "exponentialHistogram": "exponential_histogram",
          "summary": "summary"}  # fmt: skip


@dataclass
class MetricsDecoded(Decoded):
    """`Decoded` with the `metrics` rows, and how many data points were refused."""

    metrics: pa.Table | None = None
    rejected_points: int = 0

    def __post_init__(self) -> None:
        if self.metrics is None:
            self.metrics = schema.METRIC_SCHEMA.empty_table()

    @staticmethod
    def concat(parts: list) -> "MetricsDecoded":
        """One `MetricsDecoded` from parts that are `MetricsDecoded` or plain (trace) `Decoded`."""
        parts = list(parts)
        traces = Decoded.concat(parts)
        metrics = [p.metrics for p in parts if getattr(p, "metrics", None) is not None]
        return MetricsDecoded(traces.spans, traces.events, traces.refused, traces.redactions,
                              pa.concat_tables(metrics) if metrics else None,
                              sum(getattr(p, "rejected_points", 0) for p in parts))  # fmt: skip


# -- the rows of one decode call -----------------------------------------------------------------


class _Points:
    """Metric rows of one decode call: appended as points are read, redacted and finished at once."""

    def __init__(self, rows: Rows):
        self.rows = rows
        self.cols: list[list] = [[] for _ in range(14)]
        self.rejected = 0

    def add(self, name, kind, unit, t, start, value, count, total, quantiles, service, attrs, res_json, res, scope) -> None:
        c = self.cols
        for col, v in zip(c, (name, kind, unit, t, start or None, value, count, total, quantiles, service, attrs,
                              res_json, res, scope)):  # fmt: skip
            col.append(v)

    def refuse(self, where: str, reason: str, record, points: int = 1) -> None:
        self.rows.refuse(where, reason, record)
        self.rejected += points

    def mark(self) -> tuple:
        return len(self.cols[0]), self.rows.mark(), self.rejected

    def rollback(self, mark: tuple) -> None:
        for col in self.cols:
            del col[mark[0]:]
        self.rows.rollback(mark[1])
        self.rejected = mark[2]

    def finish(self) -> MetricsDecoded:
        rows = self.rows
        names, kinds, units, times, starts, values, counts, sums, qs, services, attrs, res_jsons, ress, scopes = self.cols
        n = len(names)
        attr_json = [orjson.dumps(a).decode() for a in attrs]
        if rows.redactor is not None and n:
            for col in (names, units):
                rows.redactions += rows.redactor.redact_many(col)[0]
            orig = attr_json[:]
            got, changed = rows.redactor.redact_many(attr_json)
            rows.redactions += got
            for i in changed:
                attrs[i] = _reparse(attr_json, i, orig[i], rows.redactor)
        namespaces, workloads, series = [], [], []
        canon: dict[str, bytes] = {}  # canonical JSON of each resource, by its stored text
        for i in range(n):
            a, r = attrs[i], ress[i]
            namespaces.append(_first((_NAMESPACE,), a, r))
            workloads.append(_first(_WORKLOAD_KEYS, a, r))
            rc = canon.get(res_jsons[i])
            if rc is None:
                rc = canon[res_jsons[i]] = orjson.dumps(r, option=orjson.OPT_SORT_KEYS)
            text = (b'{"attributes":' + orjson.dumps(a, option=orjson.OPT_SORT_KEYS) + b',"name":' + orjson.dumps(names[i])
                    + b',"resource":' + rc + b"}")  # fmt: skip
            series.append(hashlib.blake2b(text, digest_size=16).hexdigest())
        ts = pa.timestamp("us")
        table = pa.Table.from_arrays(
            [pa.array(names, pa.string()), pa.array(kinds, pa.string()), pa.array(units, pa.string()),
             pa.array(times, ts), pa.array(starts, ts), pa.array(values, pa.float64()),
             pa.array(counts, pa.int64()), pa.array(sums, pa.float64())]
            + [pa.array([x[k] if x else None for x in qs], pa.float64()) for k in range(len(QUANTILES))]
            + [pa.array(services, pa.string()), pa.array(namespaces, pa.string()), pa.array(workloads, pa.string()),
               pa.array(series, pa.string()), pa.array(attr_json, pa.string()), pa.array(res_jsons, pa.string()),
               pa.array(scopes, pa.string()), pa.repeat(pa.scalar(rows.source, pa.string()), n),
               pa.repeat(pa.scalar(rows.ingested_at, ts), n)],
            schema=schema.METRIC_SCHEMA,
        )  # fmt: skip
        return MetricsDecoded(schema.empty("spans"), schema.empty("events"), rows.refused, rows.redactions, table,
                              self.rejected)


def _first(keys, attrs: dict, res: dict) -> str | None:
    for k in keys:
        for src in (attrs, res):
            v = mapping.as_text(src.get(k))
            if v is not None:
                return v
    return None


def _metric_shown(name, redactor: Redactor | None) -> str:
    """A metric's name as a location shows it: quoted, redacted, cut short."""
    text = name if isinstance(name, str) else ""
    if redactor is not None:
        text = redactor.redact(text)[0]
    return _show(text, 60)


def _time(t: int) -> int:
    if not t:
        raise Bad("timeUnixNano is missing or 0; every data point needs its time")
    return t // 1000


# -- OTLP/JSON ----------------------------------------------------------------------------------


def _j_u64(v, where: str, default: int | None = 0) -> int | None:
    if v is None:
        return default
    n = int(v) if v.__class__ is str and v.isascii() and v.isdigit() else v
    if n.__class__ is not int or not 0 <= n < _U64:
        raise Bad(f"{where} is {_show(v)}, not an unsigned 64-bit integer (write it as a decimal string)")
    return n


def _j_i64(v, where: str) -> int:
    x = v
    if x.__class__ is str and x.isascii() and (x.isdigit() or (x[:1] == "-" and x[1:].isdigit())):
        x = int(x)
    if x.__class__ is not int or not -_I64 <= x < _I64:
        raise Bad(f"{where} is {_show(v)}, not a 64-bit integer (write it as a decimal string)")
    return x


def _j_f64(v, where: str, default: float | None = None) -> float | None:
    if v is None:
        return default
    if v.__class__ is float:
        return v
    if v.__class__ is int:
        return float(v)
    if v.__class__ is str and v in _FLOAT_WORDS:
        return _FLOAT_WORDS[v]
    raise Bad(f'{where} is {_show(v)}, not a number (or "NaN", "Infinity", "-Infinity")')


def _j_list(v, where: str) -> list:
    if v is None:
        return []
    if v.__class__ is not list:
        raise Bad(f"{where} is {_kind(v)}, not a list")
    return v


def _j_buckets(b, where: str) -> tuple[int, list[int]]:
    if b is None:
        return 0, []
    if b.__class__ is not dict:
        raise Bad(f"{where} is {_kind(b)}, not an object")
    off = b.get("offset", 0)
    if off.__class__ is not int:
        raise Bad(f"{where}.offset is {_show(off)}, not an integer")
    return off, [_j_u64(c, f"{where}.bucketCounts[{i}]") for i, c in enumerate(_j_list(b.get("bucketCounts"), f"{where}.bucketCounts"))]


def _j_point(kind: str, p, lim: Limits) -> tuple:
    """(attrs, time, start, value, count, sum, quantiles) of one OTLP/JSON data point."""
    if p.__class__ is not dict:
        raise Bad(f"the data point is {_kind(p)}, not an object")
    g = p.get
    attrs = _json_attrs(g("attributes"), lim, "attributes")
    t = _time(_j_u64(g("timeUnixNano"), "timeUnixNano"))
    start = _j_u64(g("startTimeUnixNano"), "startTimeUnixNano") // 1000
    flags = g("flags", 0)
    if flags.__class__ is not int:
        raise Bad(f"flags is {_show(flags)}, not an integer")
    empty_ = bool(flags & NO_RECORDED_VALUE)
    value = count = total = qs = None
    if kind in ("gauge", "sum"):
        if "asDouble" in p:
            value = _j_f64(g("asDouble"), "asDouble")
        elif "asInt" in p:
            value = float(_j_i64(g("asInt"), "asInt"))
        elif not empty_:
            raise Bad("the data point has neither asDouble nor asInt (nor the NO_RECORDED_VALUE flag)")
        return attrs, t, start, None if empty_ else value, None, None, None
    count = _j_u64(g("count"), "count")
    total = _j_f64(g("sum"), "sum", 0.0 if kind == "summary" else None)  # optional in histograms only
    if kind == "summary":
        pairs = []
        for i, qv in enumerate(_j_list(g("quantileValues"), "quantileValues")):
            if qv.__class__ is not dict:
                raise Bad(f"quantileValues[{i}] is {_kind(qv)}, not an object")
            pairs.append((_j_f64(qv.get("quantile"), f"quantileValues[{i}].quantile", 0.0),
                          _j_f64(qv.get("value"), f"quantileValues[{i}].value", 0.0)))  # fmt: skip
        qs = summary(pairs)
    else:
        lo, hi = _j_f64(g("min"), "min"), _j_f64(g("max"), "max")
        if kind == "histogram":
            bounds = [_j_f64(b, f"explicitBounds[{i}]") for i, b in enumerate(_j_list(g("explicitBounds"), "explicitBounds"))]
            counts = [_j_u64(c, f"bucketCounts[{i}]") for i, c in enumerate(_j_list(g("bucketCounts"), "bucketCounts"))]
            qs = histogram(count, bounds, counts, lo, hi)
        else:
            scale = g("scale", 0)
            if scale.__class__ is not int:
                raise Bad(f"scale is {_show(scale)}, not an integer")
            qs = exponential(count, scale, _j_u64(g("zeroCount"), "zeroCount"), _j_f64(g("zeroThreshold"), "zeroThreshold", 0.0),
                              _j_buckets(g("positive"), "positive"), _j_buckets(g("negative"), "negative"), lo, hi)  # fmt: skip
    return attrs, t, start, None, count, total, None if empty_ else qs


def walk_json(obj, pts: _Points, at: str) -> None:
    """Every data point of one ExportMetricsServiceRequest / MetricsData object; `at` prefixes
    locations. A record that is not one raises `Bad`."""
    rows, lim = pts.rows, pts.rows.limits
    if obj.__class__ is not dict:
        raise Bad(f'the record is {_kind(obj)}, not an OTLP/JSON object {{"resourceMetrics": [...]}}')
    rms = obj.get("resourceMetrics")
    if rms is None:
        if "resourceSpans" in obj:
            raise Bad("the record has resourceSpans, not resourceMetrics: send traces to /v1/traces")
        if "resource_metrics" in obj:
            raise Bad("the record has resource_metrics, not resourceMetrics (keys are lowerCamelCase in OTLP/JSON)")
        if obj:
            raise Bad(f"the record has no resourceMetrics (keys: {', '.join(list(obj)[:5])})")
        return
    if rms.__class__ is not list:
        raise Bad(f"resourceMetrics is {_kind(rms)}, not a list")
    for ri, rm in enumerate(rms):
        here = f"resourceMetrics[{ri}]"
        try:
            if rm.__class__ is not dict:
                raise Bad(f"{here} is {_kind(rm)}, not an object")
            r = rm.get("resource") or {}
            if r.__class__ is not dict:
                raise Bad(f"resource is {_kind(r)}, not an object")
            res_json, res, service = rows.resource(_json_attrs(r.get("attributes"), lim, "resource.attributes"))
            sms = _j_list(rm.get("scopeMetrics"), "scopeMetrics")
        except Bad as e:
            pts.refuse(f"{at}{here}", f"{e.args[0]}; none of this resource's points were stored", rm, _j_count(rm))
            continue
        for si, sm in enumerate(sms):
            where = f"{here}.scopeMetrics[{si}]"
            try:
                if sm.__class__ is not dict:
                    raise Bad(f"{where} is {_kind(sm)}, not an object")
                sc = sm.get("scope") or {}
                if sc.__class__ is not dict:
                    raise Bad(f"scope is {_kind(sc)}, not an object")
                sname = sc.get("name")
                if sname is not None and sname.__class__ is not str:
                    raise Bad(f"scope.name is {_kind(sname)}, not a string")
                scope = rows.scope(sname)
                metrics = _j_list(sm.get("metrics"), "metrics")
            except Bad as e:
                pts.refuse(f"{at}{where}", f"{e.args[0]}; none of this scope's points were stored", sm, _j_count(sm))
                continue
            for mi, m in enumerate(metrics):
                mwhere = f"{at}{where}.metrics[{mi}]"
                _j_metric(m, pts, mwhere, res_json, res, service, scope)


def _j_count(obj) -> int:
    """How many data points a refused JSON record held (as far as it can be told)."""
    if obj.__class__ is list:
        return sum(_j_count(x) for x in obj)
    if obj.__class__ is not dict:
        return 0
    if "dataPoints" in obj and obj["dataPoints"].__class__ is list:
        return len(obj["dataPoints"])
    return sum(_j_count(v) for k, v in obj.items() if k in ("scopeMetrics", "metrics", *_KINDS))


def _j_metric(m, pts: _Points, mwhere: str, res_json, res, service, scope) -> None:
    rows, lim = pts.rows, pts.rows.limits
    try:
        if m.__class__ is not dict:
            raise Bad(f"the metric is {_kind(m)}, not an object")
        name, unit = m.get("name"), m.get("unit") or None
        mwhere = f"{mwhere} {_metric_shown(name, rows.redactor)}"
        if name.__class__ is not str or not name:
            raise Bad(f"name is {_show(name)}; every metric needs a name")
        if unit is not None and unit.__class__ is not str:
            raise Bad(f"unit is {_kind(unit)}, not a string")
        found = [k for k in _KINDS if k in m and m[k] is not None]
        if len(found) != 1:
            raise Bad("the metric has " + ("none of gauge, sum, histogram, exponentialHistogram, summary" if not found
                                           else f"more than one kind of data ({', '.join(found)})"))  # fmt: skip
        field = found[0]
        data = m[field]
        if data.__class__ is not dict:
            raise Bad(f"{field} is {_kind(data)}, not an object")
        points = _j_list(data.get("dataPoints"), f"{field}.dataPoints")
    except Bad as e:
        pts.refuse(mwhere, f"{e.args[0]}; none of this metric's points were stored", m, _j_count(m))
        return
    kind = _KINDS[field]
    for pi, p in enumerate(points):
        try:
            attrs, t, start, value, count, total, qs = _j_point(kind, p, lim)
        except Bad as e:
            pts.refuse(f"{mwhere}, {field}.dataPoints[{pi}]", e.args[0], p)
            continue
        pts.add(name, kind, unit, t, start, value, count, total, qs, service, attrs, res_json, res, scope)


# -- protobuf ---------------------------------------------------------------------------------


def _pb_point(kind: str, p, lim: Limits) -> tuple:
    attrs = _pb_attrs(p.attributes, lim, "attributes")
    t = _time(p.time_unix_nano)
    start = p.start_time_unix_nano // 1000
    empty_ = bool(p.flags & NO_RECORDED_VALUE)
    if kind in ("gauge", "sum"):
        w = p.WhichOneof("value")
        if w is None and not empty_:
            raise Bad("the data point has neither as_double nor as_int (nor the NO_RECORDED_VALUE flag)")
        value = None if empty_ or w is None else float(getattr(p, w))
        return attrs, t, start, value, None, None, None
    total = p.sum if kind == "summary" or p.HasField("sum") else None
    if kind == "summary":
        qs = summary([(q.quantile, q.value) for q in p.quantile_values])
    else:
        lo = p.min if p.HasField("min") else None
        hi = p.max if p.HasField("max") else None
        if kind == "histogram":
            qs = histogram(p.count, list(p.explicit_bounds), list(p.bucket_counts), lo, hi)
        else:
            qs = exponential(p.count, p.scale, p.zero_count, p.zero_threshold, (p.positive.offset, list(p.positive.bucket_counts)),
                              (p.negative.offset, list(p.negative.bucket_counts)), lo, hi)  # fmt: skip
    return attrs, t, start, None, p.count, total, None if empty_ else qs


_PB_FIELDS = {"gauge": "gauge", "sum": "sum", "histogram": "histogram", "exponential_histogram": "exponential_histogram",
              "summary": "summary"}  # fmt: skip


def walk_protobuf(req: ExportMetricsServiceRequest, pts: _Points, at: str) -> None:
    """Every data point of one parsed ExportMetricsServiceRequest; `at` prefixes locations."""
    rows, lim = pts.rows, pts.rows.limits
    for ri, rm in enumerate(req.resource_metrics):
        here = f"resource_metrics[{ri}]"
        try:
            res_json, res, service = rows.resource(_pb_attrs(rm.resource.attributes, lim, "resource.attributes"))
        except Bad as e:
            n = sum(len(getattr(m, m.WhichOneof("data")).data_points) for sm in rm.scope_metrics for m in sm.metrics
                    if m.WhichOneof("data"))  # fmt: skip
            pts.refuse(f"{at}{here}", f"{e.args[0]}; none of this resource's points were stored", str(rm), n)
            continue
        for si, sm in enumerate(rm.scope_metrics):
            scope = rows.scope(sm.scope.name)
            for mi, m in enumerate(sm.metrics):
                mwhere = f"{at}{here}.scope_metrics[{si}].metrics[{mi}] {_metric_shown(m.name, rows.redactor)}"
                field = m.WhichOneof("data")
                points = getattr(m, field).data_points if field else ()
                if not m.name or field is None:
                    reason = "every metric needs a name" if not m.name else \
                        "the metric has none of gauge, sum, histogram, exponential_histogram, summary"
                    pts.refuse(mwhere, f"{reason}; none of this metric's points were stored", str(m), len(points))
                    continue
                kind, unit = _PB_FIELDS[field], m.unit or None
                for pi, p in enumerate(points):
                    try:
                        attrs, t, start, value, count, total, qs = _pb_point(kind, p, lim)
                    except Bad as e:
                        pts.refuse(f"{mwhere}, {field}.data_points[{pi}]", e.args[0], str(p))
                        continue
                    pts.add(m.name, kind, unit, t, start, value, count, total, qs, service, attrs, res_json, res, scope)


# -- entry points -----------------------------------------------------------------------------


def _start(source: str, limits: Limits, redactor, ingested_at) -> _Points:
    return _Points(Rows(source, limits, redactor, ingested_at))


def _request_at(request: int | None) -> tuple[str, str]:
    return ("request", "") if request is None else (f"request {request}", f"request {request}, ")


def _check_size(body, name: str, limits: Limits) -> None:
    if len(body) > limits.max_body_bytes:
        raise DecodeError(f"{name}: body is {len(body)} bytes, over the limit of {limits.max_body_bytes}; "
                          "send smaller batches", status=413)  # fmt: skip


def decode_json_body(body: bytes, *, source: str = "otlp-http", request: int | None = None, limits: Limits = Limits(),
                     redactor: Redactor | None = DEFAULT, ingested_at: datetime | None = None) -> MetricsDecoded:  # fmt: skip
    """One ExportMetricsServiceRequest as OTLP/JSON (an HTTP body). A body that is not one at all
    raises `DecodeError` (HTTP 400, or 413 over `max_body_bytes`); bad points are refused."""
    name, at = _request_at(request)
    _check_size(body, name, limits)
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise DecodeError(f"{name}: {otlp._json_error(bytes(body), e, 'body')}; send OTLP/JSON "
                          "(an ExportMetricsServiceRequest) or application/x-protobuf") from None  # fmt: skip
    pts = _start(source, limits, redactor, ingested_at)
    with paused_gc():
        try:
            walk_json(obj, pts, at)
        except Bad as e:
            raise DecodeError(f"{name}: {e.args[0]}") from None
        return pts.finish()


def decode_protobuf(body: bytes, *, source: str = "otlp-http", request: int | None = None, limits: Limits = Limits(),
                    redactor: Redactor | None = DEFAULT, ingested_at: datetime | None = None) -> MetricsDecoded:  # fmt: skip
    """One ExportMetricsServiceRequest in binary protobuf. Garbage or a truncated body raises
    `DecodeError` (HTTP 400, or 413 over `max_body_bytes`); bad points are refused."""
    name, at = _request_at(request)
    _check_size(body, name, limits)
    req = ExportMetricsServiceRequest()
    try:
        req.ParseFromString(body)
    except _PbDecodeError as e:
        raise DecodeError(f"{name}: not an OTLP ExportMetricsServiceRequest in protobuf ({e}); "
                          "check the Content-Type (application/x-protobuf or application/json)") from None  # fmt: skip
    pts = _start(source, limits, redactor, ingested_at)
    with paused_gc():
        walk_protobuf(req, pts, at)
        return pts.finish()


_MARK = b'"resourceMetrics"'


def decode_lines(data: bytes, *, source: str, first_line: int = 1, limits: Limits = Limits(),
                 redactor: Redactor | None = DEFAULT, ingested_at: datetime | None = None,
                 traces: Callable[..., Decoded] | None = None) -> MetricsDecoded:  # fmt: skip
    """OTLP/JSON lines of traces and metrics: a line whose object has `resourceMetrics` (and no
    `resourceSpans`) is an ExportMetricsServiceRequest / MetricsData, every other line goes to
    the trace decoder (`traces`, by default `otlp.decode_json_lines`) with its line number kept.
    A chunk without the word resourceMetrics costs nothing more than the trace decoder alone.
    """
    traces = traces or otlp.decode_json_lines
    kw: dict[str, Any] = {"source": source, "limits": limits, "redactor": redactor, "ingested_at": ingested_at}
    data = bytes(data) if not isinstance(data, str) else data.encode()
    if _MARK not in data:
        return MetricsDecoded.concat([traces(data, first_line=first_line, **kw)])
    if first_line == 1 and data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.split(b"\n")
    pts = _start(source, limits, redactor, ingested_at)
    taken = False
    with paused_gc():
        for i, line in enumerate(lines):
            if _MARK not in line:
                continue
            where = f"line {first_line + i}"
            if len(line) > limits.max_body_bytes:
                continue  # the trace decoder refuses it with the limit's name
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                if not line.lstrip().startswith(b"{" + _MARK):
                    continue  # a trace line, or not JSON: the trace decoder says what is wrong
                pts.refuse(where, otlp._json_error(line, e, "line") + "; each line must be one OTLP/JSON "
                           "MetricsData or TracesData", line[:RECORD_MAX], points=0)  # fmt: skip
            else:
                if obj.__class__ is not dict or "resourceMetrics" not in obj or "resourceSpans" in obj:
                    continue  # a trace line mentioning the word: the trace decoder's
                mark = pts.mark()
                try:
                    walk_json(obj, pts, where + ", ")
                except Bad as e:
                    pts.rollback(mark)
                    pts.refuse(where, e.args[0], line, points=0)
            lines[i] = b""  # the trace decoder skips it, and the line numbers after it stay right
            taken = True
        metrics = pts.finish()
    rest = b"\n".join(lines) if taken else data
    return MetricsDecoded.concat([traces(rest, first_line=first_line, **kw), metrics])
