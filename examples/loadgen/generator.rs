//! The load generator's state, and how it is set up from the flags: which
//! connections exist, in which room, with which role. The behaviour is split
//! by concern: `event_loop` (sockets), `phases` (what happens when),
//! `sending` and `report`.

use std::net::IpAddr;
use std::time::Instant;

use log::warn;
use mio::Poll;

use crate::burst::Burst;
use crate::connection::{CHUNK, Connection, NO_SENDER, Role};
use crate::event_loop::SIGNAL_TOKEN;
use crate::flags::{Flags, Proto, Transport};
use crate::histogram::Histogram;
use crate::phases::RunPhase;
use crate::protocol::MessageEncoder;
use crate::read_pacing::ReadPacing;
use crate::sequence::SenderTrack;
use crate::shared::{SenderState, Shared, Stats};
use crate::signals::Interrupts;
use crate::system::{self, CpuTimes, SystemSnapshot};
use crate::targets::{self, Target};
use crate::tls::TlsClient;
use crate::{Failure, exit_code, failure};

/// Nanoseconds since the generator started: every time in the generator is
/// one of these.
#[derive(Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn now_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

pub fn secs_to_ns(s: f64) -> u64 {
    (s.max(0.0) * 1e9) as u64
}

/// Times and snapshots the report is made of.
#[derive(Default)]
pub struct Figures {
    pub connected_at: u64,
    pub barrier_at: u64,
    pub measure_start: u64,
    pub measure_end: u64,
    pub drain_end: u64,
    pub sent_at_start: u64,
    pub sent_at_end: u64,
    pub own_cpu_before: CpuTimes,
    pub own_cpu_after: CpuTimes,
    pub system_before: SystemSnapshot,
    pub system_after: SystemSnapshot,
    /// Every message reached every member before the drain timed out.
    pub drain_complete: bool,
}

pub struct LoadGenerator {
    pub flags: Flags,
    pub clock: Clock,
    pub poll: Poll,
    /// The servers (`--addr`, once or more), with how many clients each
    /// got; a connection's `target` indexes this.
    pub targets: Vec<Target>,
    pub source_ips: u32,
    /// Receivers first, then senders (Redis: publisher, then subscriber);
    /// a connection's index is its mio token.
    pub conns: Vec<Connection>,
    /// Every read lands here, after the previous read's leftover.
    pub read_buffer: Vec<u8>,
    pub shared: Shared,
    pub phase: RunPhase,
    /// Closed loop: senders top up their window.
    pub sending: bool,
    pub next_to_open: usize,
    pub last_ready: usize,
    /// When a connection last finished its setup.
    pub last_progress: u64,
    /// When the current phase ends (or times out).
    pub deadline: u64,
    /// When markers or probes are sent again.
    pub next_repeat: u64,
    /// Members of each room that receive.
    pub members: Vec<u64>,
    /// Receiving members of each room that have disconnected.
    pub lost_members: Vec<u64>,
    /// Member/sender pairs: how many markers the barrier waits for.
    pub total_pairs: u64,
    pub figures: Figures,
    pub interrupts: Interrupts,
    /// Burst mode's progress (`--burst`).
    pub burst: Option<Burst>,
    /// Connections whose reading `--read-rate` paces.
    pub paced_readers: Vec<usize>,
    /// `--tls`: what each connection's TLS session is made from.
    pub tls: Option<TlsClient>,
    /// The processes whose CPU (and RSS) is read around the timed phase.
    pub pids: system::Pids,
}

impl LoadGenerator {
    pub fn new(flags: Flags, mut interrupts: Interrupts) -> Result<LoadGenerator, Failure> {
        flags.check()?;
        let mut targets = targets::resolve(&flags.addr_texts())?;
        let pids = flags.pids();
        for (flag, pid) in pids
            .servers
            .iter()
            .enumerate()
            .map(|(i, pid)| (if i == 0 { "--server-pid" } else { "--extra-server-pid" }, pid))
            .chain(pids.backends.iter().map(|pid| ("--backend-pid", pid)))
        {
            if system::process_cpu_seconds(*pid).is_none() {
                return Err(failure(
                    exit_code::BAD_FLAGS,
                    format!("{flag} {pid}: cannot read /proc/{pid}/stat"),
                ));
            }
        }

        let rooms = flags.rooms;
        let room_names: Vec<String> = (0..rooms).map(|r| format!("{}{r}", flags.room_prefix)).collect();
        // How many of `n` things numbered round-robin land in room `r`.
        let in_room = |n: u32, r: u32| (n / rooms + u32::from(r < n % rooms)) as usize;

        let mut conns = Vec::new();
        let mut senders = Vec::new();
        let mut members = vec![0u64; rooms as usize];
        if let Some(n) = flags.idle {
            for i in 0..n {
                conns.push(Connection::new(Role::Idle, i, i % rooms, NO_SENDER, Vec::new()));
            }
        } else {
            let tracks_for = |r: u32| vec![SenderTrack::default(); in_room(flags.senders, r)];
            for id in 0..flags.receivers {
                let room = id % rooms;
                members[room as usize] += 1;
                conns.push(Connection::new(Role::Receiver, id, room, NO_SENDER, tracks_for(room)));
            }
            for id in 0..flags.senders {
                let room = id % rooms;
                members[room as usize] += 1;
                let conn = conns.len();
                if flags.proto == Proto::Redis {
                    conns.push(Connection::new(Role::Publisher, id, room, id, Vec::new()));
                    conns.push(Connection::new(Role::SenderSubscriber, id, room, id, tracks_for(room)));
                } else {
                    conns.push(Connection::new(Role::Sender, id, room, id, tracks_for(room)));
                }
                senders.push(SenderState {
                    conn,
                    room,
                    sent: 0,
                    echoed: 0,
                    queued_for_top_up: false,
                    start_ns: 0,
                });
            }
        }
        let total_pairs = (0..rooms).map(|r| members[r as usize] * in_room(flags.senders, r) as u64).sum();
        for conn in conns.iter_mut() {
            conn.target = targets::target_for(conn.id, rooms, targets.len());
            let target = &mut targets[conn.target];
            target.connections += 1;
            // A Redis sender is one client with two connections.
            target.clients += u64::from(conn.role != Role::SenderSubscriber);
        }

        if flags.idle.is_none() && flags.senders < rooms {
            warn!("{} of {rooms} rooms have no sender: their receivers get nothing", rooms - flags.senders);
        }
        let limit = system::raise_open_file_limit();
        if conns.len() as u64 + 32 > limit {
            return Err(failure(
                exit_code::CANNOT_CONNECT,
                format!(
                    "{} connections need more open files than the limit {limit} (raise the hard limit, or split the load over processes)",
                    conns.len()
                ),
            ));
        }
        let mut paced_readers = Vec::new();
        if let Some(rate) = flags.read_rate {
            let slow = flags.slow_receivers.unwrap_or(flags.receivers);
            for (i, conn) in conns.iter_mut().enumerate() {
                if conn.role == Role::Receiver && conn.id < slow {
                    conn.pacing = Some(ReadPacing::new(rate, CHUNK, 0));
                    paced_readers.push(i);
                }
            }
        }
        let loopback =
            targets.iter().all(|target| matches!(target.addr.ip(), IpAddr::V4(ip) if ip.is_loopback()));
        let source_ips = match flags.source_ips {
            0 => (conns.len() as u32).div_ceil(20_000).max(1),
            n => n.min(254),
        };
        if source_ips > 1 && !loopback {
            warn!("--source-ips ignored: a server address is not IPv4 loopback");
        }
        let source_ips = if loopback { source_ips } else { 1 };

        let tls = if flags.tls {
            let ca =
                match &flags.ca {
                    Some(path) => Some(std::fs::read(path).map_err(|e| {
                        failure(exit_code::BAD_FLAGS, format!("--ca {}: {e}", path.display()))
                    })?),
                    None => None,
                };
            Some(TlsClient::new(ca.as_deref(), &flags.server_name, flags.transport == Transport::Ws)?)
        } else {
            None
        };
        let poll = Poll::new()
            .map_err(|e| failure(exit_code::CANNOT_CONNECT, format!("cannot create poll: {e}")))?;
        interrupts
            .register(poll.registry(), SIGNAL_TOKEN)
            .map_err(|e| failure(exit_code::CANNOT_CONNECT, format!("cannot register signals: {e}")))?;
        let seed = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
        let encoder = MessageEncoder::new(flags.proto, flags.transport, flags.payload, room_names, seed);
        Ok(LoadGenerator {
            clock: Clock(Instant::now()),
            poll,
            targets,
            source_ips,
            conns,
            read_buffer: vec![0; 2 * CHUNK],
            shared: Shared {
                rooms,
                senders,
                to_top_up: Vec::new(),
                measuring: false,
                stats: Stats::default(),
                latency: Histogram::new(),
                failure: None,
                encoder,
                record_server_errors: flags.burst.is_some(),
                server_errors: Vec::new(),
                server_error_count: 0,
            },
            phase: RunPhase::Connect,
            sending: false,
            next_to_open: 0,
            last_ready: 0,
            last_progress: 0,
            deadline: 0,
            next_repeat: 0,
            lost_members: vec![0; members.len()],
            members,
            total_pairs,
            figures: Figures::default(),
            interrupts,
            burst: flags.burst.map(|bytes| Burst::new(bytes, flags.senders as usize)),
            paced_readers,
            tls,
            pids,
            flags,
        })
    }
}
