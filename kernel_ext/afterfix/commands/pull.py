"""`afterfix pull`: fetch traces from Grafana Tempo or Jaeger (api_v3) into the store.

    afterfix pull --tempo URL | --jaeger URL  --trace-id HEX [HEX ...]
    afterfix pull --tempo URL | --jaeger URL  --service NAME [--since 24h] [--until WHEN] [--limit N]
    afterfix pull --tempo URL  --traceql QUERY [--since ...]
    [--header 'Name: value' ...] [--timeout SECONDS] [--redact REGEX ...] [--no-redact] [--store PATH]

Exit codes: 0 every trace fetched and stored; 1 some traces failed (they are listed) or records
were refused (kept in quarantine); 2 usage, or nothing could be fetched (the search or every
trace failed: one line naming the URL, without credentials, and the status and reason).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from datetime import timedelta

from afterfix.cli import UsageError, safe, seconds_arg

ENV_TOKEN = "AFTERFIX_PULL_TOKEN"
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token (RFC 9110)


def register(subparsers) -> None:
    from afterfix.cli import _positive_int, _store_option, _when

    p = subparsers.add_parser(
        "pull", help="fetch traces from Grafana Tempo or Jaeger into the store, by trace id or by service and time",
        description="Fetch traces from a Grafana Tempo or Jaeger (api_v3) query API, by trace id or by searching "
                    "a service's traces in a time window, and store them as `afterfix ingest` does: redacted, "
                    "refused spans quarantined, each span stored once (pulling again stores nothing new).",
        usage="afterfix pull (--tempo URL | --jaeger URL) (--trace-id HEX [HEX ...] | --service NAME | --traceql QUERY)\n"
              "       [--since WHEN] [--until WHEN] [--limit N] [--header 'Name: value' ...] [--timeout SECONDS]\n"
              "       [--redact REGEX ...] [--no-redact] [--store PATH]")
    _store_option(p)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--tempo", metavar="URL", default=None,
                       help="Tempo's HTTP API, e.g. http://tempo:3200 (user:password@ in it is sent as Basic auth)")
    where.add_argument("--jaeger", metavar="URL", default=None,
                       help="Jaeger's query service (api_v3 over HTTP), e.g. http://jaeger:16686")
    p.add_argument("--trace-id", dest="trace_ids", nargs="+", action="extend", default=[], metavar="HEX",
                   help="trace id(s) to fetch, hex (repeatable)")
    p.add_argument("--service", default=None, metavar="NAME",
                   help="search the traces with spans of this service (resource service.name) in --since..--until")
    p.add_argument("--traceql", default=None, metavar="QUERY",
                   help='Tempo only: search with this TraceQL instead, e.g. \'{ span.gen_ai.operation.name = "execute_tool" }\'')
    p.add_argument("--since", type=_when, default=None, metavar="WHEN",
                   help="start of the search window: a duration back from now (24h, 90m, 7d) or an ISO time (default: 24h)")
    p.add_argument("--until", type=_when, default=None, metavar="WHEN",
                   help="end of the search window, the same forms (default: now)")
    p.add_argument("--limit", type=_positive_int, default=100, metavar="N",
                   help="at most N traces from a search (default: 100)")
    p.add_argument("--header", dest="headers", action="append", default=[], metavar="'NAME: VALUE'",
                   help=f"send this HTTP header with every request (repeatable); without an Authorization header, "
                        f"${ENV_TOKEN} is sent as 'Authorization: Bearer ...'")
    p.add_argument("--timeout", type=_seconds, default=30.0, metavar="SECONDS",
                   help="seconds to wait for each answer (default: 30)")
    p.add_argument("--redact", action="append", default=[], metavar="REGEX",
                   help="also redact text matching REGEX (repeatable)")
    p.add_argument("--no-redact", action="store_true",
                   help="store attribute values as they are, without redacting secrets")
    p.set_defaults(func=cmd_pull)


_seconds = seconds_arg(3600)


def parse_headers(given: list[str], env: dict | None = None, *, token: bool = True) -> dict[str, str]:
    """`--header` values as a dict, plus $AFTERFIX_PULL_TOKEN as a bearer token when no
    Authorization header is given (and `token`). Messages name a bad header by its name, never
    its value."""
    env = os.environ if env is None else env
    out: dict[str, str] = {}
    for h in given:
        name, sep, value = h.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not _HEADER_NAME.match(name):
            shown = name if _HEADER_NAME.match(name) else "the header"
            raise UsageError(f"--header {safe(shown, newlines=False)!r} is not 'Name: value' "
                             "(e.g. --header 'Authorization: Bearer TOKEN')")
        if any(c in value for c in "\r\n\0"):
            raise UsageError(f"--header {name}: the value holds a line break; give one header per --header")
        out[name] = value
    bearer = env.get(ENV_TOKEN, "").strip()
    if token and bearer and not any(k.lower() == "authorization" for k in out):
        out["Authorization"] = f"Bearer {bearer}"
    return out


def cmd_pull(args) -> int:
    from afterfix.analysis.window import utc_now
    from afterfix.cli import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, _redactor, _store
    from afterfix.ingest.pull import Backend, pull

    kind, url = ("tempo", args.tempo) if args.tempo else ("jaeger", args.jaeger)
    searching = args.service is not None or args.traceql is not None
    if args.trace_ids and searching:
        raise UsageError("give --trace-id, or a search (--service / --traceql), not both")
    if not args.trace_ids and not searching:
        raise UsageError("say what to pull: --trace-id HEX, or --service NAME (with --since)")
    if args.traceql is not None and kind != "tempo":
        raise UsageError("--traceql is Tempo's query language; search Jaeger with --service")
    if args.traceql is not None and not args.traceql.strip():
        raise UsageError('--traceql is empty; give a query such as \'{ resource.service.name = "sre-agent" }\'')
    if args.service is not None and args.traceql is not None:
        raise UsageError("give --service or --traceql, not both")
    if not searching and (args.since or args.until):
        raise UsageError("--since and --until choose a search window: use them with --service or --traceql")
    for tid in args.trace_ids:
        if not re.fullmatch(r"[0-9A-Fa-f]{1,32}", tid):
            raise UsageError(f"--trace-id {safe(tid, newlines=False)!r} is not a hex trace id (up to 32 hex characters)")
    end = args.until or utc_now()
    start = args.since
    if searching and start is None:
        start = end - timedelta(hours=24)
    if searching and start >= end:
        raise UsageError(f"--since ({start:%Y-%m-%d %H:%M}) is not before --until ({end:%Y-%m-%d %H:%M})")
    import urllib.parse

    # credentials in the URL are the ones meant: the environment's token is not added to them
    headers = parse_headers(args.headers, token=urllib.parse.urlsplit(url).username is None)
    try:
        backend = Backend(kind, url, headers=headers, timeout=args.timeout)
    except ValueError as e:
        raise UsageError(f"--{kind}: {e}") from None
    redactor = _redactor(args)

    s = pull(_store(args), backend, trace_ids=args.trace_ids, service=args.service, traceql=args.traceql,
             start=start, end=end, limit=args.limit, redactor=redactor)  # fmt: skip
    for r in s.refused:
        print(safe(f"{r.source} {r.location}: {r.reason}", newlines=False), file=sys.stderr)
    if s.searched and not s.matched and not s.failures:
        what = f"service {args.service!r}" if args.service is not None else "the TraceQL query"
        print(safe(f"{s.backend} {s.url}: no traces of {what} between {start:%Y-%m-%d %H:%M} and "
                   f"{end:%Y-%m-%d %H:%M} UTC", newlines=False))  # fmt: skip
        return EXIT_OK
    if s.failures and not s.traces:
        for f in s.failures:
            print(safe(f"afterfix pull: error: GET {f.url}: {f.reason}", newlines=False), file=sys.stderr)
        return EXIT_USAGE
    for f in s.failures:
        print(safe(f"afterfix pull: trace {f.trace_id} not stored: GET {f.url}: {f.reason}", newlines=False),
              file=sys.stderr)
    print(safe(format_summary(s), newlines=False))
    if s.refused:
        print(f"{len(s.refused)} refused record(s) kept in the quarantine table: "
              "afterfix query 'SELECT * FROM quarantine'", file=sys.stderr)
    return EXIT_REFUSED if s.failures or s.refused else EXIT_OK


def format_summary(s) -> str:
    traces = f"{s.traces:,} trace{'s' if s.traces != 1 else ''} fetched"
    if s.searched:
        traces += f" (of {s.matched:,} found)"
    failed = f", {len(s.failures):,} failed" if s.failures else ""
    return (f"{s.backend} {s.url}: {traces}{failed}: {s.spans_stored:,} spans new, {s.duplicates:,} spans already "
            f"stored, {len(s.refused):,} records refused, {s.redactions:,} redactions ({s.seconds:.2f} s)")
