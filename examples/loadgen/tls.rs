//! `--tls`: the client side of TLS, on the generator's own loop. Each
//! connection holds a `rustls::ClientConnection`; `event_loop` feeds it the
//! socket's bytes (`read_tls` until WouldBlock, then `process_new_packets`
//! and the plaintext drained from `reader()`), and `Connection::flush`
//! pushes output through `writer()` and `write_tls` until WouldBlock.
//!
//! This file builds the configuration shared by every connection: the
//! certificates to trust (`--ca`, or the system's when not given) and the
//! name to check the server's certificate against (`--server-name`).

use std::sync::Arc;

use rustls::client::ClientConfig;
use rustls::{ClientConnection, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::{Failure, exit_code, failure};

/// What every TLS connection is made from.
pub struct TlsClient {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl TlsClient {
    /// `ca_pem`: the contents of `--ca`, or `None` for the system's roots.
    /// `alpn_http`: offer ALPN `http/1.1` (WebSocket over TLS).
    pub fn new(ca_pem: Option<&[u8]>, server_name: &str, alpn_http: bool) -> Result<TlsClient, Failure> {
        let bad = |message: String| failure(exit_code::BAD_FLAGS, message);
        let server_name = parse_server_name(server_name).map_err(bad)?;
        let mut roots = RootCertStore::empty();
        match ca_pem {
            Some(pem) => {
                for cert in certificates_from_pem(pem).map_err(|e| bad(format!("--ca: {e}")))? {
                    roots.add(cert).map_err(|e| bad(format!("--ca: {e}")))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(failure(
                        exit_code::CANNOT_CONNECT,
                        "--tls: no system certificates found; give the server's with --ca FILE",
                    ));
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(format!("--tls: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        if alpn_http {
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        Ok(TlsClient { config: Arc::new(config), server_name })
    }

    /// A fresh client session; its ClientHello is queued at once.
    pub fn connection(&self) -> Result<Box<ClientConnection>, Failure> {
        ClientConnection::new(self.config.clone(), self.server_name.clone())
            .map(Box::new)
            .map_err(|e| failure(exit_code::CANNOT_CONNECT, format!("TLS: {e}")))
    }
}

/// `--server-name`: a DNS name or an IP address.
pub fn parse_server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_string()).map_err(|e| format!("--server-name {name:?}: {e}"))
}

/// Every `CERTIFICATE` block of a PEM file; none at all is an error.
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE in the file".into());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use rustls::ServerConnection;
    use rustls_pki_types::PrivateKeyDer;

    use super::*;

    fn self_signed() -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).expect("params");
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn server_names_are_dns_names_or_addresses() {
        assert!(matches!(parse_server_name("localhost"), Ok(ServerName::DnsName(_))));
        assert!(matches!(parse_server_name("127.0.0.1"), Ok(ServerName::IpAddress(_))));
        assert!(parse_server_name("not a name").is_err());
        assert!(parse_server_name("").is_err());
    }

    #[test]
    fn pem_gives_its_certificates_and_nothing_else() {
        let (cert, key) = self_signed();
        assert_eq!(certificates_from_pem(cert.as_bytes()).expect("one").len(), 1);
        let two = format!("{cert}{key}{cert}");
        assert_eq!(certificates_from_pem(two.as_bytes()).expect("two").len(), 2);
        assert!(certificates_from_pem(key.as_bytes()).is_err(), "a key alone is no certificate");
        assert!(certificates_from_pem(b"").is_err());
        assert!(TlsClient::new(Some(b"junk"), "localhost", false).is_err());
    }

    /// Moves every TLS byte one side wants to write into the other.
    fn pump(from: &mut impl FnMut(&mut Vec<u8>), to: &mut impl FnMut(&[u8])) {
        let mut wire = Vec::new();
        from(&mut wire);
        if !wire.is_empty() {
            to(&wire);
        }
    }

    #[test]
    fn a_client_trusting_the_ca_file_talks_to_the_server_and_checks_its_name() {
        let (cert, key) = self_signed();
        let server_config = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(
                    certificates_from_pem(cert.as_bytes()).expect("cert"),
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
                )
                .expect("server config"),
        );
        for (name, ok) in [("localhost", true), ("127.0.0.1", true), ("example.com", false)] {
            let client = TlsClient::new(Some(cert.as_bytes()), name, false).expect("client");
            let mut c = client.connection().expect("connection");
            let mut s = ServerConnection::new(server_config.clone()).expect("server");
            c.writer().write_all(b"hello\n").expect("buffered before the handshake");
            let mut failed = false;
            for _ in 0..10 {
                pump(
                    &mut |w| {
                        while c.wants_write() {
                            c.write_tls(w).unwrap();
                        }
                    },
                    &mut |b| {
                        s.read_tls(&mut &b[..]).unwrap();
                        failed |= s.process_new_packets().is_err();
                    },
                );
                pump(
                    &mut |w| {
                        while s.wants_write() {
                            s.write_tls(w).unwrap();
                        }
                    },
                    &mut |b| {
                        c.read_tls(&mut &b[..]).unwrap();
                        failed |= c.process_new_packets().is_err();
                    },
                );
            }
            if !ok {
                assert!(failed, "{name}: a certificate for another name is refused");
                continue;
            }
            assert!(!failed && !c.is_handshaking(), "{name}");
            let mut got = [0u8; 6];
            s.reader().read_exact(&mut got).expect("plaintext through");
            assert_eq!(&got, b"hello\n");
        }
    }
}
