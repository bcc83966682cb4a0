//! The output side: what leaves the server, from a message to the socket.
//!
//! - A [`Batch`] holds the messages one sender produced in one read,
//!   encoded once per transport: `<name>:<text>\n` lines back to back (the
//!   exact bytes every TCP member receives) and, when the room has
//!   WebSocket members, the same messages as text frames. A message is
//!   encoded once per transport, never once per recipient, and each
//!   recipient gets the whole batch with one copy.
//! - Every byte the server sends to a client goes through that client's
//!   [`Output`]: broadcasts, error lines, WebSocket control frames, HTTP
//!   responses. One ordered buffer per connection means frames can never
//!   interleave, and it is the only place the socket is written from.
//! - A connection holds a buffer only while it has something queued.
//!   Buffers come from a [`BufferPool`] and go back when drained, so an
//!   idle connection costs no buffer and a busy one costs no allocation per
//!   turn.

use std::collections::VecDeque;
use std::io::{self, Write};

use crate::{sanitize, websocket};

/// A new buffer is allocated just large enough for what is queued (at
/// least this): a message fanned out to a huge room then costs each member
/// a few dozen bytes, not a page. Pooled buffers keep whatever they grew to.
const MIN_CAPACITY: usize = 64;
/// Buffers that grew past this are freed instead of pooled.
const MAX_POOLED_CAPACITY: usize = 64 * 1024;
/// Most bytes of free buffers kept for reuse: enough for a buffer per
/// member of a room of tens of thousands.
const MAX_POOLED_BYTES: usize = 32 * 1024 * 1024;

/// The messages of one sender, ready to hand to a room.
#[derive(Debug, Default)]
pub struct Batch {
    /// `name:text\n` lines, back to back.
    lines: Vec<u8>,
    /// End offset of each message in `lines`.
    ends: Vec<usize>,
    /// The same messages as WebSocket text frames; empty until asked for.
    frames: Vec<u8>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Empties the batch, keeping its allocations for the next one.
    pub fn clear(&mut self) {
        self.lines.clear();
        self.ends.clear();
        self.frames.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Messages in the batch.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Adds one message from `sender`. The text is sanitised once, here,
    /// for every transport ([`sanitize::push_sanitized`]): each invalid UTF-8
    /// sequence, control character (TAB aside), line or paragraph separator
    /// and bidi override becomes U+FFFD, so every delivery is valid UTF-8
    /// that cannot rewrite a terminal or pose as another line.
    pub fn push(&mut self, sender: &str, text: &[u8]) {
        debug_assert!(self.frames.is_empty(), "push after frames were encoded");
        self.lines.extend_from_slice(sender.as_bytes());
        self.lines.push(b':');
        sanitize::push_sanitized(&mut self.lines, text);
        self.lines.push(b'\n');
        self.ends.push(self.lines.len());
        if log::log_enabled!(log::Level::Trace) {
            let start = self.ends.len().checked_sub(2).map_or(0, |previous| self.ends[previous]);
            log::trace!("message {:?}", String::from_utf8_lossy(&self.lines[start..]));
        }
    }

    /// The batch as TCP bytes.
    pub fn lines(&self) -> &[u8] {
        &self.lines
    }

    /// The end offset of each message in [`lines`](Batch::lines).
    pub fn ends(&self) -> &[usize] {
        &self.ends
    }

    /// Frames every message as a WebSocket text frame, once; call before
    /// [`frames`](Batch::frames) when the room has WebSocket members.
    pub fn encode_frames(&mut self) {
        if self.frames.is_empty() {
            let mut start = 0;
            for &end in &self.ends {
                websocket::encode_text_frame(&mut self.frames, &self.lines[start..end]);
                start = end;
            }
        }
    }

    /// The batch as WebSocket text frames (empty before
    /// [`encode_frames`](Batch::encode_frames)).
    pub fn frames(&self) -> &[u8] {
        &self.frames
    }
}

/// Reusable buffers shared by all connections of one loop. The loop
/// empties it when it goes idle, so the memory of a burst is not kept.
#[derive(Debug, Default)]
pub struct BufferPool {
    /// Boxed because a connection's `Output` holds them boxed: reusing the
    /// box too is what makes a pooled buffer cost no allocation.
    #[allow(clippy::vec_box)]
    free: Vec<Box<OutputBuffer>>,
    /// Capacity of the buffers in `free`.
    pooled_bytes: usize,
}

impl BufferPool {
    fn take(&mut self, needed: usize) -> Box<OutputBuffer> {
        match self.free.pop() {
            Some(buffer) => {
                self.pooled_bytes -= buffer.bytes.capacity();
                buffer
            }
            None => Box::new(OutputBuffer {
                bytes: Vec::with_capacity(needed.max(MIN_CAPACITY)),
                written: 0,
                ends: VecDeque::new(),
            }),
        }
    }

    fn give(&mut self, mut buffer: Box<OutputBuffer>) {
        let capacity = buffer.bytes.capacity();
        if capacity <= MAX_POOLED_CAPACITY && self.pooled_bytes + capacity <= MAX_POOLED_BYTES {
            buffer.bytes.clear();
            buffer.written = 0;
            buffer.ends.clear();
            self.pooled_bytes += capacity;
            self.free.push(buffer);
        }
    }

    /// Buffers waiting for reuse.
    pub fn pooled(&self) -> usize {
        self.free.len()
    }

    /// Frees every pooled buffer.
    pub fn release(&mut self) {
        self.free = Vec::new();
        self.pooled_bytes = 0;
    }
}

/// Bytes queued for one connection, how many of them were written, and
/// where the messages in them end.
#[derive(Debug)]
pub struct OutputBuffer {
    bytes: Vec<u8>,
    written: usize,
    /// Where earlier appends ended, for those not yet written past. Every
    /// append is whole messages (lines, frames, a response), so each end is
    /// a message boundary: a queue cut at one never tears a line or a
    /// frame. The end of the last append is `bytes.len()` and is not
    /// stored, so a queue that is written before the next append comes
    /// (the common case) never allocates here.
    ends: VecDeque<usize>,
}

impl OutputBuffer {
    fn unwritten(&self) -> &[u8] {
        &self.bytes[self.written..]
    }

    fn advance(&mut self, written: usize) {
        self.written += written;
        while self.ends.front().is_some_and(|&end| end < self.written) {
            self.ends.pop_front();
        }
    }
}

/// The output state of one connection. The buffer is boxed, so an idle
/// connection pays two words for its output, not a whole buffer header.
#[derive(Debug, Default)]
pub enum Output {
    /// Nothing queued, no buffer held.
    #[default]
    Empty,
    /// Bytes queued since the last flush; the connection is on the loop's
    /// flush list and will be written once at the end of the turn.
    Pending(Box<OutputBuffer>),
    /// The socket did not take everything; the connection waits for a
    /// WRITABLE event and is not on the flush list.
    Blocked(Box<OutputBuffer>),
}

/// Appending would pass the connection's cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverCap;

/// What appending did to the output state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// The output was empty: put the connection on the flush list.
    Started,
    /// Already pending or blocked: nothing more to do.
    Behind,
}

/// What flushes wrote: bytes, and `write` calls that wrote something.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub bytes: usize,
    pub writes: usize,
}

/// What a flush did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything was written and the buffer given back.
    Drained,
    /// The socket is full; bytes remain. WRITABLE interest is needed.
    Blocked,
}

impl Output {
    /// Bytes queued and not yet written.
    pub fn len(&self) -> usize {
        match self {
            Output::Empty => 0,
            Output::Pending(buffer) | Output::Blocked(buffer) => buffer.bytes.len() - buffer.written,
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Output::Empty)
    }

    pub fn is_blocked(&self) -> bool {
        matches!(self, Output::Blocked(_))
    }

    pub fn is_pending(&self) -> bool {
        matches!(self, Output::Pending(_))
    }

    /// Capacity of the buffer held, if any.
    pub fn capacity(&self) -> usize {
        match self {
            Output::Empty => 0,
            Output::Pending(buffer) | Output::Blocked(buffer) => buffer.bytes.capacity(),
        }
    }

    /// Appends `data` (whole messages), unless that would leave more than
    /// `cap` bytes queued.
    pub fn append(&mut self, data: &[u8], cap: usize, pool: &mut BufferPool) -> Result<Appended, OverCap> {
        if self.len() + data.len() > cap {
            return Err(OverCap);
        }
        let (buffer, appended) = match self {
            Output::Empty => {
                *self = Output::Pending(pool.take(data.len()));
                let (Output::Pending(buffer) | Output::Blocked(buffer)) = self else { unreachable!() };
                (buffer, Appended::Started)
            }
            Output::Pending(buffer) | Output::Blocked(buffer) => {
                // Reclaim the written prefix before growing, so a blocked
                // buffer does not creep towards twice the cap.
                if buffer.written > 0 && buffer.bytes.len() + data.len() > buffer.bytes.capacity() {
                    let written = buffer.written;
                    buffer.bytes.drain(..written);
                    buffer.written = 0;
                    buffer.ends.iter_mut().for_each(|end| *end -= written);
                }
                buffer.ends.push_back(buffer.bytes.len());
                (buffer, Appended::Behind)
            }
        };
        buffer.bytes.extend_from_slice(data);
        Ok(appended)
    }

    /// Drops everything after the first message boundary at or after what
    /// was written, so the peer gets no torn line or frame; returns the
    /// bytes dropped. What follows (an error, a close frame) starts on a
    /// boundary.
    pub fn cut_at_message_boundary(&mut self) -> usize {
        let (Output::Pending(buffer) | Output::Blocked(buffer)) = self else { return 0 };
        let boundary = buffer.ends.front().copied().unwrap_or(buffer.bytes.len());
        let dropped = buffer.bytes.len() - boundary;
        buffer.bytes.truncate(boundary);
        buffer.ends.clear();
        dropped
    }

    /// Writes as much as the socket takes. `tally` counts what was written,
    /// even when an error is returned.
    pub fn flush(
        &mut self,
        sink: &mut impl Write,
        pool: &mut BufferPool,
        tally: &mut Tally,
    ) -> io::Result<Flushed> {
        let buffer = match self {
            Output::Empty => return Ok(Flushed::Drained),
            Output::Pending(buffer) | Output::Blocked(buffer) => buffer,
        };
        while !buffer.unwritten().is_empty() {
            match sink.write(buffer.unwritten()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    buffer.advance(n);
                    tally.bytes += n;
                    tally.writes += 1;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    *self = match std::mem::take(self) {
                        Output::Pending(buffer) | Output::Blocked(buffer) => Output::Blocked(buffer),
                        Output::Empty => Output::Empty,
                    };
                    return Ok(Flushed::Blocked);
                }
                Err(error) => return Err(error),
            }
        }
        if let Output::Pending(buffer) | Output::Blocked(buffer) = std::mem::take(self) {
            pool.give(buffer);
        }
        Ok(Flushed::Drained)
    }

    /// Drops everything queued, giving the buffer back.
    pub fn discard(&mut self, pool: &mut BufferPool) -> usize {
        let dropped = self.len();
        if let Output::Pending(buffer) | Output::Blocked(buffer) = std::mem::take(self) {
            pool.give(buffer);
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes `room` more bytes, then would block.
    struct Socket {
        taken: Vec<u8>,
        room: usize,
    }

    impl Write for Socket {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn queue_flush_block_and_drain() {
        let mut pool = BufferPool::default();
        let mut output = Output::default();
        assert_eq!(output.append(b"hello ", 100, &mut pool), Ok(Appended::Started));
        assert_eq!(output.append(b"world", 100, &mut pool), Ok(Appended::Behind));
        assert_eq!(output.len(), 11);

        let mut socket = Socket { taken: Vec::new(), room: 4 };
        let mut tally = Tally::default();
        assert_eq!(output.flush(&mut socket, &mut pool, &mut tally).unwrap(), Flushed::Blocked);
        assert!(output.is_blocked());
        assert_eq!((tally.bytes, tally.writes, output.len()), (4, 1, 7));

        // More output while blocked stays in order behind the rest.
        assert_eq!(output.append(b"!", 100, &mut pool), Ok(Appended::Behind));
        socket.room = 100;
        assert_eq!(output.flush(&mut socket, &mut pool, &mut tally).unwrap(), Flushed::Drained);
        assert_eq!((tally.bytes, tally.writes), (12, 2));
        assert_eq!(socket.taken, b"hello world!");
        assert!(output.is_empty());
        assert_eq!(output.capacity(), 0, "a drained connection holds no buffer");
        assert_eq!(pool.pooled(), 1, "the buffer went back to the pool");
    }

    #[test]
    fn a_cut_keeps_the_message_being_written_whole() {
        let mut pool = BufferPool::default();
        let mut output = Output::default();
        output.append(b"one\ntwo\n", 100, &mut pool).unwrap();
        output.append(b"three\n", 100, &mut pool).unwrap();
        output.append(b"four\n", 100, &mut pool).unwrap();
        // Half of "three\n" went out: it is finished, the rest is dropped.
        let mut socket = Socket { taken: Vec::new(), room: 10 };
        output.flush(&mut socket, &mut pool, &mut Tally::default()).unwrap();
        assert_eq!(output.cut_at_message_boundary(), 5);
        output.append(b"error: slow consumer\n", 100, &mut pool).unwrap();
        socket.room = 100;
        output.flush(&mut socket, &mut pool, &mut Tally::default()).unwrap();
        assert_eq!(socket.taken, b"one\ntwo\nthree\nerror: slow consumer\n");

        // Cut exactly at a boundary: nothing of the next append is kept.
        let mut output = Output::default();
        output.append(b"a\n", 100, &mut pool).unwrap();
        output.append(b"b\n", 100, &mut pool).unwrap();
        let mut socket = Socket { taken: Vec::new(), room: 2 };
        output.flush(&mut socket, &mut pool, &mut Tally::default()).unwrap();
        assert_eq!(output.cut_at_message_boundary(), 2);
        assert_eq!(output.len(), 0);
    }

    #[test]
    fn boundaries_survive_reclaiming_the_written_prefix() {
        let mut pool = BufferPool::default();
        let mut output = Output::default();
        output.append(&[b'x'; 60], 1000, &mut pool).unwrap();
        let mut socket = Socket { taken: Vec::new(), room: 30 };
        output.flush(&mut socket, &mut pool, &mut Tally::default()).unwrap();
        // Growing past the capacity reclaims the 30 written bytes first.
        output.append(&[b'y'; 200], 1000, &mut pool).unwrap();
        assert_eq!(output.cut_at_message_boundary(), 200);
        assert_eq!(output.len(), 30);
    }

    #[test]
    fn the_cap_counts_unwritten_bytes_only() {
        let mut pool = BufferPool::default();
        let mut output = Output::default();
        output.append(&[1; 8], 10, &mut pool).unwrap();
        assert_eq!(output.append(&[2; 3], 10, &mut pool), Err(OverCap));
        let mut socket = Socket { taken: Vec::new(), room: 5 };
        output.flush(&mut socket, &mut pool, &mut Tally::default()).unwrap();
        assert_eq!(output.append(&[2; 7], 10, &mut pool), Ok(Appended::Behind));
        assert_eq!(output.len(), 10);
        assert_eq!(output.discard(&mut pool), 10);
        assert!(output.is_empty());
    }

    #[test]
    fn lines_are_prefixed_and_terminated() {
        let mut batch = Batch::new();
        batch.push("Mina", b"hello");
        batch.push("Mina", b"again");
        assert_eq!(batch.lines(), b"Mina:hello\nMina:again\n");
        assert_eq!(batch.len(), 2);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let mut batch = Batch::new();
        batch.push("Mina", b"a\xffb");
        assert_eq!(batch.lines(), "Mina:a\u{FFFD}b\n".as_bytes());
    }

    #[test]
    fn controls_separators_and_overrides_are_replaced_for_both_transports() {
        let mut batch = Batch::new();
        batch.push("Mina", b"hi\rBob:I owe you\x1b[2J");
        batch.push("Mina", "a\u{2028}error: x\u{202e}b\tc".as_bytes());
        let lines = "Mina:hi\u{FFFD}Bob:I owe you\u{FFFD}[2J\nMina:a\u{FFFD}error: x\u{FFFD}b\tc\n";
        assert_eq!(batch.lines(), lines.as_bytes());
        batch.encode_frames();
        let (first, second) = lines.split_at(lines.find('\n').unwrap() + 1);
        let mut frames = Vec::new();
        websocket::encode_text_frame(&mut frames, first.as_bytes());
        websocket::encode_text_frame(&mut frames, second.as_bytes());
        assert_eq!(batch.frames(), frames);
    }

    #[test]
    fn frames_hold_one_text_frame_per_message() {
        let mut batch = Batch::new();
        batch.push("Mina", b"hi");
        batch.push("Ola", b"yo");
        batch.encode_frames();
        assert_eq!(batch.frames(), b"\x81\x08Mina:hi\n\x81\x07Ola:yo\n");
        batch.clear();
        assert!(batch.is_empty());
        assert!(batch.frames().is_empty());
    }
}
