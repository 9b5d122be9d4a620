"""ingest_paths(): files and folders into the store, in bounded batches, stored once."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from afterfix.ingest import files
from afterfix.ingest.files import find_files, fingerprint, ingest_paths
from kernels import process_alive, wait_until


def otlp_line(trace: int, spans: int = 3, *, bad_span_id: bool = False, secret: bool = False) -> bytes:
    trace_id = f"{trace:032x}"
    out = []
    for i in range(spans):
        start = 1_795_747_620_000_000_000 + trace * 1_000_000_000 + i * 1_000_000
        attrs = [{"key": "afterfix.run.id", "value": {"stringValue": f"run-{trace % 3}"}}]
        if secret:
            attrs.append({"key": "http.request.header.authorization",
                          "value": {"stringValue": "Bearer ghp_0123456789abcdefghijABCDEFGHIJ012345"}})
        out.append({
            "traceId": trace_id,
            "spanId": "xyz" if bad_span_id and i == 0 else f"{trace * 1000 + i + 1:016x}",
            "name": f"step {i}",
            "startTimeUnixNano": str(start),
            "endTimeUnixNano": str(start + 2_000_000),
            "attributes": attrs,
            "events": [{"timeUnixNano": str(start + 1000), "name": "afterfix.option",
                        "attributes": [{"key": "afterfix.option.id", "value": {"stringValue": "restart"}}]}],
        })
    return orjson.dumps({"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": out}]}]})


def write_lines(path: Path, lines: list[bytes], mode: str = "wb") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as f:
        f.write(b"".join(line + b"\n" for line in lines))
    return path


def stored(store, sql: str = "SELECT count(*) FROM spans") -> int:
    return int(store.query(sql).iloc[0, 0])


FIND_CASES = [
    # (files to create, paths to pass, expected found, relative to tmp)
    (["a.jsonl", "b.json", "c.ndjson", "d.pb", "e.binpb", "f.txt", ".hidden.jsonl"], ["."],
     ["a.jsonl", "b.json", "c.ndjson", "d.pb", "e.binpb"]),
    (["x/y/deep.jsonl", "x/top.JSONL", "x/skip.log", "x/.git/objects.json"], ["x"], ["x/top.JSONL", "x/y/deep.jsonl"]),
    (["named.txt"], ["named.txt"], ["named.txt"]),  # a file named explicitly is read whatever its suffix
    (["a.jsonl"], ["a.jsonl", ".", "a.jsonl"], ["a.jsonl"]),  # each file once
]


@pytest.mark.parametrize("create,paths,expected", FIND_CASES)
def test_find_files(tmp_path, monkeypatch, create, paths, expected):
    for name in create:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    found = find_files(paths)
    assert [str(p.relative_to(tmp_path.resolve())) for p in found] == expected


def test_missing_path_is_named_before_anything_is_stored(store, tmp_path):
    good = write_lines(tmp_path / "good.jsonl", [otlp_line(1)])
    with pytest.raises(FileNotFoundError, match="missing.jsonl: no such file or folder"):
        ingest_paths(store, [good, tmp_path / "missing.jsonl"])
    assert stored(store) == 0


def test_spans_events_and_offsets_committed(store, tmp_path):
    f = write_lines(tmp_path / "t.jsonl", [otlp_line(t, 4) for t in range(1, 6)])
    s = ingest_paths(store, [f])
    assert (s.files, s.spans_stored, s.duplicates, s.refused, s.events_stored) == (1, 20, 0, [], 20)
    assert stored(store) == 20 and stored(store, "SELECT count(*) FROM events") == 20
    assert store.offsets()[str(f.resolve())] == (fingerprint(f.resolve()), f.stat().st_size)
    assert stored(store, "SELECT count(DISTINCT source) FROM spans WHERE source = " f"'{f.resolve()}'") == 1


@pytest.mark.parametrize("batch_spans", [1, 7, 1000])
def test_batches_commit_everything_once(store, tmp_path, monkeypatch, batch_spans):
    commits = []
    real = store.append

    def counting(*a, **kw):
        commits.append((kw["spans"].num_rows if kw.get("spans") is not None else 0, kw.get("offsets")))
        return real(*a, **kw)

    monkeypatch.setattr(store, "append", counting)
    monkeypatch.setattr(files, "CHUNK_BYTES", 2048)  # several decode tasks per file
    a = write_lines(tmp_path / "a.jsonl", [otlp_line(t, 5) for t in range(1, 9)])
    b = write_lines(tmp_path / "b.jsonl", [otlp_line(t, 5) for t in range(20, 24)])
    s = ingest_paths(store, [a, b], batch_spans=batch_spans)
    assert s.spans_stored == 60 and stored(store) == 60
    sizes = [n for n, _ in commits]
    assert sum(sizes) == 60
    # a commit is made once a batch reaches batch_spans, so none but the last is smaller and
    # none is larger than one decoded chunk beyond it: memory stays bounded
    assert all(batch_spans <= n < batch_spans + 15 for n in sizes[:-1]), sizes
    assert len(commits) == (1 if batch_spans >= 60 else len(commits)) and (batch_spans >= 60 or len(commits) > 2)
    # every file's offset rides with a commit, and only the commit that holds its last batch
    offset_rows = [row for _, t in commits if t is not None for row in t.to_pylist()]
    assert sorted(r["source"] for r in offset_rows) == sorted([str(a.resolve()), str(b.resolve())])


def test_refusals_name_file_and_line_and_are_quarantined(store, tmp_path):
    f = write_lines(tmp_path / "mixed.jsonl", [otlp_line(1), b"{not json", otlp_line(2), otlp_line(3, bad_span_id=True)])
    s = ingest_paths(store, [f])
    assert [r.source for r in s.refused] == [str(f.resolve())] * 2
    # a line that is not JSON is refused whole; a bad span only itself, named within its line
    assert [r.location for r in s.refused] == ["line 2", "line 4, resourceSpans[0].scopeSpans[0].spans[0]"]
    assert "not valid JSON" in s.refused[0].reason and "spanId" in s.refused[1].reason
    assert s.spans_stored == 3 + 3 + 2
    assert stored(store, "SELECT count(*) FROM quarantine") == len(s.refused)


def test_second_ingest_reads_nothing_and_grown_file_resumes(store, tmp_path):
    f = write_lines(tmp_path / "t.jsonl", [otlp_line(1), otlp_line(2)])
    first = ingest_paths(store, [f])
    assert first.spans_stored == 6
    again = ingest_paths(store, [f])
    assert (again.unchanged, again.spans_stored, again.duplicates, again.bytes_read) == (1, 0, 0, 0)
    write_lines(f, [otlp_line(3), b"garbage"], mode="ab")
    grown = ingest_paths(store, [f])
    # only the new lines are read, and line numbers count from the top of the file
    assert (grown.spans_stored, grown.duplicates) == (3, 0)
    assert [r.location for r in grown.refused] == ["line 4"]
    assert stored(store) == 9


def test_rewritten_file_is_read_again(store, tmp_path):
    f = write_lines(tmp_path / "t.jsonl", [otlp_line(1)])
    ingest_paths(store, [f])
    f.unlink()
    write_lines(f, [otlp_line(2), otlp_line(1)])  # new content: new fingerprint
    s = ingest_paths(store, [f])
    assert (s.unchanged, s.spans_stored, s.duplicates) == (0, 3, 3)


@pytest.mark.parametrize("shared", [True, False], ids=["tables-in-shared-memory", "tables-through-the-pipe"])
def test_worker_processes_give_the_same_result(store, tmp_path, monkeypatch, shared):
    monkeypatch.setattr(files, "CHUNK_BYTES", 4096)
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(files, "SHARED_MEMORY", shm if shared else tmp_path / "none")
    lines = [otlp_line(t, 4) for t in range(1, 40)]
    lines.insert(17, b"[1, 2")
    f = write_lines(tmp_path / "big.jsonl", lines)
    s = ingest_paths(store, [f], workers=2, batch_spans=50)
    assert s.spans_stored == 39 * 4
    assert [r.location for r in s.refused] == ["line 18"]
    assert stored(store) == 39 * 4
    assert stored(store, "SELECT count(*) FROM events") == s.events_stored > 0
    assert store.offsets()[str(f.resolve())][1] == f.stat().st_size
    assert list(shm.iterdir()) == []  # nothing left in shared memory


def test_shared_memory_left_by_a_killed_ingest_is_removed_and_a_failed_one_leaves_none(store, tmp_path, monkeypatch):
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(files, "SHARED_MEMORY", shm)
    monkeypatch.setattr(files, "CHUNK_BYTES", 4096)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process id that no longer runs
    stale = shm / f"afterfix-ingest-{gone.pid}-x1"
    stale.mkdir()
    (stale / "t.spans.arrow").write_bytes(b"x" * 100)
    mine = shm / f"afterfix-ingest-{os.getpid()}-x2"  # a live process's: kept
    mine.mkdir()
    f = write_lines(tmp_path / "big.jsonl", [otlp_line(t, 4) for t in range(1, 40)])

    def fail(*a, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(store, "append", fail)
    with pytest.raises(OSError, match="disk full"):
        ingest_paths(store, [f], workers=2, batch_spans=50)
    assert sorted(p.name for p in shm.iterdir()) == [mine.name]


def test_protobuf_file(store, tmp_path):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

    msg = TracesData()
    span = msg.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = bytes(range(16)), bytes(range(8)), "from protobuf"
    span.start_time_unix_nano, span.end_time_unix_nano = 1_795_747_620_000_000_000, 1_795_747_620_500_000_000
    assert ExportTraceServiceRequest.FromString(msg.SerializeToString()).resource_spans
    f = tmp_path / "one.pb"
    f.write_bytes(msg.SerializeToString())
    s = ingest_paths(store, [f])
    assert (s.spans_stored, s.refused) == (1, [])
    assert store.query("SELECT name FROM spans").name.tolist() == ["from protobuf"]
    assert ingest_paths(store, [f]).unchanged == 1


def test_redactor_is_applied(store, tmp_path):
    from afterfix.ingest.redact import Redactor

    f = write_lines(tmp_path / "s.jsonl", [otlp_line(1, 2, secret=True)])
    s = ingest_paths(store, [f], redactor=Redactor())
    assert s.redactions >= 2
    assert stored(store, "SELECT count(*) FROM spans WHERE attributes LIKE '%ghp_0123%'") == 0


def test_file_the_inbox_tailer_read_adds_nothing(store, tmp_path):
    from afterfix.ingest.ingester import Ingester
    from afterfix.ingest.tail import InboxTailer

    inbox = tmp_path / "inbox"
    f = write_lines(inbox / "night.jsonl", [otlp_line(1, 4), otlp_line(2, 4)])
    ingester = Ingester(store, interval=0.05)
    ingester.start()
    tailer = InboxTailer(inbox, ingester, store, poll_interval=0.05)
    try:
        assert tailer.poll() == f.stat().st_size
        assert ingester.flush(30)
    finally:
        tailer.stop()
        ingester.stop()
    assert stored(store) == 8
    s = ingest_paths(store, [inbox])
    assert (s.files, s.unchanged, s.spans_stored, s.duplicates, s.bytes_read) == (1, 1, 0, 0, 0)


@pytest.mark.parametrize("workers", [0, 2])
def test_over_long_line_is_refused_and_the_rest_stored(store, tmp_path, monkeypatch, workers):
    from afterfix.ingest.otlp import Limits

    monkeypatch.setattr(files, "CHUNK_BYTES", 1024)  # the long line spans several chunks
    long_line = b'{"resourceSpans": [' + b" " * 6000 + b"]}"
    f = write_lines(tmp_path / "long.jsonl", [otlp_line(1), long_line, otlp_line(2), otlp_line(3)])
    s = ingest_paths(store, [f], limits=Limits(max_body_bytes=4096), workers=workers)
    assert [r.location for r in s.refused] == ["line 2"]
    assert "over the limit of 4096" in s.refused[0].reason
    assert s.spans_stored == 9 and stored(store) == 9
    assert store.offsets()[str(f.resolve())][1] == f.stat().st_size


def test_a_file_replaced_while_being_ingested_is_not_read_at_its_old_offsets(tmp_path):
    """Decode tasks name a file and offsets; a file rotated away in between must not be read there."""
    from afterfix.ingest.otlp import Limits

    f = write_lines(tmp_path / "t.jsonl", [otlp_line(1), otlp_line(2)])
    task = next(files._tasks([(0, f, 0, 1)], 1 << 20, 1 << 20, lambda n: None))
    decoded, end = files._decode(task, Limits(), None, datetime.datetime(2026, 11, 27))
    assert decoded.spans.num_rows == 6 and end == f.stat().st_size
    f.rename(tmp_path / "t-rotated.jsonl")
    write_lines(f, [otlp_line(3), otlp_line(4)])
    with pytest.raises(OSError, match="replaced while it was being ingested"):
        files._decode(task, Limits(), None, datetime.datetime(2026, 11, 27))


def test_a_large_ingest_keeps_the_catalog_open_while_it_commits(store, tmp_path, monkeypatch):
    """Readers never wait a second on the catalog during a long ingest (see CatalogHold): its
    WAL is still there after each commit, and the process holding it ends with the ingest."""
    monkeypatch.setattr(files, "CHUNK_BYTES", 4096)  # a "large" input: commits on their own thread
    wal = Path(f"{store.catalog}-wal")
    holds, wal_after_commit = [], []
    hold_catalog, append = type(store).hold_catalog, type(store).append

    def recording_hold(self):
        h = hold_catalog(self)
        holds.append((h, h.pid))
        return h

    def recording_append(self, *a, **kw):
        result = append(self, *a, **kw)
        wal_after_commit.append(wal.exists())
        return result

    monkeypatch.setattr(type(store), "hold_catalog", recording_hold)
    monkeypatch.setattr(type(store), "append", recording_append)
    f = write_lines(tmp_path / "big.jsonl", [otlp_line(t, 4) for t in range(1, 40)])
    s = ingest_paths(store, [f], workers=0, batch_spans=40)
    assert s.spans_stored == 39 * 4 and stored(store) == 39 * 4
    assert len(wal_after_commit) >= 3 and all(wal_after_commit)
    [(hold, pid)] = holds
    assert pid is not None and hold.pid is None and wait_until(lambda: not process_alive(pid))
