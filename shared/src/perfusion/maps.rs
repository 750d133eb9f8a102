//! Pass 2 of the perfusion computation: one slice of all frames → baseline, tissue mask,
//! smoothed enhancement, deconvolution, and the CBF, CBV, MTT and Tmax maps of the slice.
//!
//! [`SliceProcessor`] holds every buffer, sized once per study: `(16 + 2 · C) · nx · ny` f32
//! (`C` = [`Basis::max_components`] + 1) plus the deconvolution basis;
//! [`SliceProcessor::process`] works in place on the caller's frames: baseline and
//! enhancement, tissue mask, each tissue curve projected on the kept deconvolution
//! components (with its CBV area), the edge-preserving smoothing of those coefficients in
//! the plane, then the residue of each voxel from its smoothed coefficients.

use alloc::vec;
use alloc::vec::Vec;

use super::aif::ArterialInput;
use super::curve::{TimeGrid, area_hu_s, max_value, smooth_temporal};
use super::deconv::Basis;
use super::model::ResidueModel;
use super::spatial::{GuidedSmoother, MaskedSmoother};
use super::{
    CBF_PER_RESIDUE, CBV_PER_AREA_RATIO, MAX_TIME_S, MIN_CBF_FOR_MTT_ML_100G_MIN, PerfusionConfig,
};
use crate::error::CoreError;

// The tissue-mask constants live in the alloc-free part of the core (the Cortex-M workload
// reads them there); re-exported under their old path.
pub use super::{BASELINE_SIGMA_PX, HEAD_MIN_HU, MIN_VESSEL_PEAK_HU};
/// Smallest frame-to-frame jump (mean |ΔHU| over the head, above the typical change) that
/// counts as motion, HU: about one frame's noise; in a low-noise series the bolus passing
/// through vessels alone changes the mean by a few HU between frames.
pub const MIN_FRAME_JUMP_HU: f32 = 10.0;

/// The maps of one slice, `nx · ny` values each (x fastest), 0 outside the tissue mask.
#[derive(Debug, Clone, Copy)]
pub struct SliceMaps<'a> {
    /// Cerebral blood flow, mL/100 g/min.
    pub cbf_ml_100g_min: &'a [f32],
    /// Cerebral blood volume, mL/100 g.
    pub cbv_ml_100g: &'a [f32],
    /// Mean transit time, s (0 where CBF < [`MIN_CBF_FOR_MTT_ML_100G_MIN`]).
    pub mtt_s: &'a [f32],
    /// Time to the maximum of the residue, s.
    pub tmax_s: &'a [f32],
    /// 1 where the maps are defined (parenchyma; not air, bone, CSF or large vessels).
    pub tissue_mask: &'a [u8],
    /// Unenhanced attenuation (mean over the baseline frames), HU, every voxel.
    pub baseline_hu: &'a [f32],
}

/// Checks a slice of frames before anything is computed from it: every value finite, and
/// no frame that jumps from the previous one by more than `motion_factor` times the
/// slice's median frame-to-frame change (mean |ΔHU| over head voxels) and by at least
/// [`MIN_FRAME_JUMP_HU`] more than it. `diffs` is scratch
/// of `n_frames` values.
pub fn check_slice(
    slice_idx: usize,
    frames: &[f32],
    nxy: usize,
    grid: &TimeGrid,
    motion_factor: f32,
    diffs: &mut [f32],
) -> Result<(), CoreError> {
    let n = grid.n_frames;
    if frames.len() != n * nxy || diffs.len() != n {
        return Err(CoreError::LengthMismatch {
            what: "dynamic slice",
            expected: n * nxy,
            got: frames.len(),
        });
    }
    let count = frames.iter().filter(|v| !v.is_finite()).count();
    if count > 0 {
        return Err(CoreError::NonFiniteValues { slice_idx, count });
    }
    let first = &frames[..nxy];
    let head = first.iter().filter(|&&v| v > HEAD_MIN_HU).count();
    if head == 0 {
        return Ok(());
    }
    diffs[0] = 0.0;
    for k in 1..n {
        let (prev, cur) = (
            &frames[(k - 1) * nxy..k * nxy],
            &frames[k * nxy..(k + 1) * nxy],
        );
        let sum: f32 = first
            .iter()
            .zip(prev.iter().zip(cur))
            .filter(|(f, _)| **f > HEAD_MIN_HU)
            .map(|(_, (a, b))| (b - a).abs())
            .sum();
        diffs[k] = sum / head as f32;
    }
    let mut sorted: Vec<f32> = diffs[1..].to_vec();
    sorted.sort_by(f32::total_cmp);
    let typical = sorted[sorted.len() / 2];
    for (k, &d) in diffs.iter().enumerate().skip(1) {
        if d > motion_factor * typical && d > typical + MIN_FRAME_JUMP_HU {
            return Err(CoreError::FrameJump {
                slice_idx,
                frame_idx: k,
                change_hu: d,
                typical_hu: typical,
            });
        }
    }
    Ok(())
}

/// Which plane [`SliceProcessor::smoothed_areas`] fills.
#[derive(Debug, Clone, Copy)]
enum AreaPlane {
    /// The CBV areas.
    Cbv,
    /// The areas of the coefficients' guide.
    Guide,
}

/// Computes the maps of one slice after another with the study's AIF.
#[derive(Debug)]
pub struct SliceProcessor {
    config: PerfusionConfig,
    grid: TimeGrid,
    nx: usize,
    ny: usize,
    basis: Basis<Vec<f32>>,
    baseline_window: super::curve::BaselineWindow,
    /// Frames `[0, cbv_frames)` enter the CBV areas.
    cbv_frames: usize,
    /// Area of the AIF over those frames, HU·s.
    aif_area_hu_s: f32,
    vessel_peak_hu: f32,
    baseline: Vec<f32>,
    smooth_baseline: Vec<f32>,
    head: Vec<u8>,
    mask: Vec<u8>,
    cbf: Vec<f32>,
    cbv: Vec<f32>,
    mtt: Vec<f32>,
    tmax: Vec<f32>,
    weight: Vec<f32>,
    tmp: Vec<f32>,
    /// Time-averaged attenuation, HU: the guide of the edge-preserving smoothing.
    guide: Vec<f32>,
    /// Per voxel `[coefficients of the kept components..., CBV area]` (interleaved).
    coef: Vec<f32>,
    coef_tmp: Vec<f32>,
    /// CBV area per voxel, smoothed with `config.cbv_spatial_sigma_px`.
    cbv_area: Vec<f32>,
    /// The coefficients' guide: `guide` plus the smoothed first-pass area per
    /// `config.guide_area_hu_s_per_hu` (unused when that is 0).
    area_guide: Vec<f32>,
    /// Transposed tissue mask (scratch of the CBV smoothing).
    mask_t: Vec<u8>,
    /// Channels per voxel in `coef`: `basis.max_components() + 1`.
    channels: usize,
    curve: Vec<f32>,
    residue: Vec<f32>,
    scratch: Vec<f32>,
    /// Templates of the model-based refinement (`config.model_refinement`).
    model: Option<ResidueModel>,
}

impl SliceProcessor {
    /// Buffers for `nx × ny` slices and the deconvolution basis of `arterial.aif_hu`.
    pub fn new(
        config: PerfusionConfig,
        grid: TimeGrid,
        nx: usize,
        ny: usize,
        arterial: &ArterialInput,
    ) -> Result<Self, CoreError> {
        config.validate()?;
        if nx == 0 || ny == 0 {
            return Err(CoreError::InvalidGeometry {
                reason: "empty slice",
            });
        }
        let basis = Basis::new(&arterial.aif_hu, grid, config.method)?;
        let len = basis.residue_len();
        let channels = basis.max_components() + 1;
        let nxy = nx * ny;
        let aif_peak = arterial.aif_hu.iter().copied().fold(0.0, f32::max);
        let n = grid.n_frames;
        let cbv_frames = if config.cbv_window_s > 0.0 {
            let window = libm::ceilf(config.cbv_window_s / grid.dt_s) as usize;
            (arterial.arrival_frame + window + 1).min(n)
        } else {
            n
        };
        if arterial.aif_hu.len() != n || area_hu_s(&arterial.aif_hu[..cbv_frames], grid.dt_s) <= 0.0
        {
            return Err(CoreError::NoBolus {
                aif_peak_hu: aif_peak,
                min_peak_hu: config.arterial.min_peak_hu,
            });
        }
        Ok(SliceProcessor {
            config,
            grid,
            nx,
            ny,
            // Tissue lags the AIF (delay, dispersion) and enhances by a few % of it, so its
            // baseline takes every frame before the AIF's arrival (10 % of its peak), not
            // only the AIF's own window (which ends `baseline_margin_s` earlier): at CT
            // perfusion noise the baseline's error, times the CBV integration time, is the
            // larger part of a voxel's CBV noise.
            baseline_window: super::curve::BaselineWindow {
                start: arterial.baseline.start,
                end: arterial.arrival_frame.max(arterial.baseline.end),
            },
            cbv_frames,
            aif_area_hu_s: area_hu_s(&arterial.aif_hu[..cbv_frames], grid.dt_s),
            vessel_peak_hu: (config.mask.vessel_peak_fraction * aif_peak).max(MIN_VESSEL_PEAK_HU),
            baseline: vec![0.0; nxy],
            smooth_baseline: vec![0.0; nxy],
            head: vec![0; nxy],
            mask: vec![0; nxy],
            cbf: vec![0.0; nxy],
            cbv: vec![0.0; nxy],
            mtt: vec![0.0; nxy],
            tmax: vec![0.0; nxy],
            weight: vec![0.0; nxy],
            tmp: vec![0.0; nxy],
            guide: vec![0.0; nxy],
            coef: vec![0.0; nxy * channels],
            coef_tmp: vec![0.0; nxy * channels],
            cbv_area: vec![0.0; nxy],
            mask_t: vec![0; nxy],
            area_guide: vec![0.0; nxy],
            channels,
            curve: vec![0.0; grid.n_frames],
            residue: vec![0.0; len],
            scratch: vec![0.0; len],
            model: if config.model_refinement {
                Some(ResidueModel::new(
                    &arterial.aif_hu,
                    grid,
                    &basis,
                    config.temporal_smoothing,
                )?)
            } else {
                None
            },
            basis,
        })
    }

    /// Copies each voxel's first-pass area (the last channel of `coef`) into the plane
    /// `which` and smooths it there, edge-preserving on the time-averaged attenuation.
    fn smoothed_areas(
        &mut self,
        sigma_px: f32,
        range_hu: f32,
        which: AreaPlane,
    ) -> Result<(), CoreError> {
        let ch = self.channels;
        let plane = match which {
            AreaPlane::Cbv => &mut self.cbv_area,
            AreaPlane::Guide => &mut self.area_guide,
        };
        for (a, c) in plane.iter_mut().zip(self.coef.chunks_exact(ch)) {
            *a = c[ch - 1];
        }
        GuidedSmoother::new(sigma_px, range_hu).apply_plane(
            plane,
            &mut self.tmp,
            &self.mask,
            &self.guide,
            &mut self.mask_t,
            &mut self.weight,
            self.nx,
            self.ny,
        )
    }

    /// The deconvolution basis (its singular values, for reports).
    pub fn basis(&self) -> &Basis<Vec<f32>> {
        &self.basis
    }

    /// Computes the maps of one slice. `frames` is `[n_frames][ny][nx]` in HU and is
    /// overwritten with the (smoothed) enhancement.
    pub fn process(&mut self, frames: &mut [f32]) -> Result<SliceMaps<'_>, CoreError> {
        let (nx, ny, n) = (self.nx, self.ny, self.grid.n_frames);
        let nxy = nx * ny;
        if frames.len() != n * nxy {
            return Err(CoreError::LengthMismatch {
                what: "dynamic slice",
                expected: n * nxy,
                got: frames.len(),
            });
        }
        let w = self.baseline_window;
        let n_base = w.len().max(1) as f32;
        self.baseline.iter_mut().for_each(|b| *b = 0.0);
        for k in w.start..w.end.min(n) {
            let frame = &frames[k * nxy..(k + 1) * nxy];
            self.baseline
                .iter_mut()
                .zip(frame)
                .for_each(|(b, &f)| *b += f);
        }
        self.baseline.iter_mut().for_each(|b| *b /= n_base);
        for k in 0..n {
            let frame = &mut frames[k * nxy..(k + 1) * nxy];
            frame
                .iter_mut()
                .zip(&self.baseline)
                .for_each(|(f, &b)| *f -= b);
        }
        for (h, &b) in self.head.iter_mut().zip(&self.baseline) {
            *h = u8::from(b > HEAD_MIN_HU);
        }
        self.smooth_baseline.copy_from_slice(&self.baseline);
        MaskedSmoother::new(
            &self.head,
            nx,
            ny,
            BASELINE_SIGMA_PX,
            &mut self.weight,
            &mut self.tmp,
        )?
        .apply(&mut self.smooth_baseline)?;

        // One gather of each voxel's curve: the tissue mask (parenchymal baseline, not a
        // large vessel), the guide (time-averaged attenuation) and the curve in the
        // deconvolution basis plus its CBV area. The coefficients are linear in the curve,
        // so smoothing these channels in the plane is smoothing the curves, at `channels`
        // instead of `n_frames` values per voxel.
        let rule = self.config.mask;
        let dt = self.grid.dt_s;
        let ch = self.channels;
        for v in 0..nxy {
            let out = &mut self.coef[v * ch..(v + 1) * ch];
            out.iter_mut().for_each(|c| *c = 0.0);
            self.mask[v] = 0;
            let b = self.smooth_baseline[v];
            if !(self.head[v] != 0 && b >= rule.min_hu && b <= rule.max_hu) {
                continue;
            }
            let mut sum = 0.0;
            for (k, c) in self.curve.iter_mut().enumerate() {
                *c = frames[k * nxy + v];
                sum += *c;
            }
            self.guide[v] = self.baseline[v] + sum / n as f32;
            // The vessel test always looks at the temporally smoothed curve.
            let peak = if self.config.temporal_smoothing {
                smooth_temporal(&mut self.curve);
                max_value(&self.curve)
            } else {
                let copy = &mut self.scratch[..n];
                copy.copy_from_slice(&self.curve);
                smooth_temporal(copy);
                max_value(copy)
            };
            if peak > self.vessel_peak_hu {
                continue;
            }
            self.mask[v] = 1;
            let (coef, area) = out.split_at_mut(ch - 1);
            self.basis.project(&self.curve, coef)?;
            area[0] = area_hu_s(&self.curve[..self.cbv_frames], dt);
        }
        let cbv_sigma = self.config.cbv_spatial_sigma_px;
        if cbv_sigma > 0.0 {
            self.smoothed_areas(cbv_sigma, self.config.cbv_range_hu, AreaPlane::Cbv)?;
        }
        if self.config.spatial_sigma_px > 0.0 {
            let per_hu = self.config.guide_area_hu_s_per_hu;
            let guide = if per_hu > 0.0 {
                let (sigma, range) = (
                    self.config.guide_area_sigma_px,
                    self.config.guide_area_range_hu,
                );
                self.smoothed_areas(sigma, range, AreaPlane::Guide)?;
                for (g, &attenuation) in self.area_guide.iter_mut().zip(&self.guide) {
                    *g = attenuation + *g / per_hu;
                }
                &self.area_guide
            } else {
                &self.guide
            };
            GuidedSmoother::new(self.config.spatial_sigma_px, self.config.spatial_range_hu).apply(
                &mut self.coef,
                &mut self.coef_tmp,
                ch,
                &self.mask,
                guide,
                nx,
                ny,
            )?;
        }

        for v in 0..nxy {
            self.cbf[v] = 0.0;
            self.cbv[v] = 0.0;
            self.mtt[v] = 0.0;
            self.tmax[v] = 0.0;
            if self.mask[v] == 0 {
                continue;
            }
            let (coef, area) = self.coef[v * ch..(v + 1) * ch].split_at(ch - 1);
            let cbv = f64::from(area[0] / self.aif_area_hu_s) * CBV_PER_AREA_RATIO;
            if cbv > f64::from(rule.max_cbv_ml_100g) {
                self.mask[v] = 0;
                continue;
            }
            let fit = self.basis.fit(coef, &mut self.residue, &mut self.scratch)?;
            let cbf = f64::from(fit.r_max_per_s) * CBF_PER_RESIDUE;
            // The area smoothed for CBV alone (the vessel test above keeps the coefficients'
            // smoothing, so a small vessel is not spread over its neighbours first).
            let cbv = if cbv_sigma > 0.0 {
                f64::from(self.cbv_area[v] / self.aif_area_hu_s) * CBV_PER_AREA_RATIO
            } else {
                cbv
            }
            .max(0.0);
            let mut tmax = fit.tmax_s;
            if let Some(model) = &self.model {
                // The SVD residue's MTT starts the search (its flow is low by the
                // truncation, so the start is long; the search walks down).
                let mtt_start = if cbf > 0.0 {
                    (60.0 * cbv / cbf) as f32
                } else {
                    4.0
                };
                if let Some(m) = model.fit(coef, mtt_start) {
                    tmax = m.tmax_s.max(0.0);
                }
            }
            self.cbf[v] = cbf as f32;
            self.cbv[v] = cbv as f32;
            self.tmax[v] = tmax.min(MAX_TIME_S as f32);
            if cbf >= MIN_CBF_FOR_MTT_ML_100G_MIN {
                self.mtt[v] = (60.0 * cbv / cbf).min(MAX_TIME_S) as f32;
            }
        }
        Ok(SliceMaps {
            cbf_ml_100g_min: &self.cbf,
            cbv_ml_100g: &self.cbv,
            mtt_s: &self.mtt,
            tmax_s: &self.tmax,
            tissue_mask: &self.mask,
            baseline_hu: &self.baseline,
        })
    }
}
