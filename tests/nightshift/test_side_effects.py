"""The bad rollout's side effect, as the metric history shows it: rolling back payments 2.4.0 also
took DB_POOL_SIZE from 20 back to 5, which holds all evening and fails at the 05:30 renewal
batch, hours after the rollback was verified; checkout, which calls payments, feels part of it.
The same night with the pool kept at 20 shows no rise, and the side-effect finding reports
payments only when the pool was reverted."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from afterfix.analysis import findings
from afterfix.metrics import StoreMetrics
from afterfix.nightshift import scenarios as sc
from afterfix.nightshift.cluster import Cluster
from afterfix.nightshift.metrics_export import METRIC_NAME
from afterfix.nightshift.night import run_night
from afterfix.store import Store

# bad_rollout owns payments; feature_flag brings checkout (which calls payments) into the cluster.
SCENARIOS = ["bad_rollout", "feature_flag"]
BATCH = pd.Timestamp("2026-11-27T05:30")  # the renewal batch: 05:30-06:30, 2.7 times the traffic
PEAK_END = BATCH + pd.Timedelta(hours=1)


def _pool_kept_at_20(original):
    """bad_rollout, but the person's DB_POOL_SIZE fix was already live: the revision the rollback
    returns to holds 20 connections a pod, not 5."""
    def setup(cluster):
        original(cluster)
        cluster.patch("apps/v1", "Deployment", "shop", "payments", {"spec": {"template": {"spec": {"containers": [
            {"name": "payments", "env": [{"name": "DB_POOL_SIZE", "value": "20"}, {"name": "LOG_LEVEL", "value": "info"}]}]}}}},
            patch_type="strategic", field_manager="helm")
    return setup


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    root = tmp_path_factory.mktemp("side-effects")
    out = {}
    for case in ("reverted", "kept"):
        with pytest.MonkeyPatch.context() as mp:
            if case == "kept":
                mp.setattr(sc.BAD_ROLLOUT, "setup", _pool_kept_at_20(sc.BAD_ROLLOUT.setup))
            store = Store(root / f"store-{case}")
            result = run_night(store, workdir=root / case, seed=0, scenarios=SCENARIOS)
        out[case] = (store, result)
    yield out
    for store, _ in out.values():
        store.close()


def history(store: Store, result, workload: str, field: str, start, end) -> pd.Series:
    labels = {"k8s.namespace.name": "shop", "k8s.deployment.name": workload, "afterfix.night": result.night}
    frame = StoreMetrics(store).range(METRIC_NAME.format(field=field), labels, start, end, step=60)
    return frame.set_index("time")["value"]


def rollback(store: Store) -> dict:
    """The agent's rollback of payments, when its verification succeeded, and what it returned to."""
    [row] = store.query("""
        SELECT a.action_id, a.start_time, a.after, v.start_time AS verified_at
        FROM actions a JOIN spans v
          ON json_extract_string(v.attributes, '$."afterfix.verification.action_id"') = a.action_id
        WHERE a.verb = 'rollback' AND a.target_name = 'payments' AND a.status = 'applied'
          AND json_extract_string(v.attributes, '$."afterfix.verification.outcome"') = 'success'
    """).to_dict("records")
    return {**row, "after": json.loads(row["after"])}


@pytest.mark.parametrize("case, pool", [("reverted", "5"), ("kept", "20")])
def test_both_nights_roll_back_the_bad_image(nights, case, pool):
    store, result = nights[case]
    act = rollback(store)
    [container] = act["after"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example/payments:2.3.1"
    assert {e["name"]: e["value"] for e in container["env"]}["DB_POOL_SIZE"] == pool
    deploy = Cluster(state_file=result.state_file).get("apps/v1", "Deployment", "shop", "payments")
    env = {e["name"]: e.get("value") for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DB_POOL_SIZE"] == pool


def test_payments_looks_fine_for_hours_after_the_rollback_then_rises_at_the_peak(nights):
    store, result = nights["reverted"]
    verified = rollback(store)["verified_at"]
    assert BATCH - verified >= pd.Timedelta(hours=1)
    for field, worse in (("latency_p95_ms", 3.0), ("error_rate", 3.0)):
        before = history(store, result, "payments", field, verified - pd.Timedelta(hours=3), verified - pd.Timedelta(hours=1))
        quiet = history(store, result, "payments", field, verified, BATCH)
        peak = history(store, result, "payments", field, BATCH, PEAK_END)
        normal = before.max() * 1.1
        assert len(quiet) >= 300 and (quiet <= normal).all(), (field, quiet.max(), normal)
        assert peak.max() > worse * before.median(), (field, peak.max(), before.median())
        rise = peak[peak > normal].index.min()
        assert BATCH < rise < BATCH + pd.Timedelta(minutes=30), (field, rise)


def test_checkout_which_calls_payments_is_affected_too(nights):
    store, result = nights["reverted"]
    verified = rollback(store)["verified_at"]
    quiet = history(store, result, "checkout", "latency_p95_ms", verified, BATCH)
    peak = history(store, result, "checkout", "latency_p95_ms", BATCH, PEAK_END)
    assert peak.max() > quiet.max() + 25, (peak.max(), quiet.max())
    errors = history(store, result, "checkout", "error_rate", BATCH, PEAK_END)
    assert errors.max() > history(store, result, "checkout", "error_rate", verified, BATCH).max()


def test_with_the_pool_kept_at_20_the_peak_passes_quietly(nights):
    store, result = nights["kept"]
    verified = rollback(store)["verified_at"]
    for workload in ("payments", "checkout"):
        for field in ("latency_p95_ms", "error_rate"):
            quiet = history(store, result, workload, field, verified, BATCH)
            peak = history(store, result, workload, field, BATCH, PEAK_END)
            assert len(peak) == 61 and peak.max() <= quiet.max() * 1.1, (workload, field, peak.max(), quiet.max())
    assert [i.signal for i in result.incidents if i.service == "shop/payments"] == ["error_rate"]  # only the bad image


def test_the_side_effect_finding_reports_payments_after_the_rollback(nights):
    store, _ = nights["reverted"]
    act = rollback(store)
    on_payments = [f for f in findings.find(store, kinds=["side_effect"]) if f.target == "shop/payments"]
    assert {f.details["signal"] for f in on_payments} == {"latency_p95_ms", "error_rate"}
    for f in on_payments:
        assert f.details["action_id"] == act["action_id"] and f.details["changed"] == "shop/payments"
        assert pd.Timestamp(f.details["started"]) >= BATCH and f.details["lag_s"] > 5 * 3600
    kept, _ = nights["kept"]
    assert [f for f in findings.find(kept, kinds=["side_effect"]) if f.target == "shop/payments"] == []
