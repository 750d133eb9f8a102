//! The trainer's own deterministic random numbers (SplitMix64): fold assignment, batch order,
//! lesion oversampling and every augmentation parameter come from here, never from libtorch's
//! process-global generator, so a run is a pure function of its seed on every device and a
//! resumed run draws exactly what the uninterrupted run would have drawn.
//!
//! Streams are derived, not advanced: `Rng::derive(seed, &[purpose, epoch, step])` gives the
//! stream of one step of one epoch, so skipping ahead (resume) costs nothing.

/// SplitMix64 (Steele, Lea & Flood 2014): 64-bit state, passes BigCrush, trivially seedable.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

/// Purposes of derived streams (the first word of [`Rng::derive`]'s path).
pub mod stream {
    /// Fold assignment of patients.
    pub const FOLDS: u64 = 1;
    /// Batch composition of one epoch.
    pub const SAMPLER: u64 = 2;
    /// Augmentation parameters of one training step.
    pub const AUGMENT: u64 = 3;
    /// Weight initialisation (seeds libtorch once, before the network is built).
    pub const INIT: u64 = 4;
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng {
            state: mix64(seed ^ 0x5EED_5EED_5EED_5EED),
        }
    }

    /// The independent stream of `seed` at `path` (e.g. `[stream::AUGMENT, epoch, step]`).
    pub fn derive(seed: u64, path: &[u64]) -> Rng {
        let mut state = mix64(seed ^ 0x5EED_5EED_5EED_5EED);
        for &word in path {
            state = mix64(state.wrapping_add(GOLDEN_GAMMA) ^ mix64(word.wrapping_add(1)));
        }
        Rng { state }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix64(self.state)
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[low, high)`.
    pub fn uniform_in(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.uniform()
    }

    /// `true` with probability `p` (clamped to `[0, 1]`).
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Standard normal (Box–Muller, one value per call).
    pub fn normal(&mut self) -> f64 {
        // 1 − u is in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Uniform integer in `0..n` (`n > 0`; 0 when `n == 0`), by rejection (no modulo bias).
    pub fn below(&mut self, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        let n = n as u64;
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return (x % n) as usize;
            }
        }
    }

    /// Fisher–Yates shuffle in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::derive(7, &[stream::AUGMENT, 3, 9]);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::derive(7, &[stream::AUGMENT, 3, 9]);
                move |_| r.next_u64()
            })
            .collect();
        let c = Rng::derive(7, &[stream::AUGMENT, 3, 10]).next_u64();
        assert_eq!(a, b);
        assert_ne!(a[0], c);
    }

    #[test]
    fn uniform_and_normal_have_the_right_moments() {
        let mut r = Rng::new(1);
        let n = 20_000;
        let u: Vec<f64> = (0..n).map(|_| r.uniform()).collect();
        let mean = u.iter().sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        assert!(u.iter().all(|x| (0.0..1.0).contains(x)));
        let z: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let m = z.iter().sum::<f64>() / n as f64;
        let v = z.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n as f64;
        assert!(m.abs() < 0.03 && (v - 1.0).abs() < 0.05, "{m} {v}");
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut v: Vec<usize> = (0..50).collect();
        Rng::new(3).shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(v, sorted);
        assert_eq!(Rng::new(3).below(0), 0);
    }
}
