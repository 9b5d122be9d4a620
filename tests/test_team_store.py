"""The team store: a DuckLake whose catalog is PostgreSQL and whose data is in S3, reached by
configuration alone, with its credentials never shown, and every face working on it unchanged.

The services are real (tests/teamstore.py): Debian's PostgreSQL on loopback and moto's S3 server.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from html import escape as html_escape
from pathlib import Path

import pytest

from afterfix import Store, StoreError
from afterfix.locations import team_location

SCRIPT = Path(sys.executable).parent / "afterfix"


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


# -- where the store is: a URL or a file ------------------------------------------------------


def test_a_url_and_a_file_name_the_same_store(tmp_path):
    url = team_location("postgres://ana@pg.internal:5433/lake?data=s3://traces/prod")
    conf = tmp_path / "team.yaml"
    conf.write_text("catalog: postgres://ana@pg.internal:5433/lake\ndata: s3://traces/prod/\n"
                    "s3:\n  endpoint: http://minio.internal:9000\n")
    file = team_location(conf)
    for loc in (url, file):
        assert (loc.host, loc.port, loc.database, loc.user, loc.data) == ("pg.internal", 5433, "lake", "ana", "s3://traces/prod/")
    assert file.s3.endpoint == "minio.internal:9000" and not file.s3.use_ssl and file.s3.url_style == "path"
    assert url.s3.endpoint is None and url.s3.url_style == "vhost"  # AWS itself
    assert file.spec == str(conf.resolve())
    assert Store(url.spec).team.data == url.data  # the spec reopens the same store


@pytest.mark.parametrize("text, error", [
    ("catalog: postgres://a@h/db\n", r"team\.yaml: `data` is missing.*data: s3://BUCKET/PREFIX/"),
    ("catalog: postgres://a@h/db\ndata: /srv/x\n", r"data path must be s3://BUCKET/PREFIX/"),
    ("catalog: mysql://a@h/db\ndata: s3://b/p\n", r"`catalog` must be a postgres:// URL"),
    ("catalog: postgres://a@h/db\ndata: s3://b/p\nbucket: b\n", r"unknown key 'bucket'"),
    ("catalog: postgres://a@h/db\ndata: s3://b/p\ns3:\n  endpiont: x\n", r"s3: unknown key 'endpiont'"),
    ("catalog: postgres://a@h:port/db\ndata: s3://b/p\n", r"the port is a number"),
    ("catalog: [unclosed\n", r"team\.yaml line \d+: not valid YAML"),
    ("- a list\n", r"a mapping with `catalog"),
])
def test_a_wrong_team_file_names_the_place_and_the_fix(tmp_path, text, error):
    conf = tmp_path / "team.yaml"
    conf.write_text(text)
    with pytest.raises(StoreError, match=error):
        Store(conf)
    result = cli("status", "--store", str(conf))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert re.search(error, result.stderr), result.stderr


def test_a_url_without_a_data_path_or_with_unknown_settings_is_refused():
    with pytest.raises(StoreError, match=r"add `\?data=s3://BUCKET/PREFIX/`"):
        Store("postgres://a@h/db")
    with pytest.raises(StoreError, match="unsupported URL parameter 'sslmode'"):
        Store("postgres://a@h/db?data=s3://b/p&sslmode=require")


# -- on the real services -------------------------------------------------------------------------


def _url(services, conf: Path, password: str | None = None) -> str:
    """The store of `conf` as a URL, optionally with the password in it."""
    loc = team_location(conf)
    who = f"{loc.user}:{password}@" if password else f"{loc.user}@"
    return f"postgres://{who}{loc.host}:{loc.port}/{loc.database}?data={loc.data}"


def test_status_says_which_kind_of_store_and_where(team_store, tmp_path):
    local = cli("status", "--store", str(tmp_path / "here"), "--format", "json")
    assert local.returncode == 2 and "no store at" in local.stderr  # nothing there yet
    Store(tmp_path / "here").create()
    info = json.loads(cli("status", "--store", str(tmp_path / "here"), "--format", "json").stdout)
    assert info["kind"].startswith("local") and info["store"] == str((tmp_path / "here").resolve())
    team = cli("status", "--store", team_store.spec)
    assert team.returncode == 0, team.stderr
    assert re.search(r"^kind:\s+team \(PostgreSQL catalog, data in S3\)$", team.stdout, re.M)
    assert f"catalog {team_store.team.catalog_url}, data {team_store.team.data}" in team.stdout


def test_credentials_are_never_printed(team_services, team_store, monkeypatch, tmp_path):
    password, aws_secret = team_services.password, team_services.aws["AWS_SECRET_ACCESS_KEY"]
    url = _url(team_services, Path(team_store.spec), password)
    monkeypatch.delenv("PGPASSWORD")  # the URL's password is the only one
    store = Store(url)
    shown = [store.where, store.spec, repr(store)]
    assert store.query("SELECT count(*) AS n FROM spans")["n"][0] == 0  # the URL's password works
    shown.append(store.query("SELECT string_agg(coalesce(path, ''), ' ') AS p FROM duckdb_databases()")["p"][0])
    shown.append(store.query("SELECT string_agg(secret_string, ' ') AS s FROM duckdb_secrets()")["s"][0])
    os.environ.pop("PGPASSWORD", None)  # Store(url) handed it on for processes it starts; not for this check
    status = cli("status", "--store", url)
    assert status.returncode == 0, status.stderr
    shown += [status.stdout, status.stderr]
    wrong = cli("status", "--store", _url(team_services, Path(team_store.spec), "not-" + password))
    assert wrong.returncode == 2 and "password authentication failed" in wrong.stderr
    shown += [wrong.stdout, wrong.stderr]
    for text in shown:
        assert password not in text and aws_secret not in text, text


def test_credentials_come_from_the_password_file_and_the_shared_aws_file(team_services, team_store, tmp_path, monkeypatch):
    loc = team_store.team
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"{loc.host}:{loc.port}:*:{loc.user}:{team_services.password}\n")
    pgpass.chmod(0o600)
    aws = tmp_path / "aws-credentials"
    aws.write_text(f"[night]\naws_access_key_id = {team_services.aws['AWS_ACCESS_KEY_ID']}\n"
                   f"aws_secret_access_key = {team_services.aws['AWS_SECRET_ACCESS_KEY']}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "AWS_"))}
    env.update(PGPASSFILE=str(pgpass), AWS_SHARED_CREDENTIALS_FILE=str(aws), AWS_PROFILE="night")
    spans = tmp_path / "one.jsonl"
    spans.write_bytes(_one_span())
    done = subprocess.run([str(SCRIPT), "ingest", "--store", team_store.spec, str(spans)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert team_store.query("SELECT count(*) AS n FROM spans")["n"][0] == 1
    # and without them, the error says where credentials are looked for
    env.pop("PGPASSFILE")
    env["HOME"] = str(tmp_path)  # no ~/.pgpass either
    refused = subprocess.run([str(SCRIPT), "status", "--store", team_store.spec], capture_output=True, text=True,
                             env=env, timeout=300)
    assert refused.returncode == 2 and "$PGPASSWORD or ~/.pgpass" in refused.stderr, refused.stderr


def _one_span() -> bytes:
    span = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "execute_tool kubectl_get", "kind": 1,
            "startTimeUnixNano": "1795747620000000000", "endTimeUnixNano": "1795747620005000000",
            "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "execute_tool"}}]}
    return json.dumps({"resourceSpans": [{"resource": {}, "scopeSpans": [{"spans": [span]}]}]}).encode() + b"\n"


def test_a_missing_bucket_is_named_with_the_fix(team_services, tmp_path):
    conf = team_services.new_store("nobucket")
    conf.write_text(conf.read_text().replace("s3://afterfix-team/", "s3://no-such-bucket/"))
    store = Store(conf)
    with pytest.raises(StoreError) as err:
        store.append(_spans_table())
    assert "no-such-bucket" in str(err.value) and "exists" in str(err.value)
    assert team_services.aws["AWS_SECRET_ACCESS_KEY"] not in str(err.value)


def _spans_table():
    sys.path.insert(0, str(Path(__file__).parent))
    from test_store import make_spans

    return make_spans(20)


# -- every face on a team store: the demo night gives the same answers as on a local store ------------


@pytest.fixture(scope="module")
def team_demo(team_services, demo_store) -> Store:
    """The session's demo night (`demo_store`), migrated into a team store: the same rows, so every
    answer must be the same. (Playing a night into a team store is `afterfix demo --store`; the
    receiver's path into one is tested in test_concurrency.py and ingest/test_durability.py.)"""
    from afterfix.lifecycle import migrate

    store = Store(team_services.new_store("demo"))
    report = migrate(demo_store, store)
    assert all(t.matches and (t.source_rows == t.destination_rows or t.table == "run_index") for t in report.tables), report
    return store


def _answer(*args: str) -> str:
    result = cli(*args)
    assert result.returncode in (0, 1), result.stderr
    return result.stdout


def test_the_commands_answer_the_same_on_a_team_store(team_demo, demo_store):
    window = ["--since", "2026-11-26T21:00", "--until", "2026-11-27T07:30"]
    for args in (["findings", *window, "--format", "json"], ["actions", "--format", "json"],
                 ["approvals", "list"], ["trust"], ["replay", "--all", "--since", "2026-11-26T21:00"]):
        local = _answer(*args, "--store", demo_store.spec)
        team = _answer(*args, "--store", team_demo.spec)
        assert team == local, args
    counts = "SELECT count(*) AS spans, count(DISTINCT run_id) AS runs, count(DISTINCT incident_id) AS incidents FROM spans"
    assert team_demo.query(counts).to_dict("records") == demo_store.query(counts).to_dict("records")
    run = demo_store.query("SELECT run_id FROM runs ORDER BY run_id LIMIT 1")["run_id"][0]
    assert _answer("tree", run, "--store", team_demo.spec) == _answer("tree", run, "--store", demo_store.spec)


def test_the_briefing_template_renders_from_a_team_store(team_demo, tmp_path):
    out = tmp_path / "briefing.html"
    result = cli("brief", "--store", team_demo.spec, "--since", "2026-11-26T21:00", "--until", "2026-11-27T07:30",
                 "-o", str(out), "--notebook", str(tmp_path / "briefing.ipynb"))
    assert result.returncode == 0, result.stderr
    html = out.read_text()
    assert "handoff" in html.lower()
    # the header names the team store as people know it, not this machine's working folder
    assert f"store {html_escape(team_demo.where)}" in html and str(team_demo.root) not in html
    notebook = (tmp_path / "briefing.ipynb").read_text()
    assert team_demo.spec in notebook  # the kernel reopened the store from its spec...
    assert os.environ["PGPASSWORD"] not in notebook + html  # ...and no credential went into either


def test_verdicts_and_approvals_are_recorded_on_a_team_store(team_demo):
    decision = team_demo.query("SELECT decision_id FROM decisions ORDER BY decision_id LIMIT 1")["decision_id"][0]
    done = cli("verdict", decision, "correct", "--note", "checked on the team store", "--who", "ana",
               "--store", team_demo.spec)
    assert done.returncode == 0, done.stderr
    rows = team_demo.query("SELECT who, verdict FROM verdicts WHERE target_id = ?", [decision]).to_dict("records")
    assert rows == [{"who": "ana", "verdict": "correct"}]


def test_the_notebook_extension_takes_a_team_store_and_names_what_is_wrong_with_one(tmp_path):
    from traitlets import TraitError

    from afterfix.config import Afterfix

    conf = tmp_path / "team.yaml"
    conf.write_text("catalog: postgres://a@h/db\ndata: s3://b/p/\n")
    assert Afterfix(store=str(conf)).store == str(conf)
    url = "postgres://a@h/db?data=s3://b/p/"
    assert Afterfix(store=url).store == url
    conf.write_text("catalog: postgres://a@h/db\n")
    with pytest.raises(TraitError, match=r"Afterfix\.store: .*team\.yaml: `data` is missing"):
        Afterfix(store=str(conf))
