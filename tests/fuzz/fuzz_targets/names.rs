//! Names, rooms and message text on arbitrary input: never panics; an
//! accepted name or room holds no character the rules refuse and checks
//! again to itself; a refusal is one clean ASCII line; sanitised text is
//! valid UTF-8 with nothing refused in it, and sanitising it again changes
//! nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use machat::internal::names::{Checked, NameProblem, check_name, check_room};
use machat::internal::output::Batch;
use machat::internal::sanitize::{is_refused, push_sanitized};

fn check_value(raw: &str, check: fn(&str) -> Result<Checked, NameProblem>) {
    match check(raw) {
        Ok(checked) => {
            assert!(!checked.display.is_empty());
            assert!(!checked.display.chars().any(|c| c.is_control() || matches!(c, '\u{200b}' | '\u{202e}')));
            assert_eq!(check(&checked.display).as_ref(), Ok(&checked));
        }
        Err(problem) => {
            let text = problem.to_string();
            assert!(text.is_ascii() && !text.bytes().any(|b| b.is_ascii_control()), "{text:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check_value(text, check_name);
        check_value(text, check_room);
        if let Ok(name) = check_name(text) {
            assert!(!name.display.contains(':') && !name.key.contains(':'));
        }
    }
    let mut out = Vec::new();
    push_sanitized(&mut out, data);
    let clean = std::str::from_utf8(&out).expect("sanitised text is UTF-8");
    assert!(!clean.chars().any(is_refused));
    let mut again = Vec::new();
    push_sanitized(&mut again, &out);
    assert_eq!(again, out);
    let mut batch = Batch::new();
    batch.push("Mina", data);
    batch.encode_frames();
    assert!(batch.lines().ends_with(b"\n"));
});
