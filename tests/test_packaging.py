"""The packaging promises: conda and pip users get the same dependencies and pins, and pip
installs afterfix without a C compiler too (without the compiled OTLP fast path, storing the same
rows)."""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
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
    # the local store's extensions at least; the team store's (postgres, httpfs) pinned alike
    assert {"duckdb", "duckdb-extension-ducklake", "duckdb-extension-sqlite"} <= set(pins), pins
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


# -- pip install without a C compiler ---------------------------------------------------------
#
# setup.py builds the compiled OTLP fast path (afterfix.ingest._otlpjson) when a C compiler works
# and installs without it when not. Each fixture below builds one wheel the way `pip install .`
# does (with build isolation: pip brings the setuptools pyproject.toml asks for), from a copy of
# the checkout's files, so the checkout's own build/ and compiled module play no part.

EXAMPLES = ROOT / "traces" / "examples"
NATIVE_FILE = re.compile(r"afterfix/ingest/_otlpjson\..*(so|pyd)$")
WARNING = "afterfix: WARNING: building the compiled OTLP fast path (afterfix.ingest._otlpjson) failed:"


def _checkout_copy(dest: Path) -> Path:
    """The checkout's files as the working tree has them (tracked, and new ones git does not
    ignore), as the editable install in .venv sees them; build outputs are ignored, so not copied."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout
    for name in names.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    assert (dest / "setup.py").is_file() and not list(dest.rglob("*.so"))
    return dest


def _build_wheel(tmp: Path, **env_changes: str | None):
    """(the built wheel or None, pip's verbose output): `pip wheel` of a checkout copy under `env_changes`."""
    src, out = _checkout_copy(tmp / "src"), tmp / "wheels"
    env = dict(os.environ)
    for k, v in env_changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(out), str(src)],
                          env=env, capture_output=True, text=True, timeout=240)
    wheels = list(out.glob("afterfix-*.whl")) if proc.returncode == 0 else []
    assert len(wheels) <= 1
    return (wheels[0] if wheels else None), proc.stdout + proc.stderr


def _no_compiler(tmp: Path) -> dict:
    """An environment in which setuptools finds no C compiler: nothing on PATH (no gcc, no cc) and
    no $CC. pip and the build backend run as sys.executable, which needs no PATH."""
    empty = tmp / "empty-path"
    empty.mkdir()
    return {"PATH": str(empty), "CC": None, "LDSHARED": None, "AFTERFIX_NO_NATIVE": None}


@pytest.fixture(scope="module")
def pure_wheel(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("no-compiler")
    wheel, log = _build_wheel(tmp, **_no_compiler(tmp))
    assert wheel is not None, f"pip wheel failed without a C compiler:\n{log[-4000:]}"
    return wheel, log


@pytest.fixture(scope="module")
def compiled_wheel(tmp_path_factory):
    wheel, log = _build_wheel(tmp_path_factory.mktemp("compiler"), AFTERFIX_NO_NATIVE=None)
    assert wheel is not None, f"pip wheel failed with the machine's C compiler:\n{log[-4000:]}"
    return wheel, log


def _wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        return z.namelist()


@pytest.mark.slow
def test_wheel_without_a_compiler_has_no_native_module_and_says_why_once(pure_wheel):
    wheel, log = pure_wheel
    names = _wheel_names(wheel)
    assert "afterfix/ingest/otlp.py" in names and "afterfix/ingest/otlp_json.py" in names
    assert not [n for n in names if NATIVE_FILE.search(n)], names
    assert log.count(WARNING) == 1, log[-4000:]
    line = next(x for x in log.splitlines() if WARNING in x)
    assert "No such file or directory" in line and "slower" in line and "gcc and python3-dev" in line, line


@pytest.mark.slow
def test_wheel_with_a_compiler_has_the_native_module(compiled_wheel):
    wheel, log = compiled_wheel
    assert [n for n in _wheel_names(wheel) if NATIVE_FILE.search(n)], _wheel_names(wheel)
    assert WARNING not in log


@pytest.mark.slow
def test_a_required_native_module_fails_the_build_without_a_compiler(tmp_path):
    wheel, log = _build_wheel(tmp_path, **{**_no_compiler(tmp_path), "AFTERFIX_NO_NATIVE": "0"})
    assert wheel is None, "AFTERFIX_NO_NATIVE=0 must fail the build when the compiled module cannot be built"
    assert "No such file or directory" in log and WARNING not in log, log[-4000:]


def _venv_with(wheel: Path, where: Path) -> Path:
    """A fresh venv with `wheel` installed and the dependencies seen from this test's environment.

    `--system-site-packages` would show the base interpreter's packages, not this venv's, so a
    .pth file lists this environment's site-packages as a plain path: its own .pth files (the
    checkout's editable install among them) are not read, and the wheel's afterfix comes first."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    py = where / "bin" / "python"
    purelib = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    ours = [p for p in site.getsitepackages() if Path(p).is_dir()] or [sysconfig.get_paths()["purelib"]]
    (purelib / "zz_test_deps.pth").write_text("".join(f"{p}\n" for p in ours))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "--quiet",
                    str(wheel)], check=True, capture_output=True, text=True, timeout=240)
    return where


def _ingest_and_dump(venv: Path, inputs: list[Path], store: Path) -> tuple[dict, str]:
    """What `afterfix ingest` of `inputs` stored, table by table, read back by that venv's afterfix,
    without the columns that hold the time of ingest; and which decoding path it used."""
    afterfix, py = venv / "bin" / "afterfix", venv / "bin" / "python"
    run = subprocess.run([afterfix, "ingest", "--store", str(store), "--no-progress",
                          *map(str, inputs)], capture_output=True, text=True, timeout=240)
    assert run.returncode == 1, f"expected the bad lines refused (exit 1):\n{run.stdout}\n{run.stderr}"
    dump = {}
    for table, order, drop in (("spans", "trace_id, span_id", "ingested_at"), ("events", "trace_id, span_id, seq", None),
                               ("quarantine", "source, location", "received_at")):
        sql = f"SELECT * {f'EXCLUDE ({drop})' if drop else ''} FROM {table} ORDER BY {order}"
        q = subprocess.run([afterfix, "query", "--store", str(store), "--format", "json", sql],
                           capture_output=True, text=True, timeout=120)
        assert q.returncode == 0, q.stderr
        dump[table] = json.loads(q.stdout)
    path = subprocess.run([py, "-c", "import afterfix, afterfix.ingest.otlp as o; "
                           "print(afterfix.__file__); print(o._native is not None, o.NATIVE_MISSING)"],
                          capture_output=True, text=True, check=True).stdout
    return dump, path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[Path]:
    """Small OTLP files without a span in two of them (which copy a store keeps is not fixed): the
    benchmarks' synthetic agent runs (which the compiled walker reads), examples in OTLP/JSON and
    protobuf, and a file with a line that is not JSON and a span whose id is not hex, to refuse."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import synth

    d = tmp_path_factory.mktemp("inputs")
    files = [synth.write_otlp_file(d / "synth.jsonl", 1000)]
    for name in ("hpa-night.pb", "openinference.jsonl", "genai-legacy.jsonl"):
        (d / name).write_bytes((EXAMPLES / name).read_bytes())
        files.append(d / name)
    span = {"traceId": "0af7651916cd43dd8448eb211c80319c", "name": "checkout", "kind": 2,
            "startTimeUnixNano": "1764212400000000000", "endTimeUnixNano": "1764212400250000000"}
    line = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"scope": {"name": "t"}, "spans": [
        {**span, "spanId": "b7ad6b7169203331"}, {**span, "spanId": "xyz"}]}]}]}
    (d / "bad.jsonl").write_text("{not json\n" + json.dumps(line) + "\n")
    return files + [d / "bad.jsonl"]


@pytest.mark.slow
def test_pure_python_install_ingests_the_same_rows_as_the_compiled_one(pure_wheel, compiled_wheel, inputs, tmp_path):
    got, got_path = _ingest_and_dump(_venv_with(pure_wheel[0], tmp_path / "pure"), inputs, tmp_path / "s1")
    want, want_path = _ingest_and_dump(_venv_with(compiled_wheel[0], tmp_path / "compiled"), inputs, tmp_path / "s2")
    assert str(tmp_path / "pure") in got_path and "False it was not built when afterfix was installed" in got_path, got_path
    assert str(tmp_path / "compiled") in want_path and "True None" in want_path, want_path
    assert len(want["spans"]) > 1000 and want["events"] and len(want["quarantine"]) == 2, {k: len(v) for k, v in want.items()}
    for table in want:
        assert got[table] == want[table], table
