//! `strokeseg-edge serve`: the box as a DICOM node beside the scanner.
//!
//! Three threads around `watch`'s queue, which does the segmentation on the calling thread:
//!
//! 1. **receive**: the Storage SCP of `strokeseg-dicom` on the configured AE title and port
//!    (allow-listed calling AE titles and peers) writes every instance durably into
//!    `spool/studies/<study>/<series>/` before acknowledging it;
//! 2. **hand off**: a study in which nothing arrived for `idle_seconds` moves to
//!    `spool/complete/`, gets the queue's ready marker and is renamed into `inbox/`
//!    (spool and watch root on one file system: every step is a rename);
//! 3. the **queue** ([`Watcher`] with [`DicomStudies`] as its [`StudyHandler`]): claimed into
//!    `processing/`, the DICOM instances are recognised and written as a NIfTI case folder
//!    (`processing/<S>/nifti/`), segmented with the configured model, the overlay slices
//!    coloured by [`crate::overlay::colour_slice`] become a Secondary Capture series as they
//!    are segmented, then the Segmentation (from the mask, referencing the source
//!    instances) and the Structured Report join the NIfTI/JSON/PNG outputs in
//!    `outbox/<S>/dicom/`; publication, archiving and crash recovery are `watch`'s;
//! 4. **send**: the published DICOM results are queued in the persistent DICOM outbox
//!    (`dicom-outbox/pending/`, at least once: recorded by `outbox/<S>/dicom/queued.json`)
//!    and delivered to the destination with retries and backoff by a thread of their own,
//!    so an unreachable PACS never blocks receiving or segmenting.
//!
//! A study without maps but with the raw dynamic series and the plain CT becomes a case
//! folder of `CT.nii` and `CT_4DPWI.nii`, whose maps the segmentation computes
//! (`crate::perfusion`, `--maps auto`). A study the recogniser refuses (a dynamic series
//! without the plain CT, no maps, broken geometry) fails like a bad study in `watch`: its instances go to `failed/<S>/` with `error.txt`
//! naming the series and the reason. A folder dropped into `inbox/` without DICOM files is
//! segmented as a NIfTI case folder, as `watch` does.
//!
//! Retention: delivered jobs leave `dicom-outbox/sent/` after `[dicom] keep_sent_days` and
//! studies leave `done/` after `keep_done_days` (30 each by default, 0 keeps forever),
//! checked at start and hourly ([`Retention`], `strokeseg_dicom::retention`); `failed/`
//! and the results in `outbox/` are never removed.
//!
//! Memory per study: the `watch` pipeline's slices, the study's instance headers, the
//! lesion mask (one byte a voxel, for the Segmentation object) and one RGB slice.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use strokeseg_dicom::derived::{
    DerivedOptions, OverlaySeriesWriter, Provenance, ReportContent, write_report,
    write_segmentation,
};
use strokeseg_dicom::read::{DicomStudy, SeriesKind, scan_dir};
use strokeseg_dicom::scp::{ScpConfig, Spool, StorageScp};
use strokeseg_dicom::scu::{Backoff, Destination, Outbox};
use strokeseg_dicom::{DicomError, RecognizerConfig, UidRoot};
use strokeseg_io::atomic::{write_atomically, write_json_atomically};

use crate::EdgeError;
use crate::config::{EdgeConfig, WatchDirs};
use crate::overlay::colour_slice;
use crate::report::{Method, Report};
use crate::segment::{SegmentOptions, SliceObserver};
use crate::segmenter::Segmenter;
use crate::status::{StatusSink, open_pins};
use crate::watch::{
    PlainStudies, Shutdown, StudyHandler, WatchSettings, Watcher, failpoint, rename_synced,
    unique_name,
};

/// Folder of the DICOM results inside a study's outputs (`outbox/<S>/dicom/`).
pub const DICOM_RESULTS_DIR: &str = "dicom";
/// Written into [`DICOM_RESULTS_DIR`] once the results are in the DICOM outbox.
pub const QUEUED_FILE: &str = "queued.json";
/// The NIfTI case folder made from a study's instances (`processing/<S>/nifti/`).
pub const CASE_DIR: &str = "nifti";
/// File name of the Segmentation in [`DICOM_RESULTS_DIR`].
pub const SEG_FILE: &str = "seg.dcm";
/// File name of the Structured Report in [`DICOM_RESULTS_DIR`].
pub const SR_FILE: &str = "sr.dcm";
/// Folder of the Secondary Capture overlay series in [`DICOM_RESULTS_DIR`].
pub const SC_DIR: &str = "sc";

/// Everything `serve` needs besides its model, pins and shutdown.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// The queue (folders, marker, polling, method, options).
    pub watch: WatchSettings,
    /// The Storage SCP.
    pub scp: ScpConfig,
    /// The DICOM outbox folder.
    pub outbox: PathBuf,
    /// Where results go (none: they stay in the outbox).
    pub destination: Option<Destination>,
    /// Retry timing of deliveries.
    pub backoff: Backoff,
    /// Root of new UIDs.
    pub uid_root: UidRoot,
    /// Label results "not for diagnostic use".
    pub not_for_diagnostic_use: bool,
    /// Series recognition.
    pub recognizer: RecognizerConfig,
    /// How often the spool and the DICOM outbox are looked at.
    pub poll_interval: Duration,
    /// What is kept how long (`done/`, `dicom-outbox/sent/`).
    pub retention: Retention,
}

/// How long `serve` keeps what only grows: checked at start and every `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Delivered jobs in `dicom-outbox/sent/` (none: forever).
    pub sent: Option<Duration>,
    /// Studies in `done/` (none: forever).
    pub done: Option<Duration>,
    /// Time between passes.
    pub interval: Duration,
}

/// Time between retention passes.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

impl Retention {
    /// Removes the delivered jobs and the done studies older than kept, logging each;
    /// returns how many entries went.
    pub fn prune(&self, outbox: &Outbox, done: &Path, now: SystemTime) -> Result<usize, EdgeError> {
        let mut n = 0;
        if let Some(keep) = self.sent {
            for job in outbox.prune_sent(keep, now).map_err(EdgeError::dicom)? {
                tracing::info!(
                    job,
                    keep_days = keep.as_secs() / 86_400,
                    "delivered job removed from the DICOM outbox (keep_sent_days)"
                );
                n += 1;
            }
        }
        if let Some(keep) = self.done {
            for study in strokeseg_dicom::retention::prune_older_than(done, keep, now, None)
                .map_err(EdgeError::dicom)?
            {
                tracing::info!(
                    study,
                    keep_days = keep.as_secs() / 86_400,
                    "study removed from done/ (keep_done_days)"
                );
                n += 1;
            }
        }
        Ok(n)
    }
}

fn settings_error(source: &Path, e: impl std::fmt::Display) -> EdgeError {
    EdgeError::Settings {
        path: source.to_path_buf(),
        reason: e.to_string(),
    }
}

impl ServeSettings {
    /// The settings of `config` (read from `source`, for messages).
    pub fn from_config(config: &EdgeConfig, source: &Path) -> Result<ServeSettings, EdgeError> {
        let dirs = config.watch.dirs(source)?;
        let d = &config.dicom;
        let root = config
            .watch
            .root
            .clone()
            .or_else(|| dirs.inbox.parent().map(Path::to_path_buf))
            .ok_or_else(|| settings_error(source, "[watch] needs root"))?;
        let spool = d.spool.clone().unwrap_or_else(|| root.join("spool"));
        let outbox = d
            .outbox
            .clone()
            .unwrap_or_else(|| root.join("dicom-outbox"));
        let allowed: Vec<&str> = d
            .allowed_calling_ae_titles
            .iter()
            .map(String::as_str)
            .collect();
        let mut scp = ScpConfig::new(
            &d.ae_title,
            SocketAddr::new(d.listen_address, d.port),
            &allowed,
            &spool,
        );
        scp.allowed_peers = d.allowed_peers.clone();
        scp.idle_seconds = d.idle_seconds;
        scp.validate()
            .map_err(|e| settings_error(source, format!("[dicom] {e}")))?;
        let destination = match &d.destination {
            Some(dest) => Some(
                Destination::parse(&format!("{}@{}:{}", dest.ae_title, dest.host, dest.port))
                    .map_err(|e| settings_error(source, format!("[dicom.destination] {e}")))?,
            ),
            None => None,
        };
        let uid_root = match &d.uid_root {
            Some(r) => {
                UidRoot::new(r).map_err(|e| settings_error(source, format!("[dicom] {e}")))?
            }
            None => UidRoot::default(),
        };
        if d.retry_base_seconds == 0 || d.retry_max_seconds < d.retry_base_seconds {
            return Err(settings_error(
                source,
                format!(
                    "[dicom] retry_base_seconds {} must be ≥ 1 and ≤ retry_max_seconds {}",
                    d.retry_base_seconds, d.retry_max_seconds
                ),
            ));
        }
        let poll_interval = Duration::from_millis(config.watch.poll_interval_ms.max(10));
        Ok(ServeSettings {
            watch: WatchSettings {
                dirs,
                ready_marker: config.watch.ready_marker.clone(),
                settle: Duration::from_secs(config.watch.settle_seconds),
                poll_interval,
                method: config.segment.method,
                options: SegmentOptions {
                    alert_threshold_ml: config.segment.alert_threshold_ml,
                    maps: config.segment.maps,
                    ..SegmentOptions::default()
                },
                once: false,
            },
            scp,
            outbox,
            destination,
            backoff: Backoff {
                base: Duration::from_secs(d.retry_base_seconds),
                max: Duration::from_secs(d.retry_max_seconds),
            },
            uid_root,
            not_for_diagnostic_use: d.not_for_diagnostic_use,
            recognizer: d.recognizer.clone(),
            poll_interval: poll_interval.min(Duration::from_millis(250)),
            retention: Retention {
                sent: strokeseg_dicom::retention::days(d.keep_sent_days),
                done: strokeseg_dicom::retention::days(d.keep_done_days),
                interval: RETENTION_INTERVAL,
            },
        })
    }
}

/// Who made the results, as written into every DICOM object.
pub fn provenance(model: Option<&Segmenter>, not_for_diagnostic_use: bool) -> Provenance {
    let software_version = format!("strokeseg-edge {}", env!("CARGO_PKG_VERSION"));
    match model {
        Some(m) => {
            let meta = m.metadata();
            let phantom = meta.training.data.to_ascii_lowercase().contains("phantom");
            Provenance {
                model_name: meta.name.clone(),
                model_version: meta.version.clone(),
                model_sha256: m.sha256(),
                software_version,
                not_for_diagnostic_use: not_for_diagnostic_use || phantom,
            }
        }
        None => Provenance {
            model_name: "strokeseg threshold rule".into(),
            model_version: env!("CARGO_PKG_VERSION").into(),
            model_sha256: "none (no model)".into(),
            software_version,
            not_for_diagnostic_use,
        },
    }
}

/// The study being segmented: its recognised series and what is built from its slices.
struct Current {
    study: DicomStudy,
    /// Index in `study.series` of the series the mask lies on (the plain CT, else a map).
    source: usize,
    derived: DerivedOptions,
    overlay: OverlaySeriesWriter,
    columns: usize,
    rows: usize,
    /// `[slice][row][column]`, 0/1.
    mask: Vec<u8>,
    /// One slice of RGB, reused.
    rgb: Vec<u8>,
}

/// `serve`'s [`StudyHandler`]: DICOM instances in, DICOM results out.
pub struct DicomStudies {
    recognizer: RecognizerConfig,
    provenance: Provenance,
    uid_root: UidRoot,
    outbox: Outbox,
    destination: Option<Destination>,
    current: Option<Current>,
    plain: PlainStudies,
}

impl DicomStudies {
    /// A handler that queues results in `outbox` (sent when `destination` is set).
    pub fn new(
        recognizer: RecognizerConfig,
        provenance: Provenance,
        uid_root: UidRoot,
        outbox: Outbox,
        destination: Option<Destination>,
    ) -> DicomStudies {
        DicomStudies {
            recognizer,
            provenance,
            uid_root,
            outbox,
            destination,
            current: None,
            plain: PlainStudies,
        }
    }
}

impl SliceObserver for DicomStudies {
    fn slice(
        &mut self,
        slice_idx: usize,
        display: &[f32],
        mask: &[u8],
        reference: Option<&[u8]>,
    ) -> Result<(), EdgeError> {
        let Some(c) = self.current.as_mut() else {
            return Ok(());
        };
        colour_slice(display, mask, reference, c.columns, c.rows, &mut c.rgb)?;
        c.overlay.add_slice(&c.rgb).map_err(EdgeError::dicom)?;
        c.mask.extend(mask.iter().map(|&m| u8::from(m != 0)));
        debug_assert_eq!(c.mask.len(), (slice_idx + 1) * c.columns * c.rows);
        Ok(())
    }
}

impl StudyHandler for DicomStudies {
    fn prepare(&mut self, study: &Path, staging: &Path) -> Result<PathBuf, EdgeError> {
        self.current = None;
        let case_dir = study.join(CASE_DIR);
        if case_dir.exists() {
            // Left by a run that crashed: made again from the instances.
            std::fs::remove_dir_all(&case_dir).map_err(|e| EdgeError::output(&case_dir, e))?;
        }
        let (headers, errors) = scan_dir(study).map_err(EdgeError::dicom)?;
        if let Some(e) = errors.into_iter().next() {
            return Err(EdgeError::dicom(e));
        }
        if headers.is_empty() {
            tracing::info!(study = %study.display(), "no DICOM instances: a NIfTI case folder");
            return self.plain.prepare(study, staging);
        }
        let n_instances = headers.len();
        let dicom =
            DicomStudy::from_instances(headers, &self.recognizer).map_err(EdgeError::dicom)?;
        for s in &dicom.series {
            tracing::info!(
                series = %s.series_uid,
                description = %s.description,
                kind = ?s.kind,
                instances = s.instances.len(),
                "series recognised"
            );
        }
        let source_uid = match dicom.segmentable_series() {
            Ok(segmentable) => {
                dicom
                    .write_case_folder(&case_dir)
                    .map_err(EdgeError::dicom)?;
                segmentable
                    .iter()
                    .find(|(_, s)| s.kind == SeriesKind::PlainCt)
                    .or_else(|| segmentable.first())
                    .map(|(_, s)| s.series_uid.clone())
                    .unwrap_or_default()
            }
            // No maps: computed from the raw dynamic series (`--maps auto`) on the plain
            // CT's grid, when the study has both; refused with the reason otherwise.
            Err(no_maps) => {
                if !dicom
                    .series
                    .iter()
                    .any(|s| matches!(s.kind, SeriesKind::Dynamic { .. }))
                {
                    return Err(EdgeError::dicom(no_maps));
                }
                dicom
                    .write_dynamic_case_folder(&case_dir)
                    .map_err(EdgeError::dicom)?;
                tracing::info!(study = %study.display(), "no maps: computing them from the raw dynamic series");
                dicom
                    .find(&SeriesKind::PlainCt)
                    .map(|s| s.series_uid.clone())
                    .unwrap_or_default()
            }
        };
        let source = dicom
            .series
            .iter()
            .position(|s| s.series_uid == source_uid)
            .ok_or_else(|| EdgeError::Study {
                path: study.to_path_buf(),
                reason: "no series to derive the results from".into(),
            })?;
        let series = &dicom.series[source];
        let geometry = series.geometry.clone().ok_or_else(|| EdgeError::Study {
            path: study.to_path_buf(),
            reason: format!("series {} has no geometry", series.series_uid),
        })?;
        let derived = DerivedOptions {
            uid_root: self.uid_root.clone(),
            ..DerivedOptions::default()
        };
        let overlay = OverlaySeriesWriter::new(
            &staging.join(DICOM_RESULTS_DIR).join(SC_DIR),
            series,
            &dicom.attributes,
            &self.provenance,
            &derived,
        )
        .map_err(EdgeError::dicom)?;
        tracing::info!(
            study_uid = %dicom.attributes.study_uid,
            instances = n_instances,
            results_on = %series.description,
            "DICOM study converted to a NIfTI case folder"
        );
        let slice = geometry.slice_voxels();
        self.current = Some(Current {
            source,
            derived,
            overlay,
            columns: geometry.columns,
            rows: geometry.rows,
            mask: Vec::with_capacity(slice * geometry.n_slices),
            rgb: vec![0; 3 * slice],
            study: dicom,
        });
        Ok(case_dir)
    }

    fn observer(&mut self) -> &mut dyn SliceObserver {
        self
    }

    fn finish(&mut self, report: &Report, staging: &Path) -> Result<(), EdgeError> {
        let Some(c) = self.current.take() else {
            return Ok(());
        };
        let dir = staging.join(DICOM_RESULTS_DIR);
        c.overlay.finish().map_err(EdgeError::dicom)?;
        let source = &c.study.series[c.source];
        let seg = write_segmentation(
            &dir.join(SEG_FILE),
            source,
            &c.study.attributes,
            &c.mask,
            &self.provenance,
            &c.derived,
        )
        .map_err(EdgeError::dicom)?;
        let method = match (&report.method, &report.model) {
            (Method::Model, Some(m)) => format!(
                "model {} {} ({}) on the perfusion maps",
                m.name, m.version, m.precision
            ),
            _ => "threshold rule: CBF < 30 % of healthy within Tmax > 6 s".to_owned(),
        };
        let content = ReportContent {
            lesion_volume_ml: report.lesion_volume_ml,
            method,
            alert: report.alert.triggered,
            alert_rule: format!("core >= {} mL", report.alert.threshold_ml),
            warnings: report.warnings.clone(),
        };
        write_report(
            &dir.join(SR_FILE),
            source,
            &c.study.attributes,
            &seg,
            &content,
            &self.provenance,
            &c.derived,
        )
        .map_err(EdgeError::dicom)?;
        Ok(())
    }

    fn published(&mut self, name: &str, published: &Path) -> Result<(), EdgeError> {
        let dir = published.join(DICOM_RESULTS_DIR);
        let queued = dir.join(QUEUED_FILE);
        if !dir.join(SEG_FILE).is_file() || queued.is_file() {
            return Ok(());
        }
        let Some(dest) = &self.destination else {
            tracing::info!(study = name, results = %dir.display(), "no [dicom.destination]: results stay in the outbox");
            return Ok(());
        };
        let mut files = vec![dir.join(SEG_FILE)];
        let sc = dir.join(SC_DIR);
        let mut slices: Vec<PathBuf> = std::fs::read_dir(&sc)
            .map_err(|e| EdgeError::output(&sc, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "dcm"))
            .collect();
        slices.sort();
        files.extend(slices);
        files.push(dir.join(SR_FILE));
        failpoint("before_enqueue");
        let job = self
            .outbox
            .enqueue(name, &files)
            .map_err(EdgeError::dicom)?;
        write_json_atomically(
            &queued,
            &serde_json::json!({ "job": job, "destination": dest.to_string() }),
        )
        .map_err(EdgeError::writing)?;
        tracing::info!(study = name, job, %dest, files = files.len(), "results queued for the PACS");
        Ok(())
    }
}

/// Moves every study in `spool/complete/` into the inbox, ready (marker first, then one
/// rename under a name no folder of the queue uses); returns the names given.
pub fn hand_off_complete(
    spool: &Spool,
    dirs: &WatchDirs,
    marker: &str,
) -> Result<Vec<String>, EdgeError> {
    let complete = spool.complete();
    let mut studies: Vec<PathBuf> = std::fs::read_dir(&complete)
        .map_err(|e| EdgeError::output(&complete, e))?
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    studies.sort();
    let mut names = Vec::new();
    for study in studies {
        let marker_path = study.join(marker);
        if !marker_path.is_file() {
            write_atomically(&marker_path, b"").map_err(EdgeError::writing)?;
        }
        let name = study
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "study".into());
        let target = unique_name(
            &[
                &dirs.inbox,
                &dirs.processing,
                &dirs.done,
                &dirs.failed,
                &dirs.outbox,
            ],
            &name,
        );
        rename_synced(&study, &dirs.inbox.join(&target))?;
        tracing::info!(study = %target, "study complete: handed to the queue");
        names.push(target);
    }
    Ok(names)
}

/// A bound DICOM node, ready to [`Server::run`].
pub struct Server {
    scp: StorageScp,
    addr: SocketAddr,
    settings: ServeSettings,
    watcher: Watcher,
    outbox: Outbox,
    shutdown: Shutdown,
}

impl Server {
    /// Binds the SCP, opens the spool, the queue and the DICOM outbox. `model` is required
    /// for [`Method::Model`].
    pub fn bind(
        settings: ServeSettings,
        model: Option<Segmenter>,
        status: Box<dyn StatusSink + Send>,
        shutdown: Shutdown,
    ) -> Result<Server, EdgeError> {
        let outbox = Outbox::open(&settings.outbox).map_err(EdgeError::dicom)?;
        let handler = DicomStudies::new(
            settings.recognizer.clone(),
            provenance(model.as_ref(), settings.not_for_diagnostic_use),
            settings.uid_root.clone(),
            outbox.clone(),
            settings.destination.clone(),
        );
        let watcher = Watcher::new(settings.watch.clone(), model, status, shutdown.clone())?
            .with_handler(Box::new(handler));
        let scp = StorageScp::bind(settings.scp.clone()).map_err(|e| match e {
            DicomError::Network { peer, reason } => EdgeError::Settings {
                path: PathBuf::from(format!("[dicom] listen {peer}")),
                reason,
            },
            other => EdgeError::dicom(other),
        })?;
        let addr = scp.local_addr().map_err(EdgeError::dicom)?;
        Ok(Server {
            scp,
            addr,
            settings,
            watcher,
            outbox,
            shutdown,
        })
    }

    /// The address the SCP listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Receives, segments and sends until the shutdown is requested; the current study
    /// finishes first (a second signal interrupts it, as in `watch`).
    pub fn run(self) -> Result<(), EdgeError> {
        let Server {
            scp,
            addr,
            settings,
            mut watcher,
            outbox,
            shutdown,
        } = self;
        let stop = Arc::new(AtomicBool::new(false));
        tracing::info!(
            ae_title = %settings.scp.ae_title,
            %addr,
            allowed = ?settings.scp.allowed_calling_ae_titles,
            destination = %settings.destination.as_ref().map_or("none".to_owned(), ToString::to_string),
            "serving"
        );
        let spool = scp.spool().clone();
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        {
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                if let Err(e) = scp.serve(&stop) {
                    tracing::error!(error = %e, "storage SCP stopped");
                }
            }));
        }
        {
            let (stop, dirs) = (stop.clone(), settings.watch.dirs.clone());
            let (marker, poll) = (settings.watch.ready_marker.clone(), settings.poll_interval);
            let idle = Duration::from_secs(settings.scp.idle_seconds);
            let (retention, outbox) = (settings.retention, outbox.clone());
            threads.push(std::thread::spawn(move || {
                let mut next_prune = std::time::Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    if let Err(e) = spool.take_complete(idle, SystemTime::now()) {
                        tracing::error!(error = %e, "spool: cannot complete studies");
                    }
                    if let Err(e) = hand_off_complete(&spool, &dirs, &marker) {
                        tracing::error!(error = %e, "spool: cannot hand studies to the queue");
                    }
                    if std::time::Instant::now() >= next_prune {
                        if let Err(e) = retention.prune(&outbox, &dirs.done, SystemTime::now()) {
                            tracing::error!(error = %e, "retention: cannot remove old entries");
                        }
                        next_prune = std::time::Instant::now() + retention.interval;
                    }
                    std::thread::sleep(poll);
                }
            }));
        }
        if let Some(dest) = settings.destination.clone() {
            let (stop, poll, backoff) = (stop.clone(), settings.poll_interval, settings.backoff);
            let calling = settings.scp.ae_title.clone();
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match outbox.deliver_due(&dest, &calling, SystemTime::now(), &backoff) {
                        Ok(r) => {
                            for job in &r.delivered {
                                tracing::info!(job, %dest, "results acknowledged by the PACS");
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "DICOM outbox"),
                    }
                    std::thread::sleep(poll);
                }
            }));
        }
        let result = watcher.run();
        stop.store(true, Ordering::SeqCst);
        for t in threads {
            let _ = t.join();
        }
        drop(shutdown);
        result.map(|_| ())
    }
}

/// `strokeseg-edge serve --config FILE`: loads the config and the model, opens the pins,
/// installs the signal handlers and runs the node until SIGTERM/SIGINT.
pub fn serve_with_config(config_path: &Path) -> Result<(), EdgeError> {
    let config = EdgeConfig::load(config_path)?;
    let settings = ServeSettings::from_config(&config, config_path)?;
    let mut status = open_pins(&config.pins)?;
    let model = match config.segment.method {
        Method::Model => match Segmenter::load(&config.segment.model, config.segment.tta) {
            Ok(m) => {
                tracing::info!(
                    model = %m.metadata().name,
                    version = %m.metadata().version,
                    sha256 = %m.sha256(),
                    "model loaded"
                );
                Some(m)
            }
            Err(e) => {
                status.reset();
                status.fail();
                return Err(e.into());
            }
        },
        Method::Threshold => None,
    };
    let shutdown = Shutdown::install()?;
    let server = Server::bind(settings, model, status, shutdown)?;
    server.run()
}
