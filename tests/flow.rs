//! Flow control and bounded memory (PROTOCOL §5): back-pressure paces
//! senders instead of cutting readers, only members that stop reading are
//! cut, and cleanly; the global budget holds; memory comes back after a
//! flood; dead peers are noticed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Machat, TIMEOUT, TcpClient, TestServer, WsClient, connect_with_buffers, handshake, joined_tcp,
    masked_frame, opcode, upgrade_request,
};
use machat::Config;
use tungstenite::Message;

/// Reads from `stream` until `expected` bytes have arrived, at most
/// `bytes_per_second` if given; returns whether they matched exactly.
fn reader(
    stream: TcpStream,
    expected: Arc<Vec<u8>>,
    bytes_per_second: Option<usize>,
) -> thread::JoinHandle<bool> {
    thread::spawn(move || {
        let mut stream = stream;
        let mut buffer = vec![0; 64 * 1024];
        let mut offset = 0;
        let started = Instant::now();
        while offset < expected.len() {
            let want = match bytes_per_second {
                // A slow client: it never gets ahead of its pace.
                Some(rate) => {
                    let allowed = (started.elapsed().as_secs_f64() * rate as f64) as usize + 4096;
                    if allowed <= offset {
                        thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                    (allowed - offset).min(buffer.len())
                }
                None => buffer.len(),
            };
            let n = match stream.read(&mut buffer[..want]) {
                Ok(0) => {
                    eprintln!("closed after {offset} of {} bytes", expected.len());
                    return false;
                }
                Err(error) => {
                    eprintln!("{error} after {offset} of {} bytes", expected.len());
                    return false;
                }
                Ok(n) => n,
            };
            if n > expected.len() - offset || buffer[..n] != expected[offset..offset + n] {
                eprintln!("different bytes after {offset}");
                return false;
            }
            offset += n;
        }
        true
    })
}

/// The example: a 32-character name writes 64 KiB of one-character
/// lines in one go. Each 2-byte line becomes a 35-byte line for every
/// member, 17 times the input; nobody may be cut and everyone gets all.
#[test]
fn one_write_that_expands_seventeen_times_cuts_nobody() {
    let server = TestServer::start();
    let name = "n".repeat(32);
    let mut readers: Vec<TcpClient> =
        (0..3).map(|i| joined_tcp(server.tcp, &format!("reader{i}"), "amp")).collect();
    let mut sender = joined_tcp(server.tcp, &name, "amp");
    server.wait_for("four members", |s| s.members == 4);
    // Everyone saw the later joiners' hellos; drain them so the streams
    // start at the burst.
    for (index, reader) in readers.iter_mut().enumerate() {
        for later in index + 1..3 {
            reader.expect_line(&format!("reader{later}:hello"));
        }
        reader.expect_line(&format!("{name}:hello"));
    }

    let burst = "a\n".repeat(32 * 1024);
    let expected: Vec<u8> = burst.lines().flat_map(|line| format!("{name}:{line}\n").into_bytes()).collect();
    assert!(expected.len() > 17 * burst.len() - 1, "the expansion of the issue");
    let expected = Arc::new(expected);
    let done: Vec<_> = readers
        .iter()
        .chain([&sender])
        .map(|client| reader(client.stream.try_clone().unwrap(), expected.clone(), None))
        .collect();
    sender.send_raw(burst.as_bytes());
    for reader in done {
        assert!(reader.join().unwrap(), "every member got every line, in order");
    }
    let stats = server.stats();
    assert_eq!(stats.slow_consumers, 0, "nobody was cut");
    assert!(stats.queued_bytes_peak <= 4 * Config::DEFAULT_MAX_PENDING as u64);
}

/// A sender floods a room in which one member reads slowly (but keeps
/// reading): nothing is cut, nothing lost, and the sender is paced (the
/// server stopped reading it) instead. The burst is larger than every
/// kernel buffer on the way can hold (up to about 10 MB on loopback), so
/// the pace must come from the server.
#[test]
fn a_burst_into_a_room_with_a_slow_reader_paces_the_sender() {
    const BURST: usize = 16 * 1024 * 1024;
    let server = TestServer::start();
    let mut slow = TcpClient::from_stream(connect_with_buffers(server.tcp, Some(16 * 1024), None));
    slow.send_raw(handshake("slow", "burst").as_bytes());
    let fast = joined_tcp(server.tcp, "fast", "burst");
    slow.expect_line("fast:hello");
    let mut sender = TcpClient::from_stream(connect_with_buffers(server.tcp, None, Some(16 * 1024)));
    sender.send_raw(handshake("sender", "burst").as_bytes());
    server.wait_for("three members", |s| s.members == 3);

    let line = format!("{}\n", "x".repeat(99));
    let lines = BURST / line.len();
    let burst = line.repeat(lines);
    let expected: Arc<Vec<u8>> =
        Arc::new(burst.lines().flat_map(|l| format!("sender:{l}\n").into_bytes()).collect());
    let slow_done = reader(slow.stream.try_clone().unwrap(), expected.clone(), Some(4 * 1024 * 1024));
    let fast_done = reader(fast.stream.try_clone().unwrap(), expected.clone(), None);
    let echo_done = reader(sender.stream.try_clone().unwrap(), expected.clone(), None);
    sender.send_raw(burst.as_bytes());
    assert!(slow_done.join().unwrap(), "the slow reader got everything");
    assert!(fast_done.join().unwrap(), "the fast reader got everything");
    assert!(echo_done.join().unwrap(), "the sender got every echo");
    let stats =
        server.wait_for("the room to go back to idle", |s| s.queued_bytes == 0 && s.paused_rooms == 0);
    assert_eq!(stats.slow_consumers, 0, "nobody was cut");
    assert!(stats.sender_pauses > 0, "the sender was paused: {stats:#?}");
    assert!(stats.paused_ms > 0);
    assert!(stats.queued_bytes_peak <= 3 * Config::DEFAULT_MAX_PENDING as u64, "{}", stats.queued_bytes_peak);
}

/// A member that stops reading is cut cleanly: it receives whole lines up
/// to the cut, then `error: slow consumer`; the others get everything.
#[test]
fn a_stalled_tcp_member_gets_whole_lines_then_the_error() {
    let config = Config { slow_consumer_timeout: Duration::from_millis(500), ..Config::ephemeral() };
    let server = TestServer::with_config(config);
    let mut stalled = TcpClient::from_stream(connect_with_buffers(server.tcp, Some(8 * 1024), None));
    stalled.send_raw(handshake("stalled", "cut").as_bytes());
    let reader_client = joined_tcp(server.tcp, "reader", "cut");
    let sender = joined_tcp(server.tcp, "sender", "cut");
    server.wait_for("three members", |s| s.members == 3);

    let flooding = Arc::new(AtomicBool::new(true));
    let flood = flood(sender, flooding.clone());
    let drain = drain(reader_client.stream.try_clone().unwrap());
    let stats = server.wait_for("the stalled member to be cut", |s| s.cuts_for("stalled") == 1);
    flooding.store(false, Ordering::Relaxed);
    assert_eq!(stats.slow_consumers, 1);
    // It reads again now, within the close linger, and gets what was
    // queued up to the cut, then the error.
    let mut received = Vec::new();
    let _ = stalled.stream.read_to_end(&mut received);
    let sent = flood.join().unwrap();
    let text = String::from_utf8(received).expect("whole UTF-8 lines");
    let (body, last) = text.trim_end_matches('\n').rsplit_once('\n').expect("lines, then the error");
    assert_eq!(last, "error: slow consumer");
    let body = body.strip_prefix("reader:hello\nsender:hello\n").expect("the others' hellos first");
    for line in body.lines() {
        assert_eq!(line, format!("sender:flood {}", "f".repeat(74)), "a torn line");
    }
    drop(reader_client);
    let got = drain.join().unwrap();
    assert!(got >= sent, "the reading member got every byte ({got} of {sent})");
}

/// The same for WebSocket: whole frames, then the error text and Close 1008.
#[test]
fn a_stalled_websocket_member_gets_whole_frames_then_close_1008() {
    let config = Config { slow_consumer_timeout: Duration::from_millis(500), ..Config::ephemeral() };
    let server = TestServer::with_config(config);
    let mut stalled = connect_with_buffers(server.ws, Some(8 * 1024), None);
    stalled.write_all(upgrade_request(server.ws, "/mychat", None).as_bytes()).unwrap();
    stalled.write_all(&masked_frame(true, opcode::TEXT, handshake("stalled", "cut").as_bytes())).unwrap();
    let sender = joined_tcp(server.tcp, "sender", "cut");
    server.wait_for("two members", |s| s.members == 2);
    let flooding = Arc::new(AtomicBool::new(true));
    let flood = flood(sender, flooding.clone());
    server.wait_for("the stalled member to be cut", |s| s.cuts_for("stalled") == 1);
    flooding.store(false, Ordering::Relaxed);
    // It reads again now, within the close linger.
    let mut received = Vec::new();
    let _ = stalled.read_to_end(&mut received);
    flood.join().unwrap();
    let head_end = received.windows(4).position(|w| w == b"\r\n\r\n").expect("the 101 response") + 4;
    let frames = server_frames(&received[head_end..]);
    let (close, rest) = frames.split_last().expect("frames");
    let (error, messages) = rest.split_last().expect("the error text");
    let (hello, messages) = messages.split_first().expect("the sender's hello");
    assert_eq!(hello.1, b"sender:hello\n");
    assert_eq!(close.0, 0x8);
    assert_eq!(close.1[..2], 1008u16.to_be_bytes());
    assert_eq!((error.0, error.1.as_slice()), (0x1, b"error: slow consumer\n".as_slice()));
    for (op, payload) in messages {
        assert_eq!(*op, 0x1);
        assert!(payload.starts_with(b"sender:flood ") && payload.ends_with(b"\n"), "torn frame");
    }
}

/// Parses the server's frames; panics on a torn one.
fn server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        assert!(bytes.len() >= 2, "a torn frame header");
        let (len, header) = match bytes[1] & 0x7f {
            126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 => (u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize, 10),
            len => (len as usize, 2),
        };
        assert!(bytes.len() >= header + len, "a torn frame: {} of {} bytes", bytes.len(), header + len);
        frames.push((bytes[0] & 0x0f, bytes[header..header + len].to_vec()));
        bytes = &bytes[header + len..];
    }
    frames
}

/// Sends 80-character lines until told to stop; returns the bytes each
/// member should have received.
fn flood(mut sender: TcpClient, flooding: Arc<AtomicBool>) -> thread::JoinHandle<usize> {
    let echo = drain(sender.stream.try_clone().unwrap());
    thread::spawn(move || {
        let line = format!("flood {}\n", "f".repeat(74));
        let chunk = line.repeat(100);
        let mut sent = 0;
        sender.stream.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
        while flooding.load(Ordering::Relaxed) {
            // A chunk is always finished, so no line is left torn; the
            // server may pace the writes for a while.
            let mut rest = chunk.as_bytes();
            while !rest.is_empty() {
                match sender.stream.write(rest) {
                    Ok(n) => rest = &rest[n..],
                    Err(error)
                        if matches!(
                            error.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(error) => panic!("write: {error}"),
                }
            }
            sent += 100;
        }
        drop(sender);
        let _ = echo.join();
        sent * "sender:".len() + sent * line.len()
    })
}

/// Reads everything until the connection ends, or nothing has come for
/// 5 s (longer than any pause in these tests); returns the byte count.
fn drain(mut stream: TcpStream) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buffer = vec![0; 64 * 1024];
        let mut total = 0;
        while let Ok(n @ 1..) = stream.read(&mut buffer) {
            total += n;
        }
        total
    })
}

/// Many members that never read, one sender: the bytes queued for all of
/// them stay near the global budget (the sender is paused, not the
/// server's memory grown), and the stalled members are cut.
#[test]
fn the_global_budget_holds_with_many_stalled_members() {
    const STALLED: usize = 12;
    const BUDGET: usize = 1024 * 1024;
    let config = Config {
        max_pending: 256 * 1024,
        max_line: 4096,
        max_queued_total: BUDGET,
        slow_consumer_timeout: Duration::from_secs(2),
        ..Config::ephemeral()
    };
    let server = TestServer::with_config(config);
    let mut stalled: Vec<TcpClient> = (0..STALLED)
        .map(|i| {
            let mut client = TcpClient::from_stream(connect_with_buffers(server.tcp, Some(4096), None));
            client.send_raw(handshake(&format!("stalled{i}"), "budget").as_bytes());
            client
        })
        .collect();
    let reader_client = joined_tcp(server.tcp, "reader", "budget");
    let sender = joined_tcp(server.tcp, "sender", "budget");
    server.wait_for("everyone in", |s| s.members == STALLED as u64 + 2);
    let drain = drain(reader_client.stream.try_clone().unwrap());
    let flooding = Arc::new(AtomicBool::new(true));
    let flood = flood(sender, flooding.clone());
    let stats = server.wait_for("every stalled member cut", |s| s.slow_consumers == STALLED as u64);
    flooding.store(false, Ordering::Relaxed);
    // The cut members read again now, within the close linger.
    let endings: Vec<thread::JoinHandle<String>> = stalled
        .drain(..)
        .map(|mut client| {
            thread::spawn(move || {
                let mut rest = Vec::new();
                let _ = client.stream.read_to_end(&mut rest);
                String::from_utf8_lossy(&rest).into_owned()
            })
        })
        .collect();
    let sent = flood.join().unwrap();
    // One read's worth of output per member may come on top of the budget.
    let bound = BUDGET as u64 + (STALLED as u64 + 2) * (3 * 4096 + 200);
    assert!(stats.queued_bytes_peak <= bound, "queued peaked at {} (bound {bound})", stats.queued_bytes_peak);
    assert!(stats.sender_pauses > 0);
    for ending in endings {
        assert!(ending.join().unwrap().ends_with("error: slow consumer\n"));
    }
    drop(reader_client);
    assert!(drain.join().unwrap() >= sent, "the reading member got everything");
    let stats = server.wait_for("queues to empty", |s| s.queued_bytes == 0 && s.members == 0);
    assert_eq!(stats.cuts_for("hard_cap"), 0, "nobody hit the hard cap: the pause came first");
}

/// Thousands of pipelined keep-alive requests: the deadline set holds one
/// entry per connection whatever the request rate, and everything goes
/// back to idle once the client leaves.
#[test]
fn a_keep_alive_flood_keeps_one_timer_per_connection() {
    let server = TestServer::start();
    let mut client = TcpStream::connect(server.ws).unwrap();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(200);
    let responses = drain(client.try_clone().unwrap());
    let started = Instant::now();
    let mut max_timers = 0;
    while started.elapsed() < Duration::from_secs(2) {
        client.write_all(&request).unwrap();
        let stats = server.stats();
        max_timers = max_timers.max(stats.timers);
        assert!(
            stats.timers <= stats.connections,
            "{} timers for {} connections",
            stats.timers,
            stats.connections
        );
    }
    let answered =
        server.wait_for("thousands answered", |s| s.http_responses_for(200) >= 2000).http_responses_for(200);
    drop(client);
    responses.join().unwrap();
    let stats = server.wait_idle();
    assert_eq!(stats.timers, 0);
    assert!(max_timers <= 1, "{max_timers}");
    eprintln!("{answered} keep-alive requests answered; at most {max_timers} timer entry");
}

/// WebSocket members that each send one 64 KiB message, then go quiet:
/// tungstenite's buffer for that message is given back, so the server
/// grows by far less than a message per member.
#[test]
fn websocket_members_do_not_keep_their_largest_message() {
    const MEMBERS: usize = 200;
    const MESSAGE: usize = 60 * 1024;
    // One arena and no trim threshold: freed memory is reused by the next
    // member, not hidden in per-thread arenas. History off: it would keep
    // each room's message on purpose (12 MB here), which is not a buffer.
    let mut machat = Machat::start_with_env(
        &["-tcp", "127.0.0.1:0", "-ws", "127.0.0.1:0", "--history", "0"],
        &[("MALLOC_ARENA_MAX", "1"), ("MALLOC_TRIM_THRESHOLD_", "0")],
    );
    let (_, ws) = machat.addresses();
    let mut members: Vec<WsClient> = (0..MEMBERS)
        .map(|i| {
            let mut member = WsClient::join(ws, &format!("m{i}"), &format!("room{i}"));
            member.send_line("hi");
            member.expect_text(&format!("m{i}:hi\n"));
            member
        })
        .collect();
    let before = machat.rss_kib();
    let text = "x".repeat(MESSAGE);
    for (i, member) in members.iter_mut().enumerate() {
        member.send_text(&text);
        assert_eq!(member.read_text().len(), format!("m{i}:").len() + MESSAGE + 1);
    }
    let after = machat.rss_kib();
    let grown = after.saturating_sub(before);
    eprintln!("RSS {before} KiB -> {after} KiB after {MEMBERS} messages of {MESSAGE} bytes");
    let kept_each = (MESSAGE / 1024) as u64;
    assert!(
        grown < MEMBERS as u64 * kept_each / 4,
        "grew by {grown} KiB: members kept their message buffers ({} KiB if each kept one)",
        MEMBERS as u64 * kept_each
    );
}

/// A WebSocket client that stops answering pings is closed with 1011;
/// one that answers (as tungstenite, gorilla and Go's x/net do) stays.
#[test]
fn websocket_pings_find_a_dead_peer_and_spare_a_live_one() {
    let config = Config { ws_ping_interval: Duration::from_millis(300), ..Config::ephemeral() };
    let server = TestServer::with_config(config);

    let mut alive = WsClient::join(server.ws, "alive", "pings");
    alive.send_line("hello");
    alive.expect_text("alive:hello\n");
    // The live client reads all along, as a real one does, and answers
    // every ping as it reads (tungstenite, gorilla and Go's x/net do).
    let stop = Arc::new(AtomicBool::new(false));
    let live = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut pings = 0;
            while !stop.load(Ordering::Relaxed) || pings < 3 {
                match alive.read() {
                    Message::Ping(_) => pings += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
            alive.send_line("still here");
            loop {
                match alive.read() {
                    Message::Text(text) => return (text.as_str().to_owned(), alive),
                    Message::Ping(_) => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
        })
    };

    let mut dead = TcpStream::connect(server.ws).unwrap();
    dead.set_read_timeout(Some(TIMEOUT)).unwrap();
    dead.write_all(upgrade_request(server.ws, "/mychat", None).as_bytes()).unwrap();
    dead.write_all(&masked_frame(true, opcode::TEXT, handshake("dead", "pings").as_bytes())).unwrap();
    let mut received = Vec::new();
    let _ = dead.read_to_end(&mut received);
    let head_end = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let frames = server_frames(&received[head_end..]);
    assert_eq!(frames[0], (0x9, b"machat".to_vec()), "a ping first");
    assert_eq!(frames[1], (0x1, b"error: ping timeout\n".to_vec()));
    assert_eq!(frames[2].1[..2], 1011u16.to_be_bytes());
    server.wait_for("the dead peer counted", |s| s.ping_timeouts == 1);

    // The live client outlived several intervals and still chats.
    stop.store(true, Ordering::Relaxed);
    let (text, _alive) = live.join().unwrap();
    assert_eq!(text, "alive:still here\n");
    let stats = server.stats();
    assert_eq!((stats.ping_timeouts, stats.members), (1, 1));
}

/// Every accepted socket has TCP keepalive on: the kernel's table shows a
/// keepalive timer on the server's side of an idle connection.
#[test]
fn accepted_sockets_have_tcp_keepalive() {
    let config = Config { tcp_keepalive: Duration::from_secs(30), ..Config::ephemeral() };
    let server = TestServer::with_config(config);
    let client = joined_tcp(server.tcp, "idle", "keepalive");
    let client_port = client.stream.local_addr().unwrap().port();
    let server_port = server.tcp.port();
    // /proc/net/tcp: local and remote address as hex, then `tr:when`,
    // where timer 2 is keepalive.
    let started = Instant::now();
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let timer = table.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = |field: &str| u16::from_str_radix(field.rsplit_once(':').unwrap().1, 16).unwrap();
            (port(fields[1]) == server_port && port(fields[2]) == client_port).then(|| fields[5].to_owned())
        });
        if timer.as_deref().is_some_and(|timer| timer.starts_with("02:")) {
            break;
        }
        assert!(started.elapsed() < TIMEOUT, "no keepalive timer on the server's socket: {timer:?}");
        thread::sleep(Duration::from_millis(10));
    }
}
