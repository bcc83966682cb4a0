//! A real `redis-server` for the cluster tests: one per test, on a free
//! port of its own, without persistence, killed when dropped. It can be
//! stopped, restarted on the same port, and paused (`SIGSTOP`) to play a
//! Redis that is down, restarting or hung; [`RedisServer::command`] is a
//! tiny blocking client to look inside it (`GET`, `KEYS`, `PUBSUB
//! CHANNELS`) or to act on it (`CLIENT KILL TYPE pubsub`).
//!
//! `redis-server` must be on `PATH` (`.ci/run` installs it): without it the
//! test fails, saying how to install it. No test is skipped for lack of it.
//!
//! Ports are picked below the kernel's ephemeral range (bind, release, and
//! try another if Redis cannot have it), not with a bind to port 0: while
//! a test has Redis stopped, clients reconnecting to it take ephemeral
//! ports, and one of them could take Redis's own port (so it could not be
//! restarted there) or connect to itself on it (TCP simultaneous open), and
//! then talk to itself believing it talks to Redis.

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::TIMEOUT;

/// The binary [`RedisServer::start`] runs.
pub const REDIS_SERVER: &str = "redis-server";

/// What to do when `redis-server` is missing.
pub const INSTALL_HINT: &str = "the cluster tests need a real Redis: install it with \
     `apt-get update && apt-get install -y redis-server` (Debian, Ubuntu; `.ci/run` does this), \
     `dnf install redis` or `brew install redis`, so that `redis-server` is on PATH";

/// How long a start (or restart) may take before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a starting server is asked for PONG.
const POLL: Duration = Duration::from_millis(5);

/// Ports tried before giving up on finding one.
const PORT_ATTEMPTS: usize = 50;

/// A `redis-server` process on `127.0.0.1`, killed (`SIGKILL`) when dropped.
pub struct RedisServer {
    binary: String,
    port: u16,
    child: Option<Child>,
    /// Its working directory (nothing is written there but the log, since
    /// persistence is off), removed when dropped.
    dir: tempfile::TempDir,
    paused: bool,
}

/// Why one attempt to start failed.
enum StartError {
    /// The port was taken (by the time Redis bound it, or by another
    /// server answering on it): another port, or a later try, may work.
    PortTaken(String),
    /// Anything else: the test fails with this.
    Fatal(String),
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it answers
    /// PING with PONG. Panics, saying why, if it cannot (with the install
    /// hint when `redis-server` is not on `PATH`).
    pub fn start() -> RedisServer {
        RedisServer::start_binary(REDIS_SERVER)
    }

    /// [`start`](RedisServer::start) with another binary (a path, or a
    /// name looked up on `PATH`).
    pub fn start_binary(binary: &str) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("machat-redis-")
            .tempdir()
            .unwrap_or_else(|error| panic!("cannot make a directory for redis-server: {error}"));
        let mut server = RedisServer { binary: binary.to_owned(), port: 0, child: None, dir, paused: false };
        let mut taken = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port();
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(StartError::PortTaken(why)) => taken.push(why),
                Err(StartError::Fatal(why)) => panic!("{why}"),
            }
        }
        panic!("redis-server found no free port in {PORT_ATTEMPTS} tries: {taken:#?}");
    }

    /// The port it listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://127.0.0.1:PORT`, for `--cluster`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it was started and not stopped since (a paused server
    /// counts as running).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops it as an operator would (`SIGTERM`), and waits for it to exit.
    /// Does nothing if it is not running. A paused server is resumed so
    /// that it can act on the signal.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        signal(&child, libc::SIGTERM);
        if self.paused {
            signal(&child, libc::SIGCONT);
            self.paused = false;
        }
        match wait_exit(&mut child, TIMEOUT) {
            Some(_) => {}
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-server did not exit within {TIMEOUT:?} of SIGTERM; log:\n{}", self.log());
            }
        }
    }

    /// Stops it (if it runs) and starts it again on the same port, empty
    /// (nothing is persisted), waiting until it answers PONG. If the port
    /// is briefly taken, it tries again until [`START_TIMEOUT`].
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(StartError::PortTaken(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(StartError::PortTaken(why) | StartError::Fatal(why)) => {
                    panic!("cannot restart redis-server on port {}: {why}", self.port)
                }
            }
        }
    }

    /// Freezes it (`SIGSTOP`): connections stay open and connects still
    /// succeed (the kernel completes them), but nothing is answered until
    /// [`resume`](RedisServer::resume). Returns once the process is stopped.
    pub fn pause(&mut self) {
        let child = self.child.as_ref().expect("pause: redis-server is not running");
        signal(child, libc::SIGSTOP);
        wait_state(child.id(), true);
        self.paused = true;
    }

    /// Lets a paused server run again (`SIGCONT`); returns once it runs.
    pub fn resume(&mut self) {
        let child = self.child.as_ref().expect("resume: redis-server is not running");
        signal(child, libc::SIGCONT);
        wait_state(child.id(), false);
        self.paused = false;
    }

    /// Sends one command on a new connection and returns its reply as
    /// text: a simple string or bulk string as it is (`OK`, `PONG`, a
    /// value), an integer in decimal, a nil as `(nil)`, an error as
    /// `(error) ERR ...`, and an array as its elements rendered so, one per
    /// line (nested arrays flattened; an empty array is `""`).
    /// Panics if the server does not answer within [`TIMEOUT`] (it must not
    /// be paused) or breaks the protocol.
    pub fn command(&self, args: &[&str]) -> String {
        command_at(self.addr(), args, TIMEOUT)
            .unwrap_or_else(|error| panic!("redis {args:?} on port {} failed: {error}", self.port))
    }

    /// What the server wrote to its log (stdout and stderr) so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Spawns `redis-server` on `self.port` and waits for PONG from it (and
    /// not from some other server on that port).
    fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        let log = fs::File::create(self.log_path())
            .map_err(|error| StartError::Fatal(format!("cannot create the redis-server log: {error}")))?;
        let stderr = log
            .try_clone()
            .map_err(|error| StartError::Fatal(format!("cannot share the redis-server log: {error}")))?;
        let port = self.port.to_string();
        let spawned = Command::new(&self.binary)
            .args(["--port", &port, "--bind", "127.0.0.1", "--protected-mode", "no"])
            // No persistence: nothing is saved or loaded, a restart is empty.
            .args(["--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--loglevel", "notice"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(StartError::Fatal(format!(
                    "cannot run {}: not found; {INSTALL_HINT}",
                    self.binary
                )));
            }
            Err(error) => {
                return Err(StartError::Fatal(format!(
                    "cannot run {}: {error}; {INSTALL_HINT}",
                    self.binary
                )));
            }
        };
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().ok().flatten() {
                let log = self.log();
                let why = format!("redis-server exited with {status} at start; log:\n{log}");
                return Err(if log.contains("Address already in use") {
                    StartError::PortTaken(why)
                } else {
                    StartError::Fatal(why)
                });
            }
            if let Ok(reply) = command_at(self.addr(), &["PING"], Duration::from_secs(1))
                && reply == "PONG"
            {
                // Another test's server may hold this port (it bound the
                // port in between): PONG must come from this process.
                let info = command_at(self.addr(), &["INFO", "server"], TIMEOUT).unwrap_or_default();
                let pid = info
                    .lines()
                    .find_map(|line| line.strip_prefix("process_id:"))
                    .and_then(|pid| pid.trim().parse::<u32>().ok());
                if pid == Some(child.id()) {
                    self.child = Some(child);
                    return Ok(());
                }
                let _ = child.kill();
                let _ = child.wait();
                return Err(StartError::PortTaken(format!(
                    "port {} answers for process {pid:?}, not for {}",
                    self.port,
                    child.id()
                )));
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StartError::Fatal(format!(
                    "redis-server on port {} did not answer PING within {START_TIMEOUT:?}; log:\n{}",
                    self.port,
                    self.log()
                )));
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL ends a stopped process too.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port on 127.0.0.1 nothing listens on now, below the ephemeral range
/// (see the module's documentation), or from the kernel (port 0) if that
/// range leaves no room below it.
fn free_port() -> u16 {
    let low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const FIRST: u16 = 10_000;
    for _ in 0..1000 {
        let port = if low > FIRST + 1000 { FIRST + (random() % u64::from(low - FIRST)) as u16 } else { 0 };
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().expect("a bound address").port();
        }
    }
    panic!("no free port below {low} on 127.0.0.1");
}

/// A different number at each call, in each process and thread.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    hasher.finish()
}

fn signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("a pid");
    // SAFETY: kill(2) has no memory-safety preconditions.
    let result = unsafe { libc::kill(pid, signal) };
    assert_eq!(result, 0, "kill({pid}, {signal}) failed: {}", io::Error::last_os_error());
}

/// Waits until the process is stopped by a signal (`stopped`) or not.
fn wait_state(pid: u32, stopped: bool) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
        // The state follows the command name, which is in parentheses.
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
        if matches!(state, Some("T")) == stopped {
            return;
        }
        assert!(Instant::now() < deadline, "redis-server {pid} is still in state {state:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for redis-server") {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One command, one reply, on a new connection; every wait bounded by
/// `timeout`.
pub fn command_at(address: SocketAddr, args: &[&str], timeout: Duration) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(&encode(args))?;
    read_reply(&mut BufReader::new(stream))
}

/// A command as RESP: an array of bulk strings.
pub fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one RESP2 reply and renders it as [`RedisServer::command`] says.
pub fn read_reply(reader: &mut impl BufRead) -> io::Result<String> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\r\n") {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the reply ended early: {:?}", String::from_utf8_lossy(&line)),
        ));
    }
    let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    let length = || text.parse::<i64>().map_err(|_| invalid(format!("bad length in {line:?}")));
    match line[0] {
        b'+' => Ok(text),
        b'-' => Ok(format!("(error) {text}")),
        b':' => Ok(text),
        b'$' => {
            let Ok(length) = usize::try_from(length()?) else { return Ok("(nil)".to_owned()) };
            let mut body = vec![0; length + 2];
            reader.read_exact(&mut body)?;
            if !body.ends_with(b"\r\n") {
                return Err(invalid("a bulk string without its CRLF".to_owned()));
            }
            body.truncate(length);
            Ok(String::from_utf8_lossy(&body).into_owned())
        }
        b'*' => {
            let Ok(count) = usize::try_from(length()?) else { return Ok("(nil)".to_owned()) };
            let elements = (0..count).map(|_| read_reply(reader)).collect::<io::Result<Vec<_>>>()?;
            Ok(elements.join("\n"))
        }
        other => Err(invalid(format!("unknown reply type {:?}", other as char))),
    }
}
