"""Simulated time for the night shift: a clock that starts at a chosen instant and moves only
when told to, so a whole night can be replayed in seconds and the same run gives the same times."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

__all__ = ["SimClock", "DEFAULT_START", "rfc3339"]

# The night the demo replays: 22:00 UTC, the start of the on-call shift.
DEFAULT_START = datetime(2026, 11, 26, 22, 0, tzinfo=timezone.utc).timestamp()


def rfc3339(epoch: float) -> str:
    """Kubernetes' timestamp format (seconds precision, UTC, trailing Z)."""
    return datetime.fromtimestamp(int(epoch), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class SimClock:
    """Simulated wall clock in epoch seconds; `advance()` is the only way it moves."""

    def __init__(self, start: float | datetime | str | None = None):
        self._lock = threading.Lock()
        self._now = self._to_epoch(start) if start is not None else DEFAULT_START

    @staticmethod
    def _to_epoch(value: float | datetime | str) -> float:
        if isinstance(value, datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=timezone.utc)
            return value.timestamp()
        if isinstance(value, str):
            return SimClock._to_epoch(datetime.fromisoformat(value.replace("Z", "+00:00")))
        return float(value)

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move forward by `seconds` (never backward) and return the new time."""
        if seconds < 0:
            raise ValueError(f"SimClock.advance({seconds}): simulated time only moves forward")
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, epoch: float) -> None:
        """Jump to `epoch` (used when a saved state is loaded)."""
        with self._lock:
            self._now = float(epoch)

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now(), tz=timezone.utc)

    def isoformat(self) -> str:
        return rfc3339(self.now())

    def __repr__(self) -> str:
        return f"SimClock({self.isoformat()})"
