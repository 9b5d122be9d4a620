"""Hand-built inputs for the figure tests: trees, timelines and view rows with fixed ids and times.

They are built here rather than read from a demo night so that the golden files change only when a
figure does. Shapes follow `afterfix.analysis.model`'s docstring.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd

from afterfix.analysis.model import DecisionTree, FieldChange, Node, Step, Timeline

T0 = datetime(2026, 11, 27, 2, 47, 0)
HOSTILE = '<b>bold</b> & <a href="javascript:alert(1)">click</a> <img src=x onerror=alert(2)> $x^2$ \n<br>'


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _tool(span: str, t: float, name: str, args: dict, result: str, *, error: str | None = None) -> Node:
    return Node(id=span, kind="tool", label=f"execute_tool {name}", span_id=span, start=at(t), end=at(t + 0.2),
                status="error" if error else "unset",
                details={"tool_name": name, "call_id": f"call-{span}", "arguments": args, "result": result,
                         "error": error})


def _options(decision: str, t: float, specs: list[tuple[str, str, float, str, str, list[str]]]) -> list[Node]:
    out = []
    for option_id, verdict, score, description, reason, evidence in specs:
        out.append(Node(id=f"{decision}/{option_id}", kind="option", label=f"{verdict}: {option_id}",
                        span_id=decision, start=at(t), end=at(t), selected=verdict == "selected",
                        on_path=verdict == "selected",
                        details={"option_id": option_id, "description": description, "action": None,
                                 "evidence": evidence, "score": score, "verdict": verdict, "reason": reason}))
    return out


def hpa_tree(*, hostile: str | None = None) -> DecisionTree:
    """One run: detection, six tool calls (one failed), a model call, a decision with four options,
    the selected one's HPA patch and its successful verification. `hostile` replaces one text of
    each kind (a rejected reason, an evidence line, a tool result, the question, the title)."""
    h = hostile
    action = Node(
        id="a0000000000000a1", kind="action", label="patch HorizontalPodAutoscaler shop/checkout",
        span_id="a0000000000000a1", start=at(31.55), end=at(31.76), on_path=True,
        details={"action_id": "act-1", "decision_id": "dec-1", "verb": "patch", "mutating": True,
                 "status": "applied", "trust_level": 3,
                 "target": {"kind": "HorizontalPodAutoscaler", "namespace": "shop", "name": "checkout",
                            "uid": "6f1c2a9e-3b7d-4e58-9a0c-d2e4f6a8b1c3", "api_version": "autoscaling/v2"},
                 "field_manager": "afterfix-agent", "resource_version_before": "184467",
                 "resource_version_after": "184532", "dry_run_checked": True,
                 "diff": [FieldChange("spec.maxReplicas", 2, 6, "changed").to_dict()]},
        children=[Node(id="a0000000000000b1", kind="verification", label="verify latency_p95",
                       span_id="a0000000000000b1", start=at(372.9), end=at(372.9), on_path=True,
                       details={"action_id": "act-1", "outcome": "success", "signal": "latency_p95",
                                "before": 2.41, "after": 0.46})])
    options = _options("d000000000000001", 31.05, [
        ("raise-hpa-max", "selected", 0.91, "Raise the checkout HPA's maxReplicas from 2 to 6",
         "traffic is 2.3x baseline and the HPA is pinned at maxReplicas=2 with CPU at 96%: missing capacity",
         ["HPA condition ScalingLimited=True since 02:39", "CPU 96% against a 70% target"]),
        ("restart-pods", "rejected", 0.08, "Restart the checkout pods (rollout restart)",
         h or "no memory growth or stuck pods: a restart would drop capacity during peak",
         [h or "memory working set flat at 412-416 MiB", "0 restarts in the last hour"]),
        ("rollback-deploy", "rejected", 0.12, "Roll back checkout to revision 11 (the deploy before 1.14.2)",
         "errors are flat and latency tracks load: the last deploy is not the cause",
         ["error rate flat at 0.2-0.3%", "1.14.2 rolled out ten hours before the alert"]),
        ("scale-deployment", "rejected", 0.35, "Scale the checkout Deployment to 6 replicas directly",
         "the HPA owns spec.replicas and would scale it back to 2 within a minute",
         ["the Deployment is managed by HPA shop/checkout"]),
    ])
    options[0].children = [action]
    decision = Node(
        id="d000000000000001", kind="decision", label="decide: checkout p95 latency over SLO",
        span_id="d000000000000001", start=at(31.05), end=at(31.05), on_path=True,
        details={"decision_id": "dec-1", "question": h or "checkout p95 latency 2.41 s over the 0.8 s SLO: what should change?",
                 "selected_option": "raise-hpa-max", "reason": options[0].details["reason"],
                 "policy": "capacity_vs_fault.v1"},
        children=options)
    tools = [
        _tool("c000000000000001", 2.0, "get_hpa", {"namespace": "shop", "name": "checkout"},
              '{"spec": {"maxReplicas": 2, "minReplicas": 2}}'),
        _tool("c000000000000002", 4.0, "prometheus_query", {"query": "histogram_quantile(0.95, ...)"}, "2.41"),
        _tool("c000000000000003", 6.0, "prometheus_query", {"query": "sum(rate(http_requests_total[5m]))"}, "410"),
        _tool("c000000000000004", 8.0, "get_pods", {"namespace": "shop", "selector": "app=checkout"},
              h or '{"items": 2}'),
        _tool("c000000000000005", 10.0, "get_events", {"namespace": "shop"}, "",
              error="Forbidden: events is forbidden for the agent's service account"),
        _tool("c000000000000006", 12.0, "prometheus_query", {"query": "container_memory_working_set_bytes"}, "412Mi"),
    ]
    llm = Node(id="e000000000000001", kind="llm", label="chat reasoner", span_id="e000000000000001",
               start=at(20.0), end=at(31.0),
               details={"model": "reasoner-1", "provider": "sim", "input_tokens": 1840, "output_tokens": 212})
    detection = Node(id="f000000000000001", kind="detection", label="detect latency_p95", span_id="f000000000000001",
                     start=at(0.5), end=at(0.5), on_path=True,
                     details={"signal": "latency_p95", "value": 2.41, "threshold": 0.8,
                              "summary": "checkout p95 latency 2.41 s is over its 0.8 s SLO"})
    incident = Node(id="b000000000000001", kind="incident", label="incident checkout p95 latency above SLO",
                    span_id="b000000000000001", start=at(0.1), end=at(373.0), on_path=True,
                    details={"incident_id": "INC-1", "title": h or "checkout p95 latency above SLO",
                             "severity": "high", "service": "shop/checkout", "status": "resolved"},
                    children=[detection, *tools, llm, decision])
    root = Node(id="9000000000000001", kind="run", label="invoke_agent night-shift-agent", span_id="9000000000000001",
                start=at(0.0), end=at(373.0), on_path=True,
                details={"run_id": "run-0247", "agent_name": "night-shift-agent", "incident_id": "INC-1",
                         "trace_ids": ["d13c513a42f8eda197b1165f0971b7c4"], "status": "ok", "spans": 12},
                children=[incident])
    return DecisionTree(run_id="run-0247", agent_name="night-shift-agent", incident_id="INC-1", root=root)


def big_tree(decisions: int = 60) -> DecisionTree:
    """One run with `decisions` decisions, each after two tool calls, with three options (one
    selected, two rejected) and, for every other decision, an action with its verification."""
    children: list[Node] = []
    t = 0.0
    for k in range(decisions):
        span = f"d{k:015x}"
        for j in range(2):
            t += 1
            children.append(_tool(f"c{k:013x}{j:02x}", t, "kubectl_get",
                                  {"kind": "Deployment", "name": f"svc-{k}"}, '{"replicas": 3}'))
        t += 1
        opts = _options(span, t, [
            (f"scale-{k}", "selected", 0.8, f"Scale svc-{k} from 3 to 5 replicas",
             f"svc-{k} runs at 92% CPU with 3 replicas", [f"CPU 92% on svc-{k}"]),
            (f"restart-{k}", "rejected", 0.2, f"Restart svc-{k}",
             f"svc-{k} shows no memory growth: restarting it (decision {k}) would not add capacity", []),
            (f"wait-{k}", "rejected", 0.1, "Wait for the autoscaler",
             f"no HPA manages svc-{k}, so waiting (decision {k}) changes nothing", []),
        ])
        if k % 2 == 0:
            act = f"a{k:015x}"
            opts[0].children = [Node(
                id=act, kind="action", label=f"scale Deployment shop/svc-{k}", span_id=act, start=at(t), end=at(t),
                on_path=True,
                details={"action_id": f"act-{k}", "decision_id": f"dec-{k}", "verb": "scale", "mutating": True,
                         "status": "applied", "trust_level": 3,
                         "target": {"kind": "Deployment", "namespace": "shop", "name": f"svc-{k}"},
                         "diff": [{"path": "spec.replicas", "before": 3, "after": 5, "change": "changed"}]},
                children=[Node(id=f"b{k:015x}", kind="verification", label="verify cpu", span_id=f"b{k:015x}",
                               start=at(t + 0.5), end=at(t + 0.5), on_path=True,
                               details={"action_id": f"act-{k}", "outcome": "success" if k % 4 == 0 else "failure",
                                        "signal": "cpu_utilization", "before": 0.92, "after": 0.6})])]
        children.append(Node(id=span, kind="decision", label=f"decide {k}", span_id=span, start=at(t), end=at(t),
                             on_path=True,
                             details={"decision_id": f"dec-{k}", "question": f"svc-{k} is saturated: what now?",
                                      "selected_option": f"scale-{k}", "reason": "capacity", "policy": None},
                             children=opts))
    root = Node(id="9000000000000002", kind="run", label="invoke_agent sweeper", span_id="9000000000000002",
                start=at(0), end=at(t + 1), on_path=True,
                details={"run_id": "run-sweep", "agent_name": "sweeper", "incident_id": None, "trace_ids": [],
                         "status": "ok", "spans": len(children) + 1}, children=children)
    return DecisionTree(run_id="run-sweep", agent_name="sweeper", incident_id=None, root=root)


def hpa_timeline(*, hostile: str | None = None) -> Timeline:
    """The steps of hpa_tree's run (same span ids, so the tree's outcomes apply), plus a second
    agent's shorter run on the same incident with a failed tool call."""
    def step(span, parent, run, agent, name, kind, t0, t1, depth, *, tool=None, status="unset", message=None):
        return Step(span_id=span, parent_span_id=parent, trace_id="d13c513a42f8eda197b1165f0971b7c4", run_id=run,
                    incident_id="INC-1", agent_name=agent, name=name, kind=kind, tool=tool, status=status,
                    status_message=message, start=at(t0), end=at(t1), duration_ms=(t1 - t0) * 1000, depth=depth)

    a, b = "night-shift-agent", hostile or "capacity-agent"
    root, inc = "9000000000000001", "b000000000000001"
    steps = [
        step(root, None, "run-0247", a, "invoke_agent night-shift-agent", "run", 0.0, 373.0, 0),
        step(inc, root, "run-0247", a, "incident checkout p95 latency above SLO", "incident", 0.1, 373.0, 1),
        step("f000000000000001", inc, "run-0247", a, "detect latency_p95", "detection", 0.5, 0.5, 2),
        step("c000000000000001", inc, "run-0247", a, "execute_tool get_hpa", "tool", 2.0, 2.2, 2, tool="get_hpa"),
        step("c000000000000002", inc, "run-0247", a, "execute_tool prometheus_query", "tool", 4.0, 4.2, 2,
             tool="prometheus_query"),
        step("c000000000000005", inc, "run-0247", a, "execute_tool get_events", "tool", 10.0, 10.2, 2,
             tool="get_events", status="error", message="Forbidden: events is forbidden"),
        step("e000000000000001", inc, "run-0247", a, "chat reasoner-1", "llm", 20.0, 31.0, 2),
        step("d000000000000001", inc, "run-0247", a, "decide: checkout p95 latency over SLO", "decision", 31.05, 31.05, 2),
        step("a0000000000000a1", inc, "run-0247", a, "patch HorizontalPodAutoscaler shop/checkout", "action",
             31.55, 31.76, 2),
        step("a0000000000000b1", inc, "run-0247", a, "verify latency_p95", "verification", 372.9, 372.9, 2),
        step("9000000000000009", None, "run-cap-1", b, "invoke_agent capacity-agent", "run", 60.0, 150.0, 0),
        step("c000000000000091", "9000000000000009", "run-cap-1", b, hostile or "execute_tool get_hpa", "tool",
             62.0, 63.0, 1, tool="get_hpa", status="error", message=hostile or "timeout after 1 s"),
        step("e000000000000091", "9000000000000009", "run-cap-1", b, "chat reasoner-1", "llm", 70.0, 90.0, 1),
    ]
    return Timeline(incident_id="INC-1", run_ids=["run-0247", "run-cap-1"], steps=steps, start=at(0.0), end=at(373.0))


def hpa_metrics() -> pd.DataFrame:
    """checkout's p95 latency every 30 s from five minutes before the run to a minute after it:
    over the SLO until the patch at +31 s, then settling."""
    times = [at(s) for s in range(-300, 450, 30)]
    values = [2.41 if s <= 30 else round(max(0.46, 2.41 - (s - 30) * 0.012), 3) for s in range(-300, 450, 30)]
    values[:4] = [0.42, 0.61, 1.2, 1.9]
    return pd.DataFrame({"time": times, "value": values})


def incidents_rows(*, hostile: str | None = None) -> pd.DataFrame:
    """Rows of the `incidents` view for a night of six incidents (two with a scenario column value)."""
    rows = [
        ("INC-01", "shop/frontend: latency_p95_ms 4e+03 over 300", "high", "shop/frontend", "resolved", -290, "noise"),
        ("INC-02", "shop/catalog: latency_p95_ms 2.85e+03 over 300", "high", "shop/catalog", "resolved", -245,
         "hpa_starvation"),
        ("INC-03", "shop/cart: memory_mb 397 over 384", "medium", "shop/cart", "mitigated", -180, "memory_leak"),
        ("INC-04", "shop/checkout: error_rate 0.302 over 0.05", "critical", "shop/checkout", "resolved", -120, None),
        ("INC-05", hostile or "shop/cart: memory_mb 408 over 384", "medium", "shop/cart", "escalated", -60, None),
        ("INC-06", "checkout p95 latency above SLO", "high", "shop/checkout", "open", 0, None),
    ]
    frame = pd.DataFrame([
        {"incident_id": i, "title": title, "severity": sev, "service": svc, "status": status,
         "start_time": at(m * 60), "end_time": at(m * 60 + 300), "runs": 1, "agents": 1, "spans": 14,
         "decisions": 1, "changes": 1, "errors": 0, "scenario": scenario}
        for i, title, sev, svc, status, m, scenario in rows])
    return frame


def actions_rows() -> pd.DataFrame:
    """Rows of the `actions` view: seven actions across the four trust levels, one read-only."""
    rows = [
        ("act-1", "INC-02", "patch", True, "applied", 3),
        ("act-2", "INC-03", "restart", True, "applied", 3),
        ("act-3", "INC-04", "rollback", True, "applied", 4),
        ("act-4", "INC-04", "create", True, "awaiting_approval", 2),
        ("act-5", "INC-05", "restart", True, "recommended", 1),
        ("act-6", "INC-05", "get", False, "applied", 3),
        ("act-7", "INC-06", "patch", True, "failed", 3),
    ]
    return pd.DataFrame([
        {"action_id": a, "incident_id": inc, "verb": verb, "mutating": mut, "status": status, "trust_level": level,
         "target_kind": "Deployment", "target_namespace": "shop", "target_name": "cart",
         "start_time": at(k * 600 - 14000), "failed": status == "failed"}
        for k, (a, inc, verb, mut, status, level) in enumerate(rows)])
