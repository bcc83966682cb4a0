//! Message text that cannot rewrite a reader's terminal or pose as another
//! line (PROTOCOL §3).
//!
//! [`push_sanitized`] appends one message's text (a line without its `\n`)
//! to an output buffer, replacing with U+FFFD REPLACEMENT CHARACTER:
//!
//! - each invalid UTF-8 sequence, exactly as [`String::from_utf8_lossy`]
//!   does (one U+FFFD per maximal invalid subpart);
//! - C0 controls except TAB (NUL, `\r`, ESC, a stray `\n`...), DEL, and C1
//!   controls U+0080–U+009F (U+009B is a one-character CSI on some
//!   terminals, U+0085 a line break): `\rBob:I owe you $100` cannot overwrite
//!   the line, `\x1b[2J` cannot clear the screen;
//! - U+2028 LINE SEPARATOR and U+2029 PARAGRAPH SEPARATOR: renderers that
//!   follow UAX #14 break the line there, so `hi\u{2028}error: server full`
//!   would show a second line that looks like the server's;
//! - the bidi embeddings, overrides and isolates U+202A–U+202E and
//!   U+2066–U+2069, which reorder everything after them up to the end of the
//!   paragraph.
//!
//! Each refused character becomes one U+FFFD. The bidi marks U+200E,
//! U+200F and U+061C are kept: they carry no state, only act as a strong
//! letter of their direction (like typing one Hebrew or Latin letter, which
//! anyone can), and RTL writers need them to punctuate mixed text.
//!
//! Why U+FFFD rather than a visible escape such as `^[`: U+FFFD is what the
//! protocol already uses for invalid bytes, so a client has one thing to
//! know; it is one character, so the output is never more than three
//! times the input and cannot be confused with text the sender typed
//! (`^[` can be typed); and it is idempotent, so text sanitised twice (for
//! history, or by a relay) is unchanged. The cost: readers cannot tell
//! which character was refused.
//!
//! # Speed
//!
//! This runs once per message, never per recipient. Text that is all
//! printable ASCII (plus TAB) is found by a branch-free scan over 32-byte
//! blocks that the compiler vectorises, and is copied with one
//! `extend_from_slice`. Anything else takes the checked path: after the
//! clean prefix the rest is validated with `std::str::from_utf8` (as
//! `Batch::push` did), then the same kind of block scan looks for the few
//! bytes that can start a refused character (ASCII controls, C2, E2) and
//! the text between them is copied in whole runs, so valid UTF-8 with
//! nothing refused is still one copy (plus the prefix's).

/// What every refused character and invalid sequence becomes.
pub const REPLACEMENT: char = char::REPLACEMENT_CHARACTER;

const REPLACEMENT_UTF8: &[u8] = "\u{FFFD}".as_bytes();

/// Whether `c` is refused in message text (replaced by [`REPLACEMENT`]).
pub fn is_refused(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Appends `text` to `out` as valid UTF-8 with every refused character
/// (see [`is_refused`]) and every invalid sequence replaced by U+FFFD.
pub fn push_sanitized(out: &mut Vec<u8>, text: &[u8]) {
    let clean = prefix_len::<32>(text, is_plain);
    if clean == text.len() {
        out.extend_from_slice(text);
        return;
    }
    out.reserve(text.len());
    out.extend_from_slice(&text[..clean]);
    let rest = &text[clean..];
    match std::str::from_utf8(rest) {
        Ok(valid) => push_valid(out, valid),
        Err(_) => {
            for chunk in rest.utf8_chunks() {
                push_valid(out, chunk.valid());
                if !chunk.invalid().is_empty() {
                    out.extend_from_slice(REPLACEMENT_UTF8);
                }
            }
        }
    }
}

/// Printable ASCII or TAB: the bytes the fast path copies as they are.
#[inline(always)]
fn is_plain(byte: u8) -> bool {
    // `|` and `&`, not `||` and `&&`: no branches, so blocks vectorise.
    (byte.wrapping_sub(b' ') <= b'~' - b' ') | (byte == b'\t')
}

/// In valid UTF-8, the bytes that may start a refused character: ASCII
/// controls but TAB, and the lead bytes of U+0080–U+009F (C2) and of
/// U+2028–U+202E and U+2066–U+2069 (E2).
#[inline(always)]
fn may_start_refused(byte: u8) -> bool {
    ((byte < 0x20) & (byte != b'\t')) | (byte == 0x7F) | (byte == 0xC2) | (byte == 0xE2)
}

/// Length of the longest prefix of `text` whose bytes all satisfy `keep`.
/// Blocks of `N` bytes are tested without an early exit, which the
/// compiler turns into vector compares; only a block that fails, and the
/// short tail, are searched byte by byte.
#[inline(always)]
fn prefix_len<const N: usize>(text: &[u8], keep: impl Fn(u8) -> bool + Copy) -> usize {
    let (blocks, _) = text.as_chunks::<N>();
    let clean_blocks = blocks
        .iter()
        .position(|block| !block.iter().fold(true, |all, &byte| all & keep(byte)))
        .unwrap_or(blocks.len());
    let start = clean_blocks * N;
    start + text[start..].iter().position(|&byte| !keep(byte)).unwrap_or(text.len() - start)
}

/// Appends valid UTF-8, replacing refused characters: ASCII controls but
/// TAB, C2 80–C2 9F (C1), E2 80 A8–AE and E2 81 A6–A9 (separators and bidi
/// controls). Runs between them are copied whole.
fn push_valid(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let mut copied = 0;
    let mut index = 0;
    loop {
        index += prefix_len::<16>(&bytes[index..], |byte| !may_start_refused(byte));
        let Some(&lead) = bytes.get(index) else { break };
        // Valid UTF-8: a C2 or E2 lead byte has its continuation bytes.
        let width = match lead {
            0xC2 if bytes[index + 1] <= 0x9F => 2,
            0xE2 if matches!(
                (bytes[index + 1], bytes[index + 2]),
                (0x80, 0xA8..=0xAE) | (0x81, 0xA6..=0xA9)
            ) =>
            {
                3
            }
            0xC2 | 0xE2 => {
                index += 1;
                continue;
            }
            _ => 1,
        };
        out.extend_from_slice(&bytes[copied..index]);
        out.extend_from_slice(REPLACEMENT_UTF8);
        index += width;
        copied = index;
    }
    out.extend_from_slice(&bytes[copied..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sanitized(text: &[u8]) -> String {
        let mut out = Vec::new();
        push_sanitized(&mut out, text);
        String::from_utf8(out).expect("output is UTF-8")
    }

    /// The definition: lossy decoding, then each refused char replaced.
    fn model(text: &[u8]) -> String {
        String::from_utf8_lossy(text).chars().map(|c| if is_refused(c) { REPLACEMENT } else { c }).collect()
    }

    #[test]
    fn clean_text_is_copied_unchanged() {
        for text in [
            "",
            "hello",
            "tab\there",
            "café ☕ 🙂",
            "שלום \u{200F}world",
            "~ !\"#$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}",
        ] {
            assert_eq!(sanitized(text.as_bytes()), text);
        }
    }

    #[test]
    fn carriage_return_cannot_overwrite_the_line() {
        assert_eq!(sanitized(b"hi\rBob:I owe you $100"), "hi\u{FFFD}Bob:I owe you $100");
    }

    #[test]
    fn escape_sequences_nul_and_del_are_neutralised() {
        assert_eq!(sanitized(b"\x1b[2J\x1b]0;title\x07"), "\u{FFFD}[2J\u{FFFD}]0;title\u{FFFD}");
        assert_eq!(sanitized(b"a\0b\x7fc\nd\x0be\x0cf"), "a\u{FFFD}b\u{FFFD}c\u{FFFD}d\u{FFFD}e\u{FFFD}f");
    }

    #[test]
    fn c1_controls_are_neutralised() {
        assert_eq!(
            sanitized("\u{9b}2J x\u{85}y\u{80}\u{9f}\u{a0}".as_bytes()),
            "\u{FFFD}2J x\u{FFFD}y\u{FFFD}\u{FFFD}\u{a0}"
        );
    }

    #[test]
    fn separators_and_bidi_controls_are_neutralised() {
        assert_eq!(sanitized("hi\u{2028}error: server full".as_bytes()), "hi\u{FFFD}error: server full");
        assert_eq!(sanitized("\u{2029}".as_bytes()), "\u{FFFD}");
        for c in ('\u{202A}'..='\u{202E}').chain('\u{2066}'..='\u{2069}') {
            assert_eq!(sanitized(format!("a{c}b").as_bytes()), "a\u{FFFD}b", "{c:?}");
        }
        // Neighbours of the refused ranges stay.
        for c in
            ['\u{2027}', '\u{202F}', '\u{2065}', '\u{206A}', '\u{200E}', '\u{200F}', '\u{061C}', '\u{200B}']
        {
            let text = format!("a{c}b");
            assert_eq!(sanitized(text.as_bytes()), text, "{c:?}");
        }
    }

    #[test]
    fn invalid_utf8_is_replaced_like_from_utf8_lossy() {
        assert_eq!(sanitized(b"a\xffb"), "a\u{FFFD}b");
        assert_eq!(sanitized(b"\xe2\x80"), "\u{FFFD}");
        assert_eq!(sanitized(b"\xe2\x80\xae"), "\u{FFFD}"); // valid U+202E, refused
        assert_eq!(sanitized(b"\xc2"), "\u{FFFD}");
        assert_eq!(sanitized(b"\xf0\x9f\x99\x82\xf0\x9f"), "🙂\u{FFFD}");
        assert_eq!(sanitized(b"x\xed\xa0\x80y"), "x\u{FFFD}\u{FFFD}\u{FFFD}y"); // surrogate
    }

    #[test]
    fn appends_to_what_is_there() {
        let mut out = b"Mina:".to_vec();
        push_sanitized(&mut out, b"hi\r");
        push_sanitized(&mut out, b"\n");
        assert_eq!(out, "Mina:hi\u{FFFD}\u{FFFD}".as_bytes());
    }

    #[test]
    fn long_text_with_a_late_refused_byte() {
        let mut text = vec![b'a'; 1000];
        text[999] = 0x1b;
        text[500] = b'\t';
        let out = sanitized(&text);
        assert_eq!(out.len(), 999 + 3);
        assert!(out.ends_with('\u{FFFD}'));
        for cut in [0, 1, 31, 32, 33, 64, 998] {
            assert_eq!(sanitized(&text[cut..]), model(&text[cut..]));
        }
    }

    #[test]
    fn every_character_is_handled_as_is_refused_says() {
        let mut out = Vec::new();
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            out.clear();
            let text = format!("a{c}b");
            push_sanitized(&mut out, text.as_bytes());
            let expected = if is_refused(c) { "a\u{FFFD}b".to_owned() } else { text };
            assert_eq!(out, expected.as_bytes(), "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn byte_classes_match_their_definitions() {
        for byte in 0..=u8::MAX {
            let c = char::from(byte);
            assert_eq!(is_plain(byte), byte.is_ascii() && !is_refused(c), "{byte:#04x}");
            let may = byte.is_ascii() && is_refused(c) || byte == 0xC2 || byte == 0xE2;
            assert_eq!(may_start_refused(byte), may, "{byte:#04x}");
        }
    }

    fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            4 => proptest::collection::vec(b' '..=b'~', 0..70),
            1 => proptest::collection::vec(any::<u8>(), 0..8),
            1 => proptest::sample::select(vec![
                "\r", "\t", "\x1b[2J", "\0", "\x7f", "\u{85}", "\u{9b}", "\u{a0}", "é", "🙂", "\u{2028}",
                "\u{2029}", "\u{202e}", "\u{2066}", "\u{2069}", "\u{200f}", "\u{fffd}", "\u{2027}",
            ])
            .prop_map(|s| s.as_bytes().to_vec()),
            1 => any::<String>().prop_map(String::into_bytes),
        ];
        proptest::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn output_is_the_model(text in hostile_bytes()) {
            let out = sanitized(&text);
            prop_assert_eq!(&out, &model(&text));
            prop_assert!(!out.chars().any(is_refused));
        }

        #[test]
        fn arbitrary_bytes_give_clean_utf8(text in proptest::collection::vec(any::<u8>(), 0..200)) {
            let out = sanitized(&text);
            prop_assert!(!out.chars().any(is_refused));
            prop_assert_eq!(out, model(&text));
        }

        #[test]
        fn clean_text_is_unchanged(text in any::<String>()) {
            let clean: String = text.chars().filter(|&c| !is_refused(c)).collect();
            prop_assert_eq!(sanitized(clean.as_bytes()), clean);
        }

        #[test]
        fn sanitizing_twice_changes_nothing(text in hostile_bytes()) {
            let once = sanitized(&text);
            prop_assert_eq!(sanitized(once.as_bytes()), once);
        }
    }
}
