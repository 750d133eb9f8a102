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
//!   evaluation.json                 final held-out results of last and best (Evaluation): per
//!                                   case counts, Dice…, surface distances; the shared summary
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

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strokeseg_shared::PreprocessConfig;
use strokeseg_shared::model_meta::TrainingSummary;
use strokeseg_shared::postprocess::PostprocessConfig;

use crate::error::{TrainError, read_json, write_json};
use crate::eval::EvalSummary;
use crate::model::UNetConfig;
use crate::train::TrainConfig;

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
        write_json(&run_dir.join(RUN_FILE), self)
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

/// `RUN/evaluation.json`: the held-out results of the final (last) and the best checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Epochs trained.
    pub epochs: u32,
    /// 1-based epoch of the best checkpoint (by held-out mean Dice), if validated.
    pub best_epoch: Option<u32>,
    /// `last.safetensors` on the held-out cases (`None` without a held-out fold).
    pub last: Option<EvalSummary>,
    /// `best.safetensors` on the held-out cases.
    pub best: Option<EvalSummary>,
}

impl Evaluation {
    /// Reads `run_dir/evaluation.json`.
    pub fn load(run_dir: &Path) -> Result<Evaluation, TrainError> {
        read_json(&run_dir.join(EVALUATION_FILE))
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
