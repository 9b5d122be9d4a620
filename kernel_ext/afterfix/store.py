"""The store: one DuckLake shared by every process that reviews, reports or ingests.

A store is local (this module's layout below) or a team store: the same DuckLake with its
catalog in PostgreSQL and its data under an S3 prefix, which any number of machines reach
(`locations.py` parses where it is; the code paths that differ are marked "team store").

A plain DuckDB file admits one process at a time (read-only included), so the store is a
DuckLake whose catalog is SQLite (WAL, busy timeout) and whose data is Parquet under the store
folder. Any number of processes attach it; each commits in short transactions and retries
while another holds the catalog. Writers on one machine also take an advisory file lock around
their check-then-insert, which is what makes "the same span delivered twice is stored once"
hold between processes: DuckLake has no unique constraints.

Layout of a store folder::

    STORE/catalog.sqlite     DuckLake catalog (tables, snapshots, file lists)
    STORE/data/              Parquet files
    STORE/write.lock         advisory lock taken by writers on this machine
    STORE/spool/             receivers' write-ahead spool (see ingest/spool.py)

A process that commits continually (an ingester) holds the catalog open from a small child
process (`Store.hold_catalog`, see `CatalogHold` for why).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import random
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from ._exceptions import ReadOnlyQuery, StoreBusy, StoreError
from . import run_index as _run_index  # not `run_index`: DuckDB would take the module for the table of that name
from . import schema
from .catalog_hold import CatalogHold
from .locations import TeamLocation, is_team_spec, redact, s3_credentials, sql_literal, team_location

log = logging.getLogger(__name__)

DUCKDB_VERSION = "1.5.5"
ENV_STORE = "AFTERFIX_STORE"

# Statement types a read-only query may run.
_READ_TYPES = {"SELECT", "EXPLAIN", "PRAGMA", "SET", "VARIABLE_SET", "EXTENSION"}
_ROW_GROUP_ROWS = 16384
_INLINED_ROWS = 10  # DuckLake's default data_inlining_row_limit: inserts this small stay in the catalog
_LAKE_OPTIONS = {"parquet_row_group_size": str(_ROW_GROUP_ROWS), "target_file_size": "64MB"}
# DuckDB's allocator (jemalloc) keeps freed pages for reuse, and a free above this size makes it
# return them to the system at once. At DuckDB's default (512 MB) a file merge under the 64 MB
# compaction cap left ~60 MB resident that nothing used, and its peak was 35-45 MB higher.
_ALLOCATOR_FLUSH = "4MB"
_RETRY_MARKERS = ("database is locked", "database is busy", "conflict", "SQLITE_BUSY")


def _repo_root() -> Path | None:
    # kernel_ext/afterfix/store.py -> repository root, when installed in editable mode
    root = Path(__file__).resolve().parents[2]
    return root if (root / "traces").is_dir() and (root / "pyproject.toml").is_file() else None


def default_store_spec() -> str:
    """AFTERFIX_STORE if set (a folder, or a team store's URL or file), else the default folder."""
    return os.environ.get(ENV_STORE) or str(default_store_path())


def default_store_path() -> Path:
    """The default local store folder: AFTERFIX_STORE if it names a folder, else traces/store in
    the afterfix checkout, else ./traces/store."""
    if os.environ.get(ENV_STORE) and not is_team_spec(os.environ[ENV_STORE]):
        return Path(os.environ[ENV_STORE]).expanduser()
    root = _repo_root()
    if root is not None:
        return root / "traces" / "store"
    return Path.cwd() / "traces" / "store"


def _extension_files(team: bool = False) -> tuple[Path, ...]:
    """Paths to the extension binaries shipped as PyPI wheels: DuckLake and SQLite for a local
    store, DuckLake, PostgreSQL and httpfs (S3) for a team store.

    The SQLite and PostgreSQL extensions' entry points are named for `sqlite_scanner` and
    `postgres_scanner`, so LOAD only finds them under those file names: each is copied once into
    a cache folder.
    """
    wanted = ("ducklake", "postgres", "httpfs") if team else ("ducklake", "sqlite")
    modules = []
    for name in wanted:
        try:
            modules.append(__import__(f"duckdb_extension_{name}"))
        except ImportError as e:  # pragma: no cover - dependency missing
            raise StoreError(f"{e.name} is not installed: pip install 'duckdb-extension-{name}=={DUCKDB_VERSION}'") from e
    if duckdb.__version__ != DUCKDB_VERSION:
        raise StoreError(
            f"duckdb {duckdb.__version__} is installed but the extension wheels are built for {DUCKDB_VERSION}: "
            f"pip install 'duckdb=={DUCKDB_VERSION}'"
        )
    sub = Path("extensions") / f"v{DUCKDB_VERSION}"
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "afterfix" / f"duckdb-{DUCKDB_VERSION}"
    paths = []
    for name, module in zip(wanted, modules):
        src = Path(module.__file__).parent / sub / f"{name}.duckdb_extension"
        if name not in ("sqlite", "postgres"):
            paths.append(src)
            continue
        dest = cache / f"{name}_scanner.duckdb_extension"
        if not dest.exists() or dest.stat().st_size != src.stat().st_size:
            cache.mkdir(parents=True, exist_ok=True)
            tmp = cache / f".{name}_scanner.{os.getpid()}.{threading.get_ident()}"
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)  # atomic: concurrent processes never LOAD a half-copied file
        paths.append(dest)
    return tuple(paths)


# Extension files DuckDB has checked the signature of in this process, by (path, size, mtime,
# inode). DuckDB checks it at every LOAD by hashing the whole file: ~0.13 s of CPU for each of
# the two, every connection (measured), about a second for an ingest that opens three.
_VERIFIED: set[tuple] = set()


def _connect(team: bool = False) -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB with the extensions a store needs loaded (see _extension_files).
    Files checked earlier in this process and unchanged since are loaded unchecked."""
    paths = _extension_files(team)
    files = []
    for path in paths:
        st = path.stat()
        files.append((str(path), st.st_size, st.st_mtime_ns, st.st_ino))
    checked = all(f in _VERIFIED for f in files)
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"}) if checked else duckdb.connect()
    try:
        for path in paths:
            con.execute(f"LOAD '{path}'")
    except BaseException:
        con.close()
        raise
    _VERIFIED.update(files)
    return con


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """BEGIN ... COMMIT on `con`; ROLLBACK (if the transaction is still there) when anything fails."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):
            con.execute("ROLLBACK")  # after a failed COMMIT the transaction is already gone
        raise


def is_retryable(err: BaseException) -> bool:
    text = str(err)
    return any(m.lower() in text.lower() for m in _RETRY_MARKERS)


@dataclass
class AppendResult:
    spans_new: int = 0
    spans_duplicate: int = 0
    events: int = 0
    quarantined: int = 0
    metrics_new: int = 0
    metrics_duplicate: int = 0
    commit_ms: float = 0.0


class Store:
    """A handle on one store folder. Cheap to create; connections are made on demand.

    `query()` reads through a connection that attaches the lake read-only; `append()` writes
    spans, events, metric points, quarantined records and input offsets in one transaction.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, busy_timeout_ms: int = 5000, retries: int = 60,
                 memory_limit: str = "256MB", compact_memory_limit: str = "64MB"):
        spec = str(path) if path else default_store_spec()
        # team store: where it is, and this machine's working folder as `root` (spool, locks, spill)
        self.team: TeamLocation | None = team_location(spec) if is_team_spec(spec) else None
        if self.team is not None:
            self.root = self.team.local
            self.catalog = None
            self.data = None
            if self.team.password and not os.environ.get("PGPASSWORD"):
                # Processes this one starts (a briefing's kernel, a guard) reopen the store from
                # `spec`, which never holds the password: they find it where libpq looks.
                os.environ["PGPASSWORD"] = self.team.password
        else:
            self.root = Path(spec).expanduser().resolve()
            self.catalog = self.root / "catalog.sqlite"
            self.data = self.root / "data"
        self.busy_timeout_ms = busy_timeout_ms
        # Writers live inside long-running processes (a kernel, `afterfix serve`): DuckDB's
        # default (80 % of RAM) lets one file merge take a gigabyte, so cap it and spill to disk.
        self.memory_limit = memory_limit
        # Merging files is the writer's largest allocation: DuckDB holds about the cap in
        # buffers while it merges (measured: +153 MB at 256 MB, +80 MB at 64 MB), and spills the rest.
        # A lower cap is no better: at 32 or 16 MB the same merge peaked at +121 MB.
        self.compact_memory_limit = compact_memory_limit
        self.retries = retries
        self._local = threading.local()
        self._lock = threading.Lock()
        self._created = False
        self._seen = False  # team store: its catalog was found once

    def __repr__(self) -> str:
        return f"Store({self.spec!r})"

    @property
    def kind(self) -> str:
        """"local" (a folder) or "team" (PostgreSQL catalog, S3 data)."""
        return "team" if self.team is not None else "local"

    @property
    def where(self) -> str:
        """Where the store is, for people: the folder, or the catalog and data path. Never a secret."""
        return self.team.where if self.team is not None else str(self.root)

    @property
    def spec(self) -> str:
        """What reopens this store in another process (`--store`, AFTERFIX_STORE). Never a secret."""
        return self.team.spec if self.team is not None else str(self.root)

    # -- connections --------------------------------------------------------------

    def exists(self) -> bool:
        if self.team is None:
            return self.catalog.exists()
        if not self._seen:
            row = self._pg().execute("SELECT to_regclass('ducklake_metadata') IS NOT NULL").fetchone()
            self._seen = bool(row and row[0])
        return self._seen

    def _attach(self, con: duckdb.DuckDBPyConnection, read_only: bool) -> None:
        """Attaches the lake as `lake` to a connection from _connect."""
        if self.team is not None:
            self._attach_team(con, read_only)
            return
        opts = f"DATA_PATH '{self.data}/', META_JOURNAL_MODE 'WAL', META_BUSY_TIMEOUT {self.busy_timeout_ms}"
        if self.catalog.exists():
            # The data folder always sits beside the catalog and file paths inside are relative
            # to it, so a store that was moved or copied is still the same store.
            opts += ", OVERRIDE_DATA_PATH true"
        if read_only:
            opts += ", READ_ONLY"
        catalog = str(self.catalog).replace("'", "''")
        self.retry(lambda: con.execute(f"ATTACH 'ducklake:sqlite:{catalog}' AS lake ({opts})"), "attach")
        con.execute("USE lake")

    def _attach_team(self, con: duckdb.DuckDBPyConnection, read_only: bool) -> None:
        """Team store: credentials go into DuckDB secrets (temporary, this connection only), so no
        connection string with a password is ever formed and `duckdb_databases()` shows none."""
        team = self.team
        s3 = {"REGION": team.s3.region, "URL_STYLE": team.s3.url_style, "USE_SSL": team.s3.use_ssl,
              **s3_credentials()}
        if team.s3.endpoint:
            s3["ENDPOINT"] = team.s3.endpoint
        pg = {k.upper(): v for k, v in team.libpq().items()}
        pg["DATABASE"] = pg.pop("DBNAME", None)

        def opts(values: dict) -> str:
            return ", ".join(f"{k} {str(v).lower() if isinstance(v, bool) else sql_literal(v)}"
                             for k, v in values.items() if v is not None)

        try:
            con.execute(f"CREATE OR REPLACE SECRET afterfix_s3 (TYPE s3, SCOPE {sql_literal(team.data)}, {opts(s3)})")
            con.execute(f"CREATE OR REPLACE SECRET afterfix_pg (TYPE postgres, {opts(pg)})")
            con.execute(f"CREATE OR REPLACE SECRET afterfix_lake (TYPE ducklake, METADATA_PATH '', "
                        f"DATA_PATH {sql_literal(team.data)}, "
                        "METADATA_PARAMETERS MAP {'TYPE': 'postgres', 'SECRET': 'afterfix_pg'})")
            self.retry(lambda: con.execute(f"ATTACH 'ducklake:afterfix_lake' AS lake{' (READ_ONLY)' if read_only else ''}"),
                        "attach")
        except duckdb.Error as e:
            raise StoreError(f"cannot open the team store ({self.where}): {redact(e, team)}") from None
        con.execute("USE lake")

    def _pg(self):
        """This thread's own PostgreSQL session on the team store's catalog database (psycopg):
        for the write lock, which must outlive DuckDB's transactions, and cheap existence checks."""
        pg = getattr(self._local, "pg", None)
        if pg is not None and not pg.closed:
            return pg
        import psycopg

        try:
            pg = psycopg.connect(**self.team.libpq(), autocommit=True, connect_timeout=10,
                                 application_name="afterfix")
        except psycopg.Error as e:
            raise StoreError(f"cannot reach the team store's catalog {self.team.catalog_url}: "
                             f"{redact(str(e).strip(), self.team)} (credentials come from the URL, "
                             "$PGPASSWORD or ~/.pgpass)") from None
        self._local.pg = pg
        return pg

    def create(self) -> None:
        """Create the store folder, catalog and tables if missing (safe to race)."""
        if self._created:
            return
        with self._lock:
            if self._created:
                return
            self.root.mkdir(parents=True, exist_ok=True)
            if self.data is not None:
                self.data.mkdir(exist_ok=True)
            with self.write_lock():
                con = _connect(self.team is not None)
                try:
                    self._attach(con, read_only=False)
                    self.retry(lambda: self._create_tables(con), "create")
                finally:
                    con.close()
            self._created = True
            self._seen = True

    @staticmethod
    def _create_tables(con: duckdb.DuckDBPyConnection) -> None:
        """The missing tables and the lake's options, in one transaction (one catalog commit)."""
        with transaction(con):
            existing = {r[0] for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = 'lake'").fetchall()}
            for table in schema.TABLES:
                if table not in existing:
                    con.execute(schema.create_table_sql(table, "lake."))
            if "spans" not in existing:  # a new store: every span it will hold goes through the run index
                _run_index.mark_complete(con)
            # Smaller row groups and files keep a long-running writer's compaction
            # (merging a day of small files) within a few hundred MB.
            for option, value in _LAKE_OPTIONS.items():
                con.execute(f"CALL lake.set_option('{option}', '{value}')")

    def _new_connection(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        if read_only and not self.exists():
            raise StoreError(f"no store at {self.where}: ingest something first (afterfix ingest PATH) or pass --store")
        if not read_only:
            self.create()
        con = _connect(self.team is not None)
        try:
            if not read_only:
                spill = str(self.root / ".spill").replace("'", "''")
                con.execute(f"SET memory_limit = '{self.memory_limit}'")
                con.execute(f"SET temp_directory = '{spill}'")
                # Row order inside a commit carries no meaning (queries order by time), and
                # keeping it costs memory and speed on every insert.
                con.execute("SET preserve_insertion_order = false")
                con.execute(f"SET allocator_bulk_deallocation_flush_threshold = '{_ALLOCATOR_FLUSH}'")
            self._attach(con, read_only=read_only)
            from . import views  # late: views.py reads the convention, not the other way round

            views.create(con)
        except Exception:
            con.close()
            raise
        return con

    def hold_catalog(self) -> CatalogHold:
        """Create the store if missing and keep its catalog open until the hold is released.

        For processes that commit continually (see CatalogHold): without it, readers and the
        writer itself now and then wait a whole second on the catalog.
        """
        self.create()
        hold = CatalogHold(self.catalog) if self.team is None else _NoHold()
        hold.start()
        return hold

    def connection(self, *, read_only: bool = True) -> duckdb.DuckDBPyConnection:
        """This thread's connection (one read-only and one read-write per thread, reused)."""
        key = "ro" if read_only else "rw"
        con = getattr(self._local, key, None)
        if con is None:
            con = self._new_connection(read_only)
            setattr(self._local, key, con)
        return con

    def close(self) -> None:
        for key in ("ro", "rw", "pg"):
            con = getattr(self._local, key, None)
            if con is not None:
                con.close()
                setattr(self._local, key, None)

    # -- reading ----------------------------------------------------------------

    # Views computed in Python rather than SQL (the findings), registered by the layer that computes
    # them: {name: function(store) -> DataFrame}. A query that names one gets it, fresh, as a table.
    computed_views: dict = {}

    def query(self, sql: str, params: list | dict | None = None, *, write: bool = False):
        """Run SQL and return a pandas DataFrame. Refuses statements that write unless write=True."""
        if not write:
            check_read_only(sql)
        con = self.connection(read_only=not write)
        for name, build in self.computed_views.items():
            if re.search(rf"\b{name}\b", sql, re.IGNORECASE):
                con.register(name, build(self))
        rel = self.retry(lambda: con.execute(sql, params) if params is not None else con.execute(sql), "query")
        if rel.description is None:
            import pandas as pd

            return pd.DataFrame()
        return rel.df()

    def arrow(self, sql: str, params: list | None = None) -> pa.Table:
        check_read_only(sql)
        con = self.connection(read_only=True)
        return self.retry(lambda: con.execute(sql, params or []).to_arrow_table(), "query")

    def offsets(self) -> dict[str, tuple[str, int]]:
        """The newest committed (fingerprint, position) per input source."""
        if not self.exists():
            return {}
        con = self.connection(read_only=True)
        rows = self.retry(lambda: con.execute(
            "SELECT source, arg_max(fingerprint, committed_at), arg_max(position, committed_at) "
            "FROM lake.ingest_offsets GROUP BY source").fetchall(), "query")
        return {src: (fp, pos) for src, fp, pos in rows}

    # -- writing ----------------------------------------------------------------

    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        """Advisory lock serialising writers: on a local store, those of this machine (a file
        lock); on a team store, those of every machine (a PostgreSQL session lock in the catalog's
        database, taken before DuckDB's transaction begins and released after its COMMIT has
        returned, so the next writer's check sees this one's rows; a killed writer's session ends
        and PostgreSQL releases its lock)."""
        if self.team is not None:
            pg = self._pg()
            pg.execute("SELECT pg_advisory_lock(%s)", (_TEAM_LOCK_KEY,))
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    pg.execute("SELECT pg_advisory_unlock(%s)", (_TEAM_LOCK_KEY,))
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "write.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def append(
        self,
        spans: pa.Table | None = None,
        events: pa.Table | None = None,
        quarantine: pa.Table | None = None,
        offsets: pa.Table | None = None,
        metrics: pa.Table | None = None,
    ) -> AppendResult:
        """Store one batch atomically: all of it or none of it.

        Spans already stored (same trace_id and span_id) are skipped with their events, and so
        are metric points already stored (same series_id and time), so a redelivered batch
        stores nothing twice. Offsets are committed in the same transaction,
        which is what lets a tailer resume exactly where the committed data ends.

        A batch with no duplicate (the usual case) is written as Parquet by pyarrow and handed
        to the lake with `ducklake_add_data_files`: measured here on 50k-span batches, 2.1 µs of
        CPU a span against 4.6-6.6 µs for INSERT INTO the lake (a commit's fixed catalog work,
        tens of milliseconds, is the same either way). Files of a transaction that does not
        commit are deleted; the lake only ever lists files of committed snapshots.
        """
        con = self.connection(read_only=False)
        result = AppendResult()
        files = _DataFiles(self.data)

        def attempt() -> None:
            t0 = time.perf_counter()
            res = AppendResult()
            con.execute("BEGIN TRANSACTION")
            try:
                if spans is not None and spans.num_rows:
                    self._insert_spans(con, spans, events, res, files)
                if metrics is not None and metrics.num_rows:
                    self._insert_metrics(con, metrics, res, files)
                if quarantine is not None and quarantine.num_rows:
                    con.register("afterfix_batch_q", quarantine)
                    con.execute("INSERT INTO lake.quarantine SELECT * FROM afterfix_batch_q")
                    res.quarantined = quarantine.num_rows
                if offsets is not None and offsets.num_rows:
                    con.register("afterfix_batch_o", offsets)
                    con.execute("INSERT INTO lake.ingest_offsets SELECT * FROM afterfix_batch_o")
                # Inside the transaction: outside one, each (un)register is its own transaction
                # on the lake and costs ~11 ms of catalog work (measured), a third of a commit.
                _unregister_batch(con)
                con.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    con.execute("ROLLBACK")
                _unregister_batch(con)
                raise
            res.commit_ms = (time.perf_counter() - t0) * 1000
            result.__dict__.update(res.__dict__)

        try:
            with self.write_lock():
                self.retry(attempt, "append")
        except BaseException:
            files.discard()
            raise
        return result

    def append_ledger(self, table: str, rows: "list[dict] | pa.Table", *, unless: str | None = None,
                      params: list | None = None) -> "int | tuple":
        """Append rows to one ledger (`schema.LEDGERS`) in one transaction: all or none.

        Rows are dicts keyed by column (missing nullable columns are null) or an Arrow table of
        the ledger's schema. Returns the number of rows written.

        `unless` makes the append conditional, for things decided once (an approval): a query
        over `lake.<ledger>` run inside the same transaction under the write lock; when it
        returns a row, nothing is written and that row (a tuple) is returned instead of a count.
        Two writers on one machine racing for the same decision therefore see one winner.
        """
        if table not in schema.LEDGERS:
            raise ValueError(f"{table!r} is not a ledger; ledgers are {', '.join(schema.LEDGERS)}")
        batch = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(
            [{n: row.get(n) for n, *_ in schema.TABLES[table]} for row in rows], schema=schema.arrow_schema(table))
        if not batch.num_rows:
            return 0
        con = self.connection(read_only=False)
        found: list = []

        def attempt() -> None:
            found.clear()
            con.execute("BEGIN TRANSACTION")
            try:
                if unless is not None:
                    row = con.execute(unless, params or []).fetchone()
                    if row is not None:
                        found.append(row)
                        con.execute("ROLLBACK")
                        return
                con.register("afterfix_ledger", batch)
                con.execute(f"INSERT INTO lake.{table} SELECT * FROM afterfix_ledger")
                con.unregister("afterfix_ledger")
                con.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    con.execute("ROLLBACK")
                with contextlib.suppress(Exception):
                    con.unregister("afterfix_ledger")
                raise

        with self.write_lock():
            self.retry(attempt, "append")
        return found[0] if found else batch.num_rows

    @staticmethod
    def _insert_spans(con, spans: pa.Table, events: pa.Table | None, res: AppendResult, files: "_DataFiles") -> None:
        con.register("afterfix_batch_s", spans)
        lo, hi = con.execute("SELECT min(start_time), max(start_time) FROM afterfix_batch_s").fetchone()
        params = {"lo": lo, "hi": hi}
        # Counted first: the keys themselves are needed only when some are duplicates (rare),
        # and fetching them costs ~0.15 µs a span (measured on 82k-span batches).
        res.spans_new = con.execute(f"SELECT count(*) FROM ({_NEW_KEYS})", params).fetchone()[0]
        res.spans_duplicate = spans.num_rows - res.spans_new
        if res.spans_new:
            # where in time each run of the batch is (run_index.py); rows only widen a run's range,
            # so indexing a batch's duplicates too is harmless
            index = _run_index.rows_for_append(spans, events)
            if index is not None:
                files.insert(con, "run_index", index, "afterfix_batch_r")
        if res.spans_duplicate == 0:
            files.insert(con, "spans", spans, "afterfix_batch_s")
            if events is not None and events.num_rows:
                files.insert(con, "events", events, "afterfix_batch_e")
                res.events = events.num_rows
            return
        if res.spans_new:
            con.register("afterfix_new_keys", con.execute(_NEW_KEYS, params).to_arrow_table())
            con.execute(
                """
                INSERT INTO lake.spans
                SELECT * EXCLUDE (rn) FROM (
                    SELECT b.*, row_number() OVER (PARTITION BY b.trace_id, b.span_id) AS rn
                    FROM afterfix_batch_s b SEMI JOIN afterfix_new_keys k USING (trace_id, span_id))
                WHERE rn = 1
                """
            )
        if events is not None and events.num_rows and res.spans_new:
            con.register("afterfix_batch_e", events)
            n = con.execute(
                """
                INSERT INTO lake.events
                SELECT * EXCLUDE (rn) FROM (
                    SELECT e.*, row_number() OVER (PARTITION BY e.trace_id, e.span_id, e.seq) AS rn
                    FROM afterfix_batch_e e SEMI JOIN afterfix_new_keys k USING (trace_id, span_id))
                WHERE rn = 1
                """
            ).fetchone()
            res.events = n[0] if n else 0

    @staticmethod
    def _insert_metrics(con, metrics: pa.Table, res: AppendResult, files: "_DataFiles") -> None:
        """The batch's points not stored yet (by series_id and time), each once: the spans' anti-join."""
        con.register("afterfix_batch_m", metrics)
        lo, hi = con.execute("SELECT min(time), max(time) FROM afterfix_batch_m").fetchone()
        params = {"lo": lo, "hi": hi}
        res.metrics_new = con.execute(f"SELECT count(*) FROM ({_NEW_POINTS})", params).fetchone()[0]
        res.metrics_duplicate = metrics.num_rows - res.metrics_new
        if res.metrics_duplicate == 0:
            files.insert(con, "metrics", metrics, "afterfix_batch_m")
            return
        if res.metrics_new:
            con.register("afterfix_new_points", con.execute(_NEW_POINTS, params).to_arrow_table())
            con.execute(
                """
                INSERT INTO lake.metrics
                SELECT * EXCLUDE (rn) FROM (
                    SELECT b.*, row_number() OVER (PARTITION BY b.series_id, b.time) AS rn
                    FROM afterfix_batch_m b SEMI JOIN afterfix_new_points k USING (series_id, time))
                WHERE rn = 1
                """
            )

    def compact(self) -> None:
        """Move inlined rows to Parquet, merge small files, drop files no snapshot needs.

        DuckLake keeps small commits inside the catalog (data inlining); flushing them keeps the
        SQLite catalog small and reads fast. Merging 1.5M spans from 300 files took 3-7 s here.
        Afterwards this thread's writer connection is closed (the next write opens a new one in
        ~0.5 s) and the C heap's free pages go back to the system: a writer connection kept
        through a long stream grew the heap in use at each compaction (30 to 54 MB over 3M
        spans, measured), and a fresh one after each compaction kept it at 30-46 MB.
        """
        con = self.connection(read_only=False)
        with self.write_lock():
            con.execute("SET threads = 1")  # one merge stream at a time: peak memory over speed
            con.execute(f"SET memory_limit = '{self.compact_memory_limit}'")
            try:
                for call in (
                    # Only the newest offset per source is ever read (offsets()); the rest would
                    # grow by one row per commit for as long as a stream runs.
                    "DELETE FROM lake.ingest_offsets o WHERE EXISTS (SELECT 1 FROM lake.ingest_offsets n "
                    "WHERE n.source = o.source AND n.committed_at > o.committed_at)",
                    _run_index.backfill,  # a store written before the run index: once
                    "CALL ducklake_flush_inlined_data('lake')",
                    "CALL ducklake_merge_adjacent_files('lake')",
                    _run_index.compact,
                    "CALL ducklake_expire_snapshots('lake', older_than => now() - INTERVAL 1 HOUR)",
                    "CALL ducklake_cleanup_old_files('lake', older_than => now() - INTERVAL 1 HOUR)",
                ):
                    try:
                        self.retry(lambda c=call: c(con) if callable(c) else con.execute(c), "compact")
                    except duckdb.OutOfMemoryException:
                        # Row groups of very large spans need more than the compaction cap:
                        # merge them with the writer's cap rather than never compacting.
                        log.info("afterfix store: %s needed more than %s; retrying with %s", call,
                                 self.compact_memory_limit, self.memory_limit)
                        con.execute(f"SET memory_limit = '{self.memory_limit}'")
                        self.retry(lambda c=call: c(con) if callable(c) else con.execute(c), "compact")
                        con.execute(f"SET memory_limit = '{self.compact_memory_limit}'")
            finally:
                self._local.rw = None
                con.close()
                release_free_heap()

    # -- retries ----------------------------------------------------------------

    def retry(self, fn, what: str):
        """`fn()`, again while another process holds the catalog (backing off), up to `retries` times."""
        delay = 0.01
        for attempt in range(self.retries):
            try:
                return fn()
            except duckdb.Error as e:
                if not is_retryable(e) or attempt == self.retries - 1:
                    if is_retryable(e):
                        raise StoreBusy(f"{self.where}: catalog still locked after {self.retries} tries ({what}): {e}") from e
                    if self.team is not None and isinstance(e, duckdb.HTTPException):
                        # team store: the object storage refused (no bucket, no permission, unreachable)
                        first = redact(str(e), self.team).strip().splitlines()
                        raise StoreError(
                            f"the team store's data path {self.team.data} ({self.team.s3.where()}) refused a {what}: "
                            f"{' '.join(x.strip() for x in first if x.strip())}: check that bucket "
                            f"{self.team.bucket!r} exists and that the S3 credentials ($AWS_ACCESS_KEY_ID, "
                            "~/.aws/credentials) may read and write it") from None
                    raise
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.5)


# The distinct keys of the batch that are not stored yet. Only stored spans in the batch's time
# range can collide: the range filter lets DuckLake skip every Parquet file outside it by its
# min/max statistics.
_NEW_KEYS = """
    SELECT DISTINCT b.trace_id, b.span_id FROM afterfix_batch_s b
    WHERE NOT EXISTS (
        SELECT 1 FROM lake.spans s
        WHERE s.start_time BETWEEN $lo AND $hi AND s.trace_id = b.trace_id AND s.span_id = b.span_id)
"""


# The same for metric points, keyed by (series_id, time).
_NEW_POINTS = """
    SELECT DISTINCT b.series_id, b.time FROM afterfix_batch_m b
    WHERE NOT EXISTS (
        SELECT 1 FROM lake.metrics m
        WHERE m.time BETWEEN $lo AND $hi AND m.series_id = b.series_id AND m.time = b.time)
"""


# Columns of (nearly) a different value each row, where a Parquet dictionary is wasted work,
# and long text whose min/max statistics nothing reads.
_UNIQUE_COLUMNS = {"span_id", "parent_span_id", "start_time", "end_time", "duration_ms", "status_message",
                   "tool_call_id", "decision_id", "action_id", "attributes", "links", "time"}  # fmt: skip
_LONG_TEXT_COLUMNS = {"attributes", "resource_attributes", "links", "status_message"}


# The team store's write lock: one PostgreSQL advisory lock key, per catalog database.
_TEAM_LOCK_KEY = int.from_bytes(b"afterfix", "big") & 0x7FFFFFFFFFFFFFFF


class _NoHold:
    """A team store's catalog is PostgreSQL, which has no last-connection cost to avoid."""

    pid = None

    def start(self) -> bool:
        return True

    def release(self) -> None:
        pass

    def __enter__(self) -> "_NoHold":
        return self

    def __exit__(self, *exc) -> None:
        pass


class _DataFiles:
    """Parquet files one append writes into the lake's data folder and adds to its tables.

    They sit where DuckLake writes its own (DATA/main/TABLE/), so the catalog records them
    relative to the data path and a moved store still finds them. An append adds at most one
    file to each table: it is written once and reused if the transaction is retried;
    `discard()` deletes them all when it never commits.
    """

    def __init__(self, data: Path | None):
        self.data = data  # None: a team store, whose files DuckLake writes to S3 itself
        self._written: dict[str, Path] = {}  # by table

    def insert(self, con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table, view: str) -> None:
        """All of `rows` into `table`: as a file, unless DuckLake would keep them in the
        catalog (a few rows; `compact()` flushes those into one file later)."""
        if rows.num_rows <= _INLINED_ROWS or self.data is None:
            con.register(view, rows)
            con.execute(f"INSERT INTO lake.{table} SELECT * FROM {view}")
            return
        path = self._written.get(table)
        if path is None:
            folder = self.data / "main" / table
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"ducklake-{uuid.uuid4()}.parquet"
            self._written[table] = path  # before writing: a half-written file is discarded too
            # snappy, as DuckLake writes its own files (compaction too): measured on 16.5k spans,
            # 1.4 µs of CPU a span against 2.7 for zstd, for files twice as large (84 vs 42 bytes a
            # span). Dictionaries only for columns that repeat, and no min/max statistics for long
            # text that no query prunes on: 0.84 -> 0.55 µs a span on 82k spans, 83 -> 75 bytes.
            names = rows.schema.names
            pq.write_table(rows, path, compression="snappy", row_group_size=_ROW_GROUP_ROWS,
                           use_dictionary=[c for c in names if c not in _UNIQUE_COLUMNS],
                           write_statistics=[c for c in names if c not in _LONG_TEXT_COLUMNS])  # fmt: skip
        quoted = str(path).replace("'", "''")
        con.execute(f"CALL ducklake_add_data_files('lake', '{table}', '{quoted}')")

    def discard(self) -> None:
        for path in self._written.values():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._written.clear()


def release_free_heap() -> bool:
    """Give the C heap's free pages back to the system (glibc's malloc_trim); False elsewhere.

    Freed memory of the C heap stays resident until the top of a heap is free, so a long-running
    writer whose allocations interleave (DuckDB's catalog, SQLite, request bodies) keeps pages it
    no longer uses.
    """
    # The C library this process already runs on: no search for it (ctypes.util.find_library
    # starts ldconfig, ~30 ms), and nothing at import.
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only
    if trim is None:
        return False
    trim(0)
    return True


_BATCH_VIEWS = ("afterfix_batch_s", "afterfix_batch_e", "afterfix_batch_r", "afterfix_batch_q", "afterfix_batch_o", "afterfix_new_keys",
                "afterfix_batch_m", "afterfix_new_points")


def _unregister_batch(con: duckdb.DuckDBPyConnection) -> None:
    for name in _BATCH_VIEWS:
        with contextlib.suppress(Exception):
            con.unregister(name)


def check_read_only(sql: str) -> None:
    """Raise ReadOnlyQuery if any statement in `sql` would change something."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error:
        return  # let execution report the syntax error with DuckDB's own message
    for st in statements:
        kind = st.type.name
        if kind not in _READ_TYPES:
            raise ReadOnlyQuery(
                f"{kind} statements change the store and queries are read-only by default: "
                "use `%%sql --write` or `afterfix query --write` if you mean it"
            )
