//! The typed error of the no_std core (preprocessing, statistics, brain mask, perfusion
//! maps).

use crate::modality::Modality;

/// Why a preprocessing step refused its input. Variants carry the values that disagree.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum CoreError {
    /// A buffer does not have the length the geometry or channel count requires.
    #[error("{what}: expected {expected} values, got {got}")]
    LengthMismatch {
        /// Which buffer.
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Given length.
        got: usize,
    },
    /// The number of channels differs from the configuration.
    #[error("expected {expected} channels, got {got}")]
    ChannelCount {
        /// Channels in the configuration.
        expected: usize,
        /// Channels given.
        got: usize,
    },
    /// A configuration value that cannot work.
    #[error("invalid preprocessing config: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: &'static str,
    },
    /// A slice geometry that cannot work (zero size, non-positive spacing).
    #[error("invalid slice geometry: {reason}")]
    InvalidGeometry {
        /// What is wrong.
        reason: &'static str,
    },
    /// No voxel of the volume was inside the brain mask, so no statistics exist.
    #[error("no brain voxels found for channel {modality}: is the map empty or all zero?")]
    NoBrainVoxels {
        /// The channel.
        modality: Modality,
    },
    /// The threshold rule found no healthy tissue to take the reference CBF from.
    #[error("no healthy reference tissue (normal Tmax or contralateral hemisphere) with CBF > 0")]
    NoHealthyTissue,
    /// A channel whose brain-voxel values are all (nearly) equal: it carries no contrast.
    #[error("channel {modality} is constant inside the brain ({value}): cannot normalise")]
    ConstantChannel {
        /// The channel.
        modality: Modality,
        /// The value.
        value: f32,
    },
    /// A dynamic series with too few frames for a baseline, a bolus and its wash-out.
    #[error("dynamic series has {n_frames} frames, at least {min_frames} are needed")]
    TooFewFrames {
        /// Frames in the series.
        n_frames: usize,
        /// Fewest accepted.
        min_frames: usize,
    },
    /// A dynamic series with more frames than the deconvolution is sized for.
    #[error("dynamic series has {n_frames} frames, at most {max_frames} are supported")]
    TooManyFrames {
        /// Frames in the series.
        n_frames: usize,
        /// Most accepted.
        max_frames: usize,
    },
    /// A frame interval that is not a plausible CT perfusion interval.
    #[error(
        "frame interval {dt_s} s is not in 0.1–10 s (give it explicitly if the header is wrong)"
    )]
    InvalidFrameInterval {
        /// The interval, s.
        dt_s: f32,
    },
    /// Frame times that do not increase.
    #[error("frame times do not increase: frame {frame_idx} at {time_s} s after {previous_s} s")]
    NonIncreasingFrameTimes {
        /// The frame whose time is not after the previous one.
        frame_idx: usize,
        /// Its time, s.
        time_s: f32,
        /// The previous frame's time, s.
        previous_s: f32,
    },
    /// Frame times that are not evenly spaced (the deconvolution needs a uniform grid).
    #[error(
        "frame times are not uniform: interval before frame {frame_idx} is {interval_s} s, mean {mean_interval_s} s"
    )]
    NonUniformFrameTimes {
        /// The frame after the deviating interval.
        frame_idx: usize,
        /// That interval, s.
        interval_s: f32,
        /// The mean interval, s.
        mean_interval_s: f32,
    },
    /// No contrast bolus: the best arterial curve of the study does not rise enough.
    #[error(
        "no contrast bolus: the arterial curve peaks {aif_peak_hu} HU above baseline, at least {min_peak_hu} HU is needed (flat curves?)"
    )]
    NoBolus {
        /// Peak enhancement of the best arterial candidate, HU (0 when there was none).
        aif_peak_hu: f32,
        /// Smallest accepted.
        min_peak_hu: f32,
    },
    /// A jump between two frames much larger than the series' frame-to-frame noise: head
    /// motion or a table or calibration shift; the maps would be wrong.
    #[error(
        "frame-to-frame jump at slice {slice_idx}, frame {frame_idx}: mean |ΔHU| {change_hu} vs typical {typical_hu} (motion?)"
    )]
    FrameJump {
        /// The slice.
        slice_idx: usize,
        /// The frame that jumps from the previous one.
        frame_idx: usize,
        /// Its mean absolute change over the head, HU.
        change_hu: f32,
        /// The median change over all frame pairs of the slice, HU.
        typical_hu: f32,
    },
    /// NaN or ±inf values in a dynamic series slice.
    #[error("slice {slice_idx} of the dynamic series holds {count} NaN or infinite values")]
    NonFiniteValues {
        /// The slice.
        slice_idx: usize,
        /// How many.
        count: usize,
    },
}

/// The message of an error and of its causes joined as `error: cause: cause`, leaving out a
/// cause whose message the text before already contains. The errors of this workspace name
/// their cause in their own message (`could not read x.nii: unexpected end of file`) and
/// also expose it as `source()`; printing both would repeat it.
///
/// `chain`: the error first, then its causes (`anyhow::Error::chain()` gives exactly that).
#[cfg(feature = "alloc")]
pub fn chain_message<'a>(
    chain: impl IntoIterator<Item = &'a (dyn core::error::Error + 'static)>,
) -> alloc::string::String {
    use alloc::string::{String, ToString};
    let mut text = String::new();
    for err in chain {
        let message = err.to_string();
        if message.is_empty() || text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::chain_message;

    #[derive(Debug, thiserror::Error)]
    #[error("could not read {path}: {source}")]
    struct Outer {
        path: &'static str,
        #[source]
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("study rejected")]
    struct Top {
        #[source]
        source: Outer,
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "unexpected end of file");
        let top = Top {
            source: Outer {
                path: "x.nii",
                source: io,
            },
        };
        let mut chain: Vec<&(dyn std::error::Error + 'static)> = vec![&top];
        while let Some(next) = chain.last().and_then(|e| e.source()) {
            chain.push(next);
        }
        assert_eq!(chain.len(), 3);
        assert_eq!(
            chain_message(chain),
            "study rejected: could not read x.nii: unexpected end of file"
        );
    }
}
