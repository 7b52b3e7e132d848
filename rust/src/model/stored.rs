//! From a request's encoded resource to the bytes the store keeps: decode, validate and
//! normalise ([`super::validate`]), stamp the server-owned metadata, encode
//! deterministically. What `epsync.model.kinds.ResourceType.encode(normalize(obj))` does in
//! Python, for a whole batch, without Python objects.

use prost::Message;

use super::messages::{ObjectMeta, Profile, Timestamp, WorkloadEndpoint};
use super::validate::{Violation, normalize_profile, normalize_workload_endpoint};
use super::view::IdentityView;

/// One resource of a batch: its encoded request message and the server-owned metadata to
/// set.
#[derive(Clone, Copy, Debug)]
pub struct Item<'a> {
    pub bytes: &'a [u8],
    pub identity: Identity<'a>,
}

/// The server-owned metadata (uid, creation timestamp) a stored resource gets.
#[derive(Clone, Copy, Debug)]
pub enum Identity<'a> {
    /// These, where given (None leaves the field as the request gave it): a create.
    Given {
        uid: Option<&'a str>,
        creation_timestamp: Option<Timestamp>,
    },
    /// Those of this stored resource (its encoded bytes), exactly: an update keeps the
    /// identity of what it replaces, read here so that the caller need not decode it.
    KeptFrom(&'a [u8]),
}

impl Identity<'_> {
    /// Whatever uid and creation timestamp the request carries.
    pub const AS_SENT: Self = Identity::Given {
        uid: None,
        creation_timestamp: None,
    };
}

/// The stored bytes of one resource, or why it cannot be stored.
pub type Outcome = Result<Vec<u8>, Vec<Violation>>;

/// The one violation of bytes that do not decode: path "" (the whole message).
fn undecodable(kind: &str, error: &prost::DecodeError) -> Vec<Violation> {
    vec![Violation {
        field: String::new(),
        description: format!("the value is not an encoded epsync.v1.{kind}: {error}"),
    }]
}

/// Sets what the server owns: the item's identity, and no resource version (the store's
/// revision is the truth).
fn stamp(meta: &mut ObjectMeta, item: &Item<'_>) -> Result<(), Vec<Violation>> {
    match item.identity {
        Identity::Given {
            uid,
            creation_timestamp,
        } => {
            if let Some(uid) = uid {
                uid.clone_into(&mut meta.uid);
            }
            if let Some(timestamp) = creation_timestamp {
                meta.creation_timestamp = Some(timestamp);
            }
        }
        Identity::KeptFrom(stored) => {
            let kept = IdentityView::decode(stored)
                .map_err(|error| {
                    vec![Violation {
                        field: "metadata".to_owned(),
                        description: format!(
                            "the stored object whose uid and creation timestamp it keeps does \
                             not decode: {error}"
                        ),
                    }]
                })?
                .metadata
                .unwrap_or_default();
            meta.uid = kept.uid;
            meta.creation_timestamp = kept.creation_timestamp;
        }
    }
    meta.resource_version = 0;
    Ok(())
}

/// The largest encoded object the server takes (an endpoint or a profile): a fraction of the
/// 4 MiB that gRPC clients receive by default, so that a List page or a watch response always
/// holds several, and a third of etcd's 1.5 MiB request limit.
pub const MAX_OBJECT_BYTES: usize = 512 * 1024;

/// The single violation of an object too large to be judged further.
fn too_large(kind: &str, item: &Item<'_>) -> Result<(), Vec<Violation>> {
    if item.bytes.len() <= MAX_OBJECT_BYTES {
        return Ok(());
    }
    Err(vec![Violation {
        field: String::new(),
        description: format!(
            "the {kind} is {} bytes encoded; at most {MAX_OBJECT_BYTES}",
            item.bytes.len()
        ),
    }])
}

/// The stored form of one WorkloadEndpoint.
///
/// # Errors
///
/// Every violation of the endpoint, or a single one (path "") when the bytes do not decode
/// or are more than [`MAX_OBJECT_BYTES`].
pub fn normalize_endpoint(item: &Item<'_>) -> Outcome {
    too_large("endpoint", item)?;
    let mut wep = WorkloadEndpoint::decode(item.bytes)
        .map_err(|error| undecodable("WorkloadEndpoint", &error))?;
    normalize_workload_endpoint(&mut wep)?;
    stamp(wep.metadata.get_or_insert_default(), item)?;
    Ok(wep.encode_to_vec())
}

/// The stored form of one Profile.
///
/// # Errors
///
/// Every violation of the profile, or a single one (path "") when the bytes do not decode
/// or are more than [`MAX_OBJECT_BYTES`].
pub fn normalize_profile_item(item: &Item<'_>) -> Outcome {
    too_large("profile", item)?;
    let mut profile =
        Profile::decode(item.bytes).map_err(|error| undecodable("Profile", &error))?;
    normalize_profile(&profile)?;
    stamp(profile.metadata.get_or_insert_default(), item)?;
    Ok(profile.encode_to_vec())
}

/// [`normalize_endpoint`] for each item, in order.
#[must_use]
pub fn normalize_endpoints(items: &[Item<'_>]) -> Vec<Outcome> {
    items.iter().map(normalize_endpoint).collect()
}

/// [`normalize_profile_item`] for each item, in order.
#[must_use]
pub fn normalize_profiles(items: &[Item<'_>]) -> Vec<Outcome> {
    items.iter().map(normalize_profile_item).collect()
}

/// Which of `values` (stored bytes; `None` for a deletion, never undecodable) do not decode
/// as `kind`'s message ("WorkloadEndpoint" or "Profile"): a value written by something else
/// than epsync, or damaged. Their indexes, ascending; None for another `kind`.
#[must_use]
pub fn undecodable_values(kind: &str, values: &[Option<&[u8]>]) -> Option<Vec<usize>> {
    let decodes: fn(&[u8]) -> bool = match kind {
        "WorkloadEndpoint" => |bytes| WorkloadEndpoint::decode(bytes).is_ok(),
        "Profile" => |bytes| Profile::decode(bytes).is_ok(),
        _ => return None,
    };
    Some(
        values
            .iter()
            .enumerate()
            .filter(|(_, value)| value.is_some_and(|bytes| !decodes(bytes)))
            .map(|(index, _)| index)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undecodable_values_finds_what_does_not_decode() {
        let good = WorkloadEndpoint::default().encode_to_vec();
        let garbage: &[u8] = b"\x0a\x64";
        let values = [
            Some(good.as_slice()),
            None,
            Some(garbage),
            Some(b"".as_slice()),
        ];
        assert_eq!(
            undecodable_values("WorkloadEndpoint", &values),
            Some(vec![2])
        );
        assert_eq!(undecodable_values("Profile", &values), Some(vec![2]));
        assert_eq!(undecodable_values("profiles", &values), None);
    }

    #[test]
    fn undecodable_values_decode_each_kind_as_its_own_message() {
        // A profile label key of more than 127 bytes: its map entry's length is a two-byte
        // varint, which is not UTF-8, so read as an endpoint's `spec.workload` it fails.
        let mut profile = Profile::default();
        profile.spec.get_or_insert_default().labels_to_apply.insert(
            format!("{}.{}.com/name", "a".repeat(60), "b".repeat(60)),
            "v".into(),
        );
        let encoded = profile.encode_to_vec();
        let values = [Some(encoded.as_slice())];
        assert_eq!(undecodable_values("Profile", &values), Some(vec![]));
        assert_eq!(
            undecodable_values("WorkloadEndpoint", &values),
            Some(vec![0])
        );
    }
}
