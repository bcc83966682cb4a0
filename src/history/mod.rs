//! Room history: the latest chat lines of each room, kept in memory for
//! members who join with `"history": n`, and persisted to SQLite so they
//! survive a restart.
//!
//! - [`ring`] is pure bookkeeping, called from the event loop: a bounded
//!   ring of `name:text\n` lines per room, capped by count, by bytes per
//!   room and by a global memory budget, with least-recently-used rooms
//!   losing their history first. No I/O, no threads, no clock: the time
//!   comes in as an argument.
//! - [`store`] is the SQLite side: opening (and refusing) a database,
//!   loading the latest lines of each room at start, and a writer thread
//!   fed through a bounded channel that the loop never waits on.
//!
//! The two meet in the caller: the loop records each delivered batch into
//! the ring, which numbers its lines, and hands the same bytes with the
//! first number to the store; at start, [`store::Loaded::restore_into`]
//! fills the ring before the server listens.

pub mod ring;
pub mod store;

pub use ring::{Entry, History, HistoryStats, Limits, LineView, Replay, RoomName, RoomSummary};
pub use store::{Closed, Loaded, LoadedRoom, Store, StoreError, StoreOptions, StoreStats, now_ms};
