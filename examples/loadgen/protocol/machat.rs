//! machat's own protocol, the same over TCP and inside WebSocket text
//! messages: a JSON handshake line, then `text\n` lines out and
//! `name:text\n` deliveries (or `error: reason\n`) in. See docs/PROTOCOL.md.

/// The first line a client sends: who it is and which room it joins.
pub fn handshake_json(name: &str, room: &str) -> String {
    let mut s = serde_json::json!({ "name": name, "room": room }).to_string();
    s.push('\n');
    s
}

/// One line from the server, without its `\n`.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// `name:text`: the text.
    Delivery(&'a [u8]),
    /// `error: reason`, whole.
    Error(&'a [u8]),
    Empty,
    /// Anything else: counted, not understood.
    Other,
}

#[inline]
pub fn parse_line(line: &[u8]) -> Line<'_> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.starts_with(b"error:") {
        return Line::Error(line);
    }
    // Names are short: a plain scan beats a memchr call here.
    match line.iter().position(|&b| b == b':') {
        Some(colon) => Line::Delivery(&line[colon + 1..]),
        None if line.is_empty() => Line::Empty,
        None => Line::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_from_the_server() {
        assert_eq!(parse_line(b"r12:s0 1 2 xx"), Line::Delivery(b"s0 1 2 xx"));
        assert_eq!(parse_line(b"r12:a:b\r"), Line::Delivery(b"a:b"));
        assert_eq!(parse_line(b":"), Line::Delivery(b""));
        assert_eq!(parse_line(b"error: slow consumer"), Line::Error(b"error: slow consumer"));
        assert_eq!(parse_line(b"\r"), Line::Empty);
        assert_eq!(parse_line(b""), Line::Empty);
        assert_eq!(parse_line(b"hello"), Line::Other);
    }

    #[test]
    fn handshake_is_one_json_line() {
        let line = handshake_json("r\"1", "lg0");
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value, serde_json::json!({ "name": "r\"1", "room": "lg0" }));
    }
}
