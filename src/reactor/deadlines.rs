//! Deadlines without a thread: the poll timeout is the earliest deadline,
//! and at most one entry per connection is ever stored, so the set is
//! bounded by the number of connections, whatever the request rate.
//!
//! Each connection remembers the instant of its entry (`armed`). A
//! session's deadline that moves later (a kept-alive HTTP connection
//! answering its next request) leaves the entry as it is: when it comes
//! due, the reactor asks the session, which finds nothing due yet, and the
//! entry is re-armed at the new deadline. Only a deadline that moves
//! earlier replaces the entry.

use std::collections::BTreeSet;
use std::time::Instant;

use crate::rooms::ConnId;

#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    entries: BTreeSet<(Instant, ConnId)>,
}

impl Deadlines {
    /// Makes sure `id` is woken no later than `wanted`. `armed` is the
    /// connection's own record of its entry.
    pub(crate) fn arm(&mut self, id: ConnId, armed: &mut Option<Instant>, wanted: Option<Instant>) {
        let Some(wanted) = wanted else { return };
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

    /// Removes the connection's entry (it is closing for good).
    pub(crate) fn disarm(&mut self, id: ConnId, armed: &mut Option<Instant>) {
        if let Some(at) = armed.take() {
            self.entries.remove(&(at, id));
        }
    }

    /// The earliest entry.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.entries.first().map(|&(at, _)| at)
    }

    /// Takes the earliest entry if it is due at `now`. The caller clears
    /// that connection's `armed`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<ConnId> {
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
        let mut deadlines = Deadlines::default();
        let (a, b) = (ConnId(1), ConnId(2));
        let (mut armed_a, mut armed_b) = (None, None);
        // A deadline pushed later a thousand times (keep-alive requests)
        // keeps its one entry.
        for secs in 10..1010 {
            deadlines.arm(a, &mut armed_a, at(secs));
        }
        assert_eq!((deadlines.len(), armed_a), (1, at(10)));
        // Earlier replaces.
        deadlines.arm(a, &mut armed_a, at(5));
        deadlines.arm(b, &mut armed_b, at(7));
        assert_eq!((deadlines.len(), deadlines.next()), (2, at(5)));
        assert_eq!(deadlines.pop_due(start + Duration::from_secs(4)), None);
        assert_eq!(deadlines.pop_due(start + Duration::from_secs(6)), Some(a));
        armed_a = None;
        deadlines.disarm(b, &mut armed_b);
        assert_eq!((deadlines.len(), armed_a, armed_b), (0, None, None));
    }
}
