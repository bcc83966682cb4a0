//! WebSocket framing after the HTTP upgrade, with no sockets in it.
//!
//! Incoming frames are decoded by tungstenite's [`WebSocketContext`] driven
//! over an in-memory pipe: the loop reads the socket, hands the bytes to
//! [`WsSession::read`] (which keeps the parsing contract of
//! [`crate::parse`]), and tungstenite's own replies (pong, close) come back
//! as bytes for the connection's output buffer. tungstenite never sees the
//! socket, so it can never block the loop or write past the buffer.
//!
//! Outgoing text and close frames are encoded here directly with
//! tungstenite's [`FrameHeader`], so a broadcast is framed once and the same
//! bytes go to every WebSocket member.

use std::io::{self, Read, Write};

use tungstenite::Bytes;
use tungstenite::error::{CapacityError, Error as WsLibError};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::{Message, Role, WebSocketConfig, WebSocketContext};

use crate::parse::{Parsed, Status};

/// Close codes used by the server (RFC 6455 §7.4.1).
pub mod close_code {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
}

/// Appends one unmasked, final text frame carrying `payload`.
pub fn encode_text_frame(out: &mut Vec<u8>, payload: &[u8]) {
    encode_frame(out, OpCode::Data(Data::Text), payload);
}

/// Appends a close frame with `code` and a reason (cut to fit the 123
/// bytes a control frame allows, at a character boundary).
pub fn encode_close_frame(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = [0u8; 125];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    encode_frame(out, OpCode::Control(Control::Close), &payload[..2 + end]);
}

fn encode_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    let header = FrameHeader { opcode, ..FrameHeader::default() };
    // Writing into a Vec cannot fail.
    let _ = header.format(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// Sizes that bound one WebSocket session.
#[derive(Debug, Clone, Copy)]
pub struct WsLimits {
    /// Largest message (and frame) accepted, in bytes.
    pub max_message: usize,
    /// tungstenite's read buffer, allocated per connection.
    pub read_buffer: usize,
    /// tungstenite's write buffer target before it hands frames on.
    pub write_buffer: usize,
    /// Most bytes of replies tungstenite may hold.
    pub max_write_buffer: usize,
}

/// What the peer sent, as the session saw it.
#[derive(Debug, PartialEq, Eq)]
pub enum WsEvent {
    /// A complete text message, or a binary one that is valid UTF-8
    /// (tungstenite's buffer, shared, not copied).
    Message(Bytes),
    /// The peer sent a Close frame; the reply is already queued.
    Closed,
}

/// Why a session failed; each maps to a close code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsError {
    TooBig { max_message: usize },
    InvalidUtf8,
    Protocol(String),
}

impl WsError {
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::TooBig { .. } => close_code::TOO_BIG,
            WsError::InvalidUtf8 => close_code::INVALID_DATA,
            WsError::Protocol(_) => close_code::PROTOCOL_ERROR,
        }
    }
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WsError::TooBig { max_message } => write!(f, "message larger than {max_message} bytes"),
            WsError::InvalidUtf8 => write!(f, "message is not valid UTF-8"),
            WsError::Protocol(detail) => write!(f, "WebSocket protocol error: {detail}"),
        }
    }
}

/// One server-side WebSocket session.
pub struct WsSession {
    context: WebSocketContext,
}

impl std::fmt::Debug for WsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsSession").finish_non_exhaustive()
    }
}

impl WsSession {
    pub fn new(limits: WsLimits) -> Self {
        let config = WebSocketConfig::default()
            .read_buffer_size(limits.read_buffer)
            .write_buffer_size(limits.write_buffer)
            .max_write_buffer_size(limits.max_write_buffer.max(limits.write_buffer + 1))
            .max_message_size(Some(limits.max_message))
            .max_frame_size(Some(limits.max_message));
        WsSession { context: WebSocketContext::new(Role::Server, Some(config)) }
    }

    /// Changes the largest message accepted from now on (the handshake
    /// message has a smaller cap than chat messages).
    pub fn set_max_message(&mut self, max_message: usize) {
        self.context.set_config(|config| {
            config.max_message_size = Some(max_message);
            config.max_frame_size = Some(max_message);
        });
    }

    /// Decodes `input` up to the next message or close. `Complete`: the
    /// event, and how many bytes of `input` tungstenite took on the way
    /// (it may have buffered more than the message: call again, even with
    /// no new input, until `Partial`). `Partial`: every byte was taken and
    /// nothing is complete. tungstenite's replies (pong, close) are
    /// appended to `replies` either way.
    pub fn read(&mut self, input: &[u8], replies: &mut Vec<u8>) -> Parsed<WsEvent, WsError> {
        let mut pipe = Pipe { input, output: replies };
        loop {
            let event = match self.context.read(&mut pipe) {
                Ok(Message::Text(text)) => WsEvent::Message(Bytes::from(text)),
                Ok(Message::Binary(data)) => match std::str::from_utf8(&data) {
                    Ok(_) => WsEvent::Message(data),
                    Err(_) => return Err(WsError::InvalidUtf8),
                },
                // tungstenite has queued its close reply; the next read
                // writes it into the pipe and reports the session closed.
                Ok(Message::Close(_)) => WsEvent::Closed,
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                Err(WsLibError::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Status::Partial);
                }
                Err(WsLibError::ConnectionClosed | WsLibError::AlreadyClosed) => return Ok(Status::Partial),
                Err(WsLibError::Capacity(CapacityError::MessageTooLong { max_size, .. })) => {
                    return Err(WsError::TooBig { max_message: max_size });
                }
                Err(WsLibError::Utf8(_)) => return Err(WsError::InvalidUtf8),
                Err(error) => return Err(WsError::Protocol(error.to_string())),
            };
            let consumed = input.len() - pipe.input.len();
            return Ok(Status::Complete { value: event, consumed });
        }
    }
}

/// The stream tungstenite reads from and writes to: the bytes the loop
/// received, and the connection's reply buffer. Reading past the input
/// reports `WouldBlock`, as a drained non-blocking socket would.
struct Pipe<'a> {
    input: &'a [u8],
    output: &'a mut Vec<u8>,
}

impl Read for Pipe<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.input.read(buf)?;
        Ok(n)
    }
}

impl Write for Pipe<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
