//! The clinical CTP threshold rule for the ischaemic core, slice by slice: a voxel is core
//! when its CBF is below 30 % of healthy tissue and it lies in hypoperfused tissue
//! (Tmax > 6 s); healthy tissue is the median CBF of Tmax < 4 s tissue or of the
//! contralateral hemisphere (Campbell et al. 2011, Stroke 42:3435; DEFUSE 3).
//!
//! The reference is a per-volume statistic, gathered slice by slice in pass 1
//! ([`HealthyCbfStats::add_slice`], fixed-size histograms, about 25 KiB); pass 2 applies
//! [`core_mask_slice`] to each slice. Nothing here allocates.

use crate::config::{ChannelSpec, Normalization, PreprocessConfig};
use crate::error::CoreError;
use crate::modality::Modality;
use crate::stats::LogHistogram;

/// Which tissue gives the healthy CBF that the core is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ReferenceTissue {
    /// Brain voxels with Tmax below [`CoreRule::healthy_tmax_s`] (normally perfused); falls
    /// back to the contralateral hemisphere when there are none.
    #[default]
    NormalTmax,
    /// The hemisphere (split at each slice's brain centroid column) with fewer hypoperfused
    /// voxels.
    Contralateral,
}

/// The core rule's thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CoreRule {
    /// Core: CBF below this fraction of the healthy reference (0–1, default 0.30).
    pub relative_cbf: f32,
    /// Core only inside tissue with Tmax above this, seconds (default 6).
    pub hypoperfused_tmax_s: f32,
    /// Healthy tissue for [`ReferenceTissue::NormalTmax`]: Tmax below this, seconds
    /// (default 4).
    pub healthy_tmax_s: f32,
    /// Where the healthy reference comes from.
    pub reference: ReferenceTissue,
}

impl Default for CoreRule {
    fn default() -> Self {
        CoreRule {
            relative_cbf: 0.30,
            hypoperfused_tmax_s: 6.0,
            healthy_tmax_s: 4.0,
            reference: ReferenceTissue::NormalTmax,
        }
    }
}

impl CoreRule {
    /// Checks the thresholds: `relative_cbf` in (0, 1], Tmax thresholds finite and > 0.
    pub fn validate(&self) -> Result<(), CoreError> {
        let bad = |reason| Err(CoreError::InvalidConfig { reason });
        if !(self.relative_cbf > 0.0 && self.relative_cbf <= 1.0) {
            return bad("core rule relative_cbf must be in (0, 1]");
        }
        let ok = |t: f32| t.is_finite() && t > 0.0;
        if !ok(self.hypoperfused_tmax_s) || !ok(self.healthy_tmax_s) {
            return bad("core rule Tmax thresholds must be finite and > 0");
        }
        Ok(())
    }
}

/// The healthy reference CBF of one volume.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct HealthyReference {
    /// Median CBF of the reference tissue, in the map's own (unknown-gain) units.
    pub cbf: f32,
    /// The tissue it was taken from (after any fallback).
    pub tissue: ReferenceTissue,
    /// Voxels in the reference tissue.
    pub n_voxels: u64,
}

/// Pass-1 statistics for the healthy reference: CBF histograms of normal-Tmax tissue and of
/// each hemisphere, and hypoperfused voxel counts per hemisphere. Fixed size.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthyCbfStats {
    normal_tmax: LogHistogram,
    low_x: LogHistogram,
    high_x: LogHistogram,
    hypoperfused_low_x: u64,
    hypoperfused_high_x: u64,
}

fn check_lengths(nx: usize, lens: [usize; 3], out: Option<usize>) -> Result<usize, CoreError> {
    let n = lens[0];
    for (what, len) in [("tmax slice", lens[1]), ("brain mask", lens[2])]
        .into_iter()
        .chain(out.map(|l| ("core mask", l)))
    {
        if len != n {
            return Err(CoreError::LengthMismatch {
                what,
                expected: n,
                got: len,
            });
        }
    }
    if nx == 0 || !n.is_multiple_of(nx) {
        return Err(CoreError::InvalidGeometry {
            reason: "slice length is not a multiple of nx",
        });
    }
    Ok(n)
}

impl HealthyCbfStats {
    /// Adds one slice: `cbf`, `tmax_s` and `brain` (non-zero = brain) are `[ny, nx]`
    /// row-major of equal length. The hemispheres are split at the slice's brain centroid
    /// column.
    pub fn add_slice(
        &mut self,
        rule: &CoreRule,
        cbf: &[f32],
        tmax_s: &[f32],
        brain: &[u8],
        nx: usize,
    ) -> Result<(), CoreError> {
        check_lengths(nx, [cbf.len(), tmax_s.len(), brain.len()], None)?;
        let (mut sum_x, mut count) = (0f64, 0u64);
        for (i, _) in brain.iter().enumerate().filter(|(_, b)| **b != 0) {
            sum_x += (i % nx) as f64;
            count += 1;
        }
        if count == 0 {
            return Ok(());
        }
        let midline = sum_x / count as f64;
        for (i, ((&c, &t), _)) in cbf
            .iter()
            .zip(tmax_s)
            .zip(brain)
            .enumerate()
            .filter(|(_, (_, b))| **b != 0)
        {
            if !c.is_finite() || !t.is_finite() {
                continue;
            }
            if t < rule.healthy_tmax_s {
                self.normal_tmax.add(c);
            }
            let low = ((i % nx) as f64) < midline;
            let hypo = t > rule.hypoperfused_tmax_s;
            match (low, hypo) {
                (true, true) => self.hypoperfused_low_x += 1,
                (false, true) => self.hypoperfused_high_x += 1,
                _ => {}
            }
            if low {
                self.low_x.add(c);
            } else {
                self.high_x.add(c);
            }
        }
        Ok(())
    }

    /// The healthy reference under `rule`; [`CoreError::NoHealthyTissue`] when the volume
    /// had no brain voxels, or the reference CBF is not positive.
    pub fn reference(&self, rule: &CoreRule) -> Result<HealthyReference, CoreError> {
        let contralateral = || {
            let h = if self.hypoperfused_low_x <= self.hypoperfused_high_x {
                &self.low_x
            } else {
                &self.high_x
            };
            (h, ReferenceTissue::Contralateral)
        };
        let (hist, tissue) = match rule.reference {
            ReferenceTissue::NormalTmax if self.normal_tmax.total() > 0 => {
                (&self.normal_tmax, ReferenceTissue::NormalTmax)
            }
            _ => contralateral(),
        };
        match hist.percentile(50.0) {
            Some(cbf) if cbf > 0.0 && cbf.is_finite() => Ok(HealthyReference {
                cbf,
                tissue,
                n_voxels: hist.total(),
            }),
            _ => Err(CoreError::NoHealthyTissue),
        }
    }
}

/// The preprocessing the rule's studies are read with: the two channels the rule reads (CBF,
/// Tmax) with the default brain-mask rule. The edge runtime's threshold method and the HIL
/// firmware both use this one config.
pub fn rule_preprocess_config() -> PreprocessConfig {
    let mut config = PreprocessConfig {
        channels: Default::default(),
        ..PreprocessConfig::default()
    };
    for modality in [Modality::Cbf, Modality::Tmax] {
        // Two channels always fit in MAX_CHANNELS.
        let _ = config.channels.push(ChannelSpec {
            modality,
            norm: Normalization::ROBUST,
        });
    }
    config
}

/// Writes the core mask of one slice into `out` (1 = core) and returns its voxel count:
/// brain voxels with `tmax_s > rule.hypoperfused_tmax_s` and
/// `cbf < rule.relative_cbf · reference.cbf`. All buffers are `[ny, nx]` of equal length.
pub fn core_mask_slice(
    rule: &CoreRule,
    reference: &HealthyReference,
    cbf: &[f32],
    tmax_s: &[f32],
    brain: &[u8],
    out: &mut [u8],
) -> Result<usize, CoreError> {
    let n = cbf.len();
    check_lengths(n.max(1), [n, tmax_s.len(), brain.len()], Some(out.len()))?;
    let cbf_limit = rule.relative_cbf * reference.cbf;
    let mut count = 0;
    for (((o, &c), &t), &b) in out.iter_mut().zip(cbf).zip(tmax_s).zip(brain) {
        let core = b != 0 && t > rule.hypoperfused_tmax_s && c < cbf_limit;
        *o = u8::from(core);
        count += usize::from(core);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4×2 slice: left half healthy (CBF 50, Tmax 1), right half hypoperfused (Tmax 8)
    /// with one core voxel (CBF 5) and one penumbra voxel (CBF 30).
    const NX: usize = 4;
    const CBF: [f32; 8] = [50.0, 50.0, 5.0, 30.0, 50.0, 50.0, 5.0, 30.0];
    const TMAX: [f32; 8] = [1.0, 1.0, 8.0, 8.0, 1.0, 1.0, 8.0, 8.0];
    const BRAIN: [u8; 8] = [1; 8];

    #[test]
    fn normal_tmax_reference_and_core() {
        let rule = CoreRule::default();
        let mut stats = HealthyCbfStats::default();
        stats.add_slice(&rule, &CBF, &TMAX, &BRAIN, NX).unwrap();
        let r = stats.reference(&rule).unwrap();
        assert_eq!(r.tissue, ReferenceTissue::NormalTmax);
        assert_eq!(r.n_voxels, 4);
        assert!((r.cbf - 50.0).abs() < 2.0, "{}", r.cbf);
        let mut out = [9u8; 8];
        let n = core_mask_slice(&rule, &r, &CBF, &TMAX, &BRAIN, &mut out).unwrap();
        assert_eq!((n, out), (2, [0, 0, 1, 0, 0, 0, 1, 0]));
    }

    #[test]
    fn contralateral_takes_the_less_hypoperfused_side() {
        let rule = CoreRule {
            reference: ReferenceTissue::Contralateral,
            ..CoreRule::default()
        };
        let mut stats = HealthyCbfStats::default();
        stats.add_slice(&rule, &CBF, &TMAX, &BRAIN, NX).unwrap();
        let r = stats.reference(&rule).unwrap();
        assert_eq!(r.tissue, ReferenceTissue::Contralateral);
        assert!((r.cbf - 50.0).abs() < 2.0, "{}", r.cbf);
    }

    #[test]
    fn no_brain_is_an_error_and_lengths_are_checked() {
        let rule = CoreRule::default();
        let stats = HealthyCbfStats::default();
        assert_eq!(stats.reference(&rule), Err(CoreError::NoHealthyTissue));
        let mut s = HealthyCbfStats::default();
        assert!(matches!(
            s.add_slice(&rule, &CBF, &TMAX[..4], &BRAIN, NX),
            Err(CoreError::LengthMismatch { .. })
        ));
        assert!(
            CoreRule {
                relative_cbf: 0.0,
                ..rule
            }
            .validate()
            .is_err()
        );
    }
}
