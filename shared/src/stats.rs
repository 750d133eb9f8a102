//! Per-volume channel statistics gathered in one streaming pass over the slices, in fixed
//! memory: a signed logarithmic histogram (robust percentiles whatever the unknown gain of
//! a map) plus count, mean and standard deviation, all restricted to brain voxels.

use heapless::Vec;

use crate::config::{MAX_CHANNELS, Normalization, PreprocessConfig};
use crate::error::CoreError;

/// Histogram bins for each sign.
pub const HIST_BINS_PER_SIGN: usize = 1024;
/// Magnitudes below 10^LOG10_MIN count as zero.
const LOG10_MIN: f32 = -4.0;
/// Magnitudes above 10^LOG10_MAX fall into the last bin.
const LOG10_MAX: f32 = 8.0;
const BIN_WIDTH_LOG10: f32 = (LOG10_MAX - LOG10_MIN) / HIST_BINS_PER_SIGN as f32;

/// A fixed-size histogram over signed values on a log scale: 1024 bins per sign over
/// 12 decades (about 2.7 % relative bin width) and one bin for |x| < 1e-4.
/// Memory: 8 KiB, independent of the number of values.
#[derive(Clone, PartialEq)]
pub struct LogHistogram {
    negative: [u32; HIST_BINS_PER_SIGN],
    positive: [u32; HIST_BINS_PER_SIGN],
    zero: u32,
    total: u64,
}

impl core::fmt::Debug for LogHistogram {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LogHistogram")
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl Default for LogHistogram {
    fn default() -> Self {
        LogHistogram {
            negative: [0; HIST_BINS_PER_SIGN],
            positive: [0; HIST_BINS_PER_SIGN],
            zero: 0,
            total: 0,
        }
    }
}

fn bin_of_magnitude(m: f32) -> usize {
    let pos = (libm::log10f(m) - LOG10_MIN) / BIN_WIDTH_LOG10;
    if pos <= 0.0 {
        0
    } else {
        (pos as usize).min(HIST_BINS_PER_SIGN - 1)
    }
}

fn bin_lower_magnitude(b: usize) -> f32 {
    libm::powf(10.0, LOG10_MIN + b as f32 * BIN_WIDTH_LOG10)
}

impl LogHistogram {
    /// Counts one finite value (non-finite values are ignored).
    pub fn add(&mut self, x: f32) {
        if !x.is_finite() {
            return;
        }
        let m = libm::fabsf(x);
        if m < libm::powf(10.0, LOG10_MIN) {
            self.zero = self.zero.saturating_add(1);
        } else if x > 0.0 {
            let b = bin_of_magnitude(m);
            self.positive[b] = self.positive[b].saturating_add(1);
        } else {
            let b = bin_of_magnitude(m);
            self.negative[b] = self.negative[b].saturating_add(1);
        }
        self.total += 1;
    }

    /// Number of values counted.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bins in increasing value order as (lower, upper, count).
    fn ordered_bin(&self, k: usize) -> (f32, f32, u32) {
        let n = HIST_BINS_PER_SIGN;
        if k < n {
            let b = n - 1 - k;
            (
                -bin_lower_magnitude(b + 1),
                -bin_lower_magnitude(b),
                self.negative[b],
            )
        } else if k == n {
            (0.0, 0.0, self.zero)
        } else {
            let b = k - n - 1;
            (
                bin_lower_magnitude(b),
                bin_lower_magnitude(b + 1),
                self.positive[b],
            )
        }
    }

    /// The `pct`-th percentile (0–100), interpolated linearly inside its bin; `None` when
    /// empty. Accurate to within one bin (≈ 2.7 % of the value).
    pub fn percentile(&self, pct: f32) -> Option<f32> {
        if self.total == 0 {
            return None;
        }
        let q = f64::from(pct.clamp(0.0, 100.0)) / 100.0;
        let target = q * self.total as f64;
        let mut cum = 0f64;
        let mut last_nonempty = None;
        for k in 0..(2 * HIST_BINS_PER_SIGN + 1) {
            let (lo, hi, count) = self.ordered_bin(k);
            if count == 0 {
                continue;
            }
            let c = f64::from(count);
            if cum + c >= target {
                let frac = ((target - cum) / c).clamp(0.0, 1.0) as f32;
                return Some(lo + frac * (hi - lo));
            }
            cum += c;
            last_nonempty = Some(hi);
        }
        last_nonempty
    }
}

/// Statistics of one channel over the brain voxels of a volume.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChannelStats {
    /// Robust percentiles.
    pub histogram: LogHistogram,
    /// Sum of values (f64: exact enough for any volume).
    pub sum: f64,
    /// Sum of squared values.
    pub sum_sq: f64,
}

impl ChannelStats {
    /// Number of values.
    pub fn count(&self) -> u64 {
        self.histogram.total()
    }
    /// Mean, `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        let n = self.count();
        (n > 0).then(|| self.sum / n as f64)
    }
    /// Population standard deviation, `None` when empty.
    pub fn sd(&self) -> Option<f64> {
        let mean = self.mean()?;
        let var = self.sum_sq / self.count() as f64 - mean * mean;
        Some(libm::sqrt(var.max(0.0)))
    }
}

/// The affine map `y = clamp((x − offset) · gain, min, max)` of one channel.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ChannelNormParams {
    /// Value mapped to 0.
    pub offset: f32,
    /// Multiplier after subtracting the offset.
    pub gain: f32,
    /// Lower clamp.
    pub min: f32,
    /// Upper clamp.
    pub max: f32,
}

impl ChannelNormParams {
    /// Applies the map to one value.
    #[inline]
    pub fn apply(&self, x: f32) -> f32 {
        ((x - self.offset) * self.gain).clamp(self.min, self.max)
    }
}

/// Normalisation parameters of every channel of one volume, in config channel order.
pub type NormParams = Vec<ChannelNormParams, MAX_CHANNELS>;

/// Per-volume statistics of every channel, accumulated slice by slice.
/// Memory: fixed at about 8 KiB per channel slot, reserved for all [`MAX_CHANNELS`] slots
/// (≈ 64 KiB) whatever the channel count, so the struct never allocates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VolumeStats {
    channels: Vec<ChannelStats, MAX_CHANNELS>,
    brain_voxels: u64,
    slices: u32,
}

impl VolumeStats {
    /// Empty statistics for `n_channels` channels.
    pub fn new(n_channels: usize) -> Result<Self, CoreError> {
        let mut channels = Vec::new();
        for _ in 0..n_channels {
            channels
                .push(ChannelStats::default())
                .map_err(|_| CoreError::ChannelCount {
                    expected: MAX_CHANNELS,
                    got: n_channels,
                })?;
        }
        Ok(VolumeStats {
            channels,
            brain_voxels: 0,
            slices: 0,
        })
    }

    /// Adds the brain voxels (`brain_mask != 0`) of one slice of every channel.
    /// All slices must have the length of `brain_mask`.
    pub fn add_slice(&mut self, channels: &[&[f32]], brain_mask: &[u8]) -> Result<(), CoreError> {
        if channels.len() != self.channels.len() {
            return Err(CoreError::ChannelCount {
                expected: self.channels.len(),
                got: channels.len(),
            });
        }
        for values in channels {
            if values.len() != brain_mask.len() {
                return Err(CoreError::LengthMismatch {
                    what: "channel slice",
                    expected: brain_mask.len(),
                    got: values.len(),
                });
            }
        }
        for (stats, values) in self.channels.iter_mut().zip(channels) {
            for (&x, &inside) in values.iter().zip(brain_mask) {
                if inside != 0 && x.is_finite() {
                    stats.histogram.add(x);
                    let xd = f64::from(x);
                    stats.sum += xd;
                    stats.sum_sq += xd * xd;
                }
            }
        }
        self.brain_voxels += brain_mask.iter().filter(|&&m| m != 0).count() as u64;
        self.slices += 1;
        Ok(())
    }

    /// Brain voxels seen.
    pub fn brain_voxels(&self) -> u64 {
        self.brain_voxels
    }
    /// Slices seen.
    pub fn slices(&self) -> u32 {
        self.slices
    }
    /// The statistics of channel `idx`.
    pub fn channel(&self, idx: usize) -> Option<&ChannelStats> {
        self.channels.get(idx)
    }

    /// The normalisation of every channel under `config`.
    pub fn norm_params(&self, config: &PreprocessConfig) -> Result<NormParams, CoreError> {
        if config.channels.len() != self.channels.len() {
            return Err(CoreError::ChannelCount {
                expected: config.channels.len(),
                got: self.channels.len(),
            });
        }
        let mut out = NormParams::new();
        for (spec, stats) in config.channels.iter().zip(self.channels.iter()) {
            let no_brain = CoreError::NoBrainVoxels {
                modality: spec.modality,
            };
            let p = match spec.norm {
                Normalization::Percentile {
                    lower_pct,
                    upper_pct,
                    clip,
                } => {
                    let lo = stats.histogram.percentile(lower_pct).ok_or(no_brain)?;
                    let hi = stats.histogram.percentile(upper_pct).ok_or(no_brain)?;
                    let range = hi - lo;
                    let min_range = 1e-6 * libm::fabsf(hi).max(libm::fabsf(lo)).max(1e-6);
                    if range.is_nan() || range <= min_range {
                        return Err(CoreError::ConstantChannel {
                            modality: spec.modality,
                            value: hi,
                        });
                    }
                    ChannelNormParams {
                        offset: lo,
                        gain: 1.0 / range,
                        min: -clip,
                        max: 1.0 + clip,
                    }
                }
                Normalization::ZScore { clip } => {
                    let mean = stats.mean().ok_or(no_brain)?;
                    let sd = stats.sd().ok_or(no_brain)?;
                    if sd.is_nan() || sd <= 1e-6 * libm::fabs(mean).max(1e-6) {
                        return Err(CoreError::ConstantChannel {
                            modality: spec.modality,
                            value: mean as f32,
                        });
                    }
                    ChannelNormParams {
                        offset: mean as f32,
                        gain: (1.0 / sd) as f32,
                        min: -clip,
                        max: clip,
                    }
                }
                Normalization::Fixed {
                    offset,
                    scale,
                    clip,
                } => ChannelNormParams {
                    offset,
                    gain: 1.0 / scale,
                    min: -clip,
                    max: 1.0 + clip,
                },
            };
            // Capacity equals the config's, which is ≤ MAX_CHANNELS.
            let _ = out.push(p);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_accurate_to_a_bin_for_any_gain() {
        for gain in [0.01f32, 1.0, 37.0, 5000.0] {
            let mut h = LogHistogram::default();
            for i in 1..=1000 {
                h.add(i as f32 * gain);
            }
            for (pct, exact) in [(1.0f32, 10.0f32), (50.0, 500.0), (99.0, 990.0)] {
                let got = h.percentile(pct).unwrap_or(f32::NAN);
                let want = exact * gain;
                assert!(
                    (got - want).abs() <= 0.03 * want,
                    "gain {gain} p{pct}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn percentiles_cross_zero_and_negative_values() {
        let mut h = LogHistogram::default();
        for i in -500..=500 {
            h.add(i as f32);
        }
        let median = h.percentile(50.0).unwrap_or(f32::NAN);
        assert!(median.abs() <= 1.0, "{median}");
        let p10 = h.percentile(10.0).unwrap_or(f32::NAN);
        assert!((p10 + 400.0).abs() <= 12.0, "{p10}");
        assert_eq!(LogHistogram::default().percentile(50.0), None);
    }

    #[test]
    fn volume_stats_count_only_brain_voxels() {
        let mut s = VolumeStats::new(1).unwrap_or_default();
        let values = [1.0, 2.0, 3.0, 1000.0];
        let mask = [1, 1, 1, 0];
        assert!(s.add_slice(&[&values], &mask).is_ok());
        assert_eq!(s.brain_voxels(), 3);
        let c = s.channel(0).cloned().unwrap_or_default();
        assert_eq!(c.count(), 3);
        assert_eq!(c.mean(), Some(2.0));
        assert!(matches!(
            s.add_slice(&[&values[..3]], &mask),
            Err(CoreError::LengthMismatch {
                expected: 4,
                got: 3,
                ..
            })
        ));
    }
}
