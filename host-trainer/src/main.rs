//! `strokeseg-train`: the host trainer's command line.
//!
//! ```text
//! strokeseg-train phantom --out DIR --cases N --seed S [--gzip] [--pwi] [--dynamic ctp]
//! strokeseg-train info [--device auto|cpu|cuda:N]
//! strokeseg-train train --data DIR --out RUN [--fold K --folds 4] [--loss hybrid|ce|gdl|dicece]
//!                       [--device auto|cpu|cuda:N] [--epochs N] [--batch-size N] [--lr F]
//!                       [--warmup-epochs F] [--base-width N] [--depth N] [--seed S] [--amp bf16]
//!                       [--resume] …
//! strokeseg-train cv --data DIR --folds 4 --out RUN […the same training flags] [--resume]
//!                    [--fold K | --task I] [--emit slurm|k8s …]   (flag lists sweep: --loss hybrid,ce)
//! strokeseg-train cv --merge RUN
//! strokeseg-train export --run RUN [--checkpoint best|last] --out models/NAME
//!                        [--int8 [--data DIR] [--calibration-slices N]
//!                        [--calibration-percentile P]]
//! strokeseg-train model-info FILE
//! strokeseg-train evaluate --pred DIR --truth DATA [--out DIR] [--cases case_1,case_7 | --run RUN]
//!                          [--missing error|empty]
//! ```
//!
//! Exit codes: 0 success, 1 error, 2 usage error, 130 stopped by Ctrl-C, SIGTERM or SIGUSR1
//! (checkpoint saved; continue with `--resume`).
//!
//! This file parses the arguments, turns them into the library's settings and prints the
//! results; the work is the library's (`train::train_or_resume` for a new or resumed run,
//! `cv::cross_validate` for the fold loop, `cv::run_fold` and `cv::merge` for one fold and
//! the summary, `sweep` and `cluster` for grids and job array scripts, `export`, `strokeseg_eval`, `strokeseg_phantom`).
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use strokeseg_eval::{EvaluateOptions, MissingPrediction};
use strokeseg_io::PatientGrouping;
use strokeseg_phantom::{DatasetOptions, DatasetSummary, TRUTH_FILE};
use strokeseg_shared::PreprocessConfig;
use strokeseg_shared::config::MapsProvenance;
use strokeseg_shared::perfusion::PerfusionPreset;
use strokeseg_shared::postprocess::PostprocessConfig;
use strokeseg_trainer::DeviceChoice;
use strokeseg_trainer::cluster::{self, JobArray, K8sOptions, SlurmOptions};
use strokeseg_trainer::cv::{self, CV_FILE, CvOutcome, CvSettings};
use strokeseg_trainer::data::{self, LoadedDataset};
use strokeseg_trainer::export::{self, Checkpoint, RunExportOptions};
use strokeseg_trainer::loss::LossKind;
use strokeseg_trainer::model::UNetConfig;
use strokeseg_trainer::run::{
    Precision, RunConfig, RunPaths, TrainConfig, grouping_label, recorded_grouping,
};
use strokeseg_trainer::schedule::{DecayKind, OptimizerKind};
use strokeseg_trainer::sweep::{self, Axis, Grid, SweepManifest, Task, TaskPlan};
use strokeseg_trainer::train::{self, RunSpec, RunStart, TrainControl, TrainOutcome};

/// Exit status after Ctrl-C (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = cluster::EXIT_STOPPED;

/// Train the strokeseg lesion segmenter on the host (tch / libtorch).
#[derive(Debug, Parser)]
#[command(name = "strokeseg-train", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a synthetic CTP phantom dataset: NIfTI cases (ISLES layout) with ground-truth lesion masks.
    Phantom(PhantomArgs),
    /// Show what libtorch sees (CUDA devices, threads) and the device `--device` resolves to.
    Info {
        /// auto (first CUDA device if any, else CPU), cpu, cuda or cuda:N.
        #[arg(long, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
    },
    /// Train one model: on one patient-grouped fold held out (--fold), or on every case.
    Train(Box<TrainArgs>),
    /// Patient-grouped k-fold cross-validation, or a sweep of them (training flags given a
    /// comma-separated list: --loss hybrid,ce): every fold in turn, or one (--fold, --task), or
    /// a job array script (--emit); --merge summarises finished folds.
    Cv(Box<CvArgs>),
    /// Export a run's checkpoint to ONNX (model.onnx; with --int8 also model.int8.onnx).
    Export(ExportArgs),
    /// Print an ONNX model's strokeseg metadata, inputs, outputs, op counts and size.
    ModelInfo {
        /// The .onnx file.
        file: PathBuf,
    },
    /// Score a folder of predicted lesion masks against a truth dataset (ISLES 2018 metrics).
    #[command(long_about = EVALUATE_ABOUT)]
    Evaluate(EvaluateArgs),
}

/// `evaluate --help`: the layouts and conventions.
const EVALUATE_ABOUT: &str = "\
Score a folder of predicted lesion masks against the ground truth (OT) of a dataset, the \
ISLES 2018 way: per case Dice, precision, recall, predicted and true volume (mL), absolute \
volume difference (mL), Hausdorff distance, HD95 and ASSD (mm, on the truth's voxel spacing); \
over the cases mean ± sd, median, min and max. Prints the summary table and writes \
evaluation_cases.csv, evaluation_summary.json and evaluation_summary.md into --out, each \
complete or not at all.

Where the prediction of case_N is looked for in --pred (exactly one must match):
  PRED/case_N/lesion_mask.nii.gz (or .nii)    as `strokeseg-edge segment CASE --out PRED/case_N` writes
  PRED/case_N.nii.gz (or .nii)
  SMIR.<...>.O.OT.<id>.nii[.gz], or an ISLES folder of that name holding it, in PRED or
  PRED/case_N, where <id> is the id of one of the case's truth-side ISLES files (so a truth
  dataset scores as its own perfect prediction)
A mask voxel is lesion when its value is > 0.5; prediction and truth must share one grid.

Empty masks: both empty scores Dice, precision and recall 1 and distances 0; exactly one \
empty scores 0 and infinite distances (inf in the CSV, null in the JSON), which are left out \
of the distance means and counted (n_hausdorff_infinite). A case without a prediction is an \
error, or with --missing empty an empty mask (counted, with a warning).";

#[derive(Debug, Args)]
struct EvaluateArgs {
    /// Folder of predicted masks (layouts: see above).
    #[arg(long)]
    pred: PathBuf,
    /// Truth dataset (`case_N` folders with an OT mask, or a folder holding `TRAINING/`).
    /// With --run, defaults to the run's data_dir.
    #[arg(long, required_unless_present = "run")]
    truth: Option<PathBuf>,
    /// Folder for the reports [default: --pred].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Evaluate only these cases (comma-separated folder names, e.g. case_1,case_7).
    #[arg(long, value_delimiter = ',', conflicts_with = "run")]
    cases: Option<Vec<String>>,
    /// Evaluate only the cases held out by this training run (its run.json's split), e.g. a
    /// cross-validation's RUN/fold_K.
    #[arg(long)]
    run: Option<PathBuf>,
    /// A case without a prediction: an error, or scored as an empty mask.
    #[arg(long, value_enum, default_value_t = MissingArg::Error)]
    missing: MissingArg,
}

/// `phantom --dynamic`: which dynamic series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DynamicArg {
    /// The classic series.
    Classic,
    /// `strokeseg_phantom::DynamicSeries::ctp`.
    Ctp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum MissingArg {
    /// Fail, naming the case and where its prediction was looked for.
    Error,
    /// Score it as an empty mask, count it and warn.
    Empty,
}

#[derive(Debug, Args)]
struct PhantomArgs {
    /// Folder to write the dataset into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Number of cases to generate (slabs; a patient may have two), at least 1.
    #[arg(long)]
    cases: usize,
    /// Seed of the generator: the same seed gives the same dataset, byte for byte.
    #[arg(long)]
    seed: u64,
    /// Write `.nii.gz` instead of `.nii`.
    #[arg(long)]
    gzip: bool,
    /// Also write the 4D perfusion series (CT_4DPWI) of each case; large.
    #[arg(long)]
    pwi: bool,
    /// Which 4D series --pwi writes: classic (the phantom's original series), or ctp (the
    /// exact indicator-dilution model with a clinical protocol and 10 HU of frame noise, so
    /// `strokeseg-edge segment --maps computed` and `train --maps computed` can compute
    /// maps from it); ctp implies --pwi.
    #[arg(long, value_enum, default_value_t = DynamicArg::Classic)]
    dynamic: DynamicArg,
    /// Which population: classic (procedural head, narrow ranges), hospitals (heads on the
    /// ICBM 2009a brain template, ISLES-like lesion sizes, vendor appearance, confounders:
    /// the training recipe) or holdout (procedural head with the hospitals' variation: the
    /// out-of-family validation set).
    #[arg(long, value_enum, default_value_t = FamilyArg::Classic)]
    family: FamilyArg,
    /// Brain template folder for --family hospitals (default: $STROKESEG_TEMPLATE_DIR, else
    /// .cache/templates/icbm152_2009a; `cargo xtask setup-templates` fills it).
    #[arg(long)]
    template_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FamilyArg {
    Classic,
    Hospitals,
    Holdout,
}

impl FamilyArg {
    fn family(self) -> strokeseg_phantom::Family {
        match self {
            FamilyArg::Classic => strokeseg_phantom::Family::Classic,
            FamilyArg::Hospitals => strokeseg_phantom::Family::Hospitals,
            FamilyArg::Holdout => strokeseg_phantom::Family::Holdout,
        }
    }
}

/// Where the data is and how to run.
#[derive(Debug, Args)]
struct DataArgs {
    /// Dataset folder (`case_N` folders, or a folder holding `TRAINING/`). With --resume,
    /// defaults to the run's `data_dir`.
    #[arg(long)]
    data: Option<PathBuf>,
    /// `case,patient` CSV grouping cases into patients (default: the two-slab heuristic).
    #[arg(long, conflicts_with = "grouping")]
    patients: Option<PathBuf>,
    /// Patient grouping when no --patients CSV is given.
    #[arg(long, value_enum)]
    grouping: Option<GroupingArg>,
    /// auto (first CUDA device if any, else CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// libtorch CPU threads (default: libtorch's choice).
    #[arg(long)]
    threads: Option<i32>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Stop (with a checkpoint) after this many steps; for testing --resume.
    #[arg(long, hide = true)]
    stop_after_steps: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum GroupingArg {
    /// Consecutive cases that look like two slabs of one acquisition are one patient.
    Heuristic,
    /// Every case is its own patient.
    PerCase,
}

/// Hyper-parameters; every one left out takes the default (or, with --resume, must be left
/// out: a resumed run continues with its recorded configuration; see [`hyper_flags_given`]).
/// `cv` sweeps a flag given a comma-separated list (`--loss hybrid,ce`): one cross-validation
/// per combination ([`Grid`]); `train` takes one value per flag.
#[derive(Debug, Args, Default)]
struct HyperArgs {
    /// Loss.
    #[arg(long, value_enum, value_delimiter = ',')]
    loss: Vec<LossKind>,
    /// Epochs [default: 100].
    #[arg(long, value_delimiter = ',')]
    epochs: Vec<u32>,
    /// Slices per batch [default: 8].
    #[arg(long, value_delimiter = ',')]
    batch_size: Vec<usize>,
    /// Peak learning rate [default: 1e-3].
    #[arg(long, value_delimiter = ',')]
    lr: Vec<f64>,
    /// Linear warm-up length in epochs [default: 2].
    #[arg(long, value_delimiter = ',')]
    warmup_epochs: Vec<f64>,
    /// Decay after warm-up.
    #[arg(long, value_enum, value_delimiter = ',')]
    decay: Vec<DecayKind>,
    /// Optimiser.
    #[arg(long, value_enum, value_delimiter = ',')]
    optimizer: Vec<OptimizerKind>,
    /// Weight decay of convolution weights [default: 1e-4].
    #[arg(long, value_delimiter = ',')]
    weight_decay: Vec<f64>,
    /// Clip the gradient L2 norm to this value; 0 disables clipping [default: 5].
    #[arg(long, value_delimiter = ',')]
    grad_clip: Vec<f64>,
    /// Share of each batch reserved for lesion slices [default: 0.5].
    #[arg(long, value_delimiter = ',')]
    lesion_fraction: Vec<f64>,
    /// Hybrid loss: weight of the weighted CE [default: 1].
    #[arg(long, value_delimiter = ',')]
    lambda_ce: Vec<f64>,
    /// Hybrid loss: weight of the generalized Dice loss [default: 1].
    #[arg(long, value_delimiter = ',')]
    lambda_gdl: Vec<f64>,
    /// Exponent of the inverse class frequency in the CE class weights [default: 0.5].
    #[arg(long, value_delimiter = ',')]
    ce_weight_power: Vec<f64>,
    /// Turn augmentation off.
    #[arg(long)]
    no_augment: bool,
    /// Validate every N epochs (and after the last) [default: 1].
    #[arg(long, value_delimiter = ',')]
    val_every: Vec<u32>,
    /// Channels of the first U-Net level [default: 16].
    #[arg(long, value_delimiter = ',')]
    base_width: Vec<i64>,
    /// Downsamplings of the U-Net [default: 4].
    #[arg(long, value_delimiter = ',')]
    depth: Vec<usize>,
    /// Seed of weights, folds, batches and augmentation [default: 2018].
    #[arg(long, value_delimiter = ',')]
    seed: Vec<u64>,
    /// bf16 training steps with f32 master weights (CUDA only).
    #[arg(long, value_enum)]
    amp: Option<Precision>,
    /// Model input size in pixels, square [default: 160]; a multiple of 2^depth.
    #[arg(long, value_delimiter = ',')]
    input_size: Vec<u16>,
    /// Model grid spacing in mm [default: 1.5].
    #[arg(long, value_delimiter = ',')]
    target_spacing_mm: Vec<f32>,
    /// Preprocessing config (JSON `PreprocessConfig`) instead of the default.
    #[arg(long)]
    preprocess_config: Option<PathBuf>,
    /// The perfusion maps the model reads: each case's own (provided), or computed by
    /// strokeseg from its CT_4DPWI with the default preset, as `strokeseg-edge segment --maps
    /// computed` does (cached in $STROKESEG_MAPS_CACHE, else ~/.cache/strokeseg/maps)
    /// [default: provided, or what --preprocess-config records].
    #[arg(long, value_enum)]
    maps: Option<MapsArg>,
}

/// `--maps`: where the model's perfusion-map channels come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum MapsArg {
    /// The maps each case provides.
    Provided,
    /// Computed from each case's raw series `CT_4DPWI` (preset `default`).
    Computed,
}

/// Puts `value`, when given, into `slot`.
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// The value of a one-value flag (the first of a list, which only `cv` sweeps).
fn one<T: Copy>(values: &[T]) -> Option<T> {
    values.first().copied()
}

/// A flag value as a user types it, for sweep labels.
trait FlagValue {
    fn flag_value(&self) -> String;
}

macro_rules! display_flag_value {
    ($($t:ty),*) => {$(
        impl FlagValue for $t {
            fn flag_value(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
display_flag_value!(u16, u32, u64, usize, i64, f32, f64);

macro_rules! enum_flag_value {
    ($($t:ty),*) => {$(
        impl FlagValue for $t {
            fn flag_value(&self) -> String {
                clap::ValueEnum::to_possible_value(self)
                    .map_or_else(|| format!("{self:?}"), |v| v.get_name().to_owned())
            }
        }
    )*};
}
enum_flag_value!(LossKind, DecayKind, OptimizerKind);

/// `values` with only the one at `index` when given (a sweep's choice), else all of them.
fn pick<T: Clone>(values: &[T], index: Option<usize>) -> Vec<T> {
    match index {
        Some(i) => values.get(i).cloned().into_iter().collect(),
        None => values.to_vec(),
    }
}

/// The hyper-parameter flags a list sweeps, named once: the grid's axes and one setting's
/// values come from this list.
macro_rules! swept_flags {
    ($($field:ident),* $(,)?) => {
        impl HyperArgs {
            /// The axes of the sweep: every flag given more than one value, in `--help` order.
            fn axes(&self) -> Vec<Axis> {
                let mut axes = Vec::new();
                $(
                    if self.$field.len() > 1 {
                        axes.push(Axis {
                            flag: stringify!($field).replace('_', "-"),
                            values: self.$field.iter().map(FlagValue::flag_value).collect(),
                        });
                    }
                )*
                axes
            }

            /// The one-value flags of setting `setting` of `grid` (made by [`HyperArgs::axes`]).
            fn setting(&self, grid: &Grid, setting: usize) -> HyperArgs {
                let coords = grid.coords(setting).unwrap_or_default();
                let chosen = |flag: &str| {
                    grid.axes()
                        .iter()
                        .zip(&coords)
                        .find(|(axis, _)| axis.flag == flag)
                        .map(|(_, &c)| c)
                };
                HyperArgs {
                    $( $field: pick(&self.$field, chosen(&stringify!($field).replace('_', "-"))), )*
                    no_augment: self.no_augment,
                    amp: self.amp,
                    preprocess_config: self.preprocess_config.clone(),
                    maps: self.maps,
                }
            }
        }
    };
}
swept_flags!(
    loss,
    epochs,
    batch_size,
    lr,
    warmup_epochs,
    decay,
    optimizer,
    weight_decay,
    grad_clip,
    lesion_fraction,
    lambda_ce,
    lambda_gdl,
    ce_weight_power,
    val_every,
    base_width,
    depth,
    seed,
    input_size,
    target_spacing_mm,
);

impl HyperArgs {
    /// The sweep grid of the flags (no axes: one setting).
    fn grid(&self) -> Result<Grid> {
        Ok(Grid::new(self.axes())?)
    }

    /// Refuses value lists (they sweep only with `cv`).
    fn refuse_lists(&self, command: &str) -> Result<()> {
        if let Some(axis) = self.axes().first() {
            bail!(
                "{command} takes one value per flag, got --{} {}: lists sweep only with cv",
                axis.flag,
                axis.values.join(",")
            );
        }
        Ok(())
    }

    fn train_config(&self) -> TrainConfig {
        let mut c = TrainConfig::default();
        set(&mut c.loss.kind, one(&self.loss));
        set(&mut c.epochs, one(&self.epochs));
        set(&mut c.batch_size, one(&self.batch_size));
        set(&mut c.optimizer.lr, one(&self.lr));
        set(&mut c.schedule.warmup_epochs, one(&self.warmup_epochs));
        set(&mut c.schedule.decay, one(&self.decay));
        set(&mut c.optimizer.kind, one(&self.optimizer));
        set(&mut c.optimizer.weight_decay, one(&self.weight_decay));
        set(
            &mut c.grad_clip_norm,
            one(&self.grad_clip).map(|v| (v > 0.0).then_some(v)),
        );
        set(&mut c.lesion_fraction, one(&self.lesion_fraction));
        set(&mut c.loss.lambda_ce, one(&self.lambda_ce));
        set(&mut c.loss.lambda_gdl, one(&self.lambda_gdl));
        set(&mut c.loss.ce_weight_power, one(&self.ce_weight_power));
        if self.no_augment {
            c.augment.enabled = false;
        }
        set(&mut c.val_every_epochs, one(&self.val_every));
        set(&mut c.precision, self.amp);
        c
    }

    fn preprocess_config(&self) -> Result<PreprocessConfig> {
        let mut config = match &self.preprocess_config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a PreprocessConfig", path.display()))?
            }
            None => PreprocessConfig::default(),
        };
        if let Some(size) = one(&self.input_size) {
            config.input_height = size;
            config.input_width = size;
        }
        set(&mut config.target_spacing_mm, one(&self.target_spacing_mm));
        match self.maps {
            Some(MapsArg::Provided) => config.maps = MapsProvenance::Provided,
            Some(MapsArg::Computed) => {
                config.maps = MapsProvenance::computed(PerfusionPreset::Default);
            }
            None => {}
        }
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid preprocessing config: {e}"))?;
        Ok(config)
    }

    fn unet(&self, preprocess: &PreprocessConfig) -> UNetConfig {
        let mut unet = UNetConfig {
            in_channels: preprocess.n_channels() as i64,
            ..UNetConfig::default()
        };
        set(&mut unet.base_width, one(&self.base_width));
        set(&mut unet.depth, one(&self.depth));
        unet
    }
}

#[derive(Debug, Args)]
struct TrainArgs {
    /// Run folder to write (or to continue with --resume).
    #[arg(long)]
    out: PathBuf,
    /// Hold out this patient-grouped fold (0-based) for validation; without it, train on all cases.
    #[arg(long)]
    fold: Option<u32>,
    /// Number of folds.
    #[arg(long, default_value_t = 4)]
    folds: u32,
    /// Continue the interrupted run in --out exactly where it stopped.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    hyper: HyperArgs,
}

#[derive(Debug, Args)]
struct CvArgs {
    /// Folder for the folds (`fold_K/`) and the summary; of a sweep, one such folder per
    /// setting (`setting_S/`) and the sweep table.
    #[arg(long, required_unless_present = "merge")]
    out: Option<PathBuf>,
    /// Number of folds.
    #[arg(long, default_value_t = 4)]
    folds: u32,
    /// Continue an interrupted cross-validation: finished folds are kept, the interrupted one
    /// resumed. With --task or --fold: that task of the cross-validation or sweep --out holds.
    #[arg(long, conflicts_with = "emit")]
    resume: bool,
    /// Run only this fold (0-based) into --out/fold_K, e.g. one per machine; then --merge.
    #[arg(long, conflicts_with_all = ["task", "emit"])]
    fold: Option<u32>,
    /// Run only this task of the job array (0-based; task = setting × folds + fold), as the
    /// emitted scripts do with the array index.
    #[arg(long, conflicts_with = "emit")]
    task: Option<usize>,
    /// Merge the finished folds of the cross-validation (or sweep) RUN into its summary;
    /// names every missing, unfinished or corrupt fold and fails if there is one.
    #[arg(long, value_name = "RUN", conflicts_with_all = ["out", "resume", "fold", "task", "emit"])]
    merge: Option<PathBuf>,
    /// Print a job script running every (setting, fold) as one job array: an sbatch script
    /// (slurm) or an Indexed Job manifest (k8s). Writes the settings into --out first.
    #[arg(long, value_enum)]
    emit: Option<EmitKind>,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    hyper: HyperArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum EmitKind {
    /// An sbatch script (`sbatch FILE`): a job array and its dependent merge job.
    Slurm,
    /// A Kubernetes Indexed Job manifest (`kubectl apply -f FILE`).
    K8s,
}

/// Settings of an emitted job array (with --emit).
#[derive(Debug, Args)]
struct ClusterArgs {
    /// Generic resources per task [default: gpu:1]; `none` for CPU-only tasks. k8s: gpu:N
    /// becomes nvidia.com/gpu: N.
    #[arg(long, requires = "emit")]
    gres: Option<String>,
    /// SLURM partition.
    #[arg(long, requires = "emit")]
    partition: Option<String>,
    /// SLURM time limit per task (e.g. 24:00:00); SIGUSR1 comes --signal-lead-s before it.
    #[arg(long, requires = "emit")]
    time: Option<String>,
    /// Seconds before the time limit at which SLURM sends SIGUSR1 (checkpoint and requeue).
    #[arg(long, requires = "emit", default_value_t = 120)]
    signal_lead_s: u32,
    /// CPUs per task (SLURM --cpus-per-task, k8s CPU limit).
    #[arg(long, requires = "emit")]
    cpus_per_task: Option<u32>,
    /// SLURM memory per task (e.g. 16G).
    #[arg(long, requires = "emit")]
    mem: Option<String>,
    /// At most this many tasks at once.
    #[arg(long, requires = "emit")]
    max_parallel: Option<u32>,
    /// Job name.
    #[arg(long, requires = "emit", default_value = "strokeseg-cv")]
    job_name: String,
    /// The strokeseg-train the tasks run [default: this binary (slurm), strokeseg-train (k8s)].
    #[arg(long, requires = "emit")]
    trainer: Option<String>,
    /// k8s: the container image holding strokeseg-train.
    #[arg(long, requires = "emit")]
    image: Option<String>,
    /// k8s: the PersistentVolumeClaim holding the data and --out.
    #[arg(long, requires = "emit")]
    pvc: Option<String>,
    /// k8s: where the claim is mounted in the pods (--data and --out lie under it).
    #[arg(long, requires = "emit", default_value = "/data")]
    mount: PathBuf,
    /// k8s: failed pods tolerated (backoffLimit).
    #[arg(long, requires = "emit", default_value_t = 3)]
    backoff_limit: u32,
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// Training run folder (run.json, checkpoints/).
    #[arg(long)]
    run: PathBuf,
    /// Which checkpoint: best or last.
    #[arg(long, default_value_t = Checkpoint::Best)]
    checkpoint: Checkpoint,
    /// Output folder, e.g. models/NAME (created if missing); its name is the model name.
    #[arg(long)]
    out: PathBuf,
    /// Model version written into the metadata.
    #[arg(long, default_value = "0.1.0")]
    version: String,
    /// Also write model.int8.onnx, calibrated on preprocessed slices of --data.
    #[arg(long)]
    int8: bool,
    /// Dataset (case_N folders) to calibrate on [default: the run's data_dir, its training cases only].
    #[arg(long, requires = "int8")]
    data: Option<PathBuf>,
    /// Calibration slices, spread evenly over the dataset's cases.
    #[arg(long, default_value_t = 64, requires = "int8")]
    calibration_slices: usize,
    /// Activation ranges from the central PERCENT % of the calibration values (e.g.
    /// 99.99) instead of their min/max.
    #[arg(long, value_name = "PERCENT", requires = "int8")]
    calibration_percentile: Option<f32>,
}

fn main() -> ExitCode {
    init_logging();
    let mut command = Cli::command();
    let matches = command.get_matches_mut();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut command).exit());
    let given = |name: &str| {
        matches
            .subcommand_matches(name)
            .map(hyper_flags_given)
            .unwrap_or_default()
    };
    let result = match cli.command {
        Command::Phantom(args) => run_phantom(&args).map(|()| true),
        Command::Info { device } => run_info(device).map(|()| true),
        Command::Train(args) => run_train(&args, &given("train")),
        Command::Cv(args) => run_cv(&args, &given("cv")),
        Command::Export(args) => run_export(&args).map(|()| true),
        Command::ModelInfo { file } => run_model_info(&file).map(|()| true),
        Command::Evaluate(args) => run_evaluate(&args).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_INTERRUPTED),
        Err(e) => {
            eprintln!(
                "error: {}",
                strokeseg_shared::error::chain_message(e.chain())
            );
            ExitCode::FAILURE
        }
    }
}

/// The hyper-parameter flags ([`HyperArgs`]) given on the command line of a `train` or `cv`
/// (`--epochs`, …, in `--help` order): with `--resume` they are refused.
fn hyper_flags_given(matches: &ArgMatches) -> Vec<String> {
    let hyper = HyperArgs::augment_args(clap::Command::new("hyper"));
    hyper
        .get_arguments()
        .filter(|arg| matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine))
        .map(|arg| format!("--{}", arg.get_long().unwrap_or(arg.get_id().as_str())))
        .collect()
}

/// With `--resume`: refuses the hyper-parameter flags `given` (a resumed run continues with
/// its recorded configuration).
fn refuse_changed_flags(out: &Path, given: &[String]) -> Result<()> {
    if !given.is_empty() {
        bail!(
            "--resume continues {} with its recorded configuration; leave out {}",
            out.display(),
            given.join(", ")
        );
    }
    Ok(())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn run_phantom(args: &PhantomArgs) -> Result<()> {
    if args.cases == 0 {
        bail!("--cases must be at least 1");
    }
    let template_dir = args.template_dir.clone().unwrap_or_else(|| {
        std::env::var_os(strokeseg_phantom::TEMPLATE_DIR_ENV).map_or_else(
            || PathBuf::from(strokeseg_phantom::TEMPLATE_DIR),
            PathBuf::from,
        )
    });
    let options = DatasetOptions {
        n_cases: args.cases,
        seed: args.seed,
        gzip: args.gzip,
        with_pwi: args.pwi || args.dynamic == DynamicArg::Ctp,
        dynamic: match args.dynamic {
            DynamicArg::Classic => strokeseg_phantom::DynamicSeries::default(),
            DynamicArg::Ctp => strokeseg_phantom::DynamicSeries::ctp(),
        },
        ..Default::default()
    }
    .with_family(args.family.family(), Some(absolute(&template_dir)));
    let summary = strokeseg_phantom::write_dataset(&args.out, &options).with_context(|| {
        format!(
            "could not write the {} phantom dataset ({} cases, seed {}) into {}",
            args.family.family().name(),
            args.cases,
            args.seed,
            args.out.display()
        )
    })?;
    print_summary(&args.out, &summary);
    Ok(())
}

/// A few lines about what was written; the per-case details are in the dataset's own
/// `phantom_truth.json`.
fn print_summary(out_dir: &Path, summary: &DatasetSummary) {
    println!(
        "phantom dataset written to {}: {} cases from {} patients ({} lesion-free), {} slices, {:.1} MB, seed {}",
        out_dir.display(),
        summary.n_cases,
        summary.n_patients,
        summary.n_lesion_free,
        summary.total_slices,
        summary.bytes_written as f64 / 1e6,
        summary.seed
    );
    let mut lesion_ml: Vec<f64> = summary
        .cases
        .iter()
        .map(|case| case.lesion_volume_ml)
        .filter(|volume_ml| *volume_ml > 0.0)
        .collect();
    lesion_ml.sort_by(f64::total_cmp);
    if let (Some(min), Some(max)) = (lesion_ml.first(), lesion_ml.last()) {
        let median = lesion_ml.get(lesion_ml.len() / 2).unwrap_or(min);
        println!(
            "lesion volume over {} cases with a lesion: min {min:.1} mL, median {median:.1} mL, max {max:.1} mL",
            lesion_ml.len()
        );
    }
    println!("per-case details: {}", out_dir.join(TRUTH_FILE).display());
}

fn run_info(device: DeviceChoice) -> Result<()> {
    let cuda = tch::Cuda::is_available();
    println!("cuda available: {cuda}");
    if cuda {
        println!("cuda devices: {}", tch::Cuda::device_count());
        println!("cudnn available: {}", tch::Cuda::cudnn_is_available());
    }
    println!("cpu threads: {}", tch::get_num_threads());
    let resolved = device
        .resolve()
        .with_context(|| format!("--device {device}"))?;
    println!("--device {device} -> {resolved:?}");
    Ok(())
}

/// Sets up the device and threads; refuses bf16 off CUDA.
fn setup_device(data: &DataArgs, precision: Precision) -> Result<tch::Device> {
    if let Some(n) = data.threads {
        if n < 1 {
            bail!("--threads must be at least 1");
        }
        tch::set_num_threads(n);
    }
    let device = data
        .device
        .resolve()
        .with_context(|| format!("--device {}", data.device))?;
    if precision == Precision::Bf16 && !device.is_cuda() {
        bail!(
            "--amp bf16 needs a CUDA device (resolved --device {} to {device:?})",
            data.device
        );
    }
    if device.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(false);
    }
    Ok(device)
}

/// The grouping the flags ask for.
fn grouping(data: &DataArgs) -> PatientGrouping {
    match (&data.patients, data.grouping) {
        (Some(csv), _) => PatientGrouping::Csv(csv.clone()),
        (None, Some(GroupingArg::PerCase)) => PatientGrouping::OnePerCase,
        (None, _) => PatientGrouping::Heuristic,
    }
}

fn load_data(
    data_dir: &Path,
    grouping: &PatientGrouping,
    config: &PreprocessConfig,
    device: tch::Device,
) -> Result<LoadedDataset> {
    let dataset = data::discover(data_dir, grouping)
        .with_context(|| format!("cannot read the dataset {}", data_dir.display()))?;
    let started = std::time::Instant::now();
    let loaded = data::load_dataset(&dataset, config, device, |i, n, name| {
        if i % 10 == 0 || i + 1 == n {
            tracing::info!("preprocessing case {}/{n} ({name})", i + 1);
        }
    })
    .with_context(|| format!("cannot load the dataset {}", data_dir.display()))?;
    let n_patients = dataset.patients().len();
    tracing::info!(
        "loaded {} cases ({} patients), {} slices onto {device:?} in {:.1} s",
        loaded.cases.len(),
        n_patients,
        loaded.n_slices(),
        started.elapsed().as_secs_f64()
    );
    Ok(loaded)
}

/// Installs the Ctrl-C handler: the first press asks the loop to stop after its step (with a
/// checkpoint), a second one exits at once; SIGTERM and SIGUSR1 ask the same stop.
fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let presses = Arc::new(AtomicUsize::new(0));
    let flag = Arc::clone(&stop);
    let result = ctrlc::set_handler(move || {
        if presses.fetch_add(1, Ordering::SeqCst) > 0 {
            eprintln!("second Ctrl-C: exiting without a checkpoint");
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
        eprintln!(
            "Ctrl-C: stopping after this step and saving a checkpoint (again to quit at once)"
        );
        flag.store(true, Ordering::SeqCst);
    });
    if let Err(e) = result {
        tracing::warn!("no Ctrl-C handler ({e}): an interrupt will not save a checkpoint");
    }
    // SIGTERM (scancel, requeue, preemption, pod eviction) and SIGUSR1 (SLURM's --signal
    // before the time limit): the same stop after the step, with a checkpoint, exit 130.
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGUSR1] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            tracing::warn!("no handler for signal {signal} ({e}): it will not save a checkpoint");
        }
    }
    stop
}

/// `path` made absolute (so a run can be resumed from another working directory).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// How the flags steer a run: Ctrl-C, `--stop-after-steps`, `--quiet`.
fn control(data: &DataArgs) -> TrainControl {
    TrainControl {
        stop: stop_flag(),
        stop_after_steps: data.stop_after_steps,
        progress: !data.quiet,
    }
}

fn run_train(args: &TrainArgs, given: &[String]) -> Result<bool> {
    args.hyper.refuse_lists("train")?;
    let control = control(&args.data);
    let (start, device, loaded) = if args.resume {
        refuse_changed_flags(&args.out, given)?;
        let run = RunConfig::load(&args.out)
            .with_context(|| format!("cannot resume {}", args.out.display()))?;
        let device = setup_device(&args.data, run.train.precision)?;
        let data_dir = args
            .data
            .data
            .clone()
            .unwrap_or_else(|| run.data_dir.clone());
        let grouping = recorded_grouping(&run.split.grouping);
        let loaded = load_data(&data_dir, &grouping, &run.preprocess, device)?;
        (RunStart::Resume(Box::new(run)), device, loaded)
    } else {
        if RunPaths::new(&args.out).holds_run() {
            bail!(
                "{} already holds a run: continue it with --resume, or choose another --out",
                args.out.display()
            );
        }
        let Some(data_dir) = args.data.data.as_deref().map(absolute) else {
            bail!("--data is required (except with --resume)");
        };
        let train_config = args.hyper.train_config();
        let device = setup_device(&args.data, train_config.precision)?;
        let preprocess = args.hyper.preprocess_config()?;
        let grouping = grouping(&args.data);
        if let Some(fold) = args.fold
            && fold >= args.folds
        {
            bail!(
                "--fold {fold} does not exist with --folds {}: use 0..{}",
                args.folds,
                args.folds
            );
        }
        let loaded = load_data(&data_dir, &grouping, &preprocess, device)?;
        let spec = RunSpec {
            data_label: data::describe(&data_dir, loaded.cases.len()),
            data_dir,
            grouping: grouping_label(&grouping),
            unet: args.hyper.unet(&preprocess),
            postprocess: PostprocessConfig::default(),
            train: train_config,
            seed: one(&args.hyper.seed).unwrap_or(DEFAULT_SEED),
            n_folds: args.folds,
            fold: args.fold,
        };
        (RunStart::New(Box::new(spec)), device, loaded)
    };
    let outcome = train::train_or_resume(&args.out, start, &loaded, device, &control)
        .with_context(|| format!("training {} failed", args.out.display()))?;
    Ok(report(&args.out, &outcome))
}

/// Default seed of runs.
const DEFAULT_SEED: u64 = 2018;

/// `, HD95 x mm (n infinite)` from a held-out summary, empty without one.
fn hd95_text(summary: Option<&strokeseg_eval::Summary>) -> String {
    let Some(s) = summary else {
        return String::new();
    };
    let mean = s
        .hausdorff95_mm
        .map_or_else(|| "∞".to_owned(), |m| format!("{:.2}", m.mean));
    format!(", HD95 {mean} mm ({} infinite)", s.n_hausdorff_infinite)
}

/// Prints where a run ended; `true` when it finished.
fn report(run_dir: &Path, outcome: &TrainOutcome) -> bool {
    match outcome {
        TrainOutcome::Finished(evaluation) => {
            match (&evaluation.last, &evaluation.best) {
                (Some(last), Some(best)) => println!(
                    "{}: {} epochs; held-out mean case Dice {:.4} (last), {:.4} (best, epoch {}); precision {:.4}, recall {:.4}, abs. volume difference {:.2} mL{} (last)",
                    run_dir.display(),
                    evaluation.epochs,
                    last.mean_dice(),
                    best.mean_dice(),
                    evaluation.best_epoch.unwrap_or(0),
                    last.mean_precision(),
                    last.mean_recall(),
                    last.mean_abs_volume_difference_ml(),
                    hd95_text(last.summary.as_ref())
                ),
                _ => println!(
                    "{}: {} epochs on every case (no held-out fold)",
                    run_dir.display(),
                    evaluation.epochs
                ),
            }
            true
        }
        TrainOutcome::Interrupted { global_step, epoch } => {
            println!(
                "{}: stopped in epoch {} after step {global_step}; continue with --resume",
                run_dir.display(),
                epoch + 1
            );
            false
        }
    }
}

/// The settings of a cross-validation folder: one cross-validation, or a sweep of one per
/// setting of the grid (each in `setting_S/`).
struct CvPlan {
    grid: Grid,
    n_folds: u32,
    /// One per setting of the grid.
    settings: Vec<CvSettings>,
}

impl CvPlan {
    fn is_sweep(&self) -> bool {
        self.settings.len() > 1
    }

    fn tasks(&self) -> Result<TaskPlan> {
        Ok(TaskPlan::new(self.settings.len(), self.n_folds)?)
    }

    /// The cross-validation folder of setting `setting`.
    fn cv_dir(&self, out: &Path, setting: usize) -> PathBuf {
        if self.is_sweep() {
            sweep::setting_dir(out, setting)
        } else {
            out.to_path_buf()
        }
    }

    /// The plan `out` records (`sweep.json` or `cv.json`).
    fn recorded(out: &Path) -> Result<CvPlan> {
        let context = || format!("cannot resume {}", out.display());
        if sweep::is_sweep(out) {
            let manifest = SweepManifest::load(out).with_context(context)?;
            let settings = (0..manifest.grid.n_settings())
                .map(|s| CvSettings::load(&sweep::setting_dir(out, s)))
                .collect::<Result<Vec<_>, _>>()
                .with_context(context)?;
            Ok(CvPlan {
                grid: manifest.grid,
                n_folds: manifest.n_folds,
                settings,
            })
        } else {
            let settings = CvSettings::load(out).with_context(context)?;
            Ok(CvPlan {
                grid: Grid::default(),
                n_folds: settings.n_folds,
                settings: vec![settings],
            })
        }
    }

    /// The plan of the command line: one cross-validation per setting of the flags' grid.
    fn from_flags(args: &CvArgs) -> Result<CvPlan> {
        let Some(data_dir) = args.data.data.as_deref().map(absolute) else {
            bail!("--data is required (except with --resume)");
        };
        let grid = args.hyper.grid()?;
        let settings = (0..grid.n_settings())
            .map(|s| {
                let hyper = args.hyper.setting(&grid, s);
                let preprocess = hyper.preprocess_config()?;
                Ok(CvSettings {
                    data_dir: data_dir.clone(),
                    grouping: grouping_label(&grouping(&args.data)),
                    n_folds: args.folds,
                    seed: one(&hyper.seed).unwrap_or(DEFAULT_SEED),
                    unet: hyper.unet(&preprocess),
                    preprocess,
                    postprocess: PostprocessConfig::default(),
                    train: hyper.train_config(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let plan = CvPlan {
            grid,
            n_folds: args.folds,
            settings,
        };
        plan.tasks()?;
        Ok(plan)
    }

    /// Writes the plan into `out`, or checks it against what `out` holds (safe for
    /// concurrent tasks).
    fn init(&self, out: &Path) -> Result<()> {
        if self.is_sweep() {
            let manifest = SweepManifest {
                n_folds: self.n_folds,
                grid: self.grid.clone(),
            };
            sweep::init_sweep(out, &manifest, &self.settings)?;
        } else if let Some(settings) = self.settings.first() {
            cv::init_run(out, settings)?;
        }
        Ok(())
    }
}

/// Loads the data of `settings` (from --data when given, else its recorded folder); returns
/// it with its model-card label.
fn load_cv_data(
    args: &CvArgs,
    settings: &CvSettings,
    device: tch::Device,
) -> Result<(LoadedDataset, String)> {
    let data_dir = args
        .data
        .data
        .clone()
        .unwrap_or_else(|| settings.data_dir.clone());
    let grouping = recorded_grouping(&settings.grouping);
    let loaded = load_data(&data_dir, &grouping, &settings.preprocess, device)?;
    let label = data::describe(&data_dir, loaded.cases.len());
    Ok((loaded, label))
}

fn run_cv(args: &CvArgs, given: &[String]) -> Result<bool> {
    if let Some(run_dir) = &args.merge {
        if !given.is_empty() {
            bail!(
                "--merge reads the settings {} records; leave out {}",
                run_dir.display(),
                given.join(", ")
            );
        }
        return run_merge(run_dir).map(|()| true);
    }
    let Some(out) = args.out.as_deref() else {
        bail!("--out is required (except with --merge)");
    };
    if let Some(kind) = args.emit {
        let plan = CvPlan::from_flags(args)?;
        return emit(args, kind, &absolute(out), &plan).map(|()| true);
    }
    let one_task = args.task.is_some() || args.fold.is_some();
    let plan = if args.resume {
        refuse_changed_flags(out, given)?;
        CvPlan::recorded(out)?
    } else {
        if !one_task && (out.join(CV_FILE).is_file() || sweep::is_sweep(out)) {
            bail!(
                "{} already holds a cross-validation: continue it with --resume, or choose another --out",
                out.display()
            );
        }
        CvPlan::from_flags(args)?
    };
    // Checked before anything is written.
    let task = if one_task {
        Some(one_task_of(args, &plan, out)?)
    } else {
        None
    };
    if !args.resume {
        plan.init(out)?;
    }
    let control = control(&args.data);
    let precision = plan
        .settings
        .first()
        .map_or(Precision::Fp32, |s| s.train.precision);
    let device = setup_device(&args.data, precision)?;
    if let Some(task) = task {
        let Some(settings) = plan.settings.get(task.setting) else {
            bail!("setting {} is not in the plan", task.setting);
        };
        let cv_dir = plan.cv_dir(out, task.setting);
        let label = plan.grid.label(task.setting);
        tracing::info!(
            "task {}: setting {}{}, fold {} of {} in {}",
            args.task.unwrap_or(task.fold as usize),
            task.setting,
            if label.is_empty() {
                String::new()
            } else {
                format!(" ({label})")
            },
            task.fold,
            plan.n_folds,
            cv::fold_dir(&cv_dir, task.fold).display()
        );
        let (loaded, data_label) = load_cv_data(args, settings, device)?;
        let outcome = cv::run_fold(
            &cv_dir,
            task.fold,
            settings,
            &loaded,
            &data_label,
            device,
            &control,
        )?;
        return Ok(report(&cv::fold_dir(&cv_dir, task.fold), &outcome));
    }
    // Every setting in turn, every fold of each; data loaded once per preprocessing.
    let mut loaded: Option<(PreprocessConfig, LoadedDataset, String)> = None;
    for (setting, settings) in plan.settings.iter().enumerate() {
        if plan.is_sweep() {
            println!(
                "setting {setting} of {}: {}",
                plan.settings.len(),
                plan.grid.label(setting)
            );
        }
        let reuse = loaded
            .as_ref()
            .is_some_and(|(preprocess, _, _)| *preprocess == settings.preprocess);
        if !reuse {
            let (data, label) = load_cv_data(args, settings, device)?;
            loaded = Some((settings.preprocess.clone(), data, label));
        }
        let Some((_, data, label)) = &loaded else {
            bail!("no data loaded");
        };
        let mut report_fold = |fold_dir: &Path, outcome: &TrainOutcome| {
            report(fold_dir, outcome);
        };
        let cv_dir = plan.cv_dir(out, setting);
        let outcome = cv::cross_validate(
            &cv_dir,
            settings,
            data,
            label,
            device,
            &control,
            &mut report_fold,
        )?;
        match outcome {
            CvOutcome::Finished(summary) => print_cv_summary(&cv_dir, &summary),
            CvOutcome::Interrupted => {
                println!(
                    "cross-validation stopped; continue with cv --resume --out {}",
                    out.display()
                );
                return Ok(false);
            }
        }
    }
    if plan.is_sweep() {
        let summary = sweep::merge_sweep(out)?;
        print!("\n{}", sweep::markdown(&summary));
    }
    Ok(true)
}

/// The (setting, fold) that `--task` or `--fold` names in `plan`.
fn one_task_of(args: &CvArgs, plan: &CvPlan, out: &Path) -> Result<Task> {
    let tasks = plan.tasks()?;
    match (args.task, args.fold) {
        (Some(index), _) => Ok(tasks.task(index)?),
        (None, Some(fold)) if plan.is_sweep() => bail!(
            "--fold {fold}: {} holds a sweep of {} settings; choose a (setting, fold) with --task (0..{})",
            out.display(),
            plan.settings.len(),
            tasks.n_tasks()
        ),
        (None, Some(fold)) if fold >= plan.n_folds => bail!(
            "--fold {fold} does not exist with --folds {}: use 0..{}",
            plan.n_folds,
            plan.n_folds
        ),
        (None, Some(fold)) => Ok(Task { setting: 0, fold }),
        (None, None) => bail!("--task or --fold is needed"),
    }
}

/// The one-line result of a cross-validation.
fn print_cv_summary(cv_dir: &Path, summary: &cv::CvSummary) {
    let hd95 = summary
        .hausdorff95_mm
        .map_or_else(String::new, |m| format!(", HD95 {} mm", m.format(2)));
    println!(
        "{} folds: held-out Dice {}, precision {}, recall {}, abs. volume difference {} mL{hd95}; summary in {}",
        summary.n_folds,
        summary.dice.format(4),
        summary.precision.format(4),
        summary.recall.format(4),
        summary.abs_volume_difference_ml.format(2),
        cv_dir.join(cv::CV_SUMMARY_MD).display()
    );
}

/// `cv --merge RUN`: the summary of a cross-validation (or the table of a sweep) from its
/// finished folds.
fn run_merge(run_dir: &Path) -> Result<()> {
    if sweep::is_sweep(run_dir) {
        let summary = sweep::merge_sweep(run_dir)?;
        print!("{}", sweep::markdown(&summary));
        println!(
            "\nwrote {} and {}",
            run_dir.join(sweep::SWEEP_SUMMARY_JSON).display(),
            run_dir.join(sweep::SWEEP_SUMMARY_MD).display()
        );
    } else {
        if !run_dir.join(CV_FILE).is_file() {
            bail!(
                "{} holds no cross-validation (no {CV_FILE} or {})",
                run_dir.display(),
                sweep::SWEEP_FILE
            );
        }
        let summary = cv::merge(run_dir)?;
        print_cv_summary(run_dir, &summary);
    }
    Ok(())
}

/// `cv --emit slurm|k8s`: records the plan in `out` (or checks it against what is there),
/// then prints the job script running its tasks.
fn emit(args: &CvArgs, kind: EmitKind, out: &Path, plan: &CvPlan) -> Result<()> {
    let c = &args.cluster;
    let tasks = plan.tasks()?;
    let trainer = match (&c.trainer, kind) {
        (Some(trainer), _) => trainer.clone(),
        (None, EmitKind::Slurm) => std::env::current_exe()
            .context("cannot tell where this strokeseg-train is: give --trainer")?
            .to_string_lossy()
            .into_owned(),
        (None, EmitKind::K8s) => "strokeseg-train".to_owned(),
    };
    let mut task_args = vec![
        "--device".to_owned(),
        args.data.device.to_string(),
        "--quiet".to_owned(),
    ];
    if let Some(threads) = args.data.threads {
        task_args.extend(["--threads".to_owned(), threads.to_string()]);
    }
    let job = JobArray {
        name: c.job_name.clone(),
        run_dir: out.to_path_buf(),
        plan: tasks,
        labels: (0..plan.settings.len())
            .map(|s| plan.grid.label(s))
            .collect(),
        trainer,
        task_args,
    };
    let gres = match c.gres.as_deref() {
        Some("none") => None,
        Some(gres) => Some(gres.to_owned()),
        None => Some("gpu:1".to_owned()),
    };
    let text = match kind {
        EmitKind::Slurm => {
            let options = SlurmOptions {
                gres,
                partition: c.partition.clone(),
                time: c.time.clone(),
                cpus_per_task: c.cpus_per_task,
                mem: c.mem.clone(),
                max_parallel: c.max_parallel,
                signal_lead_s: c.signal_lead_s,
            };
            // Checked before anything is written.
            cluster::slurm_script(&job, &options)?;
            if let Some(settings) = plan.settings.first()
                && !settings.data_dir.is_dir()
            {
                bail!(
                    "--data {}: no such folder (the tasks read it from the shared file system)",
                    settings.data_dir.display()
                );
            }
            plan.init(out)?;
            let logs = out.join(cluster::SLURM_LOG_DIR);
            std::fs::create_dir_all(&logs)
                .with_context(|| format!("cannot create {}", logs.display()))?;
            cluster::slurm_script(&job, &options)?
        }
        EmitKind::K8s => {
            let gpus = match gres.as_deref() {
                None => 0,
                Some("gpu") => 1,
                Some(g) => match g.strip_prefix("gpu:").map(str::parse::<u32>) {
                    Some(Ok(n)) => n,
                    _ => bail!("--gres {g}: k8s maps only gpu:N (nvidia.com/gpu) or none"),
                },
            };
            let (Some(image), Some(pvc)) = (&c.image, &c.pvc) else {
                bail!(
                    "--emit k8s needs --image (holding strokeseg-train) and --pvc (the volume holding --data and --out)"
                );
            };
            let options = K8sOptions {
                image: image.clone(),
                pvc: pvc.clone(),
                mount: c.mount.clone(),
                data_dir: plan
                    .settings
                    .first()
                    .map(|s| s.data_dir.clone())
                    .unwrap_or_default(),
                gpus,
                cpus: c.cpus_per_task,
                max_parallel: c.max_parallel,
                backoff_limit: c.backoff_limit,
            };
            cluster::k8s_manifest(&job, &options)?;
            plan.init(out)?;
            cluster::k8s_manifest(&job, &options)?
        }
    };
    print!("{text}");
    eprintln!(
        "{} tasks ({} settings x {} folds); settings written to {}",
        tasks.n_tasks(),
        tasks.n_settings(),
        tasks.n_folds(),
        out.display()
    );
    Ok(())
}

fn run_export(args: &ExportArgs) -> Result<()> {
    let options = RunExportOptions {
        run_dir: args.run.clone(),
        checkpoint: args.checkpoint,
        out_dir: args.out.clone(),
        name: None,
        version: args.version.clone(),
        int8: args.int8.then(|| export::Int8Calibration {
            data_dir: args.data.clone(),
            n_slices: args.calibration_slices,
            range_rule: args
                .calibration_percentile
                .map_or(export::RangeRule::MinMax, |percent| {
                    export::RangeRule::Percentile { percent }
                }),
        }),
    };
    let written = export::export_run(&options).with_context(|| {
        format!(
            "could not export run {} ({} checkpoint) to {}",
            args.run.display(),
            args.checkpoint,
            args.out.display()
        )
    })?;
    for model in std::iter::once(&written.fp32).chain(&written.int8) {
        println!(
            "wrote {} ({}, {:.2} MB, sha256 {})",
            model.path.display(),
            model.metadata.precision,
            model.bytes as f64 / 1e6,
            model.sha256
        );
    }
    if written.int8.is_some() {
        println!("int8 calibrated on {} slices", written.calibration_slices);
    }
    println!("wrote {}", written.sha256sums.display());
    Ok(())
}

fn run_model_info(file: &Path) -> Result<()> {
    print!("{}", strokeseg_model::ModelInfo::read(file)?);
    Ok(())
}

fn run_evaluate(args: &EvaluateArgs) -> Result<()> {
    let (only_cases, run_data_dir) = match &args.run {
        Some(run_dir) => {
            let run = RunConfig::load(run_dir).with_context(|| {
                let hint = if run_dir.join(CV_FILE).is_file() {
                    " (a cross-validation folder: pass one of its fold_K folders)"
                } else {
                    ""
                };
                format!(
                    "--run {}: cannot read the training run{hint}",
                    run_dir.display()
                )
            })?;
            if run.split.val_cases.is_empty() {
                bail!(
                    "--run {}: the run held out no cases (trained on every case), so there is \
                     nothing to evaluate it on",
                    run_dir.display()
                );
            }
            (Some(run.split.val_cases), Some(run.data_dir))
        }
        None => (args.cases.clone(), None),
    };
    let Some(truth) = args.truth.clone().or(run_data_dir) else {
        bail!("--truth is required (except with --run)");
    };
    let options = EvaluateOptions {
        missing_prediction: match args.missing {
            MissingArg::Error => MissingPrediction::Error,
            MissingArg::Empty => MissingPrediction::CountAsEmpty,
        },
        only_cases,
    };
    let evaluation = strokeseg_eval::evaluate_dataset_with(&args.pred, &truth, &options)
        .with_context(|| {
            format!(
                "cannot evaluate the predictions in {} against {}",
                args.pred.display(),
                truth.display()
            )
        })?;
    for warning in &evaluation.warnings {
        tracing::warn!("{warning}");
    }
    let out_dir = args.out.as_deref().unwrap_or(&args.pred);
    let written = evaluation
        .write_reports(out_dir)
        .with_context(|| format!("cannot write the reports into {}", out_dir.display()))?;
    println!(
        "{} cases of {} against {}\n",
        evaluation.summary.n_cases,
        evaluation.pred_dir.display(),
        evaluation.truth_root.display()
    );
    print!("{}", evaluation.summary.to_markdown());
    println!(
        "\nwrote {}, {} and {}",
        written.cases_csv.display(),
        written.summary_json.display(),
        written.summary_markdown.display()
    );
    Ok(())
}
