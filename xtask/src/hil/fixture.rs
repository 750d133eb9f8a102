//! The HIL firmware's fixed study, made on the host: a tiny synthetic CTP study (head,
//! skull, healthy brain, an ischaemic core with its penumbra in the left hemisphere, scanner
//! noise and a few NaN/±inf voxels) in the layout of `pipeline.rs`.
//!
//! Deterministic: its own PRNG and plain `f32`/`f64` arithmetic, so the same seed gives the
//! same bits everywhere. It is generated fresh for every run and embedded in the firmware
//! through `golden.rs`; nothing is committed.

use strokeseg_hil_pipeline::{
    N_CHANNELS, N_SLICES, NX, NY, SLICE_LEN, SPACING_X_MM, SPACING_Y_MM, TRUTH_LEN, VOXELS_LEN,
};
use strokeseg_shared::rng::Rng;

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

#[cfg(test)]
mod tests {
    use super::*;

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
