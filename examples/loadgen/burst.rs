//! Burst mode (`--burst BYTES`): after the barrier, each sender writes BYTES
//! of ordinary data messages into its room as fast as its socket takes them
//! (open loop: no window, no rate), while every member reads, some perhaps
//! slowly (`--read-rate`). Then the drain waits until every member still
//! connected has every message.
//!
//! What it measures is how the server copes with more than its clients
//! read: how long the burst took to send and to deliver, what was lost, the
//! longest a sender's socket took nothing, and which connections the server
//! cut (a slow consumer is closed, possibly after an `error: ...` line).
//! Those are results, not failures: the run always ends with a report.

use log::info;

use crate::connection::{CHUNK, ConnState, Connection, Role};
use crate::generator::{LoadGenerator, secs_to_ns};
use crate::phases::RunPhase;
use crate::shared::MAX_LISTED;
use crate::system::{self, SystemSnapshot};

/// Most bytes one sender queues per turn of the event loop, so a server
/// that reads fast cannot keep the generator from reading.
const TURN_BYTES: u64 = 4 * CHUNK as u64;

/// One sender's side of the burst.
#[derive(Default)]
pub struct BurstSender {
    /// Wire bytes put in its output buffer.
    pub queued: u64,
    /// Wire bytes its socket took during its turns.
    pub written: u64,
    /// Its connection's `bytes_written` when the burst started.
    pub written_before: u64,
    /// Every byte written.
    pub finished_at: Option<u64>,
    /// Its connection closed before it finished.
    pub lost: bool,
    /// Its socket is full since then.
    pub blocked_since: Option<u64>,
    /// Longest time its socket took nothing while it had bytes to write.
    pub stall_max_ns: u64,
    /// Its turn ended with the socket still taking bytes: continue without
    /// waiting for a writable event, which will not come.
    pub may_write: bool,
}

impl BurstSender {
    fn done(&self) -> bool {
        self.finished_at.is_some() || self.lost
    }

    fn stall_until(&self, now: u64) -> u64 {
        let ongoing = self.blocked_since.map_or(0, |since| now.saturating_sub(since));
        self.stall_max_ns.max(ongoing)
    }
}

pub struct Burst {
    pub bytes_per_sender: u64,
    pub senders: Vec<BurstSender>,
    pub started_at: u64,
    /// When sending ended: all written, all lost, stalled, or Ctrl-C.
    pub sending_ended_at: u64,
    /// When a sender last got a byte into its socket.
    pub last_progress: u64,
    /// When the drain saw every message at every member still connected.
    pub delivered_at: Option<u64>,
    /// Connections closed after setup, `name: why`, the first `MAX_LISTED`.
    pub closed: Vec<String>,
    /// Ready connections closed after setup, all of them counted.
    pub closed_count: u64,
    /// The longest sender stall, fixed when sending ends.
    pub stall_max_ns: u64,
}

impl Burst {
    pub fn new(bytes_per_sender: u64, senders: usize) -> Self {
        Burst {
            bytes_per_sender,
            senders: (0..senders).map(|_| BurstSender::default()).collect(),
            started_at: 0,
            sending_ended_at: 0,
            last_progress: 0,
            delivered_at: None,
            closed: Vec::new(),
            closed_count: 0,
            stall_max_ns: 0,
        }
    }

    pub fn on_closed(&mut self, conn: &Connection, name: &str, why: &str) {
        self.closed_count += 1;
        if self.closed.len() < MAX_LISTED {
            self.closed.push(format!("{name}: {why}"));
        }
        if matches!(conn.role, Role::Sender | Role::Publisher)
            && let Some(sender) = self.senders.get_mut(conn.sender as usize)
            && sender.finished_at.is_none()
        {
            sender.lost = true;
        }
    }

    /// Seconds from the start until the last sender wrote its last byte;
    /// `None` when one never did.
    pub fn send_seconds(&self) -> Option<f64> {
        let last = self.senders.iter().map(|s| s.finished_at).collect::<Option<Vec<u64>>>()?;
        Some(last.into_iter().max()?.saturating_sub(self.started_at) as f64 / 1e9)
    }

    pub fn delivered_seconds(&self) -> Option<f64> {
        Some(self.delivered_at?.saturating_sub(self.started_at) as f64 / 1e9)
    }
}

impl LoadGenerator {
    pub fn start_burst(&mut self, now: u64) {
        self.phase = RunPhase::Burst;
        self.figures.own_cpu_before = system::own_cpu();
        self.figures.system_before = SystemSnapshot::take(&self.pids);
        self.shared.measuring = true;
        self.shared.latency.clear();
        self.shared.stats.measured = 0;
        self.figures.measure_start = now;
        let burst = self.burst.as_mut().expect("burst mode");
        burst.started_at = now;
        burst.last_progress = now;
        for (sender, state) in burst.senders.iter_mut().zip(&self.shared.senders) {
            sender.may_write = true;
            sender.written_before = self.conns[state.conn].bytes_written;
        }
        info!("bursting {} bytes from each of {} senders", burst.bytes_per_sender, burst.senders.len());
    }

    /// Lets every sender whose socket still takes bytes write on; returns
    /// when to call again.
    pub fn continue_burst(&mut self, now: u64) -> u64 {
        let Some(burst) = self.burst.as_ref() else {
            return u64::MAX;
        };
        let ready: Vec<u32> = (0..burst.senders.len() as u32)
            .filter(|&id| burst.senders[id as usize].may_write && !burst.senders[id as usize].done())
            .collect();
        for &id in &ready {
            self.fill_burst(id, now);
        }
        let burst = self.burst.as_ref().expect("burst mode");
        let more = burst.senders.iter().any(|s| s.may_write && !s.done());
        if more { now } else { u64::MAX }
    }

    /// Queues and writes up to a turn's worth of sender `id`'s burst.
    pub fn fill_burst(&mut self, id: u32, now: u64) {
        let Some(burst) = self.burst.as_mut() else {
            return;
        };
        let total = burst.bytes_per_sender;
        let progress = &mut burst.senders[id as usize];
        let state = &mut self.shared.senders[id as usize];
        let conn_index = state.conn;
        let conn = &mut self.conns[conn_index];
        if conn.state != ConnState::Ready {
            return;
        }
        progress.may_write = false;
        let turn_end = progress.written + TURN_BYTES;
        let result = loop {
            while conn.unwritten() < CHUNK && progress.queued < total {
                let before = conn.out.len();
                self.shared.encoder.data(&mut conn.out, state.room, id, state.sent, now);
                state.sent += 1;
                progress.queued += (conn.out.len() - before) as u64;
            }
            let written = match conn.flush() {
                Ok(n) => n as u64,
                Err(e) => break Err(e),
            };
            progress.written += written;
            if written > 0 {
                burst.last_progress = now;
                if let Some(since) = progress.blocked_since.take() {
                    progress.stall_max_ns = progress.stall_max_ns.max(now.saturating_sub(since));
                }
            }
            if conn.unwritten() > 0 {
                // The socket is full: its writable event is the next turn.
                progress.blocked_since.get_or_insert(now);
                break Ok(());
            }
            if progress.queued >= total {
                progress.finished_at.get_or_insert(now);
                break Ok(());
            }
            if progress.written >= turn_end {
                progress.may_write = true;
                break Ok(());
            }
        };
        if let Err(e) = result {
            self.on_closed(conn_index, e.to_string());
        }
    }

    /// Sending is over: everyone wrote everything (or was lost), nothing got
    /// into any socket for `--drain-timeout`, or Ctrl-C.
    pub fn burst_over(&self, now: u64, interrupted: bool) -> bool {
        let burst = self.burst.as_ref().expect("burst mode");
        interrupted
            || burst.senders.iter().all(BurstSender::done)
            || now.saturating_sub(burst.last_progress) > secs_to_ns(self.flags.drain_timeout)
    }

    pub fn end_burst(&mut self, now: u64) {
        let sent = self.sent_total();
        let burst = self.burst.as_mut().expect("burst mode");
        burst.sending_ended_at = now;
        burst.stall_max_ns = burst.senders.iter().map(|s| s.stall_until(now)).max().unwrap_or(0);
        self.figures.sent_at_end = sent;
        self.figures.measure_end = now;
        self.phase = RunPhase::Drain;
        self.deadline = now + secs_to_ns(self.flags.drain_timeout);
        info!("burst sent in {:.3} s; draining", (now - burst.started_at) as f64 / 1e9);
    }

    /// Wire bytes the senders' sockets took since the burst started, the
    /// end of an interrupted burst (written during the drain) included.
    pub fn burst_bytes_written(&self) -> u64 {
        let Some(burst) = self.burst.as_ref() else { return 0 };
        let senders = burst.senders.iter().zip(&self.shared.senders);
        senders.map(|(sender, state)| self.conns[state.conn].bytes_written - sender.written_before).sum()
    }

    /// The drain is over: the figures cover the whole burst, delivery included.
    pub fn end_burst_drain(&mut self, now: u64, all_in: bool) {
        self.shared.measuring = false;
        self.figures.own_cpu_after = system::own_cpu();
        self.figures.system_after = SystemSnapshot::take(&self.pids);
        let burst = self.burst.as_mut().expect("burst mode");
        burst.delivered_at = all_in.then_some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::NO_SENDER;

    #[test]
    fn send_time_needs_every_sender_finished() {
        let mut burst = Burst::new(1000, 2);
        burst.started_at = 1_000_000_000;
        burst.senders[0].finished_at = Some(1_500_000_000);
        assert_eq!(burst.send_seconds(), None);
        burst.senders[1].finished_at = Some(3_000_000_000);
        assert_eq!(burst.send_seconds(), Some(2.0));
        assert_eq!(burst.delivered_seconds(), None);
        burst.delivered_at = Some(4_000_000_000);
        assert_eq!(burst.delivered_seconds(), Some(3.0));
    }

    #[test]
    fn a_closed_sender_is_done_but_lost_and_closes_are_listed() {
        let mut burst = Burst::new(1000, 1);
        let sender = Connection::new(Role::Sender, 0, 0, 0, Vec::new());
        let receiver = Connection::new(Role::Receiver, 0, 0, NO_SENDER, Vec::new());
        for _ in 0..MAX_LISTED + 3 {
            burst.on_closed(&receiver, "r0", "connection closed by the server");
        }
        assert!(!burst.senders[0].done());
        burst.on_closed(&sender, "s0", "Connection reset by peer (os error 104)");
        assert!(burst.senders[0].done() && burst.senders[0].lost);
        assert_eq!(burst.closed_count, MAX_LISTED as u64 + 4);
        assert_eq!(burst.closed.len(), MAX_LISTED);
        assert_eq!(burst.closed[0], "r0: connection closed by the server");
        assert_eq!(burst.send_seconds(), None);
    }

    #[test]
    fn stalls_count_the_one_still_going() {
        let sender = BurstSender { stall_max_ns: 5, blocked_since: Some(100), ..Default::default() };
        assert_eq!(sender.stall_until(103), 5);
        assert_eq!(sender.stall_until(110), 10);
        assert_eq!(BurstSender::default().stall_until(1_000), 0);
    }
}
