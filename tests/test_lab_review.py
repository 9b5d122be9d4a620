"""A reviewer goes through a night in a real JupyterLab, driven in headless Chromium with Playwright.

One night (the bad rollout of payments and the orders database's missing index) is played into a
store, and its cluster is served again, live, on loopback: the kernel reaches it through
KUBECONFIG. A migration agent waits in its own process for a person to approve its Job. Then, in
notebooks/review_incident.ipynb (all cells run from the Run menu), the reviewer steps through the
replay of the most serious incident, runs a what-if and sees the choice diverge, rolls back the
DB_POOL_SIZE field the agent's rollback took back, approves the pending migration and leaves a
verdict. Read back afterwards: the Deployment in the simulator (official kubernetes client), the
Job (succeeded once the cluster ran it), and the audit rows of the rollbacks, approvals, verdicts
and replays ledgers.

Then the same notebook opens an incident whose tool output, option reasons, title and notes carry
HTML/JS payloads: every widget shows them as text, with no element of theirs and no script run.

One JupyterLab and one browser for the module; screenshots of every step go to a temporary folder
(`AFTERFIX_LAB_SHOTS` keeps them somewhere else). Needs the Debian `chromium` package and `playwright`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lab
from afterfix.store import Store
from lab import IMG, SCRIPT

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "review_incident.ipynb"
HOSTILE_NOTEBOOK = "review_hostile.ipynb"
WHO = "lab-reviewer"
HOSTILE_AGENT = "lab-hostile-agent"
HOSTILE = ("INC-lab-hostile-1", "INC-lab-hostile-2")
WHAT_IF = ("inputs.metrics.error_rate", "0.005")  # errors back to normal: the rollback is not needed
WIDGET_CELLS = ("browser", "run-view", "replay", "rollback", "approvals", "verdict", "compare")

pytestmark = [pytest.mark.slow]


# -- the world: a night, its cluster live, a waiting migration, a hostile incident -------------------

def _hostile(store, sim) -> dict:
    """Two incidents of an agent whose every text is a payload, with an action on a real ConfigMap,
    a saved replay, a verdict and a pending approval request; returns their ids."""
    from afterfix.review import approvals, verdicts
    from afterfix.sdk import Option, Target
    from afterfix.undo.trace import recording

    sim.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "lab-hostile", "namespace": "shop"},
                "data": {"note": SCRIPT}}, field_manager="helm")
    ids: dict = {}
    for n, incident in enumerate(HOSTILE):
        before = sim.get("v1", "ConfigMap", "shop", "lab-hostile")
        after = sim.patch("v1", "ConfigMap", "shop", "lab-hostile", {"data": {"note": IMG if n else SCRIPT + str(n)}},
                          patch_type="merge", field_manager="afterfix-agent")
        with recording(store, HOSTILE_AGENT) as rec, rec.run(incident_id=incident):
            with rec.incident(incident, f"flags {IMG} {SCRIPT}", severity="low", service=f"shop/lab-hostile{SCRIPT}"):
                with rec.tool_call("kubectl_get", {"name": IMG, "namespace": SCRIPT}) as call:
                    call.result({"log": f"{IMG} {SCRIPT}", "note": SCRIPT})
                did = rec.decision(f"what now, {IMG} or {SCRIPT}?",
                                   [Option("patch_flags", f"patch {IMG}", evidence=[IMG, SCRIPT], score=0.9),
                                    Option("no_action", SCRIPT, evidence=[SCRIPT], score=0.1,
                                           reason=f"rejected: {IMG} {SCRIPT}")],
                                   "patch_flags", f"because {SCRIPT} {IMG}", policy="lab_hostile",
                                   inputs={"note": IMG, "log": SCRIPT}, sources=[call.call_id])
                target = Target(after["metadata"]["uid"], "ConfigMap", "v1", "shop", "lab-hostile")
                with rec.action("patch", target, decision_id=did, patch={"data": {"note": after["data"]["note"]}}) as act:
                    act.before({"data.note": before["data"]["note"]}, before["metadata"]["resourceVersion"])
                    act.after({"data.note": after["data"]["note"]}, after["metadata"]["resourceVersion"])
        ids[incident] = {"decision": did, "action": act.action_id}
    last = ids[HOSTILE[1]]
    verdicts.record_verdict(store, last["decision"], "unsure", HOSTILE_AGENT, note=f"{IMG} {SCRIPT}")
    approvals.open_request(store, action_id=last["action"], verb="patch", target="ConfigMap/shop/lab-hostile",
                           change={"data": {"note": IMG}}, summary=f"patch {IMG} {SCRIPT}", agent=HOSTILE_AGENT,
                           incident_id=HOSTILE[1], decision_id=last["decision"], timeout_s=3600)
    return ids


MIGRATION_AGENT = """
import sys
from afterfix.nightshift.runbooks import run_migration_agent
from afterfix.store import Store
outcome = run_migration_agent(Store(sys.argv[1]), sys.argv[2], incident_id="INC-lab-migration", timeout_s=170, poll_s=0.5)
print("migration", outcome.action_status, flush=True)
sys.exit(0 if outcome.action_status == "applied" else 1)
"""


def _migration_agent(store_dir: Path, kubeconfig: Path, log: Path) -> subprocess.Popen:
    """The reference agent on the orders database's missing index, in its own process, waiting in
    real time for a person to approve its migration Job (runbooks.run_migration_agent); returns
    once its request is in the store."""
    from afterfix.review import approvals

    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", MIGRATION_AGENT, str(store_dir), str(kubeconfig)],
                                stdout=out, stderr=subprocess.STDOUT)
    store = Store(store_dir)
    try:
        def asked():
            assert proc.poll() is None, f"the migration agent exited with {proc.returncode}:\n{log.read_text()}"
            return [r for r in approvals.requests(store, status="pending") if r.incident_id == "INC-lab-migration"]

        assert lab.wait_until(asked, timeout=60, interval=0.5), f"no approval request:\n{log.read_text()}"
    finally:
        store.close()
    return proc


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from afterfix.nightshift import scenarios as sc
    from afterfix.nightshift.apiserver import ApiServer
    from afterfix.nightshift.cluster import Cluster
    from afterfix.nightshift.night import run_night

    root = tmp_path_factory.mktemp("lab-review")
    store = Store(root / "store")
    night = run_night(store, workdir=root / "night", seed=0, scenarios=["bad_rollout", "db_migration"],
                      until=sc.at(210))
    sim = Cluster(state_file=night.state_file)  # the cluster the night left, live again
    server = ApiServer(sim).start()
    kubeconfig = server.write_kubeconfig(root / "kubeconfig")
    hostile = _hostile(store, sim)
    store.close()
    agent = _migration_agent(root / "store", kubeconfig, root / "migration-agent.log")
    try:
        yield {"root": root, "store": root / "store", "sim": sim, "kubeconfig": kubeconfig, "night": night,
               "hostile": hostile, "agent": agent}
    finally:
        if agent.poll() is None:
            agent.terminate()
            try:
                agent.wait(timeout=20)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        server.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> lab.Shots:
    folder = os.environ.get("AFTERFIX_LAB_SHOTS")
    return lab.Shots(Path(folder) if folder else tmp_path_factory.mktemp("lab-shots"))


@pytest.fixture(scope="module")
def jupyter(world):
    """JupyterLab serving a folder with review_incident.ipynb and its copy on the hostile incident."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    root = world["root"] / "lab"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)  # the server saves outputs there, never into notebooks/
    hostile = parameterize_notebook(load_notebook_node(str(NOTEBOOK)), {"incident_id": HOSTILE[1]})
    nbformat.write(hostile, root / HOSTILE_NOTEBOOK)
    env = lab.lab_env(world["root"] / "jupyter", AFTERFIX_STORE=str(world["store"]), KUBECONFIG=str(world["kubeconfig"]),
                      AFTERFIX_USER=WHO, AFTERFIX_PORT="0", AFTERFIX_INBOX=str(world["root"] / "inbox"))
    server = lab.Lab(root, env, world["root"] / "jupyter.log").start()
    try:
        yield server.wait()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def page(jupyter, shots):
    with lab.browser() as browser:
        p = browser.new_page(viewport={"width": 1400, "height": 2400})  # tall: a widget fits in its screenshot
        p.set_default_timeout(30_000)
        yield p
        shots(p, "last")


# -- helpers ----------------------------------------------------------------------------------------

def cell_index(notebook_file: Path) -> dict[str, int]:
    import nbformat

    nb = nbformat.read(notebook_file, as_version=4)
    return {c.get("id"): i for i, c in enumerate(nb.cells)}


def run_notebook(page, jupyter: lab.Lab, name: str):
    """Open `name`, run all its cells and wait until every code cell has run; returns (notebook
    locator, {cell id: its output area locator})."""
    from playwright.sync_api import expect

    notebook = lab.open_notebook(page, jupyter, name)
    index = cell_index(jupyter.root / name)
    cells = notebook.locator(".jp-Cell")
    expect(cells).to_have_count(len(index))
    lab.run_all(page)
    code = [i for i in range(len(index)) if "jp-CodeCell" in (cells.nth(i).get_attribute("class") or "")]
    prompts = notebook.locator(".jp-CodeCell .jp-InputPrompt")

    def done():
        if lab.errors(notebook):  # a cell failed: the cells after it never run
            return True
        return sum(bool(re.fullmatch(r"\[\d+\]:", t.strip())) for t in prompts.all_text_contents()) == len(code)

    lab.wait_until(done, timeout=180, interval=0.5)
    lab.wait_idle(page)
    assert lab.errors(notebook) == [], lab.errors(notebook)
    return notebook, {cid: cells.nth(i).locator(".jp-Cell-outputArea") for cid, i in index.items()}


def button(area, name: str):
    """The button labelled `name` (by its text: an icon's glyph is part of its accessible name)."""
    return area.locator("button", has_text=re.compile(rf"^\s*{re.escape(name)}\s*$"))


# -- the review ---------------------------------------------------------------------------------------

def test_reviewer_replays_what_ifs_rolls_back_approves_and_judges(world, jupyter, page, shots):
    from kubernetes import client, config
    from playwright.sync_api import expect

    from afterfix.review import incidents

    store = Store(world["store"])
    incident = incidents.most_serious(store)
    decision_id, run_id = store.query("SELECT decision_id, run_id FROM decisions WHERE incident_id = ? "
                                      "ORDER BY start_time", [incident]).iloc[0]
    action_id = store.query("SELECT action_id FROM actions WHERE incident_id = ? AND mutating AND status = 'applied' "
                            "ORDER BY start_time DESC", [incident]).action_id.iloc[0]
    store.close()

    notebook, out = run_notebook(page, jupyter, NOTEBOOK.name)
    shots(page, "review-run-all")
    expect(out["open"]).to_contain_text(f"incident {incident} ")
    for cid in WIDGET_CELLS[:-1]:
        expect(out[cid].locator(".widget-vbox").first).to_be_visible()
    expect(out["compare"]).to_contain_text("no other run on this service")  # payments failed once this night

    # Step through the replay: each step says where it is and what the agent had.
    replay = out["replay"]
    step = replay.locator(".widget-html", has_text="what the agent had").first
    first = step.text_content()
    m = re.search(r"step (\d+) of (\d+)", first)
    assert m, first
    button(replay, "◀ previous").click()
    expect(step).to_contain_text(f"step {int(m.group(1)) - 1} of {m.group(2)}")
    button(replay, "next ▶").click()
    button(replay, "next ▶").click()
    expect(step).to_contain_text(f"step {int(m.group(1)) + 1} of {m.group(2)}")
    shots(replay, "replay-stepped")
    button(replay, "Replay").click()
    result = replay.locator(".widget-html", has_text="replayed").last
    expect(result).to_contain_text("same choice")
    shots(replay, "replay-same")

    # A what-if: had the error rate been normal, the agent would not have rolled back.
    path, value = WHAT_IF
    replay.locator(".widget-dropdown", has_text="edit").locator("select").select_option(path)
    replay.locator(".widget-text", has_text="new value").locator("input").fill(value)
    button(replay, "Run what-if").click()
    expect(result).to_contain_text("DIVERGED")
    expect(result).to_contain_text("no_action")
    expect(result).to_contain_text(path)
    shots(replay, "what-if-diverged")

    # Roll back only the DB_POOL_SIZE fix the agent's revision rollback took back.
    rollback = out["rollback"]
    expect(rollback).to_contain_text(action_id)
    fields = rollback.locator(".widget-select-multiple select")
    fields.select_option(label=next(o for o in fields.locator("option").all_text_contents() if "DB_POOL_SIZE" in o))
    rollback.locator(".widget-textarea", has_text="reason").locator("textarea").fill(
        "restore the DB_POOL_SIZE fix; the bad image stays rolled back")
    shots(rollback, "rollback-plan")
    button(rollback, "Dry run").click()
    expect(rollback).to_contain_text("server dry-run")
    shots(rollback, "rollback-dry-run")
    button(rollback, "Apply").click()
    button(rollback, "Confirm apply").click()
    expect(rollback).to_contain_text("rolled_back", timeout=60_000)
    shots(rollback, "rollback-applied")

    # Approve the migration the agent is waiting on.
    approvals = out["approvals"]
    pick = approvals.locator(".widget-dropdown", has_text="request").locator("select")
    pick.select_option(label=next(o for o in pick.locator("option").all_text_contents() if "orders" in o))
    expect(approvals).to_contain_text("INC-lab-migration")
    expect(button(approvals, "Approve")).to_be_disabled()  # a comment first
    approvals.locator("textarea").fill("index looks right; run it")
    shots(approvals, "approvals-pending")
    button(approvals, "Approve").click()
    expect(approvals).to_contain_text("1 pending, 2 decided")  # the hostile request still waits
    expect(approvals.locator(".afterfix-ok")).to_contain_text("approved")
    expect(approvals).to_contain_text("index looks right; run it")  # in the history
    shots(approvals, "approvals-approved")

    # A verdict on the decision.
    verdict = out["verdict"]
    button(verdict, "correct").click()
    verdict.locator("textarea").fill("the revision rollback stopped the errors; the pool fix came back by hand")
    button(verdict, "Save verdict").click()
    expect(verdict).to_contain_text(f"saved: {WHO} marked decision {decision_id} correct")
    shots(verdict, "verdict-saved")
    shots(page, "review-done")

    # Read back: the simulator's object, the Job, and the audit rows.
    api = config.new_client_from_config(config_file=str(world["kubeconfig"]))
    try:
        deploy = client.AppsV1Api(api).read_namespaced_deployment("payments", "shop")
        container = deploy.spec.template.spec.containers[0]
        assert {e.name: e.value for e in container.env}["DB_POOL_SIZE"] == "20"  # the person's fix is back
        assert container.image == "registry.example/payments:2.3.1"  # the bad image stays rolled back
        batch = client.BatchV1Api(api)
        jobs = lab.wait_until(lambda: batch.list_namespaced_job("shop").items, timeout=60)
        assert jobs, f"the approved migration made no Job:\n{(world['root'] / 'migration-agent.log').read_text()}"
        job = jobs[0]

        def succeeded():
            world["sim"].tick(60)
            return batch.read_namespaced_job(job.metadata.name, "shop").status.succeeded

        assert lab.wait_until(succeeded, timeout=60) == 1
    finally:
        api.close()
    assert world["agent"].wait(timeout=60) == 0, (world["root"] / "migration-agent.log").read_text()

    store = Store(world["store"])
    try:
        rb = store.query("SELECT who, outcome, fields, reason FROM rollbacks WHERE action_id = ? ORDER BY time",
                         [action_id])
        assert set(rb.who) == {WHO} and list(rb.outcome) == ["dry_run", "started", "rolled_back"], rb
        assert all("DB_POOL_SIZE" in f for f in rb.fields), rb
        ap = store.query("SELECT event, who, comment FROM approvals WHERE event = 'approved'")
        assert list(ap.who) == [WHO] and list(ap.comment) == ["index looks right; run it"]
        vd = store.query("SELECT who, verdict, note FROM verdicts WHERE target_id = ?", [decision_id])
        assert list(vd.who) == [WHO] and list(vd.verdict) == ["correct"]
        rp = store.query("SELECT kind, who, diverged, edits FROM replays WHERE run_id = ? ORDER BY time", [run_id])
        assert list(rp.kind) == ["replay", "what_if"] and list(rp.who) == [WHO, WHO]
        assert list(rp.diverged) == [False, True] and path in rp.edits.iloc[1]
    finally:
        store.close()
    lab.assert_inert(page)


def test_every_widget_shows_hostile_trace_text_as_text(world, jupyter, page, shots):
    notebook, out = run_notebook(page, jupyter, HOSTILE_NOTEBOOK)
    shots(page, "hostile-run-all")
    from playwright.sync_api import expect

    expect(out["open"]).to_contain_text(f"incident {HOSTILE[1]} ")
    for cid in WIDGET_CELLS:
        expect(out[cid].locator(".widget-vbox").first).to_be_visible()
        shots(out[cid], f"hostile-{cid}")
        shown = out[cid].text_content().replace("\xa0", " ")  # dropdown labels keep their spaces as nbsp
        assert IMG in shown and SCRIPT in shown, (cid, shown[:1500])
    # Checked after every output rendered: an <img onerror> would have fired by now.
    lab.assert_inert(page, notebook.locator(".jp-OutputArea-output"))
