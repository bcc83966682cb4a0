//! Fan-out benchmarks. Throughput is in deliveries (one message to one
//! member).
//!
//! - `broadcast`: the delivery path without sockets: encode a batch once,
//!   copy it into every member's output buffer, drain each buffer into a
//!   sink, for rooms of 10 to 10,000 members. It also counts heap
//!   allocations per delivery with a counting global allocator.
//! - `tcp` and `websocket`: end to end over loopback, the server in-process
//!   on its own thread, one sender and 10 to 1,000 receivers; a sample is
//!   the time until every receiver has every message.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use machat::internal::names::{check_name, check_room};
use machat::internal::output::{Batch, BufferPool, Output, Tally};
use machat::internal::rooms::{ConnId, RoomId, Rooms, Transport};
use machat::{Config, Server};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// Counts every allocation the process makes.
struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` unchanged; the counter is an
// atomic that never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const PAYLOAD: usize = 64;

/// A 64-byte message body.
fn payload(seq: u64) -> Vec<u8> {
    let mut text = format!("{seq:016}").into_bytes();
    text.resize(PAYLOAD, b'.');
    text
}

/// A socket that takes everything.
struct Sink(u64);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One turn of the socketless path: `messages` messages from one sender to
/// a room, then one flush per member.
struct Fanout {
    rooms: Rooms,
    room: RoomId,
    outputs: Vec<Output>,
    pool: BufferPool,
    batch: Batch,
    sink: Sink,
    body: Vec<u8>,
}

impl Fanout {
    fn new(members: usize) -> Self {
        let mut rooms = Rooms::new();
        let mut room = None;
        let bench = check_room("bench").unwrap();
        for conn in 0..members {
            let name = check_name(&format!("member{conn}")).unwrap();
            room = Some(rooms.join(&bench, &name, ConnId(conn), Transport::Tcp).unwrap());
        }
        Fanout {
            rooms,
            room: room.unwrap(),
            outputs: (0..members).map(|_| Output::default()).collect(),
            pool: BufferPool::default(),
            batch: Batch::new(),
            sink: Sink(0),
            body: payload(0),
        }
    }

    fn turn(&mut self, messages: usize) {
        for _ in 0..messages {
            self.batch.push("sender", &self.body);
        }
        let room = self.rooms.get(self.room).unwrap();
        for member in room.members() {
            let _ = self.outputs[member.conn.0].append(self.batch.lines(), usize::MAX, &mut self.pool);
        }
        self.batch.clear();
        for output in &mut self.outputs {
            let _ = output.flush(&mut self.sink, &mut self.pool, &mut Tally::default());
        }
    }
}

fn broadcast(c: &mut Criterion) {
    let mut group = c.benchmark_group("broadcast");
    group.sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    for members in [10, 100, 1_000, 10_000] {
        let mut fanout = Fanout::new(members);
        group.throughput(Throughput::Elements(members as u64));
        group.bench_with_input(BenchmarkId::from_parameter(members), &members, |b, _| {
            b.iter(|| fanout.turn(black_box(1)))
        });

        // Allocations per delivery in steady state, after the pool warmed up.
        fanout.turn(1);
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let turns = 200;
        for _ in 0..turns {
            fanout.turn(1);
        }
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
        println!(
            "broadcast/{members}: {allocations} allocations in {} deliveries ({:.4} per delivery)",
            turns * members,
            allocations as f64 / (turns * members) as f64
        );
    }
    group.finish();
}

/// Receivers read by one mio loop in the bench thread, counting messages.
struct Receivers {
    poll: Poll,
    events: Events,
    sockets: Vec<TcpStream>,
    received: Vec<u64>,
    buffer: Vec<u8>,
}

impl Receivers {
    /// Connects `count` receivers to room `room`, over TCP or WebSocket.
    fn connect(tcp: SocketAddr, ws: SocketAddr, count: usize, transport: Transport) -> Self {
        let poll = Poll::new().unwrap();
        let mut sockets = Vec::with_capacity(count);
        for index in 0..count {
            let handshake = format!(r#"{{"name":"r{index}","room":"bench"}}"#);
            let stream = match transport {
                Transport::Tcp => {
                    let mut stream = std::net::TcpStream::connect(tcp).unwrap();
                    stream.write_all(handshake.as_bytes()).unwrap();
                    stream
                }
                Transport::WebSocket => websocket_join(ws, &handshake),
            };
            stream.set_nonblocking(true).unwrap();
            let mut stream = TcpStream::from_std(stream);
            poll.registry().register(&mut stream, Token(index), Interest::READABLE).unwrap();
            sockets.push(stream);
        }
        Receivers {
            poll,
            events: Events::with_capacity(1024),
            sockets,
            received: vec![0; count],
            buffer: vec![0; 1 << 16],
        }
    }

    /// Reads what has arrived (waiting up to `timeout` for something) and
    /// returns the count of the receiver that is furthest behind.
    fn pump(&mut self, timeout: Duration) -> u64 {
        self.poll.poll(&mut self.events, Some(timeout)).unwrap();
        for event in &self.events {
            let index = event.token().0;
            loop {
                match self.sockets[index].read(&mut self.buffer) {
                    Ok(0) => panic!("receiver {index} was disconnected"),
                    Ok(n) => {
                        self.received[index] += memchr::memchr_iter(b'\n', &self.buffer[..n]).count() as u64
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) => panic!("receiver {index}: {error}"),
                }
            }
        }
        self.received.iter().copied().min().unwrap_or(0)
    }
}

/// Upgrades a blocking socket to WebSocket and sends the handshake message.
fn websocket_join(address: SocketAddr, handshake: &str) -> std::net::TcpStream {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let request = format!(
        "GET /mychat HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let mut byte = [0u8];
    while !response.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        response.push(byte[0]);
    }
    assert!(response.starts_with(b"HTTP/1.1 101"), "upgrade refused");
    stream.write_all(&masked_text_frame(handshake.as_bytes())).unwrap();
    stream
}

fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, byte)| byte ^ mask[i % 4]));
    frame
}

/// Messages the sender may be ahead of the slowest receiver: a closed
/// loop, so no receiver is ever cut off as a slow consumer.
const WINDOW: u64 = 2_000;
/// Messages per write of the sender.
const CHUNK: u64 = 64;

/// Sends messages `first..first + count` from one sender, never more than
/// `WINDOW` ahead of the slowest receiver, and returns once every receiver
/// has all of them.
fn send_and_receive(sender: &mut std::net::TcpStream, receivers: &mut Receivers, first: u64, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = payload(0);
    let mut chunk = Vec::new();
    for _ in 0..CHUNK {
        chunk.extend_from_slice(&body);
        chunk.push(b'\n');
    }
    let end = first + count;
    let mut sent = first;
    let mut slowest = receivers.pump(Duration::ZERO);
    while slowest < end {
        assert!(Instant::now() < deadline, "receivers stalled at {slowest} of {end}");
        if sent < end && sent < slowest + WINDOW {
            let n = CHUNK.min(end - sent);
            sender.write_all(&chunk[..n as usize * (PAYLOAD + 1)]).unwrap();
            sent += n;
            slowest = receivers.pump(Duration::ZERO);
        } else {
            slowest = receivers.pump(Duration::from_millis(50));
        }
    }
}

fn end_to_end(c: &mut Criterion, transport: Transport, name: &str) {
    let mut group = c.benchmark_group(name);
    group.sample_size(10).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    for receivers in [10, 100, 1_000] {
        let server = Server::bind(Config::ephemeral()).unwrap();
        let handle = server.handle();
        let (tcp, ws) = (server.tcp_addr().unwrap(), server.ws_addr().unwrap());
        let thread = std::thread::spawn(move || server.run());
        let mut clients = Receivers::connect(tcp, ws, receivers, transport);
        let mut sender = std::net::TcpStream::connect(tcp).unwrap();
        sender.set_nodelay(true).unwrap();
        sender.write_all(br#"{"name":"sender","room":"bench"}"#).unwrap();
        let members = receivers as u64 + 1;
        while handle.stats().members < members {
            std::thread::sleep(Duration::from_millis(1));
        }
        // The sender's own echoes are drained so it never becomes slow.
        let mut echoes = sender.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut sink = vec![0; 1 << 16];
            while matches!(echoes.read(&mut sink), Ok(n) if n > 0) {}
        });

        let mut sent = 0;
        group.throughput(Throughput::Elements(receivers as u64));
        group.bench_function(BenchmarkId::from_parameter(receivers), |b| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                send_and_receive(&mut sender, &mut clients, sent, iters);
                sent += iters;
                started.elapsed()
            })
        });
        handle.shutdown();
        thread.join().unwrap().unwrap();
    }
    group.finish();
}

fn tcp(c: &mut Criterion) {
    end_to_end(c, Transport::Tcp, "tcp");
}

fn websocket(c: &mut Criterion) {
    end_to_end(c, Transport::WebSocket, "websocket");
}

criterion_group!(benches, broadcast, tcp, websocket);
criterion_main!(benches);
