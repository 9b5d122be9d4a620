"""Benchmark: the morning briefing of a night of 200-odd incidents and 1M spans, target ≤ 20 s.

The night is bignight.py's (as for findings.py; `--keep DIR` shares its folder). The clock covers
`afterfix.reports.render.brief(store, since, until, output)` over the night's window, as `make demo`
briefs it: papermill starting a new kernel, the template's cells (`open_briefing`, which computes
the briefing with every finding, and its nine sections shown with their figures), nbconvert
writing the offline HTML, and the handoff read back. `--repeat` times; the median is the figure.
Each run also keeps its executed notebook, whose papermill timings split the time: the kernel's
start and the cells, nbconvert, and what is left (reading the handoff, writing the file).

    .venv/bin/python benchmarks/briefing.py [--spans 1000000] [--copies 10] [--repeat 3] [--keep DIR] [--night DIR]
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

import bignight  # noqa: E402
import demo_night  # noqa: E402
from findings import describe, night  # noqa: E402
from otlp_http import machine  # noqa: E402

TARGET_S = 20.0


class Clock:
    """Seconds spent in papermill's execute_notebook and in nbconvert, around brief()'s own calls."""

    def __init__(self):
        import papermill

        from afterfix.reports import render

        self.spent: dict[str, float] = {}
        for owner, name, label in ((papermill, "execute_notebook", "papermill"), (render, "to_html", "nbconvert")):
            setattr(owner, name, self._timed(getattr(owner, name), label))

    def _timed(self, fn, label):
        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.spent[label] = self.spent.get(label, 0.0) + time.perf_counter() - t0
        return timed


def cell_seconds(notebook: Path) -> tuple[float, float]:
    """(all code cells, the cell calling open_briefing): run times as papermill recorded them."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    cells = [(float(c.metadata.get("papermill", {}).get("duration") or 0.0), c.source)
             for c in nb.cells if c.cell_type == "code"]
    return sum(t for t, _ in cells), sum(t for t, src in cells if "open_briefing(" in src)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", type=int, default=1_000_000)
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None, help="build the night here and keep it (reused when present)")
    demo_night.add_argument(ap)
    args = ap.parse_args()
    from afterfix.reports.render import brief

    folder = args.keep or Path(tempfile.mkdtemp(prefix="afterfix-bench-briefing-"))
    out = Path(tempfile.mkdtemp(prefix="afterfix-bench-briefing-out-"))
    try:
        big, seed = night(folder, args.copies, args.spans, args.night)
        seed.close()
        print(machine())
        since, until = bignight.window(big)
        print(f"night: {describe(big)}; window {since:%Y-%m-%d %H:%M} to {until:%H:%M:%S} UTC")
        big.close()
        clock = Clock()
        times, splits, done = [], [], None
        for i in range(args.repeat):
            clock.spent.clear()
            html, notebook = out / f"briefing-{i}.html", out / f"briefing-{i}.ipynb"
            t0 = time.perf_counter()
            done = brief(folder / "store", since=since.isoformat(), until=until.isoformat(), output=html,
                         notebook=notebook)
            times.append(time.perf_counter() - t0)
            pm, nbc = clock.spent.get("papermill", 0.0), clock.spent.get("nbconvert", 0.0)
            splits.append((pm, *cell_seconds(notebook), nbc, times[-1] - pm - nbc))
        size = done.html.stat().st_size
        print(f"briefing: {size / 1e6:.2f} MB of HTML; handoff: {done.handoff[0] if done.handoff else '(none)'}")
        pm, cells, build, nbc, rest = (statistics.median(s[k] for s in splits) for k in range(5))
        median = statistics.median(times)
        print(f"time split (medians), s: papermill {pm:.2f} (kernel start and papermill's own {pm - cells:.2f}, "
              f"cells {cells:.2f}, of which open_briefing {build:.2f}), nbconvert {nbc:.2f}, "
              f"the rest {rest:.2f}")
        print(f"brief(): median {median:.2f} s of {', '.join(f'{t:.2f}' for t in times)} "
              f"(target ≤ {TARGET_S:.0f} s: {'met' if median <= TARGET_S else 'MISSED'})")
    finally:
        shutil.rmtree(out, ignore_errors=True)
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
