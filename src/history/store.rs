//! History persisted to SQLite, off the event loop.
//!
//! [`Store::open`] runs once at start, on the caller's thread: it opens or
//! creates the database (WAL journal, `synchronous=NORMAL`: a commit is
//! durable against a crash of the process, and against power loss up to
//! the last checkpoint, which is what chat history needs), checks the
//! schema version, and loads the latest lines of each recently active room
//! in one query, for the caller to put in the rings
//! ([`Loaded::restore_into`]) before it listens. Then a writer thread takes
//! the connection.
//!
//! The loop hands each delivered batch to [`Store::try_record`], which
//! never blocks: the batch goes into a bounded channel, or, when the
//! channel is full (the disk is slow, the database is locked), it is
//! dropped and counted. Chat must not wait for the disk; a gap in persisted
//! history is the lesser harm. The writer gathers whatever is waiting, and
//! whatever comes within a short linger after the first batch, into one
//! transaction with one cached prepared statement; the same
//! transaction trims the rooms it wrote to, and between transactions the
//! writer deletes lines past the retention age, a bounded chunk at a time,
//! so it never holds the database for long.
//!
//! # What is stored
//!
//! One row per line: room (its folded key, which decides what is one room,
//! and its spelling), sequence number, time, and the line split into
//! `name` and `text` (at the first `:`, without the `\n`), so the database
//! reads well with the `sqlite3` shell; `name:text\n` is put back together
//! on load, byte for byte the line that was delivered.
//!
//! Rows live in a rowid table, so they are appended in the order they were
//! written and the oldest are deleted from its front: with a thousand busy
//! rooms a transaction dirties a few pages of the table instead of one
//! page per room, which measured 2 to 3 times the writer's throughput of a
//! table keyed by (room, seq). The unique index on (room, seq) finds a
//! room's latest lines, and its entries are small, so it stays compact.
//! Being written in time order, the table needs no index on time: the
//! retention step looks at the oldest rows only. (A wall clock stepped
//! back delays the deletion of the rows written after it, never deletes a
//! row too early.) The schema version
//! is `PRAGMA user_version` ([`SCHEMA_VERSION`]); a database with a newer
//! one is refused rather than misread. The `meta` table keeps the highest
//! sequence number ever written, so numbering after a restart continues
//! above it ([`Loaded::max_seq`]).
//!
//! ```sql
//! CREATE TABLE lines (
//!     id      INTEGER PRIMARY KEY,  -- the order rows were written in
//!     room    TEXT    NOT NULL,     -- the folded key
//!     room_name TEXT  NOT NULL,     -- the spelling members used
//!     seq     INTEGER NOT NULL,
//!     time_ms INTEGER NOT NULL,     -- milliseconds since the Unix epoch
//!     name    TEXT    NOT NULL,
//!     text    TEXT    NOT NULL
//! );
//! CREATE UNIQUE INDEX lines_by_room ON lines (room, seq);
//! CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
//! ```
//!
//! # Bounds
//!
//! - The channel: at most [`StoreOptions::queue_records`] batches and
//!   [`StoreOptions::queue_bytes`] bytes of lines waiting; past either, new
//!   batches are dropped (and counted) without being copied.
//! - A transaction: whatever is waiting when the writer takes its first
//!   batch and whatever arrives within [`StoreOptions::linger`] (10 ms)
//!   after it, up to [`StoreOptions::batch_lines`] lines (one batch more at
//!   most); the writer stops lingering as soon as the store is closed. So a
//!   committed line was recorded at most the linger plus one transaction
//!   before. Batches taken while lingering leave the channel, so they do
//!   not count against its bounds; they count against `batch_lines`.
//! - Memory: the writer's SQLite page cache is at most
//!   [`StoreOptions::cache_kib`] (16 MiB).
//! - Rows: at most [`StoreOptions::lines`] rows per room (the `--history`
//!   count) and, if [`StoreOptions::retention`] is set, none older than
//!   that. The count is kept exactly by the transaction that writes: after
//!   its inserts, each room it wrote to loses the rows beyond its latest
//!   `lines`, at most as many as it just gained, so every commit leaves
//!   every room it wrote to at `lines` rows at most. (Its cost is a walk of
//!   the room's latest `lines` index entries per room per transaction,
//!   which the linger spreads over more lines. Trimming a room only once
//!   it had gained a quarter of `lines` was tried and measured no faster:
//!   the rows it deletes at once were written in many transactions, so they
//!   sit on many table pages, where the trim of every transaction deletes
//!   rows written together.) Age is kept by retention steps of their own: one short
//!   transaction that looks at the [`StoreOptions::prune_rows`] oldest rows
//!   (or as many as lines were written since the step before, if more, so
//!   deleting keeps pace with writing) and deletes those past the age,
//!   after every `prune_rows` lines written and at least every
//!   [`StoreOptions::prune_interval`]. The first steps after opening also
//!   sweep every room, a chunk at a time, for rows beyond the count left by
//!   an earlier run with a larger `--history`.
//! - Loading: rooms are read most recently active first and reading stops
//!   before [`StoreOptions::load_bytes`] (the ring's budget: it could keep no
//!   more anyway), so a huge database cannot make start-up hold it all.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};

use super::ring::{self, History, RoomName};

/// The schema this code writes and reads.
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS lines (
        id      INTEGER PRIMARY KEY,
        room    TEXT    NOT NULL,
        room_name TEXT  NOT NULL,
        seq     INTEGER NOT NULL,
        time_ms INTEGER NOT NULL,
        name    TEXT    NOT NULL,
        text    TEXT    NOT NULL
    );
    CREATE UNIQUE INDEX IF NOT EXISTS lines_by_room ON lines (room, seq);
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT OR IGNORE INTO meta (key, value) VALUES ('max_seq', 0);
    PRAGMA user_version = 1;
";

const INSERT_LINE: &str =
    "INSERT INTO lines (room, room_name, seq, time_ms, name, text) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const UPDATE_MAX_SEQ: &str = "UPDATE meta SET value = max(value, ?1) WHERE key = 'max_seq'";
/// The latest `?2` lines of each room with a line at or after `?1`, most
/// recently active room first, each room's lines oldest first.
const LOAD: &str = "
    SELECT room, room_name, seq, time_ms, name, text FROM (
        SELECT room, room_name, seq, time_ms, name, text,
               row_number() OVER (PARTITION BY room ORDER BY seq DESC) AS newest,
               max(time_ms) OVER (PARTITION BY room) AS active
        FROM lines WHERE time_ms >= ?1
    )
    WHERE newest <= ?2
    ORDER BY active DESC, room, seq";
/// Rows older than `?1` among the `?2` oldest written.
const PRUNE_BY_AGE: &str = "
    DELETE FROM lines WHERE id IN (
        SELECT id FROM (SELECT id, time_ms FROM lines ORDER BY id LIMIT ?2)
        WHERE time_ms < ?1)";
/// At most `?3` rows of room `?1` beyond its `?2` latest (the `OFFSET`
/// walks `?2` entries of the primary key, no more).
const PRUNE_ROOM: &str = "
    DELETE FROM lines WHERE id IN
        (SELECT id FROM lines WHERE room = ?1 ORDER BY seq DESC LIMIT ?3 OFFSET ?2)";
/// At most `?2` rows, of any room, beyond their room's `?1` latest.
const PRUNE_SWEEP: &str = "
    DELETE FROM lines WHERE id IN (
        SELECT id FROM (
            SELECT id, row_number() OVER (PARTITION BY room ORDER BY seq DESC) AS newest
            FROM lines)
        WHERE newest > ?1 LIMIT ?2)";

/// How the store behaves; [`Default`] is what the server uses unless told
/// otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Lines kept per room, in the database and when loading (`--history`).
    pub lines: usize,
    /// Lines older than this are deleted and not loaded
    /// (`--history-retention`); `None` keeps them forever.
    pub retention: Option<Duration>,
    /// Batches waiting for the writer, at most. 1024: a burst of a thousand
    /// reads' worth of messages, a fraction of a second of the writer's work.
    pub queue_records: usize,
    /// Bytes of lines waiting for the writer, at most: 16 MiB bounds the
    /// channel's memory even when every batch is a full 64 KiB read.
    pub queue_bytes: usize,
    /// Lines per transaction, at most (one batch may pass it): 4096 makes a
    /// commit cheap per line and still short (tens of milliseconds with a
    /// thousand busy rooms on a shared disk; 1024 measured a third slower,
    /// 16384 no faster).
    pub batch_lines: usize,
    /// Oldest rows a retention step looks at (and so deletes at most),
    /// unless more lines were written since the step before; also the lines
    /// written that call for a step. 4096: a step as short as a transaction.
    pub prune_rows: usize,
    /// A retention step runs at least this often, even when idle.
    pub prune_interval: Duration,
    /// How long the writer waits for a database locked by someone else
    /// before it gives a transaction up (counted in errors).
    pub busy_timeout: Duration,
    /// Bytes of lines loaded at start, at most (the ring's memory budget).
    pub load_bytes: usize,
    /// After the first batch of a transaction arrives, how long the writer
    /// waits for more before it commits (never past `batch_lines`; a
    /// closing store does not wait). 10 ms: a transaction then holds what
    /// the loop recorded in that time, so its commit (the journal writes of
    /// every page it dirtied, and the trim's walk of each room it wrote to)
    /// is paid once for all of it; a line reaches the disk at most this
    /// much later.
    pub linger: Duration,
    /// SQLite's page cache for the writer's connection, in KiB (SQLite's
    /// own default is 2,000). 16 MiB holds the index and the newest table
    /// pages of 1,000 rooms × 100 lines, which otherwise come back through
    /// the kernel in every transaction.
    pub cache_kib: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            lines: ring::DEFAULT_LINES,
            retention: None,
            queue_records: 1024,
            queue_bytes: 16 * 1024 * 1024,
            batch_lines: 4096,
            prune_rows: 4096,
            prune_interval: Duration::from_secs(1),
            busy_timeout: Duration::from_secs(5),
            load_bytes: ring::DEFAULT_MEMORY,
            linger: Duration::from_millis(10),
            cache_kib: 16 * 1024,
        }
    }
}

/// Why the store could not start. Every message names the database file.
#[derive(Debug)]
pub enum StoreError {
    /// SQLite could not open or create the file, or it is not a database.
    Open { path: PathBuf, source: rusqlite::Error },
    /// The file was written by a newer machat.
    NewerSchema { path: PathBuf, found: i64 },
    /// Setting the database up or loading from it failed.
    Sqlite { path: PathBuf, doing: &'static str, source: rusqlite::Error },
    /// The writer thread could not be started.
    Spawn { path: PathBuf, source: std::io::Error },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Open { path, source } => {
                write!(f, "history database {}: cannot open: {source}", path.display())
            }
            StoreError::NewerSchema { path, found } => write!(
                f,
                "history database {}: schema version {found} is newer than this machat reads \
                 ({SCHEMA_VERSION}); use a newer machat or another file",
                path.display()
            ),
            StoreError::Sqlite { path, doing, source } => {
                write!(f, "history database {}: {doing}: {source}", path.display())
            }
            StoreError::Spawn { path, source } => {
                write!(f, "history database {}: cannot start the writer thread: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Open { source, .. } | StoreError::Sqlite { source, .. } => Some(source),
            StoreError::Spawn { source, .. } => Some(source),
            StoreError::NewerSchema { .. } => None,
        }
    }
}

/// What the database held at start: the latest lines of each recently
/// active room, least recently active room first (restoring in this order
/// leaves the most recently active rooms the most recently used, so the
/// ring's budget drops the others first).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub rooms: Vec<LoadedRoom>,
    /// The highest sequence number ever written (rooms not loaded included).
    pub max_seq: u64,
}

/// One room's loaded lines, oldest first.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadedRoom {
    /// The room's folded key.
    pub name: String,
    /// Its spelling in the latest line loaded.
    pub display: String,
    /// `name:text\n` lines back to back.
    pub lines: Vec<u8>,
    /// Per line: sequence number, time, end offset in `lines`.
    pub entries: Vec<(u64, u64, usize)>,
}

impl LoadedRoom {
    /// Each line as (sequence number, time, `name:text\n`).
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64, &[u8])> {
        let mut start = 0;
        self.entries.iter().map(move |&(seq, time_ms, end)| {
            let line = &self.lines[start..end];
            start = end;
            (seq, time_ms, line)
        })
    }
}

impl Loaded {
    /// Lines loaded, in all rooms.
    pub fn lines(&self) -> usize {
        self.rooms.iter().map(|room| room.entries.len()).sum()
    }

    /// Puts every loaded line into `history` and makes new numbering start
    /// above everything stored. Returns the lines the history took.
    pub fn restore_into(&self, history: &mut History) -> usize {
        history.raise_seq_floor(self.max_seq);
        let mut restored = 0;
        for room in &self.rooms {
            for (seq, time_ms, line) in room.iter() {
                let name = RoomName { key: &room.name, display: &room.display };
                restored += usize::from(history.restore_line(name, seq, time_ms, line));
            }
        }
        restored
    }
}

/// A snapshot of the store's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Lines committed to the database.
    pub lines_persisted: u64,
    /// Lines dropped because the channel was full (or the writer gone).
    pub lines_dropped: u64,
    /// Lines lost in transactions that failed.
    pub lines_failed: u64,
    /// Batches waiting in the channel (approximate: counted on both sides).
    pub queue_depth: u64,
    /// Bytes of lines waiting in the channel (approximate likewise).
    pub queue_bytes: u64,
    /// Lines in the last committed transaction.
    pub last_batch_lines: u64,
    /// How long the last committed transaction took, in microseconds.
    pub last_batch_micros: u64,
    pub transactions: u64,
    /// Failed transactions and retention steps.
    pub errors: u64,
    /// Rows deleted by retention, for age and for the per-room count.
    pub pruned_by_age: u64,
    pub pruned_by_count: u64,
}

/// Counters shared by the loop (producer) and the writer; relaxed atomics:
/// they are statistics, nothing synchronises through them.
#[derive(Debug, Default)]
struct Counters {
    persisted: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    queue_depth: AtomicUsize,
    queue_bytes: AtomicUsize,
    last_batch_lines: AtomicU64,
    last_batch_micros: AtomicU64,
    transactions: AtomicU64,
    errors: AtomicU64,
    pruned_by_age: AtomicU64,
    pruned_by_count: AtomicU64,
}

/// One batch on its way to the writer: the room's name and the lines in
/// one allocation.
#[derive(Debug)]
struct Record {
    /// The room's key, its spelling, then `name:text\n` lines back to back.
    payload: Vec<u8>,
    key_len: usize,
    room_len: usize,
    lines: usize,
    first_seq: u64,
    time_ms: u64,
}

impl Record {
    fn key(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.payload[..self.key_len])
    }

    fn display(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.payload[self.key_len..self.room_len])
    }

    fn lines(&self) -> impl Iterator<Item = &[u8]> {
        self.payload[self.room_len..].split_inclusive(|&byte| byte == b'\n')
    }

    fn line_bytes(&self) -> usize {
        self.payload.len() - self.room_len
    }
}

/// How [`Store::close`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Everything queued was written and the database closed.
    Drained,
    /// The deadline came first; the writer goes on in the background until
    /// the process exits (what it committed is safe; the rest is lost).
    DeadlinePassed,
}

/// The loop's side of the store: hands batches to the writer thread.
#[derive(Debug)]
pub struct Store {
    sender: Option<SyncSender<Record>>,
    counters: Arc<Counters>,
    /// Signalled (or disconnected) when the writer has finished.
    finished: Receiver<()>,
    writer: Option<JoinHandle<()>>,
    queue_records: usize,
    queue_bytes: usize,
}

impl Store {
    /// Opens or creates the database at `path`, loads what the rings
    /// should hold, and starts the writer thread.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<(Store, Loaded), StoreError> {
        let conn = open_database(path, options)?;
        let loaded = load(&conn, options, now_ms()).map_err(|source| StoreError::Sqlite {
            path: path.into(),
            doing: "loading history",
            source,
        })?;

        let counters = Arc::new(Counters::default());
        let (sender, receiver) = mpsc::sync_channel(options.queue_records.max(1));
        let (finished_sender, finished) = mpsc::channel();
        let writer = Writer {
            conn,
            receiver,
            counters: Arc::clone(&counters),
            options: options.clone(),
            sweep: true,
            written_since_prune: 0,
            last_prune: Instant::now(),
        };
        let writer = thread::Builder::new()
            .name("machat-history".into())
            .spawn(move || {
                writer.run();
                let _ = finished_sender.send(());
            })
            .map_err(|source| StoreError::Spawn { path: path.into(), source })?;
        let store = Store {
            sender: Some(sender),
            counters,
            finished,
            writer: Some(writer),
            queue_records: options.queue_records.max(1),
            queue_bytes: options.queue_bytes,
        };
        Ok((store, loaded))
    }

    /// Hands one delivered batch to the writer: `lines` are `name:text\n`
    /// lines back to back (`ends` their end offsets, as for
    /// [`History::record_batch`]), numbered from `first_seq`. Never blocks:
    /// returns false, and counts the lines as dropped, when the queue is
    /// full. Costs one allocation (the copy the writer takes) when queued,
    /// none when dropped.
    pub fn try_record<'r>(
        &self,
        room: impl Into<RoomName<'r>>,
        first_seq: u64,
        time_ms: u64,
        lines: &[u8],
        ends: &[usize],
    ) -> bool {
        if ends.is_empty() {
            return true;
        }
        let counters = &self.counters;
        let dropped = || {
            counters.dropped.fetch_add(ends.len() as u64, Ordering::Relaxed);
            false
        };
        let Some(sender) = &self.sender else { return dropped() };
        // Counted before sending and taken back on failure, so the counts
        // never fall below what is really queued (the writer subtracts
        // what it receives).
        let depth = counters.queue_depth.fetch_add(1, Ordering::Relaxed);
        let bytes = counters.queue_bytes.fetch_add(lines.len(), Ordering::Relaxed);
        let undo = || {
            counters.queue_depth.fetch_sub(1, Ordering::Relaxed);
            counters.queue_bytes.fetch_sub(lines.len(), Ordering::Relaxed);
        };
        if depth >= self.queue_records || bytes + lines.len() > self.queue_bytes {
            undo();
            return dropped();
        }
        let room = room.into();
        let room_len = room.key.len() + room.display.len();
        let mut payload = Vec::with_capacity(room_len + lines.len());
        payload.extend_from_slice(room.key.as_bytes());
        payload.extend_from_slice(room.display.as_bytes());
        payload.extend_from_slice(lines);
        let record =
            Record { payload, key_len: room.key.len(), room_len, lines: ends.len(), first_seq, time_ms };
        match sender.try_send(record) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                undo();
                dropped()
            }
        }
    }

    pub fn stats(&self) -> StoreStats {
        let counters = &self.counters;
        StoreStats {
            lines_persisted: counters.persisted.load(Ordering::Relaxed),
            lines_dropped: counters.dropped.load(Ordering::Relaxed),
            lines_failed: counters.failed.load(Ordering::Relaxed),
            queue_depth: counters.queue_depth.load(Ordering::Relaxed) as u64,
            queue_bytes: counters.queue_bytes.load(Ordering::Relaxed) as u64,
            last_batch_lines: counters.last_batch_lines.load(Ordering::Relaxed),
            last_batch_micros: counters.last_batch_micros.load(Ordering::Relaxed),
            transactions: counters.transactions.load(Ordering::Relaxed),
            errors: counters.errors.load(Ordering::Relaxed),
            pruned_by_age: counters.pruned_by_age.load(Ordering::Relaxed),
            pruned_by_count: counters.pruned_by_count.load(Ordering::Relaxed),
        }
    }

    /// Lets the writer write everything already queued, commit and close
    /// the database; waits for that until `deadline` at most. Dropping a
    /// store without closing it does the same without waiting.
    pub fn close(mut self, deadline: Instant) -> Closed {
        // The writer sees the channel disconnect only after it has received
        // everything that was sent.
        self.sender = None;
        match self.finished.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            // Disconnected: the writer panicked; there is nothing to wait for.
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                if let Some(writer) = self.writer.take() {
                    let _ = writer.join();
                }
                Closed::Drained
            }
            Err(RecvTimeoutError::Timeout) => Closed::DeadlinePassed,
        }
    }
}

/// Milliseconds since the Unix epoch: the time recorded with each line
/// (the loop reads it once a turn; the writer for retention).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

fn to_sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Opens the file, sets the journal up, checks and creates the schema.
fn open_database(path: &Path, options: &StoreOptions) -> Result<Connection, StoreError> {
    let open_error = |source| StoreError::Open { path: path.into(), source };
    let setup_error = |doing| move |source| StoreError::Sqlite { path: path.into(), doing, source };
    let flags =
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(open_error)?;
    // SQLite opens lazily: a file that is not a database fails at the
    // first read, which this is.
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(open_error)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema { path: path.into(), found: version });
    }
    conn.busy_timeout(options.busy_timeout).map_err(setup_error("setting the busy timeout"))?;
    let journal: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(setup_error("switching to WAL"))?;
    if !journal.eq_ignore_ascii_case("wal") {
        log::warn!("history database {}: journal mode is {journal}, not WAL", path.display());
    }
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(setup_error("setting synchronous"))?;
    conn.pragma_update(None, "cache_size", -(options.cache_kib.min(i64::MAX as usize) as i64))
        .map_err(setup_error("setting the page cache size"))?;
    if version < SCHEMA_VERSION {
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} COMMIT;"))
            .map_err(setup_error("creating the schema"))?;
    }
    Ok(conn)
}

/// The one loading query, read until the byte budget; rooms come most
/// recently active first and are handed back least recently active first.
fn load(conn: &Connection, options: &StoreOptions, now_ms: u64) -> rusqlite::Result<Loaded> {
    let max_seq: i64 =
        conn.query_row("SELECT value FROM meta WHERE key = 'max_seq'", [], |row| row.get(0))?;
    let mut loaded = Loaded { rooms: Vec::new(), max_seq: max_seq.max(0) as u64 };
    if options.lines == 0 {
        return Ok(loaded);
    }
    let cutoff = options.retention.map_or(0, |age| now_ms.saturating_sub(age.as_millis() as u64));
    let mut statement = conn.prepare(LOAD)?;
    let mut rows = statement.query(params![to_sql(cutoff), to_sql(options.lines as u64)])?;
    let mut bytes = 0;
    let mut room = LoadedRoom::default();
    while let Some(row) = rows.next()? {
        let name: String = row.get(0)?;
        if name != room.name {
            if !room.entries.is_empty() {
                loaded.rooms.push(std::mem::take(&mut room));
            }
            room.name = name;
        }
        let display = row.get_ref(1)?.as_str()?;
        if display != room.display {
            room.display.clear();
            room.display.push_str(display);
        }
        let seq: i64 = row.get(2)?;
        let time_ms: i64 = row.get(3)?;
        let sender = row.get_ref(4)?.as_str()?;
        let text = row.get_ref(5)?.as_str()?;
        let line_len = sender.len() + 1 + text.len() + 1;
        bytes += line_len + ring::ENTRY_COST;
        if bytes > options.load_bytes {
            // The ring could not keep more; a room cut short would keep its
            // oldest lines, so it is left out whole.
            room.entries.clear();
            break;
        }
        room.lines.extend_from_slice(sender.as_bytes());
        room.lines.push(b':');
        room.lines.extend_from_slice(text.as_bytes());
        room.lines.push(b'\n');
        room.entries.push((seq.max(0) as u64, time_ms.max(0) as u64, room.lines.len()));
        loaded.max_seq = loaded.max_seq.max(seq.max(0) as u64);
    }
    if !room.entries.is_empty() {
        loaded.rooms.push(room);
    }
    loaded.rooms.reverse();
    Ok(loaded)
}

/// The writer thread's state; it owns the connection.
struct Writer {
    conn: Connection,
    receiver: Receiver<Record>,
    counters: Arc<Counters>,
    options: StoreOptions,
    /// Look for rooms over the count with the full sweep query; set at
    /// open, cleared when a sweep finds less than its chunk.
    sweep: bool,
    written_since_prune: usize,
    last_prune: Instant,
}

impl Writer {
    fn run(mut self) {
        // Bounded by `batch_lines` lines (each record has at least one).
        let mut batch: Vec<Record> = Vec::new();
        loop {
            match self.receiver.recv_timeout(self.options.prune_interval) {
                Ok(record) => {
                    let mut lines = self.received(&record);
                    batch.push(record);
                    // Whatever is waiting, then whatever comes within the
                    // linger, up to `batch_lines`.
                    let linger_until = Instant::now() + self.options.linger;
                    let mut closing = false;
                    while lines < self.options.batch_lines {
                        let record = match self.receiver.try_recv() {
                            Ok(record) => record,
                            Err(TryRecvError::Empty) => {
                                let wait = linger_until.saturating_duration_since(Instant::now());
                                if wait.is_zero() {
                                    break;
                                }
                                match self.receiver.recv_timeout(wait) {
                                    Ok(record) => record,
                                    Err(RecvTimeoutError::Timeout) => break,
                                    Err(RecvTimeoutError::Disconnected) => {
                                        closing = true;
                                        break;
                                    }
                                }
                            }
                            Err(TryRecvError::Disconnected) => {
                                closing = true;
                                break;
                            }
                        };
                        lines += self.received(&record);
                        batch.push(record);
                    }
                    self.write(&mut batch);
                    if closing {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                // Everything sent has been received and written.
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if self.written_since_prune >= self.options.prune_rows
                || self.last_prune.elapsed() >= self.options.prune_interval
            {
                self.prune();
            }
        }
    }

    fn received(&self, record: &Record) -> usize {
        self.counters.queue_depth.fetch_sub(1, Ordering::Relaxed);
        self.counters.queue_bytes.fetch_sub(record.line_bytes(), Ordering::Relaxed);
        record.lines
    }

    /// Writes and empties `batch` in one transaction.
    fn write(&mut self, batch: &mut Vec<Record>) {
        let started = Instant::now();
        let lines: usize = batch.iter().map(|record| record.lines).sum();
        match self.insert(batch) {
            Ok(trimmed) => {
                let counters = &self.counters;
                counters.persisted.fetch_add(lines as u64, Ordering::Relaxed);
                counters.pruned_by_count.fetch_add(trimmed as u64, Ordering::Relaxed);
                counters.transactions.fetch_add(1, Ordering::Relaxed);
                counters.last_batch_lines.store(lines as u64, Ordering::Relaxed);
                counters.last_batch_micros.store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                self.written_since_prune += lines;
            }
            Err(error) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                self.counters.failed.fetch_add(lines as u64, Ordering::Relaxed);
                log::warn!("history: {lines} lines not persisted: {error}");
            }
        }
        batch.clear();
    }

    /// Inserts the batch, trims the rooms it wrote to, and commits; returns
    /// the rows trimmed.
    fn insert(&mut self, batch: &[Record]) -> rusqlite::Result<usize> {
        let transaction = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut max_seq = 0;
        // Each room written to, with the lines it gained; one entry per
        // record, merged below (at most `batch_lines` entries).
        let mut written: Vec<(std::borrow::Cow<'_, str>, usize)> = Vec::with_capacity(batch.len());
        let mut trimmed = 0;
        {
            let mut insert = transaction.prepare_cached(INSERT_LINE)?;
            for record in batch {
                let room = record.key();
                let display = record.display();
                let mut seq = record.first_seq;
                for line in record.lines() {
                    let (sender, text) = ring::split_line(line);
                    let sender = String::from_utf8_lossy(sender);
                    let text = String::from_utf8_lossy(text);
                    insert.execute(params![
                        room,
                        display,
                        to_sql(seq),
                        to_sql(record.time_ms),
                        sender,
                        text
                    ])?;
                    seq += 1;
                }
                max_seq = max_seq.max(seq.saturating_sub(1));
                written.push((room, record.lines));
            }
            written.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            written.dedup_by(|later, earlier| {
                let same = later.0 == earlier.0;
                if same {
                    earlier.1 += later.1;
                }
                same
            });
            let mut trim = transaction.prepare_cached(PRUNE_ROOM)?;
            for (room, gained) in &written {
                trimmed += trim.execute(params![room, self.options.lines as i64, *gained as i64])?;
            }
            transaction.prepare_cached(UPDATE_MAX_SEQ)?.execute([to_sql(max_seq)])?;
        }
        transaction.commit()?;
        Ok(trimmed)
    }

    /// One retention step, one transaction. It deletes at most as many rows
    /// as were written since the last step (and at least `prune_rows`),
    /// so deleting keeps pace with writing while one step stays bounded by
    /// a transaction's worth.
    fn prune(&mut self) {
        let budget = self.options.prune_rows.max(self.written_since_prune);
        self.written_since_prune = 0;
        self.last_prune = Instant::now();
        if let Err(error) = self.prune_step(budget) {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            log::warn!("history: retention step failed: {error}");
        }
    }

    fn prune_step(&mut self, mut budget: usize) -> rusqlite::Result<()> {
        let options = &self.options;
        if options.retention.is_none() && !self.sweep {
            return Ok(());
        }
        let transaction = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut by_age = 0;
        if let Some(age) = options.retention {
            let cutoff = now_ms().saturating_sub(age.as_millis() as u64);
            by_age =
                transaction.prepare_cached(PRUNE_BY_AGE)?.execute(params![to_sql(cutoff), budget as i64])?;
            budget -= by_age;
        }
        let mut by_count = 0;
        let mut sweep_done = false;
        if self.sweep && budget > 0 {
            by_count = transaction
                .prepare_cached(PRUNE_SWEEP)?
                .execute(params![options.lines as i64, budget as i64])?;
            sweep_done = by_count < budget;
        }
        transaction.commit()?;
        self.sweep &= !sweep_done;
        self.counters.pruned_by_age.fetch_add(by_age as u64, Ordering::Relaxed);
        self.counters.pruned_by_count.fetch_add(by_count as u64, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
