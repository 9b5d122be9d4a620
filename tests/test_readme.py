"""The README keeps its promises: it opens with the two commands, and what it links to exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_opens_with_make_demo_and_make_test():
    first_block = re.search(r"```\n(.*?)```", README, re.S).group(1)
    assert first_block.split("\n")[:2] == ["make demo", "make test"]
    assert first_block.strip().count("\n") == 1
    assert README.index("```") < README.index("## ")  # before any section


def test_every_local_link_exists():
    links = re.findall(r"\]\(([^)#]+)\)", README)
    local = [link for link in links if "://" not in link]
    assert local, "the README links to its docs"
    for link in local:
        assert (ROOT / link).exists(), link


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
