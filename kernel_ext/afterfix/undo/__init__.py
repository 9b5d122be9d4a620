"""Undoing agent actions: the action ledger, rollback plans and their checks, execution, and the guard.

    from afterfix.undo.kube import connect                   # the official client, fieldManager afterfix
    from afterfix.undo.ledger import action_ledger           # what changed, and what touched it since
    from afterfix.undo.plan import make_plan                 # the minimal inverse and every check, as data
    from afterfix.undo.rollback import rollback_action, rollback_decision   # dry-run, write, verify, record
    from afterfix.undo.guard import Guard                    # metric-gated automatic rollback
    from afterfix.undo.analysis import parse_analysis        # one Argo-style analysis per action
    from afterfix.undo.policy import load_policy             # analyses for actions that recorded none

Reads the store and the cluster; writes only its ledgers (rollbacks, analyses, alerts), the
rollbacks' own traces, and, after every check and a matching dry-run, the inverse patch.
docs/undo.md, docs/guard.md and docs/analysis.md say how.
"""
