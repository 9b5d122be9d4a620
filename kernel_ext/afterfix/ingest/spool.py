"""The write-ahead spool: what the receiver acknowledged and the store has not committed yet.

Each process that receives over HTTP owns one folder, `STORE/spool/<owner-id>/`, and holds an
flock on its `owner.lock` while alive. A batch is appended to the current segment file and
fsynced before the receiver answers 200; once the ingester has committed it, the position is
marked done, and a segment whose every record is done is deleted. The ingester records how far
each segment is committed as `ingest_offsets` rows (source `spool:<id>/<segment>`) in the same
transaction as the data, so a process that finds a spool folder whose owner died (its lock is
free) replays exactly the records the store does not have yet.

Records hold the decoded, already-redacted rows as Arrow IPC, never the raw request: secrets
that the redactor removed must not reach the disk. A record is
`MAGIC | payload length (u64) | crc32 (u32) | payload`; a torn record at the end of a segment
(a crash mid-write, which was never acknowledged) is ignored.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import socket
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pyarrow as pa

from .ingester import Batch

if TYPE_CHECKING:
    from ..store import Store
    from .ingester import Ingester

log = logging.getLogger(__name__)

MAGIC = b"AFS1"
_HEAD = struct.Struct("<4sQI")  # magic, payload length, crc32 of payload
_PART = struct.Struct("<Q")
_SEGMENT_GLOB = "seg-*.arrows"
_STALE_TMP_S = 60.0


@dataclass(frozen=True, order=True)
class SpoolPosition:
    """Where one record ends: its segment number and the byte offset just past it."""

    segment: int
    end: int


def _new_owner_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


def _segment_name(n: int) -> str:
    return f"seg-{n:08d}.arrows"


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def encode_record(batch: Batch) -> bytes:
    parts = [_ipc(batch.spans), _ipc(batch.events), _ipc(batch.quarantine)]
    if batch.num_points:  # a fourth part; records without it read as they always did
        parts.append(_ipc(batch.metrics))
    payload = _PART.pack(batch.redactions) + b"".join(_PART.pack(len(p)) + p for p in parts)
    return _HEAD.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def _decode_payload(payload: bytes) -> Batch:
    """A record's batch: spans, events, quarantine, then metric points when the record has them
    (records written before metrics were received have three parts)."""
    (redactions,) = _PART.unpack_from(payload, 0)
    at = _PART.size
    tables = []
    while at < len(payload):
        (n,) = _PART.unpack_from(payload, at)
        at += _PART.size
        tables.append(pa.ipc.open_stream(pa.py_buffer(payload[at:at + n])).read_all())
        at += n
    return Batch(spans=tables[0], events=tables[1], quarantine=tables[2], redactions=redactions,
                 metrics=tables[3] if len(tables) > 3 else None)


def read_records(path: Path, start: int = 0) -> Iterator[tuple[int, Batch]]:
    """(end offset, batch) for every intact record from `start`; stops at a torn or corrupt one."""
    with open(path, "rb") as f:
        f.seek(start)
        at = start
        while True:
            head = f.read(_HEAD.size)
            if len(head) < _HEAD.size:
                return
            magic, n, crc = _HEAD.unpack(head)
            payload = f.read(n) if magic == MAGIC else b""
            if magic != MAGIC or len(payload) < n or zlib.crc32(payload) != crc:
                log.warning("afterfix spool: %s: torn or corrupt record at byte %d; the rest of the segment is ignored "
                            "(it was never acknowledged)", path, at)
                return
            at += _HEAD.size + n
            yield at, _decode_payload(payload)


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on `path`, or None while someone else holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:
        return None  # its folder vanished: another process finished with it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Write-ahead log for acknowledged-but-not-yet-committed HTTP batches, under STORE/spool/<owner-id>/."""

    def __init__(self, store: "Store", *, segment_bytes: int = 64 << 20):
        self.store = store
        self.base = store.root / "spool"
        self.owner_id = _new_owner_id()
        self.dir = self.base / self.owner_id
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()  # one fsync at a time; taken before `_lock`, never inside it
        self._written = 0  # records written so far ...
        self._synced = 0  # ... and how many of them are known to be on disk
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._segment = 0
        self._size = 0
        self._outstanding: dict[int, set[int]] = {}
        self.appended = 0
        self.committed_records = 0
        self.replayed = 0
        self.adopted: list[str] = []
        self._adopted_release: list = []  # callables releasing adopted folders not yet replayed
        self.recovering = False
        self.last_error: str | None = None
        self._closing = threading.Event()
        self._closed = False
        self._recovery_thread: threading.Thread | None = None

    # -- this process's own spool -----------------------------------------------------

    def open(self) -> None:
        """Accept appends again after `close()` (under a new owner id); the folder is made on first append."""
        with self._lock:
            if self._closed:
                self.owner_id = _new_owner_id()
                self.dir = self.base / self.owner_id
                self._segment, self._size = 0, 0
                self._closed = False

    def _open_locked(self) -> None:
        if self._closed:
            # A request still in flight while the capture stops: it must not be acknowledged.
            raise OSError("the spool is closed: this process is stopping capture")
        if self._lock_fd is not None:
            return
        self.base.mkdir(parents=True, exist_ok=True)
        # Built under a dot name and renamed, so an adopter never sees the folder without its
        # lock already held.
        tmp = self.base / f".{self.owner_id}.tmp"
        tmp.mkdir()
        fd = _try_lock(tmp / "owner.lock")
        assert fd is not None
        os.rename(tmp, self.dir)
        _fsync_dir(self.base)
        self._lock_fd = fd
        self._new_segment()

    def _new_segment(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)  # records not yet synced by `_sync` are in this segment
            os.close(self._fd)
        self._segment += 1
        self._fd = os.open(self.dir / _segment_name(self._segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        _fsync_dir(self.dir)
        self._size = 0
        self._outstanding[self._segment] = set()

    def source(self, segment: int) -> str:
        """The `ingest_offsets` source name for one of this spool's segments."""
        return f"spool:{self.owner_id}/{_segment_name(segment)}"

    def append(self, decoded: Any) -> SpoolPosition:
        """Write one batch durably (fsynced before returning) and return where it ends."""
        record = encode_record(Batch.of(decoded))
        with self._lock:
            pos, ticket = self._write_locked(record)
        self._sync(ticket)
        return pos

    def _write_locked(self, record: bytes) -> tuple[SpoolPosition, int]:
        """Write one encoded record (not yet fsynced): where it ends, and its ticket for `_sync`."""
        self._open_locked()
        if self._size >= self.segment_bytes:
            finished = self._segment
            self._new_segment()
            self._drop_if_done(finished)
        try:
            written = os.write(self._fd, record)
            if written != len(record):
                raise OSError(f"short write to the spool ({written} of {len(record)} bytes): is {self.dir} full?")
        except OSError:
            os.ftruncate(self._fd, self._size)  # no torn record in front of the next one
            raise
        self._size += len(record)
        pos = SpoolPosition(self._segment, self._size)
        self._outstanding[self._segment].add(pos.end)
        self.appended += 1
        self._written += 1
        return pos, self._written

    def _sync(self, ticket: int) -> None:
        """Returns once every record up to write number `ticket` is on disk.

        Group commit: one fsync covers every record written before it started, so requests
        that arrive together share one fsync instead of queueing for one each. The current
        segment's descriptor is duplicated under the lock, as a rotation may close it meanwhile
        (a rotation fsyncs the segment it closes).
        """
        with self._sync_lock:
            if self._synced >= ticket:  # read without `_lock`: it only grows
                return
            with self._lock:
                if self._fd is None:  # closed meanwhile: `close()` fsynced what it could
                    if self._synced >= ticket:
                        return
                    raise OSError("the spool is closed: this process is stopping capture")
                fd, upto = os.dup(self._fd), self._written
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            with self._lock:
                self._synced = max(self._synced, upto)

    def submit(self, decoded: Any, ingester: "Ingester") -> SpoolPosition:
        """Append durably, then hand the batch to the ingester, in spool order.

        Writing and submitting under the spool lock keeps submission order equal to spool order,
        so the newest committed offset of a segment always covers every record before it. The
        record is encoded before and fsynced after, outside the lock. Should the fsync fail, the
        batch may still be committed: the caller then refuses it, and a retried delivery is
        stored once.
        """
        batch = Batch.of(decoded)
        record = encode_record(batch)
        with self._lock:
            pos, ticket = self._write_locked(record)
            ingester.submit(batch, offsets=[(self.source(pos.segment), self.owner_id, pos.end)],
                            on_commit=lambda: self.committed(pos))
        self._sync(ticket)
        return pos

    def committed(self, position: SpoolPosition) -> None:
        """Mark one record as stored; delete its segment once nothing in it is pending."""
        with self._lock:
            pending = self._outstanding.get(position.segment)
            if pending is None or position.end not in pending:
                return
            pending.discard(position.end)
            self.committed_records += 1
            if position.segment != self._segment:
                self._drop_if_done(position.segment)
            elif not pending and self._size >= self.segment_bytes:
                self._new_segment()
                self._drop_if_done(position.segment)

    def _drop_if_done(self, segment: int) -> None:
        if self._outstanding.get(segment):
            return
        self._outstanding.pop(segment, None)
        try:
            os.unlink(self.dir / _segment_name(segment))
        except FileNotFoundError:
            pass

    @property
    def pending_records(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._outstanding.values())

    def close(self) -> None:
        """Release the folder: deleted when everything is committed, else left for the next process.

        Adopted folders whose replay is not committed yet are released too, for the next process.
        """
        self.stop_recovery()
        for release in list(self._adopted_release):
            release()
        with self._lock:
            self._closed = True
            if self._lock_fd is None:
                return
            if self._fd is not None:
                with contextlib.suppress(OSError):  # for requests still waiting in `_sync`
                    os.fsync(self._fd)
                    self._synced = self._written
                os.close(self._fd)
                self._fd = None
            if not any(self._outstanding.values()):
                shutil.rmtree(self.dir, ignore_errors=True)
            os.close(self._lock_fd)  # releases the flock: a later process adopts what is left
            self._lock_fd = None
            self._outstanding.clear()

    # -- spools left by processes that died ----------------------------------------------

    def start_recovery(self, ingester: "Ingester", *, every: float = 30.0) -> threading.Thread:
        """Replay dead owners' spools into `ingester` on a background thread, now and every `every` s.

        Looking again later matters for long-lived processes: a kernel that crashes while
        `afterfix serve` runs leaves a spool that nobody would otherwise replay until a restart.
        `recovering` is True until the first pass has submitted everything it found.
        """
        self.recovering = True
        self._closing.clear()
        t = threading.Thread(target=self._recover_loop, args=(ingester, every), name="afterfix-spool-recovery", daemon=True)
        t.start()
        self._recovery_thread = t
        return t

    def stop_recovery(self) -> None:
        """Stop looking for (and submitting from) dead owners' spools."""
        self._closing.set()
        if self._recovery_thread is not None:
            self._recovery_thread.join(10)
            self._recovery_thread = None

    def _recover_loop(self, ingester: "Ingester", every: float) -> None:
        while True:
            try:
                self.recover(ingester, stop=self._closing)
            except Exception as e:  # e.g. the store busy while reading offsets: try again later
                log.exception("afterfix spool: recovery failed")
                self.last_error = f"spool recovery: {e}"
            finally:
                self.recovering = False
            if self._closing.wait(every):
                self.store.close()  # this thread's connection
                return

    def recover(self, ingester: "Ingester", *, stop: threading.Event | None = None) -> int:
        """Adopt every spool folder whose owner is dead and submit what the store lacks.

        Returns the number of records submitted. Each adopted folder is deleted (and its lock
        released) once all of its records are committed; if this process dies first, the next
        one adopts it again and the offsets committed so far keep it from replaying twice.
        """
        if not self.base.is_dir():
            return 0
        submitted = 0
        offsets = None
        for entry in sorted(self.base.iterdir()):
            if not entry.is_dir() or entry == self.dir:
                continue
            if entry.name.startswith("."):
                self._remove_stale_tmp(entry)
                continue
            fd = _try_lock(entry / "owner.lock")
            if fd is None:
                continue  # its owner is alive (or another process is adopting it)
            if offsets is None:
                offsets = self.store.offsets()
            self.adopted.append(entry.name)
            submitted += self._replay(entry, fd, offsets, ingester, stop)
        return submitted

    def _replay(self, folder: Path, fd: int, offsets: dict, ingester: "Ingester", stop: threading.Event | None) -> int:
        owner = folder.name
        state = {"left": 0, "done": False, "closed": False}
        guard = threading.Lock()

        def release(delete: bool = False) -> None:
            with guard:
                if state["closed"]:
                    return
                state["closed"] = True
            if delete:
                shutil.rmtree(folder, ignore_errors=True)
            os.close(fd)  # frees the flock
            with contextlib.suppress(ValueError):
                self._adopted_release.remove(release)

        def release_if_done() -> None:
            with guard:
                finished = state["done"] and not state["left"]
            if finished:
                release(delete=True)

        def one_committed() -> None:
            with guard:
                state["left"] -= 1
            self.replayed += 1
            release_if_done()

        self._adopted_release.append(release)
        n = 0
        for seg in sorted(folder.glob(_SEGMENT_GLOB)):
            source = f"spool:{owner}/{seg.name}"
            fp, pos = offsets.get(source, (None, 0))
            start = pos if fp == owner else 0
            if start > seg.stat().st_size:
                start = 0  # cannot happen for a spool the store saw; replay all and let dedup decide
            for end, batch in read_records(seg, start):
                while ingester.overloaded and not (stop and stop.is_set()):
                    time.sleep(0.05)  # replay at the ingester's pace: memory stays bounded
                if stop is not None and stop.is_set():
                    release()  # the next process adopts what is left
                    return n
                with guard:
                    state["left"] += 1
                ingester.submit(batch, offsets=[(source, owner, end)], on_commit=one_committed)
                n += 1
        log.info("afterfix spool: adopted %s from a process that stopped: %d records to replay", folder, n)
        with guard:
            state["done"] = True
        release_if_done()
        return n

    def _remove_stale_tmp(self, entry: Path) -> None:
        try:
            if time.time() - entry.stat().st_mtime < _STALE_TMP_S:
                return
        except FileNotFoundError:
            return
        fd = _try_lock(entry / "owner.lock")
        if fd is not None:
            shutil.rmtree(entry, ignore_errors=True)
            os.close(fd)
