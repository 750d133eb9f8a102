//! Deconvolution of a tissue enhancement curve by the arterial input function (AIF):
//! block-circulant SVD (Wu et al. 2003, MRM 50:164), insensitive to the tissue's delay
//! relative to the AIF, with a per-voxel truncation threshold chosen by the oscillation
//! index, or standard (lower-triangular) SVD (Østergaard et al. 1996, MRM 36:715) with a
//! fixed threshold for comparison.
//!
//! The AIF is factorised once per study ([`Basis`]): the block-circulant matrix in closed
//! form from its DFT (its singular vectors are the real Fourier modes of length
//! `L = 2 · n_frames`, `O(L²)`), the standard one by Jacobi SVD. Per voxel the work is the
//! frequency-domain filter restricted to the kept frequencies: [`Basis::project`] (the
//! curve's coefficients, `n_frames · k` multiply-adds for `k` kept components) and
//! [`Basis::fit`] (the residue rebuilt component by component along the threshold ladder,
//! `k · L`). The basis lives in caller storage (`S: AsRef<[f32]>`): three buffers of `L`,
//! `n_frames · L` and `L · L` values (with `alloc`, [`Basis::new`] owns them).

use super::curve::{TimeGrid, max_value, oscillation_index, refined_peak};
use super::svd::jacobi_svd;
use crate::error::CoreError;

/// Truncation thresholds (fractions of the largest singular value) the oscillation-index
/// search walks from high to low; it keeps the lowest one whose residue is still smooth.
/// It stops at 5 %: below that even the int16 rounding of a noise-free series (±0.5 HU)
/// dominates the residue (phantom at 0 HU: rCBF error 7.8 % with the floor at 5 %, 10.7 %
/// at 1.5 %), and every component kept costs each voxel a projection and a smoothed channel.
pub const THRESHOLD_LADDER: [f32; 9] = [0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1, 0.075, 0.05];
/// Standard SVD threshold of Østergaard et al. 1996 (20 % of the largest singular value).
pub const OSTERGAARD_THRESHOLD: f32 = 0.2;
/// Default oscillation-index limit for block-circulant SVD. Wu et al. 2003 define the index
/// and pick its limit (0.035–0.095) from simulations at their MR data's SNR; on the strokeseg
/// phantom with CT perfusion noise (`shared/phantom/tests/perfusion_fidelity.rs`) 0.1 keeps
/// Tmax within 1 s up to 5 HU per frame, where 0.05 loses it (BENCHMARKS.md).
pub const DEFAULT_OSCILLATION_INDEX_MAX: f32 = 0.1;

/// How residues are computed.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DeconvolutionMethod {
    /// Block-circulant SVD; per voxel the lowest threshold of [`THRESHOLD_LADDER`] whose
    /// residue has an oscillation index ≤ `oscillation_index_max` (oSVD, Wu et al. 2003).
    BlockCirculant {
        /// Largest oscillation index accepted (dimensionless, > 0).
        oscillation_index_max: f32,
    },
    /// Block-circulant SVD with one fixed threshold (fraction of the largest singular value).
    BlockCirculantFixed {
        /// Truncation threshold, 0–1.
        threshold: f32,
    },
    /// Standard SVD of the lower-triangular convolution matrix, one fixed threshold; biased
    /// by a delay between tissue and AIF.
    Standard {
        /// Truncation threshold, 0–1 (Østergaard: [`OSTERGAARD_THRESHOLD`]).
        threshold: f32,
    },
}

impl Default for DeconvolutionMethod {
    fn default() -> Self {
        DeconvolutionMethod::BlockCirculant {
            oscillation_index_max: DEFAULT_OSCILLATION_INDEX_MAX,
        }
    }
}

impl DeconvolutionMethod {
    /// Checks the method's parameter.
    pub fn validate(&self) -> Result<(), CoreError> {
        let ok = match *self {
            DeconvolutionMethod::BlockCirculant {
                oscillation_index_max,
            } => oscillation_index_max.is_finite() && oscillation_index_max > 0.0,
            DeconvolutionMethod::BlockCirculantFixed { threshold }
            | DeconvolutionMethod::Standard { threshold } => {
                threshold.is_finite() && threshold > 0.0 && threshold < 1.0
            }
        };
        if ok {
            Ok(())
        } else {
            Err(CoreError::InvalidConfig {
                reason: "deconvolution threshold or oscillation index out of range",
            })
        }
    }

    /// Length of the residue for `n_frames` frames: `2 · n_frames` for block-circulant,
    /// `n_frames` for standard SVD.
    pub fn residue_len(&self, n_frames: usize) -> usize {
        match self {
            DeconvolutionMethod::Standard { .. } => n_frames,
            _ => 2 * n_frames,
        }
    }
}

/// What deconvolving one voxel gave.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ResidueFit {
    /// Maximum of the flow-scaled residue `k_f · R(t)`, 1/s (before hematocrit and density).
    pub r_max_per_s: f32,
    /// Time of the maximum, s (parabolic sub-frame refinement; ≥ 0: a residue peaking
    /// before the AIF, in the wrapped-around half, counts as 0).
    pub tmax_s: f32,
    /// The truncation threshold used.
    pub threshold: f32,
    /// Oscillation index of the residue.
    pub oscillation_index: f32,
}

/// The SVD of the convolution matrix of one AIF: `D = U · diag(s) · Vᵀ`, stored as the
/// first `n_frames` rows of `U` (`ut`, `n_frames × L`, row-major), the rows of `Vᵀ`
/// (`vt`, `L × L`) and `s` (`L`), all f32, components by descending singular value.
#[derive(Debug, Clone)]
pub struct Basis<S> {
    grid: TimeGrid,
    method: DeconvolutionMethod,
    len: usize,
    s: S,
    ut: S,
    vt: S,
}

/// Buffer sizes of a basis: `(len, s, ut, vt, f64 work)` values.
pub fn basis_sizes(
    method: &DeconvolutionMethod,
    n_frames: usize,
) -> (usize, usize, usize, usize, usize) {
    let len = method.residue_len(n_frames);
    (len, len, len * n_frames, len * len, 2 * len * len + len)
}

impl<S: AsRef<[f32]> + AsMut<[f32]>> Basis<S> {
    /// Factorises the convolution matrix of `aif` (enhancement, HU, `grid.n_frames` values)
    /// into the caller's buffers (sizes from [`basis_sizes`]; `work` is f64 scratch).
    pub fn build_in(
        aif: &[f32],
        grid: TimeGrid,
        method: DeconvolutionMethod,
        mut s: S,
        mut ut: S,
        mut vt: S,
        work: &mut [f64],
    ) -> Result<Basis<S>, CoreError> {
        method.validate()?;
        let n = grid.n_frames;
        let (len, ls, lut, lvt, lwork) = basis_sizes(&method, n);
        let lengths = [
            ("aif", n, aif.len()),
            ("basis s", ls, s.as_ref().len()),
            ("basis ut", lut, ut.as_ref().len()),
            ("basis vt", lvt, vt.as_ref().len()),
            ("basis work", lwork, work.len()),
        ];
        for (what, expected, got) in lengths {
            if expected != got {
                return Err(CoreError::LengthMismatch {
                    what,
                    expected,
                    got,
                });
            }
        }
        if !aif.iter().all(|v| v.is_finite()) || !aif.iter().any(|&v| v > 0.0) {
            return Err(CoreError::NoBolus {
                aif_peak_hu: aif.iter().copied().fold(0.0, f32::max),
                min_peak_hu: 0.0,
            });
        }
        let (a, rest) = work.split_at_mut(len * len);
        let (v, sv) = rest.split_at_mut(len * len);
        let dt = f64::from(grid.dt_s);
        let circulant = !matches!(method, DeconvolutionMethod::Standard { .. });
        for i in 0..len {
            for j in 0..len {
                let lag = if circulant {
                    (i + len - j) % len
                } else if i >= j {
                    i - j
                } else {
                    usize::MAX
                };
                // The residue is piecewise constant over each frame interval and the AIF
                // piecewise linear: entry = ∫ over one interval = dt · (a[lag] + a[lag − 1]) / 2.
                let at = |k: usize| aif.get(k).map_or(0.0, |&x| f64::from(x));
                let prev = if lag == usize::MAX {
                    0.0
                } else if lag == 0 {
                    if circulant { at(len - 1) } else { 0.0 }
                } else {
                    at(lag - 1)
                };
                let cur = if lag == usize::MAX { 0.0 } else { at(lag) };
                a[i * len + j] = 0.5 * dt * (cur + prev);
            }
        }
        let (s_out, ut_out, vt_out) = (s.as_mut(), ut.as_mut(), vt.as_mut());
        if circulant {
            // The SVD of a circulant matrix is the DFT of its first column.
            for (i, c) in sv.iter_mut().enumerate() {
                *c = a[i * len];
            }
            circulant_svd(sv, n, v, s_out, ut_out, vt_out);
        } else {
            jacobi_svd(a, len, len, v, sv)?;
            for k in 0..len {
                s_out[k] = sv[k] as f32;
                for i in 0..n {
                    ut_out[i * len + k] = a[i * len + k] as f32;
                }
                for j in 0..len {
                    vt_out[k * len + j] = v[j * len + k] as f32;
                }
            }
        }
        Ok(Basis {
            grid,
            method,
            len,
            s,
            ut,
            vt,
        })
    }
}

/// The SVD of the `L × L` circulant matrix with first column `col` (`L` values), in closed
/// form: for frequency `f` (θ = 2πf/L) the DFT `λ_f = Σ_m col[m] e^{−iθm} = |λ_f| e^{iφ_f}`
/// gives `C cos(θk) = |λ_f| cos(θk + φ_f)` and `C sin(θk) = |λ_f| sin(θk + φ_f)`: singular
/// value `|λ_f|` (twice, for `0 < f < L/2`), right singular vectors the cosine and sine of
/// `f`, left ones the same shifted by `φ_f`. Components by descending singular value into
/// `s` (`L`), `ut` (the first `n` rows of `U`, `n × L`) and `vt` (`Vᵀ`, `L × L`); `work`
/// holds at least `3 · L` values. `O(L²)`, exact, no iteration.
fn circulant_svd(
    col: &[f64],
    n: usize,
    work: &mut [f64],
    s: &mut [f32],
    ut: &mut [f32],
    vt: &mut [f32],
) {
    use core::f64::consts::PI;
    let len = col.len();
    let (sigma, rest) = work.split_at_mut(len);
    let (phase, rest) = rest.split_at_mut(len);
    let order = &mut rest[..len];
    // Component j: frequency (j + 1) / 2, the cosine for odd j (and j = 0), the sine for
    // even j > 0; with L even the last component is the Nyquist frequency's cosine.
    let freq = |j: usize| j.div_ceil(2);
    let is_sine = |j: usize| j > 0 && j.is_multiple_of(2);
    for j in 0..len {
        let f = freq(j);
        let theta = 2.0 * PI * f as f64 / len as f64;
        let (mut re, mut im) = (0.0, 0.0);
        for (m, &c) in col.iter().enumerate() {
            let w = theta * m as f64;
            re += c * libm::cos(w);
            im -= c * libm::sin(w);
        }
        sigma[j] = libm::sqrt(re * re + im * im);
        phase[j] = libm::atan2(im, re);
        order[j] = j as f64;
    }
    // Insertion sort of the components by descending singular value (stable: a cosine
    // stays before its sine).
    for r in 1..len {
        let mut q = r;
        while q > 0 && sigma[order[q - 1] as usize] < sigma[order[q] as usize] {
            order.swap(q - 1, q);
            q -= 1;
        }
    }
    for r in 0..len {
        let j = order[r] as usize;
        let f = freq(j);
        let theta = 2.0 * PI * f as f64 / len as f64;
        let single = f == 0 || 2 * f == len;
        let norm = if single {
            libm::sqrt(1.0 / len as f64)
        } else {
            libm::sqrt(2.0 / len as f64)
        };
        s[r] = sigma[j] as f32;
        let shift = phase[j];
        for k in 0..len {
            let w = theta * k as f64;
            let (v, u) = if is_sine(j) {
                (libm::sin(w), libm::sin(w + shift))
            } else {
                (libm::cos(w), libm::cos(w + shift))
            };
            vt[r * len + k] = (norm * v) as f32;
            if k < n {
                ut[k * len + r] = (norm * u) as f32;
            }
        }
    }
}

#[cfg(feature = "alloc")]
impl Basis<alloc::vec::Vec<f32>> {
    /// [`Basis::build_in`] into owned buffers: `4 · (L + L·n + L²)` bytes kept, plus
    /// `8 · (2L² + L)` bytes while factorising (L = 100: 0.2 MB).
    pub fn new(
        aif: &[f32],
        grid: TimeGrid,
        method: DeconvolutionMethod,
    ) -> Result<Self, CoreError> {
        use alloc::vec;
        let (_, ls, lut, lvt, lwork) = basis_sizes(&method, grid.n_frames);
        let mut work = vec![0.0f64; lwork];
        Basis::build_in(
            aif,
            grid,
            method,
            vec![0.0; ls],
            vec![0.0; lut],
            vec![0.0; lvt],
            &mut work,
        )
    }
}

impl<S: AsRef<[f32]>> Basis<S> {
    /// The time grid.
    pub fn grid(&self) -> TimeGrid {
        self.grid
    }
    /// The method.
    pub fn method(&self) -> DeconvolutionMethod {
        self.method
    }
    /// Residue length `L`.
    pub fn residue_len(&self) -> usize {
        self.len
    }
    /// Singular values, descending.
    pub fn singular_values(&self) -> &[f32] {
        self.s.as_ref()
    }

    /// Components that the method's lowest threshold keeps: the length of the coefficient
    /// vectors [`Basis::project`] and [`Basis::fit`] work on.
    pub fn max_components(&self) -> usize {
        let lowest = match self.method {
            DeconvolutionMethod::BlockCirculant { .. } => {
                THRESHOLD_LADDER.iter().copied().fold(1.0, f32::min)
            }
            DeconvolutionMethod::BlockCirculantFixed { threshold }
            | DeconvolutionMethod::Standard { threshold } => threshold,
        };
        let s = self.s.as_ref();
        let limit = lowest * s.first().copied().unwrap_or(0.0);
        s.iter().take_while(|&&v| v >= limit && v > 0.0).count()
    }

    /// The tissue curve (enhancement, HU, `n_frames` values) in the deconvolution basis:
    /// `coef[k] = u_kᵀ · tissue / s_k` for the first `coef.len()` (≤
    /// [`Basis::max_components`]) components. Linear in `tissue`, so spatial smoothing of
    /// the coefficients equals smoothing the curves: this is the frequency-domain filter of
    /// the block-circulant method (its singular vectors are the real Fourier modes of length
    /// `L`, `svd::tests::circulant_singular_values_are_dft_moduli`), evaluated for the few
    /// kept frequencies only, `n_frames` multiply-adds each.
    pub fn project(&self, tissue: &[f32], coef: &mut [f32]) -> Result<(), CoreError> {
        let n = self.grid.n_frames;
        let kmax = self.max_components();
        if tissue.len() != n {
            return Err(CoreError::LengthMismatch {
                what: "tissue curve",
                expected: n,
                got: tissue.len(),
            });
        }
        if coef.len() > kmax {
            return Err(CoreError::LengthMismatch {
                what: "deconvolution coefficients",
                expected: kmax,
                got: coef.len(),
            });
        }
        let (s, ut) = (self.s.as_ref(), self.ut.as_ref());
        let (len, kept) = (self.len, coef.len());
        // Frame by frame: `coef += tissue[i] · U[i, ..kept]` (contiguous, vectorises).
        coef.iter_mut().for_each(|c| *c = 0.0);
        for (i, &c_i) in tissue.iter().enumerate() {
            let row = &ut[i * len..i * len + kept];
            coef.iter_mut().zip(row).for_each(|(c, &u)| *c += c_i * u);
        }
        coef.iter_mut().zip(s).for_each(|(c, &sk)| *c /= sk);
        Ok(())
    }

    /// Deconvolves `tissue` (enhancement, HU, `n_frames` values): the flow-scaled residue
    /// goes into `residue` (`L` values, 1/s); `scratch` holds `L` values.
    pub fn deconvolve(
        &self,
        tissue: &[f32],
        residue: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<ResidueFit, CoreError> {
        let mut coef = [0.0f32; 2 * super::curve::MAX_FRAMES];
        let coef = &mut coef[..self.max_components()];
        self.project(tissue, coef)?;
        self.fit(coef, residue, scratch)
    }

    /// The residue of a curve given by its coefficients ([`Basis::project`], possibly
    /// smoothed), with the method's threshold: the flow-scaled residue goes into `residue`
    /// (`L` values, 1/s); `scratch` holds `L` values. For [`DeconvolutionMethod::BlockCirculant`]
    /// the thresholds of [`THRESHOLD_LADDER`] are tried from high to low, each adding its
    /// components to the previous residue, until the oscillation index exceeds its limit.
    pub fn fit(
        &self,
        coef: &[f32],
        residue: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<ResidueFit, CoreError> {
        let len = self.len;
        for (what, expected, got) in [
            ("residue", len, residue.len()),
            ("deconvolution scratch", len, scratch.len()),
        ] {
            if expected != got {
                return Err(CoreError::LengthMismatch {
                    what,
                    expected,
                    got,
                });
            }
        }
        let (s, vt) = (self.s.as_ref(), self.vt.as_ref());
        let s_max = s.first().copied().unwrap_or(0.0);
        let single;
        let (ladder, oi_max): (&[f32], f32) = match self.method {
            DeconvolutionMethod::BlockCirculant {
                oscillation_index_max,
            } => (&THRESHOLD_LADDER, oscillation_index_max),
            DeconvolutionMethod::BlockCirculantFixed { threshold }
            | DeconvolutionMethod::Standard { threshold } => {
                single = [threshold];
                (&single, f32::INFINITY)
            }
        };
        residue.iter_mut().for_each(|r| *r = 0.0);
        let kmax = coef.len().min(len);
        let mut kept = 0usize;
        let mut accepted: Option<(f32, f32)> = None;
        for &threshold in ladder {
            let limit = threshold * s_max;
            let before = kept;
            while kept < kmax && s[kept] >= limit && s[kept] > 0.0 {
                let p = coef[kept];
                let v = &vt[kept * len..(kept + 1) * len];
                residue.iter_mut().zip(v).for_each(|(r, &x)| *r += p * x);
                kept += 1;
            }
            if kept == before && accepted.is_some() {
                // Nothing new at this threshold: the same residue, the same verdict.
                continue;
            }
            let r_max = max_value(residue);
            let oi = oscillation_index(residue, r_max);
            if oi > oi_max && accepted.is_some() {
                break;
            }
            scratch.copy_from_slice(residue);
            accepted = Some((threshold, oi));
            if oi > oi_max {
                break;
            }
        }
        residue.copy_from_slice(scratch);
        let (threshold, oscillation_index) = accepted.unwrap_or((1.0, 0.0));
        let (r_max_per_s, tmax_s) = match refined_peak(residue) {
            Some((_, pos, value)) if value > 0.0 => {
                let wrapped = !matches!(self.method, DeconvolutionMethod::Standard { .. })
                    && pos > 0.5 * len as f32;
                (value, if wrapped { 0.0 } else { pos * self.grid.dt_s })
            }
            _ => (0.0, 0.0),
        };
        Ok(ResidueFit {
            r_max_per_s,
            tmax_s,
            threshold,
            oscillation_index,
        })
    }
}

#[allow(clippy::unwrap_used)]
#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    const DT: f32 = 1.0;
    const N: usize = 60;

    fn aif() -> Vec<f32> {
        (0..N)
            .map(|k| {
                let x = (k as f32 * DT - 5.0) / 4.5;
                if x <= 0.0 {
                    0.0
                } else {
                    400.0 * libm::expf(3.0 * (libm::logf(x) + 1.0 - x))
                }
            })
            .collect()
    }

    /// `c = dt · Σ aif[j] · f · R(t_i − t_j − delay)` on a fine grid for exactness.
    fn tissue(aif: &[f32], flow: f32, residue: impl Fn(f32) -> f32, delay_s: f32) -> Vec<f32> {
        let fine = 20;
        let h = DT / fine as f32;
        let aif_at = |t: f32| {
            let k = libm::floorf(t / DT);
            let w = t / DT - k;
            let k = k as usize;
            if t < 0.0 || k + 1 >= aif.len() {
                return 0.0;
            }
            aif[k] * (1.0 - w) + aif[k + 1] * w
        };
        (0..N)
            .map(|i| {
                let t = i as f32 * DT;
                let m = ((t - delay_s).max(0.0) / h) as usize;
                (0..=m)
                    .map(|j| {
                        let tau = j as f32 * h;
                        let s = t - tau - delay_s;
                        if s < 0.0 {
                            0.0
                        } else {
                            h * aif_at(tau) * flow * residue(s)
                        }
                    })
                    .sum()
            })
            .collect()
    }

    fn fit(method: DeconvolutionMethod, c: &[f32]) -> ResidueFit {
        let grid = TimeGrid::new(N, DT).unwrap();
        let basis = Basis::new(&aif(), grid, method).unwrap();
        let len = basis.residue_len();
        let (mut r, mut scratch) = (vec![0.0; len], vec![0.0; len]);
        basis.deconvolve(c, &mut r, &mut scratch).unwrap()
    }

    const FIXED: DeconvolutionMethod = DeconvolutionMethod::BlockCirculantFixed { threshold: 0.05 };

    #[test]
    fn exponential_residue_flow_and_delay_are_recovered() {
        let flow = 0.01; // 1/s
        let fits: Vec<ResidueFit> = [0.0, 2.0, 5.0]
            .into_iter()
            .map(|delay| {
                fit(
                    FIXED,
                    &tissue(&aif(), flow, |t| libm::expf(-t / 4.0), delay),
                )
            })
            .collect();
        // Block-circulant SVD is insensitive to the delay: same flow, Tmax moves with it.
        for (f, delay) in fits.iter().zip([0.0, 2.0, 5.0]) {
            assert!(
                (f.r_max_per_s - fits[0].r_max_per_s).abs() / fits[0].r_max_per_s < 0.03,
                "{fits:?}"
            );
            assert!((f.tmax_s - fits[0].tmax_s - delay).abs() < 0.4, "{fits:?}");
        }
        // Truncation smooths the residue's jump at the arrival: the peak is lower and a
        // little later than the exact `flow` at `delay` (≈ 30 % and ≈ 1 s for MTT 4 s at
        // 5 % of the largest singular value), and it converges for slower residues.
        assert!(fits[0].r_max_per_s > 0.6 * flow, "{fits:?}");
        assert!((0.0..=1.5).contains(&fits[0].tmax_s), "{fits:?}");
        let slow = fit(FIXED, &tissue(&aif(), flow, |t| libm::expf(-t / 16.0), 1.0));
        assert!((slow.r_max_per_s - flow).abs() / flow < 0.1, "{slow:?}");
    }

    #[test]
    fn boxcar_residue_area_and_plateau() {
        let flow = 0.01;
        let mtt = 6.0;
        let c = tissue(&aif(), flow, |t| if t < mtt { 1.0 } else { 0.0 }, 1.0);
        let grid = TimeGrid::new(N, DT).unwrap();
        let basis = Basis::new(&aif(), grid, FIXED).unwrap();
        let len = basis.residue_len();
        let (mut r, mut scratch) = (vec![0.0; len], vec![0.0; len]);
        let f = basis.deconvolve(&c, &mut r, &mut scratch).unwrap();
        // A boxcar's sharp edges are smoothed by truncation, its area (CBV) is kept.
        let area: f32 = r.iter().sum::<f32>() * DT;
        assert!(
            (area - flow * mtt).abs() / (flow * mtt) < 0.05,
            "area {area}"
        );
        assert!(f.r_max_per_s > 0.75 * flow && f.r_max_per_s < 1.3 * flow);
        assert!((1.0..=5.0).contains(&f.tmax_s), "tmax {}", f.tmax_s);
    }

    #[test]
    fn tissue_ahead_of_the_aif_breaks_standard_svd_not_block_circulant() {
        // An AIF picked in a late artery: the tissue's bolus arrives 3 s before it.
        let flow = 0.01;
        let residue = |t: f32| libm::expf(-t / 6.0);
        let ahead = tissue(&aif(), flow, residue, -3.0);
        let on_time = tissue(&aif(), flow, residue, 0.0);
        let standard = DeconvolutionMethod::Standard { threshold: 0.2 };
        let circulant = DeconvolutionMethod::BlockCirculantFixed { threshold: 0.2 };
        let (c_ahead, c_on) = (fit(circulant, &ahead), fit(circulant, &on_time));
        let (s_ahead, s_on) = (fit(standard, &ahead), fit(standard, &on_time));
        let bias =
            |a: &ResidueFit, b: &ResidueFit| (a.r_max_per_s - b.r_max_per_s).abs() / b.r_max_per_s;
        assert!(bias(&c_ahead, &c_on) < 0.05, "{c_ahead:?} {c_on:?}");
        assert!(bias(&s_ahead, &s_on) > 0.15, "{s_ahead:?} {s_on:?}");
        assert_eq!(
            c_ahead.tmax_s, 0.0,
            "a residue ahead of the AIF wraps to the end: Tmax 0"
        );
    }

    #[test]
    fn oscillation_index_raises_the_threshold_for_noisy_curves() {
        let flow = 0.01;
        let clean = tissue(&aif(), flow, |t| libm::expf(-t / 4.0), 1.0);
        let mut rng = crate::rng::Rng::new(7);
        let noisy: Vec<f32> = clean
            .iter()
            .map(|&v| v + 3.0 * rng.normal() as f32)
            .collect();
        let oi = DeconvolutionMethod::default();
        let f_clean = fit(oi, &clean);
        let f_noisy = fit(oi, &noisy);
        assert!(
            f_noisy.threshold > f_clean.threshold,
            "{f_clean:?} {f_noisy:?}"
        );
        assert!(f_noisy.oscillation_index <= DEFAULT_OSCILLATION_INDEX_MAX + 1e-6);
        // Averaging many noisy voxels' flows stays close to the noise-free estimate.
        let grid = TimeGrid::new(N, DT).unwrap();
        let basis = Basis::new(&aif(), grid, oi).unwrap();
        let len = basis.residue_len();
        let (mut r, mut scratch) = (vec![0.0; len], vec![0.0; len]);
        let mean: f32 = (0..40)
            .map(|_| {
                let c: Vec<f32> = clean
                    .iter()
                    .map(|&v| v + 3.0 * rng.normal() as f32)
                    .collect();
                basis
                    .deconvolve(&c, &mut r, &mut scratch)
                    .unwrap()
                    .r_max_per_s
            })
            .sum::<f32>()
            / 40.0;
        let reference = f_clean.r_max_per_s;
        assert!(
            (mean - reference).abs() / reference < 0.3,
            "mean flow {mean} vs {reference}"
        );
    }

    #[test]
    fn flat_aif_and_wrong_lengths_are_refused() {
        let grid = TimeGrid::new(N, DT).unwrap();
        assert!(matches!(
            Basis::new(&[0.0; N], grid, FIXED).err(),
            Some(CoreError::NoBolus { .. })
        ));
        let basis = Basis::new(&aif(), grid, FIXED).unwrap();
        let mut r = vec![0.0; 3];
        let mut s = vec![0.0; basis.residue_len()];
        assert!(basis.deconvolve(&[0.0; N], &mut r, &mut s).is_err());
        assert!(
            DeconvolutionMethod::Standard { threshold: 1.5 }
                .validate()
                .is_err()
        );
    }

    #[test]
    fn coefficients_are_linear_in_the_curve() {
        // The mean of two curves' coefficients fits the mean curve: spatial smoothing may
        // work on coefficients instead of frames.
        let grid = TimeGrid::new(N, DT).unwrap();
        let basis = Basis::new(&aif(), grid, FIXED).unwrap();
        let k = basis.max_components();
        assert!(k > 0 && k < basis.residue_len(), "{k}");
        let a = tissue(&aif(), 0.01, |t| libm::expf(-t / 4.0), 1.0);
        let b = tissue(&aif(), 0.004, |t| libm::expf(-t / 9.0), 3.0);
        let mean: Vec<f32> = a.iter().zip(&b).map(|(x, y)| 0.5 * (x + y)).collect();
        let (mut ca, mut cb, mut cm) = (vec![0.0; k], vec![0.0; k], vec![0.0; k]);
        basis.project(&a, &mut ca).unwrap();
        basis.project(&b, &mut cb).unwrap();
        basis.project(&mean, &mut cm).unwrap();
        let avg: Vec<f32> = ca.iter().zip(&cb).map(|(x, y)| 0.5 * (x + y)).collect();
        let len = basis.residue_len();
        let (mut r1, mut r2, mut s) = (vec![0.0; len], vec![0.0; len], vec![0.0; len]);
        let f1 = basis.fit(&avg, &mut r1, &mut s).unwrap();
        let f2 = basis.deconvolve(&mean, &mut r2, &mut s).unwrap();
        assert!((f1.r_max_per_s - f2.r_max_per_s).abs() < 1e-6 * f2.r_max_per_s.max(1e-6));
        assert!(r1.iter().zip(&r2).all(|(x, y)| (x - y).abs() < 1e-7));
        assert!(basis.project(&a, &mut vec![0.0; k + 1]).is_err());
    }

    #[test]
    fn closed_form_circulant_svd_matches_the_matrix_and_jacobi() {
        let grid = TimeGrid::new(N, DT).unwrap();
        let basis = Basis::new(&aif(), grid, FIXED).unwrap();
        let len = basis.residue_len();
        // The block-circulant matrix, as `build_in` defines it.
        let a = aif();
        let at = |k: usize| a.get(k).map_or(0.0, |&x| f64::from(x));
        let col: Vec<f64> = (0..len)
            .map(|m| 0.5 * f64::from(DT) * (at(m) + if m == 0 { 0.0 } else { at(m - 1) }))
            .collect();
        let matrix = |i: usize, j: usize| col[(i + len - j) % len];
        let (s, ut, vt) = (&basis.s, &basis.ut, &basis.vt);
        for r in 0..len {
            for i in 0..N {
                let av: f64 = (0..len)
                    .map(|j| matrix(i, j) * f64::from(vt[r * len + j]))
                    .sum();
                let su = f64::from(s[r]) * f64::from(ut[i * len + r]);
                assert!(
                    (av - su).abs() < 1e-4 * f64::from(s[0]),
                    "{r} {i}: {av} {su}"
                );
            }
            for q in 0..len {
                let d: f32 = (0..len).map(|k| vt[r * len + k] * vt[q * len + k]).sum();
                assert!((d - f32::from(u8::from(r == q))).abs() < 1e-4);
            }
        }
        let mut m: Vec<f64> = (0..len * len).map(|x| matrix(x / len, x % len)).collect();
        let (mut v, mut sv) = (vec![0.0; len * len], vec![0.0; len]);
        crate::perfusion::svd::jacobi_svd(&mut m, len, len, &mut v, &mut sv).unwrap();
        assert!(
            s.iter()
                .zip(&sv)
                .all(|(x, y)| (f64::from(*x) - y).abs() < 1e-4 * sv[0])
        );
    }
}
