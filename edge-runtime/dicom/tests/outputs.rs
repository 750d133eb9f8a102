//! SEG, SC overlay and SR from a received phantom study, delivered by our Storage SCU
//! through the persistent outbox to dcmtk's `storescp` (down first, then up), checked by
//! dicom3tools' `dciodvfy` and decoded back to the mask voxel for voxel.
//!
//! With `STROKESEG_DICOM_KEEP=<dir>` the objects storescp received are copied there (CI's
//! `dicom` step loads them in pydicom afterwards).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use dicom_dictionary_std::tags;
use strokeseg_dicom::derived::{
    DerivedOptions, Provenance, ReportContent, unpack_bits, write_overlay_series, write_report,
    write_segmentation,
};
use strokeseg_dicom::read::{DicomStudy, SeriesKind};
use strokeseg_dicom::scu::{Backoff, Destination, Outbox};
use strokeseg_dicom::write::{PhantomSeriesOptions, write_phantom_study};
use strokeseg_dicom::{RecognizerConfig, attr};

/// dcmtk's storescp on a free port, killed on drop.
struct Pacs {
    child: std::process::Child,
}

impl Pacs {
    fn start(bin: &Path, port: u16, out: &Path) -> Pacs {
        std::fs::create_dir_all(out).unwrap();
        let child = std::process::Command::new(bin)
            .env("TCP_NODELAY", "1")
            .args(["-aet", "PACS", "-od"])
            .arg(out)
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "storescp did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Pacs { child }
    }
}

impl Drop for Pacs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

fn dciodvfy_errors(bin: &Path, file: &Path) -> Vec<String> {
    let (_, out) = common::run(bin, &[&file.display().to_string()]);
    out.lines()
        .filter(|l| l.starts_with("Error"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn seg_sc_and_sr_reach_a_pacs_that_was_down_and_pass_dciodvfy() {
    let test = "seg_sc_and_sr_reach_a_pacs_that_was_down_and_pass_dciodvfy";
    let Some(storescp) = common::tool("storescp", test) else {
        return;
    };
    let Some(dciodvfy) = common::tool("dciodvfy", test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let case = common::small_case();
    write_phantom_study(
        &case,
        &dir.path().join("in"),
        &PhantomSeriesOptions::default(),
    )
    .unwrap();
    let study = DicomStudy::from_dir(&dir.path().join("in"), &RecognizerConfig::default()).unwrap();
    let source = study.find(&SeriesKind::PlainCt).unwrap();
    let mask: Vec<u8> = case.ot.iter().map(|&v| u8::from(v > 0.5)).collect();
    assert!(mask.contains(&1), "the phantom case has no lesion");
    let provenance = Provenance {
        model_name: "strokeseg-unet".into(),
        model_version: "2.0.0".into(),
        model_sha256: "0".repeat(64),
        software_version: env!("CARGO_PKG_VERSION").into(),
        not_for_diagnostic_use: true,
    };
    let opts = DerivedOptions::default();
    let out = dir.path().join("results");
    std::fs::create_dir_all(&out).unwrap();
    let seg = write_segmentation(
        &out.join("seg.dcm"),
        source,
        &study.attributes,
        &mask,
        &provenance,
        &opts,
    )
    .unwrap();
    // Overlay: grey CT (0–80 HU window) with the core in red.
    let mut rgb = Vec::with_capacity(mask.len() * 3);
    for (hu, &m) in case.ct_hu.iter().zip(&mask) {
        let grey = ((hu / 80.0).clamp(0.0, 1.0) * 255.0) as u8;
        rgb.extend_from_slice(&if m == 1 {
            [255, grey / 2, grey / 2]
        } else {
            [grey; 3]
        });
    }
    let sc = write_overlay_series(
        &out.join("sc"),
        source,
        &study.attributes,
        &rgb,
        &provenance,
        &opts,
    )
    .unwrap();
    let volume_ml = mask.iter().filter(|&&v| v == 1).count() as f64 * case.voxel_volume_ml();
    let report = ReportContent {
        lesion_volume_ml: volume_ml,
        method: "phantom truth as the mask (test)".into(),
        alert: volume_ml >= 70.0,
        alert_rule: "core >= 70 mL".into(),
        warnings: vec!["phantom study".into()],
    };
    let sr = write_report(
        &out.join("sr.dcm"),
        source,
        &study.attributes,
        &seg,
        &report,
        &provenance,
        &opts,
    )
    .unwrap();

    // Outbox: the PACS is down, the attempt fails and is scheduled with backoff; the state
    // is on disk, so a new process (a new Outbox) picks it up; then the PACS comes up.
    let port = common::free_port();
    let dest = Destination::parse(&format!("PACS@127.0.0.1:{port}")).unwrap();
    let backoff = Backoff {
        base: Duration::from_secs(30),
        max: Duration::from_secs(300),
    };
    let outbox_dir = dir.path().join("outbox");
    let mut files = vec![seg.path.clone()];
    files.extend(sc.iter().map(|o| o.path.clone()));
    files.push(sr.path.clone());
    let outbox = Outbox::open(&outbox_dir).unwrap();
    let job = outbox
        .enqueue(
            &format!("{}/../results", study.attributes.study_uid),
            &files,
        )
        .unwrap();
    assert!(!job.contains('/'));
    let now = SystemTime::now();
    let r = outbox
        .deliver_due(&dest, "STROKESEG", now, &backoff)
        .unwrap();
    assert_eq!(r.failed.len(), 1, "{r:?}");
    assert_eq!(outbox.state(&job).unwrap().attempts, 1);
    let r = outbox
        .deliver_due(&dest, "STROKESEG", now + Duration::from_secs(5), &backoff)
        .unwrap();
    assert_eq!((r.waiting, r.failed.len()), (1, 0), "not due yet: {r:?}");
    drop(outbox);

    let received_dir = dir.path().join("pacs");
    let _pacs = Pacs::start(&storescp, port, &received_dir);
    let outbox = Outbox::open(&outbox_dir).unwrap();
    let r = outbox
        .deliver_due(&dest, "STROKESEG", now + Duration::from_secs(31), &backoff)
        .unwrap();
    assert_eq!(r.delivered, vec![job.clone()], "{r:?}");
    assert!(outbox.pending_jobs().unwrap().is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    while files_in(&received_dir).len() < files.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let received = files_in(&received_dir);
    assert_eq!(received.len(), files.len(), "{received:?}");

    let seg_rx = received
        .iter()
        .find(|p| {
            let h = strokeseg_dicom::read::InstanceHeader::read(p);
            h.is_ok_and(|h| h.sop_class_uid == dicom_dictionary_std::uids::SEGMENTATION_STORAGE)
        })
        .unwrap_or_else(|| panic!("no SEG among {received:?}"));
    let errors = dciodvfy_errors(&dciodvfy, seg_rx);
    assert!(
        errors.is_empty(),
        "dciodvfy on the received SEG:\n{}",
        errors.join("\n")
    );
    // The SC overlay and the SR validate too.
    for p in &received {
        let e = dciodvfy_errors(&dciodvfy, p);
        assert!(
            e.is_empty(),
            "dciodvfy on {}:\n{}",
            p.display(),
            e.join("\n")
        );
    }

    // The received SEG's frames are the mask, voxel for voxel, at the source positions.
    let obj = dicom_object::open_file(seg_rx).unwrap();
    let n_frames: usize = attr::opt_str(&obj, tags::NUMBER_OF_FRAMES)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(n_frames, case.n_slices());
    let bits = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    assert_eq!(unpack_bits(&bits, mask.len()), mask);
    let frames = obj
        .element(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .unwrap()
        .items()
        .unwrap();
    for (k, frame) in frames.iter().enumerate() {
        let pos = frame
            .element(tags::PLANE_POSITION_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0]
            .element(tags::IMAGE_POSITION_PATIENT)
            .unwrap()
            .to_multi_float64()
            .unwrap();
        let want = source.instances[k].position_lps.unwrap();
        assert!(
            pos.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
            "frame {k}: {pos:?} vs {want:?}"
        );
    }
    assert_eq!(
        attr::opt_str(&obj, tags::FRAME_OF_REFERENCE_UID).unwrap(),
        study.attributes.frame_of_reference_uid
    );
    assert_eq!(
        attr::opt_str(&obj, tags::PATIENT_ID).unwrap(),
        study.attributes.patient_id
    );

    if let Some(keep) = std::env::var_os("STROKESEG_DICOM_KEEP") {
        let keep = PathBuf::from(keep);
        let _ = std::fs::remove_dir_all(&keep);
        std::fs::create_dir_all(&keep).unwrap();
        for p in &received {
            std::fs::copy(p, keep.join(p.file_name().unwrap())).unwrap();
        }
    }
}
