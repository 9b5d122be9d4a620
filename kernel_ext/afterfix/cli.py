"""The `afterfix` command line: a thin layer that parses, calls one library function, prints.

Subcommands: `ingest` (files and folders into the store), `query` (SQL, read-only unless
`--write`), `serve` (OTLP/HTTP receiver and inbox tailer without a kernel; with `--stdio`, the
capture process the notebook extension runs beside its kernel), `status` (what the store holds), and `demo` when the nightshift demo is installed. Exit codes: 0 success, 1 some
records were refused (each reported on stderr), 2 usage error (bad option, missing path,
unreadable store, SQL error), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from . import __version__
from .store import ENV_STORE

ENV_TOKEN = "AFTERFIX_TOKEN"  # the same variables as the kernel's capture reads
ENV_PORT = "AFTERFIX_PORT"
ENV_INBOX = "AFTERFIX_INBOX"
DEFAULT_PORT = 4318
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

TABLE_CELL_MAX = 100  # characters per cell in `--format table`; csv and json keep everything

# Control characters, and the bidirectional overrides and isolates that make a terminal show text
# in another order than it is (U+202A-U+202E, U+2066-U+2069: "Trojan Source").
_BIDI = "\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}]")
_CONTROL_ALL = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}]")


class UsageError(Exception):
    """A mistake in how the command was called: reported in one line, exit code 2."""


def safe(text: object, *, newlines: bool = True) -> str:
    """Trace text made harmless for a terminal: control characters shown as escapes.

    Span names and attributes come from an LLM and from production; an escape sequence in
    them must not reach the terminal as one.
    """
    pattern = _CONTROL if newlines else _CONTROL_ALL
    return pattern.sub(lambda m: f"\\u{ord(m.group()):04x}" if ord(m.group()) > 0xff else repr(m.group())[1:-1], str(text))


# -- the parser ----------------------------------------------------------------------------


def _store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store", metavar="PATH", default=None,
        help=f"store folder, or a team store's postgres:// URL or YAML file (default: ${ENV_STORE}, else "
             "traces/store in the checkout or the current folder)",
    )


def _when(text: str):
    """An argparse type: a duration back from now (24h, 7d) or an ISO time, as analysis.window reads it."""
    from afterfix.analysis.window import parse_time

    try:
        return parse_time(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _cluster_options(parser: argparse.ArgumentParser) -> None:
    """--kubeconfig and --context, for the commands that reach a cluster (rollback, actions, guard)."""
    parser.add_argument("--kubeconfig", default=None, metavar="PATH",
                        help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster config)")
    parser.add_argument("--context", default=None, metavar="NAME", help="kubeconfig context (default: the current one)")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; the docs test walks it, so every option here is documented."""
    parser = argparse.ArgumentParser(
        prog="afterfix",
        description="Review what an autonomous SRE agent changed overnight: ingest, serve and query its traces.",
    )
    parser.add_argument("--version", action="version", version=f"afterfix {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "ingest", help="store OTLP trace files (JSON lines or protobuf), Tempo's and Jaeger's trace JSON, and folders of them",
        description="Decode OTLP/JSON lines (*.jsonl, *.json, *.ndjson) and OTLP protobuf (*.pb, *.binpb) "
        "files, recursing into folders, and store their spans. Refused records are reported as "
        "'PATH line N: reason' and kept in the quarantine table; files already ingested are skipped.",
    )
    _store_option(p)
    p.add_argument("paths", nargs="+", metavar="PATH", help="trace file or folder")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar on stderr (default: only for inputs over 20 MB on a terminal)")
    p.add_argument("--batch-spans", type=_positive_int, default=200_000, metavar="N",
                   help="spans per store commit (default: 200000)")
    p.add_argument("--workers", type=_non_negative_int, default=None, metavar="N",
                   help="decoding processes; 0 decodes in this process (default: 2 for inputs over 32 MB, else 0)")
    p.add_argument("--redact", action="append", default=[], metavar="REGEX",
                   help="also redact text matching REGEX (repeatable)")
    p.add_argument("--no-redact", action="store_true",
                   help="store attribute values as they are, without redacting secrets")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser(
        "query", help="run SQL against the store (read-only unless --write)",
        description="Run SQL against the store: tables spans, events, quarantine, ingest_offsets and views "
        "runs, tool_calls, llm_calls, decisions, options, actions, incidents, orphan_spans.",
    )
    _store_option(p)
    p.add_argument("sql", metavar="SQL", help="the SQL to run, or - to read it from stdin")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="output format (default: table; table cells are cut at 100 characters)")
    p.add_argument("--write", action="store_true", help="allow statements that change the store")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser(
        "serve", help="receive OTLP/HTTP and tail the inbox folder, without a kernel",
        description="Run the OTLP/HTTP receiver (POST /v1/traces) and the inbox tailer until SIGINT or "
        "SIGTERM, then flush everything received to the store and stop. The receiver also answers "
        "GET /afterfix/status and POST /afterfix/flush (JSON; same token rule as /v1/traces).",
    )
    _store_option(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=_port, default=None,
                   help=f"port to listen on; 0 picks a free one (default: ${ENV_PORT}, else 4318)")
    p.add_argument("--token", default=None,
                   help=f"bearer token clients must send (default: ${ENV_TOKEN}; none means no check)")
    p.add_argument("--inbox", metavar="DIR", default=None,
                   help=f"folder of trace files to tail (default: ${ENV_INBOX}, else inbox/ beside the store)")
    p.add_argument("--no-inbox", action="store_true", help="do not tail any inbox folder")
    p.add_argument("--no-listen", action="store_true", help="only tail the inbox, do not listen for OTLP/HTTP")
    p.add_argument("--interval", type=_interval, default=0.5, metavar="SECONDS",
                   help="seconds between commits of received spans (default: 0.5)")
    p.add_argument("--max-body-bytes", type=_positive_int, default=None, metavar="N",
                   help="largest request body (or inbox line) accepted; larger ones get HTTP 413 (default: 16 MiB)")
    p.add_argument("--redact", action="append", default=[], metavar="REGEX",
                   help="also redact text matching REGEX (repeatable)")
    p.add_argument("--stdio", action="store_true",
                   help="run under a parent process (the notebook extension does): print JSON lines on stdout "
                   "(ready with the bound port, or the start error), answer status/flush requests read from "
                   "stdin, and stop, flushing, when stdin closes")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("status", help="what the store holds: spans, runs, incidents, quarantined, last ingest",
                       description="Count what the store holds and say when it last received spans.")
    _store_option(p)
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.set_defaults(func=cmd_status)

    from . import commands

    commands.register_all(sub)

    try:  # the demo ships separately; the command line works without it
        from .nightshift import demo
    except ImportError:
        demo = None
    if demo is not None:
        demo.register(sub)
        for name, sp in sub.choices.items():
            if not any("--store" in a.option_strings for a in sp._actions):
                _store_option(sp)
    return parser


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def _port(text: str) -> int:
    value = _non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535)")
    return value


def seconds_arg(limit: float):
    """An argparse type: a number of seconds, more than 0 and at most `limit`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not 0 < value <= limit:
            raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 and at most {limit:g} seconds")
        return value

    return parse


_interval = seconds_arg(60)


def _store(args):
    from .store import Store

    return Store(args.store) if args.store else Store()


# -- ingest -------------------------------------------------------------------------------


def cmd_ingest(args) -> int:
    from .ingest.files import ingest_paths

    try:
        summary = ingest_paths(
            _store(args), args.paths, redactor=_redactor(args), progress=args.progress,
            batch_spans=args.batch_spans, workers=args.workers,
        )
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    for r in summary.refused:
        print(safe(f"{r.source} {r.location}: {r.reason}", newlines=False), file=sys.stderr)
    print(format_summary(summary))
    if summary.refused:
        print(f"{len(summary.refused)} refused record(s) kept in the quarantine table: "
              "afterfix query 'SELECT * FROM quarantine'", file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_OK


def format_summary(s) -> str:
    files = f"{s.files:,} file{'s' if s.files != 1 else ''}"
    if s.unchanged:
        files += f" ({s.unchanged:,} unchanged, skipped)"
    points = ""
    if getattr(s, "points_stored", 0) or getattr(s, "point_duplicates", 0):  # inputs with metrics only
        points = f"{s.points_stored:,} metric points stored ({s.point_duplicates:,} duplicates skipped), "
    return (
        f"{files}: {s.spans_stored:,} spans stored, {s.duplicates:,} duplicates skipped, {points}"
        f"{len(s.refused):,} records refused, {s.redactions:,} redactions, "
        f"{s.spans_per_second:,.0f} spans/s ({s.seconds:.2f} s)"
    )


# -- query --------------------------------------------------------------------------------


def cmd_query(args) -> int:
    sql = sys.stdin.read() if args.sql == "-" else args.sql
    if not sql.strip():
        raise UsageError("no SQL given" + (" on stdin" if args.sql == "-" else ""))
    from .analysis import findings  # noqa: F401  (makes the `findings` view queryable)

    df = _store(args).query(sql, write=args.write)
    out = sys.stdout
    if len(df.columns) == 0:
        return EXIT_OK
    if args.format == "csv":
        df.to_csv(out, index=False)
    elif args.format == "json":
        out.write(df.to_json(orient="records", date_format="iso", date_unit="us", force_ascii=False))
        out.write("\n")
    else:
        out.write(format_table(df))
    return EXIT_OK


def format_table(df) -> str:
    """Aligned plain-text table with escaped cells; NULL shown as NULL."""
    import pandas as pd

    def cell(v) -> str:
        if v is None or (pd.api.types.is_scalar(v) and pd.isna(v)):
            return "NULL"
        text = safe(v, newlines=False)
        return text if len(text) <= TABLE_CELL_MAX else text[: TABLE_CELL_MAX - 1] + "…"

    headers = [safe(c, newlines=False) for c in df.columns]
    rows = [[cell(v) for v in row] for row in df.itertuples(index=False, name=None)]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    numeric = [pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t) for t in df.dtypes]

    def line(values) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out) + "\n"


# -- serve --------------------------------------------------------------------------------


def cmd_serve(args) -> int:
    import signal
    import threading

    from .config import is_loopback
    from .ingest.capture import Capture

    if args.no_listen and args.no_inbox:
        raise UsageError("--no-listen with --no-inbox would receive nothing: drop one of them")
    if args.inbox and args.no_inbox:
        raise UsageError("--inbox and --no-inbox contradict each other: pass one")
    token = args.token if args.token is not None else os.environ.get(ENV_TOKEN) or None
    port = args.port
    if port is None:
        try:
            port = _port(os.environ.get(ENV_PORT) or str(DEFAULT_PORT))
        except argparse.ArgumentTypeError as e:
            raise UsageError(f"${ENV_PORT}: {e}") from None
    store = _store(args)
    kwargs = dict(listen=not args.no_listen, host=args.host, port=port, token=token, interval=args.interval,
                  limits=_limits(args), redactor=_redactor(args))
    inbox = args.inbox or (None if args.no_inbox else os.environ.get(ENV_INBOX) or None)
    if args.no_inbox:
        kwargs["inbox"] = False
    elif inbox:
        path = Path(inbox).expanduser()
        if path.exists() and not path.is_dir():
            raise UsageError(f"inbox {inbox}: not a folder")
        kwargs["inbox"] = path
    if not args.no_listen and token is None and not is_loopback(args.host):
        print(f"afterfix serve: warning: listening on {args.host} without a token accepts spans from anyone "
              f"who can reach it: pass --token or set ${ENV_TOKEN}", file=sys.stderr)
    capture = Capture(store, **kwargs)

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    channel = None
    try:
        if args.stdio:
            from .ingest.sidecar import StdioChannel

            channel = StdioChannel(capture, stop)
            try:
                capture.start()
            except Exception as e:
                channel.send({"event": "error", "kind": type(e).__name__, "error": str(e)})
                raise
            channel.start()
        else:
            capture.start()
            print(describe_capture(capture.status(), store), flush=True)
        while not stop.wait(0.5):
            if channel is not None:
                channel.report_new_error()
        print("afterfix serve: stopping, flushing to the store", file=sys.stderr, flush=True)
    finally:
        capture.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if channel is not None:
        channel.stopped()
    print("afterfix serve: stopped; " + _describe_counts(capture.status()), file=sys.stderr, flush=True)
    return EXIT_OK


def _limits(args):
    from .ingest.otlp import Limits

    return Limits(max_body_bytes=args.max_body_bytes) if args.max_body_bytes else Limits()


def _redactor(args):
    """The default patterns plus --redact ones, named custom-1, custom-2, ... in the order given
    (as the notebook extension names them); none at all with `ingest --no-redact`."""
    from ._exceptions import ConfigError
    from .ingest.redact import Redactor

    no_redact = getattr(args, "no_redact", False)  # only `ingest` has it
    if no_redact and args.redact:
        raise UsageError("--redact and --no-redact contradict each other: pass one")
    if no_redact:
        return Redactor(patterns=[])
    if not args.redact:
        return None  # the decoder's default patterns
    try:
        return Redactor(extra=[(f"custom-{i + 1}", p) for i, p in enumerate(args.redact)])
    except ConfigError as e:  # a pattern that does not compile
        raise UsageError(f"--redact: {e}") from None


def describe_capture(status: dict, store) -> str:
    parts = []
    url = status.get("url")
    if not url and status.get("port"):
        url = f"http://{status.get('host', '127.0.0.1')}:{status['port']}/v1/traces"
    if url:
        parts.append(f"listening on {url}")
    if status.get("inbox"):
        parts.append(f"tailing {status['inbox']}")
    parts.append(f"store {store.where}")
    return "afterfix serve: " + ", ".join(parts) + " (Ctrl-C to stop)"


def _describe_counts(status: dict) -> str:
    keys = [k for k in ("spans_stored", "spans", "duplicates", "refused", "quarantined") if k in status]
    return ", ".join(f"{k.replace('_', ' ')} {status[k]}" for k in keys) or "done"


# -- status -------------------------------------------------------------------------------

STATUS_SQL = """
SELECT (SELECT count(*) FROM spans) AS spans,
       (SELECT count(*) FROM events) AS events,
       (SELECT count(*) FROM metrics) AS metric_points,
       (SELECT count(DISTINCT run_id) FROM spans) AS runs,
       (SELECT count(DISTINCT incident_id) FROM spans) AS incidents,
       (SELECT count(*) FROM quarantine) AS quarantined,
       (SELECT count(DISTINCT source) FROM ingest_offsets) AS files_tracked,
       (SELECT max(ingested_at) FROM spans) AS last_ingest,
       (SELECT max(received_at) FROM quarantine) AS last_refusal
"""


_KINDS = {"local": "SQLite catalog, Parquet files in the folder", "team": "PostgreSQL catalog, data in S3"}


def store_status(store) -> dict:
    """Counts of what `store` holds (cheap: counts and maxima over the physical tables)."""
    row = store.query(STATUS_SQL).iloc[0].to_dict()
    out = {"store": store.where, "kind": store.kind}
    for k, v in row.items():
        if k.startswith("last_"):
            out[k] = None if v is None or v != v else v.isoformat(sep=" ", timespec="seconds") + " UTC"
        else:
            out[k] = int(v)
    return out


def cmd_status(args) -> int:
    store = _store(args)
    info = store_status(store)
    from .ingest.otlp import decoding_path

    info["decoding"] = decoding_path()  # the compiled fast path, or why not
    if args.format == "json":
        import json

        print(json.dumps(info, indent=2))
        return EXIT_OK
    info["kind"] = f"{store.kind} ({_KINDS[store.kind]})"
    width = max(len(k) for k in info)
    for k, v in info.items():
        print(f"{k.replace('_', ' ') + ':':<{width + 2}}{v if v is not None else 'never'}")
    return EXIT_OK


# -- entry point ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import duckdb

    from ._exceptions import AfterfixError

    prog = f"afterfix {args.command}"
    try:
        return args.func(args)
    except BrokenPipeError:
        # the reader (head, less) went away: nothing left to say, and nowhere to say it
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
    except AfterfixError as e:
        print(f"{prog}: error: {safe(e, newlines=False)}", file=sys.stderr)
    except duckdb.Error as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"{prog}: error: {safe(first, newlines=False)}", file=sys.stderr)
    except OSError as e:  # a store or input path that cannot be used
        where = f"{e.filename}: " if e.filename else ""
        print(f"{prog}: error: {where}{e.strerror or e}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
