//! What the endpoint index reads of stored resources, decoded straight from the stored bytes:
//! an endpoint's own labels, node and profiles, a profile's `labelsToApply`.
//!
//! Partial messages, with only those fields (same numbers as in [`super::messages`]):
//! `prost` skips the others without allocating them, where the full
//! [`WorkloadEndpoint`](super::messages::WorkloadEndpoint) would allocate every string.

use prost::Message;

use super::messages::{Labels, Timestamp};

/// An endpoint's index-relevant fields.
#[derive(Clone, PartialEq, Message)]
pub struct EndpointView {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<MetaView>,
    #[prost(message, optional, tag = "2")]
    pub spec: Option<EndpointSpecView>,
}

/// `ObjectMeta.labels`.
#[derive(Clone, PartialEq, Message)]
pub struct MetaView {
    #[prost(btree_map = "string, string", tag = "3")]
    pub labels: Labels,
}

/// `WorkloadEndpointSpec.node` and `.profiles`.
#[derive(Clone, PartialEq, Message)]
pub struct EndpointSpecView {
    #[prost(string, tag = "3")]
    pub node: String,
    #[prost(string, repeated, tag = "12")]
    pub profiles: Vec<String>,
}

/// The identity the server gave a stored object (an endpoint or a profile: both keep their
/// `ObjectMeta` at field 1): what an update carries over.
#[derive(Clone, PartialEq, Message)]
pub struct IdentityView {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<IdentityMetaView>,
}

/// `ObjectMeta.uid` and `.creation_timestamp`.
#[derive(Clone, PartialEq, Message)]
pub struct IdentityMetaView {
    #[prost(string, tag = "5")]
    pub uid: String,
    #[prost(message, optional, tag = "6")]
    pub creation_timestamp: Option<Timestamp>,
}

/// A profile's `spec.labels_to_apply`.
#[derive(Clone, PartialEq, Message)]
pub struct ProfileView {
    #[prost(message, optional, tag = "2")]
    pub spec: Option<ProfileSpecView>,
}

/// `ProfileSpec.labels_to_apply`.
#[derive(Clone, PartialEq, Message)]
pub struct ProfileSpecView {
    #[prost(btree_map = "string, string", tag = "1")]
    pub labels_to_apply: Labels,
}

/// What the index needs of one endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct EndpointFields {
    pub node: String,
    pub labels: Labels,
    pub profiles: Vec<String>,
}

/// Decodes an endpoint's node, own labels and profiles from its stored bytes.
///
/// # Errors
///
/// When the bytes are not an encoded `WorkloadEndpoint`.
pub fn endpoint_fields(stored: &[u8]) -> Result<EndpointFields, prost::DecodeError> {
    let view = EndpointView::decode(stored)?;
    let spec = view.spec.unwrap_or_default();
    Ok(EndpointFields {
        node: spec.node,
        labels: view.metadata.map(|meta| meta.labels).unwrap_or_default(),
        profiles: spec.profiles,
    })
}

/// Decodes a profile's `labelsToApply` from its stored bytes.
///
/// # Errors
///
/// When the bytes are not an encoded `Profile`.
pub fn profile_labels(stored: &[u8]) -> Result<Labels, prost::DecodeError> {
    let view = ProfileView::decode(stored)?;
    Ok(view
        .spec
        .map(|spec| spec.labels_to_apply)
        .unwrap_or_default())
}
