"""Three uses of one store at the same time, as in a real morning, on a local and on a team store:

(a) a kernel with `%load_ext afterfix` receives spans from the OpenTelemetry SDK's exporter,
(b) papermill runs tests/notebooks/read_store.ipynb, which queries the store again and again,
(c) `afterfix ingest` stores trace files from the command line.

Every one of them succeeds, no "lock" error reaches anyone, and the store ends with exactly the
spans that were sent, each once.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

from afterfix.store import Store
from kernels import Kernel

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
LOCK = re.compile(r"\block\b|\blocked\b", re.IGNORECASE)

# Writers go on while the papermill run lasts, between these bounds.
MIN_KERNEL_BATCHES, MAX_KERNEL_BATCHES, KERNEL_BATCH_SPANS = 5, 300, 20
MIN_CLI_FILES, MAX_CLI_FILES, CLI_LINES, CLI_LINE_SPANS = 2, 20, 4, 20


@pytest.fixture
def kernel(tmp_path, free_port, store_spec):
    """A kernel whose store is a local folder or a team store (the store_spec fixture's two kinds)."""
    env = {"AFTERFIX_STORE": store_spec, "AFTERFIX_PORT": str(free_port),
           "AFTERFIX_INBOX": str(tmp_path / "inbox")}
    k = Kernel(env, tmp_path)
    k.port = free_port
    yield k
    k.shutdown()


def sdk_batches(batches: int, size: int) -> list:
    """Spans made by the real OpenTelemetry SDK, in `batches` lists of `size`."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "night-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("afterfix.tests")
    for b in range(batches):
        for i in range(size):
            with tracer.start_as_current_span("execute_tool kubectl_get", attributes={
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "kubectl_get",
                "afterfix.run.id": f"run-kernel-{b}", "step": i,
            }):
                pass
    provider.shutdown()
    spans = list(memory.get_finished_spans())
    return [spans[i:i + size] for i in range(0, len(spans), size)]


def write_otlp_json(path: Path, file_no: int) -> int:
    """An OTLP/JSON lines file as the Collector's file exporter writes it; returns its span count."""
    base = 1_795_000_000_000_000_000 + file_no * 10_000_000_000
    with path.open("w") as f:
        for line in range(CLI_LINES):
            trace_id = f"{0xC0DE0000 + file_no:08x}{line:024x}"
            spans = [{
                "traceId": trace_id, "spanId": f"{file_no:04x}{line:04x}{i + 1:08x}",
                "name": "execute_tool kubectl_describe", "kind": 1,
                "startTimeUnixNano": str(base + (line * 100 + i) * 1_000_000),
                "endTimeUnixNano": str(base + (line * 100 + i) * 1_000_000 + 500_000),
                "attributes": [
                    {"key": "gen_ai.operation.name", "value": {"stringValue": "execute_tool"}},
                    {"key": "gen_ai.tool.name", "value": {"stringValue": "kubectl_describe"}},
                    {"key": "afterfix.run.id", "value": {"stringValue": f"run-cli-{file_no}"}},
                ],
                "status": {"code": 1},
            } for i in range(CLI_LINE_SPANS)]
            f.write(json.dumps({"resourceSpans": [{
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "cli-agent"}}]},
                "scopeSpans": [{"scope": {"name": "afterfix.tests"}, "spans": spans}],
            }]}) + "\n")
    return CLI_LINES * CLI_LINE_SPANS


def test_kernel_papermill_and_cli_share_one_store(kernel, tmp_path, store_spec):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    store = store_spec
    kernel.run("%load_ext afterfix")
    batches = sdk_batches(MAX_KERNEL_BATCHES, KERNEL_BATCH_SPANS)

    # (b) papermill, in its own process with its own kernel; the writers keep going until it is done,
    # so every one of its reads meets writes in flight.
    out_nb = tmp_path / "read_store.out.ipynb"
    papermill = subprocess.Popen(
        [sys.executable, "-m", "papermill", str(HERE / "notebooks" / "read_store.ipynb"), str(out_nb),
         "-p", "store", str(store), "-p", "rounds", "8", "-k", "python3", "--cwd", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("AFTERFIX_")},
    )

    def reading() -> bool:
        return papermill.poll() is None

    # (c) the command line, one `afterfix ingest` per file
    cli_runs: list[subprocess.CompletedProcess] = []
    cli_spans = [0]

    def cli() -> None:
        for n in range(MAX_CLI_FILES):
            if n >= MIN_CLI_FILES and not reading():
                break
            f = tmp_path / f"cli-{n}.jsonl"
            cli_spans[0] += write_otlp_json(f, n)
            cli_runs.append(subprocess.run(
                [str(VENV_BIN / "afterfix"), "ingest", "--store", str(store), str(f)],
                capture_output=True, text=True, timeout=120))

    cli_thread = threading.Thread(target=cli)
    cli_thread.start()

    # (a) the SDK exporter sends to the kernel's receiver meanwhile
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{kernel.port}/v1/traces", timeout=30)
    results = []
    try:
        for n, batch in enumerate(batches):
            if n >= MIN_KERNEL_BATCHES and not reading():
                break
            results.append(exporter.export(batch))
            time.sleep(0.2)  # pacing: a stream, not one burst
    finally:
        exporter.shutdown()

    cli_thread.join(180)
    pm_out, pm_err = papermill.communicate(timeout=180)
    expected = len(results) * KERNEL_BATCH_SPANS + cli_spans[0]

    assert results == [SpanExportResult.SUCCESS] * len(results)
    assert len(cli_runs) >= MIN_CLI_FILES
    for run in cli_runs:
        assert run.returncode == 0, run.stderr
        assert not LOCK.search(run.stdout + run.stderr), run.stderr
    assert papermill.returncode == 0, pm_err[-3000:]
    assert not LOCK.search(pm_err), pm_err[-3000:]
    nb = nbformat.read(out_nb, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    counts = json.loads(next(o["text"] for o in outputs if o.get("text", "").startswith("counts"))[len("counts"):])
    assert len(counts) == 8 and counts[-1] > counts[0], f"the reads did not overlap the writes: {counts}"

    # The kernel sees everything that was sent, each span once.
    deadline = time.monotonic() + 60
    while True:
        kernel.run("df = %sql SELECT count(*) AS n, count(DISTINCT (trace_id, span_id)) AS d FROM spans")
        n, d = map(int, kernel.run("print(int(df.n[0]), int(df.d[0]))").split())
        if n >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert (n, d) == (expected, expected)
    status = kernel.run("s = %afterfix status\nprint(s.info.get('last_error'))")
    assert not LOCK.search(status), status

    # And so does any other process.
    assert int(Store(store).query("SELECT count(*) AS n FROM spans")["n"][0]) == expected
