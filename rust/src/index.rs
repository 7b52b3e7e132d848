//! The endpoint label index: endpoints' namespace, node, own labels and profiles, the
//! profiles' `labelsToApply`, and ordered, filtered queries over effective labels.
//! No PyO3 here.
//!
//! Effective labels are an endpoint's own labels, plus, for each key it lacks, the value
//! from the first of its profiles (in order) that has one. They are cached per endpoint and
//! recomputed only for the endpoints that name a profile when that profile changes (found
//! through a reverse map), so a query only has to evaluate its selector.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

use foldhash::{HashMap, HashSet, HashSetExt};

use crate::selector::{Labels, Selector};

/// A label set: key to value.
pub type LabelMap = HashMap<String, String>;

/// An endpoint's key, `(namespace, name)`; keys are ordered as tuples.
pub type Key = (String, String);

/// One allocation of a key, shared by the endpoint map and the reverse maps.
type SharedKey = Arc<Key>;

/// An endpoint as it is written to the index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointEntry {
    pub namespace: String,
    pub name: String,
    pub node: String,
    /// The endpoint's own labels.
    pub labels: LabelMap,
    /// The names of its profiles, in priority order.
    pub profiles: Vec<String>,
}

#[derive(Debug)]
struct Endpoint {
    node: String,
    labels: LabelMap,
    profiles: Vec<String>,
    /// What the profiles add: for each key `labels` lacks, the first profile's value. Kept
    /// apart from `labels` rather than merged into a copy of them, which halves the memory
    /// and the work of a profile change; a lookup tries `labels` first.
    inherited: LabelMap,
}

impl Endpoint {
    fn effective(&self) -> EffectiveLabels<'_> {
        EffectiveLabels {
            own: &self.labels,
            inherited: &self.inherited,
        }
    }
}

/// An endpoint's effective labels: its own labels, then those its profiles add.
#[derive(Debug, Clone, Copy)]
pub struct EffectiveLabels<'a> {
    own: &'a LabelMap,
    inherited: &'a LabelMap,
}

impl<'a> EffectiveLabels<'a> {
    /// Every effective label, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        self.own
            .iter()
            .chain(self.inherited)
            .map(|(key, value)| (key.as_str(), value.as_str()))
    }

    /// How many effective labels there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.own.len() + self.inherited.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Labels for EffectiveLabels<'_> {
    fn get_label(&self, key: &str) -> Option<&str> {
        match self.own.get(key) {
            Some(value) => Some(value),
            None if self.inherited.is_empty() => None,
            None => self.inherited.get(key).map(String::as_str),
        }
    }
}

/// Which endpoints a query or count is about. Empty strings and `None` mean "any".
#[derive(Debug, Clone, Copy, Default)]
pub struct Filter<'a> {
    pub namespace: &'a str,
    pub node: &'a str,
    pub selector: Option<&'a Selector>,
}

/// Endpoints, profiles and the effective labels that join them; see the module docs.
#[derive(Debug, Default)]
pub struct EndpointIndex {
    endpoints: BTreeMap<SharedKey, Endpoint>,
    /// node -> keys of the endpoints on it, so a node's query does not scan the others.
    by_node: HashMap<String, BTreeSet<SharedKey>>,
    /// profile name -> labelsToApply.
    profiles: HashMap<String, LabelMap>,
    /// profile name -> keys of the endpoints that name it (whether or not it exists yet).
    profile_users: HashMap<String, HashSet<SharedKey>>,
}

/// The labels `names` (profiles, in order) add to `own` given the current profiles.
fn inherit(profiles: &HashMap<String, LabelMap>, own: &LabelMap, names: &[String]) -> LabelMap {
    let mut added = LabelMap::default();
    for applied in names.iter().filter_map(|name| profiles.get(name)) {
        for (key, value) in applied {
            if !own.contains_key(key) && !added.contains_key(key) {
                added.insert(key.clone(), value.clone());
            }
        }
    }
    added
}

impl EndpointIndex {
    /// An empty index.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// How many endpoints the index holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether the index holds no endpoints.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Inserts endpoints, each replacing any previous entry with its `(namespace, name)`.
    pub fn upsert_endpoints(&mut self, entries: impl IntoIterator<Item = EndpointEntry>) {
        for entry in entries {
            self.upsert_endpoint(entry);
        }
    }

    /// Inserts one endpoint, replacing any previous entry with its `(namespace, name)`.
    pub fn upsert_endpoint(&mut self, entry: EndpointEntry) {
        let EndpointEntry {
            namespace,
            name,
            node,
            labels,
            profiles,
        } = entry;
        let key = Arc::new((namespace, name));
        if let Some(old) = self.endpoints.remove(&*key) {
            self.unlink(&key, &old);
        }
        self.by_node
            .entry(node.clone())
            .or_default()
            .insert(key.clone());
        for profile in &profiles {
            if let Some(users) = self.profile_users.get_mut(profile) {
                users.insert(key.clone());
            } else {
                let mut users = HashSet::new();
                users.insert(key.clone());
                self.profile_users.insert(profile.clone(), users);
            }
        }
        let inherited = inherit(&self.profiles, &labels, &profiles);
        self.endpoints.insert(
            key,
            Endpoint {
                node,
                labels,
                profiles,
                inherited,
            },
        );
    }

    /// Removes endpoints by key; keys that are not present are ignored.
    pub fn remove_endpoints<'a>(&mut self, keys: impl IntoIterator<Item = (&'a str, &'a str)>) {
        for (namespace, name) in keys {
            self.remove_endpoint(namespace, name);
        }
    }

    /// Removes one endpoint; returns whether it was present.
    pub fn remove_endpoint(&mut self, namespace: &str, name: &str) -> bool {
        let key = (namespace.to_owned(), name.to_owned());
        match self.endpoints.remove(&key) {
            Some(old) => {
                self.unlink(&key, &old);
                true
            }
            None => false,
        }
    }

    /// Drops `key` from the node and profile reverse maps.
    fn unlink(&mut self, key: &Key, old: &Endpoint) {
        if let Some(keys) = self.by_node.get_mut(&old.node) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_node.remove(&old.node);
            }
        }
        for profile in &old.profiles {
            if let Some(users) = self.profile_users.get_mut(profile) {
                users.remove(key);
                if users.is_empty() {
                    self.profile_users.remove(profile);
                }
            }
        }
    }

    /// Inserts or replaces profiles' `labelsToApply`, then recomputes the effective labels
    /// of the endpoints that name any of them (once each).
    pub fn upsert_profiles(&mut self, profiles: impl IntoIterator<Item = (String, LabelMap)>) {
        let mut changed = Vec::new();
        for (name, labels) in profiles {
            if self.profiles.get(&name) != Some(&labels) {
                self.profiles.insert(name.clone(), labels);
                changed.push(name);
            }
        }
        self.refresh(&changed);
    }

    /// Removes profiles (missing names are ignored), then recomputes the effective labels of
    /// the endpoints that name any of them.
    pub fn remove_profiles<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        let changed: Vec<&str> = names
            .into_iter()
            .filter(|name| self.profiles.remove(*name).is_some())
            .collect();
        self.refresh(&changed);
    }

    /// Recomputes the effective labels of the endpoints that name any of `changed`.
    fn refresh<S: AsRef<str>>(&mut self, changed: &[S]) {
        let mut affected: HashSet<&SharedKey> = HashSet::new();
        for name in changed {
            if let Some(users) = self.profile_users.get(name.as_ref()) {
                affected.extend(users);
            }
        }
        for key in affected {
            if let Some(endpoint) = self.endpoints.get_mut(&**key) {
                endpoint.inherited = inherit(&self.profiles, &endpoint.labels, &endpoint.profiles);
            }
        }
    }

    /// The effective labels of an endpoint, or `None` if it is not in the index.
    #[must_use]
    pub fn effective_labels(&self, namespace: &str, name: &str) -> Option<EffectiveLabels<'_>> {
        // Looking up by tuple needs owned strings; the copies are two small allocations.
        self.endpoints
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(Endpoint::effective)
    }

    /// The keys that pass `filter`, in ascending `(namespace, name)` order, strictly after
    /// `after`, at most `limit` of them (`0` means no limit).
    #[must_use]
    pub fn query(
        &self,
        filter: Filter<'_>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Vec<&Key> {
        let limit = if limit == 0 { usize::MAX } else { limit };
        self.matching(filter, after).take(limit).collect()
    }

    /// How many endpoints pass `filter`.
    #[must_use]
    pub fn count(&self, filter: Filter<'_>) -> usize {
        self.matching(filter, None).count()
    }

    /// Matching keys in order: a range scan of the endpoints (or of one node's endpoints),
    /// bounded to the namespace when there is one, with the selector evaluated on the cached
    /// effective labels.
    fn matching<'s, 'f>(
        &'s self,
        filter: Filter<'f>,
        after: Option<(&str, &str)>,
    ) -> impl Iterator<Item = &'s Key> + use<'s, 'f> {
        let start = start_bound(filter.namespace, after);
        let in_namespace =
            move |key: &Key| filter.namespace.is_empty() || key.0 == filter.namespace;
        let candidates: Box<dyn Iterator<Item = (&'s SharedKey, &'s Endpoint)> + 's> =
            match (&start, filter.node) {
                (None, _) => Box::new(std::iter::empty()),
                (Some(start), "") => Box::new(
                    self.endpoints
                        .range::<Key, _>((start.as_ref(), Bound::Unbounded)),
                ),
                (Some(start), node) => match self.by_node.get(node) {
                    None => Box::new(std::iter::empty()),
                    Some(keys) => Box::new(
                        keys.range::<Key, _>((start.as_ref(), Bound::Unbounded))
                            .filter_map(|key| self.endpoints.get_key_value(key)),
                    ),
                },
            };
        candidates
            .take_while(move |(key, _)| in_namespace(key))
            .filter_map(move |(key, endpoint)| {
                filter
                    .selector
                    .is_none_or(|selector| selector.matches(&endpoint.effective()))
                    .then_some(&**key)
            })
    }
}

/// Where a scan starts: the later of "after `after`" and "the start of `namespace`";
/// `None` when `after` is already past the namespace.
fn start_bound(namespace: &str, after: Option<(&str, &str)>) -> Option<Bound<Key>> {
    let after_key = |(ns, name): (&str, &str)| Bound::Excluded((ns.to_owned(), name.to_owned()));
    if namespace.is_empty() {
        return Some(after.map_or(Bound::Unbounded, after_key));
    }
    match after {
        Some(after) if after.0 == namespace => Some(after_key(after)),
        Some(after) if after.0 > namespace => None,
        _ => Some(Bound::Included((namespace.to_owned(), String::new()))),
    }
}

#[cfg(test)]
mod tests;
