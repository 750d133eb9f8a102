//! `edge_bench`: prints the edge runtime's figures (not a test; nothing is
//! asserted): peak RSS of a whole `segment` run for a 2-slice and a 22-slice phantom study
//! (each in its own child process, `VmHWM` from `/proc/self/status`) and their ratio,
//! per-slice and per-study latency with the fp32 and int8 fixture models and the threshold
//! rule, the shipped default model embedded in the binary (`default`, when the build has one;
//! `binary`: the `strokeseg-edge segment` process itself, one study per run, as a user runs
//! it), and the size of the `strokeseg-edge` binary of the same build.
//!
//! `cargo build --release -p strokeseg-edge --bins --examples && target/release/examples/edge_bench`
//! (`--reps N` warm runs per child, default 5; `--runs N` children per configuration,
//! default 3, the largest peak RSS is reported; `--threads N` threads tract runs on, default
//! the edge's default, the available cores; `--only default,fp32` only those rows; `--keep DIR`
//! keeps the studies and models).
//!
//! Peak RSS is measured twice: with glibc's default malloc settings, and with
//! `MALLOC_MMAP_THRESHOLD_=131072` as the systemd unit sets it. By default glibc raises its
//! mmap threshold after the first large free, so per-slice buffers (tract's per-run values,
//! its convolution scratch) then come from the heap and fragment it: peak RSS gains a few
//! MiB over a long study, varying from run to run. A fixed threshold keeps every buffer of
//! 128 KiB or more in its own mapping, returned to the system when freed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use strokeseg_edge::model::SegModel;
use strokeseg_edge::report::Method;
use strokeseg_edge::segment::{SegmentOptions, segment_to_dir};
use strokeseg_edge::segmenter::Segmenter;
use strokeseg_edge::threads::{current_threads, resolve_threads, set_threads};
use strokeseg_model::fixture::{FixtureOptions, Precision, fixture_model};
use strokeseg_phantom::DatasetOptions;

/// Peak resident set size of this process, KiB (`VmHWM`).
fn peak_rss_kib() -> Result<u64> {
    strokeseg_edge::report::peak_rss_kib().context("no VmHWM in /proc/self/status")
}

/// Child: segments `case` `reps` times and prints one JSON line of figures. `method` is
/// `model` (the file `model`), `default` (the embedded model) or `threshold`.
fn child(case: &Path, method: &str, model: Option<&Path>, out: &Path, reps: usize) -> Result<()> {
    let t = Instant::now();
    let mut model = if method == "default" {
        Some(Segmenter::from(SegModel::embedded()?))
    } else {
        model
            .map(SegModel::from_path)
            .transpose()?
            .map(Segmenter::from)
    };
    let load_ms = t.elapsed().as_secs_f64() * 1000.0;
    let method = if method == "threshold" {
        Method::Threshold
    } else {
        Method::Model
    };
    let mut totals = Vec::new();
    let mut per_slice = Vec::new();
    let mut n_slices = 0;
    for _ in 0..reps.max(1) {
        let r = segment_to_dir(
            case,
            method,
            model.as_mut(),
            &SegmentOptions::default(),
            out,
            &AtomicBool::new(false),
        )?;
        totals.push(r.timings.total_ms);
        per_slice.push(r.timings.inference_per_slice_ms);
        n_slices = r.n_slices;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "{}",
        serde_json::json!({
            "peak_rss_kib": peak_rss_kib()?,
            "load_model_ms": load_ms,
            "study_ms": median(&mut totals),
            "per_slice_ms": median(&mut per_slice),
            "n_slices": n_slices,
        })
    );
    Ok(())
}

struct Figures {
    peak_rss_kib: u64,
    study_ms: f64,
    per_slice_ms: f64,
    load_model_ms: f64,
    n_slices: u64,
}

/// The malloc setting of the systemd unit (`deploy/strokeseg-edge.service`).
const MMAP_THRESHOLD_ENV: (&str, &str) = ("MALLOC_MMAP_THRESHOLD_", "131072");

fn run_child(
    case: &Path,
    method: &str,
    model: Option<&Path>,
    out: &Path,
    reps: usize,
    fixed_threshold: bool,
    threads: &str,
) -> Result<Figures> {
    if method == "binary" {
        return run_binary(case, out, fixed_threshold, threads);
    }
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    if fixed_threshold {
        cmd.env(MMAP_THRESHOLD_ENV.0, MMAP_THRESHOLD_ENV.1);
    } else {
        cmd.env_remove(MMAP_THRESHOLD_ENV.0);
    }
    cmd.args(["--child", method])
        .arg(case)
        .arg(out)
        .args(["--reps", &reps.to_string()])
        .args(["--threads", threads]);
    if let Some(m) = model {
        cmd.arg("--model").arg(m);
    }
    let o = cmd.output()?;
    if !o.status.success() {
        bail!("child failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    Ok(Figures {
        peak_rss_kib: v["peak_rss_kib"].as_u64().unwrap_or(0),
        study_ms: v["study_ms"].as_f64().unwrap_or(f64::NAN),
        per_slice_ms: v["per_slice_ms"].as_f64().unwrap_or(f64::NAN),
        load_model_ms: v["load_model_ms"].as_f64().unwrap_or(f64::NAN),
        n_slices: v["n_slices"].as_u64().unwrap_or(0),
    })
}

/// The `strokeseg-edge` binary of this build: target/<profile>/examples/edge_bench →
/// target/<profile>/strokeseg-edge.
fn edge_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("strokeseg-edge"))
        .unwrap_or_default())
}

/// `strokeseg-edge segment CASE --out OUT --json` with the embedded model, one study per
/// process as a user runs it: the figures from its report (`timings.peak_rss_kib` is the
/// process's `VmHWM`).
fn run_binary(case: &Path, out: &Path, fixed_threshold: bool, threads: &str) -> Result<Figures> {
    let mut cmd = Command::new(edge_binary()?);
    if fixed_threshold {
        cmd.env(MMAP_THRESHOLD_ENV.0, MMAP_THRESHOLD_ENV.1);
    } else {
        cmd.env_remove(MMAP_THRESHOLD_ENV.0);
    }
    let o = cmd
        .arg("segment")
        .arg(case)
        .arg("--out")
        .arg(out)
        .args(["--json", "--threads", threads])
        .output()?;
    if !o.status.success() {
        bail!(
            "strokeseg-edge segment failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let t = &v["timings"];
    Ok(Figures {
        peak_rss_kib: t["peak_rss_kib"].as_u64().unwrap_or(0),
        study_ms: t["total_ms"].as_f64().unwrap_or(f64::NAN),
        per_slice_ms: t["inference_per_slice_ms"].as_f64().unwrap_or(f64::NAN),
        load_model_ms: t["load_model_ms"].as_f64().unwrap_or(f64::NAN),
        n_slices: v["n_slices"].as_u64().unwrap_or(0),
    })
}

fn write_study(root: &Path, n_slices: usize) -> Result<PathBuf> {
    let opts = DatasetOptions {
        n_cases: 1,
        seed: 5,
        min_slices: n_slices,
        max_slices: n_slices,
        lesion_free_fraction: 0.0,
        ..DatasetOptions::default()
    };
    let case = strokeseg_phantom::generate_case(opts.seed, 0, &opts)?;
    let dir = root.join(format!("study_{n_slices}_slices"));
    strokeseg_phantom::write_case(&dir, &case, opts.first_file_id, false, false)?;
    Ok(dir)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let reps: usize = flag("--reps")
        .map_or(Ok(5), |v| v.parse())
        .context("--reps")?;
    let threads: Option<usize> = flag("--threads")
        .map(|v| v.parse())
        .transpose()
        .context("--threads")?;
    set_threads(resolve_threads(threads, Path::new("--threads"))?);
    if args.first().map(String::as_str) == Some("--child") {
        let (Some(method), Some(case), Some(out)) = (args.get(1), args.get(2), args.get(3)) else {
            bail!("--child METHOD CASE OUT [--reps N] [--model FILE]");
        };
        let model = flag("--model").map(PathBuf::from);
        return child(
            Path::new(case),
            method,
            model.as_deref(),
            Path::new(out),
            reps,
        );
    }
    let keep = flag("--keep").map(PathBuf::from);
    let root = keep.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("strokeseg-edge-bench-{}", std::process::id()))
    });
    std::fs::create_dir_all(&root)?;
    let small = write_study(&root, 2)?;
    let large = write_study(&root, 22)?;
    let mut models = Vec::new();
    for (name, precision) in [("fp32", Precision::Fp32), ("int8", Precision::Int8)] {
        let path = root.join(format!("fixture.{name}.onnx"));
        std::fs::write(
            &path,
            fixture_model(&FixtureOptions {
                precision,
                ..FixtureOptions::default()
            }),
        )?;
        models.push((name, Some(path)));
    }
    models.push(("threshold", None));
    let with_default = strokeseg_edge::model::embedded_model().is_some();

    let exe = std::env::current_exe()?;
    // target/<profile>/examples/edge_bench → target/<profile>/strokeseg-edge
    let edge = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("strokeseg-edge"))
        .unwrap_or_default();
    let size = std::fs::metadata(&edge).map(|m| m.len()).ok();
    let threads_arg = current_threads().to_string();
    let runs: usize = flag("--runs")
        .map_or(Ok(3), |v| v.parse())
        .context("--runs")?;
    println!(
        "strokeseg-edge benchmark: phantom studies of 256×256 slices; latency = median of \
         {reps} warm runs in one process; peak RSS = largest of {runs} processes; tract on \
         {threads_arg} thread(s)"
    );
    println!(
        "{:<10} {:>6} {:>16} {:>18} {:>10} {:>9} {:>8}",
        "method",
        "slices",
        "RSS MiB (glibc)",
        "RSS MiB (fixed mt)",
        "study ms",
        "slice ms",
        "load ms"
    );
    let mut rows: Vec<(&str, Option<PathBuf>, &str)> = models
        .iter()
        .map(|(name, model)| {
            let method = if model.is_some() {
                "model"
            } else {
                "threshold"
            };
            (*name, model.clone(), method)
        })
        .collect();
    if with_default {
        rows.push(("default", None, "default"));
        // The shipped binary end to end (its startup malloc setting included).
        rows.push(("binary", None, "binary"));
    }
    if let Some(only) = flag("--only") {
        rows.retain(|(name, _, _)| only.split(',').any(|o| o == *name));
    }
    for (name, model, method) in &rows {
        let mut rss = Vec::new();
        for (n, case) in [(2, &small), (22, &large)] {
            let out = root.join(format!("out_{name}_{n}"));
            let mut peak = [0u64; 2];
            let mut first = None;
            for (k, fixed) in [false, true].into_iter().enumerate() {
                for _ in 0..runs.max(1) {
                    let f = run_child(
                        case,
                        method,
                        model.as_deref(),
                        &out,
                        reps,
                        fixed,
                        &threads_arg,
                    )?;
                    peak[k] = peak[k].max(f.peak_rss_kib);
                    if fixed && first.is_none() {
                        first = Some(f);
                    }
                }
            }
            let f = first.context("no run")?;
            println!(
                "{:<10} {:>6} {:>16.1} {:>18.1} {:>10.1} {:>9.2} {:>8.1}",
                name,
                f.n_slices,
                peak[0] as f64 / 1024.0,
                peak[1] as f64 / 1024.0,
                f.study_ms,
                f.per_slice_ms,
                f.load_model_ms
            );
            rss.push(peak);
        }
        if let [a, b] = rss[..] {
            println!(
                "{:<10} peak RSS 22 / 2 slices: {:.3} (glibc default), {:.3} (fixed mmap threshold); goal ≤ 1.05",
                name,
                b[0] as f64 / a[0].max(1) as f64,
                b[1] as f64 / a[1].max(1) as f64
            );
        }
    }
    match size {
        Some(s) => println!(
            "binary     {} = {:.1} MiB ({} bytes)",
            edge.display(),
            s as f64 / (1024.0 * 1024.0),
            s
        ),
        None => println!("binary     {} not found (build --bins)", edge.display()),
    }
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&root);
    }
    Ok(())
}
