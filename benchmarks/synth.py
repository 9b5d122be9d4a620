"""Synthetic agent traces for the benchmarks: OTLP/JSON lines shaped like a real SRE agent's.

Each trace is one agent run: an invoke_agent root, tool calls with JSON arguments and results,
an LLM call, a decision with option events, and an action; attributes are ~300 bytes per span,
as FACTS.md's measurements assume. Deterministic for a given seed.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

import orjson

T0_NS = 1_795_747_620_000_000_000  # 2026-11-27T02:47:00Z

TOOLS = ["kubectl_get", "kubectl_describe", "prometheus_query", "kubectl_events", "kubectl_logs"]


def _attr(key: str, value) -> dict:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": str(value)}}


def _span(rng: random.Random, trace_id: str, span_id: str, parent: str, name: str, start: int, attrs: dict, events=()) -> dict:
    span = {
        "traceId": trace_id,
        "spanId": span_id,
        "parentSpanId": parent,
        "name": name,
        "kind": 1,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + rng.randint(1_000_000, 900_000_000)),
        "attributes": [_attr(k, v) for k, v in attrs.items()],
        "status": {"code": 1},
    }
    if events:
        span["events"] = list(events)
    return span


def spans_of_run(rng: random.Random, run: int, spans_per_run: int) -> list[dict]:
    trace_id = f"{rng.getrandbits(128):032x}"
    ids = iter(f"{rng.getrandbits(64) | 1:016x}" for _ in range(spans_per_run + 1))
    root = next(ids)
    start = T0_NS + run * 2_000_000_000
    run_id, incident = f"run-{run:07d}", f"inc-{run // 4:06d}"
    common = {"afterfix.run.id": run_id, "afterfix.incident.id": incident, "gen_ai.agent.name": "sre-agent"}
    out = [_span(rng, trace_id, root, "", "invoke_agent sre-agent", start,
                 {**common, "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": "agent-7"})]
    for i in range(spans_per_run - 1):
        t = start + (i + 1) * 10_000_000
        kind = i % 10
        if kind == 8:
            opts = [{"timeUnixNano": str(t), "name": "afterfix.option", "attributes": [
                _attr("afterfix.option.id", o), _attr("afterfix.option.score", rng.random()),
                _attr("afterfix.option.verdict", "selected" if o == "raise-max" else "rejected"),
                _attr("afterfix.option.reason", "latency tracks load; HPA at maxReplicas")]} for o in ("raise-max", "restart", "rollback")]
            attrs = {**common, "afterfix.span.kind": "decision", "afterfix.decision.id": f"d-{run}-{i}",
                     "afterfix.decision.question": "checkout p95 latency 2.4s over 0.5s SLO",
                     "afterfix.decision.selected": "raise-max", "afterfix.decision.reason": "CPU saturated at max replicas"}
            out.append(_span(rng, trace_id, next(ids), root, "decide: checkout latency", t, attrs, opts))
        elif kind == 9:
            attrs = {**common, "afterfix.span.kind": "action", "afterfix.action.id": f"a-{run}-{i}",
                     "afterfix.action.verb": "patch", "afterfix.action.mutating": True, "afterfix.trust.level": 3,
                     "afterfix.target.kind": "HorizontalPodAutoscaler", "afterfix.target.name": "checkout",
                     "afterfix.action.before": '{"spec":{"maxReplicas":3}}', "afterfix.action.after": '{"spec":{"maxReplicas":8}}'}
            out.append(_span(rng, trace_id, next(ids), root, "patch HorizontalPodAutoscaler shop/checkout", t, attrs))
        elif kind == 7:
            attrs = {**common, "gen_ai.operation.name": "chat", "gen_ai.request.model": "sre-planner-1",
                     "gen_ai.provider.name": "local", "gen_ai.usage.input_tokens": rng.randint(500, 4000),
                     "gen_ai.usage.output_tokens": rng.randint(50, 600)}
            out.append(_span(rng, trace_id, next(ids), root, "chat sre-planner-1", t, attrs))
        else:
            tool = TOOLS[i % len(TOOLS)]
            attrs = {**common, "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool,
                     "gen_ai.tool.call.id": f"call-{run}-{i}",
                     "gen_ai.tool.call.arguments": f'{{"namespace":"shop","resource":"deployment/checkout","n":{i}}}',
                     "gen_ai.tool.call.result": f'{{"replicas":{rng.randint(1, 9)},"cpu":{rng.random():.3f}}}'}
            out.append(_span(rng, trace_id, next(ids), root, f"execute_tool {tool}", t, attrs))
    return out


def otlp_lines(n_spans: int, *, seed: int = 7, spans_per_run: int = 50, spans_per_line: int = 50) -> Iterator[bytes]:
    """OTLP/JSON lines (one TracesData each) holding `n_spans` spans in total."""
    rng = random.Random(seed)
    resource = {"attributes": [_attr("service.name", "sre-agent"), _attr("afterfix.scenario", "bench")]}
    made, run, pending = 0, 0, []
    while made < n_spans:
        spans = spans_of_run(rng, run, min(spans_per_run, n_spans - made))
        run += 1
        made += len(spans)
        pending += spans
        while len(pending) >= spans_per_line or (made >= n_spans and pending):
            chunk, pending = pending[:spans_per_line], pending[spans_per_line:]
            yield orjson.dumps({"resourceSpans": [{"resource": resource, "scopeSpans": [
                {"scope": {"name": "afterfix.bench"}, "spans": chunk}]}]})


def write_otlp_file(path: Path, n_spans: int, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for line in otlp_lines(n_spans, **kw):
            f.write(line + b"\n")
    return path
