"""Analysis specs: Argo Rollouts' metric fields checked, bound to a target, and judged as Argo judges them."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import pytest

from afterfix.undo.analysis import (PHASES, RUN_PHASES, AnalysisError, AnalysisSpec, assess_run, measure_phase,
                                    parse_analysis, run_phase)

WHERE = "trace act-12 afterfix.action.analysis"
LATENCY = {"name": "latency-p95", "interval": "60s", "initialDelay": "2m", "count": 5,
           "successCondition": "result < 300", "failureCondition": "result >= 300",
           "failureLimit": 1, "inconclusiveLimit": 1, "consecutiveErrorLimit": 4,
           "provider": {"afterfix": {"metric": "afterfix.workload.latency_p95_ms",
                                     "labels": {"k8s.namespace.name": "{{namespace}}", "k8s.deployment.name": "{{name}}"}}}}
PROMETHEUS = {"name": "error-rate", "interval": 30, "count": 3, "successCondition": "result[0] < 0.05",
              "failureLimit": 0, "inconclusiveLimit": 0, "consecutiveErrorLimit": 4,
              "provider": {"prometheus": {"query": 'afterfix_workload_error_rate{namespace="{{args.namespace}}",'
                                                   'deployment="{{ name }}"}'}}}
PAYMENTS = {"kind": "Deployment", "namespace": "shop", "name": "payments"}


def spec(**changes) -> dict:
    """LATENCY with fields changed (None removes one)."""
    obj = copy.deepcopy(LATENCY)
    for key, value in changes.items():
        if value is None:
            obj.pop(key, None)
        else:
            obj[key] = value
    return obj


def test_the_documented_spec_parses_into_its_attributes():
    s = parse_analysis(LATENCY, where=WHERE)
    assert (s.name, s.provider, s.metric) == ("latency-p95", "afterfix", "afterfix.workload.latency_p95_ms")
    assert s.labels == {"k8s.namespace.name": "{{namespace}}", "k8s.deployment.name": "{{name}}"}
    assert (s.interval_s, s.initial_delay_s, s.count, s.measurements) == (60.0, 120.0, 5, 5)
    assert (s.failure_limit, s.inconclusive_limit, s.consecutive_error_limit) == (1, 1, 4)
    assert (s.success_condition, s.failure_condition, s.query) == ("result < 300", "result >= 300", None)
    assert s.templates == {"namespace", "name"}
    p = parse_analysis(PROMETHEUS)
    assert (p.provider, p.metric, p.labels, p.interval_s, p.count) == ("prometheus", None, {}, 30.0, 3)
    assert p.templates == {"namespace", "name"}


@pytest.mark.parametrize("obj", [LATENCY, PROMETHEUS, {"name": "once", "failureCondition": "result > 1",
                                                        "provider": {"afterfix": {"metric": "afterfix.workload.rps"}}}])
def test_to_dict_round_trips(obj):
    s = parse_analysis(obj)
    assert parse_analysis(s.to_dict()) == s
    assert parse_analysis(json.dumps(s.to_dict())) == s
    assert json.loads(json.dumps(s.to_dict())) == s.to_dict()


def test_to_dict_is_the_documented_object():
    assert parse_analysis(LATENCY).to_dict() == LATENCY
    assert list(parse_analysis(LATENCY).to_dict()) == list(LATENCY)


def test_defaults_are_argos():
    s = parse_analysis({"name": "once", "successCondition": "result < 1",
                        "provider": {"afterfix": {"metric": "afterfix.workload.rps"}}})
    assert (s.failure_limit, s.inconclusive_limit, s.consecutive_error_limit) == (0, 0, 4)
    assert (s.count, s.measurements, s.interval_s, s.initial_delay_s, s.interval) == (None, 1, 0.0, 0.0, None)
    assert s.labels == {} and s.templates == frozenset()


@pytest.mark.parametrize("text, seconds", [
    ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1h30m", 5400.0), ("1.5m", 90.0), ("500ms", 0.5), ("90", None),
    (45, 45.0), (2.5, 2.5), ("1m30s", 90.0), ("250us", 0.00025),
])
def test_durations_are_go_durations_or_seconds(text, seconds):
    obj = spec(interval=text)
    if seconds is None:
        with pytest.raises(AnalysisError, match="interval: '90' is not a duration"):
            parse_analysis(obj)
    else:
        s = parse_analysis(obj)
        assert math.isclose(s.interval_s, seconds) and s.interval == text


def test_json_text_is_accepted_and_broken_json_named():
    assert parse_analysis(json.dumps(LATENCY)) == parse_analysis(LATENCY)
    with pytest.raises(AnalysisError, match=re.escape(f"{WHERE}: is not JSON")):
        parse_analysis('{"name": ', where=WHERE)


# (changes to LATENCY, the field the error names, what it says)
REFUSED = [
    (dict(failurelimit=1), "failurelimit", "did you mean failureLimit?"),
    (dict(successcondition="result < 1"), "successcondition", "did you mean successCondition?"),
    (dict(intervall="1m"), "intervall", "did you mean interval?"),
    (dict(owner="me"), "owner", "known keys: name, interval, initialDelay, count, successCondition, failureCondition, "
                                "failureLimit, inconclusiveLimit, consecutiveErrorLimit, provider"),
    (dict(consecutiveSuccessLimit=2), "consecutiveSuccessLimit", "not supported"),
    (dict(metrics=[]), "metrics", "give one metric"),
    (dict(name=None), "name", "is missing"),
    (dict(name="latency p95"), "name", "must be 1-63 letters"),
    (dict(name="x" * 64), "name", "must be 1-63 letters"),
    (dict(name="<script>"), "name", "must be 1-63 letters"),
    (dict(name=5), "name", "must be 1-63 letters"),
    (dict(successCondition=None, failureCondition=None), "successCondition", "give at least one"),
    (dict(successCondition="result <"), "successCondition", "ends before its test is complete"),
    (dict(failureCondition="__import__('os')"), "failureCondition", "name '__import__' is not allowed"),
    (dict(failureCondition=300), "failureCondition", "is not text"),
    (dict(successCondition="result"), "successCondition", "gives a value, not true/false"),
    (dict(interval="1 minute"), "interval", "is not a duration"),
    (dict(interval="-5s"), "interval", "is not a duration"),
    (dict(interval="0s"), "interval", "must be more than 0 s"),
    (dict(interval=0), "interval", "must be more than 0 s"),
    (dict(interval=True), "interval", "is not a duration"),
    (dict(interval="2d"), "interval", "is not a duration"),
    (dict(interval="25h"), "interval", "is over a day"),
    (dict(interval=math.inf), "interval", "is not a duration"),
    (dict(initialDelay=-1), "initialDelay", "must be at least 0 s"),
    (dict(initialDelay="soon"), "initialDelay", "is not a duration"),
    (dict(count=None), "count", "Argo measures forever"),
    (dict(count=0), "count", "leave count out for a single measurement"),
    (dict(count="5"), "count", "is not a whole number"),
    (dict(count=5.0), "count", "is not a whole number"),
    (dict(count=True), "count", "is not a whole number"),
    (dict(count=10_000), "count", "between 1 and 1000"),
    (dict(interval=None, initialDelay=None), "interval", "interval must be specified when count > 1"),
    (dict(failureLimit=-1), "failureLimit", "between 0 and 1000"),
    (dict(failureLimit=6), "failureLimit", "count must be >= failureLimit"),
    (dict(inconclusiveLimit=6), "inconclusiveLimit", "count must be >= inconclusiveLimit"),
    (dict(consecutiveErrorLimit=-1), "consecutiveErrorLimit", "between 0 and 1000"),
    (dict(consecutiveErrorLimit="4"), "consecutiveErrorLimit", "is not a whole number"),
    (dict(provider=None), "provider", "is missing"),
    (dict(provider={}), "provider", "exactly one provider"),
    (dict(provider={"afterfix": {"metric": "a"}, "prometheus": {"query": "a"}}), "provider", "exactly one provider"),
    (dict(provider={"datadog": {"query": "x"}}), "provider", "an Argo provider afterfix does not measure with"),
    (dict(provider={"shell": {"cmd": "rm"}}), "provider", "is not a provider; use afterfix or prometheus"),
    (dict(provider={"afterfix": "latency"}), "provider.afterfix", "is not an object"),
    (dict(provider={"afterfix": {}}), "provider.afterfix.metric", "is not a metric name"),
    (dict(provider={"afterfix": {"metric": "latency p95"}}), "provider.afterfix.metric", "is not a metric name"),
    (dict(provider={"afterfix": {"metric": "{{name}}"}}), "provider.afterfix.metric", "is not a metric name"),
    (dict(provider={"afterfix": {"metric": "a", "label": {}}}), "provider.afterfix.label", "did you mean labels?"),
    (dict(provider={"afterfix": {"metric": "a", "labels": ["x"]}}), "provider.afterfix.labels", "is not an object"),
    (dict(provider={"afterfix": {"metric": "a", "labels": {"a b": "x"}}}), "provider.afterfix.labels",
     "is not an attribute name"),
    (dict(provider={"afterfix": {"metric": "a", "labels": {"ns": 5}}}), "provider.afterfix.labels.ns",
     "must be text"),
    (dict(provider={"afterfix": {"metric": "a", "labels": {"ns": "a\nb"}}}), "provider.afterfix.labels.ns",
     "must be text"),
    (dict(provider={"afterfix": {"metric": "a", "labels": {"ns": "{{ns}}"}}}), "provider.afterfix.labels.ns",
     "'{{ns}}' is not a template afterfix fills"),
    (dict(provider={"afterfix": {"metric": "a", "labels": {"ns": "{{args.service-name}}"}}}),
     "provider.afterfix.labels.ns", "is not a template afterfix fills"),
    (dict(provider={"afterfix": {"metric": "a", "labels": {"ns": "{{namespace"}}}), "provider.afterfix.labels.ns",
     "opens no template"),
    (dict(provider={"prometheus": {"query": "up", "address": "http://attacker:9090"}}),
     "provider.prometheus.address", "afterfix's setting"),
    (dict(provider={"prometheus": {"query": "up", "timeout": 5}}), "provider.prometheus.timeout", "known keys: query"),
    (dict(provider={"prometheus": {}}), "provider.prometheus.query", "is missing or empty"),
    (dict(provider={"prometheus": {"query": " "}}), "provider.prometheus.query", "is missing or empty"),
    (dict(provider={"prometheus": {"query": "up\x00"}}), "provider.prometheus.query", "without control characters"),
    (dict(provider={"prometheus": {"query": "x" * 5000}}), "provider.prometheus.query", "at most 4000"),
    (dict(provider={"prometheus": {"query": 'up{job="{{job}}"}'}}), "provider.prometheus.query",
     "'{{job}}' is not a template"),
]


@pytest.mark.parametrize("changes, field, says", REFUSED)
def test_every_error_names_the_field_and_the_fix(changes, field, says):
    with pytest.raises(AnalysisError) as e:
        parse_analysis(spec(**changes), where=WHERE)
    assert e.value.where == WHERE and e.value.field == field
    assert str(e.value).startswith(f"{WHERE}: {field}: ")
    assert says in str(e.value)


@pytest.mark.parametrize("obj", [None, 5, ["name"], "[]"])
def test_a_spec_that_is_not_an_object_is_refused(obj):
    with pytest.raises(AnalysisError, match=re.escape(WHERE) + ": .*is not an object"):
        parse_analysis(obj, where=WHERE)


def test_argo_limits_at_count_are_allowed():
    s = parse_analysis(spec(failureLimit=5, inconclusiveLimit=5))
    assert (s.failure_limit, s.inconclusive_limit) == (5, 5)


# ---- bind ---------------------------------------------------------------------------------------


def test_bind_fills_every_spelling_of_the_templates():
    bound = parse_analysis(LATENCY).bind(PAYMENTS)
    assert bound.labels == {"k8s.namespace.name": "shop", "k8s.deployment.name": "payments"}
    assert bound.templates == frozenset()
    query = parse_analysis(PROMETHEUS).bind(PAYMENTS).query
    assert query == 'afterfix_workload_error_rate{namespace="shop",deployment="payments"}'
    kind = parse_analysis(spec(provider={"prometheus": {"query": 'x{kind="{{kind}}",k="{{args.kind}}"}'}}))
    assert kind.bind(PAYMENTS).query == 'x{kind="Deployment",k="Deployment"}'


def test_bind_leaves_the_unbound_spec_alone_and_round_trips():
    s = parse_analysis(LATENCY)
    bound = s.bind(PAYMENTS)
    assert s.labels["k8s.namespace.name"] == "{{namespace}}"
    assert parse_analysis(bound.to_dict()) == bound
    assert bound.bind({"kind": "x"}) == bound  # nothing left to fill, so nothing is asked of the target


def test_bind_checks_only_the_fields_its_templates_use():
    s = parse_analysis(spec(provider={"afterfix": {"metric": "a", "labels": {"ns": "{{namespace}}"}}}))
    assert s.bind({"namespace": "shop", "name": "system:controller:x", "kind": "ClusterRole"}).labels == {"ns": "shop"}


@pytest.mark.parametrize("target, field, says", [
    (dict(PAYMENTS, name='x"} or vector(1) #'), "target.name", "is not a Kubernetes name"),
    (dict(PAYMENTS, name="payments\"}"), "target.name", "is not a Kubernetes name"),
    (dict(PAYMENTS, name="Payments"), "target.name", "is not a Kubernetes name"),
    (dict(PAYMENTS, name="pay ments"), "target.name", "is not a Kubernetes name"),
    (dict(PAYMENTS, name="-payments"), "target.name", "is not a Kubernetes name"),
    (dict(PAYMENTS, name="a" * 254), "target.name", "is not a Kubernetes name"),
    (dict(PAYMENTS, name="payments\n"), "target.name", "is not a Kubernetes name"),
    (dict(PAYMENTS, name=5), "target.name", "is not a Kubernetes name"),
    (dict(PAYMENTS, namespace="shop.eu"), "target.namespace", "is not a Kubernetes namespace"),
    (dict(PAYMENTS, namespace="s" * 64), "target.namespace", "is not a Kubernetes namespace"),
    (dict(PAYMENTS, namespace=".*"), "target.namespace", "is not a Kubernetes namespace"),
    (dict(PAYMENTS, namespace=None), "target.namespace", "the target has no namespace"),
    ({"kind": "Deployment", "name": "payments"}, "target.namespace", "the target has no namespace"),
    (dict(PAYMENTS, namespace=""), "target.namespace", "the target has no namespace"),
])
def test_bind_refuses_values_that_are_not_kubernetes_names(target, field, says):
    for obj in (LATENCY, PROMETHEUS):
        with pytest.raises(AnalysisError) as e:
            parse_analysis(obj, where=WHERE).bind(target)
        assert e.value.field == field and says in str(e.value) and str(e.value).startswith(WHERE)


@pytest.mark.parametrize("kind", ["deployment", "Deploy-ment", 'D"', "Deployment}"])
def test_bind_refuses_a_kind_that_is_not_camel_case(kind):
    s = parse_analysis(spec(provider={"prometheus": {"query": 'x{kind="{{kind}}"}'}}))
    with pytest.raises(AnalysisError, match="target.kind: .* is not a Kubernetes kind"):
        s.bind(dict(PAYMENTS, kind=kind))


def test_bind_needs_a_mapping():
    with pytest.raises(AnalysisError, match="target: .* is not a mapping"):
        parse_analysis(LATENCY).bind(["shop", "payments"])


# ---- measure_phase: Argo's table --------------------------------------------------------------

BOTH = dict(successCondition="result < 300", failureCondition="result >= 500")
SUCCESS_ONLY = dict(successCondition="result < 300", failureCondition=None)
FAILURE_ONLY = dict(successCondition=None, failureCondition="result >= 500")
OVERLAP = dict(successCondition="result < 600", failureCondition="result >= 500")  # both can hold: failure wins


@pytest.mark.parametrize("conditions, value, phase", [
    (BOTH, 100, "Successful"),
    (BOTH, 600, "Failed"),
    (BOTH, 400, "Inconclusive"),
    (SUCCESS_ONLY, 100, "Successful"),
    (SUCCESS_ONLY, 400, "Failed"),
    (FAILURE_ONLY, 100, "Successful"),
    (FAILURE_ONLY, 600, "Failed"),
    (OVERLAP, 550, "Failed"),
    (OVERLAP, 100, "Successful"),
    (BOTH, [100.0], "Successful"),
    (BOTH, math.nan, "Inconclusive"),  # NaN compares false both ways
    (SUCCESS_ONLY, math.nan, "Failed"),
    (FAILURE_ONLY, math.nan, "Successful"),
    # no data: a condition that needs a value cannot be evaluated, which Argo counts as an Error
    (BOTH, None, "Error"),
    (BOTH, [], "Error"),
    (SUCCESS_ONLY, None, "Error"),
    (BOTH, [100.0, 200.0], "Error"),
    (BOTH, "100", "Error"),
    # ... unless the condition says what no data means
    (dict(successCondition="len(result) == 0 || result[0] < 300", failureCondition=None), [], "Successful"),
    (dict(successCondition="default(result, 0) < 300", failureCondition=None), None, "Successful"),
    (dict(successCondition="!isNil(result) && result < 300", failureCondition="isNil(result)"), None, "Failed"),
    (dict(successCondition="result < 300", failureCondition="isNil(result)"), None, "Error"),  # either erring is Error
])
def test_measure_phase_follows_argo(conditions, value, phase):
    got, detail = measure_phase(parse_analysis(spec(**conditions)), value)
    assert got == phase and got in PHASES
    assert detail


@pytest.mark.parametrize("value, conditions, detail", [
    (412, LATENCY, 'result 412: failureCondition "result >= 300" is true'),
    (212, LATENCY, 'result 212: successCondition "result < 300" is true'),
    (400, BOTH, 'result 400: neither successCondition "result < 300" nor failureCondition "result >= 500" is true'),
    (400, SUCCESS_ONLY, 'result 400: successCondition "result < 300" is false'),
    (100, FAILURE_ONLY, 'result 100: failureCondition "result >= 500" is false'),
    ([1, 2, 3, 4, 5, 6], SUCCESS_ONLY, "result [1, 2, 3, 4, 5, ...] (6 values): successCondition"),
    (None, SUCCESS_ONLY, 'no data: successCondition "result < 300" cannot be evaluated: result < 300: no data'),
    ([], SUCCESS_ONLY, "result [] (no data): successCondition"),
    ("x", SUCCESS_ONLY, "result 'x' is not a number"),
])
def test_measure_phase_says_why(value, conditions, detail):
    obj = LATENCY if conditions is LATENCY else spec(**conditions)
    assert detail in measure_phase(parse_analysis(obj), value)[1]


# ---- run_phase: Argo's assessment --------------------------------------------------------------

S, F, I, E = "Successful", "Failed", "Inconclusive", "Error"


@pytest.mark.parametrize("limits, phases, expected", [
    # (count, failureLimit, inconclusiveLimit, consecutiveErrorLimit)
    ((3, 0, 0, 4), [], "Running"),
    ((3, 0, 0, 4), [S, S], "Running"),
    ((3, 0, 0, 4), [S, S, S], "Successful"),
    ((3, 0, 0, 4), [S, F], "Failed"),  # failed (1) > failureLimit (0)
    ((3, 1, 0, 4), [S, F], "Running"),
    ((3, 1, 0, 4), [S, F, S], "Successful"),  # failures within the limit do not fail a finished run
    ((3, 1, 0, 4), [F, F], "Failed"),
    ((3, 0, 0, 4), [I], "Inconclusive"),
    ((3, 0, 1, 4), [I, S, S], "Successful"),
    ((3, 0, 1, 4), [I, I], "Inconclusive"),
    # errors do not count towards count, and anything else resets the consecutive ones
    ((2, 0, 0, 4), [E, E, E, E, S], "Running"),
    ((2, 0, 0, 4), [E, E, E, E, S, S], "Successful"),
    ((2, 0, 0, 4), [E, E, E, E, E], "Error"),  # consecutiveErrors (5) > consecutiveErrorLimit (4)
    ((5, 0, 0, 4), [E, E, E, E, S, E, E, E, E, S], "Running"),
    ((5, 0, 0, 0), [E], "Error"),
    ((5, 0, 0, 1), [E, S, E, S, E], "Running"),
    # the run ends at the first verdict; later measurements are not looked at
    ((3, 0, 0, 4), [F, S, S, S], "Failed"),
    ((1, 0, 0, 4), [S, F], "Successful"),
    # no count (and no interval): Argo's one measurement
    ((None, 0, 0, 4), [S], "Successful"),
    ((None, 0, 0, 4), [F], "Failed"),
    ((None, 0, 0, 4), [E], "Running"),
])
def test_run_phase_follows_argo(limits, phases, expected):
    count, failure_limit, inconclusive_limit, error_limit = limits
    obj = spec(count=count, failureLimit=failure_limit, inconclusiveLimit=inconclusive_limit,
               consecutiveErrorLimit=error_limit)
    if count is None:
        obj.pop("interval")
    s = parse_analysis(obj)
    assert run_phase(s, phases) == expected and expected in RUN_PHASES


@pytest.mark.parametrize("phases, why", [
    ([F, F], "failed (2) > failureLimit (1)"),
    ([I, I], "inconclusive (2) > inconclusiveLimit (1)"),
    ([E] * 5, "consecutiveErrors (5) > consecutiveErrorLimit (4)"),
    ([S, F, S, I, S], "count (5) reached: 1 failed (failureLimit 1), 1 inconclusive (inconclusiveLimit 1), 0 errors"),
    ([S, E], "1 of 5 measurements taken (1 errors)"),
])
def test_assess_run_says_why(phases, why):
    assert assess_run(parse_analysis(LATENCY), phases)[1] == why


@pytest.mark.parametrize("phases, field", [(["Running"], "phases[0]"), ([S, "failed"], "phases[1]"), ("Successful", "phases"),
                                           (None, "phases")])
def test_run_phase_refuses_what_is_not_a_measurement_phase(phases, field):
    with pytest.raises(AnalysisError) as e:
        run_phase(parse_analysis(LATENCY, where=WHERE), phases)
    assert e.value.field == field and str(e.value).startswith(f"{WHERE}: {field}")


def test_a_spec_is_frozen():
    s = parse_analysis(LATENCY)
    with pytest.raises(AttributeError):
        s.count = 3  # type: ignore[misc]
    assert isinstance(s, AnalysisSpec) and parse_analysis(s) is s


# ---- docs/analysis.md ---------------------------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "analysis.md"


def test_the_worked_example_in_the_docs_gives_what_it_says():
    """docs/analysis.md's worked example: its spec parses, and each row of its table is what
    measure_phase and run_phase give."""
    text = DOC.read_text()
    example = text.split("## Worked example", 1)[1]
    obj = json.loads(re.search(r"```json\n(.*?)```", example, re.S).group(1))
    s = parse_analysis(obj).bind(PAYMENTS)
    rows = re.findall(r"^\| (\d+) \| `([^`]*)` \| (\w+) \| (\w+) \|$", example, re.M)
    assert len(rows) >= 4
    phases = []
    for _, value, phase, run in rows:
        phases.append(measure_phase(s, json.loads(value))[0])
        assert (phases[-1], run_phase(s, phases)) == (phase, run)
