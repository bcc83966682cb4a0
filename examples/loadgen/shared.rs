//! What every connection's input handling updates besides the connection
//! itself: the counters, the latency histogram, the senders' progress and
//! the encoder (replies such as pongs are encoded while reading).
//!
//! Keeping it apart from the list of connections lets a connection be
//! borrowed mutably alongside it.

use crate::histogram::Histogram;
use crate::protocol::MessageEncoder;
use crate::{Failure, failure};

#[derive(Default)]
pub struct Stats {
    /// Connections that finished their setup (handshake sent, upgraded or
    /// subscribed).
    pub ready_connections: usize,
    /// Data messages received, copies included.
    pub deliveries: u64,
    /// Deliveries during the timed phase.
    pub measured: u64,
    /// First copies received.
    pub received: u64,
    pub duplicates: u64,
    /// First copies that came after a higher number from the same sender.
    pub reorders: u64,
    /// Data from a sender not in the receiver's room.
    pub foreign: u64,
    /// Lines or messages that are not the generator's.
    pub unrecognised: u64,
    /// Member/sender pairs whose barrier marker arrived.
    pub marker_pairs: u64,
    /// Idle mode: connections that saw their room's probe (or, with Redis,
    /// whose SUBSCRIBE was confirmed).
    pub joined: u64,
    /// Connections lost after setup.
    pub disconnects: u64,
    /// Redis integer replies (PUBLISH acknowledgements).
    pub acks: u64,
    /// First copies received by receiving connections that later closed.
    pub received_by_lost_members: u64,
    /// Paced mode: the furthest a send fell behind its schedule, in ns.
    pub pace_lag_max_ns: u64,
}

/// One sender's progress.
pub struct SenderState {
    /// The connection it sends on.
    pub conn: usize,
    pub room: u32,
    pub sent: u64,
    /// Its own messages that came back to it.
    pub echoed: u64,
    /// Already in `Shared::to_top_up`.
    pub queued_for_top_up: bool,
    /// Paced mode: when its first message is due.
    pub start_ns: u64,
}

pub struct Shared {
    pub rooms: u32,
    pub senders: Vec<SenderState>,
    /// Closed loop: senders that had echoes back and may send more.
    pub to_top_up: Vec<u32>,
    /// Deliveries go into the histogram (the timed phase).
    pub measuring: bool,
    pub stats: Stats,
    pub latency: Histogram,
    /// The first reason to stop; later ones are consequences.
    pub failure: Option<Failure>,
    pub encoder: MessageEncoder,
    /// Burst mode: an `error: ...` line is a result to report (the server
    /// cutting a slow consumer), not a reason to stop.
    pub record_server_errors: bool,
    /// `name: error: ...` lines received, the first `MAX_LISTED`.
    pub server_errors: Vec<String>,
    pub server_error_count: u64,
}

/// Longest list of errors or closed connections kept for the report.
pub const MAX_LISTED: usize = 16;

impl Shared {
    pub fn note_server_error(&mut self, error: String) {
        self.server_error_count += 1;
        if self.server_errors.len() < MAX_LISTED {
            self.server_errors.push(error);
        }
    }

    pub fn fail(&mut self, code: i32, message: String) {
        if self.failure.is_none() {
            self.failure = Some(failure(code, message));
        }
    }
}
