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

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, IgnoredAny};

use crate::names::{self, Checked, Field, NameProblem};
use crate::parse::{Parsed, Status};

pub use crate::names::{MAX_NAME_CHARS, MAX_ROOM_CHARS};

/// The handshake must be complete within this many bytes (PROTOCOL §2).
pub const MAX_HANDSHAKE_BYTES: usize = 4096;

/// A validated request to join a room: the name and the room, each trimmed,
/// NFC, checked by [`names`] and with its folded key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    pub name: Checked,
    pub room: Checked,
    /// Lines of the room's history asked for (`"history": n`), if the
    /// client asked; the session checks it against `--history`.
    pub history: Option<u64>,
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
    /// `history` is not a non-negative whole number.
    HistoryNotACount,
    /// `history` asks for more lines than the server keeps.
    HistoryTooLarge {
        asked: u64,
        max: usize,
    },
    /// The name or room breaks a rule of PROTOCOL §2 (see [`names`]).
    Invalid(NameProblem),
    /// The name, or one that looks like it, is held by a member of the
    /// room: `holder` is that member's spelling when it differs.
    NameTaken {
        name: Box<str>,
        room: Box<str>,
        holder: Option<Box<str>>,
    },
    TooLarge,
    TimedOut,
    /// Cluster mode: Redis could not be asked whether the name is free.
    ClusterUnavailable,
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
            HistoryNotACount => write!(f, "handshake field \"history\" must be a whole number of lines"),
            HistoryTooLarge { asked, max } => {
                let lines = if *asked == 1 { "line" } else { "lines" };
                write!(
                    f,
                    "handshake field \"history\" asks for {asked} {lines}; this server keeps at most {max}"
                )
            }
            Invalid(problem) => problem.fmt(f),
            NameTaken { name, room, holder: None } => {
                write!(f, "name \"{name}\" is already taken in room \"{room}\"")
            }
            NameTaken { name, room, holder: Some(holder) } => {
                write!(f, "name \"{name}\" is already taken in room \"{room}\" (as \"{holder}\")")
            }
            TooLarge => write!(f, "handshake is larger than {MAX_HANDSHAKE_BYTES} bytes"),
            TimedOut => write!(f, "handshake timed out"),
            ClusterUnavailable => write!(f, "cluster unavailable"),
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
            HistoryNotACount | HistoryTooLarge { .. } => HandshakeReason::InvalidHistory,
            Invalid(problem) => match problem.field() {
                Field::Name => HandshakeReason::InvalidName,
                Field::Room => HandshakeReason::InvalidRoom,
            },
            NameTaken { .. } => HandshakeReason::NameTaken,
            TooLarge => HandshakeReason::TooLarge,
            TimedOut => HandshakeReason::Timeout,
            ClusterUnavailable => HandshakeReason::ClusterUnavailable,
        }
    }
}

impl From<NameProblem> for HandshakeError {
    fn from(problem: NameProblem) -> Self {
        HandshakeError::Invalid(problem)
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
    InvalidHistory,
    NameTaken,
    TooLarge,
    Timeout,
    ClusterUnavailable,
}

impl HandshakeReason {
    /// Every reason, in counter order.
    pub const ALL: [HandshakeReason; 9] = [
        HandshakeReason::Malformed,
        HandshakeReason::MissingField,
        HandshakeReason::InvalidName,
        HandshakeReason::InvalidRoom,
        HandshakeReason::InvalidHistory,
        HandshakeReason::NameTaken,
        HandshakeReason::TooLarge,
        HandshakeReason::Timeout,
        HandshakeReason::ClusterUnavailable,
    ];

    /// The metric label.
    pub const fn label(self) -> &'static str {
        match self {
            HandshakeReason::Malformed => "malformed",
            HandshakeReason::MissingField => "missing_field",
            HandshakeReason::InvalidName => "invalid_name",
            HandshakeReason::InvalidRoom => "invalid_room",
            HandshakeReason::InvalidHistory => "invalid_history",
            HandshakeReason::NameTaken => "name_taken",
            HandshakeReason::TooLarge => "too_large",
            HandshakeReason::Timeout => "timeout",
            HandshakeReason::ClusterUnavailable => "cluster_unavailable",
        }
    }
}

/// Where the scanner is inside the JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Skipping blanks before the opening `{`.
    BeforeObject,
    /// Inside the object, `depth` levels of `{`/`[` deep, outside any string.
    /// The byte cap bounds the depth, and the count saturates anyway.
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
                (Scan::InValue { depth }, b'{' | b'[') => Scan::InValue { depth: depth.saturating_add(1) },
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

/// Parses and validates one complete JSON object. Only `name` and `room`
/// are read, as strings; every other field is skipped with
/// [`IgnoredAny`], which checks its syntax without building it, so a huge
/// number or deep nesting in a field nobody reads cannot fail the handshake.
fn parse_object(json: &[u8]) -> Result<JoinRequest, HandshakeError> {
    let fields: Fields<'_> =
        serde_json::from_slice(json).map_err(|error| HandshakeError::MalformedJson(error.to_string()))?;
    let name = fields.name.into_str("name")?;
    let room = fields.room.into_str("room")?;
    let name = names::check_name(&name)?;
    let room = names::check_room(&room)?;
    let history = match fields.history {
        Count::Missing => None,
        Count::Lines(lines) => Some(lines),
        Count::Invalid => return Err(HandshakeError::HistoryNotACount),
    };
    Ok(JoinRequest { name, room, history })
}

/// The handshake object's fields that mean something; serde skips the
/// others with [`IgnoredAny`].
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    name: Text<'a>,
    #[serde(borrow, default)]
    room: Text<'a>,
    #[serde(default)]
    history: Count,
}

/// A field that must be a non-negative whole number, as it came.
#[derive(Debug, Default)]
enum Count {
    #[default]
    Missing,
    /// Any other JSON value: negative, fractional, a string... (skipped
    /// without being kept).
    Invalid,
    Lines(u64),
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Any value is accepted here (as for `Text`), so a wrong one is a
        // clear `history` error rather than serde's generic message.
        deserializer.deserialize_any(CountVisitor)
    }
}

struct CountVisitor;

impl<'de> de::Visitor<'de> for CountVisitor {
    type Value = Count;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_u64<E: de::Error>(self, lines: u64) -> Result<Self::Value, E> {
        Ok(Count::Lines(lines))
    }

    fn visit_i64<E: de::Error>(self, lines: i64) -> Result<Self::Value, E> {
        Ok(u64::try_from(lines).map_or(Count::Invalid, Count::Lines))
    }

    /// `5.0` and `1e2` are whole numbers too (JSON has one number type).
    fn visit_f64<E: de::Error>(self, lines: f64) -> Result<Self::Value, E> {
        let whole = lines.fract() == 0.0 && (0.0..u64::MAX as f64).contains(&lines);
        Ok(if whole { Count::Lines(lines as u64) } else { Count::Invalid })
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Count::Invalid)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Count::Invalid)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Count::Invalid)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Count::Invalid)
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Count::Invalid)
    }
}

/// A field that must be a string, as it came.
#[derive(Debug, Default)]
enum Text<'a> {
    /// Not in the object.
    #[default]
    Missing,
    /// Some other JSON value (skipped without being kept).
    NotAString,
    Str(Cow<'a, str>),
}

impl<'a> Text<'a> {
    fn into_str(self, field: &'static str) -> Result<Cow<'a, str>, HandshakeError> {
        match self {
            Text::Str(text) => Ok(text),
            Text::Missing => Err(HandshakeError::MissingField(field)),
            Text::NotAString => Err(HandshakeError::NotAString(field)),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextVisitor(std::marker::PhantomData))
    }
}

struct TextVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> de::Visitor<'de> for TextVisitor<'a> {
    type Value = Text<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Text::Str(Cow::Borrowed(text)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Text::Str(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
        Ok(Text::Str(Cow::Owned(text)))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Text::NotAString)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Text::NotAString)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Text::NotAString)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Text::NotAString)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Text::NotAString)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Text::NotAString)
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Text::NotAString)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str, room: &str) -> JoinRequest {
        JoinRequest {
            name: names::check_name(name).unwrap(),
            room: names::check_room(room).unwrap(),
            history: None,
        }
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
    fn history_is_a_non_negative_whole_number_when_given() {
        let parse = |json: &str| parse_object(json.as_bytes()).map(|request| request.history);
        assert_eq!(parse(r#"{"name":"Mina","room":"dev"}"#), Ok(None));
        assert_eq!(parse(r#"{"name":"Mina","room":"dev","history":0}"#), Ok(Some(0)));
        assert_eq!(parse(r#"{"history":20,"name":"Mina","room":"dev"}"#), Ok(Some(20)));
        assert_eq!(
            parse(r#"{"name":"Mina","room":"dev","history":18446744073709551615}"#),
            Ok(Some(u64::MAX))
        );
        assert_eq!(parse(r#"{"name":"Mina","room":"dev","history":5.0}"#), Ok(Some(5)));
        assert_eq!(parse(r#"{"name":"Mina","room":"dev","history":1e2}"#), Ok(Some(100)));
        for bad in ["-1", "1.5", "-0.5", "1e300", "\"5\"", "true", "null", "[5]", "{\"n\":5}"] {
            let json = format!(r#"{{"name":"Mina","room":"dev","history":{bad}}}"#);
            assert_eq!(parse(&json), Err(HandshakeError::HistoryNotACount), "{bad}");
        }
        assert_eq!(
            HandshakeError::HistoryNotACount.to_string(),
            "handshake field \"history\" must be a whole number of lines"
        );
        assert_eq!(HandshakeError::HistoryNotACount.reason(), HandshakeReason::InvalidHistory);
        // Given twice, like any field: malformed.
        let twice = r#"{"name":"Mina","room":"dev","history":1,"history":2}"#;
        assert!(matches!(parse(twice), Err(HandshakeError::MalformedJson(_))));
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
            (br#"{"name":null,"room":"dev"}"#, "handshake field \"name\" must be a string"),
            (br#"{"name":"Mina","room":["dev"]}"#, "handshake field \"room\" must be a string"),
            (br#"{"name":"Mina","room":{"a":[1]}}"#, "handshake field \"room\" must be a string"),
            (
                br#"{"name":"Mina","name":"Ola","room":"dev"}"#,
                "malformed handshake JSON: duplicate field `name`",
            ),
            (br#"{"name":"Mi\u0007na","room":"dev"}"#, "name contains a control character (U+0007)"),
            (br#"{"name":"Mina","room":"d\u0085ev"}"#, "room contains a control character (U+0085)"),
            (br#"{"name":"Mi:na","room":"dev"}"#, "name contains ':'"),
            (br#"{"name":"ErRoR","room":"dev"}"#, "name \"error\" is reserved"),
            (br#"{"name":"\u0435rror","room":"dev"}"#, "name \"error\" is reserved"),
            (
                br#"{"name":"Bob\u200b","room":"dev"}"#,
                "name contains an invisible or formatting character (U+200B)",
            ),
            (
                br#"{"name":"Bob","room":"dev\u202e"}"#,
                "room contains an invisible or formatting character (U+202E)",
            ),
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
        assert_eq!(
            feed_all(&[long_name.as_bytes()]),
            Err(HandshakeError::Invalid(NameProblem::TooLong(Field::Name)))
        );
        let long_room = format!(r#"{{"name":"Mina","room":"{}"}}"#, "r".repeat(MAX_ROOM_CHARS + 1));
        assert_eq!(
            feed_all(&[long_room.as_bytes()]),
            Err(HandshakeError::Invalid(NameProblem::TooLong(Field::Room)))
        );
    }

    #[test]
    fn names_are_normalised_and_folded() {
        let Ok(Status::Complete { value, .. }) = feed_all(&[br#"{"name":" Jose\u0301 ","room":"DEV"}"#])
        else {
            panic!("a valid handshake")
        };
        assert_eq!(&*value.name.display, "Jos\u{e9}");
        assert_eq!(value.name.key, names::check_name("JOS\u{c9}").unwrap().key);
        assert_eq!(&*value.room.display, "DEV");
        assert_eq!(value.room.key, names::check_room("dev").unwrap().key);
    }

    #[test]
    fn ignored_fields_cannot_fail_the_handshake() {
        let deep = format!("{}{}", "[".repeat(900), "]".repeat(900));
        let deep_objects = format!("{}1{}", r#"{"a":"#.repeat(300), "}".repeat(300));
        for extra in [
            "1e999999".to_owned(),
            "-123456789012345678901234567890123456789012345678901234567890".to_owned(),
            "0.000000000000000000000000000000000000000000000001e-999999".to_owned(),
            deep,
            deep_objects,
        ] {
            let input = format!(r#"{{"x":{extra},"name":"Mina","room":"dev","y":{extra}}}"#);
            assert_eq!(
                feed_all(&[input.as_bytes()]),
                done(request("Mina", "dev"), input.len()),
                "{extra:.40}"
            );
            assert_eq!(parse_message(input.as_bytes()), Ok(request("Mina", "dev")));
        }
        // Still JSON: broken syntax in an ignored field is malformed.
        assert!(matches!(
            feed_all(&[br#"{"x":[1,,],"name":"Mina","room":"dev"}"#]),
            Err(HandshakeError::MalformedJson(_))
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
