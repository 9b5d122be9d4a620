"""The reports tests read the shared demo night (tests/conftest.py demo_store) over its window."""

from __future__ import annotations

from tests.conftest import DEMO_WINDOW as NIGHT

__all__ = ["NIGHT"]
