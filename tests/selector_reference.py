"""A small, obviously-correct reference for Calico selectors: a syntax tree, its meaning and its text.

The Rust engine in `epsync._core` is checked against this: hypothesis builds random trees,
renders them here, parses the text in Rust and compares the two evaluations. There is no
parser here on purpose; the reference only has to be easy to believe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class All:
    """`all()` (or `global()` when `global_` is set): matches everything."""

    global_: bool = False


@dataclass(frozen=True)
class Has:
    """`has(key)`: the label is present."""

    key: str


CompareOp = Literal["==", "!=", "contains", "starts with", "ends with"]


@dataclass(frozen=True)
class Compare:
    """`key <op> "value"`."""

    key: str
    op: CompareOp
    value: str


@dataclass(frozen=True)
class InSet:
    """`key in {...}`, or `key not in {...}` when `negated`."""

    key: str
    values: tuple[str, ...]
    negated: bool = False


@dataclass(frozen=True)
class Not:
    """`!operand`."""

    operand: Node


@dataclass(frozen=True)
class And:
    """`left && right`."""

    left: Node
    right: Node


@dataclass(frozen=True)
class Or:
    """`left || right`."""

    left: Node
    right: Node


Node = All | Has | Compare | InSet | Not | And | Or


def evaluate(node: Node, labels: Mapping[str, str]) -> bool:
    """Whether `labels` satisfy `node`. `!=` and `not in` match an absent label; the rest do not."""
    match node:
        case All():
            return True
        case Has(key):
            return key in labels
        case Compare(key, "!=", value):
            return labels.get(key) != value
        case Compare(key, op, value):
            if key not in labels:
                return False
            actual = labels[key]
            if op == "==":
                return actual == value
            if op == "contains":
                return value in actual
            if op == "starts with":
                return actual.startswith(value)
            return actual.endswith(value)
        case InSet(key, values, negated):
            found = key in labels and labels[key] in values
            return not found if negated else found
        case Not(operand):
            return not evaluate(operand, labels)
        case And(left, right):
            return evaluate(left, labels) and evaluate(right, labels)
        case Or(left, right):
            return evaluate(left, labels) or evaluate(right, labels)
    raise TypeError(f"not a selector node: {node!r}")


def quote(value: str) -> str:
    """A quoted string; there are no escapes, so use whichever quote the value lacks."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"a selector string cannot contain both kinds of quote: {value!r}")


# Calico's one-word spellings of the two-word operators (its tokenizer takes either).
ONE_WORD = {"starts with": "startswith", "ends with": "endswith", "not in": "notin"}


def render(node: Node, *, one_word: bool = False) -> str:
    """Calico selector text for `node`, with every `&&`, `||` and `!` operand in parentheses.

    With `one_word`, the two-word operators are written `startswith`, `endswith` and `notin`.
    """

    def spell(op: str) -> str:
        return ONE_WORD.get(op, op) if one_word else op

    match node:
        case All(global_):
            return "global()" if global_ else "all()"
        case Has(key):
            return f"has({key})"
        case Compare(key, op, value):
            return f"{key} {spell(op)} {quote(value)}"
        case InSet(key, values, negated):
            keyword = spell("not in") if negated else "in"
            return f"{key} {keyword} {{{', '.join(quote(v) for v in values)}}}"
        case Not(operand):
            return f"!({render(operand, one_word=one_word)})"
        case And(left, right):
            return f"({render(left, one_word=one_word)}) && ({render(right, one_word=one_word)})"
        case Or(left, right):
            return f"({render(left, one_word=one_word)}) || ({render(right, one_word=one_word)})"
    raise TypeError(f"not a selector node: {node!r}")


def depth(node: Node) -> int:
    """How deeply `render(node)` nests: each `(` and each `!` is one level."""
    match node:
        case Not(operand):
            return 2 + depth(operand)
        case And(left, right) | Or(left, right):
            return 1 + max(depth(left), depth(right))
    return 0
