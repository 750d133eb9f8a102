//! `strokeseg-train train` and `cv` as a user runs them, on a tiny phantom set: the run folder
//! contract the exporter reads, refusal to overwrite, stop and `--resume`, and the
//! cross-validation summary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{ok, s, strokeseg_train as train, text};
use strokeseg_trainer::checkpoint::{Which, load_model};
use strokeseg_trainer::export::{
    Checkpoint, Int8Calibration, RangeRule, RunExportOptions, export_run,
};
use strokeseg_trainer::run::{RunConfig, RunEvaluation, RunPaths};

/// The flags that make a run tiny.
const TINY: &[&str] = &[
    "--device",
    "cpu",
    "--quiet",
    "--batch-size",
    "4",
    "--base-width",
    "4",
    "--depth",
    "2",
    "--input-size",
    "64",
    "--target-spacing-mm",
    "4",
    "--warmup-epochs",
    "1",
];

#[test]
fn train_writes_the_run_folder_contract() {
    let data = common::dataset(6, 41);
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let mut args = vec![
        "train",
        "--data",
        &*Box::leak(s(data).into_boxed_str()),
        "--out",
    ];
    let run_arg = s(&run_dir);
    args.push(&run_arg);
    args.extend([
        "--fold", "1", "--folds", "2", "--epochs", "2", "--loss", "hybrid", "--seed", "9",
    ]);
    args.extend(TINY);
    let out = train(&args);
    ok(&out);
    assert!(
        text(&out.stdout).contains("held-out mean case Dice"),
        "{}",
        text(&out.stdout)
    );

    let paths = RunPaths::new(&run_dir);
    for file in [
        paths.run_json(),
        paths.best_checkpoint(),
        paths.last_checkpoint(),
        paths.last_optimizer(),
        paths.last_state(),
        paths.metrics_csv(),
        paths.metrics_json(),
        paths.steps_csv(),
        paths.curves_png(),
        paths.evaluation(),
    ] {
        assert!(file.is_file(), "{} missing", file.display());
    }
    // run.json: the keys the exporter reads, and RunConfig::load.
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(paths.run_json()).unwrap()).unwrap();
    for key in [
        "unet",
        "preprocess",
        "postprocess",
        "training",
        "data_dir",
        "seed",
        "git_revision",
    ] {
        assert!(raw.get(key).is_some(), "run.json lacks {key}");
    }
    let run = RunConfig::load(&run_dir).unwrap();
    assert_eq!(run.seed, 9);
    assert_eq!(run.training.epochs, 2);
    assert_eq!(run.training.loss, "hybrid");
    assert_eq!((run.training.folds, run.training.fold), (2, Some(1)));
    assert!(run.training.val_dice.is_some());
    assert_eq!(run.preprocess.input_height, 64);
    assert_eq!(run.unet.base_width, 4);
    assert!(!run.split.val_cases.is_empty() && !run.split.train_cases.is_empty());
    assert!(
        run.split
            .val_cases
            .iter()
            .all(|c| !run.split.train_cases.contains(c))
    );
    // metrics.csv: header + one line per epoch with held-out Dice.
    let csv = std::fs::read_to_string(paths.metrics_csv()).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[0].starts_with("epoch,global_step,train_loss,lr"));
    assert!(lines[2].starts_with("2,"));
    let png = std::fs::read(paths.curves_png()).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let evaluation = RunEvaluation::load(&run_dir).unwrap();
    assert_eq!(
        evaluation.last.as_ref().unwrap().n_cases(),
        run.split.val_cases.len()
    );
    // Both checkpoints load into the configured network.
    for which in [Which::Best, Which::Last] {
        let (config, _, _) = load_model(&run_dir, which, tch::Device::Cpu).unwrap();
        assert_eq!(config, run);
    }
    // The exported metadata carries the held-out Dice of the checkpoint exported (int8
    // calibrated on the run's own data, its training cases only).
    for (checkpoint, dice) in [
        (
            Checkpoint::Best,
            evaluation.best.as_ref().map(|b| b.mean_dice()),
        ),
        (
            Checkpoint::Last,
            evaluation.last.as_ref().map(|l| l.mean_dice()),
        ),
    ] {
        let exported = export_run(&RunExportOptions {
            run_dir: run_dir.clone(),
            checkpoint,
            out_dir: tmp.path().join(format!("model-{checkpoint}")),
            name: None,
            version: "0.0.1".into(),
            int8: Some(Int8Calibration {
                data_dir: None,
                n_slices: 4,
                range_rule: RangeRule::default(),
            }),
        })
        .unwrap();
        assert!(dice.is_some());
        assert_eq!(
            exported.fp32.metadata.training.val_dice, dice,
            "{checkpoint}"
        );
        assert_eq!(exported.calibration_slices, 4);
    }
    // A second train into the same folder is refused; --resume of a finished run is a no-op;
    // --resume with a changed flag is refused.
    let again = train(&args);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already holds a run"),
        "{}",
        text(&again.stderr)
    );
    let resume = train(&[
        "train", "--out", &run_arg, "--resume", "--device", "cpu", "--quiet",
    ]);
    ok(&resume);
    let changed = train(&["train", "--out", &run_arg, "--resume", "--epochs", "5"]);
    assert!(!changed.status.success());
    assert!(
        text(&changed.stderr).contains("leave out --epochs"),
        "{}",
        text(&changed.stderr)
    );
}

#[test]
fn a_stopped_run_resumes_from_the_command_line() {
    let data = s(common::dataset(6, 41));
    let tmp = tempfile::tempdir().unwrap();
    let run_arg = s(&tmp.path().join("run"));
    let mut args = vec!["train", "--data", &data, "--out", &run_arg, "--epochs", "2"];
    args.extend(TINY);
    args.extend(["--stop-after-steps", "2"]);
    let stopped = train(&args);
    assert_eq!(
        stopped.status.code(),
        Some(130),
        "stderr: {}",
        text(&stopped.stderr)
    );
    assert!(text(&stopped.stdout).contains("continue with --resume"));
    let resumed = train(&[
        "train", "--out", &run_arg, "--resume", "--device", "cpu", "--quiet",
    ]);
    ok(&resumed);
    assert!(
        text(&resumed.stdout).contains("2 epochs on every case"),
        "{}",
        text(&resumed.stdout)
    );
}

#[test]
fn cv_runs_every_fold_and_writes_the_summary() {
    let data = s(common::dataset(6, 41));
    let tmp = tempfile::tempdir().unwrap();
    let out_arg = s(&tmp.path().join("cv"));
    let mut args = vec![
        "cv", "--data", &data, "--out", &out_arg, "--folds", "2", "--epochs", "1", "--loss", "ce",
    ];
    args.extend(TINY);
    let out = train(&args);
    ok(&out);
    let root = tmp.path().join("cv");
    for fold in 0..2 {
        let fold_dir = root.join(format!("fold_{fold}"));
        let run = RunConfig::load(&fold_dir).unwrap();
        assert_eq!(run.split.fold, Some(fold));
        assert!(RunPaths::new(&fold_dir).best_checkpoint().is_file());
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("cv_summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["n_folds"], 2);
    assert_eq!(summary["folds"].as_array().unwrap().len(), 2);
    assert!(summary["dice"]["mean"].is_f64());
    assert_eq!(summary["pooled"]["n_cases"], 6);
    let md = std::fs::read_to_string(root.join("cv_summary.md")).unwrap();
    assert!(md.contains("| fold |") && md.contains("mean ± sd"), "{md}");
    assert!(md.contains("## Surface distances"), "{md}");
    assert!(md.contains("## All held-out cases pooled"), "{md}");

    // Surface distances: per case in each fold's evaluation.json, consistent with its
    // confusion counts; per fold and pooled in the summary (means over the finite cases, the
    // infinite ones counted).
    let mut n_infinite = 0;
    let mut finite_hd = Vec::new();
    for fold in 0..2usize {
        let evaluation = RunEvaluation::load(&root.join(format!("fold_{fold}"))).unwrap();
        let last = evaluation.last.unwrap();
        let mut fold_infinite = 0;
        for case in &last.cases {
            let surface = case.surface.unwrap();
            let pred_empty = case.counts.tp + case.counts.fp == 0;
            let truth_empty = case.counts.tp + case.counts.fn_ == 0;
            match (
                surface.hausdorff_mm,
                surface.hausdorff95_mm,
                surface.assd_mm,
            ) {
                (Some(hd), Some(hd95), Some(assd)) => {
                    assert!(!(pred_empty ^ truth_empty), "{}: {surface:?}", case.case);
                    assert!(hd.is_finite() && hd >= 0.0, "{}: {surface:?}", case.case);
                    assert!(hd95 <= hd && assd <= hd, "{}: {surface:?}", case.case);
                    finite_hd.push(hd);
                }
                (None, None, None) => {
                    assert!(pred_empty ^ truth_empty, "{}: {surface:?}", case.case);
                    fold_infinite += 1;
                }
                _ => panic!("{}: partly infinite {surface:?}", case.case),
            }
        }
        let shared = last.summary.unwrap();
        assert_eq!(shared.n_hausdorff_infinite, fold_infinite);
        let f = &summary["folds"][fold];
        assert_eq!(f["n_hausdorff_infinite"], fold_infinite);
        match (f["hausdorff_mm"].as_f64(), f["hausdorff95_mm"].as_f64()) {
            (Some(hd), Some(hd95)) => assert!(hd95 <= hd && hd >= 0.0, "{f}"),
            (None, None) => assert_eq!(fold_infinite, last.n_cases(), "{f}"),
            _ => panic!("fold {fold}: {f}"),
        }
        n_infinite += fold_infinite;
    }
    let pooled = &summary["pooled"];
    assert_eq!(pooled["n_hausdorff_infinite"], n_infinite);
    assert_eq!(pooled["summary"]["n_cases"], 6);
    assert_eq!(pooled["summary"]["n_hausdorff_infinite"], n_infinite);
    if finite_hd.is_empty() {
        assert!(pooled["hausdorff_mm"].is_null(), "{pooled}");
    } else {
        let mean = finite_hd.iter().sum::<f64>() / finite_hd.len() as f64;
        let got = pooled["hausdorff_mm"].as_f64().unwrap();
        assert!(
            (got - mean).abs() <= 1e-9 * mean.max(1.0),
            "{got} vs {mean}"
        );
        assert_eq!(pooled["summary"]["hausdorff_mm"]["n"], finite_hd.len());
    }

    // `evaluate --run` scores exactly the cases a fold held out (the truth defaulting to the
    // run's data_dir); the dataset is its own perfect prediction.
    let fold_0 = root.join("fold_0");
    let held_out = RunConfig::load(&fold_0).unwrap().split.val_cases;
    let reports = tmp.path().join("eval_fold_0");
    let evaluated = train(&[
        "evaluate",
        "--pred",
        &data,
        "--run",
        &s(&fold_0),
        "--out",
        &s(&reports),
    ]);
    ok(&evaluated);
    let csv = std::fs::read_to_string(reports.join("evaluation_cases.csv")).unwrap();
    let mut names: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    names.sort_unstable();
    let mut expected: Vec<&str> = held_out.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(names, expected);
    let eval_summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(reports.join("evaluation_summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(eval_summary["dice"]["min"], 1.0);
    assert_eq!(eval_summary["hausdorff_mm"]["max"], 0.0);
    // The cross-validation folder itself is not a run: the error says which to pass.
    let refused = train(&[
        "evaluate",
        "--pred",
        &data,
        "--run",
        &out_arg,
        "--out",
        &s(&reports),
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("pass one of its fold_K folders"),
        "{}",
        text(&refused.stderr)
    );
    // --resume of a finished cross-validation re-reads the folds and rewrites the summary.
    let again = train(&[
        "cv", "--out", &out_arg, "--resume", "--device", "cpu", "--quiet",
    ]);
    ok(&again);
}
