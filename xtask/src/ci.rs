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
        run: |root| cargo(root, &["test", "--workspace", "--no-fail-fast"]),
    },
];

/// Runs the steps named in `args` (all when none), or lists them for `--list`.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    if args.iter().any(|arg| arg == "--list") {
        for step in STEPS {
            println!("{:<16} {}", step.name, step.about);
        }
        return Ok(());
    }
    let selected = select(args)?;
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
