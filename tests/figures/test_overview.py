"""figures.overview.night_overview: incidents over time and by kind, actions by trust level."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import fig_samples as samples
from fig_check import check_golden, seen, tags

from afterfix.figures.overview import incident_kind, incident_scenarios, night_overview


@pytest.fixture(scope="module")
def fig():
    return night_overview(samples.incidents_rows(), samples.actions_rows())


def bars(fig, axis):
    return {t.name: t for t in fig.data if t.type == "bar" and t.xaxis == axis}


def test_golden(fig):
    check_golden(fig, "overview-night")


@pytest.mark.parametrize("row,kind", [
    ({"kind": "hpa", "scenario": "noise", "title": "x: a 1 over 2"}, "hpa"),
    ({"scenario": "memory_leak", "title": "shop/cart: memory_mb 408 over 384"}, "memory_leak"),
    ({"scenario": None, "title": "shop/cart: memory_mb 408 over 384"}, "memory_mb"),
    ({"title": "platform/session-cache: latency_p95_ms 4e+03 over 300"}, "latency_p95_ms"),
    ({"title": "checkout p95 latency above SLO and rising fast"}, "checkout p95 latency above…"),
    ({"title": None}, "(untitled)"),
])
def test_incident_kind(row, kind):
    assert incident_kind(pd.Series(row)) == kind


def test_incidents_over_time_by_kind(fig):
    points = [t for t in fig.data if t.type == "scatter" and t.xaxis == "x" and t.hovertext]
    assert sum(len(t.x) for t in points) == 6
    by_incident = {seen(h).split(":")[0]: (y, t.marker.color) for t in points for y, h in zip(t.y, t.hovertext)}
    assert by_incident["INC-03"] == ("memory_leak", "#E69F00")  # medium
    assert by_incident["INC-05"][0] == "memory_mb"  # no scenario: the title's signal
    assert by_incident["INC-04"][1] == "#8b0000"  # critical
    # Most frequent kind on top (the category array runs bottom to top), ties by name: one each here.
    top_down = list(fig.layout.yaxis.categoryarray)[::-1]
    assert top_down == sorted(top_down) and len(top_down) == 6
    twice = night_overview(pd.concat([samples.incidents_rows(), samples.incidents_rows().iloc[[2]]]),
                           samples.actions_rows())
    assert list(twice.layout.yaxis.categoryarray)[-1] == "memory_leak"
    assert list(twice.layout.yaxis2.categoryarray)[-1] == "memory_leak"
    counts = bars(fig, "x2")
    assert sum(sum(t.x) for t in counts.values()) == 6
    assert set(counts) == {"resolved", "mitigated", "escalated", "open"}


def test_actions_by_trust_level(fig):
    levels = bars(fig, "x3")
    axis = ["1 alert & recommend", "2 fix with approval", "3 fix & inform", "4 fix & report"]
    for trace in levels.values():
        assert list(trace.x) == axis
    assert [seen(t) for t in fig.layout.xaxis3.ticktext] == axis
    assert list(levels["applied"].y) == [0, 0, 2, 1]
    assert list(levels["read-only"].y) == [0, 0, 1, 0]
    assert list(levels["awaiting approval"].y) == [0, 1, 0, 0]
    assert list(levels["failed"].y) == [0, 0, 1, 0]
    assert list(levels["recommended"].y) == [1, 0, 0, 0]
    assert "6 changes to production" in fig.layout.title.subtitle.text


def test_empty_night_says_nothing_in_this_window():
    empty = night_overview(samples.incidents_rows().iloc[0:0], samples.actions_rows().iloc[0:0])
    assert [a.text for a in empty.layout.annotations] == ["nothing in this window"]
    no_actions = night_overview(samples.incidents_rows(), samples.actions_rows().iloc[0:0])
    assert "no actions in this window" in [a.text for a in no_actions.layout.annotations]
    no_incidents = night_overview(samples.incidents_rows().iloc[0:0], samples.actions_rows())
    assert [a.text for a in no_incidents.layout.annotations].count("no incidents in this window") == 2


def test_frames_without_the_view_columns_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"needs columns incident_id, start_time \(missing start_time\).*"
                                         r"SELECT \* FROM incidents"):
        night_overview(pd.DataFrame({"incident_id": ["x"]}), samples.actions_rows())


def test_hostile_text_is_escaped_everywhere():
    hostile = night_overview(samples.incidents_rows(hostile=samples.HOSTILE), samples.actions_rows())
    assert tags(hostile) <= {"<b>", "</b>", "<br>"}
    labels = list(hostile.layout.yaxis.categoryarray)
    assert any(label.startswith("&lt;b&gt;bold") for label in labels)


def test_incident_scenarios_reads_the_span_attribute(tmp_path):
    from afterfix.ingest.files import ingest_paths
    from afterfix.store import Store

    store = Store(tmp_path / "store")
    store.create()
    ingest_paths(store, [Path(__file__).parents[2] / "traces" / "examples" / "hpa-night.jsonl"])
    assert incident_scenarios(store).to_dict("records") == [
        {"incident_id": "INC-2026-11-27-001", "scenario": "hpa-night"}]
    store.close()
