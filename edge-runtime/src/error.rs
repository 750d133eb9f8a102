//! The edge runtime's typed error and its mapping to documented process exit codes.

use strokeseg_shared::io::IoError;

/// Why the edge runtime could not do its job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EdgeError {
    /// The study (or another input file) is missing, malformed or inconsistent.
    #[error(transparent)]
    Input(#[from] IoError),
    /// The preprocessing configuration is invalid.
    #[error("invalid preprocessing config: {0}")]
    Config(#[from] strokeseg_shared::CoreError),
}

impl EdgeError {
    /// The process exit code for this error (documented in the README):
    /// 3 = bad input study or file, 4 = bad configuration.
    pub fn exit_code(&self) -> u8 {
        match self {
            EdgeError::Input(_) => 3,
            EdgeError::Config(_) => 4,
        }
    }
}
