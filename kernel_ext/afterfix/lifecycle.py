"""A store's life after ingest: copied into another store (`migrate`), and aged out (`retention`).

`migrate(source, destination)` copies every table of `schema.TABLES` in chunks of bounded size,
each chunk one transaction on the destination, by rules that store nothing twice: spans (with
their events) and metric points go through `Store.append`, which stores each once by key; events
left over (an event whose span the destination already had) are added by key (trace_id, span_id,
seq); every other table (quarantine, ingest offsets, the ledgers) by the whole row, with the
multiplicity the source has. The run index is not copied: the destination's appends write its own. A migrate stopped at any point (kill -9 included) and run again
therefore ends with exactly the source's rows, and a finished one run again copies nothing.

`retention(store, keep)` deletes trace data older than the cut-off (whole traces whose every span
ended before it, their events, metric points, quarantined records), keeps every ledger row (the
audit trail), then compacts: inlined rows to Parquet, files with many deleted rows rewritten,
small files merged, snapshots older than `snapshots` expired, and files no snapshot needs
removed. Each step is idempotent and commits on its own, so an interrupted run is finished by
running it again.

Both only read and write through `Store`: a local folder or a team store alike.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

import duckdb
import pyarrow as pa

from . import schema
from ._exceptions import ConfigError, StoreError
from .store import Store, transaction

__all__ = ["MigrateReport", "TableCopy", "migrate", "RetentionReport", "Storage", "retention",
           "time_column", "TRACE_TABLES", "MIN_SNAPSHOTS"]

DEFAULT_CHUNK_ROWS = 50_000
_EPOCH = datetime(1970, 1, 1)
_PARTS = 64  # time buckets per histogram when a range holds more rows than a chunk
_CHUNK_VIEW = "afterfix_migrate_chunk"

# Tables not copied: the destination derives them from what it stores (its appends index each
# run's time range, run_index.py, and its compaction rewrites that index).
DERIVED = ("run_index",)

# Tables whose rows are stored once by a key, and that key.
_KEYS = {"spans": ("trace_id", "span_id"), "events": ("trace_id", "span_id", "seq"),
         "metrics": ("series_id", "time")}


def time_column(table: str) -> str:
    """The column a table is cut into time ranges by: its first timestamp that is never null."""
    for name, _, duck, nullable in schema.TABLES[table]:
        if duck == "TIMESTAMP" and not nullable:
            return name
    raise ValueError(f"table {table!r} has no non-null TIMESTAMP column to cut it by")


def _ts(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _columns(table: str) -> str:
    return ", ".join(name for name, *_ in schema.TABLES[table])


# Results are always read to the end (fetchall): a result left half read (fetchone) keeps its
# statement open, and a DuckLake call run that way (a merge, an expiry) was never committed.


# -- migrate ----------------------------------------------------------------------------------


@dataclass
class TableCopy:
    """One table's migration: rows in the source, copied by this run, already in the destination,
    and source rows still missing from the destination afterwards (0 when it worked)."""

    table: str
    source_rows: int = 0
    copied: int = 0  # with dry_run: the rows that would be copied
    present: int = 0
    missing: int = 0
    destination_rows: int = 0
    chunks: int = 0

    @property
    def matches(self) -> bool:
        return self.missing == 0

    def to_dict(self) -> dict:
        return {**self.__dict__, "matches": self.matches}


@dataclass
class MigrateReport:
    source: str
    destination: str
    dry_run: bool
    tables: list[TableCopy] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every source row is in the destination (a dry run: nothing was checked after copying)."""
        return all(t.matches for t in self.tables)

    def to_dict(self) -> dict:
        return {"source": self.source, "destination": self.destination, "dry_run": self.dry_run, "ok": self.ok,
                "tables": [t.to_dict() for t in self.tables]}


# (table, rows done, rows in the table, the table's copy so far)
Progress = Callable[[str, int, int, TableCopy], None]


def migrate(source: Store, destination: Store, *, dry_run: bool = False, chunk_rows: int = DEFAULT_CHUNK_ROWS,
            progress: Progress | None = None) -> MigrateReport:
    """Copy every table of `source` into `destination`, a chunk of at most about `chunk_rows` rows
    per transaction; with `dry_run`, count what would be copied and write nothing.

    Rows of one instant are never split, so a chunk is larger when more rows than that share one
    timestamp. Writers to the source should be stopped first: rows it receives during the copy
    are copied by the next run.
    """
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be at least 1, not {chunk_rows}")
    if not source.exists():
        raise StoreError(f"no store at {source.where}: give --from the folder of an existing store")
    if source.spec == destination.spec:
        raise ConfigError(f"{source.where} is both the source and the destination: give --to another store")
    report = MigrateReport(source.where, destination.where, dry_run)
    dest_exists = destination.exists()
    if not dry_run:
        destination.create()
        dest_exists = True
    order = ["spans", "events", "metrics"] + [t for t in schema.TABLES
                                              if t not in ("spans", "events", "metrics") and t not in DERIVED]
    carried = {"events": 0}  # events stored with their spans, before the events' own pass
    for table in order:
        report.tables.append(_migrate_table(source, destination, table, dry_run=dry_run, dest_exists=dest_exists,
                                            chunk_rows=chunk_rows, progress=progress, carried=carried))
    return report


def _migrate_table(source: Store, destination: Store, table: str, *, dry_run: bool, dest_exists: bool,
                   chunk_rows: int, progress: Progress | None, carried: dict[str, int]) -> TableCopy:
    col = time_column(table)
    copy = TableCopy(table)
    # The events pass finds the events the spans pass stored already there: count them as copied.
    copy.copied, copy.present = carried.get(table, 0), -carried.get(table, 0)
    ranges = time_ranges(source, table, col, chunk_rows)
    copy.source_rows = sum(n for *_, n in ranges)
    done = 0
    if progress is not None:
        progress(table, 0, copy.source_rows, copy)
    cols = _columns(table)
    for lo, hi, _ in ranges:
        chunk = source.arrow(f"SELECT {cols} FROM lake.{table} WHERE {col} >= ? AND {col} < ?", [lo, hi])
        chunk = chunk.cast(schema.arrow_schema(table))
        if not chunk.num_rows:
            continue
        copy.chunks += 1
        if dry_run:
            missing = _missing(destination, table, chunk, lo, hi) if dest_exists else chunk.num_rows
            copy.copied += missing
            copy.present += chunk.num_rows - missing
        else:
            copied = _copy_chunk(source, destination, table, chunk, lo, hi, carried)
            missing = _missing(destination, table, chunk, lo, hi)
            copy.copied += copied
            copy.present += chunk.num_rows - copied - missing
            copy.missing += missing
        done += chunk.num_rows
        if progress is not None:
            progress(table, done, copy.source_rows, copy)
    if dest_exists:
        copy.destination_rows = int(destination.arrow(f"SELECT count(*) AS n FROM lake.{table}").column(0)[0].as_py())
    return copy


def time_ranges(store: Store, table: str, column: str, max_rows: int) -> list[tuple[datetime, datetime, int]]:
    """Consecutive half-open ranges [lo, hi) of `column` that together cover every row of `table`,
    each holding at most `max_rows` rows (more only when more rows share one microsecond)."""
    lo, hi, n = store.arrow(f"SELECT epoch_us(min({column})), epoch_us(max({column})), count(*) FROM lake.{table}"
                            ).to_pylist()[0].values()
    if not n:
        return []
    bounds = list(_split(store, table, column, lo, hi + 1, n, max_rows))
    # Contiguous from the first row to past the last: the gaps hold no rows, and a row that
    # arrives in one later still falls in some range of the next run.
    out = []
    for i, (a, b, rows) in enumerate(bounds):
        a = bounds[i - 1][1] if i else a
        out.append((_ts(a), _ts(b), rows))
    return out


def _split(store: Store, table: str, column: str, lo: int, hi: int, n: int, max_rows: int):
    """(lo_us, hi_us, rows) ranges of at most max_rows rows, found by histograms of `_PARTS` buckets."""
    if n <= max_rows or hi - lo <= 1:
        yield lo, hi, n
        return
    width = -(-(hi - lo) // _PARTS)
    counts = store.arrow(
        f"SELECT (epoch_us({column}) - {lo}) // {width} AS b, count(*) AS n FROM lake.{table} "
        f"WHERE {column} >= ? AND {column} < ? GROUP BY b ORDER BY b", [_ts(lo), _ts(hi)]).to_pylist()
    start, rows, end = None, 0, None
    for row in counts:
        b_lo, b_hi, c = lo + row["b"] * width, min(lo + (row["b"] + 1) * width, hi), row["n"]
        if rows and rows + c > max_rows:
            yield start, end, rows
            start, rows = None, 0
        if c > max_rows:
            yield from _split(store, table, column, b_lo, b_hi, c, max_rows)
            continue
        if start is None:
            start = b_lo
        end, rows = b_hi, rows + c
    if rows:
        yield start, end, rows


def _copy_chunk(source: Store, destination: Store, table: str, chunk: pa.Table, lo: datetime, hi: datetime,
                carried: dict[str, int]) -> int:
    """Store the chunk's rows the destination lacks, in one transaction; returns how many (a
    span chunk's events are stored with it and counted in `carried`)."""
    if table == "spans":
        events = source.arrow(
            f"SELECT {', '.join('e.' + c for c in _columns('events').split(', '))} FROM lake.events e "
            "SEMI JOIN (SELECT trace_id, span_id FROM lake.spans WHERE start_time >= ? AND start_time < ?) s "
            "USING (trace_id, span_id)", [lo, hi]).cast(schema.arrow_schema("events"))
        res = destination.append(spans=chunk, events=events)
        carried["events"] = carried.get("events", 0) + res.events
        return res.spans_new
    if table == "metrics":
        return destination.append(metrics=chunk).metrics_new
    col = time_column(table)
    cols = _columns(table)
    if table in _KEYS:  # events whose span the destination already held
        match = " AND ".join(f"d.{k} = c.{k}" for k in _KEYS[table])
        sql = (f"INSERT INTO lake.{table} ({cols}) SELECT {cols} FROM ("
               f"SELECT c.*, row_number() OVER (PARTITION BY {', '.join('c.' + k for k in _KEYS[table])}) AS rn "
               f"FROM {_CHUNK_VIEW} c WHERE NOT EXISTS (SELECT 1 FROM lake.{table} d "
               f"WHERE d.{col} >= $lo AND d.{col} < $hi AND {match})) WHERE rn = 1")
    else:  # whole rows, as many times as the source has each
        sql = (f"INSERT INTO lake.{table} ({cols}) SELECT {cols} FROM {_CHUNK_VIEW} "
               f"EXCEPT ALL SELECT {cols} FROM lake.{table} WHERE {col} >= $lo AND {col} < $hi")
    con = destination.connection(read_only=False)
    written: list[int] = []

    def attempt() -> None:
        written.clear()
        with transaction(con):
            con.register(_CHUNK_VIEW, chunk)
            rows = con.execute(sql, {"lo": lo, "hi": hi}).fetchall()
            written.append(int(rows[0][0]) if rows else 0)
            con.unregister(_CHUNK_VIEW)

    try:
        with destination.write_lock():
            destination.retry(attempt, "migrate")
    finally:
        with contextlib.suppress(Exception):
            con.unregister(_CHUNK_VIEW)
    return written[0]


def _missing(destination: Store, table: str, chunk: pa.Table, lo: datetime, hi: datetime) -> int:
    """How many of the chunk's rows the destination does not hold (by key, or by whole row)."""
    col = time_column(table)
    cols = _columns(table)
    if table in _KEYS:
        match = " AND ".join(f"d.{k} = c.{k}" for k in _KEYS[table])
        sql = (f"SELECT count(*) FROM {_CHUNK_VIEW} c WHERE NOT EXISTS (SELECT 1 FROM lake.{table} d "
               f"WHERE d.{col} >= $lo AND d.{col} < $hi AND {match})")
    else:
        sql = (f"SELECT count(*) FROM (SELECT {cols} FROM {_CHUNK_VIEW} "
               f"EXCEPT ALL SELECT {cols} FROM lake.{table} WHERE {col} >= $lo AND {col} < $hi)")
    con = destination.connection(read_only=True)
    con.register(_CHUNK_VIEW, chunk)
    try:
        return int(destination.retry(lambda: con.execute(sql, {"lo": lo, "hi": hi}).fetchall()[0][0], "migrate"))
    finally:
        con.unregister(_CHUNK_VIEW)


# -- retention --------------------------------------------------------------------------------

# Trace data: deleted by retention. Everything else stays (ledgers: the audit trail).
TRACE_TABLES = ("spans", "events", "metrics", "quarantine")
MIN_SNAPSHOTS = timedelta(hours=1)  # as Store.compact: readers may still read a recent snapshot's files
STEPS = ("delete", "flush", "rewrite", "merge", "expire", "cleanup")
REWRITE_THRESHOLD = 0.5  # a file at least half deleted is rewritten without its deleted rows
# Ledger columns that name a step of the agent's (decision or action), by ledger.
_REFS = {"rollbacks": ("action_id", "decision_id"), "analyses": ("action_id",), "alerts": ("action_id",),
         "approvals": ("action_id", "decision_id"), "verdicts": ("target_id", "decision_id"),
         "replays": ("decision_id",)}

# Whole traces whose every span ended before the cut-off: no trace is left half.
_EXPIRED_TRACES = "SELECT trace_id FROM lake.spans GROUP BY trace_id HAVING max(end_time) < $cut"
_DELETES = {
    # Events go with their span's trace; events without a span by their own time. First: the
    # spans they are matched by are deleted after them, in the same transaction.
    "events": f"DELETE FROM lake.events e WHERE e.trace_id IN ({_EXPIRED_TRACES}) OR (e.time < $cut AND NOT EXISTS "
              "(SELECT 1 FROM lake.spans s WHERE s.trace_id = e.trace_id AND s.span_id = e.span_id))",
    "spans": f"DELETE FROM lake.spans WHERE trace_id IN ({_EXPIRED_TRACES})",
    "metrics": "DELETE FROM lake.metrics WHERE time < $cut",
    "quarantine": "DELETE FROM lake.quarantine WHERE received_at < $cut",
    # Index rows of runs none of whose spans are left (run_index.py); its marker row stays.
    "run_index": "DELETE FROM lake.run_index WHERE run_id IS NOT NULL AND last_start < $cut AND run_id NOT IN "
                 "(SELECT DISTINCT run_id FROM lake.spans WHERE run_id IS NOT NULL)",
    # Only the newest offset per source is ever read (Store.offsets), as Store.compact keeps them.
    "ingest_offsets": "DELETE FROM lake.ingest_offsets o WHERE EXISTS (SELECT 1 FROM lake.ingest_offsets n "
                      "WHERE n.source = o.source AND n.committed_at > o.committed_at)",
}


@dataclass
class Storage:
    """What a store's data takes: files and bytes (on disk for a local store, else as the catalog
    records them), and snapshots kept for time travel."""

    files: int = 0
    bytes: int = 0
    snapshots: int = 0
    measured: str = "on disk"


@dataclass
class RetentionReport:
    where: str
    cutoff: datetime  # trace data older than this (UTC) is deleted
    snapshot_cutoff: datetime  # snapshots older than this are expired
    dry_run: bool
    rows_before: dict[str, int] = field(default_factory=dict)
    rows_after: dict[str, int] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)  # by table (with dry_run: would delete)
    traces: int = 0  # whole traces deleted
    ledger_refs: dict[str, int] = field(default_factory=dict)  # kept ledger rows naming a deleted step
    cutoff_snapshots_window: timedelta | None = None
    storage_before: Storage = field(default_factory=Storage)
    storage_after: Storage = field(default_factory=Storage)
    steps: list[tuple[str, str]] = field(default_factory=list)  # (step, what it did)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["cutoff"], d["snapshot_cutoff"] = self.cutoff.isoformat(), self.snapshot_cutoff.isoformat()
        d["storage_before"], d["storage_after"] = self.storage_before.__dict__, self.storage_after.__dict__
        return d


def check_retention(keep: timedelta, snapshots: timedelta, snapshot_floor: timedelta = MIN_SNAPSHOTS) -> None:
    """Raise ConfigError unless `keep` and `snapshots` are windows retention can use."""
    if keep <= timedelta(0):
        raise ConfigError("--keep must be longer than 0 (e.g. 90d): it is how much trace data to keep")
    if snapshots < snapshot_floor:
        raise ConfigError(f"--snapshots must be at least 1h (e.g. 7d): processes reading the store may still "
                          f"be reading the files of a snapshot that recent")


def retention(store: Store, keep: timedelta, *, snapshots: timedelta = timedelta(days=7), dry_run: bool = False,
              now: datetime | None = None, orphan_age: timedelta = MIN_SNAPSHOTS,
              snapshot_floor: timedelta = MIN_SNAPSHOTS,
              on_step: Callable[[str, str], None] | None = None) -> RetentionReport:
    """Delete trace data older than `now - keep`, keep the ledgers, compact, expire snapshots older
    than `snapshots` and remove files no snapshot needs (and files no commit ever listed, older
    than `orphan_age`: an interrupted write's). With `dry_run`, count and write nothing.
    `snapshots` shorter than `snapshot_floor` is refused (readers may still be on those files).

    `on_step(step, phase)` is called with phase "start" and "done" around each of `STEPS`, and
    "commit" just before the delete step commits. `now` (naive UTC) is the moment trace data is
    aged from; snapshots are aged from the clock, which stamped them.
    """
    check_retention(keep, snapshots, snapshot_floor)
    if not store.exists():
        raise StoreError(f"no store at {store.where}: nothing to age out")
    report = RetentionReport(store.where, (now or datetime.utcnow()) - keep, datetime.utcnow() - snapshots, dry_run,
                             cutoff_snapshots_window=snapshots)
    step = on_step or (lambda name, phase: None)
    report.rows_before = _row_counts(store)
    report.storage_before = storage(store)
    report.traces, report.deleted, report.ledger_refs = _expiring(store, report.cutoff)
    if dry_run:
        report.rows_after = {t: n - report.deleted.get(t, 0) for t, n in report.rows_before.items()}
        report.storage_after = report.storage_before
        return report
    con = store.connection(read_only=False)
    try:
        _delete(store, con, report, step)
        _compact(store, con, report, step, orphan_age)
    finally:
        store.close()  # as Store.compact: the next write starts a fresh connection
    report.rows_after = _row_counts(store)
    report.storage_after = storage(store)
    return report


def _row_counts(store: Store) -> dict[str, int]:
    sql = " UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM lake.{t}" for t in schema.TABLES)
    return {r["t"]: int(r["n"]) for r in store.arrow(sql).to_pylist()}


def _expiring(store: Store, cut: datetime) -> tuple[int, dict[str, int], dict[str, int]]:
    """Traces, rows by table, and kept ledger rows about their steps, that retention at `cut` deletes."""
    con = store.connection(read_only=True)
    p = {"cut": cut}

    def one(sql: str) -> int:
        return int(store.retry(lambda: con.execute(sql, p if "$cut" in sql else None).fetchall()[0][0], "retention"))

    traces = one(f"SELECT count(*) FROM ({_EXPIRED_TRACES})")
    rows = {t: one(f"SELECT count(*) FROM ({sql.replace('DELETE FROM', 'SELECT 1 FROM', 1)})")
            for t, sql in _DELETES.items()}
    # Decisions and actions whose every span is deleted: ledger rows naming one are kept.
    gone = (f"SELECT id FROM (SELECT unnest([decision_id, action_id]) AS id FROM lake.spans "
            f"WHERE trace_id IN ({_EXPIRED_TRACES})) WHERE id IS NOT NULL "
            f"EXCEPT SELECT id FROM (SELECT unnest([decision_id, action_id]) AS id FROM lake.spans "
            f"WHERE trace_id NOT IN ({_EXPIRED_TRACES})) WHERE id IS NOT NULL")
    refs = {}
    for ledger, cols in _REFS.items():
        refs[ledger] = one(f"WITH gone AS ({gone}) SELECT count(*) FROM lake.{ledger} "
                           f"WHERE {' OR '.join(f'{c} IN (SELECT id FROM gone)' for c in cols)}")
    return traces, rows, {k: v for k, v in refs.items() if v}


def _delete(store: Store, con, report: RetentionReport, step) -> None:
    """Every deletion in one transaction: a kill at any moment leaves all of it or none."""
    step("delete", "start")
    deleted: dict[str, int] = {}

    def attempt() -> None:
        deleted.clear()
        with transaction(con):
            for table, sql in _DELETES.items():
                rows = con.execute(sql, {"cut": report.cutoff} if "$cut" in sql else None).fetchall()
                deleted[table] = int(rows[0][0]) if rows else 0
            step("delete", "commit")

    with store.write_lock():
        store.retry(attempt, "retention")
    report.deleted = deleted
    report.steps.append(("delete", ", ".join(f"{t} {n}" for t, n in deleted.items())))
    step("delete", "done")


def _compact(store: Store, con, report: RetentionReport, step, orphan_age: timedelta) -> None:
    """DuckLake's maintenance calls in CHECKPOINT's order (rewrite before merge, as DuckLake's docs
    advise), each under the write lock, each idempotent. Store.compact() runs the same calls but
    expires snapshots older than one hour, which would override `snapshots`."""
    # From the clock when the steps start, so that a window of 0 also expires retention's own snapshots.
    report.snapshot_cutoff = datetime.utcnow() - (report.cutoff_snapshots_window or timedelta(0))
    snap = report.snapshot_cutoff.isoformat(sep=" ")
    orphans = (datetime.utcnow() - orphan_age).isoformat(sep=" ")
    calls = {
        "flush": ["ducklake_flush_inlined_data('lake')"],
        "rewrite": [f"ducklake_rewrite_data_files('lake', delete_threshold => {REWRITE_THRESHOLD})"],
        "merge": ["ducklake_merge_adjacent_files('lake')"],
        "expire": [f"ducklake_expire_snapshots('lake', older_than => TIMESTAMPTZ '{snap}+00')"],
        # Files of expired snapshots no snapshot reads any more; then files no commit ever listed.
        "cleanup": ["ducklake_cleanup_old_files('lake', cleanup_all => true)",
                    f"ducklake_delete_orphaned_files('lake', older_than => TIMESTAMPTZ '{orphans}+00')"],
    }
    what = {"flush": "tables flushed", "rewrite": "rewrite results", "merge": "merge results",
            "expire": "snapshots expired", "cleanup": "files removed"}
    con.execute("SET threads = 1")  # one merge stream at a time: peak memory over speed (Store.compact)
    con.execute(f"SET memory_limit = '{store.compact_memory_limit}'")
    for name, sqls in calls.items():
        step(name, "start")
        results = []
        with store.write_lock():
            for call in sqls:
                sql = f"SELECT count(*) FROM {call}"  # counted here: their TIMESTAMPTZ columns need pytz in Python
                try:
                    rel = store.retry(lambda s=sql: con.execute(s), "retention")
                except duckdb.OutOfMemoryException:
                    con.execute(f"SET memory_limit = '{store.memory_limit}'")  # as Store.compact does
                    rel = store.retry(lambda s=sql: con.execute(s), "retention")
                    con.execute(f"SET memory_limit = '{store.compact_memory_limit}'")
                rows = rel.fetchall()  # no row at all from some calls on a PostgreSQL catalog
                results.append(int(rows[0][0]) if rows else 0)
        report.steps.append((name, f"{sum(results)} {what[name]}"))
        step(name, "done")


def storage(store: Store) -> Storage:
    """Data files and bytes of a store (a local store's data folder on disk; a team store's as its
    catalog lists them, delete files included), and its snapshots."""
    con = store.connection(read_only=True)
    snapshots = int(store.retry(lambda: con.execute("SELECT count(*) FROM ducklake_snapshots('lake')").fetchall()[0][0],
                           "retention"))
    if store.kind == "local":
        files = size = 0
        for folder, _, names in os.walk(store.data):
            for name in names:
                if name.endswith(".parquet"):
                    files += 1
                    with contextlib.suppress(FileNotFoundError):
                        size += os.stat(os.path.join(folder, name)).st_size
        return Storage(files, size, snapshots, "on disk")
    meta = "__ducklake_metadata_lake"
    files, size = store.retry(lambda: con.execute(
        f"SELECT count(*), coalesce(sum(file_size_bytes), 0) FROM (SELECT file_size_bytes FROM {meta}.ducklake_data_file "
        f"UNION ALL SELECT file_size_bytes FROM {meta}.ducklake_delete_file)").fetchall()[0], "retention")
    return Storage(int(files), int(size), snapshots, "in the catalog")
