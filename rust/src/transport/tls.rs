//! TLS on the transport's listener: the server's certificate and key, and for mutual TLS the CA that every
//! client certificate must chain to (SPEC §8), with the files read again when they change.
//!
//! As `epsync.server.tls` does for grpc.aio: at each new connection the files' metadata is looked at (a stat
//! each, no read), and they are loaded only when one changed, so a rotated certificate serves the next
//! connection without a restart while connections already open keep theirs. Files that do not load (half
//! written, or a key that is not the certificate's) are refused and the previous configuration kept, so a
//! botched rotation never takes the listener down; the caller is told either way, to log it.

use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{InconsistentKeys, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The files TLS is served from.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The server's certificate, then any intermediates, as PEM.
    pub cert_chain: PathBuf,
    /// Its private key, unencrypted PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Set: mutual TLS, a client certificate signed by one of this file's CAs is required.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> impl Iterator<Item = &Path> {
        [
            Some(&self.cert_chain),
            Some(&self.key),
            self.client_ca.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(PathBuf::as_path)
    }
}

/// Files that cannot serve, in one line naming the file (the wording of `epsync.server.tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError(String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// What looking at the files found, when it was more than "unchanged".
#[derive(Debug)]
pub enum Reload {
    /// They changed and now serve new connections (the certificate file's path).
    Loaded(PathBuf),
    /// They changed but cannot serve; the previous configuration stays.
    Refused(TlsError),
}

impl fmt::Display for Reload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Loaded(cert) => write!(f, "TLS certificate reloaded from {}", cert.display()),
            Self::Refused(error) => write!(
                f,
                "TLS files changed but cannot be used, keeping the previous ones: {error}"
            ),
        }
    }
}

/// What tells that a file changed: inode, size and modification time (s, ns) of each.
type Stamp = Vec<(u64, u64, i64, i64)>;

/// None when a file cannot be looked at (it is being replaced): nothing is loaded until it is back.
fn stamp(files: &TlsFiles) -> Option<Stamp> {
    files
        .paths()
        .map(|path| {
            let meta = fs::metadata(path).ok()?;
            Some((meta.ino(), meta.size(), meta.mtime(), meta.mtime_nsec()))
        })
        .collect()
}

struct Current {
    stamp: Option<Stamp>,
    config: Arc<ServerConfig>,
}

/// The configuration new connections are served with, following the files.
pub struct ReloadingTls {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: Mutex<Current>,
    reloads: AtomicU64,
}

impl ReloadingTls {
    /// # Errors
    /// The files cannot serve as they are now.
    pub fn new(files: TlsFiles) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // Stamped before reading: a change made while they are read is seen at the next connection.
        let stamp = stamp(&files);
        let config = Arc::new(load(&files, &provider)?);
        Ok(Self {
            files,
            provider,
            current: Mutex::new(Current { stamp, config }),
            reloads: AtomicU64::new(0),
        })
    }

    /// The configuration for a new connection, loaded again first if a file changed since the last look;
    /// with what that found, if anything. Files that changed but cannot serve are reported once, not at
    /// every connection until they change again.
    pub fn current(&self) -> (Arc<ServerConfig>, Option<Reload>) {
        let stamp = stamp(&self.files);
        // Connections arriving together wait for one load rather than each loading.
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if stamp.is_none() || stamp == current.stamp {
            return (Arc::clone(&current.config), None);
        }
        current.stamp = stamp;
        let reload = match load(&self.files, &self.provider) {
            Ok(config) => {
                current.config = Arc::new(config);
                self.reloads.fetch_add(1, Ordering::Relaxed);
                Reload::Loaded(self.files.cert_chain.clone())
            }
            Err(error) => Reload::Refused(error),
        };
        (Arc::clone(&current.config), Some(reload))
    }

    /// How many times changed files were loaded since start-up.
    #[must_use]
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|error| {
        TlsError(format!(
            "cannot read the {what} {}: {}",
            path.display(),
            plain(&error)
        ))
    })
}

/// An I/O error as Python's `strerror` words it, without Rust's "(os error N)".
fn plain(error: &std::io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error ") {
        Some(end) => text[..end].to_owned(),
        None => text,
    }
}

/// The files as a server configuration (ALPN h2), after checking that they load and belong together.
fn load(files: &TlsFiles, provider: &Arc<CryptoProvider>) -> Result<ServerConfig, TlsError> {
    let cert_path = files.cert_chain.display();
    let key_path = files.key.display();
    let chain_pem = read(&files.cert_chain, "certificate")?;
    let key_pem = read(&files.key, "key")?;
    let chain = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .ok()
        .filter(|chain| !chain.is_empty())
        .ok_or_else(|| TlsError(format!("{cert_path} holds no PEM certificate")))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| TlsError(format!("{key_path} holds no unencrypted PEM private key")))?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError(format!("no TLS version to serve: {error}")))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => builder.with_client_cert_verifier(client_verifier(path, provider)?),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|error| match error {
            rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => TlsError(format!(
                "the key {key_path} is not the key of the certificate {cert_path}"
            )),
            other => TlsError(format!(
                "the certificate {cert_path} with the key {key_path} cannot serve: {other}"
            )),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Client certificates required, and verified against the CAs in `path`.
fn client_verifier(
    path: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let no_ca = || TlsError(format!("{} holds no PEM CA certificate", path.display()));
    let pem = read(path, "client CA")?;
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(certificate.map_err(|_| no_ca())?)
            .map_err(|error| {
                TlsError(format!(
                    "{} holds a CA certificate that cannot be used: {error}",
                    path.display()
                ))
            })?;
    }
    if roots.is_empty() {
        return Err(no_ca());
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .build()
        .map_err(|error| {
            TlsError(format!(
                "the client CA {} cannot verify clients: {error}",
                path.display()
            ))
        })
}

/// The TLS handshake of a new connection, which must finish within `limit`: the stream, and the
/// certificate the client showed (the first of its chain, as PEM). None: it failed or took too long.
pub async fn handshake(
    config: Arc<ServerConfig>,
    stream: TcpStream,
    limit: Duration,
) -> Option<(TlsStream<TcpStream>, Option<Bytes>)> {
    let accepted = tokio::time::timeout(limit, TlsAcceptor::from(config).accept(stream)).await;
    let stream = accepted.ok()?.ok()?;
    let certificate = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(<[CertificateDer]>::first)
        .map(|der| Bytes::from(certificate_pem(der)));
    Some((stream, certificate))
}

/// A DER certificate as PEM, laid out as OpenSSL writes it (64 characters a line, each ending in a newline):
/// byte for byte what grpc gives handlers as `x509_pem_cert`.
#[must_use]
pub fn certificate_pem(der: &[u8]) -> Vec<u8> {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----\n";
    const END: &[u8] = b"-----END CERTIFICATE-----\n";
    let encoded = STANDARD.encode(der);
    let mut pem = Vec::with_capacity(BEGIN.len() + encoded.len() * 65 / 64 + 1 + END.len());
    pem.extend_from_slice(BEGIN);
    for line in encoded.as_bytes().chunks(64) {
        pem.extend_from_slice(line);
        pem.push(b'\n');
    }
    pem.extend_from_slice(END);
    pem
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, Connection, ServerConnection};
    use std::sync::atomic::AtomicUsize;

    /// A directory of its own under the system's temporary one, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "epsync-tls-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        /// Write `contents` to `name` as rotation tools do: a new file beside it, renamed over it.
        fn put(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.0.join(name);
            let next = self.0.join(format!("{name}.next"));
            fs::write(&next, contents).unwrap();
            fs::rename(&next, &path).unwrap();
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    struct Authority(CertifiedIssuer<'static, KeyPair>);

    /// A certificate and its key, as PEM.
    struct Issued {
        cert: String,
        key: String,
        der: CertificateDer<'static>,
    }

    impl Authority {
        fn new() -> Self {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            Self(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
        }

        fn pem(&self) -> String {
            self.0.pem()
        }

        fn issue(&self, name: &str) -> Issued {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec![name.to_owned()])
                .unwrap()
                .signed_by(&key, &self.0)
                .unwrap();
            Issued {
                cert: cert.pem(),
                key: key.serialize_pem(),
                der: cert.der().clone(),
            }
        }
    }

    fn serve(scratch: &Scratch, server: &Issued, client_ca: Option<&Authority>) -> TlsFiles {
        TlsFiles {
            cert_chain: scratch.put("server.crt", &server.cert),
            key: scratch.put("server.key", &server.key),
            client_ca: client_ca.map(|ca| scratch.put("ca.crt", &ca.pem())),
        }
    }

    /// A client trusting `ca`, showing `identity` if given.
    fn client(ca: &Authority, identity: Option<&Issued>) -> Arc<ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(ca.0.der().clone()).unwrap();
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match identity {
            Some(issued) => builder
                .with_client_auth_cert(
                    vec![issued.der.clone()],
                    PrivateKeyDer::from_pem_slice(issued.key.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        Arc::new(config)
    }

    /// A whole handshake in memory: the server's certificate as the client saw it, and the client's as the
    /// server saw it.
    fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
    ) -> Result<(CertificateDer<'static>, Option<CertificateDer<'static>>), rustls::Error> {
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = Connection::from(ClientConnection::new(client, name)?);
        let mut server = Connection::from(ServerConnection::new(server)?);
        for _ in 0..10 {
            if !client.is_handshaking() && !server.is_handshaking() {
                let seen = client.peer_certificates().unwrap()[0].clone();
                let shown = server.peer_certificates().map(|chain| chain[0].clone());
                return Ok((seen, shown));
            }
            pass(&mut client, &mut server)?;
            pass(&mut server, &mut client)?;
        }
        panic!("the handshake did not finish");
    }

    fn pass(from: &mut Connection, to: &mut Connection) -> Result<(), rustls::Error> {
        let mut wire = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut wire).unwrap();
        }
        let mut unread = wire.as_slice();
        while !unread.is_empty() {
            to.read_tls(&mut unread).unwrap();
            to.process_new_packets()?;
        }
        Ok(())
    }

    #[test]
    fn a_pair_is_loaded_and_served_with_h2() {
        let (scratch, ca) = (Scratch::new(), Authority::new());
        let issued = ca.issue("localhost");
        let tls = ReloadingTls::new(serve(&scratch, &issued, None)).unwrap();
        let (config, reload) = tls.current();
        assert!(reload.is_none());
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
        let (seen, shown) = handshake(config, client(&ca, None)).unwrap();
        assert_eq!(seen, issued.der);
        assert_eq!(shown, None);
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let (scratch, ca) = (Scratch::new(), Authority::new());
        let mut issued = ca.issue("localhost");
        issued.key = ca.issue("someone else").key;
        let files = serve(&scratch, &issued, None);
        let Err(error) = ReloadingTls::new(files.clone()) else {
            panic!("a mismatched pair was loaded")
        };
        assert_eq!(
            error.to_string(),
            format!(
                "the key {} is not the key of the certificate {}",
                files.key.display(),
                files.cert_chain.display()
            )
        );
    }

    #[test]
    fn files_that_are_not_pem_or_not_there_are_refused_naming_the_file() {
        let (scratch, ca) = (Scratch::new(), Authority::new());
        let files = serve(&scratch, &ca.issue("localhost"), Some(&ca));
        let error = |files: &TlsFiles| ReloadingTls::new(files.clone()).err().unwrap().to_string();
        let missing = TlsFiles {
            key: scratch.0.join("missing.key"),
            ..files.clone()
        };
        assert_eq!(
            error(&missing),
            format!(
                "cannot read the key {}: No such file or directory",
                missing.key.display()
            )
        );
        let garbage = scratch.put("garbage", "not PEM at all\n");
        let not_cert = TlsFiles {
            cert_chain: garbage.clone(),
            ..files.clone()
        };
        assert_eq!(
            error(&not_cert),
            format!("{} holds no PEM certificate", garbage.display())
        );
        let not_ca = TlsFiles {
            client_ca: Some(garbage.clone()),
            ..files
        };
        assert_eq!(
            error(&not_ca),
            format!("{} holds no PEM CA certificate", garbage.display())
        );
    }

    #[test]
    fn changed_files_are_loaded_for_the_next_connection() {
        let (scratch, ca) = (Scratch::new(), Authority::new());
        let tls = ReloadingTls::new(serve(&scratch, &ca.issue("localhost"), None)).unwrap();
        let second = ca.issue("localhost");
        serve(&scratch, &second, None);
        let (config, reload) = tls.current();
        assert!(matches!(reload, Some(Reload::Loaded(ref path)) if path.ends_with("server.crt")));
        assert_eq!(tls.reloads(), 1);
        assert_eq!(handshake(config, client(&ca, None)).unwrap().0, second.der);
        assert!(
            tls.current().1.is_none(),
            "unchanged files are not loaded again"
        );
        assert_eq!(tls.reloads(), 1);
    }

    #[test]
    fn a_broken_rotation_keeps_the_previous_configuration_and_is_reported_once() {
        let (scratch, ca) = (Scratch::new(), Authority::new());
        let first = ca.issue("localhost");
        let tls = ReloadingTls::new(serve(&scratch, &first, None)).unwrap();
        scratch.put("server.key", &ca.issue("someone else").key);
        let (config, reload) = tls.current();
        let Some(Reload::Refused(error)) = reload else {
            panic!("a mismatched pair was not refused: {reload:?}")
        };
        assert!(
            error
                .to_string()
                .contains("is not the key of the certificate")
        );
        assert_eq!(tls.reloads(), 0);
        assert_eq!(handshake(config, client(&ca, None)).unwrap().0, first.der);
        let (config, reload) = tls.current();
        assert!(reload.is_none(), "the same broken files are reported once");
        assert_eq!(handshake(config, client(&ca, None)).unwrap().0, first.der);

        // Fixed by the next rotation.
        let fixed = ca.issue("localhost");
        serve(&scratch, &fixed, None);
        assert!(matches!(tls.current().1, Some(Reload::Loaded(_))));
        assert_eq!(tls.reloads(), 1);
    }

    #[test]
    fn with_a_client_ca_a_certificate_it_signed_is_required() {
        let (scratch, ca) = (Scratch::new(), Authority::new());
        let tls = ReloadingTls::new(serve(&scratch, &ca.issue("localhost"), Some(&ca))).unwrap();
        let config = tls.current().0;
        let admin = ca.issue("admin");
        let (_, shown) = handshake(Arc::clone(&config), client(&ca, Some(&admin))).unwrap();
        assert_eq!(shown, Some(admin.der));
        assert!(handshake(Arc::clone(&config), client(&ca, None)).is_err());
        let stranger = Authority::new().issue("admin");
        assert!(handshake(config, client(&ca, Some(&stranger))).is_err());
    }

    #[test]
    fn certificates_are_given_as_pem_laid_out_as_openssl_does() {
        let issued = Authority::new().issue("localhost");
        let pem = certificate_pem(&issued.der);
        assert_eq!(String::from_utf8(pem.clone()).unwrap(), issued.cert);
        assert_eq!(CertificateDer::from_pem_slice(&pem).unwrap(), issued.der);
        assert!(
            pem.split(|byte| *byte == b'\n')
                .all(|line| line.len() <= 64)
        );
    }
}
