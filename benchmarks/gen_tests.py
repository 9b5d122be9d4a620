"""Benchmark: `afterfix gen-tests` for the demo night's incidents (target ≤ 10 s), and the generated
suite under plain pytest (target ≤ 60 s).

Plays the demo night (seed 0) into a fresh store (demo_night.py; `--night DIR` shares it), then
times `trust.gentests.generate` over every incident whose agent did well (`candidates`), the store
opened before the clock, and a pytest subprocess on the suite it wrote.

    .venv/bin/python benchmarks/gen_tests.py [--quick] [--night DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import demo_night  # noqa: E402
from otlp_http import machine  # noqa: E402

GEN_TARGET_S, SUITE_TARGET_S = 10.0, 60.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 incidents only (the smoke run)")
    demo_night.add_argument(ap)
    args = ap.parse_args()
    print(machine())
    from afterfix.store import Store
    from afterfix.trust.gentests import candidates, generate

    # The demo night itself (not `afterfix demo`, whose briefing and regression suite are not timed here)
    with tempfile.TemporaryDirectory() as tmp, demo_night.demo_night(args.night) as night:
        tmp = Path(tmp)
        store = Store(night.store)
        store.query("SELECT count(*) FROM spans")
        ids = candidates(store)
        ids = ids[:3] if args.quick else ids
        t0 = time.perf_counter()
        written = generate(store, ids, tmp / "suite")
        gen_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp / "suite")],
                              capture_output=True, text=True, cwd=tmp / "suite")
        run_s = time.perf_counter() - t0
        last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
        print(f"suite: {len(ids)} incidents, {len(written)} files; pytest: {last}")
        print(f"gen-tests: {gen_s:.2f} s for {len(ids)} incidents (target ≤ {GEN_TARGET_S:.0f} s): "
              f"{'met' if gen_s <= GEN_TARGET_S else 'MISSED'}")
        print(f"suite run: {run_s:.2f} s under pytest (target ≤ {SUITE_TARGET_S:.0f} s): "
              f"{'met' if run_s <= SUITE_TARGET_S else 'MISSED'}")
        store.close()
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
