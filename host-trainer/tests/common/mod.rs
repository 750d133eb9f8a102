//! Shared fixtures of the trainer's integration tests: small phantom datasets written once per
//! test binary into a temporary folder, a small preprocessing grid and a tiny network, so every
//! test runs in seconds on the CPU.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use strokeseg_io::PatientGrouping;
use strokeseg_phantom::{DatasetOptions, write_dataset};
use strokeseg_shared::PreprocessConfig;
use strokeseg_shared::postprocess::PostprocessConfig;
use strokeseg_trainer::augment::AugmentConfig;
use strokeseg_trainer::data::{self, LoadedDataset};
use strokeseg_trainer::model::UNetConfig;
use strokeseg_trainer::run::TrainConfig;
use strokeseg_trainer::train::RunSpec;

/// Phantom options: `n_cases` slabs of 2–4 slices, every patient with a lesion.
pub fn options(n_cases: usize, seed: u64) -> DatasetOptions {
    DatasetOptions {
        n_cases,
        seed,
        min_slices: 2,
        max_slices: 4,
        lesion_free_fraction: 0.0,
        ..DatasetOptions::default()
    }
}

/// A phantom dataset written once per test binary (kept until the process exits).
pub fn dataset(n_cases: usize, seed: u64) -> &'static Path {
    /// `(n_cases, seed, folder)` of the datasets written so far.
    type Written = Vec<(usize, u64, &'static tempfile::TempDir)>;
    static DIRS: OnceLock<std::sync::Mutex<Written>> = OnceLock::new();
    let dirs = DIRS.get_or_init(Default::default);
    let mut dirs = dirs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, _, dir)) = dirs.iter().find(|(n, s, _)| *n == n_cases && *s == seed) {
        return dir.path();
    }
    let dir: &'static tempfile::TempDir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
    write_dataset(dir.path(), &options(n_cases, seed)).unwrap();
    dirs.push((n_cases, seed, dir));
    dir.path()
}

/// A 64 × 64 grid of 4 mm pixels (256 mm: the whole phantom head), default channels.
pub fn small_preprocess() -> PreprocessConfig {
    PreprocessConfig {
        input_height: 64,
        input_width: 64,
        target_spacing_mm: 4.0,
        ..PreprocessConfig::default()
    }
}

/// A tiny U-Net for 64 × 64 inputs.
pub fn tiny_unet() -> UNetConfig {
    UNetConfig {
        in_channels: 5,
        n_classes: 2,
        base_width: 8,
        depth: 2,
    }
}

/// Loads `dir` with [`small_preprocess`] on the CPU.
pub fn load(dir: &Path) -> LoadedDataset {
    let dataset = data::discover(dir, &PatientGrouping::Heuristic).unwrap();
    data::load_dataset(
        &dataset,
        &small_preprocess(),
        tch::Device::Cpu,
        |_, _, _| {},
    )
    .unwrap()
}

/// A run spec for `data_dir` with a small, fast training configuration.
pub fn spec(data_dir: &Path, fold: Option<u32>, train: TrainConfig) -> RunSpec {
    RunSpec {
        data_dir: PathBuf::from(data_dir),
        grouping: "heuristic".into(),
        data_label: "phantom (test)".into(),
        unet: tiny_unet(),
        postprocess: PostprocessConfig::default(),
        train,
        seed: 5,
        n_folds: 2,
        fold,
    }
}

/// Small training settings: `epochs` epochs of batches of 4, augmentation on.
pub fn small_train(epochs: u32) -> TrainConfig {
    let mut c = TrainConfig {
        epochs,
        batch_size: 4,
        eval_batch_size: 8,
        augment: AugmentConfig::default(),
        ..TrainConfig::default()
    };
    c.schedule.warmup_epochs = 1.0;
    c.optimizer.lr = 3e-3;
    c
}

/// Runs the `strokeseg-train` binary cargo built for these tests with `args`, logging at
/// `warn`, without `LD_LIBRARY_PATH` (the binary finds libtorch through its rpath).
pub fn strokeseg_train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strokeseg-train"))
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// Lossy UTF-8 of captured output.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts a zero exit status, showing both streams otherwise.
pub fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A path as a command-line argument.
pub fn s(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
