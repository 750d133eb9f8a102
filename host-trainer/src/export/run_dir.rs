//! Export from a training run folder (the contract in [`crate::run`]): `RUN/run.json`
//! and `RUN/checkpoints/{best,last}.safetensors` → `OUT/model.onnx`, optionally
//! `OUT/model.int8.onnx`, and `OUT/SHA256SUMS`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use strokeseg_shared::PreprocessConfig;
use strokeseg_shared::model_meta::TrainingSummary;
use strokeseg_shared::postprocess::PostprocessConfig;

use super::{
    ExportError, ExportedModel, ModelDescription, RangeRule, UNetWeights, calibration_inputs,
    export_fp32, export_int8, model_metadata,
};
use crate::model::UNetConfig;
use crate::run::{
    BEST_CHECKPOINT, CHECKPOINT_DIR, LAST_CHECKPOINT, RUN_FILE as RUN_CONFIG_FILE,
    RUN_SCHEMA_VERSION, RunConfig, RunEvaluation, SplitInfo,
};
use strokeseg_io::atomic::write_atomically;
/// The fp32 model's file name in the output folder.
pub const FP32_FILE: &str = "model.onnx";
/// The int8 model's file name in the output folder.
pub const INT8_FILE: &str = "model.int8.onnx";
/// Checksums of the exported files (`sha256sum -c` format).
pub const SHA256SUMS_FILE: &str = "SHA256SUMS";

/// The fields of [`RunConfig`] (`run.json`) the exporter reads; the others are ignored, so
/// the exporter keeps working when the trainer records more.
#[derive(Debug, Clone, serde::Deserialize)]
struct RunFile {
    schema_version: Option<u32>,
    unet: UNetConfig,
    preprocess: PreprocessConfig,
    #[serde(default)]
    postprocess: PostprocessConfig,
    #[serde(default)]
    training: TrainingSummary,
    data_dir: Option<PathBuf>,
    git_revision: Option<String>,
    #[serde(default)]
    split: Option<SplitInfo>,
}

impl ModelDescription {
    /// The description of a model exported from the run `run` (name and version given).
    pub fn from_run_config(run: &RunConfig, name: &str, version: &str) -> ModelDescription {
        let mut training = run.training.clone();
        if training.git_revision.is_none() {
            training.git_revision.clone_from(&run.git_revision);
        }
        ModelDescription {
            version: version.to_owned(),
            ..ModelDescription::new(name, run.preprocess.clone(), run.postprocess, training)
        }
    }
}

/// Which checkpoint of a run to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Checkpoint {
    /// Best validation score.
    #[default]
    Best,
    /// Last epoch.
    Last,
}

impl Checkpoint {
    /// Its file inside a run folder.
    pub fn path_in(self, run_dir: &Path) -> PathBuf {
        let file = match self {
            Checkpoint::Best => BEST_CHECKPOINT,
            Checkpoint::Last => LAST_CHECKPOINT,
        };
        run_dir.join(CHECKPOINT_DIR).join(file)
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Checkpoint::Best => "best",
            Checkpoint::Last => "last",
        })
    }
}

impl FromStr for Checkpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "best" => Ok(Checkpoint::Best),
            "last" => Ok(Checkpoint::Last),
            other => Err(format!(
                "unknown checkpoint `{other}`: expected best or last"
            )),
        }
    }
}

/// What to export from a run folder.
#[derive(Debug, Clone, PartialEq)]
pub struct RunExportOptions {
    /// The run folder.
    pub run_dir: PathBuf,
    /// Which checkpoint.
    pub checkpoint: Checkpoint,
    /// Output folder (created if missing).
    pub out_dir: PathBuf,
    /// Model name in the metadata; the output folder's name when `None`.
    pub name: Option<String>,
    /// Model version in the metadata.
    pub version: String,
    /// Also write the int8 model, calibrated as given.
    pub int8: Option<Int8Calibration>,
}

/// Where the int8 model's calibration slices come from.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Calibration {
    /// Dataset folder (`case_N` folders); the run's `data_dir` when `None`.
    pub data_dir: Option<PathBuf>,
    /// Number of slices, spread evenly over the cases.
    pub n_slices: usize,
    /// How each activation's range is chosen from the slices.
    pub range_rule: RangeRule,
}

/// What [`export_run`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct RunExport {
    /// The fp32 model.
    pub fp32: ExportedModel,
    /// The int8 model, when asked for.
    pub int8: Option<ExportedModel>,
    /// The checksum file.
    pub sha256sums: PathBuf,
    /// Calibration slices used.
    pub calibration_slices: usize,
}

fn read_run_file(run_dir: &Path) -> Result<RunFile, ExportError> {
    let path = run_dir.join(RUN_CONFIG_FILE);
    if !path.is_file() {
        return Err(ExportError::MissingRunConfig { path });
    }
    let text = std::fs::read_to_string(&path).map_err(|e| ExportError::io(&path, e))?;
    let run: RunFile = serde_json::from_str(&text).map_err(|source| ExportError::RunConfig {
        path: path.clone(),
        source,
    })?;
    match run.schema_version {
        Some(v) if v != RUN_SCHEMA_VERSION => Err(ExportError::ConfigMismatch {
            context: path.display().to_string(),
            reason: format!("run.json schema version {v}, this build reads {RUN_SCHEMA_VERSION}"),
        }),
        _ => Ok(run),
    }
}

/// The held-out mean case Dice of the run's last checkpoint, from `evaluation.json`.
fn last_checkpoint_dice(run_dir: &Path) -> Option<f64> {
    RunEvaluation::load(run_dir)
        .ok()?
        .last
        .map(|l| l.mean_dice())
}

/// Exports a run: reads `run.json` and the checkpoint, checks they agree, writes the
/// fp32 model (and the int8 one, calibrated on the dataset given) and `SHA256SUMS` into
/// the output folder. Each file appears complete or not at all.
pub fn export_run(options: &RunExportOptions) -> Result<RunExport, ExportError> {
    let run = read_run_file(&options.run_dir)?;
    let config_path = options.run_dir.join(RUN_CONFIG_FILE);
    run.preprocess
        .validate()
        .map_err(|e| ExportError::ConfigMismatch {
            context: config_path.display().to_string(),
            reason: format!("preprocess: {e}"),
        })?;
    let checkpoint = options.checkpoint.path_in(&options.run_dir);
    let (weights, sha256) = UNetWeights::from_checkpoint(&checkpoint, run.unet)?;
    let name = options.name.clone().unwrap_or_else(|| {
        options.out_dir.file_name().map_or_else(
            || "strokeseg-model".into(),
            |n| n.to_string_lossy().into_owned(),
        )
    });
    let mut training = run.training;
    if training.git_revision.is_none() {
        training.git_revision = run.git_revision;
    }
    if options.checkpoint == Checkpoint::Last {
        // run.json's val_dice is the best checkpoint's; the last one's is in evaluation.json
        // (absent while a run is unfinished: then unknown rather than another checkpoint's).
        training.val_dice = last_checkpoint_dice(&options.run_dir);
    }
    let description = ModelDescription {
        version: options.version.clone(),
        ..ModelDescription::new(name, run.preprocess, run.postprocess, training)
    };
    let metadata = model_metadata(&run.unet, &description, &sha256);
    // Validate (and load calibration data) before the output folder is touched.
    let with_context = |e: ExportError| match e {
        ExportError::ConfigMismatch { context, reason } => ExportError::ConfigMismatch {
            context: format!(
                "{} and {}: {context}",
                config_path.display(),
                checkpoint.display()
            ),
            reason,
        },
        other => other,
    };
    super::check_metadata(&run.unet, &metadata).map_err(with_context)?;
    let calibration = match &options.int8 {
        Some(int8) => {
            // The run's own dataset: calibrate on its training cases only, so that a held-out
            // fold stays unseen by the int8 model too.
            let (data_dir, only_cases) = match (&int8.data_dir, &run.data_dir) {
                (Some(dir), _) => (dir, None),
                (None, Some(dir)) => (
                    dir,
                    run.split
                        .as_ref()
                        .filter(|s| !s.val_cases.is_empty() && !s.train_cases.is_empty())
                        .map(|s| s.train_cases.as_slice()),
                ),
                (None, None) => {
                    return Err(ExportError::ConfigMismatch {
                        context: config_path.display().to_string(),
                        reason: "int8 calibration needs a dataset: run.json has no data_dir".into(),
                    });
                }
            };
            Some((
                calibration_inputs(data_dir, &metadata.preprocess, int8.n_slices, only_cases)?,
                int8.range_rule,
            ))
        }
        None => None,
    };
    std::fs::create_dir_all(&options.out_dir).map_err(|e| ExportError::io(&options.out_dir, e))?;
    let fp32 = export_fp32(&weights, &metadata, &options.out_dir.join(FP32_FILE))?;
    let int8 = match &calibration {
        Some((inputs, rule)) => Some(export_int8(
            &weights,
            &metadata,
            inputs,
            *rule,
            &options.out_dir.join(INT8_FILE),
        )?),
        None => None,
    };
    let mut sums = format!("{}  {FP32_FILE}\n", fp32.sha256);
    if let Some(m) = &int8 {
        sums.push_str(&format!("{}  {INT8_FILE}\n", m.sha256));
    }
    let sha256sums = options.out_dir.join(SHA256SUMS_FILE);
    write_atomically(&sha256sums, sums.as_bytes())?;
    Ok(RunExport {
        fp32,
        int8,
        sha256sums,
        calibration_slices: calibration.as_ref().map_or(0, |(inputs, _)| inputs.len()),
    })
}
