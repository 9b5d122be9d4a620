"""The briefing as data: the handoff, the sections in order, and what each says about the demo night."""

from __future__ import annotations

from datetime import datetime

import pytest

from afterfix.reports.briefing import SECTION_KEYS, build_briefing
from afterfix.reports.html import handoff_html, section_html, text

from tests.nights import Night
from tests.reports.conftest import NIGHT

ORDER = ["What broke", "What the agent tried", "What worked", "What was rolled back", "Side effects to watch",
         "Will it happen again?", "Findings", "Open approvals", "Actions by trust level"]


@pytest.fixture(scope="module")
def demo(demo_store):
    return build_briefing(demo_store, *NIGHT, figures=False)


def test_sections_come_in_the_order_a_reviewer_asks(demo):
    assert [s.key for s in demo.sections] == list(SECTION_KEYS)
    assert [s.title for s in demo.sections] == ORDER


def test_the_handoff_is_five_lines_that_answer_should_i_worry(demo):
    assert len(demo.handoff) == 5 and demo.worry
    verdict, broke, did, watch, tonight = demo.handoff
    assert verdict.startswith("Yes, worry:") and "awaiting approval" in verdict
    assert "critical: shop/checkout and shop/payments" in broke
    assert "The agent applied" in did and "asked approval for 1 more" in did
    # the night's side effect: the rollback took the pool size back to 5, and payments' latency rose later
    assert watch.startswith("Watch shop/payments:") and "also set payments env DB_POOL_SIZE 20 → 5" in watch
    assert tonight.startswith("Tonight: yes") and "shop/cart" in tonight
    assert all(len(line) < 320 for line in demo.handoff)  # read in 30 seconds


def test_each_section_answers_from_the_night(demo):
    rolled = demo.section("rolled_back")
    assert "also undid" in rolled.summary and "DB_POOL_SIZE" in rolled.table["also undid"].iloc[0]
    # the rollback's fields as a reviewer reads them, not as the paths it recorded them by
    assert "payments env DB_POOL_SIZE: 20 → 5" in rolled.table["fields"].iloc[0]
    assert "[name=" not in rolled.table["fields"].iloc[0]
    tried = demo.section("what_tried").table
    assert (tried["turned down"] != "—").any()  # the options it turned down, with their reasons
    assert "scored" in " ".join(tried["turned down"])
    worked = demo.section("what_worked").table
    assert worked["verified"].str.startswith("success").all() and "spec.maxReplicas: 2 → 4" in set(worked["fields"])
    approvals = demo.section("approvals").table
    assert list(approvals["trust level"]) == ["2 fix with approval"] and "Job" in approvals["change"].iloc[0]
    again = demo.section("again")
    assert again.summary.startswith("Yes") and "shop/cart" in " ".join(again.table["target"])
    kinds = set(demo.section("findings").table["kind"])
    assert {"masked issue", "bundled rollback", "side effect", "duplicate investigation"} <= kinds
    trust = demo.section("trust").table
    assert "3 fix & inform" in set(trust["trust level"])


def test_a_namespace_keeps_only_its_incidents_and_actions(demo_store):
    b = build_briefing(demo_store, *NIGHT, namespace="platform", figures=False)
    services = set(b.section("what_broke").table["service"])
    assert services and all(s.startswith("platform/") for s in services)
    assert "DB_POOL_SIZE" not in " ".join(b.handoff)


def test_an_empty_window_says_so_and_names_the_newest_data(demo_store):
    b = build_briefing(demo_store, datetime(2026, 12, 1), datetime(2026, 12, 2), figures=False)
    assert not b.worry and b.handoff[0].startswith("Nothing to worry about")
    assert "the store's newest span is from 2026-11-27" in b.handoff[1]
    assert b.section("what_broke").summary == "No incident was recorded in this window."
    assert all(s.table is None for s in b.sections)


def test_a_calm_night_needs_nobody(tmp_path):
    night = Night(tmp_path)
    night.at("2026-11-26T23:00").incident("INC-1", "shop/catalog", "latency_p95_ms", 900, 300,
                                          change=("patch", {"spec.maxReplicas": 2}, {"spec.maxReplicas": 4}),
                                          kind="HorizontalPodAutoscaler")  # within templates/trust.yaml's level 3
    b = build_briefing(night.store(), datetime(2026, 11, 26, 22), datetime(2026, 11, 27, 7), figures=False)
    assert not b.worry
    assert b.handoff[0].startswith("Nothing needs you") and "1 verified" in b.handoff[2]


def test_the_window_must_not_be_empty(demo_store):
    with pytest.raises(ValueError, match="is not before until"):
        build_briefing(demo_store, datetime(2026, 11, 27), datetime(2026, 11, 26), figures=False)


HOSTILE = ['<script>alert(1)</script>', '<img src=x onerror="alert(2)">', "$x^2$", "javascript:alert(3)"]


def test_trace_text_is_escaped_in_every_section(tmp_path):
    night = Night(tmp_path)
    for i, payload in enumerate(HOSTILE):
        night.at(f"2026-11-26T23:0{i}").incident(f"INC-{i}{payload}", "shop/" + payload.replace("/", "|"), "latency_p95_ms", 900, 300,
                                                 agent=payload, question=payload,
                                                 change=("patch", {"spec.maxReplicas": payload}, {"spec.maxReplicas": 4}))
    b = build_briefing(night.store(), datetime(2026, 11, 26, 22), datetime(2026, 11, 27, 7), figures=False)
    page = handoff_html(b) + "".join(section_html(s, i) for i, s in enumerate(b.sections, 1))
    assert "<script>" not in page and "<img" not in page and "$x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&#36;x^2&#36;" in page
    assert text('" onmouseover="x') == "&quot; onmouseover=&quot;x"  # attributes cannot be closed either
