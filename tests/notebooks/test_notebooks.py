"""The notebooks in notebooks/ run top to bottom under papermill on a demo night.

One copy of the session's demo store (tests/conftest.py `demo_store`) with its cluster served
again (the night's saved simulator state, over HTTP, read by the official client), and a few rows
a reviewer would have left in the ledgers: a saved what-if, a verdict, a rollback of the agent's
change, an approval request still waiting. Each notebook then runs with papermill, its parameters
pointing at that copy; the checks read what the notebook showed: the tables' rows and the
widgets' state (nbclient keeps the widget models in the notebook's metadata).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from afterfix.store import Store

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
WHO = "nb-reviewer"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def night(demo_store, tmp_path_factory):
    """(store, kubeconfig, ids): a copy of the demo night, its cluster live, ledgers with a row each."""
    from afterfix.nightshift.apiserver import ApiServer
    from afterfix.nightshift.cluster import Cluster
    from afterfix.review import approvals, incidents, replays, verdicts
    from afterfix.review import replay as rp
    from afterfix.undo.kube import connect
    from afterfix.undo.rollback import rollback_action

    root = tmp_path_factory.mktemp("notebooks")
    demo_store.close()  # every write of the night is in its files before they are copied
    shutil.copytree(demo_store.root, root / "store", ignore=shutil.ignore_patterns("*.lock", "spool"))
    shutil.copy(demo_store.root.parent / "work" / "cluster.json", root / "cluster.json")
    cluster = Cluster(state_file=root / "cluster.json")
    server = ApiServer(cluster).start()
    kubeconfig = server.write_kubeconfig(root / "kubeconfig")
    store = Store(root / "store")
    try:
        incident = incidents.most_serious(store)
        assert incident, "the demo night has no incident"
        dec = store.query("SELECT decision_id, run_id FROM decisions WHERE incident_id = ? ORDER BY start_time",
                          [incident])
        act = store.query("SELECT action_id FROM actions WHERE incident_id = ? AND mutating AND status = 'applied' "
                          "ORDER BY start_time", [incident])
        decision_id, action_id = dec.decision_id.iloc[0], act.action_id.iloc[-1]
        # What a reviewer leaves behind: a what-if, a verdict, a rollback, and a request still waiting.
        result = rp.what_if(store, decision_id, {"inputs.metrics.error_rate": 0.005})
        replay_id = replays.save_replay(store, result, WHO, note="what if the errors had stopped")
        verdict = verdicts.record_verdict(store, decision_id, "correct", WHO, note="the rollback was right")
        undone = rollback_action(store, connect(kubeconfig=str(kubeconfig)), action_id, who=WHO,
                                 reason="restore the DB_POOL_SIZE fix the rollback took back",
                                 fields=["DB_POOL_SIZE"])
        request = approvals.open_request(store, action_id="act-nb-migration", verb="create",
                                         target="Job/shop/orders-index", change={"kind": "Job"},
                                         summary="create index orders(customer_id)", agent="nb-agent",
                                         incident_id=incident, timeout_s=3600)
        counts = {view: int(store.query(f"SELECT count(*) AS n FROM {view}").n.iloc[0])
                  for view in ("incidents", "runs", "decisions", "options")}
        counts["rejected"] = int(store.query("SELECT count(*) AS n FROM options WHERE verdict = 'rejected'").n.iloc[0])
        counts["changes"] = int(store.query("SELECT count(*) AS n FROM actions WHERE mutating").n.iloc[0])
        ids = {"counts": counts, "incident": incident, "decision": decision_id, "action": action_id, "run": dec.run_id.iloc[0],
               "replay": replay_id, "verdict": verdict.verdict_id, "request": request.request_id,
               "rollback_outcome": undone.outcome}
    finally:
        store.close()
    yield root / "store", kubeconfig, ids
    server.stop()


def run(notebook: str, tmp_path: Path, monkeypatch, **parameters):
    import nbformat
    import papermill

    # The kernel inherits this environment: any free port for the receiver, a private inbox.
    monkeypatch.setenv("AFTERFIX_PORT", "0")
    monkeypatch.setenv("AFTERFIX_INBOX", str(tmp_path / "inbox"))
    monkeypatch.setenv("AFTERFIX_USER", WHO)
    out = tmp_path / f"{Path(notebook).stem}.out.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS / notebook), str(out), parameters=parameters, kernel_name="python3",
                               cwd=str(tmp_path), progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error" or (o.output_type == "stream" and o.name == "stderr" and "Traceback" in o.text)]
    assert not errors, errors
    return nb


def cell(nb, cell_id: str):
    found = [c for c in nb.cells if c.get("id") == cell_id]
    assert found, f"no cell with id {cell_id!r}: {[c.get('id') for c in nb.cells]}"
    return found[0]


def shown(c) -> str:
    """Everything a cell showed as text or HTML."""
    return "\n".join(str(o.get("data", {}).get(m, "")) + str(o.get("text", "")) for o in c.outputs
                     for m in ("text/plain", "text/html"))


def rows(c) -> int:
    """The rows of the DataFrame a cell showed: its footer ("75 rows × 10 columns") when pandas cut
    the table, else the table's body rows."""
    html = shown(c)
    cut = re.search(r"<p>(\d+) rows × \d+ columns</p>", html)
    return int(cut.group(1)) if cut else html.split("<tbody>", 1)[-1].count("<tr>")


def widget_text(nb, c) -> str:
    """The string trait values of the widget a cell displayed and of every widget under it."""
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    views = [o["data"][WIDGET_VIEW]["model_id"] for o in c.outputs if WIDGET_VIEW in o.get("data", {})]
    assert views, f"cell {c.get('id')} displayed no widget: {shown(c)[:500]}"
    seen, out, todo = set(), [], list(views)
    while todo:
        model = todo.pop()
        if model in seen or model not in state:
            continue
        seen.add(model)
        for value in state[model].get("state", {}).values():
            for v in (value if isinstance(value, list) else [value]):
                if isinstance(v, str) and v.startswith("IPY_MODEL_"):
                    todo.append(v[len("IPY_MODEL_"):])
                elif isinstance(v, (str, list, tuple)):
                    out.append(v if isinstance(v, str) else json.dumps(v))
    return "\n".join(out)


@pytest.mark.slow
def test_review_incident_opens_the_most_serious_incident_in_every_panel(night, tmp_path, monkeypatch):
    store, kubeconfig, ids = night
    nb = run("review_incident.ipynb", tmp_path, monkeypatch, store=str(store), kubeconfig=str(kubeconfig))
    opened = shown(cell(nb, "open"))
    assert f"incident {ids['incident']}" in opened and f"decision {ids['decision']}" in opened
    assert f"action {ids['action']}" in opened
    assert ids["incident"] in widget_text(nb, cell(nb, "browser"))
    assert ids["run"] in widget_text(nb, cell(nb, "run-view"))
    replay = widget_text(nb, cell(nb, "replay"))
    assert ids["run"] in replay
    # the saved what-if, offered for reopening: "what-if (PATH) · DIVERGED · by WHO at TIME · DECISION"
    assert re.search(rf"what-if \([^)]+\) · DIVERGED · by {WHO} at [\d: -]+ · {ids['decision']}", replay), replay
    rollback = widget_text(nb, cell(nb, "rollback"))
    assert ids["action"] in rollback
    assert ids["request"] in widget_text(nb, cell(nb, "approvals"))
    verdict = widget_text(nb, cell(nb, "verdict"))
    assert ids["decision"] in verdict and "the rollback was right" in verdict
    assert "payments" in widget_text(nb, cell(nb, "compare"))


@pytest.mark.slow
def test_approvals_notebook_shows_the_queue_and_its_history(night, tmp_path, monkeypatch):
    store, _, ids = night
    nb = run("approvals.ipynb", tmp_path, monkeypatch, store=str(store))
    assert "1 request(s) waiting for a person" in shown(cell(nb, "open"))
    queue = widget_text(nb, cell(nb, "queue"))
    assert ids["request"] in queue and "create index orders(customer_id)" in queue
    assert ids["request"] in shown(cell(nb, "history")) and "pending" in shown(cell(nb, "history"))
    assert "requested" in shown(cell(nb, "ledger"))


@pytest.mark.slow
def test_ad_hoc_queries_read_every_view_and_ledger(night, tmp_path, monkeypatch):
    store, _, ids = night
    monkeypatch.setenv("AFTERFIX_STORE", str(store))
    nb = run("ad_hoc_queries.ipynb", tmp_path, monkeypatch)
    assert "running" in shown(cell(nb, "status"))
    # The views: every row is in the DataFrame (the table shows the first and last of them).
    for cell_id, view in [("incidents", "incidents"), ("runs", "runs"), ("decisions", "decisions"),
                          ("options", "options"), ("rejected", "rejected"), ("actions", "changes")]:
        assert rows(cell(nb, cell_id)) == ids["counts"][view] > 1, (cell_id, ids["counts"][view])
    assert "prometheus_query" in shown(cell(nb, "tools"))
    # The ledgers: the rows the fixture appended.
    for cell_id, expected in [("rollbacks", ids["action"]), ("approvals", ids["request"]),
                              ("verdicts", ids["decision"]), ("replays", ids["decision"])]:
        assert expected in shown(cell(nb, cell_id)), (cell_id, expected, shown(cell(nb, cell_id))[:800])
    html = cell(nb, "decisions").outputs[0]["data"]["text/html"]
    assert "<table" in html and "decision_id" in html
    assert ids["rollback_outcome"] in shown(cell(nb, "rollbacks"))
