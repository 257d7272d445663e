//! Discrete distributions by cumulative table: a weighted choice and Zipf.

use crate::rng::Rng;

/// Samples an index with probability proportional to its weight: a
/// precomputed cumulative table and a binary search (O(log n) per draw, no
/// allocation).
#[derive(Clone, Debug)]
pub struct Cdf {
    cumulative: Vec<f64>,
}

impl Cdf {
    /// A table from non-negative weights; at least one must be positive.
    pub fn new(weights: impl IntoIterator<Item = f64>) -> Cdf {
        let mut total = 0.0;
        let cumulative: Vec<f64> = weights
            .into_iter()
            .map(|w| {
                total += w.max(0.0);
                total
            })
            .collect();
        assert!(total > 0.0, "a weighted choice needs a positive weight");
        Cdf { cumulative }
    }

    /// Zipf over ranks `1..=n`: P(k) ∝ 1 / (k + offset)^exponent. An offset
    /// above zero (Zipf-Mandelbrot) flattens the very top so the first rank is
    /// not an implausible share of everything.
    pub fn zipf(n: usize, exponent: f64, offset: f64) -> Cdf {
        Cdf::new((1..=n).map(|k| 1.0 / (k as f64 + offset).powf(exponent)))
    }

    /// The probability of outcome `i`.
    #[cfg(test)]
    pub fn probability(&self, i: usize) -> f64 {
        let prev = if i == 0 { 0.0 } else { self.cumulative[i - 1] };
        (self.cumulative[i] - prev) / self.total()
    }

    fn total(&self) -> f64 {
        self.cumulative.last().copied().unwrap_or(0.0)
    }

    /// Draws an outcome index.
    #[inline]
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let x = rng.f64() * self.total();
        let i = self.cumulative.partition_point(|&c| c <= x);
        i.min(self.cumulative.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_choice_follows_weights() {
        let cdf = Cdf::new([1.0, 0.0, 3.0]);
        let mut rng = Rng::new(3);
        let mut counts = [0u32; 3];
        for _ in 0..40_000 {
            counts[cdf.sample(&mut rng)] += 1;
        }
        assert_eq!(counts[1], 0);
        let share = f64::from(counts[2]) / 40_000.0;
        assert!((share - 0.75).abs() < 0.02, "{share}");
        assert!((cdf.probability(2) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn zipf_is_skewed_towards_low_ranks() {
        let cdf = Cdf::zipf(1000, 1.0, 0.0);
        let top10: f64 = (0..100).map(|i| cdf.probability(i)).sum();
        assert!(top10 > 0.6, "{top10}");
        assert!(cdf.probability(0) > cdf.probability(1));
        let mut rng = Rng::new(9);
        let mut first = 0;
        for _ in 0..10_000 {
            if cdf.sample(&mut rng) == 0 {
                first += 1;
            }
        }
        // P(rank 1) = 1 / H(1000) ≈ 0.134
        assert!((1_200..1_500).contains(&first), "{first}");
    }
}
