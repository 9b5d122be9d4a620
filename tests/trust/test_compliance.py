"""Compliance: actions in a hand-built store against the trust policy; violations as findings."""

from __future__ import annotations

from pathlib import Path

import pytest

from afterfix import approvals, convention, sdk
from afterfix.analysis.findings import find, finding_kinds
from afterfix.trust import compliance
from afterfix.trust.policy import load_policy, parse_policy
from afterfix.undo.trace import recording

TEMPLATE = Path(__file__).resolve().parents[2] / "templates" / "trust.yaml"


def act(store, verb: str, kind: str, namespace: str, name: str, *, scenario: str | None = None, level: int = 3,
        status: str | None = None, approve: str | None = None, labels: dict | None = None,
        approval_span: bool = False) -> str:
    """One run with one applied (or `status`) action; `approve`: a person approves it first (ledger)."""
    with recording(store, "test-agent") as rec:
        rec.scenario = scenario
        with rec.run(incident_id=f"INC-{name}", agent_name="test-agent"):
            with rec.action(verb, sdk.Target("uid-" + name, kind, "v1", namespace, name), trust_level=level) as a:
                for key, value in (labels or {}).items():
                    a.set(convention.LABELS_PREFIX + key, value)
                a.before({"spec.x": 1}, "1")
                if approve:
                    req = approvals.open_request(store, action_id=a.action_id, verb=verb, target=f"{kind}/{namespace}/{name}",
                                                 change={"spec": {"x": 2}}, summary="x to 2", agent="test-agent")
                    approvals.decide(store, req.request_id, "approved", approve, "looks right")
                if approval_span:
                    rec.approval(a.action_id, status="approved", approver="lee")
                if status:
                    a.status(status)
                else:
                    a.after({"spec.x": 2}, "2")
    return a.action_id


@pytest.fixture
def policy():
    return load_policy(TEMPLATE)


def test_a_migration_applied_without_approval_is_a_violation_naming_the_rule_and_its_line(store, policy):
    action_id = act(store, "create", "Job", "shop", "orders-index", scenario="db_migration", level=3)
    [v] = compliance.check(store, policy)
    rule = policy.rule("db-migrations")
    assert (v.action_id, v.rule_id, v.allowed_level, v.what_happened, v.severity) == \
        (action_id, "db-migrations", 2, "applied without approval", "high")
    assert v.rule_line == rule.line and v.recorded_level == 3 and v.labels == {"scenario": "db_migration"}
    assert f"rule db-migrations ({TEMPLATE} line {rule.line})" in v.message
    assert "create Job shop/orders-index" in v.message and "approval queue" in v.message


@pytest.mark.parametrize("approved_by", ["ledger", "span"])
def test_an_approved_level_2_action_complies(store, policy, approved_by):
    act(store, "create", "Job", "shop", "orders-index", scenario="db_migration", level=2,
        approve="lee" if approved_by == "ledger" else None, approval_span=approved_by == "span")
    assert compliance.check(store, policy) == []


def test_acting_under_level_1_is_critical_and_a_recommendation_is_not_a_violation(store, policy):
    acted = act(store, "patch", "ConfigMap", "shop", "checkout-flags")
    act(store, "patch", "ConfigMap", "shop", "other-flags", status="recommended")
    [v] = compliance.check(store, policy)
    assert (v.action_id, v.rule_id, v.allowed_level, v.severity) == (acted, "configmaps", 1, "critical")
    assert "recommendation" in v.message


def test_levels_3_and_4_may_act_and_unmatched_actions_get_the_default_level(store):
    policy = parse_policy("default_level: 2\nrules:\n  - id: hpa\n    kinds: [HorizontalPodAutoscaler]\n    level: 3\n",
                          "p.yaml")
    act(store, "patch", "HorizontalPodAutoscaler", "shop", "catalog")
    other = act(store, "scale", "Deployment", "shop", "catalog")
    [v] = compliance.check(store, policy)
    assert (v.action_id, v.rule_id, v.allowed_level) == (other, None, 2)
    assert "the default level of p.yaml (no rule matched)" in v.message


def test_labels_on_the_action_span_and_the_ladder_levels_are_used(store):
    policy = parse_policy("rules:\n  - id: shop-team\n    labels: {team: [shop]}\n    level: 1\n    cap: 3\n"
                          "  - id: rest\n    level: 4\n", "p.yaml")
    act(store, "patch", "Deployment", "shop", "cart", labels={"team": "shop"})
    act(store, "patch", "Deployment", "shop", "orders", labels={"team": "orders"})
    [v] = compliance.check(store, policy)
    assert v.rule_id == "shop-team" and v.labels == {"team": "shop"}
    # promoted by the ladder to 4, but capped at 3: acting is allowed
    assert compliance.check(store, policy, levels={"shop-team": 4}) == []
    assert len(compliance.check(store, policy, levels=lambda rule_id, when: 2 if rule_id == "shop-team" else None)) == 1


def test_violations_are_findings_of_a_registered_kind(store, policy, tmp_path, monkeypatch):
    act(store, "rollback", "Deployment", "shop", "payments", level=3)
    assert "trust_violation" in finding_kinds()
    monkeypatch.setenv("AFTERFIX_TRUST", str(TEMPLATE))
    [f] = find(store, kinds=["trust_violation"])
    assert (f.kind, f.severity, f.target, f.details["rule_id"]) == ("trust_violation", "high", "shop/payments", "rollbacks")
    assert f.title == "rollback Deployment shop/payments: applied without the approval Level 2 requires"
    assert f"line {policy.rule('rollbacks').line}" in f.explanation and f.evidence[0].span_id
    # a policy given explicitly (afterfix findings --trust FILE) replaces the file for the detector
    lenient = tmp_path / "lenient.yaml"
    lenient.write_text("rules:\n  - id: all\n    level: 4\n")
    compliance.register(load_policy(lenient))
    try:
        assert find(store, kinds=["trust_violation"]) == []
    finally:
        compliance.register()


def test_afterfix_findings_shows_violations_against_the_policy_given(store, tmp_path, capsys, monkeypatch):
    import json

    from afterfix.cli import main

    monkeypatch.delenv("AFTERFIX_TRUST", raising=False)
    act(store, "rollback", "Deployment", "shop", "payments")
    assert main(["findings", "--store", str(store.root), "--kind", "trust_violation", "--format", "json"]) == 0
    [f] = json.loads(capsys.readouterr().out)
    assert f["details"]["rule_id"] == "rollbacks" and f["details"]["policy"] == str(TEMPLATE)
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - id: all\n    level: 3\n    cap: 1\n")
    try:
        assert main(["findings", "--store", str(store.root), "--trust", str(bad)]) != 0
        assert f"{bad} line 4: rules[0].cap: 1 is below the rule's level 3" in capsys.readouterr().err
        lenient = tmp_path / "lenient.yaml"
        lenient.write_text("rules:\n  - id: all\n    level: 4\n")
        assert main(["findings", "--store", str(store.root), "--kind", "trust_violation", "--trust", str(lenient)]) == 0
        assert capsys.readouterr().out == "no findings\n"
    finally:
        compliance.register()
