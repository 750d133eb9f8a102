//! The HIL firmware's fixed study, made on the host: a tiny synthetic CTP study (head,
//! skull, healthy brain, an ischaemic core with its penumbra in the left hemisphere, scanner
//! noise and a few NaN/±inf voxels) in the layout of `pipeline.rs`.
//!
//! Deterministic: its own PRNG and plain `f32`/`f64` arithmetic, so the same seed gives the
//! same bits everywhere. It is generated fresh for every run and embedded in the firmware
//! through `golden.rs`; nothing is committed.
//!
//! [`dynamic_series`] is the perfusion workload's input: one small slice of a CT perfusion
//! series that follows the indicator-dilution model (the phantom's AIF, an exponential
//! residue per tissue class, delays, frame noise, int16 rounding).

use strokeseg_hil_pipeline::{
    DYN_FRAME_INTERVAL_S, DYN_FRAMES, DYN_LEN, DYN_NX, DYN_NY, DYN_SLICE_LEN, N_CHANNELS, N_SLICES,
    NX, NY, SLICE_LEN, SPACING_X_MM, SPACING_Y_MM, TRUTH_LEN, VOXELS_LEN,
};
use strokeseg_phantom::Bolus;
use strokeseg_shared::perfusion::{HEMATOCRIT_FACTOR, TISSUE_DENSITY_G_PER_ML};
use strokeseg_shared::rng::{Rng, derive_seed};

/// Channel order of the fixture (the default config's).
const CBF: usize = 0;
const CBV: usize = 1;
const MTT: usize = 2;
const TMAX: usize = 3;
const CT: usize = 4;

/// Tissue classes and their textbook values: CBF (mL/100 g/min), CBV (mL/100 g), MTT (s),
/// Tmax (s), CT (HU).
const HEALTHY: [f32; N_CHANNELS] = [50.0, 4.0, 5.0, 1.5, 35.0];
const PENUMBRA: [f32; N_CHANNELS] = [32.0, 4.5, 9.0, 8.0, 33.0];
const CORE: [f32; N_CHANNELS] = [8.0, 1.5, 12.0, 12.0, 26.0];

/// Core radius in pixels per slice (0: no lesion in that slice).
const CORE_RADIUS_PX: [f64; N_SLICES] = [0.0, 3.0, 4.5, 3.5];
/// Penumbra extends this many pixels beyond the core.
const PENUMBRA_RIM_PX: f64 = 2.5;

/// The fixture: voxels `[slice][channel][y][x]` and the truth `[slice][y][x]`.
pub struct Study {
    /// Raw channel values, [`VOXELS_LEN`] long.
    pub voxels: Vec<f32>,
    /// Ground-truth core mask, [`TRUTH_LEN`] long.
    pub truth: Vec<u8>,
}

/// Makes the study for `seed`.
pub fn study(seed: u64) -> Study {
    let mut rng = Rng::new(seed);
    let mut voxels = vec![0f32; VOXELS_LEN];
    let mut truth = vec![0u8; TRUTH_LEN];
    // Head: an ellipse of 13 × 14 mm semi-axes, centred; brain inside 85 % of it.
    let (cx, cy) = (NX as f64 / 2.0 - 0.5, NY as f64 / 2.0 - 0.5);
    let (ax_px, ay_px) = (
        13.0 / f64::from(SPACING_X_MM),
        14.0 / f64::from(SPACING_Y_MM),
    );
    // Lesion centre: left hemisphere (low x), slightly anterior.
    let (lx, ly) = (cx - 5.0, cy - 1.5);
    for z in 0..N_SLICES {
        // Per-slice perfusion gain, as ISLES maps have (unknown scale per case).
        let gain = 1.0 + 0.1 * z as f64;
        for y in 0..NY {
            for x in 0..NX {
                let i = y * NX + x;
                let (dx, dy) = ((x as f64 - cx) / ax_px, (y as f64 - cy) / ay_px);
                let r = (dx * dx + dy * dy).sqrt();
                let d_lesion = ((x as f64 - lx).powi(2) + (y as f64 - ly).powi(2)).sqrt();
                let core_r = CORE_RADIUS_PX[z];
                let values = if r >= 1.0 {
                    None // air
                } else if r >= 0.85 {
                    Some([0.0, 0.0, 0.0, 0.0, 1000.0]) // skull
                } else if core_r > 0.0 && d_lesion <= core_r {
                    truth[z * SLICE_LEN + i] = 1;
                    Some(CORE)
                } else if core_r > 0.0 && d_lesion <= core_r + PENUMBRA_RIM_PX {
                    Some(PENUMBRA)
                } else {
                    Some(HEALTHY)
                };
                for c in 0..N_CHANNELS {
                    let v = match values {
                        None if c == CT => -1000.0 + 5.0 * rng.normal(),
                        None => 0.0,
                        Some(v) if c == CT => f64::from(v[CT]) + 4.0 * rng.normal(),
                        Some(v) if v[c] == 0.0 => 0.0,
                        Some(v) => {
                            let scale = if c == CBF || c == CBV { gain } else { 1.0 };
                            // Multiplicative noise, kept positive inside the brain.
                            (f64::from(v[c]) * scale * (1.0 + 0.08 * rng.normal())).max(0.05)
                        }
                    };
                    voxels[(z * N_CHANNELS + c) * SLICE_LEN + i] = v as f32;
                }
            }
        }
    }
    // Non-finite voxels the reader must replace: inside the brain, outside it, in the air.
    let at = |z: usize, c: usize, x: usize, y: usize| (z * N_CHANNELS + c) * SLICE_LEN + y * NX + x;
    voxels[at(1, MTT, NX / 2 + 3, NY / 2)] = f32::NAN;
    voxels[at(2, CBV, NX / 2, NY / 2 + 2)] = f32::INFINITY;
    voxels[at(3, CT, 0, 0)] = f32::NEG_INFINITY;
    // A lone speck of core in slice 3, far from the lesion: the component filter removes it.
    for (x, y) in [(NX / 2 + 6, NY / 2 + 4), (NX / 2 + 7, NY / 2 + 4)] {
        for (c, v) in [(CBF, 6.0f32), (TMAX, 12.0)] {
            voxels[at(3, c, x, y)] = v;
        }
    }
    Study { voxels, truth }
}

/// What fills a voxel of the dynamic slice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DynamicVoxel {
    /// Outside the head.
    Air,
    /// Skull, no enhancement.
    Bone,
    /// A large artery: the AIF itself.
    Artery,
    /// Tissue: baseline HU, CBF (mL/100 g/min), CBV (mL/100 g), delay after the AIF (s).
    Tissue {
        /// Unenhanced attenuation, HU.
        baseline_hu: f32,
        /// True CBF, mL/100 g/min.
        cbf_ml_100g_min: f64,
        /// True CBV, mL/100 g.
        cbv_ml_100g: f64,
        /// Arrival after the AIF, s.
        delay_s: f64,
    },
}

/// Tissue classes of the dynamic slice (baseline HU, CBF, CBV, delay s): healthy grey matter
/// (x < 4, y < 4), white matter (x ≥ 4), a delayed hypodense ischaemic core (x < 4, y ≥ 4).
/// Their time-averaged attenuations differ by several range σ of the guided smoothing, so
/// the default 4.5 px smoothing, which spans the 8×8 slice, keeps the classes apart.
const DYN_GREY: (f32, f64, f64, f64) = (40.0, 55.0, 4.0, 0.5);
const DYN_WHITE: (f32, f64, f64, f64) = (30.0, 25.0, 2.2, 0.5);
const DYN_CORE: (f32, f64, f64, f64) = (21.0, 10.0, 1.4, 3.0);
/// Frame noise of the dynamic slice, HU (a low-dose CTP has about 10; the workload checks
/// the arithmetic, not the fidelity, and the maps stay readable at 3).
const DYNAMIC_NOISE_HU: f64 = 3.0;
/// The bolus of the dynamic slice: arrival 6 s, peak 350 HU.
fn dynamic_bolus() -> Bolus {
    Bolus {
        arrival_s: 6.0,
        alpha: 3.0,
        beta_s: 1.5,
        peak_hu: 350.0,
        recirculation: 0.1,
        n_frames: DYN_FRAMES,
        frame_interval_s: f64::from(DYN_FRAME_INTERVAL_S),
        noise_hu: DYNAMIC_NOISE_HU,
    }
}

/// The class of voxel `(x, y)` of the dynamic slice.
pub fn dynamic_voxel(x: usize, y: usize) -> DynamicVoxel {
    let tissue = |(baseline_hu, cbf_ml_100g_min, cbv_ml_100g, delay_s): (f32, f64, f64, f64)| {
        DynamicVoxel::Tissue {
            baseline_hu,
            cbf_ml_100g_min,
            cbv_ml_100g,
            delay_s,
        }
    };
    let corner = (x == 0 || x == DYN_NX - 1) && (y == 0 || y == DYN_NY - 1);
    match (x, y) {
        _ if corner => DynamicVoxel::Air,
        (1, 1) => DynamicVoxel::Artery,
        (6, 1) => DynamicVoxel::Bone,
        _ if x >= 4 => tissue(DYN_WHITE),
        _ if y >= 4 => tissue(DYN_CORE),
        _ => tissue(DYN_GREY),
    }
}

/// The dynamic slice for `seed`: `[frame][y][x]`, HU, [`DYN_LEN`] values, rounded to whole
/// HU as int16 series are stored.
pub fn dynamic_series(seed: u64) -> Vec<f32> {
    /// Fine time step of the convolution, s.
    const FINE_DT_S: f64 = 0.05;
    let bolus = dynamic_bolus();
    let dt = f64::from(DYN_FRAME_INTERVAL_S);
    let end_s = DYN_FRAMES as f64 * dt;
    let n_fine = (end_s / FINE_DT_S) as usize + 1;
    let aif_fine: Vec<f64> = (0..n_fine)
        .map(|i| bolus.aif_hu(i as f64 * FINE_DT_S))
        .collect();
    let mut rng = Rng::new(derive_seed(seed, &[12]));
    let mut series = vec![0f32; DYN_LEN];
    let mut conv = vec![0f64; n_fine];
    let mut enhancement = [0f64; DYN_FRAMES];
    for y in 0..DYN_NY {
        for x in 0..DYN_NX {
            let v = y * DYN_NX + x;
            enhancement.fill(0.0);
            let base = match dynamic_voxel(x, y) {
                DynamicVoxel::Air => -1000.0,
                DynamicVoxel::Bone => 800.0,
                DynamicVoxel::Artery => {
                    for (k, e) in enhancement.iter_mut().enumerate() {
                        *e = bolus.aif_hu(k as f64 * dt);
                    }
                    45.0
                }
                DynamicVoxel::Tissue {
                    baseline_hu,
                    cbf_ml_100g_min,
                    cbv_ml_100g,
                    delay_s,
                } => {
                    // ΔHU(t) = f / k_H · ∫ AIF(τ) e^{−(t − delay − τ)/MTT} dτ (trapezoid
                    // recursion on the fine grid, as the phantom convolves).
                    let mtt_s = 60.0 * cbv_ml_100g / cbf_ml_100g_min;
                    let gain =
                        cbf_ml_100g_min * TISSUE_DENSITY_G_PER_ML / 6000.0 / HEMATOCRIT_FACTOR;
                    let decay = (-FINE_DT_S / mtt_s).exp();
                    let (mut acc, mut prev) = (0.0, 0.0);
                    for (c, &a) in conv.iter_mut().zip(&aif_fine) {
                        acc = acc * decay + 0.5 * FINE_DT_S * (a + prev * decay);
                        prev = a;
                        *c = gain * acc;
                    }
                    for (k, e) in enhancement.iter_mut().enumerate() {
                        let fine = (k as f64 * dt - delay_s) / FINE_DT_S;
                        if fine >= 0.0 {
                            *e = conv.get(fine as usize).copied().unwrap_or(0.0);
                        }
                    }
                    f64::from(baseline_hu)
                }
            };
            let noise_hu = if base > -500.0 { DYNAMIC_NOISE_HU } else { 5.0 };
            for (k, e) in enhancement.iter().enumerate() {
                let hu = base + e + noise_hu * rng.normal();
                series[k * DYN_SLICE_LEN + v] = hu.round() as f32;
            }
        }
    }
    series
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_series_is_deterministic_with_an_arterial_bolus() {
        let a = dynamic_series(3);
        assert_eq!(a.len(), DYN_LEN);
        assert_eq!(a, dynamic_series(3));
        let artery = 1 + DYN_NX;
        let peak = (0..DYN_FRAMES)
            .map(|k| a[k * DYN_SLICE_LEN + artery])
            .fold(f32::MIN, f32::max);
        assert!(peak > 300.0, "arterial peak {peak} HU");
        assert!(a.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn study_is_deterministic_and_has_a_lesion() {
        let a = study(7);
        let b = study(7);
        assert_eq!(a.voxels.len(), VOXELS_LEN);
        assert!(
            a.voxels
                .iter()
                .zip(&b.voxels)
                .all(|(x, y)| x.to_bits() == y.to_bits())
        );
        assert_eq!(a.truth, b.truth);
        let lesion = a.truth.iter().filter(|&&t| t != 0).count();
        assert!(lesion > 50, "{lesion} lesion voxels");
        assert_eq!(a.voxels.iter().filter(|v| !v.is_finite()).count(), 3);
    }
}
