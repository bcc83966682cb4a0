//! History benchmarks.
//!
//! - `history/record`: recording one batch of 10 messages of 64 bytes into
//!   a room whose history is full (the steady state of a busy room), as the
//!   fan-out path does once per batch; throughput in messages. Given the
//!   end offsets (`record_batch`) and finding them at each `\n`
//!   (`record_lines`). Also counts heap allocations per recorded message
//!   with a counting global allocator, as `fanout.rs` does.
//! - `history/replay`: a member joining with `"history": 100`: the 100
//!   latest lines copied out as TCP bytes, or walked line by line (as a
//!   WebSocket member's frames would be); throughput in lines. `after
//!   record` records a batch first, so the ring has wrapped and the replay
//!   straightens it. `tcp member` and `websocket member` are the whole cost
//!   the loop pays for such a join, socket aside, as
//!   `Reactor::replay_history` does it: the replay within the budget
//!   (`--max-pending` / 8), the `history: 100` marker, the encoding (one
//!   frame per line for WebSocket), one append to the member's output and
//!   its flush into a sink that takes everything (as `fanout.rs`'s
//!   `broadcast` turn flushes), so a sample compares with one `broadcast`
//!   turn.
//! - `history/store`: the SQLite writer's ceiling: lines handed to
//!   `Store::try_record` in batches of 10 (the producer retries when the
//!   queue is full) until the writer has committed them all (the clock
//!   stops when `Store::stats().lines_persisted` has counted every line
//!   sent, so the throughput is lines committed per second, not lines
//!   queued). One busy room, and 1,000 rooms, both trimmed to 100 lines
//!   each. Then, outside criterion, `history/store/ceiling` lines: for 1
//!   and 1,000 rooms and batches of 1, 4 and 16 lines (the loop records
//!   one batch per sender's read: one line when messages come one at a
//!   time, about 16 under `compare.sh`'s closed-loop fan-out, a sender's
//!   whole window), the queue is kept full for a few seconds and lines
//!   committed are divided by the wall time from the first line sent to
//!   the last one committed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use machat::Config;
use machat::internal::history::{History, Limits, Store, StoreOptions};
use machat::internal::output::{BufferPool, Output, Tally};
use machat::internal::rooms::Transport;
use machat::internal::websocket;

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

const MESSAGES: usize = 10;
const PAYLOAD: usize = 64;
const REPLAYED: usize = 100;

/// A batch as `Batch` encodes it: `sender:text\n` lines back to back, with
/// the end offset of each.
fn batch(messages: usize) -> (Vec<u8>, Vec<usize>) {
    let mut lines = Vec::new();
    let mut ends = Vec::new();
    for index in 0..messages {
        let mut text = format!("{index:016}").into_bytes();
        text.resize(PAYLOAD, b'.');
        lines.extend_from_slice(b"sender:");
        lines.extend_from_slice(&text);
        lines.push(b'\n');
        ends.push(lines.len());
    }
    (lines, ends)
}

/// A history whose room "bench" is full and whose buffers have grown.
fn full_history() -> History {
    let mut history = History::new(Limits::default());
    let (lines, ends) = batch(MESSAGES);
    for _ in 0..100 {
        history.record_batch("bench", &lines, &ends, 1);
    }
    history
}

fn record(c: &mut Criterion) {
    let mut group = c.benchmark_group("history/record");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    let (lines, ends) = batch(MESSAGES);
    let mut history = full_history();
    group.bench_function("record_batch", |b| {
        b.iter(|| history.record_batch(black_box("bench"), black_box(&lines), black_box(&ends), 1))
    });
    group.bench_function("record_lines", |b| {
        b.iter(|| history.record_lines(black_box("bench"), black_box(&lines), 1))
    });
    group.finish();

    let batches = 100_000;
    for (name, by_ends) in [("record_batch", true), ("record_lines", false)] {
        let mut history = full_history();
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for _ in 0..batches {
            if by_ends {
                history.record_batch("bench", &lines, &ends, 1);
            } else {
                history.record_lines("bench", &lines, 1);
            }
        }
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
        println!(
            "history/record/{name}: {allocations} allocations in {} messages ({:.4} per message)",
            batches * MESSAGES,
            allocations as f64 / (batches * MESSAGES) as f64
        );
    }
}

/// Whether criterion's filter (the first argument not starting with `-`)
/// selects `name`; the work done outside criterion asks, so that
/// `cargo bench --bench history -- replay` does not wait for the store.
fn selected(name: &str) -> bool {
    let filter = std::env::args().skip(1).find(|arg| !arg.starts_with('-'));
    filter.is_none_or(|filter| name.contains(&filter))
}

/// A socket that takes everything.
struct Sink(u64);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A WebSocket frame header is at most this long (as in
/// `reactor::history`): the replay's budget counts it for every line.
const MAX_FRAME_HEADER: usize = 10;

/// A member that has just joined: its output, and the loop's replay
/// scratch buffer and output pool.
struct Joiner {
    transport: Transport,
    scratch: Vec<u8>,
    output: Output,
    pool: BufferPool,
    sink: Sink,
    max_pending: usize,
}

impl Joiner {
    fn new(transport: Transport) -> Self {
        Joiner {
            transport,
            scratch: Vec::new(),
            output: Output::default(),
            pool: BufferPool::default(),
            sink: Sink(0),
            max_pending: Config::default().max_pending,
        }
    }

    /// What `Reactor::replay_history` does for a member that asked for
    /// `lines`, then the flush the end of the turn does.
    fn join(&mut self, history: &mut History, lines: usize) {
        let per_line = match self.transport {
            Transport::Tcp => 0,
            Transport::WebSocket => MAX_FRAME_HEADER,
        };
        let replay = history.replay_within("bench", lines, self.max_pending / 8, per_line);
        let scratch = &mut self.scratch;
        scratch.clear();
        let marker = format!("history: {}\n", replay.len());
        match self.transport {
            Transport::Tcp => {
                scratch.extend_from_slice(marker.as_bytes());
                scratch.extend_from_slice(replay.bytes());
            }
            Transport::WebSocket => {
                websocket::encode_text_frame(scratch, marker.as_bytes());
                for entry in replay {
                    websocket::encode_text_frame(scratch, entry.line);
                }
            }
        }
        self.output.append(scratch, self.max_pending, &mut self.pool).unwrap();
        self.output.flush(&mut self.sink, &mut self.pool, &mut Tally::default()).unwrap();
    }
}

fn replay(c: &mut Criterion) {
    let mut group = c.benchmark_group("history/replay");
    group.throughput(Throughput::Elements(REPLAYED as u64));
    let mut history = full_history();
    let mut output = Vec::with_capacity(64 * 1024);
    group.bench_function("bytes", |b| {
        b.iter(|| {
            output.clear();
            output.extend_from_slice(history.replay(black_box("bench"), REPLAYED).bytes());
            black_box(&output);
        })
    });
    group.bench_function("lines", |b| {
        b.iter(|| {
            output.clear();
            for entry in history.replay(black_box("bench"), REPLAYED) {
                output.extend_from_slice(entry.line);
            }
            black_box(&output);
        })
    });
    let (lines, ends) = batch(MESSAGES);
    group.bench_function("bytes after record", |b| {
        b.iter(|| {
            history.record_batch("bench", &lines, &ends, 1);
            output.clear();
            output.extend_from_slice(history.replay(black_box("bench"), REPLAYED).bytes());
            black_box(&output);
        })
    });
    for (name, transport) in [("tcp member", Transport::Tcp), ("websocket member", Transport::WebSocket)] {
        let mut joiner = Joiner::new(transport);
        group.bench_function(name, |b| b.iter(|| joiner.join(&mut history, black_box(REPLAYED))));
        black_box(joiner.sink.0);
    }
    group.finish();

    let mut history = full_history();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let replays = 10_000;
    for _ in 0..replays {
        output.clear();
        output.extend_from_slice(history.replay("bench", REPLAYED).bytes());
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    println!("history/replay/bytes: {allocations} allocations in {replays} replays of {REPLAYED} lines");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A database file of its own, removed (with its WAL) when dropped.
struct TempDatabase(PathBuf);

impl TempDatabase {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("machat-history-bench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDatabase(dir)
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn store(c: &mut Criterion) {
    let mut group = c.benchmark_group("history/store");
    group.sample_size(10);
    let lines_per_sample = 20_000;
    group.throughput(Throughput::Elements(lines_per_sample));
    let (lines, ends) = batch(MESSAGES);
    for rooms in [1, 1_000] {
        let dir = TempDatabase::new(&format!("rooms{rooms}"));
        let (store, _) = Store::open(&dir.0.join("history.db"), &StoreOptions::default()).unwrap();
        let names: Vec<String> = (0..rooms).map(|room| format!("room{room}")).collect();
        let mut seq = 1;
        let mut dropped_retries = 0u64;
        group.bench_with_input(BenchmarkId::new("rooms", rooms), &rooms, |b, _| {
            b.iter_custom(|iterations| {
                let started = Instant::now();
                for _ in 0..iterations {
                    let target = store.stats().lines_persisted + lines_per_sample;
                    let mut sent = 0;
                    while sent < lines_per_sample {
                        let room = &names[(seq as usize / MESSAGES) % rooms];
                        if store.try_record(room.as_str(), seq, now_ms(), &lines, &ends) {
                            seq += MESSAGES as u64;
                            sent += MESSAGES as u64;
                        } else {
                            // Full: leave the cores to the writer a moment.
                            dropped_retries += 1;
                            std::thread::sleep(Duration::from_micros(100));
                        }
                    }
                    while store.stats().lines_persisted < target {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
                started.elapsed()
            })
        });
        let stats = store.stats();
        println!(
            "history/store/rooms/{rooms}: {} lines persisted in {} transactions (last: {} lines in {} µs), \
             {} rows trimmed, {dropped_retries} sends retried on a full queue",
            stats.lines_persisted,
            stats.transactions,
            stats.last_batch_lines,
            stats.last_batch_micros,
            stats.pruned_by_count
        );
        store.close(Instant::now() + Duration::from_secs(30));
    }
    group.finish();
    if selected("history/store/ceiling") {
        for rooms in [1, 1_000] {
            for batch_lines in [1, 4, 16] {
                store_ceiling(rooms, batch_lines, Duration::from_secs(3));
            }
        }
    }
}

/// Keeps the writer's queue full with batches of `batch_lines` lines
/// spread over `rooms` rooms for `duration`, after a warm-up that fills
/// every room to its 100 lines (so each transaction also trims, as in
/// steady state), and prints lines committed per second of wall time,
/// from the first line sent to the last one committed.
fn store_ceiling(rooms: usize, batch_lines: usize, duration: Duration) {
    let dir = TempDatabase::new(&format!("ceiling-{rooms}-{batch_lines}"));
    let (store, _) = Store::open(&dir.0.join("history.db"), &StoreOptions::default()).unwrap();
    let names: Vec<String> = (0..rooms).map(|room| format!("room{room}")).collect();
    let (lines, ends) = batch(batch_lines);
    let mut seq = 1;
    let mut batches = 0usize;
    // Sends batches until `deadline`, or `count` lines without one;
    // returns the lines sent and how often the queue was full.
    let mut send = |deadline: Option<Instant>, count: u64| {
        let (mut sent, mut full) = (0, 0u64);
        while deadline.map_or(sent < count, |deadline| Instant::now() < deadline) {
            let room = &names[batches % rooms];
            if store.try_record(room.as_str(), seq, now_ms(), &lines, &ends) {
                seq += batch_lines as u64;
                sent += batch_lines as u64;
                batches += 1;
            } else {
                // Full: leave the cores to the writer a moment.
                full += 1;
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        (sent, full)
    };
    let wait_for = |target: u64| {
        while store.stats().lines_persisted < target {
            std::thread::sleep(Duration::from_micros(200));
        }
    };
    // Warm-up: every room past its 100 lines.
    let (warm, _) = send(None, (rooms as u64 * 200).max(20_000));
    wait_for(warm);
    let before = store.stats();
    let started = Instant::now();
    let (sent, full) = send(Some(started + duration), 0);
    wait_for(before.lines_persisted + sent);
    let elapsed = started.elapsed();
    let after = store.stats();
    let committed = after.lines_persisted - before.lines_persisted;
    let transactions = after.transactions - before.transactions;
    println!(
        "history/store/ceiling/rooms/{rooms}/batch/{batch_lines}: {:.0} lines committed/s \
         ({committed} lines in {:.2} s, {transactions} transactions of {:.0} lines on average, \
         queue full {} times)",
        committed as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        committed as f64 / transactions.max(1) as f64,
        full,
    );
    assert_eq!(after.lines_failed, 0, "transactions failed");
    store.close(Instant::now() + Duration::from_secs(30));
}

criterion_group!(benches, record, replay, store);
criterion_main!(benches);
