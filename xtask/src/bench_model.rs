//! `cargo xtask bench-model`: tract (the release `strokeseg-edge bench`) and onnxruntime
//! (`tests/scripts/bench_ort.py` in CI's onnx venv) on the same ONNX files, the same prepared
//! phantom slice and the same thread counts, one after the other in this run; prints both
//! per-slice medians and the tract / ORT ratio per model and thread count.
//!
//! ```text
//! cargo xtask bench-model [--model FILE]... [--threads N]... [--reps N]
//! ```
//! Defaults: `models/default/model.onnx` and `model.int8.onnx`, 1 and 2 threads, 50 runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::process;

/// One row of the table.
struct Row {
    model: String,
    threads: usize,
    tract_p50_ms: f64,
    tract_p90_ms: f64,
    ort_p50_ms: Option<f64>,
    gflop: f64,
    kernels: String,
}

/// Runs `program args` in `root`, echoing the command, and parses its stdout as JSON.
fn json_of(root: &Path, program: &Path, args: &[String]) -> Result<serde_json::Value> {
    let line = format!("{} {}", program.display(), args.join(" "));
    println!("$ {line}");
    let out = Command::new(program)
        .args(args)
        .current_dir(root)
        .output()
        .with_context(|| format!("could not start `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("`{line}` printed no JSON"))
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut models = Vec::new();
    let mut threads = Vec::new();
    let mut reps = 50usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--model" => models.push(PathBuf::from(value()?)),
            "--threads" => threads.push(value()?.parse::<usize>().context("--threads")?),
            "--reps" => reps = value()?.parse().context("--reps")?,
            other => bail!(
                "bench-model: unknown argument `{other}` (--model FILE, --threads N, --reps N)"
            ),
        }
    }
    if models.is_empty() {
        models = vec![
            PathBuf::from("models/default/model.onnx"),
            PathBuf::from("models/default/model.int8.onnx"),
        ];
    }
    if threads.is_empty() {
        threads = vec![1, 2];
    }
    process::run(
        root,
        "cargo",
        &["build", "--release", "-p", "strokeseg-edge", "--bins"],
    )?;
    let edge = crate::cross::target_dir(root)
        .join("release")
        .join("strokeseg-edge");
    let python = crate::ci::onnx_python(root);
    let scratch = crate::cross::target_dir(root)
        .join("tmp")
        .join("bench-model");
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let input = scratch.join("input.f32");
    let reps_s = reps.to_string();
    let mut rows = Vec::new();
    for model in &models {
        for &n in &threads {
            let n_s = n.to_string();
            let mut edge_args: Vec<String> =
                ["bench", "--json", "--reps", &reps_s, "--threads", &n_s]
                    .map(String::from)
                    .to_vec();
            edge_args.extend(["--model".into(), model.to_string_lossy().into_owned()]);
            edge_args.extend(["--dump-input".into(), input.to_string_lossy().into_owned()]);
            let tract = json_of(root, &edge, &edge_args)?;
            let ort_p50_ms = match &python {
                Some(py) => {
                    let ort_args: Vec<String> = vec![
                        "tests/scripts/bench_ort.py".into(),
                        model.to_string_lossy().into_owned(),
                        "--json".into(),
                        "--reps".into(),
                        reps_s.clone(),
                        "--threads".into(),
                        n_s.clone(),
                        "--input".into(),
                        input.to_string_lossy().into_owned(),
                    ];
                    let ort = json_of(root, py, &ort_args)?;
                    ort["latency_ms"]["p50"].as_f64()
                }
                None => None,
            };
            let kernels = tract["plan"]["kernels"]
                .as_object()
                .map(|k| k.keys().cloned().collect::<Vec<_>>().join(" "))
                .unwrap_or_default();
            rows.push(Row {
                model: model.display().to_string(),
                threads: n,
                tract_p50_ms: tract["latency_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
                tract_p90_ms: tract["latency_ms"]["p90"].as_f64().unwrap_or(f64::NAN),
                ort_p50_ms,
                gflop: tract["flops_per_slice"].as_f64().unwrap_or(f64::NAN) / 1e9,
                kernels,
            });
        }
    }
    println!("\nper-slice latency, median of {reps} runs on one prepared phantom slice (ms)");
    println!(
        "{:<34} {:>7} {:>10} {:>10} {:>9} {:>10} {:>8}  tract kernels",
        "model", "threads", "tract p50", "tract p90", "ORT p50", "tract/ORT", "GFLOP/s"
    );
    for r in &rows {
        let (ort, ratio) = match r.ort_p50_ms {
            Some(o) => (format!("{o:.2}"), format!("{:.2}", r.tract_p50_ms / o)),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:<34} {:>7} {:>10.2} {:>10.2} {:>9} {:>10} {:>8.1}  {}",
            r.model,
            r.threads,
            r.tract_p50_ms,
            r.tract_p90_ms,
            ort,
            ratio,
            r.gflop / (r.tract_p50_ms / 1000.0),
            r.kernels
        );
    }
    for model in &models {
        let name = model.display().to_string();
        let p50 = |n: usize| {
            rows.iter()
                .find(|r| r.model == name && r.threads == n)
                .map(|r| r.tract_p50_ms)
        };
        if let (Some(one), Some(two)) = (p50(1), p50(2)) {
            println!("{name}: tract 2 threads {:.2}× faster than 1", one / two);
        }
    }
    if python.is_none() {
        println!("(no onnxruntime: the onnx venv could not be made, ORT columns empty)");
    }
    Ok(())
}
