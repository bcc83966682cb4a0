//! Encoding chat messages once for every recipient.
//!
//! A [`Batch`] collects the messages one sender produced in one read, as
//! `<name>:<text>\n` lines back to back: the exact bytes every TCP member
//! receives. When the room has WebSocket members the same messages are
//! framed once more, each as one text frame. Either way a message is
//! encoded once per transport, never once per recipient, and each recipient
//! gets the whole batch with one copy.

use crate::websocket;

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

    /// Adds one message from `sender`. Text that is not valid UTF-8 has each
    /// bad sequence replaced with U+FFFD, so every delivery is valid UTF-8.
    pub fn push(&mut self, sender: &str, text: &[u8]) {
        debug_assert!(self.frames.is_empty(), "push after frames were encoded");
        self.lines.extend_from_slice(sender.as_bytes());
        self.lines.push(b':');
        match std::str::from_utf8(text) {
            Ok(valid) => self.lines.extend_from_slice(valid.as_bytes()),
            Err(_) => self.lines.extend_from_slice(String::from_utf8_lossy(text).as_bytes()),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
