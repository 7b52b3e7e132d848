//! Calico label selectors: parsing, evaluation and canonical rendering. No PyO3 here.

mod ast;
mod eval;
mod lexer;
mod parser;
mod requirement;

#[cfg(test)]
mod tests;

use std::fmt::{self, Display, Formatter};

pub use ast::Expr;
pub use eval::Labels;
pub use parser::parse;
pub use requirement::Term;

/// The longest selector accepted, in bytes of UTF-8.
pub const MAX_LENGTH: usize = 4096;
/// The deepest nesting accepted; each `(` and each `!` is one level.
pub const MAX_DEPTH: usize = 64;
/// The longest label key accepted, in characters.
pub const MAX_KEY_LENGTH: usize = 512;

/// A selector that failed to parse: what went wrong and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The whole message, position included, e.g. `expected a label key at position 7`.
    pub message: String,
    /// 0-based character (not byte) offset into the selector text.
    pub position: usize,
}

impl ParseError {
    pub(crate) fn new(message: impl Into<String>, position: usize) -> Self {
        ParseError {
            message: message.into(),
            position,
        }
    }

    /// `"{what} at position {position}"`.
    pub(crate) fn at(what: impl Display, position: usize) -> Self {
        ParseError {
            message: format!("{what} at position {position}"),
            position,
        }
    }
}

impl Display for ParseError {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseError {}

/// A parsed selector together with its canonical text.
#[derive(Debug, Clone)]
pub struct Selector {
    expr: Expr,
    canonical: String,
}

impl Selector {
    /// Parses `text` (see [`parse`]).
    ///
    /// # Errors
    ///
    /// A [`ParseError`] when `text` is not a valid selector, as for [`parse`].
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        Ok(Self::from(parse(text)?))
    }

    /// The syntax tree.
    #[must_use]
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// The canonical rendering: equal trees give equal text, and the text parses back to
    /// an equal tree.
    #[must_use]
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// True for `all()`, `global()` and the empty selector.
    #[must_use]
    pub fn is_all(&self) -> bool {
        self.expr.is_all()
    }

    /// Label terms at least one of which every match satisfies (see [`Expr::requirement`]).
    #[must_use]
    pub fn requirement(&self) -> Option<Vec<Term>> {
        self.expr.requirement()
    }

    /// [`Selector::requirement`] with `&&` weighed by `cost` (see [`Expr::requirement_by`]).
    #[must_use]
    pub fn requirement_by(&self, cost: &dyn Fn(&Term) -> u64) -> Option<Vec<Term>> {
        self.expr.requirement_by(cost)
    }

    /// Every label key the selector reads, sorted (see [`Expr::keys`]).
    #[must_use]
    pub fn keys(&self) -> Vec<&str> {
        self.expr.keys()
    }

    /// Whether `labels` satisfy the selector.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        self.expr.matches(labels)
    }
}

impl From<Expr> for Selector {
    fn from(expr: Expr) -> Self {
        let canonical = expr.to_string();
        Selector { expr, canonical }
    }
}

/// Selectors are equal when their canonical forms are.
impl PartialEq for Selector {
    fn eq(&self, other: &Self) -> bool {
        self.canonical == other.canonical
    }
}

impl Eq for Selector {}

impl std::hash::Hash for Selector {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.canonical.hash(state);
    }
}

impl Display for Selector {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}
