//! The TCP transport over real sockets: a server in this process on an
//! ephemeral port, and clients that connect and talk as real ones do
//! (PROTOCOL §2–§6, §8).
//!
//! Every wait is bounded: reads have a timeout, and server-side events
//! (a byte read, a member leaving) are awaited on the live counters.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{TIMEOUT, TcpClient, TestServer, handshake, joined_tcp};
use machat::Config;

/// A small line limit, so long lines are cheap to send.
const MAX_LINE: usize = 1024;

fn small_lines() -> Config {
    Config { max_line: MAX_LINE, ..Config::ephemeral() }
}

/// Sends `bytes` and waits until the server has read all of them, so the
/// next send arrives in a read of its own.
fn send_and_wait_read(server: &TestServer, client: &mut TcpClient, bytes: &[u8]) {
    let before = server.stats().bytes_in;
    client.send_raw(bytes);
    let target = before + bytes.len() as u64;
    server.wait_for("the server to read what was sent", |s| s.bytes_in >= target);
}

fn read_lines(client: &mut TcpClient, count: usize) -> Vec<String> {
    (0..count).map(|_| client.read_line()).collect()
}

// ----- handshake framing -------------------------------------------------

/// The handshake (with and without a typed newline) cut at every byte
/// boundary, the two parts arriving in separate reads: the join works and
/// the lines after it arrive whole, with no spurious message.
#[test]
fn handshake_split_at_every_byte_boundary() {
    let server = TestServer::start();
    for (variant, tail) in [("A", ""), ("B", "  \r\n")] {
        for split in 1.. {
            // Fixed-width names keep the byte stream the same length for
            // every split while each connection gets a name of its own.
            let name = format!("{variant}{split:03}");
            let stream = format!("{}{tail}first\nsecond\n", handshake(&name, "dev"));
            if split >= stream.len() {
                break;
            }
            let mut client = TcpClient::connect(server.tcp);
            send_and_wait_read(&server, &mut client, &stream.as_bytes()[..split]);
            client.send_raw(&stream.as_bytes()[split..]);
            assert_eq!(
                read_lines(&mut client, 2),
                [format!("{name}:first"), format!("{name}:second")],
                "split at byte {split} of {stream:?}"
            );
        }
    }
    let stats = server.wait_idle();
    assert_eq!(stats.handshake_errors.iter().sum::<u64>(), 0);
}

/// Every byte in a read of its own: handshake, newline skipping and line
/// framing all carry their state across reads.
#[test]
fn handshake_and_lines_one_byte_per_read() {
    let server = TestServer::start();
    let stream = format!("{} \r\nab\r\n\ncd\n", handshake("Mina", "dev"));
    let mut client = TcpClient::connect(server.tcp);
    for byte in stream.as_bytes() {
        send_and_wait_read(&server, &mut client, &[*byte]);
    }
    assert_eq!(read_lines(&mut client, 2), ["Mina:ab", "Mina:cd"]);
}

/// Handshake and several lines in one write: nothing after the handshake
/// is lost (the original server dropped it), and other members see it too.
#[test]
fn handshake_and_messages_in_one_write() {
    let server = TestServer::start();
    let mut watcher = joined_tcp(server.tcp, "Ola", "dev");
    let mut client = TcpClient::connect(server.tcp);
    client.send_raw(format!("{}one\ntwo\nthree\n", handshake("Mina", "dev")).as_bytes());
    let expected = ["Mina:one", "Mina:two", "Mina:three"];
    assert_eq!(read_lines(&mut client, 3), expected);
    assert_eq!(read_lines(&mut watcher, 3), expected);
}

/// The original Go client byte for byte (PROTOCOL §8): the handshake JSON
/// with no newline, a join that needs no newline to complete, then one
/// `text\n` write per typed line. Received bytes are checked exactly.
#[test]
fn original_go_client_byte_sequence() {
    let server = TestServer::start();
    let connect = |name: &str| {
        let joins = server.stats().joins;
        let mut client = TcpClient::connect(server.tcp);
        client.send_raw(format!(r#"{{"name":"{name}","room":"dev"}}"#).as_bytes());
        server.wait_for("the join", |s| s.joins == joins + 1);
        client
    };
    let mut clients = [connect("Mina"), connect("Ola")];
    for (who, line) in [(0, "hello\n"), (1, "hi Mina\n"), (0, "how are you\n")] {
        let messages = server.stats().messages_in;
        clients[who].send_raw(line.as_bytes());
        server.wait_for("the message", |s| s.messages_in == messages + 1);
    }
    let expected = "Mina:hello\nOla:hi Mina\nMina:how are you\n";
    for client in &mut clients {
        let mut received = Vec::new();
        while received.len() < expected.len() {
            received.extend(client.read_line_bytes());
            received.push(b'\n');
        }
        assert_eq!(String::from_utf8_lossy(&received), expected);
    }
}

/// After the closing `}`: spaces, tabs and `\r` up to and including the
/// first `\n` are skipped (a handshake typed as a line is no empty
/// message); text on the handshake's own line is kept.
#[test]
fn newline_after_handshake_is_skipped() {
    let server = TestServer::start();

    let mut typed = TcpClient::connect(server.tcp);
    typed.send_raw(format!("{}  \t\r\nnext\n", handshake("Typed", "dev")).as_bytes());
    typed.expect_line("Typed:next");

    // The same, with the blanks and the newline in reads of their own.
    let mut split = TcpClient::connect(server.tcp);
    send_and_wait_read(&server, &mut split, handshake("Split", "dev").as_bytes());
    send_and_wait_read(&server, &mut split, b"  ");
    send_and_wait_read(&server, &mut split, b"\r\n");
    split.send_raw(b"next\n");
    split.expect_line("Split:next");

    let mut same_line = TcpClient::connect(server.tcp);
    same_line.send_raw(format!("{}  hi\nnext\n", handshake("Same", "other")).as_bytes());
    assert_eq!(read_lines(&mut same_line, 2), ["Same:hi", "Same:next"]);

    // Only the first newline is skipped: a blank second line is an
    // ordinary empty line (ignored), and the text after it is kept.
    let mut two = TcpClient::connect(server.tcp);
    two.send_raw(format!("{}\n\nafter\n", handshake("Two", "third")).as_bytes());
    two.expect_line("Two:after");
}

// ----- delivery ------------------------------------------------------------

#[test]
fn message_is_echoed_to_its_sender() {
    let server = TestServer::start();
    let mut client = TcpClient::join(server.tcp, "Mina", "dev");
    client.send_line("is anyone here?");
    client.expect_line("Mina:is anyone here?");
    let stats = server.wait_for("the delivery count", |s| s.deliveries == 1);
    assert_eq!(stats.messages_in, 1);
}

/// Several senders writing at once: every member sees the identical
/// sequence, and each sender's messages in the order they were sent.
#[test]
fn all_members_see_the_same_order() {
    const SENDERS: usize = 4;
    const LISTENERS: usize = 2;
    const EACH: usize = 200;
    let server = TestServer::start();
    let mut members: Vec<TcpClient> =
        (0..SENDERS + LISTENERS).map(|i| joined_tcp(server.tcp, &format!("m{i}"), "dev")).collect();
    // Each member's "hello" reached the members that had joined before it.
    for (i, member) in members.iter_mut().enumerate() {
        for later in i + 1..SENDERS + LISTENERS {
            member.expect_line(&format!("m{later}:hello"));
        }
    }
    let writers: Vec<_> = members[..SENDERS]
        .iter()
        .enumerate()
        .map(|(i, member)| {
            let mut stream = member.stream.try_clone().unwrap();
            thread::spawn(move || {
                for k in 0..EACH {
                    // One write per message (small writes interleave best).
                    stream.write_all(format!("{i}-{k}\n").as_bytes()).unwrap();
                }
            })
        })
        .collect();
    let readers: Vec<_> = members
        .into_iter()
        .map(|mut member| thread::spawn(move || read_lines(&mut member, SENDERS * EACH)))
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let sequences: Vec<Vec<String>> = readers.into_iter().map(|reader| reader.join().unwrap()).collect();
    for (i, sequence) in sequences.iter().enumerate() {
        assert!(sequence == &sequences[0], "member {i} saw another order than member 0");
    }
    for sender in 0..SENDERS {
        let own: Vec<String> =
            sequences[0].iter().filter(|line| line.starts_with(&format!("m{sender}:"))).cloned().collect();
        let expected: Vec<String> = (0..EACH).map(|k| format!("m{sender}:{sender}-{k}")).collect();
        assert_eq!(own, expected, "sender {sender}'s messages out of order or missing");
    }
}

/// Messages stay in their room: a member of another room never sees them.
#[test]
fn rooms_are_isolated() {
    let server = TestServer::start();
    let mut dev_a = joined_tcp(server.tcp, "A", "dev");
    let mut dev_b = joined_tcp(server.tcp, "B", "dev");
    dev_a.expect_line("B:hello");
    let mut ops = joined_tcp(server.tcp, "C", "ops");
    dev_a.send_line("dev only");
    dev_a.expect_line("A:dev only");
    dev_b.expect_line("A:dev only");
    // A's message was queued before C speaks: had it gone to C, it would
    // come before C's own echo.
    ops.send_line("ops only");
    ops.expect_line("C:ops only");
    dev_a.send_line("still dev");
    dev_b.expect_line("A:still dev");
    let stats = server.wait_for("three messages", |s| s.messages_in == 6);
    // 3 hellos (1 + 2 + 1 recipients), "dev only" x2, "ops only" x1, "still dev" x2.
    assert_eq!(stats.deliveries, 4 + 2 + 1 + 2);
    assert_eq!(stats.rooms, 2);
}

// ----- handshake errors ------------------------------------------------------

/// Sends `bytes` as a handshake and expects exactly the error line `error`
/// (or one starting with it, for serde's message) and then the close.
fn expect_handshake_error(server: &TestServer, bytes: &[u8], error: &str) {
    let mut client = TcpClient::connect(server.tcp);
    client.send_raw(bytes);
    let line = client.expect_error("");
    assert!(
        line == error || (error.ends_with(": ") && line.starts_with(error)),
        "handshake {:?}: expected {error:?}, got {line:?}",
        String::from_utf8_lossy(bytes)
    );
}

/// Every handshake error of PROTOCOL §2/§4, each with its own reason, each
/// followed by the close, each counted under its label.
const RESERVED: &str = r#"error: name "error" is reserved, and so is any name that looks like it"#;

#[test]
fn each_handshake_error_has_its_reason_and_closes() {
    let server = TestServer::start();
    let not_object = r#"error: handshake must be a JSON object like {"name":"Mina","room":"dev"}"#;
    let name_33 = "a".repeat(33);
    let room_65 = "r".repeat(65);
    let huge = format!(r#"{{"name":"Mina","room":"dev","pad":"{}"}}"#, "x".repeat(5000));
    // One byte over: the closing brace is byte 4097.
    let start = r#"{"name":"Mina","room":"dev","pad":""#;
    let just_over = format!(r#"{start}{}"}}"#, "x".repeat(4097 - start.len() - 2));
    assert_eq!(just_over.len(), 4097);
    let cases: Vec<(String, &str, &str)> = vec![
        ("hello\n".into(), not_object, "malformed"),
        (r#"["Mina","dev"]"#.into(), not_object, "malformed"),
        (r#""Mina""#.into(), not_object, "malformed"),
        (r#"{"name":"Mina","room":}"#.into(), "error: malformed handshake JSON: ", "malformed"),
        ("{name: Mina, room: dev}".into(), "error: malformed handshake JSON: ", "malformed"),
        (r#"{"room":"dev"}"#.into(), r#"error: handshake is missing the "name" field"#, "missing_field"),
        (r#"{"name":"Mina"}"#.into(), r#"error: handshake is missing the "room" field"#, "missing_field"),
        (
            r#"{"name":5,"room":"dev"}"#.into(),
            r#"error: handshake field "name" must be a string"#,
            "missing_field",
        ),
        (
            r#"{"name":"Mina","room":null}"#.into(),
            r#"error: handshake field "room" must be a string"#,
            "missing_field",
        ),
        (r#"{"name":"","room":"dev"}"#.into(), "error: name is empty", "invalid_name"),
        (r#"{"name":"  ","room":"dev"}"#.into(), "error: name is empty", "invalid_name"),
        (handshake(&name_33, "dev"), "error: name is longer than 32 characters", "invalid_name"),
        (
            r#"{"name":"Mi\u0007na","room":"dev"}"#.into(),
            "error: name contains a control character (U+0007)",
            "invalid_name",
        ),
        (
            r#"{"name":"Mi\u0085na","room":"dev"}"#.into(),
            "error: name contains a control character (U+0085)",
            "invalid_name",
        ),
        (r#"{"name":"Mi:na","room":"dev"}"#.into(), "error: name contains ':'", "invalid_name"),
        (
            r#"{"name":"Mi\uff1ana","room":"dev"}"#.into(),
            "error: name contains a character that looks like ':' (U+FF1A)",
            "invalid_name",
        ),
        (
            r#"{"name":"Mina\u200b","room":"dev"}"#.into(),
            "error: name contains an invisible or formatting character (U+200B)",
            "invalid_name",
        ),
        (r#"{"name":"error","room":"dev"}"#.into(), RESERVED, "invalid_name"),
        (r#"{"name":"ERROR","room":"dev"}"#.into(), RESERVED, "invalid_name"),
        (r#"{"name":" Error ","room":"dev"}"#.into(), RESERVED, "invalid_name"),
        (r#"{"name":"\u0435rr\u043er","room":"dev"}"#.into(), RESERVED, "invalid_name"),
        (
            r#"{"name":"Mina","room":"d\u2028ev"}"#.into(),
            "error: room contains an invisible or formatting character (U+2028)",
            "invalid_room",
        ),
        (r#"{"name":"Mina","room":""}"#.into(), "error: room is empty", "invalid_room"),
        (handshake("Mina", &room_65), "error: room is longer than 64 characters", "invalid_room"),
        (
            r#"{"name":"Mina","room":"d\nev"}"#.into(),
            "error: room contains a control character (U+000A)",
            "invalid_room",
        ),
        (huge, "error: handshake is larger than 4096 bytes", "too_large"),
        (just_over, "error: handshake is larger than 4096 bytes", "too_large"),
    ];
    for (bytes, error, _) in &cases {
        expect_handshake_error(&server, bytes.as_bytes(), error);
    }
    let stats = server.wait_idle();
    for label in machat::Stats::HANDSHAKE_ERROR_LABELS {
        let expected = cases.iter().filter(|(_, _, case_label)| *case_label == label).count() as u64;
        assert_eq!(stats.handshake_errors_for(label), expected, "handshake errors labelled {label}");
    }
    assert_eq!(stats.joins, 0);
}

/// An unterminated handshake that keeps coming in small reads is cut at
/// 4 KiB, without waiting for its end.
#[test]
fn handshake_over_4_kib_in_many_reads_is_refused() {
    let server = TestServer::start();
    let mut client = TcpClient::connect(server.tcp);
    send_and_wait_read(&server, &mut client, br#"{"name":"Mina","room":"dev","pad":""#);
    let chunk = [b'x'; 512];
    for _ in 0..8 {
        send_and_wait_read(&server, &mut client, &chunk);
    }
    assert_eq!(client.expect_error("larger"), "error: handshake is larger than 4096 bytes");
    // The server closes its side once the client has closed (or after a
    // linger of several seconds): close, so the connection ends now.
    drop(client);
    assert_eq!(server.wait_idle().handshake_errors_for("too_large"), 1);
}

/// The limits' boundary values are accepted: 32 multi-byte characters of
/// name, 64 of room, a handshake of exactly 4096 bytes; surrounding
/// whitespace is trimmed, unknown fields (with braces in strings) ignored,
/// and braces, quotes and backslashes inside strings are no object end.
#[test]
fn handshake_boundary_values_are_accepted() {
    let server = TestServer::start();
    let name_32 = "日本".repeat(16);
    let room_64 = "ü".repeat(64);
    let mut client = joined_tcp(server.tcp, &name_32, &room_64);
    client.send_line("ok");
    client.expect_line(&format!("{name_32}:ok"));

    let mut trimmed = TcpClient::connect(server.tcp);
    trimmed.send_raw(br#"{"room":" dev ","extra":{"}":"{","list":[1,"]"]},"name":"  Mina "}"#);
    trimmed.send_line("hi");
    trimmed.expect_line("Mina:hi");
    // The room was trimmed too: "dev" and " dev " are one room.
    let mut other = joined_tcp(server.tcp, "Ola", "dev");
    trimmed.expect_line("Ola:hello");
    other.send_line("x");
    trimmed.expect_line("Ola:x");

    let start = r#"{"name":"Big","room":"dev","pad":""#;
    let pad = "p".repeat(4096 - start.len() - 2);
    let exact = format!(r#"{start}{pad}"}}"#);
    assert_eq!(exact.len(), 4096);
    let mut big = TcpClient::connect(server.tcp);
    // The lines after it, in the same write, are past the 4 KiB budget and
    // must not be cut by it.
    big.send_raw(format!("{exact}fits\nand more\n").as_bytes());
    assert_eq!(read_lines(&mut big, 2), ["Big:fits", "Big:and more"]);

    // Quotes, backslashes and braces inside strings do not end the object.
    let mut tricky = TcpClient::connect(server.tcp);
    tricky.send_raw(&[br#"{"name":"x\\\"}y","room":"{dev}"}"#.as_slice(), b"then\n"].concat());
    tricky.expect_line(r#"x\"}y:then"#);
}

/// A handshake that does not complete within `handshake_timeout` (here
/// 300 ms) is refused with its own reason, whether nothing or part of it
/// was sent; members are not affected by the deadline.
#[test]
fn handshake_timeout_cuts_silent_and_partial_clients() {
    let timeout = Duration::from_millis(300);
    let server = TestServer::with_config(Config { handshake_timeout: timeout, ..Config::ephemeral() });
    let mut member = joined_tcp(server.tcp, "Mina", "dev");

    let started = Instant::now();
    let mut silent = TcpClient::connect(server.tcp);
    let mut partial = TcpClient::connect(server.tcp);
    partial.send_raw(br#"{"name":"Ola","ro"#);
    for client in [&mut silent, &mut partial] {
        assert_eq!(client.expect_error("timed out"), "error: handshake timed out");
    }
    // Never before the deadline (the deadline starts at accept, which is
    // after `started`).
    assert!(started.elapsed() >= timeout, "cut after {:?}", started.elapsed());
    drop((silent, partial));

    member.send_line("still here");
    member.expect_line("Mina:still here");
    let stats = server.wait_for("both connections to close", |s| s.connections == 1);
    assert_eq!(stats.handshake_errors_for("timeout"), 2);
    assert_eq!(stats.members, 1);
}

/// A taken name is refused (and nothing happens to its holder); once the
/// holder leaves, the name is free again. The same name is fine in another
/// room.
#[test]
fn duplicate_name_refused_then_free_after_leave() {
    let server = TestServer::start();
    let mut holder = joined_tcp(server.tcp, "Mina", "dev");

    let mut twin = TcpClient::join(server.tcp, "Mina", "dev");
    twin.send_line("am I in?");
    assert_eq!(twin.expect_error("taken"), r#"error: name "Mina" is already taken in room "dev""#);
    drop(twin);
    // The holder did not get the twin's line, and is still a member.
    holder.send_line("still me");
    holder.expect_line("Mina:still me");
    assert_eq!(
        server.wait_for("the twin to be gone", |s| s.connections == 1).handshake_errors_for("name_taken"),
        1
    );

    drop(holder);
    server.wait_for("the holder to leave", |s| s.members == 0 && s.rooms == 0);
    let mut next = joined_tcp(server.tcp, "Mina", "dev");
    next.send_line("mine now");
    next.expect_line("Mina:mine now");
}

#[test]
fn same_name_in_different_rooms() {
    let server = TestServer::start();
    let mut dev = joined_tcp(server.tcp, "Mina", "dev");
    let mut ops = joined_tcp(server.tcp, "Mina", "ops");
    ops.send_line("in ops");
    ops.expect_line("Mina:in ops");
    dev.send_line("in dev");
    // Nothing from ops came before dev's own echo.
    dev.expect_line("Mina:in dev");
    let stats = server.wait_for("two rooms", |s| s.rooms == 2);
    assert_eq!(stats.members, 2);
}

// ----- line framing ------------------------------------------------------

/// A line over `max_line` is an error for its sender, and nothing of it
/// reaches the room; lines before it are delivered, and the others go on.
#[test]
fn long_line_is_refused_and_never_delivered() {
    let server = TestServer::with_config(small_lines());
    let mut listener = joined_tcp(server.tcp, "L", "dev");
    let mut other = joined_tcp(server.tcp, "O", "dev");
    let mut sender = joined_tcp(server.tcp, "S", "dev");
    listener.expect_line("O:hello");
    listener.expect_line("S:hello");

    sender.send_raw(format!("before\n{}\nafter\n", "x".repeat(MAX_LINE + 1)).as_bytes());
    assert_eq!(sender.read_line(), "S:before");
    assert_eq!(sender.expect_error("longer"), "error: line longer than 1024 bytes");
    other.send_line("next");
    listener.expect_line("S:before");
    // Had any of the long line (or what followed it) been delivered, it
    // would come before O's message.
    listener.expect_line("O:next");
    server.wait_for("the sender to leave", |s| s.members == 2);
}

/// The same when the long line trickles in over many reads with no
/// newline in sight: it is refused once it passes the limit.
#[test]
fn long_line_split_across_many_writes_is_refused() {
    let server = TestServer::with_config(small_lines());
    let mut listener = joined_tcp(server.tcp, "L", "dev");
    let mut sender = joined_tcp(server.tcp, "S", "dev");
    listener.expect_line("S:hello");
    let chunk = [b'y'; 100];
    for _ in 0..(MAX_LINE / chunk.len() + 2) {
        send_and_wait_read(&server, &mut sender, &chunk);
    }
    assert_eq!(sender.expect_error("longer"), "error: line longer than 1024 bytes");
    server.wait_for("the sender to leave", |s| s.members == 1);
    let mut other = joined_tcp(server.tcp, "O", "dev");
    listener.expect_line("O:hello");
    other.send_line("next");
    listener.expect_line("O:next");
}

/// A line of exactly `max_line` bytes is accepted, with or without `\r`,
/// in one read or many; the partial line's buffer is given back once the
/// line is complete.
#[test]
fn line_of_exactly_max_line_is_accepted() {
    let server = TestServer::with_config(small_lines());
    let mut sender = joined_tcp(server.tcp, "S", "dev");
    let line = "z".repeat(MAX_LINE);
    sender.send_raw(format!("{line}\n{line}\r\n").as_bytes());
    sender.expect_line(&format!("S:{line}"));
    sender.expect_line(&format!("S:{line}"));
    for piece in line.as_bytes().chunks(300) {
        send_and_wait_read(&server, &mut sender, piece);
        assert_eq!(server.stats().input_buffers, 1, "the partial line is held");
    }
    send_and_wait_read(&server, &mut sender, b"\r");
    sender.send_raw(b"\n");
    sender.expect_line(&format!("S:{line}"));
    // Once the line is complete, the idle member holds no buffer.
    let stats =
        server.wait_for("the buffers to be given back", |s| s.input_buffers == 0 && s.output_buffers == 0);
    assert_eq!(stats.connections, 1);
}

/// A trailing `\r` is removed (one; a `\r` inside the line is a control
/// character, delivered as U+FFFD so it cannot overwrite the line).
#[test]
fn crlf_is_stripped() {
    let server = TestServer::start();
    let mut client = joined_tcp(server.tcp, "Mina", "dev");
    client.send_raw(b"one\r\nt\rwo\r\nthree\r\r\n");
    assert_eq!(read_lines(&mut client, 3), ["Mina:one", "Mina:t\u{FFFD}wo", "Mina:three\u{FFFD}"]);
}

/// Empty lines (`\n`, `\r\n`) are not messages.
#[test]
fn empty_lines_are_ignored() {
    let server = TestServer::start();
    let mut client = joined_tcp(server.tcp, "Mina", "dev");
    client.send_raw(b"\n\r\n\nx\n\n\r\ny\n");
    assert_eq!(read_lines(&mut client, 2), ["Mina:x", "Mina:y"]);
    let stats = server.wait_for("the messages", |s| s.messages_in == 3);
    assert_eq!(stats.deliveries, 3);
}

/// Bytes that are not UTF-8 become U+FFFD; a character split across reads
/// is not.
#[test]
fn invalid_utf8_is_replaced() {
    let server = TestServer::start();
    let mut client = joined_tcp(server.tcp, "Mina", "dev");
    client.send_raw(b"a\xffb\xc3\n\xe2\x82\n");
    assert_eq!(client.read_line(), "Mina:a\u{FFFD}b\u{FFFD}");
    assert_eq!(client.read_line(), "Mina:\u{FFFD}");
    let euro = "€".as_bytes();
    send_and_wait_read(&server, &mut client, &euro[..1]);
    send_and_wait_read(&server, &mut client, &euro[1..2]);
    client.send_raw(&euro[2..]);
    client.send_raw(b"\n");
    assert_eq!(client.read_line(), "Mina:€");
}

// ----- scale -------------------------------------------------------------

/// A room of 1,000 TCP members: three of them talk at once, and every
/// member receives every message, all in the same order.
#[test]
fn thousand_member_room_receives_every_message() {
    const MEMBERS: usize = 1000;
    const EACH: usize = 10;
    const SENDERS: [usize; 3] = [0, 500, 999];
    let server = TestServer::start();
    let members: Vec<TcpClient> =
        (0..MEMBERS).map(|i| TcpClient::join(server.tcp, &format!("m{i:04}"), "big")).collect();
    server.wait_for("every member to join", |s| s.members == MEMBERS as u64);
    assert_eq!(server.stats().rooms, 1);

    let writers: Vec<_> = SENDERS
        .iter()
        .map(|&i| {
            let mut stream = members[i].stream.try_clone().unwrap();
            thread::spawn(move || {
                for k in 0..EACH {
                    stream.write_all(format!("{i}-{k}\n").as_bytes()).unwrap();
                }
            })
        })
        .collect();
    let mut members = members;
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let mine: Vec<TcpClient> = members.drain(..members.len().min(MEMBERS / 4)).collect();
            thread::spawn(move || {
                mine.into_iter()
                    .map(|mut member| read_lines(&mut member, SENDERS.len() * EACH))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let sequences: Vec<Vec<String>> = readers.into_iter().flat_map(|reader| reader.join().unwrap()).collect();
    assert_eq!(sequences.len(), MEMBERS);
    for (i, sequence) in sequences.iter().enumerate() {
        assert!(sequence == &sequences[0], "member {i} saw {sequence:?}, member 0 saw {:?}", sequences[0]);
    }
    for sender in SENDERS {
        let own: Vec<&String> =
            sequences[0].iter().filter(|l| l.starts_with(&format!("m{sender:04}:"))).collect();
        let expected: Vec<String> = (0..EACH).map(|k| format!("m{sender:04}:{sender}-{k}")).collect();
        assert_eq!(own, expected.iter().collect::<Vec<_>>());
    }
    let stats =
        server.wait_for("the deliveries", |s| s.deliveries == (SENDERS.len() * EACH * MEMBERS) as u64);
    assert_eq!(stats.slow_consumers, 0);
}

/// 10,000 connect/join/disconnect cycles, 100 sockets at a time: half
/// wait for their echo before leaving, half hang up right after sending.
/// Afterwards nothing is left: no connection, room, member or buffer.
#[test]
fn ten_thousand_cycles_leave_nothing_behind() {
    const CYCLES: usize = 10_000;
    const BATCH: usize = 100;
    let server = TestServer::start();
    for batch in 0..CYCLES / BATCH {
        let mut clients: Vec<(usize, TcpStream)> = (0..BATCH)
            .map(|i| {
                let n = batch * BATCH + i;
                let stream = TcpStream::connect(server.tcp).expect("connect");
                stream.set_read_timeout(Some(TIMEOUT)).unwrap();
                (n, stream)
            })
            .collect();
        for (n, stream) in &mut clients {
            // Leavers that wait share a few rooms (and see each other's
            // messages); leavers that hang up at once are alone in theirs.
            let room = if *n % 2 == 0 { format!("shared{}", *n % 10) } else { format!("solo{n}") };
            stream.write_all(format!("{}hi\n", handshake(&format!("u{n}"), &room)).as_bytes()).unwrap();
        }
        for (n, stream) in clients {
            if n % 2 == 0 {
                let mut reader = BufReader::new(stream);
                let own = format!("u{n}:hi\n");
                let mut line = String::new();
                loop {
                    line.clear();
                    assert!(reader.read_line(&mut line).unwrap() > 0, "closed before u{n}'s echo");
                    if line == own {
                        break;
                    }
                }
            }
        }
    }
    let stats = server.wait_idle();
    assert_eq!(stats.accepted, CYCLES as u64);
    assert_eq!(stats.joins, CYCLES as u64);
    assert_eq!(stats.messages_in, CYCLES as u64);
    assert_eq!(stats.tcp_connections, 0);
    assert_eq!(stats.handshake_errors.iter().sum::<u64>(), 0);
}

// ----- closing -----------------------------------------------------------

/// A client that sends lines and then shuts down its write side still gets
/// its own echoes, then the server's close.
#[test]
fn half_closed_client_still_receives_its_echo() {
    let server = TestServer::start();
    let mut watcher = joined_tcp(server.tcp, "Ola", "dev");
    let mut client = TcpClient::connect(server.tcp);
    client.send_raw(format!("{}one\ntwo\n", handshake("Mina", "dev")).as_bytes());
    client.stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(client.read_to_close(), "Mina:one\nMina:two\n");
    assert_eq!(read_lines(&mut watcher, 2), ["Mina:one", "Mina:two"]);
    server.wait_for("Mina to leave", |s| s.members == 1 && s.connections == 1);
}

/// `Handle::shutdown`: every message accepted before it reaches a client
/// that keeps reading, then every client sees EOF, and `run` returns Ok.
#[test]
fn shutdown_flushes_queued_messages_then_closes() {
    const MESSAGES: usize = 60_000;
    let server = TestServer::with_config(Config { max_pending: 64 << 20, ..Config::ephemeral() });
    let mut reader = joined_tcp(server.tcp, "reader", "dev");
    let mut sender = joined_tcp(server.tcp, "sender", "dev");
    reader.expect_line("sender:hello");
    let mut unjoined = TcpClient::connect(server.tcp);
    // The sender's own echoes are read as they come; the reader reads
    // nothing until shutdown, so its messages pile up in the server.
    let mut writer = sender.stream.try_clone().unwrap();
    let echoes = thread::spawn(move || {
        let text = sender.read_to_close();
        text.lines().count()
    });
    let padding = "p".repeat(100);
    let mut all = String::new();
    for k in 0..MESSAGES {
        all.push_str(&format!("{k:05} {padding}\n"));
    }
    writer.write_all(all.as_bytes()).unwrap();
    let stats = server.wait_for("every message", |s| s.messages_in == (MESSAGES + 2) as u64);
    assert!(stats.queued_bytes > 0, "nothing was queued: the test would prove nothing");
    assert_eq!(stats.connections, 3);

    server.handle.shutdown();
    for k in 0..MESSAGES {
        assert_eq!(reader.read_line(), format!("sender:{k:05} {padding}"));
    }
    assert_eq!(reader.read_to_close(), "");
    assert_eq!(unjoined.read_to_close(), "");
    assert_eq!(echoes.join().unwrap(), MESSAGES);
    // The server waits (up to the grace) for clients to close their side.
    drop((reader, unjoined, writer));
    server.stop().expect("run returns Ok");
}
