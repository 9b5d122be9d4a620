"""Authorization in the API simulator, through the official kubernetes client: bearer tokens name
users, RBAC-like rules decide, refusals are the API server's 401 and 403 Status objects."""

from __future__ import annotations

import json
import urllib.request

import pytest
from kubernetes import client, config, watch
from kubernetes.client import ApiException

from afterfix._exceptions import ConfigError
from afterfix.nightshift.apiserver import ApiServer
from afterfix.nightshift.authz import Authorizer, Rule, forbidden, load_authorizer, request_attributes
from afterfix.nightshift.clock import SimClock
from afterfix.nightshift.cluster import Cluster

MERGE = "application/merge-patch+json"
READ = ["get", "list", "watch"]

POLICY = {"users": {
    "reviewer": {"token": "reviewer-token", "rules": [
        {"apiGroups": ["", "apps"], "resources": ["*"], "verbs": READ}]},
    "deployer": {"token": "deployer-token", "rules": [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch"]}]},
    "scaler": {"token": "scaler-token", "rules": [
        {"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["get", "patch"]}]},
    "shop-admin": {"token": "shop-token", "rules": [
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"], "namespaces": ["shop"]}]},
    "system:anonymous": {"token": "never-sent", "rules": [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["public"]}]},
}}


def deployment(name="web", replicas=2):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "shop",
                                                                        "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": "shop/web:1.0"}]}}}}


class Sim:
    """A cluster with namespaces shop and other, served with POLICY; `client_for(user)` gives the
    official client's ApiClient with that user's kubeconfig."""

    def __init__(self, tmp_path, authorizer):
        self.tmp_path = tmp_path
        self.cluster = Cluster(SimClock(), seed=7)
        for ns in ("shop", "other"):
            self.cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        self.cluster.create(deployment())
        self.cluster.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "public", "namespace": "shop"},
                             "data": {"a": "1"}})
        self.server = ApiServer(self.cluster, authorizer=authorizer).start()

    def client_for(self, user=None, token=None) -> client.ApiClient:
        path = self.server.write_kubeconfig(self.tmp_path / f"kubeconfig-{user}-{token}", namespace="shop",
                                            user=user, token=token)
        return config.new_client_from_config(config_file=str(path))

    def apps(self, user=None, token=None):
        return client.AppsV1Api(self.client_for(user, token))

    def core(self, user=None, token=None):
        return client.CoreV1Api(self.client_for(user, token))

    def replicas(self, name="web"):
        return self.cluster.get("apps/v1", "Deployment", "shop", name)["spec"]["replicas"]


@pytest.fixture
def sim(tmp_path):
    s = Sim(tmp_path, Authorizer.from_dict(POLICY))
    yield s
    s.server.stop()


def status_of(e: ApiException) -> dict:
    return json.loads(e.body)


def refused(call, *args, **kwargs) -> dict:
    with pytest.raises(ApiException) as e:
        call(*args, **kwargs)
    return {"http": e.value.status, **status_of(e.value)}


def test_read_only_user_reads_and_gets_the_api_servers_403_on_patch(sim):
    apps = sim.apps("reviewer")
    assert apps.read_namespaced_deployment("web", "shop").spec.replicas == 2
    assert [d.metadata.name for d in apps.list_namespaced_deployment("shop").items] == ["web"]
    assert [d.metadata.name for d in apps.list_deployment_for_all_namespaces().items] == ["web"]
    events = list(watch.Watch().stream(apps.list_namespaced_deployment, "shop", timeout_seconds=1))
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "web")]

    expected = {"http": 403, "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": 'deployments.apps "web" is forbidden: User "reviewer" cannot patch resource "deployments" '
                           'in API group "apps" in the namespace "shop"',
                "reason": "Forbidden", "details": {"name": "web", "group": "apps", "kind": "deployments"}, "code": 403}
    patch = {"spec": {"replicas": 5}}
    assert refused(apps.patch_namespaced_deployment, "web", "shop", patch, _content_type=MERGE) == expected
    # a dry run is authorized as the write itself: that is how a dry run proves RBAC
    assert refused(apps.patch_namespaced_deployment, "web", "shop", patch, dry_run="All",
                   _content_type=MERGE) == expected
    assert sim.replicas() == 2


@pytest.mark.parametrize("call, message, details", [
    (lambda apps, core: apps.create_namespaced_deployment("shop", deployment("new"), dry_run="All"),
     'deployments.apps is forbidden: User "reviewer" cannot create resource "deployments" in API group "apps" '
     'in the namespace "shop"', {"group": "apps", "kind": "deployments"}),
    (lambda apps, core: apps.replace_namespaced_deployment("web", "shop", deployment()),
     'deployments.apps "web" is forbidden: User "reviewer" cannot update resource "deployments" in API group "apps" '
     'in the namespace "shop"', {"name": "web", "group": "apps", "kind": "deployments"}),
    (lambda apps, core: apps.delete_namespaced_deployment("web", "shop"),
     'deployments.apps "web" is forbidden: User "reviewer" cannot delete resource "deployments" in API group "apps" '
     'in the namespace "shop"', {"name": "web", "group": "apps", "kind": "deployments"}),
    (lambda apps, core: apps.delete_collection_namespaced_deployment("shop"),
     'deployments.apps is forbidden: User "reviewer" cannot deletecollection resource "deployments" in API group '
     '"apps" in the namespace "shop"', {"group": "apps", "kind": "deployments"}),
    (lambda apps, core: core.patch_namespaced_config_map("public", "shop", {"data": {"a": "2"}}),
     'configmaps "public" is forbidden: User "reviewer" cannot patch resource "configmaps" in API group "" '
     'in the namespace "shop"', {"name": "public", "kind": "configmaps"}),
    (lambda apps, core: core.create_namespace({"metadata": {"name": "x"}}),
     'namespaces is forbidden: User "reviewer" cannot create resource "namespaces" in API group "" '
     'at the cluster scope', {"kind": "namespaces"}),
    (lambda apps, core: client.AutoscalingV2Api(apps.api_client).list_namespaced_horizontal_pod_autoscaler("shop"),
     'horizontalpodautoscalers.autoscaling is forbidden: User "reviewer" cannot list resource '
     '"horizontalpodautoscalers" in API group "autoscaling" in the namespace "shop"',
     {"group": "autoscaling", "kind": "horizontalpodautoscalers"}),
], ids=["create-dry-run", "update", "delete", "deletecollection", "core-patch", "cluster-scope", "other-group"])
def test_every_verb_is_refused_with_its_own_words(sim, call, message, details):
    apps = sim.apps("reviewer")
    status = refused(call, apps, client.CoreV1Api(apps.api_client))
    assert (status["http"], status["message"], status["details"]) == (403, message, details)
    assert sim.replicas() == 2 and len(sim.cluster.list("apps/v1", "Deployment", "shop")) == 1


def test_patch_on_deployments_does_not_reach_the_scale_subresource(sim):
    apps = sim.apps("deployer")
    apps.patch_namespaced_deployment("web", "shop", {"spec": {"replicas": 3}}, dry_run="All", _content_type=MERGE)
    assert sim.replicas() == 2
    apps.patch_namespaced_deployment("web", "shop", {"spec": {"replicas": 3}}, _content_type=MERGE)
    assert sim.replicas() == 3
    status = refused(apps.patch_namespaced_deployment_scale, "web", "shop", {"spec": {"replicas": 4}},
                     _content_type=MERGE)
    assert (status["http"], status["message"], status["details"]) == (
        403, 'deployments.apps "web" is forbidden: User "deployer" cannot patch resource "deployments/scale" in API '
             'group "apps" in the namespace "shop"', {"name": "web", "group": "apps", "kind": "deployments"})
    assert sim.replicas() == 3

    scaler = sim.apps("scaler")  # "*/scale": every scale subresource, and nothing else
    scaler.patch_namespaced_deployment_scale("web", "shop", {"spec": {"replicas": 4}}, _content_type=MERGE)
    assert sim.replicas() == 4
    assert refused(scaler.read_namespaced_deployment, "web", "shop")["http"] == 403


def test_namespace_limited_rules(sim):
    apps, core = sim.apps("shop-admin"), sim.core("shop-admin")
    apps.patch_namespaced_deployment("web", "shop", {"spec": {"replicas": 1}}, _content_type=MERGE)
    assert sim.replicas() == 1
    assert core.read_namespace("shop").metadata.name == "shop"  # a namespace is in itself

    status = refused(apps.create_namespaced_deployment, "other", {**deployment(), "metadata": {"name": "web"}})
    assert status["message"] == ('deployments.apps is forbidden: User "shop-admin" cannot create resource '
                                 '"deployments" in API group "apps" in the namespace "other"')
    assert refused(core.read_namespace, "other")["message"] == (
        'namespaces "other" is forbidden: User "shop-admin" cannot get resource "namespaces" in API group "" '
        'in the namespace "other"')
    # every namespace at once is the cluster scope, which no namespace's rule covers
    assert refused(apps.list_deployment_for_all_namespaces)["message"] == (
        'deployments.apps is forbidden: User "shop-admin" cannot list resource "deployments" in API group "apps" '
        "at the cluster scope")
    assert refused(core.list_namespace)["http"] == 403


def test_refused_before_looked_up(sim):
    # the API server authorizes first: a missing object is 403, not 404, to whoever may not read it
    status = refused(sim.apps("scaler").read_namespaced_deployment, "missing", "shop")
    assert (status["http"], status["reason"]) == (403, "Forbidden")
    assert refused(sim.apps("reviewer").read_namespaced_deployment, "missing", "shop")["http"] == 404


def test_unknown_token_is_401_and_no_token_is_anonymous(sim):
    status = refused(sim.apps(token="stolen").read_namespaced_deployment, "web", "shop")
    assert status == {"http": 401, "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": "Unauthorized", "reason": "Unauthorized", "code": 401}

    anonymous = client.ApiClient(client.Configuration(host=sim.server.url))
    core = client.CoreV1Api(anonymous)
    assert core.read_namespaced_config_map("public", "shop").data == {"a": "1"}  # resourceNames: [public]
    assert refused(core.list_namespaced_config_map, "shop")["message"] == (
        'configmaps is forbidden: User "system:anonymous" cannot list resource "configmaps" in API group "" '
        'in the namespace "shop"')


def test_discovery_version_and_health_stay_open(sim):
    api = sim.client_for(token="stolen")
    assert client.VersionApi(api).get_code().git_version.startswith("v1.")
    assert {"apps"} <= {g.name for g in client.ApisApi(api).get_api_versions().groups}
    assert "deployments/scale" in {r.name for r in client.AppsV1Api(api).get_api_resources().resources}
    for path in ("/healthz", "/metrics"):
        request = urllib.request.Request(sim.server.url + path, headers={"Authorization": "Bearer stolen"})
        assert urllib.request.urlopen(request, timeout=5).status == 200


def test_without_a_policy_everything_is_allowed(tmp_path):
    s = Sim(tmp_path, None)
    try:
        apps = s.apps(token="anything-at-all")
        apps.patch_namespaced_deployment_scale("web", "shop", {"spec": {"replicas": 6}}, _content_type=MERGE)
        apps.delete_namespaced_deployment("web", "shop")
        assert s.cluster.list("apps/v1", "Deployment", "shop") == []
        with pytest.raises(ConfigError, match="has no authorizer"):
            s.server.write_kubeconfig(tmp_path / "k", user="reviewer")
    finally:
        s.server.stop()


def test_kubeconfig_for_a_user_carries_its_token(sim, tmp_path):
    import yaml

    kubeconfig = yaml.safe_load(sim.server.write_kubeconfig(tmp_path / "k", user="deployer").read_text())
    assert kubeconfig["users"] == [{"name": "deployer", "user": {"token": "deployer-token"}}]
    assert kubeconfig["contexts"][0]["context"]["user"] == "deployer"
    with pytest.raises(ConfigError, match="'nobody' is not in the authorization policy; it has deployer, reviewer"):
        sim.server.write_kubeconfig(tmp_path / "k", user="nobody")


@pytest.mark.parametrize("rule, request_, allowed", [
    (Rule(("get",), ("apps",), ("deployments",)), ("get", "apps", "deployments", None, "shop", "web"), True),
    (Rule(("get",), ("apps",), ("deployments",)), ("get", "", "deployments", None, "shop", "web"), False),
    (Rule(("get",), ("apps",), ("deployments",)), ("get", "apps", "deployments", "scale", "shop", "web"), False),
    (Rule(("get",), ("apps",), ("deployments/scale",)), ("get", "apps", "deployments", "scale", "shop", "web"), True),
    (Rule(("get",), ("apps",), ("*",)), ("get", "apps", "deployments", "scale", "shop", "web"), True),
    (Rule(("get",), ("apps",), ("*/status",)), ("get", "apps", "deployments", "scale", "shop", "web"), False),
    (Rule(("*",), ("*",), ("pods",)), ("deletecollection", "", "pods", None, "shop", None), True),
    (Rule(("get",), ("",), ("pods",), resource_names=("a",)), ("get", "", "pods", None, "shop", "a"), True),
    (Rule(("get",), ("",), ("pods",), resource_names=("a",)), ("get", "", "pods", None, "shop", "b"), False),
    (Rule(("list",), ("",), ("pods",), resource_names=("a",)), ("list", "", "pods", None, "shop", None), False),
    (Rule(("list",), ("",), ("pods",), namespaces=("shop",)), ("list", "", "pods", None, "shop", None), True),
    (Rule(("list",), ("",), ("pods",), namespaces=("shop",)), ("list", "", "pods", None, None, None), False),
    (Rule(("list",), ("",), ("pods",), namespaces=("shop",)), ("list", "", "pods", None, "other", None), False),
])
def test_rule_matching_follows_rbac(rule, request_, allowed):
    assert rule.allows(*request_) is allowed


@pytest.mark.parametrize("method, group, rest, watch_, expected", [
    ("GET", "apps", "namespaces/shop/deployments", False, ("list", "deployments", None, "shop", None)),
    ("GET", "apps", "namespaces/shop/deployments", True, ("watch", "deployments", None, "shop", None)),
    ("GET", "apps", "deployments", False, ("list", "deployments", None, None, None)),
    ("POST", "apps", "namespaces/shop/deployments", False, ("create", "deployments", None, "shop", None)),
    ("PUT", "apps", "namespaces/shop/deployments/web/status", False, ("update", "deployments", "status", "shop", "web")),
    ("PATCH", "apps", "namespaces/shop/deployments/web/scale", False, ("patch", "deployments", "scale", "shop", "web")),
    ("DELETE", "", "namespaces/shop/pods/p", False, ("delete", "pods", None, "shop", "p")),
    ("DELETE", "", "namespaces/shop/pods", False, ("deletecollection", "pods", None, "shop", None)),
    ("GET", "", "namespaces/shop", False, ("get", "namespaces", None, "shop", "shop")),
    ("PUT", "", "namespaces/shop/finalize", False, ("update", "namespaces", "finalize", "shop", "shop")),
    ("GET", "", "namespaces", False, ("list", "namespaces", None, None, None)),
])
def test_request_attributes_as_the_api_server_resolves_them(method, group, rest, watch_, expected):
    a = request_attributes(method, group, rest, watch=watch_)
    assert (a["verb"], a["resource"], a["subresource"], a["namespace"], a["name"]) == expected
    assert a["group"] == group


def test_forbidden_without_a_name_or_a_namespace():
    assert forbidden("u", "list", "", "nodes").to_status()["message"] == (
        'nodes is forbidden: User "u" cannot list resource "nodes" in API group "" at the cluster scope')


def test_policy_loads_from_yaml(tmp_path):
    path = tmp_path / "rbac.yaml"
    path.write_text("users:\n  reviewer:\n    token: t1\n    rules:\n"
                    "      - {apiGroups: [apps], resources: [deployments], verbs: [get], namespaces: ['*']}\n")
    authorizer = load_authorizer(path)
    assert authorizer.allow("reviewer", "get", "apps", "deployments", None, None, "web")
    assert not authorizer.allow("reviewer", "patch", "apps", "deployments", None, "shop", "web")
    assert authorizer.authenticate("Bearer t1") == "reviewer"


@pytest.mark.parametrize("text, message", [
    ("users:\n  reviewer:\n    token: t1\n    rules:\n      - apiGroups: [apps]\n        resources: [deployments]\n"
     "        verbs: [get, pacth]\n",
     "line 7 users.reviewer.rules.0.verbs.1: 'pacth' is not a verb the simulator serves; use get, list"),
    ("users:\n  reviewer:\n    token: t1\n    rules:\n      - apiGroups: [apps]\n        resources: [deployments]\n"
     "        verb: [get]\n",
     "line 7 users.reviewer.rules.0.verb: is not a field here; the fields are apiGroups, resources, verbs"),
    ("users:\n  reviewer:\n    token: t1\n    rules:\n      - resources: [deployments]\n        verbs: [get]\n",
     "line 5 users.reviewer.rules.0: apiGroups must be a list of strings, at least one (use [\"\"] for the core group)"),
    ("users:\n  reviewer:\n    rules: []\n", "line 2 users.reviewer: token must be a non-empty string"),
    ("users:\n  a: {token: same}\n  b: {token: same}\n", "users 'a' and 'b' have the same token"),
    ("users:\n  a: {token: t}\n  a: {token: u}\n", "line 3 users.a: must be a plain key given once"),
    ("users: [a]\n", "must be a mapping users:"),
    ("users:\n  a: {token: t\n", "line 3: is not valid YAML"),
])
def test_policy_errors_name_the_file_line_and_field(tmp_path, text, message):
    path = tmp_path / "rbac.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_authorizer(path)
    assert str(e.value).startswith(str(path)) and message in str(e.value)


def test_missing_policy_file_says_so(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: cannot be read"):
        load_authorizer(tmp_path / "nope.yaml")
