"""A small, typed asyncio client for the part of etcd's v3 API that epsync uses, over grpc.aio.

Keys and values are bytes (a `str` key is encoded as UTF-8). Every call returns the revision of the
response header: the store's revision when the call was served. Reads are linearizable.

    async with EtcdClient("127.0.0.1:2379") as etcd:
        put = await etcd.put(b"/a", b"1")
        ok = await etcd.txn([Compare(b"/a", "mod_revision", "==", put.revision)], [PutOp(b"/a", b"2")])
        async with etcd.watch(b"/", prefix=True, start_revision=put.revision, prev_kv=True) as watch:
            async for batch in watch:
                ...

Failures raise an `EtcdError`: `EtcdUnavailable` (unreachable, no leader, timed out: a write may or
may not have been applied), `EtcdCompacted`, `EtcdFutureRevision`, `EtcdRequestTooLarge`,
`EtcdWatchCanceled`, or `EtcdError` itself for the rest.
"""

from __future__ import annotations

import asyncio
import ipaddress
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import grpc

from epsync.etcd.v3 import kv_pb2, rpc_pb2, rpc_pb2_grpc

Key = bytes | str
CompareTarget = Literal["version", "create_revision", "mod_revision", "value"]
CompareOp = Literal["==", "!=", "<", ">"]

_TARGETS = {
    "version": rpc_pb2.Compare.VERSION,
    "create_revision": rpc_pb2.Compare.CREATE,
    "mod_revision": rpc_pb2.Compare.MOD,
    "value": rpc_pb2.Compare.VALUE,
}
_OPS = {
    "==": rpc_pb2.Compare.EQUAL,
    "!=": rpc_pb2.Compare.NOT_EQUAL,
    "<": rpc_pb2.Compare.LESS,
    ">": rpc_pb2.Compare.GREATER,
}
# Responses hold whole key ranges (a cache's bootstrap reads every endpoint), so no 4 MiB cap on
# what we receive; etcd caps requests itself. Keepalive pings find a dead connection under an idle
# watch; one every 30 s stays well clear of etcd's --grpc-keepalive-min-time (5 s) ping policing.
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
]
# Makes etcd end a watch stream with UNAVAILABLE when its member loses the leader, rather than
# leaving the watch silently stalled (clientv3's WithRequireLeader).
_REQUIRE_LEADER = (("hasleader", "true"),)


# --- errors -----------------------------------------------------------------------------------


class EtcdError(Exception):
    """An etcd call failed; `code` and `details` are the gRPC status (code None: not a gRPC failure)."""

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None, details: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.details = details


class EtcdUnavailable(EtcdError):
    """etcd could not serve the call now: unreachable, no leader, overloaded, or the call timed out.

    A write that fails this way may or may not have been applied.
    """


class EtcdCompacted(EtcdError):
    """The revision asked for is older than etcd's compaction point.

    `compact_revision` is that point when etcd said it (watches do; reads do not): a watch can
    start at `compact_revision` or later. `requested` is the revision asked for, if known.
    """

    def __init__(self, compact_revision: int | None, requested: int | None = None, *, details: str = "") -> None:
        asked = f"revision {requested}" if requested is not None else "the revision asked for"
        point = f" (compacted up to revision {compact_revision})" if compact_revision is not None else ""
        super().__init__(f"etcd: {asked} has been compacted{point}", code=grpc.StatusCode.OUT_OF_RANGE, details=details)
        self.compact_revision = compact_revision
        self.requested = requested


class EtcdFutureRevision(EtcdError):
    """A read asked for a revision etcd has not reached yet."""


class EtcdRequestTooLarge(EtcdError):
    """The request is over one of etcd's caps (--max-request-bytes, --max-txn-ops); split it."""


class EtcdWatchCanceled(EtcdError):
    """etcd canceled the watch for a reason other than compaction; `reason` is etcd's."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"etcd canceled the watch: {reason or 'no reason given'}")
        self.reason = reason


def _error(error: grpc.aio.AioRpcError, *, revision: int | None = None) -> EtcdError:
    """The EtcdError for a failed call, by gRPC code and etcd's message (etcd's rpctypes package)."""
    code, details = error.code(), error.details() or ""
    message = f"etcd: {details or code.name}"
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return EtcdUnavailable(message, code=code, details=details)
    if code == grpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
        return EtcdCompacted(None, revision, details=details)
    if code == grpc.StatusCode.OUT_OF_RANGE and "future revision" in details:
        return EtcdFutureRevision(message, code=code, details=details)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED or (
        code == grpc.StatusCode.INVALID_ARGUMENT and ("too large" in details or "too many operations" in details)
    ):
        return EtcdRequestTooLarge(message, code=code, details=details)
    return EtcdError(message, code=code, details=details)


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as etcd stores it. In a delete event only `key` and `mod_revision` (the deletion's) are set."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int  # writes since the key was created; 1 for a new key
    lease: int = 0

    @classmethod
    def from_pb(cls, kv: kv_pb2.KeyValue) -> KeyValue:
        return cls(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)


@dataclass(frozen=True, slots=True)
class RangeResult:
    revision: int  # the store's revision the read saw
    kvs: list[KeyValue]  # in key order; values empty if keys_only; none if count_only
    count: int  # keys in the whole range, whatever the limit
    more: bool  # the limit left keys out


@dataclass(frozen=True, slots=True)
class PutResult:
    revision: int  # the put's revision: the key's new mod_revision
    prev_kv: KeyValue | None  # what it replaced, when asked for and the key existed


@dataclass(frozen=True, slots=True)
class DeleteResult:
    revision: int  # the deletion's revision (unchanged when nothing was deleted)
    deleted: int
    prev_kvs: list[KeyValue]  # what was deleted, when asked for


OpResult = RangeResult | PutResult | DeleteResult


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool  # every compare held, so the success ops ran (else the failure ops did)
    revision: int  # the store's revision after the txn (a txn's writes all share it)
    responses: list[OpResult]  # one per op that ran, in order


@dataclass(frozen=True, slots=True)
class StatusResult:
    revision: int
    version: str  # the server's etcd version
    member_id: int
    leader: int  # member id of the leader
    raft_term: int
    db_size: int  # bytes


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: Literal["put", "delete"]
    kv: KeyValue  # for "delete", only key and mod_revision (the deletion's revision)
    prev_kv: KeyValue | None  # the key before this event, when asked for (None for a create)

    @classmethod
    def from_pb(cls, event: kv_pb2.Event) -> WatchEvent:
        return cls(
            "delete" if event.type == kv_pb2.Event.DELETE else "put",
            KeyValue.from_pb(event.kv),
            KeyValue.from_pb(event.prev_kv) if event.HasField("prev_kv") else None,
        )


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """Events in revision order; no events: a progress notification (nothing more up to `revision`)."""

    revision: int  # the store's revision when etcd sent the batch, >= every event's
    events: list[WatchEvent]


# --- requests ---------------------------------------------------------------------------------


def _bytes(key: Key) -> bytes:
    return key.encode() if isinstance(key, str) else key


def prefix_range_end(prefix: bytes) -> bytes:
    """The range_end that makes [prefix, range_end) every key starting with `prefix`."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"  # etcd: every key >= key
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _range_end(key: bytes, prefix: bool, range_end: Key | None) -> bytes:
    if prefix and range_end is not None:
        raise ValueError("give prefix=True or range_end, not both")
    return prefix_range_end(key) if prefix else _bytes(range_end) if range_end is not None else b""


@dataclass(frozen=True, slots=True)
class Compare:
    """A txn condition: `key`'s `target` `op` `value`. A missing key has version and revisions 0."""

    key: Key
    target: CompareTarget
    op: CompareOp = "=="
    value: int | bytes = 0

    def to_pb(self) -> rpc_pb2.Compare:
        compare = rpc_pb2.Compare(key=_bytes(self.key), target=_TARGETS[self.target], result=_OPS[self.op])
        if self.target == "value":
            if not isinstance(self.value, bytes):
                raise TypeError("a value compare needs a bytes value")
            compare.value = self.value
        elif isinstance(self.value, int):
            setattr(compare, self.target, self.value)  # version, create_revision and mod_revision share their names
        else:
            raise TypeError(f"a {self.target} compare needs an int value")
        return compare


@dataclass(frozen=True, slots=True)
class RangeOp:
    """Read `key`, or every key with it as a prefix, or [key, range_end)."""

    key: Key
    prefix: bool = False
    range_end: Key | None = None
    revision: int = 0  # 0: the latest
    limit: int = 0  # 0: no limit
    keys_only: bool = False
    count_only: bool = False

    def to_pb(self) -> rpc_pb2.RangeRequest:
        key = _bytes(self.key)
        return rpc_pb2.RangeRequest(
            key=key,
            range_end=_range_end(key, self.prefix, self.range_end),
            revision=self.revision,
            limit=self.limit,
            keys_only=self.keys_only,
            count_only=self.count_only,
        )


@dataclass(frozen=True, slots=True)
class PutOp:
    key: Key
    value: bytes
    prev_kv: bool = False  # return what the put replaced
    lease: int = 0

    def to_pb(self) -> rpc_pb2.PutRequest:
        return rpc_pb2.PutRequest(key=_bytes(self.key), value=self.value, prev_kv=self.prev_kv, lease=self.lease)


@dataclass(frozen=True, slots=True)
class DeleteOp:
    """Delete `key`, or every key with it as a prefix, or [key, range_end)."""

    key: Key
    prefix: bool = False
    range_end: Key | None = None
    prev_kv: bool = False  # return what was deleted

    def to_pb(self) -> rpc_pb2.DeleteRangeRequest:
        key = _bytes(self.key)
        return rpc_pb2.DeleteRangeRequest(
            key=key, range_end=_range_end(key, self.prefix, self.range_end), prev_kv=self.prev_kv
        )


Op = RangeOp | PutOp | DeleteOp


def _request_op(op: Op) -> rpc_pb2.RequestOp:
    if isinstance(op, RangeOp):
        return rpc_pb2.RequestOp(request_range=op.to_pb())
    if isinstance(op, PutOp):
        return rpc_pb2.RequestOp(request_put=op.to_pb())
    return rpc_pb2.RequestOp(request_delete_range=op.to_pb())


def _range_result(response: rpc_pb2.RangeResponse, revision: int) -> RangeResult:
    return RangeResult(revision, [KeyValue.from_pb(kv) for kv in response.kvs], response.count, response.more)


def _put_result(response: rpc_pb2.PutResponse, revision: int) -> PutResult:
    return PutResult(revision, KeyValue.from_pb(response.prev_kv) if response.HasField("prev_kv") else None)


def _delete_result(response: rpc_pb2.DeleteRangeResponse, revision: int) -> DeleteResult:
    return DeleteResult(revision, response.deleted, [KeyValue.from_pb(kv) for kv in response.prev_kvs])


def _op_result(response: rpc_pb2.ResponseOp, revision: int) -> OpResult:
    kind = response.WhichOneof("response")
    if kind == "response_range":
        return _range_result(response.response_range, revision)
    if kind == "response_put":
        return _put_result(response.response_put, revision)
    if kind == "response_delete_range":
        return _delete_result(response.response_delete_range, revision)
    raise EtcdError(f"etcd: unexpected txn response {kind!r}")


# --- the client -------------------------------------------------------------------------------


def endpoints_target(endpoints: Sequence[str], *, tls: bool = False) -> str:
    """The gRPC target for etcd endpoints such as `http://10.0.0.1:2379` (scheme optional).

    One endpoint may name any host; several must be IP addresses of one family (gRPC then uses a
    reachable one). For a name that resolves to several members, give EtcdClient `dns:///name:port`.
    With `tls`, endpoints are `https://host:port` (or host:port) instead of `http://`.
    """
    scheme = "https://" if tls else "http://"
    hosts = [endpoint.removeprefix(scheme).rstrip("/") for endpoint in endpoints]
    if not hosts or any(not host or "://" in host for host in hosts):
        raise ValueError(f"etcd endpoints must be host:port or {scheme}host:port, got {list(endpoints)}")
    if len(hosts) == 1:
        return hosts[0]
    try:
        versions = {ipaddress.ip_address(host.rsplit(":", 1)[0].strip("[]")).version for host in hosts}
    except ValueError:
        versions = set()
    if len(versions) != 1:
        raise ValueError(f"several etcd endpoints must be IP addresses of one family, got {hosts}")
    return f"ipv{versions.pop()}:" + ",".join(hosts)


def tls_credentials(
    ca_file: str | Path | None = None, cert_file: str | Path | None = None, key_file: str | Path | None = None
) -> grpc.ChannelCredentials:
    """Channel credentials for etcd over TLS: the CA that signs etcd's certificate (None: the system's
    roots) and, for client-certificate authentication, a certificate and its key. Raises OSError
    naming a file that cannot be read, ValueError for a certificate without its key.
    """
    if (cert_file is None) != (key_file is None):
        raise ValueError("an etcd client certificate needs its key, and a key its certificate")

    def read(path: str | Path | None) -> bytes | None:
        return None if path is None else Path(path).read_bytes()

    return grpc.ssl_channel_credentials(
        root_certificates=read(ca_file), private_key=read(key_file), certificate_chain=read(cert_file)
    )


class EtcdClient:
    """One connection to an etcd cluster. Use as `async with EtcdClient("127.0.0.1:2379") as etcd:`.

    `target` is a gRPC target (see `endpoints_target`); `timeout` applies to each unary call.
    `credentials` (see `tls_credentials`) makes the connection TLS; `options` are extra gRPC channel
    options, overriding the defaults of the same name.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float | None = 10.0,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, int | str]] = (),
    ) -> None:
        self.target = target
        self.timeout = timeout
        overridden = {name for name, _ in options}
        channel_options = [o for o in _CHANNEL_OPTIONS if o[0] not in overridden] + list(options)
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target, options=channel_options)
        else:
            self._channel = grpc.aio.secure_channel(target, credentials, options=channel_options)
        self._kv = rpc_pb2_grpc.KVStub(self._channel)
        self._watch = rpc_pb2_grpc.WatchStub(self._channel)
        self._maintenance = rpc_pb2_grpc.MaintenanceStub(self._channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection; calls and watches still running fail."""
        await self._channel.close(grace=None)

    async def range(
        self,
        key: Key,
        *,
        prefix: bool = False,
        range_end: Key | None = None,
        revision: int = 0,
        limit: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
    ) -> RangeResult:
        """Read `key` (or a prefix, or [key, range_end)) at `revision` (0: the latest), in key order."""
        op = RangeOp(key, prefix, range_end, revision, limit, keys_only, count_only)
        try:
            response = await self._kv.Range(op.to_pb(), timeout=self.timeout)
        except grpc.aio.AioRpcError as error:
            raise _error(error, revision=revision or None) from None
        return _range_result(response, response.header.revision)

    async def get(self, key: Key, *, revision: int = 0) -> KeyValue | None:
        """The key at `revision` (0: the latest), or None."""
        result = await self.range(key, revision=revision)
        return result.kvs[0] if result.kvs else None

    async def put(self, key: Key, value: bytes, *, prev_kv: bool = False, lease: int = 0) -> PutResult:
        try:
            response = await self._kv.Put(PutOp(key, value, prev_kv, lease).to_pb(), timeout=self.timeout)
        except grpc.aio.AioRpcError as error:
            raise _error(error) from None
        return _put_result(response, response.header.revision)

    async def delete_range(
        self, key: Key, *, prefix: bool = False, range_end: Key | None = None, prev_kv: bool = False
    ) -> DeleteResult:
        """Delete `key` (or a prefix, or [key, range_end)); all deleted keys share one revision."""
        try:
            response = await self._kv.DeleteRange(
                DeleteOp(key, prefix, range_end, prev_kv).to_pb(), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as error:
            raise _error(error) from None
        return _delete_result(response, response.header.revision)

    async def txn(self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        """If every compare holds, run `success`, else `failure`: atomically, at one revision.

        A txn may not write one key twice; etcd caps its ops (--max-txn-ops, 128 by default).
        """
        request = rpc_pb2.TxnRequest(
            compare=[compare.to_pb() for compare in compares],
            success=[_request_op(op) for op in success],
            failure=[_request_op(op) for op in failure],
        )
        try:
            response = await self._kv.Txn(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as error:
            raise _error(error) from None
        revision = response.header.revision
        return TxnResult(response.succeeded, revision, [_op_result(op, revision) for op in response.responses])

    async def compact(self, revision: int, *, physical: bool = False) -> int:
        """Drop the history before `revision` (`physical`: wait until it is off disk); returns the header revision."""
        try:
            response = await self._kv.Compact(
                rpc_pb2.CompactionRequest(revision=revision, physical=physical), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as error:
            raise _error(error, revision=revision) from None
        return response.header.revision

    async def status(self) -> StatusResult:
        """The status of the member this connection reached."""
        try:
            response = await self._maintenance.Status(rpc_pb2.StatusRequest(), timeout=self.timeout)
        except grpc.aio.AioRpcError as error:
            raise _error(error) from None
        return StatusResult(
            response.header.revision,
            response.version,
            response.header.member_id,
            response.leader,
            response.raftTerm,
            response.dbSize,
        )

    async def current_revision(self) -> int:
        """The cluster's latest revision, read linearizably (a count-only read of one key)."""
        return (await self.range(b"\0", count_only=True)).revision

    def watch(
        self,
        key: Key,
        *,
        prefix: bool = False,
        range_end: Key | None = None,
        start_revision: int = 0,
        prev_kv: bool = False,
        progress_notify: bool = False,
    ) -> Watch:
        """Watch `key` (or a prefix, or [key, range_end)) from `start_revision` (inclusive; 0: from now on).

        Use as `async with etcd.watch(...) as watch: async for batch in watch:`; see `Watch`.
        Iterating raises EtcdCompacted (with the compact revision) if `start_revision` is compacted,
        EtcdUnavailable if the connection or the leader is lost, and EtcdWatchCanceled if etcd ends
        the watch for another reason.
        """
        key_bytes = _bytes(key)
        request = rpc_pb2.WatchCreateRequest(
            key=key_bytes,
            range_end=_range_end(key_bytes, prefix, range_end),
            start_revision=start_revision,
            prev_kv=prev_kv,
            progress_notify=progress_notify,
        )
        return Watch(self._watch, request, setup_timeout=self.timeout)


class Watch:
    """One etcd watch on its own stream: an async iterator of WatchBatch.

    `async with` (or `await start()`) returns once etcd has set the watch up, at the store's
    revision `created_revision`: every later change is seen. Iterating starts it if need be.
    `cancel()` or leaving the `async with` ends the watch and, quietly, the iteration.
    """

    def __init__(
        self,
        stub: rpc_pb2_grpc.WatchAsyncStub,
        request: rpc_pb2.WatchCreateRequest,
        *,
        setup_timeout: float | None = None,
    ) -> None:
        self.request = request
        self.watch_id: int | None = None
        self.created_revision: int | None = None
        self._stub = stub
        self._setup_timeout = setup_timeout
        self._call: grpc.aio.StreamStreamCall[rpc_pb2.WatchRequest, rpc_pb2.WatchResponse] | None = None
        self._iterated = False
        self._closed = False
        self._cancelled = asyncio.Event()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cancel()

    async def start(self) -> None:
        """Open the stream and wait until etcd has created the watch.

        Raises EtcdWatchCanceled if `cancel()` comes first, and EtcdUnavailable if etcd has not
        answered within the client's timeout: a write to a stream cancelled under it, or to an
        etcd that accepted the connection and went silent, would otherwise wait for ever.
        """
        if self._call is not None:
            raise RuntimeError("this watch has already started")
        if self._closed:
            raise EtcdWatchCanceled("cancelled before it started")
        self._call = self._stub.Watch(None, metadata=_REQUIRE_LEADER)  # no request iterator: we write()
        handshake = asyncio.ensure_future(self._create())
        cancelled = asyncio.ensure_future(self._cancelled.wait())
        try:
            await asyncio.wait({handshake, cancelled}, timeout=self._setup_timeout, return_when=FIRST_COMPLETED)
            if self._closed:  # whatever the handshake made of the cancelled call
                raise EtcdWatchCanceled("cancelled while it was being set up")
            if not handshake.done():
                raise EtcdUnavailable(
                    f"etcd did not set the watch up within {self._setup_timeout} s",
                    code=grpc.StatusCode.DEADLINE_EXCEEDED,
                )
            response = handshake.result()
            self.watch_id, self.created_revision = response.watch_id, response.header.revision
        except BaseException:
            self.cancel()
            raise
        finally:
            cancelled.cancel()
            if not handshake.done():
                handshake.cancel()
                await asyncio.wait({handshake})  # nothing of it may outlive the watch
            if not handshake.cancelled():
                handshake.exception()  # retrieved: a failure of a cancelled call is no news

    async def _create(self) -> rpc_pb2.WatchResponse:
        assert self._call is not None
        try:
            await self._call.write(rpc_pb2.WatchRequest(create_request=self.request))
        except grpc.aio.AioRpcError as error:  # the stream failed before it started: etcd unreachable
            raise _error(error) from None
        response = await self._read()
        if response is None or not response.created:
            raise EtcdError(f"etcd: expected the watch to be created, got {response}")
        return response

    def cancel(self) -> None:
        """End the watch: the stream closes and etcd drops the watcher."""
        self._closed = True
        self._cancelled.set()
        if self._call is not None:
            self._call.cancel()

    def __aiter__(self) -> AsyncIterator[WatchBatch]:
        if self._iterated:
            raise RuntimeError("a Watch can be iterated only once")
        self._iterated = True
        return self._batches()

    async def _batches(self) -> AsyncIterator[WatchBatch]:
        try:
            if self._call is None:
                await self.start()
            while (response := await self._read()) is not None:
                yield WatchBatch(response.header.revision, [WatchEvent.from_pb(event) for event in response.events])
        finally:
            self.cancel()

    async def _read(self) -> rpc_pb2.WatchResponse | None:
        """The next response; None once `cancel()` has ended the watch. Compaction and cancellation raise."""
        assert self._call is not None
        try:
            response = await self._call.read()
        except grpc.aio.AioRpcError as error:
            if self._closed:
                return None
            raise _error(error) from None
        except asyncio.CancelledError:
            # A read of a call that `cancel()` cancelled raises CancelledError: the watch is over.
            # A cancellation of the reading task itself goes on up.
            task = asyncio.current_task()
            if self._closed and not (task is not None and task.cancelling()):
                return None
            raise
        if not isinstance(response, rpc_pb2.WatchResponse):  # grpc.aio.EOF: etcd closed the stream
            if self._closed:
                return None
            raise EtcdUnavailable("etcd ended the watch stream", code=grpc.StatusCode.UNAVAILABLE)
        if response.compact_revision:
            raise EtcdCompacted(response.compact_revision, self.request.start_revision or None)
        if response.canceled:
            raise EtcdWatchCanceled(response.cancel_reason)
        return response
