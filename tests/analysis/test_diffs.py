"""analysis.diffs: flat and nested state diff field by field; text that is not JSON is a change of
the raw text; action_diffs reads the recorded actions of a run or an incident."""

from __future__ import annotations

import pytest

from afterfix.analysis.diffs import ROOT, action_diffs, field_diff, flatten, parse_state, state_diff
from afterfix.analysis.model import FieldChange

from analysis.recorded import HOSTILE, recorded_night

ENV_BEFORE = {"spec": {"template": {"spec": {"containers": [
    {"name": "app", "image": "shop/checkout:1.14.2",
     "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "DB_POOL_SIZE", "value": "10"}]}]}}}}
ENV_AFTER = {"spec": {"template": {"spec": {"containers": [
    {"name": "app", "image": "shop/checkout:1.14.1",
     "env": [{"name": "DB_POOL_SIZE", "value": "50"}, {"name": "LOG_LEVEL", "value": "info"},
             {"name": "TIMEOUT_MS", "value": "800"}]}]}}}}
APP = "spec.template.spec.containers[name=app]"


@pytest.mark.parametrize("before, after, expected", [
    pytest.param({"spec.maxReplicas": 2}, {"spec.maxReplicas": 6},
                 [("spec.maxReplicas", 2, 6, "changed")], id="flat"),
    pytest.param({"spec": {"maxReplicas": 2, "minReplicas": 1}}, {"spec": {"maxReplicas": 6, "minReplicas": 1}},
                 [("spec.maxReplicas", 2, 6, "changed")], id="nested"),
    pytest.param({"spec": {"maxReplicas": 2}}, {"spec.maxReplicas": 6},
                 [("spec.maxReplicas", 2, 6, "changed")], id="nested-before-flat-after"),
    pytest.param(ENV_BEFORE, ENV_AFTER,
                 [(f"{APP}.image", "shop/checkout:1.14.2", "shop/checkout:1.14.1", "changed"),
                  (f"{APP}.env[name=DB_POOL_SIZE].value", "10", "50", "changed"),
                  (f"{APP}.env[name=TIMEOUT_MS].value", None, "800", "added")], id="env-list-by-name"),
    pytest.param({"args": ["--a", "--b"]}, {"args": ["--a", "--c", "--d"]},
                 [("args[1]", "--b", "--c", "changed"), ("args[2]", None, "--d", "added")], id="list-by-index"),
    pytest.param({"ports": [{"name": "http", "port": 80}, {"name": "http", "port": 81}]},
                 {"ports": [{"name": "http", "port": 80}]},
                 [("ports[1].name", "http", None, "removed"), ("ports[1].port", 81, None, "removed")],
                 id="repeated-names-fall-back-to-index"),
    pytest.param({"volumes": [{"name": "a"}]}, {"volumes": [{"name": "a"}, {"name": "b"}]},
                 [("volumes[name=b]", None, {"name": "b"}, "added")], id="item-that-is-only-a-name"),
    pytest.param({"a": 1, "b": 2}, {"b": 2, "c": 3}, [("a", 1, None, "removed"), ("c", None, 3, "added")],
                 id="added-and-removed"),
    pytest.param(None, {"spec": {"replicas": 3}}, [("spec.replicas", None, 3, "added")], id="created"),
    pytest.param({"spec": {"replicas": 3}}, None, [("spec.replicas", 3, None, "removed")], id="deleted"),
    pytest.param(None, None, [], id="nothing-recorded"),
    pytest.param({"x": 2}, {"x": 2.0}, [], id="same-number"),
    pytest.param({"x": 1}, {"x": True}, [("x", 1, True, "changed")], id="true-is-not-1"),
    pytest.param({"x": "2"}, {"x": 2}, [("x", "2", 2, "changed")], id="text-is-not-a-number"),
    pytest.param({"x": None}, {"x": 0}, [("x", None, 0, "changed")], id="null-to-zero"),
    pytest.param({"labels": {}}, {"labels": {"team": "shop"}},
                 [("labels", {}, None, "removed"), ("labels.team", None, "shop", "added")], id="empty-object-filled"),
    pytest.param({"args": [], "labels": {}}, {"args": [], "labels": {}}, [], id="empty-stays-empty"),
    pytest.param({"args": ["--a"]}, {"args": []}, [("args[0]", "--a", None, "removed"), ("args", None, [], "added")],
                 id="list-emptied"),
    pytest.param([1, 2], [1, 3], [("[1]", 2, 3, "changed")], id="top-level-list"),
    pytest.param("garbage", {"a": 1}, [(ROOT, "garbage", {"a": 1}, "changed")], id="scalar-against-object"),
    pytest.param("same", "same", [], id="same-text"),
])
def test_field_diff(before, after, expected):
    assert field_diff(before, after) == [FieldChange(*e) for e in expected]


def test_flat_and_nested_give_the_same_paths():
    assert flatten({"spec": {"template": {"metadata": {"labels": {"app": "x"}}}}}) == \
        flatten({"spec.template.metadata.labels.app": "x"}) == {"spec.template.metadata.labels.app": "x"}


@pytest.mark.parametrize("before, after, expected", [
    pytest.param('{"spec":{"maxReplicas":4}}', '{"spec":{"maxReplicas":10}}',
                 [("spec.maxReplicas", 4, 10, "changed")], id="json-text"),
    pytest.param("{not json", '{"a": 1}', [(ROOT, "{not json", '{"a": 1}', "changed")], id="before-not-json"),
    pytest.param('{"a": 1}', "[1, 2", [(ROOT, '{"a": 1}', "[1, 2", "changed")], id="after-not-json"),
    pytest.param(None, "not json", [(ROOT, None, "not json", "added")], id="only-after-not-json"),
    pytest.param("same text", "same text", [], id="unchanged-text"),
    pytest.param(HOSTILE, "{}", [(ROOT, HOSTILE, "{}", "changed")], id="hostile-text-kept-as-it-is"),
])
def test_state_diff_of_stored_text(before, after, expected):
    assert state_diff(before, after) == [FieldChange(*e) for e in expected]


def test_parse_state_never_evaluates():
    assert parse_state("__import__('os').system('true')") == ("__import__('os').system('true')", False)
    assert parse_state('{"a": [1, 2]}') == ({"a": [1, 2]}, True)
    assert parse_state(None) == (None, True)


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    store, ids = recorded_night(tmp_path_factory.mktemp("diffs"))
    yield store
    store.close()


def test_action_diffs_of_an_incident(night):
    frame = action_diffs(night, incident_id="INC-T1")
    assert list(frame["action_id"]) == ["act-1", "act-2", "act-3"]  # in the order they started
    rows = {r.action_id: r for r in frame.itertuples()}
    assert (rows["act-1"].path, rows["act-1"].before, rows["act-1"].after) == ("spec.maxReplicas", 4, 10)
    assert (rows["act-1"].resource_version_before, rows["act-1"].resource_version_after) == ("184467", "184532")
    assert rows["act-1"].target_kind == "HorizontalPodAutoscaler" and rows["act-1"].run_id == "run-t1"
    assert rows["act-2"].path == "metadata.annotations.afterfix/changed"
    # The before state that is not JSON: the raw text, whole, and nothing evaluated or lost.
    assert (rows["act-3"].path, rows["act-3"].before) == (ROOT, "{not json: " + HOSTILE)
    assert rows["act-3"].after == '{"spec": {"replicas": 6}}'


def test_action_diffs_of_a_run_and_of_nothing(night):
    assert list(action_diffs(night, run_id="run-t2")["action_id"]) == ["act-3"]
    assert action_diffs(night, run_id="no-such-run").empty
    assert len(action_diffs(night)) == 3
