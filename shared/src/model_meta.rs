//! The model I/O contract: the metadata every exported ONNX model carries (as one JSON
//! value under [`METADATA_KEY`] in `metadata_props`), written by the trainer's exporter and
//! required by the edge runtime, which configures itself from it.

use alloc::string::String;
use alloc::vec::Vec;

use crate::config::{PREPROCESS_VERSION, PreprocessConfig};
use crate::postprocess::PostprocessConfig;

/// The `metadata_props` key that holds the JSON-serialised [`ModelMetadata`].
pub const METADATA_KEY: &str = "strokeseg.metadata";

/// Version of the [`ModelMetadata`] layout.
pub const METADATA_SCHEMA_VERSION: u32 = 1;

/// Why a model's metadata cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// Written by a different metadata layout.
    #[error("metadata schema version {found}, this build reads {expected}")]
    SchemaVersion {
        /// Supported.
        expected: u32,
        /// In the model.
        found: u32,
    },
    /// Trained with different preprocessing code.
    #[error(
        "model was trained with preprocessing version {found}, this build implements {expected}: re-export or retrain the model"
    )]
    PreprocessVersion {
        /// Implemented here.
        expected: u32,
        /// In the model.
        found: u32,
    },
    /// The declared input shape disagrees with the preprocessing config.
    #[error(
        "input shape {shape:?} disagrees with the preprocessing config ({channels} channels, {height}×{width})"
    )]
    InputShape {
        /// Declared `[1, C, H, W]`.
        shape: [usize; 4],
        /// Channels in the config.
        channels: usize,
        /// Config input height.
        height: u16,
        /// Config input width.
        width: u16,
    },
    /// Any other inconsistent field.
    #[error("invalid model metadata: {0}")]
    Invalid(String),
}

/// How the model was trained (for the model card and the report).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct TrainingSummary {
    /// Training data description (e.g. `phantom seed 7, 40 cases` or `ISLES 2018 TRAINING`).
    pub data: String,
    /// Loss (`hybrid`, `ce`, `gdl`, `dicece`).
    pub loss: String,
    /// Epochs trained.
    pub epochs: u32,
    /// Number of cross-validation folds (0 when trained on everything).
    pub folds: u32,
    /// The held-out fold, when trained on a fold.
    pub fold: Option<u32>,
    /// Mean per-case Dice on the held-out cases, when measured.
    pub val_dice: Option<f64>,
    /// Random seed.
    pub seed: u64,
    /// Source revision of the trainer (git describe), when known.
    pub git_revision: Option<String>,
}

/// Everything the edge runtime needs to know about a model, stored inside the model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelMetadata {
    /// [`METADATA_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Model name (e.g. `strokeseg-phantom-resunet`).
    pub name: String,
    /// Model version (semver).
    pub version: String,
    /// `fp32` or `int8`.
    pub precision: String,
    /// The exact preprocessing the model was trained with.
    pub preprocess: PreprocessConfig,
    /// Postprocessing defaults (threshold, minimum component area).
    pub postprocess: PostprocessConfig,
    /// Class names by output channel (`["background", "lesion"]`).
    pub class_names: Vec<String>,
    /// Name of the graph input.
    pub input_name: String,
    /// Input shape `[1, C, H, W]` (static).
    pub input_shape: [usize; 4],
    /// Name of the logits output `[1, n_classes, H, W]`.
    pub output_name: String,
    /// Architecture description (free text, e.g. `ResUNet2d base 16 depth 4`).
    pub architecture: String,
    /// How it was trained.
    pub training: TrainingSummary,
    /// Export time, RFC 3339 UTC.
    pub exported_at: String,
    /// SHA-256 (hex) of the checkpoint the weights came from.
    pub source_checkpoint_sha256: String,
}

impl ModelMetadata {
    /// Checks the schema and preprocessing versions and that the shapes agree with the
    /// preprocessing config.
    pub fn validate(&self) -> Result<(), MetadataError> {
        if self.schema_version != METADATA_SCHEMA_VERSION {
            return Err(MetadataError::SchemaVersion {
                expected: METADATA_SCHEMA_VERSION,
                found: self.schema_version,
            });
        }
        if self.preprocess.version != PREPROCESS_VERSION {
            return Err(MetadataError::PreprocessVersion {
                expected: PREPROCESS_VERSION,
                found: self.preprocess.version,
            });
        }
        self.preprocess
            .validate()
            .map_err(|e| MetadataError::Invalid(alloc::format!("{e}")))?;
        let p = &self.preprocess;
        let [n, c, h, w] = self.input_shape;
        if n != 1
            || c != p.n_channels()
            || h != usize::from(p.input_height)
            || w != usize::from(p.input_width)
        {
            return Err(MetadataError::InputShape {
                shape: self.input_shape,
                channels: p.n_channels(),
                height: p.input_height,
                width: p.input_width,
            });
        }
        if self.class_names.len() < 2 {
            return Err(MetadataError::Invalid("fewer than two class names".into()));
        }
        if self.input_name.is_empty() || self.output_name.is_empty() {
            return Err(MetadataError::Invalid("empty input or output name".into()));
        }
        Ok(())
    }
}
