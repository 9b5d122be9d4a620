"""The guard: one analysis per agent action, measured until it ends, and what its end calls for.

    guard = Guard(store, StoreMetrics(store), policy=load_policy("guard-policy.yaml"),
                  notifier=Notifier(store, webhook), kubeconfig=None)
    guard.run(stop_event)          # resume, then tick until stop_event is set

Which actions: mutating, status `applied`, started within `lookback`, not rolled back already,
not afterfix's own rollbacks, and with no analysis yet; new ones are picked up as they reach the
store. Each is watched by the
analysis its trace recorded (`afterfix.action.analysis`) or else by the first policy rule that
matches its kind and namespace (every metric of that rule), in Argo Rollouts' terms
(afterfix.undo.analysis). The run ends as Argo's does: as soon as one metric ends Failed, Error
or Inconclusive (the worst wins), or Successful once every metric is.

Then: Successful is recorded and nothing else happens. Failed rolls the action back through
the rollback engine (`rollback_action(..., automatic=True)`) unless `max_rollbacks` automatic
rollbacks of the same target happened in the last 24 h, and alerts people either way.
Inconclusive and Error alert people: a person decides.

All state is in the store's ledgers (`analyses`, `rollbacks`, `alerts`), so a guard that
restarts, after `kill -9` too, resumes where the rows end:

    started -> measurement* -> outcome                      Successful: done
                               outcome + rollback(intent)   Failed: written before the engine runs
                               -> rollback(result) -> alert
                               outcome [+ rollback(skipped)] -> alert   (cap; Inconclusive; Error)

An analysis is finished when its Successful outcome or its alert is written. A guard that finds
an intent without a result looks in the `rollbacks` ledger first (the engine writes its own rows)
and asks the engine again only when no outcome is there; the engine answers
`already_rolled_back` when the object already holds its before-state, so nothing is rolled back
twice. An alert whose webhook was sent just before a kill is sent again (at least once).

Per tick, measurements due within a short window are taken together (afterfix.undo.measure reads
them: on the store's metric history with one query for all of them); their rows, outcomes and
intents are written in one transaction.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Sequence

import duckdb
import pandas as pd

from afterfix._exceptions import StoreError
from afterfix.metrics import MetricSource
from afterfix.undo.analysis import ERROR_RETRY_S, AnalysisError, AnalysisSpec, assess_run, measure_phase, parse_analysis
from afterfix.undo.measure import MetricReader, utc
from afterfix.undo.notify import Alert, Notifier
from afterfix.undo.trace import ROLLBACK_OF

__all__ = ["Guard", "Action", "Watch", "Metric", "Tick", "WHO", "INTERVAL_FLOOR_S", "LOOKBACK", "MAX_ROLLBACKS"]

log = logging.getLogger(__name__)

WHO = "afterfix-guard"
INTERVAL_FLOOR_S = 10.0  # no metric is measured more often, whatever its spec asks
LOOKBACK = timedelta(hours=24)
MAX_ROLLBACKS = 3  # automatic rollbacks of one target per CAP_WINDOW
CAP_WINDOW = timedelta(hours=24)
BATCH_S = 2.0  # a measurement waits this long (at most a quarter interval) for others to fall due
RECENT = 20  # measurements an alert carries
MAX_VALUES = 50  # values of a vector kept in a measurement row
ENDED = ("Failed", "Error", "Inconclusive")  # worst first: Argo's order
_EVENTS = {"started": 0, "resumed": 1, "measurement": 2, "outcome": 3, "rollback": 4, "stopped": 5}
_ROLLBACK_OUTCOMES = ("rolled_back", "already_rolled_back", "nothing_to_do", "refused", "failed", "dry_run")


def epoch(t: Any) -> float:
    """Epoch seconds of a time (naive means UTC)."""
    t = pd.Timestamp(t)
    return (t.tz_localize("UTC") if t.tzinfo is None else t).timestamp()


def _text(value: Any) -> str | None:
    return None if value is None or (isinstance(value, float) and value != value) else str(value)


@dataclass
class Action:
    """The agent action an analysis watches (what the started row keeps of it)."""

    action_id: str
    kind: str | None
    namespace: str | None
    name: str | None
    time: float  # when the change was done (the action span's end), epoch seconds
    verb: str | None = None
    uid: str | None = None
    api_version: str | None = None
    agent_name: str | None = None
    incident_id: str | None = None
    run_id: str | None = None

    @property
    def ref(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else str(self.name)
        return f"{self.kind or 'object'} {where}"

    def target(self) -> dict[str, Any]:
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name, "uid": self.uid,
                "api_version": self.api_version}

    def to_dict(self) -> dict[str, Any]:
        return {"action_id": self.action_id, "verb": self.verb, "time": utc(self.time).isoformat() + "Z",
                "agent_name": self.agent_name, "incident_id": self.incident_id, "run_id": self.run_id,
                "target": self.target()}

    @classmethod
    def from_dict(cls, d: dict) -> "Action":
        target = d.get("target") or {}
        return cls(d["action_id"], target.get("kind"), target.get("namespace"), target.get("name"),
                   epoch(d["time"].rstrip("Z")), d.get("verb"), target.get("uid"), target.get("api_version"),
                   d.get("agent_name"), d.get("incident_id"), d.get("run_id"))


@dataclass
class Metric:
    """One metric of an analysis and its measurements so far."""

    spec: AnalysisSpec
    due: float
    phases: list[str] = field(default_factory=list)
    ended: tuple[str, str] | None = None

    def interval(self, floor: float) -> float:
        return max(floor, self.spec.interval_s or floor)

    def window(self, floor: float) -> float:
        return min(BATCH_S, 0.25 * self.interval(floor))

    def measured(self, phase: str, at: float, floor: float) -> None:
        self.phases.append(phase)
        interval = self.interval(floor)
        self.due = at + (max(floor, min(interval, ERROR_RETRY_S)) if phase == "Error" else interval)
        run, why = assess_run(self.spec, self.phases)
        if run != "Running":
            self.ended = (run, why)


@dataclass
class Watch:
    """One analysis in progress: its action, metrics and how far its end has been dealt with."""

    analysis_id: str
    action: Action
    metrics: list[Metric]
    source: str  # "trace" or "policy FILE line N"
    stage: str = "running"  # running -> rollback -> alert -> done
    outcome: tuple[str, str] | None = None
    done: dict[str, Any] | None = None  # what was done about the outcome
    intent_at: float | None = None
    recent: list[dict[str, Any]] = field(default_factory=list)

    def assess(self) -> tuple[str, str]:
        """The run's phase: the worst ended metric as soon as one ends badly, else Successful
        once all have succeeded, else Running."""
        bad = [(m.ended[0], f"{m.spec.name}: {m.ended[1]}") for m in self.metrics if m.ended and m.ended[0] in ENDED]
        if bad:
            return min(bad, key=lambda b: ENDED.index(b[0]))
        if all(m.ended for m in self.metrics):
            return "Successful", "; ".join(f"{m.spec.name}: {m.ended[1]}" for m in self.metrics)
        return "Running", "; ".join(f"{m.spec.name}: {assess_run(m.spec, m.phases)[1]}" for m in self.metrics)

    def summary(self) -> dict[str, Any]:
        phase, why = self.outcome or self.assess()
        return {"analysis_id": self.analysis_id, "source": self.source, "phase": phase, "why": why,
                "metrics": [m.spec.to_dict() for m in self.metrics]}


@dataclass
class Tick:
    """What one tick did."""

    started: int = 0
    measured: int = 0
    ended: list[tuple[str, str]] = field(default_factory=list)  # (action_id, phase)
    rollbacks: list[tuple[str, str]] = field(default_factory=list)  # (action_id, engine outcome)
    alerts: int = 0


class Guard:
    """Keeps one analysis per agent action (see the module docstring). `source` is where metrics
    are read (StoreMetrics or PrometheusMetrics); `rollback` defaults to the engine's
    `rollback_action`; `clock` gives epoch seconds."""

    def __init__(self, store, source: MetricSource, *, policy=None, notifier: Notifier | None = None,
                 kubeconfig: str | None = None, context: str | None = None, cluster=None,
                 interval_floor_s: float = INTERVAL_FLOOR_S, lookback: timedelta = LOOKBACK,
                 max_rollbacks: int = MAX_ROLLBACKS, rollback: Callable | None = None,
                 clock: Callable[[], float] = time.time, name: str | None = None):
        self.store, self.source, self.policy = store, source, policy
        self.notifier = notifier or Notifier(store, None)
        self.kubeconfig, self.context, self._cluster = kubeconfig, context, cluster
        self.floor, self.lookback, self.max_rollbacks = float(interval_floor_s), lookback, int(max_rollbacks)
        self._rollback, self.clock = rollback, clock
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.watches: dict[str, Watch] = {}  # by action_id, until done
        self.unwatched: set[str] = set()  # actions no analysis could be found for (told once)
        self._watermark: datetime | None = None
        self._next_discover = 0.0
        self.reader = MetricReader(source)
        self._analysis_sql: str | None = None
        store.create()

    # ---- resume --------------------------------------------------------------------------------
    def resume(self) -> list[Watch]:
        """Rebuild every unfinished analysis from the ledgers and record that this guard resumed it."""
        rows = self.store.query("""
            WITH finished AS (
                SELECT analysis_id FROM analyses WHERE event = 'outcome' AND phase = 'Successful'
                UNION SELECT analysis_id FROM alerts WHERE analysis_id IS NOT NULL)
            SELECT * FROM analyses WHERE analysis_id IN (
                SELECT analysis_id FROM analyses WHERE event = 'started'
                EXCEPT SELECT analysis_id FROM finished)""")
        if rows.empty:
            return []
        rows["order"] = rows["event"].map(_EVENTS).fillna(9)
        resumed, out = [], []
        for analysis_id, group in rows.sort_values(["time", "order"]).groupby("analysis_id", sort=False):
            watch = self._rebuild(analysis_id, group.to_dict("records"))
            if watch is None:
                continue
            self.watches[watch.action.action_id] = watch
            resumed.append(watch)
            n = sum(len(m.phases) for m in watch.metrics)
            out.append(self._row(watch, "resumed", self.clock(), phase=watch.outcome[0] if watch.outcome else "Running",
                                 message=f"resumed by {self.name} after {n} measurements ({watch.stage})"))
        self.store.append_ledger("analyses", out)
        pending = [w for w in resumed if w.stage == "rollback"]
        if pending:
            self._engine_results(pending)  # rollbacks the engine finished while no guard ran
        return resumed

    def _rebuild(self, analysis_id: str, rows: list[dict]) -> Watch | None:
        start = rows[0]
        try:
            detail = json.loads(start["detail"])
            action = Action.from_dict(detail["action"])
            specs = [parse_analysis(m, where=f"analyses {analysis_id} started row") for m in detail["metrics"]]
        except (ValueError, KeyError, TypeError, AnalysisError) as e:
            log.error("analysis %s cannot be resumed: its started row is not one a guard wrote (%s)", analysis_id, e)
            return None
        metrics = {s.name: Metric(s, due=max(epoch(start["time"]), action.time + s.initial_delay_s)) for s in specs}
        watch = Watch(analysis_id, action, list(metrics.values()), detail.get("source", "trace"))
        for row in rows[1:]:
            at, event = epoch(row["time"]), row["event"]
            info = json.loads(row["detail"]) if isinstance(row["detail"], str) else {}
            if event == "measurement" and info.get("metric") in metrics:
                metrics[info["metric"]].measured(row["phase"], at, self.floor)
                watch.recent.append(self._recent(info["metric"], at, row["phase"], info.get("values"), row["message"]))
            elif event == "outcome":
                watch.outcome = (row["phase"], row["message"])
                watch.stage = "rollback" if row["phase"] == "Failed" else "alert"
            elif event == "rollback":
                step = info.get("step")
                if step == "intent":
                    watch.stage, watch.intent_at = "rollback", at
                else:
                    watch.stage, watch.done = "alert", info.get("done")
        watch.recent = watch.recent[-RECENT:]
        if watch.outcome and watch.outcome[0] == "Failed" and watch.stage == "rollback" and watch.intent_at is None:
            watch.stage = "decide"  # killed between an outcome and its intent: not written together before
        return watch

    # ---- discovery -----------------------------------------------------------------------------
    def discover(self, now: float) -> list[dict]:
        """Start an analysis on every new action; the rows to write."""
        since = utc(now) - self.lookback
        params: list[Any] = [since]
        newer = ""
        if self._watermark is not None:
            newer, params = "AND s.ingested_at > ?", params + [self._watermark - timedelta(minutes=1)]
        found = self.store.query(f"""
            SELECT a.action_id, a.verb, a.agent_name, a.incident_id, a.run_id, a.target_uid, a.target_kind,
                   a.target_api_version, a.target_namespace, a.target_name, a.start_time, a.duration_ms,
                   {self._analysis_column()} AS analysis, s.ingested_at
            FROM actions a JOIN spans s ON s.trace_id = a.trace_id AND s.span_id = a.span_id AND s.afterfix_kind = 'action'
            WHERE a.mutating AND a.status = 'applied' AND a.start_time >= ? {newer}
              AND a.action_id NOT IN (SELECT action_id FROM analyses WHERE event = 'started')
              AND a.action_id NOT IN (SELECT action_id FROM rollbacks WHERE outcome IN ('rolled_back', 'already_rolled_back'))
              AND json_extract_string(s.attributes, '$."{ROLLBACK_OF}"') IS NULL
            ORDER BY a.start_time""", params)
        if found.empty:
            return []
        self._watermark = max(self._watermark or datetime.min, pd.Timestamp(found["ingested_at"].max()).to_pydatetime())
        rows = []
        for r in found.drop_duplicates("action_id").to_dict("records"):
            if r["action_id"] in self.watches or r["action_id"] in self.unwatched:
                continue
            end = epoch(r["start_time"]) + (r["duration_ms"] or 0.0) / 1000
            action = Action(r["action_id"], _text(r["target_kind"]), _text(r["target_namespace"]),
                            _text(r["target_name"]), end, _text(r["verb"]), _text(r["target_uid"]),
                            _text(r["target_api_version"]), _text(r["agent_name"]), _text(r["incident_id"]),
                            _text(r["run_id"]))
            rows += self._start(action, _text(r["analysis"]), now)
        return rows

    def _analysis_column(self) -> str:
        if self._analysis_sql is None:
            columns = self.store.query("SELECT * FROM actions LIMIT 0").columns
            self._analysis_sql = ("a.analysis" if "analysis" in columns
                                  else """json_extract_string(s.attributes, '$."afterfix.action.analysis"')""")
        return self._analysis_sql

    def _specs(self, action: Action, text: str | None) -> tuple[list[AnalysisSpec], str, str | None]:
        """(bound specs, where they came from, why the trace's analysis was not used)."""
        problem = None
        if text:
            try:
                where = f"trace {action.action_id} afterfix.action.analysis"
                # One metric (parse_analysis reads the JSON and says what is wrong with it), or a list.
                items = json.loads(text) if text.lstrip().startswith("[") else [text]
                specs = [parse_analysis(o, where=where).bind(action.target()) for o in items]
                if not specs or len({s.name for s in specs}) != len(specs):
                    raise AnalysisError(where, None, "give one metric, or a list of metrics with distinct names")
                return specs, "trace", None
            except (AnalysisError, ValueError) as e:
                problem = str(e)
        rule = self.policy.rule_for(action.kind or "", action.namespace) if self.policy and action.kind else None
        if rule is None:
            return [], "", problem
        try:
            return [s.bind(action.target()) for s in rule.metrics], f"policy {self.policy.path} line {rule.line}", problem
        except AnalysisError as e:
            return [], "", "; ".join(filter(None, [problem, str(e)]))

    def _start(self, action: Action, text: str | None, now: float) -> list[dict]:
        specs, source, problem = self._specs(action, text)
        if not specs and problem is None:
            self.unwatched.add(action.action_id)
            log.info("%s of %s (%s): no analysis in its trace and no policy rule for it; not watched",
                     action.verb, action.ref, action.action_id)
            return []
        promql = [s.name for s in specs if s.provider == "prometheus"]
        if promql and not hasattr(self.source, "instant_query"):
            problem, specs = (f"{promql[0]} is a prometheus query and this guard reads {self.source.where}; "
                              "start the guard with --prometheus URL"), []
        watch = Watch(f"analysis-{uuid.uuid4().hex[:12]}", action,
                      [Metric(s, due=max(now, action.time + s.initial_delay_s)) for s in specs], source or "none")
        self.watches[action.action_id] = watch
        names = ", ".join(s.name for s in specs) or "nothing"
        message = f"watching {action.verb} of {action.ref} with {names} ({watch.source})"
        if problem:
            message += f"; the trace's analysis was not used: {problem}"
        rows = [self._row(watch, "started", now, phase="Running", message=message,
                          detail={"source": watch.source, "action": action.to_dict(), "problem": problem,
                                  "metrics": [s.to_dict() for s in specs], "interval_floor_s": self.floor})]
        log.info("%s", message)
        if not specs:
            watch.outcome, watch.stage = ("Error", f"no analysis can watch it: {problem}"), "alert"
            rows.append(self._row(watch, "outcome", now, phase="Error", message=watch.outcome[1]))
        return rows

    # ---- measuring -----------------------------------------------------------------------------
    def _due(self, now: float) -> list[tuple[Watch, Metric]]:
        return [(w, m) for w in self.watches.values() if w.stage == "running"
                for m in w.metrics if m.ended is None and m.due <= now]

    def measure(self, due: Sequence[tuple[Watch, Metric]], now: float) -> list[dict]:
        """Take the due measurements; their rows."""
        if not due:
            return []
        values = self.reader.read([m.spec for _, m in due], now)
        rows = []
        for (watch, metric), got in zip(due, values):
            if isinstance(got, Exception):
                phase, message, got = "Error", str(got), None
            else:
                # The afterfix provider's one series is a number; a PromQL vector stays a vector, as in Argo.
                one = metric.spec.provider == "afterfix" and len(got) == 1
                phase, message = measure_phase(metric.spec, got[0] if one else got or None)
            metric.measured(phase, now, self.floor)
            kept = None if got is None else [float(v) for v in got[:MAX_VALUES]]
            watch.recent = (watch.recent + [self._recent(metric.spec.name, now, phase, kept, message)])[-RECENT:]
            rows.append(self._row(watch, "measurement", now, phase=phase, message=message,
                                  value=kept[0] if kept and len(got) == 1 else None,
                                  detail={"metric": metric.spec.name, "values": kept,
                                          "query": metric.spec.query or metric.spec.metric,
                                          "labels": metric.spec.labels or None}))
        return rows

    def _store_values(self, specs: Sequence[AnalysisSpec], now: float) -> list[list[float] | Exception]:
        """The reader's one-query read of the store's metric history (MetricReader.store_values)."""
        return self.reader.store_values(specs, now)

    # ---- judging -------------------------------------------------------------------------------
    def judge(self, now: float) -> list[dict]:
        """Outcomes of the analyses that ended, and for each Failed one the rollback intent (or
        why there is none); the rows."""
        rows: list[dict] = []
        counts: Counter | None = None
        for watch in self.watches.values():
            if watch.stage == "running":
                phase, why = watch.assess()
                if phase == "Running":
                    continue
                watch.outcome = (phase, why)
                rows.append(self._row(watch, "outcome", now, phase=phase, message=why,
                                      detail={"metrics": {m.spec.name: m.ended for m in watch.metrics if m.ended}}))
                log.info("%s of %s (%s): %s: %s", watch.action.verb, watch.action.ref, watch.action.action_id,
                         phase, why)
                watch.stage = "done" if phase == "Successful" else "decide" if phase == "Failed" else "alert"
            if watch.stage != "decide":
                continue
            counts = self._rollback_counts(now) if counts is None else counts
            key = (watch.action.kind, watch.action.namespace, watch.action.name)
            if counts[key] >= self.max_rollbacks:
                message = (f"not rolled back: {counts[key]} automatic rollbacks of {watch.action.ref} in the last "
                           f"24 h reach the cap (--max-rollbacks {self.max_rollbacks}); a person decides")
                watch.stage, watch.done = "alert", {"what": "nothing", "message": message}
                rows.append(self._row(watch, "rollback", now, phase="Failed", message=message,
                                      detail={"step": "skipped", "done": watch.done}))
            else:
                counts[key] += 1
                watch.stage, watch.intent_at = "rollback", now
                rows.append(self._row(watch, "rollback", now, phase="Failed",
                                      message=f"rolling back: {watch.outcome[1]}", detail={"step": "intent"}))
        return rows

    def _rollback_counts(self, now: float) -> Counter:
        """Automatic rollbacks that changed something, per target, in the last 24 h."""
        found = self.store.query("""
            SELECT target_kind, target_namespace, target_name, count(*) AS n FROM rollbacks
            WHERE automatic AND outcome = 'rolled_back' AND time >= ? GROUP BY ALL""", [utc(now) - CAP_WINDOW])
        return Counter({(_text(k), _text(ns), _text(n)): int(c) for k, ns, n, c in found.itertuples(index=False)})

    # ---- acting --------------------------------------------------------------------------------
    def roll_back(self, now: float) -> list[dict]:
        """Ask the engine to roll back every action whose intent is written; the result rows."""
        pending = [w for w in self.watches.values() if w.stage == "rollback"]
        return self._engine_results(pending, call=True) if pending else []

    def _engine_results(self, pending: list[Watch], call: bool = False) -> list[dict]:
        """For each watch with an intent: the engine's outcome already in the `rollbacks` ledger
        (a guard killed while the engine ran), else, when `call`, the engine's answer now."""
        ids = [w.action.action_id for w in pending]
        ledger = self.store.query("""
            SELECT action_id, time, outcome, message, rollback_id FROM rollbacks
            WHERE automatic AND action_id IN (SELECT unnest(?)) AND outcome IN (SELECT unnest(?)) ORDER BY time""",
                                  [ids, list(_ROLLBACK_OUTCOMES)])
        answered: dict[str, list[dict]] = {}
        for r in ledger.to_dict("records"):
            answered.setdefault(r["action_id"], []).append(r)
        rows = []
        for watch in pending:
            since = (watch.intent_at or 0) - 1
            earlier = [r for r in answered.get(watch.action.action_id, ()) if epoch(r["time"]) >= since]
            if earlier:
                last = earlier[-1]
                result = {"outcome": last["outcome"], "message": _text(last["message"]),
                          "rollback_id": _text(last["rollback_id"]), "from": "rollbacks ledger"}
            elif call:
                result = self._call_engine(watch)
            else:
                continue
            watch.stage = "alert"
            watch.done = {"what": result["outcome"], "message": result.get("message"), "rollback": result}
            log.info("%s of %s (%s): rollback %s: %s", watch.action.verb, watch.action.ref, watch.action.action_id,
                     result["outcome"], result.get("message"))
            rows.append(self._row(watch, "rollback", self.clock(), phase="Failed", message=result.get("message"),
                                  detail={"step": "result", "done": watch.done}))
        if rows and not call:
            self.store.append_ledger("analyses", rows)
            return []
        return rows

    def _call_engine(self, watch: Watch) -> dict[str, Any]:
        reason = f"analysis {', '.join(m.spec.name for m in watch.metrics)} failed: {watch.outcome[1]}"
        try:
            rollback = self._rollback
            if rollback is None:
                from afterfix.undo.rollback import rollback_action as rollback
            result = rollback(self.store, self.cluster(), watch.action.action_id, who=WHO, reason=reason,
                              automatic=True)
            out = result.to_dict() if hasattr(result, "to_dict") else {}
            return {**out, "outcome": result.outcome, "message": result.message,
                    "rollback_id": getattr(result, "rollback_id", None)}
        except Exception as e:  # noqa: BLE001 - the engine's failure is an outcome people must hear about
            log.exception("rollback of %s failed", watch.action.action_id)
            return {"outcome": "failed", "message": f"the rollback engine failed: {type(e).__name__}: {e}"}

    def cluster(self):
        if self._cluster is None:
            from afterfix.undo.kube import connect

            self._cluster = connect(self.kubeconfig, self.context)
        return self._cluster

    def alert(self) -> int:
        """Send the alert of every analysis whose end calls for one; how many were sent."""
        ready = [w for w in self.watches.values() if w.stage == "alert"]
        if not ready:
            return 0
        self.notifier.send([self._alert(w) for w in ready])
        for watch in ready:
            watch.stage = "done"
        return len(ready)

    def _alert(self, watch: Watch) -> Alert:
        phase, why = watch.outcome
        done = watch.done or {"what": "nothing", "message": "nothing was done: a person decides"}
        what, ref, verb = done["what"], watch.action.ref, watch.action.verb or "change"
        if phase == "Failed" and what == "rolled_back":
            severity, title = "warning", f"rolled back the agent's {verb} of {ref}: its analysis failed"
        elif phase == "Failed" and what in ("already_rolled_back", "nothing_to_do"):
            severity, title = "info", f"the agent's {verb} of {ref} failed its analysis and was already undone"
        elif phase == "Failed":
            severity, title = "critical", f"the agent's {verb} of {ref} failed its analysis and is NOT rolled back"
        elif phase == "Inconclusive":
            severity, title = "warning", f"the agent's {verb} of {ref}: analysis inconclusive, a person decides"
        else:
            severity, title = "warning", f"the agent's {verb} of {ref} could not be analysed: a person checks it"
        message = f"{why}. {done.get('message') or ''}".strip()
        return Alert(severity=severity, title=title, message=message, action_id=watch.action.action_id,
                     analysis_id=watch.analysis_id,
                     body={"action": watch.action.to_dict(), "target": watch.action.target(),
                           "analysis": watch.summary(), "measurements": watch.recent, "done": done})

    # ---- the loop ------------------------------------------------------------------------------
    def tick(self) -> Tick:
        """One pass: new actions, due measurements, outcomes and intents (one transaction), then
        rollbacks and alerts."""
        now, report = self.clock(), Tick()
        rows: list[dict] = []
        if now >= self._next_discover:
            started = self.discover(now)
            report.started = sum(r["event"] == "started" for r in started)
            rows += started
            self._next_discover = now + self.floor
        due = self._due(now)
        rows += self.measure(due, now)
        report.measured = len(due)
        judged = self.judge(now)
        report.ended = [(r["action_id"], r["phase"]) for r in judged if r["event"] == "outcome"]
        rows += judged
        self.store.append_ledger("analyses", rows)  # intents are committed before the engine runs
        results = self.roll_back(now)
        report.rollbacks = [(r["action_id"], json.loads(r["detail"])["done"]["what"]) for r in results]
        self.store.append_ledger("analyses", results)
        report.alerts = self.alert()
        self.watches = {k: w for k, w in self.watches.items() if w.stage != "done"}
        return report

    def next_wake(self) -> float:
        """When the next tick has something to do."""
        if any(w.stage != "running" for w in self.watches.values()):
            return self.clock()
        # A measurement waits up to its window for others falling due, so that they are taken
        # together: late by at most the window, never early (the interval is a floor).
        times = [self._next_discover] + [m.due + m.window(self.floor) for w in self.watches.values()
                                         for m in w.metrics if m.ended is None]
        return min(times)

    def run(self, stop: threading.Event | None = None, *, once: bool = False, reason: Callable[[], str] = lambda: "stop") -> int:
        """Resume, then tick until `stop` is set (or once); at a stop, record it on every analysis in
        progress. The number of ticks."""
        stop = stop or threading.Event()
        self.resume()
        ticks = 0
        while not stop.is_set():
            try:
                self.tick()
            except (StoreError, duckdb.Error) as e:
                if once:
                    raise
                # What this process holds may now be ahead of the ledgers: start again from them.
                log.error("the store failed during a tick (%s); resuming from its ledgers in %g s", e, self.floor)
                if stop.wait(self.floor):
                    break
                self.watches.clear()
                self.resume()
                continue
            ticks += 1
            if once:
                return ticks
            stop.wait(max(0.0, self.next_wake() - self.clock()))
        self.stopped(reason())
        return ticks

    def stopped(self, reason: str) -> int:
        """Record a clean stop on every analysis in progress; how many."""
        now = self.clock()
        rows = [self._row(w, "stopped", now, phase="Running",
                          message=f"guard {self.name} stopped ({reason}); the analysis resumes when a guard starts")
                for w in self.watches.values()]
        self.store.append_ledger("analyses", rows)
        return len(rows)

    # ---- rows ----------------------------------------------------------------------------------
    def _row(self, watch: Watch, event: str, at: float, *, phase: str | None = None, message: str | None = None,
             value: float | None = None, detail: dict | None = None) -> dict[str, Any]:
        return {"analysis_id": watch.analysis_id, "action_id": watch.action.action_id, "time": utc(at),
                "event": event, "phase": phase, "value": value, "message": message,
                "detail": json.dumps(detail, default=str) if detail is not None else None, "guard": self.name}

    @staticmethod
    def _recent(metric: str, at: float, phase: str, values, message: str | None) -> dict[str, Any]:
        return {"time": utc(at).isoformat(timespec="milliseconds") + "Z", "metric": metric, "phase": phase,
                "values": values, "message": message}

