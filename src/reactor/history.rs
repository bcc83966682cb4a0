//! The reactor's side of room history: recording each delivered batch
//! once (into the ring, and to the store's writer thread when the history
//! is persisted), and replaying the latest lines to a member in the turn it
//! joins, before anything live can reach it.
//!
//! The bookkeeping is in `crate::history` (socket-free, no clock); this
//! file only decides when to call it and where the bytes go.

use std::time::Instant;

use super::Reactor;
use crate::history::{Closed, History, LineView, RoomName, Store};
use crate::names::Checked;
use crate::operator::{self, RoomRow};
use crate::rooms::{ConnId, RoomId, Rooms, Transport};
use crate::stats::Stats;
use crate::websocket;

/// A WebSocket frame header is at most this long; a replay's budget counts
/// it for every line.
const MAX_FRAME_HEADER: usize = 10;

/// The history the loop keeps: the ring, and the store's producer side
/// when `--history-db` is set.
#[derive(Debug)]
pub(super) struct RoomHistory {
    pub(super) ring: History,
    pub(super) store: Option<Store>,
    /// The replay being encoded (the marker and frames); reused.
    scratch: Vec<u8>,
}

impl RoomHistory {
    pub(super) fn new(ring: History, store: Option<Store>) -> Self {
        RoomHistory { ring, store, scratch: Vec::new() }
    }

    /// Copies the history's counters into the published stats.
    pub(super) fn publish(&self, stats: &mut Stats) {
        let ring = self.ring.stats();
        stats.history_recorded = ring.lines_recorded;
        stats.history_replayed = ring.lines_replayed;
        stats.history_restored = ring.lines_restored;
        stats.history_evicted_count = ring.evicted_by_count;
        stats.history_evicted_room_bytes = ring.evicted_by_room_bytes;
        stats.history_evicted_budget = ring.evicted_by_budget;
        stats.history_rooms = ring.rooms;
        stats.history_lines = ring.lines;
        stats.history_bytes = ring.bytes;
        if let Some(store) = &self.store {
            let store = store.stats();
            stats.history_persisted = store.lines_persisted;
            stats.history_dropped = store.lines_dropped;
            stats.history_failed = store.lines_failed;
            stats.history_queue = store.queue_depth;
            stats.history_last_batch_lines = store.last_batch_lines;
            stats.history_last_batch_micros = store.last_batch_micros;
            stats.history_writer_errors = store.errors;
        }
    }

    /// Lets the writer finish what is queued, commit and close, waiting
    /// until `deadline` at most; logs how it ended.
    pub(super) fn close_store(&mut self, deadline: Instant) {
        let Some(store) = self.store.take() else { return };
        let started = Instant::now();
        let closed = store.close(deadline);
        let stats = self.ring.stats();
        match closed {
            Closed::Drained => log::info!(
                "history: database closed in {:?} ({} rooms, {} lines in memory)",
                started.elapsed(),
                stats.rooms,
                stats.lines
            ),
            Closed::DeadlinePassed => log::warn!(
                "history: the writer did not finish within --shutdown-grace; lines still queued are lost"
            ),
        }
    }
}

impl Reactor {
    /// Records the batch being delivered to `room`: one copy into the
    /// ring, and one for the writer thread, never one per recipient.
    pub(super) fn record_history(&mut self, room: RoomId) {
        let Some(room) = self.rooms.get(room) else { return };
        let batch = &self.effects.messages;
        let name = RoomName { key: room.key(), display: room.name() };
        let history = &mut self.history;
        let Some(first_seq) = history.ring.record_batch(name, batch.lines(), batch.ends(), self.wall_ms)
        else {
            return;
        };
        if let Some(store) = &history.store {
            // A full queue drops the batch and counts it; chat goes on.
            store.try_record(name, first_seq, self.wall_ms, batch.lines(), batch.ends());
        }
    }

    /// Queues the room's latest lines for a member that has just joined,
    /// before anything live: `asked` is the handshake's `history` (already
    /// checked against `--history`); a member that did not ask gets
    /// `--history-on-join` lines and no marker. A member that asked first
    /// gets `history: <k>\n`, k being the lines that follow.
    ///
    /// The replay is one append to the member's output, so it counts
    /// against `--max-pending` like any output. It is kept under an eighth
    /// of that (half the high-water mark, newest lines first), so that a
    /// join, however often repeated, never pauses its room on its own.
    pub(super) fn replay_history(&mut self, id: ConnId, room: RoomId, asked: Option<u64>) {
        let lines = asked.map_or(self.config.history_on_join, |n| n as usize);
        if lines == 0 && asked.is_none() {
            return;
        }
        let Some(room) = self.rooms.get(room) else { return };
        let transport = self.connections[id.0].transport;
        let per_line = match transport {
            Transport::Tcp => 0,
            Transport::WebSocket => MAX_FRAME_HEADER,
        };
        let budget = self.config.max_pending / 8;
        let history = &mut self.history;
        let replay = history.ring.replay_within(room.key(), lines, budget, per_line);
        let scratch = &mut history.scratch;
        scratch.clear();
        let marker = asked.map(|_| format!("history: {}\n", replay.len()));
        match transport {
            Transport::Tcp => {
                if let Some(marker) = &marker {
                    scratch.extend_from_slice(marker.as_bytes());
                }
                scratch.extend_from_slice(replay.bytes());
            }
            Transport::WebSocket => {
                if let Some(marker) = &marker {
                    websocket::encode_text_frame(scratch, marker.as_bytes());
                }
                for entry in replay {
                    websocket::encode_text_frame(scratch, entry.line);
                }
            }
        }
        if scratch.is_empty() {
            return;
        }
        let connection = &mut self.connections[id.0];
        let room = connection.session.room();
        let appended = self.outputs.append(
            id,
            room,
            connection,
            &history.scratch,
            &mut self.stats,
            self.poll.registry(),
            self.now,
        );
        if let Err(refused) = appended {
            // Within an eighth of the cap on an output that was empty, so
            // only a broken socket gets here.
            self.refused_own_output(id, refused);
        }
    }
}

/// The operator views' window on the rooms and their history.
pub(super) struct Lookup<'a> {
    pub(super) rooms: &'a Rooms,
    pub(super) history: &'a History,
}

impl operator::Lookup for Lookup<'_> {
    fn rooms(&self) -> Vec<RoomRow> {
        let mut rows: Vec<RoomRow> = self
            .rooms
            .iter()
            .map(|room| RoomRow {
                name: room.name().to_owned(),
                members: room.len(),
                history: self.history.lines_of(room.key()),
            })
            .collect();
        // Rooms whose members have all left, their history still held.
        rows.extend(
            self.history
                .rooms()
                .filter(|summary| self.rooms.find_key(summary.key).is_none())
                .map(|summary| RoomRow { name: summary.name.to_owned(), members: 0, history: summary.lines }),
        );
        rows
    }

    fn history(&self, room: &Checked, limit: usize, after: Option<u64>) -> Option<Vec<LineView>> {
        if self.rooms.find(room).is_none() && self.history.lines_of(&room.key) == 0 {
            return None;
        }
        Some(match after {
            Some(after) => self.history.entries_since(&room.key, after, limit),
            None => self.history.last(&room.key, limit),
        })
    }
}
