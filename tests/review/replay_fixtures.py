"""A small hand-built night for replay tests: one run of the reference agent's shape (tool calls,
two hpa_capacity decisions fed by the same calls, an action), one LLM decision, hostile text."""

from __future__ import annotations

from dataclasses import dataclass

from afterfix.nightshift.policy import decide_hpa_capacity
from afterfix.sdk import Option, Target
from afterfix.undo.trace import recording

HOSTILE = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


def hpa_inputs(p95: float = 2400.0, max_replicas: int = 2) -> dict:
    return {"service": "shop/catalog", "slo_latency_ms": 300, "max_replicas_cap": 12,
            "metrics": {"latency_p95_ms": p95, "cpu_utilization": 1.0, "replicas": 2.0, "restarts": 0.0,
                        "memory_mb": 180.0, "error_rate": 0.2},
            "hpa": {"name": "catalog", "minReplicas": 2, "maxReplicas": max_replicas, "currentReplicas": 2,
                    "desiredReplicas": 2, "targetCPUUtilizationPercentage": 80},
            "deployment": {"replicas": 2}}


def _options(choice):
    return [Option(o.id, o.description, action=o.action, evidence=list(o.evidence), score=o.score, verdict=o.verdict,
                   reason=o.reason) for o in choice.options]


@dataclass
class Night:
    store: object
    run_id: str
    first: str  # hpa decision, raise_hpa_max
    second: str  # the later hpa decision of the same run, fed by the same calls
    llm: str  # decided by a model (chat span with messages, no policy)
    unknown: str  # a policy no one knows
    p95_call: str
    hpa_call: str
    missing_call: str
    action: str


def build_night(store) -> Night:
    t = [1_795_000_000.0]

    def clock():
        t[0] += 1.0
        return t[0]

    with recording(store, "reference-agent", clock=clock) as rec, rec.run(incident_id="INC-r-1") as run:
        with rec.tool_call("prometheus_query", {"query": "latency"}) as p95:
            p95.result({"value": 2400.0, "unit": "latency_p95_ms"})
        with rec.tool_call("kubectl_get", {"resource": "horizontalpodautoscalers", "namespace": "shop"}) as hpa:
            hpa.result({"items": [{"name": "catalog", "spec": {"maxReplicas": 2, "minReplicas": 2}}], "note": HOSTILE})
        with rec.tool_call("kubectl_events", {"namespace": "shop"}) as lost:
            pass  # no result recorded
        sources = {"metrics": [p95.call_id], "hpa": [hpa.call_id]}
        inputs = hpa_inputs()
        choice = decide_hpa_capacity(inputs)
        opts = _options(choice)
        opts[-1] = Option(opts[-1].id, opts[-1].description, evidence=[HOSTILE], score=opts[-1].score,
                          verdict=opts[-1].verdict, reason=opts[-1].reason + " " + HOSTILE)
        first = rec.decision(choice.question, opts, choice.selected, choice.reason, policy="hpa_capacity", inputs=inputs,
                             sources={**sources, "deployment": [lost.call_id]})
        with rec.action("patch", Target("uid-1", "HorizontalPodAutoscaler", "autoscaling/v2", "shop", "catalog"),
                        decision_id=first, mutating=True, patch={"spec": {"maxReplicas": 4}}) as act:
            act.before({"spec.maxReplicas": 2}, "10")
            act.after({"spec.maxReplicas": 4}, "11")
        later = hpa_inputs(max_replicas=4)
        later["hpa"]["currentReplicas"] = 4
        choice2 = decide_hpa_capacity(later)
        second = rec.decision(choice2.question, _options(choice2), choice2.selected, choice2.reason, policy="hpa_capacity",
                              inputs=later, sources=sources)
        with rec.llm_call("scripted-1") as chat:
            chat.set("gen_ai.input.messages", [{"role": "user", "content": "latency is high"},
                                               {"role": "tool", "tool_call_id": p95.call_id, "content": "2400"}])
            chat.set("gen_ai.output.messages", [{"role": "assistant", "content": "restart"}])
            chat.set("gen_ai.request.seed", 7)
            llm = rec.decision("what now?", [Option("restart", "restart it"), Option("wait", "wait", reason="no")],
                               "restart", "the model said so")
        unknown = rec.decision("old policy?", [Option("a", "a")], "a", "because", policy="retired_policy.v0", inputs={"x": 1})
        run_id = run.run_id
    return Night(store, run_id, first, second, llm, unknown, p95.call_id, hpa.call_id, lost.call_id, act.action_id)
