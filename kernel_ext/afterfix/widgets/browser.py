"""IncidentBrowser: the incidents in a store, filtered, and one of them opened in a RunView.

    IncidentBrowser(store=None, live=True)

Filters: a night (the spans' `afterfix.night`) or a time window (since / until, UTC), namespace,
finding kind, trust level and status. The table is `afterfix.review.incidents.incidents(...)`
(the CLI and a notebook get the same rows), most serious first, every cell escaped. "Open" shows
the chosen incident's RunView under the table (`open_incident()` returns it too).

With `live=True` a Poller checks the store every `interval` seconds with one cheap query
(`store_token`: span and ledger counts, the latest ingest time) and, when it changed, recomputes
the rows and sets the table's and the selectors' values: new traces appear without re-running
the cell. Findings are computed once per change of the store, not per filter change.
"""

from __future__ import annotations

from datetime import datetime, timezone

import ipywidgets as W
import pandas as pd

from afterfix.widgets._common import STYLE, Poller, StoreWatch, open_store, table, text

__all__ = ["IncidentBrowser", "parse_time"]

ANY = "any"
_COLUMNS = [("incident_id", "incident"), ("severity", "severity"), ("status", "status"), ("start", "start (UTC)"),
            ("what", "what"), ("agents", "agents"), ("work", "decisions / changes"), ("trust_levels", "trust"),
            ("finding_text", "findings"), ("rolled", "undone"), ("verdicts", "verdicts")]
_SHORT = {"incident_id", "severity", "status", "start", "work", "trust_levels", "rolled", "verdicts"}


def parse_time(value: str, field: str) -> datetime | None:
    """'2026-11-27 01:00' (UTC) as a naive datetime; '' as None; anything else an error naming the field."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{field} {value!r}: write a UTC time such as 2026-11-27 01:00") from None
    return t.replace(tzinfo=None) if t.tzinfo is None else t.astimezone(timezone.utc).replace(tzinfo=None)


class IncidentBrowser(W.VBox):
    """Filter the store's incidents and open one. See the module docstring."""

    def __init__(self, store=None, *, live: bool = True, interval: float = 3.0, max_rows: int = 200,
                 view_options: dict | None = None):
        super().__init__()
        self.store = open_store(store)
        self.max_rows, self.view_options = max_rows, dict(view_options or {})
        self.view = None
        small = W.Layout(width="230px")
        self.night = W.Dropdown(description="night", layout=small)
        self.since = W.Text(description="since", placeholder="2026-11-27 00:00", layout=small)
        self.until = W.Text(description="until", placeholder="UTC", layout=small)
        self.namespace = W.Dropdown(description="namespace", layout=small)
        self.finding = W.Dropdown(description="finding", layout=W.Layout(width="270px"))
        self.trust = W.Dropdown(description="trust level", layout=small)
        self.status_filter = W.Dropdown(description="status", layout=small)
        for w in (self.night, self.namespace, self.finding, self.trust, self.status_filter):
            w.style = {"description_width": "80px"}
        for w in (self.since, self.until):
            w.style = {"description_width": "80px"}
        self.table_html = W.HTML(layout=W.Layout(max_height="480px", overflow="auto"))
        self.choice = W.Dropdown(description="incident", layout=W.Layout(width="auto", min_width="560px"))
        self.open_button = W.Button(description="Open", button_style="primary", layout=W.Layout(width="90px"))
        self.message = W.HTML()
        self.view_box = W.VBox()
        self.children = [
            W.HTML(STYLE + "<h3 style='margin:4px 0'>Incidents</h3>"),
            W.HBox([self.night, self.since, self.until]),
            W.HBox([self.namespace, self.finding, self.trust, self.status_filter]),
            self.table_html, W.HBox([self.choice, self.open_button]), self.message, self.view_box,
        ]
        self._found: list = []
        self._all = pd.DataFrame()
        self.rows = pd.DataFrame()
        self._quiet = False
        self.watch = StoreWatch(self.store)
        self._read_store()
        for w in (self.night, self.namespace, self.finding, self.trust, self.status_filter):
            w.observe(lambda ch: self._quiet or self.refresh(), names="value")
        for w in (self.since, self.until):
            w.observe(lambda ch: self.refresh(), names="value")
        self.open_button.on_click(lambda b: self.open_incident())
        self.refresh()
        from afterfix.review.incidents import most_serious

        first = most_serious(self.store, found=self._found)
        if first in set(self.rows["incident_id"]):
            self.choice.value = first
        self.poller = Poller(self.poll, interval, on_error=self._poll_error).start() if live else None

    # -- data ---------------------------------------------------------------------------------

    def _read_store(self) -> None:
        """Findings and the unfiltered rows, and the filters' choices from them."""
        from afterfix.analysis.findings import find
        from afterfix.analysis.findings import finding_kinds
        from afterfix.trust import compliance  # noqa: F401  (registers trust_violation)
        from afterfix.review.incidents import incidents

        try:
            self._found = find(self.store)
            self._findings_error = None
        except Exception as e:  # a detector's failure must not hide the incidents: say so, list them without
            self._found, self._findings_error = [], f"{type(e).__name__}: {e}"
        self._all = incidents(self.store, found=self._found)
        a = self._all
        nights = sorted({n for n in a["night"] if isinstance(n, str)},
                        key=lambda n: a.loc[a["night"] == n, "start_time"].min(), reverse=True)
        namespaces = sorted({ns for v in a["namespace"] for ns in v.split(",") if ns})
        levels = sorted({lv for v in a["trust_levels"] for lv in v.split(",") if lv}, key=int)
        statuses = sorted({s for s in a["status"] if isinstance(s, str)})
        self._quiet = True
        try:
            self._options(self.night, [(ANY, ANY)] + [(f"{n} ({a.loc[a['night'] == n, 'start_time'].min():%m-%d %H:%M})", n)
                                                      for n in nights])
            self._options(self.namespace, [ANY] + namespaces)
            self._options(self.finding, [ANY] + list(finding_kinds()))
            self._options(self.trust, [ANY] + levels)
            self._options(self.status_filter, [ANY] + statuses)
        finally:
            self._quiet = False

    @staticmethod
    def _options(widget, options) -> None:
        keep = widget.value
        widget.options = options
        values = [o[1] if isinstance(o, tuple) else o for o in options]
        widget.value = keep if keep in values else ANY

    def filters(self) -> dict:
        """The filters as `incidents()` keywords (the night as its own key)."""
        pick = lambda w: None if w.value in (ANY, None) else w.value  # noqa: E731
        return {"since": parse_time(self.since.value, "since"), "until": parse_time(self.until.value, "until"),
                "namespace": pick(self.namespace), "finding": pick(self.finding), "trust_level": pick(self.trust),
                "status": pick(self.status_filter), "night": pick(self.night)}

    def refresh(self) -> None:
        """Recompute the rows from the filters and show them (trait values only)."""
        from afterfix.review.incidents import incidents

        try:
            f = self.filters()
        except ValueError as e:
            self.message.value = f"<span class='afterfix-bad'>{text(e)}</span>"
            return
        night = f.pop("night")
        rows = incidents(self.store, found=self._found, **f)
        if night is not None:
            rows = rows[rows["night"] == night]
        self.rows = rows.reset_index(drop=True)
        self._draw()

    def poll(self) -> bool:
        """Re-read when the store changed (new spans, rollbacks, verdicts); True when it did."""
        if not self.watch.changed():
            return False
        before = set(self._all["incident_id"]) if len(self._all) else set()
        self._read_store()
        self.refresh()
        new = [i for i in self._all["incident_id"] if i not in before]
        self.message.value = (f"<span class='afterfix-ok'>{len(new)} new incident(s): {text(', '.join(new[:5]))}</span>"
                              if new else "<span class='afterfix-muted'>updated from the store</span>")
        return True

    def _poll_error(self, message: str) -> None:
        self.message.value = f"<span class='afterfix-bad'>live refresh failed: {text(message)}</span>"

    # -- drawing ------------------------------------------------------------------------------

    def _draw(self) -> None:
        rows = self.rows
        shown = []
        for r in rows.head(self.max_rows).to_dict("records"):
            title, service = r["title"] or "", r["service"] or ""
            shown.append({**r, "start": f"{r['start_time']:%m-%d %H:%M}" if pd.notna(r["start_time"]) else "",
                          "what": title if service in title else f"{service}: {title}" if service else title,
                          "work": f"{r['decisions']} / {r['changes']}",
                          "finding_text": (f"{r['findings']}: {r['finding_kinds'].replace('_', ' ').replace(',', ', ')}"
                                           if r["findings"] else ""),
                          "rolled": "yes" if r["rolled_back"] else "", "verdicts": r["verdicts"] or ""})
        more = (f"<div class='afterfix-muted'>showing {self.max_rows} of {len(rows)}: narrow the filters</div>"
                if len(rows) > self.max_rows else "")
        head = f"<div class='afterfix-muted'>{len(rows)} of {len(self._all)} incidents, most serious first</div>"
        if self._findings_error:
            head += (f"<div class='afterfix-bad'>findings could not be computed, so none are shown "
                     f"(`afterfix findings` gives the traceback): {text(self._findings_error)}</div>")
        self.table_html.value = head + (table(shown, _COLUMNS, limit=90, short=_SHORT, wide=("what", "finding_text")) if shown else
                                        "<i>no incident matches these filters</i>") + more
        keep = self.choice.value
        options = [(f"{r['incident_id']} · {r['severity'] or '?'} · {r['title'] or ''}"[:120], r["incident_id"])
                   for r in rows.to_dict("records")]
        self.choice.options = options
        values = [v for _, v in options]
        self.choice.value = keep if keep in values else (values[0] if values else None)
        self.open_button.disabled = not values
        self.message.value = ""

    def open_incident(self, incident_id: str | None = None):
        """Show `incident_id` (default: the one chosen) in a RunView under the table; returns it."""
        from afterfix.widgets.run_view import RunView

        incident_id = incident_id or self.choice.value
        if not incident_id:
            self.message.value = "<span class='afterfix-bad'>no incident chosen: pick one above</span>"
            return None
        if self.view is not None:
            self.view.close()
        self.message.value = f"<span class='afterfix-muted'>opening {text(incident_id)}…</span>"
        self.view = RunView(self.store, incident_id=incident_id, live=self.poller is not None, **self.view_options)
        self.view_box.children = [self.view]
        self.message.value = ""
        return self.view

    def close(self) -> None:
        if getattr(self, "poller", None) is not None:
            self.poller.stop()
        if getattr(self, "view", None) is not None:
            self.view.close()
        super().close()
