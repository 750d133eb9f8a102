//! Status pin sequences (documented in `status.rs`): with `embedded-hal-mock` pins driven
//! by the segmenter and by the daemon (success, alert, failure), and through the binary with
//! the `log` pin backend, whose logged levels `tests/hil_qemu.rs` also checks on the
//! emulated board (success, alert, bad study, a model that cannot be loaded).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::*;
use embedded_hal_mock::eh1::digital::{Mock, State, Transaction as T};
use strokeseg_edge::config::WatchDirs;
use strokeseg_edge::report::Method;
use strokeseg_edge::segment::{SegmentOptions, segment_to_dir_with_status};
use strokeseg_edge::status::StatusPins;
use strokeseg_edge::watch::{Shutdown, WatchSettings, Watcher};

const L: State = State::Low;
const H: State = State::High;

/// Four mock pins expecting the given states (busy, done, alert, fault), and clones of them
/// to check afterwards.
fn pins(expect: [&[State]; 4]) -> (StatusPins<Mock>, [Mock; 4]) {
    let mocks =
        expect.map(|states| Mock::new(&states.iter().map(|&s| T::set(s)).collect::<Vec<_>>()));
    let [b, d, a, f] = mocks.clone();
    (StatusPins::new(Some(b), Some(d), Some(a), Some(f)), mocks)
}

fn done(mocks: [Mock; 4]) {
    for mut m in mocks {
        m.done();
    }
}

fn options(alert_threshold_ml: f64) -> SegmentOptions {
    SegmentOptions {
        alert_threshold_ml,
        ..SegmentOptions::default()
    }
}

fn segment(case: &Path, out: &Path, alert_ml: f64, status: &mut StatusPins<Mock>) -> bool {
    segment_to_dir_with_status(
        case,
        Method::Threshold,
        None,
        &options(alert_ml),
        out,
        &AtomicBool::new(false),
        status,
    )
    .is_ok()
}

#[test]
fn segmenter_drives_success_alert_and_fault() {
    let dir = tempfile::tempdir().unwrap();
    let (case, _) = phantom_case(dir.path(), "case_1", &phantom_opts(41, 4), 0, false);
    let out = dir.path().join("out");

    // Success without alert: start (done, alert, fault low; busy high), then alert low,
    // done high, busy low.
    let (mut p, m) = pins([&[H, L], &[L, H], &[L, L], &[L]]);
    assert!(segment(&case, &out, 1e9, &mut p));
    done(m);

    // Success with alert (threshold 0 mL: any volume alerts).
    let (mut p, m) = pins([&[H, L], &[L, H], &[L, H], &[L]]);
    assert!(segment(&case, &out, 0.0, &mut p));
    done(m);

    // Failure: start, then fault high, busy low.
    let (mut p, m) = pins([&[H, L], &[L], &[L], &[L, H]]);
    assert!(!segment(&dir.path().join("missing"), &out, 70.0, &mut p));
    done(m);
}

fn watch_once(root: &Path, alert_ml: f64, status: StatusPins<Mock>) {
    let dirs = WatchDirs {
        inbox: root.join("inbox"),
        processing: root.join("processing"),
        done: root.join("done"),
        failed: root.join("failed"),
        outbox: root.join("outbox"),
    };
    let settings = WatchSettings {
        dirs,
        ready_marker: "READY".into(),
        settle: Duration::ZERO,
        poll_interval: Duration::from_millis(10),
        method: Method::Threshold,
        options: options(alert_ml),
        once: true,
    };
    let mut w = Watcher::new(settings, None, Box::new(status), Shutdown::default()).unwrap();
    w.run().unwrap();
}

#[test]
fn daemon_drives_reset_success_alert_and_fault() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let opts = phantom_opts(42, 3);

    // Reset (all low), then a good study without alert.
    let (case, _) = phantom_case(&inbox, "a_good", &opts, 0, false);
    std::fs::write(case.join("READY"), b"").unwrap();
    let (p, m) = pins([&[L, H, L], &[L, L, H], &[L, L, L], &[L, L]]);
    watch_once(dir.path(), 1e9, p);
    done(m);

    // A good study with alert.
    let (case, _) = phantom_case(&inbox, "b_alert", &opts, 0, false);
    std::fs::write(case.join("READY"), b"").unwrap();
    let (p, m) = pins([&[L, H, L], &[L, L, H], &[L, L, H], &[L, L]]);
    watch_once(dir.path(), 0.0, p);
    done(m);

    // A bad study (no images): fault.
    let bad = inbox.join("c_bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("READY"), b"").unwrap();
    let (p, m) = pins([&[L, H, L], &[L, L], &[L, L], &[L, L, H]]);
    watch_once(dir.path(), 70.0, p);
    done(m);
    assert!(dir.path().join("failed/c_bad/error.txt").is_file());
    assert_eq!(
        entries(&dir.path().join("outbox")),
        vec!["a_good", "b_alert"]
    );
}

/// `segment CASE --config <log pins> --out OUT ARGS` with JSON logs: exit code and pin
/// levels.
fn segment_logged(dir: &Path, case: &Path, args: &[&str]) -> (Option<i32>, Vec<String>) {
    let config = log_pins_config(dir);
    let out = dir.join("out-logged");
    let mut all = vec![
        "segment",
        case.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let o = edge_json_log(&all);
    (o.status.code(), pin_sequence(&o.stderr))
}

#[test]
fn log_backend_logs_the_segment_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let (case, _) = phantom_case(dir.path(), "case_1", &phantom_opts(41, 3), 0, false);
    let model = fp32_model(dir.path());
    let m = model.to_str().unwrap();
    let threshold = ["--method", "threshold"];

    let never = ["--method", "threshold", "--alert-threshold-ml", "1e9"];
    assert_eq!(
        segment_logged(dir.path(), &case, &never),
        (Some(0), owned(PINS_SUCCESS))
    );
    let always = ["--method", "threshold", "--alert-threshold-ml", "0"];
    assert_eq!(
        segment_logged(dir.path(), &case, &always),
        (Some(0), owned(PINS_SUCCESS_ALERT))
    );
    assert_eq!(
        segment_logged(
            dir.path(),
            &case,
            &["--model", m, "--alert-threshold-ml", "1e9"]
        ),
        (Some(0), owned(PINS_SUCCESS))
    );

    // A bad study.
    assert_eq!(
        segment_logged(dir.path(), &dir.path().join("missing"), &threshold),
        (Some(3), owned(PINS_FAILURE))
    );

    // A model that cannot be loaded raises the fault pin like a bad study.
    let good = std::fs::read(&model).unwrap();
    let corrupt = dir.path().join("corrupt.onnx");
    std::fs::write(&corrupt, &good[..good.len() / 3]).unwrap();
    assert_eq!(
        segment_logged(dir.path(), &case, &["--model", corrupt.to_str().unwrap()]),
        (Some(5), owned(PINS_FAILURE))
    );
    let missing = dir.path().join("nope.onnx");
    assert_eq!(
        segment_logged(dir.path(), &case, &["--model", missing.to_str().unwrap()]),
        (Some(5), owned(PINS_FAILURE))
    );
}

#[test]
fn log_backend_lines_are_shown_by_default_in_human_logs() {
    let dir = tempfile::tempdir().unwrap();
    let config = log_pins_config(dir.path());
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_strokeseg-edge"))
        .args(["segment", "nowhere", "--method", "threshold", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(dir.path().join("out"))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let log = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("strokeseg_edge::pins"))
        .collect();
    assert_eq!(lines.len(), 3, "{log}");
    assert!(lines[0].contains("pin=busy level=high"), "{log}");
    assert!(lines[1].contains("pin=fault level=high"), "{log}");
    assert!(lines[2].contains("pin=busy level=low"), "{log}");
}

fn owned(seq: &[&str]) -> Vec<String> {
    seq.iter().map(|s| (*s).to_owned()).collect()
}

/// Writes a watch config over `root` with the log pin backend and `segment_lines`.
fn watch_config(dir: &Path, root: &Path, segment_lines: &str) -> std::path::PathBuf {
    let p = dir.join("watch-log.toml");
    std::fs::write(
        &p,
        format!(
            "[watch]\nroot = {root:?}\npoll_interval_ms = 30\n\n[segment]\n{segment_lines}\n\n[pins]\nbackend = \"log\"\n"
        ),
    )
    .unwrap();
    p
}

#[test]
fn log_backend_logs_the_daemon_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("edge");
    let inbox = root.join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();

    // A bad study, then a good one (claimed in name order).
    std::fs::create_dir_all(inbox.join("a_bad")).unwrap();
    std::fs::write(inbox.join("a_bad/READY"), b"").unwrap();
    let (good, _) = phantom_case(&inbox, "b_good", &phantom_opts(42, 3), 0, false);
    std::fs::write(good.join("READY"), b"").unwrap();
    let config = watch_config(
        dir.path(),
        &root,
        "method = \"threshold\"\nalert_threshold_ml = 1e9",
    );
    let o = edge_json_log(&["watch", "--config", config.to_str().unwrap(), "--once"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        pin_sequence(&o.stderr),
        owned(PINS_DAEMON_BAD_THEN_GOOD),
        "{}",
        text(&o)
    );
    assert_eq!(entries(&root.join("failed")), vec!["a_bad"]);
    assert_eq!(entries(&root.join("done")), vec!["b_good"]);

    // A daemon whose model cannot be loaded does not start, and says so on the fault pin.
    let corrupt = dir.path().join("corrupt.onnx");
    std::fs::write(&corrupt, b"not a model").unwrap();
    let config = watch_config(
        dir.path(),
        &root,
        &format!("method = \"model\"\nmodel = {corrupt:?}"),
    );
    let o = edge_json_log(&["watch", "--config", config.to_str().unwrap(), "--once"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert_eq!(pin_sequence(&o.stderr), vec!["fault=high"], "{}", text(&o));
}
