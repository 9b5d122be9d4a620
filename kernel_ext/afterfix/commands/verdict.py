"""`afterfix verdict`: mark a decision or an action correct, wrong or unsure, and list verdicts.

    afterfix verdict TARGET_ID correct|wrong|unsure [--note TEXT] [--should OPTION] [--who NAME] [--format text|json]
    afterfix verdict list [--incident ID] [--run ID] [--target ID] [--who NAME] [--history] [--format table|json]

Exit codes: 0 recorded or listed; 2 usage, an unknown id, or a verdict refused (the message
names the field and the fix, and lists a decision's options when --should is missing or wrong).
"""

from __future__ import annotations

import getpass
import json
import os
import sys

from afterfix.cli import UsageError, safe

ENV_USER = "AFTERFIX_USER"
VERDICT_WORDS = "correct|wrong|unsure"
RECORD_ONLY = ("note", "should")
LIST_ONLY = ("incident", "run", "target", "history")


def register(subparsers) -> None:
    from afterfix.cli import _store_option

    p = subparsers.add_parser(
        "verdict", help="mark a decision or an action correct, wrong or unsure; `verdict list` shows verdicts",
        description="Record a person's verdict on one decision or action (appended to the verdicts ledger with "
                    "who and when; the newest per person and target is current), or with `list` show verdicts. "
                    "A wrong decision names the option that should have been taken (--should).",
        usage="afterfix verdict TARGET_ID correct|wrong|unsure [--note TEXT] [--should OPTION] [--who NAME]\n"
              "       afterfix verdict list [--incident ID] [--run ID] [--target ID] [--who NAME] [--history] "
              "[--format table|json]")
    _store_option(p)
    p.add_argument("target_id", metavar="TARGET_ID|list",
                   help="the decision or action id (dec-..., act-...), or `list` to show verdicts")
    p.add_argument("verdict", nargs="?", metavar=VERDICT_WORDS, help="the verdict")
    p.add_argument("--note", default=None, metavar="TEXT", help="why: recorded with the verdict")
    p.add_argument("--should", default=None, metavar="OPTION",
                   help="with wrong: the option id that should have been taken (one of the decision's options)")
    p.add_argument("--who", default=None, metavar="NAME",
                   help=f"who gives the verdict (default: ${ENV_USER}, else the login name); with list: only theirs")
    p.add_argument("--incident", default=None, metavar="ID", help="list: only verdicts on this incident's steps")
    p.add_argument("--run", default=None, metavar="ID", help="list: only verdicts on this run's steps")
    p.add_argument("--target", default=None, metavar="ID", help="list: only verdicts on this decision or action")
    p.add_argument("--history", action="store_true",
                   help="list: every verdict ever given, not only each person's newest per target")
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="output format (default: table; a recorded verdict prints one line)")
    p.set_defaults(func=cmd_verdict)


def cmd_verdict(args) -> int:
    if args.target_id == "list":
        return _list(args)
    return _record(args)


def _record(args) -> int:
    from afterfix.cli import EXIT_OK, _store
    from afterfix.review.verdicts import VERDICTS, record_verdict

    used = [f"--{o}" for o in LIST_ONLY if getattr(args, o)]
    if used:
        raise UsageError(f"{', '.join(used)} only work with `afterfix verdict list`")
    if args.verdict is None:
        raise UsageError(f"give the verdict after the id: afterfix verdict {safe(args.target_id, newlines=False)} "
                         f"{VERDICT_WORDS} --note TEXT")
    if args.verdict.lower() not in VERDICTS:
        raise UsageError(f"verdict {safe(args.verdict, newlines=False)!r} is not one of {VERDICT_WORDS}")
    who = args.who or os.environ.get(ENV_USER) or getpass.getuser()
    v = record_verdict(_store(args), args.target_id, args.verdict, who, note=args.note, should_have=args.should)
    if args.format == "json":
        json.dump(v.to_dict(), sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
        return EXIT_OK
    line = f"recorded: {v.who} marked {v.target_type} {v.target_id} {v.verdict}"
    if v.should_have:
        line += f"; should have: {v.should_have}"
    line += f" ({v.verdict_id}, {v.time.isoformat(sep=' ', timespec='seconds')} UTC"
    line += f", run {v.run_id}" if v.run_id else ""
    line += f", incident {v.incident_id})" if v.incident_id else ")"
    sys.stdout.write(safe(line, newlines=False) + "\n")
    return EXIT_OK


def _list(args) -> int:
    from afterfix.cli import EXIT_OK, _store, format_table
    from afterfix.review.verdicts import verdicts

    used = [f"--{o}" for o in RECORD_ONLY if getattr(args, o)]
    if args.verdict is not None:
        raise UsageError(f"`afterfix verdict list` takes no verdict ({safe(args.verdict, newlines=False)!r}): "
                         "filter with --incident, --run, --target or --who")
    if used:
        raise UsageError(f"{', '.join(used)} only work when recording a verdict: afterfix verdict TARGET_ID {VERDICT_WORDS}")
    found = verdicts(_store(args), incident_id=args.incident, run_id=args.run, target_id=args.target,
                     who=args.who, history=args.history)
    if args.format == "json":
        json.dump([v.to_dict() for v in found], sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
        return EXIT_OK
    if not found:
        where = [f"{k} {v}" for k, v in (("incident", args.incident), ("run", args.run), ("target", args.target),
                                         ("by", args.who)) if v]
        sys.stdout.write("no verdicts" + (f" for {', '.join(where)}" if where else " in the store") + "\n")
        return EXIT_OK
    import pandas as pd

    frame = pd.DataFrame([{"time": v.time.isoformat(sep=" ", timespec="seconds"), "who": v.who,
                           "verdict": v.verdict, "should_have": v.should_have, "type": v.target_type,
                           "target": v.target_id, "run": v.run_id, "incident": v.incident_id, "note": v.note}
                          for v in found])
    sys.stdout.write(format_table(frame))
    return EXIT_OK
