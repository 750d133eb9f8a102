//! `cargo xtask ci dicom`: the DICOM node (`strokeseg-dicom`) against real peers, not mocks.
//!
//! 1. Debian's `dcmtk` (`storescu`, `storescp`, `echoscu`, `dcmdump`) and `dicom3tools`
//!    (`dciodvfy`) are installed with apt-get when missing (as root).
//! 2. strokeseg-dicom's integration tests (`scp`, `outputs`, `roundtrip`, `enhanced`,
//!    `frame_memory`) and strokeseg-edge's `serve` run (with the workspace's features, so
//!    the test step's build is reused) with `STROKESEG_DICOM_TOOLS=required`, so a test that would skip for a missing tool
//!    fails instead; the tests start the tools themselves on 127.0.0.1 with free ports
//!    (storescu → our SCP, incl. `kill -9`; our SCU → storescp, the received SEG through
//!    dciodvfy; storescu → `strokeseg-edge serve` → storescp end to end, with faults). The
//!    objects storescp received from the crate's test are kept in `target/tmp/dicom-check/`.
//! 3. Those SEG, SC and SR files are loaded with pydicom and, where pip can install it,
//!    highdicom (`tests/scripts/check_dicom.py`, both in `.cache/venv-dicom`); skipped,
//!    saying so, when pip cannot install them.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::process;

/// The programs the tests start, and the Debian packages that have them.
const PROGRAMS: &[&str] = &[
    "storescu", "storescp", "echoscu", "dcmdump", "dcmcrle", "dcmconv", "dcmcjpls", "dciodvfy",
];
const PACKAGES: &[&str] = &["dcmtk", "dicom3tools"];

/// Runs the step.
pub fn run(root: &Path) -> Result<()> {
    ensure_tools_installed(root)?;
    let keep = std::path::absolute(
        crate::cross::target_dir(root)
            .join("tmp")
            .join("dicom-check"),
    )?;
    // `--workspace` with the test targets named: the features of the test step's build, so
    // its warm target folder is reused (`-p` alone resolves other features and recompiles
    // tract, minutes). The crate's unit tests need no tools and ran in the test step.
    let args = [
        "test",
        "--workspace",
        "--test",
        "scp",
        "--test",
        "outputs",
        "--test",
        "roundtrip",
        "--test",
        "serve",
        "--test",
        "enhanced",
        "--test",
        "frame_memory",
    ];
    let line = format!("cargo {} (STROKESEG_DICOM_TOOLS=required)", args.join(" "));
    println!("$ {line}");
    let status = Command::new("cargo")
        .args(args)
        .env("STROKESEG_DICOM_TOOLS", "required")
        .env("STROKESEG_DICOM_KEEP", &keep)
        .current_dir(root)
        .status()
        .context("could not start cargo")?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    // highdicom where installable (pure Python, from PyPI); pydicom alone otherwise.
    let python = process::python_venv(
        root,
        ".cache/venv-dicom",
        &["pydicom", "highdicom"],
        "import pydicom, highdicom",
        "dicom highdicom check",
    )
    .or_else(|| {
        process::python_venv(
            root,
            ".cache/venv-dicom",
            &["pydicom"],
            "import pydicom",
            "dicom pydicom check",
        )
    });
    let Some(python) = python else {
        return Ok(());
    };
    process::run(
        root,
        &python.to_string_lossy(),
        &["tests/scripts/check_dicom.py", &keep.to_string_lossy()],
    )
}

pub fn ensure_tools_installed(root: &Path) -> Result<()> {
    let missing: Vec<&str> = PROGRAMS
        .iter()
        .copied()
        .filter(|p| process::output(root, "sh", &["-c", &format!("command -v {p}")]).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!(
        "dicom: {} missing; installing {}",
        missing.join(", "),
        PACKAGES.join(" ")
    );
    let is_root = process::output(root, "id", &["-u"]).is_some_and(|id| id.trim() == "0");
    if !is_root {
        bail!(
            "{} missing and not root: install Debian's {} (apt-get install -y {})",
            missing.join(", "),
            PACKAGES.join(" and "),
            PACKAGES.join(" ")
        );
    }
    process::run(root, "apt-get", &["update"])?;
    let status = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(PACKAGES)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("could not start apt-get")?;
    if !status.success() {
        bail!("apt-get install {} failed ({status})", PACKAGES.join(" "));
    }
    Ok(())
}
