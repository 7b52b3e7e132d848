"""Selector fields of requests: parsed by the Rust core, a bad one named by its field."""

from __future__ import annotations

from epsync._core import Selector, SelectorError
from epsync.errors import FieldViolation, InvalidArgument


def parse_selector_field(text: str, field: str) -> Selector | None:
    """Parse a selector from a request field (None when it matches everything).

    A bad one is INVALID_ARGUMENT naming the field and the position of the error.
    """
    try:
        selector = Selector(text)
    except SelectorError as error:
        raise InvalidArgument([FieldViolation(field, str(error))]) from None
    return None if selector.is_all else selector
