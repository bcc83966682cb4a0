//! The handshake scanner on arbitrary bytes, split at an arbitrary point:
//! never panics, and the split gives the same answer as the whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use machat::handshake::{Handshake, Step};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else { return };
    let whole = Handshake::new().feed(input);
    let cut = usize::from(cut).min(input.len());
    let mut split = Handshake::new();
    let answer = match split.feed(&input[..cut]) {
        Step::NeedMore => match split.feed(&input[cut..]) {
            Step::Done { request, consumed } => Step::Done { request, consumed: consumed + cut },
            other => other,
        },
        other => other,
    };
    match (&whole, &answer) {
        // A short first piece can only fail earlier, for the same reason.
        (Step::Failed(a), Step::Failed(b)) => assert_eq!(a.label(), b.label()),
        _ => assert_eq!(whole, answer),
    }
});
