//! The run folder contract: what `strokeseg-train train` leaves behind, and what the ONNX
//! exporter and later tools read.
//!
//! ```text
//! RUN/
//!   run.json                        RunConfig (below), rewritten after every epoch
//!   checkpoints/best.safetensors    VarStore::save of the ResUNet with the best held-out mean
//!                                   case Dice (no held-out fold: a copy of last)
//!   checkpoints/last.safetensors    the weights after the last completed step
//!   checkpoints/last.optim.safetensors  optimiser moments (`m.<param>`, `v.<param>`)
//!   checkpoints/last.state.json     TrainState: epoch, step, best, history (for --resume)
//!   metrics.csv, metrics.json       one record per epoch (EpochRecord)
//!   steps.csv                       one line per optimiser step: step, epoch, loss, lr, grad norm
//!   curves.png                      training curves (loss, held-out Dice, learning rate)
//!   evaluation.json                 final held-out results of last and best (RunEvaluation,
//!                                   each a Validation): per case counts, Dice…, surface
//!                                   distances (CaseValidation); the shared summary
//! ```
//!
//! A cross-validation run `RUN/` holds `fold_K/` (each a run folder as above, K = 0…),
//! `cv.json` (the command's settings), `cv_summary.json` and `cv_summary.md`.
//!
//! The checkpoints hold every variable of the network under the parameter names documented in
//! [`crate::model`] (BatchNorm running statistics included), as f32 safetensors; load them
//! with [`crate::checkpoint::load_model`]. `run.json` carries the exact `PreprocessConfig`
//! the data went through, so an exported model cannot be fed differently prepared inputs.
//!
//! Every file is written to `<name>.tmp` and renamed when complete.
//!
//! This module is the bottom of the trainer: it holds data (the records of these files and
//! the configuration types they embed) and imports from the trainer only the configuration
//! types of [`crate::model`], [`crate::loss`], [`crate::schedule`] and [`crate::augment`]
//! and the error type, none of which imports anything above it. The code that writes the
//! files ([`crate::train`], [`crate::eval`], [`crate::cv`]) and the code that reads them
//! ([`crate::checkpoint`], [`crate::export`]) depend on it, never the other way round.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strokeseg_eval::{MetricSummary, Summary};
use strokeseg_io::PatientGrouping;
use strokeseg_io::atomic::write_json_atomically;
use strokeseg_shared::PreprocessConfig;
use strokeseg_shared::metrics::{ConfusionCounts, SegmentationMetrics};
use strokeseg_shared::model_meta::TrainingSummary;
use strokeseg_shared::postprocess::PostprocessConfig;
use strokeseg_shared::surface::SurfaceDistances;

use crate::augment::AugmentConfig;
use crate::error::{TrainError, read_json};
use crate::loss::LossConfig;
use crate::model::UNetConfig;
use crate::schedule::{OptimizerConfig, ScheduleConfig};

/// Version of the `run.json` layout.
pub const RUN_SCHEMA_VERSION: u32 = 1;

/// `run.json`.
pub const RUN_FILE: &str = "run.json";
/// The checkpoint folder.
pub const CHECKPOINT_DIR: &str = "checkpoints";
/// Best checkpoint, inside [`CHECKPOINT_DIR`].
pub const BEST_CHECKPOINT: &str = "best.safetensors";
/// Last checkpoint, inside [`CHECKPOINT_DIR`].
pub const LAST_CHECKPOINT: &str = "last.safetensors";
/// Optimiser state of the last checkpoint, inside [`CHECKPOINT_DIR`].
pub const LAST_OPTIMIZER: &str = "last.optim.safetensors";
/// Training state of the last checkpoint, inside [`CHECKPOINT_DIR`].
pub const LAST_STATE: &str = "last.state.json";
/// Per-epoch metrics, CSV.
pub const METRICS_CSV: &str = "metrics.csv";
/// Per-epoch metrics, JSON.
pub const METRICS_JSON: &str = "metrics.json";
/// Per-step log, CSV.
pub const STEPS_CSV: &str = "steps.csv";
/// Training curves.
pub const CURVES_PNG: &str = "curves.png";
/// Final evaluation.
pub const EVALUATION_FILE: &str = "evaluation.json";

/// Arithmetic precision of the training steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 throughout.
    #[default]
    Fp32,
    // The docs of `crate::train` describe it; the line below is also the `--amp` help text.
    /// bf16 forward/backward with f32 master weights (see the module docs).
    Bf16,
}

/// Every training hyper-parameter (recorded in `run.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The loss.
    pub loss: LossConfig,
    /// Epochs to train.
    pub epochs: u32,
    /// Slices per batch.
    pub batch_size: usize,
    /// Optimiser and peak learning rate.
    pub optimizer: OptimizerConfig,
    /// Warm-up and decay.
    pub schedule: ScheduleConfig,
    /// Clip the joint gradient L2 norm to this value (`None`: no clipping).
    pub grad_clip_norm: Option<f64>,
    /// Share of each batch reserved for slices with lesion (0–1).
    pub lesion_fraction: f64,
    /// Lesion size strata the lesion slots are shared out over (≥ 1; 1: uniform over the
    /// lesion slices, what a `run.json` written before this setting reads as); see
    /// [`crate::data::sampler`].
    #[serde(default = "one_stratum")]
    pub lesion_size_strata: usize,
    /// Augmentation.
    pub augment: AugmentConfig,
    /// Validate every this many epochs (and always after the last).
    pub val_every_epochs: u32,
    /// Slices per forward pass during evaluation.
    pub eval_batch_size: usize,
    /// Step precision.
    pub precision: Precision,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            loss: LossConfig::default(),
            epochs: 100,
            batch_size: 8,
            optimizer: OptimizerConfig::default(),
            schedule: ScheduleConfig::default(),
            grad_clip_norm: Some(5.0),
            lesion_fraction: 0.5,
            lesion_size_strata: 3,
            augment: AugmentConfig::default(),
            val_every_epochs: 1,
            eval_batch_size: 16,
            precision: Precision::Fp32,
        }
    }
}

/// What a `run.json` without `lesion_size_strata` means: the uniform lesion sampling it ran.
fn one_stratum() -> usize {
    1
}

impl TrainConfig {
    /// Checks every value; returns the first problem.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |reason: String| Err(TrainError::Config { reason });
        if self.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return bad("batch sizes must be at least 1".into());
        }
        let lr = self.optimizer.lr;
        if !(lr > 0.0 && lr.is_finite()) {
            return bad(format!("learning rate {lr} must be finite and > 0"));
        }
        let l = self.loss;
        for (name, v) in [
            ("lambda_ce", l.lambda_ce),
            ("lambda_gdl", l.lambda_gdl),
            ("ce_weight_power", l.ce_weight_power),
            ("weight_decay", self.optimizer.weight_decay),
            ("warmup_epochs", self.schedule.warmup_epochs),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return bad(format!("{name} = {v} must be finite and ≥ 0"));
            }
        }
        if !(0.0..=1.0).contains(&self.lesion_fraction) {
            return bad(format!(
                "lesion_fraction = {} must be in [0, 1]",
                self.lesion_fraction
            ));
        }
        if self.lesion_size_strata == 0 {
            return bad("lesion_size_strata must be at least 1".into());
        }
        if let Some(c) = self.grad_clip_norm
            && !(c > 0.0 && c.is_finite())
        {
            return bad(format!("grad_clip_norm = {c} must be finite and > 0"));
        }
        if self.val_every_epochs == 0 {
            return bad("val_every_epochs must be at least 1".into());
        }
        self.augment.validate().map_err(TrainError::config)
    }
}

/// How the training and held-out cases were chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitInfo {
    /// Patient grouping used (`heuristic`, `per-case`, or `csv:<path>`).
    pub grouping: String,
    /// Number of folds (0 when trained on every case).
    pub n_folds: u32,
    /// The held-out fold, if any.
    pub fold: Option<u32>,
    /// Training case names.
    pub train_cases: Vec<String>,
    /// Held-out case names.
    pub val_cases: Vec<String>,
}

/// `RUN/run.json`: everything needed to reproduce, resume, evaluate or export the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// [`RUN_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The network's shape.
    pub unet: UNetConfig,
    /// The preprocessing every training slice went through (embed it in exported models).
    pub preprocess: PreprocessConfig,
    /// Postprocessing used for validation (threshold, minimum component area).
    pub postprocess: PostprocessConfig,
    /// Summary for model metadata: `epochs` completed so far, `val_dice` of `best.safetensors`.
    pub training: TrainingSummary,
    /// The dataset folder as given.
    pub data_dir: PathBuf,
    /// Random seed (weight init, folds, batches, augmentation).
    pub seed: u64,
    /// `git describe --always --dirty` of the trainer's source, when known.
    pub git_revision: Option<String>,
    /// Every training hyper-parameter.
    pub train: TrainConfig,
    /// The case split.
    pub split: SplitInfo,
    /// CE class weights `[background, lesion]` computed from the training slices.
    pub class_weights: Vec<f64>,
    /// Device the run trained on (`Cpu`, `Cuda(0)`).
    pub device: String,
    /// `strokeseg-trainer` version.
    pub trainer_version: String,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix_s: u64,
}

impl RunConfig {
    /// Reads `run_dir/run.json` and checks its schema version.
    pub fn load(run_dir: &Path) -> Result<RunConfig, TrainError> {
        let path = run_dir.join(RUN_FILE);
        let config: RunConfig = read_json(&path)?;
        if config.schema_version != RUN_SCHEMA_VERSION {
            return Err(TrainError::RunFolder {
                path,
                reason: format!(
                    "run.json schema version {}, this build reads {RUN_SCHEMA_VERSION}",
                    config.schema_version
                ),
            });
        }
        Ok(config)
    }

    /// Writes `run_dir/run.json` atomically.
    pub fn save(&self, run_dir: &Path) -> Result<(), TrainError> {
        Ok(write_json_atomically(&run_dir.join(RUN_FILE), self)?)
    }
}

/// The paths of a run folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPaths {
    /// The run folder.
    pub root: PathBuf,
}

impl RunPaths {
    /// Paths under `root`.
    pub fn new(root: &Path) -> RunPaths {
        RunPaths {
            root: root.to_path_buf(),
        }
    }
    /// `run.json`.
    pub fn run_json(&self) -> PathBuf {
        self.root.join(RUN_FILE)
    }
    /// Whether the folder holds a run (its `run.json`).
    pub fn holds_run(&self) -> bool {
        self.run_json().is_file()
    }
    /// The checkpoint folder.
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.root.join(CHECKPOINT_DIR)
    }
    /// `checkpoints/best.safetensors`.
    pub fn best_checkpoint(&self) -> PathBuf {
        self.checkpoint_dir().join(BEST_CHECKPOINT)
    }
    /// `checkpoints/last.safetensors`.
    pub fn last_checkpoint(&self) -> PathBuf {
        self.checkpoint_dir().join(LAST_CHECKPOINT)
    }
    /// `checkpoints/last.optim.safetensors`.
    pub fn last_optimizer(&self) -> PathBuf {
        self.checkpoint_dir().join(LAST_OPTIMIZER)
    }
    /// `checkpoints/last.state.json`.
    pub fn last_state(&self) -> PathBuf {
        self.checkpoint_dir().join(LAST_STATE)
    }
    /// `metrics.csv`.
    pub fn metrics_csv(&self) -> PathBuf {
        self.root.join(METRICS_CSV)
    }
    /// `metrics.json`.
    pub fn metrics_json(&self) -> PathBuf {
        self.root.join(METRICS_JSON)
    }
    /// `steps.csv`.
    pub fn steps_csv(&self) -> PathBuf {
        self.root.join(STEPS_CSV)
    }
    /// `curves.png`.
    pub fn curves_png(&self) -> PathBuf {
        self.root.join(CURVES_PNG)
    }
    /// `evaluation.json`.
    pub fn evaluation(&self) -> PathBuf {
        self.root.join(EVALUATION_FILE)
    }
}

/// One held-out case's validation result: the trainer's predicted mask (postprocessed as the
/// edge runtime does it, on the case's original grid) scored against its ground truth. A row
/// of `cases` in `evaluation.json`. (The score of a mask *file* against a truth file is the
/// shared `strokeseg_eval::CaseEvaluation`.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseValidation {
    /// Case folder name.
    pub case: String,
    /// Patient label.
    pub patient: String,
    /// Slices in the case.
    pub n_slices: usize,
    /// Confusion counts over all slices, on the original grid.
    pub counts: ConfusionCounts,
    /// Dice, precision, recall, volumes (ISLES conventions, see `shared::metrics`).
    pub metrics: SegmentationMetrics,
    /// Hausdorff distance, HD95 and ASSD on the original grid, mm (a distance is `None` when
    /// it is infinite: exactly one mask empty). `None` as a whole: not computed, in an
    /// `evaluation.json` written before the trainer computed them.
    #[serde(default)]
    pub surface: Option<SurfaceDistances>,
}

impl CaseValidation {
    /// Whether the ground truth has a lesion.
    pub fn has_lesion(&self) -> bool {
        self.counts.true_voxels() > 0
    }
}

/// One checkpoint's results on the held-out cases: `last` and `best` of `evaluation.json`.
///
/// The figures over the cases are those of the shared [`Summary`] of `strokeseg-train
/// evaluate` (mean ± sd, median, min, max; surface distances over the cases where they are
/// finite, the others counted); the mean Dice of the lesion cases, which it does not have, is
/// kept beside it. In the file the record also carries the per-case means by name
/// (`n_cases`, `mean_dice`, …), written from the summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Validation {
    /// Slice-weighted mean of the training loss over the evaluated slices.
    pub loss: f64,
    /// Mean per-case Dice over the cases with a lesion in the ground truth (`None` when there
    /// are none).
    pub mean_dice_lesion_cases: Option<f64>,
    /// Every metric over the cases. `None` without cases, or when a case lacks its surface
    /// distances (an older `evaluation.json`), so that every row is over the same cases.
    pub summary: Option<Summary>,
    /// The per-case results.
    pub cases: Vec<CaseValidation>,
}

impl Validation {
    /// The results of `cases`, summarised by the shared evaluation code, with the
    /// slice-weighted mean `loss`.
    pub fn new(cases: Vec<CaseValidation>, loss: f64) -> Validation {
        let with_surface: Vec<(&SegmentationMetrics, &SurfaceDistances)> = cases
            .iter()
            .filter_map(|c| c.surface.as_ref().map(|s| (&c.metrics, s)))
            .collect();
        let summary = if with_surface.len() == cases.len() {
            Summary::from_metrics(with_surface)
        } else {
            None
        };
        let lesion_dice: Vec<f64> = cases
            .iter()
            .filter(|c| c.has_lesion())
            .map(|c| c.metrics.dice)
            .collect();
        Validation {
            loss,
            mean_dice_lesion_cases: MetricSummary::of(&lesion_dice).map(|s| s.mean),
            summary,
            cases,
        }
    }

    /// Cases evaluated.
    pub fn n_cases(&self) -> usize {
        self.cases.len()
    }

    /// Cases with a lesion in the ground truth.
    pub fn n_lesion_cases(&self) -> usize {
        self.cases.iter().filter(|c| c.has_lesion()).count()
    }

    /// Mean per-case Dice over all cases (a lesion-free case scores 1 if nothing is
    /// predicted, 0 otherwise); 0 without cases.
    pub fn mean_dice(&self) -> f64 {
        self.mean(|s| s.dice, |m| m.dice)
    }

    /// Mean per-case precision; 0 without cases.
    pub fn mean_precision(&self) -> f64 {
        self.mean(|s| s.precision, |m| m.precision)
    }

    /// Mean per-case recall; 0 without cases.
    pub fn mean_recall(&self) -> f64 {
        self.mean(|s| s.recall, |m| m.recall)
    }

    /// Mean per-case absolute volume difference, mL; 0 without cases.
    pub fn mean_abs_volume_difference_ml(&self) -> f64 {
        self.mean(
            |s| s.abs_volume_difference_ml,
            |m| m.abs_volume_difference_ml,
        )
    }

    /// The mean of one metric: the summary's; without one (an older file whose cases lack
    /// their surface distances) the shared [`MetricSummary`] of the cases' values.
    fn mean(
        &self,
        row: impl Fn(&Summary) -> MetricSummary,
        value: impl Fn(&SegmentationMetrics) -> f64,
    ) -> f64 {
        match &self.summary {
            Some(summary) => row(summary).mean,
            None => {
                let values: Vec<f64> = self.cases.iter().map(|c| value(&c.metrics)).collect();
                MetricSummary::of(&values).map_or(0.0, |s| s.mean)
            }
        }
    }
}

/// The layout of a [`Validation`] in `evaluation.json`: the per-case means by name before
/// the shared summary and the cases. Only a file record: written from a [`Validation`], read
/// back into one (the means that are the summary's are read from it).
#[derive(Serialize, Deserialize)]
struct ValidationFile<S, C> {
    n_cases: usize,
    n_lesion_cases: usize,
    mean_dice: f64,
    mean_dice_lesion_cases: Option<f64>,
    mean_precision: f64,
    mean_recall: f64,
    mean_abs_volume_difference_ml: f64,
    loss: f64,
    #[serde(default)]
    summary: S,
    cases: C,
}

impl Serialize for Validation {
    fn serialize<Ser: serde::Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        ValidationFile {
            n_cases: self.n_cases(),
            n_lesion_cases: self.n_lesion_cases(),
            mean_dice: self.mean_dice(),
            mean_dice_lesion_cases: self.mean_dice_lesion_cases,
            mean_precision: self.mean_precision(),
            mean_recall: self.mean_recall(),
            mean_abs_volume_difference_ml: self.mean_abs_volume_difference_ml(),
            loss: self.loss,
            summary: &self.summary,
            cases: &self.cases,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Validation {
    fn deserialize<De: serde::Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        let file =
            ValidationFile::<Option<Summary>, Vec<CaseValidation>>::deserialize(deserializer)?;
        Ok(Validation {
            loss: file.loss,
            mean_dice_lesion_cases: file.mean_dice_lesion_cases,
            summary: file.summary,
            cases: file.cases,
        })
    }
}

/// `RUN/evaluation.json`: the held-out results of the final (last) and the best checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEvaluation {
    /// Epochs trained.
    pub epochs: u32,
    /// 1-based epoch of the best checkpoint (by held-out mean Dice), if validated.
    pub best_epoch: Option<u32>,
    /// `last.safetensors` on the held-out cases (`None` without a held-out fold).
    pub last: Option<Validation>,
    /// `best.safetensors` on the held-out cases.
    pub best: Option<Validation>,
}

impl RunEvaluation {
    /// Reads `run_dir/evaluation.json`.
    pub fn load(run_dir: &Path) -> Result<RunEvaluation, TrainError> {
        read_json(&run_dir.join(EVALUATION_FILE))
    }
}

/// The name `run.json` and `cv.json` record for a patient grouping: `heuristic`, `per-case`
/// or `csv:<path>`.
pub fn grouping_label(grouping: &PatientGrouping) -> String {
    match grouping {
        PatientGrouping::Csv(csv) => format!("csv:{}", csv.display()),
        PatientGrouping::OnePerCase => "per-case".into(),
        PatientGrouping::Heuristic => "heuristic".into(),
    }
}

/// The patient grouping a recorded [`grouping_label`] names (anything unknown: the heuristic).
pub fn recorded_grouping(label: &str) -> PatientGrouping {
    match label.strip_prefix("csv:") {
        Some(path) => PatientGrouping::Csv(PathBuf::from(path)),
        None if label == "per-case" => PatientGrouping::OnePerCase,
        None => PatientGrouping::Heuristic,
    }
}

/// `git describe --always --dirty` of the trainer's source tree, or the value of
/// `STROKESEG_GIT_REVISION` when set; `None` when neither is available (e.g. a copied binary).
pub fn git_revision() -> Option<String> {
    if let Ok(v) = std::env::var("STROKESEG_GIT_REVISION")
        && !v.trim().is_empty()
    {
        return Some(v.trim().to_owned());
    }
    let out = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}
