//! `strokeseg-train`: the host trainer's command line.
//!
//! ```text
//! strokeseg-train phantom --out DIR --cases N --seed S [--gzip] [--pwi]
//! strokeseg-train info [--device auto|cpu|cuda:N]
//! strokeseg-train train --data DIR --out RUN [--fold K --folds 4] [--loss hybrid|ce|gdl|dicece]
//!                       [--device auto|cpu|cuda:N] [--epochs N] [--batch-size N] [--lr F]
//!                       [--warmup-epochs F] [--base-width N] [--depth N] [--seed S] [--amp bf16]
//!                       [--resume] …
//! strokeseg-train cv --data DIR --folds 4 --out RUN […the same training flags] [--resume]
//! strokeseg-train export --run RUN [--checkpoint best|last] --out models/NAME
//!                        [--int8 [--data DIR] [--calibration-slices N]]
//! strokeseg-train model-info FILE
//! strokeseg-train evaluate --pred DIR --truth DATA [--out DIR] [--cases case_1,case_7 | --run RUN]
//!                          [--missing error|empty]
//! ```
//!
//! Exit codes: 0 success, 1 error, 2 usage error, 130 stopped by Ctrl-C (checkpoint saved;
//! continue with `--resume`).
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};
use strokeseg_shared::PreprocessConfig;
use strokeseg_shared::evaluation::{self, EvaluateOptions, MissingPrediction};
use strokeseg_shared::io::PatientGrouping;
use strokeseg_shared::phantom::{self, DatasetOptions, DatasetSummary};
use strokeseg_shared::postprocess::PostprocessConfig;
use strokeseg_trainer::cv::{self, CV_FILE};
use strokeseg_trainer::data::{self, LoadedDataset};
use strokeseg_trainer::export::{self, Checkpoint, RunExportOptions};
use strokeseg_trainer::loss::LossKind;
use strokeseg_trainer::model::UNetConfig;
use strokeseg_trainer::run::{Evaluation, RunConfig, RunPaths};
use strokeseg_trainer::schedule::{DecayKind, OptimizerKind};
use strokeseg_trainer::train::{
    self, Precision, RunSpec, TrainConfig, TrainControl, TrainOutcome, TrainState,
};
use strokeseg_trainer::{DeviceChoice, error as train_error};

/// Where `write_dataset` saves the full summary (documented on `DatasetSummary`).
const TRUTH_FILE: &str = "phantom_truth.json";

/// Exit status after Ctrl-C (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

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
    Train(TrainArgs),
    /// Patient-grouped k-fold cross-validation: every fold in turn, then a summary.
    Cv(CvArgs),
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum GroupingArg {
    /// Consecutive cases that look like two slabs of one acquisition are one patient.
    Heuristic,
    /// Every case is its own patient.
    PerCase,
}

/// Hyper-parameters; every one left out takes the default (or, with --resume, must be left
/// out: a resumed run continues with its recorded configuration).
#[derive(Debug, Args, Default)]
struct HyperArgs {
    /// Loss.
    #[arg(long, value_enum)]
    loss: Option<LossKind>,
    /// Epochs [default: 100].
    #[arg(long)]
    epochs: Option<u32>,
    /// Slices per batch [default: 8].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Peak learning rate [default: 1e-3].
    #[arg(long)]
    lr: Option<f64>,
    /// Linear warm-up length in epochs [default: 2].
    #[arg(long)]
    warmup_epochs: Option<f64>,
    /// Decay after warm-up.
    #[arg(long, value_enum)]
    decay: Option<DecayKind>,
    /// Optimiser.
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerKind>,
    /// Weight decay of convolution weights [default: 1e-4].
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Clip the gradient L2 norm to this value; 0 disables clipping [default: 5].
    #[arg(long)]
    grad_clip: Option<f64>,
    /// Share of each batch reserved for lesion slices [default: 0.5].
    #[arg(long)]
    lesion_fraction: Option<f64>,
    /// Hybrid loss: weight of the weighted CE [default: 1].
    #[arg(long)]
    lambda_ce: Option<f64>,
    /// Hybrid loss: weight of the generalized Dice loss [default: 1].
    #[arg(long)]
    lambda_gdl: Option<f64>,
    /// Exponent of the inverse class frequency in the CE class weights [default: 0.5].
    #[arg(long)]
    ce_weight_power: Option<f64>,
    /// Turn augmentation off.
    #[arg(long)]
    no_augment: bool,
    /// Validate every N epochs (and after the last) [default: 1].
    #[arg(long)]
    val_every: Option<u32>,
    /// Channels of the first U-Net level [default: 16].
    #[arg(long)]
    base_width: Option<i64>,
    /// Downsamplings of the U-Net [default: 4].
    #[arg(long)]
    depth: Option<usize>,
    /// Seed of weights, folds, batches and augmentation [default: 2018].
    #[arg(long)]
    seed: Option<u64>,
    /// bf16 training steps with f32 master weights (CUDA only).
    #[arg(long, value_enum)]
    amp: Option<Precision>,
    /// Model input size in pixels, square [default: 160]; a multiple of 2^depth.
    #[arg(long)]
    input_size: Option<u16>,
    /// Model grid spacing in mm [default: 1.5].
    #[arg(long)]
    target_spacing_mm: Option<f32>,
    /// Preprocessing config (JSON `PreprocessConfig`) instead of the default.
    #[arg(long)]
    preprocess_config: Option<PathBuf>,
    /// Stop (with a checkpoint) after this many steps; for testing --resume.
    #[arg(long, hide = true)]
    stop_after_steps: Option<u64>,
}

impl HyperArgs {
    /// The flags that were given (for the --resume check).
    fn given(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        let mut check = |set: bool, name| {
            if set {
                given.push(name);
            }
        };
        check(self.loss.is_some(), "--loss");
        check(self.epochs.is_some(), "--epochs");
        check(self.batch_size.is_some(), "--batch-size");
        check(self.lr.is_some(), "--lr");
        check(self.warmup_epochs.is_some(), "--warmup-epochs");
        check(self.decay.is_some(), "--decay");
        check(self.optimizer.is_some(), "--optimizer");
        check(self.weight_decay.is_some(), "--weight-decay");
        check(self.grad_clip.is_some(), "--grad-clip");
        check(self.lesion_fraction.is_some(), "--lesion-fraction");
        check(self.lambda_ce.is_some(), "--lambda-ce");
        check(self.lambda_gdl.is_some(), "--lambda-gdl");
        check(self.ce_weight_power.is_some(), "--ce-weight-power");
        check(self.no_augment, "--no-augment");
        check(self.val_every.is_some(), "--val-every");
        check(self.base_width.is_some(), "--base-width");
        check(self.depth.is_some(), "--depth");
        check(self.seed.is_some(), "--seed");
        check(self.amp.is_some(), "--amp");
        check(self.input_size.is_some(), "--input-size");
        check(self.target_spacing_mm.is_some(), "--target-spacing-mm");
        check(self.preprocess_config.is_some(), "--preprocess-config");
        given
    }

    fn train_config(&self) -> TrainConfig {
        let mut c = TrainConfig::default();
        if let Some(v) = self.loss {
            c.loss.kind = v;
        }
        if let Some(v) = self.epochs {
            c.epochs = v;
        }
        if let Some(v) = self.batch_size {
            c.batch_size = v;
        }
        if let Some(v) = self.lr {
            c.optimizer.lr = v;
        }
        if let Some(v) = self.warmup_epochs {
            c.schedule.warmup_epochs = v;
        }
        if let Some(v) = self.decay {
            c.schedule.decay = v;
        }
        if let Some(v) = self.optimizer {
            c.optimizer.kind = v;
        }
        if let Some(v) = self.weight_decay {
            c.optimizer.weight_decay = v;
        }
        if let Some(v) = self.grad_clip {
            c.grad_clip_norm = (v > 0.0).then_some(v);
        }
        if let Some(v) = self.lesion_fraction {
            c.lesion_fraction = v;
        }
        if let Some(v) = self.lambda_ce {
            c.loss.lambda_ce = v;
        }
        if let Some(v) = self.lambda_gdl {
            c.loss.lambda_gdl = v;
        }
        if let Some(v) = self.ce_weight_power {
            c.loss.ce_weight_power = v;
        }
        if self.no_augment {
            c.augment.enabled = false;
        }
        if let Some(v) = self.val_every {
            c.val_every_epochs = v;
        }
        if let Some(v) = self.amp {
            c.precision = v;
        }
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
        if let Some(size) = self.input_size {
            config.input_height = size;
            config.input_width = size;
        }
        if let Some(spacing) = self.target_spacing_mm {
            config.target_spacing_mm = spacing;
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
        if let Some(v) = self.base_width {
            unet.base_width = v;
        }
        if let Some(v) = self.depth {
            unet.depth = v;
        }
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
    /// Folder for the folds (`fold_K/`) and the summary.
    #[arg(long)]
    out: PathBuf,
    /// Number of folds.
    #[arg(long, default_value_t = 4)]
    folds: u32,
    /// Continue an interrupted cross-validation: finished folds are kept, the interrupted one resumed.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    hyper: HyperArgs,
}

/// `RUN/cv.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CvSettings {
    data_dir: PathBuf,
    grouping: String,
    n_folds: u32,
    seed: u64,
    unet: UNetConfig,
    preprocess: PreprocessConfig,
    postprocess: PostprocessConfig,
    train: TrainConfig,
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
}

fn main() -> ExitCode {
    init_logging();
    let result = match Cli::parse().command {
        Command::Phantom(args) => run_phantom(&args).map(|()| true),
        Command::Info { device } => run_info(device).map(|()| true),
        Command::Train(args) => run_train(&args),
        Command::Cv(args) => run_cv(&args),
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
    let options = DatasetOptions {
        n_cases: args.cases,
        seed: args.seed,
        gzip: args.gzip,
        with_pwi: args.pwi,
        ..Default::default()
    };
    let summary = phantom::write_dataset(&args.out, &options).with_context(|| {
        format!(
            "could not write the phantom dataset ({} cases, seed {}) into {}",
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

/// The grouping the flags ask for, and its name for run.json.
fn grouping(data: &DataArgs) -> (PatientGrouping, String) {
    match (&data.patients, data.grouping) {
        (Some(csv), _) => (
            PatientGrouping::Csv(csv.clone()),
            format!("csv:{}", csv.display()),
        ),
        (None, Some(GroupingArg::PerCase)) => (PatientGrouping::OnePerCase, "per-case".into()),
        (None, _) => (PatientGrouping::Heuristic, "heuristic".into()),
    }
}

/// The grouping recorded in run.json, back as a `PatientGrouping`.
fn parse_grouping(recorded: &str) -> PatientGrouping {
    match recorded.strip_prefix("csv:") {
        Some(path) => PatientGrouping::Csv(PathBuf::from(path)),
        None if recorded == "per-case" => PatientGrouping::OnePerCase,
        None => PatientGrouping::Heuristic,
    }
}

/// `phantom seed S, N cases` for phantom datasets, else `<folder name>, N cases`.
fn data_label(data_dir: &Path, n_cases: usize) -> String {
    let seed = std::fs::read_to_string(data_dir.join(TRUTH_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("seed").and_then(serde_json::Value::as_u64));
    match seed {
        Some(seed) => format!("phantom seed {seed}, {n_cases} cases"),
        None => {
            let name = data_dir.file_name().map_or_else(
                || data_dir.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            format!("{name}, {n_cases} cases")
        }
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
/// checkpoint), a second one exits at once.
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
    stop
}

/// `path` made absolute (so a run can be resumed from another working directory).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn holds_run(dir: &Path) -> bool {
    RunPaths::new(dir).run_json().is_file()
}

fn run_train(args: &TrainArgs) -> Result<bool> {
    let control = TrainControl {
        stop: stop_flag(),
        stop_after_steps: args.hyper.stop_after_steps,
        progress: !args.data.quiet,
    };
    if args.resume {
        let given = args.hyper.given();
        if !given.is_empty() {
            bail!(
                "--resume continues {} with its recorded configuration; leave out {}",
                args.out.display(),
                given.join(", ")
            );
        }
        let mut run = RunConfig::load(&args.out)
            .with_context(|| format!("cannot resume {}", args.out.display()))?;
        let device = setup_device(&args.data, run.train.precision)?;
        let data_dir = args
            .data
            .data
            .clone()
            .unwrap_or_else(|| run.data_dir.clone());
        let loaded = load_data(
            &data_dir,
            &parse_grouping(&run.split.grouping),
            &run.preprocess,
            device,
        )?;
        let outcome = train::train(&args.out, &mut run, &loaded, device, &control, true)
            .with_context(|| format!("training {} failed", args.out.display()))?;
        return Ok(report(&args.out, &outcome));
    }
    if holds_run(&args.out) {
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
    let (grouping, grouping_name) = grouping(&args.data);
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
        data_dir: data_dir.clone(),
        grouping: grouping_name,
        data_label: data_label(&data_dir, loaded.cases.len()),
        unet: args.hyper.unet(&preprocess),
        postprocess: PostprocessConfig::default(),
        train: train_config,
        seed: args.hyper.seed.unwrap_or(DEFAULT_SEED),
        n_folds: args.folds,
        fold: args.fold,
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut run = train::new_run_config(&spec, &loaded, device).context("invalid run")?;
    tracing::info!(
        "training on {} cases, holding out {} ({} folds, fold {:?}), device {device:?}",
        run.split.train_cases.len(),
        run.split.val_cases.len(),
        run.split.n_folds,
        run.split.fold
    );
    let outcome = train::train(&args.out, &mut run, &loaded, device, &control, false)
        .with_context(|| format!("training {} failed", args.out.display()))?;
    Ok(report(&args.out, &outcome))
}

/// Default seed of runs.
const DEFAULT_SEED: u64 = 2018;

/// `, HD95 x mm (n infinite)` from a held-out summary, empty without one.
fn hd95_text(summary: Option<&evaluation::Summary>) -> String {
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
                    last.mean_dice,
                    best.mean_dice,
                    evaluation.best_epoch.unwrap_or(0),
                    last.mean_precision,
                    last.mean_recall,
                    last.mean_abs_volume_difference_ml,
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

fn run_cv(args: &CvArgs) -> Result<bool> {
    let control = TrainControl {
        stop: stop_flag(),
        stop_after_steps: args.hyper.stop_after_steps,
        progress: !args.data.quiet,
    };
    let cv_path = args.out.join(CV_FILE);
    let settings: CvSettings = if args.resume {
        let given = args.hyper.given();
        if !given.is_empty() {
            bail!(
                "--resume continues {} with its recorded configuration; leave out {}",
                args.out.display(),
                given.join(", ")
            );
        }
        train_error::read_json(&cv_path)
            .with_context(|| format!("cannot resume {}", args.out.display()))?
    } else {
        if cv_path.is_file() {
            bail!(
                "{} already holds a cross-validation: continue it with --resume, or choose another --out",
                args.out.display()
            );
        }
        let Some(data_dir) = args.data.data.as_deref().map(absolute) else {
            bail!("--data is required (except with --resume)");
        };
        let preprocess = args.hyper.preprocess_config()?;
        let settings = CvSettings {
            data_dir,
            grouping: grouping(&args.data).1,
            n_folds: args.folds,
            seed: args.hyper.seed.unwrap_or(DEFAULT_SEED),
            unet: args.hyper.unet(&preprocess),
            preprocess,
            postprocess: PostprocessConfig::default(),
            train: args.hyper.train_config(),
        };
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("cannot create {}", args.out.display()))?;
        train_error::write_json(&cv_path, &settings)?;
        settings
    };
    let device = setup_device(&args.data, settings.train.precision)?;
    let data_dir = args
        .data
        .data
        .clone()
        .unwrap_or_else(|| settings.data_dir.clone());
    let loaded = load_data(
        &data_dir,
        &parse_grouping(&settings.grouping),
        &settings.preprocess,
        device,
    )?;
    let mut evaluations = Vec::with_capacity(settings.n_folds as usize);
    for fold in 0..settings.n_folds {
        let fold_dir = args.out.join(format!("fold_{fold}"));
        let outcome = if holds_run(&fold_dir) {
            let state: Option<TrainState> =
                train_error::read_json(&RunPaths::new(&fold_dir).last_state()).ok();
            if state.is_some_and(|s| s.finished) {
                tracing::info!("fold {fold}: already complete");
                TrainOutcome::Finished(Box::new(Evaluation::load(&fold_dir)?))
            } else {
                tracing::info!("fold {fold}: resuming");
                let mut run = RunConfig::load(&fold_dir)?;
                train::train(&fold_dir, &mut run, &loaded, device, &control, true)
                    .with_context(|| format!("fold {fold} failed"))?
            }
        } else {
            std::fs::create_dir_all(&fold_dir)
                .with_context(|| format!("cannot create {}", fold_dir.display()))?;
            let spec = RunSpec {
                data_dir: settings.data_dir.clone(),
                grouping: settings.grouping.clone(),
                data_label: data_label(&data_dir, loaded.cases.len()),
                unet: settings.unet,
                postprocess: settings.postprocess,
                train: settings.train.clone(),
                seed: settings.seed,
                n_folds: settings.n_folds,
                fold: Some(fold),
            };
            let mut run = train::new_run_config(&spec, &loaded, device).context("invalid run")?;
            tracing::info!(
                "fold {fold}/{}: training on {} cases, holding out {}",
                settings.n_folds,
                run.split.train_cases.len(),
                run.split.val_cases.len()
            );
            train::train(&fold_dir, &mut run, &loaded, device, &control, false)
                .with_context(|| format!("fold {fold} failed"))?
        };
        match outcome {
            TrainOutcome::Finished(evaluation) => {
                report(&fold_dir, &TrainOutcome::Finished(evaluation.clone()));
                evaluations.push((fold, *evaluation));
            }
            interrupted @ TrainOutcome::Interrupted { .. } => {
                report(&fold_dir, &interrupted);
                println!(
                    "cross-validation stopped; continue with cv --resume --out {}",
                    args.out.display()
                );
                return Ok(false);
            }
        }
    }
    let summary = cv::summarize(&evaluations, settings.train.loss.kind.name(), settings.seed);
    cv::write_summary(&args.out, &summary)?;
    let hd95 = summary.hausdorff95_mm.map_or_else(String::new, |m| {
        format!(", HD95 {:.2} ± {:.2} mm", m.mean, m.sd)
    });
    println!(
        "{} folds: held-out Dice {:.4} ± {:.4}, precision {:.4} ± {:.4}, recall {:.4} ± {:.4}, abs. volume difference {:.2} ± {:.2} mL{hd95}; summary in {}",
        summary.n_folds,
        summary.dice.mean,
        summary.dice.sd,
        summary.precision.mean,
        summary.precision.sd,
        summary.recall.mean,
        summary.recall.sd,
        summary.abs_volume_difference_ml.mean,
        summary.abs_volume_difference_ml.sd,
        args.out.join(cv::CV_SUMMARY_MD).display()
    );
    Ok(true)
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
    print!("{}", export::ModelInfo::read(file)?);
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
    let evaluation =
        evaluation::evaluate_dataset_with(&args.pred, &truth, &options).with_context(|| {
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
