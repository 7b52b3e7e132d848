"""List pagination: page sizes and the opaque continuation token.

The token carries the last key returned, a fingerprint of the filter it was issued for, and L,
the revision of the first page, signed with the store's secret (`PageTokens`). Resuming strictly
after the last key in (namespace, name) order is what guarantees that an object unchanged during
the listing is neither skipped nor repeated.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
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
class ListPosition:
    """Where a page starts: after `after` (None: from the beginning), reporting `revision` (L)."""

    after: tuple[str, ...] | None
    revision: int


# A token is at most this long: two keys of at most 253 + 63 characters, a revision and a signature
# fit with room to spare; anything longer was not issued here.
MAX_TOKEN_CHARS = 2048
_SIGNATURE_BYTES = 16
_NOT_ISSUED = "page_token is not a token this server issued"


class PageTokens:
    """Issues and reads page tokens, signed (HMAC-SHA256) with the store's secret.

    Every server on one store shares the secret (StoreIdentity), so a listing may continue on any
    replica or worker; a token from another store, an edited one or one of the wrong shape is
    INVALID_ARGUMENT, and so is one whose revision is not one the store has reached.
    """

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]

    def issue(self, more: bool, last_key: list[str], fingerprint: str, revision: int) -> str:
        """The next page's token ("" when there is no next page)."""
        if not more:
            return ""
        payload = json.dumps({"k": last_key, "f": fingerprint, "r": revision}, separators=(",", ":")).encode()
        return _b64(payload) + "." + _b64(self._sign(payload))

    def position(self, page_token: str, fingerprint: str, key_parts: int, current_revision: int) -> ListPosition:
        """The first page starts at the current revision; later pages continue their token's listing."""
        if not page_token:
            return ListPosition(None, current_revision)
        payload = self._verified(page_token)
        try:
            data = json.loads(payload)
            keys, issued_for, revision = data["k"], data["f"], data["r"]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise _not_issued() from None
        well_formed = (
            isinstance(keys, list)
            and len(keys) == key_parts
            and all(isinstance(part, str) and len(part) <= 512 for part in keys)
            and isinstance(issued_for, str)
            and type(revision) is int
            and 0 <= revision <= current_revision
        )
        if not well_formed:  # signed, so issued by a server on this store: of another version, or a bug
            raise _not_issued()
        if issued_for != fingerprint:
            raise InvalidArgument(
                [FieldViolation("page_token", "page_token was issued for a different filter; start the listing again")]
            )
        return ListPosition(tuple(keys), revision)

    def _verified(self, token: str) -> bytes:
        if len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
            raise _not_issued()
        encoded_payload, encoded_signature = token.split(".")
        try:
            payload, signature = _unb64(encoded_payload), _unb64(encoded_signature)
        except (binascii.Error, ValueError):
            raise _not_issued() from None
        if not hmac.compare_digest(signature, self._sign(payload)):
            raise _not_issued()
        return payload


def _not_issued() -> InvalidArgument:
    return InvalidArgument([FieldViolation("page_token", _NOT_ISSUED)])


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
