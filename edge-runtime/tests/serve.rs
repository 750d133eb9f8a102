//! `strokeseg-edge serve` end to end with real peers, no mocks: dcmtk's `storescu` pushes a
//! phantom study to the node, dcmtk's `storescp` plays the PACS, the received Segmentation
//! passes dicom3tools' `dciodvfy` and its frames equal the NIfTI mask of the same study
//! voxel for voxel. Faults: an unknown calling AE title, the PACS down then up, `kill -9`
//! of the node during reception and during sending, a study with only the raw dynamic
//! series (refused into `failed/` with the reason), and one with the raw dynamic series and
//! the plain CT (maps computed, SEG delivered).
//!
//! Tests needing dcmtk or dicom3tools print SKIPPED without them, unless
//! `STROKESEG_DICOM_TOOLS=required` (CI's `dicom` step) makes absence a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dicom_dictionary_std::tags;
use strokeseg_dicom::derived::{SEGMENTATION_SOP_CLASS_UID, unpack_bits};
use strokeseg_dicom::scu::file_sop_uids;
use strokeseg_dicom::testing::{dcm_files, free_port, tool};
use strokeseg_dicom::write::{
    PhantomSeriesOptions, WrittenStudy, phantom_dataset_options, write_phantom_study,
};
use strokeseg_model::fixture::FixtureOptions;
use strokeseg_phantom::PhantomCase;
use strokeseg_shared::PreprocessConfig;
use strokeseg_shared::config::MapsProvenance;
use strokeseg_shared::perfusion::PerfusionPreset;

fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every regular file in `dir` (storescp writes `SEG.<uid>`, `CT.<uid>`, …).
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A 2-slice phantom case with a lesion and the indicator-dilution dynamic series
/// (`write::phantom_dataset_options`), as DICOM series in `dir`.
fn phantom_study(dir: &Path, key: &str, with_dynamic: bool) -> (PhantomCase, WrittenStudy) {
    let case = strokeseg_phantom::generate_case(13, 0, &phantom_dataset_options(2)).unwrap();
    let written = write_phantom_study(
        &case,
        dir,
        &PhantomSeriesOptions {
            study_key: format!("serve-test/{key}"),
            with_dynamic,
            ..PhantomSeriesOptions::default()
        },
    )
    .unwrap();
    (case, written)
}

/// dcmtk's storescp as the PACS, killed on drop.
struct Pacs {
    child: Child,
    dir: PathBuf,
}

impl Pacs {
    fn start(bin: &Path, port: u16, dir: &Path) -> Pacs {
        std::fs::create_dir_all(dir).unwrap();
        let child = Command::new(bin)
            .env("TCP_NODELAY", "1")
            .args(["-aet", "PACS", "-od"])
            .arg(dir)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_listening(port, "storescp");
        Pacs {
            child,
            dir: dir.to_path_buf(),
        }
    }

    /// Waits until `n` objects arrived (at most `timeout`); returns them.
    fn wait_for(&self, n: usize, timeout: Duration) -> Vec<PathBuf> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = files_in(&self.dir);
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pacs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node: its folders, config and (when running) process.
struct Node {
    root: PathBuf,
    config: PathBuf,
    port: u16,
    log: PathBuf,
    child: Option<Child>,
    starts: usize,
}

impl Node {
    /// A node with the fixture model (trained on provided maps).
    fn new(dir: &Path, pacs_port: u16) -> Node {
        let model = common::fp32_model(dir);
        Node::with_model(dir, pacs_port, &model)
    }

    fn with_model(dir: &Path, pacs_port: u16, model: &Path) -> Node {
        let root = dir.join("node");
        std::fs::create_dir_all(&root).unwrap();
        let port = free_port();
        let config = dir.join("edge.toml");
        std::fs::write(
            &config,
            format!(
                "[watch]\nroot = {root:?}\npoll_interval_ms = 50\n\n\
                 [segment]\nmethod = \"model\"\nmodel = {model:?}\n\n\
                 [dicom]\nae_title = \"STROKESEG\"\nlisten_address = \"127.0.0.1\"\nport = {port}\n\
                 allowed_calling_ae_titles = [\"TEST_CT\"]\nidle_seconds = 1\n\
                 retry_base_seconds = 1\nretry_max_seconds = 2\n\n\
                 [dicom.destination]\nae_title = \"PACS\"\nhost = \"127.0.0.1\"\nport = {pacs_port}\n"
            ),
        )
        .unwrap();
        Node {
            log: dir.join("serve.log"),
            root,
            config,
            port,
            child: None,
            starts: 0,
        }
    }

    fn start_with(&mut self, failpoint: Option<&str>) {
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strokeseg-edge"));
        cmd.args(["serve", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(f) = failpoint {
            cmd.env("STROKESEG_EDGE_FAILPOINT", f);
        }
        self.child = Some(cmd.spawn().unwrap());
        wait_listening(self.port, "serve");
    }

    fn start(&mut self) {
        self.start_with(None);
    }

    fn kill_9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to end by itself (a failpoint's abort).
    fn wait_exit(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let c = self.child.as_mut().unwrap();
        while c.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "serve did not stop: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = None;
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Names of the sub-folders of `name` (inbox, done, failed, …), hidden ones left out.
    fn studies_in(&self, name: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir(name))
            .map(|r| {
                r.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn wait_until(&self, what: &str, timeout: Duration, f: impl Fn(&Node) -> bool) {
        let deadline = Instant::now() + timeout;
        while !f(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// storescu of `files` to the node as `calling`; (success, output).
fn storescu(bin: &Path, port: u16, calling: &str, files: &[PathBuf]) -> (bool, String) {
    storescu_proposing(bin, port, calling, &[], files)
}

/// [`storescu`] with storescu's transfer-syntax options `propose` (`-xr`, `-xd`, …).
fn storescu_proposing(
    bin: &Path,
    port: u16,
    calling: &str,
    propose: &[&str],
    files: &[PathBuf],
) -> (bool, String) {
    let mut cmd = Command::new(bin);
    cmd.env("TCP_NODELAY", "1")
        .args(propose)
        .args(["-aet", calling, "-aec", "STROKESEG", "127.0.0.1"])
        .arg(port.to_string())
        .args(files);
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn is_seg(p: &Path) -> bool {
    file_sop_uids(p).is_ok_and(|(class, _)| class == SEGMENTATION_SOP_CLASS_UID)
}

/// The NIfTI mask of the node's outputs of the one study in `outbox/`, `[slice][y][x]`.
fn nifti_mask(node: &Node) -> Vec<u8> {
    let studies = node.studies_in("outbox");
    assert_eq!(studies.len(), 1, "{studies:?}");
    let path = node
        .dir("outbox")
        .join(&studies[0])
        .join(strokeseg_edge::report::MASK_FILE);
    let mut r = strokeseg_io::NiftiVolumeReader::open(&path).unwrap();
    let [nx, ny, nz] = r.dims();
    let mut slice = vec![0f32; nx * ny];
    let mut out = Vec::with_capacity(nx * ny * nz);
    for z in 0..nz {
        r.read_slice_f32(z, &mut slice).unwrap();
        out.extend(slice.iter().map(|&v| u8::from(v > 0.5)));
    }
    out
}

fn seg_frames(seg: &Path, n: usize) -> Vec<u8> {
    let obj = dicom_object::open_file(seg).unwrap();
    let bits = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    unpack_bits(&bits, n)
}

fn dciodvfy_errors(bin: &Path, file: &Path) -> Vec<String> {
    let out = Command::new(bin).arg(file).output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .lines()
    .filter(|l| l.starts_with("Error"))
    .map(str::to_owned)
    .collect()
}

#[test]
fn storescu_to_serve_to_storescp_gives_a_valid_seg_equal_to_the_mask() {
    let test = "storescu_to_serve_to_storescp_gives_a_valid_seg_equal_to_the_mask";
    let (Some(storescu_bin), Some(storescp), Some(dciodvfy)) = (
        tool("storescu", test),
        tool("storescp", test),
        tool("dciodvfy", test),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (case, written) = phantom_study(&dir.path().join("scanner"), "e2e", false);
    let pacs_port = free_port();
    let pacs = Pacs::start(&storescp, pacs_port, &dir.path().join("pacs"));
    let mut node = Node::new(dir.path(), pacs_port);
    node.start();
    let files: Vec<PathBuf> = written.files().cloned().collect();
    let (ok, out) = storescu(&storescu_bin, node.port, "TEST_CT", &files);
    assert!(ok, "storescu: {out}");
    let sent = Instant::now();
    // SEG + one overlay image per slice + SR.
    let expected = 2 + case.n_slices();
    let received = pacs.wait_for(expected, Duration::from_secs(30));
    let turnaround_s = sent.elapsed().as_secs_f64();
    assert_eq!(
        received.len(),
        expected,
        "{received:?}\n{}",
        node.log_text()
    );
    let seg = received
        .iter()
        .find(|p| is_seg(p))
        .expect("a SEG at the PACS");
    eprintln!(
        "turnaround: {turnaround_s:.2} s from the last instance acknowledged to all {expected} results at the PACS (idle_seconds 1, 2 slices, fixture model, debug build)"
    );
    for p in &received {
        let errors = dciodvfy_errors(&dciodvfy, p);
        assert!(
            errors.is_empty(),
            "dciodvfy {}:\n{}",
            p.display(),
            errors.join("\n")
        );
    }
    let mask = nifti_mask(&node);
    assert_eq!(mask.len(), case.ot.len());
    assert_eq!(seg_frames(seg, mask.len()), mask, "SEG frames = NIfTI mask");
    // The study went through watch's queue.
    assert_eq!(node.studies_in("done").len(), 1);
    assert!(node.studies_in("failed").is_empty());
}

#[test]
fn rle_and_deflated_pushes_segment_to_the_mask_of_the_uncompressed_push() {
    let test = "rle_and_deflated_pushes_segment_to_the_mask_of_the_uncompressed_push";
    let (Some(storescu_bin), Some(storescp), Some(dcmcrle), Some(dcmconv)) = (
        tool("storescu", test),
        tool("storescp", test),
        tool("dcmcrle", test),
        tool("dcmconv", test),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (case, written) = phantom_study(&dir.path().join("scanner"), "compressed", false);
    let model = common::fp32_model(dir.path());
    let plain: Vec<PathBuf> = written.files().cloned().collect();
    // dcmtk compresses the scanner's files: RLE Lossless, Deflated Explicit VR LE.
    let converted = |bin: &Path, args: &[&str], name: &str| -> Vec<PathBuf> {
        let out_dir = dir.path().join(name);
        std::fs::create_dir_all(&out_dir).unwrap();
        plain
            .iter()
            .enumerate()
            .map(|(i, src)| {
                let dst = out_dir.join(format!("{i}.dcm"));
                let out = Command::new(bin)
                    .args(args)
                    .arg(src)
                    .arg(&dst)
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{}: {out:?}", bin.display());
                dst
            })
            .collect()
    };
    let rle = converted(&dcmcrle, &[], "rle");
    let deflated = converted(&dcmconv, &["+td"], "deflated");
    let mut masks = Vec::new();
    for (name, files, propose) in [
        ("uncompressed", &plain, "-xe"),
        ("rle", &rle, "-xr"),
        ("deflated", &deflated, "-xd"),
    ] {
        let d = dir.path().join(format!("run-{name}"));
        let pacs_port = free_port();
        let pacs = Pacs::start(&storescp, pacs_port, &d.join("pacs"));
        let mut node = Node::with_model(&d, pacs_port, &model);
        node.start();
        let (ok, out) = storescu_proposing(&storescu_bin, node.port, "TEST_CT", &[propose], files);
        assert!(ok, "{name}: storescu: {out}");
        let expected = 2 + case.n_slices();
        let received = pacs.wait_for(expected, Duration::from_secs(30));
        assert_eq!(
            received.len(),
            expected,
            "{name}: {received:?}\n{}",
            node.log_text()
        );
        assert!(
            !node.log_text().contains("presentation context refused"),
            "{name}: {}",
            node.log_text()
        );
        let mask = nifti_mask(&node);
        let seg = received
            .iter()
            .find(|p| is_seg(p))
            .expect("a SEG at the PACS");
        assert_eq!(
            seg_frames(seg, mask.len()),
            mask,
            "{name}: SEG frames = mask"
        );
        masks.push((name, mask));
    }
    let (_, reference) = &masks[0];
    assert!(reference.contains(&1), "the phantom lesion is found");
    for (name, mask) in &masks[1..] {
        assert!(
            mask == reference,
            "{name}: mask differs from the uncompressed push"
        );
    }
}

#[test]
fn an_unknown_calling_ae_title_is_rejected_at_association() {
    let test = "an_unknown_calling_ae_title_is_rejected_at_association";
    let Some(storescu_bin) = tool("storescu", test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, written) = phantom_study(&dir.path().join("scanner"), "unknown-ae", false);
    let mut node = Node::new(dir.path(), free_port());
    node.start();
    let files: Vec<PathBuf> = written.files().take(1).cloned().collect();
    let (ok, out) = storescu(&storescu_bin, node.port, "INTRUDER", &files);
    assert!(!ok, "storescu as INTRUDER succeeded: {out}");
    node.wait_until("the rejection in the log", Duration::from_secs(5), |n| {
        n.log_text().contains("association rejected")
    });
    assert!(node.log_text().contains("INTRUDER"));
    assert!(dcm_files(&node.dir("spool")).is_empty());
}

#[test]
fn results_reach_a_pacs_that_was_down_and_kill_9_loses_nothing_acknowledged() {
    let test = "results_reach_a_pacs_that_was_down_and_kill_9_loses_nothing_acknowledged";
    let (Some(storescu_bin), Some(storescp)) = (tool("storescu", test), tool("storescp", test))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (case, written) = phantom_study(&dir.path().join("scanner"), "faults", false);
    let files: Vec<PathBuf> = written.files().cloned().collect();
    let pacs_port = free_port();
    let mut node = Node::new(dir.path(), pacs_port);

    // Reception: half the instances acknowledged, then kill -9; the rest after a restart.
    node.start();
    let (first, rest) = files.split_at(files.len() / 2);
    let (ok, out) = storescu(&storescu_bin, node.port, "TEST_CT", first);
    assert!(ok, "storescu: {out}");
    node.kill_9();
    assert_eq!(
        dcm_files(&node.dir("spool")).len(),
        first.len(),
        "every acknowledged instance is in the spool after kill -9"
    );
    node.start();
    let (ok, out) = storescu(&storescu_bin, node.port, "TEST_CT", rest);
    assert!(ok, "storescu: {out}");

    // Sending: the PACS is down; the results wait in the DICOM outbox with retries.
    let pending = node.dir("dicom-outbox").join("pending");
    node.wait_until("a failed delivery attempt", Duration::from_secs(30), |n| {
        n.log_text().contains("delivery failed")
    });
    assert_eq!(node.studies_in("done").len(), 1, "{}", node.log_text());
    assert_eq!(
        std::fs::read_dir(&pending).unwrap().count(),
        1,
        "one pending job"
    );
    // kill -9 while the job is pending (between attempts or in one), then the PACS comes up.
    node.kill_9();
    let pacs = Pacs::start(&storescp, pacs_port, &dir.path().join("pacs"));
    node.start();
    let expected = 2 + case.n_slices();
    let received = pacs.wait_for(expected, Duration::from_secs(30));
    assert_eq!(
        received.len(),
        expected,
        "{received:?}\n{}",
        node.log_text()
    );
    let seg = received.iter().find(|p| is_seg(p)).unwrap();
    let mask = nifti_mask(&node);
    assert_eq!(seg_frames(seg, mask.len()), mask);
    // One study, one SEG: everything acknowledged arrived and was segmented once.
    assert_eq!(node.studies_in("done").len(), 1);
    assert_eq!(node.studies_in("outbox").len(), 1);
    node.wait_until("the job in sent/", Duration::from_secs(10), |n| {
        std::fs::read_dir(n.dir("dicom-outbox").join("sent"))
            .unwrap()
            .count()
            == 1
    });
}

#[test]
fn a_crash_between_publication_and_queueing_still_delivers() {
    let test = "a_crash_between_publication_and_queueing_still_delivers";
    let (Some(storescu_bin), Some(storescp)) = (tool("storescu", test), tool("storescp", test))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (case, written) = phantom_study(&dir.path().join("scanner"), "failpoint", false);
    let pacs_port = free_port();
    let pacs = Pacs::start(&storescp, pacs_port, &dir.path().join("pacs"));
    let mut node = Node::new(dir.path(), pacs_port);
    node.start_with(Some("before_enqueue"));
    let files: Vec<PathBuf> = written.files().cloned().collect();
    let (ok, out) = storescu(&storescu_bin, node.port, "TEST_CT", &files);
    assert!(ok, "storescu: {out}");
    node.wait_exit(Duration::from_secs(30));
    assert!(files_in(&pacs.dir).is_empty());
    node.start();
    let expected = 2 + case.n_slices();
    let received = pacs.wait_for(expected, Duration::from_secs(30));
    assert_eq!(
        received.len(),
        expected,
        "{received:?}\n{}",
        node.log_text()
    );
    assert!(
        node.log_text()
            .contains("outputs already published before a restart")
    );
}

#[test]
fn a_study_with_only_the_dynamic_series_is_refused_into_failed() {
    let test = "a_study_with_only_the_dynamic_series_is_refused_into_failed";
    let Some(storescu_bin) = tool("storescu", test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, written) = phantom_study(&dir.path().join("scanner"), "dynamic", true);
    let dynamic = written
        .series
        .iter()
        .find(|s| s.description.contains("dynamic"))
        .unwrap();
    let mut node = Node::new(dir.path(), free_port());
    node.start();
    let (ok, out) = storescu(&storescu_bin, node.port, "TEST_CT", &dynamic.files);
    assert!(ok, "storescu: {out}");
    node.wait_until("the study in failed/", Duration::from_secs(30), |n| {
        n.studies_in("failed").len() == 1
    });
    let failed = node.dir("failed").join(&node.studies_in("failed")[0]);
    let error = std::fs::read_to_string(failed.join("error.txt")).unwrap();
    assert!(error.contains("only a raw dynamic CTP series"), "{error}");
    // Never silently dropped: the instances are kept beside the reason, and the log says it.
    assert_eq!(dcm_files(&failed).len(), dynamic.files.len());
    assert!(node.log_text().contains("only a raw dynamic CTP series"));
}

#[test]
fn demo_dicom_needs_no_tools_and_says_where_the_seg_landed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let o = common::edge(&["demo", "--dicom", "--out", out.to_str().unwrap()]);
    let text = common::text(&o);
    assert!(o.status.success(), "{text}");
    let seg_line = text
        .lines()
        .find(|l| l.starts_with("SEG at PACS"))
        .unwrap_or_else(|| panic!("no SEG line in:\n{text}"));
    let seg = PathBuf::from(seg_line.trim_start_matches("SEG at PACS").trim());
    assert!(is_seg(&seg), "{}", seg.display());
    assert!(text.contains("turnaround"), "{text}");
}

/// A fixture model whose metadata says it was trained on maps computed with the default
/// preset (as `computed_maps.rs` makes it).
fn model_on_computed_maps(dir: &Path) -> PathBuf {
    common::model_file(
        dir,
        "computed.onnx",
        &FixtureOptions {
            preprocess: PreprocessConfig {
                maps: MapsProvenance::computed(PerfusionPreset::Default),
                ..PreprocessConfig::default()
            },
            ..FixtureOptions::default()
        },
    )
}

/// The raw dynamic series with the plain CT and no maps, end to end through the perfusion
/// computation: the node writes `CT.nii` + `CT_4DPWI.nii` from the instances, computes the
/// maps (`--maps auto`) for a model trained on computed maps, and the SEG reaches the PACS,
/// valid, its frames equal to the NIfTI mask. The same study for a model trained on
/// provided maps is refused into `failed/` naming both provenances.
#[test]
fn a_study_with_only_the_dynamic_series_and_the_plain_ct_is_segmented_from_computed_maps() {
    let test =
        "a_study_with_only_the_dynamic_series_and_the_plain_ct_is_segmented_from_computed_maps";
    let (Some(storescu_bin), Some(storescp), Some(dciodvfy)) = (
        tool("storescu", test),
        tool("storescp", test),
        tool("dciodvfy", test),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (case, written) = phantom_study(&dir.path().join("scanner"), "dynamic-ct", true);
    let files: Vec<PathBuf> = written
        .series
        .iter()
        .filter(|s| s.description.contains("dynamic") || s.description.contains("Head"))
        .flat_map(|s| s.files.iter().cloned())
        .collect();
    let pacs_port = free_port();
    let pacs = Pacs::start(&storescp, pacs_port, &dir.path().join("pacs"));
    let model = model_on_computed_maps(dir.path());
    let mut node = Node::with_model(dir.path(), pacs_port, &model);
    node.start();
    let (ok, out) = storescu(&storescu_bin, node.port, "TEST_CT", &files);
    assert!(ok, "storescu: {out}");
    let expected = 2 + case.n_slices();
    let received = pacs.wait_for(expected, Duration::from_secs(120));
    assert_eq!(
        received.len(),
        expected,
        "{received:?}\n{}",
        node.log_text()
    );
    assert!(
        node.log_text()
            .contains("no maps: computing them from the raw dynamic series")
    );
    for p in &received {
        let errors = dciodvfy_errors(&dciodvfy, p);
        assert!(
            errors.is_empty(),
            "dciodvfy {}:\n{}",
            p.display(),
            errors.join("\n")
        );
    }
    let seg = received
        .iter()
        .find(|p| is_seg(p))
        .expect("a SEG at the PACS");
    let mask = nifti_mask(&node);
    assert_eq!(mask.len(), case.ot.len());
    assert_eq!(seg_frames(seg, mask.len()), mask, "SEG frames = NIfTI mask");
    // The maps were computed (written beside the mask), and the report says so.
    let outputs = node.dir("outbox").join(&node.studies_in("outbox")[0]);
    let report: strokeseg_edge::report::Report = serde_json::from_str(
        &std::fs::read_to_string(outputs.join(strokeseg_edge::report::REPORT_FILE)).unwrap(),
    )
    .unwrap();
    assert!(report.computed_maps.is_some(), "{outputs:?}");
    assert!(report.timings.perfusion_ms > 0.0);
    assert!(node.studies_in("failed").is_empty());
    drop(node);

    // A model trained on provided maps: refused into failed/, the instances kept.
    let dir2 = tempfile::tempdir().unwrap();
    let mut node = Node::new(dir2.path(), free_port());
    node.start();
    let (ok, out) = storescu(&storescu_bin, node.port, "TEST_CT", &files);
    assert!(ok, "storescu: {out}");
    node.wait_until("the study in failed/", Duration::from_secs(120), |n| {
        n.studies_in("failed").len() == 1
    });
    let failed = node.dir("failed").join(&node.studies_in("failed")[0]);
    let error = std::fs::read_to_string(failed.join("error.txt")).unwrap();
    assert!(
        error.contains("trained on the maps provided with the study")
            && error.contains("maps computed by strokeseg"),
        "{error}"
    );
    assert_eq!(dcm_files(&failed).len(), files.len(), "instances kept");
}

fn set_mtime(path: &Path, t: std::time::SystemTime) {
    std::fs::File::open(path).unwrap().set_modified(t).unwrap();
}

/// Retention (`[dicom] keep_done_days`, `keep_sent_days`, 30 by default): two studies are
/// received, segmented and delivered; the first one's `done/` folder and delivered job are
/// made 31 days old; the node, restarted, removes exactly those two (the pass at start) and
/// keeps the second study's, and the results of both in `outbox/`.
#[test]
fn done_studies_and_sent_jobs_older_than_kept_are_removed() {
    let test = "done_studies_and_sent_jobs_older_than_kept_are_removed";
    let (Some(storescu_bin), Some(storescp)) = (tool("storescu", test), tool("storescp", test))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pacs_port = free_port();
    let pacs = Pacs::start(&storescp, pacs_port, &dir.path().join("pacs"));
    let mut node = Node::new(dir.path(), pacs_port);
    node.start();
    let sent = node.dir("dicom-outbox").join("sent");
    let sent_jobs = |_: &Node| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&sent)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let mut per_study = 0;
    let mut first = (String::new(), String::new());
    for (i, key) in ["retention-old", "retention-new"].iter().enumerate() {
        let (case, written) = phantom_study(&dir.path().join(key), key, false);
        per_study = 2 + case.n_slices();
        let files: Vec<PathBuf> = written.files().cloned().collect();
        let (ok, out) = storescu(&storescu_bin, node.port, "TEST_CT", &files);
        assert!(ok, "storescu: {out}");
        node.wait_until(
            "the study done and its job sent",
            Duration::from_secs(60),
            |n| n.studies_in("done").len() == i + 1 && sent_jobs(n).len() == i + 1,
        );
        if i == 0 {
            first = (
                node.studies_in("done")[0].clone(),
                sent_jobs(&node)[0].clone(),
            );
        }
    }
    assert_eq!(
        pacs.wait_for(2 * per_study, Duration::from_secs(10)).len(),
        2 * per_study
    );
    node.kill_9();
    let (old, old_job) = first;
    let new: Vec<String> = node
        .studies_in("done")
        .into_iter()
        .filter(|s| *s != old)
        .collect();
    let new_job: Vec<String> = sent_jobs(&node)
        .into_iter()
        .filter(|j| *j != old_job)
        .collect();
    let month_ago = std::time::SystemTime::now() - Duration::from_secs(31 * 86_400);
    set_mtime(&node.dir("done").join(&old), month_ago);
    set_mtime(&sent.join(&old_job).join("job.json"), month_ago);

    node.start();
    // Renamed away first, then removed and logged: wait for the log lines too.
    node.wait_until("the old entries removed", Duration::from_secs(10), |n| {
        let log = n.log_text();
        n.studies_in("done").len() == 1
            && sent_jobs(n).len() == 1
            && log.contains("study removed from done/")
            && log.contains("delivered job removed from the DICOM outbox")
    });
    assert_eq!(node.studies_in("done"), new);
    assert_eq!(sent_jobs(&node), new_job);
    assert_eq!(node.studies_in("outbox").len(), 2, "results are kept");
    let log = node.log_text();
    assert!(log.contains("study removed from done/"), "{log}");
    assert!(
        log.contains("delivered job removed from the DICOM outbox"),
        "{log}"
    );
}
