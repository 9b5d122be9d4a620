"""The official kubernetes client against the API simulator: every verb and semantic the product
relies on, over real HTTP."""

from __future__ import annotations

import copy

import pytest
from kubernetes import client, config
from kubernetes.client import ApiException

from afterfix.nightshift.apiserver import ApiServer
from afterfix.nightshift.clock import SimClock
from afterfix.nightshift.cluster import Cluster

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


def deployment(name="checkout", image="shop/checkout:1.0", replicas=2, **spec):
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "app", "image": image,
                                                       "env": [{"name": "MODE", "value": "a"}],
                                                       "resources": {"requests": {"cpu": "250m"}}}]}},
                 **spec},
    }


class Api:
    """One simulator, served over HTTP, with the official client's API objects bound to it."""

    def __init__(self, tmp_path, state_file=None):
        self.cluster = Cluster(SimClock(), state_file=state_file, seed=7)
        self.server = ApiServer(self.cluster).start()
        kubeconfig = self.server.write_kubeconfig(tmp_path / "kubeconfig")
        config.load_kube_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api()
        self.apps = client.AppsV1Api()
        self.hpa = client.AutoscalingV2Api()

    def stop(self):
        self.server.stop()


@pytest.fixture
def api(tmp_path):
    a = Api(tmp_path)
    yield a
    a.stop()


def rs_of(api, name="checkout"):
    items = api.apps.list_namespaced_replica_set("default", label_selector=f"app={name}").items
    return {rs.metadata.name: rs for rs in items}


def test_sim_history_endpoint(api):
    import urllib.error
    import urllib.request

    api.apps.create_namespaced_deployment("default", deployment())
    api.cluster.tick(600)
    url = f"{api.server.url}/sim/history?namespace=default&deployment=checkout"
    body = __import__("json").loads(urllib.request.urlopen(url, timeout=5).read())
    assert len(body["samples"]) == 11 and body["samples"][-1]["replicas"] == 2
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{api.server.url}/sim/history?namespace=default", timeout=5)
    assert e.value.code == 400


def test_discovery_and_version(api):
    assert client.VersionApi().get_code().git_version.startswith("v1.")
    groups = {g.name for g in client.ApisApi().get_api_versions().groups}
    assert {"apps", "autoscaling"} <= groups
    resources = {r.name for r in api.apps.get_api_resources().resources}
    assert {"deployments", "deployments/scale", "replicasets"} <= resources
    assert "pods" in {r.name for r in api.core.get_api_resources().resources}


def test_create_get_list_replace_delete_configmap(api):
    created = api.core.create_namespaced_config_map(
        "default", {"metadata": {"name": "flags", "labels": {"team": "shop"}}, "data": {"feature.x": "false"}})
    assert created.metadata.uid and created.metadata.resource_version
    got = api.core.read_namespaced_config_map("flags", "default")
    assert (got.metadata.uid, got.data) == (created.metadata.uid, {"feature.x": "false"})
    assert [c.metadata.name for c in api.core.list_namespaced_config_map("default", label_selector="team=shop").items] == ["flags"]
    assert api.core.list_namespaced_config_map("default", label_selector="team!=shop").items == []
    got.data["feature.x"] = "true"
    replaced = api.core.replace_namespaced_config_map("flags", "default", got)
    assert replaced.data["feature.x"] == "true"
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    api.core.delete_namespaced_config_map("flags", "default")
    with pytest.raises(ApiException) as e:
        api.core.read_namespaced_config_map("flags", "default")
    assert e.value.status == 404


def test_secrets_take_string_data_and_keep_it_encoded(api):
    import base64

    s = api.core.create_namespaced_secret("default", {"metadata": {"name": "db"}, "stringData": {"password": "hunter2"}})
    assert s.type == "Opaque" and s.string_data is None
    assert base64.b64decode(s.data["password"]) == b"hunter2"
    s = api.core.patch_namespaced_secret("db", "default", {"stringData": {"user": "app"}})
    assert set(s.data) == {"password", "user"}
    with pytest.raises(ApiException) as e:
        api.core.create_namespaced_secret("default", {"metadata": {"name": "bad"}, "data": {"k": "not base64!"}})
    assert e.value.status == 422


def test_every_write_changes_resource_version_and_noop_does_not(api):
    d = api.apps.create_namespaced_deployment("default", deployment())
    seen = {d.metadata.resource_version}
    for replicas in (3, 4, 2):
        d = api.apps.patch_namespaced_deployment("checkout", "default", {"spec": {"replicas": replicas}})
        assert d.metadata.resource_version not in seen
        seen.add(d.metadata.resource_version)
    again = api.apps.replace_namespaced_deployment("checkout", "default", api.apps.read_namespaced_deployment("checkout", "default"))
    assert again.metadata.resource_version == d.metadata.resource_version  # a no-op write is not a write


@pytest.mark.parametrize("write", ["replace", "merge", "strategic", "json", "scale", "delete"])
def test_stale_resource_version_is_409_conflict(api, write):
    old = api.apps.create_namespaced_deployment("default", deployment())
    stale = old.metadata.resource_version
    api.apps.patch_namespaced_deployment("checkout", "default", {"metadata": {"labels": {"touched": "yes"}}})
    before = api.apps.read_namespaced_deployment("checkout", "default")
    with pytest.raises(ApiException) as e:
        if write == "replace":
            body = copy.deepcopy(old)
            body.spec.replicas = 5
            api.apps.replace_namespaced_deployment("checkout", "default", body)
        elif write in ("merge", "strategic"):
            api.apps.patch_namespaced_deployment(
                "checkout", "default", {"metadata": {"resourceVersion": stale}, "spec": {"replicas": 5}},
                _content_type=MERGE if write == "merge" else STRATEGIC)
        elif write == "json":
            api.apps.patch_namespaced_deployment("checkout", "default", [
                {"op": "replace", "path": "/metadata/resourceVersion", "value": stale},
                {"op": "replace", "path": "/spec/replicas", "value": 5}])
        elif write == "scale":
            api.apps.replace_namespaced_deployment_scale(
                "checkout", "default", {"apiVersion": "autoscaling/v1", "kind": "Scale",
                                        "metadata": {"name": "checkout", "resourceVersion": stale},
                                        "spec": {"replicas": 5}})
        else:
            api.apps.delete_namespaced_deployment(
                "checkout", "default", body=client.V1DeleteOptions(preconditions={"resourceVersion": stale}))
    assert e.value.status == 409
    status = __import__("json").loads(e.value.body)
    assert (status["kind"], status["reason"], status["code"]) == ("Status", "Conflict", 409)
    after = api.apps.read_namespaced_deployment("checkout", "default")
    assert after.metadata.resource_version == before.metadata.resource_version
    assert after.spec.replicas == 2


@pytest.mark.parametrize("call,status,reason", [
    (lambda a: a.apps.read_namespaced_deployment("missing", "default"), 404, "NotFound"),
    (lambda a: a.core.read_namespace("missing"), 404, "NotFound"),
    (lambda a: a.apps.create_namespaced_deployment("nowhere", deployment()), 404, "NotFound"),
    (lambda a: a.apps.create_namespaced_deployment("default", deployment()), 409, "AlreadyExists"),
    (lambda a: a.apps.patch_namespaced_deployment("checkout", "default", {"spec": {"replicas": -1}}), 422, "Invalid"),
    (lambda a: a.apps.patch_namespaced_deployment("checkout", "default", {"spec": {"selector": {"matchLabels": {"app": "x"}}}}),
     422, "Invalid"),
    (lambda a: a.hpa.create_namespaced_horizontal_pod_autoscaler("default", {
        "metadata": {"name": "bad"}, "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout"},
                                             "minReplicas": 5, "maxReplicas": 2}}), 422, "Invalid"),
    (lambda a: a.apps.patch_namespaced_deployment("checkout", "default", {"spec": {"replicas": 3}}, dry_run="Some"),
     400, "BadRequest"),
    (lambda a: a.apps.patch_namespaced_deployment("checkout", "default", [{"op": "test", "path": "/spec/replicas", "value": 9}]),
     422, "Invalid"),
])
def test_errors_are_status_objects(api, call, status, reason):
    api.apps.create_namespaced_deployment("default", deployment())
    with pytest.raises(ApiException) as e:
        call(api)
    body = __import__("json").loads(e.value.body)
    assert e.value.status == status
    assert body["kind"] == "Status" and body["status"] == "Failure"
    assert (body["reason"], body["code"]) == (reason, status)
    assert body["message"]


def test_merge_and_strategic_patches_differ_on_lists(api):
    api.apps.create_namespaced_deployment("default", deployment())
    # Strategic merge (the client's default for a dict body) merges containers and env by name.
    d = api.apps.patch_namespaced_deployment("checkout", "default", {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "env": [{"name": "EXTRA", "value": "1"}]}]}}}})
    container = d.spec.template.spec.containers[0]
    assert container.image == "shop/checkout:1.0"
    assert [e.name for e in container.env] == ["MODE", "EXTRA"]
    # $patch: delete removes one item by its merge key.
    d = api.apps.patch_namespaced_deployment("checkout", "default", {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "env": [{"name": "MODE", "$patch": "delete"}]}]}}}})
    assert [e.name for e in d.spec.template.spec.containers[0].env] == ["EXTRA"]
    # JSON merge patch replaces the whole list, and null deletes a key.
    d = api.apps.patch_namespaced_deployment("checkout", "default", {
        "metadata": {"labels": {"app": None, "tier": "web"}},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "shop/checkout:2.0"}]}}}},
        _content_type=MERGE)
    assert d.metadata.labels == {"tier": "web"}
    assert d.spec.template.spec.containers[0].env is None
    assert d.spec.template.spec.containers[0].image == "shop/checkout:2.0"


@pytest.mark.parametrize("verb", ["create", "replace", "merge", "strategic", "scale", "delete"])
def test_dry_run_all_validates_and_persists_nothing(api, verb):
    api.apps.create_namespaced_deployment("default", deployment())
    before = api.apps.read_namespaced_deployment("checkout", "default")
    rv = api.apps.list_namespaced_deployment("default").metadata.resource_version
    if verb == "create":
        out = api.apps.create_namespaced_deployment("default", deployment("cart"), dry_run="All")
        assert out.metadata.name == "cart" and out.metadata.uid
        with pytest.raises(ApiException) as e:
            api.apps.create_namespaced_deployment("default", deployment("cart", replicas=-3), dry_run="All")
        assert e.value.status == 422  # dry run still validates
    elif verb == "replace":
        body = copy.deepcopy(before)
        body.spec.replicas = 7
        assert api.apps.replace_namespaced_deployment("checkout", "default", body, dry_run="All").spec.replicas == 7
    elif verb in ("merge", "strategic"):
        out = api.apps.patch_namespaced_deployment("checkout", "default", {"spec": {"replicas": 7}}, dry_run="All",
                                                   _content_type=MERGE if verb == "merge" else STRATEGIC)
        assert out.spec.replicas == 7 and out.metadata.generation == before.metadata.generation + 1
    elif verb == "scale":
        out = api.apps.patch_namespaced_deployment_scale("checkout", "default", {"spec": {"replicas": 7}}, dry_run="All")
        assert out.spec.replicas == 7
    else:
        api.apps.delete_namespaced_deployment("checkout", "default", dry_run="All")
    after = api.apps.read_namespaced_deployment("checkout", "default")
    assert after.metadata.resource_version == before.metadata.resource_version
    assert after.spec.replicas == 2
    assert api.apps.list_namespaced_deployment("default").metadata.resource_version == rv
    assert [d.metadata.name for d in api.apps.list_namespaced_deployment("default").items] == ["checkout"]
    assert len(api.core.list_namespaced_pod("default", label_selector="app=checkout").items) == 2


def test_managed_fields_per_field_manager(api):
    api.apps.create_namespaced_deployment("default", deployment(), field_manager="deployer")
    api.apps.patch_namespaced_deployment("checkout", "default", {"spec": {"replicas": 4}}, field_manager="sre-agent")
    api.apps.patch_namespaced_deployment("checkout", "default", {"metadata": {"annotations": {"note": "x"}}})
    d = api.apps.read_namespaced_deployment("checkout", "default")
    entries = {(m.manager, m.operation, m.subresource): m for m in d.metadata.managed_fields}
    agent = entries[("sre-agent", "Update", None)]
    assert agent.fields_type == "FieldsV1" and agent.api_version == "apps/v1" and agent.time
    assert agent.fields_v1 == {"f:spec": {"f:replicas": {}}}
    deployer = entries[("deployer", "Update", None)].fields_v1
    assert "f:replicas" not in deployer["f:spec"]  # ownership moved to the agent
    assert 'k:{"name":"app"}' in deployer["f:spec"]["f:template"]["f:spec"]["f:containers"]
    # Without fieldManager the API server names the manager after the client's user agent.
    assert any(m == "OpenAPI-Generator" for m, _, _ in entries)
    assert ("kube-controller-manager", "Update", "status") in entries


def test_template_change_creates_replicaset_revision_and_rollback_reuses_it(api):
    api.apps.create_namespaced_deployment("default", deployment())
    first = rs_of(api)
    assert len(first) == 1
    (rs1,) = first.values()
    assert rs1.metadata.annotations["deployment.kubernetes.io/revision"] == "1"
    assert rs1.metadata.owner_references[0].kind == "Deployment"
    d = api.apps.patch_namespaced_deployment("checkout", "default", {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "shop/checkout:1.1"}]}}}})
    assert d.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    sets = rs_of(api)
    rs2 = next(rs for name, rs in sets.items() if name != rs1.metadata.name)
    assert rs2.metadata.name.startswith("checkout-")
    assert (rs2.spec.replicas, sets[rs1.metadata.name].spec.replicas) == (2, 0)
    assert rs2.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    # Rolling back = putting the old template back: the old ReplicaSet returns with revision 3.
    old_template = client.ApiClient().sanitize_for_serialization(rs1.spec.template)
    del old_template["metadata"]["labels"]["pod-template-hash"]
    d = api.apps.patch_namespaced_deployment("checkout", "default", {"spec": {"template": old_template}}, _content_type=MERGE)
    assert d.metadata.annotations["deployment.kubernetes.io/revision"] == "3"
    sets = rs_of(api)
    assert set(sets) == {rs1.metadata.name, rs2.metadata.name}
    back = sets[rs1.metadata.name]
    assert back.metadata.uid == rs1.metadata.uid
    assert back.metadata.annotations["deployment.kubernetes.io/revision"] == "3"
    assert back.spec.replicas == 2 and sets[rs2.metadata.name].spec.replicas == 0
    pods = api.core.list_namespaced_pod("default", label_selector="app=checkout").items
    assert {p.spec.containers[0].image for p in pods} == {"shop/checkout:1.0"}
    assert {p.metadata.owner_references[0].name for p in pods} == {rs1.metadata.name}


def test_restart_annotation_rolls_pods_and_history_limit_is_honoured(api):
    api.apps.create_namespaced_deployment("default", deployment(revisionHistoryLimit=2))
    for i in range(5):
        api.apps.patch_namespaced_deployment("checkout", "default", {"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": f"2026-11-26T23:0{i}:00Z"}}}}})
    sets = rs_of(api)
    revisions = sorted(int(rs.metadata.annotations["deployment.kubernetes.io/revision"]) for rs in sets.values())
    assert revisions == [4, 5, 6]  # the current one and revisionHistoryLimit=2 old ones
    d = api.apps.read_namespaced_deployment("checkout", "default")
    assert d.metadata.annotations["deployment.kubernetes.io/revision"] == "6"
    pods = api.core.list_namespaced_pod("default", label_selector="app=checkout").items
    current = next(rs for rs in sets.values() if rs.metadata.annotations["deployment.kubernetes.io/revision"] == "6")
    assert len(pods) == 2 and {p.metadata.owner_references[0].uid for p in pods} == {current.metadata.uid}


def test_paused_deployment_does_not_roll(api):
    api.apps.create_namespaced_deployment("default", deployment())
    api.apps.patch_namespaced_deployment("checkout", "default", {"spec": {"paused": True}})
    rs_before = set(rs_of(api))
    api.apps.patch_namespaced_deployment("checkout", "default", {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "shop/checkout:9"}]}}}})
    assert set(rs_of(api)) == rs_before
    api.apps.patch_namespaced_deployment_scale("checkout", "default", {"spec": {"replicas": 4}})
    pods = api.core.list_namespaced_pod("default", label_selector="app=checkout").items
    assert len(pods) == 4 and {p.spec.containers[0].image for p in pods} == {"shop/checkout:1.0"}
    api.apps.patch_namespaced_deployment("checkout", "default", {"spec": {"paused": False}})
    assert len(rs_of(api)) == 2
    pods = api.core.list_namespaced_pod("default", label_selector="app=checkout").items
    assert len(pods) == 4 and {p.spec.containers[0].image for p in pods} == {"shop/checkout:9"}


@pytest.mark.parametrize("replicas", [0, 1, 5, 3])
def test_pods_follow_replicas_through_scale_subresource(api, replicas):
    api.apps.create_namespaced_deployment("default", deployment())
    scale = api.apps.read_namespaced_deployment_scale("checkout", "default")
    assert (scale.spec.replicas, scale.status.selector) == (2, "app=checkout")
    out = api.apps.patch_namespaced_deployment_scale("checkout", "default", {"spec": {"replicas": replicas}},
                                                     field_manager="sre-agent")
    assert out.spec.replicas == replicas
    pods = api.core.list_namespaced_pod("default", label_selector="app=checkout").items
    assert len(pods) == replicas
    assert all(p.status.phase == "Running" and p.spec.containers[0].image == "shop/checkout:1.0" for p in pods)
    assert all(len(p.metadata.name) == len(p.metadata.owner_references[0].name) + 6 for p in pods)
    d = api.apps.read_namespaced_deployment("checkout", "default")
    assert d.spec.replicas == replicas and (d.status.ready_replicas or 0) == replicas
    assert d.status.observed_generation == d.metadata.generation
    managers = {(m.manager, m.subresource) for m in d.metadata.managed_fields}
    assert ("sre-agent", "scale") in managers
    reasons = {e.reason for e in api.core.list_namespaced_event("default").items}
    assert "ScalingReplicaSet" in reasons
    assert ("Killing" in reasons) == (replicas < 2)  # scaling down stops containers


def test_hpa_scales_within_max_and_reports_limit(api):
    api.apps.create_namespaced_deployment("default", deployment(replicas=2))
    api.cluster.workloads.configure("default", "checkout", base_rps=300, cpu_per_request=5, diurnal_amplitude=0, noise=0)
    api.hpa.create_namespaced_horizontal_pod_autoscaler("default", {
        "metadata": {"name": "checkout"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout"},
                 "minReplicas": 2, "maxReplicas": 4,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                                               "target": {"type": "Utilization", "averageUtilization": 60}}}]}})
    api.cluster.tick(300)
    h = api.hpa.read_namespaced_horizontal_pod_autoscaler("checkout", "default")
    assert h.status.current_replicas == 4 and h.status.desired_replicas == 4
    conditions = {c.type: c for c in h.status.conditions}
    assert conditions["ScalingLimited"].status == "True" and conditions["ScalingLimited"].reason == "TooManyReplicas"
    assert h.status.current_metrics[0].resource.current.average_utilization >= 100
    scaled = api.apps.read_namespaced_deployment("checkout", "default")
    assert scaled.spec.replicas == 4
    replicas_owner = [m for m in scaled.metadata.managed_fields if "f:replicas" in (m.fields_v1 or {}).get("f:spec", {})]
    assert [(m.manager, m.subresource) for m in replicas_owner] == [("kube-controller-manager", "scale")]
    assert "SuccessfulRescale" in {e.reason for e in api.core.list_namespaced_event(
        "default", field_selector="involvedObject.name=checkout").items}
    api.hpa.patch_namespaced_horizontal_pod_autoscaler("checkout", "default", {"spec": {"maxReplicas": 20}})
    api.cluster.tick(300)
    d = api.apps.read_namespaced_deployment("checkout", "default")
    assert 10 <= d.spec.replicas <= 20  # 300 rps * 5m / 250m per pod at 60 % target = 10 pods
    h = api.hpa.read_namespaced_horizontal_pod_autoscaler("checkout", "default")
    assert {c.type: c.status for c in h.status.conditions}["ScalingLimited"] == "False"


def test_state_persists_across_restart(tmp_path):
    state = tmp_path / "cluster.json"
    first = Api(tmp_path, state_file=state)
    created = first.apps.create_namespaced_deployment("default", deployment())
    first.cluster.workloads.configure("default", "checkout", leak_mb_per_hour=120)
    first.apps.patch_namespaced_deployment_scale("checkout", "default", {"spec": {"replicas": 3}})
    first.cluster.tick(600)
    before = first.apps.read_namespaced_deployment("checkout", "default")
    pods_before = sorted(p.metadata.uid for p in first.core.list_namespaced_pod("default").items)
    clock_before = first.cluster.clock.now()
    first.stop()

    second = Api(tmp_path, state_file=state)
    try:
        after = second.apps.read_namespaced_deployment("checkout", "default")
        assert after.metadata.uid == created.metadata.uid
        assert after.metadata.resource_version == before.metadata.resource_version
        assert after.metadata.annotations["sim.afterfix.dev/leak-mb-per-hour"] == "120"
        assert sorted(p.metadata.uid for p in second.core.list_namespaced_pod("default").items) == pods_before
        assert second.cluster.clock.now() == clock_before
        # New objects continue the sequences instead of reusing them.
        cm = second.core.create_namespaced_config_map("default", {"metadata": {"name": "after-restart"}})
        assert int(cm.metadata.resource_version) > int(before.metadata.resource_version)
        assert cm.metadata.uid not in pods_before + [created.metadata.uid]
    finally:
        second.stop()


def test_same_seed_gives_same_uids():
    def uids(seed):
        c = Cluster(SimClock(), seed=seed)
        c.create(deployment())
        return [o["metadata"]["uid"] for o in c.list("v1", "Pod")]

    assert uids(3) == uids(3) and uids(3) != uids(4)


APPLY = "application/apply-patch+yaml"


def test_server_side_apply_conflicts_force_and_removal(api):
    api.apps.create_namespaced_deployment("default", deployment(), field_manager="helm")
    intent = {"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": "checkout", "labels": {"owner": "sre-agent"}}, "spec": {"replicas": 2}}
    # Same value as helm's: shared ownership, no conflict.
    d = api.apps.patch_namespaced_deployment("checkout", "default", intent, field_manager="sre-agent", _content_type=APPLY)
    entries = {(m.manager, m.operation): m.fields_v1 for m in d.metadata.managed_fields}
    assert entries[("sre-agent", "Apply")] == {"f:metadata": {"f:labels": {"f:owner": {}}}, "f:spec": {"f:replicas": {}}}
    assert "f:replicas" in entries[("helm", "Update")]["f:spec"]
    # A different value for a field helm owns: 409 naming the field and the other manager.
    intent["spec"]["replicas"] = 6
    with pytest.raises(ApiException) as e:
        api.apps.patch_namespaced_deployment("checkout", "default", intent, field_manager="sre-agent", _content_type=APPLY)
    status = __import__("json").loads(e.value.body)
    assert (e.value.status, status["reason"]) == (409, "Conflict")
    assert status["details"]["causes"] == [{"reason": "FieldManagerConflict", "field": ".spec.replicas",
                                            "message": 'conflict with "helm" using apps/v1'}]
    assert api.apps.read_namespaced_deployment("checkout", "default").spec.replicas == 2
    # force takes the field over.
    d = api.apps.patch_namespaced_deployment("checkout", "default", intent, field_manager="sre-agent", force=True,
                                             _content_type=APPLY)
    assert d.spec.replicas == 6
    entries = {(m.manager, m.operation): m.fields_v1 for m in d.metadata.managed_fields}
    assert "f:replicas" not in entries[("helm", "Update")]["f:spec"]
    # Leaving a field out of the next apply removes it when nobody else owns it.
    del intent["metadata"]["labels"]
    d = api.apps.patch_namespaced_deployment("checkout", "default", intent, field_manager="sre-agent", _content_type=APPLY)
    assert "owner" not in (d.metadata.labels or {}) and d.metadata.labels["app"] == "checkout"
    # Apply creates missing objects and needs a field manager.
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"a": "1"}}
    out = api.core.patch_namespaced_config_map("applied", "default", cm, field_manager="sre-agent", _content_type=APPLY)
    assert out.data == {"a": "1"} and out.metadata.managed_fields[0].operation == "Apply"
    with pytest.raises(ApiException) as e:
        api.core.patch_namespaced_config_map("applied", "default", cm, _content_type=APPLY)
    assert e.value.status == 400 and "fieldManager" in e.value.body


def test_watch_streams_changes_to_the_official_client(api):
    from kubernetes import watch

    api.apps.create_namespaced_deployment("default", deployment())
    start_rv = api.apps.list_namespaced_deployment("default").metadata.resource_version
    seen = []
    w = watch.Watch()
    writer = None
    for event in w.stream(api.apps.list_namespaced_deployment, "default", timeout_seconds=20):
        seen.append((event["type"], event["object"].metadata.name, event["object"].spec.replicas))
        if writer is None:
            import threading

            writer = threading.Thread(target=lambda: (
                api.apps.patch_namespaced_deployment_scale("checkout", "default", {"spec": {"replicas": 4}}),
                api.apps.delete_namespaced_deployment("checkout", "default")))
            writer.start()
        if event["type"] == "DELETED":
            w.stop()
    writer.join()
    assert seen[0] == ("ADDED", "checkout", 2)
    assert ("MODIFIED", "checkout", 4) in seen and seen[-1][0] == "DELETED"
    # Resuming from a resourceVersion replays what happened after it, in order.
    replay = [e["type"] for e in watch.Watch().stream(api.apps.list_namespaced_deployment, "default",
                                                      resource_version=start_rv, timeout_seconds=1)]
    assert replay[0] == "MODIFIED" and replay[-1] == "DELETED" and "ADDED" not in replay


@pytest.mark.parametrize("method,path,headers,body,status,reason", [
    ("POST", "/apis/apps/v1/namespaces/default/widgets", {"Content-Type": "application/json"}, b'{"a": 1}', 404, "NotFound"),
    ("POST", "/api/v1/namespaces/default/configmaps", {"Content-Type": "application/json"}, b"{not json", 400, "BadRequest"),
    ("PATCH", "/api/v1/namespaces/default/configmaps/x", {"Content-Type": MERGE}, b"{}", 404, "NotFound"),
    ("PATCH", "/api/v1/namespaces/kube-system", {"Content-Type": "text/plain"}, b"{}", 415, "UnsupportedMediaType"),
    ("POST", "/api/v1/namespaces/default/configmaps", {"Content-Type": "application/json"},
     b'{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}', 400, "BadRequest"),
    ("DELETE", "/api/v1/namespaces/default/configmaps", {}, b"", 405, "MethodNotAllowed"),
])
def test_raw_http_errors_keep_the_connection_usable(api, method, path, headers, body, status, reason):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", api.server.port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        answer = __import__("json").loads(resp.read())
        assert (resp.status, answer["kind"], answer["reason"], answer["code"]) == (status, "Status", reason, status)
        conn.request("GET", "/healthz")  # same kept-alive connection
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"ok")
    finally:
        conn.close()


TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"


@pytest.mark.parametrize("path,columns,first_row", [
    ("/apis/apps/v1/namespaces/default/deployments", ["Name", "Ready", "Up-to-date", "Available", "Age"],
     ["checkout", "2/2", 2, 2, "10m"]),
    ("/api/v1/namespaces/default/pods", ["Name", "Ready", "Status", "Restarts", "Age"], [None, "1/1", "Running", 0, "10m"]),
    ("/apis/apps/v1/namespaces/default/replicasets/", ["Name", "Desired", "Current", "Ready", "Age"], [None, 2, 2, 2, "10m"]),
    ("/apis/apps/v1/namespaces/default/deployments/checkout", ["Name", "Ready", "Up-to-date", "Available", "Age"],
     ["checkout", "2/2", 2, 2, "10m"]),
])
def test_tables_for_kubectl_get(api, path, columns, first_row):
    import http.client

    api.apps.create_namespaced_deployment("default", deployment())
    api.cluster.tick(600)
    conn = http.client.HTTPConnection("127.0.0.1", api.server.port, timeout=5)
    conn.request("GET", path, headers={"Accept": TABLE_ACCEPT})
    resp = conn.getresponse()
    body = __import__("json").loads(resp.read())
    conn.close()
    assert (resp.status, body["kind"], body["apiVersion"]) == (200, "Table", "meta.k8s.io/v1")
    assert [c["name"] for c in body["columnDefinitions"] if c["priority"] == 0] == columns
    cells = body["rows"][0]["cells"][: len(columns)]
    assert [c if want is not None else None for c, want in zip(cells, first_row, strict=True)] == first_row
    assert body["rows"][0]["object"]["metadata"]["uid"]


def test_kubectl_can_act_on_the_simulator(api, tmp_path):
    import shutil
    import subprocess

    kubectl = shutil.which("kubectl")
    assert kubectl is not None, "kubectl is not on PATH: `make test` installs it (apt-get install kubernetes-client)"
    kubeconfig = api.server.write_kubeconfig(tmp_path / "kubeconfig")
    api.apps.create_namespaced_deployment("default", deployment())

    def run(*args):
        out = subprocess.run([kubectl, f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert "checkout" in run("get", "deploy")
    run("set", "image", "deploy/checkout", "app=shop/checkout:1.1")
    run("scale", "deploy/checkout", "--replicas=3")
    assert "2" in run("rollout", "history", "deploy/checkout")
    run("rollout", "undo", "deploy/checkout")
    d = api.apps.read_namespaced_deployment("checkout", "default")
    assert d.spec.template.spec.containers[0].image == "shop/checkout:1.0"
    assert d.spec.replicas == 3
    assert d.metadata.annotations["deployment.kubernetes.io/revision"] == "3"
    assert "ScalingReplicaSet" in run("describe", "deploy", "checkout")


def test_pod_metrics_api_matches_the_workload_model(api):
    api.apps.create_namespaced_deployment("default", deployment(replicas=3))
    api.cluster.workloads.configure("default", "checkout", base_rps=60, cpu_per_request=5, noise=0,
                                    diurnal_amplitude=0, leak_mb_per_hour=60)
    api.cluster.tick(3600)
    custom = client.CustomObjectsApi()
    listed = custom.list_namespaced_custom_object("metrics.k8s.io", "v1beta1", "default", "pods",
                                                  label_selector="app=checkout")
    assert listed["kind"] == "PodMetricsList" and len(listed["items"]) == 3
    usage = listed["items"][0]["containers"][0]["usage"]
    assert usage["cpu"] == "100m"  # 60 rps * 5m shared by 3 pods
    assert usage["memory"] == f"{(180 + 60) * 1024}Ki"  # base + one hour of leak
    name = listed["items"][0]["metadata"]["name"]
    one = custom.get_namespaced_custom_object("metrics.k8s.io", "v1beta1", "default", "pods", name)
    assert one["metadata"]["name"] == name
    with pytest.raises(ApiException) as e:
        custom.get_namespaced_custom_object("metrics.k8s.io", "v1beta1", "default", "pods", "nope")
    assert e.value.status == 404
