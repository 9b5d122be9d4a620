"""Write the example traces in this folder with the OpenTelemetry SDK and afterfix.sdk.

    .venv/bin/python traces/examples/make_examples.py [--seed N] [--out DIR]

The output depends only on the seed: a simulated clock fixes every timestamp (the night of
2026-11-27, from 02:47 UTC), and seeded generators fix every trace, span, run and call id.

- hpa-night.jsonl       the flagship story, written with afterfix.sdk: checkout latency because
                        an HPA's maxReplicas is too low; read-only tools, one LLM call, a decision
                        between four options, an HPA patch with before/after at trust level 3,
                        a verification.
- hpa-night.pb          the same spans as OTLP protobuf, in the protobuf file framing that
                        `afterfix.ingest.otlp` reads (a 4-byte big-endian length before each
                        serialized TracesData).
- openinference.jsonl   a small run written with OpenInference attributes only.
- genai-legacy.jsonl    a small run written with older GenAI attributes (gen_ai.system).
"""

from __future__ import annotations

import argparse
import struct
from datetime import datetime, timezone
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from afterfix import sdk
from afterfix.otlp_encode import traces_data

HERE = Path(__file__).resolve().parent
DEFAULT_SEED = 20261127
NIGHT = datetime(2026, 11, 27, 2, 47, tzinfo=timezone.utc).timestamp()
FILES = ("hpa-night.jsonl", "hpa-night.pb", "openinference.jsonl", "genai-legacy.jsonl")


class Clock:
    """Simulated wall clock (epoch seconds) that moves only when told to."""

    def __init__(self, start: float):
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t

    def ns(self) -> int:
        return int(round(self.t * 1e6)) * 1000


def _provider(path: Path, seed: int, service: str, memory: InMemorySpanExporter | None = None) -> TracerProvider:
    # service.instance.id is fixed: the SDK would otherwise put a random UUID in every file.
    provider = sdk.setup(
        service, file=path, id_generator=sdk.SeededIdGenerator(seed),
        resource={"service.instance.id": f"{service}-0", "service.version": "1.4.0",
                  "deployment.environment.name": "prod", "k8s.namespace.name": "sre"},
    )
    if memory is not None:
        provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider


# -- hpa-night: the flagship story ------------------------------------------------------------

HPA = sdk.Target(
    uid="6f1c2a9e-3b7d-4e58-9a0c-d2e4f6a8b1c3",
    kind="HorizontalPodAutoscaler",
    api_version="autoscaling/v2",
    namespace="shop",
    name="checkout",
)


def hpa_night(path: Path, seed: int) -> list:
    """The 02:47 checkout latency incident; returns the SDK spans it wrote."""
    clock = Clock(NIGHT)
    memory = InMemorySpanExporter()
    provider = _provider(path, seed, "sre-agent", memory)
    rec = sdk.Recorder(provider, agent_name="night-shift-agent", agent_id="night-shift-agent-1",
                       scenario="hpa-night", clock=clock, seed=seed)

    with rec.run(run_id="run-2026-11-27-0247"):
        clock.advance(0.4)
        with rec.incident("INC-2026-11-27-001", "checkout p95 latency above SLO", severity="high",
                          service="shop/checkout") as incident:
            clock.advance(0.3)
            rec.detection("latency_p95", 2.41, 0.8,
                          "checkout p95 latency 2.41 s against an 0.8 s SLO since 02:41 UTC; requests 2.3x baseline")
            clock.advance(1.2)
            with rec.tool_call("get_hpa", {"namespace": "shop", "name": "checkout"}) as call:
                clock.advance(0.15)
                call.result({
                    "metadata": {"name": "checkout", "namespace": "shop", "resourceVersion": "184467", "uid": HPA.uid},
                    "spec": {"minReplicas": 2, "maxReplicas": 4,
                             "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                                 "type": "Utilization", "averageUtilization": 70}}}],
                             "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout"}},
                    "status": {"currentReplicas": 4, "desiredReplicas": 4,
                               "conditions": [{"type": "ScalingLimited", "status": "True", "reason": "TooManyReplicas",
                                               "message": "the desired replica count is more than the maximum replica count"}],
                               "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {
                                   "averageUtilization": 96}}}]},
                })
            clock.advance(0.6)
            with rec.tool_call("get_metrics", {"service": "shop/checkout", "window": "30m",
                                               "signals": ["latency_p95", "requests_per_second", "error_rate",
                                                           "memory_working_set"]}) as call:
                clock.advance(0.8)
                call.result({
                    "latency_p95_s": {"02:17": 0.31, "02:32": 0.64, "02:41": 1.37, "02:47": 2.41},
                    "requests_per_second": {"02:17": 180, "02:32": 290, "02:41": 370, "02:47": 410},
                    "error_rate": {"02:17": 0.002, "02:32": 0.002, "02:41": 0.003, "02:47": 0.002},
                    "memory_working_set_mib": {"02:17": 412, "02:32": 415, "02:41": 414, "02:47": 416},
                })
            clock.advance(0.5)
            with rec.tool_call("describe_deployment", {"namespace": "shop", "name": "checkout"}) as call:
                clock.advance(0.2)
                call.result({
                    "replicas": 4, "readyReplicas": 4, "image": "registry.local/shop/checkout:1.14.2",
                    "revision": 12, "lastRollout": "2026-11-26T16:05:11Z",
                    "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
                    "restarts_last_hour": 0,
                })
            clock.advance(0.4)
            with rec.llm_call("ops-reasoner-8b", provider="vllm") as llm:
                clock.advance(6.3)
                llm.response_model("ops-reasoner-8b-2026-10")
                llm.tokens(2318, 406)
            clock.advance(0.2)
            options = [
                sdk.Option(
                    "raise-hpa-max", "Raise the checkout HPA's maxReplicas from 4 to 10",
                    action={"verb": "patch", "target": "autoscaling/v2 HorizontalPodAutoscaler shop/checkout",
                            "patch": {"spec": {"maxReplicas": 10}}},
                    evidence=["HPA condition ScalingLimited=True (TooManyReplicas) since 02:39",
                              "CPU 96% against a 70% target with replicas pinned at maxReplicas=4",
                              "latency tracks requests per second (180 -> 410 rps)"],
                    score=0.91,
                ),
                sdk.Option(
                    "restart-pods", "Restart the checkout pods (rollout restart)",
                    action={"verb": "restart", "target": "apps/v1 Deployment shop/checkout"},
                    evidence=["memory working set flat at 412-416 MiB", "0 restarts in the last hour"],
                    score=0.08, reason="no memory growth or stuck pods: a restart would drop capacity during peak",
                ),
                sdk.Option(
                    "rollback-deploy", "Roll back checkout to revision 11 (the deploy before 1.14.2)",
                    action={"verb": "rollback", "target": "apps/v1 Deployment shop/checkout", "toRevision": 11},
                    evidence=["error rate flat at 0.2-0.3%", "1.14.2 rolled out at 16:05, ten hours before the alert",
                              "latency follows load, not the deploy time"],
                    score=0.12, reason="errors are flat and latency tracks load: the last deploy is not the cause",
                ),
                sdk.Option(
                    "scale-deployment", "Scale the checkout Deployment to 10 replicas directly",
                    action={"verb": "scale", "target": "apps/v1 Deployment shop/checkout", "replicas": 10},
                    evidence=["the Deployment is managed by HPA shop/checkout (maxReplicas=4)"],
                    score=0.35, reason="the HPA owns spec.replicas and would scale it back to 4 within a minute",
                ),
            ]
            decision_id = rec.decision(
                "checkout p95 latency 2.41 s over the 0.8 s SLO: what should change?",
                options, selected="raise-hpa-max",
                reason="traffic is 2.3x baseline and the HPA is pinned at maxReplicas=4 with CPU at 96%: "
                       "this is missing capacity, not a fault",
                policy="capacity_vs_fault.v1",
                inputs={"latency_p95_s": 2.41, "slo_s": 0.8, "rps": 410, "rps_baseline": 180,
                        "cpu_utilization": 0.96, "hpa_max_replicas": 4, "current_replicas": 4,
                        "error_rate": 0.002, "memory_trend": "flat"},
                decision_id="dec-2026-11-27-0247-1",
            )
            clock.advance(0.5)
            with rec.tool_call("patch_hpa", {"namespace": "shop", "name": "checkout",
                                             "patch": {"spec": {"maxReplicas": 10}}}) as call:
                with rec.action("patch", HPA, decision_id=decision_id, trust_level=3,
                                patch={"spec": {"maxReplicas": 10}}, field_manager="afterfix-agent",
                                action_id="act-2026-11-27-0247-1") as act:
                    act.before({"spec": {"maxReplicas": 4, "minReplicas": 2}}, "184467")
                    clock.advance(0.12)
                    act.dry_run_ok()
                    clock.advance(0.09)
                    act.after({"spec": {"maxReplicas": 10, "minReplicas": 2}}, "184532")
                    act.status("applied")
                call.result({"resourceVersion": "184532", "spec": {"maxReplicas": 10, "minReplicas": 2}})
            clock.advance(360)
            with rec.tool_call("get_metrics", {"service": "shop/checkout", "window": "5m",
                                               "signals": ["latency_p95", "replicas"]}) as call:
                clock.advance(0.7)
                call.result({"latency_p95_s": 0.46, "replicas": 9, "cpu_utilization": 0.68})
            rec.verification(act.action_id, "success", "latency_p95", 2.41, 0.46)
            clock.advance(0.3)
            incident.set_status("resolved")
        clock.advance(0.2)
    provider.shutdown()
    return list(memory.get_finished_spans())


def write_protobuf(path: Path, spans: list) -> None:
    """The spans as length-prefixed TracesData frames: one frame per trace, in span order."""
    by_trace: dict[int, list] = {}
    for span in spans:
        by_trace.setdefault(span.context.trace_id, []).append(span)
    with open(path, "wb") as f:
        for group in by_trace.values():
            body = traces_data(group).SerializeToString(deterministic=True)
            f.write(struct.pack(">I", len(body)) + body)


# -- openinference: OpenInference attributes only ---------------------------------------------


def openinference(path: Path, seed: int) -> None:
    """A short investigation of OOM-killed cart pods, as an OpenInference-instrumented agent writes it."""
    clock = Clock(NIGHT + 43 * 60)  # 03:30
    provider = _provider(path, seed + 1, "cart-investigator")
    tracer = provider.get_tracer("openinference.instrumentation.example", "0.1.0")
    session = "session-2026-11-27-0330"

    def span(name, attrs, parent_ctx=None, kind=SpanKind.INTERNAL):
        return tracer.start_span(name, context=parent_ctx, kind=kind, attributes=attrs, start_time=clock.ns())

    from opentelemetry import trace

    agent = span("cart-investigator", {
        "openinference.span.kind": "AGENT", "session.id": session, "agent.name": "cart-investigator",
        "input.value": "cart pods restarted 3 times in 10 minutes (OOMKilled)", "input.mime_type": "text/plain",
    })
    ctx = trace.set_span_in_context(agent)
    clock.advance(0.5)
    tool = span("get_pod_events", {
        "openinference.span.kind": "TOOL", "session.id": session, "agent.name": "cart-investigator",
        "tool.name": "get_pod_events", "tool.description": "Recent Kubernetes events for a workload's pods",
        "tool.parameters": sdk.dumps({"properties": {"namespace": {"type": "string"}, "selector": {"type": "string"}},
                                      "type": "object"}),
        "tool_call.id": "call-oi-1",
        "tool_call.function.arguments": sdk.dumps({"namespace": "shop", "selector": "app=cart"}),
        "input.value": sdk.dumps({"namespace": "shop", "selector": "app=cart"}), "input.mime_type": "application/json",
    }, ctx)
    clock.advance(0.3)
    tool.set_attribute("output.value", sdk.dumps([
        {"reason": "OOMKilled", "pod": "cart-7c9d-2xk4p", "count": 2},
        {"reason": "OOMKilled", "pod": "cart-7c9d-9mq7z", "count": 1},
    ]))
    tool.set_attribute("output.mime_type", "application/json")
    tool.end(end_time=clock.ns())
    clock.advance(0.2)
    llm = span("ChatCompletion", {
        "openinference.span.kind": "LLM", "session.id": session, "agent.name": "cart-investigator",
        "llm.model_name": "ops-reasoner-8b", "llm.provider": "vllm", "llm.system": "vllm",
        "llm.invocation_parameters": sdk.dumps({"temperature": 0}),
    }, ctx, kind=SpanKind.CLIENT)
    clock.advance(4.1)
    llm.set_attributes({"llm.token_count.prompt": 1190, "llm.token_count.completion": 214,
                        "llm.token_count.total": 1404,
                        "output.value": "Memory limit 256Mi is below the cart working set after 1.9.0; "
                                        "recommend raising the limit to 512Mi (needs approval)."})
    llm.end(end_time=clock.ns())
    clock.advance(0.2)
    agent.set_attribute("output.value", "recommended: raise cart memory limit 256Mi -> 512Mi (awaiting approval)")
    agent.end(end_time=clock.ns())
    provider.shutdown()


# -- genai-legacy: older GenAI attributes -----------------------------------------------------


def genai_legacy(path: Path, seed: int) -> None:
    """A short disk-pressure check as an agent on older GenAI conventions (gen_ai.system) writes it."""
    clock = Clock(NIGHT + 88 * 60)  # 04:15
    provider = _provider(path, seed + 2, "disk-watcher")
    tracer = provider.get_tracer("legacy.genai.agent", "0.9.0")
    conversation = "conv-2026-11-27-0415"
    from opentelemetry import trace

    agent = tracer.start_span("invoke_agent disk-watcher", attributes={
        "gen_ai.operation.name": "invoke_agent", "gen_ai.system": "openai", "gen_ai.agent.name": "disk-watcher",
        "gen_ai.conversation.id": conversation,
    }, start_time=clock.ns())
    ctx = trace.set_span_in_context(agent)
    clock.advance(0.4)
    chat = tracer.start_span("chat gpt-4o-mini", context=ctx, kind=SpanKind.CLIENT, attributes={
        "gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.request.temperature": 0.0, "gen_ai.conversation.id": conversation,
    }, start_time=clock.ns())
    clock.advance(2.2)
    chat.set_attributes({"gen_ai.response.model": "gpt-4o-mini-2024-07-18", "gen_ai.usage.input_tokens": 640,
                         "gen_ai.usage.output_tokens": 58, "gen_ai.response.finish_reasons": ("tool_calls",)})
    chat.end(end_time=clock.ns())
    clock.advance(0.1)
    tool = tracer.start_span("execute_tool df", context=ctx, attributes={
        "gen_ai.operation.name": "execute_tool", "gen_ai.system": "openai", "gen_ai.tool.name": "df",
        "gen_ai.tool.call.id": "call_legacy_1", "gen_ai.agent.name": "disk-watcher",
        "gen_ai.conversation.id": conversation,
    }, start_time=clock.ns())
    clock.advance(1.5)
    tool.set_attribute("error.type", "TimeoutError")
    tool.set_status(Status(StatusCode.ERROR, "node ip-10-0-3-17 did not answer within 1.5 s"))
    tool.end(end_time=clock.ns())
    clock.advance(0.3)
    agent.end(end_time=clock.ns())
    provider.shutdown()


def generate(out: Path = HERE, seed: int = DEFAULT_SEED) -> list[Path]:
    """Write every example into `out` (replacing older copies); returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / name for name in FILES]
    for p in paths:
        p.unlink(missing_ok=True)
    spans = hpa_night(out / "hpa-night.jsonl", seed)
    write_protobuf(out / "hpa-night.pb", spans)
    openinference(out / "openinference.jsonl", seed)
    genai_legacy(out / "genai-legacy.jsonl", seed)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    for path in generate(args.out, args.seed):
        print(f"{path}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
