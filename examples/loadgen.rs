//! Load generator for machat, which can also drive Redis pub/sub so both are
//! measured by the same code.
//!
//! One thread runs one mio event loop over every socket. Reads are large
//! (64 KiB) into one shared buffer, frames are found with `memchr`, and no
//! memory is allocated per message. The generator reports its own CPU use
//! (getrusage), so you can tell when it, and not the server, was the limit.
//!
//! Load mode, the default:
//!
//! 1. connect every receiver and sender, `--connect-concurrency` at a time;
//! 2. barrier: every sender sends a marker every 100 ms until every member of
//!    its room has seen one, so every member has joined;
//! 3. warm-up (`--warmup`), then the timed phase (`--duration`): in closed
//!    loop each sender keeps `--window` messages in flight, counted against
//!    its own echo; with `--rate` each sender sends at a fixed pace;
//! 4. drain: stop sending, wait until every message sent has reached every
//!    member (or `--drain-timeout`), then count loss.
//!
//! Every message text is `s<sender> <seq> <send-nanos> xxxx…`, padded to
//! `--payload` bytes, so receivers count loss, duplicates and reordering and
//! put each delivery's latency in a fixed log-linear histogram.
//!
//! Idle mode (`--idle N`) opens N joined connections and holds them, to
//! measure the server's memory per idle connection.
//!
//! Output: a table (unless `--quiet`), then one JSON line with every figure.
//! Besides the server's CPU and RSS (`--server-pid`), the line carries the
//! machine's input-backlog drops and TCP retransmissions during the timed
//! phase and its load average: on loopback a retransmission means a stall of
//! 200 ms or more, which shows up in the tail latencies.
//!
//! Exit codes: 0 done; 1 cannot connect, or a connection was lost before the
//! timed phase; 2 bad flags; 3 timed out connecting or at the barrier; 4 the
//! server sent `error: ...` (or a Redis error, or broke the framing); 130
//! interrupted before the timed phase.
//!
//! ```text
//! cargo run --release --example loadgen -- --receivers 1000 --senders 10
//! cargo run --release --example loadgen -- --transport ws --rooms 10 --receivers 1000 --senders 10
//! cargo run --release --example loadgen -- --proto redis --receivers 1000 --senders 10
//! cargo run --release --example loadgen -- --senders 1 --receivers 1000 --rate 100
//! cargo run --release --example loadgen -- --idle 10000 --hold 0 --server-pid "$(pidof machat)"
//! ```

use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use log::{info, warn};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// Bytes asked for by one read.
const CHUNK: usize = 64 * 1024;
/// A sender's queued output above this is not added to in paced mode.
const OUT_CAP: usize = 1 << 20;
/// How often markers (barrier) and probes (idle mode) are repeated.
const REPEAT_NS: u64 = 100_000_000;
/// Longest HTTP upgrade response accepted.
const MAX_HTTP_HEAD: usize = 16 * 1024;

/// Ctrl-C (SIGINT/SIGTERM) count: the first ends the timed phase (or the
/// hold), the second ends the drain, the third leaves at once.
static SIGNALS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(_sig: libc::c_int) {
    if SIGNALS.fetch_add(1, Ordering::SeqCst) >= 2 {
        unsafe { libc::_exit(130) };
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Transport {
    /// Line-framed TCP
    Tcp,
    /// WebSocket (machat only)
    Ws,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Proto {
    /// machat: JSON handshake, then `text\n` lines, deliveries `name:text\n`
    Machat,
    /// Redis: SUBSCRIBE for receivers, PUBLISH for senders
    Redis,
}

/// Load generator for machat and Redis pub/sub (single thread, mio).
#[derive(Parser, Debug)]
#[command(name = "loadgen", version, about)]
struct Args {
    /// Transport.
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    transport: Transport,
    /// Protocol spoken.
    #[arg(long, value_enum, default_value_t = Proto::Machat)]
    proto: Proto,
    /// Server address HOST:PORT [default: 127.0.0.1:8989 for machat tcp,
    /// 127.0.0.1:8099 for machat ws, 127.0.0.1:6379 for redis].
    #[arg(long)]
    addr: Option<String>,
    /// WebSocket upgrade path.
    #[arg(long, default_value = "/mychat")]
    ws_path: String,
    /// Number of rooms (Redis channels); receivers and senders are spread
    /// evenly over them (member i goes to room i mod R).
    #[arg(long, default_value_t = 1)]
    rooms: u32,
    /// Receiving connections.
    #[arg(long, default_value_t = 100)]
    receivers: u32,
    /// Sending connections; each is a member of its room and receives too
    /// (with redis: a PUBLISH connection plus a SUBSCRIBE connection).
    #[arg(long, default_value_t = 1)]
    senders: u32,
    /// Message text size in bytes (`s<id> <seq> <nanos> ` plus padding; never
    /// less than that header).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Length of the timed phase in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up before the timed phase in seconds (sending, not counted).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Closed loop: most messages in flight per sender, counted against the
    /// sender's own echo.
    #[arg(long, default_value_t = 16)]
    window: u32,
    /// Paced (open-loop) mode: messages per second per sender; --window is
    /// then not used [default: none, closed loop].
    #[arg(long)]
    rate: Option<f64>,
    /// After the timed phase, longest wait in seconds for messages in flight.
    #[arg(long, default_value_t = 10.0)]
    drain_timeout: f64,
    /// Longest wait in seconds for the barrier (or, in idle mode, for every
    /// connection to be seen joined).
    #[arg(long, default_value_t = 30.0)]
    barrier_timeout: f64,
    /// Fail when no connection completes its setup for this many seconds.
    #[arg(long, default_value_t = 10.0)]
    connect_timeout: f64,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 100)]
    connect_concurrency: usize,
    /// Loopback source addresses to spread connections over (bind to
    /// 127.0.0.1, 127.0.0.2, ... before connect), to pass the ~28k ephemeral
    /// port limit; 1 = let the kernel choose; 0 = auto (one address per
    /// 20,000 connections, no binding below that).
    #[arg(long, default_value_t = 0)]
    source_ips: u32,
    /// Server process id: its CPU (/proc/PID/stat) and RSS (/proc/PID/status)
    /// are read around the timed phase [default: none].
    #[arg(long)]
    server_pid: Option<u32>,
    /// Idle mode: open this many joined connections and hold them, and report
    /// the server's RSS per connection [default: none, load mode].
    #[arg(long)]
    idle: Option<u32>,
    /// Idle mode: seconds to hold the connections after measuring
    /// [default: none, until Ctrl-C].
    #[arg(long)]
    hold: Option<f64>,
    /// Idle mode: seconds to wait after every connection joined before
    /// reading the server's RSS.
    #[arg(long, default_value_t = 1.0)]
    settle: f64,
    /// Room names are this prefix followed by the room number.
    #[arg(long, default_value = "lg")]
    room_prefix: String,
    /// Free text copied into the JSON line as "label".
    #[arg(long, default_value = "")]
    label: String,
    /// Print only the JSON line on stdout (no table).
    #[arg(long)]
    quiet: bool,
}

/// A reason to stop, with the exit code.
#[derive(Debug)]
struct Fail {
    code: i32,
    msg: String,
}

fn fail(code: i32, msg: impl Into<String>) -> Fail {
    Fail { code, msg: msg.into() }
}

#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

fn secs_ns(s: f64) -> u64 {
    (s.max(0.0) * 1e9) as u64
}

// ---------------------------------------------------------------- histogram

/// Log-linear histogram of nanoseconds: exact below 128, then 64 buckets per
/// power of two (under 1.6% error). Fixed size, no allocation per sample.
struct Hist {
    counts: Vec<u64>,
    n: u64,
    sum: u128,
    max: u64,
}

const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

impl Hist {
    fn new() -> Self {
        Hist { counts: vec![0; BUCKETS], n: 0, sum: 0, max: 0 }
    }

    fn clear(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.n = 0;
        self.sum = 0;
        self.max = 0;
    }

    fn index(v: u64) -> usize {
        if v < (2 * SUB) as u64 {
            v as usize
        } else {
            let shift = 63 - v.leading_zeros() - SUB_BITS;
            (shift as usize + 1) * SUB + ((v >> shift) as usize - SUB)
        }
    }

    /// Lowest value and width of bucket `i`.
    fn bucket(i: usize) -> (u64, u64) {
        if i < 2 * SUB {
            (i as u64, 1)
        } else {
            let shift = (i / SUB - 1) as u32;
            (((SUB + i % SUB) as u64) << shift, 1u64 << shift)
        }
    }

    #[inline]
    fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.n += 1;
        self.sum += v as u128;
        if v > self.max {
            self.max = v;
        }
    }

    /// Value at quantile `q` (0..=1): the middle of its bucket, never above
    /// the largest sample.
    fn quantile(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, width) = Self::bucket(i);
                return (lo + width / 2).min(self.max);
            }
        }
        self.max
    }

    fn mean(&self) -> u64 {
        if self.n == 0 { 0 } else { (self.sum / self.n as u128) as u64 }
    }
}

// ---------------------------------------------------------- sequence checks

/// What one receiver has seen of one sender: highest sequence number + 1,
/// and a bitmap of the 64 numbers just below it.
#[derive(Clone, Copy, Default)]
struct Track {
    next: u64,
    bits: u64,
    marker: bool,
}

enum Seen {
    New,
    Late,
    Dup,
}

impl Track {
    #[inline]
    fn see(&mut self, seq: u64) -> Seen {
        if seq >= self.next {
            let shift = seq + 1 - self.next;
            self.bits = (if shift >= 64 { 0 } else { self.bits << shift }) | 1;
            self.next = seq + 1;
            Seen::New
        } else {
            let back = self.next - 1 - seq;
            if back >= 64 {
                // Too far behind to tell; count it as a late first arrival.
                return Seen::Late;
            }
            let bit = 1u64 << back;
            if self.bits & bit != 0 {
                Seen::Dup
            } else {
                self.bits |= bit;
                Seen::Late
            }
        }
    }
}

// ------------------------------------------------------------ message text

enum Msg {
    Data { sid: u32, seq: u64, sent: u64 },
    Marker(u32),
    Probe,
    Other,
}

#[inline]
fn digits(p: &[u8], mut i: usize) -> Option<(u64, usize)> {
    let start = i;
    let mut v: u64 = 0;
    while let Some(&b) = p.get(i) {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        v = v.wrapping_mul(10).wrapping_add(d as u64);
        i += 1;
    }
    (i > start).then_some((v, i))
}

#[inline]
fn parse_msg(p: &[u8]) -> Msg {
    match p.first() {
        Some(b's') => {
            let parsed = (|| {
                let (sid, i) = digits(p, 1)?;
                if p.get(i) != Some(&b' ') {
                    return None;
                }
                let (seq, i) = digits(p, i + 1)?;
                if p.get(i) != Some(&b' ') {
                    return None;
                }
                let (sent, _) = digits(p, i + 1)?;
                Some(Msg::Data { sid: u32::try_from(sid).ok()?, seq, sent })
            })();
            parsed.unwrap_or(Msg::Other)
        }
        Some(b'm') => match digits(p, 1) {
            Some((sid, i)) if i == p.len() => u32::try_from(sid).map_or(Msg::Other, Msg::Marker),
            _ => Msg::Other,
        },
        Some(b'p') if p.len() == 1 => Msg::Probe,
        _ => Msg::Other,
    }
}

fn put_u64(out: &mut Vec<u8>, mut v: u64) {
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

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for k in 0..4 {
            if k <= chunk.len() {
                s.push(ABC[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

// ---------------------------------------------------------------- encoding

/// Builds outgoing messages for the chosen protocol into a connection's
/// output buffer.
struct Encoder {
    proto: Proto,
    transport: Transport,
    payload: usize,
    room_names: Vec<String>,
    tmp: Vec<u8>,
    rng: u64,
}

impl Encoder {
    fn next_rand(&mut self) -> u64 {
        // xorshift64
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// Appends one client WebSocket frame (always masked).
    fn ws_frame(&mut self, out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
        let mask = (self.next_rand() as u32).to_ne_bytes();
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

    /// Wraps `self.tmp` as one chat message for `room`.
    fn wrap(&mut self, out: &mut Vec<u8>, room: u32) {
        match (self.proto, self.transport) {
            (Proto::Machat, Transport::Tcp) => {
                out.extend_from_slice(&self.tmp);
                out.push(b'\n');
            }
            (Proto::Machat, Transport::Ws) => {
                self.tmp.push(b'\n');
                let tmp = std::mem::take(&mut self.tmp);
                self.ws_frame(out, 1, &tmp);
                self.tmp = tmp;
            }
            (Proto::Redis, _) => {
                let name = self.room_names[room as usize].as_bytes();
                out.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n$");
                put_u64(out, name.len() as u64);
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(name);
                out.extend_from_slice(b"\r\n$");
                put_u64(out, self.tmp.len() as u64);
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&self.tmp);
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    fn data(&mut self, out: &mut Vec<u8>, room: u32, sid: u32, seq: u64, now: u64) {
        self.tmp.clear();
        self.tmp.push(b's');
        put_u64(&mut self.tmp, sid as u64);
        self.tmp.push(b' ');
        put_u64(&mut self.tmp, seq);
        self.tmp.push(b' ');
        put_u64(&mut self.tmp, now);
        if self.tmp.len() < self.payload {
            self.tmp.push(b' ');
            self.tmp.resize(self.payload, b'x');
        }
        self.wrap(out, room);
    }

    fn text(&mut self, out: &mut Vec<u8>, room: u32, prefix: u8, id: Option<u32>) {
        self.tmp.clear();
        self.tmp.push(prefix);
        if let Some(id) = id {
            put_u64(&mut self.tmp, id as u64);
        }
        self.wrap(out, room);
    }
}

// ------------------------------------------------------------------- redis

enum Kind {
    Message,
    Subscribe,
    Other,
}

enum Reply {
    Int,
    Simple,
    Error(usize, usize),
    /// An array: what its first element says and where its third one is.
    Array(Kind, usize, usize),
}

/// End of a line's content (before `\r`) and the start of the next line.
#[inline]
fn resp_line(b: &[u8], pos: usize) -> Option<(usize, usize)> {
    let nl = pos + memchr::memchr(b'\n', &b[pos..])?;
    let end = if nl > pos && b[nl - 1] == b'\r' { nl - 1 } else { nl };
    Some((end, nl + 1))
}

#[inline]
fn resp_int(s: &[u8]) -> Result<i64, String> {
    let (neg, body) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    match digits(body, 0) {
        Some((v, n)) if n == body.len() => Ok(if neg { -(v as i64) } else { v as i64 }),
        _ => Err(format!("bad RESP length {:?}", String::from_utf8_lossy(s))),
    }
}

/// Fast path for the common case, a complete pub/sub delivery
/// `*3 $7 message $<n> <channel> $<n> <payload>`: returns the length used and
/// where the payload is; `None` means "ask `resp_next`".
#[inline]
fn resp_message(b: &[u8]) -> Option<(usize, usize, usize)> {
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
    let (_, chan_end) = bulk(HEAD.len())?;
    if b.get(chan_end + 2) != Some(&b'$') {
        return None;
    }
    let (s, e) = bulk(chan_end + 3)?;
    Some((e + 2, s, e))
}

/// Parses one RESP2 reply at the start of `b`: `Ok(None)` when incomplete.
fn resp_next(b: &[u8]) -> Result<Option<(usize, Reply)>, String> {
    if b.is_empty() {
        return Ok(None);
    }
    let Some((end, next)) = resp_line(b, 0) else {
        return Ok(None);
    };
    match b[0] {
        b':' => Ok(Some((next, Reply::Int))),
        b'+' => Ok(Some((next, Reply::Simple))),
        b'-' => Ok(Some((next, Reply::Error(1, end)))),
        b'$' => {
            let n = resp_int(&b[1..end])?;
            if n < 0 {
                return Ok(Some((next, Reply::Simple)));
            }
            let stop = next + n as usize + 2;
            Ok((stop <= b.len()).then_some((stop, Reply::Simple)))
        }
        b'*' => {
            let n = resp_int(&b[1..end])?;
            let mut p = next;
            let mut kind = Kind::Other;
            let mut third = (0, 0);
            for k in 0..n.max(0) {
                if p >= b.len() {
                    return Ok(None);
                }
                let Some((e, nx)) = resp_line(b, p) else {
                    return Ok(None);
                };
                match b[p] {
                    b'$' => {
                        let len = resp_int(&b[p + 1..e])?;
                        if len < 0 {
                            p = nx;
                            continue;
                        }
                        let (s, f) = (nx, nx + len as usize);
                        if f + 2 > b.len() {
                            return Ok(None);
                        }
                        if k == 0 {
                            kind = match &b[s..f] {
                                b"message" => Kind::Message,
                                b"subscribe" => Kind::Subscribe,
                                _ => Kind::Other,
                            };
                        } else if k == 2 {
                            third = (s, f);
                        }
                        p = f + 2;
                    }
                    b':' | b'+' => p = nx,
                    b'-' => return Ok(Some((nx, Reply::Error(p + 1, e)))),
                    other => return Err(format!("unexpected RESP element {:?}", other as char)),
                }
            }
            Ok(Some((p, Reply::Array(kind, third.0, third.1))))
        }
        _ => Err(format!("not a Redis reply: {:?}", String::from_utf8_lossy(&b[..end.min(120)]))),
    }
}

// ------------------------------------------------------------- connections

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum St {
    Pending,
    Connecting,
    Upgrading,
    Subscribing,
    Ready,
    Closed,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Receives only.
    Receiver,
    /// machat sender: sends, and receives like any member.
    Sender,
    /// Redis sender's PUBLISH connection.
    Publisher,
    /// Redis sender's SUBSCRIBE connection (counts the sender's echoes).
    SenderSub,
    /// Idle-mode connection.
    Idle,
}

const NO_SENDER: u32 = u32::MAX;

struct Conn {
    sock: Option<TcpStream>,
    st: St,
    role: Role,
    id: u32,
    room: u32,
    /// The sender this connection sends for, or whose echoes it counts.
    sender: u32,
    carry: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    tracks: Vec<Track>,
    joined: bool,
    /// Data messages this connection received (first copies only).
    got: u64,
    peer_closed: Option<String>,
}

#[derive(Default)]
struct Stats {
    ready: usize,
    deliveries: u64,
    measured: u64,
    unique: u64,
    dups: u64,
    late: u64,
    foreign: u64,
    other: u64,
    marker_pairs: u64,
    joined: u64,
    disconnects: u64,
    acks: u64,
    /// First copies received by receiving connections that later closed.
    dead_got: u64,
    /// Paced mode: the furthest a send fell behind its schedule, in ns.
    pace_lag_max: u64,
}

struct SenderSt {
    conn: usize,
    room: u32,
    sent: u64,
    echoed: u64,
    queued: bool,
    start: u64,
}

/// Everything a connection's input handling may touch besides itself.
struct Ctx {
    rooms: u32,
    senders: Vec<SenderSt>,
    dirty: Vec<u32>,
    measuring: bool,
    st: Stats,
    hist: Hist,
    fail: Option<Fail>,
    enc: Encoder,
}

impl Ctx {
    fn set_fail(&mut self, code: i32, msg: String) {
        if self.fail.is_none() {
            self.fail = Some(fail(code, msg));
        }
    }
}

impl Conn {
    fn name(&self) -> String {
        let p = match self.role {
            Role::Receiver => "r",
            Role::Sender => "s",
            Role::Publisher => "pub",
            Role::SenderSub => "sub",
            Role::Idle => "i",
        };
        format!("{p}{}", self.id)
    }

    fn mark_ready(&mut self, cx: &mut Ctx) {
        self.st = St::Ready;
        cx.st.ready += 1;
    }

    /// Handles everything complete in `buf`; returns how much was used.
    fn process(&mut self, buf: &[u8], now: u64, cx: &mut Ctx) -> usize {
        let mut pos = 0;
        if self.st == St::Upgrading {
            let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
                if buf.len() > MAX_HTTP_HEAD {
                    cx.set_fail(4, format!("{}: WebSocket upgrade response too long", self.name()));
                    return buf.len();
                }
                return 0;
            };
            let status = buf[..end].split(|&b| b == b'\n').next().unwrap_or(b"");
            let ok = status.starts_with(b"HTTP/1.1 101") || status.starts_with(b"HTTP/1.0 101");
            if !ok {
                cx.set_fail(
                    4,
                    format!(
                        "{}: WebSocket upgrade refused: {}",
                        self.name(),
                        String::from_utf8_lossy(status).trim_end()
                    ),
                );
                return buf.len();
            }
            pos = end + 4;
            let hs = handshake_json(&self.name(), &cx.enc.room_names[self.room as usize]);
            cx.enc.ws_frame(&mut self.out, 1, hs.as_bytes());
            self.mark_ready(cx);
        }
        let rest = &buf[pos..];
        pos + match (cx.enc.proto, cx.enc.transport) {
            (Proto::Machat, Transport::Tcp) => {
                let mut p = 0;
                for nl in memchr::memchr_iter(b'\n', rest) {
                    self.machat_line(&rest[p..nl], now, cx);
                    p = nl + 1;
                }
                p
            }
            (Proto::Machat, Transport::Ws) => self.ws_frames(rest, now, cx),
            (Proto::Redis, _) => self.resp(rest, now, cx),
        }
    }

    fn machat_line(&mut self, line: &[u8], now: u64, cx: &mut Ctx) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b"error:") {
            cx.set_fail(4, format!("{}: server said {:?}", self.name(), String::from_utf8_lossy(line)));
            return;
        }
        // Names are short: a plain scan beats a memchr call here.
        match line.iter().position(|&b| b == b':') {
            Some(colon) => self.on_text(&line[colon + 1..], now, cx),
            None if line.is_empty() => {}
            None => cx.st.other += 1,
        }
    }

    fn ws_frames(&mut self, buf: &[u8], now: u64, cx: &mut Ctx) -> usize {
        let mut pos = 0;
        loop {
            let b = &buf[pos..];
            if b.len() < 2 {
                break;
            }
            if b[1] & 0x80 != 0 {
                cx.set_fail(4, format!("{}: server sent a masked frame", self.name()));
                return buf.len();
            }
            let (len, head) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as u64, 4),
                127 if b.len() >= 10 => {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(&b[2..10]);
                    (u64::from_be_bytes(n), 10)
                }
                126 | 127 => break,
                n => (n as u64, 2),
            };
            let Some(total) = usize::try_from(len).ok().and_then(|l| l.checked_add(head)) else {
                cx.set_fail(4, format!("{}: absurd frame length {len}", self.name()));
                return buf.len();
            };
            if b.len() < total {
                break;
            }
            let payload = &b[head..total];
            match b[0] & 0x0f {
                0..=2 => {
                    let mut p = 0;
                    for nl in memchr::memchr_iter(b'\n', payload) {
                        self.machat_line(&payload[p..nl], now, cx);
                        p = nl + 1;
                    }
                    if p < payload.len() {
                        self.machat_line(&payload[p..], now, cx);
                    }
                }
                8 => {
                    let code =
                        if payload.len() >= 2 { u16::from_be_bytes([payload[0], payload[1]]) } else { 1005 };
                    let why = String::from_utf8_lossy(payload.get(2..).unwrap_or(b""));
                    self.peer_closed = Some(format!("WebSocket close {code} {why}"));
                }
                9 => cx.enc.ws_frame(&mut self.out, 0xA, payload),
                _ => {}
            }
            pos += total;
        }
        pos
    }

    fn resp(&mut self, buf: &[u8], now: u64, cx: &mut Ctx) -> usize {
        let mut pos = 0;
        loop {
            if let Some((used, s, e)) = resp_message(&buf[pos..]) {
                self.on_text(&buf[pos + s..pos + e], now, cx);
                pos += used;
                continue;
            }
            let (used, reply) = match resp_next(&buf[pos..]) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    cx.set_fail(4, format!("{}: {e}", self.name()));
                    return buf.len();
                }
            };
            let b = &buf[pos..];
            match reply {
                Reply::Error(s, e) => {
                    cx.set_fail(
                        4,
                        format!("{}: redis error: {}", self.name(), String::from_utf8_lossy(&b[s..e])),
                    );
                    return buf.len();
                }
                Reply::Int => cx.st.acks += 1,
                Reply::Simple => {}
                Reply::Array(Kind::Subscribe, _, _) => {
                    if self.st == St::Subscribing {
                        self.mark_ready(cx);
                        if !self.joined {
                            self.joined = true;
                            cx.st.joined += 1;
                        }
                    }
                }
                Reply::Array(Kind::Message, s, e) => self.on_text(&b[s..e], now, cx),
                Reply::Array(Kind::Other, _, _) => {}
            }
            pos += used;
        }
        pos
    }

    /// One delivered message text.
    #[inline]
    fn on_text(&mut self, text: &[u8], now: u64, cx: &mut Ctx) {
        match parse_msg(text) {
            Msg::Data { sid, seq, sent } => {
                let rooms = cx.rooms;
                let track =
                    if sid % rooms == self.room { self.tracks.get_mut((sid / rooms) as usize) } else { None };
                let Some(track) = track else {
                    cx.st.foreign += 1;
                    return;
                };
                cx.st.deliveries += 1;
                match track.see(seq) {
                    Seen::New => {
                        cx.st.unique += 1;
                        self.got += 1;
                    }
                    Seen::Late => {
                        cx.st.unique += 1;
                        cx.st.late += 1;
                        self.got += 1;
                    }
                    Seen::Dup => {
                        cx.st.dups += 1;
                        return;
                    }
                }
                if cx.measuring {
                    cx.st.measured += 1;
                    cx.hist.record(now.saturating_sub(sent));
                }
                if sid == self.sender {
                    let s = &mut cx.senders[sid as usize];
                    s.echoed += 1;
                    if !s.queued {
                        s.queued = true;
                        cx.dirty.push(sid);
                    }
                }
            }
            Msg::Marker(sid) => {
                let rooms = cx.rooms;
                if sid % rooms == self.room
                    && let Some(t) = self.tracks.get_mut((sid / rooms) as usize)
                    && !t.marker
                {
                    t.marker = true;
                    cx.st.marker_pairs += 1;
                }
            }
            Msg::Probe => {
                if !self.joined {
                    self.joined = true;
                    cx.st.joined += 1;
                }
            }
            Msg::Other => cx.st.other += 1,
        }
    }
}

fn handshake_json(name: &str, room: &str) -> String {
    let mut s = serde_json::json!({ "name": name, "room": room }).to_string();
    s.push('\n');
    s
}

/// Writes as much queued output as the socket takes.
fn flush(c: &mut Conn) -> io::Result<()> {
    let Some(sock) = c.sock.as_mut() else {
        return Ok(());
    };
    while c.out_pos < c.out.len() {
        match sock.write(&c.out[c.out_pos..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => c.out_pos += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if c.out_pos == c.out.len() {
        c.out.clear();
        c.out_pos = 0;
    } else if c.out_pos >= CHUNK {
        c.out.drain(..c.out_pos);
        c.out_pos = 0;
    }
    Ok(())
}

/// Starts a non-blocking connect, bound to `src` first when given.
fn connect_from(dst: SocketAddr, src: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let (SocketAddr::V4(dst4), Some(src)) = (dst, src) else {
        return TcpStream::connect(dst);
    };
    let fd = unsafe {
        libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0)
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // Owns the descriptor from here on: closed on every early return.
    let std_sock = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // Pick the port at connect time, so ports are shared per destination.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let sa = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let local = sa(src, 0);
    if unsafe { libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let remote = sa(*dst4.ip(), dst4.port());
    if unsafe { libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(TcpStream::from_std(std_sock))
}

// ------------------------------------------------------------ process info

fn clk_tck() -> f64 {
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// utime + stime of a process, in seconds.
fn proc_cpu(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.get(s.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line; `rest` starts at field 3.
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clk_tck())
}

/// VmRSS of a process in KiB.
fn proc_rss_kb(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[derive(Clone, Copy, Default)]
struct Cpu {
    user: f64,
    sys: f64,
}

fn own_cpu() -> Cpu {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    Cpu { user: tv(ru.ru_utime), sys: tv(ru.ru_stime) }
}

/// Raises the soft open-file limit to the hard one; returns the soft limit.
fn raise_nofile() -> u64 {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return 1024;
    }
    if rl.rlim_cur < rl.rlim_max {
        let want = libc::rlimit { rlim_cur: rl.rlim_max, rlim_max: rl.rlim_max };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return want.rlim_cur;
        }
    }
    rl.rlim_cur
}

/// A snapshot of the server process (when --server-pid is given) and of the
/// machine's packet drops and TCP retransmissions.
#[derive(Clone, Copy, Default)]
struct ServerSnap {
    cpu: Option<f64>,
    rss_kb: Option<u64>,
    net_drops: Option<u64>,
    retrans: Option<u64>,
}

/// Packets the kernel dropped from its input backlog (all CPUs): on loopback
/// these become TCP retransmissions, i.e. stalls of 200 ms or more.
fn softnet_drops() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/net/softnet_stat").ok()?;
    s.lines().map(|l| l.split_whitespace().nth(1).and_then(|v| u64::from_str_radix(v, 16).ok())).sum()
}

/// TCP segments retransmitted, machine-wide.
fn tcp_retrans() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut tcp = s.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let at = names.split_whitespace().position(|n| n == "RetransSegs")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

// ------------------------------------------------------------------- engine

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Phase {
    Connect,
    Barrier,
    Warmup,
    Measure,
    Drain,
    Verify,
    Settle,
    Hold,
    Done,
}

struct Gen {
    args: Args,
    clock: Clock,
    poll: Poll,
    addr: SocketAddr,
    host: String,
    src_ips: u32,
    conns: Vec<Conn>,
    scratch: Vec<u8>,
    cx: Ctx,
    phase: Phase,
    sending: bool,
    next_open: usize,
    last_ready: usize,
    last_progress: u64,
    deadline: u64,
    next_repeat: u64,
    /// Members of each room that receive.
    members: Vec<u64>,
    /// Receiving members of each room that have disconnected.
    dead: Vec<u64>,
    total_pairs: u64,
    // figures
    t_connected: u64,
    t_barrier: u64,
    t_measure_start: u64,
    t_measure_end: u64,
    t_drain_end: u64,
    sent_at_start: u64,
    sent_at_end: u64,
    cpu_start: Cpu,
    cpu_end: Cpu,
    srv_start: ServerSnap,
    srv_end: ServerSnap,
    drain_complete: bool,
}

fn server_snap(pid: Option<u32>) -> ServerSnap {
    ServerSnap {
        cpu: pid.and_then(proc_cpu),
        rss_kb: pid.and_then(|p| proc_rss_kb(&p.to_string())),
        net_drops: softnet_drops(),
        retrans: tcp_retrans(),
    }
}

impl Gen {
    fn new(args: Args) -> Result<Gen, Fail> {
        if args.rooms == 0 {
            return Err(fail(2, "--rooms must be at least 1"));
        }
        if args.proto == Proto::Redis && args.transport == Transport::Ws {
            return Err(fail(2, "--proto redis works over --transport tcp only"));
        }
        if let Some(r) = args.rate
            && !(r > 0.0 && r.is_finite())
        {
            return Err(fail(2, "--rate must be a positive number"));
        }
        if args.idle.is_none() && args.senders == 0 {
            return Err(fail(2, "--senders must be at least 1 (or use --idle N)"));
        }
        if args.idle.is_none() && args.rate.is_none() && args.window == 0 {
            return Err(fail(2, "--window must be at least 1"));
        }
        let addr_text = args.addr.clone().unwrap_or_else(|| {
            match (args.proto, args.transport) {
                (Proto::Redis, _) => "127.0.0.1:6379",
                (Proto::Machat, Transport::Tcp) => "127.0.0.1:8989",
                (Proto::Machat, Transport::Ws) => "127.0.0.1:8099",
            }
            .to_string()
        });
        let addr = addr_text
            .to_socket_addrs()
            .map_err(|e| fail(1, format!("cannot resolve {addr_text}: {e}")))?
            .next()
            .ok_or_else(|| fail(1, format!("{addr_text} resolves to no address")))?;
        if let Some(pid) = args.server_pid
            && proc_cpu(pid).is_none()
        {
            return Err(fail(2, format!("--server-pid {pid}: cannot read /proc/{pid}/stat")));
        }

        let rooms = args.rooms;
        let room_names: Vec<String> = (0..rooms).map(|r| format!("{}{r}", args.room_prefix)).collect();
        let in_room = |n: u32, r: u32| (n / rooms + u32::from(r < n % rooms)) as usize;

        let mut conns = Vec::new();
        let mut senders = Vec::new();
        let mut members = vec![0u64; rooms as usize];
        let new_conn = |role, id, room, sender, tracks| Conn {
            sock: None,
            st: St::Pending,
            role,
            id,
            room,
            sender,
            carry: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            tracks,
            joined: false,
            got: 0,
            peer_closed: None,
        };
        if let Some(n) = args.idle {
            for i in 0..n {
                conns.push(new_conn(Role::Idle, i, i % rooms, NO_SENDER, Vec::new()));
            }
        } else {
            let tracks_for = |r: u32| vec![Track::default(); in_room(args.senders, r)];
            for i in 0..args.receivers {
                let r = i % rooms;
                members[r as usize] += 1;
                conns.push(new_conn(Role::Receiver, i, r, NO_SENDER, tracks_for(r)));
            }
            for s in 0..args.senders {
                let r = s % rooms;
                members[r as usize] += 1;
                let conn = conns.len();
                if args.proto == Proto::Redis {
                    conns.push(new_conn(Role::Publisher, s, r, s, Vec::new()));
                    conns.push(new_conn(Role::SenderSub, s, r, s, tracks_for(r)));
                } else {
                    conns.push(new_conn(Role::Sender, s, r, s, tracks_for(r)));
                }
                senders.push(SenderSt { conn, room: r, sent: 0, echoed: 0, queued: false, start: 0 });
            }
        }
        let total_pairs = (0..rooms).map(|r| members[r as usize] * in_room(args.senders, r) as u64).sum();

        if args.idle.is_none() && args.senders < rooms {
            warn!("{} of {rooms} rooms have no sender: their receivers get nothing", rooms - args.senders);
        }
        let limit = raise_nofile();
        if conns.len() as u64 + 32 > limit {
            return Err(fail(
                1,
                format!(
                    "{} connections need more open files than the limit {limit} (raise the hard limit, or split the load over processes)",
                    conns.len()
                ),
            ));
        }
        let loopback = matches!(addr.ip(), IpAddr::V4(ip) if ip.is_loopback());
        let src_ips = match args.source_ips {
            0 => (conns.len() as u32).div_ceil(20_000).max(1),
            n => n.min(254),
        };
        if src_ips > 1 && !loopback {
            warn!("--source-ips ignored: the server address is not IPv4 loopback");
        }
        let src_ips = if loopback { src_ips } else { 1 };

        let poll = Poll::new().map_err(|e| fail(1, format!("cannot create poll: {e}")))?;
        let host = addr_text.clone();
        let enc = Encoder {
            proto: args.proto,
            transport: args.transport,
            payload: args.payload,
            room_names,
            tmp: Vec::with_capacity(args.payload + 64),
            rng: 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()),
        };
        Ok(Gen {
            clock: Clock(Instant::now()),
            poll,
            addr,
            host,
            src_ips,
            conns,
            scratch: vec![0; 2 * CHUNK],
            cx: Ctx {
                rooms,
                senders,
                dirty: Vec::new(),
                measuring: false,
                st: Stats::default(),
                hist: Hist::new(),
                fail: None,
                enc,
            },
            phase: Phase::Connect,
            sending: false,
            next_open: 0,
            last_ready: 0,
            last_progress: 0,
            deadline: 0,
            next_repeat: 0,
            dead: vec![0; members.len()],
            members,
            total_pairs,
            t_connected: 0,
            t_barrier: 0,
            t_measure_start: 0,
            t_measure_end: 0,
            t_drain_end: 0,
            sent_at_start: 0,
            sent_at_end: 0,
            cpu_start: Cpu::default(),
            cpu_end: Cpu::default(),
            srv_start: ServerSnap::default(),
            srv_end: ServerSnap::default(),
            drain_complete: false,
            args,
        })
    }

    // ----- connections

    fn open_more(&mut self) -> Result<(), Fail> {
        let limit = self.args.connect_concurrency.max(1);
        while self.next_open < self.conns.len() && self.next_open - self.cx.st.ready < limit {
            let i = self.next_open;
            let src =
                (self.src_ips > 1).then(|| Ipv4Addr::new(127, 0, 0, 1 + (i as u32 % self.src_ips) as u8));
            let mut sock = connect_from(self.addr, src).map_err(|e| {
                let hint = match e.raw_os_error() {
                    Some(libc::EMFILE) | Some(libc::ENFILE) => " (out of file descriptors)",
                    Some(libc::EADDRNOTAVAIL) => " (out of ephemeral ports: try --source-ips)",
                    _ => "",
                };
                fail(1, format!("cannot connect to {}: {e}{hint}", self.addr))
            })?;
            let _ = sock.set_nodelay(true);
            self.poll
                .registry()
                .register(&mut sock, Token(i), Interest::READABLE | Interest::WRITABLE)
                .map_err(|e| fail(1, format!("cannot register socket: {e}")))?;
            let c = &mut self.conns[i];
            c.sock = Some(sock);
            c.st = St::Connecting;
            self.next_open += 1;
        }
        Ok(())
    }

    fn on_connected(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let cx = &mut self.cx;
        match (cx.enc.proto, cx.enc.transport) {
            (Proto::Redis, _) if c.role == Role::Publisher => c.mark_ready(cx),
            (Proto::Redis, _) => {
                let room = cx.enc.room_names[c.room as usize].as_bytes();
                c.out.extend_from_slice(b"*2\r\n$9\r\nSUBSCRIBE\r\n$");
                put_u64(&mut c.out, room.len() as u64);
                c.out.extend_from_slice(b"\r\n");
                c.out.extend_from_slice(room);
                c.out.extend_from_slice(b"\r\n");
                c.st = St::Subscribing;
            }
            (Proto::Machat, Transport::Tcp) => {
                let hs = handshake_json(&c.name(), &cx.enc.room_names[c.room as usize]);
                c.out.extend_from_slice(hs.as_bytes());
                c.mark_ready(cx);
            }
            (Proto::Machat, Transport::Ws) => {
                let mut key = [0u8; 16];
                key[..8].copy_from_slice(&cx.enc.next_rand().to_le_bytes());
                key[8..].copy_from_slice(&cx.enc.next_rand().to_le_bytes());
                let req = format!(
                    "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://{}/\r\n\r\n",
                    self.args.ws_path,
                    self.host,
                    base64(&key),
                    self.host
                );
                c.out.extend_from_slice(req.as_bytes());
                c.st = St::Upgrading;
            }
        }
    }

    fn on_event(&mut self, ev: &mio::event::Event) {
        let i = ev.token().0;
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        if c.st == St::Closed || c.sock.is_none() {
            return;
        }
        if c.st == St::Connecting {
            let sock = c.sock.as_ref().expect("socket");
            let err = match sock.take_error() {
                Ok(Some(e)) | Err(e) => Some(e),
                Ok(None) => None,
            };
            if let Some(e) = err {
                let hint =
                    if e.kind() == ErrorKind::ConnectionRefused { " (is the server running?)" } else { "" };
                self.cx.set_fail(1, format!("cannot connect to {}: {e}{hint}", self.addr));
                return;
            }
            match sock.peer_addr() {
                Ok(_) => self.on_connected(i),
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(e) => {
                    self.cx.set_fail(1, format!("cannot connect to {}: {e}", self.addr));
                    return;
                }
            }
        }
        let closing = ev.is_read_closed() || ev.is_error();
        if ev.is_readable() || closing {
            self.on_readable(i, closing);
        }
        let c = &mut self.conns[i];
        if c.st != St::Closed
            && c.out_pos < c.out.len()
            && let Err(e) = flush(c)
        {
            self.on_closed(i, e.to_string());
        }
    }

    /// Reads until the socket is drained; `closing` (the peer has shut its
    /// side) means read on to the end of the stream.
    fn on_readable(&mut self, i: usize, closing: bool) {
        let mut closed = None;
        {
            let Gen { conns, scratch, cx, clock, .. } = self;
            let c = &mut conns[i];
            while let Some(sock) = c.sock.as_mut() {
                let keep = c.carry.len();
                if scratch.len() < keep + CHUNK {
                    scratch.resize(keep + CHUNK, 0);
                }
                scratch[..keep].copy_from_slice(&c.carry);
                match sock.read(&mut scratch[keep..keep + CHUNK]) {
                    Ok(0) => {
                        closed = Some("connection closed by the server".to_string());
                        break;
                    }
                    Ok(n) => {
                        let now = clock.ns();
                        let total = keep + n;
                        let used = c.process(&scratch[..total], now, cx);
                        c.carry.clear();
                        c.carry.extend_from_slice(&scratch[used..total]);
                        if let Some(why) = c.peer_closed.take() {
                            closed = Some(why);
                            break;
                        }
                        // A short read took everything queued: epoll (edge
                        // triggered) reports anything that comes later. The
                        // end of the stream may already be here, though.
                        if (n < CHUNK && !closing) || cx.fail.is_some() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        closed = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        if let Some(why) = closed {
            self.on_closed(i, why);
        }
    }

    fn on_closed(&mut self, i: usize, why: String) {
        let c = &mut self.conns[i];
        if c.st == St::Closed {
            return;
        }
        let mut name = c.name();
        if c.st == St::Upgrading && !c.carry.is_empty() {
            // Whatever came instead of an HTTP response says what went wrong.
            let first = c.carry.split(|&b| b == b'\n').next().unwrap_or(b"");
            let first = String::from_utf8_lossy(&first[..first.len().min(200)]).into_owned();
            name = format!("{name} (instead of an HTTP response: {first:?})");
        }
        if let Some(mut sock) = c.sock.take() {
            let _ = self.poll.registry().deregister(&mut sock);
        }
        if c.st == St::Ready && c.role != Role::Publisher && c.role != Role::Idle {
            self.dead[c.room as usize] += 1;
            self.cx.st.dead_got += c.got;
        }
        c.st = St::Closed;
        c.carry = Vec::new();
        c.out = Vec::new();
        c.out_pos = 0;
        if self.phase == Phase::Done || self.cx.fail.is_some() {
            return;
        }
        match self.phase {
            Phase::Warmup | Phase::Measure | Phase::Drain | Phase::Hold => {
                self.cx.st.disconnects += 1;
                warn!("{name}: {why}");
            }
            _ => self.cx.set_fail(1, format!("{name}: connection lost during setup: {why}")),
        }
    }

    // ----- sending

    fn sent_total(&self) -> u64 {
        self.cx.senders.iter().map(|s| s.sent).sum()
    }

    /// Closed loop: tops up each sender that had echoes back.
    fn service_dirty(&mut self) {
        let window = self.args.window as u64;
        let closed_loop = self.args.rate.is_none() && self.sending;
        let now = self.clock.ns();
        let cx = &mut self.cx;
        while let Some(sid) = cx.dirty.pop() {
            let s = &mut cx.senders[sid as usize];
            s.queued = false;
            if !closed_loop {
                continue;
            }
            let c = &mut self.conns[s.conn];
            if c.st != St::Ready {
                continue;
            }
            let mut added = false;
            while s.sent.saturating_sub(s.echoed) < window {
                cx.enc.data(&mut c.out, s.room, sid, s.sent, now);
                s.sent += 1;
                added = true;
            }
            if added && let Err(e) = flush(c) {
                let i = s.conn;
                self.on_closed(i, e.to_string());
                return;
            }
        }
    }

    /// Paced mode: sends what each sender owes by now; returns the next due
    /// time.
    fn service_paced(&mut self, now: u64, rate: f64) -> u64 {
        let mut next = u64::MAX;
        let mut broken = Vec::new();
        for (sid, s) in self.cx.senders.iter_mut().enumerate() {
            let c = &mut self.conns[s.conn];
            if c.st != St::Ready {
                continue;
            }
            if now >= s.start {
                let due = ((now - s.start) as f64 * rate / 1e9) as u64 + 1;
                let mut added = false;
                while s.sent < due && c.out.len() - c.out_pos < OUT_CAP {
                    if self.cx.measuring {
                        let due_at = s.start + (s.sent as f64 * 1e9 / rate) as u64;
                        let lag = now.saturating_sub(due_at);
                        if lag > self.cx.st.pace_lag_max {
                            self.cx.st.pace_lag_max = lag;
                        }
                    }
                    self.cx.enc.data(&mut c.out, s.room, sid as u32, s.sent, now);
                    s.sent += 1;
                    added = true;
                }
                if added && let Err(e) = flush(c) {
                    broken.push((s.conn, e.to_string()));
                }
            }
            let due_at = s.start + (s.sent as f64 * 1e9 / rate).ceil() as u64;
            next = next.min(due_at.max(now + 200_000));
        }
        for (i, why) in broken {
            self.on_closed(i, why);
        }
        next
    }

    /// Sends one marker from every sender, or one probe into every room.
    fn send_repeats(&mut self) {
        let mut broken = Vec::new();
        if self.phase == Phase::Barrier {
            for (sid, s) in self.cx.senders.iter().enumerate() {
                let c = &mut self.conns[s.conn];
                if c.st == St::Ready {
                    self.cx.enc.text(&mut c.out, s.room, b'm', Some(sid as u32));
                    if let Err(e) = flush(c) {
                        broken.push((s.conn, e.to_string()));
                    }
                }
            }
        } else {
            // Idle mode: the first connection of each room probes it.
            let rooms = (self.args.rooms as usize).min(self.conns.len());
            for i in 0..rooms {
                let c = &mut self.conns[i];
                if c.st == St::Ready {
                    self.cx.enc.text(&mut c.out, c.room, b'p', None);
                    if let Err(e) = flush(c) {
                        broken.push((i, e.to_string()));
                    }
                }
            }
        }
        for (i, why) in broken {
            self.on_closed(i, why);
        }
    }

    // ----- phases

    fn expected(&self) -> u64 {
        self.cx.senders.iter().map(|s| s.sent * self.members[s.room as usize]).sum()
    }

    /// What can still arrive: every message sent, to every member still
    /// connected, plus what members that left had already received.
    fn reachable(&self) -> u64 {
        let live: u64 = self
            .cx
            .senders
            .iter()
            .map(|s| s.sent * (self.members[s.room as usize] - self.dead[s.room as usize]))
            .sum();
        live + self.cx.st.dead_got
    }

    fn start_measure(&mut self, now: u64) {
        self.phase = Phase::Measure;
        self.cpu_start = own_cpu();
        self.srv_start = server_snap(self.args.server_pid);
        self.cx.measuring = true;
        self.cx.hist.clear();
        self.cx.st.measured = 0;
        self.sent_at_start = self.sent_total();
        self.t_measure_start = now;
        self.deadline = now + secs_ns(self.args.duration);
        info!("measuring for {} s", self.args.duration);
    }

    fn end_measure(&mut self, now: u64) {
        self.cpu_end = own_cpu();
        self.srv_end = server_snap(self.args.server_pid);
        self.cx.measuring = false;
        self.sent_at_end = self.sent_total();
        self.t_measure_end = now;
        self.sending = false;
        self.phase = Phase::Drain;
        self.deadline = now + secs_ns(self.args.drain_timeout);
        info!("draining");
    }

    /// Advances the phase; returns the time of the next thing to do.
    fn tick(&mut self, now: u64) -> Result<u64, Fail> {
        let signals = SIGNALS.load(Ordering::Relaxed);
        let stop = signals > 0;
        let mut wake = now + 100_000_000;
        if self.cx.st.ready != self.last_ready {
            self.last_ready = self.cx.st.ready;
            self.last_progress = now;
        }
        match self.phase {
            Phase::Connect => {
                if stop {
                    return Err(fail(130, "interrupted while connecting"));
                }
                self.open_more()?;
                if self.cx.st.ready == self.conns.len() {
                    self.t_connected = now;
                    info!("{} connections set up in {:.2} s", self.conns.len(), now as f64 / 1e9);
                    self.deadline = now + secs_ns(self.args.barrier_timeout);
                    self.next_repeat = now;
                    self.phase = if self.args.idle.is_none() {
                        Phase::Barrier
                    } else if self.cx.st.joined == self.conns.len() as u64 {
                        self.deadline = now + secs_ns(self.args.settle);
                        Phase::Settle
                    } else {
                        Phase::Verify
                    };
                    return Ok(now);
                }
                if now - self.last_progress > secs_ns(self.args.connect_timeout) {
                    return Err(fail(
                        3,
                        format!(
                            "timed out connecting: {} of {} connections set up",
                            self.cx.st.ready,
                            self.conns.len()
                        ),
                    ));
                }
                wake = wake.min(now + 20_000_000);
            }
            Phase::Barrier | Phase::Verify => {
                let (seen, want, what) = if self.phase == Phase::Barrier {
                    (self.cx.st.marker_pairs, self.total_pairs, "member/sender pairs saw a marker")
                } else {
                    (self.cx.st.joined, self.conns.len() as u64, "connections saw a probe")
                };
                if seen >= want {
                    self.t_barrier = now;
                    info!(
                        "{} after {:.2} s",
                        if self.phase == Phase::Barrier {
                            "barrier passed"
                        } else {
                            "every connection seen joined"
                        },
                        (now - self.t_connected) as f64 / 1e9
                    );
                    if self.phase == Phase::Verify {
                        self.phase = Phase::Settle;
                        self.deadline = now + secs_ns(self.args.settle);
                    } else {
                        self.phase = Phase::Warmup;
                        self.sending = true;
                        self.deadline = now + secs_ns(self.args.warmup);
                        let n = self.cx.senders.len() as u64;
                        let spacing = self.args.rate.map_or(0.0, |r| 1e9 / r / n as f64);
                        for (k, s) in self.cx.senders.iter_mut().enumerate() {
                            s.start = now + (k as f64 * spacing) as u64;
                            if !s.queued {
                                s.queued = true;
                                self.cx.dirty.push(k as u32);
                            }
                        }
                    }
                    return Ok(now);
                }
                if stop {
                    return Err(fail(130, "interrupted before the barrier"));
                }
                if now >= self.deadline {
                    return Err(fail(
                        3,
                        format!(
                            "barrier not reached in {} s: {seen} of {want} {what}",
                            self.args.barrier_timeout
                        ),
                    ));
                }
                if now >= self.next_repeat {
                    self.send_repeats();
                    self.next_repeat = now + REPEAT_NS;
                }
                wake = wake.min(self.next_repeat);
            }
            Phase::Warmup => {
                if now >= self.deadline || stop {
                    self.start_measure(now);
                    if stop {
                        self.end_measure(now);
                    }
                    return Ok(now);
                }
            }
            Phase::Measure => {
                if now >= self.deadline || stop {
                    self.end_measure(now);
                    return Ok(now);
                }
            }
            Phase::Drain => {
                let all_in = self.cx.st.unique >= self.reachable();
                if all_in || now >= self.deadline || signals > 1 {
                    self.drain_complete = all_in;
                    self.t_drain_end = now;
                    self.phase = Phase::Done;
                    return Ok(now);
                }
                wake = wake.min(now + 10_000_000);
            }
            Phase::Settle => {
                if now >= self.deadline {
                    self.srv_end = server_snap(self.args.server_pid);
                    self.report_idle(now);
                    self.phase = Phase::Hold;
                    self.deadline = self.args.hold.map_or(u64::MAX, |h| now + secs_ns(h));
                    if self.args.hold.is_none() {
                        info!("holding {} connections until Ctrl-C", self.conns.len());
                    }
                    return Ok(now);
                }
            }
            Phase::Hold => {
                if now >= self.deadline || stop {
                    self.phase = Phase::Done;
                    return Ok(now);
                }
            }
            Phase::Done => {}
        }
        if matches!(self.phase, Phase::Warmup | Phase::Measure)
            && let Some(rate) = self.args.rate
        {
            wake = wake.min(self.service_paced(now, rate));
        }
        if matches!(self.phase, Phase::Warmup | Phase::Measure | Phase::Settle | Phase::Hold) {
            wake = wake.min(self.deadline);
        }
        Ok(wake)
    }

    fn run(&mut self) -> Result<(), Fail> {
        let mut events = Events::with_capacity(1024);
        if self.args.idle.is_some() {
            self.srv_start = server_snap(self.args.server_pid);
        }
        info!(
            "connecting {} sockets to {} ({} source address{})",
            self.conns.len(),
            self.addr,
            self.src_ips,
            if self.src_ips == 1 { "" } else { "es" }
        );
        loop {
            let now = self.clock.ns();
            let wake = self.tick(now)?;
            if let Some(f) = self.cx.fail.take() {
                return Err(f);
            }
            if self.phase == Phase::Done {
                return Ok(());
            }
            let timeout = Duration::from_nanos(wake.saturating_sub(self.clock.ns()));
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(fail(1, format!("poll failed: {e}"))),
            }
            for ev in events.iter() {
                self.on_event(ev);
            }
            self.service_dirty();
            if let Some(f) = self.cx.fail.take() {
                return Err(f);
            }
        }
    }

    // ----- reports

    fn base_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        let a = &self.args;
        m.insert("proto".into(), format!("{:?}", a.proto).to_lowercase().into());
        m.insert("transport".into(), format!("{:?}", a.transport).to_lowercase().into());
        if !a.label.is_empty() {
            m.insert("label".into(), a.label.clone().into());
        }
        m.insert("addr".into(), self.addr.to_string().into());
        m.insert("rooms".into(), a.rooms.into());
        // Other work on the machine skews every figure: say how busy it was.
        let load = std::fs::read_to_string("/proc/loadavg").ok();
        let load1: Option<f64> = load.and_then(|l| l.split_whitespace().next()?.parse().ok());
        m.insert("loadavg_1m".into(), load1.into());
        m
    }

    fn report_load(&self) {
        let a = &self.args;
        let st = &self.cx.st;
        let secs = (self.t_measure_end - self.t_measure_start) as f64 / 1e9;
        let per_s = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let sent = self.sent_at_end - self.sent_at_start;
        let expected = self.expected();
        let loss = expected.saturating_sub(st.unique);
        let h = &self.cx.hist;
        let us = |ns: u64| ns as f64 / 1e3;
        let (p50, p99, p999, max, mean) =
            (us(h.quantile(0.5)), us(h.quantile(0.99)), us(h.quantile(0.999)), us(h.max), us(h.mean()));
        let user = self.cpu_end.user - self.cpu_start.user;
        let sys = self.cpu_end.sys - self.cpu_start.sys;
        let gen_cpu = user + sys;
        let pct = |cpu: f64| if secs > 0.0 { 100.0 * cpu / secs } else { 0.0 };
        let ns_per = |cpu: f64| {
            if st.measured > 0 { cpu * 1e9 / st.measured as f64 } else { 0.0 }
        };
        let srv_cpu = match (self.srv_start.cpu, self.srv_end.cpu) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        let mode = if a.rate.is_some() { "paced" } else { "closed" };
        let gen_rss = proc_rss_kb("self");
        let delta = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?));
        let drops = delta(self.srv_start.net_drops, self.srv_end.net_drops);
        let retrans = delta(self.srv_start.retrans, self.srv_end.retrans);

        if !a.quiet {
            let mode_text = match a.rate {
                Some(r) => format!("paced {r} msg/s per sender"),
                None => format!("closed loop, window {}", a.window),
            };
            println!(
                "loadgen {:?}/{:?} {}: {} rooms, {} receivers, {} senders, {} B payload, {mode_text}",
                a.proto, a.transport, self.addr, a.rooms, a.receivers, a.senders, a.payload
            );
            let row = |k: &str, v: String| println!("  {k:<22} {v}");
            row(
                "setup",
                format!(
                    "connect {:.2} s, barrier {:.2} s",
                    self.t_connected as f64 / 1e9,
                    (self.t_barrier - self.t_connected) as f64 / 1e9
                ),
            );
            row("timed phase", format!("{secs:.2} s"));
            let lag = match a.rate {
                Some(_) => format!(", sends at most {:.0} us behind schedule", st.pace_lag_max as f64 / 1e3),
                None => String::new(),
            };
            row("messages sent", format!("{sent} ({:.0}/s){lag}", per_s(sent)));
            row("deliveries", format!("{} ({:.0}/s)", st.measured, per_s(st.measured)));
            row(
                "loss / dups / reorders",
                format!(
                    "{loss} / {} / {}   (expected {expected}, got {}, drain {:.2} s{})",
                    st.dups,
                    st.late,
                    st.unique,
                    (self.t_drain_end - self.t_measure_end) as f64 / 1e9,
                    if self.drain_complete { "" } else { ", timed out" }
                ),
            );
            row(
                "latency us",
                format!("p50 {p50:.1}  p99 {p99:.1}  p999 {p999:.1}  max {max:.1}  mean {mean:.1}"),
            );
            row(
                "generator CPU",
                format!(
                    "{user:.2} user + {sys:.2} sys = {gen_cpu:.2} s ({:.0}% of a core), {:.0} ns/delivery",
                    pct(gen_cpu),
                    ns_per(gen_cpu)
                ),
            );
            if let Some(c) = srv_cpu {
                row(
                    "server CPU",
                    format!("{c:.2} s ({:.0}% of a core), {:.0} ns/delivery", pct(c), ns_per(c)),
                );
            }
            if let (Some(b), Some(e)) = (self.srv_start.rss_kb, self.srv_end.rss_kb) {
                row("server RSS", format!("{b} kB before, {e} kB after"));
            }
            if drops.unwrap_or(0) > 0 || retrans.unwrap_or(0) > 0 {
                row(
                    "kernel (whole machine)",
                    format!(
                        "{} input-backlog drops, {} TCP retransmissions: tail latency includes \
                         retransmission timeouts (see net.core.netdev_max_backlog)",
                        drops.unwrap_or(0),
                        retrans.unwrap_or(0)
                    ),
                );
            }
            if st.disconnects > 0 || st.foreign > 0 {
                row("warnings", format!("{} disconnects, {} foreign messages", st.disconnects, st.foreign));
            }
            if a.server_pid.is_some() && pct(gen_cpu) > 90.0 {
                row("note", "the generator used most of a core: it may be the limit".into());
            }
        }

        let mut m = self.base_json();
        let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
        let r1 = |x: f64| (x * 10.0).round() / 10.0;
        let mut put = |k: &str, v: serde_json::Value| {
            m.insert(k.to_string(), v);
        };
        put("mode", mode.into());
        put("receivers", a.receivers.into());
        put("senders", a.senders.into());
        put("payload", (a.payload as u64).into());
        put("window", if a.rate.is_none() { a.window.into() } else { serde_json::Value::Null });
        put("rate", a.rate.map_or(serde_json::Value::Null, |r| r.into()));
        put("connections", (self.conns.len() as u64).into());
        put("connect_s", r3(self.t_connected as f64 / 1e9).into());
        put("barrier_s", r3((self.t_barrier - self.t_connected) as f64 / 1e9).into());
        put("warmup_s", a.warmup.into());
        put("duration_s", r3(secs).into());
        put("sent", sent.into());
        put("sent_per_s", r1(per_s(sent)).into());
        put("deliveries", st.measured.into());
        put("deliveries_per_s", r1(per_s(st.measured)).into());
        put("deliveries_total", st.deliveries.into());
        put("interrupted", (SIGNALS.load(Ordering::Relaxed) > 0).into());
        put("foreign", st.foreign.into());
        put("expected_total", expected.into());
        put("received_total", st.unique.into());
        put("loss", loss.into());
        put("dups", st.dups.into());
        put("reorders", st.late.into());
        put("disconnects", st.disconnects.into());
        put("drain_complete", self.drain_complete.into());
        put(
            "pace_lag_max_us",
            if a.rate.is_some() { r1(st.pace_lag_max as f64 / 1e3).into() } else { serde_json::Value::Null },
        );
        put("drain_s", r3((self.t_drain_end - self.t_measure_end) as f64 / 1e9).into());
        put("lat_p50_us", r1(p50).into());
        put("lat_p99_us", r1(p99).into());
        put("lat_p999_us", r1(p999).into());
        put("lat_max_us", r1(max).into());
        put("lat_mean_us", r1(mean).into());
        put("gen_cpu_user_s", r3(user).into());
        put("gen_cpu_sys_s", r3(sys).into());
        put("gen_cpu_s", r3(gen_cpu).into());
        put("gen_cpu_pct", r1(pct(gen_cpu)).into());
        put("gen_ns_per_delivery", r1(ns_per(gen_cpu)).into());
        put("gen_rss_kb", gen_rss.into());
        put("server_pid", a.server_pid.into());
        put("server_cpu_s", srv_cpu.map(r3).into());
        put("server_cpu_pct", srv_cpu.map(|c| r1(pct(c))).into());
        put("server_ns_per_delivery", srv_cpu.map(|c| r1(ns_per(c))).into());
        put("server_rss_before_kb", self.srv_start.rss_kb.into());
        put("server_rss_after_kb", self.srv_end.rss_kb.into());
        put("net_backlog_drops", drops.into());
        put("tcp_retrans", retrans.into());
        println!("{}", serde_json::Value::Object(m));
    }

    fn report_idle(&self, now: u64) {
        let a = &self.args;
        let n = self.conns.len() as u64;
        let per_conn = match (self.srv_start.rss_kb, self.srv_end.rss_kb) {
            (Some(b), Some(e)) if n > 0 => Some((e as f64 - b as f64) * 1024.0 / n as f64),
            _ => None,
        };
        let gen_rss = proc_rss_kb("self");
        let cpu = own_cpu();
        if !a.quiet {
            println!(
                "loadgen idle {:?}/{:?} {}: {n} connections in {} rooms, all joined",
                a.proto, a.transport, self.addr, a.rooms
            );
            let row = |k: &str, v: String| println!("  {k:<22} {v}");
            row(
                "setup",
                format!(
                    "connect {:.2} s, verify {:.2} s",
                    self.t_connected as f64 / 1e9,
                    self.t_barrier.saturating_sub(self.t_connected) as f64 / 1e9
                ),
            );
            if let (Some(b), Some(e)) = (self.srv_start.rss_kb, self.srv_end.rss_kb) {
                row("server RSS", format!("{b} kB before, {e} kB after"));
            }
            if let Some(p) = per_conn {
                row("server bytes/conn", format!("{p:.0}"));
            }
            if let Some(g) = gen_rss {
                row("generator RSS", format!("{g} kB"));
            }
        }
        let mut m = self.base_json();
        m.insert("mode".into(), "idle".into());
        m.insert("connections".into(), n.into());
        m.insert("joined".into(), self.cx.st.joined.into());
        m.insert("source_ips".into(), self.src_ips.into());
        m.insert("connect_s".into(), ((self.t_connected as f64 / 1e6).round() / 1e3).into());
        m.insert(
            "verify_s".into(),
            ((self.t_barrier.saturating_sub(self.t_connected) as f64 / 1e6).round() / 1e3).into(),
        );
        m.insert("server_pid".into(), a.server_pid.into());
        m.insert("server_rss_before_kb".into(), self.srv_start.rss_kb.into());
        m.insert("server_rss_after_kb".into(), self.srv_end.rss_kb.into());
        m.insert("server_bytes_per_conn".into(), per_conn.map(|p| p.round()).into());
        m.insert("gen_rss_kb".into(), gen_rss.into());
        m.insert("gen_cpu_s".into(), (((cpu.user + cpu.sys) * 1e3).round() / 1e3).into());
        m.insert("elapsed_s".into(), ((now as f64 / 1e6).round() / 1e3).into());
        println!("{}", serde_json::Value::Object(m));
        let _ = io::stdout().flush();
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let args = Args::parse();
    let handler = on_signal as extern "C" fn(libc::c_int);
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
        // A closed socket must give EPIPE, not kill the process.
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let result = Gen::new(args).and_then(|mut g| {
        g.run()?;
        if g.args.idle.is_none() {
            g.report_load();
        }
        Ok(())
    });
    if let Err(f) = result {
        eprintln!("loadgen: {}", f.msg);
        std::process::exit(f.code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_continuous_and_tight() {
        let mut prev_end = 0;
        for i in 0..BUCKETS {
            let (lo, width) = Hist::bucket(i);
            assert_eq!(lo, prev_end, "bucket {i}");
            assert_eq!(Hist::index(lo), i);
            assert_eq!(Hist::index(lo + width - 1), i);
            if lo >= 128 {
                assert!((width as f64) / (lo as f64) <= 1.0 / 64.0 + 1e-12);
            }
            prev_end = lo.wrapping_add(width);
        }
        assert_eq!(Hist::index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Hist::new();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        let near = |q: f64, want: f64| {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.01, "q {q}: {got} vs {want}");
        };
        near(0.5, 50_000_000.0);
        near(0.99, 99_000_000.0);
        near(0.999, 99_900_000.0);
        assert_eq!(h.max, 100_000_000);
        assert_eq!(h.quantile(1.0), 100_000_000);
    }

    #[test]
    fn track_counts_late_and_duplicate_arrivals() {
        let mut t = Track::default();
        assert!(matches!(t.see(0), Seen::New));
        assert!(matches!(t.see(2), Seen::New));
        assert!(matches!(t.see(1), Seen::Late));
        assert!(matches!(t.see(1), Seen::Dup));
        assert!(matches!(t.see(2), Seen::Dup));
        assert!(matches!(t.see(100), Seen::New));
        assert!(matches!(t.see(40), Seen::Late));
        assert!(matches!(t.see(40), Seen::Dup));
        assert!(matches!(t.see(3), Seen::Late));
        assert_eq!(t.next, 101);
    }

    #[test]
    fn message_text_round_trip() {
        let mut enc = Encoder {
            proto: Proto::Machat,
            transport: Transport::Tcp,
            payload: 40,
            room_names: vec!["lg0".into()],
            tmp: Vec::new(),
            rng: 1,
        };
        let mut out = Vec::new();
        enc.data(&mut out, 0, 7, 12345, 987654321);
        assert_eq!(out.len(), 41);
        assert!(out.starts_with(b"s7 12345 987654321 xxx"));
        assert!(matches!(parse_msg(&out[..40]), Msg::Data { sid: 7, seq: 12345, sent: 987654321 }));
        assert!(matches!(parse_msg(b"m3"), Msg::Marker(3)));
        assert!(matches!(parse_msg(b"p"), Msg::Probe));
        assert!(matches!(parse_msg(b"s1 x"), Msg::Other));
        assert!(matches!(parse_msg(b"hello"), Msg::Other));
    }

    #[test]
    fn ws_frames_are_masked_and_sized() {
        let mut enc = Encoder {
            proto: Proto::Machat,
            transport: Transport::Ws,
            payload: 0,
            room_names: vec![],
            tmp: Vec::new(),
            rng: 99,
        };
        for n in [0usize, 125, 126, 65535, 65536] {
            let payload: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let mut out = Vec::new();
            enc.ws_frame(&mut out, 1, &payload);
            assert_eq!(out[0], 0x81);
            assert!(out[1] & 0x80 != 0);
            let (len, head) = match out[1] & 0x7f {
                126 => (u16::from_be_bytes([out[2], out[3]]) as usize, 4),
                127 => (u64::from_be_bytes(out[2..10].try_into().unwrap()) as usize, 10),
                l => (l as usize, 2),
            };
            assert_eq!(len, n);
            let mask = &out[head..head + 4];
            let body: Vec<u8> = out[head + 4..].iter().enumerate().map(|(i, b)| b ^ mask[i & 3]).collect();
            assert_eq!(body, payload);
        }
    }

    #[test]
    fn resp_fast_and_slow_paths_agree() {
        let msg = b"*3\r\n$7\r\nmessage\r\n$3\r\nlg0\r\n$5\r\nhello\r\n";
        let (used, s, e) = resp_message(msg).unwrap();
        assert_eq!((used, &msg[s..e]), (msg.len(), &b"hello"[..]));
        match resp_next(msg).unwrap().unwrap() {
            (u, Reply::Array(Kind::Message, s, e)) => {
                assert_eq!(u, msg.len());
                assert_eq!(&msg[s..e], b"hello");
            }
            _ => panic!("not a message"),
        }
        for cut in 0..msg.len() {
            assert!(resp_message(&msg[..cut]).is_none());
            assert!(resp_next(&msg[..cut]).unwrap().is_none(), "cut {cut}");
        }
        let sub = b"*3\r\n$9\r\nsubscribe\r\n$3\r\nlg0\r\n:1\r\n";
        assert!(matches!(resp_next(sub).unwrap(), Some((32, Reply::Array(Kind::Subscribe, _, _)))));
        assert!(matches!(resp_next(b":12\r\n").unwrap(), Some((5, Reply::Int))));
        assert!(matches!(resp_next(b"-ERR x\r\n").unwrap(), Some((8, Reply::Error(1, 6)))));
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
