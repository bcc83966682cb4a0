//! Tests of the SQLite store on real files in a temporary directory:
//! round trips, refusals, retention, a stalled writer, closing against a
//! deadline, and a crash in the middle of writing (a child process that
//! aborts).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::*;
use crate::history::ring::{History, Limits};

/// A directory of its own under the system's temporary directory, removed
/// when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("machat-history-{}-{name}-{unique}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn batch(lines: &[&str]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for line in lines {
        bytes.extend_from_slice(line.as_bytes());
        ends.push(bytes.len());
    }
    (bytes, ends)
}

fn send(store: &Store, room: &str, first_seq: u64, time_ms: u64, lines: &[&str]) -> bool {
    let (bytes, ends) = batch(lines);
    store.try_record(room, first_seq, time_ms, &bytes, &ends)
}

/// Polls until `done` (the writer works on its own thread); a generous
/// limit only turns a hang into a failure.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < give_up, "gave up waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn close(store: Store) {
    assert_eq!(store.close(Instant::now() + Duration::from_secs(60)), Closed::Drained);
}

fn open(path: &Path, options: &StoreOptions) -> (Store, Loaded) {
    Store::open(path, options).unwrap_or_else(|error| panic!("{error}"))
}

fn rows(path: &Path) -> Vec<(String, i64, String)> {
    let conn = Connection::open(path).unwrap();
    let mut statement =
        conn.prepare("SELECT room, seq, name || ':' || text FROM lines ORDER BY room, seq").unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn loaded_lines(room: &LoadedRoom) -> Vec<(u64, u64, String)> {
    room.iter().map(|(seq, time, line)| (seq, time, String::from_utf8(line.to_vec()).unwrap())).collect()
}

fn now() -> u64 {
    now_ms()
}

#[test]
fn history_store_reopens_with_the_latest_lines_of_each_room_in_order() {
    let dir = TempDir::new("reopen");
    let path = dir.file("history.db");
    let options = StoreOptions { lines: 3, ..StoreOptions::default() };
    let t = now();
    let (store, loaded) = open(&path, &options);
    assert_eq!(loaded, Loaded::default(), "a new database holds nothing");
    assert!(send(&store, "dev", 1, t - 50, &["ann:one\n", "bob:two: a colon\n"]));
    assert!(send(&store, "dev", 3, t - 40, &["ann:\n", "cy:ünïcödé ✓\n", "ann:five\n"]));
    assert!(send(&store, "quiet", 6, t - 100, &["dee:old news\n"]));
    assert!(send(&store, "lobby", 7, t - 10, &["eve:hello\n"]));
    close(store);

    let (store, loaded) = open(&path, &options);
    assert_eq!(loaded.max_seq, 7);
    let names: Vec<&str> = loaded.rooms.iter().map(|room| room.name.as_str()).collect();
    assert_eq!(names, ["quiet", "dev", "lobby"], "least recently active first");
    assert_eq!(
        loaded_lines(&loaded.rooms[1]),
        [
            (3, t - 40, "ann:\n".into()),
            (4, t - 40, "cy:ünïcödé ✓\n".into()),
            (5, t - 40, "ann:five\n".into())
        ],
        "the last 3, oldest first, byte for byte"
    );
    assert_eq!(loaded.lines(), 5);

    // Into the rings: numbering goes on above everything stored.
    let mut history = History::new(Limits { lines: 3, ..Limits::default() });
    assert_eq!(loaded.restore_into(&mut history), 5);
    assert_eq!(history.replay("dev", 10).bytes(), "ann:\ncy:ünïcödé ✓\nann:five\n".as_bytes());
    let (bytes, ends) = batch(&["ann:six\n"]);
    assert_eq!(history.record_batch("dev", &bytes, &ends, t), Some(6));
    assert_eq!(history.record_batch("new", &bytes, &ends, t), Some(8));
    let names: Vec<&str> = history.rooms().map(|room| room.name).collect();
    assert_eq!(names, ["new", "dev", "lobby", "quiet"]);
    close(store);
}

#[test]
fn history_store_refuses_a_newer_schema_naming_the_file() {
    let dir = TempDir::new("newer");
    let path = dir.file("history.db");
    Connection::open(&path).unwrap().pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
    let error = Store::open(&path, &StoreOptions::default()).unwrap_err();
    assert!(matches!(error, StoreError::NewerSchema { found: 2, .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&*path.to_string_lossy()), "{message}");
    assert!(message.contains("schema version 2 is newer"), "{message}");
    // Refused without being touched.
    let version: i64 =
        Connection::open(&path).unwrap().query_row("PRAGMA user_version", [], |row| row.get(0)).unwrap();
    assert_eq!(version, SCHEMA_VERSION + 1);
}

#[test]
fn history_store_refuses_what_it_cannot_open_naming_the_file() {
    let dir = TempDir::new("unopenable");
    let garbage = dir.file("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    for path in [dir.file("missing/dir/history.db"), dir.0.clone(), garbage] {
        let error = Store::open(&path, &StoreOptions::default()).unwrap_err();
        assert!(matches!(error, StoreError::Open { .. }), "{}: {error:?}", path.display());
        let message = error.to_string();
        assert!(message.contains(&*path.to_string_lossy()) && message.contains("cannot open"), "{message}");
    }
}

#[test]
fn history_store_keeps_at_most_the_line_cap_per_room() {
    let dir = TempDir::new("count");
    let path = dir.file("history.db");
    let options =
        StoreOptions { lines: 3, prune_interval: Duration::from_millis(5), ..StoreOptions::default() };
    let (store, _) = open(&path, &options);
    let lines: Vec<String> = (1..=10).map(|index| format!("ann:{index}\n")).collect();
    for (index, line) in lines.iter().enumerate() {
        assert!(send(&store, "dev", index as u64 + 1, now(), &[line]));
    }
    assert!(send(&store, "other", 11, now(), &["bob:kept\n"]));
    wait_until("7 rows are trimmed", || store.stats().pruned_by_count == 7);
    close(store);
    let expected: Vec<(String, i64, String)> = vec![
        ("dev".into(), 8, "ann:8".into()),
        ("dev".into(), 9, "ann:9".into()),
        ("dev".into(), 10, "ann:10".into()),
        ("other".into(), 11, "bob:kept".into()),
    ];
    assert_eq!(rows(&path), expected);
}

#[test]
fn history_store_trims_rooms_left_over_by_a_larger_history_count() {
    let dir = TempDir::new("sweep");
    let path = dir.file("history.db");
    let (store, _) = open(&path, &StoreOptions { lines: 10, ..StoreOptions::default() });
    let lines = vec!["ann:line\n"; 10];
    assert!(send(&store, "a", 1, now(), &lines));
    assert!(send(&store, "b", 11, now(), &lines[..2]));
    close(store);
    assert_eq!(rows(&path).len(), 12);

    let options =
        StoreOptions { lines: 3, prune_interval: Duration::from_millis(5), ..StoreOptions::default() };
    let (store, loaded) = open(&path, &options);
    assert_eq!(loaded.lines(), 5, "loading already takes the latest 3 only");
    wait_until("the sweep trims room a", || store.stats().pruned_by_count == 7);
    close(store);
    let seqs: Vec<(String, i64)> = rows(&path).into_iter().map(|(room, seq, _)| (room, seq)).collect();
    assert_eq!(
        seqs,
        [("a".into(), 8), ("a".into(), 9), ("a".into(), 10), ("b".into(), 11), ("b".into(), 12)]
    );
}

#[test]
fn history_store_trimming_keeps_pace_with_writing() {
    let dir = TempDir::new("pace");
    let path = dir.file("history.db");
    // Only the steps that follow writing, none on a timer; a short queue
    // makes transactions smaller than a step, so steps come after several.
    let options = StoreOptions {
        prune_interval: Duration::from_secs(3_600),
        queue_records: 8,
        ..StoreOptions::default()
    };
    let (store, _) = open(&path, &options);
    let lines = vec!["ann:a line of chat\n"; 400];
    let mut seq = 1;
    while seq <= 40_000 {
        if send(&store, "dev", seq, now(), &lines) {
            seq += 400;
        } else {
            std::thread::yield_now();
        }
    }
    wait_until("everything is persisted", || store.stats().lines_persisted == 40_000);
    close(store);
    // What the last step had not reached yet, at most.
    let lag = options.prune_rows + options.batch_lines + 400;
    let held = rows(&path).len();
    assert!(held <= options.lines + lag, "{held} rows: trimming fell behind");
}

#[test]
fn history_store_deletes_and_does_not_load_lines_past_the_retention_age() {
    let dir = TempDir::new("age");
    let path = dir.file("history.db");
    let hour = Duration::from_secs(3_600);
    let two_hours_ago = now() - 2 * 3_600_000;

    // Written with no retention: the old lines stay in the file...
    let (store, _) = open(&path, &StoreOptions::default());
    assert!(send(&store, "dev", 1, two_hours_ago, &["ann:stale\n", "ann:staler\n"]));
    assert!(send(&store, "gone", 3, two_hours_ago, &["bob:stale\n"]));
    assert!(send(&store, "dev", 4, now(), &["ann:fresh\n"]));
    close(store);
    assert_eq!(rows(&path).len(), 4);

    // ...but are not loaded once a retention age says they are too old,
    // and the writer deletes them, two rows a step.
    let options = StoreOptions {
        retention: Some(hour),
        prune_interval: Duration::from_millis(5),
        prune_rows: 2,
        ..StoreOptions::default()
    };
    let (store, loaded) = open(&path, &options);
    assert_eq!(loaded.rooms.len(), 1, "a room with only old lines is not recently active");
    assert_eq!(loaded_lines(&loaded.rooms[0]).into_iter().map(|(seq, _, _)| seq).collect::<Vec<_>>(), [4]);
    assert_eq!(loaded.max_seq, 4, "numbering still goes on above the old lines");
    wait_until("3 old rows are deleted", || store.stats().pruned_by_age == 3);
    close(store);
    assert_eq!(rows(&path), [("dev".into(), 4, "ann:fresh".into())]);
}

/// Holds the database's write lock from another connection.
fn lock(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    conn
}

#[test]
fn history_store_drops_and_counts_rather_than_wait_for_a_stalled_writer() {
    let dir = TempDir::new("stalled");
    let path = dir.file("history.db");
    // No linger: the writer, stuck at the lock, takes nothing more.
    let options = StoreOptions {
        queue_records: 2,
        busy_timeout: Duration::from_secs(120),
        linger: Duration::ZERO,
        ..StoreOptions::default()
    };
    let (store, _) = open(&path, &options);
    let blocker = lock(&path);

    assert!(send(&store, "dev", 1, now(), &["ann:taken by the writer\n"]));
    // The writer has taken it and now waits for the lock: it cannot commit.
    wait_until("the writer takes the first batch", || store.stats().queue_depth == 0);
    assert!(send(&store, "dev", 2, now(), &["ann:queued\n"]));
    assert!(send(&store, "dev", 3, now(), &["ann:queued\n", "ann:queued\n"]));
    // The queue is full and the writer is stuck: this must not block.
    assert!(!send(&store, "dev", 5, now(), &["ann:dropped\n", "ann:dropped\n", "ann:dropped\n"]));
    let stats = store.stats();
    assert_eq!((stats.lines_dropped, stats.lines_persisted, stats.queue_depth), (3, 0, 2));

    blocker.execute_batch("COMMIT").unwrap();
    wait_until("the queued lines are persisted", || store.stats().lines_persisted == 4);
    assert!(send(&store, "dev", 8, now(), &["ann:after\n"]), "room again once the writer catches up");
    close(store);
    assert_eq!(rows(&path).iter().map(|(_, seq, _)| *seq).collect::<Vec<_>>(), [1, 2, 3, 4, 8]);
}

#[test]
fn history_store_gathers_waiting_batches_into_one_transaction() {
    let dir = TempDir::new("gather");
    let path = dir.file("history.db");
    // No linger: the first batch's transaction takes only what waits.
    let options = StoreOptions {
        queue_records: 100,
        busy_timeout: Duration::from_secs(120),
        linger: Duration::ZERO,
        ..StoreOptions::default()
    };
    let (store, _) = open(&path, &options);
    let blocker = lock(&path);
    assert!(send(&store, "dev", 1, now(), &["ann:first\n"]));
    wait_until("the writer takes the first batch", || store.stats().queue_depth == 0);
    for seq in 2..=51 {
        assert!(send(&store, "dev", seq, now(), &["ann:line\n"]));
    }
    blocker.execute_batch("COMMIT").unwrap();
    wait_until("everything is persisted", || store.stats().lines_persisted == 51);
    let stats = store.stats();
    assert_eq!(stats.transactions, 2, "one for the first batch, one for the 50 that waited");
    assert_eq!(stats.last_batch_lines, 50);
    close(store);
}

#[test]
fn history_store_close_gives_up_at_the_deadline() {
    let dir = TempDir::new("deadline");
    let path = dir.file("history.db");
    let options = StoreOptions { busy_timeout: Duration::from_secs(120), ..StoreOptions::default() };
    let (store, _) = open(&path, &options);
    let blocker = lock(&path);
    assert!(send(&store, "dev", 1, now(), &["ann:stuck\n"]));
    wait_until("the writer takes the batch", || store.stats().queue_depth == 0);
    assert_eq!(store.close(Instant::now() + Duration::from_millis(50)), Closed::DeadlinePassed);
    // The writer, still waiting, commits once the lock goes.
    blocker.execute_batch("COMMIT").unwrap();
    wait_until("the detached writer commits", || rows(&path).len() == 1);
}

#[test]
fn history_store_with_history_off_loads_nothing() {
    let dir = TempDir::new("off");
    let path = dir.file("history.db");
    let (store, _) = open(&path, &StoreOptions::default());
    assert!(send(&store, "dev", 1, now(), &["ann:one\n"]));
    close(store);
    let (store, loaded) = open(&path, &StoreOptions { lines: 0, ..StoreOptions::default() });
    assert!(loaded.rooms.is_empty());
    assert_eq!(loaded.max_seq, 1);
    close(store);
}

#[test]
fn history_store_loads_no_more_than_the_byte_budget() {
    let dir = TempDir::new("budget");
    let path = dir.file("history.db");
    let (store, _) = open(&path, &StoreOptions::default());
    let t = now();
    // Three rooms of ten 10-byte lines; "c" most recently active.
    for (index, room) in ["a", "b", "c"].iter().enumerate() {
        let lines = vec!["ann:12345\n"; 10];
        assert!(send(&store, room, 1 + 10 * index as u64, t + index as u64, &lines));
    }
    close(store);
    let room_cost = 10 * (10 + ring::ENTRY_COST);
    let options = StoreOptions { load_bytes: 2 * room_cost + room_cost / 2, ..StoreOptions::default() };
    let (store, loaded) = open(&path, &options);
    let names: Vec<&str> = loaded.rooms.iter().map(|room| room.name.as_str()).collect();
    assert_eq!(names, ["b", "c"], "the most recently active rooms, whole");
    assert_eq!(loaded.max_seq, 30);
    close(store);
}

fn integrity(path: &Path) -> String {
    Connection::open(path).unwrap().query_row("PRAGMA integrity_check", [], |row| row.get(0)).unwrap()
}

#[test]
fn history_store_dropped_without_closing_leaves_a_sound_database() {
    let dir = TempDir::new("dropped");
    let path = dir.file("history.db");
    let (store, _) = open(&path, &StoreOptions::default());
    for seq in 1..=100 {
        let _ = send(&store, "dev", seq, now(), &["ann:line\n"]);
    }
    drop(store);
    let (store, loaded) = open(&path, &StoreOptions::default());
    assert_eq!(integrity(&path), "ok");
    // Whatever was committed is whole; the writer may still be finishing.
    let seqs: Vec<u64> = loaded.rooms.iter().flat_map(LoadedRoom::iter).map(|(seq, _, _)| seq).collect();
    assert!(seqs.windows(2).all(|pair| pair[1] == pair[0] + 1), "{seqs:?}");
    close(store);
}

const CRASH_DB: &str = "MACHAT_HISTORY_CRASH_DB";

/// Run by `history_store_survives_a_crash` as a child process: writes
/// until some lines are committed, goes on writing, and aborts.
#[test]
#[ignore = "a child process of history_store_survives_a_crash"]
fn history_store_crash_child() {
    let Some(path) = std::env::var_os(CRASH_DB) else { return };
    let options = StoreOptions { queue_records: 64, ..StoreOptions::default() };
    let (store, _) = open(Path::new(&path), &options);
    let lines = vec!["ann:a line that is going to be cut off in the middle of its transaction\n"; 50];
    let (bytes, ends) = batch(&lines);
    let mut seq = 1;
    loop {
        if store.try_record("dev", seq, now(), &bytes, &ends) {
            seq += 50;
        }
        if store.stats().lines_persisted >= 20_000 {
            // Still writing: the queue is kept full, so a transaction is
            // under way when the process dies.
            std::process::abort();
        }
    }
}

#[test]
fn history_store_survives_a_crash() {
    let dir = TempDir::new("crash");
    let path = dir.file("history.db");
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "history::store::tests::history_store_crash_child", "--ignored", "--nocapture"])
        .env(CRASH_DB, &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child should have aborted");
    let (store, loaded) = open(&path, &StoreOptions::default());
    assert_eq!(integrity(&path), "ok");
    let room = &loaded.rooms[0];
    assert_eq!(room.entries.len(), ring::DEFAULT_LINES, "the last lines are there");
    assert!(loaded.max_seq >= 20_000);
    let seqs: Vec<u64> = room.iter().map(|(seq, _, _)| seq).collect();
    assert!(seqs.windows(2).all(|pair| pair[1] == pair[0] + 1), "{seqs:?}");
    close(store);
}

#[test]
fn history_store_lingers_for_more_lines_but_not_when_closing() {
    let dir = TempDir::new("linger");
    let path = dir.file("history.db");
    let options = StoreOptions { linger: Duration::from_secs(3_600), ..StoreOptions::default() };
    let (store, _) = open(&path, &options);
    for seq in 1..=5 {
        assert!(send(&store, "dev", seq, now(), &["ann:line\n"]));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(store.stats().transactions, 0, "still lingering");
    // Closing does not wait for the linger to end.
    let started = Instant::now();
    let counters = Arc::clone(&store.counters);
    close(store);
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(counters.transactions.load(Ordering::Relaxed), 1, "one transaction for the 5");
    assert_eq!(rows(&path).len(), 5);

    // And a full transaction does not wait either.
    let options =
        StoreOptions { linger: Duration::from_secs(3_600), batch_lines: 4, ..StoreOptions::default() };
    let (store, _) = open(&path, &options);
    let lines = vec!["ann:line\n"; 2];
    assert!(send(&store, "dev", 6, now(), &lines));
    assert!(send(&store, "dev", 8, now(), &lines));
    wait_until("4 lines are committed", || store.stats().lines_persisted == 4);
    close(store);
}
