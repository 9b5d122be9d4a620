"""The runbooks' routing and the facts they read off Kubernetes objects."""

from __future__ import annotations

import pytest

from afterfix.nightshift import runbooks
from afterfix.nightshift.agent import Service
from afterfix.nightshift.scenarios import at

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
