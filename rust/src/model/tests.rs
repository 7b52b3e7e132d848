//! The validation rules, one behaviour per test; the encoding against bytes Python wrote.
//! (`tests/core/test_validation_parity.py` checks the whole against the Python reference on
//! random input.)

use prost::Message;

use super::messages::{
    Ipnat, Labels, ObjectMeta, Profile, ProfileSpec, Timestamp, WorkloadEndpoint,
    WorkloadEndpointPort, WorkloadEndpointSpec,
};
use super::stored::{Identity, Item, normalize_endpoint, normalize_profile_item};
use super::validate::{Violation, normalize_profile, normalize_workload_endpoint};

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

fn port(name: &str, protocol: &str, number: i32) -> WorkloadEndpointPort {
    WorkloadEndpointPort {
        name: name.into(),
        protocol: protocol.into(),
        port: number,
        ..WorkloadEndpointPort::default()
    }
}

/// A valid k8s endpoint, as the Calico CNI plugin writes one.
fn endpoint() -> WorkloadEndpoint {
    WorkloadEndpoint {
        metadata: Some(ObjectMeta {
            name: "node1-k8s-my--nginx--b1337a-eth0".into(),
            namespace: "prod".into(),
            labels: labels(&[("app", "nginx")]),
            ..ObjectMeta::default()
        }),
        spec: Some(WorkloadEndpointSpec {
            orchestrator: "k8s".into(),
            node: "node1".into(),
            pod: "my-nginx-b1337a".into(),
            endpoint: "eth0".into(),
            container_id: "abc123".into(),
            ip_networks: vec!["10.0.0.1/32".into()],
            profiles: vec!["kns.prod".into()],
            interface_name: "cali0ef24ba".into(),
            mac: "ca:fe:1d:52:bb:e9".into(),
            ports: vec![port("http", "TCP", 80)],
            ..WorkloadEndpointSpec::default()
        }),
    }
}

fn meta(wep: &mut WorkloadEndpoint) -> &mut ObjectMeta {
    wep.metadata.as_mut().unwrap()
}

fn spec(wep: &mut WorkloadEndpoint) -> &mut WorkloadEndpointSpec {
    wep.spec.as_mut().unwrap()
}

fn violations(mut wep: WorkloadEndpoint) -> Vec<(String, String)> {
    match normalize_workload_endpoint(&mut wep) {
        Ok(()) => Vec::new(),
        Err(found) => found
            .into_iter()
            .map(|Violation { field, description }| (field, description))
            .collect(),
    }
}

fn one_violation(wep: WorkloadEndpoint) -> (String, String) {
    let mut found = violations(wep);
    assert_eq!(found.len(), 1, "{found:#?}");
    found.remove(0)
}

fn normalized(mut wep: WorkloadEndpoint) -> WorkloadEndpoint {
    normalize_workload_endpoint(&mut wep).unwrap();
    wep
}

// ---- normalisation ----

#[test]
fn a_valid_endpoint_gets_the_server_labels() {
    let wep = normalized(endpoint());
    assert_eq!(
        wep.metadata.unwrap().labels,
        labels(&[
            ("app", "nginx"),
            ("projectcalico.org/namespace", "prod"),
            ("projectcalico.org/orchestrator", "k8s"),
        ])
    );
}

#[test]
fn an_empty_namespace_becomes_default() {
    let mut wep = endpoint();
    meta(&mut wep).namespace.clear();
    let mut wep = normalized(wep);
    assert_eq!(meta(&mut wep).namespace, "default");
    assert_eq!(
        meta(&mut wep).labels["projectcalico.org/namespace"],
        "default"
    );
}

#[test]
fn no_orchestrator_label_without_an_orchestrator() {
    let mut wep = endpoint();
    meta(&mut wep).name = "web".into();
    spec(&mut wep).orchestrator.clear();
    let mut wep = normalized(wep);
    assert!(
        !meta(&mut wep)
            .labels
            .contains_key("projectcalico.org/orchestrator")
    );
}

#[test]
fn a_missing_name_is_derived() {
    let mut wep = endpoint();
    meta(&mut wep).name.clear();
    let mut wep = normalized(wep);
    assert_eq!(meta(&mut wep).name, "node1-k8s-my--nginx--b1337a-eth0");
}

#[test]
fn addresses_are_stored_in_canonical_form() {
    let mut wep = endpoint();
    let s = spec(&mut wep);
    s.ip_networks = vec![
        "10.0.0.1".into(),
        "2001:DB8:0::1".into(),
        "::FFFF:1.2.3.4/128".into(),
    ];
    s.ip_nats = vec![Ipnat {
        internal_ip: "2001:db8:0:0::1".into(),
        external_ip: "2001:0db8::0002".into(),
    }];
    s.aws_elastic_ips = vec!["0:0::0".into()];
    s.ipv4_gateway = "10.0.0.254".into();
    s.ipv6_gateway = "FE80:0:0:0:0:0:0:1".into();
    s.ports[0].host_ip = "0::1".into();
    let mut wep = normalized(wep);
    let s = spec(&mut wep);
    assert_eq!(
        s.ip_networks,
        ["10.0.0.1/32", "2001:db8::1/128", "::ffff:102:304/128"]
    );
    assert_eq!(s.ip_nats[0].internal_ip, "2001:db8::1");
    assert_eq!(s.ip_nats[0].external_ip, "2001:db8::2");
    assert_eq!(s.aws_elastic_ips, ["::"]);
    assert_eq!(s.ipv6_gateway, "fe80::1");
    assert_eq!(s.ports[0].host_ip, "::1");
}

#[test]
fn protocol_names_stay_as_spelled_and_numbers_lose_leading_zeros() {
    let mut wep = endpoint();
    spec(&mut wep).ports = vec![
        port("a", "SCTP", 1),
        port("b", "006", 2),
        port("c", "0132", 3),
        port("d", "17", 4),
    ];
    let mut wep = normalized(wep);
    let protocols: Vec<&str> = spec(&mut wep)
        .ports
        .iter()
        .map(|port| port.protocol.as_str())
        .collect();
    assert_eq!(protocols, ["SCTP", "6", "132", "17"]);
}

#[test]
fn protocols_in_another_case_or_without_ports_are_refused() {
    // Calico's validator takes TCP, UDP and SCTP only as spelled, and numbers only of
    // protocols with ports.
    for protocol in [
        "tcp",
        "Udp",
        "\u{17f}ctp",
        "1",
        "0",
        "+6",
        "256",
        "ICMP",
        "6 ",
    ] {
        let mut wep = endpoint();
        spec(&mut wep).ports = vec![port("a", protocol, 1)];
        let (field, description) = one_violation(wep);
        assert_eq!(field, "spec.ports[0].protocol", "{protocol:?}");
        assert!(
            description.ends_with("ports need TCP, UDP or SCTP (upper case, as Calico spells them) or their protocol numbers 6, 17 or 132"),
            "{description}"
        );
    }
}

#[test]
fn an_absent_spec_lacks_the_interface_name() {
    let wep = WorkloadEndpoint {
        metadata: Some(ObjectMeta {
            name: "bare".into(),
            ..ObjectMeta::default()
        }),
        spec: None,
    };
    assert_eq!(one_violation(wep).0, "spec.interfaceName");
}

// ---- names ----

#[test]
fn a_name_must_match_the_derived_name() {
    let mut wep = endpoint();
    meta(&mut wep).name = "node1-k8s-my-nginx-b1337a-eth0".into();
    assert_eq!(
        one_violation(wep),
        (
            "metadata.name".into(),
            "name \"node1-k8s-my-nginx-b1337a-eth0\" does not match the name derived from \
             spec.node, spec.orchestrator, spec.pod and spec.endpoint: expected \
             \"node1-k8s-my--nginx--b1337a-eth0\""
                .into()
        )
    );
}

#[test]
fn a_name_is_required_unless_derivable() {
    let mut wep = endpoint();
    meta(&mut wep).name.clear();
    spec(&mut wep).orchestrator = "libnetwork".into();
    spec(&mut wep).endpoint.clear();
    assert_eq!(
        one_violation(wep),
        (
            "metadata.name".into(),
            "name is required unless it can be derived from spec.node, spec.orchestrator and \
             spec.endpoint (all must be set)"
                .into()
        )
    );
}

#[test]
fn bad_name_parts_are_reported_once_and_not_matched() {
    let mut wep = endpoint();
    meta(&mut wep).name = "whatever".into();
    spec(&mut wep).node = "Node_1".into();
    assert_eq!(
        one_violation(wep),
        (
            "spec.node".into(),
            "node \"Node_1\" is not a valid DNS-1123 subdomain: lowercase letters, digits, \"-\" \
             and \".\", each dot-separated part starting and ending with a letter or digit, at \
             most 253 characters"
                .into()
        )
    );
}

#[test]
fn name_length_is_counted_in_characters() {
    let mut wep = endpoint();
    meta(&mut wep).name = "é".repeat(254);
    spec(&mut wep).orchestrator = String::new();
    assert_eq!(
        violations(wep)[0].1,
        format!(
            "name \"{}\"... (254 characters) is 254 characters long; at most 253 are allowed",
            "é".repeat(64)
        )
    );
}

#[test]
fn name_characters() {
    let mut wep = endpoint();
    meta(&mut wep).name = "a b".into();
    spec(&mut wep).node.clear();
    assert_eq!(
        one_violation(wep).1,
        "name \"a b\" may contain only letters, digits, \".\", \"_\" and \"-\""
    );
}

// ---- labels ----

#[test]
fn label_keys_and_values_are_quoted_as_json() {
    let mut wep = endpoint();
    meta(&mut wep).labels = labels(&[("a\"b\n\u{1}", "ok"), ("good", "bad value\t")]);
    assert_eq!(
        violations(wep),
        [
            (
                r#"metadata.labels["a\"b\n\u0001"]"#.to_owned(),
                r#"label key "a\"b\n\u0001" has an invalid name "a\"b\n\u0001": it must be 1-63 letters, digits, "-", "_" or ".", starting and ending with a letter or digit"#.to_owned()
            ),
            (
                r#"metadata.labels["good"]"#.to_owned(),
                r#"label value "bad value\t" is not valid: it must be empty or 1-63 letters, digits, "-", "_" or ".", starting and ending with a letter or digit"#.to_owned()
            ),
        ]
    );
}

#[test]
fn label_key_prefixes() {
    let mut wep = endpoint();
    meta(&mut wep).labels = labels(&[
        ("a/b/c", ""),
        ("/x", ""),
        ("Example.com/x", ""),
        ("example.com/", ""),
        ("example.com/ok", ""),
    ]);
    let found: Vec<String> = violations(wep).into_iter().map(|(_, d)| d).collect();
    assert_eq!(
        found,
        [
            r#"label key "/x" has an invalid prefix "": it must be a lowercase DNS-1123 subdomain of at most 253 characters"#,
            r#"label key "Example.com/x" has an invalid prefix "Example.com": it must be a lowercase DNS-1123 subdomain of at most 253 characters"#,
            r#"label key "a/b/c" has more than one "/""#,
            r#"label key "example.com/" has an invalid name "": it must be 1-63 letters, digits, "-", "_" or ".", starting and ending with a letter or digit"#,
        ]
    );
}

#[test]
fn reserved_and_server_labels() {
    let mut wep = endpoint();
    meta(&mut wep).labels = labels(&[
        ("pcns.team", "a"),
        ("projectcalico.org/namespace", "other"),
        ("projectcalico.org/orchestrator", "cni"),
    ]);
    assert_eq!(
        violations(wep),
        [
            (
                r#"metadata.labels["pcns.team"]"#.to_owned(),
                r#"label key "pcns.team" is refused: keys starting with "pcns." or "pcsa." carry namespace and service-account labels, which an endpoint may not set itself"#.to_owned()
            ),
            (
                r#"metadata.labels["projectcalico.org/namespace"]"#.to_owned(),
                r#"label "projectcalico.org/namespace" is set by the server to the endpoint's namespace "prod"; "other" is not allowed"#.to_owned()
            ),
            (
                r#"metadata.labels["projectcalico.org/orchestrator"]"#.to_owned(),
                r#"label "projectcalico.org/orchestrator" is set by the server to spec.orchestrator "k8s"; "cni" is not allowed"#.to_owned()
            ),
        ]
    );
    let mut wep = endpoint();
    meta(&mut wep).name = "x".into();
    spec(&mut wep).orchestrator.clear();
    meta(&mut wep).labels = labels(&[("projectcalico.org/orchestrator", "k8s")]);
    assert_eq!(
        one_violation(wep).1,
        r#"label "projectcalico.org/orchestrator" is set by the server from spec.orchestrator, which is empty, so the label must be omitted; "k8s" is not allowed"#
    );
}

#[test]
fn server_labels_with_the_right_values_are_accepted() {
    let mut wep = endpoint();
    meta(&mut wep).labels = labels(&[
        ("projectcalico.org/namespace", "prod"),
        ("projectcalico.org/orchestrator", "k8s"),
    ]);
    assert_eq!(violations(wep), []);
}

// ---- addresses ----

#[test]
fn ip_networks_must_be_single_addresses() {
    let mut wep = endpoint();
    spec(&mut wep).ip_networks = vec![
        "10.0.0.0/24".into(),
        "10.0.0.1/032".into(),
        "fe80::1%eth0".into(),
        "10.0.0.1/".into(),
        "::1/128".into(),
    ];
    assert_eq!(
        violations(wep),
        [
            (
                "spec.ipNetworks[0]".to_owned(),
                r#""10.0.0.0/24" covers more than one address: each ipNetworks entry must be a single address (/32 for IPv4, /128 for IPv6)"#.to_owned()
            ),
            (
                "spec.ipNetworks[1]".to_owned(),
                r#""10.0.0.1/032" is not an IP address or a single-address CIDR"#.to_owned()
            ),
            (
                "spec.ipNetworks[2]".to_owned(),
                r#""fe80::1%eth0" is not an IP address or a single-address CIDR"#.to_owned()
            ),
            (
                "spec.ipNetworks[3]".to_owned(),
                r#""10.0.0.1/" is not an IP address or a single-address CIDR"#.to_owned()
            ),
        ]
    );
}

#[test]
fn nats_gateways_and_host_ips() {
    let mut wep = endpoint();
    let s = spec(&mut wep);
    s.ip_nats = vec![
        Ipnat {
            internal_ip: "10.0.0.2".into(),
            external_ip: "::1".into(),
        },
        Ipnat::default(),
    ];
    s.aws_elastic_ips = vec!["nope".into()];
    s.ipv4_gateway = "::1".into();
    s.ipv6_gateway = "10.0.0.1".into();
    s.ports[0].host_ip = "1.2.3".into();
    s.ports[0].host_port = 8080;
    let found = violations(wep);
    assert_eq!(
        found,
        [
            (
                "spec.ipNATs[0].internalIP".to_owned(),
                "internal IP 10.0.0.2 is not one of spec.ipNetworks".to_owned()
            ),
            (
                "spec.ipNATs[0].externalIP".to_owned(),
                "external IP ::1 is IPv6 but internal IP 10.0.0.2 is IPv4".to_owned()
            ),
            (
                "spec.ipNATs[1].internalIP".to_owned(),
                "internal IP is required".to_owned()
            ),
            (
                "spec.ipNATs[1].externalIP".to_owned(),
                "external IP is required".to_owned()
            ),
            (
                "spec.awsElasticIPs[0]".to_owned(),
                r#"AWS elastic IP "nope" is not an IP address"#.to_owned()
            ),
            (
                "spec.ipv4Gateway".to_owned(),
                r#"IPv4 gateway "::1" is not an IPv4 address"#.to_owned()
            ),
            (
                "spec.ipv6Gateway".to_owned(),
                r#"IPv6 gateway "10.0.0.1" is not an IPv6 address"#.to_owned()
            ),
            (
                "spec.ports[0].hostIP".to_owned(),
                r#"host IP "1.2.3" is not an IP address"#.to_owned()
            ),
        ]
    );
}

#[test]
fn a_bad_ip_network_skips_the_nat_membership_check() {
    let mut wep = endpoint();
    let s = spec(&mut wep);
    s.ip_networks.push("bad".into());
    s.ip_nats = vec![Ipnat {
        internal_ip: "10.9.9.9".into(),
        external_ip: "1.1.1.1".into(),
    }];
    assert_eq!(one_violation(wep).0, "spec.ipNetworks[1]");
}

// ---- interface ----

#[test]
fn profiles_interface_and_mac() {
    let mut wep = endpoint();
    let s = spec(&mut wep);
    s.profiles = vec![String::new(), "KNS".into()];
    s.interface_name = "cali0123456789abc".into();
    s.mac = "00:11:22:33:44-55".into();
    let found: Vec<String> = violations(wep).into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        found,
        [
            "spec.profiles[0]",
            "spec.profiles[1]",
            "spec.interfaceName",
            "spec.mac"
        ]
    );
    let mut wep = endpoint();
    spec(&mut wep).mac = "0011.2233.4455.66".into();
    assert_eq!(
        one_violation(wep).1,
        r#""0011.2233.4455.66" is not a MAC address (MAC-48, EUI-48 or EUI-64)"#
    );
    for good in [
        "00-11-22-33-44-55-66-77",
        "0011.2233.4455",
        "AA:bb:CC:dd:EE:ff",
    ] {
        let mut wep = endpoint();
        spec(&mut wep).mac = good.into();
        assert_eq!(violations(wep), [], "{good}");
    }
}

#[test]
fn the_interface_name_is_required() {
    let mut wep = endpoint();
    spec(&mut wep).interface_name.clear();
    assert_eq!(
        one_violation(wep),
        (
            "spec.interfaceName".to_owned(),
            r#"interface name is required: 1-15 letters, digits, "_", "." or "-""#.to_owned()
        )
    );
}

// ---- ports ----

#[test]
fn ports() {
    let mut wep = endpoint();
    spec(&mut wep).ports = vec![
        port("http", "TCP", 80),
        port("http", "TCP", 0),
        port("", "", 65536),
        WorkloadEndpointPort {
            host_port: -1,
            ..port("", "icmp", -5)
        },
        port("HTTP", "UDP", 1),
        port("metrics", "TCP", 9090),
    ];
    assert_eq!(
        violations(wep),
        [
            (
                "spec.ports[1].name".to_owned(),
                r#"duplicate port name "http" (also spec.ports[0].name)"#.to_owned()
            ),
            (
                "spec.ports[1].port".to_owned(),
                "port 0 is out of range 1-65535".to_owned()
            ),
            (
                "spec.ports[2].name".to_owned(),
                "port name is required unless hostPort is set".to_owned()
            ),
            (
                "spec.ports[2].protocol".to_owned(),
                "protocol is required: TCP, UDP or SCTP (upper case, as Calico spells them) or \
                 their protocol numbers 6, 17 or 132"
                    .to_owned()
            ),
            (
                "spec.ports[2].port".to_owned(),
                "port 65536 is out of range 1-65535".to_owned()
            ),
            (
                "spec.ports[3].protocol".to_owned(),
                "protocol \"icmp\" is not accepted: ports need TCP, UDP or SCTP (upper case, as \
                 Calico spells them) or their protocol numbers 6, 17 or 132"
                    .to_owned()
            ),
            (
                "spec.ports[3].port".to_owned(),
                "port -5 is out of range 1-65535".to_owned()
            ),
            (
                "spec.ports[3].hostPort".to_owned(),
                "host port -1 is out of range 1-65535 (0 leaves it unset)".to_owned()
            ),
            (
                "spec.ports[4].name".to_owned(),
                r#"port name "HTTP" is not valid: 1-15 lowercase letters, digits and single inner "-", with at least one letter"#.to_owned()
            ),
        ]
    );
}

// ---- order ----

#[test]
fn violations_come_in_the_reference_order() {
    let mut wep = endpoint();
    meta(&mut wep).namespace = "Prod".into();
    meta(&mut wep).labels = labels(&[("-x", "")]);
    spec(&mut wep).pod = "Pod".into();
    spec(&mut wep).ip_networks = vec!["x".into()];
    spec(&mut wep).mac = "x".into();
    spec(&mut wep).ports[0].port = 0;
    let fields: Vec<String> = violations(wep).into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        fields,
        [
            "metadata.namespace",
            r#"metadata.labels["-x"]"#,
            "spec.pod",
            "spec.ipNetworks[0]",
            "spec.mac",
            "spec.ports[0].port",
        ]
    );
}

// ---- profiles ----

fn profile(name: &str, to_apply: &[(&str, &str)]) -> Profile {
    Profile {
        metadata: Some(ObjectMeta {
            name: name.into(),
            ..ObjectMeta::default()
        }),
        spec: Some(ProfileSpec {
            labels_to_apply: labels(to_apply),
        }),
    }
}

#[test]
fn profiles_are_cluster_scoped_and_may_not_apply_server_labels() {
    assert_eq!(
        normalize_profile(&profile("kns.prod", &[("env", "prod")])),
        Ok(())
    );
    let mut bad = profile("", &[("projectcalico.org/namespace", "x"), ("a b", "")]);
    bad.metadata.as_mut().unwrap().namespace = "ns".into();
    bad.metadata.as_mut().unwrap().labels = labels(&[("ok", "-")]);
    let found: Vec<(String, String)> = normalize_profile(&bad)
        .unwrap_err()
        .into_iter()
        .map(|v| (v.field, v.description))
        .collect();
    assert_eq!(
        found,
        [
            ("metadata.name".to_owned(), "name is required".to_owned()),
            (
                "metadata.namespace".to_owned(),
                r#"profiles are cluster-scoped: namespace must be empty, not "ns""#.to_owned()
            ),
            (
                r#"metadata.labels["ok"]"#.to_owned(),
                r#"label value "-" is not valid: it must be empty or 1-63 letters, digits, "-", "_" or ".", starting and ending with a letter or digit"#.to_owned()
            ),
            (
                r#"spec.labelsToApply["a b"]"#.to_owned(),
                r#"label key "a b" has an invalid name "a b": it must be 1-63 letters, digits, "-", "_" or ".", starting and ending with a letter or digit"#.to_owned()
            ),
            (
                r#"spec.labelsToApply["projectcalico.org/namespace"]"#.to_owned(),
                r#"label "projectcalico.org/namespace" is set by the server on each endpoint; a profile may not apply it"#.to_owned()
            ),
        ]
    );
}

// ---- encoding: bytes Python (upb) wrote with SerializeToString(deterministic=True) ----

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Every field set, a label with an empty value and one with an empty key, an empty
/// repeated message, a negative port.
const PYTHON_ENDPOINT: &str = "0a2c0a016e12026e731a060a01611201781a050a016212001a050a0012016520\
072a017532080880e2cfaa06100512760a017712016f1a026e642201632a01703201653a0b31302e302e302e312f33\
323a0042130a0831302e302e302e311207312e322e332e3442004a033a3a31520267345a02673662027031620270\
326a02696672016d7a1d0a0468747470120354435018ffffffffffffffffff01208080042a01687a00";

#[test]
fn python_bytes_round_trip_through_the_structs() {
    let bytes = unhex(PYTHON_ENDPOINT);
    let wep = WorkloadEndpoint::decode(bytes.as_slice()).unwrap();
    let meta = wep.metadata.as_ref().unwrap();
    assert_eq!(meta.labels, labels(&[("", "e"), ("a", "x"), ("b", "")]));
    assert_eq!(meta.resource_version, 7);
    assert_eq!(
        meta.creation_timestamp,
        Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 5
        })
    );
    let s = wep.spec.as_ref().unwrap();
    assert_eq!(s.ports[0].port, -1);
    assert_eq!(s.ports[0].host_port, 65536);
    assert_eq!(s.ports[1], WorkloadEndpointPort::default());
    assert_eq!(wep.encode_to_vec(), bytes);

    for python in [
        "0a030a0170120f0a060a01611201620a050a016b1200",
        "0a030a01701200",
    ] {
        let bytes = unhex(python);
        let profile = Profile::decode(bytes.as_slice()).unwrap();
        assert_eq!(profile.encode_to_vec(), bytes);
    }
}

#[test]
fn map_entries_come_in_upbs_order() {
    // Python: ObjectMeta(labels={k: "v" for k in keys}).SerializeToString(deterministic=True)
    // writes "\x00", "ab", "a", "b", "z", "é", "": a key after the keys it is a prefix of.
    let meta = ObjectMeta {
        labels: labels(&[
            ("ab", "v"),
            ("a", "v"),
            ("b", "v"),
            ("", "v"),
            ("\0", "v"),
            ("é", "v"),
            ("z", "v"),
        ]),
        ..ObjectMeta::default()
    };
    let bytes = meta.encode_to_vec();
    let mut order = Vec::new();
    let mut rest = bytes.as_slice();
    while let [0x1a, len, body @ ..] = rest {
        let (entry, tail) = body.split_at(usize::from(*len));
        let key_len = usize::from(entry[1]);
        order.push(String::from_utf8(entry[2..2 + key_len].to_vec()).unwrap());
        rest = tail;
    }
    assert_eq!(order, ["\0", "ab", "a", "b", "z", "é", ""]);
    assert_eq!(ObjectMeta::decode(bytes.as_slice()).unwrap(), meta);
    assert_eq!(meta.encoded_len(), bytes.len());
}

// ---- stored bytes ----

#[test]
fn stored_bytes_carry_the_server_metadata_and_no_resource_version() {
    let mut wep = endpoint();
    meta(&mut wep).resource_version = 42;
    meta(&mut wep).uid = "client-uid".into();
    let bytes = wep.encode_to_vec();
    let timestamp = Timestamp {
        seconds: 1,
        nanos: 2,
    };
    let stored = normalize_endpoint(&Item {
        bytes: &bytes,
        identity: Identity::Given {
            uid: Some("server-uid"),
            creation_timestamp: Some(timestamp),
        },
    })
    .unwrap();
    let mut back = WorkloadEndpoint::decode(stored.as_slice()).unwrap();
    let m = meta(&mut back);
    assert_eq!(m.uid, "server-uid");
    assert_eq!(m.creation_timestamp, Some(timestamp));
    assert_eq!(m.resource_version, 0);

    let kept = normalize_endpoint(&Item {
        bytes: &bytes,
        identity: Identity::AS_SENT,
    })
    .unwrap();
    let mut back = WorkloadEndpoint::decode(kept.as_slice()).unwrap();
    assert_eq!(meta(&mut back).uid, "client-uid");
    assert_eq!(meta(&mut back).creation_timestamp, None);
}

#[test]
fn an_update_keeps_the_identity_of_what_it_replaces() {
    let timestamp = Timestamp {
        seconds: 7,
        nanos: 8,
    };
    let previous = normalize_endpoint(&Item {
        bytes: &endpoint().encode_to_vec(),
        identity: Identity::Given {
            uid: Some("first-uid"),
            creation_timestamp: Some(timestamp),
        },
    })
    .unwrap();
    let mut update = endpoint();
    meta(&mut update).uid = "client-uid".into();
    meta(&mut update).creation_timestamp = Some(Timestamp {
        seconds: 99,
        nanos: 0,
    });
    meta(&mut update)
        .labels
        .insert("new".into(), "label".into());
    let stored = normalize_endpoint(&Item {
        bytes: &update.encode_to_vec(),
        identity: Identity::KeptFrom(&previous),
    })
    .unwrap();
    let mut back = WorkloadEndpoint::decode(stored.as_slice()).unwrap();
    let m = meta(&mut back);
    assert_eq!(m.uid, "first-uid");
    assert_eq!(m.creation_timestamp, Some(timestamp));
    assert_eq!(m.labels.get("new").map(String::as_str), Some("label"));

    // Kept exactly: a stored object without a creation timestamp gives none.
    let bare = normalize_endpoint(&Item {
        bytes: &endpoint().encode_to_vec(),
        identity: Identity::AS_SENT,
    })
    .unwrap();
    let stored = normalize_endpoint(&Item {
        bytes: &update.encode_to_vec(),
        identity: Identity::KeptFrom(&bare),
    })
    .unwrap();
    let mut back = WorkloadEndpoint::decode(stored.as_slice()).unwrap();
    assert_eq!(meta(&mut back).uid, "");
    assert_eq!(meta(&mut back).creation_timestamp, None);

    // What it keeps from must decode.
    let found = normalize_endpoint(&Item {
        bytes: &update.encode_to_vec(),
        identity: Identity::KeptFrom(b"\x0a\x05\x0a\x03ab"),
    })
    .unwrap_err();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].field, "metadata");
}

#[test]
fn undecodable_bytes_are_one_violation_of_the_whole() {
    for bytes in [&b"\xff"[..], b"\x0a\x05\x0a\x03ab", b"\x0a\x03\x0a\x01\xff"] {
        let item = Item {
            bytes,
            identity: Identity::AS_SENT,
        };
        for found in [normalize_endpoint(&item), normalize_profile_item(&item)] {
            let found = found.unwrap_err();
            assert_eq!(found.len(), 1);
            assert_eq!(found[0].field, "");
            assert!(
                found[0]
                    .description
                    .starts_with("the value is not an encoded epsync.v1."),
                "{}",
                found[0].description
            );
        }
    }
}

#[test]
fn a_stored_endpoint_is_stored_unchanged() {
    let bytes = normalize_endpoint(&Item {
        bytes: &endpoint().encode_to_vec(),
        identity: Identity::Given {
            uid: Some("u"),
            creation_timestamp: None,
        },
    })
    .unwrap();
    let again = normalize_endpoint(&Item {
        bytes: &bytes,
        identity: Identity::AS_SENT,
    })
    .unwrap();
    assert_eq!(again, bytes);
}

#[test]
fn duplicate_port_names_among_many_ports() {
    // More ports than are scanned linearly: the first use is found through a map.
    let mut wep = endpoint();
    spec(&mut wep).ports = (0..40)
        .map(|i| port(&format!("p{}", i % 30), "TCP", 1000 + i))
        .collect();
    let found = violations(wep);
    assert_eq!(found.len(), 10);
    assert_eq!(
        found[0],
        (
            "spec.ports[30].name".to_owned(),
            r#"duplicate port name "p0" (also spec.ports[0].name)"#.to_owned()
        )
    );
    assert_eq!(found[9].0, "spec.ports[39].name");
}

// ---- the partial views the index decodes stored bytes with ----

#[test]
fn the_endpoint_view_reads_node_labels_and_profiles_of_python_bytes() {
    let fields = super::view::endpoint_fields(&unhex(PYTHON_ENDPOINT)).unwrap();
    assert_eq!(fields.node, "nd");
    assert_eq!(fields.labels, labels(&[("", "e"), ("a", "x"), ("b", "")]));
    assert_eq!(fields.profiles, ["p1", "p2"]);
}

#[test]
fn the_endpoint_view_agrees_with_the_full_message() {
    let wep = normalized(endpoint());
    let fields = super::view::endpoint_fields(&wep.encode_to_vec()).unwrap();
    let (meta, spec) = (wep.metadata.unwrap(), wep.spec.unwrap());
    assert_eq!(fields.node, spec.node);
    assert_eq!(fields.labels, meta.labels);
    assert_eq!(fields.profiles, spec.profiles);
}

#[test]
fn an_empty_endpoint_has_no_node_labels_or_profiles() {
    assert_eq!(
        super::view::endpoint_fields(b"").unwrap(),
        super::view::EndpointFields::default()
    );
}

#[test]
fn the_profile_view_reads_labels_to_apply_of_python_bytes() {
    let to_apply =
        super::view::profile_labels(&unhex("0a030a0170120f0a060a01611201620a050a016b1200"));
    assert_eq!(to_apply.unwrap(), labels(&[("a", "b"), ("k", "")]));
    assert_eq!(
        super::view::profile_labels(&unhex("0a030a01701200")).unwrap(),
        Labels::new()
    );
}

#[test]
fn undecodable_bytes_are_an_error_of_the_views() {
    assert!(super::view::endpoint_fields(b"\x0a\x05ab").is_err());
    assert!(super::view::profile_labels(b"\x12\x09").is_err());
}

// ---- fields of the current projectcalico.org/v3 resource ----

#[test]
fn a_profile_name_must_be_one_spec_profiles_can_name() {
    for (name, accepted) in [
        ("kns.default", true),
        ("team-a.v2", true),
        ("tHiNg", false),
        ("team_a", false),
        ("a..b", false),
    ] {
        let result = normalize_profile(&profile(name, &[]));
        assert_eq!(result.is_ok(), accepted, "{name:?}");
    }
    let found = normalize_profile(&profile("tHiNg", &[])).unwrap_err();
    assert_eq!(found[0].field, "metadata.name");
    assert!(
        found[0]
            .description
            .starts_with(r#"name "tHiNg" is not a valid DNS-1123 subdomain"#)
            && found[0]
                .description
                .ends_with(", as spec.profiles requires"),
        "{}",
        found[0].description
    );
}

#[test]
fn annotations_are_label_keys_in_any_case_within_256_kib() {
    let mut wep = endpoint();
    meta(&mut wep).annotations = labels(&[("Example.COM/Owner", "any text"), ("note", "")]);
    assert_eq!(violations(wep), []);

    let mut wep = endpoint();
    meta(&mut wep).annotations = labels(&[("a b", "x")]);
    assert_eq!(one_violation(wep).0, r#"metadata.annotations["a b"]"#);

    let mut wep = endpoint();
    let value = "v".repeat(256 * 1024);
    meta(&mut wep).annotations = labels(&[("k", &value), ("a b", "")]);
    assert_eq!(
        one_violation(wep),
        (
            "metadata.annotations".to_owned(),
            "annotations are 262148 bytes (keys and values together); at most 262144".to_owned()
        )
    );
}

#[test]
fn spoofed_source_prefixes_are_stored_as_networks() {
    let mut wep = endpoint();
    spec(&mut wep).allow_spoofed_source_prefixes = vec![
        "10.1.2.3/16".into(),
        "FD00::7/64".into(),
        "10.0.0.9".into(),
        "0.0.0.0/0".into(),
    ];
    let mut wep = normalized(wep);
    assert_eq!(
        spec(&mut wep).allow_spoofed_source_prefixes,
        ["10.1.0.0/16", "fd00::/64", "10.0.0.9/32", "0.0.0.0/0"]
    );
    for bad in ["10.0.0.0/33", "10.0.0/8", "10.0.0.0/08", "::/129", "x"] {
        let mut wep = endpoint();
        spec(&mut wep).allow_spoofed_source_prefixes = vec![bad.into()];
        assert_eq!(
            one_violation(wep).0,
            "spec.allowSpoofedSourcePrefixes[0]",
            "{bad:?}"
        );
    }
}

#[test]
fn qos_controls_follow_calicos_ranges_and_pairs() {
    use super::messages::QoSControls;
    let check = |qos: QoSControls| {
        let mut wep = endpoint();
        spec(&mut wep).qos_controls = Some(qos);
        violations(wep)
    };
    assert_eq!(
        check(QoSControls {
            ingress_bandwidth: 1_000_000,
            ingress_burst: 4_294_967_296,
            ingress_peakrate: 2_000_000,
            ingress_minburst: 1500,
            egress_packet_rate: 100,
            egress_packet_burst: 5,
            egress_max_connections: 4_294_967_295,
            dscp: "AF41".into(),
            ..QoSControls::default()
        }),
        []
    );
    assert_eq!(
        check(QoSControls {
            ingress_packet_rate: 10_001,
            ingress_burst: 1000,
            egress_bandwidth: 2000,
            egress_peakrate: 1500,
            ingress_minburst: 1000,
            dscp: "64".into(),
            ..QoSControls::default()
        }),
        [
            (
                "spec.qosControls.ingressPacketRate".to_owned(),
                "ingressPacketRate 10001 is out of range 1-10000 (0 leaves it unset)".to_owned()
            ),
            (
                "spec.qosControls.ingressBurst".to_owned(),
                "ingressBurst needs ingressBandwidth".to_owned()
            ),
            (
                "spec.qosControls.ingressMinburst".to_owned(),
                "ingressMinburst needs ingressPeakrate".to_owned()
            ),
            (
                "spec.qosControls.egressPeakrate".to_owned(),
                "egressPeakrate 1500 must be greater than egressBandwidth 2000".to_owned()
            ),
            (
                "spec.qosControls.dscp".to_owned(),
                "dscp \"64\" is not a number 0-63 or one of DF, EF, AF11, AF12, AF13, AF21, AF22, \
                 AF23, AF31, AF32, AF33, AF41, AF42, AF43, CS0, CS1, CS2, CS3, CS4, CS5, CS6"
                    .to_owned()
            ),
        ]
    );
}

#[test]
fn the_newer_fields_round_trip_through_the_structs() {
    use super::messages::QoSControls;
    let mut wep = endpoint();
    meta(&mut wep).annotations = labels(&[("ab", "1"), ("a", ""), ("b", "2")]);
    let s = spec(&mut wep);
    s.service_account_name = "default".into();
    s.allow_spoofed_source_prefixes = vec!["10.0.0.0/8".into()];
    s.qos_controls = Some(QoSControls {
        ingress_bandwidth: 1_000_000,
        dscp: "EF".into(),
        ..QoSControls::default()
    });
    let bytes = wep.encode_to_vec();
    assert_eq!(WorkloadEndpoint::decode(bytes.as_slice()).unwrap(), wep);
    let out = normalized(wep.clone());
    assert_eq!(out.spec, wep.spec);
    assert_eq!(
        out.metadata.unwrap().annotations,
        wep.metadata.unwrap().annotations
    );
}
