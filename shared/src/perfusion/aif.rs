//! Automatic arterial input function (AIF) and venous output function (VOF) selection over
//! a whole study in one pass with bounded memory, and partial-volume scaling of the AIF.
//!
//! Pass 1 offers every candidate voxel (baseline attenuation of blood, a bolus that rises
//! at least [`ArterialRule::min_peak_hu`] and is at least [`ArterialRule::min_fwhm_s`] wide)
//! to two fixed-size sets of [`ArterialRule::candidates`] entries each:
//! - AIF: early, high, narrow peaks, score `peak / (fwhm · time to peak after arrival)`;
//! - VOF: late, high boluses, score `peak · time to peak after arrival`.
//!
//! [`ArterialSearch::finish`] averages the best AIF candidates that peak together (within
//! [`AIF_PEAK_SPREAD_FRAMES`]) and the best VOF candidates that peak at least
//! [`VOF_MIN_LAG_S`] after the AIF, then scales the AIF by `∫VOF / ∫AIF` (≥ 1): a sinus is
//! wide enough to be free of partial volume, an artery in a 5 mm slice is not, and the
//! indicator's area is the same in both (Mouridsen et al. 2006, MRM 55:524; the VOF
//! correction as in Konstas et al. 2009, AJNR 30:662). Memory: `2 · K · (n_frames + 8)` f32.

use alloc::vec::Vec;

use super::curve::{
    BaselineWindow, CurveShape, TimeGrid, arrival_frame, baseline_window, curve_shape,
    smooth_temporal, to_enhancement,
};
use super::maps_rule::ArterialRule;
use crate::error::CoreError;

/// AIF candidates averaged must peak within this many frames of the best one.
pub const AIF_PEAK_SPREAD_FRAMES: usize = 2;
/// The VOF must peak at least this long after the AIF, s (venous transit is 3–6 s).
pub const VOF_MIN_LAG_S: f32 = 2.0;
/// A curve whose last frame is still above this fraction of its peak was cut off by the
/// end of the acquisition.
pub const TRUNCATION_FRACTION: f32 = 0.5;

/// A voxel position `[x, y, z]` (NIfTI voxel indices).
pub type Voxel = [usize; 3];

#[derive(Debug, Clone, Copy)]
struct Entry {
    score: f32,
    voxel: Voxel,
    shape: CurveShape,
}

/// A bounded set of the best-scoring voxels with their raw curves (HU).
#[derive(Debug, Clone)]
struct CandidateSet {
    capacity: usize,
    n_frames: usize,
    entries: Vec<Entry>,
    curves: Vec<f32>,
    /// Index of the lowest score while full.
    min_idx: usize,
}

impl CandidateSet {
    fn new(capacity: usize, n_frames: usize) -> Self {
        CandidateSet {
            capacity,
            n_frames,
            entries: Vec::with_capacity(capacity),
            curves: Vec::with_capacity(capacity * n_frames),
            min_idx: 0,
        }
    }

    fn offer(&mut self, score: f32, voxel: Voxel, shape: CurveShape, raw_hu: &[f32]) {
        let entry = Entry {
            score,
            voxel,
            shape,
        };
        if self.entries.len() < self.capacity {
            self.entries.push(entry);
            self.curves.extend_from_slice(raw_hu);
            if self.entries.len() == self.capacity {
                self.update_min();
            }
            return;
        }
        if score <= self.entries[self.min_idx].score {
            return;
        }
        let i = self.min_idx;
        self.entries[i] = entry;
        self.curves[i * self.n_frames..(i + 1) * self.n_frames].copy_from_slice(raw_hu);
        self.update_min();
    }

    fn update_min(&mut self) {
        self.min_idx = self
            .entries
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.score.total_cmp(&b.1.score))
            .map_or(0, |(i, _)| i);
    }

    /// Entry indices by descending score.
    fn ranked(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.entries.len()).collect();
        idx.sort_by(|&a, &b| self.entries[b].score.total_cmp(&self.entries[a].score));
        idx
    }

    fn curve(&self, i: usize) -> &[f32] {
        &self.curves[i * self.n_frames..(i + 1) * self.n_frames]
    }
}

/// Pass 1 of the arterial search: offer voxels slice by slice, then [`ArterialSearch::finish`].
#[derive(Debug, Clone)]
pub struct ArterialSearch {
    rule: ArterialRule,
    grid: TimeGrid,
    skip_frames: usize,
    margin_frames: usize,
    aif: CandidateSet,
    vof: CandidateSet,
    work: Vec<f32>,
}

/// Something the maps are still computed for but a reader should know.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case", tag = "kind"))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PerfusionWarning {
    /// The bolus had not washed out by the end of the acquisition: the AIF or VOF ends
    /// above [`TRUNCATION_FRACTION`] of its peak, so areas (CBV, the partial-volume scale)
    /// are underestimated.
    BolusTruncated {
        /// The curve's last value as a fraction of its peak.
        last_fraction: f32,
        /// Whether it was the VOF (else the AIF).
        venous: bool,
    },
    /// No venous candidate peaked after the AIF: the AIF is not partial-volume corrected
    /// (absolute CBF and CBV may be too high; relative values are unaffected).
    NoVenousOutput,
    /// The VOF's area was below the AIF's (the VOF is partial-volumed itself): no scaling.
    VofSmallerThanAif {
        /// `∫VOF / ∫AIF`.
        ratio: f32,
    },
    /// The partial-volume scale was capped at [`ArterialRule::max_pv_scale`].
    PartialVolumeScaleCapped {
        /// `∫VOF / ∫AIF` before the cap.
        ratio: f32,
    },
}

/// The study's arterial input as chosen by pass 1.
#[derive(Debug, Clone, PartialEq)]
pub struct ArterialInput {
    /// Frames whose mean is every voxel's baseline in pass 2.
    pub baseline: BaselineWindow,
    /// Frame at which the AIF reaches 10 % of its peak.
    pub arrival_frame: usize,
    /// Voxels averaged into the AIF, best first.
    pub aif_voxels: Vec<Voxel>,
    /// Voxels averaged into the VOF, largest first (empty when none was found).
    pub vof_voxels: Vec<Voxel>,
    /// The measured AIF: mean enhancement of the AIF voxels, HU per frame.
    pub aif_measured_hu: Vec<f32>,
    /// The VOF: mean enhancement of the VOF voxels, HU per frame (empty when none).
    pub vof_hu: Vec<f32>,
    /// Partial-volume scale applied to the AIF (≥ 1).
    pub pv_scale: f32,
    /// The AIF the deconvolution uses: `pv_scale · aif_measured_hu`, HU per frame.
    pub aif_hu: Vec<f32>,
    /// Area of `aif_hu`, HU·s.
    pub aif_area_hu_s: f32,
    /// Peak of `aif_measured_hu`, HU.
    pub aif_peak_hu: f32,
}

impl ArterialSearch {
    /// An empty search for a series on `grid`.
    pub fn new(
        rule: ArterialRule,
        grid: TimeGrid,
        skip_frames: usize,
        baseline_margin_s: f32,
    ) -> Result<Self, CoreError> {
        rule.validate()?;
        Ok(ArterialSearch {
            rule,
            grid,
            skip_frames,
            margin_frames: libm::ceilf(baseline_margin_s / grid.dt_s) as usize,
            aif: CandidateSet::new(rule.candidates, grid.n_frames),
            vof: CandidateSet::new(rule.candidates, grid.n_frames),
            work: alloc::vec![0.0; grid.n_frames],
        })
    }

    /// The provisional baseline window of a slice from its mean tissue curve (HU): the
    /// frames before the slice's bolus arrival less `PROVISIONAL_MARGIN_S`.
    pub fn provisional_window(&self, mean_curve_hu: &[f32]) -> BaselineWindow {
        /// Tissue reaches 10 % of its peak up to ≈ 3 s after the arteries.
        const PROVISIONAL_MARGIN_S: f32 = 3.0;
        let margin = libm::ceilf(PROVISIONAL_MARGIN_S / self.grid.dt_s) as usize;
        let arrival = arrival_frame(mean_curve_hu, self.skip_frames).unwrap_or(self.skip_frames);
        baseline_window(arrival, self.skip_frames, margin)
    }

    /// Offers one voxel's raw curve (HU, `n_frames` values) with the slice's provisional
    /// baseline window.
    pub fn offer(&mut self, voxel: Voxel, raw_hu: &[f32], window: BaselineWindow) {
        if raw_hu.len() != self.grid.n_frames {
            return;
        }
        self.work.copy_from_slice(raw_hu);
        let base = to_enhancement(&mut self.work, window);
        let (lo, hi) = self.rule.baseline_hu;
        if !(lo..=hi).contains(&base) {
            return;
        }
        smooth_temporal(&mut self.work);
        let shape = curve_shape(&self.work, &self.grid);
        if shape.peak_hu < self.rule.min_peak_hu
            || shape.fwhm_s < self.rule.min_fwhm_s
            || shape.peak_frame < window.end
        {
            return;
        }
        let after_arrival_s = (shape.peak_frame + 1 - window.end) as f32 * self.grid.dt_s;
        self.aif.offer(
            shape.peak_hu / (shape.fwhm_s * after_arrival_s),
            voxel,
            shape,
            raw_hu,
        );
        // Ranked by peak, not area: a curve's area carries its baseline error times the
        // acquisition length, and ranking by it picks voxels whose baseline noise happened
        // to be low (overestimating the partial-volume scale).
        self.vof
            .offer(shape.peak_hu * after_arrival_s, voxel, shape, raw_hu);
    }

    /// Chooses the AIF and VOF; [`CoreError::NoBolus`] when no candidate (or their mean)
    /// rises above [`ArterialRule::min_peak_hu`].
    pub fn finish(&self) -> Result<(ArterialInput, Vec<PerfusionWarning>), CoreError> {
        let n = self.grid.n_frames;
        let no_bolus = |peak: f32| CoreError::NoBolus {
            aif_peak_hu: peak,
            min_peak_hu: self.rule.min_peak_hu,
        };
        let ranked = self.aif.ranked();
        let Some(&best) = ranked.first() else {
            return Err(no_bolus(0.0));
        };
        let best_shape = self.aif.entries[best].shape;
        let chosen: Vec<usize> = ranked
            .iter()
            .copied()
            .filter(|&i| {
                let s = self.aif.entries[i].shape;
                s.peak_frame.abs_diff(best_shape.peak_frame) <= AIF_PEAK_SPREAD_FRAMES
                    && s.peak_hu >= 0.5 * best_shape.peak_hu
            })
            .take(self.rule.aif_voxels)
            .collect();
        let mut aif_raw = alloc::vec![0.0f32; n];
        mean_into(&chosen, |i| self.aif.curve(i), &mut aif_raw);
        let arrival = arrival_frame(&aif_raw, self.skip_frames).ok_or_else(|| no_bolus(0.0))?;
        let baseline = baseline_window(arrival, self.skip_frames, self.margin_frames);
        let mut aif_measured = aif_raw;
        to_enhancement(&mut aif_measured, baseline);
        let aif_shape = curve_shape(&aif_measured, &self.grid);
        if aif_shape.peak_hu < self.rule.min_peak_hu || aif_shape.area_hu_s <= 0.0 {
            return Err(no_bolus(aif_shape.peak_hu));
        }
        let mut warnings = Vec::new();
        let truncated = |curve: &[f32], shape: &CurveShape| {
            let last = curve.last().copied().unwrap_or(0.0) / shape.peak_hu;
            (last > TRUNCATION_FRACTION || shape.peak_frame + 1 >= n).then_some(last)
        };
        if let Some(last_fraction) = truncated(&aif_measured, &aif_shape) {
            warnings.push(PerfusionWarning::BolusTruncated {
                last_fraction,
                venous: false,
            });
        }

        let min_lag = libm::ceilf(VOF_MIN_LAG_S / self.grid.dt_s) as usize;
        let vof_chosen: Vec<usize> = self
            .vof
            .ranked()
            .into_iter()
            .filter(|&i| self.vof.entries[i].shape.peak_frame >= aif_shape.peak_frame + min_lag)
            .take(self.rule.vof_voxels)
            .collect();
        let mut vof = Vec::new();
        let mut pv_scale = 1.0;
        if vof_chosen.is_empty() {
            warnings.push(PerfusionWarning::NoVenousOutput);
        } else {
            vof = alloc::vec![0.0f32; n];
            mean_into(&vof_chosen, |i| self.vof.curve(i), &mut vof);
            to_enhancement(&mut vof, baseline);
            let vof_shape = curve_shape(&vof, &self.grid);
            if let Some(last_fraction) = truncated(&vof, &vof_shape) {
                warnings.push(PerfusionWarning::BolusTruncated {
                    last_fraction,
                    venous: true,
                });
            }
            let ratio = vof_shape.area_hu_s / aif_shape.area_hu_s;
            if ratio.is_nan() || ratio < 1.0 {
                warnings.push(PerfusionWarning::VofSmallerThanAif { ratio });
            } else if ratio > self.rule.max_pv_scale {
                warnings.push(PerfusionWarning::PartialVolumeScaleCapped { ratio });
                pv_scale = self.rule.max_pv_scale;
            } else {
                pv_scale = ratio;
            }
        }
        let aif_hu: Vec<f32> = aif_measured.iter().map(|v| v * pv_scale).collect();
        Ok((
            ArterialInput {
                baseline,
                arrival_frame: arrival,
                aif_voxels: chosen.iter().map(|&i| self.aif.entries[i].voxel).collect(),
                vof_voxels: vof_chosen
                    .iter()
                    .map(|&i| self.vof.entries[i].voxel)
                    .collect(),
                aif_area_hu_s: aif_shape.area_hu_s * pv_scale,
                aif_peak_hu: aif_shape.peak_hu,
                aif_measured_hu: aif_measured,
                vof_hu: vof,
                pv_scale,
                aif_hu,
            },
            warnings,
        ))
    }
}

fn mean_into<'a>(idx: &[usize], curve: impl Fn(usize) -> &'a [f32], out: &mut [f32]) {
    out.iter_mut().for_each(|v| *v = 0.0);
    for &i in idx {
        out.iter_mut().zip(curve(i)).for_each(|(o, &c)| *o += c);
    }
    let k = idx.len().max(1) as f32;
    out.iter_mut().for_each(|v| *v /= k);
}

#[allow(clippy::unwrap_used)]
#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    fn gamma(t: f32, t0: f32, alpha: f32, beta: f32) -> f32 {
        let x = (t - t0) / (alpha * beta);
        if x <= 0.0 {
            0.0
        } else {
            libm::expf(alpha * (libm::logf(x) + 1.0 - x))
        }
    }

    fn search(grid: TimeGrid) -> ArterialSearch {
        ArterialSearch::new(ArterialRule::default(), grid, 0, 1.5).unwrap()
    }

    /// Arteries (early, narrow, 40 % partial volume), a sinus (later, wider, full area),
    /// tissue and noise: the AIF comes from the arteries, the VOF from the sinus, and the
    /// partial-volume scale restores the arteries' area.
    #[test]
    fn arteries_sinus_and_partial_volume() {
        let grid = TimeGrid::new(50, 1.0).unwrap();
        let mut s = search(grid);
        let mut rng = crate::rng::Rng::new(11);
        let window = BaselineWindow { start: 0, end: 4 };
        let mut curve = vec![0.0f32; 50];
        let artery = |t: f32| 400.0 * gamma(t, 6.0, 3.0, 1.5);
        // Same area as the artery at a wider shape (β 2.0 vs 1.5: peak × 1.5/2.0), 4 s later.
        let sinus = |t: f32| 400.0 * 0.75 * gamma(t, 10.0, 3.0, 2.0);
        for x in 0..40 {
            for y in 0..40 {
                let kind = (x * 7 + y * 13) % 97;
                for (k, c) in curve.iter_mut().enumerate() {
                    let t = k as f32;
                    let signal = match kind {
                        0 => 0.4 * artery(t),
                        1 => sinus(t),
                        _ => 0.04 * sinus(t - 1.0),
                    };
                    *c = 40.0 + signal + 8.0 * rng.normal() as f32;
                }
                s.offer([x, y, 0], &curve, window);
            }
        }
        let (input, warnings) = s.finish().unwrap();
        assert!(
            input
                .aif_voxels
                .iter()
                .all(|v| (v[0] * 7 + v[1] * 13) % 97 == 0),
            "{:?}",
            input.aif_voxels
        );
        assert!(
            input
                .vof_voxels
                .iter()
                .all(|v| (v[0] * 7 + v[1] * 13) % 97 == 1)
        );
        assert!(
            (input.pv_scale - 2.5).abs() < 0.25,
            "pv scale {}",
            input.pv_scale
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(input.baseline.end <= 7 && (7..=9).contains(&input.arrival_frame));
        let peak = input.aif_hu.iter().copied().fold(0.0, f32::max);
        assert!((peak - 400.0).abs() < 60.0, "scaled AIF peak {peak}");
    }

    #[test]
    fn flat_noise_has_no_bolus_and_a_late_bolus_warns() {
        let grid = TimeGrid::new(40, 1.0).unwrap();
        let mut s = search(grid);
        let mut rng = crate::rng::Rng::new(5);
        let window = BaselineWindow { start: 0, end: 5 };
        let mut curve = vec![0.0f32; 40];
        for x in 0..100 {
            for y in 0..100 {
                curve
                    .iter_mut()
                    .for_each(|c| *c = 40.0 + 10.0 * rng.normal() as f32);
                s.offer([x, y, 0], &curve, window);
            }
        }
        assert!(matches!(s.finish(), Err(CoreError::NoBolus { .. })));

        let mut late = search(grid);
        for (k, c) in curve.iter_mut().enumerate() {
            *c = 40.0 + 300.0 * gamma(k as f32, 30.0, 3.0, 1.8);
        }
        late.offer([0, 0, 0], &curve, BaselineWindow { start: 0, end: 25 });
        let (_, warnings) = late.finish().unwrap();
        assert!(
            warnings
                .iter()
                .any(|w| matches!(w, PerfusionWarning::BolusTruncated { venous: false, .. }))
        );
        assert!(warnings.contains(&PerfusionWarning::NoVenousOutput));
    }

    #[test]
    fn candidate_sets_stay_bounded_and_keep_the_best() {
        let mut set = CandidateSet::new(4, 2);
        for i in 0..100 {
            let score = ((i * 37) % 101) as f32;
            set.offer(score, [i, 0, 0], CurveShape::default(), &[score, 0.0]);
        }
        assert_eq!(set.entries.len(), 4);
        let mut scores: Vec<f32> = set.entries.iter().map(|e| e.score).collect();
        scores.sort_by(f32::total_cmp);
        assert_eq!(scores, vec![97.0, 98.0, 99.0, 100.0]);
        let r = set.ranked();
        assert_eq!(set.curve(r[0])[0], 100.0);
    }
}
