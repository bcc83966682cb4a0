//! A server WebSocket session fed arbitrary bytes in two pieces: never
//! panics, and every message it hands out is valid UTF-8 within the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use machat::internal::parse::Status;
use machat::internal::websocket::{WsEvent, WsLimits, WsSession};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else { return };
    let cut = usize::from(cut).min(input.len());
    let limits = WsLimits { max_message: 256, read_buffer: 64, write_buffer: 0, max_write_buffer: 4096 };
    let mut session = WsSession::new(limits);
    let mut replies = Vec::new();
    for piece in [&input[..cut], &input[cut..]] {
        let mut rest = piece;
        loop {
            match session.read(rest, &mut replies) {
                Ok(Status::Complete { value, consumed }) => {
                    assert!(consumed <= rest.len());
                    rest = &rest[consumed..];
                    if let WsEvent::Message(message) = value {
                        assert!(message.len() <= 256 && std::str::from_utf8(&message).is_ok());
                    }
                }
                Ok(Status::Partial) => break,
                Err(_) => return,
            }
        }
    }
});
