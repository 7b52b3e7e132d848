//! Wake-ups Python's thread owes the transport's, done together and without the GIL.
//!
//! Waking a tokio task from outside the runtime may unpark a worker, a system call (an eventfd write or a
//! futex wake) that Python's thread would make holding the GIL: a fifth of the event loop's time when every
//! response woke its connection's task itself. Responses and read grants queue their wake-ups here
//! instead, and Python flushes them once per turn of its event loop ([`Deferred::flush`]): a turn that answers
//! a hundred writes wakes the runtime once or a few times (tokio unparks a worker only when none is already
//! looking for work), not a hundred.

use std::sync::{Arc, Mutex, PoisonError};
use std::task::Waker;

use tokio::sync::Semaphore;

enum Owed {
    Wake(Waker),
    /// Request bytes a handler consumed: its call may read that much further.
    Grant(Arc<Semaphore>, usize),
}

#[derive(Default)]
pub struct Deferred {
    owed: Mutex<Vec<Owed>>,
}

impl Deferred {
    pub fn wake(&self, waker: Waker) {
        self.owed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Owed::Wake(waker));
    }

    pub fn grant(&self, credit: Arc<Semaphore>, bytes: usize) {
        self.owed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Owed::Grant(credit, bytes));
    }

    /// Everything owed, now.
    pub fn flush(&self) {
        let owed = std::mem::take(&mut *self.owed.lock().unwrap_or_else(PoisonError::into_inner));
        for item in owed {
            match item {
                Owed::Wake(waker) => waker.wake(),
                Owed::Grant(credit, bytes) => credit.add_permits(bytes),
            }
        }
    }
}
