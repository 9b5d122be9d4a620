"""`%load_ext afterfix` in a shell and in a real kernel: lifecycle, options, receiving spans.

In-process tests use a real InteractiveShell that raises on cell errors; end-to-end tests start
a real ipykernel with jupyter_client and send spans to it with the OpenTelemetry SDK's own
OTLP/HTTP exporter. Either way the capture runs in a child process (`afterfix serve --stdio`),
which the tests find, kill and wait for by its pid.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import warnings
from pathlib import Path

import pandas as pd
import pytest
from IPython.core.error import UsageError
from traitlets import TraitError
from traitlets.config import Config

from afterfix.config import Afterfix
from afterfix.extension import Session, session_for
from kernels import Kernel, TestingShell, capture_processes, process_alive, wait_until


def new_shell(tmp_path, **afterfix) -> TestingShell:
    c = Config()
    c.HistoryManager.hist_file = ":memory:"
    c.Afterfix.store = str(tmp_path / "store")
    c.Afterfix.inbox = str(tmp_path / "inbox")
    for k, v in afterfix.items():
        setattr(c.Afterfix, k, v)
    return TestingShell(config=c)


@pytest.fixture
def shell(tmp_path, free_port):
    ip = new_shell(tmp_path, port=free_port)
    yield ip
    if session_for(ip) is not None:
        ip.run_cell("%unload_ext afterfix")


def afterfix_callbacks(ip) -> list:
    return [cb for cb in ip.events.callbacks["post_run_cell"] if isinstance(getattr(cb, "__self__", None), Session)]


# -- lifecycle in one shell -------------------------------------------------------------------


def test_load_starts_one_capture_process_and_unload_stops_it(shell, tmp_path):
    before_threads, before_children = set(threading.enumerate()), capture_processes(os.getpid())
    shell.run_cell("%load_ext afterfix")
    assert (tmp_path / "store" / "catalog.sqlite").exists()
    child = session_for(shell).capture.pid
    assert capture_processes(os.getpid()) - before_children == {child}
    assert "sql" in shell.magics_manager.magics["cell"] and "afterfix" in shell.magics_manager.magics["line"]
    info = shell.run_cell("%afterfix status").result.info
    assert info["state"] == "running" and info["pid"] == str(child)
    assert STATUS_KEYS <= set(info), STATUS_KEYS - set(info)
    assert info["sources"] == [f"http://{info['receiver']}/v1/traces", f"inbox {tmp_path / 'inbox'}"]
    assert info["last_error"] is None and info["refused"] == 0

    shell.run_cell("%unload_ext afterfix")
    assert not process_alive(child), "the capture process outlived %unload_ext"
    assert capture_processes(os.getpid()) == before_children
    left = [t for t in set(threading.enumerate()) - before_threads if t.is_alive()]
    assert left == [], f"threads still running after unload: {[t.name for t in left]}"
    assert afterfix_callbacks(shell) == []
    assert "sql" not in shell.magics_manager.magics["cell"] and "afterfix" not in shell.magics_manager.magics["line"]
    assert not any(isinstance(c, Afterfix) for c in shell.configurables)
    assert all(pd.DataFrame not in f.type_printers for f in shell.display_formatter.formatters.values())
    with pytest.raises(UsageError):
        shell.run_cell("%sql SELECT 1")


# What `%afterfix status` shows: sources, rate, lag, counts, the last error, the capture process.
STATUS_KEYS = {"state", "store", "receiver", "inbox", "sources", "spans_stored", "rate_per_s", "lag_s", "pending",
               "refused", "redacted", "duplicates", "started_at", "last_commit_at", "last_error", "pid"}


def test_reload_doubles_nothing_and_leaves_no_process_behind(shell):
    before = capture_processes(os.getpid())
    shell.run_cell("%load_ext afterfix")
    assert len(afterfix_callbacks(shell)) == 1
    pids = [session_for(shell).capture.pid]
    for _ in range(2):
        shell.run_cell("%reload_ext afterfix")
        assert len(afterfix_callbacks(shell)) == 1
        assert sum(isinstance(c, Afterfix) for c in shell.configurables) == 1
        pids.append(session_for(shell).capture.pid)
        assert capture_processes(os.getpid()) - before == {pids[-1]}  # one capture process, the newest
        assert not any(process_alive(p) for p in pids[:-1])
    assert shell.run_cell("%sql SELECT 42 AS answer").result["answer"][0] == 42
    shell.run_cell("%unload_ext afterfix")
    assert afterfix_callbacks(shell) == []
    assert not process_alive(pids[-1]) and capture_processes(os.getpid()) == before


def test_restart_right_after_stop_gets_the_same_port(shell, free_port):
    shell.run_cell("%load_ext afterfix")
    for command in ("%afterfix stop\n%afterfix start", "%afterfix restart"):
        shell.run_cell(command)
        info = shell.run_cell("%afterfix status").result.info
        assert (info["state"], info["receiver"], info["last_error"]) == ("running", f"127.0.0.1:{free_port}", None)
    send(free_port, otel_spans(3, "run-restarted"))
    assert wait_until(lambda: shell.run_cell(COUNT_SQL.format(run="run-restarted")).result["n"][0] == 3)


def test_the_token_reaches_the_capture_process_by_its_environment(tmp_path, free_port):
    import requests

    ip = new_shell(tmp_path, port=free_port, token="s3cret-token")
    try:
        ip.run_cell("%load_ext afterfix")
        pid = session_for(ip).capture.pid
        assert b"s3cret-token" not in Path(f"/proc/{pid}/cmdline").read_bytes()  # argv is visible to everyone
        assert b"AFTERFIX_TOKEN=s3cret-token\0" in Path(f"/proc/{pid}/environ").read_bytes()
        url = f"http://127.0.0.1:{free_port}"
        assert requests.get(f"{url}/afterfix/status", timeout=10).status_code == 401
        assert requests.post(f"{url}/afterfix/flush", headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401
        ok = requests.get(f"{url}/afterfix/status", headers={"Authorization": "Bearer s3cret-token"}, timeout=10)
        assert ok.status_code == 200 and ok.json()["port"] == free_port
    finally:
        if session_for(ip) is not None:
            ip.run_cell("%unload_ext afterfix")


def test_a_capture_process_killed_with_sigkill_loses_nothing_acknowledged(tmp_path, free_port, capsys):
    ip = new_shell(tmp_path, port=free_port, interval=60.0)  # commits a minute apart: only spooled at the kill
    try:
        ip.run_cell("%load_ext afterfix")
        spans = otel_spans(30, "run-child-kill")
        for i in range(0, 30, 10):
            send(free_port, spans[i:i + 10])  # each returns after HTTP 200
        child = session_for(ip).capture.pid
        os.kill(child, signal.SIGKILL)
        assert wait_until(lambda: not session_for(ip).running)
        assert not process_alive(child)
        capsys.readouterr()
        ip.run_cell("x = 1")  # the next cell says, once, that capture ended
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("afterfix:")]
        assert len(err) == 1 and f"pid {child}" in err[0] and "ended unexpectedly" in err[0], err
        info = ip.run_cell("%afterfix status").result.info
        assert info["state"] == "ended" and "ended unexpectedly" in info["last_error"]

        ip.config.Afterfix.interval = 0.2
        ip.run_cell("%reload_ext afterfix")  # a new capture process replays the dead one's spool
        count = COUNT_SQL.format(run="run-child-kill")
        assert wait_until(lambda: ip.run_cell(count).result["n"][0] >= 30)
        ip.run_cell("%afterfix stop")  # commits and waits: nothing still on its way
        assert ip.run_cell(count).result[["n", "distinct_spans"]].values.tolist() == [[30, 30]]
    finally:
        if session_for(ip) is not None:
            ip.run_cell("%unload_ext afterfix")


COUNT_SQL = "%sql SELECT count(*) AS n, count(DISTINCT span_id) AS distinct_spans FROM spans WHERE run_id = '{run}'"


def test_other_dataframe_formatters_are_kept(shell):
    html = shell.display_formatter.formatters["text/html"]
    html.for_type(pd.DataFrame, lambda df: f"<p>custom {len(df)}</p>")
    shell.run_cell("%load_ext afterfix")
    assert html(pd.DataFrame({"a": [1, 2]})) == "<p>custom 2</p>"  # not a %sql result: shown as before
    assert "<table" in html(shell.run_cell("%sql SELECT 1 AS a").result)
    shell.run_cell("%unload_ext afterfix")
    assert html(pd.DataFrame({"a": [1]})) == "<p>custom 1</p>"


def test_busy_port_leaves_inbox_capture_and_says_why(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ip = new_shell(tmp_path, port=port)
        try:
            ip.run_cell("%load_ext afterfix")  # loading still works
            info = ip.run_cell("%afterfix status").result.info
            assert info["state"] == "running" and info["receiver"] == "off"
            assert str(port) in info["last_error"] and "%afterfix restart" in info["last_error"]
            assert "Address already in use" in info["last_error"] and "port 0" in info["last_error"]
            # the capture process that could not bind is gone; the one tailing the inbox runs
            assert capture_processes(os.getpid()) >= {session_for(ip).capture.pid}
            assert ip.run_cell("%sql SELECT count(*) AS n FROM spans").result["n"][0] == 0
            # The post_run_cell callback warned once, in one line, and not again.
            err = capsys.readouterr().err
            warnings_ = [ln for ln in err.splitlines() if ln.startswith("afterfix:")]
            assert len(warnings_) == 1 and str(port) in warnings_[0]
            ip.run_cell("x = 1")
            assert "afterfix:" not in capsys.readouterr().err
        finally:
            if session_for(ip) is not None:
                ip.run_cell("%unload_ext afterfix")


def test_changed_port_applies_on_restart(shell, free_port):
    shell.run_cell("%load_ext afterfix")
    first = shell.run_cell("%afterfix status").result.info["receiver"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        new_port = s.getsockname()[1]
    shell.run_cell(f"%config Afterfix.port = {new_port}")
    assert shell.run_cell("%afterfix status").result.info["receiver"] == first
    shell.run_cell("%afterfix restart")
    assert shell.run_cell("%afterfix status").result.info["receiver"] == f"127.0.0.1:{new_port}"
    # The receiver really moved: the new port accepts connections.
    with socket.create_connection(("127.0.0.1", new_port), timeout=5):
        pass


def test_options_set_before_loading_through_the_shell_config(tmp_path, free_port):
    ip = new_shell(tmp_path)
    ip.config.Afterfix.store = str(tmp_path / "elsewhere")
    ip.config.Afterfix.listen = False
    try:
        ip.run_cell("%load_ext afterfix")
        info = ip.run_cell("%afterfix status").result.info
        assert info["store"] == str(tmp_path / "elsewhere") and info["receiver"] == "off"
    finally:
        ip.run_cell("%unload_ext afterfix")


def test_bad_option_refuses_to_load_in_one_line(tmp_path):
    ip = new_shell(tmp_path, store=str(tmp_path / "missing" / "parent" / "store"))
    with pytest.raises(UsageError, match="parent folder .* does not exist"):
        ip.run_cell("%load_ext afterfix")
    assert session_for(ip) is None and afterfix_callbacks(ip) == []


def test_unreadable_store_refuses_to_load_in_one_line(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "catalog.sqlite").write_text("this is not a SQLite catalog\n" * 100)
    ip = new_shell(tmp_path, listen=False)
    with pytest.raises(UsageError) as err:
        ip.run_cell("%load_ext afterfix")
    assert str(err.value).startswith(f"afterfix not loaded: store {tmp_path / 'store'}: ")
    assert "\n" not in str(err.value)
    assert session_for(ip) is None and afterfix_callbacks(ip) == []


# -- options --------------------------------------------------------------------------------


@pytest.mark.parametrize("trait, value, message", [
    ("port", 70000, "out of range"),
    ("port", -1, "out of range"),
    ("store", "/no/such/folder/store", "parent folder"),
    ("inbox", "/no/such/folder/inbox", "parent folder"),
    ("redact_patterns", ["ok", "(unclosed"], r"redact_patterns\[1\]"),
    ("interval", 0.0, "more than 0"),
    ("display_limit", -1, "negative"),
    ("max_body_bytes", 10, "at least 1024"),
    ("host", "", "empty"),
    ("token", "has space", "without spaces"),
])
def test_bad_values_are_refused_with_the_option_name(trait, value, message):
    with pytest.raises(TraitError, match=message):
        Afterfix(**{trait: value})


def test_non_loopback_host_is_allowed_with_a_warning():
    with pytest.warns(UserWarning, match="not a loopback address"):
        cfg = Afterfix(host="0.0.0.0")
    assert cfg.host == "0.0.0.0"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Afterfix(host="localhost").host == "localhost"


def test_environment_gives_the_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("AFTERFIX_STORE", str(tmp_path / "s"))
    monkeypatch.setenv("AFTERFIX_PORT", "14577")
    monkeypatch.setenv("AFTERFIX_INBOX", str(tmp_path / "in"))
    monkeypatch.setenv("AFTERFIX_TOKEN", "s3cret")
    cfg = Afterfix()
    assert (cfg.store, cfg.port, cfg.inbox, cfg.token) == (str(tmp_path / "s"), 14577, str(tmp_path / "in"), "s3cret")
    monkeypatch.delenv("AFTERFIX_INBOX")
    assert Afterfix().inbox == str(tmp_path / "inbox")  # beside the store
    monkeypatch.setenv("AFTERFIX_PORT", "99999")
    with pytest.raises(TraitError, match="out of range"):
        Afterfix().settings()


def test_config_magic_sets_options_after_loading(shell, caplog):
    shell.run_cell("%load_ext afterfix")
    shell.run_cell("%config Afterfix.display_limit = 3")
    config = session_for(shell).config
    assert config.display_limit == 3
    port = config.port
    shell.run_cell("%config Afterfix.port = 123456")  # %config reports the refusal in one line
    assert config.port == port
    assert "Afterfix.port = 123456 is out of range" in caplog.text


def test_config_magic_lists_the_options(shell, capsys):
    shell.run_cell("%load_ext afterfix")
    capsys.readouterr()
    shell.run_cell("%config Afterfix")
    listing = capsys.readouterr().out
    for trait in Afterfix.class_own_traits(config=True):
        assert f"Afterfix.{trait}" in listing, trait


def test_options_reach_capture(tmp_path, free_port):
    """redact_patterns and max_body_bytes change what the receiver stores and refuses."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    ip = new_shell(tmp_path, port=free_port, redact_patterns=[r"cust-\d{6}"], max_body_bytes=4096, interval=0.1)
    try:
        ip.run_cell("%load_ext afterfix")
        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{free_port}/v1/traces", timeout=10)
        try:
            small = otel_spans(2, "run-redact", note="refund for cust-123456")
            assert exporter.export(small) == SpanExportResult.SUCCESS
            big = otel_spans(2, "run-big", note="x" * 8192)
            assert exporter.export(big) == SpanExportResult.FAILURE  # 413: over max_body_bytes
        finally:
            exporter.shutdown()
        sql = "%sql SELECT attributes FROM spans WHERE run_id = 'run-redact'"
        rows = wait_until(lambda: list(ip.run_cell(sql).result["attributes"]))
        assert len(rows) == 2
        assert all("cust-123456" not in r and "[REDACTED:" in r for r in rows if "refund" in r)
        assert any("refund" in r for r in rows)
        assert ip.run_cell("%sql SELECT count(*) AS n FROM spans WHERE run_id = 'run-big'").result["n"][0] == 0
    finally:
        if session_for(ip) is not None:
            ip.run_cell("%unload_ext afterfix")


def test_cells_never_wait_for_ingest(tmp_path, free_port):
    """While the store refuses writes, spans are still acknowledged and cells and queries go on."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    from afterfix.store import Store

    ip = new_shell(tmp_path, port=free_port, interval=0.1)
    count = "%sql SELECT count(*) AS n FROM spans WHERE run_id = 'run-busy'"
    try:
        ip.run_cell("%load_ext afterfix")
        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{free_port}/v1/traces", timeout=10)
        try:
            with Store(tmp_path / "store").write_lock():  # another writer holds the store
                assert exporter.export(otel_spans(5, "run-busy")) == SpanExportResult.SUCCESS
                assert wait_until(lambda: ip.run_cell("%afterfix status").result.info["pending"] == 5)
                ip.run_cell("x = sum(range(10))")
                assert ip.run_cell(count).result["n"][0] == 0
        finally:
            exporter.shutdown()
        assert wait_until(lambda: ip.run_cell(count).result["n"][0] == 5)
    finally:
        if session_for(ip) is not None:
            ip.run_cell("%unload_ext afterfix")


# -- a real kernel --------------------------------------------------------------------------


@pytest.fixture
def kernels():
    started: list[Kernel] = []

    def start(env: dict, cwd: Path) -> Kernel:
        k = Kernel(env, cwd)
        started.append(k)
        return k

    yield start
    for k in started:
        try:
            k.shutdown()
        except Exception:  # already killed
            pass


def otel_spans(n: int, run_id: str, note: str = ""):
    """`n` finished spans made by the real OpenTelemetry SDK."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "night-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("afterfix.tests")
    with tracer.start_as_current_span("invoke_agent night-agent", attributes={
        "gen_ai.operation.name": "invoke_agent", "afterfix.run.id": run_id,
    }):
        for i in range(n - 1):
            with tracer.start_as_current_span("execute_tool kubectl_get", attributes={
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "kubectl_get",
                "afterfix.run.id": run_id, "step": i, "note": note,
            }):
                pass
    provider.shutdown()
    spans = memory.get_finished_spans()
    assert len(spans) == n
    return spans


def send(port: int, spans) -> None:
    """Export with the SDK's OTLP/HTTP exporter; returns once the receiver answered 200."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=30)
    try:
        assert exporter.export(spans) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


COUNT_CELL = """%%sql -o df
SELECT count(*) AS n, count(DISTINCT span_id) AS distinct_spans FROM spans WHERE run_id = '{run}'"""


def stored(kernel: Kernel, run_id: str) -> tuple[int, int]:
    kernel.run(COUNT_CELL.format(run=run_id))
    n, distinct = kernel.run("print(int(df.n[0]), int(df.distinct_spans[0]))").split()
    return int(n), int(distinct)


def kernel_env(tmp_path: Path, port: int) -> dict:
    return {"AFTERFIX_STORE": str(tmp_path / "store"), "AFTERFIX_PORT": str(port),
            "AFTERFIX_INBOX": str(tmp_path / "inbox")}


@pytest.mark.slow
def test_kernel_receives_sdk_spans_and_sql_returns_them(kernels, tmp_path, free_port):
    kernel = kernels(kernel_env(tmp_path, free_port), tmp_path)
    kernel.run("%load_ext afterfix")
    assert f"127.0.0.1:{free_port}" in kernel.run("s = %afterfix status\nprint(repr(s))")
    send(free_port, otel_spans(12, "run-e2e"))
    assert wait_until(lambda: stored(kernel, "run-e2e") == (12, 12)), stored(kernel, "run-e2e")
    names = kernel.run("%sql -o tools SELECT DISTINCT tool_name FROM spans WHERE tool_name IS NOT NULL\nprint(list(tools.tool_name))")
    assert "kubectl_get" in names

    # %reload_ext replaces the capture process; shutting the kernel down ends the last one.
    child = "from afterfix.extension import session_for\nprint(session_for(get_ipython()).capture.pid)"
    first = int(kernel.run(child))
    assert capture_processes(kernel.pid) == {first}
    kernel.run("%reload_ext afterfix")
    second = int(kernel.run(child))
    assert second != first and not process_alive(first) and capture_processes(kernel.pid) == {second}
    send(free_port, otel_spans(4, "run-e2e-reloaded"))
    assert wait_until(lambda: stored(kernel, "run-e2e-reloaded") == (4, 4)), stored(kernel, "run-e2e-reloaded")
    kernel.shutdown()
    assert wait_until(lambda: not process_alive(second), timeout=60), "the capture process outlived its kernel"


@pytest.mark.slow
def test_acknowledged_spans_survive_kill_9_exactly_once(kernels, tmp_path, free_port):
    env = kernel_env(tmp_path, free_port)
    first = kernels(env, tmp_path)
    # Commits a minute apart: the kill lands while the spans are acknowledged but only spooled.
    first.run("get_ipython().config.Afterfix.interval = 60\n%load_ext afterfix")
    spans = otel_spans(40, "run-kill")
    for i in range(0, 40, 10):
        send(free_port, spans[i:i + 10])  # each call returns after HTTP 200
    assert first.run("s = %afterfix status\nprint(s.info['spans_stored'])").strip() == "0"
    child = int(first.run("from afterfix.extension import session_for\nprint(session_for(get_ipython()).capture.pid)"))
    assert capture_processes(first.pid) == {child}
    os.kill(first.pid, signal.SIGKILL)
    first.km.provisioner.process.wait(timeout=30)
    # Its stdin closed with the kernel: the capture process commits what it holds and exits.
    assert wait_until(lambda: not process_alive(child), timeout=60), "the capture process outlived its kernel"

    second = kernels(env, tmp_path)
    second.run("%load_ext afterfix")
    assert wait_until(lambda: stored(second, "run-kill") == (40, 40)), stored(second, "run-kill")
    second.run("%afterfix stop")  # flushes and joins: nothing still on its way
    assert stored(second, "run-kill") == (40, 40)


@pytest.mark.slow
def test_ad_hoc_queries_notebook_runs_on_example_traces(tmp_path, free_port, monkeypatch):
    import nbformat
    import papermill

    from afterfix.ingest.files import ingest_paths
    from afterfix.store import Store

    root = Path(__file__).resolve().parents[1]
    store = Store(tmp_path / "store")
    summary = ingest_paths(store, [root / "traces" / "examples" / "hpa-night.jsonl"])
    assert summary.spans_stored > 0
    store.close()
    for key, value in kernel_env(tmp_path, free_port).items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "ad_hoc_queries.out.ipynb"
    papermill.execute_notebook(str(root / "notebooks" / "ad_hoc_queries.ipynb"), str(out), kernel_name="python3",
                               cwd=str(tmp_path), progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    decisions = next(c for c in nb.cells if c.source.startswith("%%sql -o decisions"))
    html = decisions.outputs[0]["data"]["text/html"]
    assert "<table" in html and "decision_id" in html
