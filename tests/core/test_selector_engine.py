"""The Rust selector engine (`epsync._core.Selector`) against the Python reference, plus its errors and limits."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st

from epsync._core import MAX_SELECTOR_DEPTH, MAX_SELECTOR_LENGTH, Selector, SelectorError
from tests.selector_reference import All, And, Compare, Has, InSet, Node, Not, Or, depth, evaluate, render

# Small alphabets, so that random selectors and random labels actually meet.
KEYS = st.sampled_from(["a", "b", "app.kubernetes.io/name", "x-y_z", "projectcalico.org/namespace", "in", "has"])
VALUES = st.one_of(
    st.text(alphabet="ab", max_size=3),
    st.text(alphabet="ab '", max_size=3),
    st.text(alphabet='ab"', max_size=3),
    st.sampled_from(["ü", "&& || (", "a,b}"]),
)
LABELS = st.dictionaries(KEYS, VALUES, max_size=5)

LEAVES: st.SearchStrategy[Node] = st.one_of(
    st.builds(All, st.booleans()),
    st.builds(Has, KEYS),
    st.builds(Compare, KEYS, st.sampled_from(["==", "!=", "contains", "starts with", "ends with"]), VALUES),
    st.builds(InSet, KEYS, st.lists(VALUES, max_size=3).map(tuple), st.booleans()),
)
TREES: st.SearchStrategy[Node] = st.recursive(
    LEAVES,
    lambda inner: st.one_of(st.builds(Not, inner), st.builds(And, inner, inner), st.builds(Or, inner, inner)),
    max_leaves=12,
).filter(lambda tree: depth(tree) <= MAX_SELECTOR_DEPTH)


@given(TREES, LABELS)
def test_engine_agrees_with_the_reference(tree: Node, labels: dict[str, str]) -> None:
    assert Selector(render(tree)).matches(labels) == evaluate(tree, labels)


@given(TREES, st.lists(LABELS, max_size=8))
def test_select_agrees_with_matches(tree: Node, label_sets: list[dict[str, str]]) -> None:
    selector = Selector(render(tree))
    assert selector.select(label_sets) == [i for i, labels in enumerate(label_sets) if selector.matches(labels)]


@given(TREES, LABELS)
def test_canonical_form_parses_back_to_an_equal_selector(tree: Node, labels: dict[str, str]) -> None:
    selector = Selector(render(tree))
    again = Selector(str(selector))
    assert again == selector
    assert hash(again) == hash(selector)
    assert str(again) == str(selector)
    assert again.matches(labels) == evaluate(tree, labels)


@given(TREES, LABELS)
def test_one_word_operators_mean_what_the_two_word_ones_do(tree: Node, labels: dict[str, str]) -> None:
    """Calico accepts `startswith`, `endswith` and `notin`; the canonical form spells them as two words."""
    one_word = Selector(render(tree, one_word=True))
    assert one_word == Selector(render(tree))
    assert str(one_word) == str(Selector(render(tree)))
    assert one_word.matches(labels) == evaluate(tree, labels)


@given(st.text(alphabet="ab()!&|=' {},", max_size=30))
def test_arbitrary_text_parses_or_raises_selector_error(text: str) -> None:
    failure: SelectorError | None = None
    try:
        selector = Selector(text)
    except SelectorError as error:
        failure = error
    if failure is None:
        assert Selector(str(selector)) == selector
    else:
        assert 0 <= failure.position <= len(text)
        assert failure.selector == text


# ---- named behaviour ----


@pytest.mark.parametrize("text", ["", "   ", "all()", "global()", " all ( ) ", "(global())"])
def test_match_everything_selectors_are_all(text: str) -> None:
    selector = Selector(text)
    assert selector.is_all
    assert selector.matches({})
    assert selector.select([{}, {"a": "b"}]) == [0, 1]


def test_a_restricting_selector_is_not_all() -> None:
    assert not Selector("all() && has(a)").is_all


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("a != 'x'", {}, True),
        ("a not in {'x'}", {}, True),
        ("a not in {}", {"a": "x"}, True),
        ("a == 'x'", {}, False),
        ("a in {'x'}", {}, False),
        ("a in {}", {"a": "x"}, False),
        ("a contains ''", {}, False),
        ("a starts with ''", {}, False),
        ("a ends with ''", {}, False),
        ("a startswith 'x'", {"a": "xy"}, True),
        ("a endswith 'y'", {"a": "xy"}, True),
        ("a notin {'x'}", {}, True),
        ("a notin {'x'}", {"a": "x"}, False),
        ("!has(a)", {}, True),
        ("has(a)", {"a": ""}, True),
        ("has(a) || has(b) && has(c)", {"a": "1"}, True),
        ("(has(a) || has(b)) && has(c)", {"a": "1"}, False),
        ("!has(a) && has(b)", {"b": "1"}, True),
        ("projectcalico.org/network == 'net1'", {"projectcalico.org/network": "net1"}, True),
        ("a=='x'&&b in{'y','z'}", {"a": "x", "b": "z"}, True),
        ('a == "it\'s"', {"a": "it's"}, True),
    ],
)
def test_selector_semantics(text: str, labels: dict[str, str], expected: bool) -> None:
    assert Selector(text).matches(labels) is expected


OPERATORS = "(==, !=, in, not in, contains, starts with, ends with)"


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("a == 'b' && == 'c'", "expected a label key at position 12", 12),
        ("a in {'x', 'y'", "expected ',' or '}' at position 14", 14),
        ("app == 'web' && tier == 'unterminated", "unterminated string starting at position 24", 24),
        ("app == 'web' tier == 'a'", "unexpected input after the end of the selector at position 13", 13),
        ("a = 'b'", "expected '==' at position 2", 2),
        ("a", f"expected an operator {OPERATORS} at position 1", 1),
        ("a not 'x'", "expected 'in' after 'not' at position 6", 6),
        ("a startswithx 'x'", f"expected an operator {OPERATORS} at position 2", 2),
        ("a NotIn {'x'}", f"expected an operator {OPERATORS} at position 2", 2),
        ("(has(a)", "expected ')' at position 7", 7),
        ("a == 'é' b", "unexpected input after the end of the selector at position 9", 9),
    ],
)
def test_errors_carry_message_and_position(text: str, message: str, position: int) -> None:
    with pytest.raises(SelectorError) as caught:
        Selector(text)
    assert str(caught.value) == message
    assert caught.value.position == position
    assert caught.value.selector == text


def test_selector_error_is_a_value_error() -> None:
    assert issubclass(SelectorError, ValueError)
    assert SelectorError.__module__ == "epsync._core"
    with pytest.raises(ValueError, match="expected a label key at position 0") as caught:
        Selector("==")
    assert isinstance(caught.value, SelectorError)
    assert caught.value.position == 0


def test_limits_are_exported() -> None:
    assert MAX_SELECTOR_LENGTH == 4096
    assert MAX_SELECTOR_DEPTH == 64


def test_selector_at_the_length_limit_parses() -> None:
    text = "a == '" + "x" * (MAX_SELECTOR_LENGTH - 7) + "'"
    assert len(text.encode()) == MAX_SELECTOR_LENGTH
    assert Selector(text).matches({"a": "x" * (MAX_SELECTOR_LENGTH - 7)})


@contextmanager
def finishes_within(seconds: float) -> Iterator[None]:
    started = time.perf_counter()
    yield
    assert time.perf_counter() - started < seconds


@pytest.mark.parametrize("text", ["x" * (1 << 20), "(" * 100_000, "!" * 100_000, "a == '" + "é" * 3000 + "'"])
def test_oversized_selectors_are_rejected_quickly(text: str) -> None:
    with (
        finishes_within(0.5),
        pytest.raises(SelectorError, match=r"^selector is \d+ bytes long; the limit is 4096$") as caught,
    ):
        Selector(text)
    assert caught.value.selector is text  # the caller's object, not a copy
    assert caught.value.position <= MAX_SELECTOR_LENGTH


@pytest.mark.parametrize("opener", ["(", "!", "!("])
def test_nesting_up_to_the_depth_limit_parses(opener: str) -> None:
    repeat = MAX_SELECTOR_DEPTH // len(opener)
    text = opener * repeat + "has(a)" + ")" * (repeat * opener.count("("))
    assert Selector(text).matches({"a": ""}) is (opener.count("!") * repeat % 2 == 0)


@pytest.mark.parametrize("opener", ["(", "!"])
def test_nesting_beyond_the_depth_limit_is_rejected(opener: str) -> None:
    text = opener * (MAX_SELECTOR_DEPTH + 1) + "has(a)" + ")" * ((MAX_SELECTOR_DEPTH + 1) * opener.count("("))
    with finishes_within(0.5), pytest.raises(SelectorError) as caught:
        Selector(text)
    assert str(caught.value) == "selector nests deeper than 64 levels at position 64"
    assert caught.value.position == MAX_SELECTOR_DEPTH


def test_deep_nesting_within_the_length_limit_is_rejected_at_the_limit() -> None:
    text = "(" * 4000
    with finishes_within(0.5), pytest.raises(SelectorError) as caught:
        Selector(text)
    assert caught.value.position == MAX_SELECTOR_DEPTH


def test_canonical_form() -> None:
    selector = Selector("  (a=='x')&&(b in {'2','1','2'} || !has(c))")
    assert str(selector) == 'a == "x" && (b in {"1", "2"} || !has(c))'
    assert repr(selector) == """Selector('a == "x" && (b in {"1", "2"} || !has(c))')"""
    assert str(Selector("")) == "all()"
    assert str(Selector("a == 'say \"hi\"'")) == "a == 'say \"hi\"'"


def test_equal_meaning_by_grouping_gives_equal_selectors() -> None:
    assert Selector("has(a) && (has(b) && has(c))") == Selector("(has(a) && has(b)) && has(c)")
    assert Selector("a in {'x', 'y'}") == Selector('a in {"y", "x", "y"}')
    assert len({Selector("a == 'x'"), Selector('a=="x"'), Selector("a == 'y'")}) == 2
    assert Selector("a == 'x'") != Selector("a == 'y'")
    assert Selector("all()") != "all()"


class _Labels(Mapping[str, str]):
    """A mapping that is not a dict."""

    def __init__(self, data: dict[str, str]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def test_any_mapping_of_labels_is_accepted() -> None:
    selector = Selector("a == 'x'")
    assert selector.matches(_Labels({"a": "x"}))
    assert selector.select([_Labels({"a": "y"}), {"a": "x"}]) == [1]


def test_label_values_must_be_strings() -> None:
    with pytest.raises(TypeError):
        Selector("a == 'x'").matches({"a": 1})  # type: ignore[dict-item]
