//! `--read-rate`: a token bucket that paces how fast a receiver reads, to
//! play a slow consumer. A paced receiver that is out of budget leaves the
//! data in the kernel, so the server sees a full socket, as it would with a
//! slow client.
//!
//! mio is edge-triggered: a receiver that stopped with data still unread
//! gets no new event for it, so the event loop re-reads it when the bucket
//! is full again (`refilled_at`).

/// The bucket holds this much time's worth of bytes, and a paced receiver
/// reads only from a full bucket: one sip per 50 ms at most. Reading
/// whatever had trickled in would read a few bytes at a time, as fast as
/// the loop turns, for as long as data waits.
const BUCKET_NS: f64 = 50e6;

pub struct ReadPacing {
    bytes_per_sec: f64,
    capacity: f64,
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated_at: u64,
}

impl ReadPacing {
    /// A full bucket for `bytes_per_sec`; `most_per_read` caps its size.
    pub fn new(bytes_per_sec: f64, most_per_read: usize, now: u64) -> Self {
        let capacity = (bytes_per_sec * BUCKET_NS / 1e9).clamp(1.0, most_per_read as f64);
        ReadPacing { bytes_per_sec, capacity, tokens: capacity, updated_at: now }
    }

    fn refill(&mut self, now: u64) {
        let elapsed = now.saturating_sub(self.updated_at) as f64;
        self.tokens = (self.tokens + elapsed * self.bytes_per_sec / 1e9).min(self.capacity);
        self.updated_at = self.updated_at.max(now);
    }

    /// Bytes that may be read now: the bucket when it is full, else none.
    pub fn allowance(&mut self, now: u64) -> usize {
        self.refill(now);
        if self.tokens >= self.capacity { self.tokens as usize } else { 0 }
    }

    pub fn spend(&mut self, bytes: usize) {
        self.tokens -= bytes as f64;
    }

    /// When the bucket will be full again: the time to read on.
    pub fn refilled_at(&self) -> u64 {
        let missing = (self.capacity - self.tokens).max(0.0);
        self.updated_at + (missing * 1e9 / self.bytes_per_sec).ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_holds_50_ms_of_reading_capped_by_one_read() {
        let mut pacing = ReadPacing::new(1_000_000.0, 64 * 1024, 0);
        assert_eq!(pacing.allowance(0), 50_000);
        let mut fast = ReadPacing::new(1e9, 64 * 1024, 0);
        assert_eq!(fast.allowance(0), 64 * 1024);
        let mut slow = ReadPacing::new(1.0, 64 * 1024, 0);
        assert_eq!(slow.allowance(0), 1, "never an empty bucket, which would never read");
    }

    #[test]
    fn spending_waits_for_the_refill() {
        let mut pacing = ReadPacing::new(1_000_000.0, 64 * 1024, 1_000);
        pacing.spend(50_000);
        assert_eq!(pacing.allowance(1_000), 0);
        // 1 MB/s is 1 byte per microsecond.
        assert_eq!(pacing.refilled_at(), 1_000 + 50_000_000);
        assert_eq!(pacing.allowance(1_000 + 10_000_000), 0, "no sip from a bucket a fifth full");
        assert_eq!(pacing.allowance(1_000 + 49_999_999), 0);
        assert_eq!(pacing.allowance(1_000 + 50_000_000), 50_000);
        // A short read leaves the rest of the bucket: full again sooner.
        pacing.spend(20_000);
        assert_eq!(pacing.refilled_at(), 1_000 + 70_000_000);
        // Idle time beyond a full bucket is not saved up.
        assert_eq!(pacing.allowance(10_000_000_000), 50_000);
    }

    #[test]
    fn reading_more_than_allowed_is_paid_back_first() {
        let mut pacing = ReadPacing::new(1_000_000.0, 64 * 1024, 0);
        pacing.spend(60_000);
        assert_eq!(pacing.allowance(5_000_000), 0, "10 kB in debt, 5 kB refilled");
        assert_eq!(pacing.refilled_at(), 5_000_000 + 55_000_000);
        assert_eq!(pacing.allowance(59_999_999), 0);
        assert_eq!(pacing.allowance(60_000_000), 50_000);
    }

    #[test]
    fn over_a_second_the_rate_is_kept() {
        let rate = 1_000_000.0;
        let mut pacing = ReadPacing::new(rate, 64 * 1024, 0);
        let (mut now, mut read) = (0u64, 0usize);
        while now < 1_000_000_000 {
            let n = pacing.allowance(now);
            pacing.spend(n);
            read += n;
            now = pacing.refilled_at();
        }
        // The full bucket it starts with stands for the first 50 ms.
        assert!((read as f64 - rate).abs() < 0.01 * rate, "{read} bytes in 1 s");
    }

    #[test]
    fn asking_constantly_gives_few_large_reads() {
        // The event loop may ask at every turn: it must not get a trickle.
        let rate = 1_000_000.0;
        let mut pacing = ReadPacing::new(rate, 64 * 1024, 0);
        let (mut reads, mut read) = (0, 0);
        for now in (0..1_000_000_000u64).step_by(10_000) {
            let n = pacing.allowance(now);
            if n > 0 {
                pacing.spend(n);
                reads += 1;
                read += n;
            }
        }
        assert_eq!(reads, 20, "one read per 50 ms");
        assert!((read as f64 - rate).abs() < 0.01 * rate, "{read} bytes in 1 s");
    }
}
