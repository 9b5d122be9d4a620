"""Benchmark: a rollback plan for one agent action against the simulator, target ≤ 1 s.

Plays the demo night (seed 0) into a fresh store (demo_night.py; `--night DIR` shares it, and a
copy of it gets the example traces `afterfix demo` adds: the demo's briefing and regression suite
are not timed here), serves the cluster it left behind with the Kubernetes API simulator over
HTTP, and times `afterfix.undo.plan.make_plan` through the official client for every applied
change of the night: each plan reads the action from the store, the object live, and whatever its
checks need (HPAs, ReplicaSet revisions, consumers, later actions). The clock covers the first
plan of the process (a new Store and client: connections opened inside the clock) and then each
action `--repeat` times; the figure is the slowest median.

    .venv/bin/python benchmarks/plan.py [--repeat 5] [--night DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import demo_night  # noqa: E402
from otlp_http import machine  # noqa: E402

TARGET_S = 1.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    demo_night.add_argument(ap)
    args = ap.parse_args()
    from afterfix.ingest.files import ingest_paths
    from afterfix.nightshift.apiserver import ApiServer
    from afterfix.nightshift.clock import SimClock
    from afterfix.nightshift.cluster import Cluster
    from afterfix.nightshift.demo import _examples_dir
    from afterfix.store import Store
    from afterfix.undo.kube import connect
    from afterfix.undo.plan import PlanError, make_plan

    with tempfile.TemporaryDirectory() as tmp, demo_night.demo_night(args.night) as night:
        tmp = Path(tmp)
        # a copy, so that a shared night stays as it was played
        shutil.copytree(night.store, tmp / "store")
        shutil.copy(night.state_file, tmp / "cluster.json")
        examples = _examples_dir()
        if examples is not None:
            played = Store(tmp / "store")
            ingest_paths(played, [examples], progress=False)
            played.close()
        cluster = Cluster(SimClock(), state_file=tmp / "cluster.json")
        with ApiServer(cluster) as server:
            kubeconfig = server.write_kubeconfig(tmp / "kubeconfig")
            store = Store(tmp / "store")
            ids = list(store.query("SELECT DISTINCT action_id FROM actions WHERE mutating AND status = 'applied'")["action_id"])
            t0 = time.perf_counter()
            first_client = connect(kubeconfig=str(kubeconfig))
            try:
                make_plan(Store(tmp / "store"), first_client, ids[0])
            except PlanError:
                pass
            first = time.perf_counter() - t0
            client = connect(kubeconfig=str(kubeconfig))
            rows = []
            for action_id in ids:
                times, outcome = [], None
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    try:
                        outcome = make_plan(store, client, action_id).outcome
                    except PlanError as e:
                        outcome = f"cannot plan ({type(e).__name__})"
                    times.append(time.perf_counter() - t)
                rows.append({"action_id": action_id, "outcome": outcome, "median_ms": round(statistics.median(times) * 1000, 1),
                             "max_ms": round(max(times) * 1000, 1)})
            client.close()
            first_client.close()
    worst = max(r["median_ms"] for r in rows)
    print(machine())
    print(json.dumps({"benchmark": "plan", "actions": len(rows), "first_plan_ms": round(first * 1000, 1),
                      "slowest_median_ms": worst, "target_ms": TARGET_S * 1000, "rows": rows}, indent=1))
    print(f"\nplan: slowest median {worst:.0f} ms over {len(rows)} actions, first plan of the process "
          f"{first * 1000:.0f} ms (target ≤ {TARGET_S * 1000:.0f} ms): {'met' if max(worst, first * 1000) <= TARGET_S * 1000 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
