"""The trust policy: rules to levels, first match wins, caps, and errors that name the line and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from afterfix.trust.policy import LEVELS, TrustPolicyError, load_policy, parse_policy, policy_path

TEMPLATE = Path(__file__).resolve().parents[2] / "templates" / "trust.yaml"


def test_the_template_loads_and_caps_database_migrations_at_2():
    policy = load_policy(TEMPLATE)
    assert policy.default_level == 1 and policy.source == str(TEMPLATE)
    level, rule = policy.level_for("create", "Job", "shop", {"scenario": "db_migration"})
    assert (level, rule.id, rule.cap) == (2, "db-migrations", 2)
    # whatever the ladder says, never above the cap
    assert policy.level_for("create", "Job", "shop", {"scenario": "db_migration"}, overrides={"db-migrations": 4})[0] == 2
    assert TEMPLATE.read_text().splitlines()[rule.line - 1].strip() == "- id: db-migrations"
    assert policy.level_for("patch", "HorizontalPodAutoscaler", "shop", {})[1].id == "hpa-max-replicas"
    assert policy.level_for("patch", "HorizontalPodAutoscaler", "platform", {})[1].id == "platform-shared"
    assert policy.level_for("delete", "Secret", "shop", {}) == (1, None)
    assert set(LEVELS) == {1, 2, 3, 4}


RULES = """\
default_level: 2
rules:
  - id: narrow
    verbs: [patch]
    kinds: [HorizontalPodAutoscaler]
    namespaces: [shop]
    scenarios: ["hpa_*"]
    level: 4
  - id: broad
    kinds: ["*"]
    labels: {team: [shop, "pay*"]}
    level: 3
    cap: 3
"""


@pytest.mark.parametrize("verb,kind,ns,labels,expected", [
    ("patch", "HorizontalPodAutoscaler", "shop", {"scenario": "hpa_starvation"}, (4, "narrow")),
    ("patch", "HorizontalPodAutoscaler", "shop", {"scenario": "noise", "team": "shop"}, (3, "broad")),
    ("patch", "HorizontalPodAutoscaler", "shop", {}, (2, None)),  # a scenario matcher needs the label
    ("scale", "Deployment", "other", {"team": "payments"}, (3, "broad")),
    ("scale", "Deployment", None, {"team": "orders"}, (2, None)),
])
def test_first_match_wins_else_the_default(verb, kind, ns, labels, expected):
    level, rule = parse_policy(RULES).level_for(verb, kind, ns, labels)
    assert (level, rule.id if rule else None) == expected


def test_overrides_are_capped():
    policy = parse_policy(RULES)
    assert policy.level_for("scale", "Deployment", "x", {"team": "shop"}, overrides={"broad": 4})[0] == 3
    assert policy.level_for("scale", "Deployment", "x", {"team": "shop"}, overrides={"broad": 1})[0] == 1


BAD = [
    # (text, line, what the message must say)
    ("rules:\n  - id: a\n    level: 0\n", 3, "rules[0].level: 0 is not a level; write 1, 2, 3 or 4"),
    ("rules:\n  - id: a\n    level: 5\n", 3, "5 is not a level"),
    ("rules:\n  - id: a\n    level: three\n", 3, "'three' is not a level"),
    ("rules:\n  - id: a\n    level: true\n", 3, "True is not a level"),
    ("default_level: 7\nrules:\n  - id: a\n    level: 1\n", 1, "default_level: 7 is not a level"),
    ("rules:\n  - id: a\n    level: 3\n    cap: 2\n", 4, "rules[0].cap: 2 is below the rule's level 3; "
                                                       "a cap is the most a rule may ever reach: raise the cap"),
    ("rules:\n  - id: a\n    level: 1\n  - id: b\n    level: 1\n  - id: a\n    level: 2\n", 6,
     "rules[2].id: 'a' is already the id of the rule on line 2; give each rule its own id"),
    ("rules:\n  - id: a\n    kind: [Job]\n    level: 1\n", 3, "rules[0].kind: is not a key a trust policy has in a rule; "
                                                             "did you mean kinds?"),
    ("level: 1\nrules:\n  - id: a\n    level: 1\n", 1, "level: is not a key a trust policy has at the top"),
    ("rules:\n  - level: 1\n", 2, "rules[0].id: is missing"),
    ("rules:\n  - id: a\n", 2, "rules[0].level: is missing; give a level 1-4"),
    ("rules:\n  - id: a\n    level: 1\n    verbs: []\n", 4, "rules[0].verbs: must be a list of patterns"),
    ("rules:\n  - id: a\n    level: 1\n    namespaces: [shop, 3]\n", 4, "3 is not a name or a glob pattern"),
    ("rules:\n  - id: a\n    level: 1\n    level: 2\n", 4, "is given twice (first on line 3); keep one"),
    ("webhook: ftp://x\nrules:\n  - id: a\n    level: 1\n", 1, "webhook: is not an http(s) URL"),
    ("rules: []\n", 1, "rules: must be a list of at least one rule"),
    ("rules:\n  - id: a\n    level: [1\n", 4, "is not valid YAML"),
]


@pytest.mark.parametrize("text,line,says", BAD)
def test_a_bad_policy_file_names_the_file_the_line_and_the_fix(tmp_path, text, line, says):
    path = tmp_path / "trust.yaml"
    path.write_text(text)
    with pytest.raises(TrustPolicyError) as e:
        load_policy(path)
    assert e.value.line == line and e.value.path == str(path)
    assert str(e.value).startswith(f"{path} line {line}: ") and says in str(e.value)


def test_a_missing_file_and_the_environment(tmp_path, monkeypatch):
    with pytest.raises(TrustPolicyError, match="no such file; write one"):
        load_policy(tmp_path / "nope.yaml")
    monkeypatch.delenv("AFTERFIX_TRUST", raising=False)
    assert policy_path() == TEMPLATE
    mine = tmp_path / "mine.yaml"
    mine.write_text("rules:\n  - id: a\n    level: 4\n")
    monkeypatch.setenv("AFTERFIX_TRUST", str(mine))
    assert load_policy().rules[0].id == "a" and policy_path("x.yaml") == Path("x.yaml")
