//! What happens when: the run's phases, and the checks that move it from one
//! to the next (everyone connected, everyone joined, time is up, everything
//! delivered, Ctrl-C).

use log::info;

use crate::generator::{LoadGenerator, secs_to_ns};
use crate::system::{self, SystemSnapshot};
use crate::{Failure, exit_code, failure};

/// How often markers (barrier) and probes (idle mode) are repeated.
const REPEAT_NS: u64 = 100_000_000;

/// Where the run is. Load mode goes Connect, Barrier, Warmup, Measure,
/// Drain, Done; burst mode Connect, Barrier, Burst, Drain, Done; idle mode
/// Connect, Verify (unless already joined), Settle, Hold, Done.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum RunPhase {
    Connect,
    /// Every sender's marker must reach every member of its room.
    Barrier,
    Warmup,
    Measure,
    /// Burst mode: senders write their `--burst` bytes.
    Burst,
    Drain,
    /// Idle mode: every connection must see its room's probe.
    Verify,
    /// Idle mode: waiting for the server's RSS to settle.
    Settle,
    Hold,
    Done,
}

impl LoadGenerator {
    pub fn sent_total(&self) -> u64 {
        self.shared.senders.iter().map(|s| s.sent).sum()
    }

    /// Every message sent, times the members of its room.
    pub fn expected(&self) -> u64 {
        self.shared.senders.iter().map(|s| s.sent * self.members[s.room as usize]).sum()
    }

    /// What can still arrive: every message sent, to every member still
    /// connected, plus what members that left had already received.
    pub fn reachable(&self) -> u64 {
        let live: u64 = self
            .shared
            .senders
            .iter()
            .map(|s| s.sent * (self.members[s.room as usize] - self.lost_members[s.room as usize]))
            .sum();
        live + self.shared.stats.received_by_lost_members
    }

    fn start_measure(&mut self, now: u64) {
        self.phase = RunPhase::Measure;
        self.figures.own_cpu_before = system::own_cpu();
        self.figures.system_before = SystemSnapshot::take(&self.pids);
        self.shared.measuring = true;
        self.shared.latency.clear();
        self.shared.stats.measured = 0;
        self.figures.sent_at_start = self.sent_total();
        self.figures.measure_start = now;
        self.deadline = now + secs_to_ns(self.flags.duration);
        info!("measuring for {} s", self.flags.duration);
    }

    fn end_measure(&mut self, now: u64) {
        self.figures.own_cpu_after = system::own_cpu();
        self.figures.system_after = SystemSnapshot::take(&self.pids);
        self.shared.measuring = false;
        self.figures.sent_at_end = self.sent_total();
        self.figures.measure_end = now;
        self.sending = false;
        self.phase = RunPhase::Drain;
        self.deadline = now + secs_to_ns(self.flags.drain_timeout);
        info!("draining");
    }

    /// The barrier is passed: senders start, spread over one period when
    /// paced so they do not all send at the same instant.
    fn start_sending(&mut self, now: u64) {
        self.phase = RunPhase::Warmup;
        self.sending = true;
        self.deadline = now + secs_to_ns(self.flags.warmup);
        let n = self.shared.senders.len() as u64;
        let spacing = self.flags.rate.map_or(0.0, |r| 1e9 / r / n as f64);
        for (k, sender) in self.shared.senders.iter_mut().enumerate() {
            sender.start_ns = now + (k as f64 * spacing) as u64;
            if !sender.queued_for_top_up {
                sender.queued_for_top_up = true;
                self.shared.to_top_up.push(k as u32);
            }
        }
    }

    /// Advances the phase; returns the time of the next thing to do.
    pub fn tick(&mut self, now: u64) -> Result<u64, Failure> {
        let signals = self.interrupts.count();
        let stop = signals > 0;
        let mut wake = now + 100_000_000;
        if self.shared.stats.ready_connections != self.last_ready {
            self.last_ready = self.shared.stats.ready_connections;
            self.last_progress = now;
        }
        match self.phase {
            RunPhase::Connect => {
                if stop {
                    return Err(failure(exit_code::INTERRUPTED, "interrupted while connecting"));
                }
                self.open_more()?;
                if self.shared.stats.ready_connections == self.conns.len() {
                    self.figures.connected_at = now;
                    info!("{} connections set up in {:.2} s", self.conns.len(), now as f64 / 1e9);
                    self.deadline = now + secs_to_ns(self.flags.barrier_timeout);
                    self.next_repeat = now;
                    self.phase = if self.flags.idle.is_none() {
                        RunPhase::Barrier
                    } else if self.shared.stats.joined == self.conns.len() as u64 {
                        self.deadline = now + secs_to_ns(self.flags.settle);
                        RunPhase::Settle
                    } else {
                        RunPhase::Verify
                    };
                    return Ok(now);
                }
                if now - self.last_progress > secs_to_ns(self.flags.connect_timeout) {
                    return Err(failure(
                        exit_code::TIMED_OUT,
                        format!(
                            "timed out connecting: {} of {} connections set up",
                            self.shared.stats.ready_connections,
                            self.conns.len()
                        ),
                    ));
                }
                wake = wake.min(now + 20_000_000);
            }
            RunPhase::Barrier | RunPhase::Verify => {
                let barrier = self.phase == RunPhase::Barrier;
                let (seen, want, what) = if barrier {
                    (self.shared.stats.marker_pairs, self.total_pairs, "member/sender pairs saw a marker")
                } else {
                    (self.shared.stats.joined, self.conns.len() as u64, "connections saw a probe")
                };
                if seen >= want {
                    self.figures.barrier_at = now;
                    let passed = if barrier { "barrier passed" } else { "every connection seen joined" };
                    info!("{passed} after {:.2} s", (now - self.figures.connected_at) as f64 / 1e9);
                    if barrier && self.burst.is_some() {
                        self.start_burst(now);
                    } else if barrier {
                        self.start_sending(now);
                    } else {
                        self.phase = RunPhase::Settle;
                        self.deadline = now + secs_to_ns(self.flags.settle);
                    }
                    return Ok(now);
                }
                if stop {
                    return Err(failure(exit_code::INTERRUPTED, "interrupted before the barrier"));
                }
                if now >= self.deadline {
                    return Err(failure(
                        exit_code::TIMED_OUT,
                        format!(
                            "barrier not reached in {} s: {seen} of {want} {what}",
                            self.flags.barrier_timeout
                        ),
                    ));
                }
                if now >= self.next_repeat {
                    self.send_repeats();
                    self.next_repeat = now + REPEAT_NS;
                }
                wake = wake.min(self.next_repeat);
            }
            RunPhase::Warmup => {
                if now >= self.deadline || stop {
                    self.start_measure(now);
                    if stop {
                        self.end_measure(now);
                    }
                    return Ok(now);
                }
            }
            RunPhase::Measure => {
                if now >= self.deadline || stop {
                    self.end_measure(now);
                    return Ok(now);
                }
            }
            RunPhase::Burst => {
                if self.burst_over(now, stop) {
                    self.end_burst(now);
                    return Ok(now);
                }
            }
            RunPhase::Drain => {
                let all_in = self.shared.stats.received >= self.reachable();
                if all_in || now >= self.deadline || signals > 1 {
                    self.figures.drain_complete = all_in;
                    self.figures.drain_end = now;
                    self.phase = RunPhase::Done;
                    if self.burst.is_some() {
                        self.end_burst_drain(now, all_in);
                    }
                    return Ok(now);
                }
                wake = wake.min(now + 10_000_000);
            }
            RunPhase::Settle => {
                if now >= self.deadline {
                    self.figures.system_after = SystemSnapshot::take(&self.pids);
                    self.report_idle(now);
                    self.phase = RunPhase::Hold;
                    self.deadline = self.flags.hold.map_or(u64::MAX, |h| now + secs_to_ns(h));
                    if self.flags.hold.is_none() {
                        info!("holding {} connections until Ctrl-C", self.conns.len());
                    }
                    return Ok(now);
                }
            }
            RunPhase::Hold => {
                if now >= self.deadline || stop {
                    self.phase = RunPhase::Done;
                    return Ok(now);
                }
            }
            RunPhase::Done => {}
        }
        if matches!(self.phase, RunPhase::Warmup | RunPhase::Measure)
            && let Some(rate) = self.flags.rate
        {
            wake = wake.min(self.send_paced(now, rate));
        }
        if matches!(self.phase, RunPhase::Warmup | RunPhase::Measure | RunPhase::Settle | RunPhase::Hold) {
            wake = wake.min(self.deadline);
        }
        if self.phase == RunPhase::Burst {
            wake = wake.min(self.continue_burst(now));
        }
        if !self.paced_readers.is_empty() {
            wake = wake.min(self.resume_paced_reads(now));
        }
        Ok(wake)
    }
}
