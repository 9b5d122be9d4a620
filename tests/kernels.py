"""What the tests run notebook code in: a real ipykernel driven through jupyter_client (also used
by the streaming benchmark), an in-process shell whose cells raise their errors, and a look at
the capture processes (`afterfix serve --stdio`) a kernel starts beside itself."""

from __future__ import annotations

import os
import time
from pathlib import Path

from IPython.core.interactiveshell import InteractiveShell
from jupyter_client.manager import KernelManager


class Kernel:
    """A real ipykernel; `run` returns the cell's stdout and raises on any error in the cell."""

    def __init__(self, env: dict, cwd: Path, *, ready_timeout: float = 90):
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(env={**os.environ, **env}, cwd=str(cwd))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=ready_timeout)

    def run(self, code: str, timeout: float = 60, *, store_history: bool = True) -> str:
        out: list[str] = []
        errors: list[str] = []

        def hook(msg):
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content["name"] == "stdout":
                out.append(content["text"])
            elif kind == "error":
                errors.append(f"{content['ename']}: {content['evalue']}")

        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=hook, store_history=store_history)
        if errors or reply["content"]["status"] != "ok":
            raise AssertionError(f"kernel cell failed: {code!r}: {errors or reply['content']}")
        return "".join(out)

    @property
    def pid(self) -> int:
        return self.km.provisioner.process.pid

    def shutdown(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            self.km.shutdown_kernel(now=True)


def process_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie nobody has reaped yet counts as ended (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def capture_processes(parent: int | None = None, *, store: Path | None = None) -> set[int]:
    """Pids of the running capture processes (`afterfix serve --stdio`) whose parent is `parent`,
    or (`store=`) that capture into `store`, whatever their parent."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # ended while we looked
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] in ("Z", "X") or b"serve" not in cmdline or b"--stdio" not in cmdline:
            continue
        if (parent is None or int(fields[1]) == parent) and (store is None or f"--store={store}".encode() in cmdline):
            found.add(int(entry.name))
    return found


def wait_until(predicate, timeout: float = 30, every: float = 0.1):
    """`predicate()`'s first true value, or its last value once `timeout` s have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


class TestingShell(InteractiveShell):
    """An InteractiveShell whose cells raise their error instead of printing it."""

    __test__ = False

    def run_cell(self, raw_cell, *args, **kwargs):
        result = super().run_cell(raw_cell, *args, **kwargs)
        result.raise_error()
        return result
