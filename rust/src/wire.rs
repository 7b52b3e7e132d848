//! Watch events as protobuf wire bytes, byte for byte as `epsync.sync.wire` builds them.
//!
//! A watch response is `repeated <Kind>WatchEvent events = 1`, so a response is its entries
//! one after another and one entry's bytes can go into the responses of any number of
//! watchers. Objects are stored without their resource version; appending an encoded
//! `metadata { resource_version: r }` to the stored bytes (protobuf merges concatenated
//! encodings) gives the object with resource version r, with no decode and re-encode.

const VARINT: u8 = 0;
/// `EventType.DELETED`.
const DELETED: u8 = 3;
const LENGTH_DELIMITED: u8 = 2;

/// Field numbers of `<Kind>WatchEvent`, of the response, and of `ObjectMeta`.
const EVENTS: u8 = 1;
const EVENT_TYPE: u8 = 1;
const EVENT_OBJECT: u8 = 2;
const EVENT_REVISION: u8 = 3;
const OBJECT_METADATA: u8 = 1;
const META_NAME: u8 = 1;
const META_NAMESPACE: u8 = 2;
const META_RESOURCE_VERSION: u8 = 4;

/// The one-byte tag of a field numbered below 16.
const fn tag(field: u8, wire_type: u8) -> u8 {
    (field << 3) | wire_type
}

/// How many bytes `value` takes as a base-128 varint.
#[must_use]
pub fn varint_len(value: u64) -> usize {
    // 1 byte per started 7 bits; 0 takes one byte.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends `value` as a base-128 varint.
pub fn put_varint(mut value: u64, out: &mut Vec<u8>) {
    while value > 0x7F {
        out.push((value & 0x7F) as u8 | 0x80);
        value >>= 7;
    }
    #[expect(clippy::cast_possible_truncation, reason = "below 0x80 here")]
    out.push(value as u8);
}

/// The length of a varint field (`tag`, value), which is left out when the value is 0.
fn varint_field_len(value: u64) -> usize {
    if value == 0 { 0 } else { 1 + varint_len(value) }
}

fn put_varint_field(field: u8, value: u64, out: &mut Vec<u8>) {
    if value != 0 {
        out.push(tag(field, VARINT));
        put_varint(value, out);
    }
}

/// The length of `object_with_version(stored, resource_version)` for `stored_len` bytes.
fn object_len(stored_len: usize, resource_version: u64) -> usize {
    // The metadata field: tag, one-byte length (a varint field is at most 11 bytes), body.
    stored_len + 2 + varint_field_len(resource_version)
}

/// Appends `stored` (an object as the datastore keeps it) with `metadata.resource_version`
/// set to `resource_version`: `epsync.sync.wire.object_with_version`.
pub fn put_object_with_version(stored: &[u8], resource_version: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(stored);
    out.push(tag(OBJECT_METADATA, LENGTH_DELIMITED));
    #[expect(clippy::cast_possible_truncation, reason = "at most 11 bytes")]
    out.push(varint_field_len(resource_version) as u8);
    put_varint_field(META_RESOURCE_VERSION, resource_version, out);
}

/// The bytes of `object_with_version(stored, resource_version)`.
#[must_use]
pub fn object_with_version(stored: &[u8], resource_version: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(object_len(stored.len(), resource_version));
    put_object_with_version(stored, resource_version, &mut out);
    out
}

/// Appends one `events` entry of a response, framed as field 1: an event of type
/// `event_type` at `revision` whose object is `stored` with `metadata.resource_version` set
/// to `object_version`. What `event_entry(event_type, object_with_version(stored,
/// object_version), revision)` makes in Python.
pub fn put_event_entry(
    event_type: u8,
    stored: &[u8],
    object_version: u64,
    revision: u64,
    out: &mut Vec<u8>,
) {
    let object = object_len(stored.len(), object_version);
    let event = varint_field_len(event_type.into())
        + 1
        + varint_len(object as u64)
        + object
        + varint_field_len(revision);
    out.reserve(1 + varint_len(event as u64) + event);
    out.push(tag(EVENTS, LENGTH_DELIMITED));
    put_varint(event as u64, out);
    put_varint_field(EVENT_TYPE, event_type.into(), out);
    out.push(tag(EVENT_OBJECT, LENGTH_DELIMITED));
    put_varint(object as u64, out);
    put_object_with_version(stored, object_version, out);
    put_varint_field(EVENT_REVISION, revision, out);
}

/// The bytes of one `events` entry; see [`put_event_entry`].
#[must_use]
pub fn event_entry(event_type: u8, stored: &[u8], object_version: u64, revision: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_event_entry(event_type, stored, object_version, revision, &mut out);
    out
}

/// The length of a string field (`tag`, length, bytes), which is left out when empty.
fn string_field_len(value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        1 + varint_len(value.len() as u64) + value.len()
    }
}

fn put_string_field(field: u8, value: &str, out: &mut Vec<u8>) {
    if !value.is_empty() {
        out.push(tag(field, LENGTH_DELIMITED));
        put_varint(value.len() as u64, out);
        out.extend_from_slice(value.as_bytes());
    }
}

/// The `events` entry of a DELETED event at `revision` for an object known only by its
/// key (a watcher's known version of something that is gone): a resource whose only field is `metadata { name, namespace, resource_version:
/// revision }`. What Python makes of `event_entry(DELETED, WorkloadEndpoint(metadata=
/// ObjectMeta(namespace=namespace, name=name, resource_version=revision))
/// .SerializeToString(), revision)`: fields in number order, defaults left out.
#[must_use]
pub fn deleted_key_entry(namespace: &str, name: &str, revision: u64) -> Vec<u8> {
    let meta = string_field_len(name) + string_field_len(namespace) + varint_field_len(revision);
    let object = 1 + varint_len(meta as u64) + meta;
    let event = varint_field_len(DELETED.into())
        + 1
        + varint_len(object as u64)
        + object
        + varint_field_len(revision);
    let mut out = Vec::with_capacity(1 + varint_len(event as u64) + event);
    out.push(tag(EVENTS, LENGTH_DELIMITED));
    put_varint(event as u64, &mut out);
    put_varint_field(EVENT_TYPE, DELETED.into(), &mut out);
    out.push(tag(EVENT_OBJECT, LENGTH_DELIMITED));
    put_varint(object as u64, &mut out);
    out.push(tag(OBJECT_METADATA, LENGTH_DELIMITED));
    put_varint(meta as u64, &mut out);
    put_string_field(META_NAME, name, &mut out);
    put_string_field(META_NAMESPACE, namespace, &mut out);
    put_varint_field(META_RESOURCE_VERSION, revision, &mut out);
    put_varint_field(EVENT_REVISION, revision, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_base_128_little_endian() {
        for (value, bytes) in [
            (0_u64, &[0x00][..]),
            (1, &[0x01]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (300, &[0xAC, 0x02]),
            (
                u64::MAX,
                &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            ),
        ] {
            let mut out = Vec::new();
            put_varint(value, &mut out);
            assert_eq!(out, bytes, "{value}");
            assert_eq!(varint_len(value), bytes.len(), "{value}");
        }
    }

    #[test]
    fn an_object_gets_its_version_as_an_appended_metadata_field() {
        assert_eq!(
            object_with_version(b"\x0a\x03\x0a\x01a", 300),
            b"\x0a\x03\x0a\x01a\x0a\x03\x20\xac\x02"
        );
        // Version 0 is the field's default: empty metadata.
        assert_eq!(object_with_version(b"", 0), b"\x0a\x00");
    }

    #[test]
    fn an_event_entry_frames_type_object_and_revision() {
        // event_entry(MODIFIED, object_with_version(b"\x0a\x01\x62", 5), 7) in Python.
        assert_eq!(
            event_entry(2, b"\x0a\x01\x62", 5, 7),
            b"\x0a\x0d\x08\x02\x12\x07\x0a\x01\x62\x0a\x02\x20\x05\x18\x07"
        );
        // DELETED of an object stamped with the deleting revision 128.
        assert_eq!(
            event_entry(3, b"", 128, 128),
            b"\x0a\x0c\x08\x03\x12\x05\x0a\x03\x20\x80\x01\x18\x80\x01"
        );
    }

    #[test]
    fn a_long_object_takes_a_multi_byte_length() {
        let stored = vec![0x55; 200];
        let entry = event_entry(1, &stored, 9, 9);
        let object = object_with_version(&stored, 9);
        let mut event = vec![0x08, 0x01, 0x12];
        put_varint(object.len() as u64, &mut event);
        event.extend_from_slice(&object);
        event.extend_from_slice(&[0x18, 0x09]);
        let mut expected = vec![0x0a];
        put_varint(event.len() as u64, &mut expected);
        expected.extend_from_slice(&event);
        assert_eq!(entry, expected);
    }

    #[test]
    fn a_deleted_key_entry_carries_only_the_metadata() {
        // event_entry(DELETED, WorkloadEndpoint(metadata=ObjectMeta(namespace="ns",
        // name="a", resource_version=7)).SerializeToString(), 7) in Python.
        assert_eq!(
            deleted_key_entry("ns", "a", 7),
            b"\x0a\x11\x08\x03\x12\x0b\x0a\x09\x0a\x01a\x12\x02ns\x20\x07\x18\x07"
        );
        // Empty strings and revision 0 are left out; the metadata itself is still there.
        assert_eq!(
            deleted_key_entry("", "", 0),
            b"\x0a\x06\x08\x03\x12\x02\x0a\x00"
        );
    }
}
