//! Cluster mode against a real `redis-server` (issue #14, item 7): nodes
//! in this process (`TestServer` with `Config::cluster`) and `machat`
//! binaries (for signals and flags), TCP and WebSocket members spread over
//! them, and Redis killed, restarted and paused under them.
//!
//! Every wait is bounded (by [`TIMEOUT`] unless a test says less), and
//! every wait is for something observable: a line, a counter, a key or a
//! subscription in Redis. The few fixed windows are observations ("the
//! name stays held for this long"), never a sleep that hopes something
//! happened meanwhile.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::{HttpReply, Machat, TIMEOUT, TcpClient, TestServer, WsClient, joined_tcp};
use machat::{Config, Stats};

// ===========================================================================
// Helpers
// ===========================================================================

/// A node in this process on ephemeral ports, in the cluster on `redis`.
fn node(redis: &RedisServer, id: &str) -> TestServer {
    node_with(redis, id, |_| {})
}

/// [`node`], with `adjust` applied to its configuration.
fn node_with(redis: &RedisServer, id: &str, adjust: impl FnOnce(&mut Config)) -> TestServer {
    let mut config =
        Config { cluster: Some(redis.url()), node_id: Some(id.to_owned()), ..Config::ephemeral() };
    adjust(&mut config);
    TestServer::with_config(config)
}

/// A `machat` binary on ephemeral ports in the cluster on `url`, with
/// `extra` flags; returns it with its TCP and WebSocket addresses.
fn binary(url: &str, id: &str, extra: &[&str]) -> (Machat, SocketAddr, SocketAddr) {
    let mut args = vec!["--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--cluster", url, "--node-id", id];
    args.extend_from_slice(extra);
    let mut machat = Machat::start(&args);
    let (tcp, ws) = machat.addresses();
    (machat, tcp, ws)
}

/// Polls `probe` until it gives a value, for at most `limit`.
fn wait_within<T>(limit: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Polls `probe` until it gives a value, for at most [`TIMEOUT`].
fn wait_until<T>(what: &str, probe: impl FnMut() -> Option<T>) -> T {
    wait_within(TIMEOUT, what, probe)
}

/// The Redis key of `name` in `room`: both folded to their uniqueness
/// keys, as the server does (`mina` is `rnina`: `m` looks like `rn`).
fn name_key(room: &str, name: &str) -> String {
    let name =
        machat::internal::names::check_name(name).unwrap_or_else(|_| panic!("a valid name: {name:?}")).key;
    format!("machat:name:{}:{name}", room_key(room))
}

/// A room's uniqueness key, as its Redis channel and keys spell it.
fn room_key(room: &str) -> Box<str> {
    machat::internal::names::check_room(room).unwrap_or_else(|_| panic!("a valid room: {room:?}")).key
}

/// The room's pub/sub channel.
fn channel(room: &str) -> String {
    format!("machat:room:{}", room_key(room))
}

/// Which node holds `name` in `room`, according to Redis.
fn holder(redis: &RedisServer, room: &str, name: &str) -> Option<String> {
    let value = redis.command(&["GET", &name_key(room, name)]);
    (value != "(nil)").then_some(value)
}

/// How many connections (nodes) are subscribed to `room`'s channel.
fn subscribers(redis: &RedisServer, room: &str) -> u64 {
    let reply = redis.command(&["PUBSUB", "NUMSUB", &channel(room)]);
    reply
        .lines()
        .nth(1)
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("NUMSUB said {reply:?}"))
}

/// Waits until `nodes` nodes listen to `room` in Redis: a line published
/// from now on reaches every one of them.
fn wait_subscribers(redis: &RedisServer, room: &str, nodes: u64) {
    wait_until(&format!("{nodes} nodes subscribed to {room}"), || {
        (subscribers(redis, room) == nodes).then_some(())
    });
}

/// Waits until the node's published counters satisfy `condition`.
fn wait_stats(node: &TestServer, what: &str, condition: impl Fn(&Stats) -> bool) -> Stats {
    node.wait_for(what, condition)
}

/// Cluster state as published in `Stats::cluster_state`.
const CONNECTED: u64 = 1;
const RECONNECTING: u64 = 3;

/// Waits until both of the node's Redis links are up. A node connects
/// on its loop after the start-up PING: until then, a Redis restart is
/// no loss to it, just its first connection.
fn wait_connected(node: &TestServer) {
    wait_stats(node, "both Redis links up", |stats| stats.cluster_state == CONNECTED);
}

/// A plain `GET` on the WebSocket port.
fn http_get(address: SocketAddr, path: &str) -> HttpReply {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: machat\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    HttpReply::read_from(&mut stream)
}

/// `/healthz`'s body without its final newline; it must answer 200
/// whatever the cluster's state.
fn healthz(address: SocketAddr) -> String {
    let reply = http_get(address, "/healthz");
    assert!(reply.status_line.contains(" 200 "), "/healthz: {reply:?}");
    reply.body.strip_suffix('\n').unwrap_or_else(|| panic!("no final newline: {:?}", reply.body)).to_owned()
}

/// `/metrics`, parsed: every sample by its series (`name{labels}`), and
/// every family's type.
struct Metrics {
    samples: HashMap<String, f64>,
    types: HashMap<String, String>,
}

impl Metrics {
    fn fetch(address: SocketAddr) -> Metrics {
        let reply = http_get(address, "/metrics");
        assert!(reply.status_line.contains(" 200 "), "/metrics: {reply:?}");
        Metrics::parse(&reply.body)
    }

    fn parse(text: &str) -> Metrics {
        let mut samples = HashMap::new();
        let mut types = HashMap::new();
        for line in text.lines() {
            if let Some(declaration) = line.strip_prefix("# TYPE ") {
                let (family, kind) = declaration.split_once(' ').expect("# TYPE name kind");
                types.insert(family.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("a sample: {line:?}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("a number in {line:?}"));
            let family = series.split('{').next().unwrap();
            assert!(types.contains_key(family), "{series} comes before its # TYPE line");
            assert!(samples.insert(series.to_owned(), value).is_none(), "{series} twice");
        }
        Metrics { samples, types }
    }

    /// A sample's value, which must be there and be a whole number.
    fn get(&self, series: &str) -> u64 {
        let value = *self.samples.get(series).unwrap_or_else(|| panic!("no sample {series}"));
        assert!(value >= 0.0 && value.fract() == 0.0, "{series} is {value}");
        value as u64
    }

    /// The family's type (`counter`, `gauge`).
    fn kind(&self, family: &str) -> &str {
        self.types.get(family).unwrap_or_else(|| panic!("no family {family}"))
    }
}

/// The state `/metrics` reports: the one `machat_cluster_state` series at
/// 1 (the others must be 0).
fn metrics_state(metrics: &Metrics) -> &'static str {
    let states = ["connected", "connecting", "reconnecting"];
    let on: Vec<&str> = states
        .into_iter()
        .filter(|state| metrics.get(&format!("machat_cluster_state{{state=\"{state}\"}}")) == 1)
        .collect();
    assert!(on.len() <= 1, "several cluster states at once: {on:?}");
    on.first().copied().unwrap_or("off")
}

/// A member over either transport, as the original clients behave.
enum Conn {
    Tcp(TcpClient),
    Ws(Box<WsClient>),
}

struct Member {
    name: String,
    conn: Conn,
}

impl Member {
    /// Sends the handshake over TCP; the join is confirmed elsewhere (by
    /// the node's counters), so no line of its own reaches the others.
    fn tcp(address: SocketAddr, name: &str, room: &str) -> Member {
        Member { name: name.to_owned(), conn: Conn::Tcp(TcpClient::join(address, name, room)) }
    }

    /// Sends the handshake over WebSocket; see [`Member::tcp`].
    fn ws(address: SocketAddr, name: &str, room: &str) -> Member {
        Member { name: name.to_owned(), conn: Conn::Ws(Box::new(WsClient::join(address, name, room))) }
    }

    fn send(&mut self, text: &str) {
        match &mut self.conn {
            Conn::Tcp(client) => client.send_line(text),
            Conn::Ws(client) => client.send_line(text),
        }
    }

    /// The next line (one WebSocket message is one line), without `\n`.
    fn read_line(&mut self) -> String {
        match &mut self.conn {
            Conn::Tcp(client) => client.read_line(),
            Conn::Ws(client) => {
                let text = client.read_text();
                let line = text.strip_suffix('\n').unwrap_or_else(|| panic!("no newline in {text:?}"));
                assert!(!line.contains('\n'), "one line per message, got {text:?}");
                line.to_owned()
            }
        }
    }

    fn expect_line(&mut self, expected: &str) {
        let line = self.read_line();
        assert_eq!(line, expected, "{} expected {expected:?}", self.name);
    }

    /// The server's error line, then the close.
    fn expect_error(&mut self, reason_contains: &str) -> String {
        match &mut self.conn {
            Conn::Tcp(client) => client.expect_error(reason_contains),
            Conn::Ws(client) => client.expect_error(reason_contains, 1008),
        }
    }
}

/// Joins over TCP, expects the handshake to be refused, and returns the
/// error line.
fn refused_tcp(address: SocketAddr, name: &str, room: &str) -> String {
    TcpClient::join(address, name, room).expect_error("")
}

/// Sends a process a signal.
fn kill(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).unwrap();
    // SAFETY: kill(2) has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill({pid}, {signal})");
}

/// Waits until the process is stopped by a signal (`stopped`) or runs.
fn wait_stopped(pid: u32, stopped: bool) {
    wait_until(&format!("process {pid} stopped: {stopped}"), || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
        (matches!(state, Some("T")) == stopped).then_some(())
    });
}

// ===========================================================================
// 1. Messages: exactly once, in per-sender order, over 2 and 3 nodes.
// ===========================================================================

/// Lines each member sends in the exactly-once tests.
const LINES_PER_SENDER: usize = 40;

/// One TCP and one WebSocket member on each node, in one room; every
/// member sends numbered lines, interleaved with the others; every member
/// must get every line exactly once, each sender's in order, and nothing
/// else.
fn every_line_exactly_once(nodes: &[TestServer], redis: &RedisServer) {
    let room = "dev";
    let mut members = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        members.push(Member::tcp(node.tcp, &format!("t{i}"), room));
        members.push(Member::ws(node.ws, &format!("w{i}"), room));
    }
    for node in nodes {
        wait_stats(node, "both local members to join", |stats| stats.members == 2);
    }
    wait_subscribers(redis, room, nodes.len() as u64);

    for k in 0..LINES_PER_SENDER {
        for member in &mut members {
            let text = format!("{}-{k}", member.name);
            member.send(&text);
        }
    }
    let senders: Vec<String> = members.iter().map(|member| member.name.clone()).collect();
    for member in &mut members {
        let mut next: HashMap<&str, usize> = senders.iter().map(|name| (name.as_str(), 0)).collect();
        let total = senders.len() * LINES_PER_SENDER;
        for received in 0..total {
            let line = member.read_line();
            let (sender, text) =
                line.split_once(':').unwrap_or_else(|| panic!("{}: not a chat line: {line:?}", member.name));
            let expected = next
                .get_mut(sender)
                .unwrap_or_else(|| panic!("{}: a line from nobody: {line:?}", member.name));
            assert_eq!(
                text,
                format!("{sender}-{expected}"),
                "{}: line {received} of {total} out of order, lost or repeated",
                member.name
            );
            *expected += 1;
        }
        assert!(next.values().all(|&count| count == LINES_PER_SENDER));
    }

    // Nothing more: a repeated batch (a node delivering its own payload
    // again, or another's twice) would come before these barriers, which
    // each node sends after every member saw everything above. Redis
    // delivers to each subscriber in the order it took the publishes.
    for i in 0..nodes.len() {
        let sender = 2 * i;
        members[sender].send("fin");
        let expected = format!("t{i}:fin");
        for member in &mut members {
            member.expect_line(&expected);
        }
    }

    for (i, node) in nodes.iter().enumerate() {
        let stats = node.stats();
        assert_eq!(stats.cluster_state, CONNECTED, "node {i}");
        assert_eq!(stats.cluster_publishes_dropped, 0, "node {i}");
        assert_eq!(stats.cluster_lines_dropped, 0, "node {i}");
        assert_eq!(stats.cluster_payloads_refused, 0, "node {i}");
        assert!(
            stats.cluster_publishes_sent >= 1 && stats.cluster_payloads_received >= 1,
            "node {i}: {stats:#?}"
        );
        // Each local line was read once and published at most once per
        // turn: never more publishes than the node's own lines.
        assert!(stats.cluster_publishes_sent <= stats.messages_in, "node {i}: {stats:#?}");
        assert_eq!(stats.cluster_claims, 2, "node {i}");
        assert_eq!(stats.cluster_subscriptions, 1, "node {i}");
    }
}

#[test]
fn two_nodes_deliver_every_line_exactly_once_in_per_sender_order() {
    let redis = RedisServer::start();
    let nodes = [node(&redis, "a"), node(&redis, "b")];
    every_line_exactly_once(&nodes, &redis);
}

#[test]
fn three_nodes_deliver_every_line_exactly_once_in_per_sender_order() {
    let redis = RedisServer::start();
    let nodes = [node(&redis, "a"), node(&redis, "b"), node(&redis, "c")];
    every_line_exactly_once(&nodes, &redis);
}

// ===========================================================================
// 2. Names across nodes.
// ===========================================================================

#[test]
fn a_name_held_on_one_node_is_refused_on_another_and_free_again_after_leave() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mina = joined_tcp(a.tcp, "Mina", "dev");
    assert_eq!(holder(&redis, "dev", "mina").as_deref(), Some("a"));

    // The usual error, over both transports, for the same name in another
    // spelling too (names are folded).
    let refused = refused_tcp(b.tcp, "Mina", "dev");
    assert_eq!(refused, "error: name \"Mina\" is already taken in room \"dev\"");
    let refused = Member::ws(b.ws, "MINA", "DEV").expect_error("is already taken");
    assert!(refused.starts_with("error: name \"MINA\" is already taken in room"), "{refused:?}");
    let stats = wait_stats(&b, "the refusals counted", |stats| stats.cluster_claim_conflicts == 2);
    assert_eq!(stats.handshake_errors_for("name_taken"), 2);
    assert_eq!((stats.cluster_claims, stats.members), (0, 0));
    // The same name in another room is another name.
    drop(joined_tcp(b.tcp, "Mina", "ops"));

    // Mina leaves: her node deletes its claim (compare and delete).
    drop(mina);
    wait_until("Mina's claim to be released", || holder(&redis, "dev", "mina").is_none().then_some(()));
    let mut mina_b = joined_tcp(b.tcp, "Mina", "dev");
    assert_eq!(holder(&redis, "dev", "mina").as_deref(), Some("b"));
    // Now it is the first node that refuses it.
    assert_eq!(refused_tcp(a.tcp, "mina", "dev"), "error: name \"mina\" is already taken in room \"dev\"");
    mina_b.send_line("still here");
    mina_b.expect_line("Mina:still here");
}

// ===========================================================================
// 3. A crashed node's names expire.
// ===========================================================================

#[test]
fn a_node_killed_with_sigkill_frees_its_names_after_the_ttl() {
    const TTL: Duration = Duration::from_secs(1);
    let redis = RedisServer::start();
    let (mut a, a_tcp, _) = binary(&redis.url(), "a", &["--cluster-name-ttl", "1"]);
    let b = node(&redis, "b");
    let _kim = joined_tcp(a_tcp, "Kim", "dev");
    assert_eq!(holder(&redis, "dev", "kim").as_deref(), Some("a"));
    let pttl: u64 = redis.command(&["PTTL", &name_key("dev", "kim")]).parse().unwrap();
    assert!(pttl <= TTL.as_millis() as u64, "the claim lives --cluster-name-ttl at most: {pttl} ms");

    // While the node lives, its claim is refreshed: held well past one TTL.
    let watched = Instant::now();
    while watched.elapsed() < TTL + TTL / 2 {
        assert_eq!(holder(&redis, "dev", "kim").as_deref(), Some("a"), "a live node's name expired");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(refused_tcp(b.tcp, "Kim", "dev").contains("is already taken"));

    a.child.kill().expect("SIGKILL node a");
    let killed = Instant::now();
    a.child.wait().unwrap();
    // Not freed by the kill itself: the claim was refreshed less than a
    // TTL ago and nobody deletes it.
    assert!(refused_tcp(b.tcp, "Kim", "dev").contains("is already taken"), "freed at once by the kill");

    // Freed when the claim expires: a join on b is retried until it works.
    let kim_b = wait_within(TTL * 4, "Kim to be free on b after the kill", || {
        let mut client = TcpClient::join(b.tcp, "Kim", "dev");
        client.send_line("mine now");
        let line = client.read_line();
        if line == "Kim:mine now" {
            return Some(client);
        }
        assert!(line.contains("is already taken"), "unexpected answer {line:?}");
        std::thread::sleep(Duration::from_millis(50));
        None
    });
    let freed_after = killed.elapsed();
    eprintln!("Kim was free on b {freed_after:?} after the kill");
    assert!(freed_after <= TTL + Duration::from_millis(900), "freed only after {freed_after:?}");
    assert_eq!(holder(&redis, "dev", "kim").as_deref(), Some("b"));
    drop(kim_b);
}

// ===========================================================================
// 4. Lost links: CLIENT KILL and a Redis restart.
// ===========================================================================

/// `members[from]` says `text`, and every member (the sender too) gets it
/// as its next line.
fn say(members: &mut [Member], from: usize, text: &str) {
    members[from].send(text);
    let expected = format!("{}:{text}", members[from].name);
    for member in members.iter_mut() {
        member.expect_line(&expected);
    }
}

#[test]
fn after_client_kill_type_pubsub_the_nodes_resubscribe_and_chat_again() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut members = vec![Member::tcp(a.tcp, "Ann", "dev"), Member::ws(b.ws, "Bob", "dev")];
    for node in [&a, &b] {
        wait_stats(node, "the member to join", |stats| stats.members == 1);
    }
    wait_subscribers(&redis, "dev", 2);
    say(&mut members, 0, "before");
    say(&mut members, 1, "before too");
    let before = [a.stats().cluster_reconnects, b.stats().cluster_reconnects];
    assert_eq!(before, [0, 0]);

    let killed = redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_eq!(killed, "2", "both nodes' subscriber links are killed");
    for (i, node) in [&a, &b].into_iter().enumerate() {
        let stats = wait_stats(node, "a reconnect", |stats| {
            stats.cluster_reconnects > before[i]
                && stats.cluster_state == CONNECTED
                && stats.cluster_subscriptions == 1
        });
        assert_eq!(stats.cluster_reconnects, 1, "node {i}: only the subscriber link was lost");
    }
    wait_until("the room in PUBSUB CHANNELS again", || {
        (redis.command(&["PUBSUB", "CHANNELS", "machat:room:*"]) == channel("dev")).then_some(())
    });
    wait_subscribers(&redis, "dev", 2);
    say(&mut members, 0, "after");
    say(&mut members, 1, "after too");
    // The commands link was not touched: names still held, nothing dropped.
    assert_eq!(holder(&redis, "dev", "ann").as_deref(), Some("a"));
    assert_eq!(holder(&redis, "dev", "bob").as_deref(), Some("b"));
    assert_eq!(a.stats().cluster_publishes_dropped + b.stats().cluster_publishes_dropped, 0);
    let metrics = Metrics::fetch(a.ws);
    assert_eq!(metrics.get("machat_cluster_reconnects_total"), 1);
}

#[test]
fn after_a_redis_restart_the_nodes_reclaim_resubscribe_and_count_what_was_dropped() {
    let mut redis = RedisServer::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut members = vec![
        Member::tcp(a.tcp, "Ann", "dev"),
        Member::ws(a.ws, "Amy", "dev"),
        Member::tcp(b.tcp, "Bob", "dev"),
    ];
    wait_stats(&a, "a's members", |stats| stats.members == 2);
    wait_stats(&b, "b's member", |stats| stats.members == 1);
    wait_subscribers(&redis, "dev", 2);
    say(&mut members, 0, "before");
    say(&mut members, 2, "before too");

    redis.stop();
    for node in [&a, &b] {
        wait_stats(node, "the loss to be noticed", |stats| stats.cluster_state == RECONNECTING);
    }
    assert!(healthz(a.ws).ends_with("cluster: reconnecting"));
    // Local chat goes on; what would go to the other node is dropped and
    // counted.
    const LOST: u64 = 3;
    for k in 0..LOST {
        let text = format!("lost {k}");
        members[0].send(&text);
        for member in &mut members[..2] {
            member.expect_line(&format!("Ann:{text}"));
        }
    }
    let stats = wait_stats(&a, "the dropped lines counted", |stats| stats.cluster_lines_dropped == LOST);
    assert!((1..=LOST).contains(&stats.cluster_publishes_dropped), "{stats:#?}");
    assert_eq!(stats.cluster_publishes_sent, 1, "only Ann's line before the outage: {stats:#?}");

    redis.restart();
    for node in [&a, &b] {
        // Both links are lost and connected again.
        wait_stats(node, "the reconnect", |stats| {
            stats.cluster_state == CONNECTED && stats.cluster_reconnects >= 2
        });
    }
    // The empty Redis learns the names again as the links come back (not
    // at the next refresh, a third of --cluster-name-ttl, 10 s, away), and
    // the subscriptions.
    wait_within(Duration::from_secs(3), "the names claimed again", || {
        let holders =
            [holder(&redis, "dev", "ann"), holder(&redis, "dev", "amy"), holder(&redis, "dev", "bob")];
        (holders == [Some("a".into()), Some("a".into()), Some("b".into())]).then_some(())
    });
    wait_subscribers(&redis, "dev", 2);
    assert!(healthz(a.ws).ends_with("cluster: connected"));

    // Bob never got the lost lines: the first thing he reads is his own.
    say(&mut members, 2, "back");
    say(&mut members, 1, "back too");
    let metrics = Metrics::fetch(a.ws);
    assert_eq!(metrics.get("machat_cluster_lines_dropped_total"), LOST);
    assert_eq!(
        metrics.get("machat_cluster_publishes_total{outcome=\"dropped\"}"),
        a.stats().cluster_publishes_dropped
    );
    assert_eq!(b.stats().cluster_lines_dropped, 0, "b said nothing during the outage");
    assert_eq!(a.stats().cluster_names_lost + b.stats().cluster_names_lost, 0);
}

// ===========================================================================
// 5. Redis paused (SIGSTOP).
// ===========================================================================

#[test]
fn with_redis_paused_local_chat_goes_on_and_new_joins_fail_clearly() {
    const JOIN_WAIT: Duration = Duration::from_millis(500);
    let mut redis = RedisServer::start();
    let a = node_with(&redis, "a", |config| {
        config.cluster_join_wait = JOIN_WAIT;
        config.handshake_timeout = Duration::from_secs(4);
    });
    let mut members = vec![Member::tcp(a.tcp, "Ann", "dev"), Member::ws(a.ws, "Amy", "dev")];
    wait_stats(&a, "the members", |stats| stats.members == 2);
    wait_connected(&a);
    say(&mut members, 0, "before");

    redis.pause();
    // Local chat goes on.
    say(&mut members, 1, "during");
    say(&mut members, 0, "during too");
    eprintln!("while Redis is stopped: {:?}", healthz(a.ws));

    // A new join gets a clear answer within about --cluster-join-wait.
    let started = Instant::now();
    let mut cat = TcpClient::join(a.tcp, "Cat", "dev");
    let answer = cat.read_line();
    let took = started.elapsed();
    eprintln!("a join while Redis is stopped got {answer:?} after {took:?}");
    assert_eq!(answer, "error: cluster unavailable", "after {took:?}");
    assert!(took < JOIN_WAIT + Duration::from_secs(1), "answered only after {took:?}");
    assert_eq!(cat.read_to_close(), "");
    // (The counters are published at the end of the turn that wrote the
    // error: wait for them.)
    let stats =
        wait_stats(&a, "the refusal counted", |stats| stats.handshake_errors_for("cluster_unavailable") == 1);
    assert_eq!(stats.cluster_claims_unavailable, 1);
    assert_eq!(stats.handshake_errors_for("timeout"), 0);

    redis.resume();
    // Joins work again (the claim may wait for Redis to catch up).
    let mut dan = Member::tcp(a.tcp, "Dan", "dev");
    dan.send("back");
    dan.expect_line("Dan:back");
    for member in &mut members {
        member.expect_line("Dan:back");
    }
    assert_eq!(holder(&redis, "dev", "dan").as_deref(), Some("a"));
    // Cat's claim, if it reached Redis, is not left behind for nobody.
    wait_until("no claim for Cat", || holder(&redis, "dev", "cat").is_none().then_some(()));
}

/// A Redis that stops answering for longer than the reply timeout (5 s) is
/// given up: the node says it is reconnecting and drops (and counts) what
/// it would have published, instead of queueing it; when Redis answers
/// again, the node connects again and chat crosses nodes again.
#[test]
fn a_redis_that_stops_answering_is_given_up_and_connected_again() {
    let mut redis = RedisServer::start();
    let a = node(&redis, "a");
    let b = node(&redis, "b");
    let mut members = vec![Member::tcp(a.tcp, "Ann", "dev"), Member::tcp(b.tcp, "Bob", "dev")];
    wait_stats(&a, "a's member", |stats| stats.members == 1);
    wait_stats(&b, "b's member", |stats| stats.members == 1);
    wait_connected(&a);
    wait_connected(&b);
    wait_subscribers(&redis, "dev", 2);
    say(&mut members, 0, "before");

    redis.pause();
    // Ann's line is published into the stopped Redis: a reply is owed.
    members[0].send("into the silence");
    members[0].expect_line("Ann:into the silence");
    wait_within(Duration::from_secs(10), "a gives Redis up", || (a.stats().cluster_state == 3).then_some(()));
    assert!(healthz(a.ws).contains("cluster: reconnecting"), "{}", healthz(a.ws));
    // Now a line cannot be sent: dropped and counted, and local delivery
    // goes on.
    let dropped = a.stats().cluster_lines_dropped;
    members[0].send("dropped");
    members[0].expect_line("Ann:dropped");
    wait_stats(&a, "the drop counted", |stats| stats.cluster_lines_dropped > dropped);

    redis.resume();
    wait_connected(&a);
    wait_connected(&b);
    wait_subscribers(&redis, "dev", 2);
    members[0].send("after");
    members[0].expect_line("Ann:after");
    // Bob gets "after" (and maybe the line Redis held while stopped), not
    // the dropped one.
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("Ann:after") {
        seen.push(members[1].read_line());
    }
    assert!(!seen.iter().any(|line| line == "Ann:dropped"), "{seen:?}");
}

// ===========================================================================
// 6. A name taken elsewhere during an outage.
// ===========================================================================

#[test]
fn a_name_another_node_took_during_an_outage_is_taken_from_its_holder() {
    let mut redis = RedisServer::start();
    // A long TTL: a's next refresh is 20 s away, so only its re-claim on
    // reconnecting can find the name taken within the bound below.
    let (mut a, a_tcp, a_ws) = binary(&redis.url(), "a", &["--cluster-name-ttl", "60"]);
    let b = node(&redis, "b");
    wait_connected(&b);
    let mut x_on_a = joined_tcp(a_tcp, "x", "dev");
    assert_eq!(holder(&redis, "dev", "x").as_deref(), Some("a"));

    // a is frozen while Redis restarts empty: it misses the whole outage.
    let pid = a.child.id();
    kill(pid, libc::SIGSTOP);
    wait_stopped(pid, true);
    assert_eq!(b.stats().cluster_reconnects, 0);
    redis.restart();
    wait_stats(&b, "b to reconnect", |stats| {
        stats.cluster_state == CONNECTED && stats.cluster_reconnects >= 2
    });
    let mut x_on_b = joined_tcp(b.tcp, "x", "dev");
    assert_eq!(holder(&redis, "dev", "x").as_deref(), Some("b"));

    // a wakes up, reconnects, claims its names again and finds x taken.
    kill(pid, libc::SIGCONT);
    let woken = Instant::now();
    wait_stopped(pid, false);
    x_on_a.expect_error("name taken elsewhere");
    let took = woken.elapsed();
    assert!(took < Duration::from_secs(3), "a's holder was told only {took:?} after a woke up");
    a.wait_log("its name was taken on another node");
    let metrics = wait_until("a to count the lost name and be connected again", || {
        let metrics = Metrics::fetch(a_ws);
        let lost = metrics.get("machat_cluster_names_lost_total");
        assert!(lost <= 1, "{lost} names lost");
        (lost == 1 && metrics_state(&metrics) == "connected").then_some(metrics)
    });
    assert_eq!(metrics.get("machat_room_members"), 0);
    // b's x keeps the name and chats on.
    assert_eq!(holder(&redis, "dev", "x").as_deref(), Some("b"));
    x_on_b.send_line("still mine");
    x_on_b.expect_line("x:still mine");
    assert_eq!(b.stats().cluster_names_lost, 0);
}

// ===========================================================================
// 7. Redis unreachable at start.
// ===========================================================================

#[test]
fn redis_unreachable_at_start_stops_the_node_unless_the_cluster_is_optional() {
    // A port that Redis will later listen on, closed for now.
    let mut redis = RedisServer::start();
    redis.stop();
    let url = redis.url();

    let mut refused = Machat::start(&["--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--cluster", &url]);
    let status = refused.wait_exit();
    assert!(!status.success(), "started without Redis: {status}");
    assert!(
        refused.log.iter().any(|line| line.contains("cannot start") && line.contains(&url)),
        "the error names the URL: {:#?}",
        refused.log
    );
    assert!(!refused.log.iter().any(|line| line.contains("listening for")), "{:#?}", refused.log);

    let (mut optional, tcp, ws) = binary(&url, "a", &["--cluster-optional", "--cluster-join-wait", "0.3"]);
    optional.wait_log("serving locally and retrying");
    assert_eq!(healthz(ws), "ok\ncluster: connecting");
    assert_eq!(metrics_state(&Metrics::fetch(ws)), "connecting");
    // It serves (pages answer); a join cannot be checked in Redis, so it is
    // refused clearly after the join wait.
    assert!(http_get(ws, "/").status_line.contains(" 200 "));
    assert_eq!(refused_tcp(tcp, "Ann", "dev"), "error: cluster unavailable");

    // Redis appears on the port: the node connects by itself.
    redis.restart();
    wait_until("the node to connect", || (healthz(ws) == "ok\ncluster: connected").then_some(()));
    assert_eq!(metrics_state(&Metrics::fetch(ws)), "connected");
    let _ann = joined_tcp(tcp, "Ann", "dev");
    assert_eq!(holder(&redis, "dev", "ann").as_deref(), Some("a"));
}

// ===========================================================================
// 8. Two binaries sharing ports with --reuse-port.
// ===========================================================================

/// The next line that is not a join's `hello`.
fn next_line_but_hellos(client: &mut TcpClient) -> String {
    loop {
        let line = client.read_line();
        if !line.ends_with(":hello") {
            return line;
        }
    }
}

#[test]
fn two_reuse_port_binaries_share_the_ports_and_their_members_chat() {
    let redis = RedisServer::start();
    let url = redis.url();
    let (_first, tcp, ws) = binary(&url, "a", &["--reuse-port"]);
    let (tcp_s, ws_s) = (tcp.to_string(), ws.to_string());
    let mut second =
        Machat::start(&["--tcp", &tcp_s, "--ws", &ws_s, "--cluster", &url, "--node-id", "b", "--reuse-port"]);
    assert_eq!(second.addresses(), (tcp, ws), "both nodes on the same ports");

    // Members join on the shared port, one at a time; Redis says which
    // node claimed each. Until both nodes have two, and (to tell their
    // metrics apart below) not as many each.
    let mut on: HashMap<String, Vec<(String, TcpClient)>> = HashMap::new();
    for i in 0..200 {
        let count = |node: &str, on: &HashMap<String, Vec<_>>| on.get(node).map_or(0, Vec::len);
        let (na, nb) = (count("a", &on), count("b", &on));
        if na >= 2 && nb >= 2 && na != nb {
            break;
        }
        let name = format!("c{i}");
        let client = joined_tcp(tcp, &name, "dev");
        let node = holder(&redis, "dev", &name).expect("a claimed name");
        on.entry(node).or_default().push((name, client));
    }
    let counts: Vec<(String, usize)> =
        on.iter().map(|(node, members)| (node.clone(), members.len())).collect();
    eprintln!("members per node: {counts:?}");
    let count = |node: &str| on.get(node).map_or(0, Vec::len) as u64;
    let (na, nb) = (count("a"), count("b"));
    assert!(na >= 2 && nb >= 2 && na != nb, "{counts:?}");

    // Each node's own metrics, reached on the shared port: the kernel picks
    // a node per connection, so ask until both have answered. A node's
    // members, claims and TCP connections are the same number.
    let mut seen = BTreeSet::new();
    wait_until("both nodes to answer /metrics", || {
        let metrics = Metrics::fetch(ws);
        let members = metrics.get("machat_room_members");
        assert_eq!(metrics.get("machat_cluster_claims_total{outcome=\"claimed\"}"), members);
        assert_eq!(metrics.get("machat_connections{transport=\"tcp\"}"), members);
        assert_eq!(metrics_state(&metrics), "connected");
        seen.insert(members);
        (seen.len() == 2).then_some(())
    });
    assert_eq!(seen, BTreeSet::from([na, nb]), "each node reports its own members");

    // Members on different nodes chat: each line reaches everyone once.
    wait_subscribers(&redis, "dev", 2);
    for node in ["a", "b"] {
        let (name, sender) = &mut on.get_mut(node).unwrap()[0];
        let text = format!("from node {node}");
        sender.send_line(&text);
        let expected = format!("{name}:{text}");
        for (_, member) in on.values_mut().flatten() {
            assert_eq!(next_line_but_hellos(member), expected);
        }
    }
}

// ===========================================================================
// 9. /healthz and /metrics.
// ===========================================================================

#[test]
fn healthz_and_metrics_report_the_cluster() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    // The links connect on the loop, after the start-up PING.
    wait_until("a to connect", || (healthz(a.ws) == "ok\ncluster: connected").then_some(()));
    let mut members = vec![Member::tcp(a.tcp, "Ann", "dev"), Member::ws(b.ws, "Bob", "dev")];
    for node in [&a, &b] {
        wait_stats(node, "the member to join", |stats| stats.members == 1);
    }
    wait_subscribers(&redis, "dev", 2);
    say(&mut members, 0, "one");
    say(&mut members, 0, "two");
    assert!(refused_tcp(b.tcp, "ann", "dev").contains("is already taken"));
    wait_stats(&b, "the conflict counted", |stats| stats.cluster_claim_conflicts == 1);

    let (ma, mb) = (Metrics::fetch(a.ws), Metrics::fetch(b.ws));
    let families = [
        ("machat_cluster_state", "gauge"),
        ("machat_cluster_publishes_total", "counter"),
        ("machat_cluster_lines_dropped_total", "counter"),
        ("machat_cluster_payloads_received_total", "counter"),
        ("machat_cluster_claims_total", "counter"),
        ("machat_cluster_names_lost_total", "counter"),
        ("machat_cluster_reconnects_total", "counter"),
        ("machat_cluster_subscriptions", "gauge"),
    ];
    for metrics in [&ma, &mb] {
        for (family, kind) in families {
            assert_eq!(metrics.kind(family), kind, "{family}");
        }
        assert_eq!(metrics_state(metrics), "connected");
        assert_eq!(metrics.get("machat_cluster_subscriptions"), 1);
        assert_eq!(metrics.get("machat_cluster_publishes_total{outcome=\"dropped\"}"), 0);
        assert_eq!(metrics.get("machat_cluster_lines_dropped_total"), 0);
        assert_eq!(metrics.get("machat_cluster_names_lost_total"), 0);
        assert_eq!(metrics.get("machat_cluster_reconnects_total"), 0);
        assert_eq!(metrics.get("machat_cluster_claims_total{outcome=\"claimed\"}"), 1);
        assert_eq!(metrics.get("machat_cluster_claims_total{outcome=\"unavailable\"}"), 0);
        assert_eq!(metrics.get("machat_cluster_payloads_received_total{outcome=\"refused\"}"), 0);
    }
    // a said two lines (in two turns: each waited for its echo), b none.
    assert_eq!(ma.get("machat_cluster_publishes_total{outcome=\"sent\"}"), 2);
    assert_eq!(mb.get("machat_cluster_publishes_total{outcome=\"sent\"}"), 0);
    assert_eq!(mb.get("machat_cluster_payloads_received_total{outcome=\"delivered\"}"), 2);
    assert_eq!(ma.get("machat_cluster_payloads_received_total{outcome=\"delivered\"}"), 0);
    assert_eq!(ma.get("machat_cluster_claims_total{outcome=\"conflict\"}"), 0);
    assert_eq!(mb.get("machat_cluster_claims_total{outcome=\"conflict\"}"), 1);
    assert_eq!(mb.get("machat_handshake_errors_total{reason=\"name_taken\"}"), 1);

    // The last local member leaves: the room is unsubscribed a second later.
    drop(members);
    let left = wait_until("the members to leave", || {
        (a.stats().members == 0 && b.stats().members == 0).then(Instant::now)
    });
    let unsubscribed =
        wait_until("the room to be unsubscribed", || (subscribers(&redis, "dev") == 0).then(Instant::now));
    let after = unsubscribed - left;
    assert!(after >= Duration::from_millis(500), "unsubscribed {after:?} after the last member left");
    for node in [&a, &b] {
        wait_stats(node, "the subscription gauge", |stats| stats.cluster_subscriptions == 0);
    }
    wait_until("the names released", || (redis.command(&["KEYS", "machat:name:*"]).is_empty()).then_some(()));

    // Without a cluster: no state in /healthz, every state series 0.
    let alone = TestServer::start();
    assert_eq!(healthz(alone.ws), "ok");
    assert_eq!(metrics_state(&Metrics::fetch(alone.ws)), "off");
}
