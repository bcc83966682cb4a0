//! The latency histogram: every delivery's latency lands in one fixed array,
//! so recording allocates nothing however many messages go by.

/// Sub-buckets per power of two, as a power of two: 2^6 = 64 keeps the
/// error under 1.6%.
const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
pub const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

/// Log-linear histogram of nanoseconds: exact below 128, then 64 buckets per
/// power of two.
pub struct Histogram {
    counts: Vec<u64>,
    pub count: u64,
    sum: u128,
    pub max: u64,
}

impl Histogram {
    pub fn new() -> Self {
        Histogram { counts: vec![0; BUCKETS], count: 0, sum: 0, max: 0 }
    }

    pub fn clear(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.count = 0;
        self.sum = 0;
        self.max = 0;
    }

    pub fn index(value: u64) -> usize {
        if value < (2 * SUB) as u64 {
            value as usize
        } else {
            let shift = 63 - value.leading_zeros() - SUB_BITS;
            (shift as usize + 1) * SUB + ((value >> shift) as usize - SUB)
        }
    }

    /// Lowest value and width of bucket `i`.
    pub fn bucket(i: usize) -> (u64, u64) {
        if i < 2 * SUB {
            (i as u64, 1)
        } else {
            let shift = (i / SUB - 1) as u32;
            (((SUB + i % SUB) as u64) << shift, 1u64 << shift)
        }
    }

    #[inline]
    pub fn record(&mut self, value: u64) {
        self.counts[Self::index(value)] += 1;
        self.count += 1;
        self.sum += value as u128;
        if value > self.max {
            self.max = value;
        }
    }

    /// Value at quantile `q` (0..=1): the middle of its bucket, never above
    /// the largest sample, so a lone slow delivery reads as itself.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, width) = Self::bucket(i);
                return (low + width / 2).min(self.max);
            }
        }
        self.max
    }

    pub fn mean(&self) -> u64 {
        if self.count == 0 { 0 } else { (self.sum / self.count as u128) as u64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_continuous_and_tight() {
        let mut prev_end = 0;
        for i in 0..BUCKETS {
            let (low, width) = Histogram::bucket(i);
            assert_eq!(low, prev_end, "bucket {i}");
            assert_eq!(Histogram::index(low), i);
            // The last bucket ends at u64::MAX: `low + width` would overflow.
            assert_eq!(Histogram::index(low + (width - 1)), i);
            if low >= 128 {
                assert!((width as f64) / (low as f64) <= 1.0 / 64.0 + 1e-12);
            }
            prev_end = low.wrapping_add(width);
        }
        assert_eq!(Histogram::index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        let near = |q: f64, want: f64| {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.01, "q {q}: {got} vs {want}");
        };
        near(0.5, 50_000_000.0);
        near(0.99, 99_000_000.0);
        near(0.999, 99_900_000.0);
        assert_eq!(h.max, 100_000_000);
        assert_eq!(h.quantile(1.0), 100_000_000);
        assert_eq!(h.mean(), 50_000_500);
    }

    #[test]
    fn histogram_small_values_are_exact_and_clear_forgets() {
        let mut h = Histogram::new();
        assert_eq!((h.quantile(0.5), h.mean(), h.max), (0, 0, 0));
        for v in [3, 3, 3, 7, 100] {
            h.record(v);
        }
        assert_eq!(h.quantile(0.0), 3);
        assert_eq!(h.quantile(0.6), 3);
        assert_eq!(h.quantile(0.8), 7);
        assert_eq!(h.quantile(0.99), 100);
        assert_eq!(h.mean(), 116 / 5);
        // Its bucket's middle lies above this outlier: the quantile says the sample.
        h.record(1_000_000_007);
        assert_eq!(h.quantile(1.0), 1_000_000_007);
        h.clear();
        assert_eq!((h.count, h.max, h.quantile(0.5), h.mean()), (0, 0, 0, 0));
    }
}
