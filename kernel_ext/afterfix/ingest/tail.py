"""Inbox tailing: trace files dropped or growing in a folder are ingested as they grow.

`*.jsonl`, `*.json`, `*.ndjson` are OTLP/JSON lines of traces or metrics, told apart line by line
by their top-level key (`otlp_metrics.decode_lines`; only complete lines are read; a last line
without its newline is taken once the file has stopped growing for `idle_complete_s`), and
`*.pb`, `*.binpb` are OTLP protobuf files (only complete frames are read). How far each file is
stored is committed to `ingest_offsets` in the same transaction as its spans, keyed by the
file's path and fingerprint, so after a restart tailing resumes with no duplicates and no gaps,
and a file that was replaced or truncated (its fingerprint changed) is read again from 0.

One process tails a given inbox at a time: the tailer holds an flock on
`STORE/tail-<hash>.lock`; another process's tailer waits and takes over when the holder exits.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from .. import schema
from .._exceptions import DecodeError
from . import otlp, otlp_metrics
from .ingester import Batch, utcnow

if TYPE_CHECKING:
    from ..store import Store
    from .ingester import Ingester

log = logging.getLogger(__name__)

JSON_SUFFIXES = otlp.JSON_SUFFIXES
PROTOBUF_SUFFIXES = otlp.PROTOBUF_SUFFIXES
HEAD_BYTES = 1024  # how much of a file's beginning its fingerprint hashes
MIN_CHUNK = 8 << 20


def fingerprint(path: str | os.PathLike) -> str:
    """`dev:inode:n:hash` of the file's first n (at most 1 KiB) bytes: changes when the file is replaced."""
    path = Path(path)
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        head = f.read(HEAD_BYTES)
    return _fingerprint(st, head)


def _fingerprint(st: os.stat_result, head: bytes) -> str:
    return f"{st.st_dev}:{st.st_ino}:{len(head)}:{hashlib.sha1(head).hexdigest()[:16]}"


def same_file(path: str | os.PathLike, fp: str) -> bool:
    """True when `path` is still the file `fp` was taken from (same inode, same first bytes).

    A file that has only grown since still matches, even when it was shorter than
    HEAD_BYTES then, because the hash is checked over the length the fingerprint records.
    """
    try:
        dev, ino, n, digest = fp.split(":")
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            head = f.read(int(n))
    except (ValueError, OSError):
        return False
    return (str(st.st_dev), str(st.st_ino)) == (dev, ino) and len(head) == int(n) and \
        hashlib.sha1(head).hexdigest()[:16] == digest


def is_trace_file(path: Path) -> bool:
    name = path.name.lower()
    return not name.startswith(".") and name.endswith(JSON_SUFFIXES + PROTOBUF_SUFFIXES)


@dataclass
class TailStats:
    active: bool = False  # this process holds the inbox (another may be tailing it instead)
    files: int = 0
    bytes_read: int = 0
    spans: int = 0  # spans submitted to the ingester
    points: int = 0  # metric data points submitted to the ingester
    refused: int = 0
    last_error: str | None = None


@dataclass
class _File:
    path: Path
    source: str
    ino: int
    fp: str
    pos: int  # bytes submitted to the ingester
    line: int  # number of the next line at pos (JSON lines)
    size: int
    mtime_ns: int
    still_since: float  # when the size and mtime were last seen to change
    dead: bool = False  # undecodable protobuf from here on: skipped until replaced


class InboxTailer:
    """Tails every trace file in `folder` on a background thread, submitting to `ingester`."""

    def __init__(self, folder: Path, ingester: "Ingester", store: "Store", *, poll_interval: float = 0.25,
                 limits: otlp.Limits | None = None, redactor: Any = None, idle_complete_s: float = 2.0):
        self.folder = Path(folder).expanduser().resolve()
        self.ingester = ingester
        self.store = store
        self.poll_interval = poll_interval
        self.limits = limits or otlp.Limits()
        self.redactor = redactor
        self.idle_complete_s = idle_complete_s
        self.chunk_bytes = max(MIN_CHUNK, self.limits.max_body_bytes)
        key = hashlib.sha1(str(self.folder).encode()).hexdigest()[:12]
        self.lock_path = store.root / f"tail-{key}.lock"
        self._lock_fd: int | None = None
        self._files: dict[str, _File] = {}
        self._known: dict[str, tuple[str, int]] | None = None
        self._known_fresh = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stats = TailStats()
        self._stats_lock = threading.Lock()

    def start(self) -> None:
        if self._thread is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="afterfix-tail", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop reading; what was read is already with the ingester (flush it to store it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        self._release()

    def stats(self) -> TailStats:
        with self._stats_lock:
            s = TailStats(**self._stats.__dict__)
        s.active = self._lock_fd is not None
        s.files = len(self._files)
        return s

    # -- the tailer thread --------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self.poll()
                except Exception as e:  # a bad file or a busy store must not end tailing
                    log.exception("afterfix tail: polling %s failed", self.folder)
                    self._note_error(f"{self.folder}: {type(e).__name__}: {e}")
                self._stop.wait(self.poll_interval)
        finally:
            self._release()
            self.store.close()  # this thread's read connection

    def poll(self) -> int:
        """Read what is new in every file once; returns the bytes read (0 when standing by)."""
        if not self._acquire():
            return 0
        if self._known is None:
            self._known = self.store.offsets()
            self._known_fresh = True
        else:
            self._known_fresh = False  # re-read at most once per poll, when a file is new to us
        seen, read = set(), 0
        try:
            paths = sorted(p for p in self.folder.iterdir() if is_trace_file(p))
        except FileNotFoundError:
            paths = []
        for path in paths:
            if self._stop.is_set() or self.ingester.overloaded:
                break  # the rest waits for the next poll: memory stays bounded
            seen.add(str(path))
            try:
                read += self._poll_file(path)
            except FileNotFoundError:
                continue  # removed between listing and reading
        else:
            for gone in set(self._files) - seen:
                del self._files[gone]
        return read

    def _acquire(self) -> bool:
        if self._lock_fd is not None:
            return True
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        self._files.clear()
        self._known = None  # another process may have tailed until now: read its offsets
        return True

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _resume(self, path: Path, st: os.stat_result) -> _File:
        source = str(path)
        committed = self._known.get(source) if self._known is not None else None
        if committed is None and not self._known_fresh:
            self._known = self.store.offsets()  # another process may have ingested it meanwhile
            self._known_fresh = True
            committed = self._known.get(source)
        pos, line = 0, 1
        if committed is not None and 0 < committed[1] <= st.st_size and same_file(path, committed[0]):
            pos = committed[1]
            if not path.name.lower().endswith(PROTOBUF_SUFFIXES):
                line = 1 + newlines_before(path, pos)
        return _File(path, source, st.st_ino, "", pos, line, -1, -1, time.monotonic())

    def _poll_file(self, path: Path) -> int:
        st = path.stat()
        f = self._files.get(str(path))
        if f is None or f.ino != st.st_ino or st.st_size < f.pos or (self._changed(f, st) and f.fp and not same_file(path, f.fp)):
            f = self._resume(path, st) if f is None else self._restart(path, st)
            self._files[str(path)] = f
        if (st.st_size, st.st_mtime_ns) != (f.size, f.mtime_ns):
            f.size, f.mtime_ns, f.still_since = st.st_size, st.st_mtime_ns, time.monotonic()
        if f.dead or st.st_size <= f.pos:
            return 0
        with open(path, "rb") as fh:
            fh.seek(f.pos)
            data = fh.read(min(st.st_size - f.pos, self.chunk_bytes))
            fh.seek(0)
            head = fh.read(HEAD_BYTES)
        f.fp = _fingerprint(st, head)
        idle = time.monotonic() - f.still_since >= self.idle_complete_s
        if path.name.lower().endswith(PROTOBUF_SUFFIXES):
            return self._take_protobuf(f, data, idle)
        return self._take_lines(f, data, idle)

    @staticmethod
    def _changed(f: _File, st: os.stat_result) -> bool:
        return (st.st_size, st.st_mtime_ns) != (f.size, f.mtime_ns)

    def _restart(self, path: Path, st: os.stat_result) -> _File:
        log.info("afterfix tail: %s was replaced or truncated; reading it again from the start", path)
        return _File(path, str(path), st.st_ino, "", 0, 1, -1, -1, time.monotonic())

    def _decode_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"limits": self.limits}
        if self.redactor is not None:
            kwargs["redactor"] = self.redactor
        return kwargs

    def _take_lines(self, f: _File, data: bytes, idle: bool) -> int:
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            if len(data) >= self.chunk_bytes:  # one line longer than any record can be: skip it whole
                return self._skip_long_line(f)
            if not idle:
                return 0  # the writer is still writing this line
            cut = len(data)  # the file stopped growing: its last line has no newline
        chunk = data[:cut]
        decoded = otlp_metrics.decode_lines(chunk, source=f.source, first_line=f.line, **self._decode_kwargs())
        self._submit(f, decoded, f.pos + cut)
        f.line += chunk.count(b"\n")
        return cut

    def _skip_long_line(self, f: _File) -> int:
        end = f.pos
        with open(f.path, "rb") as fh:
            fh.seek(f.pos)
            while True:
                block = fh.read(1 << 20)
                if not block:
                    return 0  # no newline yet: wait for the writer to finish the line
                i = block.find(b"\n")
                if i >= 0:
                    end += i + 1
                    break
                end += len(block)
        reason = f"line is {end - f.pos} bytes, over the limit of {self.chunk_bytes}: split the batch into smaller lines"
        self._submit(f, _refusal(f.source, f"line {f.line}", reason), end)
        f.line += 1
        return end - f.pos

    def _take_protobuf(self, f: _File, data: bytes, idle: bool) -> int:
        if f.pos == 0 and data[:1] != b"\0" and not idle:
            return 0  # not length-prefixed: one whole message, complete only once the file stops growing
        try:
            decoded, consumed = otlp.decode_protobuf_file(data, source=f.source, first_byte=f.pos, **self._decode_kwargs())
        except DecodeError as e:
            f.dead = True
            reason = f"not OTLP protobuf from here on ({e}); nothing after it is read until the file is replaced"
            self._submit(f, _refusal(f.source, f"byte {f.pos}", reason), f.pos + len(data))
            return len(data)
        if consumed == 0:
            if len(data) >= self.chunk_bytes:
                self._note_error(f"{f.path} byte {f.pos}: a protobuf frame larger than {self.chunk_bytes} bytes; "
                                 "raise Limits.max_body_bytes to read it")
            return 0
        self._submit(f, decoded, f.pos + consumed)
        return consumed

    def _submit(self, f: _File, decoded: Any, end: int) -> None:
        batch = Batch.of(decoded)
        self.ingester.submit(batch, offsets=[(f.source, f.fp, end)])
        with self._stats_lock:
            self._stats.bytes_read += end - f.pos
            self._stats.spans += batch.num_spans
            self._stats.points += batch.num_points
            self._stats.refused += batch.refused
        f.pos = end

    def _note_error(self, message: str) -> None:
        with self._stats_lock:
            self._stats.last_error = f"{utcnow():%Y-%m-%d %H:%M:%S} {message}"


def _refusal(source: str, location: str, reason: str) -> Batch:
    now: dt.datetime = utcnow()
    quarantine = pa.Table.from_pydict(
        {"received_at": [now], "source": [source], "location": [location], "reason": [reason], "record": [None]},
        schema=schema.QUARANTINE_SCHEMA)
    return Batch(schema.empty("spans"), schema.empty("events"), quarantine)


def newlines_before(path: Path, end: int) -> int:
    """The newlines in the first `end` bytes of the file at `path`, read in blocks."""
    n = 0
    with open(path, "rb") as f:
        while end > 0:
            block = f.read(min(end, 16 << 20))
            if not block:
                break
            n += block.count(b"\n")
            end -= len(block)
    return n
