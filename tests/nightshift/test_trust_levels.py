"""The reference agent reads the trust policy: the same short night acts differently under two policies."""

from __future__ import annotations

import json

import pytest

from afterfix import convention
from afterfix.nightshift import scenarios as sc
from afterfix.nightshift.night import run_night
from afterfix.store import Store
from afterfix.trust import compliance
from afterfix.trust.policy import TrustPolicyError, parse_policy

NIGHT = dict(seed=0, scenarios=["hpa_starvation"], until=sc.at(80), llm_tokens=False)


def policy(level: int, **extra) -> str:
    lines = [f"{k}: {v}" for k, v in extra.items()]
    return "\n".join(lines + ["rules:", "  - id: hpa-max", "    verbs: [patch]", "    kinds: [HorizontalPodAutoscaler]",
                              f"    level: {level}", ""])


def night(tmp_path, name: str, text: str, **kw):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    store = Store(tmp_path / name / "store")
    result = run_night(store, workdir=tmp_path / name / "work", trust_policy=path, **NIGHT, **kw)
    rows = store.query(f"""
        SELECT a.action_id, a.verb, a.target_kind, a.status, a.trust_level,
               json_extract_string(s.attributes, '$."{convention.TRUST_RULE}"') AS rule,
               json_extract_string(s.attributes, '$."{convention.TRUST_POLICY}"') AS policy
        FROM actions a JOIN spans s USING (trace_id, span_id) WHERE a.mutating""")
    return store, result, rows.to_dict("records"), path


def hpa_max(night_dir) -> int:
    """catalog's HPA maxReplicas in the cluster as the night left it."""
    state = json.loads((night_dir / "work" / "cluster.json").read_text())
    [hpa] = [o for o in state["objects"] if o["kind"] == "HorizontalPodAutoscaler"]
    return hpa["spec"]["maxReplicas"]


def test_the_same_night_under_two_policies_acts_differently(tmp_path, hook, monkeypatch):
    monkeypatch.delenv("AFTERFIX_WEBHOOK", raising=False)
    # Level 3: the agent patches the HPA, and tells people at once
    store3, result3, [act3], path3 = night(tmp_path, "level3", policy(3, webhook=hook.url))
    assert (act3["verb"], act3["target_kind"], act3["status"], act3["trust_level"]) == \
        ("patch", "HorizontalPodAutoscaler", "applied", 3)
    assert (act3["rule"], act3["policy"]) == ("hpa-max", str(path3))
    assert result3.incidents[0].outcomes[0].action_status == "applied"
    [body] = hook.bodies()
    assert body["source"] == "agent" and body["action_id"] == act3["action_id"]
    assert body["trust"] == {"level": 3, "rule": "hpa-max", "policy": str(path3)}
    assert body["target"]["name"] == "catalog"
    assert body["action"]["change"]["spec"]["maxReplicas"] == hpa_max(tmp_path / "level3") > 2
    [alert] = store3.query("SELECT * FROM alerts").to_dict("records")
    assert (alert["source"], alert["action_id"], alert["severity"]) == ("agent", act3["action_id"], "info")
    assert alert["delivery"].startswith("HTTP 200 from http://127.0.0.1:")

    # Level 1: the same decision, only recommended; nobody is notified, nothing changed
    store1, result1, [act1], _ = night(tmp_path, "level1", policy(1, webhook=hook.url))
    assert (act1["status"], act1["trust_level"], act1["rule"]) == ("recommended", 1, "hpa-max")
    assert result1.incidents[0].outcomes[0].action_status == "recommended"
    assert len(hook.bodies()) == 1 and store1.query("SELECT count(*) AS n FROM alerts")["n"].iloc[0] == 0
    assert hpa_max(tmp_path / "level1") == 2  # as the copy-paste left it

    # and the compliance check agrees with both: neither night broke its own policy
    assert compliance.check(store3, parse_policy(policy(3))) == []
    assert compliance.check(store1, parse_policy(policy(1))) == []
    # while the level-3 night, judged by the level-1 policy, is a violation
    [v] = compliance.check(store3, parse_policy(policy(1), "strict.yaml"))
    assert (v.action_id, v.rule_id, v.allowed_level, v.severity) == (act3["action_id"], "hpa-max", 1, "critical")


def test_level_4_acts_without_notifying_and_level_2_waits_for_the_approver(tmp_path, hook, monkeypatch):
    monkeypatch.setenv("AFTERFIX_WEBHOOK", hook.url)
    store4, _, [act4], _ = night(tmp_path, "level4", policy(4))
    assert (act4["status"], act4["trust_level"]) == ("applied", 4)
    assert hook.bodies() == [] and store4.query("SELECT count(*) AS n FROM alerts")["n"].iloc[0] == 0

    asked = []
    store2, _, [act2], _ = night(tmp_path, "level2", policy(2), approver=lambda r: asked.append(r) or "approved")
    assert (act2["status"], act2["trust_level"]) == ("applied", 2)
    assert [r["action_id"] for r in asked] == [act2["action_id"]]
    assert compliance.check(store2, parse_policy(policy(2))) == []


def test_a_bad_policy_stops_the_night_before_it_starts(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(policy(5))
    with pytest.raises(TrustPolicyError, match=r"bad.yaml line 5: rules\[0\].level: 5 is not a level"):
        run_night(Store(tmp_path / "store"), workdir=tmp_path / "work", trust_policy=path, **NIGHT)
    assert not (tmp_path / "work").exists()


def test_a_policy_lowers_the_migration_to_a_recommendation_but_never_lets_it_run_unasked(tmp_path):
    jobs = "rules:\n  - id: jobs\n    verbs: [create]\n    kinds: [Job]\n    level: {}\n"
    db = dict(seed=0, scenarios=["db_migration"], until=sc.at(200), llm_tokens=False)
    asked = []
    for level in (1, 4):
        path = tmp_path / f"jobs{level}.yaml"
        path.write_text(jobs.format(level))
        store = Store(tmp_path / f"db{level}" / "store")
        run_night(store, workdir=tmp_path / f"db{level}" / "work", trust_policy=path,
                  approver=lambda r: asked.append(level) or "denied", **db)
        [row] = store.query("SELECT verb, target_kind, status, trust_level FROM actions WHERE mutating").to_dict("records")
        assert (row["verb"], row["target_kind"]) == ("create", "Job")
        # Level 1: recommended, nobody asked; Level 4 in the policy: still asked (Level 2), and denied
        assert (row["status"], row["trust_level"]) == (("recommended", 1) if level == 1 else ("denied", 2))
    assert asked == [4]
