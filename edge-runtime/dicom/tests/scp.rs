//! The Storage SCP against real peers: dcmtk `echoscu` and `storescu` on 127.0.0.1 push
//! phantom series; unknown callers, malformed and duplicate instances, and `kill -9`
//! during reception. Skipped (saying so) without dcmtk, unless STROKESEG_DICOM_TOOLS=required.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant, SystemTime};

use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use strokeseg_dicom::RecognizerConfig;
use strokeseg_dicom::attr;
use strokeseg_dicom::read::{
    DicomStudy, InstanceHeader, InstanceLimits, SeriesKind, read_slice_f32, validate_instance,
};
use strokeseg_dicom::scp::{
    STATUS_CANNOT_UNDERSTAND, STATUS_DUPLICATE, ScpConfig, ScpEvent, StorageScp,
};
use strokeseg_dicom::write::{PhantomSeriesOptions, WrittenStudy, write_phantom_study};

const OUR_AE: &str = "STROKESEG";
const SCANNER_AE: &str = "SCANNER";

/// An SCP on a free loopback port in this process, stopped on drop.
struct RunningScp {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    events: Receiver<ScpEvent>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningScp {
    fn start(spool: &Path) -> RunningScp {
        RunningScp::start_with(spool, |_| {})
    }
    fn start_with(spool: &Path, f: impl FnOnce(&mut ScpConfig)) -> RunningScp {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut config =
            ScpConfig::new(OUR_AE, "127.0.0.1:0".parse().unwrap(), &[SCANNER_AE], spool);
        f(&mut config);
        let scp = StorageScp::bind(config).unwrap().with_events(tx);
        let addr = scp.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || scp.serve(&flag).unwrap());
        RunningScp {
            addr,
            stop,
            events: rx,
            thread: Some(thread),
        }
    }
    fn port(&self) -> String {
        self.addr.port().to_string()
    }
    /// Every event so far (waits a moment for the association threads to finish).
    fn drain(&self) -> Vec<ScpEvent> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.recv_timeout(Duration::from_millis(300)) {
            out.push(e);
        }
        out
    }
}

impl Drop for RunningScp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn storescu(bin: &Path, port: &str, calling: &str, files: &[&Path]) -> (bool, String) {
    let mut args = vec![
        "-v",
        "-nh",
        "-aet",
        calling,
        "-aec",
        OUR_AE,
        "127.0.0.1",
        port,
    ];
    let paths: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    common::run(bin, &args)
}

fn received(spool: &Path) -> Vec<PathBuf> {
    common::dcm_files(&spool.join("studies"))
}

#[test]
fn storescu_pushes_a_phantom_study_into_the_spool() {
    let Some(storescu_bin) =
        common::tool("storescu", "storescu_pushes_a_phantom_study_into_the_spool")
    else {
        return;
    };
    let Some(echoscu) = common::tool("echoscu", "storescu_pushes_a_phantom_study_into_the_spool")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let case = common::small_case();
    let opts = PhantomSeriesOptions {
        with_dynamic: true,
        ..PhantomSeriesOptions::default()
    };
    let written = write_phantom_study(&case, &dir.path().join("sent"), &opts).unwrap();
    let spool = dir.path().join("spool");
    let scp = RunningScp::start(&spool);

    let (ok, out) = common::run(
        &echoscu,
        &["-aet", SCANNER_AE, "-aec", OUR_AE, "127.0.0.1", &scp.port()],
    );
    assert!(ok, "echoscu failed: {out}");

    let started = Instant::now();
    let (ok, out) = common::run(
        &storescu_bin,
        &[
            "-aet",
            SCANNER_AE,
            "-aec",
            OUR_AE,
            "127.0.0.1",
            &scp.port(),
            "+sd",
            "+r",
            &dir.path().join("sent").display().to_string(),
        ],
    );
    let seconds = started.elapsed().as_secs_f64();
    assert!(ok, "storescu failed: {out}");
    let n = written.files().count();
    let got = received(&spool);
    assert_eq!(got.len(), n);
    println!(
        "received {n} instances of 256 x 256 x 16 bit from storescu on loopback in {seconds:.2} s: {:.0} instances/s",
        n as f64 / seconds
    );
    let events = scp.drain();
    assert!(events.contains(&ScpEvent::Echo));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, ScpEvent::Stored { .. }))
            .count(),
        n
    );

    // What arrived is what was sent, value for value, and recognised.
    let study_dir = spool.join("studies").join(&written.study.study_uid);
    let study = DicomStudy::from_dir(&study_dir, &RecognizerConfig::default()).unwrap();
    assert!(
        study
            .find(&SeriesKind::Map(strokeseg_shared::modality::Modality::Tmax))
            .is_some()
    );
    assert!(
        study
            .series
            .iter()
            .any(|s| matches!(s.kind, SeriesKind::Dynamic { .. }))
    );
    let slice = case.slice_voxels();
    let (mut a, mut b) = (vec![0f32; slice], vec![0f32; slice]);
    for series in &written.series[..5] {
        for (file, sop) in series.files.iter().zip(&series.sop_instance_uids) {
            let sent = InstanceHeader::read(file).unwrap();
            let path = study_dir
                .join(&series.series_uid)
                .join(format!("{sop}.dcm"));
            let got = InstanceHeader::read(&path).unwrap();
            read_slice_f32(&sent, &mut a).unwrap();
            read_slice_f32(&got, &mut b).unwrap();
            assert_eq!(a, b, "{}", path.display());
        }
    }

    // Completion by idle time.
    let s = strokeseg_dicom::scp::Spool::open(&spool).unwrap();
    assert!(
        s.take_complete(Duration::from_secs(3600), SystemTime::now())
            .unwrap()
            .is_empty()
    );
    let done = s
        .take_complete(
            Duration::from_secs(0),
            SystemTime::now() + Duration::from_secs(1),
        )
        .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(common::dcm_files(&done[0]).len(), n);
}

#[test]
fn an_unknown_calling_ae_title_is_rejected_at_association() {
    let Some(echoscu) = common::tool(
        "echoscu",
        "an_unknown_calling_ae_title_is_rejected_at_association",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let scp = RunningScp::start(dir.path());
    let (ok, out) = common::run(
        &echoscu,
        &["-aet", "INTRUDER", "-aec", OUR_AE, "127.0.0.1", &scp.port()],
    );
    assert!(!ok, "echoscu from INTRUDER succeeded: {out}");
    assert!(out.contains("Calling AE Title Not Recognized"), "{out}");
    let (ok, out) = common::run(
        &echoscu,
        &[
            "-aet",
            SCANNER_AE,
            "-aec",
            "SOMEONE",
            "127.0.0.1",
            &scp.port(),
        ],
    );
    assert!(
        !ok && out.contains("Called AE Title Not Recognized"),
        "{out}"
    );
    let events = scp.drain();
    assert!(
        events.iter().any(
            |e| matches!(e, ScpEvent::Rejected { calling_ae, reason, .. }
            if calling_ae == "INTRUDER" && reason.contains("allow-list"))
        ),
        "{events:?}"
    );
    drop(scp);

    // A known AE title from an address not on the peer allow-list.
    let scp = RunningScp::start_with(dir.path(), |c| {
        c.allowed_peers = vec!["192.0.2.7".parse().unwrap()];
    });
    let (ok, out) = common::run(
        &echoscu,
        &["-aet", SCANNER_AE, "-aec", OUR_AE, "127.0.0.1", &scp.port()],
    );
    assert!(!ok, "echoscu from an address off the list succeeded: {out}");
    let events = scp.drain();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ScpEvent::Rejected { reason, .. }
            if reason.contains("peer address"))),
        "{events:?}"
    );
}

/// A copy of `src` at `dst` with `f` applied.
fn edited(src: &Path, dst: &Path, f: impl FnOnce(&mut attr::Object)) -> PathBuf {
    let mut file = dicom_object::open_file(src).unwrap();
    f(&mut file);
    file.write_to_file(dst).unwrap();
    dst.to_path_buf()
}

#[test]
fn malformed_and_duplicate_instances_get_a_status_never_a_crash() {
    let Some(storescu_bin) = common::tool(
        "storescu",
        "malformed_and_duplicate_instances_get_a_status_never_a_crash",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let case = common::small_case();
    let written = write_phantom_study(
        &case,
        &dir.path().join("sent"),
        &PhantomSeriesOptions::default(),
    )
    .unwrap();
    let spool = dir.path().join("spool");
    let scp = RunningScp::start(&spool);
    let good = &written.series[1].files[0];
    let bad_dir = dir.path().join("bad");
    std::fs::create_dir_all(&bad_dir).unwrap();
    let mut n = 0;
    let mut new_uid = |o: &mut attr::Object| {
        n += 1;
        attr::put_str(o, tags::SOP_INSTANCE_UID, VR::UI, &format!("2.25.{n}"));
    };
    let no_pixels = edited(good, &bad_dir.join("no_pixels.dcm"), |o| {
        new_uid(o);
        o.remove_element(tags::PIXEL_DATA);
    });
    let absurd = edited(good, &bad_dir.join("absurd.dcm"), |o| {
        new_uid(o);
        attr::put_u16(o, tags::ROWS, &[60000]);
    });
    let bits = edited(good, &bad_dir.join("bits.dcm"), |o| {
        new_uid(o);
        attr::put_u16(o, tags::BITS_ALLOCATED, &[12]);
    });
    for (file, what) in [
        (&no_pixels, "PixelData"),
        (&absurd, "Rows"),
        (&bits, "BitsAllocated"),
    ] {
        let (_, out) = storescu(&storescu_bin, &scp.port(), SCANNER_AE, &[file]);
        let events = scp.drain();
        let failed = events.iter().find_map(|e| match e {
            ScpEvent::Failed { status, reason, .. } => Some((*status, reason.clone())),
            _ => None,
        });
        let (status, reason) =
            failed.unwrap_or_else(|| panic!("{what}: no failure: {events:?}\n{out}"));
        assert_eq!(status, STATUS_CANNOT_UNDERSTAND, "{what}");
        assert!(reason.contains(what), "{what}: {reason}");
        assert!(out.contains("CannotUnderstand"), "{out}");
    }
    assert!(received(&spool).is_empty());

    // The same instance twice: one file, both acknowledged. Another object under the
    // same SOP Instance UID: refused, the first copy kept.
    let (ok, out) = storescu(&storescu_bin, &scp.port(), SCANNER_AE, &[good, good]);
    assert!(ok, "{out}");
    let events = scp.drain();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, ScpEvent::Stored { .. }))
            .count(),
        1,
        "{events:?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, ScpEvent::Duplicate { .. }))
            .count(),
        1,
        "{events:?}"
    );
    let other = edited(good, &bad_dir.join("other.dcm"), |o| {
        attr::put_str(o, tags::PATIENT_NAME, VR::PN, "Someone^Else");
    });
    storescu(&storescu_bin, &scp.port(), SCANNER_AE, &[&other]);
    let events = scp.drain();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ScpEvent::Failed { status, .. } if *status == STATUS_DUPLICATE)),
        "{events:?}"
    );
    let kept = received(&spool);
    assert_eq!(kept.len(), 1);
    assert_eq!(
        std::fs::read(&kept[0]).unwrap()[132..].len(),
        std::fs::read(good).unwrap()[132..].len()
    );

    // UIDs that would climb out of the spool land inside it, sanitised.
    let escape = edited(good, &bad_dir.join("escape.dcm"), |o| {
        attr::put_str(o, tags::SOP_INSTANCE_UID, VR::UI, "2.25.999");
        attr::put_str(o, tags::STUDY_INSTANCE_UID, VR::UI, "../../escape");
        attr::put_str(o, tags::SERIES_INSTANCE_UID, VR::UI, "a/b");
    });
    let (_, out) = storescu(&storescu_bin, &scp.port(), SCANNER_AE, &[&escape]);
    scp.drain();
    let landed = spool.join("studies").join("______escape");
    assert!(landed.join("a_b").join("2.25.999.dcm").is_file(), "{out}");
    assert!(!dir.path().join("escape").exists());
    std::fs::remove_dir_all(landed).unwrap();

    // A truncated data set, sent by hand (dcmtk will not send a file it cannot read).
    let bytes = {
        let file = dicom_object::open_file(&written.series[2].files[0]).unwrap();
        let mut data = Vec::new();
        file.write_dataset_with_ts(
            &mut data,
            &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .unwrap();
        data.truncate(data.len() / 2);
        data
    };
    let dest =
        strokeseg_dicom::scu::Destination::parse(&format!("{OUR_AE}@127.0.0.1:{}", scp.port()))
            .unwrap();
    let mut association = dicom_ul::ClientAssociationOptions::new()
        .calling_ae_title(SCANNER_AE)
        .with_presentation_context(
            uids::CT_IMAGE_STORAGE,
            vec![uids::EXPLICIT_VR_LITTLE_ENDIAN],
        )
        .establish_with(&dest.to_string())
        .unwrap();
    let pc = association.presentation_contexts()[0].id;
    let err = strokeseg_dicom::scu::send_dataset_bytes(
        &mut association,
        &dest,
        pc,
        uids::CT_IMAGE_STORAGE,
        &written.series[2].sop_instance_uids[0],
        1,
        &bytes,
    )
    .unwrap_err();
    assert!(err.to_string().contains("0xc000"), "{err}");
    let _ = association.release();
    let events = scp.drain();
    assert!(
        events.iter().any(
            |e| matches!(e, ScpEvent::Failed { status, .. } if *status == STATUS_CANNOT_UNDERSTAND)
        ),
        "{events:?}"
    );
    assert_eq!(received(&spool).len(), 1);
    assert!(common::dcm_files(&spool.join("incoming")).is_empty());
}

/// SOP Instance UIDs storescu -v reports as stored with success.
fn acknowledged(storescu_output: &str, written: &WrittenStudy) -> BTreeSet<String> {
    let mut sop_of = std::collections::BTreeMap::new();
    for s in &written.series {
        for (f, sop) in s.files.iter().zip(&s.sop_instance_uids) {
            sop_of.insert(f.display().to_string(), sop.clone());
        }
    }
    let mut current: Option<String> = None;
    let mut out = BTreeSet::new();
    for line in storescu_output.lines() {
        if let Some(path) = line.split("Sending file: ").nth(1) {
            current = sop_of.get(path.trim()).cloned();
        } else if line.contains("Received Store Response (Success)")
            && let Some(sop) = current.take()
        {
            out.insert(sop);
        }
    }
    out
}

#[test]
fn kill_9_during_reception_loses_no_acknowledged_instance() {
    let Some(storescu_bin) = common::tool(
        "storescu",
        "kill_9_during_reception_loses_no_acknowledged_instance",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let case = common::small_case();
    let opts = PhantomSeriesOptions {
        with_dynamic: true,
        ..PhantomSeriesOptions::default()
    };
    let sent = dir.path().join("sent");
    let written = write_phantom_study(&case, &sent, &opts).unwrap();
    let spool = dir.path().join("spool");
    let port = common::free_port().to_string();
    let start = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_strokeseg-dicom"))
            .args([
                "scp",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--allow",
                SCANNER_AE,
                "--spool",
            ])
            .arg(&spool)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let wait_listening = |child: &mut std::process::Child| {
        use std::io::BufRead as _;
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("listening"), "{line}");
    };
    let mut scp = start();
    wait_listening(&mut scp);
    let sender = {
        let (bin, port, sent) = (storescu_bin.clone(), port.clone(), sent.clone());
        // Nagle left on (TCP_NODELAY=0): ~40 ms per instance, a wide window for the kill.
        std::thread::spawn(move || {
            common::run_with_nodelay(
                false,
                &bin,
                &[
                    "-v",
                    "-nh",
                    "-aet",
                    SCANNER_AE,
                    "-aec",
                    OUR_AE,
                    "127.0.0.1",
                    &port,
                    "+sd",
                    "+r",
                    &sent.display().to_string(),
                ],
            )
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while received(&spool).len() < 8 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    scp.kill().unwrap(); // SIGKILL
    let _ = scp.wait();
    let (_, out) = sender.join().unwrap();
    let acked = acknowledged(&out, &written);
    let total = written.files().count();
    let stored = received(&spool);
    println!(
        "killed after {} of {total} instances acknowledged, {} in the spool",
        acked.len(),
        stored.len()
    );
    assert!(
        !acked.is_empty() && acked.len() < total,
        "the kill missed the transfer ({} acknowledged)",
        acked.len()
    );
    let mut in_spool = BTreeSet::new();
    for f in &stored {
        let h = validate_instance(f, &InstanceLimits::default())
            .unwrap_or_else(|e| panic!("incomplete file in the spool: {e}"));
        in_spool.insert(h.sop_instance_uid);
    }
    let lost: Vec<&String> = acked.difference(&in_spool).collect();
    assert!(
        lost.is_empty(),
        "acknowledged but not in the spool: {lost:?}"
    );

    // Restart: the partial instance is cleaned away; the sender's retry completes the study.
    let mut scp = start();
    wait_listening(&mut scp);
    assert!(common::dcm_files(&spool.join("incoming")).is_empty());
    let (ok, out) = common::run(
        &storescu_bin,
        &[
            "-nh",
            "-aet",
            SCANNER_AE,
            "-aec",
            OUR_AE,
            "127.0.0.1",
            &port,
            "+sd",
            "+r",
            &sent.display().to_string(),
        ],
    );
    scp.kill().unwrap();
    let _ = scp.wait();
    assert!(ok, "{out}");
    assert_eq!(received(&spool).len(), total);
}

#[test]
fn compressed_transfer_syntaxes_are_refused_at_negotiation() {
    // No external tool: dicom-ul's client proposes CT with JPEG Baseline only, then with
    // JPEG Baseline or Explicit VR Little Endian.
    let dir = tempfile::tempdir().unwrap();
    let scp = RunningScp::start(dir.path());
    let address = format!("{OUR_AE}@127.0.0.1:{}", scp.port());
    let jpeg = "1.2.840.10008.1.2.4.50";
    let only_jpeg = dicom_ul::ClientAssociationOptions::new()
        .calling_ae_title(SCANNER_AE)
        .with_presentation_context(uids::CT_IMAGE_STORAGE, vec![jpeg])
        .establish_with(&address);
    match only_jpeg {
        Err(_) => {}
        Ok(a) => {
            let pc = &a.presentation_contexts()[0];
            assert_ne!(
                pc.reason,
                dicom_ul::pdu::PresentationContextResultReason::Acceptance,
                "{pc:?}"
            );
            let _ = a.abort();
        }
    }
    let fallback = dicom_ul::ClientAssociationOptions::new()
        .calling_ae_title(SCANNER_AE)
        .with_presentation_context(
            uids::CT_IMAGE_STORAGE,
            vec![jpeg, uids::EXPLICIT_VR_LITTLE_ENDIAN],
        )
        .establish_with(&address)
        .unwrap();
    let pc = &fallback.presentation_contexts()[0];
    assert_eq!(
        pc.reason,
        dicom_ul::pdu::PresentationContextResultReason::Acceptance
    );
    assert_eq!(
        pc.transfer_syntax.trim_end_matches('\0'),
        uids::EXPLICIT_VR_LITTLE_ENDIAN
    );
    fallback.release().unwrap();
}

/// Every file of `written` converted by the dcmtk `tool args src dst` into `dst_dir`.
fn converted(tool: &Path, args: &[&str], written: &WrittenStudy, dst_dir: &Path) -> Vec<PathBuf> {
    let files: Vec<PathBuf> = written.files().cloned().collect();
    common::converted(tool, args, &files, dst_dir)
}

/// The transfer syntax in the file meta of `path`.
fn transfer_syntax(path: &Path) -> String {
    dicom_object::OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .unwrap()
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_owned()
}

/// The case folder's NIfTI volumes of the study `study_uid` in `spool`, file name → bytes.
fn case_volumes(spool: &Path, study_uid: &str, case_dir: &Path) -> Vec<(String, Vec<u8>)> {
    let study = DicomStudy::from_dir(
        &spool.join("studies").join(study_uid),
        &RecognizerConfig::default(),
    )
    .unwrap();
    let files = study.write_case_folder(case_dir).unwrap();
    files
        .files
        .values()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn rle_and_deflated_pushes_read_as_the_uncompressed_push() {
    let test = "rle_and_deflated_pushes_read_as_the_uncompressed_push";
    let (Some(storescu_bin), Some(dcmcrle), Some(dcmconv)) = (
        common::tool("storescu", test),
        common::tool("dcmcrle", test),
        common::tool("dcmconv", test),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let case = common::small_case();
    let written = write_phantom_study(
        &case,
        &dir.path().join("sent"),
        &PhantomSeriesOptions::default(),
    )
    .unwrap();
    let n = written.files().count();
    let plain: Vec<PathBuf> = written.files().cloned().collect();
    let rle = converted(&dcmcrle, &[], &written, &dir.path().join("rle"));
    let deflated = converted(&dcmconv, &["+td"], &written, &dir.path().join("deflated"));
    assert_eq!(transfer_syntax(&rle[0]), uids::RLE_LOSSLESS);
    assert_eq!(
        transfer_syntax(&deflated[0]),
        uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
    );

    let mut volumes = Vec::new();
    for (name, files, propose, ts) in [
        ("plain", &plain, "-xe", uids::EXPLICIT_VR_LITTLE_ENDIAN),
        ("rle", &rle, "-xr", uids::RLE_LOSSLESS),
        (
            "deflated",
            &deflated,
            "-xd",
            uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        ),
    ] {
        let spool = dir.path().join(format!("spool-{name}"));
        let scp = RunningScp::start(&spool);
        let mut args = vec![
            "-v",
            "-nh",
            propose,
            "-aet",
            SCANNER_AE,
            "-aec",
            OUR_AE,
            "127.0.0.1",
        ];
        let port = scp.port();
        args.push(&port);
        let paths: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        args.extend(paths.iter().map(String::as_str));
        let (ok, out) = common::run(&storescu_bin, &args);
        assert!(ok, "{name}: storescu failed: {out}");
        let got = received(&spool);
        assert_eq!(got.len(), n, "{name}: {out}");
        // The association accepted the syntax: the instances are spooled as received.
        for f in &got {
            assert_eq!(transfer_syntax(f), ts, "{name}: {}", f.display());
        }
        let events = scp.drain();
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, ScpEvent::ContextRefused { .. } | ScpEvent::Failed { .. })),
            "{name}: {events:?}"
        );
        volumes.push((
            name,
            case_volumes(
                &spool,
                &written.study.study_uid,
                &dir.path().join(format!("case-{name}")),
            ),
        ));
    }
    // Decoded to the same native samples: the segmenter's inputs are byte-identical.
    let (_, reference) = &volumes[0];
    assert_eq!(reference.len(), 5);
    for (name, v) in &volumes[1..] {
        assert!(
            v == reference,
            "{name}: case volumes differ from the uncompressed push"
        );
    }
}

#[test]
fn a_refused_syntax_falls_back_and_corrupt_compressed_data_is_rejected() {
    let test = "a_refused_syntax_falls_back_and_corrupt_compressed_data_is_rejected";
    let (Some(storescu_bin), Some(dcmcrle), Some(dcmcjpls), Some(dcmconv)) = (
        common::tool("storescu", test),
        common::tool("dcmcrle", test),
        common::tool("dcmcjpls", test),
        common::tool("dcmconv", test),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let case = common::small_case();
    let written = write_phantom_study(
        &case,
        &dir.path().join("sent"),
        &PhantomSeriesOptions::default(),
    )
    .unwrap();
    let spool = dir.path().join("spool");
    let scp = RunningScp::start(&spool);
    let one = WrittenStudy {
        series: vec![written.series[1].clone()],
        ..written.clone()
    };

    // JPEG 2000 and JPEG-LS: refused at negotiation (no pure-Rust decoder linked), the
    // event (and log line) naming the refusal. Uncompressed files proposed as JPEG 2000
    // Lossless or uncompressed: storescu falls back to the uncompressed context. JPEG-LS
    // files: storescu (no JPEG-LS decoder of its own) fails to send them. Never stored in a
    // refused syntax, nothing half-stored.
    let port = scp.port();
    let jls = converted(&dcmcjpls, &[], &one, &dir.path().join("jls"));
    assert_eq!(transfer_syntax(&jls[0]), "1.2.840.10008.1.2.4.80");
    let plain = one.series[0].files.clone();
    for (compressed, propose, refused, falls_back) in [
        (&plain, "-xv", "JPEG 2000 Lossless", true),
        (&jls, "-xt", "JPEG-LS Lossless", false),
    ] {
        let paths: Vec<String> = compressed.iter().map(|f| f.display().to_string()).collect();
        let mut args = vec!["-v", "-nh", propose, "-aet", SCANNER_AE, "-aec", OUR_AE];
        args.extend(["127.0.0.1", port.as_str()]);
        args.extend(paths.iter().map(String::as_str));
        let (_, out) = common::run(&storescu_bin, &args);
        let events = scp.drain();
        assert!(
            events.iter().any(|e| matches!(
                e,
                ScpEvent::ContextRefused { abstract_syntax, reason, .. }
                    if abstract_syntax == uids::CT_IMAGE_STORAGE
                        && reason.contains("none of the proposed transfer syntaxes")
            )),
            "{refused}: {events:?}\n{out}"
        );
        let got = received(&spool);
        for f in &got {
            assert_eq!(
                transfer_syntax(f),
                uids::EXPLICIT_VR_LITTLE_ENDIAN,
                "{refused}"
            );
        }
        if !falls_back {
            assert!(got.is_empty(), "{refused}: {out}");
            continue;
        }
        assert_eq!(got.len(), compressed.len(), "{refused}: {out}");
        let slice = case.slice_voxels();
        let (mut a, mut b) = (vec![0f32; slice], vec![0f32; slice]);
        for (file, sop) in one.series[0]
            .files
            .iter()
            .zip(&one.series[0].sop_instance_uids)
        {
            let path = spool
                .join("studies")
                .join(&one.study.study_uid)
                .join(&one.series[0].series_uid)
                .join(format!("{sop}.dcm"));
            read_slice_f32(&InstanceHeader::read(file).unwrap(), &mut a).unwrap();
            read_slice_f32(&InstanceHeader::read(&path).unwrap(), &mut b).unwrap();
            assert_eq!(a, b, "{refused}: {}", path.display());
        }
        for f in got {
            std::fs::remove_file(f).unwrap();
        }
    }

    // A corrupt RLE instance (its second segment cut short): 0xC000, a reason naming the
    // file and the segment, nothing spooled.
    let rle = converted(&dcmcrle, &[], &one, &dir.path().join("rle"));
    let corrupt = edited(&rle[0], &dir.path().join("corrupt-rle.dcm"), |o| {
        let mut value = o.take_element(tags::PIXEL_DATA).unwrap().into_value();
        let fragment = &mut value.fragments_mut().unwrap()[0];
        let second = u32::from_le_bytes(fragment[8..12].try_into().unwrap()) as usize;
        fragment.truncate(second + 64);
        o.put(dicom_core::DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            value,
        ));
    });
    let corrupt_s = corrupt.display().to_string();
    let (_, out) = common::run(
        &storescu_bin,
        &[
            "-v",
            "-nh",
            "-xr",
            "-aet",
            SCANNER_AE,
            "-aec",
            OUR_AE,
            "127.0.0.1",
            &port,
            &corrupt_s,
        ],
    );
    let events = scp.drain();
    let (status, reason) = events
        .iter()
        .find_map(|e| match e {
            ScpEvent::Failed { status, reason, .. } => Some((*status, reason.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("corrupt RLE accepted: {events:?}\n{out}"));
    println!("corrupt RLE refused: {reason}");
    assert_eq!(status, STATUS_CANNOT_UNDERSTAND, "{reason}");
    assert!(
        reason.contains("corrupt RLE") && reason.contains("segment 2"),
        "{reason}"
    );
    assert!(out.contains("CannotUnderstand"), "{out}");
    assert!(received(&spool).is_empty());

    // A bad deflate stream in a file: a clear error naming the file, no panic.
    let deflated = converted(&dcmconv, &["+td"], &one, &dir.path().join("deflated"));
    let mut bytes = std::fs::read(&deflated[0]).unwrap();
    let len = bytes.len();
    for b in &mut bytes[len / 2..len / 2 + 64] {
        *b ^= 0x5A;
    }
    let broken = dir.path().join("bad-deflate.dcm");
    std::fs::write(&broken, &bytes).unwrap();
    let cut = dir.path().join("cut-deflate.dcm");
    std::fs::write(&cut, &bytes[..len / 3]).unwrap();
    for f in [&broken, &cut] {
        let e = validate_instance(f, &InstanceLimits::default()).unwrap_err();
        println!("bad deflate stream refused: {e}");
        assert!(e.to_string().contains(&f.display().to_string()), "{e}");
        assert!(e.to_string().contains("deflate stream"), "{e}");
    }
}

#[test]
fn storescu_pushes_an_enhanced_ct_study_that_reads_as_the_single_frame_study() {
    let test = "storescu_pushes_an_enhanced_ct_study_that_reads_as_the_single_frame_study";
    let Some(storescu_bin) = common::tool("storescu", test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let case = common::small_case();
    let opts = |multi_frame| PhantomSeriesOptions {
        multi_frame,
        with_dynamic: true,
        ..PhantomSeriesOptions::default()
    };
    let single = dir.path().join("single");
    write_phantom_study(&case, &single, &opts(false)).unwrap();
    let sent = dir.path().join("sent");
    let written = write_phantom_study(&case, &sent, &opts(true)).unwrap();
    let spool = dir.path().join("spool");
    let scp = RunningScp::start(&spool);
    let (ok, out) = common::run(
        &storescu_bin,
        &[
            "-aet",
            SCANNER_AE,
            "-aec",
            OUR_AE,
            "127.0.0.1",
            &scp.port(),
            "+sd",
            "+r",
            &sent.display().to_string(),
        ],
    );
    assert!(ok, "storescu failed: {out}");
    assert_eq!(received(&spool).len(), written.files().count());
    let stored = scp
        .drain()
        .iter()
        .filter(|e| matches!(e, ScpEvent::Stored { .. }))
        .count();
    assert_eq!(stored, written.files().count());

    let study_dir = spool.join("studies").join(&written.study.study_uid);
    let mut folders = Vec::new();
    for (name, from) in [("single", single.as_path()), ("received", &study_dir)] {
        let study = DicomStudy::from_dir(from, &RecognizerConfig::default()).unwrap();
        let maps = dir.path().join(format!("maps-{name}"));
        study.write_case_folder(&maps).unwrap();
        let dynamic = dir.path().join(format!("dynamic-{name}"));
        study.write_dynamic_case_folder(&dynamic).unwrap();
        folders.push([
            common::case_folder_bytes(&maps),
            common::case_folder_bytes(&dynamic),
        ]);
    }
    assert_eq!(folders[0][0].len(), 5);
    assert_eq!(folders[0][1].len(), 2);
    assert!(
        folders[0] == folders[1],
        "the pushed Enhanced CT study's case folders differ from the single-frame study's"
    );
}
