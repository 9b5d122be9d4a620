"""Field paths of recorded state, resolved against a live Kubernetes object.

Traces record state as nested partial objects or as flat dotted paths (see analysis/diffs.py);
both flatten to paths such as

    spec.maxReplicas
    spec.template.spec.containers[name=app].env[name=DB_POOL_SIZE].value
    spec.template.metadata.annotations.kubectl.kubernetes.io/restartedAt

A dot inside a map key (annotations, labels, ConfigMap data) makes a path ambiguous, so paths are
split with the object in hand: at each map, the longest run of dotted parts that names a key of
the object wins, and under map fields whose keys are free text (annotations, labels, data, ...)
the rest of the path up to the next `[` is one key. The resulting segments get values out of an
object and build the strategic merge patch that sets them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from afterfix.analysis.diffs import field_label as label

__all__ = ["Key", "Item", "Index", "parse", "get", "MISSING", "strategic_patch", "label", "matches"]

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "<missing>", "__bool__": lambda self: False})()

# Map fields whose keys are free text (may hold dots): everything after them is one key.
FREE_KEYS = {"annotations", "labels", "data", "stringData", "binaryData", "matchLabels", "nodeSelector"}
_PIECE = re.compile(r"\[name=([^\]]*)\]|\[(\d+)\]|\.?([^.\[\]]+)")


@dataclass(frozen=True)
class Key:
    name: str


@dataclass(frozen=True)
class Item:
    """A list item picked by its `name` (containers, env): the strategic merge key."""
    name: str


@dataclass(frozen=True)
class Index:
    index: int


Segment = Key | Item | Index


def _pieces(path: str) -> list[tuple[str, str]]:
    out = []
    for named, index, plain in _PIECE.findall(path):
        out.append(("item", named) if named or (not index and not plain) else ("index", index) if index else ("key", plain))
    return out


def parse(path: str, *objects: Any) -> list[Segment]:
    """`path` as segments, splitting dotted keys by what `objects` (live, before, after) hold."""
    pieces = _pieces(path)
    segs: list[Segment] = []
    nodes = [o for o in objects if o is not None]
    i = 0
    while i < len(pieces):
        kind, text = pieces[i]
        if kind != "key":
            segs.append(Item(text) if kind == "item" else Index(int(text)))
            nodes = [_step(n, segs[-1]) for n in nodes]
            i += 1
            continue
        run = i
        while run < len(pieces) and pieces[run][0] == "key":
            run += 1
        keys = [p[1] for p in pieces[i:run]]
        take = 1
        if segs and isinstance(segs[-1], Key) and segs[-1].name in FREE_KEYS:
            take = len(keys)
        else:
            for n in range(len(keys), 1, -1):
                if any(isinstance(node, dict) and ".".join(keys[:n]) in node for node in nodes):
                    take = n
                    break
        segs.append(Key(".".join(keys[:take])))
        nodes = [_step(n, segs[-1]) for n in nodes]
        i += take
    return segs


def _step(node: Any, seg: Segment) -> Any:
    if isinstance(seg, Key):
        return node.get(seg.name, MISSING) if isinstance(node, dict) else MISSING
    if isinstance(seg, Index):
        return node[seg.index] if isinstance(node, list) and seg.index < len(node) else MISSING
    if isinstance(node, list):
        return next((x for x in node if isinstance(x, dict) and x.get("name") == seg.name), MISSING)
    return MISSING


def get(obj: Any, segs: list[Segment]) -> Any:
    """The value at `segs` in `obj`, or MISSING. An item named only by its name is the whole item."""
    node = obj
    for seg in segs:
        node = _step(node, seg)
        if node is MISSING:
            return MISSING
    return node


def strategic_patch(changes: list[tuple[list[Segment], Any]]) -> dict:
    """A strategic merge patch setting each path to its value (MISSING removes the field).

    Named list items carry their merge key (`name`), so only the named container or env var is
    touched. Positional list items cannot be addressed by a strategic patch: ValueError.
    """
    patch: dict = {}
    for segs, value in changes:
        if not segs or any(isinstance(s, Index) for s in segs):
            raise ValueError("a field inside a list addressed by position cannot be restored alone")
        _put(patch, segs, value)
    return patch


def _put(node: Any, segs: list[Segment], value: Any) -> None:
    seg, rest = segs[0], segs[1:]
    if isinstance(seg, Key):
        if not rest:
            node[seg.name] = None if value is MISSING else value
            return
        if not isinstance(node.get(seg.name), (dict, list)):
            node[seg.name] = [] if isinstance(rest[0], Item) else {}
        _put(node[seg.name], rest, value)
        return
    item = next((x for x in node if x.get("name") == seg.name), None)
    if item is None:
        item = {"name": seg.name}
        node.append(item)
    if rest:
        _put(item, rest, value)
    elif value is MISSING:
        item["$patch"] = "delete"
    elif isinstance(value, dict):
        item.update(value)


def tokens(path: str) -> list[str]:
    """The names along a path: env[name=X].value and env.X both end in X."""
    out = [a or b or c for a, b, c in _PIECE.findall(path)]
    if len(out) >= 2 and out[-1] == "value":
        out.pop()
    return out


def matches(wanted: str, path: str) -> bool:
    """Whether `--fields` entry `wanted` names `path`: the whole path, or the names at its end
    (`DB_POOL_SIZE`, `env.DB_POOL_SIZE`, `image`, `maxReplicas`)."""
    if wanted == path:
        return True
    want = tokens(wanted)
    have = tokens(path)
    return bool(want) and have[-len(want):] == want
