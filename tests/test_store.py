"""The store: atomic appends, stored-once, offsets, read-only queries, several processes at once."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

import afterfix.store as store_module
from afterfix import ReadOnlyQuery, Store, schema
from afterfix.catalog_hold import CatalogHold

T0 = dt.datetime(2026, 11, 27, 2, 47)


def make_spans(n: int, *, trace: str = "a" * 32, start: int = 0, run_id: str = "run-1") -> pa.Table:
    cols: dict[str, list] = {c[0]: [] for c in schema.SPAN_COLUMNS}
    for i in range(start, start + n):
        row = dict.fromkeys(cols)
        row.update(
            trace_id=trace, span_id=f"{i + 1:016x}", name=f"execute_tool kubectl_get #{i}", kind="INTERNAL",
            start_time=T0 + dt.timedelta(milliseconds=i), end_time=T0 + dt.timedelta(milliseconds=i + 5),
            duration_ms=5.0, status_code="OK", operation="execute_tool", run_id=run_id, tool_name="kubectl_get",
            attributes='{"gen_ai.tool.name": "kubectl_get"}', resource_attributes="{}", source="test", ingested_at=T0,
        )
        for k, v in row.items():
            cols[k].append(v)
    return pa.Table.from_pydict(cols, schema=schema.SPAN_SCHEMA)


def make_events(spans: pa.Table) -> pa.Table:
    ids = spans.column("span_id").to_pylist()
    return pa.Table.from_pydict(
        {"trace_id": spans.column("trace_id").to_pylist(), "span_id": ids, "seq": [0] * len(ids),
         "name": ["afterfix.option"] * len(ids), "time": [T0] * len(ids), "attributes": ['{"afterfix.option.id": "a"}'] * len(ids)},
        schema=schema.EVENT_SCHEMA,
    )


@pytest.fixture
def local_store(tmp_path) -> Store:
    s = Store(tmp_path / "store")
    s.create()
    yield s
    s.close()


@pytest.fixture
def store(any_store) -> Store:
    """A fresh store of each kind: the tests without `local_store` hold for both."""
    return any_store


def count(store: Store, table: str = "spans") -> int:
    return int(store.query(f"SELECT count(*) AS n FROM {table}")["n"][0])


def test_append_stores_each_span_once(store):
    batch = make_spans(10)
    first = store.append(batch, make_events(batch))
    again = store.append(batch, make_events(batch))
    assert (first.spans_new, first.spans_duplicate, first.events) == (10, 0, 10)
    assert (again.spans_new, again.spans_duplicate, again.events) == (0, 10, 0)
    assert count(store) == 10 and count(store, "events") == 10


def test_overlapping_batch_stores_only_the_new_spans(store):
    store.append(make_spans(10))
    overlap = pa.concat_tables([make_spans(5, start=5), make_spans(5, start=10), make_spans(2, start=10)])
    res = store.append(overlap, make_events(overlap))
    assert res.spans_new == 5
    assert count(store) == 15
    assert count(store, "events") == 5  # events only for the spans newly stored, once each
    assert store.query("SELECT count(DISTINCT span_id) AS n FROM spans")["n"][0] == 15


def test_offsets_commit_with_the_data(store):
    offsets = pa.Table.from_pydict(
        {"source": ["f.jsonl", "f.jsonl"], "fingerprint": ["fp", "fp"], "position": [100, 250], "committed_at": [T0, T0 + dt.timedelta(seconds=1)]},
        schema=schema.OFFSET_SCHEMA,
    )
    store.append(make_spans(1), offsets=offsets)
    assert store.offsets() == {"f.jsonl": ("fp", 250)}


def test_compaction_keeps_only_the_newest_offset_of_each_source(store):
    for i in range(5):
        offsets = pa.Table.from_pydict(
            {"source": ["a.jsonl", "b.jsonl"], "fingerprint": ["fa", "fb"], "position": [10 * i, 100 + i],
             "committed_at": [T0 + dt.timedelta(seconds=i)] * 2},
            schema=schema.OFFSET_SCHEMA,
        )
        store.append(make_spans(1, start=i), offsets=offsets)
    assert count(store, "ingest_offsets") == 10
    store.compact()
    assert count(store, "ingest_offsets") == 2
    assert store.offsets() == {"a.jsonl": ("fa", 40), "b.jsonl": ("fb", 104)}
    assert count(store) == 5


@pytest.mark.parametrize("sql", [
    "DELETE FROM spans",
    "INSERT INTO spans SELECT * FROM spans",
    "CREATE TABLE x (a INT)",
    "SELECT 1; DROP TABLE spans",
    "UPDATE spans SET name = 'x'",
])
def test_queries_are_read_only_unless_asked(store, sql):
    store.append(make_spans(3))
    with pytest.raises(ReadOnlyQuery, match="read-only"):
        store.query(sql)
    assert count(store) == 3


def test_write_query_when_asked(store):
    store.query("CREATE TABLE notes (a INTEGER)", write=True)
    store.query("INSERT INTO notes VALUES (1)", write=True)
    assert int(store.query("SELECT count(*) AS n FROM notes")["n"][0]) == 1


def test_views_exist_on_an_empty_store(store):
    for view in ("runs", "tool_calls", "llm_calls", "decisions", "options", "actions", "incidents", "orphan_spans"):
        assert store.query(f"SELECT * FROM {view}").empty


def test_a_reader_sees_commits_made_after_it_connected(store_spec):
    writer, reader = Store(store_spec), Store(store_spec)
    writer.append(make_spans(2))
    assert count(reader) == 2
    writer.append(make_spans(3, start=2))
    assert count(reader) == 5


def test_read_only_on_a_missing_store_names_the_fix(tmp_path):
    from afterfix import StoreError

    with pytest.raises(StoreError, match="afterfix ingest"):
        Store(tmp_path / "nothing").query("SELECT 1")


_WRITER = """
import sys, importlib.util
spec = importlib.util.spec_from_file_location("store_test", sys.argv[1]); mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
store = mod.Store(sys.argv[2]); store.connection(read_only=False)
import time; time.sleep(max(0.0, float(sys.argv[3]) - time.time()))  # all start together
for r in range(6):
    store.append(mod.make_spans(50, start=r * 50))  # every process sends the same spans
"""


def test_processes_writing_the_same_spans_store_them_once(store_spec):
    import subprocess
    import sys

    path = store_spec
    Store(path).create()
    import time

    start = str(time.time() + 5)
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, __file__, path, start], stderr=subprocess.PIPE, text=True) for _ in range(3)]
    reader = Store(path)
    while any(p.poll() is None for p in procs):
        reader.query("SELECT count(*) FROM spans")  # reading meanwhile never fails
    for p in procs:
        assert p.wait() == 0, p.stderr.read()
    assert count(reader) == 300
    assert reader.query("SELECT count(DISTINCT span_id) AS n FROM spans")["n"][0] == 300


def test_a_moved_store_still_opens_with_its_data(tmp_path):
    import shutil

    first = Store(tmp_path / "here")
    first.append(make_spans(4))
    first.close()
    shutil.move(tmp_path / "here", tmp_path / "there")
    moved = Store(tmp_path / "there")
    assert count(moved) == 4
    moved.append(make_spans(2, start=4))
    assert count(moved) == 6


def _data_files(store: Store, table: str = "spans") -> list:
    return sorted((store.data / "main" / table).glob("*.parquet"))


def test_batches_become_parquet_files_the_lake_lists(local_store):
    store = local_store
    batch = make_spans(50)
    res = store.append(batch, make_events(batch))
    assert (res.spans_new, res.events) == (50, 50)
    assert len(_data_files(store)) == 1 and len(_data_files(store, "events")) == 1
    listed = store.query("SELECT data_file FROM ducklake_list_files('lake', 'spans')")["data_file"].tolist()
    assert [Path(f).name for f in listed] == [f.name for f in _data_files(store)]
    got = store.query("SELECT min(start_time) AS lo, max(span_id) AS hi, count(DISTINCT span_id) AS n FROM spans").iloc[0]
    assert (got["lo"], got["hi"], got["n"]) == (T0, f"{50:016x}", 50)
    # stored once still holds against spans that arrived as a file
    again = store.append(make_spans(60))
    assert (again.spans_new, again.spans_duplicate) == (10, 50)
    assert count(store) == 60


def test_a_moved_store_still_reads_its_parquet_files(tmp_path):
    import shutil

    first = Store(tmp_path / "here")
    first.append(make_spans(40))
    first.close()
    shutil.move(tmp_path / "here", tmp_path / "there")
    assert count(Store(tmp_path / "there")) == 40


def test_an_append_that_does_not_commit_leaves_no_file(local_store):
    store = local_store
    batch = make_spans(50)
    bad_offsets = pa.table({"source": ["x"]})  # not the offsets schema: the insert fails after the files are added
    with pytest.raises(Exception):
        store.append(batch, make_events(batch), offsets=bad_offsets)
    assert count(store) == 0 and count(store, "events") == 0
    assert _data_files(store) == [] and _data_files(store, "events") == []


def test_compaction_merges_files_and_keeps_every_row(store):
    for i in range(4):
        store.append(make_spans(50, start=50 * i))
    files = "SELECT count(*) AS n FROM ducklake_list_files('lake', 'spans')"
    assert store.query(files)["n"][0] == 4
    store.compact()
    assert store.query(files)["n"][0] == 1
    assert count(store) == 200
    assert store.query("SELECT count(DISTINCT span_id) AS n FROM spans")["n"][0] == 200


def test_compact_moves_inlined_rows_to_one_parquet_file(store):
    for i in range(5):
        store.append(make_spans(3, start=3 * i))
    files = "SELECT count(*) AS n FROM ducklake_list_files('lake', 'spans')"
    assert store.query(files)["n"][0] == 0  # small commits are inlined in the catalog
    store.compact()
    assert count(store) == 15
    assert store.query(files)["n"][0] == 1  # flushed to Parquet, as one file


def test_new_stores_use_small_row_groups_and_files(store):
    options = dict(store.query("SELECT option_name, value FROM ducklake_options('lake')").itertuples(index=False))
    assert options["parquet_row_group_size"] == "16384"
    assert options["target_file_size"].lower().replace(" ", "").startswith("64")


def test_compaction_beyond_its_memory_cap_retries_with_the_writers_cap(tmp_path, caplog):
    # Row groups of large spans do not fit a tiny compaction cap: the merge must still happen.
    store = Store(tmp_path / "store", compact_memory_limit="4MB")
    big = "x" * 20_000
    for i in range(6):
        spans = make_spans(300, start=300 * i)
        spans = spans.set_column(spans.schema.get_field_index("attributes"), "attributes",
                                 pa.array([f'{{"blob": "{big}{j}"}}' for j in range(300)], pa.string()))
        store.append(spans)
    files = "SELECT count(*) AS n FROM ducklake_list_files('lake', 'spans')"
    assert store.query(files)["n"][0] == 6
    with caplog.at_level("INFO", logger="afterfix.store"):
        store.compact()
    assert "retrying with 256MB" in caplog.text
    assert store.query(files)["n"][0] == 1
    assert count(store) == 1800
    # the writer's own cap is back for the commits that follow
    assert store.query("SELECT current_setting('memory_limit') AS m", write=True)["m"][0] == "244.1 MiB"


def test_a_held_catalog_keeps_its_wal_between_commits(local_store):
    store = local_store
    from kernels import process_alive  # here: the writer processes above load this file without tests/ on their path

    # Each commit's SQLite connection closes at its end; were it the last one open, SQLite would
    # checkpoint and delete the WAL under an exclusive lock, which is what makes others wait.
    wal = store.catalog.with_name("catalog.sqlite-wal")
    store.append(make_spans(5))
    assert not wal.exists()  # nobody held it: the last connection checkpointed and deleted it
    with store.hold_catalog() as hold:
        assert hold.pid is not None and process_alive(hold.pid)
        store.append(make_spans(5, start=5))
        store.append(make_spans(5, start=10))
        assert wal.exists()
        assert count(store) == 15
    assert not process_alive(hold.pid)
    assert not wal.exists()  # released: the holder was the last connection and checkpointed


def test_a_held_catalog_never_holds_back_a_checkpoint(local_store):
    store = local_store
    # The holder must sit outside any transaction, or the WAL could never be checkpointed
    # and would grow for as long as an ingester runs.
    with store.hold_catalog():
        store.append(make_spans(50))
        # From another process: two copies of SQLite in one process interfere with each other's locks.
        code = "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchone()[0])"
        busy = subprocess.run([sys.executable, "-c", code, str(store.catalog)], capture_output=True, text=True, timeout=60).stdout
        assert busy.strip() == "0"
        assert store.catalog.with_name("catalog.sqlite-wal").stat().st_size == 0


def test_the_holder_ends_when_its_process_dies(local_store):
    store = local_store
    from kernels import process_alive, wait_until

    code = ("import os, sys\nfrom afterfix import Store\n"
            "hold = Store(sys.argv[1]).hold_catalog()\nprint(hold.pid, flush=True)\nos._exit(0)\n")
    out = subprocess.run([sys.executable, "-c", code, str(store.root)], capture_output=True, text=True, timeout=60)
    pid = int(out.stdout.split()[0])
    assert wait_until(lambda: not process_alive(pid))


def test_a_catalog_that_cannot_be_opened_is_not_held(tmp_path, caplog):
    not_sqlite = tmp_path / "catalog.sqlite"
    not_sqlite.write_bytes(b"not a database" * 100)
    with caplog.at_level("WARNING", logger="afterfix.catalog_hold"):
        hold = CatalogHold(not_sqlite)
        assert hold.start() is False
    assert hold.pid is None
    assert "could not keep" in caplog.text and "not a database" in caplog.text
    hold.release()  # nothing to release: no error


def test_compaction_ends_with_a_new_writer_connection_that_keeps_working(store):
    # Compaction closes the writer connection it used (what DuckDB cached for it goes with it):
    # the next write opens a new one, with the writer's settings, and nothing is lost.
    store.append(make_spans(4))
    before = store.connection(read_only=False)
    store.compact()
    after = store.connection(read_only=False)
    assert after is not before
    store.append(make_spans(4, start=4))
    assert count(store) == 8
    settings = store.query("SELECT current_setting('memory_limit') AS m, "
                           "current_setting('allocator_bulk_deallocation_flush_threshold') AS f", write=True)
    assert settings["m"][0] == "244.1 MiB"
    assert settings["f"][0] == "3.8 MiB"


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_free_heap_pages_are_released_where_the_c_library_is_glibc():
    from afterfix.store import release_free_heap

    assert release_free_heap() is True


def test_extension_signatures_are_checked_once_per_process_and_again_when_a_file_changes(tmp_path, monkeypatch):
    ducklake, sqlite = store_module._extension_files()
    copy = tmp_path / "ducklake.duckdb_extension"
    shutil.copyfile(ducklake, copy)
    monkeypatch.setattr(store_module, "_extension_files", lambda team=False: (copy, sqlite))
    monkeypatch.setattr(store_module, "_VERIFIED", set())
    configs, connect = [], duckdb.connect
    monkeypatch.setattr(duckdb, "connect", lambda *a, **kw: configs.append(kw.get("config")) or connect(*a, **kw))
    unchecked = {"allow_unsigned_extensions": "true"}

    store = Store(tmp_path / "store")
    store.create()  # the first LOAD of each file in this process: DuckDB checks its signature
    store.connection(read_only=True).execute("SELECT count(*) FROM spans").fetchone()
    assert configs == [None, unchecked]

    st = copy.stat()
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # the file changed: checked again
    Store(tmp_path / "store").connection(read_only=True)
    Store(tmp_path / "store").connection(read_only=True)
    assert configs == [None, unchecked, None, unchecked]
