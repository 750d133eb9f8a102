//! `cargo xtask default-model`: retrains the shipped default model in `models/default/` from
//! scratch, in one command, and measures it the way `models/default/MODEL_CARD.md` reports.
//!
//! Steps (the work folder defaults to `target/default-model/`):
//! 1. a phantom dataset: [`PHANTOM_CASES`] cases, seed [`PHANTOM_SEED`] (`strokeseg-train phantom`);
//! 2. training with the hybrid loss on the CPU, fold 0 of 4 held out (patient-grouped, with the
//!    phantom's `patients.csv`), the settings in [`TRAIN_ARGS`];
//! 3. export of the *last* checkpoint (the held-out fold never picks it) to `models/default/`:
//!    `model.onnx`, `model.int8.onnx` (calibrated on training cases only), `SHA256SUMS`;
//! 4. the held-out cases segmented by the edge runtime (tract) with the fp32 model, the int8
//!    model and the threshold rule, each scored by `strokeseg-train evaluate` into
//!    `models/default/evaluation/{fp32,int8,threshold}.{md,json}`;
//! 5. the same three on the phantom families of [`crate::model_eval::SETS`], the
//!    out-of-family `holdout` set first, into `models/default/evaluation/families/`.
//!
//! On the CPU a run is a pure function of its seeds for a given machine and thread count; the
//! figures of another machine may differ in the last digits. `--reuse-run` skips steps 1–2 when
//! the work folder already holds a finished run (to redo only export and evaluation).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::process;

/// Phantom cases (slabs) generated for training and validation.
pub const PHANTOM_CASES: &str = "200";
/// Seed of the phantom dataset (the README's demo uses another seed, 2018: unseen data).
pub const PHANTOM_SEED: &str = "2026";
/// The phantom family trained on: heads on the brain template with hospital variation
/// (judged on the procedural `holdout` family it never sees).
pub const PHANTOM_FAMILY: &str = "hospitals";
/// Training settings of the shipped model.
pub const TRAIN_ARGS: &[&str] = &[
    "--fold",
    "0",
    "--folds",
    "4",
    "--loss",
    "hybrid",
    "--epochs",
    "24",
    "--warmup-epochs",
    "2",
    "--batch-size",
    "8",
    "--input-size",
    "128",
    "--target-spacing-mm",
    "2",
    "--base-width",
    "16",
    "--depth",
    "4",
    "--seed",
    "2018",
    "--val-every",
    "4",
    "--device",
    "cpu",
    // Fixed, so that the run is reproducible on machines with more cores.
    "--threads",
    "2",
    "--quiet",
];
/// Training seeds of the extra ensemble members: the same data, split and recipe as the
/// shipped model (seed 2018), so the held-out fold stays unseen by every member.
pub const MEMBER_SEEDS: &[&str] = &["2019", "2020"];
/// The shipped model's folder, relative to the repo root.
const MODEL_DIR: &str = "models/default";
/// Where the members' fp32 models go (`seed-S.onnx`, `SHA256SUMS`), inside the work folder:
/// they are not shipped, because the ensemble did not gain out of family (the model card).
const MEMBER_DIR: &str = "members";
/// Model version written into the metadata.
const MODEL_VERSION: &str = "2.0.0";

/// Whether `run_dir` holds a finished training run.
fn is_finished(run_dir: &Path) -> bool {
    run_dir
        .join("checkpoints")
        .join("last.safetensors")
        .is_file()
        && run_dir.join("evaluation.json").is_file()
}

/// `cargo xtask default-model [--work DIR] [--reuse-run] [--members-only]`.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut work = root.join("target").join("default-model");
    let mut reuse_run = false;
    let mut members_only = false;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--work" => {
                work = PathBuf::from(rest.next().context("--work needs a folder")?);
            }
            "--reuse-run" => reuse_run = true,
            "--members-only" => members_only = true,
            other => bail!(
                "default-model: unknown argument `{other}` (--work DIR, --reuse-run, --members-only)"
            ),
        }
    }
    if members_only {
        return members(root, &work);
    }
    // Every step below runs with the repo root or the work folder as its working directory.
    let work = std::path::absolute(&work)
        .with_context(|| format!("could not resolve {}", work.display()))?;
    let started = Instant::now();
    let (train_bin, _) = crate::model_eval::build_tools(root)?;
    let train = train_bin.to_string_lossy();
    let data = work.join("data");
    let run_dir = work.join("run");
    let s = |p: &Path| p.to_string_lossy().into_owned();

    if reuse_run && is_finished(&run_dir) {
        println!(
            "default-model: reusing the finished run in {}",
            run_dir.display()
        );
    } else {
        for dir in [&data, &run_dir] {
            if dir.exists() {
                fs::remove_dir_all(dir)
                    .with_context(|| format!("could not remove {}", dir.display()))?;
            }
        }
        generate_data(root, &train_bin, &data)?;
        let mut args = vec![
            "train".to_owned(),
            "--data".into(),
            s(&data),
            "--patients".into(),
            s(&data.join("patients.csv")),
            "--out".into(),
            s(&run_dir),
        ];
        args.extend(TRAIN_ARGS.iter().map(|a| (*a).to_owned()));
        process::run(root, &train, &args)?;
    }

    let member_files = train_members(root, &train_bin, &data, &work, reuse_run)?;

    let model_dir = root.join(MODEL_DIR);
    process::run(
        root,
        &train,
        &[
            "export",
            "--run",
            &s(&run_dir),
            "--checkpoint",
            "last",
            "--out",
            &s(&model_dir),
            "--version",
            MODEL_VERSION,
            "--int8",
        ],
    )?;
    // Built after the export: the edge binary embeds models/default/model.onnx (the dev
    // profile builds tract optimised; the workspace-wide build reuses the warm target).
    let (_, edge_bin) = crate::model_eval::build_tools(root)?;
    let edge = edge_bin.to_string_lossy();
    let val_cases = held_out_cases(&run_dir)?;
    let eval_dir = model_dir.join("evaluation");
    fs::create_dir_all(&eval_dir)
        .with_context(|| format!("could not create {}", eval_dir.display()))?;
    let mut ensemble_args = vec!["--model".to_owned(), s(&model_dir.join("model.onnx"))];
    for member in &member_files {
        ensemble_args.extend(["--model".to_owned(), s(member)]);
    }
    ensemble_args.extend(["--tta".to_owned(), "flip".to_owned()]);
    let methods: [(&str, Vec<String>); 4] = [
        (
            "fp32",
            vec!["--model".into(), s(&model_dir.join("model.onnx"))],
        ),
        ("ensemble-flip", ensemble_args),
        (
            "int8",
            vec!["--model".into(), s(&model_dir.join("model.int8.onnx"))],
        ),
        ("threshold", vec!["--method".into(), "threshold".into()]),
    ];
    for (name, method_args) in &methods {
        let pred = work.join(format!("pred-{name}"));
        if pred.exists() {
            fs::remove_dir_all(&pred)
                .with_context(|| format!("could not remove {}", pred.display()))?;
        }
        let timer = Instant::now();
        for case in &val_cases {
            let mut args = vec![
                "segment".to_owned(),
                s(&data.join(case)),
                "--out".into(),
                s(&pred.join(case)),
            ];
            args.extend(method_args.iter().cloned());
            process::run(root, &edge, &args)?;
        }
        println!(
            "default-model: {name}: {} held-out cases segmented in {:.1} s",
            val_cases.len(),
            timer.elapsed().as_secs_f64()
        );
        let report = work.join(format!("eval-{name}"));
        // Run inside the work folder with relative paths, so the shipped per-case CSVs name
        // `data/case_N/…` and `pred-fp32/case_N/…`, not this machine's folders.
        process::run(
            &work,
            &train,
            &[
                "evaluate",
                "--pred",
                &format!("pred-{name}"),
                "--truth",
                "data",
                "--run",
                "run",
                "--out",
                &format!("eval-{name}"),
            ],
        )?;
        for (from, to) in [
            ("evaluation_summary.md", format!("{name}.md")),
            ("evaluation_summary.json", format!("{name}.json")),
            ("evaluation_cases.csv", format!("{name}_cases.csv")),
        ] {
            fs::copy(report.join(from), eval_dir.join(&to)).with_context(|| {
                format!("could not copy {} to {}", report.join(from).display(), to)
            })?;
        }
    }
    crate::model_eval::evaluate(
        root,
        &train_bin,
        &edge_bin,
        &model_dir.join("model.onnx"),
        &model_dir.join("model.int8.onnx"),
        &crate::model_eval::Variants {
            tta: true,
            members: member_files,
            sets: Vec::new(),
        },
        &work.join("families"),
        &eval_dir.join("families"),
    )?;
    println!(
        "default-model: {} rewritten in {:.0} s; update the figures in {MODEL_DIR}/MODEL_CARD.md from {}",
        model_dir.display(),
        started.elapsed().as_secs_f64(),
        eval_dir.display()
    );
    Ok(())
}

/// `--members-only`: trains the ensemble members of [`MEMBER_SEEDS`] (the dataset is made
/// if the work folder lacks it; finished member runs are reused), exports them into
/// the work folder's [`MEMBER_DIR`] and judges the shipped model, with flip TTA and as an ensemble with the
/// members, on the phantom families. The shipped model itself is left as it is.
fn members(root: &Path, work: &Path) -> Result<()> {
    let work = std::path::absolute(work)
        .with_context(|| format!("could not resolve {}", work.display()))?;
    let started = Instant::now();
    let (train_bin, edge_bin) = crate::model_eval::build_tools(root)?;
    let data = work.join("data");
    if !data.join("phantom_truth.json").is_file() {
        generate_data(root, &train_bin, &data)?;
    }
    let member_files = train_members(root, &train_bin, &data, &work, true)?;
    let model_dir = root.join(MODEL_DIR);
    crate::model_eval::evaluate(
        root,
        &train_bin,
        &edge_bin,
        &model_dir.join("model.onnx"),
        &model_dir.join("model.int8.onnx"),
        &crate::model_eval::Variants {
            tta: true,
            members: member_files,
            sets: Vec::new(),
        },
        &work.join("families"),
        &model_dir.join("evaluation").join("families"),
    )?;
    println!(
        "default-model --members-only: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The phantom dataset of the shipped model into `data`.
fn generate_data(root: &Path, train: &Path, data: &Path) -> Result<()> {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    process::run(
        root,
        &s(train),
        &[
            "phantom",
            "--out",
            &s(data),
            "--cases",
            PHANTOM_CASES,
            "--seed",
            PHANTOM_SEED,
            "--family",
            PHANTOM_FAMILY,
            "--template-dir",
            &s(&root.join(crate::templates::TEMPLATE_DIR)),
        ],
    )
}

/// Trains one member per seed of [`MEMBER_SEEDS`] on `data` into `work/run-seed-S` (reusing
/// a finished run when `reuse` is set), exports each fp32 model to
/// `work/MEMBER_DIR/seed-S.onnx` and writes `work/MEMBER_DIR/SHA256SUMS`; returns the files.
fn train_members(
    root: &Path,
    train: &Path,
    data: &Path,
    work: &Path,
    reuse: bool,
) -> Result<Vec<PathBuf>> {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let member_dir = work.join(MEMBER_DIR);
    fs::create_dir_all(&member_dir)
        .with_context(|| format!("could not create {}", member_dir.display()))?;
    let mut files = Vec::new();
    let mut sums = String::new();
    for seed in MEMBER_SEEDS {
        let run_dir = work.join(format!("run-seed-{seed}"));
        if !(reuse && is_finished(&run_dir)) {
            if run_dir.exists() {
                fs::remove_dir_all(&run_dir)
                    .with_context(|| format!("could not remove {}", run_dir.display()))?;
            }
            let timer = Instant::now();
            let mut args = vec![
                "train".to_owned(),
                "--data".into(),
                s(data),
                "--patients".into(),
                s(&data.join("patients.csv")),
                "--out".into(),
                s(&run_dir),
            ];
            args.extend(member_train_args(seed));
            process::run(root, &s(train), &args)?;
            println!(
                "default-model: member seed {seed} trained in {:.0} s",
                timer.elapsed().as_secs_f64()
            );
        }
        let export_dir = work.join(format!("export-seed-{seed}"));
        process::run(
            root,
            &s(train),
            &[
                "export",
                "--run",
                &s(&run_dir),
                "--checkpoint",
                "last",
                "--out",
                &s(&export_dir),
                "--version",
                &format!("{MODEL_VERSION}+seed.{seed}"),
            ],
        )?;
        let file = member_dir.join(format!("seed-{seed}.onnx"));
        let bytes = fs::read(export_dir.join("model.onnx"))
            .with_context(|| format!("could not read the export in {}", export_dir.display()))?;
        strokeseg_io::atomic::write_atomically(&file, &bytes)
            .with_context(|| format!("could not write {}", file.display()))?;
        sums.push_str(&format!(
            "{}  seed-{seed}.onnx\n",
            strokeseg_io::sha256_hex(&bytes)
        ));
        files.push(file);
    }
    let sums_path = member_dir.join("SHA256SUMS");
    strokeseg_io::atomic::write_atomically(&sums_path, sums.as_bytes())
        .with_context(|| format!("could not write {}", sums_path.display()))?;
    Ok(files)
}

/// [`TRAIN_ARGS`] with the training seed replaced by `seed`.
fn member_train_args(seed: &str) -> Vec<String> {
    let mut args: Vec<String> = TRAIN_ARGS.iter().map(|a| (*a).to_owned()).collect();
    if let Some(value) = args
        .iter()
        .position(|a| a == "--seed")
        .and_then(|i| args.get_mut(i + 1))
    {
        *value = seed.to_owned();
    }
    args
}

/// The held-out cases recorded in the run's `run.json` (`split.val_cases`).
fn held_out_cases(run_dir: &Path) -> Result<Vec<String>> {
    let path = run_dir.join("run.json");
    let text =
        fs::read_to_string(&path).with_context(|| format!("could not read {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let cases: Vec<String> = value["split"]["val_cases"]
        .as_array()
        .with_context(|| format!("{} has no split.val_cases", path.display()))?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    if cases.is_empty() {
        bail!("{} holds out no cases", path.display());
    }
    Ok(cases)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_train_with_the_shipped_recipe_and_only_their_own_seed() {
        let args = member_train_args("2019");
        let shipped: Vec<String> = TRAIN_ARGS.iter().map(|a| (*a).to_owned()).collect();
        assert_eq!(args.len(), shipped.len());
        let differing: Vec<(&String, &String)> =
            args.iter().zip(&shipped).filter(|(a, b)| a != b).collect();
        assert_eq!(differing, [(&"2019".to_owned(), &"2018".to_owned())]);
    }
}
