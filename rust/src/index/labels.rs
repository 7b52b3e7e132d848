//! Compact label sets and the interner that lets endpoints share their labels.
//!
//! Most labels repeat across endpoints ("tier" = "backend", "app.kubernetes.io/managed-by" =
//! "helm"), so the index keeps one reference-counted copy of each distinct label (and of
//! each distinct string in them), and an endpoint's labels are a sorted slice of pointers to
//! those: one allocation of 8 bytes a label, instead of a hash table plus two strings a
//! label. An endpoint has about ten labels, so scanning them finds one as fast as hashing
//! would.

use std::hash::Hash;
use std::sync::Arc;

use foldhash::HashSet;

/// One label: key and value.
pub type Label = Arc<(Arc<str>, Arc<str>)>;

/// Up to this many labels, [`LabelSet::get`] scans rather than searches.
const SCAN_MAX: usize = 16;

/// An immutable label set, sorted by key, keys unique. Cloning it only bumps a reference
/// count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSet(Arc<[Label]>);

impl LabelSet {
    /// The value of `key`, if the set has it.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        // Keys mostly differ in length, so a scan rejects them without comparing bytes,
        // where a binary search compares bytes at every step.
        let at = if self.0.len() <= SCAN_MAX {
            self.0.iter().position(|label| *label.0 == *key)
        } else {
            self.0.binary_search_by(|label| (*label.0).cmp(key)).ok()
        };
        at.map(|at| &*self.0[at].1)
    }

    /// Whether the set has `key`.
    #[must_use]
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Every label, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|label| (&*label.0, &*label.1))
    }

    /// Every label, in key order, shared.
    #[must_use]
    pub fn labels(&self) -> &[Label] {
        &self.0
    }

    /// How many labels there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The labels `keep` accepts, sharing their strings with this set.
    #[must_use]
    pub fn filter(&self, keep: impl Fn(&str) -> bool) -> LabelSet {
        self.0
            .iter()
            .filter(|label| keep(&label.0))
            .cloned()
            .collect()
    }

    /// Whether both are the same allocation (so certainly equal).
    #[must_use]
    pub fn ptr_eq(&self, other: &LabelSet) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The address of the allocation: an identity while the set is alive.
    #[must_use]
    pub fn addr(&self) -> usize {
        Arc::as_ptr(&self.0).cast::<()>().addr()
    }

    /// Whether another clone of this set exists.
    #[must_use]
    pub fn is_shared(&self) -> bool {
        Arc::strong_count(&self.0) > 1
    }
}

/// Collects labels into a set; of labels with the same key, the last wins (as in a map).
impl FromIterator<Label> for LabelSet {
    fn from_iter<I: IntoIterator<Item = Label>>(labels: I) -> Self {
        let mut labels: Vec<Label> = labels.into_iter().collect();
        // Reversed, a stable sort puts the last of equal keys first, and `dedup_by` keeps
        // the first.
        labels.reverse();
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        labels.dedup_by(|a, b| a.0 == b.0);
        LabelSet(labels.into())
    }
}

/// Collects `(key, value)` pairs into a set of labels of their own, shared with nothing.
impl<K: Into<Arc<str>>, V: Into<Arc<str>>> FromIterator<(K, V)> for LabelSet {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(labels: I) -> Self {
        labels
            .into_iter()
            .map(|(key, value)| Arc::new((key.into(), value.into())))
            .collect()
    }
}

/// Below this many entries a table is not swept.
pub(super) const MIN_SWEEP: usize = 1024;

/// When to drop the entries nothing else holds from a table that only grows otherwise:
/// whenever it has doubled since the last time. The table then stays within about twice
/// its peak number of entries in use, at an amortized constant cost per insertion.
#[derive(Debug)]
pub struct Sweep {
    at: usize,
}

impl Default for Sweep {
    fn default() -> Self {
        Sweep { at: MIN_SWEEP }
    }
}

impl Sweep {
    /// Runs `sweep` if a table of `len` entries is due one; `sweep` returns how many are left.
    pub fn maybe(&mut self, len: usize, sweep: impl FnOnce() -> usize) {
        if len >= self.at {
            self.at = (2 * sweep()).max(MIN_SWEEP);
        }
    }
}

/// A value the interner can copy into its own allocation.
pub trait Share {
    fn share(&self) -> Arc<Self>;
}

impl Share for str {
    fn share(&self) -> Arc<str> {
        Arc::from(self)
    }
}

impl<T: Clone> Share for [T] {
    fn share(&self) -> Arc<[T]> {
        Arc::from(self)
    }
}

impl<A: Clone, B: Clone> Share for (A, B) {
    fn share(&self) -> Arc<(A, B)> {
        Arc::new(self.clone())
    }
}

/// One shared copy of each distinct value (strings, labels, profile lists) the index holds.
/// A value nothing else holds any more stays until the next [`Sweep`].
#[derive(Debug)]
pub struct Interner<T: ?Sized> {
    values: HashSet<Arc<T>>,
    sweep: Sweep,
}

impl<T: ?Sized> Default for Interner<T> {
    fn default() -> Self {
        Interner {
            values: HashSet::default(),
            sweep: Sweep::default(),
        }
    }
}

impl<T: ?Sized + Hash + Eq + Share> Interner<T> {
    /// The shared copy of `value`, made if there is none.
    pub fn intern(&mut self, value: &T) -> Arc<T> {
        if let Some(shared) = self.values.get(value) {
            return Arc::clone(shared);
        }
        self.sweep.maybe(self.values.len(), || {
            self.values.retain(|value| Arc::strong_count(value) > 1);
            self.values.len()
        });
        let shared = value.share();
        self.values.insert(Arc::clone(&shared));
        shared
    }

    /// How many values the interner holds, in use or not.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.values.len()
    }
}
