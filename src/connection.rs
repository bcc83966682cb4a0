//! One client connection: its socket, its output buffer, and where it is in
//! its life, as one enum whose variants carry exactly that stage's data.
//!
//! ```text
//!  TCP port:  accept ─► TcpHandshake ─────────────────────┐
//!  WS port:   accept ─► HttpRequest ─► WsHandshake ───────┤
//!                                                         ▼
//!                                                      Member ─► Closing ─► Draining ─► closed
//! ```
//!
//! Any stage can fail into `Closing` (an error is queued, then flushed),
//! and a reset or a write error closes the connection at once. The event
//! loop moves connections between stages; the stages themselves are pure.

use std::time::Instant;

use mio::net::TcpStream;

use crate::handshake::Handshake;
use crate::line_framing::LineFramer;
use crate::output::Output;
use crate::rooms::{RoomId, Transport};
use crate::websocket::WsSession;

#[derive(Debug)]
pub struct Connection {
    pub socket: TcpStream,
    /// Everything waiting to be written, in order.
    pub output: Output,
    /// Which listener accepted it.
    pub transport: Transport,
    pub stage: Stage,
}

/// Where a connection is in its life.
#[derive(Debug)]
pub enum Stage {
    /// TCP: waiting for the complete JSON handshake.
    TcpHandshake { handshake: Handshake, deadline: Instant },
    /// WebSocket port: the HTTP request head is still arriving.
    HttpRequest { head: Vec<u8>, deadline: Instant },
    /// Upgraded to WebSocket: waiting for the handshake message.
    WsHandshake { session: Box<WsSession>, deadline: Instant },
    /// In a room; chat messages flow both ways.
    Member(Membership),
    /// Nothing more is read; queued output (an error, a close frame) is
    /// being flushed, after which the write side is shut down.
    Closing { deadline: Instant },
    /// The write side is shut down; input is read and dropped until the
    /// peer closes, so unread input cannot turn our close into a reset that
    /// destroys the last bytes we sent.
    Draining { deadline: Instant },
}

/// A member of a room.
#[derive(Debug)]
pub struct Membership {
    pub room: RoomId,
    pub name: Box<str>,
    pub input: MemberInput,
}

/// How a member's input is framed into chat messages.
#[derive(Debug)]
pub enum MemberInput {
    Lines(LineFramer),
    WebSocket(Box<WsSession>),
}

impl Stage {
    /// When the connection must leave this stage, if there is a deadline.
    pub fn deadline(&self) -> Option<Instant> {
        match self {
            Stage::TcpHandshake { deadline, .. }
            | Stage::HttpRequest { deadline, .. }
            | Stage::WsHandshake { deadline, .. }
            | Stage::Closing { deadline }
            | Stage::Draining { deadline } => Some(*deadline),
            Stage::Member(_) => None,
        }
    }

    /// Whether this stage speaks WebSocket frames (errors and closes are
    /// sent as frames, not lines).
    pub fn speaks_websocket(&self) -> bool {
        matches!(
            self,
            Stage::WsHandshake { .. } | Stage::Member(Membership { input: MemberInput::WebSocket(_), .. })
        )
    }

    /// Bytes of input held between reads by machat's own framing (not
    /// counting tungstenite's read buffer, which is sized by
    /// `--ws-read-buffer`).
    pub fn held_input(&self) -> usize {
        match self {
            Stage::TcpHandshake { handshake, .. } => handshake.held_capacity(),
            Stage::HttpRequest { head, .. } => head.capacity(),
            Stage::Member(Membership { input: MemberInput::Lines(framer), .. }) => framer.held_capacity(),
            _ => 0,
        }
    }
}
