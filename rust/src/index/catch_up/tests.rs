//! Which catch-up events a watch start gets, in which order, and their entries.
//! (`tests/core/test_catch_up_entries.py` checks the whole against the Python encoding on
//! random states.)

use prost::Message;

use super::*;
use crate::index::StoredEndpoint;
use crate::model::messages::{ObjectMeta, WorkloadEndpoint, WorkloadEndpointSpec};
use crate::selector::Selector;

const ADDED: u8 = 1;
const MODIFIED: u8 = 2;

fn endpoint(namespace: &str, name: &str, node: &str, app: &str) -> Vec<u8> {
    WorkloadEndpoint {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: namespace.into(),
            labels: [("app".to_owned(), app.to_owned())].into_iter().collect(),
            ..ObjectMeta::default()
        }),
        spec: Some(WorkloadEndpointSpec {
            node: node.into(),
            ..WorkloadEndpointSpec::default()
        }),
    }
    .encode_to_vec()
}

/// (namespace, name, node, app label, resource version), loaded as stored.
const ENDPOINTS: [(&str, &str, &str, &str, u64); 5] = [
    ("b", "x", "n1", "web", 3),
    ("a", "y", "n1", "db", 4),
    ("a", "x", "n1", "web", 5),
    ("a", "z", "n2", "web", 6),
    ("b", "w", "n2", "web", 7),
];

struct Fixture {
    index: EndpointIndex,
    stored: Vec<Vec<u8>>,
}

impl Fixture {
    fn new() -> Self {
        let stored: Vec<_> = ENDPOINTS
            .iter()
            .map(|&(namespace, name, node, app, _)| endpoint(namespace, name, node, app))
            .collect();
        let batch: Vec<_> = ENDPOINTS
            .iter()
            .zip(&stored)
            .map(
                |(&(namespace, name, _, _, resource_version), stored)| StoredEndpoint {
                    namespace,
                    name,
                    resource_version,
                    stored,
                },
            )
            .collect();
        let mut index = EndpointIndex::new();
        index.load_stored(&batch, &[]).unwrap();
        Fixture { index, stored }
    }

    fn current(&self, namespace: &str, name: &str) -> Option<(&[u8], u64)> {
        let i = ENDPOINTS
            .iter()
            .position(|e| e.0 == namespace && e.1 == name)?;
        Some((&self.stored[i], ENDPOINTS[i].4))
    }

    fn stored(&self, namespace: &str, name: &str) -> &[u8] {
        self.current(namespace, name).unwrap().0
    }

    fn entries(&self, events: &[CatchUp<'_, '_>], revision: u64) -> Vec<Vec<u8>> {
        events
            .iter()
            .map(|event| {
                event
                    .encode(revision, |namespace, name| self.current(namespace, name))
                    .unwrap()
            })
            .collect()
    }
}

fn key(namespace: &str, name: &str) -> Key {
    (namespace.into(), name.into())
}

#[test]
fn initial_events_are_every_match_added_in_key_order() {
    let mut fixture = Fixture::new();
    let web = Selector::parse("app == 'web'").unwrap();
    let group = fixture.index.add_group("", "n1", Some(&web));
    let fixture = fixture;
    let events = fixture.index.initial_events(group).unwrap();
    let (ax, bx) = (key("a", "x"), key("b", "x"));
    assert_eq!(events, [CatchUp::Added(&ax), CatchUp::Added(&bx)]);
    // Stamped with the snapshot's revision; each object keeps its own resource version.
    assert_eq!(
        fixture.entries(&events, 10),
        [
            wire::event_entry(ADDED, fixture.stored("a", "x"), 5, 10),
            wire::event_entry(ADDED, fixture.stored("b", "x"), 3, 10),
        ]
    );
}

#[test]
fn the_difference_is_added_then_modified_then_deleted() {
    let mut fixture = Fixture::new();
    let group = fixture.index.add_group("", "n1", None);
    let fixture = fixture;
    let known = [
        ("b/x", 3),   // current
        ("a/y", 1),   // stale
        ("a/z", 6),   // on another node now
        ("gone", 2),  // not even a key: ("", "gone")
        ("a/old", 2), // gone
    ];
    let events = fixture.index.difference_events(group, &known).unwrap();
    let (ax, ay) = (key("a", "x"), key("a", "y"));
    assert_eq!(
        events,
        [
            CatchUp::Added(&ax),
            CatchUp::Modified(&ay),
            CatchUp::Deleted("a", "z"), // deletions in the order the client sent its keys
            CatchUp::Deleted("", "gone"),
            CatchUp::Deleted("a", "old"),
        ]
    );
    assert_eq!(
        fixture.entries(&events, 10),
        [
            wire::event_entry(ADDED, fixture.stored("a", "x"), 5, 10),
            wire::event_entry(MODIFIED, fixture.stored("a", "y"), 4, 10),
            wire::deleted_key_entry("a", "z", 10),
            wire::deleted_key_entry("", "gone", 10),
            wire::deleted_key_entry("a", "old", 10),
        ]
    );
}

#[test]
fn an_unknown_group_or_state_is_an_error() {
    let mut fixture = Fixture::new();
    assert_eq!(
        fixture.index.initial_events(99),
        Err(FanoutError::UnknownGroup(99))
    );
    assert_eq!(
        fixture.index.difference_events(99, &[]),
        Err(FanoutError::UnknownGroup(99))
    );
    let group = fixture.index.add_group("a", "", None);
    let events = fixture.index.initial_events(group).unwrap();
    assert_eq!(
        events[0].encode(10, |_, _| None),
        Err(StoredError::MissingState {
            namespace: "a".into(),
            name: "x".into(),
            revision: 10
        })
    );
}
