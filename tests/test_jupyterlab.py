"""What a reviewer sees: a real JupyterLab, driven in headless Chromium with Playwright.

The test ingests the example traces and one span whose name and attributes are HTML/JS into a
temporary store with `afterfix ingest`, starts `jupyter lab` on a free port (its kernels get
`AFTERFIX_STORE`, `AFTERFIX_INBOX` and `AFTERFIX_PORT=0`), opens tests/notebooks/lab_review.ipynb
and runs all its cells from the Run menu. It then reads the rendered page: the `%afterfix status`
table, the `%%sql` tables of decisions and options against what the store holds, the hostile span
shown as literal text with no element or script of its own, and a span sent to the kernel's
receiver while the notebook is open, shown when its cell runs again.

Needs the Debian `chromium` package (`make test` installs it) and the `playwright` package; no
browser download. Jupyter's config, data and runtime folders are temporary, so nothing of the
machine's own Jupyter set-up is read or written.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lab
from afterfix.store import Store
from kernels import capture_processes, wait_until
from lab import IMG, SCRIPT, TABLE_ROWS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = Path(__file__).parent / "notebooks" / "lab_review.ipynb"

# Cells of lab_review.ipynb (0 is the markdown title).
STATUS, DECISIONS, OPTIONS, HOSTILE, STREAMED = 2, 3, 4, 5, 6


def _span(trace: str, span: str, name: str, attributes: dict, service: str) -> dict:
    now = time.time_ns()
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"scope": {"name": "lab-test"}, "spans": [{
            "traceId": trace, "spanId": span, "name": name, "kind": 1,
            "startTimeUnixNano": str(now - 1_000_000), "endTimeUnixNano": str(now),
            "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attributes.items()],
        }]}],
    }]}  # fmt: skip


def _hostile_file(folder: Path) -> Path:
    folder.mkdir()
    path = folder / "hostile.jsonl"
    lines = [_span("1" * 32, "2" * 16, IMG, {"note": SCRIPT}, "lab-hostile"),
             _span("1" * 32, "3" * 16, SCRIPT, {"note": IMG}, "lab-hostile")]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


# What the page shows, read in the browser.
STATUS_ROWS = """table => Object.fromEntries(Array.from(table.querySelectorAll('tr'),
    tr => [tr.querySelector('th').textContent, tr.querySelector('td').textContent]))"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_reviewer_sees_status_decisions_escaped_spans_and_streamed_spans_in_jupyterlab(tmp_path):
    from playwright.sync_api import expect

    store, root = tmp_path / "store", tmp_path / "lab"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)  # the server saves outputs there, never into tests/
    env = lab.lab_env(tmp_path / "jupyter", AFTERFIX_STORE=str(store), AFTERFIX_INBOX=str(tmp_path / "inbox"),
                      AFTERFIX_PORT="0")

    # The store's content first (beside the server's start-up): the examples and the hostile spans.
    ingest = subprocess.Popen(
        [sys.executable, "-m", "afterfix", "ingest", "--store", str(store), "--no-progress",
         str(ROOT / "traces" / "examples"), str(_hostile_file(tmp_path / "hostile"))],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    server = lab.Lab(root, env, tmp_path / "jupyter.log").start()
    try:
        out, _ = ingest.communicate(timeout=120)
        assert ingest.returncode == 0, out
        s = Store(store)
        try:
            decisions = s.query("SELECT incident_id, decision_id, selected_option FROM decisions "
                                "ORDER BY start_time, decision_id")  # fmt: skip
            options = s.query("SELECT decision_id, seq, option_id, verdict FROM options ORDER BY decision_id, seq")
        finally:
            s.close()
        assert len(decisions) >= 1 and len(options) >= 2, (decisions, options)
        server.wait()
        with lab.browser() as browser:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            page.set_default_timeout(30_000)
            try:
                _review(page, expect, server, decisions, options, tmp_path)
            except BaseException:  # what the page showed, beside jupyter.log, for whoever reads the failure
                lab.Shots(tmp_path)(page, "jupyterlab")
                raise
    finally:
        if ingest.poll() is None:
            ingest.kill()
            ingest.wait()
        server.stop()
    # Shutting the kernel down ended its capture process.
    assert wait_until(lambda: not capture_processes(store=store), timeout=30), capture_processes(store=store)


def _review(page, expect, server: lab.Lab, decisions, options, tmp_path: Path) -> None:
    # The notebook's own kernel starts by itself (autoStartDefaultKernel).
    notebook = lab.open_notebook(page, server, NOTEBOOK.name)
    assert server.kernel_states() == ["idle"], server.kernel_states()
    lab.run_all(page)

    cells = notebook.locator(".jp-Cell")
    expect(cells).to_have_count(7)

    def output(i: int):
        return cells.nth(i).locator(".jp-OutputArea-output")

    # The last cell has run (all of them have), and the kernel is idle again.
    expect(cells.nth(STREAMED).locator(".jp-InputPrompt")).to_have_text("[6]:", timeout=60_000)
    lab.wait_idle(page)
    assert lab.errors(notebook) == []

    # %afterfix status: capture runs on the temporary store, its receiver on the port 0 picked.
    status = output(STATUS).locator("table.afterfix-status")
    expect(status).to_contain_text("running")
    info = status.evaluate(STATUS_ROWS)
    assert info["state"] == "running" and info["store"] == str(tmp_path / "store"), info
    host, _, port = info["receiver"].partition(":")
    assert host == "127.0.0.1" and int(port) > 0, info
    assert info["last error"] == "-", info

    # The %%sql tables show the rows the store holds, value for value.
    for cell, frame in ((DECISIONS, decisions), (OPTIONS, options)):
        table = output(cell).locator("table.dataframe")
        expect(table).to_be_visible()
        headers = table.locator("thead th").all_text_contents()
        assert headers[1:] == list(frame.columns), headers
        expected = [[str(v) for v in row] for row in frame.itertuples(index=False)]
        assert table.evaluate(TABLE_ROWS) == expected

    # Hostile span text: shown literally, no element of its own, no script run.
    hostile = output(HOSTILE).locator("table.dataframe")
    expect(hostile).to_be_visible()
    assert sorted(map(sorted, hostile.evaluate(TABLE_ROWS))) == sorted([sorted([IMG, SCRIPT])] * 2)
    expect(hostile).to_contain_text(IMG)
    expect(hostile).to_contain_text(SCRIPT)

    # A span sent to the kernel's receiver while the notebook is open shows when its cell runs again.
    streamed = output(STREAMED)
    expect(streamed).to_contain_text("service_name")
    expect(streamed).not_to_contain_text("lab-streamed-span")
    body = json.dumps(_span("4" * 32, "5" * 16, "lab-streamed-span", {"note": "streamed"}, "lab-streamer")).encode()
    receiver = f"http://127.0.0.1:{port}"
    lab.post(f"{receiver}/v1/traces", body)  # HTTP 200: acknowledged, spooled
    assert json.loads(lab.post(f"{receiver}/afterfix/flush"))["flushed"] is True
    cells.nth(STREAMED).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Control+Enter")
    expect(cells.nth(STREAMED).locator(".jp-InputPrompt")).to_have_text("[7]:", timeout=30_000)
    expect(streamed).to_contain_text("lab-streamed-span")
    expect(streamed).to_contain_text("lab-streamer")

    # Checked last, seconds after the hostile output rendered: an <img onerror> would have fired by now.
    lab.assert_inert(page, notebook.locator(".jp-OutputArea-output"))
    assert notebook.locator(".jp-OutputArea-output svg").count() == 0
