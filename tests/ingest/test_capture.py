"""Capture: receiver, inbox, spool and ingester started and stopped as one, status for people."""

from __future__ import annotations

import time

import pytest
import requests
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from afterfix import ConfigError, Store
from afterfix.ingest.capture import Capture
from siblings import load_sibling


_tail = load_sibling(__file__, "test_tail")
_receiver = load_sibling(__file__, "test_receiver")
_ingester = load_sibling(__file__, "test_ingester")
lines, request_pb, count, lock_catalog = _tail.lines, _receiver.request_pb, _tail.count, _ingester.lock_catalog
PB = {"Content-Type": "application/x-protobuf"}

STATUS_KEYS = {"store", "sources", "spans_stored", "rate_per_s", "lag_s", "refused", "redacted", "duplicates",
               "pending", "last_error", "started_at"}


def wait_for(predicate, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_capture_takes_spans_from_http_and_the_inbox(store):
    cap = Capture(store, port=0, interval=0.1)
    inbox = store.root.parent / "inbox"
    assert cap.inbox == inbox  # traces/inbox beside traces/store
    with cap:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=cap.receiver.url)))
        with provider.get_tracer("t").start_as_current_span("invoke_agent"):
            pass
        provider.shutdown()
        (inbox / "night.jsonl").write_bytes(lines(0, 4))
        wait_for(lambda: count(store) == 5, "5 spans")  # no flush: the background threads get them there
        status = cap.status()
    assert STATUS_KEYS <= set(status)
    assert status["sources"] == [f"http://127.0.0.1:{cap.receiver.port}/v1/traces", f"inbox {inbox}"]
    assert status["store"] == str(store.root) and status["spans_stored"] == 5 and status["last_error"] is None
    assert status["started_at"] is not None and status["pending"] == 0


@pytest.mark.parametrize("options, sources", [
    ({"listen": False}, ["inbox"]),
    ({"inbox": False}, ["http"]),
    ({"listen": False, "inbox": False}, []),
])
def test_parts_can_be_left_out(store, options, sources):
    with Capture(store, port=0, **options) as cap:
        got = cap.status()["sources"]
    assert [s.split(":")[0].split(" ")[0] for s in got] == sources


def test_a_port_in_use_fails_start_and_leaves_nothing_running(store):
    with Capture(store, port=0, inbox=False) as first:
        second = Capture(store, port=first.receiver.port, inbox=False)
        with pytest.raises(ConfigError, match="port"):
            second.start()
        assert not second.running and second.ingester._thread is None


def test_stop_commits_what_was_received(store):
    cap = Capture(store, port=0, inbox=False, interval=3600)
    cap.start()
    r = requests.post(cap.receiver.url, data=request_pb(6).SerializeToString(), headers=PB, timeout=10)
    assert r.status_code == 200 and count(store) == 0
    cap.stop()
    assert count(store) == 6
    assert not any((store.root / "spool").iterdir())  # all committed: nothing left to replay


def test_http_is_acknowledged_while_the_store_is_locked_and_lands_later(tmp_path):
    store = Store(tmp_path / "store", busy_timeout_ms=20, retries=2)
    store.create()
    holder = lock_catalog(store)
    with Capture(store, port=0, inbox=False, interval=0.05) as cap:
        try:
            r = requests.post(cap.receiver.url, data=request_pb(3).SerializeToString(), headers=PB, timeout=10)
            assert r.status_code == 200  # durable in the spool; the store can wait
            wait_for(lambda: cap.status()["last_error"] is not None, "the busy store to be reported")
            assert "busy" in cap.status()["last_error"].lower() and cap.status()["pending"] == 3
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert cap.flush(30)
    assert count(Store(tmp_path / "store")) == 3


def test_status_and_flush_over_http_with_the_token(store):
    with Capture(store, port=0, inbox=False, token="s3cret", interval=3600) as cap:  # commits only when asked
        base = cap.receiver.url.replace("/v1/traces", "")
        auth = {"Authorization": "Bearer s3cret"}
        r = requests.post(cap.receiver.url, data=request_pb(5).SerializeToString(), headers={**PB, **auth}, timeout=10)
        assert r.status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            assert requests.get(f"{base}/afterfix/status", headers=headers, timeout=10).status_code == 401
            assert requests.post(f"{base}/afterfix/flush", headers=headers, timeout=10).status_code == 401
        assert count(store) == 0  # a refused flush committed nothing
        status = requests.get(f"{base}/afterfix/status", headers=auth, timeout=10).json()
        assert STATUS_KEYS <= set(status) and status["pending"] == 5 and status["spans_stored"] == 0
        assert status["port"] == cap.receiver.port
        flushed = requests.post(f"{base}/afterfix/flush", headers=auth, timeout=30).json()
        assert flushed["flushed"] is True and flushed["status"]["spans_stored"] == 5
        assert flushed["status"]["last_commit_at"] is not None
        assert count(store) == 5


def test_a_stopped_capture_starts_again(store):
    cap = Capture(store, port=0, inbox=False, interval=0.05)
    for k in range(2):
        cap.start()
        try:
            r = requests.post(cap.receiver.url, data=request_pb(4, start=4 * k).SerializeToString(), headers=PB, timeout=10)
            assert r.status_code == 200
        finally:
            cap.stop()
    assert count(store) == 8 and not any((store.root / "spool").iterdir())


def test_a_request_arriving_while_stopping_is_not_acknowledged(store):
    cap = Capture(store, port=0, inbox=False)
    cap.start()
    cap.spool.close()  # what stop() does while a request may still be in flight
    try:
        r = requests.post(cap.receiver.url, data=request_pb(2).SerializeToString(), headers=PB, timeout=10)
        assert r.status_code == 503 and "Retry-After" in r.headers
    finally:
        cap.stop()
    assert count(store) == 0


_EXITING = """
import sys, requests
from afterfix import Store
from afterfix.ingest.capture import Capture
cap = Capture(Store(sys.argv[1]), port=0, inbox=sys.argv[2], interval=3600)  # commits only when stopped
cap.start()
assert requests.post(cap.receiver.url, data=bytes.fromhex(sys.argv[3]), headers={"Content-Type": "application/x-protobuf"}).status_code == 200
import time
while cap.tailer.stats().spans < 3:
    time.sleep(0.05)
# ends without cap.stop()
"""


def test_a_process_that_exits_without_stop_commits_what_it_holds(store, tmp_path):
    import subprocess
    import sys

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.jsonl").write_bytes(lines(0, 3))
    body = request_pb(4, trace=9).SerializeToString().hex()
    subprocess.run([sys.executable, "-c", _EXITING, str(store.root), str(inbox), body], check=True, timeout=120)
    assert count(store) == 7
    assert store.offsets()[str((inbox / "a.jsonl").resolve())][1] == (inbox / "a.jsonl").stat().st_size
