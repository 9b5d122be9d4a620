"""Benchmark: replaying one rule-based decision, target ≤ 50 ms.

Plays the demo night (seed 0) into a fresh store (demo_night.py; `--night DIR` shares it), opens
it, and times `review.replay.replay_decision` for every decision of the night: reading the
decision and its run from the store (spans, option events), re-making it with its recorded
policy, and comparing the choices. The store is opened and its catalog attached before the clock
(a reviewer's session has it open); the figure is the slowest decision's median over `--repeat`
runs.

    .venv/bin/python benchmarks/replay.py [--repeat 5] [--quick] [--night DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import demo_night  # noqa: E402
from otlp_http import machine  # noqa: E402

TARGET_MS = 50.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="time 3 decisions once each (the smoke run)")
    demo_night.add_argument(ap)
    args = ap.parse_args()
    print(machine())
    from afterfix.review.replay import replay_decision
    from afterfix.store import Store

    # The demo night itself (not `afterfix demo`, whose briefing and regression suite are not timed here)
    with demo_night.demo_night(args.night) as night:
        store = Store(night.store)
        from afterfix.nightshift.policy import POLICIES

        rows = store.query("SELECT decision_id, policy FROM decisions ORDER BY start_time")
        ids = [d for d, p in zip(rows["decision_id"], rows["policy"]) if p in POLICIES]  # the rule-based ones
        repeat = 1 if args.quick else args.repeat
        ids = ids[:3] if args.quick else ids
        medians, diverged = {}, 0
        for did in ids:
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                result = replay_decision(store, did)
                times.append((time.perf_counter() - t0) * 1000)
            diverged += not result.first.same
            medians[did] = statistics.median(times)
        slowest = max(medians, key=medians.get)
        print(f"store: {int(store.query('SELECT count(*) AS n FROM spans')['n'][0]):,} spans; {len(ids)} decisions, "
              f"{repeat} replay(s) each; {diverged} diverged")
        print(f"median of medians {statistics.median(medians.values()):.1f} ms; slowest decision {slowest}")
        met = "met" if medians[slowest] <= TARGET_MS else "MISSED"
        print(f"replay: slowest median {medians[slowest]:.1f} ms over {len(ids)} decisions (target ≤ {TARGET_MS:.0f} ms): {met}")
        store.close()
    return 0 if diverged == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
