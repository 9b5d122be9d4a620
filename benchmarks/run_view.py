"""Benchmark: opening a run in the RunView widget, targets ≤ 1 s at 500 steps and ≤ 3 s at 5,000.

Builds, in a temporary store, one synthetic agent run per size (benchmarks/synth.py: an
invoke_agent root, tool calls with JSON arguments and results, a model call, a decision with three
options and an action in every ten spans), ingested from OTLP/JSON as a file would be. The clock
covers `afterfix.widgets.run_view.RunView(store, run_id)`: the run's spans and option events read
from the store, the decision tree and timeline built, both plotly figures drawn and serialized
into the widget (the tree capped at 400 rows, saying how many it left out), the first page of 50
steps and the first step's details rendered, the verdicts read. What the browser then does with
the figure JSON is not on this clock. "first" is the first open of the process (a new Store;
the imports, printed apart, done before); the figure is the median of `--repeat` opens with a new
Store each time.

    .venv/bin/python benchmarks/run_view.py [--sizes 500,5000] [--repeat 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from otlp_http import machine  # noqa: E402
from synth import write_otlp_file  # noqa: E402

TARGETS_S = {500: 1.0, 5000: 3.0}


def build(root: Path, sizes: list[int]):
    """A store holding one run of each size; returns (store path, {size: run_id})."""
    from afterfix.ingest.files import ingest_paths
    from afterfix.store import Store

    store = Store(root / "store")
    store.create()
    runs = {}
    for i, n in enumerate(sizes):
        path = write_otlp_file(root / f"run-{n}.jsonl", n, seed=11 + i, spans_per_run=n)
        # synth numbers runs from 0 in every file: give each size its own run and incident id
        runs[n] = f"run-{n}-steps"
        path.write_bytes(path.read_bytes().replace(b"run-0000000", runs[n].encode())
                         .replace(b"inc-000000", f"inc-{n}-steps".encode()))
        ingest_paths(store, [path])
    store.close()
    return root / "store", runs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="500,5000", help="steps per run, comma separated (default 500,5000)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", type=Path, default=None, help="build the store here and keep it")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    print(machine(), flush=True)

    root = args.keep or Path(tempfile.mkdtemp(prefix="afterfix-runview-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        path, runs = build(root, sizes)
        t0 = time.perf_counter()
        import afterfix.analysis.signals  # noqa: F401  what RunView imports on its first open
        import afterfix.figures.timeline  # noqa: F401
        import afterfix.figures.tree  # noqa: F401
        import afterfix.review.verdicts  # noqa: F401
        from afterfix.store import Store
        from afterfix.widgets.run_view import RunView

        print(f"imports (plotly, ipywidgets, the figures), once a kernel: {time.perf_counter() - t0:.2f} s", flush=True)

        for n in sizes:
            times = []
            for k in range(args.repeat + 1):
                store = Store(path)
                t0 = time.perf_counter()
                view = RunView(store, runs[n])
                times.append(time.perf_counter() - t0)
                if k == 0:
                    steps, decisions = len(view._rows), sum(len(t.nodes("decision")) for t in view.trees)
                view.close()
                store.close()
            first, rest = times[0], times[1:] or times
            median = statistics.median(rest)
            target = TARGETS_S.get(n)
            verdict = f" (target ≤ {target:g} s: {'met' if median <= target else 'MISSED'})" if target else ""
            print(f"run view, {n:,}-step run ({steps:,} steps, {decisions:,} decisions): first open {first:.2f} s, "
                  f"median {median:.2f} s of {len(rest)}{verdict}", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
