"""The ingester thread: batches land in the store, offsets with them, nothing dropped when busy."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pyarrow as pa
import pytest

from afterfix import Store, StoreError, schema
from afterfix.ingest.ingester import Batch, Ingester
from kernels import wait_until

T0 = dt.datetime(2026, 11, 27, 2, 47)


def make_batch(n: int, *, start: int = 0, trace: str = "b" * 32, refused: int = 0, redactions: int = 0) -> Batch:
    cols: dict[str, list] = {c[0]: [] for c in schema.SPAN_COLUMNS}
    for i in range(start, start + n):
        row = dict.fromkeys(cols)
        row.update(trace_id=trace, span_id=f"{i + 1:016x}", name=f"span {i}", start_time=T0 + dt.timedelta(milliseconds=i),
                   end_time=T0 + dt.timedelta(milliseconds=i + 1), duration_ms=1.0, attributes="{}",
                   resource_attributes="{}", source="test", ingested_at=T0)
        for k, v in row.items():
            cols[k].append(v)
    spans = pa.Table.from_pydict(cols, schema=schema.SPAN_SCHEMA)
    events = pa.Table.from_pydict(
        {"trace_id": [trace] * n, "span_id": cols["span_id"], "seq": [0] * n, "name": ["e"] * n,
         "time": [T0] * n, "attributes": ["{}"] * n}, schema=schema.EVENT_SCHEMA)
    quarantine = pa.Table.from_pydict(
        {"received_at": [T0] * refused, "source": ["test"] * refused, "location": [f"line {i}" for i in range(refused)],
         "reason": ["bad"] * refused, "record": ["{}"] * refused}, schema=schema.QUARANTINE_SCHEMA)
    return Batch(spans, events, quarantine, redactions)


def count(store: Store, table: str = "spans") -> int:
    return int(store.query(f"SELECT count(*) AS n FROM {table}")["n"][0])


@pytest.fixture
def ingester(store):
    ing = Ingester(store, interval=0.05)
    ing.start()
    yield ing
    ing.stop()


def test_submitted_batches_are_stored_with_events_and_quarantine(store, ingester):
    ingester.submit(make_batch(10, refused=2, redactions=3))
    ingester.submit(make_batch(5, start=10))
    assert ingester.flush()
    assert (count(store), count(store, "events"), count(store, "quarantine")) == (15, 15, 2)
    st = ingester.stats()
    assert (st.spans_stored, st.duplicates, st.refused, st.redacted, st.pending) == (15, 0, 2, 3, 0)
    assert st.last_commit_at is not None and st.last_error is None


def test_spans_become_queryable_without_a_flush(store, ingester):
    ingester.submit(make_batch(3))
    assert wait_until(lambda: count(store) >= 3, every=0.02), "spans never committed"  # the interval commit alone


def test_the_same_spans_twice_are_stored_once_and_counted_as_duplicates(store, ingester):
    ingester.submit(make_batch(4))
    ingester.flush()
    ingester.submit(make_batch(6))
    ingester.flush()
    assert count(store) == 6
    assert ingester.stats().duplicates == 4


@pytest.mark.parametrize("submissions, expected", [
    ([[("f.jsonl", "fp1", 100)], [("f.jsonl", "fp1", 250)]], {"f.jsonl": ("fp1", 250)}),
    ([[("f.jsonl", "fp1", 900)], [("f.jsonl", "fp2", 40)]], {"f.jsonl": ("fp2", 40)}),  # replaced file restarts
    ([[("a", "x", 1), ("b", "y", 2)], []], {"a": ("x", 1), "b": ("y", 2)}),
])
def test_offsets_are_committed_with_the_data_newest_submission_wins(store, ingester, submissions, expected):
    for i, offsets in enumerate(submissions):
        ingester.submit(make_batch(1, start=i), offsets=offsets)
    assert ingester.flush()
    assert store.offsets() == expected


def test_offsets_of_later_commits_win(store, ingester):
    for pos in (10, 20, 30):
        ingester.submit(make_batch(1, start=pos), offsets=[("f", "fp", pos)])
        ingester.flush()
    assert store.offsets() == {"f": ("fp", 30)}


def test_on_commit_runs_once_after_the_commit(store, ingester):
    seen = []
    ingester.submit(make_batch(2), on_commit=lambda: seen.append(count(store)))
    ingester.flush()
    assert seen == [2]


def lock_catalog(store: Store):
    """Another writer in the middle of a transaction on the store's SQLite catalog."""
    import duckdb

    from afterfix.store import _extension_files

    holder = duckdb.connect()
    holder.execute(f"LOAD '{_extension_files()[1]}'")
    holder.execute(f"ATTACH '{store.catalog}' AS c (TYPE sqlite)")
    holder.execute("BEGIN")
    holder.execute("CREATE TABLE c.held (a INTEGER)")
    return holder


def test_a_busy_store_keeps_the_batch_and_retries(tmp_path):
    """The catalog held by another writer: the commit fails, is reported, and succeeds later."""
    Store(tmp_path / "s").create()
    busy = Store(tmp_path / "s", busy_timeout_ms=20, retries=2)
    ing = Ingester(busy, interval=0.05)
    holder = lock_catalog(busy)
    committed = threading.Event()
    try:
        ing.start()
        ing.submit(make_batch(7), offsets=[("f", "fp", 70)], on_commit=committed.set)
        assert wait_until(lambda: ing.stats().errors, every=0.02), "the commit never failed"  # the first attempt fails
        st = ing.stats()
        assert st.errors >= 1 and "busy" in st.last_error.lower() and st.pending == 7 and not committed.is_set()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert ing.flush(timeout=30)
    assert committed.is_set()
    ing.stop()
    reader = Store(tmp_path / "s")
    assert count(reader) == 7 and reader.offsets() == {"f": ("fp", 70)}


def test_overloaded_when_more_than_max_pending(store):
    ing = Ingester(store, interval=60, max_pending_spans=10)  # not started: nothing commits
    ing.submit(make_batch(10))
    assert not ing.overloaded
    ing.submit(make_batch(1, start=10))
    assert ing.overloaded and ing.stats().pending == 11
    assert ing.flush()  # commits on the caller's thread when the thread is not running
    assert not ing.overloaded and count(store) == 11


def test_half_the_pending_limit_commits_at_once_instead_of_at_the_next_round(store):
    ing = Ingester(store, interval=3600, max_pending_spans=10)
    ing.start()
    try:
        ing.submit(make_batch(4))  # under half: waits for the round, an hour away
        time.sleep(0.5)
        assert count(store) == 0
        ing.submit(make_batch(1, start=4))  # half the limit: committed now
        assert wait_until(lambda: count(store) == 5, timeout=30)
    finally:
        ing.stop()


def test_under_a_heavy_stream_what_arrives_during_a_commit_is_the_next_commit_not_a_small_one(store):
    # Half the limit counts only what waits, not the commit in progress: else the spans that
    # arrive during a commit woken by half the limit reached it again at once, and went into a
    # small commit of their own right after, every other commit.
    ing = Ingester(store, interval=3600, max_pending_spans=10)
    real_append = store.append
    sizes = []
    arrivals = iter([make_batch(3, start=100)])

    def append_while_more_arrives(spans=None, **kw):
        sizes.append(spans.num_rows)
        nxt = next(arrivals, None)
        if nxt is not None:
            ing.submit(nxt)  # 5 in the commit + 3 waiting: half the limit only with the commit
        return real_append(spans=spans, **kw)

    store.append = append_while_more_arrives
    ing.start()
    try:
        ing.submit(make_batch(5))  # half the limit: committed now
        assert wait_until(lambda: count(store) == 5, timeout=30)
        time.sleep(0.5)
        assert sizes == [5] and ing.stats().pending == 3, "the 3 that arrived meanwhile went in a commit of their own"
        ing.submit(make_batch(2, start=200))  # 5 waiting: half the limit
        assert wait_until(lambda: count(store) == 10, timeout=30)
        assert sizes == [5, 5]
    finally:
        ing.stop()


def test_wait_for_room_waits_for_a_commit_and_gives_up_when_the_store_stays_busy(tmp_path):
    Store(tmp_path / "s").create()
    busy = Store(tmp_path / "s", busy_timeout_ms=20, retries=1)
    idle = Ingester(busy, interval=3600, max_pending_spans=10)  # not started: nothing can make room
    idle.submit(make_batch(11))
    t = time.monotonic()
    assert not idle.wait_for_room(30) and time.monotonic() - t < 5

    ing = Ingester(busy, interval=3600, max_pending_spans=10)
    holder = lock_catalog(busy)
    ing.start()
    try:
        ing.submit(make_batch(11))
        assert not ing.wait_for_room(0.5)  # every commit fails while the catalog is held
        holder.execute("ROLLBACK")
        assert ing.wait_for_room(30)  # the retried commit makes room
        assert count(busy) == 11
    finally:
        holder.close()
        ing.stop()


def test_stop_commits_what_was_submitted(store):
    ing = Ingester(store, interval=60)
    ing.start()
    ing.submit(make_batch(5))
    ing.stop()
    assert count(store) == 5


def test_lag_and_rate(store):
    ing = Ingester(store, interval=60)
    ing.start()
    try:
        ing.submit(make_batch(4))
        time.sleep(0.2)
        assert ing.stats().lag_s >= 0.2
        ing.flush()
        st = ing.stats()
        assert st.lag_s == 0 and st.rate_per_s > 0
    finally:
        ing.stop()


def test_a_batch_with_the_wrong_columns_is_refused_on_submit(store, ingester):
    class Wrong:
        spans = pa.table({"trace_id": ["x"]})
        events = schema.empty("events")
        redactions = 0

        def quarantine_table(self):
            return schema.empty("quarantine")

    with pytest.raises(StoreError, match="schema"):
        ingester.submit(Wrong())
    assert ingester.stats().pending == 0


def test_compaction_runs_between_commits_without_disturbing_them(store):
    ing = Ingester(store, interval=0.05, compact_every_s=0)
    ing.start()
    try:
        for i in range(4):
            ing.submit(make_batch(5, start=5 * i), offsets=[("f", "fp", i)])
            assert ing.flush()
        st = ing.stats()
    finally:
        ing.stop()
    assert st.last_error is None and st.batches == 4
    assert count(store) == 20 and store.offsets() == {"f": ("fp", 3)}


def test_a_heavy_stream_compacts_before_the_time_is_up(store):
    ing = Ingester(store, interval=0.05, compact_every_s=3600, compact_every_spans=10)
    ing.start()
    try:
        for i in range(3):
            ing.submit(make_batch(5, start=5 * i))
            assert ing.flush()
        wait_until(lambda: ing.stats().compactions, every=0.05)
        st = ing.stats()
    finally:
        ing.stop()
    assert st.compactions >= 1 and st.last_error is None
    assert count(store) == 15
    # small commits are inlined in the catalog until a compaction writes them to Parquet
    assert store.query("SELECT count(*) AS n FROM ducklake_list_files('lake', 'spans')")["n"][0] >= 1


def test_what_arrives_during_a_commit_waits_for_the_next_round(store):
    # Under a steady stream, committing new arrivals straight after each commit would make every
    # commit a few hundred spans; they wait for the next interval and go in together.
    ing = Ingester(store, interval=3600)
    real_append = store.append
    arrivals = iter([make_batch(3, start=100), make_batch(4, start=200)])

    def append_while_more_arrives(**kw):
        nxt = next(arrivals, None)
        if nxt is not None:
            ing.submit(nxt)
        return real_append(**kw)

    store.append = append_while_more_arrives
    ing.start()
    try:
        ing.submit(make_batch(5))
        assert ing.flush()
        assert count(store) == 5 and ing.stats().pending == 3
        assert ing.flush()  # the next round takes what arrived, and only that
        assert count(store) == 8 and ing.stats().pending == 4
        assert ing.flush()
        assert count(store) == 12 and ing.stats().pending == 0
    finally:
        ing.stop()


def test_a_running_ingester_holds_the_catalog_open(store):
    # See CatalogHold: while commits come and go the catalog's WAL stays, so no connection
    # waits on another's final checkpoint; the hold ends with the ingester.
    wal = store.catalog.with_name("catalog.sqlite-wal")
    ing = Ingester(store, interval=0.05)
    ing.start()
    try:
        for k in range(3):
            ing.submit(make_batch(5, start=5 * k))
            assert ing.flush()
        assert wal.exists()
        assert count(store) == 15
    finally:
        ing.stop()
    assert not wal.exists()


def test_the_ingester_makes_the_store_before_anything_arrives(tmp_path):
    # The writer's connection (extensions, attach, views) is opened before the first round,
    # so the first commit does not add it to the wait of what it acknowledges.
    store = Store(tmp_path / "store")
    ing = Ingester(store, interval=0.05)
    ing.start()
    try:
        assert wait_until(store.exists, every=0.02)
    finally:
        ing.stop()
