//! Evaluating a selector against a set of labels.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

use super::ast::Expr;

/// Read access to a set of labels (key to value).
pub trait Labels {
    /// The value of `key`, or `None` when the label is absent.
    fn get_label(&self, key: &str) -> Option<&str>;
}

impl<S: BuildHasher> Labels for HashMap<String, String, S> {
    fn get_label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Labels for BTreeMap<String, String> {
    fn get_label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Labels for [(&str, &str)] {
    fn get_label(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

impl Expr {
    /// Whether `labels` satisfy the expression.
    ///
    /// `!=` and `not in` match an absent label; `==`, `in` and the string operators do not.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        match self {
            Expr::All | Expr::Global => true,
            Expr::Has(key) => labels.get_label(key).is_some(),
            Expr::Eq(key, value) => labels.get_label(key) == Some(value.as_str()),
            Expr::Ne(key, value) => labels.get_label(key) != Some(value.as_str()),
            Expr::In(key, values) => labels.get_label(key).is_some_and(|v| contains(values, v)),
            Expr::NotIn(key, values) => !labels.get_label(key).is_some_and(|v| contains(values, v)),
            Expr::Contains(key, needle) => labels
                .get_label(key)
                .is_some_and(|v| v.contains(needle.as_str())),
            Expr::StartsWith(key, prefix) => labels
                .get_label(key)
                .is_some_and(|v| v.starts_with(prefix.as_str())),
            Expr::EndsWith(key, suffix) => labels
                .get_label(key)
                .is_some_and(|v| v.ends_with(suffix.as_str())),
            Expr::Not(operand) => !operand.matches(labels),
            Expr::And(operands) => operands.iter().all(|operand| operand.matches(labels)),
            Expr::Or(operands) => operands.iter().any(|operand| operand.matches(labels)),
        }
    }
}

/// Membership in a sorted set; short sets (the usual case) are scanned.
fn contains(values: &[String], value: &str) -> bool {
    if values.len() <= 8 {
        values.iter().any(|v| v == value)
    } else {
        values.binary_search_by(|v| v.as_str().cmp(value)).is_ok()
    }
}
