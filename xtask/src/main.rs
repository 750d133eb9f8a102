//! `cargo xtask`: the project's developer tasks, in plain Rust so they run wherever cargo does.
//!
//! ```text
//! cargo xtask setup-libtorch     install CPU libtorch 2.11.0 into .cache/libtorch (idempotent)
//! cargo xtask setup-templates    the ICBM 2009a brain template (from nilearn) into .cache/templates
//! cargo xtask ci [STEP...]       the whole test suite, or only the named steps
//! cargo xtask ci --list          the CI steps, in order
//! cargo xtask slurm-bench        4-fold cv wall time: sequential vs a SLURM job array (2 at once)
//! cargo xtask cross              static aarch64-unknown-linux-musl strokeseg-edge (release)
//! cargo xtask hil [LOOP...]      hardware-in-the-loop under QEMU: firmware (Cortex-M4F), edge (aarch64)
//! cargo xtask gpu-bundle         CUDA strokeseg-train + gpu-check.sh for a GPU machine without Rust
//! cargo xtask default-model      retrain, export and evaluate the shipped model in models/default
//! cargo xtask evaluate-model     a model and the threshold rule on the phantom families (out of family too)
//! cargo xtask bench-model        tract vs onnxruntime per-slice latency on the same models and threads
//! ```
//!
//! The alias lives in `.cargo/config.toml`; `.ci/run` and the README call `cargo xtask ci`.

mod bench_model;
mod ci;
mod cross;
mod default_model;
mod dicom;
mod gpu;
mod hil;
mod libtorch;
mod model_eval;
mod process;
mod slurm;
mod templates;
mod tidy;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  setup-libtorch     install CPU libtorch 2.11.0 into .cache/libtorch (skips when already complete)
  setup-templates    the ICBM 2009a brain template the phantom's template anatomy needs, from the
                     nilearn 0.14.1 wheel, into .cache/templates/icbm152_2009a (skips when present)
  ci [STEP...]       run the CI steps in order (all of them, or only those named)
  ci --list          list the CI steps
  slurm-bench        wall time of a small 4-fold cv run sequentially and as a SLURM job array
                     on a single-node cluster started for it (2 tasks at once on 2 CPUs)
  cross              build a static aarch64-unknown-linux-musl strokeseg-edge (release; installs
                     the rustup target and Debian's gcc-aarch64-linux-gnu when missing)
  hil [LOOP...]      hardware-in-the-loop tests under QEMU (installs what is missing):
                       firmware  strokeseg-shared on an emulated Cortex-M4F (mps2-an386)
                       edge      the aarch64 strokeseg-edge under qemu-user vs the x86 build
                     (default: both)
  gpu-bundle         a CUDA-capable strokeseg-train (linked here against the torch wheel's CUDA
                     backend) + host-trainer/gpu/gpu-check.sh in target/gpu-bundle, to run on a
                     GPU machine with torch 2.11.0 for python3: bash target/gpu-bundle/gpu-check.sh
  default-model      retrain the shipped default model from scratch (phantoms, CPU, ~20 min on
                     2 cores), export fp32 + int8 into models/default and evaluate the held-out
                     cases with the edge runtime [--work DIR] [--reuse-run]
  evaluate-model     judge a model (default: models/default) and the threshold rule on the phantom
                     families, the out-of-family one first: Dice, lesion-case Dice, volume
                     correlation, int8-vs-fp32 agreement [--model FILE] [--int8 FILE] [--work DIR]
                     [--out DIR]
  bench-model        tract (`strokeseg-edge bench`) and onnxruntime (tests/scripts/bench_ort.py)
                     on the same models, input and threads, and their ratio
                     [--model FILE]... [--threads N]... [--reps N] (default: models/default
                     fp32 + int8, 1 and 2 threads)
  help               this text

environment:
  LIBTORCH               an existing libtorch install to use instead of .cache/libtorch
  LIBTORCH_USE_PYTORCH   set to 1 to build against the python torch install (CUDA machines)";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = repo_root()?;
    match args.split_first() {
        Some((task, rest)) if task == "setup-libtorch" => {
            if let Some(extra) = rest.first() {
                bail!("setup-libtorch takes no arguments, got `{extra}`\n\n{USAGE}");
            }
            libtorch::setup(&root)
        }
        Some((task, _)) if task == "setup-templates" => templates::setup(&root).map(|_| ()),
        Some((task, rest)) if task == "ci" => ci::run(&root, rest),
        Some((task, _)) if task == "slurm-bench" => slurm::bench(&root),
        Some((task, rest)) if task == "cross" => cross::run(&root, rest),
        Some((task, rest)) if task == "hil" => hil::run(&root, rest),
        Some((task, rest)) if task == "gpu-bundle" => gpu::run(&root, rest),
        Some((task, rest)) if task == "default-model" => default_model::run(&root, rest),
        Some((task, rest)) if task == "evaluate-model" => model_eval::run(&root, rest),
        Some((task, rest)) if task == "bench-model" => bench_model::run(&root, rest),
        Some((task, _)) if matches!(task.as_str(), "help" | "-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some((task, _)) => bail!("unknown task `{task}`\n\n{USAGE}"),
        None => bail!("no task given\n\n{USAGE}"),
    }
}

/// The workspace root: the parent of this crate's manifest directory.
///
/// `cargo run` sets `CARGO_MANIFEST_DIR` for the process too; that one wins over the
/// compile-time value, so a binary built in another checkout (a shared target dir) still acts on
/// the checkout it was run from.
fn repo_root() -> Result<PathBuf> {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let root = manifest_dir.parent().with_context(|| {
        format!(
            "xtask manifest dir {} has no parent",
            manifest_dir.display()
        )
    })?;
    Ok(root.to_path_buf())
}
