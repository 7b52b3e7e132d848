"""The Rust validator (`epsync._core.normalize_endpoints` / `normalize_profiles`) against the Python reference.

Random endpoints and profiles, valid ones and ones mutated into every kind of mistake (bad IPs, CIDRs, MACs,
ports out of range, duplicate port names, reserved labels, label keys and values with unicode and control
characters, names that do or do not match the derived name, empty fields), go through both. When Python's
`normalize_workload_endpoint` raises `InvalidArgument`, Rust returns the same (field, description) pairs in
the same order; when it succeeds, Rust's bytes are `WORKLOAD_ENDPOINTS.encode` of Python's result, after
setting the same uid and creation timestamp.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epsync._core import normalize_endpoints, normalize_profiles
from epsync.errors import FieldViolation, InvalidArgument
from epsync.model.kinds import NAMESPACE_LABEL, ORCHESTRATOR_LABEL, PROFILES, WORKLOAD_ENDPOINTS
from epsync.model.naming import derived_name
from epsync.v1.object_meta_pb2 import ObjectMeta
from epsync.v1.profile_pb2 import Profile, ProfileSpec
from epsync.v1.workload_endpoint_pb2 import IPNAT, WorkloadEndpoint, WorkloadEndpointPort, WorkloadEndpointSpec
from tests.validation_reference import normalize_profile, normalize_workload_endpoint

Item = tuple[bytes, str | None, tuple[int, int] | None]
Outcome = bytes | list[tuple[str, str]]

PARITY = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- text: valid pieces from small alphabets (so that dashes, dots and prefixes meet), and odd text ----

ODD_CHARS = 'aZ09-_./ "\\\n\t\x00\x01\x1f\x7f\x85\u2028é☃😀\u017f'
ODD_TEXT = st.text(alphabet=ODD_CHARS, max_size=8)


def dns_label(alphabet: str = "ab1-", max_size: int = 6) -> st.SearchStrategy[str]:
    """`[a-z0-9]([-a-z0-9]*[a-z0-9])?` from a small alphabet, dashes inside only."""
    inner = st.tuples(st.sampled_from("ab1"), st.text(alphabet=alphabet, max_size=max_size), st.sampled_from("ab2"))
    return st.one_of(st.sampled_from("ab1"), inner.map("".join))


DNS_LABEL = dns_label()
SUBDOMAIN = st.lists(DNS_LABEL, min_size=1, max_size=3).map(".".join)
LABEL_NAME = st.one_of(
    st.sampled_from(["a", "ab", "b", "app", "A_b-c.D", "x" * 63]),
    st.tuples(st.sampled_from("aZ9"), st.text(alphabet="aZ9-_.", max_size=5), st.sampled_from("bY8")).map("".join),
)
LABEL_KEY = st.one_of(LABEL_NAME, st.tuples(SUBDOMAIN, LABEL_NAME).map("/".join))
LABEL_VALUE = st.one_of(st.just(""), LABEL_NAME)
GOOD_LABELS = st.dictionaries(LABEL_KEY, LABEL_VALUE, max_size=5)
BAD_LABEL_KEY = st.one_of(
    ODD_TEXT,
    st.sampled_from(
        [
            "",
            "/",
            "a/",
            "/a",
            "a/b/c",
            "A.com/x",
            "-a",
            "a-",
            "x" * 64,
            "é",
            "pcns.team",
            "pcsa.name",
            "pcns.",
            "a." + "b" * 252 + "/x",
            NAMESPACE_LABEL,
            ORCHESTRATOR_LABEL,
        ]
    ),
)
BAD_LABEL_VALUE = st.one_of(ODD_TEXT, st.sampled_from(["-", "a b", "x" * 64, "é", "a\n"]))

# ---- IP addresses written every way Python accepts, and ways it does not ----


def v4_text(value: int) -> str:
    return ".".join(str((value >> shift) & 0xFF) for shift in (24, 16, 8, 0))


@st.composite
def v6_text(draw: st.DrawFn) -> str:
    """An IPv6 address written out, compressed, with leading zeros, upper case or a dotted IPv4 tail."""
    hextets = draw(st.lists(st.one_of(st.just(0), st.just(0xFFFF), st.integers(0, 0xFFFF)), min_size=8, max_size=8))
    if draw(st.booleans()):
        hextets[:6] = [0, 0, 0, 0, 0, 0xFFFF]  # IPv4-mapped
    style = draw(st.sampled_from(["full", "padded", "upper", "compressed", "v4tail"]))
    if style == "v4tail":
        head = ":".join(f"{h:x}" for h in hextets[:6])
        return f"{head}:{v4_text((hextets[6] << 16) | hextets[7])}"
    parts = [f"{h:04x}" if style == "padded" else f"{h:x}" for h in hextets]
    if style == "upper":
        parts = [p.upper() for p in parts]
    if style == "compressed":
        start = draw(st.integers(0, 7))
        end = draw(st.integers(start + 1, 8))
        if all(h == 0 for h in hextets[start:end]):
            return ":".join(parts[:start]) + "::" + ":".join(parts[end:])
    return ":".join(parts)


V4 = st.integers(0, 2**32 - 1).map(v4_text)
GOOD_IP = st.one_of(V4, v6_text(), st.sampled_from(["::", "::1", "0.0.0.0", "::ffff:1.2.3.4", "2001:DB8::1"]))
BAD_IP = st.one_of(
    st.text(alphabet="0123456789abcdefABCDEFg:.%/ ", max_size=12),
    st.sampled_from(
        [
            "",
            "01.2.3.4",
            "1.2.3",
            "256.0.0.1",
            "1.2.3.4 ",
            "fe80::1%eth0",
            "1::2::3",
            "12345::",
            "::1.2.3",
            "1:2:3:4:5:6:7:8:9",
            "::٣",
            "1.2.3.٤",
            "::\uff46",
        ]
    ),
)
MACS = st.sampled_from(
    [
        "ca:fe:1d:52:bb:e9",
        "CA-FE-1D-52-BB-E9",
        "00:11:22:33:44:55:66:77",
        "0011.2233.4455",
        "0011.2233.4455.6677",
        "",
    ]
)
BAD_MACS = st.one_of(
    st.text(alphabet="0aF:-.g", max_size=24),
    st.sampled_from(
        ["00:11-22:33:44:55", "00:11:22:33:44", "0011.2233", "0011:2233:4455", "00:11:22:33:44:55:66", "\uff46\uff46"]
    ),
)
PORT_NAMES = st.one_of(
    st.sampled_from(["http", "metrics", "web-8080", "a"]),
    dns_label("ab1-", 4).filter(lambda name: "--" not in name and any(c.isalpha() for c in name)),
)
BAD_PORT_NAMES = st.one_of(ODD_TEXT, st.sampled_from(["8080", "HTTP", "a--b", "x234567890123456", "web_1", "-a"]))
PROTOCOLS = st.sampled_from(["TCP", "UDP", "SCTP", "6", "17", "132", "006", "0132"])
BAD_PROTOCOLS = st.one_of(
    ODD_TEXT,
    st.sampled_from(
        ["", "icmp", "TCPX", "T CP", "ß", "tcp", "Udp", "sctp", "\u017fctp", "\u017fCTP", "1", "0", "+6", "6 ", "٦"]
    ),
    st.sampled_from(["256", "262", "0" * 300 + "17", "9" * 5000, "-17"]),
)
GOOD_ANNOTATION_KEY = st.one_of(LABEL_KEY, LABEL_KEY.map(str.upper), st.just("Example.COM/Owner"))
ANNOTATIONS = st.dictionaries(GOOD_ANNOTATION_KEY, ODD_TEXT, max_size=3)
BAD_ANNOTATION_KEY = st.one_of(BAD_LABEL_KEY, st.sampled_from(["\u212a", "\u0130", "A\u212a", "\u03a3a", "a\u03a3"]))
PREFIX_LENGTHS = st.sampled_from(["", "/0", "/8", "/24", "/32", "/64", "/128", "/33", "/129", "/08", "/", "/x", "/1/2"])
SPOOFED = st.tuples(st.one_of(GOOD_IP, GOOD_IP, BAD_IP), PREFIX_LENGTHS).map("".join)
DSCP = st.one_of(
    st.sampled_from(["", "DF", "EF", "AF11", "AF43", "CS0", "CS6", "0", "63", "063", "46"]),
    st.sampled_from(["64", "af11", "Cs1", "AF44", "-1", "1.0", "256"]),
    ODD_TEXT,
)
QOS_VALUES = st.one_of(
    st.just(0),
    st.sampled_from([1, 5, 999, 1000, 1010, 1500, 10_000, 10_001, 10**8, 10**8 + 1, 34_359_738_360, 10**15]),
    st.sampled_from([10**15 + 1, 1_010 * 10**12, 2**32 - 1, 2**32, -1, -(2**63), 2**63 - 1]),
)
PORT_NUMBERS = st.integers(1, 65535)
BAD_PORT_NUMBERS = st.sampled_from([0, -1, 65536, 2**31 - 1, -(2**31)])

# ---- valid endpoints ----


@st.composite
def ports(draw: st.DrawFn) -> list[WorkloadEndpointPort]:
    names = draw(st.lists(PORT_NAMES, max_size=3, unique=True))
    out = []
    for name in names:
        port = WorkloadEndpointPort(name=name, protocol=draw(PROTOCOLS), port=draw(PORT_NUMBERS))
        if draw(st.integers(0, 3)) == 0:
            port.host_port = draw(PORT_NUMBERS)
            port.host_ip = draw(GOOD_IP)
        out.append(port)
    return out


@st.composite
def valid_endpoints(draw: st.DrawFn) -> WorkloadEndpoint:
    orchestrator = draw(st.sampled_from(["k8s", "cni", "libnetwork", "openstack", "my-orch", ""]))
    spec = WorkloadEndpointSpec(
        orchestrator=orchestrator,
        node=draw(st.one_of(SUBDOMAIN, st.just(""))),
        pod=draw(st.one_of(SUBDOMAIN, st.just(""))),
        workload=draw(st.one_of(SUBDOMAIN, st.just(""))),
        endpoint=draw(st.one_of(SUBDOMAIN, st.just(""))),
        container_id=draw(st.one_of(st.just(""), dns_label("aB1-", 8))),
        profiles=draw(st.lists(SUBDOMAIN, max_size=3)),
        interface_name=draw(st.sampled_from(["cali0ef24ba", "eth0", "a.b_c-d", "x" * 15])),
        mac=draw(MACS),
        ports=draw(ports()),
    )
    addresses = draw(st.lists(GOOD_IP, max_size=3))
    spec.ip_networks.extend(
        a if draw(st.booleans()) else f"{a}/{32 if '.' in a and ':' not in a else 128}" for a in addresses
    )
    for address in addresses[: draw(st.integers(0, len(addresses)))]:
        same_family = V4 if ":" not in address else v6_text()
        spec.ip_nats.append(IPNAT(internal_ip=address, external_ip=draw(same_family)))
    spec.aws_elastic_ips.extend(draw(st.lists(GOOD_IP, max_size=2)))
    if draw(st.booleans()):
        spec.ipv4_gateway = draw(V4)
    if draw(st.booleans()):
        spec.ipv6_gateway = draw(v6_text())
    for address in draw(st.lists(GOOD_IP, max_size=2)):
        longest = 128 if ":" in address else 32
        length = draw(st.one_of(st.just(""), st.integers(0, longest).map(lambda n: f"/{n}")))
        spec.allow_spoofed_source_prefixes.append(address + length)
    if draw(st.booleans()):
        spec.service_account_name = draw(SUBDOMAIN)
    if draw(st.booleans()):
        spec.qos_controls.SetInParent()
        if draw(st.booleans()):
            spec.qos_controls.ingress_bandwidth = draw(st.integers(1000, 10**15))
            spec.qos_controls.ingress_burst = draw(st.sampled_from([0, 1000, 34_359_738_360]))
            spec.qos_controls.ingress_peakrate = draw(
                st.sampled_from([0, min(spec.qos_controls.ingress_bandwidth + 1010, 1_010 * 10**12)])
            )
        if draw(st.booleans()):
            spec.qos_controls.egress_packet_rate = draw(st.integers(1, 10_000))
            spec.qos_controls.egress_packet_burst = draw(st.integers(0, 10_000))
        spec.qos_controls.egress_max_connections = draw(st.sampled_from([0, 1, 2**32 - 1]))
        spec.qos_controls.dscp = draw(st.sampled_from(["", "EF", "CS6", "0", "63", "007"]))
    namespace = draw(st.one_of(st.just(""), st.just("default"), dns_label()))
    meta = ObjectMeta(namespace=namespace, labels=draw(GOOD_LABELS), resource_version=draw(st.integers(0, 2**63 - 1)))
    meta.annotations.update(draw(ANNOTATIONS))
    if draw(st.booleans()):
        meta.uid = draw(ODD_TEXT)
    if draw(st.booleans()):
        meta.creation_timestamp.CopyFrom(
            Timestamp(seconds=draw(st.integers(0, 2**40)), nanos=draw(st.integers(0, 999_999_999)))
        )
    if draw(st.booleans()):
        meta.labels[NAMESPACE_LABEL] = namespace or "default"
    if orchestrator and draw(st.booleans()):
        meta.labels[ORCHESTRATOR_LABEL] = orchestrator
    derived = derived_name(spec)
    meta.name = draw(st.sampled_from([derived, ""] if derived else ["web-1", "a.b_c"]))
    return WorkloadEndpoint(metadata=meta, spec=spec)


# ---- mistakes ----

Mutation = Callable[[WorkloadEndpoint, st.DrawFn], None]


def _set_label(wep: WorkloadEndpoint, draw: st.DrawFn) -> None:
    wep.metadata.labels[draw(BAD_LABEL_KEY)] = draw(st.one_of(LABEL_VALUE, BAD_LABEL_VALUE))


def _bad_label_value(wep: WorkloadEndpoint, draw: st.DrawFn) -> None:
    wep.metadata.labels[draw(LABEL_KEY)] = draw(BAD_LABEL_VALUE)


def _server_label(wep: WorkloadEndpoint, draw: st.DrawFn) -> None:
    key = draw(st.sampled_from([NAMESPACE_LABEL, ORCHESTRATOR_LABEL]))
    wep.metadata.labels[key] = draw(st.one_of(st.sampled_from(["", "default", "k8s", "other"]), ODD_TEXT))


def _name(wep: WorkloadEndpoint, draw: st.DrawFn) -> None:
    wep.metadata.name = draw(st.one_of(ODD_TEXT, st.sampled_from(["", "x" * 254, "é" * 254, "a b"]), SUBDOMAIN))


def _namespace(wep: WorkloadEndpoint, draw: st.DrawFn) -> None:
    wep.metadata.namespace = draw(st.one_of(ODD_TEXT, st.sampled_from(["Prod", "a.b", "x" * 64, "-a"])))


def _identity(wep: WorkloadEndpoint, draw: st.DrawFn) -> None:
    field = draw(st.sampled_from(["node", "orchestrator", "workload", "pod", "endpoint", "container_id"]))
    value = draw(st.one_of(ODD_TEXT, st.sampled_from(["", "A", "a_b", "a..b", "a" * 254, "k8s", "cni", "libnetwork"])))
    setattr(wep.spec, field, value)


def _ip_network(wep: WorkloadEndpoint, draw: st.DrawFn) -> None:
    address = draw(st.one_of(GOOD_IP, BAD_IP))
    suffix = draw(st.sampled_from(["", "/32", "/128", "/24", "/64", "/032", "/", "/0", "/1000", "/x", "/32/32"]))
    wep.spec.ip_networks.append(address + suffix)


def _nat(wep: WorkloadEndpoint, draw: st.DrawFn) -> None:
    wep.spec.ip_nats.append(
        IPNAT(internal_ip=draw(st.one_of(GOOD_IP, BAD_IP)), external_ip=draw(st.one_of(GOOD_IP, BAD_IP)))
    )


def _aws(wep: WorkloadEndpoint, draw: st.DrawFn) -> None:
    wep.spec.aws_elastic_ips.append(draw(st.one_of(GOOD_IP, BAD_IP)))


def _gateway(wep: WorkloadEndpoint, draw: st.DrawFn) -> None:
    if draw(st.booleans()):
        wep.spec.ipv4_gateway = draw(st.one_of(GOOD_IP, BAD_IP))
    else:
        wep.spec.ipv6_gateway = draw(st.one_of(GOOD_IP, BAD_IP))


def _profile(wep: WorkloadEndpoint, draw: st.DrawFn) -> None:
    wep.spec.profiles.append(draw(st.one_of(ODD_TEXT, st.sampled_from(["", "KNS.a", "a..b", "a" * 254]))))


def _interface(wep: WorkloadEndpoint, draw: st.DrawFn) -> None:
    wep.spec.interface_name = draw(st.one_of(ODD_TEXT, st.sampled_from(["x" * 16, "a b", "cali/0"])))


def _mac(wep: WorkloadEndpoint, draw: st.DrawFn) -> None:
    wep.spec.mac = draw(BAD_MACS)


def _port(wep: WorkloadEndpoint, draw: st.DrawFn) -> None:
    port = WorkloadEndpointPort(
        name=draw(st.one_of(PORT_NAMES, BAD_PORT_NAMES, st.just(""))),
        protocol=draw(st.one_of(PROTOCOLS, BAD_PROTOCOLS)),
        port=draw(st.one_of(PORT_NUMBERS, BAD_PORT_NUMBERS)),
        host_port=draw(st.one_of(st.just(0), PORT_NUMBERS, BAD_PORT_NUMBERS)),
        host_ip=draw(st.one_of(st.just(""), GOOD_IP, BAD_IP)),
    )
    wep.spec.ports.insert(draw(st.integers(0, len(wep.spec.ports))), port)


def _duplicate_port(wep: WorkloadEndpoint, draw: st.DrawFn) -> None:
    if wep.spec.ports:
        copy = WorkloadEndpointPort()
        copy.CopyFrom(draw(st.sampled_from(list(wep.spec.ports))))
        wep.spec.ports.append(copy)


def _drop(wep: WorkloadEndpoint, draw: st.DrawFn) -> None:
    wep.ClearField(draw(st.sampled_from(["metadata", "spec"])))


def _many_labels(wep: WorkloadEndpoint, draw: st.DrawFn) -> None:
    """Labels at the limit or just past it (256), some of them bad."""
    count = draw(st.sampled_from([255, 256, 257, 300]))
    for i in range(count - len(wep.metadata.labels)):
        wep.metadata.labels[f"k{i}" if i % 50 else f"bad key {i}"] = "v"


def _annotation(wep: WorkloadEndpoint, draw: st.DrawFn) -> None:
    wep.metadata.annotations[draw(st.one_of(GOOD_ANNOTATION_KEY, BAD_ANNOTATION_KEY))] = draw(ODD_TEXT)


def _huge_annotations(wep: WorkloadEndpoint, draw: st.DrawFn) -> None:
    """Annotations around Kubernetes' 256 KiB bound, counted in bytes (é is two), with a bad key among them."""
    size = draw(st.sampled_from([256 * 1024 - 1, 256 * 1024, 256 * 1024 + 1]))
    wep.metadata.annotations.clear()
    wep.metadata.annotations["a b"] = ""
    wep.metadata.annotations["k"] = draw(st.sampled_from(["v", "é"])) * (size - 4)


def _spoofed(wep: WorkloadEndpoint, draw: st.DrawFn) -> None:
    wep.spec.allow_spoofed_source_prefixes.append(draw(SPOOFED))


def _service_account(wep: WorkloadEndpoint, draw: st.DrawFn) -> None:
    wep.spec.service_account_name = draw(st.one_of(ODD_TEXT, st.sampled_from(["Default", "a_b", "a" * 254])))


def _qos(wep: WorkloadEndpoint, draw: st.DrawFn) -> None:
    qos = wep.spec.qos_controls
    for field in draw(st.lists(st.sampled_from([f.name for f in qos.DESCRIPTOR.fields if f.name != "dscp"]))):
        setattr(qos, field, draw(QOS_VALUES))
    qos.dscp = draw(DSCP)


def _huge(wep: WorkloadEndpoint, draw: st.DrawFn) -> None:
    """An object around the size limit (512 KiB encoded), by one long field that is also invalid."""
    wep.spec.endpoint = "e" * draw(st.sampled_from([500 * 1024, 512 * 1024, 600 * 1024]))


MUTATIONS: Sequence[Mutation] = (
    _annotation,
    _huge_annotations,
    _spoofed,
    _service_account,
    _qos,
    _many_labels,
    _huge,
    _set_label,
    _bad_label_value,
    _server_label,
    _name,
    _namespace,
    _identity,
    _ip_network,
    _nat,
    _aws,
    _gateway,
    _profile,
    _interface,
    _mac,
    _port,
    _duplicate_port,
    _drop,
)


@st.composite
def endpoints(draw: st.DrawFn) -> WorkloadEndpoint:
    """A valid endpoint, then none to a few mistakes."""
    wep = draw(valid_endpoints())
    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), max_size=3)):
        mutation(wep, draw)
    return wep


@st.composite
def profiles(draw: st.DrawFn) -> Profile:
    """Mostly valid profiles; some with a bad name, a namespace, bad labels or server labels to apply."""
    bad_labels = st.dictionaries(
        st.one_of(LABEL_KEY, BAD_LABEL_KEY), st.one_of(LABEL_VALUE, BAD_LABEL_VALUE), min_size=1, max_size=3
    )
    some_labels = st.one_of(GOOD_LABELS, GOOD_LABELS, GOOD_LABELS, bad_labels)
    name = st.one_of(
        SUBDOMAIN, SUBDOMAIN, SUBDOMAIN, st.sampled_from(["", "kns.a", "a_b", "tHiNg", "x" * 254, "x" * 253]), ODD_TEXT
    )
    meta = ObjectMeta(name=draw(name), labels=draw(some_labels), resource_version=draw(st.integers(0, 2**63 - 1)))
    if draw(st.integers(0, 3)) == 0:
        meta.annotations.update(
            draw(st.dictionaries(st.one_of(GOOD_ANNOTATION_KEY, BAD_ANNOTATION_KEY), ODD_TEXT, max_size=3))
        )
    if draw(st.integers(0, 5)) == 0:
        meta.namespace = draw(st.one_of(DNS_LABEL, ODD_TEXT))
    profile = Profile(metadata=meta)
    if draw(st.booleans()):
        profile.spec.CopyFrom(ProfileSpec(labels_to_apply=draw(some_labels)))
    if draw(st.integers(0, 9)) == 0:
        profile.spec.labels_to_apply[draw(st.sampled_from([NAMESPACE_LABEL, ORCHESTRATOR_LABEL]))] = "x"
    if draw(st.integers(0, 19)) == 0:
        profile.ClearField("metadata")
    if draw(st.integers(0, 19)) == 0:
        target = profile.metadata.labels if draw(st.booleans()) else profile.spec.labels_to_apply
        target.update({f"k{i}": "v" for i in range(draw(st.sampled_from([256, 257])))})
    if draw(st.integers(0, 29)) == 0:
        profile.metadata.labels["big"] = "v" * (600 * 1024)
    return profile


SERVER_METADATA = st.tuples(
    st.one_of(st.none(), st.uuids().map(str), ODD_TEXT),
    st.one_of(st.none(), st.tuples(st.integers(-(2**63), 2**63 - 1), st.integers(-(2**31), 2**31 - 1))),
)

# ---- the reference ----


def python_endpoint(wep: WorkloadEndpoint, uid: str | None, created: tuple[int, int] | None) -> Outcome:
    try:
        normalized = normalize_workload_endpoint(wep)
    except InvalidArgument as error:
        return [(v.field, v.description) for v in error.violations]
    stamp(normalized, uid, created)
    return WORKLOAD_ENDPOINTS.encode(normalized)


def python_profile(profile: Profile, uid: str | None, created: tuple[int, int] | None) -> Outcome:
    try:
        normalized = normalize_profile(profile)
    except InvalidArgument as error:
        return [(v.field, v.description) for v in error.violations]
    stamp(normalized, uid, created)
    return PROFILES.encode(normalized)


def as_sent(outcomes: list[Outcome]) -> list[Outcome]:
    """Rust's outcomes with each violation list bounded as every status is (epsync.errors), as the
    reference's InvalidArgument bounds its own."""
    return [
        o
        if isinstance(o, bytes)
        else [(v.field, v.description) for v in InvalidArgument([FieldViolation(*p) for p in o]).violations]
        for o in outcomes
    ]


def stamp(obj: WorkloadEndpoint | Profile, uid: str | None, created: tuple[int, int] | None) -> None:
    if uid is not None:
        obj.metadata.uid = uid
    if created is not None:
        obj.metadata.creation_timestamp.CopyFrom(Timestamp(seconds=created[0], nanos=created[1]))


# ---- the tests ----


@PARITY
@given(st.lists(st.tuples(endpoints(), SERVER_METADATA), min_size=1, max_size=3))
def test_rust_validates_endpoints_as_python_does(
    batch: list[tuple[WorkloadEndpoint, tuple[str | None, tuple[int, int] | None]]],
) -> None:
    items: list[Item] = [(wep.SerializeToString(), uid, created) for wep, (uid, created) in batch]
    expected = [python_endpoint(wep, uid, created) for wep, (uid, created) in batch]
    assert as_sent(normalize_endpoints(items)) == expected


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(profiles(), SERVER_METADATA), min_size=1, max_size=4))
def test_rust_validates_profiles_as_python_does(
    batch: list[tuple[Profile, tuple[str | None, tuple[int, int] | None]]],
) -> None:
    items: list[Item] = [(profile.SerializeToString(), uid, created) for profile, (uid, created) in batch]
    expected = [python_profile(profile, uid, created) for profile, (uid, created) in batch]
    assert as_sent(normalize_profiles(items)) == expected


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(endpoints(), min_size=1, max_size=5))
def test_a_large_batch_gives_what_single_calls_give(weps: list[WorkloadEndpoint]) -> None:
    """Batches of 32 and more run without the GIL: the results are the same, in order."""
    items: list[Item] = [(wep.SerializeToString(), f"uid-{i}", (i, i)) for i, wep in enumerate(weps * 10)]
    assert len(items) >= 10
    big = normalize_endpoints(items * 4)
    assert big == [normalize_endpoints([item])[0] for item in items * 4]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_endpoints(), st.uuids().map(str), st.tuples(st.integers(0, 2**40), st.integers(0, 999_999_999)))
def test_python_bytes_pass_through_the_rust_structs_unchanged(
    wep: WorkloadEndpoint, uid: str, created: tuple[int, int]
) -> None:
    """A stored endpoint, as Python encodes it with every field it uses, is decoded and re-encoded byte for byte:
    the hand-written Rust messages match the protos, maps and empty values included."""
    stored = python_endpoint(wep, uid, created)
    assert isinstance(stored, bytes)
    assert normalize_endpoints([(stored, None, None)]) == [stored]


def test_bytes_that_do_not_decode_are_one_violation_of_the_whole_message() -> None:
    for data in (b"\xff", b"\x0a\x05\x0a\x03ab", b"\x0a\x03\x0a\x01\xff"):
        [endpoint] = normalize_endpoints([(data, None, None)])
        [profile] = normalize_profiles([(data, None, None)])
        assert isinstance(endpoint, list)
        assert isinstance(profile, list)
        [(field, description)] = endpoint
        assert field == ""
        assert description.startswith("the value is not an encoded epsync.v1.WorkloadEndpoint: ")
        assert profile[0][1].startswith("the value is not an encoded epsync.v1.Profile: ")


def test_label_keys_that_prefix_each_other_encode_in_pythons_order() -> None:
    """upb writes a map key after the keys it is a prefix of ("ab" before "a"); the Rust encoder does the same."""
    labels = dict.fromkeys(["b", "a", "abc", "ab", "a.b", "a-b", "ba"], "")
    profile = Profile(metadata=ObjectMeta(name="p", labels=labels), spec=ProfileSpec(labels_to_apply=labels))
    assert normalize_profiles([(profile.SerializeToString(), None, None)]) == [PROFILES.encode(profile)]
