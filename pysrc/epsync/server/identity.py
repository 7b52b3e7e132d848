"""Who is calling (SPEC §8): the identity a client certificate names.

A certificate names one identity: a URI SAN `spiffe://<trust-domain>/<role>[/<name>]` (`--trust-domain`,
default `epsync`), else a CN `<role>[:<name>]`; roles are `node` (which needs the node's name),
`orchestrator`, `admin` and `viewer`. Without client certificates (plaintext, or TLS without `--client-ca-file`) nobody
is identified and every caller may do what an admin and the orchestrator may, as before TLS.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID


class Role(enum.StrEnum):
    NODE = "node"
    ORCHESTRATOR = "orchestrator"
    ADMIN = "admin"
    VIEWER = "viewer"


@dataclass(frozen=True, slots=True)
class Identity:
    roles: frozenset[Role]
    name: str = ""  # a node's name; for other roles, the certificate's own name for messages

    def __str__(self) -> str:
        if len(self.roles) != 1:
            return "the caller"
        (role,) = self.roles
        return f"{role} {self.name}" if self.name else str(role)

    @property
    def node(self) -> str | None:
        """The node a node identity is, else None."""
        return self.name if self.roles == {Role.NODE} else None


# Without client certificates every caller may do what an admin and the orchestrator may.
UNAUTHENTICATED = Identity(frozenset({Role.ADMIN, Role.ORCHESTRATOR}))
# A certificate that names no identity of ours: it may do nothing.
NOBODY = Identity(frozenset())


def identity_of_certificate(pem: bytes, trust_domain: str) -> Identity:
    """The identity `pem` names (URI SAN first, then CN), or NOBODY."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return NOBODY
    prefix = f"spiffe://{trust_domain}/"
    try:
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier
        )
    except x509.ExtensionNotFound:
        uris = []
    for uri in uris:
        if uri.startswith(prefix):
            found = _identity(*uri.removeprefix(prefix).partition("/")[::2])
            if found is not NOBODY:
                return found
    for attribute in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        role, _, name = str(attribute.value).partition(":")
        found = _identity(role, name)
        if found is not NOBODY:
            return found
    return NOBODY


def _identity(role: str, name: str) -> Identity:
    try:
        known = Role(role)
    except ValueError:
        return NOBODY
    if known is Role.NODE and not name:
        return NOBODY  # a node identity must say which node
    return Identity(frozenset({known}), name)


class Identities:
    """Identities of callers from their gRPC auth context, each certificate read once (cached by its PEM)."""

    MAX_CACHED = 4096

    def __init__(self, *, required: bool, trust_domain: str) -> None:
        self.required = required  # client certificates are required (mutual TLS): identities are enforced
        self.trust_domain = trust_domain
        self._cache: dict[bytes, Identity] = {}

    def of(self, context: Any) -> Identity:
        if not self.required:
            return UNAUTHENTICATED
        pems = context.auth_context().get("x509_pem_cert") or []
        if not pems:
            return NOBODY
        pem = pems[0]
        found = self._cache.get(pem)
        if found is None:
            if len(self._cache) >= self.MAX_CACHED:
                self._cache.clear()
            found = self._cache[pem] = identity_of_certificate(pem, self.trust_domain)
        return found
