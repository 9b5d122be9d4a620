"""Tool definitions as an agent recorded them (`gen_ai.tool.definitions`), and whether a call kept to them.

    defs = parse(text)                  # never raises: what cannot be used is listed in defs.problems
    defs.check("kubectl_get", args)     # None when the arguments fit, else why not, in a sentence

The GenAI conventions record definitions as a JSON array of `{"type": "function", "name": ...,
"parameters": <JSON schema>}`; OpenAI's request shape `{"type": "function", "function": {"name",
"parameters"}}` (and `input_schema` / `inputSchema`, as Anthropic and MCP name it) are read too. A
schema without `$schema` is draft-07, as the GenAI definition schema says.

The definitions are trace text, so untrusted: a value that is not JSON, not a list, or whose schemas
are not valid JSON schemas is reported as a problem and never raises. Schemas are only checked,
never fetched (a `$ref` to a URL is not followed), and their regular expressions run on RE2, whose
time is linear in the input, so a hostile `pattern` cannot stall a review (without google-re2,
patterns are not checked). jsonschema is imported on first use: with its optional format checkers
installed (as JupyterLab installs them) the import takes about a second, which a store without
definitions should not pay.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

try:
    import re2 as _re2
except ImportError:  # pragma: no cover - google-re2 is a dependency; the fallback skips patterns
    _re2 = None

MAX_TEXT = 1_000_000  # characters of definitions or arguments worth reading; beyond that, not checked
MAX_ERRORS = 50  # validation errors weighed to name the most telling one


@lru_cache(maxsize=1024)
def _regex(pattern: str):
    try:
        return _re2.compile(pattern)
    except Exception:  # RE2 refuses backreferences and lookarounds: leave such a pattern unchecked
        return None


def _search(pattern: Any, text: str) -> bool | None:
    if _re2 is None or not isinstance(pattern, str):
        return None
    compiled = _regex(pattern)
    return None if compiled is None else compiled.search(text) is not None


def _pattern(validator, pattern, instance, schema):
    import jsonschema

    if validator.is_type(instance, "string") and _search(pattern, instance) is False:
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator, patterns, instance, schema):
    if not validator.is_type(instance, "object") or not isinstance(patterns, dict):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _validator(schema: Any):
    """A validator for one tool's parameters, or a ValueError saying why the schema cannot be used."""
    import jsonschema
    from jsonschema.validators import Draft7Validator, extend, validator_for

    try:
        cls = validator_for(schema, default=Draft7Validator) if isinstance(schema, dict) else Draft7Validator
        cls.check_schema(schema)
        safe = extend(cls, {"pattern": _pattern, "patternProperties": _pattern_properties})
        return safe(schema)
    except jsonschema.SchemaError as e:
        raise ValueError(f"not a valid JSON schema ({_short(e.message)})") from None
    except Exception as e:  # any other refusal of hostile input (odd $schema values, deep nesting)
        raise ValueError(f"not a usable JSON schema ({type(e).__name__})") from None


def _short(text: Any, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class Definitions:
    """The tools one span declared: {name: validator, or None for a tool that takes any arguments}."""

    tools: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # what in the recorded value could not be used
    broken: dict[str, str] = field(default_factory=dict)  # tool name -> why its schema is not checked

    @property
    def usable(self) -> bool:
        """Some tool has a schema that can be checked (or takes any arguments); a value whose every
        schema is broken counts as no definitions at all."""
        return bool(self.tools)

    def check(self, tool: str | None, arguments: Any) -> str | None:
        """Why a call of `tool` with `arguments` (JSON text, or None when not recorded) breaks the
        definitions; None when it keeps to them or cannot be checked."""
        if not self.usable or tool is None:
            return None
        if tool not in self.tools and tool not in self.broken:
            names = sorted(self.tools) + sorted(self.broken)
            shown = ", ".join(names[:12]) + (", …" if len(names) > 12 else "")
            return f"{tool} is not among the {len(names)} tools defined ({shown})"
        validator = self.tools.get(tool)
        if validator is None or arguments is None:
            return None
        if isinstance(arguments, str):
            if len(arguments) > MAX_TEXT:
                return None
            try:
                arguments = json.loads(arguments)
            except (ValueError, RecursionError):
                return f"its arguments are not JSON: {_short(arguments, 80)!r}"
        from jsonschema.exceptions import best_match

        try:
            errors = list(itertools.islice(validator.iter_errors(arguments), MAX_ERRORS))
            error = best_match(errors)
        except Exception:  # an unresolvable $ref, a schema too deep: the call cannot be checked
            return None
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path)
        return f"{where + ': ' if where else ''}{_short(error.message)}"


def _entry(item: Any) -> tuple[str | None, Any, bool]:
    """(name, parameters schema, has a schema) of one definition in any of the accepted shapes."""
    if not isinstance(item, dict):
        return None, None, False
    inner = item.get("function") if isinstance(item.get("function"), dict) else item
    name = inner.get("name")
    for key in ("parameters", "input_schema", "inputSchema"):
        if key in inner and inner[key] is not None:
            return (name if isinstance(name, str) and name else None), inner[key], True
    return (name if isinstance(name, str) and name else None), None, False


def parse(value: Any) -> Definitions:
    """Recorded definitions (JSON text, or the list itself) as checkable tools; never raises."""
    defs = Definitions()
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            defs.problems.append(f"the definitions are {len(value):,} characters long; not checked")
            return defs
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            defs.problems.append("the definitions are not JSON")
            return defs
    if not isinstance(value, list):
        kind = {dict: "object", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), "null")
        defs.problems.append(f"the definitions are a JSON {kind}, not a list of tools")
        return defs
    skipped = 0
    for item in value:
        name, schema, has_schema = _entry(item)
        if name is None:
            skipped += 1
            continue
        if not has_schema:
            defs.tools[name] = None
            continue
        try:
            defs.tools[name] = _validator(schema)
        except ValueError as e:
            defs.broken[name] = str(e)
            defs.problems.append(f"{_short(name, 60)}: parameters {e}")
    if skipped:
        defs.problems.append(f"{skipped} definition{'s' if skipped != 1 else ''} without a name skipped")
    if not defs.usable and not defs.problems:
        defs.problems.append("the definitions list no tools")
    return defs
