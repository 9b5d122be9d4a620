"""The run index: where in time each run's spans and events are, so one run is read from the few
files that hold it.

Run ids are random-looking (the SDK makes them so), so every Parquet file's min/max statistics of
`run_id` span nearly the whole alphabet and `WHERE run_id IN (...)` prunes nothing: at 100M spans
the run_id column of every file is read. Spans are stored in time-ordered batches, though, so a
filter on `start_time` lets DuckLake skip every file (and the Parquet reader every row group)
outside the run's time range. `run_index` keeps that range: one row per run per append (its
first and last span start, and the time range of the batch's events), tens of bytes against the
run's kilobytes.

A row with a null `run_id` says the index covers every span stored: `backfill` writes it after
indexing the spans already stored (a store written before the index existed), and a reader that
does not find it reads by run id alone, as before. Rows only ever widen a run's range, so a
batch indexed twice (a redelivered batch, a backfill over rows already indexed) is still right.
"""

from __future__ import annotations

from datetime import datetime

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from . import schema

TABLE = "run_index"


def rows_for_append(spans: pa.Table, events: pa.Table | None = None) -> pa.Table | None:
    """The index rows of one batch about to be appended (spans of the `spans` schema, their events
    of the `events` schema), or None when no span of it has a run id.

    Events are placed by the batch, not by their span: each run's event range is that of all the
    batch's events. Matching each event to its span's run took 2 s a 500k-span batch (measured),
    as long as the append itself; a batch's events lie where its spans are, in the same files."""
    runs = spans.group_by("run_id").aggregate([("start_time", "min"), ("start_time", "max"), ("start_time", "count")])
    runs = runs.filter(pc.is_valid(runs["run_id"]))
    if not runs.num_rows:
        return None
    ts = pa.timestamp("us")
    first_event = last_event = None
    if events is not None and events.num_rows:
        bounds = pc.min_max(events["time"])
        first_event, last_event = bounds["min"].as_py(), bounds["max"].as_py()
    n = runs.num_rows
    now = datetime.utcnow().replace(microsecond=0)
    return pa.table({
        "run_id": runs["run_id"],
        "first_start": runs["start_time_min"],
        "last_start": runs["start_time_max"],
        "first_event": pa.array([first_event] * n, ts),
        "last_event": pa.array([last_event] * n, ts),
        "spans": runs["start_time_count"].cast(pa.int64()),
        "indexed_at": pa.array([now] * n, ts),
    }).cast(schema.arrow_schema(TABLE))


# The marker row's twin in the catalog: the table's comment. Reading it is a catalog lookup, where
# counting the marker row reads the run_id column of the whole index (65 against ~20 ms on the
# 2M-row index of a 100M-span store, measured); `ranges` reads this, on every tree.
COMPLETE_COMMENT = "afterfix: every stored span is indexed"


def _comment_complete(con: duckdb.DuckDBPyConnection, prefix: str) -> None:
    con.execute(f"COMMENT ON TABLE {prefix}{TABLE} IS '{COMPLETE_COMMENT}'")


def complete(con: duckdb.DuckDBPyConnection, prefix: str = "lake.") -> bool:
    """Whether the index covers every span stored (its marker row is there)."""
    try:
        return con.execute(f"SELECT count(*) FROM {prefix}{TABLE} WHERE run_id IS NULL").fetchone()[0] > 0
    except duckdb.CatalogException:  # a store written before the index existed, opened read-only
        return False


# The index of every span stored, one row per run, and the marker row after it. Events are placed
# by their own span's run.
_BACKFILL = f"""
INSERT INTO {{p}}{TABLE}
WITH s AS (SELECT run_id, min(start_time) AS first_start, max(start_time) AS last_start, count(*) AS spans
           FROM {{p}}spans WHERE run_id IS NOT NULL GROUP BY run_id),
     e AS (SELECT s.run_id, min(e.time) AS first_event, max(e.time) AS last_event
           FROM {{p}}events e JOIN {{p}}spans s USING (trace_id, span_id)
           WHERE s.run_id IS NOT NULL GROUP BY s.run_id)
SELECT s.run_id, s.first_start, s.last_start, e.first_event, e.last_event, s.spans, $now
FROM s LEFT JOIN e USING (run_id)
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, (SELECT count(*) FROM {{p}}spans), $now
"""


def backfill(con: duckdb.DuckDBPyConnection, prefix: str = "lake.") -> int:
    """Index every span stored and mark the index complete, in one transaction; nothing when it is
    complete already. For a writer connection holding the store's write lock (`Store.compact`):
    a one-off full read of spans and events (about a minute at 100M spans). Returns the runs indexed."""
    if complete(con, prefix):
        return 0
    con.execute(schema.create_table_sql(TABLE, prefix))
    from .store import transaction  # late: store.py imports this module

    with transaction(con):
        con.execute(f"DELETE FROM {prefix}{TABLE}")  # rows of appends since the table was made: rebuilt below
        con.execute(_BACKFILL.format(p=prefix), {"now": datetime.utcnow().replace(microsecond=0)})
        runs = con.execute(f"SELECT count(*) FROM {prefix}{TABLE} WHERE run_id IS NOT NULL").fetchone()[0]
        _comment_complete(con, prefix)
    return runs


def build(store) -> int:
    """`backfill` for one store, from outside compaction (a store written before the index existed)."""
    con = store.connection(read_only=False)
    with store.write_lock():
        return store.retry(lambda: backfill(con), "index")


def ranges(store, run_ids_sql: str) -> dict | None:
    """For the runs `run_ids_sql` (a SQL IN list) the index knows of: {"runs": set of run ids,
    "spans": (first start, last start), "events": (first, last) or None}, read through
    `store.arrow`. None when the index is not complete (read by run id alone)."""
    # Two queries, not one with `run_id IS NULL OR run_id IN (...)`: the OR keeps the Parquet reader
    # from skipping row groups by their run_id statistics (352 against 131 ms on a 2M-row index, measured).
    # no row: a store written before the index existed (opened read-only, so without the table)
    marked = store.arrow(f"SELECT comment FROM duckdb_tables() WHERE database_name = 'lake' "
                         f"AND table_name = '{TABLE}'").to_pylist()
    if not marked or marked[0]["comment"] != COMPLETE_COMMENT:
        return None
    found = store.arrow(
        f"SELECT run_id, min(first_start) AS fs, max(last_start) AS ls, min(first_event) AS fe, "
        f"max(last_event) AS le FROM {TABLE} WHERE run_id IN ({run_ids_sql}) GROUP BY run_id").to_pylist()
    events = [r for r in found if r["fe"] is not None]
    return {"runs": {r["run_id"] for r in found},
            "spans": (min(r["fs"] for r in found), max(r["ls"] for r in found)) if found else None,
            "events": (min(r["fe"] for r in events), max(r["le"] for r in events)) if events else None}


def mark_complete(con: duckdb.DuckDBPyConnection, prefix: str = "lake.") -> None:
    """Write the marker row: for a store whose every span went through `rows_for_append` (a new store)."""
    con.execute(f"INSERT INTO {prefix}{TABLE} (run_id, spans, indexed_at) "
                f"SELECT NULL, (SELECT count(*) FROM {prefix}spans), $now", {"now": datetime.utcnow().replace(microsecond=0)})
    _comment_complete(con, prefix)


def compact(con: duckdb.DuckDBPyConnection, prefix: str = "lake.", max_files: int = 16) -> bool:
    """Rewrite the index as one file sorted by run id once appends have left more than `max_files`
    files of it (each append's rows are in time order, so every file's run_id statistics span all
    run ids and a lookup reads every row). Sorted, a lookup reads one row group: 131 against
    495 ms on the 2M rows of a 100M-span store (measured on a busy machine). For a writer
    connection holding the write lock (`Store.compact`). Returns whether it rewrote."""
    files = con.execute(f"SELECT count(*) FROM ducklake_list_files('{prefix.rstrip('.')}', '{TABLE}')").fetchone()[0]
    if files <= max_files:
        return False
    from .store import transaction  # late: store.py imports this module

    with transaction(con):
        con.execute(f"CREATE OR REPLACE TEMP TABLE afterfix_run_index AS SELECT * FROM {prefix}{TABLE}")
        con.execute(f"DELETE FROM {prefix}{TABLE}")
        con.execute(f"INSERT INTO {prefix}{TABLE} SELECT * FROM afterfix_run_index ORDER BY run_id NULLS FIRST")
        con.execute("DROP TABLE afterfix_run_index")
    return True
