"""`afterfix tree` and `afterfix timeline` through `afterfix.cli.main`, on traces recorded through the
OpenTelemetry SDK (tests/analysis/recorded.py, tests/nights.py) and the example traces: text, json
and self-contained HTML, hostile trace text escaped, unknown ids refused in one line."""

from __future__ import annotations

import json
import re

import pytest

from afterfix.analysis.timeline import incident_timeline, run_timeline
from afterfix.analysis.tree import run_tree
from afterfix.cli import main

from analysis.recorded import HOSTILE, examples_store, recorded_night
from nights import Night, minutes

HPA_RUN, HPA_INCIDENT = "run-2026-11-27-0247", "INC-2026-11-27-001"
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    store = examples_store(tmp_path_factory.mktemp("examples"))
    yield str(store.root)
    store.close()


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    store, _ = recorded_night(tmp_path_factory.mktemp("night"))
    yield str(store.root)
    store.close()


@pytest.fixture(scope="module")
def with_metrics(tmp_path_factory):
    """One incident on shop/cart whose memory_mb history the store holds (and a neighbour's)."""
    night = Night(tmp_path_factory.mktemp("metrics"))
    ids = night.at("2026-11-27T01:00").incident("INC-M1", "shop/cart", "memory_mb", 400, 384,
                                              change=("restart", {"metadata.generation": 1}, {"metadata.generation": 2}),
                                              verified="success")
    night.metric("shop/cart", "memory_mb", minutes("2026-11-27T00:30", [300.0 + i for i in range(60)]))
    night.metric("shop/other", "memory_mb", minutes("2026-11-27T00:30", [5.0] * 60))
    store = night.store()
    yield str(store.root), ids
    store.close()


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def plotly_figure(html: str) -> dict:
    """The data and layout a written HTML file hands to Plotly.newPlot."""
    decoder = json.JSONDecoder()
    at = html.index(",", html.index("Plotly.newPlot(")) + 1  # past the div id
    while html[at].isspace():
        at += 1
    data, at = decoder.raw_decode(html, at)
    while html[at] in ", \n\t":
        at += 1
    layout, _ = decoder.raw_decode(html, at)
    return {"data": data, "layout": layout}


def values(array) -> list:
    """A figure's array as plotly's JSON writes it: a list, or a typed array (base64 `bdata`)."""
    if isinstance(array, dict) and "bdata" in array:
        import base64

        import numpy as np

        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def strings(data) -> list[str]:
    """Every string in a JSON value."""
    if isinstance(data, str):
        return [data]
    items = data.values() if isinstance(data, dict) else data if isinstance(data, list) else []
    return [s for item in items for s in strings(item)]


def texts(figure: dict) -> str:
    """Every text, hover text and annotation of a figure, as one string."""
    parts = []
    for trace in figure["data"]:
        for key in ("text", "hovertext", "name"):
            value = trace.get(key)
            parts += value if isinstance(value, list) else [value] if value else []
    parts += [a.get("text", "") for a in figure["layout"].get("annotations", [])]
    return "\n".join(str(p) for p in parts)


# -- afterfix tree ---------------------------------------------------------------------------------


def test_tree_text_goes_detection_decision_options_action_verification(capsys, examples):
    code, out, err = run(capsys, "tree", HPA_RUN, "--store", examples)
    assert code == 0, err
    lines = out.splitlines()

    def line(text):
        (i,) = [i for i, l in enumerate(lines) if text in l]
        return i, len(lines[i]) - len(lines[i].lstrip("* "))

    detection, decision = line("detection latency_p95 2.41 (threshold 0.8)"), line("decision dec-2026-11-27-0247-1")
    chosen = line("option raise-hpa-max (score 0.91): Raise the checkout HPA's maxReplicas from 4 to 10 — ✓ selected")
    rejected = line("option restart-pods (score 0.08)")
    action, verification = line("action patch HorizontalPodAutoscaler shop/checkout [applied, trust 3, dry-run ok]"), \
        line("verification latency_p95: success (2.41 → 0.46)")
    assert detection[0] < decision[0] < chosen[0] < action[0] < verification[0] < rejected[0]
    assert decision[1] < chosen[1] < action[1] < verification[1] and rejected[1] == chosen[1]
    assert "✗ rejected" in lines[rejected[0]]
    assert "why not: no memory growth or stuck pods: a restart would drop capacity during peak" in lines[rejected[0] + 1]
    assert any("evidence: CPU 96% against a 70% target" in l for l in lines[chosen[0]:action[0]])
    below_action = lines[action[0] + 1:verification[0]]
    assert [l.strip() for l in below_action] == [
        "target autoscaling/v2 HorizontalPodAutoscaler shop/checkout (uid 6f1c2a9e-3b7d-4e58-9a0c-d2e4f6a8b1c3)",
        "resourceVersion 184467 → 184532", "spec.maxReplicas: 4 → 10"]
    on_path = [l for l in lines if l.startswith("*")]
    assert [l for l in on_path if "option" in l] == [lines[chosen[0]]]  # the rejected ones are off the path


@pytest.mark.parametrize(("run_id", "expected", "absent"), [
    ("session-2026-11-27-0330", ["run session-2026-11-27-0330 · agent cart-investigator", "tool get_pod_events",
                                 "llm ChatCompletion (1190 in / 214 out tokens)"], ["decision", "*"]),
    ("conv-2026-11-27-0415", ["agent disk-watcher", "llm chat gpt-4o-mini", "tool df", "error: TimeoutError"],
     ["decision", "*"]),
])
def test_tree_of_an_agent_without_afterfix_attributes(capsys, examples, run_id, expected, absent):
    code, out, err = run(capsys, "tree", run_id, "--store", examples)
    assert code == 0, err
    for text in expected:
        assert text in out
    for text in absent:
        assert not any(l.startswith(text) or f" {text} " in l for l in out.splitlines())


def test_tree_json_is_the_tree_data(capsys, examples):
    code, out, err = run(capsys, "tree", HPA_RUN, "--store", examples, "--format", "json")
    assert code == 0, err
    from afterfix.store import Store

    expected = json.loads(json.dumps(run_tree(Store(examples), HPA_RUN).to_dict(), default=str))
    assert json.loads(out) == expected
    assert expected["root"]["kind"] == "run" and expected["run_id"] == HPA_RUN


def test_tree_html_is_the_plotly_figure_and_self_contained(capsys, examples, tmp_path):
    path = tmp_path / "tree.html"
    code, out, err = run(capsys, "tree", HPA_RUN, "--store", examples, "-o", str(path))
    assert code == 0, err
    assert out.strip() == str(path)
    html = path.read_text()
    assert not re.search(r"<script[^>]*\bsrc=", html)  # plotly.js is inside, nothing is fetched
    assert re.search(r"plotly\.js v\d", html)
    figure = plotly_figure(html)
    shown = texts(figure)
    for text in ("raise-hpa-max", "no memory growth or stuck pods", "spec.maxReplicas", "success"):
        assert text in shown, text


# -- hostile text and unknown ids ------------------------------------------------------------------


def test_hostile_text_reaches_the_terminal_escaped(capsys, night, tmp_path):
    code, out, err = run(capsys, "tree", "run-t2", "--store", night)
    assert code == 0, err
    assert not CONTROL.search(out.replace("\n", "")), "a control character reached the terminal"
    assert "\\x1b[31mred\\x1b[0m" in out and "\\r\\nrm -rf /" in out
    assert out.count("\n") == len(out.splitlines())  # the \r\n in the text broke no line
    code, out, _ = run(capsys, "tree", "run-t2", "--store", night, "--format", "json")
    assert code == 0 and not CONTROL.search(out.rstrip("\n")) and "\u202e" not in out
    assert HOSTILE in strings(json.loads(out))  # escaped, not lost
    code, out, _ = run(capsys, "timeline", "INC-T1", "--store", night)
    assert code == 0 and not CONTROL.search(out.replace("\n", "")) and "\\x1b[31m" in out
    path = tmp_path / "hostile.html"
    assert run(capsys, "tree", "run-t2", "--store", night, "-o", str(path))[0] == 0
    html = path.read_text()
    assert "<script>alert('x')</script>" not in html and "\x1b" not in html


@pytest.mark.parametrize(("command", "ident", "lists"), [
    ("tree", "run-nope", ['afterfix query "SELECT run_id FROM runs"']),
    ("timeline", "INC-nope", ['afterfix query "SELECT incident_id FROM incidents"',
                              'afterfix query "SELECT run_id FROM runs"']),
    ("tree", "x'); DROP TABLE spans; --", ['afterfix query "SELECT run_id FROM runs"']),
    ("timeline", "\x1b[2Jx' OR '1'='1", ['SELECT incident_id FROM incidents']),
])
def test_unknown_id_is_one_line_naming_it_and_how_to_list_ids(capsys, examples, command, ident, lists):
    code, out, err = run(capsys, command, ident, "--store", examples)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"afterfix {command}: error: no ")
    assert "\x1b" not in err and repr(ident)[1:-1].replace("\\x1b", "") in err.replace("\\x1b", "")
    for text in lists:
        assert text in err
    code, out, _ = run(capsys, "query", "--store", examples, "--format", "json", "SELECT count(*) AS n FROM spans")
    assert json.loads(out) == [{"n": 18}]  # the id stayed an id


# -- afterfix timeline -----------------------------------------------------------------------------


def test_timeline_text_lists_every_run_and_step(capsys, night):
    code, out, err = run(capsys, "timeline", "INC-T1", "--store", night)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("incident INC-T1 · 2 runs · 18 steps · 2026-11-27 02:47:00 → ")
    assert lines.index("run run-t1 (agent-a)") < lines.index("run run-t2 (agent-b)")
    failed = next(i for i, l in enumerate(lines) if "execute_tool get_logs" in l)
    assert " ERROR " in lines[failed] and lines[failed + 1].strip() == "error: connection refused"
    assert any(re.search(r"\+12\.5 s +500 ms +verification +verify latency_p95$", l) for l in lines)


def test_timeline_takes_a_run_id(capsys, night):
    code, out, err = run(capsys, "timeline", "oi-session-1", "--store", night)
    assert code == 0, err
    assert out.startswith("run oi-session-1 · 1 run · 4 steps")
    assert "\nrun oi-session-1 (cart-agent)\n" in out and "get_cart" in out and "ChatCompletion" in out


@pytest.mark.parametrize(("ident", "load"), [("INC-T1", incident_timeline), ("run-t2", run_timeline)])
def test_timeline_json_is_the_timeline_data(capsys, night, ident, load):
    from afterfix.store import Store

    code, out, err = run(capsys, "timeline", ident, "--store", night, "--format", "json")
    assert code == 0, err
    assert json.loads(out) == json.loads(json.dumps(load(Store(night), ident).to_dict(), default=str))


def test_timeline_html_has_the_outcomes_and_the_signals_history(capsys, with_metrics, tmp_path):
    store, ids = with_metrics
    path = tmp_path / "timeline.html"
    code, out, err = run(capsys, "timeline", "INC-M1", "--store", store, "-o", str(path))
    assert code == 0, err
    assert out.strip() == str(path)
    html = path.read_text()
    assert not re.search(r"<script[^>]*\bsrc=", html)
    figure = plotly_figure(html)
    (metric,) = [t for t in figure["data"] if t.get("yaxis") == "y2"]
    # shop/cart's points only (not shop/other's), from 15 minutes before the incident to 15 after
    assert metric["name"] == "memory_mb"
    assert values(metric["y"]) == [300.0 + i for i in range(16, 46)]
    shown = texts(figure)
    assert "no metric history" not in shown
    assert "success" in shown and "restart" in shown  # the verification's outcome, the action's verb
    # a run id draws the same run, with its outcomes but no incident-wide metric lookup needed
    assert run(capsys, "timeline", ids["run_id"], "--store", store, "-o", str(tmp_path / "run.html"))[0] == 0
    assert "success" in texts(plotly_figure((tmp_path / "run.html").read_text()))


def test_timeline_html_without_metric_history_says_so(capsys, examples, tmp_path):
    path = tmp_path / "timeline.html"
    code, _, err = run(capsys, "timeline", HPA_INCIDENT, "--store", examples, "-o", str(path))
    assert code == 0, err
    shown = texts(plotly_figure(path.read_text()))
    assert "no metric history" in shown and "success" in shown
