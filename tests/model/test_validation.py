"""Validation and normalisation of WorkloadEndpoints and Profiles (SPEC §3)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from epsync.errors import FieldViolation, InvalidArgument
from epsync.model.kinds import NAMESPACE_LABEL, ORCHESTRATOR_LABEL
from epsync.v1.object_meta_pb2 import ObjectMeta
from epsync.v1.profile_pb2 import Profile, ProfileSpec
from epsync.v1.workload_endpoint_pb2 import IPNAT, WorkloadEndpoint, WorkloadEndpointPort, WorkloadEndpointSpec
from tests.model.product_validator import normalize_profile, normalize_workload_endpoint

DERIVED = "node1-k8s-my--nginx--b1337a-eth0"


def valid_endpoint() -> WorkloadEndpoint:
    """A k8s endpoint that uses every field correctly and is already in normal form."""
    return WorkloadEndpoint(
        metadata=ObjectMeta(
            name=DERIVED,
            namespace="default",
            labels={"app": "frontend", NAMESPACE_LABEL: "default", ORCHESTRATOR_LABEL: "k8s"},
        ),
        spec=WorkloadEndpointSpec(
            node="node1",
            orchestrator="k8s",
            pod="my-nginx-b1337a",
            endpoint="eth0",
            container_id="1337495556942031415926535",
            ip_networks=["10.0.0.1/32", "fd00::1/128"],
            ip_nats=[IPNAT(internal_ip="10.0.0.1", external_ip="52.0.0.1")],
            aws_elastic_ips=["52.0.0.2"],
            ipv4_gateway="169.254.1.1",
            ipv6_gateway="fe80::1",
            profiles=["kns.default", "ksa.default.default"],
            interface_name="cali0ef24ba",
            mac="ca:fe:1d:52:bb:e9",
            ports=[
                WorkloadEndpointPort(name="http", protocol="TCP", port=80),
                WorkloadEndpointPort(name="dns", protocol="UDP", port=53, host_port=5353, host_ip="192.168.0.1"),
            ],
        ),
    )


def violations_of(wep: WorkloadEndpoint) -> list[FieldViolation]:
    with pytest.raises(InvalidArgument) as caught:
        normalize_workload_endpoint(wep)
    return caught.value.violations


def endpoint_with(change: Callable[[WorkloadEndpoint], object]) -> WorkloadEndpoint:
    wep = valid_endpoint()
    change(wep)
    return wep


def test_the_valid_endpoint_passes_unchanged() -> None:
    wep = valid_endpoint()
    assert normalize_workload_endpoint(wep) == wep


def test_the_four_violations_are_reported_at_once() -> None:
    wep = valid_endpoint()
    wep.spec.mac = "ca:fe:zz:52:bb:e9"
    wep.spec.ports.add(name="http", protocol="TCP", port=8080)  # spec.ports[2]: name already used by ports[0]
    wep.spec.ports[1].port = 70000
    wep.spec.ip_nats[0].internal_ip = "10.0.0.9"

    with pytest.raises(InvalidArgument) as caught:
        normalize_workload_endpoint(wep)

    assert sorted(caught.value.violations, key=lambda v: v.field) == [
        FieldViolation("spec.ipNATs[0].internalIP", "internal IP 10.0.0.9 is not one of spec.ipNetworks"),
        FieldViolation("spec.mac", '"ca:fe:zz:52:bb:e9" is not a MAC address (MAC-48, EUI-48 or EUI-64)'),
        FieldViolation("spec.ports[1].port", "port 70000 is out of range 1-65535"),
        FieldViolation("spec.ports[2].name", 'duplicate port name "http" (also spec.ports[0].name)'),
    ]
    # The error carries them as google.rpc.BadRequest field violations too.
    assert "spec.mac" in caught.value.message


# Each rule: a change that must be accepted, and one that must be refused at the given path.
# (change, expected violation path or None for "accepted")
Change = Callable[[WorkloadEndpoint], object]


def _set(path: str, value: object) -> Change:
    """A change that sets `metadata.x` / `spec.x` (attribute path) on the endpoint."""
    head, _, attr = path.rpartition(".")

    def change(wep: WorkloadEndpoint) -> None:
        target: object = wep
        for part in head.split("."):
            target = getattr(target, part)
        setattr(target, attr, value)

    return change


def _spec_list(field: str, values: list[str]) -> Change:
    def change(wep: WorkloadEndpoint) -> None:
        container = getattr(wep.spec, field)
        del container[:]
        container.extend(values)

    return change


def _label(key: str, value: str) -> Change:
    return lambda wep: wep.metadata.labels.__setitem__(key, value)


def _annotation(key: str, value: str) -> Change:
    return lambda wep: wep.metadata.annotations.__setitem__(key, value)


def _qos(**fields: object) -> Change:
    def change(wep: WorkloadEndpoint) -> None:
        wep.spec.qos_controls.SetInParent()
        for name, value in fields.items():
            setattr(wep.spec.qos_controls, name, value)

    return change


_SPOOFED = "spec.allowSpoofedSourcePrefixes[0]"
_EGRESS_PEAK = "spec.qosControls.egressPeakrate"
_INGRESS_MINBURST = "spec.qosControls.ingressMinburst"
_QOS_LOWEST = {
    f"{d}_{field}": value
    for d in ("ingress", "egress")
    for field, value in (
        ("bandwidth", 1000),
        ("burst", 1000),
        ("peakrate", 1010),
        ("minburst", 1000),
        ("packet_rate", 1),
        ("packet_burst", 1),
        ("max_connections", 1),
    )
}
_QOS_HIGHEST = {
    f"{d}_{field}": value
    for d in ("ingress", "egress")
    for field, value in (
        ("bandwidth", 10**15),
        ("burst", 34_359_738_360),
        ("peakrate", 1_010 * 10**12),
        ("minburst", 10**8),
        ("packet_rate", 10_000),
        ("packet_burst", 10_000),
        ("max_connections", 2**32 - 1),
    )
}


def _port(index: int, **fields: object) -> Change:
    def change(wep: WorkloadEndpoint) -> None:
        for name, value in fields.items():
            setattr(wep.spec.ports[index], name, value)

    return change


def _not_derived(wep: WorkloadEndpoint) -> None:
    """Make the name not derivable (no orchestrator), so any valid name is accepted."""
    wep.spec.orchestrator = ""
    del wep.metadata.labels[ORCHESTRATOR_LABEL]


def _name(name: str) -> Change:
    def change(wep: WorkloadEndpoint) -> None:
        _not_derived(wep)
        wep.metadata.name = name

    return change


def _nat(internal: str, external: str) -> Change:
    def change(wep: WorkloadEndpoint) -> None:
        del wep.spec.ip_nats[:]
        wep.spec.ip_nats.add(internal_ip=internal, external_ip=external)

    return change


def _orchestrator(orchestrator: str, name: str = DERIVED) -> Change:
    def change(wep: WorkloadEndpoint) -> None:
        wep.metadata.name = name
        wep.spec.orchestrator = orchestrator
        wep.spec.workload = "w"
        wep.metadata.labels[ORCHESTRATOR_LABEL] = orchestrator

    return change


def _namespace(namespace: str) -> Change:
    def change(wep: WorkloadEndpoint) -> None:
        wep.metadata.namespace = namespace
        wep.metadata.labels[NAMESPACE_LABEL] = namespace

    return change


RULES: list[tuple[str, Change, str | None]] = [
    # name
    ("name ok with dots, underscores and capitals", _name("My_endpoint.v1-a"), None),
    ("name of 253 characters", _name("a" * 253), None),
    ("name too long", _name("a" * 254), "metadata.name"),
    ("name with a space", _name("bad name"), "metadata.name"),
    ("name with a slash", _name("a/b"), "metadata.name"),
    ("name missing and not derivable", _name(""), "metadata.name"),
    ("name equal to the derived name", _set("metadata.name", DERIVED), None),
    ("name differs from the derived name", _set("metadata.name", "node1-k8s-other-eth0"), "metadata.name"),
    # namespace
    ("namespace a DNS-1123 label", _namespace("kube-system"), None),
    ("namespace with capitals", _namespace("Kube-System"), "metadata.namespace"),
    ("namespace with a dot", _namespace("a.b"), "metadata.namespace"),
    ("namespace of 64 characters", _namespace("a" * 64), "metadata.namespace"),
    # labels
    ("label with a prefix", _label("example.com/tier", "web"), None),
    ("label value empty", _label("flag", ""), None),
    ("label value with dots and capitals", _label("version", "V1.2_3-b"), None),
    ("label name of 63 characters", _label("a" * 63, "x"), None),
    ("label name of 64 characters", _label("a" * 64, "x"), 'metadata.labels["' + "a" * 64 + '"]'),
    ("label key starting with a dash", _label("-app", "x"), 'metadata.labels["-app"]'),
    ("label prefix with capitals", _label("Example.com/tier", "x"), 'metadata.labels["Example.com/tier"]'),
    ("label key with two slashes", _label("a/b/c", "x"), 'metadata.labels["a/b/c"]'),
    ("label key with an empty prefix", _label("/c", "x"), 'metadata.labels["/c"]'),
    ("label value with a space", _label("app", "front end"), 'metadata.labels["app"]'),
    ("label value of 64 characters", _label("app", "v" * 64), 'metadata.labels["app"]'),
    ("label key prefixed pcns.", _label("pcns.team", "a"), 'metadata.labels["pcns.team"]'),
    ("label key prefixed pcsa.", _label("pcsa.name", "a"), 'metadata.labels["pcsa.name"]'),
    ("label key containing pcns. later", _label("x.pcns.team", "a"), None),
    (
        "namespace label with another namespace",
        _label(NAMESPACE_LABEL, "other"),
        f'metadata.labels["{NAMESPACE_LABEL}"]',
    ),
    (
        "orchestrator label with another value",
        _label(ORCHESTRATOR_LABEL, "cni"),
        f'metadata.labels["{ORCHESTRATOR_LABEL}"]',
    ),
    ("server labels left out", lambda w: w.metadata.labels.clear(), None),
    # identity fields: DNS-1123 subdomains
    ("node with dots", _set("spec.node", "rack1.node1"), "metadata.name"),  # valid, but the name no longer matches
    ("node with capitals", _set("spec.node", "Node1"), "spec.node"),
    ("node with an underscore", _set("spec.node", "node_1"), "spec.node"),
    ("orchestrator with capitals", _orchestrator("K8s"), "spec.orchestrator"),
    ("orchestrator other than k8s, name unchanged", _orchestrator("openstack"), "metadata.name"),  # name from workload
    ("orchestrator other than k8s, name derived", _orchestrator("openstack", "node1-openstack-w-eth0"), None),
    ("workload a subdomain", _set("spec.workload", "vm.1"), None),
    ("workload ending with a dash", _set("spec.workload", "vm-"), "spec.workload"),
    ("pod with an underscore", _set("spec.pod", "my_nginx"), "spec.pod"),
    ("endpoint with a capital", _set("spec.endpoint", "Eth0"), "spec.endpoint"),
    ("endpoint too long", _set("spec.endpoint", "a" * 254), "spec.endpoint"),
    ("profile a subdomain", _spec_list("profiles", ["kns.kube-system"]), None),
    ("profile with capitals", _spec_list("profiles", ["ok", "Profile1"]), "spec.profiles[1]"),
    # containerID
    ("containerID with capitals and dashes", _set("spec.container_id", "ABC-123def"), None),
    ("containerID with an underscore", _set("spec.container_id", "abc_123"), "spec.containerID"),
    ("containerID starting with a dash", _set("spec.container_id", "-abc"), "spec.containerID"),
    # ipNetworks
    ("ipNetworks bare IPv4", _spec_list("ip_networks", ["10.0.0.1"]), None),
    ("ipNetworks bare IPv6", _spec_list("ip_networks", ["10.0.0.1", "fd00::1"]), None),
    ("ipNetworks a /24", _spec_list("ip_networks", ["10.0.0.1/32", "10.0.0.0/24"]), "spec.ipNetworks[1]"),
    ("ipNetworks a /64", _spec_list("ip_networks", ["10.0.0.1", "fd00::/64"]), "spec.ipNetworks[1]"),
    ("ipNetworks a host with a short prefix", _spec_list("ip_networks", ["10.0.0.1/24"]), "spec.ipNetworks[0]"),
    ("ipNetworks garbage", _spec_list("ip_networks", ["garbage"]), "spec.ipNetworks[0]"),
    ("ipNetworks empty prefix", _spec_list("ip_networks", ["10.0.0.1/"]), "spec.ipNetworks[0]"),
    ("ipNetworks with a zone", _spec_list("ip_networks", ["10.0.0.1", "fe80::1%eth0"]), "spec.ipNetworks[1]"),
    # ipNATs
    ("ipNAT IPv6 inside ipNetworks", _nat("fd00::1", "2001:db8::1"), None),
    ("ipNAT internal IP not an IP", _nat("10.0.0", "52.0.0.1"), "spec.ipNATs[0].internalIP"),
    ("ipNAT internal IP outside ipNetworks", _nat("10.0.0.2", "52.0.0.1"), "spec.ipNATs[0].internalIP"),
    ("ipNAT external IP of the other family", _nat("10.0.0.1", "2001:db8::1"), "spec.ipNATs[0].externalIP"),
    ("ipNAT external IP missing", _nat("10.0.0.1", ""), "spec.ipNATs[0].externalIP"),
    # awsElasticIPs and gateways
    ("awsElasticIPs IPv6", _spec_list("aws_elastic_ips", ["2001:db8::5"]), None),
    ("awsElasticIPs not an IP", _spec_list("aws_elastic_ips", ["52.0.0.2", "52.0.0"]), "spec.awsElasticIPs[1]"),
    ("ipv4Gateway IPv6", _set("spec.ipv4_gateway", "fe80::1"), "spec.ipv4Gateway"),
    ("ipv4Gateway garbage", _set("spec.ipv4_gateway", "gw"), "spec.ipv4Gateway"),
    ("ipv6Gateway IPv4", _set("spec.ipv6_gateway", "169.254.1.1"), "spec.ipv6Gateway"),
    # mac
    ("mac with dashes", _set("spec.mac", "01-23-45-67-89-AB"), None),
    ("mac dotted", _set("spec.mac", "0123.4567.89ab"), None),
    ("mac EUI-64 with colons", _set("spec.mac", "01:23:45:67:89:ab:cd:ef"), None),
    ("mac EUI-64 with dashes", _set("spec.mac", "01-23-45-67-89-ab-cd-ef"), None),
    ("mac EUI-64 dotted", _set("spec.mac", "0123.4567.89ab.cdef"), None),
    ("mac with a bad digit", _set("spec.mac", "ca:fe:zz:52:bb:e9"), "spec.mac"),
    ("mac with mixed separators", _set("spec.mac", "01:23-45:67:89:ab"), "spec.mac"),
    ("mac of 5 bytes", _set("spec.mac", "01:23:45:67:89"), "spec.mac"),
    ("mac of 7 bytes", _set("spec.mac", "01:23:45:67:89:ab:cd"), "spec.mac"),
    ("mac of 20 bytes (IPoIB)", _set("spec.mac", ":".join(["00"] * 20)), "spec.mac"),
    ("mac with one-digit groups", _set("spec.mac", "1:23:45:67:89:ab"), "spec.mac"),
    # interfaceName
    ("interfaceName of 15 characters", _set("spec.interface_name", "cali_0123456.-9"), None),
    ("interfaceName of 16 characters", _set("spec.interface_name", "cali0123456789ab"), "spec.interfaceName"),
    ("interfaceName with a space", _set("spec.interface_name", "cali 0"), "spec.interfaceName"),
    ("interfaceName missing", _set("spec.interface_name", ""), "spec.interfaceName"),
    ("interfaceName a wildcard", _set("spec.interface_name", "*"), "spec.interfaceName"),
    # ports
    ("port name with digits and a dash", _port(0, name="http-8080"), None),
    ("port name with capitals", _port(0, name="HTTP"), "spec.ports[0].name"),
    ("port name of digits only", _port(0, name="8080"), "spec.ports[0].name"),
    ("port name with a double dash", _port(0, name="a--b"), "spec.ports[0].name"),
    ("port name with a leading dash", _port(0, name="-web"), "spec.ports[0].name"),
    ("port name of 16 characters", _port(0, name="a" * 16), "spec.ports[0].name"),
    ("port name duplicated", _port(1, name="http"), "spec.ports[1].name"),
    ("port name empty with a host port", _port(1, name=""), None),
    ("port name empty without a host port", _port(0, name=""), "spec.ports[0].name"),
    ("protocol SCTP", _port(0, protocol="SCTP"), None),
    ("protocol in lower case", _port(0, protocol="udp"), "spec.ports[0].protocol"),
    ("protocol in mixed case", _port(0, protocol="Tcp"), "spec.ports[0].protocol"),
    ("protocol number of TCP", _port(0, protocol="6"), None),
    ("protocol number of UDP", _port(0, protocol="17"), None),
    ("protocol number of SCTP", _port(0, protocol="132"), None),
    ("protocol number of ICMP", _port(0, protocol="1"), "spec.ports[0].protocol"),
    ("protocol number 0", _port(0, protocol="0"), "spec.ports[0].protocol"),
    ("protocol number signed", _port(0, protocol="+6"), "spec.ports[0].protocol"),
    ("protocol number past 255", _port(0, protocol="262"), "spec.ports[0].protocol"),
    ("protocol ICMP", _port(0, protocol="ICMP"), "spec.ports[0].protocol"),
    ("protocol missing", _port(0, protocol=""), "spec.ports[0].protocol"),
    ("port 1", _port(0, port=1), None),
    ("port 65535", _port(0, port=65535), None),
    ("port 0", _port(0, port=0), "spec.ports[0].port"),
    ("port 65536", _port(0, port=65536), "spec.ports[0].port"),
    ("port negative", _port(0, port=-1), "spec.ports[0].port"),
    ("hostPort 65535", _port(0, host_port=65535), None),
    ("hostPort 70000", _port(1, host_port=70000), "spec.ports[1].hostPort"),
    ("hostPort negative", _port(1, host_port=-5), "spec.ports[1].hostPort"),
    ("hostIP IPv6", _port(1, host_ip="2001:db8::1"), None),
    ("hostIP not an IP", _port(1, host_ip="1-65535"), "spec.ports[1].hostIP"),
    # annotations: label-key syntax in any case, any value, 256 KiB of keys and values
    ("annotation with a prefix and any value", _annotation("example.com/note", "any text: {}\n"), None),
    ("annotation key in upper case", _annotation("Example.COM/Owner", "x"), None),
    ("annotation key with a space", _annotation("a b", "x"), 'metadata.annotations["a b"]'),
    ("annotation key with two slashes", _annotation("a/b/c", "x"), 'metadata.annotations["a/b/c"]'),
    ("annotation key empty", _annotation("", "x"), 'metadata.annotations[""]'),
    ("annotations of exactly 256 KiB", _annotation("k", "v" * (256 * 1024 - 1)), None),
    ("annotations past 256 KiB", _annotation("k", "v" * (256 * 1024)), "metadata.annotations"),
    # allowSpoofedSourcePrefixes: CIDRs (host bits allowed) or bare IPs
    ("spoofed prefix CIDR", _spec_list("allow_spoofed_source_prefixes", ["10.0.0.0/8", "fd00::/64"]), None),
    ("spoofed prefix bare IP", _spec_list("allow_spoofed_source_prefixes", ["192.168.1.1"]), None),
    ("spoofed prefix /0", _spec_list("allow_spoofed_source_prefixes", ["0.0.0.0/0"]), None),
    ("spoofed prefix too long", _spec_list("allow_spoofed_source_prefixes", ["10.0.0.0/33"]), _SPOOFED),
    ("spoofed prefix not an IP", _spec_list("allow_spoofed_source_prefixes", ["10.0.0/8"]), _SPOOFED),
    ("spoofed prefix leading zero", _spec_list("allow_spoofed_source_prefixes", ["10.0.0.0/08"]), _SPOOFED),
    # serviceAccountName: a DNS-1123 subdomain
    ("serviceAccountName", _set("spec.service_account_name", "build-bot.ci"), None),
    ("serviceAccountName with capitals", _set("spec.service_account_name", "BuildBot"), "spec.serviceAccountName"),
    # qosControls: each limit 0 or in Calico's documented range, and the pairs that go together
    ("qos bandwidth and burst", _qos(ingress_bandwidth=10**6, ingress_burst=10**6), None),
    ("qos everything at its limits", _qos(**_QOS_HIGHEST), None),
    ("qos everything at its floors", _qos(**_QOS_LOWEST), None),
    ("qos bandwidth below 1k", _qos(egress_bandwidth=999), "spec.qosControls.egressBandwidth"),
    ("qos bandwidth past 1P", _qos(ingress_bandwidth=10**15 + 1), "spec.qosControls.ingressBandwidth"),
    ("qos negative", _qos(ingress_packet_rate=-1), "spec.qosControls.ingressPacketRate"),
    ("qos packet rate past 10k", _qos(egress_packet_rate=10_001), "spec.qosControls.egressPacketRate"),
    ("qos connections past 2^32-1", _qos(ingress_max_connections=2**32), "spec.qosControls.ingressMaxConnections"),
    ("qos burst without bandwidth", _qos(ingress_burst=10**6), "spec.qosControls.ingressBurst"),
    ("qos peakrate not above bandwidth", _qos(egress_bandwidth=10**6, egress_peakrate=10**6), _EGRESS_PEAK),
    ("qos minburst without peakrate", _qos(ingress_bandwidth=10**6, ingress_minburst=1500), _INGRESS_MINBURST),
    ("qos packet burst without rate", _qos(egress_packet_burst=5), "spec.qosControls.egressPacketBurst"),
    ("qos dscp name", _qos(dscp="AF21"), None),
    ("qos dscp number", _qos(dscp="46"), None),
    ("qos dscp 64", _qos(dscp="64"), "spec.qosControls.dscp"),
    ("qos dscp lower case", _qos(dscp="ef"), "spec.qosControls.dscp"),
    ("qos empty", _qos(), None),
]


@pytest.mark.parametrize(("change", "path"), [pytest.param(c, p, id=i) for i, c, p in RULES])
def test_rule(change: Change, path: str | None) -> None:
    wep = endpoint_with(change)
    if path is None:
        normalize_workload_endpoint(wep)
    else:
        assert [v.field for v in violations_of(wep)] == [path]


@pytest.mark.parametrize(
    ("change", "path", "description"),
    [
        (
            _set("metadata.name", "wrong"),
            "metadata.name",
            'name "wrong" does not match the name derived from spec.node, spec.orchestrator, spec.pod and '
            f'spec.endpoint: expected "{DERIVED}"',
        ),
        (
            _spec_list("ip_networks", ["10.0.0.0/24"]),
            "spec.ipNetworks[0]",
            '"10.0.0.0/24" covers more than one address: each ipNetworks entry must be a single address '
            "(/32 for IPv4, /128 for IPv6)",
        ),
        (
            _spec_list("ip_networks", ["garbage"]),
            "spec.ipNetworks[0]",
            '"garbage" is not an IP address or a single-address CIDR',
        ),
        (
            _port(1, host_port=70000),
            "spec.ports[1].hostPort",
            "host port 70000 is out of range 1-65535 (0 leaves it unset)",
        ),
        (
            _port(0, protocol="tcp"),
            "spec.ports[0].protocol",
            'protocol "tcp" is not accepted: ports need TCP, UDP or SCTP (upper case, as Calico spells them) or '
            "their protocol numbers 6, 17 or 132",
        ),
        (
            _set("spec.interface_name", ""),
            "spec.interfaceName",
            'interface name is required: 1-15 letters, digits, "_", "." or "-"',
        ),
        (
            _annotation("a b", "x"),
            'metadata.annotations["a b"]',
            'annotation key "a b" is not valid: it must be a label key in any case, an optional DNS-1123 subdomain '
            'and "/", then 1-63 letters, digits, "-", "_" or ".", starting and ending with a letter or digit',
        ),
        (
            _annotation("k", "v" * (256 * 1024)),
            "metadata.annotations",
            "annotations are 262145 bytes (keys and values together); at most 262144",
        ),
        (
            _spec_list("allow_spoofed_source_prefixes", ["10.0.0.0/33"]),
            "spec.allowSpoofedSourcePrefixes[0]",
            '"10.0.0.0/33" is not an IP address or a CIDR',
        ),
        (
            _qos(ingress_bandwidth=999),
            "spec.qosControls.ingressBandwidth",
            "ingressBandwidth 999 is out of range 1000-1000000000000000 (0 leaves it unset)",
        ),
        (_qos(egress_burst=4096), "spec.qosControls.egressBurst", "egressBurst needs egressBandwidth"),
        (
            _qos(ingress_bandwidth=2000, ingress_peakrate=1500),
            "spec.qosControls.ingressPeakrate",
            "ingressPeakrate 1500 must be greater than ingressBandwidth 2000",
        ),
        (
            _qos(dscp="af11"),
            "spec.qosControls.dscp",
            'dscp "af11" is not a number 0-63 or one of DF, EF, AF11, AF12, AF13, AF21, AF22, AF23, AF31, AF32, '
            "AF33, AF41, AF42, AF43, CS0, CS1, CS2, CS3, CS4, CS5, CS6",
        ),
        (_set("spec.ipv6_gateway", "10.0.0.1"), "spec.ipv6Gateway", 'IPv6 gateway "10.0.0.1" is not an IPv6 address'),
        (
            _nat("10.0.0.1", "2001:db8::1"),
            "spec.ipNATs[0].externalIP",
            "external IP 2001:db8::1 is IPv6 but internal IP 10.0.0.1 is IPv4",
        ),
        (
            _label(NAMESPACE_LABEL, "kube-system"),
            f'metadata.labels["{NAMESPACE_LABEL}"]',
            f'label "{NAMESPACE_LABEL}" is set by the server to the endpoint\'s namespace "default"; '
            '"kube-system" is not allowed',
        ),
    ],
)
def test_descriptions_name_the_bad_value(change: Change, path: str, description: str) -> None:
    assert violations_of(endpoint_with(change)) == [FieldViolation(path, description)]


def test_orchestrator_label_without_orchestrator_is_refused() -> None:
    wep = valid_endpoint()
    wep.spec.orchestrator = ""
    wep.metadata.name = "plain-name"
    violations = violations_of(wep)
    assert [v.field for v in violations] == [f'metadata.labels["{ORCHESTRATOR_LABEL}"]']
    assert "empty" in violations[0].description


def test_missing_name_that_cannot_be_derived_says_what_would_derive_it() -> None:
    wep = WorkloadEndpoint(
        spec=WorkloadEndpointSpec(node="node1", orchestrator="cni", endpoint="eth0", interface_name="cali0")
    )
    (violation,) = violations_of(wep)
    assert violation.field == "metadata.name"
    assert "spec.containerID" in violation.description


def test_bad_name_parts_are_reported_once_not_also_as_a_name_mismatch() -> None:
    wep = valid_endpoint()
    wep.spec.pod = "My_Pod"
    assert [v.field for v in violations_of(wep)] == ["spec.pod"]


def test_every_violation_is_reported_not_just_the_first() -> None:
    wep = valid_endpoint()
    wep.metadata.namespace = "Bad"
    wep.spec.node = "Node"
    wep.spec.interface_name = "x" * 20
    wep.spec.aws_elastic_ips.append("nope")
    wep.spec.ports[0].protocol = "ICMP"
    assert {v.field for v in violations_of(wep)} == {
        "metadata.namespace",
        f'metadata.labels["{NAMESPACE_LABEL}"]',  # "default" no longer matches the namespace
        "spec.node",
        "spec.interfaceName",
        "spec.awsElasticIPs[1]",
        "spec.ports[0].protocol",
    }


# --- normalisation ----------------------------------------------------------------------------------------


def test_bare_ips_become_single_address_cidrs_in_canonical_form() -> None:
    wep = endpoint_with(_spec_list("ip_networks", ["10.0.0.1", "FD00:0::1", "10.0.0.2/32"]))
    out = normalize_workload_endpoint(wep)
    assert list(out.spec.ip_networks) == ["10.0.0.1/32", "fd00::1/128", "10.0.0.2/32"]


def test_nat_internal_ip_matches_a_bare_ip_network() -> None:
    wep = endpoint_with(_spec_list("ip_networks", ["10.0.0.1"]))
    assert normalize_workload_endpoint(wep).spec.ip_nats[0].internal_ip == "10.0.0.1"


def test_empty_namespace_becomes_default_and_gets_its_label() -> None:
    wep = valid_endpoint()
    wep.metadata.namespace = ""
    del wep.metadata.labels[NAMESPACE_LABEL]
    out = normalize_workload_endpoint(wep)
    assert out.metadata.namespace == "default"
    assert out.metadata.labels[NAMESPACE_LABEL] == "default"


def test_missing_name_becomes_the_derived_name() -> None:
    wep = WorkloadEndpoint(
        metadata=ObjectMeta(namespace="prod"),
        spec=WorkloadEndpointSpec(
            node="node-1", orchestrator="cni", container_id="ab-12", endpoint="eth0", interface_name="cali0"
        ),
    )
    out = normalize_workload_endpoint(wep)
    assert out.metadata.name == "node--1-cni-ab--12-eth0"
    assert dict(out.metadata.labels) == {NAMESPACE_LABEL: "prod", ORCHESTRATOR_LABEL: "cni"}


def test_no_orchestrator_label_without_an_orchestrator() -> None:
    wep = WorkloadEndpoint(
        metadata=ObjectMeta(name="plain"), spec=WorkloadEndpointSpec(node="n", interface_name="cali0")
    )
    assert dict(normalize_workload_endpoint(wep).metadata.labels) == {NAMESPACE_LABEL: "default"}


def test_a_protocol_number_is_stored_without_leading_zeros() -> None:
    """As Calico reads numorstring.Protocol: "006" is the number 6."""
    out = normalize_workload_endpoint(endpoint_with(_port(0, protocol="006")))
    assert out.spec.ports[0].protocol == "6"


def test_spoofed_prefixes_are_stored_as_the_networks_they_cover() -> None:
    wep = endpoint_with(_spec_list("allow_spoofed_source_prefixes", ["10.1.2.3/16", "FD00::7/64", "192.168.0.9"]))
    out = normalize_workload_endpoint(wep)
    assert list(out.spec.allow_spoofed_source_prefixes) == ["10.1.0.0/16", "fd00::/64", "192.168.0.9/32"]


def test_a_dscp_number_is_stored_without_leading_zeros() -> None:
    out = normalize_workload_endpoint(endpoint_with(_qos(dscp="010")))
    assert out.spec.qos_controls.dscp == "10"


def test_the_newer_fields_pass_through_unchanged() -> None:
    """Annotations, serviceAccountName and qosControls in normal form are stored as given."""
    wep = valid_endpoint()
    wep.metadata.annotations.update({"example.com/owner": "net team", "Note": ""})
    wep.spec.service_account_name = "default"
    wep.spec.allow_spoofed_source_prefixes.append("10.9.0.0/16")
    _qos(ingress_bandwidth=10**7, ingress_burst=10**6, egress_packet_rate=100, dscp="EF")(wep)
    assert normalize_workload_endpoint(wep) == wep


def test_a_protocol_name_is_stored_as_spelled() -> None:
    out = normalize_workload_endpoint(endpoint_with(_port(0, protocol="SCTP")))
    assert out.spec.ports[0].protocol == "SCTP"


def test_server_owned_metadata_is_left_as_given() -> None:
    wep = valid_endpoint()
    wep.metadata.uid = "u-1"
    wep.metadata.resource_version = 42
    wep.metadata.creation_timestamp.seconds = 1000
    out = normalize_workload_endpoint(wep)
    assert (out.metadata.uid, out.metadata.resource_version, out.metadata.creation_timestamp.seconds) == (
        "u-1",
        42,
        1000,
    )


def test_input_is_not_modified_and_normalising_twice_changes_nothing() -> None:
    wep = WorkloadEndpoint(
        spec=WorkloadEndpointSpec(
            node="n", orchestrator="k8s", pod="p", endpoint="e", ip_networks=["10.0.0.1"], interface_name="cali0"
        )
    )
    before = WorkloadEndpoint()
    before.CopyFrom(wep)
    once = normalize_workload_endpoint(wep)
    assert wep == before
    assert once != wep
    assert normalize_workload_endpoint(once) == once


# --- Profile ----------------------------------------------------------------------------------------------


def valid_profile() -> Profile:
    return Profile(
        metadata=ObjectMeta(name="kns.default", labels={"owner": "net-team"}),
        spec=ProfileSpec(labels_to_apply={"pcns.tier": "web", "example.com/env": "prod"}),
    )


def test_valid_profile_passes_unchanged() -> None:
    profile = valid_profile()
    assert normalize_profile(profile) == profile


def _profile_name(name: str) -> Callable[[Profile], object]:
    return lambda p: setattr(p.metadata, "name", name)


PROFILE_RULES: list[tuple[str, Callable[[Profile], object], str | None]] = [
    ("name a DNS-1123 subdomain", _profile_name("team-a.v2"), None),
    ("name with capitals", _profile_name("tHiNg"), "metadata.name"),
    ("name with an underscore", _profile_name("team_a"), "metadata.name"),
    ("name with a trailing dot", _profile_name("team."), "metadata.name"),
    ("name missing", _profile_name(""), "metadata.name"),
    ("name with a slash", _profile_name("a/b"), "metadata.name"),
    ("name too long", _profile_name("p" * 254), "metadata.name"),
    ("namespace set", lambda p: setattr(p.metadata, "namespace", "default"), "metadata.namespace"),
    ("annotation", lambda p: p.metadata.annotations.__setitem__("example.com/why", "shared"), None),
    ("annotation bad key", lambda p: p.metadata.annotations.__setitem__("a b", ""), 'metadata.annotations["a b"]'),
    ("label bad key", lambda p: p.metadata.labels.__setitem__("a b", "x"), 'metadata.labels["a b"]'),
    ("labelsToApply empty value", lambda p: p.spec.labels_to_apply.__setitem__("flag", ""), None),
    ("labelsToApply bad value", lambda p: p.spec.labels_to_apply.__setitem__("k", "a b"), 'spec.labelsToApply["k"]'),
    (
        "labelsToApply namespace label",
        lambda p: p.spec.labels_to_apply.__setitem__(NAMESPACE_LABEL, "default"),
        f'spec.labelsToApply["{NAMESPACE_LABEL}"]',
    ),
    (
        "labelsToApply orchestrator label",
        lambda p: p.spec.labels_to_apply.__setitem__(ORCHESTRATOR_LABEL, "k8s"),
        f'spec.labelsToApply["{ORCHESTRATOR_LABEL}"]',
    ),
]


@pytest.mark.parametrize(("change", "path"), [pytest.param(c, p, id=i) for i, c, p in PROFILE_RULES])
def test_profile_rule(change: Callable[[Profile], object], path: str | None) -> None:
    profile = valid_profile()
    change(profile)
    if path is None:
        normalize_profile(profile)
        return
    with pytest.raises(InvalidArgument) as caught:
        normalize_profile(profile)
    assert [v.field for v in caught.value.violations] == [path]


def test_profile_violations_are_reported_together() -> None:
    profile = Profile(
        metadata=ObjectMeta(namespace="x", labels={"-": "y"}), spec=ProfileSpec(labels_to_apply={"k": "-"})
    )
    with pytest.raises(InvalidArgument) as caught:
        normalize_profile(profile)
    assert [v.field for v in caught.value.violations] == [
        "metadata.name",
        "metadata.namespace",
        'metadata.labels["-"]',
        'spec.labelsToApply["k"]',
    ]
