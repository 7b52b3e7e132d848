//! IP addresses as the Python reference reads and writes them: Python 3.11's
//! `ipaddress.ip_address(text)` and `str(address)`, less zone suffixes (`fe80::1%eth0`),
//! which the reference refuses as Go's `net.ParseIP` (what Calico uses) does.
//!
//! The parser is a port of CPython's `IPv4Address._ip_int_from_string` and
//! `IPv6Address._ip_int_from_string`, so it accepts exactly the same texts: IPv4 octets
//! without leading zeros, IPv6 hextets of at most four hex digits, one `::`, an IPv4 tail.
//! The text form is CPython 3.11's `_compress_hextets`: lower-case hextets without leading
//! zeros, the first longest run of two or more zero hextets as `::`, and no dotted tail,
//! not even for IPv4-mapped addresses (`::ffff:1.2.3.4` prints as `::ffff:102:304`;
//! Python 3.13 and Go print that address differently).
//!
//! Where Go's `net.ParseIP` differs: Go takes an IPv4-mapped IPv6 address for the IPv4
//! address it maps (`::ffff:1.2.3.4` is `1.2.3.4`, so it is IPv4 and prints as such);
//! Python, and so this module, keeps it IPv6.

use std::fmt;

/// An IPv4 or IPv6 address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Ip {
    V4(u32),
    V6(u128),
}

impl Ip {
    /// 4 or 6.
    #[must_use]
    pub fn version(self) -> u8 {
        match self {
            Ip::V4(_) => 4,
            Ip::V6(_) => 6,
        }
    }

    /// The prefix length of a single-address CIDR: 32 or 128.
    #[must_use]
    pub fn max_prefix_len(self) -> u8 {
        match self {
            Ip::V4(_) => 32,
            Ip::V6(_) => 128,
        }
    }
}

/// Parses `text` as Python's `ipaddress.ip_address` does, refusing a zone suffix.
#[must_use]
pub fn parse(text: &str) -> Option<Ip> {
    if text.as_bytes().contains(&b'%') {
        return None;
    }
    if let Some(v4) = parse_v4(text.as_bytes()) {
        return Some(Ip::V4(v4));
    }
    parse_v6(text.as_bytes()).map(Ip::V6)
}

/// CPython's `IPv4Address(text)`: four dot-separated decimal octets, 0-255, no leading zeros.
fn parse_v4(text: &[u8]) -> Option<u32> {
    let mut value = 0u32;
    let mut octets = 0;
    for octet in text.split(|&byte| byte == b'.') {
        octets += 1;
        if octets > 4 {
            return None;
        }
        value = (value << 8) | u32::from(parse_octet(octet)?);
    }
    (octets == 4).then_some(value)
}

fn parse_octet(text: &[u8]) -> Option<u8> {
    if text.is_empty() || text.len() > 3 || (text[0] == b'0' && text.len() > 1) {
        return None;
    }
    let mut value = 0u16;
    for &byte in text {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u16::from(byte - b'0');
    }
    u8::try_from(value).ok()
}

/// One `:`-separated piece of an IPv6 text: as written, or a hextet from an IPv4 tail.
#[derive(Clone, Copy)]
enum Part<'a> {
    Text(&'a [u8]),
    Value(u16),
}

impl Part<'_> {
    fn is_empty(self) -> bool {
        matches!(self, Part::Text([]))
    }

    /// CPython's `_parse_hextet`: one to four hex digits.
    fn hextet(self) -> Option<u16> {
        match self {
            Part::Value(value) => Some(value),
            Part::Text(text) => {
                if text.is_empty() || text.len() > 4 {
                    return None;
                }
                let mut value = 0u16;
                for &byte in text {
                    let digit = char::from(byte).to_digit(16)?;
                    value = (value << 4) | u16::try_from(digit).ok()?;
                }
                Some(value)
            }
        }
    }
}

const HEXTETS: usize = 8;

/// CPython's `IPv6Address(text)` (without the scope id, refused before).
fn parse_v6(text: &[u8]) -> Option<u128> {
    if text.is_empty() || text.contains(&b'/') {
        return None;
    }
    // At most 9 parts survive, and an IPv4 tail adds one.
    let mut parts = [Part::Text(&[]); HEXTETS + 2];
    let mut count = 0;
    for piece in text.split(|&byte| byte == b':') {
        if count > HEXTETS {
            return None;
        }
        parts[count] = Part::Text(piece);
        count += 1;
    }
    if count < 3 {
        return None;
    }
    if let Part::Text(last) = parts[count - 1]
        && last.contains(&b'.')
    {
        let v4 = parse_v4(last)?;
        parts[count - 1] = Part::Value((v4 >> 16) as u16);
        parts[count] = Part::Value((v4 & 0xFFFF) as u16);
        count += 1;
    }
    if count > HEXTETS + 1 {
        return None;
    }
    let parts = &parts[..count];

    let mut skip_index = None;
    for (i, part) in parts.iter().enumerate().take(count - 1).skip(1) {
        if part.is_empty() {
            if skip_index.is_some() {
                return None;
            }
            skip_index = Some(i);
        }
    }
    let (parts_hi, parts_lo, parts_skipped) = if let Some(skip) = skip_index {
        let mut hi = skip;
        let mut lo = count - skip - 1;
        if parts[0].is_empty() {
            hi -= 1;
            if hi != 0 {
                return None;
            }
        }
        if parts[count - 1].is_empty() {
            lo -= 1;
            if lo != 0 {
                return None;
            }
        }
        if hi + lo >= HEXTETS {
            return None;
        }
        (hi, lo, HEXTETS - (hi + lo))
    } else {
        if count != HEXTETS || parts[0].is_empty() || parts[count - 1].is_empty() {
            return None;
        }
        (count, 0, 0)
    };

    let mut value = 0u128;
    for part in &parts[..parts_hi] {
        value = (value << 16) | u128::from(part.hextet()?);
    }
    // A shift by 128 (all eight hextets skipped) leaves zero, as in Python.
    value = value
        .checked_shl(16 * u32::try_from(parts_skipped).ok()?)
        .unwrap_or(0);
    for part in &parts[count - parts_lo..] {
        value = (value << 16) | u128::from(part.hextet()?);
    }
    Some(value)
}

/// An address's text, on the stack: at most 39 characters, and `/128`.
#[derive(Clone, Copy)]
pub struct IpText {
    bytes: [u8; 44],
    len: usize,
}

impl IpText {
    fn push(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    fn push_decimal(&mut self, value: u8) {
        if value >= 100 {
            self.push(b'0' + value / 100);
        }
        if value >= 10 {
            self.push(b'0' + value / 10 % 10);
        }
        self.push(b'0' + value % 10);
    }

    fn push_hex(&mut self, value: u16) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut started = false;
        for shift in [12, 8, 4, 0] {
            let digit = (value >> shift) & 0xF;
            if started || digit != 0 || shift == 0 {
                started = true;
                self.push(DIGITS[usize::from(digit)]);
            }
        }
    }

    fn push_hextets(&mut self, hextets: &[u16]) {
        for (i, &hextet) in hextets.iter().enumerate() {
            if i > 0 {
                self.push(b':');
            }
            self.push_hex(hextet);
        }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        // Only ASCII digits, letters, '.', ':' and '/' are ever pushed.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl Ip {
    /// Python 3.11's `str(address)`.
    #[must_use]
    pub fn text(self) -> IpText {
        let mut out = IpText {
            bytes: [0; 44],
            len: 0,
        };
        match self {
            Ip::V4(value) => {
                for (i, octet) in value.to_be_bytes().into_iter().enumerate() {
                    if i > 0 {
                        out.push(b'.');
                    }
                    out.push_decimal(octet);
                }
            }
            Ip::V6(value) => {
                let mut hextets = [0u16; HEXTETS];
                for (hextet, pair) in hextets.iter_mut().zip(value.to_be_bytes().chunks(2)) {
                    *hextet = u16::from_be_bytes([pair[0], pair[1]]);
                }
                // The first longest run of zero hextets, if it is at least two long.
                let (mut best_start, mut best_len) = (0, 0);
                let mut run_start = 0;
                let mut run_len = 0;
                for (i, &hextet) in hextets.iter().enumerate() {
                    if hextet == 0 {
                        if run_len == 0 {
                            run_start = i;
                        }
                        run_len += 1;
                        if run_len > best_len {
                            (best_start, best_len) = (run_start, run_len);
                        }
                    } else {
                        run_len = 0;
                    }
                }
                if best_len > 1 {
                    out.push_hextets(&hextets[..best_start]);
                    out.push(b':');
                    out.push(b':');
                    out.push_hextets(&hextets[best_start + best_len..]);
                } else {
                    out.push_hextets(&hextets);
                }
            }
        }
        out
    }

    /// The first address of the `length`-bit network holding this one (host bits cleared),
    /// as Python's `ip_network(f"{address}/{length}", strict=False).network_address`.
    /// `length` is at most [`Ip::max_prefix_len`].
    #[must_use]
    pub fn network(self, length: u8) -> Ip {
        match self {
            Ip::V4(value) => {
                Ip::V4(value & u32::MAX.checked_shl(32 - u32::from(length)).unwrap_or(0))
            }
            Ip::V6(value) => {
                Ip::V6(value & u128::MAX.checked_shl(128 - u32::from(length)).unwrap_or(0))
            }
        }
    }

    /// The single-address CIDR: `text()` and `/32` or `/128`.
    #[must_use]
    pub fn cidr_text(self) -> IpText {
        let mut out = self.text();
        let suffix: &[u8] = match self {
            Ip::V4(_) => b"/32",
            Ip::V6(_) => b"/128",
        };
        for &byte in suffix {
            out.push(byte);
        }
        out
    }
}

/// Python 3.11's `str(address)`.
impl fmt::Display for Ip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(text: &str) -> Option<String> {
        parse(text).map(|ip| ip.to_string())
    }

    #[test]
    fn ipv4_is_four_decimal_octets_without_leading_zeros() {
        assert_eq!(canonical("10.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(canonical("0.0.0.0").as_deref(), Some("0.0.0.0"));
        assert_eq!(
            canonical("255.255.255.255").as_deref(),
            Some("255.255.255.255")
        );
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1.2.3.00",
            "256.1.1.1",
            "1.2.3.4 ",
            " 1.2.3.4",
            "1.2.3.",
            "1..2.3",
            "1.2.3.+4",
            "1.2.3.٤",
            "1.2.3.4/32",
            "0x1.2.3.4",
            "1.2.3.1000",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ipv6_text_is_python_311s() {
        for (text, expected) in [
            ("::", "::"),
            ("::1", "::1"),
            ("1::", "1::"),
            ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
            (
                "2001:0db8:0000:0000:0001:0000:0000:0001",
                "2001:db8::1:0:0:1",
            ),
            ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
            ("1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7"),
            ("0:0:1:0:0:1:0:0", "::1:0:0:1:0:0"),
            ("fe80::1", "fe80::1"),
            ("::ffff:1.2.3.4", "::ffff:102:304"),
            ("::1.2.3.4", "::102:304"),
            ("1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304"),
            ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"),
            ("::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8"),
            ("0000:0000::0001", "::1"),
        ] {
            assert_eq!(canonical(text).as_deref(), Some(expected), "{text:?}");
        }
    }

    #[test]
    fn ipv6_refusals_match_python() {
        for bad in [
            ":",
            ":::",
            "1:2",
            "1::2::3",
            ":1::2",
            "1::2:",
            "1:2:3:4:5:6:7:8:9",
            "1:2:3:4:5:6:7",
            "1:2:3:4:5:6:7:8::",
            "::1:2:3:4:5:6:7:8",
            "12345::",
            "g::",
            "fe80::1%eth0",
            "::1/128",
            "::1.2.3",
            "::01.2.3.4",
            "1:2:3:4:5:6:7:1.2.3.4",
            ":1:2:3:4:5:6:7",
            "1:2:3:4:5:6:7:",
            "::ｆ",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn text_forms() {
        assert_eq!(
            parse("1.20.255.0").unwrap().cidr_text().as_str(),
            "1.20.255.0/32"
        );
        assert_eq!(
            parse("ffff:0fff:00ff:000f:f000:0:0:0")
                .unwrap()
                .cidr_text()
                .as_str(),
            "ffff:fff:ff:f:f000::/128"
        );
        let longest = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        assert_eq!(
            parse(longest).unwrap().cidr_text().as_str(),
            format!("{longest}/128")
        );
    }

    #[test]
    fn versions_and_prefix_lengths() {
        assert_eq!(parse("1.2.3.4").map(Ip::version), Some(4));
        assert_eq!(parse("::ffff:1.2.3.4").map(Ip::version), Some(6));
        assert_eq!(parse("::1").map(Ip::max_prefix_len), Some(128));
    }
}
