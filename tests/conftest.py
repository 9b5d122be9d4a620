"""Fixtures shared by every test folder."""

from __future__ import annotations

import socket
import sys
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
