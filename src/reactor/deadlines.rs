//! Deadlines without a thread: the poll timeout is the earliest deadline,
//! and at most one entry per connection is ever stored, so the set is
//! bounded by the number of connections, whatever the request rate.
//!
//! Each connection remembers the time of its entry (`armed`). A session's
//! deadline that moves later (a kept-alive HTTP connection answering its
//! next request, a WebSocket member heard from) leaves the entry as it is:
//! when it comes due, the reactor asks the session, which finds nothing
//! due yet, and the entry is re-armed at the new deadline. Only a deadline
//! that moves earlier replaces the entry, and one that goes away (a member
//! has none) removes it.

use std::collections::BTreeSet;
use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use crate::rooms::ConnId;

/// A deadline as the set stores it: whole milliseconds after the set's
/// epoch, rounded up (never early), plus one so that it is never zero. Eight
/// bytes in every connection instead of an `Instant`'s sixteen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Tick(NonZeroU64);

#[derive(Debug)]
pub(crate) struct Deadlines {
    epoch: Instant,
    entries: BTreeSet<(Tick, ConnId)>,
}

impl Deadlines {
    pub(crate) fn new(epoch: Instant) -> Deadlines {
        Deadlines { epoch, entries: BTreeSet::new() }
    }

    fn tick(&self, at: Instant, round_up: bool) -> Tick {
        let since = at.saturating_duration_since(self.epoch);
        let mut millis = since.as_millis() as u64;
        if round_up && since > Duration::from_millis(millis) {
            millis += 1;
        }
        Tick(NonZeroU64::MIN.saturating_add(millis))
    }

    fn instant(&self, tick: Tick) -> Instant {
        let millis = tick.0.get() - 1;
        self.epoch
            .checked_add(Duration::from_millis(millis))
            .unwrap_or(self.epoch + Duration::from_secs(1 << 32))
    }

    /// Makes sure `id` is woken no later than `wanted`, and not at all when
    /// nothing is wanted. `armed` is the connection's own record of its
    /// entry.
    pub(crate) fn arm(&mut self, id: ConnId, armed: &mut Option<Tick>, wanted: Option<Instant>) {
        let Some(wanted) = wanted else {
            // A member has no deadline: its handshake entry goes now, so
            // idle members cost the set nothing.
            self.disarm(id, armed);
            return;
        };
        let wanted = self.tick(wanted, true);
        match *armed {
            Some(at) if at <= wanted => {}
            Some(at) => {
                self.entries.remove(&(at, id));
                self.entries.insert((wanted, id));
                *armed = Some(wanted);
            }
            None => {
                self.entries.insert((wanted, id));
                *armed = Some(wanted);
            }
        }
    }

    /// Removes the connection's entry.
    pub(crate) fn disarm(&mut self, id: ConnId, armed: &mut Option<Tick>) {
        if let Some(at) = armed.take() {
            self.entries.remove(&(at, id));
        }
    }

    /// The earliest entry.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.entries.first().map(|&(at, _)| self.instant(at))
    }

    /// Takes the earliest entry if it is due at `now`. The caller clears
    /// that connection's `armed`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<ConnId> {
        let now = self.tick(now, false);
        match self.entries.first() {
            Some(&(at, _)) if at <= now => self.entries.pop_first().map(|(_, id)| id),
            _ => None,
        }
    }

    /// Entries stored (at most one per open connection).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn one_entry_per_connection_whatever_the_moves() {
        let start = Instant::now();
        let at = |secs| Some(start + Duration::from_secs(secs));
        let mut deadlines = Deadlines::new(start);
        let (a, b) = (ConnId(1), ConnId(2));
        let (mut armed_a, mut armed_b) = (None, None);
        // A deadline pushed later a thousand times (keep-alive requests)
        // keeps its one entry.
        for secs in 10..1010 {
            deadlines.arm(a, &mut armed_a, at(secs));
        }
        assert_eq!(deadlines.len(), 1);
        assert_eq!(deadlines.next(), at(10));
        // Earlier replaces.
        deadlines.arm(a, &mut armed_a, at(5));
        deadlines.arm(b, &mut armed_b, at(7));
        assert_eq!((deadlines.len(), deadlines.next()), (2, at(5)));
        assert_eq!(deadlines.pop_due(start + Duration::from_secs(4)), None);
        assert_eq!(deadlines.pop_due(start + Duration::from_secs(6)), Some(a));
        armed_a = None;
        deadlines.disarm(b, &mut armed_b);
        assert_eq!((deadlines.len(), armed_a, armed_b), (0, None, None));
        // No deadline wanted any more: the entry goes at once.
        deadlines.arm(a, &mut armed_a, at(3));
        deadlines.arm(a, &mut armed_a, None);
        assert_eq!((deadlines.len(), armed_a), (0, None));
    }
}
