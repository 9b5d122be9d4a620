"""OTLP protobuf (an `ExportTraceServiceRequest` parsed by `opentelemetry-proto`) onto rows:
ids are bytes (written as lowercase hex), bytes values become base64 text, and every check of the
OTLP/JSON decoder applies, with protobuf's field names in the reasons.
"""

from __future__ import annotations

import base64
from typing import NoReturn

import orjson

from . import mapping
from .rows import Bad, Limits, Rows, _KINDS, _STATUS, _ZB8, _ZB16, _sized, _too_big, _too_deep, _too_many


def _pb_attrs(kvs, lim: Limits, where: str) -> dict:
    """Repeated KeyValue messages as a dict of Python values."""
    if not kvs:
        return {}
    if len(kvs) > lim.max_attributes:
        raise _too_many(where, len(kvs), lim)
    out = {}
    small = lim.max_attribute_bytes >> 2
    for kv in kvs:
        v = kv.value
        x = v.string_value
        if x and len(x) <= small:  # non-empty: string_value is the member of the oneof that is set
            out[kv.key] = x
            continue
        w = v.WhichOneof("value")
        if w == "int_value":
            out[kv.key] = v.int_value
            continue
        out[kv.key] = _pb_value(v, w, lim, 0, f'{where}["{kv.key}"]')
    return out


def _pb_value(v, w: str | None, lim: Limits, depth: int, where: str):
    if w is None:
        return None
    if w == "string_value":
        return _sized(v.string_value, where, lim)
    if w == "bytes_value":
        return _sized(base64.b64encode(v.bytes_value).decode(), where, lim)
    if w in ("array_value", "kvlist_value"):
        if depth >= lim.max_depth:
            raise _too_deep(where, lim)
        vals = getattr(v, w).values
        if w == "array_value":
            out = [_pb_value(x, x.WhichOneof("value"), lim, depth + 1, f"{where}[{i}]") for i, x in enumerate(vals)]
        else:
            if len(vals) > lim.max_attributes:
                raise _too_many(f"{where}.kvlist_value", len(vals), lim)
            out = {kv.key: _pb_value(kv.value, kv.value.WhichOneof("value"), lim, depth + 1, f'{where}["{kv.key}"]')
                   for kv in vals}  # fmt: skip
        if depth == 0:
            n = len(orjson.dumps(out))
            if n > lim.max_attribute_bytes:
                raise _too_big(where, n, lim)
        return out
    return getattr(v, w)  # bool_value, int_value, double_value


def _pb_id(v: bytes, where: str, size: int) -> NoReturn:
    """Refuses an id that failed the fast check, saying what is wrong with it."""
    if not v:
        raise Bad(f"{where} is missing (empty); it must be {size} bytes")
    if len(v) != size:
        raise Bad(f"{where} is {len(v)} bytes, not {size}")
    raise Bad(f"{where} is all zeros, which OTLP defines as invalid")


def _pb_span(sp, rows: Rows, res_json: str, res: dict, service, scope, lim: Limits) -> None:
    tid = sp.trace_id
    if len(tid) != 16 or tid == _ZB16:
        _pb_id(tid, "trace_id", 16)
    sid = sp.span_id
    if len(sid) != 8 or sid == _ZB8:
        _pb_id(sid, "span_id", 8)
    p = sp.parent_span_id
    if p and (len(p) != 8 or p == _ZB8):
        _pb_id(p, "parent_span_id", 8)
    name = sp.name
    if not name:
        raise Bad("name is empty; every span needs a name")
    kind = _KINDS.get(sp.kind)
    if kind is None:
        raise Bad(f"kind is {sp.kind}, not a SpanKind (0..5)")
    start, end = sp.start_time_unix_nano, sp.end_time_unix_nano
    if not start:
        raise Bad("start_time_unix_nano is 0; every span needs its start time")
    if not end:
        raise Bad("end_time_unix_nano is 0; only ended spans can be stored")
    if end < start:
        raise Bad(f"end_time_unix_nano {end} is before start_time_unix_nano {start}")
    st = sp.status
    code = _STATUS.get(st.code)
    if code is None:
        raise Bad(f"status.code is {st.code}, not a StatusCode (0 unset, 1 ok, 2 error)")
    attrs = _pb_attrs(sp.attributes, lim, "attributes")
    tid, sid = tid.hex(), sid.hex()
    ev_rows = None
    if sp.events:
        ev_rows = []
        for seq, ev in enumerate(sp.events):
            t = ev.time_unix_nano
            if not t:
                raise Bad(f"events[{seq}].time_unix_nano is 0; every event needs its time")
            ea = _pb_attrs(ev.attributes, lim, f"events[{seq}].attributes")
            ev_rows.append((tid, sid, seq, ev.name, t // 1000, orjson.dumps(ea).decode()))
    links_json = None
    if sp.links:
        out = []
        for i, ln in enumerate(sp.links):
            lt, ls = ln.trace_id, ln.span_id
            if len(lt) != 16 or lt == _ZB16:
                _pb_id(lt, f"links[{i}].trace_id", 16)
            if len(ls) != 8 or ls == _ZB8:
                _pb_id(ls, f"links[{i}].span_id", 8)
            la = _pb_attrs(ln.attributes, lim, f"links[{i}].attributes")
            out.append({"trace_id": lt.hex(), "span_id": ls.hex(), "attributes": la})
        links_json = orjson.dumps(out).decode()
    rows.spans.append(
        (tid, sid, p.hex() if p else None, name, kind, start // 1000, end // 1000, (end - start) / 1e6, code,
         st.message or None, service, scope)
        + mapping.hot_columns(attrs, res, tid)
        + (orjson.dumps(attrs).decode(), res_json, links_json)
    )  # fmt: skip
    if ev_rows:
        rows.events.extend(ev_rows)


def walk(req, rows: Rows, at: str) -> None:
    """Every span of one parsed ExportTraceServiceRequest; `at` prefixes locations."""
    lim = rows.limits
    for ri, rs in enumerate(req.resource_spans):
        here = f"resource_spans[{ri}]"
        try:
            res_json, res, service = rows.resource(_pb_attrs(rs.resource.attributes, lim, "resource.attributes"))
        except Bad as e:
            rows.refuse(f"{at}{here}", f"{e.args[0]}; none of this resource's spans were stored", str(rs))
            continue
        for si, ss in enumerate(rs.scope_spans):
            scope = rows.scope(ss.scope.name)
            for pi, sp in enumerate(ss.spans):
                try:
                    _pb_span(sp, rows, res_json, res, service, scope, lim)
                except Bad as e:
                    rows.refuse(f"{at}{here}.scope_spans[{si}].spans[{pi}]", e.args[0], str(sp))
