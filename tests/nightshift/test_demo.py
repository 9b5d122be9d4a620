"""`afterfix demo` and `afterfix demo cluster`: a short night through the command, then the
cluster it left behind served again and read with the official client."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubernetes import client, config

from afterfix.nightshift import demo
from afterfix.nightshift import scenarios as sc
from afterfix.store import Store


def parser():
    p = argparse.ArgumentParser(prog="afterfix")
    demo.register(p.add_subparsers(dest="command", required=True))
    return p


@pytest.mark.parametrize("argv,expected", [
    (["demo"], {"seed": 0, "store": None, "dir": None, "until": None, "demo_command": None}),
    (["demo", "--seed", "4", "--until", "23:30"], {"seed": 4, "until": sc.at(90)}),
    (["demo", "--until", "06:15"], {"until": sc.at(8 * 60 + 15)}),
    (["demo", "cluster", "--port", "0", "--kubeconfig", "k"], {"demo_command": "cluster", "port": 0, "state": None}),
])
def test_arguments(argv, expected):
    args = parser().parse_args(argv)
    assert callable(args.func)
    for key, value in expected.items():
        assert getattr(args, key) == value


@pytest.mark.parametrize("bad", ["25:00", "noon", "7"])
def test_until_must_be_a_time(bad, capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(["demo", "--until", bad])
    assert "is not a time like 02:30" in capsys.readouterr().err


def test_cluster_needs_port_and_kubeconfig(capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(["demo", "cluster", "--port", "1"])
    assert "--kubeconfig" in capsys.readouterr().err


@pytest.fixture(scope="module")
def demo_night(tmp_path_factory):
    """`afterfix demo` for a short night (22:00 -> 23:00): its output, store folder and workdir."""
    root = tmp_path_factory.mktemp("demo")
    store_dir, workdir = root / "store", root / "demo"
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = demo.main(["--store", str(store_dir), "--dir", str(workdir), "--seed", "2", "--until", "23:00", "--quiet"])
    assert code == 0
    return out.getvalue(), store_dir, workdir


@pytest.mark.slow
def test_demo_prints_a_summary_and_fills_the_store(demo_night):
    out, store_dir, workdir = demo_night
    assert "incidents" in out and "spans" in out and "decisions" in out and "actions" in out
    assert "hpa_starvation" in out and "raise_hpa_max [applied]" in out
    assert str(workdir / "cluster.json") in out and str(workdir / "kubeconfig") in out
    assert ".venv/bin/jupyter lab notebooks/" in out
    # the morning briefing of the night, rendered and its path printed
    briefing = workdir / "briefing.html"
    assert f"briefing    {briefing.resolve()}" in out and briefing.stat().st_size > 1_000_000  # plotly.js inside
    assert "Morning briefing" in briefing.read_text(encoding="utf-8")
    store = Store(store_dir)
    assert store.query("SELECT count(*) AS n FROM decisions").iloc[0]["n"] >= 2
    store.close()


@pytest.mark.slow
def test_demo_cluster_serves_what_the_night_left(demo_night, tmp_path):
    _, _, workdir = demo_night
    kubeconfig = tmp_path / "served-kubeconfig"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "afterfix.nightshift.demo", "cluster", "--port", "0",
                             "--kubeconfig", str(kubeconfig), "--state", str(workdir / "cluster.json"),
                             "--realtime-factor", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while not kubeconfig.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert kubeconfig.exists(), proc.stdout.read() if proc.poll() is not None else "no kubeconfig written"
        api = config.new_client_from_config(config_file=str(kubeconfig))
        hpa = client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler("catalog", "shop")
        assert hpa.spec.max_replicas == 4  # the agent's change, kept in the saved state
        assert "afterfix-agent" in {m.manager for m in hpa.metadata.managed_fields}
        api.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.slow
def test_review_notebook_runs_on_the_demo_store(demo_night, tmp_path, monkeypatch):
    """The notebook `afterfix demo` tells people to open, on the store it just filled."""
    import nbclient
    import nbformat

    from afterfix.review.incidents import most_serious

    _, store_dir, workdir = demo_night
    notebooks = Path(__file__).resolve().parents[2] / "notebooks"
    nb = nbformat.read(notebooks / "review_incident.ipynb", as_version=4)
    # The kernel inherits this environment: the demo's store and cluster, any free port, a private inbox.
    monkeypatch.setenv("AFTERFIX_STORE", str(store_dir))
    monkeypatch.setenv("KUBECONFIG", str(workdir / "kubeconfig"))
    monkeypatch.setenv("AFTERFIX_PORT", "0")
    monkeypatch.setenv("AFTERFIX_INBOX", str(tmp_path / "inbox"))
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(notebooks)}}).execute()
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    opened = next(c for c in nb.cells if c.get("id") == "open")
    shown = "\n".join(str(o.get("text", "")) for o in opened.outputs)
    assert f"incident {most_serious(Store(store_dir))} " in shown
    # every panel displayed a widget
    widgets = [c.get("id") for c in nb.cells if c.cell_type == "code" for o in c.outputs
               if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert {"browser", "run-view", "replay", "rollback", "approvals", "verdict"} <= set(widgets), widgets


def test_the_command_line_offers_demo():
    from afterfix import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["demo", "--help"])
    assert exit_.value.code == 0
