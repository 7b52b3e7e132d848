//! The resources, WorkloadEndpoint and Profile: their protobuf messages ([`messages`]), and
//! their validation and normalisation before they are stored ([`validate`], with
//! [`naming`], [`syntax`] and [`ip`]), ported from `epsync.model` and held to it by a
//! property test. [`stored`] goes from a request's bytes to the stored bytes;
//! [`view`] reads what the index needs back out of them.

pub mod ip;
pub mod messages;
pub mod naming;
pub mod stored;
pub mod syntax;
pub mod validate;
pub mod view;

#[cfg(test)]
mod tests;
