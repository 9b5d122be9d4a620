"""The first-bad-step finding both ways, on runs built for the purpose: a failed, schema-breaking or
invalid tool call yields one finding whose path follows its output to the steps that used it; a
clean run yields none, and hostile tool definitions do not stop the review."""

from __future__ import annotations

import json

import pytest
from nights import Night, epoch
from opentelemetry.trace import Status, StatusCode

from afterfix import convention as k
from afterfix.analysis.findings import find, findings_frame
from afterfix.sdk import Option, Target

SEARCH = Target("uid-search", "Deployment", "apps/v1", "shop", "search")
OPTIONS = [Option("scale", "scale search to 4", score=0.8), Option("wait", "wait", reason="users are waiting")]
KUBECTL_GET = {"type": "function", "name": "kubectl_get", "parameters": {
    "type": "object", "required": ["resource", "namespace"],
    "properties": {"resource": {"type": "string", "enum": ["deployments", "horizontalpodautoscalers"]},
                   "namespace": {"type": "string", "enum": ["default", "platform", "shop"]},
                   "name": {"type": "string"}}}}
PROM = {"type": "function", "name": "prometheus_query",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}


def first_bad(store, **kw):
    return find(store, kinds=["first_bad_step"], **kw)


def agent_run(night: Night, bad, *, definitions=None, sources=True, act=True, extra=None):
    """One run on INC-1: a good read, the step `bad(rec)` (returns its call id), a second read, a
    decision naming its sources, the scale it chose, and a failed verification."""
    rec = night.at("2026-11-27T01:30").rec()
    ids = {}
    with rec.run(incident_id="INC-1", tool_definitions=definitions) as run:
        ids["run_span"] = run.span.get_span_context().span_id
        if extra is not None:
            extra(run)
        with rec.incident("INC-1", "shop/search: latency 1500 over 300", service="shop/search"):
            rec.detection("latency_p95_ms", 1500, 300, "search is slow")
            with rec.tool_call("prometheus_query", {"query": "latency"}, call_id="call-prom-1") as ok:
                ok.result({"value": 1500, "unit": "latency_p95_ms"})
            ids["bad"] = bad(rec)
            with rec.tool_call("kubectl_get", {"resource": "deployments", "namespace": "shop", "name": "search"},
                               call_id="call-deploy") as ok:
                ok.result({"spec": {"replicas": 2}})
            ids["decision"] = rec.decision(
                "search is slow: what now?", OPTIONS, "scale", "no HPA found, so scale by hand",
                inputs={"hpa": None, "replicas": 2},
                sources={"hpa": [ids["bad"]], "replicas": "call-deploy"} if sources else None)
            if act:
                with rec.action("scale", SEARCH, decision_id=ids["decision"]) as a:
                    a.before({"spec.replicas": 2}, "10")
                    a.after({"spec.replicas": 4}, "11")
                    ids["action"] = a.action_id
                rec.verification(a.action_id, "failure", "latency_p95_ms", 1500, 1400)
    return ids


def failing_hpa_read(rec):
    with rec.tool_call("kubectl_get", {"resource": "horizontalpodautoscalers", "namespace": "shop"},
                       call_id="call-hpa") as call:
        with rec.tool_call("parse_hpa", {"text": "…"}, call_id="call-parse") as child:
            child.result("no autoscalers in the answer")
        call.error("connection refused", error_type="ConnectionError")
    return "call-hpa"


# -- (1) a failed call, its child, the decision that listed it, the action it chose ------------------------------


def test_a_failed_call_taints_its_child_the_decision_naming_it_the_action_and_its_check(tmp_path):
    night = Night(tmp_path)
    agent_run(night, failing_hpa_read)
    (f,) = first_bad(night.store())
    assert f.severity == "high" and f.incident_id == "INC-1" and f.target == "shop/search"
    d = f.details
    assert (d["call_id"], d["tool_name"], d["why"]) == ("call-hpa", "kubectl_get", "failed")
    assert "ConnectionError connection refused" in d["reason"]
    assert [(p["kind"], p["name"]) for p in d["path"]] == [
        ("tool", "execute_tool kubectl_get"), ("tool", "execute_tool parse_hpa"),
        ("decision", "decide: search is slow: what now?"), ("action", "scale Deployment shop/search"),
        ("verification", "verify latency_p95_ms")]
    whys = [p["why"] for p in d["path"]]
    assert whys[0].startswith("first bad call: failed")
    assert whys[1:] == ["it ran inside execute_tool kubectl_get", "its input hpa came from it",
                        "the tainted decision chose it", "it verifies a tainted action"]
    assert [e.span_id for e in f.evidence] == [p["span_id"] for p in d["path"]]
    assert [e.kind for e in f.evidence] == ["span", "span", "span", "action", "span"]
    assert d["path"][3]["via"] == d["path"][2]["span_id"]  # the action came through the decision
    assert len(d["changes"]) == 1 and d["tainted"] == 4
    # the reads that went right are not on the path
    assert not {"execute_tool prometheus_query"} & {p["name"] for p in d["path"]}
    assert "call (" in f.explanation and "connection refused" in f.explanation
    assert "scale Deployment shop/search" in f.explanation and "roll back" in f.explanation


@pytest.mark.parametrize("how", ["list of sources", "result verbatim"])
def test_a_decision_uses_the_call_by_a_sources_list_or_by_its_result(tmp_path, how):
    night = Night(tmp_path)
    rec = night.rec()
    with rec.run(incident_id="INC-2"):
        with rec.tool_call("get_hpa", {"ns": "shop"}, call_id="c1") as call:
            call.result("HPA search: maxReplicas 2, currently 2")
            call.invalid("the agent meant the catalog HPA")
        if how == "list of sources":
            rec.decision("q", OPTIONS, "scale", "r", sources=["c1"])
        else:
            rec.decision("q", OPTIONS, "scale", "r", inputs={"seen": "HPA search: maxReplicas 2, currently 2"})
    (f,) = first_bad(night.store())
    assert f.details["why"] == "invalid" and f.details["reason"] == "the agent meant the catalog HPA"
    assert [p["kind"] for p in f.details["path"]] == ["tool", "decision"]
    assert f.details["path"][1]["why"] == ("its inputs name it as a source" if how == "list of sources"
                                           else f"its {k.DECISION_INPUTS} holds its result verbatim")
    assert f.severity == "medium"  # nothing was changed


def test_a_short_result_is_not_matched_by_chance(tmp_path):
    night = Night(tmp_path)
    rec = night.rec()
    with rec.run():
        with rec.tool_call("count", {}, call_id="c1") as call:
            call.result("2")
            call.error("timeout")
        rec.decision("q", OPTIONS, "scale", "r", inputs={"replicas": 2, "note": "2 of 2"})
    (f,) = first_bad(night.store())
    assert f.details["path"][1:] == []


# -- (2) a call that breaks the declared schema -------------------------------------------------------------------


def misspelt_read(rec):
    with rec.tool_call("kubectl_get", {"resource": "horizontalpodautoscalers", "namespace": "sohp"},
                       call_id="call-sohp") as call:
        call.result({"kind": "HorizontalPodAutoscalerList", "items": []})
    return "call-sohp"


def test_arguments_outside_the_enum_of_the_agent_span_definitions_are_the_first_bad_step(tmp_path):
    night = Night(tmp_path)
    ids = agent_run(night, misspelt_read, definitions=[KUBECTL_GET, PROM])
    (f,) = first_bad(night.store())
    d = f.details
    assert (d["call_id"], d["why"]) == ("call-sohp", "schema")
    assert d["reason"] == "namespace: 'sohp' is not one of ['default', 'platform', 'shop']"
    assert d["definitions"]["span_id"] == format(ids["run_span"], "016x")
    assert d["definitions"]["tools"] == ["kubectl_get", "prometheus_query"]
    assert d["arguments"] == {"namespace": "sohp", "resource": "horizontalpodautoscalers"}
    assert [p["kind"] for p in d["path"]] == ["tool", "decision", "action", "verification"]
    assert f.severity == "high" and "broke the tool's declared schema" in f.explanation


@pytest.mark.parametrize("shape", ["genai", "openai"])
def test_definitions_on_the_model_call_before_it_in_either_shape(tmp_path, shape):
    night = Night(tmp_path)
    rec = night.rec()
    tool = KUBECTL_GET if shape == "genai" else {"type": "function", "function": {
        "name": "kubectl_get", "parameters": KUBECTL_GET["parameters"]}}
    with rec.run():
        with rec.llm_call("m", tool_definitions=[tool]):
            pass
        with rec.tool_call("kubectl_get", {"resource": "deployments"}, call_id="call-1") as call:
            call.result("[]")
    (f,) = first_bad(night.store())
    assert f.details["reason"] == "'namespace' is a required property"


@pytest.mark.parametrize("strict_first", [False, True])
def test_a_call_repeated_after_the_definitions_changed_is_checked_against_the_new_ones(tmp_path, strict_first):
    """The same read twice in one run, a model call with other definitions between them: each call is
    checked against the definitions recorded latest before it, not those of the first."""
    loose = {**KUBECTL_GET, "parameters": {"type": "object", "properties": {"namespace": {"type": "string"}}}}
    night = Night(tmp_path)
    rec = night.rec()
    with rec.run(tool_definitions=[KUBECTL_GET if strict_first else loose]):
        for call_id, defs in (("call-1", None), ("call-2", [loose if strict_first else KUBECTL_GET])):
            if defs is not None:
                with rec.llm_call("m", tool_definitions=defs):
                    pass
            with rec.tool_call("kubectl_get", {"resource": "deployments", "namespace": "sohp"}, call_id=call_id) as call:
                call.result("[]")
    (f,) = first_bad(night.store())
    assert f.details["call_id"] == ("call-1" if strict_first else "call-2")
    assert f.details["reason"] == "namespace: 'sohp' is not one of ['default', 'platform', 'shop']"


def test_a_tool_the_definitions_do_not_know_breaks_them(tmp_path):
    night = Night(tmp_path)
    rec = night.rec()
    with rec.run(tool_definitions=[KUBECTL_GET]):
        with rec.tool_call("kubectl_delete", {"namespace": "shop"}, call_id="call-1") as call:
            call.result("deleted")
    (f,) = first_bad(night.store())
    assert f.details["reason"] == "kubectl_delete is not among the 1 tools defined (kubectl_get)"


# -- (3) marked invalid, (4) clean and unconsumed ------------------------------------------------------------------


def test_a_call_marked_invalid_is_the_first_bad_step(tmp_path):
    def marked(rec):
        with rec.tool_call("kubectl_get", {"resource": "horizontalpodautoscalers", "namespace": "shop"},
                           call_id="call-guarded") as call:
            call.result({"items": []})
            call.invalid("the guard saw it list the wrong namespace")
        return "call-guarded"

    night = Night(tmp_path)
    agent_run(night, marked, definitions=[KUBECTL_GET, PROM])
    (f,) = first_bad(night.store())
    assert (f.details["why"], f.details["reason"]) == ("invalid", "the guard saw it list the wrong namespace")
    assert "was marked invalid" in f.title


def test_a_clean_run_has_no_first_bad_step(tmp_path):
    def good(rec):
        with rec.tool_call("kubectl_get", {"resource": "horizontalpodautoscalers", "namespace": "shop"},
                           call_id="call-good") as call:
            call.result({"items": [{"name": "search", "maxReplicas": 2}]})
        return "call-good"

    night = Night(tmp_path)
    agent_run(night, good, definitions=[KUBECTL_GET, PROM])
    assert first_bad(night.store()) == []


def test_a_failed_call_nobody_used_is_a_medium_finding_with_no_taint(tmp_path):
    night = Night(tmp_path)

    def lonely(rec):
        with rec.tool_call("kubectl_get", {"resource": "deployments", "namespace": "shop"}, call_id="call-x") as c:
            c.error("503 Service Unavailable")
        return "call-x"

    agent_run(night, lonely, sources=False, act=False)
    (f,) = first_bad(night.store())
    assert f.severity == "medium" and f.details["tainted"] == 0 and len(f.evidence) == 1
    assert [p["kind"] for p in f.details["path"]] == ["tool"]
    assert "nothing used it" in f.title and "Nothing later used its output" in f.explanation


def test_only_the_first_bad_call_of_a_run_is_a_finding_and_filters_apply(tmp_path):
    night = Night(tmp_path)
    rec = night.at("2026-11-27T02:00").rec()
    with rec.run(incident_id="INC-9"):
        for i in range(3):
            with rec.tool_call("t", {}, call_id=f"call-{i}") as call:
                call.error("boom")
    store = night.store()
    (f,) = first_bad(store)
    assert f.details["call_id"] == "call-0"
    assert first_bad(store, incident="INC-8") == []
    from datetime import datetime

    assert first_bad(store, since=datetime(2026, 11, 27, 3)) == []
    frame = findings_frame(store, kinds=["first_bad_step"])
    path = json.loads(frame["details"].iloc[0])["path"]
    assert [p["span_id"] for p in path] == [e["span_id"] for e in json.loads(frame["evidence"].iloc[0])]


# -- (5) hostile definitions ------------------------------------------------------------------------------------


HOSTILE = [
    "not json [",
    '{"name": "kubectl_get"}',
    json.dumps([{"name": "kubectl_get", "parameters": {"$schema": 5}}]),
    json.dumps([{"name": "kubectl_get", "parameters": {"type": "objekt"}}]),
    json.dumps([{"name": "kubectl_get", "parameters": {"$ref": "http://127.0.0.1:9/schema.json"}}]),
    "[" * 5000 + "]" * 5000,
    json.dumps([5, None, "x", {"function": "kubectl_get"}]),
]


@pytest.mark.parametrize("definitions", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_definitions_neither_crash_nor_break_a_clean_call(tmp_path, definitions):
    night = Night(tmp_path)
    rec = night.rec()
    with rec.run() as run:
        run.set(k.GENAI_TOOL_DEFINITIONS, definitions)
        with rec.tool_call("kubectl_get", {"namespace": "a" * 40 + "!"}, call_id="call-1") as call:
            call.result("fine")
        with rec.tool_call("kubectl_get", {"namespace": "shop"}, call_id="call-2") as call:
            call.error("boom")
    store = night.store()
    (f,) = find(store, kinds=["first_bad_step"])  # the failed call, whatever the definitions said
    assert f.details["call_id"] == "call-2" and f.details["why"] == "failed"
    assert isinstance(f.details["definitions"]["problems"], list)


# -- (6) a foreign framework: OpenInference and GenAI attributes only ------------------------------------------------


def test_a_foreign_trace_with_a_failed_tool_call_is_followed_through_the_model_calls(tmp_path):
    night = Night(tmp_path)
    tracer = night.provider.get_tracer("some.other.framework")
    t = epoch("2026-11-27T03:00")
    ns = lambda s: int((t + s) * 1e9)  # noqa: E731
    root = tracer.start_span("agent", start_time=ns(0), attributes={"openinference.span.kind": "AGENT",
                                                                     "session.id": "sess-42"})
    from opentelemetry import trace

    with trace.use_span(root, end_on_exit=False):
        tool = tracer.start_span("search_docs", start_time=ns(1), attributes={
            "openinference.span.kind": "TOOL", "tool.name": "search_docs", "tool_call.id": "call_7f3a9b21",
            "input.value": '{"query": "restart policy"}', "session.id": "sess-42"})
        tool.set_status(Status(StatusCode.ERROR, "index unavailable"))
        tool.end(end_time=ns(2))
        llm = tracer.start_span("chat", start_time=ns(3), attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "m", "session.id": "sess-42",
            "gen_ai.input.messages": json.dumps([
                {"role": "user", "parts": [{"type": "text", "content": "why?"}]},
                {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_7f3a9b21",
                                            "response": "error: index unavailable"}]}]),
            "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [
                {"type": "tool_call", "id": "call_restart1", "name": "restart", "arguments": {"pod": "web-1"}}]}])})
        llm.end(end_time=ns(4))
        restart = tracer.start_span("restart", start_time=ns(5), attributes={
            "openinference.span.kind": "TOOL", "tool.name": "restart", "tool_call.id": "call_restart1",
            "session.id": "sess-42", "output.value": "restarted web-1"})
        restart.end(end_time=ns(6))
        unrelated = tracer.start_span("search_docs", start_time=ns(7), attributes={
            "openinference.span.kind": "TOOL", "tool.name": "search_docs", "tool_call.id": "call_other01",
            "session.id": "sess-42", "output.value": "ok"})
        unrelated.end(end_time=ns(8))
    root.end(end_time=ns(9))
    (f,) = first_bad(night.store())
    assert f.run_ids == ["sess-42"] and f.incident_id is None
    assert (f.details["call_id"], f.details["why"]) == ("call_7f3a9b21", "failed")
    assert [(p["name"], p["why"]) for p in f.details["path"][1:]] == [
        ("chat", "it read its result (a tool message for its call id)"), ("restart", "chat asked for it")]
    assert f.severity == "medium"  # a tool call is not a recorded change to production


def test_a_catastrophic_pattern_is_checked_in_linear_time(tmp_path):
    # (a+)+$ against 40 a's and a "!" takes Python's re about 2**40 steps; RE2 answers at once.
    night = Night(tmp_path)
    rec = night.rec()
    with rec.run(tool_definitions=[{"name": "kubectl_get", "parameters": {
            "properties": {"namespace": {"type": "string", "pattern": "^(a+)+$"}}}}]):
        with rec.tool_call("kubectl_get", {"namespace": "a" * 40 + "!"}, call_id="call-1") as call:
            call.result("fine")
    (f,) = first_bad(night.store())
    assert f.details["why"] == "schema" and "does not match '^(a+)+$'" in f.details["reason"]


# -- the night shift: the wrong_tool scenario is found, the others are not ----------------------------------------


def test_the_night_shifts_wrong_tool_call_is_the_first_bad_step_of_its_incident(tmp_path):
    from afterfix.nightshift import scenarios as sc
    from afterfix.nightshift.night import run_night
    from afterfix.store import Store

    store = Store(tmp_path / "store")
    result = run_night(store, workdir=tmp_path / "demo", seed=7, scenarios=["hpa_starvation", "wrong_tool"],
                       until=sc.at(200))
    wrong = {i.incident_id for i in result.incidents if i.scenario == "wrong_tool"}
    assert wrong and {i.scenario for i in result.incidents} == {"hpa_starvation", "wrong_tool"}
    found = first_bad(store)
    assert {f.incident_id for f in found} == wrong  # the HPA-starvation runs are clean
    for f in found:
        assert f.details["why"] == "schema" and f.details["arguments"]["namespace"] == "sohp"
        assert [p["kind"] for p in f.details["path"]] == ["tool", "decision", "action", "verification"]
        assert f.details["path"][1]["why"] == "its input hpa came from it" and f.severity == "high"
        assert f.target == "shop/search"
    # every decision names as sources only its own inputs and tool calls of its own run
    calls = store.query("SELECT run_id, call_id FROM tool_calls")
    own = set(zip(calls["run_id"], calls["call_id"]))
    for run_id, inputs in store.query("SELECT run_id, inputs FROM decisions").itertuples(index=False):
        inputs = json.loads(inputs)
        sources = inputs.pop("sources")
        assert set(sources) <= set(inputs) and "metrics" in sources
        assert all((run_id, call) in own for ids in sources.values() for call in ids)
    store.close()
