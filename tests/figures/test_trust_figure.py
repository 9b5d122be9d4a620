"""figures.trust.trust_ladder: a row per rule, levels 1-4 as columns, the level now and the policy's,
cap shading, suggestions as arrows, history markers; every text escaped; 20 rules stay legible."""

from __future__ import annotations

from datetime import datetime

import pytest

from fig_check import seen, strings, figure_json, tags

from afterfix.figures.trust import ROW, trust_ladder
from afterfix.trust.ladder import Record, Rung, Suggestion, TrustChange

HOSTILE = "<a href='javascript:alert(1)'>x</a> $\\alpha$"


def rung(rule_id="restarts", level=2, policy_level=2, cap=None, suggestion=None, changes=(), description="d"):
    return Rung(rule_id, description, policy_level, level, cap, 7, Record(rule_id, successes=5, actions=6,
                rollbacks_by_guard=1, clean_streak=5), suggestion, list(changes))


def trace(fig, name):
    return next(t for t in fig.data if t.name == name)


def test_each_rule_is_a_row_with_its_level_now_and_the_policys():
    fig = trust_ladder([rung("a", level=3, policy_level=2), rung("b", level=1, policy_level=1)])
    now, policy = trace(fig, "level now"), trace(fig, "the policy's level")
    assert list(now.x) == [3, 1] and list(policy.x) == [2, 1] and list(now.y) == [0, 1]
    assert list(fig.layout.yaxis.ticktext) == ["a", "b"]
    assert [seen(t) for t in fig.layout.xaxis.ticktext] == ["1 alert & recommend", "2 fix with approval",
                                                           "3 fix & inform", "4 fix & report"]


def test_levels_above_the_cap_are_shaded():
    fig = trust_ladder([rung("db", cap=2), rung("free")])
    assert [list(row) for row in trace(fig, "cap").z] == [[0, 0, 1, 1], [0, 0, 0, 0]]


@pytest.mark.parametrize("kind, to", [("promote", 3), ("demote", 1)])
def test_a_suggestion_is_an_arrow_from_now_to_the_suggested_level(kind, to):
    fig = trust_ladder([rung(suggestion=Suggestion("restarts", 2, to, kind, "because"))])
    (arrow,) = [a for a in fig.layout.annotations if a.showarrow]
    assert (arrow.ax, arrow.x, arrow.y) == (2, to, 0)
    assert arrow.arrowcolor == ("#009E73" if kind == "promote" else "#D55E00")
    assert "because" in seen(trace(fig, "suggested").hovertext[0])


def test_history_marks_each_change_with_who_and_why():
    changes = [TrustChange("tru-1", datetime(2026, 12, 1, 9), "alice", "restarts", "promote", "accepted", 2, 3,
                           "quiet month", False, {}),
               TrustChange("tru-2", datetime(2026, 12, 2, 9), "bob", "restarts", "demote", "refused", 3, 2,
                           "a drill", True, {})]
    fig = trust_ladder([rung(level=3, changes=changes)])
    up, refused = trace(fig, "promoted by a person"), trace(fig, "demotion refused")
    assert round(up.x[0]) == 3 and "alice" in seen(up.hovertext[0]) and "quiet month" in seen(up.hovertext[0])
    assert round(refused.x[0]) == 2 and "a drill" in seen(refused.hovertext[0])


def test_the_track_record_is_written_at_each_rows_end():
    fig = trust_ladder([rung()])
    (text,) = [t for t in fig.data if getattr(t, "mode", None) == "text"][0].text
    assert seen(text) == "5 verified · 1 rolled back (1 by guard) · 0 wrong · streak 5"


def test_every_text_is_escaped():
    fig = trust_ladder([rung(HOSTILE, description=HOSTILE, suggestion=Suggestion(HOSTILE, 2, 3, "promote", HOSTILE),
                             changes=[TrustChange("t", datetime(2026, 12, 1), HOSTILE, HOSTILE, "promote", "accepted",
                                                  1, 2, HOSTILE, False, {})])])
    assert tags(fig) <= {"<b>", "</b>", "<br>"}
    assert not any("$" in s for s in strings(figure_json(fig)))
    assert seen(fig.layout.yaxis.ticktext[0]).startswith("<a href='javascript:")


def test_twenty_rules_grow_the_figure_and_keep_the_font():
    fig = trust_ladder([rung(f"rule-{i:02d}") for i in range(20)])
    assert fig.layout.height == 150 + ROW * 20 and ROW >= 30
    assert fig.layout.font.size == 12 and fig.layout.yaxis.tickfont.size == 12
    assert len(fig.layout.yaxis.ticktext) == 20


def test_a_policy_without_rules_says_so():
    fig = trust_ladder([])
    assert "no rules" in seen(fig.layout.annotations[0].text)
