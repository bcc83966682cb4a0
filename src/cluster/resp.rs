//! RESP2, the protocol machat speaks to Redis in cluster mode: replies in
//! ([`parse`]), commands out ([`encode_command`]), with no sockets in it.
//!
//! # Reading replies
//!
//! [`parse`] keeps the project's parsing contract (`crate::parse`) the way
//! `http::parse_request` does: it is stateless, so on `Partial` the caller
//! keeps the bytes and calls again once more have arrived; on `Complete`
//! the first `consumed` bytes were the reply and the rest (the next reply,
//! or the start of it) is the caller's. An error means the stream can no
//! longer be read in step, so the connection has to be dropped.
//!
//! Only RESP2 is read: machat never sends `HELLO 3`, so a RESP3 type byte
//! is a fault and is refused naming it, as is any other byte that does not
//! start a reply. Beyond the type bytes the reader is as strict as hiredis
//! (Redis's own C client), so a peer that is not Redis, or a stream that
//! lost its place, is caught at the first wrong byte rather than read on:
//!
//! - every line ends in CR LF; a CR followed by anything else, or an LF
//!   without its CR, is an error;
//! - integers and lengths are canonical: an optional `-`, then digits with
//!   no leading zero, and never `-0`; they must fit in an `i64`;
//! - the only negative length is -1 (nil; `$-1` and `*-1` both read as
//!   [`Reply::Nil`]);
//! - a bulk string's body must be followed by CR LF.
//!
//! Errors are reported as soon as the wrong byte is in the buffer, without
//! waiting for the rest of the reply. Simple strings and error replies
//! whose bytes are not UTF-8 are not errors: their framing is intact, and
//! Redis can send such bytes (an error reply quotes a key truncated to 128
//! bytes, which can cut a character in two), so they are read lossily, the
//! bad bytes becoming U+FFFD. They are status words and messages for logs,
//! and machat's data travels in bulk strings, which are bytes as sent.
//!
//! # What bounds the reader
//!
//! [`Limits`] bound what one reply can make the reader do or allocate:
//! a bulk string's length, an array's element count, how deeply arrays
//! nest, and how long a simple string, error or integer line can be. A
//! declared length over its limit is refused as soon as the length line is
//! complete, before any of the body arrives; a line with no end in sight
//! is refused once the limit is passed. They do not bound a whole reply
//! (a million bulk strings of 64 MiB each is within them): the caller
//! bounds that by how much it is willing to buffer.
//!
//! # What a call costs
//!
//! `parse` reads a reply in two passes over the same code (the `Mode` trait):
//!
//! 1. the first pass finds where the reply ends and checks every byte it
//!    reads, and allocates nothing (its values are `()`). A bulk string's
//!    body is not read, only stepped over by its length, so the pass costs
//!    one memchr per line plus a few comparisons per element. While the
//!    reply is incomplete, this is all a call does;
//! 2. once the first pass has found the whole reply, the second builds it:
//!    one allocation per bulk string, simple string, error and non-empty
//!    array, each of exactly the size of what is in the buffer. An array's
//!    `Vec` is sized by its declared count only now, when every element
//!    has been seen, so it is never larger than the bytes that arrived
//!    justify (each element takes at least 3 bytes of input, and a
//!    [`Reply`] is 32 bytes).
//!
//! A reply that arrives over many reads is scanned again from its start
//! on each call. For a large bulk string that is cheap (its header, then a
//! length check); for an array of n elements it is O(n) per call, so an
//! array arriving in k pieces costs O(n·k) comparisons in all, bounded by
//! `max_array_len`. The replies machat reads are single values and
//! three-element pub/sub messages, for which this is a few dozen bytes.

use std::fmt;

use memchr::memchr2;

use crate::parse::{Parsed, Status};

/// One reply from Redis, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A simple string (`+OK`), read lossily as UTF-8 (module docs).
    Simple(String),
    /// An error reply (`-ERR unknown command`), read lossily as UTF-8.
    Error(String),
    /// An integer reply (`:3`).
    Integer(i64),
    /// A bulk string (`$5 hello`), bytes exactly as Redis sent them.
    Bulk(Vec<u8>),
    /// A null bulk string (`$-1`) or a null array (`*-1`): RESP2 has both,
    /// and they mean the same thing, "no value".
    Nil,
    /// An array (`*3 ...`): pub/sub messages, multi-value replies.
    Array(Vec<Reply>),
}

/// What one reply may ask of the reader; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest bulk string, in bytes.
    pub max_bulk_len: usize,
    /// The most elements in one array.
    pub max_array_len: usize,
    /// How many arrays may enclose one another: 1 allows an array of
    /// scalars (a pub/sub message), 0 allows no array at all. Values
    /// above [`Limits::DEPTH_CEILING`] count as the ceiling.
    pub max_depth: usize,
    /// The longest simple string, error or integer line, in bytes, without
    /// its type byte and CR LF.
    pub max_line_len: usize,
}

impl Limits {
    /// An eighth of Redis's own bound on what it accepts
    /// (`proto-max-bulk-len`, 512 MiB); the largest bulk string machat
    /// reads is one node's batch of chat lines for one room in one turn.
    pub const DEFAULT_MAX_BULK_LEN: usize = 64 * 1024 * 1024;
    /// 2^20 elements, far beyond the three of a pub/sub message.
    pub const DEFAULT_MAX_ARRAY_LEN: usize = 1024 * 1024;
    /// Pub/sub messages are one array deep; this leaves room for any
    /// reply to the commands cluster mode sends.
    pub const DEFAULT_MAX_DEPTH: usize = 8;
    /// Status words and error messages are short; Redis truncates the user
    /// data it quotes in errors to 128 bytes.
    pub const DEFAULT_MAX_LINE_LEN: usize = 64 * 1024;
    /// The deepest nesting read whatever `max_depth` says: the reader
    /// recurses once per level, and this bounds its stack use whatever a
    /// peer sends.
    pub const DEPTH_CEILING: usize = 64;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: Self::DEFAULT_MAX_BULK_LEN,
            max_array_len: Self::DEFAULT_MAX_ARRAY_LEN,
            max_depth: Self::DEFAULT_MAX_DEPTH,
            max_line_len: Self::DEFAULT_MAX_LINE_LEN,
        }
    }
}

/// Which part of a reply an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The text of a `+` line.
    SimpleString,
    /// The text of a `-` line.
    ErrorReply,
    /// The number of a `:` line.
    Integer,
    /// The length after `$`.
    BulkLength,
    /// The element count after `*`.
    ArrayLength,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::SimpleString => "simple string",
            Part::ErrorReply => "error reply",
            Part::Integer => "integer reply",
            Part::BulkLength => "bulk string length",
            Part::ArrayLength => "array length",
        })
    }
}

/// Why bytes are not a RESP2 reply, or not one this reader accepts. `at`
/// is an offset into the buffer given to [`parse`], which starts with the
/// reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespError {
    /// The byte where a reply starts is not one of `+ - : $ *`.
    UnknownType { found: u8, at: usize },
    /// A simple string, error or integer line is longer than
    /// [`Limits::max_line_len`].
    LineTooLong { part: Part, limit: usize },
    /// A bulk string declares more bytes than [`Limits::max_bulk_len`].
    BulkTooLong { length: i64, limit: usize },
    /// An array declares more elements than [`Limits::max_array_len`].
    ArrayTooLong { length: i64, limit: usize },
    /// Arrays nest deeper than [`Limits::max_depth`] (or the ceiling).
    TooDeep { limit: usize },
    /// A number has a byte that is not a digit (nor its leading `-`).
    NotADigit { part: Part, found: u8, at: usize },
    /// A number has no digits: its line is empty, or only `-`.
    NoDigits { part: Part, at: usize },
    /// A number starts with 0 and goes on.
    LeadingZero { part: Part, at: usize },
    /// A number is `-0`, or starts with it.
    NegativeZero { part: Part, at: usize },
    /// A number does not fit in an `i64`.
    Overflow { part: Part, at: usize },
    /// A length below -1, the only negative length RESP2 has (nil).
    NegativeLength { part: Part, length: i64, at: usize },
    /// A CR not followed by LF.
    CrWithoutLf { part: Part, found: u8, at: usize },
    /// An LF with no CR before it.
    LfWithoutCr { part: Part, at: usize },
    /// A bulk string's body is not followed by CR LF.
    BulkNotTerminated { length: usize, found: u8, at: usize },
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RespError::UnknownType { found, at } => {
                write!(f, "at byte {at}: {} does not start a RESP2 reply (+ - : $ *)", Byte(found))?;
                match resp3_type(found) {
                    Some(name) => write!(f, "; it starts a RESP3 {name}, and this client speaks RESP2 only"),
                    None => Ok(()),
                }
            }
            RespError::LineTooLong { part, limit } => write!(f, "{part} longer than the {limit}-byte limit"),
            RespError::BulkTooLong { length, limit } => {
                write!(f, "bulk string of {length} bytes is over the {limit}-byte limit")
            }
            RespError::ArrayTooLong { length, limit } => {
                write!(f, "array of {length} elements is over the {limit}-element limit")
            }
            RespError::TooDeep { limit } => write!(f, "arrays nested more than {limit} deep"),
            RespError::NotADigit { part, found, at } => {
                write!(f, "at byte {at}: {part} has {} where a digit belongs", Byte(found))
            }
            RespError::NoDigits { part, at } => write!(f, "at byte {at}: {part} has no digits"),
            RespError::LeadingZero { part, at } => write!(f, "at byte {at}: {part} has a leading zero"),
            RespError::NegativeZero { part, at } => {
                write!(f, "at byte {at}: {part} has a zero after its minus sign")
            }
            RespError::Overflow { part, at } => {
                write!(f, "at byte {at}: {part} does not fit in a signed 64-bit integer")
            }
            RespError::NegativeLength { part, length, at } => {
                write!(f, "at byte {at}: {part} is {length}; the only negative length is -1 (nil)")
            }
            RespError::CrWithoutLf { part, found, at } => {
                write!(f, "at byte {at}: {} after the CR that ends the {part}, where LF belongs", Byte(found))
            }
            RespError::LfWithoutCr { part, at } => {
                write!(f, "at byte {at}: LF without a CR before it in the {part}")
            }
            RespError::BulkNotTerminated { length, found, at } => {
                write!(
                    f,
                    "at byte {at}: bulk string of {length} bytes is followed by {}, not CR LF",
                    Byte(found)
                )
            }
        }
    }
}

impl std::error::Error for RespError {}

/// A byte as an error message shows it: the character too when it has one
/// that prints.
struct Byte(u8);

impl fmt::Display for Byte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            b'\r' => f.write_str("CR (0x0d)"),
            b'\n' => f.write_str("LF (0x0a)"),
            byte @ b' '..=b'~' => write!(f, "'{}' (0x{byte:02x})", char::from(byte)),
            byte => write!(f, "0x{byte:02x}"),
        }
    }
}

/// The RESP3 type a byte starts, if any, so that a server answering in
/// RESP3 is named as such rather than as garbage.
fn resp3_type(byte: u8) -> Option<&'static str> {
    Some(match byte {
        b'_' => "null",
        b',' => "double",
        b'#' => "boolean",
        b'!' => "blob error",
        b'=' => "verbatim string",
        b'(' => "big number",
        b'%' => "map",
        b'~' => "set",
        b'>' => "push",
        b'|' => "attribute",
        _ => return None,
    })
}

/// Reads one reply from the start of `buffer`; see the module docs for the
/// contract, the rules and the cost.
pub fn parse(buffer: &[u8], limits: &Limits) -> Parsed<Reply, RespError> {
    let reader = Reader { buffer, limits, max_depth: limits.max_depth.min(Limits::DEPTH_CEILING) };
    // The first pass allocates nothing, so a reply still arriving costs
    // only this scan however large it says it will be.
    if reader.value::<Scan>(0, 0)?.is_none() {
        return Ok(Status::Partial);
    }
    match reader.value::<Build>(0, 0)? {
        Some((value, consumed)) => Ok(Status::Complete { value, consumed }),
        None => unreachable!("the second pass reads the same bytes the first found complete"),
    }
}

/// What a step of reading yields: the value and the offset just past it,
/// or `None` when the buffer ends first.
type Step<T> = Result<Option<(T, usize)>, RespError>;

/// What the reader makes of what it has checked: nothing, in the pass that
/// only finds the end ([`Scan`]), or the reply ([`Build`]). One reader
/// serves both, so the two passes cannot disagree on what a reply is.
trait Mode {
    type Value;
    /// An array's elements while they are read.
    type Elements;
    fn simple(text: &[u8]) -> Self::Value;
    fn error(text: &[u8]) -> Self::Value;
    fn integer(value: i64) -> Self::Value;
    fn bulk(body: &[u8]) -> Self::Value;
    fn nil() -> Self::Value;
    /// Called once an array's count is known, before its elements.
    fn elements(count: usize) -> Self::Elements;
    fn push(elements: &mut Self::Elements, element: Self::Value);
    fn array(elements: Self::Elements) -> Self::Value;
}

/// The first pass: checks and measures, keeps nothing.
struct Scan;

impl Mode for Scan {
    type Value = ();
    type Elements = ();
    fn simple(_: &[u8]) {}
    fn error(_: &[u8]) {}
    fn integer(_: i64) {}
    fn bulk(_: &[u8]) {}
    fn nil() {}
    fn elements(_: usize) {}
    fn push(_: &mut (), _: ()) {}
    fn array(_: ()) {}
}

/// The second pass: runs only on a reply the first found complete.
struct Build;

impl Mode for Build {
    type Value = Reply;
    type Elements = Vec<Reply>;
    fn simple(text: &[u8]) -> Reply {
        Reply::Simple(String::from_utf8_lossy(text).into_owned())
    }
    fn error(text: &[u8]) -> Reply {
        Reply::Error(String::from_utf8_lossy(text).into_owned())
    }
    fn integer(value: i64) -> Reply {
        Reply::Integer(value)
    }
    fn bulk(body: &[u8]) -> Reply {
        Reply::Bulk(body.to_vec())
    }
    fn nil() -> Reply {
        Reply::Nil
    }
    fn elements(count: usize) -> Vec<Reply> {
        // Safe to trust the count here and only here: the first pass has
        // seen all `count` elements in the buffer.
        Vec::with_capacity(count)
    }
    fn push(elements: &mut Vec<Reply>, element: Reply) {
        elements.push(element);
    }
    fn array(elements: Vec<Reply>) -> Reply {
        Reply::Array(elements)
    }
}

/// One reply's bytes, read from the start.
struct Reader<'a> {
    buffer: &'a [u8],
    limits: &'a Limits,
    /// `limits.max_depth`, held to the ceiling.
    max_depth: usize,
}

impl<'a> Reader<'a> {
    /// The value starting at `at`, inside `depth` arrays.
    fn value<M: Mode>(&self, at: usize, depth: usize) -> Step<M::Value> {
        let Some(&kind) = self.buffer.get(at) else { return Ok(None) };
        let after_kind = at + 1;
        Ok(match kind {
            b'+' => self.line(after_kind, Part::SimpleString)?.map(|(text, next)| (M::simple(text), next)),
            b'-' => self.line(after_kind, Part::ErrorReply)?.map(|(text, next)| (M::error(text), next)),
            b':' => self.number(after_kind, Part::Integer)?.map(|(value, next)| (M::integer(value), next)),
            b'$' => return self.bulk::<M>(after_kind),
            b'*' => return self.array::<M>(after_kind, depth),
            found => return Err(RespError::UnknownType { found, at }),
        })
    }

    /// A simple string's or error's text, from `start` to its CR LF.
    fn line(&self, start: usize, part: Part) -> Step<&'a [u8]> {
        let limit = self.limits.max_line_len;
        let rest = &self.buffer[start..];
        // Looking no further than one byte past the limit keeps a huge
        // buffer from being searched again on every call.
        let window = &rest[..rest.len().min(limit.saturating_add(1))];
        match memchr2(b'\r', b'\n', window) {
            Some(end) if window[end] == b'\n' => Err(RespError::LfWithoutCr { part, at: start + end }),
            Some(end) => {
                let cr = start + end;
                Ok(self.lf_after(cr, part)?.map(|next| (&self.buffer[start..cr], next)))
            }
            None if rest.len() > limit => Err(RespError::LineTooLong { part, limit }),
            None => Ok(None),
        }
    }

    /// An integer or a length, from `start` to its CR LF, checked byte by
    /// byte so that a wrong one is refused before the line ends.
    fn number(&self, start: usize, part: Part) -> Step<i64> {
        // Lengths need no line limit: canonical and within an i64, they
        // cannot be longer than 20 bytes.
        let line_limit = if part == Part::Integer { self.limits.max_line_len } else { usize::MAX };
        let negative = self.buffer.get(start) == Some(&b'-');
        let first_digit = start + usize::from(negative);
        let mut value: i64 = 0;
        let mut at = start;
        loop {
            let Some(&byte) = self.buffer.get(at) else { return Ok(None) };
            if byte == b'\r' {
                break;
            }
            if at - start >= line_limit {
                return Err(RespError::LineTooLong { part, limit: line_limit });
            }
            match byte {
                b'-' if at == start => {}
                b'0'..=b'9' => {
                    if at > first_digit && self.buffer[first_digit] == b'0' {
                        return Err(RespError::LeadingZero { part, at: first_digit });
                    }
                    if negative && byte == b'0' && at == first_digit {
                        return Err(RespError::NegativeZero { part, at });
                    }
                    // Accumulating negative numbers downwards reaches
                    // i64::MIN, whose magnitude is no i64.
                    let digit = i64::from(byte - b'0');
                    value = value
                        .checked_mul(10)
                        .and_then(
                            |tens| if negative { tens.checked_sub(digit) } else { tens.checked_add(digit) },
                        )
                        .ok_or(RespError::Overflow { part, at: start })?;
                }
                found => return Err(RespError::NotADigit { part, found, at }),
            }
            at += 1;
        }
        if at == first_digit {
            return Err(RespError::NoDigits { part, at });
        }
        Ok(self.lf_after(at, part)?.map(|next| (value, next)))
    }

    /// The offset after the LF that must follow the CR at `cr`.
    fn lf_after(&self, cr: usize, part: Part) -> Result<Option<usize>, RespError> {
        match self.buffer.get(cr + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some(cr + 2)),
            Some(&found) => Err(RespError::CrWithoutLf { part, found, at: cr + 1 }),
        }
    }

    /// A declared length: `None` for -1 (nil), refused below that.
    fn length(declared: i64, part: Part, at: usize) -> Result<Option<u64>, RespError> {
        match declared {
            -1 => Ok(None),
            ..-1 => Err(RespError::NegativeLength { part, length: declared, at }),
            _ => Ok(Some(declared.unsigned_abs())),
        }
    }

    /// A bulk string (or nil), from just after its `$`.
    fn bulk<M: Mode>(&self, start: usize) -> Step<M::Value> {
        let Some((declared, body)) = self.number(start, Part::BulkLength)? else { return Ok(None) };
        let Some(length) = Self::length(declared, Part::BulkLength, start)? else {
            return Ok(Some((M::nil(), body)));
        };
        let limit = self.limits.max_bulk_len;
        // Refused now, before its body arrives: waiting for it would mean
        // the caller buffering all of it.
        let length = usize::try_from(length)
            .ok()
            .filter(|&length| length <= limit)
            .ok_or(RespError::BulkTooLong { length: declared, limit })?;
        // The body is stepped over, not read: it may still be arriving.
        let end = body.saturating_add(length);
        match (self.buffer.get(end), self.buffer.get(end.saturating_add(1))) {
            (None, _) | (Some(b'\r'), None) => Ok(None),
            (Some(b'\r'), Some(b'\n')) => Ok(Some((M::bulk(&self.buffer[body..end]), end + 2))),
            (Some(b'\r'), Some(&found)) => Err(RespError::BulkNotTerminated { length, found, at: end + 1 }),
            (Some(&found), _) => Err(RespError::BulkNotTerminated { length, found, at: end }),
        }
    }

    /// An array (or nil), from just after its `*`, inside `depth` arrays.
    fn array<M: Mode>(&self, start: usize, depth: usize) -> Step<M::Value> {
        let Some((declared, mut next)) = self.number(start, Part::ArrayLength)? else { return Ok(None) };
        let Some(count) = Self::length(declared, Part::ArrayLength, start)? else {
            return Ok(Some((M::nil(), next)));
        };
        let limit = self.limits.max_array_len;
        let count = usize::try_from(count)
            .ok()
            .filter(|&count| count <= limit)
            .ok_or(RespError::ArrayTooLong { length: declared, limit })?;
        if depth >= self.max_depth {
            return Err(RespError::TooDeep { limit: self.max_depth });
        }
        let mut elements = M::elements(count);
        for _ in 0..count {
            let Some((element, after)) = self.value::<M>(next, depth + 1)? else { return Ok(None) };
            M::push(&mut elements, element);
            next = after;
        }
        Ok(Some((M::array(elements), next)))
    }
}

/// Appends one command to `out`: a RESP array of bulk strings, the form
/// Redis reads every command in (`encode_command(out, &[b"PING"])`).
/// Several commands appended to one buffer leave in one write, and Redis
/// answers them in order.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let header_len = |count: usize| 1 + Decimal::from(count).as_bytes().len() + 2;
    out.reserve(
        header_len(args.len()) + args.iter().map(|arg| header_len(arg.len()) + arg.len() + 2).sum::<usize>(),
    );
    push_header(out, b'*', args.len());
    for arg in args {
        push_header(out, b'$', arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

fn push_header(out: &mut Vec<u8>, kind: u8, count: usize) {
    out.push(kind);
    out.extend_from_slice(Decimal::from(count).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// An integer's decimal digits, for passing a number as a command
/// argument without a `String`: Redis takes every argument as a bulk
/// string and reads numbers from their digits.
///
/// ```text
/// let ttl = Decimal::from(30_000u64);
/// encode_command(&mut out, &[b"SET", key, node, b"NX", b"PX", ttl.as_bytes()]);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Decimal {
    /// The digits are right-aligned: `digits[start..]`. 20 bytes hold
    /// u64::MAX and i64::MIN (19 digits and a sign).
    digits: [u8; 20],
    start: usize,
}

impl Decimal {
    fn new(magnitude: u64, negative: bool) -> Self {
        let mut digits = [0; 20];
        let mut start = digits.len();
        let mut rest = magnitude;
        loop {
            start -= 1;
            digits[start] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        if negative {
            start -= 1;
            digits[start] = b'-';
        }
        Decimal { digits, start }
    }

    /// The digits, with a leading `-` if negative.
    pub fn as_bytes(&self) -> &[u8] {
        &self.digits[self.start..]
    }
}

impl From<i64> for Decimal {
    fn from(value: i64) -> Self {
        Decimal::new(value.unsigned_abs(), value < 0)
    }
}

impl From<u64> for Decimal {
    fn from(value: u64) -> Self {
        Decimal::new(value, false)
    }
}

impl From<usize> for Decimal {
    fn from(value: usize) -> Self {
        // usize is at most 64 bits on every target Rust supports.
        Decimal::new(value as u64, false)
    }
}

impl AsRef<[u8]> for Decimal {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod oracle;
