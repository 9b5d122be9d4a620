"""The briefing's sections as HTML: every piece of trace text escaped, nothing fetched.

    page_style() -> str                 the <style> block, once at the top
    handoff_html(briefing) -> str       the title, the window and the five-line handoff
    section_html(section, n) -> str     a numbered section: its answer, its notes, its table
    show(item, n=None)                  in a notebook: display a handoff or a section and its figures
    offline_figures()                   plotly figures embed plotly.js in the output, for offline HTML

Cells are text, shown through `html.escape` (quotes included) with `$` as an entity, so no tag,
attribute, link or TeX can be formed from what an agent or production wrote. Tables are built
here rather than with `DataFrame.to_html`, which does not escape `$` and would leave the markup
to pandas' defaults.
"""

from __future__ import annotations

import html
import json
from typing import Any

import pandas as pd

from afterfix.figures._text import plain
from afterfix.reports.briefing import Briefing, Section

__all__ = ["page_style", "handoff_html", "section_html", "show", "offline_figures", "text", "header_html", "figure_bundle"]

HANDOFF = "afterfix.handoff"  # output metadata key of the handoff
MAX_ROWS = 400
# columns of short words (times, ids, names) that read badly when wrapped mid-word
SHORT_COLUMNS = {"time", "since", "incident", "agent", "chose", "severity", "kind", "status", "trust level", "evidence"}  # rows shown per table; the rest are counted (the store has them all)

STYLE = """
<style>
.afx { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; max-width: 1180px; }
.afx h1 { font-size: 26px; margin: 4px 0 2px; }
.afx h2 { font-size: 20px; margin: 26px 0 6px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
.afx .window { color: #57606a; margin-bottom: 10px; }
.afx .handoff { border-radius: 8px; padding: 12px 16px; margin: 8px 0 14px; }
.afx .handoff.worry { background: #fff1f0; border-left: 6px solid #cf222e; }
.afx .handoff.calm { background: #eefbf1; border-left: 6px solid #1a7f37; }
.afx .handoff ol { margin: 0; padding-left: 22px; }
.afx .handoff li { margin: 3px 0; }
.afx .handoff li:first-child { font-weight: 600; font-size: 17px; }
.afx .summary { font-weight: 500; margin: 4px 0 8px; }
.afx .note { background: #f6f8fa; border-radius: 6px; padding: 8px 12px; margin: 6px 0; white-space: pre-wrap; }
.afx table { border-collapse: collapse; font-size: 13px; margin: 6px 0; width: 100%; table-layout: auto; }
.afx th, .afx td { text-align: left !important; }
.afx th { background: #f6f8fa; border-bottom: 2px solid #d0d7de; padding: 4px 8px; }
.afx td { border-bottom: 1px solid #eaeef2; padding: 4px 8px; vertical-align: top; overflow-wrap: break-word; white-space: pre-line; }
.afx td.short { white-space: nowrap; }
.afx td.sev-critical { color: #fff; background: #a40e26; font-weight: 600; }
.afx td.sev-high { color: #a40e26; font-weight: 600; }
.afx td.sev-medium { color: #9a6700; font-weight: 600; }
.afx .more { color: #57606a; font-style: italic; }
.afx .contents { color: #57606a; font-size: 13px; }
</style>
"""


def text(value: Any) -> str:
    """Any value as escaped HTML text: quotes and `$` included, control characters dropped."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return html.escape(plain(value), quote=True).replace("$", "&#36;")


def page_style() -> str:
    return STYLE


def handoff_html(b: Briefing) -> str:
    items = "".join(f"<li>{text(line)}</li>" for line in b.handoff)
    contents = " · ".join(f"{i}. {text(s.title)}" for i, s in enumerate(b.sections, 1))
    return (f"<div class='afx'><h1>Morning briefing</h1>"
            f"<div class='window'>{text(b.window)} · store {text(b.store)}</div>"
            f"<div class='handoff {'worry' if b.worry else 'calm'}'><ol>{items}</ol></div>"
            f"<div class='contents'>{contents}</div></div>")


def section_html(section: Section, n: int | None = None, *, part: str = "all") -> str:
    """A section as HTML: `part="head"` its title, answer and notes; `"table"` its table; `"all"` both."""
    number = f"{n}. " if n is not None else ""
    parts = []
    if part in ("all", "head"):
        parts += [f"<h2>{number}{text(section.title)}</h2>", f"<p class='summary'>{text(section.summary)}</p>"]
        parts += [f"<div class='note'>{text(note)}</div>" for note in section.notes]
    if part in ("all", "table") and section.table is not None and len(section.table):
        parts.append(table_html(section.table))
    return f"<div class='afx' id='{text(section.key)}-{part}'>{''.join(parts)}</div>" if parts else ""


def table_html(frame: pd.DataFrame, max_rows: int = MAX_ROWS) -> str:
    head = "".join(f"<th>{text(col)}</th>" for col in frame.columns)
    rows = []
    for record in frame.head(max_rows).itertuples(index=False):
        cells = []
        for col, value in zip(frame.columns, record):
            classes = [f"sev-{text(value)}"] if col == "severity" and isinstance(value, str) else []
            if col in SHORT_COLUMNS:
                classes.append("short")
            cls = f" class='{' '.join(classes)}'" if classes else ""
            cells.append(f"<td{cls}>{text(value)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    more = (f"<p class='more'>and {len(frame) - max_rows} more rows (all of them are in the store)</p>"
            if len(frame) > max_rows else "")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}"


_plotlyjs_shown = False


def offline_figures() -> None:
    """Start a page: the next figure shown embeds plotly.js again (once per page is enough)."""
    global _plotlyjs_shown
    _plotlyjs_shown = False


def figure_bundle(fig) -> dict:
    """A figure as a display bundle: plotly's own JSON for JupyterLab, and HTML for nbconvert.

    The HTML embeds plotly.js the first time in a page and never loads MathJax: plotly's
    "notebook" renderer would add a MathJax script from a CDN, and trace text must not be
    typeset anyway. nbconvert's HTML has no renderer for the JSON, so it takes the HTML."""
    global _plotlyjs_shown
    snippet = fig.to_html(full_html=False, include_plotlyjs=not _plotlyjs_shown, include_mathjax=False,
                          config={"displaylogo": False, "responsive": True})
    _plotlyjs_shown = True
    return {"application/vnd.plotly.v1+json": json.loads(fig.to_json()), "text/html": snippet}


def header_html(h) -> str:
    """The top of an incident or run page (`reports.review.Header`)."""
    items = "".join(f"<li>{text(line)}</li>" for line in h.lines)
    return (f"<div class='afx'><h1>{text(h.title)}</h1><div class='window'>{text(h.subtitle)}</div>"
            f"<div class='handoff {'worry' if h.worry else 'calm'}'><ol>{items}</ol></div></div>")


def show(item, n: int | None = None) -> None:
    """Display the handoff of a briefing, a page header, or one section and its figures, in a notebook."""
    from IPython.display import HTML, display

    if isinstance(item, Briefing):
        # text/plain carries the handoff itself, so `afterfix brief` can print it from the executed notebook
        display({"text/html": page_style() + handoff_html(item), "text/plain": "\n".join(item.handoff)},
                raw=True, metadata={HANDOFF: True})
        return
    if not isinstance(item, Section):
        display(HTML(page_style() + header_html(item)))
        return
    # the answer first, then the pictures, then the rows behind them
    display(HTML(section_html(item, n, part="head")))
    for fig in item.figures:
        display(figure_bundle(fig), raw=True)
    table = section_html(item, n, part="table")
    if table:
        display(HTML(table))
