//! Line framing for the TCP transport: turns a byte stream into chat lines,
//! with no sockets in it.
//!
//! Lines end in `\n`; a trailing `\r` is removed; empty lines are ignored;
//! a line longer than the limit is an error and nothing of it is returned.
//! Complete lines are handed out straight from the caller's read buffer;
//! only a line cut by the end of a read is copied, into `partial`, which is
//! released as soon as the line completes so an idle connection holds no
//! buffer.

use memchr::memchr;

/// A line was longer than the configured limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong {
    pub max_line: usize,
}

impl std::fmt::Display for LineTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line longer than {} bytes", self.max_line)
    }
}

/// Where the framer is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Right after the handshake object: spaces, tabs and `\r` up to and
    /// including the first `\n` are skipped (PROTOCOL §2), so a handshake
    /// typed as a line does not become an empty message.
    SkippingHandshakeTail,
    /// Ordinary line framing.
    Lines,
}

/// Incremental line splitter for one connection.
#[derive(Debug)]
pub struct LineFramer {
    phase: Phase,
    /// The start of a line whose `\n` has not arrived yet.
    partial: Vec<u8>,
    max_line: usize,
}

impl LineFramer {
    /// A framer for the bytes that follow a handshake.
    pub fn after_handshake(max_line: usize) -> Self {
        LineFramer { phase: Phase::SkippingHandshakeTail, partial: Vec::new(), max_line }
    }

    /// A framer for a plain line stream.
    pub fn new(max_line: usize) -> Self {
        LineFramer { phase: Phase::Lines, partial: Vec::new(), max_line }
    }

    /// Capacity of the buffer held for an incomplete line.
    pub fn held_capacity(&self) -> usize {
        self.partial.capacity()
    }

    /// Bytes of an incomplete line held.
    pub fn held(&self) -> usize {
        self.partial.len()
    }

    /// Feeds received bytes and calls `on_line` with each complete,
    /// non-empty line, without its `\r\n`. Lines may not be valid UTF-8;
    /// the caller decides what to do with that.
    ///
    /// On error, lines before the long one have been handed out and the
    /// framer must not be used again.
    pub fn feed(&mut self, mut input: &[u8], mut on_line: impl FnMut(&[u8])) -> Result<(), LineTooLong> {
        if self.phase == Phase::SkippingHandshakeTail {
            input = self.skip_handshake_tail(input);
        }
        if !self.partial.is_empty() {
            match memchr(b'\n', input) {
                Some(end) => {
                    self.partial.extend_from_slice(&input[..end]);
                    if strip_cr(&self.partial).len() > self.max_line {
                        return Err(self.too_long());
                    }
                    emit(&self.partial, &mut on_line);
                    self.partial = Vec::new();
                    input = &input[end + 1..];
                }
                None => return self.hold(input),
            }
        }
        while let Some(end) = memchr(b'\n', input) {
            let line = &input[..end];
            if strip_cr(line).len() > self.max_line {
                return Err(self.too_long());
            }
            emit(line, &mut on_line);
            input = &input[end + 1..];
        }
        self.hold(input)
    }

    /// Keeps the start of an unfinished line, if it is not already too long.
    fn hold(&mut self, rest: &[u8]) -> Result<(), LineTooLong> {
        let held = self.partial.len() + rest.len();
        // A line of exactly `max_line` may be waiting for the `\n` after its `\r`.
        let ends_in_cr = rest.last().or(self.partial.last()) == Some(&b'\r');
        if held > self.max_line && !(held == self.max_line + 1 && ends_in_cr) {
            return Err(self.too_long());
        }
        self.partial.extend_from_slice(rest);
        Ok(())
    }

    fn skip_handshake_tail<'a>(&mut self, input: &'a [u8]) -> &'a [u8] {
        for (index, &byte) in input.iter().enumerate() {
            match byte {
                b' ' | b'\t' | b'\r' => continue,
                b'\n' => {
                    self.phase = Phase::Lines;
                    return &input[index + 1..];
                }
                _ => {
                    self.phase = Phase::Lines;
                    return &input[index..];
                }
            }
        }
        &[]
    }

    fn too_long(&mut self) -> LineTooLong {
        self.partial = Vec::new();
        LineTooLong { max_line: self.max_line }
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn emit(line: &[u8], on_line: &mut impl FnMut(&[u8])) {
    let line = strip_cr(line);
    if !line.is_empty() {
        on_line(line);
    }
}

/// Splits one WebSocket message into chat lines with the same rules as the
/// TCP stream (split at `\n`, trailing `\r` removed, empty lines ignored).
pub fn for_each_line(message: &[u8], mut on_line: impl FnMut(&[u8])) {
    for line in message.split(|&byte| byte == b'\n') {
        emit(line, &mut on_line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(framer: &mut LineFramer, input: &[u8]) -> Result<Vec<String>, LineTooLong> {
        let mut out = Vec::new();
        framer.feed(input, |line| out.push(String::from_utf8_lossy(line).into_owned()))?;
        Ok(out)
    }

    #[test]
    fn splits_strips_cr_and_skips_empty_lines() {
        let mut framer = LineFramer::new(100);
        assert_eq!(lines(&mut framer, b"a\r\n\n\r\nb\nc").unwrap(), ["a", "b"]);
        assert_eq!(lines(&mut framer, b"d\ne\n").unwrap(), ["cd", "e"]);
        assert_eq!(framer.held_capacity(), 0, "no buffer is kept once the line completes");
    }

    #[test]
    fn skips_the_blank_tail_of_a_handshake_line_only() {
        let mut framer = LineFramer::after_handshake(100);
        assert_eq!(lines(&mut framer, b" \t").unwrap(), Vec::<String>::new());
        assert_eq!(lines(&mut framer, b"\r\n  x\n").unwrap(), ["  x"]);
        let mut framer = LineFramer::after_handshake(100);
        assert_eq!(lines(&mut framer, b"  hi\n").unwrap(), ["hi"]);
    }

    #[test]
    fn the_limit_applies_to_the_line_without_its_ending() {
        let mut framer = LineFramer::new(4);
        assert_eq!(lines(&mut framer, b"abcd\r\nab").unwrap(), ["abcd"]);
        assert_eq!(lines(&mut framer, b"cd\r").unwrap(), Vec::<String>::new());
        assert_eq!(lines(&mut framer, b"\n").unwrap(), ["abcd"]);
        assert_eq!(lines(&mut framer, b"ok\nabcde\n"), Err(LineTooLong { max_line: 4 }));
        let mut framer = LineFramer::new(4);
        assert_eq!(lines(&mut framer, b"abc"), Ok(vec![]));
        assert_eq!(lines(&mut framer, b"de"), Err(LineTooLong { max_line: 4 }));
        let mut framer = LineFramer::new(4);
        assert_eq!(lines(&mut framer, b"abc"), Ok(vec![]));
        assert_eq!(lines(&mut framer, b"de\n"), Err(LineTooLong { max_line: 4 }));
    }

    #[test]
    fn websocket_messages_split_like_the_stream() {
        let mut out = Vec::new();
        for_each_line(b"one\r\ntwo\n\nthree\n", |line| out.push(line.to_vec()));
        assert_eq!(out, [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
    }
}
