"""A big night for the Understand benchmarks, made from a real one: the simulated night shift is
played once (every scenario, its 20-odd incidents, metric history and all), then copied into
`copies` tenants (namespace `shop` becomes `shop-3`, every id gets the copy's suffix) and each
investigation made deeper (its tool calls repeated, as an LLM agent's are) until the store holds
`spans` spans. So the findings, trees and briefing meet the shapes the night shift really makes,
at the size a busy cluster makes them: 10 copies, 200-odd incidents, 1M spans by default.

    python benchmarks/bignight.py DIR [--copies 10] [--spans 1000000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]

ID_COLUMNS = ("run_id", "incident_id", "decision_id", "action_id", "tool_call_id")
NAMESPACES = ("shop", "platform")


def _play(workdir: Path):
    from afterfix.nightshift.night import run_night
    from afterfix.store import Store

    store = Store(workdir / "seed-store")
    store.create()
    run_night(store, workdir=workdir / "seed-night", seed=0)
    return store


IDS = r'"((?:run|INC|dec|act|call|sweep|apr)-[^"\\]+)"'  # an id as a JSON string value


def _copy(expr: str) -> str:
    """SQL rewriting copy `k`'s text: namespaces become `shop-k`, ids inside JSON get `-k`."""
    renamed = f"regexp_replace({expr}, '\\b(shop|platform)\\b', '\\1-' || k, 'g')"
    return f"regexp_replace({renamed}, '{IDS}', '\"\\1-' || k || '\"', 'g')"


def make(folder: Path, *, copies: int = 10, spans: int = 1_000_000, seed_store=None):
    """Write the big night into a new store under `folder`; returns (store, seconds)."""
    import pyarrow as pa

    from afterfix import schema
    from afterfix.store import Store

    t0 = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    seed = seed_store or _play(folder)
    base_spans = seed.arrow("SELECT * FROM spans")
    base_events = seed.arrow("SELECT * FROM events")
    base_metrics = seed.arrow("SELECT * FROM metrics") if _has(seed, "metrics") else None
    tools = base_spans.filter(pa.compute.equal(base_spans["operation"], "execute_tool")).num_rows
    # each tool call repeated `depth` times: copies * (spans per night + (depth - 1) * tool calls) ~= spans
    depth = max(1, round((spans / copies - base_spans.num_rows) / max(tools, 1)) + 1)
    con = duckdb.connect()
    con.register("s", base_spans)
    con.register("e", base_events)
    hexid = "left(md5({col} || '-' || k || '-' || r), {n})"
    ids = ", ".join(f"{c} || '-' || k AS {c}" for c in ID_COLUMNS if c != "tool_call_id")
    # a repeated tool call is a new call: its own span id and call id
    call = "CASE WHEN r = 0 THEN {x} ELSE regexp_replace({x}, '\"(call-[^\"]+)\"', '\"\\1-' || r || '\"', 'g') END"
    span_sql = f"""
        SELECT {hexid.format(col='trace_id', n=32).replace("|| r", "|| 0")} AS trace_id,
               {hexid.format(col='span_id', n=16)} AS span_id,
               CASE WHEN parent_span_id IS NULL THEN NULL
                    ELSE {hexid.format(col='parent_span_id', n=16).replace("|| r", "|| 0")} END AS parent_span_id,
               {_copy('name')} AS name, kind,
               start_time + to_microseconds(r * 997) AS start_time, end_time + to_microseconds(r * 997) AS end_time,
               duration_ms, status_code, status_message, service_name, scope_name, operation, afterfix_kind,
               {ids}, tool_call_id || '-' || k || CASE WHEN r = 0 THEN '' ELSE '-' || r END AS tool_call_id,
               {_copy('agent_name')} AS agent_name, tool_name, model, input_tokens, output_tokens, error_type,
               {call.format(x=_copy('attributes'))} AS attributes,
               {_copy('resource_attributes')} AS resource_attributes, links, source, ingested_at
        FROM s, (SELECT ? AS k), range(0, ?) AS deep(r)
        WHERE r = 0 OR operation = 'execute_tool'"""
    store = Store(folder / "store")
    store.create()
    cols = [c for c, *_ in schema.SPAN_COLUMNS]
    for copy in range(1, copies + 1):
        table = con.execute(f"SELECT {', '.join(cols)} FROM ({span_sql})", [copy, depth]).to_arrow_table()
        events = con.execute(f"""
            SELECT left(md5(trace_id || '-' || k || '-0'), 32) AS trace_id, left(md5(span_id || '-' || k || '-0'), 16) AS span_id,
                   seq, name, time, {_copy('attributes')} AS attributes FROM e, (SELECT ? AS k)""", [copy]).to_arrow_table()
        metrics = None
        if base_metrics is not None:
            con.register("m", base_metrics)
            metrics = con.execute(f"""
                SELECT * REPLACE (namespace || '-' || k AS namespace, md5(series_id || k) AS series_id,
                                  {_copy('resource_attributes')} AS resource_attributes,
                                  {_copy('attributes')} AS attributes)
                FROM m, (SELECT ? AS k)""", [copy]).to_arrow_table().drop_columns(["k"])
        _append(store, table.cast(schema.SPAN_SCHEMA), events.cast(schema.EVENT_SCHEMA),
                metrics.cast(schema.METRIC_SCHEMA) if metrics is not None else None)
    return store, time.perf_counter() - t0


def window(store) -> tuple[datetime, datetime]:
    """The night's window as `make demo` briefs it: the cluster's setup (21:00) to a minute after the
    last span ended. Naive UTC, as the store keeps times."""
    from afterfix.nightshift.scenarios import SETUP_AT

    last = store.query("SELECT max(end_time) AS t FROM spans")["t"].iloc[0].to_pydatetime()
    since = datetime.fromtimestamp(SETUP_AT, tz=timezone.utc).replace(tzinfo=None)
    return since, (last + timedelta(seconds=60)).replace(microsecond=0)


def _has(store, table: str) -> bool:
    return bool(store.query("SELECT count(*) AS n FROM information_schema.tables WHERE table_name = ?", [table])["n"].iloc[0])


def _append(store, spans, events, metrics) -> None:
    kw = {"metrics": metrics} if metrics is not None else {}
    store.append(spans, events, **kw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, nargs="?", default=None)
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--spans", type=int, default=1_000_000)
    args = ap.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="afterfix-bignight-"))
    store, seconds = make(folder, copies=args.copies, spans=args.spans)
    counts = store.query("SELECT (SELECT count(*) FROM spans) AS spans, (SELECT count(*) FROM incidents) AS incidents")
    print(f"{int(counts['spans'][0]):,} spans, {int(counts['incidents'][0])} incidents in {folder / 'store'} "
          f"({seconds:.1f} s)")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "kernel_ext"))
    main()
