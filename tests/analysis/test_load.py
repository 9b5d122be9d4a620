"""analysis._load: ids reach the SQL as data whatever they hold (quotes, SQL, escapes, non-ASCII)."""

from __future__ import annotations

import pytest

import afterfix
from afterfix import sdk
from afterfix.analysis import _load
from afterfix.analysis.timeline import incident_timeline
from afterfix.analysis.tree import run_tree
from afterfix.ingest.files import ingest_paths
from afterfix.sdk import Option
from afterfix.store import Store

ODD_RUN = "run-o'brien \"☃\" '); DROP TABLE spans; --"
ODD_INCIDENT = "INC-\\x27 ' OR '1'='1"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("odd")
    provider = sdk.setup("odd-agent", file=folder / "odd.jsonl", id_generator=sdk.SeededIdGenerator(3))
    rec = sdk.Recorder(provider, agent_name="odd-agent", seed=3)
    with rec.run(run_id=ODD_RUN, incident_id=ODD_INCIDENT):
        rec.decision("which?", [Option("a", "one", score=0.9), Option("b", "other", reason="worse")], "a", reason="better")
    with rec.run(run_id="run-plain"):
        with rec.tool_call("noop"):
            pass
    provider.shutdown()
    s = Store(folder / "store")
    s.create()
    ingest_paths(s, [folder / "odd.jsonl"])
    yield s
    s.close()


def test_ids_with_quotes_and_sql_are_found_as_they_are(store):
    tree = run_tree(store, ODD_RUN)
    assert tree.run_id == ODD_RUN and tree.incident_id == ODD_INCIDENT
    (decision,) = tree.nodes("decision")
    assert [o.details["option_id"] for o in decision.children if o.kind == "option"] == ["a", "b"]
    assert incident_timeline(store, ODD_INCIDENT).run_ids == [ODD_RUN]
    assert store.query("SELECT count(*) AS n FROM spans")["n"][0] == 4


@pytest.mark.parametrize("ident", ["run-o'brien", "' OR '1'='1", "run-\ud800", "", "run-plain'--"])
def test_an_id_the_store_does_not_hold_is_not_found(store, ident):
    with pytest.raises(afterfix.NotFound, match="list the run ids with"):
        run_tree(store, ident)
    with pytest.raises(afterfix.NotFound, match="list the incident ids with"):
        incident_timeline(store, ident)


def test_literals_are_only_base64_inside_their_quotes():
    literal = _load._literal(ODD_RUN)
    inner = literal.removeprefix("decode(from_base64('").removesuffix("'))")
    assert set(inner) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
