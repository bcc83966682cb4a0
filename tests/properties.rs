//! Property tests for the socket-free parsers: random bytes never panic,
//! and every way of splitting a stream gives the same result as the whole.

use machat::internal::handshake::{Handshake, HandshakeError, JoinRequest};
use machat::internal::http;
use machat::internal::line_framing::{LineFramer, LineTooLong};
use machat::internal::parse::{Parsed, Status};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Feeds `input` to a fresh handshake in the pieces `cuts` describes.
fn handshake_in_pieces(input: &[u8], cuts: &[usize]) -> (Parsed<JoinRequest, HandshakeError>, usize) {
    let mut handshake = Handshake::new();
    let mut start = 0;
    for end in cuts.iter().copied().chain([input.len()]) {
        let end = end.clamp(start, input.len());
        match handshake.feed(&input[start..end]) {
            Ok(Status::Partial) => start = end,
            Ok(Status::Complete { value, consumed }) => {
                return (Ok(Status::Complete { value, consumed: 0 }), start + consumed);
            }
            failed => return (failed, 0),
        }
    }
    (Ok(Status::Partial), 0)
}

fn lines_in_pieces(input: &[u8], cuts: &[usize], max_line: usize) -> (Vec<Vec<u8>>, Option<LineTooLong>) {
    let mut framer = LineFramer::after_handshake(max_line);
    let mut lines = Vec::new();
    let mut start = 0;
    for end in cuts.iter().copied().chain([input.len()]) {
        let end = end.clamp(start, input.len());
        if let Err(error) = framer.feed(&input[start..end], |line| lines.push(line.to_vec())) {
            return (lines, Some(error));
        }
        start = end;
    }
    (lines, None)
}

fn sorted(mut cuts: Vec<usize>) -> Vec<usize> {
    cuts.sort_unstable();
    cuts
}

/// Handshake-like input: a valid object, then message bytes.
fn valid_stream() -> impl Strategy<Value = Vec<u8>> {
    (
        "[a-zA-Z0-9é][a-zA-Z0-9 é]{0,31}",
        "[a-z{}\\[\\]\"][a-z{}\\[\\]\" ]{0,63}",
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(name, room, tail)| {
            let mut bytes = serde_json::json!({"name": name, "room": room, "x": [1, {"y": "}"}]})
                .to_string()
                .into_bytes();
            bytes.extend_from_slice(&tail);
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
            // Regressions are kept next to this file, not at the top level.
            failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
            ..ProptestConfig::with_cases(512)
        })]

    #[test]
    fn handshake_never_panics(input in proptest::collection::vec(any::<u8>(), 0..6000), cuts in proptest::collection::vec(0usize..6000, 0..8)) {
        let _ = handshake_in_pieces(&input, &sorted(cuts));
    }

    #[test]
    fn handshake_split_anywhere_matches_whole(input in valid_stream(), cuts in proptest::collection::vec(0usize..200, 0..6)) {
        let whole = handshake_in_pieces(&input, &[]);
        let split = handshake_in_pieces(&input, &sorted(cuts));
        prop_assert!(matches!(whole.0, Ok(Status::Complete { .. })), "valid stream must join: {:?}", whole.0);
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn line_framing_split_anywhere_matches_whole(
        input in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b' '), any::<u8>()], 0..400),
        cuts in proptest::collection::vec(0usize..400, 0..10),
        max_line in 1usize..64,
    ) {
        let whole = lines_in_pieces(&input, &[], max_line);
        let split = lines_in_pieces(&input, &sorted(cuts), max_line);
        for line in &whole.0 {
            prop_assert!(!line.is_empty() && line.len() <= max_line && !line.contains(&b'\n'));
        }
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn http_request_step_never_panics_and_prefixes_are_consistent(
        input in proptest::collection::vec(any::<u8>(), 0..2000),
    ) {
        // Whatever a prefix says, the answer for the whole never goes back
        // to "partial" once a prefix was complete or rejected.
        let mut decided = false;
        for end in [0, input.len() / 3, input.len() / 2, input.len()] {
            let parsed = http::parse_request(&input[..end]);
            if decided {
                prop_assert!(!matches!(parsed, Ok(Status::Partial)));
            }
            decided |= !matches!(parsed, Ok(Status::Partial));
        }
    }

    #[test]
    fn http_upgrade_split_anywhere_is_partial_then_complete(cut in 0usize..200) {
        let request = b"GET /mychat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let cut = cut.min(request.len() - 1);
        prop_assert!(matches!(http::parse_request(&request[..cut]), Ok(Status::Partial)));
        let complete = matches!(http::parse_request(request), Ok(Status::Complete { consumed, .. }) if consumed == request.len());
        prop_assert!(complete);
    }
}
