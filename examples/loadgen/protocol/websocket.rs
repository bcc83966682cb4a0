//! The client's side of WebSocket (RFC 6455), as little as machat needs: the
//! HTTP upgrade, masked client frames, and reading the server's unmasked
//! frames in place, without copying payloads.

/// Longest HTTP upgrade response accepted.
pub const MAX_HTTP_HEAD: usize = 16 * 1024;

pub const OPCODE_TEXT: u8 = 0x1;
pub const OPCODE_PONG: u8 = 0xA;

/// Appends one client frame, masked with `mask` as clients must.
pub fn write_client_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    for (i, b) in out[start..].iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// One complete server frame, borrowed from the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Text, binary or continuation: machat's lines, possibly several.
    Data(&'a [u8]),
    Close {
        code: u16,
        reason: &'a [u8],
    },
    Ping(&'a [u8]),
    /// Pong or a reserved opcode: nothing to do.
    Ignored,
}

/// The frame at the start of `b` and its length on the wire; `Ok(None)` when
/// it is not all here yet.
pub fn next_frame(b: &[u8]) -> Result<Option<(usize, Frame<'_>)>, String> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[1] & 0x80 != 0 {
        return Err("server sent a masked frame".into());
    }
    let (len, head) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as u64, 4),
        127 if b.len() >= 10 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[2..10]);
            (u64::from_be_bytes(n), 10)
        }
        126 | 127 => return Ok(None),
        n => (n as u64, 2),
    };
    let Some(total) = usize::try_from(len).ok().and_then(|l| l.checked_add(head)) else {
        return Err(format!("absurd frame length {len}"));
    };
    if b.len() < total {
        return Ok(None);
    }
    let payload = &b[head..total];
    let frame = match b[0] & 0x0f {
        0..=2 => Frame::Data(payload),
        8 => {
            // No status code means 1005, "no status received" (RFC 6455 7.1.5).
            let code = if payload.len() >= 2 { u16::from_be_bytes([payload[0], payload[1]]) } else { 1005 };
            Frame::Close { code, reason: payload.get(2..).unwrap_or(b"") }
        }
        9 => Frame::Ping(payload),
        _ => Frame::Ignored,
    };
    Ok(Some((total, frame)))
}

/// The HTTP request that asks for the upgrade; `key` is 16 random bytes.
pub fn upgrade_request(path: &str, host: &str, key: &[u8; 16]) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://{host}/\r\n\r\n",
        base64(key)
    )
}

/// Reads the upgrade response at the start of `b`: the length of its head
/// when it is `101`, `Ok(None)` when incomplete, or why it is refused.
pub fn parse_upgrade_response(b: &[u8]) -> Result<Option<usize>, String> {
    let Some(end) = memchr::memmem::find(b, b"\r\n\r\n") else {
        if b.len() > MAX_HTTP_HEAD {
            return Err("WebSocket upgrade response too long".into());
        }
        return Ok(None);
    };
    let status = b[..end].split(|&c| c == b'\n').next().unwrap_or(b"");
    if status.starts_with(b"HTTP/1.1 101") || status.starts_with(b"HTTP/1.0 101") {
        Ok(Some(end + 4))
    } else {
        Err(format!("WebSocket upgrade refused: {}", String::from_utf8_lossy(status).trim_end()))
    }
}

/// Standard base64 with padding, for the `Sec-WebSocket-Key`.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for k in 0..4 {
            if k <= chunk.len() {
                s.push(ALPHABET[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server (unmasked) frame, as machat would send it.
    fn server_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        let n = payload.len();
        if n < 126 {
            out.push(n as u8);
        } else if n <= u16::MAX as usize {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn ws_frames_are_masked_and_sized() {
        for n in [0usize, 125, 126, 65535, 65536] {
            let payload: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let mut out = Vec::new();
            write_client_frame(&mut out, OPCODE_TEXT, &payload, [1, 2, 3, 0x80]);
            assert_eq!(out[0], 0x81);
            assert!(out[1] & 0x80 != 0);
            let (len, head) = match out[1] & 0x7f {
                126 => (u16::from_be_bytes([out[2], out[3]]) as usize, 4),
                127 => (u64::from_be_bytes(out[2..10].try_into().unwrap()) as usize, 10),
                l => (l as usize, 2),
            };
            assert_eq!(len, n);
            let mask = &out[head..head + 4];
            assert_eq!(mask, [1, 2, 3, 0x80]);
            let body: Vec<u8> = out[head + 4..].iter().enumerate().map(|(i, b)| b ^ mask[i & 3]).collect();
            assert_eq!(body, payload);
        }
    }

    #[test]
    fn server_frames_parse_at_every_length_encoding() {
        for n in [0usize, 1, 125, 126, 65535, 65536] {
            let payload = vec![b'a'; n];
            let wire = server_frame(0x81, &payload);
            assert_eq!(next_frame(&wire), Ok(Some((wire.len(), Frame::Data(&payload[..])))), "length {n}");
            // Every proper prefix is incomplete, never an error or a frame.
            for cut in [0, 1, 2, 3, wire.len() / 2, wire.len() - 1] {
                if cut < wire.len() {
                    assert_eq!(next_frame(&wire[..cut]), Ok(None), "length {n} cut {cut}");
                }
            }
        }
    }

    #[test]
    fn server_control_frames() {
        let mut close = 1008u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"slow consumer");
        let wire = server_frame(0x88, &close);
        assert_eq!(
            next_frame(&wire),
            Ok(Some((wire.len(), Frame::Close { code: 1008, reason: b"slow consumer" })))
        );
        assert_eq!(next_frame(&[0x88, 0]), Ok(Some((2, Frame::Close { code: 1005, reason: b"" }))));
        assert_eq!(next_frame(&[0x89, 1, b'x']), Ok(Some((3, Frame::Ping(b"x")))));
        assert_eq!(next_frame(&[0x8A, 0]), Ok(Some((2, Frame::Ignored))));
        // Two frames back to back: the first's length is where the second starts.
        let mut two = server_frame(0x81, b"a:1\n");
        two.extend_from_slice(&server_frame(0x81, b"b:2\n"));
        let (used, _) = next_frame(&two).unwrap().unwrap();
        assert_eq!(next_frame(&two[used..]), Ok(Some((6, Frame::Data(b"b:2\n")))));
    }

    #[test]
    fn server_frame_errors() {
        assert!(next_frame(&[0x81, 0x81, 0, 0, 0, 0, b'x']).unwrap_err().contains("masked"));
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(next_frame(&huge).unwrap_err().contains("absurd"));
    }

    #[test]
    fn upgrade_response() {
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00";
        assert_eq!(parse_upgrade_response(ok), Ok(Some(ok.len() - 2)));
        assert_eq!(parse_upgrade_response(&ok[..20]), Ok(None));
        let refused = parse_upgrade_response(b"HTTP/1.1 403 Forbidden\r\n\r\n").unwrap_err();
        assert_eq!(refused, "WebSocket upgrade refused: HTTP/1.1 403 Forbidden");
        let endless = vec![b'a'; MAX_HTTP_HEAD + 1];
        assert!(parse_upgrade_response(&endless).is_err());
        assert_eq!(parse_upgrade_response(&endless[..MAX_HTTP_HEAD]), Ok(None));
    }

    #[test]
    fn upgrade_request_carries_the_key() {
        let request = upgrade_request("/mychat", "127.0.0.1:8099", b"the sample nonce");
        assert!(request.starts_with("GET /mychat HTTP/1.1\r\nHost: 127.0.0.1:8099\r\n"));
        assert!(request.contains("\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
        assert!(request.ends_with("Origin: http://127.0.0.1:8099/\r\n\r\n"));
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let parsed = httparse::Request::new(&mut headers).parse(request.as_bytes()).unwrap();
        assert!(parsed.is_complete());
    }

    #[test]
    fn base64_matches_known_values() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
    }
}
