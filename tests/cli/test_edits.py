"""The pure parts of `patch` and `label`: RFC 7386 merge patch and kubectl's label arguments."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from epsync.cli.edits import parse_label_changes
from epsync.cli.merge_patch import merge_patch
from epsync.errors import UsageError

scalars = st.one_of(st.booleans(), st.integers(), st.text(max_size=5))
documents = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
)
patches = st.recursive(
    st.one_of(scalars, st.none()),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
)


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),  # lists are replaced whole
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_follows_rfc_7386(target: Any, patch: Any, expected: Any) -> None:
    assert merge_patch(target, patch) == expected


@given(documents, patches)
def test_merge_patch_is_idempotent_and_changes_neither_argument(target: Any, patch: Any) -> None:
    target_before, patch_before = copy.deepcopy(target), copy.deepcopy(patch)
    once = merge_patch(target, patch)
    assert merge_patch(once, patch) == once
    assert (target, patch) == (target_before, patch_before)


@given(st.dictionaries(st.text(max_size=3), documents, max_size=4), st.dictionaries(st.text(max_size=3), documents))
def test_a_patch_without_nulls_sets_every_member_it_names(target: dict[str, Any], patch: dict[str, Any]) -> None:
    merged = merge_patch(target, patch)
    for name in patch:
        if not isinstance(patch[name], dict):
            assert merged[name] == patch[name]
    for name in target.keys() - patch.keys():
        assert merged[name] == target[name]


def test_label_changes_parse_as_kubectl_takes_them() -> None:
    assert parse_label_changes(["a=b", "c=", "d-", "x.io/y=z=1"]) == ({"a": "b", "c": "", "x.io/y": "z=1"}, {"d"})


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (["plain"], "is not a label change"),
        (["=v"], "needs a key"),
        (["-"], "is not a label change"),
        (["a=1", "a=2"], "two values"),
        (["a=1", "a-"], "both set and removed"),
    ],
)
def test_bad_label_changes_are_refused(changes: list[str], expected: str) -> None:
    with pytest.raises(UsageError, match=expected):
        parse_label_changes(changes)
