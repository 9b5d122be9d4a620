"""RunView: a run's tree, timeline and steps, each step in full and escaped, paging and filters,
verdicts, and live refresh when spans or verdicts arrive."""

from __future__ import annotations

import json
import sys

import pytest

from afterfix.widgets.run_view import RunView
from widgets.conftest import HOSTILE, Traces, assert_escaped


@pytest.fixture
def hostile(tmp_path, store):
    t = Traces(tmp_path / "a")
    ids = t.incident("INC-h", text=HOSTILE, tools=3, decisions=2)
    t.ingest(store)
    return store, ids


def rows_of(view, kind):
    return [r for r in view._rows if r["kind"] == kind]


def test_every_step_is_shown_in_full_and_escaped(hostile):
    store, ids = hostile
    view = RunView(store, ids["run_id"])
    assert [s["kind"] for s in view._rows].count("decision") == 2
    assert_escaped(view.steps_html.value)
    for row in view._rows:
        view.select(row["n"])
        html = view.detail.value
        assert f"#{row['n']} " in html
        if row["kind"] in ("tool", "decision", "action"):
            assert_escaped(html)
    tool = rows_of(view, "tool")[0]
    view.select(tool["n"])
    assert "arguments" in view.detail.value and "result" in view.detail.value and "kubectl_get" in view.detail.value
    decision = rows_of(view, "decision")[0]
    view.select(decision["n"])
    html = view.detail.value
    assert "scale" in html and "wait" in html and "cpu 95%" in html and "the alert is firing" in html
    action = rows_of(view, "action")[0]
    view.select(action["n"])
    html = view.detail.value
    assert "spec.replicas" in html and ">patch<" in html and ">before<" in html and "uid-cart" in html
    # the figures' text is escaped too (figures._text), and they are plotly's own mime type
    for out in (view.tree_out, view.timeline_out):
        (bundle,) = out.outputs
        dumped = json.dumps(bundle["data"]["application/vnd.plotly.v1+json"])
        assert "<img" not in dumped and "<script" not in dumped


def test_an_incident_view_has_every_run_and_a_tree_per_run(tmp_path, store):
    t = Traces(tmp_path / "a")
    a = t.incident("INC-2", tools=1)
    b = t.incident("INC-2", tools=1)
    t.ingest(store)
    view = RunView(store, incident_id="INC-2")
    assert view.run_ids == [a["run_id"], b["run_id"]]
    assert [v for _, v in view.tree_run.options] == view.run_ids and view.tree_run.layout.display == ""
    first = json.dumps(view.tree_out.outputs[0]["data"])
    view.tree_run.value = b["run_id"]
    assert json.dumps(view.tree_out.outputs[0]["data"]) != first and b["run_id"] in json.dumps(view.tree_out.outputs[0]["data"])
    with pytest.raises(ValueError, match="run_id or an incident_id"):
        RunView(store)


def test_steps_are_paged_and_filtered(tmp_path, store):
    t = Traces(tmp_path / "a")
    ids = t.incident("INC-big", tools=100, decisions=10)
    t.ingest(store)
    view = RunView(store, ids["run_id"], page_size=50, tree_rows=40)
    total = len(view._rows)
    assert total > 130 and view.page.max == -(-total // 50)
    assert [r["n"] for r in view.page_rows()] == list(range(1, 51)) and view.prev_page.disabled
    assert len(view.step.options) == 50 and view.steps_html.value.count("<tr>") == 51  # heading + 50
    view.next_page.click()
    assert view.page.value == 2 and [r["n"] for r in view.page_rows()][0] == 51
    view.filter.value = "decisions"
    assert view.page.value == 1 and view.page.max == 1
    assert {r["kind"] for r in view.page_rows()} == {"decision"} and len(view.page_rows()) == 10
    view.select(total)  # back to all steps, on the last page
    assert view.filter.value == "all steps" and view.page.value == view.page.max and view.step.value == total
    # the tree figure draws at most tree_rows rows and says what it left out
    assert "more rows not drawn" in json.dumps(view.tree_out.outputs[0]["data"])


def test_verdicts_show_and_arrive_live(hostile):
    from afterfix.review.verdicts import record_verdict

    store, ids = hostile
    view = RunView(store, ids["run_id"])
    assert "no verdicts" in view.verdicts_html.value
    assert view.poll() is False
    record_verdict(store, ids["decisions"][0], "wrong", "ana", note="should have waited " + HOSTILE, should_have="wait")
    assert view.poll() is True
    assert "ana" in view.verdicts_html.value and "wrong" in view.verdicts_html.value
    assert_escaped(view.verdicts_html.value)
    decision = rows_of(view, "decision")[0]
    view.select(decision["n"])
    assert "should have waited" in view.detail.value and "verdicts" in view.detail.value


def test_new_spans_of_the_run_appear_on_poll(tmp_path, store):
    t = Traces(tmp_path / "a")
    ids = t.incident("INC-3", tools=1)
    t.ingest(store)
    view = RunView(store, incident_id="INC-3")
    before = len(view._rows)
    later = Traces(tmp_path / "b", seed=5, start="2026-11-27T02:00")
    later.incident("INC-3", tools=4, run_id=ids["run_id"])
    later.ingest(store)
    assert view.poll() is True
    assert len(view._rows) > before and f"{len(view._rows)} steps" in view.header.value


def test_without_the_verdicts_module_it_shows_none(hostile, monkeypatch):
    from afterfix.review.verdicts import record_verdict

    store, ids = hostile
    record_verdict(store, ids["actions"][0], "correct", "ana")
    assert RunView(store, ids["run_id"])._verdicts
    monkeypatch.setitem(sys.modules, "afterfix.review.verdicts", None)  # import raises ImportError
    view = RunView(store, ids["run_id"])
    assert view._verdicts == {} and "no verdicts" in view.verdicts_html.value
