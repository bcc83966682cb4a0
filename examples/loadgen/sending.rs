//! How senders send: closed loop (keep `--window` messages in flight, counted
//! against the sender's own echo), paced (`--rate` messages per second), and
//! the markers and probes that check everyone has joined.

use crate::connection::ConnState;
use crate::generator::LoadGenerator;
use crate::phases::RunPhase;

/// A sender's queued output above this is not added to in paced mode: past
/// it the server is not keeping up, and queuing more only measures our queue.
const OUT_CAP: usize = 1 << 20;

impl LoadGenerator {
    /// Closed loop: tops up each sender that had echoes back.
    pub fn top_up_windows(&mut self) {
        let window = self.flags.window as u64;
        let closed_loop = self.flags.rate.is_none() && self.sending;
        let now = self.clock.now_ns();
        let shared = &mut self.shared;
        while let Some(id) = shared.to_top_up.pop() {
            let sender = &mut shared.senders[id as usize];
            sender.queued_for_top_up = false;
            if !closed_loop {
                continue;
            }
            let conn = &mut self.conns[sender.conn];
            if conn.state != ConnState::Ready {
                continue;
            }
            let mut added = false;
            while sender.sent.saturating_sub(sender.echoed) < window {
                shared.encoder.data(&mut conn.out, sender.room, id, sender.sent, now);
                sender.sent += 1;
                added = true;
            }
            if added && let Err(e) = conn.flush() {
                let i = sender.conn;
                self.on_closed(i, e.to_string());
                return;
            }
        }
    }

    /// Paced mode: sends what each sender owes by now; returns the next due
    /// time.
    pub fn send_paced(&mut self, now: u64, rate: f64) -> u64 {
        let mut next = u64::MAX;
        let mut broken = Vec::new();
        for (id, sender) in self.shared.senders.iter_mut().enumerate() {
            let conn = &mut self.conns[sender.conn];
            if conn.state != ConnState::Ready {
                continue;
            }
            if now >= sender.start_ns {
                let due = ((now - sender.start_ns) as f64 * rate / 1e9) as u64 + 1;
                let mut added = false;
                while sender.sent < due && conn.unwritten() < OUT_CAP {
                    if self.shared.measuring {
                        let due_at = sender.start_ns + (sender.sent as f64 * 1e9 / rate) as u64;
                        let lag = now.saturating_sub(due_at);
                        if lag > self.shared.stats.pace_lag_max_ns {
                            self.shared.stats.pace_lag_max_ns = lag;
                        }
                    }
                    self.shared.encoder.data(&mut conn.out, sender.room, id as u32, sender.sent, now);
                    sender.sent += 1;
                    added = true;
                }
                if added && let Err(e) = conn.flush() {
                    broken.push((sender.conn, e.to_string()));
                }
            }
            let due_at = sender.start_ns + (sender.sent as f64 * 1e9 / rate).ceil() as u64;
            // Waking more often than every 200 us would cost more than it measures.
            next = next.min(due_at.max(now + 200_000));
        }
        for (i, why) in broken {
            self.on_closed(i, why);
        }
        next
    }

    /// Sends one marker from every sender, or one probe into every room.
    pub fn send_repeats(&mut self) {
        let mut broken = Vec::new();
        if self.phase == RunPhase::Barrier {
            for (id, sender) in self.shared.senders.iter().enumerate() {
                let conn = &mut self.conns[sender.conn];
                if conn.state == ConnState::Ready {
                    self.shared.encoder.control(&mut conn.out, sender.room, b'm', Some(id as u32));
                    if let Err(e) = conn.flush() {
                        broken.push((sender.conn, e.to_string()));
                    }
                }
            }
        } else {
            // Idle mode: the first connection of each room probes it.
            let rooms = (self.flags.rooms as usize).min(self.conns.len());
            for i in 0..rooms {
                let conn = &mut self.conns[i];
                if conn.state == ConnState::Ready {
                    self.shared.encoder.control(&mut conn.out, conn.room, b'p', None);
                    if let Err(e) = conn.flush() {
                        broken.push((i, e.to_string()));
                    }
                }
            }
        }
        for (i, why) in broken {
            self.on_closed(i, why);
        }
    }
}
