//! Flow control: back-pressure instead of cutting readers. Pure
//! bookkeeping, no sockets: the reactor tells it how outputs grow and
//! shrink, and asks it how much a sender may read.
//!
//! - A connection whose queued output passes the **high-water mark** is
//!   *congested* until it drains to the **low-water mark**. While a room
//!   has a congested member, the room is *paused*: the reactor reads
//!   nothing from its members, so their input waits in the kernel and TCP
//!   flow control slows the senders down. A room goes at the pace of its
//!   slowest member that still reads. Nothing is dropped.
//! - A congested member that makes no progress (no byte written) for
//!   `--slow-consumer-timeout` has stopped reading: it is cut, and the room
//!   goes on. The room is paused at most that long for it.
//! - While the bytes queued for all connections are at the global budget
//!   (`--max-queued-total`), the server is *saturated*: no sender is read
//!   until the total is back under three quarters of it, and a congested
//!   member that makes no progress for a tenth of the timeout is cut.
//! - **Bounded amplification**: one read is turned into at most
//!   `expansion × bytes` of output per recipient (a one-character line
//!   from a 32-character name becomes a 35-byte line), so the reactor
//!   reads no more than fits: what one read can produce, added to a queue
//!   at the high-water mark, stays under `--max-pending`, and, over all the
//!   members of the room, under what is left of the global budget.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::handshake::{MAX_HANDSHAKE_BYTES, MAX_NAME_CHARS};
use crate::rooms::{ConnId, RoomId};
use crate::session::deadline_after;

/// The most bytes a name can take (characters of up to four bytes).
const MAX_NAME_BYTES: usize = 4 * MAX_NAME_CHARS;
/// Output bytes per message besides its text and name: `:` and `\n`, or
/// a WebSocket frame header of up to 10 bytes around the same line.
const MESSAGE_OVERHEAD: usize = 12;
/// Text is at most three times its input: every byte that is not valid
/// UTF-8, or a control character, becomes U+FFFD (three bytes).
const TEXT_EXPANSION: usize = 3;
/// The smallest read worth making; a sender that cannot be given this
/// much waits until queues drain.
pub const MIN_READ: usize = 512;
/// Under memory pressure, a congested member with no progress for this
/// fraction of the slow-consumer timeout is cut.
const PRESSURE_TIMEOUT_DIVISOR: u32 = 10;

/// The bounds of flow control, derived from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowLimits {
    /// Above this, a connection's output is congested and its room paused.
    pub high_water: usize,
    /// At or below this, a congested output is fine again.
    pub low_water: usize,
    /// The hard cap per connection (`--max-pending`).
    pub max_pending: usize,
    /// The global budget (`--max-queued-total`).
    pub max_queued_total: usize,
    /// The most output one held message can become: a whole line of
    /// `--max-line` bytes completed by the next read.
    pub max_message_output: usize,
    /// How long a congested member may make no progress.
    pub slow_consumer_timeout: Duration,
}

impl FlowLimits {
    /// Derives the marks: the high-water mark is a quarter of the cap, or
    /// lower if a whole message and a minimal read must still fit above
    /// it. Refuses a cap too small for what one read can produce.
    pub fn new(
        max_pending: usize,
        max_line: usize,
        max_queued_total: usize,
        slow_consumer_timeout: Duration,
    ) -> Result<FlowLimits, String> {
        let max_message_output =
            TEXT_EXPANSION * max_line.max(MAX_HANDSHAKE_BYTES) + MAX_NAME_BYTES + MESSAGE_OVERHEAD;
        let one_read = max_message_output + MIN_READ * expansion(MAX_NAME_BYTES);
        let high_water = (max_pending / 4).min(max_pending.saturating_sub(one_read));
        if high_water < MIN_READ {
            return Err(format!(
                "--max-pending must be at least {} bytes with --max-line {max_line}: one read can produce {one_read} \
                 bytes of output per member, and queues need room above that",
                one_read + MIN_READ
            ));
        }
        if max_queued_total < max_pending {
            return Err(format!("--max-queued-total must be at least --max-pending ({max_pending} bytes)"));
        }
        Ok(FlowLimits {
            high_water,
            low_water: high_water / 2,
            max_pending,
            max_queued_total,
            max_message_output,
            slow_consumer_timeout,
        })
    }
}

/// Output bytes one input byte can become, for a sender whose name is
/// `name_bytes` long: text expansion, plus a message's overhead for every
/// two input bytes (the shortest line is one byte and its `\n`).
fn expansion(name_bytes: usize) -> usize {
    TEXT_EXPANSION + (name_bytes + MESSAGE_OVERHEAD).div_ceil(2)
}

/// Who wants to read, as flow control sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// Not in a room yet (handshake, HTTP). Its first messages may follow
    /// the handshake in the same read, into a room of any size, so it
    /// reads in the smallest slices until it is a member.
    Newcomer,
    /// A member of `room`, which has `members` members.
    Member {
        room: RoomId,
        members: usize,
        name_bytes: usize,
        /// Input already held until a message completes (an unfinished
        /// line or frame): the next read may complete it.
        held: usize,
    },
}

/// Whether a sender may read now, and how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    /// Read at most this many bytes.
    Read(usize),
    /// Not now: wait until the reason clears.
    Paused(Pause),
}

/// Why a sender is not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// A member of its room is congested.
    Room,
    /// The global budget is spent.
    Global,
}

/// Why a member was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutReason {
    /// Congested with no progress for `--slow-consumer-timeout`.
    Stalled,
    /// One append would have passed `--max-pending`.
    HardCap,
    /// Congested with no progress while the global budget was spent.
    GlobalBudget,
}

impl CutReason {
    /// Every reason, in counter order.
    pub const ALL: [CutReason; 3] = [CutReason::Stalled, CutReason::HardCap, CutReason::GlobalBudget];

    /// The metric label.
    pub const fn label(self) -> &'static str {
        match self {
            CutReason::Stalled => "stalled",
            CutReason::HardCap => "hard_cap",
            CutReason::GlobalBudget => "global_budget",
        }
    }
}

/// A congested connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Congestion {
    /// The room it pauses, while it is a member.
    room: Option<RoomId>,
    /// The last time its output made progress (or became congested).
    progress: Instant,
}

/// Flow-control state: who is congested, which rooms are paused, whether
/// the server is saturated. Bounded by the number of connections (one
/// entry per congested connection, one per room with one).
#[derive(Debug)]
pub struct Flow {
    limits: FlowLimits,
    congested: HashMap<ConnId, Congestion>,
    /// Congested members per paused room.
    paused_rooms: HashMap<RoomId, usize>,
    /// Since when the global budget has been spent.
    saturated_since: Option<Instant>,
    /// A sender waits for the total to drain to this (its room is too big
    /// for what is left of the budget).
    drain_target: Option<usize>,
    /// Set when a pause ends: deferred senders should be read again.
    resumed: bool,
    /// When each paused room was paused, for the time-paused counter.
    paused_since: HashMap<RoomId, Instant>,
    /// Total time rooms or the server spent paused, completed pauses only.
    paused_time: Duration,
}

impl Flow {
    pub fn new(limits: FlowLimits) -> Flow {
        Flow {
            limits,
            congested: HashMap::new(),
            paused_rooms: HashMap::new(),
            saturated_since: None,
            drain_target: None,
            resumed: false,
            paused_since: HashMap::new(),
            paused_time: Duration::ZERO,
        }
    }

    pub fn limits(&self) -> &FlowLimits {
        &self.limits
    }

    /// How much `sender` may read now, given `total` bytes queued.
    pub fn allowance(&self, sender: Sender, total: usize) -> Allowance {
        if self.saturated_since.is_some() {
            return Allowance::Paused(Pause::Global);
        }
        let limits = &self.limits;
        let per_member = limits.max_pending - limits.high_water;
        let global_left = limits.max_queued_total.saturating_sub(total);
        let (members, name_bytes, held_output) = match sender {
            Sender::Newcomer => return Allowance::Read(MIN_READ),
            Sender::Member { room, members, name_bytes, held } => {
                if self.paused_rooms.contains_key(&room) {
                    return Allowance::Paused(Pause::Room);
                }
                let held_output = TEXT_EXPANSION * held + name_bytes + MESSAGE_OVERHEAD;
                (members.max(1), name_bytes, held_output)
            }
        };
        let room_per_member = per_member.min(global_left / members);
        let slice = room_per_member.saturating_sub(held_output) / expansion(name_bytes);
        if slice >= MIN_READ {
            Allowance::Read(slice)
        } else if total == 0 {
            // Nothing is queued anywhere: a message too big for the budget
            // in this room must still go through, once, or the room would
            // wait for ever.
            Allowance::Read(MIN_READ)
        } else {
            Allowance::Paused(Pause::Global)
        }
    }

    /// A connection's output grew to `queued` bytes. Returns whether it
    /// just became congested.
    pub fn grew(&mut self, id: ConnId, room: Option<RoomId>, queued: usize, now: Instant) -> bool {
        if queued <= self.limits.high_water || self.congested.contains_key(&id) {
            return false;
        }
        self.congested.insert(id, Congestion { room, progress: now });
        if let Some(room) = room {
            let count = self.paused_rooms.entry(room).or_insert(0);
            *count += 1;
            if *count == 1 {
                self.paused_since.insert(room, now);
            }
        }
        true
    }

    /// Bytes of a connection's output were written; `queued` are left.
    /// Only needs calling when the output was above the low-water mark.
    pub fn shrank(&mut self, id: ConnId, queued: usize, now: Instant) {
        if queued <= self.limits.low_water {
            self.forget(id, now);
        } else if let Some(congestion) = self.congested.get_mut(&id) {
            congestion.progress = now;
        }
    }

    /// Whether a connection with this much queued may be congested (so
    /// [`Flow::shrank`] needs calling after a write).
    pub fn may_be_congested(&self, queued_before: usize) -> bool {
        queued_before > self.limits.low_water
    }

    /// The member left its room: its output no longer pauses the room.
    pub fn left_room(&mut self, id: ConnId, now: Instant) {
        if let Some(congestion) = self.congested.get_mut(&id)
            && let Some(room) = congestion.room.take()
        {
            self.unpause_room(room, now);
        }
    }

    /// The connection is gone (or its output was emptied).
    pub fn forget(&mut self, id: ConnId, now: Instant) {
        if let Some(Congestion { room: Some(room), .. }) = self.congested.remove(&id) {
            self.unpause_room(room, now);
        }
    }

    fn unpause_room(&mut self, room: RoomId, now: Instant) {
        if let Some(count) = self.paused_rooms.get_mut(&room) {
            *count -= 1;
            if *count == 0 {
                self.paused_rooms.remove(&room);
                if let Some(since) = self.paused_since.remove(&room) {
                    self.paused_time += now.saturating_duration_since(since);
                }
                self.resumed = true;
            }
        }
    }

    /// A sender was paused because what is left of the budget is too
    /// little for its room: it is read again once the total has halved.
    pub fn wait_for_drain(&mut self, total: usize) {
        let target = total / 2;
        self.drain_target = Some(self.drain_target.map_or(target, |old| old.min(target)));
    }

    /// The total queued changed: saturated at the budget, not again until
    /// it is back under three quarters of it.
    pub fn total_is(&mut self, total: usize, now: Instant) {
        if self.drain_target.is_some_and(|target| total <= target) {
            self.drain_target = None;
            self.resumed = true;
        }
        match self.saturated_since {
            None if total >= self.limits.max_queued_total => self.saturated_since = Some(now),
            Some(since) if total <= self.limits.max_queued_total / 4 * 3 => {
                self.saturated_since = None;
                self.paused_time += now.saturating_duration_since(since);
                self.resumed = true;
            }
            _ => {}
        }
    }

    /// Whether a pause ended since the last call (deferred senders should
    /// be read again).
    pub fn take_resumed(&mut self) -> bool {
        std::mem::take(&mut self.resumed)
    }

    /// When the member must be cut if it makes no progress, if it is
    /// congested. A connection that left its room (it is closing) holds no
    /// one back and is not cut for stalling.
    pub fn stall_deadline(&self, id: ConnId) -> Option<Instant> {
        let congestion = self.congested.get(&id).filter(|congestion| congestion.room.is_some())?;
        Some(deadline_after(congestion.progress, self.stall_timeout()))
    }

    /// Whether the member is congested and has made no progress for too
    /// long at `now`, and why it must be cut.
    pub fn stalled(&self, id: ConnId, now: Instant) -> Option<CutReason> {
        let congestion = self.congested.get(&id).filter(|congestion| congestion.room.is_some())?;
        if now < deadline_after(congestion.progress, self.stall_timeout()) {
            return None;
        }
        Some(if self.saturated_since.is_some() { CutReason::GlobalBudget } else { CutReason::Stalled })
    }

    fn stall_timeout(&self) -> Duration {
        let timeout = self.limits.slow_consumer_timeout;
        if self.saturated_since.is_some() { timeout / PRESSURE_TIMEOUT_DIVISOR } else { timeout }
    }

    /// Connections whose output is congested now.
    pub fn congested(&self) -> usize {
        self.congested.len()
    }

    /// Rooms paused now.
    pub fn paused_rooms(&self) -> usize {
        self.paused_rooms.len()
    }

    /// Whether the global budget is spent.
    pub fn is_saturated(&self) -> bool {
        self.saturated_since.is_some()
    }

    /// Time rooms (or the whole server) spent paused, ongoing pauses
    /// included up to `now`.
    pub fn paused_time(&self, now: Instant) -> Duration {
        let ongoing: Duration =
            self.paused_since.values().map(|since| now.saturating_duration_since(*since)).sum();
        let saturated =
            self.saturated_since.map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        self.paused_time + ongoing + saturated
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{check_name, check_room};
    use crate::rooms::{Rooms, Transport};

    const MIB: usize = 1024 * 1024;

    fn limits() -> FlowLimits {
        FlowLimits::new(MIB, 64 * 1024, 64 * MIB, Duration::from_secs(10)).unwrap()
    }

    fn room() -> RoomId {
        let mut rooms = Rooms::new();
        let (room, name) = (check_room("dev").unwrap(), check_name("Mina").unwrap());
        rooms.join(&room, &name, ConnId(0), Transport::Tcp).unwrap()
    }

    fn member(room: RoomId, members: usize, name_bytes: usize, held: usize) -> Sender {
        Sender::Member { room, members, name_bytes, held }
    }

    #[test]
    fn what_one_read_can_produce_fits_above_the_high_water_mark() {
        let limits = limits();
        assert_eq!(limits.high_water, MIB / 4);
        let flow = Flow::new(limits);
        let room = room();
        for name_bytes in [1, 10, 32, MAX_NAME_BYTES] {
            for held in [0, 1000, 64 * 1024] {
                let Allowance::Read(bytes) = flow.allowance(member(room, 3, name_bytes, held), 0) else {
                    panic!("a fresh room reads")
                };
                // The worst output of that read: the held line completed,
                // then one-character lines.
                let worst =
                    TEXT_EXPANSION * held + name_bytes + MESSAGE_OVERHEAD + bytes * expansion(name_bytes);
                assert!(limits.high_water + worst <= MIB, "name {name_bytes}, held {held}: {worst}");
            }
        }
        // The example: a 32-character name sending "a\n" lines.
        let Allowance::Read(bytes) = flow.allowance(member(room, 4, 32, 0), 0) else { panic!() };
        assert!(bytes >= 16 * 1024, "a normal sender still reads in big slices: {bytes}");
    }

    #[test]
    fn the_global_budget_is_shared_by_the_room() {
        let limits = FlowLimits::new(MIB, 4096, 8 * MIB, Duration::from_secs(10)).unwrap();
        let flow = Flow::new(limits);
        let room = room();
        let Allowance::Read(small_room) = flow.allowance(member(room, 2, 8, 0), 0) else { panic!() };
        let Allowance::Read(big_room) = flow.allowance(member(room, 1000, 8, 0), 0) else { panic!() };
        assert!(big_room < small_room);
        assert!(1000 * big_room * expansion(8) <= 8 * MIB);
        // Nearly spent: wait, unless nothing at all is queued.
        assert_eq!(flow.allowance(member(room, 1000, 8, 0), 8 * MIB - 100), Allowance::Paused(Pause::Global));
        assert_eq!(flow.allowance(member(room, 100_000, 8, 0), 0), Allowance::Read(MIN_READ));
    }

    #[test]
    fn a_congested_member_pauses_its_room_until_it_drains() {
        let mut flow = Flow::new(limits());
        let room = room();
        let now = Instant::now();
        let reader = member(room, 2, 4, 0);
        assert!(!flow.grew(ConnId(1), Some(room), MIB / 4, now), "at the mark is not above it");
        assert!(flow.grew(ConnId(1), Some(room), MIB / 4 + 1, now));
        assert_eq!(flow.allowance(reader, MIB / 4), Allowance::Paused(Pause::Room));
        flow.shrank(ConnId(1), MIB / 8 + 1, now + Duration::from_secs(1));
        assert_eq!(
            flow.allowance(reader, MIB / 8),
            Allowance::Paused(Pause::Room),
            "not yet at the low mark"
        );
        assert!(!flow.take_resumed());
        flow.shrank(ConnId(1), MIB / 8, now + Duration::from_secs(2));
        assert!(matches!(flow.allowance(reader, MIB / 8), Allowance::Read(_)));
        assert!(flow.take_resumed());
        assert_eq!(flow.paused_time(now + Duration::from_secs(5)), Duration::from_secs(2));
    }

    #[test]
    fn a_member_that_makes_no_progress_is_stalled_after_the_timeout() {
        let mut flow = Flow::new(limits());
        let room = room();
        let start = Instant::now();
        flow.grew(ConnId(1), Some(room), MIB / 2, start);
        assert_eq!(flow.stall_deadline(ConnId(1)), Some(start + Duration::from_secs(10)));
        // Progress moves the deadline: a slow reader is not stalled.
        flow.shrank(ConnId(1), MIB / 2 - 1, start + Duration::from_secs(9));
        assert_eq!(flow.stalled(ConnId(1), start + Duration::from_secs(12)), None);
        assert_eq!(flow.stalled(ConnId(1), start + Duration::from_secs(19)), Some(CutReason::Stalled));
        // Under memory pressure the patience is a tenth.
        flow.total_is(64 * MIB, start + Duration::from_secs(10));
        assert_eq!(flow.stalled(ConnId(1), start + Duration::from_secs(10)), Some(CutReason::GlobalBudget));
        flow.left_room(ConnId(1), start + Duration::from_secs(10));
        assert_eq!(
            flow.stalled(ConnId(1), start + Duration::from_secs(20)),
            None,
            "a closing member is not cut twice"
        );
        assert_eq!(flow.stall_deadline(ConnId(1)), None);
        flow.forget(ConnId(1), start + Duration::from_secs(10));
        assert_eq!(flow.congested(), 0);
        assert_eq!(flow.paused_rooms(), 0);
    }

    #[test]
    fn leaving_the_room_unpauses_it_though_the_output_is_still_congested() {
        let mut flow = Flow::new(limits());
        let room = room();
        let now = Instant::now();
        flow.grew(ConnId(1), Some(room), MIB / 2, now);
        flow.grew(ConnId(2), Some(room), MIB / 2, now);
        flow.left_room(ConnId(1), now);
        assert_eq!(flow.paused_rooms(), 1, "the other congested member still pauses it");
        flow.left_room(ConnId(2), now);
        assert_eq!(flow.paused_rooms(), 0);
        assert_eq!(flow.congested(), 2, "their outputs are still being written");
        flow.forget(ConnId(1), now);
        flow.forget(ConnId(2), now);
        assert_eq!(flow.congested(), 0);
    }

    #[test]
    fn saturation_has_hysteresis() {
        let mut flow = Flow::new(limits());
        let now = Instant::now();
        flow.total_is(64 * MIB, now);
        assert_eq!(flow.allowance(Sender::Newcomer, 64 * MIB), Allowance::Paused(Pause::Global));
        flow.total_is(60 * MIB, now);
        assert!(flow.is_saturated());
        flow.total_is(48 * MIB, now);
        assert!(!flow.is_saturated());
        assert!(flow.take_resumed());
    }

    #[test]
    fn a_cap_too_small_for_one_read_is_refused() {
        let refused = FlowLimits::new(200 * 1024, 64 * 1024, MIB, Duration::from_secs(1)).unwrap_err();
        assert!(refused.contains("--max-pending must be at least"), "{refused}");
        assert!(FlowLimits::new(256 * 1024, 16 * 1024, MIB, Duration::from_secs(1)).is_ok());
        assert!(FlowLimits::new(MIB, 1024, MIB / 2, Duration::from_secs(1)).is_err());
    }
}
