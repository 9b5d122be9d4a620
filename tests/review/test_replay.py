"""Decision replay and what-if (afterfix.review.replay): on the demo night and on a small hand-built run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from replay_fixtures import HOSTILE, build_night  # noqa: E402

from afterfix._exceptions import NotFound
from afterfix.review import deciders
from afterfix.review.recorded import load_decision, run_decisions, run_steps
from afterfix.review.replay import ReplayResult, replay_decision, replay_window, what_if
from afterfix.review.replays import list_replays, open_replay, save_replay
from afterfix.review.whatif import EditError

DEMO_HPA = "SELECT decision_id FROM decisions WHERE policy = 'hpa_capacity' AND selected_option = 'raise_hpa_max'"


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    from afterfix.store import Store

    store = Store(tmp_path_factory.mktemp("replay") / "store")
    store.create()
    return build_night(store)


@pytest.fixture(scope="module")
def hpa_decision(demo_store):
    return demo_store.query(DEMO_HPA)["decision_id"][0]


# -- the demo night ------------------------------------------------------------------------------


def test_every_demo_decision_replays_to_the_same_choice(demo_store):
    results = replay_window(demo_store, endpoint="scripted")  # the LLM agent's decision too
    assert len(results) == int(demo_store.query("SELECT count(*) AS n FROM decisions")["n"][0]) > 10
    assert [r.decision_id for r in results if r.first.error or not r.first.same] == []
    assert not any(r.diverged for r in results)
    assert {r.first.decider for r in results} >= {"policy:hpa_capacity", "policy:memory_leak"}


def test_recorded_decision_holds_what_the_agent_had(demo_store, hpa_decision):
    d = load_decision(demo_store, hpa_decision)
    assert d.policy == "hpa_capacity" and d.selected == "raise_hpa_max" and d.inputs["metrics"]["latency_p95_ms"] > 300
    called = {t.call_id for t in d.tool_calls}
    assert {c for ids in d.sources().values() for c in ids} <= called
    p95 = next(t for t in d.tool_calls if t.result and isinstance(t.result, dict) and t.result.get("unit") == "latency_p95_ms")
    assert p95.arguments["query"].startswith("afterfix_sim_latency_p95_seconds") and p95.result["value"] == d.inputs["metrics"]["latency_p95_ms"]
    selected = d.option("raise_hpa_max")
    assert selected["verdict"] == "selected" and selected["evidence"] and selected["action"]["kind"] == "HorizontalPodAutoscaler"
    assert all(o["reason"] for o in d.options)
    assert [a["verb"] for a in d.actions if a["mutating"]] == ["patch"]
    assert all(t.start <= d.start for t in d.tool_calls)


def test_replay_would_do_the_recorded_change_and_never_makes_it(demo_store, hpa_decision):
    d = load_decision(demo_store, hpa_decision)
    spans_before = demo_store.query("SELECT count(*) AS n FROM spans")["n"][0]
    r = replay_decision(demo_store, hpa_decision)
    one = r.first
    assert (one.same, one.replayed_selected, one.error, one.changed) == (True, "raise_hpa_max", None, [])
    assert [(w["source"], w["action_id"], w["status"]) for w in one.would_do] == [
        ("recorded action", d.actions[0]["action_id"], "would do (not executed)")]
    # nothing was recorded or done: no span was added (an action would be one)
    assert demo_store.query("SELECT count(*) AS n FROM spans")["n"][0] == spans_before


def test_what_if_low_latency_diverges_and_names_the_options_that_changed(demo_store, hpa_decision):
    r = what_if(demo_store, hpa_decision, {"inputs.metrics.latency_p95_ms": 100})
    one = r.first
    assert r.kind == "what_if" and r.diverged and not one.same
    assert (one.recorded_selected, one.replayed_selected) == ("raise_hpa_max", "no_action")
    changed = {o["id"]: o for o in one.changed}
    assert set(changed) == {"raise_hpa_max", "no_action"}
    assert changed["raise_hpa_max"]["replayed_verdict"] == "rejected"
    assert changed["raise_hpa_max"]["replayed_reason"] == "latency is within the SLO"
    assert changed["no_action"]["recorded_reason"].startswith("p95 ")
    assert r.edits == [{"path": "inputs.metrics.latency_p95_ms", "old": load_decision(demo_store, hpa_decision).inputs["metrics"]["latency_p95_ms"], "new": 100}]
    assert one.would_do == []  # waiting changes nothing


def test_tool_result_edit_reaches_the_input_it_fed(demo_store, hpa_decision):
    d = load_decision(demo_store, hpa_decision)
    hpa_call = d.sources()["hpa"][0]
    r = what_if(demo_store, hpa_decision, {f"tool:{hpa_call}.items.0.spec.maxReplicas": 6})
    assert [e["path"] for e in r.edits] == [f"tool:{hpa_call}.items.0.spec.maxReplicas", "inputs.hpa.maxReplicas"]
    assert r.edits[1]["via"] == r.edits[0]["path"]
    assert r.first.replayed_selected == "wait_for_hpa"  # no longer pinned at the ceiling


@pytest.mark.parametrize(("path", "message"), [
    ("inputs.metrics.latncy", "no key 'latncy'; the keys there are cpu_utilization"),
    ("inputs.sources.hpa", "not an observation"),
    ("inputs.hpa.maxReplicas.0", "which has no key '0'"),
    ("tool:call-nope.value", "had no tool call 'call-nope' before it"),
    ("tool:", "no call id"),
    ("inputs", "not the whole inputs"),
])
def test_a_path_that_names_nothing_is_refused_with_what_is_there(demo_store, hpa_decision, path, message):
    with pytest.raises(EditError, match=message.replace("(", r"\(")):
        what_if(demo_store, hpa_decision, {path: 1})


def test_unknown_decision_names_the_id_and_how_to_list(demo_store):
    with pytest.raises(NotFound, match=r"no decision 'dec-nope' .*SELECT decision_id"):
        replay_decision(demo_store, "dec-nope")


# -- a small hand-built run ------------------------------------------------------------------------


def test_missing_recording_is_listed(night):
    one = replay_decision(night.store, night.first).first
    assert one.same and one.missing == [night.missing_call]


def test_tool_edit_propagates_downstream_through_sources(night):
    r = what_if(night.store, night.first, {f"tool:{night.p95_call}.value": 100})
    by_id = {d.decision_id: d for d in r.decisions}
    assert list(by_id)[:2] == [night.first, night.second] and set(by_id) == {night.first, night.second, night.llm, night.unknown}
    for did in (night.first, night.second):
        assert {e["path"] for e in by_id[did].edits} == {f"tool:{night.p95_call}.value", "inputs.metrics.latency_p95_ms"}
        assert by_id[did].replayed_selected == "no_action"
    assert by_id[night.second].note and "earlier decision" in by_id[night.second].note
    assert by_id[night.llm].error_kind == "not_replayable" and not by_id[night.llm].diverged


def test_inputs_edit_reaches_a_later_decision_that_read_the_same_calls(night):
    r = what_if(night.store, night.first, {"inputs.metrics.latency_p95_ms": 120})
    second = next(d for d in r.decisions if d.decision_id == night.second)
    assert second.edits == [{"path": "inputs.metrics.latency_p95_ms", "old": 2400.0, "new": 120,
                             "via": f"{night.first}:inputs.metrics.latency_p95_ms"}]
    # a value the later decision read differently is not touched
    r = what_if(night.store, night.first, {"inputs.hpa.maxReplicas": 9}, downstream=True)
    assert next(d for d in r.decisions if d.decision_id == night.second).edits == []
    assert len(what_if(night.store, night.first, {"inputs.hpa.maxReplicas": 9}, downstream=False).decisions) == 1


def test_model_decision_needs_an_endpoint(night):
    d = load_decision(night.store, night.llm)
    assert d.chat["inside"] and d.chat["input_messages"][1]["tool_call_id"] == night.p95_call and d.chat["seed"] == 7
    one = replay_decision(night.store, night.llm).first
    assert one.error == (f"decision {night.llm} was made by model scripted-1; pass --endpoint URL of an OpenAI-compatible "
                         "server (endpoint=URL in Python), or --endpoint scripted for the built-in scripted model")


def test_unknown_policy_is_not_replayable_and_says_what_to_pass(night):
    one = replay_decision(night.store, night.unknown).first
    assert one.error_kind == "not_replayable" and "retired_policy.v0" in one.error and "CallableDecider" in one.error


def test_callable_decider_and_a_failing_decider(night):
    def always_wait(inputs):
        return {"selected": "wait", "reason": "why not", "options": [{"id": "restart", "verdict": "rejected", "reason": "no"},
                                                                    {"id": "wait", "verdict": "selected", "reason": "why not"}]}

    one = replay_decision(night.store, night.llm, decider=deciders.CallableDecider(always_wait, "wait")).first
    assert (one.decider, one.same, one.replayed_selected) == ("callable:wait", False, "wait")
    assert {o["id"] for o in one.changed} == {"restart", "wait"}

    def broken(inputs):
        raise RuntimeError("endpoint down")

    one = replay_decision(night.store, night.first, decider=deciders.CallableDecider(broken, "b")).first
    assert one.error_kind == "decider_failed" and "endpoint down" in one.error


def test_would_do_follows_the_replayed_option_when_the_choice_changes(night):
    # at the ceiling of 4 with latency still high, the later decision raises the HPA again; with a
    # ceiling the HPA has not reached, it waits: no change would be made
    r = what_if(night.store, night.second, {"inputs.hpa.currentReplicas": 2})
    assert r.first.replayed_selected == "wait_for_hpa" and r.first.would_do == []
    r = what_if(night.store, night.first, {"inputs.hpa": None})
    assert r.first.replayed_selected == "scale_deployment"
    assert [(w["verb"], w["target"], w["source"]) for w in r.first.would_do] == [
        ("patch", "Deployment shop/catalog", "replayed option")]


def test_saved_listed_and_reopened(night):
    r = what_if(night.store, night.first, {"inputs.metrics.latency_p95_ms": 100}, downstream=False)
    rid = save_replay(night.store, r, "alice", note=HOSTILE)
    rows = list_replays(night.store, decision_id=night.first)
    assert rows[0]["replay_id"] == rid and rows[0]["who"] == "alice" and rows[0]["diverged"] and rows[0]["time"] is not None
    assert rows[0]["edits"][0]["path"] == "inputs.metrics.latency_p95_ms" and rows[0]["note"] == HOSTILE
    back = open_replay(night.store, rid)
    assert back.to_dict() == r.to_dict()
    assert ReplayResult.from_dict(r.to_dict()).to_dict() == r.to_dict()
    with pytest.raises(NotFound, match="afterfix replay --list"):
        open_replay(night.store, "rpl-nope")


def test_run_steps_show_what_the_agent_had_at_each_step(night):
    steps = run_steps(night.store, night.run_id)
    kinds = [s["kind"] for s in steps]
    assert kinds[:3] == ["tool", "tool", "tool"] and "decision" in kinds
    at = kinds.index("decision")
    assert [t["call_id"] for t in steps[at]["tool_calls"]] == [night.p95_call, night.hpa_call, night.missing_call]
    assert steps[at]["observations"]["metrics"]["latency_p95_ms"] == 2400.0 and "sources" not in steps[at]["observations"]
    assert steps[at]["decision"]["options"][-1]["reason"].endswith(HOSTILE)
    assert steps[0]["observations"] is None and len(steps[0]["tool_calls"]) == 1
    assert len(run_decisions(night.store, night.run_id)) == 4
