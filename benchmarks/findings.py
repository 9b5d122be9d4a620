"""Benchmark: every finding over a night of 200-odd incidents and 1M spans, target ≤ 5 s.

The night is bignight.py's: the simulated night shift played once, copied into 10 tenants, its
investigations made deeper up to 1M spans. The clock covers `afterfix.analysis.findings.find(store,
since, until)` over the night's window (as `make demo` briefs it) on a newly opened store (its
views and first queries included), `--repeat` times; the median is the figure. The findings are
counted by kind, beside those of the demo night it was copied from (each kind the demo night
yields must be there, `--copies` times as often). A last run shares one Scope across the
detectors and times each in turn: where the time goes.

    .venv/bin/python benchmarks/findings.py [--spans 1000000] [--copies 10] [--repeat 3] [--keep DIR] [--night DIR]
"""

from __future__ import annotations

import argparse
import collections
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bignight  # noqa: E402
import demo_night  # noqa: E402
from otlp_http import machine  # noqa: E402

TARGET_S = 5.0


def kinds_line(found) -> str:
    kinds = collections.Counter(f.kind for f in found)
    return ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) or "none"


def _compare(demo, found, copies: int) -> str:
    mine, theirs = collections.Counter(f.kind for f in found), collections.Counter(f.kind for f in demo)
    missing = sorted(set(theirs) - set(mine))
    if missing:
        return f"MISSING {', '.join(missing)}"
    if all(mine[k] == copies * n for k, n in theirs.items()) and set(mine) == set(theirs):
        return f"present, {copies} times as often each"
    return "present (not each in every copy)"


def night(folder: Path, copies: int, spans: int, demo: Path | None = None):
    """The big night's store under `folder` (built there unless it is already), and the demo night's
    it was copied from: played under `folder`, or the one under `demo` (demo_night.py's `--night`)."""
    from afterfix.store import Store

    seed = demo_night.played(demo).store if demo is not None else folder / "seed-store"
    if not (folder / "store").exists():
        _, built = bignight.make(folder, copies=copies, spans=spans, seed_store=Store(seed) if demo is not None else None)
        print(f"built the night in {built:.1f} s")
    return Store(folder / "store"), Store(seed)


def describe(store) -> str:
    counts = store.query("SELECT (SELECT count(*) FROM spans) AS spans, (SELECT count(*) FROM incidents) AS incidents, "
                         "(SELECT count(*) FROM metrics) AS points")
    return (f"{int(counts['spans'][0]):,} spans, {int(counts['incidents'][0])} incidents, "
            f"{int(counts['points'][0]):,} metric points")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", type=int, default=1_000_000)
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None, help="build the night here and keep it (reused when present)")
    demo_night.add_argument(ap)
    args = ap.parse_args()
    from afterfix.analysis.findings import find
    from afterfix.analysis.findings.scope import Scope
    from afterfix.analysis.model import FINDING_KINDS
    from afterfix.store import Store

    folder = args.keep or Path(tempfile.mkdtemp(prefix="afterfix-bench-findings-"))
    try:
        big, seed = night(folder, args.copies, args.spans, args.night)
        print(machine())
        since, until = bignight.window(big)
        print(f"night: {describe(big)}; window {since:%Y-%m-%d %H:%M} to {until:%H:%M:%S} UTC")
        demo = find(seed, since, until)
        print(f"demo night's findings  : {kinds_line(demo)} ({describe(seed)})")
        big.close()
        seed.close()
        times, found = [], []
        for _ in range(args.repeat):
            store = Store(folder / "store")  # a new store object: new connections, views made again
            t0 = time.perf_counter()
            found = find(store, since, until)
            times.append(time.perf_counter() - t0)
            store.close()
        print(f"big night's findings   : {kinds_line(found)}")
        print("every kind the demo night yields: " + _compare(demo, found, args.copies))
        store = Store(folder / "store")
        scope = Scope(store, since=since, until=until)
        split = []
        for kind in FINDING_KINDS:
            t0 = time.perf_counter()
            find(store, kinds=[kind], scope=scope)
            split.append(f"{kind} {time.perf_counter() - t0:.2f}")
        store.close()
        print(f"one run, kind by kind (shared frames read by the first that needs them), s: {', '.join(split)}")
        median = statistics.median(times)
        print(f"find(): median {median:.2f} s of {', '.join(f'{t:.2f}' for t in times)} "
              f"(target ≤ {TARGET_S:.0f} s: {'met' if median <= TARGET_S else 'MISSED'})")
        if {f.kind for f in demo} - {f.kind for f in found}:
            sys.exit(1)  # the big night is not the demo night copied: its figure would not mean much
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
