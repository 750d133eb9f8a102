//! Smooth random 3D fields (sums of random plane waves) for anatomical variation, blood
//! flow heterogeneity, lesion boundary irregularity and territory borders.
//!
//! A field is defined everywhere in head coordinates (mm), so two slabs of one patient
//! sample the same field and agree where they meet.

use strokeseg_shared::rng::Rng;

/// One plane wave `amp · cos(k · p + phase)`.
#[derive(Debug, Clone, Copy)]
struct Wave {
    k_per_mm: [f64; 3],
    phase: f64,
    amp: f64,
}

/// A smooth zero-mean random field with unit variance (over random positions) whose
/// features are `wavelength_mm` long: `f(p) = Σ aᵢ cos(kᵢ·p + φᵢ)`, |f| ≤ about 2.5.
#[derive(Debug, Clone)]
pub(crate) struct SmoothField {
    waves: Vec<Wave>,
}

impl SmoothField {
    /// `n_waves` waves with random directions and wavelengths in
    /// `wavelength_mm.0 .. wavelength_mm.1`. More waves look more irregular.
    pub(crate) fn new(rng: &mut Rng, n_waves: usize, wavelength_mm: (f64, f64)) -> SmoothField {
        let mut waves = Vec::with_capacity(n_waves);
        let mut sum_sq = 0.0;
        for _ in 0..n_waves {
            let dir = rng.unit_vector();
            let lambda_mm = rng.uniform(wavelength_mm.0, wavelength_mm.1);
            let k = core::f64::consts::TAU / lambda_mm;
            let amp = rng.uniform(0.5, 1.0);
            sum_sq += amp * amp;
            waves.push(Wave {
                k_per_mm: [dir[0] * k, dir[1] * k, dir[2] * k],
                phase: rng.uniform(0.0, core::f64::consts::TAU),
                amp,
            });
        }
        // Var(Σ aᵢ cos) = Σ aᵢ²/2: normalise to unit variance.
        let norm = if sum_sq > 0.0 {
            libm::sqrt(2.0 / sum_sq)
        } else {
            0.0
        };
        for w in &mut waves {
            w.amp *= norm;
        }
        SmoothField { waves }
    }

    /// Root-mean-square magnitude of the gradient, 1/mm: `√(Σ aᵢ² |kᵢ|² / 2)`.
    pub(crate) fn rms_gradient_per_mm(&self) -> f64 {
        let s: f64 = self
            .waves
            .iter()
            .map(|w| {
                let k2: f64 = w.k_per_mm.iter().map(|k| k * k).sum();
                w.amp * w.amp * k2
            })
            .sum();
        libm::sqrt(0.5 * s)
    }

    /// The field at `p_mm` (head coordinates).
    pub(crate) fn at(&self, p_mm: [f64; 3]) -> f64 {
        self.waves
            .iter()
            .map(|w| {
                let arg = w.k_per_mm[0] * p_mm[0]
                    + w.k_per_mm[1] * p_mm[1]
                    + w.k_per_mm[2] * p_mm[2]
                    + w.phase;
                w.amp * libm::cos(arg)
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_variance_and_smooth() {
        let mut rng = Rng::new(3);
        let f = SmoothField::new(&mut rng, 8, (20.0, 40.0));
        let (mut s, mut s2, mut max_step) = (0.0, 0.0, 0.0f64);
        let n = 20_000;
        for i in 0..n {
            let p = [
                rng.uniform(-500.0, 500.0),
                rng.uniform(-500.0, 500.0),
                f64::from(i as u32 % 100),
            ];
            let v = f.at(p);
            s += v;
            s2 += v * v;
            let q = [p[0] + 0.5, p[1], p[2]];
            max_step = max_step.max((f.at(q) - v).abs());
        }
        let mean = s / f64::from(n);
        let var = s2 / f64::from(n) - mean * mean;
        assert!(mean.abs() < 0.1, "{mean}");
        assert!((var - 1.0).abs() < 0.25, "{var}");
        assert!(
            max_step < 0.3,
            "half a millimetre moves the field by {max_step}"
        );
    }
}
