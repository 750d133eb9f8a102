//! `cargo xtask evaluate-model`: how a model does on phantom families, above all on the one it
//! was not trained on, beside the threshold rule, and how far its int8 twin agrees with it.
//!
//! For each set in [`SETS`] (generated once into the work folder by `strokeseg-train
//! phantom --family …`), every case is segmented by the edge runtime with the fp32 model, the
//! int8 model and the threshold rule, scored by `strokeseg-train evaluate`, and summarised:
//! mean Dice, Dice over the lesion cases, false positives on lesion-free cases, the Pearson
//! correlation of predicted and true volume, and the int8-vs-fp32 mask Dice (pooled over
//! the set's voxels, and the mean over cases where either mask is non-empty).
//!
//! These are phantom figures: they say how a model generalises across *our* generator
//! families, not how it does on patients.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use strokeseg_io::NiftiVolumeReader;
use strokeseg_shared::metrics::ConfusionCounts;

use crate::process;

/// One evaluation set: a phantom family, its seed and its size.
pub struct EvalSet {
    /// Name in the reports.
    pub name: &'static str,
    /// `--family` of `strokeseg-train phantom`.
    pub family: &'static str,
    pub seed: &'static str,
    pub cases: &'static str,
    /// What the set is for, for the report.
    pub about: &'static str,
}

/// The sets every model is judged on. The seeds differ from every training seed.
pub const SETS: [EvalSet; 2] = [
    EvalSet {
        name: "holdout",
        family: "holdout",
        seed: "9101",
        cases: "60",
        about: "out of family: procedural heads with the hospitals' variation, never trained on",
    },
    EvalSet {
        name: "hospitals",
        family: "hospitals",
        seed: "9102",
        cases: "40",
        about: "in family: new patients of the training family (brain template)",
    },
];

/// A method: fp32 model, int8 model, an ensemble, with or without TTA, or the rule.
struct Method {
    name: String,
    args: Vec<String>,
}

/// Variants judged beside the fp32 model, the int8 model and the rule.
#[derive(Debug, Clone, Default)]
pub struct Variants {
    /// Also the fp32 model with flip test-time augmentation (`fp32+flip`).
    pub tta: bool,
    /// Further members: the fp32 model and these as an ensemble (`ensemble`, and
    /// `ensemble+flip` with `tta`).
    pub members: Vec<PathBuf>,
    /// Only the sets of [`SETS`] with these names (all when empty).
    pub sets: Vec<String>,
}

/// What one method scored on one set.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SetScore {
    pub set: String,
    pub method: String,
    pub n_cases: usize,
    pub n_lesion_cases: usize,
    pub mean_dice: f64,
    pub lesion_case_dice: f64,
    pub false_positive_cases: usize,
    pub volume_correlation: f64,
    pub mean_abs_volume_difference_ml: f64,
}

/// int8 vs fp32 agreement on one set.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Agreement {
    pub set: String,
    pub pooled_mask_dice: f64,
    pub mean_case_mask_dice: f64,
    pub n_cases_compared: usize,
}

/// `cargo xtask evaluate-model [--model FILE] [--int8 FILE] [--tta] [--member FILE]…
/// [--sets A,B] [--work DIR] [--out DIR]`.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut model = root.join("models/default/model.onnx");
    let mut int8 = None;
    let mut work = crate::cross::target_dir(root).join("model-eval");
    let mut out = None;
    let mut variants = Variants::default();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let mut value = |flag: &str| -> Result<PathBuf> {
            Ok(PathBuf::from(
                rest.next()
                    .with_context(|| format!("{flag} needs a value"))?,
            ))
        };
        match arg.as_str() {
            "--model" => model = value("--model")?,
            "--int8" => int8 = Some(value("--int8")?),
            "--work" => work = value("--work")?,
            "--out" => out = Some(value("--out")?),
            "--tta" => variants.tta = true,
            "--member" => variants.members.push(value("--member")?),
            "--sets" => {
                let names = rest.next().context("--sets needs a comma-separated list")?;
                variants.sets = names.split(',').map(str::to_owned).collect();
                if let Some(bad) = variants
                    .sets
                    .iter()
                    .find(|n| !SETS.iter().any(|set| set.name == n.as_str()))
                {
                    bail!(
                        "evaluate-model: no set `{bad}` (sets: {})",
                        SETS.map(|set| set.name).join(", ")
                    );
                }
            }
            other => bail!(
                "evaluate-model: unknown argument `{other}` (--model FILE, --int8 FILE, --tta, --member FILE, --sets A,B, --work DIR, --out DIR)"
            ),
        }
    }
    let int8 = int8.unwrap_or_else(|| model.with_file_name("model.int8.onnx"));
    let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let (model, int8, work) = (absolute(model), absolute(int8), absolute(work));
    variants.members = variants.members.into_iter().map(absolute).collect();
    let out = absolute(out.unwrap_or_else(|| work.join("report")));
    let (train, edge) = build_tools(root)?;
    evaluate(root, &train, &edge, &model, &int8, &variants, &work, &out)?;
    Ok(())
}

/// Builds the dev-profile `strokeseg-train` and `strokeseg-edge` and returns their paths.
/// `cargo test --workspace --no-run` builds both with the workspace's unified features, as
/// the CI's test step does, so a warm target folder is reused (building the two packages
/// alone resolves other features and recompiles tract, minutes here).
pub fn build_tools(root: &Path) -> Result<(PathBuf, PathBuf)> {
    crate::libtorch::setup(root)?;
    crate::templates::setup(root)?;
    process::run(root, "cargo", &["test", "--workspace", "--no-run"])?;
    let bin = crate::cross::target_dir(root).join("debug");
    Ok((bin.join("strokeseg-train"), bin.join("strokeseg-edge")))
}

/// Judges `model` (and `int8`, if the file exists, and the `variants`) and the threshold
/// rule on every set of [`SETS`]; writes `out/model_eval.{json,md}` and the per-set reports
/// under `out/`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    root: &Path,
    train: &Path,
    edge: &Path,
    model: &Path,
    int8: &Path,
    variants: &Variants,
    work: &Path,
    out: &Path,
) -> Result<(Vec<SetScore>, Vec<Agreement>)> {
    let started = Instant::now();
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let flip = || vec!["--tta".to_owned(), "flip".to_owned()];
    let fp32_args = vec!["--model".to_owned(), s(model)];
    let mut methods = vec![Method {
        name: "fp32".into(),
        args: fp32_args.clone(),
    }];
    if variants.tta {
        methods.push(Method {
            name: "fp32+flip".into(),
            args: [fp32_args.clone(), flip()].concat(),
        });
    }
    if !variants.members.is_empty() {
        let mut args = fp32_args.clone();
        for member in &variants.members {
            args.extend(["--model".to_owned(), s(member)]);
        }
        let name = format!("ensemble of {}", variants.members.len() + 1);
        if variants.tta {
            methods.push(Method {
                name: format!("{name}+flip"),
                args: [args.clone(), flip()].concat(),
            });
        }
        methods.push(Method { name, args });
    }
    if int8.is_file() {
        methods.push(Method {
            name: "int8".into(),
            args: vec!["--model".into(), s(int8)],
        });
    }
    methods.push(Method {
        name: "threshold".into(),
        args: vec!["--method".into(), "threshold".into()],
    });
    fs::create_dir_all(out).with_context(|| format!("could not create {}", out.display()))?;
    let mut scores = Vec::new();
    let mut agreements = Vec::new();
    let chosen = SETS
        .iter()
        .filter(|set| variants.sets.is_empty() || variants.sets.iter().any(|n| n == set.name));
    for set in chosen {
        let data = work.join(format!("data-{}-{}", set.name, set.seed));
        if !data.join("phantom_truth.json").is_file() {
            process::run(
                root,
                &s(train),
                &[
                    "phantom",
                    "--out",
                    &s(&data),
                    "--cases",
                    set.cases,
                    "--seed",
                    set.seed,
                    "--family",
                    set.family,
                    "--template-dir",
                    &s(&root.join(crate::templates::TEMPLATE_DIR)),
                ],
            )?;
        }
        let cases = case_names(&data)?;
        for method in &methods {
            let slug: String = method
                .name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            let pred = work.join(format!("pred-{}-{slug}", set.name));
            if pred.exists() {
                fs::remove_dir_all(&pred)
                    .with_context(|| format!("could not remove {}", pred.display()))?;
            }
            let timer = Instant::now();
            segment_all(edge, &data, &pred, &cases, &method.args)?;
            println!(
                "evaluate-model: {} {}: {} cases in {:.1} s",
                set.name,
                method.name,
                cases.len(),
                timer.elapsed().as_secs_f64()
            );
            let report = out.join(format!("{}-{slug}", set.name));
            // Inside the work folder with relative paths, so the per-case CSVs name
            // `data-…/case_N/…` and `pred-…/case_N/…`, not this machine's folders.
            let rel = |p: &Path| {
                p.strip_prefix(work)
                    .map_or_else(|_| s(p), |r| r.to_string_lossy().into_owned())
            };
            process::run(
                work,
                &s(train),
                &[
                    "evaluate",
                    "--pred",
                    &rel(&pred),
                    "--truth",
                    &rel(&data),
                    "--out",
                    &s(&report),
                ],
            )?;
            scores.push(score(
                set.name,
                &method.name,
                &report.join("evaluation_cases.csv"),
            )?);
        }
        if methods.iter().any(|m| m.name == "int8") {
            agreements.push(agreement(
                set.name,
                &work.join(format!("pred-{}-fp32", set.name)),
                &work.join(format!("pred-{}-int8", set.name)),
                &cases,
            )?);
        }
    }
    let markdown = report_markdown(&scores, &agreements, model);
    let write = |name: &str, text: &str| {
        let path = out.join(name);
        strokeseg_io::atomic::write_atomically(&path, text.as_bytes())
            .with_context(|| format!("could not write {}", path.display()))
    };
    write("model_eval.md", &markdown)?;
    // The file name only: the shipped report must not carry this machine's folders.
    let model_name = model
        .file_name()
        .map_or_else(|| s(model), |n| n.to_string_lossy().into_owned());
    let json = serde_json::json!({
        "model": model_name,
        "scores": scores,
        "int8_agreement": agreements,
    });
    write(
        "model_eval.json",
        &serde_json::to_string_pretty(&json).context("model_eval.json")?,
    )?;
    println!("{markdown}");
    println!(
        "evaluate-model: done in {:.0} s; reports in {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok((scores, agreements))
}

/// The `case_N` folders of a dataset, in case-number order.
fn case_names(data: &Path) -> Result<Vec<String>> {
    let mut cases: Vec<(u64, String)> = fs::read_dir(data)
        .with_context(|| format!("could not list {}", data.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix("case_")?.parse().ok()?;
            Some((n, name))
        })
        .collect();
    cases.sort();
    if cases.is_empty() {
        bail!("{} holds no case_N folders", data.display());
    }
    Ok(cases.into_iter().map(|(_, name)| name).collect())
}

/// Segments every case with two edge processes at a time (the edge runs one thread each).
fn segment_all(
    edge: &Path,
    data: &Path,
    pred: &Path,
    cases: &[String],
    method_args: &[String],
) -> Result<()> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::<String>::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(case) = cases.get(k) else { break };
                    let result = Command::new(edge)
                        .arg("segment")
                        .arg(data.join(case))
                        .arg("--out")
                        .arg(pred.join(case))
                        .args(method_args)
                        .output();
                    let problem = match result {
                        Ok(o) if o.status.success() => None,
                        Ok(o) => Some(format!(
                            "{case}: {} {}",
                            o.status,
                            String::from_utf8_lossy(&o.stderr).trim()
                        )),
                        Err(e) => Some(format!("{case}: could not start {}: {e}", edge.display())),
                    };
                    if let Some(p) = problem {
                        failures
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .push(p);
                    }
                }
            });
        }
    });
    let failures = failures
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !failures.is_empty() {
        bail!("strokeseg-edge segment failed:\n{}", failures.join("\n"));
    }
    Ok(())
}

/// The set-level figures from `strokeseg-train evaluate`'s per-case CSV.
fn score(set: &str, method: &str, csv: &Path) -> Result<SetScore> {
    let text =
        fs::read_to_string(csv).with_context(|| format!("could not read {}", csv.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().context("empty CSV")?.split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .with_context(|| format!("{} has no column {name}", csv.display()))
    };
    let (dice, pred_ml, true_ml, abs_ml) = (
        col("dice")?,
        col("predicted_volume_ml")?,
        col("true_volume_ml")?,
        col("abs_volume_difference_ml")?,
    );
    let mut rows: Vec<[f64; 4]> = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        let get = |i: usize| -> Result<f64> {
            fields
                .get(i)
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{}: bad row `{line}`", csv.display()))
        };
        rows.push([get(dice)?, get(pred_ml)?, get(true_ml)?, get(abs_ml)?]);
    }
    let n = rows.len();
    let lesion: Vec<&[f64; 4]> = rows.iter().filter(|r| r[2] > 0.0).collect();
    let mean = |v: &mut dyn Iterator<Item = f64>, n: usize| v.sum::<f64>() / n.max(1) as f64;
    Ok(SetScore {
        set: set.into(),
        method: method.into(),
        n_cases: n,
        n_lesion_cases: lesion.len(),
        mean_dice: mean(&mut rows.iter().map(|r| r[0]), n),
        lesion_case_dice: mean(&mut lesion.iter().map(|r| r[0]), lesion.len()),
        false_positive_cases: rows.iter().filter(|r| r[2] == 0.0 && r[1] > 0.0).count(),
        volume_correlation: pearson(
            &rows.iter().map(|r| r[1]).collect::<Vec<_>>(),
            &rows.iter().map(|r| r[2]).collect::<Vec<_>>(),
        ),
        mean_abs_volume_difference_ml: mean(&mut rows.iter().map(|r| r[3]), n),
    })
}

/// Pearson correlation; NaN when either side is constant.
fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa * sbb).sqrt()
}

/// Dice between the fp32 and int8 masks of every case, with the shared confusion counts.
fn agreement(set: &str, fp32: &Path, int8: &Path, cases: &[String]) -> Result<Agreement> {
    let mut pooled = ConfusionCounts::default();
    let mut per_case = Vec::new();
    for case in cases {
        let a = read_mask(&fp32.join(case).join("lesion_mask.nii.gz"))?;
        let b = read_mask(&int8.join(case).join("lesion_mask.nii.gz"))?;
        let counts = ConfusionCounts::from_masks(&b, &a)
            .map_err(|e| anyhow::anyhow!("{case}: fp32 and int8 masks differ in size: {e:?}"))?;
        pooled.merge(counts);
        if !counts.both_empty() {
            per_case.push(counts.dice());
        }
    }
    Ok(Agreement {
        set: set.into(),
        pooled_mask_dice: pooled.dice(),
        mean_case_mask_dice: per_case.iter().sum::<f64>() / per_case.len().max(1) as f64,
        n_cases_compared: per_case.len(),
    })
}

/// A mask file as 0/1 bytes (value > 0.5 is lesion).
fn read_mask(path: &Path) -> Result<Vec<u8>> {
    let mut reader = NiftiVolumeReader::open(path)
        .with_context(|| format!("could not open {}", path.display()))?;
    let [nx, ny, nz] = reader.dims();
    let mut plane = vec![0.0f32; nx * ny];
    let mut out = Vec::with_capacity(nx * ny * nz);
    for z in 0..nz {
        reader
            .read_slice_f32(z, &mut plane)
            .with_context(|| format!("could not read {}", path.display()))?;
        out.extend(plane.iter().map(|&v| u8::from(v > 0.5)));
    }
    Ok(out)
}

fn report_markdown(scores: &[SetScore], agreements: &[Agreement], model: &Path) -> String {
    let mut md = format!(
        "# Phantom-family evaluation of `{}`\n\nPhantom figures, not clinical ones. Written by `cargo xtask evaluate-model`.\n\n",
        model.file_name().map_or_else(
            || model.display().to_string(),
            |n| n.to_string_lossy().into_owned()
        )
    );
    for set in SETS
        .iter()
        .filter(|set| scores.iter().any(|s| s.set == set.name))
    {
        md.push_str(&format!(
            "- **{}** (`--family {}`, seed {}, {} cases): {}\n",
            set.name, set.family, set.seed, set.cases, set.about
        ));
    }
    md.push_str("\n| set | method | cases (lesion) | mean Dice | lesion-case Dice | FP on lesion-free | volume r | mean abs. vol. diff. (mL) |\n|---|---|---:|---:|---:|---:|---:|---:|\n");
    for s in scores {
        md.push_str(&format!(
            "| {} | {} | {} ({}) | {:.3} | {:.3} | {} | {:.3} | {:.2} |\n",
            s.set,
            s.method,
            s.n_cases,
            s.n_lesion_cases,
            s.mean_dice,
            s.lesion_case_dice,
            s.false_positive_cases,
            s.volume_correlation,
            s.mean_abs_volume_difference_ml
        ));
    }
    if !agreements.is_empty() {
        md.push_str("\n| set | int8 vs fp32 mask Dice (pooled) | mean over cases | cases compared |\n|---|---:|---:|---:|\n");
        for a in agreements {
            md.push_str(&format!(
                "| {} | {:.3} | {:.3} | {} |\n",
                a.set, a.pooled_mask_dice, a.mean_case_mask_dice, a.n_cases_compared
            ));
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pearson_of_a_line_is_one_and_of_a_mirror_minus_one() {
        let a = [1.0, 2.0, 3.0, 4.0];
        assert!((pearson(&a, &[2.0, 4.0, 6.0, 8.0]) - 1.0).abs() < 1e-12);
        assert!((pearson(&a, &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert!(pearson(&a, &[1.0; 4]).is_nan());
    }
}
