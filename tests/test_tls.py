"""TLS and mutual TLS on the listener, with certificates the tests make (SPEC §8): plaintext refused
by a TLS server, client certificates required and checked, certificates rotated without a restart,
and plaintext only on loopback unless --insecure; on either transport ($EPSYNC_TRANSPORT), whose handlers
see the connection's security as grpc.aio shows it."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from epsync.client import Client, ClientTls
from epsync.errors import EpsyncError
from epsync.server.app import EpsyncServer
from epsync.server.config import ServerConfig
from epsync.server.tls import ReloadingTls, TlsFiles
from epsync.server.transport import GrpcServer, TransportOptions, TransportServer
from tests.certs import Authority, Issued
from tests.conftest import epsync_command, run_command, serve_process, server_config
from tests.factories import endpoint

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def ca() -> Authority:
    return Authority()


async def _start(tmp_path: Path, ca: Authority, *, mutual: bool) -> EpsyncServer:
    cert, key = ca.issue("epsync server", server=True).write(tmp_path / "server", "server")
    overrides: dict[str, object] = {"tls_cert_file": cert, "tls_key_file": key}
    if mutual:
        overrides["client_ca_file"] = ca.write(tmp_path / "server")
    server = EpsyncServer(server_config(tmp_path / "data", **overrides))
    await server.start()
    return server


@pytest.fixture
async def tls_server(tmp_path: Path, ca: Authority) -> AsyncIterator[EpsyncServer]:
    server = await _start(tmp_path, ca, mutual=False)
    yield server
    await server.stop(grace=0.1)


@pytest.fixture
async def mtls_server(tmp_path: Path, ca: Authority) -> AsyncIterator[EpsyncServer]:
    server = await _start(tmp_path, ca, mutual=True)
    yield server
    await server.stop(grace=0.1)


def _client_files(tmp_path: Path, ca: Authority, issued: Issued | None, name: str = "client") -> ClientTls:
    ca_file = ca.write(tmp_path / name)
    if issued is None:
        return ClientTls(ca_file)
    cert, key = issued.write(tmp_path / name, name)
    return ClientTls(ca_file, cert, key)


async def _lists(port: int, tls: ClientTls | None) -> bool:
    """Whether a List succeeds over a new connection; False when the connection is refused."""
    async with Client(f"127.0.0.1:{port}", timeout=3, tls=tls) as client:
        try:
            [e async for e in client.list_endpoints()]
        except EpsyncError as error:
            refused = error.code.name
        else:
            return True
    assert refused in ("UNAVAILABLE", "DEADLINE_EXCEEDED"), refused
    return False


async def test_a_tls_server_serves_tls_and_refuses_plaintext(
    tmp_path: Path, ca: Authority, tls_server: EpsyncServer
) -> None:
    tls = _client_files(tmp_path, ca, None)
    async with Client(f"127.0.0.1:{tls_server.port}", timeout=5, tls=tls) as client:
        created = await client.create_endpoint(endpoint("web"))
        listed = [e async for e in client.list_endpoints()]
    assert [e.metadata.name for e in listed] == [created.metadata.name]
    assert not await _lists(tls_server.port, None)
    # A client trusting another CA refuses the server's certificate.
    assert not await _lists(tls_server.port, _client_files(tmp_path, Authority("other CA"), None, "stranger"))


async def test_mutual_tls_requires_a_client_certificate_from_its_ca(
    tmp_path: Path, ca: Authority, mtls_server: EpsyncServer
) -> None:
    port = mtls_server.port
    assert not await _lists(port, _client_files(tmp_path, ca, None, "anonymous"))
    other = Authority("other CA")
    forged = ClientTls(ca.write(tmp_path / "forged"), *other.issue("node:node1").write(tmp_path / "forged", "forged"))
    assert not await _lists(port, forged)
    assert await _lists(port, _client_files(tmp_path, ca, ca.issue("admin:ops")))


def _served_serial(port: int, ca: Authority, tmp_path: Path) -> int:
    """The serial number of the certificate a new TLS connection to `port` is shown."""
    context = ssl.create_default_context(cafile=str(ca.write(tmp_path / "probe")))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def test_certificates_are_rotated_without_a_restart(
    tmp_path: Path, ca: Authority, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="epsync.server.tls")
    first = ca.issue("epsync server", server=True)
    cert, key = first.write(tmp_path / "server", "server")
    server = EpsyncServer(server_config(tmp_path / "data", tls_cert_file=cert, tls_key_file=key))
    await server.start()
    try:
        port = server.port
        assert await asyncio.to_thread(_served_serial, port, ca, tmp_path) == first.serial
        client_tls = _client_files(tmp_path, ca, None)
        async with Client(f"127.0.0.1:{port}", timeout=5, tls=client_tls) as kept:
            [e async for e in kept.list_endpoints()]

            # A rotation as tools do it: new files written beside, then renamed over the old ones.
            second = ca.issue("epsync server", server=True)
            new_cert, new_key = second.write(tmp_path / "next", "server")
            os.replace(new_key, key)
            os.replace(new_cert, cert)
            assert await asyncio.to_thread(_served_serial, port, ca, tmp_path) == second.serial
            assert server.tls is not None
            assert server.tls.reloads == 1

            # A botched rotation (a key that is not the certificate's) is refused; the last good pair serves on.
            key.write_bytes(ca.issue("someone else").key_pem)
            assert await asyncio.to_thread(_served_serial, port, ca, tmp_path) == second.serial
            assert await _lists(port, client_tls)
            [e async for e in kept.list_endpoints()]  # the connection made before the rotations is still good
    finally:
        await server.stop(grace=0.1)
    logged = [(record.levelno, record.getMessage()) for record in caplog.records if record.name == "epsync.server.tls"]
    assert logged == [
        (logging.INFO, f"TLS certificate reloaded from {cert}"),
        (
            logging.WARNING,
            "TLS files changed but cannot be used, keeping the previous ones: "
            f"the key {key} is not the key of the certificate {cert}",
        ),
    ]


def test_plaintext_beyond_loopback_needs_insecure(tmp_path: Path, ca: Authority) -> None:
    with pytest.raises(ValueError, match=r"refusing to serve plaintext on 0\.0\.0\.0:50051, beyond this machine"):
        ServerConfig(listen="0.0.0.0:50051")
    assert ServerConfig(listen="0.0.0.0:50051", insecure=True).tls is None
    for loopback in ("127.0.0.1:1", "127.8.0.1:1", "[::1]:1", "localhost:1"):
        ServerConfig(listen=loopback)
    cert, key = ca.issue("server", server=True).write(tmp_path, "server")
    assert ServerConfig(listen="0.0.0.0:50051", tls_cert_file=cert, tls_key_file=key).tls is not None
    with pytest.raises(ValueError, match="go together"):
        ServerConfig(tls_cert_file=cert)
    with pytest.raises(ValueError, match="needs the server's own certificate"):
        ServerConfig(client_ca_file=cert)


async def test_serve_says_in_one_line_why_it_will_not_listen(tmp_path: Path, ca: Authority) -> None:
    status, _, err = await run_command(*epsync_command("serve", "--listen", "0.0.0.0:0", "--data-dir", str(tmp_path)))
    assert status == 1, err
    assert err.count("\n") == 1, err
    assert "refusing to serve plaintext on 0.0.0.0:0" in err
    assert "--insecure" in err
    missing = tmp_path / "missing.crt"
    status, _, err = await run_command(
        *epsync_command(
            "serve", "--data-dir", str(tmp_path), "--tls-cert-file", str(missing), "--tls-key-file", str(missing)
        )
    )
    assert status != 0, err
    assert "Traceback" not in err
    assert f"cannot serve TLS: cannot read the certificate {missing}" in err
    cert, _ = ca.issue("server", server=True).write(tmp_path, "server")
    _, wrong_key = ca.issue("another", server=True).write(tmp_path, "another")
    status, _, err = await run_command(
        *epsync_command(
            "serve", "--data-dir", str(tmp_path), "--tls-cert-file", str(cert), "--tls-key-file", str(wrong_key)
        )
    )
    assert status != 0, err
    assert "Traceback" not in err
    assert f"the key {wrong_key} is not the key of the certificate {cert}" in err


async def test_the_cli_connects_with_tls_from_flags_or_environment(tmp_path: Path, ca: Authority) -> None:
    server_cert, server_key = ca.issue("epsync server", server=True).write(tmp_path, "server")
    ca_file = ca.write(tmp_path)
    cert, key = ca.issue("admin:ops").write(tmp_path, "admin")
    async with serve_process(
        "--workers",
        "1",
        "--data-dir",
        str(tmp_path / "data"),
        "--tls-cert-file",
        str(server_cert),
        "--tls-key-file",
        str(server_key),
        "--client-ca-file",
        str(ca_file),
    ) as served:
        target = f"127.0.0.1:{served.port}"
        flags = ["--ca-file", str(ca_file), "--cert-file", str(cert), "--key-file", str(key)]
        status, _, err = await run_command(*epsync_command("list", "weps", "-A", "--server", target, *flags))
        assert status == 0, err
        env = {"EPSYNC_CA_FILE": str(ca_file), "EPSYNC_CERT_FILE": str(cert), "EPSYNC_KEY_FILE": str(key)}
        status, _, err = await run_command(*epsync_command("list", "weps", "-A", "--server", target), env=env)
        assert status == 0, err
        # Without a client certificate the server refuses the connection; the CLI says so in one line.
        status, _, err = await run_command(
            *epsync_command("list", "weps", "-A", "--server", target, "--ca-file", str(ca_file)), limit_seconds=90
        )
        assert status != 0, err
        assert "Traceback" not in err
        status, _, err = await run_command(
            *epsync_command("list", "weps", "--server", target, "--ca-file", str(ca_file), "--cert-file", str(cert))
        )
        assert status == 1, err
        assert "--cert-file and --key-file go together" in err


_PROBE_OPTIONS = TransportOptions(
    max_connections=16,
    max_concurrent_streams=16,
    keepalive_seconds=60.0,
    keepalive_timeout_seconds=10.0,
    handshake_timeout_seconds=5.0,
    max_receive_message=1 << 20,
    max_send_message=1 << 20,
)


async def _auth_context_seen(
    server: GrpcServer, tmp_path: Path, ca: Authority, security: str, client: Issued
) -> dict[str, list[bytes]]:
    """The auth context a handler of `server` sees for a call over `security`: plaintext, tls, or mutual
    with `client`'s certificate."""
    seen: list[Mapping[str, Iterable[bytes]]] = []

    async def record(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        seen.append(context.auth_context())
        return b""

    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("probe.Probe", {"Record": grpc.unary_unary_rpc_method_handler(record)}),)
    )
    credentials = None
    if security == "plaintext":
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        cert, key = ca.issue("epsync server", server=True).write(tmp_path, "server")
        tls = ReloadingTls(TlsFiles(cert, key, ca.write(tmp_path) if security == "mutual" else None))
        if isinstance(server, TransportServer):
            port = server.add_secure_port("127.0.0.1:0", tls)
        else:
            port = server.add_secure_port("127.0.0.1:0", tls.credentials())
        credentials = grpc.ssl_channel_credentials(
            ca.cert_pem, *((client.key_pem, client.cert_pem) if security == "mutual" else ())
        )
    await server.start()
    try:
        target = f"127.0.0.1:{port}"
        async with (
            grpc.aio.insecure_channel(target) if credentials is None else grpc.aio.secure_channel(target, credentials)
        ) as channel:
            probe = channel.unary_unary("/probe.Probe/Record", request_serializer=None, response_deserializer=None)
            await probe(b"", timeout=5)
    finally:
        await server.stop(0)
    return {key: list(values) for key, values in seen[0].items()}


@pytest.mark.parametrize("security", ["plaintext", "tls", "mutual"])
async def test_the_rust_transports_handlers_see_the_connection_as_grpc_aios_do(
    tmp_path: Path, ca: Authority, security: str
) -> None:
    client = ca.issue("admin:ops")
    grpcio = await _auth_context_seen(grpc.aio.server(), tmp_path / "grpcio", ca, security, client)
    rust = await _auth_context_seen(TransportServer(_PROBE_OPTIONS), tmp_path / "rust", ca, security, client)
    # The same keys with the same values, for those the Rust transport gives: the security, and of a client
    # certificate its PEM (what identities are read from), byte for byte.
    assert rust == {key: grpcio[key] for key in rust}
    expected = {"transport_security_type", "security_level"}
    if security == "mutual":
        expected.add("x509_pem_cert")
        assert rust["x509_pem_cert"] == [client.cert_pem]
    assert set(rust) == expected
