"""OTLP/JSON (one TracesData or ExportTraceServiceRequest object) onto rows, following the
OTLP/JSON rules: hex ids, 64-bit integers as decimal strings or numbers, enums as integers,
AnyValue as one of stringValue, boolValue, intValue, doubleValue, arrayValue, kvlistValue,
bytesValue (kept as its base64 text), unknown fields ignored.

Two paths give the same rows. `walk_fast` reads a line that msgspec decoded into the typed
structs below, which accept only well-formed shapes; it stores nothing of a line that has
anything unusual (it raises `Unusual`, and the caller rolls the line back). `walk` then reads
the line as orjson parsed it, carefully: it names the field and the fix when it refuses, and
refuses a span, a scope or a resource alone. Only the careful path decides what is refused.
"""

from __future__ import annotations

import msgspec
import orjson
from msgspec import UNSET, UnsetType

from . import mapping
from .rows import (
    Bad, Limits, Rows, _FLOAT_WORDS, _HEX, _I64, _JSON_KINDS, _JSON_STATUS, _U64, _Z16, _Z32,
    _kind, _show, _sized, _too_big, _too_deep, _too_many,
)  # fmt: skip


def _json_attrs(raw, lim: Limits, where: str) -> dict:
    """A list of OTLP/JSON KeyValues as a dict of Python values."""
    if raw.__class__ is not list:
        if raw is None:
            return {}
        raise Bad(f'{where} is {_kind(raw)}, not a list of {{"key": ..., "value": ...}} objects')
    if len(raw) > lim.max_attributes:
        raise _too_many(where, len(raw), lim)
    out = {}
    small = lim.max_attribute_bytes >> 2
    try:  # the common shapes without a call; anything else through _json_value
        for kv in raw:
            k = kv["key"]
            v = kv["value"]
            if "stringValue" in v:
                x = v["stringValue"]
                if x.__class__ is str and len(x) <= small and k.__class__ is str:
                    out[k] = x
                    continue
            elif "intValue" in v:
                x = v["intValue"]
                if x.__class__ is str and len(x) < 19 and x.isdigit() and x.isascii() and k.__class__ is str:
                    out[k] = int(x)
                    continue
            if k.__class__ is not str:
                raise KeyError(k)
            out[k] = _json_value(v, lim, 0, f'{where}["{k}"]')
        return out
    except (KeyError, TypeError):
        return _json_attrs_careful(raw, lim, where)


def _json_attrs_careful(raw: list, lim: Limits, where: str) -> dict:
    """`_json_attrs` for entries of unusual shape: accepts a missing value, names a bad entry."""
    out = {}
    for i, kv in enumerate(raw):
        if kv.__class__ is not dict or kv.get("key").__class__ is not str:
            raise Bad(f'{where}[{i}] is {_show(kv)}; each attribute must be {{"key": string, "value": AnyValue}}')
        out[kv["key"]] = _json_value(kv.get("value"), lim, 0, f'{where}["{kv["key"]}"]')
    return out


def _json_value(v, lim: Limits, depth: int, where: str):
    """One OTLP/JSON AnyValue as a Python value (bytes stay base64 text)."""
    if v is None:
        return None
    if v.__class__ is not dict:
        raise Bad(f'{where} is {_show(v)}, not an AnyValue object such as {{"stringValue": "..."}}')
    if "stringValue" in v:
        x = v["stringValue"]
        if x.__class__ is not str:
            raise Bad(f"{where}.stringValue is {_kind(x)}, not a string")
        return _sized(x, where, lim)
    if "boolValue" in v:
        x = v["boolValue"]
        if x.__class__ is not bool:
            raise Bad(f"{where}.boolValue is {_show(x)}, not true or false")
        return x
    if "intValue" in v:
        x = v["intValue"]
        if x.__class__ is str and x.isascii() and (x.isdigit() or (x[:1] == "-" and x[1:].isdigit())):
            x = int(x)
        if x.__class__ is not int or not -_I64 <= x < _I64:
            raise Bad(f"{where}.intValue is {_show(x)}, not a 64-bit integer (write it as a decimal string)")
        return x
    if "doubleValue" in v:
        x = v["doubleValue"]
        if x.__class__ is float:
            return x
        if x.__class__ is int:
            return float(x)
        if x.__class__ is str and x in _FLOAT_WORDS:
            return _FLOAT_WORDS[x]
        raise Bad(f'{where}.doubleValue is {_show(x)}, not a number (or "NaN", "Infinity", "-Infinity")')
    if "bytesValue" in v:
        x = v["bytesValue"]
        if x.__class__ is not str:
            raise Bad(f"{where}.bytesValue is {_kind(x)}, not a base64 string")
        return _sized(x, where, lim)
    for field in ("arrayValue", "kvlistValue"):
        if field in v:
            if depth >= lim.max_depth:
                raise _too_deep(where, lim)
            a = v[field]
            vals = a.get("values") if a.__class__ is dict else a
            if vals is None:
                vals = []
            if vals.__class__ is not list:
                raise Bad(f'{where}.{field} is {_show(a)}, not {{"values": [...]}}')
            if field == "arrayValue":
                out = [_json_value(x, lim, depth + 1, f"{where}[{i}]") for i, x in enumerate(vals)]
            else:
                if len(vals) > lim.max_attributes:
                    raise _too_many(f"{where}.kvlistValue", len(vals), lim)
                out = {}
                for i, kv in enumerate(vals):
                    if kv.__class__ is not dict or kv.get("key").__class__ is not str:
                        raise Bad(f'{where}.kvlistValue.values[{i}] is {_show(kv)}, not {{"key": string, "value": ...}}')
                    out[kv["key"]] = _json_value(kv.get("value"), lim, depth + 1, f'{where}["{kv["key"]}"]')
            if depth == 0:
                n = len(orjson.dumps(out))
                if n > lim.max_attribute_bytes:
                    raise _too_big(where, n, lim)
            return out
    return None  # an empty AnyValue (or only fields this version does not know)


def _json_nanos(v, where: str) -> int:
    if v is None:
        return 0
    n = int(v) if v.__class__ is str and v.isascii() and v.isdigit() else v
    if n.__class__ is not int or not 0 <= n < _U64:
        raise Bad(f"{where} is {_show(v)}, not an unsigned 64-bit integer (nanoseconds since the epoch, as a decimal string)")
    return n


def _json_id(v, where: str, size: int) -> str:
    if v.__class__ is str and len(v) == size:
        low = v.lower()
        if not low.strip(_HEX):
            if low.strip("0"):
                return low
            raise Bad(f"{where} is all zeros, which OTLP defines as invalid")
    if v is None or v == "":
        raise Bad(f"{where} is missing; it must be {size} hex characters")
    raise Bad(f"{where} {_show(v)} is not {size} hex characters (OTLP/JSON ids are hex, not base64)")


def _json_span(sp, rows: Rows, res_json: str, res: dict, service, scope, lim: Limits) -> None:
    if sp.__class__ is not dict:
        raise Bad(f"the span is {_kind(sp)}, not an object")
    g = sp.get
    tid = g("traceId")
    # the fast path takes lowercase hex as is; anything else (uppercase too) goes through _json_id
    if tid.__class__ is not str or len(tid) != 32 or tid.strip(_HEX) or tid == _Z32:
        tid = _json_id(g("traceId"), "traceId", 32)
    sid = g("spanId")
    if sid.__class__ is not str or len(sid) != 16 or sid.strip(_HEX) or sid == _Z16:
        sid = _json_id(g("spanId"), "spanId", 16)
    psid = g("parentSpanId")
    if psid == "" or psid is None:
        psid = None
    elif psid.__class__ is not str or len(psid) != 16 or psid.strip(_HEX) or psid == _Z16:
        psid = _json_id(g("parentSpanId"), "parentSpanId", 16)
    name = g("name")
    if name.__class__ is not str or not name:
        raise Bad(f"name is {'missing' if name is None else _show(name)}; every span needs a non-empty string name")
    k = g("kind", 0)
    kind = _JSON_KINDS.get(k) if k.__class__ is int or k.__class__ is str else None
    if kind is None:
        raise Bad(f"kind is {_show(k)}, not a SpanKind (an integer 0..5)")
    s, e = g("startTimeUnixNano"), g("endTimeUnixNano")
    start = int(s) if s.__class__ is str and len(s) < 20 and s.isdigit() and s.isascii() else _json_nanos(s, "startTimeUnixNano")
    end = int(e) if e.__class__ is str and len(e) < 20 and e.isdigit() and e.isascii() else _json_nanos(e, "endTimeUnixNano")
    if not start:
        raise Bad("startTimeUnixNano is missing or 0; every span needs its start time")
    if not end:
        raise Bad("endTimeUnixNano is missing or 0; only ended spans can be stored")
    if end < start:
        raise Bad(f"endTimeUnixNano {end} is before startTimeUnixNano {start}")
    st = g("status")
    if st is None:
        code, msg = "UNSET", None
    elif st.__class__ is dict:
        c = st.get("code", 0)
        code = _JSON_STATUS.get(c) if c.__class__ is int or c.__class__ is str else None
        if code is None:
            raise Bad(f"status.code is {_show(c)}, not a StatusCode (0 unset, 1 ok, 2 error)")
        msg = st.get("message")
        if msg is not None and msg.__class__ is not str:
            raise Bad(f"status.message is {_kind(msg)}, not a string")
        msg = msg or None
    else:
        raise Bad(f"status is {_kind(st)}, not an object")
    attrs = _json_attrs(g("attributes"), lim, "attributes")
    events = g("events")
    ev_rows = None
    if events:
        if events.__class__ is not list:
            raise Bad(f"events is {_kind(events)}, not a list")
        ev_rows = []
        for seq, ev in enumerate(events):
            if ev.__class__ is not dict:
                raise Bad(f"events[{seq}] is {_kind(ev)}, not an object")
            t = _json_nanos(ev.get("timeUnixNano"), f"events[{seq}].timeUnixNano")
            if not t:
                raise Bad(f"events[{seq}].timeUnixNano is missing or 0; every event needs its time")
            en = ev.get("name", "")
            if en.__class__ is not str:
                raise Bad(f"events[{seq}].name is {_kind(en)}, not a string")
            ea = _json_attrs(ev.get("attributes"), lim, f"events[{seq}].attributes")
            ev_rows.append((tid, sid, seq, en, t // 1000, orjson.dumps(ea).decode()))
    links = g("links")
    links_json = None
    if links:
        if links.__class__ is not list:
            raise Bad(f"links is {_kind(links)}, not a list")
        out = []
        for i, ln in enumerate(links):
            if ln.__class__ is not dict:
                raise Bad(f"links[{i}] is {_kind(ln)}, not an object")
            out.append({
                "trace_id": _json_id(ln.get("traceId"), f"links[{i}].traceId", 32),
                "span_id": _json_id(ln.get("spanId"), f"links[{i}].spanId", 16),
                "attributes": _json_attrs(ln.get("attributes"), lim, f"links[{i}].attributes"),
            })  # fmt: skip
        links_json = orjson.dumps(out).decode()
    rows.spans.append(
        (tid, sid, psid, name, kind, start // 1000, end // 1000, (end - start) / 1e6, code, msg, service, scope)
        + mapping.hot_columns(attrs, res, tid)
        + (orjson.dumps(attrs).decode(), res_json, links_json)
    )
    if ev_rows:
        rows.events.extend(ev_rows)


def walk(obj, rows: Rows, at: str) -> None:
    """Every span of one TracesData / ExportTraceServiceRequest object; `at` prefixes locations."""
    lim = rows.limits
    if obj.__class__ is not dict:
        raise Bad(f'the record is {_kind(obj)}, not an OTLP/JSON object {{"resourceSpans": [...]}}')
    rss = obj.get("resourceSpans")
    if rss is None:
        for other in ("resourceLogs", "resourceMetrics", "resourceProfiles", "resource_spans"):
            if other in obj:
                hint = "keys are lowerCamelCase in OTLP/JSON" if other == "resource_spans" else "only traces are read"
                raise Bad(f"the record has {other}, not resourceSpans ({hint})")
        if obj:
            raise Bad(f"the record has no resourceSpans (keys: {', '.join(list(obj)[:5])})")
        return
    walk_resource_spans(rss, rows, at)


def walk_resource_spans(rss, rows: Rows, at: str, path: str = "resourceSpans", span=None) -> None:
    """Every span of a list of ResourceSpans (`path` names it in refusals). A bad resource, scope or
    span is refused alone. `span(sp)` turns each span object into OTLP/JSON's shape first (for
    answers of other backends, ingest/foreign.py); by default it is read as it is."""
    lim = rows.limits
    if rss.__class__ is not list:
        raise Bad(f"{path} is {_kind(rss)}, not a list")
    for ri, rs in enumerate(rss):
        here = f"{path}[{ri}]"
        key = "scopeSpans"
        try:
            if rs.__class__ is not dict:
                raise Bad(f"{here} is {_kind(rs)}, not an object")
            r = rs.get("resource") or {}
            if r.__class__ is not dict:
                raise Bad(f"resource is {_kind(r)}, not an object")
            res_json, res, service = rows.resource(_json_attrs(r.get("attributes"), lim, "resource.attributes"))
            sss = rs.get("scopeSpans")
            if sss is None and "instrumentationLibrarySpans" in rs:  # the name before OTLP 0.15
                key = "instrumentationLibrarySpans"
                sss = rs.get(key)
            sss = sss or []
            if sss.__class__ is not list:
                raise Bad(f"{key} is {_kind(sss)}, not a list")
        except Bad as e:
            rows.refuse(f"{at}{here}", f"{e.args[0]}; none of this resource's spans were stored", rs)
            continue
        for si, ss in enumerate(sss):
            where = f"{here}.{key}[{si}]"
            try:
                if ss.__class__ is not dict:
                    raise Bad(f"{where} is {_kind(ss)}, not an object")
                sc = ss.get("scope")
                if sc is None:
                    sc = ss.get("instrumentationLibrary") or {}
                if sc.__class__ is not dict:
                    raise Bad(f"scope is {_kind(sc)}, not an object")
                sname = sc.get("name")
                if sname is not None and sname.__class__ is not str:
                    raise Bad(f"scope.name is {_kind(sname)}, not a string")
                scope = rows.scope(sname)
                spans = ss.get("spans") or []
                if spans.__class__ is not list:
                    raise Bad(f"spans is {_kind(spans)}, not a list")
            except Bad as e:
                rows.refuse(f"{at}{where}", f"{e.args[0]}; none of this scope's spans were stored", ss)
                continue
            for pi, sp in enumerate(spans):
                try:
                    _json_span(sp if span is None else span(sp), rows, res_json, res, service, scope, lim)
                except Bad as e:
                    rows.refuse(f"{at}{where}.spans[{pi}]", e.args[0], sp)
                except (TypeError, ValueError, OverflowError) as e:  # e.g. a string orjson cannot write
                    rows.refuse(f"{at}{where}.spans[{pi}]", f"cannot be stored: {e}", sp)


# -- the fast path ----------------------------------------------------------------------------
# Structs for msgspec: a field is either absent (UNSET) or of the one type the OTLP/JSON mapping
# writes; `None` is allowed only where the careful path also reads null as absent. Anything else
# fails decoding, and the line goes the careful way. Unknown fields are skipped, as OTLP wants.


class Unusual(Exception):
    """The fast path met something it leaves to the careful path (which may well accept it)."""


class _Struct(msgspec.Struct, rename="camel", gc=False):
    pass


class AnyValue(_Struct):
    string_value: str | UnsetType = UNSET
    bool_value: bool | UnsetType = UNSET
    int_value: str | int | UnsetType = UNSET
    double_value: float | int | str | UnsetType = UNSET
    bytes_value: str | UnsetType = UNSET
    array_value: ArrayValue | UnsetType = UNSET
    kvlist_value: KeyValueList | UnsetType = UNSET


class KeyValue(_Struct):
    key: str
    value: AnyValue | None | UnsetType = UNSET


class ArrayValue(_Struct):
    values: list[AnyValue] | None | UnsetType = UNSET


class KeyValueList(_Struct):
    values: list[KeyValue] | None | UnsetType = UNSET


class Status(_Struct):
    code: int | str = 0
    message: str | None | UnsetType = UNSET


class Event(_Struct):
    time_unix_nano: str | int
    name: str = ""
    attributes: list[KeyValue] | None | UnsetType = UNSET


class Link(_Struct):
    trace_id: str
    span_id: str
    attributes: list[KeyValue] | None | UnsetType = UNSET


class Span(_Struct):
    trace_id: str
    span_id: str
    name: str
    start_time_unix_nano: str | int
    end_time_unix_nano: str | int
    parent_span_id: str | None | UnsetType = UNSET
    kind: int | str = 0
    attributes: list[KeyValue] | None | UnsetType = UNSET
    events: list[Event] | None | UnsetType = UNSET
    links: list[Link] | None | UnsetType = UNSET
    status: Status | None | UnsetType = UNSET


class Scope(_Struct):
    name: str | None | UnsetType = UNSET


class ScopeSpans(_Struct):
    scope: Scope | UnsetType = UNSET
    spans: list[Span] | None | UnsetType = UNSET
    instrumentation_library: msgspec.Raw | UnsetType = UNSET  # the name before OTLP 0.15: careful path


class Resource(_Struct):
    attributes: list[KeyValue] | None | UnsetType = UNSET


class ResourceSpans(_Struct):
    resource: Resource | None | UnsetType = UNSET
    scope_spans: list[ScopeSpans] | UnsetType = UNSET
    instrumentation_library_spans: msgspec.Raw | UnsetType = UNSET  # the name before OTLP 0.15: careful path


class TracesData(_Struct):
    """One OTLP/JSON line (TracesData), or an ExportTraceServiceRequest: the same fields."""

    resource_spans: list[ResourceSpans]


DECODER = msgspec.json.Decoder(TracesData)


def _fast_value(v: AnyValue, lim: Limits, depth: int):
    """One AnyValue as `_json_value` reads it, for values of every kind; raises Unusual instead of Bad."""
    x = v.string_value
    if x is not UNSET:
        if len(x) > lim.max_attribute_bytes >> 2:
            raise Unusual
        return x
    x = v.bool_value
    if x is not UNSET:
        return x
    x = v.int_value
    if x is not UNSET:
        if x.__class__ is str:
            if not (x.isascii() and (x.isdigit() or (x[:1] == "-" and x[1:].isdigit()))):
                raise Unusual
            x = int(x)
        if not -_I64 <= x < _I64:
            raise Unusual
        return x
    x = v.double_value
    if x is not UNSET:
        if x.__class__ is float:
            return x
        if x.__class__ is int:
            return float(x)
        if x in _FLOAT_WORDS:
            return _FLOAT_WORDS[x]
        raise Unusual
    x = v.bytes_value
    if x is not UNSET:
        if len(x) > lim.max_attribute_bytes >> 2:
            raise Unusual
        return x
    a = v.array_value
    if a is not UNSET:
        if depth >= lim.max_depth:
            raise Unusual
        out = [_fast_value(y, lim, depth + 1) for y in a.values or ()]
    else:
        a = v.kvlist_value
        if a is UNSET:
            return None  # an empty AnyValue
        if depth >= lim.max_depth:
            raise Unusual
        vals = a.values or ()
        if len(vals) > lim.max_attributes:
            raise Unusual
        out = {kv.key: None if not kv.value else _fast_value(kv.value, lim, depth + 1) for kv in vals}
    if depth == 0 and len(orjson.dumps(out)) > lim.max_attribute_bytes:
        raise Unusual
    return out


def _fast_attrs(kvs, lim: Limits) -> dict:
    """A list of KeyValue structs as a dict of Python values (see `_json_attrs`)."""
    if not kvs:
        return {}
    if len(kvs) > lim.max_attributes:
        raise Unusual
    out = {}
    small = lim.max_attribute_bytes >> 2
    for kv in kvs:
        v = kv.value
        if v:  # a struct (neither None nor UNSET)
            x = v.string_value
            if x is not UNSET:
                if len(x) > small:
                    raise Unusual
                out[kv.key] = x
                continue
            x = v.int_value
            if x.__class__ is str and len(x) < 19 and x.isdigit() and x.isascii():
                out[kv.key] = int(x)
                continue
            out[kv.key] = _fast_value(v, lim, 0)
        else:
            out[kv.key] = None
    return out


def _fast_nanos(v) -> int:
    if v.__class__ is str:
        if len(v) < 20 and v.isdigit() and v.isascii():
            return int(v)
        raise Unusual
    if 0 <= v < _U64:
        return v
    raise Unusual


def _fast_id(v: str, size: int) -> str:
    if len(v) != size or v.strip(_HEX) or not v.strip("0"):
        raise Unusual
    return v


def walk_fast(obj: TracesData, rows: Rows) -> None:
    """Every span of one decoded TracesData, when all of it is well formed; raises Unusual
    (having appended rows the caller must roll back) at the first thing that is not."""
    lim = rows.limits
    append, dumps, hot = rows.spans.append, orjson.dumps, mapping.hot_columns
    kinds, statuses, hexdigits = _JSON_KINDS, _JSON_STATUS, _HEX
    for rs in obj.resource_spans:
        r = rs.resource
        res_json, res, service = rows.resource(_fast_attrs(r.attributes, lim) if r else {})
        sss = rs.scope_spans
        if sss is UNSET:
            if rs.instrumentation_library_spans is not UNSET:
                raise Unusual
            continue
        for ss in sss:
            sc = ss.scope
            if sc is UNSET and ss.instrumentation_library is not UNSET:
                raise Unusual
            scope = rows.scope(sc.name if sc else None)
            for sp in ss.spans or ():
                tid = sp.trace_id
                if len(tid) != 32 or tid.strip(hexdigits) or tid == _Z32:
                    raise Unusual
                sid = sp.span_id
                if len(sid) != 16 or sid.strip(hexdigits) or sid == _Z16:
                    raise Unusual
                psid = sp.parent_span_id
                if not psid:
                    psid = None
                elif len(psid) != 16 or psid.strip(hexdigits) or psid == _Z16:
                    raise Unusual
                name = sp.name
                kind = kinds.get(sp.kind)
                if not name or kind is None:
                    raise Unusual
                s, e = sp.start_time_unix_nano, sp.end_time_unix_nano
                start = int(s) if s.__class__ is str and len(s) < 20 and s.isdigit() and s.isascii() else _fast_nanos(s)
                end = int(e) if e.__class__ is str and len(e) < 20 and e.isdigit() and e.isascii() else _fast_nanos(e)
                if not 0 < start <= end:
                    raise Unusual
                st = sp.status
                if st:
                    code = statuses.get(st.code)
                    if code is None:
                        raise Unusual
                    msg = st.message or None
                else:
                    code, msg = "UNSET", None
                attrs = _fast_attrs(sp.attributes, lim)
                events = sp.events
                if events:
                    ev_rows = []
                    for seq, ev in enumerate(events):
                        t = _fast_nanos(ev.time_unix_nano)
                        if not t:
                            raise Unusual
                        ev_rows.append((tid, sid, seq, ev.name, t // 1000, dumps(_fast_attrs(ev.attributes, lim)).decode()))
                links = sp.links
                links_json = None
                if links:
                    links_json = dumps([{"trace_id": _fast_id(ln.trace_id, 32), "span_id": _fast_id(ln.span_id, 16),
                                         "attributes": _fast_attrs(ln.attributes, lim)} for ln in links]).decode()  # fmt: skip
                append(
                    (tid, sid, psid, name, kind, start // 1000, end // 1000, (end - start) / 1e6, code, msg, service, scope)
                    + hot(attrs, res, tid)
                    + (dumps(attrs).decode(), res_json, links_json)
                )
                if events:
                    rows.events.extend(ev_rows)
