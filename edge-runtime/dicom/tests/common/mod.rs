//! Shared helpers of the integration tests: a small phantom study, the real DICOM tools
//! (dcmtk, dicom3tools) found on PATH or reported SKIPPED, free loopback ports.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use strokeseg_phantom::{DatasetOptions, PhantomCase, generate_case};

/// Set to `required` (CI's `dicom` step) to make a missing tool a failure, not a skip.
pub const TOOLS_ENV: &str = "STROKESEG_DICOM_TOOLS";

/// A 2-slice classic phantom case with a lesion (256 × 256, seed 13).
pub fn small_case() -> PhantomCase {
    let opts = DatasetOptions {
        min_slices: 2,
        max_slices: 2,
        lesion_free_fraction: 0.0,
        ..DatasetOptions::default()
    };
    generate_case(13, 0, &opts).unwrap()
}

/// The path of `program` when on PATH. Missing: SKIPPED is printed and `None` returned,
/// or the test fails when [`TOOLS_ENV`] is `required`.
pub fn tool(program: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let required = std::env::var(TOOLS_ENV).is_ok_and(|v| v == "required");
        assert!(
            !required,
            "{test}: {program} not on PATH and {TOOLS_ENV}=required (apt-get install -y dcmtk dicom3tools)"
        );
        // Straight to the process's stderr: libtest captures eprintln! of passing tests.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** {test} SKIPPED: {program} not on PATH (apt-get install -y dcmtk dicom3tools, or `cargo xtask ci dicom`) ***\n"
        );
    }
    found
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `program args`, returning (success, stdout + stderr).
pub fn run(program: &Path, args: &[&str]) -> (bool, String) {
    // dcmtk leaves Nagle's algorithm on unless asked: ~40 ms per instance on loopback.
    run_with_nodelay(true, program, args)
}

/// [`run`] with dcmtk's `TCP_NODELAY` set to `nodelay`.
pub fn run_with_nodelay(nodelay: bool, program: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .env("TCP_NODELAY", if nodelay { "1" } else { "0" })
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every `.dcm` file under `dir`, sorted.
pub fn dcm_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "dcm") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
