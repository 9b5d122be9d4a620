"""The approval queue: requests and decisions in the approvals ledger, decided once (threads and
processes racing), waited on from another process, recorded as approval spans, and the
`afterfix approvals` commands."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from afterfix import approvals
from afterfix import sdk
from afterfix._exceptions import NotFound
from afterfix.cli import main
from afterfix.review.approvals import ApprovalError, decide, get, open_request, requests, wait

HOSTILE = '<img src=x onerror="alert(1)"><script>alert(2)</script>$x$'
JOB = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "orders-add-index"},
       "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
           {"name": "migrate", "image": "postgres:16", "command": ["psql", "-c", "CREATE INDEX ..."]}]}}}}
T0 = datetime(2026, 11, 27, 1, 0, tzinfo=timezone.utc).timestamp()


class Clock:
    """A clock that moves only when slept on: the agent's simulated time."""

    def __init__(self, t: float = T0):
        self.t, self.slept = t, []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s


def ask(store, n: int = 0, timeout_s: float = 900, now=time.time, **kw):
    return open_request(store, action_id=f"act-{n}", verb="create", target="Job/shop/orders-add-index", change=JOB,
                        summary="create Job shop/orders-add-index: CREATE INDEX ON orders(customer_id)",
                        agent="reference-agent", decision_id="dec-1", run_id="run-1", incident_id="INC-1",
                        timeout_s=timeout_s, now=now, **kw)


def ledger(store, request_id):
    return store.query("SELECT event, who, comment FROM approvals WHERE request_id = ? ORDER BY time", [request_id]) \
        .to_dict("records")


def test_the_sdk_face_is_the_library():
    assert approvals.request is __import__("afterfix.review.approvals", fromlist=["x"]).request
    assert set(approvals.__all__) >= {"request", "open_request", "wait", "decide", "requests", "get", "Request"}


def test_a_request_is_a_requested_row_with_the_exact_change(store):
    req = ask(store, now=lambda: T0, timeout_s=600)
    got = get(store, req.request_id)
    assert got == req
    assert (got.status, got.change, got.agent_name, got.incident_id) == ("pending", JOB, "reference-agent", "INC-1")
    assert got.expires_at == datetime(2026, 11, 27, 1, 10) and got.requested_at == datetime(2026, 11, 27, 1, 0)
    assert got.seconds_left(T0 + 60) == 540
    [row] = store.query("SELECT * FROM approvals").to_dict("records")
    assert (row["event"], row["who"], json.loads(row["request"])) == ("requested", "reference-agent", JOB)
    assert [r.request_id for r in requests(store)] == [req.request_id]
    assert [r.request_id for r in requests(store, status="pending", incident_id="INC-1")] == [req.request_id]
    assert requests(store, incident_id="INC-2") == [] and requests(store, status="approved") == []


def test_decided_once_and_the_second_person_is_told_who_decided(store):
    req = ask(store)
    first = decide(store, req.request_id, "approved", "ana", "index is safe online")
    assert first.stood and first.request.status == "approved" and first.request.decided_by == "ana"
    assert re.match(r"approved by ana at \d\d:\d\d:\d\d: ", first.message)
    second = decide(store, req.request_id, "denied", "bob", "not during the sale")
    assert not second.stood and second.request.decided_by == "ana"
    at = first.request.decided_at.strftime("%H:%M:%S")
    assert second.message == f"already approved by ana at {at}; your denial was not recorded"
    assert [r["event"] for r in ledger(store, req.request_id)] == ["requested", "approved"]
    assert get(store, req.request_id).comment == "index is safe online"


@pytest.mark.parametrize("decision,who,comment,error", [
    ("approved", "ana", "", "comment"),
    ("approved", "ana", "   ", "comment"),
    ("approved", "", "ok", "who"),
    ("maybe", "ana", "ok", "decision 'maybe'"),
    ("approved", "ana", "x" * 4001, "at most 4000"),
])
def test_a_decision_is_refused_with_what_to_fix(store, decision, who, comment, error):
    req = ask(store)
    with pytest.raises(ApprovalError, match=error):
        decide(store, req.request_id, decision, who, comment)
    assert [r["event"] for r in ledger(store, req.request_id)] == ["requested"]


def test_an_unknown_request_names_the_id_and_how_to_list(store):
    with pytest.raises(NotFound, match=r"apr-nope.*afterfix approvals list"):
        decide(store, "apr-nope", "approved", "ana", "ok")


@pytest.mark.parametrize("kw,error", [({"timeout_s": 0}, "timeout_s"), ({"timeout_s": "soon"}, "timeout_s"),
                                      ({"change": {1, 2}}, "change"), ({"summary": " "}, "summary")])
def test_a_request_is_refused_with_what_to_fix(store, kw, error):
    args = dict(action_id="act-1", verb="create", target="Job/shop/x", change=JOB, summary="do it", agent="a")
    with pytest.raises(ApprovalError, match=error):
        open_request(store, **{**args, **kw})


def test_wait_expires_in_the_agents_clock_and_expiry_is_a_decision(store):
    clock = Clock()
    req = ask(store, timeout_s=300, now=clock)
    done = wait(store, req.request_id, poll_s=60, sleep=clock.sleep, now=clock)
    assert done.status == "expired" and done.decided_by == "reference-agent" and "5 min" in done.comment
    assert sum(clock.slept) == 300  # simulated: the poll loop slept in the agent's clock only
    late = decide(store, req.request_id, "approved", "ana", "sorry, late")
    assert not late.stood and late.message.startswith("already expired at 01:05:00")
    assert late.message.endswith("your approval was not recorded")
    assert [r["event"] for r in ledger(store, req.request_id)] == ["requested", "expired"]


def test_a_person_cannot_approve_after_the_agent_stopped_waiting(store):
    req = ask(store, timeout_s=60, now=lambda: T0)
    done = decide(store, req.request_id, "approved", "ana", "go", now=lambda: T0 + 61)
    assert not done.stood and done.request.status == "expired" and "not recorded" in done.message
    assert [r["event"] for r in ledger(store, req.request_id)] == ["requested", "expired"]
    # the agent, noticing later, finds it expired and writes nothing more
    assert wait(store, req.request_id, sleep=lambda s: None, now=lambda: T0 + 120).status == "expired"
    assert len(ledger(store, req.request_id)) == 2


def test_wait_returns_the_decision_made_while_it_polls(store):
    clock = Clock()
    req = ask(store, now=clock)

    def sleep(s):
        clock.sleep(s)
        if clock.t >= T0 + 120 and get(store, req.request_id).pending:
            decide(store, req.request_id, "denied", "bob", "change freeze", now=clock)

    done = wait(store, req.request_id, poll_s=60, sleep=sleep, now=clock)
    assert (done.status, done.decided_by, done.comment) == ("denied", "bob", "change freeze")
    assert sum(clock.slept) == 120


def test_request_records_the_approval_spans_with_approver_and_reason(store):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    rec = sdk.Recorder(provider, agent_name="reference-agent")
    clock = Clock()

    def sleep(s):
        clock.sleep(s)
        pending = requests(store, status="pending")
        if pending:
            decide(store, pending[0].request_id, "approved", "ana", "index is safe online", now=clock)

    with rec.run(incident_id="INC-1"):
        done = approvals.request(store, action_id="act-7", verb="create", target="Job/shop/x", change=JOB,
                                 summary="create the index", agent="reference-agent", poll_s=30, sleep=sleep,
                                 now=clock, recorder=rec)
    assert done.status == "approved"
    spans = [dict(s.attributes) for s in exporter.get_finished_spans()
             if s.attributes.get("afterfix.span.kind") == "approval"]
    assert [(a["afterfix.approval.status"], a.get("afterfix.approval.approver"), a.get("afterfix.approval.reason"))
            for a in spans] == [("requested", None, "create the index"), ("approved", "ana", "index is safe online")]
    assert all(a["afterfix.approval.action_id"] == "act-7" for a in spans)


def test_two_threads_deciding_at_once_one_stands(any_store):
    store = any_store  # on a local and on a team store
    ids = [ask(store, n).request_id for n in range(25)]
    barrier = threading.Barrier(2)
    results: dict[str, list] = {"approved": [], "denied": []}

    def person(decision, who):
        for rid in ids:
            barrier.wait()
            results[decision].append(decide(store, rid, decision, who, f"{who} says {decision}"))

    threads = [threading.Thread(target=person, args=a) for a in (("approved", "ana"), ("denied", "bob"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, d in zip(results["approved"], results["denied"]):
        assert a.request.request_id == d.request.request_id
        assert a.stood != d.stood, a.request.request_id
        loser = d if a.stood else a
        assert "was not recorded" in loser.message and "already" in loser.message
    counts = store.query("SELECT request_id, count(*) AS n FROM approvals WHERE event <> 'requested' "
                         "GROUP BY request_id").set_index("request_id")["n"].to_dict()
    assert counts == {rid: 1 for rid in ids}


PERSON = r"""
import json, sys, time
from afterfix.store import Store
from afterfix.review.approvals import decide
store, decision, who = Store(sys.argv[1]), sys.argv[2], sys.argv[3]
ids = json.loads(sys.argv[4])
store.query("SELECT count(*) FROM approvals")  # connect before the race
print("ready", flush=True)
start, gap = map(float, sys.stdin.readline().split())
for i, rid in enumerate(ids):
    time.sleep(max(0.0, start + i * gap - time.time()))
    d = decide(store, rid, decision, who, who + " decided")
    print(json.dumps({"id": rid, "stood": d.stood, "message": d.message}), flush=True)
"""


def test_two_processes_deciding_at_once_one_stands(any_store):
    store = any_store  # on a local and on a team store
    ids = [ask(store, n).request_id for n in range(20)]
    people = [subprocess.Popen([sys.executable, "-c", PERSON, store.spec, decision, who, json.dumps(ids)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for decision, who in (("approved", "ana"), ("denied", "bob"))]
    for p in people:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    go = f"{time.time() + 0.5} 0.4\n"
    outs = []
    for p in people:
        p.stdin.write(go)
        p.stdin.flush()
    for p in people:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append({r["id"]: r for r in map(json.loads, out.splitlines())})
    ana, bob = outs
    for rid in ids:
        assert ana[rid]["stood"] != bob[rid]["stood"], rid
        lost = bob[rid] if ana[rid]["stood"] else ana[rid]
        assert "not recorded" in lost["message"]
    rows = store.query("SELECT request_id, event, who FROM approvals WHERE event <> 'requested'").to_dict("records")
    assert sorted(r["request_id"] for r in rows) == sorted(ids)  # one decision each
    for r in rows:
        assert (r["event"], r["who"]) in (("approved", "ana"), ("denied", "bob"))
        assert (ana if r["who"] == "ana" else bob)[r["request_id"]]["stood"]


AGENT = r"""
import json, sys
from afterfix.store import Store
from afterfix import approvals
req = approvals.request(Store(sys.argv[1]), action_id="act-9", verb="create", target="Job/shop/x",
                        change={"kind": "Job"}, summary="create the index", agent="other-process-agent",
                        timeout_s=120, poll_s=0.2)
print(json.dumps(req.to_dict()))
"""


def test_an_agent_in_another_process_waits_for_a_person_here(any_store, capsys):
    store = any_store  # on a local and on a team store
    agent = subprocess.Popen([sys.executable, "-c", AGENT, store.spec], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not requests(store, status="pending"):
            assert agent.poll() is None, agent.stderr.read()
            assert time.monotonic() < deadline, "the agent's request never reached the store"
            time.sleep(0.2)
        [pending] = requests(store, status="pending")
        assert pending.agent_name == "other-process-agent"
        assert main(["approvals", "approve", pending.request_id, "--comment", "go ahead", "--who", "ana",
                     "--store", store.spec]) == 0
        out, err = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
    done = json.loads(out)
    assert (done["status"], done["decided_by"], done["comment"]) == ("approved", "ana", "go ahead"), err


def test_cli_list_approve_deny_and_exit_codes(store, capsys):
    a, b = ask(store, 1), ask(store, 2)
    s = ["--store", str(store.root)]
    assert main(["approvals", "list", *s]) == 0
    out = capsys.readouterr().out
    assert a.request_id in out and b.request_id in out and "pending" in out
    assert main(["approvals", "approve", a.request_id, "--comment", "safe", "--who", "ana", *s]) == 0
    assert "approved by ana" in capsys.readouterr().out
    assert main(["approvals", "deny", a.request_id, "--comment", "no", "--who", "bob", *s]) == 3
    assert "already approved by ana" in capsys.readouterr().err
    assert main(["approvals", "deny", b.request_id, "--comment", "freeze", "--who", "bob", *s]) == 0
    capsys.readouterr()
    assert main(["approvals", "list", *s]) == 0
    assert "no pending approval requests" in capsys.readouterr().out
    assert main(["approvals", "list", "--status", "all", "--format", "json", *s]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["request_id"], r["status"], r["decided_by"]) for r in listed] == \
        [(a.request_id, "approved", "ana"), (b.request_id, "denied", "bob")]
    assert listed[0]["change"] == JOB
    assert main(["approvals", "approve", "apr-nope", "--comment", "x", *s]) == 2
    assert "apr-nope" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["approvals", "approve", b.request_id, *s])  # --comment is required
    assert exit_.value.code == 2


def test_cli_shows_hostile_text_escaped_for_the_terminal(store, capsys):
    open_request(store, action_id="act-1", verb="create", target="Job/shop/x", change={"x": HOSTILE},
                 summary="create \x1b[31mred\x1b[0m " + HOSTILE, agent="a")
    assert main(["approvals", "list", "--store", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[31mred" in out


# ---- the ApprovalQueue widget, in process ---------------------------------------------------------


def test_widget_shows_the_pending_request_escaped_and_approves_with_a_comment(store):
    from afterfix.widgets.approvals import ApprovalQueue

    req = open_request(store, action_id="act-1", verb="create", target="Job/shop/" + HOSTILE,
                       change={"kind": "Job", "note": HOSTILE}, summary="create " + HOSTILE, agent="agent-" + HOSTILE,
                       incident_id="INC-1", timeout_s=900)
    q = ApprovalQueue(store, who="ana", live=False)
    assert q.pick.value == req.request_id and "1 pending" in q.header.value
    shown = q.detail.value
    for fragment in ("<img", "<script", "$x$"):
        assert fragment not in shown
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in shown and "&#36;x&#36;" in shown
    assert "INC-1" in shown and "min" in shown and '"kind": "Job"' not in shown and "&quot;kind&quot;: &quot;Job&quot;" in shown
    assert q.approve.disabled and q.deny.disabled  # no comment yet
    q.comment.value = "   "
    assert q.approve.disabled
    q.comment.value = "index is built concurrently"
    assert not q.approve.disabled and not q.deny.disabled
    q.approve.click()
    assert "approved by ana" in q.result.value and "afterfix-ok" in q.result.value
    assert get(store, req.request_id).status == "approved"
    # The approved request stays picked, shown as decided, until the person picks another.
    assert q.pick.value == req.request_id and q.approve.disabled and q.deny.disabled and q.comment.value == ""
    assert "already decided" in q.approve.tooltip
    assert "Decided: approved</b> by ana" in q.detail.value and "index is built concurrently" in q.detail.value
    assert "<img" not in q.detail.value and "<img" not in q.history.value
    assert q.pick.options[0][0].startswith("approved by ana: create <img") and "0 pending, 1 decided" in q.header.value
    assert "index is built concurrently" in q.history.value


def test_widget_labels_lead_with_what_would_happen_and_the_picker_stays_on_the_decided(store):
    from afterfix.widgets.approvals import LABEL_MAX, ApprovalQueue

    first = ask(store, 0)
    long = open_request(store, action_id="act-9", verb="patch", target="Deployment/shop/payments", change={"x": 1},
                        summary="patch Deployment shop/payments: " + "roll back the image and restore the pool " * 8,
                        agent="reference-agent", incident_id="INC-2", timeout_s=900)
    q = ApprovalQueue(store, who="ana", live=False)
    labels = dict((v, k) for k, v in q.pick.options)
    assert labels[first.request_id].startswith("create Job shop/orders-add-index: CREATE INDEX ON orders(customer_id) · ")
    assert labels[first.request_id].endswith(f"min left · {first.request_id}")
    cut = labels[long.request_id]
    assert len(cut) <= LABEL_MAX and cut.endswith(f"min left · {long.request_id}")
    shown = cut.split(" · ")[0]
    assert shown.endswith("…") and long.summary.startswith(shown[:-1]) and long.summary[len(shown) - 1] == " "  # at a word

    q.pick.value = first.request_id
    q.comment.value = "fine"
    q.approve.click()
    assert q.pick.value == first.request_id and first.request_id in q.result.value
    assert "1 other request waiting: pick one above" in q.detail.value
    q.refresh()  # as the Poller does: still on the decided one
    assert q.pick.value == first.request_id and q.pick.options[0][0].startswith("approved by ana: create Job")
    q.pick.value = long.request_id  # the person moves on: the decided one leaves the picker
    assert [v for _, v in q.pick.options] == [long.request_id]
    assert "If approved:" in q.detail.value and q.approve.disabled and q.approve.tooltip == "write a comment first"


def test_widget_tells_the_second_person_that_someone_decided_first(store):
    from afterfix.widgets.approvals import ApprovalQueue

    req = ask(store)
    q = ApprovalQueue(store, who="bob", live=False)
    decide(store, req.request_id, "approved", "ana", "safe")  # meanwhile, from the shell
    q.comment.value = "not during the sale"
    q.deny.click()
    assert "Someone decided first" in q.result.value
    assert "already approved by ana" in q.result.value and "your denial was not recorded" in q.result.value
    assert [r["event"] for r in ledger(store, req.request_id)] == ["requested", "approved"]
    assert q.pick.value == req.request_id and "Decided: approved</b> by ana" in q.detail.value
    assert "approved" in q.history.value


def test_widget_refreshes_live_when_a_request_arrives(store):
    from afterfix.widgets.approvals import ApprovalQueue

    q = ApprovalQueue(store, who="ana", live=True, interval=0.2)
    try:
        assert q.pick.value is None and q.pick.index == 0 and "No agent is waiting" in q.detail.value
        req = ask(store)
        deadline = time.monotonic() + 30
        while q.pick.value != req.request_id:
            assert time.monotonic() < deadline, q.poller.error
            time.sleep(0.1)
        assert "orders-add-index" in q.detail.value
    finally:
        q.close()
    assert not q.poller.running
