//! The RESP codec: every type, the pub/sub shapes machat reads, each limit
//! and each malformation, and properties over generated replies (each
//! prefix of a reply is Partial, the whole is Complete with the same value
//! whatever follows it). The replies are generated as trees and encoded
//! by [`Wire::encode`], written here from the protocol's description and
//! sharing no code with the parser.

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

fn parse_default(bytes: &[u8]) -> Parsed<Reply, RespError> {
    parse(bytes, &Limits::default())
}

fn complete(bytes: &[u8]) -> (Reply, usize) {
    match parse_default(bytes) {
        Ok(Status::Complete { value, consumed }) => (value, consumed),
        other => panic!("{:?} is not one complete reply: {other:?}", String::from_utf8_lossy(bytes)),
    }
}

/// Parses a whole reply, checks it takes every byte, and returns it.
fn whole(bytes: &[u8]) -> Reply {
    let (value, consumed) = complete(bytes);
    assert_eq!(consumed, bytes.len(), "{:?}", String::from_utf8_lossy(bytes));
    value
}

fn error_of(bytes: &[u8], limits: &Limits) -> RespError {
    match parse(bytes, limits) {
        Err(error) => error,
        other => panic!("{:?} should be refused: {other:?}", String::from_utf8_lossy(bytes)),
    }
}

fn refused(bytes: &[u8]) -> RespError {
    error_of(bytes, &Limits::default())
}

fn bulk(bytes: &[u8]) -> Reply {
    Reply::Bulk(bytes.to_vec())
}

// Every type.

#[test]
fn simple_strings() {
    assert_eq!(whole(b"+OK\r\n"), Reply::Simple("OK".into()));
    assert_eq!(whole(b"+\r\n"), Reply::Simple(String::new()));
    assert_eq!(whole(b"+hello world\r\n"), Reply::Simple("hello world".into()));
    assert_eq!(whole("+héllo\r\n".as_bytes()), Reply::Simple("héllo".into()));
}

#[test]
fn errors() {
    assert_eq!(whole(b"-ERR unknown command 'FOO'\r\n"), Reply::Error("ERR unknown command 'FOO'".into()));
    assert_eq!(whole(b"-\r\n"), Reply::Error(String::new()));
}

#[test]
fn text_that_is_not_utf8_is_read_lossily() {
    // Redis quotes a key truncated to 128 bytes in some errors, which can
    // cut a character: the reply is still well framed.
    assert_eq!(whole(b"-ERR key 'caf\xc3'\r\n"), Reply::Error("ERR key 'caf\u{fffd}'".into()));
    assert_eq!(whole(b"+\xff\r\n"), Reply::Simple("\u{fffd}".into()));
}

#[test]
fn integers() {
    assert_eq!(whole(b":0\r\n"), Reply::Integer(0));
    assert_eq!(whole(b":1000\r\n"), Reply::Integer(1000));
    assert_eq!(whole(b":-1\r\n"), Reply::Integer(-1));
    assert_eq!(whole(b":9223372036854775807\r\n"), Reply::Integer(i64::MAX));
    assert_eq!(whole(b":-9223372036854775808\r\n"), Reply::Integer(i64::MIN));
}

#[test]
fn bulk_strings() {
    assert_eq!(whole(b"$5\r\nhello\r\n"), bulk(b"hello"));
    assert_eq!(whole(b"$0\r\n\r\n"), bulk(b""));
    // A body is bytes, CR LF and all: only the length says where it ends.
    assert_eq!(whole(b"$6\r\na\r\nb\0\xff\r\n"), bulk(b"a\r\nb\0\xff"));
    assert_eq!(whole(b"$10\r\n0123456789\r\n"), bulk(b"0123456789"));
}

#[test]
fn both_nils() {
    assert_eq!(whole(b"$-1\r\n"), Reply::Nil);
    assert_eq!(whole(b"*-1\r\n"), Reply::Nil);
}

#[test]
fn arrays() {
    assert_eq!(whole(b"*0\r\n"), Reply::Array(vec![]));
    assert_eq!(
        whole(b"*5\r\n+OK\r\n-ERR no\r\n:7\r\n$3\r\nabc\r\n$-1\r\n"),
        Reply::Array(vec![
            Reply::Simple("OK".into()),
            Reply::Error("ERR no".into()),
            Reply::Integer(7),
            bulk(b"abc"),
            Reply::Nil,
        ])
    );
}

#[test]
fn nested_arrays() {
    assert_eq!(
        whole(b"*2\r\n*2\r\n:1\r\n*1\r\n$1\r\nx\r\n*0\r\n"),
        Reply::Array(vec![
            Reply::Array(vec![Reply::Integer(1), Reply::Array(vec![bulk(b"x")])]),
            Reply::Array(vec![]),
        ])
    );
    assert_eq!(whole(b"*1\r\n*-1\r\n"), Reply::Array(vec![Reply::Nil]));
}

// The shapes cluster mode reads.

#[test]
fn pubsub_pushes() {
    assert_eq!(
        whole(b"*3\r\n$9\r\nsubscribe\r\n$15\r\nmachat:room:dev\r\n:1\r\n"),
        Reply::Array(vec![bulk(b"subscribe"), bulk(b"machat:room:dev"), Reply::Integer(1)])
    );
    let payload = b"\x01node-a\nMina:hello\nOla:hi\n";
    let mut message = b"*3\r\n$7\r\nmessage\r\n$15\r\nmachat:room:dev\r\n".to_vec();
    message.extend_from_slice(format!("${}\r\n", payload.len()).as_bytes());
    message.extend_from_slice(payload);
    message.extend_from_slice(b"\r\n");
    assert_eq!(
        whole(&message),
        Reply::Array(vec![bulk(b"message"), bulk(b"machat:room:dev"), bulk(payload)])
    );
    assert_eq!(
        whole(b"*3\r\n$11\r\nunsubscribe\r\n$15\r\nmachat:room:dev\r\n:0\r\n"),
        Reply::Array(vec![bulk(b"unsubscribe"), bulk(b"machat:room:dev"), Reply::Integer(0)])
    );
    // A channel unsubscribed from with none subscribed: a nil channel.
    assert_eq!(
        whole(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"),
        Reply::Array(vec![bulk(b"unsubscribe"), Reply::Nil, Reply::Integer(0)])
    );
}

#[test]
fn replies_to_the_commands_cluster_mode_sends() {
    assert_eq!(whole(b"+OK\r\n"), Reply::Simple("OK".into())); // SET ... NX PX, taken
    assert_eq!(whole(b"$-1\r\n"), Reply::Nil); // SET ... NX PX, held elsewhere
    assert_eq!(whole(b":2\r\n"), Reply::Integer(2)); // PUBLISH: receivers
    assert_eq!(whole(b"+PONG\r\n"), Reply::Simple("PONG".into()));
}

#[test]
fn a_reply_takes_only_its_own_bytes() {
    // Pipelined replies, read one by one.
    let stream = b":1\r\n+OK\r\n$3\r\nabc\r\n*1\r\n:2\r\n";
    let mut rest = &stream[..];
    let mut replies = Vec::new();
    while !rest.is_empty() {
        let (value, consumed) = complete(rest);
        replies.push(value);
        rest = &rest[consumed..];
    }
    assert_eq!(
        replies,
        [Reply::Integer(1), Reply::Simple("OK".into()), bulk(b"abc"), Reply::Array(vec![Reply::Integer(2)])]
    );
    // A partial next reply does not hold the first back.
    assert_eq!(complete(b"+OK\r\n*3\r\n$7\r\nmes"), (Reply::Simple("OK".into()), 5));
}

#[test]
fn an_empty_buffer_is_partial() {
    assert_eq!(parse_default(b""), Ok(Status::Partial));
}

#[test]
fn every_prefix_of_a_reply_is_partial() {
    let reply = b"*3\r\n$7\r\nmessage\r\n$3\r\ndev\r\n*2\r\n:-12\r\n+a b\r\n";
    for cut in 0..reply.len() {
        assert_eq!(parse_default(&reply[..cut]), Ok(Status::Partial), "cut at {cut}");
    }
    assert!(matches!(parse_default(reply), Ok(Status::Complete { consumed, .. }) if consumed == reply.len()));
}

#[test]
fn a_large_bulk_string_is_partial_until_its_last_byte() {
    let length = Limits::DEFAULT_MAX_BULK_LEN;
    let mut reply = format!("${length}\r\n").into_bytes();
    assert_eq!(parse_default(&reply), Ok(Status::Partial));
    reply.resize(reply.len() + length, b'x');
    assert_eq!(parse_default(&reply), Ok(Status::Partial));
    reply.push(b'\r');
    assert_eq!(parse_default(&reply), Ok(Status::Partial));
    reply.push(b'\n');
    let (value, consumed) = complete(&reply);
    assert_eq!(consumed, reply.len());
    assert!(matches!(value, Reply::Bulk(body) if body.len() == length));
}

#[test]
fn a_reply_is_32_bytes_as_the_module_docs_say() {
    assert_eq!(size_of::<Reply>(), 32);
}

// Limits: each refused as soon as it is known, with its own error.

#[test]
fn a_bulk_string_over_the_limit_is_refused_from_its_length() {
    let error = refused(b"$70000000\r\n");
    assert_eq!(error, RespError::BulkTooLong { length: 70_000_000, limit: Limits::DEFAULT_MAX_BULK_LEN });
    assert_eq!(error.to_string(), "bulk string of 70000000 bytes is over the 67108864-byte limit");
    let limits = Limits { max_bulk_len: 3, ..Limits::default() };
    assert_eq!(whole_with(b"$3\r\nabc\r\n", &limits), bulk(b"abc"));
    assert_eq!(error_of(b"$4\r\n", &limits), RespError::BulkTooLong { length: 4, limit: 3 });
    // Inside an array, and with the body already there: the same.
    assert_eq!(error_of(b"*1\r\n$4\r\nabcd\r\n", &limits), RespError::BulkTooLong { length: 4, limit: 3 });
    assert_eq!(
        refused(b"$9223372036854775807\r\n").to_string(),
        "bulk string of 9223372036854775807 bytes is over the 67108864-byte limit"
    );
}

#[test]
fn an_array_over_the_limit_is_refused_from_its_count() {
    let error = refused(b"*2000000\r\n");
    assert_eq!(error, RespError::ArrayTooLong { length: 2_000_000, limit: Limits::DEFAULT_MAX_ARRAY_LEN });
    assert_eq!(error.to_string(), "array of 2000000 elements is over the 1048576-element limit");
    let limits = Limits { max_array_len: 2, ..Limits::default() };
    assert_eq!(
        whole_with(b"*2\r\n:1\r\n:2\r\n", &limits),
        Reply::Array(vec![Reply::Integer(1), Reply::Integer(2)])
    );
    assert_eq!(error_of(b"*3\r\n", &limits), RespError::ArrayTooLong { length: 3, limit: 2 });
}

#[test]
fn arrays_nested_deeper_than_the_limit_are_refused() {
    let nested = |depth: usize| {
        let mut bytes = b"*1\r\n".repeat(depth);
        bytes.extend_from_slice(b":1\r\n");
        bytes
    };
    let mut expected = Reply::Integer(1);
    for _ in 0..8 {
        expected = Reply::Array(vec![expected]);
    }
    assert_eq!(whole(&nested(8)), expected);
    let error = refused(&nested(9));
    assert_eq!(error, RespError::TooDeep { limit: 8 });
    assert_eq!(error.to_string(), "arrays nested more than 8 deep");
    // Refused at the header that goes too deep, before anything inside it.
    assert_eq!(refused(&b"*1\r\n".repeat(9)), RespError::TooDeep { limit: 8 });
    // Nil and scalars are no deeper than the array they are in.
    assert!(matches!(
        parse_default(&[b"*1\r\n".repeat(8), b"*-1\r\n".to_vec()].concat()),
        Ok(Status::Complete { .. })
    ));
    let flat = Limits { max_depth: 1, ..Limits::default() };
    assert_eq!(error_of(b"*1\r\n*0\r\n", &flat), RespError::TooDeep { limit: 1 });
    let none = Limits { max_depth: 0, ..Limits::default() };
    assert_eq!(error_of(b"*0\r\n", &none), RespError::TooDeep { limit: 0 });
    assert_eq!(whole_with(b"*-1\r\n", &none), Reply::Nil);
}

#[test]
fn depth_is_held_to_the_ceiling() {
    let unbounded = Limits { max_depth: usize::MAX, ..Limits::default() };
    let mut at_ceiling = b"*1\r\n".repeat(Limits::DEPTH_CEILING);
    at_ceiling.extend_from_slice(b":1\r\n");
    assert!(matches!(parse(&at_ceiling, &unbounded), Ok(Status::Complete { .. })));
    let too_deep = b"*1\r\n".repeat(Limits::DEPTH_CEILING + 1);
    assert_eq!(error_of(&too_deep, &unbounded), RespError::TooDeep { limit: Limits::DEPTH_CEILING });
    // Far past it: refused, not a stack overflow.
    assert_eq!(
        error_of(&b"*1\r\n".repeat(100_000), &unbounded),
        RespError::TooDeep { limit: Limits::DEPTH_CEILING }
    );
}

#[test]
fn lines_over_the_limit_are_refused_before_they_end() {
    let limits = Limits { max_line_len: 4, ..Limits::default() };
    assert_eq!(whole_with(b"+abcd\r\n", &limits), Reply::Simple("abcd".into()));
    assert_eq!(whole_with(b"-abcd\r\n", &limits), Reply::Error("abcd".into()));
    assert_eq!(whole_with(b":1234\r\n", &limits), Reply::Integer(1234));
    assert_eq!(whole_with(b":-123\r\n", &limits), Reply::Integer(-123));
    // Four bytes and no end yet: it may still end in time.
    assert_eq!(parse(b"+abcd", &limits), Ok(Status::Partial));
    assert_eq!(parse(b"+abcd\r", &limits), Ok(Status::Partial));
    // The fifth byte is not CR: refused without waiting for the rest.
    let too_long = |part| RespError::LineTooLong { part, limit: 4 };
    assert_eq!(error_of(b"+abcde", &limits), too_long(Part::SimpleString));
    assert_eq!(error_of(b"-abcde\r\n", &limits), too_long(Part::ErrorReply));
    assert_eq!(error_of(b":12345", &limits), too_long(Part::Integer));
    assert_eq!(error_of(b":-1234", &limits), too_long(Part::Integer));
    // Lengths are not lines: they are bounded by being canonical i64s.
    assert_eq!(
        whole_with(b"$10\r\n0123456789\r\n", &Limits { max_line_len: 1, ..limits }),
        bulk(b"0123456789")
    );
    assert_eq!(too_long(Part::SimpleString).to_string(), "simple string longer than the 4-byte limit");
    assert_eq!(too_long(Part::ErrorReply).to_string(), "error reply longer than the 4-byte limit");
    assert_eq!(too_long(Part::Integer).to_string(), "integer reply longer than the 4-byte limit");
    let default = Limits::DEFAULT_MAX_LINE_LEN;
    let mut long = vec![b'+'];
    long.resize(1 + default, b'a');
    assert_eq!(parse_default(&long), Ok(Status::Partial));
    long.push(b'a');
    assert_eq!(refused(&long), RespError::LineTooLong { part: Part::SimpleString, limit: default });
}

fn whole_with(bytes: &[u8], limits: &Limits) -> Reply {
    match parse(bytes, limits) {
        Ok(Status::Complete { value, consumed }) if consumed == bytes.len() => value,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
    }
}

// Malformations: each refused at the first wrong byte, saying what it is.

#[test]
fn unknown_types_are_named() {
    let error = refused(b"hello\r\n");
    assert_eq!(error, RespError::UnknownType { found: b'h', at: 0 });
    assert_eq!(error.to_string(), "at byte 0: 'h' (0x68) does not start a RESP2 reply (+ - : $ *)");
    assert_eq!(
        refused(b"_\r\n").to_string(),
        "at byte 0: '_' (0x5f) does not start a RESP2 reply (+ - : $ *); \
         it starts a RESP3 null, and this client speaks RESP2 only"
    );
    assert!(
        refused(b">3\r\n").to_string().ends_with("it starts a RESP3 push, and this client speaks RESP2 only")
    );
    assert!(refused(b"%1\r\n").to_string().contains("RESP3 map"));
    assert_eq!(refused(b"*2\r\n:1\r\n#t\r\n"), RespError::UnknownType { found: b'#', at: 8 });
    assert_eq!(refused(b"\r\n").to_string(), "at byte 0: CR (0x0d) does not start a RESP2 reply (+ - : $ *)");
    assert_eq!(refused(b"\x00").to_string(), "at byte 0: 0x00 does not start a RESP2 reply (+ - : $ *)");
    // An inline reply, as a telnet session would see, is not RESP either.
    assert_eq!(refused(b"PONG\r\n"), RespError::UnknownType { found: b'P', at: 0 });
}

#[test]
fn numbers_must_be_canonical_digits() {
    let error = refused(b":12a\r\n");
    assert_eq!(error, RespError::NotADigit { part: Part::Integer, found: b'a', at: 3 });
    assert_eq!(error.to_string(), "at byte 3: integer reply has 'a' (0x61) where a digit belongs");
    // Refused before the line ends.
    assert_eq!(refused(b":1x"), RespError::NotADigit { part: Part::Integer, found: b'x', at: 2 });
    assert_eq!(refused(b":+1\r\n"), RespError::NotADigit { part: Part::Integer, found: b'+', at: 1 });
    assert_eq!(refused(b": 1\r\n"), RespError::NotADigit { part: Part::Integer, found: b' ', at: 1 });
    assert_eq!(refused(b":1 \r\n"), RespError::NotADigit { part: Part::Integer, found: b' ', at: 2 });
    assert_eq!(refused(b":--1\r\n"), RespError::NotADigit { part: Part::Integer, found: b'-', at: 2 });
    assert_eq!(refused(b":1-\r\n"), RespError::NotADigit { part: Part::Integer, found: b'-', at: 2 });
    assert_eq!(refused(b":1.5\r\n"), RespError::NotADigit { part: Part::Integer, found: b'.', at: 2 });
    assert_eq!(refused(b"$x\r\n"), RespError::NotADigit { part: Part::BulkLength, found: b'x', at: 1 });
    assert_eq!(
        refused(b"*1\r\n*y\r\n").to_string(),
        "at byte 5: array length has 'y' (0x79) where a digit belongs"
    );
    // An LF alone ends no number.
    assert_eq!(refused(b":1\n"), RespError::NotADigit { part: Part::Integer, found: b'\n', at: 2 });

    assert_eq!(refused(b":\r\n"), RespError::NoDigits { part: Part::Integer, at: 1 });
    assert_eq!(refused(b":-\r\n"), RespError::NoDigits { part: Part::Integer, at: 2 });
    assert_eq!(refused(b"$\r\n").to_string(), "at byte 1: bulk string length has no digits");

    assert_eq!(refused(b":01\r\n"), RespError::LeadingZero { part: Part::Integer, at: 1 });
    assert_eq!(refused(b"$00\r\n\r\n"), RespError::LeadingZero { part: Part::BulkLength, at: 1 });
    assert_eq!(refused(b"*01\r\n").to_string(), "at byte 1: array length has a leading zero");

    assert_eq!(refused(b":-0\r\n"), RespError::NegativeZero { part: Part::Integer, at: 2 });
    assert_eq!(refused(b":-01\r\n"), RespError::NegativeZero { part: Part::Integer, at: 2 });
    assert_eq!(
        refused(b"$-0\r\n").to_string(),
        "at byte 2: bulk string length has a zero after its minus sign"
    );
}

#[test]
fn numbers_must_fit_in_64_bits() {
    let error = refused(b":9223372036854775808\r\n");
    assert_eq!(error, RespError::Overflow { part: Part::Integer, at: 1 });
    assert_eq!(error.to_string(), "at byte 1: integer reply does not fit in a signed 64-bit integer");
    assert_eq!(refused(b":-9223372036854775809\r\n"), RespError::Overflow { part: Part::Integer, at: 1 });
    // Refused at the digit that overflows, not at the end of the line.
    assert_eq!(refused(b":99999999999999999999"), RespError::Overflow { part: Part::Integer, at: 1 });
    assert_eq!(refused(b"$99999999999999999999\r\n"), RespError::Overflow { part: Part::BulkLength, at: 1 });
    assert_eq!(refused(b"*99999999999999999999\r\n"), RespError::Overflow { part: Part::ArrayLength, at: 1 });
}

#[test]
fn negative_lengths_other_than_nil_are_refused() {
    let error = refused(b"$-2\r\n");
    assert_eq!(error, RespError::NegativeLength { part: Part::BulkLength, length: -2, at: 1 });
    assert_eq!(
        error.to_string(),
        "at byte 1: bulk string length is -2; the only negative length is -1 (nil)"
    );
    assert_eq!(refused(b"*-5\r\n"), RespError::NegativeLength { part: Part::ArrayLength, length: -5, at: 1 });
    assert_eq!(
        refused(b"*-9223372036854775808\r\n"),
        RespError::NegativeLength { part: Part::ArrayLength, length: i64::MIN, at: 1 }
    );
}

#[test]
fn lines_must_end_in_cr_lf() {
    let error = refused(b"+OK\rX");
    assert_eq!(error, RespError::CrWithoutLf { part: Part::SimpleString, found: b'X', at: 4 });
    assert_eq!(
        error.to_string(),
        "at byte 4: 'X' (0x58) after the CR that ends the simple string, where LF belongs"
    );
    assert_eq!(
        refused(b"+a\rb\r\n"),
        RespError::CrWithoutLf { part: Part::SimpleString, found: b'b', at: 3 }
    );
    assert_eq!(
        refused(b"-ERR\r\r\n"),
        RespError::CrWithoutLf { part: Part::ErrorReply, found: b'\r', at: 5 }
    );
    assert_eq!(refused(b":1\r:"), RespError::CrWithoutLf { part: Part::Integer, found: b':', at: 3 });
    assert_eq!(refused(b"$3\r\r"), RespError::CrWithoutLf { part: Part::BulkLength, found: b'\r', at: 3 });
    assert_eq!(refused(b"*1\r*"), RespError::CrWithoutLf { part: Part::ArrayLength, found: b'*', at: 3 });

    let error = refused(b"+OK\n");
    assert_eq!(error, RespError::LfWithoutCr { part: Part::SimpleString, at: 3 });
    assert_eq!(error.to_string(), "at byte 3: LF without a CR before it in the simple string");
    assert_eq!(refused(b"-a\nb\r\n"), RespError::LfWithoutCr { part: Part::ErrorReply, at: 2 });
}

#[test]
fn bulk_strings_must_end_in_cr_lf() {
    let error = refused(b"$3\r\nabcd\r\n");
    assert_eq!(error, RespError::BulkNotTerminated { length: 3, found: b'd', at: 7 });
    assert_eq!(error.to_string(), "at byte 7: bulk string of 3 bytes is followed by 'd' (0x64), not CR LF");
    // Refused as soon as the wrong byte is there.
    assert_eq!(refused(b"$3\r\nabcd"), RespError::BulkNotTerminated { length: 3, found: b'd', at: 7 });
    assert_eq!(refused(b"$3\r\nabc\rX"), RespError::BulkNotTerminated { length: 3, found: b'X', at: 8 });
    assert_eq!(refused(b"$0\r\n\n"), RespError::BulkNotTerminated { length: 0, found: b'\n', at: 4 });
    assert_eq!(parse_default(b"$3\r\nabc\r"), Ok(Status::Partial));
}

#[test]
fn an_error_inside_an_array_is_the_array_s() {
    assert_eq!(
        refused(b"*3\r\n:1\r\n:x\r\n"),
        RespError::NotADigit { part: Part::Integer, found: b'x', at: 9 }
    );
    // Even with elements still to come.
    assert_eq!(refused(b"*1000\r\n:1\r\n!"), RespError::UnknownType { found: b'!', at: 11 });
}

// The encoder.

#[test]
fn commands_are_arrays_of_bulk_strings() {
    let mut out = Vec::new();
    encode_command(&mut out, &[b"PING"]);
    assert_eq!(out, b"*1\r\n$4\r\nPING\r\n");
    out.clear();
    encode_command(&mut out, &[b"PUBLISH", b"machat:room:dev", b"a\r\nb\0"]);
    assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$15\r\nmachat:room:dev\r\n$5\r\na\r\nb\0\r\n");
    out.clear();
    encode_command(&mut out, &[b"SET", b"k", b"", b"NX"]);
    assert_eq!(out, b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n$2\r\nNX\r\n");
    out.clear();
    encode_command(&mut out, &[]);
    assert_eq!(out, b"*0\r\n");
}

#[test]
fn commands_append_and_reserve_exactly() {
    let mut out = b"*1\r\n$4\r\nPING\r\n".to_vec();
    let before = out.len();
    let long = vec![b'x'; 1234];
    encode_command(&mut out, &[b"PUBLISH", b"channel", &long]);
    assert_eq!(&out[..before], b"*1\r\n$4\r\nPING\r\n");
    assert_eq!(out.len() - before, "*3\r\n$7\r\nPUBLISH\r\n$7\r\nchannel\r\n$1234\r\n".len() + 1234 + 2);
    let mut exact = Vec::new();
    encode_command(&mut exact, &[b"PUBLISH", b"channel", &long]);
    assert_eq!(exact.capacity(), exact.len());
}

#[test]
fn an_encoded_command_reads_back_as_an_array_of_bulk_strings() {
    let mut out = Vec::new();
    let ttl = Decimal::from(30_000u64);
    encode_command(&mut out, &[b"SET", b"machat:name:dev:Mina", b"node-a", b"NX", b"PX", ttl.as_bytes()]);
    let expected: Vec<Reply> = [&b"SET"[..], b"machat:name:dev:Mina", b"node-a", b"NX", b"PX", b"30000"]
        .iter()
        .map(|arg| bulk(arg))
        .collect();
    assert_eq!(whole(&out), Reply::Array(expected));
}

#[test]
fn decimals() {
    let shown = |decimal: Decimal| String::from_utf8(decimal.as_bytes().to_vec()).unwrap();
    assert_eq!(shown(Decimal::from(0i64)), "0");
    assert_eq!(shown(Decimal::from(7i64)), "7");
    assert_eq!(shown(Decimal::from(-42i64)), "-42");
    assert_eq!(shown(Decimal::from(i64::MAX)), i64::MAX.to_string());
    assert_eq!(shown(Decimal::from(i64::MIN)), i64::MIN.to_string());
    assert_eq!(shown(Decimal::from(u64::MAX)), u64::MAX.to_string());
    assert_eq!(shown(Decimal::from(1_000_000usize)), "1000000");
    assert_eq!(Decimal::from(12i64).as_ref(), b"12");
}

// Properties over generated replies.

/// A reply as it is written on the wire: like [`Reply`], but with RESP2's
/// two nils apart, so both are generated.
#[derive(Debug, Clone)]
pub(super) enum Wire {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    NilBulk,
    NilArray,
    Array(Vec<Wire>),
}

impl Wire {
    /// The bytes, written from the protocol's description.
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Wire::Simple(text) => out.extend_from_slice(format!("+{text}\r\n").as_bytes()),
            Wire::Error(text) => out.extend_from_slice(format!("-{text}\r\n").as_bytes()),
            Wire::Integer(value) => out.extend_from_slice(format!(":{value}\r\n").as_bytes()),
            Wire::Bulk(body) => {
                out.extend_from_slice(format!("${}\r\n", body.len()).as_bytes());
                out.extend_from_slice(body);
                out.extend_from_slice(b"\r\n");
            }
            Wire::NilBulk => out.extend_from_slice(b"$-1\r\n"),
            Wire::NilArray => out.extend_from_slice(b"*-1\r\n"),
            Wire::Array(elements) => {
                out.extend_from_slice(format!("*{}\r\n", elements.len()).as_bytes());
                for element in elements {
                    element.encode(out);
                }
            }
        }
    }

    pub(super) fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// What it should parse to.
    pub(super) fn reply(&self) -> Reply {
        match self {
            Wire::Simple(text) => Reply::Simple(text.clone()),
            Wire::Error(text) => Reply::Error(text.clone()),
            Wire::Integer(value) => Reply::Integer(*value),
            Wire::Bulk(body) => Reply::Bulk(body.clone()),
            Wire::NilBulk | Wire::NilArray => Reply::Nil,
            Wire::Array(elements) => Reply::Array(elements.iter().map(Wire::reply).collect()),
        }
    }
}

/// Replies up to 4 arrays deep (within the default depth of 8), with text
/// of any characters but CR and LF, bulk strings of any bytes.
pub(super) fn wire() -> impl Strategy<Value = Wire> {
    let text = "[^\r\n]{0,12}";
    let leaf = prop_oneof![
        text.prop_map(Wire::Simple),
        text.prop_map(Wire::Error),
        any::<i64>().prop_map(Wire::Integer),
        prop_oneof![Just(0i64), Just(-1), Just(i64::MIN), Just(i64::MAX)].prop_map(Wire::Integer),
        vec(any::<u8>(), 0..24).prop_map(Wire::Bulk),
        prop_oneof![Just(b"\r\n".to_vec()), Just(b"$3\r\n".to_vec())].prop_map(Wire::Bulk),
        Just(Wire::NilBulk),
        Just(Wire::NilArray),
    ];
    leaf.prop_recursive(4, 48, 6, |element| vec(element, 0..6).prop_map(Wire::Array))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_reply_reads_back_whatever_follows_it(wire in wire(), next in vec(any::<u8>(), 0..8)) {
        let bytes = wire.bytes();
        let mut stream = bytes.clone();
        stream.extend_from_slice(&next);
        prop_assert_eq!(
            parse_default(&stream),
            Ok(Status::Complete { value: wire.reply(), consumed: bytes.len() })
        );
    }

    #[test]
    fn a_reply_split_anywhere_is_partial_then_the_same(wire in wire()) {
        let bytes = wire.bytes();
        let expected = Ok(Status::Complete { value: wire.reply(), consumed: bytes.len() });
        for cut in 0..bytes.len() {
            // The caller keeps what came and calls again with more: each
            // prefix is Partial, never an error, and the whole is the reply.
            prop_assert_eq!(parse_default(&bytes[..cut]), Ok(Status::Partial), "cut at {}", cut);
        }
        prop_assert_eq!(parse_default(&bytes), expected);
    }

    #[test]
    fn pipelined_replies_read_one_by_one(wires in vec(wire(), 1..6)) {
        let stream: Vec<u8> = wires.iter().flat_map(Wire::bytes).collect();
        let mut rest = &stream[..];
        for wire in &wires {
            let (value, consumed) = complete(rest);
            prop_assert_eq!(value, wire.reply());
            rest = &rest[consumed..];
        }
        prop_assert!(rest.is_empty());
    }

    #[test]
    fn commands_read_back(args in vec(vec(any::<u8>(), 0..16), 0..8)) {
        let slices: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let mut out = Vec::new();
        encode_command(&mut out, &slices);
        prop_assert_eq!(whole(&out), Reply::Array(args.into_iter().map(Reply::Bulk).collect()));
    }

    #[test]
    fn decimals_are_what_rust_prints(value in any::<i64>(), unsigned in any::<u64>()) {
        prop_assert_eq!(Decimal::from(value).as_bytes().to_vec(), value.to_string().into_bytes());
        prop_assert_eq!(Decimal::from(unsigned).as_bytes().to_vec(), unsigned.to_string().into_bytes());
    }

    #[test]
    fn any_bytes_are_answered_consistently_with_any_prefix(
        bytes in vec(prop::sample::select(b"+-:$*\r\n0123-19ax\xff".to_vec()), 0..40),
    ) {
        // What a prefix says is either "more, please" or what the whole
        // says: errors are found at the byte that is wrong, and a reply
        // does not change because more bytes follow it.
        let answer = parse_default(&bytes);
        if let Ok(Status::Complete { consumed, .. }) = answer {
            prop_assert!(consumed > 0 && consumed <= bytes.len());
        }
        for cut in 0..bytes.len() {
            match parse_default(&bytes[..cut]) {
                Ok(Status::Partial) => {
                    if let Ok(Status::Complete { consumed, .. }) = answer {
                        prop_assert!(consumed > cut);
                    }
                }
                prefix => prop_assert_eq!(&prefix, &answer, "cut at {}", cut),
            }
        }
    }
}
