//! Why an export or a model inspection failed: every variant names the file involved and
//! carries the values that disagree.

use std::path::PathBuf;

/// An export or model-inspection failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// A file could not be read, written or renamed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An output could not be written (the shared atomic writer names the file).
    #[error(transparent)]
    Write(#[from] strokeseg_io::IoError),
    /// The run folder has no `run.json`.
    #[error("{path}: run config not found (is this a training run folder?)")]
    MissingRunConfig {
        /// Where `run.json` was expected.
        path: PathBuf,
    },
    /// `run.json` is not valid JSON of the expected layout.
    #[error("{path}: invalid run config: {source}")]
    RunConfig {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The checkpoint file does not exist.
    #[error("{path}: checkpoint not found")]
    MissingCheckpoint {
        /// Where it was expected.
        path: PathBuf,
    },
    /// The checkpoint could not be decoded (not a safetensors file, truncated, …).
    #[error("{path}: cannot read checkpoint: {reason}")]
    CorruptCheckpoint {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// A network parameter is absent from the checkpoint.
    #[error(
        "{source_name}: parameter `{name}` is missing (checkpoint made for another network config?)"
    )]
    MissingParameter {
        /// The checkpoint file, or `VarStore`.
        source_name: String,
        /// The parameter path (`enc0.conv1.weight`).
        name: String,
    },
    /// The checkpoint holds a parameter the configured network does not have.
    #[error(
        "{source_name}: unexpected parameter `{name}` (checkpoint made for another network config?)"
    )]
    UnexpectedParameter {
        /// The checkpoint file, or `VarStore`.
        source_name: String,
        /// The parameter path.
        name: String,
    },
    /// A parameter has a different shape than the configured network needs.
    #[error(
        "{source_name}: parameter `{name}` has shape {got:?}, the network config needs {expected:?}"
    )]
    ParameterShape {
        /// The checkpoint file, or `VarStore`.
        source_name: String,
        /// The parameter path.
        name: String,
        /// Shape the config implies.
        expected: Vec<i64>,
        /// Shape found.
        got: Vec<i64>,
    },
    /// A parameter holds NaN or ±inf.
    #[error("{source_name}: parameter `{name}` holds non-finite values")]
    NonFiniteParameter {
        /// The checkpoint file, or `VarStore`.
        source_name: String,
        /// The parameter path.
        name: String,
    },
    /// The network config and the preprocessing / metadata disagree.
    #[error("{context}: {reason}")]
    ConfigMismatch {
        /// Which file or object the config came from.
        context: String,
        /// What disagrees, with the values.
        reason: String,
    },
    /// The model metadata does not validate.
    #[error("model metadata: {0}")]
    Metadata(#[from] strokeseg_shared::model_meta::MetadataError),
    /// Calibration for int8 could not run.
    #[error("calibration: {0}")]
    Calibration(String),
    /// A libtorch call failed.
    #[error("{context}: {source}")]
    Torch {
        /// What was being done.
        context: String,
        /// The libtorch error.
        source: tch::TchError,
    },
    /// tract refused or failed to run a model.
    #[error("{context}: {reason}")]
    Tract {
        /// What was being done (names the model).
        context: String,
        /// tract's error chain.
        reason: String,
    },
    /// A file is not a readable ONNX model.
    #[error("{path}: not a valid ONNX model: {reason}")]
    InvalidModel {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl ExportError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> ExportError {
        ExportError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn tract(
        context: impl Into<String>,
        err: &tract_onnx::prelude::TractError,
    ) -> ExportError {
        ExportError::Tract {
            context: context.into(),
            reason: format!("{err:#}"),
        }
    }
}
