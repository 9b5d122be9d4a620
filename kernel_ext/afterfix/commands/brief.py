"""`afterfix brief`: the morning briefing, rendered from its template as one offline HTML file.

    afterfix brief [--since 24h|TIME] [--until TIME] [--namespace NS] [-o briefing.html]
                   [--keep N] [--notebook out.ipynb] [--template NAME] [--store PATH]

It prints the five-line handoff and the path of the HTML. A template cell that fails makes it
exit non-zero, naming the cell and where the executed notebook with the traceback is.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _checked_time(text: str) -> str:
    from afterfix.analysis.window import parse_time

    try:
        parse_time(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give how many briefings to keep, 1 or more")
    return n


def register(subparsers) -> None:
    from afterfix.cli import _store_option

    p = subparsers.add_parser(
        "brief", help="render the morning briefing (papermill + nbconvert) as one offline HTML file",
        description="Run the morning_briefing template over a window of the store and write one "
                    "self-contained HTML file: a five-line shift handoff, then what broke, what the agent "
                    "tried, what worked, what was rolled back, side effects to watch, whether it will "
                    "happen again, findings, open approvals and actions by trust level.")
    _store_option(p)
    p.add_argument("--since", type=_checked_time, default="24h", metavar="WHEN",
                   help="start of the window: a duration back from --until (24h, 7d) or an ISO time (default 24h)")
    p.add_argument("--until", type=_checked_time, default=None, metavar="WHEN",
                   help="end of the window: an ISO time, or a duration back from now (default: now)")
    p.add_argument("--namespace", default=None, metavar="NS", help="only this namespace's incidents and actions")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="PATH",
                   help="the HTML file to write (default briefing.html); with --keep, a folder")
    p.add_argument("--keep", type=_positive, default=None, metavar="N",
                   help="write briefing-<time>.html into the -o folder and delete all but the newest N")
    p.add_argument("--notebook", type=Path, default=None, metavar="PATH",
                   help="also keep the executed notebook here (it is kept anyway when a cell fails)")
    p.add_argument("--template", default="morning_briefing", metavar="NAME",
                   help="template name in templates/, or a path to a .ipynb with the same parameters")
    p.set_defaults(func=cmd_brief)


def cmd_brief(args) -> int:
    from afterfix.cli import EXIT_OK, _store, safe
    from afterfix.reports.render import brief

    store = _store(args)
    output = args.output or (Path("briefings") if args.keep else Path("briefing.html"))
    done = brief(store, since=args.since, until=args.until, namespace=args.namespace, output=output,
                 keep=args.keep, notebook=args.notebook, template=args.template)
    for line in done.handoff:  # in the terminal too (and in cron's mail): the briefing's first screen
        print(safe(line, newlines=False))
    print(f"briefing    {done.html.resolve()}")
    return EXIT_OK
