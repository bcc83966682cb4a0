//! One client connection: its state, its buffers, and what it does with the
//! bytes it receives, whatever the protocol (the parsers live in
//! `protocol`). Also: writing queued output, and opening the socket.

use std::io::{self, ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddr};

use mio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

use crate::exit_code;
use crate::flags::{Proto, Transport};
use crate::message::{MessageText, parse_text};
use crate::protocol::machat::{self, Line};
use crate::protocol::resp::{self, ArrayKind, Reply};
use crate::protocol::websocket::{self, Frame};
use crate::read_pacing::ReadPacing;
use crate::sequence::{Arrival, SenderTrack};
use crate::shared::Shared;

/// Bytes asked for by one read; output is compacted once this much of it
/// has been written.
pub const CHUNK: usize = 64 * 1024;

/// `Connection::sender` of a connection that neither sends nor counts echoes.
pub const NO_SENDER: u32 = u32::MAX;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ConnState {
    /// Not opened yet (`--connect-concurrency` holds it back).
    Pending,
    Connecting,
    /// WebSocket: waiting for the `101` response.
    Upgrading,
    /// Redis: waiting for the SUBSCRIBE confirmation.
    Subscribing,
    Ready,
    Closed,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Receives only.
    Receiver,
    /// machat sender: sends, and receives like any member.
    Sender,
    /// Redis sender's PUBLISH connection.
    Publisher,
    /// Redis sender's SUBSCRIBE connection (counts the sender's echoes).
    SenderSubscriber,
    /// Idle-mode connection.
    Idle,
}

pub struct Connection {
    pub socket: Option<TcpStream>,
    /// `--tls`: the session every byte goes through.
    pub tls: Option<Box<rustls::ClientConnection>>,
    pub state: ConnState,
    pub role: Role,
    /// Number among the connections of its role.
    pub id: u32,
    pub room: u32,
    /// The server it connects to: an index into the generator's targets.
    pub target: usize,
    /// The sender this connection sends for, or whose echoes it counts.
    pub sender: u32,
    /// The start of an incomplete line, frame or reply, kept for the next read.
    pub carry: Vec<u8>,
    pub out: Vec<u8>,
    /// How much of `out` is written.
    pub out_pos: usize,
    /// Bytes the socket took, ever (with TLS: plaintext bytes rustls took).
    pub bytes_written: u64,
    /// One per sender of its room, indexed by sender / rooms.
    pub tracks: Vec<SenderTrack>,
    pub joined: bool,
    /// Data messages this connection received (first copies only).
    pub received: u64,
    /// The server said goodbye inside the protocol (a WebSocket Close).
    pub peer_closed: Option<String>,
    /// The server has shut its side: read on to the end of the stream.
    pub peer_hung_up: bool,
    /// `--read-rate`: this receiver's budget.
    pub pacing: Option<ReadPacing>,
    /// Out of budget with data maybe left unread: read again then.
    pub read_paused_until: Option<u64>,
}

impl Connection {
    pub fn new(role: Role, id: u32, room: u32, sender: u32, tracks: Vec<SenderTrack>) -> Self {
        Connection {
            socket: None,
            tls: None,
            state: ConnState::Pending,
            role,
            id,
            room,
            target: 0,
            sender,
            carry: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            bytes_written: 0,
            tracks,
            joined: false,
            received: 0,
            peer_closed: None,
            peer_hung_up: false,
            pacing: None,
            read_paused_until: None,
        }
    }

    /// The name it joins with, also used in messages: `r3`, `s0`, `pub0`...
    pub fn name(&self) -> String {
        let prefix = match self.role {
            Role::Receiver => "r",
            Role::Sender => "s",
            Role::Publisher => "pub",
            Role::SenderSubscriber => "sub",
            Role::Idle => "i",
        };
        format!("{prefix}{}", self.id)
    }

    pub fn mark_ready(&mut self, shared: &mut Shared) {
        self.state = ConnState::Ready;
        shared.stats.ready_connections += 1;
    }

    /// Handles everything complete in `buf`; returns how much was used.
    pub fn process(&mut self, buf: &[u8], now: u64, shared: &mut Shared) -> usize {
        let mut pos = 0;
        if self.state == ConnState::Upgrading {
            match websocket::parse_upgrade_response(buf) {
                Ok(None) => return 0,
                Ok(Some(head)) => pos = head,
                Err(why) => {
                    shared.fail(exit_code::PROTOCOL, format!("{}: {why}", self.name()));
                    return buf.len();
                }
            }
            let handshake =
                machat::handshake_json(&self.name(), &shared.encoder.room_names[self.room as usize]);
            shared.encoder.ws_frame(&mut self.out, websocket::OPCODE_TEXT, handshake.as_bytes());
            self.mark_ready(shared);
        }
        let rest = &buf[pos..];
        pos + match (shared.encoder.proto, shared.encoder.transport) {
            (Proto::Machat, Transport::Tcp) => {
                let mut p = 0;
                for nl in memchr::memchr_iter(b'\n', rest) {
                    self.machat_line(&rest[p..nl], now, shared);
                    p = nl + 1;
                }
                p
            }
            (Proto::Machat, Transport::Ws) => self.websocket_frames(rest, now, shared),
            (Proto::Redis, _) => self.redis_replies(rest, now, shared),
        }
    }

    fn machat_line(&mut self, line: &[u8], now: u64, shared: &mut Shared) {
        match machat::parse_line(line) {
            Line::Delivery(text) => self.on_text(text, now, shared),
            Line::Error(line) if shared.record_server_errors => {
                shared.note_server_error(format!("{}: {}", self.name(), String::from_utf8_lossy(line)))
            }
            Line::Error(line) => shared.fail(
                exit_code::PROTOCOL,
                format!("{}: server said {:?}", self.name(), String::from_utf8_lossy(line)),
            ),
            Line::Empty => {}
            Line::Other => shared.stats.unrecognised += 1,
        }
    }

    fn websocket_frames(&mut self, buf: &[u8], now: u64, shared: &mut Shared) -> usize {
        let mut pos = 0;
        loop {
            let (used, frame) = match websocket::next_frame(&buf[pos..]) {
                Ok(Some(found)) => found,
                Ok(None) => break,
                Err(why) => {
                    shared.fail(exit_code::PROTOCOL, format!("{}: {why}", self.name()));
                    return buf.len();
                }
            };
            match frame {
                Frame::Data(payload) => {
                    let mut p = 0;
                    for nl in memchr::memchr_iter(b'\n', payload) {
                        self.machat_line(&payload[p..nl], now, shared);
                        p = nl + 1;
                    }
                    if p < payload.len() {
                        self.machat_line(&payload[p..], now, shared);
                    }
                }
                Frame::Close { code, reason } => {
                    let reason = String::from_utf8_lossy(reason);
                    self.peer_closed = Some(format!("WebSocket close {code} {reason}"));
                }
                Frame::Ping(payload) => {
                    shared.encoder.ws_frame(&mut self.out, websocket::OPCODE_PONG, payload)
                }
                Frame::Ignored => {}
            }
            pos += used;
        }
        pos
    }

    fn redis_replies(&mut self, buf: &[u8], now: u64, shared: &mut Shared) -> usize {
        let mut pos = 0;
        loop {
            if let Some((used, start, end)) = resp::parse_message(&buf[pos..]) {
                self.on_text(&buf[pos + start..pos + end], now, shared);
                pos += used;
                continue;
            }
            let (used, reply) = match resp::parse_reply(&buf[pos..]) {
                Ok(Some(found)) => found,
                Ok(None) => break,
                Err(why) => {
                    shared.fail(exit_code::PROTOCOL, format!("{}: {why}", self.name()));
                    return buf.len();
                }
            };
            let reply_bytes = &buf[pos..];
            match reply {
                Reply::Error(start, end) => {
                    let text = String::from_utf8_lossy(&reply_bytes[start..end]);
                    shared.fail(exit_code::PROTOCOL, format!("{}: redis error: {text}", self.name()));
                    return buf.len();
                }
                Reply::Integer => shared.stats.acks += 1,
                Reply::Simple => {}
                Reply::Array(ArrayKind::Subscribe, _, _) => {
                    if self.state == ConnState::Subscribing {
                        self.mark_ready(shared);
                        if !self.joined {
                            self.joined = true;
                            shared.stats.joined += 1;
                        }
                    }
                }
                Reply::Array(ArrayKind::Message, start, end) => {
                    self.on_text(&reply_bytes[start..end], now, shared)
                }
                Reply::Array(ArrayKind::Other, _, _) => {}
            }
            pos += used;
        }
        pos
    }

    /// One delivered message text.
    #[inline]
    fn on_text(&mut self, text: &[u8], now: u64, shared: &mut Shared) {
        let rooms = shared.rooms;
        match parse_text(text) {
            MessageText::Data { sender, seq, sent_ns } => {
                let track = if sender % rooms == self.room {
                    self.tracks.get_mut((sender / rooms) as usize)
                } else {
                    None
                };
                let Some(track) = track else {
                    shared.stats.foreign += 1;
                    return;
                };
                let stats = &mut shared.stats;
                stats.deliveries += 1;
                match track.arrive(seq) {
                    Arrival::New => {}
                    Arrival::Late => stats.reorders += 1,
                    Arrival::Duplicate => {
                        stats.duplicates += 1;
                        return;
                    }
                }
                stats.received += 1;
                self.received += 1;
                if shared.measuring {
                    stats.measured += 1;
                    shared.latency.record(now.saturating_sub(sent_ns));
                }
                if sender == self.sender {
                    let state = &mut shared.senders[sender as usize];
                    state.echoed += 1;
                    if !state.queued_for_top_up {
                        state.queued_for_top_up = true;
                        shared.to_top_up.push(sender);
                    }
                }
            }
            MessageText::Marker(sender) => {
                if sender % rooms == self.room
                    && let Some(track) = self.tracks.get_mut((sender / rooms) as usize)
                    && !track.marker
                {
                    track.marker = true;
                    shared.stats.marker_pairs += 1;
                }
            }
            MessageText::Probe => {
                if !self.joined {
                    self.joined = true;
                    shared.stats.joined += 1;
                }
            }
            MessageText::Other => shared.stats.unrecognised += 1,
        }
    }

    /// Writes as much queued output as the socket takes; returns how much
    /// that was.
    pub fn flush(&mut self) -> io::Result<usize> {
        let Some(socket) = self.socket.as_mut() else {
            return Ok(0);
        };
        let mut written = 0;
        if let Some(tls) = self.tls.as_mut() {
            // Plaintext into rustls (which takes up to its buffer limit, and
            // holds it back until the handshake is done), records out to the
            // socket until it is full or nothing is left.
            loop {
                let mut progress = false;
                if self.out_pos < self.out.len() {
                    let n = tls.writer().write(&self.out[self.out_pos..])?;
                    self.out_pos += n;
                    written += n;
                    progress = n > 0;
                }
                if tls.wants_write() {
                    match tls.write_tls(socket) {
                        Ok(0) => return Err(ErrorKind::WriteZero.into()),
                        Ok(_) => progress = true,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                if !progress {
                    break;
                }
            }
        }
        while self.tls.is_none() && self.out_pos < self.out.len() {
            match socket.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_pos += n;
                    written += n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos >= CHUNK {
            // Compacting only after a chunk keeps the copying rare.
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        self.bytes_written += written as u64;
        Ok(written)
    }

    /// Output queued and not yet written.
    pub fn unwritten(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Something waits to be written: output, or TLS records (a handshake
    /// message, or encrypted output the socket did not take).
    pub fn wants_flush(&self) -> bool {
        self.unwritten() > 0 || self.tls.as_ref().is_some_and(|tls| tls.wants_write())
    }
}

/// Starts a non-blocking connect, bound to `source` first when given
/// (`--source-ips`: each loopback source address has its own ephemeral ports).
///
/// The old hand-made socket also set `IP_BIND_ADDRESS_NO_PORT`, which
/// socket2 does not offer. Without it `bind` picks the port before
/// `connect`, so a port is not shared between destinations: each source
/// address gives ~28k ports, to all the `--addr` servers together.
pub fn connect_from(destination: SocketAddr, source: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let (SocketAddr::V4(_), Some(source)) = (destination, source) else {
        return TcpStream::connect(destination);
    };
    // socket2 opens it close-on-exec.
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    match socket.connect(&destination.into()) {
        Ok(()) => {}
        // std has no stable ErrorKind for EINPROGRESS yet (io_error_inprogress),
        // hence libc's constant: the number differs between architectures.
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}
