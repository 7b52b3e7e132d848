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
    Labels, ObjectMeta, Profile, WorkloadEndpoint, WorkloadEndpointPort, WorkloadEndpointSpec,
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
pub const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];

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
    if !spec.interface_name.is_empty() && !is_interface_name(&spec.interface_name) {
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

/// The stored spelling of a protocol when Python's `protocol.upper()` is TCP, UDP or SCTP.
fn known_protocol(protocol: &str) -> Option<&'static str> {
    if let Some(known) = PROTOCOLS.iter().find(|known| **known == protocol) {
        return Some(known);
    }
    // Full Unicode upper-casing, as Python's: "ſctp" (long s) is "SCTP" too. Every character
    // upper-cases to at least one, so a match has at most four characters of four bytes.
    if protocol.len() > 16 {
        return None;
    }
    let upper = protocol.to_uppercase();
    PROTOCOLS.iter().copied().find(|known| *known == upper)
}

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
        if let Some(known) = known_protocol(&port.protocol) {
            // Accept "tcp" as written by hand, but store one spelling, the one Calico and
            // Kubernetes use.
            if port.protocol != known {
                known.clone_into(&mut port.protocol);
            }
        } else if port.protocol.is_empty() {
            violations.add(
                format!("spec.ports[{i}].protocol"),
                "protocol is required: TCP, UDP or SCTP",
            );
        } else {
            violations.add(
                format!("spec.ports[{i}].protocol"),
                format!(
                    "protocol {} is not one of TCP, UDP, SCTP",
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

/// Validates and normalises `wep` in place (SPEC §3), or returns every violation.
///
/// Normalisation: empty namespace -> "default"; ipNetworks as canonical /32 or /128 CIDRs
/// and other IPs in canonical form; protocols upper case; a missing name -> the derived
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
    violations.0.extend(identity.0);
    check_addresses(&mut spec, &mut violations);
    check_interface(&spec, &mut violations);
    check_ports(&mut spec, &mut violations);
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
    } else if let Some(problem) = resource_name_problem(&meta.name) {
        violations.add("metadata.name", problem);
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
