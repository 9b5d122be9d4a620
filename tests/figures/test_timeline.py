"""figures.timeline.incident_timeline: lanes per run, bars per step, outcomes, the metric underneath."""

from __future__ import annotations

import pandas as pd
import pytest

import fig_samples as samples
from fig_check import check_golden, seen, tags

from afterfix.analysis.model import Timeline
from afterfix.figures.timeline import incident_timeline


@pytest.fixture(scope="module")
def full():
    return incident_timeline(samples.hpa_timeline(), samples.hpa_metrics(), trees=[samples.hpa_tree()])


@pytest.fixture(scope="module")
def bare():
    return incident_timeline(samples.hpa_timeline())


def traces(fig, kind):
    return [t for t in fig.data if t.type == kind]


def by_name(fig, name):
    (trace,) = [t for t in fig.data if t.name == name]
    return trace


def test_golden(full, bare):
    check_golden(full, "timeline-hpa")
    check_golden(bare, "timeline-hpa-no-metrics")


def test_one_lane_per_run_and_a_row_per_depth(full):
    ticks = [seen(t) for t in full.layout.yaxis.ticktext]
    assert ticks == ["night-shift-agent run-0247", "capacity-agent run-cap-1"]
    timeline = samples.hpa_timeline()
    rows = {}
    for bar in traces(full, "bar"):
        for y, hover in zip(bar.y, bar.hovertext):
            span = seen(hover).split("span: ")[1].split()[0]
            rows[span] = y
    assert len(rows) == len(timeline.steps)
    lane_rows = {}
    for step in timeline.steps:
        lane_rows.setdefault(step.run_id, set()).add(rows[step.span_id])
        assert rows[step.span_id] - min(rows[s.span_id] for s in timeline.steps if s.run_id == step.run_id) == step.depth
    assert not lane_rows["run-0247"] & lane_rows["run-cap-1"]  # lanes never share a row


def test_bars_are_coloured_by_kind(full):
    bars = {t.name: t for t in traces(full, "bar")}
    assert set(bars) == {"run", "incident", "detection", "decision", "action", "verification", "tool call",
                         "model call"}
    assert len({t.marker.color for t in bars.values()}) == len(bars)
    # Spans of a few ms still get a visible bar; the hover keeps the real duration.
    tool = bars["tool call"]
    assert min(tool.x) >= 373_000 * 0.004 and "duration: 200 ms" in seen(tool.hovertext[0])


def test_errors_are_marked(full):
    failed = by_name(full, "failed")
    assert len(failed.x) == 2 and failed.marker.symbol == "x"
    assert any("Forbidden: events is forbidden" in seen(h) for h in failed.hovertext)
    tool = [t for t in traces(full, "bar") if t.name == "tool call"][0]
    outline = {seen(h).split("span: ")[1].split()[0]: (c, w) for h, c, w in
               zip(tool.hovertext, tool.marker.line.color, tool.marker.line.width)}
    assert outline["c000000000000005"] == outline["c000000000000091"] == ("#c0392b", 2)
    assert outline["c000000000000001"][1] == 0.5


def test_actions_and_verifications_show_their_outcome(full, bare):
    action = by_name(full, "action (outcome)")
    assert action.marker.symbol == "diamond"
    text = seen(action.hovertext[0])
    for part in ("outcome: applied", "spec.maxReplicas 2 → 6", "3 fix & inform", "verified: success"):
        assert part in text, part
    verification = by_name(full, "verification (outcome)")
    assert verification.marker.color == ("#009E73",)
    assert "outcome: success" in seen(verification.hovertext[0]) and "2.41 → 0.46" in seen(verification.hovertext[0])
    # Without the trees the marker is there and says where the outcome is to be had.
    assert "pass trees= to show it" in seen(by_name(bare, "verification (outcome)").hovertext[0])
    # Each change to production is a dotted line across the whole figure.
    lines = [s for s in full.layout.shapes if s.type == "line" and s.yref == "paper"]
    assert len(lines) == 1 and lines[0].x0 == samples.at(31.55)


def test_metric_panel_shares_the_time_axis(full):
    (line,) = [t for t in traces(full, "scatter") if t.yaxis == "y2"]
    assert line.name == "latency_p95" and len(line.x) == len(samples.hpa_metrics())
    assert full.layout.xaxis.matches == "x2" and full.layout.xaxis.showticklabels is False
    assert full.layout.yaxis2.title.text == "latency_p95"
    assert any("threshold 0.8" in (a.text or "") for a in full.layout.annotations)
    assert full.layout.xaxis.domain == full.layout.xaxis2.domain


def test_no_metrics_is_said_and_draws_no_panel(bare):
    assert "xaxis2" not in bare.layout.to_plotly_json()
    assert [a.text for a in bare.layout.annotations] == ["no metric history"]
    empty = incident_timeline(samples.hpa_timeline(), samples.hpa_metrics().iloc[0:0], signal="latency_p95")
    assert [a.text for a in empty.layout.annotations] == ["no metric history for latency_p95"]


def test_series_become_one_line_each():
    m = samples.hpa_metrics()
    two = pd.concat([m.assign(series_id="s1", workload="checkout"), m.assign(series_id="s2", workload="cart",
                                                                              value=m["value"] / 2)])
    fig = incident_timeline(samples.hpa_timeline(), two, signal="latency_p95")
    assert sorted(t.name for t in fig.data if t.yaxis == "y2") == ["latency_p95 · cart", "latency_p95 · checkout"]


def test_metrics_without_time_and_value_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"needs columns time and value \(missing value; it has time, v\)"):
        incident_timeline(samples.hpa_timeline(), pd.DataFrame({"time": [samples.T0], "v": [1.0]}))


def test_an_empty_timeline_says_nothing_in_this_window():
    fig = incident_timeline(Timeline(incident_id="INC-9", run_ids=[], steps=[], start=None, end=None),
                            samples.hpa_metrics())
    assert [a.text for a in fig.layout.annotations] == ["nothing in this window"]
    assert len(fig.data) == 0


def test_hostile_text_is_escaped_everywhere():
    fig = incident_timeline(samples.hpa_timeline(hostile=samples.HOSTILE), samples.hpa_metrics(),
                            signal=samples.HOSTILE, trees=[samples.hpa_tree(hostile=samples.HOSTILE)])
    assert tags(fig) <= {"<b>", "</b>", "<br>"}
    lane = fig.layout.yaxis.ticktext[1]
    assert lane.startswith("&lt;b&gt;bold&lt;/b&gt; &amp; &lt;a href") and "$" not in lane
    assert seen(lane).startswith("<b>bold</b> & <a href")
