//! Shared helpers of the integration tests: a small phantom study, the real DICOM tools
//! (dcmtk, dicom3tools) found on PATH or reported SKIPPED, free loopback ports.
#![allow(
    dead_code,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use strokeseg_phantom::{PhantomCase, generate_case};

pub use strokeseg_dicom::testing::{TOOLS_ENV, dcm_files, free_port, tool};

/// A 2-slice classic phantom case with a lesion (256 × 256, seed 13) and the
/// indicator-dilution dynamic series.
pub fn small_case() -> PhantomCase {
    generate_case(13, 0, &strokeseg_dicom::write::phantom_dataset_options(2)).unwrap()
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

/// The files of a case folder, name → bytes, sorted by name.
pub fn case_folder_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                PathBuf::from(p.file_name().unwrap()),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// Every file of `files` converted by the dcmtk `tool args src dst` into `dir` (`<i>.dcm`).
pub fn converted(tool: &Path, args: &[&str], files: &[PathBuf], dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    files
        .iter()
        .enumerate()
        .map(|(i, src)| {
            let dst = dir.join(format!("{i}.dcm"));
            let mut a = args.to_vec();
            let (s, d) = (src.display().to_string(), dst.display().to_string());
            a.extend([s.as_str(), d.as_str()]);
            let (ok, out) = run(tool, &a);
            assert!(ok, "{} {a:?}: {out}", tool.display());
            dst
        })
        .collect()
}
