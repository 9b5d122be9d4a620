"""`afterfix actions` and `afterfix rollback`: the action ledger, and undoing one action safely.

    afterfix actions [--incident ID] [--format table|json|csv] [--kubeconfig PATH] [--context NAME]
    afterfix rollback ACTION_ID [--plan | --dry-run | --apply --reason TEXT] [--fields F,...]
                      [--override-drift --override-reason TEXT] [--format text|json]
    afterfix rollback --decision ID [--plan | --dry-run | --apply --reason TEXT]

Exit codes (docs/cli.md): 0 planned, done, or nothing to do; 1 refused by a check, or the
dry-run or the verification failed (nothing is left half-written); 2 usage; 3 the record cannot
be planned from (unknown id, unknown kind, no before-state); 4 the cluster cannot be reached or
the account may not do it; 5 `--decision` stopped part-way (some actions were rolled back).
"""

from __future__ import annotations

import getpass
import json
import os
import sys

from afterfix.cli import UsageError, safe

ENV_USER = "AFTERFIX_USER"


def register(subparsers) -> None:
    from afterfix.cli import _cluster_options, _store_option

    p = subparsers.add_parser(
        "actions", help="the action ledger: every change the agent made, and what touched the same object later",
        description="List every production-changing action: its target (uid, kind, namespace, name), before and "
                    "after state, resourceVersions, field manager, the decision it served, and every later action "
                    "on the same object (the agent's own, afterfix rollbacks, and with --kubeconfig other writers "
                    "read live from managedFields).")
    _store_option(p)
    p.add_argument("--incident", default=None, metavar="ID", help="only this incident's actions")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format (default: table)")
    _cluster_options(p)
    p.set_defaults(func=cmd_actions)

    p = subparsers.add_parser(
        "rollback", help="plan, dry-run or apply the undo of one agent action (or all of one decision's)",
        description="Undo one agent action safely: only the fields it changed, checked against the live object "
                    "(same uid, three-way drift, bundled changes, later actions, kind rules), dry-run on the "
                    "server first, written with a resourceVersion precondition, verified, and recorded in the "
                    "rollbacks ledger and as its own trace. Without --dry-run or --apply it shows the plan.")
    _store_option(p)
    p.add_argument("action_id", nargs="?", metavar="ACTION_ID", help="the action to undo (`afterfix actions` lists them)")
    p.add_argument("--decision", default=None, metavar="ID",
                   help="undo every applied action of this decision, newest first, stopping at the first failure")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--plan", action="store_true", help="show the plan and its checks; change nothing (the default)")
    mode.add_argument("--dry-run", action="store_true", help="also run the server-side dry-run; change nothing")
    mode.add_argument("--apply", action="store_true", help="dry-run, then write the inverse (needs --reason)")
    p.add_argument("--reason", default=None, metavar="TEXT", help="why: recorded with the rollback (required with --apply)")
    p.add_argument("--fields", action="append", default=None, metavar="F[,F...]",
                   help="restore only these fields of the action (a path, or its last names: DB_POOL_SIZE, "
                        "env.DB_POOL_SIZE, maxReplicas); repeatable")
    p.add_argument("--override-drift", action="store_true",
                   help="restore fields even though someone changed them since the agent (needs --override-reason)")
    p.add_argument("--override-reason", default=None, metavar="TEXT", help="why overwriting the later change is right")
    p.add_argument("--who", default=None, metavar="NAME", help=f"who asks (default: ${ENV_USER}, else the login name)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    _cluster_options(p)
    p.set_defaults(func=cmd_rollback)


# -- actions ---------------------------------------------------------------------------------------


def cmd_actions(args) -> int:
    from afterfix.cli import EXIT_OK, _store, format_table

    cluster = _connect(args) if args.kubeconfig or args.context else None
    entries = _ledger(_store(args), args.incident, cluster)
    if args.format == "json":
        json.dump(entries, sys.stdout, ensure_ascii=False, default=str)
        sys.stdout.write("\n")
        return EXIT_OK
    import pandas as pd

    rows = [{"action_id": e["action_id"], "time": (e["time"] or "")[:19], "agent": e["agent"], "verb": e["verb"],
             "status": e["status"], "target": f"{e['target_kind']} {e['target_namespace']}/{e['target_name']}",
             "uid": e["target_uid"], "rv": f"{e['resource_version_before'] or '-'}→{e['resource_version_after'] or '-'}",
             "manager": e["field_manager"], "decision_id": e["decision_id"],
             "before": json.dumps(e["before"], ensure_ascii=False) if e["before"] is not None else None,
             "after": json.dumps(e["after"], ensure_ascii=False) if e["after"] is not None else None,
             "later": "; ".join(f"{x['kind']} {x['id'] or x['who']} {x['verb']} {(x['time'] or '')[:19]}"
                                for x in e["later"]) or None} for e in entries]
    frame = pd.DataFrame(rows)
    if args.format == "csv":
        frame.to_csv(sys.stdout, index=False)
        return EXIT_OK
    if frame.empty:
        sys.stdout.write("no production-changing actions in the store" + (f" for incident {args.incident}" if args.incident else "") + "\n")
        return EXIT_OK
    sys.stdout.write(format_table(frame) + "\n")
    return EXIT_OK


def _ledger(store, incident, cluster):
    from afterfix.undo.ledger import action_ledger

    return action_ledger(store, incident=incident, cluster=cluster)


# -- rollback --------------------------------------------------------------------------------------


def _connect(args):
    from afterfix.undo.kube import connect

    return connect(kubeconfig=args.kubeconfig, context=args.context)


def _fields(values):
    if not values:
        return None
    out = [f.strip() for v in values for f in v.split(",") if f.strip()]
    if not out:
        raise UsageError("--fields needs at least one field name, e.g. --fields DB_POOL_SIZE")
    return out


def cmd_rollback(args) -> int:
    from afterfix.cli import _store
    from afterfix.undo.kube import ClusterUnreachable, Forbidden
    from afterfix.undo.plan import PlanError, make_plan
    from afterfix.undo.rollback import EXIT_CODES, rollback_action, rollback_decision

    if bool(args.action_id) == bool(args.decision):
        raise UsageError("give one ACTION_ID, or --decision ID (`afterfix actions` lists both)")
    if args.apply and not (args.reason or "").strip():
        raise UsageError("--apply needs --reason TEXT: why this change is being undone (it is recorded)")
    if args.override_drift and not (args.override_reason or "").strip():
        raise UsageError("--override-drift needs its own --override-reason TEXT: why overwriting the later change is right")
    if args.override_reason and not args.override_drift:
        raise UsageError("--override-reason is only used with --override-drift")
    if args.decision and args.fields:
        raise UsageError("--fields chooses fields of one action; it cannot be used with --decision")
    fields = _fields(args.fields)
    store = _store(args)
    who = args.who or os.environ.get(ENV_USER) or getpass.getuser()
    try:
        cluster = _connect(args)
    except (ClusterUnreachable, Forbidden) as e:
        return _fail(args, str(e), EXIT_CODES["cluster"])
    try:
        if not (args.apply or args.dry_run):
            if args.decision:
                return _plan_decision(args, store, cluster)
            try:
                plan = make_plan(store, cluster, args.action_id, fields=fields, override_drift=args.override_drift)
            except PlanError as e:
                return _fail(args, str(e), e.exit_code)
            except (ClusterUnreachable, Forbidden) as e:
                return _fail(args, str(e), EXIT_CODES["cluster"])
            _print(args, plan.to_dict(), format_plan(plan))
            return EXIT_CODES["refused"] if plan.outcome == "refused" else 0
        kw = {"who": who, "reason": args.reason, "dry_run": args.dry_run,
              "override_drift_reason": args.override_reason if args.override_drift else None}
        if args.decision:
            res = rollback_decision(store, cluster, args.decision, **kw)
            _print(args, res.to_dict(), "\n\n".join([format_result(r) for r in res.results] + [safe(res.message)]))
            return res.exit_code
        result = rollback_action(store, cluster, args.action_id, fields=fields, **kw)
        _print(args, result.to_dict(), format_result(result))
        return result.exit_code
    finally:
        cluster.close()


def _plan_decision(args, store, cluster) -> int:
    from afterfix.undo.plan import PlanError, make_plan

    rows = store.query("""SELECT action_id FROM actions WHERE decision_id = ? AND mutating AND status = 'applied'
                          ORDER BY start_time DESC""", [args.decision])
    if rows.empty:
        return _fail(args, f"decision {args.decision!r} has no applied actions in the store: `afterfix actions` "
                           "lists actions with their decisions", 3)
    plans, texts, code = [], [], 0
    for action_id in dict.fromkeys(rows["action_id"]):
        try:
            plan = make_plan(store, cluster, action_id)
        except PlanError as e:
            texts.append(safe(f"{action_id}: {e}"))
            code = code or e.exit_code
            continue
        plans.append(plan.to_dict())
        texts.append(format_plan(plan))
        code = code or (1 if plan.outcome == "refused" else 0)
    _print(args, {"decision_id": args.decision, "plans": plans}, "\n\n".join(texts))
    return code


def _fail(args, message: str, code: int) -> int:
    if args.format == "json":
        json.dump({"outcome": "refused", "message": message, "exit_code": code}, sys.stdout)
        sys.stdout.write("\n")
    sys.stderr.write(f"afterfix rollback: {safe(message)}\n")
    return code


def _print(args, data, text: str) -> None:
    if args.format == "json":
        json.dump(data, sys.stdout, ensure_ascii=False, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text.rstrip() + "\n")


MARK = {"pass": "ok  ", "info": "info", "warn": "WARN", "block": "STOP"}


def _value(v) -> str:
    if v is None:
        return "(absent)"
    return safe(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False), newlines=False)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_plan(plan) -> str:
    """The plan as a person reads it at 7am: what changes, what stays, every check, the patch."""
    t = plan.target
    a = plan.action
    lines = [safe(f"Rollback plan for {a['action_id']}: {a.get('verb')} {t['kind']} {t['namespace']}/{t['name']} "
                  f"by {a.get('agent_name')} at {str(a.get('start_time'))[:19]} (decision {a.get('decision_id')})"),
             f"  => {safe(plan.summary)}", ""]
    if plan.fields:
        lines.append(f"  {'':<16} {'field':<26} {'before':<15} {'agent set':<15} {'now':<15}")
        for f in plan.fields:
            if f.state == "server-managed":
                what = "not written"
            elif f.restore:
                what = "RESTORE"
            elif f.state == "already restored":
                what = "already restored"
            else:
                what = "stays"
            owner = f" (now owned by {f.owner})" if f.owner and f.state == "drifted" else ""
            lines.append(safe(f"  {what:<16} {_cut(f.label, 26):<26} {_cut(_value(f.before), 15):<15} "
                              f"{_cut(_value(f.agent_after), 15):<15} {_cut(_value(f.now), 15):<15} {f.state}{owner}",
                              newlines=False))
        lines.append("")
    lines.append("  checks")
    for c in plan.checks:
        lines.append(safe(f"  [{MARK.get(c.status, c.status)}] {c.name}: {c.summary}"))
    if plan.patch:
        lines += ["", f"  inverse ({'delete with preconditions' if plan.method == 'delete' else 'strategic merge patch, fieldManager afterfix'}):",
                  "  " + safe(json.dumps(plan.patch, ensure_ascii=False))]
    if plan.outcome == "ready":
        lines += ["", f"  next: afterfix rollback {a['action_id']} --dry-run, then --apply --reason TEXT"]
    return "\n".join(lines)


def format_result(result) -> str:
    head = safe(f"{result.action_id}: {result.outcome}: {result.message}")
    if result.plan is None or result.outcome in ("rolled_back",):
        tail = f"\n  recorded as {result.rollback_id} in the rollbacks ledger" if result.rollback_id else ""
        if result.trace_id:
            tail += f"; trace {result.trace_id}"
        return head + tail
    return head + "\n\n" + format_plan(result.plan)
