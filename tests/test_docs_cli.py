"""docs/cli.md documents every subcommand and every option the argparse parser has.

The parser is walked, not listed here, so a new subcommand or flag fails this test until its
documentation is written.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from afterfix.cli import build_parser

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _subparsers(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every (sub)command by its full name ("demo cluster"), nested ones included."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[prefix + name] = sub
                found.update(_subparsers(sub, prefix + name + " "))
    return found


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [s for a in parser._actions for s in a.option_strings if s.startswith("--") and s != "--help"]


def _sections(text: str) -> dict[str, str]:
    """Each `## afterfix NAME` section's text, by NAME."""
    parts = re.split(r"^## afterfix (\S+(?: \S+)*)\s*$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


PARSER = build_parser()
COMMANDS = _subparsers(PARSER)
CASES = [(name, opt) for name, sub in COMMANDS.items() for opt in _options(sub)]


def test_walk_finds_the_commands():
    # guards the walk itself: an empty walk would make every other test pass vacuously
    assert {"ingest", "query", "serve", "status"} <= set(COMMANDS)
    assert ("query", "--write") in CASES and ("serve", "--no-inbox") in CASES


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_has_a_section_with_an_example(name):
    sections = _sections(DOC.read_text())
    assert name in sections, f"docs/cli.md has no '## afterfix {name}' section"
    assert re.search(rf"^\$ afterfix {re.escape(name)}\b", sections[name], flags=re.M), (
        f"docs/cli.md: '## afterfix {name}' has no example ('$ afterfix {name} ...')"
    )


@pytest.mark.parametrize("name,option", CASES)
def test_every_option_is_documented_with_an_example(name, option):
    sections = _sections(DOC.read_text())
    text, command = sections.get(name, ""), re.escape(name)
    if option == "--store":  # shared by every command: documented once, in its own section
        text, command = DOC.read_text().split("## afterfix ", 1)[0], r"\w+"
    assert f"`{option}" in text, f"docs/cli.md: afterfix {name} {option} is not documented"
    # an example is a shell line ("$ afterfix ...") or inline code, not the synopsis
    example = rf"(?:^\$ |`)(?:\w+=\S+ )?afterfix {command}\b[^\n`]*{re.escape(option)}(?![\w-])"
    assert re.search(example, text, flags=re.M), (
        f"docs/cli.md: afterfix {name} {option} has no example using it"
    )


@pytest.mark.parametrize("option", _options(PARSER))
def test_top_level_options_are_documented(option):
    assert f"afterfix {option}" in DOC.read_text()
