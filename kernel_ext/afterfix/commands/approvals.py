"""`afterfix approvals`: the approval queue from the shell (Level 2).

    afterfix approvals list [--status pending|approved|denied|expired|all] [--incident ID] [--format table|json]
    afterfix approvals approve REQUEST_ID --comment TEXT [--who NAME]
    afterfix approvals deny REQUEST_ID --comment TEXT [--who NAME]

Exit codes: 0 listed, or your decision was recorded; 3 someone decided first (or the request
expired): your decision was not recorded and the message says who decided and when; 2 usage, an
unknown request id, or a decision refused (no comment).
"""

from __future__ import annotations

import getpass
import json
import os
import sys

from afterfix.cli import UsageError, safe

ENV_USER = "AFTERFIX_USER"
EXIT_DECIDED_FIRST = 3
LIST_STATUSES = ("pending", "approved", "denied", "expired", "all")


def register(subparsers) -> None:
    from afterfix.cli import _store_option

    p = subparsers.add_parser(
        "approvals", help="list approval requests of agents at trust level 2, and approve or deny them",
        description="The approval queue: agents at trust level 2 ask before a change and wait. List the requests, "
                    "or approve or deny one with a comment (appended to the approvals ledger with who and when). "
                    "A request is decided once: if someone decided first, you are told who, and exit 3.",
        usage="afterfix approvals list [--status pending|approved|denied|expired|all] [--incident ID] "
              "[--format table|json]\n"
              "       afterfix approvals approve|deny REQUEST_ID --comment TEXT [--who NAME]")
    sub = p.add_subparsers(dest="approvals_command", metavar="list|approve|deny", required=True)
    lst = sub.add_parser("list", prog="afterfix approvals list", help="the requests: pending ones by default",
                         usage="afterfix approvals list [--status pending|approved|denied|expired|all] "
                               "[--incident ID] [--format table|json] [--store PATH]",
                         description="Approval requests, oldest first, with what each would do and its status.")
    _store_option(lst)
    lst.add_argument("--status", choices=LIST_STATUSES, default="pending",
                     help="which requests (default: pending, those an agent still waits on)")
    lst.add_argument("--incident", default=None, metavar="ID", help="only the requests of this incident")
    lst.add_argument("--format", choices=("table", "json"), default="table",
                     help="output format (default: table; json has the exact change asked for)")
    lst.set_defaults(func=cmd_list)
    for verb, decision in (("approve", "approved"), ("deny", "denied")):
        d = sub.add_parser(verb, prog=f"afterfix approvals {verb}", help=f"{verb} one pending request, with a comment",
                           usage=f"afterfix approvals {verb} REQUEST_ID --comment TEXT [--who NAME] [--format text|json] "
                                 "[--store PATH]",
                           description=f"{verb.capitalize()} one pending request. The comment is recorded with "
                                       "your name and the time, and shown to the agent's reviewers.")
        _store_option(d)
        d.add_argument("request_id", metavar="REQUEST_ID", help="the request (apr-...), from `afterfix approvals list`")
        d.add_argument("--comment", required=True, metavar="TEXT", help="why: required, recorded with the decision")
        d.add_argument("--who", default=None, metavar="NAME",
                       help=f"who decides (default: ${ENV_USER}, else the login name)")
        d.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
        d.set_defaults(func=cmd_decide, decision=decision)


def cmd_list(args) -> int:
    from afterfix.cli import EXIT_OK, _store, format_table
    from afterfix.review.approvals import requests

    found = requests(_store(args), status=args.status, incident_id=args.incident)
    if args.format == "json":
        json.dump([r.to_dict() for r in found], sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
        return EXIT_OK
    if not found:
        which = "" if args.status == "all" else f"{args.status} "
        where = f" for incident {safe(args.incident, newlines=False)}" if args.incident else ""
        sys.stdout.write(f"no {which}approval requests{where}\n")
        return EXIT_OK
    import pandas as pd

    def left(r) -> str:
        s = r.seconds_left()
        if s is None:
            return ""
        return "expired (agent gone?)" if s <= 0 else f"{int(s // 60)} min {int(s % 60)} s"

    frame = pd.DataFrame([{
        "request": r.request_id, "requested": r.requested_at.isoformat(sep=" ", timespec="seconds"),
        "agent": r.agent_name, "incident": r.incident_id, "summary": r.summary, "target": r.target,
        "status": r.status, "left": left(r), "by": r.decided_by,
        "decided": r.decided_at.isoformat(sep=" ", timespec="seconds") if r.decided_at else None,
        "comment": r.comment} for r in found])
    sys.stdout.write(format_table(frame))
    return EXIT_OK


def cmd_decide(args) -> int:
    from afterfix.cli import EXIT_OK, _store
    from afterfix.review.approvals import decide

    if not (args.comment or "").strip():
        raise UsageError(f"--comment: say why you {args.approvals_command} {safe(args.request_id, newlines=False)}")
    who = args.who or os.environ.get(ENV_USER) or getpass.getuser()
    done = decide(_store(args), args.request_id, args.decision, who, args.comment)
    if args.format == "json":
        json.dump({"stood": done.stood, "message": done.message, "request": done.request.to_dict()}, sys.stdout,
                  ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        out = sys.stdout if done.stood else sys.stderr
        out.write(safe(f"{done.request.request_id}: {done.message}", newlines=False) + "\n")
    return EXIT_OK if done.stood else EXIT_DECIDED_FIRST
