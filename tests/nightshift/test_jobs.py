"""Jobs in the simulator (batch/v1 through the official client: uid, resourceVersion, dryRun,
409/404/422, a pod that runs for the Job's simulated duration and a Complete condition), and the
reference agent's database migration: asked through the approvals ledger, created once approved."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from afterfix import sdk
from afterfix.nightshift import scenarios as sc
from afterfix.nightshift.agent import FIELD_MANAGER, Agent
from afterfix.nightshift.apiserver import ApiServer
from afterfix.nightshift.clock import SimClock
from afterfix.nightshift.cluster import Cluster
from afterfix.nightshift.controllers import JOB_DURATION, JOB_DURATION_S
from afterfix.review import approvals

JOB = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "orders-migrate"},
       "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
           {"name": "migrate", "image": "postgres:16", "command": ["psql", "-c", "CREATE INDEX ..."]}]}}}}


@pytest.fixture
def served(tmp_path):
    cluster = Cluster(SimClock(sc.SETUP_AT), seed=1)
    cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    server = ApiServer(cluster).start()
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    api = k8s_config.new_client_from_config(config_file=str(kubeconfig))
    yield cluster, k8s.BatchV1Api(api), k8s.CoreV1Api(api), server
    api.close()
    server.stop()


def job_of(cluster, name="orders-migrate"):
    return cluster.get("batch/v1", "Job", "shop", name)


def test_a_job_through_the_official_client(served):
    cluster, batch, core, _ = served
    rv = cluster.resource_version
    dry = batch.create_namespaced_job("shop", JOB, dry_run="All", field_manager=FIELD_MANAGER)
    assert dry.metadata.uid and cluster.resource_version == rv  # dryRun writes nothing
    assert batch.list_namespaced_job("shop").items == []
    made = batch.create_namespaced_job("shop", JOB, field_manager=FIELD_MANAGER)
    meta = made.metadata
    assert meta.uid and meta.resource_version and meta.creation_timestamp
    assert [m.manager for m in meta.managed_fields if not m.subresource] == [FIELD_MANAGER]  # status: the controller
    assert made.spec.completions == 1 and made.spec.parallelism == 1 and made.spec.backoff_limit == 0
    assert made.spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": meta.uid}
    with pytest.raises(ApiException) as e:
        batch.create_namespaced_job("shop", JOB)
    assert (e.value.status, json.loads(e.value.body)["reason"]) == (409, "AlreadyExists")
    with pytest.raises(ApiException) as e:
        batch.read_namespaced_job("nope", "shop")
    assert e.value.status == 404
    [listed] = batch.list_namespaced_job("shop").items
    assert listed.metadata.uid == meta.uid
    # The controller started one pod for it, labelled with the Job's uid and name.
    [pod] = core.list_namespaced_pod("shop", label_selector=f"batch.kubernetes.io/job-name=orders-migrate").items
    assert pod.metadata.owner_references[0].uid == meta.uid and pod.spec.restart_policy == "Never"
    status = batch.read_namespaced_job_status("orders-migrate", "shop").status
    assert status.active == 1 and status.succeeded is None and not status.conditions


def test_the_job_completes_after_its_simulated_duration(served):
    cluster, batch, core, _ = served
    batch.create_namespaced_job("shop", {**JOB, "metadata": {"name": "orders-migrate",
                                                             "annotations": {JOB_DURATION: "300"}}})
    cluster.tick(285)
    assert not job_of(cluster)["status"].get("succeeded")
    cluster.tick(30)
    job = batch.read_namespaced_job("orders-migrate", "shop")
    assert job.status.succeeded == 1 and not job.status.active and job.status.completion_time
    assert {c.type: c.status for c in job.status.conditions} == {"SuccessCriteriaMet": "True", "Complete": "True"}
    [pod] = core.list_namespaced_pod("shop").items
    assert pod.status.phase == "Succeeded"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0
    reasons = {e.reason for e in core.list_namespaced_event("shop").items}
    assert {"SuccessfulCreate", "Completed"} <= reasons
    rv = job.metadata.resource_version
    cluster.tick(600)  # done is done: no new pod, no more writes
    assert job_of(cluster)["metadata"]["resourceVersion"] == rv and len(core.list_namespaced_pod("shop").items) == 1


def test_default_duration_and_state_survive_a_restart(served, tmp_path):
    cluster, batch, _, _ = served
    batch.create_namespaced_job("shop", JOB)
    cluster.state_file = tmp_path / "state.json"
    cluster.save()
    again = Cluster(state_file=tmp_path / "state.json")
    again.tick(JOB_DURATION_S + 15)
    assert job_of(again)["status"]["succeeded"] == 1


@pytest.mark.parametrize("change,field", [
    ({"spec": {"template": {"spec": {"restartPolicy": "Always", "containers": JOB["spec"]["template"]["spec"]["containers"]}}}},
     "spec.template.spec.restartPolicy"),
    ({"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": []}}}}, "spec.template.spec.containers"),
])
def test_an_invalid_job_is_refused_naming_the_field(served, change, field):
    _, batch, _, _ = served
    with pytest.raises(ApiException) as e:
        batch.create_namespaced_job("shop", {**JOB, **change})
    body = json.loads(e.value.body)
    assert e.value.status == 422 and field in [c["field"] for c in body["details"]["causes"]]


def test_the_pod_template_is_immutable_and_delete_takes_the_pod(served):
    cluster, batch, core, _ = served
    batch.create_namespaced_job("shop", JOB)
    with pytest.raises(ApiException) as e:
        batch.patch_namespaced_job("orders-migrate", "shop", {"spec": {"template": {"spec": {"containers": [
            {"name": "migrate", "image": "postgres:17"}]}}}})
    assert e.value.status == 422 and "immutable" in json.loads(e.value.body)["message"]
    batch.patch_namespaced_job("orders-migrate", "shop", {"metadata": {"labels": {"team": "orders"}}})
    batch.delete_namespaced_job("orders-migrate", "shop")
    assert core.list_namespaced_pod("shop").items == []


def test_discovery_lists_jobs_with_their_status_subresource(served):
    _, _, _, server = served
    import urllib.request

    with urllib.request.urlopen(f"{server.url}/apis/batch/v1") as resp:
        names = {r["name"] for r in json.load(resp)["resources"]}
    assert {"jobs", "jobs/status"} <= names


# ---- the agent's migration ----------------------------------------------------------------------


def db_world(cluster: Cluster) -> None:
    """The db_migration scenario at its slowdown: orders is slow on a missing index."""
    sc.DB_MIGRATION.setup(cluster)
    cluster.tick(sc.NIGHT_START - cluster.clock.now(), step=60)
    for _, _, fn in sc.DB_MIGRATION.events:
        fn(cluster)
    cluster.tick(300, step=60)


@pytest.fixture
def migration(tmp_path, store):
    clock = SimClock(sc.SETUP_AT)
    cluster = Cluster(clock, seed=2)
    db_world(cluster)
    server = ApiServer(cluster).start()
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def run(person=None, **kw):
        """Handle the incident; `person(clock_now)` is called each time the agent waits."""
        def wait(seconds):
            cluster.tick(seconds)
            if person is not None:
                person(clock.now)
        rec = sdk.Recorder(provider, agent_name="reference-agent", clock=clock.now)
        agent = Agent(kubeconfig=str(kubeconfig), metrics_url=f"{server.url}/metrics", recorder=rec, trust_level=2,
                      wait=wait, now=clock.now, llm_tokens=False, **kw)
        try:
            return agent.handle("INC-db", sc.ORDERS, "latency_p95_ms", 420, 300,
                                db_stats=sc.DB_MIGRATION.context["db_stats"])
        finally:
            agent.close()

    yield cluster, run, exporter, store
    server.stop()


def spans(exporter, kind):
    return [dict(s.attributes) for s in exporter.get_finished_spans() if s.attributes.get("afterfix.span.kind") == kind]


def decider(store, decision, who="ana", comment="index is built concurrently, safe now"):
    def person(now):
        for req in approvals.requests(store, status="pending"):
            approvals.decide(store, req.request_id, decision, who, comment, now=now)
    return person


def test_approved_migration_creates_the_job_after_a_dry_run(migration):
    cluster, run, exporter, store = migration
    out = run(decider(store, "approved"), store=store)
    assert out.error is None and out.action_status == "applied"
    [job] = cluster.list("batch/v1", "Job", "shop")
    assert job["metadata"]["name"].startswith("orders-migrate-")
    assert "CREATE INDEX CONCURRENTLY" in json.dumps(job["spec"]["template"])
    assert [m["manager"] for m in job["metadata"]["managedFields"] if not m.get("subresource")] == [FIELD_MANAGER]
    [act] = spans(exporter, "action")
    assert act["afterfix.action.status"] == "applied" and act["afterfix.action.dry_run"] is True
    after = json.loads(act["afterfix.action.after"])
    assert after["metadata.uid"] == job["metadata"]["uid"] == act["afterfix.target.uid"]
    # the create's resourceVersion; the controller's status writes have moved the object on since
    assert int(act["afterfix.action.resource_version.after"]) <= int(job["metadata"]["resourceVersion"])
    assert [(a["afterfix.approval.status"], a.get("afterfix.approval.approver")) for a in spans(exporter, "approval")] \
        == [("requested", None), ("approved", "ana")]
    [req] = approvals.requests(store, status="all")
    assert (req.status, req.decided_by, req.action_id, req.incident_id) == \
        ("approved", "ana", act["afterfix.action.id"], "INC-db")
    assert req.change["kind"] == "Job" and "CREATE INDEX" in req.summary
    [incident] = spans(exporter, "incident")
    assert incident["afterfix.incident.status"] == "mitigated"
    cluster.tick(JOB_DURATION_S + 15)
    assert cluster.list("batch/v1", "Job", "shop")[0]["status"]["succeeded"] == 1


def test_denied_migration_creates_nothing(migration):
    cluster, run, exporter, store = migration
    out = run(decider(store, "denied", who="bob", comment="not during the sale"), store=store)
    assert out.action_status == "denied" and cluster.list("batch/v1", "Job", "shop") == []
    [req] = approvals.requests(store, status="all")
    assert [(a["afterfix.approval.status"], a.get("afterfix.approval.reason")) for a in spans(exporter, "approval")] \
        == [("requested", req.summary), ("denied", "not during the sale")]


def test_nobody_decides_the_request_expires_in_the_agents_clock(migration):
    cluster, run, exporter, store = migration
    started = cluster.clock.now()
    out = run(store=store, approval_timeout_s=600)
    assert out.action_status == "awaiting_approval" and cluster.list("batch/v1", "Job", "shop") == []
    assert cluster.clock.now() - started >= 600  # the wait passed in simulated time
    assert [a["afterfix.approval.status"] for a in spans(exporter, "approval")] == ["requested", "expired"]
    [req] = approvals.requests(store, status="expired")
    assert req.decided_by == "reference-agent"


def test_a_job_that_already_exists_fails_the_action_without_overwriting(migration):
    cluster, run, exporter, store = migration
    name = None

    def person(now):
        nonlocal name
        for req in approvals.requests(store, status="pending"):
            name = req.target.split("/")[-1]
            cluster.create({**JOB, "metadata": {"name": name, "namespace": "shop"}}, field_manager="someone")
            approvals.decide(store, req.request_id, "approved", "ana", "go", now=now)

    out = run(person, store=store)
    assert out.action_status == "failed"
    [act] = spans(exporter, "action")
    assert act["error.type"].startswith("409")
    assert [m["manager"] for m in job_of(cluster, name)["metadata"]["managedFields"] if not m.get("subresource")] \
        == ["someone"]


def test_an_approver_callable_still_answers_without_the_store(migration):
    cluster, run, exporter, store = migration
    asked = []
    out = run(approver=lambda req: asked.append(req) or "approved")
    assert out.action_status == "applied" and len(cluster.list("batch/v1", "Job", "shop")) == 1
    assert asked and asked[0]["target"].startswith("Job/shop/orders-migrate")
    assert approvals.requests(store) == []  # the callable answered: nothing went to the ledger


# ---- the waiting agent in a background process ---------------------------------------------------


AGENT = r"""
import json, sys
from afterfix.nightshift.runbooks import run_migration_agent
from afterfix.store import Store
out = run_migration_agent(Store(sys.argv[1]), sys.argv[2], timeout_s=120, poll_s=0.2, incident_id="INC-live")
print(json.dumps({"status": out.action_status, "error": out.error}))
"""


def test_run_migration_agent_waits_in_another_process_then_creates_the_job(tmp_path, store):
    cluster = Cluster(SimClock(sc.SETUP_AT), seed=4)
    db_world(cluster)
    with ApiServer(cluster) as server:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        agent = subprocess.Popen([sys.executable, "-c", AGENT, str(store.root), str(kubeconfig)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 90
            while not approvals.requests(store, status="pending"):
                assert agent.poll() is None, agent.stderr.read()
                assert time.monotonic() < deadline, "no approval request reached the store"
                time.sleep(0.2)
            [req] = approvals.requests(store, status="pending")
            assert req.incident_id == "INC-live" and req.target.startswith("Job/shop/orders-migrate")
            assert cluster.list("batch/v1", "Job", "shop") == []  # nothing before the approval
            assert approvals.decide(store, req.request_id, "approved", "ana", "go").stood
            out, err = agent.communicate(timeout=90)
        finally:
            if agent.poll() is None:
                agent.kill()
        assert json.loads(out.splitlines()[-1]) == {"status": "applied", "error": None}, err
        [job] = cluster.list("batch/v1", "Job", "shop")
        cluster.tick(JOB_DURATION_S + 15)
        assert cluster.get("batch/v1", "Job", "shop", job["metadata"]["name"])["status"]["succeeded"] == 1
    actions = store.query("SELECT status, target_name FROM actions WHERE incident_id = 'INC-live'").to_dict("records")
    assert actions == [{"status": "applied", "target_name": job["metadata"]["name"]}]
    approved = store.query("SELECT json_extract_string(attributes, '$.\"afterfix.approval.approver\"') AS who "
                           "FROM spans WHERE afterfix_kind = 'approval' AND incident_id = 'INC-live'")
    assert "ana" in approved["who"].tolist()
