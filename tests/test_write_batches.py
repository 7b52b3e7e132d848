"""Write-stream batches: several writes in one request, answered together, exactly as if sent one by one."""

from __future__ import annotations

import grpc
import pytest

from epsync.client import Client
from epsync.errors import InvalidArgument, error_from_status
from epsync.v1 import workload_endpoint_service_pb2 as wep_pb
from tests.factories import endpoint
from tests.test_write_stream import (
    ALREADY_EXISTS,
    INVALID_ARGUMENT,
    MAX_IN_FLIGHT,
    NOT_FOUND,
    OK,
    Request,
    Response,
    create,
    delete,
    update,
    write_all,
)


def batch(request_id: str, *writes: Request) -> Request:
    return Request(request_id=request_id, batch=list(writes))


async def test_a_batch_is_answered_in_one_response_as_its_writes_would_be_alone(client: Client) -> None:
    await client.create_endpoint(endpoint("taken"))
    writes = [
        create("a", endpoint("one")),
        create("b", endpoint("taken")),  # fails alone; the others stand
        update("c", endpoint("one", labels={"v": "2"})),  # sees the create before it
        delete("d", "one"),  # deletes what the update stored
        delete("e", "never"),
    ]
    (answer,) = await write_all(client, [batch("batch-1", *writes)])
    assert answer.request_id == "batch-1"
    assert answer.status.code == OK
    assert [r.request_id for r in answer.batch] == ["a", "b", "c", "d", "e"]
    assert [r.status.code for r in answer.batch] == [OK, ALREADY_EXISTS, OK, OK, NOT_FOUND]
    created, _, updated, deleted, _ = answer.batch
    assert created.resource_version < updated.resource_version < deleted.resource_version
    assert updated.workload_endpoint.metadata.labels["v"] == "2"
    assert deleted.workload_endpoint.metadata.resource_version == updated.resource_version
    assert [e.metadata.name async for e in client.list_endpoints()] == ["taken"]


async def test_batches_and_single_writes_on_one_stream_keep_request_order(client: Client) -> None:
    requests = [
        create("1", endpoint("x")),
        batch("2", update("2a", endpoint("x", labels={"v": "a"})), create("2b", endpoint("y"))),
        update("3", endpoint("x", labels={"v": "b"})),
        batch("4", delete("4a", "y")),
    ]
    answers = await write_all(client, requests)
    assert [a.request_id for a in answers] == ["1", "2", "3", "4"]
    revisions = [
        answers[0].resource_version,
        answers[1].batch[0].resource_version,
        answers[1].batch[1].resource_version,
        answers[2].resource_version,
        answers[3].batch[0].resource_version,
    ]
    assert revisions == sorted(revisions)  # etcd may give writes to different keys one revision
    same_key = [revisions[0], revisions[1], revisions[3]]  # the writes to x
    assert len(set(same_key)) == len(same_key)
    stored = {e.metadata.name: e async for e in client.list_endpoints()}
    assert list(stored) == ["x"]
    assert stored["x"].metadata.labels["v"] == "b"


@pytest.mark.parametrize(
    ("malformed", "field"),
    [
        (
            Request(request_id="m", create=wep_pb.CreateWorkloadEndpointRequest(), batch=[create("i", endpoint("i"))]),
            "batch",
        ),
        (batch("m", create("i", endpoint("i")), batch("inner", create("j", endpoint("j")))), "batch[1].batch"),
        (batch("m", *[create(str(n), endpoint(f"n-{n}")) for n in range(MAX_IN_FLIGHT + 1)]), "batch"),
    ],
    ids=["operation-and-batch", "nested", "too-large"],
)
async def test_a_malformed_batch_is_refused_whole_and_the_stream_goes_on(
    client: Client, malformed: Request, field: str
) -> None:
    answers = await write_all(client, [malformed, create("after", endpoint("after"))])
    refused: Response = answers[0]
    assert refused.request_id == "m"
    assert refused.status.code == INVALID_ARGUMENT
    assert not refused.batch
    error = error_from_status(grpc.StatusCode.INVALID_ARGUMENT, refused.status, refused.status.message)
    assert isinstance(error, InvalidArgument)
    assert [v.field for v in error.violations] == [field]
    assert answers[1].status.code == OK
    assert [e.metadata.name async for e in client.list_endpoints()] == ["after"]
