"""The rendered briefing in a real browser (Debian's Chromium through Playwright): every figure draws
an SVG, nothing is fetched, and trace text carrying script payloads shows as text and never runs."""

from __future__ import annotations

import os

import pytest

from afterfix.reports.render import brief
from afterfix.sdk import Option, Target

from tests.nights import Night

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

# Each payload, if it ever ran, would set window.__xss (and an alert would open a dialog).
PAYLOADS = {
    "script": "<script>window.__xss='script';alert(1)</script>",
    "img": "<img src=x onerror=\"window.__xss='img'\">",
    "svg": "<svg onload=\"window.__xss='svg'\"></svg>",
    "link": "javascript:window.__xss='link'",
}
HOSTILE = " ".join(PAYLOADS.values())


def _hostile_night(tmp_path):
    """One incident whose every recorded text carries the payloads: the agent's name, the incident's
    title, a tool's name (so its span name), its result and its error (status message), the options'
    reasons and the decision's question."""
    night = Night(tmp_path).at("2026-11-26T23:00")
    rec = night.rec(HOSTILE)
    with rec.run(incident_id="INC-X") as run:
        with rec.incident("INC-X", f"shop/api: {HOSTILE}", service="shop/api") as inc:
            rec.detection("latency_p95_ms", 900, 300, HOSTILE)
            with rec.tool_call(f"kubectl_get {HOSTILE}", {"namespace": HOSTILE}) as call:
                call.error(RuntimeError(HOSTILE), error_type="Timeout")
            with rec.tool_call("prometheus_query", {"query": "up"}) as ok:
                ok.result({"text": HOSTILE})
            decision = rec.decision(f"what now? {HOSTILE}", [
                Option("scale", f"scale {HOSTILE}", score=0.8, reason=HOSTILE),
                Option("no_action", "wait", score=0.1, reason=f"rejected: {HOSTILE}")], "scale",
                reason=HOSTILE, sources=[call.call_id])
            with rec.action("scale", Target("uid-api", "Deployment", "apps/v1", "shop", "api"),
                            decision_id=decision) as act:
                act.before({"spec.replicas": HOSTILE}, "10")
                act.after({"spec.replicas": 4}, "11")
                act.status("applied")
            rec.verification(act.action_id, "failure", "latency_p95_ms", 900, 880)
            inc.set_status("escalated")
    del run
    return night.store()


def _open(path):
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package")
    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    seen = {"requests": [], "dialogs": []}
    page.on("request", lambda r: seen["requests"].append(r.url)
            if not r.url.startswith(("file:", "data:", "blob:", "about:")) else None)
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    page.goto(f"file://{path}")
    page.wait_for_function("document.querySelectorAll('.plotly-graph-div').length > 0 && "
                           "[...document.querySelectorAll('.plotly-graph-div')].every(d => d.querySelector('svg.main-svg'))",
                           timeout=30_000)
    # hover every point once, so hover labels (where trace text also goes) are drawn too
    page.evaluate("""() => { for (const el of document.querySelectorAll('.plotly-graph-div .point, .plotly-graph-div path.point'))
                                 el.dispatchEvent(new MouseEvent('mouseover', {bubbles: true})); }""")
    page.wait_for_timeout(300)
    return pw, browser, page, seen


def _check(path, *, figures: int):
    pw, browser, page, seen = _open(path)
    try:
        plots = page.locator(".plotly-graph-div")
        assert plots.count() == figures
        for i in range(figures):
            assert plots.nth(i).locator("svg.main-svg").count() >= 1, f"figure {i + 1} drew no SVG"
        assert page.evaluate("window.__xss") is None and seen["dialogs"] == []
        assert seen["requests"] == [], f"the briefing fetched {seen['requests'][:3]}"
        return page.inner_text("body"), page.evaluate("document.querySelectorAll('a[href^=\"javascript\"]').length")
    finally:
        browser.close()
        pw.stop()


def test_the_demo_briefing_draws_every_figure_offline(demo_briefing):
    html, _, _ = demo_briefing  # `afterfix brief` over the demo night's window (tests/reports/conftest.py)
    text, _ = _check(html, figures=4)
    assert "Morning briefing" in text and "Yes, worry" in text


def test_hostile_trace_text_shows_as_text_and_never_runs(tmp_path):
    store = _hostile_night(tmp_path)
    html = brief(store, since="2026-11-26T22:00", until="2026-11-27T07:00", output=tmp_path / "b.html").html
    text, js_links = _check(html, figures=4)
    assert js_links == 0
    for payload in PAYLOADS.values():
        assert payload in text, f"{payload!r} does not show as text"
    raw = html.read_text()
    for payload in (p for p in PAYLOADS.values() if "<" in p):
        assert payload not in raw  # markup payloads are in the file only in escaped form
