"""Inbox tailing: complete lines only, offsets committed with the data, replaced files re-read."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from afterfix import Store
from afterfix.ingest.ingester import Ingester
from afterfix.ingest.tail import InboxTailer, fingerprint, same_file

T_NS = 1_795_000_000_000_000_000


def line(i: int, *, trace: int = 1, bad: bool = False) -> bytes:
    """One OTLP/JSON TracesData line with one span (`bad`: a span id that is not 16 hex characters)."""
    span = {"traceId": f"{trace:032x}", "spanId": "zz" if bad else f"{i + 1:016x}", "name": f"execute_tool #{i}",
            "kind": 1, "startTimeUnixNano": str(T_NS + i * 1000), "endTimeUnixNano": str(T_NS + i * 1000 + 500),
            "attributes": [{"key": "gen_ai.tool.name", "value": {"stringValue": "kubectl_get"}}]}
    doc = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "agent"}}]},
                              "scopeSpans": [{"scope": {"name": "t"}, "spans": [span]}]}]}
    return json.dumps(doc).encode() + b"\n"


def lines(a: int, b: int, **kw) -> bytes:
    return b"".join(line(i, **kw) for i in range(a, b))


def count(store: Store, table: str = "spans") -> int:
    return int(store.query(f"SELECT count(*) AS n FROM {table}")["n"][0])


class Tailing:
    """A tailer and its ingester, polled by hand so that tests need no sleeps."""

    def __init__(self, store: Store, inbox: Path, **kw):
        self.ingester = Ingester(store, interval=3600)
        self.tailer = InboxTailer(inbox, self.ingester, store, **kw)

    def step(self) -> int:
        n = self.tailer.poll()
        assert self.ingester.flush()
        return n

    def close(self) -> None:
        self.tailer.stop()
        self.ingester.stop()


@pytest.fixture
def inbox(tmp_path) -> Path:
    p = tmp_path / "inbox"
    p.mkdir()
    return p


@pytest.fixture
def tailing(store, inbox):
    made = []

    def make(**kw) -> Tailing:
        t = Tailing(store, inbox, **kw)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


def test_only_complete_lines_of_a_growing_file_are_read(store, inbox, tailing):
    t = tailing()
    f = inbox / "run-42.jsonl"
    second = line(1)
    f.write_bytes(line(0) + second[:40])  # the writer is in the middle of line 2
    t.step()
    assert count(store) == 1
    with open(f, "ab") as fh:
        fh.write(second[40:] + line(2))
    t.step()
    assert count(store) == 3
    assert store.offsets()[str(f.resolve())][1] == f.stat().st_size


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".ndjson"])
def test_every_json_lines_suffix_is_tailed(store, inbox, tailing, suffix):
    (inbox / f"a{suffix}").write_bytes(lines(0, 3))
    (inbox / "notes.txt").write_bytes(b"not traces\n")
    (inbox / ".hidden.jsonl").write_bytes(lines(10, 12))
    tailing().step()
    assert count(store) == 3


def test_a_restart_resumes_at_the_committed_offset(store, inbox, tailing):
    f = inbox / "night.jsonl"
    f.write_bytes(lines(0, 3) + line(3, bad=True) + lines(4, 6))
    first = tailing()
    first.step()
    first.close()
    assert (count(store), count(store, "quarantine")) == (5, 1)
    with open(f, "ab") as fh:
        fh.write(lines(6, 8) + line(8, bad=True))
    second = tailing()
    second.step()
    # nothing twice (the quarantine shows it: the store's span dedup would hide duplicates)
    assert (count(store), count(store, "quarantine")) == (7, 2)
    locations = sorted(loc.split(",")[0] for loc in store.query("SELECT location FROM quarantine").location)
    assert locations == ["line 4", "line 9"]  # numbering continues after the restart


def _replace(f: Path, data: bytes) -> None:
    tmp = f.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, f)  # a new inode under the same name


def _truncate_and_rewrite(f: Path, data: bytes) -> None:
    with open(f, "r+b") as fh:
        fh.truncate(0)
        fh.write(data)


@pytest.mark.parametrize("change", [_replace, _truncate_and_rewrite], ids=["replaced", "truncated"])
@pytest.mark.parametrize("restart", [False, True], ids=["same-process", "after-restart"])
def test_a_replaced_or_truncated_file_is_read_from_the_start(store, inbox, tailing, change, restart):
    f = inbox / "t.jsonl"
    f.write_bytes(lines(0, 4))
    t = tailing()
    t.step()
    assert count(store) == 4
    if restart:
        t.close()
        t = tailing()
    change(f, lines(100, 102, trace=2) + lines(102, 110, trace=2))  # different content, longer than before
    t.step()
    assert count(store) == 14


def test_a_last_line_without_newline_is_taken_once_the_file_is_idle(store, inbox, tailing):
    t = tailing(idle_complete_s=1.0)
    f = inbox / "hand-made.json"
    f.write_bytes(line(0) + line(1).rstrip(b"\n"))
    t.step()
    assert count(store) == 1  # the writer might still be writing it
    time.sleep(1.1)
    t.step()
    assert count(store) == 2


def test_one_process_tails_an_inbox_and_another_takes_over(store, inbox, tailing):
    f = inbox / "shared.jsonl"
    f.write_bytes(lines(0, 3))
    a, b = tailing(), tailing()
    a.step()
    assert b.step() == 0 and not b.tailer.stats().active and a.tailer.stats().active
    with open(f, "ab") as fh:
        fh.write(lines(3, 5))
    a.close()  # the holder goes away
    b.step()
    assert b.tailer.stats().active
    assert count(store) == 5 and store.offsets()[str(f.resolve())][1] == f.stat().st_size


def test_reading_pauses_while_the_ingester_is_behind(store, inbox, tailing):
    t = tailing()
    t.ingester.max_pending_spans = 2
    for k in range(4):
        (inbox / f"f{k}.jsonl").write_bytes(lines(10 * k, 10 * k + 3))
    for stored in (3, 6, 9, 12):
        t.tailer.poll()
        assert t.ingester.stats().pending == 3  # one file read, then it stopped
        t.tailer.poll()
        assert t.ingester.stats().pending == 3  # nothing more until the ingester catches up
        assert t.ingester.flush()
        assert count(store) == stored


def frame(k: int, n: int = 3) -> bytes:
    """One frame of an OTLP protobuf file as the Collector writes it: 4-byte big-endian length, message."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    spans = [trace_pb2.Span(trace_id=(7).to_bytes(16, "big"), span_id=(k * n + i + 1).to_bytes(8, "big"), name=f"pb {k}/{i}",
                            start_time_unix_nano=T_NS + i, end_time_unix_nano=T_NS + i + 1) for i in range(n)]
    msg = trace_service_pb2.ExportTraceServiceRequest(resource_spans=[
        trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=spans)])]).SerializeToString()
    return len(msg).to_bytes(4, "big") + msg


@pytest.mark.parametrize("suffix", [".pb", ".binpb"])
def test_protobuf_files_are_read_frame_by_complete_frame(store, inbox, tailing, suffix):
    t = tailing()
    f = inbox / f"collector{suffix}"
    second = frame(1)
    f.write_bytes(frame(0) + second[:10])  # the second frame is still being written
    t.step()
    assert count(store) == 3 and store.offsets()[str(f.resolve())][1] == len(frame(0))
    with open(f, "ab") as fh:
        fh.write(second[10:] + frame(2))
    t.step()
    assert count(store) == 9
    t.close()
    with open(f, "ab") as fh:
        fh.write(frame(3))
    tailing().step()  # a new process resumes after the last committed frame
    assert count(store) == 12


# -- fingerprints -----------------------------------------------------------------------


@pytest.mark.parametrize("before, after, change, same", [
    (b"abc\n", b"abc\ndef\n", "append", True),
    (b"x" * 5000, b"x" * 6000, "append", True),
    (b"abc\n", b"xyz\n", "rewrite", False),
    (b"abc\n", b"abc\n", "replace", False),  # same bytes, new inode: another file
    (b"abc\ndef\n", b"ab", "rewrite", False),
])
def test_fingerprint_follows_growth_not_replacement(tmp_path, before, after, change, same):
    f = tmp_path / "f.jsonl"
    f.write_bytes(before)
    fp = fingerprint(f)
    if change == "append":
        with open(f, "ab") as fh:
            fh.write(after[len(before):])
    elif change == "rewrite":
        _truncate_and_rewrite(f, after)
    else:
        _replace(f, after)
    assert same_file(f, fp) is same


def test_a_fingerprint_of_a_missing_file_matches_nothing(tmp_path):
    f = tmp_path / "f.jsonl"
    f.write_bytes(b"abc\n")
    fp = fingerprint(f)
    f.unlink()
    assert not same_file(f, fp)
