"""Time windows as people type them: `24h`, `90m`, `7d`, `2w` back from a moment, or an ISO time.

Times without a zone are UTC, as the store keeps them; results are naive UTC datetimes.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def parse_duration(text: str) -> timedelta | None:
    """`24h` -> 24 hours; None when `text` is not a duration."""
    m = _DURATION.match(text)
    return timedelta(**{_UNITS[m.group(2)]: float(m.group(1))}) if m else None


def parse_time(text: str, *, before: datetime | None = None) -> datetime:
    """An ISO time (`2026-11-27T07:00`, `2026-11-27`, with or without a zone), or a duration counted
    back from `before` (default: now). Raises ValueError naming the accepted forms."""
    span = parse_duration(text)
    if span is not None:
        return (before or utc_now()) - span
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration (24h, 90m, 7d, 2w) nor an ISO time "
                         f"(2026-11-27T07:00, 2026-11-27)") from None
    return t.astimezone(timezone.utc).replace(tzinfo=None) if t.tzinfo else t
