//! TLS for the two TLS listeners (`--wss`: HTTPS and `wss://`; `--tcp-tls`:
//! the line protocol inside TLS), without a socket in sight.
//!
//! What lives here:
//! - [`TlsFiles`] and [`load`]: read the certificate chain and private key
//!   (PEM), refuse a missing, empty, mismatched, expired or not yet valid
//!   pair with a one-line [`TlsError`] naming the file, and build the two
//!   [`rustls::ServerConfig`]s ([`Loaded`]): TLS 1.2 and 1.3 on the `ring`
//!   provider, ALPN `http/1.1` for HTTPS and none for the line protocol.
//! - [`Reloadable`]: the files and what was last loaded from them, replaced
//!   by [`Reloadable::reload`] only when the new files are good. It lives
//!   with `Handle::reload_tls`, which reloads on the caller's thread (the
//!   SIGHUP thread) and hands the new [`Loaded`] to the event loop.
//! - [`TlsFailure`]: why a TLS handshake failed at run time, as a few
//!   stable metric labels; [`TlsListener`]: which listener, as a label.
//! - [`plaintext_on_tls_port`] and [`tls_on_plaintext_port`]: what the
//!   first bytes of a connection say, before any parser sees them.
//!
//! Loading reads files, so it runs at start-up and on SIGHUP, never on the
//! hot path of the loop.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{AlertDescription, InconsistentKeys, ServerConfig};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The ALPN protocol the HTTPS listener speaks. Browsers offer `h2` first;
/// machat speaks HTTP/1.1 only (WebSocket upgrades need it), so that is
/// the one it names, and a client that offers only `h2` is refused.
pub const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// TLS 1.3 tickets sent after each full handshake. rustls sends 2 by
/// default (for clients that open parallel connections); a chat client
/// reconnects one connection at a time, so one ticket is enough to resume,
/// and each ticket costs an encryption and ~200 bytes on the wire.
const TLS13_TICKETS_PER_HANDSHAKE: usize = 1;

/// Sessions remembered server-side for TLS 1.2 clients that resume by
/// session id instead of by ticket. A global bound, not per connection:
/// ~256 small entries, whatever the number of connections.
const SESSION_CACHE_ENTRIES: usize = 256;

/// The first byte of every TLS record that opens a connection: the
/// handshake content type (RFC 8446 §5.1).
const HANDSHAKE_RECORD: u8 = 0x16;

/// The certificate chain and private key files, as given by `--tls-cert`
/// and `--tls-key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the server's certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM: the private key of the first certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The two TLS listeners, for counting TLS connections by listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsListener {
    /// `--wss`: HTTPS, the chat page and `wss://`.
    Wss,
    /// `--tcp-tls`: the line protocol inside TLS.
    TcpTls,
}

impl TlsListener {
    /// Every listener, in counter order.
    pub const ALL: [TlsListener; 2] = [TlsListener::Wss, TlsListener::TcpTls];

    /// The metric label.
    pub const fn label(self) -> &'static str {
        match self {
            TlsListener::Wss => "wss",
            TlsListener::TcpTls => "tcp_tls",
        }
    }
}

/// A certificate and key that passed every check, as the configurations a
/// new connection is given.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// For `--wss`: ALPN `http/1.1`.
    pub https: Arc<ServerConfig>,
    /// For `--tcp-tls`: no ALPN.
    pub line: Arc<ServerConfig>,
    /// The leaf certificate's subject, for the log (`CN=chat.example`).
    pub subject: String,
    /// The leaf certificate's notAfter, for the log and for warnings.
    pub not_after: SystemTime,
}

impl Loaded {
    /// The configuration for a new connection on `listener`.
    pub fn config(&self, listener: TlsListener) -> &Arc<ServerConfig> {
        match listener {
            TlsListener::Wss => &self.https,
            TlsListener::TcpTls => &self.line,
        }
    }
}

/// Why a certificate and key were refused, at start or on reload. Each
/// reason is one line that names the file.
#[derive(Debug)]
pub enum TlsError {
    /// The certificate file could not be opened or read.
    ReadCert { path: PathBuf, error: io::Error },
    /// The certificate file is not valid PEM.
    CertPem { path: PathBuf, error: pem::Error },
    /// The certificate file holds no `CERTIFICATE` section.
    NoCert { path: PathBuf },
    /// The leaf certificate is not a valid X.509 certificate.
    BadCert { path: PathBuf, reason: String },
    /// The leaf certificate's notAfter has passed.
    Expired { path: PathBuf, not_after: SystemTime },
    /// The leaf certificate's notBefore has not come yet.
    NotYetValid { path: PathBuf, not_before: SystemTime },
    /// The key file could not be opened or read.
    ReadKey { path: PathBuf, error: io::Error },
    /// The key file is not valid PEM.
    KeyPem { path: PathBuf, error: pem::Error },
    /// The key file holds no unencrypted private key section.
    NoKey { path: PathBuf },
    /// rustls cannot sign with the key (an unsupported algorithm or size).
    UnusableKey { path: PathBuf, error: rustls::Error },
    /// The key is not the leaf certificate's key.
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// rustls refused to build the configuration (should not happen with
    /// a good pair; kept so nothing panics).
    Config { cert: PathBuf, error: rustls::Error },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::ReadCert { path, error } => {
                write!(f, "cannot read certificate file {}: {}", path.display(), describe_io(error))
            }
            TlsError::CertPem { path, error } => {
                write!(f, "certificate file {} is not valid PEM: {error}", path.display())
            }
            TlsError::NoCert { path } => write!(f, "no certificate in {}", path.display()),
            TlsError::BadCert { path, reason } => {
                write!(f, "certificate {} cannot be parsed: {reason}", path.display())
            }
            TlsError::Expired { path, not_after } => {
                write!(f, "certificate {} expired on {}", path.display(), utc_date(*not_after))
            }
            TlsError::NotYetValid { path, not_before } => {
                write!(f, "certificate {} is not valid before {}", path.display(), utc_date(*not_before))
            }
            TlsError::ReadKey { path, error } => {
                write!(f, "cannot read private key file {}: {}", path.display(), describe_io(error))
            }
            TlsError::KeyPem { path, error } => {
                write!(f, "private key file {} is not valid PEM: {error}", path.display())
            }
            TlsError::NoKey { path } => write!(f, "no private key in {}", path.display()),
            TlsError::UnusableKey { path, error } => {
                write!(f, "cannot use private key {}: {error}", path.display())
            }
            TlsError::KeyMismatch { cert, key } => {
                write!(f, "key {} does not match certificate {}", key.display(), cert.display())
            }
            TlsError::Config { cert, error } => {
                write!(f, "cannot build a TLS configuration for {}: {error}", cert.display())
            }
        }
    }
}

impl std::error::Error for TlsError {}

/// `No such file or directory` rather than `No such file or directory (os
/// error 2)`: the line is for a person, and the path already says which.
fn describe_io(error: &io::Error) -> String {
    let text = error.to_string();
    match text.rfind(" (os error ") {
        Some(cut) if text.ends_with(')') => text[..cut].to_owned(),
        _ => text,
    }
}

/// `2026-01-01`, in UTC.
fn utc_date(instant: SystemTime) -> String {
    time::OffsetDateTime::from(instant).date().to_string()
}

/// Reads and checks `files` as of now and builds both configurations.
pub fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    load_at(files, SystemTime::now(), &Resumption::new(files)?)
}

/// What lets a client resume a session instead of a full handshake. Kept
/// across reloads, so a reload does not make every client pay a full
/// handshake again.
#[derive(Debug, Clone)]
struct Resumption {
    /// Stateless tickets (TLS 1.3, and TLS 1.2 clients that ask for them):
    /// the session is encrypted into the ticket, so the server keeps
    /// nothing per session. Keys rotate every 6 hours.
    ticketer: Arc<dyn ProducesTickets>,
    /// TLS 1.2 resumption by session id: bounded, shared by all connections.
    cache: Arc<dyn StoresServerSessions>,
}

impl Resumption {
    fn new(files: &TlsFiles) -> Result<Self, TlsError> {
        let ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|error| TlsError::Config { cert: files.cert.clone(), error })?;
        Ok(Resumption { ticketer, cache: ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES) })
    }
}

/// [`load`] with the clock and the resumption state given.
fn load_at(files: &TlsFiles, now: SystemTime, resumption: &Resumption) -> Result<Loaded, TlsError> {
    let chain = read_chain(&files.cert)?;
    let (subject, not_after) = check_validity(&files.cert, &chain[0], now)?;
    let key = read_key(&files.key)?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|error| TlsError::UnusableKey { path: files.key.clone(), error })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        // rustls's own rule (CertifiedKey::from_der): a key that cannot
        // tell its public half is not called a mismatch. ring's keys all can.
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::KeyMismatch { cert: files.cert.clone(), key: files.key.clone() });
        }
        Err(error) => return Err(TlsError::BadCert { path: files.cert.clone(), reason: error.to_string() }),
    }
    // One resolver for both listeners: the key is parsed once.
    let resolver = Arc::new(SingleCertAndKey::from(certified));

    let build = |alpn: &[&[u8]]| -> Result<Arc<ServerConfig>, TlsError> {
        let config_error = |error| TlsError::Config { cert: files.cert.clone(), error };
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(config_error)?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        config.ticketer = resumption.ticketer.clone();
        config.session_storage = resumption.cache.clone();
        config.send_tls13_tickets = TLS13_TICKETS_PER_HANDSHAKE;
        // Left at rustls's defaults, on purpose: no 0-RTT data
        // (max_early_data_size 0: replayable, and a chat line is no
        // idempotent GET), and 16 KiB records (max_fragment_size None).
        // A smaller record size saves no memory on an idle connection: rustls
        // keeps no record-sized buffer for sending, only the bytes queued.
        Ok(Arc::new(config))
    };
    Ok(Loaded { https: build(&[ALPN_HTTP_1_1])?, line: build(&[])?, subject, not_after })
}

/// The certificate chain, leaf first; never empty.
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_error = |error| match error {
        pem::Error::Io(error) => TlsError::ReadCert { path: path.to_owned(), error },
        error => TlsError::CertPem { path: path.to_owned(), error },
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(read_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_error)?;
    if chain.is_empty() {
        return Err(TlsError::NoCert { path: path.to_owned() });
    }
    Ok(chain)
}

/// The first private key in the file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| match error {
        pem::Error::Io(error) => TlsError::ReadKey { path: path.to_owned(), error },
        pem::Error::NoItemsFound => TlsError::NoKey { path: path.to_owned() },
        error => TlsError::KeyPem { path: path.to_owned(), error },
    })
}

/// Checks the leaf's validity period against `now`; answers its subject
/// and notAfter. rustls does not look at the server's own certificate's
/// dates (only the client does), so without this an expired certificate
/// would start fine and fail every browser's handshake.
fn check_validity(
    path: &Path,
    leaf: &CertificateDer<'_>,
    now: SystemTime,
) -> Result<(String, SystemTime), TlsError> {
    let (_, certificate) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|error| TlsError::BadCert { path: path.to_owned(), reason: error.to_string() })?;
    let validity = certificate.validity();
    let not_before = system_time(validity.not_before.timestamp());
    let not_after = system_time(validity.not_after.timestamp());
    if now > not_after {
        return Err(TlsError::Expired { path: path.to_owned(), not_after });
    }
    if now < not_before {
        return Err(TlsError::NotYetValid { path: path.to_owned(), not_before });
    }
    Ok((certificate.subject().to_string(), not_after))
}

/// Seconds since the epoch (X.509 dates may precede it) as a `SystemTime`.
fn system_time(unix_seconds: i64) -> SystemTime {
    let magnitude = Duration::from_secs(unix_seconds.unsigned_abs());
    if unix_seconds >= 0 { UNIX_EPOCH + magnitude } else { UNIX_EPOCH - magnitude }
}

/// The configurations new connections get, reloadable from the same files.
///
/// Connections already open keep the `Arc<ServerConfig>` they were created
/// with, so a reload never touches them; only connections accepted
/// afterwards see the new certificate. Reloading reads files, so it runs
/// off the event loop (see `Handle::reload_tls`).
#[derive(Debug)]
pub struct Reloadable {
    files: TlsFiles,
    resumption: Resumption,
    current: Loaded,
}

impl Reloadable {
    /// Loads `files` as [`load`] does; the error is the one to refuse to
    /// start with.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let resumption = Resumption::new(&files)?;
        let current = load_at(&files, SystemTime::now(), &resumption)?;
        Ok(Reloadable { files, resumption, current })
    }

    /// The files it loads from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// What is loaded now.
    pub fn current(&self) -> &Loaded {
        &self.current
    }

    /// The configuration for a connection accepted now on `listener`
    /// (for `rustls::ServerConnection::new`).
    pub fn config(&self, listener: TlsListener) -> Arc<ServerConfig> {
        self.current.config(listener).clone()
    }

    /// Reads the files again. On success new connections get the new
    /// certificate; on failure nothing changes and the old one is kept.
    pub fn reload(&mut self) -> Result<&Loaded, TlsError> {
        self.current = load_at(&self.files, SystemTime::now(), &self.resumption)?;
        Ok(&self.current)
    }
}

/// Why a TLS handshake failed, as the labels the failures are counted
/// under. Few and stable on purpose: rustls's errors are many and
/// `#[non_exhaustive]`, and a dashboard needs the kind, not the detail
/// (which goes to the debug log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsFailure {
    /// The first byte was not a TLS handshake record: plaintext (often
    /// `GET / HTTP/1.1` from `http://` to an HTTPS port) on a TLS port.
    NotTls,
    /// No protocol version, cipher suite, group, signature scheme or ALPN
    /// protocol in common (an old client, or one offering only `h2`).
    Incompatible,
    /// The client rejected our certificate (unknown CA, expired, wrong
    /// name): a self-signed certificate, or a broken chain.
    BadCertificate,
    /// The peer broke the TLS protocol (malformed or unexpected messages,
    /// bad MACs).
    Protocol,
    /// The handshake did not finish before its deadline.
    Timeout,
    /// The peer closed (or reset) the connection mid-handshake, or sent a
    /// close_notify or user_canceled alert: port scanners, clients that
    /// gave up.
    Closed,
    /// Anything else.
    Other,
}

impl TlsFailure {
    /// Every failure, in counter order.
    pub const ALL: [TlsFailure; 7] = [
        TlsFailure::NotTls,
        TlsFailure::Incompatible,
        TlsFailure::BadCertificate,
        TlsFailure::Protocol,
        TlsFailure::Timeout,
        TlsFailure::Closed,
        TlsFailure::Other,
    ];

    /// The metric label.
    pub const fn label(self) -> &'static str {
        match self {
            TlsFailure::NotTls => "not_tls",
            TlsFailure::Incompatible => "incompatible",
            TlsFailure::BadCertificate => "bad_certificate",
            TlsFailure::Protocol => "protocol",
            TlsFailure::Timeout => "timeout",
            TlsFailure::Closed => "closed",
            TlsFailure::Other => "other",
        }
    }

    /// The kind of a handshake error from `process_new_packets`.
    pub fn classify(error: &rustls::Error) -> TlsFailure {
        use rustls::Error::*;
        match error {
            // Plaintext fed to rustls: its first "record" has no valid
            // content type (when the loop did not look at the first byte).
            InvalidMessage(rustls::InvalidMessage::InvalidContentType) => TlsFailure::NotTls,
            PeerIncompatible(_) | NoApplicationProtocol => TlsFailure::Incompatible,
            AlertReceived(alert) => Self::from_alert(*alert),
            InvalidMessage(_)
            | InappropriateMessage { .. }
            | InappropriateHandshakeMessage { .. }
            | PeerMisbehaved(_)
            | DecryptError
            | PeerSentOversizedRecord
            | InvalidEncryptedClientHello(_) => TlsFailure::Protocol,
            // We ask for no client certificate, so these would be a bug or
            // a future setting; they are about certificates all the same.
            InvalidCertificate(_) | NoCertificatesPresented => TlsFailure::BadCertificate,
            _ => TlsFailure::Other,
        }
    }

    /// The kind of an alert the client sent us.
    fn from_alert(alert: AlertDescription) -> TlsFailure {
        use AlertDescription::*;
        match alert {
            BadCertificate
            | UnsupportedCertificate
            | CertificateRevoked
            | CertificateExpired
            | CertificateUnknown
            | UnknownCA
            | BadCertificateStatusResponse
            | CertificateRequired => TlsFailure::BadCertificate,
            HandshakeFailure
            | ProtocolVersion
            | InsufficientSecurity
            | NoApplicationProtocol
            | UnrecognisedName
            | UnsupportedExtension => TlsFailure::Incompatible,
            UnexpectedMessage
            | BadRecordMac
            | RecordOverflow
            | DecodeError
            | DecryptError
            | IllegalParameter
            | MissingExtension
            | InappropriateFallback => TlsFailure::Protocol,
            CloseNotify | UserCanceled => TlsFailure::Closed,
            _ => TlsFailure::Other,
        }
    }
}

impl From<&rustls::Error> for TlsFailure {
    fn from(error: &rustls::Error) -> Self {
        TlsFailure::classify(error)
    }
}

/// On a TLS port: true once the first byte has arrived and is not a TLS
/// handshake record (0x16). Every TLS client's first byte is 0x16, and no
/// plaintext protocol machat speaks starts with it, so one byte decides;
/// the loop can answer an HTTP request on the HTTPS port in plaintext
/// (nginx's "plain HTTP request was sent to HTTPS port") and count
/// [`TlsFailure::NotTls`].
pub fn plaintext_on_tls_port(received: &[u8]) -> bool {
    received.first().is_some_and(|&first| first != HANDSHAKE_RECORD)
}

/// On a plaintext port: true when the first bytes are a TLS handshake
/// record header, `16 03 0x` (record version 3.0 to 3.4 as sent by every
/// TLS client, TLS 1.3 included), so the client can be told to use the
/// TLS port rather than "malformed handshake". Needs three bytes; with
/// fewer it answers false (a first byte 0x16 fails the JSON and HTTP
/// parsers anyway).
pub fn tls_on_plaintext_port(received: &[u8]) -> bool {
    matches!(received, [HANDSHAKE_RECORD, 0x03, 0x00..=0x04, ..])
}

#[cfg(test)]
mod tests {
    use std::fs;

    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, date_time_ymd};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConnection};
    use rustls_pki_types::ServerName;

    use super::*;

    /// A CA that signs leaf certificates for `localhost`, and a temp dir
    /// to write them into.
    struct Pki {
        dir: tempfile::TempDir,
        ca: Issuer<'static, KeyPair>,
        ca_der: CertificateDer<'static>,
    }

    impl Pki {
        fn new() -> Self {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let key = KeyPair::generate().unwrap();
            let ca_der = params.self_signed(&key).unwrap().der().clone();
            Pki { dir: tempfile::tempdir().unwrap(), ca: Issuer::new(params, key), ca_der }
        }

        /// Writes a leaf for `localhost` valid from `not_before` to
        /// `not_after` (year, month, day) as `<stem>.cert.pem` and
        /// `<stem>.key.pem`; answers the files and the leaf.
        fn leaf(
            &self,
            stem: &str,
            not_before: (i32, u8, u8),
            not_after: (i32, u8, u8),
        ) -> (TlsFiles, Vec<u8>) {
            let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            params.not_before = date_time_ymd(not_before.0, not_before.1, not_before.2);
            params.not_after = date_time_ymd(not_after.0, not_after.1, not_after.2);
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.ca).unwrap();
            let files = self.files(stem);
            fs::write(&files.cert, cert.pem()).unwrap();
            fs::write(&files.key, key.serialize_pem()).unwrap();
            (files, cert.der().to_vec())
        }

        /// A leaf valid from 2000 to 2999.
        fn good_leaf(&self, stem: &str) -> (TlsFiles, Vec<u8>) {
            self.leaf(stem, (2000, 1, 1), (2999, 1, 1))
        }

        fn files(&self, stem: &str) -> TlsFiles {
            TlsFiles {
                cert: self.dir.path().join(format!("{stem}.cert.pem")),
                key: self.dir.path().join(format!("{stem}.key.pem")),
            }
        }

        fn client(
            &self,
            versions: &[&'static rustls::SupportedProtocolVersion],
            alpn: &[&[u8]],
        ) -> ClientConnection {
            let mut roots = RootCertStore::empty();
            roots.add(self.ca_der.clone()).unwrap();
            let mut config =
                ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_protocol_versions(versions)
                    .unwrap()
                    .with_root_certificates(roots)
                    .with_no_client_auth();
            config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
            ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap()).unwrap()
        }
    }

    /// Moves records between the two ends in memory until both are done.
    fn handshake(client: &mut ClientConnection, server: &mut ServerConnection) -> Result<(), rustls::Error> {
        let mut wire = Vec::new();
        for _ in 0..10 {
            wire.clear();
            client.write_tls(&mut wire).unwrap();
            server.read_tls(&mut wire.as_slice()).unwrap();
            server.process_new_packets()?;
            wire.clear();
            server.write_tls(&mut wire).unwrap();
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the handshake did not finish");
    }

    fn served_leaf(pki: &Pki, config: Arc<ServerConfig>) -> Vec<u8> {
        let mut client = pki.client(&[&rustls::version::TLS13], &[]);
        let mut server = ServerConnection::new(config).unwrap();
        handshake(&mut client, &mut server).unwrap();
        client.peer_certificates().unwrap()[0].to_vec()
    }

    fn load_error(files: &TlsFiles) -> TlsError {
        load(files).expect_err("the pair should be refused")
    }

    #[test]
    fn a_good_pair_loads_and_serves_tls_12_and_13_with_alpn_on_https_only() {
        let pki = Pki::new();
        let (files, leaf) = pki.good_leaf("good");
        let loaded = load(&files).unwrap();
        assert_eq!(utc_date(loaded.not_after), "2999-01-01");
        assert_eq!(loaded.subject, "CN=rcgen self signed cert");
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let mut client = pki.client(&[version], &[b"h2", ALPN_HTTP_1_1]);
            let mut server = ServerConnection::new(loaded.https.clone()).unwrap();
            handshake(&mut client, &mut server).unwrap();
            assert_eq!(server.protocol_version(), Some(version.version));
            assert_eq!(server.alpn_protocol(), Some(ALPN_HTTP_1_1));
            assert_eq!(client.peer_certificates().unwrap()[0].as_ref(), leaf.as_slice());

            let mut client = pki.client(&[version], &[b"h2", ALPN_HTTP_1_1]);
            let mut server = ServerConnection::new(loaded.line.clone()).unwrap();
            handshake(&mut client, &mut server).unwrap();
            assert_eq!(server.alpn_protocol(), None);
        }
    }

    #[test]
    fn an_https_client_offering_only_h2_is_incompatible() {
        let pki = Pki::new();
        let (files, _) = pki.good_leaf("good");
        let loaded = load(&files).unwrap();
        let mut client = pki.client(&[&rustls::version::TLS13], &[b"h2"]);
        let mut server = ServerConnection::new(loaded.https).unwrap();
        let error = handshake(&mut client, &mut server).unwrap_err();
        assert_eq!(TlsFailure::classify(&error), TlsFailure::Incompatible);
    }

    #[test]
    fn a_mismatched_key_is_refused_naming_both_files() {
        let pki = Pki::new();
        let (first, _) = pki.good_leaf("first");
        let (second, _) = pki.good_leaf("second");
        let mixed = TlsFiles { cert: first.cert.clone(), key: second.key.clone() };
        let error = load_error(&mixed);
        assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!("key {} does not match certificate {}", second.key.display(), first.cert.display())
        );
    }

    #[test]
    fn an_expired_or_not_yet_valid_certificate_is_refused() {
        let pki = Pki::new();
        let (expired, _) = pki.leaf("expired", (2020, 1, 1), (2026, 1, 1));
        let error = load_error(&expired);
        assert_eq!(
            error.to_string(),
            format!("certificate {} expired on 2026-01-01", expired.cert.display())
        );

        let (early, _) = pki.leaf("early", (2990, 6, 30), (2999, 1, 1));
        let error = load_error(&early);
        assert_eq!(
            error.to_string(),
            format!("certificate {} is not valid before 2990-06-30", early.cert.display())
        );
    }

    #[test]
    fn missing_empty_and_swapped_files_are_refused_naming_the_file() {
        let pki = Pki::new();
        let (good, _) = pki.good_leaf("good");
        let missing = pki.files("missing");

        let error = load_error(&TlsFiles { cert: missing.cert.clone(), key: good.key.clone() });
        assert_eq!(
            error.to_string(),
            format!("cannot read certificate file {}: No such file or directory", missing.cert.display())
        );
        let error = load_error(&TlsFiles { cert: good.cert.clone(), key: missing.key.clone() });
        assert_eq!(
            error.to_string(),
            format!("cannot read private key file {}: No such file or directory", missing.key.display())
        );

        // The key given as the certificate and the other way round.
        let error = load_error(&TlsFiles { cert: good.key.clone(), key: good.cert.clone() });
        assert_eq!(error.to_string(), format!("no certificate in {}", good.key.display()));
        let error = load_error(&TlsFiles { cert: good.cert.clone(), key: good.cert.clone() });
        assert_eq!(error.to_string(), format!("no private key in {}", good.cert.display()));

        let empty = pki.files("empty");
        fs::write(&empty.cert, "").unwrap();
        let error = load_error(&TlsFiles { cert: empty.cert.clone(), key: good.key.clone() });
        assert_eq!(error.to_string(), format!("no certificate in {}", empty.cert.display()));

        // A directory is not a readable file.
        let error = load_error(&TlsFiles { cert: pki.dir.path().to_owned(), key: good.key.clone() });
        assert!(matches!(error, TlsError::ReadCert { .. }), "{error:?}");

        // A CERTIFICATE section whose contents are not a certificate.
        let garbage = pki.files("garbage");
        fs::write(&garbage.cert, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        let error = load_error(&TlsFiles { cert: garbage.cert.clone(), key: good.key.clone() });
        assert!(matches!(error, TlsError::BadCert { .. }), "{error:?}");
        assert!(
            error
                .to_string()
                .starts_with(&format!("certificate {} cannot be parsed", garbage.cert.display()))
        );
    }

    #[test]
    fn reload_keeps_the_old_configuration_on_a_bad_file_and_takes_a_good_one() {
        let pki = Pki::new();
        let (first, first_leaf) = pki.good_leaf("first");
        let files = pki.files("live");
        fs::copy(&first.cert, &files.cert).unwrap();
        fs::copy(&first.key, &files.key).unwrap();
        let mut tls = Reloadable::load(files.clone()).unwrap();
        let before = tls.config(TlsListener::Wss);
        assert_eq!(served_leaf(&pki, tls.config(TlsListener::TcpTls)), first_leaf);

        // A key that is not the certificate's: refused, nothing changes.
        let (second, second_leaf) = pki.good_leaf("second");
        fs::copy(&second.key, &files.key).unwrap();
        assert!(matches!(tls.reload(), Err(TlsError::KeyMismatch { .. })));
        assert!(Arc::ptr_eq(&before, &tls.config(TlsListener::Wss)));
        assert_eq!(served_leaf(&pki, tls.config(TlsListener::TcpTls)), first_leaf);

        // A truncated certificate: refused too.
        fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\nMIIB").unwrap();
        assert!(matches!(tls.reload(), Err(TlsError::CertPem { .. })));
        assert!(Arc::ptr_eq(&before, &tls.config(TlsListener::Wss)));

        // The matching certificate arrives: taken, for both listeners.
        fs::copy(&second.cert, &files.cert).unwrap();
        tls.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &tls.config(TlsListener::Wss)));
        assert_eq!(served_leaf(&pki, tls.config(TlsListener::TcpTls)), second_leaf);
        assert_eq!(served_leaf(&pki, tls.config(TlsListener::Wss)), second_leaf);
        // A connection made before the reload still has the old config.
        assert_eq!(served_leaf(&pki, before), first_leaf);
    }

    #[test]
    fn first_bytes_tell_plaintext_from_tls() {
        let client_hello = [0x16, 0x03, 0x01, 0x02, 0x00];
        assert!(!plaintext_on_tls_port(&[]));
        assert!(!plaintext_on_tls_port(&client_hello));
        assert!(!plaintext_on_tls_port(&client_hello[..1]));
        assert!(plaintext_on_tls_port(b"GET / HTTP/1.1\r\n"));
        assert!(plaintext_on_tls_port(b"{\"name\":\"Mina\"}"));

        assert!(tls_on_plaintext_port(&client_hello));
        assert!(tls_on_plaintext_port(&[0x16, 0x03, 0x03]));
        assert!(!tls_on_plaintext_port(&client_hello[..2]));
        assert!(!tls_on_plaintext_port(&[0x16, 0x03, 0x05]));
        assert!(!tls_on_plaintext_port(&[0x16, 0x02, 0x00]));
        assert!(!tls_on_plaintext_port(b"{\"name\":\"Mina\",\"room\":\"dev\"}"));
        assert!(!tls_on_plaintext_port(b"GET /mychat HTTP/1.1\r\n"));
    }

    #[test]
    fn plaintext_fed_to_rustls_counts_as_not_tls() {
        let pki = Pki::new();
        let (files, _) = pki.good_leaf("good");
        let mut server = ServerConnection::new(load(&files).unwrap().https).unwrap();
        server.read_tls(&mut &b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"[..]).unwrap();
        let error = server.process_new_packets().unwrap_err();
        assert_eq!(TlsFailure::classify(&error), TlsFailure::NotTls, "{error:?}");
    }

    #[test]
    fn failures_have_distinct_labels_and_alerts_are_classified() {
        let mut labels: Vec<_> = TlsFailure::ALL.iter().map(|failure| failure.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), TlsFailure::ALL.len());
        let classify = |error: rustls::Error| TlsFailure::from(&error);
        assert_eq!(
            classify(rustls::Error::AlertReceived(AlertDescription::UnknownCA)),
            TlsFailure::BadCertificate
        );
        assert_eq!(
            classify(rustls::Error::AlertReceived(AlertDescription::ProtocolVersion)),
            TlsFailure::Incompatible
        );
        assert_eq!(
            classify(rustls::Error::AlertReceived(AlertDescription::UserCanceled)),
            TlsFailure::Closed
        );
        assert_eq!(classify(rustls::Error::DecryptError), TlsFailure::Protocol);
        assert_eq!(classify(rustls::Error::General("?".into())), TlsFailure::Other);
        assert_eq!(TlsListener::ALL.map(TlsListener::label), ["wss", "tcp_tls"]);
    }
}
