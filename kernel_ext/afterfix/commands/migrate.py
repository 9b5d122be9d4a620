"""`afterfix migrate`: copy a local store into another store (a team store, usually).

    afterfix migrate --from PATH --to STORE [--dry-run] [--chunk-rows N] [--format text|json]

Progress goes to stderr, a line per chunk; the count check (source rows against destination
rows, per table) to stdout. Exit codes: 0 every source row is in the destination (or, with
--dry-run, the count of what would be copied was shown); 1 some source rows are still missing
from the destination; 2 usage, a missing source, or a store that cannot be opened.
"""

from __future__ import annotations

import json
import sys


def register(subparsers) -> None:
    from afterfix.cli import _positive_int
    from afterfix.lifecycle import DEFAULT_CHUNK_ROWS

    p = subparsers.add_parser(
        "migrate", help="copy a local store into another store (a team store), safe to stop and re-run",
        description="Copy every table of a local store into another store, in chunks of bounded size, each "
                    "one transaction: spans, events and metric points are stored once by key, every other "
                    "table (quarantine, ingest offsets, the ledgers) once per row the source has. A migrate "
                    "stopped at any point and run again ends with exactly the source's rows; a finished one "
                    "run again copies nothing. Ends with a count check per table.",
        usage="afterfix migrate --from PATH --to STORE [--dry-run] [--chunk-rows N] [--format {text,json}]")
    p.add_argument("--from", dest="source", required=True, metavar="PATH",
                   help="the local store folder to copy from (it is only read)")
    # --store is the same option, so that every command takes the store it writes as --store.
    p.add_argument("--to", "--store", dest="store", required=True, metavar="STORE",
                   help="the store to copy into: a team store's YAML file or postgres:// URL, or a folder")
    p.add_argument("--dry-run", action="store_true",
                   help="count what would be copied, per table, and write nothing")
    p.add_argument("--chunk-rows", type=_positive_int, default=DEFAULT_CHUNK_ROWS, metavar="N",
                   help=f"rows per transaction, about (default: {DEFAULT_CHUNK_ROWS}); "
                        "rows of one instant are never split")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="output format of the count check (default: text)")
    p.set_defaults(func=cmd_migrate)


def cmd_migrate(args) -> int:
    from afterfix.cli import EXIT_OK, EXIT_REFUSED, format_table, safe
    from afterfix.lifecycle import migrate
    from afterfix.store import Store

    source, destination = Store(args.source), Store(args.store)
    verb = "would copy" if args.dry_run else "copied"
    print(safe(f"{'dry run: ' if args.dry_run else ''}migrating {_where(source)} -> {_where(destination)}",
               newlines=False), file=sys.stderr)

    def progress(table: str, done: int, total: int, copy) -> None:
        if total == 0 or done == 0:
            return
        print(f"  {table}: {done:,} of {total:,} rows (chunk {copy.chunks}), {verb} {copy.copied:,}, "
              f"already there {copy.present:,}", file=sys.stderr)

    report = migrate(source, destination, dry_run=args.dry_run, chunk_rows=args.chunk_rows, progress=progress)
    if args.format == "json":
        json.dump(report.to_dict(), sys.stdout)
        sys.stdout.write("\n")
        return EXIT_OK if report.ok or args.dry_run else EXIT_REFUSED
    import pandas as pd

    frame = pd.DataFrame([{"table": t.table, "source": t.source_rows, "destination": t.destination_rows,
                           verb: t.copied, "already there": t.present,
                           "missing": "" if args.dry_run else t.missing,
                           "check": "" if args.dry_run else ("ok" if t.matches else "MISSING")}
                          for t in report.tables])
    sys.stdout.write(format_table(frame))
    total = sum(t.source_rows for t in report.tables)
    if args.dry_run:
        print(f"dry run: {sum(t.copied for t in report.tables):,} of {total:,} source rows would be copied; "
              "nothing was written")
        return EXIT_OK
    if not report.ok:
        bad = [f"{t.table} ({t.missing:,})" for t in report.tables if not t.matches]
        print(f"source rows missing from the destination: {', '.join(bad)}: run the same command again; "
              "if they stay missing, the destination refuses them (see the error above)")
        return EXIT_REFUSED
    extra = [t.table for t in report.tables if t.destination_rows > t.source_rows]
    line = f"every table matches: all {total:,} source rows are in the destination"
    if extra:
        line += f" (which also holds rows from elsewhere in {', '.join(extra)})"
    print(line)
    return EXIT_OK


def _where(store) -> str:
    return getattr(store, "where", None) or str(store.root)
