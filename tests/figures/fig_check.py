"""Figure test helpers: golden files, and what a figure's text says to a person.

Golden files hold `fig.to_json()` of each figure drawn from `fig_samples`, minus the layout's
template (plotly's own `plotly_white`, checked by name in test_text.py, and so left out of the files
so a plotly upgrade that retouches its template does not churn them). To rewrite them after an
intended change, run

    AFTERFIX_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q -p no:cacheprovider tests/figures

and review the diff of tests/figures/golden/ before committing it.
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("AFTERFIX_UPDATE_GOLDEN") == "1"
_TAG = re.compile(r"<[^>]*>")


def figure_json(fig) -> dict:
    data = json.loads(fig.to_json())
    data["layout"].pop("template", None)
    return data


def check_golden(fig, name: str) -> None:
    """`fig` equals tests/figures/golden/NAME.json (or rewrites it under AFTERFIX_UPDATE_GOLDEN=1)."""
    path = GOLDEN / f"{name}.json"
    got = figure_json(fig)
    if UPDATE:
        path.write_text(json.dumps(got, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing: write it with AFTERFIX_UPDATE_GOLDEN=1 (see tests/figures/conftest.py)"
    assert got == json.loads(path.read_text(encoding="utf-8")), (
        f"{name}: the figure differs from {path}; if the change is intended, rewrite it with "
        "AFTERFIX_UPDATE_GOLDEN=1 and review the diff")


def seen(text: str) -> str:
    """What a person reads in a plotly text: line breaks as spaces, our tags dropped, entities decoded."""
    return html.unescape(_TAG.sub("", (text or "").replace("<br>", " ")))


def strings(value):
    """Every string anywhere in a figure's JSON."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def tags(fig) -> set[str]:
    """Every HTML-ish tag plotly would read in the figure's text."""
    return {t for s in strings(figure_json(fig)) for t in _TAG.findall(s)}
