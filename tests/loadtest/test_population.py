"""The synthetic cluster (bench/population.py) every load-test process rebuilds on its own, the same everywhere."""

from __future__ import annotations

import time

from bench.loadtest.payload import Payloads
from bench.population import Shape, effective_labels, endpoint, key_of, membership, node_name, profiles, sent_ns_of

from epsync._core import Selector
from epsync.etcd.v3 import rpc_pb2
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint
from epsync.v1.workload_endpoint_service_pb2 import WriteWorkloadEndpointsRequest
from tests.model.product_validator import normalize_workload_endpoint

SHAPE = Shape(nodes=12, per_node=7, namespaces=5, seed=3)


def test_endpoints_are_valid_and_live_on_their_node() -> None:
    for j in range(SHAPE.endpoints):
        wep = endpoint(j, SHAPE, sent_ns=time.time_ns())
        normalized = normalize_workload_endpoint(wep)  # raises on any invalid field
        assert normalized.metadata.name == wep.metadata.name
        assert wep.spec.node == node_name(j // SHAPE.per_node)
        assert key_of(j, SHAPE) == f"{wep.metadata.namespace}/{wep.metadata.name}"


def test_every_profile_an_endpoint_names_exists_and_applies_its_labels() -> None:
    stored = {profile.metadata.name: dict(profile.spec.labels_to_apply) for profile in profiles(SHAPE)}
    assert len(stored) == 2 * SHAPE.namespaces
    for j in range(SHAPE.endpoints):
        wep = endpoint(j, SHAPE)
        assert set(wep.spec.profiles) <= set(stored)
        inherited = {k: v for name in wep.spec.profiles for k, v in stored[name].items()}
        assert inherited.items() <= effective_labels(j, SHAPE).items()


def test_stored_endpoints_are_about_600_bytes() -> None:
    payloads = Payloads(Shape(2000, 50), stored_form=True)
    sizes = [len(payloads.endpoint_bytes(j, time.time_ns(), 1)) for j in range(0, 100_000, 997)]
    assert 550 <= sum(sizes) / len(sizes) <= 700


def test_send_time_round_trips_through_the_container_id() -> None:
    sent = time.time_ns()
    assert sent_ns_of(endpoint(5, SHAPE, sent_ns=sent).spec.container_id) == sent
    assert sent_ns_of("not-hex") == 0


def test_pre_encoded_write_decodes_as_the_endpoint_with_its_new_container_id() -> None:
    payloads = Payloads(SHAPE)
    sent = time.time_ns()
    request = WriteWorkloadEndpointsRequest.FromString(payloads.write_request(42, 9, sent, 77))
    assert request.request_id == "42"
    assert request.update.allow_missing
    assert request.update.workload_endpoint == endpoint(9, SHAPE, sent_ns=sent, generation=77)


def test_etcd_put_carries_the_stored_form_under_the_node_prefix() -> None:
    payloads = Payloads(SHAPE, stored_form=True)
    put = rpc_pb2.PutRequest.FromString(payloads.put_request(20, 123, 1))
    wep = WorkloadEndpoint.FromString(put.value)
    assert put.key.decode() == f"/epsync-bench/weps/{wep.spec.node}/{wep.metadata.namespace}/{wep.metadata.name}"
    assert wep.metadata.labels["projectcalico.org/namespace"] == wep.metadata.namespace
    assert wep.metadata.uid
    assert sent_ns_of(wep.spec.container_id) == 123


def test_selector_members_equal_evaluating_every_endpoint() -> None:
    m = membership(SHAPE, 40)
    assert m.keys == [key_of(j, SHAPE) for j in range(SHAPE.endpoints)]
    for s, text in enumerate(m.selectors):
        selector = Selector(text)
        brute = [j for j in range(SHAPE.endpoints) if selector.matches(effective_labels(j, SHAPE))]
        assert m.selector_members[s] == brute, text
    for j in range(SHAPE.endpoints):
        assert m.selectors_of_endpoint[j] == [s for s in range(40) if j in m.selector_members[s]]


def test_the_default_selector_mix_is_mostly_narrow() -> None:
    shape = Shape(200, 50)
    m = membership(shape, 200)
    shares = sorted(len(members) / shape.endpoints for members in m.selector_members)
    assert shares[len(shares) // 2] < 0.01  # most are namespace-scoped
    assert shares[-1] > 0.03  # a few are broad
