//! The selector syntax tree and its canonical rendering.
//!
//! The tree is kept normalised by its constructors: `&&` and `||` are n-ary and never
//! contain a child of their own kind (so `a && (b && c)` and `(a && b) && c` are the same
//! tree), and the values of `in`/`not in` are sorted and de-duplicated. Two selectors that
//! mean the same thing for those reasons therefore render identically, which lets callers
//! group watchers by `to_string()`.

use std::fmt::{self, Display, Formatter, Write};

/// A parsed selector expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    /// `all()`, and the empty selector: matches everything.
    All,
    /// `global()`: matches every endpoint.
    Global,
    /// `has(k)`: the label is present (with any value).
    Has(String),
    /// `k == "v"`: present with exactly this value.
    Eq(String, String),
    /// `k != "v"`: absent, or present with another value.
    Ne(String, String),
    /// `k in {...}`: present with one of these values (sorted, unique).
    In(String, Vec<String>),
    /// `k not in {...}`: absent, or present with none of these values (sorted, unique).
    NotIn(String, Vec<String>),
    /// `k contains "s"`: present and the value contains `s`.
    Contains(String, String),
    /// `k starts with "s"`: present and the value starts with `s`.
    StartsWith(String, String),
    /// `k ends with "s"`: present and the value ends with `s`.
    EndsWith(String, String),
    /// `!e`.
    Not(Box<Expr>),
    /// `a && b && ...`: two or more operands, none of them an `And`.
    And(Vec<Expr>),
    /// `a || b || ...`: two or more operands, none of them an `Or`.
    Or(Vec<Expr>),
}

impl Expr {
    /// `!operand`.
    #[must_use]
    pub fn negate(operand: Expr) -> Expr {
        Expr::Not(Box::new(operand))
    }

    /// The conjunction of `operands`, flattened; a single operand is returned as is.
    ///
    /// # Panics
    /// If `operands` is empty.
    #[must_use]
    pub fn and(operands: Vec<Expr>) -> Expr {
        Self::flatten(operands, true)
    }

    /// The disjunction of `operands`, flattened; a single operand is returned as is.
    ///
    /// # Panics
    /// If `operands` is empty.
    #[must_use]
    pub fn or(operands: Vec<Expr>) -> Expr {
        Self::flatten(operands, false)
    }

    /// `key in {values}` with the values sorted and de-duplicated.
    #[must_use]
    pub fn in_set(key: String, values: Vec<String>) -> Expr {
        Expr::In(key, normalise_set(values))
    }

    /// `key not in {values}` with the values sorted and de-duplicated.
    #[must_use]
    pub fn not_in_set(key: String, values: Vec<String>) -> Expr {
        Expr::NotIn(key, normalise_set(values))
    }

    /// True for `all()` and `global()`: the selector matches everything.
    #[must_use]
    pub fn is_all(&self) -> bool {
        matches!(self, Expr::All | Expr::Global)
    }

    fn flatten(operands: Vec<Expr>, conjunction: bool) -> Expr {
        assert!(
            !operands.is_empty(),
            "a conjunction or disjunction needs an operand"
        );
        let mut flat = Vec::with_capacity(operands.len());
        for operand in operands {
            match (operand, conjunction) {
                (Expr::And(inner), true) | (Expr::Or(inner), false) => flat.extend(inner),
                (other, _) => flat.push(other),
            }
        }
        if flat.len() == 1 {
            return flat.pop().expect("one operand");
        }
        if conjunction {
            Expr::And(flat)
        } else {
            Expr::Or(flat)
        }
    }
}

fn normalise_set(mut values: Vec<String>) -> Vec<String> {
    values.sort_unstable();
    values.dedup();
    values
}

/// Writes `value` in quotes: double quotes unless the value contains one, then single.
///
/// The grammar has no escapes, so a value holding both kinds of quote cannot be written;
/// the parser never produces one.
fn write_string(f: &mut Formatter<'_>, value: &str) -> fmt::Result {
    let quote = if value.contains('"') { '\'' } else { '"' };
    f.write_char(quote)?;
    f.write_str(value)?;
    f.write_char(quote)
}

fn write_set(f: &mut Formatter<'_>, values: &[String]) -> fmt::Result {
    f.write_char('{')?;
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_string(f, value)?;
    }
    f.write_char('}')
}

/// Writes `expr`, in parentheses when `parenthesise` is set.
fn write_operand(f: &mut Formatter<'_>, expr: &Expr, parenthesise: bool) -> fmt::Result {
    if parenthesise {
        write!(f, "({expr})")
    } else {
        write!(f, "{expr}")
    }
}

/// The canonical rendering: Calico syntax with double quotes, single spaces around
/// operators and parentheses only where precedence needs them. It parses back to an equal
/// tree, and never nests deeper than the text it was parsed from.
impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Expr::All => f.write_str("all()"),
            Expr::Global => f.write_str("global()"),
            Expr::Has(key) => write!(f, "has({key})"),
            Expr::Eq(key, value) => {
                write!(f, "{key} == ")?;
                write_string(f, value)
            }
            Expr::Ne(key, value) => {
                write!(f, "{key} != ")?;
                write_string(f, value)
            }
            Expr::In(key, values) => {
                write!(f, "{key} in ")?;
                write_set(f, values)
            }
            Expr::NotIn(key, values) => {
                write!(f, "{key} not in ")?;
                write_set(f, values)
            }
            Expr::Contains(key, value) => {
                write!(f, "{key} contains ")?;
                write_string(f, value)
            }
            Expr::StartsWith(key, value) => {
                write!(f, "{key} starts with ")?;
                write_string(f, value)
            }
            Expr::EndsWith(key, value) => {
                write!(f, "{key} ends with ")?;
                write_string(f, value)
            }
            Expr::Not(operand) => {
                f.write_char('!')?;
                write_operand(f, operand, matches!(**operand, Expr::And(_) | Expr::Or(_)))
            }
            Expr::And(operands) => {
                for (i, operand) in operands.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" && ")?;
                    }
                    write_operand(f, operand, matches!(operand, Expr::And(_) | Expr::Or(_)))?;
                }
                Ok(())
            }
            Expr::Or(operands) => {
                for (i, operand) in operands.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" || ")?;
                    }
                    write_operand(f, operand, matches!(operand, Expr::Or(_)))?;
                }
                Ok(())
            }
        }
    }
}
