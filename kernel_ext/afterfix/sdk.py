"""Record an SRE agent's work (runs, tool calls, LLM calls, decisions, actions) as OpenTelemetry
spans in the afterfix.* convention, with the GenAI semantic-convention attributes where they apply.

`setup()` builds an OpenTelemetry SDK TracerProvider that exports over OTLP/HTTP and/or to an
OTLP/JSON file; `Recorder` turns agent steps into spans on any TracerProvider. Everything emitted
is plain OTLP: afterfix is one backend that understands it, not the only one. Attribute keys come
from `afterfix.convention`; `traces/SCHEMA.md` documents them.

    provider = sdk.setup(service_name="sre-agent", file="traces/inbox/agent.jsonl")
    rec = sdk.Recorder(provider, agent_name="sre-agent")
    with rec.run(incident_id="INC-1"):
        did = rec.decision("why is checkout slow?", options, selected="raise-max", reason="...")
        with rec.action("patch", target, decision_id=did, analysis=latency_p95) as act:
            act.before({...}, "41"); act.after({...}, "42")

An action's `analysis` (an Argo Rollouts metric spec, docs/analysis.md) says how a guard can tell
in the minutes after it whether the change worked.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import random
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import orjson
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import convention as c
from .otlp_encode import OTLPJsonFileExporter

__all__ = [
    "setup",
    "Recorder",
    "Option",
    "Target",
    "OTLPJsonFileExporter",
    "SeededIdGenerator",
    "TRUST_LEVELS",
    "analysis_json",
    "dumps",
]

SCOPE_NAME = "afterfix.sdk"

# What each trust level allows the agent to do on its own.
TRUST_LEVELS = {
    1: "alert and recommend",
    2: "fix with approval",
    3: "fix and inform",
    4: "fix and report",
}

_NAME_MAX = 80  # span names stay short; the full text is in the attributes


def dumps(value: Any) -> str:
    """JSON text with sorted keys, so the same value always gives the same bytes.

    Values JSON cannot hold (sets, paths, custom objects) are written as their `str()`.
    """
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=_json_default).decode()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    if isinstance(obj, tuple):
        return list(obj)
    return str(obj)


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _NAME_MAX else text[: _NAME_MAX - 1] + "…"


def _error_type(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _choice(value: str, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"{what} {value!r} is not one of {', '.join(allowed)}")
    return value


# -- provider ------------------------------------------------------------------------------


class SeededIdGenerator(IdGenerator):
    """Trace and span ids from a seeded random generator: the same seed gives the same ids.

    For reproducible example traces and tests; live agents keep the SDK's random ids.
    """

    def __init__(self, seed: int):
        self._rng = random.Random(seed)

    def generate_span_id(self) -> int:
        return self._rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._rng.getrandbits(128) or 1


def setup(
    service_name: str = "afterfix-agent",
    endpoint: str | None = None,
    file: str | os.PathLike | None = None,
    resource: Mapping[str, Any] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    batch_file: bool = False,
    id_generator: IdGenerator | None = None,
    set_global: bool = False,
) -> TracerProvider:
    """A TracerProvider exporting to an OTLP/HTTP `endpoint` (batched) and/or an OTLP/JSON `file`.

    `endpoint` is the full URL, e.g. "http://127.0.0.1:4318/v1/traces". The file gets one line
    per export, written as each span ends (or in batches with `batch_file=True`). `headers` go
    with every HTTP export (e.g. {"Authorization": "Bearer TOKEN"} for a receiver started with a
    token). `resource`
    adds resource attributes next to service.name. Call `provider.shutdown()` (or
    `force_flush()`) before the process exits, or batched spans are lost.
    """
    if endpoint is None and file is None:
        raise ValueError("setup() needs an endpoint (OTLP/HTTP URL) or a file (OTLP/JSON lines), or both")
    attrs = {"service.name": service_name, **dict(resource or {})}
    kwargs = {"id_generator": id_generator} if id_generator is not None else {}
    provider = TracerProvider(resource=Resource.create(attrs), **kwargs)
    if endpoint is not None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, headers=dict(headers) if headers else None)
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if file is not None:
        exporter = OTLPJsonFileExporter(Path(file))
        provider.add_span_processor(BatchSpanProcessor(exporter) if batch_file else SimpleSpanProcessor(exporter))
    if set_global:
        trace.set_tracer_provider(provider)
    return provider


# -- value objects ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One option considered at a decision point.

    `verdict` defaults to "selected" for the decision's selected option and "rejected" for the
    others; a rejected option needs a `reason`.
    """

    id: str
    description: str
    action: Mapping[str, Any] | None = None
    evidence: Sequence[str] = ()
    score: float | None = None
    verdict: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Target:
    """The Kubernetes object an action touches. `uid` is None only for objects not created yet;
    `namespace` is None for cluster-scoped kinds."""

    uid: str | None
    kind: str
    api_version: str
    namespace: str | None
    name: str

    def attributes(self) -> dict[str, str]:
        values = {
            c.TARGET_UID: self.uid,
            c.TARGET_KIND: self.kind,
            c.TARGET_API_VERSION: self.api_version,
            c.TARGET_NAMESPACE: self.namespace,
            c.TARGET_NAME: self.name,
        }
        return {k: v for k, v in values.items() if v is not None}

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


# -- span handles ----------------------------------------------------------------------------


class _Handle:
    def __init__(self, rec: "Recorder", span: trace.Span):
        self._rec = rec
        self.span = span

    def set(self, key: str, value: Any) -> None:
        """Set any further attribute on this span (non-scalar values are stored as JSON)."""
        self.span.set_attribute(key, value if isinstance(value, (str, bool, int, float)) else dumps(value))


class RunHandle(_Handle):
    def __init__(self, rec, span, state: "_RunState"):
        super().__init__(rec, span)
        self._state = state

    @property
    def run_id(self) -> str:
        return self._state.run_id

    @property
    def incident_id(self) -> str | None:
        return self._state.incident_id


class IncidentHandle(_Handle):
    def set_status(self, status: str) -> None:
        self.span.set_attribute(c.INCIDENT_STATUS, _choice(status, c.INCIDENT_STATUSES, "incident status"))

    def page(self, *who: str) -> None:
        """People or rotations paged about this incident (added to those already recorded)."""
        self._paged = list(dict.fromkeys([*getattr(self, "_paged", []), *map(str, who)]))
        self.span.set_attribute(c.INCIDENT_PAGED, self._paged)


class ToolCallHandle(_Handle):
    def __init__(self, rec, span, call_id: str):
        super().__init__(rec, span)
        self.call_id = call_id

    def result(self, value: Any) -> None:
        """The tool's result: a string is kept as it is, anything else is stored as JSON."""
        self.span.set_attribute(c.GENAI_TOOL_RESULT, value if isinstance(value, str) else dumps(value))

    def error(self, error: BaseException | str, error_type: str | None = None) -> None:
        self._rec._fail(self.span, error, error_type)

    def invalid(self, reason: str) -> None:
        """Mark the call as known to be wrong (bad arguments, the wrong tool), and say why."""
        if not reason:
            raise ValueError("invalid() needs a reason: say what is wrong with the call")
        self.span.set_attribute(c.TOOL_INVALID, str(reason))


class LlmCallHandle(_Handle):
    """A model call. Its messages are recorded as the GenAI conventions describe them
    (`{"role", "parts": [{"type": "text", "content"}, {"type": "tool_call", "id", "name",
    "arguments"}, {"type": "tool_call_response", "id", "response"}]}`, output messages with a
    `finish_reason`), checked here: a malformed message raises ValueError naming it."""

    def tokens(self, input: int, output: int) -> None:
        self.span.set_attribute(c.GENAI_INPUT_TOKENS, int(input))
        self.span.set_attribute(c.GENAI_OUTPUT_TOKENS, int(output))

    def system_instructions(self, instructions: str | Sequence[Mapping[str, Any]]) -> None:
        """What the model was told apart from the chat: a text, or a list of message parts."""
        parts = [{"type": "text", "content": instructions}] if isinstance(instructions, str) else instructions
        self.span.set_attribute(c.GENAI_SYSTEM_INSTRUCTIONS, dumps(_parts(parts, "system_instructions")))

    def input_messages(self, messages: Sequence[Mapping[str, Any]]) -> None:
        """The messages the model read (`gen_ai.input.messages`)."""
        self.span.set_attribute(c.GENAI_INPUT_MESSAGES, dumps(_messages(messages, "input_messages", output=False)))

    def output_messages(self, messages: Sequence[Mapping[str, Any]]) -> None:
        """The messages the model answered with (`gen_ai.output.messages`), each with its
        `finish_reason`; the reasons also go to gen_ai.response.finish_reasons."""
        checked = _messages(messages, "output_messages", output=True)
        self.span.set_attribute(c.GENAI_OUTPUT_MESSAGES, dumps(checked))
        self.span.set_attribute(c.GENAI_RESPONSE_FINISH_REASONS, [m["finish_reason"] for m in checked])

    def request(self, *, seed: int | None = None, temperature: float | None = None) -> None:
        """Request parameters worth replaying with: the seed and the temperature sent."""
        if seed is not None:
            if type(seed) is not int:
                raise ValueError(f"seed {seed!r} must be an int")
            self.span.set_attribute(c.GENAI_REQUEST_SEED, seed)
        if temperature is not None:
            self.span.set_attribute(c.GENAI_REQUEST_TEMPERATURE, float(temperature))

    def response_model(self, model: str) -> None:
        self.span.set_attribute(c.GENAI_RESPONSE_MODEL, model)

    def error(self, error: BaseException | str, error_type: str | None = None) -> None:
        self._rec._fail(self.span, error, error_type)


def _parts(parts: Any, where: str) -> list[dict]:
    """Message parts checked against the GenAI shapes; other part types pass as they are (the
    conventions allow them), but every part needs a type."""
    if isinstance(parts, (str, bytes)) or not isinstance(parts, Sequence):
        raise ValueError(f"{where}: parts must be a list of objects like {{'type': 'text', 'content': '...'}}, "
                         f"not {type(parts).__name__}")
    out = []
    for i, part in enumerate(parts):
        here = f"{where}[{i}]"
        if not isinstance(part, Mapping) or not isinstance(part.get("type"), str) or not part["type"]:
            raise ValueError(f"{here}: a part is an object with a 'type' ({', '.join(c.GENAI_PART_TYPES)}, ...)")
        kind = part["type"]
        if kind == "text" and not isinstance(part.get("content"), str):
            raise ValueError(f"{here}: a text part needs 'content', a string")
        if kind == "tool_call" and not (isinstance(part.get("name"), str) and part["name"]):
            raise ValueError(f"{here}: a tool_call part needs 'name', the tool's name")
        if kind in ("tool_call", "tool_call_response") and not isinstance(part.get("id"), (str, type(None))):
            raise ValueError(f"{here}: a {kind} part's 'id' is the call id, a string")
        if kind == "tool_call_response" and "response" not in part:
            raise ValueError(f"{here}: a tool_call_response part needs 'response', the tool's result")
        out.append(dict(part))
    return out


def _messages(messages: Any, where: str, *, output: bool) -> list[dict]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ValueError(f"{where}: messages must be a list of {{'role', 'parts'}} objects, not {type(messages).__name__}")
    out = []
    for i, message in enumerate(messages):
        here = f"{where}[{i}]"
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str) or not message["role"]:
            raise ValueError(f"{here}: a message is an object with a 'role' ({', '.join(c.GENAI_ROLES)}) and 'parts'")
        checked = {**message, "parts": _parts(message.get("parts"), f"{here}.parts")}
        if output and not (isinstance(message.get("finish_reason"), str) and message["finish_reason"]):
            raise ValueError(f"{here}: an output message needs 'finish_reason' (stop, length, content_filter, "
                             "tool_call or error)")
        out.append(checked)
    return out


class ActionHandle(_Handle):
    def __init__(self, rec, span, action_id: str):
        super().__init__(rec, span)
        self.action_id = action_id
        self._status: str | None = None
        self._after = False

    def before(self, state: Mapping[str, Any], resource_version: str | None) -> None:
        """The touched fields before the change, and the object's resourceVersion then."""
        self.span.set_attribute(c.ACTION_BEFORE, dumps(state))
        if resource_version is not None:
            self.span.set_attribute(c.ACTION_RV_BEFORE, str(resource_version))

    def after(self, state: Mapping[str, Any], resource_version: str | None) -> None:
        """The touched fields after the change, and the resourceVersion the write returned."""
        self.span.set_attribute(c.ACTION_AFTER, dumps(state))
        if resource_version is not None:
            self.span.set_attribute(c.ACTION_RV_AFTER, str(resource_version))
        self._after = True

    def analysis(self, spec: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
        """The analysis that should watch this action: one Argo Rollouts metric spec (or a list of
        them), as docs/analysis.md describes. Checked for shape here (ValueError naming the field);
        the guard checks the rest when it reads it."""
        self.span.set_attribute(c.ACTION_ANALYSIS, analysis_json(spec))

    def dry_run_ok(self) -> None:
        """A server-side dry-run of this write succeeded before it was sent."""
        self.span.set_attribute(c.ACTION_DRY_RUN, True)

    def status(self, status: str) -> None:
        self._status = _choice(status, c.ACTION_STATUSES, "action status")
        self.span.set_attribute(c.ACTION_STATUS, status)
        if status == "failed":
            self.span.set_status(Status(StatusCode.ERROR, "action failed"))


@dataclass
class _RunState:
    run_id: str
    incident_id: str | None
    agent_name: str
    span: trace.Span


# -- recorder --------------------------------------------------------------------------------


class Recorder:
    """Turns an agent's steps into spans on `provider` (the global TracerProvider if None).

    Every span started inside `run()` carries the run id, the incident id (once known) and the
    agent's name, so a store can group by them. `clock` (epoch seconds, e.g. a simulated clock's
    `now`) stamps start and end times; `seed` makes generated run, decision, action and tool-call
    ids reproducible. Both exist for replayable examples; live agents leave them unset.
    The current run and span travel in context variables: work handed to another thread sees
    them only when run inside a copy of the context (`contextvars.copy_context().run`).
    """

    def __init__(
        self,
        provider: trace.TracerProvider | None = None,
        agent_name: str = "reference-agent",
        agent_id: str | None = None,
        scenario: str | None = None,
        *,
        clock: Callable[[], float] | None = None,
        seed: int | None = None,
    ):
        self.provider = provider or trace.get_tracer_provider()
        from . import __version__

        self.tracer = self.provider.get_tracer(SCOPE_NAME, __version__)
        self.agent_name = agent_name
        self.agent_id = agent_id
        self.scenario = scenario
        self.clock = clock
        self._rng = random.Random(seed) if seed is not None else None
        self._run: contextvars.ContextVar[_RunState | None] = contextvars.ContextVar(f"afterfix_run_{id(self)}", default=None)
        # The incident whose block we are in: it names the incident of the spans inside, even
        # outside a run or when the run was started for another incident.
        self._incident: contextvars.ContextVar[str | None] = contextvars.ContextVar(
            f"afterfix_incident_{id(self)}", default=None)

    # -- plumbing --------------------------------------------------------------------------

    def _now(self) -> int | None:
        # Microseconds: what the store keeps, and all a float of epoch seconds holds exactly.
        return None if self.clock is None else int(round(self.clock() * 1e6)) * 1000

    def new_id(self, prefix: str) -> str:
        """A fresh id such as "dec-1f0c9a2b4d6e" (reproducible when the Recorder has a seed)."""
        if self._rng is not None:
            return f"{prefix}-{self._rng.getrandbits(48):012x}"
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    def _common(self) -> dict[str, Any]:
        state = self._run.get()
        attrs: dict[str, Any] = {}
        agent = state.agent_name if state else self.agent_name
        if agent:
            attrs[c.GENAI_AGENT_NAME] = agent
        if self.agent_id:
            attrs[c.GENAI_AGENT_ID] = self.agent_id
        if self.scenario:
            attrs[c.SCENARIO] = self.scenario
        if state is not None:
            attrs[c.RUN_ID] = state.run_id
        incident = self._incident.get() or (state.incident_id if state is not None else None)
        if incident:
            attrs[c.INCIDENT_ID] = incident
        return attrs

    @contextlib.contextmanager
    def _span(self, name: str, attrs: Mapping[str, Any], kind: SpanKind = SpanKind.INTERNAL,
              on_error: Callable[[], None] | None = None) -> Iterator[trace.Span]:
        """Start a child of the current span, make it current, end it on exit.

        An exception marks the span ERROR with error.type and an exception event, runs
        `on_error`, and propagates.
        """
        attributes = {**self._common(), **{k: v for k, v in attrs.items() if v is not None}}
        span = self.tracer.start_span(name, kind=kind, attributes=attributes, start_time=self._now())
        try:
            with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
                yield span
        except BaseException as e:
            if isinstance(e, Exception):
                self._fail(span, e)
                if on_error is not None:
                    on_error()
            raise
        finally:
            span.end(end_time=self._now())

    def _fail(self, span: trace.Span, error: BaseException | str, error_type: str | None = None) -> None:
        if isinstance(error, BaseException):
            span.record_exception(error, timestamp=self._now())
            span.set_attribute(c.ERROR_TYPE, error_type or _error_type(error))
            span.set_status(Status(StatusCode.ERROR, str(error)))
        else:
            span.set_attribute(c.ERROR_TYPE, error_type or "_OTHER")  # GenAI/OTel fallback value
            span.set_status(Status(StatusCode.ERROR, str(error)))

    def _instant(self, name: str, attrs: Mapping[str, Any]) -> trace.Span:
        with self._span(name, attrs) as span:
            return span

    # -- runs and incidents ----------------------------------------------------------------

    @contextlib.contextmanager
    def run(self, run_id: str | None = None, incident_id: str | None = None,
            agent_name: str | None = None,
            tool_definitions: Sequence[Mapping[str, Any]] | None = None) -> Iterator[RunHandle]:
        """One agent run: an "invoke_agent <agent>" span that every step inside is a child of.

        `tool_definitions` are the tools the agent may call, as GenAI tool definitions
        (`{"type": "function", "name": ..., "parameters": <JSON schema>}`), recorded as
        gen_ai.tool.definitions so a review can check each call against them.
        """
        agent = agent_name or self.agent_name
        state = _RunState(run_id or self.new_id("run"), incident_id, agent, trace.INVALID_SPAN)
        token = self._run.set(state)
        try:
            attrs = {
                c.GENAI_OPERATION: "invoke_agent",
                c.GENAI_CONVERSATION_ID: state.run_id,
                c.GENAI_TOOL_DEFINITIONS: _definitions(tool_definitions),
            }
            with self._span(f"invoke_agent {agent}", attrs) as span:
                state.span = span
                yield RunHandle(self, span, state)
        finally:
            self._run.reset(token)

    @contextlib.contextmanager
    def incident(self, incident_id: str, title: str, severity: str = "high", service: str | None = None,
                 status: str = "open") -> Iterator[IncidentHandle]:
        """The incident this run works on; the run and every later span get its id."""
        _choice(severity, c.INCIDENT_SEVERITIES, "incident severity")
        _choice(status, c.INCIDENT_STATUSES, "incident status")
        state = self._run.get()
        if state is not None and not state.incident_id:
            state.incident_id = incident_id
            if state.span.is_recording():
                state.span.set_attribute(c.INCIDENT_ID, incident_id)
        attrs = {
            c.SPAN_KIND: "incident",
            c.INCIDENT_ID: incident_id,
            c.INCIDENT_TITLE: title,
            c.INCIDENT_SEVERITY: severity,
            c.INCIDENT_SERVICE: service,
            c.INCIDENT_STATUS: status,
        }
        token = self._incident.set(incident_id)
        try:
            with self._span(f"incident {_short(title)}", attrs) as span:
                yield IncidentHandle(self, span)
        finally:
            self._incident.reset(token)

    def detection(self, signal: str, value: float, threshold: float, summary: str) -> None:
        """What was noticed: `signal` crossed `threshold` with `value`."""
        self._instant(f"detect {signal}", {
            c.SPAN_KIND: "detection",
            c.DETECTION_SIGNAL: signal,
            c.DETECTION_VALUE: float(value),
            c.DETECTION_THRESHOLD: float(threshold),
            c.DETECTION_SUMMARY: summary,
        })

    # -- GenAI steps ---------------------------------------------------------------------

    @contextlib.contextmanager
    def tool_call(self, name: str, arguments: Mapping[str, Any] | None = None, call_id: str | None = None,
                  tool_type: str = "function") -> Iterator[ToolCallHandle]:
        """An "execute_tool <name>" span with the GenAI tool attributes."""
        call_id = call_id or self.new_id("call")
        attrs = {
            c.GENAI_OPERATION: "execute_tool",
            c.GENAI_TOOL_NAME: name,
            c.GENAI_TOOL_CALL_ID: call_id,
            c.GENAI_TOOL_TYPE: tool_type,
            c.GENAI_TOOL_ARGUMENTS: dumps(dict(arguments or {})),
        }
        with self._span(f"execute_tool {name}", attrs) as span:
            yield ToolCallHandle(self, span, call_id)

    @contextlib.contextmanager
    def llm_call(self, model: str, provider: str = "none",
                 tool_definitions: Sequence[Mapping[str, Any]] | None = None) -> Iterator[LlmCallHandle]:
        """A "chat <model>" span (GenAI client span); `tool_definitions` as for `run()`."""
        attrs = {
            c.GENAI_OPERATION: "chat",
            c.GENAI_REQUEST_MODEL: model,
            c.GENAI_PROVIDER: provider,
            c.GENAI_TOOL_DEFINITIONS: _definitions(tool_definitions),
        }
        with self._span(f"chat {model}", attrs, kind=SpanKind.CLIENT) as span:
            yield LlmCallHandle(self, span)

    # -- decisions -----------------------------------------------------------------------

    def decision(
        self,
        question: str,
        options: Sequence[Option],
        selected: str | None,
        reason: str,
        policy: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        decision_id: str | None = None,
        sources: Mapping[str, str | Sequence[str]] | Sequence[str] | None = None,
        decider: str | None = None,
    ) -> str:
        """Record a choice between `options`; returns the decision id (pass it to `action()`).

        `sources` names the tool calls the inputs came from (their call ids, as a list, or by
        input key: `{"hpa": [call.call_id]}`); it is recorded inside the inputs under "sources".
        `decider` says what chose when no policy did (`"llm:<model>"`, after its `llm_call`).

        One "afterfix.option" span event per option carries its evidence, score, verdict and
        reason. Raises ValueError when the options contradict the selection: an unknown or
        duplicate id, a second "selected" verdict, or a rejected option without a reason.
        """
        verdicts = _verdicts(options, selected)
        if sources is not None:
            if inputs is not None and c.DECISION_INPUT_SOURCES in inputs:
                raise ValueError(f"inputs already have a {c.DECISION_INPUT_SOURCES!r} key: pass the call ids "
                                 "in one place, sources=... or inputs, not both")
            inputs = {**dict(inputs or {}), c.DECISION_INPUT_SOURCES: _sources(sources)}
        decision_id = decision_id or self.new_id("dec")
        attrs = {
            c.SPAN_KIND: "decision",
            c.DECISION_ID: decision_id,
            c.DECISION_QUESTION: question,
            c.DECISION_SELECTED: selected or "",
            c.DECISION_REASON: reason,
            c.DECISION_POLICY: policy,
            c.DECISION_DECIDER: decider,
            c.DECISION_INPUTS: dumps(dict(inputs)) if inputs is not None else None,
        }
        with self._span(f"decide: {_short(question)}", attrs) as span:
            for option, verdict in zip(options, verdicts):
                event = {
                    c.OPTION_ID: option.id,
                    c.OPTION_DESCRIPTION: option.description,
                    c.OPTION_ACTION: dumps(dict(option.action)) if option.action is not None else None,
                    c.OPTION_EVIDENCE: dumps([str(e) for e in option.evidence]),
                    c.OPTION_SCORE: float(option.score) if option.score is not None else None,
                    c.OPTION_VERDICT: verdict,
                    # The selected option's reason defaults to the decision's reason.
                    c.OPTION_REASON: option.reason or (reason if verdict == "selected" else None),
                }
                span.add_event(c.OPTION_EVENT, {k: v for k, v in event.items() if v is not None},
                               timestamp=self._now())
        return decision_id

    # -- actions ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def action(
        self,
        verb: str,
        target: Target,
        *,
        decision_id: str | None = None,
        trust_level: int = 3,
        mutating: bool = True,
        patch: Mapping[str, Any] | Sequence[Any] | None = None,
        field_manager: str | None = "afterfix-agent",
        action_id: str | None = None,
        analysis: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    ) -> Iterator[ActionHandle]:
        """Something done (or proposed) against production: "<verb> <kind> <namespace>/<name>".

        `analysis` is the metric spec that should watch it, as for `ActionHandle.analysis()`.

        The span records what the agent did even when that exceeds its trust level: reviewing
        that is the point. If the block raises, the span is marked ERROR with error.type, the
        status becomes "failed", and the exception propagates. If the block ends without a
        status and `after()` was recorded, the status is "applied".
        """
        if not verb:
            raise ValueError("action verb must be a non-empty string such as 'patch'")
        if type(trust_level) is not int or trust_level not in TRUST_LEVELS:
            raise ValueError(f"trust_level {trust_level!r} must be 1, 2, 3 or 4 ({'; '.join(f'{k} {v}' for k, v in TRUST_LEVELS.items())})")
        if not isinstance(target, Target):
            raise TypeError(f"target must be an afterfix.sdk.Target, not {type(target).__name__}")
        action_id = action_id or self.new_id("act")
        attrs = {
            c.SPAN_KIND: "action",
            c.ACTION_ID: action_id,
            c.ACTION_DECISION_ID: decision_id,
            c.ACTION_VERB: verb,
            c.ACTION_MUTATING: bool(mutating),
            c.TRUST_LEVEL: int(trust_level),
            c.ACTION_PATCH: dumps(patch) if patch is not None else None,
            c.ACTION_FIELD_MANAGER: field_manager,
            c.ACTION_ANALYSIS: analysis_json(analysis) if analysis is not None else None,
            **target.attributes(),
        }
        handle: ActionHandle | None = None

        def failed() -> None:
            if handle is not None:
                handle._status = "failed"
                handle.span.set_attribute(c.ACTION_STATUS, "failed")

        with self._span(f"{verb} {target.ref}", attrs, on_error=failed) as span:
            handle = ActionHandle(self, span, action_id)
            yield handle
            if handle._status is None and handle._after:
                handle.status("applied")

    def verification(self, action_id: str, outcome: str, signal: str, before: float, after: float) -> None:
        """Whether an action worked: `signal` went from `before` to `after`."""
        _choice(outcome, c.VERIFY_OUTCOMES, "verification outcome")
        self._instant(f"verify {signal}", {
            c.SPAN_KIND: "verification",
            c.VERIFY_ACTION_ID: action_id,
            c.VERIFY_OUTCOME: outcome,
            c.VERIFY_SIGNAL: signal,
            c.VERIFY_BEFORE: float(before),
            c.VERIFY_AFTER: float(after),
        })

    def approval(self, action_id: str, status: str = "requested", approver: str | None = None,
                 reason: str | None = None) -> None:
        """A request for (or answer to) a person's approval of an action at trust level 2."""
        _choice(status, c.APPROVAL_STATUSES, "approval status")
        self._instant(f"approval {status}", {
            c.SPAN_KIND: "approval",
            c.APPROVAL_ACTION_ID: action_id,
            c.APPROVAL_STATUS: status,
            c.APPROVAL_APPROVER: approver,
            c.APPROVAL_REASON: reason,
        })


# What each part of an analysis looks like, for the errors that refuse one.
_ANALYSIS_EXAMPLES = {
    "spec": '{"name": "latency-p95", "interval": "60s", "count": 5, "successCondition": "result < 300", '
            '"provider": {"afterfix": {"metric": "afterfix.workload.latency_p95_ms", '
            '"labels": {"k8s.namespace.name": "{{namespace}}", "k8s.deployment.name": "{{name}}"}}}}',
    "name": '"name": "latency-p95"',
    "provider": '"provider": {"afterfix": {"metric": "afterfix.workload.latency_p95_ms", '
                '"labels": {"k8s.namespace.name": "{{namespace}}", "k8s.deployment.name": "{{name}}"}}} '
                'or "provider": {"prometheus": {"query": "afterfix_workload_latency_p95_ms{namespace=\\"{{namespace}}\\"}"}}',
    "condition": '"successCondition": "result < 300" and/or "failureCondition": "result >= 500"',
}
ANALYSIS_PROVIDERS = ("afterfix", "prometheus")
ANALYSIS_CONDITIONS = ("successCondition", "failureCondition")


def analysis_json(spec: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str:
    """An action's analysis as the JSON text it is recorded as, after checking its shape.

    One metric spec (a JSON object) or a non-empty list of them. The SDK checks only the shape: a
    `name`, a `provider` holding exactly one of `afterfix` and `prometheus`, and at least one of
    `successCondition` and `failureCondition`, as strings; everything else (durations, limits,
    conditions, templates) is checked by `afterfix.undo.analysis.parse_analysis` where the guard
    reads it. Raises ValueError naming the field, with an example of what fits there.
    """
    if isinstance(spec, Mapping):
        items, where = [dict(spec)], ["analysis"]
    elif isinstance(spec, Sequence) and not isinstance(spec, (str, bytes)) and spec:
        items, where = list(spec), [f"analysis[{i}]" for i in range(len(spec))]
    else:
        raise ValueError(f"analysis must be a metric spec (a dict) or a non-empty list of them, not {_brief(spec)}; "
                         f"e.g. {_ANALYSIS_EXAMPLES['spec']}")
    for item, at in zip(items, where):
        _check_metric(item, at)
    try:
        # No default: a value JSON cannot hold is refused here, not written as its str().
        text = orjson.dumps(items[0] if isinstance(spec, Mapping) else items, option=orjson.OPT_SORT_KEYS)
    except TypeError as e:
        raise ValueError(f"analysis is not JSON ({e}): give dicts, lists, strings, numbers and booleans; "
                         f"e.g. {_ANALYSIS_EXAMPLES['spec']}") from None
    return text.decode()


def _check_metric(item: Any, at: str) -> None:
    if not isinstance(item, Mapping):
        raise ValueError(f"{at} must be a metric spec (a dict), not {_brief(item)}; e.g. {_ANALYSIS_EXAMPLES['spec']}")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{at}.name: {'is missing' if name is None else 'must be a non-empty string, not ' + _brief(name)}; "
                         f"e.g. {_ANALYSIS_EXAMPLES['name']}")
    provider = item.get("provider")
    if not isinstance(provider, Mapping):
        problem = "is missing" if provider is None else f"must be an object, not {_brief(provider)}"
        raise ValueError(f"{at}.provider: {problem}; e.g. {_ANALYSIS_EXAMPLES['provider']}")
    keys = list(provider)
    if len(keys) != 1 or keys[0] not in ANALYSIS_PROVIDERS:
        raise ValueError(f"{at}.provider: must hold exactly one of {' or '.join(ANALYSIS_PROVIDERS)}, "
                         f"not {', '.join(map(repr, keys)) or 'nothing'}; e.g. {_ANALYSIS_EXAMPLES['provider']}")
    if not isinstance(provider[keys[0]], Mapping):
        raise ValueError(f"{at}.provider.{keys[0]}: must be an object, not {_brief(provider[keys[0]])}; "
                         f"e.g. {_ANALYSIS_EXAMPLES['provider']}")
    present = [key for key in ANALYSIS_CONDITIONS if item.get(key) is not None]
    if not present:
        raise ValueError(f"{at}: needs successCondition or failureCondition (or both), or it watches nothing; "
                         f"e.g. {_ANALYSIS_EXAMPLES['condition']}")
    for key in present:
        if not isinstance(item[key], str) or not item[key].strip():
            raise ValueError(f"{at}.{key}: must be a condition in a string, not {_brief(item[key])}; "
                             f"e.g. {_ANALYSIS_EXAMPLES['condition']}")


def _brief(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _definitions(tools: Sequence[Mapping[str, Any]] | None) -> str | None:
    if tools is None:
        return None
    if isinstance(tools, (str, bytes, Mapping)) or not all(isinstance(t, Mapping) for t in tools):
        raise ValueError("tool_definitions must be a list of tool definitions (dicts such as "
                         '{"type": "function", "name": "get_hpa", "parameters": {...}})')
    return dumps([dict(t) for t in tools])


def _sources(sources: Mapping[str, Any] | Sequence[str]) -> dict[str, list[str]] | list[str]:
    """Decision sources as recorded: a list of call ids, or {input key: [call ids]}."""
    def ids(value: Any, where: str) -> list[str]:
        values = [value] if isinstance(value, str) else value
        if isinstance(values, (bytes, Mapping)) or not isinstance(values, Sequence) \
                or not all(isinstance(v, str) and v for v in values):
            raise ValueError(f"sources{where} must be a call id or a list of call ids (strings), not {value!r}")
        return list(values)

    if isinstance(sources, Mapping):
        return {str(k): ids(v, f"[{k!r}]") for k, v in sources.items()}
    return ids(sources, "")


def _verdicts(options: Sequence[Option], selected: str | None) -> list[str]:
    """Each option's verdict, after checking that the options agree with `selected`."""
    if not options:
        raise ValueError("a decision needs at least one option")
    ids = [o.id for o in options]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"option ids must be unique; repeated: {', '.join(dupes)}")
    if selected is not None and selected not in ids:
        raise ValueError(f"selected option {selected!r} is not among the options ({', '.join(ids)})")
    verdicts = []
    for o in options:
        default = "selected" if o.id == selected else "rejected"
        verdict = o.verdict or default
        _choice(verdict, c.OPTION_VERDICTS, f"option {o.id!r} verdict")
        if (verdict == "selected") != (o.id == selected):
            raise ValueError(
                f"option {o.id!r} has verdict {verdict!r} but the selected option is {selected!r}: "
                "only the selected option has verdict 'selected'"
            )
        if verdict == "rejected" and not o.reason:
            raise ValueError(f"option {o.id!r} is rejected without a reason: say why in Option(reason=...)")
        verdicts.append(verdict)
    return verdicts
