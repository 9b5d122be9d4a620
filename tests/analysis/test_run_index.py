"""run_index: a run's time range per append, and trees read through it: the same tree with the index,
without it (a store written before it existed), after a backfill, and for a run a writer without the
index added later."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pytest

import afterfix
from afterfix import run_index, schema
from afterfix.analysis import _load
from afterfix.analysis.tree import run_tree
from afterfix.store import Store

from analysis.recorded import recorded_night


def _spans(rows: list[dict]) -> pa.Table:
    base = {n: None for n, *_ in schema.SPAN_COLUMNS}
    base.update(name="s", start_time=datetime(2026, 11, 1), end_time=datetime(2026, 11, 1), duration_ms=0.0,
                attributes="{}", resource_attributes="{}", source="test", ingested_at=datetime(2026, 11, 1))
    return pa.Table.from_pylist([{**base, **r} for r in rows], schema=schema.SPAN_SCHEMA)


def _events(times: list[datetime]) -> pa.Table:
    return pa.Table.from_pylist([{"trace_id": "t1", "span_id": f"e{i}", "seq": 0, "name": "afterfix.option", "time": t,
                                  "attributes": "{}"} for i, t in enumerate(times)], schema=schema.EVENT_SCHEMA)


def test_rows_for_append_keeps_each_runs_first_and_last_start():
    spans = _spans([
        {"trace_id": "t1", "span_id": "a", "run_id": "run-a", "start_time": datetime(2026, 11, 1, 2)},
        {"trace_id": "t1", "span_id": "b", "run_id": "run-a", "start_time": datetime(2026, 11, 1, 1)},
        {"trace_id": "t2", "span_id": "c", "run_id": "run-b", "start_time": datetime(2026, 11, 1, 3)},
        {"trace_id": "t3", "span_id": "d", "run_id": None, "start_time": datetime(2026, 10, 1)},
    ])
    rows = run_index.rows_for_append(spans, _events([datetime(2026, 11, 1, 4), datetime(2026, 11, 1, 0, 30)]))
    assert rows.schema == schema.arrow_schema("run_index")
    got = {r["run_id"]: r for r in rows.to_pylist()}
    assert sorted(got) == ["run-a", "run-b"]  # spans without a run need no entry
    assert (got["run-a"]["first_start"], got["run-a"]["last_start"], got["run-a"]["spans"]) == (
        datetime(2026, 11, 1, 1), datetime(2026, 11, 1, 2), 2)
    # Events are placed by the batch: every run of it gets the range of all its events.
    assert {(r["first_event"], r["last_event"]) for r in got.values()} == {
        (datetime(2026, 11, 1, 0, 30), datetime(2026, 11, 1, 4))}


@pytest.mark.parametrize("events", [None, "empty"])
def test_rows_for_append_without_events_has_no_event_range(events):
    rows = run_index.rows_for_append(_spans([{"trace_id": "t", "span_id": "a", "run_id": "run-a"}]),
                                     schema.empty("events") if events else None)
    assert [(r["first_event"], r["last_event"]) for r in rows.to_pylist()] == [(None, None)]


def test_rows_for_append_of_a_batch_without_runs_is_none():
    assert run_index.rows_for_append(_spans([{"trace_id": "t", "span_id": "a"}])) is None
    assert run_index.rows_for_append(schema.empty("spans")) is None


def _shape(tree):
    return [(n.kind, n.label, n.span_id, tuple(sorted(map(str, n.details.items())))) for n in tree.root.walk()]


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """The recorded night as a store written before the index existed: no index rows, no marker."""
    store, ids = recorded_night(tmp_path_factory.mktemp("index"))
    # New stores index every append from the start: take the index away to be an older store.
    store.query("DROP TABLE lake.run_index", write=True)
    store.close()
    before = {r: _shape(run_tree(store, r)) for r in ("run-t1", "run-t2", "oi-session-1")}
    yield store, before
    store.close()


def test_a_store_without_the_index_reads_by_run_id(night):
    store, before = night
    assert not run_index.complete(store.connection())
    assert run_index.ranges(store, _load._in_list(["run-t1"])) is None


def test_backfill_indexes_every_run_and_the_trees_stay_the_same(night):
    store, before = night
    assert run_index.build(store) == 3
    assert run_index.complete(store.connection(read_only=False))
    assert run_index.build(store) == 0  # complete already: nothing done twice
    store.close()  # readers see the new snapshot
    found = run_index.ranges(store, _load._in_list(["run-t1", "run-t2", "run-nope"]))
    assert found["runs"] == {"run-t1", "run-t2"}
    first, last = store.query("SELECT min(start_time), max(start_time) FROM spans WHERE run_id IN ('run-t1', 'run-t2')"
                              ).iloc[0]
    assert found["spans"] == (first.to_pydatetime(), last.to_pydatetime())
    assert found["events"] is not None
    for run_id, shape in before.items():
        assert _shape(run_tree(store, run_id)) == shape
    with pytest.raises(afterfix.NotFound, match="list the run ids with"):
        run_tree(store, "run-nope")


def test_the_index_range_is_what_is_read(night):
    """With the index complete, spans outside a run's indexed range are not read: the filter is
    the index's (here narrowed by hand to the run's first span, so only that span comes back)."""
    store, _ = night
    run_index.build(store)
    con = store.connection(read_only=False)
    first = con.execute("SELECT min(start_time) FROM lake.spans WHERE run_id = 'run-t2'").fetchone()[0]
    con.execute("DELETE FROM lake.run_index WHERE run_id = 'run-t2'")
    con.execute("INSERT INTO lake.run_index VALUES ('run-t2', $t, $t, NULL, NULL, 1, $t)", {"t": first})
    store.close()
    (run,) = _load.load_runs(store, ["run-t2"])
    assert [s["start_time"] for s in run.spans] == [first]
    # ...and the option events likewise: this run's batch has no events in the index.
    assert all(s["options"] == [] for s in run.spans if s["afterfix_kind"] == "decision")
    con = store.connection(read_only=False)
    con.execute("DELETE FROM lake.run_index")  # as written before the index existed
    store.close()


def test_a_run_the_index_does_not_know_is_still_found(night, tmp_path):
    """Spans a writer without the index appended after the marker: read by run id alone."""
    store, before = night
    run_index.build(store)
    con = store.connection(read_only=False)
    con.execute("DELETE FROM lake.run_index WHERE run_id = 'run-t1'")
    store.close()
    assert _shape(run_tree(store, "run-t1")) == before["run-t1"]
    con = store.connection(read_only=False)
    con.execute("DELETE FROM lake.run_index")
    store.close()


def test_appended_index_rows_give_the_same_tree(tmp_path):
    """Index rows made by rows_for_append for each batch (what Store.append writes beside the spans)."""
    source, _ = recorded_night(tmp_path / "a")
    spans = source.arrow("SELECT * FROM spans ORDER BY start_time")
    events = source.arrow("SELECT * FROM events")
    want = _shape(run_tree(source, "run-t1"))
    source.close()
    store = Store(tmp_path / "b")
    store.create()
    half = spans.num_rows // 2
    for part in (spans.slice(0, half), spans.slice(half)):
        keys = part.select(["trace_id", "span_id"]).to_pylist()
        mine = events.filter(pa.compute.is_in(
            pa.compute.binary_join_element_wise(events["trace_id"], events["span_id"], "/"),
            value_set=pa.array([f"{k['trace_id']}/{k['span_id']}" for k in keys])))
        store.append(part.cast(schema.SPAN_SCHEMA), mine.cast(schema.EVENT_SCHEMA))
        con = store.connection(read_only=False)
        con.register("idx", run_index.rows_for_append(part, mine))
        con.execute("INSERT INTO lake.run_index SELECT * FROM idx")
        con.unregister("idx")
    con = store.connection(read_only=False)
    run_index.mark_complete(con)
    assert not run_index.compact(con)  # few files: left as they are
    store.close()
    assert run_index.ranges(store, _load._in_list(["run-t1"]))["runs"] == {"run-t1"}
    assert _shape(run_tree(store, "run-t1")) == want
    store.close()
    con = store.connection(read_only=False)
    rows = con.execute("SELECT * FROM lake.run_index ORDER BY ALL").fetchall()
    con.execute("CALL ducklake_flush_inlined_data('lake')")  # a few rows stay in the catalog until compaction
    assert run_index.compact(con, max_files=0)
    assert con.execute("SELECT count(*) FROM ducklake_list_files('lake', 'run_index')").fetchone()[0] == 1
    assert con.execute("SELECT * FROM lake.run_index ORDER BY ALL").fetchall() == rows
    store.close()
    assert _shape(run_tree(store, "run-t1")) == want
    store.close()


def test_a_read_only_store_older_than_the_table(tmp_path):
    store, _ = recorded_night(tmp_path)
    want = _shape(run_tree(store, "run-t1"))
    store.connection(read_only=False).execute("DROP TABLE lake.run_index")
    store.close()
    assert run_index.ranges(store, _load._in_list(["run-t1"])) is None
    assert not run_index.complete(store.connection())
    assert _shape(run_tree(store, "run-t1")) == want
    store.close()
