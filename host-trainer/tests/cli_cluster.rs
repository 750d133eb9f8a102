//! `strokeseg-train cv` split into tasks, as job arrays run it: one fold or task per process
//! into a shared folder, the merge (equal to the sequential cross-validation byte for byte,
//! naming missing, unfinished and corrupt folds), sweeps, and what emission refuses. The real
//! scheduler runs in `cargo xtask ci slurm`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::{ok, s, strokeseg_train, text};

/// A 2-fold cross-validation of one short epoch on a tiny network, one thread.
const FLAGS: &[&str] = &[
    "--folds",
    "2",
    "--input-size",
    "64",
    "--target-spacing-mm",
    "4",
    "--base-width",
    "4",
    "--depth",
    "2",
    "--epochs",
    "1",
    "--batch-size",
    "4",
    "--seed",
    "11",
    "--device",
    "cpu",
    "--threads",
    "1",
    "--quiet",
];

fn cv(data: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "cv".to_owned(),
        "--data".into(),
        s(data),
        "--out".into(),
        s(out),
    ];
    args.extend(FLAGS.iter().chain(extra).map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    strokeseg_train(&args)
}

fn failed_saying(out: &std::process::Output, expected: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    for e in expected {
        assert!(stderr.contains(e), "no {e:?} in: {stderr}");
    }
}

#[test]
fn folds_run_one_per_process_and_merge_to_the_sequential_summary() {
    let data = common::dataset(8, 21);
    let dir = tempfile::tempdir().unwrap();
    let sequential = dir.path().join("sequential");
    ok(&cv(data, &sequential, &[]));

    let split = dir.path().join("split");
    ok(&cv(data, &split, &["--fold", "1"]));
    // Only fold 1 is done: the merge names fold 0 and writes nothing.
    let merge = |run: &Path| strokeseg_train(&["cv", "--merge", &s(run)]);
    failed_saying(&merge(&split), &["fold 0 is missing"]);
    assert!(!split.join("cv_summary.json").exists());
    // Fold 0 by its task index, resumed from the recorded settings.
    let resumed = strokeseg_train(&[
        "cv",
        "--resume",
        "--out",
        &s(&split),
        "--task",
        "0",
        "--threads",
        "1",
        "--quiet",
    ]);
    ok(&resumed);
    ok(&merge(&split));
    let read = |run: &Path| std::fs::read(run.join("cv_summary.json")).unwrap();
    assert_eq!(
        read(&split),
        read(&sequential),
        "merged summary differs from the sequential one"
    );

    // A finished fold is found finished, not trained again.
    let steps = std::fs::read(split.join("fold_1").join("steps.csv")).unwrap();
    ok(&cv(data, &split, &["--fold", "1"]));
    assert_eq!(
        std::fs::read(split.join("fold_1").join("steps.csv")).unwrap(),
        steps
    );

    // Other settings into the same folder are refused, naming what differs.
    let other = cv(data, &split, &["--fold", "0", "--lr", "0.5"]);
    failed_saying(&other, &["other settings", "train"]);

    // Corrupt and unfinished folds are named; nothing is written.
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    for entry in ["cv.json", "fold_0", "fold_1"] {
        copy(&split.join(entry), &broken.join(entry));
    }
    std::fs::write(
        broken.join("fold_0").join("evaluation.json"),
        "{\"epochs\": ",
    )
    .unwrap();
    let state = broken
        .join("fold_1")
        .join("checkpoints")
        .join("last.state.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    json["finished"] = serde_json::Value::Bool(false);
    json["next_epoch"] = 0.into();
    std::fs::write(&state, json.to_string()).unwrap();
    failed_saying(
        &merge(&broken),
        &[
            "fold 0 is corrupt",
            "evaluation.json",
            "fold 1 is unfinished (0 of 1 epochs)",
        ],
    );
    assert!(!broken.join("cv_summary.json").exists());
}

fn copy(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap();
    }
}

#[test]
fn a_sweep_runs_task_by_task_and_merges_into_a_table() {
    let data = common::dataset(8, 21);
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("sweep");
    let emitted = cv(
        data,
        &run,
        &["--loss", "hybrid,ce", "--emit", "slurm", "--gres", "none"],
    );
    ok(&emitted);
    let script = text(&emitted.stdout);
    assert!(script.contains("#SBATCH --array=0-3\n"), "{script}");
    assert!(
        script.contains("#   task 3: setting 1 (loss=ce), fold 1\n"),
        "{script}"
    );
    assert!(run.join("sweep.json").is_file() && run.join("slurm").is_dir());
    for task in ["0", "1", "2", "3"] {
        ok(&strokeseg_train(&[
            "cv",
            "--resume",
            "--out",
            &s(&run),
            "--task",
            task,
            "--threads",
            "1",
            "--quiet",
        ]));
    }
    let gone = strokeseg_train(&["cv", "--resume", "--out", &s(&run), "--task", "4"]);
    failed_saying(&gone, &["task 4 does not exist", "4 tasks"]);
    ok(&strokeseg_train(&["cv", "--merge", &s(&run)]));
    let table = std::fs::read_to_string(run.join("sweep_summary.md")).unwrap();
    assert!(table.contains("| 0 | loss=hybrid |"), "{table}");
    assert!(table.contains("| 1 | loss=ce |"), "{table}");
    for setting in ["setting_0", "setting_1"] {
        assert!(run.join(setting).join("cv_summary.json").is_file());
    }
    let losses: Vec<String> = ["setting_0", "setting_1"]
        .iter()
        .map(|d| {
            let text = std::fs::read_to_string(run.join(d).join("cv_summary.json")).unwrap();
            let json: serde_json::Value = serde_json::from_str(&text).unwrap();
            json["loss"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(losses, ["hybrid", "ce"]);
}

#[test]
fn impossible_combinations_are_refused() {
    let data = common::dataset(8, 21);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    // --emit with --fold: a usage error.
    let both = cv(data, &out, &["--emit", "slurm", "--fold", "0"]);
    assert_eq!(both.status.code(), Some(2), "{}", text(&both.stderr));
    failed_saying(
        &cv(data, &out, &["--fold", "2"]),
        &["--fold 2 does not exist"],
    );
    failed_saying(
        &cv(data, &out, &["--loss", "hybrid,ce", "--fold", "0"]),
        &["--fold 0", "sweep of 2 settings", "--task"],
    );
    failed_saying(
        &cv(data, &out, &["--emit", "slurm", "--job-name", "a b"]),
        &["--job-name"],
    );
    failed_saying(
        &cv(data, &out, &["--emit", "k8s", "--image", "x"]),
        &["--pvc"],
    );
    assert!(
        !out.join("cv.json").exists(),
        "a refused command wrote settings"
    );
    let train = strokeseg_train(&[
        "train",
        "--data",
        &s(data),
        "--out",
        &s(&out),
        "--loss",
        "hybrid,ce",
    ]);
    failed_saying(&train, &["--loss hybrid,ce", "only with cv"]);
}
