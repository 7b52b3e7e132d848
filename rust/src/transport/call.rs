//! One call: the responses Python hands over, the trailers that end it, and the body hyper sends them from.
//!
//! Python writes with [`Call::send`] and ends with [`Call::finish`], never waiting: responses queue here and
//! [`ResponseBody`] gives them to HTTP/2 as the peer's flow-control window allows. `send` answers whether the
//! queue is past its high-water mark; a handler told so waits for the `Writable` event, sent once the queue
//! has drained below the low-water mark, so a slow reader holds back its own handler and nobody else.
//! Requests of a client-streaming call are read against a byte budget Python replenishes as it consumes
//! them ([`Call::grant`]), so a client that writes faster than its handler reads is held back by HTTP/2 flow
//! control instead of filling this process's memory.
//!
//! A call's status waits for the client to finish sending ([`Call::release_status`]): grpc's Python client
//! reports a status that arrives while it still has a request or its half-close to send as INTERNAL
//! "Internal error from Core" in place of that status (grpc/grpc#36066, in grpcio 1.85). grpc.aio's server
//! is slow enough to answer that such a client has usually written everything first; this transport
//! refuses a stream at its start within a millisecond, before the client's first request, and without the
//! wait that client saw INTERNAL every time.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame};
use tokio::sync::{Notify, Semaphore};

use super::deferred::Deferred;
use super::events::{Event, EventQueue, Start};
use super::framing::{self, code};

/// What a call's responses are held to: the largest one, and how many bytes may queue before its handler
/// is asked to wait (it may write again once a quarter of that is left). The queue is small: a watcher's
/// own buffer is what bounds what a slow client may hold up (and cuts it off), so the transport keeps
/// little more than HTTP/2's window, and the server sizes it from that bound; enough that a stream of
/// small answers (the write stream's) rarely waits at all.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub max_send: usize,
    pub high_water: usize,
}

impl Sizes {
    fn low_water(self) -> usize {
        self.high_water / 4
    }
}

/// The high-water mark when nothing smaller is asked for.
pub const HIGH_WATER: usize = 64 * 1024;
/// Request bytes read ahead of a client-streaming handler.
pub const READ_BUDGET: usize = 1024 * 1024;
/// Responses queued together go out as one DATA frame up to this size.
const COALESCE: usize = 64 * 1024;

/// What one request of `length` bytes takes from the read budget (its prefix counts, so empty requests do too).
#[must_use]
pub fn credit_of(length: usize) -> u32 {
    u32::try_from((length + framing::PREFIX).min(READ_BUDGET)).unwrap_or(u32::MAX)
}

/// Where the response stream is.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Stream {
    #[default]
    Open,
    /// The trailers went out: the call ended as it should.
    Complete,
    /// Gone before its trailers (the client reset it, the connection closed, or the body was dropped).
    Gone,
}

#[derive(Default)]
struct State {
    responses: VecDeque<Bytes>,
    queued: usize,
    trailers: Option<HeaderMap>,
    stream: Stream,
    /// Python was told of this call (so a cancellation must be reported).
    announced: bool,
    writer_waiting: bool,
    /// The client has finished sending, or the transport stopped waiting for it: the status may go out.
    status_may_go: bool,
    waker: Option<Waker>,
}

impl State {
    /// No more responses or status: the call ended, or its stream is gone.
    fn closed(&self) -> bool {
        self.stream != Stream::Open || self.trailers.is_some()
    }
}

/// Who is at the other end of a call: the same for every call of a connection.
pub struct Peer {
    /// The client's address as grpc names it: `ipv4:127.0.0.1:52000`.
    pub address: String,
    /// The certificate the client showed over TLS (the first of its chain) as PEM, what grpc gives handlers
    /// as `x509_pem_cert`: mutual TLS identifies callers by it.
    pub certificate: Option<Bytes>,
}

pub struct Call {
    pub id: u64,
    pub peer: Arc<Peer>,
    sizes: Sizes,
    state: Mutex<State>,
    /// Set once the call has trailers or is gone: readers and timers stop.
    done: AtomicBool,
    done_signal: Notify,
    /// Request bytes Python may still be handed (client-streaming calls).
    pub credit: Arc<Semaphore>,
    events: Arc<EventQueue>,
    /// Where Python's `send`, `finish` and `grant` leave their wake-ups, for its next flush.
    deferred: Arc<Deferred>,
}

/// Why `send` refused a response.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The call has ended (trailers set) or its stream is gone.
    Closed,
    TooLarge {
        length: usize,
        max: usize,
    },
}

impl Call {
    #[must_use]
    pub fn new(
        id: u64,
        peer: Arc<Peer>,
        sizes: Sizes,
        events: Arc<EventQueue>,
        deferred: Arc<Deferred>,
    ) -> Self {
        Self {
            id,
            peer,
            sizes,
            state: Mutex::new(State::default()),
            done: AtomicBool::new(false),
            done_signal: Notify::new(),
            credit: Arc::new(Semaphore::new(READ_BUDGET)),
            events,
            deferred,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tell Python the call began, unless its stream is already gone. The check and the announcement are
    /// one step under the call's lock, so a cancellation is reported exactly when Python knows the call.
    pub fn announce(self: &Arc<Self>, start: Start, message: Option<Bytes>) -> bool {
        let mut state = self.state();
        if state.closed() {
            return false;
        }
        state.announced = true;
        self.events.push(Event::Call {
            call: Arc::clone(self),
            start,
            message,
        });
        true
    }

    /// Queue one response. `Ok(false)`: queued, but the handler should wait for `Writable` before the next.
    ///
    /// # Errors
    /// The call is over, or the response is larger than the limit.
    pub fn send(&self, message: &[u8]) -> Result<bool, SendError> {
        if message.len() > self.sizes.max_send {
            return Err(SendError::TooLarge {
                length: message.len(),
                max: self.sizes.max_send,
            });
        }
        let framed = framing::frame(message);
        let mut state = self.state();
        if state.closed() {
            return Err(SendError::Closed);
        }
        state.queued += framed.len();
        state.responses.push_back(framed);
        let room = state.queued <= self.sizes.high_water;
        if !room {
            state.writer_waiting = true;
        }
        if let Some(waker) = state.waker.take() {
            self.deferred.wake(waker);
        }
        Ok(room)
    }

    /// End the call with this status after the responses queued so far. Later calls change nothing.
    pub fn finish(&self, status: u32, message: &str, metadata: HeaderMap) {
        let mut state = self.state();
        if state.closed() {
            return;
        }
        state.trailers = Some(framing::status_trailers(status, message, metadata));
        if let Some(waker) = state.waker.take() {
            self.deferred.wake(waker);
        }
        drop(state);
        self.mark_done();
    }

    /// End the call with a status Python never sees, telling Python to stop its handler if it has one
    /// (a request the transport cannot read, a deadline that passed).
    pub fn fail(&self, status: u32, message: &str) {
        let announced = {
            let mut state = self.state();
            if state.closed() {
                return;
            }
            state.trailers = Some(framing::status_trailers(status, message, HeaderMap::new()));
            state.responses.clear();
            state.queued = 0;
            if let Some(waker) = state.waker.take() {
                waker.wake();
            }
            state.announced
        };
        self.mark_done();
        if announced {
            self.events.push(Event::Cancelled { id: self.id });
        }
    }

    /// Python consumed requests that took `credit` from the read budget (as their events said): read that
    /// much further ahead, at the next flush.
    pub fn grant(&self, credit: usize) {
        self.deferred
            .grant(Arc::clone(&self.credit), credit.min(READ_BUDGET));
    }

    #[must_use]
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Resolves once the call has its trailers or its stream is gone.
    pub async fn done(&self) {
        loop {
            let notified = self.done_signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_done() {
                return;
            }
            notified.await;
        }
    }

    /// The client is no longer listening (it reset the stream or the connection closed): drop what is queued
    /// and, if Python has a handler for the call that has not finished, cancel it. Only the first time counts.
    pub fn abandon(&self) {
        let cancelled = {
            let mut state = self.state();
            if state.stream != Stream::Open {
                return;
            }
            state.stream = Stream::Gone;
            state.responses.clear();
            state.queued = 0;
            state.announced && state.trailers.is_none()
        };
        self.mark_done();
        if cancelled {
            self.events.push(Event::Cancelled { id: self.id });
        }
    }

    /// The client will send nothing more that matters (it finished, reset the stream, or took too long):
    /// the status goes out after the responses once it is set, not held back any longer.
    pub fn release_status(&self) {
        let mut state = self.state();
        state.status_may_go = true;
        if state.trailers.is_some()
            && let Some(waker) = state.waker.take()
        {
            waker.wake();
        }
    }

    /// A request of a client-streaming call, for Python (dropped once the call is over), with the credit it
    /// took from the read budget.
    pub fn deliver(&self, data: Bytes, credit: u32) {
        if !self.is_done() {
            self.events.push(Event::Message {
                id: self.id,
                data,
                credit,
            });
        }
    }

    /// The client sent its last request.
    pub fn half_close(&self) {
        if !self.is_done() {
            self.events.push(Event::HalfClose { id: self.id });
        }
    }

    fn mark_done(&self) {
        self.done.store(true, Ordering::Release);
        self.done_signal.notify_waiters();
        self.credit.close();
    }

    fn poll_response(&self, cx: &mut Context<'_>) -> Poll<Option<Frame<Bytes>>> {
        let mut state = self.state();
        if let Some(first) = state.responses.pop_front() {
            let mut taken = first.len();
            let data = if state
                .responses
                .front()
                .is_none_or(|next| taken + next.len() > COALESCE)
            {
                first
            } else {
                let mut joined = BytesMut::with_capacity(COALESCE.min(state.queued));
                joined.extend_from_slice(&first);
                while let Some(next) = state.responses.front() {
                    if taken + next.len() > COALESCE {
                        break;
                    }
                    taken += next.len();
                    joined.extend_from_slice(next);
                    state.responses.pop_front();
                }
                joined.freeze()
            };
            state.queued -= taken;
            if state.writer_waiting && state.queued <= self.sizes.low_water() {
                state.writer_waiting = false;
                self.events.push(Event::Writable { id: self.id });
            }
            return Poll::Ready(Some(Frame::data(data)));
        }
        if state.status_may_go
            && let Some(trailers) = state.trailers.take()
        {
            state.stream = Stream::Complete;
            return Poll::Ready(Some(Frame::trailers(trailers)));
        }
        if state.stream == Stream::Complete {
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The response stream of one call, as hyper sends it.
pub struct ResponseBody {
    call: Arc<Call>,
}

impl ResponseBody {
    #[must_use]
    pub fn new(call: Arc<Call>) -> Self {
        Self { call }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.call.poll_response(cx).map(|frame| frame.map(Ok))
    }
}

impl Drop for ResponseBody {
    /// hyper drops the body when the stream ends for any reason: unless the trailers went out, the client
    /// is no longer listening.
    fn drop(&mut self) {
        self.call.abandon();
    }
}

/// The status a call whose deadline passed ends with (grpc's own words).
pub const DEADLINE: (u32, &str) = (code::DEADLINE_EXCEEDED, "Deadline Exceeded");

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Counter(std::sync::atomic::AtomicUsize);
    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn call_with(deferred: &Arc<Deferred>) -> (Arc<Call>, Arc<EventQueue>) {
        let (events, _listener) = EventQueue::new().unwrap();
        let call = Call::new(
            7,
            Arc::new(Peer {
                address: "test".into(),
                certificate: None,
            }),
            Sizes {
                max_send: 1 << 20,
                high_water: HIGH_WATER,
            },
            Arc::clone(&events),
            Arc::clone(deferred),
        );
        (Arc::new(call), events)
    }

    fn call() -> (Arc<Call>, Arc<EventQueue>) {
        call_with(&Arc::default())
    }

    #[test]
    fn python_side_wake_ups_wait_for_the_flush() {
        let deferred = Arc::new(Deferred::default());
        let (call, _events) = call_with(&deferred);
        let mut body = ResponseBody::new(Arc::clone(&call));
        let woken = Arc::new(Counter(std::sync::atomic::AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&woken));
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
        call.send(b"x").unwrap();
        call.grant(5);
        assert_eq!(woken.0.load(Ordering::SeqCst), 0);
        let permits = call.credit.available_permits();
        deferred.flush();
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert_eq!(call.credit.available_permits(), permits + 5);
    }

    fn poll(body: &mut ResponseBody) -> Poll<Option<Frame<Bytes>>> {
        let waker = Waker::from(Arc::new(Counter(std::sync::atomic::AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        Pin::new(body)
            .poll_frame(&mut cx)
            .map(|frame| frame.map(Result::unwrap))
    }

    #[test]
    fn queued_responses_go_out_together_then_the_trailers() {
        let (call, _events) = call();
        let mut body = ResponseBody::new(Arc::clone(&call));
        assert!(poll(&mut body).is_pending());
        assert_eq!(call.send(b"ab"), Ok(true));
        assert_eq!(call.send(b"c"), Ok(true));
        call.finish(0, "", HeaderMap::new());
        call.release_status();
        let Poll::Ready(Some(frame)) = poll(&mut body) else {
            panic!("no data")
        };
        assert_eq!(
            frame.into_data().unwrap(),
            Bytes::from_static(&[0, 0, 0, 0, 2, b'a', b'b', 0, 0, 0, 0, 1, b'c'])
        );
        let Poll::Ready(Some(frame)) = poll(&mut body) else {
            panic!("no trailers")
        };
        assert_eq!(frame.into_trailers().unwrap()["grpc-status"], "0");
        assert!(matches!(poll(&mut body), Poll::Ready(None)));
        assert_eq!(call.send(b"late"), Err(SendError::Closed));
    }

    #[test]
    fn the_status_waits_for_the_client_to_finish_sending() {
        let (call, _events) = call();
        let mut body = ResponseBody::new(Arc::clone(&call));
        assert_eq!(call.send(b"a"), Ok(true));
        call.finish(0, "", HeaderMap::new());
        assert_eq!(call.send(b"late"), Err(SendError::Closed));
        let Poll::Ready(Some(frame)) = poll(&mut body) else {
            panic!("no data")
        };
        assert!(frame.is_data(), "responses go out at once");
        assert!(poll(&mut body).is_pending(), "the status waits");
        call.release_status();
        let Poll::Ready(Some(frame)) = poll(&mut body) else {
            panic!("no trailers")
        };
        assert_eq!(frame.into_trailers().unwrap()["grpc-status"], "0");
        assert!(matches!(poll(&mut body), Poll::Ready(None)));
    }

    #[test]
    fn a_writer_past_the_high_water_mark_is_told_when_it_may_go_on() {
        let (call, events) = call();
        let mut body = ResponseBody::new(Arc::clone(&call));
        let big = vec![0u8; HIGH_WATER / 2];
        assert_eq!(call.send(&big), Ok(true));
        assert_eq!(call.send(&big), Ok(false));
        assert!(events.take().is_empty());
        while call.state().queued > call.sizes.low_water() {
            assert!(poll(&mut body).is_ready());
        }
        assert!(matches!(
            events.take().as_slice(),
            [Event::Writable { id: 7 }]
        ));
    }

    #[test]
    fn a_dropped_stream_cancels_an_announced_call_once() {
        let (call, events) = call();
        let body = ResponseBody::new(Arc::clone(&call));
        let start = Start {
            method: "/s/m".into(),
            metadata: vec![],
            timeout: None,
        };
        assert!(call.announce(start, None));
        assert_eq!(events.take().len(), 1);
        drop(body);
        assert!(matches!(
            events.take().as_slice(),
            [Event::Cancelled { id: 7 }]
        ));
        assert!(call.is_done());
        assert_eq!(call.send(b"x"), Err(SendError::Closed));
        let start = Start {
            method: "/s/m".into(),
            metadata: vec![],
            timeout: None,
        };
        assert!(
            !call.announce(start, None),
            "a gone call is never announced"
        );
    }

    #[test]
    fn a_call_that_finished_is_not_cancelled_by_its_body_going() {
        let (call, events) = call();
        let mut body = ResponseBody::new(Arc::clone(&call));
        let start = Start {
            method: "/s/m".into(),
            metadata: vec![],
            timeout: None,
        };
        call.announce(start, None);
        call.finish(0, "", HeaderMap::new());
        call.release_status();
        while !matches!(poll(&mut body), Poll::Ready(None)) {}
        drop(body);
        assert!(matches!(events.take().as_slice(), [Event::Call { .. }]));
    }
}
