"""epsync's Rust core: Calico selector parsing and evaluation, and the endpoint label index.

Every call does a whole batch of work (many endpoints, many label sets, a whole page of
keys), so Python crosses into Rust once per operation, never once per label.
"""

from collections.abc import Mapping, Sequence
from typing import final

__all__ = [
    "MAX_SELECTOR_DEPTH",
    "MAX_SELECTOR_LENGTH",
    "VERSION",
    "EndpointIndex",
    "Selector",
    "SelectorError",
]

VERSION: str
"""The version of the Rust crate."""

MAX_SELECTOR_LENGTH: int
"""The longest selector accepted, in bytes of UTF-8 (4096)."""

MAX_SELECTOR_DEPTH: int
"""The deepest nesting accepted; each `(` and each `!` is one level (64)."""

class SelectorError(ValueError):
    """A selector failed to parse.

    `str(e)` is the message, e.g. ``expected a label key at position 7``; `e.position` is
    the 0-based character offset of the error and `e.selector` the text that was parsed.
    """

    position: int
    selector: str

@final
class Selector:
    """A parsed Calico label selector.

    `Selector(text)` parses `text`, raising `SelectorError` with the position of the
    problem. The language: `all()`, `global()`, `k == 'v'`, `k != 'v'`, `k in {'a', 'b'}`,
    `k not in {...}`, `has(k)`, `k contains 's'`, `k starts with 's'`, `k ends with 's'`,
    `!`, `&&`, `||` and parentheses; the empty selector is `all()`. `!=` and `not in` match
    an absent label; `==`, `in` and the string operators do not.

    `str(selector)` is its canonical form, which parses back to an equal selector.
    Selectors compare and hash by canonical form.
    """

    def __new__(cls, text: str) -> Selector: ...
    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the labels satisfy the selector."""

    def select(self, label_sets: Sequence[Mapping[str, str]]) -> list[int]:
        """The indices, ascending, of the label sets that satisfy the selector."""

    @property
    def is_all(self) -> bool:
        """True when the selector matches everything: `all()`, `global()` or empty."""

    def __eq__(self, other: object, /) -> bool: ...
    def __ne__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class EndpointIndex:
    """Endpoints' namespace, node, own labels and profiles; profiles' labelsToApply; answers
    filtered, ordered queries.

    An endpoint's effective labels are its own labels plus, for each key it lacks, the value
    from the first of its profiles (in order) that has the key. Profiles not in the index
    contribute nothing. Keys are `(namespace, name)` tuples, ordered as tuples.
    """

    def __new__(cls) -> EndpointIndex: ...
    def upsert_endpoints(self, endpoints: Sequence[tuple[str, str, str, Mapping[str, str], Sequence[str]]]) -> None:
        """Inserts `(namespace, name, node, own_labels, profile_names)` entries, each replacing
        any previous entry for `(namespace, name)`. The batch is converted before any of it
        is applied, so a bad entry changes nothing."""

    def remove_endpoints(self, keys: Sequence[tuple[str, str]]) -> None:
        """Removes endpoints by `(namespace, name)`; missing keys are ignored."""

    def upsert_profiles(self, profiles: Sequence[tuple[str, Mapping[str, str]]]) -> None:
        """Inserts or replaces `(name, labels_to_apply)` profiles and re-evaluates the effective
        labels of the endpoints that name them."""

    def remove_profiles(self, names: Sequence[str]) -> None:
        """Removes profiles by name (missing names are ignored) and re-evaluates the effective
        labels of the endpoints that name them."""

    def query(
        self,
        namespace: str,
        node: str,
        selector: Selector | None,
        after: tuple[str, str] | None,
        limit: int,
    ) -> list[tuple[str, str]]:
        """Keys `(namespace, name)` in ascending tuple order, strictly after `after`, restricted
        to `namespace` and `node` when they are non-empty, matching `selector` (on effective
        labels) when it is given; at most `limit` of them (0 means no limit)."""

    def count(self, namespace: str, node: str, selector: Selector | None) -> int:
        """How many endpoints a `query` with the same filters and no paging would return."""

    def effective_labels(self, namespace: str, name: str) -> dict[str, str] | None:
        """The endpoint's effective labels, or None if it is not in the index."""

    def __len__(self) -> int: ...
