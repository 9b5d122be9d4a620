"""The incidents of the simulated night, each reproducible from the cluster's seed.

A `Scenario` names the services it owns, how the cluster looks at 21:00 (`setup`), what people
and traffic do during the night (`events`, at minutes after 22:00), and what the reference agent
is expected to decide and do (`expect`, read by the tests). Faults come from the workload
model's knobs and from ordinary API writes by other field managers (a CI deploy, a person's
`kubectl edit`), so the agent meets them the way it would meet them in a real cluster.

(a) hpa_starvation   a misconfigured HPA (maxReplicas = minReplicas) starves catalog in a spike
(b) memory_leak      cart leaks memory; the agent restarts it, the leak comes back later
(c) bad_rollout      a deploy bundles a bad image with a person's env fix; rollback reverts both,
                     and the old DB pool is too small for the 05:30 renewal batch
(d) wrong_tool       the agent looks up the HPA with the wrong tool and a misspelt namespace
(e) parallel_teams   three teams' agents investigate one session-cache incident at once
(f) db_migration     a missing index: the migration waits at Level 2 for a person
(g) feature_flag     a ConfigMap flag was turned off, but running pods still have it on
noise                traffic blips that clear by themselves: read-only investigations

Workloads declare what they call (`DEPENDENCIES`, read back with `dependencies()`): each
Deployment carries its list in the annotation `sim.afterfix.dev/depends-on`, so clients read it
through the API, and a dependency's trouble reaches its callers in part (see workloads.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from afterfix.nightshift.agent import Service
from afterfix.nightshift.clock import DEFAULT_START, rfc3339

NIGHT_START = DEFAULT_START            # 22:00 UTC
SETUP_AT = NIGHT_START - 3600          # the cluster is built at 21:00, so nothing looks brand new
NIGHT_END = NIGHT_START + 9 * 3600     # 07:00 UTC


def at(minutes: float) -> float:
    """Epoch seconds `minutes` after 22:00."""
    return NIGHT_START + minutes * 60


@dataclass
class Scenario:
    key: str
    letter: str
    title: str
    services: list[Service]
    setup: Callable[[Any], None]
    events: list[tuple[float, str, Callable[[Any], None]]] = field(default_factory=list)
    expect: dict = field(default_factory=dict)
    context: dict = field(default_factory=dict)  # extra arguments for the agent's runbook
    teams: list[tuple[str, Service]] = field(default_factory=list)  # (team, own service) for parallel runs
    trust_level: int = 3


# ---- who calls whom ---------------------------------------------------------------------------------------
# "namespace/name" -> the workloads it calls. shop/orders-db is the orders database (PostgreSQL
# outside the cluster, whose pg_stat_statements the db runbook reads): declared, not simulated,
# so nothing propagates from it; payments' DB_POOL_SIZE is its pool of connections to it.
DEPENDENCIES: dict[str, list[str]] = {
    "platform/gateway": ["shop/frontend", "platform/auth"],
    "shop/frontend": ["shop/catalog", "shop/search", "shop/recommendations", "shop/reviews", "shop/cart",
                      "shop/checkout", "shop/orders"],
    "shop/checkout": ["shop/payments", "shop/cart", "shop/inventory", "platform/session-cache"],
    "shop/cart": ["shop/inventory", "platform/session-cache"],
    "shop/orders": ["shop/orders-db", "platform/session-cache"],
    "shop/payments": ["shop/orders-db"],
    "shop/search": ["shop/catalog"],
    "shop/recommendations": ["shop/catalog"],
}


def dependencies() -> dict[str, list[str]]:
    """{"namespace/name": the workloads it calls}, as every night's Deployments declare them
    (a copy: changing it changes no night)."""
    return {k: list(v) for k, v in DEPENDENCIES.items()}


# ---- building blocks ------------------------------------------------------------------------------------


def namespace(cluster, name: str) -> None:
    if not any(n["metadata"]["name"] == name for n in cluster.list("v1", "Namespace")):
        cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}, field_manager="helm")


def deployment(cluster, ns: str, name: str, *, replicas: int = 2, image: str | None = None,
               env: dict | None = None, env_from: list[str] | None = None, memory: str = "512Mi", **knobs) -> dict:
    namespace(cluster, ns)
    container = {"name": name, "image": image or f"registry.example/{name}:1.8.2",
                 "resources": {"requests": {"cpu": "250m", "memory": "256Mi"},
                               "limits": {"cpu": "250m", "memory": memory}}}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    if env_from:
        container["envFrom"] = [{"configMapRef": {"name": n}} for n in env_from]
    obj = cluster.create({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}}},
    }, field_manager="helm")
    if f"{ns}/{name}" in DEPENDENCIES:
        knobs.setdefault("depends_on", ",".join(DEPENDENCIES[f"{ns}/{name}"]))
    if knobs:
        obj = cluster.workloads.configure(ns, name, **knobs)
    return obj


def hpa(cluster, ns: str, name: str, lo: int, hi: int, target: int = 80) -> dict:
    return cluster.create({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                 "minReplicas": lo, "maxReplicas": hi,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                                               "target": {"type": "Utilization", "averageUtilization": target}}}]},
    }, field_manager="helm")


def spike(start_min: float, minutes: float, factor: float) -> dict:
    return {"spike_start": rfc3339(at(start_min)), "spike_minutes": minutes, "spike_factor": factor}


# ---- (a) ---------------------------------------------------------------------------------------------------
CATALOG = Service("shop", "catalog", slo_latency_ms=300, team="shop")


def _setup_a(cluster) -> None:
    deployment(cluster, "shop", "catalog", replicas=2, **spike(40, 150, 3.0))
    hpa(cluster, "shop", "catalog", 2, 2)  # maxReplicas left equal to minReplicas by a copy-paste


HPA_STARVATION = Scenario(
    "hpa_starvation", "a", "misconfigured HPA starves catalog during a traffic spike", [CATALOG], _setup_a,
    expect={"policy": "hpa_capacity", "selected": "raise_hpa_max",
            "rejected": {"scale_deployment", "wait_for_hpa", "restart_pods", "no_action"},
            "verb": "patch", "kind": "HorizontalPodAutoscaler", "field": "spec.maxReplicas",
            "status": "applied", "verified": "success", "incident_status": "resolved"})

# ---- (b) ---------------------------------------------------------------------------------------------------
CART = Service("shop", "cart", slo_latency_ms=300, memory_limit_mb=512, team="shop")


def _setup_b(cluster) -> None:
    deployment(cluster, "shop", "cart", replicas=2, leak_mb_per_hour=100)


MEMORY_LEAK = Scenario(
    "memory_leak", "b", "cart leaks memory; restarted, it leaks again", [CART], _setup_b,
    expect={"policy": "memory_leak", "selected": "restart_pods", "selected_again": "restart_and_escalate",
            "rejected": {"raise_memory_limit", "rollback_revision", "no_action"},
            "verb": "restart", "kind": "Deployment", "status": "applied", "verified": "success", "min_incidents": 2})

# ---- (c) ---------------------------------------------------------------------------------------------------
PAYMENTS = Service("shop", "payments", slo_latency_ms=300, team="payments")
BAD_IMAGE = "registry.example/payments:2.4.0"
# Payments is busy but light on CPU; each request holds a connection to the orders database for
# ~33 ms, and the subscription-renewal batch brings 2.7 times its traffic every day from 05:30 to 06:30.
# Three pods with DB_POOL_SIZE 5 hold 15 connections: enough for the evening (~70 % busy) but
# not for the batch (~110 %). With 20 each (60 connections) the batch needs ~30 % of them.
PAYMENTS_KNOBS = {"base_rps": 250.0, "cpu_per_request": 0.8, "db_hold_ms": 33.0,
                  "batch_at": "05:30", "batch_minutes": 60.0, "batch_factor": 2.7}


def _setup_c(cluster) -> None:
    # DB_POOL_SIZE=5 is the long-standing bug a person fixes tonight, in the same rollout as 2.4.0;
    # rolling back 2.4.0 brings it back, which shows at the next batch.
    deployment(cluster, "shop", "payments", replicas=3, image="registry.example/payments:2.3.1",
               env={"DB_POOL_SIZE": "5", "LOG_LEVEL": "info"}, bad_images=BAD_IMAGE, **PAYMENTS_KNOBS)


def _deploy_c(cluster) -> None:
    cluster.patch("apps/v1", "Deployment", "shop", "payments", {"spec": {"template": {"spec": {"containers": [
        {"name": "payments", "image": BAD_IMAGE,
         "env": [{"name": "DB_POOL_SIZE", "value": "20"}, {"name": "LOG_LEVEL", "value": "info"}]}]}}}},
        patch_type="strategic", field_manager="ci-deploy")


BAD_ROLLOUT = Scenario(
    "bad_rollout", "c", "payments 2.4.0 fails; its rollout also carried a person's DB_POOL_SIZE fix", [PAYMENTS],
    _setup_c, events=[(85, "CI deploys payments 2.4.0 with DB_POOL_SIZE 5 -> 20", _deploy_c)],
    expect={"policy": "bad_rollout", "selected": "rollback_revision",
            "rejected": {"patch_image", "scale_deployment", "no_action"},
            "verb": "rollback", "kind": "Deployment", "status": "applied", "verified": "success",
            "before": {"image": BAD_IMAGE, "env": {"DB_POOL_SIZE": "20"}},
            "after": {"image": "registry.example/payments:2.3.1", "env": {"DB_POOL_SIZE": "5"}}})

# ---- (d) ---------------------------------------------------------------------------------------------------
SEARCH = Service("shop", "search", slo_latency_ms=300, team="shop")


def _setup_d(cluster) -> None:
    deployment(cluster, "shop", "search", replicas=2, **spike(140, 100, 2.8))
    hpa(cluster, "shop", "search", 2, 2)


WRONG_TOOL = Scenario(
    "wrong_tool", "d", "search is starved; the agent looks for its HPA in the wrong place", [SEARCH], _setup_d,
    context={"defect": "wrong_tool"},
    expect={"policy": "hpa_capacity", "selected": "scale_deployment",
            "rejected": {"restart_pods", "no_action"}, "bad_call": {"resource": "replicasets", "namespace": "sohp"},
            "verb": "scale", "kind": "Deployment", "field": "spec.replicas", "status": "applied",
            "verified": "failure", "incident_status": "escalated"})

# ---- (e) ---------------------------------------------------------------------------------------------------
SESSION_CACHE = Service("platform", "session-cache", slo_latency_ms=300, runbook="shared_dependency", team="platform")
CHECKOUT = Service("shop", "checkout", slo_latency_ms=300, team="checkout")
ORDERS = Service("shop", "orders", slo_latency_ms=300, runbook="db", team="orders")


def _setup_e(cluster) -> None:
    # The teams' own services, unless their own scenarios built them already.
    existing = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in cluster.list("apps/v1", "Deployment")}
    for svc in (CHECKOUT, ORDERS):
        if (svc.namespace, svc.name) not in existing:
            deployment(cluster, svc.namespace, svc.name, replicas=2)
    deployment(cluster, "platform", "session-cache", replicas=1, base_rps=40, **spike(250, 120, 3.0))
    hpa(cluster, "platform", "session-cache", 1, 1)


PARALLEL_TEAMS = Scenario(
    "parallel_teams", "e", "three teams' agents chase the same slow session-cache", [SESSION_CACHE], _setup_e,
    teams=[("checkout", CHECKOUT), ("orders", ORDERS), ("platform", SESSION_CACHE)],
    context={"owner_team": "platform"},
    expect={"policy": "shared_dependency", "selected_by_team": {"checkout": "defer_to_owner", "orders": "defer_to_owner",
                                                                "platform": "fix_dependency"},
            "verb": "patch", "kind": "HorizontalPodAutoscaler", "status": "applied", "runs": 3})

# ---- (f) ---------------------------------------------------------------------------------------------------


def _setup_f(cluster) -> None:
    deployment(cluster, "shop", "orders", replicas=2)


def _slow_orders(cluster) -> None:
    # The orders table crossed the size where the planner stops caching the scan.
    cluster.workloads.configure("shop", "orders", base_latency_ms=420)


def orders_db_stats(service: str) -> dict:
    """pg_stat_statements of the (simulated) orders database: one query scanning the table."""
    return {"slow_query": {"table": "orders", "column": "customer_id", "mean_ms": 380.0, "rows_examined": 4_100_000,
                           "query": "SELECT * FROM orders WHERE customer_id = $1 ORDER BY created_at DESC LIMIT 20"},
            "table_rows": 4_200_000, "db_connections_used": 22, "db_connections_max": 100}


DB_MIGRATION = Scenario(
    "db_migration", "f", "orders slows on a missing index; the migration waits for a person", [ORDERS], _setup_f,
    events=[(185, "orders table passes 4M rows", _slow_orders)], context={"db_stats": orders_db_stats},
    trust_level=2,
    expect={"policy": "db_migration", "selected": "create_index_migration",
            "rejected": {"raise_db_pool", "add_read_replica", "no_action"},
            "verb": "create", "kind": "Job", "status": "awaiting_approval", "incident_status": "open"})

# ---- (g) ---------------------------------------------------------------------------------------------------


def _setup_g(cluster) -> None:
    namespace(cluster, "shop")
    cluster.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "checkout-flags", "namespace": "shop"},
                    "data": {"feature.new_checkout": "true", "feature.gift_cards": "false"}}, field_manager="helm")
    deployment(cluster, "shop", "checkout", replicas=3, env_from=["checkout-flags"],
               flag_configmap="checkout-flags", flag_key="feature.new_checkout")


def _flag_breaks(cluster) -> None:
    # The new checkout's downstream starts failing: pods with the flag on answer with errors.
    cluster.workloads.configure("shop", "checkout", flag_error_rate=0.3)


def _flag_off(cluster) -> None:
    cluster.patch("v1", "ConfigMap", "shop", "checkout-flags", {"data": {"feature.new_checkout": "false"}},
                  field_manager="kubectl-edit")


FEATURE_FLAG = Scenario(
    "feature_flag", "g", "new checkout turned off in its ConfigMap; pods keep the old value until restarted",
    [CHECKOUT], _setup_g,
    events=[(62, "new checkout's downstream starts failing", _flag_breaks),
            (65, "on-call sets feature.new_checkout=false with kubectl edit", _flag_off)],
    expect={"policy": "feature_flag", "selected": "rolling_restart",
            "rejected": {"patch_configmap", "rollback_revision", "no_action"},
            "verb": "restart", "kind": "Deployment", "status": "applied", "verified": "success",
            "incident_status": "resolved"})

# ---- noise -------------------------------------------------------------------------------------------------
NOISE_SERVICES = [Service("shop", n, slo_latency_ms=300, team="shop") for n in ("frontend", "recommendations", "reviews",
                                                                                "inventory")] + \
                 [Service("platform", n, slo_latency_ms=300, team="platform") for n in ("auth", "gateway")]
# (service index, minute after 22:00 of the sweep that catches the blip)
BLIPS = [(0, 20), (1, 50), (2, 110), (3, 170), (4, 230), (5, 300), (0, 340), (1, 400), (2, 450), (3, 510)]


def _setup_noise(cluster) -> None:
    for i, svc in enumerate(NOISE_SERVICES):
        # A blip starts a minute before the sweep that sees it and is over three minutes later.
        blips = [m for j, m in BLIPS if j == i]
        deployment(cluster, svc.namespace, svc.name, replicas=2, base_rps=60, **spike(blips[0] - 1, 3, 3.0))
        cluster.sim.setdefault("noise_blips", {})[svc.key] = blips


def _blip(svc_key: str, minute: float):
    def fn(cluster):
        ns, name = svc_key.split("/")
        cluster.workloads.configure(ns, name, **spike(minute - 1, 3, 3.0))
    return fn


NOISE = Scenario(
    "noise", "-", "traffic blips that clear by themselves", NOISE_SERVICES, _setup_noise,
    events=[(m - 5, f"traffic blip ahead for {NOISE_SERVICES[j].key}", _blip(NOISE_SERVICES[j].key, m))
            for k, (j, m) in enumerate(BLIPS) if m != min(mm for jj, mm in BLIPS if jj == j)],
    expect={"policy": "hpa_capacity", "selected": "no_action", "status": None, "incident_status": "resolved"})

SCENARIOS: dict[str, Scenario] = {s.key: s for s in [HPA_STARVATION, MEMORY_LEAK, BAD_ROLLOUT, WRONG_TOOL, PARALLEL_TEAMS,
                                                     DB_MIGRATION, FEATURE_FLAG, NOISE]}
INCIDENT_SCENARIOS = [k for k in SCENARIOS if k != "noise"]


def services(scenarios: list[Scenario]) -> list[Service]:
    out, seen = [], set()
    for s in scenarios:
        for svc in s.services + [own for _, own in s.teams]:
            if svc.key not in seen:
                seen.add(svc.key)
                out.append(svc)
    return out


def scenario_of(svc: Service, scenarios: list[Scenario]) -> Scenario | None:
    return next((s for s in scenarios if any(x.key == svc.key for x in s.services)), None)
