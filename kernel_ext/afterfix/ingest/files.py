"""Synchronous ingest of trace files and folders into the store (what `afterfix ingest` runs).

`ingest_paths()` decodes OTLP/JSON lines (traces and metrics, told apart line by line: see
`otlp_metrics.decode_lines`), OTLP protobuf trace files, and the trace documents Tempo's and
Jaeger's query APIs answer (a JSON file that is one pretty-printed document, or lines of compact
ones: see `foreign`), commits them in batches of about
`batch_spans` spans and metric points (or BATCH_BYTES of Arrow data, whichever comes first) so memory stays
bounded, keeps every refused record in the store's quarantine table, and records each file's final offset in the same transaction as its last
batch. The offsets use the inbox tailer's fingerprint, so a file the tailer (or an earlier
ingest) has already read is skipped, and a file that has grown is read from where it ended.
Large inputs are decoded in worker processes while the main process commits; the workers leave
their tables in shared memory (`/dev/shm`, when there is one) for the main process to read in
place.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import mmap
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa

from .. import schema
from ..store import Store
from . import foreign
from .otlp import _native as native
from .otlp import Decoded, Limits, Refusal, decode_protobuf_file
from .otlp_metrics import MetricsDecoded, decode_lines
from .redact import Redactor
# the tailer's file types, fingerprints and line counts: a file it already read adds nothing
from .tail import JSON_SUFFIXES, PROTOBUF_SUFFIXES, fingerprint, newlines_before, same_file

SUFFIXES = JSON_SUFFIXES + PROTOBUF_SUFFIXES

PROGRESS_BYTES = 20 * 1024 * 1024  # inputs larger than this show a progress bar on a terminal
CHUNK_BYTES = 4 * 1024 * 1024  # one decode task: big enough to amortise the pipe, small enough to overlap
PARALLEL_BYTES = 32 * 1024 * 1024  # below this, starting worker processes costs more than it saves
# A batch's Arrow size that also commits it: DuckDB copies the batch while inserting, and the
# store caps a writer's memory (256 MB), which 200k spans of ~1 KB each already overran.
BATCH_BYTES = 64 * 1024 * 1024
WORKERS = 2


@dataclass
class IngestSummary:
    """What one `ingest_paths()` call did."""

    files: int = 0  # files examined, unchanged ones included
    spans_stored: int = 0
    duplicates: int = 0  # spans already in the store, skipped
    refused: list[Refusal] = field(default_factory=list)
    redactions: int = 0
    seconds: float = 0.0
    unchanged: int = 0  # files whose whole content was already committed (per their offsets)
    events_stored: int = 0
    bytes_read: int = 0
    points_stored: int = 0  # metric data points
    point_duplicates: int = 0  # metric data points already in the store, skipped

    @property
    def spans_per_second(self) -> float:
        spans = self.spans_stored + self.duplicates
        return spans / self.seconds if self.seconds > 0 else 0.0


# -- finding files -----------------------------------------------------------------------


def find_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Every trace file named by `paths`, recursing into folders; in a stable order.

    A named file is taken whatever its suffix; inside folders only *.jsonl, *.json, *.ndjson,
    *.pb and *.binpb are. Raises FileNotFoundError naming the first path that does not exist,
    before anything is read.
    """
    found: list[Path] = []
    seen: set[Path] = set()
    for p in paths:
        path = Path(p).expanduser()
        if path.is_dir():
            candidates = sorted(
                f for f in path.rglob("*")
                if f.suffix.lower() in SUFFIXES and f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(path).parts)  # hidden files and folders
            )
        elif path.is_file():
            candidates = [path]
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
        for f in candidates:
            resolved = f.resolve()
            if resolved not in seen:
                seen.add(resolved)
                found.append(resolved)
    return found


def _is_protobuf(path: Path) -> bool:
    return path.suffix.lower() in PROTOBUF_SUFFIXES


# -- decode tasks ---------------------------------------------------------------------------


@dataclass
class _Task:
    """One piece of one file to decode, by place: the process that decodes it reads the bytes,
    so input never travels between processes. `last` marks the piece that ends the file."""

    file_index: int
    source: str
    start: int  # byte offset in the file where this piece begins
    end: int  # and where it ends
    first_line: int
    protobuf: bool
    last: bool
    refusal: str | None = None  # set for a line too long to decode: refused without reading it
    ident: tuple[int, int] = (0, 0)  # (device, inode) of the file that was cut into tasks
    document: bool = False  # the whole file is one JSON document (foreign.sniff), decoded at once
    answers: bool = False  # JSON lines that start with a compact Tempo or Jaeger answer (foreign.sniff)

    @property
    def size(self) -> int:
        return self.end - self.start


def _decode(task: _Task, limits: Limits, redactor, ingested_at: dt.datetime) -> tuple[Decoded, int]:
    """Decode one task; returns the Decoded and the byte offset up to which it was consumed."""
    kw = {"source": task.source, "limits": limits, "ingested_at": ingested_at}
    if task.refusal is not None:
        refusal = Refusal(task.source, f"line {task.first_line}", task.refusal, None)
        return Decoded(schema.empty("spans"), schema.empty("events"), [refusal], 0), task.end
    if redactor is not None:  # else the decoder's default redactor
        kw["redactor"] = redactor
    data = b""
    if task.size:
        with open(task.source, "rb") as f:
            st = os.fstat(f.fileno())
            if (st.st_dev, st.st_ino) != task.ident:  # e.g. an exporter rotated it: these offsets are not its
                raise OSError(f"{task.source}: the file was replaced while it was being ingested; ingest it again")
            f.seek(task.start)
            data = f.read(task.size)
        if len(data) != task.size:
            raise OSError(f"{task.source}: the file shrank while it was being ingested; ingest it again once it is complete")
    if task.protobuf:
        decoded, consumed = decode_protobuf_file(data, first_byte=task.start, **kw)
        if consumed < task.size:  # the offset stays before it, so a grown file is read from there
            decoded.refused.append(Refusal(task.source, f"byte {task.start + consumed}",
                                           f"the file ends inside a frame ({task.size - consumed} bytes after the last "
                                           "complete one); was the writer cut off?", None))
        return decoded, task.start + consumed
    if task.document:
        return foreign.decode_document(data, **kw), task.end
    traces = foreign.decode_json_lines if task.answers else None
    return decode_lines(data, first_line=task.first_line, traces=traces, **kw), task.end


def _tasks(files: list[tuple[int, Path, int, int]], chunk_bytes: int, max_line: int, on_read) -> Iterator[_Task]:
    """Split files into decode tasks on line boundaries, as they are when this runs.

    `files` holds (index, path, start offset, first line number at that offset). JSON lines
    are cut at the last newline of each chunk (found through a memory map, so this process
    copies only what it counts lines in); a last line without a newline is taken as is (the
    file is complete when it is ingested). A line over `max_line` bytes becomes a refusal
    without being decoded, as the inbox tailer does.
    """
    for index, path, start, first_line in files:
        source = str(path)
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            size, ident = st.st_size, (st.st_dev, st.st_ino)
            if _is_protobuf(path) or size <= start:
                on_read(max(size - start, 0))
                yield _Task(index, source, start, max(size, start), 1, _is_protobuf(path), True, ident=ident)
                continue
            with mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as mm:
                shape = foreign.sniff(mm)
                if shape == "pretty" or (shape == "document" and size <= foreign.DOCUMENT_MAX):
                    # one document, read whole from its start: a document rewritten in place
                    # keeps its first bytes, and what was stored before is skipped as duplicates
                    on_read(size - start)
                    too_big = foreign.too_large(size) if size > foreign.DOCUMENT_MAX else None
                    yield _Task(index, source, 0, size, 1, False, True, too_big, ident, document=True)
                    continue
                answers = shape == "answers"
                offset, line = start, first_line
                while True:
                    stop = offset + chunk_bytes
                    if stop >= size:  # the rest of the file: its last line may lack a newline
                        cut = size
                    else:
                        cut = mm.rfind(b"\n", offset, stop) + 1
                    if cut == 0:  # no newline in a whole chunk: one long line
                        nl = mm.find(b"\n", stop)
                        cut = size if nl < 0 else nl + 1
                        if cut - offset - (nl >= 0) > max_line:
                            on_read(cut - offset)
                            reason = (f"line is {cut - offset} bytes, over the limit of {max_line}: "
                                      "split the batch into smaller lines")  # fmt: skip
                            yield _Task(index, source, offset, cut, line, False, cut == size, reason, ident)
                            offset, line = cut, line + 1
                            if cut == size:
                                break
                            continue
                    on_read(cut - offset)
                    yield _Task(index, source, offset, cut, line, False, cut == size, ident=ident, answers=answers)
                    if cut == size:
                        break
                    line += _count_newlines(mm, offset, cut)
                    offset = cut


# -- the ingest loop --------------------------------------------------------------------


def _offset_rows(rows: list[tuple[str, str, int]], now: dt.datetime) -> pa.Table:
    return pa.table(
        {
            "source": [r[0] for r in rows],
            "fingerprint": [r[1] for r in rows],
            "position": pa.array([r[2] for r in rows], pa.int64()),
            "committed_at": pa.array([now] * len(rows), pa.timestamp("us")),
        },
        schema=schema.OFFSET_SCHEMA,
    )


def _progress_bar(progress: bool | None, total: int):
    show = progress if progress is not None else (total > PROGRESS_BYTES and sys.stderr.isatty())
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="ingest", file=sys.stderr, leave=False)


def _plan(store: Store, files: list[Path], summary: IngestSummary) -> tuple[list[tuple[int, Path, int, int]], dict[int, tuple[str, str]], int]:
    """Which files to read and from where: resume each after its committed offset."""
    known = store.offsets()
    plan, ids, total = [], {}, 0
    for index, path in enumerate(files):
        size = path.stat().st_size
        fp = fingerprint(path)
        start, first_line = 0, 1
        committed = known.get(str(path))
        if committed is not None and 0 < committed[1] <= size and same_file(path, committed[0]):
            if committed[1] == size:
                summary.unchanged += 1
                continue
            start = committed[1]  # a line or frame boundary: only complete ones are committed
            if not _is_protobuf(path):
                first_line = 1 + newlines_before(path, start)
        plan.append((index, path, start, first_line))
        ids[index] = (str(path), fp)
        total += size - start
    return plan, ids, total


def _count_newlines(data, start: int, end: int) -> int:
    """The newlines in data[start:end]; the compiled count reads the memory map in place."""
    if native is not None:
        return native.count_newlines(data, start, end)
    return data[start:end].count(b"\n")


def ingest_paths(
    store: Store,
    paths: Iterable[str | os.PathLike],
    *,
    limits: Limits = Limits(),
    redactor: Redactor | None = None,
    progress: bool | None = None,
    batch_spans: int = 200_000,
    workers: int | None = None,
) -> IngestSummary:
    """Decode every trace (and OTLP/JSON metrics) file under `paths` and store it; returns what was done.

    Refused records do not stop the ingest: they are returned in `summary.refused` (each with
    file and line) and kept in the quarantine table. `redactor=None` applies the decoder's
    default credential patterns (`Redactor(patterns=[])` stores text as it is).
    `progress=None` shows a bar on a terminal for inputs over 20 MB; `workers=None` decodes in
    worker processes only when that pays. Raises FileNotFoundError for a path that does not
    exist, before storing anything.
    """
    t0 = time.perf_counter()
    summary = IngestSummary()
    files = find_files(paths)
    summary.files = len(files)
    plan, ids, total = _plan(store, files, summary)  # a store not made yet has no offsets
    # Large inputs make (or open) the store on the commit thread while the first chunks decode:
    # making a store costs seconds on a busy disk. Otherwise a store that cannot be written
    # fails here, before any input is read.
    big = total > 2 * CHUNK_BYTES
    if not big:
        store.create()
    if not plan:
        summary.seconds = time.perf_counter() - t0
        return summary
    ingested_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    bar = _progress_bar(progress, total)
    if workers is None:
        workers = WORKERS if total >= PARALLEL_BYTES and (os.cpu_count() or 1) > 1 else 0

    pending: list[Decoded] = []
    pending_offsets: list[tuple[str, str, int]] = []
    pending_spans = 0
    pending_bytes = 0

    def read(n: int) -> None:
        summary.bytes_read += n

    # For large inputs commits run on one thread of their own, so decoding the next batch
    # (here or in the workers) overlaps DuckDB writing this one; at most one commit waits,
    # which bounds memory. Small inputs commit here, on this thread's open connection.
    committer = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="afterfix-ingest-commit") if big else None
    committing: cf.Future | None = None
    hold = None

    def open_writer() -> None:
        nonlocal hold
        store.connection(read_only=False)
        # Large inputs commit about every second for a while: keep the catalog open meanwhile,
        # so that readers never wait a second on it (see CatalogHold).
        hold = store.hold_catalog()

    def warm_up() -> None:
        """Makes the store if need be and opens the commit thread's connection (extensions,
        attach, views: a fixed cost of about a second on a busy machine) while the first chunks
        decode; a store that cannot be written fails at the first commit."""
        nonlocal committing
        if committer is not None:
            committing = committer.submit(open_writer)

    def store_batch(parts: list[Decoded], offsets: list[tuple[str, str, int]]) -> None:
        batch = MetricsDecoded.concat(parts) if parts else None
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        result = store.append(
            spans=batch.spans if batch is not None else None,
            events=batch.events if batch is not None else None,
            quarantine=batch.quarantine_table() if batch is not None and batch.refused else None,
            offsets=_offset_rows(offsets, now) if offsets else None,
            metrics=batch.metrics if batch is not None and batch.metrics.num_rows else None,
        )
        summary.spans_stored += result.spans_new
        summary.duplicates += result.spans_duplicate
        summary.events_stored += result.events
        summary.points_stored += result.metrics_new
        summary.point_duplicates += result.metrics_duplicate

    def commit() -> None:
        nonlocal pending, pending_offsets, pending_spans, pending_bytes, committing
        if committing is not None:
            committing.result()  # raises what the previous commit raised
            committing = None
        if (pending or pending_offsets) and committer is None:
            store_batch(pending, pending_offsets)
        elif pending or pending_offsets:
            committing = committer.submit(store_batch, pending, pending_offsets)
        pending, pending_offsets, pending_spans, pending_bytes = [], [], 0, 0

    def take(task: _Task, decoded: Decoded, position: int) -> None:
        nonlocal pending_spans, pending_bytes
        pending.append(decoded)
        metrics = getattr(decoded, "metrics", None)
        pending_spans += decoded.spans.num_rows + (metrics.num_rows if metrics is not None else 0)
        pending_bytes += decoded.spans.nbytes + decoded.events.nbytes + (metrics.nbytes if metrics is not None else 0)
        summary.refused.extend(decoded.refused)
        summary.redactions += decoded.redactions
        if bar is not None:
            bar.update(task.size)
        if task.last:
            source, fp = ids[task.file_index]
            pending_offsets.append((source, fp, position))
        if pending_spans >= batch_spans or pending_bytes >= BATCH_BYTES:
            commit()

    try:
        tasks = _tasks(plan, CHUNK_BYTES, limits.max_body_bytes, read)
        if workers:
            _run_parallel(tasks, workers, limits, redactor, ingested_at, take, warm_up)
        else:
            warm_up()
            for task in tasks:
                take(task, *_decode(task, limits, redactor, ingested_at))
        commit()
        commit()  # waits for the last one
    finally:
        if committer is not None:
            if committing is not None:
                committing.cancel()
                cf.wait([committing])
            committer.submit(store.close).result()  # the commit thread's connection ends with it
            committer.shutdown()
            if hold is not None:
                hold.release()
        if bar is not None:
            bar.refresh()  # the final state, even when the whole ingest took less than tqdm's mininterval
            bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary


# Where workers leave their tables for the main process: memory (tmpfs), read in place there.
SHARED_MEMORY = Path("/dev/shm")


@dataclass
class _Shipped:
    """A worker's Decoded with its tables left in files (Arrow IPC) instead of in the pipe."""

    spans: str
    events: str
    refused: list[Refusal]
    redactions: int
    metrics: str | None = None  # None: no metric points
    rejected_points: int = 0


def _decode_shipped(task: _Task, limits: Limits, redactor, ingested_at: dt.datetime, folder: str | None):
    """_decode in a worker process; with `folder`, its tables go to files there.

    A table sent back through the process pool's pipe is pickled, copied through the pipe 64 KB
    at a time and unpickled, and the memory at both ends is new each time: measured with
    perf on benchmark (a), a third of all CPU was the kernel's and memmove's. Written to a file
    in memory (tmpfs) it is copied once, and the main process maps it.
    """
    decoded, position = _decode(task, limits, redactor, ingested_at)
    if folder is None:
        return decoded, position
    paths = []
    metrics = getattr(decoded, "metrics", None)
    tables = [("spans", decoded.spans), ("events", decoded.events)]
    if metrics is not None and metrics.num_rows:
        tables.append(("metrics", metrics))
    for name, table in tables:
        path = os.path.join(folder, f"{os.getpid()}-{task.file_index}-{task.start}.{name}.arrow")
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        paths.append(path)
    return _Shipped(paths[0], paths[1], decoded.refused, decoded.redactions, paths[2] if len(paths) > 2 else None,
                    getattr(decoded, "rejected_points", 0)), position


def _received(result) -> Decoded:
    """The Decoded a worker sent: as it is, or read in place from the files it left (removed at
    once: the mapping keeps them until the tables are gone)."""
    if not isinstance(result, _Shipped):
        return result
    tables = []
    for path in (result.spans, result.events, result.metrics):
        if path is None:
            tables.append(None)
            continue
        with pa.memory_map(path) as source:
            tables.append(pa.ipc.open_file(source).read_all())
        os.unlink(path)
    return MetricsDecoded(tables[0], tables[1], result.refused, result.redactions, tables[2], result.rejected_points)


def _shared_folder() -> str | None:
    """A new folder in shared memory for the workers' tables, or None (they use the pipe).

    Its name carries this process's id: folders left by ingests that were killed (their
    process is gone) are removed here, so shared memory does not fill up with them.
    """
    if not (SHARED_MEMORY.is_dir() and os.access(SHARED_MEMORY, os.W_OK | os.X_OK)):
        return None
    for old in SHARED_MEMORY.glob("afterfix-ingest-*-*"):
        pid = old.name.split("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    try:
        return tempfile.mkdtemp(prefix=f"afterfix-ingest-{os.getpid()}-", dir=SHARED_MEMORY)
    except OSError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _run_parallel(tasks: Iterator[_Task], workers: int, limits, redactor, ingested_at, take, forked) -> None:
    """Decode in worker processes, handing results to `take` in file order; `forked()` is called
    once every worker exists (so that threads started then are not forked mid-work).

    At most 4 tasks per worker are in flight, which bounds memory and keeps the workers busy
    while a batch is being concatenated and handed to the commit thread.
    """
    # fork on Linux: spawn and forkserver re-run the caller's __main__ in each worker, which
    # breaks scripts without an `if __name__ == "__main__"` guard. The forked workers only
    # decode (orjson, protobuf, pyarrow, which re-creates its thread pool after a fork) and
    # never touch the DuckDB threads they inherit; they leave with os._exit.
    ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    # pyarrow imports pandas on its first conversion to timestamps (~0.2 s of CPU, measured):
    # once here, before forking, rather than once in every worker (this process needs it too)
    pa.array([0], pa.timestamp("us"))
    inflight: deque[tuple[_Task, cf.Future]] = deque()
    folder = _shared_folder()

    def take_result(done: _Task, fut: cf.Future) -> None:
        result, position = fut.result()
        take(done, _received(result), position)

    try:
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            try:
                for task in tasks:
                    inflight.append((task, pool.submit(_decode_shipped, task, limits, redactor, ingested_at, folder)))
                    if forked is not None:  # the first submit forks every worker
                        forked()
                        forked = None
                    while len(inflight) >= 4 * workers:
                        take_result(*inflight.popleft())
                while inflight:
                    take_result(*inflight.popleft())
            except BaseException:
                for _, fut in inflight:
                    fut.cancel()
                raise
    finally:
        if folder is not None:  # what a failure left behind; the tables taken stay mapped
            shutil.rmtree(folder, ignore_errors=True)

