"""The packaging promises: conda and pip users get the same dependencies and pins, and the
package exposes the public names it documents."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _norm(req: str) -> str:
    req = req.strip().lower().replace("_", "-")
    return re.sub(r"\s+", "", req)


def _pyproject_requirements() -> set[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = list(data["project"]["dependencies"])
    for extra in data["project"].get("optional-dependencies", {}).values():
        reqs += extra
    return {_norm(r) for r in reqs}


def _environment_requirements() -> set[str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    pip_block, reqs = False, set()
    for line in lines:
        stripped = line.strip()
        if stripped == "- pip:":
            pip_block = True
            continue
        if pip_block and stripped.startswith("- "):
            item = stripped[2:].strip()
            if not item.startswith("-e"):
                reqs.add(_norm(item))
        elif pip_block and stripped and not stripped.startswith("#"):
            pip_block = False
    return reqs


def test_environment_yml_matches_pyproject():
    pyproject, environment = _pyproject_requirements(), _environment_requirements()
    assert pyproject - environment == set(), "in pyproject.toml but not environment.yml"
    assert environment - pyproject == set(), "in environment.yml but not pyproject.toml"


def test_duckdb_and_extension_wheels_pinned_to_one_version():
    pins = {r.split("==")[0]: r.split("==")[1] for r in _pyproject_requirements() if r.startswith("duckdb")}
    assert set(pins) == {"duckdb", "duckdb-extension-ducklake", "duckdb-extension-sqlite"}
    assert len(set(pins.values())) == 1, pins


@pytest.mark.parametrize("bad", ["duckdb==1.5.4", "pandas>=1"])
def test_drift_is_detected(bad, tmp_path, monkeypatch):
    # The comparison above must notice a changed pin: prove it on a doctored copy.
    env = (ROOT / "environment.yml").read_text()
    name = bad.split("=")[0].split(">")[0]
    doctored = re.sub(rf"- {re.escape(name)}[=><][^\n]*", f"- {bad}", env, count=1)
    assert doctored != env
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: doctored if self.name == "environment.yml" else Path.read_bytes(self).decode())
    assert _environment_requirements() != _pyproject_requirements()
