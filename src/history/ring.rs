//! The in-memory history: for each room, its latest delivered lines,
//! exactly the `name:text\n` bytes members received, each with a sequence
//! number and the wall-clock time it was recorded at.
//!
//! This runs on the event loop, in the fan-out path, so it is built for
//! that: a batch of messages is recorded with one copy of its bytes (not
//! one per line, never one per recipient), and in steady state recording
//! allocates nothing. Each room holds one byte ring (a `VecDeque<u8>` with
//! the lines back to back) and one ring of small fixed-size entries
//! (sequence number, time, length). Evicting the oldest line moves two
//! indices; nothing is freed or reallocated.
//!
//! # Bounds
//!
//! Every room's history is bounded three ways, and all three are enforced
//! on every call, so no caller can push past them:
//!
//! - **lines per room**: [`Limits::lines`] (`--history`, default
//!   [`DEFAULT_LINES`]); 0 turns history off: nothing is stored at all.
//! - **bytes per room**: [`Limits::room_bytes`] (default
//!   [`DEFAULT_ROOM_BYTES`], 256 KiB). At the default `--max-line` (64 KiB)
//!   a room still holds three maximal lines, and 100 ordinary lines (a few
//!   hundred bytes each) fit many times over; what it stops is one sender
//!   making a room cost `--history` × `--max-line` (6.4 MiB at the
//!   defaults). A line larger than this is not kept.
//! - **memory overall**: [`Limits::memory`] (`--history-memory`, default
//!   [`DEFAULT_MEMORY`], 64 MiB: the history of a thousand busy rooms, or
//!   256 rooms filled to their byte cap). The budget counts what the
//!   history really holds on the heap: each room's buffer *capacities*
//!   (bytes, and entries at [`ENTRY_COST`] bytes each), its name, and a
//!   fixed per-room overhead ([`ROOM_COST`]: the room's struct, its map
//!   slot and its name's reference counts). Buffers grow by doubling but
//!   never past the room's caps, so one room's cost is bounded too, and the
//!   per-room byte cap is lowered if needed so that one room always fits
//!   in the budget.
//!
//! A room's history outlives its last member (the next member to join
//! still sees the conversation). So rooms are also bounded by the budget:
//! when recording pushes the total past it, whole rooms are dropped, least
//! recently used first, until it fits. "Used" means recorded into or
//! replayed from; the operator views do not count. Whole rooms rather than
//! the oldest lines of the least-recently-used room, because a room that
//! has gone quiet is the history least likely to be asked for, and
//! dropping it frees its buffers' capacity, which trimming lines would not.
//! The map of rooms holds only rooms with history, so it is bounded by the
//! budget divided by [`ROOM_COST`].
//!
//! # Sequence numbers
//!
//! Within a room, each line gets the next number (contiguous while the
//! room's history lives). A room whose history starts (first line, or
//! first line after its history was evicted) starts above every number
//! this history ever handed out or restored, in any room. So a number is
//! never reused for a room, even after eviction, and a store keyed by
//! (room, number) never sees a duplicate, also across restarts once the
//! stored maximum is restored ([`History::raise_seq_floor`]).
//!
//! # What is kept, exactly
//!
//! A room's history is always an unbroken run of the latest lines it was
//! given: if a batch on its own passes a cap, the lines before the part
//! that fits go too, even older ones that would fit, so a replay never
//! skips a line in the middle.

use std::collections::{HashMap, VecDeque, vec_deque};
use std::sync::Arc;

use serde::Serialize;
use slab::Slab;

/// Lines kept per room unless told otherwise (`--history`).
pub const DEFAULT_LINES: usize = 100;
/// Bytes of lines kept per room unless told otherwise; see the module docs.
pub const DEFAULT_ROOM_BYTES: usize = 256 * 1024;
/// The whole history's memory budget unless told otherwise
/// (`--history-memory`); see the module docs.
pub const DEFAULT_MEMORY: usize = 64 * 1024 * 1024;

/// What one entry's bookkeeping costs, besides its line's bytes.
pub const ENTRY_COST: usize = size_of::<EntryMeta>();
/// What a room costs besides its buffers and its name: the room's own
/// struct (with the two deques' headers and its links), its slot in the map
/// (an `Arc<str>` and a key) and the `Arc`'s two counters.
pub const ROOM_COST: usize =
    size_of::<RoomHistory>() + size_of::<(Arc<str>, usize)>() + 2 * size_of::<usize>();
/// Room names are at most 64 characters (at most 256 bytes of UTF-8, and
/// as much again for the folded key); the per-room byte cap leaves room
/// for both in the budget.
const ROOM_NAME_RESERVE: usize = 512;
/// First capacities of a room's buffers: a room with a line or two should
/// not pay for a hundred.
const MIN_ROOM_BYTES: usize = 256;
const MIN_ROOM_ENTRIES: usize = 4;

/// A room as the history knows it: by its folded key (two spellings that
/// fold alike are one room, as in [`crate::rooms`]), with the spelling to
/// show. A plain `&str` is both, which is what tests and benchmarks use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomName<'a> {
    pub key: &'a str,
    pub display: &'a str,
}

impl<'a> From<&'a str> for RoomName<'a> {
    fn from(name: &'a str) -> Self {
        RoomName { key: name, display: name }
    }
}

/// How much history to keep; see the module docs for each bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Lines per room; 0 turns history off.
    pub lines: usize,
    /// Bytes of lines per room.
    pub room_bytes: usize,
    /// Memory budget for all rooms together, in bytes.
    pub memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { lines: DEFAULT_LINES, room_bytes: DEFAULT_ROOM_BYTES, memory: DEFAULT_MEMORY }
    }
}

impl Limits {
    /// No history at all.
    pub fn off() -> Self {
        Limits { lines: 0, ..Limits::default() }
    }

    /// The limits as enforced: off if nothing can be stored, and the room
    /// byte cap lowered so that one full room (with a name of any valid
    /// length) fits in the memory budget.
    fn effective(self) -> Limits {
        let fixed = ROOM_COST + ROOM_NAME_RESERVE + self.lines.saturating_mul(ENTRY_COST);
        let room_bytes = self.room_bytes.min(self.memory.saturating_sub(fixed)).min(u32::MAX as usize);
        if self.lines == 0 || room_bytes == 0 {
            Limits { lines: 0, room_bytes: 0, memory: self.memory }
        } else {
            Limits { room_bytes, ..self }
        }
    }
}

/// Counters for `/metrics`. Lines are conserved: every line recorded or
/// restored is either still held or counted in exactly one `evicted_*`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HistoryStats {
    /// Lines handed to [`History::record_batch`] while history is on.
    pub lines_recorded: u64,
    /// Lines put back from the store at start.
    pub lines_restored: u64,
    /// Lines handed out by [`History::replay`].
    pub lines_replayed: u64,
    /// Lines dropped to keep a room within [`Limits::lines`].
    pub evicted_by_count: u64,
    /// Lines dropped to keep a room within [`Limits::room_bytes`] (lines
    /// larger than that cap included).
    pub evicted_by_room_bytes: u64,
    /// Lines dropped with their room to keep within [`Limits::memory`].
    pub evicted_by_budget: u64,
    /// Rooms whose whole history was dropped for the budget.
    pub rooms_evicted: u64,
    /// Rooms holding history now.
    pub rooms: u64,
    /// Lines held now.
    pub lines: u64,
    /// Bytes held now, as counted against [`Limits::memory`].
    pub bytes: u64,
}

/// One line's bookkeeping; its bytes are in the room's byte ring.
#[derive(Debug, Clone, Copy)]
struct EntryMeta {
    seq: u64,
    time_ms: u64,
    len: u32,
}

/// Why lines were evicted, for the counters.
#[derive(Debug, Clone, Copy)]
enum Eviction {
    Count,
    RoomBytes,
}

#[derive(Debug)]
struct RoomHistory {
    /// The room's folded key (`names::Checked::key`), which the map is keyed by.
    name: Arc<str>,
    /// The room's spelling as its members last used it, for the operator
    /// views and the store.
    display: Box<str>,
    /// The lines back to back, oldest first. Capacity ≤ `Limits::room_bytes`.
    bytes: VecDeque<u8>,
    /// One per line, oldest first. Capacity ≤ `Limits::lines`.
    entries: VecDeque<EntryMeta>,
    next_seq: u64,
    /// Neighbours in the use order (slab keys): `older` is used less recently.
    older: Option<usize>,
    newer: Option<usize>,
}

impl RoomHistory {
    fn cost(&self) -> usize {
        ROOM_COST
            + self.name.len()
            + self.display.len()
            + self.bytes.capacity()
            + self.entries.capacity() * ENTRY_COST
    }

    fn pop_oldest(&mut self) {
        if let Some(entry) = self.entries.pop_front() {
            // Draining from the front of a deque only moves its head.
            self.bytes.drain(..entry.len as usize);
        }
    }

    /// Grows the buffers to take `lines` more lines of `bytes` more bytes,
    /// doubling (so growth is amortised) but never past the caps, which the
    /// caller has already made room under.
    fn reserve(&mut self, lines: usize, bytes: usize, limits: Limits) {
        let needed = self.bytes.len() + bytes;
        if needed > self.bytes.capacity() {
            let target = needed.max(self.bytes.capacity() * 2).max(MIN_ROOM_BYTES).min(limits.room_bytes);
            self.bytes.reserve_exact(target - self.bytes.len());
        }
        let needed = self.entries.len() + lines;
        if needed > self.entries.capacity() {
            let target = needed.max(self.entries.capacity() * 2).max(MIN_ROOM_ENTRIES).min(limits.lines);
            self.entries.reserve_exact(target - self.entries.len());
        }
    }

    /// Byte offset of entry `index` in `bytes`, counted from the end
    /// because callers want the latest lines.
    fn offset_of(&self, index: usize) -> usize {
        let after: usize = self.entries.range(index..).map(|entry| entry.len as usize).sum();
        self.bytes.len() - after
    }

    /// Copies entries `from..` (at most `limit`) out as owned views.
    fn views(&self, from: usize, limit: usize) -> Vec<LineView> {
        let mut offset = self.offset_of(from);
        let mut line = Vec::new();
        self.entries
            .range(from..)
            .take(limit)
            .map(|entry| {
                let end = offset + entry.len as usize;
                line.clear();
                line.extend(self.bytes.range(offset..end));
                offset = end;
                LineView::new(entry.seq, entry.time_ms, &line)
            })
            .collect()
    }
}

/// Every room's history; see the module docs.
#[derive(Debug)]
pub struct History {
    limits: Limits,
    rooms: Slab<RoomHistory>,
    /// Room name to its key in `rooms`; holds exactly the rooms in `rooms`.
    keys: HashMap<Arc<str>, usize>,
    /// Ends of the use order.
    least_recent: Option<usize>,
    most_recent: Option<usize>,
    /// Counted against `limits.memory`: the sum of every room's cost.
    bytes_held: usize,
    lines_held: usize,
    /// The highest sequence number handed out or restored, in any room.
    seq_floor: u64,
    stats: HistoryStats,
    /// Line ends found by [`History::record_lines`]; as long as the longest
    /// batch it was given (one read's worth of lines), reused.
    scratch_ends: Vec<usize>,
}

impl History {
    pub fn new(limits: Limits) -> Self {
        History {
            limits: limits.effective(),
            rooms: Slab::new(),
            keys: HashMap::new(),
            least_recent: None,
            most_recent: None,
            bytes_held: 0,
            lines_held: 0,
            seq_floor: 0,
            stats: HistoryStats::default(),
            scratch_ends: Vec::new(),
        }
    }

    /// The limits as enforced (the room byte cap may be lower than asked
    /// for, to fit the budget; everything is 0 when history is off).
    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn is_enabled(&self) -> bool {
        self.limits.lines > 0
    }

    /// Records one delivered batch: `lines` is `name:text\n` lines back to
    /// back and `ends` the end offset of each in `lines` (as `Batch` keeps
    /// them). Returns the sequence number of the first line (the others
    /// follow it), or `None` when history is off or the batch is empty.
    /// One copy of the bytes that are kept; no allocation once the room's
    /// buffers have grown to their working size.
    pub fn record_batch<'r>(
        &mut self,
        room: impl Into<RoomName<'r>>,
        lines: &[u8],
        ends: &[usize],
        now_ms: u64,
    ) -> Option<u64> {
        if !self.is_enabled() || ends.is_empty() {
            return None;
        }
        debug_assert!(ends.windows(2).all(|pair| pair[0] <= pair[1]), "ends out of order");
        debug_assert_eq!(ends.last(), Some(&lines.len()), "ends do not cover the lines");
        let key = self.room_for(room.into());
        let first_seq = self.rooms[key].next_seq;
        self.stats.lines_recorded += ends.len() as u64;
        self.append(key, lines, ends, first_seq, now_ms);
        Some(first_seq)
    }

    /// [`record_batch`](History::record_batch) for a caller that has only
    /// the bytes: lines are found at each `\n` (a chat line has none inside).
    pub fn record_lines<'r>(
        &mut self,
        room: impl Into<RoomName<'r>>,
        lines: &[u8],
        now_ms: u64,
    ) -> Option<u64> {
        let room = room.into();
        let mut ends = std::mem::take(&mut self.scratch_ends);
        ends.clear();
        ends.extend(memchr::memchr_iter(b'\n', lines).map(|newline| newline + 1));
        if ends.last() != Some(&lines.len()) && !lines.is_empty() {
            ends.push(lines.len());
        }
        let first_seq = self.record_batch(room, lines, &ends, now_ms);
        self.scratch_ends = ends;
        first_seq
    }

    /// Puts back one line loaded from the store, with its own sequence
    /// number and time. Lines of a room must come oldest first: a number
    /// not above the room's latest is refused (returns false). The caps
    /// apply as for [`record_batch`](History::record_batch).
    pub fn restore_line<'r>(
        &mut self,
        room: impl Into<RoomName<'r>>,
        seq: u64,
        time_ms: u64,
        line: &[u8],
    ) -> bool {
        let room = room.into();
        if !self.is_enabled() || line.is_empty() {
            return false;
        }
        if let Some(&key) = self.keys.get(room.key)
            && seq < self.rooms[key].next_seq
        {
            return false;
        }
        let key = self.room_for(room);
        self.rooms[key].next_seq = seq;
        self.stats.lines_restored += 1;
        self.append(key, line, &[line.len()], seq, time_ms);
        true
    }

    /// Makes every room whose history starts from now on number its lines
    /// above `seq` (the highest number the store ever saw).
    pub fn raise_seq_floor(&mut self, seq: u64) {
        self.seq_floor = self.seq_floor.max(seq);
    }

    /// Lines held for the room whose key is `room`.
    pub fn lines_of(&self, room: &str) -> usize {
        self.keys.get(room).map_or(0, |&key| self.rooms[key].entries.len())
    }

    /// The room's spelling, if it has history (`room` is its key).
    pub fn display_of(&self, room: &str) -> Option<&str> {
        self.keys.get(room).map(|&key| &*self.rooms[key].display)
    }

    /// The latest `n` lines of `room` (its key), oldest first, for a
    /// member who just joined. Counts as a use of the room.
    /// [`Replay::bytes`] is all of them as one slice, exactly the TCP
    /// bytes; iterating gives each line.
    pub fn replay(&mut self, room: &str, n: usize) -> Replay<'_> {
        self.replay_within(room, n, usize::MAX, 0)
    }

    /// [`replay`](History::replay), fewer lines if need be: the latest
    /// lines (at most `n`) whose bytes, plus `per_line` for each (a frame
    /// header), come to at most `budget`.
    pub fn replay_within(&mut self, room: &str, n: usize, budget: usize, per_line: usize) -> Replay<'_> {
        let Some(&key) = self.keys.get(room) else { return Replay::empty() };
        if n == 0 {
            return Replay::empty();
        }
        self.touch(key);
        let history = &mut self.rooms[key];
        let mut count = 0;
        let mut bytes = 0usize;
        for entry in history.entries.iter().rev().take(n) {
            bytes = bytes.saturating_add(entry.len as usize + per_line);
            if bytes > budget {
                break;
            }
            count += 1;
        }
        let from = history.entries.len() - count;
        let start = history.offset_of(from);
        self.stats.lines_replayed += count as u64;
        // Lines that wrapped around the ring's end are straightened once,
        // so the replay is one slice; a replay is rare (a join), recording
        // is not, and this costs at most one pass over the room's bytes.
        let bytes = &history.bytes.make_contiguous()[start..];
        Replay { all: bytes, rest: bytes, entries: history.entries.range(from..) }
    }

    /// The latest `limit` lines of `room` (its key), oldest first, for an operator.
    /// Does not count as a use.
    pub fn last(&self, room: &str, limit: usize) -> Vec<LineView> {
        let Some(history) = self.keys.get(room).map(|&key| &self.rooms[key]) else { return Vec::new() };
        let from = history.entries.len() - limit.min(history.entries.len());
        history.views(from, limit)
    }

    /// Up to `limit` lines of `room` (its key) numbered above `after_seq`, oldest
    /// first (so the last one's number pages on), for an operator. Does not
    /// count as a use.
    pub fn entries_since(&self, room: &str, after_seq: u64, limit: usize) -> Vec<LineView> {
        let Some(history) = self.keys.get(room).map(|&key| &self.rooms[key]) else { return Vec::new() };
        let from = history.entries.partition_point(|entry| entry.seq <= after_seq);
        history.views(from, limit)
    }

    /// The rooms holding history, most recently used first.
    pub fn rooms(&self) -> impl Iterator<Item = RoomSummary<'_>> {
        let mut next = self.most_recent;
        std::iter::from_fn(move || {
            let history = &self.rooms[next?];
            next = history.older;
            Some(RoomSummary {
                name: &history.display,
                key: &history.name,
                lines: history.entries.len(),
                first_seq: history.entries.front().map(|entry| entry.seq),
                last_seq: history.entries.back().map(|entry| entry.seq),
                bytes: history.cost(),
            })
        })
    }

    pub fn stats(&self) -> HistoryStats {
        HistoryStats {
            rooms: self.rooms.len() as u64,
            lines: self.lines_held as u64,
            bytes: self.bytes_held as u64,
            ..self.stats
        }
    }

    /// The room's key, creating its history (empty, no buffers) if it has
    /// none, and marking it the most recently used.
    fn room_for(&mut self, room: RoomName<'_>) -> usize {
        if let Some(&key) = self.keys.get(room.key) {
            self.touch(key);
            let history = &mut self.rooms[key];
            if *history.display != *room.display {
                // Rare: the room emptied and came back spelled otherwise.
                self.bytes_held -= history.cost();
                history.display = room.display.into();
                self.bytes_held += history.cost();
            }
            return key;
        }
        let name: Arc<str> = Arc::from(room.key);
        let key = self.rooms.insert(RoomHistory {
            name: Arc::clone(&name),
            display: room.display.into(),
            bytes: VecDeque::new(),
            entries: VecDeque::new(),
            next_seq: self.seq_floor + 1,
            older: None,
            newer: None,
        });
        self.keys.insert(name, key);
        self.bytes_held += self.rooms[key].cost();
        self.link_most_recent(key);
        key
    }

    /// Appends the lines ending at `ends` (numbered from `first_seq`) to the
    /// room, keeping the longest run of latest lines within the room's
    /// caps, then drops least recently used rooms until the budget holds.
    fn append(&mut self, key: usize, lines: &[u8], ends: &[usize], first_seq: u64, time_ms: u64) {
        let limits = self.limits;
        let history = &mut self.rooms[key];
        history.next_seq = first_seq + ends.len() as u64;
        self.seq_floor = self.seq_floor.max(history.next_seq - 1);

        // The latest lines of the batch that fit the room's caps on their own.
        let mut kept = 0;
        let mut kept_bytes = 0;
        let mut cut_by = None;
        for index in (0..ends.len()).rev() {
            let len = ends[index] - if index == 0 { 0 } else { ends[index - 1] };
            if kept == limits.lines {
                cut_by = Some(Eviction::Count);
                break;
            }
            if kept_bytes + len > limits.room_bytes {
                cut_by = Some(Eviction::RoomBytes);
                break;
            }
            kept += 1;
            kept_bytes += len;
        }

        let evicted_before = history.entries.len();
        if let Some(reason) = cut_by {
            // The batch alone fills a cap: everything older goes, so what is
            // kept stays an unbroken run of the latest lines.
            let dropped = (history.entries.len() + ends.len() - kept) as u64;
            history.entries.clear();
            history.bytes.clear();
            match reason {
                Eviction::Count => self.stats.evicted_by_count += dropped,
                Eviction::RoomBytes => self.stats.evicted_by_room_bytes += dropped,
            }
        } else {
            while history.entries.len() + kept > limits.lines {
                history.pop_oldest();
                self.stats.evicted_by_count += 1;
            }
            while history.bytes.len() + kept_bytes > limits.room_bytes {
                history.pop_oldest();
                self.stats.evicted_by_room_bytes += 1;
            }
        }
        self.lines_held -= evicted_before - history.entries.len();

        if kept > 0 {
            let cost_before = history.cost();
            history.reserve(kept, kept_bytes, limits);
            let from = ends.len() - kept;
            let mut start = if from == 0 { 0 } else { ends[from - 1] };
            history.bytes.extend(&lines[start..]);
            for (index, &end) in ends.iter().enumerate().skip(from) {
                history.entries.push_back(EntryMeta {
                    seq: first_seq + index as u64,
                    time_ms,
                    len: (end - start) as u32,
                });
                start = end;
            }
            self.lines_held += kept;
            self.bytes_held = self.bytes_held - cost_before + history.cost();
        }
        self.enforce_budget();
    }

    /// Drops least recently used rooms until the budget holds. Only a
    /// degenerate budget (smaller than one room with no lines) can drop the
    /// room just written to.
    fn enforce_budget(&mut self) {
        while self.bytes_held > self.limits.memory {
            let Some(key) = self.least_recent else { break };
            self.unlink(key);
            let history = self.rooms.remove(key);
            self.keys.remove(&history.name);
            self.bytes_held -= history.cost();
            self.lines_held -= history.entries.len();
            self.stats.evicted_by_budget += history.entries.len() as u64;
            self.stats.rooms_evicted += 1;
        }
    }

    fn touch(&mut self, key: usize) {
        if self.most_recent != Some(key) {
            self.unlink(key);
            self.link_most_recent(key);
        }
    }

    fn unlink(&mut self, key: usize) {
        let (older, newer) = (self.rooms[key].older.take(), self.rooms[key].newer.take());
        match older {
            Some(older_key) => self.rooms[older_key].newer = newer,
            None => self.least_recent = newer,
        }
        match newer {
            Some(newer_key) => self.rooms[newer_key].older = older,
            None => self.most_recent = older,
        }
    }

    fn link_most_recent(&mut self, key: usize) {
        self.rooms[key].older = self.most_recent;
        self.rooms[key].newer = None;
        match self.most_recent {
            Some(previous) => self.rooms[previous].newer = Some(key),
            None => self.least_recent = Some(key),
        }
        self.most_recent = Some(key);
    }
}

/// One stored line, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub seq: u64,
    /// Milliseconds since the Unix epoch when it was recorded.
    pub time_ms: u64,
    /// `name:text\n`, exactly as delivered.
    pub line: &'a [u8],
}

impl<'a> Entry<'a> {
    /// The sender's name: the line up to its first `:`.
    pub fn name(&self) -> &'a [u8] {
        split_line(self.line).0
    }

    /// The text: after the first `:`, without the `\n`.
    pub fn text(&self) -> &'a [u8] {
        split_line(self.line).1
    }
}

/// Splits `name:text\n` at the first `:` (a name has none); the text loses
/// its `\n`. A line without `:` is all text.
pub fn split_line(line: &[u8]) -> (&[u8], &[u8]) {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    match memchr::memchr(b':', line) {
        Some(colon) => (&line[..colon], &line[colon + 1..]),
        None => (&[], line),
    }
}

/// The lines a joining member is owed, oldest first.
#[derive(Debug, Clone)]
pub struct Replay<'a> {
    all: &'a [u8],
    rest: &'a [u8],
    entries: vec_deque::Iter<'a, EntryMeta>,
}

impl<'a> Replay<'a> {
    fn empty() -> Self {
        Replay { all: &[], rest: &[], entries: Default::default() }
    }

    /// Every line of the replay back to back, wherever the iteration is:
    /// the bytes a TCP member gets.
    pub fn bytes(&self) -> &'a [u8] {
        self.all
    }
}

impl<'a> Iterator for Replay<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        let entry = self.entries.next()?;
        let (line, rest) = self.rest.split_at(entry.len as usize);
        self.rest = rest;
        Some(Entry { seq: entry.seq, time_ms: entry.time_ms, line })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl ExactSizeIterator for Replay<'_> {}

/// One stored line, owned and split, for the operator views (and JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineView {
    pub seq: u64,
    pub time_ms: u64,
    pub name: String,
    pub text: String,
}

impl LineView {
    fn new(seq: u64, time_ms: u64, line: &[u8]) -> Self {
        let (name, text) = split_line(line);
        LineView {
            seq,
            time_ms,
            name: String::from_utf8_lossy(name).into_owned(),
            text: String::from_utf8_lossy(text).into_owned(),
        }
    }
}

/// A room with history, for an operator listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RoomSummary<'a> {
    /// The room's spelling (not its folded key).
    pub name: &'a str,
    /// The room's folded key.
    pub key: &'a str,
    pub lines: usize,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// What the room counts against the memory budget.
    pub bytes: usize,
}

#[cfg(test)]
mod tests;
