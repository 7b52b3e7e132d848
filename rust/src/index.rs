//! The endpoint label index: endpoints' namespace, node, own labels, profiles and resource
//! versions, the profiles' `labelsToApply`, ordered and filtered queries over effective
//! labels, and (in [`fanout`]) the watch fan-out built on them. No PyO3 here.
//!
//! Effective labels are an endpoint's own labels, plus, for each key it lacks, the value
//! from the first of its profiles (in order) that has one. They are cached per endpoint and
//! recomputed only for the endpoints that name a profile when that profile changes (found
//! through a reverse map), so a query only has to evaluate its selector.
//!
//! An endpoint's filter-relevant state (node, own labels, inherited labels) is a [`State`]
//! of reference-counted parts, so the transition log can keep old states without copying
//! label sets, and endpoints that name the same profiles share one inherited set. Labels,
//! the strings in them and profile lists are interned (see [`labels`]): with 100,000
//! endpoints, one copy of "app.kubernetes.io/managed-by" = "helm" instead of 100,000.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use foldhash::{HashMap, HashSet, HashSetExt};

use crate::selector::{Labels, Selector};

pub mod catch_up;
pub mod fanout;
mod groups;
mod labels;
mod stats;
pub mod stored;

pub use catch_up::CatchUp;
pub use fanout::{Diff, EndpointChange, EndpointValue, Event, EventType, FanoutError, Plan};
pub use fanout::{ProfileChange, Replay};
pub use groups::GroupId;
pub use labels::{Label, LabelSet};
pub use stored::StoredProfileChange;
pub use stored::{EncodedPlan, StoredEndpoint, StoredEndpointChange, StoredError};

use fanout::TransitionLog;
use groups::Groups;
use labels::{Interner, Sweep};
use stats::LabelStats;

/// An endpoint's key, `(namespace, name)`; keys are ordered as tuples. Namespaces are
/// shared like other strings (see [`EndpointEntry`]); names are the endpoint's own.
pub type Key = (Arc<str>, Box<str>);

/// One allocation of a key, shared by the endpoint map, the reverse maps and the log.
pub type SharedKey = Arc<Key>;

/// Profile names, in priority order; endpoints naming the same profiles share one list.
pub type ProfileList = Arc<[Arc<str>]>;

/// An endpoint as it is written to the index.
///
/// Strings, labels and lists made by [`EndpointIndex::intern`], [`EndpointIndex::label`]
/// and [`EndpointIndex::profile_list`] are shared with every endpoint that has them; others
/// work the same, but take memory of their own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointEntry {
    pub namespace: Arc<str>,
    pub name: String,
    pub node: Arc<str>,
    /// The endpoint's own labels.
    pub labels: LabelSet,
    /// The names of its profiles, in priority order.
    pub profiles: ProfileList,
    /// The revision of its last change.
    pub resource_version: u64,
}

/// What a filter can see of an endpoint at one revision: its node and effective labels.
/// Cloning it only bumps reference counts.
#[derive(Debug, Clone)]
pub struct State {
    node: Arc<str>,
    /// The endpoint's own labels.
    own: LabelSet,
    /// What the profiles add: for each key `own` lacks, the first profile's value. Kept
    /// apart from `own` rather than merged into a copy of it, so endpoints naming the same
    /// profiles share one set and a profile change does not copy own labels.
    inherited: LabelSet,
}

impl State {
    /// The node the endpoint is on.
    #[must_use]
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The effective labels: own labels, then those the profiles add.
    #[must_use]
    pub fn effective(&self) -> EffectiveLabels<'_> {
        EffectiveLabels {
            own: &self.own,
            inherited: &self.inherited,
        }
    }

    /// Whether `other` has the same node and the same effective labels (however they are
    /// split between own and inherited).
    fn same_as(&self, other: &State) -> bool {
        if self.node != other.node {
            return false;
        }
        if self.own.ptr_eq(&other.own) && self.inherited.ptr_eq(&other.inherited) {
            return true;
        }
        let (mine, theirs) = (self.effective(), other.effective());
        mine.len() == theirs.len() && mine.iter().all(|(k, v)| theirs.get_label(k) == Some(v))
    }
}

#[derive(Debug)]
struct Endpoint {
    key: SharedKey,
    state: State,
    profiles: ProfileList,
    /// The labels `profiles` add to an endpoint with no own labels (shared through
    /// [`Merged`]); `state.inherited` is this minus the keys of own labels.
    base: LabelSet,
    resource_version: u64,
}

/// An endpoint's effective labels: its own labels, then those its profiles add.
#[derive(Debug, Clone, Copy)]
pub struct EffectiveLabels<'a> {
    own: &'a LabelSet,
    inherited: &'a LabelSet,
}

impl<'a> EffectiveLabels<'a> {
    /// Every effective label: the own ones in key order, then the inherited ones.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        self.own.iter().chain(self.inherited.iter())
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
        self.own.get(key).or_else(|| self.inherited.get(key))
    }
}

/// Which endpoints a query or count is about. Empty strings and `None` mean "any".
#[derive(Debug, Clone, Copy, Default)]
pub struct Filter<'a> {
    pub namespace: &'a str,
    pub node: &'a str,
    pub selector: Option<&'a Selector>,
}

impl Filter<'_> {
    /// Whether an endpoint in `namespace` with `state` passes the filter.
    #[must_use]
    pub fn matches(&self, namespace: &str, state: &State) -> bool {
        (self.namespace.is_empty() || self.namespace == namespace)
            && (self.node.is_empty() || self.node == &*state.node)
            && self
                .selector
                .is_none_or(|selector| selector.matches(&state.effective()))
    }
}

/// Slot of an endpoint in [`EndpointIndex::slots`]; stable while the endpoint exists.
type Slot = u32;

/// Endpoints, profiles and the effective labels that join them, plus the watcher groups and
/// transition log of the fan-out; see the module docs.
#[derive(Debug, Default)]
pub struct EndpointIndex {
    /// Every endpoint's slot, in key order, for ordered scans.
    order: BTreeMap<SharedKey, Slot>,
    /// Every endpoint's slot, for point lookups (a hash beats ~17 key comparisons).
    slot_by_key: HashMap<SharedKey, Slot>,
    /// The endpoints, by slot; `None` for free slots. Reverse maps hold slots, so following
    /// one costs an array access rather than a search by key.
    slots: Vec<Option<Endpoint>>,
    free: Vec<Slot>,
    /// node -> the endpoints on it, in key order, so a node's query does not scan the
    /// others. Its keys double as the node names that states share.
    by_node: HashMap<Arc<str>, BTreeMap<SharedKey, Slot>>,
    /// profile name -> labelsToApply.
    profiles: HashMap<Arc<str>, LabelSet>,
    /// profile name -> the endpoints that name it (whether or not it exists yet).
    profile_users: HashMap<Arc<str>, HashSet<Slot>>,
    /// The labels each profile list adds.
    merged: Merged,
    /// Label keys and values, namespaces, node and profile names.
    strings: Interner<str>,
    /// Labels, of strings from `strings`.
    labels: Interner<(Arc<str>, Arc<str>)>,
    /// Profile lists, of names from `strings`.
    profile_lists: Interner<[Arc<str>]>,
    /// The watcher groups of the fan-out and their inverted index.
    groups: Groups,
    /// About how many endpoints have each effective label, to post groups well.
    stats: LabelStats,
    /// Every endpoint transition since `log.start`, for replays.
    log: TransitionLog,
    /// The last revision applied with [`EndpointIndex::apply`] (or set by `reset_log`).
    revision: u64,
    scratch: fanout::Scratch,
}

/// A profile list -> the labels it adds to an endpoint with no own labels, shared by every
/// endpoint naming that list. Entries naming a changed profile are dropped, and so, in
/// sweeps (as in an [`Interner`]), are those of lists no endpoint names any more.
#[derive(Debug, Default)]
struct Merged {
    sets: HashMap<ProfileList, LabelSet>,
    sweep: Sweep,
}

impl Merged {
    /// The labels profiles `names` add to an endpoint with no own labels. Each call that
    /// makes a set makes a new allocation (see [`Rebases`]).
    fn get(&mut self, profiles: &HashMap<Arc<str>, LabelSet>, names: &ProfileList) -> LabelSet {
        if let Some(shared) = self.sets.get(names) {
            return shared.clone();
        }
        // The first profile with a key wins, and of equal keys collecting keeps the last.
        let added: LabelSet = names
            .iter()
            .rev()
            .filter_map(|name| profiles.get(name))
            .flat_map(|applied| applied.labels().iter().cloned())
            .collect();
        self.sweep.maybe(self.sets.len(), || {
            self.sets.retain(|_, set| set.is_shared());
            self.sets.len()
        });
        self.sets.insert(Arc::clone(names), added.clone());
        added
    }
}

/// What profile changes did to one profile list's merged labels.
#[derive(Debug)]
struct Rebase {
    /// The merged labels before, kept alive so that no other set can take its address
    /// (the key of [`Rebases`]) while the entry exists.
    #[expect(
        dead_code,
        reason = "held only to keep the old set's allocation, and so its address, alive"
    )]
    old: LabelSet,
    new: LabelSet,
    /// The keys whose value changed, appeared or disappeared.
    changed: Vec<Arc<str>>,
}

/// [`Rebase`]s by the address of the old merged labels, for one round of profile changes.
/// Two profile lists never share an address, even with equal labels: [`Merged::get`]
/// allocates.
#[derive(Debug, Default)]
struct Rebases(HashMap<usize, Rebase>);

/// What `base` (a profile list's labels) adds to an endpoint whose own labels are `own`:
/// `base` itself, shared, unless an own label shadows one of its keys.
fn shadow(base: &LabelSet, own: &LabelSet) -> LabelSet {
    if base.iter().any(|(key, _)| own.contains_key(key)) {
        base.filter(|key| !own.contains_key(key))
    } else {
        base.clone()
    }
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
        self.order.len()
    }

    /// Whether the index holds no endpoints.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn endpoint(&self, slot: Slot) -> &Endpoint {
        self.slots[slot as usize].as_ref().expect("a live slot")
    }

    fn slot_of(&self, namespace: &str, name: &str) -> Option<Slot> {
        self.slot_by_key.get(&owned_key(namespace, name)).copied()
    }

    /// Inserts endpoints, each replacing any previous entry with its `(namespace, name)`.
    /// Nothing is logged and no events are planned: this is for loading a snapshot.
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
            resource_version,
        } = entry;
        let (key, slot) = self.lookup(namespace, name);
        self.put(key, slot, node, labels, profiles, resource_version);
    }

    /// The index's shared copy of a string (a namespace, a node or profile name).
    pub fn intern(&mut self, value: &str) -> Arc<str> {
        self.strings.intern(value)
    }

    /// The index's shared copy of a label.
    pub fn label(&mut self, key: &str, value: &str) -> Label {
        let label = (self.strings.intern(key), self.strings.intern(value));
        self.labels.intern(&label)
    }

    /// The index's shared copy of a profile list (its names best from [`Self::intern`]).
    pub fn profile_list(&mut self, names: &[Arc<str>]) -> ProfileList {
        self.profile_lists.intern(names)
    }

    /// The index's own allocation of the key and the slot if the endpoint exists, else a
    /// new allocation.
    fn lookup(&self, namespace: Arc<str>, name: String) -> (SharedKey, Option<Slot>) {
        let key = (namespace, name.into_boxed_str());
        match self.slot_by_key.get_key_value(&key) {
            Some((shared, &slot)) => (Arc::clone(shared), Some(slot)),
            None => (Arc::new(key), None),
        }
    }

    /// Inserts the endpoint at `key`, or replaces it in `slot` (its current one, from
    /// `lookup`); returns its slot. Reverse maps are only touched where the node or the
    /// profiles change.
    fn put(
        &mut self,
        key: SharedKey,
        slot: Option<Slot>,
        node: Arc<str>,
        labels: LabelSet,
        profiles: ProfileList,
        resource_version: u64,
    ) -> Slot {
        let old = slot.map(|slot| self.slots[slot as usize].take().expect("a live slot"));
        let base = match &old {
            Some(old) if old.profiles == profiles => old.base.clone(),
            _ => self.merged.get(&self.profiles, &profiles),
        };
        let inherited = shadow(&base, &labels);
        let slot = slot.unwrap_or_else(|| {
            let slot = self.free.pop().unwrap_or_else(|| {
                self.slots.push(None);
                Slot::try_from(self.slots.len() - 1).expect("fewer than 2^32 endpoints")
            });
            self.order.insert(Arc::clone(&key), slot);
            self.slot_by_key.insert(Arc::clone(&key), slot);
            slot
        });
        let node = match &old {
            Some(old) if old.state.node == node => Arc::clone(&old.state.node),
            _ => {
                if let Some(old) = &old {
                    self.unlink_node(old);
                }
                // The node's first endpoint gives the name every later one shares.
                let keys = self.by_node.entry(node);
                let node = Arc::clone(keys.key());
                keys.or_default().insert(Arc::clone(&key), slot);
                node
            }
        };
        if old.as_ref().is_none_or(|old| old.profiles != profiles) {
            if let Some(old) = &old {
                self.unlink_profiles(slot, old);
            }
            for profile in profiles.iter() {
                self.profile_users
                    .entry(Arc::clone(profile))
                    .or_default()
                    .insert(slot);
            }
        }
        let state = State {
            node,
            own: labels,
            inherited,
        };
        self.stats
            .change(old.as_ref().map(|old| &old.state), Some(&state));
        self.slots[slot as usize] = Some(Endpoint {
            key,
            state,
            profiles,
            base,
            resource_version,
        });
        slot
    }

    /// Removes endpoints by key; keys that are not present are ignored.
    pub fn remove_endpoints<'a>(&mut self, keys: impl IntoIterator<Item = (&'a str, &'a str)>) {
        for (namespace, name) in keys {
            self.remove_endpoint(namespace, name);
        }
    }

    /// Removes one endpoint; returns whether it was present.
    pub fn remove_endpoint(&mut self, namespace: &str, name: &str) -> bool {
        self.delete(&owned_key(namespace, name))
    }

    fn delete(&mut self, key: &Key) -> bool {
        let Some(slot) = self.slot_by_key.remove(key) else {
            return false;
        };
        self.order.remove(key);
        let old = self.slots[slot as usize].take().expect("a live slot");
        self.unlink_node(&old);
        self.unlink_profiles(slot, &old);
        self.stats.change(Some(&old.state), None);
        self.free.push(slot);
        true
    }

    /// Drops the endpoint from its node's set.
    fn unlink_node(&mut self, old: &Endpoint) {
        if let Some(keys) = self.by_node.get_mut(&old.state.node) {
            keys.remove(&*old.key);
            if keys.is_empty() {
                self.by_node.remove(&old.state.node);
            }
        }
    }

    /// Drops the endpoint at `slot` from its profiles' user sets.
    fn unlink_profiles(&mut self, slot: Slot, old: &Endpoint) {
        for profile in old.profiles.iter() {
            if let Some(users) = self.profile_users.get_mut(profile) {
                users.remove(&slot);
                if users.is_empty() {
                    self.profile_users.remove(profile);
                }
            }
        }
    }

    /// Records a profile's new `labelsToApply` (`None`: deleted); returns whether that
    /// changed anything. Merged sets naming it are dropped, as are unused ones.
    fn set_profile(&mut self, name: &str, labels: Option<LabelSet>) -> bool {
        let changed = match labels {
            Some(labels) if self.profiles.get(name) != Some(&labels) => {
                let name = self.strings.intern(name);
                self.profiles.insert(name, labels);
                true
            }
            Some(_) => false,
            None => self.profiles.remove(name).is_some(),
        };
        if changed {
            self.merged
                .sets
                .retain(|names, set| set.is_shared() && !names.iter().any(|n| &**n == name));
        }
        changed
    }

    /// Recomputes the inherited labels of the endpoint at `slot` after profile changes;
    /// returns whether they changed. Unchanged labels keep their set (so an unchanged
    /// state keeps pointer-equal parts). `rebases` holds what the changes did to each
    /// profile list's merged labels, worked out once for all endpoints sharing it.
    fn reinherit(&mut self, slot: Slot, rebases: &mut Rebases) -> bool {
        let endpoint = self.slots[slot as usize].as_mut().expect("a live slot");
        let rebase = rebases.0.entry(endpoint.base.addr()).or_insert_with(|| {
            let new = self.merged.get(&self.profiles, &endpoint.profiles);
            let old = &endpoint.base;
            let mut changed: Vec<Arc<str>> = old
                .labels()
                .iter()
                .filter(|label| new.get(&label.0) != Some(&*label.1))
                .map(|label| Arc::clone(&label.0))
                .collect();
            changed.extend(
                new.labels()
                    .iter()
                    .filter(|label| !old.contains_key(&label.0))
                    .map(|label| Arc::clone(&label.0)),
            );
            Rebase {
                old: old.clone(),
                new,
                changed,
            }
        });
        endpoint.base = rebase.new.clone();
        // Inherited labels are the merged ones minus own keys: they change exactly where a
        // changed key is not shadowed by an own label.
        let own = &endpoint.state.own;
        if rebase.changed.iter().all(|key| own.contains_key(key)) {
            return false;
        }
        let inherited = shadow(&rebase.new, own);
        for key in rebase.changed.iter().filter(|key| !own.contains_key(key)) {
            let old = endpoint.state.inherited.get(key);
            self.stats.relabel(key, old, inherited.get(key));
        }
        endpoint.state.inherited = inherited;
        true
    }

    /// Inserts or replaces profiles' `labelsToApply`, then recomputes the effective labels
    /// of the endpoints that name any of them (once each).
    pub fn upsert_profiles(&mut self, profiles: impl IntoIterator<Item = (String, LabelSet)>) {
        let mut changed = Vec::new();
        for (name, labels) in profiles {
            if self.set_profile(&name, Some(labels)) {
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
            .filter(|name| self.set_profile(name, None))
            .collect();
        self.refresh(&changed);
    }

    /// Recomputes the effective labels of the endpoints that name any of `changed`.
    fn refresh<S: AsRef<str>>(&mut self, changed: &[S]) {
        let mut affected: HashSet<Slot> = HashSet::new();
        for name in changed {
            if let Some(users) = self.profile_users.get(name.as_ref()) {
                affected.extend(users);
            }
        }
        let mut rebases = Rebases::default();
        for slot in affected {
            self.reinherit(slot, &mut rebases);
        }
    }

    /// The effective labels of an endpoint, or `None` if it is not in the index.
    #[must_use]
    pub fn effective_labels(&self, namespace: &str, name: &str) -> Option<EffectiveLabels<'_>> {
        self.slot_of(namespace, name)
            .map(|slot| self.endpoint(slot).state.effective())
    }

    /// The resource version of an endpoint, or `None` if it is not in the index.
    #[must_use]
    pub fn resource_version(&self, namespace: &str, name: &str) -> Option<u64> {
        self.slot_of(namespace, name)
            .map(|slot| self.endpoint(slot).resource_version)
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
        self.matching(filter, after)
            .map(|endpoint| &*endpoint.key)
            .take(limit)
            .collect()
    }

    /// How many endpoints pass `filter`.
    #[must_use]
    pub fn count(&self, filter: Filter<'_>) -> usize {
        self.matching(filter, None).count()
    }

    /// Matching endpoints in key order: a range scan of the endpoints (or of one node's
    /// endpoints), bounded to the namespace when there is one, with the selector evaluated
    /// on the cached effective labels.
    fn matching<'s, 'f>(
        &'s self,
        filter: Filter<'f>,
        after: Option<(&str, &str)>,
    ) -> impl Iterator<Item = &'s Endpoint> + use<'s, 'f> {
        let start = start_bound(filter.namespace, after);
        let in_namespace =
            move |key: &Key| filter.namespace.is_empty() || *key.0 == *filter.namespace;
        let candidates: Box<dyn Iterator<Item = (&'s SharedKey, &'s Slot)> + 's> =
            match (&start, filter.node) {
                (None, _) => Box::new(std::iter::empty()),
                (Some(start), "") => Box::new(
                    self.order
                        .range::<Key, _>((start.as_ref(), Bound::Unbounded)),
                ),
                (Some(start), node) => match self.by_node.get(node) {
                    None => Box::new(std::iter::empty()),
                    Some(keys) => {
                        Box::new(keys.range::<Key, _>((start.as_ref(), Bound::Unbounded)))
                    }
                },
            };
        candidates
            .take_while(move |(key, _)| in_namespace(key))
            .map(|(_, &slot)| self.endpoint(slot))
            .filter(move |endpoint| {
                filter
                    .selector
                    .is_none_or(|selector| selector.matches(&endpoint.state.effective()))
            })
    }
}

/// A key to look up with: the maps' keys only borrow as a whole tuple, so this copies the
/// strings (two small allocations).
fn owned_key(namespace: &str, name: &str) -> Key {
    (namespace.into(), name.into())
}

/// Where a scan starts: the later of "after `after`" and "the start of `namespace`";
/// `None` when `after` is already past the namespace.
fn start_bound(namespace: &str, after: Option<(&str, &str)>) -> Option<Bound<Key>> {
    let after_key = |(ns, name)| Bound::Excluded(owned_key(ns, name));
    if namespace.is_empty() {
        return Some(after.map_or(Bound::Unbounded, after_key));
    }
    match after {
        Some(after) if after.0 == namespace => Some(after_key(after)),
        Some(after) if after.0 > namespace => None,
        _ => Some(Bound::Included(owned_key(namespace, ""))),
    }
}

#[cfg(test)]
mod tests;
