//! The `strokeseg-edge` command line.
//!
//! Exit codes: 0 success, 2 usage error, 3 bad input study or file, 4 bad configuration,
//! 1 anything else.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use strokeseg_edge::EdgeError;
use strokeseg_edge::demo::run_demo;
use strokeseg_edge::inspect::{StudySummary, inspect_study};
use strokeseg_shared::PreprocessConfig;

#[derive(Parser)]
#[command(
    name = "strokeseg-edge",
    version,
    about = "Segment ischemic stroke lesions in CT perfusion studies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a study (ISLES case folder or folder of per-modality files) and print its
    /// grid and per-channel brain statistics.
    Inspect {
        /// The case folder.
        case: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Generate a synthetic CTP study with a lesion (phantom) into OUT/study and run the
    /// edge runtime over it.
    Demo {
        /// Output folder.
        #[arg(long, default_value = "demo-out")]
        out: PathBuf,
        /// Phantom seed.
        #[arg(long, default_value_t = 2018)]
        seed: u64,
        /// Which case of the phantom dataset to generate.
        #[arg(long, default_value_t = 0)]
        case: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            let code = err
                .downcast_ref::<EdgeError>()
                .map_or(1, EdgeError::exit_code);
            ExitCode::from(code)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect { case, json } => {
            let summary = inspect_study(&case, &PreprocessConfig::default())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&summary).context("serialising the summary")?
                );
            } else {
                print_summary(&summary);
            }
            Ok(())
        }
        Command::Demo { out, seed, case } => {
            let outcome = run_demo(&out, seed, case)
                .with_context(|| format!("demo into {}", out.display()))?;
            println!("phantom study  {}", outcome.study_dir.display());
            println!(
                "truth lesion   {:.1} mL (core {:.1} mL, hypoperfused {:.1} mL){}",
                outcome.phantom.lesion_volume_ml,
                outcome.phantom.core_volume_ml,
                outcome.phantom.hypoperfused_volume_ml,
                outcome
                    .phantom
                    .lesion_site
                    .as_deref()
                    .map(|s| format!(" in {s}"))
                    .unwrap_or_default()
            );
            print_summary(&outcome.summary);
            println!("(synthetic phantom: not clinical data)");
            Ok(())
        }
    }
}

fn print_summary(summary: &StudySummary) {
    println!("case        {}", summary.case_dir.display());
    println!("modalities  {}", summary.modalities_found.join(", "));
    println!(
        "grid        {:?} voxels of {:?} mm",
        summary.dims, summary.spacing_mm
    );
    println!("brain       {:.1} mL", summary.brain_volume_ml);
    for c in &summary.channels {
        println!(
            "{:<9} {:<8} p1 {:>9.3}  p50 {:>9.3}  p99 {:>9.3}  non-finite {}",
            c.modality.isles_tag(),
            c.dtype,
            c.p1_p50_p99[0],
            c.p1_p50_p99[1],
            c.p1_p50_p99[2],
            c.non_finite_voxels
        );
    }
}
