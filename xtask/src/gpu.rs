//! `cargo xtask gpu-bundle`: a CUDA-capable `strokeseg-train` built on this (CUDA-less)
//! machine, bundled with `host-trainer/gpu/gpu-check.sh` for one short run on a GPU machine
//! that has torch 2.11.0 for python3 but no Rust toolchain and no network.
//!
//! How: [`libtorch::setup_cuda_link_dir`] makes `.cache/libtorch-cuda` (the CPU install plus
//! the torch wheel's `libtorch_cuda.so` and `libc10_cuda.so`); the trainer is built against it
//! in its own target dir (`<target>/gpu-bundle-build`, so the CPU build stays warm) with
//! `STROKESEG_ALLOW_SHLIB_UNDEFINED=1` (CUDA's own libraries are not here; the trainer's build
//! script then links with `--allow-shlib-undefined`, and links `libtorch_cuda.so` with
//! `--no-as-needed`). The binary is copied to `target/gpu-bundle/`, stripped, and checked to
//! need `libtorch_cuda.so`. On the GPU machine the script points `LD_LIBRARY_PATH` at that
//! machine's torch libraries (the binary's rpath is a RUNPATH, which `LD_LIBRARY_PATH`
//! overrides). The dev profile is enough: libtorch does the numerical work.
//!
//! With the `device` tool: `bash target/gpu-bundle/gpu-check.sh`, carrying
//! `target/gpu-bundle` (about 30 MiB).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{libtorch, process};

/// The bundle folder, relative to the repo root (git-ignored).
pub const BUNDLE_DIR: &str = "target/gpu-bundle";
/// The check script, relative to the repo root.
const SCRIPT: &str = "host-trainer/gpu/gpu-check.sh";
/// What the device tool carries at most; the bundle must stay below it.
const MAX_BUNDLE_BYTES: u64 = 60 * 1024 * 1024;

/// `cargo xtask gpu-bundle`.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    if let Some(extra) = args.first() {
        bail!("gpu-bundle takes no arguments, got `{extra}`");
    }
    libtorch::setup(root)?;
    let link_dir = libtorch::setup_cuda_link_dir(root)?;
    let target_base = crate::cross::target_dir(root);
    let build_dir = target_base.join("gpu-bundle-build");
    let started = Instant::now();
    let line = "cargo build -p strokeseg-trainer --bin strokeseg-train";
    println!(
        "$ LIBTORCH={} CARGO_TARGET_DIR={} STROKESEG_ALLOW_SHLIB_UNDEFINED=1 {line}",
        link_dir.display(),
        build_dir.display()
    );
    let status = Command::new("cargo")
        .current_dir(root)
        .args([
            "build",
            "-p",
            "strokeseg-trainer",
            "--bin",
            "strokeseg-train",
        ])
        .env("LIBTORCH", &link_dir)
        .env("CARGO_TARGET_DIR", &build_dir)
        .env("STROKESEG_ALLOW_SHLIB_UNDEFINED", "1")
        .env_remove("LIBTORCH_USE_PYTORCH")
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` against {} failed ({status})", link_dir.display());
    }
    println!("built in {:.1} s", started.elapsed().as_secs_f64());

    let bundle = root.join(BUNDLE_DIR);
    fs::create_dir_all(&bundle)
        .with_context(|| format!("could not create {}", bundle.display()))?;
    let binary = bundle.join("strokeseg-train");
    let built = build_dir.join("debug").join("strokeseg-train");
    fs::copy(&built, &binary)
        .with_context(|| format!("could not copy {} to {}", built.display(), binary.display()))?;
    process::run(root, "strip", &[binary.as_os_str()])
        .context("stripping the bundled binary failed (Debian: apt-get install binutils)")?;
    check_needs_cuda(root, &binary)?;
    let script = bundle.join("gpu-check.sh");
    fs::copy(root.join(SCRIPT), &script)
        .with_context(|| format!("could not copy {SCRIPT} to {}", script.display()))?;
    let size = fs::metadata(&binary)
        .with_context(|| format!("could not read {}", binary.display()))?
        .len();
    if size > MAX_BUNDLE_BYTES {
        bail!(
            "{} is {:.1} MiB, over the {} MiB the device tool carries",
            binary.display(),
            mib(size),
            MAX_BUNDLE_BYTES / (1024 * 1024)
        );
    }
    println!(
        "gpu-bundle: {} ({:.1} MiB) and {}\n\
         on the GPU machine (torch {} for python3): bash {BUNDLE_DIR}/gpu-check.sh  (results in $OUT)",
        binary.display(),
        mib(size),
        script.display(),
        libtorch::TORCH_VERSION
    );
    Ok(())
}

/// Fails unless `binary` lists `libtorch_cuda.so` as needed (else libtorch would see no GPU).
fn check_needs_cuda(root: &Path, binary: &Path) -> Result<()> {
    let Some(dynamic) = process::output(root, "readelf", &[binary.as_os_str(), "-d".as_ref()])
    else {
        println!("readelf not available: not checking that the binary needs libtorch_cuda.so");
        return Ok(());
    };
    if !dynamic.contains("[libtorch_cuda.so]") {
        bail!(
            "{} does not need libtorch_cuda.so: libtorch would see no CUDA device (check the trainer's build.rs)",
            binary.display()
        );
    }
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
