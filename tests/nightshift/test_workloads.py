"""Workloads that behave: metrics answer to cluster state over simulated hours."""

from __future__ import annotations

import pytest

from afterfix._exceptions import ConfigError
from afterfix.nightshift.clock import SimClock
from afterfix.nightshift.cluster import Cluster

HOUR = 3600.0
BASE_LATENCY = 80.0


def deployment(name="checkout", image="shop/checkout:1.0", replicas=2, memory_limit="512Mi", env_from=None):
    container = {"name": "app", "image": image,
                 "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": memory_limit}}}
    if env_from:
        container["envFrom"] = [{"configMapRef": {"name": env_from}}]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "shop"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}}}}


def hpa(max_replicas, min_replicas=2, target=60):
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "checkout", "namespace": "shop"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout"},
                     "minReplicas": min_replicas, "maxReplicas": max_replicas,
                     "metrics": [{"type": "Resource", "resource": {
                         "name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}}]}}


@pytest.fixture
def cluster():
    c = Cluster(SimClock(), seed=11)
    c.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    return c


def steady(c, **knobs):
    """Flat traffic, so thresholds below hold at any hour of the night."""
    c.workloads.configure("shop", "checkout", diurnal_amplitude=0, noise=0, **knobs)


def metrics(c):
    return c.workloads.metrics("shop", "checkout")


@pytest.mark.parametrize("max_replicas,saturated", [(2, True), (3, True), (20, False)])
def test_hpa_max_decides_saturation(cluster, max_replicas, saturated):
    cluster.create(deployment())
    steady(cluster, base_rps=300, cpu_per_request=5)  # 1500m of demand, 250m per pod
    cluster.create(hpa(max_replicas))
    cluster.tick(HOUR)
    m = metrics(cluster)
    if saturated:
        assert m["replicas"] == max_replicas
        assert m["cpu_utilization"] > 0.9
        assert m["latency_p95_ms"] > 4 * BASE_LATENCY
    else:
        assert 10 <= m["replicas"] <= 20
        assert m["cpu_utilization"] < 0.8
        assert m["latency_p95_ms"] < 1.5 * BASE_LATENCY


def test_raising_hpa_max_recovers(cluster):
    cluster.create(deployment())
    steady(cluster, base_rps=300, cpu_per_request=5)
    cluster.create(hpa(3))
    cluster.tick(HOUR)
    before = metrics(cluster)
    assert before["cpu_utilization"] > 0.9 and before["error_rate"] > 0.1
    cluster.patch("autoscaling/v2", "HorizontalPodAutoscaler", "shop", "checkout", {"spec": {"maxReplicas": 20}})
    cluster.tick(10 * 60)
    after = metrics(cluster)
    assert after["cpu_utilization"] < 0.8
    assert after["latency_p95_ms"] < before["latency_p95_ms"] / 4
    assert after["error_rate"] < 0.01


@pytest.mark.parametrize("leak,limit,hours,restarts", [
    (0, "512Mi", 8, 0),      # no leak: memory flat all night
    (120, "512Mi", 2, 0),    # leaking, not yet at the limit
    (120, "512Mi", 3, 2),    # each of the 2 pods hit 512Mi after ~2.8 h
    (120, "1Gi", 6, 0),      # a larger limit buys time
    (400, "512Mi", 3, 6),    # faster leak: ~0.83 h per cycle, 3 cycles per pod
])
def test_memory_leak_grows_until_oom_restart(cluster, leak, limit, hours, restarts):
    cluster.create(deployment(memory_limit=limit))
    steady(cluster, leak_mb_per_hour=leak)
    samples = []
    for _ in range(int(hours * 4)):
        cluster.tick(HOUR / 4)
        samples.append(metrics(cluster)["memory_mb"])
    m = metrics(cluster)
    assert m["restarts"] == restarts
    pods = cluster.list("v1", "Pod", "shop")
    assert sum(p["status"]["containerStatuses"][0]["restartCount"] for p in pods) == restarts
    limit_mb = 1024 if limit == "1Gi" else 512
    assert max(samples) < limit_mb
    if leak == 0:
        assert set(samples) == {180.0}
    elif restarts == 0:
        assert samples == sorted(samples) and samples[-1] > samples[0]
    else:
        assert any(b < a for a, b in zip(samples, samples[1:], strict=False))  # memory fell back after a restart
        reasons = {e["reason"] for e in cluster.list("v1", "Event", "shop")}
        assert "OOMKilling" in reasons
        terminated = pods[0]["status"]["containerStatuses"][0]["lastState"]["terminated"]
        assert terminated["reason"] == "OOMKilled" and terminated["exitCode"] == 137


@pytest.mark.parametrize("image,bad,errors_high", [
    ("shop/checkout:1.0", {"shop/checkout:1.1"}, False),
    ("shop/checkout:1.1", {"shop/checkout:1.1"}, True),
    ("shop/checkout:1.1", set(), False),
])
def test_bad_image_raises_errors(cluster, image, bad, errors_high):
    cluster.create(deployment(image=image))
    steady(cluster, bad_images=bad)
    cluster.tick(HOUR)
    error_rate = metrics(cluster)["error_rate"]
    assert (error_rate > 0.25) == errors_high
    if not errors_high:
        assert error_rate < 0.01


def test_rolling_back_a_bad_image_clears_errors(cluster):
    cluster.create(deployment())
    steady(cluster, bad_images=["shop/checkout:1.1"])
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "shop/checkout:1.1"}]}}}}
    cluster.patch("apps/v1", "Deployment", "shop", "checkout", patch, patch_type="strategic")
    cluster.tick(HOUR)
    assert metrics(cluster)["error_rate"] > 0.25
    patch["spec"]["template"]["spec"]["containers"][0]["image"] = "shop/checkout:1.0"
    cluster.patch("apps/v1", "Deployment", "shop", "checkout", patch, patch_type="strategic")
    cluster.tick(60)
    assert metrics(cluster)["error_rate"] < 0.01


# Each step: (what happens, expected error rate band). The flag adds 0.2 errors per pod that
# started with it on; changing the ConfigMap alone changes nothing.
FLAG_STEPS = [
    ("flag on in ConfigMap", (0.0, 0.01)),
    ("scale to 4", (0.09, 0.11)),            # the two new pods read the flag, the old two did not
    ("rollout restart", (0.19, 0.21)),        # every pod now started with the flag on
    ("flag off in ConfigMap", (0.19, 0.21)),  # still on in the running pods
    ("rollout restart", (0.0, 0.01)),
]


def test_feature_flag_takes_effect_only_for_pods_started_after_the_change(cluster):
    cluster.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "checkout-flags", "namespace": "shop"},
                    "data": {"feature.new_checkout": "false"}})
    cluster.create(deployment(env_from="checkout-flags"))
    steady(cluster, flag_configmap="checkout-flags", flag_key="feature.new_checkout", flag_error_rate=0.2)
    restarts = 0
    for step, (low, high) in FLAG_STEPS:
        if step.startswith("flag"):
            value = "true" if " on " in step else "false"
            cluster.patch("v1", "ConfigMap", "shop", "checkout-flags", {"data": {"feature.new_checkout": value}})
        elif step == "scale to 4":
            cluster.patch("apps/v1", "Deployment", "shop", "checkout", {"spec": {"replicas": 4}})
        else:
            restarts += 1
            cluster.patch("apps/v1", "Deployment", "shop", "checkout", {"spec": {"template": {"metadata": {
                "annotations": {"kubectl.kubernetes.io/restartedAt": f"2026-11-27T0{restarts}:00:00Z"}}}}})
        cluster.tick(HOUR)
        assert low <= metrics(cluster)["error_rate"] <= high, step


@pytest.mark.parametrize("offset_minutes,factor", [(-30, 1.0), (10, 3.0), (50, 1.0)])
def test_traffic_spike_window(cluster, offset_minutes, factor):
    cluster.create(deployment())
    start = cluster.clock.now() + 3600
    steady(cluster, base_rps=40, spike_start=start, spike_minutes=30, spike_factor=3)
    cluster.tick(3600 + offset_minutes * 60)
    assert metrics(cluster)["rps"] == pytest.approx(40 * factor)


def test_night_traffic_is_deterministic_by_seed_and_follows_the_day():
    def night(seed):
        c = Cluster(SimClock(), seed=seed)
        c.create(dict(deployment(), metadata={"name": "checkout", "namespace": "default"}))
        series = []
        for _ in range(8):
            c.tick(HOUR)
            series.append(round(c.workloads.metrics("default", "checkout")["rps"], 6))
        return series

    a, b, other = night(1), night(1), night(2)
    assert a == b and a != other
    assert min(a) < 0.85 * max(a)  # quieter before dawn than at the start of the night


def test_unknown_knob_is_refused(cluster):
    cluster.create(deployment())
    with pytest.raises(ConfigError, match="leak_mb_per_hr"):
        cluster.workloads.configure("shop", "checkout", leak_mb_per_hr=10)


def test_no_ready_pods_means_errors_and_timeouts(cluster):
    cluster.create(deployment(replicas=0))
    m = metrics(cluster)
    assert (m["replicas"], m["error_rate"], m["latency_p95_ms"]) == (0, 1.0, 10_000.0)


def test_history_keeps_a_sample_per_simulated_minute_across_a_fix(cluster):
    cluster.create(deployment())
    steady(cluster, base_rps=300, cpu_per_request=5)
    cluster.create(hpa(3))
    cluster.tick(HOUR)
    fixed_at = cluster.clock.now()
    cluster.patch("autoscaling/v2", "HorizontalPodAutoscaler", "shop", "checkout", {"spec": {"maxReplicas": 20}})
    cluster.tick(HOUR)
    samples = cluster.workloads.history("shop", "checkout")
    # The first step (at 22:00:15) is sampled, then the first step of every later minute.
    assert len(samples) == 121
    assert [b["time"] - a["time"] for a, b in zip(samples, samples[1:], strict=False)] == [45.0] + [60.0] * 119
    before = [s for s in samples if s["time"] < fixed_at]
    after = [s for s in samples if s["time"] > fixed_at + 600]
    assert max(s["replicas"] for s in before) == 3 and min(s["latency_p95_ms"] for s in before[10:]) > 4 * BASE_LATENCY
    assert max(s["latency_p95_ms"] for s in after) < 1.5 * BASE_LATENCY
    assert cluster.workloads.history("shop", "checkout", since=fixed_at)[0]["time"] >= fixed_at
