"""The reference SRE agent: observe, detect, decide, act, verify, and record all of it.

A deterministic, rule-based agent (no LLM). It reads metrics over HTTP (`GET /metrics`,
Prometheus text) and cluster state through the official `kubernetes` client with a kubeconfig;
every read is a `tool_call` span. An alert goes to a runbook (`runbooks.py`); each choice
there comes from a pure function in `policy.py`, recorded with its name and inputs so it can
be replayed. Every write is a server-side dry-run first,
then a merge patch carrying a resourceVersion precondition and fieldManager `afterfix-agent`,
recorded as an `action` span with before/after, resourceVersions and the analysis that should
watch it (the runbook's checks, as Argo metric specs), then verified after simulated minutes.

The trust level decides how far it goes: 1 recommends (status "recommended"), 2 asks for
approval and waits (bounded), 3 applies and sends an immediate notification (a webhook POST,
recorded in the `alerts` ledger with source "agent"), 4 applies and is left to the daily summary.
With a trust policy (`Agent(trust_policy=...)`, afterfix.trust.policy) each change gets its level
from the policy (its verb, kind, namespace and the run's scenario), recorded on the action span
with the rule that gave it (afterfix.trust.rule, afterfix.trust.policy); without one, every change
gets the agent's fixed `trust_level` and nothing is notified, as before policies existed.

Each run records the tools the agent may call as `gen_ai.tool.definitions` (their namespace
parameters list the cluster's namespaces), and each decision names the tool calls its inputs came
from (`sources`), so a review can tell a bad call and follow it to what it led to.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from afterfix import convention, sdk
from afterfix.nightshift import policy as policies
from afterfix.nightshift import runbooks
from afterfix.trust.policy import TrustPolicy, load_policy
from afterfix.undo.notify import Alert, Notifier

FIELD_MANAGER = "afterfix-agent"
MERGE_PATCH = "application/merge-patch+json"
SYNTHETIC_MODEL = "afterfix-reasoner-sim-1"  # no real model: shows token accounting in the review

# Prometheus metric names of the simulator, by the agent's own signal names.
METRICS = {
    "latency_p95_ms": ("afterfix_sim_latency_p95_seconds", 1000.0),
    "error_rate": ("afterfix_sim_error_ratio", 1.0),
    "cpu_utilization": ("afterfix_sim_cpu_utilization_ratio", 1.0),
    "memory_mb": ("afterfix_sim_memory_bytes", 1.0 / 2 ** 20),
    "restarts": ("afterfix_sim_restarts_total", 1.0),
    "replicas": ("afterfix_sim_replicas", 1.0),
    "rps": ("afterfix_sim_requests_per_second", 1.0),
}

# resource plural -> (api class, read method, list method, api_version, kind)
RESOURCES = {
    "deployments": ("AppsV1Api", "read_namespaced_deployment", "list_namespaced_deployment", "apps/v1", "Deployment"),
    "replicasets": ("AppsV1Api", "read_namespaced_replica_set", "list_namespaced_replica_set", "apps/v1", "ReplicaSet"),
    "horizontalpodautoscalers": ("AutoscalingV2Api", "read_namespaced_horizontal_pod_autoscaler",
                                 "list_namespaced_horizontal_pod_autoscaler", "autoscaling/v2", "HorizontalPodAutoscaler"),
    "pods": ("CoreV1Api", "read_namespaced_pod", "list_namespaced_pod", "v1", "Pod"),
    "configmaps": ("CoreV1Api", "read_namespaced_config_map", "list_namespaced_config_map", "v1", "ConfigMap"),
    "events": ("CoreV1Api", "read_namespaced_event", "list_namespaced_event", "v1", "Event"),
}
# (verb, resource plural) -> (api class, create method): what `propose` makes once approved.
CREATORS = {("create", "jobs"): ("BatchV1Api", "create_namespaced_job")}
APPROVAL_POLL_S = 60.0  # how often a waiting agent looks for a decision, in its own clock
PATCHERS = {
    "deployments": ("AppsV1Api", "patch_namespaced_deployment"),
    "horizontalpodautoscalers": ("AutoscalingV2Api", "patch_namespaced_horizontal_pod_autoscaler"),
    "configmaps": ("CoreV1Api", "patch_namespaced_config_map"),
}

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> list[tuple[str, dict, float]]:
    """Samples of a Prometheus text exposition (0.0.4): (name, labels, value); comments skipped."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = {k: v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\") for k, v in _LABEL.findall(m.group(2) or "")}
        try:
            out.append((m.group(1), labels, float(m.group(3))))
        except ValueError:
            continue
    return out


@dataclass
class Service:
    """A workload the agent watches: where it lives, its SLO, and which runbook its alerts go to."""

    namespace: str
    name: str
    slo_latency_ms: float = 300.0
    memory_limit_mb: float = 512.0
    runbook: str = "capacity"  # capacity | db | shared_dependency
    team: str = "shop"

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class Outcome:
    """What one agent run did, for the night's summary and the tests."""

    run_id: str
    incident_id: str | None
    policy: str | None = None
    choice: policies.Choice | None = None
    action_status: str | None = None
    verified: str | None = None
    tool_calls: list[str] = field(default_factory=list)
    error: str | None = None


def resource_of(kind: str) -> str:
    """The resource plural of a kind the agent reads or creates ("Job" -> "jobs")."""
    return {"Job": "jobs"}.get(kind) or next((r for r, spec in RESOURCES.items() if spec[4] == kind), kind.lower() + "s")


def _change_summary(verb: str, target: Any, change: dict) -> str:
    """One line for a person deciding: what will happen if they approve."""
    where = f"{target.kind} {target.namespace}/{target.name}"
    if target.kind == "Job":
        containers = (((change.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
        commands = "; ".join(" ".join(str(a) for a in (c.get("command") or []) + (c.get("args") or []))
                             for c in containers if isinstance(c, dict))
        return f"{verb} {where}, which runs: {commands}" if commands else f"{verb} {where}"
    return f"{verb} {where}: {json.dumps(change, sort_keys=True)[:300]}"


def tool_definitions(namespaces: list[str] | None) -> list[dict]:
    """The agent's tools as GenAI tool definitions; `namespaces` (the cluster's) bound every
    namespace argument, or leave it any string when the cluster could not be asked."""
    ns = {"type": "string", **({"enum": sorted(namespaces)} if namespaces else {})}

    def tool(name: str, description: str, properties: dict, required: list[str]) -> dict:
        return {"type": "function", "name": name, "description": description,
                "parameters": {"type": "object", "properties": properties, "required": required,
                               "additionalProperties": False}}

    resource = {"type": "string", "enum": sorted(RESOURCES)}
    return [
        tool("prometheus_query", "evaluate a PromQL query against the last scrape",
             {"query": {"type": "string"}}, ["query"]),
        tool("kubectl_get", "read one object, or list a kind in a namespace",
             {"resource": resource, "namespace": ns, "name": {"type": "string"}, "labelSelector": {"type": "string"}},
             ["resource", "namespace"]),
        tool("kubectl_events", "the latest events about one object",
             {"namespace": ns, "involvedObject.name": {"type": "string"}}, ["namespace", "involvedObject.name"]),
        tool("kubectl_describe", "an object with its latest events",
             {"resource": resource, "namespace": ns, "name": {"type": "string"}}, ["resource", "namespace", "name"]),
        tool("pg_stat_statements", "the slowest statements of a database",
             {"database": {"type": "string"}, "order_by": {"type": "string"}, "limit": {"type": "integer", "minimum": 1}},
             ["database"]),
    ]


@dataclass
class _Feed:
    keys: list[str]
    calls: list[str] = field(default_factory=list)

    def add(self, *keys: str) -> None:
        self.keys += keys


def _summary(obj: Any) -> Any:
    """The part of a Kubernetes object worth recording as a tool result. A Deployment keeps its
    managedFields, as `kubectl get --show-managed-fields` shows them: who last set each field, and
    when, is what a reviewer needs to see what a rollback would also undo."""
    if isinstance(obj, dict) and "items" in obj:
        return {"kind": obj.get("kind"), "items": [_summary(i) for i in obj["items"]]}
    if not isinstance(obj, dict) or "metadata" not in obj:
        return obj
    meta = obj["metadata"]
    out = {"kind": obj.get("kind"), "name": meta.get("name"), "namespace": meta.get("namespace"),
           "resourceVersion": meta.get("resourceVersion")}
    for key in ("spec", "status", "data", "reason", "message", "count", "type"):
        if key in obj:
            out[key] = obj[key]
    if obj.get("kind") in ("ReplicaSet", "Deployment"):
        out["annotations"] = {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith("deployment.")}
    if obj.get("kind") == "Deployment" and meta.get("managedFields"):
        out["managedFields"] = meta["managedFields"]
    if obj.get("kind") == "Pod":
        out.pop("spec", None)
    return out


class Agent:
    """One agent identity (name, team, trust level) working against one cluster."""

    def __init__(self, *, kubeconfig: str, metrics_url: str, recorder: sdk.Recorder, trust_level: int = 3,
                 wait: Callable[[float], None] | None = None, now: Callable[[], float] | None = None,
                 approver: Callable[[dict], str | None] | None = None, approval_timeout_s: float = 900.0,
                 agent_name: str = "reference-agent", team: str = "sre", llm_tokens: bool = True,
                 store: Any = None, trust_policy: TrustPolicy | str | Path | None = None,
                 webhook: str | None = None):
        if trust_level not in (1, 2, 3, 4):
            raise ValueError(f"trust_level={trust_level!r}: must be 1 (recommend), 2 (approve), 3 or 4 (act)")
        # A path is read now, so a bad policy stops the agent before it touches anything.
        self.trust_policy = load_policy(trust_policy) if isinstance(trust_policy, (str, Path)) else trust_policy
        # Level 3 informs only when someone said where to, or what the levels are: a policy or a webhook.
        self.notifier = (Notifier(store, webhook or (self.trust_policy.webhook if self.trust_policy else None))
                         if self.trust_policy is not None or webhook else None)
        self.api = k8s_config.new_client_from_config(config_file=str(kubeconfig))
        self.metrics_url = metrics_url
        self.rec = recorder
        self.trust_level = trust_level
        self.wait = wait or time.sleep  # the night passes its simulated clock here
        self.now = now or (lambda: datetime.now(timezone.utc).timestamp())
        self.approver = approver  # None: ask through the store (afterfix.approvals), if there is one
        self.approval_timeout_s = approval_timeout_s
        self.agent_name = agent_name
        self.team = team
        self.llm_tokens = llm_tokens
        self.store = store  # where approval requests go (afterfix.approvals); None: only `approver` answers
        self.checkpoint: Callable[[], object] = lambda: None  # called between deciding and acting
        self._scrape: list[tuple[str, dict, float]] | None = None
        self._calls: list[str] = []
        self._feeds: list[_Feed] = []  # the decision inputs the tool calls in progress feed
        self._sources: dict[str, list[str]] = {}  # input key -> call ids, for the next decision

    def _start(self) -> None:
        """A fresh run: no tool calls yet, no sources for a decision."""
        self._calls, self._feeds, self._sources = [], [], {}

    def tool_definitions(self) -> list[dict]:
        """The tools this agent may call, with the cluster's namespaces as of now (not a tool call:
        it is what the agent is given before it starts, as a model is given its tools)."""
        try:
            names = [n["metadata"]["name"] for n in self._raw("CoreV1Api", "list_namespace")["items"]]
        except (ApiException, OSError, KeyError, TypeError, ValueError):
            names = None
        return tool_definitions(names)

    @contextlib.contextmanager
    def feeding(self, *keys: str):
        """The tool calls made inside are the sources of these decision inputs (keys of the next
        decision's inputs). Keys only known from a result can be named inside: `feed.add(key)`."""
        feed = _Feed(list(keys))
        self._feeds.append(feed)
        try:
            yield feed
        finally:
            self._feeds.remove(feed)
            for key in feed.keys:
                known = self._sources.setdefault(key, [])
                known += [call for call in feed.calls if call not in known]

    def close(self) -> None:
        self.api.close()

    # ---- tools: every read is a tool_call span ---------------------------------------------------
    def tool(self, name: str, arguments: dict, fn: Callable[[], Any], summarize: Callable[[Any], Any] = _summary) -> Any:
        """Run `fn` as the tool call `name`: one span with its arguments and `summarize(result)`."""
        self._calls.append(name)
        with self.rec.tool_call(name, arguments) as call:
            for feed in self._feeds:
                feed.calls.append(call.call_id)
            try:
                result = fn()
            except ApiException as e:
                call.error(e)
                raise
            call.result(summarize(result))
            return result

    def _raw(self, api: str, method: str, *args, **kwargs) -> dict:
        resp = getattr(getattr(k8s, api)(self.api), method)(*args, _preload_content=False, **kwargs)
        return json.loads(resp.data)

    def kubectl_get(self, resource: str, namespace: str, name: str | None = None, *,
                    label_selector: str | None = None) -> dict:
        api, read, lst, _, _ = RESOURCES[resource]
        args = {"resource": resource, "namespace": namespace, **({"name": name} if name else {}),
                **({"labelSelector": label_selector} if label_selector else {})}
        if name:
            return self.tool("kubectl_get", args, lambda: self._raw(api, read, name, namespace))
        sel = {"label_selector": label_selector} if label_selector else {}
        return self.tool("kubectl_get", args, lambda: self._raw(api, lst, namespace, **sel))

    def kubectl_events(self, namespace: str, name: str) -> list[dict]:
        def fn():
            return self._raw("CoreV1Api", "list_namespaced_event", namespace,
                             field_selector=f"involvedObject.name={name}")["items"]
        return self.tool("kubectl_events", {"namespace": namespace, "involvedObject.name": name}, fn,
                          lambda items: [{"reason": e.get("reason"), "message": e.get("message"), "count": e.get("count"),
                                          "type": e.get("type")} for e in items[-10:]])

    def kubectl_describe(self, resource: str, namespace: str, name: str) -> dict:
        api, read, _, _, _ = RESOURCES[resource]

        def fn():
            obj = self._raw(api, read, name, namespace)
            events = self._raw("CoreV1Api", "list_namespaced_event", namespace,
                               field_selector=f"involvedObject.name={name}")["items"]
            return {"object": obj, "events": events}
        return self.tool("kubectl_describe", {"resource": resource, "namespace": namespace, "name": name}, fn,
                          lambda r: {"object": _summary(r["object"]),
                                     "events": [f"{e.get('type')} {e.get('reason')}: {e.get('message')}" for e in r["events"][-5:]]})

    def scrape(self) -> None:
        """Fetch the metrics endpoint once; `prometheus_query` evaluates against this sample."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as resp:
            self._scrape = parse_prometheus(resp.read().decode())

    def prometheus_query(self, signal: str, namespace: str, deployment: str) -> float | None:
        metric, scale = METRICS[signal]
        query = f'{metric}{{namespace="{namespace}",deployment="{deployment}"}}'

        def fn():
            if self._scrape is None:
                self.scrape()
            for name, labels, value in self._scrape:
                if name == metric and labels.get("namespace") == namespace and labels.get("deployment") == deployment:
                    return round(value * scale, 6)
            return None
        return self.tool("prometheus_query", {"query": query}, fn, lambda v: {"value": v, "unit": signal})

    def observe(self, svc: Service, signals=("latency_p95_ms", "error_rate", "cpu_utilization", "memory_mb",
                                             "restarts", "replicas")) -> dict:
        self.scrape()
        return {s: self.prometheus_query(s, svc.namespace, svc.name) for s in signals}

    # ---- thinking --------------------------------------------------------------------------------
    def _think(self, observations: dict, choice: policies.Choice) -> None:
        """A synthetic model call, so token accounting shows in the review (no model is called)."""
        if not self.llm_tokens:
            return
        with self.rec.llm_call(SYNTHETIC_MODEL, provider="none") as llm:
            llm.tokens(len(json.dumps(observations, sort_keys=True)) // 4, len(json.dumps(choice.to_dict())) // 4)

    def decide(self, policy: str, observations: dict) -> tuple[policies.Choice, str]:
        # The recorded inputs are what the policy saw after a JSON round trip, so replay is exact.
        inputs = json.loads(json.dumps(observations, sort_keys=True))
        choice = policies.POLICIES[policy](inputs)
        self._think(inputs, choice)
        options = [sdk.Option(o.id, o.description, action=o.action, evidence=list(o.evidence), score=o.score,
                              verdict=o.verdict, reason=o.reason) for o in choice.options]
        # Sources name only inputs this decision has; a read may have been ready to feed others.
        sources = {key: calls for key, calls in sorted(self._sources.items()) if key in inputs and calls}
        self._sources = {}
        decision_id = self.rec.decision(choice.question, options=options, selected=choice.selected, reason=choice.reason,
                                        policy=policy, inputs=inputs, sources=sources or None)
        return choice, decision_id

    # ---- acting ------------------------------------------------------------------------------------
    def change(self, *, verb: str, resource: str, namespace: str, name: str, decision_id: str,
               make_patch: Callable[[dict], dict], touched: Callable[[dict], dict],
               analysis: Any = None, trust_level: int | None = None) -> tuple[str, str]:
        """Read the target, then recommend, ask, or apply `make_patch(obj)` per the trust level
        (`trust_level` if given, else the policy's level for this change, else the agent's).

        `touched(obj)` is the state to record (real field paths of `obj`); `analysis` the metric
        spec(s) that should watch the change, or a function of `obj` giving them (an HPA names
        the Deployment it scales). Returns (action_id, status). The patch carries the read
        resourceVersion, so a write racing another writer fails with 409 instead of overwriting it.
        """
        _, _, _, api_version, kind = RESOURCES[resource]
        level, rule = (trust_level, None) if trust_level else self.trust_for(verb, kind, namespace)
        obj = self.kubectl_get(resource, namespace, name)
        meta = obj["metadata"]
        rv_before = meta["resourceVersion"]
        patch = make_patch(obj)
        target = sdk.Target(meta["uid"], kind, api_version, namespace, name)
        spec = analysis(obj) if callable(analysis) else analysis
        with self.rec.action(verb, target, decision_id=decision_id, trust_level=level, mutating=True, patch=patch,
                             field_manager=FIELD_MANAGER, analysis=spec) as act:
            self._mark_trust(act, rule, explicit=bool(trust_level))
            act.before(touched(obj), rv_before)
            action_id = act.action_id
            if level == 1:
                act.status("recommended")
                return action_id, "recommended"
            if level == 2 and not self._approved(act, verb, target, patch):
                act.status("awaiting_approval")
                return action_id, "awaiting_approval"
            api, method = PATCHERS[resource]
            body = {**patch, "metadata": {**patch.get("metadata", {}), "resourceVersion": rv_before}}
            try:
                self._raw(api, method, name, namespace, body, dry_run="All", field_manager=FIELD_MANAGER,
                          _content_type=MERGE_PATCH)
                act.dry_run_ok()
                new = self._raw(api, method, name, namespace, body, field_manager=FIELD_MANAGER, _content_type=MERGE_PATCH)
            except ApiException as e:
                # 409: someone else wrote since the read. Stop here: a blind retry would overwrite
                # their change; the next sweep re-reads and decides again.
                act.set("error.type", f"{e.status} {e.reason}")
                act.status("failed")
                return action_id, "failed"
            act.after(touched(new), new["metadata"]["resourceVersion"])
            act.status("applied")
            if level == 3:
                self._inform(action_id, verb, target, patch, rule)
            return action_id, "applied"

    def trust_for(self, verb: str, kind: str, namespace: str | None) -> tuple[int, Any]:
        """(level, rule) for a change: the trust policy's (labels: the run's scenario), else the
        agent's fixed level and no rule."""
        if self.trust_policy is None:
            return self.trust_level, None
        scenario = getattr(self.rec, "scenario", None)
        return self.trust_policy.level_for(verb, kind, namespace, {"scenario": scenario} if scenario else {})

    def _mark_trust(self, act: Any, rule: Any, *, explicit: bool = False) -> None:
        """The policy and rule that gave the action its level, on its span (none for a fixed level)."""
        if self.trust_policy is None or explicit:
            return
        act.set(convention.TRUST_POLICY, self.trust_policy.source)
        if rule is not None:
            act.set(convention.TRUST_RULE, rule.id)

    def _inform(self, action_id: str, verb: str, target: Any, change: Any, rule: Any) -> None:
        """Level 3: tell people now that the agent acted (webhook, and an `alerts` row with source
        "agent"). Delivery never raises; a store-less agent only POSTs."""
        if self.notifier is None:
            return
        where = f"{target.kind} {target.namespace}/{target.name}"
        because = f"trust rule {rule.id}" if rule is not None else "the trust policy's default level"
        alert = Alert(
            severity="info", source="agent", title=f"{self.agent_name} applied {verb} {where}",
            message=(f"{self.agent_name} applied {verb} {where} on its own under {because} (Level 3: fix and "
                     f"inform). `afterfix rollback {action_id}` undoes it."),
            action_id=action_id,
            time=datetime.fromtimestamp(self.now(), tz=timezone.utc).replace(tzinfo=None),
            body={"action": {"action_id": action_id, "verb": verb, "status": "applied", "change": change,
                             "agent": self.agent_name},
                  "target": {"kind": target.kind, "namespace": target.namespace, "name": target.name,
                             "uid": target.uid},
                  "trust": {"level": 3, "rule": rule.id if rule is not None else None,
                            "policy": self.trust_policy.source if self.trust_policy else None}})
        if self.store is not None:
            self.notifier.send([alert])
        else:
            self.notifier.deliver(alert)

    approval_poll_s = APPROVAL_POLL_S  # how often a waiting agent looks for a decision, in its own clock

    def propose(self, *, verb: str, kind: str, api_version: str, namespace: str, name: str, decision_id: str,
                spec: dict, summary: str | None = None) -> tuple[str, str]:
        """A change that needs a person whatever the trust level (a schema migration): ask, wait, and
        once approved create the object (`spec`, a manifest) through the official client, a
        server-side dry-run first. Returns (action_id, status): "applied" once created, "denied",
        "failed" (the API refused it), "awaiting_approval" when nobody decided in time, or
        "recommended" when the trust policy puts it at Level 1 (a policy can lower it, never
        raise it above 2)."""
        target = sdk.Target(None, kind, api_version, namespace, name)  # not created yet: no uid
        level, rule = self.trust_for(verb, kind, namespace) if self.trust_policy is not None else (2, None)
        level = min(level, 2)
        with self.rec.action(verb, target, decision_id=decision_id, trust_level=level, mutating=True, patch=spec,
                             field_manager=FIELD_MANAGER) as act:
            self._mark_trust(act, rule)
            act.before({}, None)
            action_id = act.action_id
            if level == 1:
                act.status("recommended")
                return action_id, "recommended"
            answer = self._approval(act, verb, target, spec, summary=summary, decision_id=decision_id)
            if answer != "approved":
                status = "denied" if answer == "denied" else "awaiting_approval"
                act.status(status)
                return action_id, status
            if (verb, resource_of(kind)) not in CREATORS:
                act.status("approved")  # approved, but not a change this agent knows how to make
                return action_id, "approved"
            api, method = CREATORS[(verb, resource_of(kind))]
            body = {**spec, "apiVersion": api_version, "kind": kind,
                    "metadata": {**spec.get("metadata", {}), "name": name, "namespace": namespace}}
            try:
                self._raw(api, method, namespace, body, dry_run="All", field_manager=FIELD_MANAGER)
                act.dry_run_ok()
                new = self._raw(api, method, namespace, body, field_manager=FIELD_MANAGER)
            except ApiException as e:
                # 409 AlreadyExists: someone made it meanwhile; theirs is not overwritten.
                act.set("error.type", f"{e.status} {e.reason}")
                act.status("failed")
                return action_id, "failed"
            meta = new["metadata"]
            act.set(convention.TARGET_UID, meta["uid"])  # known only now that it exists
            act.after({"metadata.uid": meta["uid"], "metadata.creationTimestamp": meta.get("creationTimestamp"),
                       "spec": new.get("spec")}, meta["resourceVersion"])
            act.status("applied")
            return action_id, "applied"

    def _approved(self, act: Any, verb: str, target: Any, patch: dict) -> bool:
        """Level 2 for `change()`: True once a person approved (see `_approval`)."""
        return self._approval(act, verb, target, patch) == "approved"

    def _approval(self, act: Any, verb: str, target: Any, change: dict, *, summary: str | None = None,
                  decision_id: str | None = None) -> str | None:
        """Ask a person and wait, up to the timeout, in the agent's own clock. Returns "approved",
        "denied", or None (nobody decided). `act` is the action handle (or its id).

        With an `approver` callable it is polled (tests and automation); otherwise, with a
        `store`, the request goes to the approvals ledger (afterfix.approvals) where any process
        that reaches the store can decide it, and the agent's trace records requested/approved/
        denied/expired with who and why."""
        action_id = getattr(act, "action_id", act)
        where = f"{target.kind}/{target.namespace}/{target.name}"
        if self.approver is None and self.store is not None:
            attributes = getattr(getattr(act, "span", None), "attributes", None) or {}
            from afterfix import approvals

            done = approvals.request(
                self.store, action_id=action_id, verb=verb, target=where, change=change,
                summary=summary or _change_summary(verb, target, change), agent=self.agent_name,
                decision_id=decision_id or attributes.get(convention.ACTION_DECISION_ID),
                run_id=attributes.get(convention.RUN_ID), incident_id=attributes.get(convention.INCIDENT_ID),
                timeout_s=self.approval_timeout_s, poll_s=self.approval_poll_s, sleep=self.wait, now=self.now,
                recorder=self.rec)
            return done.status if done.status in ("approved", "denied") else None
        approver = self.approver or (lambda request: None)
        self.rec.approval(action_id, status="requested")
        request = {"action_id": action_id, "verb": verb, "target": where, "patch": change, "agent": self.agent_name}
        waited = 0.0
        while waited < self.approval_timeout_s:
            answer = approver(request)
            if answer in ("approved", "denied"):
                self.rec.approval(action_id, status=answer)
                return answer
            self.wait(self.approval_poll_s)
            waited += self.approval_poll_s
        return None  # still pending: the request waits for a person in the morning

    def verify(self, action_id: str, svc: Service, signal: str, before: float, *, after_s: float = 300.0,
               good: Callable[[float], bool]) -> tuple[str, float | None]:
        """Wait simulated minutes, measure again, and record whether the signal recovered."""
        self.wait(after_s)
        self.scrape()
        after = self.prometheus_query(signal, svc.namespace, svc.name)
        outcome = "inconclusive" if after is None else ("success" if good(after) else "failure")
        self.rec.verification(action_id, outcome, signal, float(before), float(after if after is not None else -1))
        return outcome, after

    # ---- runs ----------------------------------------------------------------------------------------
    def sweep(self, services: list[Service], *, run_id: str | None = None) -> list[tuple[Service, str, float, float]]:
        """A routine health check of every service (a run without an incident).

        Returns the anomalies found as (service, signal, value, threshold), worst first.
        """
        found = []
        self._start()
        with self.rec.run(run_id=run_id, agent_name=self.agent_name, tool_definitions=self.tool_definitions()):
            self.scrape()
            for svc in services:
                m = {s: self.prometheus_query(s, svc.namespace, svc.name)
                     for s in ("latency_p95_ms", "error_rate", "cpu_utilization", "memory_mb", "restarts", "replicas", "rps")}
                self.kubectl_get("deployments", svc.namespace, svc.name)
                for signal, value, threshold in anomalies(svc, m):
                    found.append((svc, signal, value, threshold))
        return found

    def handle(self, incident_id: str, svc: Service, signal: str, value: float, threshold: float, *,
               run_id: str | None = None, defect: str | None = None, **context) -> Outcome:
        """Open an incident for one anomaly, run the matching runbook, and close it with a status.

        A runbook that fails (an API error, a bug) leaves the incident open with its spans marked
        ERROR and the error in `Outcome.error`: one bad incident does not end the shift.
        """
        self._start()
        title = f"{svc.key}: {signal} {value:.3g} over {threshold:.3g}"
        severity = "critical" if signal == "error_rate" and value > 0.2 else ("high" if signal != "memory_mb" else "medium")
        out = Outcome(run_id or "", incident_id)
        try:
            with self.rec.run(run_id=run_id, incident_id=incident_id, agent_name=self.agent_name,
                              tool_definitions=self.tool_definitions()) as run:
                out.run_id = run.run_id
                with self.rec.incident(incident_id, title, severity=severity, service=svc.key) as inc:
                    self.rec.detection(signal, value, threshold,
                                       f"{svc.key} {signal}={value:.3g} crossed {threshold:.3g}")
                    if self.team != "sre" and severity in ("critical", "high"):
                        inc.page(f"{self.team}-oncall")  # alert routing pages the team's own rotation
                    status = runbooks.for_signal(svc, signal)(self, out, svc, defect=defect, **context)
                    if status == "escalated":
                        inc.page(f"{self.team}-oncall")
                    inc.set_status(status)
        except Exception as e:  # recorded on the spans by the recorder; reported, not raised
            out.error = f"{type(e).__name__}: {e}"
        out.tool_calls = list(self._calls)
        return out


# ---- detection and facts ---------------------------------------------------------------------------


def anomalies(svc: Service, m: dict) -> list[tuple[str, float, float]]:
    """The alert rules: which signals of one service's metrics cross their thresholds."""
    out = []
    if (m.get("memory_mb") or 0) > 0.75 * svc.memory_limit_mb:
        out.append(("memory_mb", m["memory_mb"], 0.75 * svc.memory_limit_mb))
    if (m.get("error_rate") or 0) > 0.05 and (m.get("cpu_utilization") or 0) < 0.95:
        out.append(("error_rate", m["error_rate"], 0.05))
    elif (m.get("latency_p95_ms") or 0) > svc.slo_latency_ms:
        out.append(("latency_p95_ms", m["latency_p95_ms"], svc.slo_latency_ms))
    return out
