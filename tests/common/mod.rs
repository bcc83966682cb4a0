//! Shared test helpers: a server on ephemeral ports in a thread, and TCP
//! and WebSocket clients that behave like real ones. Every wait is bounded
//! by [`TIMEOUT`]; nothing sleeps and hopes.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use machat::{Config, Handle, Server, Stats};

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
        let server = Server::bind(config).expect("bind");
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
