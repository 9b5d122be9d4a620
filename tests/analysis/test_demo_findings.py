"""The demo night shows every failure mode afterfix looks for, each on the scenario made for it."""

from __future__ import annotations

from afterfix.analysis.findings import find, finding_kinds


def _scenario(store, incident_id):
    rows = store.query("""SELECT any_value(json_extract_string(attributes, '$."afterfix.scenario"')) AS s
                          FROM spans WHERE incident_id = ?""", [incident_id])
    return rows["s"].iloc[0]


def test_the_demo_night_yields_every_kind_of_finding_where_it_belongs(demo_store):
    found = find(demo_store)
    by_kind = {}
    for f in found:
        by_kind.setdefault(f.kind, []).append(f)
    # every kind registered (trust_violation once afterfix.trust.compliance is imported, as faces do)
    assert set(by_kind) == set(finding_kinds())
    masked = by_kind["masked_issue"][0]
    assert masked.target == "shop/cart" and masked.details["will_recur"] == "yes"
    (bundled,) = by_kind["bundled_rollback"]
    # the rollback records the Deployment's own fields; the title names them as a reviewer reads them
    assert "payments env DB_POOL_SIZE 20 → 5" in bundled.title and "[name=" not in bundled.title
    [undone] = bundled.details["also_undone"]
    assert undone == "spec.template.spec.containers[name=payments].env[name=DB_POOL_SIZE].value"
    assert f"afterfix rollback {bundled.details['action_id']} --fields DB_POOL_SIZE" in bundled.explanation
    assert any(f.target == "shop/payments" and f.severity == "high" for f in by_kind["side_effect"])
    assert _scenario(demo_store, by_kind["duplicate_investigation"][0].incident_id) == "parallel_teams"
    assert any(f.target == "shop/search" for f in by_kind["unverified_action"])
    bad = [f for f in by_kind["first_bad_step"] if f.incident_id]
    assert bad and _scenario(demo_store, bad[0].incident_id) == "wrong_tool"
