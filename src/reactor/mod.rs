//! The reactor: one thread, one `mio::Poll`, every socket. It only moves
//! bytes and events; what a connection *means* is its [`Session`], which
//! never sees a socket.
//!
//! A turn:
//! 1. wait in `poll` until a socket is ready, a deadline passes, or the
//!    waker fires (the timeout is the nearest deadline, so timers need no
//!    thread);
//! 2. read connections that used up their read budget last turn, then
//!    handle every event: accept until `WouldBlock` (`listeners.rs`), read
//!    until `WouldBlock` or the budget is spent and feed the session
//!    (`transfer.rs`);
//! 3. apply what the session asked for: claim a name, copy a batch of
//!    messages into each member's output, queue a reply (`transfer.rs`); nothing
//!    is written yet;
//! 4. wake sessions whose deadline has come (`deadlines.rs`);
//! 5. flush: each connection with new output gets one `write` for all of
//!    it; only one whose socket did not take everything registers WRITABLE
//!    interest, and only until it drains (`transfer.rs`);
//! 6. remove the connections closed during the turn (closes are marked
//!    deep in a turn and applied here, as Redis's `freeClientAsync` and
//!    `beforeSleep` do), and publish the counters.
//!
//! Shutdown (`shutdown.rs`) is a state of the reactor, not of a session.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Poll, Token};
use slab::Slab;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::flow::Flow;
use crate::history::{History, Store};
use crate::output::{Batch, BufferPool, Output};
use crate::rooms::{ConnId, Rooms, Transport};
use crate::session::{Effects, Session, deadline_after};
use crate::stats::{SharedStats, Stats};
use crate::tls::{Loaded, TlsListener};

mod cluster;
mod deadlines;
mod history;
pub(crate) mod listeners;
mod shutdown;
mod transfer;

use deadlines::Deadlines;
pub(crate) use listeners::Listener;
use listeners::{TCP_LISTENER, TCP_TLS_LISTENER, WS_LISTENER, WSS_LISTENER};

pub(crate) const WAKER: Token = Token(usize::MAX);

/// Size of the buffer every read goes into.
const READ_CHUNK: usize = 64 * 1024;
/// Events taken from one `poll`.
const EVENTS_CAPACITY: usize = 1024;
/// After this long without events, pooled output buffers are freed.
const POOL_IDLE_RELEASE: Duration = Duration::from_secs(1);
/// How often gauges that walk every connection are refreshed.
const SLOW_GAUGES_EVERY: Duration = Duration::from_millis(250);

/// One client connection as the reactor holds it: the socket, the bytes
/// owed to it, and its session.
#[derive(Debug)]
struct Connection {
    socket: TcpStream,
    /// Everything waiting to be written, in order.
    output: Output,
    /// Which listener accepted it.
    transport: Transport,
    session: Session,
    /// The time of this connection's entry in `Deadlines`, if any.
    armed: Option<deadlines::Tick>,
    /// Whether the `input_buffers` gauge counts this connection now.
    counted_as_holding_input: bool,
    /// Whether WRITABLE interest is registered (while output or TLS
    /// records wait for the socket).
    write_interest: bool,
    /// The TLS session under every stage, on a TLS port.
    tls: Option<Box<TlsState>>,
}

/// A connection's TLS: rustls decrypts what is read and encrypts what the
/// output hands it at flush time; everything above it is unchanged.
#[derive(Debug)]
struct TlsState {
    connection: rustls::ServerConnection,
    listener: TlsListener,
    /// When the connection was accepted, for the handshake time.
    accepted: Instant,
}

impl Connection {
    fn new(socket: TcpStream, transport: Transport, session: Session, tls: Option<Box<TlsState>>) -> Self {
        Connection {
            socket,
            output: Output::Empty,
            transport,
            session,
            armed: None,
            counted_as_holding_input: false,
            write_interest: false,
            tls,
        }
    }

    /// Whether bytes wait for the socket: queued output, or TLS records
    /// rustls has made (a handshake message, encrypted output, an alert).
    fn waits_to_write(&self) -> bool {
        self.output.is_blocked() || self.tls.as_ref().is_some_and(|tls| tls.connection.wants_write())
    }
}

/// Whether the server is serving or winding down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    Serving,
    /// No more accepting or reading; pending output is flushed until
    /// `deadline`, then whatever is left is dropped. `cut` counts what
    /// closes dropped on the way, for the summary.
    ShuttingDown {
        deadline: Instant,
        cut: shutdown::Cut,
    },
}

/// The output side shared by every connection: the buffer pool, the
/// connections to flush at the end of the turn, the per-connection cap,
/// and flow control, which watches every queue grow and shrink.
#[derive(Debug)]
struct Outputs {
    pool: BufferPool,
    /// Connections whose output went from empty to pending this turn.
    to_flush: Vec<ConnId>,
    max_pending: usize,
    flow: Flow,
    /// Connections whose output just passed the high-water mark: their
    /// stall deadline must be armed.
    newly_congested: Vec<ConnId>,
}

pub(crate) struct Reactor {
    poll: Poll,
    listeners: Vec<Listener>,
    connections: Slab<Connection>,
    rooms: Rooms,
    outputs: Outputs,
    /// Connections that used their read budget with input possibly left,
    /// or whose readiness may have been consumed without a read.
    to_read: Vec<ConnId>,
    /// Connections closed this turn, removed at its end.
    to_close: Vec<ConnId>,
    /// Senders left unread while their room (or the server) is paused;
    /// read again when a pause ends. At most one entry per connection.
    deferred: HashSet<ConnId>,
    /// When the slower gauges were last refreshed.
    gauges_refreshed: Instant,
    /// The TLS configurations new connections get, when TLS is on.
    tls: Option<Loaded>,
    /// Certificates reloaded by `Handle::reload_tls`, to take over.
    tls_reloads: std::sync::mpsc::Receiver<Loaded>,
    deadlines: Deadlines,
    /// Every read lands here first.
    read_buffer: Box<[u8]>,
    /// What the session being served asked for; applied and emptied after
    /// every call into a session.
    effects: Effects,
    config: Config,
    stats: Stats,
    shared_stats: Arc<SharedStats>,
    shutdown_requested: Arc<AtomicBool>,
    state: ServerState,
    /// The time of the current turn.
    now: Instant,
    /// The wall-clock time of the current turn, in milliseconds since the
    /// Unix epoch (what history records with each line).
    wall_ms: u64,
    /// Each room's latest lines, and their way to the database.
    history: history::RoomHistory,
    /// Cluster mode: the Redis links and the cluster machine.
    cluster: Option<cluster::ClusterLinks>,
    /// Another node's batch, being delivered (its buffers reused).
    remote_batch: Batch,
}

impl Reactor {
    /// Everything the loop owns, handed over by `Server::bind` once the
    /// listeners are bound and the history restored.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        poll: Poll,
        mut listeners: Vec<Listener>,
        config: Config,
        shared_stats: Arc<SharedStats>,
        shutdown_requested: Arc<AtomicBool>,
        tls: Option<Loaded>,
        tls_reloads: std::sync::mpsc::Receiver<Loaded>,
        history: (History, Option<Store>),
        cluster: Option<(Cluster, std::net::SocketAddr)>,
    ) -> io::Result<Self> {
        for listener in &mut listeners {
            listener.register(poll.registry())?;
        }
        let flow_limits =
            config.flow_limits().map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        Ok(Reactor {
            poll,
            listeners,
            connections: Slab::new(),
            rooms: Rooms::new(),
            outputs: Outputs {
                pool: BufferPool::default(),
                to_flush: Vec::new(),
                max_pending: config.max_pending,
                flow: Flow::new(flow_limits),
                newly_congested: Vec::new(),
            },
            to_read: Vec::new(),
            to_close: Vec::new(),
            deferred: HashSet::new(),
            gauges_refreshed: Instant::now(),
            tls,
            tls_reloads,
            deadlines: Deadlines::new(Instant::now()),
            read_buffer: vec![0; READ_CHUNK].into_boxed_slice(),
            effects: Effects::default(),
            config,
            stats: Stats::default(),
            shared_stats,
            shutdown_requested,
            state: ServerState::Serving,
            now: Instant::now(),
            wall_ms: crate::history::now_ms(),
            history: history::RoomHistory::new(history.0, history.1),
            cluster: cluster.map(|(machine, address)| cluster::ClusterLinks::new(machine, address)),
            remote_batch: Batch::new(),
        })
    }

    /// Runs until shutdown completes.
    pub(crate) fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            let timeout = self.poll_timeout();
            if let Err(error) = self.poll.poll(&mut events, timeout) {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            self.now = Instant::now();
            self.wall_ms = crate::history::now_ms();
            self.stats.loop_turns += 1;
            if events.is_empty() && self.to_read.is_empty() {
                // Idle: give back the memory of the last burst.
                self.outputs.pool.release();
            }

            self.read_carried_over();
            for event in &events {
                match event.token() {
                    WAKER => {
                        self.take_tls_reloads();
                        self.check_shutdown_request();
                    }
                    token @ (TCP_LISTENER | WS_LISTENER | TCP_TLS_LISTENER | WSS_LISTENER) => {
                        self.accept(token)
                    }
                    token @ (cluster::REDIS_SUBSCRIBER | cluster::REDIS_COMMANDS) => {
                        if let Some(link) = cluster::link_of(token) {
                            self.redis_event(link, event);
                        }
                    }
                    Token(key) => {
                        let id = ConnId(key);
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read_from(id);
                        }
                        if event.is_writable() {
                            self.writable(id);
                        }
                    }
                }
            }
            self.expire_deadlines();
            self.cluster_tick();
            self.remove_closed();
            self.resume_accepting_when_due();
            self.cluster_flush();
            self.flush_pending();
            self.remove_closed();
            self.resume_deferred();
            self.publish_stats();

            if let ServerState::ShuttingDown { deadline, .. } = self.state
                && (self.now >= deadline || self.everything_written())
            {
                self.finish_shutdown();
                return Ok(());
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.to_read.is_empty() {
            return Some(Duration::ZERO);
        }
        let listeners = self.listeners.iter().filter_map(Listener::retry_at);
        let shutdown = match self.state {
            ServerState::ShuttingDown { deadline, .. } => Some(deadline),
            ServerState::Serving => None,
        };
        let pool_release =
            (self.outputs.pool.pooled() > 0).then(|| deadline_after(Instant::now(), POOL_IDLE_RELEASE));
        let next = self
            .deadlines
            .next()
            .into_iter()
            .chain(listeners)
            .chain(shutdown)
            .chain(pool_release)
            .chain(self.cluster_deadline())
            .min()?;
        // Round up, so the loop does not wake a hair early and spin.
        Some(next.saturating_duration_since(Instant::now()).saturating_add(Duration::from_millis(1)))
    }

    /// A reloaded certificate is for connections accepted from now on.
    fn take_tls_reloads(&mut self) {
        while let Ok(loaded) = self.tls_reloads.try_recv() {
            self.tls = Some(loaded);
        }
    }

    /// Wakes the connections whose deadline has come: a congested output
    /// that made no progress is cut; otherwise the session is told the time.
    fn expire_deadlines(&mut self) {
        while let Some(id) = self.deadlines.pop_due(self.now) {
            let Some(connection) = self.connections.get_mut(id.0) else { continue };
            connection.armed = None;
            if let Some(reason) = self.outputs.flow.stalled(id, self.now) {
                self.cut(id, reason);
                continue;
            }
            // A TLS handshake still going when the session's handshake time
            // is up (not later, when a closing connection's linger ends).
            let handshaking = connection.tls.as_ref().is_some_and(|tls| tls.connection.is_handshaking());
            let session = &connection.session;
            if handshaking
                && !session.is_closing()
                && !session.is_finished()
                && session.deadline().is_some_and(|deadline| deadline <= self.now)
            {
                self.stats.tls_failures[crate::tls::TlsFailure::Timeout as usize] += 1;
            }
            connection.session.timeout(self.now, &self.config, &mut self.effects);
            self.apply_effects(id);
        }
    }

    fn publish_stats(&mut self) {
        self.refresh_gauges();
        self.shared_stats.publish(&self.stats);
    }

    /// Fills in the gauges that are read off the reactor's state.
    fn refresh_gauges(&mut self) {
        self.stats.connections = self.connections.len() as u64;
        self.stats.rooms = self.rooms.len() as u64;
        self.stats.members = self.rooms.member_count() as u64;
        let flow = &self.outputs.flow;
        self.stats.congested = flow.congested() as u64;
        self.stats.paused_rooms = flow.paused_rooms() as u64;
        self.stats.saturated = u64::from(flow.is_saturated());
        self.stats.paused_senders = self.deferred.len() as u64;
        self.stats.paused_ms = flow.paused_time(self.now).as_millis() as u64;
        self.stats.timers = self.deadlines.len() as u64;
        self.history.publish(&mut self.stats);
        self.publish_cluster_stats();
        // The largest queue takes a walk over every connection: a few
        // times a second is plenty for a gauge.
        if self.now.saturating_duration_since(self.gauges_refreshed) >= SLOW_GAUGES_EVERY {
            self.gauges_refreshed = self.now;
            self.stats.largest_queue =
                self.connections.iter().map(|(_, connection)| connection.output.len()).max().unwrap_or(0)
                    as u64;
        }
    }
}
