"""The simulator's object store and controllers through its Python API: object semantics, watches,
garbage collection, status subresource, events, persistence, and the `serve_cluster` entry."""

from __future__ import annotations

import json
import threading

import pytest
from kubernetes import client, config
from kubernetes.client import ApiException

from afterfix.nightshift.apiserver import ApiServer, serve_cluster
from afterfix.nightshift.clock import SimClock
from afterfix.nightshift.cluster import ApiError, Cluster


def deployment(name="web", replicas=2, image="web:1"):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": image}]}}}}


@pytest.fixture
def cluster():
    return Cluster(SimClock(), seed=1)


def test_watch_from_before_a_restart_is_410(tmp_path):
    state = tmp_path / "cluster.json"
    first = Cluster(SimClock(), state_file=state)
    first.create(deployment())
    old = int(first.resource_version) - 3
    first.save()
    again = Cluster(SimClock(), state_file=state)
    with pytest.raises(ApiError) as e:
        again.changes_since(old, "Deployment")
    assert (e.value.status, e.value.reason) == (410, "Expired")
    assert e.value.to_status()["code"] == 410 and e.value.to_status()["kind"] == "Status"
    assert again.changes_since(int(again.resource_version), "Deployment") == []
    again.patch("apps/v1", "Deployment", "default", "web", {"spec": {"replicas": 3}})
    assert [t for t, _ in again.changes_since(int(first.resource_version), "Deployment")][0] == "MODIFIED"


# ---- object semantics ------------------------------------------------------------------------------------
def test_generation_counts_spec_changes_only(cluster):
    d = cluster.create(deployment())
    assert d["metadata"]["generation"] == 1
    d = cluster.patch("apps/v1", "Deployment", "default", "web", {"metadata": {"labels": {"x": "y"}}})
    assert d["metadata"]["generation"] == 1
    d = cluster.patch("apps/v1", "Deployment", "default", "web", {"spec": {"replicas": 3}})
    assert d["metadata"]["generation"] == 2 and d["status"]["observedGeneration"] == 2


def test_writes_cannot_change_system_fields_or_status(cluster):
    d = cluster.create(deployment())
    body = json.loads(json.dumps(d))
    body["metadata"]["creationTimestamp"] = "1999-01-01T00:00:00Z"
    body["status"] = {"replicas": 99}
    body["spec"]["replicas"] = 3
    out = cluster.replace(body)
    assert out["metadata"]["creationTimestamp"] == d["metadata"]["creationTimestamp"]
    assert out["metadata"]["uid"] == d["metadata"]["uid"]
    assert out["status"]["replicas"] == 3
    body = cluster.get("apps/v1", "Deployment", "default", "web")
    body["metadata"]["uid"] = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(ApiError) as e:
        cluster.replace(body)
    assert (e.value.code, e.value.reason) == (409, "Conflict") and "UID" in e.value.message


def test_status_subresource_changes_status_only(cluster):
    cluster.create({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                    "metadata": {"name": "web", "namespace": "default"},
                    "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                             "minReplicas": 1, "maxReplicas": 3}})
    out = cluster.patch("autoscaling/v2", "HorizontalPodAutoscaler", "default", "web",
                        {"spec": {"maxReplicas": 9}, "status": {"desiredReplicas": 2, "currentReplicas": 1}},
                        subresource="status")
    assert out["spec"]["maxReplicas"] == 3 and out["status"]["desiredReplicas"] == 2
    out = cluster.patch("autoscaling/v2", "HorizontalPodAutoscaler", "default", "web",
                        {"spec": {"maxReplicas": 9}, "status": {"desiredReplicas": 7}})
    assert out["spec"]["maxReplicas"] == 9 and out["status"]["desiredReplicas"] == 2


def test_generate_name_and_invalid_names(cluster):
    cm = cluster.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "flags-",
                                                                                 "namespace": "default"}})
    assert cm["metadata"]["name"].startswith("flags-") and len(cm["metadata"]["name"]) == 11
    with pytest.raises(ApiError) as e:
        cluster.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}})
    assert e.value.code == 422 and e.value.details["causes"][0]["field"] == "metadata.name"
    with pytest.raises(ApiError) as e:
        cluster.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "n"}, "data": {"k": 1}})
    assert e.value.code == 422 and e.value.details["causes"][0]["field"] == "data"


def test_deleting_a_deployment_collects_its_replicasets_and_pods(cluster):
    cluster.create(deployment())
    cluster.create(deployment("api"))
    cluster.delete("apps/v1", "Deployment", "default", "web")
    assert {rs["metadata"]["name"].split("-")[0] for rs in cluster.list("apps/v1", "ReplicaSet")} == {"api"}
    assert {p["metadata"]["labels"]["app"] for p in cluster.list("v1", "Pod")} == {"api"}


def test_deleting_a_namespace_deletes_what_is_in_it(cluster):
    cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    cluster.create(dict(deployment(), metadata={"name": "web", "namespace": "shop"}))
    cluster.delete("v1", "Namespace", None, "shop")
    assert cluster.list("apps/v1", "Deployment") == [] and cluster.list("v1", "Pod") == []


def test_deleted_pod_is_replaced_by_its_replicaset(cluster):
    cluster.create(deployment())
    pods = cluster.list("v1", "Pod", "default")
    gone = pods[0]["metadata"]["name"]
    out = cluster.delete("v1", "Pod", "default", gone)
    assert out["kind"] == "Pod" and out["metadata"]["name"] == gone
    names = {p["metadata"]["name"] for p in cluster.list("v1", "Pod", "default")}
    assert len(names) == 2 and gone not in names


def test_a_bare_pod_runs_and_is_not_replaced(cluster):
    pod = cluster.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "debug", "namespace": "default"},
                          "spec": {"containers": [{"name": "sh", "image": "busybox:1.36"}]}})
    assert pod["status"]["phase"] == "Running"
    assert pod["status"]["containerStatuses"][0]["image"] == "busybox:1.36"
    cluster.delete("v1", "Pod", "default", "debug")
    assert cluster.list("v1", "Pod", "default") == []


def test_hpa_overrides_manual_scaling_of_its_target(cluster):
    cluster.create(deployment())
    cluster.workloads.configure("default", "web", base_rps=300, diurnal_amplitude=0, noise=0)
    cluster.create({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                    "metadata": {"name": "web", "namespace": "default"},
                    "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                             "minReplicas": 3, "maxReplicas": 5}})
    cluster.tick(60)
    assert cluster.get("apps/v1", "Deployment", "default", "web")["spec"]["replicas"] == 5
    for manual in (2, 8):  # a person (or an agent) scales by hand; the HPA puts it back
        cluster.patch("apps/v1", "Deployment", "default", "web", {"spec": {"replicas": manual}})
        cluster.tick(60)
        assert cluster.get("apps/v1", "Deployment", "default", "web")["spec"]["replicas"] == 5


def test_events_aggregate_repeats(cluster):
    d = cluster.create(deployment())
    for _ in range(3):
        cluster.record_event(d, "Warning", "BackOff", "Back-off restarting failed container", "kubelet")
    (event,) = cluster.list("v1", "Event", "default", field_selector="reason=BackOff")
    assert event["count"] == 3 and event["involvedObject"]["uid"] == d["metadata"]["uid"]
    assert event["type"] == "Warning" and event["source"]["component"] == "kubelet"


def test_state_file_is_written_atomically_and_reloads(tmp_path):
    state = tmp_path / "demo" / "cluster.json"
    c = Cluster(SimClock(), state_file=state, seed=3, autosave_interval=0)
    c.create(deployment())
    c.tick(120)
    assert state.exists() and not (tmp_path / "demo" / "cluster.json.tmp").exists()
    again = Cluster(SimClock(), state_file=state)
    assert again.resource_version == c.resource_version
    assert again.list("v1", "Pod") == c.list("v1", "Pod")
    assert again.new_uid() == c.new_uid()  # the seeded sequence continues where it stopped


def test_autosave_is_debounced_and_save_always_writes(tmp_path):
    state = tmp_path / "cluster.json"
    c = Cluster(SimClock(), state_file=state, autosave_interval=3600)
    c.create(deployment())  # the first write saves at once
    first = json.loads(state.read_text())["resourceVersion"]
    c.patch("apps/v1", "Deployment", "default", "web", {"spec": {"replicas": 3}})
    assert json.loads(state.read_text())["resourceVersion"] == first  # within the interval: not yet
    c.save()
    assert json.loads(state.read_text())["resourceVersion"] == int(c.resource_version) > first


def test_unreadable_state_file_says_what_to_do(tmp_path):
    state = tmp_path / "cluster.json"
    state.write_text("{not json")
    with pytest.raises(Exception, match="delete the file"):
        Cluster(SimClock(), state_file=state)


def test_concurrent_conditional_updates_one_wins(tmp_path):
    cluster = Cluster(SimClock())
    cluster.create(deployment())
    with ApiServer(cluster) as server:
        config.load_kube_config(config_file=str(server.write_kubeconfig(tmp_path / "kc")))
        apps = client.AppsV1Api()
        rv = apps.read_namespaced_deployment("web", "default").metadata.resource_version
        outcomes: list[int] = []

        def writer(n):
            try:
                apps.patch_namespaced_deployment("web", "default", {"metadata": {"resourceVersion": rv},
                                                                    "spec": {"replicas": n}})
                outcomes.append(200)
            except ApiException as e:
                outcomes.append(e.status)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(3, 11)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == [200] + [409] * 7
        # Unconditional writes from many threads all land, each with its own resourceVersion.
        versions: list[str] = []
        lock = threading.Lock()

        def labeler(n):
            out = apps.patch_namespaced_deployment("web", "default", {"metadata": {"labels": {f"l{n}": "x"}}})
            with lock:
                versions.append(out.metadata.resource_version)

        threads = [threading.Thread(target=labeler, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(versions)) == 8
        labels = apps.read_namespaced_deployment("web", "default").metadata.labels
        assert all(labels[f"l{n}"] == "x" for n in range(8))


def test_busy_port_names_the_fix():
    from afterfix._exceptions import ConfigError

    with ApiServer(Cluster(SimClock())) as first:
        with pytest.raises(ConfigError, match=f"127.0.0.1:{first.port}.*--port"):
            ApiServer(Cluster(SimClock()), port=first.port).start()


def test_serve_cluster_writes_kubeconfig_advances_time_and_saves_on_stop(tmp_path, free_port):
    kubeconfig, state = tmp_path / "kubeconfig", tmp_path / "cluster.json"
    ready, stop = threading.Event(), threading.Event()
    runner = threading.Thread(target=serve_cluster, kwargs=dict(
        port=free_port, kubeconfig=kubeconfig, state_file=state, realtime_factor=600.0, ready=ready, stop=stop))
    runner.start()
    try:
        assert ready.wait(10)
        config.load_kube_config(config_file=str(kubeconfig))
        apps = client.AppsV1Api()
        created = apps.create_namespaced_deployment("default", deployment())
        assert client.Configuration.get_default_copy().host == f"http://127.0.0.1:{free_port}"
    finally:
        stop.set()
        runner.join(10)
    assert not runner.is_alive()
    saved = json.loads(state.read_text())
    assert any(o["metadata"]["uid"] == created.metadata.uid for o in saved["objects"])
    reloaded = Cluster(SimClock(), state_file=state)
    assert reloaded.get("apps/v1", "Deployment", "default", "web")["metadata"]["uid"] == created.metadata.uid


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_serve_cluster_process_saves_state_on_signal(tmp_path, free_port, sig):
    import signal
    import subprocess
    import sys
    import time

    kubeconfig, state = tmp_path / "kubeconfig", tmp_path / "cluster.json"
    code = ("from afterfix.nightshift.apiserver import serve_cluster\n"
            f"serve_cluster(port={free_port}, kubeconfig={str(kubeconfig)!r}, state_file={str(state)!r})\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while not kubeconfig.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert kubeconfig.exists(), proc.stdout.read() if proc.poll() is not None else "no kubeconfig written"
        config.load_kube_config(config_file=str(kubeconfig))
        created = client.CoreV1Api().create_namespaced_config_map(
            "default", {"metadata": {"name": "left-by-the-agent"}, "data": {"k": "v"}})
        proc.send_signal(getattr(signal, sig))
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    saved = {o["metadata"]["name"]: o for o in json.loads(state.read_text())["objects"]}
    assert saved["left-by-the-agent"]["metadata"]["uid"] == created.metadata.uid
