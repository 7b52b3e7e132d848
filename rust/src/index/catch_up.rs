//! A watch start's catch-up events (SPEC §6.3, §6.4): which events a new watcher of a
//! group gets before its live events, in the order they are sent, and their wire entries.
//!
//! Every catch-up event carries the snapshot's revision S, not the object's own, so that a
//! watcher's event revisions never decrease: the snapshot at S, its bookmark at S, then
//! live events. ADDED and MODIFIED carry the endpoint as it is now, with its own resource
//! version; DELETED carries only the key the client knew, stamped with S (the client's copy
//! is all there is to go by).
//!
//! The index keeps no bytes: the caller's `current(namespace, name)` gives an endpoint's
//! stored state now, as for [`EndpointIndex::apply_stored`]. Encoding one event at a time
//! lets the caller share an ADDED entry between all the watchers that start at the same S
//! (SPEC §6.7) without this module knowing how.

use super::stored::StoredError;
use super::{EndpointIndex, EventType, FanoutError, GroupId, Key};
use crate::wire;

/// One catch-up event of a watch start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp<'s, 'k> {
    /// ADDED: a matching endpoint the client does not hold.
    Added(&'s Key),
    /// MODIFIED: a matching endpoint the client holds at another resource version.
    Modified(&'s Key),
    /// DELETED: a key the client holds, `(namespace, name)`, that is gone or no longer
    /// matches.
    Deleted(&'k str, &'k str),
}

impl CatchUp<'_, '_> {
    /// The event's `events` entry at snapshot revision `revision`, byte for byte as
    /// `epsync.sync.wire` builds it; `current(namespace, name)` is an endpoint's stored
    /// state now (its bytes and resource version).
    ///
    /// # Errors
    ///
    /// [`StoredError::MissingState`] when `current` does not know an ADDED or MODIFIED
    /// endpoint.
    pub fn encode<'b>(
        &self,
        revision: u64,
        current: impl FnOnce(&str, &str) -> Option<(&'b [u8], u64)>,
    ) -> Result<Vec<u8>, StoredError> {
        let (kind, key) = match *self {
            CatchUp::Added(key) => (EventType::Added, key),
            CatchUp::Modified(key) => (EventType::Modified, key),
            CatchUp::Deleted(namespace, name) => {
                return Ok(wire::deleted_key_entry(namespace, name, revision));
            }
        };
        let Some((stored, version)) = current(&key.0, &key.1) else {
            return Err(StoredError::MissingState {
                namespace: key.0.to_string(),
                name: key.1.to_string(),
                revision,
            });
        };
        Ok(wire::event_entry(kind as u8, stored, version, revision))
    }
}

impl EndpointIndex {
    /// A new watcher's initial events (`send_initial_events` without known versions): ADDED
    /// for every endpoint `group` matches now, in key order (as [`EndpointIndex::query`]).
    ///
    /// # Errors
    ///
    /// [`FanoutError::UnknownGroup`] for an unknown group.
    pub fn initial_events(&self, group: GroupId) -> Result<Vec<CatchUp<'_, 'static>>, FanoutError> {
        let group = self
            .groups
            .get(group)
            .ok_or(FanoutError::UnknownGroup(group))?;
        Ok(self
            .matching(group.filter(), None)
            .map(|endpoint| CatchUp::Added(&endpoint.key))
            .collect())
    }

    /// What turns a client's known versions (`"namespace/name"` -> resource version) into
    /// `group`'s current state ([`EndpointIndex::diff`]): ADDED for each matching endpoint
    /// it lacks, then MODIFIED for each it holds at another version, then DELETED for each
    /// known key that is gone or does not match; each part in key order.
    ///
    /// # Errors
    ///
    /// [`FanoutError::UnknownGroup`] for an unknown group.
    pub fn difference_events<'s, 'k>(
        &'s self,
        group: GroupId,
        known: &[(&'k str, u64)],
    ) -> Result<Vec<CatchUp<'s, 'k>>, FanoutError> {
        let diff = self.diff(group, known)?;
        let mut events =
            Vec::with_capacity(diff.added.len() + diff.modified.len() + diff.deleted.len());
        events.extend(diff.added.into_iter().map(CatchUp::Added));
        events.extend(diff.modified.into_iter().map(CatchUp::Modified));
        events.extend(
            diff.deleted
                .into_iter()
                .map(|(namespace, name)| CatchUp::Deleted(namespace, name)),
        );
        Ok(events)
    }
}

#[cfg(test)]
mod tests;
