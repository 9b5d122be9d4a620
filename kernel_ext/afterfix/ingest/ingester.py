"""The ingester: one thread per process that commits submitted batches to the store.

Receivers and tailers decode on their own threads and `submit()` the result; every `interval`
seconds the ingester commits everything pending in one `Store.append` transaction, with the
input offsets that say how far each input is now stored. A batch leaves the ingester only when
its commit succeeded: when the store stays busy the batch is kept and retried, so nothing that
was acknowledged is dropped. Memory is bounded by callers checking `overloaded` before they read
more input (the receiver waits a moment for room, `wait_for_room`, then answers 503; the tailer
waits). Under a heavy stream a commit starts as soon as half the limit is waiting.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import pyarrow as pa

from .. import schema
from .._exceptions import StoreBusy, StoreError
from ..store import Store

log = logging.getLogger(__name__)

_MAX_SPANS_PER_COMMIT = 20_000
# The store's writer connection caps DuckDB's memory (Store.memory_limit): one commit's Arrow
# data must stay well under it, whatever the spans' size.
_MAX_BYTES_PER_COMMIT = 16 * 1024 * 1024
_MAX_BACKOFF_S = 5.0


def utcnow() -> dt.datetime:
    """Now in UTC as a naive timestamp, as the store keeps times."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


@dataclass
class Batch:
    """What the ingester commits for one input chunk: rows for spans, events, metric points and quarantine."""

    spans: pa.Table
    events: pa.Table
    quarantine: pa.Table
    redactions: int = 0
    metrics: pa.Table | None = None  # None: no points

    def __post_init__(self) -> None:
        if self.metrics is None:
            self.metrics = schema.METRIC_SCHEMA.empty_table()

    @classmethod
    def of(cls, decoded: Any) -> "Batch":
        """A Batch from a decoder's `Decoded` or `MetricsDecoded` (or a Batch, returned as is),
        checked against the schema."""
        if isinstance(decoded, Batch):
            return decoded
        return cls(
            spans=_conform(decoded.spans, schema.SPAN_SCHEMA, "spans"),
            events=_conform(decoded.events, schema.EVENT_SCHEMA, "events"),
            quarantine=_conform(decoded.quarantine_table(), schema.QUARANTINE_SCHEMA, "quarantine"),
            redactions=int(getattr(decoded, "redactions", 0) or 0),
            metrics=_conform(getattr(decoded, "metrics", None), schema.METRIC_SCHEMA, "metrics"),
        )

    @property
    def num_spans(self) -> int:
        return self.spans.num_rows

    @property
    def num_points(self) -> int:
        return self.metrics.num_rows

    @property
    def refused(self) -> int:
        return self.quarantine.num_rows

    @property
    def weight(self) -> int:
        """Rows held in memory until committed: what `max_pending_spans` bounds (a metric point,
        at ~0.5 KB as Arrow, counts as one row like a span)."""
        return self.spans.num_rows + self.quarantine.num_rows + self.metrics.num_rows

    @property
    def nbytes(self) -> int:
        """Arrow bytes held until committed: what `_MAX_BYTES_PER_COMMIT` bounds."""
        return self.spans.nbytes + self.events.nbytes + self.quarantine.nbytes + self.metrics.nbytes

    @staticmethod
    def concat(parts: list["Batch"]) -> "Batch":
        return Batch(
            spans=pa.concat_tables([p.spans for p in parts]),
            events=pa.concat_tables([p.events for p in parts]),
            quarantine=pa.concat_tables([p.quarantine for p in parts]),
            redactions=sum(p.redactions for p in parts),
            metrics=pa.concat_tables([p.metrics for p in parts]),
        )


def _conform(table: pa.Table | None, target: pa.Schema, what: str) -> pa.Table:
    # A batch with the wrong columns would fail its commit again and again and hold up every
    # batch behind it, so it is refused here, on the caller's thread, where the error is useful.
    if table is None:
        return target.empty_table()
    if table.schema.equals(target):
        return table
    if table.schema.names != target.names:
        raise StoreError(f"{what} batch has columns {table.schema.names}, the store expects {target.names} (afterfix/schema.py)")
    try:
        return table.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise StoreError(f"{what} batch does not match afterfix/schema.py: {e}") from e


@dataclass
class IngestStats:
    spans_stored: int = 0
    duplicates: int = 0
    points_stored: int = 0  # metric data points
    point_duplicates: int = 0
    refused: int = 0
    redacted: int = 0
    batches: int = 0
    pending: int = 0  # rows (spans, metric points, refused records) submitted and not yet committed
    rate_per_s: float = 0.0  # spans stored per second over the last 10 s
    lag_s: float = 0.0  # age of the oldest pending batch
    last_commit_at: dt.datetime | None = None
    last_error: str | None = None
    errors: int = 0
    compactions: int = 0


@dataclass
class _Item:
    batch: Batch
    offsets: list[tuple[str, str, int]]
    on_commit: Callable[[], None] | None
    seq: int
    submitted: float = field(default_factory=time.monotonic)


class Ingester:
    """One per process: a thread that commits submitted batches to the store every `interval` s."""

    def __init__(self, store: Store, *, interval: float = 0.5, max_pending_spans: int = 20_000, compact_every_s: float = 300,
                 compact_every_spans: int = 1_000_000):
        self.store = store
        self.interval = interval
        # Pending rows, including the commit in progress, are most of the process's memory
        # (~1-2 KB each as Arrow): 20k keep a streaming `afterfix serve` under 400 MB, and a
        # commit of 20k spans already pays its fixed cost (~35 ms) over ~70 ms of inserting.
        self.max_pending_spans = max_pending_spans
        # Compact every few minutes, and sooner under a heavy stream: each merge then covers at
        # most about this many spans, which bounds its memory and its pause.
        self.compact_every_s = compact_every_s
        self.compact_every_spans = compact_every_spans
        self._cond = threading.Condition()
        self._queue: collections.deque[_Item] = collections.deque()
        self._pending_spans = 0  # rows (spans and refused records) queued or being committed
        self._submitted_seq = 0
        self._committed_seq = 0
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._wake = False
        self._stats = IngestStats()
        self._recent: collections.deque[tuple[float, int]] = collections.deque()
        self._last_committed_at: dt.datetime | None = None
        self._last_compact = time.monotonic()
        self._stored_since_compact = 0
        self._inflight_since: float | None = None
        self._inflight_spans = 0  # of _pending_spans, those in the commit in progress
        self._started_at: float | None = None
        self._stop_deadline = float("inf")

    # -- the callers' side ----------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._stop_deadline = float("inf")
        self._thread = threading.Thread(target=self._run, name="afterfix-ingester", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        """Commit what was submitted (trying for up to `timeout` s), then end the thread."""
        thread = self._thread
        if thread is None:
            return
        with self._cond:
            self._stopping = True
            self._stop_deadline = time.monotonic() + timeout
            self._cond.notify_all()
        thread.join(timeout + 1)
        self._thread = None

    def submit(self, decoded: Any, *, offsets: Iterable[tuple[str, str, int]] = (), on_commit: Callable[[], None] | None = None) -> None:
        """Queue a decoded batch for the next commit; never blocks on the store.

        `offsets` (source, fingerprint, position) are committed in the same transaction as the
        data; `on_commit` runs on the ingester thread once the transaction is committed.
        """
        batch = Batch.of(decoded)
        with self._cond:
            self._submitted_seq += 1
            self._queue.append(_Item(batch, list(offsets), on_commit, self._submitted_seq))
            self._pending_spans += batch.weight
            # Half the limit is a commit large enough to pay its fixed cost: commit it now rather
            # than at the next round, so that a heavy stream fills the limit only when the store
            # really is behind. Counted without the commit in progress: what arrives during it is
            # the next commit, not a small one of its own right after it.
            if (self._pending_spans - self._inflight_spans) * 2 >= self.max_pending_spans and not self._wake:
                self._wake = True
                self._cond.notify_all()

    def flush(self, timeout: float = 10) -> bool:
        """Commit now; True when everything submitted so far is committed."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._submitted_seq
            running = self._thread is not None
            if running:
                self._wake = True
                self._cond.notify_all()
        if not running:  # never started, or stopped: commit on the caller's thread
            while self._committed_seq < target and time.monotonic() < deadline:
                if not self._commit_once():
                    time.sleep(0.05)
            return self._committed_seq >= target
        with self._cond:
            while self._committed_seq < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    @property
    def overloaded(self) -> bool:
        """True while more spans are pending than `max_pending_spans`: stop reading input."""
        return self._pending_spans > self.max_pending_spans

    def wait_for_room(self, timeout: float) -> bool:
        """False if still `overloaded` after up to `timeout` s of waiting for commits.

        Returns at once when the ingester thread is not running, as nothing would make room.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending_spans > self.max_pending_spans and self._thread is not None and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self._pending_spans <= self.max_pending_spans

    def stats(self) -> IngestStats:
        with self._cond:
            s = IngestStats(**self._stats.__dict__)
            s.pending = self._pending_spans
            s.lag_s = (time.monotonic() - self._queue[0].submitted) if self._queue else 0.0
            if self._inflight_since is not None:
                s.lag_s = max(s.lag_s, time.monotonic() - self._inflight_since)
            now = time.monotonic()
            while self._recent and self._recent[0][0] < now - 10:
                self._recent.popleft()
            window = min(10.0, max(now - self._started_at, 1e-3)) if self._started_at else 10.0
            s.rate_per_s = sum(n for _, n in self._recent) / window
        return s

    # -- the ingester thread ----------------------------------------------------------

    def _run(self) -> None:
        self._started_at = time.monotonic()
        backoff = 0.0
        next_round = time.monotonic() + self.interval
        hold = None
        try:
            # Committing every `interval` s makes the catalog's SQLite connections come and go;
            # holding one open keeps them from waiting on each other (see CatalogHold).
            try:
                hold = self.store.hold_catalog()
                # Attaching the lake and binding the views takes 0.3-2.5 s here: done before the
                # first round, not inside the first commit that acknowledged data waits for.
                self.store.connection(read_only=False)
            except Exception as e:  # e.g. the store busy while being created: commits retry on their own
                log.warning("afterfix ingester: cannot prepare the store: %s", e)
            while True:
                with self._cond:
                    # Rounds start every `interval` s, counted from the last round's start: the
                    # time a commit took is not added to the wait of what arrived meanwhile.
                    delay = backoff if backoff else next_round - time.monotonic()
                    if not self._wake and not self._stopping and delay > 0:
                        self._cond.wait(delay)
                    self._wake = False
                    next_round = time.monotonic() + self.interval
                    stopping = self._stopping
                    empty = not self._queue
                    due = self._submitted_seq  # what was submitted when this round began
                if stopping and (empty or time.monotonic() > self._stop_deadline):
                    return  # what is left stays in the spool (HTTP) or unread (files)
                ok = True
                # Commit what was there at the start of the round (a backlog takes several
                # commits); what arrives meanwhile waits for the next round. Committing it at
                # once would make each commit tiny under a steady stream, and a commit's fixed
                # cost (~35 ms) would then be paid a few hundred spans at a time.
                while ok and self._queue and (stopping or self._queue[0].seq <= due):
                    ok = self._commit_once()
                backoff = 0.0 if ok else min(max(backoff * 2, self.interval, 0.05), _MAX_BACKOFF_S)
                if stopping and not ok:
                    time.sleep(min(backoff, max(0.0, self._stop_deadline - time.monotonic())))
                if not stopping:  # housekeeping never delays a shutdown
                    self._maybe_compact()
        finally:
            with contextlib.suppress(Exception):
                self.store.close()  # this thread's connections
            if hold is not None:
                hold.release()

    def _take(self) -> list[_Item]:
        with self._cond:
            items: list[_Item] = []
            spans = size = 0
            while self._queue:
                batch = self._queue[0].batch
                if items and (spans + batch.weight > _MAX_SPANS_PER_COMMIT or size + batch.nbytes > _MAX_BYTES_PER_COMMIT):
                    break
                items.append(self._queue.popleft())
                spans += batch.weight
                size += batch.nbytes
            if items:
                self._inflight_since = items[0].submitted
                self._inflight_spans = spans
            return items

    def _put_back(self, items: list[_Item]) -> None:
        with self._cond:
            self._queue.extendleft(reversed(items))
            self._inflight_since = None
            self._inflight_spans = 0

    def _commit_once(self) -> bool:
        """Commit the oldest pending items; False when the store refused (they stay pending)."""
        items = self._take()
        if not items:
            return False
        batch = Batch.concat([i.batch for i in items]) if len(items) > 1 else items[0].batch
        try:
            result = self.store.append(
                spans=batch.spans if batch.num_spans else None,
                events=batch.events if batch.events.num_rows else None,
                quarantine=batch.quarantine if batch.refused else None,
                offsets=self._offsets_table(items),
                metrics=batch.metrics if batch.num_points else None,
            )
        except Exception as e:  # kept and retried: acknowledged data is never dropped
            kind = "store busy" if isinstance(e, StoreBusy) else type(e).__name__
            log.warning("afterfix ingester: commit of %d spans and %d metric points failed (%s: %s); will retry",
                        batch.num_spans, batch.num_points, kind, e)
            self._put_back(items)
            with self._cond:
                self._stats.errors += 1
                self._stats.last_error = f"{utcnow():%Y-%m-%d %H:%M:%S} {kind}: {e}"
            return False
        now = time.monotonic()
        with self._cond:
            st = self._stats
            st.spans_stored += result.spans_new
            st.duplicates += result.spans_duplicate
            st.points_stored += result.metrics_new
            st.point_duplicates += result.metrics_duplicate
            st.refused += batch.refused
            st.redacted += batch.redactions
            st.batches += 1
            st.last_commit_at = utcnow()
            self._recent.append((now, result.spans_new))
            self._stored_since_compact += result.spans_new + result.metrics_new
            self._pending_spans -= batch.weight
            self._inflight_since = None
            self._inflight_spans = 0
        for item in items:
            if item.on_commit is not None:
                try:
                    item.on_commit()
                except Exception:  # a caller's bookkeeping must not stop the ingester
                    log.exception("afterfix ingester: on_commit callback failed")
        with self._cond:  # after the callbacks: flush() returning means they ran too
            self._committed_seq = max(self._committed_seq, items[-1].seq)
            self._cond.notify_all()
        return True

    def _offsets_table(self, items: list[_Item]) -> pa.Table | None:
        # The newest row per source wins in Store.offsets(), so one row per source per commit,
        # from the item submitted last, with a committed_at later than any this ingester wrote.
        latest: dict[str, tuple[str, int]] = {}
        for item in items:
            for source, fingerprint, position in item.offsets:
                latest[source] = (fingerprint, int(position))
        if not latest:
            return None
        at = utcnow()
        if self._last_committed_at is not None and at <= self._last_committed_at:
            at = self._last_committed_at + dt.timedelta(microseconds=1)
        self._last_committed_at = at
        return pa.Table.from_pydict(
            {
                "source": list(latest),
                "fingerprint": [fp for fp, _ in latest.values()],
                "position": [pos for _, pos in latest.values()],
                "committed_at": [at] * len(latest),
            },
            schema=schema.OFFSET_SCHEMA,
        )

    def _maybe_compact(self) -> None:
        due = (time.monotonic() - self._last_compact >= self.compact_every_s
               or self._stored_since_compact >= self.compact_every_spans)
        if self._stored_since_compact == 0 or not due:
            return
        self._last_compact = time.monotonic()
        self._stored_since_compact = 0
        try:
            self.store.compact()
            with self._cond:
                self._stats.compactions += 1
        except Exception as e:  # compaction is housekeeping: report it, keep ingesting
            log.warning("afterfix ingester: compaction failed: %s", e)
            with self._cond:
                self._stats.last_error = f"{utcnow():%Y-%m-%d %H:%M:%S} compaction: {e}"
