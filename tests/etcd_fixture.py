"""A real etcd for tests: one member on loopback ports of the kernel's choosing, its data in a
temporary directory.

The `etcd` fixture starts one per test (about half a second) and stops it afterwards; `etcd_client`
is an EtcdClient connected to it. `session_etcd` is one etcd for the whole test session, for tests
that keep apart by key prefix (`unique_prefix()`) and do not stop it (they may compact it: tests
run one at a time, and a store opened later starts from the revision it reads). tests/conftest.py
loads this module as a plugin, so any test can ask for any of them. `EtcdServer` also works on its
own (benchmarks, other fixture scopes), and can be stopped and started again on the same client
port and data, to test what a restart does to clients; `EtcdServer(..., tls=make_etcd_pki(dir))` serves TLS
with client-certificate authentication, from a throwaway CA that openssl makes in a few
milliseconds. `make etcd` (which `make test` runs) installs the binary into .tools/bin.

`WatchPartition` cuts a datastore's etcd watches off from etcd, and heals them, for tests of a
replica whose change feed falls behind: the datastore makes its etcd client with
`connect=partition.connect`, and nothing else of it changes.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import ssl
import subprocess
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from epsync.store.etcd.client import (
    Compare,
    EtcdClient,
    EtcdUnavailable,
    Key,
    Op,
    TxnResult,
    Watch,
    WatchBatch,
)

REPO = Path(__file__).resolve().parent.parent
START_SECONDS = 20.0
STOP_SECONDS = 10.0


def etcd_binary() -> str:
    candidate = REPO / ".tools" / "bin" / "etcd"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("etcd")
    if found is None:
        raise RuntimeError("etcd is not installed: run `make etcd` (make test does)")
    return found


@dataclass(frozen=True)
class EtcdPki:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""

    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_etcd_pki(directory: Path) -> EtcdPki:
    """Make a CA, a server and a client certificate with openssl (EC keys: fast), in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not installed")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=directory)

    def key(name: str) -> None:
        run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", name)

    key("ca.key")
    run("req", "-x509", "-new", "-key", "ca.key", "-days", "2", "-subj", "/CN=epsync test CA", "-out", "ca.pem")
    for name, extension in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        key(f"{name}.key")
        run("req", "-new", "-key", f"{name}.key", "-subj", f"/CN=epsync test {name}", "-out", f"{name}.csr")
        (directory / f"{name}.ext").write_text(extension + "\n")
        run(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
        )  # fmt: skip
    return EtcdPki(
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
        directory / "client.pem",
        directory / "client.key",
    )


def unique_prefix() -> str:
    """A key prefix of its own for one test on a shared etcd."""
    return f"/epsync-test/{uuid.uuid4().hex}/"


class EtcdServer:
    """One etcd member; `endpoint` ("127.0.0.1:port") is the gRPC target, `url` its http(s):// form.

    The first start listens on port 0 and reads the port the kernel gave it back from etcd's log
    ("serving client traffic", with the bound address); a restart listens on that port again, so
    clients find it where they left it. With `tls`, etcd serves clients over TLS only and requires
    a client certificate signed by the CA.
    """

    def __init__(self, data_dir: Path, *, extra_args: tuple[str, ...] = (), tls: EtcdPki | None = None) -> None:
        self.data_dir = data_dir
        self.extra_args = extra_args
        self.tls = tls
        self.client_port = 0  # known once etcd has started
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.endpoint}"

    @property
    def pid(self) -> int:
        """The etcd process (to freeze it with SIGSTOP, say)."""
        assert self._process is not None, "etcd is not running"
        return self._process.pid

    def command(self) -> list[str]:
        peer = "http://127.0.0.1:0"  # a member of one: nobody dials its peer port, so any port will do
        return [
            etcd_binary(),
            "--name=epsync-test",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=epsync-test={peer}",
            "--logger=zap",
            "--log-level=info",  # the bound client address is logged at info
            *self._tls_args(),
            *self.extra_args,
        ]

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        return [
            f"--cert-file={self.tls.server_cert}",
            f"--key-file={self.tls.server_key}",
            f"--trusted-ca-file={self.tls.ca_file}",
            "--client-cert-auth",
        ]

    def start(self) -> None:
        """Start etcd and wait until it answers /health; a failure says why, with etcd's log."""
        if self._process is not None:
            raise RuntimeError("etcd is already running")
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log_start = log.tell()
            self._process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_SECONDS
        while not (self.client_port or self._read_client_port(log_start)) or not self._healthy():
            if self._process.poll() is not None:
                self._process = None
                raise RuntimeError(f"etcd exited at start: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"etcd not healthy after {START_SECONDS} s: {self.log_tail()}")
            time.sleep(0.05)  # paces the polling of the log and /health

    def stop(self) -> None:
        """Stop etcd (SIGTERM, then SIGKILL if it lingers); it can be started again on the same data."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def _read_client_port(self, log_start: int) -> int:
        """The client port etcd has bound, from its log since `log_start`; 0 until it says."""
        with self.log_path.open("rb") as log:
            log.seek(log_start)
            for line in log:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if str(entry.get("msg", "")).startswith("serving client traffic") and "address" in entry:
                    self.client_port = int(str(entry["address"]).rsplit(":", 1)[1])
                    return self.client_port
        return 0

    def _healthy(self) -> bool:
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(cafile=str(self.tls.ca_file))
            context.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1, context=context) as response:
                return bool(json.load(response).get("health") == "true")
        except (OSError, ValueError):  # refused, timed out, HTTP error, not JSON
            return False

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def started_etcd(data_dir: Path, *, tls: EtcdPki | None = None) -> EtcdServer:
    server = EtcdServer(data_dir, tls=tls)
    server.start()
    return server


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """A fresh, healthy, single-member etcd for this test."""
    server = started_etcd(tmp_path / "etcd")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def session_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """One real etcd for the whole session; tests keep apart by key prefix (`unique_prefix()`)."""
    server = started_etcd(tmp_path_factory.mktemp("session-etcd") / "etcd")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def etcd_client(etcd: EtcdServer) -> AsyncIterator[EtcdClient]:
    async with EtcdClient(etcd.endpoint, timeout=10) as client:
        yield client


UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


class WatchPartition:
    """A network partition between one datastore's etcd watches and etcd; its other calls go through.

    `cut()` breaks every watch stream open now, as a lost connection does (the stream fails with
    EtcdUnavailable), and holds every watch set up from then on at its set-up until `heal()`, as a
    connection to an unreachable etcd would be for a while: writes and reads still reach etcd, but
    the store hears of no change. Pass `connect` as the datastore's `connect`.

    `txns` is every transaction the store ran, with etcd's answer; `until_sent` waits for one.
    """

    def __init__(self) -> None:
        self._healed = asyncio.Event()
        self._healed.set()
        self._live: set[_PartitionedWatch] = set()
        self.txns: list[SentTxn] = []
        self._sent = asyncio.Event()

    def connect(
        self,
        target: str,
        *,
        timeout: float | None,
        credentials: grpc.ChannelCredentials | None,
        options: Sequence[tuple[str, int | str]],
    ) -> EtcdClient:
        return _PartitionedClient(self, target, timeout=timeout, credentials=credentials, options=options)

    async def until_sent(self, condition: Callable[[SentTxn], bool]) -> SentTxn:
        """The first transaction of the store's for which `condition` holds, once etcd has answered it."""
        while True:
            for txn in self.txns:
                if condition(txn):
                    return txn
            self._sent.clear()
            await self._sent.wait()

    def _record(self, txn: SentTxn) -> None:
        self.txns.append(txn)
        self._sent.set()

    def cut(self) -> None:
        self._healed.clear()
        for watch in list(self._live):
            watch.sever()

    def heal(self) -> None:
        self._healed.set()

    async def _until_healed(self, watch: _PartitionedWatch) -> None:
        await self._healed.wait()
        self._live.add(watch)

    def _ended(self, watch: _PartitionedWatch) -> None:
        self._live.discard(watch)


@dataclass(frozen=True)
class SentTxn:
    """One etcd transaction a store ran, and etcd's answer."""

    compares: Sequence[Compare]
    success: Sequence[Op]
    failure: Sequence[Op]
    result: TxnResult


class _PartitionedClient(EtcdClient):
    def __init__(self, partition: WatchPartition, target: str, **settings: Any) -> None:
        super().__init__(target, **settings)
        self._partition = partition

    async def txn(self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        result = await super().txn(compares, success, failure)
        self._partition._record(SentTxn(compares, success, failure, result))
        return result

    def watch(self, key: Key, **options: Any) -> Watch:
        real = super().watch(key, **options)
        return _PartitionedWatch(self._partition, self._watch, real.request, setup_timeout=self.timeout)


class _PartitionedWatch(Watch):
    """A real etcd watch behind the partition: set up once it is healed, severed when it is cut."""

    def __init__(self, partition: WatchPartition, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._partition = partition
        self._severed = False

    async def start(self) -> None:
        await self._partition._until_healed(self)
        await super().start()

    def sever(self) -> None:
        self._severed = True
        self.cancel()

    def __aiter__(self) -> AsyncIterator[WatchBatch]:
        return self._through(super().__aiter__())

    async def _through(self, batches: AsyncIterator[WatchBatch]) -> AsyncIterator[WatchBatch]:
        try:
            async for batch in batches:
                yield batch
            if self._severed:
                raise EtcdUnavailable("the connection to etcd was cut (a test's partition)", code=UNAVAILABLE)
        finally:
            self._partition._ended(self)
