"""`%afterfix tree|timeline|findings` in a real IPython shell that raises on cell errors: the same
figures and findings as the library and the CLI, mistakes as one-line UsageErrors, text escaped."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest
from IPython.core.error import UsageError
from nights import Night
from traitlets.config import Config

from kernels import TestingShell

HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def shell(tmp_path_factory):
    folder = tmp_path_factory.mktemp("night")
    night = Night(folder)
    ids = night.incident("INC-1", "shop/search", "latency_p95_ms", 1600, 300, verified="failure", agent=HOSTILE,
                         change=("scale", {"spec.replicas": 2}, {"spec.replicas": 3}))
    night.store().close()
    c = Config()
    c.HistoryManager.hist_file = ":memory:"
    c.Afterfix.store = str(folder / "store")
    c.Afterfix.inbox = str(folder / "inbox")
    c.Afterfix.listen = False
    sh = TestingShell(config=c)
    sh.run_cell("%load_ext afterfix")
    sh.ids = ids
    yield sh
    sh.run_cell("%unload_ext afterfix")


def test_findings_magic_shows_the_findings_escaped(shell):
    report = shell.run_line_magic("afterfix", "findings")
    assert [f.kind for f in report.findings] == ["unverified_action"]
    html = report._repr_html_()
    assert "verification failure" in html and "<img" not in html
    assert list(report.frame()["kind"]) == ["unverified_action"]
    assert shell.run_line_magic("afterfix", "findings --kind masked_issue --since 2026-11-01").findings == []


def test_findings_view_through_sql(shell):
    df = shell.run_cell_magic("sql", "", "SELECT kind FROM findings")
    assert list(df["kind"]) == ["unverified_action"]


def test_tree_and_timeline_magics_return_the_figures(shell):
    tree = shell.run_line_magic("afterfix", f"tree {shell.ids['run_id']}")
    assert isinstance(tree, go.Figure) and tree.data
    timeline = shell.run_line_magic("afterfix", "timeline INC-1")
    assert isinstance(timeline, go.Figure) and timeline.data
    by_run = shell.run_line_magic("afterfix", f"timeline {shell.ids['run_id']}")
    assert isinstance(by_run, go.Figure)


@pytest.mark.parametrize("line, words", [
    ("tree", "needs one id"),
    ("tree run-nope", "run-nope"),
    ("timeline INC-nope", "INC-nope"),
    ("findings --kind nope", "choose from"),
    ("findings --since yesterday", "neither a duration"),
    ("findings --colour red", "unknown option"),
    ("findings --incident", "needs a value"),
])
def test_mistakes_are_one_line_usage_errors(shell, line, words):
    with pytest.raises(UsageError, match=words):
        shell.run_line_magic("afterfix", line)
