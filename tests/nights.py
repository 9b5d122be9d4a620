"""Purpose-built nights for the analysis tests: agent runs recorded through afterfix.sdk and the
real OpenTelemetry SDK (to an OTLP/JSON file, then ingested), on a clock the test sets, plus
workload metric history written as points of the `metrics` table.

    night = Night(tmp_path)
    night.at("2026-11-27T01:00").incident("INC-1", "shop/cart", "memory_mb", 400, 384,
                                          change=("restart", {"metadata.generation": 1}, {"metadata.generation": 2}),
                                          verified="success")
    night.metric("shop/cart", "memory_mb", [(t, v), ...], depends_on=["shop/db"])
    store = night.store()
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa

from afterfix import schema, sdk
from afterfix.ingest.files import ingest_paths
from afterfix.sdk import Option, Target
from afterfix.store import Store


def epoch(text: str | datetime) -> float:
    t = datetime.fromisoformat(text) if isinstance(text, str) else text
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()


class Clock:
    """Epoch seconds that move one second per reading, from wherever the test put them."""

    def __init__(self):
        self.t = epoch("2026-11-26T22:00")

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


class Night:
    def __init__(self, folder: Path, seed: int = 1):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.trace_file = self.folder / "night.jsonl"
        self.provider = sdk.setup("test-agent", file=self.trace_file, id_generator=sdk.SeededIdGenerator(seed))
        self.clock = Clock()
        self.recorders: dict[str, sdk.Recorder] = {}
        self.points: list[dict] = []
        self._n = 0

    def rec(self, agent: str = "agent-x") -> sdk.Recorder:
        if agent not in self.recorders:
            self.recorders[agent] = sdk.Recorder(self.provider, agent_name=agent, clock=self.clock,
                                                 seed=len(self.recorders) + 1)
        return self.recorders[agent]

    def at(self, when: str | datetime) -> Night:
        self.clock.t = epoch(when)
        return self

    def incident(self, incident_id: str, service: str, signal: str, value: float, threshold: float, *,
                 agent: str = "agent-x", change: tuple | None = None, verified: str | None = "success",
                 kind: str = "Deployment", paged: tuple[str, ...] = (), status: str = "resolved",
                 work_s: float = 0.0, question: str | None = None, options: list[Option] | None = None) -> dict:
        """One run on one incident: detection, a decision, optionally a change and its verification.
        `change` is (verb, before, after); returns the ids recorded."""
        rec = self.rec(agent)
        ns, name = service.split("/")
        self._n += 1
        ids: dict = {}
        with rec.run(incident_id=incident_id) as run:
            ids["run_id"] = run.run_id
            with rec.incident(incident_id, f"{service}: {signal} {value} over {threshold}", service=service) as inc:
                rec.detection(signal, value, threshold, f"{service} {signal}={value} crossed {threshold}")
                if paged:
                    inc.page(*paged)
                if change is not None:
                    verb, before, after = change
                    opts = options or [Option(verb, f"{verb} {service}", score=0.8),
                                       Option("no_action", "wait", score=0.1, reason="the alert is firing")]
                    ids["decision_id"] = rec.decision(question or f"what to do about {service}?", opts, verb,
                                                      reason=f"{verb} is the runbook's fix")
                    with rec.action(verb, Target(f"uid-{name}", kind, "apps/v1", ns, name),
                                    decision_id=ids["decision_id"]) as act:
                        act.before(before, "10")
                        act.after(after, "11")
                        act.status("applied")
                        ids["action_id"] = act.action_id
                    self.clock.t += work_s
                    if verified is not None:
                        rec.verification(act.action_id, verified, signal, value, threshold * 0.5)
                else:
                    self.clock.t += work_s
                inc.set_status(status)
        return ids

    def metric(self, workload: str, signal: str, points: list[tuple[str | datetime, float]],
               depends_on: list[str] | None = None) -> None:
        ns, name = workload.split("/")
        resource = {"service.name": name, "k8s.namespace.name": ns, "k8s.deployment.name": name}
        if depends_on:
            resource["afterfix.depends_on"] = ",".join(depends_on)
        metric = f"afterfix.workload.{signal}"
        res_json = json.dumps(resource, sort_keys=True)
        series = hashlib.sha1(f"{metric}\x00{res_json}\x00{{}}".encode()).hexdigest()[:16]
        for t, v in points:
            ts = datetime.fromtimestamp(epoch(t), tz=timezone.utc).replace(tzinfo=None)
            self.points.append({"name": metric, "kind": "gauge", "unit": None, "time": ts, "start_time": None,
                                "value": float(v), "count": None, "sum": None, "p50": None, "p90": None,
                                "p95": None, "p99": None, "service_name": name, "namespace": ns, "workload": name,
                                "series_id": series, "attributes": "{}", "resource_attributes": res_json,
                                "scope_name": "tests", "source": "tests", "ingested_at": ts})

    def store(self) -> Store:
        self.provider.shutdown()
        store = Store(self.folder / "store")
        store.create()
        ingest_paths(store, [self.trace_file])
        if self.points:
            store.append(metrics=pa.Table.from_pylist(self.points, schema=schema.METRIC_SCHEMA))
        return store


def minutes(start: str, values: list[float]) -> list[tuple[datetime, float]]:
    """`values` one minute apart from `start`."""
    t0 = datetime.fromisoformat(start)
    return [(t0 + timedelta(minutes=i), v) for i, v in enumerate(values)]
