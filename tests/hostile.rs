//! A hostile client, attack by attack, over real sockets: no impersonation
//! (names and rooms that fold alike are one), no terminal injection
//! (message text sanitised), no request desync (HTTP framing that two
//! parsers could read differently is refused), no crash from a flag, and
//! the smaller holes (a shutdown summary that hid its losses, reasons that
//! named the wrong cause or said it twice, ignored fields that could fail a
//! handshake). Each test fails on the server before these defences.

mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{
    Machat, ORIGINAL_ORIGIN, TIMEOUT, TcpClient, TestServer, WsClient, connect_with_buffers, handshake,
    joined_tcp, joined_ws, masked_frame, opcode, upgrade_request,
};
use machat::{Config, Server};

/// Close code for WebSocket protocol violations.
const PROTOCOL_ERROR: u16 = 1002;
/// Close code for policy violations (handshake errors).
const POLICY: u16 = 1008;

// ----- names: no one can pose as another -----------------------------------

/// `Bob`, `bob`, `Bоb` (Cyrillic о), `ＢＯＢ` (fullwidth), `B0B` and `Bob`
/// written with a decomposed letter cannot share a room: each later one is
/// told the name is taken, and by whom.
#[test]
fn lookalike_names_cannot_share_a_room() {
    let server = TestServer::start();
    let mut bob = joined_tcp(server.tcp, "Bob", "dev");
    for lookalike in ["bob", "BOB", "B\u{43e}b", "\u{ff22}\u{ff2f}\u{ff22}", "B0B", " Bob "] {
        let mut impostor = TcpClient::join(server.tcp, lookalike, "dev");
        let shown = lookalike.trim();
        let expected = if shown == "Bob" {
            r#"error: name "Bob" is already taken in room "dev""#.to_owned()
        } else {
            format!(r#"error: name "{shown}" is already taken in room "dev" (as "Bob")"#)
        };
        assert_eq!(impostor.expect_error("already taken"), expected);
    }
    // Over WebSocket too, and NFC: a decomposed é is the composed one.
    let _jose = joined_tcp(server.tcp, "Jos\u{e9}", "dev");
    bob.expect_line("Jos\u{e9}:hello");
    let mut decomposed = WsClient::join(server.ws, "Jose\u{301}", "dev");
    decomposed.expect_error("name \"Jos\u{e9}\" is already taken in room \"dev\"", POLICY);
    let stats = server.wait_for("every impostor counted", |s| s.handshake_errors_for("name_taken") == 7);
    assert_eq!(stats.members, 2);
}

/// Zero-width and bidi characters make a name that looks like another (or
/// reorders the line around it): refused with the character's code point.
#[test]
fn invisible_characters_in_names_are_refused() {
    let server = TestServer::start();
    let _bob = joined_tcp(server.tcp, "Bob", "dev");
    for (name, code) in [
        ("Bob\u{200b}", "U+200B"),
        ("Bo\u{200d}b", "U+200D"),
        ("\u{202e}boB", "U+202E"),
        ("Bob\u{2066}", "U+2066"),
    ] {
        let mut client = TcpClient::join(server.tcp, name, "dev");
        let reason = format!("error: name contains an invisible or formatting character ({code})");
        assert_eq!(client.expect_error("invisible"), reason, "{name:?}");
    }
    let mut room = TcpClient::join(server.tcp, "Ola", "d\u{2029}ev");
    room.expect_error("room contains an invisible or formatting character (U+2029)");
    let stats = server.wait_for("only Bob left", |s| s.members == 1 && s.connections == 1);
    assert_eq!(stats.handshake_errors_for("invalid_name"), 4);
    assert_eq!(stats.handshake_errors_for("invalid_room"), 1);
}

/// Nothing that folds to `error` is a name, so no member's line can look
/// like the server's `error: ...`.
#[test]
fn nothing_folds_to_the_reserved_name() {
    let server = TestServer::start();
    for name in ["\u{435}rr\u{43e}r", "\u{ff45}\u{ff52}\u{ff52}\u{ff4f}\u{ff52}", "ERR\u{41e}R", "err or"] {
        let mut client = TcpClient::join(server.tcp, name, "dev");
        assert_eq!(
            client.expect_error("reserved"),
            r#"error: name "error" is reserved, and so is any name that looks like it"#,
            "{name:?}"
        );
    }
}

/// Two rooms whose names fold alike are one room, which keeps its first
/// spelling.
#[test]
fn rooms_that_fold_alike_are_one_room() {
    let server = TestServer::start();
    let mut mina = joined_tcp(server.tcp, "Mina", "Dev");
    let mut ola = joined_ws(server.ws, "Ola", "\u{ff24}\u{ff25}\u{ff36}");
    mina.expect_line("Ola:hello");
    let mut ada = joined_tcp(server.tcp, "Ada", "dev");
    mina.expect_line("Ada:hello");
    ola.expect_text("Ada:hello\n");
    ada.send_line("one room");
    mina.expect_line("Ada:one room");
    ola.expect_text("Ada:one room\n");
    assert_eq!(server.stats().rooms, 1);
}

// ----- text: no terminal injection ------------------------------------------

/// Carriage returns, escape sequences, C1 controls, line separators and
/// bidi overrides reach nobody as they were sent, on either transport.
#[test]
fn message_text_cannot_rewrite_a_terminal() {
    let server = TestServer::start();
    let mut tcp = joined_tcp(server.tcp, "Mina", "dev");
    let mut web = joined_ws(server.ws, "Ola", "dev");
    tcp.expect_line("Ola:hello");
    let attack =
        "hi\rBob:I owe you $100\u{1b}[2J\u{9b}2J\u{85}x\u{2028}error: server full\u{202e}olleh\u{2066}\ttab";
    let neutral = "hi\u{FFFD}Bob:I owe you $100\u{FFFD}[2J\u{FFFD}2J\u{FFFD}x\u{FFFD}error: server full\u{FFFD}olleh\u{FFFD}\ttab";
    tcp.send_line(attack);
    tcp.expect_line(&format!("Mina:{neutral}"));
    web.expect_text(&format!("Mina:{neutral}\n"));
    web.send_line(attack);
    web.expect_text(&format!("Ola:{neutral}\n"));
    tcp.expect_line(&format!("Ola:{neutral}"));
    // Invalid UTF-8 from TCP becomes U+FFFD for both.
    tcp.send_raw(b"bad \xff\xfe bytes\x07\n");
    tcp.expect_line("Mina:bad \u{FFFD}\u{FFFD} bytes\u{FFFD}");
    web.expect_text("Mina:bad \u{FFFD}\u{FFFD} bytes\u{FFFD}\n");
}

// ----- HTTP: no request desync ----------------------------------------------

/// Sends `request` to the WebSocket port and reads everything up to the
/// server's close (a reset after the reply counts as a close).
fn exchange(server: &TestServer, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(server.ws).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(request).unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(error) if error.kind() == io::ErrorKind::ConnectionReset => break,
            Err(error) => panic!("expected the server to answer and close, got {error} after {raw:?}"),
        }
    }
    String::from_utf8(raw).expect("HTTP replies are UTF-8")
}

/// Expects exactly one response, with `status_line` and `reason` as its
/// whole body, and the connection closed after it.
fn expect_refusal(server: &TestServer, request: &[u8], status_line: &str, reason: &str) {
    let reply = exchange(server, request);
    assert_eq!(reply.matches("HTTP/1.1 ").count(), 1, "one response only: {reply:?}");
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no end of head in {reply:?}"));
    assert!(head.starts_with(&format!("{status_line}\r\n")), "{reply:?}");
    assert!(format!("{head}\r\n").contains("\r\nConnection: close\r\n"), "{reply:?}");
    assert_eq!(body, format!("{reason}\n"), "{:?}", String::from_utf8_lossy(request));
}

/// A GET or HEAD whose body is another request: the body is never read as
/// a request (only one response comes back, a 400), whether the body is
/// framed by `Content-Length` or `Transfer-Encoding`.
#[test]
fn a_get_with_a_body_is_refused_and_its_body_never_served() {
    let server = TestServer::start();
    let smuggled = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    let request =
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{smuggled}", smuggled.len());
    let reason = format!("a GET request must not have a body (Content-Length: {})", smuggled.len());
    expect_refusal(&server, request.as_bytes(), "HTTP/1.1 400 Bad Request", &reason);
    let request =
        format!("HEAD / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}");
    let reason = "a HEAD request must not have a body (Transfer-Encoding)";
    expect_refusal(&server, request.as_bytes(), "HTTP/1.1 400 Bad Request", reason);
    let stats = server.wait_for("both refusals counted", |s| s.http_responses_for(400) == 2);
    assert_eq!(stats.http_responses_for(200), 0, "nothing was served");
}

/// Repeated or conflicting `Content-Length` and `Transfer-Encoding`: 400,
/// whatever the method, each with its own reason.
#[test]
fn conflicting_or_repeated_framing_headers_are_refused() {
    let server = TestServer::start();
    let cases = [
        ("Content-Length: 0\r\nContent-Length: 0\r\n", "more than one Content-Length header"),
        ("Content-Length: 4\r\ncontent-length: 40\r\n", "more than one Content-Length header"),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "more than one Transfer-Encoding header",
        ),
        (
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
            "both Content-Length and Transfer-Encoding: where the request ends is ambiguous",
        ),
        ("Content-Length: 4, 4\r\n", "invalid Content-Length header"),
    ];
    for method in ["GET", "POST"] {
        for (headers, reason) in cases {
            let request = format!("{method} /healthz HTTP/1.1\r\nHost: x\r\n{headers}\r\n0\r\n\r\n");
            expect_refusal(&server, request.as_bytes(), "HTTP/1.1 400 Bad Request", reason);
        }
    }
}

/// Obsolete line folding and a bare CR are refused, and the reason says so
/// (httparse alone calls them an invalid header name or value).
#[test]
fn line_folding_and_bare_cr_are_refused_with_their_own_reasons() {
    let server = TestServer::start();
    let folding = "obsolete line folding (a header line starting with a space or tab) is not allowed";
    let bare_cr = "a CR not followed by LF in the request head";
    let cases: [(&[u8], &str); 4] = [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", folding),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tContent-Length: 5\r\n\r\n", folding),
        (b"GET /healthz HTTP/1.1\r\nHost: x\rContent-Length: 5\r\n\r\n", bare_cr),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\r\n", bare_cr),
    ];
    for (request, reason) in cases {
        expect_refusal(&server, request, "HTTP/1.1 400 Bad Request", reason);
    }
}

/// `GET http://host/healthz` (absolute form, RFC 9112 §3.2.2) is the same
/// request as `GET /healthz`.
#[test]
fn absolute_form_targets_are_accepted() {
    let server = TestServer::start();
    let request =
        format!("GET http://{}/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", server.ws);
    let reply = exchange(&server, request.as_bytes());
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n") && reply.ends_with("\r\n\r\nok\n"), "{reply:?}");
    // And the WebSocket upgrade in absolute form.
    let upgrade = upgrade_request(server.ws, &format!("ws://{}/mychat", server.ws), Some(ORIGINAL_ORIGIN));
    let mut stream = TcpStream::connect(server.ws).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(upgrade.as_bytes()).unwrap();
    let mut head = [0; 12];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
}

/// A `Sec-WebSocket-Key` that is not 16 bytes in base64 is refused.
#[test]
fn an_invalid_websocket_key_is_refused() {
    let server = TestServer::start();
    let reason = "Sec-WebSocket-Key must be the base64 encoding of 16 bytes";
    for key in ["!!!!!!!!!!!!!!!!!!!!!!!!", "AAAAAAAAAAAAAAAAAAAAAAAA", "dGhlIHNhbXBsZSBub25jZR=="] {
        let request = upgrade_request(server.ws, "/mychat", Some(ORIGINAL_ORIGIN))
            .replace("dGhlIHNhbXBsZSBub25jZQ==", key);
        expect_refusal(&server, request.as_bytes(), "HTTP/1.1 400 Bad Request", reason);
    }
    // A real client's key still works.
    let _fine = joined_ws(server.ws, "Mina", "dev");
}

/// Two `Origin` headers: which one an origin check reads is a guess, so
/// the request is refused whatever they say.
#[test]
fn repeated_origin_headers_are_refused() {
    let config = Config { allowed_origins: vec![ORIGINAL_ORIGIN.to_owned()], ..Config::ephemeral() };
    let server = TestServer::with_config(config);
    let request = upgrade_request(server.ws, "/mychat", Some(ORIGINAL_ORIGIN))
        .replace("\r\n\r\n", "\r\nOrigin: http://evil.example\r\n\r\n");
    expect_refusal(&server, request.as_bytes(), "HTTP/1.1 403 Forbidden", "more than one Origin header");
    let request = upgrade_request(server.ws, "/mychat", Some("http://evil.example"))
        .replace("\r\n\r\n", &format!("\r\nOrigin: {ORIGINAL_ORIGIN}\r\n\r\n"));
    expect_refusal(&server, request.as_bytes(), "HTTP/1.1 403 Forbidden", "more than one Origin header");
}

// ----- flags: no crash from a value ------------------------------------------

/// Durations and sizes out of range stop the binary at start-up with exit
/// code 2 and the flag's range; `--handshake-timeout 1e19` and
/// `--shutdown-grace 1e19` used to start, and panic on deadline arithmetic.
#[test]
fn out_of_range_flags_exit_2_naming_the_flag() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["--handshake-timeout", "1e19"],
            "error: --handshake-timeout must be between 0.001 and 86400 seconds",
        ),
        (&["--shutdown-grace", "1e19"], "error: --shutdown-grace must be between 0 and 86400 seconds"),
        (
            &["--slow-consumer-timeout", "1e300"],
            "error: --slow-consumer-timeout must be between 0.001 and 86400",
        ),
        (&["--max-line", "0"], "error: --max-line must be between 1 and 16777216 bytes (got 0)"),
        (
            &["--ws-read-buffer", "18446744073709551615"],
            "error: --ws-read-buffer must be between 0 and 16777216",
        ),
    ];
    for (flags, message) in cases {
        let mut args = vec!["-tcp", "127.0.0.1:0", "-ws", "127.0.0.1:0"];
        args.extend_from_slice(flags);
        let mut machat = Machat::start(&args);
        let status = machat.wait_exit();
        assert_eq!(status.code(), Some(2), "{flags:?}: {status}; log: {:#?}", machat.log);
        assert!(machat.log.iter().any(|line| line.starts_with(message)), "{flags:?}: {:#?}", machat.log);
    }
}

/// The same checks hold for the library: `Server::bind` refuses the
/// configuration before binding anything.
#[test]
fn out_of_range_configs_are_refused_by_bind() {
    let cases = [
        (Config { handshake_timeout: Duration::MAX, ..Config::ephemeral() }, "--handshake-timeout"),
        (Config { shutdown_grace: Duration::from_secs_f64(1e19), ..Config::ephemeral() }, "--shutdown-grace"),
        (Config { ws_ping_interval: Duration::MAX, ..Config::ephemeral() }, "--ws-ping-interval"),
        (Config { tcp_keepalive: Duration::MAX, ..Config::ephemeral() }, "--tcp-keepalive"),
        (Config { max_line: usize::MAX, ..Config::ephemeral() }, "--max-line"),
        (Config { ws_write_buffer: usize::MAX, ..Config::ephemeral() }, "--ws-write-buffer"),
    ];
    for (config, flag) in cases {
        let error = Server::bind(config).err().expect("refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(error.to_string().starts_with(flag), "{error}");
    }
}

// ----- the smaller holes -----------------------------------------------------

/// The shutdown summary counts the connections that still had output when
/// they were closed, and those bytes: here a member that never reads,
/// closed at the end of the grace period with megabytes queued. (It used to
/// say 0 and 0: the connection was closed by its deadline, dropping its
/// output, before the summary looked.)
#[test]
fn the_shutdown_summary_counts_what_was_cut_and_unsent() {
    // 11 MB: well past what the kernel buffers for a reader that does not
    // read (4 MiB of send buffer here), under the flow-control mark.
    const LINES: usize = 100_000;
    let mut machat = Machat::start(&[
        "-tcp",
        "127.0.0.1:0",
        "-ws",
        "127.0.0.1:0",
        "--max-pending",
        "67108864",
        "--shutdown-grace",
        "0.5",
    ]);
    let (tcp, _) = machat.addresses();
    // A member with a small receive window that never reads.
    let mut stalled = TcpClient::from_stream(connect_with_buffers(tcp, Some(4096), None));
    stalled.send_raw(handshake("stalled", "dev").as_bytes());
    stalled.send_line("hello");
    stalled.expect_line("stalled:hello");
    let mut sender = joined_tcp(tcp, "sender", "dev");
    let line = |k: usize| format!("{k:06} {}", "x".repeat(100));
    let mut writer = sender.stream.try_clone().unwrap();
    let echoes = std::thread::spawn(move || {
        for k in 0..LINES {
            sender.expect_line(&format!("sender:{}", line(k)));
        }
        sender
    });
    let all: String = (0..LINES).map(|k| line(k) + "\n").collect();
    writer.write_all(all.as_bytes()).unwrap();
    // Every line has been echoed, so every line is queued for `stalled`.
    let _sender = echoes.join().unwrap();

    machat.signal(libc::SIGTERM);
    let status = machat.wait_exit();
    assert!(status.success(), "{status}; log: {:#?}", machat.log);
    let summary = machat.wait_log("shutdown complete: ");
    let (cut, unsent) = summary
        .split("; ")
        .nth(1)
        .and_then(|tail| {
            let (cut, rest) = tail.split_once(" connections cut with ")?;
            Some((cut.parse::<u64>().ok()?, rest.strip_suffix(" bytes unsent")?.parse::<u64>().ok()?))
        })
        .unwrap_or_else(|| panic!("no cut count in {summary:?}"));
    assert_eq!(cut, 1, "{summary}");
    let queued = (LINES * "sender:000000 \n".len() + LINES * 100) as u64;
    assert!(unsent > 1 << 20 && unsent <= queued, "{unsent} bytes unsent of {queued} queued: {summary}");
    drop(stalled);
}

/// More than 64 header lines get 431 with a reason naming that limit (the
/// head is far under 8 KiB).
#[test]
fn more_than_64_header_lines_get_431_naming_that_limit() {
    let server = TestServer::start();
    let headers: String = (0..65).map(|i| format!("X-{i}: y\r\n")).collect();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
    assert!(request.len() < 1024);
    expect_refusal(
        &server,
        request.as_bytes(),
        "HTTP/1.1 431 Request Header Fields Too Large",
        "more than 64 header lines",
    );
}

/// A WebSocket protocol error says its cause once.
#[test]
fn websocket_protocol_errors_say_their_cause_once() {
    let server = TestServer::start();
    let mut client = joined_ws(server.ws, "Mina", "dev");
    let mut frame = masked_frame(true, opcode::TEXT, b"hi\n");
    frame[0] |= 0x40; // RSV1, with no extension negotiated
    client.send_raw(&frame);
    let text = client.expect_error("", PROTOCOL_ERROR);
    assert_eq!(text, "error: WebSocket protocol error: Reserved bits are non-zero\n");
}

/// Fields other than `name` and `room` are skipped without being built: a
/// number too large for a float, or nesting deeper than a JSON parser's
/// recursion limit, cannot fail the handshake.
#[test]
fn ignored_fields_cannot_fail_the_handshake() {
    let server = TestServer::start();
    let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
    let huge = format!("1{}e999999", "0".repeat(400));
    let objects = format!("{}true{}", r#"{"a":"#.repeat(200), "}".repeat(200));
    let joined = format!(r#"{{"n":{huge},"deep":{deep},"name":"Mina","o":{objects},"room":"dev"}}"#);
    assert!(joined.len() < 4096);
    let mut tcp = TcpClient::connect(server.tcp);
    tcp.send_raw(joined.as_bytes());
    tcp.send_line("in");
    tcp.expect_line("Mina:in");
    let mut web = WsClient::connect(server.ws);
    web.send_text(&joined.replace("Mina", "Ola"));
    web.send_line("in too");
    web.expect_text("Ola:in too\n");
    tcp.expect_line("Ola:in too");
}
