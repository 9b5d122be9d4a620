"""The reference agent's runbooks: what it reads, which policy decides, what it changes.

Each runbook takes the `Agent` (its tools, its recorder, its trust level), the run's `Outcome`
to fill in, and the service an alert fired for; it returns the incident's closing status
(resolved, mitigated, escalated, or open while a person has to act). Reads go through the
agent's tools, choices through `policy.py`, writes through `Agent.change()`. Each read that goes
into a decision runs inside `agent.feeding(<input keys>)`, so the decision names it as a source.

Each change is judged by the `Check`s of its runbook (`CHECKS`): the agent verifies the first one
once, and records all of them with the change as its analysis (Argo metric specs,
docs/analysis.md), so a guard can keep measuring after the agent has moved on, against the same
thresholds. Recorded before and after state is a partial Kubernetes object or dotted paths of
real fields, which a rollback resolves against the live object.
"""

from __future__ import annotations

import json
import operator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from afterfix.nightshift import policy as policies
    from afterfix.nightshift.agent import Agent, Outcome, Service

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
REVISION = "deployment.kubernetes.io/revision"
ERROR_RATE_OK = 0.05  # a change that leaves errors under this worked


@dataclass(frozen=True)
class Check:
    """One way a change is judged: `signal` is good while `signal <op> threshold`.

    The verification measures once, `after_s` after the change; the analysis starts measuring
    then (initialDelay) and takes `count` measurements `interval` apart, forgiving `failure_limit`
    bad ones. Its successCondition is the verification's test and its failureCondition the
    opposite, so the guard and the agent never disagree about one value.
    """

    name: str  # the analysis' name: "analysis latency-p95 failed: ..."
    signal: str  # the agent's signal; afterfix.workload.<signal> in the store
    op: str  # "<" or "<="
    after_s: float = 300.0
    interval: str = "60s"
    count: int = 5
    failure_limit: int = 1

    def good(self, value: float, threshold: float) -> bool:
        return _OPS[self.op](value, threshold)

    def spec(self, threshold: float, workload: str | None = None) -> dict:
        """The Argo metric spec; `workload` names the Deployment to measure when the target is not
        the workload itself (an HPA's scaleTargetRef), else the target's `{{name}}` is."""
        bound = _number(threshold)
        return {"name": self.name, "initialDelay": _duration(self.after_s), "interval": self.interval,
                "count": self.count, "successCondition": f"result {self.op} {bound}",
                "failureCondition": f"result {_NOT[self.op]} {bound}", "failureLimit": self.failure_limit,
                "consecutiveErrorLimit": 4,
                "provider": {"afterfix": {"metric": f"afterfix.workload.{self.signal}",
                                          "labels": {"k8s.namespace.name": "{{namespace}}",
                                                     "k8s.deployment.name": workload or "{{name}}"}}}}


_OPS = {"<": operator.lt, "<=": operator.le}
_NOT = {"<": ">=", "<=": ">"}

LATENCY = Check("latency-p95", "latency_p95_ms", "<=")  # within the service's SLO
ERRORS = Check("error-rate", "error_rate", "<")  # under 5 % of requests
MEMORY = Check("memory", "memory_mb", "<", after_s=120, interval="2m")  # under half the limit after a restart
RESTARTS = Check("restarts", "restarts", "<=", after_s=120, failure_limit=0)  # no OOM kill since the restart

# What each runbook's change is judged by; the first is the one the agent verifies.
CHECKS: dict[str, tuple[Check, ...]] = {
    "capacity": (LATENCY,),  # more replicas: latency back within the SLO
    "shared_dependency": (LATENCY,),  # the dependency's HPA raised: its latency within the SLO
    "memory": (MEMORY, RESTARTS),  # a leak restarted: memory down, and no container killed since
    "bad_rollout": (ERRORS,),  # the release rolled back: errors gone
    "feature_flag": (ERRORS,),  # pods restarted onto the new ConfigMap: errors gone
}


def analysis(runbook: str, thresholds: dict[str, float | None], workload: str | None = None) -> dict | list[dict] | None:
    """The analysis a runbook's change records: one metric spec per check of CHECKS[runbook] whose
    threshold is known (`thresholds` by signal), one object when there is one, else a list."""
    specs = [check.spec(thresholds[check.signal], workload) for check in CHECKS[runbook]
             if thresholds.get(check.signal) is not None]
    return None if not specs else specs[0] if len(specs) == 1 else specs


def _verify(agent: Agent, out: Outcome, runbook: str, action_id: str, svc: Service, before: float,
            threshold: float) -> None:
    """The agent's own check of a change: the runbook's first Check, measured once."""
    check = CHECKS[runbook][0]
    out.verified, _ = agent.verify(action_id, svc, check.signal, before, after_s=check.after_s,
                                   good=lambda v: check.good(v, threshold))


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g}m" if seconds % 60 == 0 else f"{seconds:g}s"


def _number(value: float) -> str:
    """A threshold as a condition writes it: 300, 0.05, 256 (the exact value when %g would round it)."""
    text = f"{value:g}"
    return text if float(text) == value else repr(float(value))


def for_signal(svc: Service, signal: str):
    """The runbook an alert goes to: by signal, and for latency by the service's own runbook."""
    if signal == "memory_mb":
        return memory
    if signal == "error_rate":
        return errors
    return {"capacity": capacity, "db": db, "shared_dependency": shared_dependency}[svc.runbook]


def _recheck(agent: Agent, svc: Service) -> dict:
    """Confirm before acting: wait three simulated minutes and measure again."""
    agent.wait(180)
    return agent.observe(svc)


def _settle(agent: Agent, out: Outcome, policy: str, obs: dict) -> tuple[policies.Choice, str]:
    choice, decision_id = agent.decide(policy, obs)
    out.policy, out.choice = policy, choice
    return choice, decision_id


def capacity(agent: Agent, out: Outcome, svc: Service, *, defect: str | None = None, **_) -> str:
    """Latency over the SLO: find the autoscaler, add capacity where it is capped, verify.

    `defect="wrong_tool"` makes the third tool call the wrong one (scenario d)."""
    # Tool call 1: is it still slow; 2: the Deployment; 3: its autoscaler; then the rest.
    agent.wait(180)
    agent.scrape()
    with agent.feeding("metrics"):
        metrics = {"latency_p95_ms": agent.prometheus_query("latency_p95_ms", svc.namespace, svc.name)}
    with agent.feeding("deployment"):
        deploy = agent.kubectl_get("deployments", svc.namespace, svc.name)
    with agent.feeding("hpa"):
        if defect == "wrong_tool":
            # A subtly wrong call: the wrong resource in a misspelt namespace. It answers with an
            # empty list, and the steps after it take that for "this service has no HPA".
            typo = svc.namespace[0] + svc.namespace[2] + svc.namespace[1] + svc.namespace[3:]
            found = agent.kubectl_get("replicasets", typo, label_selector=f"app={svc.name}")
            hpa = _hpa_facts(next(iter(found["items"]), None))
        else:
            found = agent.kubectl_get("horizontalpodautoscalers", svc.namespace)
            hpa = _hpa_facts(next((h for h in found["items"]
                                   if h["spec"]["scaleTargetRef"].get("name") == svc.name), None))
    with agent.feeding("metrics"):
        for signal in ("error_rate", "cpu_utilization", "memory_mb", "restarts", "replicas"):
            metrics[signal] = agent.prometheus_query(signal, svc.namespace, svc.name)
    agent.kubectl_events(svc.namespace, svc.name)
    obs = {"service": svc.key, "slo_latency_ms": svc.slo_latency_ms, "metrics": metrics, "hpa": hpa,
           "deployment": {"replicas": deploy["spec"]["replicas"]}, "max_replicas_cap": 12}
    choice, did = _settle(agent, out, "hpa_capacity", obs)
    opt = choice.chosen
    if opt is None or not opt.action.get("patch"):
        return "resolved"
    resource = "horizontalpodautoscalers" if opt.action["kind"] == "HorizontalPodAutoscaler" else "deployments"
    patch = opt.action["patch"]
    field = "maxReplicas" if resource == "horizontalpodautoscalers" else "replicas"
    action_id, out.action_status = agent.change(
        verb="patch" if field == "maxReplicas" else "scale", resource=resource, namespace=svc.namespace,
        name=opt.action["name"], decision_id=did, make_patch=lambda obj: patch,
        touched=lambda obj: {f"spec.{field}": obj["spec"].get(field)},
        analysis=lambda obj: analysis("capacity", {"latency_p95_ms": svc.slo_latency_ms}, _workload(obj)))
    if out.action_status != "applied":
        return "open"
    _verify(agent, out, "capacity", action_id, svc, metrics["latency_p95_ms"], svc.slo_latency_ms)
    return "resolved" if out.verified == "success" else "escalated"


def memory(agent: Agent, out: Outcome, svc: Service, **_) -> str:
    """Memory near the limit: measure the growth over three minutes, then restart (and escalate
    when it is back after an earlier restart tonight)."""
    with agent.feeding("growth_mb_per_hour"):
        first = agent.observe(svc)
    with agent.feeding("metrics", "growth_mb_per_hour"):
        metrics = _recheck(agent, svc)
    with agent.feeding("memory_limit_mb", "last_rollout_age_h", "agent_restarts_tonight"):
        deploy = agent.kubectl_get("deployments", svc.namespace, svc.name)
    with agent.feeding("pods"):
        pods = agent.kubectl_get("pods", svc.namespace, label_selector=f"app={svc.name}")
    agent.kubectl_events(svc.namespace, svc.name)
    now = agent.now()
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    limit = _memory_mb(((container.get("resources") or {}).get("limits") or {}).get("memory"), svc.memory_limit_mb)
    growth = (metrics["memory_mb"] - first["memory_mb"]) / (180 / 3600)
    restarted = (deploy["spec"]["template"].get("metadata", {}).get("annotations") or {}).get(RESTARTED_AT)
    obs = {"service": svc.key, "metrics": metrics, "pods": len(pods["items"]),
           "memory_limit_mb": limit, "growth_mb_per_hour": round(growth, 3),
           "last_rollout_age_h": round(_rollout_age_h(deploy, now), 3),
           "agent_restarts_tonight": 1 if restarted and now - (_epoch(restarted) or 0) < 12 * 3600 else 0}
    choice, did = _settle(agent, out, "memory_leak", obs)
    opt = choice.chosen
    if opt is None or not opt.action.get("restart"):
        return "resolved"
    # Restarts so far: one more in the minutes after the restart is the leak killing a container.
    thresholds = {"memory_mb": 0.5 * limit, "restarts": metrics.get("restarts")}
    action_id = _restart(agent, out, svc, did, analysis("memory", thresholds))
    if out.action_status != "applied":
        return "open"
    _verify(agent, out, "memory", action_id, svc, metrics["memory_mb"], thresholds["memory_mb"])
    if opt.action.get("escalate"):
        return "escalated"
    return "mitigated" if out.verified == "success" else "escalated"


def _restart(agent: Agent, out: Outcome, svc: Service, decision_id: str, spec: dict | list[dict] | None) -> str:
    stamp = datetime.fromtimestamp(agent.now(), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    action_id, out.action_status = agent.change(
        verb="restart", resource="deployments", namespace=svc.namespace, name=svc.name, decision_id=decision_id,
        make_patch=lambda obj: {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}},
        touched=lambda obj: {f"spec.template.metadata.annotations.{RESTARTED_AT}":
                             (obj["spec"]["template"].get("metadata", {}).get("annotations") or {}).get(RESTARTED_AT),
                             "metadata.generation": obj["metadata"].get("generation")},
        analysis=spec)
    return action_id


def errors(agent: Agent, out: Outcome, svc: Service, **_) -> str:
    """Errors: a fresh rollout is rolled back; a ConfigMap changed under running pods means a restart."""
    with agent.feeding("metrics"):
        metrics = _recheck(agent, svc)
    # The Deployment feeds whichever runbook it leads to; the decision keeps the keys it has.
    with agent.feeding("rollout_age_min", "current", "template_age_h", "configmap", "pods_started_before_change"):
        deploy = agent.kubectl_describe("deployments", svc.namespace, svc.name)["object"]
    now = agent.now()
    if _rollout_age_h(deploy, now) * 60 <= 90:
        return _bad_rollout(agent, out, svc, deploy, metrics, now)
    return _feature_flag(agent, out, svc, deploy, metrics, now)


def _bad_rollout(agent: Agent, out: Outcome, svc: Service, deploy: dict, metrics: dict, now: float) -> str:
    with agent.feeding("current", "previous"):
        sets = agent.kubectl_get("replicasets", svc.namespace, label_selector=f"app={svc.name}")["items"]
    with agent.feeding("pod_reasons"):
        pods = agent.kubectl_get("pods", svc.namespace, label_selector=f"app={svc.name}")["items"]
    reasons: dict[str, int] = {}
    for p in pods:
        for cs in p.get("status", {}).get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            key = waiting.get("reason") or ("Ready" if cs.get("ready") else "NotReady")
            reasons[key] = reasons.get(key, 0) + 1
    by_rev = sorted(sets, key=lambda rs: int((rs["metadata"].get("annotations") or {}).get(REVISION, "0")))
    cur_rev = (deploy["metadata"].get("annotations") or {}).get(REVISION)
    current = next((rs for rs in by_rev if rs["metadata"]["annotations"].get(REVISION) == cur_rev), by_rev[-1])
    older = [rs for rs in by_rev if rs is not current]
    previous = older[-1] if older else None
    obs = {"service": svc.key, "metrics": metrics, "baseline_error_rate": 0.01,
           "rollout_age_min": round(_rollout_age_h(deploy, now) * 60, 1), "pod_reasons": reasons,
           "current": _revision_facts(current), "previous": _revision_facts(previous) if previous else None}
    choice, did = _settle(agent, out, "bad_rollout", obs)
    opt = choice.chosen
    if opt is None or opt.id != "rollback_revision":
        return "resolved" if opt and opt.id == "no_action" else "open"
    template = _strip_hash(previous["spec"]["template"])
    action_id, out.action_status = agent.change(
        verb="rollback", resource="deployments", namespace=svc.namespace, name=svc.name, decision_id=did,
        make_patch=lambda obj: {"spec": {"template": template}}, touched=_template_facts,
        analysis=analysis("bad_rollout", {"error_rate": ERROR_RATE_OK}))
    if out.action_status != "applied":
        return "open"
    _verify(agent, out, "bad_rollout", action_id, svc, metrics["error_rate"], ERROR_RATE_OK)
    return "resolved" if out.verified == "success" else "escalated"


def _feature_flag(agent: Agent, out: Outcome, svc: Service, deploy: dict, metrics: dict, now: float) -> str:
    # The ConfigMaps the pods read, and which of them changed most recently.
    spec = deploy["spec"]["template"]["spec"]
    names = sorted({(src.get("configMapRef") or {}).get("name") for c0 in spec["containers"]
                    for src in c0.get("envFrom") or []} - {None})
    cm, changed, keys = {"data": {}, "metadata": {"name": ""}}, 0.0, []
    with agent.feeding("configmap", "pods_started_before_change"):
        for name in names:
            obj = agent.kubectl_get("configmaps", svc.namespace, name)
            t, k = _configmap_change(obj)
            if t >= changed:
                cm, changed, keys = obj, t, k
    cm_name, key = cm["metadata"]["name"], (keys[0] if keys else "")
    with agent.feeding("pods_started_before_change", "pods_total"):
        pods = agent.kubectl_get("pods", svc.namespace, label_selector=f"app={svc.name}")["items"]
    stale = sum(1 for p in pods if (_epoch(p.get("status", {}).get("startTime")) or 0) < changed)
    obs = {"service": svc.key, "metrics": metrics,
           "configmap": {"name": cm_name, "key": key, "value": (cm.get("data") or {}).get(key),
                         "wanted": (cm.get("data") or {}).get(key),
                         "changed_min_ago": round((now - changed) / 60, 1)},
           "pods_started_before_change": stale, "pods_total": len(pods),
           "template_age_h": round(_rollout_age_h(deploy, now), 3)}
    choice, did = _settle(agent, out, "feature_flag", obs)
    opt = choice.chosen
    if opt is None or opt.id != "rolling_restart":
        return "open"
    action_id = _restart(agent, out, svc, did, analysis("feature_flag", {"error_rate": ERROR_RATE_OK}))
    if out.action_status != "applied":
        return "open"
    _verify(agent, out, "feature_flag", action_id, svc, metrics["error_rate"], ERROR_RATE_OK)
    return "resolved" if out.verified == "success" else "escalated"


def db(agent: Agent, out: Outcome, svc: Service, *, db_stats: Callable[[str], dict] | None = None, **_) -> str:
    """Latency from the database: read pg_stat_statements (`db_stats`), propose a migration,
    which always waits for a person; once approved, the migration runs as a Job."""
    with agent.feeding("metrics"):
        metrics = _recheck(agent, svc)
    agent.kubectl_describe("deployments", svc.namespace, svc.name)
    with agent.feeding() as feed:
        stats = agent.tool("pg_stat_statements", {"database": f"{svc.name}-db", "order_by": "mean_exec_time", "limit": 1},
                           lambda: db_stats(svc.key) if db_stats else {}, lambda r: r)
        feed.add(*stats)
    obs = {"service": svc.key, "metrics": metrics, "slo_latency_ms": svc.slo_latency_ms, **stats}
    choice, did = _settle(agent, out, "db_migration", obs)
    opt = choice.chosen
    if opt is None or opt.id != "create_index_migration":
        return "open"
    sql = opt.action["sql"]
    _, out.action_status = agent.propose(
        verb="create", kind="Job", api_version="batch/v1", namespace=svc.namespace, name=opt.action["name"],
        decision_id=did, summary=f"create Job {svc.namespace}/{opt.action['name']} to run on {svc.name}-db: {sql}",
        spec={"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": opt.action["name"]},
              "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
                  {"name": "migrate", "image": "postgres:16", "command": ["psql", "-c", sql]}]}}}})
    return "mitigated" if out.action_status == "applied" else "open"


def run_migration_agent(store, kubeconfig: str, *, metrics_url: str | None = None, service: Service | None = None,
                        incident_id: str | None = None, agent_name: str = "reference-agent", timeout_s: float = 600.0,
                        poll_s: float = 1.0, db_stats: Callable[[str], dict] | None = None) -> Outcome:
    """The database-migration incident, live: a CLI-free entry for a background process.

    Against a running simulator (`kubeconfig`; its `/metrics` unless `metrics_url`) whose cluster
    has the db_migration scenario set up and its slowdown applied, the reference agent at trust
    level 2 sweeps `service` (default: shop/orders), opens the incident, runs the `db` runbook, asks
    for approval in `store` and waits in real time up to `timeout_s`, polling every `poll_s`
    seconds; once approved it creates the migration Job (dry-run first). The runbook's simulated
    waits pass as `poll_s` real seconds. Spans go into `store` when the run ends. Returns the
    Outcome (`action_status` "applied" once the Job exists, "awaiting_approval" if it expired).
    """
    import time

    import yaml

    from afterfix import AfterfixError
    from afterfix.nightshift import scenarios
    from afterfix.nightshift.agent import Agent
    from afterfix.undo.trace import recording

    svc = service or scenarios.ORDERS
    if metrics_url is None:
        try:
            config = yaml.safe_load(open(kubeconfig))
            metrics_url = config["clusters"][0]["cluster"]["server"].rstrip("/") + "/metrics"
        except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError) as e:
            raise AfterfixError(f"{kubeconfig}: no cluster server to read /metrics from ({e}); pass metrics_url=") from None
    incident_id = incident_id or f"INC-live-{int(time.time())}"
    store.create()
    with recording(store, agent_name) as rec:
        agent = Agent(kubeconfig=str(kubeconfig), metrics_url=metrics_url, recorder=rec, trust_level=2,
                      wait=lambda s: time.sleep(min(s, poll_s)), now=time.time, approval_timeout_s=timeout_s,
                      agent_name=agent_name, team=svc.team, llm_tokens=False, store=store)
        agent.approval_poll_s = poll_s
        try:
            found = [f for f in agent.sweep([svc]) if f[1] == "latency_p95_ms"]
            if not found:
                raise AfterfixError(f"{svc.key}: p95 latency is within its SLO, so there is no incident to handle; set "
                                    "the cluster up with scenarios.DB_MIGRATION (setup and its events) first")
            _, signal, value, threshold = found[0]
            out = agent.handle(incident_id, svc, signal, value, threshold,
                               db_stats=db_stats or scenarios.DB_MIGRATION.context["db_stats"])
        finally:
            agent.close()
    return out


def shared_dependency(agent: Agent, out: Outcome, svc: Service, *, own: Service | None = None,
                      owner_team: str = "platform", **_) -> str:
    """A team's agent looks at its own service and at the shared dependency, then acts or defers."""
    own = own or svc
    with agent.feeding("metrics"):
        own_metrics = agent.observe(own)
    agent.kubectl_get("deployments", own.namespace, own.name)
    with agent.feeding("dependency"):
        dep_metrics = agent.observe(svc)
        hpas = agent.kubectl_get("horizontalpodautoscalers", svc.namespace)["items"]
    hpa = _hpa_facts(next((h for h in hpas if h["spec"]["scaleTargetRef"].get("name") == svc.name), None))
    agent.kubectl_events(svc.namespace, svc.name)
    obs = {"team": agent.team, "service": own.key, "metrics": own_metrics, "slo_latency_ms": own.slo_latency_ms,
           "dependency": {"service": svc.key, "owner_team": owner_team, "hpa": hpa, "metrics": dep_metrics}}
    choice, did = _settle(agent, out, "shared_dependency", obs)
    agent.checkpoint()
    opt = choice.chosen
    if opt is None or opt.id != "fix_dependency":
        return "open"
    patch = opt.action["patch"]
    action_id, out.action_status = agent.change(
        verb="patch", resource="horizontalpodautoscalers", namespace=svc.namespace, name=opt.action["name"],
        decision_id=did, make_patch=lambda obj: patch,
        touched=lambda obj: {"spec.maxReplicas": obj["spec"].get("maxReplicas")},
        analysis=lambda obj: analysis("shared_dependency", {"latency_p95_ms": svc.slo_latency_ms}, _workload(obj)))
    if out.action_status != "applied":
        return "open"
    _verify(agent, out, "shared_dependency", action_id, svc, dep_metrics["latency_p95_ms"], svc.slo_latency_ms)
    return "resolved" if out.verified == "success" else "escalated"


# ---- facts read off Kubernetes objects ------------------------------------------------------


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()


def _memory_mb(q: str | None, default: float) -> float:
    if not q:
        return default
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    for suffix, factor in units.items():
        if str(q).endswith(suffix):
            return float(str(q)[: -len(suffix)]) * factor
    return float(q) / 2 ** 20


def _hpa_facts(hpa: dict | None) -> dict | None:
    if not hpa or hpa.get("kind") not in (None, "HorizontalPodAutoscaler") or "scaleTargetRef" not in hpa.get("spec", {}):
        return None
    target = 80
    for m in hpa["spec"].get("metrics") or []:
        if (m.get("resource") or {}).get("name") == "cpu":
            target = (m["resource"].get("target") or {}).get("averageUtilization", 80)
    status = hpa.get("status") or {}
    return {"name": hpa["metadata"]["name"], "minReplicas": hpa["spec"].get("minReplicas", 1),
            "maxReplicas": hpa["spec"]["maxReplicas"], "currentReplicas": status.get("currentReplicas"),
            "desiredReplicas": status.get("desiredReplicas"), "targetCPUUtilizationPercentage": target}


def _rollout_age_h(deploy: dict, now: float) -> float:
    """Hours since the Deployment's pod template last changed, from its managedFields times."""
    changed = _epoch(deploy["metadata"].get("creationTimestamp")) or now
    for mf in deploy["metadata"].get("managedFields") or []:
        if "f:template" in ((mf.get("fieldsV1") or {}).get("f:spec") or {}):
            changed = max(changed, _epoch(mf.get("time")) or 0)
    return max(0.0, (now - changed) / 3600)


def _configmap_change(cm: dict) -> tuple[float, list[str]]:
    """When the ConfigMap's data last changed, and the keys that newest writer owns."""
    newest, keys = 0.0, []
    for mf in (cm.get("metadata") or {}).get("managedFields") or []:
        data = (mf.get("fieldsV1") or {}).get("f:data")
        t = _epoch(mf.get("time")) or 0.0
        if data and t >= newest:
            newest, keys = t, sorted(k[2:] for k in data if k.startswith("f:"))
    return newest, keys


def _strip_hash(template: dict) -> dict:
    out = json.loads(json.dumps(template))
    (out.get("metadata") or {}).get("labels", {}).pop("pod-template-hash", None)
    return out


def _revision_facts(rs: dict) -> dict:
    c0 = rs["spec"]["template"]["spec"]["containers"][0]
    return {"revision": int((rs["metadata"].get("annotations") or {}).get(REVISION, "0")), "image": c0.get("image"),
            "env": {e["name"]: e.get("value") for e in c0.get("env") or [] if "value" in e}}


def _template_facts(deploy: dict) -> dict:
    """What a rollback changes, as the partial Deployment it is (`kubectl get -o json` field names):
    the revision annotation, and every container by name with its image and the env items that have
    a value (those from a ConfigMap or Secret are not the template's to record)."""
    containers = []
    for c0 in deploy["spec"]["template"]["spec"]["containers"]:
        container = {"name": c0["name"], "image": c0.get("image")}
        env = [{"name": e["name"], "value": e["value"]} for e in c0.get("env") or [] if "value" in e]
        if env:  # an empty list would read as "no env at all" to whatever restores this state
            container["env"] = env
        containers.append(container)
    facts: dict = {"spec": {"template": {"spec": {"containers": containers}}}}
    revision = (deploy["metadata"].get("annotations") or {}).get(REVISION)
    if revision is not None:
        facts = {"metadata": {"annotations": {REVISION: revision}}, **facts}
    return facts


def _workload(obj: dict) -> str | None:
    """The Deployment an HPA scales (its scaleTargetRef), named in its analysis; None when the
    object is the workload itself."""
    return ((obj.get("spec") or {}).get("scaleTargetRef") or {}).get("name")
