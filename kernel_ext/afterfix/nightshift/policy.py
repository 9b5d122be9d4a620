"""The reference agent's decision functions: recorded observations in, a `Choice` out.

Every function here is pure: it reads only its `observations` dict (JSON-safe values) and
returns the same `Choice` for the same input. The agent records the policy name and the
observations on each decision span, so `POLICIES[name](json.loads(inputs))` reproduces the
choice later (replay, regression tests). Options that cannot win still appear, rejected with
the reason, because the review is about why the others lost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Option:
    """One candidate fix: what it would change, what speaks for it, and the verdict."""

    id: str
    description: str
    action: dict = field(default_factory=dict)
    evidence: tuple[str, ...] = ()
    score: float = 0.0
    verdict: str = "considered"  # selected | rejected | considered
    reason: str = ""


@dataclass(frozen=True)
class Choice:
    """The outcome of one decision: every option with its verdict, and the winner."""

    question: str
    options: tuple[Option, ...]
    selected: str | None
    reason: str

    def option(self, option_id: str) -> Option:
        for o in self.options:
            if o.id == option_id:
                return o
        raise KeyError(f"no option {option_id!r} in decision {self.question!r}")

    @property
    def chosen(self) -> Option | None:
        return self.option(self.selected) if self.selected else None

    def to_dict(self) -> dict:
        return {
            "question": self.question,
            "selected": self.selected,
            "reason": self.reason,
            "options": [
                {"id": o.id, "description": o.description, "action": o.action, "evidence": list(o.evidence),
                 "score": o.score, "verdict": o.verdict, "reason": o.reason}
                for o in self.options
            ],
        }


def _settle(question: str, candidates: list[tuple[str, str, dict, list[str], float, str | None]], why: dict[str, str]) -> Choice:
    """Pick the best-scoring candidate whose veto is None; everything else is rejected.

    Each candidate is (id, description, action, evidence, score, veto): a veto is the reason
    the option cannot be taken at all. Ties go to the earlier candidate, so the order in which
    a policy lists its options is part of its contract.
    """
    allowed = [c for c in candidates if c[5] is None]
    best = max(allowed, key=lambda c: c[4]) if allowed else None  # max keeps the first of equals
    options = []
    for cid, desc, action, evidence, score, veto in candidates:
        score = round(float(score), 3)
        if best is not None and cid == best[0]:
            options.append(Option(cid, desc, action, tuple(evidence), score, "selected", _pro(why[cid])))
        else:
            reason = veto or f"{_con(why[cid])} (scored {score} against {round(best[4], 3)} for {best[0]})"
            options.append(Option(cid, desc, action, tuple(evidence), score, "rejected", reason))
    return Choice(question, tuple(options), best[0] if best else None, _pro(why[best[0]]) if best else "no option was admissible")


def _pro(why: str | tuple[str, str]) -> str:
    return why[0] if isinstance(why, tuple) else why


def _con(why: str | tuple[str, str]) -> str:
    return why[1] if isinstance(why, tuple) else why


def _m(obs: dict, key: str, default: float = 0.0) -> float:
    v = (obs.get("metrics") or {}).get(key, default)
    return float(default if v is None else v)


# --- (a), (d) and noise: latency under load ----------------------------------------------


def decide_hpa_capacity(observations: dict) -> Choice:
    """Latency over the SLO: raise the HPA ceiling, scale the Deployment, restart, or wait.

    Reads: service, slo_latency_ms, metrics{latency_p95_ms, cpu_utilization, restarts,
    memory_mb, replicas}, hpa (None when no HPA was found) {name, minReplicas, maxReplicas,
    currentReplicas, targetCPUUtilizationPercentage}, max_replicas_cap.
    """
    svc = observations["service"]
    slo = float(observations["slo_latency_ms"])
    p95 = _m(observations, "latency_p95_ms")
    cpu = _m(observations, "cpu_utilization")
    replicas = int(_m(observations, "replicas", 1))
    restarts = int(_m(observations, "restarts"))
    hpa = observations.get("hpa")
    cap = int(observations.get("max_replicas_cap", 20))
    question = f"{svc}: p95 latency {p95:.0f} ms over the {slo:.0f} ms SLO; how to add capacity?"
    over = p95 > slo
    ev_lat = f"latency_p95_ms={p95:.0f} (SLO {slo:.0f})"
    ev_cpu = f"cpu_utilization={cpu:.2f}"
    cands, why = [], {}

    if hpa:
        target = float(hpa.get("targetCPUUtilizationPercentage") or 80) / 100.0
        at_max = int(hpa.get("currentReplicas") or replicas) >= int(hpa["maxReplicas"])
        want = min(cap, max(int(hpa["maxReplicas"]) + 1, math.ceil(replicas * cpu / max(target, 0.01)) + 1))
        veto = None
        if not over:
            veto = "latency is within the SLO"
        elif not at_max:
            veto = f"the HPA is not at its ceiling ({hpa.get('currentReplicas')} of {hpa['maxReplicas']}): it can still scale"
        cands.append(("raise_hpa_max", f"raise HPA {hpa['name']} maxReplicas {hpa['maxReplicas']} -> {want}",
                      {"kind": "HorizontalPodAutoscaler", "name": hpa["name"], "patch": {"spec": {"maxReplicas": want}}},
                      [ev_lat, ev_cpu, f"hpa {hpa['name']} at {hpa.get('currentReplicas')}/{hpa['maxReplicas']} replicas",
                       f"cpu target {target:.2f}"], 0.9 if at_max else 0.3, veto))
        why["raise_hpa_max"] = (f"the HPA is pinned at maxReplicas={hpa['maxReplicas']} with CPU {cpu:.2f} over its "
                                f"{target:.2f} target; {want} replicas bring CPU back under target")
        scale_veto = f"HPA {hpa['name']} owns spec.replicas and would scale it back within one sync period"
    else:
        scale_veto = None if over else "latency is within the SLO"
    want_replicas = min(cap, max(replicas + 1, math.ceil(replicas * max(cpu, 0.01) / 0.7)))
    cands.append(("scale_deployment", f"set Deployment {svc.split('/')[-1]} spec.replicas {replicas} -> {want_replicas}",
                  {"kind": "Deployment", "name": svc.split("/")[-1], "patch": {"spec": {"replicas": want_replicas}}},
                  [ev_lat, ev_cpu, "no HorizontalPodAutoscaler found" if not hpa else f"hpa {hpa['name']} present"],
                  0.7, scale_veto))
    why["scale_deployment"] = (f"no autoscaler manages {svc}; {want_replicas} replicas bring CPU near 0.7",
                               "a fixed replica count outlives the load and needs a person to undo it")
    if hpa:
        below = int(hpa.get("currentReplicas") or replicas) < int(hpa["maxReplicas"])
        cands.append(("wait_for_hpa", f"let HPA {hpa['name']} scale ({hpa.get('currentReplicas')} of {hpa['maxReplicas']})", {},
                      [ev_lat, ev_cpu, f"hpa desiredReplicas={hpa.get('desiredReplicas')}"], 0.6,
                      None if (over and below) else ("latency is within the SLO" if not over
                                                     else "the HPA is at its ceiling: waiting changes nothing")))
        why["wait_for_hpa"] = (f"the HPA is below its ceiling and scaling toward {hpa.get('desiredReplicas')}; "
                               "adding capacity by hand would fight it", "the HPA cannot scale further")
    cands.append(("restart_pods", f"rolling restart of {svc}",
                  {"kind": "Deployment", "name": svc.split("/")[-1], "restart": True},
                  [f"restarts={restarts}", f"memory_mb={_m(observations, 'memory_mb'):.0f}"], 0.1,
                  None if over else "latency is within the SLO"))
    why["restart_pods"] = ("a restart clears a wedged process",
                           "no crash or memory evidence: a restart would not add capacity")
    cands.append(("no_action", "wait and watch", {}, [ev_lat], 0.95 if not over else 0.0,
                  f"p95 {p95:.0f} ms breaches the {slo:.0f} ms SLO now" if over else None))
    why["no_action"] = ("latency is back within the SLO; the alert was transient", "latency is over the SLO")
    return _settle(question, cands, why)


# --- (b): memory growth ---------------------------------------------------------------------


def decide_memory_leak(observations: dict) -> Choice:
    """Memory grows toward the limit: restart, raise the limit, roll back, or wait.

    Reads: service, metrics{memory_mb, restarts}, memory_limit_mb, growth_mb_per_hour,
    last_rollout_age_h, agent_restarts_tonight.
    """
    svc = observations["service"]
    mem = _m(observations, "memory_mb")
    limit = float(observations["memory_limit_mb"])
    growth = float(observations["growth_mb_per_hour"])
    rollout_age = float(observations.get("last_rollout_age_h", 999))
    before = int(observations.get("agent_restarts_tonight", 0))
    hours_left = (limit - mem) / growth if growth > 0 else float("inf")
    name = svc.split("/")[-1]
    question = f"{svc}: memory {mem:.0f} of {limit:.0f} MB, growing {growth:.0f} MB/h; what now?"
    ev = [f"memory_mb={mem:.0f}", f"limit_mb={limit:.0f}", f"growth_mb_per_hour={growth:.0f}",
          f"hours_to_oom={hours_left:.1f}" if hours_left != float("inf") else "hours_to_oom=inf"]
    growing = growth > 10 and hours_left < 12
    cands, why = [], {}
    restart_id = "restart_and_escalate" if before else "restart_pods"
    cands.append((restart_id, f"rolling restart of {svc}" + (" and page the owning team" if before else ""),
                  {"kind": "Deployment", "name": name, "restart": True, "escalate": bool(before)},
                  ev + [f"agent restarts tonight={before}"], 0.8, None if growing else "memory is not growing toward the limit"))
    why[restart_id] = (f"memory grows steadily at {growth:.0f} MB/h and would hit the limit in {hours_left:.1f} h; a restart "
                       "resets it" + ("; it came back after tonight's earlier restart, so the owners must fix the leak" if before else ""))
    new_limit = int(limit * 1.5)
    cands.append(("raise_memory_limit", f"raise the memory limit {limit:.0f} -> {new_limit} MB",
                  {"kind": "Deployment", "name": name, "patch": {"memory_limit_mb": new_limit}},
                  ev, 0.4, None if growing else "memory is not growing toward the limit"))
    why["raise_memory_limit"] = ("more headroom until the owners fix the leak",
                                 f"only postpones the OOM by {(new_limit - limit) / max(growth, 1):.1f} h and changes the pod template")
    cands.append(("rollback_revision", f"roll {svc} back one revision", {"kind": "Deployment", "name": name, "rollback": True},
                  [f"last_rollout_age_h={rollout_age:.1f}"], 0.5,
                  f"the last rollout is {rollout_age:.1f} h old, older than the growth: nothing recent to undo" if rollout_age > 6 else None))
    why["rollback_revision"] = ("the growth began after the latest rollout",
                                "no evidence ties the growth to the latest rollout, and a rollback would undo its other changes")
    cands.append(("no_action", "wait and watch", {}, ev, 0.9 if not growing else 0.0,
                  f"the container would be OOM-killed in {hours_left:.1f} h, during peak traffic" if growing else None))
    why["no_action"] = ("memory is flat or far from the limit", "the container would be OOM-killed")
    return _settle(question, cands, why)


# --- (c): a bad rollout ----------------------------------------------------------------------


def _template_diff(a: dict, b: dict) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def decide_bad_rollout(observations: dict) -> Choice:
    """Errors right after a rollout: roll back the revision, patch the image, scale, or wait.

    Reads: service, metrics{error_rate}, baseline_error_rate, rollout_age_min, pod_reasons
    {reason: count}, current {revision, image, env}, previous {revision, image, env}.
    """
    svc = observations["service"]
    err = _m(observations, "error_rate")
    base = float(observations.get("baseline_error_rate", 0.01))
    age = float(observations["rollout_age_min"])
    cur, prev = observations["current"], observations.get("previous")
    name = svc.split("/")[-1]
    reasons = observations.get("pod_reasons") or {}
    question = f"{svc}: error rate {err:.1%} since revision {cur['revision']} rolled out {age:.0f} min ago; how to recover?"
    bad = err > max(5 * base, 0.05)
    fresh = age <= 120
    # What a rollback would change: from the current revision's template to the previous one's.
    diff = _template_diff({"image": cur["image"], **{f"env.{k}": v for k, v in cur["env"].items()}},
                          {"image": prev["image"], **{f"env.{k}": v for k, v in prev["env"].items()}}) if prev else []
    ev = [f"error_rate={err:.3f} (baseline {base:.3f})", f"rollout_age_min={age:.0f}"]
    ev += [f"pods {r}={n}" for r, n in sorted(reasons.items())]
    cands, why = [], {}
    veto = None
    if not prev:
        veto = "no earlier revision is recorded"
    elif not bad:
        veto = "the error rate is within the baseline"
    elif not fresh:
        veto = f"the rollout is {age:.0f} min old: the errors started later"
    cands.append(("rollback_revision",
                  f"roll {name} back from revision {cur['revision']} to {prev['revision'] if prev else '?'}",
                  {"kind": "Deployment", "name": name, "rollback_to": prev["revision"] if prev else None},
                  ev + [f"template diff revision {cur['revision']} -> {prev['revision'] if prev else '?'}: {d}" for d in diff],
                  0.85, veto))
    why["rollback_revision"] = (f"the errors began {age:.0f} min after revision {cur['revision']}; revision "
                                f"{prev['revision'] if prev else '?'} ran clean, and a rollback restores a tested template")
    cands.append(("patch_image", f"set only the image back to {prev['image'] if prev else '?'}",
                  {"kind": "Deployment", "name": name, "patch": {"image": prev["image"] if prev else None}},
                  ev, 0.6, veto))
    why["patch_image"] = ("keeps the rest of the new template",
                          "a hand-made template mixing two revisions has never run anywhere")
    cands.append(("scale_deployment", f"add replicas to {name}", {"kind": "Deployment", "name": name},
                  ev, 0.1, None if bad else "the error rate is within the baseline"))
    why["scale_deployment"] = ("more replicas spread the load",
                               "errors are per request, not load: more broken pods serve more errors")
    cands.append(("no_action", "wait and watch", {}, ev, 0.9 if not bad else 0.0,
                  f"{err:.1%} of requests fail now" if bad else None))
    why["no_action"] = ("the error rate is within the baseline", "requests are failing now")
    return _settle(question, cands, why)


# --- (e): one root cause, several teams -------------------------------------------------------


def decide_shared_dependency(observations: dict) -> Choice:
    """A team's service is slow because a shared dependency is: fix it if we own it, else defer.

    Reads: team, service, metrics (own), dependency{service, owner_team, hpa, metrics},
    slo_latency_ms.
    """
    team = observations["team"]
    svc = observations["service"]
    dep = observations["dependency"]
    slo = float(observations["slo_latency_ms"])
    own_cpu = _m(observations, "cpu_utilization")
    dep_p95 = float(dep["metrics"].get("latency_p95_ms", 0))
    dep_cpu = float(dep["metrics"].get("cpu_utilization", 0))
    hpa = dep.get("hpa") or {}
    owner = dep["owner_team"] == team
    dep_name = dep["service"].split("/")[-1]
    question = f"{team}: {svc} is slow; its dependency {dep['service']} answers in {dep_p95:.0f} ms. Who acts?"
    ev = [f"own cpu_utilization={own_cpu:.2f}", f"{dep['service']} latency_p95_ms={dep_p95:.0f}",
          f"{dep['service']} cpu_utilization={dep_cpu:.2f}", f"owner of {dep['service']}: {dep['owner_team']}"]
    dep_slow = dep_p95 > slo / 2
    want = int(hpa.get("maxReplicas", 1)) * 3 if hpa else None
    cands, why = [], {}
    cands.append(("fix_dependency", f"raise HPA {hpa.get('name')} maxReplicas to {want}",
                  {"kind": "HorizontalPodAutoscaler", "name": hpa.get("name"), "patch": {"spec": {"maxReplicas": want}}},
                  ev + [f"hpa {hpa.get('name')} at {hpa.get('currentReplicas')}/{hpa.get('maxReplicas')}"], 0.9,
                  None if (owner and dep_slow and hpa) else
                  (f"{dep['service']} belongs to {dep['owner_team']}: changing another team's service is theirs to do"
                   if not owner else "the dependency is not the bottleneck")))
    why["fix_dependency"] = f"we own {dep['service']}; its HPA is pinned at its ceiling while its CPU is {dep_cpu:.2f}"
    cands.append(("defer_to_owner", f"post findings to {dep['owner_team']} and watch", {"notify": dep["owner_team"]},
                  ev, 0.7, "we own the dependency ourselves" if owner else (None if dep_slow else "the dependency is healthy")))
    why["defer_to_owner"] = (f"the bottleneck is {dep['service']}, owned by {dep['owner_team']}; our own CPU is {own_cpu:.2f}",
                             "the owner's fix removes the cause; waiting on another team leaves customers waiting")
    cands.append(("scale_own_service", f"add replicas to {svc}", {"kind": "Deployment", "name": svc.split('/')[-1]},
                  ev, 0.2 if own_cpu > 0.7 else 0.05, None))
    why["scale_own_service"] = ("more replicas of our own service", f"our own CPU is {own_cpu:.2f}: time is spent waiting on {dep_name}, not computing")
    cands.append(("no_action", "wait and watch", {}, ev, 0.0 if dep_slow else 0.95, None))
    why["no_action"] = ("the dependency is healthy", "customers see the latency now")
    return _settle(question, cands, why)


# --- (f): a schema migration ---------------------------------------------------------------------


def decide_db_migration(observations: dict) -> Choice:
    """A slow query on a missing index: propose a migration (needs a person), pool, replica, wait.

    Reads: service, slow_query{table, column, mean_ms, rows_examined}, table_rows,
    metrics{latency_p95_ms}, slo_latency_ms, db_connections_used, db_connections_max.
    """
    svc = observations["service"]
    q = observations["slow_query"]
    rows = int(observations["table_rows"])
    used, mx = int(observations["db_connections_used"]), int(observations["db_connections_max"])
    p95 = _m(observations, "latency_p95_ms")
    slo = float(observations["slo_latency_ms"])
    name = svc.split("/")[-1]
    question = f"{svc}: queries on {q['table']}.{q['column']} take {q['mean_ms']:.0f} ms (full scans of {rows} rows); fix how?"
    ev = [f"mean_ms={q['mean_ms']:.0f}", f"rows_examined={q['rows_examined']}", f"table_rows={rows}",
          f"latency_p95_ms={p95:.0f} (SLO {slo:.0f})", f"db connections {used}/{mx}"]
    scans = int(q["rows_examined"]) >= rows // 2
    cands, why = [], {}
    index = f"idx_{q['table']}_{q['column']}"
    cands.append(("create_index_migration", f"run migration: CREATE INDEX CONCURRENTLY {index}",
                  {"kind": "Job", "name": f"{name}-migrate-{index.replace('_', '-')}", "requires_approval": True,
                   "sql": f"CREATE INDEX CONCURRENTLY {index} ON {q['table']} ({q['column']})"},
                  ev, 0.85, None if scans else "the query already uses an index"))
    why["create_index_migration"] = (f"every call scans ~{q['rows_examined']} rows of {q['table']}; an index on {q['column']} "
                                     "makes it a lookup. A schema change needs a person's approval")
    cands.append(("raise_db_pool", f"raise {name}'s DB pool", {"kind": "ConfigMap", "name": f"{name}-db"},
                  ev, 0.3, None))
    why["raise_db_pool"] = ("more connections for queued queries", f"connections are {used}/{mx}: slow queries, not a short pool, cause the wait")
    cands.append(("add_read_replica", "add a read replica", {"kind": "StatefulSet"}, ev, 0.4, None))
    why["add_read_replica"] = ("spreads reads over two servers", "a replica runs the same full scan; it spreads the cost without removing it")
    cands.append(("no_action", "wait and watch", {}, ev, 0.0 if p95 > slo else 0.9, None))
    why["no_action"] = ("latency is within the SLO", f"p95 {p95:.0f} ms stays over the SLO while the table grows")
    return _settle(question, cands, why)


# --- (g): a feature flag that has not taken effect --------------------------------------------------


def decide_feature_flag(observations: dict) -> Choice:
    """A ConfigMap flag was changed but errors continue: restart, re-patch, roll back, or wait.

    Reads: service, metrics{error_rate}, configmap{name, key, value, wanted, changed_min_ago},
    pods_started_before_change, pods_total, template_age_h.
    """
    svc = observations["service"]
    cm = observations["configmap"]
    err = _m(observations, "error_rate")
    stale = int(observations["pods_started_before_change"])
    total = int(observations["pods_total"])
    tmpl_age = float(observations["template_age_h"])
    name = svc.split("/")[-1]
    question = (f"{svc}: ConfigMap {cm['name']} set {cm['key']}={cm['value']} {cm['changed_min_ago']:.0f} min ago, "
                f"errors still {err:.1%}; why no effect?")
    ev = [f"error_rate={err:.3f}", f"{cm['key']}={cm['value']} (wanted {cm['wanted']})",
          f"pods started before the change: {stale}/{total}", f"template_age_h={tmpl_age:.1f}"]
    cands, why = [], {}
    cands.append(("rolling_restart", f"rolling restart of {svc} so pods read the new ConfigMap",
                  {"kind": "Deployment", "name": name, "restart": True}, ev, 0.9,
                  None if stale > 0 else "every pod started after the change already"))
    why["rolling_restart"] = (f"{stale} of {total} pods started before {cm['name']} changed and read it only at start; "
                              "ConfigMap changes do not restart pods")
    cands.append(("patch_configmap", f"set {cm['key']}={cm['wanted']} in {cm['name']}", {"kind": "ConfigMap", "name": cm["name"]},
                  ev, 0.2, f"{cm['name']} already holds {cm['key']}={cm['value']}" if cm["value"] == cm["wanted"] else None))
    why["patch_configmap"] = (f"{cm['name']} does not hold the wanted value",
                              "a ConfigMap patch alone does not reach pods that are already running")
    cands.append(("rollback_revision", f"roll {name} back one revision", {"kind": "Deployment", "name": name, "rollback": True},
                  ev, 0.3, f"the pod template is {tmpl_age:.1f} h old and unchanged tonight: nothing to roll back" if tmpl_age > 2 else None))
    why["rollback_revision"] = ("the template changed recently", "the errors follow the ConfigMap, not the template")
    cands.append(("no_action", "wait and watch", {}, ev, 0.0 if err > 0.05 else 0.95, None))
    why["no_action"] = ("errors are low", "running pods keep the old value until they restart; errors would continue all night")
    return _settle(question, cands, why)


POLICIES: dict[str, Callable[[dict], Choice]] = {
    "hpa_capacity": decide_hpa_capacity,
    "memory_leak": decide_memory_leak,
    "bad_rollout": decide_bad_rollout,
    "shared_dependency": decide_shared_dependency,
    "db_migration": decide_db_migration,
    "feature_flag": decide_feature_flag,
}


def replay(policy: str, observations: dict[str, Any]) -> Choice:
    """Run the named policy on recorded observations (for replay and regression tests)."""
    try:
        fn = POLICIES[policy]
    except KeyError:
        raise KeyError(f"unknown policy {policy!r}; known: {', '.join(sorted(POLICIES))}") from None
    return fn(observations)
