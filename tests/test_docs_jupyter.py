"""docs/jupyter.md documents every magic, subcommand, %sql option and Afterfix option.

The lists come from the code (the Magics class, the Configurable's traits), so adding one without
documenting it fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from afterfix.config import Afterfix
from afterfix.magics import SQL_OPTIONS, SUBCOMMANDS, AfterfixMagics, StatusReport

DOC = Path(__file__).resolve().parents[1] / "docs" / "jupyter.md"


def required() -> dict[str, str]:
    """What the page must contain, each mapped to what it documents."""
    need: dict[str, str] = {}
    for kind, names in AfterfixMagics.magics.items():
        prefix = "%" if kind == "line" else "%%"
        for name in names:
            need[f"`{prefix}{name}"] = f"{kind} magic {name}"
    for sub in SUBCOMMANDS:
        need[f"#### `%afterfix {sub}`"] = f"subcommand {sub}"
    for option in SQL_OPTIONS:
        for flag in option.split(", "):
            need[f"`{flag}`"] = f"%sql option {flag}"
    for trait in Afterfix.class_own_traits(config=True):
        need[f"### `Afterfix.{trait}`"] = f"option Afterfix.{trait}"
    for env in ("AFTERFIX_STORE", "AFTERFIX_PORT", "AFTERFIX_INBOX", "AFTERFIX_TOKEN"):
        need[env] = f"environment variable {env}"
    return need


def missing(text: str) -> list[str]:
    gaps = [what for snippet, what in required().items() if snippet not in text]
    status = text.split("#### `%afterfix status`")[-1].split("####")[0]
    gaps += [f"%afterfix status row {label}" for label in StatusReport.LABELS.values() if label not in status]
    return gaps


def test_every_magic_subcommand_and_option_is_documented():
    assert missing(DOC.read_text()) == []


def test_the_lists_come_from_the_code():
    need = required().values()
    assert {"line magic afterfix", "line magic sql", "cell magic sql"} <= set(need)
    assert {"option Afterfix.port", "option Afterfix.redact_patterns", "option Afterfix.display_limit"} <= set(need)
    assert len([w for w in need if w.startswith("option ")]) == 10


@pytest.mark.parametrize("snippet", [
    "### `Afterfix.display_limit`", "#### `%afterfix restart`", "`--write`", "`%%sql", "| replaying spool |",
])
def test_a_missing_entry_is_noticed(snippet):
    text = DOC.read_text()
    assert snippet in text
    assert missing(text.replace(snippet, "")) != []


def test_links_to_option_headings_resolve():
    text = DOC.read_text()
    anchors = {re.sub(r"[^a-z0-9_ -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", text, re.M)}
    for link in re.findall(r"\]\(#([^)]+)\)", text):
        assert link in anchors, f"docs/jupyter.md links to #{link}, which no heading makes"
