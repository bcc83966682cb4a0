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
//!   straightens it.
//! - `history/store`: the SQLite writer's ceiling: lines handed to
//!   `Store::try_record` in batches of 10 (the producer retries when the
//!   queue is full) until the writer has committed them all; throughput in
//!   lines. One busy room, and 1,000 rooms, both trimmed to 100 lines each.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use machat::internal::history::{History, Limits, Store, StoreOptions};

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
}

criterion_group!(benches, record, replay, store);
criterion_main!(benches);
