//! What a selector requires of the labels it matches, so watchers can be indexed by it.
//!
//! A selector's requirement is a set of [`Term`]s such that every label set the selector
//! matches satisfies at least one of them. The fan-out index posts a watcher group under each
//! term of its requirement, so a change only has to evaluate the groups posted under a term
//! the endpoint's labels satisfy. Selectors with no such set (negations, `all()`) have no
//! requirement and are evaluated for every change.

use super::ast::Expr;

/// A condition on one label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Term {
    /// The label `key` is present with exactly this value.
    Label(String, String),
    /// The label `key` is present, with any value.
    Key(String),
}

/// How many endpoints a key-only term is assumed to admit, relative to a `key == value`
/// term (which counts 1): a key is usually shared by many values.
const KEY_COST: u64 = 16;

impl Term {
    /// A guess, knowing nothing of the endpoints, at how many satisfy the term; lower is
    /// more selective.
    #[must_use]
    pub fn static_cost(&self) -> u64 {
        match self {
            Term::Label(..) => 1,
            Term::Key(_) => KEY_COST,
        }
    }

    /// The label key the term is about.
    #[must_use]
    pub fn key(&self) -> &str {
        match self {
            Term::Label(key, _) | Term::Key(key) => key,
        }
    }
}

impl Expr {
    /// Terms at least one of which every label set matching the expression satisfies, or
    /// `None` when none can be derived. An empty list means the expression matches nothing.
    ///
    /// `k == 'v'` requires `(k, v)`; `k in {a, b}` requires `(k, a)` or `(k, b)`; `has(k)`
    /// and the string operators require the key `k`; `A && B` takes the more selective
    /// operand's requirement (by [`Term::static_cost`]); `A || B` needs one from every
    /// operand and requires their union. `!`, `!=`, `not in`, `all()` and `global()`
    /// require nothing.
    #[must_use]
    pub fn requirement(&self) -> Option<Vec<Term>> {
        self.requirement_by(&Term::static_cost)
    }

    /// [`Expr::requirement`], with `A && B` taking the operand whose terms have the lowest
    /// total `cost` (e.g. how many endpoints satisfy each), ties going to the lowest
    /// [`Term::static_cost`], then to the first.
    #[must_use]
    pub fn requirement_by(&self, cost: &dyn Fn(&Term) -> u64) -> Option<Vec<Term>> {
        match self {
            Expr::Eq(key, value) => Some(vec![Term::Label(key.clone(), value.clone())]),
            Expr::In(key, values) => Some(
                values
                    .iter()
                    .map(|value| Term::Label(key.clone(), value.clone()))
                    .collect(),
            ),
            Expr::Has(key)
            | Expr::Contains(key, _)
            | Expr::StartsWith(key, _)
            | Expr::EndsWith(key, _) => Some(vec![Term::Key(key.clone())]),
            Expr::And(operands) => operands
                .iter()
                .filter_map(|operand| operand.requirement_by(cost))
                .min_by_key(|terms| {
                    let total =
                        |cost: &dyn Fn(&Term) -> u64| -> u64 { terms.iter().map(cost).sum() };
                    (total(cost), total(&Term::static_cost))
                }),
            Expr::Or(operands) => {
                let mut union = Vec::new();
                for operand in operands {
                    union.extend(operand.requirement_by(cost)?);
                }
                union.sort_unstable();
                union.dedup();
                Some(union)
            }
            Expr::All | Expr::Global | Expr::Ne(..) | Expr::NotIn(..) | Expr::Not(_) => None,
        }
    }
}

impl Expr {
    /// Every label key the expression reads, sorted and without repeats: a label set's match
    /// can only change when the value (or presence) of one of these keys does.
    #[must_use]
    pub fn keys(&self) -> Vec<&str> {
        let mut keys = Vec::new();
        self.collect_keys(&mut keys);
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    fn collect_keys<'a>(&'a self, keys: &mut Vec<&'a str>) {
        match self {
            Expr::All | Expr::Global => {}
            Expr::Has(key)
            | Expr::Eq(key, _)
            | Expr::Ne(key, _)
            | Expr::In(key, _)
            | Expr::NotIn(key, _)
            | Expr::Contains(key, _)
            | Expr::StartsWith(key, _)
            | Expr::EndsWith(key, _) => keys.push(key),
            Expr::Not(operand) => operand.collect_keys(keys),
            Expr::And(operands) | Expr::Or(operands) => {
                for operand in operands {
                    operand.collect_keys(keys);
                }
            }
        }
    }
}
