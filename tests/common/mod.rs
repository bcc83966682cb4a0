//! Shared test helpers: a server on ephemeral ports in a thread, and TCP
//! and WebSocket clients that behave like real ones. Every wait is bounded
//! by [`TIMEOUT`]; nothing sleeps and hopes.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use machat::{Config, Handle, Server, Stats};

pub mod redis;
pub mod tls;

/// Upper bound for any single wait in a test.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A server running on its own thread, shut down when dropped.
pub struct TestServer {
    pub tcp: SocketAddr,
    pub ws: SocketAddr,
    pub handle: Handle,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl TestServer {
    pub fn start() -> Self {
        Self::with_config(Config::ephemeral())
    }

    pub fn with_config(config: Config) -> Self {
        let _ = env_logger::builder().is_test(true).try_init();
        Self::from_server(Server::bind(config).expect("bind"))
    }

    /// Runs an already bound server on its own thread.
    pub fn from_server(server: Server) -> Self {
        let tcp = server.tcp_addr().unwrap_or_else(|| "127.0.0.1:9".parse().unwrap());
        let ws = server.ws_addr().unwrap_or_else(|| "127.0.0.1:9".parse().unwrap());
        let handle = server.handle();
        let thread = std::thread::spawn(move || server.run());
        TestServer { tcp, ws, handle, thread: Some(thread) }
    }

    pub fn stats(&self) -> Stats {
        self.handle.stats()
    }

    /// Waits until the published counters satisfy `condition`.
    pub fn wait_for(&self, what: &str, condition: impl Fn(&Stats) -> bool) -> Stats {
        let started = Instant::now();
        loop {
            let stats = self.stats();
            if condition(&stats) {
                return stats;
            }
            if started.elapsed() > TIMEOUT {
                panic!("timed out waiting for {what}; last stats: {stats:#?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits until the server is back to no connections, rooms or buffers.
    pub fn wait_idle(&self) -> Stats {
        self.wait_for("the server to be idle", |s| {
            s.connections == 0
                && s.rooms == 0
                && s.members == 0
                && s.queued_bytes == 0
                && s.output_buffers == 0
                && s.input_buffers == 0
        })
    }

    /// Shuts the server down and waits for `run` to return.
    pub fn stop(mut self) -> io::Result<()> {
        self.handle.shutdown();
        self.thread.take().expect("running").join().expect("server thread panicked")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.handle.shutdown();
            let _ = thread.join();
        }
    }
}

/// A line-protocol client, like the original's example TCP client.
pub struct TcpClient {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl TcpClient {
    pub fn connect(address: SocketAddr) -> Self {
        let stream = TcpStream::connect(address).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        TcpClient { stream, reader }
    }

    /// Connects and sends the handshake exactly as the original client
    /// does: the JSON object with no newline.
    pub fn join(address: SocketAddr, name: &str, room: &str) -> Self {
        let mut client = Self::connect(address);
        client.send_raw(handshake(name, room).as_bytes());
        client
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    pub fn send_line(&mut self, text: &str) {
        self.send_raw(format!("{text}\n").as_bytes());
    }

    /// Reads one `\n`-terminated line (without the `\n`) as raw bytes.
    pub fn read_line_bytes(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        let n = self.reader.read_until(b'\n', &mut line).expect("read a line");
        assert!(n > 0 && line.ends_with(b"\n"), "connection closed while waiting for a line (got {line:?})");
        line.pop();
        line
    }

    pub fn read_line(&mut self) -> String {
        String::from_utf8(self.read_line_bytes()).expect("lines are UTF-8")
    }

    pub fn expect_line(&mut self, expected: &str) {
        assert_eq!(self.read_line(), expected);
    }

    /// Reads until the server closes; returns what came before the close.
    pub fn read_to_close(&mut self) -> String {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::ConnectionReset => {}
            Err(error) => panic!("expected the server to close the connection: {error}"),
        }
        String::from_utf8_lossy(&rest).into_owned()
    }

    /// Expects `error: <reason>` and then the connection closed.
    pub fn expect_error(&mut self, reason_contains: &str) -> String {
        let line = self.read_line();
        assert!(
            line.starts_with("error: ") && line.contains(reason_contains),
            "expected an error containing {reason_contains:?}, got {line:?}"
        );
        let rest = self.read_to_close();
        assert_eq!(rest, "", "nothing may follow the error line");
        line
    }
}

pub fn handshake(name: &str, room: &str) -> String {
    serde_json::json!({ "name": name, "room": room }).to_string()
}

/// Joins `name` to `room` and waits for the server to confirm it by
/// echoing a first message back, so later assertions start from a member.
pub fn joined_tcp(address: SocketAddr, name: &str, room: &str) -> TcpClient {
    let mut client = TcpClient::join(address, name, room);
    client.send_line("hello");
    client.expect_line(&format!("{name}:hello"));
    client
}

// ===========================================================================
// WebSocket client helpers (used by tests/websocket.rs).
//
// `WsClient` is tungstenite's blocking client over a std `TcpStream` with a
// read timeout, so every read is bounded. It behaves like the original's Go
// client: the handshake goes as one text message with no newline, each
// typed line as one text message `text\n`. `masked_frame` builds client
// frames by hand for the tests that need frames tungstenite will not send.
// ===========================================================================

/// The origin the original's Go client sends.
pub const ORIGINAL_ORIGIN: &str = "http://localhost:8099/";

/// WebSocket opcodes, for hand-made frames.
pub mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// One client frame, masked as RFC 6455 §5.3 requires of clients.
pub fn masked_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        len @ 0..=125 => frame.push(0x80 | len as u8),
        len @ 126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, byte)| byte ^ mask[i % 4]));
    frame
}

/// An HTTP upgrade request for `path`, as a browser or the Go client sends it.
pub fn upgrade_request(address: SocketAddr, path: &str, origin: Option<&str>) -> String {
    let origin = origin.map(|origin| format!("Origin: {origin}\r\n")).unwrap_or_default();
    format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
    )
}

/// A blocking WebSocket client whose every read is bounded by [`TIMEOUT`].
pub struct WsClient {
    pub ws: tungstenite::WebSocket<TcpStream>,
}

impl WsClient {
    /// Upgrades on `/mychat` with the original client's origin.
    pub fn connect(address: SocketAddr) -> Self {
        Self::connect_with_origin(address, Some(ORIGINAL_ORIGIN))
            .unwrap_or_else(|error| panic!("WebSocket upgrade failed: {error}"))
    }

    /// Upgrades on `/mychat`, sending `origin` if given; the error is
    /// tungstenite's (for a refused upgrade it carries the HTTP response).
    pub fn connect_with_origin(
        address: SocketAddr,
        origin: Option<&str>,
    ) -> Result<Self, tungstenite::Error> {
        use tungstenite::client::IntoClientRequest;
        let stream = TcpStream::connect(address).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut request = format!("ws://{address}/mychat").into_client_request()?;
        if let Some(origin) = origin {
            request.headers_mut().insert("Origin", origin.parse().expect("origin header value"));
        }
        match tungstenite::client(request, stream) {
            Ok((ws, _response)) => Ok(WsClient { ws }),
            Err(tungstenite::HandshakeError::Failure(error)) => Err(error),
            Err(tungstenite::HandshakeError::Interrupted(_)) => panic!("blocking handshake was interrupted"),
        }
    }

    /// Upgrades and sends the handshake as the original client does: one
    /// text message with no newline.
    pub fn join(address: SocketAddr, name: &str, room: &str) -> Self {
        let mut client = Self::connect(address);
        client.send_text(&handshake(name, room));
        client
    }

    /// The TCP stream under the WebSocket, for writing hand-made frames.
    pub fn stream(&mut self) -> &mut TcpStream {
        self.ws.get_mut()
    }

    pub fn send(&mut self, message: tungstenite::Message) {
        self.ws.send(message).expect("send a WebSocket message");
    }

    pub fn send_text(&mut self, text: &str) {
        self.send(tungstenite::Message::text(text));
    }

    /// Sends one typed line the way the original client does: `text\n`.
    pub fn send_line(&mut self, text: &str) {
        self.send_text(&format!("{text}\n"));
    }

    /// Writes raw bytes (hand-made frames) to the socket.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream().write_all(bytes).expect("write raw frames");
    }

    /// Reads the next message of any kind.
    pub fn read(&mut self) -> tungstenite::Message {
        match self.ws.read() {
            Ok(message) => message,
            Err(error) => panic!("expected a WebSocket message, got {error}"),
        }
    }

    /// Reads the next message, which must be a text message.
    pub fn read_text(&mut self) -> String {
        match self.read() {
            tungstenite::Message::Text(text) => text.as_str().to_owned(),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    pub fn expect_text(&mut self, expected: &str) {
        assert_eq!(self.read_text(), expected);
    }

    /// Expects a Close frame with `code`; returns its reason.
    pub fn expect_close(&mut self, code: u16) -> String {
        match self.read() {
            tungstenite::Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), code, "close code (reason {:?})", frame.reason.as_str());
                frame.reason.as_str().to_owned()
            }
            other => panic!("expected Close {code}, got {other:?}"),
        }
    }

    /// After the close handshake: the server must close the TCP connection
    /// and send nothing more.
    pub fn expect_closed(&mut self) {
        match self.ws.read() {
            Err(tungstenite::Error::ConnectionClosed) => {}
            Err(tungstenite::Error::Io(error)) if error.kind() == io::ErrorKind::ConnectionReset => {}
            Ok(message) => panic!("expected the connection to close, got {message:?}"),
            Err(error) => panic!("expected the connection to close, got {error}"),
        }
    }

    /// Expects `error: <reason>\n` as a text message, then Close `code`,
    /// then the connection closed. Returns the error text.
    pub fn expect_error(&mut self, reason_contains: &str, code: u16) -> String {
        let text = self.read_text();
        assert!(
            text.starts_with("error: ") && text.ends_with('\n') && text.contains(reason_contains),
            "expected an error containing {reason_contains:?}, got {text:?}"
        );
        self.expect_close(code);
        self.expect_closed();
        text
    }
}

/// Joins over WebSocket and waits for the first message to be echoed, so
/// later assertions start from a member.
pub fn joined_ws(address: SocketAddr, name: &str, room: &str) -> WsClient {
    let mut client = WsClient::join(address, name, room);
    client.send_line("hello");
    client.expect_text(&format!("{name}:hello\n"));
    client
}

/// A raw HTTP exchange with the WebSocket port: what the server answered
/// before closing, split into status line, headers and body.
#[derive(Debug)]
pub struct HttpReply {
    pub status_line: String,
    pub head: String,
    pub body: String,
}

impl HttpReply {
    /// Reads until the server closes and parses what came.
    pub fn read_from(stream: &mut TcpStream) -> HttpReply {
        let mut raw = Vec::new();
        match stream.read_to_end(&mut raw) {
            Ok(_) => {}
            Err(error) => panic!("expected the server to answer and close, got {error} after {raw:?}"),
        }
        let text = String::from_utf8(raw).expect("HTTP reply is UTF-8");
        let (head, body) =
            text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no end of head in {text:?}"));
        let status_line = head.lines().next().unwrap_or_default().to_owned();
        HttpReply { status_line, head: head.to_owned(), body: body.to_owned() }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

// ===========================================================================
// The real binary, for tests that need a process of its own (signals,
// memory, flags).
// ===========================================================================

pub const MACHAT: &str = env!("CARGO_BIN_EXE_machat");

/// A running `machat` process and its stderr, line by line.
pub struct Machat {
    pub child: Child,
    stderr: Receiver<String>,
    /// Every stderr line read so far.
    pub log: Vec<String>,
}

impl Machat {
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// Starts machat with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(MACHAT)
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start machat");
        let stderr = child.stderr.take().unwrap();
        let (sender, receiver) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Machat { child, stderr: receiver, log: Vec::new() }
    }

    /// Waits for a log line containing `marker`; returns what follows it.
    pub fn wait_log(&mut self, marker: &str) -> String {
        if let Some(line) = self.log.iter().find(|line| line.contains(marker)) {
            return after(line, marker);
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(marker) {
                        return after(&line, marker);
                    }
                }
                Err(error) => panic!("no log line with {marker:?} ({error}); log so far: {:#?}", self.log),
            }
        }
    }

    /// The addresses the listeners were bound to, from the start-up log.
    pub fn addresses(&mut self) -> (SocketAddr, SocketAddr) {
        let tcp = self.wait_log("listening for TCP clients on ");
        let ws = self.wait_log("listening for WebSocket clients on ws://");
        let ws = ws.strip_suffix("/mychat").expect("the WebSocket path is logged");
        (tcp.parse().expect("a TCP address"), ws.parse().expect("a WebSocket address"))
    }

    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill failed");
    }

    /// Waits for the process to exit, then for the end of its stderr.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("machat did not exit; log: {:#?}", self.log);
            }
            thread::sleep(std::time::Duration::from_millis(10));
        };
        while let Ok(line) = self.stderr.recv_timeout(TIMEOUT) {
            self.log.push(line);
        }
        status
    }
}

impl Machat {
    /// The process's resident memory, from `/proc/<pid>/status`.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("proc status");
        let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("VmRSS");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for Machat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn after(line: &str, marker: &str) -> String {
    let start = line.find(marker).unwrap() + marker.len();
    line[start..].trim().to_owned()
}

/// Connects with the given socket buffer sizes (set before connecting, so
/// the TCP window fits them): a small receive buffer makes a client that
/// stops reading fill up fast, a small send buffer makes a sender feel the
/// server's back-pressure at once.
pub fn connect_with_buffers(address: SocketAddr, receive: Option<usize>, send: Option<usize>) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None).expect("socket");
    if let Some(size) = receive {
        socket.set_recv_buffer_size(size).unwrap();
    }
    if let Some(size) = send {
        socket.set_send_buffer_size(size).unwrap();
    }
    socket.connect(&address.into()).expect("connect");
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

impl TcpClient {
    /// A client over an already connected stream.
    pub fn from_stream(stream: TcpStream) -> Self {
        let reader = BufReader::new(stream.try_clone().unwrap());
        TcpClient { stream, reader }
    }
}

// ===========================================================================
// /metrics, read the way a scraper does: over HTTP, on the WebSocket port.
// ===========================================================================

/// One scrape of `/metrics`: series (with its labels, e.g.
/// `machat_history_lines_evicted_total{reason="memory"}`) → value.
#[derive(Debug, Clone)]
pub struct Metrics(pub std::collections::HashMap<String, f64>);

impl Metrics {
    /// `GET /metrics` on its own connection (`Connection: close`).
    pub fn scrape(ws: SocketAddr) -> Metrics {
        let mut stream = TcpStream::connect(ws).expect("connect for /metrics");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: machat\r\nConnection: close\r\n\r\n")
            .expect("send GET /metrics");
        let reply = HttpReply::read_from(&mut stream);
        assert_eq!(reply.status_line, "HTTP/1.1 200 OK", "GET /metrics: {}", reply.body);
        let values = reply
            .body
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample {line:?}"));
                (series.to_owned(), value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")))
            })
            .collect();
        Metrics(values)
    }

    /// A series' value; a series that is missing fails the test.
    pub fn get(&self, series: &str) -> f64 {
        *self.0.get(series).unwrap_or_else(|| panic!("no series {series} in /metrics: {:?}", self.0))
    }

    /// A counter or gauge that holds whole numbers.
    pub fn count(&self, series: &str) -> u64 {
        let value = self.get(series);
        assert!(value >= 0.0 && value.fract() == 0.0, "{series} is {value}, not a count");
        value as u64
    }

    /// Scrapes until `condition` holds, at most [`TIMEOUT`].
    pub fn wait_for(ws: SocketAddr, what: &str, condition: impl Fn(&Metrics) -> bool) -> Metrics {
        let started = Instant::now();
        loop {
            let metrics = Metrics::scrape(ws);
            if condition(&metrics) {
                return metrics;
            }
            if started.elapsed() > TIMEOUT {
                let history: std::collections::BTreeMap<_, _> =
                    metrics.0.iter().filter(|(series, _)| series.contains("history")).collect();
                panic!("timed out waiting for {what}; last history metrics: {history:#?}");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}
