"""The decision policies: table-driven cases, purity, and the replay registry."""

from __future__ import annotations

import copy
import json

import pytest

from afterfix.nightshift import policy
from afterfix.nightshift.policy import POLICIES, Choice, replay

HPA_PINNED = {"name": "catalog", "minReplicas": 2, "maxReplicas": 2, "currentReplicas": 2, "desiredReplicas": 2,
              "targetCPUUtilizationPercentage": 80}
HPA_ROOM = dict(HPA_PINNED, maxReplicas=10, desiredReplicas=4)


def capacity(p95, cpu=1.0, hpa=HPA_PINNED, replicas=2):
    return {"service": "shop/catalog", "slo_latency_ms": 300, "max_replicas_cap": 12, "hpa": hpa,
            "metrics": {"latency_p95_ms": p95, "cpu_utilization": cpu, "replicas": replicas, "restarts": 0,
                        "memory_mb": 180}}


def memory(mem, growth, restarts_tonight=0, rollout_age_h=2.0):
    return {"service": "shop/cart", "metrics": {"memory_mb": mem, "restarts": 0}, "memory_limit_mb": 512,
            "growth_mb_per_hour": growth, "last_rollout_age_h": rollout_age_h, "agent_restarts_tonight": restarts_tonight}


REV1 = {"revision": 1, "image": "payments:2.3.1", "env": {"DB_POOL_SIZE": "5"}}
REV2 = {"revision": 2, "image": "payments:2.4.0", "env": {"DB_POOL_SIZE": "20"}}


def rollout(err, age_min=8, previous=REV1):
    return {"service": "shop/payments", "metrics": {"error_rate": err}, "baseline_error_rate": 0.01,
            "rollout_age_min": age_min, "pod_reasons": {"Ready": 3}, "current": REV2, "previous": previous}


def shared(team, dep_p95=4000):
    return {"team": team, "service": "shop/checkout", "metrics": {"cpu_utilization": 0.3}, "slo_latency_ms": 300,
            "dependency": {"service": "platform/session-cache", "owner_team": "platform",
                           "hpa": {"name": "session-cache", "maxReplicas": 1, "currentReplicas": 1},
                           "metrics": {"latency_p95_ms": dep_p95, "cpu_utilization": 1.0}}}


def db(rows_examined=4_100_000, p95=510):
    return {"service": "shop/orders", "metrics": {"latency_p95_ms": p95}, "slo_latency_ms": 300,
            "slow_query": {"table": "orders", "column": "customer_id", "mean_ms": 380, "rows_examined": rows_examined},
            "table_rows": 4_200_000, "db_connections_used": 22, "db_connections_max": 100}


def flag(stale, value="false", wanted="false", err=0.3, template_age_h=2.2):
    return {"service": "shop/checkout", "metrics": {"error_rate": err},
            "configmap": {"name": "checkout-flags", "key": "feature.new_checkout", "value": value, "wanted": wanted,
                          "changed_min_ago": 10},
            "pods_started_before_change": stale, "pods_total": 3, "template_age_h": template_age_h}


CASES = [
    # (policy, observations, selected, rejected ids)
    ("hpa_capacity", capacity(2800), "raise_hpa_max", {"scale_deployment", "wait_for_hpa", "restart_pods", "no_action"}),
    ("hpa_capacity", capacity(2800, hpa=None), "scale_deployment", {"restart_pods", "no_action"}),
    ("hpa_capacity", capacity(900, hpa=HPA_ROOM), "wait_for_hpa", {"raise_hpa_max", "scale_deployment", "no_action"}),
    ("hpa_capacity", capacity(120, cpu=0.4), "no_action", {"raise_hpa_max", "scale_deployment", "restart_pods"}),
    ("memory_leak", memory(400, 100), "restart_pods", {"raise_memory_limit", "rollback_revision", "no_action"}),
    ("memory_leak", memory(400, 100, restarts_tonight=1), "restart_and_escalate", {"raise_memory_limit", "no_action"}),
    ("memory_leak", memory(200, 0), "no_action", {"restart_pods", "raise_memory_limit"}),
    ("bad_rollout", rollout(0.3), "rollback_revision", {"patch_image", "scale_deployment", "no_action"}),
    ("bad_rollout", rollout(0.3, previous=None), "scale_deployment", {"rollback_revision", "patch_image", "no_action"}),
    ("bad_rollout", rollout(0.004), "no_action", {"rollback_revision", "patch_image", "scale_deployment"}),
    ("shared_dependency", shared("platform"), "fix_dependency", {"defer_to_owner", "scale_own_service", "no_action"}),
    ("shared_dependency", shared("checkout"), "defer_to_owner", {"fix_dependency", "scale_own_service", "no_action"}),
    ("shared_dependency", shared("checkout", dep_p95=90), "no_action", {"fix_dependency", "defer_to_owner"}),
    ("db_migration", db(), "create_index_migration", {"raise_db_pool", "add_read_replica", "no_action"}),
    ("db_migration", db(rows_examined=20), "add_read_replica", {"create_index_migration", "raise_db_pool", "no_action"}),
    ("feature_flag", flag(3), "rolling_restart", {"patch_configmap", "rollback_revision", "no_action"}),
    ("feature_flag", flag(0, value="true"), "patch_configmap", {"rolling_restart", "rollback_revision", "no_action"}),
]


@pytest.mark.parametrize("name,obs,selected,rejected", CASES, ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_policy_choices(name, obs, selected, rejected):
    before = copy.deepcopy(obs)
    choice = POLICIES[name](obs)
    assert obs == before, "a policy must not change its observations"
    assert isinstance(choice, Choice)
    assert choice.question and choice.reason
    assert choice.selected == selected, choice.to_dict()
    verdicts = {o.id: o.verdict for o in choice.options}
    assert verdicts[selected] == "selected"
    assert sum(v == "selected" for v in verdicts.values()) == 1
    assert rejected <= {i for i, v in verdicts.items() if v == "rejected"}
    for o in choice.options:
        assert o.reason.strip(), f"option {o.id} has no reason"
        assert o.evidence, f"option {o.id} has no evidence"
    assert choice.chosen.reason == choice.reason


@pytest.mark.parametrize("name,obs,selected,rejected", CASES[:6], ids=[c[0] + "-" + c[2] for c in CASES[:6]])
def test_replay_through_json_gives_the_same_choice(name, obs, selected, rejected):
    recorded = json.loads(json.dumps(obs))
    assert replay(name, recorded) == POLICIES[name](obs)
    assert replay(name, recorded).to_dict() == json.loads(json.dumps(POLICIES[name](obs).to_dict()))


def test_rejected_for_score_says_what_won():
    choice = policy.decide_bad_rollout(rollout(0.3))
    patch_image = choice.option("patch_image")
    assert "rollback_revision" in patch_image.reason and "0.6" in patch_image.reason


def test_bad_rollout_evidence_shows_the_bundled_change():
    evidence = policy.decide_bad_rollout(rollout(0.3)).option("rollback_revision").evidence
    assert any("env.DB_POOL_SIZE: '20' -> '5'" in e for e in evidence), evidence
    assert any("image: 'payments:2.4.0' -> 'payments:2.3.1'" in e for e in evidence)


def test_raise_hpa_max_proposes_enough_replicas_within_the_cap():
    action = policy.decide_hpa_capacity(capacity(2800)).chosen.action
    assert action["kind"] == "HorizontalPodAutoscaler"
    assert 2 < action["patch"]["spec"]["maxReplicas"] <= 12


def test_registry_and_unknown_policy():
    assert set(POLICIES) == {"hpa_capacity", "memory_leak", "bad_rollout", "shared_dependency", "db_migration",
                             "feature_flag"}
    with pytest.raises(KeyError, match="known: bad_rollout"):
        replay("nope", {})


def test_option_lookup_names_the_decision():
    with pytest.raises(KeyError, match="no option 'x'"):
        policy.decide_db_migration(db()).option("x")
