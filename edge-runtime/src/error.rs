//! The edge runtime's typed error and its mapping to documented process exit codes.

use std::path::PathBuf;

use strokeseg_shared::io::IoError;
use strokeseg_shared::model_meta::MetadataError;
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
    /// The model file cannot be read.
    #[error("{source_name}: {source}")]
    Read {
        /// The model file.
        source_name: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not an ONNX model (truncated, corrupt, not protobuf).
    #[error("{source_name}: not a valid ONNX model: {reason}")]
    Corrupt {
        /// The model file.
        source_name: String,
        /// What the decoder said.
        reason: String,
    },
    /// The model carries no `strokeseg.metadata` entry in `metadata_props`.
    #[error(
        "{source_name}: no strokeseg metadata (metadata_props key {key:?}); export the model with strokeseg-train export"
    )]
    NoMetadata {
        /// The model file.
        source_name: String,
        /// The expected key.
        key: &'static str,
    },
    /// The metadata entry is not valid JSON for `ModelMetadata`.
    #[error("{source_name}: unreadable strokeseg metadata: {reason}")]
    MetadataJson {
        /// The model file.
        source_name: String,
        /// The JSON error.
        reason: String,
    },
    /// The metadata is readable but inconsistent or of another version.
    #[error("{source_name}: {source}")]
    Metadata {
        /// The model file.
        source_name: String,
        /// What `ModelMetadata::validate` refused.
        #[source]
        source: MetadataError,
    },
    /// The graph's input or output disagrees with the metadata.
    #[error("{source_name}: {what}: metadata says {expected}, the graph has {got}")]
    ShapeMismatch {
        /// The model file.
        source_name: String,
        /// Which tensor (`input`, `output`).
        what: &'static str,
        /// What the metadata declares.
        expected: String,
        /// What the graph has.
        got: String,
    },
    /// tract could not load, type or optimise the graph.
    #[error("{source_name}: cannot prepare the model for inference: {reason}")]
    Load {
        /// The model file.
        source_name: String,
        /// tract's error chain.
        reason: String,
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

    /// The process exit code for this error (documented in the README):
    /// 3 bad input study or file, 4 bad configuration, 5 bad or missing model,
    /// 6 outputs cannot be written, 7 status pins unavailable, 130 interrupted.
    pub fn exit_code(&self) -> u8 {
        match self {
            EdgeError::Input(_) | EdgeError::Study { .. } => 3,
            EdgeError::Config(_) | EdgeError::Settings { .. } => 4,
            EdgeError::Model(ModelError::Inference { .. }) => 1,
            EdgeError::Model(_) => 5,
            EdgeError::Output { .. } => 6,
            EdgeError::Pin { .. } => 7,
            EdgeError::Interrupted => 130,
        }
    }
}
