"""Span attributes onto the hot columns of `spans`.

Agents speak three dialects: the OpenTelemetry GenAI conventions (current, and the older
`gen_ai.system` era that named token counts `gen_ai.usage.prompt_tokens`/`completion_tokens`),
OpenInference, and afterfix's own `afterfix.*` convention. Each column takes the first key present:

    operation      gen_ai.operation.name, else openinference.span.kind via OI_KIND_TO_OPERATION
    afterfix_kind  afterfix.span.kind
    run_id         afterfix.run.id, gen_ai.conversation.id, session.id, else the trace id
    incident_id    afterfix.incident.id
    agent_name     gen_ai.agent.name, agent.name
    tool_name      gen_ai.tool.name, tool.name
    tool_call_id   gen_ai.tool.call.id, tool_call.id
    decision_id    afterfix.decision.id, afterfix.action.decision_id
    action_id      afterfix.action.id
    model          gen_ai.request.model, gen_ai.response.model, llm.model_name
    input_tokens   gen_ai.usage.input_tokens, gen_ai.usage.prompt_tokens, llm.token_count.prompt
    output_tokens  gen_ai.usage.output_tokens, gen_ai.usage.completion_tokens, llm.token_count.completion
    error_type     error.type

`run_id` and `incident_id` also read the resource: for each key in turn, the span's attributes
first, then the resource's (so a resource's afterfix.run.id wins over a span's session.id).
Id columns turn numbers and booleans into text (run id 42 becomes "42"); token counts accept
integers and integer strings. Anything else leaves the column null: a strange value never
refuses a span, and the full attributes stay in `attributes`.
"""

from __future__ import annotations

from .. import convention as c

HOT_COLUMNS = (
    "operation", "afterfix_kind", "run_id", "incident_id", "agent_name", "tool_name",
    "tool_call_id", "decision_id", "action_id", "model", "input_tokens", "output_tokens",
    "error_type",
)  # fmt: skip
"""The columns `hot_columns` fills, in `schema.SPAN_COLUMNS` order."""

_RUN_KEYS = (c.RUN_ID, c.GENAI_CONVERSATION_ID, c.OI_SESSION_ID)
# Token counts before GenAI conventions 1.27 renamed them to input/output tokens.
GENAI_PROMPT_TOKENS_OLD = "gen_ai.usage.prompt_tokens"
GENAI_COMPLETION_TOKENS_OLD = "gen_ai.usage.completion_tokens"
_OI_OPS = c.OI_KIND_TO_OPERATION

HOT_KEYS = (
    (c.GENAI_OPERATION,),  # else openinference.span.kind through OI_KIND_TO_OPERATION
    (c.SPAN_KIND,),
    _RUN_KEYS,  # each key in the attributes, then in the resource
    (c.INCIDENT_ID,),  # the attributes, then the resource
    (c.GENAI_AGENT_NAME, c.OI_AGENT_NAME),
    (c.GENAI_TOOL_NAME, c.OI_TOOL_NAME),
    (c.GENAI_TOOL_CALL_ID, c.OI_TOOL_CALL_ID),
    (c.DECISION_ID, c.ACTION_DECISION_ID),
    (c.ACTION_ID,),
    (c.GENAI_REQUEST_MODEL, c.GENAI_RESPONSE_MODEL, c.OI_MODEL_NAME),
    (c.GENAI_INPUT_TOKENS, GENAI_PROMPT_TOKENS_OLD, c.OI_PROMPT_TOKENS),
    (c.GENAI_OUTPUT_TOKENS, GENAI_COMPLETION_TOKENS_OLD, c.OI_COMPLETION_TOKENS),
    (c.ERROR_TYPE,),
)
"""Each hot column's keys in the order `hot_columns` reads them: what the compiled decoder
(`_otlpjson`) is set up with. A test checks the two agree."""
_INT64 = 1 << 63


def as_text(v) -> str | None:
    """A scalar attribute value as column text (numbers and booleans spelled out), else None."""
    cls = v.__class__
    if cls is str:
        return v or None
    if cls is int or cls is float:
        return str(v)
    if cls is bool:
        return "true" if v else "false"
    return None


def _count(v) -> int | None:
    cls = v.__class__
    if cls is int:
        return v if -_INT64 <= v < _INT64 else None
    if cls is float:
        return int(v) if v.is_integer() and abs(v) < _INT64 else None
    if cls is str:
        s = v.strip()
        if s.isascii() and (s.isdigit() or (s[:1] == "-" and s[1:].isdigit())):
            n = int(s)
            return n if -_INT64 <= n < _INT64 else None
    return None


def hot_columns(attrs: dict, resource: dict, trace_id: str) -> tuple:
    """The values of `HOT_COLUMNS` for one span, from its attributes and its resource's."""
    g = attrs.get

    op = g(c.GENAI_OPERATION)
    op = None if op is None else op if op.__class__ is str and op else as_text(op)
    if op is None:
        k = g(c.OI_SPAN_KIND)
        if k.__class__ is str:
            op = _OI_OPS.get(k) or _OI_OPS.get(k.upper())

    run = None
    for key in _RUN_KEYS:
        run = g(key)
        if run is None:
            run = resource.get(key)
        if run is not None:
            run = run if run.__class__ is str and run else as_text(run)
            if run is not None:
                break
    if run is None:
        run = trace_id

    inc = g(c.INCIDENT_ID)
    if inc is None:
        inc = resource.get(c.INCIDENT_ID)
    agent = g(c.GENAI_AGENT_NAME)
    if agent is None:
        agent = g(c.OI_AGENT_NAME)
    tool = g(c.GENAI_TOOL_NAME)
    if tool is None:
        tool = g(c.OI_TOOL_NAME)
    call = g(c.GENAI_TOOL_CALL_ID)
    if call is None:
        call = g(c.OI_TOOL_CALL_ID)
    decision = g(c.DECISION_ID)
    if decision is None:
        decision = g(c.ACTION_DECISION_ID)
    model = g(c.GENAI_REQUEST_MODEL)
    if model is None:
        model = g(c.GENAI_RESPONSE_MODEL)
        if model is None:
            model = g(c.OI_MODEL_NAME)
    tin = g(c.GENAI_INPUT_TOKENS)
    if tin is None:
        tin = g(GENAI_PROMPT_TOKENS_OLD)
        if tin is None:
            tin = g(c.OI_PROMPT_TOKENS)
    tout = g(c.GENAI_OUTPUT_TOKENS)
    if tout is None:
        tout = g(GENAI_COMPLETION_TOKENS_OLD)
        if tout is None:
            tout = g(c.OI_COMPLETION_TOKENS)
    kind, action, err = g(c.SPAN_KIND), g(c.ACTION_ID), g(c.ERROR_TYPE)

    # Most keys are absent on most spans: test for None before paying for a call.
    return (
        op,
        None if kind is None else kind if kind.__class__ is str and kind else as_text(kind),
        run,
        None if inc is None else inc if inc.__class__ is str and inc else as_text(inc),
        None if agent is None else agent if agent.__class__ is str and agent else as_text(agent),
        None if tool is None else tool if tool.__class__ is str and tool else as_text(tool),
        None if call is None else call if call.__class__ is str and call else as_text(call),
        None if decision is None else decision if decision.__class__ is str and decision else as_text(decision),
        None if action is None else action if action.__class__ is str and action else as_text(action),
        None if model is None else model if model.__class__ is str and model else as_text(model),
        None if tin is None else tin if tin.__class__ is int and -_INT64 <= tin < _INT64 else _count(tin),
        None if tout is None else tout if tout.__class__ is int and -_INT64 <= tout < _INT64 else _count(tout),
        None if err is None else err if err.__class__ is str and err else as_text(err),
    )
