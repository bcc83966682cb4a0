//! HTTP on the WebSocket port, over real sockets: the chat page (with the
//! configured WebSocket path in it), HEAD, /healthz, 405, keep-alive and
//! pipelining, `Connection: close`, and /metrics following a chat whose
//! every message, delivery and byte the test caused itself.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::{TIMEOUT, TcpClient, TestServer, handshake, joined_tcp};
use machat::Config;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// One HTTP connection: requests written raw, responses read one by one
/// (by Content-Length), so several can share the connection.
struct Http {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    /// Bytes the response took on the wire.
    wire_len: usize,
}

impl Response {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or_else(|| panic!("no {name} header: {self:?}"))
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }
}

impl Http {
    fn connect(address: SocketAddr) -> Self {
        let stream = TcpStream::connect(address).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Http { stream, reader }
    }

    fn send(&mut self, raw: &str) {
        self.stream.write_all(raw.as_bytes()).expect("write");
    }

    /// `GET path` with keep-alive; returns the response and the request's length.
    fn get(&mut self, path: &str) -> (Response, usize) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: machat\r\n\r\n");
        self.send(&request);
        (self.read_response(false), request.len())
    }

    /// Reads one response; `to_head` for a HEAD request, which has a
    /// Content-Length but no body.
    fn read_response(&mut self, to_head: bool) -> Response {
        let mut wire_len = 0;
        let mut line = String::new();
        wire_len += self.reader.read_line(&mut line).expect("status line");
        let status =
            line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{line:?}"));
        let mut headers = HashMap::new();
        loop {
            line.clear();
            wire_len += self.reader.read_line(&mut line).expect("header line");
            let header = line.trim_end_matches("\r\n");
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(": ").unwrap_or_else(|| panic!("bad header {header:?}"));
            headers.insert(name.to_ascii_lowercase(), value.to_owned());
        }
        let length: usize = headers.get("content-length").expect("Content-Length").parse().unwrap();
        let mut body = vec![0; if to_head { 0 } else { length }];
        self.reader.read_exact(&mut body).expect("body");
        wire_len += body.len();
        Response { status, headers, body, wire_len }
    }

    /// Reads until the server closes; returns what came first.
    fn read_to_close(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).expect("the server closes the connection");
        rest
    }
}

/// A one-off request on its own connection, answered and closed.
fn request(address: SocketAddr, raw: &str) -> (Response, Vec<u8>) {
    let mut http = Http::connect(address);
    http.send(raw);
    let head_only = raw.starts_with("HEAD ");
    let response = http.read_response(head_only);
    (response, http.read_to_close())
}

#[test]
fn the_chat_page_is_served_with_the_websocket_path() {
    let server = TestServer::start();
    let mut http = Http::connect(server.ws);
    let (page, _) = http.get("/");
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    assert_eq!(page.header("content-length"), page.body.len().to_string());
    let html = page.text();
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains(r#"const CONFIGURED_PATH = "/mychat";"#), "the default path is in the page");
    assert!(!html.contains("__MACHAT_WS_PATH__"), "no placeholder left");
    for needed in [r#"<label for="name">"#, r#"<label for="room">"#, r#"aria-live="polite""#, "textContent"] {
        assert!(html.contains(needed), "the page has {needed}");
    }
    assert!(!html.contains("innerHTML"), "message text is never inserted as HTML");
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"), "no external assets");

    // A query string is still the page (a link can carry ?room=dev).
    let (with_query, _) = http.get("/?room=dev&name=Mina");
    assert_eq!(with_query.status, 200);
    assert_eq!(with_query.body, page.body);
}

#[test]
fn the_chat_page_carries_a_configured_websocket_path_safely() {
    let config = Config { ws_path: "/chat/v2".to_owned(), ..Config::ephemeral() };
    let server = TestServer::with_config(config);
    let (page, _) = request(server.ws, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(page.status, 200);
    assert!(page.text().contains(r#"const CONFIGURED_PATH = "/chat/v2";"#));
    let (old_path, _) = request(server.ws, "GET /mychat HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(old_path.status, 404);

    // A path that could end the script is escaped inside its JSON string.
    let config = Config { ws_path: "/x</script><b>\"".to_owned(), ..Config::ephemeral() };
    let server = TestServer::with_config(config);
    let (page, _) = request(server.ws, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(page.text().contains(r#"const CONFIGURED_PATH = "/x\u003c/script>\u003cb>\"";"#));
    assert_eq!(page.text().matches("</script>").count(), 1, "only the page's own </script>");
}

#[test]
fn head_gets_the_headers_and_no_body() {
    let server = TestServer::start();
    let (page, _) = request(server.ws, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");

    // Keep-alive: the next response follows the head at once, so no body
    // bytes were sent in between.
    let mut http = Http::connect(server.ws);
    http.send("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    let head = http.read_response(true);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), "text/html; charset=utf-8");
    assert_eq!(head.header("content-length"), page.body.len().to_string());
    let (health, _) = http.get("/healthz");
    assert_eq!((health.status, health.text()), (200, "ok\n"));

    // Closing after the response: still no body.
    for path in ["/", "/metrics", "/healthz"] {
        let (head, rest) = request(server.ws, &format!("HEAD {path} HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert_eq!(head.status, 200, "HEAD {path}");
        assert_ne!(head.header("content-length"), "0", "HEAD {path}");
        assert_eq!(head.header("connection"), "close");
        assert_eq!(rest.len(), 0, "HEAD {path} with Connection: close sent a body");
    }
    let (head, rest) = request(server.ws, "HEAD /healthz HTTP/1.0\r\n\r\n");
    assert_eq!((head.status, rest.len()), (200, 0), "HTTP/1.0 HEAD");
}

#[test]
fn healthz_says_ok() {
    let server = TestServer::start();
    let (health, rest) = request(server.ws, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(health.status, 200);
    assert_eq!(health.header("content-type"), "text/plain; charset=utf-8");
    assert_eq!(health.text(), "ok\n");
    assert!(rest.is_empty());
}

#[test]
fn other_methods_get_405_and_the_connection_closes() {
    let server = TestServer::start();
    for (method, path, allow) in [
        ("POST", "/", "GET, HEAD"),
        ("PUT", "/metrics", "GET, HEAD"),
        ("DELETE", "/healthz", "GET, HEAD"),
        ("OPTIONS", "/", "GET, HEAD"),
        ("POST", "/mychat", "GET"),
    ] {
        let raw = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        let (response, rest) = request(server.ws, &raw);
        assert_eq!(response.status, 405, "{method} {path}");
        assert_eq!(response.header("allow"), allow, "{method} {path}");
        assert_eq!(response.header("connection"), "close");
        assert!(rest.is_empty(), "{method} {path}: closed after the response");
    }
    let (missing, _) = request(server.ws, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(missing.status, 404);
    let stats = server.wait_for("the 405s and the 404 counted", |s| {
        s.http_responses_for(405) == 5 && s.http_responses_for(404) == 1
    });
    assert_eq!(stats.http_responses_for(404), 1);
}

#[test]
fn keep_alive_answers_requests_in_turn_and_pipelined() {
    let server = TestServer::start();
    let mut http = Http::connect(server.ws);
    let (first, _) = http.get("/healthz");
    assert_eq!((first.status, first.header("connection")), (200, "keep-alive"));
    let (second, _) = http.get("/metrics");
    assert_eq!(second.status, 200);
    assert!(second.text().contains("machat_loop_turns_total "));

    // Two requests in one write, then a third split over two writes.
    http.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nHEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    let pipelined = http.read_response(false);
    assert_eq!((pipelined.status, pipelined.text()), (200, "ok\n"));
    let head = http.read_response(true);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), "text/html; charset=utf-8");
    http.send("GET /heal");
    http.send("thz HTTP/1.1\r\nHost: x\r\n\r\n");
    let split = http.read_response(false);
    assert_eq!(split.text(), "ok\n");
    server
        .wait_for("five responses on one connection", |s| s.http_responses_for(200) == 5 && s.accepted == 1);

    // HTTP/1.0 asking for keep-alive gets it.
    let mut old = Http::connect(server.ws);
    old.send("GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(old.read_response(false).header("connection"), "keep-alive");
    old.send("GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!(old.read_response(false).header("connection"), "close");
    assert!(old.read_to_close().is_empty());
}

#[test]
fn connection_close_closes_after_the_response() {
    let server = TestServer::start();
    let mut http = Http::connect(server.ws);
    // A request pipelined after the closing one is not answered.
    http.send("GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n");
    let response = http.read_response(false);
    assert_eq!((response.status, response.header("connection")), (200, "close"));
    assert_eq!(http.read_to_close(), b"");
    drop(http);
    server.wait_for("the connection to be gone", |s| s.connections == 0 && s.http_responses_for(200) == 1);
}

/// Series → value from Prometheus text, e.g. `machat_rooms` or
/// `machat_connections{transport="tcp"}`.
fn parse_metrics(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample {line:?}"));
            // Durations are fractional seconds; everything else counts.
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
            (series.to_owned(), value as u64)
        })
        .collect()
}

struct Scraper {
    http: Http,
}

struct Scrape {
    values: HashMap<String, u64>,
    request_len: u64,
    response_len: u64,
}

impl Scrape {
    fn get(&self, series: &str) -> u64 {
        *self.values.get(series).unwrap_or_else(|| panic!("no series {series} in {:?}", self.values.keys()))
    }
}

impl Scraper {
    fn scrape(&mut self) -> Scrape {
        let (response, request_len) = self.http.get("/metrics");
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
        Scrape {
            values: parse_metrics(response.text()),
            request_len: request_len as u64,
            response_len: response.wire_len as u64,
        }
    }
}

fn ws_join(server: &TestServer, name: &str, room: &str) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(server.ws).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let url = format!("ws://{}/mychat", server.ws);
    let (mut ws, _) = tungstenite::client(url.as_str(), stream).expect("WebSocket upgrade");
    ws.send(Message::text(handshake(name, room))).unwrap();
    ws
}

fn ws_read_text(ws: &mut WebSocket<TcpStream>) -> String {
    match ws.read().expect("a message") {
        Message::Text(text) => text.as_str().to_owned(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

#[test]
fn metrics_follow_the_chat() {
    let server = TestServer::start();
    let mut scraper = Scraper { http: Http::connect(server.ws) };
    let before = scraper.scrape();
    for series in [
        "machat_connections{transport=\"tcp\"}",
        "machat_rooms",
        "machat_room_members",
        "machat_messages_received_total",
        "machat_deliveries_total",
        "machat_slow_consumer_disconnects_total",
        "machat_handshake_errors_total{reason=\"name_taken\"}",
        "machat_connections_refused_total",
    ] {
        assert_eq!(before.get(series), 0, "{series} on a fresh server");
    }
    assert_eq!(before.get("machat_connections{transport=\"websocket\"}"), 1, "the scraper itself");
    assert_eq!(before.get("machat_connections_accepted_total"), 1);
    assert!(before.get("machat_loop_turns_total") > 0);

    // Phase 1, TCP only: every byte in and out is known.
    let mut sent = 0u64;
    let mut received = 0u64;
    let mut mina = TcpClient::join(server.tcp, "Mina", "dev");
    sent += handshake("Mina", "dev").len() as u64;
    mina.send_line("hi");
    mina.expect_line("Mina:hi");
    let mut ola = TcpClient::join(server.tcp, "Ola", "dev");
    sent += handshake("Ola", "dev").len() as u64;
    ola.send_line("hello");
    ola.expect_line("Ola:hello");
    mina.expect_line("Ola:hello");
    let mut ada = TcpClient::join(server.tcp, "Ada", "ops");
    sent += handshake("Ada", "ops").len() as u64;
    // Lines of different senders have no set order: each waits its turn.
    for (sender, line) in [("Mina", "one"), ("Ola", "two"), ("Mina", "three")] {
        let client = if sender == "Mina" { &mut mina } else { &mut ola };
        client.send_line(line);
        mina.expect_line(&format!("{sender}:{line}"));
        ola.expect_line(&format!("{sender}:{line}"));
    }
    ada.send_line("alone");
    ada.expect_line("Ada:alone");
    sent += ["hi", "hello", "one", "two", "three", "alone"].iter().map(|l| l.len() as u64 + 1).sum::<u64>();
    received += ["Mina:hi", "Ola:hello", "Ola:hello"].iter().map(|l| l.len() as u64 + 1).sum::<u64>();
    received += 2 * ["Mina:one", "Ola:two", "Mina:three"].iter().map(|l| l.len() as u64 + 1).sum::<u64>();
    received += "Ada:alone\n".len() as u64;

    let chat = scraper.scrape();
    assert_eq!(chat.get("machat_connections{transport=\"tcp\"}"), 3);
    assert_eq!(chat.get("machat_connections{transport=\"websocket\"}"), 1);
    assert_eq!(chat.get("machat_rooms"), 2);
    assert_eq!(chat.get("machat_room_members"), 3);
    assert_eq!(chat.get("machat_joins_total"), 3);
    assert_eq!(chat.get("machat_connections_accepted_total"), 4);
    assert_eq!(chat.get("machat_messages_received_total"), 6);
    // hi → 1, hello → 2, one/two/three → 2 each, alone → 1.
    assert_eq!(chat.get("machat_deliveries_total"), 10);
    let bytes_in = chat.get("machat_received_bytes_total") - before.get("machat_received_bytes_total");
    assert_eq!(bytes_in, sent + chat.request_len, "bytes read: the chat and this scrape's request");
    let bytes_out = chat.get("machat_sent_bytes_total") - before.get("machat_sent_bytes_total");
    assert_eq!(bytes_out, received + before.response_len, "bytes written: the chat and the last scrape");
    assert_eq!(chat.get("machat_queued_output_bytes"), 0);
    assert_eq!(chat.get("machat_http_responses_total{status=\"200\"}"), 1, "the first scrape");
    assert!(chat.get("machat_loop_turns_total") > before.get("machat_loop_turns_total"));

    // Phase 2: a WebSocket member, and handshakes that fail.
    let mut wsola = ws_join(&server, "Wsola", "dev");
    wsola.send(Message::text("from the web\n")).unwrap();
    assert_eq!(ws_read_text(&mut wsola), "Wsola:from the web\n");
    mina.expect_line("Wsola:from the web");
    ola.expect_line("Wsola:from the web");

    // A WebSocket client taking a TCP member's name gets the error as a
    // text message and a Close frame (1008).
    let mut taken = ws_join(&server, "Mina", "dev");
    assert_eq!(ws_read_text(&mut taken), "error: name \"Mina\" is already taken in room \"dev\"\n");
    match taken.read().expect("a Close frame") {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Policy),
        other => panic!("expected Close 1008, got {other:?}"),
    }
    let mut malformed = TcpClient::connect(server.tcp);
    malformed.send_raw(b"hello?\n");
    malformed.expect_error("must be a JSON object");
    TcpClient::join(server.tcp, "Bad:Name", "dev").expect_error("contains ':'");
    let (missing, _) = request(server.ws, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(missing.status, 404);
    drop((taken, malformed));
    server.wait_for("the failed clients to be gone", |s| s.connections == 5);

    let after = scraper.scrape();
    assert_eq!(after.get("machat_connections{transport=\"tcp\"}"), 3);
    assert_eq!(after.get("machat_connections{transport=\"websocket\"}"), 2, "Wsola and the scraper");
    assert_eq!(after.get("machat_rooms"), 2);
    assert_eq!(after.get("machat_room_members"), 4);
    assert_eq!(after.get("machat_joins_total"), 4);
    assert_eq!(after.get("machat_messages_received_total"), 7);
    assert_eq!(after.get("machat_deliveries_total"), 13);
    assert_eq!(after.get("machat_handshake_errors_total{reason=\"name_taken\"}"), 1);
    assert_eq!(after.get("machat_handshake_errors_total{reason=\"malformed\"}"), 1);
    assert_eq!(after.get("machat_handshake_errors_total{reason=\"invalid_name\"}"), 1);
    assert_eq!(after.get("machat_handshake_errors_total{reason=\"timeout\"}"), 0);
    assert_eq!(after.get("machat_http_responses_total{status=\"101\"}"), 2);
    assert_eq!(after.get("machat_http_responses_total{status=\"200\"}"), 2);
    assert_eq!(after.get("machat_http_responses_total{status=\"404\"}"), 1);
    assert_eq!(after.get("machat_slow_consumer_disconnects_total"), 0);
    assert_eq!(after.get("machat_connections_accepted_total"), 9);
    assert!(after.get("machat_received_bytes_total") > chat.get("machat_received_bytes_total"));
    assert!(after.get("machat_sent_bytes_total") > chat.get("machat_sent_bytes_total"));

    // Members leave: the gauges go back down, the totals stay.
    drop((mina, ola, ada));
    wsola.close(None).unwrap();
    while wsola.read().is_ok() {}
    drop(wsola);
    server.wait_for("only the scraper left", |s| s.connections == 1);
    let last = scraper.scrape();
    assert_eq!(last.get("machat_connections{transport=\"tcp\"}"), 0);
    assert_eq!(last.get("machat_connections{transport=\"websocket\"}"), 1);
    assert_eq!(last.get("machat_rooms"), 0);
    assert_eq!(last.get("machat_room_members"), 0);
    assert_eq!(last.get("machat_messages_received_total"), 7);
    assert_eq!(last.get("machat_deliveries_total"), 13);
}

#[test]
fn every_metric_has_help_and_type_before_its_samples() {
    let server = TestServer::start();
    let _member = joined_tcp(server.tcp, "Mina", "dev");
    let (response, _) = Http::connect(server.ws).get("/metrics");
    let mut typed: HashMap<&str, &str> = HashMap::new();
    let mut current = "";
    for line in response.text().lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            current = rest.split(' ').next().unwrap();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert_eq!(name, current, "TYPE follows its HELP");
            assert!(typed.insert(name, kind).is_none(), "{name} declared twice");
        } else {
            let name = line.split(['{', ' ']).next().unwrap();
            assert_eq!(name, current, "{line:?} is in its family");
            if typed[name] == "counter" {
                assert!(name.ends_with("_total"), "counter {name} ends in _total");
            }
        }
    }
    assert!(typed.len() >= 17, "{typed:?}");
}
