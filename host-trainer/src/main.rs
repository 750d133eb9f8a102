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
//!
//! This file parses the arguments, turns them into the library's settings and prints the
//! results; the work is the library's (`train::train_or_resume` for a new or resumed run,
//! `cv::cross_validate` for the fold loop, `export`, `strokeseg_eval`, `strokeseg_phantom`).
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
use strokeseg_shared::postprocess::PostprocessConfig;
use strokeseg_trainer::DeviceChoice;
use strokeseg_trainer::cv::{self, CV_FILE, CvOutcome, CvSettings};
use strokeseg_trainer::data::{self, LoadedDataset};
use strokeseg_trainer::export::{self, Checkpoint, RunExportOptions};
use strokeseg_trainer::loss::LossKind;
use strokeseg_trainer::model::UNetConfig;
use strokeseg_trainer::run::{
    Precision, RunConfig, RunPaths, TrainConfig, grouping_label, recorded_grouping,
};
use strokeseg_trainer::schedule::{DecayKind, OptimizerKind};
use strokeseg_trainer::train::{self, RunSpec, RunStart, TrainControl, TrainOutcome};

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
}

/// Puts `value`, when given, into `slot`.
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

impl HyperArgs {
    fn train_config(&self) -> TrainConfig {
        let mut c = TrainConfig::default();
        set(&mut c.loss.kind, self.loss);
        set(&mut c.epochs, self.epochs);
        set(&mut c.batch_size, self.batch_size);
        set(&mut c.optimizer.lr, self.lr);
        set(&mut c.schedule.warmup_epochs, self.warmup_epochs);
        set(&mut c.schedule.decay, self.decay);
        set(&mut c.optimizer.kind, self.optimizer);
        set(&mut c.optimizer.weight_decay, self.weight_decay);
        set(
            &mut c.grad_clip_norm,
            self.grad_clip.map(|v| (v > 0.0).then_some(v)),
        );
        set(&mut c.lesion_fraction, self.lesion_fraction);
        set(&mut c.loss.lambda_ce, self.lambda_ce);
        set(&mut c.loss.lambda_gdl, self.lambda_gdl);
        set(&mut c.loss.ce_weight_power, self.ce_weight_power);
        if self.no_augment {
            c.augment.enabled = false;
        }
        set(&mut c.val_every_epochs, self.val_every);
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
        if let Some(size) = self.input_size {
            config.input_height = size;
            config.input_width = size;
        }
        set(&mut config.target_spacing_mm, self.target_spacing_mm);
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
        set(&mut unet.base_width, self.base_width);
        set(&mut unet.depth, self.depth);
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
    let options = DatasetOptions {
        n_cases: args.cases,
        seed: args.seed,
        gzip: args.gzip,
        with_pwi: args.pwi,
        ..Default::default()
    };
    let summary = strokeseg_phantom::write_dataset(&args.out, &options).with_context(|| {
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

/// How the flags steer a run: Ctrl-C, `--stop-after-steps`, `--quiet`.
fn control(data: &DataArgs) -> TrainControl {
    TrainControl {
        stop: stop_flag(),
        stop_after_steps: data.stop_after_steps,
        progress: !data.quiet,
    }
}

fn run_train(args: &TrainArgs, given: &[String]) -> Result<bool> {
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
            seed: args.hyper.seed.unwrap_or(DEFAULT_SEED),
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

fn run_cv(args: &CvArgs, given: &[String]) -> Result<bool> {
    let control = control(&args.data);
    let settings = if args.resume {
        refuse_changed_flags(&args.out, given)?;
        CvSettings::load(&args.out)
            .with_context(|| format!("cannot resume {}", args.out.display()))?
    } else {
        if args.out.join(CV_FILE).is_file() {
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
            grouping: grouping_label(&grouping(&args.data)),
            n_folds: args.folds,
            seed: args.hyper.seed.unwrap_or(DEFAULT_SEED),
            unet: args.hyper.unet(&preprocess),
            preprocess,
            postprocess: PostprocessConfig::default(),
            train: args.hyper.train_config(),
        };
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("cannot create {}", args.out.display()))?;
        settings.save(&args.out)?;
        settings
    };
    let device = setup_device(&args.data, settings.train.precision)?;
    let data_dir = args
        .data
        .data
        .clone()
        .unwrap_or_else(|| settings.data_dir.clone());
    let grouping = recorded_grouping(&settings.grouping);
    let loaded = load_data(&data_dir, &grouping, &settings.preprocess, device)?;
    let label = data::describe(&data_dir, loaded.cases.len());
    let mut report_fold = |fold_dir: &Path, outcome: &TrainOutcome| {
        report(fold_dir, outcome);
    };
    let outcome = cv::cross_validate(
        &args.out,
        &settings,
        &loaded,
        &label,
        device,
        &control,
        &mut report_fold,
    )?;
    let summary = match outcome {
        CvOutcome::Finished(summary) => summary,
        CvOutcome::Interrupted => {
            println!(
                "cross-validation stopped; continue with cv --resume --out {}",
                args.out.display()
            );
            return Ok(false);
        }
    };
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
