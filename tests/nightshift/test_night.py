"""Whole nights: the same seed gives the same traces (apart from ids and times), and a full
night holds every scenario, about twenty incidents and at least 5,000 spans."""

from __future__ import annotations

import json

import pytest

from afterfix.nightshift import scenarios as sc
from afterfix.nightshift.night import SimTime, content, run_night
from afterfix.nightshift.clock import SimClock
from afterfix.nightshift.policy import POLICIES
from afterfix.review.replay import replay_window
from afterfix.store import Store

SMALL = ["hpa_starvation", "feature_flag", "noise"]  # noise: read-only incidents and many sweeps


@pytest.fixture(scope="module")
def small_nights(tmp_path_factory):
    root = tmp_path_factory.mktemp("nights")
    out = []
    # The third night also takes the other way in: an OTLP/JSON file, ingested at the end.
    for i, (seed, transport) in enumerate(((5, "otlp"), (5, "otlp"), (6, "file"))):
        store = Store(root / f"store{i}")
        result = run_night(store, workdir=root / f"demo{i}", seed=seed, scenarios=SMALL, until=sc.at(80),
                           transport=transport)
        out.append((result, content(store, result.night)))
        store.close()
    return out


def test_same_seed_same_traces(small_nights):
    (a, ta), (b, tb), _ = small_nights
    assert a.night != b.night  # different ids ...
    assert len(ta) == len(tb) > 500
    assert ta == tb  # ... same content
    assert [i.scenario for i in a.incidents] == [i.scenario for i in b.incidents]


def test_another_seed_gives_another_night(small_nights):
    (a, ta), _, (c, tc) = small_nights
    assert ta != tc and len(tc) > 500
    assert c.counts["incidents"] == len(c.incidents) and c.counts["decisions"] >= len(c.incidents)
    assert (c.kubeconfig.parent / "inbox" / f"night-{c.night}.jsonl").exists()
    assert {i.scenario for i in a.incidents} == {i.scenario for i in c.incidents} == {"hpa_starvation", "feature_flag",
                                                                                       "noise"}


def test_span_times_follow_the_simulated_clock():
    clock = SimClock(sc.NIGHT_START)
    t = SimTime(clock)
    first, second = t(), t()
    assert sc.NIGHT_START <= first < second < sc.NIGHT_START + 5
    clock.advance(600)
    assert t() >= sc.NIGHT_START + 600


@pytest.mark.slow
def test_full_night(demo_played):
    store, result = demo_played  # the session's demo night, played by the same run_night
    c = result.counts
    assert c["spans"] >= 5000
    assert 15 <= c["incidents"] <= 25 and c["incidents"] == len(result.incidents)
    assert {i.scenario for i in result.incidents} == set(sc.SCENARIOS)
    views = store.query("""SELECT (SELECT count(*) FROM incidents) AS incidents, (SELECT count(*) FROM runs) AS runs,
                                  (SELECT count(*) FROM decisions) AS decisions, (SELECT count(*) FROM actions) AS actions,
                                  (SELECT count(DISTINCT decision_id) FROM options) AS decided,
                                  (SELECT count(*) FROM orphan_spans) AS orphans""").iloc[0]
    assert views["incidents"] == c["incidents"] and views["runs"] == c["runs"]
    assert views["decisions"] == views["decided"] == c["decisions"] >= c["incidents"]
    assert views["actions"] == c["actions"] and c["changes"] >= 7
    assert views["orphans"] == 0
    assert result.state_file.exists() and result.kubeconfig.exists()
    # The replay contract over a whole night: every decision comes back from its recorded inputs, through
    # its policy, or (the LLM agent's) through the scripted model it was made by.
    for policy, inputs, selected in store.query(
            "SELECT policy, inputs, selected_option FROM decisions WHERE policy IS NOT NULL").itertuples(index=False):
        assert (POLICIES[policy](json.loads(inputs)).selected or "") == selected
    replays = replay_window(store, endpoint="scripted")
    assert len(replays) == views["decisions"] and not [r.decision_id for r in replays if r.first.error or r.diverged]
    span = store.query("SELECT min(start_time) AS first, max(end_time) AS last FROM spans").iloc[0]
    assert span["first"].hour == 22 and span["last"].hour in (6, 7)


def test_unknown_transport_is_refused(tmp_path):
    with pytest.raises(ValueError, match="use 'otlp' or 'file'"):
        run_night(tmp_path / "store", workdir=tmp_path / "demo", transport="carrier-pigeon")


def test_noise_incidents_are_read_only_investigations(small_nights):
    (a, _), _, _ = small_nights
    noise = [i for i in a.incidents if i.scenario == "noise"]
    assert noise
    for inc in noise:
        [out] = inc.outcomes
        assert out.choice.selected == sc.NOISE.expect["selected"] and out.action_status is None
        assert set(out.tool_calls) <= {"prometheus_query", "kubectl_get", "kubectl_events"}
        assert len(out.tool_calls) >= 8
