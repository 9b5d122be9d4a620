"""The simulated clock: starts where it is told, moves only forward, and only when told."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from afterfix.nightshift.clock import DEFAULT_START, SimClock, rfc3339


@pytest.mark.parametrize("start,iso", [
    (None, "2026-11-26T22:00:00Z"),
    ("2026-11-27T03:15:00Z", "2026-11-27T03:15:00Z"),
    (datetime(2026, 1, 2, 3, 4, 5), "2026-01-02T03:04:05Z"),  # naive datetimes are UTC
    (DEFAULT_START + 90, "2026-11-26T22:01:30Z"),
])
def test_start(start, iso):
    assert SimClock(start).isoformat() == iso


def test_advance_moves_forward_only():
    clock = SimClock()
    assert clock.advance(8 * 3600) == DEFAULT_START + 8 * 3600
    assert clock.datetime() == datetime(2026, 11, 27, 6, 0, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(-1)
    assert rfc3339(clock.now() + 0.9) == "2026-11-27T06:00:00Z"
