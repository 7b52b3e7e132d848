//! A watch request's known versions, read straight from its wire bytes.
//!
//! A resuming watcher sends the version of everything it holds: up to `MAX_KNOWN_VERSIONS`
//! map entries. Parsed by Python's protobuf runtime and handed over entry by entry, 10,000 of
//! them held the server's event loop for about 20 ms (`bench/bench_stall.py`). Read here, the
//! keys stay where they are in the request's bytes (no copy, no Python object), and the GIL is
//! free meanwhile. [`split_known_versions`] takes the map's entries out of the request and
//! returns the request's other fields as they were, for Python to parse as usual.

use std::collections::hash_map::Entry;
use std::ops::Range;

use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};

/// A request's bytes without the map field, and the map's entries as ranges of the request's
/// bytes (each key's UTF-8, checked) with their values, in the order their keys first appeared
/// (a key sent twice takes the later value, as protobuf maps do). No key is copied.
#[derive(Debug, Default, PartialEq)]
pub struct Split {
    pub rest: Vec<u8>,
    pub known: Vec<(Range<usize>, i64)>,
}

/// Why the bytes are not a protobuf message (as the protobuf runtime would refuse them).
#[derive(Debug, PartialEq)]
pub struct SplitError(pub String);

impl From<prost::DecodeError> for SplitError {
    fn from(error: prost::DecodeError) -> Self {
        SplitError(error.to_string())
    }
}

/// Where `part`, a sub-slice of `whole`, starts in it.
fn offset(whole: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - whole.as_ptr() as usize
}

/// Splits `raw`, an encoded message, into its `map<string, int64>` field number `field` and the
/// bytes of every other field, copied as they were.
///
/// # Errors
///
/// A [`SplitError`] when `raw` is not well-formed wire format, or a map entry's key is not UTF-8.
pub fn split_known_versions(raw: &[u8], field: u32) -> Result<Split, SplitError> {
    let mut buf = raw;
    let mut rest = Vec::new();
    let mut known: Vec<(Range<usize>, i64)> = Vec::new();
    // Sized for the entries the bytes can hold (an entry takes at least 6 of them), up to
    // the number a client may send, so that reading a large map does not rehash as it grows.
    let mut position: foldhash::HashMap<&[u8], usize> = foldhash::HashMap::with_capacity_and_hasher(
        (raw.len() / 6).min(1 << 14),
        foldhash::fast::RandomState::default(),
    );
    while !buf.is_empty() {
        let start = offset(raw, buf);
        let (number, wire_type) = decode_key(&mut buf)?;
        if number == field && wire_type == WireType::LengthDelimited {
            let entry = length_delimited(&mut buf)?;
            let (key, version) = map_entry(raw, entry)?;
            match position.entry(&raw[key.clone()]) {
                Entry::Occupied(at) => known[*at.get()].1 = version,
                Entry::Vacant(slot) => {
                    slot.insert(known.len());
                    known.push((key, version));
                }
            }
        } else {
            skip_field(wire_type, number, &mut buf, DecodeContext::default())?;
            rest.extend_from_slice(&raw[start..offset(raw, buf)]);
        }
    }
    Ok(Split { rest, known })
}

/// The next length-delimited value of `buf` (after its tag), advancing past it.
fn length_delimited<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], SplitError> {
    let len = usize::try_from(decode_varint(buf)?)
        .map_err(|_| SplitError("a length past the message".to_owned()))?;
    if len > buf.len() {
        return Err(SplitError(
            "a field runs past the end of the message".to_owned(),
        ));
    }
    let (value, tail) = buf.split_at(len);
    *buf = tail;
    Ok(value)
}

/// One map entry: key (field 1, a string: its range of `raw`) and value (field 2, an int64);
/// either may be absent.
fn map_entry(raw: &[u8], mut entry: &[u8]) -> Result<(Range<usize>, i64), SplitError> {
    let empty = offset(raw, entry);
    let mut key = empty..empty;
    let mut value = 0;
    while !entry.is_empty() {
        let (number, wire_type) = decode_key(&mut entry)?;
        match (number, wire_type) {
            (1, WireType::LengthDelimited) => {
                let text = length_delimited(&mut entry)?;
                std::str::from_utf8(text)
                    .map_err(|_| SplitError("a known version's key is not UTF-8".to_owned()))?;
                let at = offset(raw, text);
                key = at..at + text.len();
            }
            // An int64 travels as the two's complement of its 64 bits.
            #[allow(clippy::cast_possible_wrap)]
            (2, WireType::Varint) => value = decode_varint(&mut entry)? as i64,
            _ => skip_field(wire_type, number, &mut entry, DecodeContext::default())?,
        }
    }
    Ok((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::encoding::{encode_key, encode_varint};

    fn entry(key: &str, value: i64) -> Vec<u8> {
        let mut body = Vec::new();
        encode_key(1, WireType::LengthDelimited, &mut body);
        encode_varint(key.len() as u64, &mut body);
        body.extend_from_slice(key.as_bytes());
        encode_key(2, WireType::Varint, &mut body);
        #[allow(clippy::cast_sign_loss)]
        encode_varint(value as u64, &mut body);
        let mut out = Vec::new();
        encode_key(7, WireType::LengthDelimited, &mut out);
        encode_varint(body.len() as u64, &mut out);
        out.extend_from_slice(&body);
        out
    }

    fn keys<'a>(raw: &'a [u8], split: &Split) -> Vec<(&'a str, i64)> {
        split
            .known
            .iter()
            .map(|(key, version)| (std::str::from_utf8(&raw[key.clone()]).unwrap(), *version))
            .collect()
    }

    fn string_field(number: u32, text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        encode_key(number, WireType::LengthDelimited, &mut out);
        encode_varint(text.len() as u64, &mut out);
        out.extend_from_slice(text.as_bytes());
        out
    }

    #[test]
    fn takes_the_map_out_and_keeps_every_other_field_as_it_was() {
        let node = string_field(2, "node1");
        let selector = string_field(3, "app == 'web'");
        let raw = [
            node.clone(),
            entry("ns/a", 4),
            selector.clone(),
            entry("ns/b", -1),
        ]
        .concat();
        let split = split_known_versions(&raw, 7).unwrap();
        assert_eq!(split.rest, [node, selector].concat());
        assert_eq!(keys(&raw, &split), vec![("ns/a", 4), ("ns/b", -1)]);
    }

    #[test]
    fn a_key_sent_twice_takes_the_later_value_in_its_first_place() {
        let raw = [entry("a", 1), entry("b", 2), entry("a", 3)].concat();
        let split = split_known_versions(&raw, 7).unwrap();
        assert_eq!(keys(&raw, &split), vec![("a", 3), ("b", 2)]);
    }

    #[test]
    fn malformed_bytes_are_refused() {
        let mut cut = entry("ns/a", 4);
        cut.truncate(cut.len() - 1);
        assert!(split_known_versions(&cut, 7).is_err());
        let mut bad_utf8 = entry("ab", 1);
        let at = bad_utf8.iter().position(|&b| b == b'a').unwrap();
        bad_utf8[at] = 0xff;
        assert!(split_known_versions(&bad_utf8, 7).is_err());
        assert!(split_known_versions(&[0x0f], 7).is_err()); // wire type 7 does not exist
        assert_eq!(split_known_versions(&[], 7).unwrap(), Split::default());
    }
}
