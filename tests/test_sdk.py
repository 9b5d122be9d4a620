"""afterfix.sdk through the real OpenTelemetry SDK: exact attributes and events per Recorder
method, option verdict rules, JSON determinism, the OTLP/JSON file exporter, and the same spans
read back through the decoder and the store's views."""

from __future__ import annotations

import re

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from afterfix import convention as c
from afterfix import sdk
from afterfix.sdk import Option, Target

T0 = 1795747620.0  # 2026-11-27T02:47:00Z


class Clock:
    def __init__(self, start: float = T0):
        self.t = start

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


@pytest.fixture
def memory():
    exporter = InMemorySpanExporter()
    provider = TracerProvider(id_generator=sdk.SeededIdGenerator(7))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def recorder(provider) -> sdk.Recorder:
    return sdk.Recorder(provider, agent_name="agent-x", clock=Clock(), seed=1)


RUN = {c.GENAI_AGENT_NAME: "agent-x", c.RUN_ID: "run-1", c.INCIDENT_ID: "INC-1"}
HPA = Target("uid-hpa", "HorizontalPodAutoscaler", "autoscaling/v2", "shop", "checkout")


def _detection(rec):
    rec.detection("latency_p95", 2.4, 0.8, "p95 latency 2.4 s over 0.8 s")


def _tool(rec):
    with rec.tool_call("get_hpa", {"namespace": "shop", "name": "checkout"}, call_id="call-1") as call:
        call.result({"spec": {"maxReplicas": 4}, "status": {"currentReplicas": 4}})


def _tool_text_result(rec):
    with rec.tool_call("get_logs", {"tail": 10}, call_id="call-2", tool_type="extension") as call:
        call.result("no errors")


def _tool_error(rec):
    with rec.tool_call("get_metrics", {}, call_id="call-3") as call:
        call.error("prometheus unreachable")


def _llm(rec):
    with rec.llm_call("gpt-x", provider="openai") as llm:
        llm.tokens(1200, 180)
        llm.response_model("gpt-x-2026")


def _verification(rec):
    rec.verification("act-9", "success", "latency_p95", 2.4, 0.41)


def _approval(rec):
    rec.approval("act-9", "denied", approver="alice", reason="change freeze")


def _approval_requested(rec):
    rec.approval("act-9")


def _incident(rec):
    with rec.incident("INC-1", "checkout latency", severity="critical", service="shop/checkout") as inc:
        inc.set_status("mitigated")


def _action(rec):
    with rec.action("patch", HPA, decision_id="dec-1", trust_level=3, patch={"spec": {"maxReplicas": 10}},
                    action_id="act-1") as act:
        act.before({"spec": {"maxReplicas": 4}}, "41")
        act.dry_run_ok()
        act.after({"spec": {"maxReplicas": 10}}, "42")


LATENCY = {"name": "latency-p95", "interval": "60s", "initialDelay": "2m", "count": 5,
           "successCondition": "result < 300", "failureCondition": "result >= 500", "failureLimit": 1,
           "provider": {"afterfix": {"metric": "afterfix.workload.latency_p95_ms",
                                     "labels": {"k8s.namespace.name": "{{namespace}}", "k8s.deployment.name": "checkout"}}}}
ERRORS = {"name": "error-rate", "count": 1, "failureCondition": "result[0] > 0.05",
          "provider": {"prometheus": {"query": 'afterfix_workload_error_rate{namespace="{{namespace}}"}'}}}
LATENCY_JSON = ('{"count":5,"failureCondition":"result >= 500","failureLimit":1,"initialDelay":"2m","interval":"60s",'
                '"name":"latency-p95","provider":{"afterfix":{"labels":{"k8s.deployment.name":"checkout",'
                '"k8s.namespace.name":"{{namespace}}"},"metric":"afterfix.workload.latency_p95_ms"}},'
                '"successCondition":"result < 300"}')


def _action_with_analysis(rec):
    with rec.action("patch", HPA, action_id="act-4", analysis=LATENCY) as act:
        act.status("recommended")


def _action_analysis_later(rec):
    with rec.action("patch", HPA, action_id="act-5") as act:
        act.analysis([LATENCY, ERRORS])
        act.status("recommended")


def _action_readonly(rec):
    with rec.action("get", Target(None, "Namespace", "v1", None, "shop"), mutating=False, trust_level=1,
                    field_manager=None, action_id="act-2") as act:
        act.status("recommended")


def _action_awaiting(rec):
    with rec.action("scale", HPA, trust_level=2, action_id="act-3") as act:
        act.status("awaiting_approval")


CASES = [
    ("detection", _detection, "detect latency_p95", SpanKind.INTERNAL, {
        c.SPAN_KIND: "detection", c.DETECTION_SIGNAL: "latency_p95", c.DETECTION_VALUE: 2.4,
        c.DETECTION_THRESHOLD: 0.8, c.DETECTION_SUMMARY: "p95 latency 2.4 s over 0.8 s"}),
    ("tool", _tool, "execute_tool get_hpa", SpanKind.INTERNAL, {
        c.GENAI_OPERATION: "execute_tool", c.GENAI_TOOL_NAME: "get_hpa", c.GENAI_TOOL_CALL_ID: "call-1",
        c.GENAI_TOOL_TYPE: "function", c.GENAI_TOOL_ARGUMENTS: '{"name":"checkout","namespace":"shop"}',
        c.GENAI_TOOL_RESULT: '{"spec":{"maxReplicas":4},"status":{"currentReplicas":4}}'}),
    ("tool text result", _tool_text_result, "execute_tool get_logs", SpanKind.INTERNAL, {
        c.GENAI_OPERATION: "execute_tool", c.GENAI_TOOL_NAME: "get_logs", c.GENAI_TOOL_CALL_ID: "call-2",
        c.GENAI_TOOL_TYPE: "extension", c.GENAI_TOOL_ARGUMENTS: '{"tail":10}', c.GENAI_TOOL_RESULT: "no errors"}),
    ("tool error", _tool_error, "execute_tool get_metrics", SpanKind.INTERNAL, {
        c.GENAI_OPERATION: "execute_tool", c.GENAI_TOOL_NAME: "get_metrics", c.GENAI_TOOL_CALL_ID: "call-3",
        c.GENAI_TOOL_TYPE: "function", c.GENAI_TOOL_ARGUMENTS: "{}", c.ERROR_TYPE: "_OTHER"}),
    ("llm", _llm, "chat gpt-x", SpanKind.CLIENT, {
        c.GENAI_OPERATION: "chat", c.GENAI_REQUEST_MODEL: "gpt-x", c.GENAI_PROVIDER: "openai",
        c.GENAI_INPUT_TOKENS: 1200, c.GENAI_OUTPUT_TOKENS: 180, c.GENAI_RESPONSE_MODEL: "gpt-x-2026"}),
    ("verification", _verification, "verify latency_p95", SpanKind.INTERNAL, {
        c.SPAN_KIND: "verification", c.VERIFY_ACTION_ID: "act-9", c.VERIFY_OUTCOME: "success",
        c.VERIFY_SIGNAL: "latency_p95", c.VERIFY_BEFORE: 2.4, c.VERIFY_AFTER: 0.41}),
    ("approval denied", _approval, "approval denied", SpanKind.INTERNAL, {
        c.SPAN_KIND: "approval", c.APPROVAL_ACTION_ID: "act-9", c.APPROVAL_STATUS: "denied",
        c.APPROVAL_APPROVER: "alice", c.APPROVAL_REASON: "change freeze"}),
    ("approval requested", _approval_requested, "approval requested", SpanKind.INTERNAL, {
        c.SPAN_KIND: "approval", c.APPROVAL_ACTION_ID: "act-9", c.APPROVAL_STATUS: "requested"}),
    ("incident", _incident, "incident checkout latency", SpanKind.INTERNAL, {
        c.SPAN_KIND: "incident", c.INCIDENT_TITLE: "checkout latency", c.INCIDENT_SEVERITY: "critical",
        c.INCIDENT_SERVICE: "shop/checkout", c.INCIDENT_STATUS: "mitigated"}),
    ("action", _action, "patch HorizontalPodAutoscaler shop/checkout", SpanKind.INTERNAL, {
        c.SPAN_KIND: "action", c.ACTION_ID: "act-1", c.ACTION_DECISION_ID: "dec-1", c.ACTION_VERB: "patch",
        c.ACTION_MUTATING: True, c.TRUST_LEVEL: 3, c.ACTION_PATCH: '{"spec":{"maxReplicas":10}}',
        c.ACTION_FIELD_MANAGER: "afterfix-agent", c.TARGET_UID: "uid-hpa", c.TARGET_KIND: "HorizontalPodAutoscaler",
        c.TARGET_API_VERSION: "autoscaling/v2", c.TARGET_NAMESPACE: "shop", c.TARGET_NAME: "checkout",
        c.ACTION_BEFORE: '{"spec":{"maxReplicas":4}}', c.ACTION_RV_BEFORE: "41", c.ACTION_DRY_RUN: True,
        c.ACTION_AFTER: '{"spec":{"maxReplicas":10}}', c.ACTION_RV_AFTER: "42", c.ACTION_STATUS: "applied"}),
    ("action with analysis", _action_with_analysis, "patch HorizontalPodAutoscaler shop/checkout", SpanKind.INTERNAL, {
        c.SPAN_KIND: "action", c.ACTION_ID: "act-4", c.ACTION_VERB: "patch", c.ACTION_MUTATING: True,
        c.TRUST_LEVEL: 3, c.ACTION_FIELD_MANAGER: "afterfix-agent", c.TARGET_UID: "uid-hpa",
        c.TARGET_KIND: "HorizontalPodAutoscaler", c.TARGET_API_VERSION: "autoscaling/v2",
        c.TARGET_NAMESPACE: "shop", c.TARGET_NAME: "checkout", c.ACTION_STATUS: "recommended",
        c.ACTION_ANALYSIS: LATENCY_JSON}),
    ("action analysis list", _action_analysis_later, "patch HorizontalPodAutoscaler shop/checkout", SpanKind.INTERNAL, {
        c.SPAN_KIND: "action", c.ACTION_ID: "act-5", c.ACTION_VERB: "patch", c.ACTION_MUTATING: True,
        c.TRUST_LEVEL: 3, c.ACTION_FIELD_MANAGER: "afterfix-agent", c.TARGET_UID: "uid-hpa",
        c.TARGET_KIND: "HorizontalPodAutoscaler", c.TARGET_API_VERSION: "autoscaling/v2",
        c.TARGET_NAMESPACE: "shop", c.TARGET_NAME: "checkout", c.ACTION_STATUS: "recommended",
        c.ACTION_ANALYSIS: "[" + LATENCY_JSON + ',{"count":1,"failureCondition":"result[0] > 0.05",'
                           '"name":"error-rate","provider":{"prometheus":{"query":'
                           '"afterfix_workload_error_rate{namespace=\\"{{namespace}}\\"}"}}}]'}),
    ("read-only action", _action_readonly, "get Namespace shop", SpanKind.INTERNAL, {
        c.SPAN_KIND: "action", c.ACTION_ID: "act-2", c.ACTION_VERB: "get", c.ACTION_MUTATING: False,
        c.TRUST_LEVEL: 1, c.TARGET_KIND: "Namespace", c.TARGET_API_VERSION: "v1", c.TARGET_NAME: "shop",
        c.ACTION_STATUS: "recommended"}),
    ("action awaiting approval", _action_awaiting, "scale HorizontalPodAutoscaler shop/checkout", SpanKind.INTERNAL, {
        c.SPAN_KIND: "action", c.ACTION_ID: "act-3", c.ACTION_VERB: "scale", c.ACTION_MUTATING: True,
        c.TRUST_LEVEL: 2, c.ACTION_FIELD_MANAGER: "afterfix-agent", c.TARGET_UID: "uid-hpa",
        c.TARGET_KIND: "HorizontalPodAutoscaler", c.TARGET_API_VERSION: "autoscaling/v2",
        c.TARGET_NAMESPACE: "shop", c.TARGET_NAME: "checkout", c.ACTION_STATUS: "awaiting_approval"}),
]


@pytest.mark.parametrize("label,step,name,kind,expected", CASES, ids=[case[0] for case in CASES])
def test_each_step_emits_exactly_its_attributes(memory, label, step, name, kind, expected):
    provider, exporter = memory
    rec = recorder(provider)
    with rec.run(run_id="run-1", incident_id="INC-1"):
        step(rec)
    inner, run = exporter.get_finished_spans()
    assert inner.name == name
    assert inner.kind == kind
    assert dict(inner.attributes) == {**RUN, **expected}
    assert inner.parent.span_id == run.context.span_id
    assert inner.context.trace_id == run.context.trace_id
    assert inner.start_time <= inner.end_time
    failed = c.ERROR_TYPE in expected
    assert inner.status.status_code == (StatusCode.ERROR if failed else StatusCode.UNSET)


def test_run_span_and_incident_id_learned_inside_the_run(memory):
    provider, exporter = memory
    rec = sdk.Recorder(provider, agent_name="agent-x", agent_id="agent-7", scenario="hpa-night", clock=Clock(), seed=1)
    with rec.run(run_id="run-9") as run:
        rec.detection("latency_p95", 2.0, 1.0, "slow")  # before the incident is known
        with rec.incident("INC-5", "slow checkout"):
            rec.detection("errors", 0.0, 0.05, "flat")
        assert (run.run_id, run.incident_id) == ("run-9", "INC-5")
    before, detection, incident, run_span = exporter.get_finished_spans()
    common = {c.GENAI_AGENT_NAME: "agent-x", c.GENAI_AGENT_ID: "agent-7", c.SCENARIO: "hpa-night", c.RUN_ID: "run-9"}
    assert dict(run_span.attributes) == {
        **common, c.GENAI_OPERATION: "invoke_agent", c.GENAI_CONVERSATION_ID: "run-9", c.INCIDENT_ID: "INC-5"}
    assert run_span.name == "invoke_agent agent-x"
    assert c.INCIDENT_ID not in before.attributes
    assert detection.attributes[c.INCIDENT_ID] == "INC-5"
    assert detection.parent.span_id == incident.context.span_id
    assert incident.parent.span_id == run_span.context.span_id


def test_spans_inside_an_incident_block_carry_that_incident(memory):
    provider, exporter = memory
    rec = recorder(provider)
    with rec.incident("INC-solo", "outside any run"):
        rec.detection("errors", 1.0, 0.5, "errors up")
    with rec.run(run_id="run-1", incident_id="INC-1"):
        with rec.incident("INC-2", "a second incident found during the run"):
            rec.detection("errors", 1.0, 0.5, "errors up")
        rec.detection("latency", 1.0, 0.5, "back in the run's incident")
    spans = exporter.get_finished_spans()
    got = [(s.name, s.attributes.get(c.INCIDENT_ID), s.attributes.get(c.RUN_ID)) for s in spans]
    assert got == [
        ("detect errors", "INC-solo", None),
        ("incident outside any run", "INC-solo", None),
        ("detect errors", "INC-2", "run-1"),
        ("incident a second incident found during the run", "INC-2", "run-1"),
        ("detect latency", "INC-1", "run-1"),
        ("invoke_agent agent-x", "INC-1", "run-1"),
    ]


def test_generated_ids_are_reproducible_with_a_seed(memory):
    provider, exporter = memory
    ids = []
    for _ in range(2):
        rec = sdk.Recorder(provider, clock=Clock(), seed=42)
        with rec.run() as run:
            did = rec.decision("q", [Option("a", "A")], "a", "r")
            with rec.action("patch", HPA) as act:
                pass
            with rec.tool_call("t", {}) as call:
                pass
        ids.append((run.run_id, did, act.action_id, call.call_id))
    assert ids[0] == ids[1]
    assert re.fullmatch(r"run-[0-9a-f]{12}", ids[0][0]) and ids[0][1].startswith("dec-")
    assert len(set(ids[0])) == 4


def test_without_a_seed_ids_differ(memory):
    provider, _ = memory
    rec = sdk.Recorder(provider)
    with rec.run() as a:
        pass
    with rec.run() as b:
        pass
    assert a.run_id != b.run_id


# -- decisions and options -------------------------------------------------------------------

OPTIONS = [
    Option("raise-max", "Raise HPA maxReplicas 4 -> 10", action={"patch": {"spec": {"maxReplicas": 10}}, "kind": "HPA"},
           evidence=["replicas pinned at max", "cpu 95%"], score=0.9),
    Option("restart", "Restart pods", evidence=["memory flat"], score=0.2, reason="no memory growth"),
    Option("wait", "Wait and watch", verdict="considered"),
]


def test_decision_span_and_option_events(memory):
    provider, exporter = memory
    rec = recorder(provider)
    with rec.run(run_id="run-1", incident_id="INC-1"):
        did = rec.decision("checkout p95 over SLO: what to do?", OPTIONS, "raise-max", "load exceeds capacity",
                           policy="hpa_capacity_v1", inputs={"p95": 2.4, "cpu": 0.95}, decision_id="dec-1")
    assert did == "dec-1"
    span = exporter.get_finished_spans()[0]
    assert span.name == "decide: checkout p95 over SLO: what to do?"
    assert dict(span.attributes) == {
        **RUN, c.SPAN_KIND: "decision", c.DECISION_ID: "dec-1", c.DECISION_QUESTION: "checkout p95 over SLO: what to do?",
        c.DECISION_SELECTED: "raise-max", c.DECISION_REASON: "load exceeds capacity", c.DECISION_POLICY: "hpa_capacity_v1",
        c.DECISION_INPUTS: '{"cpu":0.95,"p95":2.4}'}
    assert [e.name for e in span.events] == [c.OPTION_EVENT] * 3
    assert [dict(e.attributes) for e in span.events] == [
        {c.OPTION_ID: "raise-max", c.OPTION_DESCRIPTION: "Raise HPA maxReplicas 4 -> 10",
         c.OPTION_ACTION: '{"kind":"HPA","patch":{"spec":{"maxReplicas":10}}}',
         c.OPTION_EVIDENCE: '["replicas pinned at max","cpu 95%"]', c.OPTION_SCORE: 0.9,
         c.OPTION_VERDICT: "selected", c.OPTION_REASON: "load exceeds capacity"},
        {c.OPTION_ID: "restart", c.OPTION_DESCRIPTION: "Restart pods", c.OPTION_EVIDENCE: '["memory flat"]',
         c.OPTION_SCORE: 0.2, c.OPTION_VERDICT: "rejected", c.OPTION_REASON: "no memory growth"},
        {c.OPTION_ID: "wait", c.OPTION_DESCRIPTION: "Wait and watch", c.OPTION_EVIDENCE: "[]",
         c.OPTION_VERDICT: "considered"},
    ]
    assert all(e.timestamp >= span.start_time for e in span.events)



GET_HPA = {"type": "function", "name": "get_hpa",
           "parameters": {"type": "object", "properties": {"namespace": {"type": "string", "enum": ["shop"]}}}}


def test_tool_definitions_invalid_calls_and_decision_sources(memory):
    provider, exporter = memory
    rec = recorder(provider)
    with rec.run(run_id="run-1", incident_id="INC-1", tool_definitions=[GET_HPA]):
        with rec.llm_call("m", tool_definitions=[GET_HPA]):
            pass
        with rec.tool_call("get_hpa", {"namespace": "sohp"}, call_id="call-1") as call:
            call.invalid("namespace sohp does not exist")
        rec.decision("q", OPTIONS, "raise-max", "r", inputs={"hpa": None}, sources={"hpa": "call-1"}, decision_id="d1")
        rec.decision("q", OPTIONS, "raise-max", "r", sources=["call-1", "call-2"], decision_id="d2")
    llm, tool, d1, d2, run = exporter.get_finished_spans()
    defs = '[{"name":"get_hpa","parameters":{"properties":{"namespace":{"enum":["shop"],"type":"string"}},"type":"object"},"type":"function"}]'
    assert run.attributes[c.GENAI_TOOL_DEFINITIONS] == defs and llm.attributes[c.GENAI_TOOL_DEFINITIONS] == defs
    assert tool.attributes[c.TOOL_INVALID] == "namespace sohp does not exist"
    assert d1.attributes[c.DECISION_INPUTS] == '{"hpa":null,"sources":{"hpa":["call-1"]}}'
    assert d2.attributes[c.DECISION_INPUTS] == '{"sources":["call-1","call-2"]}'


@pytest.mark.parametrize("call,match", [
    (lambda rec: rec.decision("q", OPTIONS, "raise-max", "r", inputs={"sources": []}, sources=["c"]), "in one place"),
    (lambda rec: rec.decision("q", OPTIONS, "raise-max", "r", sources={"hpa": 3}), r"sources\['hpa'\] must be"),
    (lambda rec: rec.decision("q", OPTIONS, "raise-max", "r", sources=[""]), "must be a call id"),
    (lambda rec: rec.run(tool_definitions={"name": "x"}).__enter__(), "list of tool definitions"),
    (lambda rec: rec.tool_call("t").__enter__().invalid(""), "needs a reason"),
])
def test_bad_sources_definitions_and_reasons_are_refused(memory, call, match):
    provider, _ = memory
    with pytest.raises(ValueError, match=match):
        call(recorder(provider))


VERDICT_CASES = [
    # (options, selected, verdicts or the error text expected)
    ([Option("a", "A"), Option("b", "B", reason="worse")], "a", ["selected", "rejected"]),
    ([Option("a", "A", reason="r"), Option("b", "B", reason="worse")], None, ["rejected", "rejected"]),
    ([Option("a", "A"), Option("b", "B", verdict="considered")], "a", ["selected", "considered"]),
    ([Option("a", "A", verdict="selected"), Option("b", "B", verdict="rejected", reason="x")], "a", ["selected", "rejected"]),
    ([Option("a", "A"), Option("b", "B")], "a", "rejected without a reason"),
    ([Option("a", "A"), Option("b", "B", reason="")], "a", "rejected without a reason"),
    ([Option("a", "A"), Option("b", "B", reason="x")], "c", "not among the options"),
    ([Option("a", "A"), Option("a", "again")], "a", "repeated: a"),
    ([Option("a", "A"), Option("b", "B", verdict="selected")], "a", "only the selected option"),
    ([Option("a", "A", verdict="rejected", reason="x")], "a", "only the selected option"),
    ([Option("a", "A"), Option("b", "B", verdict="maybe", reason="x")], "a", "not one of selected, rejected, considered"),
    ([], None, "at least one option"),
]


@pytest.mark.parametrize("options,selected,expected", VERDICT_CASES)
def test_option_verdict_rules(memory, options, selected, expected):
    provider, exporter = memory
    rec = recorder(provider)
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=re.escape(expected)):
            rec.decision("q", options, selected, "because")
        assert exporter.get_finished_spans() == ()  # nothing half-recorded
        return
    rec.decision("q", options, selected, "because")
    span = exporter.get_finished_spans()[0]
    assert [e.attributes[c.OPTION_VERDICT] for e in span.events] == expected
    assert span.attributes[c.DECISION_SELECTED] == (selected or "")


def test_json_attributes_do_not_depend_on_key_order(memory):
    provider, exporter = memory
    a = {"spec": {"minReplicas": 2, "maxReplicas": 10}, "metadata": {"name": "checkout", "labels": {"z": "1", "a": "2"}}}
    b = {"metadata": {"labels": {"a": "2", "z": "1"}, "name": "checkout"}, "spec": {"maxReplicas": 10, "minReplicas": 2}}
    assert list(a) != list(b)
    rec = recorder(provider)
    for state in (a, b):
        with rec.action("patch", HPA, patch=state, action_id="act-1") as act:
            act.before(state, "1")
            act.after(state, "2")
        rec.decision("q", [Option("o", "O", action=state)], "o", "r", inputs=state, decision_id="d")
        with rec.tool_call("t", state, call_id="c") as call:
            call.result(state)
    spans = exporter.get_finished_spans()
    first, second = spans[:3], spans[3:]
    for x, y in zip(first, second):
        assert dict(x.attributes) == dict(y.attributes)
        assert [dict(e.attributes) for e in x.events] == [dict(e.attributes) for e in y.events]
    assert first[0].attributes[c.ACTION_BEFORE] == sdk.dumps(a) == sdk.dumps(b)
    assert orjson.loads(first[0].attributes[c.ACTION_BEFORE]) == a


# -- actions -------------------------------------------------------------------------------------


def test_exception_inside_an_action_marks_it_failed_and_propagates(memory):
    provider, exporter = memory
    rec = recorder(provider)

    class Conflict(Exception):
        pass

    with pytest.raises(Conflict):
        with rec.action("patch", HPA, action_id="act-1") as act:
            act.before({"spec": {"maxReplicas": 4}}, "41")
            raise Conflict("409: the object has been modified")
    span = exporter.get_finished_spans()[0]
    assert span.attributes[c.ACTION_STATUS] == "failed"
    assert span.attributes[c.ERROR_TYPE].endswith("Conflict")
    assert span.status.status_code == StatusCode.ERROR
    assert "409" in span.status.description
    assert [e.name for e in span.events] == ["exception"]


def test_exception_inside_a_tool_call_is_recorded_with_its_type(memory):
    provider, exporter = memory
    rec = recorder(provider)
    with pytest.raises(TimeoutError):
        with rec.tool_call("get_metrics", {"q": "up"}):
            raise TimeoutError("prometheus timed out")
    span = exporter.get_finished_spans()[0]
    assert span.attributes[c.ERROR_TYPE] == "TimeoutError"
    assert span.status.status_code == StatusCode.ERROR


def test_failed_status_without_exception_is_an_error_span(memory):
    provider, exporter = memory
    rec = recorder(provider)
    with rec.action("rollback", HPA, action_id="act-1") as act:
        act.status("failed")
    span = exporter.get_finished_spans()[0]
    assert span.attributes[c.ACTION_STATUS] == "failed"
    assert span.status.status_code == StatusCode.ERROR


def test_action_without_status_or_after_has_no_status(memory):
    provider, exporter = memory
    rec = recorder(provider)
    with rec.action("patch", HPA, action_id="act-1"):
        pass
    assert c.ACTION_STATUS not in exporter.get_finished_spans()[0].attributes


@pytest.mark.parametrize("level", [0, 5, -1, True, "3", 3.0, None])
def test_trust_level_must_be_1_to_4(memory, level):
    provider, exporter = memory
    rec = recorder(provider)
    with pytest.raises(ValueError, match="trust_level"):
        with rec.action("patch", HPA, trust_level=level):
            pass
    assert exporter.get_finished_spans() == ()


@pytest.mark.parametrize("call,match", [
    (lambda rec: rec.action("patch", HPA).__enter__().status("done"), "action status 'done'"),
    (lambda rec: rec.verification("a", "great", "s", 1, 0), "verification outcome"),
    (lambda rec: rec.approval("a", "maybe"), "approval status"),
    (lambda rec: rec.incident("I", "t", severity="urgent").__enter__(), "incident severity"),
    (lambda rec: rec.incident("I", "t", status="closed").__enter__(), "incident status"),
    (lambda rec: rec.action("", HPA).__enter__(), "verb"),
])
def test_values_outside_the_convention_are_refused(memory, call, match):
    provider, _ = memory
    with pytest.raises(ValueError, match=match):
        call(recorder(provider))


def _without(key, spec=LATENCY):
    return {k: v for k, v in spec.items() if k != key}


ANALYSIS_ERRORS = [
    # (analysis, the field the error names, the example it shows)
    (42, "analysis must be a metric spec", '"provider": {"afterfix"'),
    ("result < 300", "analysis must be a metric spec", '"successCondition": "result < 300"'),
    ([], "analysis must be a metric spec", '"name": "latency-p95"'),
    ([LATENCY, "x"], r"analysis\[1\] must be a metric spec", '"provider"'),
    (_without("name"), "analysis.name: is missing", '"name": "latency-p95"'),
    ({**LATENCY, "name": 7}, "analysis.name: must be a non-empty string, not 7", '"name": "latency-p95"'),
    (_without("provider"), "analysis.provider: is missing", '"provider": {"afterfix": {"metric"'),
    ({**LATENCY, "provider": "afterfix"}, "analysis.provider: must be an object, not 'afterfix'", '"provider": {'),
    ({**LATENCY, "provider": {}}, "analysis.provider: must hold exactly one of afterfix or prometheus, not nothing",
     '"provider": {"prometheus": {"query"'),
    ({**LATENCY, "provider": {"web": {"url": "http://x"}}}, "analysis.provider: must hold exactly one of afterfix "
     "or prometheus, not 'web'", '"provider": {"afterfix"'),
    ({**LATENCY, "provider": {"afterfix": {}, "prometheus": {}}}, "not 'afterfix', 'prometheus'", '"provider": {'),
    ({**LATENCY, "provider": {"prometheus": "up"}}, "analysis.provider.prometheus: must be an object, not 'up'",
     '"provider": {'),
    (_without("failureCondition", _without("successCondition")), "analysis: needs successCondition or failureCondition",
     '"successCondition": "result < 300"'),
    ({**LATENCY, "successCondition": 300}, "analysis.successCondition: must be a condition in a string, not 300",
     '"successCondition": "result < 300"'),
    ({**LATENCY, "failureCondition": ""}, "analysis.failureCondition: must be a condition in a string",
     '"failureCondition": "result >= 500"'),
    ([LATENCY, _without("provider", ERRORS)], r"analysis\[1\].provider: is missing", '"provider": {'),
    ({**LATENCY, "count": object()}, "analysis is not JSON", '"name": "latency-p95"'),
]


@pytest.mark.parametrize("spec,field,example", ANALYSIS_ERRORS, ids=[case[1][:48] for case in ANALYSIS_ERRORS])
def test_a_misshapen_analysis_is_refused_naming_the_field_with_an_example(memory, spec, field, example):
    provider, exporter = memory
    rec = recorder(provider)
    with pytest.raises(ValueError, match=field) as refused:
        rec.action("patch", HPA, analysis=spec).__enter__()
    assert example in str(refused.value)
    assert exporter.get_finished_spans() == ()  # refused before the span starts
    with rec.action("patch", HPA) as act:
        with pytest.raises(ValueError, match=field):
            act.analysis(spec)
    (span,) = exporter.get_finished_spans()
    assert c.ACTION_ANALYSIS not in span.attributes


def test_what_the_sdk_records_is_an_analysis_the_guard_accepts(memory):
    from afterfix.undo.analysis import parse_analysis

    provider, exporter = memory
    with recorder(provider).action("patch", HPA, analysis=(LATENCY, ERRORS)):
        pass
    (span,) = exporter.get_finished_spans()
    recorded = orjson.loads(span.attributes[c.ACTION_ANALYSIS])
    assert recorded == [LATENCY, ERRORS]
    bound = [parse_analysis(m, where="test").bind({"kind": HPA.kind, "namespace": HPA.namespace, "name": HPA.name})
             for m in recorded]
    assert [(m.name, m.metric, m.labels) for m in bound][0] == (
        "latency-p95", "afterfix.workload.latency_p95_ms",
        {"k8s.namespace.name": "shop", "k8s.deployment.name": "checkout"})
    assert bound[1].query == 'afterfix_workload_error_rate{namespace="shop"}'


# -- OTLP/JSON file exporter ------------------------------------------------------------------

HEX32 = re.compile(r"[0-9a-f]{32}")
HEX16 = re.compile(r"[0-9a-f]{16}")


def _story(rec):
    with rec.run(run_id="run-1", incident_id="INC-1"):
        with rec.tool_call("get_hpa", {"name": "checkout"}) as call:
            call.result({"maxReplicas": 4})
        with rec.llm_call("m") as llm:
            llm.tokens(10, 3)
        did = rec.decision("q", OPTIONS, "raise-max", "r", decision_id="dec-1")
        with rec.action("patch", HPA, decision_id=did, action_id="act-1", analysis=LATENCY) as act:
            act.before({"spec": {"maxReplicas": 4}}, "41")
            act.after({"spec": {"maxReplicas": 10}}, "42")
        with pytest.raises(RuntimeError):
            with rec.tool_call("broken", {}):
                raise RuntimeError("boom")


def _value(any_value: dict):
    (kind, v), = any_value.items()
    return kind, v


def test_file_exporter_writes_otlp_json_lines(tmp_path, memory):
    _, _ = memory
    path = tmp_path / "out" / "agent.jsonl"
    provider = sdk.setup("sre-agent", file=path, resource={"deployment.environment": "prod"},
                         id_generator=sdk.SeededIdGenerator(3))
    memory_exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory_exporter))
    _story(sdk.Recorder(provider, clock=Clock(), seed=2))
    provider.shutdown()

    lines = path.read_bytes().splitlines()
    sdk_spans = {s.context.span_id: s for s in memory_exporter.get_finished_spans()}
    assert len(lines) == len(sdk_spans) == 6  # one export per ended span
    seen = 0
    for line in lines:
        data = orjson.loads(line)
        (rs,) = data["resourceSpans"]
        resource = {kv["key"]: kv["value"] for kv in rs["resource"]["attributes"]}
        assert resource["service.name"] == {"stringValue": "sre-agent"}
        assert resource["deployment.environment"] == {"stringValue": "prod"}
        (ss,) = rs["scopeSpans"]
        assert ss["scope"]["name"] == "afterfix.sdk"
        for span in ss["spans"]:
            original = sdk_spans[int(span["spanId"], 16)]
            seen += 1
            assert HEX32.fullmatch(span["traceId"]) and int(span["traceId"], 16) == original.context.trace_id
            assert HEX16.fullmatch(span["spanId"])
            if original.parent is None:
                assert "parentSpanId" not in span
            else:
                assert HEX16.fullmatch(span["parentSpanId"]) and int(span["parentSpanId"], 16) == original.parent.span_id
            assert span["startTimeUnixNano"] == str(original.start_time)  # int64 as a decimal string
            assert span["endTimeUnixNano"] == str(original.end_time)
            assert span["kind"] == {SpanKind.INTERNAL: 1, SpanKind.CLIENT: 3}[original.kind]  # enum as int
            attrs = dict((kv["key"], _value(kv["value"])) for kv in span["attributes"])
            assert set(attrs) == set(original.attributes)
            for key, value in original.attributes.items():
                kind, encoded = attrs[key]
                if isinstance(value, bool):
                    assert (kind, encoded) == ("boolValue", value)
                elif isinstance(value, int):
                    assert (kind, encoded) == ("intValue", str(value))
                elif isinstance(value, float):
                    assert kind == "doubleValue" and encoded == value
                else:
                    assert (kind, encoded) == ("stringValue", value)
            events = span.get("events", [])
            assert [e["name"] for e in events] == [e.name for e in original.events]
            for e, oe in zip(events, original.events):
                assert e["timeUnixNano"] == str(oe.timestamp)
            if original.status.status_code == StatusCode.ERROR:
                assert span["status"]["code"] == 2
                assert span["status"]["message"] == "boom"
            else:
                assert "code" not in span.get("status", {})
    assert seen == 6


def test_file_exporter_appends_to_an_existing_file(tmp_path):
    path = tmp_path / "agent.jsonl"
    path.write_bytes(b'{"resourceSpans":[]}\n')
    for run in ("run-a", "run-b"):
        provider = sdk.setup("sre-agent", file=path, batch_file=True)
        with sdk.Recorder(provider).run(run_id=run):
            pass
        provider.shutdown()
    lines = path.read_bytes().splitlines()
    assert lines[0] == b'{"resourceSpans":[]}'
    assert len(lines) == 3 and all(line.endswith(b"}") for line in lines)
    runs = [kv["value"]["stringValue"] for line in lines[1:]
            for kv in orjson.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]
            if kv["key"] == c.RUN_ID]
    assert runs == ["run-a", "run-b"]


def test_setup_needs_a_destination():
    with pytest.raises(ValueError, match="endpoint"):
        sdk.setup("sre-agent")


# -- through the decoder into the store --------------------------------------------------------


def test_sdk_output_reads_back_through_the_decoder_and_the_views(tmp_path, store):
    from afterfix.ingest.otlp import decode_json_lines

    path = tmp_path / "agent.jsonl"
    provider = sdk.setup("sre-agent", file=path)
    _story(sdk.Recorder(provider, agent_name="agent-x", clock=Clock(), seed=5))
    provider.shutdown()

    decoded = decode_json_lines(path.read_bytes(), source=str(path))
    assert [f"{r.location}: {r.reason}" for r in decoded.refused] == []
    assert decoded.spans.num_rows == 6
    store.append(spans=decoded.spans, events=decoded.events)

    decision = store.query("SELECT * FROM decisions").to_dict("records")
    assert len(decision) == 1
    d = decision[0]
    assert (d["decision_id"], d["run_id"], d["incident_id"], d["agent_name"], d["selected_option"], d["reason"]) == \
        ("dec-1", "run-1", "INC-1", "agent-x", "raise-max", "r")

    options = store.query("SELECT * FROM options ORDER BY seq")
    assert options.option_id.tolist() == ["raise-max", "restart", "wait"]
    assert options.verdict.tolist() == ["selected", "rejected", "considered"]
    assert options.reason.tolist()[:2] == ["r", "no memory growth"]
    assert options.reason.isna().tolist() == [False, False, True]
    assert options.score.tolist()[:2] == [0.9, 0.2]
    assert orjson.loads(options.evidence[0]) == ["replicas pinned at max", "cpu 95%"]
    assert orjson.loads(options.action[0]) == {"kind": "HPA", "patch": {"spec": {"maxReplicas": 10}}}
    assert set(options.decision_id) == {"dec-1"}

    (a,) = store.query("SELECT * FROM actions").to_dict("records")
    assert (a["action_id"], a["decision_id"], a["verb"], a["status"], a["trust_level"], a["mutating"]) == \
        ("act-1", "dec-1", "patch", "applied", 3, True)
    assert (a["target_uid"], a["target_kind"], a["target_api_version"], a["target_namespace"], a["target_name"]) == \
        ("uid-hpa", "HorizontalPodAutoscaler", "autoscaling/v2", "shop", "checkout")
    assert orjson.loads(a["before"]) == {"spec": {"maxReplicas": 4}}
    assert orjson.loads(a["after"]) == {"spec": {"maxReplicas": 10}}
    assert (a["resource_version_before"], a["resource_version_after"]) == ("41", "42")
    assert orjson.loads(a["analysis"]) == LATENCY

    (run,) = store.query("SELECT * FROM runs").to_dict("records")
    assert (run["run_id"], run["spans"], run["tool_calls"], run["llm_calls"], run["decisions"], run["changes"],
            run["errors"], run["input_tokens"], run["output_tokens"]) == ("run-1", 6, 2, 1, 1, 1, 1, 10, 3)
    failed = store.query("SELECT tool_name, failed, error FROM tool_calls WHERE failed").to_dict("records")
    assert failed == [{"tool_name": "broken", "failed": True, "error": "RuntimeError"}]
    kinds = store.query("SELECT DISTINCT kind FROM spans ORDER BY kind").kind.tolist()
    assert kinds == ["CLIENT", "INTERNAL"]


def test_file_exporter_encodes_links_arrays_and_nested_values(tmp_path):
    path = tmp_path / "raw.jsonl"
    provider = sdk.setup("raw", file=path, id_generator=sdk.SeededIdGenerator(11))
    tracer = provider.get_tracer("raw")
    first = tracer.start_span("first")
    first.end(end_time=2_000_000_000_000_000_000)
    from opentelemetry.trace import Link

    second = tracer.start_span("second", links=[Link(first.get_span_context(), {"why": "follows"})],
                               start_time=2_000_000_000_000_000_001,
                               attributes={"tags": ("a", "b"), "counts": (1, 2**40), "ratios": (0.5,), "flags": (True,),
                                           "big": 2**62})
    second.end(end_time=2_000_000_000_000_000_002)
    provider.shutdown()

    span = orjson.loads(path.read_bytes().splitlines()[1])["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    attrs = {kv["key"]: kv["value"] for kv in span["attributes"]}
    assert attrs["tags"] == {"arrayValue": {"values": [{"stringValue": "a"}, {"stringValue": "b"}]}}
    assert attrs["counts"] == {"arrayValue": {"values": [{"intValue": "1"}, {"intValue": str(2**40)}]}}
    assert attrs["ratios"] == {"arrayValue": {"values": [{"doubleValue": 0.5}]}}
    assert attrs["flags"] == {"arrayValue": {"values": [{"boolValue": True}]}}
    assert attrs["big"] == {"intValue": str(2**62)}
    (link,) = span["links"]
    assert link["traceId"] == f"{first.get_span_context().trace_id:032x}"
    assert link["spanId"] == f"{first.get_span_context().span_id:016x}"
    assert link["attributes"] == [{"key": "why", "value": {"stringValue": "follows"}}]
    assert span["startTimeUnixNano"] == "2000000000000000001"


def test_setup_exports_over_otlp_http(free_port):
    """A real HTTP server receives the OTLP/HTTP export that setup(endpoint=...) configures."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    received: list[tuple[str, str, bytes]] = []
    tokens: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers["Content-Type"], body))
            tokens.append(self.headers.get("Authorization"))
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        provider = sdk.setup("sre-agent", endpoint=f"http://127.0.0.1:{free_port}/v1/traces",
                             headers={"Authorization": "Bearer s3cret"})
        rec = sdk.Recorder(provider, agent_name="agent-x")
        with rec.run(run_id="run-http"):
            rec.decision("q", [Option("a", "A")], "a", "r", decision_id="dec-http")
        assert provider.force_flush(10_000)
        provider.shutdown()
    finally:
        server.shutdown()
        server.server_close()
    spans = []
    for path, content_type, body in received:
        assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
        request = ExportTraceServiceRequest.FromString(body)
        spans += [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert tokens and set(tokens) == {"Bearer s3cret"}
    by_name = {s.name: s for s in spans}
    assert set(by_name) == {"invoke_agent agent-x", "decide: q"}
    decision = by_name["decide: q"]
    attrs = {kv.key: kv.value.string_value for kv in decision.attributes}
    assert attrs[c.DECISION_ID] == "dec-http" and attrs[c.RUN_ID] == "run-http"
    assert [e.name for e in decision.events] == [c.OPTION_EVENT]
