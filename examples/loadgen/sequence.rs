//! Loss, duplicate and reorder accounting: what one receiver has seen of one
//! sender's numbered messages, in sixteen bytes.

/// Highest sequence number seen + 1, and a bitmap of the 64 numbers just
/// below it, so a late or repeated message is told apart from a new one.
#[derive(Clone, Copy, Default)]
pub struct SenderTrack {
    pub next: u64,
    bits: u64,
    /// This sender's barrier marker has arrived.
    pub marker: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Above everything seen so far.
    New,
    /// A first copy, after a higher number.
    Late,
    Duplicate,
}

impl SenderTrack {
    #[inline]
    pub fn arrive(&mut self, seq: u64) -> Arrival {
        if seq >= self.next {
            let shift = seq + 1 - self.next;
            self.bits = (if shift >= 64 { 0 } else { self.bits << shift }) | 1;
            self.next = seq + 1;
            Arrival::New
        } else {
            let back = self.next - 1 - seq;
            if back >= 64 {
                // Too far behind to tell; count it as a late first arrival.
                return Arrival::Late;
            }
            let bit = 1u64 << back;
            if self.bits & bit != 0 {
                Arrival::Duplicate
            } else {
                self.bits |= bit;
                Arrival::Late
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_counts_late_and_duplicate_arrivals() {
        let mut t = SenderTrack::default();
        assert_eq!(t.arrive(0), Arrival::New);
        assert_eq!(t.arrive(2), Arrival::New);
        assert_eq!(t.arrive(1), Arrival::Late);
        assert_eq!(t.arrive(1), Arrival::Duplicate);
        assert_eq!(t.arrive(2), Arrival::Duplicate);
        assert_eq!(t.arrive(100), Arrival::New);
        assert_eq!(t.arrive(40), Arrival::Late);
        assert_eq!(t.arrive(40), Arrival::Duplicate);
        assert_eq!(t.arrive(3), Arrival::Late);
        assert_eq!(t.next, 101);
    }

    #[test]
    fn track_window_edge_is_64_back() {
        let mut t = SenderTrack::default();
        assert_eq!(t.arrive(63), Arrival::New);
        // 0 is exactly 63 below the top: still inside the bitmap.
        assert_eq!(t.arrive(0), Arrival::Late);
        assert_eq!(t.arrive(0), Arrival::Duplicate);
        assert_eq!(t.arrive(64), Arrival::New);
        // Now 0 is 64 below: outside, so it cannot be called a duplicate.
        assert_eq!(t.arrive(0), Arrival::Late);
        assert_eq!(t.arrive(63), Arrival::Duplicate);
    }
}
