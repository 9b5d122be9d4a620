"""The guard: one analysis per agent action, measured against the store's metric history or a real
Prometheus scraping the Kubernetes API simulator; a failed analysis rolled back once, with an
alert (webhook and row); an inconclusive one left to a person; state only in the ledgers, so a
guard killed with SIGKILL resumes and never rolls anything back twice.

The first part runs the library with a stand-in for the rollback engine (it writes the rows the
engine writes) and a clock the test moves; the second runs `afterfix guard` itself against the
simulator, the real engine and a real Prometheus (tests/metrics/conftest.py's, here scraping this
file's `sim`)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pytest

from metrics.conftest import prometheus  # noqa: F401 - the session's real Prometheus, scraping `sim` below

from afterfix import schema, sdk
from afterfix.ingest.files import ingest_paths
from afterfix.metrics import StoreMetrics
from afterfix.nightshift import scenarios
from afterfix.nightshift.apiserver import ApiServer
from afterfix.nightshift.clock import SimClock
from afterfix.nightshift.cluster import Cluster
from afterfix.sdk import Option, Target
from afterfix.store import Store
from afterfix.undo import paths
from afterfix.undo.guard import Guard
from afterfix.undo.notify import Notifier
from afterfix.undo.policy import load_policy
from afterfix.undo.trace import recording

LATENCY = "afterfix.workload.latency_p95_ms"
_files = itertools.count()


def naive(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc).replace(tzinfo=None)


def spec(name="latency-p95", *, below=300.0, above=None, interval=1, count=3, delay=0, failure_limit=0,
         inconclusive_limit=0, metric=LATENCY, labels=None, **extra) -> dict:
    """An Argo metric on a Deployment's latency: Successful under `below`, Failed at `above` or more
    (default: `below`); between them Inconclusive."""
    out = {"name": name, "interval": interval, "count": count, "initialDelay": delay,
           "successCondition": f"result < {below}", "failureCondition": f"result >= {above if above is not None else below}",
           "failureLimit": failure_limit, "inconclusiveLimit": inconclusive_limit,
           "provider": {"afterfix": {"metric": metric, "labels": labels or {
               "k8s.namespace.name": "{{namespace}}", "k8s.deployment.name": "{{name}}"}}}}
    out.update(extra)
    return out


def record(store, folder: Path, at: float, actions: list[dict]) -> None:
    """Each action ({"id", "name", "namespace"?, "analysis"?, "status"?, "mutating"?, "kind"?,
    "before"?, "after"?, "rv"?}) as an action span at `at`, recorded through the OpenTelemetry SDK
    into an OTLP/JSON file, then ingested."""
    path = Path(folder) / f"trace-{next(_files)}.jsonl"
    provider = sdk.setup("sre-agent", file=path)
    clock = iter(at + 0.01 * i for i in range(10_000))
    rec = sdk.Recorder(provider, agent_name="sre-agent", clock=lambda: next(clock))
    with rec.run(incident_id="INC-1"):
        for a in actions:
            kind = a.get("kind", "Deployment")
            target = Target(a.get("uid", f"uid-{a['name']}"), kind, "apps/v1" if kind == "Deployment" else "v1",
                            a.get("namespace", "shop"), a["name"])
            with rec.action(a.get("verb", "scale"), target, action_id=a["id"], mutating=a.get("mutating", True),
                            patch=a.get("patch", {"spec": {"replicas": 1}})) as act:
                act.before(a.get("before", {"spec": {"replicas": 3}}), a.get("rv", ("10", "11"))[0])
                if a.get("analysis") is not None:
                    text = a["analysis"] if isinstance(a["analysis"], str) else json.dumps(a["analysis"])
                    act.set("afterfix.action.analysis", text)
                act.after(a.get("after", {"spec": {"replicas": 1}}), a.get("rv", ("10", "11"))[1])
                if a.get("status"):
                    act.status(a["status"])
    provider.shutdown()
    summary = ingest_paths(store, [path])
    assert not summary.refused, summary.refused


def points(store, at: float, values: dict[tuple[str, str], float], metric: str = LATENCY, kind: str = "gauge") -> None:
    """One point per (namespace, deployment) at `at` in the store's metric history."""
    rows = []
    for (namespace, name), value in values.items():
        resource = {"k8s.namespace.name": namespace, "k8s.deployment.name": name, "service.name": name}
        series = hashlib.blake2b(json.dumps([metric, resource], sort_keys=True).encode(), digest_size=16).hexdigest()
        rows.append({"name": metric, "kind": kind, "unit": "ms", "time": naive(at), "value": value,
                     "service_name": name, "namespace": namespace, "workload": name, "series_id": series,
                     "attributes": "{}", "resource_attributes": json.dumps(resource), "source": "test",
                     "ingested_at": naive(at)})
    store.append(metrics=pa.Table.from_pylist(rows, schema=schema.METRIC_SCHEMA))


@dataclass
class Result:
    outcome: str
    message: str
    rollback_id: str
    exit_code: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class FakeEngine:
    """Stands in for afterfix.undo.rollback.rollback_action where no cluster is needed: it checks
    that the guard wrote its intent first, writes the engine's two `rollbacks` rows and answers
    `outcome` (rolled_back unless told otherwise)."""

    def __init__(self, outcome: str = "rolled_back", clock=None):
        self.outcome, self.clock = outcome, clock
        self.calls: list[dict] = []

    def __call__(self, store, cluster, action_id, *, who, reason, automatic):
        intents = store.query("SELECT count(*) AS n FROM analyses WHERE action_id = ? AND event = 'rollback' "
                              "AND json_extract_string(detail, '$.step') = 'intent'", [action_id])["n"].iloc[0]
        self.calls.append({"action_id": action_id, "who": who, "reason": reason, "automatic": automatic,
                           "intents": int(intents)})
        rid = f"rb-{uuid.uuid4().hex[:8]}"
        row = {"rollback_id": rid, "action_id": action_id, "time": naive(self.clock()) if self.clock else datetime.utcnow(), "who": who, "reason": reason,
               "automatic": automatic, "target_kind": "Deployment", "target_namespace": "shop"}
        name = store.query("SELECT target_name FROM actions WHERE action_id = ?", [action_id])["target_name"].iloc[0]
        store.append_ledger("rollbacks", [{**row, "outcome": "started", "target_name": name},
                                          {**row, "outcome": self.outcome, "target_name": name,
                                           "message": f"restored {name}"}])
        return Result(self.outcome, f"restored {name}", rid)


# ---- the library, with a clock the test moves and the engine's stand-in ------------------------


class Clock:
    """Moves when the test says, and by 0.1 ms at each reading, as a real clock would between two rows."""

    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        self.t += 1e-4
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock(time.time() - 3600)  # within the lookback, which counts back from the guard's clock


def guard(store, clock, engine=None, **kw) -> Guard:
    kw.setdefault("name", "test:1")
    return Guard(store, StoreMetrics(store), clock=clock, rollback=engine or FakeEngine(clock=clock), cluster=object(),
                 interval_floor_s=1, **kw)


def ledger(store, action_id=None) -> list[dict]:
    where = "WHERE action_id = ?" if action_id else ""
    rows = store.query(f"SELECT * FROM analyses {where} ORDER BY time", [action_id] if action_id else None)
    return rows.to_dict("records")


def events(store, action_id) -> list[tuple]:
    return [(r["event"], r["phase"]) for r in ledger(store, action_id)]


def run_for(g: Guard, clock: Clock, seconds: float, step: float = 1.0) -> None:
    """Tick every `step` seconds of the test's clock, with new points written each second by the caller's
    `feed` (if the guard has one)."""
    end = clock.t + seconds
    while clock.t < end:
        feed = getattr(g, "feed", None)
        if feed:
            feed(clock.t)
        g.tick()
        clock.advance(step)


def test_a_degrading_change_is_rolled_back_once_after_its_intent_and_people_are_told(any_store, tmp_path, clock):
    store = any_store  # on a local and on a team store
    record(store, tmp_path, clock.t, [{"id": "act-slow", "name": "payments", "analysis": spec(failure_limit=1)}])
    engine = FakeEngine(clock=clock)
    g = guard(store, clock, engine)
    g.feed = lambda t: points(store, t, {("shop", "payments"): 950.0})
    run_for(g, clock, 6)
    assert events(store, "act-slow") == [("started", "Running"), ("measurement", "Failed"), ("measurement", "Failed"),
                                         ("outcome", "Failed"), ("rollback", "Failed"), ("rollback", "Failed")]
    rows = ledger(store, "act-slow")
    assert rows[1]["value"] == 950.0 and rows[1]["message"] == 'result 950: failureCondition "result >= 300.0" is true'
    assert json.loads(rows[1]["detail"])["metric"] == "latency-p95"
    assert rows[3]["message"] == "latency-p95: failed (2) > failureLimit (1)"
    assert [json.loads(r["detail"])["step"] for r in rows[4:]] == ["intent", "result"]
    assert rows[4]["time"] <= rows[5]["time"] and {r["guard"] for r in rows} == {"test:1"}
    [call] = engine.calls
    assert call == {"action_id": "act-slow", "who": "afterfix-guard", "automatic": True, "intents": 1,
                    "reason": "analysis latency-p95 failed: latency-p95: failed (2) > failureLimit (1)"}
    [alert] = store.query("SELECT * FROM alerts").to_dict("records")
    assert (alert["severity"], alert["action_id"], alert["analysis_id"]) == ("warning", "act-slow", rows[0]["analysis_id"])
    assert alert["title"] == "rolled back the agent's scale of Deployment shop/payments: its analysis failed"
    assert alert["delivery"] == "no webhook"
    body = json.loads(alert["detail"])
    assert body["done"]["what"] == "rolled_back" and body["target"]["name"] == "payments"
    assert [m["phase"] for m in body["measurements"]] == ["Failed", "Failed"]
    assert body["analysis"]["phase"] == "Failed" and body["analysis"]["source"] == "trace"
    assert body["action"]["action_id"] == "act-slow" and body["action"]["incident_id"] == "INC-1"


def test_a_change_that_helped_is_left_alone(store, tmp_path, clock):
    record(store, tmp_path, clock.t, [{"id": "act-good", "name": "checkout", "analysis": spec(count=3)}])
    engine = FakeEngine(clock=clock)
    g = guard(store, clock, engine)
    g.feed = lambda t: points(store, t, {("shop", "checkout"): 120.0})
    run_for(g, clock, 6)
    assert events(store, "act-good") == [("started", "Running")] + [("measurement", "Successful")] * 3 + \
        [("outcome", "Successful")]
    assert engine.calls == [] and store.query("SELECT * FROM alerts").empty
    assert g.watches == {}


def test_an_inconclusive_change_waits_for_a_person(store, tmp_path, clock):
    record(store, tmp_path, clock.t, [{"id": "act-maybe", "name": "cart",
                                       "analysis": spec(below=200, above=500, count=4)}])
    engine = FakeEngine(clock=clock)
    g = guard(store, clock, engine)
    g.feed = lambda t: points(store, t, {("shop", "cart"): 350.0})
    run_for(g, clock, 4)
    assert events(store, "act-maybe")[-2:] == [("measurement", "Inconclusive"), ("outcome", "Inconclusive")]
    assert engine.calls == []
    [alert] = store.query("SELECT * FROM alerts").to_dict("records")
    assert alert["severity"] == "warning" and "inconclusive, a person decides" in alert["title"]
    assert json.loads(alert["detail"])["done"] == {"what": "nothing", "message": "nothing was done: a person decides"}


def test_no_data_is_an_error_measurement_and_too_many_end_the_analysis(store, tmp_path, clock):
    record(store, tmp_path, clock.t, [{"id": "act-dark", "name": "ghost",
                                       "analysis": spec(count=2, consecutiveErrorLimit=1)}])
    g = guard(store, clock)
    run_for(g, clock, 4)
    assert events(store, "act-dark")[1:] == [("measurement", "Error"), ("measurement", "Error"), ("outcome", "Error")]
    assert ledger(store, "act-dark")[1]["message"].startswith("no data: ")
    assert "could not be analysed" in store.query("SELECT title FROM alerts")["title"].iloc[0]


def test_the_policy_watches_actions_whose_trace_has_no_analysis(store, tmp_path, clock):
    policy = tmp_path / "policy.yaml"
    policy.write_text(json.dumps({"rules": [{"kinds": ["Deployment"], "namespaces": ["shop"],
                                             "metrics": [spec("p95", count=1), spec("p95-again", count=1)]}]}))
    record(store, tmp_path, clock.t, [{"id": "act-plain", "name": "payments"},
                                      {"id": "act-other-ns", "name": "payments", "namespace": "web"},
                                      {"id": "act-own", "name": "payments", "analysis": spec("own", count=1)}])
    g = guard(store, clock, policy=load_policy(policy))
    g.feed = lambda t: points(store, t, {("shop", "payments"): 100.0, ("web", "payments"): 100.0})
    run_for(g, clock, 2)
    plain = ledger(store, "act-plain")
    assert plain[0]["message"] == f"watching scale of Deployment shop/payments with p95, p95-again (policy {policy} line 1)"
    assert sorted(json.loads(r["detail"])["metric"] for r in plain if r["event"] == "measurement") == ["p95", "p95-again"]
    assert plain[-1]["event"] == "outcome" and plain[-1]["phase"] == "Successful"
    assert "own (trace)" in ledger(store, "act-own")[0]["message"]
    assert ledger(store, "act-other-ns") == [] and g.unwatched == {"act-other-ns"}


@pytest.mark.parametrize("analysis, problem", [
    ("{not json", "is not JSON"),
    ({"name": "x", "provider": {"afterfix": {"metric": LATENCY}}}, "successCondition: is missing"),
    (spec(labels={"k8s.deployment.name": "{{nmae}}"}), "is not a template afterfix fills"),
])
def test_an_analysis_the_trace_got_wrong_is_an_error_people_hear_about(store, tmp_path, clock, analysis, problem):
    record(store, tmp_path, clock.t, [{"id": "act-bad", "name": "payments", "analysis": analysis}])
    g = guard(store, clock)
    g.tick()
    started, outcome = ledger(store, "act-bad")
    assert started["event"] == "started" and problem in json.loads(started["detail"])["problem"]
    assert outcome["phase"] == "Error" and outcome["message"].startswith("no analysis can watch it: trace act-bad")
    [alert] = store.query("SELECT * FROM alerts").to_dict("records")
    assert alert["action_id"] == "act-bad" and problem in alert["message"]


def test_a_bad_trace_analysis_falls_back_to_the_policy(store, tmp_path, clock):
    policy = tmp_path / "policy.yaml"
    policy.write_text(json.dumps({"rules": [{"metrics": [spec("from-policy", count=1)]}]}))
    record(store, tmp_path, clock.t, [{"id": "act-bad", "name": "payments", "analysis": "{not json"}])
    g = guard(store, clock, policy=load_policy(policy))
    g.tick()
    started = ledger(store, "act-bad")[0]
    assert "with from-policy (policy" in started["message"] and "the trace's analysis was not used" in started["message"]


def test_which_actions_are_watched(store, tmp_path, clock):
    record(store, tmp_path, clock.t - 25 * 3600, [{"id": "act-old", "name": "a", "analysis": spec()}])
    record(store, tmp_path, clock.t, [
        {"id": "act-read", "name": "b", "analysis": spec(), "mutating": False},
        {"id": "act-waiting", "name": "c", "analysis": spec(), "status": "awaiting_approval"},
        {"id": "act-applied", "name": "d", "analysis": spec()}])
    g = guard(store, clock)
    g.tick()
    assert set(r["action_id"] for r in ledger(store)) == {"act-applied"}
    # A new action reaching the store while the guard runs is picked up.
    clock.advance(2)
    record(store, tmp_path, clock.t, [{"id": "act-new", "name": "e", "analysis": spec()}])
    g.tick()
    assert set(r["action_id"] for r in ledger(store) if r["event"] == "started") == {"act-applied", "act-new"}
    assert Guard(store, StoreMetrics(store), clock=clock, lookback=timedelta(hours=30), interval_floor_s=1).discover(
        clock.t)[0]["action_id"] == "act-old"


def test_an_action_someone_already_rolled_back_is_not_watched(store, tmp_path, clock):
    record(store, tmp_path, clock.t, [{"id": "act-undone", "name": "payments", "analysis": spec()}])
    store.append_ledger("rollbacks", [{"rollback_id": "rb-1", "action_id": "act-undone", "time": naive(clock.t),
                                       "who": "alice", "automatic": False, "outcome": "rolled_back"}])
    guard(store, clock).tick()
    assert ledger(store) == []


def test_automatic_rollbacks_of_one_target_are_capped(store, tmp_path, clock):
    engine = FakeEngine(clock=clock)
    g = guard(store, clock, engine, max_rollbacks=2)
    g.feed = lambda t: points(store, t, {("shop", "payments"): 999.0})
    for i in range(3):
        record(store, tmp_path, clock.t, [{"id": f"act-{i}", "name": "payments", "analysis": spec(count=1)}])
        run_for(g, clock, 3)
    assert [c["action_id"] for c in engine.calls] == ["act-0", "act-1"]
    skipped = ledger(store, "act-2")[-1]
    assert json.loads(skipped["detail"])["step"] == "skipped"
    assert skipped["message"] == ("not rolled back: 2 automatic rollbacks of Deployment shop/payments in the last 24 h "
                                  "reach the cap (--max-rollbacks 2); a person decides")
    alerts = store.query("SELECT * FROM alerts ORDER BY time").to_dict("records")
    assert [a["severity"] for a in alerts] == ["warning", "warning", "critical"]
    assert "is NOT rolled back" in alerts[-1]["title"] and "a person decides" in alerts[-1]["message"]
    # A day later the window has moved on.
    clock.advance(25 * 3600)
    record(store, tmp_path, clock.t, [{"id": "act-3", "name": "payments", "analysis": spec(count=1)}])
    run_for(g, clock, 3)
    assert engine.calls[-1]["action_id"] == "act-3"


def test_rollbacks_that_failed_or_found_nothing_to_do_say_so(store, tmp_path, clock):
    for outcome, severity, words in [("refused", "critical", "is NOT rolled back"),
                                     ("already_rolled_back", "info", "was already undone")]:
        store_ = store
        record(store_, tmp_path, clock.t, [{"id": f"act-{outcome}", "name": "payments", "analysis": spec(count=1)}])
        g = guard(store_, clock, FakeEngine(outcome, clock=clock))
        g.feed = lambda t: points(store_, t, {("shop", "payments"): 999.0})
        run_for(g, clock, 2)
        alert = store_.query("SELECT * FROM alerts WHERE action_id = ?", [f"act-{outcome}"]).iloc[0]
        assert alert["severity"] == severity and words in alert["title"]


def test_an_engine_that_raises_is_a_failed_rollback_not_a_dead_guard(store, tmp_path, clock):
    def broken(*args, **kw):
        raise RuntimeError("boom")

    record(store, tmp_path, clock.t, [{"id": "act-x", "name": "payments", "analysis": spec(count=1)}])
    g = guard(store, clock, broken)
    g.feed = lambda t: points(store, t, {("shop", "payments"): 999.0})
    run_for(g, clock, 2)
    result = json.loads(ledger(store, "act-x")[-1]["detail"])["done"]
    assert result["what"] == "failed" and result["message"] == "the rollback engine failed: RuntimeError: boom"
    assert store.query("SELECT severity FROM alerts")["severity"].tolist() == ["critical"]


def test_the_webhook_gets_the_alert(store, tmp_path, clock):
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        record(store, tmp_path, clock.t, [{"id": "act-slow", "name": "payments", "analysis": spec(count=1)}])
        g = guard(store, clock, notifier=Notifier(store, f"http://127.0.0.1:{server.server_address[1]}/hook"))
        g.feed = lambda t: points(store, t, {("shop", "payments"): 999.0})
        run_for(g, clock, 3)
        [body] = received
        assert body["action_id"] == "act-slow" and body["done"]["what"] == "rolled_back"
        assert body["measurements"][0]["values"] == [999.0] and body["analysis"]["phase"] == "Failed"
        assert store.query("SELECT delivery FROM alerts")["delivery"].iloc[0].startswith("HTTP 204 from http://127.0.0.1:")
    finally:
        server.shutdown()
        server.server_close()


# ---- resuming from the ledgers ------------------------------------------------------------------


def test_a_new_guard_resumes_every_analysis_where_the_rows_end(store, tmp_path, clock):
    record(store, tmp_path, clock.t, [{"id": "act-slow", "name": "payments", "analysis": spec(count=6, failure_limit=3)}])
    engine = FakeEngine(clock=clock)
    first = guard(store, clock, engine)
    first.feed = lambda t: points(store, t, {("shop", "payments"): 999.0})
    run_for(first, clock, 3)  # two measurements (the first a tick after the action), then the process is gone
    assert [e for e, _ in events(store, "act-slow")] == ["started", "measurement", "measurement"]
    clock.advance(5)
    second = guard(store, clock, engine, name="test:2")
    second.feed = first.feed
    [watch] = second.resume()
    assert [m.phases for m in watch.metrics] == [["Failed", "Failed"]] and watch.stage == "running"
    run_for(second, clock, 3)
    rows = ledger(store, "act-slow")
    assert [r["event"] for r in rows].count("started") == 1
    assert [(r["event"], r["guard"]) for r in rows[3:5]] == [("resumed", "test:2"), ("measurement", "test:2")]
    assert [r["event"] for r in rows].count("measurement") == 4 and len(engine.calls) == 1


def crash_after_intent(g: Guard, clock: Clock) -> None:
    """What a guard leaves when killed right after committing an outcome and its intent."""
    points(g.store, clock.t, {("shop", "payments"): 999.0})
    rows = g.discover(clock.t)
    clock.advance(1)
    rows += g.measure(g._due(clock.t), clock.t)
    g.store.append_ledger("analyses", rows + g.judge(clock.t))
    clock.advance(1)


def test_a_guard_killed_after_its_intent_does_not_roll_back_twice(any_store, tmp_path, clock):
    """What a guard killed during the engine's call leaves: the outcome and intent, and the engine's
    rows. The next guard takes the engine's outcome from the ledger and does not call it again."""
    store = any_store  # on a local and on a team store
    record(store, tmp_path, clock.t, [{"id": "act-slow", "name": "payments", "analysis": spec(count=1)}])
    engine = FakeEngine(clock=clock)
    crash_after_intent(guard(store, clock, engine), clock)
    engine(store, None, "act-slow", who="afterfix-guard", reason="r", automatic=True)  # then SIGKILL
    assert store.query("SELECT alert_id FROM alerts").empty
    clock.advance(1)
    guard(store, clock, engine, name="test:2").run(once=True)
    assert len(engine.calls) == 1
    assert [e for e, _ in events(store, "act-slow")] == ["started", "measurement", "outcome", "rollback", "resumed",
                                                          "rollback"]
    result = json.loads(ledger(store, "act-slow")[-1]["detail"])
    assert result["step"] == "result" and result["done"]["rollback"]["from"] == "rollbacks ledger"
    assert result["done"]["what"] == "rolled_back"
    assert store.query("SELECT count(*) AS n FROM alerts")["n"].iloc[0] == 1
    # Once alerted, the analysis is finished: a third guard has nothing to resume.
    assert guard(store, clock, engine, name="test:3").resume() == []


def test_a_guard_killed_before_the_engine_wrote_anything_asks_it_once(store, tmp_path, clock):
    record(store, tmp_path, clock.t, [{"id": "act-slow", "name": "payments", "analysis": spec(count=1)}])
    engine = FakeEngine(clock=clock)
    crash_after_intent(guard(store, clock, engine), clock)  # then SIGKILL, before the engine was called
    guard(store, clock, engine, name="test:2").run(once=True)
    assert [(c["action_id"], c["intents"]) for c in engine.calls] == [("act-slow", 1)]
    clock.advance(1)
    guard(store, clock, engine, name="test:3").run(once=True)
    assert len(engine.calls) == 1 and store.query("SELECT count(*) AS n FROM alerts")["n"].iloc[0] == 1


def test_a_clean_stop_is_recorded_on_every_analysis_in_progress(store, tmp_path, clock):
    record(store, tmp_path, clock.t, [{"id": "act-a", "name": "a", "analysis": spec(count=5)},
                                      {"id": "act-b", "name": "b", "analysis": spec(count=5)}])
    g = guard(store, clock)
    g.tick()
    assert g.stopped("SIGTERM") == 2
    for action in ("act-a", "act-b"):
        last = ledger(store, action)[-1]
        assert last["event"] == "stopped" and last["message"] == (
            "guard test:1 stopped (SIGTERM); the analysis resumes when a guard starts")


# ---- measuring ----------------------------------------------------------------------------------


def test_one_query_per_tick_gives_what_store_metrics_gives_one_by_one(store, clock):
    workloads = {("shop", f"w{i}"): float(100 + i) for i in range(30)}
    points(store, clock.t - 400, {("shop", "w0"): 5.0})  # older than the lookback: not seen
    points(store, clock.t - 30, workloads)
    points(store, clock.t - 10, {("shop", "w1"): 777.0})  # the newest point wins
    points(store, clock.t - 10, {("web", "w2"): 1.0})  # another namespace, same name
    g = guard(store, clock)
    from afterfix.undo.analysis import parse_analysis

    specs = [parse_analysis(spec(labels=labels)).bind({"namespace": "shop", "name": f"w{i}", "kind": "Deployment"})
             for i in range(32) for labels in ({"k8s.namespace.name": "{{namespace}}", "k8s.deployment.name": "{{name}}"},
                                               {"k8s.deployment.name": "{{name}}"})]
    batched = g._store_values(specs, clock.t)
    one_by_one = [sorted(StoreMetrics(store).latest(s.metric, s.labels, at=naive(clock.t))["value"].tolist())
                  for s in specs]
    assert [sorted(v) for v in batched] == one_by_one
    assert batched[2] == [777.0] and sorted(batched[5]) == [1.0, 102.0] and batched[62] == []


def test_a_histogram_is_an_error_measurement(store, clock):
    points(store, clock.t - 5, {("shop", "payments"): None}, kind="histogram")
    from afterfix.undo.analysis import parse_analysis

    s = parse_analysis(spec()).bind({"namespace": "shop", "name": "payments", "kind": "Deployment"})
    [error] = guard(store, clock)._store_values([s], clock.t)
    assert "is a histogram; an analysis reads gauges and sums" in str(error)


def test_the_interval_floor_holds_whatever_the_spec_asks(store, tmp_path, clock):
    record(store, tmp_path, clock.t, [{"id": "act-fast", "name": "payments",
                                       "analysis": spec(interval="100ms", count=50)}])
    g = Guard(store, StoreMetrics(store), clock=clock, interval_floor_s=5, rollback=FakeEngine(clock=clock),
              cluster=object())
    g.feed = lambda t: points(store, t, {("shop", "payments"): 100.0})
    run_for(g, clock, 20, step=0.5)
    times = [r["time"] for r in ledger(store, "act-fast") if r["event"] == "measurement"]
    assert len(times) == 4 and all(b - a >= timedelta(seconds=5) for a, b in zip(times, times[1:]))


# ---- `afterfix guard` against the simulator, the real engine and a real Prometheus ----------------

AGENT_MANAGER = "afterfix-agent"
API = {"Deployment": "apps/v1", "ConfigMap": "v1"}
REPLICAS = "spec.replicas"


@pytest.fixture(scope="session")
def sim():
    """(cluster, server): orders, comfortable at 4 replicas, and search, overloaded at 1 (at any hour
    of the simulated day), served over HTTP on a clock that starts now, so the agent's actions fall
    within the guard's lookback. The tests change it: each leaves it as it found it."""
    cluster = Cluster(SimClock(time.time()), seed=7)
    scenarios.deployment(cluster, "shop", "orders", replicas=4, base_rps=120.0)
    scenarios.deployment(cluster, "shop", "search", replicas=1, base_rps=80.0)
    cluster.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "search-flags", "namespace": "shop"},
                    "data": {"ranking": "v1"}}, field_manager="helm")
    server = ApiServer(cluster).start()
    yield cluster, server
    server.stop()


@pytest.fixture
def world(sim, tmp_path):
    cluster, server = sim
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    store = Store(tmp_path / "store")
    store.create()
    yield cluster, kubeconfig, store
    store.close()


def latency(cluster, name: str) -> float:
    return cluster.workloads.metrics("shop", name)["latency_p95_ms"]


def agent_change(cluster, store, kind: str, name: str, patch: dict, touched: list[str], analysis, verb="scale") -> str:
    """The agent's change as the reference agent makes it (read, patch with its own field manager),
    recorded as a decision and an action trace with its analysis."""
    old = cluster.get(API[kind], kind, "shop", name)
    new = cluster.patch(API[kind], kind, "shop", name, patch, patch_type="strategic", field_manager=AGENT_MANAGER)

    def state(obj):
        return {p: (None if (v := paths.get(obj, paths.parse(p, obj))) is paths.MISSING else v) for p in touched}

    with recording(store, "reference-agent", clock=time.time) as rec, rec.run(incident_id="inc-guard"):
        decision = rec.decision(f"fix shop/{name}?", [Option("fix", f"{verb} {kind} shop/{name}")], "fix", "it is slow")
        with rec.action(verb, Target(old["metadata"]["uid"], kind, API[kind], "shop", name), decision_id=decision,
                        patch=patch, field_manager=AGENT_MANAGER, analysis=analysis) as act:
            act.before(state(old), old["metadata"]["resourceVersion"])
            act.after(state(new), new["metadata"]["resourceVersion"])
    return act.action_id


def latency_spec(count=3, failure_limit=0, delay="2s") -> dict:
    return spec(count=count, failure_limit=failure_limit, below=200, delay=delay, interval="1s")


class Webhook:
    """A local webhook receiving the guard's alerts."""

    def __init__(self):
        self.bodies: list[dict] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


class GuardProcess:
    """`afterfix guard` in its own process, its stderr in a file."""

    def __init__(self, store, kubeconfig, prometheus_url, tmp_path, *extra):
        self.log = tmp_path / f"guard-{next(_files)}.log"
        self.argv = [sys.executable, "-m", "afterfix", "guard", "--store", str(store.root), "--kubeconfig",
                     str(kubeconfig), "--prometheus", prometheus_url, "--interval-floor", "1", *extra]
        self.proc = None

    def start(self) -> "GuardProcess":
        self.out = open(self.log, "a")
        self.proc = subprocess.Popen(self.argv, stdout=self.out, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return self

    def text(self) -> str:
        return self.log.read_text()

    def stop(self, sig=signal.SIGTERM, timeout=60) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        self.out.close()
        return code

    def wait_for(self, condition, what: str, timeout: float = 120.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = condition()
            if got:
                return got
            if self.proc.poll() is not None:
                raise AssertionError(f"the guard exited ({self.proc.returncode}) before {what}:\n{self.text()[-4000:]}")
            time.sleep(0.05)
        raise AssertionError(f"never {what} in {timeout:g} s; the guard's log:\n{self.text()[-4000:]}")


def count(store, sql: str, params=None) -> int:
    return int(store.query(sql, params).iloc[0, 0])


def test_prometheus_instant_query_answers_a_vector_and_a_scalar(sim, prometheus):
    from afterfix.metrics import PrometheusMetrics

    cluster, _ = sim
    prom = PrometheusMetrics(prometheus)
    frame = prom.instant_query('afterfix_workload_replicas{namespace="shop"}')
    assert sorted(zip(frame["k8s.deployment.name"], frame["value"])) == [("orders", 4.0), ("search", 1.0)]
    [scalar] = prom.instant_query("scalar(count(afterfix_workload_replicas))")["value"]
    assert scalar == 2.0
    assert prom.instant_query('afterfix_workload_replicas{deployment="nowhere"}').empty


def test_the_guard_reverts_what_hurt_keeps_what_helped_and_asks_about_the_unclear(world, prometheus, webhook, tmp_path):
    cluster, kubeconfig, store = world
    before = latency(cluster, "orders")
    hurt = agent_change(cluster, store, "Deployment", "orders", {"spec": {"replicas": 1}}, [REPLICAS], latency_spec())
    assert latency(cluster, "orders") > 5 * before  # one pod for four pods' traffic
    helped = agent_change(cluster, store, "Deployment", "search", {"spec": {"replicas": 4}}, [REPLICAS], latency_spec())
    assert latency(cluster, "search") < 200
    unclear = agent_change(
        cluster, store, "ConfigMap", "search-flags", {"data": {"ranking": "v2"}}, ["data.ranking"], verb="patch",
        analysis={"name": "search-latency", "successCondition": "result[0] < 20", "failureCondition": "result[0] > 5000",
                  "initialDelay": "2s",
                  "provider": {"prometheus": {"query": 'afterfix_workload_latency_p95_ms{namespace="{{namespace}}",'
                                                       'deployment="search"}'}}})
    guard = GuardProcess(store, kubeconfig, prometheus, tmp_path, "--webhook", webhook.url).start()
    try:
        guard.wait_for(lambda: len(webhook.bodies) >= 2 and count(
            store, "SELECT count(*) FROM analyses WHERE event = 'outcome'") >= 3, "three outcomes and two alerts")
        assert guard.stop() == 0
    finally:
        if guard.proc.poll() is None:
            guard.proc.kill()
    outcomes = dict(store.query("SELECT action_id, phase FROM analyses WHERE event = 'outcome'").values.tolist())
    assert outcomes == {hurt: "Failed", helped: "Successful", unclear: "Inconclusive"}, guard.text()

    # What hurt is undone, through the engine: the rollbacks ledger, and the object itself.
    assert cluster.get("apps/v1", "Deployment", "shop", "orders")["spec"]["replicas"] == 4
    assert latency(cluster, "orders") == pytest.approx(before)
    ledger_rows = store.query("SELECT action_id, outcome, who, automatic FROM rollbacks ORDER BY time").values.tolist()
    assert ledger_rows == [[hurt, "started", "afterfix-guard", True], [hurt, "rolled_back", "afterfix-guard", True]]
    # What helped is left alone, and so is the unclear one, which waits for a person.
    assert cluster.get("apps/v1", "Deployment", "shop", "search")["spec"]["replicas"] == 4
    assert cluster.get("v1", "ConfigMap", "shop", "search-flags")["data"]["ranking"] == "v2"
    # The rollback's own action (afterfix's) is not watched in turn.
    rollback_actions = store.query("SELECT action_id FROM actions WHERE verb = 'rollback'")["action_id"].tolist()
    assert len(rollback_actions) == 1
    assert count(store, "SELECT count(*) FROM analyses WHERE action_id = ?", rollback_actions) == 0

    # Every measurement is a row with its value; each action was started once.
    rows = store.query("SELECT * FROM analyses ORDER BY time").to_dict("records")
    assert sorted(r["action_id"] for r in rows if r["event"] == "started") == sorted([hurt, helped, unclear])
    measured = [r for r in rows if r["event"] == "measurement" and r["action_id"] == hurt]
    assert measured and measured[0]["phase"] == "Failed" and measured[0]["value"] > 1000
    assert [r["phase"] for r in rows if r["event"] == "measurement" and r["action_id"] == helped] == ["Successful"] * 3

    # People hear about the rollback and the unclear one (not about what helped), by webhook and row.
    by_action = {b["action_id"]: b for b in webhook.bodies}
    assert set(by_action) == {hurt, unclear}
    body = by_action[hurt]
    assert body["severity"] == "warning" and body["source"] == "guard"
    assert body["title"] == "rolled back the agent's scale of Deployment shop/orders: its analysis failed"
    assert body["action"]["action_id"] == hurt and body["action"]["incident_id"] == "inc-guard"
    assert body["target"] == {"kind": "Deployment", "namespace": "shop", "name": "orders",
                              "uid": cluster.get("apps/v1", "Deployment", "shop", "orders")["metadata"]["uid"],
                              "api_version": "apps/v1"}
    assert body["analysis"]["phase"] == "Failed" and body["analysis"]["source"] == "trace"
    assert body["analysis"]["metrics"][0]["provider"]["afterfix"]["labels"] == {
        "k8s.namespace.name": "shop", "k8s.deployment.name": "orders"}
    assert body["measurements"][-1]["phase"] == "Failed" and body["measurements"][-1]["values"][0] > 1000
    assert body["done"]["what"] == "rolled_back" and body["done"]["rollback"]["outcome"] == "rolled_back"
    assert body["done"]["message"].startswith("rolled back: restored")
    ask = by_action[unclear]
    assert ask["severity"] == "warning" and "inconclusive, a person decides" in ask["title"]
    assert ask["done"]["what"] == "nothing" and ask["measurements"][0]["phase"] == "Inconclusive"
    alerts = store.query("SELECT action_id, delivery, detail FROM alerts").to_dict("records")
    assert {a["action_id"] for a in alerts} == {hurt, unclear}
    assert all(a["delivery"].startswith("HTTP 200 from http://127.0.0.1:") for a in alerts)
    assert json.loads(next(a["detail"] for a in alerts if a["action_id"] == hurt)) == body

    # The stop was clean and recorded; nothing was in progress.
    assert "stopped cleanly (SIGTERM); 0 analyses in progress" in guard.text()
    cluster.patch("apps/v1", "Deployment", "shop", "search", {"spec": {"replicas": 1}}, patch_type="strategic",
                  field_manager="test")  # as the fixture found it


def test_a_guard_killed_mid_analysis_resumes_and_never_rolls_back_twice(world, prometheus, tmp_path):
    cluster, kubeconfig, store = world
    action = agent_change(cluster, store, "Deployment", "orders", {"spec": {"replicas": 1}}, [REPLICAS],
                          latency_spec(count=8, failure_limit=4, delay="1s"))
    guard = GuardProcess(store, kubeconfig, prometheus, tmp_path).start()
    measurements = f"SELECT count(*) FROM analyses WHERE action_id = '{action}' AND event = 'measurement'"
    try:
        guard.wait_for(lambda: count(store, measurements) >= 2, "two measurements")
        guard.proc.kill()  # SIGKILL, mid-analysis
        guard.proc.wait(timeout=30)
        taken = count(store, measurements)
        assert 2 <= taken < 5

        # A second guard resumes; it is killed the moment its rollback intent is committed, while
        # the engine may be writing (or may have written) the rollback.
        guard = GuardProcess(store, kubeconfig, prometheus, tmp_path).start()
        guard.wait_for(lambda: count(store, f"SELECT count(*) FROM analyses WHERE action_id = '{action}' AND "
                                            "event = 'rollback'"), "a rollback intent")
        guard.proc.kill()
        guard.proc.wait(timeout=30)

        # A third guard finishes what is left: the rollback (once) and the alert.
        guard = GuardProcess(store, kubeconfig, prometheus, tmp_path).start()
        guard.wait_for(lambda: count(store, f"SELECT count(*) FROM alerts WHERE action_id = '{action}'"), "an alert")
        assert guard.stop() == 0
    finally:
        if guard.proc.poll() is None:
            guard.proc.kill()
    rows = store.query("SELECT * FROM analyses WHERE action_id = ? ORDER BY time", [action]).to_dict("records")
    kinds = [r["event"] for r in rows]
    assert kinds.count("started") == 1 and kinds.count("resumed") == 2 and kinds.count("outcome") == 1
    assert kinds.count("measurement") == 5  # the fifth failed measurement ends it (failureLimit 4)
    assert [r["phase"] for r in rows if r["event"] == "measurement"] == ["Failed"] * 5
    first_resume = kinds.index("resumed")
    assert kinds[first_resume + 1] == "measurement" and first_resume == 1 + taken  # measurements continued
    assert len({r["guard"] for r in rows}) == 3
    # The engine writes `started` just before its one write to the cluster: one such row, one write.
    # Killed between that write and its outcome row, the engine answers already_rolled_back when
    # asked again; killed before it, rolled_back.
    rollbacks = store.query("SELECT outcome FROM rollbacks WHERE action_id = ? ORDER BY time", [action])["outcome"].tolist()
    assert rollbacks in (["started", "rolled_back"], ["started", "already_rolled_back"]), rollbacks
    assert cluster.get("apps/v1", "Deployment", "shop", "orders")["spec"]["replicas"] == 4
    assert count(store, f"SELECT count(*) FROM alerts WHERE action_id = '{action}'") == 1


def test_sigterm_stops_the_guard_cleanly_and_records_it(world, prometheus, tmp_path):
    cluster, kubeconfig, store = world
    action = agent_change(cluster, store, "Deployment", "orders", {"spec": {"template": {"metadata": {
        "annotations": {"example.com/touched": "yes"}}}}}, ["spec.template.metadata.annotations.example.com/touched"],
        latency_spec(count=1000, delay="0s"), verb="annotate")
    guard = GuardProcess(store, kubeconfig, prometheus, tmp_path).start()
    try:
        guard.wait_for(lambda: count(store, f"SELECT count(*) FROM analyses WHERE action_id = '{action}' AND "
                                            "event = 'measurement'"), "a measurement")
        assert guard.stop(signal.SIGTERM, timeout=30) == 0
    finally:
        if guard.proc.poll() is None:
            guard.proc.kill()
    last = store.query("SELECT * FROM analyses WHERE action_id = ? ORDER BY time DESC LIMIT 1", [action]).iloc[0]
    assert last["event"] == "stopped" and last["phase"] == "Running"
    assert "stopped (SIGTERM); the analysis resumes when a guard starts" in last["message"]
    assert "stopped cleanly (SIGTERM); 1 analyses in progress resume when a guard starts again" in guard.text()
    assert store.query("SELECT * FROM rollbacks").empty and store.query("SELECT * FROM alerts").empty


def test_once_makes_one_pass_and_bad_options_say_what_to_fix(world, tmp_path):
    cluster, kubeconfig, store = world
    record(store, tmp_path, time.time() - 5, [{"id": "act-once", "name": "orders", "analysis": spec(count=3)}])
    points(store, time.time(), {("shop", "orders"): 100.0})
    base = [sys.executable, "-m", "afterfix", "guard", "--store", str(store.root), "--kubeconfig", str(kubeconfig)]
    done = subprocess.run(base + ["--metrics", "store", "--once"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert events(store, "act-once") == [("started", "Running"), ("measurement", "Successful")]
    assert "watching scale of Deployment shop/orders with latency-p95 (trace)" in done.stderr
    for extra, message in [(["--webhook", "ftp://x/y"], "--webhook: 'ftp://x' is not an http(s) URL"),
                           (["--policy", str(tmp_path / "none.yaml")], "none.yaml: no such file"),
                           (["--prometheus", "localhost:9090"], "give the server's http(s) URL"),
                           (["--lookback", "soon"], "'soon' is not a duration")]:
        bad = subprocess.run(base + extra + ["--once"], capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and message in bad.stderr, (extra, bad.stderr)
