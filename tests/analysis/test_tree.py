"""analysis.tree on purpose-built traces (afterfix.sdk through the OpenTelemetry SDK) and on the
example traces: options with their evidence and verdicts, actions under the option they served
with their field diffs, nested decisions, one tree per run of an incident, trees of agents that
know nothing of afterfix, and trace text kept as data."""

from __future__ import annotations

import json

import pytest

import afterfix
from afterfix.analysis.tree import incident_trees, run_tree

from analysis.recorded import HOSTILE, examples_store, recorded_night


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    store, _ = recorded_night(tmp_path_factory.mktemp("tree"))
    yield store
    store.close()


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    store = examples_store(tmp_path_factory.mktemp("examples"))
    yield store
    store.close()


def _shape(node, depth=0):
    """(depth, kind, label) of every node, depth first."""
    out = [(depth, node.kind, node.label)]
    for child in node.children:
        out += _shape(child, depth + 1)
    return out


def _parent(tree, node):
    return next(n for n in tree.root.walk() if any(c is node for c in n.children))


def test_hpa_example_tree(examples):
    tree = run_tree(examples, "run-2026-11-27-0247")
    assert (tree.run_id, tree.agent_name, tree.incident_id) == ("run-2026-11-27-0247", "night-shift-agent",
                                                                "INC-2026-11-27-001")
    assert tree.root.kind == "run" and tree.root.details["spans"] == 12
    (decision,) = tree.nodes("decision")
    options = [n for n in decision.children if n.kind == "option"]
    assert [o.details["option_id"] for o in options] == ["raise-hpa-max", "restart-pods", "rollback-deploy",
                                                          "scale-deployment"]
    assert [o.selected for o in options] == [True, False, False, False]
    assert [o.details["verdict"] for o in options] == ["selected", "rejected", "rejected", "rejected"]
    assert options[1].details["reason"] == "no memory growth or stuck pods: a restart would drop capacity during peak"
    assert options[0].details["score"] == 0.91 and len(options[0].details["evidence"]) == 3
    assert options[0].details["action"]["patch"] == {"spec": {"maxReplicas": 10}}
    (action,) = options[0].children  # moved from under the patch_hpa tool call
    assert action.kind == "action" and action.details["diff"] == [
        {"path": "spec.maxReplicas", "before": 4, "after": 10, "change": "changed"}]
    assert (action.details["resource_version_before"], action.details["resource_version_after"]) == ("184467", "184532")
    assert action.details["target"] == {"kind": "HorizontalPodAutoscaler", "namespace": "shop", "name": "checkout",
                                        "uid": "6f1c2a9e-3b7d-4e58-9a0c-d2e4f6a8b1c3", "api_version": "autoscaling/v2"}
    assert action.details["trust_level"] == 3 and action.details["dry_run_checked"] is True
    (verification,) = action.children
    assert verification.details["outcome"] == "success" and verification.details["before"] == 2.41
    on_path = [n.kind for n in tree.root.walk() if n.on_path]
    assert on_path == ["run", "incident", "detection", "decision", "option", "action", "verification"]
    # Tool and LLM calls stay where their spans were, off the path.
    assert [n.label for n in tree.nodes("tool")] == [
        "execute_tool get_hpa", "execute_tool get_metrics", "execute_tool describe_deployment",
        "execute_tool patch_hpa", "execute_tool get_metrics"]
    assert not any(n.on_path for n in tree.nodes("tool") + tree.nodes("llm"))


def test_purpose_built_run_shape(night):
    tree = run_tree(night, "run-t1")
    assert _shape(tree.root) == [
        (0, "run", "run-t1 (agent-a)"),
        (1, "incident", "checkout p95 latency above SLO"),
        (2, "detection", "checkout p95 2.41 s over 0.8 s"),
        (2, "tool", "execute_tool get_hpa"),
        (2, "tool", "execute_tool get_logs"),
        (2, "llm", "chat reasoner-1"),
        (2, "decision", "checkout is slow: what should change?"),
        (3, "option", "Raise maxReplicas 4 -> 10"),
        (4, "action", "patch HorizontalPodAutoscaler shop/checkout"),
        (5, "decision", "how should the change be written?"),
        (6, "option", "JSON merge patch"),
        (7, "action", "annotate Deployment shop/checkout"),
        (6, "option", "server-side apply"),
        (5, "verification", "verify latency_p95: success"),
        (3, "option", "Restart the pods"),
        (3, "option", "Roll back the last deploy"),
        (2, "tool", "execute_tool patch_hpa"),
    ]
    failed = tree.nodes("tool")[1]
    assert failed.status == "error" and failed.details["error"] == "ConnectionError"
    assert tree.root.status == "error" and tree.root.details["status"] == "error"
    llm = tree.nodes("llm")[0]
    assert llm.details == {"model": "reasoner-1", "provider": "local", "input_tokens": 1200, "output_tokens": 80}


def test_nested_decision_stays_inside_the_action_and_on_the_path(night):
    tree = run_tree(night, "run-t1")
    outer, inner = tree.nodes("decision")
    act1, act2 = tree.nodes("action")
    assert _parent(tree, inner) is act1  # recorded inside the action: stays there
    assert _parent(tree, act2).details["option_id"] == "merge-patch"
    assert all(n.on_path for n in (outer, inner, act1, act2))
    rejected = [n for n in tree.nodes("option") if not n.selected]
    assert [n.details["reason"] for n in rejected] == ["another manager owns the field", "no memory growth",
                                                       "errors are flat"]
    assert not any(n.on_path for n in rejected)
    # Flat dotted after against a nested before: one field changed, minReplicas did not.
    assert act1.details["diff"] == [{"path": "spec.maxReplicas", "before": 4, "after": 10, "change": "changed"}]


def test_incident_with_several_runs_gives_a_tree_per_run(night):
    trees = incident_trees(night, "INC-T1")
    assert [(t.run_id, t.agent_name, t.incident_id) for t in trees] == [("run-t1", "agent-a", "INC-T1"),
                                                                         ("run-t2", "agent-b", "INC-T1")]
    spans = [{n.span_id for n in t.root.walk() if n.kind != "option"} for t in trees]
    assert not spans[0] & spans[1]
    counts = night.query("SELECT run_id, spans FROM runs WHERE incident_id = 'INC-T1'").set_index("run_id")["spans"]
    assert [len(s) for s in spans] == [counts["run-t1"], counts["run-t2"]]
    # run-t2 listed pods before the incident was known: that span is still in its run's tree.
    assert trees[1].root.children[0].label == "execute_tool list_pods"


def test_decision_without_a_selection_and_an_action_awaiting_approval(night):
    tree = run_tree(night, "run-t2")
    (decision,) = tree.nodes("decision")
    assert decision.details["selected_option"] == ""
    assert [o.selected for o in decision.children if o.kind == "option"] == [False, False]
    (action,) = tree.nodes("action")
    assert _parent(tree, action) is decision  # no option was selected: under the decision itself
    assert action.details["status"] == "awaiting_approval" and action.details["trust_level"] == 2
    assert [(n.kind, n.details["status"]) for n in action.children] == [("approval", "requested")]
    assert not any(n.on_path for n in tree.root.walk())


def test_hostile_text_survives_as_data(night):
    tree = run_tree(night, "run-t2")
    (decision,) = tree.nodes("decision")
    (action,) = tree.nodes("action")
    assert decision.label == decision.details["question"] == HOSTILE
    assert [o.details["reason"] for o in decision.children if o.kind == "option"][1] == HOSTILE
    assert action.label == HOSTILE
    # The before state is not JSON: the diff is the raw text, not an exception.
    assert action.details["diff"] == [{"path": ".", "before": "{not json: " + HOSTILE,
                                       "after": '{"spec": {"replicas": 6}}', "change": "changed"}]
    again = json.loads(json.dumps(tree.to_dict()))
    assert again["root"]["children"][1]["children"][0]["label"] == HOSTILE


@pytest.mark.parametrize("run_id, agent, children", [
    ("session-2026-11-27-0330", "cart-investigator", [("tool", "get_pod_events"), ("llm", "ChatCompletion")]),
    ("conv-2026-11-27-0415", "disk-watcher", [("llm", "chat gpt-4o-mini"), ("tool", "execute_tool df")]),
])
def test_trees_of_agents_without_afterfix(examples, run_id, agent, children):
    tree = run_tree(examples, run_id)
    assert tree.agent_name == agent and tree.incident_id is None
    assert tree.root.kind == "run" and tree.root.span_id is not None
    assert [(n.kind, n.label) for n in tree.root.children] == children
    assert not any(n.on_path for n in tree.root.walk())


def test_openinference_run_by_parent_and_child(night):
    tree = run_tree(night, "oi-session-1")
    assert tree.agent_name == "cart-agent"
    assert _shape(tree.root) == [(0, "run", "oi-session-1 (cart-agent)"), (1, "step", "plan"),
                                 (2, "tool", "get_cart"), (2, "llm", "ChatCompletion")]
    tool, llm = tree.nodes("tool")[0], tree.nodes("llm")[0]
    assert (tool.details["tool_name"], tool.details["arguments"], tool.details["result"]) == (
        "get_cart", '{"user": 7}', "2 items")
    assert llm.details == {"model": "small-8b", "provider": "local", "input_tokens": 300, "output_tokens": 20}


def test_unknown_run_is_a_library_error_that_says_how_to_list_runs(night):
    with pytest.raises(afterfix.NotFound, match=r"no run 'run-nope'.*afterfix query \"SELECT run_id FROM runs\""):
        run_tree(night, "run-nope")
    with pytest.raises(afterfix.NotFound, match=r"no incident 'INC-nope'.*SELECT incident_id FROM incidents"):
        incident_trees(night, "INC-nope")
