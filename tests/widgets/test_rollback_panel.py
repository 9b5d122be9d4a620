"""RollbackPanel against the Kubernetes API simulator, through the official client, driven by
button.click(): the plan and every check shown, the reason required, dry-run, apply on a second
click, the simulator object reverted, the ledger rows, and the drift override's own reason."""

from __future__ import annotations

from afterfix.widgets.rollback import RollbackPanel
from widgets.conftest import HOSTILE, assert_escaped

HPA = ("HorizontalPodAutoscaler", "shop", "catalog")


def max_replicas(world) -> int:
    return world.get(*HPA)["spec"]["maxReplicas"]


def ledger(world) -> list[dict]:
    return world.store.query("SELECT * FROM rollbacks ORDER BY time").to_dict("records")


def panel_for(world, act):
    return RollbackPanel(world.store, act, kubeconfig=str(world.kubeconfig), who="ana")


def test_plan_and_every_check_are_shown(world):
    act = world.change(*HPA, {"spec": {"maxReplicas": 6}}, ["spec.maxReplicas"])
    panel = panel_for(world, act)
    assert panel.plan.outcome == "ready"
    html = panel.plan_html.value
    assert "RESTORE" in html and "maxReplicas" in html
    for check in panel.plan.checks:
        assert check.name in html
    assert "Inverse" in html and "&quot;maxReplicas&quot;: 2" in html
    assert [v for _, v in panel.fields.options] == ["spec.maxReplicas"]
    assert "no rollback of this action recorded yet" in panel.ledger_html.value
    panel.close()


def test_apply_without_a_reason_is_refused_and_writes_nothing(world):
    act = world.change(*HPA, {"spec": {"maxReplicas": 6}}, ["spec.maxReplicas"])
    panel = panel_for(world, act)
    panel.apply_button.click()
    panel.apply_button.click()
    assert "a reason is required" in panel.message.value
    assert max_replicas(world) == 6 and ledger(world) == []
    panel.close()


def test_dry_run_changes_nothing_and_is_recorded(world):
    act = world.change(*HPA, {"spec": {"maxReplicas": 6}}, ["spec.maxReplicas"])
    panel = panel_for(world, act)
    panel.dry_button.click()
    assert panel.result.outcome == "dry_run", panel.result.message
    assert "dry-run passed" in panel.result_html.value
    assert max_replicas(world) == 6
    assert [r["outcome"] for r in ledger(world)] == ["dry_run"]
    assert "dry_run" in panel.ledger_html.value
    panel.close()


def test_apply_needs_a_second_click_then_reverts_the_object_and_records_it(world):
    act = world.change(*HPA, {"spec": {"maxReplicas": 6}}, ["spec.maxReplicas"])
    panel = panel_for(world, act)
    panel.reason.value = "6 replicas was not the fix " + HOSTILE
    panel.apply_button.click()
    assert panel.apply_button.description == "Confirm apply" and max_replicas(world) == 6 and ledger(world) == []
    panel.apply_button.click()
    assert panel.result.outcome == "rolled_back", panel.result.message
    assert max_replicas(world) == 2
    rows = ledger(world)
    assert [r["outcome"] for r in rows] == ["started", "rolled_back"]
    assert {r["who"] for r in rows} == {"ana"} and rows[-1]["reason"].startswith("6 replicas was not the fix")
    assert panel.result.rollback_id in panel.ledger_html.value
    assert_escaped(panel.ledger_html.value)
    # rolled back: the plan now says so, and there is nothing left to apply
    assert panel.plan.outcome == "nothing_to_do" and panel.apply_button.disabled
    panel.close()


def test_changing_the_form_cancels_a_pending_confirmation(world):
    act = world.change(*HPA, {"spec": {"maxReplicas": 6}}, ["spec.maxReplicas"])
    panel = panel_for(world, act)
    panel.reason.value = "r"
    panel.apply_button.click()
    panel.reason.value = "another reason"
    assert panel.apply_button.description == "Apply"
    panel.apply_button.click()  # asks again instead of writing
    assert max_replicas(world) == 6 and ledger(world) == []
    panel.close()


def test_drift_is_refused_and_its_override_needs_its_own_reason(world):
    act = world.change(*HPA, {"spec": {"maxReplicas": 6}}, ["spec.maxReplicas"])
    world.edit(*HPA, {"spec": {"maxReplicas": 8}}, manager="kubectl-edit")
    panel = panel_for(world, act)
    assert panel.plan.outcome == "refused" and panel.apply_button.disabled
    assert "STOP" in panel.plan_html.value and "kubectl-edit" in panel.plan_html.value
    panel.override.value = True
    assert not panel.override_reason.disabled and panel.plan.outcome == "ready"
    panel.reason.value = "the HPA change was wrong"
    panel.apply_button.click()
    assert "override needs its own reason" in panel.message.value
    assert max_replicas(world) == 8 and ledger(world) == []
    panel.override_reason.value = "8 was a panic edit during the page"
    panel.apply_button.click()
    panel.apply_button.click()
    assert panel.result.outcome == "rolled_back", panel.result.message
    assert max_replicas(world) == 2
    assert ledger(world)[-1]["override_reason"] == "8 was a panic edit during the page"
    panel.close()


def test_the_field_selector_restores_only_the_chosen_field(world):
    from undo.test_rollback import IMAGE, POOL, bad_rollout_rollback, container

    act = bad_rollout_rollback(world)
    panel = panel_for(world, act)
    assert {v for _, v in panel.fields.options} == {IMAGE, POOL}
    panel.fields.value = (POOL,)
    assert [f.path for f in panel.plan.restored] == [POOL] and "keep payments image" in panel.plan.summary
    panel.reason.value = "the pool fix was bundled"
    panel.apply_button.click()
    panel.apply_button.click()
    assert panel.result.outcome == "rolled_back", panel.result.message
    c = container(world)
    assert c["image"] == "registry.example/payments:2.3.1"
    assert {e["name"]: e["value"] for e in c["env"]}["DB_POOL_SIZE"] == "20"
    panel.close()


def test_an_unknown_action_is_named_in_the_panel(world):
    world.store.create()
    panel = panel_for(world, "act-nope")
    assert "no action &#x27;act-nope&#x27;" in panel.message.value and panel.plan is None
    panel.close()
