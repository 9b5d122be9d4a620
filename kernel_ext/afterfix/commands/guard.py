"""`afterfix guard`: watch each agent change with its analysis, and roll back the ones that fail.

    afterfix guard [--store PATH] [--kubeconfig PATH] [--context NAME] [--prometheus URL | --metrics store]
                   [--policy FILE] [--webhook URL] [--interval-floor SECONDS] [--lookback 24h]
                   [--max-rollbacks N] [--once]

Runs until SIGTERM or SIGINT (a clean stop, exit 0, recorded on every analysis in progress);
with `--once`, one pass. What it does is in afterfix.undo.guard and docs/guard.md.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from afterfix.cli import safe, seconds_arg

DEFAULT_LOOKBACK = "24h"


_seconds = seconds_arg(3600)


def _duration(text: str):
    from afterfix.analysis.window import parse_duration

    span = parse_duration(text)
    if span is None or span.total_seconds() <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: write e.g. 24h, 90m, 7d")
    return span


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number, 0 or more (0: never roll back automatically)")
    return value


def register(subparsers) -> None:
    from afterfix.cli import _cluster_options, _store_option

    p = subparsers.add_parser(
        "guard", help="watch each agent change with its analysis; roll back the ones that fail, alert people",
        description="Keep one analysis (Argo Rollouts' metric vocabulary) per applied agent action: the one its "
                    "trace recorded, else the first --policy rule matching its kind and namespace. A failed "
                    "analysis is rolled back through the same engine as `afterfix rollback` (at most "
                    "--max-rollbacks automatic rollbacks per target a day) and people are alerted; an "
                    "inconclusive one waits for a person. Every measurement and outcome goes to the analyses "
                    "ledger; a restarted guard resumes from it. Runs until SIGTERM or SIGINT.")
    _store_option(p)
    _cluster_options(p)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--prometheus", default=None, metavar="URL",
                        help="read metrics from this Prometheus (its HTTP API), e.g. http://prometheus:9090")
    source.add_argument("--metrics", choices=("store",), default=None,
                        help="read metrics from the store's metric history (the default)")
    p.add_argument("--policy", default=None, metavar="FILE",
                   help="guard policy (YAML) for actions whose trace recorded no analysis "
                        "(templates/guard-policy.yaml is an example)")
    p.add_argument("--webhook", default=None, metavar="URL",
                   help="POST each alert here as JSON (default: $AFTERFIX_WEBHOOK; none: alerts are only rows)")
    p.add_argument("--interval-floor", type=_seconds, default=10.0, metavar="SECONDS",
                   help="measure no metric more often than this, whatever its interval says (default: 10)")
    p.add_argument("--lookback", type=_duration, default=_duration(DEFAULT_LOOKBACK), metavar="DURATION",
                   help="watch actions started this long ago or less (default: 24h)")
    p.add_argument("--max-rollbacks", type=_count, default=3, metavar="N",
                   help="automatic rollbacks of one target per 24 h; past them, an alert asks a person (default: 3)")
    p.add_argument("--once", action="store_true",
                   help="one pass (resume, new actions, measurements due now, what their outcomes call for), then exit")
    p.set_defaults(func=cmd_guard)


class _SafeFormatter(logging.Formatter):
    """Log lines carry trace text (names, conditions): control characters are shown as escapes."""

    def format(self, record: logging.LogRecord) -> str:
        return "afterfix guard: " + safe(super().format(record), newlines=False)


def cmd_guard(args) -> int:
    from afterfix.cli import EXIT_OK, _store
    from afterfix.metrics import PrometheusMetrics, StoreMetrics
    from afterfix.undo.guard import Guard
    from afterfix.undo.kube import connect
    from afterfix.undo.notify import Notifier
    from afterfix.undo.policy import load_policy

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_SafeFormatter("%(message)s"))
    logger = logging.getLogger("afterfix.undo")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    store = _store(args)
    policy = load_policy(args.policy) if args.policy else None
    source = PrometheusMetrics(args.prometheus) if args.prometheus else StoreMetrics(store)
    notifier = Notifier(store, args.webhook)
    cluster = connect(args.kubeconfig, args.context)
    guard = Guard(store, source, policy=policy, notifier=notifier, cluster=cluster,
                  interval_floor_s=args.interval_floor, lookback=args.lookback, max_rollbacks=args.max_rollbacks)

    stop, received = threading.Event(), []

    def on_signal(signum, _frame):
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"afterfix guard: {guard.name} watching {store.where} with metrics from {source.where}, policy "
              f"{args.policy or 'none'}, webhook {'set' if notifier.webhook else 'none'}, cluster {cluster.server}",
              file=sys.stderr, flush=True)
        guard.run(stop, once=args.once, reason=lambda: received[0] if received else "--once")
        in_progress = len(guard.watches)
        if stop.is_set():
            print(f"afterfix guard: stopped cleanly ({received[0]}); {in_progress} analyses in progress resume "
                  "when a guard starts again", file=sys.stderr, flush=True)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        logger.removeHandler(handler)
        cluster.close()
    return EXIT_OK
