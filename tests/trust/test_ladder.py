"""trust.ladder: track records from actions, verifications, rollbacks and verdicts; suggestions after
N clean outcomes or one negative one; level changes appended with who and why; never above a cap."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from ladder_world import World, policy  # noqa: E402

from afterfix._exceptions import NotFound  # noqa: E402
from afterfix.review.verdicts import record_verdict  # noqa: E402
from afterfix.trust import ladder as L  # noqa: E402


@pytest.fixture
def world(store):
    return World(store)


def at(hour: int, minute: int = 0):
    return lambda: datetime(2026, 11, 27, hour, minute)


def test_an_empty_store_has_every_rule_at_its_policy_level(store):
    p = policy()
    assert L.current_levels(store, p) == {"db-migrations": 2, "restarts": 2, "leak-scale": 1}
    assert L.suggestions(store, p) == [] and L.history(store) == []
    assert all(r.actions == 0 for r in L.track_record(store, p).values())


def test_the_track_record_counts_verified_rollbacks_by_people_and_guard_and_wrong_verdicts(store, world):
    p = policy()
    ok = [world.act() for _ in range(3)]
    world.act(outcome="failure")
    world.act(outcome=None)  # never verified: open
    back = world.act()
    world.rollback(back["action_id"])
    guard = world.act()
    world.rollback(guard["action_id"], automatic=True)
    wrong_on_decision = world.act()
    record_verdict(store, wrong_on_decision["decision_id"], "wrong", "alice", should_have="fix")
    record_verdict(store, ok[0]["action_id"], "wrong", "carol", note="it hid the leak")
    world.act("create", "Job")  # another rule's
    world.act("delete", "Secret")  # no rule's
    rec = L.track_record(store, p)["restarts"]
    assert (rec.actions, rec.successes, rec.failed_verifications) == (8, 2, 1)
    assert (rec.rollbacks_by_people, rec.rollbacks_by_guard, rec.wrong_verdicts) == (1, 1, 2)
    by = {o.action_id: o.result for o in rec.outcomes}
    assert by[back["action_id"]] == by[guard["action_id"]] == "rolled_back"
    assert by[ok[0]["action_id"]] == by[wrong_on_decision["action_id"]] == "wrong"
    assert rec.last_outcome_at == datetime(2026, 11, 27, 1, 7)
    assert L.track_record(store, p)["db-migrations"].actions == 1
    assert "1 rolled back by the guard" in rec.text() and "of 8 actions" in rec.text()


def test_a_verdict_changed_to_correct_no_longer_counts(store, world):
    a = world.act()
    record_verdict(store, a["action_id"], "wrong", "alice", now=at(8))
    assert L.track_record(store, policy())["restarts"].wrong_verdicts == 1
    record_verdict(store, a["action_id"], "correct", "alice", now=at(9))
    rec = L.track_record(store, policy())["restarts"]
    assert rec.wrong_verdicts == 0 and rec.successes == 1


@pytest.mark.parametrize("n, suggested", [(4, False), (5, True)])
def test_promotion_is_suggested_after_n_clean_outcomes_in_a_row(store, world, n, suggested):
    for _ in range(n):
        world.act()
    found = L.suggestions(store, policy())
    assert bool(found) == suggested
    if suggested:
        (s,) = found
        assert (s.rule_id, s.kind, s.from_level, s.to_level) == ("restarts", "promote", 2, 3)
        assert "5 clean outcomes in a row" in s.why


def test_the_same_fix_again_and_again_is_masked_not_clean(store, world):
    # five verified restarts of one workload: each cleared the symptom and the cause stayed
    for _ in range(5):
        world.act(name="cart")
    rec = L.track_record(store, policy())["restarts"]
    assert [o.result for o in rec.outcomes] == ["masked"] * 5 and rec.clean_streak == 0 and rec.negatives == 0
    assert rec.masked == 5 and "5 verified but needed again (masked)" in rec.text()
    assert L.suggestions(store, policy()) == []


def test_promote_after_is_configurable_and_checked(store, world):
    world.act()
    world.act()
    assert [s.kind for s in L.suggestions(store, policy(), promote_after=2)] == ["promote"]
    with pytest.raises(L.TrustError, match="promote_after 0"):
        L.suggestions(store, policy(), promote_after=0)


def test_a_failed_verification_breaks_the_streak_and_open_outcomes_do_not(store, world):
    for outcome in ("success", "success", "failure", "success", None, "success"):
        world.act(outcome=outcome)
    rec = L.track_record(store, policy())["restarts"]
    assert rec.clean_streak == 2 and rec.successes == 4
    assert L.suggestions(store, policy(), promote_after=3) == []


def test_a_rollback_or_a_wrong_verdict_suggests_demotion(store, world):
    for _ in range(6):
        world.act()
    a = world.act()
    world.rollback(a["action_id"], automatic=True)
    (s,) = L.suggestions(store, policy())
    assert (s.kind, s.from_level, s.to_level) == ("demote", 2, 1)
    assert "1 rolled back by the guard" in s.why


def test_nothing_is_suggested_below_level_1(store, world):
    a = world.act("scale", scenario="memory_leak")
    record_verdict(store, a["action_id"], "wrong", "alice")
    assert L.track_record(store, policy())["leak-scale"].wrong_verdicts == 1
    assert L.suggestions(store, policy()) == []


def test_scenario_and_sdk_labels_reach_the_rules_match(store, world):
    world.act("scale", scenario="memory_leak")
    world.act("scale", scenario="noise")
    assert L.track_record(store, policy())["leak-scale"].actions == 1
    assert L.action_labels({"afterfix.labels.team": "payments", "afterfix.scenario": "noise"}, "other") == {
        "team": "payments", "scenario": "noise"}
    assert L.action_labels({}, "memory_leak") == {"scenario": "memory_leak"}


def test_accepting_a_promotion_appends_who_why_and_the_record_and_moves_the_level(store, world):
    for _ in range(5):
        world.act()
    change = L.change_level(store, policy(), "restarts", "promote", "alice", "five clean restarts", now=at(8))
    assert (change.outcome, change.from_level, change.to_level, change.suggested) == ("accepted", 2, 3, True)
    assert change.track_record["successes"] == 5 and change.policy == "trust.yaml"
    assert L.current_levels(store, policy())["restarts"] == 3
    (h,) = L.history(store, "restarts")
    assert (h.who, h.reason, h.kind, h.track_record["clean_streak"]) == ("alice", "five clean restarts", "promote", 5)
    # the streak starts again from the change: no second suggestion until five more
    assert L.suggestions(store, policy()) == []
    for _ in range(5):
        world.act()
    (s,) = L.suggestions(store, policy())
    assert (s.from_level, s.to_level) == (3, 4)


def test_a_promotion_without_a_suggestion_is_recorded_as_not_suggested(store):
    change = L.change_level(store, policy(), "restarts", "promote", "alice", "we trust it", now=at(8))
    assert change.suggested is False and L.current_levels(store, policy())["restarts"] == 3


def test_a_promotion_above_the_cap_is_refused_naming_the_cap_and_its_line(store, world):
    for _ in range(6):
        world.act("create", "Job")
    assert L.suggestions(store, policy()) == []  # at its cap: never suggested
    with pytest.raises(L.TrustError, match=r"capped at level 2 by trust.yaml line 4.*cannot be promoted to 3"):
        L.change_level(store, policy(), "db-migrations", "promote", "alice", "surely fine")
    assert L.history(store) == []


def test_a_lowered_cap_caps_accepted_changes(store):
    p = policy()
    L.change_level(store, p, "restarts", "promote", "alice", "ok", now=at(8))
    p.rules[1].cap = 2
    assert L.current_levels(store, p)["restarts"] == 2


@pytest.mark.parametrize("rule, kind, match", [
    ("leak-scale", "demote", "bottom of the ladder"),
    ("nope", "promote", "no rule 'nope'.*its rules are db-migrations, restarts, leak-scale"),
    ("restarts", "sideways", "kind 'sideways'"),
])
def test_impossible_changes_are_refused(store, rule, kind, match):
    with pytest.raises((L.TrustError, NotFound), match=match):
        L.change_level(store, policy(), rule, kind, "alice", "because")


def test_the_top_of_the_ladder_is_4(store):
    for hour in (8, 9):
        L.change_level(store, policy(), "restarts", "promote", "alice", "ok", now=at(hour))
    with pytest.raises(L.TrustError, match="level 4 .*the top of the ladder"):
        L.change_level(store, policy(), "restarts", "promote", "alice", "more")


@pytest.mark.parametrize("who, reason, match", [("", "x", "who"), ("alice", "  ", "reason")])
def test_a_change_needs_who_and_why(store, who, reason, match):
    with pytest.raises(L.TrustError, match=match):
        L.change_level(store, policy(), "restarts", "demote", who, reason)


def test_refusing_a_demotion_keeps_the_level_records_it_and_waits_for_new_evidence(store, world):
    a = world.act()
    world.rollback(a["action_id"])
    (s,) = L.suggestions(store, policy())
    assert s.kind == "demote"
    change = L.refuse(store, policy(), "restarts", "bob", "the rollback was a drill", now=at(8))
    assert (change.outcome, change.kind, change.from_level, change.to_level, change.suggested) == (
        "refused", "demote", 2, 1, True)
    assert L.current_levels(store, policy())["restarts"] == 2
    assert L.suggestions(store, policy()) == []
    b = world.act()
    world.rollback(b["action_id"], automatic=True)
    (again,) = L.suggestions(store, policy())
    assert again.kind == "demote" and "1 rollback or wrong verdict since" in again.why


def test_refusing_with_nothing_suggested_says_so(store):
    with pytest.raises(L.TrustError, match="nothing is suggested"):
        L.refuse(store, policy(), "restarts", "bob", "no")


def test_accepted_demotion_then_the_ladder_shows_history_in_order(store, world):
    a = world.act()
    record_verdict(store, a["action_id"], "wrong", "alice")
    L.change_level(store, policy(), "restarts", "demote", "alice", "it hid a leak", now=at(8))
    L.change_level(store, policy(), "restarts", "promote", "bob", "the leak is fixed", now=at(9))
    rungs = {r.rule_id: r for r in L.ladder(store, policy())}
    r = rungs["restarts"]
    assert (r.policy_level, r.level, r.cap, r.line) == (2, 2, None, 11)
    assert [c.text() for c in r.changes] == ["demoted 2 → 1", "promoted 1 → 2"]
    assert rungs["db-migrations"].top == 2 and rungs["restarts"].top == 4


def test_levels_at_gives_the_level_in_force_when_an_action_happened(store):
    L.change_level(store, policy(), "restarts", "promote", "alice", "ok", now=at(8))
    level = L.levels_at(store, policy())
    assert level("restarts", datetime(2026, 11, 27, 7)) == 2
    assert level("restarts", datetime(2026, 11, 27, 9)) == 3 == level("restarts", None)
    assert level("unknown", None) is None
