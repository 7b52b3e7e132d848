//! The PyO3 layer of the gRPC transport: `Transport` (the listening server) and `Call` (one call's answers).

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use pyo3::exceptions::{PyConnectionError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};

use crate::transport::call::{Call, HIGH_WATER, SendError, Sizes};
use crate::transport::events::{Event, Level};
use crate::transport::framing;
use crate::transport::server::{Options, Server};
use crate::transport::tls::{ReloadingTls, TlsFiles};

pyo3::create_exception!(
    epsync._core,
    CallClosed,
    PyConnectionError,
    "The call is over: it was answered, cancelled, or its client went away."
);

/// Event kinds in `Transport.take_events`' tuples.
pub const CALL: u8 = 0;
pub const MESSAGE: u8 = 1;
pub const HALF_CLOSE: u8 = 2;
pub const CANCELLED: u8 = 3;
pub const WRITABLE: u8 = 4;
pub const LOG: u8 = 5;

/// A log line's level as Python's `logging` numbers it.
fn logging_level(level: Level) -> u8 {
    match level {
        Level::Info => 20,
        Level::Warning => 30,
    }
}

#[pyclass(module = "epsync._core", name = "Transport", frozen)]
pub struct PyTransport {
    server: Server,
    bell: UnixStream,
}

fn seconds(value: f64, name: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| PyValueError::new_err(format!("{name} must be 0 or more seconds")))
}

#[pymethods]
impl PyTransport {
    /// Bind `address` (every address it resolves to, on one port); calls are served once `start` is called.
    /// With `tls_cert_file` and `tls_key_file` it serves TLS, and with `tls_client_ca_file` mutual TLS; the
    /// files are read again when they change. `ValueError` when they cannot serve.
    #[new]
    #[pyo3(signature = (
        address, *, max_connections, max_concurrent_streams, keepalive_seconds, keepalive_timeout_seconds,
        handshake_timeout_seconds, max_receive_message, max_send_message, max_connection_age_seconds=None,
        max_connection_age_grace_seconds=0.0, reuse_port=false, threads=2, tls_cert_file=None,
        tls_key_file=None, tls_client_ca_file=None, response_buffer_bytes=HIGH_WATER,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        address: &str,
        max_connections: usize,
        max_concurrent_streams: u32,
        keepalive_seconds: f64,
        keepalive_timeout_seconds: f64,
        handshake_timeout_seconds: f64,
        max_receive_message: usize,
        max_send_message: usize,
        max_connection_age_seconds: Option<f64>,
        max_connection_age_grace_seconds: f64,
        reuse_port: bool,
        threads: usize,
        tls_cert_file: Option<PathBuf>,
        tls_key_file: Option<PathBuf>,
        tls_client_ca_file: Option<PathBuf>,
        response_buffer_bytes: usize,
    ) -> PyResult<Self> {
        let options = Options {
            max_connections,
            max_concurrent_streams,
            keepalive: seconds(keepalive_seconds, "keepalive_seconds")?,
            keepalive_timeout: seconds(keepalive_timeout_seconds, "keepalive_timeout_seconds")?,
            handshake_timeout: seconds(handshake_timeout_seconds, "handshake_timeout_seconds")?,
            max_connection_age: max_connection_age_seconds
                .map(|age| seconds(age, "max_connection_age_seconds"))
                .transpose()?,
            max_connection_age_grace: seconds(
                max_connection_age_grace_seconds,
                "max_connection_age_grace_seconds",
            )?,
            max_receive_message,
            responses: Sizes {
                max_send: max_send_message,
                high_water: response_buffer_bytes,
            },
            reuse_port,
            threads,
        };
        let tls = match (tls_cert_file, tls_key_file, tls_client_ca_file) {
            (None, None, None) => None,
            (Some(cert_chain), Some(key), client_ca) => Some(
                ReloadingTls::new(TlsFiles {
                    cert_chain,
                    key,
                    client_ca,
                })
                .map_err(|error| PyValueError::new_err(error.to_string()))?,
            ),
            _ => {
                return Err(PyValueError::new_err(
                    "tls_cert_file and tls_key_file go together, and a client CA needs them",
                ));
            }
        };
        let (server, bell) = Server::bind(address, options, tls)
            .map_err(|error| PyOSError::new_err(format!("cannot listen on {address}: {error}")))?;
        Ok(Self { server, bell })
    }

    /// The port bound (the one asked for, or the one chosen for port 0).
    #[getter]
    fn port(&self) -> u16 {
        self.server.port()
    }

    /// A socket that becomes readable when there are events to take (read and discard what it holds).
    #[getter]
    fn fd(&self) -> i32 {
        self.bell.as_raw_fd()
    }

    /// Connections open now.
    #[getter]
    fn connections(&self) -> usize {
        self.server.connections()
    }

    /// How many times changed TLS files were loaded since start-up (0 without TLS).
    #[getter]
    fn tls_reloads(&self) -> u64 {
        self.server.tls_reloads()
    }

    /// Full method names (`/package.Service/Method`) that take one request: it comes with the call's start.
    fn set_unary_methods(&self, methods: Vec<String>) {
        self.server.set_unary_methods(methods);
    }

    fn start(&self) -> PyResult<()> {
        self.server
            .start()
            .map_err(|error| PyOSError::new_err(error.to_string()))
    }

    /// Do the wake-ups the calls' `send`, `finish` and `grant` left for the transport's threads. Call it once
    /// per turn of the event loop in which any of them were called; until then their responses may wait.
    ///
    /// It keeps the GIL: the wake-ups of one turn cost a system call or two, and giving the GIL up here lets
    /// the store's commit thread take it for up to the switch interval (5 ms) on every turn of the loop.
    fn flush(&self) {
        self.server.flush();
    }

    /// Stop accepting connections and send GOAWAY on every one; calls in progress go on.
    fn drain(&self) {
        self.server.drain();
    }

    /// Close every connection; calls still in progress are cancelled.
    fn close(&self) {
        self.server.close();
    }

    /// Everything that happened since the last take, in order, as tuples:
    /// `(CALL, call, method, metadata, request or None, timeout seconds or None)`, `(MESSAGE, id, request, credit)`,
    /// `(HALF_CLOSE, id)`, `(CANCELLED, id)`, `(WRITABLE, id)`, `(LOG, topic, logging level, message)`.
    fn take_events<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let events = self.server.take_events();
        let list = PyList::empty(py);
        for event in events {
            let item = match event {
                Event::Call {
                    call,
                    start,
                    message,
                } => {
                    let metadata = PyList::empty(py);
                    for (key, value) in &start.metadata {
                        let value = if key.ends_with("-bin") {
                            PyBytes::new(py, value).into_any()
                        } else {
                            PyString::new(py, &String::from_utf8_lossy(value)).into_any()
                        };
                        metadata.append((key.as_str(), value))?;
                    }
                    let message = message.map(|message| PyBytes::new(py, &message));
                    (
                        CALL,
                        PyCall { call },
                        start.method,
                        metadata,
                        message,
                        start.timeout,
                    )
                        .into_pyobject(py)?
                        .into_any()
                }
                Event::Message { id, data, credit } => {
                    (MESSAGE, id, PyBytes::new(py, &data), credit)
                        .into_pyobject(py)?
                        .into_any()
                }
                Event::HalfClose { id } => (HALF_CLOSE, id).into_pyobject(py)?.into_any(),
                Event::Cancelled { id } => (CANCELLED, id).into_pyobject(py)?.into_any(),
                Event::Writable { id } => (WRITABLE, id).into_pyobject(py)?.into_any(),
                Event::Log {
                    topic,
                    level,
                    message,
                } => (LOG, topic, logging_level(level), message)
                    .into_pyobject(py)?
                    .into_any(),
            };
            list.append(item)?;
        }
        Ok(list)
    }
}

#[pyclass(module = "epsync._core", name = "Call", frozen)]
pub struct PyCall {
    call: Arc<Call>,
}

#[pymethods]
impl PyCall {
    #[getter]
    fn id(&self) -> u64 {
        self.call.id
    }

    /// The client's address as grpc names it: `ipv4:127.0.0.1:52000`.
    #[getter]
    fn peer(&self) -> &str {
        &self.call.peer.address
    }

    /// The certificate the client showed over TLS (the first of its chain) as PEM, as grpc's auth context
    /// gives it (`x509_pem_cert`); None over plaintext, or when the client showed none.
    #[getter]
    fn peer_certificate<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.call
            .peer
            .certificate
            .as_ref()
            .map(|pem| PyBytes::new(py, pem))
    }

    /// Queue one response (an encoded message). False: queued, but wait for the call's WRITABLE event
    /// before the next, because the client is not reading fast enough.
    fn send(&self, message: &[u8]) -> PyResult<bool> {
        self.call.send(message).map_err(|error| match error {
            SendError::Closed => CallClosed::new_err("the call is over"),
            SendError::TooLarge { length, max } => PyValueError::new_err(format!(
                "a response of {length} bytes is larger than the limit of {max}"
            )),
        })
    }

    /// End the call with a status (a code as in grpc.StatusCode, a message, and trailing metadata:
    /// values of `-bin` keys as bytes, the others as str) after the responses queued so far.
    #[pyo3(signature = (code, message, metadata=Vec::new()))]
    fn finish(
        &self,
        code: u32,
        message: &str,
        metadata: Vec<(String, Bound<'_, PyAny>)>,
    ) -> PyResult<()> {
        let mut trailers = HeaderMap::new();
        for (key, value) in metadata {
            let bytes: Vec<u8> = if let Ok(text) = value.cast::<PyString>() {
                text.to_str()?.as_bytes().to_vec()
            } else {
                value.extract::<Vec<u8>>()?
            };
            let (name, value) =
                framing::metadata_header(&key, &bytes).map_err(PyValueError::new_err)?;
            trailers.append(name, value);
        }
        self.call.finish(code, message, trailers);
        Ok(())
    }

    /// The handler took requests whose MESSAGE events gave these credits, summed: the transport reads that
    /// much further ahead (at the next flush).
    fn grant(&self, credit: usize) {
        self.call.grant(credit);
    }
}
