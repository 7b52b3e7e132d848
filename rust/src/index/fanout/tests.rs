//! Groups, apply transitions, replay, log trimming and the known-versions diff, plus a
//! model check of every group's materialised view against brute force.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::index::{EndpointEntry, Filter};
use crate::selector::Term;

use EventType::{Added, Deleted, Modified};

fn labels(pairs: &[(&str, &str)]) -> LabelSet {
    pairs.iter().copied().collect()
}

fn key(namespace: &str, name: &str) -> Key {
    (namespace.into(), name.into())
}

fn selector(text: &str) -> Selector {
    Selector::parse(text).expect("valid selector")
}

fn put(
    revision: u64,
    namespace: &str,
    name: &str,
    node: &str,
    own: &[(&str, &str)],
    profiles: &[&str],
) -> EndpointChange {
    EndpointChange {
        revision,
        namespace: namespace.into(),
        name: name.to_owned(),
        value: Some(EndpointValue {
            node: node.into(),
            labels: labels(own),
            profiles: profiles.iter().copied().map(Arc::from).collect(),
        }),
    }
}

fn delete(revision: u64, namespace: &str, name: &str) -> EndpointChange {
    EndpointChange {
        revision,
        namespace: namespace.into(),
        name: name.to_owned(),
        value: None,
    }
}

fn profile(revision: u64, name: &str, applied: Option<&[(&str, &str)]>) -> ProfileChange {
    ProfileChange {
        revision,
        name: name.to_owned(),
        labels: applied.map(labels),
    }
}

type Seen = (String, String, u64, EventType);

fn seen(event: &Event) -> Seen {
    (
        event.key.0.to_string(),
        event.key.1.to_string(),
        event.revision,
        event.kind,
    )
}

fn ev(namespace: &str, name: &str, revision: u64, kind: EventType) -> Seen {
    (namespace.to_owned(), name.to_owned(), revision, kind)
}

/// A group's events in a plan, sorted within each revision (where order is unspecified).
fn events(plan: &Plan, group: GroupId) -> Vec<Seen> {
    let mut events: Vec<Seen> = plan
        .deliveries()
        .filter(|(g, _)| *g == group)
        .flat_map(|(_, indices)| indices.iter().map(|&i| seen(&plan.subjects[i as usize])))
        .collect();
    events.sort_by(|a, b| (a.2, &a.0, &a.1, a.3).cmp(&(b.2, &b.0, &b.1, b.3)));
    events
}

fn replayed(index: &EndpointIndex, group: GroupId, after: u64) -> Vec<Seen> {
    match index.replay(group, after, 0).expect("known group") {
        Replay::Events(events) => events.iter().map(seen).collect(),
        other => panic!("expected events, got {other:?}"),
    }
}

fn apply(
    index: &mut EndpointIndex,
    endpoints: Vec<EndpointChange>,
    profiles: Vec<ProfileChange>,
) -> Plan {
    let plan = index.apply(endpoints, profiles).expect("in order");
    // Structural promises: distinct subjects in revision order, ascending indices, only
    // groups with events.
    let distinct: BTreeSet<Seen> = plan.subjects.iter().map(seen).collect();
    assert_eq!(distinct.len(), plan.subjects.len(), "subjects are distinct");
    assert!(plan.subjects.is_sorted_by_key(|e| e.revision));
    for (_, indices) in plan.deliveries() {
        assert!(!indices.is_empty());
        assert!(indices.is_sorted_by_key(|&i| i) && indices.windows(2).all(|w| w[0] < w[1]));
    }
    assert!(plan.groups.is_sorted_by_key(|(g, _)| *g));
    assert_eq!(
        plan.groups.iter().map(|(_, r)| r.len()).sum::<usize>(),
        plan.indices.len()
    );
    plan
}

// ---- groups ----

#[test]
fn identical_filters_share_a_group_until_the_last_release() {
    let mut index = EndpointIndex::new();
    let web = selector("app == 'web'");
    let g1 = index.add_group("ns", "", Some(&web));
    let g2 = index.add_group("ns", "", Some(&selector("app in {'web'}")));
    assert_ne!(g1, g2, "canonical forms differ");
    assert_eq!(
        index.add_group("ns", "", Some(&selector("(app == \"web\")"))),
        g1
    );
    // A selector matching everything is no selector.
    let any = index.add_group("", "n1", None);
    assert_eq!(index.add_group("", "n1", Some(&selector("all()"))), any);
    assert_eq!(index.add_group("", "n1", Some(&selector(""))), any);
    assert_eq!(index.group_count(), 3);

    index.release_group(g1).expect("exists");
    assert_eq!(index.group_count(), 3);
    index.release_group(g1).expect("exists");
    assert_eq!(index.group_count(), 2);
    assert_eq!(index.release_group(g1), Err(FanoutError::UnknownGroup(g1)));
    // Ids are never reused, even though the slot is.
    let again = index.add_group("ns", "", Some(&web));
    assert!(again > any && again > g2);
    assert_eq!(index.replay(g1, 0, 0), Err(FanoutError::UnknownGroup(g1)));
    for _ in 0..3 {
        index.release_group(any).expect("three references");
    }
    assert_eq!(index.group_count(), 2);
}

#[test]
fn a_released_group_gets_no_more_events() {
    let mut index = EndpointIndex::new();
    let g = index.add_group("", "", Some(&selector("app == 'web'")));
    let plan = apply(
        &mut index,
        vec![put(1, "ns", "a", "n", &[("app", "web")], &[])],
        vec![],
    );
    assert_eq!(events(&plan, g), [ev("ns", "a", 1, Added)]);
    index.release_group(g).expect("exists");
    let plan = apply(&mut index, vec![delete(2, "ns", "a")], vec![]);
    assert!(plan.groups.is_empty());
    // Its subject is still planned only if some group wants it: none does.
    assert!(plan.subjects.is_empty());
}

#[test]
fn an_and_is_posted_under_the_operand_fewer_endpoints_satisfy() {
    let mut index = EndpointIndex::new();
    let mut changes = Vec::new();
    for (i, app) in ["a", "b", "c", "d", "e", "f", "g", "h"].iter().enumerate() {
        changes.push(put(
            1,
            "ns",
            &format!("e{i}"),
            "n",
            &[("app", app)],
            &["prod"],
        ));
    }
    apply(
        &mut index,
        changes,
        vec![profile(1, "prod", Some(&[("env", "prod")]))],
    );
    let text = "app in {'a', 'b'} && env == 'prod'";
    let g = index.add_group("", "", Some(&selector(text)));
    assert_eq!(
        index.group_terms(g),
        Some(
            &[
                Term::Label("app".into(), "a".into()),
                Term::Label("app".into(), "b".into())
            ][..]
        )
    );
    // With no endpoints to go by, the static guess: one term beats two.
    let mut empty = EndpointIndex::new();
    let g = empty.add_group("", "", Some(&selector(text)));
    assert_eq!(
        empty.group_terms(g),
        Some(&[Term::Label("env".into(), "prod".into())][..])
    );
}

// ---- apply ----

#[test]
fn own_label_changes_add_modify_and_delete() {
    let mut index = EndpointIndex::new();
    let web = index.add_group("", "", Some(&selector("app == 'web'")));
    let node = index.add_group("", "n1", None);
    let everything = index.add_group("", "", None);

    let plan = apply(
        &mut index,
        vec![put(5, "ns", "a", "n1", &[("app", "db")], &[])],
        vec![],
    );
    assert_eq!(events(&plan, web), []);
    assert_eq!(events(&plan, node), [ev("ns", "a", 5, Added)]);
    assert_eq!(events(&plan, everything), [ev("ns", "a", 5, Added)]);
    assert_eq!(plan.subjects.len(), 1, "one subject shared by both groups");

    let plan = apply(
        &mut index,
        vec![put(6, "ns", "a", "n1", &[("app", "web")], &[])],
        vec![],
    );
    assert_eq!(events(&plan, web), [ev("ns", "a", 6, Added)]);
    assert_eq!(events(&plan, node), [ev("ns", "a", 6, Modified)]);
    assert_eq!(plan.subjects.len(), 2);

    // Same labels again: still a change of the endpoint itself.
    let plan = apply(
        &mut index,
        vec![put(7, "ns", "a", "n1", &[("app", "web")], &[])],
        vec![],
    );
    assert_eq!(events(&plan, web), [ev("ns", "a", 7, Modified)]);

    let plan = apply(
        &mut index,
        vec![put(8, "ns", "a", "n1", &[("app", "db")], &[])],
        vec![],
    );
    assert_eq!(events(&plan, web), [ev("ns", "a", 8, Deleted)]);
    assert_eq!(events(&plan, node), [ev("ns", "a", 8, Modified)]);

    let plan = apply(&mut index, vec![delete(9, "ns", "a")], vec![]);
    assert_eq!(events(&plan, web), []);
    assert_eq!(events(&plan, node), [ev("ns", "a", 9, Deleted)]);
    assert_eq!(index.len(), 0);

    // Deleting what does not exist is nothing.
    let plan = apply(&mut index, vec![delete(10, "ns", "a")], vec![]);
    assert_eq!(plan, Plan::default());
    assert_eq!(index.revision(), 10);
}

#[test]
fn a_node_change_deletes_from_the_old_node_and_adds_to_the_new() {
    let mut index = EndpointIndex::new();
    let n1 = index.add_group("", "n1", None);
    let n2 = index.add_group("", "n2", None);
    let n2_web = index.add_group("", "n2", Some(&selector("app == 'web'")));
    apply(
        &mut index,
        vec![put(1, "ns", "a", "n1", &[("app", "web")], &[])],
        vec![],
    );
    let plan = apply(
        &mut index,
        vec![put(2, "ns", "a", "n2", &[("app", "web")], &[])],
        vec![],
    );
    assert_eq!(events(&plan, n1), [ev("ns", "a", 2, Deleted)]);
    assert_eq!(events(&plan, n2), [ev("ns", "a", 2, Added)]);
    assert_eq!(events(&plan, n2_web), [ev("ns", "a", 2, Added)]);
    assert_eq!(index.resource_version("ns", "a"), Some(2));
}

#[test]
fn namespaces_keep_keys_distinct_and_filter_groups() {
    let mut index = EndpointIndex::new();
    let in_a = index.add_group("a", "", None);
    let in_a_web = index.add_group("a", "", Some(&selector("app == 'web'")));
    let not_web = index.add_group("a", "", Some(&selector("app != 'web'")));
    let anywhere = index.add_group("", "", Some(&selector("app == 'web'")));
    let plan = apply(
        &mut index,
        vec![
            put(1, "a", "x", "n", &[("app", "web")], &[]),
            put(1, "b", "x", "n", &[("app", "web")], &[]),
        ],
        vec![],
    );
    assert_eq!(events(&plan, in_a), [ev("a", "x", 1, Added)]);
    assert_eq!(events(&plan, in_a_web), [ev("a", "x", 1, Added)]);
    assert_eq!(events(&plan, not_web), []);
    assert_eq!(
        events(&plan, anywhere),
        [ev("a", "x", 1, Added), ev("b", "x", 1, Added)]
    );
    let plan = apply(&mut index, vec![delete(2, "b", "x")], vec![]);
    assert_eq!(events(&plan, in_a), []);
    assert_eq!(events(&plan, anywhere), [ev("b", "x", 2, Deleted)]);
}

#[test]
fn profile_edits_move_endpoints_in_and_out_of_selector_groups_silently_otherwise() {
    let mut index = EndpointIndex::new();
    let prod = index.add_group("", "", Some(&selector("env == 'prod'")));
    let not_prod = index.add_group("", "", Some(&selector("env != 'prod'")));
    let on_node = index.add_group("", "n", None);
    let web = index.add_group("", "", Some(&selector("app == 'web'")));
    apply(
        &mut index,
        vec![
            put(1, "ns", "a", "n", &[("app", "web")], &["kns.ns"]),
            put(1, "ns", "b", "n", &[("env", "dev")], &["kns.ns"]),
            put(1, "ns", "c", "n", &[], &[]),
        ],
        vec![],
    );
    // Creating the profile moves `a` into prod (b's own label wins).
    let plan = apply(
        &mut index,
        vec![],
        vec![profile(2, "kns.ns", Some(&[("env", "prod")]))],
    );
    assert_eq!(events(&plan, prod), [ev("ns", "a", 2, Added)]);
    assert_eq!(events(&plan, not_prod), [ev("ns", "a", 2, Deleted)]);
    // Still matching groups get nothing for a profile change.
    assert_eq!(events(&plan, on_node), []);
    assert_eq!(events(&plan, web), []);

    // An edit that changes `a`'s effective labels but not its matches: silence.
    let plan = apply(
        &mut index,
        vec![],
        vec![profile(
            3,
            "kns.ns",
            Some(&[("env", "prod"), ("team", "x")]),
        )],
    );
    assert_eq!(plan, Plan::default());
    // Logged all the same (a later group may care): `a` now, and `b`, whose own `env`
    // hid the profile's until `team` came along. The first edit only changed `a`.
    assert_eq!(index.log_len(), 3 + 1 + 2);

    // An edit that changes nothing effective is not even logged.
    let plan = apply(
        &mut index,
        vec![],
        vec![profile(
            4,
            "kns.ns",
            Some(&[("team", "x"), ("env", "prod")]),
        )],
    );
    assert_eq!(plan, Plan::default());
    assert_eq!(index.log_len(), 6);

    // Deleting the profile moves `a` back out.
    let plan = apply(&mut index, vec![], vec![profile(5, "kns.ns", None)]);
    assert_eq!(events(&plan, prod), [ev("ns", "a", 5, Deleted)]);
    assert_eq!(events(&plan, not_prod), [ev("ns", "a", 5, Added)]);
    assert_eq!(index.revision(), 5);
}

#[test]
fn a_revision_changing_an_endpoint_and_its_profile_is_compared_as_a_whole() {
    let mut index = EndpointIndex::new();
    let prod_web = index.add_group("", "", Some(&selector("env == 'prod' && app == 'web'")));
    let prod = index.add_group("", "", Some(&selector("env == 'prod'")));
    let dev = index.add_group("", "", Some(&selector("env == 'dev'")));
    apply(
        &mut index,
        vec![
            put(1, "ns", "a", "n", &[("app", "web")], &["p"]),
            put(1, "ns", "b", "n", &[("app", "web")], &["p"]),
        ],
        vec![profile(1, "p", Some(&[("env", "dev")]))],
    );
    // One transaction: the profile flips to prod and `a` changes its own labels. `a` is
    // compared once, before vs after the whole revision; `b` moves by the profile alone.
    let plan = apply(
        &mut index,
        vec![put(
            2,
            "ns",
            "a",
            "n",
            &[("app", "web"), ("v", "2")],
            &["p"],
        )],
        vec![profile(2, "p", Some(&[("env", "prod")]))],
    );
    assert_eq!(
        events(&plan, prod_web),
        [ev("ns", "a", 2, Added), ev("ns", "b", 2, Added)]
    );
    assert_eq!(
        events(&plan, dev),
        [ev("ns", "a", 2, Deleted), ev("ns", "b", 2, Deleted)]
    );
    // Several revisions in one batch, in order; the profile's new user inherits at once.
    let plan = apply(
        &mut index,
        vec![
            put(3, "ns", "a", "n", &[("app", "web"), ("v", "3")], &["p"]),
            put(4, "ns", "c", "n", &[], &["p"]),
            delete(6, "ns", "b"),
        ],
        vec![profile(5, "p", Some(&[("env", "prod"), ("x", "y")]))],
    );
    assert_eq!(
        events(&plan, prod),
        [
            ev("ns", "a", 3, Modified),
            ev("ns", "c", 4, Added),
            ev("ns", "b", 6, Deleted),
        ]
    );
    assert_eq!(index.resource_version("ns", "a"), Some(3));
    assert_eq!(index.resource_version("ns", "c"), Some(4));
}

#[test]
fn a_group_posted_under_a_key_sees_values_come_and_go() {
    let mut index = EndpointIndex::new();
    let has_tier = index.add_group("", "", Some(&selector("has(tier) && tier != 'x'")));
    let tier_in = index.add_group("", "", Some(&selector("tier in {'a', 'b'}")));
    let mut rev = 0;
    let mut step = |index: &mut EndpointIndex, own: &[(&str, &str)]| {
        rev += 1;
        apply(index, vec![put(rev, "ns", "e", "n", own, &[])], vec![])
    };
    let plan = step(&mut index, &[("tier", "a")]);
    assert_eq!(events(&plan, has_tier), [ev("ns", "e", 1, Added)]);
    assert_eq!(events(&plan, tier_in), [ev("ns", "e", 1, Added)]);
    let plan = step(&mut index, &[("tier", "b")]);
    assert_eq!(events(&plan, tier_in), [ev("ns", "e", 2, Modified)]);
    let plan = step(&mut index, &[("tier", "x")]);
    assert_eq!(events(&plan, has_tier), [ev("ns", "e", 3, Deleted)]);
    assert_eq!(events(&plan, tier_in), [ev("ns", "e", 3, Deleted)]);
    let plan = step(&mut index, &[]);
    assert_eq!(plan, Plan::default());
}

#[test]
fn changes_must_come_in_revision_order() {
    let mut index = EndpointIndex::new();
    index.reset_log(10);
    let stale = index.apply(vec![put(10, "ns", "a", "n", &[], &[])], vec![]);
    assert_eq!(
        stale,
        Err(FanoutError::RevisionOrder {
            revision: 10,
            after: 10
        })
    );
    let backwards = index.apply(
        vec![],
        vec![profile(12, "p", Some(&[])), profile(11, "q", Some(&[]))],
    );
    assert!(matches!(
        backwards,
        Err(FanoutError::RevisionOrder { revision: 11, .. })
    ));
    assert_eq!(index.revision(), 10, "a refused batch changes nothing");
    assert!(index.is_empty());
}

// ---- replay and the log ----

#[test]
fn replay_equals_what_apply_delivered_and_respects_log_start_and_limit() {
    let mut index = EndpointIndex::new();
    index.upsert_endpoints([EndpointEntry {
        namespace: "ns".into(),
        name: "old".to_owned(),
        node: "n1".into(),
        resource_version: 3,
        ..EndpointEntry::default()
    }]);
    index.reset_log(3);
    let groups = [
        index.add_group("", "n1", None),
        index.add_group("", "", Some(&selector("env == 'prod'"))),
        index.add_group("ns", "", Some(&selector("!has(app)"))),
    ];
    let batches = vec![
        (
            vec![
                put(4, "ns", "a", "n1", &[("app", "web")], &["p"]),
                put(4, "ns", "b", "n2", &[], &["p"]),
            ],
            vec![profile(4, "p", Some(&[("env", "prod")]))],
        ),
        (vec![], vec![profile(5, "p", Some(&[("env", "dev")]))]),
        (
            vec![put(6, "ns", "b", "n1", &[], &["p"]), delete(7, "ns", "old")],
            vec![profile(7, "p", Some(&[("env", "prod")]))],
        ),
    ];
    let mut delivered: BTreeMap<GroupId, Vec<Seen>> = BTreeMap::new();
    for (endpoints, profiles) in batches {
        let plan = apply(&mut index, endpoints, profiles);
        for &g in &groups {
            delivered.entry(g).or_default().extend(events(&plan, g));
        }
    }
    for &g in &groups {
        let all = &delivered[&g];
        assert!(!all.is_empty());
        let mut replay = replayed(&index, g, 3);
        replay.sort_by(|a, b| (a.2, &a.0, &a.1, a.3).cmp(&(b.2, &b.0, &b.1, b.3)));
        assert_eq!(&replay, all, "group {g}");
        for after in 3..=8 {
            let mut tail = replayed(&index, g, after);
            tail.sort_by(|a, b| (a.2, &a.0, &a.1, a.3).cmp(&(b.2, &b.0, &b.1, b.3)));
            let expected: Vec<Seen> = all.iter().filter(|e| e.2 > after).cloned().collect();
            assert_eq!(tail, expected);
        }
        let n = all.len();
        assert!(matches!(index.replay(g, 3, n), Ok(Replay::Events(e)) if e.len() == n));
        assert_eq!(index.replay(g, 3, n - 1), Ok(Replay::TooMany));
    }
    // A group registered after the fact replays what it would have seen.
    let late = index.add_group("", "", Some(&selector("env == 'dev'")));
    let mut replay = replayed(&index, late, 3);
    replay.sort_by(|a, b| (a.2, &a.0, &a.1, a.3).cmp(&(b.2, &b.0, &b.1, b.3)));
    assert_eq!(
        replay,
        [
            ev("ns", "a", 5, Added),
            ev("ns", "b", 5, Added),
            ev("ns", "b", 6, Modified),
            ev("ns", "a", 7, Deleted),
            ev("ns", "b", 7, Deleted),
        ]
    );
    assert_eq!(index.replay(late, 2, 0), Ok(Replay::Expired));

    index.trim_log(5);
    assert_eq!(index.log_start(), 5);
    assert_eq!(index.replay(groups[0], 4, 0), Ok(Replay::Expired));
    assert_eq!(
        replayed(&index, groups[0], 5),
        delivered[&groups[0]]
            .iter()
            .filter(|e| e.2 > 5)
            .cloned()
            .collect::<Vec<_>>()
    );
    assert!(index.log_len() > 0);
    index.trim_log(100);
    assert_eq!((index.log_len(), index.log_start()), (0, 100));
    index.reset_log(7);
    assert_eq!((index.log_start(), index.revision()), (7, 7));
}

#[test]
fn a_node_replay_sees_only_its_node_and_endpoints_that_move_on_or_off_it() {
    let mut index = EndpointIndex::new();
    let n1 = index.add_group("", "n1", None);
    let n2 = index.add_group("", "n2", None);
    let n3 = index.add_group("", "n3", None);
    index.reset_log(0);
    apply(&mut index, vec![put(1, "ns", "a", "n1", &[], &[])], vec![]);
    apply(&mut index, vec![put(2, "ns", "b", "n2", &[], &[])], vec![]);
    apply(&mut index, vec![put(3, "ns", "a", "n2", &[], &[])], vec![]); // moves n1 -> n2
    apply(&mut index, vec![delete(4, "ns", "b")], vec![]);
    assert_eq!(
        replayed(&index, n1, 0),
        [ev("ns", "a", 1, Added), ev("ns", "a", 3, Deleted)]
    );
    assert_eq!(
        replayed(&index, n2, 0),
        [
            ev("ns", "b", 2, Added),
            ev("ns", "a", 3, Added),
            ev("ns", "b", 4, Deleted)
        ]
    );
    assert_eq!(
        replayed(&index, n2, 2),
        [ev("ns", "a", 3, Added), ev("ns", "b", 4, Deleted)]
    );
    assert_eq!(replayed(&index, n3, 0), []);
    // Trimming drops each node's oldest positions with the transitions they point at.
    index.trim_log(2);
    assert_eq!(replayed(&index, n1, 2), [ev("ns", "a", 3, Deleted)]);
    assert_eq!(replayed(&index, n2, 3), [ev("ns", "b", 4, Deleted)]);
    index.trim_log(4);
    assert_eq!(replayed(&index, n2, 4), []);
    index.reset_log(4);
    apply(&mut index, vec![put(5, "ns", "c", "n3", &[], &[])], vec![]);
    assert_eq!(replayed(&index, n3, 4), [ev("ns", "c", 5, Added)]);
    assert_eq!(replayed(&index, n1, 4), []);
}

#[test]
fn a_replay_in_parts_is_the_whole_replay_and_never_splits_a_revision() {
    let mut index = EndpointIndex::new();
    let web = index.add_group("", "", Some(&selector("app == 'web'")));
    index.reset_log(0);
    apply(
        &mut index,
        vec![
            put(1, "ns", "a", "n1", &[("app", "web")], &["p"]),
            put(2, "ns", "b", "n2", &[], &["p"]),
            put(3, "ns", "c", "n3", &[], &["p"]),
        ],
        vec![],
    );
    // One revision with three transitions: the profile gives b and c the label (a has its own).
    apply(
        &mut index,
        vec![],
        vec![profile(4, "p", Some(&[("app", "web")]))],
    );
    apply(&mut index, vec![delete(5, "ns", "a")], vec![]);
    apply(&mut index, vec![put(6, "ns", "d", "n1", &[], &[])], vec![]);
    let whole = replayed(&index, web, 0);
    for max_visits in 1..=8 {
        let mut parts = Vec::new();
        let mut after = 0;
        loop {
            let (Replay::Events(events), through) = index
                .replay_part(web, after, 0, max_visits)
                .expect("known group")
            else {
                panic!("the log holds every change");
            };
            parts.extend(events.iter().map(seen));
            match through {
                Some(revision) => {
                    assert!(revision > after, "a part gets somewhere");
                    after = revision;
                }
                None => break,
            }
        }
        assert_eq!(parts, whole, "in parts of {max_visits} visits");
    }
    assert_eq!(
        index.replay_part(web, 3, 0, 1).expect("known group").1,
        Some(4)
    );
}

// ---- diff ----

#[test]
fn diff_against_known_versions() {
    let mut index = EndpointIndex::new();
    let node = index.add_group("", "n1", None);
    let web = index.add_group("ns", "", Some(&selector("app == 'web'")));
    apply(
        &mut index,
        vec![
            put(1, "ns", "a", "n1", &[("app", "web")], &[]),
            put(2, "ns", "b", "n1", &[], &[]),
            put(3, "ns", "c", "n1", &[("app", "web")], &[]),
            put(4, "ns", "d", "n2", &[("app", "web")], &[]),
            put(5, "ns-2", "a", "n1", &[("app", "web")], &[]),
        ],
        vec![],
    );
    let known = [
        ("ns/a", 1),     // current
        ("ns/b", 1),     // stale
        ("ns/d", 4),     // on another node
        ("ns/gone", 9),  // does not exist
        ("no-slash", 1), // cannot exist
        ("ns/x/y", 1),   // splits at the first '/'
    ];
    let diff = index.diff(node, &known).expect("known group");
    assert_eq!(diff.added, [&key("ns", "c"), &key("ns-2", "a")]);
    assert_eq!(diff.modified, [&key("ns", "b")]);
    assert_eq!(
        diff.deleted,
        [("ns", "d"), ("ns", "gone"), ("", "no-slash"), ("ns", "x/y")]
    );
    let diff = index.diff(web, &known).expect("known group");
    assert_eq!(diff.added, [&key("ns", "c")]);
    assert_eq!(diff.modified, Vec::<&Key>::new());
    assert_eq!(
        diff.deleted,
        [("ns", "b"), ("ns", "gone"), ("", "no-slash"), ("ns", "x/y")]
    );
    let diff = index.diff(web, &[]).expect("known group");
    assert_eq!(diff.added.len(), 3);
    assert_eq!(index.diff(999, &[]), Err(FanoutError::UnknownGroup(999)));
}

// ---- model check ----

#[derive(Debug, Clone)]
enum Change {
    Put(String, String, String, LabelSet, Vec<String>),
    Delete(String, String),
    Profile(String, Option<LabelSet>),
}

fn pick(values: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(values).prop_map(str::to_owned)
}

fn label_strategy() -> impl Strategy<Value = LabelSet> {
    prop::collection::vec((pick(&["app", "env", "tier"]), pick(&["1", "2"])), 0..3)
        .prop_map(|pairs| pairs.into_iter().collect())
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => (pick(&["a", "b"]), pick(&["x", "y", "z"]), pick(&["n1", "n2"]), label_strategy(),
              prop::collection::vec(pick(&["p", "q"]), 0..3))
            .prop_map(|(ns, name, node, own, profiles)| Change::Put(ns, name, node, own, profiles)),
        1 => (pick(&["a", "b"]), pick(&["x", "y", "z"])).prop_map(|(ns, name)| Change::Delete(ns, name)),
        2 => (pick(&["p", "q"]), prop::option::weighted(0.8, label_strategy()))
            .prop_map(|(name, applied)| Change::Profile(name, applied)),
    ]
}

/// Revisions of one or more changes each, at most one change per object per revision.
fn batches() -> impl Strategy<Value = Vec<Vec<Vec<Change>>>> {
    prop::collection::vec(
        prop::collection::vec(prop::collection::vec(change(), 1..4), 1..4),
        1..6,
    )
}

const MODEL_SELECTORS: &[&str] = &[
    "",
    "app == '1'",
    "app in {'1', '2'} && env == '2'",
    "has(tier) || env == '1'",
    "tier != '1'",
    "!has(env) && app == '2'",
    "app in {}",
];

#[derive(Debug, Default, Clone)]
struct Model {
    endpoints: BTreeMap<Key, (String, LabelSet, Vec<String>, u64)>,
    profiles: BTreeMap<String, LabelSet>,
}

impl Model {
    fn effective(&self, own: &LabelSet, profiles: &[String]) -> BTreeMap<String, String> {
        let mut labels: BTreeMap<String, String> = own
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        for p in profiles {
            for (k, v) in self.profiles.get(p).into_iter().flat_map(LabelSet::iter) {
                labels.entry(k.to_owned()).or_insert_with(|| v.to_owned());
            }
        }
        labels
    }

    fn matching(&self, filter: Filter<'_>) -> BTreeMap<Key, u64> {
        self.endpoints
            .iter()
            .filter(|(key, (node, own, profiles, _))| {
                (filter.namespace.is_empty() || *key.0 == *filter.namespace)
                    && (filter.node.is_empty() || filter.node == node)
                    && filter
                        .selector
                        .is_none_or(|s| s.matches(&self.effective(own, profiles)))
            })
            .map(|(key, (.., version))| (key.clone(), *version))
            .collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn every_groups_events_build_exactly_its_matches(batches in batches()) {
        let selectors: Vec<Selector> = MODEL_SELECTORS.iter().map(|s| selector(s)).collect();
        let mut index = EndpointIndex::new();
        let mut filters = Vec::new();
        for namespace in ["", "a"] {
            for node in ["", "n1"] {
                for s in &selectors {
                    let id = index.add_group(namespace, node, Some(s));
                    filters.push((id, Filter { namespace, node, selector: (!s.is_all()).then_some(s) }));
                }
            }
        }
        let mut model = Model::default();
        let mut views: BTreeMap<GroupId, BTreeSet<Key>> = BTreeMap::new();
        let mut delivered: BTreeMap<GroupId, Vec<Seen>> = BTreeMap::new();
        let mut revision = 0;
        for batch in batches {
            let (mut endpoint_changes, mut profile_changes) = (Vec::new(), Vec::new());
            let mut expected_events: BTreeMap<GroupId, Vec<Seen>> = BTreeMap::new();
            for changes in batch {
                revision += 1;
                let before = model.clone();
                let mut touched = BTreeSet::new();
                for change in changes {
                    match change {
                        Change::Put(ns, name, node, own, profiles) => {
                            if !touched.insert(key(&ns, &name)) { continue; }
                            model.endpoints.insert(key(&ns, &name), (node.clone(), own.clone(), profiles.clone(), revision));
                            let (node, profiles) = (node.into(), profiles.into_iter().map(Arc::from).collect());
                            endpoint_changes.push(EndpointChange { revision, namespace: ns.into(), name, value: Some(EndpointValue { node, labels: own, profiles }) });
                        }
                        Change::Delete(ns, name) => {
                            if !touched.insert(key(&ns, &name)) { continue; }
                            model.endpoints.remove(&key(&ns, &name));
                            endpoint_changes.push(EndpointChange { revision, namespace: ns.into(), name, value: None });
                        }
                        Change::Profile(name, applied) => {
                            if !touched.insert(key("", &name)) { continue; }
                            match &applied {
                                Some(l) => { model.profiles.insert(name.clone(), l.clone()); }
                                None => { model.profiles.remove(&name); }
                            }
                            profile_changes.push(ProfileChange { revision, name, labels: applied });
                        }
                    }
                }
                // The events by brute force: every group against every key, before and after.
                for (id, filter) in &filters {
                    let (was, is) = (before.matching(*filter), model.matching(*filter));
                    let keys: BTreeSet<&Key> = was.keys().chain(is.keys()).collect();
                    for key in keys {
                        let kind = match (was.contains_key(key), is.contains_key(key)) {
                            (false, true) => Added,
                            (true, false) => Deleted,
                            (true, true) if touched.contains(key) => Modified,
                            _ => continue,
                        };
                        expected_events.entry(*id).or_default().push((key.0.to_string(), key.1.to_string(), revision, kind));
                    }
                }
            }
            let plan = apply(&mut index, endpoint_changes, profile_changes);
            for (id, _) in &filters {
                let mut expected = expected_events.remove(id).unwrap_or_default();
                expected.sort_by(|a, b| (a.2, &a.0, &a.1, a.3).cmp(&(b.2, &b.0, &b.1, b.3)));
                prop_assert_eq!(events(&plan, *id), expected);
            }
            for (id, filter) in &filters {
                let view = views.entry(*id).or_default();
                let log = delivered.entry(*id).or_default();
                for (_, indices) in plan.deliveries().filter(|(g, _)| g == id) {
                    for &i in indices {
                        let event = &plan.subjects[i as usize];
                        log.push(seen(event));
                        let key = (*event.key).clone();
                        match event.kind {
                            Added => prop_assert!(view.insert(key), "ADDED twice"),
                            Modified => prop_assert!(view.contains(&key), "MODIFIED unknown"),
                            Deleted => prop_assert!(view.remove(&key), "DELETED unknown"),
                        }
                    }
                }
                let expected = model.matching(*filter);
                prop_assert!(view.iter().eq(expected.keys()), "group {:?}: {:?} != {:?}", filter, view, expected);
                let diff = index.diff(*id, &[]).expect("known group");
                prop_assert!(diff.added.into_iter().eq(expected.keys()));
                // Know every endpoint, with the versions of those named "x" stale.
                let known_text: Vec<(String, u64)> = model.endpoints.iter()
                    .map(|(key, (.., version))| (format!("{}/{}", key.0, key.1), if &*key.1 == "x" { version + 100 } else { *version }))
                    .collect();
                let known: Vec<(&str, u64)> = known_text.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                let diff = index.diff(*id, &known).expect("known group");
                prop_assert!(diff.added.is_empty());
                prop_assert!(diff.modified.into_iter().eq(expected.keys().filter(|k| &*k.1 == "x")));
                let deleted: Vec<(&str, &str)> = model.endpoints.keys()
                    .filter(|k| !expected.contains_key(*k))
                    .map(|k| (&*k.0, &*k.1))
                    .collect();
                prop_assert_eq!(diff.deleted, deleted);
            }
        }
        for (id, _) in &filters {
            prop_assert_eq!(&replayed(&index, *id, 0), &delivered[id]);
        }
        // The label statistics count the effective labels exactly (too few distinct labels
        // here for the sketch to collide).
        let mut labels: BTreeMap<Term, u64> = BTreeMap::new();
        for (_, own, profiles, _) in model.endpoints.values() {
            for (key, value) in model.effective(own, profiles) {
                *labels.entry(Term::Key(key.clone())).or_default() += 1;
                *labels.entry(Term::Label(key, value)).or_default() += 1;
            }
        }
        for key in ["app", "env", "tier"] {
            for term in [Term::Key(key.into()), Term::Label(key.into(), "1".into()), Term::Label(key.into(), "2".into())] {
                prop_assert_eq!(index.stats.estimate(&term), labels.get(&term).copied().unwrap_or(0), "{:?}", term);
            }
        }
    }
}
