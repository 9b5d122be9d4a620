"""The trust policy: which level an agent's action gets, from its verb, kind, namespace and labels.

A YAML file of rules, tried from the top; the first whose matchers all match the action wins,
and an action no rule matches gets `default_level`:

    default_level: 1                 # 1 when left out
    webhook: https://hooks.example/  # optional: where Level 3 notifications go
    rules:
      - id: db-migrations            # unique; the ladder and the findings name rules by it
        verbs: [create]              # glob patterns (fnmatch, case-sensitive); left out: any
        kinds: [Job]
        namespaces: ["*"]
        scenarios: [db_migration]    # matches the action's "scenario" label
        labels: {team: [shop]}       # any other label the action carries
        level: 2
        cap: 2                       # never above 2, whatever the ladder suggests

Levels (LEVELS): 1 alert and recommend, 2 fix with approval, 3 fix and inform, 4 fix and report.
The labels of an action are {"scenario": the afterfix.scenario of its run} plus every
`afterfix.labels.<name>` attribute of its action span (docs/trust.md).

Every rule is checked when the file loads; TrustPolicyError names the file, the line (from
YAML's node marks, read as undo/policy.py reads guard policies) and the fix. Which file:
`policy_path()` (an explicit path, else $AFTERFIX_TRUST, else templates/trust.yaml).
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from afterfix.templates import find_template, template_places

import yaml

from afterfix._exceptions import AfterfixError

__all__ = ["LEVELS", "Rule", "TrustPolicy", "TrustPolicyError", "load_policy", "parse_policy", "policy_path",
           "default_policy_path", "ENV_TRUST", "DEFAULT_POLICY"]

LEVELS = {1: "alert and recommend", 2: "fix with approval", 3: "fix and inform", 4: "fix and report"}
ENV_TRUST = "AFTERFIX_TRUST"
DEFAULT_POLICY = "trust.yaml"  # in templates/
POLICY_KEYS = ("default_level", "webhook", "rules")
RULE_KEYS = ("id", "description", "verbs", "kinds", "namespaces", "scenarios", "labels", "level", "cap")
MAX_BYTES = 1_000_000
EXAMPLE = "templates/trust.yaml is an example"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_PATTERN = re.compile(r"[A-Za-z0-9_.:/*?\[\]!-]{1,253}")
_LABEL_KEY = re.compile(r"[A-Za-z0-9_.-]{1,63}")


class TrustPolicyError(AfterfixError, ValueError):
    """A trust policy that cannot be used: the message names the file, the line, the field and the fix."""

    def __init__(self, path: str, line: int | None, field: str | None, problem: str):
        where = f"{path} line {line}" if line else str(path)
        super().__init__(f"{where}: {field}: {problem}" if field else f"{where}: {problem}")
        self.path, self.line, self.field, self.problem = path, line, field, problem


@dataclass(frozen=True)
class Rule:
    """One rule: what it matches (empty: anything) and the level it gives, never above `cap`."""

    id: str
    level: int
    cap: int | None = None
    verbs: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    scenarios: tuple[str, ...] = ()
    labels: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    description: str = ""
    line: int = 0

    def matches(self, verb: str, kind: str, namespace: str | None, labels: Mapping[str, str] | None = None) -> bool:
        """Whether an action of `verb` on `kind` in `namespace` ("" or None when cluster-scoped),
        carrying `labels`, falls under this rule. A label matcher needs the label to be there."""
        labels = labels or {}
        if not (_any(self.verbs, verb) and _any(self.kinds, kind) and _any(self.namespaces, namespace or "")):
            return False
        if self.scenarios and not _any(self.scenarios, labels.get("scenario")):
            return False
        return all(_any(patterns, labels.get(key)) for key, patterns in self.labels.items())

    def capped(self, level: int) -> int:
        return min(level, self.cap) if self.cap is not None else level

    def to_dict(self) -> dict:
        return {"id": self.id, "level": self.level, "cap": self.cap, "verbs": list(self.verbs),
                "kinds": list(self.kinds), "namespaces": list(self.namespaces), "scenarios": list(self.scenarios),
                "labels": {k: list(v) for k, v in self.labels.items()}, "description": self.description,
                "line": self.line}


def _any(patterns: tuple[str, ...], value: str | None) -> bool:
    if not patterns:
        return True
    return value is not None and any(fnmatch.fnmatchcase(str(value), p) for p in patterns)


@dataclass(frozen=True)
class TrustPolicy:
    """The rules of one policy, in order (first match wins), and the level of everything else."""

    rules: tuple[Rule, ...]
    default_level: int = 1
    source: str = "<text>"
    webhook: str | None = None

    def match(self, verb: str, kind: str, namespace: str | None, labels: Mapping[str, str] | None = None) -> Rule | None:
        """The first rule that matches, or None (the default level applies)."""
        return next((r for r in self.rules if r.matches(verb, kind, namespace, labels)), None)

    def level_for(self, verb: str, kind: str, namespace: str | None, labels: Mapping[str, str] | None = None, *,
                  overrides: Mapping[str, int] | None = None) -> tuple[int, Rule | None]:
        """(level, rule): the matching rule's level, or its level in `overrides` (the ladder's
        promotions and demotions, by rule id), never above the rule's cap; the default level
        when no rule matches."""
        rule = self.match(verb, kind, namespace, labels)
        if rule is None:
            return self.default_level, None
        level = (overrides or {}).get(rule.id, rule.level)
        return rule.capped(int(level)), rule

    def rule(self, rule_id: str) -> Rule:
        """The rule with this id; KeyError naming the ids there are."""
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(f"{self.source}: no rule {rule_id!r}; its rules are {', '.join(r.id for r in self.rules) or 'none'}")


# ---- which file ----------------------------------------------------------------------------------


def default_policy_path() -> Path:
    """templates/trust.yaml: from AFTERFIX_TEMPLATES, else the checkout, else the installed share folder."""
    found = find_template(DEFAULT_POLICY)
    if found is not None:
        return found
    places = template_places()
    raise TrustPolicyError(DEFAULT_POLICY, None, None, f"not found in {', '.join(map(str, places))}; give a policy "
                           f"file with --trust FILE or ${ENV_TRUST}, or set AFTERFIX_TEMPLATES to the templates folder")


def policy_path(path: str | os.PathLike | None = None) -> Path:
    """The policy file to use: `path`, else $AFTERFIX_TRUST, else templates/trust.yaml."""
    if path is not None:
        return Path(path)
    if os.environ.get(ENV_TRUST):
        return Path(os.environ[ENV_TRUST]).expanduser()
    return default_policy_path()


# ---- reading -------------------------------------------------------------------------------------


def load_policy(path: str | os.PathLike | None = None) -> TrustPolicy:
    """The policy in the YAML file at `path` (None: `policy_path()`), every rule checked (TrustPolicyError)."""
    path = policy_path(path)
    shown = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TrustPolicyError(shown, None, None, f"no such file; write one ({EXAMPLE}) or give the path of an "
                               "existing one") from None
    except OSError as e:
        raise TrustPolicyError(shown, None, None, f"cannot be read ({e.strerror}); check the path and its "
                               "permissions") from None
    if len(data) > MAX_BYTES:
        raise TrustPolicyError(shown, None, None, f"is {len(data):,} bytes, over the {MAX_BYTES:,} a policy may have; "
                               "a policy is a few rules")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TrustPolicyError(shown, data[:e.start].count(b"\n") + 1, None,
                               "is not UTF-8 text; save the file as UTF-8") from None
    return parse_policy(text, source=shown)


def parse_policy(text: str, source: str = "<text>") -> TrustPolicy:
    """The policy in `text` (YAML); `source` names it in errors."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise TrustPolicyError(source, mark.line + 1 if mark else None, None,
                               f"is not valid YAML: {e.problem or e.context}; fix the YAML there") from None
    except yaml.YAMLError as e:
        raise TrustPolicyError(source, None, None, f"is not valid YAML: {e}; fix the YAML") from None
    if root is None:
        raise TrustPolicyError(source, 1, None, f"is empty; a policy needs rules: [...] ({EXAMPLE})")
    return _Reader(source).policy(root)


class _Reader:
    """YAML nodes -> a TrustPolicy. The node walk (plain values, the line of every key and item,
    refusing merge keys, duplicate keys and alias bombs) is undo.policy's, shared rather than copied."""

    def __init__(self, source: str):
        from afterfix.undo.policy import _Document

        self.source = source
        self.doc = _Document(source)

    @property
    def lines(self) -> dict[tuple, int]:
        return self.doc.lines

    def fail(self, at: tuple, field: str | None, problem: str):
        raise TrustPolicyError(self.source, self.lines.get(at, 1), field, problem)

    def policy(self, root: yaml.Node) -> TrustPolicy:
        from afterfix.undo.policy import PolicyError

        try:
            data = self.doc.plain(root, ())
        except PolicyError as e:
            raise TrustPolicyError(self.source, e.line, e.field, e.problem) from None
        if not isinstance(data, dict):
            self.fail((), None, f"must be a mapping with rules: [...] ({EXAMPLE})")
        self.known(data, POLICY_KEYS, ())
        default = self.level(data, (), "default_level") if "default_level" in data else 1
        webhook = data.get("webhook")
        if webhook is not None:
            parts = urllib.parse.urlsplit(webhook) if isinstance(webhook, str) else None
            if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
                self.fail(("webhook",), "webhook", "is not an http(s) URL; give the webhook's full URL "
                          "(https://hooks.example.com/...), or leave it out and set $AFTERFIX_WEBHOOK")
        rules = data.get("rules")
        if not isinstance(rules, list) or not rules:
            self.fail(("rules",), "rules", "must be a list of at least one rule: - id: ... level: N")
        out: list[Rule] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(rules):
            rule = self.rule(item, i)
            if rule.id in seen:
                self.fail(("rules", i, "id"), f"rules[{i}].id",
                          f"{rule.id!r} is already the id of the rule on line {seen[rule.id]}; give each rule its own id")
            seen[rule.id] = rule.line
            out.append(rule)
        return TrustPolicy(tuple(out), default, self.source, webhook)

    def rule(self, item: Any, i: int) -> Rule:
        at = ("rules", i)
        name = f"rules[{i}]"
        if not isinstance(item, dict):
            self.fail(at, name, "must be a mapping with id, level and what it matches (verbs, kinds, namespaces, "
                      "scenarios, labels)")
        self.known(item, RULE_KEYS, at)
        rule_id = item.get("id")
        if "id" not in item:
            self.fail(at, f"{name}.id", "is missing; give the rule an id such as hpa-patches (the ladder and the "
                      "findings name rules by it)")
        if not isinstance(rule_id, str) or not _ID.fullmatch(rule_id):
            self.fail(at + ("id",), f"{name}.id", f"{rule_id!r} is not an id: letters, digits, '-', '_' or '.', "
                      "at most 63, such as hpa-patches")
        if "level" not in item:
            self.fail(at, f"{name}.level", f"is missing; give a level 1-4 ({_levels()})")
        level = self.level(item, at, "level")
        cap = self.level(item, at, "cap") if item.get("cap") is not None else None
        if cap is not None and cap < level:
            self.fail(at + ("cap",), f"{name}.cap", f"{cap} is below the rule's level {level}; a cap is the most a "
                      f"rule may ever reach: raise the cap to {level} or more, or lower the level")
        description = item.get("description", "")
        if not isinstance(description, str):
            self.fail(at + ("description",), f"{name}.description", "must be text; quote it")
        labels_value = item.get("labels", {})
        if not isinstance(labels_value, dict):
            self.fail(at + ("labels",), f"{name}.labels", "must be a mapping of label to patterns, e.g. {team: [shop]}")
        labels: dict[str, tuple[str, ...]] = {}
        for key in labels_value:
            if not _LABEL_KEY.fullmatch(key):
                self.fail(at + ("labels", key), f"{name}.labels.{key}", "is not a label name: letters, digits, "
                          "'-', '_' or '.'")
            if key == "scenario":
                self.fail(at + ("labels", key), f"{name}.labels.scenario", "write the scenario as the rule's "
                          "scenarios: [...]")
            labels[key] = self.patterns(labels_value, at + ("labels",), key, f"{name}.labels.{key}")
        return Rule(rule_id, level, cap,
                    verbs=self.patterns(item, at, "verbs", f"{name}.verbs"),
                    kinds=self.patterns(item, at, "kinds", f"{name}.kinds"),
                    namespaces=self.patterns(item, at, "namespaces", f"{name}.namespaces"),
                    scenarios=self.patterns(item, at, "scenarios", f"{name}.scenarios"),
                    labels=labels, description=description, line=self.lines[at])

    def level(self, data: dict, at: tuple, key: str) -> int:
        value = data[key]
        if type(value) is not int or value not in LEVELS:
            shown = f"rules[{at[1]}].{key}" if at else key
            self.fail(at + (key,), shown, f"{value!r} is not a level; write 1, 2, 3 or 4 ({_levels()})")
        return value

    def patterns(self, data: dict, at: tuple, key: str, shown: str) -> tuple[str, ...]:
        if key not in data:
            return ()
        value = data[key]
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            self.fail(at + (key,), shown, "must be a list of patterns such as [patch, scale] or [\"*\"]; "
                      "leave the key out to match anything")
        for n, p in enumerate(items):
            if not isinstance(p, str) or not _PATTERN.fullmatch(p):
                place = at + (key, n) if isinstance(value, list) else at + (key,)
                self.fail(place, shown, f"{p!r} is not a name or a glob pattern such as Deployment, shop, team-* or *")
        return tuple(items)

    def known(self, data: dict, known: tuple[str, ...], at: tuple):
        for key in data:
            if key not in known:
                shown = f"rules[{at[1]}].{key}" if at else str(key)
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                self.fail(at + (key,), shown, f"is not a key a trust policy has {'in a rule' if at else 'at the top'}; "
                          f"{hint}known keys: {', '.join(known)}")


def _levels() -> str:
    return ", ".join(f"{k} {v}" for k, v in LEVELS.items())
