"""`afterfix retention`: delete trace data older than a cut-off, keep the ledgers, compact.

    afterfix retention --keep 90d [--snapshots 7d] [--dry-run] [--format text|json]

Exit codes: 0 done (or, with --dry-run, what would be deleted shown); 2 usage (a window that is
not a duration, or too short) or a store that cannot be opened.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta


def _window(text: str) -> timedelta:
    """An argparse type: a duration such as 90d, 12h or 2w."""
    from afterfix.analysis.window import parse_duration

    span = parse_duration(text)
    if span is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: give a number and a unit, "
                                         "s, m, h, d or w (90d, 12h, 2w)")
    return span


def register(subparsers) -> None:
    from afterfix.cli import _store_option

    p = subparsers.add_parser(
        "retention", help="delete trace data older than --keep, keep the ledgers, compact the store",
        description="Delete trace data older than --keep (whole traces whose every span ended before the "
                    "cut-off, their events, metric points, quarantined records), keep every ledger row "
                    "(rollbacks, approvals, verdicts, trust, replays, alerts, analyses: the audit trail), "
                    "then compact: inlined rows to files, files with many deleted rows rewritten, small "
                    "files merged, snapshots older than --snapshots expired, and files no snapshot needs "
                    "removed. Each step commits on its own: an interrupted run is finished by running it again.",
        usage="afterfix retention --keep DURATION [--snapshots DURATION] [--dry-run] [--format {text,json}] "
              "[--store PATH]")
    _store_option(p)
    p.add_argument("--keep", type=_window, required=True, metavar="DURATION",
                   help="how much trace data to keep, back from now: 90d, 12h, 2w (more than 0)")
    p.add_argument("--snapshots", type=_window, default=timedelta(days=7), metavar="DURATION",
                   help="how long earlier versions stay readable (time travel) before their files go; "
                        "at least 1h (default: 7d)")
    p.add_argument("--dry-run", action="store_true", help="count what would be deleted and change nothing")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.set_defaults(func=cmd_retention)


def cmd_retention(args) -> int:
    from afterfix.cli import EXIT_OK, UsageError, _store, safe
    from afterfix._exceptions import ConfigError
    from afterfix.lifecycle import check_retention, retention

    try:
        check_retention(args.keep, args.snapshots)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    store = _store(args)
    where = getattr(store, "where", None) or str(store.root)
    text = args.format == "text"

    def on_step(name: str, phase: str) -> None:
        if text and phase == "start":
            print(f"  {name}...", file=sys.stderr)

    if text:
        print(safe(f"{'dry run: ' if args.dry_run else ''}retention on {where}", newlines=False), file=sys.stderr)
    report = retention(store, args.keep, snapshots=args.snapshots, dry_run=args.dry_run, on_step=on_step)
    if not text:
        json.dump(report.to_dict(), sys.stdout, default=str)
        sys.stdout.write("\n")
        return EXIT_OK
    sys.stdout.write(format_report(report))
    return EXIT_OK


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def format_report(report) -> str:
    """The retention report as people read it: the cut-off, what went, what stayed and why, sizes."""
    from afterfix.cli import format_table
    from afterfix.lifecycle import TRACE_TABLES
    from afterfix.schema import LEDGERS
    import pandas as pd

    verb = "would delete" if report.dry_run else "deleted"
    out = [f"trace data older than {report.cutoff:%Y-%m-%d %H:%M} UTC: {verb} "
           f"{report.traces:,} whole traces ({report.deleted.get('spans', 0):,} spans), "
           f"{report.deleted.get('events', 0):,} events, {report.deleted.get('metrics', 0):,} metric points, "
           f"{report.deleted.get('quarantine', 0):,} quarantined records"]
    refs = sum(report.ledger_refs.values())
    line = (f"kept: every ledger row ({', '.join(LEDGERS)}): the audit trail of who did what, when and why "
            "is never deleted")
    if refs:
        line += (f"; {refs:,} of them ({', '.join(f'{t} {n:,}' for t, n in report.ledger_refs.items())}) name "
                 "decisions or actions whose spans " + ("would go" if report.dry_run else "are gone") +
                 ": they keep their own record (target, plan, verdict, note), not the trace's tree")
    out.append(line)
    shown = [*TRACE_TABLES, *(t for t in report.rows_before if t not in TRACE_TABLES)]
    frame = pd.DataFrame([{"table": t, "rows before": report.rows_before.get(t, 0),
                           ("rows after" if not report.dry_run else "rows after (estimated)"): report.rows_after.get(t, 0)}
                          for t in shown if report.rows_before.get(t, 0) or report.rows_after.get(t, 0)])
    body = format_table(frame) if len(frame) else "the store holds no rows\n"
    b, a = report.storage_before, report.storage_after
    files = f"data files ({b.measured}): {b.files:,} ({_size(b.bytes)}) before"
    if report.dry_run:
        files += "; nothing changed (dry run)"
    else:
        files += f", {a.files:,} ({_size(a.bytes)}) after; snapshots {b.snapshots:,} before, {a.snapshots:,} after"
        files += (f"\nfiles that snapshots newer than {report.snapshot_cutoff:%Y-%m-%d %H:%M} UTC still read stay "
                  "until a later run finds those snapshots expired")
        for step, what in report.steps:
            files += f"\n  {step}: {what}"
    return "\n".join(out) + "\n" + body + files + "\n"
