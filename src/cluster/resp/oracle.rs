//! The parser checked against another one: `redis-protocol`'s RESP2
//! decoder (`redis_protocol::resp2::decode::decode`), which answers like
//! ours: a frame and the bytes it took, "incomplete", or an error.
//!
//! On valid replies the two must agree exactly. On arbitrary bytes they
//! may differ only where ours is deliberately stricter (module docs): it
//! refuses non-canonical numbers (`+1`, `01`, `-0`), a lone CR or LF in a
//! line, a bulk string followed by something else than CR LF (theirs takes
//! any two bytes), declared lengths over the limits, and it refuses bad
//! bytes at once where theirs may wait for a CR LF first. So:
//!
//! - when ours says Complete, theirs gives the same value and length;
//! - when theirs refuses, ours refuses too;
//! - when theirs says Complete, ours does not ask for more.
//!
//! The one exception is text that is not UTF-8 in an error reply, which
//! theirs refuses and ours reads lossily.

use proptest::collection::vec;
use proptest::prelude::*;
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;

use super::tests::{Wire, wire};
use super::*;

/// Their frame as our reply.
fn ours(frame: OwnedFrame) -> Reply {
    match frame {
        OwnedFrame::SimpleString(text) => Reply::Simple(String::from_utf8_lossy(&text).into_owned()),
        OwnedFrame::Error(text) => Reply::Error(text),
        OwnedFrame::Integer(value) => Reply::Integer(value),
        OwnedFrame::BulkString(body) => Reply::Bulk(body),
        OwnedFrame::Array(frames) => Reply::Array(frames.into_iter().map(ours).collect()),
        OwnedFrame::Null => Reply::Nil,
    }
}

/// Whether a reply holds an error text read lossily, which theirs refuses.
fn has_lossy_error(reply: &Reply) -> bool {
    match reply {
        Reply::Error(text) => text.contains('\u{fffd}'),
        Reply::Array(elements) => elements.iter().any(has_lossy_error),
        _ => false,
    }
}

/// Checks the three rules in the module docs on one input.
fn agree(bytes: &[u8]) -> Result<(), TestCaseError> {
    let mine = parse(bytes, &Limits::default());
    let theirs = decode(bytes);
    match (&mine, theirs) {
        (Ok(Status::Complete { value, consumed }), Ok(Some((frame, length)))) => {
            prop_assert_eq!(value, &ours(frame));
            prop_assert_eq!(*consumed, length);
        }
        (Ok(Status::Complete { value, .. }), Err(_)) if has_lossy_error(value) => {}
        (Ok(Status::Complete { .. }), theirs) => {
            prop_assert!(false, "ours: {:?}, theirs: {:?}", mine, theirs);
        }
        (Ok(Status::Partial), Ok(Some(frame))) => {
            prop_assert!(false, "ours is partial, theirs complete: {:?}", frame);
        }
        (Ok(Status::Partial), Err(error)) => {
            prop_assert!(false, "ours is partial, theirs refuses: {:?}", error);
        }
        (Ok(Status::Partial), Ok(None)) | (Err(_), _) => {}
    }
    Ok(())
}

/// A change to a valid reply's bytes.
#[derive(Debug, Clone)]
enum Edit {
    Replace { at: usize, byte: u8 },
    Insert { at: usize, byte: u8 },
    Remove { at: usize },
    Truncate { at: usize },
}

impl Edit {
    fn apply(&self, bytes: &mut Vec<u8>) {
        let within = |at: usize, len: usize| if len == 0 { 0 } else { at % len };
        match *self {
            Edit::Replace { at, byte } if !bytes.is_empty() => {
                let at = within(at, bytes.len());
                bytes[at] = byte;
            }
            Edit::Insert { at, byte } => {
                let at = within(at, bytes.len() + 1);
                bytes.insert(at, byte);
            }
            Edit::Remove { at } if !bytes.is_empty() => {
                bytes.remove(within(at, bytes.len()));
            }
            Edit::Truncate { at } => bytes.truncate(within(at, bytes.len() + 1)),
            _ => {}
        }
    }
}

/// Bytes that matter to RESP more often than chance would pick them.
fn resp_byte() -> impl Strategy<Value = u8> {
    prop_oneof![prop::sample::select(b"+-:$*\r\n0123456789_#>".to_vec()), any::<u8>()]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), resp_byte()).prop_map(|(at, byte)| Edit::Replace { at, byte }),
        (any::<usize>(), resp_byte()).prop_map(|(at, byte)| Edit::Insert { at, byte }),
        any::<usize>().prop_map(|at| Edit::Remove { at }),
        any::<usize>().prop_map(|at| Edit::Truncate { at }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn valid_replies_read_the_same_with_both(wire in wire(), next in vec(any::<u8>(), 0..4)) {
        let mut bytes = wire.bytes();
        let length = bytes.len();
        bytes.extend_from_slice(&next);
        let (frame, theirs_length) = decode(&bytes).expect("theirs reads it").expect("theirs has all of it");
        prop_assert_eq!(theirs_length, length);
        prop_assert_eq!(ours(frame), wire.reply());
        prop_assert_eq!(parse(&bytes, &Limits::default()), Ok(Status::Complete { value: wire.reply(), consumed: length }));
    }

    #[test]
    fn edited_replies_are_answered_consistently(wire in wire(), edits in vec(edit(), 1..4)) {
        let mut bytes = wire.bytes();
        for edit in &edits {
            edit.apply(&mut bytes);
        }
        agree(&bytes)?;
    }

    #[test]
    fn bytes_from_resp_s_alphabet_are_answered_consistently(bytes in vec(resp_byte(), 0..32)) {
        agree(&bytes)?;
    }

    #[test]
    fn any_bytes_are_answered_consistently(bytes in vec(any::<u8>(), 0..32)) {
        agree(&bytes)?;
    }
}

#[test]
fn the_rules_hold_where_the_two_differ() {
    // Theirs takes these; ours refuses them (module docs). The rules
    // allow that, and these check `agree` lets them through.
    for bytes in
        [&b":+1\r\n"[..], b":01\r\n", b":-0\r\n", b"$1\r\naXY", b"+a\rb\r\n", b"+a\nb\r\n", b"$70000000\r\n"]
    {
        agree(bytes).unwrap();
        assert!(parse(bytes, &Limits::default()).is_err(), "{bytes:?}");
    }
    // An error text that is not UTF-8: theirs refuses, ours reads it.
    assert!(decode(b"-ERR \xff\r\n").is_err());
    agree(b"-ERR \xff\r\n").unwrap();
    // Both nils and the most negative integer read alike.
    let wire = Wire::Array(vec![Wire::NilArray, Wire::NilBulk, Wire::Integer(i64::MIN)]);
    agree(&wire.bytes()).unwrap();
}
