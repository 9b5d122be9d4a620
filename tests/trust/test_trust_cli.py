"""`afterfix trust`: the ladder and its history from the shell; promote, demote and refuse append
to the trust ledger; a promotion above the cap is refused with the cap and its line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from ladder_world import World  # noqa: E402

from afterfix.cli import main  # noqa: E402
from afterfix.trust.ladder import history  # noqa: E402

POLICY = """\
default_level: 1
rules:
  - id: db-migrations
    verbs: [create]
    kinds: [Job]
    level: 2
    cap: 2
  - id: restarts
    description: restart a <Deployment>
    verbs: [restart]
    kinds: [Deployment]
    level: 2
"""


@pytest.fixture
def env(store, tmp_path, monkeypatch):
    path = tmp_path / "trust.yaml"
    path.write_text(POLICY)
    monkeypatch.setenv("AFTERFIX_USER", "alice")
    return store, ["--store", str(store.root), "--policy", str(path)], path


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["trust", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_ladder_shows_each_rule_its_levels_cap_record_and_suggestion(env, capsys):
    store, opts, _ = env
    w = World(store)
    for _ in range(5):
        w.act()
    code, out, _ = run(capsys, *opts)
    assert code == 0
    assert "a promotion is suggested after 5 clean outcomes in a row" in out
    restarts = next(line for line in out.splitlines() if line.startswith("restarts"))
    assert "5 verified (of 5 actions)" in restarts and "promote to 3" in restarts
    assert "no level was changed" in out
    code, out, _ = run(capsys, *opts, "--promote-after", "6")
    assert "promote to" not in out


def test_promote_records_who_and_why_and_the_history_shows_it(env, capsys):
    store, opts, _ = env
    code, out, _ = run(capsys, "promote", "restarts", "--reason", "quiet for a month", *opts)
    assert code == 0 and "restarts: promoted 2 → 3 by alice (not suggested)" in out
    code, out, _ = run(capsys, *opts, "demote", "restarts", "--reason", "too soon", "--who", "bob")
    assert code == 0 and "demoted 3 → 2 by bob" in out
    (first, second) = history(store, "restarts")
    assert (first.who, first.reason, second.who, second.reason) == ("alice", "quiet for a month", "bob", "too soon")
    code, out, _ = run(capsys, *opts)
    assert "promoted 2 → 3" in out and "quiet for a month" in out and "demoted 3 → 2" in out


def test_json_has_levels_records_suggestions_and_history(env, capsys):
    store, opts, _ = env
    run(capsys, "promote", "restarts", "--reason", "ok", *opts)
    code, out, _ = run(capsys, *opts, "--format", "json")
    data = json.loads(out)
    assert data["promote_after"] == 5
    rules = {r["rule_id"]: r for r in data["rules"]}
    assert (rules["restarts"]["policy_level"], rules["restarts"]["level"], rules["db-migrations"]["cap"]) == (2, 3, 2)
    assert rules["restarts"]["description"] == "restart a <Deployment>"
    assert rules["restarts"]["history"][0]["reason"] == "ok" and rules["restarts"]["record"]["actions"] == 0


def test_promoting_above_the_cap_is_refused_naming_cap_and_line(env, capsys):
    store, opts, path = env
    code, _, err = run(capsys, "promote", "db-migrations", "--reason", "trust me", *opts)
    assert code == 2
    assert f"capped at level 2 by {path} line 3" in err and "cannot be promoted to 3" in err
    assert history(store) == []


def test_refuse_records_the_suggestion_turned_down(env, capsys):
    store, opts, _ = env
    w = World(store)
    a = w.act()
    w.rollback(a["action_id"], automatic=True)
    code, out, _ = run(capsys, *opts)
    assert "demote to 1" in next(line for line in out.splitlines() if line.startswith("restarts"))
    code, out, _ = run(capsys, "refuse", "restarts", "--reason", "the guard was wrong", *opts, "--format", "json")
    change = json.loads(out)
    assert code == 0 and (change["outcome"], change["kind"], change["to_level"]) == ("refused", "demote", 1)
    code, out, _ = run(capsys, *opts)
    assert "refused demotion 2 → 1" in out and "demote to" not in out


@pytest.mark.parametrize("argv, message", [
    (["refuse", "restarts", "--reason", "no"], "nothing is suggested"),
    (["promote", "nope", "--reason", "x"], "no rule 'nope'"),
    (["demote", "restarts", "--reason", " "], "--reason: say why"),
])
def test_refusals_and_mistakes_exit_2_with_the_fix(env, capsys, argv, message):
    _, opts, _ = env
    code, _, err = run(capsys, *argv, *opts)
    assert code == 2 and message in err


def test_a_bad_policy_file_is_named(env, capsys, tmp_path):
    _, opts, _ = env
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - id: x\n    level: 9\n")
    code, _, err = run(capsys, "--store", opts[1], "--policy", str(bad))
    assert code == 2 and f"{bad} line 3" in err
