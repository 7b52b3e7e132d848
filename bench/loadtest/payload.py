"""Pre-encoded write payloads: each endpoint is serialised once, and each write appends its new containerID.

Protobuf parses repeated occurrences of a message field as one merged message, so the bytes of an
endpoint without `spec.containerID`, followed by `spec { containerID: "..." }`, decode as the
endpoint with that containerID. A write then costs a few byte concatenations instead of building and
serialising a message, which keeps the writer process from being the limit it is meant to measure.
"""

from __future__ import annotations

import time
import uuid

from bench.population import Shape, container_id, endpoint
from epsync.model.kinds import NAMESPACE_LABEL, ORCHESTRATOR_LABEL
from epsync.sync.wire import varint

# Field numbers: WorkloadEndpoint.spec = 2, WorkloadEndpointSpec.container_id = 4,
# WriteWorkloadEndpointsRequest.request_id = 1 / update = 3, UpdateWorkloadEndpointRequest.workload_endpoint = 1 /
# allow_missing = 2, etcd PutRequest.key = 1 / value = 2.
_ALLOW_MISSING = b"\x10\x01"


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


class Payloads:
    """Endpoint bytes without their containerID, encoded on first use and kept."""

    def __init__(self, shape: Shape, *, stored_form: bool = False) -> None:
        self.shape = shape
        self.stored_form = stored_form  # etcd: the object as epsync stores it (server labels, uid, timestamp)
        self._base: dict[int, bytes] = {}
        self.keys: dict[int, str] = {}
        self.nodes: dict[int, str] = {}

    def base(self, j: int) -> bytes:
        found = self._base.get(j)
        if found is None:
            wep = endpoint(j, self.shape)
            self.keys[j] = f"{wep.metadata.namespace}/{wep.metadata.name}"
            self.nodes[j] = wep.spec.node
            wep.spec.container_id = ""
            if self.stored_form:
                wep.metadata.labels[NAMESPACE_LABEL] = wep.metadata.namespace
                wep.metadata.labels[ORCHESTRATOR_LABEL] = wep.spec.orchestrator
                wep.metadata.uid = str(uuid.UUID(int=self.shape.seed << 64 | j))
                wep.metadata.creation_timestamp.FromNanoseconds(time.time_ns())
            found = self._base[j] = wep.SerializeToString()
        return found

    def endpoint_bytes(self, j: int, sent_ns: int, generation: int) -> bytes:
        """Endpoint `j`, stamped with `sent_ns` in its containerID."""
        return self.base(j) + field(2, field(4, container_id(sent_ns, j, generation).encode()))

    def write_request(self, request_id: int, j: int, sent_ns: int, generation: int) -> bytes:
        """A WriteWorkloadEndpointsRequest: update (allow_missing) of endpoint `j`."""
        update = field(1, self.endpoint_bytes(j, sent_ns, generation)) + _ALLOW_MISSING
        return field(1, str(request_id).encode()) + field(3, update)

    def etcd_key(self, j: int) -> bytes:
        self.base(j)
        from bench.population import etcd_key

        return etcd_key(self.nodes[j], self.keys[j])

    def put_request(self, j: int, sent_ns: int, generation: int) -> bytes:
        """An etcd PutRequest of endpoint `j` under its node's prefix."""
        return field(1, self.etcd_key(j)) + field(2, self.endpoint_bytes(j, sent_ns, generation))
