//! The properties the coverage-guided fuzzers check (`rust/fuzz`, `make fuzz`), as plain
//! functions, so that the inputs they once failed on (`rust/fuzz/regressions/`) are replayed by
//! `cargo test` on the stable toolchain (`tests/fuzz_regressions.rs`). Each panics when its
//! property fails; any input at all must pass.

use std::collections::HashMap;

use crate::model::stored::{Identity, Item, normalize_endpoint};
use crate::selector::Selector;

/// Any bytes as a selector: refused, or parsed to a selector whose canonical text parses back to
/// an equal one with the same canonical text; evaluating it against a few label sets never panics.
///
/// # Panics
///
/// When the canonical text does not round-trip.
pub fn selector(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = Selector::parse(text) else {
        return;
    };
    let again = Selector::parse(parsed.canonical()).unwrap_or_else(|error| {
        panic!("canonical {:?} does not parse: {error}", parsed.canonical())
    });
    assert_eq!(
        again.canonical(),
        parsed.canonical(),
        "canonical text is not stable"
    );
    assert_eq!(again, parsed, "canonical text parses to another selector");
    let mut labels: HashMap<String, String> = HashMap::new();
    let _ = parsed.matches(&labels);
    for key in parsed.keys() {
        labels.insert(key.to_owned(), String::new());
    }
    let _ = parsed.matches(&labels);
    for value in labels.values_mut() {
        value.push('a');
    }
    let _ = parsed.matches(&labels);
}

/// Any bytes as a WorkloadEndpoint to store: refused with violations, or normalised to stored
/// bytes that normalise again to themselves.
///
/// # Panics
///
/// When normalisation is not idempotent, or refuses what it produced.
pub fn endpoint(data: &[u8]) {
    let item = Item {
        bytes: data,
        identity: Identity::AS_SENT,
    };
    let Ok(stored) = normalize_endpoint(&item) else {
        return;
    };
    let again = normalize_endpoint(&Item {
        bytes: &stored,
        identity: Identity::AS_SENT,
    })
    .unwrap_or_else(|violations| panic!("stored form refused: {violations:?}"));
    assert_eq!(again, stored, "normalising the stored form changed it");
}
