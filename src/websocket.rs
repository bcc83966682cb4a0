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
    /// RFC 6455 "internal error"; used when a peer stops answering pings.
    pub const UNEXPECTED: u16 = 1011;
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

/// Appends a ping frame (`payload` at most 125 bytes).
pub fn encode_ping_frame(out: &mut Vec<u8>, payload: &[u8]) {
    encode_frame(out, OpCode::Control(Control::Ping), &payload[..payload.len().min(125)]);
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
    TooBig {
        max_message: usize,
    },
    InvalidUtf8,
    /// The cause, without the "WebSocket protocol error: " that `Display`
    /// puts before it.
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
    /// What a fresh context is made from.
    limits: WsLimits,
    /// Where the peer's byte stream is, frame by frame: what tungstenite
    /// holds, and when it holds nothing.
    scanner: FrameScanner,
    /// The largest frame fed since tungstenite's buffers were last new.
    largest_frame: u64,
}

impl std::fmt::Debug for WsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsSession").finish_non_exhaustive()
    }
}

impl WsSession {
    pub fn new(limits: WsLimits) -> Self {
        WsSession {
            context: WebSocketContext::new(Role::Server, Some(Self::config(&limits))),
            limits,
            scanner: FrameScanner::default(),
            largest_frame: 0,
        }
    }

    fn config(limits: &WsLimits) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(limits.read_buffer)
            .write_buffer_size(limits.write_buffer)
            .max_write_buffer_size(limits.max_write_buffer.max(limits.write_buffer + 1))
            .max_message_size(Some(limits.max_message))
            .max_frame_size(Some(limits.max_message))
    }

    /// Changes the largest message accepted from now on (the handshake
    /// message has a smaller cap than chat messages).
    pub fn set_max_message(&mut self, max_message: usize) {
        self.limits.max_message = max_message;
        self.context.set_config(|config| {
            config.max_message_size = Some(max_message);
            config.max_frame_size = Some(max_message);
        });
    }

    /// Bytes of the peer's input held until a message completes: an
    /// unfinished frame, or the frames of an unfinished message.
    pub fn held(&self) -> usize {
        self.scanner.held()
    }

    /// Decodes `input` up to the next message or close. `Complete`: the
    /// event, and how many bytes of `input` tungstenite took on the way
    /// (it may have buffered more than the message: call again, even with
    /// no new input, until `Partial`). `Partial`: every byte was taken and
    /// nothing is complete. tungstenite's replies (pong, close) are
    /// appended to `replies` either way.
    pub fn read(&mut self, input: &[u8], replies: &mut Vec<u8>) -> Parsed<WsEvent, WsError> {
        let mut pipe = Pipe { input, output: replies };
        let outcome = loop {
            let event = match self.context.read(&mut pipe) {
                Ok(Message::Text(text)) => WsEvent::Message(Bytes::from(text)),
                Ok(Message::Binary(data)) => match std::str::from_utf8(&data) {
                    Ok(_) => WsEvent::Message(data),
                    Err(_) => break Err(WsError::InvalidUtf8),
                },
                // tungstenite has queued its close reply; the next read
                // writes it into the pipe and reports the session closed.
                Ok(Message::Close(_)) => WsEvent::Closed,
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                Err(WsLibError::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => {
                    break Ok(Status::Partial);
                }
                Err(WsLibError::ConnectionClosed | WsLibError::AlreadyClosed) => break Ok(Status::Partial),
                Err(WsLibError::Capacity(CapacityError::MessageTooLong { max_size, .. })) => {
                    break Err(WsError::TooBig { max_message: max_size });
                }
                Err(WsLibError::Utf8(_)) => break Err(WsError::InvalidUtf8),
                // tungstenite's own text for this one already starts with
                // "WebSocket protocol error: ", which `WsError` adds.
                Err(WsLibError::Protocol(error)) => break Err(WsError::Protocol(error.to_string())),
                Err(error) => break Err(WsError::Protocol(error.to_string())),
            };
            let consumed = input.len() - pipe.input.len();
            break Ok(Status::Complete { value: event, consumed });
        };
        let consumed = input.len() - pipe.input.len();
        self.largest_frame = self.largest_frame.max(self.scanner.feed(&input[..consumed]));
        if outcome == Ok(Status::Partial) {
            self.shrink_when_idle();
        }
        outcome
    }

    /// tungstenite keeps the buffer it grew for the largest frame so far,
    /// for the life of the connection. Once it holds nothing (every byte it
    /// took formed frames it has handled, and no message is half done), a
    /// fresh context costs nothing to switch to and gives that memory back.
    fn shrink_when_idle(&mut self) {
        if self.largest_frame > self.limits.read_buffer as u64 && self.scanner.at_rest() {
            self.context = WebSocketContext::new(Role::Server, Some(Self::config(&self.limits)));
            self.largest_frame = 0;
        }
    }
}

/// Follows the client's frames by their headers alone (RFC 6455 §5.2), to
/// know what tungstenite holds: the bytes of an unfinished frame, and of
/// the frames of an unfinished (fragmented) message.
#[derive(Debug, Default)]
struct FrameScanner {
    /// Payload bytes of the current frame still to come; `None` while
    /// reading a header.
    payload_left: Option<u64>,
    /// Bytes of the current frame so far, header included.
    frame_bytes: usize,
    /// Bytes of the earlier frames of the unfinished message.
    message_bytes: usize,
    /// The header being read: its bytes so far.
    header: [u8; 14],
    header_len: u8,
    /// Whether the current frame is a data frame (text, binary or
    /// continuation) and whether it ends its message.
    data: bool,
    fin: bool,
}

impl FrameScanner {
    /// Follows `bytes`; returns the largest frame length seen in them.
    fn feed(&mut self, mut bytes: &[u8]) -> u64 {
        let mut largest = 0;
        while !bytes.is_empty() {
            match self.payload_left {
                None => {
                    self.header[usize::from(self.header_len)] = bytes[0];
                    self.header_len += 1;
                    self.frame_bytes += 1;
                    bytes = &bytes[1..];
                    if let Some(len) = self.header_complete() {
                        largest = largest.max(len);
                        self.payload_left = Some(len);
                    }
                }
                Some(left) => {
                    let take = (left.min(bytes.len() as u64)) as usize;
                    self.payload_left = Some(left - take as u64);
                    self.frame_bytes += take;
                    bytes = &bytes[take..];
                }
            }
            if self.payload_left == Some(0) {
                self.frame_done();
            }
        }
        largest
    }

    /// The payload length once the header is complete.
    fn header_complete(&mut self) -> Option<u64> {
        let header = &self.header[..usize::from(self.header_len)];
        if header.len() < 2 {
            return None;
        }
        let masked = header[1] & 0x80 != 0;
        let (extra, short) = match header[1] & 0x7f {
            126 => (2, None),
            127 => (8, None),
            len => (0, Some(u64::from(len))),
        };
        let needed = 2 + extra + if masked { 4 } else { 0 };
        if header.len() < needed {
            return None;
        }
        let opcode = header[0] & 0x0f;
        self.data = opcode < 0x8;
        self.fin = header[0] & 0x80 != 0;
        let len = short.unwrap_or_else(|| {
            header[2..2 + extra].iter().fold(0u64, |len, &byte| len.saturating_mul(256) | u64::from(byte))
        });
        self.header_len = 0;
        Some(len)
    }

    fn frame_done(&mut self) {
        if self.data {
            self.message_bytes = if self.fin { 0 } else { self.message_bytes + self.frame_bytes };
        }
        self.frame_bytes = 0;
        self.payload_left = None;
    }

    /// Bytes held until a message completes.
    fn held(&self) -> usize {
        self.message_bytes + self.frame_bytes
    }

    /// At a frame boundary with no message half done.
    fn at_rest(&self) -> bool {
        self.held() == 0 && self.payload_left.is_none()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            len @ 0..=125 => frame.push(0x80 | len as u8),
            len @ 126..=0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend_from_slice(payload);
        frame
    }

    fn session() -> WsSession {
        WsSession::new(WsLimits {
            max_message: 1 << 20,
            read_buffer: 1024,
            write_buffer: 1024,
            max_write_buffer: 1 << 20,
        })
    }

    /// Reads until `Partial`, returning the messages.
    fn read_all(session: &mut WsSession, mut input: &[u8]) -> Vec<Vec<u8>> {
        let mut replies = Vec::new();
        let mut messages = Vec::new();
        loop {
            match session.read(input, &mut replies).unwrap() {
                Status::Complete { value: WsEvent::Message(message), consumed } => {
                    messages.push(message.to_vec());
                    input = &input[consumed..];
                }
                Status::Complete { consumed, .. } => input = &input[consumed..],
                Status::Partial => return messages,
            }
        }
    }

    #[test]
    fn the_scanner_knows_what_is_held() {
        let mut session = session();
        let first = frame(false, 0x1, b"hello ");
        let ping = frame(true, 0x9, b"ping");
        let last = frame(true, 0x0, b"world");
        // Half a fragmented message, a ping in between, then the rest in
        // two pieces.
        assert!(read_all(&mut session, &first).is_empty());
        assert_eq!(session.held(), first.len());
        assert!(read_all(&mut session, &ping).is_empty());
        assert_eq!(session.held(), first.len(), "a whole control frame is not held");
        assert!(read_all(&mut session, &last[..3]).is_empty());
        assert_eq!(session.held(), first.len() + 3);
        assert_eq!(read_all(&mut session, &last[3..]), [b"hello world".to_vec()]);
        assert_eq!(session.held(), 0);
    }

    #[test]
    fn a_large_message_does_not_keep_its_buffer() {
        let mut session = session();
        let big = frame(true, 0x1, &vec![b'x'; 65_000]);
        assert_eq!(read_all(&mut session, &big[..40_000]), Vec::<Vec<u8>>::new());
        assert_eq!(session.largest_frame, 65_000, "not given back while the message is half done");
        assert_eq!(read_all(&mut session, &big[40_000..]).len(), 1);
        assert_eq!(session.largest_frame, 0, "tungstenite's buffers were renewed");
        // The session goes on as before.
        let mut two = frame(true, 0x1, b"one");
        two.extend(frame(true, 0x2, b"two"));
        assert_eq!(read_all(&mut session, &two), [b"one".to_vec(), b"two".to_vec()]);
    }

    #[test]
    fn lengths_of_every_size_are_followed() {
        let mut scanner = FrameScanner::default();
        for len in [0, 125, 126, 65_535, 65_536] {
            let frame = frame(true, 0x2, &vec![0; len]);
            for byte in frame.chunks(7) {
                scanner.feed(byte);
            }
            assert!(scanner.at_rest(), "length {len}");
        }
    }

    #[test]
    fn a_protocol_error_says_its_cause_once() {
        let mut session = session();
        let mut reserved = frame(true, 0x1, b"hi");
        reserved[0] |= 0x40; // RSV1, with no extension that defines it
        let error = session.read(&reserved, &mut Vec::new()).unwrap_err();
        assert_eq!(error.to_string(), "WebSocket protocol error: Reserved bits are non-zero");
        assert_eq!(error.close_code(), close_code::PROTOCOL_ERROR);
    }
}
