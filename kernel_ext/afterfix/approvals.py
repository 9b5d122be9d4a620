"""Ask a person before a change, from any agent process that reaches the store (Level 2).

    from afterfix import approvals
    req = approvals.request(store, action_id=act.action_id, verb="create", target="Job/shop/orders-index",
                            change=manifest, summary="create index orders(customer_id)", agent="my-agent",
                            timeout_s=900, recorder=rec)
    if req.status == "approved": ...

`request` appends a `requested` row to the store's `approvals` ledger and waits until a person
approves or denies it (`afterfix approvals approve|deny`, or the ApprovalQueue widget) or until
`timeout_s` passes, when it appends `expired`. A request is decided once. The functions are
those of `afterfix.review.approvals`, re-exported here as the SDK's face.
"""

from afterfix.review.approvals import (DECISIONS, STATUSES, ApprovalError, Decided, Request, decide, get, open_request,
                                       request, requests, wait)

__all__ = ["DECISIONS", "STATUSES", "ApprovalError", "Decided", "Request", "decide", "get", "open_request", "request",
           "requests", "wait"]
