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
//! printable ASCII (plus TAB) is found by a branch-free scan over 64- and
//! 16-byte blocks that the compiler vectorises, and is copied with one
//! `extend_from_slice`. Anything else takes the checked path: the text is
//! validated with `std::str::from_utf8` (as `Batch::push` did), then from
//! the end of the clean prefix a second block scan looks at each position
//! with two bytes of look-ahead for the exact byte sequences of refused
//! characters, and the text between them is copied in whole runs, so valid
//! UTF-8 with nothing refused is one more vectorised pass and still one
//! copy.

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
    let clean = prefix_len(text, is_plain);
    if clean == text.len() {
        out.extend_from_slice(text);
        return;
    }
    out.reserve(text.len());
    match std::str::from_utf8(text) {
        // The first `clean` bytes need no second look.
        Ok(valid) => push_valid(out, valid, clean),
        Err(_) => {
            for chunk in text.utf8_chunks() {
                push_valid(out, chunk.valid(), 0);
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
    // 0x20..=0x7E are exactly the bytes that, plus one, are above 0x20 as
    // signed bytes: one add and one signed compare per vector. `|`, not
    // `||`: no branches, so blocks vectorise.
    ((byte.wrapping_add(1) as i8) > 0x20) | (byte == b'\t')
}

/// Length of the longest prefix of `text` whose bytes all satisfy `keep`:
/// 64-byte blocks, then 16-byte blocks, then the last 16 bytes as one block
/// (overlapping bytes already tested), so that only the first block that
/// fails, or a text shorter than 16 bytes, is searched byte by byte.
#[inline(always)]
fn prefix_len(text: &[u8], keep: impl Fn(u8) -> bool + Copy) -> usize {
    let start = clean_blocks::<64>(text, keep);
    let start = start + clean_blocks::<16>(&text[start..], keep);
    if let Some(last) = text.last_chunk::<16>()
        && start + 16 > text.len()
        && is_clean(last, keep)
    {
        return text.len();
    }
    start + text[start..].iter().position(|&byte| !keep(byte)).unwrap_or(text.len() - start)
}

/// Whether every byte of `block` satisfies `keep`. No early exit, which the
/// compiler turns into a few vector instructions per 16 bytes.
#[inline(always)]
fn is_clean<const N: usize>(block: &[u8; N], keep: impl Fn(u8) -> bool) -> bool {
    block.iter().fold(true, |all, &byte| all & keep(byte))
}

/// Bytes in the whole `N`-byte blocks at the start of `text` whose bytes
/// all satisfy `keep`.
#[inline(always)]
fn clean_blocks<const N: usize>(text: &[u8], keep: impl Fn(u8) -> bool + Copy) -> usize {
    let (blocks, _) = text.as_chunks::<N>();
    blocks.iter().position(|block| !is_clean(block, keep)).unwrap_or(blocks.len()) * N
}

/// Appends valid UTF-8, replacing refused characters, which the first
/// `clean` bytes are known to hold none of. Runs between them are copied
/// whole.
fn push_valid(out: &mut Vec<u8>, text: &str, clean: usize) {
    let bytes = text.as_bytes();
    let mut copied = 0;
    let mut from = clean;
    while let Some(found) = find_refused(bytes, from) {
        out.extend_from_slice(&bytes[copied..found]);
        out.extend_from_slice(REPLACEMENT_UTF8);
        // Refused characters are one (ASCII), two (C1) or three bytes long.
        let width = match bytes[found] {
            0x00..=0x7F => 1,
            0xC2 => 2,
            _ => 3,
        };
        copied = found + width;
        from = copied;
    }
    out.extend_from_slice(&bytes[copied..]);
}

/// Whether a refused character starts at a byte `b0` followed by `b1` and
/// `b2` (callers pass spaces past the end), in valid UTF-8: an ASCII control but TAB, C2
/// 80–9F (C1), E2 80 A8–AE (U+2028–U+202E) or E2 81 A6–A9 (U+2066–U+2069).
/// Continuation bytes never match. Branch-free, so blocks vectorise.
#[inline(always)]
fn refused_at(b0: u8, b1: u8, b2: u8) -> bool {
    let ascii_control = ((b0 < 0x20) & (b0 != b'\t')) | (b0 == 0x7F);
    let c1 = (b0 == 0xC2) & (b1 <= 0x9F);
    let separator_or_bidi = ((b1 == 0x80) & (b2.wrapping_sub(0xA8) <= 0xAE - 0xA8))
        | ((b1 == 0x81) & (b2.wrapping_sub(0xA6) <= 0xA9 - 0xA6));
    ascii_control | c1 | ((b0 == 0xE2) & separator_or_bidi)
}

/// The first position at or after `from` where [`refused_at`] holds. Tests
/// 16 positions at a time (with two bytes of look-ahead), so text with
/// nothing refused is one vectorised pass; the last positions are tested as
/// one more window that overlaps positions already tested, or, when fewer
/// than a window's bytes follow `from`, padded to a whole window.
fn find_refused(bytes: &[u8], from: usize) -> Option<usize> {
    let mut start = from;
    while let Some(window) = bytes.get(start..).and_then(|rest| rest.first_chunk::<WINDOW>()) {
        if let Some(position) = first_in_window(window) {
            return Some(start + position);
        }
        start += POSITIONS;
    }
    if start == bytes.len() {
        return None;
    }
    // Spaces never match, as a position or as look-ahead, and a valid text
    // never ends inside a character, so no match needs look-ahead past the
    // end: the last two positions can only be ASCII controls or a C1.
    let last_two = || {
        let at = |k: usize| refused_at(bytes[k], bytes.get(k + 1).copied().unwrap_or(b' '), b' ');
        (start.max(bytes.len().saturating_sub(2))..bytes.len()).find(|&k| at(k))
    };
    if bytes.len() - from >= WINDOW {
        let last = bytes.last_chunk::<WINDOW>().expect("checked above");
        let first = bytes.len() - WINDOW;
        // Positions before `start` in this window were clean.
        return first_in_window(last).map(|k| first + k).filter(|&k| k >= start).or_else(last_two);
    }
    let rest = &bytes[start..];
    let mut padded = [b' '; WINDOW];
    padded[..rest.len()].copy_from_slice(rest);
    first_in_window(&padded).map(|k| start + k).or_else(last_two)
}

/// Positions tested together by [`find_refused`].
const POSITIONS: usize = 16;
/// Bytes those positions need: two of look-ahead.
const WINDOW: usize = POSITIONS + 2;

/// The first of the window's [`POSITIONS`] where a refused character starts.
#[inline(always)]
fn first_in_window(window: &[u8; WINDOW]) -> Option<usize> {
    let at = |k: usize| refused_at(window[k], window[k + 1], window[k + 2]);
    // No early exit while testing, so this is a few vector instructions.
    if (0..POSITIONS).fold(false, |any, k| any | at(k)) { (0..POSITIONS).find(|&k| at(k)) } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::FileFailurePersistence;

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
            if byte.is_ascii() {
                assert_eq!(refused_at(byte, 0, 0), is_refused(c), "{byte:#04x}");
            }
        }
    }

    #[test]
    fn every_length_and_position_around_the_blocks() {
        for len in 0..=150 {
            let clean: Vec<u8> = (0..len).map(|i| b"ab\tcd"[i % 5]).collect();
            assert_eq!(sanitized(&clean).as_bytes(), clean);
            for at in 0..len {
                for bad in ["\x1b", "\x7f", "é", "\u{85}", "\u{202e}", "☕", "\u{2029}"] {
                    let mut text = clean[..at].to_vec();
                    text.extend_from_slice(bad.as_bytes());
                    text.extend_from_slice(&clean[at..]);
                    assert_eq!(sanitized(&text), model(&text), "{len} {at} {bad:?}");
                }
            }
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
        #![proptest_config(ProptestConfig {
            // Regressions are kept next to this file, not at the top level.
            failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
            ..ProptestConfig::with_cases(4096)
        })]

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
