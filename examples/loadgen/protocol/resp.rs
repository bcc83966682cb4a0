//! Redis's RESP2, as little as pub/sub needs: PUBLISH and SUBSCRIBE
//! commands out, and replies in, read in place without copying.

use crate::message::{digits, put_u64};

/// What a reply array's first element says.
#[derive(Debug, PartialEq, Eq)]
pub enum ArrayKind {
    Message,
    Subscribe,
    Other,
}

/// One complete reply; positions are byte offsets into the parsed input.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Integer,
    /// A simple string or a bulk string (or null).
    Simple,
    /// An error: where its text starts and ends.
    Error(usize, usize),
    /// An array: what its first element says and where its third one is.
    Array(ArrayKind, usize, usize),
}

fn write_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    put_u64(out, bytes.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

pub fn write_publish(out: &mut Vec<u8>, channel: &[u8], message: &[u8]) {
    out.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n");
    write_bulk(out, channel);
    write_bulk(out, message);
}

pub fn write_subscribe(out: &mut Vec<u8>, channel: &[u8]) {
    out.extend_from_slice(b"*2\r\n$9\r\nSUBSCRIBE\r\n");
    write_bulk(out, channel);
}

/// End of a line's content (before `\r`) and the start of the next line.
#[inline]
fn line_at(b: &[u8], pos: usize) -> Option<(usize, usize)> {
    let nl = pos + memchr::memchr(b'\n', &b[pos..])?;
    let end = if nl > pos && b[nl - 1] == b'\r' { nl - 1 } else { nl };
    Some((end, nl + 1))
}

#[inline]
fn parse_length(s: &[u8]) -> Result<i64, String> {
    let (negative, body) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    match digits(body, 0) {
        Some((v, n)) if n == body.len() => Ok(if negative { -(v as i64) } else { v as i64 }),
        _ => Err(format!("bad RESP length {:?}", String::from_utf8_lossy(s))),
    }
}

/// Fast path for the common case, a complete pub/sub delivery
/// `*3 $7 message $<n> <channel> $<n> <payload>`: returns the length used and
/// where the payload is; `None` means "ask `parse_reply`".
#[inline]
pub fn parse_message(b: &[u8]) -> Option<(usize, usize, usize)> {
    const HEAD: &[u8] = b"*3\r\n$7\r\nmessage\r\n$";
    if !b.starts_with(HEAD) {
        return None;
    }
    let bulk = |p: usize| -> Option<(usize, usize)> {
        let (n, q) = digits(b, p)?;
        if b.get(q..q + 2)? != b"\r\n" {
            return None;
        }
        let end = (q + 2).checked_add(usize::try_from(n).ok()?)?;
        if b.get(end..end + 2)? != b"\r\n" {
            return None;
        }
        Some((q + 2, end))
    };
    let (_, channel_end) = bulk(HEAD.len())?;
    if b.get(channel_end + 2) != Some(&b'$') {
        return None;
    }
    let (start, end) = bulk(channel_end + 3)?;
    Some((end + 2, start, end))
}

/// Parses one RESP2 reply at the start of `b`: `Ok(None)` when incomplete.
pub fn parse_reply(b: &[u8]) -> Result<Option<(usize, Reply)>, String> {
    if b.is_empty() {
        return Ok(None);
    }
    let Some((end, next)) = line_at(b, 0) else {
        return Ok(None);
    };
    match b[0] {
        b':' => Ok(Some((next, Reply::Integer))),
        b'+' => Ok(Some((next, Reply::Simple))),
        b'-' => Ok(Some((next, Reply::Error(1, end)))),
        b'$' => {
            let n = parse_length(&b[1..end])?;
            if n < 0 {
                return Ok(Some((next, Reply::Simple)));
            }
            let stop = next + n as usize + 2;
            Ok((stop <= b.len()).then_some((stop, Reply::Simple)))
        }
        b'*' => {
            let n = parse_length(&b[1..end])?;
            let mut p = next;
            let mut kind = ArrayKind::Other;
            let mut third = (0, 0);
            for k in 0..n.max(0) {
                if p >= b.len() {
                    return Ok(None);
                }
                let Some((element_end, element_next)) = line_at(b, p) else {
                    return Ok(None);
                };
                match b[p] {
                    b'$' => {
                        let len = parse_length(&b[p + 1..element_end])?;
                        if len < 0 {
                            p = element_next;
                            continue;
                        }
                        let (start, end) = (element_next, element_next + len as usize);
                        if end + 2 > b.len() {
                            return Ok(None);
                        }
                        if k == 0 {
                            kind = match &b[start..end] {
                                b"message" => ArrayKind::Message,
                                b"subscribe" => ArrayKind::Subscribe,
                                _ => ArrayKind::Other,
                            };
                        } else if k == 2 {
                            third = (start, end);
                        }
                        p = end + 2;
                    }
                    b':' | b'+' => p = element_next,
                    b'-' => return Ok(Some((element_next, Reply::Error(p + 1, element_end)))),
                    other => return Err(format!("unexpected RESP element {:?}", other as char)),
                }
            }
            Ok(Some((p, Reply::Array(kind, third.0, third.1))))
        }
        _ => Err(format!("not a Redis reply: {:?}", String::from_utf8_lossy(&b[..end.min(120)]))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_fast_and_slow_paths_agree() {
        let msg = b"*3\r\n$7\r\nmessage\r\n$3\r\nlg0\r\n$5\r\nhello\r\n";
        let (used, s, e) = parse_message(msg).unwrap();
        assert_eq!((used, &msg[s..e]), (msg.len(), &b"hello"[..]));
        match parse_reply(msg).unwrap().unwrap() {
            (u, Reply::Array(ArrayKind::Message, s, e)) => {
                assert_eq!(u, msg.len());
                assert_eq!(&msg[s..e], b"hello");
            }
            other => panic!("not a message: {other:?}"),
        }
        for cut in 0..msg.len() {
            assert!(parse_message(&msg[..cut]).is_none());
            assert!(parse_reply(&msg[..cut]).unwrap().is_none(), "cut {cut}");
        }
        let sub = b"*3\r\n$9\r\nsubscribe\r\n$3\r\nlg0\r\n:1\r\n";
        assert!(matches!(parse_reply(sub).unwrap(), Some((32, Reply::Array(ArrayKind::Subscribe, _, _)))));
        assert!(matches!(parse_reply(b":12\r\n").unwrap(), Some((5, Reply::Integer))));
        assert!(matches!(parse_reply(b"-ERR x\r\n").unwrap(), Some((8, Reply::Error(1, 6)))));
    }

    #[test]
    fn resp_payload_with_crlf_inside_is_taken_by_length() {
        let msg = b"*3\r\n$7\r\nmessage\r\n$3\r\nlg0\r\n$4\r\na\r\nb\r\n:1\r\n";
        let (used, s, e) = parse_message(msg).unwrap();
        assert_eq!(&msg[s..e], b"a\r\nb");
        assert_eq!(parse_reply(&msg[used..]).unwrap(), Some((4, Reply::Integer)));
    }

    #[test]
    fn resp_errors_and_odd_replies() {
        assert!(parse_reply(b"hello\r\n").unwrap_err().starts_with("not a Redis reply"));
        assert!(parse_reply(b"$x\r\n").unwrap_err().starts_with("bad RESP length"));
        assert!(parse_reply(b"*1\r\n!\r\n").unwrap_err().starts_with("unexpected RESP element"));
        assert_eq!(parse_reply(b"$-1\r\n").unwrap(), Some((5, Reply::Simple)));
        assert_eq!(parse_reply(b"*-1\r\n").unwrap(), Some((5, Reply::Array(ArrayKind::Other, 0, 0))));
        // An error inside an array is reported at its text.
        let nested = b"*2\r\n$3\r\nfoo\r\n-ERR bad\r\n";
        let (used, reply) = parse_reply(nested).unwrap().unwrap();
        assert_eq!(used, nested.len());
        let Reply::Error(s, e) = reply else { panic!("{reply:?}") };
        assert_eq!(&nested[s..e], b"ERR bad");
    }

    #[test]
    fn resp_commands_are_well_formed() {
        let mut out = Vec::new();
        write_publish(&mut out, b"lg0", b"s0 1 2");
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$3\r\nlg0\r\n$6\r\ns0 1 2\r\n");
        out.clear();
        write_subscribe(&mut out, b"room12");
        assert_eq!(out, b"*2\r\n$9\r\nSUBSCRIBE\r\n$6\r\nroom12\r\n");
    }
}
