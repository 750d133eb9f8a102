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

use strokeseg_model::fixture::{FixtureOptions, Precision, fixture_model};
use strokeseg_phantom::{CaseSummary, DatasetOptions};

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
    let case = strokeseg_phantom::generate_case(opts.seed, index, opts).unwrap();
    let case_dir = dir.join(name);
    let summary = strokeseg_phantom::write_case(&case_dir, &case, 100, gzip, false).unwrap();
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

/// A `[pins]` config with the `log` backend (all four roles), written to `dir/pins-log.toml`.
pub fn log_pins_config(dir: &Path) -> PathBuf {
    let p = dir.join("pins-log.toml");
    std::fs::write(&p, "[pins]\nbackend = \"log\"\n").unwrap();
    p
}

/// `strokeseg-edge --log-format json ARGS` with the binary's default log filter (`RUST_LOG`
/// removed), so the logged pin levels do not depend on the caller's environment.
pub fn edge_json_log(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strokeseg-edge"))
        .args(["--log-format", "json"])
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run strokeseg-edge")
}

/// The status pin levels a run logged with the `log` pin backend and `--log-format json`,
/// in order, as `role=level` (`busy=high`). Lines that are not JSON (the `error:` line) and
/// events of other targets are skipped.
pub fn pin_sequence(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == strokeseg_edge::status::PIN_LOG_TARGET)
        .map(|v| {
            let f = &v["fields"];
            format!(
                "{}={}",
                f["pin"].as_str().unwrap_or("?"),
                f["level"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// Pin levels of one `segment` run with every pin logged, from a fresh process (all low):
/// a study that succeeds without alert.
pub const PINS_SUCCESS: &[&str] = &["busy=high", "done=high", "busy=low"];
/// … a study that succeeds and raises the alert.
pub const PINS_SUCCESS_ALERT: &[&str] = &["busy=high", "alert=high", "done=high", "busy=low"];
/// … a run that fails: a bad study, or a model that cannot be loaded.
pub const PINS_FAILURE: &[&str] = &["busy=high", "fault=high", "busy=low"];
/// Pin levels of `watch --once` over a bad study and then a good one (no alert): the
/// daemon's reset changes nothing, the bad study raises fault, the next start lowers it.
pub const PINS_DAEMON_BAD_THEN_GOOD: &[&str] = &[
    "busy=high",
    "fault=high",
    "busy=low",
    "fault=low",
    "busy=high",
    "done=high",
    "busy=low",
];
