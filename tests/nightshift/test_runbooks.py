"""The runbooks' routing and the facts they read off Kubernetes objects."""

from __future__ import annotations

import pytest

from afterfix.analysis.diffs import flatten
from afterfix.nightshift import runbooks
from afterfix.nightshift.agent import Service
from afterfix.nightshift.scenarios import at
from afterfix.undo.analysis import measure_phase, parse_analysis

T0 = "2026-11-26T21:00:00Z"


@pytest.mark.parametrize("runbook,signal,expected", [
    ("capacity", "latency_p95_ms", runbooks.capacity),
    ("db", "latency_p95_ms", runbooks.db),
    ("shared_dependency", "latency_p95_ms", runbooks.shared_dependency),
    ("db", "memory_mb", runbooks.memory),
    ("capacity", "error_rate", runbooks.errors),
])
def test_alerts_go_to_runbooks(runbook, signal, expected):
    assert runbooks.for_signal(Service("shop", "x", runbook=runbook), signal) is expected


def deployment(managed):
    return {"metadata": {"creationTimestamp": T0, "managedFields": managed}}


@pytest.mark.parametrize("managed,hours", [
    ([], 1.5),  # only the creation counts
    ([{"manager": "helm", "time": T0, "fieldsV1": {"f:spec": {"f:template": {}}}}], 1.5),
    ([{"manager": "ci-deploy", "time": "2026-11-26T22:00:00Z", "fieldsV1": {"f:spec": {"f:template": {}}}}], 0.5),
    # a scale by the HPA or an annotation is not a rollout
    ([{"manager": "horizontal-pod-autoscaler", "time": "2026-11-26T22:25:00Z", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
      {"manager": "afterfix-sim", "time": "2026-11-26T22:20:00Z", "fieldsV1": {"f:metadata": {"f:annotations": {}}}}], 1.5),
])
def test_rollout_age_counts_template_changes_only(managed, hours):
    assert runbooks._rollout_age_h(deployment(managed), at(30)) == pytest.approx(hours)


def test_configmap_change_is_the_newest_data_writer():
    cm = {"metadata": {"managedFields": [
        {"manager": "helm", "time": T0, "fieldsV1": {"f:data": {".": {}, "f:a": {}, "f:b": {}}}},
        {"manager": "kubectl-edit", "time": "2026-11-26T23:05:00Z", "fieldsV1": {"f:data": {"f:b": {}}}},
        {"manager": "other", "time": "2026-11-26T23:30:00Z", "fieldsV1": {"f:metadata": {"f:labels": {}}}},
    ]}}
    when, keys = runbooks._configmap_change(cm)
    assert when == at(65) and keys == ["b"]


@pytest.mark.parametrize("obj,expected", [
    (None, None),
    ({"kind": "ReplicaSet", "spec": {"replicas": 2}}, None),  # the wrong kind is not an HPA
    ({"kind": "HorizontalPodAutoscaler", "metadata": {"name": "c"},
      "spec": {"scaleTargetRef": {"name": "c"}, "maxReplicas": 3,
               "metrics": [{"resource": {"name": "cpu", "target": {"averageUtilization": 60}}}]},
      "status": {"currentReplicas": 3, "desiredReplicas": 5}},
     {"name": "c", "minReplicas": 1, "maxReplicas": 3, "currentReplicas": 3, "desiredReplicas": 5,
      "targetCPUUtilizationPercentage": 60}),
])
def test_hpa_facts(obj, expected):
    assert runbooks._hpa_facts(obj) == expected


def test_strip_hash_keeps_the_template_and_drops_the_hash():
    template = {"metadata": {"labels": {"app": "p", "pod-template-hash": "abc"}}, "spec": {"containers": []}}
    assert runbooks._strip_hash(template) == {"metadata": {"labels": {"app": "p"}}, "spec": {"containers": []}}
    assert template["metadata"]["labels"]["pod-template-hash"] == "abc"


@pytest.mark.parametrize("q,mb", [("512Mi", 512), ("1Gi", 1024), ("2048Ki", 2), (str(3 * 2 ** 20), 3), (None, 77)])
def test_memory_quantities(q, mb):
    assert runbooks._memory_mb(q, 77) == pytest.approx(mb)


# ---- the analysis each change records -------------------------------------------------------

PAYMENTS = {"kind": "Deployment", "namespace": "shop", "name": "payments"}


@pytest.mark.parametrize("runbook", sorted(runbooks.CHECKS))
def test_every_runbook_analysis_is_one_the_guard_accepts(runbook):
    thresholds = {check.signal: 7.5 for check in runbooks.CHECKS[runbook]}
    recorded = runbooks.analysis(runbook, thresholds)
    specs = recorded if isinstance(recorded, list) else [recorded]
    assert [s["name"] for s in specs] == [check.name for check in runbooks.CHECKS[runbook]]
    for spec, check in zip(specs, runbooks.CHECKS[runbook]):
        bound = parse_analysis(spec, where=runbook).bind(PAYMENTS)
        assert bound.metric == f"afterfix.workload.{check.signal}"
        assert bound.labels == {"k8s.namespace.name": "shop", "k8s.deployment.name": "payments"}
        assert bound.initial_delay_s == check.after_s and bound.count == check.count
        assert bound.to_dict()["successCondition"] == f"result {check.op} 7.5"


@pytest.mark.parametrize("check,threshold", [(runbooks.LATENCY, 300.0), (runbooks.ERRORS, runbooks.ERROR_RATE_OK),
                                             (runbooks.MEMORY, 256.0), (runbooks.RESTARTS, 3.0),
                                             (runbooks.LATENCY, 333.3333333)])
def test_the_analysis_judges_every_value_as_the_verification_does(check, threshold):
    """Successful exactly where the agent's verification says good, Failed everywhere else, the
    threshold itself included."""
    spec = parse_analysis(check.spec(threshold), where=check.name).bind(PAYMENTS)
    for value in (0.0, threshold * 0.5, threshold, threshold * (1 + 1e-9), threshold * 2):
        phase, why = measure_phase(spec, value)
        assert phase == ("Successful" if check.good(value, threshold) else "Failed"), (value, why)
    assert check.good(threshold, threshold) is (check.op == "<=")


def test_an_hpa_change_measures_the_deployment_it_scales():
    hpa = {"kind": "HorizontalPodAutoscaler", "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "catalog-api"}}}
    assert runbooks._workload(hpa) == "catalog-api" and runbooks._workload({"spec": {"replicas": 2}}) is None
    spec = runbooks.analysis("capacity", {"latency_p95_ms": 300}, runbooks._workload(hpa))
    bound = parse_analysis(spec).bind({"kind": "HorizontalPodAutoscaler", "namespace": "shop", "name": "catalog"})
    assert bound.labels == {"k8s.namespace.name": "shop", "k8s.deployment.name": "catalog-api"}


def test_a_check_without_a_threshold_is_left_out():
    assert [s["name"] for s in runbooks.analysis("memory", {"memory_mb": 256, "restarts": 2})] == ["memory", "restarts"]
    assert runbooks.analysis("memory", {"memory_mb": 256, "restarts": None})["name"] == "memory"
    assert runbooks.analysis("memory", {"memory_mb": None, "restarts": None}) is None


def test_the_rollback_records_the_template_as_the_object_holds_it():
    deploy = {"metadata": {"annotations": {runbooks.REVISION: "4", "other": "x"}, "generation": 9},
              "spec": {"replicas": 3, "template": {"metadata": {"labels": {"app": "p"}}, "spec": {"containers": [
                  {"name": "app", "image": "p:2", "ports": [{"containerPort": 80}],
                   "env": [{"name": "A", "value": "1"}, {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s"}}},
                           {"name": "B", "value": ""}]},
                  {"name": "proxy", "image": "envoy:1", "envFrom": [{"configMapRef": {"name": "c"}}]}]}}}}
    facts = runbooks._template_facts(deploy)
    assert facts == {"metadata": {"annotations": {runbooks.REVISION: "4"}},
                     "spec": {"template": {"spec": {"containers": [
                         {"name": "app", "image": "p:2", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": ""}]},
                         {"name": "proxy", "image": "envoy:1"}]}}}}
    assert list(flatten(facts)) == [
        "metadata.annotations.deployment.kubernetes.io/revision",
        "spec.template.spec.containers[name=app].image",
        "spec.template.spec.containers[name=app].env[name=A].value",
        "spec.template.spec.containers[name=app].env[name=B].value",
        "spec.template.spec.containers[name=proxy].image"]
    del deploy["metadata"]["annotations"]
    assert "metadata" not in runbooks._template_facts(deploy)
