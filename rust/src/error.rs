//! The one place where Rust errors become Python exceptions.

use pyo3::exceptions::{PyKeyError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::index::{FanoutError, StoredError};
use crate::selector::ParseError;

pyo3::create_exception!(
    epsync._core,
    SelectorError,
    PyValueError,
    "A selector failed to parse.\n\n`str(e)` is the message, `e.position` the 0-based character offset of the\nerror and `e.selector` the text that was parsed."
);

/// A [`ParseError`] of `selector` as a `SelectorError` carrying `position` and `selector`.
#[must_use]
pub fn selector_error(error: ParseError, selector: &Bound<'_, PyString>) -> PyErr {
    let exception = SelectorError::new_err(error.message);
    let value = exception.value(selector.py());
    let attributes = value
        .setattr("position", error.position)
        .and_then(|()| value.setattr("selector", selector));
    match attributes {
        Ok(()) => exception,
        Err(failure) => failure,
    }
}

/// Unknown group ids are `KeyError`s; out-of-order revisions are `ValueError`s.
impl From<FanoutError> for PyErr {
    fn from(error: FanoutError) -> Self {
        match error {
            FanoutError::UnknownGroup(group) => PyKeyError::new_err(group),
            FanoutError::RevisionOrder { .. } => PyValueError::new_err(error.to_string()),
        }
    }
}

/// Undecodable values are `ValueError`s, as out-of-order revisions are; a missing stored
/// state (the caller's bytes no longer follow the index) is a `RuntimeError`.
impl From<StoredError> for PyErr {
    fn from(error: StoredError) -> Self {
        match error {
            StoredError::Fanout(error) => error.into(),
            StoredError::Decode { .. } => PyValueError::new_err(error.to_string()),
            StoredError::MissingState { .. } => PyRuntimeError::new_err(error.to_string()),
        }
    }
}
