//! What the transport tells Python, queued for it to take in one call, with one wake-up per batch.
//!
//! The transport's threads never take the GIL. They append to this queue, and only the append that finds it
//! empty writes a byte to a socket the event loop watches: however many calls start, messages arrive or
//! streams drain meanwhile, Python wakes once and takes them all.

use std::io::{ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use super::call::Call;

/// A call's start as Python needs it: which method, who calls, and with what metadata.
pub struct Start {
    pub method: String,
    pub metadata: Vec<(String, Vec<u8>)>,
    pub timeout: Option<f64>,
}

pub enum Event {
    /// A call began; for a method with one request, `message` is that request.
    Call {
        call: Arc<Call>,
        start: Start,
        message: Option<Bytes>,
    },
    /// A request of a client-streaming call, and what it took from the call's read budget (given back with
    /// `Call::grant` once the handler has it).
    Message { id: u64, data: Bytes, credit: u32 },
    /// The client sent its last request.
    HalfClose { id: u64 },
    /// The call is over without the handler: the client cancelled or left, or its deadline passed.
    Cancelled { id: u64 },
    /// Responses a handler was told to hold back have gone out: it may write again.
    Writable { id: u64 },
    /// A line for the server's log, from the part of the transport that `topic` names (`tls`: reloads).
    Log {
        topic: &'static str,
        level: Level,
        message: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Warning,
}

pub struct EventQueue {
    events: Mutex<Vec<Event>>,
    bell: UnixStream,
}

impl EventQueue {
    /// A queue and the socket Python watches for it (readable: take the events).
    ///
    /// # Errors
    /// The socket pair cannot be made.
    pub fn new() -> std::io::Result<(Arc<Self>, UnixStream)> {
        let (bell, listener) = UnixStream::pair()?;
        bell.set_nonblocking(true)?;
        listener.set_nonblocking(true)?;
        Ok((
            Arc::new(Self {
                events: Mutex::new(Vec::new()),
                bell,
            }),
            listener,
        ))
    }

    pub fn push(&self, event: Event) {
        let was_empty = {
            let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
            events.push(event);
            events.len() == 1
        };
        if was_empty {
            // A full socket already holds a wake-up that has not been read: nothing is lost.
            if let Err(error) = (&self.bell).write(&[1])
                && error.kind() != ErrorKind::WouldBlock
            {
                // The reading end is gone: the server is being torn down.
            }
        }
    }

    /// Everything queued since the last take, in order.
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
