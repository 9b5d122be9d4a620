"""The analysis that watches one agent action: what to measure after it, how often, what is bad.

The vocabulary and the semantics are Argo Rollouts' (one item of an AnalysisTemplate's
`metrics[]`), so an agent that knows Argo writes it without learning anything new:

    {"name": "latency-p95", "interval": "60s", "initialDelay": "2m", "count": 5,
     "successCondition": "result < 300", "failureCondition": "result >= 300",
     "failureLimit": 1, "inconclusiveLimit": 1, "consecutiveErrorLimit": 4,
     "provider": {"afterfix": {"metric": "afterfix.workload.latency_p95_ms",
                               "labels": {"k8s.namespace.name": "{{namespace}}", "k8s.deployment.name": "{{name}}"}}}}

`parse_analysis` checks all of it at once (unknown keys included: a typo is refused, never
ignored) and raises AnalysisError naming the field and the fix; `bind` fills the templates from
the action's target, refusing values that are not Kubernetes names; `measure_phase` judges one
measurement and `run_phase` the measurements so far, both as Argo does (docs/analysis.md has the
tables). Where afterfix departs from Argo, it is for a guard on one action:

- `count` is required with `interval` (Argo would measure forever); without both, one measurement;
- at least one of successCondition and failureCondition (Argo counts every measurement of a
  metric without conditions as Successful, which watches nothing);
- the Prometheus address is afterfix's setting, never the trace's (`provider.prometheus.address`
  is refused), and only the `afterfix` and `prometheus` providers exist.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from afterfix._exceptions import AfterfixError
from afterfix.undo.conditions import Condition, ConditionError, EvaluationError, measured, show

__all__ = ["AnalysisSpec", "AnalysisError", "parse_analysis", "measure_phase", "run_phase", "assess_run", "PHASES",
           "RUN_PHASES", "KEYS", "TEMPLATES", "ERROR_RETRY_S"]

PHASES = ("Successful", "Failed", "Inconclusive", "Error")  # of one measurement
RUN_PHASES = ("Running",) + PHASES  # of the analysis so far
KEYS = ("name", "interval", "initialDelay", "count", "successCondition", "failureCondition", "failureLimit",
        "inconclusiveLimit", "consecutiveErrorLimit", "provider")
PROVIDER_KEYS = {"afterfix": ("metric", "labels"), "prometheus": ("query",)}
TEMPLATES = ("namespace", "name", "kind")  # of the action's target; also spelled {{args.namespace}}
DEFAULT_CONSECUTIVE_ERROR_LIMIT = 4  # Argo's
ERROR_RETRY_S = 10.0  # Argo measures again this soon after an Error, whatever the interval
MAX_COUNT = 1000
MAX_SECONDS = 86_400.0  # an interval or initial delay over a day is a mistake for a guard on one action
MAX_QUERY = 4000

# Argo fields afterfix knows but does not take, and why.
_NOT_HERE = {
    "consecutiveSuccessLimit": "consecutiveSuccessLimit is not supported; use count and failureLimit",
    "dryRun": "dryRun belongs to an AnalysisTemplate, not to one metric; leave it out",
    "metrics": "give one metric (one item of an AnalysisTemplate's metrics[]), not the list",
}
_PROVIDERS_NOT_HERE = ("kayenta", "web", "datadog", "wavefront", "newRelic", "job", "cloudWatch", "graphite", "influxdb",
                       "skywalking", "plugin")
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")
_METRIC = re.compile(r"[A-Za-z_][A-Za-z0-9_.:]{0,254}")
_LABEL_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.:/-]{0,254}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_TEMPLATE = re.compile(r"\{\{\s*(args\.)?([^{}\s]*)\s*\}\}")
_DURATION = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
# What a bound template may hold: Kubernetes' own rules for these names, so no value can carry
# PromQL (quotes, braces, operators) into a query.
_TARGET_RULES = {
    "namespace": (re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"),
                  "a namespace is an RFC 1123 label: at most 63 lowercase letters, digits and '-'"),
    "name": (re.compile(r"(?=.{1,253}\Z)[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*"),
             "a name is an RFC 1123 subdomain: at most 253 lowercase letters, digits, '-' and '.'"),
    "kind": (re.compile(r"[A-Z][A-Za-z0-9]{0,62}"), "a kind is CamelCase letters and digits, e.g. Deployment"),
}


class AnalysisError(AfterfixError):
    """An analysis spec (or a target to bind it to) that cannot work; the message names the place,
    the field and the fix. `where`, `field` and `problem` hold the parts."""

    def __init__(self, where: str, field: str | None, problem: str):
        super().__init__(f"{where}: {field}: {problem}" if field else f"{where}: {problem}")
        self.where, self.field, self.problem = where, field, problem


@dataclass(frozen=True)
class AnalysisSpec:
    """One analysis, checked; made by `parse_analysis`, filled by `bind`. `interval` and
    `initial_delay` keep what was written ("60s" or 60); `interval_s` and `initial_delay_s` are
    seconds. `count` is None for Argo's single measurement (no interval); `measurements` is the
    number of measurements the analysis takes either way."""

    name: str
    provider: str  # "afterfix" or "prometheus"
    metric: str | None = None  # afterfix
    labels: dict[str, str] = field(default_factory=dict, hash=False)  # afterfix
    query: str | None = None  # prometheus
    success_condition: str | None = None
    failure_condition: str | None = None
    interval: str | float | None = None
    initial_delay: str | float | None = None
    interval_s: float = 0.0
    initial_delay_s: float = 0.0
    count: int | None = None
    failure_limit: int = 0
    inconclusive_limit: int = 0
    consecutive_error_limit: int = DEFAULT_CONSECUTIVE_ERROR_LIMIT
    where: str = field(default="analysis", compare=False, repr=False)
    success: Condition | None = field(default=None, compare=False, repr=False)
    failure: Condition | None = field(default=None, compare=False, repr=False)

    @property
    def measurements(self) -> int:
        return self.count if self.count is not None else 1

    @property
    def templates(self) -> frozenset[str]:
        """The target fields this spec's templates still need ({"namespace", "name"}, ...)."""
        return frozenset(m.group(2) for text in self._templated().values() for m in _TEMPLATE.finditer(text))

    def bind(self, target: Mapping[str, Any]) -> "AnalysisSpec":
        """This spec with {{namespace}}, {{name}} and {{kind}} (and {{args.X}}) filled from `target`
        (a mapping with kind, namespace, name). Each value used must be a valid Kubernetes name
        for its field, or AnalysisError: a target name never becomes PromQL."""
        if not isinstance(target, Mapping):
            raise AnalysisError(self.where, "target", f"{target!r} is not a mapping; give "
                                "{'kind': 'Deployment', 'namespace': 'shop', 'name': 'payments'}")
        values = {}
        for key in sorted(self.templates):
            value = target.get(key)
            user = next(f for f, text in self._templated().items() if any(m.group(2) == key for m in _TEMPLATE.finditer(text)))
            if value is None or value == "":
                raise AnalysisError(self.where, f"target.{key}", f"the target has no {key}, and {user} needs "
                                    f"{{{{{key}}}}}; bind a target with a {key}, or write a spec without it")
            pattern, rule = _TARGET_RULES[key]
            if not isinstance(value, str) or not pattern.fullmatch(value):
                raise AnalysisError(self.where, f"target.{key}", f"{_brief(value)} is not a Kubernetes {key} "
                                    f"({rule}); it is not put into {user}")
            values[key] = value
        fill = lambda text: _TEMPLATE.sub(lambda m: values[m.group(2)], text)  # noqa: E731
        return dataclasses.replace(self, labels={k: fill(v) for k, v in self.labels.items()},
                                   query=fill(self.query) if self.query is not None else None)

    def to_dict(self) -> dict[str, Any]:
        """The spec as Argo's JSON object; `parse_analysis(spec.to_dict()) == spec`."""
        out: dict[str, Any] = {"name": self.name}
        for key, value in (("interval", self.interval), ("initialDelay", self.initial_delay), ("count", self.count),
                           ("successCondition", self.success_condition), ("failureCondition", self.failure_condition)):
            if value is not None:
                out[key] = value
        out.update(failureLimit=self.failure_limit, inconclusiveLimit=self.inconclusive_limit,
                   consecutiveErrorLimit=self.consecutive_error_limit)
        if self.provider == "afterfix":
            body: dict[str, Any] = {"metric": self.metric}
            if self.labels:
                body["labels"] = dict(self.labels)
            out["provider"] = {"afterfix": body}
        else:
            out["provider"] = {"prometheus": {"query": self.query}}
        return out

    def _templated(self) -> dict[str, str]:
        """The texts templates may appear in, by field."""
        if self.provider == "prometheus":
            return {"provider.prometheus.query": self.query or ""}
        return {f"provider.afterfix.labels.{k}": v for k, v in self.labels.items()}


def parse_analysis(obj: Any, where: str = "analysis") -> AnalysisSpec:
    """An AnalysisSpec from Argo's JSON object (a mapping, or its JSON text), every field checked.
    AnalysisError names `where`, the field and the fix."""
    if isinstance(obj, AnalysisSpec):
        return obj
    if isinstance(obj, (str, bytes, bytearray)):
        try:
            obj = json.loads(obj)
        except ValueError as e:
            raise AnalysisError(where, None, f"is not JSON ({e}); give an object like "
                                '{"name": "latency-p95", "successCondition": "result < 300", "provider": {...}}') from None
    if not isinstance(obj, Mapping):
        raise AnalysisError(where, None, f"{_brief(obj)} is not an object; give one metric of an Argo "
                            "AnalysisTemplate, e.g. {\"name\": \"latency-p95\", \"successCondition\": \"result < 300\", ...}")
    _known(obj, KEYS, where, None, _NOT_HERE)
    fail = lambda key, problem: AnalysisError(where, key, problem)  # noqa: E731

    name = obj.get("name")
    if name is None:
        raise fail("name", "is missing; name the analysis, e.g. \"latency-p95\"")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise fail("name", f"{_brief(name)} must be 1-63 letters, digits, '.', '_' or '-', starting and ending "
                   "with a letter or digit, e.g. \"latency-p95\"")

    conditions = {}
    for key in ("successCondition", "failureCondition"):
        if obj.get(key) is not None:
            try:
                conditions[key] = Condition.parse(obj[key])
            except ConditionError as e:
                raise fail(key, str(e)) from None
    if not conditions:
        raise fail("successCondition", "is missing, and so is failureCondition; give at least one, e.g. "
                   "\"successCondition\": \"result < 300\" (without either, nothing is watched)")

    interval, interval_s = _duration(obj, "interval", where, least=0.0, open_low=True)
    initial_delay, initial_delay_s = _duration(obj, "initialDelay", where, least=0.0)
    count = _whole(obj, "count", where, least=1)
    failure_limit = _whole(obj, "failureLimit", where, least=0, default=0)
    inconclusive_limit = _whole(obj, "inconclusiveLimit", where, least=0, default=0)
    consecutive_error_limit = _whole(obj, "consecutiveErrorLimit", where, least=0, default=DEFAULT_CONSECUTIVE_ERROR_LIMIT)
    if interval is not None and count is None:
        raise fail("count", f"is missing: with an interval ({interval!r}) Argo measures forever, and a guard on one "
                   "action needs an end; add e.g. \"count\": 5")
    if count is not None and count > 1 and interval is None:
        raise fail("interval", f"is missing: {count} measurements need the time between them (Argo: interval must "
                   "be specified when count > 1); add e.g. \"interval\": \"60s\"")
    for key, limit in (("failureLimit", failure_limit), ("inconclusiveLimit", inconclusive_limit)):
        if count is not None and limit > count:
            raise fail(key, f"{limit} is more than count ({count}), so the limit could never be passed (Argo: count "
                       f"must be >= {key}); lower {key} or raise count")

    provider, metric, labels, query = _provider(obj.get("provider"), where)
    return AnalysisSpec(name=name, provider=provider, metric=metric, labels=labels, query=query,
                        success_condition=obj.get("successCondition"), failure_condition=obj.get("failureCondition"),
                        interval=interval, initial_delay=initial_delay, interval_s=interval_s,
                        initial_delay_s=initial_delay_s, count=count, failure_limit=failure_limit,
                        inconclusive_limit=inconclusive_limit, consecutive_error_limit=consecutive_error_limit,
                        where=where, success=conditions.get("successCondition"),
                        failure=conditions.get("failureCondition"))


def measure_phase(spec: AnalysisSpec, value: Any) -> tuple[str, str]:
    """(phase, detail) of one measurement, as Argo judges it: Failed when failureCondition holds;
    else Successful when successCondition holds; else Inconclusive when both are given. With only
    successCondition, not holding is Failed; with only failureCondition, not holding is Successful.
    A condition that cannot be evaluated on `value` (no data where it needs a number, an index out
    of range) makes the measurement an Error, as in Argo. `value`: a number, a list of numbers (a
    vector), or None (no data, the same as an empty vector)."""
    try:
        result = measured(value)
    except TypeError as e:
        return "Error", str(e)
    shown = _shown(result)
    holds: dict[str, bool] = {}
    for key, condition in (("failureCondition", spec.failure), ("successCondition", spec.success)):
        if condition is not None:
            try:
                holds[key] = condition.evaluate(result)
            except EvaluationError as e:
                return "Error", f"{shown}: {key} \"{condition}\" cannot be evaluated: {e}"
    success, failure = spec.success_condition, spec.failure_condition
    if holds.get("failureCondition"):
        return "Failed", f"{shown}: failureCondition \"{failure}\" is true"
    if holds.get("successCondition"):
        return "Successful", f"{shown}: successCondition \"{success}\" is true"
    if failure is None:
        return "Failed", f"{shown}: successCondition \"{success}\" is false"
    if success is None:
        return "Successful", f"{shown}: failureCondition \"{failure}\" is false"
    return "Inconclusive", f"{shown}: neither successCondition \"{success}\" nor failureCondition \"{failure}\" is true"


def assess_run(spec: AnalysisSpec, phases: Sequence[str]) -> tuple[str, str]:
    """(run phase, why) after the measurements `phases`, in order, as Argo assesses a metric:
    Failed once failed measurements exceed failureLimit, Inconclusive once inconclusive ones exceed
    inconclusiveLimit, Error once consecutive errors exceed consecutiveErrorLimit, Successful once
    `measurements` non-error measurements are taken without that; Running until then. Errors do
    not count towards `count`, and a measurement that is not an Error resets the consecutive
    errors. The run ends at the first of these; measurements after it are not looked at."""
    if isinstance(phases, (str, bytes)) or not isinstance(phases, Sequence):
        raise AnalysisError(spec.where, "phases", f"{phases!r} is not a list of measurement phases")
    failed = inconclusive = errors = consecutive = taken = 0
    for i, phase in enumerate(phases):
        if phase not in PHASES:
            raise AnalysisError(spec.where, f"phases[{i}]", f"{_brief(phase)} is not a measurement phase; "
                                f"one of {', '.join(PHASES)}")
        if phase == "Error":
            errors, consecutive = errors + 1, consecutive + 1
        else:
            consecutive, taken = 0, taken + 1
            failed += phase == "Failed"
            inconclusive += phase == "Inconclusive"
        if failed > spec.failure_limit:
            return "Failed", f"failed ({failed}) > failureLimit ({spec.failure_limit})"
        if inconclusive > spec.inconclusive_limit:
            return "Inconclusive", f"inconclusive ({inconclusive}) > inconclusiveLimit ({spec.inconclusive_limit})"
        if consecutive > spec.consecutive_error_limit:
            return "Error", f"consecutiveErrors ({consecutive}) > consecutiveErrorLimit ({spec.consecutive_error_limit})"
        if taken >= spec.measurements:
            return "Successful", (f"count ({spec.measurements}) reached: {failed} failed (failureLimit "
                                  f"{spec.failure_limit}), {inconclusive} inconclusive (inconclusiveLimit "
                                  f"{spec.inconclusive_limit}), {errors} errors")
    return "Running", f"{taken} of {spec.measurements} measurements taken ({errors} errors)"


def run_phase(spec: AnalysisSpec, phases: Sequence[str]) -> str:
    """The run phase of `assess_run`: Running, Successful, Failed, Inconclusive or Error."""
    return assess_run(spec, phases)[0]


# ---- fields -------------------------------------------------------------------------------------


def _known(obj: Mapping, known: Sequence[str], where: str, prefix: str | None, not_here: Mapping[str, str] = {}):
    for key in obj:
        if key in known:
            continue
        path = f"{prefix}.{key}" if prefix else str(key)
        if key in not_here:
            raise AnalysisError(where, path, not_here[key])
        close = difflib.get_close_matches(str(key).lower(), [k.lower() for k in known], n=1, cutoff=0.7)
        hint = f"did you mean {next(k for k in known if k.lower() == close[0])}? " if close else ""
        raise AnalysisError(where, show(path) if not isinstance(key, str) or _CONTROL.search(key) or len(key) > 80 else path,
                            f"is not a key afterfix knows; {hint}known keys: {', '.join(known)}")


def _duration(obj: Mapping, key: str, where: str, least: float, open_low: bool = False) -> tuple[Any, float]:
    value = obj.get(key)
    if value is None:
        return None, 0.0
    seconds = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and _DURATION.fullmatch(value):
        seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(value))
    if seconds is None or not math.isfinite(seconds):
        raise AnalysisError(where, key, f"{_brief(value)} is not a duration; write Argo's \"30s\", \"5m\", \"1h\" "
                            "(Go durations) or a number of seconds")
    if seconds < least or (open_low and seconds <= least):
        raise AnalysisError(where, key, f"{_brief(value)} must be {'more than' if open_low else 'at least'} 0 s")
    if seconds > MAX_SECONDS:
        raise AnalysisError(where, key, f"{_brief(value)} is over a day ({MAX_SECONDS:g} s); a guard watches one "
                            "action for minutes, so give e.g. \"60s\"")
    return value, seconds


def _whole(obj: Mapping, key: str, where: str, least: int, default: int | None = None) -> int | None:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise AnalysisError(where, key, f"{_brief(value)} is not a whole number; write e.g. "
                            f"\"{key}\": {max(least, 1) if key == 'count' else least}")
    if not least <= value <= MAX_COUNT:
        raise AnalysisError(where, key, f"{value} must be between {least} and {MAX_COUNT}"
                            + (" (leave count out for a single measurement)" if key == "count" and value < 1 else ""))
    return value


def _provider(provider: Any, where: str) -> tuple[str, str | None, dict[str, str], str | None]:
    example = '{"afterfix": {"metric": "afterfix.workload.latency_p95_ms", "labels": {...}}}'
    if provider is None:
        raise AnalysisError(where, "provider", f"is missing; say what to measure, e.g. {example}")
    if not isinstance(provider, Mapping) or len(provider) != 1:
        raise AnalysisError(where, "provider", f"must hold exactly one provider, afterfix or prometheus, e.g. {example}")
    (kind, body), = provider.items()
    if kind not in PROVIDER_KEYS:
        if kind in _PROVIDERS_NOT_HERE:
            problem = (f"{kind!r} is an Argo provider afterfix does not measure with; use afterfix (the store's "
                       "history or Prometheus, through afterfix.metrics) or prometheus")
        else:
            problem = f"{_brief(kind)} is not a provider; use afterfix or prometheus, e.g. {example}"
        raise AnalysisError(where, "provider", problem)
    prefix = f"provider.{kind}"
    if not isinstance(body, Mapping):
        raise AnalysisError(where, prefix, f"{_brief(body)} is not an object; e.g. {example}")
    _known(body, PROVIDER_KEYS[kind], where, prefix, {
        "address": "the Prometheus address is afterfix's setting (afterfix.metrics), never a trace's; leave it out"})
    if kind == "prometheus":
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            raise AnalysisError(where, f"{prefix}.query", "is missing or empty; give the PromQL, e.g. "
                                "\"afterfix_workload_latency_p95_ms{namespace=\\\"{{namespace}}\\\"}\"")
        if len(query) > MAX_QUERY or _CONTROL.search(query):
            raise AnalysisError(where, f"{prefix}.query", f"must be at most {MAX_QUERY} characters of text, without "
                                "control characters")
        _check_templates(query, where, f"{prefix}.query")
        return kind, None, {}, query
    metric = body.get("metric")
    if not isinstance(metric, str) or not _METRIC.fullmatch(metric):
        raise AnalysisError(where, f"{prefix}.metric", f"{_brief(metric)} is not a metric name; give the store's "
                            "name, e.g. \"afterfix.workload.latency_p95_ms\" (docs/metrics.md lists them)")
    labels = body.get("labels") or {}
    if not isinstance(labels, Mapping):
        raise AnalysisError(where, f"{prefix}.labels", f"{_brief(labels)} is not an object; e.g. "
                            "{\"k8s.namespace.name\": \"{{namespace}}\", \"k8s.deployment.name\": \"{{name}}\"}")
    out = {}
    for key, value in labels.items():
        field_ = f"{prefix}.labels.{key}"
        if not isinstance(key, str) or not _LABEL_KEY.fullmatch(key):
            raise AnalysisError(where, f"{prefix}.labels", f"{_brief(key)} is not an attribute name (letters, "
                                "digits, '_', '.', ':', '/', '-', e.g. \"k8s.namespace.name\")")
        if not isinstance(value, str) or len(value) > 256 or _CONTROL.search(value) or "\n" in value:
            raise AnalysisError(where, field_, f"{_brief(value)} must be text of at most 256 characters on one "
                                "line, e.g. \"{{namespace}}\"")
        _check_templates(value, where, field_)
        out[key] = value
    return kind, metric, out, None


def _check_templates(text: str, where: str, field_: str):
    for m in _TEMPLATE.finditer(text):
        if m.group(2) not in TEMPLATES:
            raise AnalysisError(where, field_, f"{show(m.group())} is not a template afterfix fills; use "
                                "{{namespace}}, {{name}} or {{kind}} (the action's target; {{args.namespace}} also works)")
    if "{{" in _TEMPLATE.sub("", text):
        raise AnalysisError(where, field_, "has a '{{' that opens no template; write {{namespace}}, {{name}} or {{kind}}")


def _brief(value: Any, limit: int = 80) -> str:
    """repr(value), cut at `limit` characters: a value as an error message quotes it."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"


def _shown(result: Any) -> str:
    """The measurement as a detail starts: "result 412", "result [1, 2]", "no data"."""
    if result is None:
        return "no data"
    if isinstance(result, float):
        return f"result {result:g}"
    if not result:
        return "result [] (no data)"
    head = ", ".join(f"{x:g}" for x in result[:5])
    return f"result [{head}]" if len(result) <= 5 else f"result [{head}, ...] ({len(result)} values)"
