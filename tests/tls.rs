//! TLS on the same loop (`--tcp-tls`, `--wss`): line clients over TLS,
//! `wss://` clients and plaintext clients share rooms; both TLS versions;
//! a handshake trickled in one byte at a time; handshake timeout;
//! plaintext on a TLS port; a line spanning several records; certificate
//! reload on SIGHUP; Close 1001 over `wss://` at shutdown.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::tls::{TestPki, TlsLineClient, connect, connect_wss};
use common::{Machat, TIMEOUT, TestServer, joined_tcp};
use machat::Config;
use rustls::pki_types::ServerName;
use tungstenite::Message;

fn tls_config(pki: &TestPki) -> Config {
    Config {
        wss: Some("127.0.0.1:0".into()),
        tcp_tls: Some("127.0.0.1:0".into()),
        tls_cert: Some(pki.files.cert.clone()),
        tls_key: Some(pki.files.key.clone()),
        ..Config::ephemeral()
    }
}

struct TlsServer {
    server: TestServer,
    wss: SocketAddr,
    tcp_tls: SocketAddr,
}

fn start(config: Config) -> TlsServer {
    let _ = env_logger::builder().is_test(true).try_init();
    let server = machat::Server::bind(config).expect("bind with TLS");
    let (wss, tcp_tls) = (server.wss_addr().unwrap(), server.tcp_tls_addr().unwrap());
    TlsServer { server: TestServer::from_server(server), wss, tcp_tls }
}

#[test]
fn tls_line_wss_and_plaintext_clients_chat_in_one_room() {
    let pki = TestPki::new();
    let TlsServer { server, wss, tcp_tls } = start(tls_config(&pki));
    let mut line = TlsLineClient::join(tcp_tls, &pki, "secure", "mixed");
    line.send_line("hello");
    line.expect_line("secure:hello");
    let mut browser = connect_wss(wss, &pki, "/mychat").expect("wss upgrade");
    assert_eq!(browser.get_ref().conn.alpn_protocol(), Some(&b"http/1.1"[..]), "ALPN http/1.1 on HTTPS");
    browser.send(Message::text(common::handshake("browser", "mixed"))).unwrap();
    browser.send(Message::text("hi all\n")).unwrap();
    assert_eq!(read_text(&mut browser), "browser:hi all\n");
    line.expect_line("browser:hi all");
    let mut plain = joined_tcp(server.tcp, "plain", "mixed");
    line.expect_line("plain:hello");
    assert_eq!(read_text(&mut browser), "plain:hello\n");
    line.send_line("over TLS");
    plain.expect_line("secure:over TLS");
    assert_eq!(read_text(&mut browser), "secure:over TLS\n");
    assert_eq!(line.read_line(), "secure:over TLS");
    let stats = server.wait_for("two TLS connections", |s| s.tls_connections == [1, 1]);
    assert_eq!(stats.tls_handshakes, 2);
}

fn read_text(ws: &mut tungstenite::WebSocket<common::tls::TlsStream>) -> String {
    match ws.read().expect("a message") {
        Message::Text(text) => text.as_str().to_owned(),
        other => panic!("expected text, got {other:?}"),
    }
}

#[test]
fn tls_1_2_and_1_3_both_work() {
    let pki = TestPki::new();
    let TlsServer { server: _server, tcp_tls, .. } = start(tls_config(&pki));
    for (config, version) in [
        (pki.client_config_tls12(), rustls::ProtocolVersion::TLSv1_2),
        (pki.client_config_tls13(), rustls::ProtocolVersion::TLSv1_3),
    ] {
        let mut stream = connect(tcp_tls, config, "localhost").expect("handshake");
        assert_eq!(stream.conn.protocol_version(), Some(version));
        stream.write_all(common::handshake(&format!("{version:?}"), "versions").as_bytes()).unwrap();
        stream.write_all(b"\nhi\n").unwrap();
        let mut echo = Vec::new();
        while !echo.ends_with(b"\n") {
            let mut byte = [0];
            stream.read_exact(&mut byte).unwrap();
            echo.push(byte[0]);
        }
        assert_eq!(String::from_utf8(echo).unwrap(), format!("{version:?}:hi\n"));
    }
}

#[test]
fn a_handshake_sent_one_byte_at_a_time_completes() {
    let pki = TestPki::new();
    let TlsServer { server: _server, tcp_tls, .. } = start(tls_config(&pki));
    let mut client =
        rustls::ClientConnection::new(pki.client_config(), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let mut socket = TcpStream::connect(tcp_tls).unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    socket.set_nodelay(true).unwrap();
    let mut hello = Vec::new();
    client.write_tls(&mut hello).unwrap();
    for byte in &hello {
        socket.write_all(std::slice::from_ref(byte)).unwrap();
        socket.flush().unwrap();
    }
    let mut stream = rustls::StreamOwned::new(client, socket);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).expect("the handshake completes");
    }
    stream.write_all(common::handshake("trickle", "bytes").as_bytes()).unwrap();
    stream.write_all(b"done\n").unwrap();
    let mut reader = std::io::BufReader::new(stream);
    let mut echo = String::new();
    std::io::BufRead::read_line(&mut reader, &mut echo).unwrap();
    assert_eq!(echo, "trickle:done\n");
}

#[test]
fn plaintext_on_a_tls_port_is_refused_quickly_and_counted() {
    let pki = TestPki::new();
    let TlsServer { server, tcp_tls, wss } = start(tls_config(&pki));
    for address in [tcp_tls, wss] {
        let mut socket = TcpStream::connect(address).unwrap();
        socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        socket.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut rest = Vec::new();
        let _ = socket.read_to_end(&mut rest);
        assert!(!rest.starts_with(b"HTTP/1.1 200"), "plaintext got an answer on a TLS port");
    }
    server.wait_for("two plaintext attempts counted", |s| {
        s.tls_failures_for("not_tls") == 2 && s.connections == 0
    });
    // And TLS on a plaintext port is refused by its first bytes.
    let mut socket = TcpStream::connect(server.tcp).unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    socket.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]).unwrap();
    let mut answer = String::new();
    let _ = socket.read_to_string(&mut answer);
    assert!(answer.starts_with("error: handshake must be a JSON object"), "{answer:?}");
}

#[test]
fn a_silent_tls_connection_times_out_in_the_handshake() {
    let pki = TestPki::new();
    let config = Config { handshake_timeout: Duration::from_millis(300), ..tls_config(&pki) };
    let TlsServer { server, tcp_tls, .. } = start(config);
    let mut socket = TcpStream::connect(tcp_tls).unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut rest = Vec::new();
    let _ = socket.read_to_end(&mut rest);
    server.wait_for("the timeout counted", |s| s.tls_failures_for("timeout") == 1 && s.connections == 0);
}

#[test]
fn a_64_kib_line_spans_several_records() {
    let pki = TestPki::new();
    let TlsServer { server: _server, tcp_tls, .. } = start(tls_config(&pki));
    let mut client = TlsLineClient::join(tcp_tls, &pki, "big", "records");
    let text = "x".repeat(60 * 1024);
    client.send_line(&text);
    assert_eq!(client.read_line(), format!("big:{text}"));
}

#[test]
fn shutdown_sends_close_1001_over_wss() {
    let pki = TestPki::new();
    let TlsServer { server, wss, .. } = start(tls_config(&pki));
    let mut browser = connect_wss(wss, &pki, "/mychat").unwrap();
    browser.send(Message::text(common::handshake("leaving", "shutdown"))).unwrap();
    browser.send(Message::text("bye\n")).unwrap();
    assert_eq!(read_text(&mut browser), "leaving:bye\n");
    server.stop().unwrap();
    match browser.read() {
        Ok(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected Close 1001, got {other:?}"),
    }
}

/// SIGHUP reloads the certificate for new connections; connections made
/// before keep chatting; a bad file keeps the old certificate.
#[test]
fn sighup_reloads_the_certificate_for_new_connections() {
    let pki = TestPki::new();
    let cert = pki.files.cert.to_str().unwrap().to_owned();
    let key = pki.files.key.to_str().unwrap().to_owned();
    let mut machat = Machat::start(&[
        "-tcp",
        "127.0.0.1:0",
        "-ws",
        "127.0.0.1:0",
        "--tcp-tls",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    let tcp_tls: SocketAddr = machat.wait_log("listening for TLS line clients on ").parse().unwrap();
    let peer_certificate =
        |client: &TlsLineClient| client.connection().peer_certificates().unwrap()[0].clone();
    let mut before = TlsLineClient::join(tcp_tls, &pki, "before", "reload");
    before.send_line("one");
    before.expect_line("before:one");
    let first = peer_certificate(&before);

    // A new certificate for the same names, written over the old files.
    let renewed = pki.issue("renewed");
    std::fs::copy(&renewed.cert, &pki.files.cert).unwrap();
    std::fs::copy(&renewed.key, &pki.files.key).unwrap();
    machat.signal(libc::SIGHUP);
    machat.wait_log("reloaded TLS certificate");
    let after = wait_for_certificate(tcp_tls, &pki, &first);
    assert_ne!(peer_certificate(&after), first);
    before.send_line("two");
    before.expect_line("before:two");

    // A broken file is refused and the current certificate stays.
    std::fs::write(&pki.files.key, "not a key").unwrap();
    machat.signal(libc::SIGHUP);
    machat.wait_log("TLS reload failed");
    let still = TlsLineClient::join(tcp_tls, &pki, "still", "reload");
    assert_eq!(peer_certificate(&still), peer_certificate(&after));
}

/// New connections until one sees a certificate other than `old` (the
/// loop takes the reload at its next wake-up).
fn wait_for_certificate(
    address: SocketAddr,
    pki: &TestPki,
    old: &rustls::pki_types::CertificateDer,
) -> TlsLineClient {
    let started = std::time::Instant::now();
    loop {
        let client = TlsLineClient::join(address, pki, "after", "reload");
        if client.connection().peer_certificates().unwrap()[0] != *old {
            return client;
        }
        assert!(started.elapsed() < TIMEOUT, "new connections still get the old certificate");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TLS member that stops reading is cut as a slow consumer, like a plain
/// one, while the queued bytes stay bounded; the others get everything.
#[test]
fn a_stalled_tls_reader_is_cut_with_memory_bounded() {
    let pki = TestPki::new();
    let config = Config { slow_consumer_timeout: Duration::from_millis(500), ..tls_config(&pki) };
    let TlsServer { server, tcp_tls, .. } = start(config);
    let stalled = TlsLineClient::join(tcp_tls, &pki, "stalled", "tls-cut");
    let mut reader = joined_tcp(server.tcp, "reader", "tls-cut");
    let mut sender = joined_tcp(server.tcp, "sender", "tls-cut");
    reader.expect_line("sender:hello");
    server.wait_for("three members", |s| s.members == 3);
    // The sender reads its echoes all along; only the TLS member stalls.
    let mut echoes = sender.stream.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut sink = vec![0; 1 << 16];
        while matches!(echoes.read(&mut sink), Ok(n) if n > 0) {}
    });
    let line = format!("{}\n", "t".repeat(99));
    let mut sent = 0;
    let stats = loop {
        sender.send_raw(line.repeat(100).as_bytes());
        sent += 100;
        for _ in 0..100 {
            reader.expect_line(&format!("sender:{}", line.trim_end()));
        }
        let stats = server.stats();
        if stats.cuts_for("stalled") == 1 {
            break stats;
        }
        assert!(sent < 2_000_000, "the stalled TLS reader was never cut");
    };
    assert!(stats.queued_bytes_peak <= 3 * Config::DEFAULT_MAX_PENDING as u64);
    server.wait_for("the TLS member gone", |s| s.members == 2 && s.tls_connections == [0, 0]);
    drop(stalled);
    sender.send_line("still here");
    reader.expect_line("sender:still here");
}

/// A TLS listener with a missing, mismatched or expired certificate is
/// refused at start, naming the file, before anything listens.
#[test]
fn bad_certificates_are_refused_at_start_naming_the_file() {
    let pki = TestPki::new();
    let other = pki.issue("other");
    let expired = pki.issue_valid("expired", (2020, 1, 1), (2021, 1, 1));
    let cert = pki.files.cert.to_str().unwrap();
    let key = pki.files.key.to_str().unwrap();
    let other_key = other.key.to_str().unwrap();
    let cases: [(Vec<&str>, String); 4] = [
        (vec!["--tcp-tls", "127.0.0.1:0"], "--wss and --tcp-tls need a certificate and its key".into()),
        (
            vec!["--tcp-tls", "127.0.0.1:0", "--tls-cert", "/nonexistent/cert.pem", "--tls-key", key],
            "/nonexistent/cert.pem".into(),
        ),
        (
            vec!["--wss", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", other_key],
            format!("key {other_key} does not match"),
        ),
        (
            vec![
                "--wss",
                "127.0.0.1:0",
                "--tls-cert",
                expired.cert.to_str().unwrap(),
                "--tls-key",
                expired.key.to_str().unwrap(),
            ],
            "expired".into(),
        ),
    ];
    for (args, message) in cases {
        let mut all = vec!["-tcp", "127.0.0.1:0", "-ws", "127.0.0.1:0"];
        all.extend(args.iter().copied());
        let output = std::process::Command::new(common::MACHAT)
            .args(&all)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} should not start");
        assert!(stderr.contains(&message), "{args:?}: expected {message:?} in {stderr}");
        assert!(!stderr.contains("listening"), "{args:?}: nothing may listen first");
    }
}
