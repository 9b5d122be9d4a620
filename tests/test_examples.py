"""The committed example traces: they decode without refusals, hold the story they tell (the
decision, its options, the action), and are exactly what traces/examples/make_examples.py writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from afterfix.ingest.otlp import decode_json_lines, decode_protobuf_file
from afterfix.store import Store

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "traces" / "examples"
SCRIPT = EXAMPLES / "make_examples.py"
FILES = ["hpa-night.jsonl", "hpa-night.pb", "openinference.jsonl", "genai-legacy.jsonl"]
SPANS = {"hpa-night.jsonl": 12, "hpa-night.pb": 12, "openinference.jsonl": 3, "genai-legacy.jsonl": 3}


def decode(name: str):
    path = EXAMPLES / name
    data = path.read_bytes()
    if name.endswith(".pb"):
        decoded, consumed = decode_protobuf_file(data, source=str(path))
        assert consumed == len(data), "the protobuf example ends in a partial frame"
        return decoded
    return decode_json_lines(data, source=str(path))


@pytest.mark.parametrize("name", FILES)
def test_example_decodes_without_refusals(name):
    decoded = decode(name)
    assert [f"{r.location}: {r.reason}" for r in decoded.refused] == []
    assert decoded.spans.num_rows == SPANS[name]


def test_protobuf_example_holds_the_same_spans_as_the_json_one():
    def rows(name):
        table = decode(name).spans.drop_columns(["source", "ingested_at"])
        return sorted(table.to_pylist(), key=lambda r: r["span_id"])

    assert rows("hpa-night.pb") == rows("hpa-night.jsonl")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = Store(tmp_path_factory.mktemp("examples") / "store")
    s.create()
    for name in ("hpa-night.jsonl", "openinference.jsonl", "genai-legacy.jsonl"):
        decoded = decode(name)
        s.append(spans=decoded.spans, events=decoded.events)
    yield s
    s.close()


def one(store, sql, params=None) -> dict:
    rows = store.query(sql, params).to_dict("records")
    assert len(rows) == 1, rows
    return rows[0]


def test_hpa_night_decision(store):
    d = one(store, "SELECT * FROM decisions")
    assert d["decision_id"] == "dec-2026-11-27-0247-1"
    assert d["selected_option"] == "raise-hpa-max"
    assert d["run_id"] == "run-2026-11-27-0247" and d["incident_id"] == "INC-2026-11-27-001"
    assert d["agent_name"] == "night-shift-agent"
    assert d["policy"] == "capacity_vs_fault.v1"
    assert json.loads(d["inputs"])["hpa_max_replicas"] == 4
    assert str(d["start_time"]) == "2026-11-27 02:47:11.050000"


def test_hpa_night_options(store):
    rows = store.query("SELECT option_id, verdict, reason, score, evidence, decision_id FROM options ORDER BY seq")
    assert rows.option_id.tolist() == ["raise-hpa-max", "restart-pods", "rollback-deploy", "scale-deployment"]
    assert rows.verdict.tolist() == ["selected", "rejected", "rejected", "rejected"]
    assert set(rows.decision_id) == {"dec-2026-11-27-0247-1"}
    reasons = dict(zip(rows.option_id, rows.reason))
    assert "no memory growth" in reasons["restart-pods"]
    assert "errors are flat" in reasons["rollback-deploy"] and "latency tracks load" in reasons["rollback-deploy"]
    assert "HPA" in reasons["scale-deployment"] and "scale it back" in reasons["scale-deployment"]
    assert rows.score.tolist() == [0.91, 0.08, 0.12, 0.35]
    assert all(isinstance(json.loads(e), list) and json.loads(e) for e in rows.evidence)


def test_hpa_night_action(store):
    a = one(store, "SELECT * FROM actions")
    assert (a["verb"], a["status"], a["trust_level"], a["mutating"], a["dry_run_checked"], a["failed"]) == \
        ("patch", "applied", 3, True, True, False)
    assert (a["target_kind"], a["target_api_version"], a["target_namespace"], a["target_name"]) == \
        ("HorizontalPodAutoscaler", "autoscaling/v2", "shop", "checkout")
    assert a["target_uid"] == "6f1c2a9e-3b7d-4e58-9a0c-d2e4f6a8b1c3"
    assert json.loads(a["before"])["spec"]["maxReplicas"] == 4
    assert json.loads(a["after"])["spec"]["maxReplicas"] == 10
    assert json.loads(a["patch"]) == {"spec": {"maxReplicas": 10}}
    assert (a["resource_version_before"], a["resource_version_after"]) == ("184467", "184532")
    assert a["decision_id"] == "dec-2026-11-27-0247-1"
    assert a["field_manager"] == "afterfix-agent"
    verify = one(store, "SELECT attributes FROM spans WHERE afterfix_kind = 'verification'")
    attrs = json.loads(verify["attributes"])
    assert attrs["afterfix.verification.action_id"] == a["action_id"]
    assert attrs["afterfix.verification.outcome"] == "success"


def test_hpa_night_run_and_incident(store):
    run = one(store, "SELECT * FROM runs WHERE run_id = 'run-2026-11-27-0247'")
    assert (run["spans"], run["tool_calls"], run["llm_calls"], run["decisions"], run["changes"], run["errors"]) == \
        (12, 5, 1, 1, 1, 0)
    assert (run["input_tokens"], run["output_tokens"]) == (2318, 406)
    assert run["incident_id"] == "INC-2026-11-27-001" and run["status"] == "ok"
    tools = store.query("SELECT tool_name FROM tool_calls WHERE run_id = 'run-2026-11-27-0247' ORDER BY start_time")
    assert tools.tool_name.tolist() == ["get_hpa", "get_metrics", "describe_deployment", "patch_hpa", "get_metrics"]
    inc = one(store, "SELECT * FROM incidents WHERE incident_id = 'INC-2026-11-27-001'")
    assert (inc["status"], inc["severity"], inc["service"]) == ("resolved", "high", "shop/checkout")
    # every span of the run carries the incident, the run span included (it learns it mid-run)
    assert one(store, "SELECT count(*) AS n FROM spans WHERE run_id = 'run-2026-11-27-0247' "
                      "AND incident_id = 'INC-2026-11-27-001'")["n"] == 12


def test_openinference_run_maps_onto_the_columns(store):
    run = one(store, "SELECT * FROM runs WHERE run_id = 'session-2026-11-27-0330'")
    assert (run["agent_name"], run["spans"], run["tool_calls"], run["llm_calls"]) == ("cart-investigator", 3, 1, 1)
    assert (run["input_tokens"], run["output_tokens"]) == (1190, 214)
    tool = one(store, "SELECT * FROM tool_calls WHERE run_id = 'session-2026-11-27-0330'")
    assert (tool["tool_name"], tool["call_id"]) == ("get_pod_events", "call-oi-1")
    assert json.loads(tool["arguments"]) == {"namespace": "shop", "selector": "app=cart"}
    assert "OOMKilled" in tool["result"]
    ops = store.query("SELECT operation FROM spans WHERE run_id = 'session-2026-11-27-0330' ORDER BY start_time")
    assert ops.operation.tolist() == ["invoke_agent", "execute_tool", "chat"]
    llm = one(store, "SELECT model, provider FROM llm_calls WHERE run_id = 'session-2026-11-27-0330'")
    assert llm == {"model": "ops-reasoner-8b", "provider": "vllm"}


def test_genai_legacy_run_maps_onto_the_columns(store):
    run = one(store, "SELECT * FROM runs WHERE run_id = 'conv-2026-11-27-0415'")
    assert (run["agent_name"], run["spans"], run["errors"], run["status"]) == ("disk-watcher", 3, 1, "error")
    llm = one(store, "SELECT model, provider, input_tokens, output_tokens FROM llm_calls "
                     "WHERE run_id = 'conv-2026-11-27-0415'")
    assert llm == {"model": "gpt-4o-mini", "provider": "openai", "input_tokens": 640, "output_tokens": 58}
    tool = one(store, "SELECT tool_name, failed, error FROM tool_calls WHERE run_id = 'conv-2026-11-27-0415'")
    assert tool == {"tool_name": "df", "failed": True, "error": "TimeoutError"}


def test_regenerating_gives_the_committed_files(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (EXAMPLES / name).read_bytes(), (
            f"traces/examples/{name} is not what make_examples.py writes: "
            f"run `.venv/bin/python {SCRIPT.relative_to(ROOT)}` and commit the result")


def test_another_seed_gives_other_ids(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--seed", "7"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "hpa-night.jsonl").read_bytes() != (EXAMPLES / "hpa-night.jsonl").read_bytes()
