"""List pagination: page sizes and the opaque continuation token.

The token carries the last key returned, a fingerprint of the filter it was issued for, and L,
the revision of the first page. Resuming strictly after the last key in (namespace, name) order
is what guarantees that an object unchanged during the listing is neither skipped nor repeated.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass

from epsync.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 5000


def page_size(requested: int, *, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """0 means the default; larger than the maximum is lowered to it (AIP-158), negative is an error."""
    if requested < 0:
        raise InvalidArgument([FieldViolation("page_size", f"page_size {requested} is negative")])
    if requested == 0:
        return default
    return min(requested, maximum)


# What a List response adds to its items: per item a tag, a length and the resource_version (under 32
# bytes), the page token and the revision. An allowance, so that a page of items fits a response.
PAGE_OVERHEAD_BYTES = 64 * 1024


def page_bytes(max_response_bytes: int) -> int:
    """How many bytes of items one List page may hold, for responses of at most `max_response_bytes`."""
    return max(1, max_response_bytes - PAGE_OVERHEAD_BYTES)


def filter_fingerprint(*parts: str) -> str:
    """A short digest of a request's filter, so a token can refuse to continue a different listing."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class PageToken:
    last_key: list[str]
    fingerprint: str
    revision: int

    def encode(self) -> str:
        payload = json.dumps({"k": self.last_key, "f": self.fingerprint, "r": self.revision}, separators=(",", ":"))
        return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str, fingerprint: str) -> PageToken:
        """Parse a token and check that it belongs to this filter."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            data = json.loads(raw)
            parsed = cls(
                last_key=[str(part) for part in data["k"]], fingerprint=str(data["f"]), revision=int(data["r"])
            )
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise InvalidArgument(
                [FieldViolation("page_token", "page_token is not a token this server issued")]
            ) from None
        if parsed.fingerprint != fingerprint:
            raise InvalidArgument(
                [FieldViolation("page_token", "page_token was issued for a different filter; start the listing again")]
            )
        return parsed


@dataclass(frozen=True, slots=True)
class ListPosition:
    """Where a page starts: after `after` (None: from the beginning), reporting `revision` (L)."""

    after: tuple[str, ...] | None
    revision: int


def list_position(page_token: str, fingerprint: str, key_parts: int, current_revision: int) -> ListPosition:
    """The first page starts at the current revision; later pages continue their token's listing."""
    if not page_token:
        return ListPosition(None, current_revision)
    token = PageToken.decode(page_token, fingerprint)
    if len(token.last_key) != key_parts:
        raise InvalidArgument([FieldViolation("page_token", "page_token is not a token this server issued")])
    return ListPosition(tuple(token.last_key), token.revision)


def next_page_token(more: bool, last_key: list[str], fingerprint: str, revision: int) -> str:
    return PageToken(last_key, fingerprint, revision).encode() if more else ""
