"""Success and failure conditions: the small expression language of Argo Rollouts' analysis.

A condition tests one measurement, `result`: a number, a vector of numbers (what a Prometheus
instant query returns) or no data. Condition text comes from traces, written by a model, so it is
parsed, never evaluated as code: the text is cut into tokens from a short list (anything else is
refused with the piece and what is allowed), Argo's operators become Python's, `ast.parse` builds
the tree, and only whitelisted nodes become a small tree of evaluator objects, checked for types
once at parse time. Parse once, evaluate many times:

    cond = Condition.parse("result[0] < 300 && !isNaN(result[0])")
    cond.evaluate([212.0])  -> True

The language (Argo's, minus strings and what a numeric guard does not need):

- numbers (`300`, `0.05`, `1e3`), `true`, `false`, `result`;
- `result[0]`, `result[-1]`: an element of the vector; a single number is a one-element vector,
  so `result[0]` works on both;
- comparisons `< <= > >= == !=` (chains like `0 < result < 300` too); a one-element vector
  compared directly compares its element, so `result < 300` works for a scalar and for a
  one-series Prometheus vector; a longer vector must be indexed or quantified;
- `and`, `or`, `not`, also spelled `&&`, `||`, `!`, short-circuiting like Argo's;
- arithmetic `+ - * /` (IEEE: `x / 0` is ±Inf or NaN, as in Go), parentheses;
- `len(x)`, `isNaN(x)`, `isInf(x)`, `isNil(x)`, `default(x, d)`;
- `all(result, {# < 300})`, `any(...)`, `none(...)`: `#` is each element in turn.

No data (`None`) and an empty vector are the same here: `len` is 0, `isNil` is true, `default`
gives `d`, `all` is true and `any` false; anything else that needs a value fails at evaluation
with `EvaluationError`, which Argo (and analysis.measure_phase) counts as a measurement Error.
"""

from __future__ import annotations

import ast
import math
import numbers
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from afterfix._exceptions import AfterfixError

__all__ = ["Condition", "ConditionError", "EvaluationError", "MAX_LENGTH", "MAX_DEPTH", "ALLOWED"]

MAX_LENGTH = 500  # characters of condition text
MAX_DEPTH = 32  # nesting of the expression tree (and of brackets)

ALLOWED = ("numbers, true, false, result, result[i], comparisons < <= > >= == !=, and/or/not (&&, ||, !), "
           "+ - * /, parentheses, len(x), isNaN(x), isInf(x), isNil(x), default(x, d), "
           "all/any/none(result, {# < 300})")

_FUNCTIONS = {"len": 1, "isNaN": 1, "isInf": 1, "isNil": 1, "default": 2, "all": 2, "any": 2, "none": 2}
_NAMES = {"result", "true", "false", "and", "or", "not", *_FUNCTIONS}

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>&&|\|\||==|!=|<=|>=|\*\*|[<>!()\[\]{},+\-*/\#%.=&|'"])
""", re.VERBOSE | re.ASCII)
# Pieces a tokenizer recognises only to refuse them with a reason.
_REFUSED = {
    "**": "'**' (power) is not allowed: a huge exponent would hang the guard",
    "%": "'%' (remainder) is not allowed",
    ".": "'.' (attribute access) is not allowed",
    "=": "'=' is not allowed; compare with ==",
    "&": "'&' is not allowed; write && or and",
    "|": "'|' is not allowed; write || or or",
    "'": "strings are not allowed: conditions test numbers",
    '"': "strings are not allowed: conditions test numbers",
}
_SPELLING = {"&&": "and", "||": "or", "!": "not", "true": "True", "false": "False", "#": "_item", "{": "_closure(",
             "}": ")"}
_OPEN, _CLOSE = "([{", ")]}"

# Static types: what a node gives. "value" is a measured value (number, vector or no data).
BOOL, NUMBER, VALUE = "true/false", "a number", "a value"


class ConditionError(AfterfixError):
    """A condition's text is refused at parse time; the message names the condition, the piece and
    what is allowed."""


class EvaluationError(AfterfixError):
    """A valid condition cannot be evaluated on this result (no data, an index out of range, a
    vector where one number is needed). Argo counts this as a measurement Error."""


def show(text: str, limit: int = 80) -> str:
    """`text` quoted for a message: control and other unprintable characters escaped, cut at `limit`."""
    shown = repr(text[:limit])
    return shown + (f" (+{len(text) - limit} more characters)" if len(text) > limit else "")


# ---- the evaluator tree -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    type: str

    def compute(self, result: Any, items: tuple) -> Any:  # pragma: no cover - every node overrides it
        raise NotImplementedError


@dataclass(frozen=True)
class _Const(_Node):
    value: Any

    def compute(self, result, items):
        return self.value


@dataclass(frozen=True)
class _Result(_Node):
    def compute(self, result, items):
        return result


@dataclass(frozen=True)
class _Item(_Node):
    def compute(self, result, items):
        return items[-1]


@dataclass(frozen=True)
class _Index(_Node):
    target: _Node
    index: _Node
    text: str

    def compute(self, result, items):
        vector = _vector(self.target.compute(result, items))
        i = _number(self.index.compute(result, items), self.text)
        if i != int(i):
            raise EvaluationError(f"{self.text}: the index {i:g} is not a whole number")
        if not vector:
            raise EvaluationError(f"{self.text}: no data (the result is empty)")
        if not -len(vector) <= int(i) < len(vector):
            raise EvaluationError(f"{self.text}: index {int(i)} is out of range: the result holds "
                                  f"{len(vector)} value{'s' if len(vector) != 1 else ''}")
        return vector[int(i)]


@dataclass(frozen=True)
class _Unary(_Node):
    op: str
    operand: _Node
    text: str

    def compute(self, result, items):
        value = self.operand.compute(result, items)
        if self.op == "not":
            return not value
        number = _number(value, self.text)
        return -number if self.op == "-" else number


_ARITHMETIC: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: _divide(a, b)}
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b}


@dataclass(frozen=True)
class _Arithmetic(_Node):
    op: str
    left: _Node
    right: _Node
    text: str

    def compute(self, result, items):
        a = _number(self.left.compute(result, items), self.text)
        b = _number(self.right.compute(result, items), self.text)
        try:
            return _ARITHMETIC[self.op](a, b)
        except OverflowError:
            return math.inf


@dataclass(frozen=True)
class _Compare(_Node):
    ops: tuple[str, ...]
    operands: tuple[_Node, ...]
    text: str

    def compute(self, result, items):
        left = self._operand(0, result, items)
        for i, op in enumerate(self.ops):
            right = self._operand(i + 1, result, items)
            if not _COMPARE[op](left, right):
                return False
            left = right
        return True

    def _operand(self, i, result, items):
        node = self.operands[i]
        value = node.compute(result, items)
        return value if node.type == BOOL else _number(value, self.text)


@dataclass(frozen=True)
class _BoolOp(_Node):
    op: str
    values: tuple[_Node, ...]

    def compute(self, result, items):
        for node in self.values:
            value = node.compute(result, items)
            if value == (self.op == "or"):  # short-circuit: `len(result) == 0 || result[0] < 300`
                return value
        return self.op == "and"


@dataclass(frozen=True)
class _Call(_Node):
    name: str
    args: tuple[_Node, ...]
    text: str

    def compute(self, result, items):
        value = self.args[0].compute(result, items)
        if self.name == "len":
            return float(len(_vector(value)))
        if self.name == "isNil":
            return not _vector(value)
        if self.name == "default":
            return self.args[1].compute(result, items) if not _vector(value) else value
        number = _number(value, self.text)
        return math.isnan(number) if self.name == "isNaN" else math.isinf(number)


@dataclass(frozen=True)
class _Quantifier(_Node):
    name: str
    vector: _Node
    body: _Node

    def compute(self, result, items):
        hits = (self.body.compute(result, items + (x,)) for x in _vector(self.vector.compute(result, items)))
        if self.name == "all":
            return all(hits)
        found = any(hits)
        return found if self.name == "any" else not found


def _vector(value: Any) -> tuple:
    if value is None:
        return ()
    return value if isinstance(value, tuple) else (value,)


def _number(value: Any, text: str) -> float:
    if isinstance(value, float):
        return value
    if value is None or value == ():
        raise EvaluationError(f"{text}: no data; say what no data means, e.g. default(result, 0) or "
                              "len(result) == 0 || result[0] < 300")
    if isinstance(value, tuple):
        if len(value) == 1:
            return value[0]
        raise EvaluationError(f"{text}: the result holds {len(value)} values; pick one (result[0]) or test each "
                              "(all(result, {# < 300}))")
    raise EvaluationError(f"{text}: {value!r} is not a number")  # pragma: no cover - the type check prevents it


def _divide(a: float, b: float) -> float:
    if b != 0:
        return a / b
    if a == 0 or math.isnan(a):
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


# ---- parsing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """One parsed condition. `Condition.parse(text)` refuses what is not allowed (ConditionError);
    `evaluate(result)` gives True or False, or raises EvaluationError when `result` cannot answer."""

    text: str
    tree: _Node = field(repr=False, compare=False)

    @classmethod
    def parse(cls, text: Any) -> "Condition":
        if not isinstance(text, str):
            raise ConditionError(f"condition {text!r} is not text; write it as a string such as \"result < 300\"")
        if not text.strip():
            raise ConditionError("condition is empty; write a test such as \"result < 300\", or leave the field out")
        if len(text) > MAX_LENGTH:
            raise ConditionError(f"condition {show(text)} is {len(text)} characters long, over the {MAX_LENGTH} "
                                 "allowed; a condition is one short test such as \"result < 300\"")
        source, tokens = _translate(text)
        try:
            expression = ast.parse(source, mode="eval")
        except SyntaxError as e:
            if not e.offset or e.offset > len(source):
                raise ConditionError(f"condition {show(text)} ends before its test is complete; allowed: {ALLOWED}") from None
            column = _original_column(tokens, e.offset - 1)
            raise ConditionError(f"condition {show(text)} is not well formed near column {column + 1} "
                                 f"({show(text[column:column + 12])}); allowed: {ALLOWED}") from None
        except (RecursionError, MemoryError, ValueError):
            raise ConditionError(f"condition {show(text)} is nested too deeply; allowed: {ALLOWED}") from None
        tree = _Compiler(text, tokens).node(expression.body, 1)
        if tree.type != BOOL:
            raise ConditionError(f"condition {show(text)} gives {tree.type}, not true/false; compare it, e.g. "
                                 "\"result < 300\"")
        return cls(text, tree)

    def evaluate(self, result: Any) -> bool:
        """Whether the condition holds for `result`: a number, a sequence of numbers, or None (no data)."""
        return bool(self.tree.compute(measured(result), ()))

    def __str__(self) -> str:
        return self.text


def measured(result: Any) -> Any:
    """`result` as conditions see it: float, tuple of floats, or None. TypeError for anything else."""
    if result is None:
        return None
    if hasattr(result, "tolist"):  # numpy arrays and scalars
        result = result.tolist()
    if isinstance(result, numbers.Real) and not isinstance(result, bool):
        return float(result)
    if isinstance(result, Sequence) and not isinstance(result, (str, bytes)):
        values = tuple(result)
        if all(isinstance(x, numbers.Real) and not isinstance(x, bool) for x in values):
            return tuple(float(x) for x in values)
    raise TypeError(f"result {result!r} is not a number, a list of numbers or None (no data)")


def _translate(text: str) -> tuple[str, list[tuple[int, int, int, int]]]:
    """Python source for `text` and, per token, (start, end) in the source and (start, end) in
    `text`. Every piece of `text` must be a known token; the first that is not is refused here."""
    out: list[str] = []
    tokens: list[tuple[int, int, int, int]] = []
    length, depth, closures, pos = 0, [], 0, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            _refuse(text, pos, f"{ascii(text[pos])} is not allowed")
        kind, piece = m.lastgroup, m.group()
        if kind == "name" and piece not in _NAMES:
            _refuse(text, pos, f"name {show(piece)} is not allowed")
        if piece in _REFUSED:
            _refuse(text, pos, _REFUSED[piece])
        if piece in _OPEN:
            depth.append(piece)
            closures += piece == "{"
            if len(depth) > MAX_DEPTH:
                _refuse(text, pos, f"brackets are nested more than {MAX_DEPTH} deep")
        elif piece in _CLOSE:
            if not depth or _OPEN[_CLOSE.index(piece)] != depth[-1]:
                _refuse(text, pos, f"{show(piece)} closes nothing that is open")
            closures -= depth.pop() == "{"
        elif piece == "#" and not closures:
            _refuse(text, pos, "'#' (each element) is only allowed inside a closure, as in all(result, {# < 300})")
        if kind != "space":
            piece = _SPELLING.get(piece, piece)
            if out:
                out.append(" ")
                length += 1
            tokens.append((length, length + len(piece), pos, m.end()))
            out.append(piece)
            length += len(piece)
        pos = m.end()
    if depth:
        _refuse(text, len(text), f"{show(depth[-1])} is never closed")
    return "".join(out), tokens


def _refuse(text: str, pos: int, reason: str):
    raise ConditionError(f"condition {show(text)}: {reason} (column {pos + 1}); allowed: {ALLOWED}")


def _original_column(tokens: list[tuple[int, int, int, int]], at: int) -> int:
    column = 0
    for start, _, text_at, _ in tokens:
        if start > at:
            break
        column = text_at
    return column


class _Compiler:
    """Python AST -> evaluator tree, whitelisting node kinds and checking types."""

    def __init__(self, text: str, tokens: list[tuple[int, int, int, int]]):
        self.text, self.tokens = text, tokens

    def refuse(self, reason: str):
        raise ConditionError(f"condition {show(self.text)}: {reason}; allowed: {ALLOWED}")

    def piece(self, node: ast.AST) -> str:
        """The text of `node` as the condition spells it."""
        inside = [(a, b) for start, end, a, b in self.tokens if node.col_offset <= start and end <= node.end_col_offset]
        return self.text[inside[0][0]:inside[-1][1]] if inside else ast.unparse(node)

    def node(self, node: ast.AST, depth: int, item: bool = False) -> _Node:
        if depth > MAX_DEPTH:
            self.refuse(f"it is nested more than {MAX_DEPTH} deep")
        d = depth + 1
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool):
                return _Const(BOOL, node.value)
            if isinstance(node.value, (int, float)):
                try:
                    return _Const(NUMBER, float(node.value))
                except OverflowError:
                    self.refuse(f"the number {show(self.piece(node), 20)} is too large")
            self.refuse(f"{show(self.piece(node))} is not allowed")  # pragma: no cover - tokens allow no other constant
        if isinstance(node, ast.Name):
            if node.id == "result":
                return _Result(VALUE)
            if node.id == "_item" and item:
                return _Item(NUMBER)
            self.refuse(f"{show(self.piece(node))} is not a value here")
        if isinstance(node, ast.Subscript):
            target, index = self.node(node.value, d, item), self.node(node.slice, d, item)
            if target.type == BOOL or index.type == BOOL:
                self.refuse(f"{show(self.piece(node))}: index a value with a number, as in result[0]")
            return _Index(NUMBER, target, index, self.piece(node))
        if isinstance(node, ast.UnaryOp):
            operand = self.node(node.operand, d, item)
            if isinstance(node.op, ast.Not):
                self.want_bool(operand, node.operand, "not / !")
                return _Unary(BOOL, "not", operand, self.piece(node))
            if isinstance(node.op, (ast.USub, ast.UAdd)):
                self.want_number(operand, node.operand, "-")
                return _Unary(NUMBER, "-" if isinstance(node.op, ast.USub) else "+", operand, self.piece(node))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = self.node(node.left, d, item), self.node(node.right, d, item)
            op = _BINOPS[type(node.op)]
            self.want_number(left, node.left, op)
            self.want_number(right, node.right, op)
            return _Arithmetic(NUMBER, op, left, right, self.piece(node))
        if isinstance(node, ast.BoolOp):
            op = "and" if isinstance(node.op, ast.And) else "or"
            values = tuple(self.node(v, d, item) for v in node.values)
            for value, source in zip(values, node.values):
                self.want_bool(value, source, f"{op} / {'&&' if op == 'and' else '||'}")
            return _BoolOp(BOOL, op, values)
        if isinstance(node, ast.Compare) and all(type(op) in _CMPOPS for op in node.ops):
            operands = tuple(self.node(v, d, item) for v in (node.left, *node.comparators))
            ops = tuple(_CMPOPS[type(op)] for op in node.ops)
            for i, op in enumerate(ops):
                a, b = operands[i], operands[i + 1]
                if (a.type == BOOL) != (b.type == BOOL):
                    self.refuse(f"{show(self.piece(node))} compares true/false with a number")
                if a.type == BOOL and op not in ("==", "!="):
                    self.refuse(f"{show(self.piece(node))}: true/false can only be compared with == or !=")
            return _Compare(BOOL, ops, operands, self.piece(node))
        if isinstance(node, ast.Call):
            return self.call(node, d, item)
        self.refuse(f"{show(self.piece(node))} ({_KIND.get(type(node), type(node).__name__)}) is not allowed")

    def call(self, node: ast.Call, d: int, item: bool) -> _Node:
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in _FUNCTIONS:
            self.refuse(f"{show(self.piece(node))} calls something that is not a function here")
        if node.keywords or len(node.args) != _FUNCTIONS[name] or any(isinstance(a, ast.Starred) for a in node.args):
            self.refuse(f"{name}() takes {_FUNCTIONS[name]} argument{'s' if _FUNCTIONS[name] > 1 else ''}: "
                        f"{_USAGE[name]}")
        if name in ("all", "any", "none"):
            vector, closure = node.args
            if not (isinstance(closure, ast.Call) and isinstance(closure.func, ast.Name) and closure.func.id == "_closure"
                    and len(closure.args) == 1 and not closure.keywords):
                self.refuse(f"the second argument of {name}() is a closure in braces: {_USAGE[name]}")
            values = self.node(vector, d, item)
            self.want_number(values, vector, f"{name}()")
            body = self.node(closure.args[0], d + 1, True)
            self.want_bool(body, closure.args[0], f"the closure of {name}()")
            return _Quantifier(BOOL, name, values, body)
        args = tuple(self.node(a, d, item) for a in node.args)
        for arg, source in zip(args, node.args):
            self.want_number(arg, source, f"{name}()")
        if name == "default":
            kind = VALUE if VALUE in (args[0].type, args[1].type) else NUMBER
            return _Call(kind, name, args, self.piece(node))
        return _Call(NUMBER if name == "len" else BOOL, name, args, self.piece(node))

    def want_bool(self, value: _Node, source: ast.AST, what: str):
        if value.type != BOOL:
            self.refuse(f"{what} needs true/false, and {show(self.piece(source))} gives {value.type}; compare it, "
                        "e.g. result < 300")

    def want_number(self, value: _Node, source: ast.AST, what: str):
        if value.type == BOOL:
            self.refuse(f"{what} needs a number, and {show(self.piece(source))} gives true/false")


_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_CMPOPS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
_USAGE = {"len": "len(result)", "isNaN": "isNaN(result[0])", "isInf": "isInf(result[0])", "isNil": "isNil(result)",
          "default": "default(result, 0)", "all": "all(result, {# < 300})", "any": "any(result, {# > 0.05})",
          "none": "none(result, {# > 0.05})"}
_KIND = {ast.Tuple: "a tuple", ast.List: "a list", ast.Slice: "a slice", ast.IfExp: "a conditional",
         ast.Lambda: "a lambda", ast.Attribute: "attribute access", ast.Dict: "a map", ast.Set: "a set",
         ast.BinOp: "this operator", ast.Compare: "this comparison", ast.UnaryOp: "this operator"}
