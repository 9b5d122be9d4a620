"""What-if edits: paths into one decision's recorded inputs or into one recorded tool result, and
how an edit reaches the decisions after it.

Paths, as people type them (`afterfix replay ID --set PATH=VALUE`):
    inputs.metrics.latency_p95_ms   (or bare `metrics.latency_p95_ms`): into the recorded inputs
    inputs.hpa.0                    a number indexes a list
    tool:call-4b6d88da1ef4.value    into that tool call's recorded result (`tool:call-...` alone: all of it)

An edit names a place that exists (a typo is refused with the keys that are there), except that a
tool call with no recorded result can be given one whole. `sources` is provenance, not an
observation, and cannot be edited.

How an edit reaches inputs it does not name (decided here, written in docs/replay.md):
- a tool-result edit reaches every decision of the run that had that call, as a tool result (what
  an endpoint decider reads), and, inside the inputs of a decision whose `sources` name that call,
  every value under those input keys that equals the edited value's recorded one (where several
  do, those whose key is the edited key or a name the result itself carries, such as the metric a
  Prometheus result is for; failing that, all of them, marked ambiguous);
- an inputs edit of the first decision reaches a later decision of the run at the same path when
  that later decision's `sources` for the path's top key share a tool call with the first's, and
  its value there equals the recorded one: it read the same thing.
Each reached place is listed as its own edit with `via`, so the reviewer sees exactly what changed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from afterfix._exceptions import AfterfixError
from afterfix.review.recorded import SOURCES, RecordedDecision

__all__ = ["EditError", "Edit", "parse_edit", "parse_value", "apply_edits"]

_MISSING = object()


class EditError(AfterfixError):
    """A what-if path that names nothing in the decision (the message lists what is there)."""


@dataclass(frozen=True)
class Edit:
    path: str  # canonical: inputs.a.b or tool:<call_id>.a.b
    call_id: str | None  # None: into the inputs
    keys: tuple[str, ...]
    value: Any


def parse_value(text: str) -> Any:
    """`--set` values: JSON when the text is JSON (`3`, `0.5`, `null`, `{"a": 1}`), else the text."""
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_edit(path: str, value: Any) -> Edit:
    path = path.strip()
    if not path:
        raise EditError("an empty what-if path: give inputs.KEY[.KEY...] or tool:CALL_ID[.KEY...]")
    if path.startswith("tool:"):
        call_id, _, rest = path[5:].partition(".")
        if not call_id:
            raise EditError(f"{path!r}: no call id after 'tool:' (tool:call-...[.KEY...]; the replay lists the call ids)")
        keys = tuple(rest.split(".")) if rest else ()
        if any(k == "" for k in keys):
            raise EditError(f"{path!r}: an empty key between dots")
        return Edit(f"tool:{call_id}" + (f".{rest}" if rest else ""), call_id, keys, value)
    rest = path[len("inputs."):] if path.startswith("inputs.") else ("" if path == "inputs" else path)
    keys = tuple(rest.split(".")) if rest else ()
    if not keys:
        raise EditError(f"{path!r}: name a key inside the inputs (inputs.KEY[.KEY...]), not the whole inputs")
    if any(k == "" for k in keys):
        raise EditError(f"{path!r}: an empty key between dots")
    if keys[0] == SOURCES:
        raise EditError(f"{path!r}: inputs.{SOURCES} says which tool calls the inputs came from; it is not an "
                        "observation. Edit the tool result instead: tool:CALL_ID.KEY")
    return Edit("inputs." + ".".join(keys), None, keys, value)


def _step(container: Any, key: str, where: str) -> tuple[Any, Any]:
    """(container-level key, value) of `key` in `container`, or EditError naming what is there."""
    if isinstance(container, dict):
        if key not in container:
            shown = ", ".join(sorted(map(str, container))[:30]) or "(none)"
            raise EditError(f"{where}: no key {key!r}; the keys there are {shown}")
        return key, container[key]
    if isinstance(container, list):
        try:
            index = int(key)
        except ValueError:
            raise EditError(f"{where}: a list of {len(container)}; index it with a number (0-{len(container) - 1})") from None
        if not -len(container) <= index < len(container):
            raise EditError(f"{where}: index {index} is out of range; the list has {len(container)} items")
        return index, container[index]
    raise EditError(f"{where}: holds {type(container).__name__} {container!r}, which has no key {key!r}")


def get(value: Any, keys: tuple[str, ...], where: str) -> Any:
    for i, key in enumerate(keys):
        _, value = _step(value, key, ".".join((where, *keys[:i])))
    return value


def put(root: Any, keys: tuple[str, ...], new: Any, where: str) -> Any:
    """Set `keys` in `root` (in place); returns the old value."""
    node = root
    for i, key in enumerate(keys[:-1]):
        _, node = _step(node, key, ".".join((where, *keys[:i])))
    k, old = _step(node, keys[-1], ".".join((where, *keys[:-1])))
    node[k] = new
    return old


def _lookup(value: Any, keys: tuple[str, ...]) -> Any:
    try:
        return get(value, keys, "")
    except EditError:
        return _MISSING


def _same(a: Any, b: Any) -> bool:
    """Equal as recorded values: numbers by value (2 == 2.0), but a flag never stands for a count."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def _leaves(value: Any, keys: tuple[str, ...] = ()):
    yield keys, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, (*keys, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, (*keys, str(i)))


def _names(result: Any) -> set[str]:
    """The names a tool result carries about itself (`{"unit": "latency_p95_ms", "value": ...}`)."""
    return {v for v in result.values() if isinstance(v, str)} if isinstance(result, dict) else set()


def _propagate_tool(decision: RecordedDecision, inputs: dict, edit: Edit, old: Any, result: Any) -> list[dict]:
    """Write a tool-result edit into the inputs that came from that call (see the module docstring)."""
    keys = [k for k, ids in decision.sources().items() if edit.call_id in ids and k in inputs]
    found = [(k, *sub) for k in keys for sub, v in _leaves(inputs[k]) if _same(v, old)]
    if not found:
        return []
    named = {edit.keys[-1]} if edit.keys else set()
    named |= _names(result)
    narrowed = [p for p in found if p[-1] in named]
    chosen = narrowed or found
    ambiguous = len(chosen) > 1 and not narrowed
    out = []
    for path in chosen:
        put(inputs, path, copy.deepcopy(edit.value), "inputs")
        out.append({"path": "inputs." + ".".join(path), "old": old, "new": edit.value, "via": edit.path,
                    **({"ambiguous": True} if ambiguous else {})})
    return out


def apply_edits(decision: RecordedDecision, edits: list[Edit], *, first: RecordedDecision | None = None
                ) -> tuple[dict, dict, list[dict]]:
    """(inputs, tool results by call id, the edits as applied: {path, old, new[, via]}) for `decision`
    with `edits`; `first` is the decision the edits were written for (None: this one). Edits that do
    not reach a later decision are left out of its list; on the first one a path that names nothing
    raises EditError."""
    first = first or decision
    own = first is decision
    inputs = copy.deepcopy(decision.observations())
    results = {t.call_id: copy.deepcopy(t.result) for t in decision.tool_calls if t.call_id and t.result is not None}
    applied: list[dict] = []
    for edit in edits:
        if edit.call_id is None:
            if own:
                old = put(inputs, edit.keys, copy.deepcopy(edit.value), "inputs")
                applied.append({"path": edit.path, "old": old, "new": edit.value})
                continue
            old = _lookup(first.observations(), edit.keys)
            mine, theirs = set(decision.sources().get(edit.keys[0], [])), set(first.sources().get(edit.keys[0], []))
            if old is not _MISSING and mine & theirs and _same(_lookup(inputs, edit.keys), old):
                put(inputs, edit.keys, copy.deepcopy(edit.value), "inputs")
                applied.append({"path": edit.path, "old": old, "new": edit.value, "via": f"{first.decision_id}:{edit.path}"})
            continue
        call = decision.tool_call(edit.call_id)
        if call is None:
            if own:
                ids = ", ".join(t.call_id for t in decision.tool_calls if t.call_id) or "(none)"
                raise EditError(f"{edit.path}: decision {decision.decision_id} had no tool call {edit.call_id!r} before it; "
                                f"its calls are {ids}")
            continue
        where = f"tool:{edit.call_id}"
        if not edit.keys:
            old = call.result
            results[edit.call_id] = copy.deepcopy(edit.value)
        else:
            if call.result is None:
                raise EditError(f"{edit.path}: tool call {edit.call_id} has no recorded result; set it whole "
                                f"({where}=VALUE)")
            results.setdefault(edit.call_id, copy.deepcopy(call.result))
            old = put(results[edit.call_id], edit.keys, copy.deepcopy(edit.value), where)
        applied.append({"path": edit.path, "old": old, "new": edit.value})
        applied += _propagate_tool(decision, inputs, edit, old, call.result)
    return inputs, results, applied
