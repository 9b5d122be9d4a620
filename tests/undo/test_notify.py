"""Alerts: a webhook POST with the alert as JSON, delivered or not, and always an `alerts` row that
says which; nothing a webhook does takes the guard down."""

from __future__ import annotations

import json

import pytest

from afterfix._exceptions import ConfigError
from afterfix.undo import notify
from afterfix.undo.notify import Alert, Notifier, post_json, webhook_from_env
from webhooks import Hook


def alert(**kw) -> Alert:
    base = dict(severity="warning", title="rolled back Deployment shop/payments",
                message="analysis latency-p95 failed", action_id="act-1", analysis_id="an-1",
                body={"action": {"action_id": "act-1", "verb": "scale"},
                      "target": {"kind": "Deployment", "namespace": "shop", "name": "payments"},
                      "analysis": {"phase": "Failed"},
                      "measurements": [{"metric": "latency-p95", "value": 900.0, "phase": "Failed"}],
                      "done": {"what": "rolled_back", "message": "restored spec.replicas 3"}})
    base.update(kw)
    return Alert(**base)


def alerts(store):
    return store.query("SELECT * FROM alerts ORDER BY time").to_dict("records")


def test_an_alert_is_posted_as_json_and_recorded(store, hook):
    sent = alert()
    [row] = Notifier(store, hook.url).send([sent])
    [(path, headers, raw)] = hook.received
    assert path == "/services/T0/SECRET-TOKEN"
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    body = json.loads(raw)
    assert body == {"alert_id": sent.alert_id, "time": sent.time.isoformat(timespec="milliseconds") + "Z",
                    "source": "guard", "severity": "warning", "title": "rolled back Deployment shop/payments",
                    "message": "analysis latency-p95 failed", "action_id": "act-1", "analysis_id": "an-1",
                    **sent.body}
    [stored] = alerts(store)
    port = hook.server.server_address[1]
    assert stored["delivery"] == row["delivery"] == f"HTTP 200 from http://127.0.0.1:{port}"
    assert "SECRET" not in stored["delivery"]  # a chat webhook's path is its secret
    assert json.loads(stored["detail"]) == body
    assert (stored["alert_id"], stored["severity"], stored["action_id"], stored["analysis_id"]) == \
        (sent.alert_id, "warning", "act-1", "an-1")


def test_alerts_of_one_call_are_one_transaction(store, hook):
    Notifier(store, hook.url).send([alert(), alert(severity="critical"), alert(severity="info")])
    assert len(hook.received) == 3
    assert [r["severity"] for r in alerts(store)] == ["warning", "critical", "info"]
    snapshots = store.query("SELECT count(*) AS n FROM ducklake_snapshots('lake')")["n"].iloc[0]
    Notifier(store, hook.url).send([alert(), alert()])
    assert store.query("SELECT count(*) AS n FROM ducklake_snapshots('lake')")["n"].iloc[0] == snapshots + 1


def test_without_a_webhook_the_row_says_so(store, monkeypatch):
    monkeypatch.delenv(notify.ENV_WEBHOOK, raising=False)
    Notifier(store).send([alert()])
    assert [r["delivery"] for r in alerts(store)] == ["no webhook"]


def test_the_webhook_comes_from_the_environment(store, hook, monkeypatch):
    monkeypatch.setenv(notify.ENV_WEBHOOK, hook.url)
    assert Notifier(store).webhook == hook.url
    Notifier(store).send([alert()])
    assert len(hook.received) == 1


@pytest.mark.parametrize("url", ["ftp://example.com/x", "hooks.example.com/x", "http://", "file:///etc/passwd"])
def test_a_webhook_that_is_not_http_is_refused_when_the_guard_starts(url, monkeypatch):
    with pytest.raises(ConfigError, match=r"--webhook: .* is not an http\(s\) URL"):
        webhook_from_env(url)
    monkeypatch.setenv(notify.ENV_WEBHOOK, url)
    with pytest.raises(ConfigError, match=r"\$AFTERFIX_WEBHOOK: .* is not an http\(s\) URL"):
        webhook_from_env()


def test_a_server_error_is_asked_again_once(store):
    hook = Hook(statuses=[503])
    try:
        Notifier(store, hook.url, sleep=lambda s: None).send([alert()])
        assert len(hook.received) == 2
        assert alerts(store)[0]["delivery"].startswith("HTTP 200 from http://127.0.0.1:")
    finally:
        hook.close()


@pytest.mark.parametrize("statuses, delivery, posts", [
    ([500, 500], "failed: HTTP 500 from {origin} after 2 attempts", 2),
    ([400], "failed: HTTP 400 from {origin}", 1),  # a refusal of the body: asking again gets the same
    ([404], "failed: HTTP 404 from {origin}", 1),
])
def test_a_refusing_webhook_is_recorded_and_never_raises(store, statuses, delivery, posts):
    hook = Hook(statuses=statuses)
    try:
        Notifier(store, hook.url, sleep=lambda s: None).send([alert()])
        origin = f"http://127.0.0.1:{hook.server.server_address[1]}"
        assert alerts(store)[0]["delivery"] == delivery.format(origin=origin)
        assert len(hook.received) == posts
    finally:
        hook.close()


def test_a_slow_webhook_times_out_and_the_row_is_written(store):
    hook = Hook(delay=2.0)
    try:
        Notifier(store, hook.url, timeout_s=0.2, attempts=1).send([alert()])
        origin = f"http://127.0.0.1:{hook.server.server_address[1]}"
        assert alerts(store)[0]["delivery"] == f"failed: timed out after 0.2 s ({origin})"
    finally:
        hook.close()


def test_nothing_listening_is_a_failed_delivery(store, free_port):
    url = f"http://127.0.0.1:{free_port}/hook"
    Notifier(store, url, sleep=lambda s: None).send([alert()])
    delivery = alerts(store)[0]["delivery"]
    assert delivery.startswith("failed: ") and delivery.endswith(f"(http://127.0.0.1:{free_port}) after 2 attempts")
    assert "refused" in delivery.lower()


def test_a_huge_body_is_cut_to_the_newest_measurements(hook):
    many = [{"metric": "latency-p95", "n": i, "message": "x" * 500} for i in range(2000)]
    data = notify.encode(alert(body={"measurements": many}).payload())
    assert len(data) <= notify.MAX_BODY_BYTES
    body = json.loads(data)
    assert body["measurements_cut"] is True and body["measurements"][-1]["n"] == 1999
    assert post_json(hook.url, data).startswith("HTTP 200")


def test_hostile_trace_text_stays_data(store, hook):
    hostile = "\x1b[31m\"}, \"severity\": \"info\" <script>\u202e"
    Notifier(store, hook.url).send([alert(title=hostile, message=hostile)])
    [body] = hook.bodies()
    assert body["title"] == hostile and body["severity"] == "warning"


def test_severity_is_checked():
    with pytest.raises(ValueError, match="alert severity 'page': use one of critical, warning, info"):
        alert(severity="page")
