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
