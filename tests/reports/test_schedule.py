"""The cron line and the CronJob manifest run a real `afterfix brief` command, and docs/briefing.md
documents every template and its parameters."""

from __future__ import annotations

import ast
import re
import shlex
from urllib.parse import urlsplit
from pathlib import Path

import nbformat
import pytest
import yaml

from afterfix.cli import build_parser
from afterfix.reports.render import TEMPLATES

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES_DIR = ROOT / "templates"
DOC = (ROOT / "docs" / "briefing.md").read_text()
CRON_FIELD = r"(\*|\d+(-\d+)?(,\d+(-\d+)?)*)(/\d+)?"


def _brief_args(argv: list[str]):
    assert argv[0].endswith("afterfix") and argv[1] == "brief", argv
    return build_parser().parse_args(argv[1:])  # the CLI itself accepts every option


def test_the_cronjob_runs_afterfix_brief_on_a_schedule_with_the_store_mounted():
    doc = yaml.safe_load((TEMPLATES_DIR / "briefing-cronjob.yaml").read_text())
    assert doc["apiVersion"] == "batch/v1" and doc["kind"] == "CronJob"
    spec = doc["spec"]
    assert re.fullmatch(r"\s*".join([CRON_FIELD] * 5), spec["schedule"].replace(" ", " ")), spec["schedule"]
    assert spec["schedule"] == "0 7 * * *" and spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    (container,) = pod["containers"]
    assert re.fullmatch(r"[\w./-]+:[\w.-]+", container["image"])
    args = _brief_args(container.get("command", []) + container["args"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    store_mount = next(name for name, path in mounts.items() if path == args.store)
    assert "persistentVolumeClaim" in volumes[store_mount]  # the store outlives the Job
    out_mount = next(name for name, path in mounts.items() if str(args.output) == path)
    assert "persistentVolumeClaim" in volumes[out_mount] and args.keep >= 1
    assert args.since == "24h"


def test_the_cron_line_runs_afterfix_brief_and_keeps_n():
    lines = [ln for ln in (TEMPLATES_DIR / "briefing.cron").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    env = [ln for ln in lines if re.fullmatch(r"[A-Z_]+=\S+", ln)]
    (entry,) = [ln for ln in lines if ln not in env]
    fields = entry.split(None, 5)
    assert all(re.fullmatch(CRON_FIELD, f) for f in fields[:5]), fields[:5]
    command = shlex.split(fields[5])
    brief_at = next(i for i, word in enumerate(command) if word.endswith("afterfix"))
    args = _brief_args(command[brief_at:])
    assert args.keep >= 1 and args.output and args.store
    assert "AFTERFIX_HOME=" in env[0] and "$AFTERFIX_HOME" in fields[5]


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_template_and_each_of_its_parameters_is_documented(name):
    assert f"### `{name}.ipynb`" in DOC, f"docs/briefing.md has no section for templates/{name}.ipynb"
    section = DOC.split(f"### `{name}.ipynb`", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    nb = nbformat.read(str(TEMPLATES_DIR / f"{name}.ipynb"), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    names = [t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets]
    assert names, f"templates/{name}.ipynb: its parameters cell assigns nothing"
    for param in names:
        assert f"| `{param}` |" in section, f"docs/briefing.md: {name}'s parameter {param} is not documented"


def test_every_template_file_is_one_the_docs_and_render_know():
    shipped = {p.stem for p in TEMPLATES_DIR.glob("*.ipynb")}
    assert shipped == set(TEMPLATES)


def test_the_team_cronjob_reads_its_store_config_and_credentials_from_a_secret(tmp_path):
    from afterfix.locations import team_location

    docs = {d["kind"]: d for d in yaml.safe_load_all((TEMPLATES_DIR / "briefing-cronjob-team.yaml").read_text())}
    assert set(docs) == {"Secret", "CronJob"}
    secret, job = docs["Secret"], docs["CronJob"]
    local = yaml.safe_load((TEMPLATES_DIR / "briefing-cronjob.yaml").read_text())
    assert job["spec"]["schedule"] == local["spec"]["schedule"]  # the same briefing, another store
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = _brief_args(container.get("command", []) + container["args"])
    assert args.store is None and args.since == "24h" and args.keep >= 1  # the store comes from AFTERFIX_STORE
    env = {e["name"]: e for e in container["env"]}
    store_file = Path(env["AFTERFIX_STORE"]["value"])
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volume = {v["name"]: v for v in pod["volumes"]}[mounts[str(store_file.parent)]["name"]]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    (item,) = volume["secret"]["items"]  # the config file only, never the passwords as files
    assert item["path"] == store_file.name and item["key"] in secret["stringData"]
    for name in ("PGPASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert "value" not in env[name] and ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["stringData"]
    # the Secret's template holds placeholders, not credentials
    assert all(v == "REPLACE_ME" for k, v in secret["stringData"].items() if k != item["key"])
    config = secret["stringData"][item["key"]]
    parsed = yaml.safe_load(config)
    assert urlsplit(parsed["catalog"]).password is None  # libpq reads PGPASSWORD instead
    assert not {"password", "key_id", "secret", "aws_secret_access_key"} & {k.lower() for k in parsed.get("s3", {})}
    conf_file = tmp_path / "team-store.yaml"
    conf_file.write_text(config)
    team = team_location(conf_file)  # a config the team store itself accepts
    assert team.data.startswith("s3://") and team.port == 5432
