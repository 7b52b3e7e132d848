//! Listening, connections and calls: HTTP/2 by hyper on the transport's own threads, over TLS when the
//! server has it ([`super::tls`]).
//!
//! Each connection is served until it ends, the server drains (GOAWAY: calls in progress go on, no new ones),
//! or it reaches its maximum age (GOAWAY, then a grace period). Each call gets its response headers at once
//! and a task that reads its requests: a method with one request is announced to Python with it; a
//! client-streaming one is announced first and its requests follow, read against Python's budget.

use std::collections::HashSet;
use std::convert::Infallible;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ServerConfig;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::watch;

use super::call::{Call, DEADLINE, Peer, ResponseBody, Sizes, credit_of};
use super::deferred::Deferred;
use super::events::{Event, EventQueue, Level, Start};
use super::framing::{self, Decoder, Encoding, code};
use super::tls::{self, Reload, ReloadingTls};

/// What the server's connections and calls are held to.
#[derive(Clone, Debug)]
pub struct Options {
    pub max_connections: usize,
    pub max_concurrent_streams: u32,
    pub keepalive: Duration,
    pub keepalive_timeout: Duration,
    /// A new connection must finish its TLS handshake, or without TLS start speaking HTTP/2, within this.
    pub handshake_timeout: Duration,
    /// GOAWAY after this (±10%), then `max_connection_age_grace` for the calls in progress.
    pub max_connection_age: Option<Duration>,
    pub max_connection_age_grace: Duration,
    pub max_receive_message: usize,
    /// The largest response, and how much of a call's responses may queue before its handler waits.
    pub responses: Sizes,
    /// Share the port with other processes of the same server (`SO_REUSEPORT`).
    pub reuse_port: bool,
    pub threads: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Serving,
    /// No new connections; GOAWAY on every connection; calls in progress go on.
    Draining,
    /// Every connection is closed.
    Closed,
}

struct Shared {
    options: Options,
    /// None: plaintext.
    tls: Option<ReloadingTls>,
    events: Arc<EventQueue>,
    unary_methods: RwLock<HashSet<String>>,
    next_id: AtomicU64,
    connections: AtomicUsize,
    phase: watch::Sender<Phase>,
    deferred: Arc<Deferred>,
}

pub struct Server {
    runtime: Option<Runtime>,
    shared: Arc<Shared>,
    listeners: Mutex<Vec<std::net::TcpListener>>,
    port: u16,
}

impl Server {
    /// Bind every address `address` resolves to (all on one port), ready to `start` serving TLS if `tls` is
    /// given, else plaintext; with the socket Python watches for events.
    ///
    /// # Errors
    /// The address does not resolve, or no address of it can be bound.
    pub fn bind(
        address: &str,
        options: Options,
        tls: Option<ReloadingTls>,
    ) -> io::Result<(Self, UnixStream)> {
        let mut listeners: Vec<std::net::TcpListener> = Vec::new();
        let mut failure = None;
        for mut addr in address.to_socket_addrs()? {
            if let Some(first) = listeners.first() {
                addr.set_port(first.local_addr()?.port());
            }
            match listen(addr, options.reuse_port) {
                Ok(listener) => listeners.push(listener),
                Err(error) => failure = Some(error),
            }
        }
        let Some(first) = listeners.first() else {
            return Err(
                failure.unwrap_or_else(|| io::Error::other(format!("{address} names no address")))
            );
        };
        let port = first.local_addr()?.port();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.threads.max(1))
            .thread_name("epsync-transport")
            .enable_all()
            .build()?;
        let (events, bell) = EventQueue::new()?;
        let shared = Arc::new(Shared {
            options,
            tls,
            events,
            unary_methods: RwLock::new(HashSet::new()),
            next_id: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
            phase: watch::Sender::new(Phase::Serving),
            deferred: Arc::default(),
        });
        let server = Self {
            runtime: Some(runtime),
            shared,
            listeners: Mutex::new(listeners),
            port,
        };
        Ok((server, bell))
    }

    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Methods whose one request comes with the call's start (the rest are read as streams).
    pub fn set_unary_methods(&self, methods: impl IntoIterator<Item = String>) {
        let mut unary = self
            .shared
            .unary_methods
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        unary.extend(methods);
    }

    /// Start accepting connections.
    ///
    /// # Errors
    /// A listener cannot join the runtime.
    pub fn start(&self) -> io::Result<()> {
        let Some(runtime) = &self.runtime else {
            return Ok(());
        };
        let _entered = runtime.enter();
        for listener in self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            let listener = TcpListener::from_std(listener)?;
            runtime.spawn(accept(listener, Arc::clone(&self.shared)));
        }
        Ok(())
    }

    /// Stop accepting and send GOAWAY on every connection; calls in progress go on.
    pub fn drain(&self) {
        self.shared
            .phase
            .send_if_modified(|phase| advance(phase, Phase::Draining));
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Close every connection; calls still in progress are cancelled.
    pub fn close(&self) {
        self.drain();
        self.shared
            .phase
            .send_if_modified(|phase| advance(phase, Phase::Closed));
    }

    #[must_use]
    pub fn take_events(&self) -> Vec<Event> {
        self.shared.events.take()
    }

    /// The wake-ups Python's `send`, `finish` and `grant` left since the last flush (call without the GIL).
    pub fn flush(&self) {
        self.shared.deferred.flush();
    }

    #[must_use]
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// How many times changed TLS files were loaded since start-up (0 without TLS).
    #[must_use]
    pub fn tls_reloads(&self) -> u64 {
        self.shared.tls.as_ref().map_or(0, ReloadingTls::reloads)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.close();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn advance(phase: &mut Phase, to: Phase) -> bool {
    let later = matches!(
        (*phase, to),
        (Phase::Serving, Phase::Draining | Phase::Closed) | (Phase::Draining, Phase::Closed)
    );
    if later {
        *phase = to;
    }
    later
}

/// Resolves once the server has moved on from `phase`.
async fn past(receiver: &mut watch::Receiver<Phase>, phase: Phase) {
    let _ = receiver
        .wait_for(|now| *now != phase && *now != Phase::Serving)
        .await;
}

fn listen(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        // "[::]" serves IPv4 too, as grpc's own server does.
        let _ = socket.set_only_v6(false);
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    let mut phase = shared.phase.subscribe();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Past the limit a new connection is closed at once, so the process never runs out of descriptors.
                    if shared.connections.load(Ordering::Relaxed) < shared.options.max_connections {
                        tokio::spawn(connection(stream, peer, Arc::clone(&shared)));
                    }
                }
                // Out of descriptors or memory for a moment: let connections close before trying again.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            () = past(&mut phase, Phase::Serving) => return,
        }
    }
}

/// Counts a connection while it lives.
struct Counted(Arc<Shared>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    shared.connections.fetch_add(1, Ordering::Relaxed);
    let _counted = Counted(Arc::clone(&shared));
    let _ = stream.set_nodelay(true);
    let address = match peer {
        SocketAddr::V4(_) => format!("ipv4:{peer}"),
        SocketAddr::V6(_) => format!("ipv6:{peer}"),
    };
    let limit = shared.options.handshake_timeout;
    if let Some(reloading) = &shared.tls {
        let config = tls_config(reloading, &shared.events);
        let Some((stream, certificate)) = tls::handshake(config, stream, limit).await else {
            return;
        };
        serve(
            TokioIo::new(stream),
            Peer {
                address,
                certificate,
            },
            &shared,
        )
        .await;
    } else {
        // A connection that never says anything is closed (the HTTP/2 preface must start within the timeout).
        let mut first = [0u8; 1];
        match tokio::time::timeout(limit, stream.peek(&mut first)).await {
            Ok(Ok(read)) if read > 0 => {}
            _ => return,
        }
        let peer = Peer {
            address,
            certificate: None,
        };
        serve(TokioIo::new(stream), peer, &shared).await;
    }
}

/// The TLS configuration for a new connection; a reload that looking brought about goes to the server's log.
fn tls_config(reloading: &ReloadingTls, events: &EventQueue) -> Arc<ServerConfig> {
    let (config, reload) = reloading.current();
    if let Some(reload) = reload {
        let level = match reload {
            Reload::Loaded(_) => Level::Info,
            Reload::Refused(_) => Level::Warning,
        };
        events.push(Event::Log {
            topic: "tls",
            level,
            message: reload.to_string(),
        });
    }
    config
}

/// HTTP/2 on a connection, until it ends, the server drains, or the connection reaches its maximum age.
async fn serve<I>(io: I, peer: Peer, shared: &Arc<Shared>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let peer = Arc::new(peer);
    let options = &shared.options;
    let service_shared = Arc::clone(shared);
    let service = service_fn(move |request| {
        let response = handle(request, &service_shared, &peer);
        async move { Ok::<_, Infallible>(response) }
    });
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(options.max_concurrent_streams)
        .keep_alive_interval(options.keepalive)
        .keep_alive_timeout(options.keepalive_timeout);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut phase = shared.phase.subscribe();
    let age = options.max_connection_age.map(jittered);
    let aged = async move {
        match age {
            Some(age) => tokio::time::sleep(age).await,
            None => std::future::pending().await,
        }
    };
    let by_age = tokio::select! {
        _ = connection.as_mut() => return,
        () = past(&mut phase, Phase::Serving) => false,
        () = aged => true,
    };
    connection.as_mut().graceful_shutdown();
    let grace = options.max_connection_age_grace;
    let graced = async move {
        if by_age {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = connection.as_mut() => {}
        () = past(&mut phase, Phase::Draining) => {}
        () = graced => {}
    }
}

/// `age` ±10%, so connections opened together do not all go away together.
fn jittered(age: Duration) -> Duration {
    let random = RandomState::new().hash_one(std::time::Instant::now());
    #[allow(clippy::cast_precision_loss)]
    let factor = 0.9 + 0.2 * (random % 1_000_000) as f64 / 1_000_000.0;
    age.mul_f64(factor)
}

fn handle(
    request: Request<Incoming>,
    shared: &Arc<Shared>,
    peer: &Arc<Peer>,
) -> Response<ResponseBody> {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let call = Arc::new(Call::new(
        id,
        Arc::clone(peer),
        shared.options.responses,
        Arc::clone(&shared.events),
        Arc::clone(&shared.deferred),
    ));
    let response = Response::builder()
        .header(CONTENT_TYPE, "application/grpc")
        .header("grpc-accept-encoding", framing::ACCEPTED_ENCODINGS)
        .body(ResponseBody::new(Arc::clone(&call)))
        .expect("static headers are valid");
    let (parts, mut body) = request.into_parts();
    let encoding = match refusal(&parts).map_or_else(|| request_encoding(&parts), Err) {
        Ok(encoding) => encoding,
        Err((status, message)) => {
            call.fail(status, message);
            tokio::spawn(linger(body, call));
            return response;
        }
    };
    let timeout = parts
        .headers
        .get("grpc-timeout")
        .and_then(|value| framing::parse_timeout(value.as_bytes()));
    let start = Start {
        method: parts.uri.path().to_owned(),
        metadata: metadata(&parts.headers),
        timeout: timeout.map(|timeout| timeout.as_secs_f64()),
    };
    let unary = shared
        .unary_methods
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(&start.method);
    if let Some(timeout) = timeout {
        tokio::spawn(deadline(Arc::clone(&call), timeout));
    }
    let decoder = Decoder::new(shared.options.max_receive_message, encoding);
    tokio::spawn(async move {
        read_requests(&mut body, Arc::clone(&call), start, unary, decoder).await;
        linger(body, call).await;
    });
    response
}

/// How long a call's status waits for its client to finish sending.
const LINGER: Duration = Duration::from_millis(500);

/// Once nothing more is read for Python, read and drop what the client still sends until it finishes, resets
/// the stream, or `LINGER` passes; then the call's status may go (see [`Call::release_status`] for why it
/// waits). A client that finished already costs one look at its stream; only one still writing when its
/// handler has ended (a stream refused at its start) gets its status up to `LINGER` later.
async fn linger(mut body: Incoming, call: Arc<Call>) {
    let _ = tokio::time::timeout(LINGER, async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
    call.release_status();
}

/// Why a request is not a gRPC call this server can take, if it is not.
fn refusal(parts: &Parts) -> Option<(u32, &'static str)> {
    let grpc = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"));
    if parts.method != Method::POST || !grpc {
        return Some((
            code::INTERNAL,
            "not a gRPC request: a POST with content-type application/grpc is needed",
        ));
    }
    None
}

/// How the call's requests are compressed, or the status that refuses an encoding this server cannot read.
fn request_encoding(parts: &Parts) -> Result<Encoding, (u32, &'static str)> {
    match parts.headers.get("grpc-encoding") {
        None => Ok(Encoding::Identity),
        Some(name) => Encoding::named(name.as_bytes()).ok_or((
            code::UNIMPLEMENTED,
            "requests compressed this way cannot be read; use gzip, deflate or none (grpc-accept-encoding)",
        )),
    }
}

/// The request's metadata as Python's grpc gives it to handlers (transport headers left out).
fn metadata(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    const TRANSPORT: [&str; 5] = [
        "content-type",
        "te",
        "grpc-timeout",
        "grpc-encoding",
        "grpc-accept-encoding",
    ];
    headers
        .iter()
        .filter(|(name, _)| !TRANSPORT.contains(&name.as_str()))
        .filter_map(|(name, value)| {
            Some((
                name.as_str().to_owned(),
                framing::metadata_value(name.as_str(), value)?,
            ))
        })
        .collect()
}

async fn deadline(call: Arc<Call>, after: Duration) {
    tokio::select! {
        () = tokio::time::sleep(after) => call.fail(DEADLINE.0, DEADLINE.1),
        () = call.done() => {}
    }
}

async fn read_requests(
    body: &mut Incoming,
    call: Arc<Call>,
    start: Start,
    unary: bool,
    mut decoder: Decoder,
) {
    if unary {
        match read_one(body, &mut decoder, &call).await {
            Read::Message(message) => {
                call.announce(start, Some(message));
            }
            Read::End => call.fail(code::INTERNAL, "the call ended without its request message"),
            Read::Unreadable(error) => {
                let (status, message) = error.status();
                call.fail(status, &message);
            }
            Read::Gone => call.abandon(),
            Read::Done => {}
        }
        return;
    }
    if !call.announce(start, None) {
        return;
    }
    loop {
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => {
                    let credit = credit_of(message.len());
                    let Ok(permit) = call.credit.acquire_many(credit).await else {
                        return; // the call is over
                    };
                    permit.forget();
                    call.deliver(message, credit);
                }
                Ok(None) => break,
                Err(error) => {
                    let (status, message) = error.status();
                    call.fail(status, &message);
                    return;
                }
            }
        }
        let frame = tokio::select! {
            frame = body.frame() => frame,
            () = call.done() => return,
        };
        match frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    decoder.push(data);
                }
            }
            Some(Err(_)) => {
                call.abandon();
                return;
            }
            None => {
                match decoder.finish() {
                    Ok(()) => call.half_close(),
                    Err(error) => {
                        let (status, message) = error.status();
                        call.fail(status, &message);
                    }
                }
                return;
            }
        }
    }
}

enum Read {
    Message(bytes::Bytes),
    End,
    Unreadable(framing::FrameError),
    Gone,
    Done,
}

/// The first request of a call (a unary method's only one).
async fn read_one(body: &mut Incoming, decoder: &mut Decoder, call: &Call) -> Read {
    loop {
        match decoder.next_message() {
            Ok(Some(message)) => return Read::Message(message),
            Ok(None) => {}
            Err(error) => return Read::Unreadable(error),
        }
        let frame = tokio::select! {
            frame = body.frame() => frame,
            () = call.done() => return Read::Done,
        };
        match frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    decoder.push(data);
                }
            }
            Some(Err(_)) => return Read::Gone,
            None => return Read::End,
        }
    }
}
