"""The figures as a browser draws them: headless Chromium renders each one from a self-contained HTML file.

What the JSON tests cannot see: that hostile trace text stays text in the SVG plotly.js builds (no
<a>, no bold, no TeX), that the 60-decision tree's labels neither overlap nor run off the figure at
the fonts a real browser uses, and that hovering a rejected option shows its reason. Needs the
Debian `chromium` package and the `playwright` package (no browser download).
"""

from __future__ import annotations

import shutil

import pytest

import fig_samples as samples

from afterfix.figures.overview import night_overview
from afterfix.figures.timeline import incident_timeline
from afterfix.figures.tree import decision_tree

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

# Every text element's content and box, and the links in the figure, read from the rendered SVG.
READ = """() => {
  const texts = [...document.querySelectorAll('.main-svg text')].map(t => {
    const r = t.getBoundingClientRect();
    return {text: t.textContent, cls: t.getAttribute('class') || '', parent: t.parentNode.getAttribute('class') || '',
            size: parseFloat(getComputedStyle(t).fontSize), weight: getComputedStyle(t).fontWeight,
            top: r.top, bottom: r.bottom, left: r.left, right: r.right};
  });
  const links = document.querySelectorAll('.main-svg a, .main-svg [href], .main-svg [*|href]').length;
  const bold = [...document.querySelectorAll('.main-svg tspan')].filter(
      t => (t.getAttribute('style') || '').includes('bold')).map(t => t.textContent);
  const tex = document.querySelectorAll('.main-svg [class*="-math"]').length;
  return {texts, links, bold, tex, width: document.querySelector('.main-svg').getBoundingClientRect().width};
}"""


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "headless Chromium is missing: `apt-get install chromium` (make test does it)"
    folder = tmp_path_factory.mktemp("render")
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1200, "height": 900})
        pg.on("request", lambda r: requests.append(r.url))
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))

        def show(fig, name):
            path = folder / f"{name}.html"
            fig.write_html(str(path), include_plotlyjs=True, full_html=True)
            requests.clear()
            pg.goto(path.as_uri())
            pg.wait_for_selector(".main-svg")
            assert not errors, errors
            assert all(u.startswith("file://") for u in requests), requests  # offline: nothing fetched
            return pg.evaluate(READ)

        pg.show = show
        yield pg
        browser.close()


def hostile_figures():
    return {
        "tree": decision_tree(samples.hpa_tree(hostile=samples.HOSTILE)),
        "timeline": incident_timeline(samples.hpa_timeline(hostile=samples.HOSTILE), samples.hpa_metrics(),
                                      signal=samples.HOSTILE, trees=[samples.hpa_tree(hostile=samples.HOSTILE)]),
        "overview": night_overview(samples.incidents_rows(hostile=samples.HOSTILE), samples.actions_rows()),
    }


@pytest.mark.parametrize("name", ["tree", "timeline", "overview"])
def test_hostile_text_stays_text(page, name):
    seen = page.show(hostile_figures()[name], f"hostile-{name}")
    assert seen["links"] == 0 and seen["tex"] == 0
    shown = " ".join(t["text"] for t in seen["texts"])
    # Labels are cut to fit (the full text is in the hover), so the timeline's lane and the
    # overview's kind show its start; the tree's incident row has room for all of it.
    assert '<b>bold</b> & <a href="java' in shown
    if name == "tree":
        assert '<b>bold</b> & <a href="javascript:alert(1)">click</a> <img src=x onerror=alert(2)> $x^2$' in shown
    assert "bold" not in seen["bold"] and "click" not in seen["bold"]  # the trace's <b> made nothing bold


def test_sixty_decisions_render_one_readable_row_each(page):
    tree = samples.big_tree(60)
    seen = page.show(decision_tree(tree), "tree-60")
    labels = [t for t in seen["texts"] if "textpoint" in t["parent"]]
    assert len(labels) == len(tree.nodes())
    assert min(t["size"] for t in labels) >= 11
    labels.sort(key=lambda t: t["top"])
    for above, below in zip(labels, labels[1:]):
        assert above["bottom"] <= below["top"] + 0.5, (above["text"], below["text"])
    assert max(t["right"] for t in labels) <= seen["width"]  # nothing runs off the figure


def test_long_labels_fit_the_figure(page):
    tree = samples.hpa_tree()
    for option in tree.nodes("option"):
        option.details["reason"] = "Wide words everywhere " * 30
    seen = page.show(decision_tree(tree), "tree-wide")
    labels = [t for t in seen["texts"] if "textpoint" in t["parent"]]
    cut = [t for t in labels if t["text"].endswith("…")]
    assert len(cut) == 4
    assert max(t["right"] for t in cut) <= seen["width"] - 8
    assert min(t["right"] for t in cut) >= seen["width"] * 0.75  # and the room is used


def test_hovering_a_rejected_option_shows_its_reason(page):
    tree = samples.hpa_tree()
    fig = decision_tree(tree)
    page.show(fig, "tree-hover")
    curve = [i for i, t in enumerate(fig.data) if t.name == "option (rejected)"][0]
    page.evaluate(f"() => {{ const gd = document.querySelector('.plotly-graph-div');"
                  f" Plotly.Fx.hover(gd, [{{curveNumber: {curve}, pointNumber: 0}}]); }}")
    page.wait_for_selector(".hoverlayer .hovertext")
    text = page.evaluate("() => document.querySelector('.hoverlayer .hovertext').textContent")
    # Dark on white: plotly's default hover font colour on a white label is a pale grey.
    fill = page.evaluate("() => getComputedStyle(document.querySelector('.hoverlayer .hovertext text')).fill")
    assert fill == "rgb(34, 34, 34)"
    reason = tree.nodes("option")[1].details["reason"]
    # Wrapped lines join without their spaces in textContent: compare without spaces.
    assert reason.replace(" ", "") in text.replace(" ", "")
    assert "memory working set flat at 412-416 MiB" in text
