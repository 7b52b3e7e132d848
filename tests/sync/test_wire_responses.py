"""Write answers built as wire bytes decode to exactly the messages the servicers used to build."""

from __future__ import annotations

import pytest
from google.rpc import code_pb2, status_pb2

from epsync.model.kinds import WORKLOAD_ENDPOINTS
from epsync.sync.wire import object_response, object_with_version, write_result
from epsync.v1 import profile_service_pb2 as profile_pb
from epsync.v1 import workload_endpoint_service_pb2 as pb
from epsync.v1.profile_pb2 import Profile
from tests.factories import endpoint


def stored(revision: int = 42) -> bytes:
    return object_with_version(WORKLOAD_ENDPOINTS.encode(endpoint("web-1", labels={"app": "web"})), revision)


@pytest.mark.parametrize(
    "response_type",
    [pb.GetWorkloadEndpointResponse, pb.CreateWorkloadEndpointResponse, pb.UpdateWorkloadEndpointResponse],
)
def test_an_object_response_carries_the_object_with_its_version(
    response_type: type[pb.GetWorkloadEndpointResponse | pb.CreateWorkloadEndpointResponse],
) -> None:
    decoded = response_type.FromString(object_response(stored(42)))
    assert decoded.workload_endpoint.metadata.name == "web-1"
    assert decoded.workload_endpoint.metadata.resource_version == 42
    assert decoded.workload_endpoint.metadata.labels == {"app": "web"}


def test_a_delete_response_carries_the_old_object_and_the_delete_revision() -> None:
    decoded = pb.DeleteWorkloadEndpointResponse.FromString(object_response(stored(7), 9))
    assert decoded.workload_endpoint.metadata.resource_version == 7
    assert decoded.resource_version == 9
    nothing = pb.DeleteWorkloadEndpointResponse.FromString(object_response(None, 9))
    assert not nothing.HasField("workload_endpoint")
    assert nothing.resource_version == 9
    profile = profile_pb.DeleteProfileResponse.FromString(object_response(Profile().SerializeToString(), 3))
    assert profile.HasField("profile")
    assert profile.resource_version == 3


def test_a_write_result_decodes_as_the_response_message() -> None:
    ok = pb.WriteWorkloadEndpointsResponse.FromString(write_result("r-1", b"", stored(5), 5))
    assert ok.request_id == "r-1"
    assert ok.HasField("status")
    assert ok.status.code == code_pb2.OK
    assert ok.workload_endpoint.metadata.resource_version == 5
    assert ok.resource_version == 5

    failure = status_pb2.Status(code=code_pb2.NOT_FOUND, message="gone")
    failed = pb.WriteWorkloadEndpointsResponse.FromString(write_result("", failure.SerializeToString(), None, 0))
    assert failed.request_id == ""
    assert (failed.status.code, failed.status.message) == (code_pb2.NOT_FOUND, "gone")
    assert not failed.HasField("workload_endpoint")
    assert failed.resource_version == 0
