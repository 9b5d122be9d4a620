"""The demo night (seed 0, every scenario) that several benchmarks time something on, played once.

`played(folder)` plays it with `run_night` into `folder/store`, the cluster it leaves behind in
`folder/work`, unless `folder` already holds a night played there: the benchmarks' `--night DIR`
lets several runs share one played night (the smoke tests share one between the scripts), as
findings.py's and briefing.py's `--keep DIR` share their big night. The benchmarks that take
`--night` only read the night; one that must add to it works on a copy.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DONE = "played"  # written once the night has been played through: a half-played folder is not reused


@dataclass(frozen=True)
class DemoNight:
    folder: Path

    @property
    def store(self) -> Path:
        return self.folder / "store"

    @property
    def workdir(self) -> Path:
        return self.folder / "work"

    @property
    def state_file(self) -> Path:
        """The simulator's state as the night left the cluster."""
        return self.workdir / "cluster.json"


def played(folder: Path) -> DemoNight:
    """The demo night under `folder`, played there first unless it already is."""
    night = DemoNight(Path(folder))
    if (night.folder / DONE).exists():
        return night
    if night.store.exists():
        raise SystemExit(f"{night.folder} holds a store but no finished demo night (no {DONE} file): "
                         f"remove the folder or give another --night")
    from afterfix.nightshift.night import run_night

    night.folder.mkdir(parents=True, exist_ok=True)
    result = run_night(night.store, workdir=night.workdir, seed=0)
    (night.folder / DONE).write_text(f"night {result.night}, seed 0, every scenario\n")
    return night


@contextmanager
def demo_night(folder: Path | None):
    """The demo night under `folder` (played there unless it already is, and kept), or, without a
    folder, played into a temporary one removed afterwards."""
    if folder is not None:
        yield played(folder)
        return
    tmp = Path(tempfile.mkdtemp(prefix="afterfix-bench-night-"))
    try:
        yield played(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def add_argument(ap) -> None:
    """`--night DIR` on a benchmark's parser."""
    ap.add_argument("--night", type=Path, default=None, metavar="DIR",
                    help="the demo night's folder: played there unless it already is, and kept (shared between runs)")
