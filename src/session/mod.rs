//! One connection's life, with no socket in it: a [`Session`] is fed what
//! arrived and the current time, and answers with [`Effects`]: bytes to
//! send, messages for its room, a name to claim, a page to serve, a close.
//! The reactor applies the effects; the session never sees a socket, a
//! clock, another connection or a room (quinn-proto's connections are the
//! model). So every stage and every failure is unit-tested with a fake
//! clock (`tests.rs`) and fuzzed.
//!
//! ```text
//!  TCP port:  accept ─► TcpHandshake ──────────────┐
//!  WS port:   accept ─► HttpRequest ─► WsHandshake ─┤
//!                         ▲    │ (keep-alive)       ▼
//!                         └────┘                 Joining ─► Member ─► Closing ─► Draining ─► Closed
//! ```
//!
//! Any stage can fail into `Closing` (an error is queued, then flushed).
//! `Joining` waits for the reactor to claim the name ([`Session::joined`]).
//! `Closing` reads nothing and waits until its output is written
//! ([`Session::output_drained`]), then `Draining` reads and drops input
//! until the peer closes: closing a socket with unread input makes the
//! kernel send a reset, which can destroy the error we just sent.

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::failure::Failure;
use crate::handshake::{self, Handshake, HandshakeError, JoinRequest};
use crate::http::{self, Page, Response, Route, Routes};
use crate::line_framing::{LineFramer, for_each_line};
use crate::output::Batch;
use crate::parse::Status;
use crate::rooms::RoomId;
use crate::websocket::{self, WsEvent, WsLimits, WsSession, close_code};

#[cfg(test)]
mod tests;

/// How long a closing connection may take to flush and say goodbye.
pub const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// One client connection's state machine.
#[derive(Debug)]
pub struct Session {
    stage: Stage,
}

/// Where a connection is in its life; each variant carries exactly the
/// data of that stage.
#[derive(Debug)]
enum Stage {
    /// TCP: waiting for the complete JSON handshake.
    TcpHandshake { handshake: Handshake, deadline: Instant },
    /// WebSocket port: a request head is arriving (`head` holds it while
    /// it spans reads).
    HttpRequest { head: Vec<u8>, deadline: Instant },
    /// Upgraded to WebSocket: waiting for the handshake message.
    WsHandshake { ws: Box<WsSession>, deadline: Instant },
    /// The handshake is valid; the reactor is claiming the name.
    Joining(Box<Joining>),
    /// In a room; chat messages flow both ways.
    Member(Membership),
    /// Nothing more is read; queued output (an error, a close frame) is
    /// being written, after which the write side is shut down.
    Closing { deadline: Instant },
    /// The write side is shut down; input is read and dropped until the
    /// peer closes.
    Draining { deadline: Instant },
    /// Done: the reactor removes the connection at the end of the turn.
    Closed,
}

/// The handshake was valid; the request itself is with the reactor
/// ([`Effects::join`]) until it answers.
#[derive(Debug)]
struct Joining {
    /// How the member's input will be framed.
    input: MemberInput,
    deadline: Instant,
    /// Input that came behind the handshake in the same read, kept while
    /// the claim is out (cluster mode) and framed once the name is the
    /// member's. At most one read's worth: nothing more is read meanwhile.
    early: Vec<u8>,
}

/// A member of a room.
#[derive(Debug)]
struct Membership {
    room: RoomId,
    /// The name as the others see it (trimmed, NFC).
    name: Box<str>,
    /// The folded name the room knows it by.
    key: Box<str>,
    input: MemberInput,
}

/// How a member's input is framed into chat messages.
#[derive(Debug)]
enum MemberInput {
    Lines(LineFramer),
    WebSocket { ws: Box<WsSession>, liveness: Liveness },
}

/// Whether a WebSocket member's peer is still there: after
/// `--ws-ping-interval` of silence it is pinged, and one more interval
/// without any frame closes it. (TCP members rely on TCP keepalive.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Liveness {
    /// Pings are off.
    Unchecked,
    /// Heard from recently; ping at `ping_at` if nothing comes.
    Heard { ping_at: Instant },
    /// Pinged; closed at `give_up_at` if nothing comes.
    Pinged { give_up_at: Instant },
}

impl Liveness {
    fn heard(now: Instant, config: &Config) -> Liveness {
        if config.ws_ping_interval.is_zero() {
            Liveness::Unchecked
        } else {
            Liveness::Heard { ping_at: deadline_after(now, config.ws_ping_interval) }
        }
    }

    fn deadline(self) -> Option<Instant> {
        match self {
            Liveness::Unchecked => None,
            Liveness::Heard { ping_at } => Some(ping_at),
            Liveness::Pinged { give_up_at } => Some(give_up_at),
        }
    }
}

/// What flow control needs to know about a member that sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderProfile {
    pub room: RoomId,
    /// Bytes of the name every message carries.
    pub name_bytes: usize,
    /// Input held until a message completes (an unfinished line or frame).
    pub held: usize,
}

/// How the peer is spoken to at this stage, which decides how an error
/// is said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Speech {
    Lines,
    Http,
    WebSocket,
    /// Closing: everything there was to say has been said.
    Silent,
}

/// A page the reactor must render (it has the counters) and send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub page: Page,
    /// HEAD: the head of the response only.
    pub head_only: bool,
    /// The connection stays open for another request.
    pub keep_alive: bool,
}

/// A membership that ended: the reactor takes the name out of the room.
#[derive(Debug, PartialEq, Eq)]
pub struct Left {
    pub room: RoomId,
    /// The name as the others saw it, for the log.
    pub name: Box<str>,
    /// The folded name the room knows it by.
    pub key: Box<str>,
}

/// The reactor's answer to a join it could not grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinRefused {
    /// The name is held: `holder` is the holder's spelling (which may
    /// differ: `Bob` holds `bob`), empty when it is unknown (another node
    /// holds it).
    Taken { holder: Box<str> },
    /// Cluster mode: Redis could not be asked in time.
    ClusterUnavailable,
}

/// What a session asks the reactor to do, filled in by one call. The
/// reactor applies and empties it after every call, in this order: the
/// join, the messages, the page (rendered onto the bytes to send), the
/// bytes to send, the leave, the close. Its buffers are kept for reuse, so
/// applying costs no allocation.
#[derive(Debug, Default)]
pub struct Effects {
    /// A name to claim; the reactor answers with [`Session::joined`].
    pub join: Option<JoinRequest>,
    /// Chat messages this member sent, encoded once, for `room`.
    pub messages: Batch,
    /// The room `messages` go to.
    pub room: Option<RoomId>,
    /// Bytes for this connection, in order: HTTP responses,
    /// tungstenite's pongs and closes, error lines and frames.
    pub send: Vec<u8>,
    /// A page to render and append to the connection's output.
    pub page: Option<PageRequest>,
    /// The member left its room.
    pub left: Option<Left>,
    /// The error the client was told, for the log and the counters.
    pub failure: Option<Failure>,
    /// The status of an HTTP response in `send`, for the counters.
    pub http_status: Option<u16>,
    /// Everything owed is written: shut the write side down (FIN).
    pub shutdown_write: bool,
    /// The session is over; why, for the log.
    pub closed: Option<&'static str>,
}

impl Effects {
    /// Whether anything is left to apply.
    pub fn is_empty(&self) -> bool {
        self.join.is_none()
            && self.messages.is_empty()
            && self.send.is_empty()
            && self.page.is_none()
            && self.left.is_none()
            && self.failure.is_none()
            && self.http_status.is_none()
            && !self.shutdown_write
            && self.closed.is_none()
    }
}

/// How a session may be fed input now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Read and feed everything.
    Wanted,
    /// Read, and drop what arrives (the session is draining).
    Discarded,
    /// Leave input in the kernel (closing, or waiting for a claim).
    Paused,
    /// Never again: the session is closed.
    Over,
}

impl Session {
    /// A connection accepted on the TCP listener: it starts with the
    /// JSON handshake.
    pub fn tcp(now: Instant, config: &Config) -> Session {
        let deadline = deadline_after(now, config.handshake_timeout);
        Session { stage: Stage::TcpHandshake { handshake: Handshake::new(), deadline } }
    }

    /// A connection accepted on the WebSocket listener: it starts with an
    /// HTTP request.
    pub fn http(now: Instant, config: &Config) -> Session {
        let deadline = deadline_after(now, config.handshake_timeout);
        Session { stage: Stage::HttpRequest { head: Vec::new(), deadline } }
    }

    /// The server is full: the client is told so, in its own protocol.
    pub fn refuse_full(&mut self, now: Instant, effects: &mut Effects) {
        self.fail(Failure::ServerFull, now, effects);
    }

    /// When the session must be woken if nothing else happens.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.stage {
            Stage::TcpHandshake { deadline, .. }
            | Stage::HttpRequest { deadline, .. }
            | Stage::WsHandshake { deadline, .. }
            | Stage::Closing { deadline }
            | Stage::Draining { deadline } => Some(*deadline),
            Stage::Joining(joining) => Some(joining.deadline),
            Stage::Member(Membership { input: MemberInput::WebSocket { liveness, .. }, .. }) => {
                liveness.deadline()
            }
            Stage::Member(_) | Stage::Closed => None,
        }
    }

    /// A member's name, as the others see it.
    pub fn name(&self) -> Option<&str> {
        match &self.stage {
            Stage::Member(membership) => Some(&membership.name),
            _ => None,
        }
    }

    /// The room of a member, for flow control and delivery.
    pub fn room(&self) -> Option<RoomId> {
        match &self.stage {
            Stage::Member(membership) => Some(membership.room),
            _ => None,
        }
    }

    /// What flow control needs to know when a member wants to read; `None`
    /// for a connection that is not a member yet.
    pub fn sender_profile(&self) -> Option<SenderProfile> {
        let Stage::Member(Membership { room, name, input, .. }) = &self.stage else { return None };
        let held = match input {
            MemberInput::Lines(framer) => framer.held(),
            MemberInput::WebSocket { ws, .. } => ws.held(),
        };
        Some(SenderProfile { room: *room, name_bytes: name.len(), held })
    }

    /// Whether input should be read now.
    pub fn reading(&self) -> Reading {
        match self.stage {
            Stage::Closing { .. } | Stage::Joining(_) => Reading::Paused,
            Stage::Draining { .. } => Reading::Discarded,
            Stage::Closed => Reading::Over,
            _ => Reading::Wanted,
        }
    }

    /// Whether the session is waiting for its output to be written.
    /// Whether the session waits for the reactor's answer to its join.
    pub fn is_joining(&self) -> bool {
        matches!(self.stage, Stage::Joining(_))
    }

    pub fn is_closing(&self) -> bool {
        matches!(self.stage, Stage::Closing { .. })
    }

    /// Whether everything owed was written and the write side shut down
    /// (or the session is over).
    pub fn is_finished(&self) -> bool {
        matches!(self.stage, Stage::Draining { .. } | Stage::Closed)
    }

    /// Bytes of input held between reads by machat's own framing (not
    /// counting tungstenite's read buffer, sized by `--ws-read-buffer`).
    pub fn held_input(&self) -> usize {
        match &self.stage {
            Stage::TcpHandshake { handshake, .. } => handshake.held_capacity(),
            Stage::HttpRequest { head, .. } => head.capacity(),
            Stage::Member(Membership { input: MemberInput::Lines(framer), .. }) => framer.held_capacity(),
            Stage::Joining(joining) => joining.early.capacity(),
            _ => 0,
        }
    }

    /// Feeds bytes that arrived and returns how many were taken. Fewer
    /// than all only when the session needs the reactor first (a join to
    /// claim, a page to render) or has stopped taking input (it failed or
    /// is closing): the reactor applies the effects and feeds the rest
    /// again while the session still reads.
    pub fn input(&mut self, input: &[u8], now: Instant, config: &Config, effects: &mut Effects) -> usize {
        match &mut self.stage {
            Stage::TcpHandshake { .. } => self.tcp_handshake(input, now, config, effects),
            Stage::HttpRequest { .. } => self.http_request(input, now, config, effects),
            Stage::WsHandshake { .. } => self.ws_handshake(input, now, config, effects),
            Stage::Member(_) => self.member_input(input, now, config, effects),
            // What came with the handshake waits for the join's answer.
            Stage::Joining(joining) => {
                joining.early.extend_from_slice(input);
                input.len()
            }
            // Input is not read while closing; when draining it is dropped.
            Stage::Closing { .. } | Stage::Draining { .. } | Stage::Closed => input.len(),
        }
    }

    /// The reactor's answer to [`Effects::join`], with the request it
    /// took from there: the name is the member's now (`Ok`), or taken in
    /// that room (by a name that folds alike).
    pub fn joined(
        &mut self,
        request: JoinRequest,
        claim: Result<RoomId, JoinRefused>,
        now: Instant,
        config: &Config,
        effects: &mut Effects,
    ) {
        if !matches!(self.stage, Stage::Joining(_)) {
            debug_assert!(false, "joined() outside the joining stage");
            return;
        }
        let room = match claim {
            Ok(room) => room,
            Err(JoinRefused::ClusterUnavailable) => {
                self.fail(HandshakeError::ClusterUnavailable.into(), now, effects);
                return;
            }
            Err(JoinRefused::Taken { holder }) => {
                let JoinRequest { name, room, .. } = request;
                // The holder's spelling is worth saying only when it differs.
                let holder = (!holder.is_empty() && holder != name.display).then_some(holder);
                let taken = HandshakeError::NameTaken { name: name.display, room: room.display, holder };
                self.fail(taken.into(), now, effects);
                return;
            }
        };
        let Stage::Joining(joining) = std::mem::replace(&mut self.stage, Stage::Closed) else {
            unreachable!()
        };
        let Joining { mut input, early, .. } = *joining;
        if let MemberInput::WebSocket { ws, liveness } = &mut input {
            ws.set_max_message(config.max_line);
            *liveness = Liveness::heard(now, config);
        }
        let name = request.name;
        self.stage = Stage::Member(Membership { room, name: name.display, key: name.key, input });
        // Input that came with the handshake, and frames that may already
        // sit in tungstenite's buffer (no more input may ever come to push
        // them through): read them now.
        let websocket =
            matches!(self.stage, Stage::Member(Membership { input: MemberInput::WebSocket { .. }, .. }));
        if websocket || !early.is_empty() {
            self.member_input(&early, now, config, effects);
        }
    }

    /// The peer closed its sending side. A member leaves its room at once,
    /// and gets what is already queued for it before the connection closes.
    pub fn peer_closed(&mut self, now: Instant, effects: &mut Effects) {
        match self.stage {
            Stage::Draining { .. } => self.close(effects, "closed"),
            Stage::Closed => {}
            _ => self.enter_closing(now, effects),
        }
    }

    /// Time passed; acts if the deadline has come.
    pub fn timeout(&mut self, now: Instant, config: &Config, effects: &mut Effects) {
        if self.deadline().is_none_or(|deadline| deadline > now) {
            return;
        }
        match &mut self.stage {
            Stage::Member(Membership { input: MemberInput::WebSocket { liveness, .. }, .. }) => {
                match *liveness {
                    Liveness::Heard { .. } => {
                        websocket::encode_ping_frame(&mut effects.send, b"machat");
                        *liveness =
                            Liveness::Pinged { give_up_at: deadline_after(now, config.ws_ping_interval) };
                    }
                    Liveness::Pinged { .. } => self.fail(Failure::PingTimeout, now, effects),
                    Liveness::Unchecked => {}
                }
            }
            Stage::TcpHandshake { .. } | Stage::WsHandshake { .. } | Stage::Joining(_) => {
                self.fail(HandshakeError::TimedOut.into(), now, effects)
            }
            // Nothing started (a kept-alive connection gone quiet, or one
            // that never spoke): just close.
            Stage::HttpRequest { head, .. } if head.is_empty() => self.close(effects, "idle timeout"),
            Stage::HttpRequest { .. } => self.fail(HandshakeError::TimedOut.into(), now, effects),
            Stage::Closing { .. } | Stage::Draining { .. } => self.close(effects, "linger timeout"),
            Stage::Member(_) | Stage::Closed => {}
        }
    }

    /// Everything queued for the peer was written. A closing session now
    /// shuts its write side down and drains.
    pub fn output_drained(&mut self, now: Instant, effects: &mut Effects) {
        if let Stage::Closing { .. } = self.stage {
            self.stage = Stage::Draining { deadline: deadline_after(now, CLOSE_LINGER) };
            effects.shutdown_write = true;
        }
    }

    /// The server is shutting down: WebSocket clients get Close 1001, and
    /// every session closes once its output is written, which may take
    /// until `grace_deadline`.
    pub fn shutdown(&mut self, grace_deadline: Instant, effects: &mut Effects) {
        match self.speech() {
            Speech::Silent => return,
            Speech::WebSocket => websocket::encode_close_frame(
                &mut effects.send,
                close_code::GOING_AWAY,
                "server shutting down",
            ),
            Speech::Lines | Speech::Http => {}
        }
        self.enter_closing_until(grace_deadline, effects);
    }

    /// Ends the session with an error the reactor found (a slow consumer):
    /// the client is told, in its own protocol, and the session closes once
    /// that is written.
    pub fn disconnect(&mut self, failure: Failure, now: Instant, effects: &mut Effects) {
        self.fail(failure, now, effects);
    }

    /// Ends the session at once (a broken socket): a member leaves its
    /// room; nothing more is said.
    pub fn close(&mut self, effects: &mut Effects, why: &'static str) {
        if let Stage::Member(membership) = std::mem::replace(&mut self.stage, Stage::Closed) {
            effects.left = Some(Left { room: membership.room, name: membership.name, key: membership.key });
        }
        effects.closed = Some(why);
    }

    // ----- stages ----------------------------------------------------------

    fn tcp_handshake(&mut self, input: &[u8], now: Instant, config: &Config, effects: &mut Effects) -> usize {
        let Stage::TcpHandshake { handshake, deadline } = &mut self.stage else { unreachable!() };
        match handshake.feed(input) {
            Ok(Status::Partial) => input.len(),
            Ok(Status::Complete { value: request, consumed }) => {
                let framer = LineFramer::after_handshake(config.max_line);
                let deadline = *deadline;
                self.start_joining(request, MemberInput::Lines(framer), deadline, now, config, effects);
                consumed
            }
            Err(error) => {
                self.fail(error.into(), now, effects);
                input.len()
            }
        }
    }

    fn http_request(&mut self, input: &[u8], now: Instant, config: &Config, effects: &mut Effects) -> usize {
        let Stage::HttpRequest { head, deadline } = &mut self.stage else { unreachable!() };
        let deadline = *deadline;
        let held = head.len();
        let parsed = if held == 0 {
            http::parse_request(input)
        } else {
            head.extend_from_slice(input);
            http::parse_request(head)
        };
        let request = match parsed {
            Ok(Status::Partial) => {
                if held == 0 {
                    head.extend_from_slice(input);
                }
                return input.len();
            }
            Err(error) => {
                self.respond_and_close(&error.response(), false, now, effects);
                return input.len();
            }
            Ok(Status::Complete { value, consumed }) => (value, consumed),
        };
        let (request, head_len) = request;
        // A held head is never complete by itself, so the request ends in
        // this input.
        let consumed = head_len - held;
        let routes = Routes {
            websocket_path: &config.ws_path,
            allowed_origins: &config.allowed_origins,
            operator_token: config.operator_token.as_deref(),
            max_history: config.history,
        };
        let head_only = request.is_head();
        let keep_alive = request.keep_alive();
        match http::route(&request, routes) {
            Route::Upgrade { response } => {
                response.encode(&mut effects.send, true, false);
                effects.http_status = Some(response.status);
                let limits = WsLimits { max_message: handshake::MAX_HANDSHAKE_BYTES, ..ws_limits(config) };
                self.stage = Stage::WsHandshake { ws: Box::new(WsSession::new(limits)), deadline };
                consumed
            }
            Route::Page(page) => {
                effects.page = Some(PageRequest { page, head_only, keep_alive });
                if keep_alive {
                    let deadline = deadline_after(now, config.handshake_timeout);
                    self.stage = Stage::HttpRequest { head: Vec::new(), deadline };
                    consumed
                } else {
                    self.enter_closing(now, effects);
                    input.len()
                }
            }
            Route::Refuse(error) => {
                self.respond_and_close(&error.response(), head_only, now, effects);
                input.len()
            }
        }
    }

    fn ws_handshake(&mut self, input: &[u8], now: Instant, config: &Config, effects: &mut Effects) -> usize {
        let Stage::WsHandshake { ws, deadline } = &mut self.stage else { unreachable!() };
        let mut rest = input;
        let mut peer_closed = false;
        loop {
            match ws.read(rest, &mut effects.send) {
                Ok(Status::Complete { value: WsEvent::Message(message), consumed }) => {
                    let deadline = *deadline;
                    let Stage::WsHandshake { ws, .. } = std::mem::replace(&mut self.stage, Stage::Closed)
                    else {
                        unreachable!()
                    };
                    match handshake::parse_message(&message) {
                        Ok(request) => {
                            let member_input = MemberInput::WebSocket { ws, liveness: Liveness::Unchecked };
                            self.start_joining(request, member_input, deadline, now, config, effects);
                            return input.len() - rest.len() + consumed;
                        }
                        Err(error) => {
                            self.stage = Stage::WsHandshake { ws, deadline };
                            self.fail(error.into(), now, effects);
                            return input.len();
                        }
                    }
                }
                Ok(Status::Complete { value: WsEvent::Closed, consumed }) => {
                    peer_closed = true;
                    rest = &rest[consumed..];
                }
                Ok(Status::Partial) => break,
                Err(websocket::WsError::TooBig { .. }) => {
                    self.fail(HandshakeError::TooLarge.into(), now, effects);
                    return input.len();
                }
                Err(error) => {
                    self.fail(error.into(), now, effects);
                    return input.len();
                }
            }
        }
        if peer_closed {
            self.enter_closing(now, effects);
        }
        input.len()
    }

    fn member_input(&mut self, input: &[u8], now: Instant, config: &Config, effects: &mut Effects) -> usize {
        let Stage::Member(Membership { room, name, input: member_input, .. }) = &mut self.stage else {
            unreachable!()
        };
        effects.room = Some(*room);
        let messages = &mut effects.messages;
        let failure: Option<Failure> = match member_input {
            MemberInput::Lines(framer) => match framer.feed(input, |line| messages.push(name, line)) {
                Ok(()) => None,
                Err(too_long) => Some(Failure::LineTooLong { max_line: too_long.max_line }),
            },
            MemberInput::WebSocket { ws, liveness } => {
                if !input.is_empty() {
                    *liveness = Liveness::heard(now, config);
                }
                let mut rest = input;
                let mut peer_closed = false;
                let outcome = loop {
                    match ws.read(rest, &mut effects.send) {
                        Ok(Status::Complete { value, consumed }) => {
                            rest = &rest[consumed..];
                            match value {
                                WsEvent::Message(message) => {
                                    for_each_line(&message, |line| messages.push(name, line))
                                }
                                WsEvent::Closed => peer_closed = true,
                            }
                        }
                        Ok(Status::Partial) => break None,
                        Err(error) => break Some(Failure::from(error)),
                    }
                };
                if outcome.is_none() && peer_closed {
                    self.enter_closing(now, effects);
                    return input.len();
                }
                outcome
            }
        };
        if let Some(failure) = failure {
            self.fail(failure, now, effects);
        }
        input.len()
    }

    // ----- transitions -----------------------------------------------------

    /// A valid handshake: the reactor is asked to claim the name, unless
    /// the history asked for is more than the server keeps.
    fn start_joining(
        &mut self,
        request: JoinRequest,
        input: MemberInput,
        deadline: Instant,
        now: Instant,
        config: &Config,
        effects: &mut Effects,
    ) {
        self.stage = Stage::Joining(Box::new(Joining { input, deadline, early: Vec::new() }));
        match request.history {
            Some(asked) if asked > config.history as u64 => {
                let error = HandshakeError::HistoryTooLarge { asked, max: config.history };
                self.fail(error.into(), now, effects);
            }
            _ => effects.join = Some(request),
        }
    }

    fn speech(&self) -> Speech {
        match &self.stage {
            Stage::TcpHandshake { .. } => Speech::Lines,
            Stage::HttpRequest { .. } => Speech::Http,
            Stage::WsHandshake { .. } => Speech::WebSocket,
            Stage::Joining(joining) => joining.input.speech(),
            Stage::Member(membership) => membership.input.speech(),
            Stage::Closing { .. } | Stage::Draining { .. } | Stage::Closed => Speech::Silent,
        }
    }

    /// Tells the peer what went wrong, in its own protocol, then closes
    /// once that is written.
    fn fail(&mut self, failure: Failure, now: Instant, effects: &mut Effects) {
        match self.speech() {
            Speech::Silent => return,
            Speech::Http => {
                let response = failure.http_response();
                response.encode(&mut effects.send, false, false);
                effects.http_status = Some(response.status);
            }
            Speech::Lines => {
                use std::io::Write as _;
                let _ = writeln!(effects.send, "error: {failure}");
            }
            Speech::WebSocket => {
                let line = format!("error: {failure}\n");
                websocket::encode_text_frame(&mut effects.send, line.as_bytes());
                websocket::encode_close_frame(&mut effects.send, failure.close_code(), &failure.to_string());
            }
        }
        effects.failure = Some(failure);
        self.enter_closing(now, effects);
    }

    /// Sends an HTTP response, then closes once it is written.
    fn respond_and_close(
        &mut self,
        response: &Response,
        head_only: bool,
        now: Instant,
        effects: &mut Effects,
    ) {
        response.encode(&mut effects.send, false, head_only);
        effects.http_status = Some(response.status);
        self.enter_closing(now, effects);
    }

    /// Stops reading (a member leaves its room at once); what is queued is
    /// still written.
    fn enter_closing(&mut self, now: Instant, effects: &mut Effects) {
        self.enter_closing_until(deadline_after(now, CLOSE_LINGER), effects);
    }

    fn enter_closing_until(&mut self, deadline: Instant, effects: &mut Effects) {
        let closing = Stage::Closing { deadline };
        if let Stage::Member(membership) = std::mem::replace(&mut self.stage, closing) {
            effects.left = Some(Left { room: membership.room, name: membership.name, key: membership.key });
        }
    }
}

impl MemberInput {
    fn speech(&self) -> Speech {
        match self {
            MemberInput::Lines(_) => Speech::Lines,
            MemberInput::WebSocket { .. } => Speech::WebSocket,
        }
    }
}

/// The WebSocket limits a session gets from the configuration.
pub fn ws_limits(config: &Config) -> WsLimits {
    WsLimits {
        max_message: config.max_line,
        read_buffer: config.ws_read_buffer,
        write_buffer: config.ws_write_buffer,
        max_write_buffer: config.max_pending,
    }
}

/// `now + after`, saturating: no duration can make deadline arithmetic
/// panic. A deadline past what `Instant` can hold becomes a century away
/// (or, should even that not fit, the furthest a year can reach).
pub fn deadline_after(now: Instant, after: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    now.checked_add(after)
        .or_else(|| now.checked_add(CENTURY))
        .or_else(|| now.checked_add(YEAR))
        .unwrap_or(now)
}
