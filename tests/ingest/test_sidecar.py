"""Sidecar: `afterfix serve --stdio` as a child process, with Capture's interface in the parent."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
import requests

from afterfix import ConfigError, Store
from afterfix.ingest.sidecar import Sidecar
from kernels import capture_processes, process_alive, wait_until
from siblings import load_sibling


_tail = load_sibling(__file__, "test_tail")
request_pb, count, lines = load_sibling(__file__, "test_receiver").request_pb, _tail.count, _tail.lines
PB = {"Content-Type": "application/x-protobuf"}


def test_a_sidecar_takes_spans_flushes_reports_and_stops(tmp_path):
    store, inbox = tmp_path / "store", tmp_path / "inbox"
    inbox.mkdir()
    car = Sidecar(store, inbox=inbox, port=0, interval=60)  # commits only when asked or stopped
    before = capture_processes(os.getpid())
    car.start()
    try:
        assert car.running and capture_processes(os.getpid()) - before == {car.pid}
        status = car.status()
        port = status["port"]
        assert port > 0 and status["sources"] == [f"http://127.0.0.1:{port}/v1/traces", f"inbox {inbox}"]
        url = status["url"]
        assert requests.post(url, data=request_pb(4).SerializeToString(), headers=PB, timeout=10).status_code == 200
        (inbox / "a.jsonl").write_bytes(lines(0, 3, trace=3))
        assert wait_until(lambda: car.status()["pending"] == 7), car.status()
        assert car.flush(30) and count(Store(store)) == 7
        status = car.status()
        assert status["spans_stored"] == 7 and status["last_error"] is None and status["last_commit_at"] is not None
        assert requests.post(url, data=request_pb(2, trace=2).SerializeToString(), headers=PB, timeout=10).status_code == 200
    finally:
        pid = car.pid
        car.stop()
    assert not car.running and not process_alive(pid)
    assert count(Store(store)) == 9  # what was acknowledged after the flush was committed on stop
    car.start()  # a stopped sidecar starts again, on the same port
    try:
        assert car.status()["port"] == port
    finally:
        car.stop()


def test_an_answer_that_comes_after_its_wait_is_not_kept(tmp_path):
    car = Sidecar(tmp_path / "store", inbox=None, port=0, interval=60, request_timeout=0)
    car.start()
    try:
        assert car.flush(0) is False  # nobody waits for the answer, which still comes
        car.request_timeout = 15
        assert car.status()["port"] > 0  # the next request gets its own answer
        assert car._reply is None  # and the late one was dropped, not kept for ever
        car._take({"id": car._next_id, "flushed": True})  # an answer to a request no longer waited for
        assert car._reply is None  # is dropped: it can never pass for the next request's answer
    finally:
        car.stop()


def test_a_port_in_use_is_a_config_error_and_leaves_no_process(tmp_path):
    before = capture_processes(os.getpid())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        car = Sidecar(tmp_path / "store", inbox=None, port=port)
        with pytest.raises(ConfigError, match=rf"127.0.0.1:{port} \(Address already in use\).*port 0"):
            car.start()
    assert not car.running and car.pid is None and capture_processes(os.getpid()) == before


def test_the_command_line_carries_options_but_not_the_token(tmp_path):
    car = Sidecar(tmp_path / "store", inbox=tmp_path / "in", host="127.0.0.1", port=0, token="s3cret",
                  max_body_bytes=4096, redact_patterns=["-starts-with-a-dash"], interval=0.25)
    cmd = car.command()
    assert "s3cret" not in " ".join(cmd) and car._environment()["AFTERFIX_TOKEN"] == "s3cret"
    assert cmd[:7] == [sys.executable, "-P", "-m", "afterfix", "serve", "--stdio", f"--store={tmp_path / 'store'}"]
    assert {"--interval=0.25", "--port=0", "--max-body-bytes=4096", "--redact=-starts-with-a-dash",
            f"--inbox={tmp_path / 'in'}"} <= set(cmd)
    assert "AFTERFIX_TOKEN" not in Sidecar(tmp_path / "store", token=None)._environment()


# A parent that starts a sidecar, says its pid and port, and waits to be killed.
_PARENT = r"""
import json, sys, time
from afterfix.ingest.sidecar import Sidecar
car = Sidecar(sys.argv[1], inbox=None, port=0, interval=60)
car.start()
print(json.dumps({"child": car.pid, "port": car.status()["port"]}), flush=True)
time.sleep(600)
"""


def test_a_parent_killed_with_sigkill_leaves_no_process_and_loses_nothing(tmp_path):
    store = tmp_path / "store"
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(store)], stdout=subprocess.PIPE, text=True)
    try:
        said = json.loads(parent.stdout.readline())
        url = f"http://127.0.0.1:{said['port']}/v1/traces"
        for k in range(3):
            body = request_pb(5, start=5 * k).SerializeToString()
            assert requests.post(url, data=body, headers=PB, timeout=10).status_code == 200
        parent.send_signal(signal.SIGKILL)
        parent.wait(30)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    # stdin closed with the parent: the child commits what it acknowledged, releases its spool, exits
    assert wait_until(lambda: not process_alive(said["child"]), timeout=60), "the capture process outlived its parent"
    assert count(Store(store)) == 15
    assert not any((store / "spool").iterdir())


def test_a_child_killed_with_sigkill_is_reported_and_its_spool_replayed(tmp_path):
    store = tmp_path / "store"
    car = Sidecar(store, inbox=None, port=0, interval=60)
    car.start()
    try:
        url = car.status()["url"]
        assert requests.post(url, data=request_pb(6).SerializeToString(), headers=PB, timeout=10).status_code == 200
        pid = car.pid
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: not car.running)
        assert "ended unexpectedly with exit code -9" in car.last_error and f"pid {pid}" in car.last_error
        status = car.status()
        assert status["running"] is False and "ended unexpectedly" in status["last_error"]
        assert car.flush(1) is False  # nobody to flush
    finally:
        car.stop()
    replay = Sidecar(store, inbox=None, port=0, interval=0.1)
    replay.start()
    try:
        assert wait_until(lambda: count(Store(store)) == 6, timeout=60)
    finally:
        replay.stop()
    assert count(Store(store)) == 6  # each span once
