//! gRPC's wire format over HTTP/2: length-prefixed messages, `grpc-timeout`, and the status trailers.

use std::fmt::Write;
use std::io::Read;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

/// A message's prefix: a compression flag (one byte) and the length (four bytes, big-endian).
pub const PREFIX: usize = 5;

/// Status codes this module sets itself (the rest come from Python as numbers).
pub mod code {
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const UNIMPLEMENTED: u32 = 12;
    pub const INTERNAL: u32 = 13;
}

/// One message with its prefix, ready to go out as DATA.
#[must_use]
pub fn frame(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(PREFIX + message.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    framed.put_slice(message);
    framed.freeze()
}

/// How a call's requests are compressed (its `grpc-encoding`): each message says whether it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Deflate,
}

impl Encoding {
    /// The encoding a `grpc-encoding` header names; None for one this server cannot read.
    #[must_use]
    pub fn named(name: &[u8]) -> Option<Self> {
        match name {
            b"identity" => Some(Self::Identity),
            b"gzip" => Some(Self::Gzip),
            b"deflate" => Some(Self::Deflate),
            _ => None,
        }
    }
}

/// What `grpc-accept-encoding` says this server reads.
pub const ACCEPTED_ENCODINGS: &str = "identity,gzip,deflate";

/// Why a request stream cannot be read: each is answered with its status and ends the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    TooLarge {
        length: usize,
        max: usize,
    },
    /// A message flagged compressed on a call that named no compression.
    Compressed,
    /// A compressed message that does not decompress.
    Corrupt,
    Truncated,
}

impl FrameError {
    #[must_use]
    pub fn status(&self) -> (u32, String) {
        match self {
            Self::TooLarge { length, max } => (
                code::RESOURCE_EXHAUSTED,
                format!("received message larger than max ({length} vs. {max})"),
            ),
            Self::Compressed => (
                code::INTERNAL,
                "a message flagged compressed, but the call names no grpc-encoding".to_owned(),
            ),
            Self::Corrupt => (
                code::INTERNAL,
                "a compressed message that does not decompress".to_owned(),
            ),
            Self::Truncated => (
                code::INTERNAL,
                "the request stream ended inside a message".to_owned(),
            ),
        }
    }
}

/// Splits a request body's chunks into messages, refusing any longer than `max` (compressed or not) before
/// buffering or inflating past it.
pub struct Decoder {
    buffer: BytesMut,
    max: usize,
    encoding: Encoding,
}

impl Decoder {
    #[must_use]
    pub fn new(max: usize, encoding: Encoding) -> Self {
        Self {
            buffer: BytesMut::new(),
            max,
            encoding,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next whole message, if one has arrived.
    ///
    /// # Errors
    /// A message longer than the limit, or one flagged compressed.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buffer.len() < PREFIX {
            return Ok(None);
        }
        let compressed = self.buffer[0] != 0;
        if compressed && self.encoding == Encoding::Identity {
            return Err(FrameError::Compressed);
        }
        let length = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if length > self.max {
            return Err(FrameError::TooLarge {
                length,
                max: self.max,
            });
        }
        if self.buffer.len() < PREFIX + length {
            self.buffer.reserve(PREFIX + length - self.buffer.len());
            return Ok(None);
        }
        self.buffer.advance(PREFIX);
        let message = self.buffer.split_to(length).freeze();
        if compressed {
            return self.inflate(&message).map(Some);
        }
        Ok(Some(message))
    }

    /// A compressed message, inflated to at most `max` bytes (a small message may not unpack into a huge one).
    fn inflate(&self, compressed: &[u8]) -> Result<Bytes, FrameError> {
        let limit = self.max as u64 + 1;
        let mut inflated = Vec::new();
        let read = match self.encoding {
            Encoding::Gzip => flate2::read::GzDecoder::new(compressed)
                .take(limit)
                .read_to_end(&mut inflated),
            Encoding::Deflate => flate2::read::ZlibDecoder::new(compressed)
                .take(limit)
                .read_to_end(&mut inflated),
            Encoding::Identity => unreachable!("identity calls refuse compressed messages first"),
        };
        read.map_err(|_| FrameError::Corrupt)?;
        if inflated.len() > self.max {
            return Err(FrameError::TooLarge {
                length: inflated.len(),
                max: self.max,
            });
        }
        Ok(Bytes::from(inflated))
    }

    /// The body ended: anything left is a message cut short.
    ///
    /// # Errors
    /// Bytes of an unfinished message remain.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buffer.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated)
        }
    }
}

/// A `grpc-timeout` header's value ("100m", "5S", ...), or None when it does not parse.
#[must_use]
pub fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount.saturating_mul(3600)),
        b'M' => Duration::from_secs(amount.saturating_mul(60)),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// `grpc-message` as the protocol wants it: UTF-8, percent-encoding every byte outside printable ASCII and '%'.
#[must_use]
pub fn encode_message(message: &str) -> String {
    let mut encoded = String::with_capacity(message.len());
    for &byte in message.as_bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

/// Metadata to send as trailers: a `-bin` key's value is base64, any other must be printable ASCII.
///
/// # Errors
/// A key that is not a valid header name, or a text value that is not a valid header value.
pub fn metadata_header(key: &str, value: &[u8]) -> Result<(HeaderName, HeaderValue), String> {
    let name = HeaderName::from_bytes(key.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("{key:?} is not a metadata key"))?;
    let value = if key.ends_with("-bin") {
        HeaderValue::from_str(&STANDARD_NO_PAD.encode(value))
            .map_err(|_| "unencodable".to_owned())?
    } else {
        HeaderValue::from_bytes(value)
            .map_err(|_| format!("the value of {key:?} is not printable ASCII"))?
    };
    Ok((name, value))
}

/// The trailers that end a call: its status, message and further metadata.
#[must_use]
pub fn status_trailers(code: u32, message: &str, mut metadata: HeaderMap) -> HeaderMap {
    metadata.insert("grpc-status", HeaderValue::from(code));
    if !message.is_empty()
        && let Ok(value) = HeaderValue::from_str(&encode_message(message))
    {
        metadata.insert("grpc-message", value);
    }
    metadata
}

/// A request header as Python's grpc shows it in the invocation metadata: `-bin` values decoded.
#[must_use]
pub fn metadata_value(name: &str, value: &HeaderValue) -> Option<Vec<u8>> {
    if name.ends_with("-bin") {
        let text = value.as_bytes();
        STANDARD_NO_PAD
            .decode(
                text.strip_suffix(b"==")
                    .or_else(|| text.strip_suffix(b"="))
                    .unwrap_or(text),
            )
            .or_else(|_| STANDARD.decode(text))
            .ok()
    } else {
        Some(value.as_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_across_chunks_come_out_whole() {
        let mut wire = frame(b"hello").to_vec();
        wire.extend_from_slice(&frame(b""));
        wire.extend_from_slice(&frame(b"world"));
        let mut decoder = Decoder::new(100, Encoding::Identity);
        let mut out = Vec::new();
        for byte in wire {
            decoder.push(&[byte]);
            while let Some(message) = decoder.next_message().unwrap() {
                out.push(message);
            }
        }
        assert_eq!(
            out,
            vec![Bytes::from("hello"), Bytes::new(), Bytes::from("world")]
        );
        assert_eq!(decoder.finish(), Ok(()));
    }

    #[test]
    fn a_message_past_the_limit_is_refused_from_its_prefix() {
        let mut decoder = Decoder::new(4, Encoding::Identity);
        decoder.push(&[0, 0, 0, 0, 5]);
        assert_eq!(
            decoder.next_message(),
            Err(FrameError::TooLarge { length: 5, max: 4 })
        );
    }

    #[test]
    fn compressed_and_cut_short_messages_are_errors() {
        let mut decoder = Decoder::new(100, Encoding::Identity);
        decoder.push(&[1, 0, 0, 0, 1, 7]);
        assert_eq!(decoder.next_message(), Err(FrameError::Compressed));
        let mut decoder = Decoder::new(100, Encoding::Identity);
        decoder.push(&[0, 0, 0, 0, 3, 7]);
        assert_eq!(decoder.next_message(), Ok(None));
        assert_eq!(decoder.finish(), Err(FrameError::Truncated));
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn compressed_frame(payload: &[u8]) -> Vec<u8> {
        let mut wire = vec![1];
        wire.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        wire.extend_from_slice(payload);
        wire
    }

    #[test]
    fn gzip_messages_are_inflated_within_the_limit() {
        let mut decoder = Decoder::new(100, Encoding::Gzip);
        decoder.push(&compressed_frame(&gzip(b"hello")));
        assert_eq!(decoder.next_message(), Ok(Some(Bytes::from("hello"))));
        let mut bomb = Decoder::new(100, Encoding::Gzip);
        bomb.push(&compressed_frame(&gzip(&[0; 10_000])));
        assert_eq!(
            bomb.next_message(),
            Err(FrameError::TooLarge {
                length: 101,
                max: 100
            })
        );
        let mut corrupt = Decoder::new(100, Encoding::Gzip);
        corrupt.push(&compressed_frame(b"not gzip"));
        assert_eq!(corrupt.next_message(), Err(FrameError::Corrupt));
    }

    #[test]
    fn timeouts_parse_in_every_unit_and_refuse_nonsense() {
        assert_eq!(parse_timeout(b"100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_timeout(b"2H"), Some(Duration::from_hours(2)));
        assert_eq!(parse_timeout(b"7n"), Some(Duration::from_nanos(7)));
        assert_eq!(parse_timeout(b"m"), None);
        assert_eq!(parse_timeout(b"123456789S"), None);
        assert_eq!(parse_timeout(b"1x"), None);
    }

    #[test]
    fn status_messages_are_percent_encoded() {
        assert_eq!(encode_message("50% done: é"), "50%25 done: %C3%A9");
    }

    #[test]
    fn binary_metadata_round_trips_through_base64() {
        let (name, value) = metadata_header("grpc-status-details-bin", &[0, 255, 7]).unwrap();
        assert_eq!(name.as_str(), "grpc-status-details-bin");
        assert_eq!(metadata_value(name.as_str(), &value), Some(vec![0, 255, 7]));
        assert!(metadata_header("bad key", b"x").is_err());
    }
}
