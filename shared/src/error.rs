//! The typed error of the no_std core (preprocessing, statistics, brain mask).

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
}
