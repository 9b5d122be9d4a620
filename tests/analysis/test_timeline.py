"""analysis.timeline: every span a step, grouped by run, in start order, with depth by parent
span; agent names and incident ids inherited from the run where a span lacks them."""

from __future__ import annotations

import pytest

import afterfix
from afterfix.analysis.model import Step
from afterfix.analysis.timeline import incident_timeline, run_timeline

from analysis.recorded import examples_store, recorded_night


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    store, _ = recorded_night(tmp_path_factory.mktemp("timeline"))
    yield store
    store.close()


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    store = examples_store(tmp_path_factory.mktemp("examples"))
    yield store
    store.close()


def test_run_timeline_of_the_hpa_example(examples):
    tl = run_timeline(examples, "run-2026-11-27-0247")
    assert tl.run_ids == ["run-2026-11-27-0247"] and tl.incident_id == "INC-2026-11-27-001"
    assert [(s.kind, s.depth) for s in tl.steps] == [
        ("run", 0), ("incident", 1), ("detection", 2), ("tool", 2), ("tool", 2), ("tool", 2), ("llm", 2),
        ("decision", 2), ("tool", 2), ("action", 3), ("tool", 2), ("verification", 2)]
    assert [s.tool for s in tl.steps if s.kind == "tool"] == ["get_hpa", "get_metrics", "describe_deployment",
                                                              "patch_hpa", "get_metrics"]
    assert [s.start for s in tl.steps] == sorted(s.start for s in tl.steps)
    # The action starts with its tool call: the parent comes first.
    tool, action = tl.steps[8], tl.steps[9]
    assert tool.start == action.start and action.parent_span_id == tool.span_id
    assert tl.start == tl.steps[0].start and tl.end == max(s.end for s in tl.steps)
    assert all(s.status == "unset" and s.end >= s.start for s in tl.steps)


def test_incident_timeline_groups_steps_by_run(night):
    tl = incident_timeline(night, "INC-T1")
    assert tl.incident_id == "INC-T1" and tl.run_ids == ["run-t1", "run-t2"]
    runs = [s.run_id for s in tl.steps]
    assert runs == ["run-t1"] * runs.count("run-t1") + ["run-t2"] * runs.count("run-t2")
    counts = night.query("SELECT run_id, spans FROM runs").set_index("run_id")["spans"]
    assert (runs.count("run-t1"), runs.count("run-t2")) == (counts["run-t1"], counts["run-t2"])
    for run in tl.run_ids:
        starts = [s.start for s in tl.steps if s.run_id == run]
        assert starts == sorted(starts)
    # run-t2 listed pods before it knew the incident: the step still belongs to it.
    first = next(s for s in tl.steps if s.run_id == "run-t2" and s.kind == "tool")
    assert (first.tool, first.incident_id, first.agent_name) == ("list_pods", "INC-T1", "agent-b")
    failed = next(s for s in tl.steps if s.tool == "get_logs")
    assert (failed.status, failed.status_message) == ("error", "connection refused")
    frame = tl.to_frame()
    assert list(frame.columns) == list(Step.__dataclass_fields__) and len(frame) == len(tl.steps)


@pytest.mark.parametrize("run_id, expected", [
    ("conv-2026-11-27-0415", [("run", 0, "disk-watcher"), ("llm", 1, "disk-watcher"), ("tool", 1, "disk-watcher")]),
    ("session-2026-11-27-0330", [("run", 0, "cart-investigator"), ("tool", 1, "cart-investigator"),
                                 ("llm", 1, "cart-investigator")]),
])
def test_agent_name_is_inherited_from_the_agent_span(examples, run_id, expected):
    # genai-legacy's chat span has no gen_ai.agent.name, as real agent frameworks write it
    assert examples.query(f"SELECT count(*) AS n FROM spans WHERE run_id = '{run_id}' AND agent_name IS NULL")["n"][0] \
        == (1 if run_id.startswith("conv") else 0)
    tl = run_timeline(examples, run_id)
    assert [(s.kind, s.depth, s.agent_name) for s in tl.steps] == expected


def test_openinference_steps_inherit_the_agent_through_a_chain(night):
    tl = run_timeline(night, "oi-session-1")
    assert [(s.kind, s.depth, s.agent_name, s.tool) for s in tl.steps] == [
        ("run", 0, "cart-agent", None), ("step", 1, "cart-agent", None), ("tool", 2, "cart-agent", "get_cart"),
        ("llm", 2, "cart-agent", None)]
    assert tl.steps[3].status == "ok" and tl.incident_id is None


def test_unknown_ids_are_not_found(night):
    with pytest.raises(afterfix.NotFound, match="SELECT run_id FROM runs"):
        run_timeline(night, "nope")
    with pytest.raises(afterfix.NotFound, match="SELECT incident_id FROM incidents"):
        incident_timeline(night, "nope")
