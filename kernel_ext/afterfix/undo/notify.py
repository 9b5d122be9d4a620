"""Telling people: a webhook POST with a JSON body, and an `alerts` row the briefing shows.

    notifier = Notifier(store, webhook="https://hooks.example/afterfix")   # or $AFTERFIX_WEBHOOK
    alert = Alert(severity="critical", title="...", message="...", action_id="act-12",
                  analysis_id="an-...", body={"action": {...}, "target": {...}, ...})
    rows = notifier.send([alert])      # POSTs each, then appends every row in one transaction

Delivery never raises: whatever the webhook does (refuses, times out, is not there), the alert
row is written and its `delivery` column says what happened ("HTTP 200 from https://hooks.example",
"failed: HTTP 500 from ...", "failed: timed out after 5 s (...)", "no webhook"). Only the
webhook's scheme and host are recorded: chat webhooks carry their secret in the path.
A webhook is asked once more after a failure; an alert is delivered at least once, and a guard
killed between the POST and the row's commit sends it again when it resumes.

The body is JSON (UTF-8, `Content-Type: application/json`), the alert with its context:

    {"alert_id", "time", "source", "severity", "title", "message",
     "action": {...}, "target": {...}, "analysis": {...}, "measurements": [...], "done": {...}}

Trace text inside it (names, reasons, messages) is untrusted and only JSON-encoded: whoever shows
it (a chat, a pager) must escape it as for any other input.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

from afterfix._exceptions import ConfigError

__all__ = ["Alert", "Notifier", "post_json", "webhook_from_env", "ENV_WEBHOOK", "SEVERITIES", "TIMEOUT_S",
           "MAX_BODY_BYTES"]

log = logging.getLogger(__name__)

ENV_WEBHOOK = "AFTERFIX_WEBHOOK"
SEVERITIES = ("critical", "warning", "info")
TIMEOUT_S = 5.0
ATTEMPTS = 2
RETRY_DELAY_S = 0.5
MAX_BODY_BYTES = 256 * 1024  # a chat webhook refuses far less; the longest lists are cut first
USER_AGENT = "afterfix-guard"


@dataclass
class Alert:
    """One alert for people. `body` holds the context keys of the webhook body (action, target,
    analysis, measurements, done); the alert's own fields are added to it when it is sent."""

    severity: str
    title: str
    message: str
    source: str = "guard"
    action_id: str | None = None
    analysis_id: str | None = None
    body: dict[str, Any] = field(default_factory=dict)
    alert_id: str = field(default_factory=lambda: f"alert-{uuid.uuid4().hex[:12]}")
    time: datetime = field(default_factory=lambda: datetime.now(timezone.utc).replace(tzinfo=None))

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"alert severity {self.severity!r}: use one of {', '.join(SEVERITIES)}")

    def payload(self) -> dict[str, Any]:
        """The webhook body: the alert's fields, then its context."""
        head = {"alert_id": self.alert_id, "time": self.time.isoformat(timespec="milliseconds") + "Z",
                "source": self.source, "severity": self.severity, "title": self.title, "message": self.message,
                "action_id": self.action_id, "analysis_id": self.analysis_id}
        return {**head, **{k: v for k, v in self.body.items() if k not in head}}


def webhook_from_env(webhook: str | None = None) -> str | None:
    """`webhook`, else $AFTERFIX_WEBHOOK, else None; ConfigError when it is not an http(s) URL."""
    url = webhook if webhook is not None else os.environ.get(ENV_WEBHOOK) or None
    if url is None:
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        where = "--webhook" if webhook is not None else f"${ENV_WEBHOOK}"
        raise ConfigError(f"{where}: {_origin(url)!r} is not an http(s) URL; give the webhook's full URL, "
                          "e.g. https://hooks.example.com/services/...")
    return url


def _origin(url: str) -> str:
    """scheme://host[:port] of `url`: what may be shown of a webhook whose path is its secret."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}" if parts.scheme else "(not a URL)"


def encode(payload: Mapping[str, Any]) -> bytes:
    """The JSON body, at most MAX_BODY_BYTES: the measurements list is cut from its oldest end
    first (what was measured last is what matters), then long texts."""
    body = dict(payload)
    data = json.dumps(body, ensure_ascii=False, default=str).encode("utf-8")
    measurements = list(body.get("measurements") or [])
    while len(data) > MAX_BODY_BYTES and measurements:
        measurements = measurements[len(measurements) // 2 + 1:]
        body["measurements"] = measurements
        body["measurements_cut"] = True
        data = json.dumps(body, ensure_ascii=False, default=str).encode("utf-8")
    if len(data) > MAX_BODY_BYTES:
        body = {k: (v[:2000] + "…" if isinstance(v, str) and len(v) > 2000 else v)
                for k, v in body.items() if k not in ("analysis", "measurements")}
        body["cut"] = "the analysis and measurements were left out: the body was over 256 KiB"
        data = json.dumps(body, ensure_ascii=False, default=str).encode("utf-8")
    return data


def post_json(url: str, data: bytes, *, timeout_s: float = TIMEOUT_S, attempts: int = ATTEMPTS,
              sleep: Callable[[float], None] = time.sleep) -> str:
    """POST `data` (JSON) to `url`; what happened, in words for the `delivery` column. Never raises."""
    origin = _origin(url)
    outcome = "failed: not tried"
    for attempt in range(attempts):
        if attempt:
            sleep(RETRY_DELAY_S)
        request = urllib.request.Request(url, data=data, method="POST", headers={
            "Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                response.read(65536)
                return f"HTTP {response.status} from {origin}"
        except urllib.error.HTTPError as e:
            outcome = f"failed: HTTP {e.code} from {origin}"
            if 400 <= e.code < 500 and e.code not in (408, 429):
                return outcome  # the webhook refused this body: asking again gets the same answer
        except (TimeoutError, OSError, urllib.error.URLError, ValueError) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                outcome = f"failed: timed out after {timeout_s:g} s ({origin})"
            else:
                outcome = f"failed: {str(reason)[:200] or type(reason).__name__} ({origin})"
        except Exception as e:  # noqa: BLE001 - a webhook must never take the guard down
            outcome = f"failed: {type(e).__name__}: {str(e)[:200]} ({origin})"
    return outcome + (f" after {attempts} attempts" if attempts > 1 else "")


class Notifier:
    """Sends alerts to one webhook (or none) and records each in the store's `alerts` ledger."""

    def __init__(self, store, webhook: str | None = None, *, timeout_s: float = TIMEOUT_S,
                 attempts: int = ATTEMPTS, sleep: Callable[[float], None] = time.sleep):
        self.store = store
        self.webhook = webhook_from_env(webhook)
        self.timeout_s, self.attempts, self.sleep = timeout_s, attempts, sleep

    def deliver(self, alert: Alert) -> str:
        """POST one alert; the delivery text. Never raises."""
        if self.webhook is None:
            return "no webhook"
        try:
            data = encode(alert.payload())
        except (TypeError, ValueError) as e:  # an unserialisable body is a bug; the row still says so
            return f"failed: the body could not be encoded as JSON ({e})"
        return post_json(self.webhook, data, timeout_s=self.timeout_s, attempts=self.attempts, sleep=self.sleep)

    def send(self, alerts: Sequence[Alert]) -> list[dict[str, Any]]:
        """Deliver every alert, then append all their rows in one transaction; the rows."""
        rows = []
        for alert in alerts:
            delivery = self.deliver(alert)
            if delivery.startswith("failed"):
                log.warning("afterfix guard: alert %s (%s) not delivered: %s", alert.alert_id, alert.title, delivery)
            rows.append(row(alert, delivery))
        if rows:
            self.store.append_ledger("alerts", rows)
        return rows


def row(alert: Alert, delivery: str) -> dict[str, Any]:
    """The `alerts` row of `alert`; `detail` is the webhook body as JSON."""
    return {"alert_id": alert.alert_id, "time": alert.time, "source": alert.source, "severity": alert.severity,
            "action_id": alert.action_id, "analysis_id": alert.analysis_id, "title": alert.title,
            "message": alert.message, "detail": encode(alert.payload()).decode("utf-8"), "delivery": delivery}
