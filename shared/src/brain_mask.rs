//! The brain mask: which voxels of a slice are brain tissue, from the perfusion maps
//! (zero outside the skull-stripped brain) and optionally the CT's Hounsfield units.

use crate::config::PreprocessConfig;
use crate::error::CoreError;
use crate::modality::Modality;

/// Writes 1 into `out` for brain voxels and 0 elsewhere; returns the brain voxel count.
///
/// `channels` are the slice's raw (un-normalised) channel values in config order, each of
/// the length of `out`. A voxel is brain when at least
/// `min(min_positive_perfusion_maps, perfusion maps present)` perfusion maps are > 0 and,
/// when `ct_hu_range` is set and CT is a channel, the CT value lies in that range. With
/// no perfusion map and no CT rule, any voxel with a non-zero channel counts as brain.
pub fn compute_brain_mask(
    config: &PreprocessConfig,
    channels: &[&[f32]],
    out: &mut [u8],
) -> Result<usize, CoreError> {
    if channels.len() != config.channels.len() {
        return Err(CoreError::ChannelCount {
            expected: config.channels.len(),
            got: channels.len(),
        });
    }
    for c in channels {
        if c.len() != out.len() {
            return Err(CoreError::LengthMismatch {
                what: "brain mask channel",
                expected: out.len(),
                got: c.len(),
            });
        }
    }
    let n_perfusion = config
        .channels
        .iter()
        .filter(|c| c.modality.is_perfusion_map())
        .count();
    let need = usize::from(config.brain_mask.min_positive_perfusion_maps).min(n_perfusion);
    let ct_rule = config
        .brain_mask
        .ct_hu_range
        .zip(config.channel_index(Modality::Ct));
    let any_rule = need > 0 || ct_rule.is_some();

    let mut count = 0;
    for (i, o) in out.iter_mut().enumerate() {
        let mut positive = 0usize;
        let mut any_nonzero = false;
        for (spec, values) in config.channels.iter().zip(channels) {
            let v = values.get(i).copied().unwrap_or(0.0);
            any_nonzero |= v != 0.0;
            if spec.modality.is_perfusion_map() && v > 0.0 {
                positive += 1;
            }
        }
        let mut brain = if any_rule {
            positive >= need
        } else {
            any_nonzero
        };
        if let Some(((lo, hi), ct_idx)) = ct_rule {
            let hu = channels
                .get(ct_idx)
                .and_then(|c| c.get(i))
                .copied()
                .unwrap_or(f32::NAN);
            brain &= hu >= lo && hu <= hi;
        }
        *o = u8::from(brain);
        count += usize::from(brain);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrainMaskConfig;

    #[test]
    fn perfusion_rule_and_ct_window() {
        let mut cfg = PreprocessConfig::default(); // CBF, CBV, MTT, Tmax, CT
        let cbf = [0.0, 10.0, 10.0, 0.0];
        let cbv = [0.0, 1.0, 0.0, 0.0];
        let mtt = [0.0, 4.0, 0.0, 0.0];
        let tmax = [0.0, 1.0, 0.0, 2.0];
        let ct = [-1000.0, 30.0, 900.0, 40.0];
        let mut out = [9u8; 4];
        let n = compute_brain_mask(&cfg, &[&cbf, &cbv, &mtt, &tmax, &ct], &mut out).unwrap();
        assert_eq!((n, out), (3, [0, 1, 1, 1]));

        cfg.brain_mask = BrainMaskConfig {
            min_positive_perfusion_maps: 2,
            ct_hu_range: Some((-10.0, 100.0)),
        };
        let n = compute_brain_mask(&cfg, &[&cbf, &cbv, &mtt, &tmax, &ct], &mut out).unwrap();
        assert_eq!((n, out), (1, [0, 1, 0, 0]));
    }

    #[test]
    fn length_mismatch_is_an_error() {
        let cfg = PreprocessConfig::default();
        let a = [0.0f32; 4];
        let b = [0.0f32; 3];
        let mut out = [0u8; 4];
        assert!(matches!(
            compute_brain_mask(&cfg, &[&a, &a, &a, &b, &a], &mut out),
            Err(CoreError::LengthMismatch {
                expected: 4,
                got: 3,
                ..
            })
        ));
    }
}
