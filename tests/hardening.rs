//! Robustness under hostile or unlucky clients: slow consumers, floods,
//! idle crowds, connection limits and handshake abuse (PROTOCOL §4–§5).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use common::{TIMEOUT, TcpClient, TestServer, joined_tcp};
use machat::Config;

/// Reads from `stream` on a thread until `expected` has arrived, counting
/// complete lines in `progress`; returns whether the bytes matched exactly.
fn read_exactly(
    stream: TcpStream,
    expected: Arc<Vec<u8>>,
    progress: Arc<AtomicUsize>,
) -> thread::JoinHandle<bool> {
    thread::spawn(move || {
        let mut stream = stream;
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut buffer = vec![0; 1 << 16];
        let mut offset = 0;
        while offset < expected.len() {
            let n = match stream.read(&mut buffer) {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            if n > expected.len() - offset || buffer[..n] != expected[offset..offset + n] {
                return false;
            }
            let lines = buffer[..n].iter().filter(|&&byte| byte == b'\n').count();
            progress.fetch_add(lines, Ordering::Relaxed);
            offset += n;
        }
        true
    })
}

#[test]
fn a_stalled_member_is_cut_off_and_the_others_get_everything() {
    const MAX_PENDING: usize = 256 * 1024;
    const MESSAGES: usize = 60_000;
    /// Messages the sender may be ahead of the slower of its two readers.
    const WINDOW: usize = 2_000;
    const CHUNK: usize = 500;
    let config = Config {
        max_pending: MAX_PENDING,
        slow_consumer_timeout: Duration::from_secs(1),
        ..Config::ephemeral()
    };
    let server = TestServer::with_config(config);

    let mut reader = joined_tcp(server.tcp, "reader", "flood");
    let mut stalled = TcpClient::join(server.tcp, "stalled", "flood"); // never reads
    let mut sender = TcpClient::join(server.tcp, "sender", "flood");
    server.wait_for("three members", |s| s.members == 3);

    let lines: Vec<String> = (0..MESSAGES).map(|i| format!("{i:06} {}\n", "x".repeat(100))).collect();
    let expected: Vec<u8> = lines.iter().flat_map(|line| format!("sender:{line}").into_bytes()).collect();
    let expected = Arc::new(expected);
    let (reader_progress, echo_progress) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let reader_done =
        read_exactly(reader.stream.try_clone().unwrap(), expected.clone(), reader_progress.clone());
    let echo_done = read_exactly(sender.stream.try_clone().unwrap(), expected.clone(), echo_progress.clone());

    // The sender keeps at most WINDOW messages ahead of the members that
    // read, so they are never slow; the stalled member falls behind for good.
    for (index, chunk) in lines.chunks(CHUNK).enumerate() {
        let sent = index * CHUNK;
        let readers_progress =
            || reader_progress.load(Ordering::Relaxed).min(echo_progress.load(Ordering::Relaxed));
        let started = std::time::Instant::now();
        while sent > readers_progress() + WINDOW {
            assert!(started.elapsed() < TIMEOUT, "readers stopped at {}", readers_progress());
            thread::sleep(Duration::from_micros(200));
        }
        sender.send_raw(chunk.concat().as_bytes());
    }
    assert!(reader_done.join().unwrap(), "the reading member got every message, in order");
    assert!(echo_done.join().unwrap(), "the sender got every echo, in order");

    let stats = server.wait_for("the stalled member to be cut", |s| s.slow_consumers == 1);
    assert_eq!(stats.members, 2);
    let bound = 3 * MAX_PENDING as u64;
    // The server's own high-water mark of bytes queued at once.
    let seen = stats.queued_bytes_peak;
    eprintln!("queued bytes peaked at {seen} (bound {bound}) while a member stalled");
    assert!(seen <= bound, "queued bytes peaked at {seen}, over the bound of {bound}");
    // The stalled client finds its connection closed after what was sent.
    let mut rest = Vec::new();
    let _ = stalled.stream.read_to_end(&mut rest);
    assert!(rest.len() < expected.len(), "the stalled member cannot have received everything");
    reader.send_line("still here");
    reader.expect_line("reader:still here");
}

#[test]
fn a_flooding_client_cannot_starve_another_room() {
    let server = TestServer::start();
    let mut flooder = joined_tcp(server.tcp, "flooder", "flood");
    let mut alice = joined_tcp(server.tcp, "alice", "quiet");
    let mut bob = joined_tcp(server.tcp, "bob", "quiet");
    alice.expect_line("bob:hello");

    // The flooder's echoes are drained so it is never a slow consumer.
    let mut echoes = flooder.stream.try_clone().unwrap();
    thread::spawn(move || {
        let mut sink = vec![0; 1 << 16];
        while matches!(echoes.read(&mut sink), Ok(n) if n > 0) {}
    });
    let flooding = Arc::new(AtomicBool::new(true));
    let flood = {
        let flooding = flooding.clone();
        thread::spawn(move || {
            let chunk = "flood flood flood flood flood flood flood flood\n".repeat(2000);
            while flooding.load(Ordering::Relaxed) {
                flooder.send_raw(chunk.as_bytes());
            }
        })
    };
    let before = server.stats().messages_in;
    server.wait_for("the flood to be under way", |s| s.messages_in > before + 100_000);

    alice.send_line("can you hear me?");
    bob.expect_line("alice:can you hear me?");
    assert!(flooding.load(Ordering::Relaxed) && !flood.is_finished(), "delivered while the flood went on");
    flooding.store(false, Ordering::Relaxed);
    flood.join().unwrap();
}

#[test]
fn idle_joined_connections_hold_no_buffers() {
    const CLIENTS: usize = 2_000;
    let server = TestServer::start();
    let mut clients: Vec<TcpClient> = (0..CLIENTS)
        .map(|i| TcpClient::join(server.tcp, &format!("user{i}"), &format!("room{}", i % 50)))
        .collect();
    server.wait_for("everyone joined", |s| s.members == CLIENTS as u64);

    // Half of them start a line and stop mid-way: that does hold a buffer...
    for client in clients.iter_mut().step_by(2) {
        client.send_raw(b"half a li");
    }
    server.wait_for("partial lines held", |s| s.input_buffers == CLIENTS as u64 / 2);
    // ...until the line completes and is delivered.
    for client in clients.iter_mut().step_by(2) {
        client.send_raw(b"ne\n");
    }
    let stats = server.wait_for("buffers released", |s| {
        s.messages_in == CLIENTS as u64 / 2 && s.input_buffers == 0 && s.output_buffers == 0
    });
    assert_eq!(stats.queued_bytes, 0);
    assert_eq!(stats.connections, CLIENTS as u64);
}

#[test]
fn past_max_connections_clients_are_told_the_server_is_full() {
    let config = Config { max_connections: 3, ..Config::ephemeral() };
    let server = TestServer::with_config(config);
    let first = joined_tcp(server.tcp, "a", "r");
    let _second = joined_tcp(server.tcp, "b", "r");
    let _third = joined_tcp(server.tcp, "c", "r");

    let mut refused = TcpClient::connect(server.tcp);
    refused.expect_error("server full");
    let mut http = TcpStream::connect(server.ws).unwrap();
    http.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut response = String::new();
    http.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 503 "), "{response}");
    assert!(response.ends_with("server full\n"), "{response}");
    server.wait_for("both refusals counted", |s| s.refused_full == 2);

    drop(first);
    server.wait_for("a slot to free up", |s| s.connections == 2);
    let mut late = joined_tcp(server.tcp, "d", "r");
    late.send_line("in");
    late.expect_line("d:in");
}

#[test]
fn handshake_abuse_is_cut_off() {
    let config = Config { handshake_timeout: Duration::from_millis(400), ..Config::ephemeral() };
    let server = TestServer::with_config(config);

    // Never sends a byte.
    let mut silent = TcpClient::connect(server.tcp);
    // Slowloris: a byte every 20 ms, never finishing.
    let mut trickle = TcpClient::connect(server.tcp);
    let mut writer = trickle.stream.try_clone().unwrap();
    let trickling = thread::spawn(move || {
        let bytes = b"{\"name\":\"".iter().chain(std::iter::repeat(&b'a'));
        for (sent, byte) in bytes.enumerate() {
            if writer.write_all(&[*byte]).is_err() {
                return sent;
            }
            thread::sleep(Duration::from_millis(20));
        }
        unreachable!("the server never cut the trickle off")
    });
    // Oversized: a handshake that never ends within 4 KiB.
    let mut oversized = TcpClient::connect(server.tcp);
    let mut big = b"{\"name\":\"Mina\",\"room\":\"dev\",\"pad\":\"".to_vec();
    big.resize(5000, b'p');
    oversized.send_raw(&big);

    oversized.expect_error("handshake is larger than 4096 bytes");
    silent.expect_error("handshake timed out");
    trickle.expect_error("handshake timed out");
    assert!(trickling.join().unwrap() > 0);
    let stats = server.wait_idle();
    assert_eq!(stats.handshake_errors_for("timeout"), 2);
    assert_eq!(stats.handshake_errors_for("too_large"), 1);

    // A client inside the limits is unaffected.
    let mut fine = TcpClient::join(server.tcp, "fine", "dev");
    fine.send_line("ok");
    fine.expect_line("fine:ok");
}
