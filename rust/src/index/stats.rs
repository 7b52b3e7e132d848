//! Approximately how many endpoints have each effective label (and each label key), so a
//! watcher group is posted under the side of an `&&` that fewer endpoints satisfy.
//!
//! A count-min sketch: a few rows of counters, each label hashed to one counter per row,
//! the estimate being the smallest. It never underestimates, costs constant memory however
//! many distinct labels there are (pod template hashes are unique per pod), and an update
//! is one hash and a few additions.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;

use super::{LabelSet, State};
use crate::selector::Term;

const ROWS: usize = 4;
/// Counters per row; a power of two so a slice of the hash picks one.
const WIDTH: usize = 1 << 12;
const WIDTH_BITS: u32 = WIDTH.trailing_zeros();

/// See the module docs.
#[derive(Debug)]
pub struct LabelStats {
    /// `ROWS` rows of `WIDTH` counters, one after the other.
    counts: Box<[u32]>,
    hasher: FixedState,
}

impl Default for LabelStats {
    fn default() -> Self {
        LabelStats {
            counts: vec![0; ROWS * WIDTH].into_boxed_slice(),
            hasher: FixedState::with_seed(0x5eed_f00d_cafe_d00d),
        }
    }
}

impl LabelStats {
    fn bump(&mut self, hash: u64, delta: i32) {
        for row in 0..ROWS {
            let cell = &mut self.counts[cell(hash, row)];
            *cell = cell.wrapping_add_signed(delta);
        }
    }

    fn estimate_hash(&self, hash: u64) -> u32 {
        (0..ROWS)
            .map(|row| self.counts[cell(hash, row)])
            .min()
            .unwrap_or(0)
    }

    fn label_hash(&self, key: &str, value: &str) -> u64 {
        self.hasher.hash_one((key, value))
    }

    fn key_hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Counts (`delta` 1) or uncounts (`delta` -1) one label that an endpoint gained or
    /// lost; `key_too` when the key itself appeared or disappeared.
    fn label(&mut self, key: &str, value: &str, key_too: bool, delta: i32) {
        self.bump(self.label_hash(key, value), delta);
        if key_too {
            self.bump(self.key_hash(key), delta);
        }
    }

    /// About how many endpoints satisfy `term` (never fewer than really do).
    #[must_use]
    pub fn estimate(&self, term: &Term) -> u64 {
        u64::from(match term {
            Term::Label(key, value) => self.estimate_hash(self.label_hash(key, value)),
            Term::Key(key) => self.estimate_hash(self.key_hash(key)),
        })
    }

    /// Moves the counts from an endpoint's `old` state to its `new` one (either absent).
    pub fn change(&mut self, old: Option<&State>, new: Option<&State>) {
        match (old, new) {
            (Some(old), Some(new)) if old.inherited.ptr_eq(&new.inherited) => {
                // Same inherited labels, and own and inherited keys never overlap: only the
                // own labels that differ move.
                self.own_change(&old.own, &new.own);
            }
            _ => {
                for (state, delta) in [(old, -1), (new, 1)] {
                    for (key, value) in state.iter().flat_map(|s| s.effective().iter()) {
                        self.label(key, value, true, delta);
                    }
                }
            }
        }
    }

    fn own_change(&mut self, old: &LabelSet, new: &LabelSet) {
        for (key, value) in old.iter() {
            let now = new.get(key);
            if now != Some(value) {
                self.label(key, value, now.is_none(), -1);
            }
        }
        for (key, value) in new.iter() {
            let was = old.get(key);
            if was != Some(value) {
                self.label(key, value, was.is_none(), 1);
            }
        }
    }

    /// Moves the counts of `key` for an endpoint whose effective value of it went from
    /// `old` to `new`.
    pub fn relabel(&mut self, key: &str, old: Option<&str>, new: Option<&str>) {
        if old == new {
            return;
        }
        let key_moves = old.is_some() != new.is_some();
        if let Some(value) = old {
            self.label(key, value, key_moves, -1);
        }
        if let Some(value) = new {
            self.label(key, value, key_moves, 1);
        }
    }
}

/// Where the counter of `hash` in `row` is: a distinct slice of the hash picks it.
fn cell(hash: u64, row: usize) -> usize {
    // ROWS * WIDTH_BITS = 48 bits of a 64-bit hash.
    let shift = u32::try_from(row).expect("few rows") * WIDTH_BITS;
    let column = usize::try_from((hash >> shift) & (WIDTH as u64 - 1)).expect("a small cell");
    row * WIDTH + column
}
