"""The afterfix.* attribute and event convention: the keys, in one place.

OpenTelemetry's GenAI conventions describe agents, LLM calls and tool calls, not choices.
These keys let any OTel-instrumented agent record a decision point (the question, every
option with its evidence, score and verdict) and a production-changing action (target,
before/after, resourceVersions, trust level, the analysis that should watch it).
`traces/SCHEMA.md` documents each key; `afterfix.sdk` emits exactly these; `ingest` maps them
onto columns and views.
"""

# --- every span ---------------------------------------------------------------
SPAN_KIND = "afterfix.span.kind"  # one of SPAN_KINDS below
RUN_ID = "afterfix.run.id"  # one agent run (one investigation by one agent)
INCIDENT_ID = "afterfix.incident.id"  # the incident a run works on
SCENARIO = "afterfix.scenario"  # optional: which simulated scenario produced it

SPAN_KINDS = ("incident", "detection", "decision", "action", "verification", "approval")

# --- incident span (root of an incident's work) --------------------------------
INCIDENT_TITLE = "afterfix.incident.title"
INCIDENT_SEVERITY = "afterfix.incident.severity"  # critical | high | medium | low | info
INCIDENT_SERVICE = "afterfix.incident.service"  # namespace/name of the affected workload
INCIDENT_STATUS = "afterfix.incident.status"  # open | mitigated | resolved | escalated
INCIDENT_PAGED = "afterfix.incident.paged"  # list of strings: people or rotations paged

INCIDENT_SEVERITIES = ("critical", "high", "medium", "low", "info")
INCIDENT_STATUSES = ("open", "mitigated", "resolved", "escalated")

# --- detection span: what was noticed ------------------------------------------
DETECTION_SIGNAL = "afterfix.detection.signal"  # e.g. "latency_p95"
DETECTION_VALUE = "afterfix.detection.value"  # double
DETECTION_THRESHOLD = "afterfix.detection.threshold"  # double
DETECTION_SUMMARY = "afterfix.detection.summary"  # one sentence

# --- decision span: a choice between options -------------------------------------
DECISION_ID = "afterfix.decision.id"
DECISION_QUESTION = "afterfix.decision.question"  # the anomaly or question being decided
DECISION_SELECTED = "afterfix.decision.selected"  # option id that was chosen ("" if none)
DECISION_REASON = "afterfix.decision.reason"  # why the selected option won
DECISION_POLICY = "afterfix.decision.policy"  # name of the decision function (for replay)
DECISION_INPUTS = "afterfix.decision.inputs"  # JSON: the recorded observations it decided on
DECISION_DECIDER = "afterfix.decision.decider"  # what chose when no policy did: "llm:<model>" (its chat span precedes it)

# One span event per option considered, on the decision span.
OPTION_EVENT = "afterfix.option"
OPTION_ID = "afterfix.option.id"
OPTION_DESCRIPTION = "afterfix.option.description"
OPTION_ACTION = "afterfix.option.action"  # JSON: what it would change
OPTION_EVIDENCE = "afterfix.option.evidence"  # JSON list of strings
OPTION_SCORE = "afterfix.option.score"  # double, higher is better
OPTION_VERDICT = "afterfix.option.verdict"  # selected | rejected | considered
OPTION_REASON = "afterfix.option.reason"  # why selected / why rejected

OPTION_VERDICTS = ("selected", "rejected", "considered")

# Inside afterfix.decision.inputs: the tool calls the inputs came from (their gen_ai.tool.call.id),
# as a list, or as an object {input key: call id or list of call ids}. Policies ignore it.
DECISION_INPUT_SOURCES = "sources"

# --- tool call span (gen_ai.operation.name = execute_tool) --------------------------
TOOL_INVALID = "afterfix.tool.invalid"  # string: why the call is known to be wrong (set by the agent or a guard)

# --- action span: something done (or proposed) against production ----------------
ACTION_ID = "afterfix.action.id"
ACTION_DECISION_ID = "afterfix.action.decision_id"  # the decision that chose it
ACTION_VERB = "afterfix.action.verb"  # patch | scale | rollback | restart | create | delete | get | list
ACTION_MUTATING = "afterfix.action.mutating"  # bool: false for read-only calls
ACTION_STATUS = "afterfix.action.status"  # see ACTION_STATUSES
ACTION_PATCH = "afterfix.action.patch"  # JSON: the patch sent
ACTION_BEFORE = "afterfix.action.before"  # JSON: the touched fields before
ACTION_AFTER = "afterfix.action.after"  # JSON: the touched fields after
ACTION_RV_BEFORE = "afterfix.action.resource_version.before"
ACTION_RV_AFTER = "afterfix.action.resource_version.after"
ACTION_DRY_RUN = "afterfix.action.dry_run"  # bool: a server-side dry-run preceded the write
ACTION_FIELD_MANAGER = "afterfix.action.field_manager"
# JSON: the analysis that should watch it (an Argo Rollouts metric spec, or a list of them; docs/analysis.md)
ACTION_ANALYSIS = "afterfix.action.analysis"
TRUST_LEVEL = "afterfix.trust.level"  # int 1..4
TRUST_RULE = "afterfix.trust.rule"  # the trust policy rule that gave the level (absent: the policy's default)
TRUST_POLICY = "afterfix.trust.policy"  # the trust policy file the level came from (absent: a fixed level)
LABELS_PREFIX = "afterfix.labels."  # afterfix.labels.<name>: a label trust policy rules can match (string)

ACTION_STATUSES = ("applied", "recommended", "awaiting_approval", "approved", "denied", "failed", "dry_run")

TARGET_UID = "afterfix.target.uid"
TARGET_KIND = "afterfix.target.kind"
TARGET_API_VERSION = "afterfix.target.api_version"
TARGET_NAMESPACE = "afterfix.target.namespace"
TARGET_NAME = "afterfix.target.name"

# --- verification span: did it work ---------------------------------------------
VERIFY_ACTION_ID = "afterfix.verification.action_id"
VERIFY_OUTCOME = "afterfix.verification.outcome"  # success | failure | inconclusive
VERIFY_SIGNAL = "afterfix.verification.signal"
VERIFY_BEFORE = "afterfix.verification.before"  # double
VERIFY_AFTER = "afterfix.verification.after"  # double

VERIFY_OUTCOMES = ("success", "failure", "inconclusive")

# --- approval span: a Level 2 request waiting for a person -------------------------
APPROVAL_ACTION_ID = "afterfix.approval.action_id"
APPROVAL_STATUS = "afterfix.approval.status"  # requested | approved | denied | expired
APPROVAL_APPROVER = "afterfix.approval.approver"  # who approved or denied (absent while requested)
APPROVAL_REASON = "afterfix.approval.reason"  # why approved, denied or expired

APPROVAL_STATUSES = ("requested", "approved", "denied", "expired")

# --- GenAI / OpenInference keys the ingest maps (not ours; listed for one place) ----
GENAI_OPERATION = "gen_ai.operation.name"
GENAI_AGENT_NAME = "gen_ai.agent.name"
GENAI_AGENT_ID = "gen_ai.agent.id"
GENAI_CONVERSATION_ID = "gen_ai.conversation.id"
GENAI_TOOL_NAME = "gen_ai.tool.name"
GENAI_TOOL_CALL_ID = "gen_ai.tool.call.id"
GENAI_TOOL_ARGUMENTS = "gen_ai.tool.call.arguments"
GENAI_TOOL_RESULT = "gen_ai.tool.call.result"
GENAI_TOOL_TYPE = "gen_ai.tool.type"
GENAI_TOOL_DEFINITIONS = "gen_ai.tool.definitions"  # JSON array: the tools the agent or model was given
GENAI_INPUT_MESSAGES = "gen_ai.input.messages"  # JSON array: the messages a model call read
GENAI_OUTPUT_MESSAGES = "gen_ai.output.messages"  # JSON array: the messages it answered with
GENAI_SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"  # JSON array of parts: the instructions given apart from the chat
GENAI_REQUEST_SEED = "gen_ai.request.seed"  # int: the seed sent with the request
GENAI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"  # double
GENAI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"  # list of strings, one per output message
GENAI_REQUEST_MODEL = "gen_ai.request.model"
GENAI_RESPONSE_MODEL = "gen_ai.response.model"
GENAI_PROVIDER = "gen_ai.provider.name"
GENAI_SYSTEM_OLD = "gen_ai.system"
GENAI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GENAI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
ERROR_TYPE = "error.type"

# Message part types of gen_ai.input.messages / gen_ai.output.messages / gen_ai.system_instructions.
GENAI_PART_TYPES = ("text", "tool_call", "tool_call_response")
GENAI_ROLES = ("system", "user", "assistant", "tool")

OI_SPAN_KIND = "openinference.span.kind"
OI_TOOL_NAME = "tool.name"
OI_TOOL_PARAMETERS = "tool.parameters"
OI_TOOL_CALL_ID = "tool_call.id"
OI_TOOL_CALL_ARGUMENTS = "tool_call.function.arguments"
OI_SESSION_ID = "session.id"
OI_AGENT_NAME = "agent.name"
OI_MODEL_NAME = "llm.model_name"
OI_PROVIDER = "llm.provider"
OI_PROMPT_TOKENS = "llm.token_count.prompt"
OI_COMPLETION_TOKENS = "llm.token_count.completion"
OI_INPUT_VALUE = "input.value"
OI_OUTPUT_VALUE = "output.value"

# OpenInference span kinds onto GenAI operation names.
OI_KIND_TO_OPERATION = {
    "AGENT": "invoke_agent",
    "TOOL": "execute_tool",
    "LLM": "chat",
    "CHAIN": "invoke_workflow",
    "RETRIEVER": "retrieve",
    "EMBEDDING": "embeddings",
    "RERANKER": "rerank",
    "GUARDRAIL": "guardrail",
    "EVALUATOR": "evaluate",
}
