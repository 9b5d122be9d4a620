"""Label and field selectors as the Kubernetes API parses them (`app=web,tier!=db`,
`env in (prod,staging)`, `!canary`; `involvedObject.name=web`): each parses into a predicate, and a
malformed selector is a 400 `ApiError` that says which requirement failed."""

from __future__ import annotations

import re

__all__ = ["parse_label_selector", "parse_field_selector"]


_SET_RE = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_TERM_RE = re.compile(r"^\s*(!?\s*[\w./-]+|[\w./-]+\s*(=|==|!=)\s*[\w.-]*|[\w./-]+\s+(in|notin)\s+\([^)]*\))\s*$")


def parse_label_selector(selector: str | None):
    """A predicate over labels for a Kubernetes label selector string (=, ==, !=, in, notin, exists, !)."""
    if not selector:
        return lambda labels: True
    terms = []
    for part in _split_selector(selector):
        if not _TERM_RE.match(part):
            from afterfix.nightshift.cluster import ApiError

            raise ApiError(400, "BadRequest", f"unable to parse requirement {part.strip()!r} in label selector "
                           f"{selector!r}: use key=value, key!=value, key in (a,b), key notin (a,b), key or !key")
        m = _SET_RE.match(part)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
            terms.append((lambda got, k=key, v=values: got.get(k) in v) if op == "in"
                         else (lambda got, k=key, v=values: got.get(k) not in v))
        elif "!=" in part:
            key, value = (s.strip() for s in part.split("!=", 1))
            terms.append(lambda got, k=key, v=value: got.get(k) != v)
        elif "=" in part:
            key, value = (s.strip() for s in part.replace("==", "=").split("=", 1))
            terms.append(lambda got, k=key, v=value: got.get(k) == v)
        elif part.strip().startswith("!"):
            absent = part.strip()[1:].strip()
            terms.append(lambda got, k=absent: k not in got)
        elif part.strip():
            present = part.strip()
            terms.append(lambda got, k=present: k in got)
    return lambda labels: all(t(labels) for t in terms)


def _split_selector(selector: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in selector:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p for p in parts if p.strip()]


def parse_field_selector(selector: str | None):
    """A predicate over objects for an equality field selector (`metadata.name=x,involvedObject.uid!=y`)."""
    if not selector:
        return lambda obj: True
    terms = []
    for part in _split_selector(selector):
        negate = "!=" in part
        key, value = (s.strip() for s in part.replace("!=", "=").replace("==", "=").split("=", 1))
        terms.append((key.split("."), value, negate))

    def value_at(obj, path):
        for p in path:
            obj = obj.get(p) if isinstance(obj, dict) else None
        return "" if obj is None else str(obj)

    return lambda obj: all((value_at(obj, p) != v) if n else (value_at(obj, p) == v) for p, v, n in terms)
