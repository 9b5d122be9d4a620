"""The reports tests read the shared demo night (tests/conftest.py demo_store) over its window, and
the one briefing `afterfix brief` renders of it."""

from __future__ import annotations

import contextlib
import io

import pytest

from tests.conftest import DEMO_WINDOW as NIGHT

__all__ = ["NIGHT"]


@pytest.fixture(scope="session")
def demo_briefing(demo_store, tmp_path_factory):
    """`afterfix brief` over the demo night's window, keeping the executed notebook, rendered once
    for the tests that only read what it wrote: (the HTML, the notebook, what it printed)."""
    from afterfix.cli import main

    out = tmp_path_factory.mktemp("brief") / "briefing.html"
    nb = out.with_suffix(".ipynb")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["brief", "--store", str(demo_store.root), "--since", NIGHT[0].isoformat(),
                     "--until", NIGHT[1].isoformat(), "-o", str(out), "--notebook", str(nb)])
    assert code == 0, printed.getvalue()
    return out, nb, printed.getvalue()
