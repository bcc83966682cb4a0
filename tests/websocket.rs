//! The WebSocket transport over real sockets: a server in-process on
//! ephemeral ports, tungstenite's blocking client for well-behaved peers,
//! and hand-made frames and HTTP requests for everything a well-behaved
//! client would never send. Every read is bounded by `common::TIMEOUT`;
//! waits are on events (a message, a close, a published counter), never
//! on the clock.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{
    HttpReply, ORIGINAL_ORIGIN, TIMEOUT, TcpClient, TestServer, WsClient, handshake, joined_tcp, joined_ws,
    masked_frame, opcode, upgrade_request,
};
use machat::Config;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role};

const POLICY: u16 = 1008;
const TOO_BIG: u16 = 1009;
const INVALID_DATA: u16 = 1007;
const GOING_AWAY: u16 = 1001;

// ----- joining and chatting ------------------------------------------------

#[test]
fn ws_join_and_echo() {
    let server = TestServer::start();
    let mut mina = WsClient::join(server.ws, "Mina", "dev");
    mina.send_line("hello, world");
    mina.expect_text("Mina:hello, world\n");
    let stats = server.wait_for("one member", |s| s.members == 1 && s.joins == 1);
    assert_eq!(stats.http_responses_for(101), 1);
    assert_eq!(stats.ws_connections, 1);
}

#[test]
fn ws_and_tcp_members_of_one_room_get_identical_content() {
    let server = TestServer::start();
    let mut ws = joined_ws(server.ws, "Wendy", "dev");
    let mut tcp = joined_tcp(server.tcp, "Tom", "dev");
    ws.expect_text("Tom:hello\n");
    let mut other_room = joined_ws(server.ws, "Wendy", "elsewhere");

    // WebSocket to TCP: the TCP line plus its `\n` is the WebSocket payload.
    ws.send_line("from the browser, ünïcødé ✓");
    let over_ws = ws.read_text();
    let over_tcp = tcp.read_line();
    assert_eq!(over_ws, "Wendy:from the browser, ünïcødé ✓\n");
    assert_eq!(format!("{over_tcp}\n"), over_ws);

    // TCP to WebSocket.
    tcp.send_line("from the terminal");
    let over_tcp = tcp.read_line();
    let over_ws = ws.read_text();
    assert_eq!(over_tcp, "Tom:from the terminal");
    assert_eq!(over_ws, format!("{over_tcp}\n"));

    // The member of another room (same name: names are per room) saw none
    // of it: the next thing it receives is its own message.
    other_room.send_line("only here");
    other_room.expect_text("Wendy:only here\n");
}

/// A client may send its first messages right behind the handshake; when
/// they arrive in the same read, none may be held back or lost.
#[test]
fn messages_in_the_same_write_as_the_handshake_are_delivered() {
    let server = TestServer::start();
    let mut tcp = joined_tcp(server.tcp, "Tom", "dev");
    let mut ws = WsClient::connect(server.ws);
    let mut bytes = masked_frame(true, opcode::TEXT, handshake("Mina", "dev").as_bytes());
    bytes.extend(masked_frame(true, opcode::TEXT, b"first\n"));
    bytes.extend(masked_frame(true, opcode::TEXT, b"second\n"));
    ws.send_raw(&bytes);
    ws.expect_text("Mina:first\n");
    ws.expect_text("Mina:second\n");
    tcp.expect_line("Mina:first");
    tcp.expect_line("Mina:second");
}

/// The original Go client (golang.org/x/net/websocket) byte for byte: the
/// handshake as one text message with no newline, each line as `text\n`,
/// and everything it reads treated as one byte stream split at `\n`.
#[test]
fn original_client_framing() {
    let server = TestServer::start();
    let mut go = WsClient::connect(server.ws);
    go.send_text(r#"{"name":"Gopher","room":"lounge"}"#);
    let mut tcp = TcpClient::join(server.tcp, "Tux", "lounge");
    server.wait_for("two members", |s| s.members == 2);

    // Each message is seen by the TCP member before the next is sent, so
    // the order is known.
    go.send_text("first line\n");
    tcp.expect_line("Gopher:first line");
    tcp.send_line("from tcp");
    tcp.expect_line("Tux:from tcp");
    go.send_text("second line\n");
    tcp.expect_line("Gopher:second line");

    // Every server message is one text message ending in exactly one `\n`,
    // so the Go client's stream splits into exactly these lines.
    let mut stream = String::new();
    for _ in 0..3 {
        let text = go.read_text();
        assert!(text.ends_with('\n'), "{text:?} does not end in a newline");
        assert_eq!(text.matches('\n').count(), 1, "{text:?} holds more than one line");
        stream.push_str(&text);
    }
    let lines: Vec<&str> = stream.split_terminator('\n').collect();
    assert_eq!(lines, ["Gopher:first line", "Tux:from tcp", "Gopher:second line"]);
}

#[test]
fn multi_line_message_becomes_several_chat_messages() {
    let server = TestServer::start();
    let mut ws = joined_ws(server.ws, "Mina", "dev");
    let mut tcp = joined_tcp(server.tcp, "Tom", "dev");
    ws.expect_text("Tom:hello\n");

    // Empty lines are dropped, a trailing `\r` is removed, and the last
    // line needs no `\n`.
    ws.send_text("one\ntwo\r\n\n\nthree");
    for expected in ["Mina:one\n", "Mina:two\n", "Mina:three\n"] {
        ws.expect_text(expected);
        assert_eq!(format!("{}\n", tcp.read_line()), expected);
    }
    // No empty message was delivered: the next one is the next one sent.
    ws.send_line("four");
    ws.expect_text("Mina:four\n");
    tcp.expect_line("Mina:four");
    let stats = server.wait_for("every message counted", |s| s.messages_in >= 6);
    assert_eq!(stats.messages_in, 6, "two hellos, three lines and one more");
}

#[test]
fn binary_message_that_is_utf8_is_chat_text() {
    let server = TestServer::start();
    let mut ws = joined_ws(server.ws, "Mina", "dev");
    let mut tcp = joined_tcp(server.tcp, "Tom", "dev");
    ws.expect_text("Tom:hello\n");

    ws.send(Message::binary("binary but UTF-8 ✓\nsecond".as_bytes().to_vec()));
    // Delivered as text messages, like any other chat message.
    ws.expect_text("Mina:binary but UTF-8 ✓\n");
    ws.expect_text("Mina:second\n");
    tcp.expect_line("Mina:binary but UTF-8 ✓");
    tcp.expect_line("Mina:second");
}

#[test]
fn binary_message_that_is_not_utf8_gets_1007() {
    let server = TestServer::start();
    let mut ws = joined_ws(server.ws, "Mina", "dev");
    let mut tcp = joined_tcp(server.tcp, "Tom", "dev");
    ws.expect_text("Tom:hello\n");

    ws.send(Message::binary(b"bad \xff\xfe bytes\n".to_vec()));
    ws.expect_error("not valid UTF-8", INVALID_DATA);
    server.wait_for("Mina to leave", |s| s.members == 1);
    // Nothing of the bad message reached the room.
    tcp.send_line("still here");
    tcp.expect_line("Tom:still here");
}

#[test]
fn fragmented_text_is_reassembled_with_a_ping_between_fragments() {
    let server = TestServer::start();
    let mut ws = joined_ws(server.ws, "Mina", "dev");
    let mut tcp = joined_tcp(server.tcp, "Tom", "dev");
    ws.expect_text("Tom:hello\n");

    // First fragment, then a ping in the middle of the message: the pong
    // comes back before the message is complete.
    let mut bytes = masked_frame(false, opcode::TEXT, b"frag");
    bytes.extend(masked_frame(true, opcode::PING, b"between"));
    ws.send_raw(&bytes);
    assert_eq!(ws.read(), Message::Pong(b"between".to_vec().into()));

    // The rest, with the continuation split across two writes and the
    // UTF-8 of `é` split across two frames.
    let e_acute = "é".as_bytes();
    let mut middle = b"men".to_vec();
    middle.push(e_acute[0]);
    ws.send_raw(&masked_frame(false, opcode::CONTINUATION, &middle));
    let mut last = vec![e_acute[1]];
    last.extend_from_slice(b"ted\n");
    let last = masked_frame(true, opcode::CONTINUATION, &last);
    ws.send_raw(&last[..3]);
    ws.send_raw(&last[3..]);

    ws.expect_text("Mina:fragmenéted\n");
    tcp.expect_line("Mina:fragmenéted");
}

#[test]
fn oversize_message_gets_error_then_1009() {
    let config = Config { max_line: 64, ..Config::ephemeral() };
    let server = TestServer::with_config(config);
    let mut tcp = joined_tcp(server.tcp, "Tom", "dev");

    // Exactly max_line bytes is fine.
    let mut fits = joined_ws(server.ws, "Fits", "dev");
    tcp.expect_line("Fits:hello");
    let at_limit = format!("{}\n", "a".repeat(63));
    assert_eq!(at_limit.len(), 64);
    fits.send_text(&at_limit);
    fits.expect_text(&format!("Fits:{at_limit}"));
    tcp.expect_line(&format!("Fits:{}", "a".repeat(63)));

    // One byte more, in one frame.
    let mut big = joined_ws(server.ws, "Big", "dev");
    tcp.expect_line("Big:hello");
    big.send_text(&"b".repeat(65));
    let error = big.expect_error("larger than 64 bytes", TOO_BIG);
    assert_eq!(error, "error: message larger than 64 bytes\n");

    // Over the limit only when the fragments are added up.
    let mut split = joined_ws(server.ws, "Split", "dev");
    tcp.expect_line("Split:hello");
    let mut frames = masked_frame(false, opcode::TEXT, &[b'c'; 40]);
    frames.extend(masked_frame(true, opcode::CONTINUATION, &[b'c'; 40]));
    split.send_raw(&frames);
    split.expect_error("larger than 64 bytes", TOO_BIG);

    // Nothing of either reached the room; the member with the small
    // message is still in it.
    fits.send_line("after");
    tcp.expect_line("Fits:after");
    server.wait_for("two members left", |s| s.members == 2);
}

#[test]
fn invalid_utf8_text_gets_error_then_1007() {
    let server = TestServer::start();
    let mut ws = joined_ws(server.ws, "Mina", "dev");
    let mut tcp = joined_tcp(server.tcp, "Tom", "dev");
    ws.expect_text("Tom:hello\n");

    ws.send_raw(&masked_frame(true, opcode::TEXT, b"ok line\nbad \xc3\x28 line\n"));
    ws.expect_error("not valid UTF-8", INVALID_DATA);
    server.wait_for("Mina to leave", |s| s.members == 1);
    tcp.send_line("next");
    tcp.expect_line("Tom:next");
}

#[test]
fn ping_gets_pong_with_the_same_payload() {
    let server = TestServer::start();
    // Before the handshake message...
    let mut ws = WsClient::connect(server.ws);
    ws.send(Message::Ping(b"before joining".to_vec().into()));
    assert_eq!(ws.read(), Message::Pong(b"before joining".to_vec().into()));
    // ...and as a member, with an empty and a maximal control payload.
    ws.send_text(&handshake("Mina", "dev"));
    for payload in [Vec::new(), b"are you there?".to_vec(), vec![0xa5; 125]] {
        ws.send(Message::Ping(payload.clone().into()));
        assert_eq!(ws.read(), Message::Pong(payload.into()));
    }
    ws.send_line("still a member");
    ws.expect_text("Mina:still a member\n");
}

#[test]
fn client_close_gets_a_close_reply_and_the_member_leaves_at_once() {
    let server = TestServer::start();
    let mut tcp = joined_tcp(server.tcp, "Tom", "dev");
    let mut ws = joined_ws(server.ws, "Mina", "dev");
    tcp.expect_line("Mina:hello");

    let bye = CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
    ws.ws.close(Some(bye)).expect("send Close");
    // The server answers with a Close of its own (echoing the code).
    ws.expect_close(1000);
    // The TCP connection is still open (this client has not dropped it),
    // yet the member is gone and its name is free again.
    server.wait_for("Mina to leave", |s| s.members == 1);
    let mut again = joined_ws(server.ws, "Mina", "dev");
    tcp.expect_line("Mina:hello");
    again.send_line("back");
    tcp.expect_line("Mina:back");
    // The server then closes the old connection.
    ws.expect_closed();
}

// ----- shutdown --------------------------------------------------------------

#[test]
fn shutdown_flushes_every_queued_message_then_sends_close_1001() {
    // A grace long enough for a debug build to flush megabytes.
    let config = Config { max_pending: 64 << 20, shutdown_grace: TIMEOUT, ..Config::ephemeral() };
    let server = TestServer::with_config(config);
    let mut reader = WsClient::join(server.ws, "reader", "news");
    reader.send_line("hello");
    reader.expect_text("reader:hello\n");
    // A client that upgraded but has not joined also hears the Close.
    let mut lurker = WsClient::connect(server.ws);

    let mut sender = TcpClient::join(server.tcp, "sender", "news");
    let mut echo = sender.stream.try_clone().unwrap();
    let drain = std::thread::spawn(move || std::io::copy(&mut echo, &mut std::io::sink()));

    // Send until the server holds output it could not write yet (past
    // what the kernel buffers take): the reader is not reading, so that
    // output is queued for it.
    let filler = "x".repeat(16 * 1024);
    let mut sent = 0u64;
    loop {
        let mut batch = String::new();
        for _ in 0..10 {
            batch.push_str(&format!("{sent:06} {filler}\n"));
            sent += 1;
        }
        sender.send_raw(batch.as_bytes());
        let stats = server.wait_for("the batch to be read", |s| s.messages_in == 1 + sent);
        if stats.queued_bytes >= 256 * 1024 {
            break;
        }
        assert!(sent < 4000, "the server never had to queue output for the reader");
    }

    server.handle.shutdown();
    for i in 0..sent {
        assert_eq!(reader.read_text(), format!("sender:{i:06} {filler}\n"), "message {i}");
    }
    let reason = reader.expect_close(GOING_AWAY);
    assert!(reason.contains("shutting down"), "close reason {reason:?}");
    reader.expect_closed();
    lurker.expect_close(GOING_AWAY);
    lurker.expect_closed();

    drop((reader, lurker, sender));
    server.stop().expect("the server stops cleanly");
    drain.join().unwrap().expect("the sender's echo drains until the server closes");
}

// ----- handshake errors ------------------------------------------------------

#[test]
fn handshake_errors_get_error_text_then_1008() {
    let server = TestServer::start();

    let mut bad_json = WsClient::connect(server.ws);
    bad_json.send_text(r#"{"name":"Mina","room":"#);
    bad_json.expect_error("handshake", POLICY);

    let mut not_object = WsClient::connect(server.ws);
    not_object.send_text("hello there");
    not_object.expect_error("JSON object", POLICY);

    let mut missing = WsClient::connect(server.ws);
    missing.send_text(r#"{"name":"Mina"}"#);
    missing.expect_error(r#"missing the "room" field"#, POLICY);

    let mut bad_name = WsClient::connect(server.ws);
    bad_name.send_text(r#"{"name":"Mi:na","room":"dev"}"#);
    bad_name.expect_error("name contains ':'", POLICY);

    // A name held over TCP is taken for WebSocket too, and the other way.
    let _tom = joined_tcp(server.tcp, "Tom", "dev");
    let mut taken = WsClient::join(server.ws, "Tom", "dev");
    taken.expect_error(r#"name "Tom" is already taken in room "dev""#, POLICY);
    let _mina = joined_ws(server.ws, "Mina", "dev");
    let mut taken_tcp = TcpClient::join(server.tcp, "Mina", "dev");
    taken_tcp.expect_error("already taken");

    let stats = server.wait_for("errors counted", |s| s.handshake_errors_for("name_taken") == 2);
    assert_eq!(stats.handshake_errors_for("malformed"), 2);
    assert_eq!(stats.handshake_errors_for("missing_field"), 1);
    assert_eq!(stats.handshake_errors_for("invalid_name"), 1);
    assert_eq!(stats.members, 2);
}

#[test]
fn handshake_message_over_4_kib_gets_1009() {
    let server = TestServer::start();

    // Just under the limit, padded with an ignored field: accepted.
    let padded = |total: usize| {
        let base = r#"{"name":"Mina","room":"dev","pad":""}"#.len();
        format!(r#"{{"name":"Mina","room":"dev","pad":"{}"}}"#, "p".repeat(total - base))
    };
    let mut fits = WsClient::connect(server.ws);
    fits.send_text(&padded(4096));
    fits.send_line("in");
    fits.expect_text("Mina:in\n");

    let mut big = WsClient::connect(server.ws);
    big.send_text(&padded(4097));
    big.expect_error("handshake is larger than 4096 bytes", TOO_BIG);
    let stats = server.wait_for("the error counted", |s| s.handshake_errors_for("too_large") == 1);
    assert_eq!(stats.members, 1);
}

// ----- HTTP on the WebSocket port ----------------------------------------

/// Sends `request` to the WebSocket port and reads the reply up to the
/// server's close.
fn http_exchange(server: &TestServer, request: &[u8]) -> HttpReply {
    let mut stream = TcpStream::connect(server.ws).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(request).unwrap();
    HttpReply::read_from(&mut stream)
}

fn assert_reply(reply: &HttpReply, status_line: &str, body_contains: &str) {
    assert_eq!(reply.status_line, status_line, "{reply:#?}");
    assert!(reply.body.contains(body_contains), "body {:?} should say {body_contains:?}", reply.body);
    assert_eq!(reply.header("Content-Length"), Some(reply.body.len().to_string().as_str()), "{reply:#?}");
    assert_eq!(reply.header("Connection"), Some("close"), "{reply:#?}");
}

#[test]
fn http_other_path_gets_404() {
    let server = TestServer::start();
    let request = upgrade_request(server.ws, "/elsewhere", Some(ORIGINAL_ORIGIN));
    let reply = http_exchange(&server, request.as_bytes());
    assert_reply(&reply, "HTTP/1.1 404 Not Found", "no such path: /elsewhere");
    server.wait_for("the 404 counted", |s| s.http_responses_for(404) == 1);
}

#[test]
fn http_garbage_and_plain_get_get_400() {
    let server = TestServer::start();

    let reply =
        http_exchange(&server, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all\r\n\r\n");
    assert_reply(&reply, "HTTP/1.1 400 Bad Request", "not a valid HTTP request");

    // The original TCP client pointed at the WebSocket port: its handshake
    // has no newline, and it still gets an answer at once.
    let reply = http_exchange(&server, handshake("Mina", "dev").as_bytes());
    assert_reply(&reply, "HTTP/1.1 400 Bad Request", "not a valid HTTP request");

    let plain_get = format!("GET /mychat HTTP/1.1\r\nHost: {}\r\n\r\n", server.ws);
    let reply = http_exchange(&server, plain_get.as_bytes());
    assert_reply(&reply, "HTTP/1.1 400 Bad Request", "/mychat takes WebSocket upgrade requests only");

    server.wait_for("three 400s counted", |s| s.http_responses_for(400) == 3);
}

#[test]
fn http_other_method_gets_405() {
    let server = TestServer::start();
    let request = format!("POST /mychat HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\r\n", server.ws);
    let reply = http_exchange(&server, request.as_bytes());
    assert_reply(&reply, "HTTP/1.1 405 Method Not Allowed", "only GET is allowed");
    assert_eq!(reply.header("Allow"), Some("GET"));
}

#[test]
fn http_headers_over_8_kib_get_431() {
    let server = TestServer::start();
    let request = upgrade_request(server.ws, "/mychat", Some(ORIGINAL_ORIGIN));
    let filler = format!("X-Filler: {}\r\n", "f".repeat(9000));
    let request = request.replacen("\r\n", &format!("\r\n{filler}"), 1);
    let reply = http_exchange(&server, request.as_bytes());
    assert_reply(&reply, "HTTP/1.1 431 Request Header Fields Too Large", "larger than 8192 bytes");
}

#[test]
fn origin_outside_allowed_origins_gets_403_and_an_allowed_origin_gets_101() {
    let config = Config { allowed_origins: vec![ORIGINAL_ORIGIN.to_owned()], ..Config::ephemeral() };
    let server = TestServer::with_config(config);

    let request = upgrade_request(server.ws, "/mychat", Some("http://evil.example"));
    let reply = http_exchange(&server, request.as_bytes());
    assert_reply(&reply, "HTTP/1.1 403 Forbidden", "origin http://evil.example is not allowed");

    // tungstenite's client sees the refusal too.
    match WsClient::connect_with_origin(server.ws, Some("http://evil.example")) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        Err(error) => panic!("expected HTTP 403, got {error}"),
        Ok(_) => panic!("expected HTTP 403, got an upgrade"),
    }

    let mut allowed = WsClient::connect_with_origin(server.ws, Some(ORIGINAL_ORIGIN)).expect("101");
    allowed.send_text(&handshake("Mina", "dev"));
    allowed.send_line("let in");
    allowed.expect_text("Mina:let in\n");
    let stats = server.wait_for("responses counted", |s| s.http_responses_for(101) == 1);
    assert_eq!(stats.http_responses_for(403), 2);
}

// ----- fairness and scale ----------------------------------------------------

/// Reads an HTTP response head byte by byte, so nothing after it is taken.
fn read_response_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!("connection ended inside the response head ({other:?}) after {head:?}"),
        }
    }
    String::from_utf8(head).unwrap()
}

#[test]
fn upgrade_sent_one_byte_at_a_time_does_not_hold_up_other_clients() {
    let server = TestServer::start();
    let mut ana = joined_ws(server.ws, "Ana", "lobby");
    let mut ben = joined_tcp(server.tcp, "Ben", "lobby");
    ana.expect_text("Ben:hello\n");

    let mut slow = TcpStream::connect(server.ws).unwrap();
    slow.set_nodelay(true).unwrap();
    slow.set_read_timeout(Some(TIMEOUT)).unwrap();
    let request = upgrade_request(server.ws, "/mychat", Some(ORIGINAL_ORIGIN));
    let bytes = request.as_bytes();
    for (i, byte) in bytes.iter().enumerate() {
        slow.write_all(std::slice::from_ref(byte)).unwrap();
        // Only so the byte arrives on its own and is read on its own.
        std::thread::sleep(Duration::from_millis(1));
        // While the request is incomplete, the others' messages go round:
        // each is delivered to both before the next byte is sent.
        let text = format!("message {i}");
        let from = if i % 2 == 0 {
            ana.send_line(&text);
            "Ana"
        } else {
            ben.send_line(&text);
            "Ben"
        };
        ana.expect_text(&format!("{from}:{text}\n"));
        ben.expect_line(&format!("{from}:{text}"));
        if i + 1 < bytes.len() {
            slow.set_nonblocking(true).unwrap();
            let mut probe = [0u8; 1];
            let early = slow.read(&mut probe);
            assert!(
                matches!(&early, Err(error) if error.kind() == ErrorKind::WouldBlock),
                "answered before the request was complete: {early:?}"
            );
            slow.set_nonblocking(false).unwrap();
        }
    }
    let head = read_response_head(&mut slow);
    assert!(head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{head:?}");

    // The trickled connection is a working WebSocket in the same room.
    let mut cleo = tungstenite::WebSocket::from_raw_socket(slow, Role::Client, None);
    cleo.send(Message::text(handshake("Cleo", "lobby"))).unwrap();
    cleo.send(Message::text("made it\n")).unwrap();
    assert_eq!(cleo.read().unwrap(), Message::text("Cleo:made it\n"));
    ana.expect_text("Cleo:made it\n");
    ben.expect_line("Cleo:made it");
}

#[test]
fn five_hundred_ws_members_receive_every_message_in_order() {
    const MEMBERS: usize = 500;
    const PER_SENDER: usize = 20;
    // Both ends of every connection live in this process, beside the
    // other tests running in parallel.
    let limit = rlimit::increase_nofile_limit(u64::MAX).expect("raise the open-file limit");
    assert!(limit >= 4 * MEMBERS as u64, "open-file limit {limit} is too low for this test");
    let server = TestServer::start();
    let mut members: Vec<WsClient> =
        (0..MEMBERS).map(|i| WsClient::join(server.ws, &format!("m{i}"), "big")).collect();
    server.wait_for("every WebSocket member to join", |s| s.members == MEMBERS as u64);
    let mut tcp = TcpClient::join(server.tcp, "tcp", "big");
    server.wait_for("the TCP member to join", |s| s.members == MEMBERS as u64 + 1);

    // Three senders, interleaved: one TCP member and two WebSocket members.
    for i in 0..PER_SENDER {
        tcp.send_line(&format!("t{i}"));
        members[0].send_line(&format!("a{i}"));
        members[MEMBERS - 1].send_line(&format!("b{i}"));
    }
    let total = 3 * PER_SENDER;

    // The TCP member's view is the reference: each sender's messages in
    // the order sent...
    let reference: Vec<String> = (0..total).map(|_| format!("{}\n", tcp.read_line())).collect();
    for (sender, prefix) in [("tcp", 't'), ("m0", 'a'), (format!("m{}", MEMBERS - 1).as_str(), 'b')] {
        let own: Vec<&String> = reference.iter().filter(|m| m.starts_with(&format!("{sender}:"))).collect();
        let expected: Vec<String> = (0..PER_SENDER).map(|i| format!("{sender}:{prefix}{i}\n")).collect();
        assert_eq!(own, expected.iter().collect::<Vec<_>>(), "{sender}'s messages");
    }
    // ...and every WebSocket member sees exactly the same sequence.
    for (index, member) in members.iter_mut().enumerate() {
        for (position, expected) in reference.iter().enumerate() {
            assert_eq!(&member.read_text(), expected, "member m{index}, message {position}");
        }
    }
    let stats = server.wait_for("every delivery counted", |s| s.messages_in == total as u64);
    assert_eq!(stats.deliveries, (total * (MEMBERS + 1)) as u64);
    assert_eq!(stats.slow_consumers, 0);
}

// ----- handshake timeout ---------------------------------------------------

#[test]
fn handshake_timeout_counts_from_accept_for_a_client_that_never_completes_the_upgrade() {
    let config = Config { handshake_timeout: Duration::from_millis(300), ..Config::ephemeral() };
    let server = TestServer::with_config(config);

    // Connects and says nothing: closed at the deadline, with a 408 or
    // with nothing at all (it asked nothing).
    let mut silent = TcpStream::connect(server.ws).unwrap();
    silent.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut said = Vec::new();
    match silent.read_to_end(&mut said) {
        Ok(_) => {}
        Err(error) if error.kind() == ErrorKind::ConnectionReset => {}
        Err(error) => panic!("a silent client must be closed at the deadline: {error}"),
    }
    let said = String::from_utf8(said).unwrap();
    assert!(said.is_empty() || said.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{said:?}");

    // Keeps sending, one byte every 50 ms: fresh bytes do not push the
    // deadline back, so the server answers long before the request ends.
    let mut slow = TcpStream::connect(server.ws).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let request = upgrade_request(server.ws, "/mychat", None);
    let mut answer = Vec::new();
    let mut sent = 0;
    let started = std::time::Instant::now();
    while answer.is_empty() {
        assert!(started.elapsed() < TIMEOUT, "no answer to a request that never completes");
        assert!(sent < request.len(), "the whole request went out before any timeout");
        if slow.write_all(&request.as_bytes()[sent..=sent]).is_ok() {
            sent += 1;
        }
        let mut chunk = [0u8; 1024];
        match slow.read(&mut chunk) {
            Ok(0) => panic!("closed without an answer after {sent} bytes"),
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(error) => panic!("connection failed before an answer: {error}"),
        }
    }
    slow.set_read_timeout(Some(TIMEOUT)).unwrap();
    slow.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{answer:?}");
    assert!(answer.ends_with("request not received in time\n"), "{answer:?}");

    server.wait_for("the 408 counted", |s| s.http_responses_for(408) >= 1);
    drop((silent, slow));
    server.wait_for("both connections closed", |s| s.connections == 0);
}

#[test]
fn handshake_timeout_applies_after_the_upgrade_too() {
    let config = Config { handshake_timeout: Duration::from_millis(300), ..Config::ephemeral() };
    let server = TestServer::with_config(config);
    // Upgrades, then starts a handshake message that never ends.
    let mut ws = WsClient::connect(server.ws);
    ws.send_raw(&masked_frame(false, opcode::TEXT, br#"{"name":"#));
    ws.expect_error("handshake timed out", POLICY);
    server.wait_for("the timeout counted", |s| s.handshake_errors_for("timeout") == 1);
}
