"""Nothing acknowledged is lost: processes killed with SIGKILL, restarted on the same store.

Each test runs real `Capture`s in subprocesses, talks to them over HTTP and the inbox, kills
them with SIGKILL at a point the test chooses, and then checks the store span by span.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from afterfix import Store
from siblings import load_sibling

pytestmark = pytest.mark.slow


request_pb = load_sibling(__file__, "test_receiver").request_pb
_tail = load_sibling(__file__, "test_tail")
lines, line = _tail.lines, _tail.line
PB = {"Content-Type": "application/x-protobuf"}

# A process capturing into a store until it is killed (SIGKILL) or told to stop (SIGTERM).
# SIGUSR1 commits what it holds. It prints its status as one JSON line at start and at exit.
_SERVE = r"""
import json, signal, sys, threading
from afterfix import Store
from afterfix.ingest.capture import Capture
store_path, inbox, interval = sys.argv[1], sys.argv[2], float(sys.argv[3])
cap = Capture(Store(store_path), port=0, inbox=inbox, interval=interval)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGUSR1, lambda *_: threading.Thread(target=cap.flush).start())
cap.start()
while cap.status()["recovering"]:
    stop.wait(0.05)
print(json.dumps(cap.status(), default=str), flush=True)
stop.wait()
ok = cap.flush(60)
cap.stop()
print(json.dumps({**cap.status(), "flushed": ok}, default=str), flush=True)
"""


_RUNNING: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_process_left():
    """A failing test must not leave capture processes behind."""
    yield
    while _RUNNING:
        proc = _RUNNING.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


class Server:
    def __init__(self, store: Path, inbox: Path, interval: float):
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVE, str(store), str(inbox), str(interval)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _RUNNING.append(self.proc)
        first = self.proc.stdout.readline()
        assert first, self.proc.stderr.read()
        self.status = json.loads(first)
        self.url = self.status["url"]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def flush(self) -> None:
        self.proc.send_signal(signal.SIGUSR1)

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=90)
        assert self.proc.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])


def span_ids(store: Store) -> list[str]:
    return list(store.query("SELECT span_id FROM spans")["span_id"])


def batch_ids(k: int, n: int = 25) -> set[str]:
    return {f"{k * n + i + 1:016x}" for i in range(n)}


def send(url: str, k: int, n: int = 25) -> bool:
    """Batch k (spans k*n+1 .. k*n+n); True if the receiver acknowledged it."""
    try:
        return requests.post(url, data=request_pb(n, start=k * n).SerializeToString(), headers=PB, timeout=30).status_code == 200
    except requests.ConnectionError:
        return False  # killed while this one was in flight: never acknowledged


def wait_for(predicate, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_every_acknowledged_span_survives_sigkill_exactly_once(tmp_path):
    store_path, inbox = tmp_path / "store", tmp_path / "inbox"
    Store(store_path).create()
    first = Server(store_path, inbox, interval=3600)  # commits only when told: the rest stays spooled
    acked: set[int] = set()
    for k in range(10):
        assert send(first.url, k)
        acked.add(k)
    first.flush()
    reader = Store(store_path)
    wait_for(lambda: len(span_ids(reader)) == 250, "the first 10 batches to be committed")

    stop = threading.Event()

    def keep_sending() -> None:
        k = 10
        while not stop.is_set() and k < 400:
            if send(first.url, k):
                acked.add(k)
            k += 1

    sender = threading.Thread(target=keep_sending)
    sender.start()
    wait_for(lambda: len(acked) >= 30, "20 more acknowledged batches")
    first.kill()  # mid-stream: one request may be in flight
    stop.set()
    sender.join()
    assert len(span_ids(reader)) == 250  # the acknowledged rest is only in the dead process's spool

    second = Server(store_path, inbox, interval=0.1)  # replays the spool before it reports ready
    final = second.stop()
    assert final["flushed"] and final["last_error"] is None
    ids = span_ids(reader)
    assert len(ids) == len(set(ids)), "a span was stored twice"
    wanted = set().union(*(batch_ids(k) for k in acked))
    assert wanted <= set(ids), f"{len(wanted - set(ids))} acknowledged spans lost"
    assert not [p for p in (store_path / "spool").iterdir() if p.is_dir()]  # replayed and removed


def test_an_inbox_file_half_tailed_when_killed_is_finished_without_duplicates(tmp_path):
    store_path, inbox = tmp_path / "store", tmp_path / "inbox"
    Store(store_path).create()
    inbox.mkdir()
    f = inbox / "night.jsonl"
    f.write_bytes(lines(0, 50) + line(50, bad=True) + lines(51, 100))
    first = Server(store_path, inbox, interval=0.1)
    reader = Store(store_path)
    wait_for(lambda: len(span_ids(reader)) == 99, "the first 100 lines")
    with open(f, "ab") as fh:  # the agent keeps writing while the process dies
        fh.write(lines(100, 150) + line(150)[:30])
        fh.flush()
        first.kill()
        fh.write(line(150)[30:] + line(151, bad=True) + lines(152, 200))
    second = Server(store_path, inbox, interval=0.1)
    wait_for(lambda: len(span_ids(reader)) == 198, "every line", timeout=60)
    final = second.stop()
    assert final["last_error"] is None
    ids = span_ids(reader)
    assert len(ids) == len(set(ids)) == 198
    locations = sorted(loc.split(",")[0] for loc in reader.query("SELECT location FROM quarantine").location)
    assert locations == ["line 152", "line 51"]  # each bad line quarantined once, with its number
    assert reader.offsets()[str(f.resolve())][1] == f.stat().st_size


def test_two_processes_storing_the_same_spans_store_each_once(tmp_path):
    store_path = tmp_path / "store"
    Store(store_path).create()
    servers = [Server(store_path, tmp_path / f"inbox{i}", interval=0.05) for i in range(2)]
    results: list[bool] = []

    def deliver(server: Server) -> None:
        for k in range(30):
            results.append(send(server.url, k, n=20))  # both get every batch

    threads = [threading.Thread(target=deliver, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    finals = [s.stop() for s in servers]
    assert all(results) and len(results) == 60
    for final in finals:
        assert final["flushed"] and final["last_error"] is None  # no lock error reached anyone
    ids = span_ids(Store(store_path))
    assert len(ids) == len(set(ids)) == 600
    assert sum(f["spans_stored"] for f in finals) == 600 and sum(f["duplicates"] for f in finals) == 600


def _host_view(conf: Path, folder: Path) -> Path:
    """The same team store as another machine sees it: the same catalog and data, its own working
    folder (spool, locks)."""
    text = conf.read_text()
    assert "\nlocal: " in text
    view = folder / f"{folder.name}.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    view.write_text("".join(f"local: {folder / 'work'}\n" if ln.startswith("local: ") else ln
                            for ln in text.splitlines(keepends=True)))
    return view


def test_two_hosts_on_a_team_store_store_a_span_sent_to_both_once_and_lose_nothing_when_one_is_killed(
        team_services, tmp_path):
    conf = team_services.new_store("two-hosts")
    host_a, host_b = _host_view(conf, tmp_path / "host-a"), _host_view(conf, tmp_path / "host-b")
    Store(conf).create()
    a = Server(host_a, tmp_path / "inbox-a", interval=0.1)
    b = Server(host_b, tmp_path / "inbox-b", interval=3600)  # commits when told, so it can die holding spans
    acked_a: set[int] = set()
    acked_b: set[int] = set()
    # Every batch delivered to both hosts, as a client retrying against another replica does;
    # host b commits now and then, racing host a for the same spans.
    for k in range(20):
        if send(a.url, k):
            acked_a.add(k)
        if send(b.url, k):
            acked_b.add(k)
        if k % 4 == 3:
            b.flush()
    assert acked_a == acked_b == set(range(20))
    # Then batches only host b acknowledges, still in its spool when it is killed.
    for k in range(20, 30):
        assert send(b.url, k)
        acked_b.add(k)
    b.kill()
    reader = Store(conf)
    wait_for(lambda: batch_ids(19) <= set(span_ids(reader)), "host a to store the first 20 batches")
    assert not batch_ids(25) & set(span_ids(reader))  # only in the dead host's spool

    again = Server(host_b, tmp_path / "inbox-b", interval=0.1)  # host b back: replays its spool
    for final in (a.stop(), again.stop()):
        assert final["flushed"] and final["last_error"] is None
    ids = span_ids(reader)
    assert len(ids) == len(set(ids)), "a span was stored twice"
    assert set(ids) == set().union(*(batch_ids(k) for k in acked_a | acked_b))
