"""A real JupyterLab driven in headless Chromium with Playwright, for the tests that look at what a
reviewer sees (tests/test_jupyterlab.py, tests/test_lab_review.py).

`Lab` starts `jupyter lab` on loopback with a token, in a folder of its own, with Jupyter's config,
data, runtime and IPython folders temporary (nothing of the machine's own Jupyter set-up is read or
written) and no network use of its own (no news, no update check, no extension manager online).
Its kernels inherit `env`. `browser()` launches the Debian Chromium (no browser download),
`open_notebook()` opens a notebook and waits for its kernel, `run_all()` runs every cell from the
Run menu, and `Shots` keeps a numbered screenshot of each step for whoever reads a failure.

Needs the Debian `chromium` package (`make test` installs it) and the `playwright` package.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

TOKEN = "afterfix-lab-test"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

# Trace content is untrusted: shown anywhere, it must stay text.
IMG = '<img src=x onerror="window.__pwned=1">'
SCRIPT = "<script>window.__pwned=2</script>"

# What the page shows, read in the browser.
TABLE_ROWS = """table => Array.from(table.querySelectorAll('tbody tr'),
    tr => Array.from(tr.querySelectorAll('td'), td => td.textContent))"""
# Elements trace text could have formed, had it not been escaped (plotly draws its own hidden
# `img.plot-img`, which is not trace text).
FORMED = "img:not(.plot-img), script, iframe, object, embed, [onerror], [onload]"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def chromium() -> str:
    path = shutil.which("chromium")
    assert path, "headless Chromium is missing: `apt-get install chromium` (make test does it)"
    return path


def get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def post(url: str, body: bytes = b"", content_type: str = "application/json", timeout: float = 30) -> bytes:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


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


def lab_env(folder: Path, **extra: str) -> dict:
    """The environment for the server and its kernels: this one, Jupyter's folders under `folder`
    (created, with the lab settings above), plus `extra` (AFTERFIX_STORE, KUBECONFIG, ...)."""
    jupyter = {name: folder / name for name in ("config", "data", "runtime", "ipython")}
    for path in jupyter.values():
        path.mkdir(parents=True, exist_ok=True)
    _lab_settings(jupyter["config"])
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(jupyter["config"]), "JUPYTER_DATA_DIR": str(jupyter["data"]),
           "JUPYTER_RUNTIME_DIR": str(jupyter["runtime"]), "IPYTHONDIR": str(jupyter["ipython"]),
           "JUPYTERLAB_SETTINGS_DIR": str(jupyter["config"] / "lab" / "user-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(jupyter["config"] / "lab" / "workspaces"), **extra}
    env.pop("JUPYTER_PATH", None)
    env.pop("JUPYTER_CONFIG_PATH", None)
    return env


class Lab:
    """`jupyter lab` serving `root` on 127.0.0.1:`port` with TOKEN; `start()` returns at once (do
    other set-up meanwhile), `wait()` until it answers, `stop()` shuts its kernels and itself down."""

    def __init__(self, root: Path, env: dict, log: Path, port: int | None = None):
        self.root, self.env, self.log, self.port = Path(root), env, Path(log), port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = TOKEN
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Lab":
        with self.log.open("w") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
                 f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}",
                 f"--ServerApp.root_dir={self.root}"],
                env=self.env, cwd=self.root, stdout=log_file, stderr=subprocess.STDOUT)  # fmt: skip
        return self

    def wait(self, timeout: float = 60) -> "Lab":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"jupyter lab exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                get(f"{self.base}/api/status?token={TOKEN}", timeout=2)
                return self
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"jupyter lab did not answer within {timeout} s:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def url(self, notebook: str) -> str:
        return f"{self.base}/lab/tree/{notebook}?token={TOKEN}"

    def kernel_states(self) -> list[str]:
        """The kernels' states; none while the server answers 500, which it does now and then when
        the listing races a kernel that is starting (a wait that polls this simply asks again)."""
        try:
            return [k["execution_state"] for k in json.loads(get(f"{self.base}/api/kernels?token={TOKEN}"))]
        except urllib.error.HTTPError as e:
            if e.code != 500:
                raise
            return []

    def stop(self, timeout: float = 30) -> None:
        if self.proc is None:
            return
        try:
            post(f"{self.base}/api/shutdown?token={TOKEN}", timeout=10)  # stops its kernels, then itself
        except OSError:
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)

    def __enter__(self) -> "Lab":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def browser() -> Iterator:
    """Headless Debian Chromium through Playwright; yields the Browser."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Shots:
    """Numbered full-page screenshots of each step in `folder` (001-name.png, ...)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.taken: list[Path] = []

    def __call__(self, target, name: str) -> Path:
        """`target`: a Page (the whole page) or a Locator (that element only)."""
        path = self.folder / f"{len(self.taken) + 1:03d}-{name}.png"
        try:
            if hasattr(target, "viewport_size"):
                target.screenshot(path=str(path), full_page=True)
            else:
                target.screenshot(path=str(path))
        except Exception as e:  # a screenshot is for reading, never the reason a test fails
            path.with_suffix(".txt").write_text(f"no screenshot: {e}")
        self.taken.append(path)
        return path


def wait_until(predicate, timeout: float = 30, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def open_notebook(page, lab: Lab, name: str, *, timeout_s: float = 60):
    """Open `name` (relative to the lab's root), wait until its kernel is idle; returns the notebook
    locator. Should JupyterLab ask which kernel to start, the answer is the one it offers."""
    from playwright.sync_api import expect

    page.goto(lab.url(name), wait_until="domcontentloaded")
    notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook")
    expect(notebook).to_be_visible(timeout=timeout_s * 1000)
    select = page.locator(".jp-Dialog").get_by_role("button", name="Select", exact=True)
    page.add_locator_handler(select, lambda button: button.click())
    assert wait_until(lambda: "idle" in lab.kernel_states(), timeout=timeout_s), lab.kernel_states()
    return notebook


def run_all(page) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator('li[data-command="runmenu:run-all"]').click()


def wait_idle(page, timeout_s: float = 30) -> None:
    """Until the open notebook's kernel shows idle."""
    from playwright.sync_api import expect

    panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    expect(panel.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_have_count(1,
                                                                                          timeout=timeout_s * 1000)


def errors(notebook) -> list[str]:
    """The text of every error or stderr output in the notebook."""
    out = notebook.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    return out.all_text_contents()


def assert_inert(page, scope=None) -> None:
    """No trace text ran as script or formed an element (checked after the outputs have rendered,
    so an `<img onerror>` would have fired by then)."""
    assert page.evaluate("typeof window.__pwned") == "undefined", "trace text ran as script in the page"
    where = scope if scope is not None else page.locator(".jp-OutputArea-output")
    assert where.locator(FORMED).count() == 0, where.locator(FORMED).evaluate_all("els => els.map(e => e.outerHTML)")
    assert page.locator("[onerror]").count() == 0
