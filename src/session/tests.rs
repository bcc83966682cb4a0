//! Every stage transition and every failure of a session, driven with a
//! fake clock and no socket: a [`Driver`] plays the reactor's part (it
//! claims names in a real [`Rooms`], and says when output was written).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::*;
use crate::handshake::HandshakeReason;
use crate::names::{check_name, check_room};
use crate::rooms::{ConnId, Rooms, Transport};

/// A session, a fake clock, and the reactor's side of things.
struct Driver {
    session: Session,
    now: Instant,
    config: Config,
    rooms: Rooms,
    effects: Effects,
    /// What the session sent, as the client would read it.
    sent: Vec<u8>,
    /// Chat lines the session's member said (the batch's TCP bytes).
    said: Vec<u8>,
    /// Pages asked for.
    pages: Vec<PageRequest>,
    failures: Vec<Failure>,
    statuses: Vec<u16>,
    left: Vec<Left>,
    closed: Option<&'static str>,
    shutdown_write: bool,
    /// The spelling of each name held in `rooms`, as the reactor's
    /// sessions would say.
    holders: HashMap<ConnId, Box<str>>,
}

const ID: ConnId = ConnId(7);

impl Driver {
    fn tcp() -> Self {
        Self::with(Session::tcp)
    }

    fn http() -> Self {
        Self::with(Session::http)
    }

    fn with(start: impl FnOnce(Instant, &Config) -> Session) -> Self {
        let now = Instant::now();
        let config = Config { max_line: 16, ..Config::default() };
        Driver {
            session: start(now, &config),
            now,
            config,
            rooms: Rooms::new(),
            effects: Effects::default(),
            sent: Vec::new(),
            said: Vec::new(),
            pages: Vec::new(),
            failures: Vec::new(),
            statuses: Vec::new(),
            left: Vec::new(),
            closed: None,
            shutdown_write: false,
            holders: HashMap::new(),
        }
    }

    /// Feeds `input` the way the reactor does: applying effects after
    /// every call, feeding the rest while the session reads.
    fn input(&mut self, input: &[u8]) {
        let mut rest = input;
        while !rest.is_empty() && self.session.reading() == Reading::Wanted {
            let taken = self.session.input(rest, self.now, &self.config, &mut self.effects);
            self.apply();
            assert!(taken > 0 && taken <= rest.len(), "took {taken} of {}", rest.len());
            rest = &rest[taken..];
        }
    }

    /// Applies (records) the effects, answering a join like the reactor.
    fn apply(&mut self) {
        while let Some(request) = self.effects.join.take() {
            let claim = self
                .rooms
                .join(&request.room, &request.name, ID, Transport::Tcp)
                .map_err(|taken| JoinRefused::Taken { holder: self.holders[&taken.holder].clone() });
            self.session.joined(request, claim, self.now, &self.config, &mut self.effects);
        }
        if self.effects.room.take().is_some() {
            self.said.extend_from_slice(self.effects.messages.lines());
            self.effects.messages.clear();
        }
        self.sent.append(&mut self.effects.send);
        self.pages.extend(self.effects.page.take());
        self.failures.extend(self.effects.failure.take());
        self.statuses.extend(self.effects.http_status.take());
        self.left.extend(self.effects.left.take());
        if let Some(why) = self.effects.closed.take() {
            self.closed = Some(why);
        }
        self.shutdown_write |= std::mem::take(&mut self.effects.shutdown_write);
        assert!(self.effects.is_empty());
    }

    /// Someone else holds `name` in `room`.
    fn hold(&mut self, room: &str, name: &str, conn: ConnId) {
        let (room, name) = (check_room(room).unwrap(), check_name(name).unwrap());
        self.rooms.join(&room, &name, conn, Transport::Tcp).unwrap();
        self.holders.insert(conn, name.display);
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.session.timeout(self.now, &self.config, &mut self.effects);
        self.apply();
    }

    fn drained(&mut self) {
        self.session.output_drained(self.now, &mut self.effects);
        self.apply();
    }

    fn peer_closed(&mut self) {
        self.session.peer_closed(self.now, &mut self.effects);
        self.apply();
    }

    fn sent_text(&mut self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut self.sent)).into_owned()
    }

    fn said_text(&mut self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut self.said)).into_owned()
    }

    fn stage(&self) -> &'static str {
        match self.session.stage {
            Stage::TcpHandshake { .. } => "tcp handshake",
            Stage::HttpRequest { .. } => "http request",
            Stage::WsHandshake { .. } => "ws handshake",
            Stage::Joining(_) => "joining",
            Stage::Member(_) => "member",
            Stage::Closing { .. } => "closing",
            Stage::Draining { .. } => "draining",
            Stage::Closed => "closed",
        }
    }
}

const UPGRADE: &[u8] = b"GET /mychat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// One masked client frame (RFC 6455 §5.3), payload under 126 bytes.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [1, 2, 3, 4];
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, byte)| byte ^ mask[i % 4]));
    frame
}

fn text(payload: &str) -> Vec<u8> {
    frame(0x1, payload.as_bytes())
}

/// The server's unmasked text frames and close frames, decoded.
fn server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let opcode = bytes[0] & 0x0f;
        let len = (bytes[1] & 0x7f) as usize;
        assert!(len < 126, "test frames are short");
        frames.push((opcode, bytes[2..2 + len].to_vec()));
        bytes = &bytes[2 + len..];
    }
    frames
}

/// A driver whose WebSocket session has joined `dev` as `Mina`.
fn ws_member() -> Driver {
    let mut driver = Driver::http();
    driver.input(UPGRADE);
    driver.input(&text(r#"{"name":"Mina","room":"dev"}"#));
    assert_eq!(driver.stage(), "member");
    driver.sent.clear();
    driver.statuses.clear();
    driver
}

// ----- TCP -------------------------------------------------------------

#[test]
fn tcp_handshake_in_pieces_then_lines_in_the_same_input() {
    let mut driver = Driver::tcp();
    driver.input(br#"{"name":"Mina","#);
    assert_eq!(driver.stage(), "tcp handshake");
    assert!(driver.session.held_input() > 0, "an unfinished handshake is held");
    driver.input(b"\"room\":\"dev\"}\r\nhello\nsecond\npart");
    assert_eq!(driver.stage(), "member");
    assert_eq!(driver.said_text(), "Mina:hello\nMina:second\n");
    assert_eq!(driver.session.deadline(), None, "a member has no deadline");
    driver.input(b"ial\n");
    assert_eq!(driver.said_text(), "Mina:partial\n");
    assert_eq!(driver.rooms.member_count(), 1);
}

#[test]
fn tcp_handshake_failure_says_why_then_closes_after_draining() {
    let mut driver = Driver::tcp();
    driver.input(b"hello\n");
    assert_eq!(
        driver.sent_text(),
        "error: handshake must be a JSON object like {\"name\":\"Mina\",\"room\":\"dev\"}\n"
    );
    assert_eq!(driver.failures[0].handshake_reason(), Some(HandshakeReason::Malformed));
    assert_eq!((driver.stage(), driver.session.reading()), ("closing", Reading::Paused));
    // Closing ends once the error is written: FIN, then input is dropped
    // until the peer closes.
    driver.drained();
    assert!(driver.shutdown_write);
    assert_eq!((driver.stage(), driver.session.reading()), ("draining", Reading::Discarded));
    assert!(driver.session.is_finished());
    driver.input(b"ignored\n");
    assert!(driver.said.is_empty());
    driver.peer_closed();
    assert_eq!((driver.stage(), driver.closed), ("closed", Some("closed")));
    assert_eq!(driver.session.reading(), Reading::Over);
}

#[test]
fn a_taken_name_is_refused_in_the_joining_stage() {
    let mut driver = Driver::tcp();
    driver.hold("dev", "Mina", ConnId(1));
    driver.input(br#"{"name":"Mina","room":"dev"}hello"#);
    assert_eq!(driver.sent_text(), "error: name \"Mina\" is already taken in room \"dev\"\n");
    assert_eq!(driver.failures[0].handshake_reason(), Some(HandshakeReason::NameTaken));
    assert_eq!(driver.stage(), "closing");
    assert!(driver.said.is_empty(), "nothing after a refused handshake is said");
}

#[test]
fn a_name_that_looks_like_a_taken_one_is_refused_with_the_holders_spelling() {
    let mut driver = Driver::tcp();
    driver.hold("Dev", "Bob", ConnId(1));
    driver.input(r#"{"name":"B\u043eb","room":"DEV"}"#.as_bytes());
    assert_eq!(
        driver.sent_text(),
        "error: name \"B\u{43e}b\" is already taken in room \"DEV\" (as \"Bob\")\n"
    );
    assert_eq!(driver.failures[0].handshake_reason(), Some(HandshakeReason::NameTaken));
}

#[test]
fn a_member_speaks_under_its_normalised_name_and_leaves_by_its_key() {
    let mut driver = Driver::tcp();
    driver.input(b" {\"name\":\" Jose\\u0301 \",\"room\":\"dev\"}\nhi\r\x1b[2J\n");
    assert_eq!(driver.said_text(), "Jos\u{e9}:hi\u{FFFD}\u{FFFD}[2J\n");
    driver.peer_closed();
    let left = driver.left.pop().expect("left its room");
    assert_eq!((&*left.name, left.key), ("Jos\u{e9}", check_name("JOSE\u{301}").unwrap().key));
}

#[test]
fn history_asked_for_goes_to_the_reactor_with_the_join() {
    let mut driver = Driver::tcp();
    driver.session.input(
        br#"{"name":"Mina","room":"dev","history":100}"#,
        driver.now,
        &driver.config,
        &mut driver.effects,
    );
    let request = driver.effects.join.as_ref().expect("a join");
    assert_eq!(request.history, Some(100), "up to --history is accepted");
    driver.apply();
    assert_eq!(driver.stage(), "member");
}

#[test]
fn history_beyond_the_servers_is_refused_before_the_name_is_claimed() {
    let mut driver = Driver::tcp();
    driver.config.history = 20;
    driver.input(br#"{"name":"Mina","room":"dev","history":21}hello"#);
    assert_eq!(
        driver.sent_text(),
        "error: handshake field \"history\" asks for 21 lines; this server keeps at most 20\n"
    );
    assert_eq!(driver.failures[0].handshake_reason(), Some(HandshakeReason::InvalidHistory));
    assert_eq!(driver.rooms.member_count(), 0, "no name was claimed");
    assert!(driver.said.is_empty(), "nothing after a refused handshake is said");
    assert_eq!(driver.stage(), "closing");

    // Over WebSocket: the error text, then Close 1008.
    let mut driver = Driver::http();
    driver.config.history = 0;
    driver.input(UPGRADE);
    driver.sent.clear();
    driver.input(&text(r#"{"name":"Mina","room":"dev","history":1}"#));
    let frames = server_frames(&driver.sent);
    assert_eq!(
        frames[0],
        (0x1, b"error: handshake field \"history\" asks for 1 line; this server keeps at most 0\n".to_vec())
    );
    assert_eq!(frames[1].1[..2], close_code::POLICY.to_be_bytes());
    assert_eq!(driver.rooms.member_count(), 0);
}

#[test]
fn tcp_handshake_times_out() {
    let mut driver = Driver::tcp();
    driver.input(b"{\"name\"");
    driver.advance(Config::DEFAULT_HANDSHAKE_TIMEOUT - Duration::from_millis(1));
    assert_eq!(driver.stage(), "tcp handshake", "not yet");
    driver.advance(Duration::from_millis(1));
    assert_eq!(driver.sent_text(), "error: handshake timed out\n");
    assert_eq!(driver.failures[0].handshake_reason(), Some(HandshakeReason::Timeout));
    assert_eq!(driver.session.held_input(), 0, "the held handshake is freed");
    // Closing lingers for a bounded time if the output is never written.
    driver.advance(CLOSE_LINGER);
    assert_eq!((driver.stage(), driver.closed), ("closed", Some("linger timeout")));
}

#[test]
fn a_long_line_is_refused_after_the_lines_before_it() {
    let mut driver = Driver::tcp();
    driver.input(br#"{"name":"Mina","room":"dev"}"#);
    driver.input(b"ok\n0123456789abcdefX\nnever\n");
    assert_eq!(driver.said_text(), "Mina:ok\n");
    assert_eq!(driver.sent_text(), "error: line longer than 16 bytes\n");
    assert_eq!(driver.failures, [Failure::LineTooLong { max_line: 16 }]);
    assert_eq!(driver.left.len(), 1, "the member left its room");
    assert_eq!(driver.stage(), "closing");
}

#[test]
fn a_member_whose_peer_closes_leaves_at_once_and_lingers() {
    let mut driver = Driver::tcp();
    driver.input(br#"{"name":"Mina","room":"dev"}"#);
    driver.peer_closed();
    assert_eq!(driver.left[0].name.as_ref(), "Mina");
    assert_eq!(driver.stage(), "closing");
    driver.drained();
    assert_eq!(driver.stage(), "draining");
    driver.advance(CLOSE_LINGER);
    assert_eq!((driver.stage(), driver.closed), ("closed", Some("linger timeout")));
}

#[test]
fn a_full_server_is_said_in_each_protocol() {
    let mut driver = Driver::tcp();
    driver.session.refuse_full(driver.now, &mut driver.effects);
    driver.apply();
    assert_eq!(driver.sent_text(), "error: server full\n");
    assert_eq!(driver.stage(), "closing");
    let mut driver = Driver::http();
    driver.session.refuse_full(driver.now, &mut driver.effects);
    driver.apply();
    assert!(driver.sent_text().starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
    assert_eq!(driver.statuses, [503]);
}

#[test]
fn shutdown_closes_within_the_grace_period() {
    let mut driver = Driver::tcp();
    driver.input(br#"{"name":"Mina","room":"dev"}"#);
    let grace = driver.now + Duration::from_secs(30);
    driver.session.shutdown(grace, &mut driver.effects);
    driver.apply();
    assert_eq!((driver.stage(), driver.left.len()), ("closing", 1));
    assert_eq!(driver.session.deadline(), Some(grace), "closing waits for the grace, not the linger");
    assert!(driver.sent.is_empty(), "TCP clients get no goodbye line");
}

#[test]
fn closing_at_once_leaves_the_room() {
    let mut driver = Driver::tcp();
    driver.input(br#"{"name":"Mina","room":"dev"}"#);
    driver.session.close(&mut driver.effects, "slow consumer");
    driver.apply();
    assert_eq!((driver.stage(), driver.closed, driver.left.len()), ("closed", Some("slow consumer"), 1));
    driver.input(b"more\n");
    assert!(driver.said.is_empty());
}

// ----- HTTP --------------------------------------------------------------

#[test]
fn keep_alive_pages_answer_pipelined_requests_in_order() {
    let mut driver = Driver::http();
    driver.advance(Duration::from_secs(1));
    driver.input(b"GET /healthz HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n\r\nHEAD / HTTP/1.1\r\nConnection: close\r\n\r\n");
    let pages: Vec<_> = driver.pages.iter().map(|p| (p.page.clone(), p.head_only, p.keep_alive)).collect();
    assert_eq!(pages, [(Page::Health, false, true), (Page::Metrics, false, true), (Page::Chat, true, false)]);
    assert_eq!(driver.stage(), "closing");
    // A kept-alive connection gets a fresh deadline for its next request.
    let mut driver = Driver::http();
    driver.advance(Duration::from_secs(1));
    driver.input(b"GET /healthz HTTP/1.1\r\n\r\n");
    assert_eq!(driver.stage(), "http request");
    assert_eq!(driver.session.deadline(), Some(driver.now + Config::DEFAULT_HANDSHAKE_TIMEOUT));
}

#[test]
fn refused_requests_get_their_status_and_close() {
    let cases: [(&[u8], &str); 5] = [
        (b"GET /nothere HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found\r\n"),
        (b"POST /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 405 Method Not Allowed\r\n"),
        (b"GET /mychat HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request\r\n"),
        (b"\x16\x03\x01 hello\r\n\r\n", "HTTP/1.1 400 Bad Request\r\n"),
        (b"{\"name\":\"Mina\"}\n", "HTTP/1.1 400 Bad Request\r\n"),
    ];
    for (request, status_line) in cases {
        let mut driver = Driver::http();
        driver.input(request);
        let sent = driver.sent_text();
        assert!(sent.starts_with(status_line), "{request:?}: {sent:?}");
        assert_eq!(driver.stage(), "closing");
    }
    let mut driver = Driver::http();
    driver.input(b"HEAD /nothere HTTP/1.1\r\n\r\n");
    assert!(driver.sent_text().ends_with("\r\n\r\n"), "a HEAD refusal has no body");
}

#[test]
fn a_request_head_in_pieces_then_a_timeout() {
    let mut driver = Driver::http();
    driver.input(b"GET /heal");
    assert!(driver.session.held_input() > 0);
    driver.advance(Config::DEFAULT_HANDSHAKE_TIMEOUT);
    let sent = driver.sent_text();
    assert!(
        sent.starts_with("HTTP/1.1 408 Request Timeout\r\n")
            && sent.ends_with("request not received in time\n")
    );
    assert_eq!(driver.failures[0].handshake_reason(), Some(HandshakeReason::Timeout));
    assert_eq!(driver.statuses, [408]);
    // A connection that never said anything is closed quietly.
    let mut driver = Driver::http();
    driver.advance(Config::DEFAULT_HANDSHAKE_TIMEOUT);
    assert_eq!((driver.stage(), driver.closed), ("closed", Some("idle timeout")));
    assert!(driver.sent.is_empty());
}

// ----- WebSocket ---------------------------------------------------------

#[test]
fn upgrade_handshake_and_frames_behind_it_in_one_input() {
    let mut driver = Driver::http();
    let mut input = UPGRADE.to_vec();
    input.extend(text(r#"{"name":"Mina","room":"dev"}"#));
    input.extend(text("one\ntwo\n"));
    input.extend(text("three"));
    driver.input(&input);
    assert!(driver.sent_text().starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
    assert_eq!(driver.statuses, [101]);
    assert_eq!(driver.stage(), "member");
    assert_eq!(driver.said_text(), "Mina:one\nMina:two\nMina:three\n");
}

#[test]
fn a_bad_websocket_handshake_message_gets_an_error_frame_and_close() {
    let mut driver = Driver::http();
    driver.input(UPGRADE);
    driver.sent.clear();
    driver.input(&text(r#"{"name":"Mi:na","room":"dev"}"#));
    let frames = server_frames(&driver.sent);
    assert_eq!(frames[0], (0x1, b"error: name contains ':'\n".to_vec()));
    assert_eq!(frames[1].0, 0x8);
    assert_eq!(frames[1].1[..2], close_code::POLICY.to_be_bytes());
    assert_eq!(driver.stage(), "closing");
}

#[test]
fn a_websocket_handshake_over_4_kib_is_too_large() {
    let mut driver = Driver::http();
    driver.input(UPGRADE);
    driver.sent.clear();
    let mut big = vec![0x81, 0x80 | 126];
    big.extend_from_slice(&5000u16.to_be_bytes());
    big.extend_from_slice(&[0, 0, 0, 0]);
    driver.input(&big);
    assert_eq!(driver.failures, [Failure::Handshake(HandshakeError::TooLarge)]);
    let frames = server_frames(&driver.sent);
    assert_eq!(frames[1].1[..2], close_code::TOO_BIG.to_be_bytes());
}

#[test]
fn websocket_handshake_times_out_like_tcp() {
    let mut driver = Driver::http();
    driver.input(UPGRADE);
    driver.sent.clear();
    driver.advance(Config::DEFAULT_HANDSHAKE_TIMEOUT);
    assert_eq!(server_frames(&driver.sent)[0].1, b"error: handshake timed out\n");
}

#[test]
fn websocket_member_pings_messages_and_close() {
    let mut driver = ws_member();
    let mut input = frame(0x9, b"are you there");
    input.extend(text("hi\r\nthere\n"));
    driver.input(&input);
    assert_eq!(driver.said_text(), "Mina:hi\nMina:there\n");
    assert_eq!(server_frames(&std::mem::take(&mut driver.sent)), [(0xA, b"are you there".to_vec())]);
    driver.input(&frame(0x8, &1000u16.to_be_bytes()));
    assert_eq!((driver.stage(), driver.left.len()), ("closing", 1));
    assert_eq!(server_frames(&driver.sent)[0].0, 0x8, "tungstenite's close reply is sent");
}

#[test]
fn websocket_member_failures_use_their_close_codes() {
    let mut driver = ws_member();
    driver.input(&frame(0x2, b"\xff\xfe"));
    assert_eq!(driver.failures, [Failure::WebSocket(websocket::WsError::InvalidUtf8)]);
    assert_eq!(server_frames(&driver.sent)[1].1[..2], close_code::INVALID_DATA.to_be_bytes());

    let mut driver = ws_member();
    driver.input(&text("0123456789abcdefX"));
    assert_eq!(driver.failures[0].close_code(), close_code::TOO_BIG);
    assert!(driver.said.is_empty());
}

#[test]
fn websocket_shutdown_sends_going_away() {
    let mut driver = ws_member();
    let grace = driver.now + Duration::from_secs(5);
    driver.session.shutdown(grace, &mut driver.effects);
    driver.apply();
    let frames = server_frames(&driver.sent);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].1[..2], close_code::GOING_AWAY.to_be_bytes());
    assert_eq!(driver.stage(), "closing");
    // A second shutdown (or a closing session) says nothing more.
    driver.session.shutdown(grace, &mut driver.effects);
    driver.apply();
    assert_eq!(server_frames(&driver.sent).len(), 1);
}

#[test]
fn deadlines_follow_the_stage() {
    let mut driver = Driver::tcp();
    let handshake_deadline = driver.now + Config::DEFAULT_HANDSHAKE_TIMEOUT;
    assert_eq!(driver.session.deadline(), Some(handshake_deadline));
    // A timeout call before the deadline does nothing.
    driver.advance(Duration::from_secs(1));
    assert_eq!(driver.stage(), "tcp handshake");
    driver.input(br#"{"name":"Mina","room":"dev"}"#);
    assert_eq!(driver.session.deadline(), None);
    driver.peer_closed();
    assert_eq!(driver.session.deadline(), Some(driver.now + CLOSE_LINGER));
}

#[test]
fn deadline_arithmetic_saturates() {
    let now = Instant::now();
    assert!(deadline_after(now, Duration::MAX) > now + Duration::from_secs(3600 * 24 * 365));
}
