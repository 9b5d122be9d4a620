"""A rollback as its own trace: one run with a decision (restore, or leave as is) and the action
that restored the fields, written into the store through the same decoder as every other trace.
Trees, timelines and briefings then show the rollback beside the agent's change it undid.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, Iterator

from afterfix.undo import paths

__all__ = ["emit_rollback", "recording", "ROLLBACK_OF", "ROLLBACK_ID"]

ROLLBACK_OF = "afterfix.rollback.of"  # on the rollback's action span: the agent action it undid
ROLLBACK_ID = "afterfix.rollback.id"  # the rollbacks ledger row


@contextlib.contextmanager
def recording(store, agent_name: str, *, clock=None) -> Iterator[Any]:
    """An `afterfix.sdk.Recorder` whose spans go straight into `store` when the block ends (through
    the OTLP protobuf decoder, as if they had been received). `clock` (epoch seconds) stamps the
    spans, as for `Recorder`. After the block, `.trace_id` is the trace's id."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from afterfix import sdk
    from afterfix.ingest.otlp import decode_protobuf
    from afterfix.otlp_encode import traces_data

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=sdk.Resource.create({"service.name": agent_name}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    rec = sdk.Recorder(provider, agent_name=agent_name, clock=clock)
    try:
        yield rec
    finally:
        provider.force_flush()
        spans = memory.get_finished_spans()
        provider.shutdown()
        if spans:
            decoded = decode_protobuf(traces_data(spans).SerializeToString(), source=f"{agent_name} (in process)")
            store.append(spans=decoded.spans, events=decoded.events)
            rec.trace_id = format(spans[0].context.trace_id, "032x")
        else:
            rec.trace_id = None


def emit_rollback(store, act: dict, plan, result, *, who: str, reason: str | None, automatic: bool) -> str | None:
    """Record the rollback as spans in `store`; returns its trace id."""
    from afterfix import sdk

    agent = "afterfix-guard" if automatic else "afterfix"
    t = plan.target
    restored = [f for f in plan.fields if f.restore]
    before = {f.path: _value(f.now) for f in restored}
    after = {f.path: _value(f.before) for f in restored}
    ref = f"{t['kind']} {t['namespace']}/{t['name']}"
    with recording(store, agent) as rec, rec.run(run_id=f"run-{result.rollback_id}", incident_id=act.get("incident_id")):
        options = [
            sdk.Option("restore", f"restore {', '.join(f.label for f in restored)} on {ref}",
                       action={"verb": "rollback", "of": act["action_id"]},
                       evidence=[c.summary for c in plan.checks if c.status in ("pass", "info", "warn")][:8],
                       verdict="selected", reason=reason or "no reason given"),
            sdk.Option("leave", f"leave {act['action_id']} in place", verdict="rejected",
                       reason=f"{who} asked for the rollback" + (" (the guard's analysis failed)" if automatic else "")),
        ]
        decision_id = rec.decision(f"Undo {act.get('verb')} of {ref} ({act['action_id']})?", options, "restore",
                                   reason or "rollback requested", policy="afterfix rollback",
                                   inputs={"action_id": act["action_id"], "who": who, "plan": plan.summary})
        with rec.action("rollback", sdk.Target(t.get("uid") or (plan.live or {}).get("uid"), t["kind"],
                                                t["api_version"] or "", t["namespace"], t["name"]),
                        decision_id=decision_id, trust_level=3, patch=plan.patch, field_manager="afterfix") as a:
            a.set(ROLLBACK_OF, act["action_id"])
            a.set(ROLLBACK_ID, result.rollback_id)
            a.before(before, (plan.live or {}).get("resourceVersion"))
            a.dry_run_ok()
            a.after(after, (result.result.get("write") or {}).get("resourceVersion"))
            a.status("applied")
            action_id = a.action_id
        # The engine read the object back: every restored field held its before value.
        rec.verification(action_id, "success", "fields restored (read back)", 0.0, float(len(restored)))
    return rec.trace_id


def _value(value: Any) -> Any:
    return None if value is paths.MISSING else json.loads(json.dumps(value, default=str))
