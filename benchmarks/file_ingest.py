"""Benchmark (a): an OTLP/JSON file to queryable spans, beside raw DuckDB read_ndjson of the same rows.

    .venv/bin/python benchmarks/file_ingest.py [--spans 1000000] [--no-native]

`--no-native` ingests as an install without a C compiler does: through the pure-Python path
($AFTERFIX_NO_NATIVE=1), not the compiled one.

Target: >= 150k spans/s, and >= 60 % of raw read_ndjson in the same run. "Queryable" means
committed to the store and counted by a query from a fresh connection.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).parent))
import synth  # noqa: E402

RAW_SQL = """
CREATE TABLE raw AS
SELECT s.traceId AS trace_id, s.spanId AS span_id, s.parentSpanId AS parent_span_id, s.name AS name,
       s.startTimeUnixNano AS start_ns, s.endTimeUnixNano AS end_ns, to_json(s.attributes) AS attributes,
       to_json(s.events) AS events
FROM (SELECT unnest(ss.spans) AS s FROM
      (SELECT unnest(rs.scopeSpans) AS ss FROM
       (SELECT unnest(resourceSpans) AS rs FROM read_ndjson(?, maximum_object_size = 100000000))))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", type=int, default=1_000_000)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--no-native", action="store_true",
                    help="use the pure-Python decoding path, as an install without a C compiler does")
    args = ap.parse_args()
    if args.no_native:  # read when afterfix.ingest is imported, so before that
        os.environ["AFTERFIX_NO_NATIVE"] = "1"
    from afterfix import Store
    from afterfix.ingest import otlp
    from afterfix.ingest.files import ingest_paths

    work = Path(tempfile.mkdtemp(prefix="afterfix-bench-a-"))
    try:
        path = synth.write_otlp_file(work / "spans.jsonl", args.spans)
        size_mb = path.stat().st_size / 1e6

        con = duckdb.connect()
        t = time.perf_counter()
        con.execute(RAW_SQL, [str(path)])
        raw_s = time.perf_counter() - t
        raw_n = con.execute("SELECT count(*) FROM raw").fetchone()[0]
        con.close()

        store = Store(work / "store")
        cpu = _cpu()
        t = time.perf_counter()
        summary = ingest_paths(store, [path], progress=False)
        n = Store(work / "store").query("SELECT count(*) AS n FROM spans")["n"][0]
        ours_s = time.perf_counter() - t
        main_cpu, workers_cpu = (b - a for a, b in zip(cpu, _cpu()))

        assert n == raw_n == args.spans, (n, raw_n, args.spans)
        ours, raw = n / ours_s, raw_n / raw_s
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
              f"duckdb {duckdb.__version__}, load average {os.getloadavg()[0]:.1f}")
        print(f"input: {n:,} spans, {size_mb:,.0f} MB OTLP/JSON")
        print(f"decoding path                : {'compiled' if otlp._native is not None else 'pure Python'}")
        print(f"afterfix ingest -> queryable : {ours:>10,.0f} spans/s ({ours_s:.1f} s, refused {len(summary.refused)})")
        print(f"raw DuckDB read_ndjson       : {raw:>10,.0f} spans/s ({raw_s:.1f} s)")
        print(f"ratio                        : {ours / raw:>10.0%}   (target >= 150,000 spans/s and >= 60 % of raw)")
        print(f"afterfix CPU                 : {(main_cpu + workers_cpu) / n * 1e6:>10.1f} us/span (main process "
              f"{main_cpu / n * 1e6:.1f}, worker processes {workers_cpu / n * 1e6:.1f})")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _cpu() -> tuple[float, float]:
    """CPU seconds of this process and of its finished children (the decoding workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


if __name__ == "__main__":
    main()
