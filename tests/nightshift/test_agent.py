"""The reference agent against the real simulator over HTTP, through the official client,
recording through the real OpenTelemetry SDK (in-memory exporter)."""

from __future__ import annotations

import json

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from afterfix import sdk
from afterfix.nightshift import scenarios as sc
from afterfix.nightshift.agent import FIELD_MANAGER, Agent, Service, anomalies, parse_prometheus
from afterfix.nightshift.apiserver import ApiServer
from afterfix.nightshift.clock import SimClock
from afterfix.nightshift.cluster import Cluster

CATALOG = sc.CATALOG


@pytest.fixture
def world(tmp_path):
    """A cluster with the HPA-starvation scenario in its spike (22:45), served over HTTP."""
    clock = SimClock(sc.SETUP_AT)
    cluster = Cluster(clock, seed=3)
    sc.HPA_STARVATION.setup(cluster)
    sc.WRONG_TOOL.setup(cluster)
    cluster.tick(sc.at(45) - clock.now(), step=60)
    server = ApiServer(cluster).start()
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def make(trust=3, approver=None, **kw):
        rec = sdk.Recorder(provider, agent_name="test-agent", clock=clock.now)
        return Agent(kubeconfig=str(kubeconfig), metrics_url=f"{server.url}/metrics", recorder=rec, trust_level=trust,
                     wait=cluster.tick, now=clock.now, approver=approver, llm_tokens=False, **kw)

    yield cluster, make, exporter
    server.stop()


def spans_of(exporter, kind=None, op=None):
    out = []
    for s in exporter.get_finished_spans():
        a = dict(s.attributes)
        if (kind is None or a.get("afterfix.span.kind") == kind) and (op is None or a.get("gen_ai.operation.name") == op):
            out.append((s, a))
    return out


def test_parse_prometheus_matches_the_model(world):
    cluster, make, _ = world
    samples = parse_prometheus(cluster.workloads.prometheus_text())
    latency = next(v for n, l, v in samples if n == "afterfix_sim_latency_p95_seconds" and l["deployment"] == "catalog")
    assert latency * 1000 == pytest.approx(cluster.workloads.metrics("shop", "catalog")["latency_p95_ms"])
    assert parse_prometheus('x{a="q\\"uote"} 1.5\n# HELP y\nbad line\n') == [("x", {"a": 'q"uote'}, 1.5)]


@pytest.mark.parametrize("trust,status,writes", [(1, "recommended", False), (2, "awaiting_approval", False),
                                                 (3, "applied", True), (4, "applied", True)])
def test_trust_level_decides_whether_it_writes(world, trust, status, writes):
    cluster, make, exporter = world
    before = cluster.get("autoscaling/v2", "HorizontalPodAutoscaler", "shop", "catalog")
    out = make(trust).handle("INC-T", CATALOG, "latency_p95_ms", 2800, 300)
    after = cluster.get("autoscaling/v2", "HorizontalPodAutoscaler", "shop", "catalog")
    assert out.choice.selected == "raise_hpa_max" and out.action_status == status
    [(span, a)] = spans_of(exporter, "action")
    assert a["afterfix.action.status"] == status and a["afterfix.trust.level"] == trust
    assert a["afterfix.target.uid"] == before["metadata"]["uid"]
    assert a["afterfix.action.resource_version.before"] == before["metadata"]["resourceVersion"]
    assert json.loads(a["afterfix.action.before"]) == {"spec.maxReplicas": 2}
    # Recorded whether or not it writes: the HPA's latency, measured on the Deployment it scales.
    analysis = json.loads(a["afterfix.action.analysis"])
    assert before["spec"]["scaleTargetRef"]["name"] == "catalog"
    assert analysis["provider"] == {"afterfix": {"metric": "afterfix.workload.latency_p95_ms", "labels": {
        "k8s.namespace.name": "{{namespace}}", "k8s.deployment.name": "catalog"}}}
    assert (analysis["successCondition"], analysis["failureCondition"]) == (
        f"result <= {CATALOG.slo_latency_ms:g}", f"result > {CATALOG.slo_latency_ms:g}")
    approvals = [a["afterfix.approval.status"] for _, a in spans_of(exporter, "approval")]
    assert approvals == (["requested"] if trust == 2 else [])
    if writes:
        assert after["spec"]["maxReplicas"] > 2
        assert a["afterfix.action.resource_version.after"] != a["afterfix.action.resource_version.before"]
        assert json.loads(a["afterfix.action.after"]) == {"spec.maxReplicas": after["spec"]["maxReplicas"]}
        assert any(m["manager"] == FIELD_MANAGER and "f:maxReplicas" in m["fieldsV1"].get("f:spec", {})
                   for m in after["metadata"]["managedFields"])
        [(_, v)] = spans_of(exporter, "verification")
        assert v["afterfix.verification.outcome"] == "success" and v["afterfix.verification.after"] <= 300
    else:
        assert after["spec"]["maxReplicas"] == 2
        assert "afterfix.action.after" not in a and not spans_of(exporter, "verification")
        assert out.verified is None


def test_level2_applies_once_approved(world):
    cluster, make, exporter = world
    asked = []
    out = make(2, approver=lambda req: asked.append(req) or "approved").handle("INC-A", CATALOG, "latency_p95_ms", 2800, 300)
    assert out.action_status == "applied"
    assert [a["afterfix.approval.status"] for _, a in spans_of(exporter, "approval")] == ["requested", "approved"]
    assert asked[0]["target"] == "HorizontalPodAutoscaler/shop/catalog" and asked[0]["patch"]["spec"]["maxReplicas"] > 2


def test_every_write_is_a_dry_run_first_with_a_resource_version(world, monkeypatch):
    cluster, make, exporter = world
    calls = []
    real = cluster.patch

    def spy(api_version, kind, ns, name, patch, **kw):
        calls.append((kind, kw.get("dry_run"), kw.get("field_manager"), kw.get("patch_type"),
                      (patch.get("metadata") or {}).get("resourceVersion")))
        return real(api_version, kind, ns, name, patch, **kw)

    monkeypatch.setattr(cluster, "patch", spy)
    make(3).handle("INC-D", CATALOG, "latency_p95_ms", 2800, 300)
    agent_calls = [c for c in calls if c[2] == FIELD_MANAGER]
    assert [c[1] for c in agent_calls] == [True, False]
    assert all(c[0] == "HorizontalPodAutoscaler" and c[3] == "merge" and c[4] for c in agent_calls)
    [(_, a)] = spans_of(exporter, "action")
    assert a["afterfix.action.dry_run"] is True and a["afterfix.action.field_manager"] == FIELD_MANAGER


def test_a_concurrent_write_makes_the_agent_fail_not_overwrite(world):
    cluster, make, exporter = world
    agent = make(3)

    def racing_patch(obj):
        # Someone else changes the HPA between the agent's read and its write.
        cluster.patch("autoscaling/v2", "HorizontalPodAutoscaler", "shop", "catalog", {"spec": {"maxReplicas": 7}},
                      field_manager="kubectl-edit")
        return {"spec": {"maxReplicas": 5}}

    action_id, status = agent.change(verb="patch", resource="horizontalpodautoscalers", namespace="shop", name="catalog",
                                     decision_id="dec-x", make_patch=racing_patch,
                                     touched=lambda o: {"spec.maxReplicas": o["spec"]["maxReplicas"]})
    assert status == "failed"
    assert cluster.get("autoscaling/v2", "HorizontalPodAutoscaler", "shop", "catalog")["spec"]["maxReplicas"] == 7
    [(span, a)] = spans_of(exporter, "action")
    assert a["afterfix.action.status"] == "failed" and span.status.status_code.name == "ERROR"


def test_every_read_is_a_tool_call_span(world):
    cluster, make, exporter = world
    out = make(1).handle("INC-R", CATALOG, "latency_p95_ms", 2800, 300)
    tools = spans_of(exporter, op="execute_tool")
    assert [a["gen_ai.tool.name"] for _, a in tools] == out.tool_calls
    assert {"prometheus_query", "kubectl_get", "kubectl_events"} <= set(out.tool_calls)
    for _, a in tools:
        json.loads(a["gen_ai.tool.call.arguments"])
        assert a["afterfix.run.id"] == out.run_id and a["afterfix.incident.id"] == "INC-R"
    [(_, d)] = spans_of(exporter, "decision")
    assert d["afterfix.decision.policy"] == "hpa_capacity"
    assert json.loads(d["afterfix.decision.inputs"])["hpa"]["maxReplicas"] == 2


def test_wrong_tool_defect_feeds_later_steps(world):
    cluster, make, exporter = world
    cluster.tick(sc.at(141) - cluster.clock.now())
    out = make(3).handle("INC-W", sc.SEARCH, "latency_p95_ms", 1500, 300, defect="wrong_tool")
    tools = [a for _, a in spans_of(exporter, op="execute_tool")]
    third = tools[2]
    assert json.loads(third["gen_ai.tool.call.arguments"]) == {"resource": "replicasets", "namespace": "sohp",
                                                               "labelSelector": "app=search"}
    assert json.loads(third["gen_ai.tool.call.result"])["items"] == []
    [(_, d)] = spans_of(exporter, "decision")
    assert json.loads(d["afterfix.decision.inputs"])["hpa"] is None
    assert out.choice.selected == "scale_deployment" and out.action_status == "applied"
    assert out.verified == "failure"  # the HPA, which the agent never saw, scaled it back
    assert cluster.get("apps/v1", "Deployment", "shop", "search")["spec"]["replicas"] == 2


@pytest.mark.parametrize("metrics,expected", [
    ({"latency_p95_ms": 900, "error_rate": 0.2, "cpu_utilization": 1.0, "memory_mb": 200}, ["latency_p95_ms"]),
    ({"latency_p95_ms": 90, "error_rate": 0.3, "cpu_utilization": 0.4, "memory_mb": 200}, ["error_rate"]),
    ({"latency_p95_ms": 90, "error_rate": 0.0, "cpu_utilization": 0.4, "memory_mb": 400}, ["memory_mb"]),
    ({"latency_p95_ms": 90, "error_rate": 0.0, "cpu_utilization": 0.4, "memory_mb": 200}, []),
])
def test_alert_rules(metrics, expected):
    assert [a[0] for a in anomalies(Service("shop", "x"), metrics)] == expected


def test_trust_level_is_checked(world):
    _, make, _ = world
    with pytest.raises(ValueError, match="trust_level=5"):
        make(5)


def test_a_failing_runbook_leaves_the_incident_open_and_the_shift_going(world):
    cluster, make, exporter = world
    out = make(3).handle("INC-G", Service("shop", "ghost"), "latency_p95_ms", 900, 300)
    assert out.error and "404" in out.error and out.choice is None
    [(tool, t)] = [(s, a) for s, a in spans_of(exporter, op="execute_tool") if a["gen_ai.tool.name"] == "kubectl_get"]
    assert tool.status.status_code.name == "ERROR" and json.loads(t["gen_ai.tool.call.arguments"])["name"] == "ghost"
    [(incident, a)] = spans_of(exporter, "incident")
    assert incident.status.status_code.name == "ERROR" and a["afterfix.incident.status"] == "open"


def test_runs_record_their_tools_and_decisions_the_calls_they_read(world):
    from afterfix.analysis.findings.tool_schemas import parse

    cluster, make, exporter = world
    cluster.tick(sc.at(141) - cluster.clock.now())
    make(3).handle("INC-W", sc.SEARCH, "latency_p95_ms", 1500, 300, defect="wrong_tool")
    [(_, run)] = spans_of(exporter, op="invoke_agent")
    tools = {t["name"]: t["parameters"] for t in json.loads(run["gen_ai.tool.definitions"])}
    assert set(tools) == {"prometheus_query", "kubectl_get", "kubectl_events", "kubectl_describe", "pg_stat_statements"}
    namespaces = sorted(n["metadata"]["name"] for n in cluster.list("v1", "Namespace", None))
    assert "shop" in namespaces and tools["kubectl_get"]["properties"]["namespace"]["enum"] == namespaces
    calls = [a for _, a in spans_of(exporter, op="execute_tool")]
    defs = parse(run["gen_ai.tool.definitions"])
    # every call keeps to the declared tools but the third, whose namespace is misspelt
    assert [defs.check(a["gen_ai.tool.name"], a["gen_ai.tool.call.arguments"]) for a in calls[:4]] == [
        None, None, f"namespace: 'sohp' is not one of {namespaces!r}", None]
    assert all(defs.check(a["gen_ai.tool.name"], a["gen_ai.tool.call.arguments"]) is None for a in calls[3:])
    [(_, d)] = spans_of(exporter, "decision")
    inputs = json.loads(d["afterfix.decision.inputs"])
    ids = {a["gen_ai.tool.call.id"]: a for a in calls}
    assert inputs["sources"]["hpa"] == [calls[2]["gen_ai.tool.call.id"]]
    assert inputs["sources"]["deployment"] == [calls[1]["gen_ai.tool.call.id"]]
    assert {ids[c]["gen_ai.tool.name"] for c in inputs["sources"]["metrics"]} == {"prometheus_query"}
    assert len(inputs["sources"]["metrics"]) == 6 and set(inputs["sources"]) <= set(inputs)
