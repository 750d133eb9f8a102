//! Perfusion maps from the raw dynamic CT perfusion series: CBF, CBV, MTT and Tmax computed
//! by strokeseg itself, the same code on the trainer, the edge box and (its no-alloc core)
//! the Cortex-M firmware.
//!
//! # Model
//!
//! Indicator dilution (Østergaard et al. 1996, MRM 36:715), with tissue enhancement `C_t`
//! and arterial enhancement `C_a` in HU (HU ∝ iodine concentration; the scanner constant
//! cancels in every ratio below):
//!
//! ```text
//! C_t(t) = (ρ / k_H) · CBF · (C_a ⊗ R)(t)        R(0) = 1, R non-increasing
//! deconvolution:  r(t) = C_t ⊘ C_a = (ρ / k_H) · CBF · R(t)            [1/s]
//! CBF = max r · k_H / ρ · 6000                    mL/100 g/min
//! CBV = ∫C_t / ∫C_a · k_H / ρ · 100              mL/100 g
//! MTT = 60 · CBV / CBF                            s (central volume theorem)
//! Tmax = argmax r                                 s
//! ```
//!
//! with ρ = [`TISSUE_DENSITY_G_PER_ML`] and k_H = [`HEMATOCRIT_FACTOR`].
//!
//! # Steps and where they live
//!
//! - [`curve`] (no alloc): frame grid, baseline window and bolus arrival, enhancement,
//!   temporal smoothing, curve shape, oscillation index;
//! - [`svd`] (no alloc): one-sided Jacobi SVD in caller buffers;
//! - [`deconv`] (no alloc, owned buffers with `alloc`): block-circulant SVD with the
//!   oscillation-index threshold (Wu et al. 2003), standard SVD;
//! - [`spatial`] (no alloc): mask-aware gaussian and edge-preserving (guided bilateral)
//!   smoothing of a slice;
//! - [`aif`] (alloc): automatic AIF and VOF selection over the whole study with bounded
//!   candidate sets, partial-volume scaling of the AIF by the VOF area;
//! - [`maps`] (alloc): the per-slice computation and the tissue mask;
//! - [`model`] (alloc): optional model-based Tmax (templates of the dispersed exponential
//!   residue fitted to the smoothed curves);
//! - [`study`] (alloc): the two-pass entry point over a [`study::DynamicSource`].
//!
//! # Memory
//!
//! Bounded per study, independent of the number of slices: one slice of all frames
//! (`n_frames · nx · ny` f32, read by the source), about `(16 + 2 · C) · nx · ny` f32 of
//! per-slice buffers (`C`: the kept deconvolution components plus one, ≤ `2 · n_frames + 1`,
//! typically 20–40), the deconvolution basis (`L + L · n_frames + L²` f32, `L = 2 · n_frames`,
//! 0.2 MB for 50 frames) and the candidate sets (`2 · K · n_frames` f32, K =
//! [`aif::ArterialRule::candidates`]). A 256 × 256 slice of 50 frames: ≈ 30 MB.

pub mod curve;
pub mod deconv;
pub mod spatial;
pub mod svd;

#[cfg(feature = "alloc")]
pub mod aif;
#[cfg(feature = "alloc")]
pub mod maps;
#[cfg(feature = "alloc")]
pub mod model;
#[cfg(feature = "alloc")]
pub mod study;

pub use curve::{BaselineWindow, CurveShape, TimeGrid};
pub use deconv::{Basis, DeconvolutionMethod, ResidueFit};

/// Brain tissue density, g/mL (Herscovitch & Raichle 1985, JCBFM 5:65: 1.04–1.05; the
/// value Østergaard 1996 and Rempp 1994 use).
pub const TISSUE_DENSITY_G_PER_ML: f64 = 1.04;
/// Hematocrit of large vessels, where the AIF is measured (Rempp et al. 1994, Radiology
/// 193:637).
pub const HEMATOCRIT_LARGE_VESSEL: f64 = 0.45;
/// Hematocrit of capillaries (Rempp et al. 1994).
pub const HEMATOCRIT_SMALL_VESSEL: f64 = 0.25;
/// Hematocrit correction `k_H = (1 − Hct_large) / (1 − Hct_small) = 0.55 / 0.75`:
/// contrast stays in plasma, and capillary blood holds more plasma than arterial blood.
/// Written as the literal quotient `0.55 / 0.75`, the value the phantom has always been
/// generated with (`1.0 - 0.45` differs from `0.55` in the last bit).
pub const HEMATOCRIT_FACTOR: f64 = 0.55 / 0.75;
/// Seconds per minute times 100 g: turns a flow in (mL/mL)/s into mL/100 mL/min.
const PER_S_TO_PER_100_MIN: f64 = 6000.0;
/// CBF in mL/100 g/min per unit of the deconvolved residue's maximum (1/s):
/// `k_H · 6000 / ρ`.
pub const CBF_PER_RESIDUE: f64 = HEMATOCRIT_FACTOR * PER_S_TO_PER_100_MIN / TISSUE_DENSITY_G_PER_ML;
/// CBV in mL/100 g per unit of the tissue/AIF area ratio: `k_H · 100 / ρ`.
pub const CBV_PER_AREA_RATIO: f64 = HEMATOCRIT_FACTOR * 100.0 / TISSUE_DENSITY_G_PER_ML;
/// CBF below which MTT is undefined and written as 0, mL/100 g/min (below the noise of a
/// voxel's flow; clinical packages blank MTT there too).
pub const MIN_CBF_FOR_MTT_ML_100G_MIN: f64 = 2.0;
/// Largest MTT and Tmax written, s (deconvolution software caps them similarly).
pub const MAX_TIME_S: f64 = 40.0;

/// Voxels whose baseline is below this are outside the head (air), HU.
pub const HEAD_MIN_HU: f32 = -500.0;
/// σ of the smoothing of the baseline image before the tissue thresholds, pixels (the
/// baseline of one voxel carries the frame noise / √frames).
pub const BASELINE_SIGMA_PX: f32 = 1.0;
/// Peak enhancement above which a voxel is a vessel whatever the AIF, HU.
pub const MIN_VESSEL_PEAK_HU: f32 = 40.0;

/// Version of the map computation: bumped whenever a change moves the maps the same
/// configuration computes (a model trained on computed maps records it,
/// [`crate::config::MapsProvenance`]). 1: issue 12 phase 1; 2: edge-preserving smoothing of
/// the deconvolution coefficients, tissue baseline up to the AIF's arrival, ladder to 5 %;
/// 3: CBV areas smoothed with their own σ ([`PerfusionConfig::cbv_spatial_sigma_px`]);
/// 4: the coefficients' guide adds the first-pass area
/// ([`PerfusionConfig::guide_area_hu_s_per_hu`]), σ 5.5 px at range σ 7 HU, CBV areas at
/// σ 16 px and their own range σ 2.5 HU.
pub const PERFUSION_VERSION: u32 = 4;

/// A named [`PerfusionConfig`], as model metadata records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PerfusionPreset {
    /// [`PerfusionConfig::default`].
    Default,
}

impl PerfusionPreset {
    /// Every preset.
    pub const ALL: [PerfusionPreset; 1] = [PerfusionPreset::Default];

    /// The configuration.
    pub fn config(self) -> PerfusionConfig {
        match self {
            PerfusionPreset::Default => PerfusionConfig::default(),
        }
    }

    /// The name, as serialised.
    pub fn name(self) -> &'static str {
        match self {
            PerfusionPreset::Default => "default",
        }
    }

    /// The preset whose configuration `config` is, if any.
    pub fn matching(config: &PerfusionConfig) -> Option<PerfusionPreset> {
        Self::ALL.into_iter().find(|p| p.config() == *config)
    }
}

/// How a study's maps are computed. `Default` is the configuration the fidelity figures in
/// BENCHMARKS.md were measured with.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PerfusionConfig {
    /// Deconvolution method.
    pub method: DeconvolutionMethod,
    /// `[1, 2, 1] / 4` smoothing of every tissue curve before deconvolution.
    pub temporal_smoothing: bool,
    /// Gaussian σ of the in-plane smoothing of the enhancement inside the tissue mask,
    /// pixels (0: none; at most [`spatial::MAX_SIGMA_PX`]).
    pub spatial_sigma_px: f32,
    /// Range σ of the edge-preserving smoothing of the deconvolution coefficients, HU of
    /// the guide ([`spatial::GuidedSmoother`]): neighbours whose guide differs from the
    /// voxel's by much more than this count little. The guide is the time-averaged
    /// attenuation (grey vs white matter differ by ≈ 10 HU) plus, with
    /// `guide_area_hu_s_per_hu` > 0, the voxel's first-pass area in HU per that many HU·s.
    /// 0: plain gaussian smoothing.
    pub spatial_range_hu: f32,
    /// Spatial σ of the edge-preserving smoothing (range σ `guide_area_range_hu` on the
    /// time-averaged attenuation) of the first-pass areas that enter the coefficients'
    /// guide, pixels (at most [`spatial::MAX_SIGMA_PX`]).
    pub guide_area_sigma_px: f32,
    /// Range σ of that smoothing, HU of time-averaged attenuation.
    pub guide_area_range_hu: f32,
    /// First-pass area per HU of guide, HU·s (0: the guide is the attenuation alone).
    /// Grey matter's area (≈ 100 HU·s) adds ≈ 20 HU, an ischaemic core's a few: the core
    /// and the tissue around it, alike in attenuation, stop being averaged together, so
    /// the core's small curves are not swamped by its neighbours' (earlier, larger) ones.
    pub guide_area_hu_s_per_hu: f32,
    /// Spatial σ of the edge-preserving smoothing of the CBV areas only, pixels (0: the
    /// areas are smoothed with `spatial_sigma_px` like the deconvolution coefficients; at
    /// most [`spatial::MAX_SIGMA_PX`]). CBV varies less across tissue than its noise does
    /// (a voxel's first-pass area has an SNR of ≈ 0.5 at 10 HU per frame), and the rule
    /// does not use it, so it may be smoothed more than CBF and Tmax.
    pub cbv_spatial_sigma_px: f32,
    /// Range σ of the CBV areas' smoothing, HU of time-averaged attenuation.
    pub cbv_range_hu: f32,
    /// Frames ignored at the start (scanner settling), 0 for most protocols.
    pub skip_frames: usize,
    /// Seconds between the end of the baseline and the detected arrival of the AIF (10 %
    /// of its peak).
    pub baseline_margin_s: f32,
    /// CBV integrates tissue and AIF from the first frame to this long after the AIF's
    /// arrival, s (0: the whole acquisition). A voxel's baseline error (frame noise / √ of
    /// a few baseline frames) enters the area once per second integrated, so integrating
    /// the first pass only (Tmax + a few MTT) keeps CBV's noise down; tissue still
    /// enhancing at the window's end (very late arrival) is underestimated.
    pub cbv_window_s: f32,
    /// Which voxels are tissue.
    pub mask: maps_rule::TissueMaskRule,
    /// How the AIF and VOF are chosen.
    pub arterial: maps_rule::ArterialRule,
    /// Frame-to-frame change (mean |ΔHU| over the head) above this multiple of the
    /// series' median change is refused as motion.
    pub motion_factor: f32,
    /// Tmax from a fit of the indicator-dilution model (dispersed exponential residue over
    /// a grid of delays) to each smoothed tissue curve after the SVD residue ([`model`])
    /// instead of the time of the truncated residue's maximum. Off by default: at 10 HU
    /// per frame it lowers the Tmax error (1.27 → 1.07 s) but the threshold rule's Dice
    /// falls (0.78 → 0.76; BENCHMARKS.md); it costs a template dot product per grid point
    /// visited and voxel.
    pub model_refinement: bool,
}

impl Default for PerfusionConfig {
    fn default() -> Self {
        PerfusionConfig {
            method: DeconvolutionMethod::default(),
            temporal_smoothing: true,
            spatial_sigma_px: 5.5,
            spatial_range_hu: 7.0,
            guide_area_sigma_px: 4.0,
            guide_area_range_hu: 4.0,
            guide_area_hu_s_per_hu: 5.0,
            cbv_spatial_sigma_px: 16.0,
            cbv_range_hu: 2.5,
            skip_frames: 0,
            baseline_margin_s: 1.5,
            cbv_window_s: 35.0,
            mask: maps_rule::TissueMaskRule::default(),
            arterial: maps_rule::ArterialRule::default(),
            motion_factor: 2.5,
            model_refinement: false,
        }
    }
}

impl PerfusionConfig {
    /// Checks every parameter.
    pub fn validate(&self) -> Result<(), crate::CoreError> {
        self.method.validate()?;
        let bad = |reason| Err(crate::CoreError::InvalidConfig { reason });
        let sigma_ok = |s: f32| s.is_finite() && (0.0..=spatial::MAX_SIGMA_PX).contains(&s);
        let non_negative = |v: f32| v.is_finite() && v >= 0.0;
        if !sigma_ok(self.spatial_sigma_px) {
            return bad("spatial_sigma_px must be in 0..=16");
        }
        if !sigma_ok(self.cbv_spatial_sigma_px) {
            return bad("cbv_spatial_sigma_px must be in 0..=16");
        }
        if !sigma_ok(self.guide_area_sigma_px) {
            return bad("guide_area_sigma_px must be in 0..=16");
        }
        if !non_negative(self.spatial_range_hu)
            || !non_negative(self.cbv_range_hu)
            || !non_negative(self.guide_area_range_hu)
        {
            return bad(
                "spatial_range_hu, cbv_range_hu and guide_area_range_hu must be finite and ≥ 0",
            );
        }
        if !non_negative(self.guide_area_hu_s_per_hu) {
            return bad("guide_area_hu_s_per_hu must be finite and ≥ 0");
        }
        if !(self.baseline_margin_s.is_finite() && self.baseline_margin_s >= 0.0) {
            return bad("baseline_margin_s must be finite and ≥ 0");
        }
        if !(self.cbv_window_s.is_finite() && self.cbv_window_s >= 0.0) {
            return bad("cbv_window_s must be finite and ≥ 0");
        }
        if !(self.motion_factor.is_finite() && self.motion_factor > 1.0) {
            return bad("motion_factor must be > 1");
        }
        self.mask.validate()?;
        self.arterial.validate()
    }
}

pub mod maps_rule {
    //! Thresholds of the tissue mask and the AIF/VOF search; plain values, no alloc.

    use crate::CoreError;

    /// Which voxels get perfusion values: unenhanced attenuation of brain parenchyma
    /// (excludes air, fat, CSF, bone and calcification) and not a large vessel.
    #[derive(Debug, Clone, Copy, PartialEq)]
    #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
    #[cfg_attr(feature = "defmt", derive(defmt::Format))]
    pub struct TissueMaskRule {
        /// Lowest baseline (smoothed) attenuation of tissue, HU: CSF is 0–15 HU, white
        /// matter 20–30 HU, grey 35–45 HU (early infarct: a few HU lower).
        pub min_hu: f32,
        /// Highest baseline attenuation of tissue, HU (bone > 300, calcification > 100).
        pub max_hu: f32,
        /// A voxel whose (temporally smoothed) peak enhancement exceeds this fraction of the
        /// partial-volume-corrected AIF's peak (and at least `MIN_VESSEL_PEAK_HU`) is
        /// a large vessel.
        pub vessel_peak_fraction: f32,
        /// A voxel with CBV above this is a large vessel, mL/100 g (healthy grey matter is
        /// 3.5–5, vasodilated penumbra up to ≈ 8).
        pub max_cbv_ml_100g: f32,
    }

    impl Default for TissueMaskRule {
        fn default() -> Self {
            TissueMaskRule {
                min_hu: 15.0,
                max_hu: 100.0,
                vessel_peak_fraction: 0.15,
                max_cbv_ml_100g: 12.0,
            }
        }
    }

    impl TissueMaskRule {
        /// Checks the thresholds.
        pub fn validate(&self) -> Result<(), CoreError> {
            let ok = self.min_hu.is_finite()
                && self.max_hu.is_finite()
                && self.min_hu < self.max_hu
                && self.vessel_peak_fraction > 0.0
                && self.vessel_peak_fraction <= 1.0
                && self.max_cbv_ml_100g > 0.0;
            if ok {
                Ok(())
            } else {
                Err(CoreError::InvalidConfig {
                    reason: "tissue mask thresholds out of range",
                })
            }
        }
    }

    /// How the arterial input and venous output are found.
    #[derive(Debug, Clone, Copy, PartialEq)]
    #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
    #[cfg_attr(feature = "defmt", derive(defmt::Format))]
    pub struct ArterialRule {
        /// Size of each bounded candidate set kept over the study (AIF and VOF), 1–1024.
        pub candidates: usize,
        /// Voxels averaged into the AIF.
        pub aif_voxels: usize,
        /// Voxels averaged into the VOF.
        pub vof_voxels: usize,
        /// Smallest peak enhancement of a candidate and of the final AIF, HU (arterial peaks
        /// in CTP are 150–600 HU; below 50 HU there is no usable bolus).
        pub min_peak_hu: f32,
        /// Narrowest bolus accepted (full width at half maximum), s: rejects noise spikes.
        pub min_fwhm_s: f32,
        /// Baseline attenuation range of candidates, HU (blood is 35–55 HU; partial volume
        /// with CSF or bone widens it).
        pub baseline_hu: (f32, f32),
        /// Largest partial-volume scale `∫VOF / ∫AIF` applied.
        pub max_pv_scale: f32,
    }

    impl Default for ArterialRule {
        fn default() -> Self {
            ArterialRule {
                candidates: 64,
                aif_voxels: 8,
                vof_voxels: 8,
                min_peak_hu: 50.0,
                min_fwhm_s: 3.0,
                baseline_hu: (-20.0, 120.0),
                max_pv_scale: 10.0,
            }
        }
    }

    impl ArterialRule {
        /// Checks the counts and thresholds.
        pub fn validate(&self) -> Result<(), CoreError> {
            let ok = (1..=1024).contains(&self.candidates)
                && (1..=self.candidates).contains(&self.aif_voxels)
                && (1..=self.candidates).contains(&self.vof_voxels)
                && self.min_peak_hu > 0.0
                && self.min_fwhm_s >= 0.0
                && self.baseline_hu.0 < self.baseline_hu.1
                && self.max_pv_scale >= 1.0;
            if ok {
                Ok(())
            } else {
                Err(CoreError::InvalidConfig {
                    reason: "arterial search rule out of range",
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_are_the_textbook_values() {
        let from_hematocrits = (1.0 - HEMATOCRIT_LARGE_VESSEL) / (1.0 - HEMATOCRIT_SMALL_VESSEL);
        assert!((HEMATOCRIT_FACTOR - from_hematocrits).abs() < 1e-12);
        // 1/s of residue per mL/100 g/min: f = CBF · ρ / 6000 / k_H.
        let cbf = 50.0;
        let r = cbf * TISSUE_DENSITY_G_PER_ML / 6000.0 / HEMATOCRIT_FACTOR;
        assert!((r * CBF_PER_RESIDUE - cbf).abs() < 1e-9);
        assert!(PerfusionConfig::default().validate().is_ok());
        let bad = PerfusionConfig {
            spatial_sigma_px: 16.5,
            ..PerfusionConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad_cbv = PerfusionConfig {
            cbv_spatial_sigma_px: 17.0,
            ..PerfusionConfig::default()
        };
        assert!(bad_cbv.validate().is_err());
        assert_eq!(
            PerfusionPreset::matching(&PerfusionConfig::default()),
            Some(PerfusionPreset::Default)
        );
        assert_eq!(PerfusionPreset::matching(&bad), None);
    }
}
