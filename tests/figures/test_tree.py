"""figures.tree.decision_tree: the outline of one run, its chosen path, its rejected options."""

from __future__ import annotations

import pytest

import fig_samples as samples
from fig_check import check_golden, seen, tags

from afterfix.figures import tree as tree_fig
from afterfix.figures.tree import decision_tree


def points(fig):
    """(y, label, hover, trace) of every node marker, in row order."""
    out = []
    for trace in fig.data:
        if trace.mode != "markers+text":
            continue
        for y, text, hover in zip(trace.y, trace.text, trace.hovertext):
            out.append((y, text, hover, trace))
    return sorted(out, key=lambda p: p[0])


def row_of(fig, needle: str):
    found = [p for p in points(fig) if needle in seen(p[1])]
    assert len(found) == 1, (needle, [seen(p[1]) for p in found])
    return found[0]


@pytest.fixture(scope="module")
def hpa():
    return samples.hpa_tree()


@pytest.fixture(scope="module")
def hpa_fig(hpa):
    return decision_tree(hpa)


def test_golden(hpa_fig):
    check_golden(hpa_fig, "tree-hpa")


def test_selected_path_is_highlighted(hpa, hpa_fig):
    edges = {t.name: t for t in hpa_fig.data if t.mode == "lines"}
    path, rest = edges["chosen path"], edges["tree"]
    assert path.line.width > rest.line.width and path.line.color != rest.line.color
    # The path's elbows end on exactly the rows of on-path nodes below the root.
    on_path_rows = {p[0] for p in points(hpa_fig) if p[1].startswith("<b>")}
    ends = {y for y in path.y[2::4]}
    assert ends == on_path_rows - {0}
    expected = ["run run-0247", "incident INC-1", "detected latency_p95", "decide: checkout",
                "selected: Raise the checkout HPA", "patch HorizontalPodAutoscaler shop/checkout",
                "verify latency_p95: success"]
    for needle in expected:
        y, label, _, trace = row_of(hpa_fig, needle)
        assert label.startswith("<b>") and y in on_path_rows, needle
        assert max(trace.marker.size) == 13
    for needle in ("rejected: Restart", "tool get_events", "model call reasoner-1"):
        y, label, _, _ = row_of(hpa_fig, needle)
        assert not label.startswith("<b>") and y not in ends, needle
    assert len(on_path_rows) == len(expected) == sum(1 for n in hpa.root.walk() if n.on_path)


def test_every_rejected_reason_is_in_its_label_and_hover(hpa, hpa_fig):
    rejected = [o for o in hpa.nodes("option") if o.details["verdict"] == "rejected"]
    assert len(rejected) == 3
    for option in rejected:
        reason = option.details["reason"]
        _, label, hover, trace = row_of(hpa_fig, option.details["description"])
        assert reason in seen(hover), reason
        assert seen(label).startswith("✗ rejected: ") and reason[:40] in seen(label)
        assert trace.name == "option (rejected)"
        for evidence in option.details["evidence"]:
            assert evidence in seen(hover)


def test_actions_show_their_diff_and_verification(hpa_fig):
    _, label, hover, _ = row_of(hpa_fig, "patch HorizontalPodAutoscaler")
    assert "spec.maxReplicas 2 → 6" in seen(label) and "✔ verified" in seen(label)
    for text in ("184467 → 184532", "3 fix & inform", "6f1c2a9e-3b7d-4e58-9a0c-d2e4f6a8b1c3",
                 "server-side dry-run first: yes", "spec.maxReplicas 2 → 6"):
        assert text in seen(hover), text


def test_long_labels_are_cut_with_an_ellipsis_and_hover_keeps_all():
    tree = samples.hpa_tree()
    option = tree.nodes("option")[1]
    option.details["reason"] = "word " * 200 + "END"
    fig = decision_tree(tree)
    _, label, hover, _ = row_of(fig, "rejected: Restart")
    assert label.endswith("…") and "END" not in label
    assert seen(hover).count("word") == 200 and "END" in seen(hover)
    # Wrapped: no hover line longer than the wrap width (plus the "reason: " heading).
    assert max(len(seen(line)) for line in hover.split("<br>")) <= tree_fig.HOVER_WIDTH + len("reason: ")


def test_failed_spans_are_red_and_keep_their_own_row(hpa_fig):
    y, label, hover, trace = row_of(hpa_fig, "tool get_events")
    assert "Forbidden: events is forbidden" in seen(label)
    colors = trace.textfont.color
    assert colors[list(trace.y).index(y)] == "#c0392b"


def test_runs_of_tool_calls_off_the_path_become_one_row(hpa_fig):
    _, label, hover, trace = row_of(hpa_fig, "4 tool calls")
    assert seen(label) == "4 tool calls: prometheus_query ×2, get_hpa, get_pods"
    assert trace.name == "tool/model calls (grouped)"
    assert seen(hover).count("• ") == 4 and "histogram_quantile" in seen(hover)


def test_sixty_decisions_keep_the_font_size_and_a_row_each():
    tree = samples.big_tree(60)
    fig = decision_tree(tree)
    pts = points(fig)
    ys = [p[0] for p in pts]
    # One row per node (two tool calls in a row are not grouped), and no two share a row.
    assert len(ys) == len(set(ys)) == len(tree.nodes())
    assert ys == list(range(len(ys)))
    assert sum(1 for p in pts if seen(p[1]).startswith("decide: ")) == 60
    for trace in fig.data:
        if trace.mode == "markers+text":
            assert trace.textfont.size >= 11
    # Rows keep their pixel pitch: the figure grows instead of squeezing them.
    plot_px = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b
    assert plot_px / len(ys) == tree_fig.ROW_PX >= 1.5 * fig.layout.font.size
    assert tuple(fig.layout.yaxis.range) == (len(ys) - 0.5, -0.5)


def test_max_nodes_cuts_the_tree_and_says_so():
    tree = samples.big_tree(60)
    total = len(tree.nodes())
    fig = decision_tree(tree, max_nodes=50)
    pts = points(fig)
    assert len(pts) == 50
    last = seen(pts[-1][1])
    assert f"{total - 49} more rows not drawn (of {total})" in last and f"max_nodes={total}" in last
    with pytest.raises(ValueError, match="max_nodes=1"):
        decision_tree(tree, max_nodes=1)


def test_hostile_text_is_escaped_everywhere():
    fig = decision_tree(samples.hpa_tree(hostile=samples.HOSTILE))
    assert tags(fig) <= {"<b>", "</b>", "<br>"}
    texts = [t for p in points(fig) for t in p[1:3]]
    assert any("&lt;a href=\"javascript:alert(1)\"&gt;" in t for t in texts)
    assert not any("$" in t for t in texts)
    # What a person reads is the hostile text itself, character for character (on one line).
    _, label, hover, _ = row_of(fig, "incident INC-1")
    assert "<b>bold</b> & <a href=\"javascript:alert(1)\">click</a>" in seen(label)


def test_a_run_with_nothing_under_it_is_one_row():
    tree = samples.hpa_tree()
    tree.root.children = []
    fig = decision_tree(tree)
    assert [seen(p[1]) for p in points(fig)] == ["run run-0247 · night-shift-agent · 12 spans · ok"]
