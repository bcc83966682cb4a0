//! Validating and folding names and rooms, so that no member can pass for
//! another member or for the server (PROTOCOL §2).
//!
//! Pure functions, no sockets. [`check_name`] and [`check_room`] take the raw
//! JSON string value and give back a [`Checked`]: the `display` spelling that
//! others see and the folded `key` that uniqueness compares. A refusal is a
//! [`NameProblem`] whose `Display` is the one-line reason the client gets as
//! `error: <reason>`.
//!
//! # The rules, in order
//!
//! 1. Surrounding whitespace (Unicode `White_Space`) is trimmed, then the
//!    value is normalised to NFC: `Jose\u{301}` and `José` are one spelling.
//! 2. Empty, or longer than [`MAX_NAME_CHARS`] / [`MAX_ROOM_CHARS`]
//!    characters (counted after NFC): refused.
//! 3. Control characters (C0, DEL, C1): refused.
//! 4. Invisible and formatting characters: general category Cf (zero-width
//!    space and joiners, bidi marks, overrides and isolates, soft hyphen, tag
//!    characters...), Zl and Zp (U+2028, U+2029), and every
//!    `Default_Ignorable_Code_Point` (Hangul fillers such as U+3164,
//!    variation selectors, the combining grapheme joiner...): refused. A
//!    consequence: emoji written with U+FE0F or joined with U+200D are
//!    refused in names; the bare emoji is accepted.
//! 5. Names only: `:` and every character whose folded form contains `:`
//!    (U+FF1A fullwidth colon, U+2236 ratio, U+0589 Armenian full stop,
//!    U+0903 Devanagari visarga, U+A789 modifier letter colon... about forty
//!    in Unicode 18): refused. The set is not a hand list: it is whatever the
//!    confusables data maps to `:`.
//! 6. Names only: a name whose key equals the key of `error` (`ERROR`,
//!    `ｅｒｒｏｒ`, `еrrоr` with Cyrillic letters, `err or`): refused.
//!
//! # The key
//!
//! `key` is built in these steps:
//!
//! 1. NFKC, full Unicode case folding, NFKC again (the classic
//!    `NFKC_Casefold`, less its removal of default-ignorables, which rule 4
//!    refuses anyway). Everything after this depends only on its result, so
//!    a value and its upper-, lower- and title-case, NFC and NFD variants
//!    always share a key.
//! 2. Upper case, then the UTS #39 confusables skeleton: catches capitals
//!    that look alike (Cyrillic `ВОВ` and Greek `ΒΟΒ` against `BOB`).
//! 3. Case folding, then the skeleton again: catches small letters that
//!    look alike (Cyrillic `уеs` against `yes`, `bi11` against `bill`).
//! 4. Case folding again (prototypes are sometimes capitals: `0` becomes
//!    `O`), and every whitespace character dropped, so `Anna Lee`,
//!    `Anna  Lee` and `Anna\u{200A}Lee` (hair space) are one key.
//!
//! `Bob`, `bob`, `Bоb` (Cyrillic о), `ВОВ`, `ＢＯＢ`, `B0B`, `𝐁𝐨𝐛` share a
//! key. The key is for comparison only, never for display: it is a string
//! of prototypes (`m` becomes `rn`). It errs on the side of collisions:
//! since `I` looks like `l` and is `i` in lower case, `i`, `I`, `l`, `L`
//! and `1` all fold alike, so `Ali` and `All` cannot share a room (the
//! second gets "name taken", never a look-alike of the first).
//!
//! # Rooms
//!
//! Rooms get the same trimming, NFC, length, control and invisible rules and
//! the same key; `:` and `error` are allowed in rooms. Two rooms whose keys
//! are equal are the same room: whoever keeps the room table should index it
//! by `key` and keep the `display` of the first member's join as the room's
//! name for as long as the room exists (later joins with another spelling
//! land in the same room and see that first spelling).

use std::fmt;
use std::sync::LazyLock;

use icu_casemap::CaseMapper;
use icu_properties::props::{DefaultIgnorableCodePoint, GeneralCategory};
use icu_properties::{CodePointMapData, CodePointSetData};
use unicode_normalization::{UnicodeNormalization, is_nfc};

/// Longest name, in characters after NFC.
pub const MAX_NAME_CHARS: usize = 32;
/// Longest room name, in characters after NFC.
pub const MAX_ROOM_CHARS: usize = 64;
/// The name the server's own lines use (`error: <reason>`); no member may
/// take it or anything that folds to it.
pub const RESERVED_NAME: &str = "error";

/// A name or room that passed the rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Checked {
    /// Trimmed and NFC: what others see.
    pub display: Box<str>,
    /// Folded (see the module doc): what uniqueness compares. Never shown.
    pub key: Box<str>,
}

/// Which handshake field a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Name,
    Room,
}

impl Field {
    /// The field's name as the client spelled it in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Room => "room",
        }
    }

    /// Longest value accepted, in characters after NFC.
    pub fn max_chars(self) -> usize {
        match self {
            Field::Name => MAX_NAME_CHARS,
            Field::Room => MAX_ROOM_CHARS,
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a name or room was refused. The `char` is the first offending
/// character; `Display` shows it as `U+XXXX` only, so no reason text ever
/// carries a control or invisible character back to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameProblem {
    /// Nothing left after trimming.
    Empty(Field),
    /// More than [`Field::max_chars`] characters after NFC.
    TooLong(Field),
    /// A C0, DEL or C1 control character.
    ControlCharacter(Field, char),
    /// A format (Cf), line or paragraph separator (Zl, Zp) or other
    /// default-ignorable character.
    InvisibleCharacter(Field, char),
    /// Names only: `:` or a character that folds or looks like it.
    Colon(char),
    /// Names only: the name folds to the same key as `error`.
    Reserved,
}

impl NameProblem {
    /// The field that was refused.
    pub fn field(&self) -> Field {
        match *self {
            NameProblem::Empty(field)
            | NameProblem::TooLong(field)
            | NameProblem::ControlCharacter(field, _)
            | NameProblem::InvisibleCharacter(field, _) => field,
            NameProblem::Colon(_) | NameProblem::Reserved => Field::Name,
        }
    }
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NameProblem::Empty(field) => write!(f, "{field} is empty"),
            NameProblem::TooLong(field) => {
                write!(f, "{field} is longer than {} characters", field.max_chars())
            }
            NameProblem::ControlCharacter(field, c) => {
                write!(f, "{field} contains a control character (U+{:04X})", u32::from(c))
            }
            NameProblem::InvisibleCharacter(field, c) => {
                write!(f, "{field} contains an invisible or formatting character (U+{:04X})", u32::from(c))
            }
            NameProblem::Colon(':') => write!(f, "name contains ':'"),
            NameProblem::Colon(c) => {
                write!(f, "name contains a character that looks like ':' (U+{:04X})", u32::from(c))
            }
            NameProblem::Reserved => {
                write!(f, "name \"{RESERVED_NAME}\" is reserved, and so is any name that looks like it")
            }
        }
    }
}

impl std::error::Error for NameProblem {}

/// Checks a member's name (the handshake's raw `name` string).
pub fn check_name(raw: &str) -> Result<Checked, NameProblem> {
    check(raw, Field::Name)
}

/// Checks a room name (the handshake's raw `room` string).
pub fn check_room(raw: &str) -> Result<Checked, NameProblem> {
    check(raw, Field::Room)
}

fn check(raw: &str, field: Field) -> Result<Checked, NameProblem> {
    let trimmed = raw.trim();
    let display: String = if is_nfc(trimmed) { trimmed.to_owned() } else { trimmed.nfc().collect() };
    if display.is_empty() {
        return Err(NameProblem::Empty(field));
    }
    if display.chars().count() > field.max_chars() {
        return Err(NameProblem::TooLong(field));
    }
    for c in display.chars() {
        if c.is_control() {
            return Err(NameProblem::ControlCharacter(field, c));
        }
        if is_invisible(c) {
            return Err(NameProblem::InvisibleCharacter(field, c));
        }
        if field == Field::Name && looks_like_colon(c) {
            return Err(NameProblem::Colon(c));
        }
    }
    let key = fold_key(&display);
    if field == Field::Name {
        // Folding works character by character after NFD, so a name none of
        // whose characters folds to ':' cannot fold to ':' as a whole.
        debug_assert!(!key.contains(':'), "{display:?} folds to {key:?}");
        if key == *RESERVED_KEY {
            return Err(NameProblem::Reserved);
        }
    }
    Ok(Checked { display: display.into_boxed_str(), key: key.into_boxed_str() })
}

static RESERVED_KEY: LazyLock<String> = LazyLock::new(|| fold_key(RESERVED_NAME));

/// Rule 4: format characters, line and paragraph separators, and other
/// default-ignorable code points (which render as nothing).
fn is_invisible(c: char) -> bool {
    matches!(
        CodePointMapData::<GeneralCategory>::new().get(c),
        GeneralCategory::Format | GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator
    ) || CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c)
}

/// Rule 5: `:` itself, or a character whose key contains `:`. No ASCII
/// character other than `:` folds to it.
fn looks_like_colon(c: char) -> bool {
    c == ':' || (!c.is_ascii() && fold_key(c.encode_utf8(&mut [0; 4])).contains(':'))
}

/// The uniqueness key of `text` (see the module doc for the steps).
fn fold_key(text: &str) -> String {
    let case = CaseMapper::new();
    let compat: String = text.nfkc().collect();
    let folded: String = case.fold_string(&compat).nfkc().collect();
    // Capitals first: Cyrillic `В` and Greek `Β` are confusable with `B`
    // only in upper case (in lower case they are `в` and `β`).
    let upper = unicode_security::skeleton(&folded.to_uppercase()).collect::<String>();
    // Then lower case: Cyrillic `у` looks like `y`, `1` like `l`.
    let lower = unicode_security::skeleton(&case.fold_string(&upper)).collect::<String>();
    // The skeleton's prototypes are sometimes capitals (`0` becomes `O`).
    case.fold_string(&lower).chars().filter(|c| !c.is_whitespace()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::FileFailurePersistence;

    fn key(raw: &str) -> Box<str> {
        match check_name(raw) {
            Ok(checked) => checked.key,
            Err(problem) => panic!("{raw:?} refused: {problem}"),
        }
    }

    fn refused(raw: &str) -> NameProblem {
        match check_name(raw) {
            Ok(checked) => panic!("{raw:?} accepted as {checked:?}"),
            Err(problem) => problem,
        }
    }

    #[test]
    fn plain_names_pass_trimmed() {
        let checked = check_name("  Mina ").unwrap();
        assert_eq!(&*checked.display, "Mina");
        assert_eq!(checked.key, check_name("MINA").unwrap().key);
        assert_eq!(&*check_room(" dev:ops\t").unwrap().display, "dev:ops");
    }

    #[test]
    fn zero_width_space_is_refused() {
        assert_eq!(refused("Bob\u{200b}"), NameProblem::InvisibleCharacter(Field::Name, '\u{200b}'));
        assert_eq!(refused("\u{feff}Bob"), NameProblem::InvisibleCharacter(Field::Name, '\u{feff}'));
        assert_eq!(
            refused("error\u{200b}").to_string(),
            "name contains an invisible or formatting character (U+200B)"
        );
    }

    #[test]
    fn other_invisibles_are_refused() {
        for c in [
            '\u{200c}',  // zero-width non-joiner
            '\u{200d}',  // zero-width joiner
            '\u{200e}',  // left-to-right mark
            '\u{202e}',  // right-to-left override
            '\u{2066}',  // left-to-right isolate
            '\u{2028}',  // line separator
            '\u{2029}',  // paragraph separator
            '\u{00ad}',  // soft hyphen
            '\u{2060}',  // word joiner
            '\u{3164}',  // Hangul filler (Lo, but default-ignorable)
            '\u{115f}',  // Hangul choseong filler
            '\u{fe0f}',  // variation selector 16
            '\u{034f}',  // combining grapheme joiner
            '\u{e0041}', // tag latin capital letter A
        ] {
            let raw = format!("Bo{c}b");
            assert_eq!(check_name(&raw), Err(NameProblem::InvisibleCharacter(Field::Name, c)), "{raw:?}");
            assert_eq!(check_room(&raw), Err(NameProblem::InvisibleCharacter(Field::Room, c)), "{raw:?}");
        }
        assert_eq!(
            refused("Bob\u{202e}").to_string(),
            "name contains an invisible or formatting character (U+202E)"
        );
        assert_eq!(
            refused("Bob\u{2028}x").to_string(),
            "name contains an invisible or formatting character (U+2028)"
        );
    }

    #[test]
    fn control_characters_are_refused_without_being_echoed() {
        for c in ['\0', '\u{7}', '\u{1b}', '\r', '\u{7f}', '\u{85}', '\u{9b}'] {
            let raw = format!("B{c}ob");
            let problem = refused(&raw);
            assert_eq!(problem, NameProblem::ControlCharacter(Field::Name, c));
            let text = problem.to_string();
            assert!(!text.contains(c), "{text:?}");
            assert_eq!(text, format!("name contains a control character (U+{:04X})", c as u32));
        }
        assert_eq!(
            check_room("d\u{85}ev").unwrap_err().to_string(),
            "room contains a control character (U+0085)"
        );
    }

    #[test]
    fn decomposed_and_composed_are_one_name() {
        let decomposed = check_name("Jose\u{301}").unwrap();
        let composed = check_name("José").unwrap();
        assert_eq!(decomposed, composed);
        assert_eq!(&*decomposed.display, "José");
        assert_ne!(key("José"), key("Jose"));
    }

    #[test]
    fn case_and_confusables_share_a_key() {
        let bob = key("Bob");
        for variant in ["bob", "BOB", "Bоb", "ВОВ", "ΒΟΒ", "ＢＯＢ", "B0B", "𝐁𝐨𝐛", "bob "]
        {
            assert_eq!(key(variant), bob, "{variant:?}");
        }
        assert_eq!(key("TOM"), key("ТОМ"));
        assert_eq!(key("yes"), key("уеs"));
        assert_eq!(key("Bill"), key("BiII"));
        assert_eq!(key("bill"), key("bi11"));
        assert_eq!(key("Bill"), key("BILL"));
        assert_eq!(key("mom"), key("rnorn"));
        // The price of folding case and look-alikes together (module doc).
        assert_eq!(key("Ali"), key("All"));
        assert_eq!(key("Straße"), key("STRASSE"));
        assert_eq!(key("ı"), key("I"));
        assert_eq!(key("Anna Lee"), key("Anna  Lee"));
        assert_eq!(key("Anna Lee"), key("Anna\u{200a}Lee"));
        assert_ne!(key("Bob"), key("Rob"));
    }

    #[test]
    fn colon_and_its_lookalikes_are_refused_in_names() {
        assert_eq!(refused("Bob:hello"), NameProblem::Colon(':'));
        assert_eq!(refused("Bob:hello").to_string(), "name contains ':'");
        for c in
            ['\u{ff1a}', '\u{2236}', '\u{0589}', '\u{05c3}', '\u{a789}', '\u{fe13}', '\u{fe55}', '\u{2254}']
        {
            let raw = format!("Bob{c}hello");
            assert_eq!(refused(&raw), NameProblem::Colon(c), "{raw:?}");
        }
        assert_eq!(
            refused("Bob：hello").to_string(),
            "name contains a character that looks like ':' (U+FF1A)"
        );
        for c in [';', '.', '\u{37e}', '\u{b7}'] {
            assert!(check_name(&format!("Bob{c}x")).is_ok(), "{c:?}");
        }
        assert_eq!(&*check_room("Bob：hello").unwrap().display, "Bob：hello");
    }

    #[test]
    fn nothing_that_folds_to_error_is_a_name() {
        for raw in ["error", "Error", "ERROR", "ｅｒｒｏｒ", "еrrоr", "err or", "ERRОR", "𝐞𝐫𝐫𝐨𝐫"]
        {
            assert_eq!(refused(raw), NameProblem::Reserved, "{raw:?}");
        }
        assert_eq!(
            refused("ｅｒｒｏｒ").to_string(),
            "name \"error\" is reserved, and so is any name that looks like it"
        );
        assert!(check_name("errors").is_ok());
        assert!(check_room("error").is_ok());
    }

    #[test]
    fn empty_and_long_values() {
        assert_eq!(refused(" \t "), NameProblem::Empty(Field::Name));
        assert_eq!(refused("").to_string(), "name is empty");
        assert_eq!(check_room("").unwrap_err().to_string(), "room is empty");
        assert!(check_name(&"é".repeat(MAX_NAME_CHARS)).is_ok());
        // 32 decomposed é are 64 characters before NFC, 32 after.
        assert!(check_name(&"e\u{301}".repeat(MAX_NAME_CHARS)).is_ok());
        assert_eq!(refused(&"é".repeat(MAX_NAME_CHARS + 1)).to_string(), "name is longer than 32 characters");
        assert!(check_room(&"r".repeat(MAX_ROOM_CHARS)).is_ok());
        assert_eq!(
            check_room(&"r".repeat(MAX_ROOM_CHARS + 1)).unwrap_err().to_string(),
            "room is longer than 64 characters"
        );
    }

    #[test]
    fn rooms_fold_like_names() {
        let first = check_room("Dev").unwrap();
        let second = check_room("ＤＥＶ").unwrap();
        assert_eq!(first.key, second.key);
        assert_ne!(first.display, second.display);
    }

    #[test]
    fn problems_know_their_field() {
        assert_eq!(check_room("").unwrap_err().field(), Field::Room);
        assert_eq!(refused("a:b").field(), Field::Name);
        assert_eq!(refused("error").field(), Field::Name);
    }

    /// Characters the attacks use, mixed into arbitrary ones.
    fn hostile_char() -> impl Strategy<Value = char> {
        prop_oneof![
            4 => proptest::char::range('a', 'z'),
            2 => proptest::char::range('A', 'Z'),
            1 => proptest::char::range('\u{0}', '\u{ff}'),
            1 => proptest::char::range('\u{300}', '\u{36f}'),
            1 => proptest::char::range('\u{391}', '\u{3c9}'),
            1 => proptest::char::range('\u{400}', '\u{45f}'),
            1 => proptest::char::range('\u{2000}', '\u{206f}'),
            1 => proptest::char::range('\u{ff01}', '\u{ff5e}'),
            1 => proptest::sample::select(vec![
                ':', ' ', 'ß', 'ẞ', 'ı', 'İ', 'ς', 'Σ', '\u{3164}', '\u{fe0f}', '\u{903}', '\u{2236}',
                '\u{345}', 'ǅ', 'ﬃ', '\u{1c90}', '\u{13f8}', '\u{e0041}',
            ]),
            2 => any::<char>(),
        ]
    }

    fn hostile_string() -> impl Strategy<Value = String> {
        proptest::collection::vec(hostile_char(), 0..40).prop_map(String::from_iter)
    }

    fn check_field(raw: &str, field: Field) -> Result<Checked, NameProblem> {
        match field {
            Field::Name => check_name(raw),
            Field::Room => check_room(raw),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            // Regressions are kept next to this file, not at the top level.
            failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
            ..ProptestConfig::with_cases(2048)
        })]

        #[test]
        fn accepted_values_hold_no_refused_character(raw in hostile_string(), room in any::<bool>()) {
            let field = if room { Field::Room } else { Field::Name };
            if let Ok(checked) = check_field(&raw, field) {
                let display = &*checked.display;
                prop_assert!(is_nfc(display));
                prop_assert_eq!(display.trim(), display);
                prop_assert!(!display.is_empty() && display.chars().count() <= field.max_chars());
                for c in display.chars() {
                    prop_assert!(!c.is_control() && !is_invisible(c), "{:?}", c);
                    prop_assert!(field == Field::Room || !looks_like_colon(c), "{:?}", c);
                }
                if field == Field::Name {
                    prop_assert!(!checked.key.contains(':'));
                    prop_assert_ne!(&*checked.key, RESERVED_KEY.as_str());
                }
            }
        }

        #[test]
        fn checking_a_display_again_changes_nothing(raw in hostile_string(), room in any::<bool>()) {
            let field = if room { Field::Room } else { Field::Name };
            if let Ok(checked) = check_field(&raw, field) {
                prop_assert_eq!(check_field(&checked.display, field), Ok(checked.clone()));
            }
        }

        #[test]
        fn case_and_normalisation_variants_share_the_key(raw in hostile_string()) {
            if let Ok(checked) = check_name(&raw) {
                let display = &*checked.display;
                let variants = [
                    display.to_lowercase(),
                    display.to_uppercase(),
                    display.nfd().collect(),
                    display.nfkc().collect(),
                    display.nfkd().collect(),
                    CaseMapper::new().fold_string(display).into_owned(),
                ];
                for variant in variants {
                    prop_assert_eq!(&*fold_key(&variant), &*checked.key, "{:?}", variant);
                    if let Ok(other) = check_name(&variant) {
                        prop_assert_eq!(&other.key, &checked.key);
                    }
                }
            }
        }

        #[test]
        fn reasons_are_one_clean_line(raw in hostile_string(), room in any::<bool>()) {
            let field = if room { Field::Room } else { Field::Name };
            if let Err(problem) = check_field(&raw, field) {
                let text = problem.to_string();
                prop_assert!(text.is_ascii() && !text.chars().any(|c| c.is_ascii_control()), "{:?}", text);
                prop_assert!(text.starts_with(field.as_str()));
            }
        }
    }
}
