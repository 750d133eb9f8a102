//! `strokeseg-edge watch`: the inbox daemon.
//!
//! A study is a folder dropped into `inbox/`. It is *ready* when a marker file (`READY` by
//! default) exists in it, or, when `settle_seconds > 0`, when nothing in it has changed for
//! that long. Folders whose names start with `.` are ignored (copy into `inbox/.name` and
//! rename, or write the marker last).
//!
//! The life of a study, each step an atomic rename on one file system:
//!
//! 1. claim: `inbox/S` → `processing/S` (renamed `S.1`, `S.2`, … if `S` was seen before);
//! 2. segment into `outbox/.staging-S/`;
//! 3. publish: `outbox/.staging-S/` → `outbox/S/` (mask, report, overlay at once);
//! 4. archive: `processing/S` → `done/S`.
//!
//! A study that fails gets `error.txt` (the error and its exit-code class) and moves to
//! `failed/S`; the fault pin goes high. When outputs cannot be written (disk full,
//! permissions: the box's fault, not the study's) the study stays in `processing/` and the
//! daemon stops with exit code 6, so it is retried on the next start. On start, everything left in `processing/` is
//! finished first: a study whose `outbox/S/report.json` exists was published before the
//! crash and is only archived (never published twice); a study with `error.txt` moves to
//! `failed/`; any other is segmented again (stale staging folders are removed).
//!
//! Signals (SIGTERM, SIGINT): the first one lets the current study finish and then stops;
//! a second one interrupts it at the next slice and rolls it back (`processing/S` →
//! `inbox/S`, staging removed), so it is processed again on the next start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use strokeseg_io::atomic::write_atomically;

use crate::EdgeError;
use crate::config::WatchDirs;
use crate::report::{Method, REPORT_FILE, Report};
use crate::segment::{SegmentOptions, SliceObserver, StagingDir, segment_study_observed};
use crate::segmenter::Segmenter;
use crate::status::StatusSink;

/// Name of the error file written into a failed study.
pub const ERROR_FILE: &str = "error.txt";
/// Environment variable naming a crash point for tests (`after_claim`, `before_publish`,
/// `after_publish`): the daemon aborts there, as if killed. Never set it in production.
pub const FAILPOINT_ENV: &str = "STROKESEG_EDGE_FAILPOINT";

/// What the daemon needs besides its folders.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// The five folders.
    pub dirs: WatchDirs,
    /// Marker file name.
    pub ready_marker: String,
    /// Ready without marker after this long unchanged; zero disables.
    pub settle: Duration,
    /// Scan interval.
    pub poll_interval: Duration,
    /// Model or threshold.
    pub method: Method,
    /// Alert threshold and rule settings.
    pub options: SegmentOptions,
    /// Process what is ready (and what `processing/` holds), then exit.
    pub once: bool,
}

/// How a run of the daemon ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchSummary {
    /// Studies published.
    pub succeeded: usize,
    /// Studies moved to `failed/`.
    pub failed: usize,
    /// Studies found already published after a restart and only archived.
    pub recovered: usize,
    /// Studies rolled back to the inbox by a second signal.
    pub rolled_back: usize,
}

/// Signals received, shared with the signal thread; the second one sets `cancel`.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    signals: Arc<AtomicUsize>,
    cancel: Arc<AtomicBool>,
}

impl Shutdown {
    /// Counts SIGTERM and SIGINT from now on (a background thread).
    pub fn install() -> Result<Shutdown, EdgeError> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let s = Shutdown::default();
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).map_err(|e| {
            EdgeError::Settings {
                path: PathBuf::from("signal handlers"),
                reason: e.to_string(),
            }
        })?;
        let (count, cancel) = (s.signals.clone(), s.cancel.clone());
        std::thread::spawn(move || {
            for sig in signals.forever() {
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                tracing::info!(signal = sig, count = n, "signal received");
                if n >= 2 {
                    cancel.store(true, Ordering::SeqCst);
                }
            }
        });
        Ok(s)
    }
    /// Whether a signal asked the daemon to stop.
    pub fn requested(&self) -> bool {
        self.signals.load(Ordering::SeqCst) > 0
    }
    /// The flag that interrupts a running segmentation.
    pub fn cancel_flag(&self) -> &AtomicBool {
        &self.cancel
    }
    /// Asks for a stop as a signal would (tests).
    pub fn request(&self) {
        let n = self.signals.fetch_add(1, Ordering::SeqCst) + 1;
        if n >= 2 {
            self.cancel.store(true, Ordering::SeqCst);
        }
    }
}

/// What a daemon built on this queue does around the segmentation of each claimed study
/// (`watch`: nothing, the folder is the case; `serve`: DICOM in, DICOM out). Every step may
/// run again after a crash, so each must be safe to repeat.
pub trait StudyHandler {
    /// The case folder to segment for the claimed `study` folder (`serve` converts the
    /// DICOM instances there into a NIfTI case folder). `staging` is the study's output
    /// staging folder. An error fails the study (or, for an output error, stops the daemon).
    fn prepare(&mut self, study: &Path, staging: &Path) -> Result<PathBuf, EdgeError>;
    /// Sees each slice as it is segmented.
    fn observer(&mut self) -> &mut dyn SliceObserver;
    /// After segmentation, before publication: further outputs into `staging`.
    fn finish(&mut self, report: &Report, staging: &Path) -> Result<(), EdgeError>;
    /// After publication of `published` (also for a study found published after a
    /// restart, before it is archived): hands the outputs on.
    fn published(&mut self, name: &str, published: &Path) -> Result<(), EdgeError>;
}

/// `watch`'s handler: the claimed folder is the case folder, nothing else happens.
#[derive(Debug, Default)]
pub struct PlainStudies;

impl SliceObserver for PlainStudies {
    fn slice(&mut self, _: usize, _: &[f32], _: &[u8], _: Option<&[u8]>) -> Result<(), EdgeError> {
        Ok(())
    }
}

impl StudyHandler for PlainStudies {
    fn prepare(&mut self, study: &Path, _staging: &Path) -> Result<PathBuf, EdgeError> {
        Ok(study.to_path_buf())
    }
    fn observer(&mut self) -> &mut dyn SliceObserver {
        self
    }
    fn finish(&mut self, _report: &Report, _staging: &Path) -> Result<(), EdgeError> {
        Ok(())
    }
    fn published(&mut self, _name: &str, _published: &Path) -> Result<(), EdgeError> {
        Ok(())
    }
}

/// Aborts the process at test crash point `name` when [`FAILPOINT_ENV`] names it.
pub fn failpoint(name: &str) {
    if std::env::var(FAILPOINT_ENV).is_ok_and(|v| v == name) {
        tracing::warn!(failpoint = name, "aborting at test failpoint");
        std::process::abort();
    }
}

fn io_err(path: &Path, e: std::io::Error) -> EdgeError {
    EdgeError::output(path, e)
}

/// Renames `from` to `to` and syncs `to`'s parent folder.
pub(crate) fn rename_synced(from: &Path, to: &Path) -> Result<(), EdgeError> {
    std::fs::rename(from, to).map_err(|e| io_err(to, e))?;
    if let Some(parent) = to.parent()
        && let Ok(d) = std::fs::File::open(parent)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// `dir/name`, or `dir/name.N` with the smallest N that exists in none of `dirs`.
pub(crate) fn unique_name(dirs: &[&Path], name: &str) -> String {
    let taken = |n: &str| dirs.iter().any(|d| d.join(n).exists());
    if !taken(name) {
        return name.to_owned();
    }
    (1..)
        .map(|i| format!("{name}.{i}"))
        .find(|n| !taken(n))
        .unwrap_or_else(|| name.to_owned())
}

/// Newest modification time of `dir` and everything below it (two levels: the ISLES
/// layout).
fn newest_mtime(dir: &Path, depth: usize) -> Option<SystemTime> {
    let mut newest = std::fs::metadata(dir).and_then(|m| m.modified()).ok()?;
    if depth > 0
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        for entry in entries.flatten() {
            let p = entry.path();
            let t = if p.is_dir() {
                newest_mtime(&p, depth - 1)
            } else {
                entry.metadata().and_then(|m| m.modified()).ok()
            };
            newest = newest.max(t.unwrap_or(newest));
        }
    }
    Some(newest)
}

/// The inbox daemon.
pub struct Watcher {
    settings: WatchSettings,
    model: Option<Segmenter>,
    status: Box<dyn StatusSink + Send>,
    shutdown: Shutdown,
    handler: Box<dyn StudyHandler + Send>,
}

impl Watcher {
    /// A daemon over `settings.dirs` (created if missing). `model` is required for
    /// [`Method::Model`].
    pub fn new(
        settings: WatchSettings,
        model: Option<Segmenter>,
        status: Box<dyn StatusSink + Send>,
        shutdown: Shutdown,
    ) -> Result<Watcher, EdgeError> {
        if settings.method == Method::Model && model.is_none() {
            return Err(crate::ModelError::NoModel.into());
        }
        settings.options.validate()?;
        let d = &settings.dirs;
        for dir in [&d.inbox, &d.processing, &d.done, &d.failed, &d.outbox] {
            std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        }
        Ok(Watcher {
            settings,
            model,
            status,
            shutdown,
            handler: Box::new(PlainStudies),
        })
    }

    /// The daemon with `handler` around each study instead of [`PlainStudies`].
    pub fn with_handler(mut self, handler: Box<dyn StudyHandler + Send>) -> Watcher {
        self.handler = handler;
        self
    }

    /// Runs until a signal (or, with `once`, until nothing is ready).
    pub fn run(&mut self) -> Result<WatchSummary, EdgeError> {
        let mut summary = WatchSummary::default();
        self.status.reset();
        tracing::info!(
            inbox = %self.settings.dirs.inbox.display(),
            outbox = %self.settings.dirs.outbox.display(),
            method = %self.settings.method,
            "watching"
        );
        for name in self.sorted_entries(&self.settings.dirs.processing.clone())? {
            if self.shutdown.requested() {
                return Ok(summary);
            }
            tracing::info!(study = %name, "resuming study left in processing/");
            self.process(&name, &mut summary)?;
        }
        loop {
            if self.shutdown.requested() {
                break;
            }
            let ready = self.ready_studies()?;
            for name in &ready {
                if self.shutdown.requested() {
                    break;
                }
                if let Some(claimed) = self.claim(name)? {
                    self.process(&claimed, &mut summary)?;
                }
            }
            if self.settings.once && ready.is_empty() {
                break;
            }
            let until = Instant::now() + self.settings.poll_interval;
            while Instant::now() < until && !self.shutdown.requested() {
                std::thread::sleep(Duration::from_millis(20).min(self.settings.poll_interval));
            }
        }
        tracing::info!(?summary, "stopped");
        Ok(summary)
    }

    /// Sub-folder names of `dir` that do not start with `.`, sorted.
    fn sorted_entries(&self, dir: &Path) -> Result<Vec<String>, EdgeError> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| io_err(dir, e))?
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Inbox folders that are ready, oldest name first.
    fn ready_studies(&self) -> Result<Vec<String>, EdgeError> {
        let inbox = &self.settings.dirs.inbox;
        let now = SystemTime::now();
        Ok(self
            .sorted_entries(inbox)?
            .into_iter()
            .filter(|name| {
                let dir = inbox.join(name);
                if dir.join(&self.settings.ready_marker).is_file() {
                    return true;
                }
                !self.settings.settle.is_zero()
                    && newest_mtime(&dir, 2)
                        .and_then(|t| now.duration_since(t).ok())
                        .is_some_and(|age| age >= self.settings.settle)
            })
            .collect())
    }

    /// Moves `inbox/name` into `processing/` under a name not used before; `None` when
    /// the folder vanished (another claimant).
    fn claim(&self, name: &str) -> Result<Option<String>, EdgeError> {
        let d = &self.settings.dirs;
        let claimed = unique_name(&[&d.processing, &d.done, &d.failed, &d.outbox], name);
        let from = d.inbox.join(name);
        match std::fs::rename(&from, d.processing.join(&claimed)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&from, e)),
        }
        if let Ok(dir) = std::fs::File::open(&d.processing) {
            let _ = dir.sync_all();
        }
        tracing::info!(study = %name, claimed_as = %claimed, "claimed");
        failpoint("after_claim");
        Ok(Some(claimed))
    }

    /// Segments `processing/name`, publishes, archives; or records the failure.
    fn process(&mut self, name: &str, summary: &mut WatchSummary) -> Result<(), EdgeError> {
        let d = self.settings.dirs.clone();
        let study = d.processing.join(name);
        let published = d.outbox.join(name);
        if published.join(REPORT_FILE).is_file() {
            tracing::info!(study = %name, "outputs already published before a restart: archiving only");
            self.handler.published(name, &published)?;
            self.archive(&study, &d.done, name)?;
            summary.recovered += 1;
            return Ok(());
        }
        if study.join(ERROR_FILE).is_file() {
            tracing::info!(study = %name, "failed before a restart: moving to failed/");
            self.archive(&study, &d.failed, name)?;
            summary.failed += 1;
            return Ok(());
        }
        if published.exists() {
            // Not ours (no report): a leftover that would block the publishing rename.
            std::fs::remove_dir_all(&published).map_err(|e| io_err(&published, e))?;
        }
        let staging = StagingDir::create(d.outbox.join(format!(".staging-{name}")))?;
        self.status.start();
        let t = Instant::now();
        let result = self
            .handler
            .prepare(&study, staging.path())
            .and_then(|case_dir| {
                segment_study_observed(
                    &case_dir,
                    self.settings.method,
                    self.model.as_mut(),
                    &self.settings.options,
                    staging.path(),
                    self.shutdown.cancel_flag(),
                    self.handler.observer(),
                )
            })
            .and_then(|report| {
                self.handler.finish(&report, staging.path())?;
                Ok(report)
            });
        match result {
            Ok(report) => {
                failpoint("before_publish");
                rename_synced(staging.path(), &published)?;
                staging.keep();
                failpoint("after_publish");
                self.handler.published(name, &published)?;
                self.archive(&study, &d.done, name)?;
                tracing::info!(
                    study = %name,
                    lesion_volume_ml = report.lesion_volume_ml,
                    alert = report.alert.triggered,
                    seconds = t.elapsed().as_secs_f64(),
                    "published"
                );
                self.status.succeed(report.alert.triggered);
                summary.succeeded += 1;
            }
            Err(EdgeError::Interrupted) => {
                drop(staging);
                let back = unique_name(&[&d.inbox], name);
                rename_synced(&study, &d.inbox.join(&back))?;
                tracing::warn!(study = %name, "interrupted: rolled back to the inbox");
                self.status.reset();
                summary.rolled_back += 1;
            }
            Err(e @ EdgeError::Output { .. }) => {
                // The box's fault (disk full, permissions), not the study's: leave it in
                // processing/ for the next start and stop.
                drop(staging);
                tracing::error!(study = %name, error = %e, "cannot write outputs: stopping");
                self.status.fail();
                return Err(e);
            }
            Err(e) => {
                drop(staging);
                tracing::error!(study = %name, error = %e, exit_code = e.exit_code(), "failed");
                let text = format!(
                    "study: {name}\nerror: {e}\nexit_code: {}\nkind: {}\n",
                    e.exit_code(),
                    exit_code_meaning(e.exit_code())
                );
                write_atomically(&study.join(ERROR_FILE), text.as_bytes())
                    .map_err(EdgeError::writing)?;
                self.archive(&study, &d.failed, name)?;
                self.status.fail();
                summary.failed += 1;
            }
        }
        Ok(())
    }

    /// Moves `study` into `to_dir` (under a fresh name if `name` is taken there).
    fn archive(&self, study: &Path, to_dir: &Path, name: &str) -> Result<(), EdgeError> {
        let target = unique_name(&[to_dir], name);
        rename_synced(study, &to_dir.join(target))
    }

    /// The daemon's model, if any.
    pub fn model(&self) -> Option<&Segmenter> {
        self.model.as_ref()
    }
}

/// What an exit code means (README table).
pub fn exit_code_meaning(code: u8) -> &'static str {
    match code {
        0 => "success",
        2 => "usage error",
        3 => "bad input study or file",
        4 => "bad configuration",
        5 => "bad or missing model",
        6 => "outputs cannot be written",
        7 => "status pins unavailable",
        130 => "interrupted",
        _ => "internal error",
    }
}
