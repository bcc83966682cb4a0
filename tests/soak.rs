//! Soak test: many clients joining, chatting and leaving in several rooms for
//! a while; then every member that stayed must have received every message
//! sent in its room exactly once and in each sender's order, and the server
//! must be back to zero connections and rooms.
//!
//! Ignored by default. Run it with
//! `MACHAT_SOAK_SECS=60 MACHAT_SOAK_CLIENTS=400 cargo test --release --test soak -- --ignored`
//! (CI runs a small one).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{TIMEOUT, TcpClient, TestServer, joined_tcp};

const ROOMS: usize = 8;
const STAYERS_PER_ROOM: usize = 3;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

/// What one churning client sent, in order, every message confirmed by its
/// own echo before the client left.
type Sent = Vec<String>;

/// Joins, sends a few messages, waits for their echoes, leaves; again and
/// again until `running` goes false.
fn churn(server: std::net::SocketAddr, id: usize, running: Arc<AtomicBool>) -> (usize, Sent) {
    let room = id % ROOMS;
    let mut sent = Vec::new();
    let mut round = 0;
    while running.load(Ordering::Relaxed) {
        let name = format!("c{id}r{round}");
        let mut client = TcpClient::join(server, &name, &format!("room{room}"));
        for seq in 0..1 + (id + round) % 5 {
            let text = format!("{name}-{seq}");
            client.send_line(&text);
            sent.push(format!("{name}:{text}"));
        }
        // Our own echoes prove each message was processed while we were a
        // member; other members' messages may be interleaved.
        let mut pending = sent.iter().filter(|line| line.starts_with(&format!("{name}:"))).count();
        while pending > 0 {
            if client.read_line().starts_with(&format!("{name}:")) {
                pending -= 1;
            }
        }
        round += 1;
    }
    (room, sent)
}

#[test]
#[ignore = "long; run explicitly (see the module docs)"]
fn many_clients_chat_and_churn_without_loss() {
    let seconds = env_or("MACHAT_SOAK_SECS", 60);
    let churners = env_or("MACHAT_SOAK_CLIENTS", 200) as usize;
    let server = TestServer::start();

    // Members that stay for the whole run, reading everything.
    let mut stayers = Vec::new();
    for room in 0..ROOMS {
        for index in 0..STAYERS_PER_ROOM {
            let name = format!("stay{room}_{index}");
            let mut client = joined_tcp(server.tcp, &name, &format!("room{room}"));
            client.send_line("ready");
            stayers.push((room, name, client));
        }
    }
    server.wait_for("the stayers", |s| s.members == (ROOMS * STAYERS_PER_ROOM) as u64);

    let running = Arc::new(AtomicBool::new(true));
    let workers: Vec<_> = (0..churners)
        .map(|id| {
            let running = running.clone();
            let address = server.tcp;
            thread::spawn(move || churn(address, id, running))
        })
        .collect();
    // Stayers read on their own threads until they see the final marker.
    let readers: Vec<_> = stayers
        .iter()
        .map(|(room, name, client)| {
            let stream = client.stream.try_clone().unwrap();
            let (room, name) = (*room, name.clone());
            thread::spawn(move || {
                stream.set_read_timeout(Some(TIMEOUT)).unwrap();
                let mut reader = BufReader::new(stream);
                let mut lines = Vec::new();
                let marker = format!("{name}:done");
                loop {
                    let mut line = String::new();
                    assert!(reader.read_line(&mut line).expect("read") > 0, "{name} was disconnected");
                    let line = line.trim_end().to_owned();
                    if line == marker {
                        return (room, lines);
                    }
                    lines.push(line);
                }
            })
        })
        .collect();

    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        thread::sleep(Duration::from_millis(100));
        let stats = server.stats();
        assert_eq!(stats.slow_consumers, 0, "nobody here is slow");
    }
    running.store(false, Ordering::Relaxed);
    let mut sent_by_room: HashMap<usize, Vec<Sent>> = HashMap::new();
    for worker in workers {
        let (room, sent) = worker.join().expect("churner");
        sent_by_room.entry(room).or_default().push(sent);
    }
    for (_, _, client) in &mut stayers {
        client.send_line("done");
    }

    let mut total = 0;
    for reader in readers {
        let (room, lines) = reader.join().expect("stayer");
        // Group what this stayer received by sender.
        let mut received: HashMap<&str, Vec<&str>> = HashMap::new();
        for line in &lines {
            let sender = line.split(':').next().unwrap_or_default();
            received.entry(sender).or_default().push(line);
        }
        // Each churner's messages arrive exactly once and in order.
        for sent in sent_by_room.get(&room).into_iter().flatten() {
            let mut by_sender: HashMap<&str, Vec<&str>> = HashMap::new();
            for line in sent {
                by_sender.entry(line.split(':').next().unwrap_or_default()).or_default().push(line);
            }
            for (sender, expected) in by_sender {
                let got = received.get(sender).cloned().unwrap_or_default();
                assert_eq!(got, expected, "room {room}: messages of {sender} lost, duplicated or reordered");
                total += expected.len();
            }
        }
    }
    assert!(total > 0, "the churners sent nothing");
    println!("soak: {churners} churning clients, {seconds} s, {total} messages checked");

    drop(stayers);
    let stats = server.wait_idle();
    assert_eq!(stats.members, 0);
}
