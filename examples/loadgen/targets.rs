//! The servers the clients connect to: one `--addr`, or several (the nodes
//! of a cluster, or processes sharing nothing), with the clients spread
//! over them.
//!
//! Clients are dealt round-robin within each room, starting at a different
//! address for each room: the k-th receiver of room r goes to address
//! (r + k) mod A, and so does the k-th sender. Every room with at least A
//! receivers has receivers on every address, the senders of all rooms are
//! spread as evenly, and the totals per address differ by at most one per
//! room and role. (Dealing by connection number alone would put every room
//! on a single address whenever the number of rooms is a multiple of A:
//! nothing would cross between nodes.) A Redis sender's two connections go
//! to the same address.

use std::net::{SocketAddr, ToSocketAddrs};

use crate::{Failure, exit_code, failure};

/// One server the clients are spread over.
#[derive(Debug, Clone)]
pub struct Target {
    /// `--addr` as given, for the HTTP `Host` header.
    pub text: String,
    pub addr: SocketAddr,
    /// Clients sent to it: receivers, senders and idle connections (a
    /// Redis sender is one client, with two connections).
    pub clients: u64,
    /// Connections opened to it.
    pub connections: u64,
}

/// Resolves each address (the first address each name resolves to).
pub fn resolve(texts: &[String]) -> Result<Vec<Target>, Failure> {
    texts
        .iter()
        .map(|text| {
            let addr = text
                .to_socket_addrs()
                .map_err(|e| failure(exit_code::CANNOT_CONNECT, format!("cannot resolve {text}: {e}")))?
                .next()
                .ok_or_else(|| {
                    failure(exit_code::CANNOT_CONNECT, format!("{text} resolves to no address"))
                })?;
            Ok(Target { text: text.clone(), addr, clients: 0, connections: 0 })
        })
        .collect()
}

/// The address (its index among `targets`) of the client numbered `id`
/// among those of its role, in room `id mod rooms`.
pub fn target_for(id: u32, rooms: u32, targets: usize) -> usize {
    let (room, index_in_room) = ((id % rooms) as usize, (id / rooms) as usize);
    (room + index_in_room) % targets
}

/// The addresses, as the report's header and the log name them.
pub fn describe(targets: &[Target]) -> String {
    targets.iter().map(|target| target.addr.to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per address, per room: how many of `n` clients land there.
    fn spread(n: u32, rooms: u32, targets: usize) -> Vec<Vec<u32>> {
        let mut counts = vec![vec![0; rooms as usize]; targets];
        for id in 0..n {
            counts[target_for(id, rooms, targets)][(id % rooms) as usize] += 1;
        }
        counts
    }

    #[test]
    fn one_address_takes_everyone() {
        assert!((0..1000).all(|id| target_for(id, 7, 1) == 0));
    }

    #[test]
    fn one_room_is_dealt_round_robin() {
        let order: Vec<usize> = (0..7).map(|id| target_for(id, 1, 3)).collect();
        assert_eq!(order, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(spread(1000, 1, 2), [[500], [500]]);
    }

    #[test]
    fn every_room_is_split_over_every_address_even_when_rooms_are_a_multiple_of_them() {
        // 10 rooms x 100 receivers over 2 nodes: 50 of each room on each.
        assert_eq!(spread(1000, 10, 2), vec![vec![50; 10]; 2]);
        // 3 nodes: every room on every node, within one of each other.
        for per_node in spread(1000, 10, 3) {
            assert!(per_node.iter().all(|&n| (33..=34).contains(&n)), "{per_node:?}");
        }
        // 10 senders, one per room: spread over the nodes too, not all on
        // the first.
        let senders: Vec<u32> = spread(10, 10, 2).iter().map(|rooms| rooms.iter().sum()).collect();
        assert_eq!(senders, [5, 5]);
    }

    #[test]
    fn totals_differ_by_at_most_one_per_room() {
        for (n, rooms, targets) in [(1001, 10, 2), (7, 3, 4), (100, 1, 3), (5, 10, 2), (19_000, 7, 3)] {
            let totals: Vec<u32> =
                spread(n, rooms, targets).iter().map(|per_room| per_room.iter().sum()).collect();
            let (min, max) = (totals.iter().min().unwrap(), totals.iter().max().unwrap());
            assert!(max - min <= rooms, "{n} over {rooms} rooms and {targets} addresses: {totals:?}");
            assert_eq!(totals.iter().sum::<u32>(), n);
        }
    }

    /// A machat server on an ephemeral port, on its own thread.
    struct Node {
        tcp: SocketAddr,
        ws: SocketAddr,
        handle: machat::Handle,
        thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    }

    impl Node {
        fn start() -> Node {
            let server = machat::Server::bind(machat::Config::ephemeral()).expect("bind");
            let (tcp, ws) = (server.tcp_addr().unwrap(), server.ws_addr().unwrap());
            let handle = server.handle();
            let thread = Some(std::thread::spawn(move || server.run()));
            Node { tcp, ws, handle, thread }
        }

        /// Waits (bounded) until the node has counted `joins` joins.
        fn expect_joins(&self, joins: u64) {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while self.handle.stats().joins != joins {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{:#?}, expected {joins} joins",
                    self.handle.stats()
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }

    impl Drop for Node {
        fn drop(&mut self) {
            self.handle.shutdown();
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    /// Runs the generator to the end with these flags.
    fn run(args: &[&str]) -> crate::generator::LoadGenerator {
        use clap::Parser;
        let flags =
            crate::flags::Flags::try_parse_from(std::iter::once("loadgen").chain(args.iter().copied()))
                .expect("flags parse");
        let interrupts = crate::signals::Interrupts::install().expect("signals");
        let mut generator = crate::generator::LoadGenerator::new(flags, interrupts).expect("set up");
        generator.run().expect("the run succeeds");
        generator
    }

    /// Whole runs over two machat servers (not a cluster: every room has a
    /// single member, so none spans the two): each server gets the clients
    /// the report counts for it.
    #[test]
    fn a_run_over_two_servers_gives_each_the_clients_the_report_says() {
        // Load mode over TCP: 6 senders alone in 6 rooms, 3 per server.
        let nodes = [Node::start(), Node::start()];
        let addrs = format!("{},{}", nodes[0].tcp, nodes[1].tcp);
        let args =
            ["--rooms", "6", "--senders", "6", "--receivers", "0", "--warmup", "0", "--duration", "0.2"];
        let generator = run(&[&["--quiet", "--addr", &addrs][..], &args].concat());
        let spread: Vec<(SocketAddr, u64, u64)> = generator
            .targets
            .iter()
            .map(|target| (target.addr, target.clients, target.connections))
            .collect();
        assert_eq!(spread, [(nodes[0].tcp, 3, 3), (nodes[1].tcp, 3, 3)]);
        assert!(generator.shared.stats.received > 0, "the senders' lines came back");
        generator.report_load();
        for node in &nodes {
            node.expect_joins(3);
        }

        // Idle mode over WebSocket, the addresses given one by one: 5
        // connections alone in 5 rooms, 3 and 2.
        let nodes = [Node::start(), Node::start()];
        let (first, second) = (nodes[0].ws.to_string(), nodes[1].ws.to_string());
        let generator = run(&[
            "--quiet",
            "--transport",
            "ws",
            "--addr",
            &first,
            "--addr",
            &second,
            "--idle",
            "5",
            "--rooms",
            "5",
            "--hold",
            "0",
            "--settle",
            "0",
        ]);
        let clients: Vec<u64> = generator.targets.iter().map(|target| target.clients).collect();
        assert_eq!(clients, [3, 2]);
        nodes[0].expect_joins(3);
        nodes[1].expect_joins(2);
    }

    #[test]
    fn addresses_resolve_in_the_order_given() {
        let texts = ["127.0.0.1:1".to_string(), "localhost:2".to_string()];
        let targets = resolve(&texts).expect("resolves");
        assert_eq!(targets[0].addr, "127.0.0.1:1".parse().unwrap());
        assert_eq!((targets[1].text.as_str(), targets[1].addr.port()), ("localhost:2", 2));
        let error = resolve(&["no-port".to_string()]).expect_err("no port");
        assert_eq!(error.code, exit_code::CANNOT_CONNECT);
    }
}
