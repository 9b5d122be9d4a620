"""Each scenario, played in one short night (22:00 -> 02:40, no noise) through the real OTLP
exporter into a store: the decisions, actions and metric behaviour it is meant to produce."""

from __future__ import annotations

import json

import pytest

from afterfix.analysis.diffs import flatten
from afterfix.nightshift import scenarios as sc
from afterfix.nightshift.clock import SimClock
from afterfix.nightshift.cluster import Cluster
from afterfix.nightshift.night import LLM_SCENARIOS, content, run_night
from afterfix.nightshift.policy import POLICIES
from afterfix.nightshift.runbooks import REVISION
from afterfix.store import Store
from afterfix.undo import paths
from afterfix.undo.analysis import measure_phase, parse_analysis


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    root = tmp_path_factory.mktemp("night")
    store = Store(root / "store")
    result = run_night(store, workdir=root / "demo", seed=7, scenarios=sc.INCIDENT_SCENARIOS, until=sc.at(280))
    yield result, store
    store.close()


def incidents_of(result, key):
    return [i for i in result.incidents if i.scenario == key]


def rows(store, sql, params):
    return store.query(sql, params).to_dict("records")


def ids_sql(ids):
    return "(" + ",".join("?" * len(ids)) + ")"


@pytest.mark.parametrize("key", sc.INCIDENT_SCENARIOS)
def test_scenario_decisions_and_actions(night, key):
    result, store = night
    expect = sc.SCENARIOS[key].expect
    incs = incidents_of(result, key)
    assert incs, f"scenario {key} opened no incident: {[(i.scenario, i.service) for i in result.incidents]}"
    ids = [i.incident_id for i in incs]
    decisions = rows(store, f"SELECT * FROM decisions WHERE incident_id IN {ids_sql(ids)} ORDER BY start_time", ids)
    # An LLM agent's decision names no Python policy: the model chose (its replay is in test_llm_agent.py).
    policy = None if key in LLM_SCENARIOS else expect["policy"]
    assert decisions and all((d["policy"] or None) == policy and d["question"] for d in decisions)
    first = decisions[0] if key != "parallel_teams" else None
    if first is not None:
        assert first["selected_option"] == expect["selected"]
        options = rows(store, "SELECT * FROM options WHERE decision_id = ? ORDER BY seq", [first["decision_id"]])
        rejected = {o["option_id"]: o["reason"] for o in options if o["verdict"] == "rejected"}
        assert expect["rejected"] <= set(rejected)
        assert all(r and r.strip() for r in rejected.values())
        assert [o["option_id"] for o in options if o["verdict"] == "selected"] == [expect["selected"]]
        assert all(o["evidence"] and json.loads(o["evidence"]) for o in options)
    actions = rows(store, f"SELECT * FROM actions WHERE incident_id IN {ids_sql(ids)} ORDER BY start_time", ids)
    assert actions, f"scenario {key} recorded no action"
    act = actions[0]
    assert (act["verb"], act["target_kind"], act["status"]) == (expect["verb"], expect["kind"], expect["status"])
    assert act["mutating"] and act["field_manager"] == "afterfix-agent" and act["decision_id"]
    assert act["before"] is not None and act["patch"]
    if act["status"] == "applied":
        assert act["target_uid"] and act["dry_run_checked"]
        assert int(act["resource_version_after"]) > int(act["resource_version_before"])
        assert json.loads(act["before"]) != json.loads(act["after"])
    else:
        assert act["after"] is None and act["resource_version_after"] is None
    if "verified" in expect:
        outcome = rows(store, """SELECT json_extract_string(attributes, '$."afterfix.verification.outcome"') AS o
                                 FROM spans WHERE afterfix_kind = 'verification'
                                 AND json_extract_string(attributes, '$."afterfix.verification.action_id"') = ?""",
                       [act["action_id"]])
        assert [r["o"] for r in outcome] == [expect["verified"]]
    if "incident_status" in expect:
        status = rows(store, "SELECT status FROM incidents WHERE incident_id = ?", [ids[0]])
        assert status[0]["status"] == expect["incident_status"]


def verification(store, incident_id):
    return rows(store, """SELECT json_extract_string(attributes, '$."afterfix.verification.outcome"') AS outcome,
                                 TRY_CAST(json_extract_string(attributes, '$."afterfix.verification.before"') AS DOUBLE) AS before,
                                 TRY_CAST(json_extract_string(attributes, '$."afterfix.verification.after"') AS DOUBLE) AS after
                          FROM spans WHERE afterfix_kind = 'verification' AND incident_id = ?""", [incident_id])


def test_a_latency_recovers_after_max_replicas_raised(night):
    result, store = night
    [inc] = incidents_of(result, "hpa_starvation")
    [v] = verification(store, inc.incident_id)
    assert v["before"] > 300 >= v["after"]
    cluster = Cluster(SimClock(), state_file=result.state_file)
    hpa = cluster.get("autoscaling/v2", "HorizontalPodAutoscaler", "shop", "catalog")
    assert hpa["spec"]["maxReplicas"] == 4


def test_b_the_leak_comes_back_and_the_second_restart_escalates(night):
    result, store = night
    incs = incidents_of(result, "memory_leak")
    assert len(incs) >= 2
    picks = [o.choice.selected for i in incs for o in i.outcomes]
    assert picks[:2] == ["restart_pods", "restart_and_escalate"]
    first, second = verification(store, incs[0].incident_id)[0], verification(store, incs[1].incident_id)[0]
    assert first["after"] < first["before"] / 2 and second["after"] < second["before"] / 2
    statuses = rows(store, f"SELECT incident_id, status FROM incidents WHERE incident_id IN {ids_sql([i.incident_id for i in incs[:2]])}",
                    [i.incident_id for i in incs[:2]])
    assert {r["incident_id"]: r["status"] for r in statuses} == {incs[0].incident_id: "mitigated",
                                                                 incs[1].incident_id: "escalated"}


def _deployment_state(revision, image, pool):
    """What the rollback records: the partial Deployment, as kubectl shows its fields."""
    env = [{"name": "DB_POOL_SIZE", "value": pool}, {"name": "LOG_LEVEL", "value": "info"}]
    return {"metadata": {"annotations": {REVISION: revision}},
            "spec": {"template": {"spec": {"containers": [{"name": "payments", "image": image, "env": env}]}}}}


def test_c_rollback_reverts_the_bundled_env_fix(night):
    result, store = night
    [inc] = incidents_of(result, "bad_rollout")
    [act] = rows(store, "SELECT before, after FROM actions WHERE incident_id = ?", [inc.incident_id])
    before, after = json.loads(act["before"]), json.loads(act["after"])
    expect = sc.BAD_ROLLOUT.expect
    assert before == _deployment_state("2", expect["before"]["image"], "20")
    assert after == _deployment_state("3", expect["after"]["image"], "5")
    [v] = verification(store, inc.incident_id)
    assert v["before"] > 0.2 and v["after"] < 0.05


def _applied(store):
    return rows(store, """SELECT a.*, v.signal, v.outcome, v.after AS measured, v.start_time AS verified_at, a.start_time AS acted_at
                          FROM actions a LEFT JOIN (
                              SELECT json_extract_string(attributes, '$."afterfix.verification.action_id"') AS action_id,
                                     json_extract_string(attributes, '$."afterfix.verification.signal"') AS signal,
                                     json_extract_string(attributes, '$."afterfix.verification.outcome"') AS outcome,
                                     TRY_CAST(json_extract_string(attributes, '$."afterfix.verification.after"') AS DOUBLE) AS after,
                                     start_time
                              FROM spans WHERE afterfix_kind = 'verification') v USING (action_id)
                          WHERE a.status = 'applied' ORDER BY a.start_time""", [])


def test_every_applied_change_records_the_analysis_its_verification_agrees_with(night):
    """The analysis measures the signal the agent verified, from when it verified, and judges the
    value the agent measured as the agent did: a guard never contradicts the agent's own check."""
    result, store = night
    applied = _applied(store)
    assert {a["verb"] for a in applied} == {"patch", "scale", "restart", "rollback"}
    assert {a["outcome"] for a in applied} == {"success", "failure"}
    cluster = Cluster(SimClock(), state_file=result.state_file)
    for act in applied:
        assert act["analysis"], f"{act['verb']} of {act['target_name']} recorded no analysis"
        recorded = json.loads(act["analysis"])
        target = {"kind": act["target_kind"], "namespace": act["target_namespace"], "name": act["target_name"]}
        specs = [parse_analysis(m, where=act["action_id"]).bind(target)
                 for m in (recorded if isinstance(recorded, list) else [recorded])]
        live = cluster.get(act["target_api_version"], act["target_kind"], act["target_namespace"], act["target_name"])
        workload = live["spec"]["scaleTargetRef"]["name"] if act["target_kind"] == "HorizontalPodAutoscaler" \
            else act["target_name"]
        for spec in specs:
            assert spec.provider == "afterfix" and spec.count and spec.interval_s
            assert spec.labels == {"k8s.namespace.name": act["target_namespace"], "k8s.deployment.name": workload}
        first = specs[0]
        assert first.metric == f"afterfix.workload.{act['signal']}"
        phase, why = measure_phase(first, act["measured"])
        assert phase == {"success": "Successful", "failure": "Failed"}[act["outcome"]], (act["action_id"], why)
        waited = (act["verified_at"] - act["acted_at"]).total_seconds()  # simulated time
        assert waited == pytest.approx(first.initial_delay_s, abs=5), act["action_id"]


def test_every_recorded_state_names_fields_of_the_live_object(night):
    """A rollback resolves recorded paths against the live object: each one has to be there."""
    result, store = night
    cluster = Cluster(SimClock(), state_file=result.state_file)
    applied = _applied(store)
    for act in applied:
        live = cluster.get(act["target_api_version"], act["target_kind"], act["target_namespace"], act["target_name"])
        before, after = json.loads(act["before"]), json.loads(act["after"])
        for path, value in [*flatten(after).items(), *((p, v) for p, v in flatten(before).items() if v is not None)]:
            found = paths.get(live, paths.parse(path, live))  # as the rollback engine resolves it
            assert found is not paths.MISSING, f"{act['verb']} {act['target_name']}: {path} is not a field of the object"


def test_d_later_steps_build_on_the_wrong_tool_call(night):
    result, store = night
    [inc] = incidents_of(result, "wrong_tool")
    calls = rows(store, "SELECT tool_name, arguments, result FROM tool_calls WHERE incident_id = ? ORDER BY start_time",
                 [inc.incident_id])
    third = calls[2]
    args = json.loads(third["arguments"])
    assert third["tool_name"] == "kubectl_get" and args["resource"] == "replicasets" and args["namespace"] == "sohp"
    assert json.loads(third["result"])["items"] == []
    [d] = rows(store, "SELECT inputs, selected_option FROM decisions WHERE incident_id = ?", [inc.incident_id])
    assert json.loads(d["inputs"])["hpa"] is None and d["selected_option"] == "scale_deployment"
    [v] = verification(store, inc.incident_id)
    assert v["outcome"] == "failure"


def test_e_three_team_agents_overlap_on_one_incident(night):
    result, store = night
    [inc] = incidents_of(result, "parallel_teams")
    runs = rows(store, "SELECT run_id, agent_name, start_time, end_time FROM runs WHERE incident_id = ?", [inc.incident_id])
    assert len(runs) == 3 and len({r["run_id"] for r in runs}) == 3
    assert {r["agent_name"] for r in runs} == {"checkout-team-agent", "orders-team-agent", "platform-team-agent"}
    assert max(r["start_time"] for r in runs) < min(r["end_time"] for r in runs), "the runs do not overlap"
    picks = rows(store, "SELECT agent_name, selected_option FROM decisions WHERE incident_id = ?", [inc.incident_id])
    expected = sc.PARALLEL_TEAMS.expect["selected_by_team"]
    assert {p["agent_name"].split("-")[0]: p["selected_option"] for p in picks} == expected
    changes = rows(store, "SELECT agent_name FROM actions WHERE incident_id = ? AND status = 'applied'", [inc.incident_id])
    assert [c["agent_name"] for c in changes] == ["platform-team-agent"]


def test_f_migration_waits_for_approval_and_writes_nothing(night):
    result, store = night
    [inc] = incidents_of(result, "db_migration")
    approvals = rows(store, """SELECT json_extract_string(attributes, '$."afterfix.approval.status"') AS s
                               FROM spans WHERE afterfix_kind = 'approval' AND incident_id = ?""", [inc.incident_id])
    # Nobody approves in the demo night: the request expires when the agent stops waiting.
    assert [a["s"] for a in approvals] == ["requested", "expired"]
    ledger = rows(store, "SELECT event, who, action_id FROM approvals WHERE incident_id = ? ORDER BY time",
                  [inc.incident_id])
    assert [r["event"] for r in ledger] == ["requested", "expired"]
    [act] = rows(store, "SELECT action_id, trust_level, status, patch FROM actions WHERE incident_id = ?",
                 [inc.incident_id])
    assert act["trust_level"] == 2 and "CREATE INDEX CONCURRENTLY" in act["patch"]
    assert {r["action_id"] for r in ledger} == {act["action_id"]}
    assert not Cluster(state_file=result.state_file).list("batch/v1", "Job")  # nothing was created


def test_g_restart_makes_the_flag_take_effect(night):
    result, store = night
    [inc] = incidents_of(result, "feature_flag")
    [d] = rows(store, "SELECT inputs FROM decisions WHERE incident_id = ?", [inc.incident_id])
    inputs = json.loads(d["inputs"])
    assert inputs["configmap"]["key"] == "feature.new_checkout" and inputs["configmap"]["value"] == "false"
    assert inputs["pods_started_before_change"] == inputs["pods_total"] == 3
    [v] = verification(store, inc.incident_id)
    assert v["before"] > 0.2 and v["after"] < 0.05


def test_every_recorded_decision_replays(night):
    """The replay contract: POLICIES[policy](inputs) gives the recorded choice, option by option."""
    _, store = night
    decisions = rows(store, "SELECT decision_id, policy, inputs, selected_option, reason FROM decisions "
                            "WHERE policy IS NOT NULL", [])  # the LLM agent's are replayed in test_llm_agent.py
    assert len(decisions) >= 9
    for d in decisions:
        choice = POLICIES[d["policy"]](json.loads(d["inputs"]))
        assert (choice.selected or "") == d["selected_option"] and choice.reason == d["reason"]
        recorded = rows(store, "SELECT option_id, verdict, score, reason FROM options WHERE decision_id = ? ORDER BY seq",
                        [d["decision_id"]])
        assert [(o["option_id"], o["verdict"], o["reason"]) for o in recorded] == \
               [(o.id, o.verdict, o.reason) for o in choice.options]
        assert [o["score"] for o in recorded] == pytest.approx([o.score for o in choice.options])


def test_e_threads_do_not_change_the_night(tmp_path):
    """Three agents in threads, twice with one seed: the same content, whatever the interleaving."""
    plays = []
    for i in range(2):
        store = Store(tmp_path / f"store{i}")
        result = run_night(store, workdir=tmp_path / f"demo{i}", seed=11, scenarios=["parallel_teams"],
                           until=sc.at(260), llm_tokens=False)
        assert [i.scenario for i in result.incidents] == ["parallel_teams"]
        plays.append(content(store, result.night))
        store.close()
    assert plays[0] == plays[1]
    assert sum('"afterfix.span.kind": "decision"' in s for s in plays[0]) == 3
