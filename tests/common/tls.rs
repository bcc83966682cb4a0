//! TLS helpers for the integration tests: a test CA that issues server
//! certificates for `localhost` and `127.0.0.1` (rcgen, written as PEM to a
//! temp dir that lives as long as the [`TestPki`]), `rustls::ClientConfig`s
//! that trust that CA only (any version, TLS 1.2 only, TLS 1.3 only), and
//! blocking TLS clients for the line protocol and for `wss://` whose every
//! read is bounded by [`TIMEOUT`].

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use machat::internal::tls::TlsFiles;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, date_time_ymd};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned, SupportedProtocolVersion};

use super::{ORIGINAL_ORIGIN, TIMEOUT, handshake};

/// A blocking TLS client stream over TCP.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// The names every test server certificate is valid for.
pub const SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// A CA and the files it wrote: the CA certificate (`ca.pem`) and one
/// server certificate and key ([`TestPki::files`]). More server
/// certificates can be issued, for reload tests.
pub struct TestPki {
    dir: tempfile::TempDir,
    ca: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    /// The CA certificate, PEM: what `--ca` and `curl --cacert` take.
    pub ca_path: PathBuf,
    /// The first server certificate and key, for `--tls-cert`/`--tls-key`.
    pub files: TlsFiles,
}

impl TestPki {
    /// A new CA, and a server certificate from it written as
    /// `server.cert.pem` and `server.key.pem`.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temp dir for certificates");
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: a client given another test's CA then finds no
        // issuer (UnknownIssuer), as with a real stranger's certificate,
        // rather than an issuer of the same name whose signature fails.
        static CA_NUMBER: AtomicUsize = AtomicUsize::new(1);
        let ca_name = format!("machat test CA {}", CA_NUMBER.fetch_add(1, Ordering::Relaxed));
        params.distinguished_name.push(DnType::CommonName, ca_name);
        let key = KeyPair::generate().unwrap();
        let ca_cert = params.self_signed(&key).unwrap();
        let ca_path = dir.path().join("ca.pem");
        fs::write(&ca_path, ca_cert.pem()).unwrap();
        let mut pki = TestPki {
            files: TlsFiles { cert: PathBuf::new(), key: PathBuf::new() },
            ca_der: ca_cert.der().clone(),
            ca_pem: ca_cert.pem(),
            ca: Issuer::new(params, key),
            ca_path,
            dir,
        };
        pki.files = pki.issue("server");
        pki
    }

    /// Issues a server certificate for [`SERVER_NAMES`], valid from 2000 to
    /// 2999, as `<stem>.cert.pem` and `<stem>.key.pem`.
    pub fn issue(&self, stem: &str) -> TlsFiles {
        self.issue_valid(stem, (2000, 1, 1), (2999, 1, 1))
    }

    /// Issues a server certificate valid from `not_before` to `not_after`
    /// (year, month, day): an expired one, for refusal tests.
    pub fn issue_valid(&self, stem: &str, not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> TlsFiles {
        let mut params = CertificateParams::new(SERVER_NAMES.map(str::to_owned).to_vec()).unwrap();
        params.distinguished_name.push(DnType::CommonName, format!("machat test {stem}"));
        params.not_before = date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let files = self.paths(stem);
        // The chain as servers are given it: leaf first, then the CA (which
        // clients ignore, having it as their root).
        fs::write(&files.cert, cert.pem() + &self.ca_pem).unwrap();
        fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    /// Where `<stem>`'s certificate and key go (written or not).
    pub fn paths(&self, stem: &str) -> TlsFiles {
        TlsFiles {
            cert: self.dir.path().join(format!("{stem}.cert.pem")),
            key: self.dir.path().join(format!("{stem}.key.pem")),
        }
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// A client that trusts this CA only, TLS 1.2 and 1.3, no ALPN.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client_config_with(rustls::ALL_VERSIONS, &[])
    }

    /// A client that speaks TLS 1.2 only.
    pub fn client_config_tls12(&self) -> Arc<ClientConfig> {
        self.client_config_with(&[&rustls::version::TLS12], &[])
    }

    /// A client that speaks TLS 1.3 only.
    pub fn client_config_tls13(&self) -> Arc<ClientConfig> {
        self.client_config_with(&[&rustls::version::TLS13], &[])
    }

    /// A client that offers ALPN `h2` and `http/1.1`, as a browser does.
    pub fn browser_config(&self) -> Arc<ClientConfig> {
        self.client_config_with(rustls::ALL_VERSIONS, &[b"h2", b"http/1.1"])
    }

    /// A client that trusts this CA only, with these versions and ALPN
    /// protocols.
    pub fn client_config_with(
        &self,
        versions: &[&'static SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("the test CA is a valid root");
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .expect("ring supports TLS 1.2 and 1.3")
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        Arc::new(config)
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// Connects to `address`, finishes the TLS handshake for `server_name`
/// (so a refused certificate or version is this call's error), and bounds
/// every later read and write by [`TIMEOUT`].
pub fn connect(address: SocketAddr, config: Arc<ClientConfig>, server_name: &str) -> io::Result<TlsStream> {
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
    let connection = ClientConnection::new(config, name).map_err(io::Error::other)?;
    let socket = TcpStream::connect(address)?;
    socket.set_read_timeout(Some(TIMEOUT))?;
    socket.set_write_timeout(Some(TIMEOUT))?;
    socket.set_nodelay(true)?;
    let mut stream = StreamOwned::new(connection, socket);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// A line-protocol client over TLS (`--tcp-tls`), like `TcpClient`.
pub struct TlsLineClient {
    pub stream: BufReader<TlsStream>,
}

impl TlsLineClient {
    /// Connects to `localhost` at `address`, trusting `pki`'s CA.
    pub fn connect(address: SocketAddr, pki: &TestPki) -> Self {
        let stream = connect(address, pki.client_config(), "localhost").expect("TLS connect");
        TlsLineClient { stream: BufReader::new(stream) }
    }

    /// Connects and sends the handshake as the original client does (no
    /// newline).
    pub fn join(address: SocketAddr, pki: &TestPki, name: &str, room: &str) -> Self {
        let mut client = Self::connect(address, pki);
        client.send_raw(handshake(name, room).as_bytes());
        client
    }

    /// The TLS connection, to look at the negotiated version or ALPN.
    pub fn connection(&self) -> &ClientConnection {
        &self.stream.get_ref().conn
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        let stream = self.stream.get_mut();
        stream.write_all(bytes).expect("TLS write");
        stream.flush().expect("TLS flush");
    }

    pub fn send_line(&mut self, text: &str) {
        self.send_raw(format!("{text}\n").as_bytes());
    }

    /// The next line, without its `\n`; panics at end of stream or timeout.
    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        match self.stream.read_line(&mut line) {
            Ok(0) => panic!("the server closed the TLS connection"),
            Ok(_) => line.strip_suffix('\n').unwrap_or(&line).to_owned(),
            Err(error) => panic!("expected a line over TLS, got {error}"),
        }
    }

    pub fn expect_line(&mut self, expected: &str) {
        assert_eq!(self.read_line(), expected);
    }
}

/// Upgrades to a WebSocket over TLS (`wss://localhost:<port><path>`) with
/// the original client's Origin, offering ALPN like a browser.
pub fn connect_wss(
    address: SocketAddr,
    pki: &TestPki,
    path: &str,
) -> Result<tungstenite::WebSocket<TlsStream>, tungstenite::Error> {
    use tungstenite::client::IntoClientRequest;
    let stream = connect(address, pki.browser_config(), "localhost")?;
    let mut request = format!("wss://localhost:{}{path}", address.port()).into_client_request()?;
    request.headers_mut().insert("Origin", ORIGINAL_ORIGIN.parse().expect("origin header value"));
    match tungstenite::client(request, stream) {
        Ok((ws, _response)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(error)) => Err(error),
        Err(tungstenite::HandshakeError::Interrupted(_)) => panic!("blocking handshake was interrupted"),
    }
}
