"""The rollback engine against the Kubernetes API simulator, through the official client: the cases
an SRE meets when undoing one agent change (drift, a recreated object, a bundled change, a 409
race, a dry-run rejection, a 403, an HPA, a ConfigMap, a decision whose second action fails)."""

from __future__ import annotations

import copy
import json

import pytest

from afterfix.nightshift.apiserver import ApiServer
from afterfix.nightshift.authz import Authorizer
from afterfix.undo.kube import connect
from afterfix.undo.plan import CannotPlan, make_plan
from afterfix.undo.rollback import rollback_action, rollback_decision

APP = "spec.template.spec.containers[name=payments]"
POOL = f"{APP}.env[name=DB_POOL_SIZE].value"
IMAGE = f"{APP}.image"


def bad_rollout_rollback(world) -> str:
    """The agent's rollback of payments to the previous template: the bad image goes, and the
    DB_POOL_SIZE fix that came with the new one goes too."""
    old = world.get("Deployment", "shop", "payments")
    template = copy.deepcopy(old["spec"]["template"])
    template["spec"]["containers"][0]["image"] = "registry.example/payments:2.3.1"
    template["spec"]["containers"][0]["env"] = [{"name": "DB_POOL_SIZE", "value": "5"}, {"name": "LOG_LEVEL", "value": "info"}]
    return world.change("Deployment", "shop", "payments", {"spec": {"template": template}}, [IMAGE, POOL], verb="rollback")


def rows(world, sql="SELECT * FROM rollbacks ORDER BY time"):
    return world.store.query(sql).to_dict("records")


def container(world):
    return world.get("Deployment", "shop", "payments")["spec"]["template"]["spec"]["containers"][0]


def test_hpa_change_is_undone_with_a_dry_run_first_a_record_and_a_trace(world):
    act = world.change("HorizontalPodAutoscaler", "shop", "catalog", {"spec": {"maxReplicas": 6}}, ["spec.maxReplicas"])
    plan = make_plan(world.store, world.cluster, act)
    assert plan.outcome == "ready" and plan.patch["spec"] == {"maxReplicas": 2}
    assert plan.patch["metadata"]["resourceVersion"] == world.get("HorizontalPodAutoscaler", "shop", "catalog")["metadata"]["resourceVersion"]
    assert {c.name: c.status for c in plan.checks}["same object"] == "pass"
    result = rollback_action(world.store, world.cluster, act, who="ana", reason="max 6 is too many for the db")
    assert result.outcome == "rolled_back", result.message
    assert result.exit_code == 0 and result.result["dry_run"]["matches"]
    hpa = world.get("HorizontalPodAutoscaler", "shop", "catalog")
    assert hpa["spec"]["maxReplicas"] == 2 and hpa["spec"]["minReplicas"] == 2
    managers = {m["manager"] for m in hpa["metadata"]["managedFields"]}
    assert "afterfix" in managers  # written with fieldManager afterfix
    ledger = rows(world)
    assert [r["outcome"] for r in ledger] == ["started", "rolled_back"]
    done = ledger[-1]
    assert done["who"] == "ana" and done["reason"] == "max 6 is too many for the db" and not done["automatic"]
    assert done["resource_version_before"] and done["resource_version_after"] != done["resource_version_before"]
    assert json.loads(done["plan"])["patch"]["spec"] == {"maxReplicas": 2}
    # the rollback is its own decision and action trace, under the same incident
    traced = world.store.query("SELECT verb, agent_name, incident_id, field_manager, before, after FROM actions "
                               "WHERE verb = 'rollback'").to_dict("records")
    assert traced == [{"verb": "rollback", "agent_name": "afterfix", "incident_id": "inc-undo-1", "field_manager": "afterfix",
                       "before": '{"spec.maxReplicas":6}', "after": '{"spec.maxReplicas":2}'}]
    assert not world.store.query("SELECT * FROM decisions WHERE policy = 'afterfix rollback'").empty
    # verified by reading the object back, so no finding calls it unverified
    from afterfix.analysis.findings import find

    assert [f.title for f in find(world.store, kinds=["unverified_action"])] == [
        "patch HorizontalPodAutoscaler shop/catalog: never verified"]  # the agent's own change, not the rollback


def test_rolling_back_twice_changes_nothing_and_says_so(world):
    act = world.change("HorizontalPodAutoscaler", "shop", "catalog", {"spec": {"maxReplicas": 6}}, ["spec.maxReplicas"])
    assert rollback_action(world.store, world.cluster, act, who="ana", reason="r").outcome == "rolled_back"
    rv = world.get("HorizontalPodAutoscaler", "shop", "catalog")["metadata"]["resourceVersion"]
    again = rollback_action(world.store, world.cluster, act, who="bo", reason="r")
    assert again.outcome == "already_rolled_back" and again.exit_code == 0
    assert "already rolled back (by ana" in again.message
    assert world.get("HorizontalPodAutoscaler", "shop", "catalog")["metadata"]["resourceVersion"] == rv


def test_drift_by_another_field_manager_is_refused_with_a_three_way_diff(world):
    act = world.change("HorizontalPodAutoscaler", "shop", "catalog", {"spec": {"maxReplicas": 6}}, ["spec.maxReplicas"])
    world.edit("HorizontalPodAutoscaler", "shop", "catalog", {"spec": {"maxReplicas": 8}}, manager="kubectl-edit")
    result = rollback_action(world.store, world.cluster, act, who="ana", reason="r")
    assert result.outcome == "refused" and result.exit_code == 1
    assert "kubectl-edit" in result.message and "--override-drift" in result.message
    drift = next(c for c in result.plan.checks if c.name == "drift")
    assert drift.status == "block"
    row = drift.details["three_way"][0]
    assert {k: row[k] for k in ("before", "agent", "now", "owner")} == {"before": 2, "agent": 6, "now": 8, "owner": "kubectl-edit"}
    assert world.get("HorizontalPodAutoscaler", "shop", "catalog")["spec"]["maxReplicas"] == 8
    assert [r["outcome"] for r in rows(world)] == ["refused"]
    # the separate, explicit override restores it, and says why
    forced = rollback_action(world.store, world.cluster, act, who="ana", reason="r",
                             override_drift_reason="8 was a panic edit during the page")
    assert forced.outcome == "rolled_back", forced.message
    assert world.get("HorizontalPodAutoscaler", "shop", "catalog")["spec"]["maxReplicas"] == 2
    assert rows(world)[-1]["override_reason"] == "8 was a panic edit during the page"


def test_later_edits_to_other_fields_survive_the_minimal_inverse(world):
    act = world.change("HorizontalPodAutoscaler", "shop", "catalog", {"spec": {"maxReplicas": 6}}, ["spec.maxReplicas"])
    world.edit("HorizontalPodAutoscaler", "shop", "catalog", {"spec": {"minReplicas": 1}})
    result = rollback_action(world.store, world.cluster, act, who="ana", reason="r")
    assert result.outcome == "rolled_back", result.message
    hpa = world.get("HorizontalPodAutoscaler", "shop", "catalog")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 2)


def test_a_recreated_object_is_not_the_one_the_agent_changed(world):
    act = world.change("HorizontalPodAutoscaler", "shop", "catalog", {"spec": {"maxReplicas": 6}}, ["spec.maxReplicas"])
    old = world.get("HorizontalPodAutoscaler", "shop", "catalog")
    world.sim.delete("autoscaling/v2", "HorizontalPodAutoscaler", "shop", "catalog")
    fresh = {k: v for k, v in copy.deepcopy(old).items() if k != "status"}
    fresh["metadata"] = {"name": "catalog", "namespace": "shop"}
    world.sim.create(fresh, field_manager="helm")
    result = rollback_action(world.store, world.cluster, act, who="ana", reason="r")
    assert result.outcome == "refused"
    same = next(c for c in result.plan.checks if c.name == "same object")
    assert same.status == "block" and old["metadata"]["uid"] in same.summary and "re-created" in same.summary
    assert world.get("HorizontalPodAutoscaler", "shop", "catalog")["spec"]["maxReplicas"] == 6


def test_bundled_change_is_shown_and_fields_restores_only_the_pool(world):
    act = bad_rollout_rollback(world)
    plan = make_plan(world.store, world.cluster, act)
    bundled = next(c for c in plan.checks if c.name == "bundled changes")
    assert bundled.status == "warn" and "2 fields at once" in bundled.summary
    assert {f.path for f in plan.restored} == {IMAGE, POOL}
    only = make_plan(world.store, world.cluster, act, fields=["DB_POOL_SIZE"])
    assert [f.path for f in only.restored] == [POOL] and [f.path for f in only.kept] == [IMAGE]
    assert "keep payments image" in only.summary
    result = rollback_action(world.store, world.cluster, act, who="ana", reason="the pool fix was bundled",
                             fields=["env.DB_POOL_SIZE"])
    assert result.outcome == "rolled_back", result.message
    c = container(world)
    assert c["image"] == "registry.example/payments:2.3.1"  # the agent's rollback of the bad image stays
    assert {e["name"]: e["value"] for e in c["env"]} == {"DB_POOL_SIZE": "20", "LOG_LEVEL": "info"}


def test_unknown_field_names_what_can_be_chosen(world):
    act = bad_rollout_rollback(world)
    with pytest.raises(Exception, match="choose from: .*DB_POOL_SIZE") as e:
        make_plan(world.store, world.cluster, act, fields=["POOL"])
    assert e.value.exit_code == 2


def test_a_409_race_between_dry_run_and_write_is_re_planned_not_retried_blind(world):
    act = world.change("HorizontalPodAutoscaler", "shop", "catalog", {"spec": {"maxReplicas": 6}}, ["spec.maxReplicas"])
    race = lambda: world.edit("HorizontalPodAutoscaler", "shop", "catalog", {"spec": {"minReplicas": 1}}, manager="kubectl-patch")
    result = rollback_action(world.store, world.cluster, act, who="ana", reason="r", before_write=race)
    assert result.outcome == "rolled_back", result.message
    assert any("conflict" in a for a in result.result["attempts"])
    assert any("replanned" in a for a in result.result["attempts"])
    hpa = world.get("HorizontalPodAutoscaler", "shop", "catalog")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 2)


def test_a_409_race_on_the_same_field_ends_in_refusal_after_re_planning(world):
    act = world.change("HorizontalPodAutoscaler", "shop", "catalog", {"spec": {"maxReplicas": 6}}, ["spec.maxReplicas"])
    race = lambda: world.edit("HorizontalPodAutoscaler", "shop", "catalog", {"spec": {"maxReplicas": 7}})
    result = rollback_action(world.store, world.cluster, act, who="ana", reason="r", before_write=race)
    assert result.outcome == "refused" and "re-planned after a conflict" in result.message
    assert world.get("HorizontalPodAutoscaler", "shop", "catalog")["spec"]["maxReplicas"] == 7


def test_a_dry_run_rejection_writes_nothing(world):
    # the agent raised max 2 -> 6; then someone raised min to 4; max 2 < min 4 is invalid
    act = world.change("HorizontalPodAutoscaler", "shop", "catalog", {"spec": {"maxReplicas": 6}}, ["spec.maxReplicas"])
    world.edit("HorizontalPodAutoscaler", "shop", "catalog", {"spec": {"minReplicas": 4}})
    rv = world.get("HorizontalPodAutoscaler", "shop", "catalog")["metadata"]["resourceVersion"]
    result = rollback_action(world.store, world.cluster, act, who="ana", reason="r")
    assert result.outcome == "failed" and result.exit_code == 1
    assert "dry-run rejected" in result.message and "minReplicas" in result.message
    assert world.get("HorizontalPodAutoscaler", "shop", "catalog")["metadata"]["resourceVersion"] == rv
    assert [r["outcome"] for r in rows(world)] == ["failed"]  # no "started": nothing was about to be written


def test_a_403_names_the_verb_and_resource(world, tmp_path):
    act = world.change("HorizontalPodAutoscaler", "shop", "catalog", {"spec": {"maxReplicas": 6}}, ["spec.maxReplicas"])
    authz = Authorizer.from_dict({"users": {"viewer": {"token": "view-token", "rules": [
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]}]}}})
    with ApiServer(world.sim, authorizer=authz) as server:
        cluster = connect(kubeconfig=str(server.write_kubeconfig(tmp_path / "viewer", user="viewer")))
        result = rollback_action(world.store, cluster, act, who="ana", reason="r")
        cluster.close()
    assert result.outcome == "failed" and result.exit_code == 4
    assert "may not patch horizontalpodautoscalers" in result.message and "'autoscaling'" in result.message
    assert "in namespace shop" in result.message
    assert world.get("HorizontalPodAutoscaler", "shop", "catalog")["spec"]["maxReplicas"] == 6


def test_under_an_hpa_replicas_are_not_reverted_but_the_hpa_bounds_are(world):
    hpa_act = world.change("HorizontalPodAutoscaler", "shop", "catalog", {"spec": {"maxReplicas": 5, "minReplicas": 3}},
                           ["spec.maxReplicas", "spec.minReplicas"])
    scale = world.change("Deployment", "shop", "catalog", {"spec": {"replicas": 4}}, ["spec.replicas"], verb="scale")
    plan = make_plan(world.store, world.cluster, scale)
    rule = next(c for c in plan.checks if c.name == "kind rule: HPA")
    assert plan.outcome == "refused" and rule.status == "block"
    assert "HorizontalPodAutoscaler shop/catalog controls spec.replicas" in rule.summary and hpa_act in rule.summary
    result = rollback_action(world.store, world.cluster, hpa_act, who="ana", reason="r")
    assert result.outcome == "rolled_back", result.message
    spec = world.get("HorizontalPodAutoscaler", "shop", "catalog")["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 2)


def test_a_configmap_change_says_its_consumers_must_restart(world):
    act = world.change("ConfigMap", "shop", "flags", {"data": {"new_checkout": "true", "app.properties": "a=2"}},
                       ["data.new_checkout", "data.app.properties"])
    plan = make_plan(world.store, world.cluster, act)
    rule = next(c for c in plan.checks if c.name == "kind rule: consumers restart")
    assert rule.status == "warn" and "deployment/checkout" in rule.summary and "rollout restart" in rule.summary
    result = rollback_action(world.store, world.cluster, act, who="ana", reason="r")
    assert result.outcome == "rolled_back", result.message
    assert world.get("ConfigMap", "shop", "flags")["data"] == {"new_checkout": "false", "app.properties": "a=1"}


def test_a_restart_has_no_inverse(world):
    stamp = "2026-12-07T03:00:00Z"
    act = world.change("Deployment", "shop", "payments",
                       {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": stamp}}}}},
                       ["spec.template.metadata.annotations.kubectl.kubernetes.io/restartedAt"], verb="restart")
    rv = world.get("Deployment", "shop", "payments")["metadata"]["resourceVersion"]
    result = rollback_action(world.store, world.cluster, act, who="ana", reason="r")
    assert result.outcome == "refused" and "restart cannot be undone" in result.message
    assert world.get("Deployment", "shop", "payments")["metadata"]["resourceVersion"] == rv


def test_a_decision_is_undone_newest_first_and_stops_at_the_first_failure(world):
    first = world.change("HorizontalPodAutoscaler", "shop", "catalog", {"spec": {"maxReplicas": 6}}, ["spec.maxReplicas"],
                         decision_id="dec-two")
    second = world.change("ConfigMap", "shop", "flags", {"data": {"new_checkout": "true"}}, ["data.new_checkout"],
                          decision_id="dec-two")
    third = bad_rollout_rollback(world)  # another decision: untouched
    # a person edits the older action's field: undoing it must stop there
    world.edit("HorizontalPodAutoscaler", "shop", "catalog", {"spec": {"maxReplicas": 9}})
    res = rollback_decision(world.store, world.cluster, "dec-two", who="ana", reason="undo the whole fix")
    assert [r.action_id for r in res.results] == [second, first]
    assert [r.outcome for r in res.results] == ["rolled_back", "refused"]
    assert res.exit_code == 5 and f"stopped at {first}" in res.message and second in res.message
    assert world.get("ConfigMap", "shop", "flags")["data"]["new_checkout"] == "false"
    assert world.get("HorizontalPodAutoscaler", "shop", "catalog")["spec"]["maxReplicas"] == 9
    assert container(world)["image"] == "registry.example/payments:2.3.1" and third


@pytest.mark.parametrize("record, message", [
    ({"before": {}, "after": {"spec.maxReplicas": 6}}, "no before-state"),
    ({"before": {"maxReplicas": 2}, "after": {"maxReplicas": 6}}, "not fields of a HorizontalPodAutoscaler"),
])
def test_records_that_cannot_be_planned_from_are_refused(world, record, message):
    act = world.change("HorizontalPodAutoscaler", "shop", "catalog", {"spec": {"maxReplicas": 6}}, ["spec.maxReplicas"],
                       record=record)
    with pytest.raises(CannotPlan, match=message) as e:
        make_plan(world.store, world.cluster, act)
    assert e.value.exit_code == 3
    result = rollback_action(world.store, world.cluster, act, who="ana", reason="r")
    assert result.outcome == "refused" and result.exit_code == 3
    assert world.get("HorizontalPodAutoscaler", "shop", "catalog")["spec"]["maxReplicas"] == 6


def test_a_check_that_cannot_run_stops_the_rollback(world, tmp_path):
    # may read and patch Deployments, but not list the HPAs the HPA rule needs to see
    scale = world.change("Deployment", "shop", "payments", {"spec": {"replicas": 5}}, ["spec.replicas"], verb="scale")
    authz = Authorizer.from_dict({"users": {"half": {"token": "half-token", "rules": [
        {"apiGroups": ["apps"], "resources": ["deployments", "replicasets"], "verbs": ["get", "list", "patch"]}]}}})
    with ApiServer(world.sim, authorizer=authz) as server:
        cluster = connect(kubeconfig=str(server.write_kubeconfig(tmp_path / "half", user="half")))
        result = rollback_action(world.store, cluster, scale, who="ana", reason="r")
        cluster.close()
    assert result.outcome == "failed" and result.exit_code == 4
    assert "may not list horizontalpodautoscalers" in result.message
    assert world.get("Deployment", "shop", "payments")["spec"]["replicas"] == 5
