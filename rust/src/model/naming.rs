//! Calico's derived WorkloadEndpoint name, as libcalico-go `names/workloadendpoint.go`
//! builds it; a port of `epsync.model.naming`.
//!
//! A WorkloadEndpoint's name encodes where it lives: `<node>-<orchestrator>-<workload
//! part>-<endpoint>`, each part with its own dashes doubled so that the single dashes
//! between parts stay unambiguous (`node1-k8s-my--nginx--b1337a-eth0`). Which spec field is
//! the workload part depends on the orchestrator.

use super::messages::WorkloadEndpointSpec;

/// One segment of a derived name: the spec field it comes from (JSON name) and its value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct NamePart<'a> {
    pub field: &'static str,
    pub value: &'a str,
}

/// The spec field that identifies the workload for this orchestrator (Calico's `getSegments`).
#[must_use]
pub fn workload_part(spec: &WorkloadEndpointSpec) -> NamePart<'_> {
    match spec.orchestrator.as_str() {
        "k8s" => NamePart {
            field: "pod",
            value: &spec.pod,
        },
        "cni" => NamePart {
            field: "containerID",
            value: &spec.container_id,
        },
        // Docker's libnetwork has no workload name: Calico repeats the orchestrator in its place.
        "libnetwork" => NamePart {
            field: "orchestrator",
            value: &spec.orchestrator,
        },
        _ => NamePart {
            field: "workload",
            value: &spec.workload,
        },
    }
}

/// The four segments the derived name is built from, in name order (values may be empty).
#[must_use]
pub fn name_parts(spec: &WorkloadEndpointSpec) -> [NamePart<'_>; 4] {
    [
        NamePart {
            field: "node",
            value: &spec.node,
        },
        NamePart {
            field: "orchestrator",
            value: &spec.orchestrator,
        },
        workload_part(spec),
        NamePart {
            field: "endpoint",
            value: &spec.endpoint,
        },
    ]
}

/// Calico's name for an endpoint with this spec, or None unless every part of the name is set.
#[must_use]
pub fn derived_name(spec: &WorkloadEndpointSpec) -> Option<String> {
    let parts = name_parts(spec);
    if parts.iter().any(|part| part.value.is_empty()) {
        return None;
    }
    let mut name = String::with_capacity(parts.iter().map(|part| part.value.len() + 1).sum());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            name.push('-');
        }
        // Double every dash so a part's dashes cannot be mistaken for the separators.
        for (j, piece) in part.value.split('-').enumerate() {
            if j > 0 {
                name.push_str("--");
            }
            name.push_str(piece);
        }
    }
    Some(name)
}

/// Whether every part of the derived name is set.
#[must_use]
pub fn is_derivable(spec: &WorkloadEndpointSpec) -> bool {
    name_parts(spec).iter().all(|part| !part.value.is_empty())
}

/// Whether `name` is the derived name of a derivable `spec`, without building it.
#[must_use]
pub fn is_derived_name(spec: &WorkloadEndpointSpec, name: &str) -> bool {
    let mut rest = name.as_bytes().iter();
    for (i, part) in name_parts(spec).iter().enumerate() {
        if i > 0 && rest.next() != Some(&b'-') {
            return false;
        }
        for &byte in part.value.as_bytes() {
            if rest.next() != Some(&byte) || (byte == b'-' && rest.next() != Some(&b'-')) {
                return false;
            }
        }
    }
    rest.next().is_none()
}

/// The spec fields the name is derived from, each once, as a phrase:
/// `spec.node, spec.orchestrator, spec.pod and spec.endpoint`.
#[must_use]
pub fn name_sources(spec: &WorkloadEndpointSpec) -> String {
    let mut fields: Vec<&str> = Vec::with_capacity(4);
    for part in name_parts(spec) {
        if !fields.contains(&part.field) {
            fields.push(part.field);
        }
    }
    let mut phrase = String::new();
    for (i, field) in fields.iter().enumerate() {
        if i + 1 == fields.len() {
            phrase.push_str(" and ");
        } else if i > 0 {
            phrase.push_str(", ");
        }
        phrase.push_str("spec.");
        phrase.push_str(field);
    }
    phrase
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(orchestrator: &str) -> WorkloadEndpointSpec {
        WorkloadEndpointSpec {
            node: "node-1".into(),
            orchestrator: orchestrator.into(),
            workload: "my-app".into(),
            pod: "my-nginx-b1337a".into(),
            container_id: "abc-123".into(),
            endpoint: "eth-0".into(),
            ..WorkloadEndpointSpec::default()
        }
    }

    #[test]
    fn dashes_inside_parts_are_doubled() {
        assert_eq!(
            derived_name(&spec("k8s")).as_deref(),
            Some("node--1-k8s-my--nginx--b1337a-eth--0")
        );
        assert_eq!(
            derived_name(&spec("cni")).as_deref(),
            Some("node--1-cni-abc--123-eth--0")
        );
        assert_eq!(
            derived_name(&spec("libnetwork")).as_deref(),
            Some("node--1-libnetwork-libnetwork-eth--0")
        );
        assert_eq!(
            derived_name(&spec("open-stack")).as_deref(),
            Some("node--1-open--stack-my--app-eth--0")
        );
        let mut leading = spec("k8s");
        leading.pod = "-a--".into();
        assert_eq!(
            derived_name(&leading).as_deref(),
            Some("node--1-k8s---a-----eth--0")
        );
    }

    #[test]
    fn a_name_is_checked_against_the_derived_name_without_building_it() {
        for orchestrator in ["k8s", "cni", "libnetwork", "open-stack"] {
            let spec = spec(orchestrator);
            let derived = derived_name(&spec).unwrap();
            assert!(is_derived_name(&spec, &derived));
            assert!(!is_derived_name(&spec, &derived[..derived.len() - 1]));
            assert!(!is_derived_name(&spec, &format!("{derived}x")));
            assert!(!is_derived_name(&spec, &derived.replacen("--", "-", 1)));
        }
    }

    #[test]
    fn no_name_unless_every_part_is_set() {
        let mut missing = spec("k8s");
        missing.pod.clear();
        assert_eq!(derived_name(&missing), None);
        assert_eq!(derived_name(&spec("")), None);
    }

    #[test]
    fn sources_name_each_field_once() {
        assert_eq!(
            name_sources(&spec("k8s")),
            "spec.node, spec.orchestrator, spec.pod and spec.endpoint"
        );
        assert_eq!(
            name_sources(&spec("libnetwork")),
            "spec.node, spec.orchestrator and spec.endpoint"
        );
        assert_eq!(
            name_sources(&spec("")),
            "spec.node, spec.orchestrator, spec.workload and spec.endpoint"
        );
    }
}
