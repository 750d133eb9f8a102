//! The project's one deterministic, platform-independent random number generator (no_std):
//! SplitMix64 for seeding and hashing, xoshiro256** for streams, Box–Muller for gaussians.
//! The phantom generator, the trainer (folds, batch order, augmentation) and the HIL fixture
//! draw from it, never from a process-global generator.
//!
//! Streams are derived, not advanced: `Rng::stream(seed, &[purpose, i, j])` is the stream of
//! one purpose and index path, so adding draws to one stream never changes another and
//! skipping ahead (a resumed training run) costs nothing. Every draw uses integer arithmetic
//! and `libm` (pure Rust, the same bits on every platform), so a seed gives byte-identical
//! phantoms on x86-64 and aarch64.

/// One step of SplitMix64 (Steele, Lea & Flood 2014): a bijective 64-bit mixer.
pub const fn splitmix64(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Derives an independent stream seed from a dataset seed and a path of labels
/// (`[TAG_PATIENT, patient_index]`, …). Different paths give unrelated seeds.
pub fn derive_seed(seed: u64, path: &[u64]) -> u64 {
    let mut h = splitmix64(seed ^ 0x5EED_0F57_0CE5_E600);
    for &p in path {
        h = splitmix64(h ^ splitmix64(p.wrapping_add(0x1234_5678_9ABC_DEF1)));
    }
    h
}

/// xoshiro256** (Blackman & Vigna 2018): a fast 256-bit-state generator, seeded through
/// SplitMix64 so that any `u64` seed (including 0) gives a good state.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
    /// A second Box–Muller value kept for the next [`Rng::normal`] call.
    spare_normal: Option<f64>,
}

impl Rng {
    /// A generator whose whole output is a function of `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut s = [0u64; 4];
        for v in &mut s {
            *v = splitmix64(x);
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        }
        Rng {
            s,
            spare_normal: None,
        }
    }

    /// A generator for the stream `path` of dataset `seed` (see [`derive_seed`]).
    pub fn stream(seed: u64, path: &[u64]) -> Rng {
        Rng::new(derive_seed(seed, path))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// Log-uniform in `[lo, hi)`; both must be positive.
    pub fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        libm::exp(self.uniform(libm::log(lo), libm::log(hi)))
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// Uniform integer in `[0, n)` (0 when `n` is 0). Uses the multiply-shift method (bias
    /// below 2⁻⁶⁴·n, irrelevant here).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Standard normal by the Box–Muller transform (both values used).
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        // u1 in (0, 1]: log(u1) is finite.
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        let r = libm::sqrt(-2.0 * libm::log(u1));
        let phi = core::f64::consts::TAU * u2;
        self.spare_normal = Some(r * libm::sin(phi));
        r * libm::cos(phi)
    }

    /// Index drawn with probability proportional to `weights` (non-negative, not all 0);
    /// returns 0 if they sum to 0.
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        if total <= 0.0 {
            return 0;
        }
        let mut x = self.next_f64() * total;
        for (i, &w) in weights.iter().enumerate() {
            if x < w {
                return i;
            }
            x -= w;
        }
        weights.len().saturating_sub(1)
    }

    /// Fisher–Yates shuffle in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }

    /// A uniformly random unit vector in 3D.
    pub fn unit_vector(&mut self) -> [f64; 3] {
        let z = self.uniform(-1.0, 1.0);
        let phi = self.uniform(0.0, core::f64::consts::TAU);
        let r = libm::sqrt((1.0 - z * z).max(0.0));
        [r * libm::cos(phi), r * libm::sin(phi), z]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_reference_values() {
        // Reference: the first outputs of SplitMix64 seeded with 0 (Vigna's splitmix64.c).
        let mut state = 0u64;
        let mut next = || {
            let out = splitmix64(state);
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            out
        };
        assert_eq!(next(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(next(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::stream(7, &[2, 3]);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::stream(7, &[2, 3]);
                move |_| r.next_u64()
            })
            .collect();
        let c: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::stream(7, &[2, 4]);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn uniform_and_normal_moments() {
        let mut r = Rng::new(42);
        let n = 200_000;
        let (mut su, mut sn, mut sn2) = (0.0, 0.0, 0.0);
        for _ in 0..n {
            let u = r.next_f64();
            assert!((0.0..1.0).contains(&u));
            su += u;
            let z = r.normal();
            sn += z;
            sn2 += z * z;
        }
        let n = n as f64;
        assert!((su / n - 0.5).abs() < 0.005);
        assert!((sn / n).abs() < 0.01);
        assert!((sn2 / n - 1.0).abs() < 0.02);
    }

    #[test]
    fn weighted_and_below_stay_in_range() {
        let mut r = Rng::new(1);
        let mut counts = [0usize; 3];
        for _ in 0..30_000 {
            counts[r.weighted(&[1.0, 0.0, 3.0])] += 1;
            assert!(r.below(5) < 5);
        }
        assert_eq!(counts[1], 0);
        let ratio = counts[2] as f64 / counts[0] as f64;
        assert!((ratio - 3.0).abs() < 0.2, "{ratio}");
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut v: [u32; 50] = core::array::from_fn(|i| i as u32);
        Rng::new(3).shuffle(&mut v);
        let mut sorted = v;
        sorted.sort_unstable();
        assert_eq!(sorted, core::array::from_fn(|i| i as u32));
        assert_ne!(v, sorted);
        assert_eq!(Rng::new(3).below(0), 0);
    }
}
