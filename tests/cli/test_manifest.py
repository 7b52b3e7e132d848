"""calicoctl-shaped YAML/JSON manifests: loading, dumping, and the seed's sample."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from epsync.cli.manifest import ManifestError, dump_manifests, from_manifest_dict, load_manifests, to_manifest_dict
from epsync.model.kinds import NAMESPACE_LABEL, ORCHESTRATOR_LABEL
from epsync.model.naming import derived_name
from epsync.v1.object_meta_pb2 import ObjectMeta
from epsync.v1.profile_pb2 import Profile, ProfileSpec
from epsync.v1.workload_endpoint_pb2 import IPNAT, WorkloadEndpoint, WorkloadEndpointPort, WorkloadEndpointSpec
from tests.model.product_validator import normalize_profile, normalize_workload_endpoint

SEED_SAMPLE = Path(__file__).parent.parent / "data" / "seed-sample.yaml"
HEADER = "apiVersion: projectcalico.org/v3\n"


# --- The seed's sample ------------------------------------------------------------------------------------


CURRENT_V3_FIELDS = """apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: node1-k8s-web-eth0
  namespace: default
  annotations:
    example.com/owner: net-team
  labels:
    projectcalico.org/namespace: default
    projectcalico.org/orchestrator: k8s
spec:
  node: node1
  orchestrator: k8s
  pod: web
  endpoint: eth0
  interfaceName: cali0
  ipNetworks:
  - 10.0.0.1/32
  ports:
  - name: dns
    protocol: 17
    port: 53
    hostPort: 0
  serviceAccountName: default
  allowSpoofedSourcePrefixes:
  - 10.9.0.0/16
  qosControls:
    ingressBandwidth: 1000000
    ingressBurst: 4294967296
    egressMaxConnections: 100
    dscp: EF
"""


def test_the_current_v3_fields_load_and_dump_with_calicos_names_and_types() -> None:
    """annotations, serviceAccountName, allowSpoofedSourcePrefixes and qosControls as calicoctl writes them:
    qosControls' limits and a numeric protocol are numbers, not proto JSON's quoted int64."""
    (wep,) = load_manifests(CURRENT_V3_FIELDS)
    assert isinstance(wep, WorkloadEndpoint)
    assert dict(wep.metadata.annotations) == {"example.com/owner": "net-team"}
    assert wep.spec.service_account_name == "default"
    assert list(wep.spec.allow_spoofed_source_prefixes) == ["10.9.0.0/16"]
    assert (wep.spec.qos_controls.ingress_burst, wep.spec.qos_controls.dscp) == (4294967296, "EF")
    assert wep.spec.ports[0].protocol == "17"
    assert normalize_workload_endpoint(wep) == wep
    dumped = yaml.safe_load(dump_manifests([wep], "yaml"))
    expected = yaml.safe_load(CURRENT_V3_FIELDS)
    del expected["spec"]["ports"][0]["hostPort"]  # zero: left out, as proto JSON leaves it
    assert dumped == expected
    assert json.loads(dump_manifests([wep], "json"))["spec"]["qosControls"]["ingressBandwidth"] == 1000000


def test_seed_sample_loads_with_the_seed_values() -> None:
    (wep,) = load_manifests(SEED_SAMPLE.read_text())
    assert isinstance(wep, WorkloadEndpoint)
    assert wep.metadata.name == "node1-k8s-my--nginx--b1337a-eth0"
    assert wep.spec.container_id == "1337495556942031415926535"  # unquoted in the seed: text, not a number
    assert wep.spec.mac == "ca:fe:1d:52:bb:e9"
    assert list(wep.spec.profiles) == ["profile1"]
    assert [(p.name, p.port, p.protocol) for p in wep.spec.ports] == [
        ("some-port", 1234, "TCP"),
        ("another-port", 5432, "UDP"),
    ]


def test_seed_sample_is_already_normal() -> None:
    (wep,) = load_manifests(SEED_SAMPLE.read_text())
    assert isinstance(wep, WorkloadEndpoint)
    assert normalize_workload_endpoint(wep) == wep


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_seed_sample_round_trips(fmt: Literal["yaml", "json"]) -> None:
    original = SEED_SAMPLE.read_text()
    objects = load_manifests(original)
    dumped = dump_manifests(objects, fmt)
    assert load_manifests(dumped) == objects

    # The dumped document says what the seed says. The one difference is deliberate: a standard YAML
    # reader takes the seed's unquoted containerID for a number, and we write it back as the string it is.
    expected = yaml.safe_load(original)
    expected["spec"]["containerID"] = str(expected["spec"]["containerID"])
    assert yaml.safe_load(dumped) == expected


# --- Loading ----------------------------------------------------------------------------------------------

WEP_DOC = HEADER + "kind: WorkloadEndpoint\nmetadata:\n  name: {name}\nspec:\n  node: node1\n"
PROFILE_DOC = HEADER + "kind: Profile\nmetadata:\n  name: {name}\nspec:\n  labelsToApply:\n    team: a\n"


def names(objects: list[WorkloadEndpoint | Profile]) -> list[tuple[str, str]]:
    return [(obj.DESCRIPTOR.name, obj.metadata.name) for obj in objects]


def test_several_documents_load_in_order_skipping_empty_ones() -> None:
    text = "---\n" + WEP_DOC.format(name="a") + "---\n# nothing here\n---\n" + PROFILE_DOC.format(name="p")
    assert names(load_manifests(text)) == [("WorkloadEndpoint", "a"), ("Profile", "p")]


def test_calicoctl_lists_are_expanded() -> None:
    text = (
        HEADER
        + "kind: WorkloadEndpointList\nmetadata:\n  resourceVersion: '77'\nitems:\n"
        + "- apiVersion: projectcalico.org/v3\n  kind: WorkloadEndpoint\n  metadata: {name: a}\n  spec: {node: n}\n"
        + "- metadata: {name: b}\n"  # kind and apiVersion may be left to the list
        + "---\n"
        + HEADER
        + "kind: ProfileList\nitems:\n- metadata: {name: p}\n---\n"
        + HEADER
        + "kind: List\nitems:\n- {kind: Profile, metadata: {name: q}}\n"
        + "- {kind: WorkloadEndpoint, metadata: {name: c}}\n"
    )
    assert names(load_manifests(text)) == [
        ("WorkloadEndpoint", "a"),
        ("WorkloadEndpoint", "b"),
        ("Profile", "p"),
        ("Profile", "q"),
        ("WorkloadEndpoint", "c"),
    ]


def test_json_loads() -> None:
    text = json.dumps(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "WorkloadEndpoint",
            "metadata": {"name": "a", "resourceVersion": "12"},
            "spec": {"containerID": "0777", "ports": [{"name": "web", "port": 80, "protocol": "TCP"}]},
        }
    )
    (wep,) = load_manifests(text)
    assert isinstance(wep, WorkloadEndpoint)
    assert (wep.metadata.resource_version, wep.spec.container_id, wep.spec.ports[0].port) == (12, "0777", 80)


def test_empty_text_holds_no_resources() -> None:
    assert load_manifests("") == []
    assert load_manifests("# just a comment\n") == []


@pytest.mark.parametrize(
    ("yaml_value", "expected"),
    [
        pytest.param("1337495556942031415926535", "1337495556942031415926535", id="big-int"),
        pytest.param("0777", "0777", id="octal-looking"),
        pytest.param("12:34:56", "12:34:56", id="base-60-looking"),
        pytest.param("1.10", "1.10", id="float-looking"),
        pytest.param("1_000", "1_000", id="underscored-int"),
        pytest.param("yes", "yes", id="yaml-1.1-bool"),
        pytest.param("true", "true", id="bool"),
        pytest.param("2024-01-02", "2024-01-02", id="date-looking"),
        pytest.param("'quoted'", "quoted", id="quoted"),
    ],
)
def test_string_fields_keep_the_text_as_written(yaml_value: str, expected: str) -> None:
    text = WEP_DOC.format(name="a") + f"  workload: {yaml_value}\n"
    (wep,) = load_manifests(text)
    assert isinstance(wep, WorkloadEndpoint)
    assert wep.spec.workload == expected


def test_label_values_and_an_all_digit_mac_keep_their_text() -> None:
    text = (
        HEADER
        + "kind: WorkloadEndpoint\nmetadata:\n  name: a\n  labels:\n    version: 1.10\n    enabled: yes\n    empty:\n"
        + "spec:\n  mac: 12:34:56:12:34:56\n"
    )
    (wep,) = load_manifests(text)
    assert dict(wep.metadata.labels) == {"version": "1.10", "enabled": "yes", "empty": ""}
    assert isinstance(wep, WorkloadEndpoint)
    assert wep.spec.mac == "12:34:56:12:34:56"


@pytest.mark.parametrize("stamp", ["2024-01-02T03:04:05Z", "'2024-01-02T03:04:05Z'", "2024-01-02 03:04:05"])
def test_creation_timestamp_loads_quoted_or_not(stamp: str) -> None:
    text = HEADER + f"kind: Profile\nmetadata:\n  name: p\n  creationTimestamp: {stamp}\n"
    (profile,) = load_manifests(text)
    assert profile.metadata.creation_timestamp.ToJsonString() == "2024-01-02T03:04:05Z"


@pytest.mark.parametrize("version", ["12", "'12'", '"12"'])
def test_resource_version_loads_as_a_number_or_a_string(version: str) -> None:
    text = HEADER + f"kind: Profile\nmetadata:\n  name: p\n  resourceVersion: {version}\n"
    (profile,) = load_manifests(text)
    assert profile.metadata.resource_version == 12


BAD = HEADER + "kind: WorkloadEndpoint\nmetadata: {{name: a}}\nspec:\n  {spec}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            WEP_DOC.format(name="a") + "---\n" + BAD.format(spec="foo: 1"),
            'document 2: unknown field "spec.foo"',
            id="unknown-spec-field",
        ),
        pytest.param(
            HEADER + "kind: Pod\n", 'document 1: kind "Pod" is not supported (WorkloadEndpoint, Profile)', id="kind"
        ),
        pytest.param(
            "apiVersion: v1\nkind: Profile\n",
            'document 1: apiVersion "v1" is not supported (projectcalico.org/v3)',
            id="api-version",
        ),
        pytest.param("kind: Profile\n", 'document 1: missing field "apiVersion"', id="no-api-version"),
        pytest.param(
            HEADER + "metadata: {}\n", 'document 1: missing field "kind" (WorkloadEndpoint or Profile)', id="no-kind"
        ),
        pytest.param(
            HEADER + "kind: Profile\nstatus: {}\n", 'document 1: unknown field "status"', id="unknown-top-level-field"
        ),
        pytest.param(
            HEADER + "kind: Profile\nmetadata: {name: p, finalizers: [a]}\n",
            'document 1: unknown field "metadata.finalizers"',
            id="unknown-metadata-field",
        ),
        pytest.param(
            BAD.format(spec="container_id: abc"),
            'document 1: unknown field "spec.container_id"',
            id="proto-field-name-is-not-the-calicoctl-name",
        ),
        pytest.param(
            BAD.format(spec="ipNATs: [{internalIP: 10.0.0.1, external: 1.2.3.4}]"),
            'document 1: unknown field "spec.ipNATs[0].external"',
            id="unknown-nested-field",
        ),
        pytest.param(
            BAD.format(spec="ports: [{name: web, port: http}]"),
            'document 1: field "spec.ports[0].port" must be an integer, not "http"',
            id="port-not-an-integer",
        ),
        pytest.param(
            BAD.format(spec="ports: [{name: web, port: 4294967296}]"),
            'document 1: field "spec.ports[0].port": 4294967296 is out of range -2147483648..2147483647',
            id="port-beyond-int32",
        ),
        pytest.param(
            BAD.format(spec="profiles: profile1"),
            'document 1: field "spec.profiles" must be a list',
            id="list-expected",
        ),
        pytest.param(
            BAD.format(spec="node: [a]"),
            'document 1: field "spec.node" must be a string, not a list',
            id="string-expected",
        ),
        pytest.param(
            HEADER + "kind: WorkloadEndpoint\nspec: [a]\n",
            'document 1: field "spec": Input should be a valid dictionary',
            id="spec-not-a-mapping",
        ),
        pytest.param(
            HEADER + "kind: Profile\nmetadata: {name: p, creationTimestamp: yesterday}\n",
            'document 1: field "metadata.creationTimestamp": "yesterday" is not an RFC 3339 timestamp',
            id="bad-timestamp",
        ),
        pytest.param(
            "- a\n- b\n",
            "document 1: expected a mapping with apiVersion, kind, metadata and spec, not a list",
            id="not-a-mapping",
        ),
        pytest.param(
            HEADER + "kind: ProfileList\nitems:\n- kind: WorkloadEndpoint\n",
            'document 1: items[0]: kind "WorkloadEndpoint" does not belong in a ProfileList',
            id="list-item-of-another-kind",
        ),
        pytest.param(
            HEADER + "kind: List\nitems:\n- metadata: {name: a}\n",
            'document 1: missing field "items[0].kind" (a List may mix kinds, so each item names its own)',
            id="mixed-list-item-without-kind",
        ),
        pytest.param(
            HEADER + "kind: WorkloadEndpointList\nitems:\n- {metadata: {name: a}, spec: {foo: 1}}\n",
            'document 1: unknown field "items[0].spec.foo"',
            id="unknown-field-in-list-item",
        ),
        pytest.param(
            WEP_DOC.format(name="a") + "  node: node2\n",
            'document 1: invalid YAML at line 7, column 3: duplicate key "node"',
            id="duplicate-key",
        ),
        pytest.param(
            WEP_DOC.format(name="a") + "---\nkind: [\n",
            "document 2: invalid YAML at line 9, column 1: expected the node content, but found '<stream end>'",
            id="yaml-syntax",
        ),
    ],
)
def test_load_errors_name_the_document_and_the_field(text: str, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        load_manifests(text)
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


def test_yaml_merge_keys_may_be_overridden() -> None:
    (first, second) = load_manifests(
        HEADER + "kind: WorkloadEndpointList\nitems:\n- spec: &s {node: node1, endpoint: eth0}\n"
        "- spec:\n    <<: *s\n    endpoint: eth1\n"
    )
    assert isinstance(second, WorkloadEndpoint)
    assert (second.spec.node, second.spec.endpoint) == ("node1", "eth1")
    assert first != second


def test_from_manifest_dict_coerces_numbers_in_string_fields() -> None:
    wep = from_manifest_dict(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "WorkloadEndpoint",
            "spec": {"containerID": 1337, "ports": [{"port": "80"}]},
        }
    )
    assert isinstance(wep, WorkloadEndpoint)
    assert (wep.spec.container_id, wep.spec.ports[0].port) == ("1337", 80)


def test_from_manifest_dict_takes_one_resource() -> None:
    with pytest.raises(ManifestError, match="is a list"):
        from_manifest_dict({"apiVersion": "projectcalico.org/v3", "kind": "ProfileList", "items": []})
    with pytest.raises(ManifestError, match=r'unknown field "spec\.foo"'):
        from_manifest_dict({"apiVersion": "projectcalico.org/v3", "kind": "Profile", "spec": {"foo": 1}})


# --- Dumping ----------------------------------------------------------------------------------------------


def sample_endpoint() -> WorkloadEndpoint:
    wep = WorkloadEndpoint(
        metadata=ObjectMeta(name="a", namespace="default", labels={"z": "1", "a": "2"}, resource_version=42),
        spec=WorkloadEndpointSpec(node="node1", ports=[WorkloadEndpointPort(name="web", protocol="TCP", port=80)]),
    )
    wep.metadata.creation_timestamp.FromJsonString("2024-01-02T03:04:05.123456789Z")
    return wep


def test_to_manifest_dict_is_the_calicoctl_shape() -> None:
    assert to_manifest_dict(sample_endpoint()) == {
        "apiVersion": "projectcalico.org/v3",
        "kind": "WorkloadEndpoint",
        "metadata": {
            "name": "a",
            "namespace": "default",
            "labels": {"a": "2", "z": "1"},
            "resourceVersion": "42",  # a string, as Kubernetes renders it
            "creationTimestamp": "2024-01-02T03:04:05.123456789Z",
        },
        "spec": {"node": "node1", "ports": [{"name": "web", "protocol": "TCP", "port": 80}]},
    }


def test_empty_spec_is_still_written() -> None:
    assert to_manifest_dict(Profile(metadata=ObjectMeta(name="p")))["spec"] == {}


def test_to_manifest_dict_refuses_other_messages() -> None:
    with pytest.raises(TypeError):
        to_manifest_dict(ObjectMeta())  # type: ignore[arg-type]


def test_labels_are_written_sorted() -> None:
    dumped = dump_manifests([sample_endpoint()], "yaml")
    assert dumped.index("    a: '2'") < dumped.index("    z: '1'")


def test_one_object_is_one_document() -> None:
    dumped = dump_manifests([sample_endpoint()], "yaml")
    assert "---" not in dumped
    assert len(list(yaml.safe_load_all(dumped))) == 1
    assert json.loads(dump_manifests([sample_endpoint()], "json"))["kind"] == "WorkloadEndpoint"


def test_several_objects_are_several_yaml_documents() -> None:
    objects: list[WorkloadEndpoint | Profile] = [sample_endpoint(), Profile(metadata=ObjectMeta(name="p"))]
    dumped = dump_manifests(objects, "yaml")
    assert [doc["kind"] for doc in yaml.safe_load_all(dumped)] == ["WorkloadEndpoint", "Profile"]
    assert load_manifests(dumped) == objects


@pytest.mark.parametrize(
    ("objects", "kind"),
    [
        ([sample_endpoint(), sample_endpoint()], "WorkloadEndpointList"),
        ([Profile(metadata=ObjectMeta(name="p")), Profile(metadata=ObjectMeta(name="q"))], "ProfileList"),
        ([sample_endpoint(), Profile(metadata=ObjectMeta(name="p"))], "List"),
        ([], "List"),
    ],
)
def test_several_objects_are_a_json_list(objects: list[WorkloadEndpoint | Profile], kind: str) -> None:
    dumped = dump_manifests(objects, "json")
    document = json.loads(dumped)
    assert (document["apiVersion"], document["kind"], len(document["items"])) == (
        "projectcalico.org/v3",
        kind,
        len(objects),
    )
    assert load_manifests(dumped) == objects


def test_no_objects_is_empty_yaml() -> None:
    assert dump_manifests([], "yaml") == ""


TRICKY_STRINGS = [
    *("123", "0777", "1.10", "1e3", "0x1F", "0o17", ".5", "-1", "+1", "1_000", ".inf", ".nan", "12:34:56:12:34:56"),
    *("y", "n", "yes", "off", "true", "null", "~", "", "2024-01-02"),
]


@pytest.mark.parametrize("value", TRICKY_STRINGS)
def test_strings_that_look_like_other_types_are_quoted(value: str) -> None:
    spec = WorkloadEndpointSpec(workload=value) if value else None  # an empty spec loads as unset
    wep = WorkloadEndpoint(metadata=ObjectMeta(name="a", labels={"k": value}), spec=spec)
    dumped = dump_manifests([wep], "yaml")
    document = yaml.safe_load(dumped)  # a standard YAML reader, not ours, gets the strings back
    if value:
        assert document["spec"]["workload"] == value
    assert document["metadata"]["labels"]["k"] == value
    assert load_manifests(dumped) == [wep]


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        dump_manifests([], "xml")  # type: ignore[arg-type]


# --- Property: valid resources pass validation and round-trip ---------------------------------------------

dns_label = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?", fullmatch=True)
subdomain = st.lists(dns_label, min_size=1, max_size=3).map(".".join)
container_ids = st.from_regex(r"[a-zA-Z0-9]([-a-zA-Z0-9]{0,20}[a-zA-Z0-9])?", fullmatch=True) | st.integers(
    0, 10**30
).map(str)
label_names = st.from_regex(r"([A-Za-z0-9][-A-Za-z0-9_.]{0,10})?[A-Za-z0-9]", fullmatch=True)
label_keys = st.builds(
    lambda prefix, name: f"{prefix}/{name}" if prefix else name, st.none() | subdomain, label_names
).filter(lambda key: not key.startswith(("pcns.", "pcsa.")) and key not in (NAMESPACE_LABEL, ORCHESTRATOR_LABEL))
label_values = st.just("") | label_names | st.sampled_from(["1.10", "0777", "yes", "null", "1e3", "y", "0x1F", "123"])
labels = st.dictionaries(label_keys, label_values, max_size=4)
resource_names = st.from_regex(r"[A-Za-z0-9._-]{1,30}", fullmatch=True)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
port_numbers = st.integers(1, 65535)
networks = st.tuples(ipv4, st.integers(0, 32)).map(lambda a: str(ipaddress.ip_network(f"{a[0]}/{a[1]}", strict=False)))


@st.composite
def macs(draw: st.DrawFn) -> str:
    size = draw(st.sampled_from([6, 8]))
    octets = draw(st.binary(min_size=size, max_size=size))
    if draw(st.booleans()):
        return "12:34:56:12:34:56"  # all decimal digits: a base-60 integer to a YAML 1.1 reader
    style = draw(st.sampled_from([":", "-", "."]))
    if style == ".":
        return ".".join(octets[i : i + 2].hex() for i in range(0, size, 2))
    return style.join(f"{b:02x}" for b in octets)


@st.composite
def endpoints(draw: st.DrawFn) -> WorkloadEndpoint:
    """A valid endpoint already in normal form (what normalize_workload_endpoint would store)."""
    spec = WorkloadEndpointSpec(
        node=draw(subdomain),
        orchestrator=draw(st.sampled_from(["k8s", "cni", "libnetwork", "openstack", ""])),
        workload=draw(st.just("") | subdomain),
        pod=draw(st.just("") | subdomain),
        container_id=draw(st.just("") | container_ids),
        endpoint=draw(st.just("") | subdomain),
        profiles=draw(st.lists(subdomain, max_size=3)),
        interface_name=draw(st.from_regex(r"[a-zA-Z0-9_.-]{1,15}", fullmatch=True)),
        service_account_name=draw(st.just("") | subdomain),
        mac=draw(st.just("") | macs()),
        ipv4_gateway=draw(st.just("") | ipv4),
        ipv6_gateway=draw(st.just("") | ipv6),
        aws_elastic_ips=draw(st.lists(ipv4 | ipv6, max_size=2)),
    )
    addresses = draw(st.lists(ipv4 | ipv6, max_size=3, unique=True))
    spec.ip_networks.extend(f"{a}/{32 if '.' in a and ':' not in a else 128}" for a in addresses)
    for internal in draw(st.lists(st.sampled_from(addresses), max_size=2)) if addresses else []:
        external = draw(ipv6 if ":" in internal else ipv4)
        spec.ip_nats.append(IPNAT(internal_ip=internal, external_ip=external))
    port_names = draw(st.lists(st.from_regex(r"[a-z]{1,6}(-[a-z0-9]{1,4})?", fullmatch=True), max_size=3, unique=True))
    for name in port_names:
        spec.ports.append(
            WorkloadEndpointPort(
                name=name,
                protocol=draw(st.sampled_from(["TCP", "UDP", "SCTP", "6", "17", "132"])),
                port=draw(port_numbers),
                host_port=draw(st.just(0) | port_numbers),
                host_ip=draw(st.just("") | ipv4 | ipv6),
            )
        )
    spec.allow_spoofed_source_prefixes.extend(draw(st.lists(networks, max_size=2)))
    if draw(st.booleans()):
        spec.qos_controls.ingress_bandwidth = draw(st.integers(1000, 10**15))
        spec.qos_controls.egress_max_connections = draw(st.integers(0, 2**32 - 1))
        spec.qos_controls.dscp = draw(st.sampled_from(["", "EF", "AF11", "0", "46"]))
    namespace = draw(dns_label)
    meta = ObjectMeta(
        name=derived_name(spec) or draw(resource_names),
        namespace=namespace,
        labels=draw(labels),
        annotations=draw(st.dictionaries(st.sampled_from(["Note", "example.com/owner", "a"]), st.text(max_size=8))),
        uid=draw(st.just("") | st.uuids().map(str)),
        resource_version=draw(st.integers(0, 2**63 - 1)),
    )
    meta.labels[NAMESPACE_LABEL] = namespace
    if spec.orchestrator:
        meta.labels[ORCHESTRATOR_LABEL] = spec.orchestrator
    if draw(st.booleans()):
        meta.creation_timestamp.seconds = draw(st.integers(0, 253402300799))
        meta.creation_timestamp.nanos = draw(st.integers(0, 999_999_999))
    return WorkloadEndpoint(metadata=meta, spec=spec)


profiles = st.builds(
    lambda name, own, to_apply: Profile(
        # An empty spec is left unset: that is how a loaded profile without labelsToApply looks.
        metadata=ObjectMeta(name=name, labels=own),
        spec=ProfileSpec(labels_to_apply=to_apply) if to_apply else None,
    ),
    subdomain,
    labels,
    labels,
)


def round_trip(objects: list[Any], fmt: Literal["yaml", "json"]) -> list[WorkloadEndpoint | Profile]:
    return load_manifests(dump_manifests(objects, fmt))


@pytest.mark.slow
@settings(deadline=None, max_examples=200)
@given(endpoints())
def test_valid_endpoints_pass_validation_unchanged_and_round_trip(wep: WorkloadEndpoint) -> None:
    assert normalize_workload_endpoint(wep) == wep
    assert round_trip([wep], "yaml") == [wep]
    assert round_trip([wep], "json") == [wep]


@pytest.mark.slow
@settings(deadline=None)
@given(st.lists(endpoints() | profiles, min_size=1, max_size=4))
def test_valid_resources_round_trip_together(objects: list[WorkloadEndpoint | Profile]) -> None:
    for obj in objects:
        if isinstance(obj, Profile):
            assert normalize_profile(obj) == obj
    assert round_trip(objects, "yaml") == objects
    assert round_trip(objects, "json") == objects


@pytest.mark.parametrize("fmt", ["yaml", "json"])
@given(st.dictionaries(st.sampled_from(["a", "Note", "example.com/x"]), st.text(), max_size=3))
def test_annotations_of_any_text_round_trip(fmt: Literal["yaml", "json"], annotations: dict[str, str]) -> None:
    """Annotation values are free text: control characters and the line breaks YAML folds (CR, NEL, LS, PS)
    come back exactly, though the output is read back as YAML."""
    profile = Profile(metadata=ObjectMeta(name="p", annotations=annotations))
    assert round_trip([profile], fmt) == [profile]
