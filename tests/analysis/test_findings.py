"""Each finding detector both ways, on nights built for the purpose: with the pattern it yields the
finding, and without it none of that kind. The first-bad-step detector has its own file."""

from __future__ import annotations

import pytest
from nights import Night, minutes

from afterfix.analysis.findings import find, findings_frame

RESTART = ("restart", {"metadata.generation": 1}, {"metadata.generation": 2})
CLEAN = "2026-11-27T07:00"


def kinds(store, **kw) -> list[str]:
    return [f.kind for f in find(store, **kw)]


def of(store, kind, **kw):
    return [f for f in find(store, kinds=[kind], **kw)]


# -- masked issue -------------------------------------------------------------------------------------


def test_masked_issue_three_restarts_across_two_nights_answers_will_it_happen_again(tmp_path):
    night = Night(tmp_path)
    for when, inc in (("2026-11-26T23:10", "INC-1"), ("2026-11-27T01:30", "INC-2"), ("2026-11-28T00:20", "INC-3")):
        night.at(when).incident(inc, "shop/cart", "memory_mb", 400, 384, change=RESTART)
    found = of(night.store(), "masked_issue")
    assert len(found) == 1
    f = found[0]
    assert f.target == "shop/cart" and f.details["repeats"] == 3 and f.details["nights"] == 2
    assert f.details["will_recur"] == "yes"
    assert "Will it do this again tonight? Yes" in f.explanation
    assert [e.kind for e in f.evidence] == ["action"] * 3
    assert all("memory_mb 400 over 384" in e.text for e in f.evidence)
    assert f.severity == "high"


def test_masked_issue_is_not_found_for_one_fix_or_for_different_workloads(tmp_path):
    night = Night(tmp_path)
    night.at("2026-11-26T23:10").incident("INC-1", "shop/cart", "memory_mb", 400, 384, change=RESTART)
    night.at("2026-11-27T01:30").incident("INC-2", "shop/orders", "memory_mb", 400, 384, change=RESTART)
    night.at("2026-11-27T02:30").incident("INC-3", "shop/cart", "latency_p95_ms", 900, 300,
                                         change=("scale", {"spec.replicas": 2}, {"spec.replicas": 4}))
    assert of(night.store(), "masked_issue") == []


def test_masked_issue_says_perhaps_not_when_a_different_fix_followed(tmp_path):
    night = Night(tmp_path)
    night.at("2026-11-26T23:10").incident("INC-1", "shop/cart", "memory_mb", 400, 384, change=RESTART)
    night.at("2026-11-27T01:30").incident("INC-2", "shop/cart", "memory_mb", 400, 384, change=RESTART)
    night.at("2026-11-27T02:00").incident("INC-3", "shop/cart", "memory_mb", 390, 384, change=(
        "patch", {"spec.template.spec.containers[name=cart].resources.limits.memory": "512Mi"},
        {"spec.template.spec.containers[name=cart].resources.limits.memory": "1Gi"}))
    (f,) = of(night.store(), "masked_issue")
    assert f.details["will_recur"] == "maybe" and "Perhaps not" in f.explanation


def test_masked_issue_with_two_fixes_at_the_same_moment_still_answers(tmp_path):
    # two agents restarting one workload at once: no gap between the fixes, and no division by it
    night = Night(tmp_path)
    for inc in ("INC-1", "INC-2"):
        night.at("2026-11-26T23:10").incident(inc, "shop/cart", "memory_mb", 400, 384, change=RESTART)
    (f,) = of(night.store(), "masked_issue")
    assert f.details["repeats"] == 2 and "times in an 8-hour shift" in f.explanation


# -- unverified action ----------------------------------------------------------------------------------


@pytest.mark.parametrize("verified, severity, words", [
    (None, "medium", "never verified"),
    ("failure", "high", "verification failure"),
    ("inconclusive", "medium", "verification inconclusive"),
])
def test_unverified_action_without_or_with_a_failed_check(tmp_path, verified, severity, words):
    night = Night(tmp_path)
    ids = night.incident("INC-1", "shop/search", "latency_p95_ms", 1600, 300, verified=verified,
                         change=("scale", {"spec.replicas": 2}, {"spec.replicas": 3}))
    (f,) = of(night.store(), "unverified_action")
    assert f.severity == severity and words in f.title
    assert f.details["action_id"] == ids["action_id"] and f.target == "shop/search"


def test_a_verified_change_and_a_read_only_run_are_not_unverified(tmp_path):
    night = Night(tmp_path)
    night.incident("INC-1", "shop/search", "latency_p95_ms", 1600, 300, verified="success",
                   change=("scale", {"spec.replicas": 2}, {"spec.replicas": 3}))
    night.incident("INC-2", "shop/cart", "latency_p95_ms", 500, 300, change=None)
    assert of(night.store(), "unverified_action") == []


# -- duplicate investigations -----------------------------------------------------------------------------


def test_three_team_agents_on_one_cause_cost_time_and_pages(tmp_path):
    night = Night(tmp_path)
    night.metric("shop/checkout", "latency_p95_ms", minutes("2026-11-27T01:50", [100] * 5), depends_on=["platform/session-cache"])
    night.metric("platform/session-cache", "latency_p95_ms", minutes("2026-11-27T01:50", [100] * 5))
    for agent in ("checkout-team-agent", "orders-team-agent"):
        night.at("2026-11-27T02:10").incident("INC-7", "platform/session-cache", "latency_p95_ms", 4000, 300,
                                              agent=agent, paged=(f"{agent[:-11]}-oncall",), work_s=120)
    # a correlated alert on a workload that depends on the cache, a different incident
    night.at("2026-11-27T02:11").incident("INC-8", "shop/checkout", "latency_p95_ms", 900, 300,
                                          agent="platform-team-agent", paged=("platform-oncall",), work_s=60,
                                          change=("patch", {"spec.maxReplicas": 1}, {"spec.maxReplicas": 3}))
    (f,) = of(night.store(), "duplicate_investigation")
    assert sorted(f.details["agents"]) == ["checkout-team-agent", "orders-team-agent", "platform-team-agent"]
    assert sorted(f.details["paged"]) == ["checkout-oncall", "orders-oncall", "platform-oncall"]
    assert f.target == "platform/session-cache"
    assert f.details["agent_seconds"] > 300 and f.severity == "high"
    assert len(f.run_ids) == 3 and "3 paged" in f.explanation


def test_one_agent_or_runs_far_apart_or_unrelated_workloads_are_not_duplicates(tmp_path):
    night = Night(tmp_path)
    night.at("2026-11-27T01:00").incident("INC-1", "shop/cart", "latency_p95_ms", 900, 300, agent="a")
    night.at("2026-11-27T01:00").incident("INC-2", "shop/cart", "latency_p95_ms", 900, 300, agent="a")  # same agent
    night.at("2026-11-27T03:00").incident("INC-3", "shop/cart", "latency_p95_ms", 900, 300, agent="b")  # later
    night.at("2026-11-27T03:01").incident("INC-4", "shop/search", "latency_p95_ms", 900, 300, agent="c")  # unrelated
    assert of(night.store(), "duplicate_investigation") == []


# -- bundled rollback -----------------------------------------------------------------------------------------


ROLLBACK = ("rollback",
            {"image": "payments:2.4.0", "env": {"DB_POOL_SIZE": "20", "LOG_LEVEL": "info"}, "revision": "2"},
            {"image": "payments:2.3.1", "env": {"DB_POOL_SIZE": "5", "LOG_LEVEL": "info"}, "revision": "3"})


@pytest.mark.parametrize("question", [
    "payments 2.4.0 fails: roll back to payments:2.3.1?",
    # a number in the question that happens to be the pool size's old value does not make it the aim
    "errors at 20 % since payments:2.4.0 rolled out: roll back?",
])
def test_a_rollback_that_also_reverts_the_pool_size_names_the_field(tmp_path, question):
    night = Night(tmp_path)
    night.at("2026-11-26T23:30").incident("INC-1", "shop/payments", "error_rate", 0.3, 0.05, change=ROLLBACK,
                                          question=question)
    (f,) = of(night.store(), "bundled_rollback")
    assert f.details["also_undone"] == ["env.DB_POOL_SIZE"]
    fields = {x["path"]: x for x in f.details["fields"]}
    assert fields["image"]["intended"] and not fields["env.DB_POOL_SIZE"]["intended"]
    assert "revision" not in fields and "env.LOG_LEVEL" not in fields
    assert "'20' → '5'" in f.explanation
    assert "env.DB_POOL_SIZE 20 → 5" in f.title


def test_a_rollback_that_changes_one_field_or_a_patch_is_not_bundled(tmp_path):
    night = Night(tmp_path)
    night.incident("INC-1", "shop/payments", "error_rate", 0.3, 0.05,
                   change=("rollback", {"image": "p:2.4.0", "revision": "2"}, {"image": "p:2.3.1", "revision": "3"}))
    night.incident("INC-2", "shop/payments", "error_rate", 0.3, 0.05,
                   change=("patch", {"image": "p:2.4.0", "env": {"A": "1"}}, {"image": "p:2.3.1", "env": {"A": "2"}}))
    assert of(night.store(), "bundled_rollback") == []


# -- side effects -------------------------------------------------------------------------------------------------


def _payments_night(tmp_path, after_peak: list[float]):
    night = Night(tmp_path)
    baseline = [120, 125, 118, 130, 122] * 24  # 21:30 -> 23:30, before the alert
    night.metric("shop/payments", "latency_p95_ms", minutes("2026-11-26T21:30", baseline + [900] * 5 + [125] * 60 + after_peak))
    night.metric("shop/checkout", "latency_p95_ms",
                 minutes("2026-11-26T21:30", [200] * 120 + [600] * 5 + [200] * 60 + [200] * len(after_peak)),
                 depends_on=["shop/payments"])
    night.at("2026-11-26T23:30").incident("INC-1", "shop/payments", "error_rate", 0.3, 0.05, change=ROLLBACK)
    return night.store()


def test_latency_that_rises_after_the_rollback_looked_fine_is_a_side_effect(tmp_path):
    store = _payments_night(tmp_path, [125] * 30 + [700] * 20 + [125] * 10)
    (f,) = of(store, "side_effect")
    assert f.target == "shop/payments" and f.details["signal"] == "latency_p95_ms"
    assert f.details["started"].isoformat() == "2026-11-27T01:05:00"  # 23:30 + 5 + 60 + 30 minutes
    assert f.details["peak"] == 700 and f.details["recovered"]
    assert [e.kind for e in f.evidence] == ["action", "metric", "metric"]


def test_a_dependent_that_leaves_its_band_with_the_changed_workload_is_a_side_effect_of_the_change(tmp_path):
    night = Night(tmp_path)
    night.metric("shop/payments", "latency_p95_ms", minutes("2026-11-26T21:30", [120] * 150 + [900] * 50))
    night.metric("shop/checkout", "latency_p95_ms", minutes("2026-11-26T21:30", [200] * 151 + [800] * 49),
                 depends_on=["shop/payments"])
    night.at("2026-11-26T23:30").incident("INC-1", "shop/payments", "error_rate", 0.3, 0.05, change=ROLLBACK)
    found = {f.target: f for f in of(night.store(), "side_effect")}
    assert set(found) == {"shop/payments", "shop/checkout"}
    f = found["shop/checkout"]
    assert f.details["changed"] == "shop/payments" and not f.details["recovered"]


def test_a_dependent_in_trouble_while_the_changed_workload_is_fine_is_not_its_side_effect(tmp_path):
    night = Night(tmp_path)
    night.metric("shop/payments", "latency_p95_ms", minutes("2026-11-26T21:30", [120] * 200))
    night.metric("shop/checkout", "latency_p95_ms", minutes("2026-11-26T21:30", [200] * 150 + [800] * 50),
                 depends_on=["shop/payments"])
    night.at("2026-11-26T23:30").incident("INC-1", "shop/payments", "error_rate", 0.3, 0.05, change=ROLLBACK)
    assert of(night.store(), "side_effect") == []


def test_metrics_that_stay_in_band_after_the_change_give_no_side_effect(tmp_path):
    store = _payments_night(tmp_path, [130] * 60)
    assert of(store, "side_effect") == []


def test_a_night_without_metric_history_gives_no_side_effect(tmp_path):
    night = Night(tmp_path)
    night.incident("INC-1", "shop/payments", "error_rate", 0.3, 0.05, change=ROLLBACK)
    assert of(night.store(), "side_effect") == []


# -- the whole set ------------------------------------------------------------------------------------------------


def test_filters_and_frame(tmp_path):
    night = Night(tmp_path)
    night.at("2026-11-26T23:00").incident("INC-1", "shop/search", "latency_p95_ms", 1600, 300, verified="failure",
                                          change=("scale", {"spec.replicas": 2}, {"spec.replicas": 3}))
    night.at("2026-11-27T03:00").incident("INC-2", "other/api", "latency_p95_ms", 1600, 300, verified=None,
                                          change=("scale", {"spec.replicas": 2}, {"spec.replicas": 3}))
    store = night.store()
    assert kinds(store) == ["unverified_action", "unverified_action"]
    assert [f.incident_id for f in find(store, incident="INC-2")] == ["INC-2"]
    assert [f.incident_id for f in find(store, namespace="shop")] == ["INC-1"]
    from datetime import datetime

    assert [f.incident_id for f in find(store, since=datetime(2026, 11, 27, 1))] == ["INC-2"]
    frame = findings_frame(store)
    assert list(frame["severity"]) == ["high", "medium"]  # most severe first
    assert frame["evidence"].str.startswith("[").all()
    with pytest.raises(ValueError, match="unknown finding kind"):
        find(store, kinds=["nope"])


# -- the faces: command line and the findings view -----------------------------------------------------------------


HOSTILE = "<script>alert(1)</script>\x1b[31m"


def test_cli_table_json_and_the_findings_view(tmp_path, capsys):
    from afterfix.cli import main

    night = Night(tmp_path)
    night.incident("INC-1", "shop/search", "latency_p95_ms", 1600, 300, verified="failure",
                   change=("scale", {"spec.replicas": 2}, {"spec.replicas": 3}), agent=HOSTILE)
    night.store()
    store_path = str(tmp_path / "store")
    assert main(["findings", "--store", store_path]) == 0
    out = capsys.readouterr().out
    assert "verification failure" in out and "\x1b" not in out and "(1 row)" in out
    assert main(["findings", "--store", store_path, "--format", "json", "--kind", "masked_issue"]) == 0
    assert capsys.readouterr().out.strip() == "[]"
    assert main(["query", "--store", store_path, "--format", "json",
                 "SELECT kind, severity FROM findings"]) == 0
    assert '"kind":"unverified_action"' in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:  # argparse's usage error
        main(["findings", "--store", store_path, "--since", "yesterday"])
    assert refused.value.code == 2
    assert "neither a duration" in capsys.readouterr().err
