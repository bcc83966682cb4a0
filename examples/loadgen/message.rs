//! The text of the generator's own messages, whatever protocol carries them:
//!
//! - data `s<sender> <seq> <send-nanos> xxx…`, padded to `--payload` bytes;
//! - barrier marker `m<sender>`;
//! - idle-mode probe `p`.
//!
//! Every receiver parses every delivery, so parsing allocates nothing and
//! numbers are read by hand.

/// What one delivered text is.
#[derive(Debug, PartialEq, Eq)]
pub enum MessageText {
    Data { sender: u32, seq: u64, sent_ns: u64 },
    Marker(u32),
    Probe,
    Other,
}

/// Decimal digits at `p[i..]`: their value (wrapping) and where they end;
/// `None` when there is no digit.
#[inline]
pub fn digits(p: &[u8], mut i: usize) -> Option<(u64, usize)> {
    let start = i;
    let mut value: u64 = 0;
    while let Some(&b) = p.get(i) {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        value = value.wrapping_mul(10).wrapping_add(d as u64);
        i += 1;
    }
    (i > start).then_some((value, i))
}

#[inline]
pub fn parse_text(p: &[u8]) -> MessageText {
    match p.first() {
        Some(b's') => {
            let parsed = (|| {
                let (sender, i) = digits(p, 1)?;
                if p.get(i) != Some(&b' ') {
                    return None;
                }
                let (seq, i) = digits(p, i + 1)?;
                if p.get(i) != Some(&b' ') {
                    return None;
                }
                let (sent_ns, _) = digits(p, i + 1)?;
                Some(MessageText::Data { sender: u32::try_from(sender).ok()?, seq, sent_ns })
            })();
            parsed.unwrap_or(MessageText::Other)
        }
        Some(b'm') => match digits(p, 1) {
            Some((sender, i)) if i == p.len() => {
                u32::try_from(sender).map_or(MessageText::Other, MessageText::Marker)
            }
            _ => MessageText::Other,
        },
        Some(b'p') if p.len() == 1 => MessageText::Probe,
        _ => MessageText::Other,
    }
}

/// Appends `v` in decimal, without the allocation `format!` would make.
pub fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Replaces `text` with data message `seq` of `sender`, sent at `now_ns`,
/// padded with `x` to `payload` bytes.
pub fn write_data(text: &mut Vec<u8>, payload: usize, sender: u32, seq: u64, now_ns: u64) {
    text.clear();
    text.push(b's');
    put_u64(text, sender as u64);
    text.push(b' ');
    put_u64(text, seq);
    text.push(b' ');
    put_u64(text, now_ns);
    if text.len() < payload {
        text.push(b' ');
        text.resize(payload, b'x');
    }
}

/// Replaces `text` with a marker or probe: `prefix` then `id` if any.
pub fn write_control(text: &mut Vec<u8>, prefix: u8, id: Option<u32>) {
    text.clear();
    text.push(prefix);
    if let Some(id) = id {
        put_u64(text, id as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_text_round_trip() {
        let mut text = Vec::new();
        write_data(&mut text, 40, 7, 12345, 987654321);
        assert_eq!(text.len(), 40);
        assert!(text.starts_with(b"s7 12345 987654321 xxx"));
        assert_eq!(parse_text(&text), MessageText::Data { sender: 7, seq: 12345, sent_ns: 987654321 });
        // A payload smaller than the header is not cut: the header is the text.
        write_data(&mut text, 3, 0, u64::MAX, 1);
        assert_eq!(text, format!("s0 {} 1", u64::MAX).as_bytes());
        assert_eq!(parse_text(&text), MessageText::Data { sender: 0, seq: u64::MAX, sent_ns: 1 });
        write_control(&mut text, b'm', Some(3));
        assert_eq!(parse_text(&text), MessageText::Marker(3));
        write_control(&mut text, b'p', None);
        assert_eq!(parse_text(&text), MessageText::Probe);
    }

    #[test]
    fn malformed_texts_are_other() {
        for text in [
            &b""[..],
            b"hello",
            b"s1 x",
            b"s1 2",
            b"s1 2 ",
            b"s 1 2",
            b"s4294967296 1 2",
            b"m",
            b"m3x",
            b"m4294967296",
            b"pp",
        ] {
            assert_eq!(parse_text(text), MessageText::Other, "{:?}", String::from_utf8_lossy(text));
        }
        assert_eq!(parse_text(b"m4294967295"), MessageText::Marker(u32::MAX));
    }

    #[test]
    fn put_u64_writes_decimal() {
        for v in [0, 7, 10, 99, 1_000_000, u64::MAX] {
            let mut out = b"=".to_vec();
            put_u64(&mut out, v);
            assert_eq!(out, format!("={v}").as_bytes());
        }
    }
}
