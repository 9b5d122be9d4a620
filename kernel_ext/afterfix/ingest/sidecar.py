"""The capture process beside a kernel: `afterfix serve --stdio` as a child, and both ends of its pipes.

A kernel that ran `Capture` itself would decode, spool and commit on threads of its own
process, and their pure-Python work holds the GIL that the kernel's message handling needs
between two cells: a trivial cell waited up to tens of milliseconds longer while spans
streamed in. `Sidecar` runs the same `Capture` in a child process instead; the kernel keeps
two threads that sleep in a blocking read of the child's stdout and stderr.

The pipe protocol, one JSON object per line:
- child → parent, once: `{"event": "ready", "pid": N, "status": {...}}` (the status holds the
  bound port, also when port 0 picked it) or `{"event": "error", "kind": ..., "error": ...}`.
- parent → child: `{"id": N, "command": "status"}` or `{"id": N, "command": "flush", "timeout": S}`;
  child → parent: `{"id": N, "status": {...}}`, plus `"flushed": true|false` for a flush.
- child → parent, unasked: `{"event": "status", ...}` whenever the last error changes, and
  `{"event": "stopped", ...}` once everything is committed.
- the parent closing the child's stdin (also by dying, kill -9 included) stops the child: it
  closes its listening socket, commits what it holds and releases its spool, then exits.
  What it acknowledged and could not commit stays in its spool for the next capture to replay.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from .._exceptions import AfterfixError, ConfigError
from .receiver import status_json

log = logging.getLogger(__name__)

ENV_TOKEN = "AFTERFIX_TOKEN"  # the token reaches the child through its environment, never its argv
_TIME_KEYS = ("started_at", "last_commit_at")


# -- the child's end ------------------------------------------------------------------------


class StdioChannel:
    """`afterfix serve --stdio`'s side: readiness and answers on stdout, requests and EOF on stdin."""

    def __init__(self, capture, stop: threading.Event, *, stdin=None, stdout=None):
        self.capture = capture
        self.stop = stop
        self._in = stdin if stdin is not None else sys.stdin.buffer
        self._out = stdout if stdout is not None else sys.stdout
        self._lock = threading.Lock()
        self._reported: str | None = None
        self._thread: threading.Thread | None = None

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, default=str)
        with self._lock:
            try:
                self._out.write(line + "\n")
                self._out.flush()
            except (OSError, ValueError):  # the parent is gone: stdin's EOF stops this process
                pass

    def start(self) -> None:
        """Say ready (with the bound port), then serve requests until stdin closes."""
        status = self.capture.status()
        self._reported = status.get("last_error")
        self.send({"event": "ready", "pid": os.getpid(), "status": status_json(status)})
        self._thread = threading.Thread(target=self._serve, name="afterfix-stdio", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            for raw in self._in:
                self._answer(raw)
        except (OSError, ValueError):
            pass
        finally:
            self.stop.set()  # stdin closed: the parent stopped us or died

    def _answer(self, raw: bytes) -> None:
        try:
            request = json.loads(raw)
            rid, command = request["id"], request["command"]
        except (ValueError, TypeError, KeyError):
            self.send({"event": "bad-request", "error": f"not a request: {raw[:200]!r}"})
            return
        if command == "flush":
            try:
                timeout = min(max(float(request.get("timeout", 10)), 0.0), 600.0)
            except (TypeError, ValueError):
                timeout = 10.0
            flushed = self.capture.flush(timeout)
            self.send({"id": rid, "flushed": flushed, "status": status_json(self.capture.status())})
        elif command == "status":
            self.send({"id": rid, "status": status_json(self.capture.status())})
        else:
            self.send({"id": rid, "error": f"unknown command {command!r}: use status or flush"})

    def report_new_error(self) -> None:
        """Tell the parent when the last error changed, so it can say so after the next cell."""
        status = self.capture.status()
        if status.get("last_error") != self._reported:
            self._reported = status.get("last_error")
            self.send({"event": "status", "status": status_json(status)})

    def stopped(self) -> None:
        self.send({"event": "stopped", "status": status_json(self.capture.status())})


# -- the parent's end ------------------------------------------------------------------------


def _with_times(status: dict[str, Any]) -> dict[str, Any]:
    out = dict(status)
    for key in _TIME_KEYS:
        if isinstance(out.get(key), str):
            try:
                out[key] = dt.datetime.fromisoformat(out[key])
            except ValueError:
                pass
    return out


class Sidecar:
    """`Capture`'s interface (start, stop, flush, status, running), run in a child process.

    The options are `Capture`'s and `afterfix serve`'s. `start()` returns once the child is
    receiving, or raises ConfigError with the child's reason (a port in use, say).
    """

    def __init__(self, store: str | os.PathLike, *, inbox: str | os.PathLike | None = None, listen: bool = True,
                 host: str = "127.0.0.1", port: int = 4318, token: str | None = None,
                 max_body_bytes: int | None = None, redact_patterns: tuple[str, ...] | list[str] = (),
                 interval: float = 0.5, ready_timeout: float = 120, stop_timeout: float = 60,
                 request_timeout: float = 15):
        self.store = str(store)  # a folder, or a team store's URL or file (never holds a secret)
        self.inbox = Path(inbox) if inbox is not None else None
        self.listen = listen
        self.host = host
        self.port = port
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.redact_patterns = list(redact_patterns)
        self.interval = interval
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.request_timeout = request_timeout
        self._proc: subprocess.Popen | None = None
        self._threads: list[threading.Thread] = []
        self._cond = threading.Condition()
        self._requests = threading.Lock()  # one request on the pipe at a time
        self._awaiting: int | None = None  # the id of the request being waited for
        self._reply: dict | None = None  # its answer, once it came
        self._next_id = 0
        self._reset()

    def _reset(self) -> None:
        self._ready = False
        self._start_error: tuple[str, str] | None = None
        self._exit_code: int | None = None
        self._stopping = False
        self._ended: str | None = None  # why the child ended when nobody asked it to
        self._status: dict[str, Any] = {}
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)

    # -- the child process -----------------------------------------------------------------

    def command(self) -> list[str]:
        """The child's command line: options only, the token goes through the environment."""
        # -P: the kernel's working folder is not put on the child's sys.path (a notebook folder's
        # own duckdb.py or afterfix.py must not shadow the real ones).
        cmd = [sys.executable, "-P", "-m", "afterfix", "serve", "--stdio", f"--store={self.store}",
               f"--interval={self.interval}"]
        if self.listen:
            cmd += [f"--host={self.host}", f"--port={self.port}"]
        else:
            cmd.append("--no-listen")
        cmd.append(f"--inbox={self.inbox}" if self.inbox is not None else "--no-inbox")
        if self.max_body_bytes:
            cmd.append(f"--max-body-bytes={int(self.max_body_bytes)}")
        cmd += [f"--redact={p}" for p in self.redact_patterns]
        return cmd

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop(ENV_TOKEN, None)
        if self.token:
            env[ENV_TOKEN] = self.token
        # The child imports the same afterfix as this process, however this one found it.
        package_parent = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
        return env

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True from a successful start until stop(), while the child lives."""
        return self._proc is not None and self._ready and self._exit_code is None

    def start(self) -> None:
        """Start the child and wait until it receives; raises ConfigError (and leaves no child) if it cannot."""
        if self._proc is not None:
            if self.running:
                return
            self.stop()  # the child died: clear it away before starting another
        self._reset()
        proc = subprocess.Popen(
            self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=self._environment(), start_new_session=True,  # a Ctrl-C or interrupt for the kernel is not for it
        )
        self._proc = proc
        self._threads = [
            threading.Thread(target=self._read_stdout, args=(proc,), name=f"afterfix-sidecar-{proc.pid}-out", daemon=True),
            threading.Thread(target=self._read_stderr, args=(proc,), name=f"afterfix-sidecar-{proc.pid}-err", daemon=True),
        ]
        for t in self._threads:
            t.start()
        try:
            with self._cond:
                self._cond.wait_for(lambda: self._ready or self._start_error or self._exit_code is not None,
                                    self.ready_timeout)
                ready, start_error, code = self._ready, self._start_error, self._exit_code
        except BaseException:  # interrupted while waiting: no child is left behind
            self.stop()
            raise
        if ready:
            if self.listen and self._status.get("port"):
                self.port = int(self._status["port"])  # like Capture: a restart comes back where senders send
            return
        self.stop()
        if start_error is not None:
            kind, message = start_error
            raise (ConfigError if kind == "ConfigError" else AfterfixError)(message)
        said = self._stderr[-1] if self._stderr else "nothing on stderr"  # the error, after any usage lines
        if code is None:
            raise AfterfixError(f"the capture process ({' '.join(self.command()[:6])} ...) did not say it was ready "
                                f"within {self.ready_timeout:g} s: {said}")
        raise AfterfixError(f"the capture process ended with exit code {code} before it was ready: {said}")

    def stop(self, timeout: float | None = None) -> None:
        """Close the child's stdin and wait until it has committed what it holds and exited."""
        proc = self._proc
        if proc is None:
            return
        self._stopping = True
        try:
            proc.stdin.close()  # EOF: the child stops its receiver first, then flushes
        except OSError:
            pass
        try:
            proc.wait(timeout if timeout is not None else self.stop_timeout)
        except subprocess.TimeoutExpired:
            # What it acknowledged is in its spool, which the next capture replays.
            log.warning("afterfix: capture process %d did not stop within %s s; killing it", proc.pid,
                        timeout if timeout is not None else self.stop_timeout)
            proc.kill()
            proc.wait()
        for t in self._threads:
            t.join(10)
        for stream in (proc.stdout, proc.stderr):
            try:
                stream.close()
            except OSError:
                pass
        self._threads = []
        self._proc = None

    # -- reading the child (blocking reads: these threads sleep in the kernel, not on the GIL) --

    def _read_stdout(self, proc: subprocess.Popen) -> None:
        for raw in proc.stdout:
            try:
                message = json.loads(raw)
            except ValueError:
                log.debug("afterfix capture process said: %r", raw[:200])
                continue
            if isinstance(message, dict):
                self._take(message)
        code = proc.wait()
        with self._cond:
            self._exit_code = code
            if self._ready and not self._stopping:
                said = f": {self._stderr[-1]}" if self._stderr else ""
                self._ended = (f"the capture process (pid {proc.pid}) ended unexpectedly with exit code {code}{said}; "
                               "spans it acknowledged are kept in its spool and stored by the next capture: start capture again")
            self._cond.notify_all()

    def _take(self, message: dict) -> None:
        with self._cond:
            if "id" in message and message["id"] == self._awaiting:  # a reply after its wait timed out is dropped
                self._reply = message
            event = message.get("event")
            if event == "ready":
                self._ready = True
            elif event == "error":
                self._start_error = (str(message.get("kind") or ""), str(message.get("error") or "unknown error"))
            if isinstance(message.get("status"), dict):
                self._status = _with_times(message["status"])
            self._cond.notify_all()

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._stderr.append(line)
                log.debug("afterfix capture process: %s", line)

    # -- requests ------------------------------------------------------------------------

    def _request(self, command: str, wait: float, **fields: Any) -> dict | None:
        """Send one request and wait for its answer; None when the child is gone or silent."""
        with self._requests:
            proc = self._proc
            if proc is None or self._exit_code is not None:
                return None
            self._next_id += 1
            rid = self._next_id
            with self._cond:
                self._awaiting, self._reply = rid, None
            try:
                proc.stdin.write((json.dumps({"id": rid, "command": command, **fields}) + "\n").encode())
                proc.stdin.flush()
            except (OSError, ValueError):
                with self._cond:
                    self._awaiting = None
                return None
            with self._cond:
                self._cond.wait_for(lambda: self._reply is not None or self._exit_code is not None, wait)
                reply, self._awaiting, self._reply = self._reply, None, None
                return reply

    def flush(self, timeout: float = 10) -> bool:
        """Commit everything the child received so far; True when it is all in the store."""
        reply = self._request("flush", timeout + self.request_timeout, timeout=timeout)
        return bool(reply and reply.get("flushed"))

    @property
    def last_error(self) -> str | None:
        """The latest error the child reported, or why it ended; no round trip to the child."""
        with self._cond:
            return self._ended or self._status.get("last_error")

    def status(self) -> dict[str, Any]:
        """The child's `Capture.status()` (fresh when it answers), with `running` and `pid` from here."""
        reply = self._request("status", self.request_timeout) if self.running else None
        with self._cond:
            info = dict(self._status)
            if self.running and reply is None:
                info["last_error"] = (f"the capture process (pid {self.pid}) did not answer within "
                                      f"{self.request_timeout:g} s; figures are from its last answer")
            if self._ended:
                info["last_error"] = self._ended
        info["running"] = self.running
        info["pid"] = self.pid
        return info
