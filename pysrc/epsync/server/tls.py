"""TLS on the server's listener: its certificate and key, and for mutual TLS the CA that every
client certificate must chain to (SPEC §8).

The files are read again when they change: gRPC asks `ReloadingTls.fetch` at each new
connection's handshake, which looks at the files' metadata (a stat each, no read) and loads them
only when one changed, so a rotated certificate serves the next connection without a restart.
Connections already open keep the certificate they started with. A pair that does not load (half
written, or a key that is not the certificate's) is refused with a warning and the previous pair
kept, so a botched rotation never takes the listener down.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = logging.getLogger(__name__)

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class TlsError(ValueError):
    """A certificate, key or CA file that cannot serve (one line, naming the file)."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None  # set: mutual TLS, a client certificate signed by it is required

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.cert_file, self.key_file) + ((self.client_ca_file,) if self.client_ca_file else ())


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise TlsError(f"cannot read the {what} {path}: {error.strerror or error}") from None


def load_configuration(files: TlsFiles) -> grpc.ServerCertificateConfiguration:
    """The files as gRPC's certificate configuration, after checking that they load and belong together."""
    cert_pem, key_pem = _read(files.cert_file, "certificate"), _read(files.key_file, "key")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise TlsError(f"{files.cert_file} holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise TlsError(f"{files.key_file} holds no unencrypted PEM private key") from None
    if key.public_key().public_bytes(*_SPKI) != chain[0].public_key().public_bytes(*_SPKI):
        raise TlsError(f"the key {files.key_file} is not the key of the certificate {files.cert_file}")
    roots = None
    if files.client_ca_file is not None:
        roots = _read(files.client_ca_file, "client CA")
        try:
            x509.load_pem_x509_certificates(roots)
        except ValueError:
            raise TlsError(f"{files.client_ca_file} holds no PEM CA certificate") from None
    return grpc.ssl_server_certificate_configuration([(key_pem, cert_pem)], root_certificates=roots)


def _stamp(paths: tuple[Path, ...]) -> tuple[tuple[int, int, int], ...] | None:
    """What tells a file changed: inode, size and modification time of each (None if one is missing)."""
    try:
        stats = [os.stat(path) for path in paths]
    except OSError:
        return None
    return tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)


class ReloadingTls:
    """Server credentials over `files` that follow the files as they change."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._lock = threading.Lock()  # gRPC may call fetch from its own threads
        self._stamp = _stamp(files.paths)
        self._initial = load_configuration(files)  # TlsError: the server does not start
        self._reloads = 0
        self._reloads_elsewhere: Callable[[], int] | None = None

    @property
    def reloads(self) -> int:
        """How many times changed files were loaded since start-up, by `fetch` or by whatever follows them."""
        return self._reloads if self._reloads_elsewhere is None else self._reloads_elsewhere()

    def follow_elsewhere(self, reloads: Callable[[], int]) -> None:
        """The files are followed by something else from now on (the Rust transport, which stats and loads
        them itself at each new connection); `reloads` counts its reloads."""
        self._reloads_elsewhere = reloads

    def credentials(self) -> grpc.ServerCredentials:
        # gRPC takes None from the fetcher as "unchanged"; grpc-stubs types it as always a configuration.
        fetch = cast("Callable[[], grpc.ServerCertificateConfiguration]", self.fetch)
        return grpc.dynamic_ssl_server_credentials(
            self._initial, fetch, require_client_authentication=self.files.client_ca_file is not None
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration when a file changed since the last load; None to keep the current one."""
        stamp = _stamp(self.files.paths)
        with self._lock:
            if stamp is None or stamp == self._stamp:
                return None
            self._stamp = stamp
            try:
                configuration = load_configuration(self.files)
            except TlsError as error:
                log.warning("TLS files changed but cannot be used, keeping the previous ones: %s", error)
                return None
            self._reloads += 1
        log.info("TLS certificate reloaded from %s", self.files.cert_file)
        return configuration


def is_loopback(listen: str) -> bool:
    """Whether host:port names only this machine (127.0.0.0/8, ::1, localhost)."""
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
