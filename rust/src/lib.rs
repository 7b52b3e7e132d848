//! epsync's Rust core, exposed to Python as `epsync._core`.
//!
//! The logic lives in plain Rust modules ([`selector`], [`index`], [`model`], [`wire`]) that `cargo test`
//! exercises directly; [`py`] is the thin PyO3 layer over them and [`error`] is the one
//! place where Rust errors become Python exceptions.

pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod index;
pub mod known;
pub mod model;
mod py;
#[cfg(feature = "transport")]
mod py_transport;
pub mod selector;
#[cfg(feature = "transport")]
pub mod transport;
pub mod wire;

use pyo3::prelude::*;

#[pymodule]
mod _core {
    #[pymodule_export]
    const VERSION: &str = env!("CARGO_PKG_VERSION");

    #[pymodule_export]
    const MAX_SELECTOR_LENGTH: usize = crate::selector::MAX_LENGTH;

    #[pymodule_export]
    const MAX_SELECTOR_DEPTH: usize = crate::selector::MAX_DEPTH;

    /// Event types in `EndpointIndex.apply`'s subjects, as in `epsync.v1.EventType`.
    #[pymodule_export]
    const ADDED: u8 = crate::index::EventType::Added as u8;

    #[pymodule_export]
    const MODIFIED: u8 = crate::index::EventType::Modified as u8;

    #[pymodule_export]
    const DELETED: u8 = crate::index::EventType::Deleted as u8;

    #[pymodule_export]
    use crate::error::SelectorError;

    /// Event kinds of `Transport.take_events`.
    #[cfg(feature = "transport")]
    #[pymodule_export]
    const CALL: u8 = crate::py_transport::CALL;

    #[cfg(feature = "transport")]
    #[pymodule_export]
    const MESSAGE: u8 = crate::py_transport::MESSAGE;

    #[cfg(feature = "transport")]
    #[pymodule_export]
    const HALF_CLOSE: u8 = crate::py_transport::HALF_CLOSE;

    #[cfg(feature = "transport")]
    #[pymodule_export]
    const CANCELLED: u8 = crate::py_transport::CANCELLED;

    #[cfg(feature = "transport")]
    #[pymodule_export]
    const WRITABLE: u8 = crate::py_transport::WRITABLE;

    #[cfg(feature = "transport")]
    #[pymodule_export]
    const LOG: u8 = crate::py_transport::LOG;

    #[cfg(feature = "transport")]
    #[pymodule_export]
    use crate::py_transport::{CallClosed, PyCall, PyTransport};

    #[pymodule_export]
    use crate::py::{
        PyEndpointIndex, PyKnownVersions, PySelector, normalize_endpoints, normalize_profiles,
        split_known_versions, undecodable,
    };
}
