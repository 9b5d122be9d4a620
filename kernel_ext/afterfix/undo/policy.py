"""The guard policy: which analysis watches an action whose trace recorded none.

A YAML file of rules, tried from the top; the first whose `kinds` and `namespaces` (glob
patterns, `fnmatch` style, case-sensitive; left out means "*") match the action's target wins:

    rules:
      - kinds: [Deployment, HorizontalPodAutoscaler]
        namespaces: [shop]
        metrics:                 # Argo AnalysisTemplate metrics[] items (afterfix.undo.analysis)
          - name: latency-p95
            ...

templates/guard-policy.yaml is the documented example. Every rule and every metric is checked
when the file loads; PolicyError names the file, the line (from YAML's node marks) and the fix.
The specs come back unbound (templates such as {{namespace}} still in them): `bind` them to the
action's target.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from afterfix.undo.analysis import AnalysisError, AnalysisSpec, parse_analysis

__all__ = ["load_policy", "Policy", "Rule", "PolicyError"]

POLICY_KEYS = ("rules",)
RULE_KEYS = ("kinds", "namespaces", "metrics")
MAX_BYTES = 1_000_000
MAX_NODES = 100_000  # aliases can make a small file a huge tree
_KIND_PATTERN = re.compile(r"[A-Za-z0-9*?\[\]!-]{1,63}")
_NAMESPACE_PATTERN = re.compile(r"[a-z0-9*?\[\]!-]{1,63}")
_MERGE = "tag:yaml.org,2002:merge"


class PolicyError(AnalysisError):
    """A policy file that cannot be used: the message names the file, the line and the fix."""

    def __init__(self, path: str, line: int | None, field: str | None, problem: str):
        super().__init__(f"{path} line {line}" if line else str(path), field, problem)
        self.path, self.line = path, line


@dataclass(frozen=True)
class Rule:
    """One rule: the targets it matches and the analyses that watch them (unbound)."""

    kinds: tuple[str, ...]
    namespaces: tuple[str, ...]
    metrics: tuple[AnalysisSpec, ...]
    line: int

    def matches(self, kind: str, namespace: str | None) -> bool:
        """Whether a target of `kind` in `namespace` (None or "" when cluster-scoped: only "*"
        matches it) falls under this rule."""
        return (any(fnmatch.fnmatchcase(kind, p) for p in self.kinds)
                and any(fnmatch.fnmatchcase(namespace or "", p) for p in self.namespaces))


@dataclass(frozen=True)
class Policy:
    """The rules of one policy file, in order."""

    path: str
    rules: tuple[Rule, ...]

    def rule_for(self, kind: str, namespace: str | None) -> Rule | None:
        """The first rule that matches, or None."""
        return next((rule for rule in self.rules if rule.matches(kind, namespace)), None)

    def analyses_for(self, kind: str, namespace: str | None) -> tuple[AnalysisSpec, ...]:
        """Every metric of the first matching rule (unbound), or () when no rule matches."""
        rule = self.rule_for(kind, namespace)
        return rule.metrics if rule else ()

    def analysis_for(self, kind: str, namespace: str | None) -> AnalysisSpec | None:
        """The first metric of the first matching rule (unbound), or None when no rule matches;
        `analyses_for` gives all of that rule's metrics."""
        specs = self.analyses_for(kind, namespace)
        return specs[0] if specs else None


def load_policy(path: str | os.PathLike) -> Policy:
    """The policy in the YAML file at `path`, every rule and metric checked (PolicyError)."""
    shown = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise PolicyError(shown, None, None, "no such file; write one (templates/guard-policy.yaml is an example) "
                          "or give the path of an existing one") from None
    except OSError as e:
        raise PolicyError(shown, None, None, f"cannot be read ({e.strerror}); check the path and its permissions") from None
    if len(data) > MAX_BYTES:
        raise PolicyError(shown, None, None, f"is {len(data):,} bytes, over the {MAX_BYTES:,} a policy may have; "
                          "a policy is a few rules")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise PolicyError(shown, line, None, "is not UTF-8 text; save the file as UTF-8") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise PolicyError(shown, mark.line + 1 if mark else None, None,
                          f"is not valid YAML: {e.problem or e.context}; fix the YAML there") from None
    except yaml.YAMLError as e:
        raise PolicyError(shown, None, None, f"is not valid YAML: {e}; fix the YAML") from None
    if root is None:
        raise PolicyError(shown, 1, None, "is empty; a policy needs rules: [...] (templates/guard-policy.yaml is an example)")
    doc = _Document(shown)
    return doc.policy(doc.plain(root, ()))


class _Document:
    """YAML nodes -> plain Python values, with the line of every key and item kept by path."""

    def __init__(self, path: str):
        self.path = path
        self.lines: dict[tuple, int] = {}
        self.nodes = 0
        self.constructor = yaml.SafeLoader("")

    def fail(self, at: tuple, field: str | None, problem: str):
        raise PolicyError(self.path, self.lines.get(at, 1), field, problem)

    def plain(self, node: yaml.Node, at: tuple) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            self.fail(at, None, f"expands to over {MAX_NODES:,} values (aliases?); write the rules out plainly")
        self.lines.setdefault(at, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE:
                    raise PolicyError(self.path, key_node.start_mark.line + 1, _dotted(at) or None,
                                      "merge keys (<<) are not supported; write the fields out")
                key = self.plain(key_node, at + ("<key>",))
                if not isinstance(key, str):
                    raise PolicyError(self.path, key_node.start_mark.line + 1, _dotted(at) or None,
                                      f"the key {key!r} is not text; quote it")
                if key in out:
                    raise PolicyError(self.path, key_node.start_mark.line + 1, _dotted(at + (key,)),
                                      f"is given twice (first on line {self.lines[at + (key,)]}); keep one")
                self.lines[at + (key,)] = key_node.start_mark.line + 1
                out[key] = self.plain(value_node, at + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            items = []
            for i, item in enumerate(node.value):
                self.lines[at + (i,)] = item.start_mark.line + 1
                items.append(self.plain(item, at + (i,)))
            return items
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as e:
            raise PolicyError(self.path, node.start_mark.line + 1, _dotted(at) or None,
                              f"cannot be read ({getattr(e, 'problem', None) or e}); write plain YAML values") from None

    def policy(self, data: Any) -> Policy:
        if not isinstance(data, dict):
            self.fail((), None, "must be a mapping with rules: [...] (templates/guard-policy.yaml is an example)")
        self.known(data, POLICY_KEYS, ())
        rules = data.get("rules")
        if not isinstance(rules, list) or not rules:
            self.fail(("rules",), "rules", "must be a list of at least one rule: - kinds: [...] namespaces: [...] "
                      "metrics: [...]")
        return Policy(self.path, tuple(self.rule(rule, i) for i, rule in enumerate(rules)))

    def rule(self, rule: Any, i: int) -> Rule:
        at = ("rules", i)
        if not isinstance(rule, dict):
            self.fail(at, _dotted(at), "must be a mapping with kinds, namespaces and metrics")
        self.known(rule, RULE_KEYS, at)
        kinds = self.patterns(rule, at, "kinds", _KIND_PATTERN, "a kind such as Deployment, or a glob such as *")
        namespaces = self.patterns(rule, at, "namespaces", _NAMESPACE_PATTERN,
                                   "a namespace such as shop, or a glob such as * or team-* (namespaces are lowercase)")
        metrics = rule.get("metrics")
        if not isinstance(metrics, list) or not metrics:
            self.fail(at + ("metrics",) if "metrics" in rule else at, _dotted(at + ("metrics",)),
                      "must be a list of at least one metric (Argo's AnalysisTemplate metrics[] items)")
        specs, names = [], {}
        for j, obj in enumerate(metrics):
            place = at + ("metrics", j)
            where = f"{self.path} line {self.lines[place]} {_dotted(place)}"
            try:
                spec = parse_analysis(obj, where=where)
            except AnalysisError as e:
                line = self.line_of(place, e.field)
                field = f"{_dotted(place)}.{e.field}" if e.field else _dotted(place)
                raise PolicyError(self.path, line, field, e.problem) from None
            if spec.name in names:
                self.fail(place + ("name",), _dotted(place + ("name",)),
                          f"{spec.name!r} is already the name of metrics[{names[spec.name]}] in this rule; "
                          "give each metric its own name")
            names[spec.name] = j
            specs.append(spec)
        return Rule(kinds, namespaces, tuple(specs), self.lines[at])

    def patterns(self, rule: dict, at: tuple, key: str, pattern: re.Pattern, example: str) -> tuple[str, ...]:
        value = rule.get(key, ["*"])
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            self.fail(at + (key,), _dotted(at + (key,)), f"must be a list of patterns, each {example}")
        for n, item in enumerate(items):
            if not isinstance(item, str) or not pattern.fullmatch(item):
                place = at + (key, n) if isinstance(value, list) else at + (key,)
                self.fail(place, _dotted(place), f"{item!r} is not {example}")
        return tuple(items)

    def known(self, data: dict, known: tuple[str, ...], at: tuple):
        for key in data:
            if key not in known:
                self.fail(at + (key,), _dotted(at + (key,)), f"is not a key a policy has here; known keys: "
                          f"{', '.join(known)}")

    def line_of(self, place: tuple, field: str | None) -> int:
        """The line of `field` (an analysis field path such as provider.afterfix.labels.k8s.namespace.name,
        whose label keys may hold dots) under `place`, or of the deepest part of it that exists."""
        parts = field.split(".") if field else []
        at, i = place, 0
        while i < len(parts):
            for j in range(len(parts), i, -1):
                key = ".".join(parts[i:j])
                if at + (key,) in self.lines:
                    at, i = at + (key,), j
                    break
            else:
                break
        return self.lines.get(at, 1)


def _dotted(at: tuple) -> str:
    out = ""
    for part in at:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
