//! The handshake scanner on arbitrary bytes, split at an arbitrary point:
//! never panics, and the split gives the same answer as the whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use machat::internal::handshake::Handshake;
use machat::internal::parse::Status;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else { return };
    let whole = Handshake::new().feed(input);
    let cut = usize::from(cut).min(input.len());
    let mut split = Handshake::new();
    let answer = match split.feed(&input[..cut]) {
        Ok(Status::Partial) => match split.feed(&input[cut..]) {
            Ok(Status::Complete { value, consumed }) => Ok(Status::Complete { value, consumed: consumed + cut }),
            other => other,
        },
        other => other,
    };
    match (&whole, &answer) {
        // A short first piece can only fail earlier, for the same reason.
        (Err(a), Err(b)) => assert_eq!(a.reason(), b.reason()),
        _ => assert_eq!(whole, answer),
    }
});
