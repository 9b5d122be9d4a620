"""review.incidents (the library) and IncidentBrowser (its face): rows, order, filters, the
latest night's most serious incident, escaping, opening one, and new traces arriving while open."""

from __future__ import annotations

import pytest

from afterfix.review.incidents import COLUMNS, incidents, most_serious, store_token
from afterfix.widgets.browser import IncidentBrowser, parse_time
from widgets.conftest import HOSTILE, Traces, assert_escaped


@pytest.fixture
def three(tmp_path, store):
    t = Traces(tmp_path / "a", night="n1")
    t.incident("INC-low", severity="low", service="shop/cart", status="resolved")
    t.incident("INC-crit", severity="critical", service="platform/auth", status="escalated", trust_level=2)
    t.incident("INC-high", severity="high", service="shop/search", status="open", verified=False, decisions=2)
    return t.ingest(store)


def test_one_row_per_incident_most_serious_first(three):
    rows = incidents(three)
    assert list(rows.columns) == COLUMNS
    assert list(rows["incident_id"]) == ["INC-crit", "INC-high", "INC-low"]
    high = rows.set_index("incident_id").loc["INC-high"]
    assert (high["changes"], high["decisions"], high["namespace"], high["status"]) == (2, 2, "shop", "open")
    assert high["trust_levels"] == "3" and high["agents"] == "agent-x" and high["night"] == "n1"
    assert "unverified_action" in high["finding_kinds"].split(",") and high["findings"] >= 1
    assert not high["rolled_back"] and high["verdicts"] == 0


@pytest.mark.parametrize(("filters", "expected"), [
    ({"namespace": "platform"}, ["INC-crit"]),
    ({"namespace": "shop"}, ["INC-high", "INC-low"]),
    ({"trust_level": 2}, ["INC-crit"]),
    ({"trust_level": "3"}, ["INC-high", "INC-low"]),
    ({"status": "open"}, ["INC-high"]),
    ({"finding": "unverified_action"}, ["INC-high"]),
    ({"since": parse_time("2026-11-27 01:05", "since")}, ["INC-crit", "INC-high"]),
    ({"until": parse_time("2026-11-27 01:05", "until")}, ["INC-low"]),
])
def test_filters(three, filters, expected):
    assert list(incidents(three, **filters)["incident_id"]) == expected


def test_bad_filter_values_name_the_fix(three):
    with pytest.raises(ValueError, match="whole number"):
        incidents(three, trust_level="high")
    with pytest.raises(ValueError, match="choose one of .*masked_issue"):
        incidents(three, finding="nope")
    with pytest.raises(ValueError, match="since 'yesterday': write a UTC time"):
        parse_time("yesterday", "since")


def test_most_serious_is_of_the_latest_night(tmp_path, store):
    old = Traces(tmp_path / "a", seed=1, night="n1", start="2026-11-26T01:00")
    old.incident("INC-old-crit", severity="critical")
    old.ingest(store)
    new = Traces(tmp_path / "b", seed=2, night="n2", start="2026-11-27T01:00")
    new.incident("INC-new-med", severity="medium")
    new.incident("INC-new-high", severity="high", decisions=1)
    new.incident("INC-new-high-more", severity="high", decisions=2)  # more changes: more serious
    new.ingest(store)
    assert most_serious(store) == "INC-new-high-more"
    assert most_serious(store, night="n1") == "INC-old-crit"
    assert most_serious(store, night="n9") is None


def test_most_serious_without_nights_takes_the_latest_day(tmp_path, store):
    t = Traces(tmp_path / "a", start="2026-11-25T01:00")
    t.incident("INC-old-crit", severity="critical")
    t.clock.t += 3 * 86400
    t.incident("INC-new-low", severity="low")
    t.incident("INC-new-high", severity="high")
    t.ingest(store)
    assert most_serious(store) == "INC-new-high"


def test_browser_filters_and_escapes(tmp_path, store):
    t = Traces(tmp_path / "a", night="n1")
    t.incident("INC-1", severity="critical", service="shop/cart", title="payments down " + HOSTILE)
    t.incident("INC-2", severity="low", service="platform/auth")
    t.ingest(store)
    b = IncidentBrowser(store, live=False)
    assert b.choice.value == "INC-1"  # the most serious, ready to open
    assert_escaped(b.table_html.value)
    assert "2 of 2 incidents" in b.table_html.value
    b.namespace.value = "platform"
    assert list(b.rows["incident_id"]) == ["INC-2"] and b.choice.value == "INC-2"
    b.namespace.value = "any"
    b.since.value = "not a time"
    assert "since &#x27;not a time&#x27;" in b.message.value
    b.since.value = ""
    assert len(b.rows) == 2
    b.close()


def test_open_shows_a_run_view_of_the_incident(three):
    b = IncidentBrowser(three, live=False)
    b.choice.value = "INC-high"
    b.open_button.click()
    assert b.view is not None and b.view_box.children == (b.view,)
    assert b.view.incident_id == "INC-high" and "Incident INC-high" in b.view.header.value
    b.close()


def test_new_traces_appear_without_re_running_the_cell(tmp_path, three):
    b = IncidentBrowser(three, live=False)
    assert b.poll() is False  # nothing changed: nothing re-read
    token = store_token(three)
    later = Traces(tmp_path / "later", seed=9, night="n1", start="2026-11-27T03:00")
    later.incident("INC-new", severity="critical", service="shop/orders")
    later.ingest(three)
    assert store_token(three) != token
    assert b.poll() is True
    assert "INC-new" in b.table_html.value and "INC-new" in [v for _, v in b.choice.options]
    assert "1 new incident(s): INC-new" in b.message.value
    b.close()


def test_the_poller_refreshes_from_its_thread(tmp_path, three):
    """Live mode: the Poller thread itself picks the new incident up (it sets trait values only)."""
    import time

    b = IncidentBrowser(three, live=True, interval=0.2)
    later = Traces(tmp_path / "later", seed=9, night="n1", start="2026-11-27T03:00")
    later.incident("INC-new", severity="critical", service="shop/orders")
    later.ingest(three)
    deadline = time.monotonic() + 60
    while "INC-new" not in b.table_html.value and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "INC-new" in b.table_html.value, b.poller.error
    b.close()
    assert not b.poller.running


def test_review_opens_the_most_serious_incident(three, tmp_path):
    from afterfix.store import Store
    from afterfix.widgets import RunView, review

    view = review(three, live=False)
    assert isinstance(view, RunView) and view.incident_id == "INC-crit"
    assert review(three, "INC-low", live=False).incident_id == "INC-low"
    empty = Store(tmp_path / "empty")
    empty.create()
    from afterfix._exceptions import NotFound

    with pytest.raises(NotFound, match="no incident in the store"):
        review(empty)


def test_a_failing_finding_detector_does_not_hide_the_incidents(three, monkeypatch):
    import afterfix.analysis.findings as findings

    def broken(store, **kw):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(findings, "find", broken)
    b = IncidentBrowser(three, live=False)
    assert list(b.rows["incident_id"]) == ["INC-crit", "INC-high", "INC-low"]
    assert "findings could not be computed" in b.table_html.value and "ZeroDivisionError" in b.table_html.value
    b.close()
