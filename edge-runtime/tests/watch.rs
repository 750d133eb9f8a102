//! The watch daemon under crashes: studies (some bad) are dropped into the inbox, the
//! daemon is killed with SIGKILL at timed points and at every crash point of a study's life
//! (after the claim, before and after publishing), restarted each time, and in the end every
//! good study has exactly one complete output set and is in `done/`, every bad one is in
//! `failed/` with a reason, and nothing is left half-written. Also: SIGTERM lets the daemon
//! stop cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use strokeseg_edge::report::{OUTPUT_FILES, REPORT_FILE, Report};

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

/// Drops `study` into the inbox as `name` the way a sender should: copy under a hidden
/// name, rename, then write the marker.
fn drop_study(root: &Path, study: &Path, name: &str) {
    let inbox = root.join("inbox");
    let hidden = inbox.join(format!(".incoming-{name}"));
    copy_dir(study, &hidden);
    std::fs::rename(&hidden, inbox.join(name)).unwrap();
    std::fs::write(inbox.join(name).join("READY"), b"").unwrap();
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
    good: Vec<String>,
    bad: Vec<String>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let root = dir.path().join("edge");
    std::fs::create_dir_all(root.join("inbox")).unwrap();
    let model = fp32_model(dir.path());
    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "[watch]\nroot = {root:?}\npoll_interval_ms = 30\n\n[segment]\nmethod = \"model\"\nmodel = {model:?}\n"
        ),
    )
    .unwrap();

    let mut good = Vec::new();
    for (i, slices) in [2usize, 3, 4, 2, 3].into_iter().enumerate() {
        let (case, _) = phantom_case(
            &src,
            &format!("g{i}"),
            &phantom_opts(50 + i as u64, slices),
            0,
            i % 2 == 0,
        );
        let name = format!("study_good_{i}");
        drop_study(&root, &case, &name);
        good.push(name);
    }
    // Bad: a truncated map, a missing modality, a folder without images.
    let (case, _) = phantom_case(&src, "b0", &phantom_opts(60, 2), 0, false);
    let cbf = file_of(&case, "CT_CBF");
    let bytes = std::fs::read(&cbf).unwrap();
    std::fs::write(&cbf, &bytes[..bytes.len() / 2]).unwrap();
    drop_study(&root, &case, "study_bad_truncated");
    let (case, _) = phantom_case(&src, "b1", &phantom_opts(61, 2), 0, false);
    std::fs::remove_dir_all(file_of(&case, "CT").parent().unwrap()).unwrap();
    drop_study(&root, &case, "study_bad_missing_ct");
    let empty = src.join("b2");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), b"no images here").unwrap();
    drop_study(&root, &empty, "study_bad_empty");
    let bad = vec![
        "study_bad_empty".to_owned(),
        "study_bad_missing_ct".to_owned(),
        "study_bad_truncated".to_owned(),
    ];
    Fixture {
        _dir: dir,
        root,
        config,
        good,
        bad,
    }
}

/// Starts the daemon with its JSON log appended to `root/../daemon.log` (a file, so a
/// long-running daemon never blocks on a full pipe).
fn daemon(f: &Fixture, failpoint: Option<&str>, once: bool) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(f))
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strokeseg-edge"));
    cmd.args(["--log-format", "json", "watch", "--config"])
        .arg(&f.config)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    if once {
        cmd.arg("--once");
    }
    match failpoint {
        Some(p) => cmd.env(strokeseg_edge::watch::FAILPOINT_ENV, p),
        None => cmd.env_remove(strokeseg_edge::watch::FAILPOINT_ENV),
    };
    cmd.spawn().unwrap()
}

fn log_path(f: &Fixture) -> PathBuf {
    f.root.with_file_name("daemon.log")
}

fn log_of(f: &Fixture) -> String {
    std::fs::read_to_string(log_path(f)).unwrap_or_default()
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(t.elapsed() < limit, "daemon did not exit in {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn check_final_state(f: &Fixture) {
    let root = &f.root;
    assert_eq!(entries(&root.join("inbox")), Vec::<String>::new());
    assert_eq!(entries(&root.join("processing")), Vec::<String>::new());
    // Exactly one complete output set per good study, nothing else (no staging, no dupes).
    assert_eq!(entries(&root.join("outbox")), f.good);
    for name in &f.good {
        let out = root.join("outbox").join(name);
        let mut files: Vec<String> = OUTPUT_FILES.iter().map(|s| (*s).to_owned()).collect();
        files.sort();
        assert_eq!(entries(&out), files, "{name}");
        let r: Report =
            serde_json::from_slice(&std::fs::read(out.join(REPORT_FILE)).unwrap()).unwrap();
        assert_eq!(&r.case, name);
        assert!(r.n_slices >= 2);
    }
    assert_eq!(entries(&root.join("done")), f.good);
    assert_eq!(entries(&root.join("failed")), f.bad);
    for name in &f.bad {
        let reason =
            std::fs::read_to_string(root.join("failed").join(name).join("error.txt")).unwrap();
        assert!(reason.contains("error: "), "{reason}");
        assert!(reason.contains("exit_code: 3"), "{reason}");
    }
    let truncated =
        std::fs::read_to_string(root.join("failed/study_bad_truncated/error.txt")).unwrap();
    assert!(truncated.contains("truncated"), "{truncated}");
    let missing =
        std::fs::read_to_string(root.join("failed/study_bad_missing_ct/error.txt")).unwrap();
    assert!(missing.contains("missing modality CT"), "{missing}");
}

#[test]
fn sigkill_at_every_crash_point_then_restart_publishes_each_study_once() {
    let f = fixture();
    // Deterministic crash points in a study's life: each run aborts (as if killed) at its
    // point for the first study that reaches it.
    for point in [
        "after_claim",
        "before_publish",
        "after_publish",
        "after_claim",
        "after_publish",
    ] {
        let mut d = daemon(&f, Some(point), true);
        let status = wait_exit(&mut d, Duration::from_secs(120));
        assert!(!status.success(), "{point}: daemon should have aborted");
    }
    // Timed SIGKILLs at arbitrary moments.
    for ms in [80u64, 250, 500, 900, 150] {
        let mut d = daemon(&f, None, false);
        std::thread::sleep(Duration::from_millis(ms));
        d.kill().unwrap();
        d.wait().unwrap();
    }
    // Restart and let it finish everything.
    let mut d = daemon(&f, None, true);
    let status = wait_exit(&mut d, Duration::from_secs(300));
    let log = log_of(&f);
    assert!(status.success(), "{log}");
    check_final_state(&f);
    // Every crash point was hit, and a study published before a crash was only archived.
    for point in ["after_claim", "before_publish", "after_publish"] {
        assert!(
            log.contains(&format!("\"failpoint\":\"{point}\"")),
            "{point}: {log}"
        );
    }
    assert!(log.contains("already published before a restart"), "{log}");
    assert!(log.contains("resuming study left in processing"), "{log}");
    assert!(
        log.lines().all(|l| l.is_empty() || l.starts_with('{')),
        "json log lines only: {log}"
    );

    // Another restart changes nothing.
    let mut d = daemon(&f, None, true);
    assert!(wait_exit(&mut d, Duration::from_secs(60)).success());
    check_final_state(&f);
}

#[test]
fn sigterm_stops_the_daemon_cleanly() {
    let f = fixture();
    let mut d = daemon(&f, None, false);
    std::thread::sleep(Duration::from_millis(700));
    let pid = d.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = wait_exit(&mut d, Duration::from_secs(120));
    assert!(status.success(), "exit after SIGTERM: {status:?}");
    assert!(log_of(&f).contains("signal received"), "{}", log_of(&f));
    // Whatever was in flight was finished: nothing in processing/, no staging left, every
    // published study complete and archived.
    let root = &f.root;
    assert!(entries(&root.join("processing")).is_empty());
    for name in entries(&root.join("outbox")) {
        assert!(!name.starts_with('.'), "staging left: {name}");
        assert!(root.join("outbox").join(&name).join(REPORT_FILE).is_file());
        assert!(root.join("done").join(&name).is_dir());
    }
    // A restart finishes the rest.
    let mut d = daemon(&f, None, true);
    assert!(wait_exit(&mut d, Duration::from_secs(300)).success());
    check_final_state(&f);
}

#[test]
fn without_marker_a_study_is_ready_only_after_settling() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("edge");
    let (case, _) = phantom_case(dir.path(), "src", &phantom_opts(70, 2), 0, false);
    copy_dir(&case, &root.join("inbox").join("no_marker"));
    let run = |settle: &str| {
        let o = edge(&[
            "watch",
            "--root",
            root.to_str().unwrap(),
            "--method",
            "threshold",
            "--settle-seconds",
            settle,
            "--poll-ms",
            "20",
            "--once",
        ]);
        assert!(o.status.success(), "{}", text(&o));
    };
    // No marker and no settle rule: left alone.
    run("0");
    assert_eq!(entries(&root.join("inbox")), vec!["no_marker"]);
    assert!(entries(&root.join("outbox")).is_empty());
    // Unchanged for a second: ready.
    std::thread::sleep(Duration::from_millis(1100));
    run("1");
    assert!(entries(&root.join("inbox")).is_empty());
    assert_eq!(entries(&root.join("outbox")), vec!["no_marker"]);
    assert_eq!(entries(&root.join("done")), vec!["no_marker"]);
}
