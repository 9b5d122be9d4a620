"""Two runs side by side: steps aligned by what they are (not by position), differing decisions and
actions, the CLI's table and JSON, and the RunComparison widget with hostile trace text."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from afterfix._exceptions import NotFound
from afterfix.cli import main
from afterfix.review.compare import compare_runs, step_sequence
from afterfix.review.verdicts import record_verdict
from afterfix.sdk import Option, Target
from afterfix.undo.trace import recording

HOSTILE = '<img src=x onerror="alert(1)"><script>alert(2)</script>$x$'
HPA = Target("uid-hpa", "HorizontalPodAutoscaler", "autoscaling/v2", "shop", "cart")
DEPLOY = Target("uid-dep", "Deployment", "apps/v1", "shop", "cart")


class Clock:
    def __init__(self, start: str):
        self.t = datetime.fromisoformat(start + "+00:00").timestamp()

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def night_run(store, start: str, *, look_first: bool = False, choose: str = "scale_up", replicas: int = 4,
              question: str = "how to relieve shop/cart?", reason: str = "restarts only hide it", agent: str = "ref-agent") -> dict:
    """One run of the cart scenario: read the HPA, decide, act. `look_first` adds a metrics query
    before everything; `choose="restart"` restarts the Deployment instead of scaling."""
    ids = {}
    with recording(store, agent, clock=Clock(start)) as rec, rec.run(incident_id=f"INC-{start[:10]}") as run:
        ids["run_id"] = run.run_id
        if look_first:
            with rec.tool_call("query_metrics", {"q": "cpu"}) as call:
                call.result({"cpu": 0.97})
        with rec.tool_call("get_hpa", {"name": "cart"}) as call:
            call.result({"maxReplicas": 2, "at": start})  # another night, other numbers: not a difference
        options = [Option("scale_up", "raise maxReplicas", score=0.8, reason=None if choose == "scale_up" else reason),
                   Option("restart", "restart the pods", score=0.3, reason=None if choose == "restart" else reason)]
        ids["decision_id"] = rec.decision(question, options, choose, "cpu is saturated", policy="hpa_capacity")
        target, verb, patch = (HPA, "patch", {"spec": {"maxReplicas": replicas}}) if choose == "scale_up" else (
            DEPLOY, "restart", {"spec": {"template": {"metadata": {"annotations": {"restartedAt": start}}}}})
        with rec.action(verb, target, decision_id=ids["decision_id"], patch=patch) as act:
            ids["action_id"] = act.action_id
            act.before({"spec.maxReplicas": 2}, "10")
            act.after({"spec.maxReplicas": replicas}, "11")
        with rec.tool_call("get_hpa", {"name": "cart"}) as call:
            call.result({"maxReplicas": replicas})
    return ids


def test_the_same_scenario_on_two_nights_is_the_same(store):
    a = night_run(store, "2026-11-26T01:00")
    b = night_run(store, "2026-11-27T01:00")
    c = compare_runs(store, a["run_id"], b["run_id"])
    assert c.same and c.decisions == [] and c.actions == []
    assert [s.status for s in c.steps] == ["same"] * 4
    assert [s.a["kind"] for s in c.steps] == ["tool", "decision", "action", "tool"]


def test_steps_align_by_signature_not_position(store):
    a = night_run(store, "2026-11-26T01:00")
    b = night_run(store, "2026-11-27T01:00", look_first=True, choose="restart")
    c = compare_runs(store, a["run_id"], b["run_id"])
    got = [(s.status, s.a and s.a["label"], s.b and s.b["label"]) for s in c.steps]
    assert got == [
        ("only_b", None, "call query_metrics"),
        ("same", "call get_hpa", "call get_hpa"),
        ("changed", "decide: how to relieve shop/cart?", "decide: how to relieve shop/cart?"),
        ("changed", "patch HorizontalPodAutoscaler shop/cart", "restart Deployment shop/cart"),
        ("same", "call get_hpa", "call get_hpa"),
    ]
    assert c.counts() == {"same": 2, "changed": 2, "only_a": 0, "only_b": 1} and not c.same
    [d] = c.decisions
    assert (d["selected_a"], d["selected_b"]) == ("scale_up", "restart")
    assert {o["id"]: (o["verdict_a"], o["verdict_b"]) for o in d["options"]} == {
        "scale_up": ("selected", "rejected"), "restart": ("rejected", "selected")}
    [x] = c.actions
    assert (x["verb_a"], x["verb_b"]) == ("patch", "restart")
    assert "patch" in x["differences"] and "verb patch vs restart" in x["differences"]


def test_a_different_patch_is_a_changed_action(store):
    a = night_run(store, "2026-11-26T01:00", replicas=4)
    b = night_run(store, "2026-11-27T01:00", replicas=8)
    c = compare_runs(store, a["run_id"], b["run_id"])
    [x] = c.actions
    assert x["status"] == "changed" and x["differences"] == ["patch"]
    assert '"maxReplicas": 4' in x["patch_a"] and '"maxReplicas": 8' in x["patch_b"]
    assert c.decisions == []  # the same choice, the same verdicts: only the action differs


def test_a_decision_with_another_question_is_on_one_side_only(store):
    a = night_run(store, "2026-11-26T01:00")
    b = night_run(store, "2026-11-27T01:00", question="scale or wait?")
    statuses = [(s.status, (s.a or s.b)["kind"]) for s in compare_runs(store, a["run_id"], b["run_id"]).steps]
    assert ("only_a", "decision") in statuses and ("only_b", "decision") in statuses


def test_people_verdicts_show_beside_differing_decisions(store):
    a = night_run(store, "2026-11-26T01:00")
    b = night_run(store, "2026-11-27T01:00", choose="restart")
    record_verdict(store, b["decision_id"], "wrong", "alice", should_have="scale_up", note="restarts hide it")
    [d] = compare_runs(store, a["run_id"], b["run_id"]).decisions
    assert d["verdicts_a"] == [] and d["verdicts_b"] == ["alice: wrong (should have: scale_up)"]


def test_an_unknown_run_is_named(store):
    a = night_run(store, "2026-11-26T01:00")
    with pytest.raises(NotFound, match=r"no run 'run-nope' .*SELECT run_id"):
        compare_runs(store, a["run_id"], "run-nope")


def test_step_sequence_keeps_one_step_per_action(store):
    a = night_run(store, "2026-11-26T01:00")
    kinds = [s["kind"] for s in step_sequence(store, a["run_id"])]
    assert kinds == ["tool", "decision", "action", "tool"]


def test_cli_table_and_json(store, capsys):
    a = night_run(store, "2026-11-26T01:00")
    b = night_run(store, "2026-11-27T01:00", look_first=True, choose="restart")
    assert main(["compare", "--store", str(store.root), a["run_id"], b["run_id"]]) == 0
    out = capsys.readouterr().out
    assert "2 same, 2 changed, 0 only in A, 1 only in B" in out
    assert "decisions that differ" in out and "scale_up: selected → rejected" in out
    assert "actions that differ" in out and "restart Deployment shop/cart" in out
    assert main(["compare", "--store", str(store.root), a["run_id"], b["run_id"], "--only-differences"]) == 0
    assert "call get_hpa" not in capsys.readouterr().out
    assert main(["compare", "--store", str(store.root), a["run_id"], b["run_id"], "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["same"] is False and [s["status"] for s in doc["steps"]][:2] == ["only_b", "same"]
    assert main(["compare", "--store", str(store.root), a["run_id"], "run-nope"]) == 2
    assert "no run 'run-nope'" in capsys.readouterr().err


def test_widget_shows_the_aligned_table_with_differences_highlighted(store):
    from afterfix.widgets.compare import RunComparison

    a = night_run(store, "2026-11-26T01:00")
    b = night_run(store, "2026-11-27T01:00", look_first=True, choose="restart")
    view = RunComparison(store, a["run_id"], b["run_id"])
    assert view.steps.value.count("<tr class='changed'>") == 2 and "<tr class='only_b'>" in view.steps.value
    assert "call query_metrics" in view.steps.value and "call get_hpa" in view.steps.value
    assert "restart Deployment shop/cart" in view.actions.value and "scale_up" in view.decisions.value
    view.only.value = True
    assert "call get_hpa" not in view.steps.value and "call query_metrics" in view.steps.value
    night_run(store, "2026-11-27T01:00", look_first=True, choose="restart")  # unrelated run: nothing changes
    view.reload.click()
    assert view.steps.value.count("<tr class='changed'>") == 2


def test_widget_shows_hostile_trace_text_as_text(store):
    from afterfix.widgets.compare import RunComparison

    a = night_run(store, "2026-11-26T01:00", question=HOSTILE, agent="agent" + HOSTILE)
    b = night_run(store, "2026-11-27T01:00", question=HOSTILE, choose="restart", reason=HOSTILE, agent="agent" + HOSTILE)
    view = RunComparison(store, a["run_id"], b["run_id"])
    shown = view.header.value + view.steps.value + view.decisions.value + view.actions.value
    assert "<script" not in shown and "<img" not in shown and "$x$" not in shown
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in shown
    bad = RunComparison(store, a["run_id"], "run-<script>")
    assert "run-&lt;script&gt;" in bad.header.value and "<script>" not in bad.header.value
