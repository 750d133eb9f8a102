//! The edge runtime's typed error and its mapping to documented process exit codes.

use std::path::PathBuf;

use strokeseg_io::IoError;
use strokeseg_model::ModelFileError;
use strokeseg_shared::postprocess::PostprocessError;

/// Why a model cannot be used. Every variant names the model (file path or `embedded`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// `--method model` without `--model`, and no default model is embedded in this build.
    #[error(
        "no model: this build has no embedded default model (models/default/model.onnx was absent at build time); pass --model FILE or use --method threshold"
    )]
    NoModel,
    /// The model file cannot be read, is not ONNX, or breaks the strokeseg contract
    /// (metadata, input and output); the shared model reader names the file.
    #[error(transparent)]
    File(#[from] ModelFileError),
    /// tract could not load, type or optimise the graph.
    #[error("{source_name}: cannot prepare the model for inference: {reason}")]
    Load {
        /// The model file.
        source_name: String,
        /// tract's error chain.
        reason: String,
    },
    /// Two members of an ensemble do not take the same input or give the same output.
    #[error(
        "{other}: cannot be averaged with {first} in one ensemble: {what} (every member needs the same preprocessing, input shape, classes and postprocessing)"
    )]
    EnsembleMismatch {
        /// The first member, whose contract the others must match.
        first: String,
        /// The member that differs.
        other: String,
        /// What differs.
        what: String,
    },
    /// Running the model on a slice failed.
    #[error("{source_name}: inference failed on slice {slice_idx}: {reason}")]
    Inference {
        /// The model file.
        source_name: String,
        /// The slice.
        slice_idx: usize,
        /// tract's error chain.
        reason: String,
    },
}

/// Why the edge runtime could not do its job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EdgeError {
    /// The study (or another input file) is missing, malformed or inconsistent.
    #[error(transparent)]
    Input(#[from] IoError),
    /// The preprocessing configuration (or the threshold rule) is invalid, or the study's
    /// values cannot be preprocessed with it.
    #[error("invalid preprocessing config: {0}")]
    Config(#[from] strokeseg_shared::CoreError),
    /// A configuration file or option that cannot work.
    #[error("{path}: {reason}")]
    Settings {
        /// The config file (or `command line`).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The model is missing, corrupt, or disagrees with its metadata.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A study value the pipeline cannot process (preprocessing or postprocessing refused).
    #[error("{path}: {reason}")]
    Study {
        /// The case folder.
        path: PathBuf,
        /// What was refused.
        reason: String,
    },
    /// An output could not be written, renamed or removed.
    #[error("{path}: cannot write output: {source}")]
    Output {
        /// The output file or folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A status pin (GPIO line) could not be opened.
    #[error("status pin {pin}: {reason}")]
    Pin {
        /// Which pin (`busy`, `done`, `alert`, `fault`).
        pin: &'static str,
        /// What failed.
        reason: String,
    },
    /// A received DICOM study or instance cannot be read or segmented (refused series,
    /// only a raw dynamic series, broken geometry), or a DICOM result cannot be encoded.
    #[error(transparent)]
    Dicom(strokeseg_dicom::DicomError),
    /// Stopped by SIGTERM/SIGINT before the work was complete; nothing was published.
    #[error("interrupted by a signal; nothing was published")]
    Interrupted,
}

impl From<PostprocessError> for EdgeError {
    fn from(e: PostprocessError) -> Self {
        EdgeError::Study {
            path: PathBuf::from("postprocessing"),
            reason: e.to_string(),
        }
    }
}

impl EdgeError {
    /// Wraps an OS error on an output path.
    pub fn output(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EdgeError::Output {
            path: path.into(),
            source,
        }
    }

    /// An error from writing an output: OS and serialisation errors become
    /// [`EdgeError::Output`] (exit code 6), anything else stays an input error.
    pub fn writing(e: IoError) -> Self {
        match e {
            IoError::Io { path, source } => EdgeError::Output { path, source },
            IoError::Json { path, source } => EdgeError::Output {
                path,
                source: std::io::Error::other(source),
            },
            other => other.into(),
        }
    }

    /// A DICOM node error: OS errors (disk full, permissions) become
    /// [`EdgeError::Output`] (the box's fault: the study is retried), the rest
    /// [`EdgeError::Dicom`] (the study's fault: it fails).
    pub fn dicom(e: strokeseg_dicom::DicomError) -> Self {
        use strokeseg_dicom::DicomError as D;
        match e {
            D::Io { path, source } => EdgeError::Output { path, source },
            D::Study(io) => EdgeError::writing(io),
            other => EdgeError::Dicom(other),
        }
    }

    /// The process exit code for this error (documented in the README):
    /// 3 bad input study or file, 4 bad configuration, 5 bad or missing model,
    /// 6 outputs cannot be written, 7 status pins unavailable, 130 interrupted.
    pub fn exit_code(&self) -> u8 {
        match self {
            EdgeError::Input(_) | EdgeError::Study { .. } | EdgeError::Dicom(_) => 3,
            EdgeError::Config(_) | EdgeError::Settings { .. } => 4,
            EdgeError::Model(ModelError::Inference { .. }) => 1,
            EdgeError::Model(_) => 5,
            EdgeError::Output { .. } => 6,
            EdgeError::Pin { .. } => 7,
            EdgeError::Interrupted => 130,
        }
    }
}
