//! The event loop: one thread, one `mio::Poll`, every socket.
//!
//! A turn of the loop:
//! 1. wait in `poll` until a socket is ready, a deadline passes, or the
//!    waker fires (the poll timeout is the nearest deadline, so timers need
//!    no thread);
//! 2. serve connections that used up their read budget last turn, then
//!    every event: accept until `WouldBlock`, read until `WouldBlock` or
//!    the budget is spent (mio is edge-triggered: readiness is reported
//!    once, so whatever is left unread must be remembered by us);
//! 3. every message read is encoded once and copied into each recipient's
//!    output buffer; nothing is written yet;
//! 4. expire deadlines;
//! 5. flush: each connection with new output gets one `write` for all of
//!    it. Only a connection whose socket did not take everything registers
//!    WRITABLE interest, and only until it drains.
//!
//! The loop only moves bytes and events; framing, handshakes, HTTP and room
//! bookkeeping live in their own socket-free modules.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};
use slab::Slab;

use crate::broadcast::Batch;
use crate::config::Config;
use crate::connection::{Connection, MemberInput, Membership, Stage};
use crate::handshake::{self, Handshake, HandshakeError, JoinRequest, Step};
use crate::http::{self, Page, Parsed, Response, Route, Routes};
use crate::line_framing::{LineFramer, for_each_line};
use crate::output::{BufferPool, Flushed, Output, OverCap, Queue, Tally};
use crate::rooms::{ConnId, NameTaken, RoomId, Rooms, Transport};
use crate::stats::{SharedStats, Stats};
use crate::websocket::{self, Flow, WsError, WsEvent, WsLimits, WsSession, close_code};

/// The browser chat page served at `/`, compiled in.
const CHAT_PAGE: &str = include_str!("chat_page.html");
/// Where the page's script expects the WebSocket path, as a JSON string.
const WS_PATH_PLACEHOLDER: &str = "\"__MACHAT_WS_PATH__\"";

pub(crate) const WAKER: Token = Token(usize::MAX);
const TCP_LISTENER: Token = Token(usize::MAX - 1);
const WS_LISTENER: Token = Token(usize::MAX - 2);

/// Size of the buffer every read goes into.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes one connection may read per turn before others get their turn.
const READ_BUDGET: usize = 64 * 1024;
/// How long a closing connection may take to flush and say goodbye.
const CLOSE_LINGER: Duration = Duration::from_secs(5);
/// How long to wait before trying `accept` again after running out of
/// descriptors (closing a connection retries sooner).
const ACCEPT_RETRY: Duration = Duration::from_millis(250);
/// Events taken from one `poll`.
const EVENTS_CAPACITY: usize = 1024;
/// After this long without events, pooled output buffers are freed.
const POOL_IDLE_RELEASE: Duration = Duration::from_secs(1);

/// A listening socket and whether it is accepting.
#[derive(Debug)]
pub(crate) struct Listener {
    socket: TcpListener,
    token: Token,
    transport: Transport,
    state: Accepting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accepting {
    Open,
    /// Out of descriptors since `since`: deregistered until `until`, or
    /// until a connection closes and frees one.
    Paused {
        until: Instant,
        since: Instant,
    },
    /// Listening again after a pause; open once an accept succeeds.
    Retrying {
        since: Instant,
    },
}

impl Listener {
    pub(crate) fn new(socket: TcpListener, transport: Transport) -> Self {
        let token = match transport {
            Transport::Tcp => TCP_LISTENER,
            Transport::WebSocket => WS_LISTENER,
        };
        Listener { socket, token, transport, state: Accepting::Open }
    }

    pub(crate) fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.socket.local_addr()
    }
}

/// Whether the server is serving or winding down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// No more accepting or reading; pending output is flushed until
    /// `deadline`, then whatever is left is dropped.
    ShuttingDown {
        deadline: Instant,
    },
}

pub(crate) struct EventLoop {
    poll: Poll,
    listeners: Vec<Listener>,
    connections: Slab<Connection>,
    rooms: Rooms,
    outbox: Outbox,
    /// Connections that used their read budget with input possibly left.
    to_read: Vec<ConnId>,
    /// Members that could not take a broadcast, closed after it.
    cut: Vec<(ConnId, Cut)>,
    /// Deadlines (handshake, linger), checked lazily against the
    /// connection's current stage when they come due.
    timers: BinaryHeap<Reverse<(Instant, ConnId)>>,
    /// Every read lands here first.
    read_buffer: Vec<u8>,
    /// Messages read in the current step, encoded for the room.
    batch: Batch,
    /// Frames and lines the server itself sends (replies, errors).
    scratch: Vec<u8>,
    config: Config,
    stats: Stats,
    shared_stats: Arc<SharedStats>,
    shutdown_requested: Arc<AtomicBool>,
    phase: Phase,
    /// The time of the current turn.
    now: Instant,
}

impl EventLoop {
    pub(crate) fn new(
        poll: Poll,
        listeners: Vec<Listener>,
        config: Config,
        shared_stats: Arc<SharedStats>,
        shutdown_requested: Arc<AtomicBool>,
    ) -> io::Result<Self> {
        let mut event_loop = EventLoop {
            poll,
            listeners,
            connections: Slab::new(),
            rooms: Rooms::new(),
            outbox: Outbox {
                pool: BufferPool::default(),
                to_flush: Vec::new(),
                max_pending: config.max_pending,
            },
            to_read: Vec::new(),
            cut: Vec::new(),
            timers: BinaryHeap::new(),
            read_buffer: vec![0; READ_CHUNK],
            batch: Batch::new(),
            scratch: Vec::new(),
            config,
            stats: Stats::default(),
            shared_stats,
            shutdown_requested,
            phase: Phase::Serving,
            now: Instant::now(),
        };
        for listener in &mut event_loop.listeners {
            event_loop.poll.registry().register(&mut listener.socket, listener.token, Interest::READABLE)?;
        }
        Ok(event_loop)
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
            self.stats.loop_turns += 1;
            if events.is_empty() && self.to_read.is_empty() {
                // Idle: give back the memory of the last burst.
                self.outbox.pool.release();
            }

            self.read_carried_over();
            for event in &events {
                match event.token() {
                    WAKER => self.check_shutdown_request(),
                    TCP_LISTENER => self.accept(Transport::Tcp),
                    WS_LISTENER => self.accept(Transport::WebSocket),
                    Token(key) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read_from(key);
                        }
                        if event.is_writable() {
                            self.on_writable(key);
                        }
                    }
                }
            }
            self.expire_deadlines();
            self.resume_accepting_when_due();
            self.flush_pending();
            self.publish_stats();

            if let Phase::ShuttingDown { deadline } = self.phase
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
        let timers = self.timers.peek().map(|Reverse((at, _))| *at);
        let listeners = self.listeners.iter().filter_map(|listener| match listener.state {
            Accepting::Paused { until, .. } => Some(until),
            Accepting::Open | Accepting::Retrying { .. } => None,
        });
        let shutdown = match self.phase {
            Phase::ShuttingDown { deadline } => Some(deadline),
            Phase::Serving => None,
        };
        let pool_release = (self.outbox.pool.pooled() > 0).then(|| Instant::now() + POOL_IDLE_RELEASE);
        let next = timers.into_iter().chain(listeners).chain(shutdown).chain(pool_release).min()?;
        // Round up, so the loop does not wake a hair early and spin.
        Some(next.saturating_duration_since(Instant::now()) + Duration::from_millis(1))
    }

    // ----- accepting -------------------------------------------------------

    fn accept(&mut self, transport: Transport) {
        if self.phase != Phase::Serving {
            return;
        }
        let Some(index) = self.listeners.iter().position(|listener| listener.transport == transport) else {
            return;
        };
        loop {
            let listener = &mut self.listeners[index];
            if let Accepting::Paused { .. } = listener.state {
                return;
            }
            match listener.socket.accept() {
                Ok((socket, _)) => {
                    if let Accepting::Retrying { since } = listener.state {
                        log::info!("accepting again after {:.1?} out of descriptors", self.now - since);
                        listener.state = Accepting::Open;
                    }
                    self.admit(socket, transport);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(error) if is_resource_exhaustion(&error) => {
                    // The listener stays readable while connections wait,
                    // so retrying now would spin. Stop listening until a
                    // descriptor is freed or the retry time comes.
                    let since = match listener.state {
                        Accepting::Retrying { since } => since,
                        _ => {
                            log::warn!(
                                "accept failed ({error}); pausing accepts until a descriptor frees up"
                            );
                            self.now
                        }
                    };
                    let _ = self.poll.registry().deregister(&mut listener.socket);
                    listener.state = Accepting::Paused { until: self.now + ACCEPT_RETRY, since };
                    self.stats.accept_pauses += 1;
                    return;
                }
                Err(error) => {
                    log::warn!("accept failed: {error}");
                    return;
                }
            }
        }
    }

    fn resume_accepting_when_due(&mut self) {
        for index in 0..self.listeners.len() {
            let listener = &mut self.listeners[index];
            let Accepting::Paused { until, since } = listener.state else { continue };
            if until > self.now || self.phase != Phase::Serving {
                continue;
            }
            listener.state = Accepting::Retrying { since };
            if let Err(error) =
                self.poll.registry().register(&mut listener.socket, listener.token, Interest::READABLE)
            {
                log::warn!("cannot listen again: {error}");
                listener.state = Accepting::Paused { until: self.now + ACCEPT_RETRY, since };
                continue;
            }
            let transport = listener.transport;
            self.accept(transport);
        }
    }

    /// Takes a new connection into the slab, or turns it away if the
    /// server is full.
    fn admit(&mut self, mut socket: TcpStream, transport: Transport) {
        self.stats.accepted += 1;
        let full = self.connections.len() >= self.config.max_connections;
        // Small writes are the whole point of a chat server: do not let
        // Nagle's algorithm hold them back waiting for ACKs.
        let _ = socket.set_nodelay(true);
        let entry = self.connections.vacant_entry();
        let key = entry.key();
        if let Err(error) = self.poll.registry().register(&mut socket, Token(key), Interest::READABLE) {
            log::warn!("cannot register a new connection: {error}");
            return;
        }
        let deadline = self.now + self.config.handshake_timeout;
        let stage = match transport {
            Transport::Tcp => Stage::TcpHandshake { handshake: Handshake::new(), deadline },
            Transport::WebSocket => Stage::HttpRequest { head: Vec::new(), deadline },
        };
        entry.insert(Connection { socket, output: Output::Empty, transport, stage });
        self.timers.push(Reverse((deadline, key)));
        match transport {
            Transport::Tcp => self.stats.tcp_connections += 1,
            Transport::WebSocket => self.stats.ws_connections += 1,
        }
        if full {
            self.stats.refused_full += 1;
            log::warn!("refusing a connection: server full ({} connections)", self.config.max_connections);
            match transport {
                Transport::Tcp => self.fail(key, "server full", close_code::POLICY),
                Transport::WebSocket => self.respond(
                    key,
                    Response::text(503, "server full"),
                    Reply::AndClose { head_only: false },
                ),
            }
        }
    }

    // ----- reading ---------------------------------------------------------

    /// Serves the connections that had input left over after last turn.
    fn read_carried_over(&mut self) {
        if self.to_read.is_empty() {
            return;
        }
        let mut carried = std::mem::take(&mut self.to_read);
        carried.sort_unstable();
        carried.dedup();
        for &key in &carried {
            self.read_from(key);
        }
        carried.clear();
        if self.to_read.is_empty() {
            self.to_read = carried;
        }
    }

    /// Reads until `WouldBlock`, EOF, an error, or the read budget is spent.
    fn read_from(&mut self, key: ConnId) {
        if self.phase != Phase::Serving {
            // Shutting down: input is no longer read, except to drain.
            if !matches!(self.connections.get(key), Some(Connection { stage: Stage::Draining { .. }, .. })) {
                return;
            }
        }
        let mut budget = READ_BUDGET;
        let mut buffer = std::mem::take(&mut self.read_buffer);
        while let Some(connection) = self.connections.get_mut(key) {
            let draining = match connection.stage {
                Stage::Closing { .. } => break,
                Stage::Draining { .. } => true,
                _ => false,
            };
            match connection.socket.read(&mut buffer) {
                Ok(0) => {
                    self.on_eof(key);
                    break;
                }
                Ok(n) => {
                    self.stats.bytes_in += n as u64;
                    if !draining {
                        self.on_input(key, &buffer[..n]);
                    }
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        self.to_read.push(key);
                        break;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    self.close_now(key, &error.to_string());
                    break;
                }
            }
        }
        self.read_buffer = buffer;
    }

    /// Hands received bytes to whatever the connection's stage expects.
    /// A stage may end part-way (a handshake followed by chat lines), so
    /// the rest goes round again to the next stage.
    fn on_input(&mut self, key: ConnId, input: &[u8]) {
        let mut rest = input;
        while !rest.is_empty() {
            let Some(connection) = self.connections.get(key) else { return };
            rest = match &connection.stage {
                Stage::TcpHandshake { .. } => self.on_tcp_handshake(key, rest),
                Stage::HttpRequest { .. } => self.on_http_request(key, rest),
                Stage::WsHandshake { .. } => self.on_ws_handshake(key, rest),
                Stage::Member(Membership { input: MemberInput::Lines(_), .. }) => self.on_lines(key, rest),
                Stage::Member(Membership { input: MemberInput::WebSocket(_), .. }) => {
                    self.on_ws_messages(key, rest)
                }
                Stage::Closing { .. } | Stage::Draining { .. } => &[],
            };
        }
    }

    /// Whether the connection holds an input buffer of its own.
    fn holds_input(&self, key: ConnId) -> bool {
        self.connections.get(key).is_some_and(|connection| connection.stage.held_input() > 0)
    }

    /// Moves a connection to another stage. This is the one place stages
    /// change: a member leaving its stage leaves its room here, and the
    /// input-buffer gauge follows. Returns the old stage.
    fn set_stage(&mut self, key: ConnId, stage: Stage) -> Option<Stage> {
        let connection = self.connections.get_mut(key)?;
        let old = std::mem::replace(&mut connection.stage, stage);
        let held_now = connection.stage.held_input() > 0;
        count_input_buffer(&mut self.stats, old.held_input() > 0, held_now);
        if let Stage::Member(membership) = &old {
            self.rooms.leave(membership.room, &membership.name);
            log::debug!("connection {key}: {} left", membership.name);
        }
        Some(old)
    }

    fn on_tcp_handshake<'a>(&mut self, key: ConnId, input: &'a [u8]) -> &'a [u8] {
        let held_before = self.holds_input(key);
        let Some(Connection { stage: Stage::TcpHandshake { handshake, .. }, .. }) =
            self.connections.get_mut(key)
        else {
            return &[];
        };
        let step = handshake.feed(input);
        let held_after = self.holds_input(key);
        count_input_buffer(&mut self.stats, held_before, held_after);
        match step {
            Step::NeedMore => &[],
            Step::Done { request, consumed } => {
                if let Some(room) = self.claim_name(key, &request) {
                    let framer = LineFramer::after_handshake(self.config.max_line);
                    self.become_member(key, room, request, MemberInput::Lines(framer));
                }
                &input[consumed..]
            }
            Step::Failed(error) => {
                self.fail_handshake(key, error);
                &[]
            }
        }
    }

    fn on_http_request<'a>(&mut self, key: ConnId, input: &'a [u8]) -> &'a [u8] {
        let Some(Connection { stage: Stage::HttpRequest { head, deadline }, .. }) =
            self.connections.get_mut(key)
        else {
            return &[];
        };
        let deadline = *deadline;
        let mut held = std::mem::take(head);
        count_input_buffer(&mut self.stats, !held.is_empty(), false);
        let buffer: &[u8] = if held.is_empty() {
            input
        } else {
            held.extend_from_slice(input);
            &held
        };
        let (request, len) = match http::parse_request(buffer) {
            Parsed::Partial => {
                if held.is_empty() {
                    held = input.to_vec();
                }
                *head = held;
                count_input_buffer(&mut self.stats, false, true);
                return &[];
            }
            Parsed::Rejected(response) => {
                self.respond(key, response, Reply::AndClose { head_only: false });
                return &[];
            }
            Parsed::Complete { request, len } => (request, len),
        };
        // A partial head never holds a complete request, so the bytes
        // after the head (WebSocket frames, a pipelined request) are all
        // in this read.
        let rest = &input[input.len() - (buffer.len() - len)..];
        let routes =
            Routes { websocket_path: &self.config.ws_path, allowed_origins: &self.config.allowed_origins };
        let head_only = request.is_head();
        match http::route(&request, routes) {
            Route::Upgrade { response } => {
                self.upgrade(key, response, deadline);
                rest
            }
            Route::Page(page) if request.keep_alive() => {
                let response = self.render(page);
                self.respond(key, response, Reply::KeepAlive { head_only });
                rest
            }
            Route::Page(page) => {
                let response = self.render(page);
                self.respond(key, response, Reply::AndClose { head_only });
                &[]
            }
            Route::Respond(response) => {
                self.respond(key, response, Reply::AndClose { head_only });
                &[]
            }
        }
    }

    /// The response for one of the server's pages.
    fn render(&mut self, page: Page) -> Response {
        match page {
            Page::Chat => {
                // The page learns the WebSocket path from a JSON string in
                // its script; `<` is escaped so the path cannot end the script.
                let path =
                    serde_json::to_string(&self.config.ws_path).unwrap_or_default().replace('<', "\\u003c");
                Response::new(200)
                    .with_header("Content-Type", "text/html; charset=utf-8")
                    .with_header("Cache-Control", "no-cache")
                    .with_body(CHAT_PAGE.replace(WS_PATH_PLACEHOLDER, &path).into_bytes())
            }
            Page::Metrics => {
                self.refresh_gauges();
                Response::new(200)
                    .with_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                    .with_body(self.stats.to_prometheus().into_bytes())
            }
            Page::Health => Response::text(200, "ok"),
        }
    }

    /// Sends the 101 response and switches the connection to WebSocket.
    fn upgrade(&mut self, key: ConnId, response: Response, deadline: Instant) {
        self.stats.count_http_response(response.status);
        self.scratch.clear();
        response.encode(&mut self.scratch, true, false);
        let limits = WsLimits { max_message: handshake::MAX_HANDSHAKE_BYTES, ..self.ws_limits() };
        self.set_stage(key, Stage::WsHandshake { session: Box::new(WsSession::new(limits)), deadline });
        self.queue_scratch(key);
        log::debug!("connection {key}: upgraded to WebSocket");
    }

    fn ws_limits(&self) -> WsLimits {
        WsLimits {
            max_message: self.config.max_line,
            read_buffer: self.config.ws_read_buffer,
            write_buffer: self.config.ws_write_buffer,
            max_write_buffer: self.config.max_pending,
        }
    }

    fn on_ws_handshake<'a>(&mut self, key: ConnId, input: &'a [u8]) -> &'a [u8] {
        let Some(Connection { stage: Stage::WsHandshake { session, .. }, .. }) =
            self.connections.get_mut(key)
        else {
            return &[];
        };
        let mut request = None;
        let mut peer_closed = false;
        self.scratch.clear();
        let fed = session.feed(input, &mut self.scratch, |event| match event {
            WsEvent::Message(message) => {
                request = Some(handshake::parse_message(message));
                Flow::Stop
            }
            WsEvent::Closed => {
                peer_closed = true;
                Flow::Continue
            }
        });
        self.queue_scratch(key);
        match (fed, request) {
            (Err(WsError::TooBig { .. }), _) => self.fail_handshake(key, HandshakeError::TooLarge),
            (Err(error), _) => self.fail(key, &error.to_string(), error.close_code()),
            (Ok(_), Some(Err(error))) => self.fail_handshake(key, error),
            (Ok(consumed), Some(Ok(request))) => {
                let Some(room) = self.claim_name(key, &request) else { return &[] };
                // The session moves from the handshake stage into the membership.
                let placeholder = Stage::Closing { deadline: self.now };
                if let Some(Stage::WsHandshake { mut session, .. }) = self.set_stage(key, placeholder) {
                    session.set_max_message(self.config.max_line);
                    self.become_member(key, room, request, MemberInput::WebSocket(session));
                }
                // Frames that came behind the handshake in this read may
                // already sit in tungstenite's buffer, and no more input may
                // ever come to push them through: feed the session now, even
                // with nothing new.
                self.on_ws_messages(key, &input[consumed..]);
            }
            (Ok(_), None) if peer_closed => self.enter_closing(key),
            (Ok(_), None) => {}
        }
        &[]
    }

    fn on_lines<'a>(&mut self, key: ConnId, input: &'a [u8]) -> &'a [u8] {
        let Some(Connection {
            stage: Stage::Member(Membership { room, name, input: MemberInput::Lines(framer) }),
            ..
        }) = self.connections.get_mut(key)
        else {
            return &[];
        };
        let held_before = framer.held_capacity() > 0;
        let batch = &mut self.batch;
        let framed = framer.feed(input, |line| batch.push(name, line));
        count_input_buffer(&mut self.stats, held_before, framer.held_capacity() > 0);
        let room = *room;
        self.deliver(room);
        if let Err(too_long) = framed {
            self.fail(key, &too_long.to_string(), close_code::TOO_BIG);
        }
        &[]
    }

    fn on_ws_messages<'a>(&mut self, key: ConnId, input: &'a [u8]) -> &'a [u8] {
        let Some(Connection {
            stage: Stage::Member(Membership { room, name, input: MemberInput::WebSocket(session) }),
            ..
        }) = self.connections.get_mut(key)
        else {
            return &[];
        };
        let batch = &mut self.batch;
        let mut peer_closed = false;
        self.scratch.clear();
        let fed = session.feed(input, &mut self.scratch, |event| {
            match event {
                WsEvent::Message(message) => for_each_line(message, |line| batch.push(name, line)),
                WsEvent::Closed => peer_closed = true,
            }
            Flow::Continue
        });
        let room = *room;
        self.deliver(room);
        self.queue_scratch(key);
        match fed {
            Err(error) => self.fail(key, &error.to_string(), error.close_code()),
            Ok(_) if peer_closed => self.enter_closing(key),
            Ok(_) => {}
        }
        &[]
    }

    /// Peer closed its sending side: it leaves its room at once, and gets
    /// what is already queued for it before the connection closes.
    fn on_eof(&mut self, key: ConnId) {
        match self.connections.get(key).map(|connection| &connection.stage) {
            Some(Stage::Draining { .. }) => self.close_now(key, "closed"),
            Some(_) => self.enter_closing(key),
            None => {}
        }
    }

    // ----- rooms and broadcast ------------------------------------------

    /// Takes the requested name in the requested room, or fails the
    /// handshake if the name is taken there.
    fn claim_name(&mut self, key: ConnId, request: &JoinRequest) -> Option<RoomId> {
        let transport = self.connections.get(key)?.transport;
        match self.rooms.join(&request.room, &request.name, key, transport) {
            Ok(room) => Some(room),
            Err(NameTaken) => {
                let JoinRequest { name, room } = request.clone();
                self.fail_handshake(key, HandshakeError::NameTaken { name, room });
                None
            }
        }
    }

    /// Completes a join whose name was claimed: the connection is a member.
    fn become_member(&mut self, key: ConnId, room: RoomId, request: JoinRequest, input: MemberInput) {
        log::debug!("connection {key}: {} joined {}", request.name, request.room);
        self.set_stage(key, Stage::Member(Membership { room, name: request.name.into(), input }));
        self.stats.joins += 1;
    }

    /// Hands the batch to every member of `room`: one copy of the line
    /// bytes per TCP member, one of the frame bytes per WebSocket member.
    fn deliver(&mut self, room: RoomId) {
        if self.batch.is_empty() {
            return;
        }
        let Some(members) = self.rooms.get(room) else {
            self.batch.clear();
            return;
        };
        if members.has_websocket_members() {
            self.batch.encode_frames();
        }
        let messages = self.batch.len() as u64;
        let registry = self.poll.registry();
        for member in members.members() {
            let Some(connection) = self.connections.get_mut(member.conn) else { continue };
            let bytes = match member.transport {
                Transport::Tcp => self.batch.lines(),
                Transport::WebSocket => self.batch.frames(),
            };
            if let Err(cut) = self.outbox.queue(member.conn, connection, bytes, &mut self.stats, registry) {
                self.cut.push((member.conn, cut));
            }
        }
        self.stats.messages_in += messages;
        self.stats.deliveries += messages * (members.len() - self.cut.len()) as u64;
        self.batch.clear();
        while let Some((key, cut)) = self.cut.pop() {
            self.close_cut(key, cut);
        }
    }

    /// Closes a connection that could not take its output.
    fn close_cut(&mut self, key: ConnId, cut: Cut) {
        match cut {
            Cut::SlowConsumer => {
                self.stats.slow_consumers += 1;
                log::warn!(
                    "connection {key}: slow consumer, more than {} bytes of output queued; disconnecting",
                    self.config.max_pending
                );
                self.close_now(key, "slow consumer");
            }
            Cut::Broken(error) => self.close_now(key, &error.to_string()),
        }
    }

    // ----- output ----------------------------------------------------------

    /// Queues `self.scratch` for `key`. A connection that cannot take even
    /// this is closed at once.
    fn queue_scratch(&mut self, key: ConnId) {
        if self.scratch.is_empty() {
            return;
        }
        let Some(connection) = self.connections.get_mut(key) else { return };
        let queued = self.outbox.queue(key, connection, &self.scratch, &mut self.stats, self.poll.registry());
        self.scratch.clear();
        if let Err(cut) = queued {
            self.close_cut(key, cut);
        }
    }

    fn flush_pending(&mut self) {
        while let Some(key) = self.outbox.to_flush.pop() {
            if self.connections.get(key).is_some_and(|c| matches!(c.output, Output::Pending(_))) {
                self.flush(key);
            }
        }
    }

    fn on_writable(&mut self, key: ConnId) {
        if self.connections.get(key).is_some_and(|c| c.output.is_blocked()) {
            self.flush(key);
        }
    }

    /// Writes what the socket takes; a closing connection whose output is
    /// now empty moves on to draining.
    fn flush(&mut self, key: ConnId) {
        let Some(connection) = self.connections.get_mut(key) else { return };
        if let Err(error) = self.outbox.write(key, connection, &mut self.stats, self.poll.registry()) {
            self.close_now(key, &error.to_string());
            return;
        }
        if matches!(connection.stage, Stage::Closing { .. }) && connection.output.is_empty() {
            self.start_draining(key);
        }
    }

    // ----- errors and closing ------------------------------------------

    fn fail_handshake(&mut self, key: ConnId, error: HandshakeError) {
        self.stats.count_handshake_error(&error);
        let code = match error {
            HandshakeError::TooLarge => close_code::TOO_BIG,
            _ => close_code::POLICY,
        };
        self.fail(key, &error.to_string(), code);
    }

    /// Sends `error: <reason>` (as a line, or as a text message and a Close
    /// frame with `ws_code`), then closes once that is flushed.
    fn fail(&mut self, key: ConnId, reason: &str, ws_code: u16) {
        let Some(connection) = self.connections.get(key) else { return };
        log::info!("connection {key}: error: {reason}");
        let line = format!("error: {reason}\n");
        self.scratch.clear();
        if connection.stage.speaks_websocket() {
            websocket::encode_text_frame(&mut self.scratch, line.as_bytes());
            websocket::encode_close_frame(&mut self.scratch, ws_code, reason);
        } else {
            self.scratch.extend_from_slice(line.as_bytes());
        }
        self.queue_scratch(key);
        self.enter_closing(key);
    }

    /// Sends an HTTP response; then either waits for the next request on
    /// the same connection or closes once the response is flushed.
    fn respond(&mut self, key: ConnId, response: Response, reply: Reply) {
        self.stats.count_http_response(response.status);
        if response.status >= 400 {
            log::info!("connection {key}: HTTP {}", response.status);
        }
        self.scratch.clear();
        match reply {
            Reply::KeepAlive { head_only } => {
                response.encode(&mut self.scratch, true, head_only);
                self.queue_scratch(key);
                let deadline = self.now + self.config.handshake_timeout;
                if self.set_stage(key, Stage::HttpRequest { head: Vec::new(), deadline }).is_some() {
                    self.timers.push(Reverse((deadline, key)));
                }
            }
            Reply::AndClose { head_only } => {
                response.encode(&mut self.scratch, false, head_only);
                self.queue_scratch(key);
                self.enter_closing(key);
            }
        }
    }

    /// Stops reading (a member leaves its room at once) and flushes what is
    /// queued; the write side is shut down once the output is empty.
    fn enter_closing(&mut self, key: ConnId) {
        let deadline = self.closing_deadline();
        if self.set_stage(key, Stage::Closing { deadline }).is_none() {
            return;
        }
        self.timers.push(Reverse((deadline, key)));
        if self.connections.get(key).is_some_and(|c| c.output.is_empty()) {
            self.start_draining(key);
        }
    }

    fn closing_deadline(&self) -> Instant {
        match self.phase {
            Phase::Serving => self.now + CLOSE_LINGER,
            Phase::ShuttingDown { deadline } => deadline,
        }
    }

    /// Everything is written: send FIN, then read and drop input until the
    /// peer closes too (or the linger deadline passes).
    fn start_draining(&mut self, key: ConnId) {
        let deadline = self.closing_deadline();
        let Some(connection) = self.connections.get_mut(key) else { return };
        if connection.socket.shutdown(Shutdown::Write).is_err() {
            self.close_now(key, "closed");
            return;
        }
        self.set_stage(key, Stage::Draining { deadline });
        self.timers.push(Reverse((deadline, key)));
        // Input may have arrived while closing, and its readiness edge is
        // gone: read now rather than wait for an event that will not come.
        self.read_from(key);
    }

    /// Drops the connection now, with whatever it had queued.
    fn close_now(&mut self, key: ConnId, why: &str) {
        if self.set_stage(key, Stage::Closing { deadline: self.now }).is_none() {
            return;
        }
        let mut connection = self.connections.remove(key);
        let had_output = !connection.output.is_empty();
        let dropped = connection.output.discard(&mut self.outbox.pool);
        self.stats.queued_bytes -= dropped as u64;
        if had_output {
            self.stats.output_buffers -= 1;
        }
        match connection.transport {
            Transport::Tcp => self.stats.tcp_connections -= 1,
            Transport::WebSocket => self.stats.ws_connections -= 1,
        }
        log::debug!("connection {key}: closed ({why})");
        // Dropping the socket closes it, which also removes it from epoll.
        drop(connection);
        // A descriptor was freed: a paused listener can try again now.
        for listener in &mut self.listeners {
            if let Accepting::Paused { until, .. } = &mut listener.state {
                *until = self.now;
            }
        }
    }

    fn expire_deadlines(&mut self) {
        while let Some(&Reverse((at, key))) = self.timers.peek() {
            if at > self.now {
                break;
            }
            self.timers.pop();
            let due =
                self.connections.get(key).and_then(|c| c.stage.deadline()).is_some_and(|d| d <= self.now);
            if due {
                self.on_deadline(key);
            }
        }
    }

    fn on_deadline(&mut self, key: ConnId) {
        let Some(connection) = self.connections.get(key) else { return };
        match connection.stage {
            Stage::TcpHandshake { .. } | Stage::WsHandshake { .. } => {
                self.fail_handshake(key, HandshakeError::TimedOut)
            }
            // Nothing started (a kept-alive connection gone quiet, or one
            // that never spoke): just close.
            Stage::HttpRequest { ref head, .. } if head.is_empty() => self.close_now(key, "idle timeout"),
            Stage::HttpRequest { .. } => {
                self.stats.count_handshake_error(&HandshakeError::TimedOut);
                self.respond(
                    key,
                    Response::text(408, "request not received in time"),
                    Reply::AndClose { head_only: false },
                );
            }
            Stage::Closing { .. } | Stage::Draining { .. } => self.close_now(key, "linger timeout"),
            Stage::Member(_) => {}
        }
    }

    // ----- shutdown --------------------------------------------------------

    fn check_shutdown_request(&mut self) {
        if self.phase == Phase::Serving && self.shutdown_requested.load(Ordering::Acquire) {
            self.begin_shutdown();
        }
    }

    /// Stops accepting and reading; every connection flushes what it has
    /// (WebSocket clients also get Close 1001) and closes.
    fn begin_shutdown(&mut self) {
        let deadline = self.now + self.config.shutdown_grace;
        self.phase = Phase::ShuttingDown { deadline };
        for listener in &mut self.listeners {
            let _ = self.poll.registry().deregister(&mut listener.socket);
        }
        self.listeners.clear();
        log::info!(
            "shutting down: {} connections, {} bytes queued, up to {:?} to flush",
            self.connections.len(),
            self.stats.queued_bytes,
            self.config.shutdown_grace
        );
        let keys: Vec<ConnId> = self.connections.iter().map(|(key, _)| key).collect();
        for key in keys {
            let Some(connection) = self.connections.get(key) else { continue };
            match connection.stage {
                Stage::Closing { .. } | Stage::Draining { .. } => {}
                _ if connection.stage.speaks_websocket() => {
                    self.scratch.clear();
                    websocket::encode_close_frame(
                        &mut self.scratch,
                        close_code::GOING_AWAY,
                        "server shutting down",
                    );
                    self.queue_scratch(key);
                    self.enter_closing(key);
                }
                _ => self.enter_closing(key),
            }
        }
    }

    /// During shutdown: whether every connection has been sent all it was
    /// owed and its FIN (it is draining, or gone). Peers that have not
    /// closed their side yet are not waited for.
    fn everything_written(&self) -> bool {
        self.connections.iter().all(|(_, connection)| matches!(connection.stage, Stage::Draining { .. }))
    }

    fn finish_shutdown(&mut self) {
        let cut = self.connections.iter().filter(|(_, connection)| !connection.output.is_empty()).count();
        let unflushed = self.stats.queued_bytes;
        log::info!(
            "shutdown complete: {} connections served, {} messages in, {} deliveries; \
             {cut} connections cut at the grace deadline with {unflushed} bytes unsent",
            self.stats.accepted,
            self.stats.messages_in,
            self.stats.deliveries
        );
        let keys: Vec<ConnId> = self.connections.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close_now(key, "shutdown");
        }
        self.publish_stats();
    }

    fn publish_stats(&mut self) {
        self.refresh_gauges();
        self.shared_stats.publish(&self.stats);
    }

    /// Fills in the gauges that are read off the loop's state.
    fn refresh_gauges(&mut self) {
        self.stats.connections = self.connections.len() as u64;
        self.stats.rooms = self.rooms.len() as u64;
        self.stats.members = self.rooms.member_count() as u64;
    }
}

/// What happens to an HTTP connection after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// Wait for another request (a HEAD request gets no body).
    KeepAlive { head_only: bool },
    /// Close once the response is written (a HEAD request gets no body).
    AndClose { head_only: bool },
}

/// Why a connection could not take more output.
#[derive(Debug)]
enum Cut {
    /// Its queue would pass `--max-pending` even after writing what the
    /// socket takes.
    SlowConsumer,
    /// Writing to it failed.
    Broken(io::Error),
}

/// The output side of the loop: the buffer pool, the connections to flush
/// at the end of the turn, and the per-connection cap.
struct Outbox {
    pool: BufferPool,
    /// Connections whose output went from empty to pending this turn.
    to_flush: Vec<ConnId>,
    max_pending: usize,
}

impl Outbox {
    /// Queues `bytes` for a connection, to be written at the end of the
    /// turn. If that would pass the cap, the socket gets a chance to take
    /// what it can first: the cap is for clients that do not read, not for
    /// a busy turn.
    fn queue(
        &mut self,
        key: ConnId,
        connection: &mut Connection,
        bytes: &[u8],
        stats: &mut Stats,
        registry: &Registry,
    ) -> Result<(), Cut> {
        let queued = match connection.output.queue(bytes, self.max_pending, &mut self.pool) {
            Err(OverCap) => {
                self.write(key, connection, stats, registry).map_err(Cut::Broken)?;
                connection.output.queue(bytes, self.max_pending, &mut self.pool)
            }
            queued => queued,
        };
        match queued {
            Ok(Queue::NowPending) => {
                self.to_flush.push(key);
                stats.output_buffers += 1;
            }
            Ok(Queue::Appended) => {}
            Err(OverCap) => return Err(Cut::SlowConsumer),
        }
        stats.queued_bytes += bytes.len() as u64;
        stats.queued_bytes_peak = stats.queued_bytes_peak.max(stats.queued_bytes);
        Ok(())
    }

    /// Writes what the socket takes, and keeps WRITABLE interest registered
    /// exactly while output is blocked.
    fn write(
        &mut self,
        key: ConnId,
        connection: &mut Connection,
        stats: &mut Stats,
        registry: &Registry,
    ) -> io::Result<()> {
        if connection.output.is_empty() {
            return Ok(());
        }
        let was_blocked = connection.output.is_blocked();
        let mut tally = Tally::default();
        let flushed = connection.output.flush(&mut connection.socket, &mut self.pool, &mut tally);
        stats.bytes_out += tally.bytes as u64;
        stats.writes += tally.writes as u64;
        stats.queued_bytes -= tally.bytes as u64;
        match flushed? {
            Flushed::Drained => {
                stats.output_buffers -= 1;
                if was_blocked {
                    registry.reregister(&mut connection.socket, Token(key), Interest::READABLE)?;
                }
            }
            Flushed::Blocked if !was_blocked => {
                let interest = Interest::READABLE | Interest::WRITABLE;
                registry.reregister(&mut connection.socket, Token(key), interest)?;
            }
            Flushed::Blocked => {}
        }
        Ok(())
    }
}

/// Keeps the `input_buffers` gauge right across a change that may have
/// taken or released a connection's input buffer.
fn count_input_buffer(stats: &mut Stats, held_before: bool, held_after: bool) {
    match (held_before, held_after) {
        (false, true) => stats.input_buffers += 1,
        (true, false) => stats.input_buffers -= 1,
        _ => {}
    }
}

/// Errors that mean "no descriptors or memory for a new socket right now".
fn is_resource_exhaustion(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}
