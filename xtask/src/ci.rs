//! `cargo xtask ci`: every check the project runs, in order, as one table of steps.
//!
//! Add a check by adding a row to [`STEPS`]. All cargo steps share the workspace's target dir
//! and the dev profile, so each crate is compiled as few times as possible. The first failing
//! step stops the run; the exit status is non-zero then.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{libtorch, process};

/// The bare-metal target that keeps `strokeseg-shared` honest about `no_std`.
const NO_STD_TARGET: &str = "thumbv7em-none-eabihf";

thread_local! {
    /// Test totals of the `test` step, for the closing line.
    static TEST_COUNTS: std::cell::Cell<process::TestCounts> = const {
        std::cell::Cell::new(process::TestCounts { passed: 0, failed: 0, ignored: 0 })
    };
}

/// One CI step: a name to select it by, what it checks, and how.
struct Step {
    name: &'static str,
    about: &'static str,
    run: fn(&Path) -> Result<()>,
}

const STEPS: &[Step] = &[
    Step {
        name: "setup-libtorch",
        about: "install CPU libtorch into .cache/libtorch if missing",
        run: libtorch::setup,
    },
    Step {
        name: "setup-templates",
        about: "the ICBM 2009a brain template (from the nilearn wheel) into .cache/templates if missing",
        run: |root| crate::templates::setup(root).map(|_| ()),
    },
    Step {
        name: "no-std-target",
        about: "rustup target add thumbv7em-none-eabihf if missing",
        run: ensure_no_std_target,
    },
    Step {
        name: "fmt",
        about: "cargo fmt --all --check",
        run: |root| cargo(root, &["fmt", "--all", "--check"]),
    },
    Step {
        name: "clippy",
        about: "cargo clippy --workspace --all-targets -- -D warnings",
        run: |root| {
            cargo(
                root,
                &[
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ],
            )
        },
    },
    Step {
        name: "no-std",
        about: "build strokeseg-shared without std for thumbv7em-none-eabihf",
        run: |root| {
            cargo(
                root,
                &[
                    "build",
                    "--package",
                    "strokeseg-shared",
                    "--no-default-features",
                    "--target",
                    NO_STD_TARGET,
                ],
            )
        },
    },
    Step {
        name: "test",
        about: "cargo test --workspace --no-fail-fast (the trainer included)",
        run: |root| {
            let counts = process::run_counting_tests(
                root,
                "cargo",
                &["test", "--workspace", "--no-fail-fast"],
            )?;
            TEST_COUNTS.with(|c| c.set(counts));
            Ok(())
        },
    },
    Step {
        name: "dicom",
        about: "strokeseg-dicom against dcmtk and dicom3tools (installs them), pydicom reads the outputs",
        run: crate::dicom::run,
    },
    Step {
        name: "demo",
        about: "the README's first command (dev profile, the test step's binary): strokeseg-edge demo",
        run: readme_demo,
    },
    Step {
        name: "onnx-check",
        about: "exported models vs onnx checker + onnxruntime (skips if pip can't install them)",
        run: onnx_check,
    },
    Step {
        name: "slurm",
        about: "cv folds as a job array on a real single-node SLURM (installs slurm-wlm, munge), k8s Job schema",
        run: crate::slurm::run,
    },
    Step {
        name: "hil",
        about: "cargo xtask hil: QEMU hardware-in-the-loop (Cortex-M4F firmware, aarch64 edge)",
        run: |root| crate::hil::run(root, &[]),
    },
];

/// What a fresh clone's full run needs on the repository's filesystem (target folder, libtorch,
/// the wheels, QEMU sysroots), with some margin.
const DISK_NEEDED_GIB: u64 = 20;

/// Prints the free space beside the repository and warns when a full run may not fit; a run
/// that runs out of disk fails deep inside pip or the linker, so say it up front.
fn report_free_disk(root: &Path) {
    let Some(text) = process::output(root, "df", &["-Pk", "."]) else {
        return;
    };
    let free_kib = text
        .lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|field| field.parse::<u64>().ok());
    if let Some(free_kib) = free_kib {
        let free_gib = free_kib / (1024 * 1024);
        println!("disk: {free_gib} GiB free beside {}", root.display());
        if free_gib < DISK_NEEDED_GIB {
            println!(
                "WARNING: a fresh clone's full run needs about {DISK_NEEDED_GIB} GiB; \
                 free some space if a step fails with \"No space left on device\""
            );
        }
    }
}

/// Runs the steps named in `args` (all when none), or lists them for `--list`.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    if args.iter().any(|arg| arg == "--list") {
        for step in STEPS {
            println!("{:<16} {}", step.name, step.about);
        }
        return Ok(());
    }
    let selected = select(args)?;
    report_free_disk(root);
    let mut timings: Vec<(&str, Duration)> = Vec::new();
    for step in selected {
        println!("\n==> {} ({})", step.name, step.about);
        let started = Instant::now();
        let result = (step.run)(root);
        let elapsed = started.elapsed();
        timings.push((step.name, elapsed));
        match result {
            Ok(()) => println!("<== {} ok in {}", step.name, seconds(elapsed)),
            Err(err) => {
                println!("<== {} FAILED after {}", step.name, seconds(elapsed));
                print_summary(&timings);
                return Err(err.context(format!("ci step `{}` failed", step.name)));
            }
        }
    }
    print_summary(&timings);
    println!("ci: all steps passed");
    let counts = TEST_COUNTS.with(std::cell::Cell::get);
    if counts.passed + counts.failed + counts.ignored > 0 {
        // The plain closing line CI readers understand, summed over every test binary.
        println!(
            "ci: {} passed, {} failed, {} skipped",
            counts.passed, counts.failed, counts.ignored
        );
    }
    Ok(())
}

/// The steps to run, in table order: every step, or only those named (unknown names are errors).
fn select(names: &[String]) -> Result<Vec<&'static Step>> {
    if let Some(unknown) = names
        .iter()
        .find(|name| !STEPS.iter().any(|step| step.name == name.as_str()))
    {
        let known: Vec<&str> = STEPS.iter().map(|step| step.name).collect();
        bail!("unknown ci step `{unknown}`; steps: {}", known.join(", "));
    }
    Ok(STEPS
        .iter()
        .filter(|step| names.is_empty() || names.iter().any(|name| name == step.name))
        .collect())
}

fn print_summary(timings: &[(&str, Duration)]) {
    println!("\nstep             time");
    for (name, elapsed) in timings {
        println!("{name:<16} {:>8}", seconds(*elapsed));
    }
    let total: Duration = timings.iter().map(|(_, elapsed)| *elapsed).sum();
    println!("{:<16} {:>8}", "total", seconds(total));
}

fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    process::run(root, "cargo", args)
}

/// The README's first command, `strokeseg-edge demo`: it must segment the demo study with the
/// embedded default model and publish all three outputs. It runs the dev-profile binary the
/// `test` step built (`cargo test --workspace --no-run` is a no-op then, and builds it when
/// this step runs alone): `cargo run -p strokeseg-edge` would resolve the edge's features
/// alone, differently from the workspace's test build, and rebuild tract (about 7 minutes
/// here). The edge package has one binary, so `cargo run` cannot pick another.
fn readme_demo(root: &Path) -> Result<()> {
    let target = crate::cross::target_dir(root);
    let out = target.join("tmp").join("ci-demo");
    if out.exists() {
        std::fs::remove_dir_all(&out)
            .with_context(|| format!("could not remove {}", out.display()))?;
    }
    let out_arg = out.to_string_lossy().into_owned();
    cargo(root, &["test", "--workspace", "--no-run"])?;
    let edge = target.join("debug").join("strokeseg-edge");
    process::run(root, &edge.to_string_lossy(), &["demo", "--out", &out_arg])?;
    for file in ["lesion_mask.nii.gz", "report.json", "overlay.png"] {
        if !out.join(file).is_file() {
            bail!("`strokeseg-edge demo` left no {file} in {}", out.display());
        }
    }
    let path = out.join("report.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("could not read {}", path.display()))?;
    let report: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if report["method"] != "model" || report["model"]["source"] != "embedded default model" {
        bail!(
            "the demo did not segment with the embedded default model: method {}, model {} ({})",
            report["method"],
            report["model"]["source"],
            path.display()
        );
    }
    println!(
        "demo: {} mL with model {} {}",
        report["lesion_volume_ml"], report["model"]["name"], report["model"]["version"]
    );
    Ok(())
}

/// The venv (under `.cache/`) that holds onnx and onnxruntime for [`onnx_check`].
const ONNX_VENV: &str = ".cache/venv-onnx";
/// What [`onnx_check`] installs into it.
const ONNX_PACKAGES: &[&str] = &["onnx>=1.16", "onnxruntime>=1.18"];

/// The venv's python with onnx and onnxruntime importable, installing them on first use;
/// `None` (with the reason printed) when python, venv or pip can't provide them.
pub(crate) fn onnx_python(root: &Path) -> Option<std::path::PathBuf> {
    process::python_venv(
        root,
        ONNX_VENV,
        ONNX_PACKAGES,
        "import onnx, onnxruntime",
        "onnx-check",
    )
}

/// Checks the fp32 and int8 models the trainer's `export_parity` test exported from a small
/// trained network (the `test` step leaves them with inputs and tract's outputs in
/// `<target>/tmp/export-check`; run alone, this step runs that test first) with with `tests/scripts/check_onnx.py`: onnx's full checker, and onnxruntime
/// against tract (fp32 within 1e-4, int8 argmax agreement >= 99.5 %), with latencies.
fn onnx_check(root: &Path) -> Result<()> {
    let Some(python) = onnx_python(root) else {
        return Ok(());
    };
    let target = crate::cross::target_dir(root);
    let fixture = target.join("tmp").join("export-check");
    if !fixture.join("model.onnx").is_file() {
        // Run alone (`cargo xtask ci onnx-check`): make the models. `--workspace` keeps the
        // feature set of the `test` step, so nothing is rebuilt when that step ran before.
        cargo(root, &["test", "--workspace", "--test", "export_parity"])?;
    }
    process::run(
        root,
        &python.to_string_lossy(),
        &[
            "tests/scripts/check_onnx.py",
            &fixture.to_string_lossy(),
            "--bench",
        ],
    )
}

fn ensure_no_std_target(root: &Path) -> Result<()> {
    let installed = process::output(root, "rustup", &["target", "list", "--installed"]).context(
        "`rustup target list --installed` failed: rustup is needed to add the no_std target",
    )?;
    if installed.lines().any(|line| line.trim() == NO_STD_TARGET) {
        println!("{NO_STD_TARGET} already installed");
        return Ok(());
    }
    process::run(root, "rustup", &["target", "add", NO_STD_TARGET])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_are_unique() {
        for (index, step) in STEPS.iter().enumerate() {
            assert!(
                STEPS
                    .iter()
                    .skip(index + 1)
                    .all(|other| other.name != step.name),
                "duplicate step {}",
                step.name
            );
        }
    }

    #[test]
    fn selects_in_table_order_and_rejects_unknown_names() -> Result<()> {
        let picked = select(&["test".to_owned(), "fmt".to_owned()])?;
        let names: Vec<&str> = picked.iter().map(|step| step.name).collect();
        assert_eq!(names, ["fmt", "test"]);
        assert_eq!(select(&[])?.len(), STEPS.len());
        assert!(select(&["nope".to_owned()]).is_err());
        Ok(())
    }
}
