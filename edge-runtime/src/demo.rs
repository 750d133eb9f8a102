//! `strokeseg-edge demo`: makes one synthetic CTP study (the phantom generator, with a
//! lesion), segments it with the default model (or the threshold rule when this build has
//! no embedded model), and scores the mask against the phantom's truth, so a new user sees
//! the whole path work without data of their own.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use strokeseg_io::IoError;
use strokeseg_phantom::{CaseSummary, DatasetOptions};
use strokeseg_shared::PreprocessConfig;

use crate::EdgeError;
use crate::evaluate::evaluate;
use crate::inspect::{StudySummary, inspect_study};
use crate::model::{SegModel, embedded_model};
use crate::report::{Method, Report};
use crate::segment::{SegmentOptions, segment_to_dir};
use crate::segmenter::Segmenter;
use strokeseg_eval::CaseEvaluation;

/// What the demo produced.
#[derive(Debug, Clone)]
pub struct DemoOutcome {
    /// The generated study folder (ISLES layout).
    pub study_dir: PathBuf,
    /// The phantom's own description of the case, including its true lesion volume.
    pub phantom: CaseSummary,
    /// The edge runtime's pass-1 view of the study.
    pub summary: StudySummary,
    /// The segmentation report (outputs in the demo folder).
    pub report: Report,
    /// The mask scored against the phantom's truth.
    pub evaluation: CaseEvaluation,
    /// Why the method was chosen, when it was not the default model.
    pub note: Option<String>,
}

/// Generates phantom case `case_index` of the dataset with `seed` into `out_dir/study`
/// (replacing an earlier demo study there), segments it into `out_dir` with `model` (else
/// the embedded default model, else the threshold rule) and scores it.
pub fn run_demo(
    out_dir: &Path,
    seed: u64,
    case_index: usize,
    model: Option<&Path>,
) -> Result<DemoOutcome, EdgeError> {
    let opts = DatasetOptions {
        n_cases: case_index + 1,
        seed,
        ..DatasetOptions::default()
    };
    let case = strokeseg_phantom::generate_case(seed, case_index, &opts)?;
    let study_dir = out_dir.join("study");
    if study_dir.exists() {
        std::fs::remove_dir_all(&study_dir).map_err(|e| IoError::io(&study_dir, e))?;
    }
    let phantom =
        strokeseg_phantom::write_case(&study_dir, &case, opts.first_file_id, false, false)?;
    drop(case);
    let summary = inspect_study(&study_dir, &PreprocessConfig::default())?;

    let (method, mut model, note) = match (model, embedded_model()) {
        (Some(path), _) => (
            Method::Model,
            Some(Segmenter::from(SegModel::from_path(path)?)),
            None,
        ),
        (None, Some(_)) => (
            Method::Model,
            Some(Segmenter::from(SegModel::embedded()?)),
            None,
        ),
        (None, None) => (
            Method::Threshold,
            None,
            Some(
                "this build has no embedded default model (models/default/model.onnx): \
                 using the threshold rule; pass --model FILE to use a model"
                    .to_owned(),
            ),
        ),
    };
    let report = segment_to_dir(
        &study_dir,
        method,
        model.as_mut(),
        &SegmentOptions::default(),
        out_dir,
        &AtomicBool::new(false),
    )?;
    let evaluation = evaluate(out_dir, &study_dir)?;
    Ok(DemoOutcome {
        study_dir,
        phantom,
        summary,
        report,
        evaluation,
        note,
    })
}

/// What `demo --dicom` did.
#[derive(Debug, Clone)]
pub struct DicomDemoOutcome {
    /// The demo's folder (scanner series, the node's folders, the PACS's spool).
    pub root: PathBuf,
    /// Instances the "scanner" sent.
    pub instances_sent: usize,
    /// The node's address.
    pub node: std::net::SocketAddr,
    /// The node's outputs of the study (mask, report, overlay, `dicom/`).
    pub outputs: PathBuf,
    /// The Segmentation as the PACS stored it.
    pub seg_at_pacs: PathBuf,
    /// Every object the PACS received (SEG, overlay slices, SR).
    pub objects_at_pacs: usize,
    /// From the last instance acknowledged by the node to the SEG stored by the PACS, s
    /// (includes the node's idle wait).
    pub turnaround_s: f64,
    /// The node's idle wait before a study counts as complete, s.
    pub idle_s: u64,
}

impl std::fmt::Display for DicomDemoOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "scanner        phantom study, {} instances sent by C-STORE as DEMO_CT",
            self.instances_sent
        )?;
        writeln!(
            f,
            "node           strokeseg-edge serve, STROKESEG@{}",
            self.node
        )?;
        writeln!(f, "outputs        {}", self.outputs.display())?;
        writeln!(
            f,
            "PACS received  {} objects (SEG, overlay slices, SR)",
            self.objects_at_pacs
        )?;
        writeln!(f, "SEG at PACS    {}", self.seg_at_pacs.display())?;
        writeln!(
            f,
            "turnaround     {:.2} s from the last instance to the SEG at the PACS ({} s of it the idle wait)",
            self.turnaround_s, self.idle_s
        )?;
        write!(f, "(synthetic phantom: not clinical data)")
    }
}

/// `strokeseg-edge demo --dicom`: a DICOM round trip on one machine, no tools needed.
/// Phantom case `case_index` of the dataset with `seed` is written as DICOM series into
/// `out_dir/dicom-demo/scanner` (replacing an earlier demo there); a PACS (this crate's
/// Storage SCP, AE `PACS`) and the node (`serve`, AE `STROKESEG`, 1 s idle) listen on free
/// 127.0.0.1 ports; the study is pushed with the Storage SCU as `DEMO_CT`, segmented with
/// `model` (else the embedded default model, else the threshold rule), and the demo ends
/// when the PACS holds the SEG (at most `timeout`).
pub fn run_dicom_demo(
    out_dir: &Path,
    seed: u64,
    case_index: usize,
    model: Option<&Path>,
    timeout: std::time::Duration,
) -> Result<DicomDemoOutcome, EdgeError> {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::sync::Arc;
    use std::time::Instant;

    use strokeseg_dicom::derived::SEGMENTATION_SOP_CLASS_UID;
    use strokeseg_dicom::scp::{ScpConfig, StorageScp};
    use strokeseg_dicom::scu::{Destination, file_sop_uids, send_files};
    use strokeseg_dicom::write::{PhantomSeriesOptions, write_phantom_study};

    use crate::config::{DestinationSection, EdgeConfig};
    use crate::serve::{ServeSettings, Server};
    use crate::status::{PinConfig, open_pins};
    use crate::watch::Shutdown;

    let root = out_dir.join("dicom-demo");
    if root.exists() {
        std::fs::remove_dir_all(&root).map_err(|e| EdgeError::output(&root, e))?;
    }
    std::fs::create_dir_all(&root).map_err(|e| EdgeError::output(&root, e))?;
    let opts = DatasetOptions {
        n_cases: case_index + 1,
        seed,
        ..DatasetOptions::default()
    };
    let case = strokeseg_phantom::generate_case(seed, case_index, &opts)?;
    let written = write_phantom_study(
        &case,
        &root.join("scanner"),
        &PhantomSeriesOptions {
            study_key: format!("strokeseg-demo/seed-{seed}/case-{case_index}"),
            ..PhantomSeriesOptions::default()
        },
    )
    .map_err(EdgeError::dicom)?;
    drop(case);
    let files: Vec<PathBuf> = written.files().cloned().collect();

    let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    let pacs_dir = root.join("pacs");
    let mut pacs_config = ScpConfig::new("PACS", loopback, &["STROKESEG"], &pacs_dir);
    pacs_config.idle_seconds = 86_400;
    pacs_config.archive = true;
    let pacs = StorageScp::bind(pacs_config).map_err(EdgeError::dicom)?;
    let pacs_addr = pacs.local_addr().map_err(EdgeError::dicom)?;
    let pacs_stop = Arc::new(AtomicBool::new(false));
    let pacs_thread = {
        let stop = pacs_stop.clone();
        std::thread::spawn(move || pacs.serve(&stop))
    };

    let mut config = EdgeConfig::default();
    config.watch.root = Some(root.join("node"));
    config.watch.poll_interval_ms = 100;
    config.dicom.listen_address = IpAddr::V4(Ipv4Addr::LOCALHOST);
    config.dicom.port = 0;
    config.dicom.allowed_calling_ae_titles = vec!["DEMO_CT".into()];
    config.dicom.idle_seconds = 1;
    config.dicom.retry_base_seconds = 1;
    config.dicom.retry_max_seconds = 5;
    config.dicom.destination = Some(DestinationSection {
        ae_title: "PACS".into(),
        host: pacs_addr.ip().to_string(),
        port: pacs_addr.port(),
    });
    let idle_s = config.dicom.idle_seconds;
    let settings = ServeSettings::from_config(&config, Path::new("demo --dicom"))?;
    let dirs = settings.watch.dirs.clone();
    let (method, model) = match (model, embedded_model()) {
        (Some(path), _) => (
            Method::Model,
            Some(Segmenter::from(SegModel::from_path(path)?)),
        ),
        (None, Some(_)) => (Method::Model, Some(Segmenter::from(SegModel::embedded()?))),
        (None, None) => (Method::Threshold, None),
    };
    let mut settings = settings;
    settings.watch.method = method;
    let shutdown = Shutdown::default();
    let server = Server::bind(
        settings,
        model,
        open_pins(&PinConfig::default())?,
        shutdown.clone(),
    )?;
    let node = server.local_addr();

    // The scanner and the wait for the PACS, beside the node on this thread.
    let client = {
        let (shutdown, pacs_dir) = (shutdown.clone(), pacs_dir.clone());
        std::thread::spawn(move || {
            let result = (|| {
                let dest = Destination {
                    ae_title: "STROKESEG".into(),
                    host: node.ip().to_string(),
                    port: node.port(),
                };
                send_files(&dest, "DEMO_CT", &files).map_err(EdgeError::dicom)?;
                let sent = Instant::now();
                let deadline = sent + timeout;
                loop {
                    let at_pacs = strokeseg_dicom::dcm_files(&pacs_dir);
                    let seg = at_pacs.iter().find(|p| {
                        file_sop_uids(p).is_ok_and(|(class, _)| class == SEGMENTATION_SOP_CLASS_UID)
                    });
                    if let Some(seg) = seg {
                        return Ok((seg.clone(), sent.elapsed().as_secs_f64(), files.len()));
                    }
                    if Instant::now() > deadline {
                        return Err(EdgeError::Study {
                            path: pacs_dir.clone(),
                            reason: format!(
                                "no Segmentation reached the PACS within {} s",
                                timeout.as_secs()
                            ),
                        });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            })();
            // Twice: the node stops now, also in the middle of a study.
            shutdown.request();
            shutdown.request();
            result
        })
    };
    let served = server.run();
    let client_result = client.join();
    pacs_stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = pacs_thread.join();
    served?;
    let (seg_at_pacs, turnaround_s, instances_sent) = match client_result {
        Ok(r) => r?,
        Err(_) => {
            return Err(EdgeError::Study {
                path: root.clone(),
                reason: "the demo's client thread panicked".into(),
            });
        }
    };
    let outputs = std::fs::read_dir(&dirs.outbox)
        .map_err(|e| EdgeError::output(&dirs.outbox, e))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .unwrap_or(dirs.outbox.clone());
    Ok(DicomDemoOutcome {
        objects_at_pacs: strokeseg_dicom::dcm_files(&pacs_dir).len(),
        root,
        instances_sent,
        node,
        outputs,
        seg_at_pacs,
        turnaround_s,
        idle_s,
    })
}
