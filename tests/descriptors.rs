//! Running out of file descriptors (PROTOCOL §5): the binary runs under a
//! low open-file limit; when `accept` fails with EMFILE the server must not
//! spin, must keep serving the clients it has, and must accept the waiting
//! ones once descriptors free up.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

use common::{TIMEOUT, TcpClient};

/// Open-file limit the server runs under: a few for itself, the rest for
/// clients.
const LIMIT: usize = 40;

#[derive(Debug)]
enum Event {
    Log(String),
    Echo(usize),
}

/// The server process, killed if the test ends without stopping it.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary under `ulimit -n LIMIT`, forwarding its log lines.
fn start_server(events: Sender<Event>) -> Server {
    let binary = env!("CARGO_BIN_EXE_machat");
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!("ulimit -n {LIMIT} && exec {binary} -tcp 127.0.0.1:0 -ws 127.0.0.1:0"))
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    let stderr = child.stderr.take().unwrap();
    let server = Server(child);
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("server: {line}");
            if events.send(Event::Log(line)).is_err() {
                break;
            }
        }
    });
    server
}

/// Waits for an event `matching`, failing after [`TIMEOUT`].
fn wait_for<T>(events: &Receiver<Event>, what: &str, mut matching: impl FnMut(&Event) -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(event) => {
                if let Some(found) = matching(&event) {
                    return found;
                }
            }
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

/// Joins `name` to `room`, sends one line, and reports its echo as an event.
fn join_and_watch(address: SocketAddr, index: usize, room: &str, events: Sender<Event>) -> TcpClient {
    let name = format!("user{index}");
    let mut client = TcpClient::join(address, &name, room);
    client.send_line("hi");
    let mut reader = BufReader::new(client.stream.try_clone().unwrap());
    thread::spawn(move || {
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            if line.trim_end() == format!("{name}:hi") {
                let _ = events.send(Event::Echo(index));
                return;
            }
            line.clear();
        }
    });
    client
}

/// CPU time (user + system) the process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn descriptor_exhaustion_pauses_accepting_without_spinning_and_recovers() {
    let (sender, events) = mpsc::channel();
    let mut server = start_server(sender.clone());
    let address: SocketAddr = wait_for(&events, "the TCP address", |event| match event {
        Event::Log(line) => {
            line.split("listening for TCP clients on ").nth(1).map(|a| a.trim().parse().unwrap())
        }
        Event::Echo(_) => None,
    });

    // Join clients one by one until the server runs out of descriptors.
    let mut joined = Vec::new();
    let first_waiting = loop {
        let index = joined.len();
        assert!(index < LIMIT, "the server never ran out of descriptors");
        let client = join_and_watch(address, index, "room", sender.clone());
        let accepted = wait_for(&events, "an echo or the accept pause", |event| match event {
            Event::Echo(echoed) if *echoed == index => Some(true),
            Event::Log(line) if line.contains("pausing accepts") => Some(false),
            _ => None,
        });
        if !accepted {
            break client;
        }
        joined.push(client);
    };
    let mut waiting = vec![first_waiting];
    for index in joined.len() + 1..joined.len() + 6 {
        waiting.push(join_and_watch(address, index, "late", sender.clone()));
    }

    // While connections keep arriving at the exhausted server, it idles.
    let pid = server.0.id();
    let before = cpu_ticks(pid);
    let window = Instant::now();
    let mut storm = Vec::new();
    while window.elapsed() < Duration::from_secs(1) {
        if storm.len() < 20 {
            storm.push(std::net::TcpStream::connect(address).unwrap());
        }
        thread::sleep(Duration::from_millis(10));
    }
    let used = cpu_ticks(pid) - before;
    let ticks_per_second = 100; // USER_HZ on Linux
    eprintln!("server CPU while out of descriptors: {used} ticks in 1 s");
    assert!(used < ticks_per_second / 2, "the server used {used} ticks of CPU in 1 s: it spins");

    // The clients it has are served as usual.
    joined[0].send_line("still here");
    let line = joined[1].read_line();
    assert!(line == "user0:still here" || line.ends_with(":hi"), "unexpected {line}");
    while joined[1].read_line() != "user0:still here" {}

    // Free some descriptors: the waiting clients are accepted and joined.
    let first_waiting_index = joined.len();
    let mut unserved: Vec<usize> = (first_waiting_index..first_waiting_index + waiting.len()).collect();
    joined.truncate(joined.len() - 10);
    while !unserved.is_empty() {
        let served = wait_for(&events, "the waiting clients to be served", |event| match event {
            Event::Echo(echoed) => Some(*echoed),
            Event::Log(_) => None,
        });
        unserved.retain(|&index| index != served);
    }

    // SIGTERM still shuts it down cleanly.
    Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap();
    let status = server.0.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    drop((storm, waiting));
}
