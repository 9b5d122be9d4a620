"""Real services behind a team store on this machine: Debian's PostgreSQL on loopback with its own
data folder, and moto's S3 server. Used by the tests' `team_store` fixtures and the team benchmarks.

    with TeamServices(folder) as services:
        spec = services.new_store("night")   # a config file naming a fresh database and S3 prefix
        Store(spec)

Credentials are handed over the way a deployment hands them: PGPASSWORD and AWS_* in the
environment of this process (and so of every process it starts), never in the store's text.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PG_USER = "afterfix"
S3_BUCKET = "afterfix-team"


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_bin(name: str) -> str | None:
    """Debian keeps PostgreSQL's server programs out of PATH, in /usr/lib/postgresql/VERSION/bin."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[4]))
    return found[-1] if found else shutil.which(name)


def moto_server() -> list[str] | None:
    try:
        import moto.server  # noqa: F401
    except ImportError:
        return None
    return [sys.executable, "-m", "moto.server"]


SKIP_ENV = "AFTERFIX_SKIP_TEAM_STORE"


def skip_reason() -> str | None:
    """Why the team store's tests are skipped: only when the services are missing here and
    $AFTERFIX_SKIP_TEAM_STORE says to skip them; otherwise a missing service fails them."""
    why = missing()
    return f"{why}; skipped because ${SKIP_ENV} is set" if why and os.environ.get(SKIP_ENV) else None


def missing() -> str | None:
    """Why the services cannot run here, or None."""
    if pg_bin("initdb") is None:
        return "PostgreSQL's initdb is not installed (`make test` installs Debian's postgresql)"
    if moto_server() is None:
        return "moto's server is not installed (`make test` installs it: pip install 'moto[server]')"
    return None


class TeamServices:
    """A private PostgreSQL cluster and an S3 server, both on 127.0.0.1, until stopped."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.password = secrets.token_urlsafe(16)
        self.aws = {"AWS_ACCESS_KEY_ID": "afterfix-test", "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(16)}
        self.pg_port = self.s3_port = None
        self._moto: subprocess.Popen | None = None
        self._pgdata = self.folder / "pgdata"
        self._as_postgres = os.geteuid() == 0  # initdb and postgres refuse to run as root
        self._counter = 0

    # -- PostgreSQL ---------------------------------------------------------------

    def _run_pg(self, *args: str) -> None:
        cmd = list(args)
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start_postgres(self) -> None:
        sock = self.folder / "pgsock"
        sock.mkdir(parents=True, exist_ok=True)
        pwfile = self.folder / "pgpass.init"
        pwfile.write_text(self.password + "\n")
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            for path in (self.folder, sock, pwfile):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        self._run_pg(pg_bin("initdb"), "-D", str(self._pgdata), "-U", PG_USER, "-A", "scram-sha-256",
                     f"--pwfile={pwfile}", "--no-sync", "-E", "UTF8")
        pwfile.unlink()
        self.pg_port = _port()
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.pg_port} -c unix_socket_directories={sock} "
                "-c fsync=off -c max_connections=200")
        self._run_pg(pg_bin("pg_ctl"), "-D", str(self._pgdata), "-l", str(self.folder / "postgres.log"),
                     "-o", opts, "-w", "-t", "60", "start")

    def psql(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.pg_port, user=PG_USER, password=self.password,
                             dbname=database, autocommit=True) as con:
            con.execute(sql)

    # -- S3 -----------------------------------------------------------------------

    def start_s3(self) -> None:
        self.s3_port = _port()
        log = open(self.folder / "moto.log", "wb")
        self._moto = subprocess.Popen([*moto_server(), "-H", "127.0.0.1", "-p", str(self.s3_port)],
                                      stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.s3_port}/moto-api/", timeout=1).close()
                break
            except OSError:
                if self._moto.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's S3 server did not start: {(self.folder / 'moto.log').read_text()[-500:]}")
                time.sleep(0.1)
        self.s3().create_bucket(Bucket=S3_BUCKET)

    def s3(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_endpoint, region_name="us-east-1",
                            aws_access_key_id=self.aws["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.aws["AWS_SECRET_ACCESS_KEY"])

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    # -- both -----------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """What a process needs in its environment to reach the stores (credentials only)."""
        return {"PGPASSWORD": self.password, **self.aws, "AWS_REGION": "us-east-1"}

    def start(self) -> "TeamServices":
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self.start_postgres()
            self.start_s3()
        except BaseException:
            self.stop()
            raise
        return self

    def new_store(self, name: str | None = None, *, local: Path | None = None) -> Path:
        """A config file for a fresh team store: its own database and its own S3 prefix."""
        self._counter += 1
        name = name or f"store{self._counter}"
        database = f"lake_{self._counter}_{secrets.token_hex(3)}"
        self.psql(f"CREATE DATABASE {database}")
        conf = self.folder / f"{database}.yaml"
        local = local or self.folder / "local" / database
        conf.write_text(
            f"# team store {name} (test services)\n"
            f"name: {name}\n"
            f"catalog: postgres://{PG_USER}@127.0.0.1:{self.pg_port}/{database}\n"
            f"data: s3://{S3_BUCKET}/{database}/\n"
            f"s3:\n  endpoint: {self.s3_endpoint}\n  region: us-east-1\n  url_style: path\n"
            f"local: {local}\n")
        return conf

    def stop(self) -> None:
        if self._moto is not None:
            self._moto.terminate()
            try:
                self._moto.wait(10)
            except subprocess.TimeoutExpired:
                self._moto.kill()
            self._moto = None
        if (self._pgdata / "postmaster.pid").exists():
            try:
                self._run_pg(pg_bin("pg_ctl"), "-D", str(self._pgdata), "-m", "immediate", "-w", "stop")
            except subprocess.CalledProcessError:
                pass

    def __enter__(self) -> "TeamServices":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
