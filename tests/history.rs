//! Room history over real sockets: `"history": n` in the handshake gets
//! `history: <k>` and the room's k latest lines before anything live, with
//! nothing missed or repeated in between; `--history-on-join`; invalid
//! values refused; the memory budget dropping least recently used rooms;
//! and `--history-db` with the real binary: a restart, a SIGKILL, a
//! database locked under the writer, and files refused at start.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Machat, Metrics, TIMEOUT, TcpClient, TestServer, WsClient, joined_tcp, joined_ws};
use machat::Config;
use serde_json::{Value, json};

// ===========================================================================
// Helpers
// ===========================================================================

/// A handshake with a `history` field (any JSON value, valid or not).
fn handshake_with_history(name: &str, room: &str, history: Value) -> String {
    json!({ "name": name, "room": room, "history": history }).to_string()
}

/// A member over either transport, read line by line: on WebSocket every
/// line (the marker included) must be one text message ending in `\n`.
enum Member {
    Tcp(TcpClient),
    Ws(Box<WsClient>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Over {
    Tcp,
    Ws,
}

impl Member {
    /// Connects over `over` and sends the handshake, asking for `history`
    /// lines if given (else the field is left out, as old clients do).
    fn join(
        over: Over,
        server: (SocketAddr, SocketAddr),
        name: &str,
        room: &str,
        history: Option<u64>,
    ) -> Self {
        let handshake = match history {
            Some(lines) => handshake_with_history(name, room, json!(lines)),
            None => common::handshake(name, room),
        };
        match over {
            Over::Tcp => {
                let mut client = TcpClient::connect(server.0);
                client.send_raw(handshake.as_bytes());
                Member::Tcp(client)
            }
            Over::Ws => {
                let mut client = WsClient::connect(server.1);
                client.send_text(&handshake);
                Member::Ws(Box::new(client))
            }
        }
    }

    fn ws(client: WsClient) -> Self {
        Member::Ws(Box::new(client))
    }

    fn send_line(&mut self, text: &str) {
        match self {
            Member::Tcp(client) => client.send_line(text),
            Member::Ws(client) => client.send_line(text),
        }
    }

    /// The next line, without its `\n`.
    fn read_line(&mut self) -> String {
        match self {
            Member::Tcp(client) => client.read_line(),
            Member::Ws(client) => {
                let text = client.read_text();
                let line = text.strip_suffix('\n').unwrap_or_else(|| panic!("{text:?} does not end in \\n"));
                assert!(!line.contains('\n'), "one line per WebSocket message, got {text:?}");
                line.to_owned()
            }
        }
    }

    fn expect(&mut self, line: &str) {
        assert_eq!(self.read_line(), line);
    }
}

fn ports(server: &TestServer) -> (SocketAddr, SocketAddr) {
    (server.tcp, server.ws)
}

/// Joins over TCP asking for `lines` of history.
fn tcp_with_history(address: SocketAddr, name: &str, room: &str, lines: u64) -> TcpClient {
    let mut client = TcpClient::connect(address);
    client.send_raw(handshake_with_history(name, room, json!(lines)).as_bytes());
    client
}

/// `prefix` and a number never used before: a name that cannot be taken
/// by a client of an earlier step the server has not seen leave yet.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Reads `history: <k>` and the k lines after it.
fn read_replay(client: &mut TcpClient) -> Vec<String> {
    let marker = client.read_line();
    let count: usize = marker
        .strip_prefix("history: ")
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("expected the history marker, got {marker:?}"));
    (0..count).map(|_| client.read_line()).collect()
}

/// The `--history-db` flags with short waits, and listeners on port 0.
fn db_args<'a>(db: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "-tcp",
        "127.0.0.1:0",
        "-ws",
        "127.0.0.1:0",
        "--shutdown-grace",
        "2",
        "--history-db",
        db.to_str().expect("a UTF-8 temporary path"),
    ];
    args.extend_from_slice(extra);
    args
}

/// The database's lines of one room (by its spelling), oldest first, as
/// (sequence number, `name:text`).
fn stored_lines(db: &rusqlite::Connection, room: &str) -> Vec<(i64, String)> {
    let mut statement =
        db.prepare("SELECT seq, name || ':' || text FROM lines WHERE room_name = ?1 ORDER BY seq").unwrap();
    statement.query_map([room], |row| Ok((row.get(0)?, row.get(1)?))).unwrap().map(Result::unwrap).collect()
}

fn texts(lines: &[(i64, String)]) -> Vec<String> {
    lines.iter().map(|(_, line)| line.clone()).collect()
}

/// Series names of the history metrics.
mod series {
    pub const RECORDED: &str = "machat_history_lines_recorded_total";
    pub const RESTORED: &str = "machat_history_lines_restored_total";
    pub const PERSISTED: &str = "machat_history_lines_persisted_total";
    pub const DROPPED: &str = "machat_history_lines_dropped_total";
    pub const FAILED: &str = "machat_history_lines_failed_total";
    pub const QUEUE: &str = "machat_history_writer_queue";
    pub const WRITER_ERRORS: &str = "machat_history_writer_errors_total";
    pub const EVICTED_MEMORY: &str = "machat_history_lines_evicted_total{reason=\"memory\"}";
    pub const MEMORY_BYTES: &str = "machat_history_memory_bytes";
    pub const ROOMS: &str = "machat_history_rooms";
    pub const INVALID_HISTORY: &str = "machat_handshake_errors_total{reason=\"invalid_history\"}";
}

/// Every recorded line has been handed to the writer and dealt with:
/// committed, dropped at the full queue, or lost in a failed transaction.
fn writer_settled(metrics: &Metrics) -> bool {
    metrics.count(series::QUEUE) == 0
        && metrics.count(series::PERSISTED) + metrics.count(series::DROPPED) + metrics.count(series::FAILED)
            == metrics.count(series::RECORDED)
}

// ===========================================================================
// 1. Replay, then live
// ===========================================================================

/// Two members (TCP and WebSocket) say ten lines; a third joins with
/// `"history": 5` over `over` and gets `history: 5`, the last five lines
/// oldest first, then what is said after, and nothing else in between.
fn a_joiner_gets_the_latest_lines_then_live_ones(over: Over) {
    let server = TestServer::start();
    let mut ada = Member::Tcp(joined_tcp(server.tcp, "ada", "dev"));
    let mut bob = Member::ws(joined_ws(server.ws, "bob", "dev"));
    ada.expect("bob:hello");
    let mut said = vec!["ada:hello".to_owned(), "bob:hello".to_owned()];
    for i in 1..=10 {
        let (sender, name) = if i % 3 == 0 { (&mut bob, "bob") } else { (&mut ada, "ada") };
        sender.send_line(&format!("line {i}"));
        said.push(format!("{name}:line {i}"));
        // Both read it before the next is said: each line is delivered
        // (and so recorded) in the order of `said`.
        ada.expect(said.last().unwrap());
        bob.expect(said.last().unwrap());
    }

    let mut cy = Member::join(over, ports(&server), "cy", "dev", Some(5));
    cy.expect("history: 5");
    for line in &said[said.len() - 5..] {
        cy.expect(line);
    }
    bob.send_line("live");
    said.push("bob:live".to_owned());
    for member in [&mut cy, &mut ada, &mut bob] {
        member.expect("bob:live");
    }
    cy.send_line("thanks");
    said.push("cy:thanks".to_owned());
    for member in [&mut cy, &mut ada, &mut bob] {
        member.expect("cy:thanks");
    }

    // Asking for more than the room has gets what it has, and the marker
    // counts what follows, not what was asked.
    let mut dan = Member::join(over, ports(&server), "dan", "dev", Some(100));
    dan.expect(&format!("history: {}", said.len()));
    for line in &said {
        dan.expect(line);
    }
    ada.send_line("bye");
    dan.expect("ada:bye");
}

#[test]
fn a_tcp_joiner_gets_the_latest_lines_then_live_ones() {
    a_joiner_gets_the_latest_lines_then_live_ones(Over::Tcp);
}

#[test]
fn a_websocket_joiner_gets_the_latest_lines_then_live_ones() {
    a_joiner_gets_the_latest_lines_then_live_ones(Over::Ws);
}

// ===========================================================================
// 2. No gap, no repeat between replay and live
// ===========================================================================

/// Four senders never stop sending numbered lines (in writes of 1 to 16
/// lines) while members join one after another asking for 100 lines,
/// over TCP and WebSocket alternately. In each joiner's stream, replay
/// then live, every sender's numbers must run on by one up to its very
/// last line: a line delivered live and also replayed (a repeat), or
/// recorded after the replay was taken but not delivered to the joiner (a
/// gap), breaks the run. Several senders keep input waiting in nearly
/// every loop turn, so joins land in turns that also carry chat: with
/// the replay moved to the end of the turn (after the other reads of the
/// turn), 10 runs in 10 failed.
#[test]
fn replay_and_live_lines_meet_without_a_gap_or_a_repeat() {
    const SENDERS: usize = 4;
    const JOINERS: usize = 48;
    const ASKED: u64 = 100;
    /// Lines a sender may be ahead of its own echoes: it goes at the pace
    /// the server delivers, not the pace of the kernel's buffers.
    const WINDOW: u64 = 1000;
    let server = TestServer::start();
    let stop = Arc::new(AtomicBool::new(false));
    // Lines delivered back to their sender, over all senders.
    let delivered = Arc::new(AtomicU64::new(0));
    // All join before any sends, so each one's first line is its hello.
    let sources: Vec<TcpClient> =
        (0..SENDERS).map(|s| joined_tcp(server.tcp, &format!("src{s}"), "stream")).collect();
    let mut senders = Vec::new();
    for (s, mut source) in sources.into_iter().enumerate() {
        // Its echoes are read and counted, so it is never a slow reader.
        let echoed = Arc::new(AtomicU64::new(0));
        let echoes = std::io::BufReader::new(source.stream.try_clone().unwrap());
        {
            let (echoed, delivered) = (echoed.clone(), delivered.clone());
            let own = format!("src{s}:");
            thread::spawn(move || {
                use std::io::BufRead;
                for line in echoes.lines() {
                    let Ok(line) = line else { break };
                    if line.starts_with(&own) {
                        echoed.fetch_add(1, Ordering::Relaxed);
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        let stop = stop.clone();
        senders.push(thread::spawn(move || {
            let (mut next, mut seed) = (0u64, 12345 + s as u32);
            let mut chunk = String::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                while next > echoed.load(Ordering::Relaxed) + WINDOW {
                    assert!(started.elapsed() < TIMEOUT, "src{s}: echoes stopped at {next}");
                    thread::sleep(Duration::from_micros(100));
                }
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                chunk.clear();
                for _ in 0..1 + (seed >> 16) % 16 {
                    chunk.push_str(&format!("{next}\n"));
                    next += 1;
                }
                source.send_raw(chunk.as_bytes());
                // Writes spread over time rather than in bursts after each
                // flush, so they arrive while the server is in a turn.
                thread::sleep(Duration::from_micros(50));
            }
            source.send_line("end");
            next
        }));
    }
    let wait_delivered = |at_least: u64| {
        let started = Instant::now();
        while delivered.load(Ordering::Relaxed) < at_least {
            assert!(started.elapsed() < TIMEOUT, "delivery stalled at {}", delivered.load(Ordering::Relaxed));
            thread::sleep(Duration::from_millis(1));
        }
    };
    // The room has more than the 100 lines asked for before anyone joins.
    wait_delivered(400);

    let (joined, joined_signal) = mpsc::channel();
    let mut joiners = Vec::new();
    for k in 0..JOINERS {
        wait_delivered(400 + 100 * k as u64);
        let over = if k % 2 == 0 { Over::Tcp } else { Over::Ws };
        let (ports, joined) = (ports(&server), joined.clone());
        joiners.push(thread::spawn(move || {
            let mut member = Member::join(over, ports, &format!("j{k}"), "stream", Some(ASKED));
            let marker = member.read_line();
            let first = marker == format!("history: {ASKED}");
            joined.send((k, marker)).unwrap();
            if !first {
                return None;
            }
            // Each sender's numbers, in the order received; the first
            // ASKED lines are the replay.
            let mut numbers = vec![Vec::new(); SENDERS];
            let mut ended = 0;
            let mut received = 0;
            while ended < SENDERS {
                let line = member.read_line();
                let (name, text) =
                    line.split_once(':').unwrap_or_else(|| panic!("j{k}: unexpected {line:?}"));
                let s: usize = name.strip_prefix("src").and_then(|s| s.parse().ok()).unwrap_or_else(|| {
                    panic!("j{k}: unexpected {line:?}");
                });
                if text == "end" {
                    ended += 1;
                    continue;
                }
                let number: u64 = text.parse().unwrap_or_else(|_| panic!("j{k}: unexpected {line:?}"));
                if let Some(&last) = numbers[s].last() {
                    assert_eq!(
                        number,
                        last + 1,
                        "j{k} over {over:?}: src{s} {number} after {last}, line {received} \
                         (the replay is lines 0..{ASKED})"
                    );
                }
                numbers[s].push(number);
                received += 1;
            }
            Some((over, numbers, received))
        }));
    }
    for _ in 0..JOINERS {
        let (k, first) = joined_signal.recv_timeout(TIMEOUT).expect("every joiner got a first line");
        assert_eq!(first, format!("history: {ASKED}"), "j{k}'s first line");
    }
    // Everyone is in: plenty more live lines, then the end.
    wait_delivered(delivered.load(Ordering::Relaxed) + 2000);
    stop.store(true, Ordering::Relaxed);
    let totals: Vec<u64> = senders.into_iter().map(|sender| sender.join().unwrap()).collect();

    for (k, joiner) in joiners.into_iter().enumerate() {
        let (over, numbers, received) = joiner.join().unwrap().expect("a joiner that got its marker");
        for (s, numbers) in numbers.iter().enumerate() {
            assert_eq!(numbers.last(), Some(&(totals[s] - 1)), "j{k} over {over:?} got src{s}'s last line");
        }
        // It joined mid-stream: it was replayed a full 100 and got live lines too.
        assert!(received as u64 > ASKED, "j{k} over {over:?} got no live lines");
    }
}

// ===========================================================================
// 3. --history-on-join
// ===========================================================================

/// With `--history-on-join 3` a client that does not ask gets the 3
/// latest lines and no marker; one that asks for 0 gets `history: 0` and
/// nothing; one that asks for 2 gets what it asked for.
#[test]
fn history_on_join_replays_to_clients_that_do_not_ask_without_a_marker() {
    let server = TestServer::with_config(Config { history_on_join: 3, ..Config::ephemeral() });
    // The first member finds nothing to replay.
    let mut ada = Member::Tcp(joined_tcp(server.tcp, "ada", "dev"));
    for i in 1..=5 {
        ada.send_line(&format!("line {i}"));
        ada.expect(&format!("ada:line {i}"));
    }
    let mut plain_tcp = Member::join(Over::Tcp, ports(&server), "tom", "dev", None);
    let mut plain_ws = Member::join(Over::Ws, ports(&server), "wes", "dev", None);
    let mut zero = Member::join(Over::Tcp, ports(&server), "zed", "dev", Some(0));
    let mut two = Member::join(Over::Ws, ports(&server), "two", "dev", Some(2));
    for plain in [&mut plain_tcp, &mut plain_ws] {
        for i in 3..=5 {
            plain.expect(&format!("ada:line {i}"));
        }
    }
    zero.expect("history: 0");
    two.expect("history: 2");
    two.expect("ada:line 4");
    two.expect("ada:line 5");
    // Every joiner has had its replay (each was read to its end): what
    // comes next for each is live.
    ada.send_line("live");
    for member in [&mut ada, &mut plain_tcp, &mut plain_ws, &mut zero, &mut two] {
        member.expect("ada:live");
    }
}

/// By default (`--history-on-join 0`) a client that does not ask sees
/// only live lines, as with the original server, though the room has
/// history.
#[test]
fn by_default_a_client_that_does_not_ask_gets_only_live_lines() {
    let server = TestServer::start();
    let mut ada = joined_tcp(server.tcp, "ada", "dev");
    for i in 1..=5 {
        ada.send_line(&format!("line {i}"));
        ada.expect_line(&format!("ada:line {i}"));
    }
    let mut tom = Member::join(Over::Tcp, ports(&server), "tom", "dev", None);
    let mut wes = Member::join(Over::Ws, ports(&server), "wes", "dev", None);
    server.wait_for("three members", |s| s.members == 3);
    ada.send_line("live");
    ada.expect_line("ada:live");
    tom.expect("ada:live");
    wes.expect("ada:live");
    // The room did have history to give.
    let mut asker = tcp_with_history(server.tcp, "asker", "dev", 100);
    assert_eq!(read_replay(&mut asker).len(), 7, "ada:hello, five lines and ada:live");
}

// ===========================================================================
// 4. Invalid values
// ===========================================================================

const NOT_A_COUNT: &str = "error: handshake field \"history\" must be a whole number of lines";

/// Each invalid `history` gets its error line and a close, counted as
/// `invalid_history`; the chat line sent behind the handshake reaches
/// nobody, and the members of the room chat on.
#[test]
fn invalid_history_values_are_refused_and_counted() {
    let server = TestServer::start();
    let mut ada = Member::Tcp(joined_tcp(server.tcp, "ada", "dev"));
    let mut bob = Member::ws(joined_ws(server.ws, "bob", "dev"));
    ada.expect("bob:hello");

    let too_many = "error: handshake field \"history\" asks for 101 lines; this server keeps at most 100";
    let cases = [
        ("-1", NOT_A_COUNT),
        ("1.5", NOT_A_COUNT),
        ("\"5\"", NOT_A_COUNT),
        ("true", NOT_A_COUNT),
        ("[]", NOT_A_COUNT),
        ("{}", NOT_A_COUNT),
        ("null", NOT_A_COUNT),
        ("[1,{\"a\":2}]", NOT_A_COUNT),
        ("101", too_many),
    ];
    for (i, (value, error)) in cases.iter().enumerate() {
        let mut client = TcpClient::connect(server.tcp);
        let handshake = format!("{{\"name\":\"eve{i}\",\"room\":\"dev\",\"history\":{value}}}\nsneaky {i}\n");
        client.send_raw(handshake.as_bytes());
        assert_eq!(client.read_line(), *error, "history {value}");
        assert_eq!(client.read_to_close(), "", "history {value}: closed after the error");
    }
    // Over WebSocket: the error as a text message, then Close 1008.
    let mut web = WsClient::connect(server.ws);
    web.send_text(&handshake_with_history("eve-ws", "dev", json!("5")));
    assert_eq!(web.expect_error("history", 1008), format!("{NOT_A_COUNT}\n"));

    let metrics = Metrics::scrape(server.ws);
    assert_eq!(metrics.count(series::INVALID_HISTORY), cases.len() as u64 + 1);
    assert_eq!(metrics.count("machat_room_members"), 2, "only ada and bob are members");
    // The members chat on, and saw nothing of the refused clients.
    ada.send_line("still here");
    bob.expect("ada:still here");
    ada.expect("ada:still here");
    // A refused handshake claimed no name.
    let mut eve = tcp_with_history(server.tcp, "eve0", "dev", 1);
    assert_eq!(read_replay(&mut eve), ["ada:still here"]);
}

/// With `--history 0` (history off) asking for 1 line is too many, and
/// asking for 0 is fine: the marker says no lines follow.
#[test]
fn with_history_off_asking_for_lines_is_refused() {
    let server = TestServer::with_config(Config { history: 0, ..Config::ephemeral() });
    let mut ada = joined_tcp(server.tcp, "ada", "dev");
    let mut one = tcp_with_history(server.tcp, "one", "dev", 1);
    one.expect_error("handshake field \"history\" asks for 1 line; this server keeps at most 0");
    let mut zero = tcp_with_history(server.tcp, "zero", "dev", 0);
    zero.expect_line("history: 0");
    ada.send_line("live");
    zero.expect_line("ada:live");
    assert_eq!(Metrics::scrape(server.ws).count(series::INVALID_HISTORY), 1);
}

// ===========================================================================
// 5. The memory budget
// ===========================================================================

/// With `--history-memory 65536`, rooms filled one after another push the
/// least recently used out whole: a room replayed from is used, so it
/// outlives rooms filled after it. The budget holds after every room.
#[test]
fn the_memory_budget_drops_least_recently_used_rooms() {
    const BUDGET: usize = 65536;
    const LINES: usize = 10;
    let server = TestServer::with_config(Config { history_memory: BUDGET, ..Config::ephemeral() });
    let room = |i: usize| format!("room-{i:03}");
    let lines_of = |i: usize| -> Vec<String> {
        (0..LINES).map(|n| format!("{} line {n} {}", room(i), "x".repeat(180))).collect()
    };
    let mut recorded = 0;
    let mut fill = |i: usize| {
        let mut filler = TcpClient::join(server.tcp, "filler", &room(i));
        filler.send_raw(lines_of(i).iter().map(|line| format!("{line}\n")).collect::<String>().as_bytes());
        for line in lines_of(i) {
            filler.expect_line(&format!("filler:{line}"));
        }
        recorded += LINES as u64;
        server.wait_for("the lines recorded", |s| s.history_recorded == recorded)
    };
    let replayed = |i: usize, lines: u64| {
        let mut reader = tcp_with_history(server.tcp, &unique("reader"), &room(i), lines);
        read_replay(&mut reader)
    };
    let expected =
        |i: usize| -> Vec<String> { lines_of(i).iter().map(|line| format!("filler:{line}")).collect() };

    for i in 0..5 {
        fill(i);
    }
    // room-000 is used again: it is now more recent than room-001..004.
    assert_eq!(replayed(0, LINES as u64), expected(0));
    // Fill until four rooms' worth of lines has been evicted: room-001 to
    // room-004, the least recently used, and not room-000.
    let mut last = 4;
    loop {
        last += 1;
        assert!(last < 500, "nothing was ever evicted");
        let stats = fill(last);
        assert!(stats.history_bytes <= BUDGET as u64, "{} bytes held, budget {BUDGET}", stats.history_bytes);
        if stats.history_evicted_budget >= 4 * LINES as u64 {
            assert_eq!(stats.history_evicted_budget, 4 * LINES as u64, "whole rooms, one at a time");
            break;
        }
    }
    for evicted in 1..=4 {
        assert!(replayed(evicted, LINES as u64).is_empty(), "{} should have lost its history", room(evicted));
    }
    assert_eq!(replayed(0, LINES as u64), expected(0), "room-000 was used after room-001..004");
    assert_eq!(replayed(last, LINES as u64), expected(last), "the latest room keeps its history");

    let metrics = Metrics::scrape(server.ws);
    assert!(metrics.count(series::EVICTED_MEMORY) > 0);
    let held = metrics.count(series::MEMORY_BYTES);
    assert!(held > 0 && held <= BUDGET as u64, "history holds {held} bytes, budget {BUDGET}");
    let rooms = metrics.count(series::ROOMS);
    assert_eq!(rooms, (last + 1 - 4) as u64, "every room filled, but the four evicted, {last} filled");
}

// ===========================================================================
// 6. A restart with --history-db
// ===========================================================================

/// Chat in two rooms while the test holds the database locked, so the
/// writer is behind at SIGTERM and shutdown must wait for it (within
/// `--shutdown-grace`); exit 0. The same database again: members
/// who ask get the same lines, and lines said after the restart come
/// after them (in the replay, and numbered after them in the database).
/// A third room, too big for the second run's `--history-memory` and so
/// not loaded, still numbers its new lines after its stored ones, which
/// hold the highest numbers: the numbering continues from the database's
/// highest number, not from the lines that happened to be loaded.
#[test]
fn history_survives_a_restart_and_numbering_continues() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");

    let mut machat = Machat::start(&db_args(&db, &[]));
    let (tcp, ws) = machat.addresses();
    let mut ada = Member::Tcp(joined_tcp(tcp, "ada", "alpha"));
    let mut bob = Member::ws(joined_ws(ws, "bob", "alpha"));
    ada.expect("bob:hello");
    let mut cy = Member::Tcp(joined_tcp(tcp, "cy", "beta"));
    let mut alpha = vec!["ada:hello".to_owned(), "bob:hello".to_owned()];
    let mut beta = vec!["cy:hello".to_owned()];
    // The big room starts after alpha and beta, so its lines have the
    // highest numbers; it is quiet before they are, so it is the least
    // recently active, the room left out when loading runs out of budget.
    let mut big = joined_tcp(tcp, "big", "big");
    let long = "y".repeat(700);
    for i in 0..100 {
        big.send_line(&format!("{i} {long}"));
        big.expect_line(&format!("big:{i} {long}"));
    }
    Metrics::wait_for(ws, "the big room committed", writer_settled);
    // The writer is held up from here on: at the signal it is behind, and
    // shutdown must wait for it.
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    // Rooms are ordered by their latest line's millisecond.
    thread::sleep(Duration::from_millis(5));
    for i in 1..=4 {
        let (sender, name) = if i % 2 == 0 { (&mut bob, "bob") } else { (&mut ada, "ada") };
        sender.send_line(&format!("alpha {i}"));
        alpha.push(format!("{name}:alpha {i}"));
        ada.expect(alpha.last().unwrap());
        bob.expect(alpha.last().unwrap());
        cy.send_line(&format!("beta {i}"));
        beta.push(format!("cy:beta {i}"));
        cy.expect(beta.last().unwrap());
    }
    machat.signal(libc::SIGTERM);
    machat.wait_log("received signal");
    assert!(machat.child.try_wait().unwrap().is_none(), "machat exited with its writer still behind");
    // Shutdown waits (up to --shutdown-grace, 2 s) for the writer, which
    // goes on as soon as the lock is gone.
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    let status = machat.wait_exit();
    assert!(status.success(), "exit status {status}; log: {:#?}", machat.log);
    machat.wait_log("history: database closed");
    drop((ada, bob, cy, big));
    let stored_before = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        assert_eq!(texts(&stored_lines(&conn, "alpha")), alpha);
        assert_eq!(texts(&stored_lines(&conn, "beta")), beta);
        assert_eq!(stored_lines(&conn, "big").len(), 100, "the big room's latest 100 lines");
        conn.query_row("SELECT max(seq) FROM lines", [], |row| row.get::<_, i64>(0)).unwrap()
    };

    // 64 KiB of history: alpha and beta fit, the big room's 70 KB do not.
    let mut machat = Machat::start(&db_args(&db, &["--history-memory", "65536"]));
    let restored = machat.wait_log("history: ");
    let total = alpha.len() + beta.len();
    assert!(restored.starts_with(&format!("{total} lines of 2 rooms restored")), "{restored}");
    let (tcp, ws) = machat.addresses();
    for (room, lines) in [("alpha", &alpha), ("beta", &beta)] {
        let mut reader = tcp_with_history(tcp, &unique("reader"), room, 100);
        assert_eq!(&read_replay(&mut reader), lines, "{room} after the restart");
    }
    let mut dee = Member::join(Over::Ws, (tcp, ws), "dee", "alpha", Some(3));
    dee.expect("history: 3");
    for line in &alpha[alpha.len() - 3..] {
        dee.expect(line);
    }
    dee.send_line("after the restart");
    dee.expect("dee:after the restart");
    alpha.push("dee:after the restart".to_owned());
    let mut reader = tcp_with_history(tcp, &unique("reader"), "alpha", 100);
    assert_eq!(read_replay(&mut reader), alpha, "the new line comes after the restored ones");
    let mut big = tcp_with_history(tcp, "big", "big", 100);
    big.expect_line("history: 0");
    big.send_line("after the restart");
    big.expect_line("big:after the restart");

    let metrics = Metrics::wait_for(ws, "the writer to commit the new lines", writer_settled);
    assert_eq!(metrics.count(series::RESTORED), total as u64);
    assert_eq!(metrics.count(series::FAILED), 0, "no number was reused (the index is unique)");
    assert_eq!(metrics.count(series::PERSISTED), 2);
    machat.signal(libc::SIGTERM);
    assert!(machat.wait_exit().success(), "log: {:#?}", machat.log);

    let conn = rusqlite::Connection::open(&db).unwrap();
    let stored = stored_lines(&conn, "alpha");
    assert_eq!(texts(&stored), alpha, "stored in the order said, numbered in that order");
    assert!(stored.windows(2).all(|pair| pair[0].0 < pair[1].0), "numbers increase: {stored:?}");
    assert_eq!(texts(&stored_lines(&conn, "beta")), beta);
    let big = stored_lines(&conn, "big");
    assert_eq!(big.last().map(|(_, line)| line.as_str()), Some("big:after the restart"), "{big:?}");
    // A room's numbers run on from its own latest; a room whose history
    // starts afresh (the big one: nothing of it was loaded) starts above
    // every number stored, so it cannot reuse one of its old rows' numbers.
    let (seq, _) = big.last().unwrap();
    assert!(*seq > stored_before, "the big room's new line is numbered {seq}, not above {stored_before}");
    assert!(big.windows(2).all(|pair| pair[0].0 < pair[1].0), "numbers increase: {big:?}");
}

// ===========================================================================
// 7. SIGKILL
// ===========================================================================

/// Chat, wait for the writer to commit, then SIGKILL while a flood is
/// still being written: the database is intact, holds at least every line
/// committed when the kill was sent, and a server started on it serves
/// that history.
#[test]
fn a_killed_server_leaves_an_intact_database_that_serves_its_history() {
    const LINES: usize = 80;
    const FLOOD: u64 = 8000;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    // 10,000 lines per room: nothing is trimmed, so every committed line
    // must still be there.
    let args = db_args(&db, &["--history", "10000"]);
    let mut machat = Machat::start(&args);
    let (tcp, ws) = machat.addresses();

    let mut rooms = Vec::new();
    for room in ["a", "b", "c"] {
        let mut member = joined_tcp(tcp, "talker", room);
        let mut said = vec!["talker:hello".to_owned()];
        // In several writes, so in several transactions.
        for chunk in 0..LINES / 10 {
            let lines: Vec<String> = (0..10).map(|n| format!("{room} {}", chunk * 10 + n)).collect();
            member.send_raw(lines.iter().map(|line| format!("{line}\n")).collect::<String>().as_bytes());
            for line in lines {
                member.expect_line(&format!("talker:{line}"));
                said.push(format!("talker:{line}"));
            }
        }
        rooms.push((room, said, member));
    }
    let chatted = (3 * (LINES + 1)) as u64;
    Metrics::wait_for(ws, "the chat committed", |m| m.count(series::PERSISTED) >= chatted);

    // A flood, still being written when the kill comes.
    let mut flooder = joined_tcp(tcp, "flood", "d");
    let mut echoes = flooder.stream.try_clone().unwrap();
    thread::spawn(move || {
        let mut sink = vec![0; 1 << 16];
        while matches!(echoes.read(&mut sink), Ok(n) if n > 0) {}
    });
    let flood = thread::spawn(move || {
        for chunk in 0..FLOOD / 20 {
            let lines: String = (0..20).map(|n| format!("d-{}\n", chunk * 20 + n)).collect();
            if flooder.stream.write_all(lines.as_bytes()).is_err() {
                break; // killed
            }
        }
    });
    let committed = Metrics::wait_for(ws, "part of the flood committed", |m| {
        m.count(series::PERSISTED) >= chatted + 1000
    })
    .count(series::PERSISTED);
    machat.signal(libc::SIGKILL);
    let status = machat.wait_exit();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    flood.join().unwrap();

    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let check: String = conn.query_row("PRAGMA integrity_check", [], |row| row.get(0)).unwrap();
        assert_eq!(check, "ok");
        let rows: i64 = conn.query_row("SELECT count(*) FROM lines", [], |row| row.get(0)).unwrap();
        eprintln!("{committed} lines committed when killed, {rows} rows found");
        assert!(rows as u64 >= committed, "{rows} rows, but {committed} lines were committed");
        for (room, said, _) in &rooms {
            assert_eq!(&texts(&stored_lines(&conn, room)), said, "room {room}");
        }
    }

    let mut machat = Machat::start(&args);
    let (tcp, _) = machat.addresses();
    for (room, said, _) in &rooms {
        let mut reader = tcp_with_history(tcp, &unique("reader"), room, 100);
        assert_eq!(&read_replay(&mut reader), said, "room {room} after the kill");
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    let flooded = texts(&stored_lines(&conn, "d"));
    let mut reader = tcp_with_history(tcp, &unique("reader"), "d", 100);
    assert_eq!(read_replay(&mut reader), flooded[flooded.len() - 100..], "the flood's latest lines");
}

// ===========================================================================
// 8. A stalled writer
// ===========================================================================

/// The test holds the database's write lock (`BEGIN EXCLUSIVE`; in WAL
/// mode that blocks writers, not readers) while members chat: the writer
/// stalls in its busy wait, its queue fills and further lines are dropped
/// and counted, and chat goes on untouched. The lock is held past the
/// writer's 5 s busy timeout, so the transaction it was waiting on fails
/// and its lines are counted as failed; once the lock is released the
/// writer commits what it holds and what comes next. Every recorded line
/// ends up counted exactly once: persisted, dropped or failed.
#[test]
fn a_locked_database_drops_history_lines_but_not_chat() {
    const SENDERS: usize = 8;
    const LINES: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    // 10,000 lines per room: nothing is trimmed, so the rows are exactly
    // the lines committed.
    let mut machat = Machat::start(&db_args(&db, &["--history", "10000"]));
    let (tcp, ws) = machat.addresses();
    let mut reader = joined_tcp(tcp, "reader", "busy");
    let mut web = joined_ws(ws, "web", "busy");
    reader.expect_line("web:hello");
    let mut senders: Vec<TcpClient> =
        (0..SENDERS).map(|s| joined_tcp(tcp, &format!("s{s}"), "busy")).collect();
    for s in 0..SENDERS {
        reader.expect_line(&format!("s{s}:hello"));
        web.expect_text(&format!("s{s}:hello\n"));
    }
    let before = Metrics::wait_for(ws, "the writer to be idle", writer_settled).count(series::PERSISTED);
    assert_eq!(before, 2 + SENDERS as u64);

    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.busy_timeout(TIMEOUT).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let locked_at = Instant::now();

    // Each sender says a line and waits for its echo before the next, so
    // every line is a read, a batch, and a record for the writer: 1,600
    // records for a queue of 1,024.
    let threads: Vec<_> = senders
        .drain(..)
        .enumerate()
        .map(|(s, mut sender)| {
            thread::spawn(move || {
                for i in 0..LINES {
                    let line = format!("s{s}:{i}");
                    sender.send_line(&i.to_string());
                    while sender.read_line() != line {}
                }
                sender
            })
        })
        .collect();
    let readers: Vec<_> = [Over::Tcp, Over::Ws]
        .into_iter()
        .zip([Member::Tcp(reader), Member::ws(web)])
        .map(|(over, mut member)| {
            thread::spawn(move || {
                let mut next = [0; SENDERS];
                for _ in 0..SENDERS * LINES {
                    let line = member.read_line();
                    let (name, number) = line.split_once(':').unwrap();
                    let s: usize = name.strip_prefix('s').unwrap().parse().unwrap();
                    assert_eq!(number.parse::<usize>().unwrap(), next[s], "{over:?}: {line} out of turn");
                    next[s] += 1;
                }
                member
            })
        })
        .collect();
    let senders: Vec<TcpClient> = threads.into_iter().map(|thread| thread.join().unwrap()).collect();
    let mut members: Vec<Member> = readers.into_iter().map(|thread| thread.join().unwrap()).collect();

    let stalled = Metrics::scrape(ws);
    eprintln!(
        "with the database locked: {} lines said in {:?}, {} dropped, {} batches queued",
        SENDERS * LINES,
        locked_at.elapsed(),
        stalled.count(series::DROPPED),
        stalled.count(series::QUEUE)
    );
    assert!(stalled.count(series::DROPPED) > 0, "the queue never filled");
    assert_eq!(stalled.count(series::PERSISTED), before, "the writer committed through the lock");
    // All that chat took less than the writer's 5 s busy timeout: no
    // transaction has failed yet. A loop that waited for room in the
    // queue would have waited for that failure.
    assert_eq!(stalled.count(series::FAILED), 0, "chat waited for the writer");
    // Past the busy timeout the writer gives the transaction up.
    let failed = Metrics::wait_for(ws, "the locked transaction to fail", |m| m.count(series::FAILED) > 0);
    assert!(locked_at.elapsed() >= Duration::from_secs(5), "failed before the 5 s busy timeout");
    assert!(failed.count(series::WRITER_ERRORS) > 0);
    assert_eq!(failed.count(series::PERSISTED), before);
    lock.execute_batch("ROLLBACK").unwrap();

    // The writer resumes: what it held is committed, and so is a new line.
    let resumed = Metrics::wait_for(ws, "the writer to resume", |m| {
        m.count(series::PERSISTED) > before && writer_settled(m)
    });
    drop(senders);
    members[0].send_line("after the lock");
    for member in &mut members {
        member.expect("reader:after the lock");
    }
    let settled = Metrics::wait_for(ws, "the new line committed", |m| {
        m.count(series::PERSISTED) == resumed.count(series::PERSISTED) + 1 && writer_settled(m)
    });
    eprintln!(
        "persisted {}, dropped {}, failed {} of {} recorded",
        settled.count(series::PERSISTED),
        settled.count(series::DROPPED),
        settled.count(series::FAILED),
        settled.count(series::RECORDED)
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows: i64 = conn.query_row("SELECT count(*) FROM lines", [], |row| row.get(0)).unwrap();
    assert_eq!(rows as u64, settled.count(series::PERSISTED), "every committed line is a row");
    drop(machat);
}

// ===========================================================================
// 9. Databases refused at start
// ===========================================================================

/// A path that cannot be opened, a file that is not a database and a
/// database of a newer schema are refused before anything listens: exit
/// status 1 and one error line naming the file. The files are left as
/// they were.
#[test]
fn unusable_databases_are_refused_at_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let directory = dir.path().join("a-directory");
    std::fs::create_dir(&directory).unwrap();
    let missing = dir.path().join("no-such-dir").join("history.db");
    let text = dir.path().join("notes.txt");
    let notes = "these are not the rows you are looking for\n".repeat(100);
    std::fs::write(&text, &notes).unwrap();
    let newer = dir.path().join("newer.db");
    {
        let conn = rusqlite::Connection::open(&newer).unwrap();
        conn.execute_batch("CREATE TABLE lines (x); PRAGMA user_version = 99;").unwrap();
    }
    let cases = [
        (&directory, "cannot open"),
        (&missing, "cannot open"),
        (&text, "file is not a database"),
        (&newer, "schema version 99 is newer than this machat reads"),
    ];
    for (path, reason) in cases {
        let output = Command::new(common::MACHAT)
            .args(db_args(path, &[]))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .output()
            .expect("run machat");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{}: {stderr}", path.display());
        let errors: Vec<&str> = stderr.lines().filter(|line| line.contains("ERROR")).collect();
        assert_eq!(errors.len(), 1, "one error line: {stderr}");
        let expected = format!("cannot start: history database {}: ", path.display());
        assert!(errors[0].contains(&expected), "{:?} should contain {expected:?}", errors[0]);
        assert!(errors[0].contains(reason), "{:?} should say {reason:?}", errors[0]);
        assert!(stderr.lines().all(|line| line.starts_with('[')), "no line of the error runs on: {stderr}");
        assert!(!stderr.contains("listening"), "nothing listens: {stderr}");
    }
    assert_eq!(std::fs::read_to_string(&text).unwrap(), notes, "the text file is untouched");
    let conn = rusqlite::Connection::open(&newer).unwrap();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0)).unwrap();
    let journal: String = conn.query_row("PRAGMA journal_mode", [], |row| row.get(0)).unwrap();
    assert_eq!((version, journal.as_str()), (99, "delete"), "the newer database is untouched");
}
