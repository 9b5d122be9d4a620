"""`afterfix replay` and the ReplayPanel widget, on the demo night and the hand-built run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from replay_fixtures import HOSTILE, build_night  # noqa: E402

from afterfix.cli import main

DEMO_HPA = "SELECT decision_id FROM decisions WHERE policy = 'hpa_capacity' AND selected_option = 'raise_hpa_max'"


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    from afterfix.store import Store

    store = Store(tmp_path_factory.mktemp("replay-faces") / "store")
    store.create()
    return build_night(store)


def run(capsys, *argv):
    code = main(["replay", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_same_is_exit_0_and_saved(capsys, night):
    code, out, err = run(capsys, night.first, "--store", str(night.store.root), "--who", "carol")
    assert code == 0 and "SAME" in out and "saved as rpl-" in out and "would do (not executed): patch" in out
    assert f"missing: tool call {night.missing_call}" in out
    code, out, _ = run(capsys, "--list", "--store", str(night.store.root), "--format", "json")
    assert code == 0 and json.loads(out)[0]["who"] == "carol"
    rid = json.loads(out)[0]["replay_id"]
    code, out, _ = run(capsys, "--open", rid, "--store", str(night.store.root))
    assert code == 0 and f"saved as {rid} by carol" in out


def test_cli_what_if_diverges_exit_1(capsys, demo_store):
    did = demo_store.query(DEMO_HPA)["decision_id"][0]
    code, out, _ = run(capsys, did, "--store", str(demo_store.root), "--set", "inputs.metrics.latency_p95_ms=100",
                       "--no-save", "--format", "json")
    assert code == 1
    (result,) = json.loads(out)
    assert result["diverged"] and result["decisions"][0]["replayed_selected"] == "no_action"
    assert {o["id"] for o in result["decisions"][0]["changed"]} == {"raise_hpa_max", "no_action"}


def test_cli_all_reports_none_diverged_on_the_demo(capsys, demo_store):
    code, out, _ = run(capsys, "--all", "--endpoint", "scripted", "--store", str(demo_store.root))  # the LLM agent's too
    assert code == 0 and " 0 diverged, 0 could not be replayed" in out


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["dec-nope"], 3, "no decision 'dec-nope'"),
    (["{first}", "--set", "inputs.metrics.latncy=1"], 2, "--set inputs.metrics: no key 'latncy'"),
    (["{first}", "--set", "novalue"], 2, "write PATH=VALUE"),
    (["{first}", "--set", "inputs.hpa.maxReplicas.x=1"], 2, "which has no key 'x'"),
    (["{llm}"], 3, "was made by model scripted-1; pass --endpoint URL of an OpenAI-compatible server"),
    (["--open", "rpl-nope"], 3, "no saved replay 'rpl-nope'"),
    (["--since", "24h"], 2, "give one DECISION_ID, or --all"),
    (["{first}", "--since", "24h"], 2, "choose the window of --all"),
])
def test_cli_errors(capsys, night, argv, code, message):
    argv = [a.format(first=night.first, llm=night.llm) for a in argv]
    got, _, err = run(capsys, *argv, "--store", str(night.store.root), "--no-save" if argv[0] != "--open" and "--since" not in argv else "--format=table")
    assert got == code and message in err


def test_cli_escapes_hostile_text(capsys, night):
    code, out, _ = run(capsys, night.first, "--store", str(night.store.root), "--no-save", "--set",
                       f"inputs.metrics.latency_p95_ms=\"\u001b[31m{HOSTILE}\"")
    assert "\u001b" not in out


def test_panel_steps_replays_and_what_ifs(night):
    from afterfix.widgets.replay import ReplayPanel

    panel = ReplayPanel(night.store, night.run_id, who="dana")
    # The slider shows the step's number, as the heading does: 1 to the number of steps.
    assert (panel.slider.min, panel.slider.max, panel.slider.value) == (1, len(panel.steps), 1)
    assert f"step 1 of {len(panel.steps)}:" in panel.step_html.value
    panel.next_button.click()
    panel.next_button.click()
    assert panel.slider.value == 3 and panel.step["index"] == 2 and night.hpa_call in panel.step_html.value
    assert f"step 3 of {len(panel.steps)}:" in panel.step_html.value
    panel.prev_button.click()
    assert panel.slider.value == 2
    panel.prev_button.click()
    panel.prev_button.click()
    assert panel.slider.value == 1  # stops at the first step
    at = next(s["index"] for s in panel.steps if s["kind"] == "decision")
    panel.slider.value = at + 1
    html = panel.step_html.value
    assert "<script" not in html and "<img" not in html and "&lt;script&gt;" in html and "onerror" in html
    assert "not recorded" in html and "raise_hpa_max" in html
    assert "unset" not in html  # OTel's UNSET status says nothing to a reviewer

    # Pickers lead with what they are about; the edit picker starts on a prompt saying what to do.
    labels = dict((v, k) for k, v in panel.decision_choice.options)
    question = panel.decisions[night.first].question
    assert labels[night.first].startswith(question[:40]) and labels[night.first].endswith(night.first)
    from afterfix.widgets.replay import LABEL_MAX, _label

    question = "how to recover? " * 20
    long = _label(question, "chose rollback_revision", "dec-1")
    head, _, tail = long.partition("…")
    assert len(long) <= LABEL_MAX and tail == " · chose rollback_revision · dec-1"  # the outcome and id stay whole
    assert question.startswith(head) and question[len(head)] == " "  # the question is cut at a word
    panel.decision_choice.value = night.first
    assert panel.path_choice.index == 0 and panel.path_choice.value is None  # the prompt is shown, not a blank
    assert panel.path_choice.options[0][0].startswith("— pick the recorded value")
    panel.whatif_button.click()
    assert "choose a decision and a path to edit" in panel.result_html.value
    panel.replay_button.click()
    assert "same choice" in panel.result_html.value and panel.result.replay_id
    assert f"tool:{night.p95_call}.value" in [v for _, v in panel.path_choice.options]
    panel.path_choice.value = "inputs.metrics.latency_p95_ms"
    assert "recorded:</span> <code>2400.0</code>" in panel.recorded_html.value
    panel.value_box.value = "100"
    panel.whatif_button.click()
    html = panel.result_html.value
    assert "DIVERGED" in html and "latency is within the SLO" in html and "<script" not in html
    saved = panel.saved_choice.options
    assert len(saved) >= 3 and saved[0][1] is None and panel.saved_choice.index == 0
    assert saved[1][0].startswith("what-if (inputs.metrics.latency_p95_ms) · DIVERGED · by dana")
    assert saved[2][0].startswith("replay · same choice · by dana")
    panel.saved_choice.value = saved[1][1]
    panel.open_button.click()
    assert "saved rpl-" in panel.result_html.value and "dana" in panel.result_html.value

    panel.value_box.value = "1"
    panel.path_choice.options = ["inputs.nope"]
    panel.path_choice.value = "inputs.nope"
    panel.whatif_button.click()
    assert "no key &#x27;nope&#x27;" in panel.result_html.value


def test_panel_opens_at_a_decision(demo_store):
    from afterfix.widgets.replay import ReplayPanel

    did = demo_store.query(DEMO_HPA)["decision_id"][0]
    panel = ReplayPanel(demo_store, decision_id=did, save=False)
    assert panel.step["decision"]["decision_id"] == did
    assert panel.steps[panel.slider.value - 1] is panel.step
    panel.replay_button.click()
    assert "same choice" in panel.result_html.value and panel.result.replay_id is None
