//! ONNX export of the trained ResUNet, fp32 and int8, with the model metadata contract
//! (`strokeseg_shared::model_meta`) inside.
//!
//! tch cannot write ONNX, so the graph is built here from the network's parameters
//! ([`UNetWeights`]) with tract's protobuf types and prost:
//!
//! - **fp32** ([`export_fp32`]): BatchNorm folded into the convolutions, fixed input
//!   `[1, C, H, W]` from the preprocessing config, output logits `[1, K, H, W]`.
//! - **int8** ([`export_int8`]): static post-training quantisation calibrated on
//!   preprocessed slices (min/max of every activation, observed by running the fp32 graph
//!   in tract), in the QOperator form that tract runs with its integer kernels; the
//!   `graph` module documents the form, ARCHITECTURE.md says why.
//!
//! Every file is written to `<name>.tmp` and renamed when complete; the metadata is
//! validated before anything is written. `strokeseg_model::ModelInfo` reads any model back.

mod error;
mod graph;
mod onnx;
mod run_dir;
mod slices;
mod tract_run;
mod weights;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use strokeseg_io::atomic::write_atomically;
use strokeseg_model::sha256_hex;
use strokeseg_shared::PreprocessConfig;
use strokeseg_shared::model_meta::{
    METADATA_KEY, METADATA_SCHEMA_VERSION, ModelMetadata, TrainingSummary,
};
use strokeseg_shared::postprocess::PostprocessConfig;
use tract_onnx::pb::ModelProto;

pub use error::ExportError;
pub use graph::{Range, RangeRule};
pub use run_dir::{Checkpoint, Int8Calibration, RunExport, RunExportOptions, export_run};
pub use slices::{PreparedSlice, calibration_inputs, prepare_study};
pub use tract_run::TractModel;
pub use weights::{FoldedUNet, UNetWeights, parameter_shapes};

use crate::model::UNetConfig;
use graph::{Fp32Emitter, Int8Emitter, walk};

/// Name of the graph input unless the caller picks another.
pub const DEFAULT_INPUT_NAME: &str = "input";
/// Name of the logits output unless the caller picks another.
pub const DEFAULT_OUTPUT_NAME: &str = "logits";
/// `precision` of an fp32 model.
pub const PRECISION_FP32: &str = "fp32";
/// `precision` of an int8 model.
pub const PRECISION_INT8: &str = "int8";

/// What a model is, beyond its weights: the parts of [`ModelMetadata`] a caller decides.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelDescription {
    /// Model name (`strokeseg-phantom-resunet`).
    pub name: String,
    /// Model version (semver).
    pub version: String,
    /// The preprocessing the model was trained with.
    pub preprocess: PreprocessConfig,
    /// Postprocessing defaults.
    pub postprocess: PostprocessConfig,
    /// How it was trained.
    pub training: TrainingSummary,
    /// Class names by output channel.
    pub class_names: Vec<String>,
}

impl ModelDescription {
    /// A description with the usual class names `["background", "lesion"]`.
    pub fn new(
        name: impl Into<String>,
        preprocess: PreprocessConfig,
        postprocess: PostprocessConfig,
        training: TrainingSummary,
    ) -> ModelDescription {
        ModelDescription {
            name: name.into(),
            version: "0.1.0".into(),
            preprocess,
            postprocess,
            training,
            class_names: vec!["background".into(), "lesion".into()],
        }
    }
}

/// The fp32 metadata for a network of `config` described by `description`, with the
/// input/output names [`DEFAULT_INPUT_NAME`]/[`DEFAULT_OUTPUT_NAME`], the export time now
/// and the checkpoint hash given. Not validated yet: the exporters do that.
pub fn model_metadata(
    config: &UNetConfig,
    description: &ModelDescription,
    source_checkpoint_sha256: &str,
) -> ModelMetadata {
    let p = &description.preprocess;
    ModelMetadata {
        schema_version: METADATA_SCHEMA_VERSION,
        name: description.name.clone(),
        version: description.version.clone(),
        precision: PRECISION_FP32.into(),
        preprocess: p.clone(),
        postprocess: description.postprocess,
        class_names: description.class_names.clone(),
        input_name: DEFAULT_INPUT_NAME.into(),
        input_shape: [
            1,
            p.n_channels(),
            usize::from(p.input_height),
            usize::from(p.input_width),
        ],
        output_name: DEFAULT_OUTPUT_NAME.into(),
        architecture: architecture_text(config),
        training: description.training.clone(),
        exported_at: rfc3339_utc(SystemTime::now()),
        source_checkpoint_sha256: source_checkpoint_sha256.to_owned(),
    }
}

/// `ResUNet2d in 5 classes 2 base 16 depth 4 (BN folded)`.
pub fn architecture_text(config: &UNetConfig) -> String {
    format!(
        "ResUNet2d in {} classes {} base {} depth {}: residual blocks (3x3 conv, ReLU, 3x3 conv, \
         1x1 projection when widths differ), 2x2 max pooling, 2x2/2 transposed conv up, \
         concat skips, 1x1 head; BatchNorm folded",
        config.in_channels, config.n_classes, config.base_width, config.depth
    )
}

/// What was written.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedModel {
    /// The model file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// SHA-256 (hex) of the file.
    pub sha256: String,
    /// The metadata inside.
    pub metadata: ModelMetadata,
}

/// Checks that `metadata` validates and fits a network of `config`.
pub(crate) fn check_metadata(
    config: &UNetConfig,
    metadata: &ModelMetadata,
) -> Result<(), ExportError> {
    metadata.validate()?;
    let bad = |reason: String| ExportError::ConfigMismatch {
        context: "model metadata vs network config".into(),
        reason,
    };
    let [_, c, h, w] = metadata.input_shape;
    if i64::try_from(c).ok() != Some(config.in_channels) {
        return Err(bad(format!(
            "the preprocessing has {c} channels, the network {} input channels",
            config.in_channels
        )));
    }
    if i64::try_from(metadata.class_names.len()).ok() != Some(config.n_classes) {
        return Err(bad(format!(
            "{} class names for a network with {} classes",
            metadata.class_names.len(),
            config.n_classes
        )));
    }
    let multiple = usize::try_from(config.size_multiple()).unwrap_or(usize::MAX);
    if h % multiple != 0 || w % multiple != 0 {
        return Err(bad(format!(
            "input {h}×{w} is not a multiple of {multiple} (2^depth, depth {})",
            config.depth
        )));
    }
    if metadata.source_checkpoint_sha256.is_empty() {
        return Err(bad("source checkpoint sha256 is empty".into()));
    }
    Ok(())
}

fn build_model(
    net: &FoldedUNet,
    metadata: &ModelMetadata,
    emitter: &mut impl graph::Emit,
) -> Result<ModelProto, ExportError> {
    let mut g = onnx::GraphBuilder::default();
    walk(
        net,
        emitter,
        &mut g,
        &metadata.input_name,
        &metadata.output_name,
    )?;
    let [n, c, h, w] = metadata.input_shape.map(|d| d as i64);
    let graph = g.finish(
        "strokeseg_resunet",
        (&metadata.input_name, onnx::Elem::F32, &[n, c, h, w]),
        (
            &metadata.output_name,
            onnx::Elem::F32,
            &[n, net.config.n_classes, h, w],
        ),
    );
    let json = serde_json::to_string(metadata).map_err(|e| ExportError::ConfigMismatch {
        context: "model metadata".into(),
        reason: format!("cannot serialise: {e}"),
    })?;
    Ok(onnx::model(
        graph,
        &format!("{} ({})", metadata.name, metadata.precision),
        vec![(METADATA_KEY.to_owned(), json)],
    ))
}

/// The fp32 model (BatchNorm folded) as an in-memory ONNX protobuf. `metadata.precision`
/// is set to `fp32`.
pub fn fp32_model(
    weights: &UNetWeights,
    metadata: &ModelMetadata,
) -> Result<ModelProto, ExportError> {
    let metadata = ModelMetadata {
        precision: PRECISION_FP32.into(),
        ..metadata.clone()
    };
    check_metadata(&weights.config(), &metadata)?;
    build_model(&weights.fold(), &metadata, &mut Fp32Emitter)
}

/// Writes the fp32 model to `path` (atomically).
pub fn export_fp32(
    weights: &UNetWeights,
    metadata: &ModelMetadata,
    path: &Path,
) -> Result<ExportedModel, ExportError> {
    let model = fp32_model(weights, metadata)?;
    write_model(&model, path)
}

/// Activation ranges of the fp32 graph over `calibration` inputs (each `[C, H, W]` of
/// the metadata's input shape) chosen by `rule`, keyed by tensor name; the graph input is
/// included.
pub fn calibrate(
    fp32: &ModelProto,
    calibration: &[Vec<f32>],
    rule: RangeRule,
) -> Result<std::collections::HashMap<String, Range>, ExportError> {
    let graph = fp32
        .graph
        .as_ref()
        .ok_or_else(|| ExportError::Calibration("fp32 model has no graph".into()))?;
    let input_name = graph
        .input
        .first()
        .map(|i| i.name.clone())
        .ok_or_else(|| ExportError::Calibration("fp32 model has no input".into()))?;
    if calibration.is_empty() {
        return Err(ExportError::Calibration(
            "at least one calibration slice is needed".into(),
        ));
    }
    if let RangeRule::Percentile { percent } = rule
        && !(percent > 50.0 && percent <= 100.0)
    {
        return Err(ExportError::Calibration(format!(
            "calibration percentile {percent} is outside (50, 100]"
        )));
    }
    let observed: Vec<String> = graph.node.iter().flat_map(|n| n.output.clone()).collect();
    let bytes = onnx::encode(fp32);
    let model = TractModel::from_bytes(&bytes, "fp32 model (calibration)", Some(&observed))?;
    let [_, c, h, w] = model.input_shape();
    if let Some(bad) = calibration.iter().find(|x| x.len() != c * h * w) {
        return Err(ExportError::Calibration(format!(
            "calibration input has {} values, the model needs {c}×{h}×{w}",
            bad.len()
        )));
    }
    let mut ranges = model.ranges(calibration, rule)?;
    let mut input = Range {
        min: f32::INFINITY,
        max: f32::NEG_INFINITY,
    };
    for v in calibration.iter().flatten() {
        input.min = input.min.min(*v);
        input.max = input.max.max(*v);
    }
    if let RangeRule::Percentile { percent } = rule {
        let mut hist = tract_run::Histogram::new(input);
        for x in calibration {
            hist.add_all(x);
        }
        input = hist.central(percent);
    }
    ranges.insert(input_name, input);
    Ok(ranges)
}

/// The int8 model calibrated on `calibration` (inputs `[C, H, W]` as the metadata's
/// input shape), activation ranges by `rule`. `metadata.precision` is set to `int8`.
pub fn int8_model(
    weights: &UNetWeights,
    metadata: &ModelMetadata,
    calibration: &[Vec<f32>],
    rule: RangeRule,
) -> Result<ModelProto, ExportError> {
    let fp32 = fp32_model(weights, metadata)?;
    let ranges = calibrate(&fp32, calibration, rule)?;
    let metadata = ModelMetadata {
        precision: PRECISION_INT8.into(),
        ..metadata.clone()
    };
    build_model(&weights.fold(), &metadata, &mut Int8Emitter::new(&ranges))
}

/// Writes the int8 model calibrated on `calibration` (ranges by `rule`) to `path`
/// (atomically).
pub fn export_int8(
    weights: &UNetWeights,
    metadata: &ModelMetadata,
    calibration: &[Vec<f32>],
    rule: RangeRule,
    path: &Path,
) -> Result<ExportedModel, ExportError> {
    let model = int8_model(weights, metadata, calibration, rule)?;
    write_model(&model, path)
}

fn write_model(model: &ModelProto, path: &Path) -> Result<ExportedModel, ExportError> {
    let metadata = model
        .metadata_props
        .iter()
        .find(|p| p.key == METADATA_KEY)
        .and_then(|p| serde_json::from_str::<ModelMetadata>(&p.value).ok())
        .ok_or_else(|| ExportError::ConfigMismatch {
            context: path.display().to_string(),
            reason: "model carries no metadata".into(),
        })?;
    let bytes = onnx::encode(model);
    write_atomically(path, &bytes)?;
    Ok(ExportedModel {
        path: path.to_path_buf(),
        bytes: bytes.len() as u64,
        sha256: sha256_hex(&bytes),
        metadata,
    })
}

/// `time` as RFC 3339 UTC with second precision (`2025-01-31T12:00:00Z`).
pub fn rfc3339_utc(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_661);
        assert_eq!(rfc3339_utc(t), "2000-02-29T01:01:01Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_735_689_599);
        assert_eq!(rfc3339_utc(t), "2024-12-31T23:59:59Z");
    }
}
