"""Every error afterfix raises on purpose, in one hierarchy:

    AfterfixError
    ├── StoreError            the store cannot be opened, attached or written (a team store's
    │                         catalog, bucket or configuration file included)
    │   └── StoreBusy         still locked by other processes after every retry
    ├── DecodeError           a whole input cannot be read (garbage body, wrong content type)
    ├── ConfigError           an option has a value that cannot work
    ├── NotFound              a run, incident or other id the store does not hold
    ├── ReadOnlyQuery         a query would write, and writing was not asked for
    ├── ingest.pull.PullError     Tempo or Jaeger unreachable or refusing (URL without credentials, status, reason)
    │   (undo, defined where they are raised:)
    ├── undo.kube.ClusterError    the Kubernetes API refused or could not be reached
    │   ├── ClusterUnreachable, Forbidden (names verb and resource), NotFound, Conflict, Rejected
    ├── undo.kube.UnknownKind     a kind afterfix cannot undo
    ├── undo.plan.PlanError       an action that cannot be planned from (unknown id, no before-state)
    ├── undo.conditions.ConditionError, EvaluationError   an analysis condition refused or not evaluable
    ├── undo.analysis.AnalysisError                        an analysis spec refused
    │   └── undo.policy.PolicyError                        a guard policy file refused (file and line)
    │   (review, defined where they are raised:)
    ├── review.deciders.NotReplayable   a decision no decider can re-make (unknown policy, no model messages)
    ├── review.whatif.EditError         a what-if path or value that does not fit the recorded inputs
    ├── review.endpoint.EndpointError   an OpenAI-compatible endpoint unreachable, refusing, or answering nonsense
    ├── review.approvals.ApprovalError  an approval request or decision refused (unknown id, no comment)
    ├── review.verdicts.VerdictError    a verdict refused (wrong without the option that should have been taken)
    │   (trust, defined where they are raised:)
    ├── trust.policy.TrustPolicyError   a trust policy file refused (file and line, and the fix)
    ├── trust.ladder.TrustError         a promotion above the cap, or a rule the policy does not have
    ├── trust.gentests.GenTestsError    an incident that cannot become a regression test
    └── trust.regression.RegressionError   a generated test's fixture or decider that cannot be used

Single refused records are not exceptions: decoders return them as `Refusal`s with the place
(file and line, or request and span) and the reason, and the rest of the input goes through.
Each message names the place and says what to do about it.
"""

from __future__ import annotations


class AfterfixError(Exception):
    """Base of every error afterfix raises on purpose."""


class StoreError(AfterfixError):
    """The store cannot be opened, attached or written."""


class StoreBusy(StoreError):
    """Other processes kept the store's catalog locked through every retry."""


class DecodeError(AfterfixError):
    """A whole input cannot be decoded; nothing from it was stored."""

    def __init__(self, message: str, *, status: int = 400):
        super().__init__(message)
        self.status = status  # the HTTP status the receiver answers with


class ConfigError(AfterfixError):
    """An option has a value that cannot work."""


class ReadOnlyQuery(AfterfixError):
    """A query would change the store, and writing was not asked for."""


class NotFound(AfterfixError):
    """An id (run, incident, ...) that the store does not hold; the message says how to list
    the ids it does hold."""
