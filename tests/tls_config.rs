//! The TLS configurations `machat::internal::tls` builds, over real
//! sockets, before the reactor serves TLS: a blocking rustls server on a
//! thread of the test stands in for machat, and the clients are the ones in
//! `tests/common/tls.rs` that the reactor's own TLS tests will use.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use machat::internal::tls::{
    ALPN_HTTP_1_1, Reloadable, TlsFailure, TlsListener, load, plaintext_on_tls_port,
};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

mod common;
use common::TIMEOUT;
use common::tls::{TestPki, TlsLineClient, connect, connect_wss};

type ServerStream = StreamOwned<ServerConnection, TcpStream>;

/// Accepts one connection on an ephemeral port, finishes the TLS
/// handshake with `config`, and hands the stream to `serve`; a failed
/// handshake ends the thread with its classification.
fn serve_one<T: Send + 'static>(
    config: Arc<ServerConfig>,
    serve: impl FnOnce(ServerStream) -> T + Send + 'static,
) -> (SocketAddr, JoinHandle<Result<T, TlsFailure>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let thread = thread::spawn(move || {
        let (socket, _) = listener.accept().unwrap();
        socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut stream = StreamOwned::new(ServerConnection::new(config).unwrap(), socket);
        while stream.conn.is_handshaking() {
            if let Err(error) = stream.conn.complete_io(&mut stream.sock) {
                let failure = match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                    Some(tls_error) => TlsFailure::classify(tls_error),
                    None => TlsFailure::Closed,
                };
                return Err(failure);
            }
        }
        Ok(serve(stream))
    });
    (address, thread)
}

/// Echoes lines back as `echo:<line>` until the client closes.
fn echo_lines(stream: ServerStream) -> (Option<rustls::ProtocolVersion>, Option<Vec<u8>>) {
    let version = stream.conn.protocol_version();
    let alpn = stream.conn.alpn_protocol().map(<[u8]>::to_vec);
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|read| read > 0) {
        let reply = format!("echo:{line}");
        let stream = reader.get_mut();
        if stream.write_all(reply.as_bytes()).and_then(|()| stream.flush()).is_err() {
            break;
        }
        line.clear();
    }
    (version, alpn)
}

#[test]
fn the_line_listener_speaks_tls_12_and_13_without_alpn() {
    let pki = TestPki::new();
    let loaded = load(&pki.files).unwrap();
    for (config, expected) in [
        (pki.client_config_tls12(), rustls::ProtocolVersion::TLSv1_2),
        (pki.client_config_tls13(), rustls::ProtocolVersion::TLSv1_3),
    ] {
        let (address, server) = serve_one(loaded.line.clone(), echo_lines);
        let stream = connect(address, config, "127.0.0.1").expect("the IP address is in the certificate");
        let mut client = TlsLineClient { stream: BufReader::new(stream) };
        assert_eq!(client.connection().protocol_version(), Some(expected));
        client.send_line("hello");
        client.expect_line("echo:hello");
        drop(client);
        let (version, alpn) = server.join().unwrap().unwrap();
        assert_eq!((version, alpn), (Some(expected), None));
    }
}

#[test]
fn the_https_listener_picks_http_1_1_and_upgrades_to_wss() {
    let pki = TestPki::new();
    let loaded = load(&pki.files).unwrap();
    let (address, server) = serve_one(loaded.https.clone(), |stream| {
        let alpn = stream.conn.alpn_protocol().map(<[u8]>::to_vec);
        let mut ws = tungstenite::accept(stream).expect("WebSocket upgrade over TLS");
        let message = ws.read().expect("a message");
        ws.send(message).expect("echo it");
        let _ = ws.close(None);
        while ws.read().is_ok() {}
        alpn
    });
    let mut ws = connect_wss(address, &pki, "/mychat").expect("wss connect");
    assert_eq!(ws.get_ref().conn.alpn_protocol(), Some(ALPN_HTTP_1_1));
    ws.send(tungstenite::Message::text("{\"name\":\"Mina\",\"room\":\"dev\"}")).unwrap();
    assert_eq!(ws.read().unwrap().into_text().unwrap().as_str(), "{\"name\":\"Mina\",\"room\":\"dev\"}");
    // The server's Close, answered; then the connection ends.
    assert!(matches!(ws.read(), Ok(tungstenite::Message::Close(_))));
    drop(ws);
    assert_eq!(server.join().unwrap().unwrap(), Some(ALPN_HTTP_1_1.to_vec()));
}

#[test]
fn a_client_that_does_not_trust_the_certificate_counts_as_bad_certificate() {
    let pki = TestPki::new();
    let stranger = TestPki::new();
    let loaded = load(&pki.files).unwrap();
    let (address, server) = serve_one(loaded.line.clone(), echo_lines);
    let error = connect(address, stranger.client_config(), "localhost").expect_err("refused");
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");
    assert_eq!(server.join().unwrap().unwrap_err(), TlsFailure::BadCertificate);
}

#[test]
fn plaintext_on_the_tls_port_is_told_apart_by_its_first_byte() {
    let pki = TestPki::new();
    let loaded = load(&pki.files).unwrap();
    let (address, server) = serve_one(loaded.https.clone(), echo_lines);
    let mut socket = TcpStream::connect(address).unwrap();
    socket.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    assert!(plaintext_on_tls_port(b"GET / HTTP/1.1\r\n"));
    assert_eq!(server.join().unwrap().unwrap_err(), TlsFailure::NotTls);
}

#[test]
fn a_reload_serves_the_new_certificate_to_new_connections_only() {
    let pki = TestPki::new();
    let mut tls = Reloadable::load(pki.files.clone()).unwrap();
    let (old_address, old_server) = serve_one(tls.config(TlsListener::TcpTls), echo_lines);
    let old_stream = connect(old_address, pki.client_config(), "localhost").unwrap();
    let old_leaf = old_stream.conn.peer_certificates().unwrap()[0].clone();

    // New files at the same paths, then the reload.
    let renewed = pki.issue("renewed");
    std::fs::copy(&renewed.cert, &pki.files.cert).unwrap();
    std::fs::copy(&renewed.key, &pki.files.key).unwrap();
    tls.reload().unwrap();

    let (new_address, new_server) = serve_one(tls.config(TlsListener::TcpTls), echo_lines);
    let new_stream = connect(new_address, pki.client_config(), "localhost").unwrap();
    assert_ne!(new_stream.conn.peer_certificates().unwrap()[0], old_leaf);

    // The connection made before the reload goes on.
    let mut old_client = TlsLineClient { stream: BufReader::new(old_stream) };
    old_client.send_line("still here");
    old_client.expect_line("echo:still here");
    drop((old_client, new_stream));
    old_server.join().unwrap().unwrap();
    new_server.join().unwrap().unwrap();
}
