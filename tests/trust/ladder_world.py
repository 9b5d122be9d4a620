"""A small world for the ladder's tests: a TrustPolicy-shaped object and agent actions recorded
through the real SDK into a store (verified, rolled back, marked wrong as each test needs)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime, timezone

from afterfix import sdk
from afterfix.undo.trace import recording

NIGHT = datetime(2026, 11, 27, 1, 0, tzinfo=timezone.utc).timestamp()


@dataclass
class Rule:
    id: str
    level: int
    cap: int | None = None
    verbs: list = field(default_factory=list)
    kinds: list = field(default_factory=list)
    namespaces: list = field(default_factory=list)
    scenarios: list = field(default_factory=list)
    description: str = ""
    line: int = 1

    def matches(self, verb, kind, namespace, labels) -> bool:
        return ((not self.verbs or verb in self.verbs) and (not self.kinds or kind in self.kinds)
                and (not self.namespaces or namespace in self.namespaces)
                and (not self.scenarios or labels.get("scenario") in self.scenarios))


@dataclass
class Policy:
    """Shaped like trust.policy.TrustPolicy: ordered rules, first match wins."""
    rules: list
    default_level: int = 1
    source: str = "trust.yaml"

    def match(self, verb, kind, namespace, labels):
        return next((r for r in self.rules if r.matches(verb, kind, namespace, labels or {})), None)


def policy() -> Policy:
    return Policy([
        Rule("db-migrations", 2, cap=2, verbs=["create"], kinds=["Job"], description="database migrations", line=4),
        Rule("restarts", 2, verbs=["restart"], kinds=["Deployment"], description="restart a Deployment", line=11),
        Rule("leak-scale", 1, verbs=["scale"], scenarios=["memory_leak"], description="scale on a leak", line=17),
    ])


class World:
    """Records actions one at a time, each a minute after the last, in its own run."""

    def __init__(self, store):
        self.store = store
        self._t = itertools.count()

    def act(self, verb="restart", kind="Deployment", namespace="shop", *, outcome="success", status="applied",
            scenario=None, labels=None, name=None) -> dict:
        n = next(self._t)
        t = NIGHT + 60 * n
        # A workload of its own unless named: the same fix of one workload again is a masked issue.
        name = name or f"web-{n}"
        with recording(self.store, "agent", clock=lambda: t) as rec:
            rec.scenario = scenario
            with rec.run():
                dec = rec.decision(f"what to do about {namespace}?", [sdk.Option("fix", "fix it", verdict="selected")],
                                   "fix", "it is broken")
                with rec.action(verb, sdk.Target(f"uid-{name}", kind, "apps/v1", namespace, name), decision_id=dec) as a:
                    for k, v in (labels or {}).items():
                        a.set(f"afterfix.labels.{k}", v)
                    a.status(status)
                    action_id = a.action_id
                if outcome:
                    rec.verification(action_id, outcome, "error_rate", 0.2, 0.01)
        return {"action_id": action_id, "decision_id": dec}

    def rollback(self, action_id: str, *, automatic=False, who="bob") -> None:
        self.store.append_ledger("rollbacks", [{
            "rollback_id": f"rb-{action_id}-{automatic}", "action_id": action_id, "time": datetime(2026, 11, 27, 7),
            "who": "afterfix-guard" if automatic else who, "automatic": automatic, "outcome": "rolled_back"}])
