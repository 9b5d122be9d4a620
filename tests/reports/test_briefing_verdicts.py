"""Verdicts in the morning briefing: a section listing what reviewers said of the window's decisions
and actions, a wrong verdict as a reason to worry in the handoff's first line, and every piece of
it escaped."""

from __future__ import annotations

from datetime import datetime

from afterfix.reports.briefing import SECTION_KEYS, build_briefing
from afterfix.reports.html import handoff_html, section_html
from afterfix.review.verdicts import record_verdict

from tests.nights import Night

WINDOW = (datetime(2026, 11, 26, 22), datetime(2026, 11, 27, 7))
HOSTILE = '<img src=x onerror="alert(1)"><script>alert(2)</script>$x$'


def calm_night(tmp_path, question="what to do about shop/catalog?"):
    night = Night(tmp_path)
    ids = night.at("2026-11-26T23:00").incident("INC-1", "shop/catalog", "latency_p95_ms", 900, 300, question=question,
                                                change=("patch", {"spec.maxReplicas": 2}, {"spec.maxReplicas": 4}),
                                                kind="HorizontalPodAutoscaler")  # within templates/trust.yaml's level 3
    return night.store(), ids


def test_no_verdict_yet_says_how_to_give_one(tmp_path):
    store, _ = calm_night(tmp_path)
    b = build_briefing(store, *WINDOW, figures=False)
    section = b.section("verdicts")
    assert section.table is None and "afterfix verdict ID correct|wrong|unsure" in section.summary
    assert "reviewers" not in b.section("what_tried").table.columns
    assert not b.worry and [s.key for s in b.sections] == list(SECTION_KEYS)


def test_a_wrong_verdict_makes_a_calm_night_worth_a_look(tmp_path):
    store, ids = calm_night(tmp_path)
    record_verdict(store, ids["action_id"], "correct", "bob", note="fine")
    record_verdict(store, ids["decision_id"], "wrong", "alice", should_have="no_action", note="the alert was a blip")
    b = build_briefing(store, *WINDOW, figures=False)
    assert b.worry and b.handoff[0] == "Yes, worry: 1 decision a reviewer marked wrong."
    section = b.section("verdicts")
    assert section.summary == "2 verdicts on the window's decisions and actions: 1 wrong, 1 correct."
    assert list(section.table["verdict"]) == ["wrong", "correct"]  # the wrong ones first
    assert list(section.table["should have"]) == ["no_action", ""]
    assert section.table["on"].iloc[0].endswith("what to do about shop/catalog? (chose patch)")
    assert section.notes == [f"Wrong, says alice: decision {ids['decision_id']} on INC-1 (“what to do about "
                             "shop/catalog?”) chose patch; it should have taken no_action. “the alert was a blip”"]
    assert b.section("what_tried").table["reviewers"].iloc[0] == "alice: wrong, should have no_action"
    assert b.counts["marked_wrong"] == 1 and b.counts["verdicts"] == 2


def test_a_changed_mind_counts_once_and_only_the_current_verdict(tmp_path):
    store, ids = calm_night(tmp_path)
    record_verdict(store, ids["decision_id"], "wrong", "alice", should_have="no_action")
    record_verdict(store, ids["decision_id"], "correct", "alice", note="on second look, it was right")
    b = build_briefing(store, *WINDOW, figures=False)
    assert not b.worry and b.handoff[0].startswith("Nothing needs you")
    assert list(b.section("verdicts").table["verdict"]) == ["correct"]


def test_verdicts_on_other_windows_are_left_out(tmp_path):
    store, ids = calm_night(tmp_path)
    record_verdict(store, ids["decision_id"], "wrong", "alice", should_have="no_action")
    b = build_briefing(store, datetime(2026, 11, 25, 22), datetime(2026, 11, 26, 7), figures=False)
    assert b.section("verdicts").table is None and not b.worry


def test_verdict_text_is_escaped(tmp_path):
    store, ids = calm_night(tmp_path, question=HOSTILE)
    record_verdict(store, ids["decision_id"], "wrong", HOSTILE, note=HOSTILE, should_have="no_action")
    b = build_briefing(store, *WINDOW, figures=False)
    page = handoff_html(b) + section_html(b.section("verdicts")) + section_html(b.section("what_tried"), 2)
    assert "<script" not in page and "<img" not in page and "$x$" not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
