//! Ensembles and flip test-time augmentation through the `strokeseg-edge segment` CLI: the
//! report names every member, a member with another contract is refused naming the file,
//! and peak memory does not grow with the number of slices.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use strokeseg_edge::report::{MASK_FILE, Report};
use strokeseg_io::NiftiVolumeReader;
use strokeseg_model::fixture::FixtureOptions;

fn read_report(out: &Path) -> Report {
    serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap()
}

fn read_mask(out: &Path) -> Vec<u8> {
    let mut reader = NiftiVolumeReader::open(&out.join(MASK_FILE)).unwrap();
    let [nx, ny, nz] = reader.dims();
    let mut plane = vec![0f32; nx * ny];
    let mut mask = Vec::new();
    for z in 0..nz {
        reader.read_slice_f32(z, &mut plane).unwrap();
        mask.extend(plane.iter().map(|&v| u8::from(v > 0.5)));
    }
    mask
}

#[test]
fn an_ensemble_with_flip_tta_is_reported_and_agrees_with_a_mirror_symmetric_model() {
    let dir = tempfile::tempdir().unwrap();
    let (case, _) = phantom_case(dir.path(), "case", &phantom_opts(31, 4), 0, false);
    let model = fp32_model(dir.path());
    let twin = model_file(dir.path(), "twin.onnx", &FixtureOptions::default());
    let (single_out, ens_out) = (dir.path().join("single"), dir.path().join("ensemble"));
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let o = edge(&[
        "segment",
        &s(&case),
        "--model",
        &s(&model),
        "--out",
        &s(&single_out),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = edge(&[
        "segment",
        &s(&case),
        "--model",
        &s(&model),
        "--model",
        &s(&twin),
        "--tta",
        "flip",
        "--out",
        &s(&ens_out),
    ]);
    assert!(o.status.success(), "{}", text(&o));

    let (single, ensemble) = (read_report(&single_out), read_report(&ens_out));
    let (sm, em) = (single.model.unwrap(), ensemble.model.unwrap());
    assert!(sm.members.is_empty());
    assert_eq!(em.members.len(), 2);
    assert_eq!(em.members[0].sha256, sm.sha256);
    assert_ne!(em.sha256, sm.sha256, "an ensemble has its own identity");
    assert_eq!(em.tta, strokeseg_edge::segmenter::Tta::Flip);
    let json = std::fs::read_to_string(ens_out.join("report.json")).unwrap();
    assert!(json.contains("\"tta\": \"flip\""), "{json}");

    // The fixture is a per-pixel rule after a symmetric 3×3 smoothing, so its mirror image
    // is its own: averaging two copies and the mirrored view must give the single model's
    // mask, up to pixels that sit on the threshold.
    let (a, b) = (read_mask(&single_out), read_mask(&ens_out));
    let lesion = a.iter().filter(|&&v| v == 1).count();
    assert!(lesion > 50, "the single model found {lesion} lesion voxels");
    let both = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| **x == 1 && **y == 1)
        .count();
    let dice = 2.0 * both as f64 / (lesion + b.iter().filter(|&&v| v == 1).count()) as f64;
    assert!(dice > 0.99, "ensemble+flip vs single mask Dice {dice}");
}

#[test]
fn an_ensemble_member_with_another_contract_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (case, _) = phantom_case(dir.path(), "case", &phantom_opts(32, 2), 0, false);
    let model = fp32_model(dir.path());
    let other = model_file(
        dir.path(),
        "other-grid.onnx",
        &FixtureOptions {
            preprocess: strokeseg_shared::PreprocessConfig {
                input_height: 96,
                input_width: 96,
                ..strokeseg_shared::PreprocessConfig::default()
            },
            ..FixtureOptions::default()
        },
    );
    let out = dir.path().join("out");
    let o = edge(&[
        "segment",
        case.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--model",
        other.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    let msg = text(&o);
    assert!(
        msg.contains("other-grid.onnx") && msg.contains("input shape"),
        "{msg}"
    );
    assert!(
        !out.join("report.json").exists(),
        "nothing may be published"
    );
}

/// Peak RSS (KiB) of one `segment` process with a 2-member ensemble and flip TTA, as the
/// report records it; glibc's mmap threshold fixed as the systemd unit fixes it.
fn ensemble_peak_rss_kib(dir: &Path, n_slices: usize) -> u64 {
    let mut opts = phantom_opts(33, n_slices);
    opts.min_slices = n_slices;
    let (case, _) = phantom_case(dir, &format!("case_{n_slices}"), &opts, 0, false);
    let model = fp32_model(dir);
    let twin = model_file(dir, "twin.onnx", &FixtureOptions::default());
    let out = dir.join(format!("out_{n_slices}"));
    let o = Command::new(env!("CARGO_BIN_EXE_strokeseg-edge"))
        .env("MALLOC_MMAP_THRESHOLD_", "131072")
        .args([
            "segment",
            case.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(["--model", model.to_str().unwrap()])
        .args(["--model", twin.to_str().unwrap(), "--tta", "flip"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let report = read_report(&out);
    assert_eq!(report.n_slices, n_slices);
    report
        .timings
        .peak_rss_kib
        .expect("Linux reports VmHWM in /proc/self/status")
}

#[test]
fn the_ensemble_path_keeps_peak_memory_flat_in_slices() {
    let dir = tempfile::tempdir().unwrap();
    let small = ensemble_peak_rss_kib(dir.path(), 2);
    let large = ensemble_peak_rss_kib(dir.path(), 22);
    // Keeping one 256 × 256 five-channel slice per slice would add ≈ 27 MiB at 22 slices
    // (> 50 % of the process); the bound leaves room for allocator noise only.
    let ratio = large as f64 / small as f64;
    eprintln!("ensemble peak RSS: {small} KiB at 2 slices, {large} KiB at 22 (× {ratio:.3})");
    assert!(
        ratio <= 1.10,
        "peak RSS {large} KiB at 22 slices vs {small} KiB at 2 (× {ratio:.3})"
    );
}
