"""The briefing shows what undo did: afterfix's rollbacks (its own traces) and the guard's alerts."""

from __future__ import annotations

import datetime as dt

from afterfix.reports.briefing import build_briefing
from afterfix.undo.rollback import rollback_action


def test_a_rollback_and_a_guard_alert_reach_the_briefing(world):
    act = world.change("HorizontalPodAutoscaler", "shop", "catalog", {"spec": {"maxReplicas": 6}}, ["spec.maxReplicas"])
    assert rollback_action(world.store, world.cluster, act, who="ana", reason="r").outcome == "rolled_back"
    t = dt.datetime.fromtimestamp(world.sim.clock.now(), dt.timezone.utc).replace(tzinfo=None)
    world.store.append_ledger("alerts", [{"alert_id": "al-1", "time": t, "source": "guard", "severity": "warning",
                                          "action_id": act, "title": "analysis latency-p95 inconclusive for act",
                                          "message": "a person must decide: afterfix rollback " + act + " --plan"}])
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    b = build_briefing(world.store, since=t - dt.timedelta(hours=1), until=now + dt.timedelta(minutes=1), figures=False)
    assert b.worry and "1 guard alert" in b.handoff[0]
    section = b.section("rolled_back")
    table = section.table.to_string()
    assert "afterfix" in table and "HorizontalPodAutoscaler shop/catalog" in table and "success" in table
    assert b.handoff[2].startswith("The agent applied 1 change ")  # afterfix's rollback is not counted as the agent's
    assert any("inconclusive" in n and f"afterfix rollback {act} --plan" in n for n in section.notes)
