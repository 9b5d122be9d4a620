"""Keeping a store's SQLite catalog open from a child process, so no connection is ever the last to close."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)


# The holder: one idle connection, no transaction (fetchall ends the read), open until stdin closes.
_HOLD_CODE = (
    "import sqlite3, sys\n"
    "con = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "con.execute('SELECT count(*) FROM sqlite_master').fetchall()\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


class CatalogHold:
    """One idle SQLite connection to the catalog, kept open by a child process until `release()`.

    DuckDB's sqlite extension opens a SQLite connection for each transaction and closes it at
    the end. When the closing connection is the only one open on the catalog, SQLite checkpoints
    the whole WAL and deletes it under an exclusive lock, and the next connection rebuilds the
    WAL index; a connection opening meanwhile has to wait, and the extension's SQLite is built
    without usleep(), so each such wait sleeps a whole second (measured under a 5k spans/s
    stream with a reader polling: queries and commits of 1.0-1.1 s several times a minute).
    While one connection stays open none is ever the last: the WAL stays, SQLite checkpoints it
    as usual when it grows, and nobody waits. The connection holds no transaction, so it never
    holds back a checkpoint. It lives in another process because POSIX locks belong to a
    process: a second copy of SQLite in this one would lose its locks whenever the extension
    closes the file. The child ends when released, and when this process dies (its stdin closes).
    """

    def __init__(self, catalog: Path):
        self.catalog = catalog
        self._proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> bool:
        """Open the connection; False (logged, nothing held) when the child could not open it."""
        if self._proc is not None:
            return True
        try:
            proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _HOLD_CODE, str(self.catalog)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as e:
            log.warning("afterfix store: cannot start the process that keeps %s open (%s); "
                        "readers may wait a second now and then", self.catalog, e)
            return False
        if proc.stdout.readline().strip() != b"held":
            err = proc.stderr.read().decode(errors="replace").strip().splitlines()
            proc.kill()
            proc.wait()
            log.warning("afterfix store: could not keep %s open (%s); readers may wait a second now and then",
                        self.catalog, err[-1] if err else f"exit status {proc.returncode}")
            return False
        self._proc = proc
        return True

    def release(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.stdin.close()  # the child reads EOF, closes its connection and ends
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()

    def __enter__(self) -> "CatalogHold":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
