"""Run a simulated night shift: the cluster, the scenarios, the reference agent, the traces.

`run_night()` builds the cluster at 21:00 from the scenarios, serves it over HTTP, starts a
`Capture` receiver into the store, and fast-forwards simulated time from 22:00 to 07:00. Every
`sweep_minutes` the agent checks every service; an anomaly that was not already firing opens an
incident and runs its runbook (a scenario with teams runs one agent per team, in parallel).
The agent's spans go over OTLP/HTTP through the OpenTelemetry SDK exporter, stamped with
simulated time. Every workload's metric history (one sample per simulated minute) goes to the
same receiver's `/v1/metrics` every `metrics_minutes` (`metrics_export.py`), so the store holds
what the agent saw next to what it did. The same seed gives the same night, apart from ids and
timestamps.

The incidents of the scenarios in `LLM_SCENARIOS` go to the LLM agent (`llm_agent.LlmAgent`,
named "llm-agent"), which decides through chat with a `model.ScriptedModel` started for the night
with the night's seed and stopped at its end; its decisions replay against an endpoint.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from afterfix import sdk
from afterfix.nightshift import scenarios as sc
from afterfix.nightshift.agent import Agent, Outcome, Service
from afterfix.nightshift.apiserver import ApiServer
from afterfix.nightshift.clock import SimClock
from afterfix.nightshift.cluster import Cluster
from afterfix.nightshift.llm_agent import AGENT_NAME as LLM_AGENT, LlmAgent
from afterfix.nightshift.model import ScriptedModel
from afterfix.nightshift.metrics_export import MetricExportError, MetricHistoryExporter
from afterfix.store import Store
from afterfix.trust.policy import TrustPolicy, load_policy

SERVICE_NAME = "afterfix-reference-agent"
NIGHT_ATTRIBUTE = "afterfix.night"  # resource attribute: which simulated night a span belongs to
# Scenarios whose incidents the LLM agent handles. feature_flag: one decision whose tool results
# (the error rate, the ConfigMap, the pods) a what-if can change, e.g. errors already low -> wait.
LLM_SCENARIOS = ("feature_flag",)


class SimTime:
    """Span timestamps on the simulated clock: simulated now, plus the real time spent since the
    simulated clock last moved (capped), so spans inside one simulated instant keep their order
    and their durations."""

    def __init__(self, clock: SimClock, cap_s: float = 5.0):
        self.clock, self.cap_s = clock, cap_s
        self._lock = threading.Lock()
        self._sim = clock.now()
        self._real = time.monotonic()
        self._last = 0.0

    def __call__(self) -> float:
        with self._lock:
            sim, real = self.clock.now(), time.monotonic()
            if sim != self._sim:
                self._sim, self._real = sim, real
            t = max(self._last + 1e-6, sim + min(self.cap_s, real - self._real))
            self._last = t
            return t


@dataclass
class Incident:
    incident_id: str
    scenario: str
    service: str
    signal: str
    value: float
    outcomes: list[Outcome] = field(default_factory=list)


@dataclass
class NightResult:
    night: str
    seed: int
    store: str  # where the store is (Store.where)
    state_file: Path
    kubeconfig: Path
    incidents: list[Incident]
    sweeps: int
    wall_s: float
    ended: float = sc.NIGHT_END
    counts: dict = field(default_factory=dict)

    def summary(self) -> str:
        c = self.counts
        end = datetime.fromtimestamp(self.ended, tz=timezone.utc)
        lines = [f"night {self.night} (seed {self.seed}): simulated 22:00 -> {end:%H:%M} in {self.wall_s:.1f} s",
                 f"  incidents {c.get('incidents', len(self.incidents))}, runs {c.get('runs', '?')}, spans {c.get('spans', '?')}, "
                 f"decisions {c.get('decisions', '?')}, actions {c.get('actions', '?')} ({c.get('changes', '?')} changes), "
                 f"health sweeps {self.sweeps}, metric points {c.get('metric_points', '?')}"]
        for inc in self.incidents:
            picks = ", ".join(f"{o.choice.selected if o.choice else '-'}"
                              f"{' [' + o.action_status + ']' if o.action_status else ''}"
                              f"{' ERROR ' + o.error if o.error else ''}" for o in inc.outcomes)
            lines.append(f"  {inc.incident_id}  {inc.scenario:<15} {inc.service:<24} {inc.signal:<15} {picks}")
        return "\n".join(lines)


def run_night(store: Store | Path | str, *, workdir: Path | str, seed: int = 0, scenarios: list[str] | None = None,
              until: float = sc.NIGHT_END, sweep_minutes: float = 10.0, llm_tokens: bool = True,
              approver: Callable[[dict], str | None] | None = None, transport: str = "otlp",
              metrics_minutes: float = 10.0, progress: Callable[[str], None] | None = None,
              trust_policy: TrustPolicy | str | Path | None = None, webhook: str | None = None) -> NightResult:
    """Play one night into `store`; the cluster's final state and its kubeconfig stay in `workdir`.

    `scenarios` picks scenario keys (default: all of them, noise included); `until` ends the
    night earlier (epoch seconds) for short runs. Spans go over OTLP/HTTP to a `Capture`
    receiver (`transport="otlp"`); if it cannot start, or with `transport="file"`, they go to an
    OTLP/JSON file in `workdir/inbox/` that is ingested at the end. The metric history goes to
    the receiver in batches of `metrics_minutes` simulated minutes (not with `transport="file"`:
    it then stays in the cluster's state file). Returns what happened, with counts read back
    from the store.

    `trust_policy` (a TrustPolicy or the path of a trust policy file, afterfix.trust.policy) gives
    each change its level; without it every scenario keeps its fixed level (3, the migration 2).
    Level 3 changes notify `webhook` (else the policy's, else $AFTERFIX_WEBHOOK) and the `alerts`
    ledger.
    """
    if transport not in ("otlp", "file"):
        raise ValueError(f"transport={transport!r}: use 'otlp' or 'file'")
    started = time.monotonic()
    if isinstance(trust_policy, (str, Path)):
        trust_policy = load_policy(trust_policy)  # a bad file stops the night before it starts
    store = store if isinstance(store, Store) else Store(store)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    state_file, kubeconfig = workdir / "cluster.json", workdir / "kubeconfig"
    chosen = [sc.SCENARIOS[k] for k in (scenarios or list(sc.SCENARIOS))]
    night = secrets.token_hex(3)
    say = progress or (lambda msg: None)

    clock = SimClock(sc.SETUP_AT)
    # No state file while the night runs: saving after every write would dominate the run time.
    cluster = Cluster(clock, seed=seed)
    for s in sorted(chosen, key=lambda s: bool(s.teams)):  # team scenarios reuse others' services
        s.setup(cluster)
    cluster.tick(sc.NIGHT_START - clock.now(), step=60.0)
    services = sc.services(chosen)
    events = sorted(((sc.at(m), desc, fn) for s in chosen for m, desc, fn in s.events), key=lambda e: e[0])

    store.create()
    capture, trace_file = _start_capture(store, transport, workdir / "inbox" / f"night-{night}.jsonl", say)
    server = ApiServer(cluster).start()
    model = ScriptedModel(seed) if any(s.key in LLM_SCENARIOS for s in chosen) else None
    model_url = model.start() if model else None
    server.write_kubeconfig(kubeconfig)
    resource = {NIGHT_ATTRIBUTE: night, "afterfix.seed": seed}
    provider = sdk.setup(SERVICE_NAME, endpoint=capture.receiver.url if capture else None,
                         file=trace_file, batch_file=True, resource=resource)
    now_s = SimTime(clock)
    history = MetricHistoryExporter(cluster, capture.receiver.url, start=sc.SETUP_AT, resource=resource) \
        if capture else None

    def send_history(every_s: float = 0.0) -> None:
        nonlocal history
        if history is None:
            return
        try:
            history.export(every_s=every_s)
        except MetricExportError as e:  # the spans still matter; the history stays in the state file
            say(f"metric history not sent: {e}")
            history = None

    def tick(seconds: float) -> None:
        if seconds > 0:
            cluster.tick(seconds)
            send_history(metrics_minutes * 60)

    agents: dict[tuple, Agent] = {}

    def agent_for(scenario: str | None, name: str = "reference-agent", team: str = "sre", trust: int = 3,
                  wait: Callable[[float], None] = tick) -> Agent:
        llm = model_url is not None and scenario in LLM_SCENARIOS and name == "reference-agent"
        name = LLM_AGENT if llm else name
        key = (scenario, name, trust)
        if key not in agents:
            rec = sdk.Recorder(provider, agent_name=name, scenario=scenario, clock=now_s)
            kwargs = dict(kubeconfig=str(kubeconfig), metrics_url=f"{server.url}/metrics", recorder=rec,
                          trust_level=trust, wait=wait, now=clock.now, approver=approver, agent_name=name,
                          team=team, llm_tokens=llm_tokens, store=store, trust_policy=trust_policy, webhook=webhook)
            agents[key] = LlmAgent(model_url=model_url, seed=seed, **kwargs) if llm else Agent(**kwargs)
        return agents[key]

    incidents: list[Incident] = []
    firing: set[tuple[str, str]] = set()
    sweeps = 0
    try:
        t = sc.NIGHT_START
        while t < until:
            while events and events[0][0] <= t:
                when, desc, fn = events.pop(0)
                tick(when - clock.now())
                say(f"{clock.datetime():%H:%M} {desc}")
                fn(cluster)
            tick(t - clock.now())
            found = agent_for("healthy_check").sweep(services, run_id=f"sweep-{night}-{sweeps:03d}")
            sweeps += 1
            now_firing = {(svc.key, signal) for svc, signal, _, _ in found}
            for svc, signal, value, threshold in found:
                if (svc.key, signal) in firing:
                    continue  # still firing from an earlier sweep: already an incident
                incident = Incident(f"INC-{night}-{len(incidents) + 1:02d}", "", svc.key, signal, value)
                incidents.append(incident)
                _handle(incident, svc, signal, value, threshold, chosen, agent_for, tick, say, clock)
            firing = now_firing
            t = max(t + sweep_minutes * 60, clock.now())
            t = sc.NIGHT_START + -(-(t - sc.NIGHT_START) // (sweep_minutes * 60)) * sweep_minutes * 60
        tick(until - clock.now())
    finally:
        send_history()
        provider.force_flush()
        provider.shutdown()
        for agent in agents.values():
            agent.close()
        if capture is not None:
            capture.flush(30)
            capture.stop()
        server.stop()
        if model is not None:
            model.stop()
        cluster.state_file = state_file
        cluster._dirty = True
        cluster.save()
    if trace_file is not None:
        from afterfix.ingest.files import ingest_paths

        ingest_paths(store, [trace_file], progress=False)
    result = NightResult(night, seed, store.where, state_file, kubeconfig, incidents, sweeps, time.monotonic() - started,
                         ended=clock.now())
    result.counts = counts(store, night)
    return result


def _start_capture(store: Store, transport: str, trace_file: Path, say):
    """A Capture receiver on a free port, or (None, file) when spans must go through a file."""
    if transport == "otlp":
        from afterfix.ingest.capture import Capture

        capture = Capture(store, inbox=False, listen=True, host="127.0.0.1", port=0, interval=0.25)
        try:
            capture.start()
            return capture, None
        except Exception as e:  # the receiver could not start: the file path still gets every span in
            say(f"OTLP receiver did not start ({e}); writing spans to {trace_file} instead")
    trace_file.parent.mkdir(parents=True, exist_ok=True)
    return None, trace_file


def _handle(incident: Incident, svc: Service, signal: str, value: float, threshold: float, chosen, agent_for,
            tick, say, clock) -> None:
    scenario = sc.scenario_of(svc, chosen)
    incident.scenario = scenario.key if scenario else "unplanned"
    say(f"{clock.datetime():%H:%M} {incident.incident_id} {svc.key} {signal}={value:.3g} ({incident.scenario})")
    context = dict(scenario.context) if scenario else {}
    trust = scenario.trust_level if scenario else 3
    if scenario and scenario.teams:
        # One agent per team, in parallel threads, on the same incident. They all look before
        # anyone acts (a barrier), so what each one saw does not depend on thread timing.
        barrier = threading.Barrier(len(scenario.teams))
        outcomes: dict[str, Outcome] = {}
        errors: list[BaseException] = []

        def work(team: str, own: Service) -> None:
            try:
                agent = agent_for(scenario.key, f"{team}-team-agent", team, trust)
                agent.checkpoint = barrier.wait
                outcomes[team] = agent.handle(incident.incident_id, svc, signal, value, threshold, own=own, **context)
            except BaseException as e:  # reported after join: a thread's exception is otherwise lost
                barrier.abort()
                errors.append(e)

        threads = [threading.Thread(target=work, args=(team, own), name=f"agent-{team}") for team, own in scenario.teams]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        if errors:
            raise errors[0]
        incident.outcomes = [outcomes[team] for team, _ in scenario.teams]
        return
    agent = agent_for(incident.scenario, trust=trust)
    incident.outcomes = [agent.handle(incident.incident_id, svc, signal, value, threshold, **context)]


def counts(store: Store, night: str) -> dict:
    """Incidents, runs, spans, decisions, actions and metric points of one night, read back from the store."""
    mine = f"json_extract_string(resource_attributes, '$.\"{NIGHT_ATTRIBUTE}\"') = ?"
    row = store.query(f"""
        SELECT count(*) AS spans,
               count(DISTINCT run_id) AS runs,
               count(DISTINCT incident_id) AS incidents,
               count(*) FILTER (WHERE afterfix_kind = 'decision') AS decisions,
               count(*) FILTER (WHERE afterfix_kind = 'action') AS actions,
               count(*) FILTER (WHERE afterfix_kind = 'action' AND
                                json_extract_string(attributes, '$."afterfix.action.status"') = 'applied') AS changes,
               count(*) FILTER (WHERE operation = 'execute_tool') AS tool_calls
        FROM spans WHERE {mine}""", [night])
    out = {k: int(v) for k, v in row.iloc[0].items()}
    out["metric_points"] = int(store.query(f"SELECT count(*) AS n FROM metrics WHERE {mine}", [night])["n"].iloc[0])
    return out


_GENERATED_ID = re.compile(r"\b(run|dec|act|call)-[0-9a-f]{12}\b")


def content(store: Store, night: str) -> list[str]:
    """A night's spans without what may differ between two plays of one seed: span and trace ids,
    generated run/decision/action/call ids, the night's tag, and timestamps. Sorted, so threads
    that interleave differently still compare equal. Each entry: [name, attributes, events]."""
    spans = store.query(f"""
        SELECT s.name, s.attributes,
               coalesce((SELECT list(e.attributes ORDER BY e.seq) FROM events e
                          WHERE e.trace_id = s.trace_id AND e.span_id = s.span_id), []) AS events
        FROM spans s WHERE json_extract_string(s.resource_attributes, '$."{NIGHT_ATTRIBUTE}"') = ?""", [night])
    out = []
    for name, attributes, events in spans.itertuples(index=False):
        text = json.dumps([name, json.loads(attributes), [json.loads(e) for e in events]], sort_keys=True)
        out.append(_GENERATED_ID.sub(r"\1-ID", text.replace(night, "NIGHT")))
    return sorted(out)
