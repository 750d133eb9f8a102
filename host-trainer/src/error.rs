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
    /// The maps of a case cannot be computed from its raw series as the configuration asks.
    #[error("{case_dir}: computed maps: {reason}")]
    ComputedMaps {
        /// The case folder.
        case_dir: PathBuf,
        /// What is missing or does not match.
        reason: String,
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
    /// A cross-validation cannot be merged: some folds are missing, unfinished or corrupt.
    #[error("{}: cannot merge: {}", run_dir.display(), describe_folds(problems))]
    FoldsNotReady {
        /// The cross-validation folder.
        run_dir: PathBuf,
        /// Every fold that is not ready, in fold order.
        problems: Vec<FoldProblem>,
    },
    /// A sweep cannot be merged: some settings have folds that are not ready.
    #[error("{}: cannot merge the sweep: {}", run_dir.display(), failures.join("; "))]
    SweepNotReady {
        /// The sweep folder.
        run_dir: PathBuf,
        /// Each setting that cannot be merged, with why.
        failures: Vec<String>,
    },
    /// A run folder already holds other settings than the ones asked for.
    #[error(
        "{}: holds a cross-validation with other settings ({reason}): use the same flags, `--resume`, or another --out",
        path.display()
    )]
    SettingsMismatch {
        /// The settings file (`cv.json` or `sweep.json`).
        path: PathBuf,
        /// The first setting that differs.
        reason: String,
    },
    /// A task index outside `0..n_tasks` of a cross-validation or sweep.
    #[error("task {index} does not exist: this run has {n_tasks} tasks (0..{n_tasks})")]
    NoSuchTask {
        /// The task asked for.
        index: usize,
        /// Tasks of the run (settings × folds).
        n_tasks: usize,
    },
    /// A sweep axis (a flag with a list of values) is empty or repeated.
    #[error("sweep axis --{flag}: {reason}")]
    SweepAxis {
        /// The flag, without `--`.
        flag: String,
        /// What is wrong.
        reason: String,
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

/// Why one fold of a cross-validation cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoldState {
    /// Its folder holds no `run.json`: never started.
    Missing,
    /// Started, not finished: epochs completed of the total (0 before the first checkpoint).
    Unfinished {
        /// Epochs completed.
        epochs_done: u32,
        /// Epochs of the run.
        epochs: u32,
    },
    /// A file of the fold cannot be read or does not belong to this fold.
    Corrupt {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// One fold that is not ready for the merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldProblem {
    /// 0-based fold.
    pub fold: u32,
    /// What is wrong.
    pub state: FoldState,
}

impl std::fmt::Display for FoldProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.state {
            FoldState::Missing => write!(f, "fold {} is missing (never started)", self.fold),
            FoldState::Unfinished {
                epochs_done,
                epochs,
            } => write!(
                f,
                "fold {} is unfinished ({epochs_done} of {epochs} epochs)",
                self.fold
            ),
            FoldState::Corrupt { file, reason } => {
                write!(
                    f,
                    "fold {} is corrupt ({}: {reason})",
                    self.fold,
                    file.display()
                )
            }
        }
    }
}

/// `fold 1 is missing …; fold 3 is corrupt …`.
fn describe_folds(problems: &[FoldProblem]) -> String {
    let parts: Vec<String> = problems.iter().map(ToString::to_string).collect();
    parts.join("; ")
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
