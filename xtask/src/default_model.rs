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
/// The shipped model's folder, relative to the repo root.
const MODEL_DIR: &str = "models/default";
/// Model version written into the metadata.
const MODEL_VERSION: &str = "2.0.0";

/// `cargo xtask default-model [--work DIR] [--reuse-run]`.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut work = root.join("target").join("default-model");
    let mut reuse_run = false;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--work" => {
                work = PathBuf::from(rest.next().context("--work needs a folder")?);
            }
            "--reuse-run" => reuse_run = true,
            other => bail!("default-model: unknown argument `{other}` (--work DIR, --reuse-run)"),
        }
    }
    // Every step below runs with the repo root or the work folder as its working directory.
    let work = std::path::absolute(&work)
        .with_context(|| format!("could not resolve {}", work.display()))?;
    let started = Instant::now();
    let (train_bin, _) = crate::model_eval::build_tools(root)?;
    let train = train_bin.to_string_lossy();
    let template_dir = root.join(crate::templates::TEMPLATE_DIR);
    let data = work.join("data");
    let run_dir = work.join("run");
    let s = |p: &Path| p.to_string_lossy().into_owned();

    let finished = run_dir
        .join("checkpoints")
        .join("last.safetensors")
        .is_file()
        && run_dir.join("evaluation.json").is_file();
    if reuse_run && finished {
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
        process::run(
            root,
            &train,
            &[
                "phantom",
                "--out",
                &s(&data),
                "--cases",
                PHANTOM_CASES,
                "--seed",
                PHANTOM_SEED,
                "--family",
                PHANTOM_FAMILY,
                "--template-dir",
                &s(&template_dir),
            ],
        )?;
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
    let methods: [(&str, Vec<String>); 3] = [
        (
            "fp32",
            vec!["--model".into(), s(&model_dir.join("model.onnx"))],
        ),
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
        &crate::model_eval::Variants::default(),
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
