"""Fixtures for the widget tests: the undo tests' simulator world (imported, not copied), and
small stores recorded through afterfix.sdk (tests/nights.py)."""

from __future__ import annotations

import pytest

from nights import Night
from undo.conftest import world  # noqa: F401  the simulator, a store and the official client

HOSTILE = "<img src=x onerror=alert(1)><script>alert(2)</script>"


@pytest.fixture
def night(tmp_path):
    """A night to record into; `.store()` ingests what was recorded so far."""
    return Night(tmp_path / "night")


def assert_escaped(html: str) -> None:
    """No element from trace text: the payload only as entities."""
    assert "<img" not in html and "<script" not in html, html[:2000]
    assert "&lt;img src=x onerror=alert(1)&gt;" in html or "&lt;script&gt;" in html


class Traces:
    """Agent runs recorded through afterfix.sdk and the OpenTelemetry SDK into one OTLP/JSON file,
    ingested into `store` by `ingest()`. `night` sets the `afterfix.night` resource attribute.
    Several Traces (distinct seeds) can feed one store: the second one is "what arrives later"."""

    def __init__(self, folder, *, seed: int = 1, night: str | None = None, start: str = "2026-11-27T01:00"):
        from afterfix import sdk
        from nights import Clock, epoch

        folder.mkdir(parents=True, exist_ok=True)
        self.file = folder / f"traces-{seed}.jsonl"
        self.provider = sdk.setup("test-agent", file=self.file, resource={"afterfix.night": night} if night else None,
                                  id_generator=sdk.SeededIdGenerator(seed))
        self.clock = Clock()
        self.clock.t = epoch(start)
        self.rec = sdk.Recorder(self.provider, agent_name="agent-x", clock=self.clock, seed=seed)

    def incident(self, incident_id: str, *, severity: str = "high", service: str = "shop/cart", status: str = "resolved",
                 trust_level: int = 3, verified: bool = True, tools: int = 2, decisions: int = 1, text: str = "",
                 run_id: str | None = None, title: str | None = None) -> dict:
        """One run on one incident: `tools` tool calls, then `decisions` decisions each with a
        change (and its verification unless verified=False). `text` goes into tool results,
        option reasons and evidence, patches and the title (a hostile payload, say)."""
        from afterfix.sdk import Option, Target

        rec, ids = self.rec, {"actions": [], "decisions": []}
        ns, name = service.split("/")
        with rec.run(run_id=run_id, incident_id=incident_id) as run:
            ids["run_id"] = run.run_id
            with rec.incident(incident_id, title or f"{service}: latency over SLO {text}", severity=severity,
                              service=service) as inc:
                rec.detection("latency_p95_ms", 900, 300, f"{service} latency 900 over 300 {text}")
                for i in range(tools):
                    with rec.tool_call("kubectl_get", {"namespace": ns, "name": name, "note": text, "i": i}) as call:
                        call.result({"replicas": 2, "message": f"ok {text}"})
                for k in range(decisions):
                    opts = [Option("scale", f"scale {service} {text}", evidence=[f"cpu 95% {text}"], score=0.8),
                            Option("wait", "wait", score=0.1, reason=f"the alert is firing {text}")]
                    did = rec.decision(f"what to do about {service}? {text}", opts, "scale", reason=f"runbook {text}")
                    ids["decisions"].append(did)
                    with rec.action("scale", Target(f"uid-{name}", "Deployment", "apps/v1", ns, name), decision_id=did,
                                    trust_level=trust_level, patch={"spec": {"replicas": 4}, "note": text}) as act:
                        act.before({"spec.replicas": 2}, "10")
                        act.after({"spec.replicas": 4}, "11")
                        act.status("applied")
                        ids["actions"].append(act.action_id)
                    if verified:
                        rec.verification(act.action_id, "success", "latency_p95_ms", 900, 200)
                inc.set_status(status)
        self.clock.t += 600
        return ids

    def ingest(self, store):
        from afterfix.ingest.files import ingest_paths

        self.provider.shutdown()
        store.create()
        ingest_paths(store, [self.file])
        return store
