"""What a generated regression test imports: read its frozen fixture, replay, check, re-simulate.

    incident = load_incident(__file__)                  # the fixture next to the test module
    got = replay(incident, decision_id, decider)        # review.deciders.Replayed, from the frozen inputs
    check_choice(got, Expect(...))                      # same root cause (option id) and fix class
    uncited_evidence(incident, decision_id, got)        # evidence the agent did not have: []
    unreasoned_rejections(got)                          # rejected options without a reason: []
    tainted_steps(incident)                             # steps that used a bad call's output: []
    resimulate(incident)                                # Resimulation: the fix on the simulator

Deciders (`--afterfix-decider` in the generated conftest, or the AFTERFIX_DECIDER variable):

    recorded        (default) the recorded policy (`review.deciders.PolicyDecider`); a decision an
                    LLM made goes to `review.endpoint.EndpointDecider` against `nightshift.model.
                    ScriptedModel`, started here with the recorded seed (or --afterfix-endpoint URL)
    corrected       the recorded choice, except where a reviewer's verdict says it was wrong: then
                    the option the reviewer named (`should_have`)
    MODULE:NAME     your own: a Decider (has .decide), a dict like nightshift.policy.POLICIES, or a
                    function of the inputs returning a Choice (or its dict); MODULE is imported

The fixture is trace text: it is parsed as JSON and compared, never evaluated.
"""

from __future__ import annotations

import copy
import importlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from afterfix._exceptions import AfterfixError
from afterfix.review.deciders import (SCRIPTED, CallableDecider, Decider, NotReplayable, PolicyDecider, Replayed,
                                      decider_for, endpoint_for, made_by_model)
from afterfix.review.recorded import RecordedDecision, ToolCall

__all__ = ["Incident", "Expect", "Resimulation", "RegressionError", "load_incident", "fix_class", "expectations",
           "replay", "check_choice", "uncited_evidence", "unreasoned_rejections", "tainted_steps", "resimulate",
           "resolve_decider", "CorrectedDecider", "pytest_addoption", "afterfix_decider", "DECIDER_ENV", "ENDPOINT_ENV"]

DECIDER_ENV = "AFTERFIX_DECIDER"
ENDPOINT_ENV = "AFTERFIX_ENDPOINT"
FIXTURE_SUFFIX = ".json"


class RegressionError(AfterfixError):
    """A fixture or a decider a generated test cannot use as given."""


# -- the fixture -----------------------------------------------------------------------------------


def _dt(text: Any) -> datetime | None:
    return datetime.fromisoformat(text) if isinstance(text, str) else None


class Incident:
    """One frozen incident (`trust.freeze`): its decisions rebuilt as `RecordedDecision`s."""

    def __init__(self, data: dict, source: str = "<fixture>"):
        if not isinstance(data, dict) or data.get("format") != 1 or "incident" not in data:
            raise RegressionError(f"{source}: not an afterfix regression fixture (format 1): regenerate it with "
                                  "afterfix gen-tests INCIDENT_ID -o DIR")
        self.data, self.source = data, source
        self.info: dict = data["incident"]
        self.incident_id: str = self.info["incident_id"]
        self.decisions: dict[str, RecordedDecision] = {}
        for d in data.get("decisions", []):
            d = dict(d)
            d["tool_calls"] = [ToolCall(**{**t, "start": _dt(t.get("start"))}) for t in d.get("tool_calls", [])]
            d["start"] = _dt(d.get("start"))
            self.decisions[d["decision_id"]] = RecordedDecision(**d)
        self._replays: dict[tuple, Replayed] = {}

    def decision(self, decision_id: str) -> RecordedDecision:
        try:
            return self.decisions[decision_id]
        except KeyError:
            raise RegressionError(f"{self.source}: no decision {decision_id!r}; it holds "
                                  f"{', '.join(self.decisions) or 'none'}") from None

    def verdict_on(self, decision_id: str) -> dict | None:
        """The newest current verdict on the decision (or on one of its actions)."""
        acts = {a["action_id"] for a in self.data.get("actions", []) if a.get("decision_id") == decision_id}
        mine = [v for v in self.data.get("verdicts", []) if v.get("decision_id") == decision_id
                or v.get("target_id") in acts]
        return max(mine, key=lambda v: v.get("time") or "") if mine else None

    def correction(self, decision_id: str) -> str | None:
        """The option a reviewer said should have been taken, when their verdict is wrong."""
        v = self.verdict_on(decision_id)
        return v.get("should_have") if v and v.get("verdict") == "wrong" and v.get("should_have") else None


def load_incident(test_file: str | Path) -> Incident:
    """The fixture that sits next to a generated test module (same name, .json)."""
    path = Path(test_file)
    path = path if path.suffix == FIXTURE_SUFFIX else path.with_name(path.stem.removeprefix("test_") + FIXTURE_SUFFIX)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegressionError(f"{path}: fixture missing; regenerate with afterfix gen-tests INCIDENT_ID -o {path.parent}") from None
    except json.JSONDecodeError as e:
        raise RegressionError(f"{path} line {e.lineno}: not JSON ({e.msg}); regenerate it with afterfix gen-tests") from None
    return Incident(data, str(path))


# -- what is expected --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    selected: str | None  # the option id: the root cause the agent named
    fix: str  # its fix class, as fix_class() says it ("patch HorizontalPodAutoscaler")
    because: str = ""  # where the expectation comes from: the agent's choice, or a reviewer's correction


def fix_class(action: dict | None) -> str:
    """The kind of change an option's action makes: "<verb> <Kind>", or "no change"."""
    action = action if isinstance(action, dict) else {}
    kind = action.get("kind")
    for flag, verb in (("restart", "restart"), ("rollback", "rollback"), ("sql", "create"), ("notify", "notify")):
        if action.get(flag):
            return f"{verb} {kind or 'Job'}" if verb == "create" else f"{verb} {kind or ''}".strip()
    if action.get("patch"):
        return f"patch {kind or ''}".strip()
    if kind:
        return f"change {kind}"
    return "no change"


def expectations(incident: Incident) -> dict[str, Expect]:
    """Per decision: the recorded choice, or the reviewer's `should_have` where a verdict says wrong."""
    out = {}
    for did, d in incident.decisions.items():
        corrected = incident.correction(did)
        pick = corrected or d.selected
        option = d.option(pick) or {}
        if corrected:
            v = incident.verdict_on(did) or {}
            because = f"corrected by {v.get('who')}: the agent chose {d.selected}, which they judged wrong"
        else:
            because = "the agent's own choice"
        out[did] = Expect(pick, fix_class(option.get("action")), because)
    return out


# -- deciders ------------------------------------------------------------------------------------------


class CorrectedDecider:
    """The recorded choice, or the reviewer's `should_have` where their verdict is wrong (the others'
    verdicts are as recorded; the one the agent took is rejected with the reviewer's note)."""

    name = "corrected"

    def __init__(self, incident: Incident):
        self.incident = incident

    def decide(self, decision: RecordedDecision, inputs: dict, tool_results: dict) -> Replayed:
        pick = self.incident.correction(decision.decision_id) or decision.selected
        v = self.incident.verdict_on(decision.decision_id) or {}
        options = []
        for o in decision.options:
            o = copy.deepcopy(o)
            if o["id"] == pick:
                o["verdict"] = "selected"
            elif o["id"] == decision.selected:
                o["verdict"], o["reason"] = "rejected", f"a reviewer ({v.get('who')}) judged it wrong: {v.get('note') or ''}".strip()
            options.append(o)
        return Replayed(pick, decision.reason if pick == decision.selected else f"reviewer: {v.get('note') or pick}", options)


def resolve_decider(spec: str | None, incident: Incident) -> Decider | None:
    """The decider `spec` names (see the module docstring); None means the recorded one."""
    spec = (spec or "recorded").strip()
    if spec == "recorded":
        return None
    if spec == "corrected":
        return CorrectedDecider(incident)
    module, _, name = spec.partition(":")
    if not module or not name:
        raise RegressionError(f"--afterfix-decider {spec!r}: use recorded, corrected or MODULE:NAME "
                              "(e.g. mypolicies:POLICIES)")
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise RegressionError(f"--afterfix-decider {spec!r}: {e}; MODULE must be importable (on sys.path) "
                              "and define NAME") from None
    if hasattr(obj, "decide"):
        return obj
    if isinstance(obj, dict):
        return PolicyDecider(policies=obj)
    if callable(obj):
        return CallableDecider(obj, name)
    raise RegressionError(f"--afterfix-decider {spec!r}: {type(obj).__name__} is not a Decider, a dict of policies "
                          "or a function of the inputs")


def replay(incident: Incident, decision_id: str, decider: Any = None, *, endpoint: str | None = None) -> Replayed:
    """Re-make one frozen decision through `decider` (a Decider, a spec string, or None: recorded).
    Cached per incident, decision and decider, so the tests of one module replay once."""
    endpoint = endpoint or os.environ.get(ENDPOINT_ENV) or SCRIPTED
    chosen = resolve_decider(decider, incident) if decider is None or isinstance(decider, str) else decider
    key = (decision_id, id(chosen) if chosen is not None else None, endpoint, str(decider))
    if key in incident._replays:
        return incident._replays[key]
    decision = incident.decision(decision_id)
    inputs = copy.deepcopy(decision.observations())
    results = {t.call_id: copy.deepcopy(t.result) for t in decision.tool_calls if t.call_id and t.result is not None}
    model_made = made_by_model(decision)
    if model_made and isinstance(chosen, PolicyDecider):
        chosen = None  # a dict of policies knows no model's decision: it goes to the endpoint
    with endpoint_for(decision, endpoint if model_made else None) as url:
        use = chosen or decider_for(decision, endpoint=url)
        got = use.decide(decision, inputs, results)
    incident._replays[key] = got
    return got


# -- checks -----------------------------------------------------------------------------------------


def check_choice(got: Replayed, expect: Expect, decision: RecordedDecision | None = None) -> None:
    """AssertionError unless `got` picked the expected option with an action of the expected class
    (an option the decider returns without its action, as a model's answer does, has the action the
    agent recorded for that option id)."""
    chosen = next((o for o in got.options if o.get("id") == got.selected), {})
    action = chosen.get("action") or ((decision.option(got.selected) or {}).get("action") if decision else None)
    fix = fix_class(action)
    if got.selected != expect.selected or fix != expect.fix:
        raise AssertionError(f"the decider chose {got.selected!r} ({fix}) where {expect.selected!r} ({expect.fix}) "
                             f"is expected ({expect.because}); its reason: {got.reason}")


_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")
_PAIR = re.compile(r"([A-Za-z_][\w.]*)=(-?\d+(?:\.\d+)?)(?![\w.])")


def _leaves(value: Any, out: dict, key: str = "") -> dict:
    """{leaf key: [values]} of a JSON value; list items keep their parent's key."""
    if isinstance(value, dict):
        for k, v in value.items():
            _leaves(v, out, str(k))
    elif isinstance(value, list):
        for v in value:
            _leaves(v, out, key)
    elif value is not None:
        out.setdefault(key, []).append(value)
    return out


def _figures(values: list) -> list[float]:
    out = []
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out.append(float(v))
        elif isinstance(v, str):
            out += [float(n) for n in _NUMBER.findall(v)]
    return out


def _matches(text: str, figures: list[float]) -> bool:
    decimals = len(text.split(".")[1]) if "." in text else 0
    x, tol = float(text), 0.5 * 10 ** -decimals + 1e-9
    return any(abs(v * f - x) <= tol for v in figures for f in (1, 100, 0.01))


def uncited_evidence(incident: Incident, decision_id: str, got: Replayed) -> list[str]:
    """Problems with the evidence of the option `got` selected (as recorded for that option): it cites
    none, or a figure in it is no value the agent had (in its inputs or tool results, shown rounded;
    a percentage may be shown as a fraction). `name=figure` is checked against the inputs' own `name`
    when they have one; a name they do not have is a figure the policy derived, and is not checked.
    An empty list means grounded."""
    decision = incident.decision(decision_id)
    if got.selected is None:
        return []
    option = decision.option(got.selected) or next((o for o in got.options if o.get("id") == got.selected), None)
    evidence = (option or {}).get("evidence") or []
    if not evidence:
        return [f"option {got.selected!r} cites no evidence"]
    had = _leaves([decision.observations(), [t.result for t in decision.tool_calls]], {})
    everything = _figures([v for vs in had.values() for v in vs] + list(had))
    texts = sorted({v for vs in had.values() for v in vs if isinstance(v, str) and len(v) >= 3}, key=len, reverse=True)
    problems = []
    for item in evidence:
        rest = str(item)
        for name, n in _PAIR.findall(rest):
            if name in had and not _matches(n, _figures(had[name])):
                problems.append(f"option {got.selected!r} cites {item!r}: the agent had {name}={had[name][:3]}, not {n}")
        rest = _PAIR.sub(" ", rest)
        for t in texts:
            rest = rest.replace(t, " ")  # a value quoted whole (a name, an image) is had as it is
        for n in _NUMBER.findall(rest):
            if not _matches(n, everything):
                problems.append(f"option {got.selected!r} cites {item!r}: {n} is no value the agent had")
    return problems


def unreasoned_rejections(got: Replayed) -> list[str]:
    """Options the decider rejected without saying why."""
    return [f"option {o.get('id')!r} is rejected with no reason" for o in got.options
            if o.get("verdict") == "rejected" and not str(o.get("reason") or "").strip()]


def tainted_steps(incident: Incident) -> list[str]:
    """The decisions and actions of the incident that used a bad tool call's output
    (analysis.findings.first_bad_step, frozen with the fixture)."""
    t = incident.data.get("tainted") or {}
    spans = set(t.get("span_ids") or [])
    out = [f"decision {d.decision_id} ({d.question}) used a bad call's output: {'; '.join(t.get('findings') or [])}"
           for d in incident.decisions.values() if d.span_id in spans or d.decision_id in (t.get("decision_ids") or [])]
    return out


# -- re-simulation -------------------------------------------------------------------------------------------


@dataclass
class Measurement:
    at_s: float  # seconds after the change
    value: float | None
    good: bool


@dataclass
class Check:
    name: str
    metric: str
    condition: str
    failure_limit: int
    before: float | None
    measurements: list[Measurement] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return sum(not m.good for m in self.measurements)

    @property
    def passed(self) -> bool:
        return bool(self.measurements) and self.failures <= self.failure_limit


@dataclass
class Resimulation:
    scenario: str | None
    change: str = ""  # what was applied, when
    checks: list[Check] = field(default_factory=list)
    skipped: str | None = None  # why nothing could be re-simulated

    @property
    def recovered(self) -> bool:
        return self.skipped is None and bool(self.checks) and all(c.passed for c in self.checks)

    def explain(self) -> str:
        if self.skipped:
            return self.skipped
        lines = [f"scenario {self.scenario}: {self.change}"]
        for c in self.checks:
            shown = ", ".join(f"+{m.at_s / 60:g}m {m.value:.4g}{'' if m.good else ' (bad)'}" for m in c.measurements
                              if m.value is not None)
            lines.append(f"  {c.name}: {c.metric} {c.condition}, {c.failures} bad of {len(c.measurements)} "
                         f"(at most {c.failure_limit}); before the change {c.before}; measured {shown}")
        return "\n".join(lines)


_CONDITION = re.compile(r"^\s*result\s*(<=|>=|<|>|==)\s*(-?\d+(?:\.\d+)?(?:e-?\d+)?)\s*$")
_OPS = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
        "==": lambda a, b: a == b}


def _seconds(text: Any, default: float) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", str(text or "").strip())
    if not m:
        return default
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _specs(analysis: Any) -> list[dict]:
    return [analysis] if isinstance(analysis, dict) else [a for a in analysis or [] if isinstance(a, dict)]


def _restart_patch(at: float) -> dict:
    from afterfix.nightshift.clock import rfc3339

    return {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": rfc3339(at)}}}}}


def _change_for(incident: Incident, decision_id: str, option_id: str, act: dict) -> dict | None:
    """The patch a reviewer's option would have made, on the recorded action's target or the option's."""
    option = incident.decision(decision_id).option(option_id) or {}
    action = option.get("action") or {}
    kind = action.get("kind") or act["target_kind"]
    api = act["target_api_version"] if kind == act["target_kind"] else {
        "HorizontalPodAutoscaler": "autoscaling/v2", "Deployment": "apps/v1", "ConfigMap": "v1"}.get(kind)
    if api is None:
        return None
    target = {"target_kind": kind, "target_api_version": api, "target_namespace": act["target_namespace"],
              "target_name": action.get("name") or act["target_name"]}
    if action.get("patch"):
        return {**target, "patch": action["patch"]}
    if action.get("restart"):
        return {**target, "patch": None}
    return None


def resimulate(incident: Incident, *, step_s: float = 15.0) -> Resimulation:
    """Play the incident's scenario again on the simulator (its setup at 21:00, its events, the night's
    earlier changes to objects it owns), apply the agent's recorded change at the time it was made
    (or, where a reviewer corrected the choice, that option's change), and measure each metric of
    the change's recorded analysis where the analysis would: from initialDelay, `count` times,
    `interval` apart. `recovered` when no check has more bad measurements than its failureLimit."""
    from afterfix.nightshift import scenarios as sc
    from afterfix.nightshift.clock import SimClock
    from afterfix.nightshift.cluster import ApiError, Cluster

    key = incident.info.get("scenario")
    out = Resimulation(key)
    if key not in sc.SCENARIOS:
        out.skipped = f"incident {incident.incident_id} names no simulator scenario ({key!r}): nothing to re-simulate"
        return out
    acts = [a for a in incident.data.get("actions", []) if a.get("mutating") and a.get("status") == "applied"
            and _specs(a.get("analysis"))]
    changes = []
    for a in acts:
        corrected = incident.correction(a.get("decision_id") or "")
        if corrected:
            alt = _change_for(incident, a["decision_id"], corrected, a)
            if alt is None:
                out.skipped = (f"the reviewer's option {corrected!r} has no change the simulator can make "
                               "(no patch or restart): nothing to re-simulate")
                return out
            changes.append({**a, **alt, "why": f"the reviewer's {corrected}"})
        else:
            changes.append({**a, "why": "the agent's recorded change"})
    if not changes:
        statuses = ", ".join(sorted({str(a.get("status")) for a in incident.data.get("actions", [])})) or "none"
        out.skipped = (f"incident {incident.incident_id}: the agent applied no change with an analysis to re-check "
                       f"(actions: {statuses})")
        return out
    scenario = sc.SCENARIOS[key]
    clock = SimClock(sc.SETUP_AT)
    cluster = Cluster(clock, seed=int(incident.info.get("seed") or 0))
    scenario.setup(cluster)
    cluster.tick(sc.NIGHT_START - clock.now(), step=60.0)
    timeline = [(sc.at(m), 0, "event", fn) for m, _, fn in scenario.events]
    timeline += [(_epoch(p["start_time"]), 1, "prior", p) for p in incident.data.get("prior_changes", [])]
    timeline.sort(key=lambda e: (e[0], e[1]))
    first_at = min(_epoch(ch["start_time"]) for ch in changes)

    def advance(to: float) -> None:
        if to > clock.now():
            cluster.tick(to - clock.now(), step=step_s)

    def apply(target: dict, patch: dict | None, at: float) -> None:
        cluster.patch(target["target_api_version"], target["target_kind"], target["target_namespace"],
                      target["target_name"], patch if patch is not None else _restart_patch(at),
                      field_manager="afterfix-agent")

    for when, _, what, item in timeline:
        if when >= first_at:
            break
        advance(when)
        if what == "event":
            item(cluster)
        elif item.get("patch") is not None:
            try:
                apply(item, item["patch"], when)
            except ApiError:
                pass  # an object this scenario does not own (another scenario's): not part of this replay
    for ch in changes:
        at = _epoch(ch["start_time"])
        advance(at)
        name_of = lambda spec: (((spec.get("provider") or {}).get("afterfix") or {}).get("labels") or {}).get(
            "k8s.deployment.name")
        checks = []
        for spec in _specs(ch.get("analysis")):
            m = _CONDITION.match(str(spec.get("successCondition") or ""))
            metric = str(((spec.get("provider") or {}).get("afterfix") or {}).get("metric") or "")
            if not m or not metric.startswith("afterfix.workload."):
                continue
            workload = name_of(spec)
            workload = ch["target_name"] if not isinstance(workload, str) or "{{" in workload else workload
            checks.append((spec, m.group(1), float(m.group(2)), metric.removeprefix("afterfix.workload."), workload))
        ns = ch["target_namespace"]
        before = {c[3]: cluster.workloads.metrics(ns, c[4]).get(c[3]) for c in checks}
        apply(ch, ch.get("patch"), at)
        out.change = (f"{ch['why']}: {ch['verb']} {ch['target_kind']} {ns}/{ch['target_name']} at "
                      f"{datetime.fromtimestamp(at, tz=timezone.utc):%H:%M} UTC (simulated)")
        # Every check's measurement times, in order, on one clock.
        plan = []
        for spec, op, bound, signal, workload in checks:
            check = Check(spec.get("name") or signal, signal, f"{op} {bound:g}", int(spec.get("failureLimit") or 0),
                          before.get(signal))
            out.checks.append(check)
            delay, every = _seconds(spec.get("initialDelay"), 0.0), _seconds(spec.get("interval"), 60.0)
            for k in range(max(1, int(spec.get("count") or 1))):
                plan.append((at + delay + k * every, check, op, bound, signal, workload))
        for when, check, op, bound, signal, workload in sorted(plan, key=lambda p: p[0]):
            advance(when)
            value = cluster.workloads.metrics(ns, workload).get(signal)
            check.measurements.append(Measurement(when - at, value, value is not None and _OPS[op](value, bound)))
    return out


# -- pytest: what the generated conftest imports ----------------------------------------------------------------


def pytest_addoption(parser) -> None:
    group = parser.getgroup("afterfix", "afterfix regression tests")
    group.addoption("--afterfix-decider", default=None, metavar="recorded|corrected|MODULE:NAME",
                    help=f"who re-makes the decisions (default: ${DECIDER_ENV} or recorded)")
    group.addoption("--afterfix-endpoint", default=None, metavar="URL",
                    help=f"OpenAI-compatible endpoint for an LLM's decisions (default: ${ENDPOINT_ENV} or the "
                         "scripted model, started in-process with the recorded seed)")


def _fixture(fn):
    import pytest

    return pytest.fixture(scope="session", name=fn.__name__)(fn)


@_fixture
def afterfix_decider(request) -> str:
    """The decider spec the tests replay through: --afterfix-decider, else $AFTERFIX_DECIDER, else recorded."""
    spec = None
    try:
        spec = request.config.getoption("--afterfix-decider")
        endpoint = request.config.getoption("--afterfix-endpoint")
        if endpoint:
            os.environ[ENDPOINT_ENV] = endpoint
    except ValueError:  # the conftest's options were not registered (another conftest came first)
        pass
    return spec or os.environ.get(DECIDER_ENV) or "recorded"
