"""Fixtures for the widget tests: the undo tests' simulator world (imported, not copied), and
small stores recorded through afterfix.sdk (tests/nights.py)."""

from __future__ import annotations

import pytest

from nights import Night
from undo.conftest import world  # noqa: F401  the simulator, a store and the official client

HOSTILE = "<img src=x onerror=alert(1)><script>alert(2)</script>"


@pytest.fixture
def night(tmp_path):
    """A night to record into; `.store()` ingests what was recorded so far."""
    return Night(tmp_path / "night")


def assert_escaped(html: str) -> None:
    """No element from trace text: the payload only as entities."""
    assert "<img" not in html and "<script" not in html, html[:2000]
    assert "&lt;img src=x onerror=alert(1)&gt;" in html or "&lt;script&gt;" in html
