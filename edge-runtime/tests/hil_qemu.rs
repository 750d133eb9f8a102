//! Hardware-in-the-loop: the static aarch64 `strokeseg-edge` on an emulated board (qemu-user,
//! Cortex-A72) against this x86 build of the same source, on the same inputs.
//!
//! - segmenting phantom studies (fixture model fp32 and int8, the threshold rule, and the
//!   embedded default model when the binary has one): both exit 0, all outputs present and
//!   valid, the mask voxel-for-voxel identical to the host's (or Dice ≥ 0.999 and a printed
//!   reason: tract's aarch64 and x86 kernels could in principle round differently), the
//!   report's volume equal;
//! - every emulated run under an address-space limit (`prlimit --as`, 256 MiB by default) on
//!   the QEMU process, which includes QEMU's own 128 MiB translation cache, so the guest has
//!   less than that; peak RSS (QEMU included) measured with GNU time;
//! - the bad-input set: the same exit code and the same `error:` lines as on the host, no
//!   outputs;
//! - the watch daemon: a good and a bad study dropped into the inbox are processed end to end
//!   (`watch --once`), the outputs identical to the host's `segment`;
//! - the status pins (qemu-user has no GPIO chip, so the `log` pin backend): the logged pin
//!   levels of `segment` runs (success, alert, a bad study, a model that cannot be loaded)
//!   and of the daemon are the documented sequences, identical to the host's.
//! - `serve` as a DICOM node over loopback: a host-side dcmtk `storescu` pushes a 2-slice
//!   phantom study to the emulated node, a host-side dcmtk `storescp` is the PACS; the
//!   results pass `dciodvfy`, the SEG equals the board's mask, which equals the host's
//!   (needs dcmtk and dicom3tools, which `cargo xtask hil` installs).
//!
//! Run by `cargo xtask hil`, which builds the binary and sets:
//! - `STROKESEG_HIL_EDGE_AARCH64`: the aarch64 `strokeseg-edge` (`cargo xtask cross`);
//! - `STROKESEG_HIL_QEMU`: `qemu-aarch64` (`QEMU_CPU=cortex-a72` is set here: QEMU's default
//!   CPU advertises SVE, which tract then uses, about 15× slower emulated);
//! - `STROKESEG_HIL_MEMORY_LIMIT_BYTES` (optional): the address-space limit;
//! - `STROKESEG_HIL_FIGURES` (optional): a file the measured figures are appended to as
//!   `key=value` lines.
//!
//! Without `STROKESEG_HIL_EDGE_AARCH64` every test returns at once, so `cargo test` on a
//! machine without the cross toolchain stays green and fast.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use common::*;
use strokeseg_edge::report::{MASK_FILE, OUTPUT_FILES, REPORT_FILE, Report};
use strokeseg_io::NiftiVolumeReader;

/// Address-space limit of every emulated run unless `STROKESEG_HIL_MEMORY_LIMIT_BYTES` says
/// otherwise: the edge box's budget for one study.
const DEFAULT_MEMORY_LIMIT_BYTES: u64 = 256 * 1024 * 1024;
/// Dice floor when masks are not bit-identical.
const DICE_FLOOR: f64 = 0.999;

/// The emulated board.
struct Board {
    qemu: PathBuf,
    binary: PathBuf,
    limit_bytes: u64,
    figures: Option<PathBuf>,
}

/// One emulated run.
struct BoardRun {
    output: Output,
    peak_rss_kib: u64,
    seconds: f64,
}

impl Board {
    /// The board, or `None` (the test is skipped) when `cargo xtask hil` did not set it up.
    fn from_env() -> Option<Board> {
        let Some(binary) = std::env::var_os("STROKESEG_HIL_EDGE_AARCH64") else {
            eprintln!("skipped: STROKESEG_HIL_EDGE_AARCH64 is not set (run `cargo xtask hil`)");
            return None;
        };
        let qemu = std::env::var_os("STROKESEG_HIL_QEMU")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("qemu-aarch64"));
        let limit_bytes = std::env::var("STROKESEG_HIL_MEMORY_LIMIT_BYTES")
            .ok()
            .map(|v| {
                v.parse()
                    .expect("STROKESEG_HIL_MEMORY_LIMIT_BYTES is a number")
            })
            .unwrap_or(DEFAULT_MEMORY_LIMIT_BYTES);
        Some(Board {
            qemu,
            binary: PathBuf::from(binary),
            limit_bytes,
            figures: std::env::var_os("STROKESEG_HIL_FIGURES").map(PathBuf::from),
        })
    }

    /// `strokeseg-edge ARGS` on the board: GNU time (peak RSS) → prlimit (address space) →
    /// qemu-aarch64 → the binary.
    fn run(&self, args: &[&str]) -> BoardRun {
        let rss_file = tempfile::NamedTempFile::new().unwrap();
        let started = Instant::now();
        let output = Command::new("/usr/bin/time")
            .arg("-f")
            .arg("%M")
            .arg("-o")
            .arg(rss_file.path())
            .arg("prlimit")
            .arg(format!("--as={}", self.limit_bytes))
            .arg("--")
            .arg(&self.qemu)
            .arg(&self.binary)
            .args(args)
            .env("QEMU_CPU", "cortex-a72")
            // QEMU's glibc reserves a 64 MiB malloc arena per thread, and that address space
            // counts against the limit next to QEMU's 128 MiB translation cache: with two
            // threads the guest binary then fails to map, at random. One arena is plenty.
            .env("MALLOC_ARENA_MAX", "1")
            // The binary's default log filter, so logged pin levels are comparable.
            .env_remove("RUST_LOG")
            .output()
            .expect("run /usr/bin/time prlimit qemu-aarch64 strokeseg-edge");
        let seconds = started.elapsed().as_secs_f64();
        let rss = std::fs::read_to_string(rss_file.path()).unwrap_or_default();
        // GNU time writes "Command exited with non-zero status N" before the figure.
        let peak_rss_kib = rss
            .lines()
            .filter_map(|l| l.trim().parse::<u64>().ok())
            .next_back()
            .unwrap_or(0);
        self.figure("board_peak_rss_kib", peak_rss_kib);
        BoardRun {
            output,
            peak_rss_kib,
            seconds,
        }
    }

    /// Appends `key=value` to the figures file.
    fn figure(&self, key: &str, value: impl std::fmt::Display) {
        if let Some(path) = &self.figures {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap();
            writeln!(f, "{key}={value}").unwrap();
        }
    }
}

/// The `error:` lines of a run (the message; log lines carry timestamps).
fn error_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.starts_with("error:"))
        .map(str::to_owned)
        .collect()
}

/// Reads every slice of a mask as voxel values.
fn mask_voxels(path: &Path) -> Vec<f32> {
    let mut reader = NiftiVolumeReader::open(path).unwrap();
    let n = reader.info().slice_voxels();
    let nz = reader.n_slices();
    let mut all = vec![0f32; n * nz];
    for (z, chunk) in all.chunks_exact_mut(n).enumerate() {
        reader.read_slice_f32(z, chunk).unwrap();
    }
    all
}

/// Whether the board's mask equals the host's; when not, Dice ≥ [`DICE_FLOOR`] with the reason
/// printed. Returns whether they were identical.
fn compare_masks(board: &Board, what: &str, host_mask: &Path, board_mask: &Path) -> bool {
    let host_bytes = std::fs::read(host_mask).unwrap();
    let board_bytes = std::fs::read(board_mask).unwrap();
    let host = mask_voxels(host_mask);
    let emulated = mask_voxels(board_mask);
    assert_eq!(host.len(), emulated.len(), "{what}: mask sizes differ");
    assert!(
        emulated.iter().all(|&v| v == 0.0 || v == 1.0),
        "{what}: mask not binary"
    );
    let identical = host
        .iter()
        .zip(&emulated)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    board.figure("mask_compared", what);
    if identical {
        board.figure("mask_bit_identical", what);
        board.figure(
            "mask_file_identical",
            format!("{what}:{}", host_bytes == board_bytes),
        );
        return true;
    }
    let (mut inter, mut sum) = (0u64, 0u64);
    for (&a, &b) in host.iter().zip(&emulated) {
        inter += u64::from(a != 0.0 && b != 0.0);
        sum += u64::from(a != 0.0) + u64::from(b != 0.0);
    }
    let dice = if sum == 0 {
        1.0
    } else {
        2.0 * inter as f64 / sum as f64
    };
    let differing = host.iter().zip(&emulated).filter(|(a, b)| a != b).count();
    eprintln!(
        "{what}: aarch64 and x86 masks differ in {differing} voxels (Dice {dice:.6}); tract's \
         aarch64 (NEON) and x86 (AVX/FMA) kernels sum in different orders, so a logit at the \
         threshold can round to the other side"
    );
    board.figure("mask_dice_not_identical", format!("{what}:{dice}"));
    assert!(dice >= DICE_FLOOR, "{what}: Dice {dice} < {DICE_FLOOR}");
    false
}

fn report_of(out: &Path) -> Report {
    serde_json::from_slice(&std::fs::read(out.join(REPORT_FILE)).unwrap()).unwrap()
}

/// The report fields that must not depend on the machine.
fn assert_same_report(what: &str, host: &Report, board: &Report) {
    assert_eq!(
        host.lesion_volume_ml, board.lesion_volume_ml,
        "{what}: volume"
    );
    assert_eq!(host.lesion_voxels, board.lesion_voxels, "{what}: voxels");
    assert_eq!(
        host.per_slice_lesion_area_mm2, board.per_slice_lesion_area_mm2,
        "{what}: per-slice areas"
    );
    assert_eq!(host.dims, board.dims, "{what}: dims");
    assert_eq!(host.n_slices, board.n_slices, "{what}: slices");
    assert_eq!(host.components, board.components, "{what}: components");
    assert_eq!(
        host.non_finite_voxels, board.non_finite_voxels,
        "{what}: non-finite"
    );
    assert_eq!(host.alert, board.alert, "{what}: alert");
    assert_eq!(host.method, board.method, "{what}: method");
    assert_eq!(
        host.model.as_ref().map(|m| &m.sha256),
        board.model.as_ref().map(|m| &m.sha256),
        "{what}: model"
    );
}

/// Segments `case` with `extra` on the host and on the board into `dir/{host,board}-NAME`
/// and checks everything the two must agree on.
fn segment_both(board: &Board, dir: &Path, name: &str, case: &Path, extra: &[&str]) {
    let host_out = dir.join(format!("host-{name}"));
    let board_out = dir.join(format!("board-{name}"));
    let c = case.to_str().unwrap();
    let args = |out: &Path| {
        let mut a = vec!["segment", c, "--out"];
        a.push(out.to_str().unwrap());
        a.extend_from_slice(extra);
        a.into_iter().map(str::to_owned).collect::<Vec<String>>()
    };
    let host_args = args(&host_out);
    let host_refs: Vec<&str> = host_args.iter().map(String::as_str).collect();
    let t = Instant::now();
    let host = edge(&host_refs);
    let host_seconds = t.elapsed().as_secs_f64();
    assert!(host.status.success(), "host {name}: {}", text(&host));

    let board_args = args(&board_out);
    let board_refs: Vec<&str> = board_args.iter().map(String::as_str).collect();
    let run = board.run(&board_refs);
    assert!(
        run.output.status.success(),
        "board {name} ({}): {}",
        run.output.status,
        text(&run.output)
    );
    let mut files: Vec<String> = OUTPUT_FILES.iter().map(|s| (*s).to_owned()).collect();
    files.sort();
    assert_eq!(entries(&board_out), files, "{name}: board outputs");
    assert_eq!(entries(&host_out), files, "{name}: host outputs");
    let png = std::fs::read(board_out.join("overlay.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}: overlay");
    let (host_report, board_report) = (report_of(&host_out), report_of(&board_out));
    assert_same_report(name, &host_report, &board_report);
    compare_masks(
        board,
        name,
        &host_out.join(MASK_FILE),
        &board_out.join(MASK_FILE),
    );
    eprintln!(
        "{name}: {} slices, {:.2} mL, host {host_seconds:.1} s, board {:.1} s, board peak RSS {} KiB",
        board_report.n_slices, board_report.lesion_volume_ml, run.seconds, run.peak_rss_kib
    );
    board.figure("board_seconds", format!("{name}:{:.1}", run.seconds));
    board.figure("host_seconds", format!("{name}:{host_seconds:.1}"));
}

#[test]
fn board_segments_phantoms_like_the_host() {
    let Some(board) = Board::from_env() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let fp32 = fp32_model(dir.path());
    let int8 = int8_model(dir.path());
    // Two phantom cases: plain NIfTI with 3 slices, gzip with 4.
    let (case_a, _) = phantom_case(dir.path(), "case_a", &phantom_opts(31, 3), 0, false);
    let (case_b, _) = phantom_case(dir.path(), "case_b", &phantom_opts(44, 4), 0, true);
    for (case_name, case) in [("a", &case_a), ("b", &case_b)] {
        segment_both(
            &board,
            dir.path(),
            &format!("fp32-{case_name}"),
            case,
            &["--model", fp32.to_str().unwrap()],
        );
    }
    segment_both(
        &board,
        dir.path(),
        "int8-a",
        &case_a,
        &["--model", int8.to_str().unwrap()],
    );
    segment_both(
        &board,
        dir.path(),
        "threshold-b",
        &case_b,
        &["--method", "threshold"],
    );

    // The embedded default model, when this build has one (models/default/model.onnx).
    let info = board.run(&["info-model", "--json"]);
    if info.output.status.success() {
        segment_both(&board, dir.path(), "embedded-a", &case_a, &[]);
    } else {
        eprintln!(
            "no embedded default model in this build: {}",
            text(&info.output).trim()
        );
        board.figure("embedded_model", "absent");
    }
}

#[test]
fn board_refuses_bad_inputs_like_the_host() {
    let Some(board) = Board::from_env() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (case, _) = phantom_case(dir.path(), "case_1", &phantom_opts(31, 2), 0, false);
    let c = case.to_str().unwrap().to_owned();
    let model = fp32_model(dir.path());
    let m = model.to_str().unwrap().to_owned();
    let out = dir.path().join("out");
    let o = out.to_str().unwrap().to_owned();

    let check = |what: &str, args: &[&str]| {
        let host = edge(args);
        let run = board.run(args);
        let code = host.status.code();
        assert_ne!(
            code,
            Some(0),
            "{what}: the host accepted it: {}",
            text(&host)
        );
        assert_eq!(
            run.output.status.code(),
            code,
            "{what}: exit codes differ; board: {}",
            text(&run.output)
        );
        let (host_errors, board_errors) = (error_lines(&host), error_lines(&run.output));
        assert!(
            !host_errors.is_empty(),
            "{what}: no error line: {}",
            text(&host)
        );
        assert_eq!(host_errors, board_errors, "{what}: messages differ");
        assert!(
            !text(&run.output).contains("panicked"),
            "{what}: {}",
            text(&run.output)
        );
        assert!(
            entries(&out).is_empty(),
            "{what}: outputs left: {:?}",
            entries(&out)
        );
        board.figure("bad_input_same_error", what);
        eprintln!("{what}: exit {code:?}, {}", board_errors.join(" | "));
    };

    // Models.
    let good = std::fs::read(&model).unwrap();
    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(&truncated, &good[..good.len() / 3]).unwrap();
    check(
        "truncated model",
        &[
            "segment",
            &c,
            "--model",
            truncated.to_str().unwrap(),
            "--out",
            &o,
        ],
    );
    let garbage = dir.path().join("garbage.onnx");
    std::fs::write(&garbage, b"this is not a model at all").unwrap();
    check(
        "garbage model",
        &[
            "segment",
            &c,
            "--model",
            garbage.to_str().unwrap(),
            "--out",
            &o,
        ],
    );
    let missing_model = dir.path().join("nope.onnx");
    check(
        "missing model",
        &[
            "segment",
            &c,
            "--model",
            missing_model.to_str().unwrap(),
            "--out",
            &o,
        ],
    );

    // Studies, for both methods.
    let tmax = file_of(&case, "CT_Tmax");
    let bytes = std::fs::read(&tmax).unwrap();
    for method in ["model", "threshold"] {
        let mut args = vec![
            "segment",
            c.as_str(),
            "--method",
            method,
            "--out",
            o.as_str(),
        ];
        if method == "model" {
            args.extend_from_slice(&["--model", m.as_str()]);
        }
        std::fs::write(&tmax, &bytes[..bytes.len() - 1000]).unwrap();
        check(&format!("{method}: truncated Tmax"), &args);
        let mut absurd = bytes.clone();
        absurd[42..44].copy_from_slice(&30000u16.to_le_bytes());
        absurd[44..46].copy_from_slice(&30000u16.to_le_bytes());
        std::fs::write(&tmax, &absurd).unwrap();
        check(&format!("{method}: absurd dims"), &args);
        std::fs::write(&tmax, b"hello").unwrap();
        check(&format!("{method}: not NIfTI"), &args);
        let mut other = bytes.clone();
        let px = f32::from_le_bytes(other[80..84].try_into().unwrap());
        other[80..84].copy_from_slice(&(px * 1.5).to_le_bytes());
        std::fs::write(&tmax, &other).unwrap();
        check(&format!("{method}: grid mismatch"), &args);
        std::fs::remove_file(&tmax).unwrap();
        check(&format!("{method}: missing modality"), &args);
        std::fs::write(&tmax, &bytes).unwrap();
    }
    let nowhere = dir.path().join("no-such-study");
    check(
        "missing study folder",
        &[
            "segment",
            nowhere.to_str().unwrap(),
            "--method",
            "threshold",
            "--out",
            &o,
        ],
    );
    check("unknown flag", &["segment", &c, "--no-such-flag"]);

    // Status pins configured in a build without GPIO support (the emulated board has no GPIO
    // chip either): refused before anything is read.
    let pins = dir.path().join("pins.toml");
    std::fs::write(&pins, "[pins]\nchip = \"/dev/gpiochip0\"\nbusy = 17\n").unwrap();
    check(
        "pins without GPIO support",
        &[
            "segment",
            &c,
            "--method",
            "threshold",
            "--config",
            pins.to_str().unwrap(),
            "--out",
            &o,
        ],
    );
}

#[test]
fn board_drives_status_pins_like_the_host() {
    let Some(board) = Board::from_env() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (case, _) = phantom_case(dir.path(), "case_1", &phantom_opts(31, 3), 0, false);
    let (bad, _) = phantom_case(dir.path(), "bad", &phantom_opts(60, 2), 0, false);
    let cbf = file_of(&bad, "CT_CBF");
    let cbf_bytes = std::fs::read(&cbf).unwrap();
    std::fs::write(&cbf, &cbf_bytes[..cbf_bytes.len() / 2]).unwrap();
    let model = fp32_model(dir.path());
    let good_model = std::fs::read(&model).unwrap();
    let corrupt = dir.path().join("corrupt.onnx");
    std::fs::write(&corrupt, &good_model[..good_model.len() / 3]).unwrap();
    let config = log_pins_config(dir.path());

    let check = |what: &str, study: &Path, extra: &[&str], code: i32, expected: &[&str]| {
        let host_out = dir.path().join(format!("pins-host-{what}"));
        let board_out = dir.path().join(format!("pins-board-{what}"));
        let args = |out: &Path| -> Vec<String> {
            [
                "segment",
                study.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ]
            .iter()
            .chain(extra)
            .map(|s| (*s).to_owned())
            .collect()
        };
        let host_args = args(&host_out);
        let host = edge_json_log(&host_args.iter().map(String::as_str).collect::<Vec<_>>());
        let board_args = args(&board_out);
        let mut board_refs = vec!["--log-format", "json"];
        board_refs.extend(board_args.iter().map(String::as_str));
        let run = board.run(&board_refs);
        assert_eq!(
            host.status.code(),
            Some(code),
            "host {what}: {}",
            text(&host)
        );
        assert_eq!(
            run.output.status.code(),
            Some(code),
            "board {what}: {}",
            text(&run.output)
        );
        let (host_pins, board_pins) =
            (pin_sequence(&host.stderr), pin_sequence(&run.output.stderr));
        assert_eq!(host_pins, expected, "host {what}: {}", text(&host));
        assert_eq!(board_pins, host_pins, "board {what}: {}", text(&run.output));
        board.figure("pin_sequence_checked", format!("segment {what}"));
        eprintln!("{what}: pins {}", board_pins.join(" → "));
    };
    let m = model.to_str().unwrap();
    check(
        "success",
        &case,
        &["--model", m, "--alert-threshold-ml", "1e9"],
        0,
        PINS_SUCCESS,
    );
    check(
        "alert",
        &case,
        &["--method", "threshold", "--alert-threshold-ml", "0"],
        0,
        PINS_SUCCESS_ALERT,
    );
    check("bad study", &bad, &["--model", m], 3, PINS_FAILURE);
    check(
        "corrupt model",
        &case,
        &["--model", corrupt.to_str().unwrap()],
        5,
        PINS_FAILURE,
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn board_watch_daemon_processes_studies_end_to_end() {
    let Some(board) = Board::from_env() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = fp32_model(dir.path());
    let (good, _) = phantom_case(
        &dir.path().join("src"),
        "good",
        &phantom_opts(52, 3),
        0,
        false,
    );
    let (bad, _) = phantom_case(
        &dir.path().join("src"),
        "bad",
        &phantom_opts(60, 2),
        0,
        false,
    );
    let cbf = file_of(&bad, "CT_CBF");
    let cbf_bytes = std::fs::read(&cbf).unwrap();
    std::fs::write(&cbf, &cbf_bytes[..cbf_bytes.len() / 2]).unwrap();

    let root = dir.path().join("edge");
    let inbox = root.join("inbox");
    for (src, name) in [(&good, "study_good"), (&bad, "study_bad")] {
        copy_dir(src, &inbox.join(name));
        std::fs::write(inbox.join(name).join("READY"), b"").unwrap();
    }
    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "[watch]\nroot = {root:?}\npoll_interval_ms = 30\n\n[segment]\nmethod = \"model\"\nmodel = {model:?}\nalert_threshold_ml = 1e9\n\n[pins]\nbackend = \"log\"\n"
        ),
    )
    .unwrap();

    let run = board.run(&[
        "--log-format",
        "json",
        "watch",
        "--config",
        config.to_str().unwrap(),
        "--once",
    ]);
    assert!(run.output.status.success(), "watch: {}", text(&run.output));
    assert_eq!(entries(&inbox), Vec::<String>::new());
    assert_eq!(entries(&root.join("processing")), Vec::<String>::new());
    assert_eq!(entries(&root.join("done")), vec!["study_good"]);
    assert_eq!(entries(&root.join("failed")), vec!["study_bad"]);
    let reason = std::fs::read_to_string(root.join("failed/study_bad").join("error.txt")).unwrap();
    assert!(reason.contains("truncated"), "{reason}");
    let published = root.join("outbox/study_good");
    let mut files: Vec<String> = OUTPUT_FILES.iter().map(|s| (*s).to_owned()).collect();
    files.sort();
    assert_eq!(entries(&published), files);

    // The daemon's log: every line JSON, the good study claimed before the bad one finished.
    let log = String::from_utf8_lossy(&run.output.stderr).into_owned();
    let messages: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let claimed: Vec<&str> = messages
        .iter()
        .filter(|m| m["fields"]["message"] == "claimed")
        .filter_map(|m| m["fields"]["study"].as_str())
        .collect();
    let mut sorted_claims = claimed.clone();
    sorted_claims.sort_unstable();
    assert_eq!(sorted_claims, vec!["study_bad", "study_good"], "{log}");
    // The pins: study_bad fails, then study_good succeeds (claimed in name order).
    assert_eq!(
        pin_sequence(&run.output.stderr),
        PINS_DAEMON_BAD_THEN_GOOD,
        "{log}"
    );
    board.figure("pin_sequence_checked", "watch");

    // Same mask and volume as the host's `segment` of the same study.
    let host_out = dir.path().join("host-good");
    let host = edge(&[
        "segment",
        good.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--out",
        host_out.to_str().unwrap(),
    ]);
    assert!(host.status.success(), "{}", text(&host));
    let (h, b) = (report_of(&host_out), report_of(&published));
    assert_eq!(h.lesion_volume_ml, b.lesion_volume_ml);
    assert_eq!(h.lesion_voxels, b.lesion_voxels);
    compare_masks(
        &board,
        "watch-fp32",
        &host_out.join(MASK_FILE),
        &published.join(MASK_FILE),
    );
    board.figure("watch_end_to_end", "ok");
    eprintln!(
        "watch: 1 study published, 1 failed, board {:.1} s, peak RSS {} KiB",
        run.seconds, run.peak_rss_kib
    );
}

/// A process killed (SIGKILL) and reaped on drop.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
fn wait_listening(port: u16, what: &str, timeout: std::time::Duration) {
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Peak resident set size of process `pid` so far (`VmHWM`), KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// `strokeseg-edge serve` on the board as a DICOM node over loopback: a host-side dcmtk
/// `storescu` pushes a 2-slice phantom study (CT + four maps, written by strokeseg-dicom)
/// to the emulated node, a host-side dcmtk `storescp` plays the PACS; the Segmentation,
/// the overlay series and the report arrive, pass dicom3tools' `dciodvfy`, the SEG's
/// frames equal the board's NIfTI mask, and that mask equals the host's `segment` of the
/// case folder the board made from the instances. The node runs under the same
/// address-space limit as every emulated run; its peak RSS (QEMU included) and the
/// turnaround (last instance acknowledged → all results at the PACS, `idle_seconds = 1`)
/// go into the figures.
#[test]
fn board_serves_dicom_from_a_host_storescu_to_a_host_pacs() {
    use std::process::Stdio;
    use std::time::Duration;

    use dicom_dictionary_std::tags;
    use strokeseg_dicom::derived::{SEGMENTATION_SOP_CLASS_UID, unpack_bits};
    use strokeseg_dicom::scu::file_sop_uids;
    use strokeseg_dicom::testing::{free_port, tool};
    use strokeseg_dicom::write::{
        PhantomSeriesOptions, phantom_dataset_options, write_phantom_study,
    };

    let Some(board) = Board::from_env() else {
        return;
    };
    let test = "board_serves_dicom_from_a_host_storescu_to_a_host_pacs";
    let (Some(storescu), Some(storescp), Some(dciodvfy)) = (
        tool("storescu", test),
        tool("storescp", test),
        tool("dciodvfy", test),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let case = strokeseg_phantom::generate_case(13, 0, &phantom_dataset_options(2)).unwrap();
    let written = write_phantom_study(
        &case,
        &dir.path().join("scanner"),
        &PhantomSeriesOptions {
            study_key: "hil-serve".into(),
            ..PhantomSeriesOptions::default()
        },
    )
    .unwrap();
    let files: Vec<PathBuf> = written.files().cloned().collect();

    // The PACS on the host.
    let pacs_dir = dir.path().join("pacs");
    std::fs::create_dir_all(&pacs_dir).unwrap();
    let pacs_port = free_port();
    let _pacs = KillOnDrop(
        Command::new(&storescp)
            .env("TCP_NODELAY", "1")
            .args(["-aet", "PACS", "-od"])
            .arg(&pacs_dir)
            .arg(pacs_port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(pacs_port, "storescp", Duration::from_secs(20));

    // The node on the board.
    let model = fp32_model(dir.path());
    let root = dir.path().join("node");
    let port = free_port();
    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "[watch]\nroot = {root:?}\npoll_interval_ms = 50\n\n\
             [segment]\nmethod = \"model\"\nmodel = {model:?}\n\n\
             [dicom]\nae_title = \"STROKESEG\"\nlisten_address = \"127.0.0.1\"\nport = {port}\n\
             allowed_calling_ae_titles = [\"HIL_CT\"]\nidle_seconds = 1\n\
             retry_base_seconds = 1\nretry_max_seconds = 2\n\n\
             [dicom.destination]\nae_title = \"PACS\"\nhost = \"127.0.0.1\"\nport = {pacs_port}\n"
        ),
    )
    .unwrap();
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    // prlimit execs the emulator, so the child's pid is QEMU's (for its VmHWM).
    let node = KillOnDrop(
        Command::new("prlimit")
            .arg(format!("--as={}", board.limit_bytes))
            .arg("--")
            .arg(&board.qemu)
            .arg(&board.binary)
            .args(["serve", "--config"])
            .arg(&config)
            .env("QEMU_CPU", "cortex-a72")
            .env("MALLOC_ARENA_MAX", "1")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_listening(port, "serve on the board", Duration::from_secs(60));

    let push = Command::new(&storescu)
        .env("TCP_NODELAY", "1")
        .args(["-aet", "HIL_CT", "-aec", "STROKESEG", "127.0.0.1"])
        .arg(port.to_string())
        .args(&files)
        .output()
        .unwrap();
    assert!(
        push.status.success(),
        "storescu to the board: {}{}\n{}",
        String::from_utf8_lossy(&push.stdout),
        String::from_utf8_lossy(&push.stderr),
        log_text()
    );
    let pushed = Instant::now();
    // SEG + one overlay image per slice + SR.
    let expected = 2 + case.n_slices();
    let deadline = pushed + Duration::from_secs(120);
    let received = loop {
        let mut got: Vec<PathBuf> = std::fs::read_dir(&pacs_dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        got.sort();
        if got.len() >= expected || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let turnaround_s = pushed.elapsed().as_secs_f64();
    let peak_rss_kib = vm_hwm_kib(node.0.id());
    assert_eq!(
        received.len(),
        expected,
        "results at the PACS: {received:?}\n{}",
        log_text()
    );
    drop(node);

    for p in &received {
        let out = Command::new(&dciodvfy).arg(p).output().unwrap();
        let errors: Vec<String> = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .lines()
        .filter(|l| l.starts_with("Error"))
        .map(str::to_owned)
        .collect();
        assert!(
            errors.is_empty(),
            "dciodvfy {}:\n{}",
            p.display(),
            errors.join("\n")
        );
    }
    let seg = received
        .iter()
        .find(|p| file_sop_uids(p).is_ok_and(|(class, _)| class == SEGMENTATION_SOP_CLASS_UID))
        .expect("a SEG at the PACS");
    let outputs = entries(&root.join("outbox"));
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    let board_mask = root.join("outbox").join(&outputs[0]).join(MASK_FILE);
    let mask: Vec<u8> = mask_voxels(&board_mask)
        .iter()
        .map(|&v| u8::from(v > 0.5))
        .collect();
    let obj = dicom_object::open_file(seg).unwrap();
    let bits = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    assert_eq!(
        unpack_bits(&bits, mask.len()),
        mask,
        "SEG frames = board mask"
    );

    // The host segments the case folder the board made from the instances.
    let done = entries(&root.join("done"));
    assert_eq!(done.len(), 1, "{done:?}\n{}", log_text());
    let case_dir = root
        .join("done")
        .join(&done[0])
        .join(strokeseg_edge::serve::CASE_DIR);
    let host_out = dir.path().join("host-serve");
    let host = edge(&[
        "segment",
        case_dir.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--out",
        host_out.to_str().unwrap(),
    ]);
    assert!(host.status.success(), "{}", text(&host));
    compare_masks(&board, "serve-fp32", &host_out.join(MASK_FILE), &board_mask);

    board.figure("board_peak_rss_kib", peak_rss_kib);
    board.figure("serve_peak_rss_kib", peak_rss_kib);
    board.figure("serve_turnaround_s", format!("{turnaround_s:.1}"));
    board.figure("serve_end_to_end", "ok");
    eprintln!(
        "serve on the board: {} instances in, {expected} results at the host PACS {turnaround_s:.1} s \
         after the last was acknowledged (idle_seconds 1), peak RSS {peak_rss_kib} KiB (QEMU included)",
        files.len()
    );
}

/// Raw little-endian f32 values of `path`.
fn f32_file(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// `bench` of the shipped fp32 and int8 models on the board as a Cortex-A72 (no dot product,
/// no f16) and a Cortex-A76 (dot product): which tract kernels the plan selects (NEON f32
/// everywhere, the int8 SDOT kernel on the A76 only) and the logits of the host's prepared
/// phantom slice (`--dump-input`, `--input`) against the host's, within 1e-3. Emulated
/// timings mean nothing and are not looked at; the kernel names go to the figures file.
#[test]
fn board_bench_selects_arm_kernels_and_matches_the_host() {
    let Some(board) = Board::from_env() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default");
    for name in ["model.onnx", "model.int8.onnx"] {
        let model = models.join(name);
        if !model.is_file() {
            eprintln!("skipped {name}: not in models/default");
            continue;
        }
        let int8 = name.contains("int8");
        let input = dir.path().join(format!("{name}.input.f32"));
        let host_logits = dir.path().join(format!("{name}.host.f32"));
        let model_s = model.to_str().unwrap();
        let o = edge(&[
            "bench",
            "--model",
            model_s,
            "--threads",
            "1",
            "--reps",
            "1",
            "--warmup",
            "0",
            "--dump-input",
            input.to_str().unwrap(),
            "--dump-output",
            host_logits.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "host bench {name}: {}", text(&o));
        let host = f32_file(&host_logits);
        for (cpu, dotprod) in [("cortex-a72", false), ("cortex-a76", true)] {
            let logits = dir.path().join(format!("{name}.{cpu}.f32"));
            let o = Command::new(&board.qemu)
                .arg(&board.binary)
                .args(["bench", "--model", model_s, "--threads", "1", "--reps", "1"])
                .args([
                    "--warmup",
                    "0",
                    "--json",
                    "--input",
                    input.to_str().unwrap(),
                ])
                .arg("--dump-output")
                .arg(&logits)
                .env("QEMU_CPU", cpu)
                .env("MALLOC_ARENA_MAX", "1")
                .output()
                .unwrap();
            assert!(o.status.success(), "{cpu} bench {name}: {}", text(&o));
            let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let kernels: Vec<String> = r["plan"]["kernels"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            let isa: Vec<&str> = r["cpu"]["isa"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|v| v.as_str())
                .collect();
            board.figure(&format!("bench_{cpu}_{name}_kernels"), kernels.join(" "));
            board.figure(&format!("bench_{cpu}_isa"), isa.join(" "));
            assert!(
                kernels.iter().all(|k| k.starts_with("arm64simd_")),
                "{cpu} {name}: {kernels:?}"
            );
            assert_eq!(isa.contains(&"dotprod"), dotprod, "{cpu}: {isa:?}");
            if int8 {
                let sdot = "arm64simd_mmm_i32_8x8_dot".to_owned();
                assert_eq!(
                    kernels.contains(&sdot),
                    dotprod,
                    "{cpu} {name}: {kernels:?}"
                );
            }
            let board_logits = f32_file(&logits);
            assert_eq!(board_logits.len(), host.len());
            let max_diff = host
                .iter()
                .zip(&board_logits)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            board.figure(&format!("bench_{cpu}_{name}_max_abs_diff"), max_diff);
            assert!(
                max_diff <= 1e-3,
                "{cpu} {name}: logits differ by {max_diff}"
            );
        }
    }
}
