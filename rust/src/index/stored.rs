//! The index fed with resources as the store keeps them (encoded bytes, without
//! resource version), and a batch's watch events handed back as ready-to-send wire entries.
//!
//! [`EndpointIndex::apply_stored`] decodes what the index reads of each change
//! ([`crate::model::view`]), applies the batch as [`EndpointIndex::apply`] does, and encodes
//! each planned event once ([`crate::wire`]), with the object's state at the event's
//! revision (SPEC §6.8):
//!
//! - ADDED and MODIFIED at r carry the endpoint as it was at r, with its own
//!   resource version (the revision of its last change at or before r);
//! - DELETED at r carries the last state that matched, the one just before r, with
//!   resource version r.
//!
//! Those states come from the batch itself (each change's value, and the `previous` state
//! it ends) for endpoints the batch changes, and from the caller's `current` for the others
//! (only profile changes give those events): the index keeps no bytes, so whoever keeps them
//! (the binding layer, beside the cache's own copy) answers for the state before the batch.

use std::fmt::{self, Display, Formatter};

use foldhash::HashMap;

use super::{EndpointChange, EndpointEntry, EndpointIndex, EndpointValue, FanoutError, Plan};
use super::{Event, EventType, LabelSet, ProfileChange, ProfileList};
use crate::model::messages::Labels;
use crate::model::view::{endpoint_fields, profile_labels};
use crate::wire;

/// One committed endpoint change, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredEndpointChange<'a> {
    /// The revision of the change; the new value's resource version.
    pub revision: u64,
    pub namespace: &'a str,
    pub name: &'a str,
    /// The stored bytes after the change; `None` for a delete.
    pub value: Option<&'a [u8]>,
    /// The stored bytes before the change; `None` when the endpoint did not exist.
    pub previous: Option<&'a [u8]>,
    /// The resource version of `previous`.
    pub previous_version: u64,
}

/// One committed profile change, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredProfileChange<'a> {
    pub revision: u64,
    pub name: &'a str,
    /// The stored bytes after the change; `None` for a delete.
    pub value: Option<&'a [u8]>,
}

/// An endpoint of a snapshot, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredEndpoint<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub resource_version: u64,
    pub stored: &'a [u8],
}

/// A batch's plan with every event encoded: `entries[i]` is the `events` entry of
/// `plan.subjects[i]`, the same bytes for every group that gets it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EncodedPlan {
    pub plan: Plan,
    pub entries: Vec<Vec<u8>>,
}

impl EncodedPlan {
    /// Each group with events and its events as `(revision, entry indices)` chunks, in
    /// revision order: one chunk per revision.
    #[must_use = "an iterator does nothing unless consumed"]
    pub fn chunks(&self) -> impl Iterator<Item = (super::GroupId, Vec<(u64, &[u32])>)> {
        self.plan.deliveries().map(|(group, indices)| {
            let mut chunks: Vec<(u64, &[u32])> = Vec::new();
            let mut start = 0;
            for end in 1..=indices.len() {
                let revision = self.plan.subjects[indices[start] as usize].revision;
                if end == indices.len()
                    || self.plan.subjects[indices[end] as usize].revision != revision
                {
                    chunks.push((revision, &indices[start..end]));
                    start = end;
                }
            }
            (group, chunks)
        })
    }
}

/// Why stored changes could not be applied or their events encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredError {
    /// A value is not an encoded resource of its kind; nothing was applied.
    Decode {
        kind: &'static str,
        key: String,
        revision: u64,
        message: String,
    },
    /// The changes are out of order; nothing was applied.
    Fanout(FanoutError),
    /// An event needs the state of an endpoint the batch did not change, and `current` did
    /// not know it. The batch has been applied (the caller's bytes do not follow the index).
    MissingState {
        namespace: String,
        name: String,
        revision: u64,
    },
}

impl Display for StoredError {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            StoredError::Decode {
                kind,
                key,
                revision,
                message,
            } => write!(
                f,
                "{key} at revision {revision} is not an encoded epsync.v1.{kind}: {message}"
            ),
            StoredError::Fanout(error) => error.fmt(f),
            StoredError::MissingState {
                namespace,
                name,
                revision,
            } => write!(
                f,
                "no stored state of {namespace}/{name} for its event at revision {revision}"
            ),
        }
    }
}

impl std::error::Error for StoredError {}

impl From<FanoutError> for StoredError {
    fn from(error: FanoutError) -> Self {
        StoredError::Fanout(error)
    }
}

fn decode_error(
    kind: &'static str,
    key: String,
    revision: u64,
    error: &prost::DecodeError,
) -> StoredError {
    StoredError::Decode {
        kind,
        key,
        revision,
        message: error.to_string(),
    }
}

/// An endpoint's or a profile's stored state: its bytes and resource version.
type StateRef<'a> = Option<(&'a [u8], u64)>;

impl EndpointIndex {
    fn stored_value(&mut self, stored: &[u8]) -> Result<EndpointValue, prost::DecodeError> {
        let fields = endpoint_fields(stored)?;
        let labels = self.intern_labels(&fields.labels);
        let names: Vec<_> = fields
            .profiles
            .iter()
            .map(|name| self.intern(name))
            .collect();
        let profiles: ProfileList = self.profile_list(&names);
        Ok(EndpointValue {
            node: self.intern(&fields.node),
            labels,
            profiles,
        })
    }

    fn intern_labels(&mut self, labels: &Labels) -> LabelSet {
        labels
            .iter()
            .map(|(key, value)| self.label(key, value))
            .collect()
    }

    fn stored_profile(
        &mut self,
        name: &str,
        revision: u64,
        stored: &[u8],
    ) -> Result<LabelSet, StoredError> {
        let labels = profile_labels(stored)
            .map_err(|error| decode_error("Profile", name.to_owned(), revision, &error))?;
        Ok(self.intern_labels(&labels))
    }

    /// Inserts a snapshot: `profiles` as `(name, stored bytes)`, then `endpoints`, each
    /// replacing any previous entry with its key. Nothing is logged or planned.
    ///
    /// # Errors
    ///
    /// [`StoredError::Decode`] (revision 0) when a value does not decode; nothing is
    /// inserted then.
    pub fn load_stored(
        &mut self,
        endpoints: &[StoredEndpoint<'_>],
        profiles: &[(&str, &[u8])],
    ) -> Result<(), StoredError> {
        let mut profile_entries = Vec::with_capacity(profiles.len());
        for &(name, stored) in profiles {
            profile_entries.push((name.to_owned(), self.stored_profile(name, 0, stored)?));
        }
        let mut entries = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let value = self.stored_value(endpoint.stored).map_err(|error| {
                let key = format!("{}/{}", endpoint.namespace, endpoint.name);
                decode_error("WorkloadEndpoint", key, 0, &error)
            })?;
            entries.push(EndpointEntry {
                namespace: self.intern(endpoint.namespace),
                name: endpoint.name.to_owned(),
                node: value.node,
                labels: value.labels,
                profiles: value.profiles,
                resource_version: endpoint.resource_version,
            });
        }
        self.upsert_profiles(profile_entries);
        self.upsert_endpoints(entries);
        Ok(())
    }

    /// Applies a batch of stored changes as [`EndpointIndex::apply`] does and encodes its
    /// events (see the module docs). `current(namespace, name)` is an endpoint's stored
    /// state before the batch; it is asked only about endpoints the batch does not change.
    ///
    /// # Errors
    ///
    /// [`StoredError::Decode`] and [`StoredError::Fanout`] leave the index unchanged;
    /// [`StoredError::MissingState`] comes after the batch is applied.
    pub fn apply_stored<'b>(
        &mut self,
        endpoint_changes: &[StoredEndpointChange<'_>],
        profile_changes: &[StoredProfileChange<'_>],
        current: impl Fn(&str, &str) -> StateRef<'b>,
    ) -> Result<EncodedPlan, StoredError> {
        let mut endpoints = Vec::with_capacity(endpoint_changes.len());
        for change in endpoint_changes {
            let value = match change.value {
                Some(stored) => Some(self.stored_value(stored).map_err(|error| {
                    let key = format!("{}/{}", change.namespace, change.name);
                    decode_error("WorkloadEndpoint", key, change.revision, &error)
                })?),
                None => None,
            };
            endpoints.push(EndpointChange {
                revision: change.revision,
                namespace: self.intern(change.namespace),
                name: change.name.to_owned(),
                value,
            });
        }
        let mut profiles = Vec::with_capacity(profile_changes.len());
        for change in profile_changes {
            let labels = match change.value {
                Some(stored) => Some(self.stored_profile(change.name, change.revision, stored)?),
                None => None,
            };
            profiles.push(ProfileChange {
                revision: change.revision,
                name: change.name.to_owned(),
                labels,
            });
        }
        let plan = self.apply(endpoints, profiles)?;
        let states = BatchStates::new(endpoint_changes);
        let mut entries = Vec::with_capacity(plan.subjects.len());
        for event in &plan.subjects {
            entries.push(states.encode(event, &current)?);
        }
        Ok(EncodedPlan { plan, entries })
    }
}

/// The stored states a batch goes through, per endpoint it changes.
struct BatchStates<'c, 'a> {
    changes: &'c [StoredEndpointChange<'a>],
    /// (namespace, name) -> indices into `changes`, in revision order.
    by_key: HashMap<(&'a str, &'a str), Vec<usize>>,
}

impl<'c, 'a> BatchStates<'c, 'a> {
    fn new(changes: &'c [StoredEndpointChange<'a>]) -> Self {
        let mut by_key: HashMap<(&'a str, &'a str), Vec<usize>> = HashMap::default();
        for (i, change) in changes.iter().enumerate() {
            by_key
                .entry((change.namespace, change.name))
                .or_default()
                .push(i);
        }
        BatchStates { changes, by_key }
    }

    /// The endpoint's stored state in effect at `revision`; `None` inside means it did not
    /// exist then, an outer `None` that the batch does not change it.
    fn state_at(&self, namespace: &str, name: &str, revision: u64) -> Option<StateRef<'a>> {
        let indices = self.by_key.get(&(namespace, name))?;
        let applied = indices.partition_point(|&i| self.changes[i].revision <= revision);
        Some(if applied == 0 {
            let first = &self.changes[indices[0]];
            first
                .previous
                .map(|stored| (stored, first.previous_version))
        } else {
            let last = &self.changes[indices[applied - 1]];
            last.value.map(|stored| (stored, last.revision))
        })
    }

    fn encode<'b>(
        &self,
        event: &Event,
        current: &impl Fn(&str, &str) -> StateRef<'b>,
    ) -> Result<Vec<u8>, StoredError> {
        let (namespace, name) = (&*event.key.0, &*event.key.1);
        // A DELETED event carries the last state that matched: the one before its revision.
        let at = match event.kind {
            EventType::Deleted => event.revision - 1,
            EventType::Added | EventType::Modified => event.revision,
        };
        let state = self
            .state_at(namespace, name, at)
            .unwrap_or_else(|| current(namespace, name));
        let Some((stored, version)) = state else {
            return Err(StoredError::MissingState {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                revision: event.revision,
            });
        };
        let version = match event.kind {
            EventType::Deleted => event.revision,
            EventType::Added | EventType::Modified => version,
        };
        Ok(wire::event_entry(
            event.kind as u8,
            stored,
            version,
            event.revision,
        ))
    }
}

#[cfg(test)]
mod tests;
