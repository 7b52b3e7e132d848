"""The reference the Rust validator (`epsync._core.normalize_endpoints` / `normalize_profiles`) is held to.

Validation and normalisation of WorkloadEndpoints and Profiles before they are stored (SPEC §3), written
plainly in Python: the server validates in the Rust core, and tests/core/test_validation_parity.py shows
on random endpoints and profiles, good and bad, that both give the same violations and the same bytes.

Pure functions over the protobuf messages: each returns a new, normalised message or raises
`InvalidArgument` naming every bad field at once, so a client fixes its request in one round trip.
Rules follow the resource reference and Calico's own validator (libcalico-go `validator/v3`).
Field paths use the calicoctl (proto JSON) names, e.g. `spec.ports[1].port`, `metadata.labels["app"]`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping

from epsync.errors import FieldViolation, InvalidArgument, ViolationCollector
from epsync.model.kinds import DEFAULT_NAMESPACE, NAMESPACE_LABEL, ORCHESTRATOR_LABEL
from epsync.model.naming import derived_name, name_parts
from epsync.v1.profile_pb2 import Profile
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint, WorkloadEndpointSpec

__all__ = [
    "PROTOCOLS",
    "RESERVED_LABEL_PREFIXES",
    "normalize_profile",
    "normalize_workload_endpoint",
]

# Calico copies namespace and service-account labels onto endpoints under these prefixes; an endpoint that
# set them itself could match policy meant for another namespace or service account.
RESERVED_LABEL_PREFIXES = ("pcns.", "pcsa.")
# The protocols a port may name, spelled so (Calico's validator takes no other case), and their IP protocol
# numbers, which Calico's numorstring.Protocol also accepts.
PROTOCOLS = ("TCP", "UDP", "SCTP")
PROTOCOL_NUMBERS = (6, 17, 132)
PROTOCOL_RULE = "TCP, UDP or SCTP (upper case, as Calico spells them) or their protocol numbers 6, 17 or 132"
# The DSCP names Calico knows (numorstring.DSCP).
DSCP_NAMES = (
    "DF", "EF", "AF11", "AF12", "AF13", "AF21", "AF22", "AF23", "AF31", "AF32", "AF33", "AF41", "AF42", "AF43",
    "CS0", "CS1", "CS2", "CS3", "CS4", "CS5", "CS6",
)  # fmt: skip
MAX_ANNOTATIONS_BYTES = 256 * 1024

MAX_NAME_LENGTH = 253
_RESOURCE_NAME = re.compile(r"[A-Za-z0-9._-]+")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_CONTAINER_ID = re.compile(r"[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_INTERFACE_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,15}")
# What Go's net.ParseMAC accepts for 6- and 8-byte addresses: one separator used throughout (the
# back-reference), or Cisco-style dotted groups of four hex digits.
_HEX2 = "[0-9A-Fa-f]{2}"
_MAC = re.compile(
    rf"{_HEX2}([:-]){_HEX2}(\1{_HEX2}){{4}}(\1{_HEX2}\1{_HEX2})?|[0-9A-Fa-f]{{4}}(\.[0-9A-Fa-f]{{4}}){{2,3}}"
)
# IANA service names as Kubernetes checks them (IsValidPortName): length and "has a letter" are checked apart.
_PORT_NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
_PREFIX_LENGTH = re.compile(r"0|[1-9][0-9]{0,2}")

_IP = ipaddress.IPv4Address | ipaddress.IPv6Address


# The most characters of a value an error message quotes (rust/src/model/syntax.rs, MAX_QUOTED_CHARS).
_MAX_QUOTED_CHARS = 64


def _q(value: str) -> str:
    """A value quoted for an error message, with anything unprintable escaped, cut after 64 characters."""
    if len(value) > _MAX_QUOTED_CHARS:
        return json.dumps(value[:_MAX_QUOTED_CHARS], ensure_ascii=False) + f"... ({len(value)} characters)"
    return json.dumps(value, ensure_ascii=False)


def _is_dns1123_subdomain(value: str) -> bool:
    return len(value) <= MAX_NAME_LENGTH and _DNS1123_SUBDOMAIN.fullmatch(value) is not None


def _parse_ip(text: str) -> _IP | None:
    # Go's net.ParseIP (which Calico uses) has no zone suffix ("fe80::1%eth0"); Python's does.
    if "%" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _resource_name_problem(name: str) -> str | None:
    if len(name) > MAX_NAME_LENGTH:
        return f"name {_q(name)} is {len(name)} characters long; at most {MAX_NAME_LENGTH} are allowed"
    if not _RESOURCE_NAME.fullmatch(name):
        return f'name {_q(name)} may contain only letters, digits, ".", "_" and "-"'
    return None


def _label_key_problem(key: str) -> str | None:
    """Kubernetes' qualified-name rule for label keys: an optional DNS-1123 subdomain prefix, `/`, a name."""
    parts = key.split("/")
    if len(parts) > 2:
        return f'label key {_q(key)} has more than one "/"'
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix or not _is_dns1123_subdomain(prefix):
            return (
                f"label key {_q(key)} has an invalid prefix {_q(prefix)}: "
                "it must be a lowercase DNS-1123 subdomain of at most 253 characters"
            )
    name = parts[-1]
    if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        return (
            f"label key {_q(key)} has an invalid name {_q(name)}: it must be 1-63 letters, digits, "
            '"-", "_" or ".", starting and ending with a letter or digit'
        )
    return None


def _label_value_problem(value: str) -> str | None:
    if value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
        return (
            f"label value {_q(value)} is not valid: it must be empty or 1-63 letters, digits, "
            '"-", "_" or ".", starting and ending with a letter or digit'
        )
    return None


# The most labels one map may hold, and the largest encoded object (rust/src/model: MAX_LABELS,
# MAX_OBJECT_BYTES).
MAX_LABELS = 256
MAX_OBJECT_BYTES = 512 * 1024


def _too_large(kind: str, obj: WorkloadEndpoint | Profile) -> None:
    size = obj.ByteSize()
    if size > MAX_OBJECT_BYTES:
        raise InvalidArgument([FieldViolation("", f"the {kind} is {size} bytes encoded; at most {MAX_OBJECT_BYTES}")])


def _check_labels(
    labels: Mapping[str, str], path: str, violations: ViolationCollector, *, skip: tuple[str, ...] = ()
) -> None:
    if len(labels) > MAX_LABELS:
        violations.add(path, f"{len(labels)} labels; at most {MAX_LABELS}")
        return
    for key in sorted(labels):
        if key in skip:
            continue
        for problem in (_label_key_problem(key), _label_value_problem(labels[key])):
            if problem:
                violations.add(f"{path}[{_q(key)}]", problem)


def _check_annotations(annotations: Mapping[str, str], violations: ViolationCollector) -> None:
    """As Kubernetes: each key a label key once lower-cased, any value, keys and values at most 256 KiB."""
    size = sum(len(key.encode()) + len(value.encode()) for key, value in annotations.items())
    if size > MAX_ANNOTATIONS_BYTES:
        violations.add(
            "metadata.annotations",
            f"annotations are {size} bytes (keys and values together); at most {MAX_ANNOTATIONS_BYTES}",
        )
        return
    for key in sorted(annotations):
        if _label_key_problem(key.lower()):
            violations.add(
                f"metadata.annotations[{_q(key)}]",
                f"annotation key {_q(key)} is not valid: it must be a label key in any case, an optional "
                'DNS-1123 subdomain and "/", then 1-63 letters, digits, "-", "_" or ".", '
                "starting and ending with a letter or digit",
            )


def _decimal_u8(text: str) -> int | None:
    """`text` as Go's strconv.ParseUint(text, 10, 8) reads it: ASCII digits, leading zeros allowed, at most 255."""
    if not re.fullmatch(r"[0-9]+", text):
        return None
    significant = text.lstrip("0")
    if len(significant) > 3 or int(significant or "0") > 255:
        return None
    return int(significant or "0")


# --- WorkloadEndpoint -------------------------------------------------------------------------------------


def _identity_violations(spec: WorkloadEndpointSpec) -> list[FieldViolation]:
    """Problems with the fields the endpoint's name is derived from (and containerID, its cni part)."""
    found: list[FieldViolation] = []
    for field, value in (
        ("node", spec.node),
        ("orchestrator", spec.orchestrator),
        ("workload", spec.workload),
        ("pod", spec.pod),
        ("endpoint", spec.endpoint),
    ):
        if value and not _is_dns1123_subdomain(value):
            found.append(
                FieldViolation(
                    f"spec.{field}",
                    f"{field} {_q(value)} is not a valid DNS-1123 subdomain: lowercase letters, digits, "
                    '"-" and ".", each dot-separated part starting and ending with a letter or digit, '
                    "at most 253 characters",
                )
            )
    if spec.container_id and not _CONTAINER_ID.fullmatch(spec.container_id):
        found.append(
            FieldViolation(
                "spec.containerID",
                f'containerID {_q(spec.container_id)} may contain only letters, digits and "-", '
                "and must start and end with a letter or digit",
            )
        )
    return found


def _check_name(wep: WorkloadEndpoint, identity_ok: bool, violations: ViolationCollector) -> None:
    """Fill in or check the name against Calico's derived name; see `epsync.model.naming`."""
    meta, spec = wep.metadata, wep.spec
    expected = derived_name(spec)
    *others, last = dict.fromkeys(f"spec.{part.field}" for part in name_parts(spec))
    sources = f"{', '.join(others)} and {last}"
    if not meta.name:
        if expected is None:
            violations.add(
                "metadata.name",
                f"name is required unless it can be derived from {sources} (all must be set)",
            )
            return
        if not identity_ok:
            return  # the bad parts are reported already; a name built from them would only add noise
        meta.name = expected
    elif expected is not None and identity_ok and meta.name != expected:
        violations.add(
            "metadata.name",
            f"name {_q(meta.name)} does not match the name derived from {sources}: expected {_q(expected)}",
        )
        return
    problem = _resource_name_problem(meta.name)
    if problem:
        violations.add("metadata.name", problem)


def _check_endpoint_labels(wep: WorkloadEndpoint, violations: ViolationCollector) -> None:
    labels, namespace, orchestrator = wep.metadata.labels, wep.metadata.namespace, wep.spec.orchestrator
    # The server-set labels are checked against the values the server would set, not for syntax: a bad
    # namespace is reported once, on metadata.namespace.
    _check_labels(labels, "metadata.labels", violations, skip=(NAMESPACE_LABEL, ORCHESTRATOR_LABEL))
    for key in sorted(labels):
        if key.startswith(RESERVED_LABEL_PREFIXES):
            violations.add(
                f"metadata.labels[{_q(key)}]",
                f"label key {_q(key)} is refused: keys starting with "
                '"pcns." or "pcsa." carry namespace and service-account labels, which an endpoint may not set itself',
            )
    if NAMESPACE_LABEL in labels and labels[NAMESPACE_LABEL] != namespace:
        violations.add(
            f"metadata.labels[{_q(NAMESPACE_LABEL)}]",
            f"label {_q(NAMESPACE_LABEL)} is set by the server to the endpoint's namespace {_q(namespace)}; "
            f"{_q(labels[NAMESPACE_LABEL])} is not allowed",
        )
    if ORCHESTRATOR_LABEL in labels and labels[ORCHESTRATOR_LABEL] != orchestrator:
        if orchestrator:
            expected = f"to spec.orchestrator {_q(orchestrator)}"
        else:
            expected = "from spec.orchestrator, which is empty, so the label must be omitted"
        violations.add(
            f"metadata.labels[{_q(ORCHESTRATOR_LABEL)}]",
            f"label {_q(ORCHESTRATOR_LABEL)} is set by the server {expected}; "
            f"{_q(labels[ORCHESTRATOR_LABEL])} is not allowed",
        )


def _single_address(text: str) -> tuple[_IP | None, str | None]:
    """An ipNetworks entry as (address, None), or (None, why not): a bare IP or a /32 or /128 CIDR."""
    address_text, slash, length = text.partition("/")
    address = _parse_ip(address_text)
    if address is None or (slash and not _PREFIX_LENGTH.fullmatch(length)):
        return None, f"{_q(text)} is not an IP address or a single-address CIDR"
    if slash and int(length) != address.max_prefixlen:
        return None, (
            f"{_q(text)} covers more than one address: each ipNetworks entry must be a single address "
            "(/32 for IPv4, /128 for IPv6)"
        )
    return address, None


def _check_ip_networks(spec: WorkloadEndpointSpec, violations: ViolationCollector) -> set[_IP] | None:
    """Validate ipNetworks, storing each as a canonical /32 or /128; the addresses, or None if any was bad."""
    addresses: set[_IP] = set()
    all_good = True
    for i, text in enumerate(spec.ip_networks):
        address, problem = _single_address(text)
        if address is None:
            violations.add(f"spec.ipNetworks[{i}]", problem or "invalid")
            all_good = False
            continue
        spec.ip_networks[i] = f"{address}/{address.max_prefixlen}"
        addresses.add(address)
    return addresses if all_good else None


def _ip_field(text: str, path: str, what: str, violations: ViolationCollector, *, version: int = 0) -> _IP | None:
    """Parse an IP-valued field; report it unless it is an IP (of the given version, when one is given)."""
    address = _parse_ip(text)
    if address is None:
        violations.add(path, f"{what} {_q(text)} is not an IP address" if text else f"{what} is required")
    elif version and address.version != version:
        violations.add(path, f"{what} {_q(text)} is not an IPv{version} address")
        return None
    return address


def _check_addresses(spec: WorkloadEndpointSpec, violations: ViolationCollector) -> None:
    networks = _check_ip_networks(spec, violations)
    for i, nat in enumerate(spec.ip_nats):
        base = f"spec.ipNATs[{i}]"
        internal = _ip_field(nat.internal_ip, f"{base}.internalIP", "internal IP", violations)
        external = _ip_field(nat.external_ip, f"{base}.externalIP", "external IP", violations)
        if internal is not None:
            nat.internal_ip = str(internal)
            if networks is not None and internal not in networks:
                violations.add(f"{base}.internalIP", f"internal IP {internal} is not one of spec.ipNetworks")
        if external is not None:
            nat.external_ip = str(external)
            if internal is not None and external.version != internal.version:
                violations.add(
                    f"{base}.externalIP",
                    f"external IP {external} is IPv{external.version} "
                    f"but internal IP {internal} is IPv{internal.version}",
                )
    for i, text in enumerate(spec.aws_elastic_ips):
        address = _ip_field(text, f"spec.awsElasticIPs[{i}]", "AWS elastic IP", violations)
        if address is not None:
            spec.aws_elastic_ips[i] = str(address)
    if spec.ipv4_gateway:
        gateway = _ip_field(spec.ipv4_gateway, "spec.ipv4Gateway", "IPv4 gateway", violations, version=4)
        if gateway is not None:
            spec.ipv4_gateway = str(gateway)
    if spec.ipv6_gateway:
        gateway = _ip_field(spec.ipv6_gateway, "spec.ipv6Gateway", "IPv6 gateway", violations, version=6)
        if gateway is not None:
            spec.ipv6_gateway = str(gateway)


def _check_interface(spec: WorkloadEndpointSpec, violations: ViolationCollector) -> None:
    for i, profile in enumerate(spec.profiles):
        if not _is_dns1123_subdomain(profile):
            violations.add(
                f"spec.profiles[{i}]",
                f"profile {_q(profile)} is not a valid DNS-1123 subdomain: lowercase letters, digits, "
                '"-" and ".", each dot-separated part starting and ending with a letter or digit, '
                "at most 253 characters",
            )
    if not spec.interface_name:
        # Calico's validator requires it: Felix programs routes and policy on that interface.
        violations.add("spec.interfaceName", 'interface name is required: 1-15 letters, digits, "_", "." or "-"')
    elif not _INTERFACE_NAME.fullmatch(spec.interface_name):
        violations.add(
            "spec.interfaceName",
            f'interface name {_q(spec.interface_name)} must be 1-15 letters, digits, "_", "." or "-"',
        )
    if spec.mac and not _MAC.fullmatch(spec.mac):
        violations.add("spec.mac", f"{_q(spec.mac)} is not a MAC address (MAC-48, EUI-48 or EUI-64)")


def _port_name_problem(name: str) -> str | None:
    if len(name) > 15 or not _PORT_NAME.fullmatch(name) or not re.search("[a-z]", name):
        return (
            f"port name {_q(name)} is not valid: 1-15 lowercase letters, digits and single inner "
            '"-", with at least one letter'
        )
    return None


def _check_ports(spec: WorkloadEndpointSpec, violations: ViolationCollector) -> None:
    first_use: dict[str, int] = {}
    for i, port in enumerate(spec.ports):
        base = f"spec.ports[{i}]"
        if port.name:
            problem = _port_name_problem(port.name)
            if problem:
                violations.add(f"{base}.name", problem)
            elif port.name in first_use:
                violations.add(
                    f"{base}.name",
                    f"duplicate port name {_q(port.name)} (also spec.ports[{first_use[port.name]}].name)",
                )
            else:
                first_use[port.name] = i
        elif port.host_port == 0:
            # Calico allows an unnamed port only when it exists to carry a host port mapping.
            violations.add(f"{base}.name", "port name is required unless hostPort is set")
        number = _decimal_u8(port.protocol)
        if port.protocol in PROTOCOLS:
            pass
        elif number in PROTOCOL_NUMBERS:
            port.protocol = str(number)  # as Calico reads a number: leading zeros dropped
        elif port.protocol:
            violations.add(
                f"{base}.protocol", f"protocol {_q(port.protocol)} is not accepted: ports need {PROTOCOL_RULE}"
            )
        else:
            violations.add(f"{base}.protocol", f"protocol is required: {PROTOCOL_RULE}")
        if not 1 <= port.port <= 65535:
            violations.add(f"{base}.port", f"port {port.port} is out of range 1-65535")
        if port.host_port and not 1 <= port.host_port <= 65535:
            violations.add(
                f"{base}.hostPort", f"host port {port.host_port} is out of range 1-65535 (0 leaves it unset)"
            )
        if port.host_ip:
            address = _ip_field(port.host_ip, f"{base}.hostIP", "host IP", violations)
            if address is not None:
                port.host_ip = str(address)


def _check_spoofed_prefixes(spec: WorkloadEndpointSpec, violations: ViolationCollector) -> None:
    """Each a CIDR (host bits allowed) or a bare IP, stored as the network it covers."""
    for i, text in enumerate(spec.allow_spoofed_source_prefixes):
        address_text, slash, length = text.partition("/")
        address = _parse_ip(address_text)
        if address is None or (slash and (not _PREFIX_LENGTH.fullmatch(length) or int(length) > address.max_prefixlen)):
            violations.add(f"spec.allowSpoofedSourcePrefixes[{i}]", f"{_q(text)} is not an IP address or a CIDR")
            continue
        network = ipaddress.ip_network(f"{address}/{length if slash else address.max_prefixlen}", strict=False)
        spec.allow_spoofed_source_prefixes[i] = f"{network.network_address}/{network.prefixlen}"


_BANDWIDTH, _BURST, _PEAKRATE = (1_000, 10**15), (1_000, 34_359_738_360), (1_010, 1_010 * 10**12)
_MINBURST, _PACKETS, _CONNECTIONS = (1_000, 10**8), (1, 10_000), (1, 2**32 - 1)
# Each numeric QoS field (JSON name), in field-number order, with its range; 0 always means unset.
_QOS_RANGES = {
    "ingressBandwidth": _BANDWIDTH,
    "ingressBurst": _BURST,
    "ingressPeakrate": _PEAKRATE,
    "ingressMinburst": _MINBURST,
    "egressBandwidth": _BANDWIDTH,
    "egressBurst": _BURST,
    "egressPeakrate": _PEAKRATE,
    "egressMinburst": _MINBURST,
    "ingressPacketRate": _PACKETS,
    "ingressPacketBurst": _PACKETS,
    "egressPacketRate": _PACKETS,
    "egressPacketBurst": _PACKETS,
    "ingressMaxConnections": _CONNECTIONS,
    "egressMaxConnections": _CONNECTIONS,
}


def _check_qos(spec: WorkloadEndpointSpec, violations: ViolationCollector) -> None:
    qos = spec.qos_controls
    values = {field.json_name: getattr(qos, field.name) for field in qos.DESCRIPTOR.fields if field.name != "dscp"}
    for name, (low, high) in _QOS_RANGES.items():
        value = values[name]
        if value and not low <= value <= high:
            violations.add(
                f"spec.qosControls.{name}", f"{name} {value} is out of range {low}-{high} (0 leaves it unset)"
            )
    for d in ("ingress", "egress"):
        rate, burst, peakrate = values[f"{d}Bandwidth"], values[f"{d}Burst"], values[f"{d}Peakrate"]
        if burst and not rate:
            violations.add(f"spec.qosControls.{d}Burst", f"{d}Burst needs {d}Bandwidth")
        if peakrate and not rate:
            violations.add(f"spec.qosControls.{d}Peakrate", f"{d}Peakrate needs {d}Bandwidth")
        elif peakrate and peakrate <= rate:
            violations.add(
                f"spec.qosControls.{d}Peakrate", f"{d}Peakrate {peakrate} must be greater than {d}Bandwidth {rate}"
            )
        if values[f"{d}Minburst"] and not peakrate:
            violations.add(f"spec.qosControls.{d}Minburst", f"{d}Minburst needs {d}Peakrate")
        if values[f"{d}PacketBurst"] and not values[f"{d}PacketRate"]:
            violations.add(f"spec.qosControls.{d}PacketBurst", f"{d}PacketBurst needs {d}PacketRate")
    if not qos.dscp or qos.dscp in DSCP_NAMES:
        return
    number = _decimal_u8(qos.dscp)
    if number is not None and number <= 63:
        qos.dscp = str(number)
    else:
        violations.add(
            "spec.qosControls.dscp", f"dscp {_q(qos.dscp)} is not a number 0-63 or one of {', '.join(DSCP_NAMES)}"
        )


def _check_newer_fields(spec: WorkloadEndpointSpec, violations: ViolationCollector) -> None:
    """The fields Calico added to WorkloadEndpoint after the resource reference was written."""
    _check_spoofed_prefixes(spec, violations)
    if spec.service_account_name and not _is_dns1123_subdomain(spec.service_account_name):
        violations.add(
            "spec.serviceAccountName",
            f"service account name {_q(spec.service_account_name)} is not a valid DNS-1123 subdomain: lowercase "
            'letters, digits, "-" and ".", each dot-separated part starting and ending with a letter or digit, '
            "at most 253 characters",
        )
    if spec.HasField("qos_controls"):
        _check_qos(spec, violations)


def normalize_workload_endpoint(wep: WorkloadEndpoint) -> WorkloadEndpoint:
    """A validated, normalised copy of `wep`, or `InvalidArgument` listing every violation.

    Normalisation: empty namespace -> "default"; ipNetworks as canonical /32 or /128 CIDRs and other IPs in
    canonical form; numeric protocols and DSCP marks without leading zeros; allowSpoofedSourcePrefixes as the
    networks they cover; a missing name -> the derived name; the server-set labels
    `projectcalico.org/namespace` and (when spec.orchestrator is set) `projectcalico.org/orchestrator` added.
    Server-owned metadata (uid, creation_timestamp, resource_version) is left as given for the caller to judge.
    """
    _too_large("endpoint", wep)
    out = WorkloadEndpoint()
    out.CopyFrom(wep)
    meta, spec = out.metadata, out.spec
    violations = ViolationCollector()

    identity = _identity_violations(spec)
    _check_name(out, not identity, violations)
    if not meta.namespace:
        meta.namespace = DEFAULT_NAMESPACE
    elif len(meta.namespace) > 63 or not _DNS1123_LABEL.fullmatch(meta.namespace):
        violations.add(
            "metadata.namespace",
            f"namespace {_q(meta.namespace)} is not a valid DNS-1123 label: at most 63 lowercase letters, "
            'digits and "-", starting and ending with a letter or digit',
        )
    _check_endpoint_labels(out, violations)
    _check_annotations(meta.annotations, violations)
    violations.violations.extend(identity)
    _check_addresses(spec, violations)
    _check_interface(spec, violations)
    _check_ports(spec, violations)
    _check_newer_fields(spec, violations)
    violations.raise_if_any()

    meta.labels[NAMESPACE_LABEL] = meta.namespace
    if spec.orchestrator:
        meta.labels[ORCHESTRATOR_LABEL] = spec.orchestrator
    return out


# --- Profile ----------------------------------------------------------------------------------------------


def normalize_profile(profile: Profile) -> Profile:
    """A validated copy of `profile` (cluster-scoped: no namespace), or `InvalidArgument` listing every violation.

    `labelsToApply` may not carry the server-set endpoint labels: every endpoint has its own namespace label,
    and an inherited orchestrator label would let an endpoint without an orchestrator pose as orchestrated.
    """
    _too_large("profile", profile)
    out = Profile()
    out.CopyFrom(profile)
    meta = out.metadata
    violations = ViolationCollector()
    if not meta.name:
        violations.add("metadata.name", "name is required")
    elif not _is_dns1123_subdomain(meta.name):
        # Endpoints name their profiles in spec.profiles, which takes only such names (as Calico requires of
        # every profile name).
        violations.add(
            "metadata.name",
            f"name {_q(meta.name)} is not a valid DNS-1123 subdomain: lowercase letters, digits, "
            '"-" and ".", each dot-separated part starting and ending with a letter or digit, '
            "at most 253 characters, as spec.profiles requires",
        )
    if meta.namespace:
        violations.add(
            "metadata.namespace",
            f"profiles are cluster-scoped: namespace must be empty, not {_q(meta.namespace)}",
        )
    _check_labels(meta.labels, "metadata.labels", violations)
    _check_annotations(meta.annotations, violations)
    to_apply = out.spec.labels_to_apply
    _check_labels(to_apply, "spec.labelsToApply", violations)
    for key in (NAMESPACE_LABEL, ORCHESTRATOR_LABEL):
        if key in to_apply:
            violations.add(
                f"spec.labelsToApply[{_q(key)}]",
                f"label {_q(key)} is set by the server on each endpoint; a profile may not apply it",
            )
    violations.raise_if_any()
    return out
