"""figures._text: trace text reaches plotly escaped, cut and wrapped; and what every figure shares."""

from __future__ import annotations

import plotly.io as pio
import pytest

import fig_samples as samples
from fig_check import seen

from afterfix.figures import _style
from afterfix.figures._text import cut, esc, hover, short, wrap
from afterfix.figures.tree import decision_tree


@pytest.mark.parametrize("raw,escaped", [
    ("plain", "plain"),
    ("<b>x</b>", "&lt;b&gt;x&lt;/b&gt;"),
    ('<a href="javascript:alert(1)">x</a>', '&lt;a href="javascript:alert(1)"&gt;x&lt;/a&gt;'),
    ("a & b", "a &amp; b"),
    ("&lt; already", "&amp;lt; already"),  # an entity in the trace is shown as typed, not decoded
    ("$x^2$", "&#36;x^2&#36;"),  # no TeX when MathJax is on the page
    ("bell\x07 nul\x00", "bell nul"),
    (None, ""),
    (42, "42"),
])
def test_esc(raw, escaped):
    assert esc(raw) == escaped


@pytest.mark.parametrize("raw,n,expected", [
    ("short", 10, "short"),
    ("exactly10!", 10, "exactly10!"),
    ("eleven chars", 10, "eleven ch…"),
    ("two\nlines   and  tabs\t", 40, "two lines and tabs"),
    ("<b>bold</b>", 6, "&lt;b&gt;bo…"),  # cut on the raw text, then escaped: no half entity
])
def test_short(raw, n, expected):
    assert short(raw, n) == expected
    assert len(seen(short(raw, n))) <= n


def test_wrap_breaks_lines_then_escapes():
    text = "<i>" + " ".join(["word"] * 40)
    out = wrap(text, 30)
    lines = out.split("<br>")
    assert len(lines) > 1 and all(len(seen(line)) <= 30 for line in lines)
    assert lines[0].startswith("&lt;i&gt;") and seen(out) == text
    assert wrap("a" * 5000, 80, limit=100).count("a") == 99
    assert wrap("run-2026-11-27-0247 is an id", 12).split("<br>")[0] == "run-2026-11-27-0247"[:12]


def test_hover_rows():
    out = hover("Head <x>", ("reason", "because <y>"), ("empty", None), None, ("list", ["one", "<two>"]))
    assert out == ("<b>Head &lt;x&gt;</b><br><b>reason:</b> because &lt;y&gt;<br>"
                   "<b>list</b><br>• one<br>• &lt;two&gt;")
    assert cut("x" * 10, 4) == "xxx…"


def test_figures_use_plotly_white_and_one_font_size():
    fig = decision_tree(samples.hpa_tree())
    assert fig.layout.template == pio.templates[_style.TEMPLATE]
    assert fig.layout.font.size == _style.FONT_SIZE >= 11


def test_nothing_says_so():
    fig = _style.nothing("Title <x>")
    assert [a.text for a in fig.layout.annotations] == ["nothing in this window"]
    assert fig.layout.xaxis.visible is False and fig.layout.yaxis.visible is False
