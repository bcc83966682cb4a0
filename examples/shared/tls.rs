//! TLS for the example clients (`tcp_client`, `ws_client`), included by
//! both with `#[path]` (a folder without `main.rs` is not an example of its
//! own): a rustls client configuration on the `ring` provider that trusts
//! either the CA certificates of a PEM file (`--ca FILE`, for a
//! self-signed or private CA) or the system's trust store, and a blocking
//! TLS connection whose handshake is finished before it is returned, so a
//! refused certificate is reported before anything is sent.

use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// A blocking TLS client stream over TCP.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A client configuration for TLS 1.2 and 1.3 offering `alpn`, trusting
/// the certificates in `ca` (PEM) if given, else the system's store.
pub fn client_config(ca: Option<&Path>, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            let certificates = CertificateDer::pem_file_iter(path)
                .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
                .map_err(|error| format!("cannot read CA file {}: {error}", path.display()))?;
            let (added, _ignored) = roots.add_parsable_certificates(certificates);
            if added == 0 {
                return Err(format!("no usable CA certificate in {}", path.display()));
            }
        }
        None => {
            // Errors for single unreadable files are not fatal: what matters
            // is whether any root was found.
            let system = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(system.certs);
            if roots.is_empty() {
                return Err("no CA certificates in the system's trust store; give one with --ca FILE".into());
            }
        }
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Connects to `host:port` and finishes the TLS handshake, checking the
/// server's certificate against `host` (a name or an IP address).
pub fn connect(host: &str, port: u16, config: Arc<ClientConfig>) -> Result<TlsStream, String> {
    let name = ServerName::try_from(host.to_owned()).map_err(|_| format!("{host:?} is not a server name"))?;
    let connection = ClientConnection::new(config, name).map_err(|error| error.to_string())?;
    let socket = TcpStream::connect((host, port))
        .map_err(|error| format!("cannot connect to {host}:{port}: {error}"))?;
    let _ = socket.set_nodelay(true);
    let mut stream = StreamOwned::new(connection, socket);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).map_err(|error| {
            let hint = if error.to_string().contains("invalid peer certificate") {
                " (for a self-signed certificate, give its CA with --ca FILE)"
            } else {
                ""
            };
            format!("TLS handshake with {host}:{port} failed: {error}{hint}")
        })?;
    }
    Ok(stream)
}

/// `TLS 1.3, TLS13_AES_256_GCM_SHA384`, for the "connected" line.
pub fn describe(connection: &ClientConnection) -> String {
    let version = match connection.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2".to_owned(),
        other => format!("{other:?}"),
    };
    match connection.negotiated_cipher_suite() {
        Some(suite) => format!("{version}, {:?}", suite.suite()),
        None => version,
    }
}

/// `host` and `port` from `HOST:PORT` or `[IPv6]:PORT`; the host comes
/// without brackets, as `ServerName` and `TcpStream::connect` want it.
pub fn split_host_port(address: &str) -> Result<(&str, u16), String> {
    let (host, port) = address.rsplit_once(':').ok_or_else(|| format!("{address:?} is not HOST:PORT"))?;
    let port = port.parse().map_err(|_| format!("bad port in {address:?}"))?;
    let host = host.strip_prefix('[').and_then(|host| host.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() {
        return Err(format!("no host in {address:?}"));
    }
    Ok((host, port))
}
