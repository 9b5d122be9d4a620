"""Fixtures shared by every test folder."""

from __future__ import annotations

import socket
import sys
from datetime import datetime
from pathlib import Path

import pytest

# Helpers shared by test files (kernels.py) import as plain modules from this folder.
sys.path.insert(0, str(Path(__file__).parent))

from afterfix.store import Store


@pytest.fixture
def store(tmp_path) -> Store:
    """A fresh, empty store in a temporary folder."""
    s = Store(tmp_path / "store")
    s.create()
    yield s
    s.close()


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The demo night's window, UTC: from the cluster's setup to after the night's end.
DEMO_WINDOW = (datetime(2026, 11, 26, 21, 0), datetime(2026, 11, 27, 7, 30))


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory) -> Store:
    """One whole demo night (every scenario, seed 0) in a store, played once per session (~10 s)."""
    from afterfix.nightshift.night import run_night

    root = tmp_path_factory.mktemp("demo-night")
    s = Store(root / "store")
    run_night(s, workdir=root / "work", seed=0)
    return s


@pytest.fixture
def hook():
    """A local webhook receiver (tests/webhooks.py), closed after the test."""
    from webhooks import Hook

    h = Hook()
    yield h
    h.close()
