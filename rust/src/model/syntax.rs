//! The character-level rules of the Python reference (`epsync.model.validation`): each
//! regular expression there as a hand-written matcher, and `json.dumps(value,
//! ensure_ascii=False)`, the quoting of values in error messages.
//!
//! The expressions are all of one shape, a character class with rules for the first and the
//! last character, so a loop over the bytes says the same thing as the expression, runs
//! without a regex engine and needs no dependency; the MAC expression uses a back-reference,
//! which Rust's `regex` crate does not have. Every class is ASCII, so a non-ASCII character
//! fails each matcher, as it fails the Python expression.
//!
//! Lengths in messages and limits are counted in characters (code points), as Python's `len`
//! counts them, not in bytes.

use std::fmt::Write;

/// The longest resource name and DNS-1123 subdomain.
pub const MAX_NAME_LENGTH: usize = 253;

/// Python's `len(text)`: the number of code points.
#[must_use]
pub fn char_len(text: &str) -> usize {
    if text.is_ascii() {
        text.len()
    } else {
        text.chars().count()
    }
}

/// The most characters of a value an error message quotes: a message echoes what was wrong,
/// not the whole of a value that may be megabytes long.
pub const MAX_QUOTED_CHARS: usize = 64;

/// `json.dumps(text, ensure_ascii=False)`: `"`-quoted, with `"`, `\` and the C0 controls
/// escaped (`\n`, `\r`, `\t`, `\b`, `\f`, else `\u00XX` in lower-case hex); everything
/// else, DEL and non-ASCII included, as it is. A value longer than [`MAX_QUOTED_CHARS`]
/// characters is quoted up to there and followed by `... (N characters)`.
#[must_use]
pub fn quote(text: &str) -> String {
    let (shown, cut) = match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((at, _)) => (&text[..at], true),
        None => (text, false),
    };
    let mut out = String::with_capacity(shown.len() + 2);
    push_quoted(&mut out, shown);
    if cut {
        let _ = write!(out, "... ({} characters)", char_len(text));
    }
    out
}

/// [`quote`], appended to `out`.
pub fn push_quoted(out: &mut String, text: &str) {
    out.push('"');
    let mut rest = text;
    while let Some(at) = rest.find(|c: char| c < ' ' || c == '"' || c == '\\') {
        out.push_str(&rest[..at]);
        let special = rest.as_bytes()[at];
        match special {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            control => {
                let _ = write!(out, "\\u{control:04x}");
            }
        }
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    out.push('"');
}

/// A non-empty run of `middle` bytes whose first and last bytes are also `edge` bytes:
/// the shape of `[E]([M]*[E])?` and `([E][M]*)?[E]`.
fn edged(text: &str, edge: impl Fn(u8) -> bool, middle: impl Fn(u8) -> bool) -> bool {
    match text.as_bytes() {
        [] => false,
        [only] => edge(*only),
        [first, inner @ .., last] => {
            edge(*first) && edge(*last) && inner.iter().all(|&b| middle(b))
        }
    }
}

fn is_lower_alnum(byte: u8) -> bool {
    byte.is_ascii_lowercase() || byte.is_ascii_digit()
}

/// `len(value) <= 63` and `[a-z0-9]([-a-z0-9]*[a-z0-9])?` (a namespace).
#[must_use]
pub fn is_dns1123_label(text: &str) -> bool {
    text.len() <= 63 && edged(text, is_lower_alnum, |b| is_lower_alnum(b) || b == b'-')
}

/// `len(value) <= 253` and `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`.
#[must_use]
pub fn is_dns1123_subdomain(text: &str) -> bool {
    // A non-ASCII text fails the pattern whatever its length, so bytes may stand for characters.
    let bytes = text.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_NAME_LENGTH {
        return false;
    }
    // One pass: a part may not start with "-" or ".", nor end with "-".
    let mut previous = b'.';
    for &byte in bytes {
        match byte {
            b'a'..=b'z' | b'0'..=b'9' => {}
            b'-' if previous != b'.' => {}
            b'.' if previous != b'.' && previous != b'-' => {}
            _ => return false,
        }
        previous = byte;
    }
    previous != b'-' && previous != b'.'
}

/// `[A-Za-z0-9._-]+` (a resource name).
#[must_use]
pub fn is_resource_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?` (a container ID).
#[must_use]
pub fn is_container_id(text: &str) -> bool {
    edged(
        text,
        |b| b.is_ascii_alphanumeric(),
        |b| b.is_ascii_alphanumeric() || b == b'-',
    )
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]` (a label name or value, without its length).
#[must_use]
pub fn is_label_name(text: &str) -> bool {
    edged(
        text,
        |b| b.is_ascii_alphanumeric(),
        |b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'),
    )
}

/// `[a-zA-Z0-9_.-]{1,15}` (an interface name).
#[must_use]
pub fn is_interface_name(text: &str) -> bool {
    (1..=15).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `len(name) <= 15`, `[a-z0-9]+(-[a-z0-9]+)*` and a letter somewhere (a port name, as
/// Kubernetes' `IsValidPortName` checks it).
#[must_use]
pub fn is_port_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() <= 15
        && edged(text, is_lower_alnum, |b| is_lower_alnum(b) || b == b'-')
        && !text.contains("--")
        && bytes.iter().any(u8::is_ascii_lowercase)
}

/// `0|[1-9][0-9]{0,2}` (a CIDR's prefix length as written).
#[must_use]
pub fn is_prefix_length(text: &str) -> bool {
    match text.as_bytes() {
        [b'0'] => true,
        [first, rest @ ..] => {
            (b'1'..=b'9').contains(first) && rest.len() <= 2 && rest.iter().all(u8::is_ascii_digit)
        }
        [] => false,
    }
}

/// What Go's `net.ParseMAC` accepts for 6- and 8-byte addresses: six or eight pairs of hex
/// digits with one separator, `:` or `-`, used throughout; or three or four dot-separated
/// groups of four hex digits. The Python expression:
/// `HH([:-])HH(\1HH){4}(\1HH\1HH)?|[0-9A-Fa-f]{4}(\.[0-9A-Fa-f]{4}){2,3}`.
#[must_use]
pub fn is_mac(text: &str) -> bool {
    let bytes = text.as_bytes();
    let hex = |group: &[u8]| group.iter().all(u8::is_ascii_hexdigit);
    match bytes.len() {
        // 6 or 8 pairs: `HH` then `sHH` five or seven times.
        17 | 23 => {
            let separator = bytes[2];
            (separator == b':' || separator == b'-')
                && bytes
                    .chunks(3)
                    .all(|chunk| hex(&chunk[..2]) && chunk.get(2).is_none_or(|&b| b == separator))
        }
        // 3 or 4 groups: `HHHH` then `.HHHH` two or three times.
        14 | 19 => bytes
            .chunks(5)
            .all(|chunk| hex(&chunk[..4]) && chunk.get(4).is_none_or(|&b| b == b'.')),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_is_json_dumps_without_ensure_ascii() {
        assert_eq!(quote("web"), r#""web""#);
        assert_eq!(quote(""), r#""""#);
        assert_eq!(quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(quote("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(quote("\0\u{1}\u{1f}"), r#""\u0000\u0001\u001f""#);
        assert_eq!(quote("\u{1b}[31m"), r#""\u001b[31m""#);
        // DEL, C1 controls, line separators and non-ASCII stay as they are.
        assert_eq!(
            quote("\u{7f}\u{85}\u{2028}é☃😀"),
            "\"\u{7f}\u{85}\u{2028}é☃😀\""
        );
        assert_eq!(quote("/"), r#""/""#);
        let long = "ab".repeat(100);
        assert_eq!(
            quote(&long),
            format!("\"{}\"... (200 characters)", &long[..64])
        );
        assert_eq!(quote(&long[..64]), format!("\"{}\"", &long[..64]));
        let wide = "é".repeat(65);
        assert_eq!(
            quote(&wide),
            format!("\"{}\"... (65 characters)", "é".repeat(64))
        );
    }

    #[test]
    fn char_len_counts_code_points() {
        assert_eq!(char_len("abc"), 3);
        assert_eq!(char_len("é😀"), 2);
    }

    #[test]
    fn mac_forms() {
        for good in [
            "00:11:22:33:44:55",
            "00-11-22-33-44-55",
            "aA:bB:cC:dD:eE:fF",
            "00:11:22:33:44:55:66:77",
            "00-11-22-33-44-55-66-77",
            "0011.2233.4455",
            "0011.2233.4455.6677",
        ] {
            assert!(is_mac(good), "{good:?}");
        }
        for bad in [
            "",
            "00:11:22:33:44",
            "00:11:22:33:44:55:66",
            "00:11-22:33:44:55",
            "00-11-22-33-44:55",
            "00:11:22:33:44:55:66-77",
            "00.11.22.33.44.55",
            "0011:2233:4455",
            "0011.2233.4455.6677.8899",
            "0011.2233",
            "0011-2233-4455",
            "00:11:22:33:44:5g",
            "001122334455",
            "00:11:22:33:44:55 ",
            "00:11:22:33:44:５５",
            "0:11:22:33:44:55:",
        ] {
            assert!(!is_mac(bad), "{bad:?}");
        }
    }

    #[test]
    fn names_and_labels() {
        assert!(is_dns1123_subdomain("kns.ns-1"));
        assert!(is_dns1123_subdomain("a"));
        assert!(!is_dns1123_subdomain(""));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(!is_dns1123_subdomain("a.-b"));
        assert!(!is_dns1123_subdomain("A"));
        assert!(!is_dns1123_subdomain("a."));
        assert!(is_dns1123_subdomain(&"a".repeat(253)));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
        assert!(is_dns1123_label(&"a".repeat(63)));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(!is_dns1123_label("a.b"));
        assert!(is_label_name("a"));
        assert!(is_label_name("A-b_c.D"));
        assert!(!is_label_name("-a"));
        assert!(!is_label_name("a_"));
        assert!(!is_label_name("é"));
        assert!(is_container_id("abc-DEF-0"));
        assert!(!is_container_id("abc_def"));
        assert!(is_resource_name("node1-k8s-web.1_x"));
        assert!(!is_resource_name("a/b"));
        assert!(is_interface_name("cali0123456789a"));
        assert!(!is_interface_name("cali0123456789ab"));
        assert!(!is_interface_name(""));
    }

    #[test]
    fn port_names() {
        for good in ["http", "h", "web-8080", "a1-b2-c3", "x23456789012345"] {
            assert!(is_port_name(good), "{good:?}");
        }
        for bad in [
            "",
            "8080",
            "-http",
            "http-",
            "ht--tp",
            "HTTP",
            "web_1",
            "x234567890123456",
            "1-2",
        ] {
            assert!(!is_port_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn prefix_lengths() {
        for good in ["0", "1", "32", "128", "999"] {
            assert!(is_prefix_length(good), "{good:?}");
        }
        for bad in ["", "00", "032", "1000", "+1", "3 ", "٣"] {
            assert!(!is_prefix_length(bad), "{bad:?}");
        }
    }
}
