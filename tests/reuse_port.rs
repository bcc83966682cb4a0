//! `--reuse-port` over real sockets: two servers bound with `SO_REUSEPORT`
//! to the same TCP and WebSocket ports both accept, the kernel spreading
//! connections over them; without it the second bind fails with
//! `AddrInUse`; and each of two such nodes serves its own members (without
//! a cluster, their rooms are their own).

mod common;

use std::io;
use std::net::{SocketAddr, TcpStream};

use common::{Machat, TIMEOUT, TcpClient, TestServer, joined_tcp};
use machat::{Config, Server, Stats};

/// Connections opened to see both servers accept. The kernel picks a
/// listener by a hash of each connection's addresses and ports, so the
/// chance that one server gets none of them is 2^-63.
const CONNECTIONS: u64 = 64;

/// A server on `tcp` and `ws` (port 0: any), with or without `SO_REUSEPORT`.
fn config(tcp: &str, ws: &str, reuse_port: bool) -> Config {
    Config { tcp: Some(tcp.to_owned()), ws: Some(ws.to_owned()), reuse_port, ..Config::default() }
}

/// Two running servers sharing one TCP port and one WebSocket port.
fn two_nodes() -> (TestServer, TestServer) {
    let first = TestServer::with_config(config("127.0.0.1:0", "127.0.0.1:0", true));
    let second = TestServer::with_config(config(&first.tcp.to_string(), &first.ws.to_string(), true));
    assert_eq!((second.tcp, second.ws), (first.tcp, first.ws), "both nodes are on the same ports");
    (first, second)
}

/// Waits until the two servers' counters together satisfy `condition`.
fn wait_for_both(
    a: &TestServer,
    b: &TestServer,
    what: &str,
    condition: impl Fn(&Stats, &Stats) -> bool,
) -> (Stats, Stats) {
    let started = std::time::Instant::now();
    loop {
        let (sa, sb) = (a.stats(), b.stats());
        if condition(&sa, &sb) {
            return (sa, sb);
        }
        assert!(started.elapsed() < TIMEOUT, "timed out waiting for {what}; stats: {sa:#?} {sb:#?}");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Opens [`CONNECTIONS`] connections to `address` and checks that both
/// servers accepted some, counted by `open` (a gauge by listener).
fn both_accept(a: &TestServer, b: &TestServer, address: SocketAddr, open: fn(&Stats) -> u64) {
    let connections: Vec<TcpStream> =
        (0..CONNECTIONS).map(|_| TcpStream::connect(address).expect("connect")).collect();
    let (sa, sb) =
        wait_for_both(a, b, "every connection to be accepted", |sa, sb| open(sa) + open(sb) == CONNECTIONS);
    eprintln!("{address}: {} and {} connections", open(&sa), open(&sb));
    assert!(
        open(&sa) > 0 && open(&sb) > 0,
        "one server got every connection: {} and {}",
        open(&sa),
        open(&sb)
    );
    drop(connections);
    wait_for_both(a, b, "the connections to close", |sa, sb| sa.connections + sb.connections == 0);
}

#[test]
fn two_servers_bound_with_reuse_port_share_the_tcp_and_websocket_ports() {
    let (a, b) = two_nodes();
    both_accept(&a, &b, a.tcp, |stats| stats.tcp_connections);
    both_accept(&a, &b, a.ws, |stats| stats.ws_connections);
}

#[test]
fn without_reuse_port_the_second_bind_fails_with_addr_in_use() {
    // Neither, or only one of the two, asks for SO_REUSEPORT: the port is
    // the first's alone.
    for (first_reuses, second_reuses) in [(false, false), (true, false), (false, true)] {
        let first = TestServer::with_config(config("127.0.0.1:0", "127.0.0.1:0", first_reuses));
        // The TCP port is bound first: it is the one refused.
        let second = Server::bind(config(&first.tcp.to_string(), "127.0.0.1:0", second_reuses));
        match second {
            Err(error) => assert_eq!(
                error.kind(),
                io::ErrorKind::AddrInUse,
                "reuse_port {first_reuses} then {second_reuses}: {error}"
            ),
            Ok(_) => panic!("reuse_port {first_reuses} then {second_reuses}: the second bind succeeded"),
        }
        // The WebSocket port alike.
        let second = Server::bind(config("127.0.0.1:0", &first.ws.to_string(), second_reuses));
        assert_eq!(second.err().map(|error| error.kind()), Some(io::ErrorKind::AddrInUse));
    }
}

/// Joins `name` on the shared port and says which node took it (0 or 1),
/// from the members each node counts: joins are made one at a time, so the
/// node whose count grew is the one.
fn join_somewhere(nodes: &[TestServer; 2], members: &mut [u64; 2], name: &str) -> (usize, TcpClient) {
    let client = joined_tcp(nodes[0].tcp, name, "dev");
    let total = members[0] + members[1] + 1;
    let (sa, sb) = wait_for_both(&nodes[0], &nodes[1], "the join to be counted", |sa, sb| {
        sa.members + sb.members == total
    });
    let node = if sa.members > members[0] { 0 } else { 1 };
    *members = [sa.members, sb.members];
    (node, client)
}

#[test]
fn each_of_two_reuse_port_nodes_is_joined_and_chats_locally() {
    let (a, b) = two_nodes();
    let nodes = [a, b];
    let mut members = [0, 0];
    // Members on each node, two at least (each join is a fresh source port,
    // hashed afresh: a node missed 200 times in a row is 2^-200).
    let mut on: [Vec<(String, TcpClient)>; 2] = [Vec::new(), Vec::new()];
    for i in 0..200 {
        if on.iter().all(|clients| clients.len() >= 2) {
            break;
        }
        let name = format!("c{i}");
        let (node, client) = join_somewhere(&nodes, &mut members, &name);
        on[node].push((name, client));
    }
    assert!(on.iter().all(|clients| clients.len() >= 2), "a node was never picked: {members:?}");
    eprintln!("members per node: {members:?}");

    // A line said on one node reaches that node's members, and only them:
    // each member's next line is from its own node.
    for round in 0..2 {
        for (node, members) in on.iter_mut().enumerate() {
            let text = format!("round {round} on node {node}");
            let (name, sender) = &mut members[0];
            sender.send_line(&text);
            let expected = format!("{name}:{text}");
            for (_, member) in members.iter_mut() {
                assert_eq!(next_line_but_hellos(member), expected);
            }
        }
    }
    // Each node read its own members' lines: each join's "hello" and the
    // two rounds' lines of its first member.
    for (node, server) in nodes.iter().enumerate() {
        let joined = on[node].len() as u64;
        let stats = server.wait_for("the lines to be counted", |stats| stats.messages_in >= joined + 2);
        assert_eq!(stats.messages_in, joined + 2, "node {node}: {stats:#?}");
    }
}

/// The next line that is not a later joiner's `hello` (every member of a
/// node sees those of the members who joined that node after it).
fn next_line_but_hellos(client: &mut TcpClient) -> String {
    loop {
        let line = client.read_line();
        if !line.ends_with(":hello") {
            return line;
        }
    }
}

/// The binary: `--reuse-port` lets a second machat listen on the first's
/// ports; without it the second one stops at start, saying why.
#[test]
fn the_flag_lets_two_machat_processes_listen_on_the_same_ports() {
    let mut first = Machat::start(&["--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--reuse-port"]);
    let (tcp, ws) = first.addresses();
    let (tcp, ws) = (tcp.to_string(), ws.to_string());
    let mut second = Machat::start(&["--tcp", &tcp, "--ws", &ws, "--reuse-port"]);
    let (second_tcp, second_ws) = second.addresses();
    assert_eq!((second_tcp.to_string(), second_ws.to_string()), (tcp.clone(), ws.clone()));
    // Both serve: a join on the shared port gets its echo, wherever it lands.
    for i in 0..8 {
        drop(joined_tcp(second_tcp, &format!("p{i}"), "dev"));
    }

    let mut refused = Machat::start(&["--tcp", &tcp, "--ws", "127.0.0.1:0"]);
    let status = refused.wait_exit();
    assert_eq!(status.code(), Some(1), "log: {:#?}", refused.log);
    assert!(
        refused.log.iter().any(|line| line.contains("cannot start") && line.contains("in use")),
        "log: {:#?}",
        refused.log
    );
}
