//! Load generator for machat, which can also drive Redis pub/sub so both are
//! measured by the same code.
//!
//! One thread runs one mio event loop over every socket. Reads are large
//! (64 KiB) into one shared buffer, frames are found with `memchr`, and no
//! memory is allocated per message. The generator reports its own CPU use,
//! so you can tell when it, and not the server, was the limit.
//!
//! Load mode, the default:
//!
//! 1. connect every receiver and sender, `--connect-concurrency` at a time;
//! 2. barrier: every sender sends a marker every 100 ms until every member of
//!    its room has seen one, so every member has joined;
//! 3. warm-up (`--warmup`), then the timed phase (`--duration`): in closed
//!    loop each sender keeps `--window` messages in flight, counted against
//!    its own echo; with `--rate` each sender sends at a fixed pace;
//! 4. drain: stop sending, wait until every message sent has reached every
//!    member (or `--drain-timeout`), then count loss.
//!
//! Every message text is `s<sender> <seq> <send-nanos> xxxx…`, padded to
//! `--payload` bytes, so receivers count loss, duplicates and reordering and
//! put each delivery's latency in a fixed log-linear histogram.
//!
//! Idle mode (`--idle N`) opens N joined connections and holds them, to
//! measure the server's memory per idle connection.
//!
//! Several servers (`--addr A --addr B`, or `--addr A,B`), such as the nodes
//! of a cluster: the clients are dealt round-robin within each room, so
//! every room is spread over every node, and the report says how many
//! clients went to each address (`targets` in the JSON line).
//!
//! Burst mode (`--burst BYTES`): after the barrier each sender writes BYTES
//! of the same messages as fast as its socket takes them, while receivers
//! read, as fast as they can or at `--read-rate` bytes per second; then the
//! drain waits for every member still connected to have every message. It
//! reports how long sending and delivering took, the loss, the longest
//! sender stall, and the connections the server cut (slow consumers): those
//! are results, so burst mode exits 0 once set up.
//!
//! TLS (`--tls`, with `--ca FILE` and `--server-name NAME`): every
//! connection speaks through a `rustls::ClientConnection`, to machat's
//! `--tcp-tls` (`--transport tcp`) or `--wss` (`--transport ws`); the
//! handshake is part of connecting, before the barrier.
//!
//! Output: a table (unless `--quiet`), then one JSON line with every figure.
//! Besides the server's CPU and RSS (`--server-pid`), the line carries the
//! machine's input-backlog drops and TCP retransmissions during the timed
//! phase and its load average: on loopback a retransmission means a stall of
//! 200 ms or more, which shows up in the tail latencies.
//!
//! Exit codes: 0 done; 1 cannot connect, or a connection was lost before the
//! timed phase; 2 bad flags; 3 timed out connecting or at the barrier; 4 the
//! server sent `error: ...` (or a Redis error, or broke the framing); 130
//! interrupted before the timed phase.
//!
//! ```text
//! cargo run --release --example loadgen -- --receivers 1000 --senders 10
//! cargo run --release --example loadgen -- --transport ws --rooms 10 --receivers 1000 --senders 10
//! cargo run --release --example loadgen -- --proto redis --receivers 1000 --senders 10
//! cargo run --release --example loadgen -- --senders 1 --receivers 1000 --rate 100
//! cargo run --release --example loadgen -- --idle 10000 --hold 0 --server-pid "$(pidof machat)"
//! cargo run --release --example loadgen -- --tls --ca cert.pem --addr 127.0.0.1:8990 --receivers 1000 --senders 10
//! cargo run --release --example loadgen -- --addr 127.0.0.1:8989,127.0.0.1:9989 --receivers 1000 --senders 10
//! cargo run --release --example loadgen -- --burst 16000000 --receivers 3 --read-rate 1000000 --slow-receivers 1
//! ```
//!
//! Where things are:
//!
//! - `flags`: the command line;
//! - `generator`: the generator's state and its setup from the flags;
//! - `targets`: the servers (`--addr`), and which clients go to which;
//! - `event_loop`: the mio loop, connecting, reading, closing;
//! - `phases`: what happens when, from connecting to done;
//! - `sending`: closed-loop, paced, markers and probes;
//! - `burst`: burst mode;
//! - `read_pacing`: `--read-rate`'s token bucket;
//! - `connection`: one connection and what it does with its input;
//! - `shared`: the counters every connection updates;
//! - `protocol`: machat lines, WebSocket framing, Redis RESP;
//! - `message`, `sequence`: the message text, and loss/duplicate accounting;
//! - `histogram`: latencies;
//! - `report`: the table and the JSON line;
//! - `system`: CPU, RSS, kernel counters, open-file limit;
//! - `signals`: Ctrl-C;
//! - `tls`: `--tls`, the client configuration (the reading and writing
//!   through rustls is in `event_loop` and `connection`).

mod burst;
mod connection;
mod event_loop;
mod flags;
mod generator;
mod histogram;
mod message;
mod phases;
mod protocol;
mod read_pacing;
mod report;
mod sending;
mod sequence;
mod shared;
mod signals;
mod system;
mod targets;
mod tls;

use clap::Parser;

use crate::flags::Flags;
use crate::generator::LoadGenerator;
use crate::signals::Interrupts;

/// Exit codes, which `benches/compare.sh` and people's scripts rely on.
pub mod exit_code {
    /// Cannot connect, or a connection was lost before the timed phase.
    pub const CANNOT_CONNECT: i32 = 1;
    pub const BAD_FLAGS: i32 = 2;
    /// Timed out connecting or at the barrier.
    pub const TIMED_OUT: i32 = 3;
    /// The server sent `error: ...`, a Redis error, or broke the framing.
    pub const PROTOCOL: i32 = 4;
    /// Interrupted before the timed phase (the shell's 128 + SIGINT).
    pub const INTERRUPTED: i32 = 130;
}

/// A reason to stop, with the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

pub fn failure(code: i32, message: impl Into<String>) -> Failure {
    Failure { code, message: message.into() }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let flags = Flags::parse();
    let result = Interrupts::install()
        .map_err(|e| failure(exit_code::CANNOT_CONNECT, format!("cannot handle signals: {e}")))
        .and_then(|interrupts| LoadGenerator::new(flags, interrupts))
        .and_then(|mut generator| {
            generator.run()?;
            if generator.burst.is_some() {
                generator.report_burst();
            } else if generator.flags.idle.is_none() {
                generator.report_load();
            }
            Ok(())
        });
    if let Err(f) = result {
        eprintln!("loadgen: {}", f.message);
        std::process::exit(f.code);
    }
}
