//! Line framing on arbitrary bytes, split at an arbitrary point: never
//! panics, lines respect the limit, and the split matches the whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use machat::internal::line_framing::LineFramer;

fn frame(pieces: &[&[u8]]) -> (Vec<Vec<u8>>, bool) {
    let mut framer = LineFramer::after_handshake(32);
    let mut lines = Vec::new();
    for piece in pieces {
        if framer.feed(piece, |line| lines.push(line.to_vec())).is_err() {
            return (lines, true);
        }
    }
    (lines, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else { return };
    let cut = usize::from(cut).min(input.len());
    let whole = frame(&[input]);
    assert!(whole.0.iter().all(|line| !line.is_empty() && line.len() <= 32 && !line.contains(&b'\n')));
    assert_eq!(whole, frame(&[&input[..cut], &input[cut..]]));
});
