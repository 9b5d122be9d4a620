"""The write-ahead spool: durable records, segments deleted once committed, dead owners replayed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from afterfix import Store
from afterfix.ingest.ingester import Ingester
from afterfix.ingest.spool import Spool, SpoolPosition, read_records
from siblings import load_sibling

_helpers = load_sibling(__file__, "test_ingester")
make_batch, count = _helpers.make_batch, _helpers.count


def segments(spool_dir: Path) -> list[str]:
    return sorted(p.name for p in spool_dir.glob("seg-*.arrows"))


def test_records_read_back_as_written(store):
    spool = Spool(store)
    written = [make_batch(3, refused=1, redactions=2), make_batch(2, start=3)]
    positions = [spool.append(b) for b in written]
    assert positions[0] < positions[1] and positions[0].segment == positions[1].segment
    back = list(read_records(spool.dir / "seg-00000001.arrows"))
    assert [end for end, _ in back] == [p.end for p in positions]
    for (_, got), want in zip(back, written):
        assert got.spans.equals(want.spans) and got.events.equals(want.events)
        assert got.quarantine.equals(want.quarantine) and got.redactions == want.redactions
    spool.close()
    assert spool.dir.exists()  # nothing was committed: left for the next process


def test_committed_segments_are_deleted_and_a_clean_close_removes_the_folder(store):
    spool = Spool(store, segment_bytes=1)  # every record gets its own segment
    ing = Ingester(store, interval=0.05)
    ing.start()
    try:
        for i in range(3):
            spool.submit(make_batch(2, start=2 * i), ing)
        assert ing.flush()
        assert spool.pending_records == 0
        assert len(segments(spool.dir)) <= 1  # only the segment being written may stay
        assert count(store) == 6
        offsets = store.offsets()
        assert any(src.startswith(f"spool:{spool.owner_id}/") for src in offsets)
    finally:
        ing.stop()
        spool.close()
    assert not spool.dir.exists()


def test_concurrent_submits_share_fsyncs_and_each_returns_only_once_its_record_is_synced(store, monkeypatch):
    import threading

    import afterfix.ingest.spool as spool_module

    spool = Spool(store)
    ing = Ingester(store, interval=3600)  # not started: the records stay pending
    completed: list[int] = []  # for each finished fsync, how many records were written when it began
    real_fsync = os.fsync

    def slow_fsync(fd):
        began = spool._written
        time.sleep(0.2)
        real_fsync(fd)
        if began:  # not the folder's fsyncs before the first record
            completed.append(began)

    monkeypatch.setattr(spool_module.os, "fsync", slow_fsync)
    returned: list[tuple[int, int]] = []  # (record end, records known synced when submit returned)

    def send(i: int) -> None:
        pos = spool.submit(make_batch(2, start=2 * i), ing)
        returned.append((pos.end, max(completed, default=0)))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(returned) == 6
    assert len(completed) < 6  # without sharing, one fsync per record
    for ticket, (_, synced) in enumerate(sorted(returned), start=1):
        assert synced >= ticket
    monkeypatch.undo()
    spool.close()
    assert len(list(read_records(spool.dir / "seg-00000001.arrows"))) == 6


def test_a_torn_record_at_the_end_is_ignored(store):
    spool = Spool(store)
    good = spool.append(make_batch(2))
    spool.close()
    seg = spool.dir / "seg-00000001.arrows"
    with open(seg, "ab") as f:
        f.write(open(seg, "rb").read()[: good.end // 2])  # half a record: a crash mid-write
    assert [end for end, _ in read_records(seg)] == [good.end]


_CRASHER = """
import sys, os
sys.path.insert(0, sys.argv[1])
import importlib.util
spec = importlib.util.spec_from_file_location("h", sys.argv[2]); h = importlib.util.module_from_spec(spec); spec.loader.exec_module(h)
from afterfix import Store
from afterfix.ingest.ingester import Ingester
from afterfix.ingest.spool import Spool
store = Store(sys.argv[3])
spool = Spool(store, segment_bytes=int(sys.argv[5]))
ing = Ingester(store, interval=3600)  # never commits on its own
ing.start()
for i in range(int(sys.argv[4])):
    spool.submit(h.make_batch(3, start=3 * i, refused=1), ing)
    if i == 1:
        ing.flush()  # the first two records are committed, the rest only spooled
print(spool.owner_id, flush=True)
sys.stdin.read()
"""


def crash_after_spooling(store: Store, records: int, segment_bytes: int = 64 << 20) -> str:
    """A process spools `records` batches, commits the first two, and is killed with SIGKILL."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASHER, str(Path(__file__).parents[1]), str(Path(__file__).with_name("test_ingester.py")),
         str(store.root), str(records), str(segment_bytes)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    owner = proc.stdout.readline().strip()
    assert owner, proc.stderr.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return owner


@pytest.mark.parametrize("segment_bytes", [64 << 20, 1])
def test_a_dead_owners_spool_is_replayed_once_and_removed(store, segment_bytes):
    owner = crash_after_spooling(store, records=5, segment_bytes=segment_bytes)
    assert count(store) == 6 and count(store, "quarantine") == 2
    assert (store.root / "spool" / owner).is_dir()

    spool = Spool(store)
    ing = Ingester(store, interval=0.05)
    ing.start()
    try:
        submitted = spool.recover(ing)
        assert ing.flush()
    finally:
        ing.stop()
    assert submitted == 3  # the two committed records are skipped by their offsets
    assert count(store) == 15 and count(store, "quarantine") == 5  # nothing twice, quarantine included
    assert not (store.root / "spool" / owner).exists()
    assert spool.adopted == [owner] and spool.replayed == 3


def test_a_live_owners_spool_is_left_alone(store):
    alive = Spool(store)
    alive.append(make_batch(2))
    other = Spool(store)
    ing = Ingester(store, interval=0.05)
    assert other.recover(ing) == 0 and ing.stats().pending == 0
    assert alive.dir.exists()
    alive.close()


def test_a_recovery_that_dies_midway_is_finished_by_the_next_process(store):
    owner = crash_after_spooling(store, records=4)
    # First adopter submits the replay but never commits it, then goes away (lock released).
    first = Spool(store)
    idle = Ingester(store, interval=3600)
    assert first.recover(idle) == 2
    first.close()  # stopping before the replay is committed releases the folder
    assert (store.root / "spool" / owner).is_dir()
    second = Spool(store)
    ing = Ingester(store, interval=0.05)
    assert second.recover(ing) == 2
    assert ing.flush()
    assert count(store) == 12 and count(store, "quarantine") == 4


def test_a_running_process_adopts_a_spool_left_after_it_started(store):
    spool = Spool(store)
    ing = Ingester(store, interval=0.05)
    ing.start()
    spool.start_recovery(ing, every=0.1)
    try:
        owner = crash_after_spooling(store, records=3)  # dies while this process runs
        deadline = time.monotonic() + 30
        while (store.root / "spool" / owner).exists():
            assert time.monotonic() < deadline, "the dead spool was never adopted"
            time.sleep(0.05)
    finally:
        spool.close()
        ing.stop()
    assert count(store) == 9 and count(store, "quarantine") == 3


def test_positions_order_by_segment_then_offset():
    assert SpoolPosition(1, 900) < SpoolPosition(2, 10)
