//! Validation and normalisation of WorkloadEndpoints and Profiles before they are stored
//! (SPEC §3): a port of `epsync.model.validation`, which stays the reference.
//!
//! Every check, its order, its field path (`spec.ports[1].port`, `metadata.labels["app"]`)
//! and its message are the reference's, byte for byte, so a client sees the same errors
//! whichever side validated its write; a property test in `tests/core` holds the two
//! together. Each function normalises the message in place and returns every violation at
//! once; on violations the message is left half-normalised and is to be dropped.

use super::ip::{self, Ip};
use super::messages::{
    Labels, ObjectMeta, Profile, QoSControls, WorkloadEndpoint, WorkloadEndpointPort,
    WorkloadEndpointSpec,
};
use super::naming::{derived_name, is_derivable, is_derived_name, name_sources};
use super::syntax::{
    MAX_NAME_LENGTH, char_len, is_container_id, is_dns1123_label, is_dns1123_subdomain,
    is_interface_name, is_label_name, is_mac, is_port_name, is_prefix_length, is_resource_name,
    quote,
};

pub const DEFAULT_NAMESPACE: &str = "default";
/// Set by the server on every stored endpoint, as Calico does, so that policy can select on it.
pub const NAMESPACE_LABEL: &str = "projectcalico.org/namespace";
pub const ORCHESTRATOR_LABEL: &str = "projectcalico.org/orchestrator";
/// Calico copies namespace and service-account labels onto endpoints under these prefixes;
/// an endpoint that set them itself could match policy meant for another namespace or
/// service account.
pub const RESERVED_LABEL_PREFIXES: [&str; 2] = ["pcns.", "pcsa."];
/// The protocols a port may name, spelled so (Calico's validator takes no other case), and
/// their IP protocol numbers, which Calico's `numorstring.Protocol` also accepts.
pub const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];
pub const PROTOCOL_NUMBERS: [u8; 3] = [6, 17, 132];

/// One problem with one field; `field` is a path such as `spec.ports[1].port`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Violation {
    pub field: String,
    pub description: String,
}

/// Every violation of one message, in the order the reference finds them.
#[derive(Default, Debug)]
pub struct Violations(pub Vec<Violation>);

impl Violations {
    fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(Violation {
            field: field.into(),
            description: description.into(),
        });
    }

    fn into_result(self) -> Result<(), Vec<Violation>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

const SUBDOMAIN_RULE: &str = "is not a valid DNS-1123 subdomain: lowercase letters, digits, \
\"-\" and \".\", each dot-separated part starting and ending with a letter or digit, \
at most 253 characters";

const LABEL_NAME_RULE: &str = "\"-\", \"_\" or \".\", starting and ending with a letter or digit";

fn resource_name_problem(name: &str) -> Option<String> {
    // A valid name is ASCII, so its length in bytes is its length in characters.
    if name.len() <= MAX_NAME_LENGTH && is_resource_name(name) {
        return None;
    }
    let length = char_len(name);
    if length > MAX_NAME_LENGTH {
        return Some(format!(
            "name {} is {length} characters long; at most {MAX_NAME_LENGTH} are allowed",
            quote(name)
        ));
    }
    if !is_resource_name(name) {
        return Some(format!(
            "name {} may contain only letters, digits, \".\", \"_\" and \"-\"",
            quote(name)
        ));
    }
    None
}

/// Kubernetes' qualified-name rule for label keys: an optional DNS-1123 subdomain prefix,
/// `/`, a name.
fn label_key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.as_bytes().iter().position(|&byte| byte == b'/') {
        None => (None, key),
        Some(slash) if key.as_bytes()[slash + 1..].contains(&b'/') => {
            return Some(format!("label key {} has more than one \"/\"", quote(key)));
        }
        Some(slash) => (Some(&key[..slash]), &key[slash + 1..]),
    };
    if let Some(prefix) = prefix
        && (prefix.is_empty() || !is_dns1123_subdomain(prefix))
    {
        return Some(format!(
            "label key {} has an invalid prefix {}: it must be a lowercase DNS-1123 subdomain \
             of at most 253 characters",
            quote(key),
            quote(prefix)
        ));
    }
    // Matching first: a name that matches is ASCII, so bytes count its characters.
    if !(is_label_name(name) && name.len() <= 63) {
        return Some(format!(
            "label key {} has an invalid name {}: it must be 1-63 letters, digits, {LABEL_NAME_RULE}",
            quote(key),
            quote(name)
        ));
    }
    None
}

fn label_value_problem(value: &str) -> Option<String> {
    if value.is_empty() || (is_label_name(value) && value.len() <= 63) {
        return None;
    }
    Some(format!(
        "label value {} is not valid: it must be empty or 1-63 letters, digits, {LABEL_NAME_RULE}",
        quote(value)
    ))
}

/// `path["key"]`
fn label_path(path: &str, key: &str) -> String {
    format!("{path}[{}]", quote(key))
}

/// The most labels one map of an object may hold (`metadata.labels`, `spec.labelsToApply`).
/// Kubernetes bounds each key and value but not their number; every label is indexed and
/// evaluated by every selector, so the number is bounded here.
pub const MAX_LABELS: usize = 256;

fn check_labels(labels: &Labels, path: &str, violations: &mut Violations, skip: &[&str]) {
    if labels.len() > MAX_LABELS {
        // Each label is not judged: the work would grow with a map that is refused anyway.
        violations.add(
            path,
            format!("{} labels; at most {MAX_LABELS}", labels.len()),
        );
        return;
    }
    // BTreeMap order is byte order, which for UTF-8 is Python's code-point order.
    for (key, value) in labels {
        if skip.contains(&key.as_str()) {
            continue;
        }
        for problem in [label_key_problem(key), label_value_problem(value)]
            .into_iter()
            .flatten()
        {
            violations.add(label_path(path, key), problem);
        }
    }
}

/// Kubernetes' bound on an object's annotations: the bytes of every key and value together.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// Annotations as Kubernetes checks them: each key a label key once lower-cased (upper case
/// is allowed), any value, and at most [`MAX_ANNOTATIONS_BYTES`] of keys and values.
fn check_annotations(annotations: &Labels, violations: &mut Violations) {
    let size: usize = annotations
        .iter()
        .map(|(key, value)| key.len() + value.len())
        .sum();
    if size > MAX_ANNOTATIONS_BYTES {
        // As for too many labels: the keys are not judged one by one.
        violations.add(
            "metadata.annotations",
            format!(
                "annotations are {size} bytes (keys and values together); at most {MAX_ANNOTATIONS_BYTES}"
            ),
        );
        return;
    }
    for key in annotations.keys() {
        if label_key_problem(&key.to_lowercase()).is_some() {
            violations.add(
                label_path("metadata.annotations", key),
                format!(
                    "annotation key {} is not valid: it must be a label key in any case, an optional \
                     DNS-1123 subdomain and \"/\", then 1-63 letters, digits, {LABEL_NAME_RULE}",
                    quote(key)
                ),
            );
        }
    }
}

// --- WorkloadEndpoint ---------------------------------------------------------------------

/// Problems with the fields the endpoint's name is derived from (and containerID, its cni part).
fn identity_violations(spec: &WorkloadEndpointSpec) -> Violations {
    let mut found = Violations::default();
    for (field, value) in [
        ("node", &spec.node),
        ("orchestrator", &spec.orchestrator),
        ("workload", &spec.workload),
        ("pod", &spec.pod),
        ("endpoint", &spec.endpoint),
    ] {
        if !value.is_empty() && !is_dns1123_subdomain(value) {
            found.add(
                format!("spec.{field}"),
                format!("{field} {} {SUBDOMAIN_RULE}", quote(value)),
            );
        }
    }
    if !spec.container_id.is_empty() && !is_container_id(&spec.container_id) {
        found.add(
            "spec.containerID",
            format!(
                "containerID {} may contain only letters, digits and \"-\", and must start and \
                 end with a letter or digit",
                quote(&spec.container_id)
            ),
        );
    }
    found
}

/// Fills in or checks the name against Calico's derived name.
fn check_name(
    meta: &mut ObjectMeta,
    spec: &WorkloadEndpointSpec,
    identity_ok: bool,
    violations: &mut Violations,
) {
    let derivable = is_derivable(spec);
    if meta.name.is_empty() {
        let Some(expected) = derived_name(spec) else {
            violations.add(
                "metadata.name",
                format!(
                    "name is required unless it can be derived from {} (all must be set)",
                    name_sources(spec)
                ),
            );
            return;
        };
        if !identity_ok {
            // The bad parts are reported already; a name built from them would only add noise.
            return;
        }
        meta.name = expected;
    } else if derivable && identity_ok && !is_derived_name(spec, &meta.name) {
        let expected = derived_name(spec).unwrap_or_default();
        violations.add(
            "metadata.name",
            format!(
                "name {} does not match the name derived from {}: expected {}",
                quote(&meta.name),
                name_sources(spec),
                quote(&expected)
            ),
        );
        return;
    }
    if let Some(problem) = resource_name_problem(&meta.name) {
        violations.add("metadata.name", problem);
    }
}

fn check_endpoint_labels(meta: &ObjectMeta, orchestrator: &str, violations: &mut Violations) {
    let labels = &meta.labels;
    let namespace = &meta.namespace;
    // The server-set labels are checked against the values the server would set, not for
    // syntax: a bad namespace is reported once, on metadata.namespace.
    check_labels(
        labels,
        "metadata.labels",
        violations,
        &[NAMESPACE_LABEL, ORCHESTRATOR_LABEL],
    );
    for key in labels.keys() {
        if RESERVED_LABEL_PREFIXES
            .iter()
            .any(|prefix| key.starts_with(prefix))
        {
            violations.add(
                label_path("metadata.labels", key),
                format!(
                    "label key {} is refused: keys starting with \"pcns.\" or \"pcsa.\" carry \
                     namespace and service-account labels, which an endpoint may not set itself",
                    quote(key)
                ),
            );
        }
    }
    if let Some(value) = labels.get(NAMESPACE_LABEL)
        && value != namespace
    {
        violations.add(
            label_path("metadata.labels", NAMESPACE_LABEL),
            format!(
                "label {} is set by the server to the endpoint's namespace {}; {} is not allowed",
                quote(NAMESPACE_LABEL),
                quote(namespace),
                quote(value)
            ),
        );
    }
    if let Some(value) = labels.get(ORCHESTRATOR_LABEL)
        && value != orchestrator
    {
        let expected = if orchestrator.is_empty() {
            "from spec.orchestrator, which is empty, so the label must be omitted".to_owned()
        } else {
            format!("to spec.orchestrator {}", quote(orchestrator))
        };
        violations.add(
            label_path("metadata.labels", ORCHESTRATOR_LABEL),
            format!(
                "label {} is set by the server {expected}; {} is not allowed",
                quote(ORCHESTRATOR_LABEL),
                quote(value)
            ),
        );
    }
}

/// An ipNetworks entry as an address, or why not: a bare IP or a /32 or /128 CIDR.
fn single_address(text: &str) -> Result<Ip, String> {
    let (address_text, length) = match text.as_bytes().iter().position(|&byte| byte == b'/') {
        Some(slash) => (&text[..slash], Some(&text[slash + 1..])),
        None => (text, None),
    };
    let address = ip::parse(address_text);
    let Some(address) = address.filter(|_| length.is_none_or(is_prefix_length)) else {
        return Err(format!(
            "{} is not an IP address or a single-address CIDR",
            quote(text)
        ));
    };
    if let Some(length) = length
        && length.parse::<u16>().ok() != Some(u16::from(address.max_prefix_len()))
    {
        return Err(format!(
            "{} covers more than one address: each ipNetworks entry must be a single address \
             (/32 for IPv4, /128 for IPv6)",
            quote(text)
        ));
    }
    Ok(address)
}

/// Replaces `slot` with `text` unless it already says that (the common case: clients send
/// canonical addresses), so that nothing is allocated then.
fn set_text(slot: &mut String, text: &str) {
    if slot != text {
        slot.clear();
        slot.push_str(text);
    }
}

/// Validates ipNetworks, storing each as a canonical /32 or /128; the addresses, sorted, or
/// None if any was bad.
fn check_ip_networks(
    spec: &mut WorkloadEndpointSpec,
    violations: &mut Violations,
) -> Option<Vec<Ip>> {
    // Only the NATs' internal IPs are looked up in them: no NATs, no list.
    let keep = !spec.ip_nats.is_empty();
    let mut addresses = Vec::new();
    let mut all_good = true;
    for (i, text) in spec.ip_networks.iter_mut().enumerate() {
        match single_address(text) {
            Ok(address) => {
                set_text(text, address.cidr_text().as_str());
                if keep {
                    addresses.push(address);
                }
            }
            Err(problem) => {
                violations.add(format!("spec.ipNetworks[{i}]"), problem);
                all_good = false;
            }
        }
    }
    addresses.sort_unstable();
    all_good.then_some(addresses)
}

/// Parses an IP-valued field; reports it unless it is an IP (of `version`, when given).
fn ip_field(
    text: &str,
    path: impl FnOnce() -> String,
    what: &str,
    violations: &mut Violations,
    version: Option<u8>,
) -> Option<Ip> {
    let Some(address) = ip::parse(text) else {
        let problem = if text.is_empty() {
            format!("{what} is required")
        } else {
            format!("{what} {} is not an IP address", quote(text))
        };
        violations.add(path(), problem);
        return None;
    };
    if let Some(version) = version
        && address.version() != version
    {
        violations.add(
            path(),
            format!("{what} {} is not an IPv{version} address", quote(text)),
        );
        return None;
    }
    Some(address)
}

fn check_addresses(spec: &mut WorkloadEndpointSpec, violations: &mut Violations) {
    let networks = check_ip_networks(spec, violations);
    for (i, nat) in spec.ip_nats.iter_mut().enumerate() {
        let internal_path = || format!("spec.ipNATs[{i}].internalIP");
        let external_path = || format!("spec.ipNATs[{i}].externalIP");
        let internal = ip_field(
            &nat.internal_ip,
            internal_path,
            "internal IP",
            violations,
            None,
        );
        let external = ip_field(
            &nat.external_ip,
            external_path,
            "external IP",
            violations,
            None,
        );
        if let Some(internal) = internal {
            set_text(&mut nat.internal_ip, internal.text().as_str());
            if let Some(networks) = &networks
                && networks.binary_search(&internal).is_err()
            {
                violations.add(
                    internal_path(),
                    format!("internal IP {internal} is not one of spec.ipNetworks"),
                );
            }
        }
        if let Some(external) = external {
            set_text(&mut nat.external_ip, external.text().as_str());
            if let Some(internal) = internal
                && external.version() != internal.version()
            {
                violations.add(
                    external_path(),
                    format!(
                        "external IP {external} is IPv{} but internal IP {internal} is IPv{}",
                        external.version(),
                        internal.version()
                    ),
                );
            }
        }
    }
    for (i, text) in spec.aws_elastic_ips.iter_mut().enumerate() {
        let path = || format!("spec.awsElasticIPs[{i}]");
        if let Some(address) = ip_field(text, path, "AWS elastic IP", violations, None) {
            set_text(text, address.text().as_str());
        }
    }
    for (gateway, field, what, version) in [
        (
            &mut spec.ipv4_gateway,
            "spec.ipv4Gateway",
            "IPv4 gateway",
            4,
        ),
        (
            &mut spec.ipv6_gateway,
            "spec.ipv6Gateway",
            "IPv6 gateway",
            6,
        ),
    ] {
        if gateway.is_empty() {
            continue;
        }
        let path = || field.to_owned();
        if let Some(address) = ip_field(gateway.as_str(), path, what, violations, Some(version)) {
            set_text(gateway, address.text().as_str());
        }
    }
}

fn check_interface(spec: &WorkloadEndpointSpec, violations: &mut Violations) {
    for (i, profile) in spec.profiles.iter().enumerate() {
        if !is_dns1123_subdomain(profile) {
            violations.add(
                format!("spec.profiles[{i}]"),
                format!("profile {} {SUBDOMAIN_RULE}", quote(profile)),
            );
        }
    }
    if spec.interface_name.is_empty() {
        // Calico's validator requires it: Felix programs routes and policy on that interface.
        violations.add(
            "spec.interfaceName",
            "interface name is required: 1-15 letters, digits, \"_\", \".\" or \"-\"",
        );
    } else if !is_interface_name(&spec.interface_name) {
        violations.add(
            "spec.interfaceName",
            format!(
                "interface name {} must be 1-15 letters, digits, \"_\", \".\" or \"-\"",
                quote(&spec.interface_name)
            ),
        );
    }
    if !spec.mac.is_empty() && !is_mac(&spec.mac) {
        violations.add(
            "spec.mac",
            format!(
                "{} is not a MAC address (MAC-48, EUI-48 or EUI-64)",
                quote(&spec.mac)
            ),
        );
    }
}

/// The stored form of a port's protocol, or None when Calico would refuse it: TCP, UDP or
/// SCTP exactly as spelled, or their numbers in decimal (leading zeros dropped, as Calico
/// reads a number).
fn port_protocol(protocol: &str) -> Option<String> {
    if PROTOCOLS.contains(&protocol) {
        return Some(protocol.to_owned());
    }
    decimal_u8(protocol)
        .filter(|number| PROTOCOL_NUMBERS.contains(number))
        .map(|number| number.to_string())
}

/// `text` as Go's `strconv.ParseUint(text, 10, 8)` reads it: ASCII digits only, any number
/// of leading zeros, at most 255.
fn decimal_u8(text: &str) -> Option<u8> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let significant = text.trim_start_matches('0');
    if significant.len() > 3 {
        return None;
    }
    // All zeros leaves nothing: the number 0.
    significant
        .parse::<u8>()
        .ok()
        .or((significant.is_empty()).then_some(0))
}

const PROTOCOL_RULE: &str = "TCP, UDP or SCTP (upper case, as Calico spells them) or their \
protocol numbers 6, 17 or 132";

/// What is wrong with a port's name, if anything.
enum PortName {
    Fine,
    Missing,
    Invalid,
    /// The same as an earlier port's, at this index.
    Duplicate(usize),
}

/// Beyond this many ports, duplicate names are found with a map rather than by scanning the
/// earlier ports.
const PORTS_SCANNED: usize = 32;

/// Port `earlier.len()`'s name, given the ports before it; `seen` holds the first index of
/// each valid name when there are more than [`PORTS_SCANNED`] ports.
fn port_name(
    earlier: &[WorkloadEndpointPort],
    port: &WorkloadEndpointPort,
    seen: Option<&mut foldhash::HashMap<String, usize>>,
) -> PortName {
    if port.name.is_empty() {
        // Calico allows an unnamed port only when it exists to carry a host port mapping.
        return if port.host_port == 0 {
            PortName::Missing
        } else {
            PortName::Fine
        };
    }
    if !is_port_name(&port.name) {
        return PortName::Invalid;
    }
    // An earlier port with the same name has a valid name too, so the first of them is
    // where the name was first used.
    let first = match seen {
        Some(seen) => *seen.entry(port.name.clone()).or_insert(earlier.len()),
        None => earlier
            .iter()
            .position(|other| other.name == port.name)
            .unwrap_or(earlier.len()),
    };
    if first < earlier.len() {
        PortName::Duplicate(first)
    } else {
        PortName::Fine
    }
}

fn check_ports(spec: &mut WorkloadEndpointSpec, violations: &mut Violations) {
    let mut seen = (spec.ports.len() > PORTS_SCANNED).then(foldhash::HashMap::default);
    for i in 0..spec.ports.len() {
        let (earlier, rest) = spec.ports.split_at_mut(i);
        let port = &mut rest[0];
        let name = port_name(earlier, port, seen.as_mut());
        match name {
            PortName::Fine => {}
            PortName::Missing => violations.add(
                format!("spec.ports[{i}].name"),
                "port name is required unless hostPort is set",
            ),
            PortName::Invalid => violations.add(
                format!("spec.ports[{i}].name"),
                format!(
                    "port name {} is not valid: 1-15 lowercase letters, digits and single inner \
                     \"-\", with at least one letter",
                    quote(&port.name)
                ),
            ),
            PortName::Duplicate(first) => violations.add(
                format!("spec.ports[{i}].name"),
                format!(
                    "duplicate port name {} (also spec.ports[{first}].name)",
                    quote(&port.name)
                ),
            ),
        }
        if let Some(stored) = port_protocol(&port.protocol) {
            set_text(&mut port.protocol, &stored);
        } else if port.protocol.is_empty() {
            violations.add(
                format!("spec.ports[{i}].protocol"),
                format!("protocol is required: {PROTOCOL_RULE}"),
            );
        } else {
            violations.add(
                format!("spec.ports[{i}].protocol"),
                format!(
                    "protocol {} is not accepted: ports need {PROTOCOL_RULE}",
                    quote(&port.protocol)
                ),
            );
        }
        if !(1..=65535).contains(&port.port) {
            violations.add(
                format!("spec.ports[{i}].port"),
                format!("port {} is out of range 1-65535", port.port),
            );
        }
        if port.host_port != 0 && !(1..=65535).contains(&port.host_port) {
            violations.add(
                format!("spec.ports[{i}].hostPort"),
                format!(
                    "host port {} is out of range 1-65535 (0 leaves it unset)",
                    port.host_port
                ),
            );
        }
        if !port.host_ip.is_empty() {
            let path = || format!("spec.ports[{i}].hostIP");
            if let Some(address) = ip_field(&port.host_ip, path, "host IP", violations, None) {
                set_text(&mut port.host_ip, address.text().as_str());
            }
        }
    }
}

/// allowSpoofedSourcePrefixes: each a CIDR (host bits allowed) or a bare IP, stored as the
/// network it covers.
fn check_spoofed_prefixes(spec: &mut WorkloadEndpointSpec, violations: &mut Violations) {
    for (i, text) in spec.allow_spoofed_source_prefixes.iter_mut().enumerate() {
        let (address_text, length) = match text.as_bytes().iter().position(|&byte| byte == b'/') {
            Some(slash) => (&text[..slash], Some(&text[slash + 1..])),
            None => (text.as_str(), None),
        };
        let network = ip::parse(address_text).and_then(|address| {
            let length = match length {
                None => address.max_prefix_len(),
                Some(length) if is_prefix_length(length) => length.parse::<u8>().ok()?,
                Some(_) => return None,
            };
            (length <= address.max_prefix_len()).then(|| (address.network(length), length))
        });
        match network {
            Some((network, length)) => {
                let stored = format!("{network}/{length}");
                set_text(text, &stored);
            }
            None => violations.add(
                format!("spec.allowSpoofedSourcePrefixes[{i}]"),
                format!("{} is not an IP address or a CIDR", quote(text)),
            ),
        }
    }
}

/// Each numeric `qosControls` field: its JSON name, value and accepted range (0 always
/// means unset).
fn qos_fields(qos: &QoSControls) -> [(&'static str, i64, i64, i64); 14] {
    const BANDWIDTH: (i64, i64) = (1_000, 1_000_000_000_000_000);
    const BURST: (i64, i64) = (1_000, 34_359_738_360);
    const PEAKRATE: (i64, i64) = (1_010, 1_010_000_000_000_000);
    const MINBURST: (i64, i64) = (1_000, 100_000_000);
    const PACKETS: (i64, i64) = (1, 10_000);
    const CONNECTIONS: (i64, i64) = (1, 4_294_967_295);
    [
        (
            "ingressBandwidth",
            qos.ingress_bandwidth,
            BANDWIDTH.0,
            BANDWIDTH.1,
        ),
        ("ingressBurst", qos.ingress_burst, BURST.0, BURST.1),
        (
            "ingressPeakrate",
            qos.ingress_peakrate,
            PEAKRATE.0,
            PEAKRATE.1,
        ),
        (
            "ingressMinburst",
            qos.ingress_minburst,
            MINBURST.0,
            MINBURST.1,
        ),
        (
            "egressBandwidth",
            qos.egress_bandwidth,
            BANDWIDTH.0,
            BANDWIDTH.1,
        ),
        ("egressBurst", qos.egress_burst, BURST.0, BURST.1),
        (
            "egressPeakrate",
            qos.egress_peakrate,
            PEAKRATE.0,
            PEAKRATE.1,
        ),
        (
            "egressMinburst",
            qos.egress_minburst,
            MINBURST.0,
            MINBURST.1,
        ),
        (
            "ingressPacketRate",
            qos.ingress_packet_rate,
            PACKETS.0,
            PACKETS.1,
        ),
        (
            "ingressPacketBurst",
            qos.ingress_packet_burst,
            PACKETS.0,
            PACKETS.1,
        ),
        (
            "egressPacketRate",
            qos.egress_packet_rate,
            PACKETS.0,
            PACKETS.1,
        ),
        (
            "egressPacketBurst",
            qos.egress_packet_burst,
            PACKETS.0,
            PACKETS.1,
        ),
        (
            "ingressMaxConnections",
            qos.ingress_max_connections,
            CONNECTIONS.0,
            CONNECTIONS.1,
        ),
        (
            "egressMaxConnections",
            qos.egress_max_connections,
            CONNECTIONS.0,
            CONNECTIONS.1,
        ),
    ]
}

/// The DSCP names Calico knows (`numorstring.DSCP`).
pub const DSCP_NAMES: [&str; 21] = [
    "DF", "EF", "AF11", "AF12", "AF13", "AF21", "AF22", "AF23", "AF31", "AF32", "AF33", "AF41",
    "AF42", "AF43", "CS0", "CS1", "CS2", "CS3", "CS4", "CS5", "CS6",
];

/// qosControls: each number 0 or in its range, the pairs Calico ties together (a burst
/// needs its rate, a peak rate exceeds its rate, a minimum burst needs its peak rate), and
/// the DSCP mark a number 0-63 (stored without leading zeros) or one of Calico's names.
fn check_qos(qos: &mut QoSControls, violations: &mut Violations) {
    for (field, value, low, high) in qos_fields(qos) {
        if value != 0 && !(low..=high).contains(&value) {
            violations.add(
                format!("spec.qosControls.{field}"),
                format!("{field} {value} is out of range {low}-{high} (0 leaves it unset)"),
            );
        }
    }
    for (direction, rate, burst, peakrate, minburst, packet_rate, packet_burst) in [
        (
            "ingress",
            qos.ingress_bandwidth,
            qos.ingress_burst,
            qos.ingress_peakrate,
            qos.ingress_minburst,
            qos.ingress_packet_rate,
            qos.ingress_packet_burst,
        ),
        (
            "egress",
            qos.egress_bandwidth,
            qos.egress_burst,
            qos.egress_peakrate,
            qos.egress_minburst,
            qos.egress_packet_rate,
            qos.egress_packet_burst,
        ),
    ] {
        let path = |field: &str| format!("spec.qosControls.{direction}{field}");
        if burst != 0 && rate == 0 {
            violations.add(
                path("Burst"),
                format!("{direction}Burst needs {direction}Bandwidth"),
            );
        }
        if peakrate != 0 && rate == 0 {
            violations.add(
                path("Peakrate"),
                format!("{direction}Peakrate needs {direction}Bandwidth"),
            );
        } else if peakrate != 0 && peakrate <= rate {
            violations.add(
                path("Peakrate"),
                format!(
                    "{direction}Peakrate {peakrate} must be greater than {direction}Bandwidth {rate}"
                ),
            );
        }
        if minburst != 0 && peakrate == 0 {
            violations.add(
                path("Minburst"),
                format!("{direction}Minburst needs {direction}Peakrate"),
            );
        }
        if packet_burst != 0 && packet_rate == 0 {
            violations.add(
                path("PacketBurst"),
                format!("{direction}PacketBurst needs {direction}PacketRate"),
            );
        }
    }
    if qos.dscp.is_empty() || DSCP_NAMES.contains(&qos.dscp.as_str()) {
        return;
    }
    match decimal_u8(&qos.dscp).filter(|number| *number <= 63) {
        Some(number) => {
            let stored = number.to_string();
            set_text(&mut qos.dscp, &stored);
        }
        None => violations.add(
            "spec.qosControls.dscp",
            format!(
                "dscp {} is not a number 0-63 or one of {}",
                quote(&qos.dscp),
                DSCP_NAMES.join(", ")
            ),
        ),
    }
}

/// The fields Calico added to WorkloadEndpoint after the resource reference was written.
fn check_newer_fields(spec: &mut WorkloadEndpointSpec, violations: &mut Violations) {
    check_spoofed_prefixes(spec, violations);
    if !spec.service_account_name.is_empty() && !is_dns1123_subdomain(&spec.service_account_name) {
        violations.add(
            "spec.serviceAccountName",
            format!(
                "service account name {} {SUBDOMAIN_RULE}",
                quote(&spec.service_account_name)
            ),
        );
    }
    if let Some(qos) = &mut spec.qos_controls {
        check_qos(qos, violations);
    }
}

/// Validates and normalises `wep` in place (SPEC §3), or returns every violation.
///
/// Normalisation: empty namespace -> "default"; ipNetworks as canonical /32 or /128 CIDRs
/// and other IPs in canonical form; numeric protocols and DSCP marks without leading zeros;
/// allowSpoofedSourcePrefixes as the networks they cover; a missing name -> the derived
/// name; the server-set labels `projectcalico.org/namespace` and (when spec.orchestrator is
/// set) `projectcalico.org/orchestrator` added. Server-owned metadata (uid,
/// `creation_timestamp`, `resource_version`) is left as given for the caller to judge. An
/// absent spec stays absent; metadata is always present afterwards.
///
/// # Errors
///
/// The violations, in the reference's order, when there is any.
pub fn normalize_workload_endpoint(wep: &mut WorkloadEndpoint) -> Result<(), Vec<Violation>> {
    let had_spec = wep.spec.is_some();
    let mut spec = wep.spec.take().unwrap_or_default();
    let meta = wep.metadata.get_or_insert_default();
    let mut violations = Violations::default();

    let identity = identity_violations(&spec);
    check_name(meta, &spec, identity.0.is_empty(), &mut violations);
    if meta.namespace.is_empty() {
        DEFAULT_NAMESPACE.clone_into(&mut meta.namespace);
    } else if !is_dns1123_label(&meta.namespace) {
        violations.add(
            "metadata.namespace",
            format!(
                "namespace {} is not a valid DNS-1123 label: at most 63 lowercase letters, \
                 digits and \"-\", starting and ending with a letter or digit",
                quote(&meta.namespace)
            ),
        );
    }
    check_endpoint_labels(meta, &spec.orchestrator, &mut violations);
    check_annotations(&meta.annotations, &mut violations);
    violations.0.extend(identity.0);
    check_addresses(&mut spec, &mut violations);
    check_interface(&spec, &mut violations);
    check_ports(&mut spec, &mut violations);
    check_newer_fields(&mut spec, &mut violations);
    violations.into_result()?;

    if meta.labels.get(NAMESPACE_LABEL) != Some(&meta.namespace) {
        meta.labels
            .insert(NAMESPACE_LABEL.to_owned(), meta.namespace.clone());
    }
    if !spec.orchestrator.is_empty()
        && meta.labels.get(ORCHESTRATOR_LABEL) != Some(&spec.orchestrator)
    {
        meta.labels
            .insert(ORCHESTRATOR_LABEL.to_owned(), spec.orchestrator.clone());
    }
    if had_spec {
        wep.spec = Some(spec);
    }
    Ok(())
}

// --- Profile ------------------------------------------------------------------------------

/// Validates `profile` (cluster-scoped: no namespace), or returns every violation; nothing
/// is normalised.
///
/// `labelsToApply` may not carry the server-set endpoint labels: every endpoint has its own
/// namespace label, and an inherited orchestrator label would let an endpoint without an
/// orchestrator pose as orchestrated.
///
/// # Errors
///
/// The violations, in the reference's order, when there is any.
pub fn normalize_profile(profile: &Profile) -> Result<(), Vec<Violation>> {
    let empty_meta = ObjectMeta::default();
    let meta = profile.metadata.as_ref().unwrap_or(&empty_meta);
    let mut violations = Violations::default();
    if meta.name.is_empty() {
        violations.add("metadata.name", "name is required");
    } else if !is_dns1123_subdomain(&meta.name) {
        // Endpoints name their profiles in spec.profiles, which takes only such names (as
        // Calico requires of every profile name).
        violations.add(
            "metadata.name",
            format!(
                "name {} {SUBDOMAIN_RULE}, as spec.profiles requires",
                quote(&meta.name)
            ),
        );
    }
    if !meta.namespace.is_empty() {
        violations.add(
            "metadata.namespace",
            format!(
                "profiles are cluster-scoped: namespace must be empty, not {}",
                quote(&meta.namespace)
            ),
        );
    }
    check_labels(&meta.labels, "metadata.labels", &mut violations, &[]);
    check_annotations(&meta.annotations, &mut violations);
    let empty_labels = Labels::new();
    let to_apply = profile
        .spec
        .as_ref()
        .map_or(&empty_labels, |spec| &spec.labels_to_apply);
    check_labels(to_apply, "spec.labelsToApply", &mut violations, &[]);
    for key in [NAMESPACE_LABEL, ORCHESTRATOR_LABEL] {
        if to_apply.contains_key(key) {
            violations.add(
                label_path("spec.labelsToApply", key),
                format!(
                    "label {} is set by the server on each endpoint; a profile may not apply it",
                    quote(key)
                ),
            );
        }
    }
    violations.into_result()
}
