//! `strokeseg-train` as a user runs it: the binary starts without `LD_LIBRARY_PATH` (libtorch is
//! found through the rpath the build script bakes in) and its subcommands do their job.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_strokeseg-train");

/// Runs the trainer binary with `args` and no `LD_LIBRARY_PATH`.
fn train(args: &[&str]) -> std::io::Result<Output> {
    Command::new(BIN)
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .output()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn info_runs_without_ld_library_path() -> std::io::Result<()> {
    let out = train(&["info", "--device", "cpu"])?;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("--device cpu -> Cpu"),
        "stdout: {}",
        text(&out.stdout)
    );
    Ok(())
}

#[test]
fn info_rejects_a_malformed_device() -> std::io::Result<()> {
    let out = train(&["info", "--device", "gpu0"])?;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unknown device `gpu0`"),
        "stderr: {}",
        text(&out.stderr)
    );
    Ok(())
}

#[test]
fn phantom_writes_the_requested_cases() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let out_dir = dir.path().join("dataset");
    let out_arg = out_dir.to_string_lossy();
    let out = train(&["phantom", "--out", &out_arg, "--cases", "2", "--seed", "5"])?;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(": 2 cases from"),
        "stdout: {}",
        text(&out.stdout)
    );
    for case in ["case_1", "case_2"] {
        assert!(Path::new(&out_dir).join(case).is_dir(), "{case} missing");
    }
    Ok(())
}

#[test]
fn phantom_refuses_zero_cases() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let out_arg = dir.path().join("dataset").to_string_lossy().into_owned();
    let out = train(&["phantom", "--out", &out_arg, "--cases", "0", "--seed", "1"])?;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--cases must be at least 1"),
        "stderr: {}",
        text(&out.stderr)
    );
    Ok(())
}
