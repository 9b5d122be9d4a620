"""Where a store lives: a local folder, or a team store (PostgreSQL catalog + S3-compatible data).

`--store` and `AFTERFIX_STORE` take either:

- a folder: the local store (SQLite catalog and Parquet files inside it);
- a `postgres://` (or `postgresql://`) URL with the data path as its `data` parameter,
  ``postgres://afterfix@pg.internal:5432/afterfix?data=s3://afterfix-traces/prod/``;
- a YAML file naming both (and, if needed, the S3 endpoint and this machine's working folder)::

      catalog: postgres://afterfix@pg.internal:5432/afterfix
      data: s3://afterfix-traces/prod/
      s3:
        endpoint: http://minio.internal:9000   # default: $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, else AWS
        region: eu-west-1                      # default: $AWS_REGION, $AWS_DEFAULT_REGION, ~/.aws/config, us-east-1
        url_style: path                        # default: path with a custom endpoint, else vhost
      local: /var/lib/afterfix                 # spool and locks of this machine (default: ~/.cache/afterfix/team/...)

Credentials never appear in the store's description (`where`) nor in the text that reopens it
(`spec`). PostgreSQL's come the way libpq looks for them (a password in the URL, else
$PGPASSWORD, $PGPASSFILE or ~/.pgpass; $PGUSER, $PGHOST... fill what the URL leaves out).
S3's come from $AWS_ACCESS_KEY_ID / $AWS_SECRET_ACCESS_KEY / $AWS_SESSION_TOKEN, else the shared
credentials file ($AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, profile $AWS_PROFILE or
default).
"""

from __future__ import annotations

import configparser
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from ._exceptions import StoreError

TEAM_SCHEMES = ("postgres://", "postgresql://")
_CONFIG_KEYS = {"catalog", "data", "s3", "local", "name"}
_S3_KEYS = {"endpoint", "region", "url_style", "use_ssl"}


@dataclass(frozen=True)
class S3Settings:
    endpoint: str | None = None  # host:port, as DuckDB's ENDPOINT takes it
    use_ssl: bool = True
    region: str = "us-east-1"
    url_style: str = "vhost"

    def where(self) -> str:
        return f"{'https' if self.use_ssl else 'http'}://{self.endpoint}" if self.endpoint else "AWS S3"


@dataclass(frozen=True)
class TeamLocation:
    """A team store: its catalog in PostgreSQL, its data under an S3 prefix."""

    host: str | None
    port: int | None
    database: str | None
    user: str | None
    data: str  # s3://bucket/prefix/ (always ends with a slash)
    s3: S3Settings
    local: Path  # this machine's working folder (spool, locks, spill)
    spec: str  # reopens the same store; never holds a password
    name: str | None = None
    password: str | None = field(default=None, repr=False)

    kind = "team"

    @property
    def catalog_url(self) -> str:
        """The catalog as a URL without its password."""
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"postgres://{user}{self.host or ''}{port}/{self.database or ''}"

    @property
    def where(self) -> str:
        label = f"{self.name}: " if self.name else ""
        return f"{label}catalog {self.catalog_url}, data {self.data} ({self.s3.where()})"

    @property
    def bucket(self) -> str:
        return self.data[len("s3://"):].split("/", 1)[0]

    def libpq(self) -> dict[str, str]:
        """Connection parameters for libpq (psycopg): what the location names; libpq's own
        environment variables and password file fill the rest."""
        params = {"host": self.host, "port": str(self.port) if self.port else None, "dbname": self.database,
                  "user": self.user, "password": self.password}
        return {k: v for k, v in params.items() if v}


def is_team_spec(spec: str | os.PathLike) -> bool:
    text = str(spec)
    if text.startswith(TEAM_SCHEMES):
        return True
    path = Path(text).expanduser()
    return path.suffix in (".yaml", ".yml") and path.is_file()


def team_location(spec: str | os.PathLike) -> TeamLocation:
    """Parse a team store's URL or config file; StoreError naming the place and the fix when it is wrong."""
    text = str(spec)
    if text.startswith(TEAM_SCHEMES):
        return _from_url(text, data=None, s3={}, local=None, name=None, where="the store URL", spec=None)
    path = Path(text).expanduser().resolve()
    try:
        import yaml

        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise StoreError(f"{path}: cannot read the team store's configuration: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise StoreError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', None) or e}): "
                         "a team store's file is a mapping with `catalog` and `data`") from e
    if not isinstance(doc, dict):
        raise StoreError(f"{path}: a team store's file is a mapping with `catalog: postgres://...` and `data: s3://...`")
    unknown = sorted(set(doc) - _CONFIG_KEYS)
    if unknown:
        raise StoreError(f"{path}: unknown key {unknown[0]!r}; a team store's file has {', '.join(sorted(_CONFIG_KEYS))}")
    for key in ("catalog", "data"):
        if not isinstance(doc.get(key), str) or not doc[key].strip():
            example = "postgres://USER@HOST:5432/DATABASE" if key == "catalog" else "s3://BUCKET/PREFIX/"
            raise StoreError(f"{path}: `{key}` is missing or not text: set `{key}: {example}`")
    s3 = doc.get("s3") or {}
    if not isinstance(s3, dict) or set(s3) - _S3_KEYS:
        bad = sorted(set(s3) - _S3_KEYS) if isinstance(s3, dict) else ["(not a mapping)"]
        raise StoreError(f"{path}: s3: unknown key {bad[0]!r}; it takes {', '.join(sorted(_S3_KEYS))}")
    if not doc["catalog"].startswith(TEAM_SCHEMES):
        raise StoreError(f"{path}: `catalog` must be a postgres:// URL, not {_redact(doc['catalog'])!r}")
    local = Path(str(doc["local"])).expanduser() if doc.get("local") else None
    return _from_url(doc["catalog"], data=doc["data"], s3=s3, local=local, name=doc.get("name"),
                     where=f"{path}: catalog", spec=str(path))


def _from_url(url: str, *, data: str | None, s3: dict, local: Path | None, name: str | None, where: str,
              spec: str | None) -> TeamLocation:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if "data" in query:
        if data is not None:
            raise StoreError(f"{where}: the data path is given twice (the URL's `data` and the file's `data`): keep one")
        data = query.pop("data")
    if query:
        raise StoreError(f"{where}: unsupported URL parameter {sorted(query)[0]!r}: the URL takes only `data=s3://...`; "
                         "other libpq settings go in PG* environment variables")
    data = data or os.environ.get("AFTERFIX_STORE_DATA")
    if not data:
        raise StoreError(f"{where}: no data path: add `?data=s3://BUCKET/PREFIX/` to the URL (or `data:` to the file)")
    if not data.startswith("s3://") or len(data) <= len("s3://") or data[len("s3://"):].startswith("/"):
        raise StoreError(f"{where}: the data path must be s3://BUCKET/PREFIX/, not {data!r}")
    data = data if data.endswith("/") else data + "/"
    try:
        port = parts.port
    except ValueError as e:
        raise StoreError(f"{where}: {e}: the port is a number, as in postgres://USER@HOST:5432/DATABASE") from e
    database = unquote(parts.path.lstrip("/")) or None
    settings = _s3_settings(s3, where)
    public = f"postgres://{parts.username + '@' if parts.username else ''}{parts.hostname or ''}" \
             f"{':' + str(port) if port else ''}/{database or ''}?data={data}"
    if local is None:
        digest = hashlib.sha256(f"{parts.hostname}:{port}/{database}|{data}".encode()).hexdigest()[:12]
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        local = cache / "afterfix" / "team" / digest
    return TeamLocation(
        host=parts.hostname, port=port, database=database, user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None, data=data, s3=settings,
        local=Path(os.environ.get("AFTERFIX_STORE_LOCAL") or local).expanduser().resolve(),
        spec=spec or public, name=name)


def _s3_settings(conf: dict, where: str) -> S3Settings:
    endpoint = conf.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    use_ssl = True
    if endpoint:
        endpoint = str(endpoint)
        m = re.match(r"^(https?)://([^/]+)/?$", endpoint)
        if m:
            use_ssl, endpoint = m.group(1) == "https", m.group(2)
        elif "/" in endpoint:
            raise StoreError(f"{where}: s3 endpoint {endpoint!r} is not a URL such as http://HOST:PORT")
    if "use_ssl" in conf:
        use_ssl = bool(conf["use_ssl"])
    region = conf.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") \
        or _aws_config_value("region") or "us-east-1"
    style = conf.get("url_style") or ("path" if endpoint else "vhost")
    if style not in ("path", "vhost"):
        raise StoreError(f"{where}: s3 url_style is 'path' or 'vhost', not {style!r}")
    return S3Settings(endpoint=endpoint, use_ssl=use_ssl, region=str(region), url_style=style)


def _aws_profile() -> str:
    return os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE") or "default"


def _aws_config_value(key: str) -> str | None:
    path = Path(os.environ.get("AWS_CONFIG_FILE") or Path.home() / ".aws" / "config").expanduser()
    profile = _aws_profile()
    section = profile if profile == "default" else f"profile {profile}"
    return _ini_value(path, section, key)


def _ini_value(path: Path, section: str, key: str) -> str | None:
    if not path.is_file():
        return None
    parser = configparser.RawConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError):
        return None
    return parser.get(section, key, fallback=None)


def s3_credentials() -> dict[str, str]:
    """KEY_ID / SECRET / SESSION_TOKEN for DuckDB's S3 secret, from the environment or the shared
    credentials file; empty when there are none (requests then go unsigned)."""
    key = os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    token = os.environ.get("AWS_SESSION_TOKEN")
    if not (key and secret):
        path = Path(os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or Path.home() / ".aws" / "credentials").expanduser()
        profile = _aws_profile()
        key = _ini_value(path, profile, "aws_access_key_id")
        secret = _ini_value(path, profile, "aws_secret_access_key")
        token = _ini_value(path, profile, "aws_session_token")
    out = {}
    if key and secret:
        out = {"KEY_ID": key, "SECRET": secret}
        if token:
            out["SESSION_TOKEN"] = token
    return out


def _redact(text: str) -> str:
    """A URL or connection string with any password replaced by ***."""
    text = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)
    return re.sub(r"(?i)(password\s*=\s*)('[^']*'|\S+)", r"\1***", text)


def redact(text: str, location: TeamLocation | None = None) -> str:
    """`text` (an error message, say) without the secrets of `location` or any URL password."""
    text = _redact(str(text))
    if location is not None:
        secrets = [location.password, *s3_credentials().values()]
        for secret in secrets:
            if secret and len(secret) >= 4:
                text = text.replace(secret, "***")
    return text


def sql_literal(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"
