"""`afterfix trust`: the trust ladder from the shell.

    afterfix trust [--policy FILE] [--promote-after N] [--format table|json]
    afterfix trust promote RULE --reason TEXT [--who NAME]
    afterfix trust demote RULE --reason TEXT [--who NAME]
    afterfix trust refuse RULE --reason TEXT [--who NAME]

The first shows every rule of the trust policy: its level in the policy and now, its cap, its
track record, what afterfix suggests, and the history of changes. `promote` and `demote` move a
rule one level (accepting a suggestion, or on your own judgement); `refuse` turns down the rule's
current suggestion. Refusing is its own verb, not a flag of promote or demote, because it names no
level: it refuses whatever is suggested now, and the ledger row records which suggestion and the
track record it was made on, so "why is this rule still at 2?" has an answer. Each writes one row
to the `trust` ledger with who and why. Exit codes: 0 shown or recorded; 2 usage, an unknown rule,
or a change refused (above the cap, no reason, nothing to refuse).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys

from afterfix.cli import UsageError, safe

ENV_USER = "AFTERFIX_USER"


def register(subparsers) -> None:
    from afterfix.cli import _store_option
    from afterfix.trust.ladder import PROMOTE_AFTER

    p = subparsers.add_parser(
        "trust", help="the trust ladder: each rule's level, cap, track record and suggestion; promote, demote, refuse",
        description="The trust ladder. Each rule of the trust policy keeps a track record (verified successes, "
                    "rollbacks by people and by the guard, wrong verdicts); after --promote-after clean outcomes "
                    f"in a row (default {PROMOTE_AFTER}) a promotion is suggested, after a rollback or a wrong "
                    "verdict a demotion, never above the rule's cap. A person accepts (promote, demote) or "
                    "refuses (refuse) with a reason; every change is appended to the trust ledger.",
        usage="afterfix trust [--policy FILE] [--promote-after N] [--format table|json] [--store PATH]\n"
              "       afterfix trust promote|demote|refuse RULE --reason TEXT [--who NAME]")
    _common(p, argparse_default=False)
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="output format (default: table; json has every count and the history)")
    p.set_defaults(func=cmd_show)
    sub = p.add_subparsers(dest="trust_command", metavar="promote|demote|refuse")
    helps = {"promote": "move a rule up one level (never above its cap), with a reason",
             "demote": "move a rule down one level, with a reason",
             "refuse": "turn down the rule's current suggestion, with a reason; its level stays"}
    for verb, text in helps.items():
        d = sub.add_parser(verb, prog=f"afterfix trust {verb}", help=text,
                           usage=f"afterfix trust {verb} RULE --reason TEXT [--who NAME] [--policy FILE] "
                                 "[--promote-after N] [--format text|json] [--store PATH]",
                           description=text[0].upper() + text[1:] + ". Recorded in the trust ledger with your "
                                       "name, the time and the rule's track record.")
        d.add_argument("rule_id", metavar="RULE", help="the rule's id in the trust policy (see `afterfix trust`)")
        d.add_argument("--reason", required=True, metavar="TEXT", help="why: required, kept with the change")
        d.add_argument("--who", default=None, metavar="NAME",
                       help=f"who decides (default: ${ENV_USER}, else the login name)")
        _common(d, argparse_default=True)
        d.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
        d.set_defaults(func=cmd_decide, verb=verb)
    _store_option(p)


def _common(parser, *, argparse_default: bool) -> None:
    # On a subcommand the defaults are SUPPRESS, so `afterfix trust --policy F promote X` keeps F.
    from afterfix.trust.ladder import PROMOTE_AFTER

    none = argparse.SUPPRESS if argparse_default else None
    parser.add_argument("--policy", default=none, metavar="FILE",
                        help="trust policy file (default: $AFTERFIX_TRUST, else templates/trust.yaml)")
    parser.add_argument("--promote-after", type=int, default=argparse.SUPPRESS if argparse_default else PROMOTE_AFTER,
                        metavar="N", help=f"clean outcomes in a row that earn a promotion (default {PROMOTE_AFTER})")
    if argparse_default:
        parser.add_argument("--store", metavar="PATH", default=argparse.SUPPRESS,
                            help="store folder (default: $AFTERFIX_STORE, else traces/store)")


def _policy(args):
    from afterfix.trust.policy import load_policy

    return load_policy(getattr(args, "policy", None))


def cmd_show(args) -> int:
    from afterfix.cli import EXIT_OK, _store, format_table
    from afterfix.trust.ladder import ladder

    policy = _policy(args)
    rungs = ladder(_store(args), policy, promote_after=args.promote_after)
    if args.format == "json":
        json.dump({"policy": str(policy.source), "promote_after": args.promote_after,
                   "rules": [_rung_dict(r) for r in rungs]}, sys.stdout, ensure_ascii=False, default=str)
        sys.stdout.write("\n")
        return EXIT_OK
    import pandas as pd

    out = sys.stdout
    out.write(safe(f"trust ladder of {policy.source} (a promotion is suggested after {args.promote_after} clean "
                   "outcomes in a row; a rollback or a wrong verdict suggests a demotion)", newlines=False) + "\n\n")
    frame = pd.DataFrame([{
        "rule": r.rule_id, "level": r.level, "policy": r.policy_level, "cap": r.cap if r.cap is not None else "",
        "record": r.record.text(), "streak": r.record.clean_streak,
        "suggestion": f"{r.suggestion.kind} to {r.suggestion.to_level}: {r.suggestion.why}" if r.suggestion else "",
    } for r in rungs])
    if frame.empty:
        out.write("the policy has no rules: every action gets its default level\n")
    else:
        out.write(format_table(frame))
    changes = sorted((c for r in rungs for c in r.changes), key=lambda c: c.time)
    out.write("\nhistory\n")
    if not changes:
        out.write("no level was changed or suggestion refused yet: `afterfix trust promote|demote|refuse RULE "
                  "--reason TEXT` records one\n")
        return EXIT_OK
    out.write(format_table(pd.DataFrame([{
        "time": c.time.isoformat(sep=" ", timespec="seconds"), "who": c.who, "rule": c.rule_id, "change": c.text(),
        "suggested": "yes" if c.suggested else "no", "reason": c.reason} for c in changes])))
    return EXIT_OK


def cmd_decide(args) -> int:
    from afterfix.cli import EXIT_OK, _store
    from afterfix.trust.ladder import PROMOTE_AFTER, change_level, refuse

    if not (args.reason or "").strip():
        raise UsageError(f"--reason: say why you {args.verb} {safe(args.rule_id, newlines=False)}")
    who = args.who or os.environ.get(ENV_USER) or getpass.getuser()
    policy = _policy(args)
    n = getattr(args, "promote_after", PROMOTE_AFTER)
    store = _store(args)
    if args.verb == "refuse":
        change = refuse(store, policy, args.rule_id, who, args.reason, promote_after=n)
    else:
        change = change_level(store, policy, args.rule_id, args.verb, who, args.reason, promote_after=n)
    if args.format == "json":
        json.dump(change.to_dict(), sys.stdout, ensure_ascii=False, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(safe(f"{change.rule_id}: {change.text()} by {change.who} "
                              f"({'as suggested' if change.suggested else 'not suggested'}); recorded as "
                              f"{change.change_id}", newlines=False) + "\n")
    return EXIT_OK


def _rung_dict(r) -> dict:
    return {"rule_id": r.rule_id, "description": r.description, "policy_level": r.policy_level, "level": r.level,
            "cap": r.cap, "line": r.line, "record": r.record.summary(),
            "suggestion": None if r.suggestion is None else {
                "kind": r.suggestion.kind, "from_level": r.suggestion.from_level, "to_level": r.suggestion.to_level,
                "why": r.suggestion.why},
            "history": [c.to_dict() for c in r.changes]}
