//! `strokeseg-train`: the host trainer's command line.
//!
//! ```text
//! strokeseg-train phantom --out DIR --cases N --seed S [--gzip] [--pwi]
//! strokeseg-train info [--device auto|cpu|cuda:N]
//! ```
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use strokeseg_shared::phantom::{self, DatasetOptions, DatasetSummary};
use strokeseg_trainer::DeviceChoice;

/// Where `write_dataset` saves the full summary (documented on `DatasetSummary`).
const TRUTH_FILE: &str = "phantom_truth.json";

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

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Phantom(args) => run_phantom(&args),
        Command::Info { device } => run_info(device),
    }
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
