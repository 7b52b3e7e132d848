//! Stored changes in, encoded events out: which state each event carries, the same-batch
//! and profile cases, and errors. (`tests/core/test_stored_apply.py` checks the whole
//! against the Python encoding on random batches.)

use prost::Message;

use super::*;
use crate::index::Filter;
use crate::model::messages::{
    ObjectMeta, Profile, ProfileSpec, WorkloadEndpoint, WorkloadEndpointSpec,
};

fn endpoint(name: &str, node: &str, labels: &[(&str, &str)], profiles: &[&str]) -> Vec<u8> {
    WorkloadEndpoint {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "ns".into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..ObjectMeta::default()
        }),
        spec: Some(WorkloadEndpointSpec {
            node: node.into(),
            profiles: profiles.iter().map(|p| (*p).to_owned()).collect(),
            ..WorkloadEndpointSpec::default()
        }),
    }
    .encode_to_vec()
}

fn profile(name: &str, labels: &[(&str, &str)]) -> Vec<u8> {
    Profile {
        metadata: Some(ObjectMeta {
            name: name.into(),
            ..ObjectMeta::default()
        }),
        spec: Some(ProfileSpec {
            labels_to_apply: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }),
    }
    .encode_to_vec()
}

fn change<'a>(
    revision: u64,
    name: &'a str,
    value: Option<&'a [u8]>,
    previous: Option<(&'a [u8], u64)>,
) -> StoredEndpointChange<'a> {
    StoredEndpointChange {
        revision,
        namespace: "ns",
        name,
        value,
        previous: previous.map(|(stored, _)| stored),
        previous_version: previous.map_or(0, |(_, version)| version),
    }
}

fn nothing(_: &str, _: &str) -> Option<(&'static [u8], u64)> {
    None
}

/// A group's events as `(revision, entries)` chunks.
type Chunks = Vec<(u64, Vec<Vec<u8>>)>;

/// Each group's events as `(revision, entries)` chunks.
fn chunks(encoded: &EncodedPlan) -> Vec<(GroupId, Chunks)> {
    encoded
        .chunks()
        .map(|(group, chunks)| {
            let chunks = chunks
                .into_iter()
                .map(|(revision, indices)| {
                    let entries = indices
                        .iter()
                        .map(|&i| encoded.entries[i as usize].clone())
                        .collect();
                    (revision, entries)
                })
                .collect();
            (group, chunks)
        })
        .collect()
}

use crate::index::GroupId;
use crate::selector::Selector;

const ADDED: u8 = 1;
const MODIFIED: u8 = 2;
const DELETED: u8 = 3;

#[test]
fn a_create_update_and_delete_in_one_batch_carry_each_state() {
    let mut index = EndpointIndex::new();
    let all = index.add_group("", "", None);
    let (v1, v2) = (
        endpoint("a", "n1", &[], &[]),
        endpoint("a", "n1", &[("x", "1")], &[]),
    );
    let changes = [
        change(1, "a", Some(&v1), None),
        change(2, "a", Some(&v2), Some((&v1, 1))),
        change(3, "a", None, Some((&v2, 2))),
    ];
    let encoded = index.apply_stored(&changes, &[], nothing).unwrap();
    assert_eq!(
        chunks(&encoded),
        [(
            all,
            vec![
                (1, vec![wire::event_entry(ADDED, &v1, 1, 1)]),
                (2, vec![wire::event_entry(MODIFIED, &v2, 2, 2)]),
                // The last state that matched, stamped with the deleting revision.
                (3, vec![wire::event_entry(DELETED, &v2, 3, 3)]),
            ]
        )]
    );
    assert!(index.is_empty());
}

#[test]
fn a_moved_endpoint_leaves_one_node_and_joins_the_other() {
    let mut index = EndpointIndex::new();
    let old = endpoint("a", "n1", &[], &[]);
    index
        .load_stored(
            &[StoredEndpoint {
                namespace: "ns",
                name: "a",
                resource_version: 4,
                stored: &old,
            }],
            &[],
        )
        .unwrap();
    let (n1, n2) = (
        index.add_group("", "n1", None),
        index.add_group("", "n2", None),
    );
    let new = endpoint("a", "n2", &[], &[]);
    let encoded = index
        .apply_stored(&[change(9, "a", Some(&new), Some((&old, 4)))], &[], nothing)
        .unwrap();
    assert_eq!(
        chunks(&encoded),
        [
            (n1, vec![(9, vec![wire::event_entry(DELETED, &old, 9, 9)])]),
            (n2, vec![(9, vec![wire::event_entry(ADDED, &new, 9, 9)])]),
        ]
    );
}

#[test]
fn a_profile_change_moves_unchanged_endpoints_with_their_current_state() {
    let mut index = EndpointIndex::new();
    let a = endpoint("a", "n1", &[], &["p"]);
    let p = profile("p", &[("role", "db")]);
    index
        .load_stored(
            &[StoredEndpoint {
                namespace: "ns",
                name: "a",
                resource_version: 3,
                stored: &a,
            }],
            &[("p", &p)],
        )
        .unwrap();
    assert_eq!(
        index
            .effective_labels("ns", "a")
            .unwrap()
            .iter()
            .collect::<Vec<_>>(),
        [("role", "db")]
    );
    let db = index.add_group("", "", Some(&Selector::parse("role == 'db'").unwrap()));
    let web = index.add_group("", "", Some(&Selector::parse("role == 'web'").unwrap()));
    let current = |namespace: &str, name: &str| {
        assert_eq!((namespace, name), ("ns", "a"));
        Some((a.as_slice(), 3))
    };
    let p2 = profile("p", &[("role", "web")]);
    let profiles = [StoredProfileChange {
        revision: 7,
        name: "p",
        value: Some(&p2),
    }];
    let encoded = index.apply_stored(&[], &profiles, current).unwrap();
    assert_eq!(
        chunks(&encoded),
        [
            (db, vec![(7, vec![wire::event_entry(DELETED, &a, 7, 7)])]),
            // Its own resource_version: the profile edit does not change the endpoint.
            (web, vec![(7, vec![wire::event_entry(ADDED, &a, 3, 7)])]),
        ]
    );
}

#[test]
fn profile_events_around_an_endpoints_own_changes_in_one_batch() {
    let mut index = EndpointIndex::new();
    let db = index.add_group("", "", Some(&Selector::parse("role == 'db'").unwrap()));
    let (v1, v2) = (
        endpoint("a", "n1", &[], &["p"]),
        endpoint("a", "n2", &[], &["p"]),
    );
    let (p_db, p_web) = (
        profile("p", &[("role", "db")]),
        profile("p", &[("role", "web")]),
    );
    let endpoints = [
        change(1, "a", Some(&v1), None),
        change(4, "a", Some(&v2), Some((&v1, 1))),
    ];
    let profiles = [
        StoredProfileChange {
            revision: 2,
            name: "p",
            value: Some(&p_db),
        },
        StoredProfileChange {
            revision: 3,
            name: "p",
            value: Some(&p_web),
        },
        StoredProfileChange {
            revision: 5,
            name: "p",
            value: None,
        },
        StoredProfileChange {
            revision: 6,
            name: "p",
            value: Some(&p_db),
        },
    ];
    let encoded = index.apply_stored(&endpoints, &profiles, nothing).unwrap();
    assert_eq!(
        chunks(&encoded),
        [(
            db,
            vec![
                // The state of revision 1, with its own version, before and after.
                (2, vec![wire::event_entry(ADDED, &v1, 1, 2)]),
                (3, vec![wire::event_entry(DELETED, &v1, 3, 3)]),
                // The state of revision 4.
                (6, vec![wire::event_entry(ADDED, &v2, 4, 6)]),
            ]
        )]
    );
}

#[test]
fn each_event_is_encoded_once_for_every_group() {
    let mut index = EndpointIndex::new();
    let groups = [
        index.add_group("", "", None),
        index.add_group("ns", "", None),
        index.add_group("", "n1", None),
    ];
    let v1 = endpoint("a", "n1", &[], &[]);
    let encoded = index
        .apply_stored(&[change(1, "a", Some(&v1), None)], &[], nothing)
        .unwrap();
    assert_eq!(encoded.entries, [wire::event_entry(ADDED, &v1, 1, 1)]);
    let delivered: Vec<_> = encoded
        .plan
        .deliveries()
        .map(|(g, i)| (g, i.to_vec()))
        .collect();
    assert_eq!(delivered, groups.map(|g| (g, vec![0])));
}

#[test]
fn undecodable_bytes_change_nothing() {
    let mut index = EndpointIndex::new();
    let good = endpoint("a", "n1", &[], &[]);
    let changes = [
        change(1, "a", Some(&good), None),
        change(2, "b", Some(b"\x0a\x05ab"), None),
    ];
    let error = index.apply_stored(&changes, &[], nothing).unwrap_err();
    assert!(
        matches!(&error, StoredError::Decode { kind: "WorkloadEndpoint", key, revision: 2, .. } if key == "ns/b"),
        "{error}"
    );
    let profiles = [StoredProfileChange {
        revision: 1,
        name: "p",
        value: Some(b"\x12\x09"),
    }];
    assert!(index.apply_stored(&[], &profiles, nothing).is_err());
    assert!(index.is_empty());
    assert_eq!(index.revision(), 0);
    assert!(index.load_stored(&[], &[("p", b"\x12\x09")]).is_err());
}

#[test]
fn out_of_order_changes_change_nothing() {
    let mut index = EndpointIndex::new();
    let good = endpoint("a", "n1", &[], &[]);
    let changes = [
        change(2, "a", Some(&good), None),
        change(1, "b", Some(&good), None),
    ];
    let error = index.apply_stored(&changes, &[], nothing).unwrap_err();
    assert!(matches!(
        error,
        StoredError::Fanout(FanoutError::RevisionOrder { .. })
    ));
    assert_eq!(index.count(Filter::default()), 0);
}

#[test]
fn an_unknown_current_state_is_an_error_after_the_batch() {
    let mut index = EndpointIndex::new();
    let a = endpoint("a", "n1", &[], &["p"]);
    index
        .load_stored(
            &[StoredEndpoint {
                namespace: "ns",
                name: "a",
                resource_version: 1,
                stored: &a,
            }],
            &[],
        )
        .unwrap();
    index.add_group("", "", Some(&Selector::parse("has(role)").unwrap()));
    let p = profile("p", &[("role", "db")]);
    let profiles = [StoredProfileChange {
        revision: 2,
        name: "p",
        value: Some(&p),
    }];
    let error = index.apply_stored(&[], &profiles, nothing).unwrap_err();
    assert_eq!(
        error,
        StoredError::MissingState {
            namespace: "ns".into(),
            name: "a".into(),
            revision: 2
        }
    );
    assert_eq!(index.revision(), 2);
}
