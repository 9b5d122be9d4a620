"""Capture: everything one process needs to take traces into the store.

`afterfix serve` runs one (and so does the notebook extension, through `afterfix serve` in a
child process of the kernel: see ingest/sidecar.py): an ingester thread, the write-ahead spool
(replaying spools left by processes that died), an OTLP/HTTP receiver and an inbox tailer.
Nothing here blocks the caller: decoding and commits happen on background threads of the
process that runs it, which is why a kernel does not run one itself.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import logging
from pathlib import Path
from typing import Any, Literal

from . import otlp
from .ingester import Ingester, utcnow
from .receiver import Receiver
from .spool import Spool
from .tail import InboxTailer

log = logging.getLogger(__name__)


def default_inbox(store) -> Path:
    """`traces/inbox/` beside `traces/store/`; for a team store, inbox/ in this machine's working folder."""
    return store.root / "inbox" if store.kind == "team" else store.root.parent / "inbox"


class Capture:
    """Everything a process needs to capture traces: ingester + spool + receiver + inbox tailer.

    `inbox=None` tails the default inbox beside the store; `inbox=False` tails none.
    `listen=False` runs no receiver. `port=0` listens on any free port (see `status()`).
    """

    def __init__(self, store, *, inbox: Path | None | Literal[False] = None, listen: bool = True, host: str = "127.0.0.1",
                 port: int = 4318, token: str | None = None, limits: otlp.Limits | None = None, redactor: Any = None,
                 interval: float = 0.5):
        self.store = store
        self.inbox = None if inbox is False else Path(inbox).expanduser() if inbox is not None else default_inbox(store)
        self.listen = listen
        limits = limits or otlp.Limits()
        self.ingester = Ingester(store, interval=interval)
        self.spool = Spool(store)
        self.receiver = Receiver(self.ingester, self.spool, host=host, port=port, token=token, limits=limits,
                                 redactor=redactor) if listen else None
        if self.receiver is not None:
            self.receiver.control = self  # GET /afterfix/status, POST /afterfix/flush
        self.tailer = InboxTailer(self.inbox, self.ingester, store, limits=limits, redactor=redactor) \
            if self.inbox is not None else None
        self.started_at: dt.datetime | None = None

    def __enter__(self) -> "Capture":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self.started_at is not None

    def start(self) -> None:
        """Start every part; raises ConfigError (and starts nothing) when the port is taken."""
        if self.running:
            return
        self.store.create()
        self.ingester.start()
        try:
            self.spool.open()
            if self.receiver is not None:
                self.receiver.start()
            self.spool.start_recovery(self.ingester)
            if self.tailer is not None:
                self.tailer.start()
        except Exception:
            if self.tailer is not None:
                self.tailer.stop()
            self.ingester.stop()
            self.spool.close()
            raise
        self.started_at = utcnow()
        # A process that exits without stop() (a kernel shut down, a script ending) still
        # commits what it holds; HTTP data would survive anyway in the spool, file reads would not.
        atexit.register(self._at_exit)

    def _at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop(timeout=5)

    def stop(self, timeout: float = 10) -> None:
        """Stop receiving, commit what was received (up to `timeout` s), release the spool."""
        if not self.running:
            return
        atexit.unregister(self._at_exit)
        self.spool.stop_recovery()  # nothing new reaches the ingester once it is stopping
        if self.receiver is not None:
            self.receiver.stop()
        if self.tailer is not None:
            self.tailer.stop()
        self.ingester.stop(timeout)
        self.spool.close()  # what the store did not take stays spooled for the next process
        self.started_at = None

    def flush(self, timeout: float = 10) -> bool:
        """Commit everything received so far; True when it is all in the store."""
        return self.ingester.flush(timeout)

    def status(self) -> dict[str, Any]:
        st = self.ingester.stats()
        sources = []
        if self.receiver is not None:
            sources.append(self.receiver.url)
        if self.inbox is not None:
            sources.append(f"inbox {self.inbox}")
        errors = [e for e in (
            st.last_error,
            self.receiver.stats.last_error if self.receiver is not None else None,
            self.tailer.stats().last_error if self.tailer is not None else None,
            self.spool.last_error,
        ) if e]
        status = {
            "store": self.store.where,
            "sources": sources,
            "spans_stored": st.spans_stored,
            "rate_per_s": round(st.rate_per_s, 1),
            "lag_s": round(st.lag_s, 3),
            "refused": st.refused,
            "redacted": st.redacted,
            "duplicates": st.duplicates,
            "points_stored": st.points_stored,  # metric data points
            "point_duplicates": st.point_duplicates,
            "pending": st.pending,
            "last_error": errors[0] if errors else None,
            "started_at": self.started_at,
            "running": self.running,
            "last_commit_at": st.last_commit_at,
            "url": self.receiver.url if self.receiver is not None else None,
            "metrics_url": self.receiver.metrics_url if self.receiver is not None else None,
            "host": self.receiver.host if self.receiver is not None else None,
            "port": self.receiver.port if self.receiver is not None else None,
            "inbox": str(self.inbox) if self.inbox is not None else None,
            "recovering": self.spool.recovering,
        }
        if self.tailer is not None:
            status["inbox_active"] = self.tailer.stats().active  # False while another process tails it
        return status
