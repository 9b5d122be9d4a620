"""Purpose-built traces for the tree, timeline and diff tests, recorded through the real
OpenTelemetry SDK (afterfix.sdk's Recorder, or the bare tracer API as an OpenInference agent
would) into an OTLP/JSON file and ingested into a store.

    store, ids = recorded_night(tmp_path)

What the night holds (ids[...] names each id):
- INC-T1, run "run-t1" (agent-a): incident, detection, tool calls, an LLM call, decision dec-1
  with three options (one selected, two rejected with reasons), the action it chose recorded
  inside a tool call (nested before/after, resourceVersions), a decision dec-2 recorded inside
  that action with an action of its own, and the verification of the first action; a failed tool
  call.
- INC-T1, run "run-t2" (agent-b): tool calls before the incident is known, a decision with
  nothing selected, and a level-2 action awaiting approval with its approval request; the
  action's before state is not JSON, and its span and question carry hostile text.
- run "oi-session-1": an OpenInference agent (no afterfix attributes): AGENT span with
  `agent.name`, a CHAIN child, a TOOL and an LLM span under the chain without any agent name.
"""

from __future__ import annotations

import json
from pathlib import Path

from opentelemetry.trace import SpanKind, Status, StatusCode

from afterfix import convention as c
from afterfix import sdk
from afterfix.ingest.files import ingest_paths
from afterfix.sdk import Option, Target
from afterfix.store import Store

T0 = 1795747620.0  # 2026-11-27T02:47:00Z
HOSTILE = "\x1b[31mred\x1b[0m <script>alert('x')</script> ${{7*7}} \u202etxt.exe\r\nrm -rf /"
HPA = Target("uid-hpa-1", "HorizontalPodAutoscaler", "autoscaling/v2", "shop", "checkout")
DEPLOY = Target("uid-dep-1", "Deployment", "apps/v1", "shop", "checkout")


class Clock:
    def __init__(self, start: float = T0):
        self.t = start

    def __call__(self) -> float:
        self.t += 0.5
        return self.t


def _run_t1(rec: sdk.Recorder, ids: dict) -> None:
    with rec.run(run_id="run-t1", incident_id="INC-T1"):
        with rec.incident("INC-T1", "checkout p95 latency above SLO", severity="high", service="shop/checkout") as inc:
            rec.detection("latency_p95", 2.41, 0.8, "checkout p95 2.41 s over 0.8 s")
            with rec.tool_call("get_hpa", {"namespace": "shop", "name": "checkout"}) as call:
                call.result({"spec": {"maxReplicas": 4}})
            with rec.tool_call("get_logs", {"tail": 10}) as call:
                call.error("connection refused", "ConnectionError")
            with rec.llm_call("reasoner-1", provider="local") as llm:
                llm.tokens(1200, 80)
            ids["dec-1"] = rec.decision(
                "checkout is slow: what should change?",
                [Option("raise-max", "Raise maxReplicas 4 -> 10", evidence=["pinned at max", "CPU 96%"], score=0.91),
                 Option("restart", "Restart the pods", evidence=["memory flat"], score=0.08,
                        reason="no memory growth"),
                 Option("rollback", "Roll back the last deploy", score=0.12, reason="errors are flat")],
                selected="raise-max", reason="load exceeds capacity", policy="capacity.v1",
                decision_id="dec-1")
            with rec.tool_call("patch_hpa", {"maxReplicas": 10}):
                with rec.action("patch", HPA, decision_id="dec-1", trust_level=3, action_id="act-1",
                                patch={"spec": {"maxReplicas": 10}}) as act:
                    act.before({"spec": {"maxReplicas": 4, "minReplicas": 2}}, "184467")
                    act.dry_run_ok()
                    # A choice made while acting: how to write the change. It stays inside the action.
                    ids["dec-2"] = rec.decision(
                        "how should the change be written?",
                        [Option("merge-patch", "JSON merge patch", score=0.7),
                         Option("apply", "server-side apply", score=0.4, reason="another manager owns the field")],
                        selected="merge-patch", reason="smallest write", decision_id="dec-2")
                    with rec.action("annotate", DEPLOY, decision_id="dec-2", trust_level=3, action_id="act-2") as note:
                        note.before({"metadata.annotations.afterfix/changed": None}, "900")
                        note.after({"metadata.annotations.afterfix/changed": "maxReplicas"}, "901")
                    act.after({"spec.maxReplicas": 10, "spec.minReplicas": 2}, "184532")
            rec.verification("act-1", "success", "latency_p95", before=2.41, after=0.46)
            inc.set_status("resolved")


def _run_t2(rec: sdk.Recorder, ids: dict) -> None:
    with rec.run(run_id="run-t2"):
        with rec.tool_call("list_pods", {"namespace": "shop"}) as call:
            call.result("3 pods")
        with rec.incident("INC-T1", "checkout p95 latency above SLO", service="shop/checkout"):
            rec.decision(
                HOSTILE,
                [Option("wait", "wait and see", reason="the other agent is on it"),
                 Option("scale", "scale the Deployment", reason=HOSTILE)],
                selected=None, reason="nothing to do", decision_id="dec-3")
            with rec.action("scale", DEPLOY, decision_id="dec-3", trust_level=2, action_id="act-3") as act:
                act.span.update_name(HOSTILE)
                act.set(c.ACTION_BEFORE, "{not json: " + HOSTILE)
                act.set(c.ACTION_AFTER, json.dumps({"spec": {"replicas": 6}}))
                act.status("awaiting_approval")
            rec.approval("act-3", "requested")


def _openinference(provider) -> None:
    """An OpenInference agent as its instrumentation writes it: no afterfix.* keys, the agent's
    name only on the AGENT span, the session id on every span."""
    tracer = provider.get_tracer("openinference.instrumentation.test")
    session = {"session.id": "oi-session-1"}
    with tracer.start_as_current_span("cart-agent", kind=SpanKind.INTERNAL, attributes={
            **session, "openinference.span.kind": "AGENT", "agent.name": "cart-agent"}):
        with tracer.start_as_current_span("plan", attributes={**session, "openinference.span.kind": "CHAIN"}):
            with tracer.start_as_current_span("get_cart", attributes={
                    **session, "openinference.span.kind": "TOOL", "tool.name": "get_cart",
                    "tool_call.function.arguments": '{"user": 7}', "output.value": "2 items"}):
                pass
            with tracer.start_as_current_span("ChatCompletion", attributes={
                    **session, "openinference.span.kind": "LLM", "llm.model_name": "small-8b",
                    "llm.provider": "local", "llm.token_count.prompt": 300,
                    "llm.token_count.completion": 20}) as span:
                span.set_status(Status(StatusCode.OK))


def recorded_night(folder: Path) -> tuple[Store, dict]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    trace_file = folder / "night.jsonl"
    provider = sdk.setup("test-agents", file=trace_file, id_generator=sdk.SeededIdGenerator(11))
    clock = Clock()
    ids: dict = {}
    _run_t1(sdk.Recorder(provider, agent_name="agent-a", clock=clock, seed=1), ids)
    _run_t2(sdk.Recorder(provider, agent_name="agent-b", clock=clock, seed=2), ids)
    _openinference(provider)
    provider.shutdown()
    store = Store(folder / "store")
    store.create()
    summary = ingest_paths(store, [trace_file])
    assert not summary.refused, summary.refused
    return store, ids


def examples_store(folder: Path) -> Store:
    """The example traces (traces/examples/*.jsonl: hpa-night, openinference, genai-legacy)."""
    examples = Path(__file__).resolve().parents[2] / "traces" / "examples"
    store = Store(Path(folder) / "store")
    store.create()
    summary = ingest_paths(store, sorted(examples.glob("*.jsonl")))
    assert not summary.refused, summary.refused
    return store
