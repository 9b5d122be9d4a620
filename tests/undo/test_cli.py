"""`afterfix actions` and `afterfix rollback` from the shell: output, documented exit codes, and bad
input refused with what to do, with nothing changed."""

from __future__ import annotations

import json
import socket

import pytest

from afterfix.cli import main


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def hpa_change(world) -> str:
    return world.change("HorizontalPodAutoscaler", "shop", "catalog", {"spec": {"maxReplicas": 6}}, ["spec.maxReplicas"])


def common(world):
    return ["--store", str(world.store.root), "--kubeconfig", str(world.kubeconfig)]


def test_plan_then_apply_then_the_ledger_shows_the_rollback(world, capsys):
    act = hpa_change(world)
    code, out, _ = run(capsys, "rollback", act, *common(world))
    assert code == 0
    assert f"Rollback plan for {act}" in out and "RESTORE" in out and "[ok  ] same object" in out
    assert '"maxReplicas": 2' in out and f"afterfix rollback {act} --dry-run" in out
    code, out, _ = run(capsys, "rollback", act, "--dry-run", "--format", "json", *common(world))
    assert code == 0 and json.loads(out)["outcome"] == "dry_run"
    assert world.get("HorizontalPodAutoscaler", "shop", "catalog")["spec"]["maxReplicas"] == 6
    code, out, _ = run(capsys, "rollback", act, "--apply", "--reason", "too many", "--who", "ana", *common(world))
    assert code == 0 and "rolled_back" in out and "rollbacks ledger" in out
    code, out, _ = run(capsys, "actions", "--format", "json", *common(world))
    entries = {e["action_id"]: e for e in json.loads(out)}
    mine = entries[act]
    assert (mine["target_kind"], mine["target_namespace"], mine["target_name"]) == ("HorizontalPodAutoscaler", "shop", "catalog")
    assert mine["before"] == {"spec.maxReplicas": 2} and mine["after"] == {"spec.maxReplicas": 6}
    assert mine["field_manager"] == "afterfix-agent" and mine["decision_id"]
    assert mine["resource_version_before"] and mine["resource_version_after"]
    kinds = [x["kind"] for x in mine["later"]]
    assert "rollback" in kinds  # the rollback's own action and its ledger row


def test_a_persons_later_edit_shows_in_the_ledger_when_the_cluster_is_read(world, capsys):
    act = hpa_change(world)
    world.sim.clock.advance(120)
    world.edit("HorizontalPodAutoscaler", "shop", "catalog", {"spec": {"minReplicas": 1}}, manager="kubectl-edit")
    code, out, _ = run(capsys, "actions", "--format", "json", *common(world))
    later = next(e for e in json.loads(out) if e["action_id"] == act)["later"]
    assert any(x["kind"] == "person" and x["who"] == "kubectl-edit" for x in later)
    code, out, _ = run(capsys, "actions", "--format", "csv", "--store", str(world.store.root))
    assert code == 0 and out.splitlines()[0].startswith("action_id,time,agent,verb,status,target")


@pytest.mark.parametrize("argv, code, message", [
    (["rollback", "act-nope"], 3, "no action 'act-nope' in the store"),
    (["rollback", "--decision", "dec-nope", "--apply", "--reason", "r"], 3, "has no applied actions"),
    (["rollback", "ACT", "--apply"], 2, "--apply needs --reason"),
    (["rollback", "ACT", "--override-drift", "--apply", "--reason", "r"], 2, "needs its own --override-reason"),
    (["rollback", "ACT", "--fields", "nothing_like_it"], 2, "choose from"),
    (["rollback"], 2, "give one ACTION_ID, or --decision ID"),
])
def test_bad_input_is_refused_with_its_exit_code_and_nothing_changes(world, capsys, argv, code, message):
    act = hpa_change(world)
    argv = [act if a == "ACT" else a for a in argv]
    rv = world.get("HorizontalPodAutoscaler", "shop", "catalog")["metadata"]["resourceVersion"]
    got, out, err = run(capsys, *argv, *common(world))
    assert got == code and message in err + out
    assert world.get("HorizontalPodAutoscaler", "shop", "catalog")["metadata"]["resourceVersion"] == rv


def test_an_unknown_kind_is_refused(world, capsys):
    from afterfix.sdk import Target
    from afterfix.undo.trace import recording

    with recording(world.store, "other-agent") as rec, rec.run():
        with rec.action("patch", Target("u-1", "Widget", "example.com/v1", "shop", "w")) as a:
            a.before({"spec.size": 1}, "1")
            a.after({"spec.size": 2}, "2")
            act = a.action_id
    code, _, err = run(capsys, "rollback", act, *common(world))
    assert code == 3 and "kind 'Widget' is not one afterfix can undo" in err


def test_a_cluster_that_cannot_be_reached_is_exit_4(world, capsys, tmp_path):
    from afterfix.nightshift.apiserver import write_kubeconfig

    act = hpa_change(world)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = write_kubeconfig(tmp_path / "dead", f"http://127.0.0.1:{port}")
    code, out, err = run(capsys, "rollback", act, "--apply", "--reason", "r", "--store", str(world.store.root),
                       "--kubeconfig", str(dead))
    assert code == 4 and "cannot reach the Kubernetes API" in out + err and "--kubeconfig" in out + err
    code, _, err = run(capsys, "rollback", act, "--store", str(world.store.root), "--kubeconfig", str(tmp_path / "nope"))
    assert code == 4 and "does not exist" in err


def test_hostile_trace_text_reaches_the_terminal_escaped(world, capsys):
    act = world.change("ConfigMap", "shop", "flags", {"data": {"new_checkout": "\x1b[2J\x1b]0;pwned\x07 true"}},
                       ["data.new_checkout"])
    code, out, _ = run(capsys, "rollback", act, *common(world))
    assert code == 0 and "\x1b" not in out and "\\x1b" in out
