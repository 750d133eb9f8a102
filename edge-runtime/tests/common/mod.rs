//! Helpers shared by the edge runtime's integration tests: phantom studies, fixture models,
//! running the binary.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use strokeseg_edge::fixture::{FixtureOptions, Precision, fixture_model};
use strokeseg_shared::phantom::{self, CaseSummary, DatasetOptions};

pub fn edge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strokeseg-edge"))
        .args(args)
        .output()
        .expect("run strokeseg-edge")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Phantom options of the tests: lesions always, at most `max_slices` slices.
pub fn phantom_opts(seed: u64, max_slices: usize) -> DatasetOptions {
    DatasetOptions {
        n_cases: 1,
        seed,
        max_slices,
        min_slices: max_slices.min(2),
        lesion_free_fraction: 0.0,
        ..DatasetOptions::default()
    }
}

/// Writes phantom case `index` of `opts` into `dir/name`.
pub fn phantom_case(
    dir: &Path,
    name: &str,
    opts: &DatasetOptions,
    index: usize,
    gzip: bool,
) -> (PathBuf, CaseSummary) {
    let case = phantom::generate_case(opts.seed, index, opts);
    let case_dir = dir.join(name);
    let summary = phantom::write_case(&case_dir, &case, 100, gzip, false).unwrap();
    (case_dir, summary)
}

/// Writes a fixture model into `dir/name` and returns its path.
pub fn model_file(dir: &Path, name: &str, opts: &FixtureOptions) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, fixture_model(opts)).unwrap();
    p
}

pub fn fp32_model(dir: &Path) -> PathBuf {
    model_file(dir, "model.onnx", &FixtureOptions::default())
}

pub fn int8_model(dir: &Path) -> PathBuf {
    model_file(
        dir,
        "model.int8.onnx",
        &FixtureOptions {
            precision: Precision::Int8,
            ..FixtureOptions::default()
        },
    )
}

/// The NIfTI file of modality `tag` in an ISLES case folder.
pub fn file_of(case_dir: &Path, tag: &str) -> PathBuf {
    let sub = std::fs::read_dir(case_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .contains(&format!(".O.{tag}."))
        })
        .unwrap();
    let name = sub.file_name().unwrap().to_string_lossy().to_string();
    let plain = sub.join(format!("{name}.nii"));
    if plain.exists() {
        plain
    } else {
        sub.join(format!("{name}.nii.gz"))
    }
}

/// Names in `dir` (empty when it does not exist).
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
