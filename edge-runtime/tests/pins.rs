//! Status pin sequences with `embedded-hal-mock` pins, driven by the segmenter and by the
//! daemon: success, alert, failure (the sequences documented in `status.rs`).
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
