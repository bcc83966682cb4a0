//! The RESP reply parser on arbitrary bytes, under the default limits and
//! under tight ones (so each limit is reached): never panics; a complete
//! reply takes at least one byte and no more than were given, and is
//! exactly those bytes; and a prefix cut at an arbitrary point answers
//! either Partial or what the whole answers, as a caller that keeps the
//! bytes and calls again with more would see.
#![no_main]

use libfuzzer_sys::fuzz_target;
use machat::internal::cluster::resp::{self, Limits};
use machat::internal::parse::Status;

fuzz_target!(|data: &[u8]| {
    let Some((cut, input)) = data.split_first_chunk::<2>() else { return };
    let cut = usize::from(u16::from_le_bytes(*cut)) % (input.len() + 1);
    let tight = Limits { max_bulk_len: 16, max_array_len: 4, max_depth: 2, max_line_len: 8 };
    for limits in [Limits::default(), tight] {
        let whole = resp::parse(input, &limits);
        if let Ok(Status::Complete { consumed, .. }) = whole {
            assert!(consumed > 0 && consumed <= input.len());
            // The reply is its own bytes: nothing after them, and all of them.
            assert_eq!(resp::parse(&input[..consumed], &limits), whole);
            assert_eq!(resp::parse(&input[..consumed - 1], &limits), Ok(Status::Partial));
        }
        match resp::parse(&input[..cut], &limits) {
            Ok(Status::Partial) => {
                if let Ok(Status::Complete { consumed, .. }) = whole {
                    assert!(consumed > cut);
                }
            }
            prefix => assert_eq!(prefix, whole),
        }
    }
});
