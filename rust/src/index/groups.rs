//! Watcher groups: distinct filters shared by reference count, and an inverted index over
//! them so a change evaluates only the groups it can affect.
//!
//! Each group is posted under exactly one of: its node; the terms of its selector's
//! requirement (see [`Expr::requirement`](crate::selector::Expr::requirement)), within its
//! namespace; its namespace; or, with none of those, the unconditional list. An endpoint
//! state can only match a group posted under a node, term or namespace the state has, so
//! the candidates for a change are the postings its old and new states hit, plus the
//! unconditional list.
//!
//! A change that leaves an endpoint's node and own labels alone (a profile edit) can only
//! flip groups whose selector reads a label whose effective value changed, so groups are
//! also indexed by the keys their selector reads (within their namespace), and such a
//! change only evaluates the groups that read a changed key.

use foldhash::HashMap;

use super::{Filter, State};
use crate::selector::{Selector, Term};

/// The public, never reused identifier of a group.
pub type GroupId = u64;

/// Where a group is internally stored; reused after the group is removed.
type Slot = u32;

/// Where a group is posted in the inverted index.
#[derive(Debug, Clone)]
enum Posting {
    Node(String),
    /// One posting per term; no terms means the selector matches nothing.
    Terms(Vec<Term>),
    Namespace(String),
    Unconditional,
}

/// A distinct watcher filter.
#[derive(Debug)]
pub struct Group {
    pub id: GroupId,
    /// "" = any namespace.
    pub namespace: String,
    /// "" = any node.
    pub node: String,
    /// `None` = every endpoint (a selector that matches everything is stored as `None`).
    pub selector: Option<Selector>,
    refs: usize,
    posting: Posting,
}

impl Group {
    /// The group's filter.
    #[must_use]
    pub fn filter(&self) -> Filter<'_> {
        Filter {
            namespace: &self.namespace,
            node: &self.node,
            selector: self.selector.as_ref(),
        }
    }

    /// Whether an endpoint in `namespace` with `state` passes the group's filter.
    #[must_use]
    pub fn matches(&self, namespace: &str, state: &State) -> bool {
        self.filter().matches(namespace, state)
    }
}

/// The groups posted under one label key: for the key itself and for each of its values.
#[derive(Debug, Default)]
struct KeyPostings {
    any: Vec<Slot>,
    values: HashMap<String, Vec<Slot>>,
}

/// The identity of a filter: namespace, node and canonical selector ("" for none).
type FilterKey = (String, String, String);

/// Per namespace ("" for groups of any namespace), per label key.
type ByNamespaceAndKey<T> = HashMap<String, HashMap<String, T>>;

/// The groups and their inverted index; see the module docs.
#[derive(Debug, Default)]
pub struct Groups {
    slots: Vec<Option<Group>>,
    free: Vec<Slot>,
    by_id: HashMap<GroupId, Slot>,
    by_filter: HashMap<FilterKey, Slot>,
    last_id: GroupId,
    by_node: HashMap<String, Vec<Slot>>,
    by_label: ByNamespaceAndKey<KeyPostings>,
    by_namespace: HashMap<String, Vec<Slot>>,
    /// The groups whose selector reads each key.
    readers: ByNamespaceAndKey<Vec<Slot>>,
    unconditional: Vec<Slot>,
    /// Per slot, the last `generation` that collected it: de-duplicates candidates without
    /// clearing a set per change.
    seen: Vec<u32>,
    generation: u32,
}

fn remove_slot(list: &mut Vec<Slot>, slot: Slot) {
    if let Some(at) = list.iter().position(|&s| s == slot) {
        list.swap_remove(at);
    }
}

impl Groups {
    /// How many distinct groups exist.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The terms the group is posted under, if it is posted under its selector's terms.
    #[cfg(test)]
    pub fn terms(&self, id: GroupId) -> Option<&[Term]> {
        match &self.get(id)?.posting {
            Posting::Terms(terms) => Some(terms),
            _ => None,
        }
    }

    /// How many slots there are (live or free): an upper bound on slot numbers.
    #[must_use]
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The group with this id, if it exists.
    #[must_use]
    pub fn get(&self, id: GroupId) -> Option<&Group> {
        self.by_id.get(&id).map(|&slot| self.slot(slot))
    }

    /// The group in `slot`, which must be live.
    #[must_use]
    pub fn slot(&self, slot: Slot) -> &Group {
        self.slots[slot as usize]
            .as_ref()
            .expect("a live group slot")
    }

    /// Registers a filter and returns its group's id; an identical filter (same namespace,
    /// node and canonical selector, a selector matching everything counting as none) gets
    /// the existing group's id with its reference count raised. `cost` estimates how many
    /// endpoints satisfy a term, to choose between the operands of an `&&`.
    pub fn add(
        &mut self,
        namespace: &str,
        node: &str,
        selector: Option<&Selector>,
        cost: &dyn Fn(&Term) -> u64,
    ) -> GroupId {
        let selector = selector.filter(|selector| !selector.is_all());
        let filter_key = (
            namespace.to_owned(),
            node.to_owned(),
            selector.map_or_else(String::new, |s| s.canonical().to_owned()),
        );
        if let Some(&slot) = self.by_filter.get(&filter_key) {
            let group = self.slots[slot as usize]
                .as_mut()
                .expect("a live group slot");
            group.refs += 1;
            return group.id;
        }
        let posting = if !node.is_empty() {
            Posting::Node(node.to_owned())
        } else if let Some(terms) = selector.and_then(|s| s.requirement_by(cost)) {
            Posting::Terms(terms)
        } else if !namespace.is_empty() {
            Posting::Namespace(namespace.to_owned())
        } else {
            Posting::Unconditional
        };
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.seen.push(0);
            Slot::try_from(self.slots.len() - 1).expect("fewer than 2^32 groups")
        });
        self.post(slot, namespace, &posting);
        if let Some(selector) = selector {
            let readers = self.readers.entry(namespace.to_owned()).or_default();
            for key in selector.keys() {
                readers.entry(key.to_owned()).or_default().push(slot);
            }
        }
        self.last_id += 1;
        let id = self.last_id;
        self.slots[slot as usize] = Some(Group {
            id,
            namespace: namespace.to_owned(),
            node: node.to_owned(),
            selector: selector.cloned(),
            refs: 1,
            posting,
        });
        self.by_id.insert(id, slot);
        self.by_filter.insert(filter_key, slot);
        id
    }

    /// Drops one reference to the group; the last one removes it. Returns `false` when no
    /// group has this id.
    pub fn release(&mut self, id: GroupId) -> bool {
        let Some(&slot) = self.by_id.get(&id) else {
            return false;
        };
        let group = self.slots[slot as usize]
            .as_mut()
            .expect("a live group slot");
        group.refs -= 1;
        if group.refs > 0 {
            return true;
        }
        let group = self.slots[slot as usize].take().expect("a live group slot");
        self.unpost(slot, &group.namespace, &group.posting);
        if let Some(selector) = &group.selector
            && let Some(readers) = self.readers.get_mut(&group.namespace)
        {
            for key in selector.keys() {
                if let Some(list) = readers.get_mut(key) {
                    remove_slot(list, slot);
                    if list.is_empty() {
                        readers.remove(key);
                    }
                }
            }
            if readers.is_empty() {
                self.readers.remove(&group.namespace);
            }
        }
        self.by_id.remove(&id);
        self.by_filter.remove(&(
            group.namespace,
            group.node,
            group
                .selector
                .map_or_else(String::new, |s| s.canonical().to_owned()),
        ));
        self.free.push(slot);
        true
    }

    fn post(&mut self, slot: Slot, namespace: &str, posting: &Posting) {
        match posting {
            Posting::Node(node) => self.by_node.entry(node.clone()).or_default().push(slot),
            Posting::Terms(terms) => {
                let by_label = self.by_label.entry(namespace.to_owned()).or_default();
                for term in terms {
                    match term {
                        Term::Label(key, value) => by_label
                            .entry(key.clone())
                            .or_default()
                            .values
                            .entry(value.clone())
                            .or_default()
                            .push(slot),
                        Term::Key(key) => by_label.entry(key.clone()).or_default().any.push(slot),
                    }
                }
            }
            Posting::Namespace(namespace) => self
                .by_namespace
                .entry(namespace.clone())
                .or_default()
                .push(slot),
            Posting::Unconditional => self.unconditional.push(slot),
        }
    }

    fn unpost(&mut self, slot: Slot, namespace: &str, posting: &Posting) {
        match posting {
            Posting::Node(node) => {
                if let Some(list) = self.by_node.get_mut(node) {
                    remove_slot(list, slot);
                    if list.is_empty() {
                        self.by_node.remove(node);
                    }
                }
            }
            Posting::Terms(terms) => {
                let Some(by_label) = self.by_label.get_mut(namespace) else {
                    return;
                };
                for term in terms {
                    let key = match term {
                        Term::Label(key, _) | Term::Key(key) => key,
                    };
                    let Some(postings) = by_label.get_mut(key) else {
                        continue;
                    };
                    match term {
                        Term::Label(_, value) => {
                            if let Some(list) = postings.values.get_mut(value) {
                                remove_slot(list, slot);
                                if list.is_empty() {
                                    postings.values.remove(value);
                                }
                            }
                        }
                        Term::Key(_) => remove_slot(&mut postings.any, slot),
                    }
                    if postings.any.is_empty() && postings.values.is_empty() {
                        by_label.remove(key);
                    }
                }
                if by_label.is_empty() {
                    self.by_label.remove(namespace);
                }
            }
            Posting::Namespace(namespace) => {
                if let Some(list) = self.by_namespace.get_mut(namespace) {
                    remove_slot(list, slot);
                    if list.is_empty() {
                        self.by_namespace.remove(namespace);
                    }
                }
            }
            Posting::Unconditional => remove_slot(&mut self.unconditional, slot),
        }
    }

    /// Starts a new round of de-duplication and returns its mark.
    fn next_generation(&mut self) -> u32 {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.seen.fill(0);
            self.generation = 1;
        }
        self.generation
    }

    /// Appends to `out` (once each) the slots of every group an endpoint in `namespace`
    /// could match in any of `states`: the groups of their nodes, of the terms their
    /// effective labels satisfy (cluster-wide and in the namespace), of the namespace, and
    /// the unconditional ones.
    pub fn candidates<'s>(
        &mut self,
        namespace: &str,
        states: impl IntoIterator<Item = &'s State>,
        out: &mut Vec<Slot>,
    ) {
        // A group has one posting kind, and the unconditional and namespace lists do not
        // depend on the state, so only node and label postings need de-duplicating.
        out.extend_from_slice(&self.unconditional);
        if let Some(list) = self.by_namespace.get(namespace) {
            out.extend_from_slice(list);
        }
        let generation = self.next_generation();
        let seen = &mut self.seen;
        let mut collect = |list: &[Slot]| {
            for &slot in list {
                let mark = &mut seen[slot as usize];
                if *mark != generation {
                    *mark = generation;
                    out.push(slot);
                }
            }
        };
        let label_maps = [self.by_label.get(""), self.by_label.get(namespace)];
        let label_maps = label_maps.iter().flatten();
        for state in states {
            if let Some(list) = self.by_node.get(&*state.node) {
                collect(list);
            }
            for by_label in label_maps.clone() {
                for (key, value) in state.effective().iter() {
                    if let Some(postings) = by_label.get(key) {
                        collect(&postings.any);
                        if let Some(list) = postings.values.get(value) {
                            collect(list);
                        }
                    }
                }
            }
        }
    }

    /// Appends to `out` (once each) the slots of every group of an endpoint in `namespace`
    /// whose selector reads one of `keys`.
    pub fn readers_of<'k>(
        &mut self,
        namespace: &str,
        keys: impl IntoIterator<Item = &'k str>,
        out: &mut Vec<Slot>,
    ) {
        let generation = self.next_generation();
        let readers = [self.readers.get(""), self.readers.get(namespace)];
        if readers.iter().all(Option::is_none) {
            return;
        }
        for key in keys {
            for list in readers
                .iter()
                .flatten()
                .filter_map(|by_key| by_key.get(key))
            {
                for &slot in list {
                    let mark = &mut self.seen[slot as usize];
                    if *mark != generation {
                        *mark = generation;
                        out.push(slot);
                    }
                }
            }
        }
    }
}
