//! Ordering, filters, paging and profile inheritance of the endpoint index.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn label_set(pairs: &[(&str, &str)]) -> LabelSet {
    pairs.iter().copied().collect()
}

fn entry(
    namespace: &str,
    name: &str,
    node: &str,
    labels: &[(&str, &str)],
    profiles: &[&str],
) -> EndpointEntry {
    EndpointEntry {
        namespace: namespace.into(),
        name: name.to_owned(),
        node: node.into(),
        labels: label_set(labels),
        profiles: profiles.iter().copied().map(Arc::from).collect(),
        resource_version: 1,
    }
}

fn selector(text: &str) -> Selector {
    Selector::parse(text).expect("valid selector")
}

fn keys(
    index: &EndpointIndex,
    filter: Filter<'_>,
    after: Option<(&str, &str)>,
    limit: usize,
) -> Vec<(String, String)> {
    index
        .query(filter, after, limit)
        .into_iter()
        .map(|(namespace, name)| (namespace.to_string(), name.to_string()))
        .collect()
}

fn all_keys(index: &EndpointIndex) -> Vec<(String, String)> {
    keys(index, Filter::default(), None, 0)
}

fn key(namespace: &str, name: &str) -> (String, String) {
    (namespace.to_owned(), name.to_owned())
}

fn effective(index: &EndpointIndex, namespace: &str, name: &str) -> BTreeMap<String, String> {
    let labels = index.effective_labels(namespace, name).expect("present");
    let collected: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(
        collected.len(),
        labels.len(),
        "no key is both own and inherited"
    );
    collected
}

fn btree(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn keys_are_ordered_as_tuples_not_as_joined_strings() {
    let mut index = EndpointIndex::new();
    // Joined as "ns/name", "a-b/x" would sort before "a/y" ('-' < '/'); as tuples "a" < "a-b".
    index.upsert_endpoints([
        entry("a-b", "x", "n", &[], &[]),
        entry("a", "y", "n", &[], &[]),
        entry("a", "b", "n", &[], &[]),
        entry("", "z", "n", &[], &[]),
    ]);
    assert_eq!(
        all_keys(&index),
        [key("", "z"), key("a", "b"), key("a", "y"), key("a-b", "x")]
    );
    assert_eq!(index.len(), 4);
    assert!(!index.is_empty());
}

#[test]
fn upsert_replaces_and_remove_ignores_missing_keys() {
    let mut index = EndpointIndex::new();
    index.upsert_endpoints([entry("ns", "e", "n1", &[("a", "1")], &[])]);
    index.upsert_endpoints([entry("ns", "e", "n2", &[("a", "2")], &[])]);
    assert_eq!(index.len(), 1);
    assert_eq!(effective(&index, "ns", "e"), btree(&[("a", "2")]));
    let on = |node| {
        keys(
            &index,
            Filter {
                node,
                ..Filter::default()
            },
            None,
            0,
        )
    };
    assert!(on("n1").is_empty());
    assert_eq!(on("n2"), [key("ns", "e")]);

    index.remove_endpoints([("ns", "missing"), ("other", "e")]);
    assert_eq!(index.len(), 1);
    assert!(index.remove_endpoint("ns", "e"));
    assert!(!index.remove_endpoint("ns", "e"));
    assert!(index.is_empty());
    assert!(index.effective_labels("ns", "e").is_none());
    assert!(
        keys(
            &index,
            Filter {
                node: "n2",
                ..Filter::default()
            },
            None,
            0
        )
        .is_empty()
    );
}

fn sample() -> EndpointIndex {
    let mut index = EndpointIndex::new();
    index.upsert_endpoints([
        entry(
            "default",
            "web-1",
            "node-a",
            &[("app", "web"), ("tier", "a")],
            &[],
        ),
        entry(
            "default",
            "web-2",
            "node-b",
            &[("app", "web"), ("tier", "c")],
            &[],
        ),
        entry("default", "db-1", "node-a", &[("app", "db")], &[]),
        entry(
            "prod",
            "web-1",
            "node-a",
            &[("app", "web"), ("tier", "b")],
            &[],
        ),
        entry(
            "prod-eu",
            "web-1",
            "node-b",
            &[("app", "web"), ("tier", "a")],
            &[],
        ),
        entry("kube", "dns", "node-c", &[], &[]),
    ]);
    index
}

#[test]
fn namespace_filter() {
    let index = sample();
    let in_ns = |namespace| {
        keys(
            &index,
            Filter {
                namespace,
                ..Filter::default()
            },
            None,
            0,
        )
    };
    assert_eq!(
        in_ns("default"),
        [
            key("default", "db-1"),
            key("default", "web-1"),
            key("default", "web-2")
        ]
    );
    assert_eq!(in_ns("prod"), [key("prod", "web-1")]);
    assert_eq!(in_ns("pro"), Vec::<(String, String)>::new());
    assert_eq!(in_ns("zzz"), Vec::<(String, String)>::new());
}

#[test]
fn node_filter_and_combined_filters() {
    let index = sample();
    let web = selector("app == 'web'");
    let query = |namespace, node, selector| {
        keys(
            &index,
            Filter {
                namespace,
                node,
                selector,
            },
            None,
            0,
        )
    };
    assert_eq!(
        query("", "node-a", None),
        [
            key("default", "db-1"),
            key("default", "web-1"),
            key("prod", "web-1")
        ]
    );
    assert_eq!(
        query("default", "node-a", None),
        [key("default", "db-1"), key("default", "web-1")]
    );
    assert_eq!(
        query("default", "node-a", Some(&web)),
        [key("default", "web-1")]
    );
    assert_eq!(query("", "node-x", None), Vec::<(String, String)>::new());
    assert_eq!(
        query("kube", "node-a", None),
        Vec::<(String, String)>::new()
    );
    assert_eq!(
        index.count(Filter {
            node: "node-b",
            ..Filter::default()
        }),
        2
    );
}

#[test]
fn selector_filter_on_a_two_clause_selector() {
    let index = sample();
    let two = selector("app == 'web' && tier in {'a', 'b'}");
    let found = keys(
        &index,
        Filter {
            selector: Some(&two),
            ..Filter::default()
        },
        None,
        0,
    );
    assert_eq!(
        found,
        [
            key("default", "web-1"),
            key("prod", "web-1"),
            key("prod-eu", "web-1")
        ]
    );
    assert_eq!(
        index.count(Filter {
            selector: Some(&two),
            ..Filter::default()
        }),
        3
    );
    let absent = selector("tier != 'a'");
    let found = keys(
        &index,
        Filter {
            selector: Some(&absent),
            ..Filter::default()
        },
        None,
        0,
    );
    assert_eq!(
        found,
        [
            key("default", "db-1"),
            key("default", "web-2"),
            key("kube", "dns"),
            key("prod", "web-1")
        ]
    );
}

#[test]
fn paging_with_after_and_limit() {
    let index = sample();
    let all = all_keys(&index);
    // Walk every page size; the pages concatenate to the full result.
    for limit in 1..=all.len() + 1 {
        let mut walked = Vec::new();
        let mut after: Option<(String, String)> = None;
        loop {
            let page = keys(
                &index,
                Filter::default(),
                after.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
                limit,
            );
            assert!(page.len() <= limit);
            walked.extend(page.iter().cloned());
            if page.len() < limit {
                break;
            }
            after = page.last().cloned();
        }
        assert_eq!(walked, all, "limit {limit}");
    }
    // `after` need not be a present key.
    assert_eq!(
        keys(&index, Filter::default(), Some(("default", "m")), 2),
        [key("default", "web-1"), key("default", "web-2")]
    );
    assert_eq!(
        keys(&index, Filter::default(), Some(("zzz", "")), 0),
        Vec::<(String, String)>::new()
    );
}

#[test]
fn paging_within_a_namespace_and_node() {
    let index = sample();
    let ns = Filter {
        namespace: "default",
        ..Filter::default()
    };
    assert_eq!(
        keys(&index, ns, Some(("default", "db-1")), 1),
        [key("default", "web-1")]
    );
    // `after` before the namespace starts at its beginning; after it, finds nothing.
    assert_eq!(
        keys(&index, ns, Some(("a", "z")), 1),
        [key("default", "db-1")]
    );
    assert_eq!(
        keys(&index, ns, Some(("prod", "")), 0),
        Vec::<(String, String)>::new()
    );
    let node = Filter {
        node: "node-a",
        ..Filter::default()
    };
    assert_eq!(
        keys(&index, node, Some(("default", "web-1")), 0),
        [key("prod", "web-1")]
    );
    let both = Filter {
        namespace: "prod",
        node: "node-a",
        selector: None,
    };
    assert_eq!(
        keys(&index, both, Some(("default", "zzz")), 5),
        [key("prod", "web-1")]
    );
}

#[test]
fn effective_labels_inherit_from_profiles_in_order() {
    let mut index = EndpointIndex::new();
    index.upsert_profiles([
        ("p1".to_owned(), label_set(&[("a", "p1"), ("b", "p1")])),
        ("p2".to_owned(), label_set(&[("b", "p2"), ("c", "p2")])),
    ]);
    index.upsert_endpoints([
        entry("ns", "e1", "n", &[("a", "own")], &["p1", "p2"]),
        entry("ns", "e2", "n", &[], &["p2", "p1"]),
        entry("ns", "e3", "n", &[("z", "own")], &["missing"]),
        entry("ns", "e4", "n", &[], &[]),
    ]);
    // Own labels win; then the first profile that has the key.
    assert_eq!(
        effective(&index, "ns", "e1"),
        btree(&[("a", "own"), ("b", "p1"), ("c", "p2")])
    );
    assert_eq!(
        effective(&index, "ns", "e2"),
        btree(&[("a", "p1"), ("b", "p2"), ("c", "p2")])
    );
    // A profile that is not in the index contributes nothing.
    assert_eq!(effective(&index, "ns", "e3"), btree(&[("z", "own")]));
    assert_eq!(effective(&index, "ns", "e4"), btree(&[]));

    let c = selector("c == 'p2'");
    assert_eq!(
        index.count(Filter {
            selector: Some(&c),
            ..Filter::default()
        }),
        2
    );
}

#[test]
fn profile_changes_re_evaluate_the_endpoints_that_name_them() {
    let mut index = EndpointIndex::new();
    index.upsert_endpoints([
        entry("ns", "e1", "n", &[("own", "1")], &["p1", "p2"]),
        entry("ns", "e2", "n", &[], &["p2"]),
        entry("ns", "e3", "n", &[], &[]),
    ]);
    let has_role = selector("has(role)");
    let matching = |index: &EndpointIndex| {
        keys(
            index,
            Filter {
                selector: Some(&has_role),
                ..Filter::default()
            },
            None,
            0,
        )
    };
    assert!(matching(&index).is_empty());

    // Creating a profile the endpoints already name.
    index.upsert_profiles([("p2".to_owned(), label_set(&[("role", "p2")]))]);
    assert_eq!(matching(&index), [key("ns", "e1"), key("ns", "e2")]);
    assert_eq!(
        effective(&index, "ns", "e1"),
        btree(&[("own", "1"), ("role", "p2")])
    );

    // An earlier profile takes over the key.
    index.upsert_profiles([("p1".to_owned(), label_set(&[("role", "p1")]))]);
    assert_eq!(
        effective(&index, "ns", "e1"),
        btree(&[("own", "1"), ("role", "p1")])
    );
    assert_eq!(effective(&index, "ns", "e2"), btree(&[("role", "p2")]));

    // Editing a profile.
    index.upsert_profiles([("p1".to_owned(), label_set(&[("other", "x")]))]);
    assert_eq!(
        effective(&index, "ns", "e1"),
        btree(&[("other", "x"), ("own", "1"), ("role", "p2")])
    );

    // Deleting profiles.
    index.remove_profiles(["p2", "never-existed"]);
    assert_eq!(matching(&index), Vec::<(String, String)>::new());
    assert_eq!(
        effective(&index, "ns", "e1"),
        btree(&[("other", "x"), ("own", "1")])
    );
    assert_eq!(effective(&index, "ns", "e2"), btree(&[]));
    index.remove_profiles(["p1"]);
    assert_eq!(effective(&index, "ns", "e1"), btree(&[("own", "1")]));

    // An endpoint that stops naming a profile stops inheriting from it.
    index.upsert_profiles([("p2".to_owned(), label_set(&[("role", "p2")]))]);
    index.upsert_endpoints([entry("ns", "e2", "n", &[], &[])]);
    assert_eq!(matching(&index), [key("ns", "e1")]);
    index.remove_endpoints([("ns", "e1")]);
    index.upsert_profiles([("p2".to_owned(), label_set(&[("role", "again")]))]);
    assert_eq!(matching(&index), Vec::<(String, String)>::new());
}

#[test]
fn own_label_wins_over_profile() {
    let mut index = EndpointIndex::new();
    index.upsert_profiles([("p".to_owned(), label_set(&[("app", "from-profile")]))]);
    index.upsert_endpoints([entry("ns", "e", "n", &[("app", "own")], &["p"])]);
    let own = selector("app == 'own'");
    assert_eq!(
        index.count(Filter {
            selector: Some(&own),
            ..Filter::default()
        }),
        1
    );
    assert_eq!(effective(&index, "ns", "e"), btree(&[("app", "own")]));
}

#[test]
fn an_endpoint_may_name_a_profile_twice() {
    let mut index = EndpointIndex::new();
    index.upsert_endpoints([entry("ns", "e", "n", &[], &["p", "p"])]);
    index.upsert_profiles([("p".to_owned(), label_set(&[("a", "1")]))]);
    assert_eq!(effective(&index, "ns", "e"), btree(&[("a", "1")]));
    index.upsert_endpoints([entry("ns", "e", "n", &[], &[])]);
    index.upsert_profiles([("p".to_owned(), label_set(&[("a", "2")]))]);
    assert_eq!(effective(&index, "ns", "e"), btree(&[]));
}

#[test]
fn label_sets_are_sorted_and_the_last_of_equal_keys_wins() {
    let set = label_set(&[("b", "1"), ("a", "1"), ("b", "2"), ("c", "3")]);
    assert_eq!(
        set.iter().collect::<Vec<_>>(),
        [("a", "1"), ("b", "2"), ("c", "3")]
    );
    assert_eq!(set.len(), 3);
    assert_eq!(set.get("b"), Some("2"));
    for absent in ["", "aa", "d"] {
        assert_eq!(set.get(absent), None);
    }
    assert_eq!(
        set.filter(|key| key != "b").iter().collect::<Vec<_>>(),
        [("a", "1"), ("c", "3")]
    );
    assert!(LabelSet::default().is_empty());
}

#[test]
fn the_interner_shares_values_and_drops_those_nothing_else_holds() {
    let mut strings: Interner<str> = Interner::default();
    let kept = strings.intern("kept");
    assert!(Arc::ptr_eq(&kept, &strings.intern("kept")));
    let live: Vec<Arc<str>> = (0..3 * labels::MIN_SWEEP)
        .map(|i| strings.intern(&format!("live-{i}")))
        .collect();
    for i in 0..10 * labels::MIN_SWEEP {
        strings.intern(&format!("garbage-{i}"));
        assert!(strings.len() <= 2 * (live.len() + 1));
    }
    assert!(Arc::ptr_eq(&kept, &strings.intern("kept")));
    assert!(Arc::ptr_eq(&live[0], &strings.intern("live-0")));
    drop(live);
    for i in 0..10 * labels::MIN_SWEEP {
        strings.intern(&format!("garbage-{i}"));
    }
    assert!(strings.len() <= labels::MIN_SWEEP);
}

#[test]
fn the_index_lets_go_of_the_strings_of_removed_endpoints() {
    let mut index = EndpointIndex::new();
    // Each endpoint brings three new strings, a label and a profile list: about 100,000
    // strings in all. A table frees the strings of what another one dropped only at its own
    // next sweep, so each stays within a few sweeps' worth rather than under `MIN_SWEEP`.
    let bound = 8 * labels::MIN_SWEEP;
    for i in 0..32 * labels::MIN_SWEEP {
        let name = format!("e{i}");
        let profile = index.intern(&format!("p{i}"));
        let entry = EndpointEntry {
            namespace: index.intern("ns"),
            name: name.clone(),
            node: index.intern(&format!("node-{i}")),
            labels: [index.label("app", "web"), index.label("hash", &name)]
                .into_iter()
                .collect(),
            profiles: index.profile_list(&[profile]),
            resource_version: 1,
        };
        index.upsert_endpoint(entry);
        assert!(index.remove_endpoint("ns", &name));
        assert!(index.strings.len() <= bound);
        assert!(index.labels.len() <= bound);
        assert!(index.profile_lists.len() <= bound);
        assert!(index.merged.sets.len() <= bound);
    }
}

// ---- model check: the index against a plain re-computation ----

#[derive(Debug, Clone)]
enum Op {
    UpsertEndpoint(EndpointEntry),
    RemoveEndpoint(String, String),
    UpsertProfile(String, LabelSet),
    RemoveProfile(String),
}

fn small(values: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(values).prop_map(str::to_owned)
}

fn labels_strategy() -> impl Strategy<Value = LabelSet> {
    prop::collection::vec((small(&["a", "b", "c"]), small(&["1", "2"])), 0..3)
        .prop_map(|pairs| pairs.into_iter().collect())
}

fn op() -> impl Strategy<Value = Op> {
    let namespace = || small(&["", "a", "a-b", "b"]);
    let name = || small(&["x", "y", "z"]);
    let profile = || small(&["p", "q", "r"]);
    prop_oneof![
        3 => (namespace(), name(), small(&["n1", "n2"]), labels_strategy(), prop::collection::vec(profile(), 0..3))
            .prop_map(|(namespace, name, node, labels, profiles)| Op::UpsertEndpoint(EndpointEntry {
                namespace: namespace.into(), name, node: node.into(), labels, profiles: profiles.into_iter().map(Arc::from).collect(), resource_version: 1,
            })),
        1 => (namespace(), name()).prop_map(|(ns, name)| Op::RemoveEndpoint(ns, name)),
        2 => (profile(), labels_strategy()).prop_map(|(name, labels)| Op::UpsertProfile(name, labels)),
        1 => profile().prop_map(Op::RemoveProfile),
    ]
}

proptest! {
    #[test]
    fn index_agrees_with_a_model(ops in prop::collection::vec(op(), 0..40)) {
        let mut index = EndpointIndex::new();
        let mut endpoints: BTreeMap<(String, String), EndpointEntry> = BTreeMap::new();
        let mut profiles: BTreeMap<String, LabelSet> = BTreeMap::new();
        for op in ops {
            match op {
                Op::UpsertEndpoint(entry) => {
                    endpoints.insert((entry.namespace.to_string(), entry.name.clone()), entry.clone());
                    index.upsert_endpoints([entry]);
                }
                Op::RemoveEndpoint(ns, name) => {
                    endpoints.remove(&(ns.clone(), name.clone()));
                    index.remove_endpoints([(ns.as_str(), name.as_str())]);
                }
                Op::UpsertProfile(name, labels) => {
                    profiles.insert(name.clone(), labels.clone());
                    index.upsert_profiles([(name, labels)]);
                }
                Op::RemoveProfile(name) => {
                    profiles.remove(&name);
                    index.remove_profiles([name.as_str()]);
                }
            }
        }
        let model_effective = |e: &EndpointEntry| {
            let mut labels: BTreeMap<String, String> = e.labels.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
            for p in e.profiles.iter() {
                for (k, v) in profiles.get(&**p).into_iter().flat_map(LabelSet::iter) {
                    labels.entry(k.to_owned()).or_insert_with(|| v.to_owned());
                }
            }
            labels
        };
        prop_assert_eq!(index.len(), endpoints.len());
        for (k, e) in &endpoints {
            prop_assert_eq!(effective(&index, &k.0, &k.1), model_effective(e));
        }
        let sel = selector("a == '1' || b not in {'2'}");
        for namespace in ["", "a", "a-b"] {
            for node in ["", "n1"] {
                for selector in [None, Some(&sel)] {
                    let expected: Vec<(String, String)> = endpoints
                        .iter()
                        .filter(|(k, e)| (namespace.is_empty() || k.0 == namespace) && (node.is_empty() || &*e.node == node))
                        .filter(|(_, e)| selector.is_none_or(|s| s.matches(&model_effective(e))))
                        .map(|(k, _)| k.clone())
                        .collect();
                    let filter = Filter { namespace, node, selector };
                    prop_assert_eq!(&keys(&index, filter, None, 0), &expected);
                    prop_assert_eq!(index.count(filter), expected.len());
                    let after = ("a", "y");
                    let paged: Vec<_> = expected.iter().filter(|k| (k.0.as_str(), k.1.as_str()) > after).take(2).cloned().collect();
                    prop_assert_eq!(keys(&index, filter, Some(after), 2), paged);
                }
            }
        }
    }
}
