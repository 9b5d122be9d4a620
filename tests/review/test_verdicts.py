"""Verdicts on decisions and actions: recorded with who and when, looked up in the store, appended
(the newest per person and target is current), refused with errors that name the place; and the
VerdictPanel widget driven in process."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from afterfix._exceptions import NotFound
from afterfix.cli import main
from afterfix.review.verdicts import VerdictError, find_target, record_verdict, verdicts
from afterfix.sdk import Option, Target
from afterfix.undo.trace import recording

HOSTILE = '<img src=x onerror="alert(1)"><script>alert(2)</script>$x$'


class Clock:
    def __init__(self, start: str = "2026-11-27T01:00:00+00:00"):
        self.t = datetime.fromisoformat(start).timestamp()

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def record_run(store, *, incident="INC-1", selected="scale_up", option_reason="cheap", agent="ref-agent",
               start="2026-11-27T01:00:00+00:00", replicas=4) -> dict:
    """One small run: a tool call, a decision between two options, a patch serving it."""
    ids = {}
    with recording(store, agent, clock=Clock(start)) as rec, rec.run(incident_id=incident) as run:
        ids["run_id"] = run.run_id
        with rec.tool_call("get_hpa", {"name": "cart"}) as call:
            call.result({"maxReplicas": 2})
        options = [Option("scale_up", "raise maxReplicas", evidence=["cpu 95%"], score=0.8,
                          reason=None if selected == "scale_up" else option_reason),
                   Option("restart", "restart the pods", score=0.3,
                          reason=None if selected == "restart" else option_reason)]
        ids["decision_id"] = rec.decision("how to relieve shop/cart?", options, selected, "cpu is saturated",
                                          policy="hpa_capacity")
        verb = "patch" if selected == "scale_up" else "restart"
        with rec.action(verb, Target("uid-1", "HorizontalPodAutoscaler", "autoscaling/v2", "shop", "cart"),
                        decision_id=ids["decision_id"], patch={"spec": {"maxReplicas": replicas}}) as act:
            ids["action_id"] = act.action_id
            act.before({"spec.maxReplicas": 2}, "10")
            act.after({"spec.maxReplicas": replicas}, "11")
    return ids


@pytest.fixture
def night(store):
    return store, record_run(store)


def times(start=datetime(2026, 11, 27, 8, 0)):
    t = [start]

    def now():
        t[0] += timedelta(seconds=1)
        return t[0]
    return now


def test_a_verdict_is_looked_up_and_appended_with_who_and_when(night):
    store, ids = night
    v = record_verdict(store, ids["decision_id"], "wrong", "alice", note="restart was enough", should_have="restart")
    assert (v.target_type, v.decision_id, v.run_id, v.incident_id) == ("decision", ids["decision_id"], ids["run_id"], "INC-1")
    a = record_verdict(store, ids["action_id"], "correct", "bob")
    assert (a.target_type, a.decision_id, a.run_id) == ("action", ids["decision_id"], ids["run_id"])
    rows = store.query("SELECT who, target_type, verdict, coalesce(should_have, '-'), coalesce(note, '-') FROM verdicts ORDER BY time")
    assert rows.values.tolist() == [["alice", "decision", "wrong", "restart", "restart was enough"],
                                    ["bob", "action", "correct", "-", "-"]]


def test_the_newest_per_person_and_target_is_current_and_history_is_kept(night):
    store, ids = night
    now = times()
    record_verdict(store, ids["decision_id"], "unsure", "alice", note="first look", now=now)
    record_verdict(store, ids["decision_id"], "correct", "bob", now=now)
    record_verdict(store, ids["decision_id"], "wrong", "alice", should_have="restart", now=now)
    current = verdicts(store, target_id=ids["decision_id"])
    assert [(v.who, v.verdict) for v in current] == [("bob", "correct"), ("alice", "wrong")]
    history = verdicts(store, target_id=ids["decision_id"], history=True)
    assert [(v.who, v.verdict) for v in history] == [("alice", "unsure"), ("bob", "correct"), ("alice", "wrong")]
    assert store.query("SELECT count(*) AS n FROM verdicts")["n"].iloc[0] == 3  # appended, never updated


def test_filters_by_run_and_incident(store):
    one, two = record_run(store, incident="INC-1"), record_run(store, incident="INC-2", start="2026-11-27T02:00:00+00:00")
    record_verdict(store, one["decision_id"], "correct", "alice")
    record_verdict(store, two["action_id"], "unsure", "alice", note="check later")
    assert [v.target_id for v in verdicts(store, incident_id="INC-2")] == [two["action_id"]]
    assert [v.target_id for v in verdicts(store, run_id=one["run_id"])] == [one["decision_id"]]
    assert len(verdicts(store)) == 2 and verdicts(store, run_id="run-nope") == []


@pytest.mark.parametrize("target,verdict,should,match", [
    ("dec", "wrong", None, r"names the option that should have been taken \(--should OPTION\); .*options are scale_up, restart"),
    ("dec", "wrong", "rollback", r"'rollback' is not an option of decision dec-.*: its options are scale_up, restart"),
    ("dec", "correct", "restart", r"only a wrong verdict names the option"),
    ("dec", "great", None, r"verdict 'great' is not one of correct, wrong, unsure"),
    ("act", "wrong", "rollback", r"not an option of decision"),
])
def test_refused_verdicts_name_the_field_and_the_fix(night, target, verdict, should, match):
    store, ids = night
    with pytest.raises(VerdictError, match=match):
        record_verdict(store, ids["decision_id" if target == "dec" else "action_id"], verdict, "alice", should_have=should)
    assert store.query("SELECT count(*) AS n FROM verdicts")["n"].iloc[0] == 0


def test_a_wrong_action_may_omit_or_name_its_decisions_option(night):
    store, ids = night
    assert record_verdict(store, ids["action_id"], "wrong", "alice").should_have is None
    assert record_verdict(store, ids["action_id"], "wrong", "bob", should_have="restart").should_have == "restart"


def test_an_unknown_id_is_named_with_how_to_list_ids(night):
    store, _ = night
    with pytest.raises(NotFound, match=r"no decision or action 'dec-nope' in .*SELECT decision_id"):
        record_verdict(store, "dec-nope", "correct", "alice")
    with pytest.raises(VerdictError, match="who"):
        record_verdict(store, "dec-nope", "correct", " ")


def test_find_target_lists_the_options_and_the_selection(night):
    store, ids = night
    t = find_target(store, ids["decision_id"])
    assert t.option_ids == ["scale_up", "restart"] and t.selected == "scale_up"
    assert t.label == "decide: how to relieve shop/cart?"
    assert find_target(store, ids["action_id"]).label == "patch HorizontalPodAutoscaler shop/cart"


# -- the CLI -------------------------------------------------------------------------------------


def cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_records_and_lists(night, capsys, monkeypatch):
    store, ids = night
    monkeypatch.setenv("AFTERFIX_USER", "carol")
    code, out, _ = cli(capsys, "verdict", "--store", str(store.root), ids["decision_id"], "wrong",
                       "--note", "restart was enough", "--should", "restart")
    assert code == 0 and out.startswith(f"recorded: carol marked decision {ids['decision_id']} wrong")
    assert "should have: restart" in out
    code, out, _ = cli(capsys, "verdict", "--store", str(store.root), ids["action_id"], "correct", "--who", "dan")
    assert code == 0
    code, out, _ = cli(capsys, "verdict", "list", "--store", str(store.root), "--format", "json")
    rows = json.loads(out)
    assert [(r["who"], r["verdict"], r["target_id"]) for r in rows] == [("carol", "wrong", ids["decision_id"]),
                                                                          ("dan", "correct", ids["action_id"])]
    code, out, _ = cli(capsys, "verdict", "list", "--store", str(store.root), "--run", ids["run_id"])
    assert code == 0 and "carol" in out and "dan" in out and "(2 rows)" in out
    code, out, _ = cli(capsys, "verdict", "list", "--store", str(store.root), "--incident", "INC-9")
    assert code == 0 and "no verdicts" in out


def test_cli_errors_name_the_fix(night, capsys):
    store, ids = night
    code, _, err = cli(capsys, "verdict", "--store", str(store.root), ids["decision_id"], "wrong", "--who", "x")
    assert code == 2 and "--should OPTION" in err and "scale_up, restart" in err
    code, _, err = cli(capsys, "verdict", "--store", str(store.root), ids["decision_id"], "--who", "x")
    assert code == 2 and "correct|wrong|unsure" in err
    code, _, err = cli(capsys, "verdict", "--store", str(store.root), "act-nope", "correct", "--who", "x")
    assert code == 2 and "no decision or action 'act-nope'" in err
    code, _, err = cli(capsys, "verdict", "list", "--store", str(store.root), "--note", "x")
    assert code == 2 and "--note" in err


def test_cli_table_escapes_trace_text(night, capsys):
    store, ids = night
    record_verdict(store, ids["decision_id"], "unsure", "eve\x1b[31m", note="line\x1b]0;pwned\x07")
    _, out, _ = cli(capsys, "verdict", "list", "--store", str(store.root))
    assert "\x1b" not in out and "\x07" not in out


# -- the widget ----------------------------------------------------------------------------------


def test_panel_saves_a_verdict_and_shows_it(night):
    from afterfix.widgets.verdicts import VerdictPanel

    store, ids = night
    panel = VerdictPanel(store, ids["decision_id"], who="alice")
    assert panel.should.disabled  # only a wrong verdict on a decision names an option
    assert [v for _, v in panel.should.options] == [None, "scale_up", "restart"]
    panel.choice.value = "wrong"
    assert not panel.should.disabled
    panel.should.value = "restart"
    panel.note.value = "restart was enough"
    panel.save.click()
    assert "saved" in panel.result.value and "afterfix-bad" not in panel.result.value
    assert [(v.who, v.verdict, v.should_have) for v in verdicts(store)] == [("alice", "wrong", "restart")]
    assert "alice" in panel.current.value and "restart was enough" in panel.current.value


def test_panel_shows_errors_and_keeps_the_input(night):
    from afterfix.widgets.verdicts import VerdictPanel

    store, ids = night
    panel = VerdictPanel(store, ids["decision_id"], who="")
    panel.choice.value = "correct"
    panel.note.value = "kept"
    panel.save.click()
    assert "afterfix-bad" in panel.result.value and "who" in panel.result.value
    assert panel.note.value == "kept" and verdicts(store) == []


def test_panel_for_an_unknown_target_says_so(night):
    from afterfix.widgets.verdicts import VerdictPanel

    store, _ = night
    panel = VerdictPanel(store, "dec-<b>nope</b>", who="alice")
    assert "dec-&lt;b&gt;nope&lt;/b&gt;" in panel.result.value and panel.save.disabled


def test_panel_shows_hostile_text_as_text(store):
    from afterfix.widgets.verdicts import VerdictPanel

    ids = record_run(store, selected="restart", option_reason=HOSTILE)
    # a hostile option id and question, as an agent could record them
    with recording(store, "agent" + HOSTILE, clock=Clock("2026-11-27T03:00:00+00:00")) as rec, rec.run(incident_id="INC-" + HOSTILE):
        bad = rec.decision(HOSTILE, [Option(HOSTILE, HOSTILE), Option("other", "x", reason=HOSTILE)], HOSTILE, HOSTILE)
    record_verdict(store, bad, "wrong", HOSTILE, note=HOSTILE, should_have="other")
    record_verdict(store, ids["decision_id"], "unsure", "alice", note=HOSTILE)
    for target in (bad, ids["decision_id"]):
        panel = VerdictPanel(store, target, who="alice")
        shown = panel.header.value + panel.current.value + panel.result.value
        assert "<script" not in shown and "<img" not in shown and "$x$" not in shown
        assert "&lt;script&gt;" in shown
    panel = VerdictPanel(store, bad, who="alice")
    assert HOSTILE in [v for _, v in panel.should.options]  # the value is the id itself; the label is plain text
