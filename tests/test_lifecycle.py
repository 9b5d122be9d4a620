"""lifecycle: migrate copies every table exactly once (also after kill -9 and a re-run), and
retention deletes old trace data whole, keeps the ledgers, compacts, and finishes after kill -9."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from afterfix import schema
from afterfix.cli import main
from afterfix.lifecycle import migrate, retention, time_column, time_ranges
from afterfix.store import Store

NOW = dt.datetime.utcnow().replace(microsecond=0)  # the CLI ages data from the clock
DAY = dt.timedelta(days=1)
N = 60  # spans per trace; fill() stores 4 traces


def _spans(trace: str, start: dt.datetime, n: int, *, step=dt.timedelta(seconds=1), length=dt.timedelta(seconds=2),
           action: str | None = None) -> pa.Table:
    rows = [dict(trace_id=trace, span_id=f"{i + 1:016x}", name=f"execute_tool kubectl_get #{i}", kind="INTERNAL",
                 start_time=start + i * step, end_time=start + i * step + length, duration_ms=length.total_seconds() * 1000,
                 status_code="OK", operation="execute_tool", run_id=f"run-{trace[:4]}", tool_name="kubectl_get",
                 action_id=action, attributes='{"gen_ai.tool.name": "kubectl_get"}', resource_attributes="{}",
                 source="test", ingested_at=start)
            for i in range(n)]
    return pa.Table.from_pylist(rows, schema=schema.SPAN_SCHEMA)


def _events(spans: pa.Table) -> pa.Table:
    rows = [dict(trace_id=s["trace_id"], span_id=s["span_id"], seq=k, name="afterfix.option", time=s["start_time"],
                 attributes='{"afterfix.option.id": "a"}') for s in spans.to_pylist() for k in range(2)]
    return pa.Table.from_pylist(rows, schema=schema.EVENT_SCHEMA)


def _metrics(start: dt.datetime, n: int) -> pa.Table:
    rows = [dict(name="cpu", kind="gauge", time=start + dt.timedelta(seconds=15 * (i // 3)), value=float(i),
                 series_id=f"s{i % 3}", attributes="{}", resource_attributes="{}", source="test", ingested_at=start)
            for i in range(n)]
    return pa.Table.from_pylist(rows, schema=schema.METRIC_SCHEMA)


def _rows(table: str, rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist([{n: r.get(n) for n, *_ in schema.TABLES[table]} for r in rows],
                                schema=schema.arrow_schema(table))


def fill(store: Store) -> None:
    """A store with rows in every table: spans over several days with their events, metric
    points, quarantined records, offsets, and ledger rows (two of them identical)."""
    for k in range(4):
        spans = _spans(f"{k:032x}", NOW - (k * 30 + 1) * DAY, N, action=f"act-{k}")
        store.append(spans=spans, events=_events(spans))
    store.append(metrics=_metrics(NOW - 100 * DAY, 90), quarantine=_rows("quarantine", [
        dict(received_at=NOW - 100 * DAY, source="a.jsonl", location="line 3", reason="bad", record="{"),
        dict(received_at=NOW - DAY, source="a.jsonl", location="line 9", reason="bad", record=None)]),
        offsets=_rows("ingest_offsets", [dict(source="a.jsonl", fingerprint="f", position=10, committed_at=NOW)]))
    store.append(metrics=_metrics(NOW - DAY, 30))
    verdict = dict(verdict_id="v-1", time=NOW, who="ana", target_type="action", target_id="act-3", verdict="wrong",
                   note="restart hid the leak")
    store.append_ledger("verdicts", [verdict, verdict, {**verdict, "verdict_id": "v-2", "target_id": "act-0"}])
    store.append_ledger("rollbacks", [dict(rollback_id="rb-1", action_id="act-3", time=NOW, who="ana",
                                           automatic=False, outcome="started")])
    store.append_ledger("trust", [dict(change_id="t-1", time=NOW, who="ana", rule_id="r", kind="promote",
                                       outcome="accepted", from_level=1, to_level=2, reason="ok", suggested=True,
                                       track_record="{}")])


def content(store: Store, table: str) -> list[tuple]:
    cols = ", ".join(n for n, *_ in schema.TABLES[table])
    rows = [tuple(r.values()) for r in store.arrow(f"SELECT {cols} FROM lake.{table}").to_pylist()]
    return sorted(rows, key=lambda row: [(v is None, str(v)) for v in row])


@pytest.fixture
def source(tmp_path) -> Store:
    s = Store(tmp_path / "source")
    fill(s)
    yield s
    s.close()


@pytest.fixture(params=["local", "team"])
def destination(request, tmp_path) -> Store:
    """The store migrated into: a fresh local folder, or a fresh team store (PostgreSQL + S3)."""
    if request.param == "team":
        yield request.getfixturevalue("team_store")
        return
    s = Store(tmp_path / "destination")
    yield s
    s.close()


def test_every_table_has_a_column_to_cut_it_by():
    for table in schema.TABLES:
        assert dict((n, d) for n, _, d, _ in schema.TABLES[table])[time_column(table)] == "TIMESTAMP"


COPIED = [t for t in schema.TABLES if t != "run_index"]


def _indexes_every_run(store: Store) -> bool:
    """Each run's spans lie within the time range the run index gives it (run_index.py)."""
    missed = store.query("SELECT count(*) AS n FROM (SELECT run_id, min(start_time) AS lo, max(start_time) AS hi "
                         "FROM lake.spans GROUP BY run_id) s LEFT JOIN (SELECT run_id, min(first_start) AS lo, "
                         "max(last_start) AS hi FROM lake.run_index GROUP BY run_id) i USING (run_id) "
                         "WHERE i.lo IS NULL OR i.lo > s.lo OR i.hi < s.hi")
    return int(missed["n"][0]) == 0


def test_migrate_copies_every_table_exactly_and_a_rerun_copies_nothing(source, destination):
    first = migrate(source, destination, chunk_rows=50)
    assert first.ok and "run_index" not in {t.table for t in first.tables}
    for table in COPIED:
        assert content(destination, table) == content(source, table), table
    assert _indexes_every_run(destination)  # the destination's own appends indexed what it stored
    by = {t.table: t for t in first.tables}
    assert by["spans"].copied == 4 * N and by["spans"].chunks >= 4 * N // 50  # 50-row chunks
    assert by["events"].copied == 8 * N and by["verdicts"].copied == 3  # the identical verdict rows both
    again = migrate(source, destination, chunk_rows=50)
    assert again.ok and all(t.copied == 0 for t in again.tables)
    assert all(t.present == t.source_rows == t.destination_rows for t in again.tables)
    for table in COPIED:
        assert content(destination, table) == content(source, table), table


def test_a_destination_holding_rows_already_gets_only_the_missing_ones(source, destination):
    spans = _spans(f"{0:032x}", NOW - DAY, N, action="act-0")
    destination.append(spans=spans.slice(0, 20), events=_events(spans.slice(0, 20)))
    destination.append(spans=_spans("f" * 32, NOW, 5))  # another machine's spans
    report = migrate(source, destination)
    by = {t.table: t for t in report.tables}
    assert report.ok and by["spans"].present == 20 and by["spans"].copied == 4 * N - 20
    assert by["events"].present == 40 and by["spans"].destination_rows == 4 * N + 5


def test_dry_run_counts_and_writes_nothing(source, tmp_path):
    dest = Store(tmp_path / "not-yet")
    report = migrate(source, dest, dry_run=True)
    assert not dest.exists()
    assert {t.table: t.copied for t in report.tables}["spans"] == 4 * N
    migrate(source, dest)
    assert all(t.copied == 0 for t in migrate(source, dest, dry_run=True).tables)


def test_time_ranges_cover_every_row_once_within_the_chunk_size(source):
    # 90 metric points at 30 instants: 3 points share each instant
    ranges = time_ranges(source, "metrics", "time", 4)
    assert sum(n for *_, n in ranges) == 120 and max(n for *_, n in ranges) <= 4
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))  # contiguous
    # rows of one instant are never split, even past the chunk size
    assert max(n for *_, n in time_ranges(source, "metrics", "time", 1)) == 3


def test_same_store_and_missing_source_are_refused(source, tmp_path, capsys):
    assert main(["migrate", "--from", str(source.root), "--to", str(source.root)]) == 2
    assert "both the source and the destination" in capsys.readouterr().err
    assert main(["migrate", "--from", str(tmp_path / "nothing"), "--to", str(tmp_path / "d")]) == 2
    assert "no store at" in capsys.readouterr().err and not (tmp_path / "d").exists()


def test_the_command_prints_the_count_check_and_exits_0(source, tmp_path, capsys):
    assert main(["migrate", "--from", str(source.root), "--to", str(tmp_path / "d"), "--chunk-rows", "500"]) == 0
    out, err = capsys.readouterr()
    assert "every table matches: all" in out and f"spans: {4 * N} of {4 * N} rows" in err
    assert main(["migrate", "--from", str(source.root), "--to", str(tmp_path / "d"), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and {t["table"]: t["copied"] for t in report["tables"]}["spans"] == 0


# A migrate killed inside a chunk's transaction: the append has written its Parquet file and added
# it to the lake, and the process dies before COMMIT.
_KILLED_MIGRATE = """
import os, signal, sys
import afterfix.store as store
from afterfix.lifecycle import migrate
calls = {"n": 0}
insert = store._DataFiles.insert
def dying_insert(self, con, table, rows, view):
    insert(self, con, table, rows, view)
    calls["n"] += 1
    if calls["n"] == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)
store._DataFiles.insert = dying_insert
migrate(store.Store(sys.argv[1]), store.Store(sys.argv[2]), chunk_rows=50)
"""


@pytest.mark.parametrize("kill_at", [1, 6])  # the first chunk, and a later one
def test_a_migrate_killed_mid_chunk_and_run_again_ends_with_exactly_the_source(source, destination, kill_at):
    source.close()
    spec = getattr(destination, "spec", str(destination.root))
    done = subprocess.run([sys.executable, "-c", _KILLED_MIGRATE, str(source.root), spec, str(kill_at)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr
    half = {t: len(content(destination, t)) for t in ("spans", "events")}
    assert half["spans"] < 4 * N and half["events"] == 2 * half["spans"]  # whole chunks only, events with their spans
    report = migrate(source, destination, chunk_rows=50)
    assert report.ok
    for table in COPIED:
        assert content(destination, table) == content(source, table), table
    assert _indexes_every_run(destination)


# -- retention --------------------------------------------------------------------------------


def _files_on_disk(store: Store) -> set[str]:
    return {p.name for p in store.data.rglob("*.parquet")}


def _files_in_catalog(store: Store) -> set[str]:
    rows = store.query("SELECT path FROM __ducklake_metadata_lake.ducklake_data_file UNION ALL "
                       "SELECT path FROM __ducklake_metadata_lake.ducklake_delete_file")
    return {Path(p).name for p in rows["path"]}


def test_retention_deletes_old_traces_whole_and_keeps_the_ledgers(source):
    straddling = _spans("e" * 32, NOW - 91 * DAY, 3, step=2 * DAY)  # begins before the cut-off, ends after
    orphan = _rows("events", [dict(trace_id="d" * 32, span_id="1" * 16, seq=0, name="x", time=NOW - 95 * DAY,
                                   attributes="{}")])
    source.append(spans=straddling)
    source.append(spans=_spans("c" * 32, NOW - 95 * DAY, 1), events=orphan)  # event without its span...
    source.query("DELETE FROM lake.spans WHERE trace_id = '" + "c" * 32 + "'", write=True)  # ...once it is gone
    before = {t: len(content(source, t)) for t in schema.TABLES}
    dry = retention(source, 90 * DAY, now=NOW, dry_run=True)
    assert {t: len(content(source, t)) for t in schema.TABLES} == before  # the dry run wrote nothing
    report = retention(source, 90 * DAY, now=NOW, snapshots=dt.timedelta(0), snapshot_floor=dt.timedelta(0),
                       orphan_age=dt.timedelta(0))
    assert report.deleted == dry.deleted and report.traces == dry.traces == 1
    # traces 0-2 (1, 31, 61 days old) and the straddling one stay; trace 3 (91 days) goes, events and all
    assert report.deleted["spans"] == N and report.deleted["events"] == 2 * N + 1  # + the orphan event
    left = source.query("SELECT DISTINCT trace_id FROM lake.spans")["trace_id"]
    assert sorted(left) == sorted([f"{k:032x}" for k in range(3)] + ["e" * 32])
    assert len(content(source, "events")) == before["events"] - 2 * N - 1
    assert report.deleted["metrics"] == 90 and report.deleted["quarantine"] == 1
    for ledger in schema.LEDGERS:
        assert len(content(source, ledger)) == before[ledger], ledger
    # two verdicts and the rollback name act-3, whose spans are gone; v-2 names act-0, still there
    assert report.ledger_refs == {"verdicts": 2, "rollbacks": 1}
    # every snapshot but the last expired, and the files left are exactly those the catalog lists
    assert report.storage_after.snapshots == 1
    assert _files_on_disk(source) == _files_in_catalog(source)
    assert report.storage_after.bytes == sum(p.stat().st_size for p in source.data.rglob("*.parquet"))


def test_retention_keeps_snapshots_newer_than_the_window(source):
    versions = int(source.query("SELECT count(*) AS n FROM ducklake_snapshots('lake')")["n"][0])
    retention(source, 90 * DAY, now=NOW)  # --snapshots 7d: nothing this young expires
    first = int(source.query("SELECT min(snapshot_id) AS v FROM ducklake_snapshots('lake')")["v"][0])
    assert int(source.query("SELECT count(*) AS n FROM ducklake_snapshots('lake')")["n"][0]) > versions
    # time travel still sees the spans retention deleted
    assert source.query(f"SELECT count(*) AS n FROM lake.spans AT (VERSION => {first + 5})")["n"][0] > 0


_KILLED_RETENTION = """
import datetime as dt, os, signal, sys
from afterfix.lifecycle import retention
from afterfix.store import Store
step, phase = sys.argv[2].split(":")
def on_step(name, at):
    if (name, at) == (step, phase):
        os.kill(os.getpid(), signal.SIGKILL)
zero = dt.timedelta(0)
retention(Store(sys.argv[1]), dt.timedelta(days=90), now=dt.datetime.fromisoformat(sys.argv[3]), snapshots=zero,
          snapshot_floor=zero, orphan_age=zero, on_step=on_step)
"""


@pytest.fixture(scope="module")
def expected(tmp_path_factory) -> Store:
    """fill()'s store after an uninterrupted retention of 90 days."""
    s = Store(tmp_path_factory.mktemp("expected") / "store")
    fill(s)
    zero = dt.timedelta(0)
    retention(s, 90 * DAY, now=NOW, snapshots=zero, snapshot_floor=zero, orphan_age=zero)
    return s


@pytest.mark.parametrize("kill", ["delete:commit", "delete:done", "merge:done", "expire:done"])
def test_retention_killed_at_any_step_and_run_again_gives_the_expected_result(source, expected, kill):
    zero = dt.timedelta(0)
    source.close()
    done = subprocess.run([sys.executable, "-c", _KILLED_RETENTION, str(source.root), kill, NOW.isoformat()],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr
    if kill == "delete:commit":  # killed inside the delete's transaction: nothing was deleted
        assert len(content(source, "spans")) == 4 * N
    retention(source, 90 * DAY, now=NOW, snapshots=zero, snapshot_floor=zero, orphan_age=zero)
    for table in schema.TABLES:
        if table not in ("ingest_offsets",):
            assert len(content(source, table)) == len(content(expected, table)), table
    assert content(source, "spans") == content(expected, "spans")
    assert _files_on_disk(source) == _files_in_catalog(source)  # no file left behind by the kill


@pytest.mark.parametrize("argv,message", [
    (["--keep", "0d"], "--keep must be longer than 0"),
    (["--keep", "banana"], "'banana' is not a duration"),
    (["--keep", "90d", "--snapshots", "5m"], "--snapshots must be at least 1h"),
    (["--keep=-3d"], "is not a duration"),
])
def test_retention_refuses_windows_that_cannot_work(source, argv, message, capsys):
    try:
        code = main(["retention", "--store", str(source.root), *argv])
    except SystemExit as e:  # argparse refuses what is not a duration at all
        code = e.code
    assert code == 2 and message in capsys.readouterr().err
    assert len(content(source, "spans")) == 4 * N


def test_the_retention_command_says_what_it_deleted_and_kept(source, capsys):
    assert main(["retention", "--store", str(source.root), "--keep", "90d", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would delete 1 whole traces ({N} spans), {2 * N} events, 90 metric points, 1 quarantined records" in out
    assert "kept: every ledger row" in out and "audit trail" in out and "verdicts 2" in out
    assert len(content(source, "spans")) == 4 * N
    assert main(["retention", "--store", str(source.root), "--keep", "90d"]) == 0
    out = capsys.readouterr().out
    assert "deleted 1 whole traces" in out and "data files (on disk)" in out and "cleanup:" in out
    assert len(content(source, "spans")) == 3 * N


def test_retention_on_a_team_store(team_store):
    fill(team_store)
    before = {t: len(content(team_store, t)) for t in schema.TABLES}
    zero = dt.timedelta(0)
    report = retention(team_store, 90 * DAY, now=NOW, snapshots=zero, snapshot_floor=zero, orphan_age=zero)
    assert report.deleted["spans"] == N and len(content(team_store, "spans")) == 3 * N
    assert all(len(content(team_store, t)) == before[t] for t in schema.LEDGERS)
    assert report.storage_after.measured == "in the catalog" and report.storage_after.snapshots == 1
    assert 0 < report.storage_after.files <= report.storage_before.files
