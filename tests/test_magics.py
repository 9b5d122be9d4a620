"""The magics in a real in-process IPython shell: %%sql / %sql and %afterfix.

The shell raises on every cell error (like JupySQL's TestingShell), so a broken magic fails the
test instead of printing a traceback nobody reads.
"""

from __future__ import annotations

import datetime as dt
import os
import re

import pandas as pd
import pyarrow as pa
import pytest
from IPython.core.error import UsageError
from traitlets.config import Config

from afterfix import schema
from afterfix.magics import StatusReport, parse_sql, with_limit
from afterfix.extension import session_for
from kernels import TestingShell, capture_processes, process_alive

T0 = dt.datetime(2026, 11, 27, 2, 47)
HOSTILE = "<script>alert('x')</script> & {x} $x"


def make_spans(n: int, *, name: str = "execute_tool kubectl_get") -> pa.Table:
    cols: dict[str, list] = {c[0]: [] for c in schema.SPAN_COLUMNS}
    for i in range(n):
        row = dict.fromkeys(cols)
        row.update(
            trace_id="b" * 32, span_id=f"{i + 1:016x}", name=f"{name} #{i}", kind="INTERNAL",
            start_time=T0 + dt.timedelta(milliseconds=i), end_time=T0 + dt.timedelta(milliseconds=i + 5),
            duration_ms=5.0, status_code="OK", operation="execute_tool", run_id="run-1", tool_name="kubectl_get",
            attributes="{}", resource_attributes="{}", source="test", ingested_at=T0,
        )
        for k, v in row.items():
            cols[k].append(v)
    return pa.Table.from_pydict(cols, schema=schema.SPAN_SCHEMA)


def new_shell(tmp_path, **afterfix) -> TestingShell:
    c = Config()
    c.HistoryManager.hist_file = ":memory:"
    c.Afterfix.store = str(tmp_path / "store")
    c.Afterfix.inbox = str(tmp_path / "inbox")
    c.Afterfix.listen = False
    for k, v in afterfix.items():
        setattr(c.Afterfix, k, v)
    return TestingShell(config=c)


def loaded(tmp_path):
    shell = new_shell(tmp_path)
    shell.run_cell("%load_ext afterfix")
    session_for(shell).store.append(make_spans(50, name=HOSTILE))
    return shell


@pytest.fixture(scope="module")
def ip(tmp_path_factory):
    """A shell with afterfix loaded on a temporary store holding 50 spans (inbox only, no port).

    Shared by the tests that only read; tests that change the store or options use `fresh_ip`.
    """
    shell = loaded(tmp_path_factory.mktemp("magics"))
    yield shell
    shell.run_cell("%unload_ext afterfix")


@pytest.fixture
def fresh_ip(tmp_path):
    shell = loaded(tmp_path)
    yield shell
    shell.run_cell("%unload_ext afterfix")


def count(ip) -> int:
    return int(ip.run_cell("%sql SELECT count(*) AS n FROM spans").result["n"][0])


# -- %%sql / %sql ----------------------------------------------------------------------------


@pytest.mark.parametrize("cell", [
    "%%sql -o df\nSELECT run_id, count(*) AS n FROM spans GROUP BY run_id",
    "%%sql --out df\nSELECT run_id, count(*) AS n FROM spans GROUP BY run_id;",
    "%sql -o df SELECT run_id, count(*) AS n FROM spans GROUP BY run_id",
    "%sql --out=df SELECT run_id, count(*) AS n FROM spans GROUP BY run_id",
    "df = %sql SELECT run_id, count(*) AS n FROM spans GROUP BY run_id",
])
def test_sql_returns_a_dataframe_and_binds_it(ip, cell):
    ip.run_cell(cell)
    df = ip.user_ns["df"]
    assert isinstance(df, pd.DataFrame)
    assert df.to_dict("records") == [{"run_id": "run-1", "n": 50}]


def test_sql_result_is_the_cell_value(ip):
    result = ip.run_cell("%%sql\nSELECT span_id FROM spans ORDER BY span_id LIMIT 2").result
    assert list(result["span_id"]) == ["0000000000000001", "0000000000000002"]


@pytest.mark.parametrize("sql", ["DELETE FROM spans", "DROP TABLE spans", "SELECT 1; DELETE FROM spans"])
def test_writes_are_refused_without_write_in_one_line(ip, sql):
    with pytest.raises(UsageError) as err:
        ip.run_cell(f"%%sql\n{sql}")
    message = str(err.value)
    assert "\n" not in message and "--write" in message
    assert count(ip) == 50


def test_write_flag_allows_writes(fresh_ip):
    ip = fresh_ip
    ip.run_cell("%%sql --write\nDELETE FROM spans WHERE span_id = '0000000000000001'")
    assert count(ip) == 49


@pytest.mark.parametrize("sql, expected", [
    ("SELECT * FROM no_such_table", r"^Catalog Error: .*no_such_table"),
    ("SELEC 1", r"^Parser Error: "),
    ("SELECT no_such_column FROM spans", r"^Binder Error: .*no_such_column"),
])
def test_duckdb_errors_are_one_clear_line(ip, sql, expected):
    with pytest.raises(UsageError) as err:
        ip.run_cell(f"%sql {sql}")
    assert re.search(expected, str(err.value)) and "\n" not in str(err.value)


@pytest.mark.parametrize("cell, expected", [
    ("%sql", "needs a query"),
    ("%%sql\n   ", "needs a query"),
    ("%sql --limit x SELECT 1", "--limit x"),
    ("%sql --limit 0 SELECT 1", "--limit 0"),
    ("%sql --bogus SELECT 1", "unknown option --bogus"),
    ("%sql -o 1x SELECT 1", "not a Python variable name"),
    ("%sql -o class SELECT 1", "not a Python variable name"),
    ("%%sql -o\nSELECT 1", "needs a variable name"),
    ("%%sql SELECT 1\nSELECT 2", "put the query in the cell"),
    ("%afterfix frobnicate", "use one of status, start, stop, restart"),
    ("%afterfix status now", "use one of"),
])
def test_input_mistakes_raise_usage_error(ip, cell, expected):
    with pytest.raises(UsageError, match=re.escape(expected)):
        ip.run_cell(cell)


@pytest.mark.parametrize("cell, rows", [
    ("%sql --limit 3 SELECT * FROM spans ORDER BY span_id DESC", 3),
    ("%sql -l 7 SELECT * FROM spans", 7),
    ("%%sql --limit 100\nSELECT * FROM spans", 50),
    ("%%sql --limit 2\nSELECT 1 AS a; SELECT * FROM spans", 2),
])
def test_limit(ip, cell, rows):
    df = ip.run_cell(cell).result
    assert len(df) == rows


def test_limit_keeps_the_order():
    sql = with_limit("SELECT * FROM spans ORDER BY span_id DESC;", 3)
    assert sql.endswith("LIMIT 3") and "ORDER BY span_id DESC" in sql and ";" not in sql
    assert with_limit("DELETE FROM spans", 3) == "DELETE FROM spans"


def test_no_variable_substitution(ip):
    # Values reach SQL through Python, never by expanding text that may come from a trace.
    ip.user_ns["x"] = "boom"
    df = ip.run_cell("%sql SELECT '{x}' AS braces, '$x' AS dollar").result
    assert df.to_dict("records") == [{"braces": "{x}", "dollar": "$x"}]
    df = ip.run_cell("%%sql -o out\nSELECT '{x}' AS braces").result
    assert df["braces"][0] == "{x}"


@pytest.mark.parametrize("line, expected", [
    ("-o df --write --limit 5", dict(out="df", write=True, limit=5)),
    ("--limit=5 -o df", dict(out="df", write=False, limit=5)),
    ("", dict(out=None, write=False, limit=None)),
])
def test_parse_sql_cell_options(line, expected):
    args = parse_sql(line, "SELECT 1")
    assert dict(out=args.out, write=args.write, limit=args.limit) == expected
    assert args.query == "SELECT 1"


def test_display_limit_applies_to_sql_results_only(fresh_ip):
    ip = fresh_ip
    ip.run_cell("%config Afterfix.display_limit = 6")
    df = ip.run_cell("%sql SELECT span_id FROM spans ORDER BY span_id").result
    assert len(df) == 50  # the data is all there; only its display is shortened
    shown = ip.display_formatter.format(df)[0]
    assert "0000000000000001" in shown["text/html"] and "0000000000000019" not in shown["text/html"]
    assert "0000000000000019" not in shown["text/plain"] and "50 rows" in shown["text/plain"]
    plain = pd.DataFrame({"span_id": list(df["span_id"])})  # not from %sql: pandas' own display
    assert "0000000000000019" in ip.display_formatter.format(plain)[0]["text/html"]
    ip.run_cell("%config Afterfix.display_limit = 0")  # every row
    df = ip.run_cell("%sql SELECT 'row-' || range AS r FROM range(100)").result  # more than pandas' 60
    shown = ip.display_formatter.format(df)[0]
    assert all(f"row-{i}<" in shown["text/html"] and f"row-{i}\n" in shown["text/plain"] for i in range(99))


def test_trace_text_in_results_is_escaped(ip):
    df = ip.run_cell("%sql SELECT name FROM spans LIMIT 1").result
    html = ip.display_formatter.format(df)[0]["text/html"]
    assert "<script>" not in html and "&lt;script&gt;" in html
    # A terminal escape sequence in trace text reaches the terminal as text, not as a command.
    df = ip.run_cell("%sql SELECT 'a' || chr(27) || '[2J' || chr(7) AS t").result
    plain = ip.display_formatter.format(df)[0]["text/plain"]
    assert "\x1b" not in plain and "\\x1b[2J\\x07" in plain


# -- %afterfix -------------------------------------------------------------------------------


def test_status_shows_counts_as_plain_text_and_escaped_html(ip):
    report = ip.run_cell("%afterfix status").result
    assert isinstance(report, StatusReport)
    text = repr(report)
    for label in ("state", "store", "sources", "rate", "lag", "spans stored", "refused", "redacted", "last error"):
        assert label in text, label
    assert "running" in text
    html = ip.display_formatter.format(report)[0]["text/html"]
    assert html.startswith("<table") and "running" in html
    assert ip.run_cell("%afterfix").result.info.keys() == report.info.keys()


@pytest.mark.parametrize("value", [HOSTILE, ["<b>one</b>", "two & three"], {"<i>src</i>": "<x>"}])
def test_status_html_escapes_every_value(value):
    report = StatusReport({"state": "running", "sources": value, "last_error": value, "<k>": value})
    html = report._repr_html_()
    assert "<script>" not in html and "<b>" not in html and "<i>" not in html and "<x>" not in html
    assert "<k>" not in html and "&lt;" in html
    assert StatusReport._text(value) in repr(report)  # plain text keeps the value as it is
    assert "\x1b" not in repr(StatusReport({"last_error": "bad \x1b[31mred"}))


def test_stop_start_restart(fresh_ip, tmp_path):
    ip = fresh_ip
    session = session_for(ip)
    first = session.capture.pid
    ip.run_cell("%afterfix stop")
    assert ip.run_cell("%afterfix status").result.info["state"] == "stopped"
    assert not process_alive(first) and session.capture is None
    assert count(ip) == 50  # queries keep working while capture is stopped
    ip.run_cell("%afterfix start")
    assert ip.run_cell("%afterfix status").result.info["state"] == "running"
    second = session.capture.pid
    assert process_alive(second) and capture_processes(os.getpid()) >= {second}
    ip.run_cell("%afterfix start")  # already running: nothing doubled
    assert session.capture.pid == second
    # A changed option takes effect on restart.
    other = tmp_path / "other-store"
    ip.run_cell(f"%config Afterfix.store = {str(other)!r}")
    assert ip.run_cell("%afterfix status").result.info["store"] != str(other)
    ip.run_cell("%afterfix restart")
    assert ip.run_cell("%afterfix status").result.info["store"] == str(other)
    assert count(ip) == 0
    assert not process_alive(second) and process_alive(session.capture.pid)

