//! The trainer library's error type: what went wrong while loading data, training, evaluating
//! or reading and writing a run folder, with the path or the values that disagree.

use std::path::{Path, PathBuf};

use strokeseg_io::IoError;
use strokeseg_shared::CoreError;
use strokeseg_shared::metrics::MetricsError;
use strokeseg_shared::surface::SurfaceError;

use strokeseg_shared::postprocess::SliceMaskError;

/// Why loading, training, evaluation or a run folder operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A study could not be read, or an output could not be written (the shared I/O error
    /// names the file).
    #[error(transparent)]
    Io(#[from] IoError),
    /// Preprocessing refused a slice of a case.
    #[error("{case_dir}: preprocessing failed: {source}")]
    Preprocess {
        /// The case folder.
        case_dir: PathBuf,
        /// What the shared core refused.
        source: CoreError,
    },
    /// Postprocessing refused a predicted slice.
    #[error("{case}: postprocessing failed: {source}")]
    Postprocess {
        /// The case name.
        case: String,
        /// What the shared postprocessing refused.
        source: SliceMaskError,
    },
    /// Metrics could not be computed for a case.
    #[error("{case}: metrics failed: {source}")]
    Metrics {
        /// The case name.
        case: String,
        /// What the shared metrics refused.
        source: MetricsError,
    },
    /// Surface distances could not be computed for a case.
    #[error("{case}: surface distances failed: {source}")]
    Surface {
        /// The case name.
        case: String,
        /// What the shared surface-distance code refused.
        source: SurfaceError,
    },
    /// A libtorch operation failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    File {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A JSON file could not be parsed or written.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A PNG could not be encoded.
    #[error("{path}: {source}")]
    Png {
        /// The file.
        path: PathBuf,
        /// The encoder's error.
        source: png::EncodingError,
    },
    /// The dataset folder yields nothing to train on.
    #[error("{path}: {reason}")]
    EmptyDataset {
        /// The dataset folder.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// Fewer patients than folds.
    #[error("{n_patients} patient(s) cannot fill {n_folds} folds: use fewer folds or more data")]
    TooFewPatients {
        /// Distinct patients in the dataset.
        n_patients: usize,
        /// Folds asked for.
        n_folds: usize,
    },
    /// A fold index outside `0..n_folds`.
    #[error("fold {fold} does not exist: folds are numbered 0..{n_folds}")]
    NoSuchFold {
        /// The fold asked for.
        fold: usize,
        /// Number of folds.
        n_folds: usize,
    },
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {reason}")]
    Config {
        /// What is wrong, with the offending value.
        reason: String,
    },
    /// The model input size does not fit the network depth.
    #[error(
        "model input {height}×{width} is not a multiple of 2^depth = {multiple}: change the input size or the depth"
    )]
    InputSize {
        /// Input height, pixels.
        height: u16,
        /// Input width, pixels.
        width: u16,
        /// The multiple the U-Net needs.
        multiple: i64,
    },
    /// The run folder holds something else than this command expects.
    #[error("{path}: {reason}")]
    RunFolder {
        /// The run folder or the file in it.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A fold of a cross-validation failed.
    #[error("fold {fold} failed")]
    Fold {
        /// The 0-based fold.
        fold: u32,
        /// Why.
        source: Box<TrainError>,
    },
    /// The loss became NaN or infinite.
    #[error(
        "loss is {loss} at epoch {epoch}, step {step}: training diverged (lower --lr or enable gradient clipping)"
    )]
    NonFiniteLoss {
        /// The loss value.
        loss: f64,
        /// 0-based epoch.
        epoch: u32,
        /// 0-based global step.
        step: u64,
    },
}

impl TrainError {
    /// A [`TrainError::File`] for `path`.
    pub fn file(path: &Path, source: std::io::Error) -> TrainError {
        TrainError::File {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A [`TrainError::Json`] for `path`.
    pub fn json(path: &Path, source: serde_json::Error) -> TrainError {
        TrainError::Json {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A [`TrainError::Config`] with `reason`.
    pub fn config(reason: impl Into<String>) -> TrainError {
        TrainError::Config {
            reason: reason.into(),
        }
    }
}

/// Reads and parses the JSON file at `path`.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::file(path, e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::json(path, e))
}
