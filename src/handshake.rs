//! The join handshake: the JSON object `{"name": ..., "room": ...}` a client
//! sends first, as a pure state machine with no sockets in it.
//!
//! Both transports feed the same [`Handshake`]: TCP feeds raw bytes as they
//! arrive (the object may be split anywhere and may be followed by chat lines
//! in the same read), WebSocket feeds its first message whole
//! ([`parse_message`]). The scanner finds where the object ends without
//! parsing it, so bytes after the closing `}` are handed back untouched; only
//! the complete object is given to `serde_json`. [`Handshake::feed`] keeps
//! the parsing contract of [`crate::parse`].

use std::fmt;

use crate::parse::{Parsed, Status};

/// The handshake must be complete within this many bytes (PROTOCOL §2).
pub const MAX_HANDSHAKE_BYTES: usize = 4096;
/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 32;
/// Longest room name, in characters.
pub const MAX_ROOM_CHARS: usize = 64;

/// A validated request to join a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    pub name: String,
    pub room: String,
}

/// Why a handshake was refused. Each variant has its own reason text,
/// which the client receives as `error: <reason>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The first non-blank byte was not `{`.
    NotAnObject,
    /// The object is not valid JSON (serde_json's message, one line).
    MalformedJson(String),
    /// A WebSocket handshake message ended before its object did.
    Incomplete,
    /// Something other than whitespace followed the object in a WebSocket message.
    TrailingData,
    MissingField(&'static str),
    NotAString(&'static str),
    Invalid {
        field: &'static str,
        problem: FieldProblem,
    },
    NameReserved,
    NameTaken {
        name: String,
        room: String,
    },
    TooLarge,
    TimedOut,
}

/// What is wrong with a `name` or `room` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldProblem {
    Empty,
    TooLong { max_chars: usize },
    ControlCharacter,
    Colon,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use HandshakeError::*;
        match self {
            NotAnObject => {
                write!(f, "handshake must be a JSON object like {{\"name\":\"Mina\",\"room\":\"dev\"}}")
            }
            MalformedJson(detail) => write!(f, "malformed handshake JSON: {detail}"),
            Incomplete => write!(f, "handshake message ends before its JSON object does"),
            TrailingData => write!(f, "unexpected data after the handshake JSON object"),
            MissingField(field) => write!(f, "handshake is missing the \"{field}\" field"),
            NotAString(field) => write!(f, "handshake field \"{field}\" must be a string"),
            Invalid { field, problem } => match problem {
                FieldProblem::Empty => write!(f, "{field} is empty"),
                FieldProblem::TooLong { max_chars } => {
                    write!(f, "{field} is longer than {max_chars} characters")
                }
                FieldProblem::ControlCharacter => write!(f, "{field} contains a control character"),
                FieldProblem::Colon => write!(f, "{field} contains ':'"),
            },
            NameReserved => write!(f, "name \"error\" is reserved"),
            NameTaken { name, room } => {
                write!(f, "name \"{name}\" is already taken in room \"{room}\"")
            }
            TooLarge => write!(f, "handshake is larger than {MAX_HANDSHAKE_BYTES} bytes"),
            TimedOut => write!(f, "handshake timed out"),
        }
    }
}

impl std::error::Error for HandshakeError {}

impl HandshakeError {
    /// The reason it is counted under in `/metrics`.
    pub fn reason(&self) -> HandshakeReason {
        use HandshakeError::*;
        match self {
            NotAnObject | MalformedJson(_) | Incomplete | TrailingData => HandshakeReason::Malformed,
            MissingField(_) | NotAString(_) => HandshakeReason::MissingField,
            Invalid { field: "name", .. } | NameReserved => HandshakeReason::InvalidName,
            Invalid { .. } => HandshakeReason::InvalidRoom,
            NameTaken { .. } => HandshakeReason::NameTaken,
            TooLarge => HandshakeReason::TooLarge,
            TimedOut => HandshakeReason::Timeout,
        }
    }
}

/// The kinds of handshake failure `machat_handshake_errors_total` counts,
/// one label each. Defined next to the errors so the labels cannot drift
/// from them: the counters are an array indexed by this enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeReason {
    Malformed,
    MissingField,
    InvalidName,
    InvalidRoom,
    NameTaken,
    TooLarge,
    Timeout,
}

impl HandshakeReason {
    /// Every reason, in counter order.
    pub const ALL: [HandshakeReason; 7] = [
        HandshakeReason::Malformed,
        HandshakeReason::MissingField,
        HandshakeReason::InvalidName,
        HandshakeReason::InvalidRoom,
        HandshakeReason::NameTaken,
        HandshakeReason::TooLarge,
        HandshakeReason::Timeout,
    ];

    /// The metric label.
    pub const fn label(self) -> &'static str {
        match self {
            HandshakeReason::Malformed => "malformed",
            HandshakeReason::MissingField => "missing_field",
            HandshakeReason::InvalidName => "invalid_name",
            HandshakeReason::InvalidRoom => "invalid_room",
            HandshakeReason::NameTaken => "name_taken",
            HandshakeReason::TooLarge => "too_large",
            HandshakeReason::Timeout => "timeout",
        }
    }
}

/// Where the scanner is inside the JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Skipping blanks before the opening `{`.
    BeforeObject,
    /// Inside the object, `depth` levels of `{`/`[` deep, outside any string.
    InValue { depth: u32 },
    /// Inside a string at `depth`.
    InString { depth: u32 },
    /// Just after a backslash inside a string at `depth`.
    InEscape { depth: u32 },
}

/// Incremental handshake reader. Keeps the bytes of an object only while it
/// spans several reads; an object that arrives whole is parsed in place.
#[derive(Debug)]
pub struct Handshake {
    scan: Scan,
    /// Bytes of an object that began in an earlier read (blanks before it included).
    held: Vec<u8>,
}

impl Default for Handshake {
    fn default() -> Self {
        Handshake { scan: Scan::BeforeObject, held: Vec::new() }
    }
}

impl Handshake {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes held between reads (for the live buffer counters).
    pub fn held_capacity(&self) -> usize {
        self.held.capacity()
    }

    /// Feeds the next bytes received. `Partial`: every byte was taken.
    /// `Complete`: the object is valid, and `consumed` bytes of this input
    /// were its; the rest is chat. After `Complete` or an error the value
    /// should not be fed again.
    pub fn feed(&mut self, input: &[u8]) -> Parsed<JoinRequest, HandshakeError> {
        // Every byte of an unfinished handshake is held, so `held` is also
        // what counts against the cap.
        let budget = MAX_HANDSHAKE_BYTES - self.held.len();
        let scanned = &input[..input.len().min(budget)];
        match self.scan(scanned) {
            Scanned::End(end) => {
                let consumed = end + 1;
                let result = if self.held.is_empty() {
                    parse_object(&scanned[..consumed])
                } else {
                    self.held.extend_from_slice(&scanned[..consumed]);
                    parse_object(&self.held)
                };
                self.held = Vec::new();
                result.map(|value| Status::Complete { value, consumed })
            }
            Scanned::NotAnObject => Err(HandshakeError::NotAnObject),
            Scanned::Partial if input.len() > budget => Err(HandshakeError::TooLarge),
            Scanned::Partial => {
                self.held.extend_from_slice(input);
                Ok(Status::Partial)
            }
        }
    }

    /// Advances the scanner over `bytes`, which follow everything scanned
    /// before. Strings are tracked so that braces inside them do not count.
    fn scan(&mut self, bytes: &[u8]) -> Scanned {
        for (index, &byte) in bytes.iter().enumerate() {
            self.scan = match (self.scan, byte) {
                (Scan::BeforeObject, b' ' | b'\t' | b'\r' | b'\n') => Scan::BeforeObject,
                (Scan::BeforeObject, b'{') => Scan::InValue { depth: 1 },
                (Scan::BeforeObject, _) => return Scanned::NotAnObject,
                (Scan::InValue { depth: 1 }, b'}' | b']') => return Scanned::End(index),
                (Scan::InValue { depth }, b'}' | b']') => Scan::InValue { depth: depth - 1 },
                (Scan::InValue { depth }, b'{' | b'[') => Scan::InValue { depth: depth + 1 },
                (Scan::InValue { depth }, b'"') => Scan::InString { depth },
                (Scan::InString { depth }, b'\\') => Scan::InEscape { depth },
                (Scan::InString { depth }, b'"') => Scan::InValue { depth },
                (Scan::InEscape { depth }, _) => Scan::InString { depth },
                (state, _) => state,
            };
        }
        Scanned::Partial
    }
}

/// What a scan of some bytes found.
enum Scanned {
    /// The object's closing brace is at this index.
    End(usize),
    /// The object has not ended yet.
    Partial,
    /// The first non-blank byte is not `{`.
    NotAnObject,
}

/// Parses a WebSocket handshake message: one JSON object, optionally
/// surrounded by whitespace, and nothing else.
pub fn parse_message(message: &[u8]) -> Result<JoinRequest, HandshakeError> {
    if message.len() > MAX_HANDSHAKE_BYTES {
        return Err(HandshakeError::TooLarge);
    }
    let mut handshake = Handshake::new();
    match handshake.feed(message)? {
        Status::Complete { value: request, consumed } => {
            if message[consumed..].iter().all(u8::is_ascii_whitespace) {
                Ok(request)
            } else {
                Err(HandshakeError::TrailingData)
            }
        }
        Status::Partial => Err(HandshakeError::Incomplete),
    }
}

/// Parses and validates one complete JSON object.
fn parse_object(json: &[u8]) -> Result<JoinRequest, HandshakeError> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|error| HandshakeError::MalformedJson(error.to_string()))?;
    let object = value.as_object().ok_or(HandshakeError::NotAnObject)?;
    let field = |key: &'static str| -> Result<&str, HandshakeError> {
        match object.get(key) {
            None => Err(HandshakeError::MissingField(key)),
            Some(serde_json::Value::String(text)) => Ok(text.trim()),
            Some(_) => Err(HandshakeError::NotAString(key)),
        }
    };
    let name = field("name")?;
    let room = field("room")?;
    validate("name", name, MAX_NAME_CHARS, true)?;
    if name.eq_ignore_ascii_case("error") {
        return Err(HandshakeError::NameReserved);
    }
    validate("room", room, MAX_ROOM_CHARS, false)?;
    Ok(JoinRequest { name: name.to_owned(), room: room.to_owned() })
}

fn validate(
    field: &'static str,
    value: &str,
    max_chars: usize,
    forbid_colon: bool,
) -> Result<(), HandshakeError> {
    let problem = if value.is_empty() {
        Some(FieldProblem::Empty)
    } else if value.chars().count() > max_chars {
        Some(FieldProblem::TooLong { max_chars })
    } else if value.chars().any(char::is_control) {
        Some(FieldProblem::ControlCharacter)
    } else if forbid_colon && value.contains(':') {
        Some(FieldProblem::Colon)
    } else {
        None
    };
    match problem {
        Some(problem) => Err(HandshakeError::Invalid { field, problem }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str, room: &str) -> JoinRequest {
        JoinRequest { name: name.into(), room: room.into() }
    }

    fn feed_all(parts: &[&[u8]]) -> Parsed<JoinRequest, HandshakeError> {
        let mut handshake = Handshake::new();
        let (last, first) = parts.split_last().unwrap();
        for part in first {
            assert_eq!(handshake.feed(part), Ok(Status::Partial));
        }
        handshake.feed(last)
    }

    fn done(request: JoinRequest, consumed: usize) -> Parsed<JoinRequest, HandshakeError> {
        Ok(Status::Complete { value: request, consumed })
    }

    #[test]
    fn whole_object_then_messages() {
        let input = br#"{"name":"Mina","room":"dev"}hello"#;
        assert_eq!(feed_all(&[input]), done(request("Mina", "dev"), 28));
    }

    #[test]
    fn split_at_every_byte_gives_the_same_result() {
        let input = br#"  {"name": " Mina ", "room": "dev}{", "extra": [1, {"a": "\"}"}]}tail"#;
        let whole = feed_all(&[input]);
        let Ok(Status::Complete { value: expected, consumed }) = whole else { panic!("{whole:?}") };
        assert_eq!(expected, request("Mina", "dev}{"));
        for split in 1..consumed {
            let step = feed_all(&[&input[..split], &input[split..]]);
            assert_eq!(step, done(expected.clone(), consumed - split));
        }
    }

    #[test]
    fn each_error_has_its_own_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"hello\n", "handshake must be a JSON object"),
            (b"[1]", "handshake must be a JSON object"),
            (br#"{"name":"Mina","room":}"#, "malformed handshake JSON"),
            (br#"{"room":"dev"}"#, "handshake is missing the \"name\" field"),
            (br#"{"name":"Mina"}"#, "handshake is missing the \"room\" field"),
            (br#"{"name":7,"room":"dev"}"#, "handshake field \"name\" must be a string"),
            (br#"{"name":"  ","room":"dev"}"#, "name is empty"),
            (br#"{"name":"Mina","room":""}"#, "room is empty"),
            (br#"{"name":"Mi\u0007na","room":"dev"}"#, "name contains a control character"),
            (br#"{"name":"Mina","room":"d\u0085ev"}"#, "room contains a control character"),
            (br#"{"name":"Mi:na","room":"dev"}"#, "name contains ':'"),
            (br#"{"name":"ErRoR","room":"dev"}"#, "name \"error\" is reserved"),
        ];
        for (input, reason) in cases {
            match feed_all(&[input]) {
                Err(error) => {
                    assert!(error.to_string().starts_with(reason), "{error} for {input:?}");
                    assert!(!error.to_string().contains('\n'));
                }
                other => panic!("expected failure for {:?}, got {other:?}", String::from_utf8_lossy(input)),
            }
        }
    }

    #[test]
    fn length_limits_count_characters() {
        let name = "é".repeat(MAX_NAME_CHARS);
        let ok = format!(r#"{{"name":"{name}","room":"{}"}}"#, "r".repeat(MAX_ROOM_CHARS));
        assert!(matches!(feed_all(&[ok.as_bytes()]), Ok(Status::Complete { .. })));
        let long_name = format!(r#"{{"name":"{name}x","room":"dev"}}"#);
        assert!(matches!(
            feed_all(&[long_name.as_bytes()]),
            Err(HandshakeError::Invalid { field: "name", problem: FieldProblem::TooLong { .. } })
        ));
        let long_room = format!(r#"{{"name":"Mina","room":"{}"}}"#, "r".repeat(MAX_ROOM_CHARS + 1));
        assert!(matches!(
            feed_all(&[long_room.as_bytes()]),
            Err(HandshakeError::Invalid { field: "room", problem: FieldProblem::TooLong { .. } })
        ));
    }

    #[test]
    fn an_object_must_end_within_the_cap() {
        let mut input = br#"{"name":"Mina","room":"dev","pad":""#.to_vec();
        input.resize(MAX_HANDSHAKE_BYTES - 2, b'x');
        input.extend_from_slice(b"\"}");
        assert!(matches!(feed_all(&[&input]), Ok(Status::Complete { .. })));
        let mut handshake = Handshake::new();
        assert_eq!(handshake.feed(&input[..MAX_HANDSHAKE_BYTES - 1]), Ok(Status::Partial));
        assert_eq!(handshake.feed(b"xx"), Err(HandshakeError::TooLarge));
        let mut longer = input.clone();
        longer.insert(40, b'x');
        assert_eq!(feed_all(&[&longer]), Err(HandshakeError::TooLarge));
    }

    #[test]
    fn websocket_message_allows_only_whitespace_around_the_object() {
        assert_eq!(parse_message(b" {\"name\":\"Mina\",\"room\":\"dev\"}\r\n"), Ok(request("Mina", "dev")));
        assert_eq!(
            parse_message(b"{\"name\":\"Mina\",\"room\":\"dev\"} hi"),
            Err(HandshakeError::TrailingData)
        );
        assert_eq!(parse_message(b"{\"name\":\"Mina\""), Err(HandshakeError::Incomplete));
    }
}
