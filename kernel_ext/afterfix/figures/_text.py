"""Trace text made safe to show in plotly: every label, hover text, tick and legend name goes through here.

plotly.js renders text as a small HTML dialect: it splits the raw string on `<...>` tags (`<b>`,
`<br>`, `<a href=...>`, `<span style=...>`), turns `\\n` into a line break, typesets `$...$` as TeX
when MathJax is on the page (Jupyter loads it), and only then decodes entities (`&lt;`, `&#36;`)
in the text between tags. So escaping `&`, `<`, `>` and `$` as entities before a string reaches
plotly leaves it shown exactly as written: no tag, and therefore no link (`javascript:` or any
other), can be formed from trace text, and no TeX is typeset from it.

    esc(value)             the whole text, escaped
    short(value, n)        one line: whitespace collapsed, cut to n characters with "…", escaped
    wrap(value, width)     hover text: wrapped at `width` characters into `<br>`-separated lines, escaped

Truncation and wrapping happen on the raw text, before escaping, so an entity is never cut in two
and the widths count what a person sees. The `<b>` and `<br>` the figures add themselves are the
only tags in any figure.
"""

from __future__ import annotations

import html
import re
import textwrap
from typing import Any

ELLIPSIS = "…"
_SPACE = re.compile(r"\s+")
# Control characters other than tab and newline: invisible on screen, and some break SVG text.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def plain(value: Any) -> str:
    """Text of any value; None is the empty string."""
    if value is None:
        return ""
    return _CONTROL.sub("", value if isinstance(value, str) else str(value))


def esc(value: Any) -> str:
    """`value` as text that plotly shows verbatim: `&`, `<`, `>` and `$` escaped."""
    return html.escape(plain(value), quote=False).replace("$", "&#36;")


def cut(value: Any, n: int) -> str:
    """Raw (unescaped) one-line text of at most `n` characters, ending in "…" when shortened."""
    text = _SPACE.sub(" ", plain(value)).strip()
    if len(text) <= n:
        return text
    return text[: max(n - 1, 0)].rstrip() + ELLIPSIS


def short(value: Any, n: int) -> str:
    """One escaped line of at most `n` visible characters, for labels, ticks and legend names."""
    return esc(cut(value, n))


def wrap(value: Any, width: int = 80, *, limit: int | None = None) -> str:
    """Escaped hover text: each line of `value` wrapped at `width` characters, joined by `<br>`.

    `limit` caps the raw text first (with "…"), for values that can be huge, like tool results.
    """
    text = plain(value)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + ELLIPSIS
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        # break_on_hyphens=False: ids like run-2026-11-27 stay whole.
        lines.extend(textwrap.wrap(paragraph, width, break_long_words=True, break_on_hyphens=False,
                                   replace_whitespace=True) or [""])
    return "<br>".join(esc(line) for line in lines)


def hover(*rows: tuple[str, Any] | str | None, width: int = 80, limit: int | None = 2000) -> str:
    """Hover text of `(name, value)` rows: the name in bold, the value wrapped and escaped.

    A plain string row is a heading (escaped, bold); None rows and rows whose value is None or ""
    are left out, so callers can list every field a kind may have.
    """
    out: list[str] = []
    for row in rows:
        if row is None:
            continue
        if isinstance(row, str):
            out.append(f"<b>{wrap(row, width)}</b>")
            continue
        name, value = row
        if value is None or value == "" or value == []:
            continue
        if isinstance(value, (list, tuple)):
            body = "<br>".join("• " + wrap(v, width - 2, limit=limit) for v in value)
            out.append(f"<b>{esc(name)}</b><br>{body}")
        else:
            out.append(f"<b>{esc(name)}:</b> {wrap(value, width, limit=limit)}")
    return "<br>".join(out)
