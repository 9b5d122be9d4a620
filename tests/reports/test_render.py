"""Templates under papermill and nbconvert: `afterfix brief`, its rotation, its errors, and the review templates."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import nbformat
import pytest

from afterfix.cli import main
from afterfix.reports.render import TEMPLATES, brief, render, rotate, template_path

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
TITLES = ["What broke", "What the agent tried", "What worked", "What was rolled back", "Side effects to watch",
          "Will it happen again?", "Findings", "Open approvals", "Actions by trust level"]


@pytest.fixture(scope="module")
def briefing(demo_briefing):
    """`afterfix brief` over the demo night's window with --notebook (tests/reports/conftest.py)."""
    out, nb, _ = demo_briefing
    return out, nb


def test_brief_writes_one_offline_html_with_no_code_and_the_sections_in_order(briefing):
    out, _ = briefing
    html = out.read_text(encoding="utf-8")
    # no code cells, no prompts: nothing of the template's source shows
    assert "open_briefing" not in html and not re.search(r"class=\"[^\"]*jp-(InputArea|InputPrompt|OutputPrompt)\b", html)
    # nothing fetched: no script or stylesheet from elsewhere (plotly.js is inside the file)
    assert not re.search(r"<(script|link)[^>]+(src|href)=[\"']?(https?:)?//", html)
    assert not re.search(r"<script[^>]+src=[^>]*(mathjax|require)", html, re.I)
    # the night overview, the worst incident's timeline and its tree, and the trust ladder
    assert html.count("Plotly.newPlot") == 4
    assert "Trust ladder" in html and "Trust violations" in html
    positions = [html.index(f"{i}. {title}".replace("?", "?")) for i, title in enumerate(TITLES, 1)]
    assert positions == sorted(positions)
    assert html.index("Morning briefing") < positions[0]


def test_brief_keeps_the_executed_notebook_and_its_handoff(briefing):
    _, nb = briefing
    cells = nbformat.read(str(nb), as_version=4).cells
    assert "parameters" in cells[0].metadata.get("tags", [])
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in cells)
    handoff = [o for c in cells for o in c.get("outputs", []) if o.get("metadata", {}).get("afterfix.handoff")]
    assert len(handoff) == 1 and len(handoff[0]["data"]["text/plain"].splitlines()) == 5


def test_brief_prints_the_handoff_and_the_path(demo_briefing):
    out, _, printed = demo_briefing
    lines = printed.splitlines()
    assert lines[0].startswith("Yes, worry:") and len(lines) == 6
    assert lines[-1] == f"briefing    {out.resolve()}"


def test_a_failing_cell_is_named_and_nothing_is_written(demo_store, tmp_path, capsys):
    out = tmp_path / "b.html"
    broken = ROOT / "tests" / "notebooks" / "broken_briefing.ipynb"
    code = main(["brief", "--store", str(demo_store.root), "-o", str(out), "--template", str(broken)])
    err = capsys.readouterr().err
    assert code != 0 and not out.exists()
    assert "broken_briefing.ipynb: cell 4 ('# 2. What the agent tried') failed" in err
    assert "RuntimeError: the decisions view is missing" in err
    kept = tmp_path / "b.failed.ipynb"
    assert kept.exists() and f"the executed notebook with its traceback is {kept}" in err


def test_keep_rotates_a_folder_and_a_failure_costs_no_old_briefing(demo_store, tmp_path):
    folder = tmp_path / "briefings"
    folder.mkdir()
    for stamp in ("2026-11-25T070000Z", "2026-11-26T070000Z"):
        (folder / f"briefing-{stamp}.html").write_text("old")
    (folder / "notes.txt").write_text("not a briefing")
    done = brief(demo_store, since="1h", until="2026-12-01T00:00", output=folder, keep=2,
                 now=datetime(2026, 11, 27, 7))
    assert done.html.name == "briefing-2026-11-27T070000Z.html"
    assert sorted(p.name for p in folder.iterdir()) == ["briefing-2026-11-26T070000Z.html",
                                                      "briefing-2026-11-27T070000Z.html", "notes.txt"]
    assert "Nothing to worry about" in done.handoff[0]  # an empty window is a briefing too
    assert rotate(folder, 1) == [folder / "briefing-2026-11-26T070000Z.html"]
    with pytest.raises(ValueError, match="give -o a folder"):
        brief(demo_store, output=folder / "x.html", keep=2)


@pytest.mark.parametrize("args, message", [
    (["--keep", "0"], "how many briefings to keep"),
    (["--since", "yesterday"], "neither a duration"),
])
def test_bad_options_are_refused_by_name(args, message, capsys):
    with pytest.raises(SystemExit) as refused:
        main(["brief", *args])
    assert refused.value.code == 2 and message in capsys.readouterr().err


def test_a_missing_store_is_named(tmp_path, capsys):
    assert main(["brief", "--store", str(tmp_path / "nowhere"), "-o", str(tmp_path / "b.html")]) != 0
    assert f"no store at {tmp_path / 'nowhere'}" in capsys.readouterr().err


def _rollback_incident(store) -> str:
    """The bad-rollout incident: the one whose change was a rollback."""
    return store.query("SELECT incident_id FROM actions WHERE verb = 'rollback'")["incident_id"].iloc[0]


@pytest.mark.parametrize("template, params, expect", [
    ("incident_review", {"incident_id": "ROLLBACK"}, ["Incident review · ROLLBACK", "1. What happened",
                                                     "5. Changes", "DB_POOL_SIZE", "Plotly.newPlot"]),
    ("incident_review", {"incident_id": "INC-nope"}, ["No incident", "INC-nope", "It holds 2"]),
    ("decision_tree", {"run_id": "run-nope"}, ["No run", "run-nope", "papermill -p run_id ID"]),
])
def test_review_templates_render_or_say_the_id_is_unknown(demo_store, tmp_path, template, params, expect):
    incident = _rollback_incident(demo_store)
    params = {k: v.replace("ROLLBACK", incident) for k, v in params.items()}
    expect = [e.replace("ROLLBACK", incident) for e in expect]
    out = render(template, {"store": str(demo_store.root), **params}, tmp_path / "page.html").html
    html = out.read_text(encoding="utf-8")
    for text in expect:
        assert text in html


def test_the_decision_tree_template_draws_a_run(demo_store, tmp_path):
    run = demo_store.query("SELECT run_id FROM runs WHERE incident_id = ?", [_rollback_incident(demo_store)])["run_id"].iloc[0]
    html = render("decision_tree", {"store": str(demo_store.root), "run_id": run}, tmp_path / "t.html").html.read_text()
    assert f"Decision tree · {run}" in html and "Plotly.newPlot" in html and "rollback_revision" in html


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_template_has_a_parameters_cell_and_a_kernel(name):
    nb = nbformat.read(str(template_path(name)), as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and nb.cells.index(tagged[0]) == 0
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")  # templates ship clean
    json.dumps(nb)  # plain JSON, nothing papermill cannot read
