"""One demo night for every reports test (a whole night takes ~10 s: play it once per session)."""

from __future__ import annotations

from datetime import datetime

import pytest

from afterfix.store import Store

NIGHT = (datetime(2026, 11, 26, 21, 0), datetime(2026, 11, 27, 7, 30))  # the demo night's window, UTC


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory) -> Store:
    from afterfix.nightshift.night import run_night

    root = tmp_path_factory.mktemp("demo-night")
    store = Store(root / "store")
    run_night(store, workdir=root / "work", seed=0)
    return store
