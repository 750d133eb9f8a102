//! Loop 1 of `cargo xtask hil`: the edge runtime on an emulated aarch64 board.
//!
//! 1. `cargo xtask cross`: the static `aarch64-unknown-linux-musl` release binary.
//! 2. A smoke run under `prlimit --as` + `qemu-aarch64` (`QEMU_CPU=cortex-a72`).
//! 3. The edge runtime's `hil_qemu` integration test (`edge-runtime/tests/hil_qemu.rs`) with
//!    `STROKESEG_HIL_EDGE_AARCH64` set: it runs the x86 host build (the test's own
//!    `strokeseg-edge`) and the emulated aarch64 binary on the same phantom studies, bad inputs
//!    and watch-daemon inbox, and compares them, the status pin sequences too (the `log` pin
//!    backend: qemu-user has no GPIO chip), and runs the emulated binary's `serve` as a DICOM
//!    node over loopback against a host-side dcmtk `storescu` and `storescp` (installed here
//!    with dicom3tools when missing, as `cargo xtask ci dicom` does). It appends its figures to
//!    `target/hil/edge-figures.txt`, which this module summarises.
//!
//! The host side is built with the same package selection and features as `cargo xtask ci`'s
//! `test` step (`--workspace`) when libtorch is available, so CI compiles the x86 edge runtime
//! once; without libtorch only the edge runtime's tests are built.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::cross;

/// The address-space limit of every emulated run: the edge box's per-study budget.
pub const MEMORY_LIMIT_BYTES: u64 = 256 * 1024 * 1024;
/// The emulated CPU: QEMU's default (`max`) advertises SVE, which tract then uses, and
/// emulated SVE is about 15× slower than NEON.
const QEMU_CPU: &str = "cortex-a72";

/// What the edge loop measured.
#[derive(Debug, Clone, Default)]
pub struct EdgeOutcome {
    /// Size of the static aarch64 binary.
    pub binary_bytes: u64,
    /// Largest peak RSS of an emulated run (QEMU included), KiB.
    pub peak_rss_kib: u64,
    /// Masks compared between the board and the host.
    pub masks_compared: usize,
    /// Of those, bit-identical.
    pub masks_identical: usize,
    /// Of those, with byte-identical `.nii.gz` files.
    pub mask_files_identical: usize,
    /// Bad inputs that failed with the host's exit code and message.
    pub bad_inputs: usize,
    /// Whether the watch daemon processed its studies end to end.
    pub watch_ok: bool,
    /// Whether `serve` took a study from a host `storescu` and delivered valid results to a
    /// host PACS.
    pub serve_ok: bool,
    /// Turnaround of that study on the board (last instance in → all results at the PACS).
    pub serve_turnaround_s: f64,
    /// Runs whose logged status pin levels were the documented sequence (and the host's).
    pub pin_sequences: usize,
    /// Whether the binary had an embedded default model.
    pub embedded_model: bool,
    /// Wall time of the cross build (a no-op when warm), seconds.
    pub build_seconds: f64,
    /// Wall time of the comparison test, seconds.
    pub test_seconds: f64,
}

/// Runs the edge loop.
pub fn run(root: &Path) -> Result<EdgeOutcome> {
    let started = Instant::now();
    let binary = cross::build(root)?;
    let build_seconds = started.elapsed().as_secs_f64();
    let binary_bytes = std::fs::metadata(&binary)
        .with_context(|| format!("reading {}", binary.display()))?
        .len();
    let qemu = cross::qemu_aarch64(root)?;
    // GNU time measures peak RSS; prlimit (util-linux) enforces the address-space limit.
    cross::ensure_apt_tools(root, &[(&["time"], "time"), (&["prlimit"], "util-linux")])?;
    if !Path::new("/usr/bin/time").is_file() {
        bail!("/usr/bin/time (Debian package `time`) is missing");
    }
    // dcmtk and dicom3tools for the `serve` test's host-side peers.
    crate::dicom::ensure_tools_installed(root)?;
    smoke(&qemu, &binary)?;

    let figures = cross::target_dir(root).join("hil").join("edge-figures.txt");
    if let Some(dir) = figures.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(&figures);
    let started = Instant::now();
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root).arg("test");
    if libtorch_available() {
        // The `test` CI step's selection: the same features, so nothing is rebuilt.
        cmd.arg("--workspace");
    } else {
        println!("hil edge: no libtorch, so only the edge runtime's tests are built");
        cmd.args(["--package", "strokeseg-edge"]);
    }
    cmd.args([
        "--test",
        "hil_qemu",
        "--",
        "--test-threads=1",
        "--nocapture",
    ])
    .env("STROKESEG_HIL_EDGE_AARCH64", &binary)
    .env("STROKESEG_HIL_QEMU", &qemu)
    .env(
        "STROKESEG_HIL_MEMORY_LIMIT_BYTES",
        MEMORY_LIMIT_BYTES.to_string(),
    )
    .env("STROKESEG_HIL_FIGURES", &figures)
    .env("STROKESEG_DICOM_TOOLS", "required");
    cross::run_command(&mut cmd)?;
    let test_seconds = started.elapsed().as_secs_f64();

    let text = std::fs::read_to_string(&figures).with_context(|| {
        format!(
            "the hil_qemu test wrote no figures to {}",
            figures.display()
        )
    })?;
    let values = |key: &str| -> Vec<&str> {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .collect()
    };
    let outcome = EdgeOutcome {
        binary_bytes,
        peak_rss_kib: values("board_peak_rss_kib")
            .iter()
            .filter_map(|v| v.parse().ok())
            .max()
            .unwrap_or(0),
        masks_compared: values("mask_compared").len(),
        masks_identical: values("mask_bit_identical").len(),
        mask_files_identical: values("mask_file_identical")
            .iter()
            .filter(|v| v.ends_with(":true"))
            .count(),
        bad_inputs: values("bad_input_same_error").len(),
        watch_ok: values("watch_end_to_end") == ["ok"],
        serve_ok: values("serve_end_to_end") == ["ok"],
        serve_turnaround_s: values("serve_turnaround_s")
            .first()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
        pin_sequences: values("pin_sequence_checked").len(),
        embedded_model: values("embedded_model").is_empty(),
        build_seconds,
        test_seconds,
    };
    if outcome.masks_compared == 0
        || outcome.bad_inputs == 0
        || !outcome.watch_ok
        || !outcome.serve_ok
        || outcome.pin_sequences == 0
    {
        bail!(
            "the hil_qemu test ran but did not compare everything (masks {}, bad inputs {}, watch {}, serve {}, pin sequences {}): was it skipped?",
            outcome.masks_compared,
            outcome.bad_inputs,
            outcome.watch_ok,
            outcome.serve_ok,
            outcome.pin_sequences
        );
    }
    if outcome.peak_rss_kib * 1024 > MEMORY_LIMIT_BYTES {
        bail!(
            "peak RSS {} KiB under emulation is over the {} MiB budget",
            outcome.peak_rss_kib,
            MEMORY_LIMIT_BYTES / (1024 * 1024)
        );
    }
    Ok(outcome)
}

/// The binary starts under the limit and the emulator: `strokeseg-edge --version`.
fn smoke(qemu: &Path, binary: &Path) -> Result<()> {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--as={MEMORY_LIMIT_BYTES}"))
        .arg("--")
        .arg(qemu)
        .arg(binary)
        .arg("--version")
        .env("QEMU_CPU", QEMU_CPU)
        // See edge-runtime/tests/hil_qemu.rs: one malloc arena keeps QEMU's own address space
        // within the limit.
        .env("MALLOC_ARENA_MAX", "1");
    cross::run_command(&mut cmd).context(
        "the aarch64 strokeseg-edge does not start under qemu-aarch64 with the memory limit",
    )
}

/// Whether the trainer can be built (libtorch installed or supplied), so that the workspace's
/// feature set (the `test` CI step's) can be used.
fn libtorch_available() -> bool {
    if std::env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        return true;
    }
    std::env::var_os("LIBTORCH")
        .map(PathBuf::from)
        .is_some_and(|dir| dir.join("lib").is_dir())
}

/// One line for the summary.
pub fn summary(o: &EdgeOutcome) -> String {
    format!(
        "aarch64 binary {:.1} MiB (static musl); masks bit-identical to x86: {} of {} ({} as .nii.gz files); \
         peak RSS under emulation {:.1} MiB (limit: address space {} MiB); bad inputs with the host's errors: {}; \
         watch daemon end to end: {}; serve as a DICOM node (host storescu → board → host PACS): {} ({:.1} s turnaround); status pin sequences as documented and as on the host: {}; \
         embedded default model: {}; cross build {:.1} s, comparison {:.1} s",
        o.binary_bytes as f64 / (1024.0 * 1024.0),
        o.masks_identical,
        o.masks_compared,
        o.mask_files_identical,
        o.peak_rss_kib as f64 / 1024.0,
        MEMORY_LIMIT_BYTES / (1024 * 1024),
        o.bad_inputs,
        if o.watch_ok { "ok" } else { "FAILED" },
        if o.serve_ok { "ok" } else { "FAILED" },
        o.serve_turnaround_s,
        o.pin_sequences,
        if o.embedded_model {
            "yes"
        } else {
            "none in this build"
        },
        o.build_seconds,
        o.test_seconds
    )
}
