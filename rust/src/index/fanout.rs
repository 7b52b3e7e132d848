//! The watch fan-out: which events each watcher group gets for a batch of committed
//! changes, the transition log that replays them, and the known-versions diff.
//!
//! Changes are processed revision by revision. For each revision the old state of every
//! endpoint it touches (the endpoints it changes and the users of the profiles it changes)
//! is noted, all of the revision's changes are applied, and then each touched endpoint's
//! old and new states are compared against every candidate group (see [`super::groups`]):
//! not matching to matching is ADDED, matching to not matching is DELETED, and matching to
//! matching is MODIFIED only when the endpoint itself changed in that revision. A profile
//! change thus sends events only to groups whose match changes (SPEC §6.2).
//!
//! Every transition is also logged with its old and new [`State`] (which share label sets
//! with the live index), so a group can replay what it would have received after any
//! revision still in the log, with the same rules.

use std::collections::VecDeque;
use std::fmt::{self, Display, Formatter};
use std::ops::Range;
use std::sync::Arc;

use foldhash::{HashMap, HashSet};

use super::groups::Group;
use super::{EndpointIndex, Key, LabelSet, ProfileList, Rebases, SharedKey, Slot, State};
use crate::selector::Selector;

pub use super::groups::GroupId;

/// One endpoint change: the endpoint's new value, or `None` when it was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointChange {
    /// The revision of the change; it becomes the endpoint's resource version.
    pub revision: u64,
    pub namespace: Arc<str>,
    pub name: String,
    pub value: Option<EndpointValue>,
}

/// What the fan-out needs of an endpoint that exists; shares strings as an
/// [`EndpointEntry`](super::EndpointEntry) does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointValue {
    pub node: Arc<str>,
    /// Its own labels.
    pub labels: LabelSet,
    /// Its profiles, in priority order.
    pub profiles: ProfileList,
}

/// One profile change: its new `labelsToApply`, or `None` when it was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileChange {
    pub revision: u64,
    pub name: String,
    pub labels: Option<LabelSet>,
}

/// What happened to an endpoint, as far as one group's filter is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum EventType {
    /// It started matching (or was created matching).
    Added = 1,
    /// It changed itself and still matches.
    Modified = 2,
    /// It stopped matching (or was deleted).
    Deleted = 3,
}

impl EventType {
    /// The event for a group that did (`was`) or did not match before and does (`is`) or
    /// does not after; `own_change` says whether the endpoint itself changed.
    #[must_use]
    pub fn between(was: bool, is: bool, own_change: bool) -> Option<Self> {
        match (was, is) {
            (false, true) => Some(EventType::Added),
            (true, true) if own_change => Some(EventType::Modified),
            (true, false) => Some(EventType::Deleted),
            _ => None,
        }
    }

    fn index(self) -> usize {
        self as usize - 1
    }
}

/// An event about one endpoint at one revision; the same for every group that gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub key: SharedKey,
    pub revision: u64,
    pub kind: EventType,
}

/// What [`EndpointIndex::apply`] works out for a batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Each distinct event once, in ascending revision order.
    pub subjects: Vec<Event>,
    /// For each group with at least one event (in ascending id order), where its events'
    /// indices are in `indices`.
    pub groups: Vec<(GroupId, Range<usize>)>,
    /// The groups' indices into `subjects`, each group's ascending; one buffer for all.
    pub indices: Vec<u32>,
}

impl Plan {
    /// Each group with at least one event and the indices into `subjects` of its events.
    #[must_use = "an iterator does nothing unless consumed"]
    pub fn deliveries(&self) -> impl ExactSizeIterator<Item = (GroupId, &[u32])> {
        self.groups
            .iter()
            .map(|(group, range)| (*group, &self.indices[range.clone()]))
    }
}

/// What [`EndpointIndex::replay`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// The events, in revision order.
    Events(Vec<Event>),
    /// Some of the changes after that revision are no longer in the log.
    Expired,
    /// More events than the limit.
    TooMany,
}

/// The difference between a client's known versions and a group's current matches: `added`
/// and `modified` in ascending key order, `deleted` in the order the client sent its keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diff<'s, 'k> {
    /// Matching endpoints the client does not know.
    pub added: Vec<&'s Key>,
    /// Matching endpoints whose resource version differs from the client's.
    pub modified: Vec<&'s Key>,
    /// Known keys that do not exist or do not match; a key without '/' is `("", key)`.
    pub deleted: Vec<(&'k str, &'k str)>,
}

/// Why a fan-out call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FanoutError {
    /// No group has this id.
    UnknownGroup(GroupId),
    /// Changes must come in ascending revision order, after the last revision applied.
    RevisionOrder { revision: u64, after: u64 },
}

impl Display for FanoutError {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            FanoutError::UnknownGroup(id) => write!(f, "no group has id {id}"),
            FanoutError::RevisionOrder { revision, after } => write!(
                f,
                "change at revision {revision} is out of order: it must come after revision {after}"
            ),
        }
    }
}

impl std::error::Error for FanoutError {}

/// One endpoint's states before and after a revision, as logged.
#[derive(Debug, Clone)]
struct Transition {
    revision: u64,
    key: SharedKey,
    old: Option<State>,
    new: Option<State>,
    /// Whether the endpoint itself changed (rather than only a profile it names).
    own_change: bool,
}

impl Transition {
    /// The event this transition means for `group`, if any.
    fn event_for(&self, group: &Group) -> Option<EventType> {
        let namespace = &self.key.0;
        let was = self
            .old
            .as_ref()
            .is_some_and(|state| group.matches(namespace, state));
        let is = self
            .new
            .as_ref()
            .is_some_and(|state| group.matches(namespace, state));
        EventType::between(was, is, self.own_change)
    }
}

/// The transitions of every revision after `start`, oldest first, with the positions of
/// those touching each node.
///
/// A node watcher resuming after revision R is replayed the transitions after R that touch
/// its node. Scanning every transition after R for each of them made a reconnect storm cost
/// (watchers x logged changes): 10,000 node watchers resuming over 5,000 changes spent a
/// sixth of the server's time in the scan. `by_node` holds, per node, the sequence numbers
/// of the transitions whose old or new state is on it (a transition's sequence number is its
/// position counted from the first ever logged), so a node's replay visits only its own.
#[derive(Debug, Default)]
pub(super) struct TransitionLog {
    entries: VecDeque<Transition>,
    start: u64,
    /// The sequence number of `entries[0]`.
    first_seq: u64,
    by_node: HashMap<Arc<str>, VecDeque<u64>>,
}

impl TransitionLog {
    /// The nodes a transition touches: its old state's and its new state's, once each.
    fn nodes(transition: &Transition) -> impl Iterator<Item = &Arc<str>> {
        let old = transition.old.as_ref().map(|state| &state.node);
        let new = transition
            .new
            .as_ref()
            .map(|state| &state.node)
            .filter(|node| Some(*node) != old);
        old.into_iter().chain(new)
    }

    fn push(&mut self, transition: Transition) {
        let seq = self.first_seq + self.entries.len() as u64;
        for node in Self::nodes(&transition) {
            match self.by_node.get_mut(&**node) {
                Some(positions) => positions.push_back(seq),
                None => {
                    self.by_node.insert(Arc::clone(node), VecDeque::from([seq]));
                }
            }
        }
        self.entries.push_back(transition);
    }

    fn pop_front(&mut self) {
        let Some(transition) = self.entries.pop_front() else {
            return;
        };
        for node in Self::nodes(&transition) {
            if let Some(positions) = self.by_node.get_mut(&**node) {
                positions.pop_front(); // this transition's: positions are in log order
                if positions.is_empty() {
                    self.by_node.remove(&**node);
                }
            }
        }
        self.first_seq += 1;
    }

    fn clear(&mut self) {
        self.first_seq += self.entries.len() as u64;
        self.entries.clear();
        self.by_node.clear();
    }

    /// The transitions after revision `after`, in log order: every one, or only those
    /// touching `node` when it is not "".
    fn after<'a>(
        &'a self,
        after: u64,
        node: &str,
    ) -> Box<dyn Iterator<Item = &'a Transition> + 'a> {
        if node.is_empty() {
            let from = self.entries.partition_point(|t| t.revision <= after);
            return Box::new(self.entries.range(from..));
        }
        let Some(positions) = self.by_node.get(node) else {
            return Box::new(std::iter::empty());
        };
        let entry = move |seq: u64| {
            let index =
                usize::try_from(seq - self.first_seq).expect("a logged position fits memory");
            &self.entries[index]
        };
        let from = positions.partition_point(|&seq| entry(seq).revision <= after);
        Box::new(positions.range(from..).map(move |&seq| entry(seq)))
    }
}

/// An endpoint a revision touches, before the revision is applied.
#[derive(Debug)]
struct Touched {
    key: SharedKey,
    /// Its slot: for a profile's user, which the revision cannot delete; for an endpoint
    /// changed itself, the slot it had, then the one it has after (`None`: absent).
    slot: Option<Slot>,
    old: Option<State>,
}

/// How many pending indices a group's buffer keeps room for between batches.
const PENDING_KEPT: usize = 256;

/// Buffers reused across `apply` calls.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    /// Per group slot, the subject indices pending delivery.
    pending: Vec<Vec<u32>>,
    /// The group slots with pending deliveries.
    groups: Vec<Slot>,
    candidates: Vec<Slot>,
    touched: Vec<Touched>,
    /// Addresses of the touched endpoints' keys, as identities (see `apply_revision`).
    seen: HashSet<usize>,
    endpoint_changes: Vec<EndpointChange>,
    profile_changes: Vec<ProfileChange>,
}

/// The revision of the first change of `changes` out of order, given that every change
/// must come after `after` and none before the change preceding it.
fn check_order(revisions: impl Iterator<Item = u64>, after: u64) -> Result<(), FanoutError> {
    let mut previous: Option<u64> = None;
    for revision in revisions {
        if revision <= after || previous.is_some_and(|p| revision < p) {
            return Err(FanoutError::RevisionOrder {
                revision,
                after: previous.unwrap_or(after).max(after),
            });
        }
        previous = Some(revision);
    }
    Ok(())
}

impl EndpointIndex {
    /// Registers a watcher filter and returns its group id; see [`Groups::add`](super::groups::Groups::add).
    pub fn add_group(
        &mut self,
        namespace: &str,
        node: &str,
        selector: Option<&Selector>,
    ) -> GroupId {
        // A selector's `&&` is posted under the operand fewer endpoints satisfy now.
        let stats = &self.stats;
        self.groups
            .add(namespace, node, selector, &|term| stats.estimate(term))
    }

    /// The terms a group is posted under, if it is posted under its selector's terms.
    #[cfg(test)]
    pub(crate) fn group_terms(&self, group: GroupId) -> Option<&[crate::selector::Term]> {
        self.groups.terms(group)
    }

    /// Drops one reference to a group; the last one removes it (its id is never reused).
    ///
    /// # Errors
    ///
    /// [`FanoutError::UnknownGroup`] when no group has id `group` (it was never added, or
    /// its last reference was already released).
    pub fn release_group(&mut self, group: GroupId) -> Result<(), FanoutError> {
        if self.groups.release(group) {
            Ok(())
        } else {
            Err(FanoutError::UnknownGroup(group))
        }
    }

    /// How many distinct groups exist.
    #[must_use]
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// The last revision applied by [`EndpointIndex::apply`] or set by
    /// [`EndpointIndex::reset_log`]; 0 at first.
    #[must_use]
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The oldest revision a replay can start after: every change after it is logged.
    #[must_use]
    pub fn log_start(&self) -> u64 {
        self.log.start
    }

    /// How many transitions the log holds.
    #[must_use]
    pub fn log_len(&self) -> usize {
        self.log.entries.len()
    }

    /// Empties the log and declares the index to be at `revision` (after loading a snapshot).
    pub fn reset_log(&mut self, revision: u64) {
        self.log.clear();
        self.log.start = revision;
        self.revision = revision;
    }

    /// Drops the transitions of revisions up to `revision`; replays then start after it.
    pub fn trim_log(&mut self, revision: u64) {
        while self
            .log
            .entries
            .front()
            .is_some_and(|t| t.revision <= revision)
        {
            self.log.pop_front();
        }
        self.log.start = self.log.start.max(revision);
    }

    /// Applies a batch of committed changes, logs their transitions and works out which
    /// events every affected group gets (see the module docs). Each list must be in
    /// ascending revision order and after [`EndpointIndex::revision`]; a batch that is not
    /// changes nothing.
    ///
    /// # Errors
    ///
    /// [`FanoutError::RevisionOrder`] when a change's revision is not after
    /// [`EndpointIndex::revision`] or is lower than the one before it in its list; nothing is
    /// applied or logged then.
    pub fn apply(
        &mut self,
        endpoint_changes: Vec<EndpointChange>,
        profile_changes: Vec<ProfileChange>,
    ) -> Result<Plan, FanoutError> {
        check_order(endpoint_changes.iter().map(|c| c.revision), self.revision)?;
        check_order(profile_changes.iter().map(|c| c.revision), self.revision)?;
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch
            .pending
            .resize_with(self.groups.slot_count(), Vec::new);
        let mut subjects = Vec::new();
        let mut endpoints = endpoint_changes.into_iter().peekable();
        let mut profiles = profile_changes.into_iter().peekable();
        loop {
            let revision = match (endpoints.peek(), profiles.peek()) {
                (None, None) => break,
                (Some(e), None) => e.revision,
                (None, Some(p)) => p.revision,
                (Some(e), Some(p)) => e.revision.min(p.revision),
            };
            let mut endpoint_changes = std::mem::take(&mut scratch.endpoint_changes);
            let mut profile_changes = std::mem::take(&mut scratch.profile_changes);
            while let Some(change) = endpoints.next_if(|c| c.revision == revision) {
                endpoint_changes.push(change);
            }
            while let Some(change) = profiles.next_if(|c| c.revision == revision) {
                profile_changes.push(change);
            }
            self.apply_revision(
                revision,
                &mut endpoint_changes,
                &mut profile_changes,
                &mut scratch,
                &mut subjects,
            );
            scratch.endpoint_changes = endpoint_changes;
            scratch.profile_changes = profile_changes;
            self.revision = revision;
        }
        scratch
            .groups
            .sort_unstable_by_key(|&slot| self.groups.slot(slot).id);
        let mut plan = Plan {
            subjects,
            groups: Vec::with_capacity(scratch.groups.len()),
            indices: Vec::new(),
        };
        for slot in scratch.groups.drain(..) {
            let pending = &mut scratch.pending[slot as usize];
            let start = plan.indices.len();
            plan.indices.extend_from_slice(pending);
            plan.groups
                .push((self.groups.slot(slot).id, start..plan.indices.len()));
            // Keep the buffer for the next batch, unless a big one made it big.
            pending.clear();
            pending.shrink_to(PENDING_KEPT);
        }
        self.scratch = scratch;
        Ok(plan)
    }

    fn apply_revision(
        &mut self,
        revision: u64,
        endpoint_changes: &mut Vec<EndpointChange>,
        profile_changes: &mut Vec<ProfileChange>,
        scratch: &mut Scratch,
        subjects: &mut Vec<Event>,
    ) {
        let mut touched = std::mem::take(&mut scratch.touched);
        // Note every touched endpoint's old state before anything changes.
        let mut own = Vec::with_capacity(endpoint_changes.len());
        for change in endpoint_changes.drain(..) {
            let (key, slot) = self.lookup(change.namespace, change.name);
            let old = slot.map(|slot| self.endpoint(slot).state.clone());
            scratch.seen.insert(Arc::as_ptr(&key).addr());
            touched.push(Touched {
                key: Arc::clone(&key),
                slot,
                old,
            });
            own.push((key, slot, change.value));
        }
        let own_changes = touched.len();
        let mut profiles_changed = false;
        for change in profile_changes.drain(..) {
            if !self.set_profile(&change.name, change.labels) {
                continue;
            }
            profiles_changed = true;
            let Some(users) = self.profile_users.get(change.name.as_str()) else {
                continue;
            };
            for &slot in users {
                let endpoint = self.endpoint(slot);
                // Endpoints share one key allocation with the index, so its address is the
                // endpoint's identity within the revision.
                if scratch.seen.insert(Arc::as_ptr(&endpoint.key).addr()) {
                    touched.push(Touched {
                        key: Arc::clone(&endpoint.key),
                        slot: Some(slot),
                        old: Some(endpoint.state.clone()),
                    });
                }
            }
        }
        scratch.seen.clear();
        // Apply the revision: profiles first (above), then endpoints, then the effective
        // labels of the profiles' other users.
        for (i, (key, slot, value)) in own.into_iter().enumerate() {
            touched[i].slot = if let Some(value) = value {
                Some(self.put(
                    key,
                    slot,
                    value.node,
                    value.labels,
                    value.profiles,
                    revision,
                ))
            } else {
                self.delete(&key);
                None
            };
        }
        if profiles_changed {
            // Every touched endpoint that still exists, including those changed themselves:
            // `put` kept their profiles' merged labels from before this revision's profile
            // changes when their profile list stayed the same.
            let mut rebases = Rebases::default();
            for slot in touched.iter().filter_map(|touched| touched.slot) {
                self.reinherit(slot, &mut rebases);
            }
        }
        // Compare, plan and log.
        for (i, Touched { key, slot, old }) in touched.drain(..).enumerate() {
            let own_change = i < own_changes;
            let new = slot.map(|slot| self.endpoint(slot).state.clone());
            let unchanged = match (&old, &new) {
                (None, None) => true,
                (Some(old), Some(new)) if !own_change => {
                    // Node and own labels are the same; `reinherit` replaced the inherited
                    // set only if its contents changed.
                    let unchanged = old.inherited.ptr_eq(&new.inherited);
                    debug_assert_eq!(unchanged, old.same_as(new));
                    unchanged
                }
                _ => false,
            };
            if unchanged {
                continue;
            }
            let transition = Transition {
                revision,
                key,
                old,
                new,
                own_change,
            };
            self.plan(&transition, scratch, subjects);
            self.log.push(transition);
        }
        scratch.touched = touched;
    }

    /// Adds the events of one transition for every group it affects.
    fn plan(&mut self, transition: &Transition, scratch: &mut Scratch, subjects: &mut Vec<Event>) {
        scratch.candidates.clear();
        let namespace = &transition.key.0;
        match (&transition.old, &transition.new) {
            // Only a profile changed: node and own labels are the same, so only groups that
            // read a key whose inherited value changed can flip (and none gets MODIFIED).
            (Some(old), Some(new)) if !transition.own_change => {
                let (old, new) = (&old.inherited, &new.inherited);
                let changed = old
                    .iter()
                    .filter(|(key, value)| new.get(key) != Some(*value))
                    .map(|(key, _)| key)
                    .chain(
                        new.iter()
                            .filter(|(key, _)| !old.contains_key(key))
                            .map(|(key, _)| key),
                    );
                self.groups
                    .readers_of(namespace, changed, &mut scratch.candidates);
            }
            (old, new) => {
                self.groups
                    .candidates(namespace, old.iter().chain(new), &mut scratch.candidates);
            }
        }
        let mut subject: [Option<u32>; 3] = [None; 3];
        for &slot in &scratch.candidates {
            let Some(kind) = transition.event_for(self.groups.slot(slot)) else {
                continue;
            };
            let index = *subject[kind.index()].get_or_insert_with(|| {
                subjects.push(Event {
                    key: Arc::clone(&transition.key),
                    revision: transition.revision,
                    kind,
                });
                u32::try_from(subjects.len() - 1).expect("fewer than 2^32 events in a batch")
            });
            let pending = &mut scratch.pending[slot as usize];
            if pending.is_empty() {
                scratch.groups.push(slot);
            }
            pending.push(index);
        }
    }

    /// The events `group` would have received live for every revision after `after`, in
    /// revision order; [`Replay::Expired`] when the log no longer reaches back to `after`,
    /// [`Replay::TooMany`] when there are more than `limit` (0: no limit).
    ///
    /// # Errors
    ///
    /// [`FanoutError::UnknownGroup`] when no group has id `group`.
    pub fn replay(&self, group: GroupId, after: u64, limit: usize) -> Result<Replay, FanoutError> {
        self.replay_part(group, after, limit, 0)
            .map(|(replay, _)| replay)
    }

    /// [`EndpointIndex::replay`] over part of the log: it visits about `max_visits` logged
    /// transitions at most (0: all), always whole revisions, and returns with the events the
    /// revision it got through when it stopped short of the log's end (`None`: it got to the
    /// end). A caller replaying a long log part by part (from that
    /// revision on) never holds its thread for long: a selector watcher's replay evaluates
    /// its selector for every logged change.
    ///
    /// # Errors
    ///
    /// [`FanoutError::UnknownGroup`] when no group has id `group`.
    pub fn replay_part(
        &self,
        group: GroupId,
        after: u64,
        limit: usize,
        max_visits: usize,
    ) -> Result<(Replay, Option<u64>), FanoutError> {
        let group = self
            .groups
            .get(group)
            .ok_or(FanoutError::UnknownGroup(group))?;
        if after < self.log.start {
            return Ok((Replay::Expired, None));
        }
        let limit = if limit == 0 { usize::MAX } else { limit };
        let max_visits = if max_visits == 0 {
            usize::MAX
        } else {
            max_visits
        };
        let mut events = Vec::new();
        let mut last = None;
        for (visited, transition) in self.log.after(after, &group.node).enumerate() {
            if visited >= max_visits && last != Some(transition.revision) {
                return Ok((Replay::Events(events), last));
            }
            last = Some(transition.revision);
            if let Some(kind) = transition.event_for(group) {
                if events.len() == limit {
                    return Ok((Replay::TooMany, None));
                }
                events.push(Event {
                    key: Arc::clone(&transition.key),
                    revision: transition.revision,
                    kind,
                });
            }
        }
        Ok((Replay::Events(events), None))
    }

    /// The difference between `known` (`("namespace/name", resource_version)` pairs, keys
    /// unique) and the endpoints `group` matches now; see [`Diff`].
    ///
    /// # Errors
    ///
    /// [`FanoutError::UnknownGroup`] when no group has id `group`.
    pub fn diff<'s, 'k>(
        &'s self,
        group: GroupId,
        known: &[(&'k str, u64)],
    ) -> Result<Diff<'s, 'k>, FanoutError> {
        let group = self
            .groups
            .get(group)
            .ok_or(FanoutError::UnknownGroup(group))?;
        let mut diff = Diff::default();
        // Known keys by their parts, each with its version and whether it matched. A hash
        // lookup per matching endpoint, rather than sorting the client's keys to merge them
        // with the index's key order: with thousands of known keys the sort's string
        // comparisons were most of the difference's cost (and of the event loop's stall).
        let parts: Vec<Option<(&str, &str)>> =
            known.iter().map(|&(key, _)| key_parts(key)).collect();
        let mut known_keys: HashMap<(&str, &str), (u64, bool)> =
            HashMap::with_capacity_and_hasher(known.len(), foldhash::fast::RandomState::default());
        for (&(_, version), parts) in known.iter().zip(&parts) {
            if let Some(parts) = *parts {
                known_keys.insert(parts, (version, false));
            }
        }
        for endpoint in self.matching(group.filter(), None) {
            let key = (&*endpoint.key.0, &*endpoint.key.1);
            match known_keys.get_mut(&key) {
                Some((version, matched)) => {
                    *matched = true;
                    if *version != endpoint.resource_version {
                        diff.modified.push(&endpoint.key);
                    }
                }
                None => diff.added.push(&endpoint.key),
            }
        }
        for (&(key, _), parts) in known.iter().zip(parts) {
            match parts {
                Some(parts) if known_keys.get(&parts).is_some_and(|&(_, matched)| matched) => {}
                Some(parts) => diff.deleted.push(parts),
                None => diff.deleted.push(("", key)),
            }
        }
        Ok(diff)
    }
}

/// `"namespace/name"` split at its first '/'. A byte search: `str::split_once` with a `char`
/// pattern costs a `memcmp` per match, which showed up as the largest single cost of a
/// difference over thousands of known keys.
fn key_parts(key: &str) -> Option<(&str, &str)> {
    let slash = key.bytes().position(|byte| byte == b'/')?;
    // '/' is ASCII, so both sides of it are on character boundaries.
    Some((&key[..slash], &key[slash + 1..]))
}

#[cfg(test)]
mod tests;
