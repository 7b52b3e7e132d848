//! The gRPC transport: HTTP/2 connections and calls served on threads of their own, without the GIL.
//!
//! grpc.aio spends some 0.1 ms of the event loop's thread on every message it sends or receives (its Cython
//! and gRPC core's system calls, made while holding the GIL), which was most of a write's cost and almost all
//! of an event's. Here hyper serves the connections on a small tokio runtime; Python sees only the calls:
//! each call's start (with its request, for a method that takes one), further requests, half-closes and
//! cancellations, taken in batches with one wake-up ([`events`]), and it answers through [`call::Call`],
//! which queues without blocking. The servicers stay in Python and do not change; `epsync.server.transport`
//! runs them on this as grpc.aio would.

pub mod call;
pub mod deferred;
pub mod events;
pub mod framing;
pub mod server;
pub mod tls;
