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
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from afterfix.store import Store
from kernels import capture_processes, wait_until

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = Path(__file__).parent / "notebooks" / "lab_review.ipynb"
TOKEN = "afterfix-lab-test"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

# Trace content is untrusted: shown anywhere, it must stay text.
IMG = '<img src=x onerror="window.__pwned=1">'
SCRIPT = "<script>window.__pwned=2</script>"

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


def _lab_settings(config_dir: Path) -> None:
    """No news feed, no update check, no extension manager online, and every cell kept in the DOM."""
    lab = {"news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
           "extension_manager": "readonly"}
    (config_dir / "jupyter_server_config.json").write_text(json.dumps({"LabApp": lab}))
    settings = config_dir / "lab" / "user-settings" / "@jupyterlab"
    plugins = {"apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
               "notebook-extension/tracker": {"windowingMode": "none", "autoStartDefaultKernel": True}}
    for plugin, values in plugins.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def _get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def _post(url: str, body: bytes = b"", content_type: str = "application/json", timeout: float = 30) -> bytes:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def _kernel_states(base: str) -> list[str]:
    """The kernels' states; none while the server answers 500, which it does now and then when
    the listing races a kernel that is starting (the wait that polls this simply asks again)."""
    try:
        return [k["execution_state"] for k in json.loads(_get(f"{base}/api/kernels?token={TOKEN}"))]
    except urllib.error.HTTPError as e:
        if e.code != 500:
            raise
        return []


def _wait_for_server(proc: subprocess.Popen, base: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"jupyter lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            _get(f"{base}/api/status?token={TOKEN}", timeout=2)
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"jupyter lab did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


# What the page shows, read in the browser.
TABLE_ROWS = """table => Array.from(table.querySelectorAll('tbody tr'),
    tr => Array.from(tr.querySelectorAll('td'), td => td.textContent))"""
STATUS_ROWS = """table => Object.fromEntries(Array.from(table.querySelectorAll('tr'),
    tr => [tr.querySelector('th').textContent, tr.querySelector('td').textContent]))"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_reviewer_sees_status_decisions_escaped_spans_and_streamed_spans_in_jupyterlab(tmp_path, free_port):
    from playwright.sync_api import expect, sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "headless Chromium is missing: `apt-get install chromium` (make test does it)"
    store, root = tmp_path / "store", tmp_path / "lab"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)  # the server saves outputs there, never into tests/
    jupyter = {name: tmp_path / "jupyter" / name for name in ("config", "data", "runtime", "ipython")}
    for folder in jupyter.values():
        folder.mkdir(parents=True)
    _lab_settings(jupyter["config"])
    env = {**os.environ, "AFTERFIX_STORE": str(store), "AFTERFIX_INBOX": str(tmp_path / "inbox"), "AFTERFIX_PORT": "0",
           "JUPYTER_CONFIG_DIR": str(jupyter["config"]), "JUPYTER_DATA_DIR": str(jupyter["data"]),
           "JUPYTER_RUNTIME_DIR": str(jupyter["runtime"]), "IPYTHONDIR": str(jupyter["ipython"]),
           "JUPYTERLAB_SETTINGS_DIR": str(jupyter["config"] / "lab" / "user-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(jupyter["config"] / "lab" / "workspaces")}
    env.pop("JUPYTER_PATH", None)
    env.pop("JUPYTER_CONFIG_PATH", None)

    # The store's content first (beside the server's start-up): the examples and the hostile spans.
    ingest = subprocess.Popen(
        [sys.executable, "-m", "afterfix", "ingest", "--store", str(store), "--no-progress",
         str(ROOT / "traces" / "examples"), str(_hostile_file(tmp_path / "hostile"))],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    log = tmp_path / "jupyter.log"
    base = f"http://127.0.0.1:{free_port}"
    with log.open("w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={free_port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}",
             f"--ServerApp.root_dir={root}"],
            env=env, cwd=root, stdout=log_file, stderr=subprocess.STDOUT)  # fmt: skip
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
        _wait_for_server(server, base, log)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = None
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1200})
                page.set_default_timeout(30_000)
                _review(page, expect, base, decisions, options, tmp_path)
            except BaseException:
                if page is not None:  # what the page showed, beside jupyter.log, for whoever reads the failure
                    try:
                        page.screenshot(path=str(tmp_path / "jupyterlab.png"), full_page=True)
                    except Exception:
                        pass
                raise
            finally:
                browser.close()
    finally:
        if ingest.poll() is None:
            ingest.kill()
            ingest.wait()
        try:
            _post(f"{base}/api/shutdown?token={TOKEN}", timeout=10)  # stops its kernels, then itself
        except OSError:
            pass
        try:
            server.wait(timeout=30)
        finally:
            _stop(server)
    # Shutting the kernel down ended its capture process.
    assert wait_until(lambda: not capture_processes(store=store), timeout=30), capture_processes(store=store)


def _review(page, expect, base: str, decisions, options, tmp_path: Path) -> None:
    page.goto(f"{base}/lab/tree/{NOTEBOOK.name}?token={TOKEN}", wait_until="domcontentloaded")
    notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook")
    expect(notebook).to_be_visible(timeout=60_000)
    # The notebook's own kernel starts by itself (autoStartDefaultKernel); should JupyterLab still ask
    # which kernel to start, the answer is the one it offers, the notebook's.
    select = page.locator(".jp-Dialog").get_by_role("button", name="Select", exact=True)
    page.add_locator_handler(select, lambda button: button.click())
    assert wait_until(lambda: _kernel_states(base) == ["idle"], timeout=60), _kernel_states(base)

    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator('li[data-command="runmenu:run-all"]').click()

    cells = notebook.locator(".jp-Cell")
    expect(cells).to_have_count(7)

    def output(i: int):
        return cells.nth(i).locator(".jp-OutputArea-output")

    # The last cell has run (all of them have), and the kernel is idle again.
    expect(cells.nth(STREAMED).locator(".jp-InputPrompt")).to_have_text("[6]:", timeout=60_000)
    panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    kernel_idle = panel.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
    expect(kernel_idle).to_have_count(1, timeout=30_000)
    errors = notebook.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    assert errors.count() == 0, errors.all_text_contents()

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
    _post(f"{receiver}/v1/traces", body)  # HTTP 200: acknowledged, spooled
    assert json.loads(_post(f"{receiver}/afterfix/flush"))["flushed"] is True
    cells.nth(STREAMED).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Control+Enter")
    expect(cells.nth(STREAMED).locator(".jp-InputPrompt")).to_have_text("[7]:", timeout=30_000)
    expect(streamed).to_contain_text("lab-streamed-span")
    expect(streamed).to_contain_text("lab-streamer")

    # Checked last, seconds after the hostile output rendered: an <img onerror> would have fired by now.
    assert page.evaluate("typeof window.__pwned") == "undefined", "trace text ran as script in the page"
    outputs = notebook.locator(".jp-OutputArea-output")
    assert outputs.locator("img, script, iframe, object, embed, svg, [onerror]").count() == 0
    assert page.locator("[onerror]").count() == 0
