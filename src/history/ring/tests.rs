//! Tests of the in-memory history: examples for each rule, then property
//! tests that drive it with arbitrary records and replays against a model
//! and check every bound after every step.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

/// A batch as `Batch` holds it: lines back to back and their end offsets.
fn batch(lines: &[&str]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for line in lines {
        bytes.extend_from_slice(line.as_bytes());
        ends.push(bytes.len());
    }
    (bytes, ends)
}

fn record(history: &mut History, room: &str, lines: &[&str], now_ms: u64) -> Option<u64> {
    let (bytes, ends) = batch(lines);
    history.record_batch(room, &bytes, &ends, now_ms)
}

fn replayed(history: &mut History, room: &str, n: usize) -> Vec<(u64, String)> {
    history
        .replay(room, n)
        .map(|entry| (entry.seq, String::from_utf8(entry.line.to_vec()).unwrap()))
        .collect()
}

fn numbered(count: usize) -> Vec<String> {
    (0..count).map(|index| format!("ann:line {index}\n")).collect()
}

fn as_strs(lines: &[String]) -> Vec<&str> {
    lines.iter().map(String::as_str).collect()
}

/// Every bound and every piece of bookkeeping that must hold between calls.
fn check_invariants(history: &History) {
    let limits = history.limits();
    let stats = history.stats();
    assert!(stats.bytes <= limits.memory as u64, "budget passed: {stats:?}");
    let mut cost = 0;
    let mut lines = 0;
    for room in history.keys.values().map(|&key| &history.rooms[key]) {
        assert!(room.entries.len() <= limits.lines);
        assert!(room.bytes.len() <= limits.room_bytes);
        assert!(room.bytes.capacity() <= limits.room_bytes, "byte buffer grew past the room cap");
        assert!(room.entries.capacity() <= limits.lines, "entry ring grew past the line cap");
        let stored: usize = room.entries.iter().map(|entry| entry.len as usize).sum();
        assert_eq!(stored, room.bytes.len(), "entries and bytes disagree in {}", room.name);
        assert!(room.entries.iter().zip(room.entries.iter().skip(1)).all(|(a, b)| a.seq < b.seq));
        if let Some(last) = room.entries.back() {
            assert!(last.seq < room.next_seq);
            assert!(last.seq <= history.seq_floor);
        }
        cost += room.cost();
        lines += room.entries.len();
    }
    assert_eq!(stats.bytes, cost as u64, "bytes held is not the sum of the rooms' costs");
    assert_eq!(stats.lines, lines as u64);
    assert_eq!(stats.rooms as usize, history.keys.len());
    assert_eq!(history.rooms().count(), history.keys.len(), "use order and map disagree");
    assert_eq!(
        stats.lines_recorded + stats.lines_restored,
        stats.lines + stats.evicted_by_count + stats.evicted_by_room_bytes + stats.evicted_by_budget,
        "lines not conserved: {stats:?}"
    );
}

#[test]
fn history_off_stores_nothing() {
    for limits in [
        Limits::off(),
        Limits { memory: 0, ..Limits::default() },
        Limits { room_bytes: 0, ..Limits::default() },
    ] {
        let mut history = History::new(limits);
        assert!(!history.is_enabled());
        assert_eq!(record(&mut history, "dev", &["ann:hi\n"], 1), None);
        assert!(!history.restore_line("dev", 1, 1, b"ann:hi\n"));
        assert_eq!(history.replay("dev", 10).count(), 0);
        assert_eq!(history.stats(), HistoryStats::default());
        assert_eq!(history.rooms().count(), 0);
    }
}

#[test]
fn history_replays_the_latest_lines_in_order_with_increasing_numbers() {
    let mut history = History::new(Limits::default());
    assert_eq!(record(&mut history, "dev", &["ann:one\n", "bob:two\n"], 1_000), Some(1));
    assert_eq!(record(&mut history, "dev", &["ann:three\n"], 2_000), Some(3));

    let replay = history.replay("dev", 10);
    assert_eq!(replay.bytes(), b"ann:one\nbob:two\nann:three\n");
    assert_eq!(replay.len(), 3);
    let entries: Vec<Entry> = replay.collect();
    assert_eq!(entries.iter().map(|entry| entry.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(entries.iter().map(|entry| entry.time_ms).collect::<Vec<_>>(), [1_000, 1_000, 2_000]);
    assert_eq!((entries[1].name(), entries[1].text()), (&b"bob"[..], &b"two"[..]));

    assert_eq!(history.replay("dev", 2).bytes(), b"bob:two\nann:three\n");
    assert_eq!(history.replay("dev", 0).count(), 0);
    assert_eq!(history.replay("elsewhere", 5).count(), 0);
    assert_eq!(history.stats().lines_replayed, 5);
    check_invariants(&history);
}

#[test]
fn history_keeps_at_most_the_line_cap_per_room() {
    let mut history = History::new(Limits { lines: 100, ..Limits::default() });
    let lines = numbered(150);
    for chunk in lines.chunks(7) {
        record(&mut history, "dev", &as_strs(chunk), 5);
    }
    let kept = replayed(&mut history, "dev", 1_000);
    assert_eq!(kept.len(), 100);
    assert_eq!(kept.first().unwrap(), &(51, lines[50].clone()));
    assert_eq!(kept.last().unwrap(), &(150, lines[149].clone()));
    assert_eq!(history.stats().evicted_by_count, 50);
    check_invariants(&history);
}

#[test]
fn history_batch_larger_than_the_cap_keeps_its_latest_lines_only() {
    let mut history = History::new(Limits { lines: 3, ..Limits::default() });
    record(&mut history, "dev", &["ann:old\n"], 1);
    let lines = numbered(5);
    assert_eq!(record(&mut history, "dev", &as_strs(&lines), 2), Some(2));
    let kept: Vec<u64> = replayed(&mut history, "dev", 10).into_iter().map(|(seq, _)| seq).collect();
    assert_eq!(kept, [4, 5, 6]);
    assert_eq!(history.stats().evicted_by_count, 3);
    check_invariants(&history);
}

#[test]
fn history_keeps_a_room_within_its_byte_cap() {
    let mut history = History::new(Limits { lines: 100, room_bytes: 100, memory: DEFAULT_MEMORY });
    let line = format!("ann:{}\n", "x".repeat(25)); // 30 bytes
    for _ in 0..5 {
        record(&mut history, "dev", &[&line], 1);
    }
    assert_eq!(history.replay("dev", 10).len(), 3, "three 30-byte lines fit in 100 bytes");
    assert_eq!(history.stats().evicted_by_room_bytes, 2);
    check_invariants(&history);
}

#[test]
fn history_line_larger_than_the_room_cap_is_not_kept_and_breaks_the_run() {
    let mut history = History::new(Limits { lines: 100, room_bytes: 100, memory: DEFAULT_MEMORY });
    record(&mut history, "dev", &["ann:before\n"], 1);
    let huge = format!("ann:{}\n", "x".repeat(200));
    // The first line would fit beside the last one, but the huge line
    // between them is gone, so keeping it would skip a line in a replay.
    record(&mut history, "dev", &["bob:first\n", &huge, "bob:after\n"], 2);
    assert_eq!(replayed(&mut history, "dev", 10), [(4, "bob:after\n".to_string())]);
    assert_eq!(history.stats().evicted_by_room_bytes, 3);
    check_invariants(&history);
}

#[test]
fn history_budget_drops_least_recently_used_rooms_first() {
    // Room for three small rooms and a bit.
    let one_room = ROOM_COST + 2 + MIN_ROOM_BYTES + MIN_ROOM_ENTRIES * ENTRY_COST;
    let limits = Limits { lines: 4, room_bytes: 200, memory: 3 * one_room + one_room / 2 };
    let mut history = History::new(limits);
    record(&mut history, "a", &["ann:a\n"], 1);
    record(&mut history, "b", &["ann:b\n"], 2);
    record(&mut history, "c", &["ann:c\n"], 3);
    assert_eq!(history.stats().rooms, 3);
    // A replay is a use: "a" is now the most recently used, "b" the least.
    assert_eq!(history.replay("a", 1).len(), 1);
    // Operator views are not.
    assert_eq!(history.last("b", 1).len(), 1);
    record(&mut history, "d", &["ann:d\n"], 4);
    let names: Vec<&str> = history.rooms().map(|room| room.name).collect();
    assert_eq!(names, ["d", "a", "c"]);
    let stats = history.stats();
    assert_eq!((stats.rooms_evicted, stats.evicted_by_budget), (1, 1));
    record(&mut history, "e", &["ann:e\n"], 5);
    let names: Vec<&str> = history.rooms().map(|room| room.name).collect();
    assert_eq!(names, ["e", "d", "a"]);
    check_invariants(&history);
}

#[test]
fn history_numbers_are_not_reused_after_a_room_is_evicted() {
    // The byte cap stays 200 (the budget leaves it whole), so each room's
    // buffers grow to ROOM_COST + 2 + 200 + 4 entries: two rooms fit, not three.
    let memory = ROOM_COST + ROOM_NAME_RESERVE + 4 * ENTRY_COST + 200;
    let mut history = History::new(Limits { lines: 4, room_bytes: 200, memory });
    assert_eq!(record(&mut history, "a", &["ann:1\n", "ann:2\n"], 1), Some(1));
    assert_eq!(record(&mut history, "b", &["ann:1\n"], 1), Some(3), "a new room starts above every number");
    assert_eq!(record(&mut history, "c", &["ann:1\n"], 1), Some(4));
    assert_eq!(history.rooms().map(|room| room.name).collect::<Vec<_>>(), ["c", "b"]);
    assert_eq!(record(&mut history, "a", &["ann:3\n"], 1), Some(5), "an evicted room starts above too");
    check_invariants(&history);
}

#[test]
fn history_recording_in_steady_state_does_not_grow_the_buffers() {
    let mut history = History::new(Limits::default());
    let body = "x".repeat(64);
    let lines: Vec<String> = (0..10).map(|_| format!("sender:{body}\n")).collect();
    let lines = as_strs(&lines);
    for _ in 0..20 {
        record(&mut history, "dev", &lines, 1);
    }
    let bytes = history.stats().bytes;
    for _ in 0..1_000 {
        record(&mut history, "dev", &lines, 1);
    }
    assert_eq!(history.stats().bytes, bytes, "capacity changed: a reallocation in steady state");
    check_invariants(&history);
}

#[test]
fn history_record_lines_finds_the_same_lines_as_record_batch() {
    let mut by_ends = History::new(Limits::default());
    let mut by_newlines = History::new(Limits::default());
    let lines = ["ann:a\n", "bob:\n", "cy:c:d\n"];
    let (bytes, _) = batch(&lines);
    record(&mut by_ends, "dev", &lines, 9);
    by_newlines.record_lines("dev", &bytes, 9);
    assert_eq!(replayed(&mut by_ends, "dev", 9), replayed(&mut by_newlines, "dev", 9));
    assert_eq!(by_newlines.record_lines("dev", b"", 9), None);
}

#[test]
fn history_operator_views_split_name_and_text() {
    let mut history = History::new(Limits::default());
    record(&mut history, "dev", &["ann:one\n", "bob:two: with colon\n", "cy:\n"], 7);
    let last = history.last("dev", 2);
    assert_eq!(
        last,
        [
            LineView { seq: 2, time_ms: 7, name: "bob".into(), text: "two: with colon".into() },
            LineView { seq: 3, time_ms: 7, name: "cy".into(), text: "".into() },
        ]
    );
    assert_eq!(history.entries_since("dev", 0, 2).iter().map(|view| view.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(history.entries_since("dev", 2, 10).iter().map(|view| view.seq).collect::<Vec<_>>(), [3]);
    assert!(history.entries_since("dev", 3, 10).is_empty());
    assert!(history.last("nowhere", 3).is_empty());
    assert_eq!(history.stats().lines_replayed, 0);
    let summary = history.rooms().next().unwrap();
    assert_eq!(
        (summary.name, summary.lines, summary.first_seq, summary.last_seq),
        ("dev", 3, Some(1), Some(3))
    );
}

#[test]
fn history_restores_lines_in_order_and_continues_numbering() {
    let mut history = History::new(Limits { lines: 2, ..Limits::default() });
    assert!(history.restore_line("dev", 40, 1, b"ann:a\n"));
    assert!(history.restore_line("dev", 42, 2, b"ann:b\n"), "gaps are allowed");
    assert!(!history.restore_line("dev", 41, 3, b"ann:late\n"), "out of order");
    assert!(history.restore_line("dev", 43, 4, b"ann:c\n"));
    assert_eq!(replayed(&mut history, "dev", 5), [(42, "ann:b\n".into()), (43, "ann:c\n".into())]);
    assert_eq!(record(&mut history, "dev", &["ann:d\n"], 5), Some(44));
    history.raise_seq_floor(1_000);
    assert_eq!(record(&mut history, "new", &["ann:e\n"], 5), Some(1_001));
    assert_eq!(record(&mut history, "dev", &["ann:f\n"], 5), Some(45), "a living room keeps its run");
    check_invariants(&history);
}

#[test]
fn history_replay_is_one_slice_after_the_ring_wraps() {
    let mut history = History::new(Limits { lines: 5, ..Limits::default() });
    let lines = numbered(23);
    for line in &lines {
        record(&mut history, "dev", &[line], 1);
    }
    let expected: String = lines[18..].concat();
    let replay = history.replay("dev", 5);
    assert_eq!(replay.bytes(), expected.as_bytes());
    assert_eq!(replay.map(|entry| entry.line.to_vec()).collect::<Vec<_>>().concat(), expected.as_bytes());
}

/// What the property tests do to a history.
#[derive(Debug, Clone)]
enum Op {
    /// Line lengths (of the text) of one batch into a room.
    Record {
        room: usize,
        texts: Vec<usize>,
    },
    Replay {
        room: usize,
        n: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..5usize, prop::collection::vec(0..120usize, 1..12))
            .prop_map(|(room, texts)| Op::Record { room, texts }),
        1 => (0..5usize, 0..30usize).prop_map(|(room, n)| Op::Replay { room, n }),
    ]
}

fn limits() -> impl Strategy<Value = Limits> {
    (1..25usize, 20..1_500usize, 0..6_000usize).prop_map(|(lines, room_bytes, extra)| Limits {
        lines,
        room_bytes,
        // From "not quite one room" to "several full rooms".
        memory: ROOM_COST + 300 + extra,
    })
}

/// The model: each room's lines since its history began, and the use order.
#[derive(Default)]
struct Model {
    streams: HashMap<String, Vec<(u64, Vec<u8>)>>,
    /// Rooms with history, least recently used first.
    order: Vec<String>,
    highest_seq: u64,
}

impl Model {
    fn touch(&mut self, room: &str) {
        self.order.retain(|name| name != room);
        self.order.push(room.to_string());
    }

    /// The longest run of latest lines within the room's caps.
    fn expected(&self, room: &str, limits: Limits) -> Vec<(u64, Vec<u8>)> {
        let stream = &self.streams[room];
        let mut bytes = 0;
        let mut kept = 0;
        for (_, line) in stream.iter().rev() {
            if kept == limits.lines || bytes + line.len() > limits.room_bytes {
                break;
            }
            kept += 1;
            bytes += line.len();
        }
        stream[stream.len() - kept..].to_vec()
    }

    /// Forgets rooms the history dropped, checking they were the least
    /// recently used ones.
    fn sync_evictions(&mut self, history: &History) {
        let held: Vec<String> = history.rooms().map(|room| room.name.to_string()).collect();
        let mut expected_order: Vec<String> = self.order.clone();
        expected_order.reverse();
        expected_order.truncate(held.len());
        assert_eq!(held, expected_order, "rooms were not evicted least recently used first");
        let dropped = self.order.len() - held.len();
        for room in self.order.drain(..dropped) {
            self.streams.remove(&room);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn history_properties(limits in limits(), ops in prop::collection::vec(op(), 1..120)) {
        let mut history = History::new(limits);
        let effective = history.limits();
        let mut model = Model::default();
        let mut counter = 0u64;
        for op in ops {
            match op {
                Op::Record { room, texts } => {
                    let room = format!("room{room}");
                    let lines: Vec<String> = texts.iter().map(|&len| {
                        counter += 1;
                        format!("u{counter}:{}\n", "x".repeat(len))
                    }).collect();
                    let first = record(&mut history, &room, &as_strs(&lines), counter);
                    if !history.is_enabled() {
                        prop_assert_eq!(first, None);
                        continue;
                    }
                    let first = first.unwrap();
                    let stream = model.streams.entry(room.clone()).or_default();
                    match stream.last() {
                        Some(&(last, _)) => prop_assert_eq!(first, last + 1, "numbers in a room run on"),
                        None => prop_assert!(first > model.highest_seq, "a new history starts above all"),
                    }
                    for (index, line) in lines.iter().enumerate() {
                        stream.push((first + index as u64, line.clone().into_bytes()));
                    }
                    model.highest_seq = model.highest_seq.max(first + lines.len() as u64 - 1);
                    model.touch(&room);
                }
                Op::Replay { room, n } => {
                    let room = format!("room{room}");
                    let got: Vec<(u64, Vec<u8>)> = history.replay(&room, n)
                        .map(|entry| (entry.seq, entry.line.to_vec())).collect();
                    let bytes = history.replay(&room, n).bytes().to_vec();
                    if model.streams.contains_key(&room) {
                        let expected = model.expected(&room, effective);
                        let tail = expected[expected.len() - n.min(expected.len())..].to_vec();
                        prop_assert_eq!(&bytes, &tail.iter().flat_map(|(_, line)| line.clone()).collect::<Vec<u8>>());
                        prop_assert_eq!(got, tail);
                        if n > 0 {
                            model.touch(&room);
                        }
                    } else {
                        prop_assert!(got.is_empty());
                    }
                }
            }
            check_invariants(&history);
            model.sync_evictions(&history);
            for room in history.rooms() {
                let held: Vec<(u64, Vec<u8>)> = history.last(room.name, usize::MAX).into_iter()
                    .map(|view| (view.seq, format!("{}:{}\n", view.name, view.text).into_bytes()))
                    .collect();
                prop_assert_eq!(held, model.expected(room.name, effective), "room {} holds the wrong lines", room.name);
            }
        }
    }
}

#[test]
fn a_room_is_its_key_and_shows_its_latest_spelling() {
    let mut history = History::new(Limits::default());
    let (bytes, ends) = batch(&["ann:1\n"]);
    history.record_batch(RoomName { key: "dev", display: "Dev" }, &bytes, &ends, 1);
    history.record_batch(RoomName { key: "dev", display: "DEV" }, &bytes, &ends, 2);
    assert_eq!(history.lines_of("dev"), 2, "two spellings, one room");
    assert_eq!(history.display_of("dev"), Some("DEV"));
    let rooms: Vec<(&str, &str)> = history.rooms().map(|room| (room.name, room.key)).collect();
    assert_eq!(rooms, [("DEV", "dev")]);
    assert_eq!(history.lines_of("Dev"), 0, "looked up by key only");
    check_invariants(&history);
}

#[test]
fn a_replay_within_a_budget_keeps_the_newest_lines_that_fit() {
    let mut history = History::new(Limits::default());
    record(&mut history, "dev", &["ann:one\n", "ann:two\n", "ann:three\n"], 1);
    // 10 + 8 bytes (plus 2 per line) fit in 22; "ann:one\n" would not.
    let lines: Vec<String> = history
        .replay_within("dev", 3, 22, 2)
        .map(|entry| String::from_utf8(entry.line.to_vec()).unwrap())
        .collect();
    assert_eq!(lines, ["ann:two\n", "ann:three\n"]);
    assert_eq!(history.replay_within("dev", 3, 22, 2).bytes(), b"ann:two\nann:three\n");
    assert_eq!(history.replay_within("dev", 3, 5, 0).len(), 0, "not even the newest fits");
    assert_eq!(history.replay_within("dev", 1, usize::MAX, 0).bytes(), b"ann:three\n");
    assert_eq!(history.stats().lines_replayed, 5, "only what was handed out is counted");
    check_invariants(&history);
}
