"""templates/guard-deployment.yaml runs a real `afterfix guard` command, one at a time, with the store
on a volume and the webhook from a Secret; and its RBAC rules are exactly enough for the rollback
engine: through the API simulator's authorizer, holding only those rules, the engine undoes a
Deployment, an HPA and a ConfigMap change, and anything more (a delete) is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from afterfix.cli import build_parser
from afterfix.nightshift.apiserver import ApiServer
from afterfix.nightshift.authz import Authorizer
from afterfix.undo.kube import Forbidden, connect
from afterfix.undo.rollback import rollback_action

MANIFEST = Path(__file__).resolve().parents[2] / "templates" / "guard-deployment.yaml"
RULES = {("apps", "deployments"): {"get", "list", "patch"},
         ("autoscaling", "horizontalpodautoscalers"): {"get", "list", "patch"},
         ("", "configmaps"): {"get", "list", "patch"}, ("", "secrets"): {"get", "list", "patch"},
         ("apps", "replicasets"): {"get", "list"}, ("", "pods"): {"get", "list"},
         ("apps", "statefulsets"): {"get", "list"}, ("apps", "daemonsets"): {"get", "list"}, ("batch", "jobs"): {"get", "list"}}


@pytest.fixture(scope="module")
def docs() -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text())}


def test_one_guard_at_a_time_running_afterfix_guard_on_the_shared_store(docs):
    assert set(docs) == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment"}
    deploy = docs["Deployment"]
    assert deploy["apiVersion"] == "apps/v1"
    spec = deploy["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    assert pod["terminationGracePeriodSeconds"] >= 30
    (container,) = pod["containers"]
    argv = container.get("command", []) + container["args"]
    assert argv[:2] == ["afterfix", "guard"]
    args = build_parser().parse_args(argv[1:])  # the command line itself accepts every option
    assert args.func.__name__ == "cmd_guard" and not args.once
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts[args.store]]["persistentVolumeClaim"]["claimName"] == "afterfix-store"
    policy_dir = str(Path(args.policy).parent)
    assert "configMap" in volumes[mounts[policy_dir]]
    [webhook] = [e for e in container["env"] if e["name"] == "AFTERFIX_WEBHOOK"]
    assert set(webhook["valueFrom"]["secretKeyRef"]) >= {"name", "key"}
    assert "value" not in webhook  # never the URL itself in the manifest


def test_the_service_account_is_bound_to_the_role(docs):
    binding = docs["ClusterRoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": docs["ClusterRole"]["metadata"]["name"]}
    [subject] = binding["subjects"]
    assert subject["kind"] == "ServiceAccount" and subject["name"] == docs["ServiceAccount"]["metadata"]["name"]


def test_the_role_grants_exactly_the_engines_verbs(docs):
    granted: dict[tuple, set] = {}
    for rule in docs["ClusterRole"]["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no resourceNames, no wildcards
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == RULES


def test_those_rules_are_enough_to_roll_back_and_no_more(docs, world, tmp_path):
    rules = [dict(r) for r in docs["ClusterRole"]["rules"]]
    authz = Authorizer.from_dict({"users": {"system:serviceaccount:afterfix:afterfix-guard": {
        "token": "guard-token", "rules": rules}}})
    changes = [
        world.change("Deployment", "shop", "payments", {"spec": {"replicas": 1}}, ["spec.replicas"], verb="scale"),
        world.change("HorizontalPodAutoscaler", "shop", "catalog", {"spec": {"maxReplicas": 6}}, ["spec.maxReplicas"]),
        world.change("ConfigMap", "shop", "flags", {"data": {"new_checkout": "true"}}, ["data.new_checkout"]),
    ]
    under_hpa = world.change("Deployment", "shop", "catalog", {"spec": {"replicas": 1}}, ["spec.replicas"], verb="scale")
    with ApiServer(world.sim, authorizer=authz) as server:
        kubeconfig = server.write_kubeconfig(tmp_path / "guard", user="system:serviceaccount:afterfix:afterfix-guard",
                                             token="guard-token")
        cluster = connect(kubeconfig=str(kubeconfig))
        try:
            results = [rollback_action(world.store, cluster, action, who="afterfix-guard", reason="analysis failed",
                                       automatic=True) for action in changes]
            assert [r.outcome for r in results] == ["rolled_back"] * 3, [r.message for r in results]
            # The checks that read other objects still see them (list on HPAs and Deployments):
            # the ConfigMap's readers, and the HPA that owns catalog's replicas.
            checks = {c.name: c for c in results[2].plan.checks}
            assert checks["kind rule: consumers restart"].status == "warn"
            assert "deployment/checkout" in checks["kind rule: consumers restart"].summary
            blocked = rollback_action(world.store, cluster, under_hpa, who="afterfix-guard", reason="r", automatic=True)
            assert blocked.outcome == "refused" and "HorizontalPodAutoscaler shop/catalog controls" in blocked.message
            with pytest.raises(Forbidden, match="may not delete deployments"):
                cluster.delete("apps/v1", "Deployment", "shop", "payments")
        finally:
            cluster.close()
    assert world.get("Deployment", "shop", "payments")["spec"]["replicas"] == 3
    assert world.get("HorizontalPodAutoscaler", "shop", "catalog")["spec"]["maxReplicas"] == 2
    assert world.get("ConfigMap", "shop", "flags")["data"]["new_checkout"] == "false"
