"""WriteWorkloadEndpoints over a real server: order, per-write status, same-key order, group commit, flow control."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import random
import sqlite3
import threading
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from google.rpc import error_details_pb2

from epsync.client import Client
from epsync.errors import EpsyncError, InvalidArgument, error_from_status
from epsync.server.app import EpsyncServer
from epsync.store.base import Write, WriteResult
from epsync.store.sqlite import SqliteDatastore
from epsync.v1 import workload_endpoint_service_pb2 as wep_pb
from epsync.v1 import workload_endpoint_service_pb2_grpc as wep_grpc
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint, WorkloadEndpointPort
from tests.conftest import server_config
from tests.factories import endpoint

T = TypeVar("T")
Request = wep_pb.WriteWorkloadEndpointsRequest
Response = wep_pb.WriteWorkloadEndpointsResponse

OK = grpc.StatusCode.OK.value[0]
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]
ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS.value[0]
ABORTED = grpc.StatusCode.ABORTED.value[0]
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
INTERNAL = grpc.StatusCode.INTERNAL.value[0]

MAX_IN_FLIGHT = 1000


# --- request builders ------------------------------------------------------------------------------


def create(request_id: str, wep: WorkloadEndpoint) -> Request:
    return Request(request_id=request_id, create=wep_pb.CreateWorkloadEndpointRequest(workload_endpoint=wep))


def update(request_id: str, wep: WorkloadEndpoint, *, allow_missing: bool = False) -> Request:
    return Request(
        request_id=request_id,
        update=wep_pb.UpdateWorkloadEndpointRequest(workload_endpoint=wep, allow_missing=allow_missing),
    )


def delete(
    request_id: str, name: str, *, resource_version: int = 0, uid: str = "", allow_missing: bool = False
) -> Request:
    return Request(
        request_id=request_id,
        delete=wep_pb.DeleteWorkloadEndpointRequest(
            namespace="default", name=name, resource_version=resource_version, uid=uid, allow_missing=allow_missing
        ),
    )


def versioned(wep: WorkloadEndpoint, resource_version: int) -> WorkloadEndpoint:
    wep.metadata.resource_version = resource_version
    return wep


async def within(awaitable: Awaitable[T], seconds: float = 20) -> T:
    """Await something the test expects to happen, failing instead of hanging when it does not."""
    return await asyncio.wait_for(awaitable, seconds)


async def write_all(client: Client, requests: Sequence[Request]) -> list[Response]:
    return [response async for response in client.write_endpoints(requests)]


def strictly_increasing(values: Sequence[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


def as_error(response: Response) -> EpsyncError:
    code = grpc.StatusCode(next(c for c in grpc.StatusCode if c.value[0] == response.status.code))
    return error_from_status(code, response.status, response.status.message)


def same_error(left: EpsyncError, right: EpsyncError) -> bool:
    """Code, message, BadRequest violations and ErrorInfo reason: everything a client acts on."""
    return (
        left.code == right.code
        and left.message == right.message
        and getattr(left, "violations", None) == getattr(right, "violations", None)
        and (left.reason, left.metadata) == (right.reason, right.metadata)
    )


async def collect(responses: AsyncIterable[Response]) -> list[Response]:
    return [response async for response in responses]


# --- store probes ----------------------------------------------------------------------------------


class CommitGate:
    """Holds every group commit at its COMMIT while closed: writes pile up unanswered.

    It stands in the embedded store's writer connection (`connection_class`), so the server's
    store is made with it; it is open unless a test closes it.
    """

    def __init__(self) -> None:
        self._open = threading.Event()
        self._open.set()

    def connection_class(self) -> type[sqlite3.Connection]:
        opened = self._open

        class GatedConnection(sqlite3.Connection):
            def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
                if sql == "COMMIT":  # on the store's writer thread
                    opened.wait(timeout=60)
                return super().execute(sql, parameters)

        return GatedConnection

    def open(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._open.clear()


@pytest.fixture
def commit_gate() -> CommitGate:
    return CommitGate()


@pytest.fixture
async def server(
    tmp_path: Path, datastore_settings: dict[str, Any], commit_gate: CommitGate
) -> AsyncIterator[EpsyncServer]:
    """The shared fixture's server, its embedded store's commits behind `commit_gate`."""
    config = server_config(tmp_path / "data", **datastore_settings)
    store = None
    if config.datastore == "sqlite":
        store = SqliteDatastore(
            config.data_dir / "epsync.db",
            history_window=config.history_window,
            connection_class=commit_gate.connection_class(),
        )
    instance = EpsyncServer(config, store=store)
    await instance.start()
    yield instance
    await instance.stop(grace=0.1)


@pytest.fixture
def sqlite_store(server: EpsyncServer) -> SqliteDatastore:
    """The server's embedded store (tests taking it run on SQLite only: see conftest)."""
    assert isinstance(server.store, SqliteDatastore)
    return server.store


class StoreProbe:
    """Counts the writes the store is handed, and wakes a test waiting for a count."""

    def __init__(self, store: SqliteDatastore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.submitted = 0
        self.outstanding = 0
        self.max_outstanding = 0
        self._waiters: list[tuple[int, asyncio.Event]] = []
        original = store.write

        async def write(writes: Sequence[Write]) -> list[WriteResult]:
            self.submitted += len(writes)
            self.outstanding += len(writes)
            self.max_outstanding = max(self.max_outstanding, self.outstanding)
            for count, event in self._waiters:
                if self.submitted >= count:
                    event.set()
            try:
                return await original(writes)  # queues the call before it first yields, like the real one
            finally:
                self.outstanding -= len(writes)

        monkeypatch.setattr(store, "write", write)

    async def submitted_at_least(self, count: int) -> None:
        event = asyncio.Event()
        if self.submitted >= count:
            return
        self._waiters.append((count, event))
        await event.wait()


@pytest.fixture
def probe(sqlite_store: SqliteDatastore, monkeypatch: pytest.MonkeyPatch) -> StoreProbe:
    return StoreProbe(sqlite_store, monkeypatch)


@pytest.fixture
def gate(sqlite_store: SqliteDatastore, commit_gate: CommitGate) -> Iterator[CommitGate]:
    """The commit gate, closed: every group commit is held at its COMMIT until the test opens it."""
    commit_gate.close()
    try:
        yield commit_gate
    finally:
        commit_gate.open()  # before the server stops: closing the store waits for the held group


@dataclass
class Counted:
    """A request source that counts how many requests gRPC has taken from it."""

    requests: Sequence[Request]
    taken: int = 0

    async def __aiter__(self) -> AsyncIterator[Request]:
        for request in self.requests:
            self.taken += 1
            yield request


# --- order and per-write outcome -------------------------------------------------------------------


async def test_2000_mixed_writes_are_answered_in_order_as_if_sent_one_by_one(client: Client) -> None:
    """A random mix over 150 keys, checked against a model that applies the same writes one at a time."""
    rng = random.Random(20240611)
    model: dict[str, str] = {}  # name -> the request_id whose write is stored
    requests: list[Request] = []
    expected: list[tuple[int, str | None]] = []  # per request: status code, and request_id of the object answered
    for step in range(2000):
        name = f"wep-{rng.randrange(150)}"
        request_id = f"r{step}"
        wep = endpoint(name, labels={"step": request_id})
        roll = rng.random()
        if name not in model:
            if roll < 0.7:
                requests.append(create(request_id, wep))
                expected.append((OK, request_id))
                model[name] = request_id
            elif roll < 0.8:
                requests.append(update(request_id, wep, allow_missing=True))
                expected.append((OK, request_id))
                model[name] = request_id
            elif roll < 0.9:
                requests.append(delete(request_id, name))
                expected.append((NOT_FOUND, None))
            else:
                requests.append(delete(request_id, name, allow_missing=True))
                expected.append((OK, None))
        elif roll < 0.45:
            requests.append(update(request_id, wep))
            expected.append((OK, request_id))
            model[name] = request_id
        elif roll < 0.55:
            requests.append(update(request_id, versioned(wep, 10**12)))
            expected.append((ABORTED, None))
        elif roll < 0.65:
            requests.append(create(request_id, wep))
            expected.append((ALREADY_EXISTS, None))
        else:
            requests.append(delete(request_id, name))
            expected.append((OK, model.pop(name)))  # a delete answers with the object as it was

    responses = await write_all(client, requests)

    assert [r.request_id for r in responses] == [r.request_id for r in requests]
    assert [(r.status.code, r.workload_endpoint.metadata.labels.get("step")) for r in responses] == expected
    # Nothing else writes: the stream's writes reach the store, and get their revisions, in request order.
    written = [
        (r.workload_endpoint.metadata.name, r.resource_version) for r in responses if r.HasField("workload_endpoint")
    ]
    revisions = [revision for _, revision in written]
    assert revisions == sorted(revisions)
    # Writes committed in one transaction (etcd batches them) share its revision; one object's never do.
    assert len(set(written)) == len(written)
    stored = {e.metadata.name: e.metadata.labels["step"] async for e in client.list_endpoints()}
    assert stored == model


async def test_a_bad_write_fails_alone_with_the_unary_error(client: Client) -> None:
    bad = endpoint("bad")
    bad.spec.mac = "ca:fe:1d:52:bb"
    bad.spec.ports.append(WorkloadEndpointPort(name="http", protocol="TCP", port=70000))
    responses = await write_all(
        client, [create("a", endpoint("good-1")), create("b", bad), create("c", endpoint("good-2"))]
    )

    assert [(r.request_id, r.status.code) for r in responses] == [("a", OK), ("b", INVALID_ARGUMENT), ("c", OK)]
    failed = responses[1]
    assert not failed.HasField("workload_endpoint")
    assert failed.resource_version == 0
    (detail,) = [d for d in failed.status.details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR)]
    violations = error_details_pb2.BadRequest()
    detail.Unpack(violations)
    assert {"spec.mac", "spec.ports[0].port"} <= {v.field for v in violations.field_violations}
    with pytest.raises(InvalidArgument) as unary:
        await client.create_endpoint(bad)
    assert same_error(as_error(failed), unary.value)
    assert sorted([e.metadata.name async for e in client.list_endpoints()]) == ["good-1", "good-2"]


async def test_a_request_without_an_operation_is_invalid_argument_for_that_request_only(client: Client) -> None:
    responses = await write_all(client, [create("a", endpoint("a")), Request(request_id="empty"), delete("c", "a")])
    assert [(r.request_id, r.status.code) for r in responses] == [("a", OK), ("empty", INVALID_ARGUMENT), ("c", OK)]
    error = as_error(responses[1])
    assert isinstance(error, InvalidArgument)
    assert [v.field for v in error.violations] == ["operation"]


async def test_a_request_that_does_not_parse_ends_the_stream_after_the_ones_before_it(
    server: EpsyncServer, client: Client
) -> None:
    first, last = (create(name, endpoint(name)).SerializeToString() for name in ("first", "last"))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        method = channel.stream_stream(
            "/epsync.v1.WorkloadEndpointService/WriteWorkloadEndpoints",
            request_serializer=bytes,
            response_deserializer=Response.FromString,
        )
        call = method(iter([first, b"\xff\xff\xff", last]))
        responses: list[Response] = []

        async def read_all() -> None:
            async for response in call:
                responses.append(response)

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await read_all()
    assert [(r.request_id, r.status.code) for r in responses] == [("first", OK)]
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "request 2 does not parse" in (raised.value.details() or "")
    assert [e.metadata.name async for e in client.list_endpoints()] == ["first"]


async def test_create_update_delete_create_of_one_key_apply_in_request_order(client: Client) -> None:
    responses = await write_all(
        client,
        [
            create("create", endpoint("web", labels={"v": "1"})),
            update("update", endpoint("web", labels={"v": "2"})),
            delete("delete", "web"),
            create("again", endpoint("web", labels={"v": "3"})),
            update("upsert", endpoint("web", labels={"v": "4"}), allow_missing=True),
        ],
    )

    assert [r.status.code for r in responses] == [OK] * 5, [r.status.message for r in responses]
    created, updated, deleted, again, upserted = responses
    assert updated.workload_endpoint.metadata.uid == created.workload_endpoint.metadata.uid
    assert deleted.workload_endpoint == updated.workload_endpoint  # the delete removed what the update stored
    assert again.workload_endpoint.metadata.uid != created.workload_endpoint.metadata.uid
    assert strictly_increasing([r.resource_version for r in responses])
    assert (await client.get_endpoint("web")) == upserted.workload_endpoint
    assert upserted.workload_endpoint.metadata.labels["v"] == "4"


async def test_revisions_of_one_key_increase_in_request_order_among_other_writes(client: Client) -> None:
    requests: list[Request] = [create("hot-0", endpoint("hot", labels={"n": "0"}))]
    for n in range(1, 300):
        requests.append(create(f"cold-{n}", endpoint(f"cold-{n}")))
        requests.append(update(f"hot-{n}", endpoint("hot", labels={"n": str(n)})))
    responses = await write_all(client, requests)

    assert all(r.status.code == OK for r in responses), {r.status.message for r in responses}
    hot = [r for r in responses if r.request_id.startswith("hot-")]
    assert [r.workload_endpoint.metadata.labels["n"] for r in hot] == [str(n) for n in range(300)]
    assert strictly_increasing([r.resource_version for r in hot])
    assert (await client.get_endpoint("hot")).metadata.labels["n"] == "299"


async def test_a_precondition_mismatch_is_aborted_for_that_write_only(client: Client) -> None:
    created = await client.create_endpoint(endpoint("web"))
    revision, uid = created.metadata.resource_version, created.metadata.uid
    stale = versioned(endpoint("web", labels={"v": "stale"}), revision + 1000)
    with pytest.raises(EpsyncError) as unary:
        await client.update_endpoint(stale)
    responses = await write_all(
        client,
        [
            update("stale", stale),
            update("current", versioned(endpoint("web", labels={"v": "2"}), revision)),
            delete("old-version", "web", resource_version=revision),
            delete("other-uid", "web", uid="someone-else"),
            delete("right-uid", "web", uid=uid),
        ],
    )

    assert [(r.request_id, r.status.code) for r in responses] == [
        ("stale", ABORTED),
        ("current", OK),
        ("old-version", ABORTED),
        ("other-uid", ABORTED),
        ("right-uid", OK),
    ]
    assert "re-read it and retry" in responses[0].status.message
    assert responses[4].workload_endpoint == responses[1].workload_endpoint
    assert same_error(as_error(responses[0]), unary.value)  # exactly what the unary method said


async def test_datastore_failures_and_surprises_map_like_the_unary_methods(
    client: Client, sqlite_store: SqliteDatastore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from epsync.store.base import DatastoreUnavailable

    original = sqlite_store.write

    async def flaky(writes: Sequence[Write]) -> list[WriteResult]:
        if writes[0].key == "default/down":
            raise DatastoreUnavailable("disk on fire")
        if writes[0].key == "default/boom":
            raise RuntimeError("a bug")
        return await original(writes)

    monkeypatch.setattr(sqlite_store, "write", flaky)
    with caplog.at_level(logging.WARNING, logger="epsync.server.write_stream"):
        # One stream each: writes on one stream may share a group commit, and a failed commit fails all of its writes.
        responses = [
            response
            for name in ("a", "down", "boom")
            for response in await write_all(client, [create(name, endpoint(name))])
        ]

    assert [r.status.code for r in responses] == [OK, UNAVAILABLE, INTERNAL]
    assert responses[2].status.message == "internal error; the server log has the details"
    assert any(record.exc_info and "boom" in record.getMessage() for record in caplog.records)
    with pytest.raises(EpsyncError) as unary:
        await client.create_endpoint(endpoint("down"))
    assert same_error(as_error(responses[1]), unary.value)


# --- group commit, half-close, flow control, cancel ------------------------------------------------


async def test_a_streams_writes_share_group_commits(
    client: Client, sqlite_store: SqliteDatastore, probe: StoreProbe, gate: CommitGate
) -> None:
    before = (sqlite_store.groups_committed, sqlite_store.writes_committed)
    responses: list[Response] = []

    async def consume() -> None:
        async for response in client.write_endpoints([create(str(n), endpoint(f"wep-{n}")) for n in range(1000)]):
            responses.append(response)

    consumer = asyncio.create_task(consume())
    # The first group is held at its COMMIT; every other write of the stream queues behind it meanwhile.
    await within(probe.submitted_at_least(1000))
    gate.open()
    await within(consumer)
    after = (sqlite_store.groups_committed, sqlite_store.writes_committed)

    assert [r.request_id for r in responses] == [str(n) for n in range(1000)]
    assert all(r.status.code == OK for r in responses)
    assert after[1] - before[1] == 1000
    # One write at a time would be 1,000 transactions and fsyncs: here it is the held group and one more.
    assert after[0] - before[0] == 2, after


async def test_half_close_answers_every_write_in_flight_then_ends_ok(
    server: EpsyncServer, client: Client, probe: StoreProbe, gate: CommitGate
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = wep_grpc.WorkloadEndpointServiceStub(channel).WriteWorkloadEndpoints(None)
        for n in range(500):
            await call.write(create(str(n), endpoint(f"wep-{n}")))
        await call.done_writing()
        await within(probe.submitted_at_least(500))  # all 500 read and queued on the store, none answered yet
        gate.open()
        responses = await within(collect(call))
        assert await call.code() is grpc.StatusCode.OK
    assert [r.request_id for r in responses] == [str(n) for n in range(500)]
    assert all(r.status.code == OK for r in responses)
    assert len([e async for e in client.list_endpoints()]) == 500


async def test_past_1000_unanswered_writes_the_server_stops_reading(
    client: Client, probe: StoreProbe, gate: CommitGate
) -> None:
    source = Counted([create(str(n), endpoint(f"wep-{n}")) for n in range(3000)])
    responses: list[Response] = []

    async def consume() -> None:
        async for response in client.write_endpoints(source):
            responses.append(response)

    consumer = asyncio.create_task(consume())
    # Commits are held, so no write can be answered: the server reads 1,000 requests and queues their writes...
    await within(probe.submitted_at_least(MAX_IN_FLIGHT))
    # ... and then no more, although the client keeps sending. Proving a negative takes a deadline: an
    # unbounded server reads the next request within milliseconds, far inside this one.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(probe.submitted_at_least(MAX_IN_FLIGHT + 1), timeout=0.5)
    assert probe.submitted == MAX_IN_FLIGHT
    assert source.taken > MAX_IN_FLIGHT, "the client was not even trying to send more"
    assert responses == []

    gate.open()  # answers go out, slots free, reading resumes
    await within(consumer)
    assert [r.request_id for r in responses] == [str(n) for n in range(3000)]
    assert all(r.status.code == OK for r in responses)
    assert probe.max_outstanding == MAX_IN_FLIGHT


async def test_a_cancelled_stream_leaves_no_task_behind(
    client: Client, probe: StoreProbe, gate: CommitGate, caplog: pytest.LogCaptureFixture
) -> None:
    # Warm up the channel and the server's streaming path, so only this stream's tasks are new below.
    gate.open()
    assert len(await write_all(client, [create("warm", endpoint("warm"))])) == 1
    gate.close()
    before = asyncio.all_tasks()

    async def consume() -> None:
        async for _ in client.write_endpoints(Counted([create(str(n), endpoint(f"wep-{n}")) for n in range(300)])):
            pass

    consumer = asyncio.create_task(consume())
    await within(probe.submitted_at_least(301))  # the warm-up write, then all 300 held at their commit
    # Everything this stream started: the call on both sides and the stream's reader. Not the server's standing
    # request for its next call, which grpc.aio renews as calls arrive, nor the registry's batches, which belong
    # to every writer and are held at their commit.
    started = {
        task
        for task in asyncio.all_tasks() - before - {asyncio.current_task()}
        if getattr(task.get_coro(), "__qualname__", "") != "AioServer._request_registered_call"
    }
    batches = {t for t in started if t.get_name() == "epsync-workloadendpoints-commit"}
    stream_tasks = started - batches
    assert batches, "the writes are in batches, held at their commit"
    # The call's own tasks in grpc.aio and the reader: a handful, however many writes are in flight.
    assert len(stream_tasks) < 10, f"a task per write? {sorted(t.get_name() for t in stream_tasks)}"

    consumer.cancel()  # the client leaves: its stream is cancelled
    _, pending = await asyncio.wait(stream_tasks, timeout=10)
    assert not pending, sorted(t.get_name() for t in pending)  # with commits still held: nothing waits for them

    gate.open()  # the batches the store took finish; nothing is left waiting
    _, pending = await asyncio.wait(batches, timeout=10)
    assert not pending
    assert (await client.create_endpoint(endpoint("after"))).metadata.name == "after"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_failure_inside_validation_fails_those_writes_and_the_next_batch_goes_on(
    server: EpsyncServer, client: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    registry = server.endpoint_registry
    working = registry.rtype

    def broken(items: object) -> list[bytes | list[tuple[str, str]]]:
        raise RuntimeError("the validator broke")

    monkeypatch.setattr(registry, "rtype", dataclasses.replace(working, normalize_batch=broken))
    with pytest.raises(EpsyncError) as raised:
        await client.create_endpoint(endpoint("first"))
    assert raised.value.code is grpc.StatusCode.INTERNAL
    assert "validator" not in raised.value.message  # internals stay in the log
    monkeypatch.setattr(registry, "rtype", working)
    assert (await client.create_endpoint(endpoint("second"))).metadata.name == "second"
    assert any("the validator broke" in str(r.exc_info) for r in caplog.records if r.exc_info)
