"""trust.gentests on the demo night: the generated suite passes, fails with a broken decider, and an
incident a reviewer judged wrong fails as recorded and passes on the corrected decider."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from afterfix.store import Store
from afterfix.trust.gentests import candidates, generate, module_name

PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts="]


def run_suite(folder: Path, *args: str, path: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(path), env.get("PYTHONPATH", "")])
    return subprocess.run([*PYTEST, str(folder), *args], capture_output=True, text=True, timeout=240, env=env,
                          cwd=folder)


@pytest.fixture(scope="module")
def suite(demo_store, tmp_path_factory):
    ids = candidates(demo_store)
    out = tmp_path_factory.mktemp("regression")
    return ids, out, generate(demo_store, ids, out)


def test_suite_is_a_module_and_fixture_per_incident_and_passes(suite, demo_store):
    ids, out, written = suite
    scenarios = {json.loads((out / f"{module_name(i)}.json").read_text())["incident"]["scenario"] for i in ids}
    assert {"hpa_starvation", "feature_flag", "bad_rollout", "memory_leak"} <= scenarios
    assert "wrong_tool" not in scenarios  # its first bad step taints the decision: not a good incident
    assert len([p for p in written if p.name.startswith("test_")]) == len(ids) and (out / "conftest.py").exists()
    fixture = json.loads((out / f"{module_name(ids[1])}.json").read_text())
    assert fixture["decisions"][0]["tool_calls"] and fixture["metrics"] and fixture["objects_before"]
    proc = run_suite(out)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


def test_module_tells_the_story(suite):
    ids, out, _ = suite
    feature = next(p for p in out.glob("test_*.py") if '"feature_flag"' in p.with_name(p.name[5:-3] + ".json").read_text())
    text = feature.read_text()
    for part in ("What broke:", "What it saw:", "What it chose: rolling_restart", "Rejected no_action:",
                 "A reviewer said:", "an LLM"):
        assert part in text


def test_a_broken_decider_fails_the_suite(suite, tmp_path):
    _, out, _ = suite
    (tmp_path / "broken_policies.py").write_text(textwrap.dedent('''
        from afterfix.nightshift.policy import POLICIES as RIGHT

        def broken(fn):
            def decide(inputs):
                choice = fn(inputs).to_dict()
                other = next(o for o in choice["options"] if o["id"] != choice["selected"])
                choice["selected"] = other["id"]
                return choice
            return decide

        POLICIES = {name: broken(fn) for name, fn in RIGHT.items()}
    '''))
    proc = run_suite(out, "--afterfix-decider", "broken_policies:POLICIES", path=tmp_path)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "test_same_root_cause_and_fix_class" in proc.stdout and "where 'raise_hpa_max'" in proc.stdout


def test_an_incident_judged_wrong_fails_as_recorded_and_passes_corrected(demo_store, tmp_path):
    from afterfix.review.verdicts import record_verdict

    # A copy of the night: the verdict must not reach the session's store.
    store = Store(shutil.copytree(demo_store.root, tmp_path / "store"))
    row = store.query("""SELECT d.decision_id, d.incident_id FROM decisions d
                         WHERE d.policy = 'hpa_capacity' AND d.selected_option = 'no_action'
                         ORDER BY d.start_time LIMIT 1""").iloc[0]
    options = set(store.query("SELECT option_id FROM options WHERE decision_id = ?", [row["decision_id"]])["option_id"])
    assert "scale_deployment" in options
    record_verdict(store, row["decision_id"], "wrong", "alice", note="CPU was near its limit: scale out",
                   should_have="scale_deployment")
    out = tmp_path / "suite"
    generate(store, [row["incident_id"]], out)
    module = out / f"test_{module_name(row['incident_id'])}.py"
    assert "should have been scale_deployment" in module.read_text()
    recorded = run_suite(out)
    assert recorded.returncode == 1 and "test_same_root_cause_and_fix_class" in recorded.stdout, recorded.stdout[-3000:]
    corrected = run_suite(out, "--afterfix-decider", "corrected")
    assert corrected.returncode == 0, corrected.stdout[-3000:]
