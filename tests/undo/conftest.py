"""A small world for undo tests: the Kubernetes API simulator with a few objects, served over HTTP
to the official client, a store, and `change()`, which makes an agent's change the way the
reference agent does (read, patch with its own field manager) and records it as an action trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from afterfix.nightshift import scenarios
from afterfix.nightshift.apiserver import ApiServer
from afterfix.nightshift.clock import SimClock
from afterfix.nightshift.cluster import Cluster
from afterfix.sdk import Option, Target
from afterfix.store import Store
from afterfix.undo import paths
from afterfix.undo.kube import connect
from afterfix.undo.trace import recording

AGENT_MANAGER = "afterfix-agent"
API = {"Deployment": "apps/v1", "HorizontalPodAutoscaler": "autoscaling/v2", "ConfigMap": "v1"}


@dataclass
class World:
    sim: Cluster
    server: ApiServer
    kubeconfig: Path
    store: Store
    cluster: Any  # afterfix.undo.kube.Cluster
    actions: list[str] = field(default_factory=list)

    def get(self, kind: str, ns: str, name: str) -> dict:
        return self.sim.get(API[kind], kind, ns, name)

    def edit(self, kind: str, ns: str, name: str, patch: dict, manager: str = "kubectl-edit") -> dict:
        """A person's (or another tool's) edit, straight to the simulator."""
        return self.sim.patch(API[kind], kind, ns, name, patch, patch_type="strategic", field_manager=manager)

    def change(self, kind: str, ns: str, name: str, patch: dict, touched: list[str], *, verb: str = "patch",
               decision_id: str | None = None, incident_id: str = "inc-undo-1", advance_s: float = 60.0,
               record: dict | None = None) -> str:
        """The agent's change: read, patch as `afterfix-agent`, record before/after of `touched`."""
        self.sim.clock.advance(advance_s)
        old = self.get(kind, ns, name)
        new = self.edit(kind, ns, name, patch, manager=AGENT_MANAGER)

        def state(obj):
            return {p: (None if (v := paths.get(obj, paths.parse(p, obj))) is paths.MISSING else v) for p in touched}

        with recording(self.store, "reference-agent", clock=self.sim.clock.now) as rec, rec.run(incident_id=incident_id):
            did = decision_id or rec.decision(f"fix {ns}/{name}?", [Option("fix", f"{verb} {kind} {ns}/{name}")], "fix",
                                              "it is broken")
            with rec.action(verb, Target(old["metadata"]["uid"], kind, API[kind], ns, name), decision_id=did,
                            patch=patch, field_manager=AGENT_MANAGER) as act:
                act.before(record["before"] if record else state(old), old["metadata"]["resourceVersion"])
                act.after(record["after"] if record else state(new), new["metadata"]["resourceVersion"])
                action_id = act.action_id
        self.actions.append(action_id)
        return action_id


def build(tmp_path: Path) -> World:
    sim = Cluster(SimClock())
    scenarios.deployment(sim, "shop", "payments", replicas=3, image="registry.example/payments:2.4.0",
                         env={"DB_POOL_SIZE": "20", "LOG_LEVEL": "info"})
    scenarios.deployment(sim, "shop", "catalog", replicas=2)
    scenarios.hpa(sim, "shop", "catalog", 2, 2)
    sim.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "flags", "namespace": "shop"},
                "data": {"new_checkout": "false", "app.properties": "a=1"}}, field_manager="helm")
    scenarios.deployment(sim, "shop", "checkout", replicas=2, env_from=["flags"])
    server = ApiServer(sim).start()
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    store = Store(tmp_path / "store")
    return World(sim, server, kubeconfig, store, connect(kubeconfig=str(kubeconfig)))


@pytest.fixture
def world(tmp_path):
    w = build(tmp_path)
    try:
        yield w
    finally:
        w.cluster.close()
        w.server.stop()
