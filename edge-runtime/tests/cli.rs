//! The `strokeseg-edge` binary end to end on phantom studies: the demo, `inspect`,
//! `evaluate` (surface distances included), and bad inputs to `inspect` and `evaluate`
//! (clear message naming the file, documented exit code, no panic).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use strokeseg_phantom::DatasetOptions;

mod common;
use common::{edge, file_of, text};

/// Writes phantom case 0 of seed 11 into `dir/case_1`.
fn phantom_case(dir: &Path) -> PathBuf {
    let opts = DatasetOptions {
        n_cases: 1,
        seed: 11,
        max_slices: 4,
        ..DatasetOptions::default()
    };
    let case = strokeseg_phantom::generate_case(opts.seed, 0, &opts).unwrap();
    let case_dir = dir.join("case_1");
    strokeseg_phantom::write_case(&case_dir, &case, 100, false, false).unwrap();
    case_dir
}

#[test]
fn demo_generates_segments_and_scores_a_study() {
    let out = tempfile::tempdir().unwrap();
    let o = edge(&["demo", "--out", out.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("truth lesion"), "{t}");
    assert!(t.contains("CT_Tmax"), "{t}");
    assert!(t.contains("dice"), "{t}");
    assert!(out.path().join("study").is_dir());
    for f in ["lesion_mask.nii.gz", "report.json", "overlay.png"] {
        assert!(out.path().join(f).is_file(), "{f}");
    }
    if strokeseg_edge::model::embedded_model().is_none() {
        assert!(t.contains("threshold rule"), "{t}");
    }
}

#[test]
fn inspect_reports_grid_and_statistics_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let case = phantom_case(dir.path());
    let o = edge(&["inspect", case.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["dims"][0], 256);
    assert_eq!(v["channels"].as_array().unwrap().len(), 5);
    assert_eq!(v["channels"][0]["dtype"], "uint16");
    assert_eq!(v["channels"][2]["dtype"], "float64");
    assert_eq!(v["channels"][4]["dtype"], "int32");
    assert!(v["brain_volume_ml"].as_f64().unwrap() > 10.0);
    assert!(v["has_truth"].as_bool().unwrap());
}

#[test]
fn bad_inputs_exit_3_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let case = phantom_case(dir.path());

    // Truncated CBF.
    let cbf = file_of(&case, "CT_CBF");
    let bytes = std::fs::read(&cbf).unwrap();
    std::fs::write(&cbf, &bytes[..bytes.len() / 2]).unwrap();
    let o = edge(&["inspect", case.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains(cbf.to_str().unwrap()), "{}", text(&o));
    assert!(text(&o).contains("truncated"), "{}", text(&o));
    std::fs::write(&cbf, &bytes).unwrap();

    // Missing Tmax.
    let tmax = file_of(&case, "CT_Tmax");
    std::fs::remove_dir_all(tmax.parent().unwrap()).unwrap();
    let o = edge(&["inspect", case.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("missing modality CT_Tmax"),
        "{}",
        text(&o)
    );
    assert!(!text(&o).contains("panicked"));

    // Not a folder at all.
    let o = edge(&["inspect", dir.path().join("nope").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("nope"), "{}", text(&o));
}

#[test]
fn an_all_zero_perfusion_study_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let case = phantom_case(dir.path());
    // Replace every perfusion map with zeros: no brain voxels.
    for tag in ["CT_CBF", "CT_CBV", "CT_MTT", "CT_Tmax"] {
        let f = file_of(&case, tag);
        let mut bytes = std::fs::read(&f).unwrap();
        for b in &mut bytes[352..] {
            *b = 0;
        }
        std::fs::write(&f, bytes).unwrap();
    }
    let o = edge(&["inspect", case.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("no brain voxels"), "{}", text(&o));
}

#[test]
fn evaluate_scores_with_surface_distances_and_names_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let case = phantom_case(dir.path());
    let c = case.to_str().unwrap();
    let truth = file_of(&case, "OT");
    let t = truth.to_str().unwrap();

    // The truth against itself: perfect, every distance 0.
    let o = edge(&["evaluate", "--pred", t, "--truth", c, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["metrics"]["dice"], 1.0);
    assert_eq!(v["case_name"], "case_1");
    assert_eq!(v["prediction"], t);
    assert_eq!(v["truth"], t);
    for d in ["hausdorff_mm", "hausdorff95_mm", "assd_mm"] {
        assert_eq!(v["surface"][d], 0.0, "{d}: {v}");
    }
    assert!(v["surface"]["truth_surface_voxels"].as_u64().unwrap() > 0);
    let o = edge(&["evaluate", "--pred", t, "--truth", c]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("dice           1.000"), "{}", text(&o));
    assert!(
        text(&o).contains("hausdorff 0.00 mm, hd95 0.00 mm, assd 0.00 mm"),
        "{}",
        text(&o)
    );

    // An empty prediction: Dice 0, distances infinite (JSON null, ∞ in text).
    let empty = dir.path().join("empty.nii");
    let mut bytes = std::fs::read(&truth).unwrap();
    for b in &mut bytes[352..] {
        *b = 0;
    }
    std::fs::write(&empty, &bytes).unwrap();
    let e = empty.to_str().unwrap();
    let o = edge(&["evaluate", "--pred", e, "--truth", c, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["metrics"]["dice"], 0.0);
    assert!(v["surface"]["hausdorff_mm"].is_null(), "{v}");
    let o = edge(&["evaluate", "--pred", e, "--truth", c]);
    assert!(
        text(&o).contains("hausdorff ∞, hd95 ∞, assd ∞"),
        "{}",
        text(&o)
    );

    // An output folder without a mask: exit 3, the file named.
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let o = edge(&["evaluate", "--pred", out.to_str().unwrap(), "--truth", c]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let expected = out.join("lesion_mask.nii.gz");
    assert!(
        text(&o).contains(expected.to_str().unwrap()),
        "{}",
        text(&o)
    );

    // Another grid: exit 3, both files named.
    let other = dir.path().join("other.nii");
    let mut bytes = std::fs::read(&truth).unwrap();
    let px = f32::from_le_bytes(bytes[80..84].try_into().unwrap());
    bytes[80..84].copy_from_slice(&(px * 1.5).to_le_bytes());
    std::fs::write(&other, &bytes).unwrap();
    let o = edge(&["evaluate", "--pred", other.to_str().unwrap(), "--truth", c]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("grid mismatch"), "{}", text(&o));
    assert!(text(&o).contains(t), "{}", text(&o));
    assert!(text(&o).contains(other.to_str().unwrap()), "{}", text(&o));

    // A case folder without ground truth: exit 3, the folder named.
    let ot_dir = truth.parent().unwrap();
    std::fs::remove_dir_all(ot_dir).unwrap();
    let o = edge(&["evaluate", "--pred", e, "--truth", c]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("OT"), "{}", text(&o));
    assert!(text(&o).contains(c), "{}", text(&o));
}
