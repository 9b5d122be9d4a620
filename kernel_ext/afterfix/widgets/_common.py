"""What every widget shares: trace text made safe for HTML, small HTML tables, and live refresh.

Trace text is untrusted. Everything a widget shows from the store goes through `text()` (or
`table()`, which uses it) before it becomes part of an `ipywidgets.HTML` value: `&`, `<`, `>`,
quotes and `$` become entities, so no element, attribute or script can be formed from it, and
JupyterLab's MathJax typesets nothing of it. Widgets that only need plain strings use `Label`-like
widgets or `value=` of text inputs, which the browser shows as text anyway.

Live refresh: `Poller` runs a function every few seconds on a daemon thread. The function may
only set trait values (`html.value = ...`, `dropdown.options = ...`): never `with out:` from a
thread (ipywidgets #1794, #3260), so new traces show without re-running the cell.
"""

from __future__ import annotations

import html
import re
import threading
from typing import Any, Callable, Iterable, Sequence

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
ELLIPSIS = "…"


def text(value: Any, limit: int | None = None) -> str:
    """`value` as HTML text: escaped (quotes and `$` included), control characters dropped, cut to
    `limit` characters (before escaping, so no entity is cut in two)."""
    if value is None:
        return ""
    raw = _CONTROL.sub("", value if isinstance(value, str) else str(value))
    if limit is not None and len(raw) > limit:
        raw = raw[: max(limit - 1, 0)] + ELLIPSIS
    return html.escape(raw, quote=True).replace("$", "&#36;")


def table(rows: Iterable[dict], columns: Sequence[tuple[str, str]], *, limit: int | None = 200,
          css: str = "afterfix-table", short: Iterable[str] = (), wide: Iterable[str] = (),
          values: Iterable[str] = ()) -> str:
    """An HTML table of `rows` (dicts) with `columns` as (key, heading) pairs; every cell escaped.
    Cells of the `short` columns (ids, times, counts) are never wrapped; the `wide` ones (titles,
    messages) keep room for a few words a line, so a crowded table wraps words, not letters; the
    `values` ones (image names, JSON) may break anywhere, since they have no words to wrap at."""
    kinds = {**{k: "afterfix-value" for k in values}, **{k: "afterfix-wide" for k in wide},
             **{k: "afterfix-short" for k in short}}
    head = "".join(f"<th>{text(label)}</th>" for _, label in columns)
    cls = {key: f' class="{kinds[key]}"' if key in kinds else "" for key, _ in columns}
    body = "".join("<tr>" + "".join(f"<td{cls[key]}>{text(row.get(key), limit)}</td>" for key, _ in columns) + "</tr>"
                   for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


STYLE = """<style>
.afterfix-table { border-collapse: collapse; font-size: 12px; line-height: 1.4; }
.afterfix-table th, .afterfix-table td { border-bottom: 1px solid #ddd; padding: 3px 6px; text-align: left;
  vertical-align: top; max-width: 480px; overflow-wrap: break-word; }
.afterfix-table th { background: #f3f3f3; overflow-wrap: normal; }
.afterfix-table td.afterfix-short { white-space: nowrap; overflow-wrap: normal; }
.afterfix-table td.afterfix-wide { min-width: 150px; }
.afterfix-table td.afterfix-value { overflow-wrap: anywhere; min-width: 80px; max-width: 260px; }
.afterfix-ok { color: #1a7f37; } .afterfix-bad { color: #c62828; font-weight: 600; } .afterfix-warn { color: #9a6700; }
.afterfix-muted { color: #666; }
pre.afterfix-pre { white-space: pre-wrap; overflow-wrap: anywhere; font-size: 12px; max-height: 320px; overflow: auto;
  background: #f7f7f7; padding: 4px 8px; margin: 2px 0; }
</style>"""


class Poller:
    """Calls `fn()` every `interval` seconds on a daemon thread until `stop()`.

    `fn` runs off the kernel's main thread: it may set trait values only. An exception stops
    nothing; its text is kept in `error` (and passed to `on_error` if given) so a widget can show it.
    """

    def __init__(self, fn: Callable[[], None], interval: float = 2.0,
                 on_error: Callable[[str], None] | None = None):
        self.fn, self.interval, self.on_error = fn, interval, on_error
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="afterfix-widget-poll", daemon=True)

    def start(self) -> "Poller":
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.fn()
                self.error = None
            except Exception as e:  # shown by the widget, never raised into a thread's void
                self.error = f"{type(e).__name__}: {e}"
                if self.on_error is not None:
                    self.on_error(self.error)

    def stop(self) -> None:
        self._stop.set()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()


def open_store(store=None):
    """`store` as a Store: one already open, a path, or None for the default (AFTERFIX_STORE, else
    traces/store). A store that does not exist is an error naming the path and the fix."""
    from afterfix.store import Store, StoreError

    s = store if hasattr(store, "query") else Store(store or None)
    if not s.exists():
        raise StoreError(f"no store at {s.where}: pass store=PATH (or set AFTERFIX_STORE); `afterfix demo` makes one")
    return s


def figure_outputs(fig) -> tuple:
    """A plotly figure as the `outputs` value of an `ipywidgets.Output`: plotly's own mime type,
    which JupyterLab's plotly renderer draws. Setting `out.outputs = figure_outputs(fig)` is a trait
    assignment, so a Poller thread may do it (`with out: display(fig)` it may not). plotly 6+
    FigureWidget needs anywidget, which afterfix does not depend on."""
    import json

    # plotly's own encoder: datetimes, numpy arrays and NaN become JSON the renderer reads
    return ({"output_type": "display_data", "metadata": {},
             "data": {"application/vnd.plotly.v1+json": json.loads(fig.to_json()),
                      "text/plain": f"<plotly figure: {len(fig.data)} traces>"}},)


class StoreWatch:
    """Whether the store changed since the last look: `changed()` compares a cheap fingerprint
    (`afterfix.review.incidents.store_token`: counts and the latest ingest time) with the last one."""

    def __init__(self, store, token: Callable | None = None):
        from afterfix.review.incidents import store_token

        self.store, self._token = store, token or store_token
        self.last = self._token(store)

    def changed(self) -> bool:
        now = self._token(self.store)
        if now == self.last:
            return False
        self.last = now
        return True
