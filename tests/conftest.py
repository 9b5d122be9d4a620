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
def demo_played(tmp_path_factory):
    """(store, NightResult): one whole demo night (every scenario, seed 0), played once per session
    (~10 s). Tests only read it."""
    from afterfix.nightshift.night import run_night

    root = tmp_path_factory.mktemp("demo-night")
    s = Store(root / "store")
    return s, run_night(s, workdir=root / "work", seed=0)


@pytest.fixture(scope="session")
def demo_store(demo_played) -> Store:
    """The session's demo night's store (demo_played)."""
    return demo_played[0]


@pytest.fixture
def hook():
    """A local webhook receiver (tests/webhooks.py), closed after the test."""
    from webhooks import Hook

    h = Hook()
    yield h
    h.close()


# -- team stores: a real PostgreSQL catalog and an S3 server (moto), shared by the session ----------

@pytest.fixture(scope="session")
def team_services():
    """Debian's PostgreSQL on loopback with its own data folder and moto's S3 server (tests/teamstore.py),
    started once per session; their credentials are in this process's environment, as a deployment's are."""
    import os
    import shutil
    import tempfile

    import teamstore

    why = teamstore.missing()
    if why:
        if teamstore.skip_reason():
            pytest.skip(teamstore.skip_reason())
        pytest.fail(f"{why}; or set ${teamstore.SKIP_ENV}=1 to skip the team store's tests", pytrace=False)
    # Not under pytest's temporary folders: PostgreSQL runs as its own user, which must reach its data folder.
    folder = Path(tempfile.mkdtemp(prefix="afterfix-team-"))
    services = teamstore.TeamServices(folder).start()
    saved = {k: os.environ.get(k) for k in services.env()}
    os.environ.update(services.env())
    yield services
    services.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def team_store(team_services) -> Store:
    """A fresh, empty team store: its own PostgreSQL database and S3 prefix."""
    s = Store(team_services.new_store())
    s.create()
    yield s
    s.close()


@pytest.fixture(params=["local", "team"])
def store_spec(request, tmp_path) -> str:
    """What `--store` takes for a fresh, not yet created store of each kind: a folder, a team store's file."""
    if request.param == "local":
        return str(tmp_path / "store")
    return str(request.getfixturevalue("team_services").new_store())


@pytest.fixture
def any_store(store_spec) -> Store:
    """A fresh, empty store of each kind (local, team): for behaviour that must hold on both."""
    s = Store(store_spec)
    s.create()
    yield s
    s.close()
